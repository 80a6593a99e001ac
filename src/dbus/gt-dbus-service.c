/* gt-dbus-service.c: exports a running GtManager as io.github.gtrelay.Gt: the Manager1 object,
 * one Tunnel1 object per configuration file, and the ObjectManager over them. */
#include "config.h"

#define G_LOG_DOMAIN "gt-dbus"

#include <string.h>

#include "gt-dbus-errors.h"
#include "gt-dbus-generated.h"
#include "gt-dbus-service.h"
#include "gt-keyring.h"

struct _GtDBusService
{
  GObject parent_instance;

  GtManager *manager;
  GDBusConnection *connection;
  GDBusObjectManagerServer *objects;
  GtDBusManager1 *manager_iface;
  GHashTable *tunnels; /* name → GtDBusObjectSkeleton* */
  guint owner_id;
  gulong unit_changed_id;
  gulong units_changed_id;
  gulong phase_changed_id;
};

G_DEFINE_FINAL_TYPE (GtDBusService, gt_dbus_service, G_TYPE_OBJECT)

static const char *
kind_string (GtConfigKind kind)
{
  switch (kind)
    {
    case GT_CONFIG_KIND_SERVER: return "server";
    case GT_CONFIG_KIND_CLIENT: return "client";
    default: return "unknown";
    }
}

static char *
tunnel_path (const char *name)
{
  g_autofree char *escaped = g_dbus_escape_object_path (name);

  return g_strdup_printf ("%s/%s", GT_DBUS_TUNNEL_PATH_PREFIX, escaped);
}

static gboolean
return_error (GDBusMethodInvocation *invocation, const GError *error)
{
  g_autoptr (GError) dbus_error = gt_dbus_error_from_gerror (error);

  g_dbus_method_invocation_return_gerror (invocation, dbus_error);
  return TRUE;
}

/* Properties of one tunnel object from the manager's view; the skeleton emits
 * PropertiesChanged only for values that differ. */
static void
tunnel_update (GtDBusService *self, GtDBusTunnel1 *iface, const GtManagerUnitInfo *info)
{
  g_autofree char *old_state = g_strdup (gt_dbus_tunnel1_get_state (iface));
  g_autofree char *old_error = g_strdup (gt_dbus_tunnel1_get_last_error (iface));
  const char *state = gt_manager_unit_state_to_string (info->state);
  const char *error = info->error != NULL ? info->error : "";

  g_object_freeze_notify (G_OBJECT (iface));
  gt_dbus_tunnel1_set_name (iface, info->name);
  gt_dbus_tunnel1_set_kind (iface, kind_string (info->kind));
  gt_dbus_tunnel1_set_state (iface, state);
  gt_dbus_tunnel1_set_last_error (iface, error);
  gt_dbus_tunnel1_set_pid (iface, (guint) info->pid);
  gt_dbus_tunnel1_set_connections (iface, info->traffic.tunnels);
  gt_dbus_tunnel1_set_streams (iface, info->traffic.streams);
  gt_dbus_tunnel1_set_streams_total (iface, info->traffic.streams_total);
  gt_dbus_tunnel1_set_bytes_in (iface, info->traffic.bytes_in);
  gt_dbus_tunnel1_set_bytes_out (iface, info->traffic.bytes_out);
  {
    g_autoptr (GVariant) connections = g_variant_get_child_value (info->details, 0);
    g_autoptr (GVariant) streams = g_variant_get_child_value (info->details, 1);

    gt_dbus_tunnel1_set_connection_list (iface, connections);
    gt_dbus_tunnel1_set_stream_list (iface, streams);
  }
  g_object_thaw_notify (G_OBJECT (iface));

  if (old_state != NULL && (g_strcmp0 (old_state, state) != 0 || g_strcmp0 (old_error, error) != 0))
    {
      g_autofree char *path = tunnel_path (info->name);

      g_message ("%s: %s%s%s", info->name, state, *error ? ": " : "", error);
      gt_dbus_manager1_emit_tunnel_state_changed (self->manager_iface, path, info->name, state,
                                                  error);
    }
}

