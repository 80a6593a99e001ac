/* gt-app.c: the desktop app (io.github.gtrelay.Gt): one main window, app actions, and the
 * automation hook: with GT_APP_AUTOMATION=1 the window's actions are exported on the session bus
 * at /io/github/gtrelay/Gt/App and the app prints "automation: UNIQUE-NAME" on stdout. */
#include "config.h"

#define G_LOG_DOMAIN "gt-app"

#include <glib/gi18n.h>
#include <stdio.h>

#include "gt-app-window.h"
#include "gt-app.h"

#define AUTOMATION_PATH "/io/github/gtrelay/Gt/App"

struct _GtApp
{
  AdwApplication parent_instance;

  guint export_id;
  GDBusConnection *automation_bus;
};

G_DEFINE_FINAL_TYPE (GtApp, gt_app, ADW_TYPE_APPLICATION)

static void
export_automation (GtApp *self, GtkWindow *window)
{
  g_autoptr (GError) error = NULL;

  self->automation_bus = g_bus_get_sync (G_BUS_TYPE_SESSION, NULL, &error);
  if (self->automation_bus == NULL)
    {
      g_warning ("automation: %s", error->message);
      return;
    }
  self->export_id = g_dbus_connection_export_action_group (
    self->automation_bus, AUTOMATION_PATH, G_ACTION_GROUP (window), &error);
  if (self->export_id == 0)
    {
      g_warning ("automation: %s", error->message);
      return;
    }
  printf ("automation: %s\n", g_dbus_connection_get_unique_name (self->automation_bus));
  fflush (stdout);
}

static void
gt_app_activate (GApplication *app)
{
  GtApp *self = GT_APP (app);
  GtkWindow *window = gtk_application_get_active_window (GTK_APPLICATION (app));

  if (window == NULL)
    {
      window = GTK_WINDOW (gt_app_window_new (ADW_APPLICATION (app)));
      if (g_strcmp0 (g_getenv ("GT_APP_AUTOMATION"), "1") == 0)
        export_automation (self, window);
    }
  gtk_window_present (window);
}

static void
about_action (GSimpleAction *action, GVariant *param, gpointer user_data)
{
  GtkApplication *app = user_data;
  const char *developers[] = { "gt contributors", NULL };

  adw_show_about_window (gtk_application_get_active_window (app),
                         "application-name", _("gt Tunnels"),
                         "application-icon", "io.github.gtrelay.Gt",
                         "version", PACKAGE_VERSION,
                         "developers", developers,
                         "license-type", GTK_LICENSE_GPL_3_0,
                         "comments", _("Reverse tunnels from your desktop"),
                         NULL);
}

static void
quit_action (GSimpleAction *action, GVariant *param, gpointer user_data)
{
  g_application_quit (user_data);
}

static const GActionEntry app_actions[] = {
  { "about", about_action, NULL, NULL, NULL },
  { "quit", quit_action, NULL, NULL, NULL },
};

static void
gt_app_startup (GApplication *app)
{
  const char *quit_accels[] = { "<Control>q", NULL };

  G_APPLICATION_CLASS (gt_app_parent_class)->startup (app);
  g_action_map_add_action_entries (G_ACTION_MAP (app), app_actions, G_N_ELEMENTS (app_actions),
                                   app);
  gtk_application_set_accels_for_action (GTK_APPLICATION (app), "app.quit", quit_accels);
}

static void
gt_app_dispose (GObject *object)
{
  GtApp *self = GT_APP (object);

  if (self->export_id != 0)
    g_dbus_connection_unexport_action_group (self->automation_bus, self->export_id);
  self->export_id = 0;
  g_clear_object (&self->automation_bus);
  G_OBJECT_CLASS (gt_app_parent_class)->dispose (object);
}

static void
gt_app_class_init (GtAppClass *klass)
{
  G_OBJECT_CLASS (klass)->dispose = gt_app_dispose;
  G_APPLICATION_CLASS (klass)->activate = gt_app_activate;
  G_APPLICATION_CLASS (klass)->startup = gt_app_startup;
}

static void
gt_app_init (GtApp *self)
{
}

GtApp *
gt_app_new (void)
{
  /* The bus name io.github.gtrelay.Gt belongs to the daemon: the app does not claim it. */
  return g_object_new (GT_TYPE_APP, "application-id", "io.github.gtrelay.Gt", "flags",
                       G_APPLICATION_NON_UNIQUE, "resource-base-path", "/io/github/gtrelay/Gt",
                       NULL);
}
