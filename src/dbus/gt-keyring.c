/* gt-keyring.c: client secrets in the user's keyring (the Secret Service, through libsecret):
 * the manager stores there the secrets that come over D-Bus, a worker whose file says
 * `secret: "(keyring)"` reads its secret from there. */
#include "config.h"

#define G_LOG_DOMAIN "gt-dbus"

#include <glib/gi18n-lib.h>
#include <string.h>
#if HAVE_LIBSECRET
#include <gmodule.h>
#include <libsecret/secret.h>
#endif

#include "gt-keyring.h"

#define STORE_TIMEOUT_S 10

gboolean
gt_keyring_enabled (void)
{
#if HAVE_LIBSECRET
  return g_strcmp0 (g_getenv ("GT_KEYRING"), "off") != 0;
#else
  return FALSE;
#endif
}

/* The key of an item: the file, as an absolute path (the manager and its workers share their
 * working directory, so a relative config path names the same file for both). */
static char *
config_key (const char *config_path)
{
  return g_canonicalize_filename (config_path, NULL);
}

#if HAVE_LIBSECRET
/* libsecret (and libgcrypt with it) is loaded when a keyring is first used, not linked: a gt
 * that never touches a keyring keeps its idle memory (docs/benchmarks.md, idle RSS). */
static struct
{
  __typeof__ (secret_password_store) *store;
  __typeof__ (secret_password_store_finish) *store_finish;
  __typeof__ (secret_password_lookup_sync) *lookup_sync;
  __typeof__ (secret_password_free) *free;
} libsecret;

static gboolean
libsecret_load (GError **error)
{
  static gsize done;
  static char *failure;

  if (g_once_init_enter (&done))
    {
      GModule *module = g_module_open ("libsecret-1.so.0", G_MODULE_BIND_LAZY);

      if (module == NULL
          || !g_module_symbol (module, "secret_password_store", (gpointer *) &libsecret.store)
          || !g_module_symbol (module, "secret_password_store_finish",
                               (gpointer *) &libsecret.store_finish)
          || !g_module_symbol (module, "secret_password_lookup_sync",
                               (gpointer *) &libsecret.lookup_sync)
          || !g_module_symbol (module, "secret_password_free", (gpointer *) &libsecret.free))
        failure = g_strdup (g_module_error ());
      else
        g_module_make_resident (module);
      g_once_init_leave (&done, 1);
    }
  if (failure != NULL)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                   _("libsecret cannot be loaded: %s"), failure);
      return FALSE;
    }
  return TRUE;
}

static const SecretSchema *
client_secret_schema (void)
{
  static const SecretSchema schema = {
    "io.github.gtrelay.Gt.ClientSecret",
    SECRET_SCHEMA_NONE,
    { { "config", SECRET_SCHEMA_ATTRIBUTE_STRING }, { NULL, 0 } },
  };

  return &schema;
}

typedef struct
{
  GCancellable *cancellable; /* ours: the caller's, or the timeout's */
  gulong cancelled_id;
  GCancellable *caller;
  guint timeout_id;
  gboolean timed_out;
} StoreData;

static void
store_data_free (StoreData *d)
{
  g_clear_handle_id (&d->timeout_id, g_source_remove);
  if (d->caller != NULL)
    g_cancellable_disconnect (d->caller, d->cancelled_id);
  g_clear_object (&d->caller);
  g_clear_object (&d->cancellable);
  g_free (d);
}

static gboolean
store_timeout_cb (gpointer user_data)
{
  StoreData *d = user_data;

  d->timeout_id = 0;
  d->timed_out = TRUE;
  g_cancellable_cancel (d->cancellable);
  return G_SOURCE_REMOVE;
}

static void
caller_cancelled_cb (GCancellable *caller, gpointer user_data)
{
  g_cancellable_cancel (user_data);
}

static void
store_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  StoreData *d = g_task_get_task_data (task);
  g_autoptr (GError) error = NULL;

  if (libsecret.store_finish (result, &error))
    g_task_return_boolean (task, TRUE);
  else if (d->timed_out)
    g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_TIMED_OUT,
                             _("the keyring did not answer within %d s"), STORE_TIMEOUT_S);
  else
    g_task_return_error (task, g_steal_pointer (&error));
}
#endif

void
gt_keyring_store_async (const char *config_path, const char *name, const char *secret,
                        GCancellable *cancellable, GAsyncReadyCallback callback,
                        gpointer user_data)
{
  g_autoptr (GTask) task = NULL;

  g_return_if_fail (config_path != NULL);
  g_return_if_fail (name != NULL);
  g_return_if_fail (secret != NULL);

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, gt_keyring_store_async);
#if HAVE_LIBSECRET
  {
    StoreData *d;
    g_autofree char *key = config_key (config_path);
    /* TRANSLATORS: the label of a keyring item: "gt client secret (home.yaml)" */
    g_autofree char *label = g_strdup_printf (_("gt client secret (%s)"), name);
    GError *error = NULL;

    if (!libsecret_load (&error))
      {
        g_task_return_error (task, error);
        return;
      }
    d = g_new0 (StoreData, 1);
    d->cancellable = g_cancellable_new ();
    if (cancellable != NULL)
      {
        d->caller = g_object_ref (cancellable);
        d->cancelled_id = g_cancellable_connect (cancellable, G_CALLBACK (caller_cancelled_cb),
                                                 d->cancellable, NULL);
      }
    d->timeout_id = g_timeout_add_seconds (STORE_TIMEOUT_S, store_timeout_cb, d);
    g_task_set_task_data (task, d, (GDestroyNotify) store_data_free);
    libsecret.store (client_secret_schema (), SECRET_COLLECTION_DEFAULT, label, secret,
                     d->cancellable, store_cb, g_steal_pointer (&task), "config", key, NULL);
  }
#else
  g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                           _("gt was built without libsecret"));
#endif
}

gboolean
gt_keyring_store_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), FALSE);
  return g_task_propagate_boolean (G_TASK (result), error);
}

char *
gt_keyring_lookup (const char *config_path, GError **error)
{
  g_return_val_if_fail (config_path != NULL, NULL);

#if HAVE_LIBSECRET
  {
    g_autofree char *key = config_key (config_path);
    g_autoptr (GError) local_error = NULL;
    char *secret;

    if (!libsecret_load (error))
      return NULL;
    secret = libsecret.lookup_sync (client_secret_schema (), NULL, &local_error, "config", key,
                                    NULL);
    char *copy;

    if (local_error != NULL)
      {
        g_propagate_error (error, g_steal_pointer (&local_error));
        return NULL;
      }
    if (secret == NULL)
      {
        g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                     _("the keyring has no secret for %s"), key);
        return NULL;
      }
    copy = g_strdup (secret);
    libsecret.free (secret);
    return copy;
  }
#else
  g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                       _("gt was built without libsecret"));
  return NULL;
#endif
}