static gboolean
handle_tunnel_start_cb (GtDBusTunnel1 *iface, GDBusMethodInvocation *invocation,
                        gpointer user_data)
{
  GtDBusService *self = user_data;
  g_autoptr (GError) error = NULL;

  if (!gt_manager_start_unit (self->manager, gt_dbus_tunnel1_get_name (iface), &error))
    return return_error (invocation, error);
  gt_dbus_tunnel1_complete_start (iface, invocation);
  return TRUE;
}

static gboolean
handle_tunnel_stop_cb (GtDBusTunnel1 *iface, GDBusMethodInvocation *invocation,
                       gpointer user_data)
{
  GtDBusService *self = user_data;
  g_autoptr (GError) error = NULL;

  if (!gt_manager_stop_unit (self->manager, gt_dbus_tunnel1_get_name (iface), &error))
    return return_error (invocation, error);
  gt_dbus_tunnel1_complete_stop (iface, invocation);
  return TRUE;
}

/* Adds, updates and removes the tunnel objects to match the manager's units. */
static void
sync_tunnels (GtDBusService *self)
{
  g_autoptr (GPtrArray) units = gt_manager_list_units (self->manager);
  g_autoptr (GHashTable) seen = g_hash_table_new (g_str_hash, g_str_equal);
  GHashTableIter iter;
  gpointer key;

  gt_dbus_manager1_set_phase (self->manager_iface, gt_manager_get_phase (self->manager));
  for (guint i = 0; i < units->len; i++)
    {
      GtManagerUnitInfo *info = units->pdata[i];
      GtDBusObjectSkeleton *object = g_hash_table_lookup (self->tunnels, info->name);
      g_autoptr (GtDBusTunnel1) iface = NULL;

      g_hash_table_add (seen, info->name);
      if (object == NULL)
        {
          g_autofree char *path = tunnel_path (info->name);

          object = gt_dbus_object_skeleton_new (path);
          iface = gt_dbus_tunnel1_skeleton_new ();
          g_signal_connect (iface, "handle-start", G_CALLBACK (handle_tunnel_start_cb), self);
          g_signal_connect (iface, "handle-stop", G_CALLBACK (handle_tunnel_stop_cb), self);
          tunnel_update (self, iface, info);
          gt_dbus_object_skeleton_set_tunnel1 (object, iface);
          g_hash_table_insert (self->tunnels, g_strdup (info->name), object);
          if (self->objects != NULL)
            g_dbus_object_manager_server_export (self->objects, G_DBUS_OBJECT_SKELETON (object));
          continue;
        }
      iface = gt_dbus_object_get_tunnel1 (GT_DBUS_OBJECT (object));
      tunnel_update (self, iface, info);
    }
  g_hash_table_iter_init (&iter, self->tunnels);
  while (g_hash_table_iter_next (&iter, &key, NULL))
    {
      g_autofree char *path = NULL;

      if (g_hash_table_contains (seen, key))
        continue;
      path = tunnel_path (key);
      if (self->objects != NULL)
        g_dbus_object_manager_server_unexport (self->objects, path);
      g_hash_table_iter_remove (&iter);
    }
}

static void
unit_changed_cb (GtManager *manager, const char *name, gpointer user_data)
{
  sync_tunnels (user_data);
}

static void
units_changed_cb (GtManager *manager, gpointer user_data)
{
  sync_tunnels (user_data);
}

static gboolean
handle_reload_cb (GtDBusManager1 *iface, GDBusMethodInvocation *invocation, gpointer user_data)
{
  GtDBusService *self = user_data;

  gt_manager_reload (self->manager);
  sync_tunnels (self);
  gt_dbus_manager1_complete_reload (iface, invocation);
  return TRUE;
}

