/* gt-app-window.c: the main window: the daemon's tunnels with live state and traffic (over
 * D-Bus, updated by PropertiesChanged), a details page, start/stop, and the editor.
 *
 * Window actions (also the automation hook of the tests, exported on D-Bus by GtApp):
 *   show-list, show-tunnel(s), edit-tunnel(s), edit-current, toggle-current, new-config(s),
 *   set-field((ss)), save, screenshot(s); stateful visible-tunnels (as: "NAME=STATE" of the
 *   rows shown), last-save (s: "" while saving, "ok" or the error message), editing (s: the
 *   tunnel loaded in the editor, "" for a new one), visible-connections (as: "ID#INDEX=STATE" of
 *   the details page's connections) and last-toast (s: the title of the last toast). */
#include "config.h"

#define G_LOG_DOMAIN "gt-app"

#include <glib/gi18n.h>
#include <string.h>

#include "gt-app-editor.h"
#include "gt-app-window.h"
#include "gt-dbus-errors.h"
#include "gt-dbus-generated.h"

struct _GtAppWindow
{
  AdwApplicationWindow parent_instance;

  AdwToastOverlay *toasts;
  GtkButton *back_button;
  GtkWidget *new_button;
  GtkWidget *save_button;
  AdwWindowTitle *window_title;
  GtkStack *stack;
  AdwStatusPage *status_page;
  AdwPreferencesGroup *tunnels_group;
  AdwPreferencesGroup *details_group;
  GtkButton *start_stop_button;
  AdwActionRow *state_row;
  AdwActionRow *error_row;
  AdwActionRow *connections_row;
  AdwActionRow *streams_row;
  AdwActionRow *traffic_row;
  AdwActionRow *pid_row;
  AdwPreferencesGroup *connections_group;
  AdwPreferencesGroup *open_streams_group;
  GtAppEditor *editor;

  GCancellable *cancellable;
  GDBusObjectManager *objects;
  GtDBusManager1 *manager;
  GPtrArray *rows;     /* the AdwActionRow of each tunnel shown */
  GPtrArray *detail_rows; /* rows of connections_group and open_streams_group */
  char *current;       /* the tunnel of the details page */
  char *editing;       /* the tunnel in the editor, NULL for a new one */
  gboolean rebuild_queued;
};

G_DEFINE_FINAL_TYPE (GtAppWindow, gt_app_window, ADW_TYPE_APPLICATION_WINDOW)

static GtDBusTunnel1 *
tunnel_lookup (GtAppWindow *self, const char *name)
{
  g_autofree char *escaped = NULL;
  g_autofree char *path = NULL;
  g_autoptr (GDBusObject) object = NULL;

  if (self->objects == NULL || name == NULL)
    return NULL;
  escaped = g_dbus_escape_object_path (name);
  path = g_strdup_printf ("%s/%s", GT_DBUS_TUNNEL_PATH_PREFIX, escaped);
  object = g_dbus_object_manager_get_object (self->objects, path);
  return object != NULL ? gt_dbus_object_get_tunnel1 (GT_DBUS_OBJECT (object)) : NULL;
}

static const char *
state_label (const char *state)
{
  if (g_strcmp0 (state, "running") == 0)
    return _("Running");
  if (g_strcmp0 (state, "starting") == 0)
    return _("Starting");
  if (g_strcmp0 (state, "reconnecting") == 0)
    return _("Reconnecting");
  if (g_strcmp0 (state, "stopped") == 0)
    return _("Stopped");
  return _("Failed");
}

static const char *
kind_label (const char *kind)
{
  if (g_strcmp0 (kind, "server") == 0)
    return _("Server");
  if (g_strcmp0 (kind, "client") == 0)
    return _("Client");
  return _("Unknown");
}

static char *
traffic_text (GtDBusTunnel1 *t)
{
  g_autofree char *in = g_format_size (gt_dbus_tunnel1_get_bytes_in (t));
  g_autofree char *out = g_format_size (gt_dbus_tunnel1_get_bytes_out (t));

  /* TRANSLATORS: traffic toward the services and back to the users */
  return g_strdup_printf (_("%s in, %s out"), in, out);
}

