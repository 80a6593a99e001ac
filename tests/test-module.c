/* test-module.c: finding and loading gt's modules (gt_module_load), and their version check. */
#include "config.h"

#include <string.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "gt-module.h"

typedef struct
{
  char *dir;
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;

  f->dir = g_dir_make_tmp ("gt-test-module-XXXXXX", &error);
  g_assert_no_error (error);
  g_setenv ("GT_MODULE_DIR", f->dir, TRUE);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  g_autofree char *bad = g_build_filename (f->dir, "gt-broken.so", NULL);

  g_unsetenv ("GT_MODULE_DIR");
  g_remove (bad);
  g_assert_cmpint (g_rmdir (f->dir), ==, 0);
  g_free (f->dir);
}

/* Not in GT_MODULE_DIR: NOT_FOUND, naming the key, the module, its file and the directory; gt
 * looks nowhere else then (this test's own directory would not have it either). */
static void
test_missing (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *want = g_strdup_printf ("quicAddr needs gt's module gt-nothing "
                                           "(gt-nothing.so), which is not in GT_MODULE_DIR (%s)",
                                           f->dir);

  g_assert_false (gt_module_load ("gt-nothing", "quicAddr", &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  g_assert_cmpstr (error->message, ==, want);
}

/* A file that is not a module: FAILED, with the key, the module and the loader's reason. */
static void
test_broken (Fixture *f, gconstpointer data)
{
  g_autofree char *path = g_build_filename (f->dir, "gt-broken.so", NULL);
  g_autoptr (GError) error = NULL;

  g_assert_true (g_file_set_contents (path, "not an ELF file\n", -1, NULL));
  g_assert_false (gt_module_load ("gt-broken", "remoteSTUN", &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_FAILED);
  g_assert_true (g_str_has_prefix (error->message, "remoteSTUN needs gt's module gt-broken: "));
  g_assert_nonnull (strstr (error->message, path));
}

static void
test_version (void)
{
  g_assert_null (gt_module_check_version (PACKAGE_VERSION));
  g_assert_cmpstr (gt_module_check_version ("0.0.0-other"), ==,
                   "built for gt 0.0.0-other, this is gt " PACKAGE_VERSION);
  g_assert_nonnull (gt_module_check_version (NULL));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add ("/gt/core/module/missing", Fixture, NULL, fixture_setup, test_missing,
              fixture_teardown);
  g_test_add ("/gt/core/module/broken", Fixture, NULL, fixture_setup, test_broken,
              fixture_teardown);
  g_test_add_func ("/gt/core/module/version", test_version);
  return g_test_run ();
}