static gboolean
handle_validate_config_cb (GtDBusManager1 *iface, GDBusMethodInvocation *invocation,
                           const char *name, const char *document, gpointer user_data)
{
  g_autoptr (GError) error = NULL;
  GtConfigKind kind;

  /* A placeholder secret is checked as a secret: the saved one would replace it. */
  kind = gt_manager_check_config (name, document, -1, NULL, &error);
  if (kind == GT_CONFIG_KIND_UNKNOWN)
    return return_error (invocation, error);
  gt_dbus_manager1_complete_validate_config (iface, invocation, kind_string (kind));
  return TRUE;
}

static gboolean
handle_get_config_cb (GtDBusManager1 *iface, GDBusMethodInvocation *invocation,
                      const char *name, gpointer user_data)
{
  GtDBusService *self = user_data;
  g_autoptr (GError) error = NULL;
  g_autofree char *document = gt_manager_get_config (self->manager, name, &error);

  if (document == NULL)
    return return_error (invocation, error);
  gt_dbus_manager1_complete_get_config (iface, invocation, document);
  return TRUE;
}

/* A SetConfig waiting for the keyring. */
typedef struct
{
  GtDBusService *self;
  GDBusMethodInvocation *invocation;
  char *name;
  char *path;
  char *full; /* the document with its secret */
} SetConfigData;

static void
set_config_data_free (SetConfigData *d)
{
  g_object_unref (d->self);
  g_object_unref (d->invocation);
  g_free (d->name);
  g_free (d->path);
  memset (d->full, 0, strlen (d->full));
  g_free (d->full);
  g_free (d);
}

static void
set_config_write (GtDBusService *self, GDBusMethodInvocation *invocation, const char *name,
                  const char *path, const char *full)
{
  g_autoptr (GError) error = NULL;

  if (!gt_manager_write_config (self->manager, name, path, full, &error))
    {
      return_error (invocation, error);
      return;
    }
  sync_tunnels (self);
  gt_dbus_manager1_complete_set_config (self->manager_iface, invocation);
}

static void
keyring_stored_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SetConfigData *d = user_data;
  g_autoptr (GError) error = NULL;
  g_autofree char *without = NULL;

  if (gt_keyring_store_finish (result, &error))
    without = gt_config_replace_secret (d->full, -1, "options/secret", GT_CONFIG_SECRET_KEYRING,
                                        &error);
  if (without != NULL)
    {
      g_message ("%s: its secret is in the keyring, not in the file", d->name);
      set_config_write (d->self, d->invocation, d->name, d->path, without);
    }
  else
    {
      /* No keyring (none running, locked, or it did not answer): the 0600 file keeps it. */
      g_message ("%s: no keyring (%s); the secret stays in the file (mode 0600)", d->name,
                 error->message);
      set_config_write (d->self, d->invocation, d->name, d->path, d->full);
    }
  set_config_data_free (d);
}

/* The new secret of a client document, NULL when it keeps the one in the keyring or has none. */
static char *
client_new_secret (const char *name, const char *full)
{
  g_autoptr (GtClientConfig) config = gt_client_config_new ();

  if (!gt_client_config_load_data (config, full, -1, name, NULL, NULL) || config->secret == NULL
      || config->secret[0] == '\0' || strcmp (config->secret, GT_CONFIG_SECRET_KEYRING) == 0)
    return NULL;
  return g_strdup (config->secret);
}