static void
show_page (GtAppWindow *self, const char *page)
{
  gboolean list = g_strcmp0 (page, "list") == 0 || g_strcmp0 (page, "no-daemon") == 0;

  gtk_stack_set_visible_child_name (self->stack, page);
  gtk_widget_set_visible (GTK_WIDGET (self->back_button), !list);
  gtk_widget_set_visible (self->new_button, list);
  gtk_widget_set_visible (self->save_button, g_strcmp0 (page, "editor") == 0);
  if (list)
    adw_window_title_set_subtitle (self->window_title, NULL);
}

static void
toggle_row_cb (GtkSwitch *sw, GParamSpec *pspec, gpointer user_data)
{
  GtAppWindow *self = user_data;
  const char *name = g_object_get_data (G_OBJECT (sw), "gt-name");

  if (self->manager == NULL || g_object_get_data (G_OBJECT (sw), "gt-syncing") != NULL)
    return;
  if (gtk_switch_get_active (sw))
    gt_dbus_manager1_call_start_tunnel (self->manager, name, NULL, NULL, NULL);
  else
    gt_dbus_manager1_call_stop_tunnel (self->manager, name, NULL, NULL, NULL);
}

static void
add_detail_row (GtAppWindow *self, AdwPreferencesGroup *group, const char *title,
                const char *subtitle)
{
  GtkWidget *row = adw_action_row_new ();

  adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), title);
  adw_action_row_set_subtitle (ADW_ACTION_ROW (row), subtitle);
  g_object_set_data (G_OBJECT (row), "gt-group", group);
  adw_preferences_group_add (group, row);
  g_ptr_array_add (self->detail_rows, row);
}

/* One row per tunnel connection and per open stream (ConnectionList, StreamList). */
static void
update_connections (GtAppWindow *self, GtDBusTunnel1 *t)
{
  g_autoptr (GVariantBuilder) shown = g_variant_builder_new (G_VARIANT_TYPE ("as"));
  GVariant *connections = t != NULL ? gt_dbus_tunnel1_get_connection_list (t) : NULL;
  GVariant *streams = t != NULL ? gt_dbus_tunnel1_get_stream_list (t) : NULL;
  const char *client, *peer, *state, *service, *remote;
  guint32 index, n_streams, id;
  guint64 in, out;
  GVariantIter iter;
  GAction *action;

  for (guint i = 0; i < self->detail_rows->len; i++)
    {
      GtkWidget *row = self->detail_rows->pdata[i];

      adw_preferences_group_remove (g_object_get_data (G_OBJECT (row), "gt-group"), row);
    }
  g_ptr_array_set_size (self->detail_rows, 0);
  if (connections != NULL)
    {
      g_variant_iter_init (&iter, connections);
      while (g_variant_iter_next (&iter, "(&su&s&sutt)", &client, &index, &peer, &state,
                                  &n_streams, &in, &out))
        {
          g_autofree char *title = g_strdup_printf ("%s #%u · %s", client, index, state);
          g_autofree char *in_text = g_format_size (in);
          g_autofree char *out_text = g_format_size (out);
          /* TRANSLATORS: a tunnel connection: "PEER · N streams · IN in, OUT out" */
          g_autofree char *subtitle = g_strdup_printf (_("%s · %u streams · %s in, %s out"),
                                                       peer, n_streams, in_text, out_text);

          add_detail_row (self, self->connections_group, title, subtitle);
          g_variant_builder_add_value (shown, g_variant_new_take_string (
                                                g_strdup_printf ("%s#%u=%s", client, index,
                                                                 state)));
        }
    }
  if (streams != NULL)
    {
      g_variant_iter_init (&iter, streams);
      while (g_variant_iter_next (&iter, "(&suu&s&stt)", &client, &index, &id, &service,
                                  &remote, &in, &out))
        {
          g_autofree char *title = g_strdup_printf ("%s · %s", service, client);
          g_autofree char *in_text = g_format_size (in);
          g_autofree char *out_text = g_format_size (out);
          /* TRANSLATORS: an open stream: "USER-ADDRESS · IN in, OUT out" */
          g_autofree char *subtitle = g_strdup_printf (_("%s · %s in, %s out"),
                                                       *remote ? remote : _("unknown address"),
                                                       in_text, out_text);

          add_detail_row (self, self->open_streams_group, title, subtitle);
        }
    }
  gtk_widget_set_visible (GTK_WIDGET (self->connections_group),
                          connections != NULL && g_variant_n_children (connections) > 0);
  gtk_widget_set_visible (GTK_WIDGET (self->open_streams_group),
                          streams != NULL && g_variant_n_children (streams) > 0);
  action = g_action_map_lookup_action (G_ACTION_MAP (self), "visible-connections");
  g_simple_action_set_state (G_SIMPLE_ACTION (action), g_variant_builder_end (shown));
}

