/* gt-module.c: finds and loads gt's modules (gt-module.h). */
#include "config.h"

#define G_LOG_DOMAIN "gt"

#include "gt-module.h"

#include <gio/gio.h>

G_LOCK_DEFINE_STATIC (modules);
static GHashTable *modules; /* name → GModule* (resident), under the lock */

/* Where modules are looked for, in order; *from_env when $GT_MODULE_DIR chose. */
static GPtrArray *
module_dirs (gboolean *from_env)
{
  GPtrArray *dirs = g_ptr_array_new_with_free_func (g_free);
  const char *env = g_getenv ("GT_MODULE_DIR");
  g_autofree char *exe = NULL;

  *from_env = env != NULL && *env != '\0';
  if (*from_env)
    {
      g_ptr_array_add (dirs, g_strdup (env));
      return dirs;
    }
  /* The build tree: the modules are built beside src/cli/gt. Installed, no module sits beside the
   * binary and the module directory below is the one. */
  exe = g_file_read_link ("/proc/self/exe", NULL);
  if (exe != NULL)
    g_ptr_array_add (dirs, g_path_get_dirname (exe));
  g_ptr_array_add (dirs, g_strdup (GT_MODULEDIR));
  return dirs;
}

const char *
gt_module_check_version (const char *module_version)
{
  g_autofree char *why = NULL;

  if (g_strcmp0 (module_version, PACKAGE_VERSION) == 0)
    return NULL;
  why = g_strdup_printf ("built for gt %s, this is gt %s", module_version, PACKAGE_VERSION);
  return g_intern_string (why);
}

gboolean
gt_module_load (const char *name, const char *needed_by, GError **error)
{
  g_autoptr (GPtrArray) dirs = NULL;
  g_autofree char *file = NULL;
  g_autofree char *where = NULL;
  gboolean from_env;
  gboolean ok = FALSE;

  g_return_val_if_fail (name != NULL && needed_by != NULL, FALSE);

  G_LOCK (modules);
  if (modules != NULL && g_hash_table_contains (modules, name))
    {
      G_UNLOCK (modules);
      return TRUE;
    }
  file = g_strconcat (name, ".so", NULL);
  dirs = module_dirs (&from_env);
  for (guint i = 0; i < dirs->len; i++)
    {
      g_autofree char *path = g_build_filename (dirs->pdata[i], file, NULL);
      g_autoptr (GError) local_error = NULL;
      GModule *module;

      if (!g_file_test (path, G_FILE_TEST_IS_REGULAR))
        continue;
      /* Every symbol resolved now (no lazy binding): a module that does not fit this gt fails
       * here, with the name of what it lacks, instead of at its first call. */
      module = g_module_open_full (path, G_MODULE_BIND_LOCAL, &local_error);
      if (module == NULL)
        {
          g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "%s needs gt's module %s: %s",
                       needed_by, name, local_error->message);
          G_UNLOCK (modules);
          return FALSE;
        }
      g_module_make_resident (module);
      if (modules == NULL)
        modules = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
      g_hash_table_insert (modules, g_strdup (name), module);
      g_debug ("loaded %s", path);
      ok = TRUE;
      break;
    }
  G_UNLOCK (modules);
  if (ok)
    return TRUE;

  if (from_env)
    where = g_strdup_printf ("GT_MODULE_DIR (%s)", (char *) dirs->pdata[0]);
  else
    {
      GString *s = g_string_new (NULL);

      for (guint i = 0; i < dirs->len; i++)
        g_string_append_printf (s, "%s%s", i == 0 ? "" : " nor ", (char *) dirs->pdata[i]);
      where = g_string_free (s, FALSE);
    }
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
               "%s needs gt's module %s (%s), which is not in %s", needed_by, name, file, where);
  return FALSE;
}