static gboolean
handle_set_config_cb (GtDBusManager1 *iface, GDBusMethodInvocation *invocation,
                      const char *name, const char *document, gpointer user_data)
{
  GtDBusService *self = user_data;
  g_autoptr (GError) error = NULL;
  g_autofree char *path = NULL;
  g_autofree char *full = NULL;
  g_autofree char *secret = NULL;
  GtConfigKind kind = GT_CONFIG_KIND_UNKNOWN;
  SetConfigData *d;

  full = gt_manager_prepare_config (self->manager, name, document, &path, &kind, NULL, &error);
  if (full == NULL)
    return return_error (invocation, error);
  /* A client's secret goes to the user's keyring when there is one; the file then says
   * "(keyring)" and the worker reads it from there. */
  if (kind == GT_CONFIG_KIND_CLIENT && gt_keyring_enabled ())
    secret = client_new_secret (name, full);
  if (secret == NULL)
    {
      set_config_write (self, invocation, name, path, full);
      memset (full, 0, strlen (full));
      return TRUE;
    }
  d = g_new0 (SetConfigData, 1);
  d->self = g_object_ref (self);
  d->invocation = g_object_ref (invocation);
  d->name = g_strdup (name);
  d->path = g_steal_pointer (&path);
  d->full = g_steal_pointer (&full);
  gt_keyring_store_async (d->path, name, secret, NULL, keyring_stored_cb, d);
  memset (secret, 0, strlen (secret));
  return TRUE;
}

static gboolean
handle_start_tunnel_cb (GtDBusManager1 *iface, GDBusMethodInvocation *invocation,
                        const char *name, gpointer user_data)
{
  GtDBusService *self = user_data;
  g_autoptr (GError) error = NULL;

  if (!gt_manager_start_unit (self->manager, name, &error))
    return return_error (invocation, error);
  gt_dbus_manager1_complete_start_tunnel (iface, invocation);
  return TRUE;
}

static gboolean
handle_stop_tunnel_cb (GtDBusManager1 *iface, GDBusMethodInvocation *invocation,
                       const char *name, gpointer user_data)
{
  GtDBusService *self = user_data;
  g_autoptr (GError) error = NULL;

  if (!gt_manager_stop_unit (self->manager, name, &error))
    return return_error (invocation, error);
  gt_dbus_manager1_complete_stop_tunnel (iface, invocation);
  return TRUE;
}

static void
name_acquired_cb (GDBusConnection *connection, const char *name, gpointer user_data)
{
  g_message ("D-Bus name %s acquired", name);
}

static void
name_lost_cb (GDBusConnection *connection, const char *name, gpointer user_data)
{
  if (connection != NULL)
    g_message ("D-Bus name %s is owned by another gt manager; waiting for it", name);
}

gboolean
gt_dbus_service_export (GtDBusService *self, GDBusConnection *connection, GError **error)
{
  GHashTableIter iter;
  gpointer value;

  g_return_val_if_fail (GT_IS_DBUS_SERVICE (self), FALSE);
  g_return_val_if_fail (G_IS_DBUS_CONNECTION (connection), FALSE);
  g_return_val_if_fail (self->connection == NULL, FALSE);

  gt_dbus_errors_register ();
  self->connection = g_object_ref (connection);
  /* Manager1 beside the ObjectManager on the same path; the tunnels are its children. */
  if (!g_dbus_interface_skeleton_export (G_DBUS_INTERFACE_SKELETON (self->manager_iface),
                                         connection, GT_DBUS_PATH, error))
    return FALSE;
  self->objects = g_dbus_object_manager_server_new (GT_DBUS_PATH);
  g_hash_table_iter_init (&iter, self->tunnels);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    g_dbus_object_manager_server_export (self->objects, value);
  g_dbus_object_manager_server_set_connection (self->objects, connection);
  self->owner_id = g_bus_own_name_on_connection (connection, GT_DBUS_NAME,
                                                 G_BUS_NAME_OWNER_FLAGS_NONE, name_acquired_cb,
                                                 name_lost_cb, self, NULL);
  return TRUE;
}

