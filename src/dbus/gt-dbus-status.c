/* gt-dbus-status.c: `gt status`: the manager's tunnels, read over D-Bus. */
#include "config.h"

#define G_LOG_DOMAIN "gt-dbus"

#include <glib/gi18n-lib.h>
#include <stdio.h>
#include <string.h>

#include "gt-dbus-errors.h"
#include "gt-dbus-generated.h"
#include "gt-dbus-service.h"
#include "gt-dbus-status.h"
#include "gt-worker-report.h"

static GtManagerUnitState
state_from_string (const char *text)
{
  for (GtManagerUnitState s = GT_MANAGER_UNIT_STARTING; s <= GT_MANAGER_UNIT_STOPPED; s++)
    if (g_strcmp0 (gt_manager_unit_state_to_string (s), text) == 0)
      return s;
  return GT_MANAGER_UNIT_FAILED;
}

/* One indented line per tunnel connection under its configuration. */
static void
print_connections (FILE *out, GVariant *details)
{
  g_autoptr (GVariant) connections = NULL;
  GVariantIter iter;
  const char *client, *peer, *state;
  guint32 index, streams;
  guint64 bytes_in, bytes_out;

  if (details == NULL)
    return;
  connections = g_variant_get_child_value (details, 0);
  g_variant_iter_init (&iter, connections);
  while (g_variant_iter_next (&iter, "(&su&s&sutt)", &client, &index, &peer, &state, &streams,
                              &bytes_in, &bytes_out))
    {
      g_autofree char *in = g_format_size (bytes_in);
      g_autofree char *outb = g_format_size (bytes_out);

      /* TRANSLATORS: a tunnel connection under its configuration in `gt status`:
       * "CLIENT-ID#INDEX STATE PEER: N streams, IN in, OUT out" */
      fprintf (out, _("  %s#%u %s %s: %u streams, %s in, %s out\n"), client, index, state, peer,
               streams, in, outb);
    }
}

void
gt_dbus_status_print_units (FILE *out, GPtrArray *units)
{
  if (units->len == 0)
    {
      fprintf (out, "%s\n", _("no configurations"));
      return;
    }
  /* TRANSLATORS: column headings of `gt status`; keep them short, one word each */
  fprintf (out, "%-24s %-7s %-13s %5s %7s %10s %10s  %s\n", _("NAME"), _("KIND"), _("STATE"),
           _("CONNS"), _("STREAMS"), _("IN"), _("OUT"), _("ERROR"));
  for (guint i = 0; i < units->len; i++)
    {
      GtManagerUnitInfo *u = units->pdata[i];
      g_autofree char *in = g_format_size (u->traffic.bytes_in);
      g_autofree char *outb = g_format_size (u->traffic.bytes_out);

      fprintf (out, "%-24s %-7s %-13s %5u %7u %10s %10s  %s\n", u->name,
               u->kind == GT_CONFIG_KIND_SERVER   ? "server"
               : u->kind == GT_CONFIG_KIND_CLIENT ? "client"
                                                  : "?",
               gt_manager_unit_state_to_string (u->state), u->traffic.tunnels, u->traffic.streams,
               in, outb, u->error != NULL ? u->error : "");
      print_connections (out, u->details);
    }
}

static int
info_compare (gconstpointer a, gconstpointer b)
{
  return strcmp ((*(GtManagerUnitInfo *const *) a)->name, (*(GtManagerUnitInfo *const *) b)->name);
}