static void
update_details (GtAppWindow *self)
{
  g_autoptr (GtDBusTunnel1) t = tunnel_lookup (self, self->current);
  g_autofree char *traffic = NULL;
  g_autofree char *connections = NULL;
  g_autofree char *streams = NULL;
  g_autofree char *total = NULL;
  g_autofree char *pid = NULL;
  const char *error;
  gboolean stopped;

  update_connections (self, t);
  if (t == NULL)
    return;
  adw_preferences_group_set_title (self->details_group, gt_dbus_tunnel1_get_name (t));
  adw_preferences_group_set_description (self->details_group,
                                         kind_label (gt_dbus_tunnel1_get_kind (t)));
  adw_action_row_set_subtitle (self->state_row, state_label (gt_dbus_tunnel1_get_state (t)));
  error = gt_dbus_tunnel1_get_last_error (t);
  adw_action_row_set_subtitle (self->error_row, error != NULL && *error ? error : _("None"));
  connections = g_strdup_printf ("%u", gt_dbus_tunnel1_get_connections (t));
  adw_action_row_set_subtitle (self->connections_row, connections);
  total = g_strdup_printf ("%" G_GUINT64_FORMAT, gt_dbus_tunnel1_get_streams_total (t));
  /* TRANSLATORS: open streams and streams since the start */
  streams = g_strdup_printf (_("%u open, %s in total"), gt_dbus_tunnel1_get_streams (t), total);
  adw_action_row_set_subtitle (self->streams_row, streams);
  traffic = traffic_text (t);
  adw_action_row_set_subtitle (self->traffic_row, traffic);
  pid = gt_dbus_tunnel1_get_pid (t) ? g_strdup_printf ("%u", gt_dbus_tunnel1_get_pid (t))
                                    : g_strdup (_("None"));
  adw_action_row_set_subtitle (self->pid_row, pid);
  stopped = g_strcmp0 (gt_dbus_tunnel1_get_state (t), "stopped") == 0;
  gtk_button_set_label (self->start_stop_button, stopped ? _("_Start") : _("S_top"));
}

static void
row_activated_cb (AdwActionRow *row, gpointer user_data)
{
  GtAppWindow *self = user_data;

  gtk_widget_activate_action (GTK_WIDGET (self), "win.show-tunnel", "s",
                              g_object_get_data (G_OBJECT (row), "gt-name"));
}

static int
object_compare (gconstpointer a, gconstpointer b)
{
  return g_strcmp0 (g_dbus_object_get_object_path ((GDBusObject *) a),
                    g_dbus_object_get_object_path ((GDBusObject *) b));
}