GDBusConnection *
gt_dbus_session_bus_get (void)
{
  const char *address = g_getenv ("DBUS_SESSION_BUS_ADDRESS");
  const char *runtime = g_getenv ("XDG_RUNTIME_DIR");
  g_autofree char *socket = NULL;
  g_autoptr (GError) error = NULL;
  GDBusConnection *connection;

  /* Without a bus address GIO would try X11 autolaunch: not for a headless relay. */
  if (address == NULL || address[0] == '\0')
    {
      if (runtime == NULL)
        return NULL;
      socket = g_build_filename (runtime, "bus", NULL);
      if (!g_file_test (socket, G_FILE_TEST_EXISTS))
        return NULL;
    }
  connection = g_bus_get_sync (G_BUS_TYPE_SESSION, NULL, &error);
  if (connection == NULL)
    g_message ("no D-Bus session bus (%s); running without the D-Bus interface",
               error->message);
  return connection;
}

static void
gt_dbus_service_dispose (GObject *object)
{
  GtDBusService *self = GT_DBUS_SERVICE (object);

  g_clear_handle_id (&self->owner_id, g_bus_unown_name);
  if (self->manager != NULL)
    {
      g_clear_signal_handler (&self->unit_changed_id, self->manager);
      g_clear_signal_handler (&self->units_changed_id, self->manager);
      g_clear_signal_handler (&self->phase_changed_id, self->manager);
    }
  if (self->objects != NULL)
    g_dbus_object_manager_server_set_connection (self->objects, NULL);
  if (self->manager_iface != NULL && self->connection != NULL)
    g_dbus_interface_skeleton_unexport (G_DBUS_INTERFACE_SKELETON (self->manager_iface));
  g_clear_object (&self->objects);
  g_clear_pointer (&self->tunnels, g_hash_table_unref);
  g_clear_object (&self->manager_iface);
  g_clear_object (&self->connection);
  g_clear_object (&self->manager);
  G_OBJECT_CLASS (gt_dbus_service_parent_class)->dispose (object);
}

static void
gt_dbus_service_class_init (GtDBusServiceClass *klass)
{
  G_OBJECT_CLASS (klass)->dispose = gt_dbus_service_dispose;
}

static void
gt_dbus_service_init (GtDBusService *self)
{
  self->tunnels = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_object_unref);
}

GtDBusService *
gt_dbus_service_new (GtManager *manager)
{
  GtDBusService *self;

  g_return_val_if_fail (GT_IS_MANAGER (manager), NULL);

  self = g_object_new (GT_TYPE_DBUS_SERVICE, NULL);
  self->manager = g_object_ref (manager);
  self->manager_iface = gt_dbus_manager1_skeleton_new ();
  gt_dbus_manager1_set_version (self->manager_iface, PACKAGE_VERSION);
  gt_dbus_manager1_set_config_path (self->manager_iface, gt_manager_get_path (manager));
  gt_dbus_manager1_set_phase (self->manager_iface, gt_manager_get_phase (manager));
  g_signal_connect (self->manager_iface, "handle-reload", G_CALLBACK (handle_reload_cb), self);
  g_signal_connect (self->manager_iface, "handle-validate-config",
                    G_CALLBACK (handle_validate_config_cb), self);
  g_signal_connect (self->manager_iface, "handle-get-config", G_CALLBACK (handle_get_config_cb),
                    self);
  g_signal_connect (self->manager_iface, "handle-set-config", G_CALLBACK (handle_set_config_cb),
                    self);
  g_signal_connect (self->manager_iface, "handle-start-tunnel",
                    G_CALLBACK (handle_start_tunnel_cb), self);
  g_signal_connect (self->manager_iface, "handle-stop-tunnel", G_CALLBACK (handle_stop_tunnel_cb),
                    self);
  self->unit_changed_id = g_signal_connect (manager, "unit-changed", G_CALLBACK (unit_changed_cb),
                                            self);
  self->units_changed_id = g_signal_connect (manager, "units-changed",
                                             G_CALLBACK (units_changed_cb), self);
  self->phase_changed_id = g_signal_connect (manager, "phase-changed",
                                             G_CALLBACK (units_changed_cb), self);
  sync_tunnels (self);
  return self;
}