gboolean
gt_dbus_status_print (FILE *out, GBusType bus_type, GError **error)
{
  g_autoptr (GDBusConnection) bus = bus_type == G_BUS_TYPE_SYSTEM
                                      ? g_bus_get_sync (G_BUS_TYPE_SYSTEM, NULL, NULL)
                                      : gt_dbus_session_bus_get ();
  g_autoptr (GDBusObjectManager) objects = NULL;
  g_autoptr (GtDBusManager1) manager = NULL;
  g_autoptr (GPtrArray) units = NULL;
  g_autofree char *owner = NULL;
  GList *list;

  if (bus == NULL)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                           bus_type == G_BUS_TYPE_SYSTEM ? _("no D-Bus system bus")
                                                         : _("no D-Bus session bus"));
      return FALSE;
    }
  objects = gt_dbus_object_manager_client_new_sync (
    bus, G_DBUS_OBJECT_MANAGER_CLIENT_FLAGS_DO_NOT_AUTO_START, GT_DBUS_NAME, GT_DBUS_PATH, NULL,
    error);
  if (objects == NULL)
    return FALSE;
  owner = g_dbus_object_manager_client_get_name_owner (G_DBUS_OBJECT_MANAGER_CLIENT (objects));
  if (owner != NULL)
    manager = gt_dbus_manager1_proxy_new_sync (bus, G_DBUS_PROXY_FLAGS_DO_NOT_AUTO_START, owner,
                                               GT_DBUS_PATH, NULL, NULL);
  if (owner == NULL || manager == NULL || gt_dbus_manager1_get_version (manager) == NULL)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                   bus_type == G_BUS_TYPE_SYSTEM ? _("no gt manager on the system bus (%s)")
                                                 : _("no gt manager on the session bus (%s)"),
                   GT_DBUS_NAME);
      return FALSE;
    }

  units = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_manager_unit_info_free);
  list = g_dbus_object_manager_get_objects (objects);
  for (GList *l = list; l != NULL; l = l->next)
    {
      g_autoptr (GtDBusTunnel1) t = gt_dbus_object_get_tunnel1 (GT_DBUS_OBJECT (l->data));
      GtManagerUnitInfo *info;
      const char *kind;

      if (t == NULL)
        continue;
      info = g_new0 (GtManagerUnitInfo, 1);
      info->name = g_strdup (gt_dbus_tunnel1_get_name (t));
      kind = gt_dbus_tunnel1_get_kind (t);
      info->kind = g_strcmp0 (kind, "server") == 0   ? GT_CONFIG_KIND_SERVER
                   : g_strcmp0 (kind, "client") == 0 ? GT_CONFIG_KIND_CLIENT
                                                     : GT_CONFIG_KIND_UNKNOWN;
      info->state = state_from_string (gt_dbus_tunnel1_get_state (t));
      info->error = g_strdup (gt_dbus_tunnel1_get_last_error (t));
      if (info->error != NULL && info->error[0] == '\0')
        g_clear_pointer (&info->error, g_free);
      info->pid = (GPid) gt_dbus_tunnel1_get_pid (t);
      info->traffic.tunnels = gt_dbus_tunnel1_get_connections (t);
      info->traffic.streams = gt_dbus_tunnel1_get_streams (t);
      info->traffic.streams_total = gt_dbus_tunnel1_get_streams_total (t);
      info->traffic.bytes_in = gt_dbus_tunnel1_get_bytes_in (t);
      info->traffic.bytes_out = gt_dbus_tunnel1_get_bytes_out (t);
      if (gt_dbus_tunnel1_get_connection_list (t) != NULL
          && gt_dbus_tunnel1_get_stream_list (t) != NULL)
        info->details = g_variant_ref_sink (
          g_variant_new ("(@a" GT_WORKER_CONNECTION_TYPE "@a" GT_WORKER_STREAM_TYPE ")",
                         gt_dbus_tunnel1_get_connection_list (t),
                         gt_dbus_tunnel1_get_stream_list (t)));
      g_ptr_array_add (units, info);
    }
  g_list_free_full (list, g_object_unref);
  g_ptr_array_sort (units, info_compare);

  /* TRANSLATORS: "gt manager VERSION: PHASE, CONFIG-PATH" */
  fprintf (out, _("gt manager %s: %s, %s\n"), gt_dbus_manager1_get_version (manager),
           gt_dbus_manager1_get_phase (manager), gt_dbus_manager1_get_config_path (manager));
  gt_dbus_status_print_units (out, units);
  return TRUE;
}