static void
rebuild_list (GtAppWindow *self)
{
  g_autoptr (GVariantBuilder) shown = g_variant_builder_new (G_VARIANT_TYPE ("as"));
  GList *objects = NULL;
  GAction *action;

  for (guint i = 0; i < self->rows->len; i++)
    adw_preferences_group_remove (self->tunnels_group, self->rows->pdata[i]);
  g_ptr_array_set_size (self->rows, 0);

  if (self->objects != NULL)
    objects = g_dbus_object_manager_get_objects (self->objects);
  objects = g_list_sort (objects, object_compare);
  for (GList *l = objects; l != NULL; l = l->next)
    {
      g_autoptr (GtDBusTunnel1) t = gt_dbus_object_get_tunnel1 (GT_DBUS_OBJECT (l->data));
      g_autofree char *subtitle = NULL;
      g_autofree char *traffic = NULL;
      g_autofree char *entry = NULL;
      const char *state, *name;
      GtkWidget *row, *sw;

      if (t == NULL)
        continue;
      name = gt_dbus_tunnel1_get_name (t);
      state = gt_dbus_tunnel1_get_state (t);
      traffic = traffic_text (t);
      subtitle = g_strdup_printf ("%s · %s · %s", kind_label (gt_dbus_tunnel1_get_kind (t)),
                                  state_label (state), traffic);
      row = adw_action_row_new ();
      adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), name);
      adw_action_row_set_subtitle (ADW_ACTION_ROW (row), subtitle);
      gtk_list_box_row_set_activatable (GTK_LIST_BOX_ROW (row), TRUE);
      g_object_set_data_full (G_OBJECT (row), "gt-name", g_strdup (name), g_free);
      g_signal_connect (row, "activated", G_CALLBACK (row_activated_cb), self);
      sw = gtk_switch_new ();
      gtk_widget_set_valign (sw, GTK_ALIGN_CENTER);
      gtk_widget_set_tooltip_text (sw, _("Run this tunnel"));
      g_object_set_data (G_OBJECT (sw), "gt-syncing", GINT_TO_POINTER (1));
      gtk_switch_set_active (GTK_SWITCH (sw), g_strcmp0 (state, "stopped") != 0);
      g_object_set_data (G_OBJECT (sw), "gt-syncing", NULL);
      g_object_set_data_full (G_OBJECT (sw), "gt-name", g_strdup (name), g_free);
      g_signal_connect (sw, "notify::active", G_CALLBACK (toggle_row_cb), self);
      adw_action_row_add_suffix (ADW_ACTION_ROW (row), sw);
      if (g_strcmp0 (state, "failed") == 0 || g_strcmp0 (state, "reconnecting") == 0)
        gtk_widget_add_css_class (row, "warning");
      adw_preferences_group_add (self->tunnels_group, row);
      g_ptr_array_add (self->rows, row);
      entry = g_strdup_printf ("%s=%s", name, state);
      g_variant_builder_add (shown, "s", entry);
    }
  g_list_free_full (objects, g_object_unref);
  action = g_action_map_lookup_action (G_ACTION_MAP (self), "visible-tunnels");
  g_simple_action_set_state (G_SIMPLE_ACTION (action), g_variant_builder_end (shown));
  update_details (self);
}

static gboolean
rebuild_idle_cb (gpointer user_data)
{
  GtAppWindow *self = user_data;

  self->rebuild_queued = FALSE;
  rebuild_list (self);
  return G_SOURCE_REMOVE;
}

static void
queue_rebuild (GtAppWindow *self)
{
  if (self->rebuild_queued)
    return;
  self->rebuild_queued = TRUE;
  g_idle_add_full (G_PRIORITY_DEFAULT_IDLE, rebuild_idle_cb, g_object_ref (self), g_object_unref);
}

static void
objects_changed_cb (GDBusObjectManager *manager, gpointer object, gpointer user_data)
{
  queue_rebuild (user_data);
}

static void
properties_changed_cb (GDBusObjectManagerClient *manager, GDBusObjectProxy *object,
                       GDBusProxy *iface, GVariant *changed, const char *const *invalidated,
                       gpointer user_data)
{
  queue_rebuild (user_data);
}

/* Shows a toast (taken); the last-toast state keeps its title for the tests. */
static void
show_toast (GtAppWindow *self, AdwToast *toast)
{
  GAction *action = g_action_map_lookup_action (G_ACTION_MAP (self), "last-toast");

  g_simple_action_set_state (G_SIMPLE_ACTION (action),
                             g_variant_new_string (adw_toast_get_title (toast)));
  adw_toast_overlay_add_toast (self->toasts, toast);
}

static void
state_changed_cb (GtDBusManager1 *manager, const char *path, const char *name, const char *state,
                  const char *error, gpointer user_data)
{
  GtAppWindow *self = user_data;
  AdwToast *toast;

  /* TRANSLATORS: a toast: "home.yaml: Running" */
  toast = adw_toast_new_format (_("%s: %s"), name, state_label (state));
  adw_toast_set_timeout (toast, 3);
  show_toast (self, toast);
}

static void
owner_changed_cb (GObject *object, GParamSpec *pspec, gpointer user_data)
{
  GtAppWindow *self = user_data;
  g_autofree char *owner
    = g_dbus_object_manager_client_get_name_owner (G_DBUS_OBJECT_MANAGER_CLIENT (object));

  if (owner == NULL)
    {
      adw_status_page_set_title (self->status_page, _("The gt Daemon Is Not Running"));
      show_page (self, "no-daemon");
    }
  else if (g_strcmp0 (gtk_stack_get_visible_child_name (self->stack), "no-daemon") == 0)
    show_page (self, "list");
  queue_rebuild (self);
}

static void
manager_ready_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GtAppWindow) self = user_data;
  g_autoptr (GError) error = NULL;

  self->manager = gt_dbus_manager1_proxy_new_for_bus_finish (result, &error);
  if (self->manager == NULL)
    {
      g_warning ("cannot reach the gt daemon: %s", error->message);
      return;
    }
  g_signal_connect (self->manager, "tunnel-state-changed", G_CALLBACK (state_changed_cb), self);
}

static void
objects_ready_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GtAppWindow) self = user_data;
  g_autoptr (GError) error = NULL;

  self->objects = gt_dbus_object_manager_client_new_for_bus_finish (result, &error);
  if (self->objects == NULL)
    {
      if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        {
          adw_status_page_set_title (self->status_page, _("No Session Bus"));
          adw_status_page_set_description (self->status_page, error->message);
        }
      return;
    }
  g_signal_connect (self->objects, "object-added", G_CALLBACK (objects_changed_cb), self);
  g_signal_connect (self->objects, "object-removed", G_CALLBACK (objects_changed_cb), self);
  g_signal_connect (self->objects, "interface-proxy-properties-changed",
                    G_CALLBACK (properties_changed_cb), self);
  g_signal_connect (self->objects, "notify::name-owner", G_CALLBACK (owner_changed_cb), self);
  owner_changed_cb (G_OBJECT (self->objects), NULL, self);
}

/* ------------------------------------------------------------------------------------------ */
/* Actions */

static void
show_list_action (GSimpleAction *action, GVariant *param, gpointer user_data)
{
  GtAppWindow *self = user_data;

  show_page (self, self->objects != NULL ? "list" : "no-daemon");
}

static void
show_tunnel_action (GSimpleAction *action, GVariant *param, gpointer user_data)
{
  GtAppWindow *self = user_data;

  g_free (self->current);
  self->current = g_variant_dup_string (param, NULL);
  update_details (self);
  adw_window_title_set_subtitle (self->window_title, self->current);
  show_page (self, "details");
}

static void
toggle_current_action (GSimpleAction *action, GVariant *param, gpointer user_data)
{
  GtAppWindow *self = user_data;
  g_autoptr (GtDBusTunnel1) t = tunnel_lookup (self, self->current);

  if (t == NULL)
    return;
  if (g_strcmp0 (gt_dbus_tunnel1_get_state (t), "stopped") == 0)
    gt_dbus_tunnel1_call_start (t, NULL, NULL, NULL);
  else
    gt_dbus_tunnel1_call_stop (t, NULL, NULL, NULL);
}

typedef struct
{
  GtAppWindow *self;
  char *name;
  GtConfigKind kind;
  char *document;
} EditData;

static void
edit_data_free (EditData *d)
{
  g_object_unref (d->self);
  g_free (d->name);
  g_free (d->document);
  g_free (d);
}

static void
edit_show (EditData *d, const char *secret)
{
  GtAppWindow *self = d->self;

  g_free (self->editing);
  self->editing = g_strdup (d->name);
  gt_app_editor_load (self->editor, d->kind, d->name, d->document, secret);
  g_simple_action_set_state (
    G_SIMPLE_ACTION (g_action_map_lookup_action (G_ACTION_MAP (self), "editing")),
    g_variant_new_string (d->name != NULL ? d->name : ""));
  adw_window_title_set_subtitle (self->window_title, d->name ? d->name : _("New Configuration"));
  show_page (self, "editor");
  edit_data_free (d);
}

static void
get_config_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  EditData *d = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GtDBusTunnel1) t = NULL;

  if (!gt_dbus_manager1_call_get_config_finish (GT_DBUS_MANAGER1 (source), &d->document, result,
                                                &error))
    {
      g_dbus_error_strip_remote_error (error);
      show_toast (d->self, adw_toast_new (error->message));
      edit_data_free (d);
      return;
    }
  t = tunnel_lookup (d->self, d->name);
  d->kind = t != NULL && g_strcmp0 (gt_dbus_tunnel1_get_kind (t), "server") == 0
              ? GT_CONFIG_KIND_SERVER
              : GT_CONFIG_KIND_CLIENT;
  edit_show (d, NULL);
}

static void
edit_tunnel (GtAppWindow *self, const char *name)
{
  EditData *d;

  if (self->manager == NULL)
    return;
  d = g_new0 (EditData, 1);
  d->self = g_object_ref (self);
  d->name = g_strdup (name);
  gt_dbus_manager1_call_get_config (self->manager, name, self->cancellable, get_config_cb, d);
}

static void
edit_tunnel_action (GSimpleAction *action, GVariant *param, gpointer user_data)
{
  edit_tunnel (user_data, g_variant_get_string (param, NULL));
}

static void
edit_current_action (GSimpleAction *action, GVariant *param, gpointer user_data)
{
  GtAppWindow *self = user_data;

  if (self->current != NULL)
    edit_tunnel (self, self->current);
}

static void
new_config_action (GSimpleAction *action, GVariant *param, gpointer user_data)
{
  GtAppWindow *self = user_data;
  EditData *d = g_new0 (EditData, 1);

  d->self = g_object_ref (self);
  d->kind = g_strcmp0 (g_variant_get_string (param, NULL), "server") == 0 ? GT_CONFIG_KIND_SERVER
                                                                         : GT_CONFIG_KIND_CLIENT;
  edit_show (d, NULL);
}

static void
set_field_action (GSimpleAction *action, GVariant *param, gpointer user_data)
{
  GtAppWindow *self = user_data;
  const char *field, *value;

  g_variant_get (param, "(&s&s)", &field, &value);
  if (!gt_app_editor_set_field (self->editor, field, value))
    g_warning ("set-field: unknown field %s", field);
}

static void
set_last_save (GtAppWindow *self, const char *text)
{
  GAction *action = g_action_map_lookup_action (G_ACTION_MAP (self), "last-save");

  g_simple_action_set_state (G_SIMPLE_ACTION (action), g_variant_new_string (text));
}

typedef struct
{
  GtAppWindow *self;
  char *name;
} SaveData;

static void
save_data_free (SaveData *d)
{
  g_object_unref (d->self);
  g_free (d->name);
  g_free (d);
}

static void
set_config_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SaveData *d = user_data;
  GtAppWindow *self = d->self;
  g_autoptr (GError) error = NULL;
  AdwToast *toast;

  gtk_widget_set_sensitive (self->save_button, TRUE);
  if (!gt_dbus_manager1_call_set_config_finish (GT_DBUS_MANAGER1 (source), result, &error))
    {
      gt_app_editor_show_error (self->editor, error);
      g_dbus_error_strip_remote_error (error);
      set_last_save (self, error->message);
      save_data_free (d);
      return;
    }
  /* TRANSLATORS: a toast after saving a configuration file */
  toast = adw_toast_new_format (_("Saved %s"), d->name);
  show_toast (self, toast);
  set_last_save (self, "ok");
  g_free (self->current);
  self->current = g_strdup (d->name);
  update_details (self);
  show_page (self, "details");
  adw_window_title_set_subtitle (self->window_title, d->name);
  save_data_free (d);
}

static void
save_action (GSimpleAction *action, GVariant *param, gpointer user_data)
{
  GtAppWindow *self = user_data;
  g_autofree char *document = NULL;
  SaveData *d;

  if (self->manager == NULL)
    return;
  gt_app_editor_clear_errors (self->editor);
  document = gt_app_editor_get_document (self->editor);
  d = g_new0 (SaveData, 1);
  d->self = g_object_ref (self);
  d->name = self->editing != NULL ? g_strdup (self->editing)
                                  : gt_app_editor_get_name (self->editor);
  set_last_save (self, "");
  gtk_widget_set_sensitive (self->save_button, FALSE);
  gt_dbus_manager1_call_set_config (self->manager, d->name, document, self->cancellable,
                                    set_config_cb, d);
  memset (document, 0, strlen (document));
}

/* Renders the window into a PNG (the tests' screenshots; no pixel clicking needed). */
static void
screenshot_action (GSimpleAction *action, GVariant *param, gpointer user_data)
{
  GtAppWindow *self = user_data;
  GtkWidget *widget = GTK_WIDGET (self);
  g_autoptr (GdkPaintable) paintable = gtk_widget_paintable_new (widget);
  g_autoptr (GtkSnapshot) snapshot = gtk_snapshot_new ();
  g_autoptr (GskRenderNode) node = NULL;
  g_autoptr (GdkTexture) texture = NULL;
  int w = gtk_widget_get_width (widget), h = gtk_widget_get_height (widget);
  GskRenderer *renderer = gtk_native_get_renderer (GTK_NATIVE (self));

  if (w <= 0 || h <= 0 || renderer == NULL)
    {
      g_warning ("screenshot: the window is not shown");
      return;
    }
  gdk_paintable_snapshot (paintable, snapshot, w, h);
  node = gtk_snapshot_free_to_node (g_steal_pointer (&snapshot));
  if (node == NULL)
    return;
  texture = gsk_renderer_render_texture (renderer, node, &GRAPHENE_RECT_INIT (0, 0, w, h));
  if (!gdk_texture_save_to_png (texture, g_variant_get_string (param, NULL)))
    g_warning ("screenshot: cannot write %s", g_variant_get_string (param, NULL));
}

static const GActionEntry win_actions[] = {
  { "show-list", show_list_action, NULL, NULL, NULL },
  { "show-tunnel", show_tunnel_action, "s", NULL, NULL },
  { "edit-tunnel", edit_tunnel_action, "s", NULL, NULL },
  { "edit-current", edit_current_action, NULL, NULL, NULL },
  { "toggle-current", toggle_current_action, NULL, NULL, NULL },
  { "new-config", new_config_action, "s", NULL, NULL },
  { "set-field", set_field_action, "(ss)", NULL, NULL },
  { "save", save_action, NULL, NULL, NULL },
  { "screenshot", screenshot_action, "s", NULL, NULL },
  { "visible-tunnels", NULL, NULL, "@as []", NULL },
  { "last-save", NULL, NULL, "''", NULL },
  { "editing", NULL, NULL, "''", NULL },
  { "visible-connections", NULL, NULL, "@as []", NULL },
  { "last-toast", NULL, NULL, "''", NULL },
};

static void
gt_app_window_dispose (GObject *object)
{
  GtAppWindow *self = GT_APP_WINDOW (object);

  g_cancellable_cancel (self->cancellable);
  if (self->objects != NULL)
    g_signal_handlers_disconnect_by_data (self->objects, self);
  if (self->manager != NULL)
    g_signal_handlers_disconnect_by_data (self->manager, self);
  g_clear_object (&self->objects);
  g_clear_object (&self->manager);
  g_clear_object (&self->cancellable);
  g_clear_pointer (&self->rows, g_ptr_array_unref);
  g_clear_pointer (&self->detail_rows, g_ptr_array_unref);
  g_clear_pointer (&self->current, g_free);
  g_clear_pointer (&self->editing, g_free);
  gtk_widget_dispose_template (GTK_WIDGET (self), GT_TYPE_APP_WINDOW);
  G_OBJECT_CLASS (gt_app_window_parent_class)->dispose (object);
}

static void
gt_app_window_class_init (GtAppWindowClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->dispose = gt_app_window_dispose;
  g_type_ensure (GT_TYPE_APP_EDITOR);
  gtk_widget_class_set_template_from_resource (widget_class,
                                               "/io/github/gtrelay/Gt/gt-app-window.ui");
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, toasts);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, back_button);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, new_button);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, save_button);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, window_title);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, stack);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, status_page);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, tunnels_group);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, details_group);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, start_stop_button);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, state_row);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, error_row);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, connections_row);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, streams_row);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, traffic_row);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, pid_row);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, connections_group);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, open_streams_group);
  gtk_widget_class_bind_template_child (widget_class, GtAppWindow, editor);
}

static void
gt_app_window_init (GtAppWindow *self)
{
  gtk_widget_init_template (GTK_WIDGET (self));
  self->cancellable = g_cancellable_new ();
  self->rows = g_ptr_array_new ();
  self->detail_rows = g_ptr_array_new ();
  g_action_map_add_action_entries (G_ACTION_MAP (self), win_actions, G_N_ELEMENTS (win_actions),
                                   self);
  gt_dbus_errors_register ();
  show_page (self, "no-daemon");
  /* Auto-start allowed: D-Bus activation starts the daemon (gt.service) when needed. */
  gt_dbus_object_manager_client_new_for_bus (
    G_BUS_TYPE_SESSION, G_DBUS_OBJECT_MANAGER_CLIENT_FLAGS_NONE, GT_DBUS_NAME, GT_DBUS_PATH,
    self->cancellable, objects_ready_cb, g_object_ref (self));
  gt_dbus_manager1_proxy_new_for_bus (G_BUS_TYPE_SESSION, G_DBUS_PROXY_FLAGS_NONE, GT_DBUS_NAME,
                                      GT_DBUS_PATH, self->cancellable, manager_ready_cb,
                                      g_object_ref (self));
}

GtAppWindow *
gt_app_window_new (AdwApplication *app)
{
  return g_object_new (GT_TYPE_APP_WINDOW, "application", app, NULL);
}
