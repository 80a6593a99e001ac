/* test-dbus.c (integration): the D-Bus control interface of a real `gt -c DIR` manager on a
 * private session bus (run under dbus-run-session): tunnels listed with their state and
 * counters, a tunnel stopped and started (traffic stops and resumes), an invalid document
 * refused with a typed error carrying line:column, a valid one applied, secrets never returned,
 * the state-change signals, and `gt status`. */
#include "config.h"

#include <string.h>
#include <sys/stat.h>

#include <gio/gio.h>

#include "gt-dbus-errors.h"
#include "gt-dbus-generated.h"
#include "gt-test-utils.h"

#define SECRET "dbus-test-secret"
#define WAIT_MS 20000

typedef struct
{
  char *cfg;
  char *run;
  guint16 server_port;
  GtTestHttp *service;
  GtTestProc *manager;
  GDBusConnection *bus;
  GDBusObjectManager *objects;
  GtDBusManager1 *manager_iface;
  GPtrArray *state_signals; /* "name=state" of each TunnelStateChanged */
  guint n_state_notifies;   /* PropertiesChanged carrying State */
} Fixture;

static void
write_client (Fixture *f, const char *prefix)
{
  g_autofree char *path = g_build_filename (f->cfg, "client.yaml", NULL);
  g_autofree char *text = g_strdup_printf ("type: client\n"
                                           "options:\n"
                                           "  id: desk\n"
                                           "  secret: " SECRET "\n"
                                           "  remote: tcp://127.0.0.1:%u\n"
                                           "  reconnectDelay: 100ms\n"
                                           "services:\n"
                                           "  - local: http://127.0.0.1:%u\n"
                                           "    hostPrefix: %s\n",
                                           f->server_port, f->service->port, prefix);

  g_assert_true (g_file_set_contents (path, text, -1, NULL));
}

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  g_autofree char *server = NULL;
  g_autofree char *server_path = NULL;

  gt_test_setup ();
  f->cfg = g_build_filename (gt_test_tmpdir (), "cfg", NULL);
  f->run = g_build_filename (gt_test_tmpdir (), "run", NULL);
  g_assert_cmpint (g_mkdir_with_parents (f->cfg, 0700), ==, 0);
  g_assert_cmpint (g_mkdir_with_parents (f->run, 0700), ==, 0);
  f->service = gt_test_http_start ("desk-service", 0, NULL);
  f->server_port = gt_test_free_port ();
  server = g_strdup_printf ("type: server\n"
                            "users:\n"
                            "  desk:\n"
                            "    secret: " SECRET "\n"
                            "options:\n"
                            "  addr: 127.0.0.1:%u\n",
                            f->server_port);
  server_path = g_build_filename (f->cfg, "server.yaml", NULL);
  g_assert_true (g_file_set_contents (server_path, server, -1, NULL));
  write_client (f, "web");
  f->state_signals = g_ptr_array_new_with_free_func (g_free);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  g_clear_object (&f->manager_iface);
  g_clear_object (&f->objects);
  gt_test_teardown ();
  g_clear_object (&f->bus);
  g_clear_pointer (&f->state_signals, g_ptr_array_unref);
  g_free (f->cfg);
  g_free (f->run);
}

static void
iterate (guint ms)
{
  gint64 end = g_get_monotonic_time () + ms * 1000;

  while (g_get_monotonic_time () < end)
    if (!g_main_context_iteration (NULL, FALSE))
      g_usleep (5000);
}

static GtDBusTunnel1 *
tunnel (Fixture *f, const char *name)
{
  g_autofree char *escaped = g_dbus_escape_object_path (name);
  g_autofree char *path = g_strdup_printf ("%s/%s", GT_DBUS_TUNNEL_PATH_PREFIX, escaped);
  g_autoptr (GDBusObject) object = g_dbus_object_manager_get_object (f->objects, path);

  return object != NULL ? gt_dbus_object_get_tunnel1 (GT_DBUS_OBJECT (object)) : NULL;
}

/* Waits (iterating the main context, so that properties update) until name has state. */
static void
wait_state (Fixture *f, const char *name, const char *state)
{
  gint64 deadline = gt_test_deadline_in (WAIT_MS);
  g_autofree char *last = NULL;

  while (g_get_monotonic_time () < deadline)
    {
      g_autoptr (GtDBusTunnel1) t = tunnel (f, name);

      if (t != NULL)
        {
          g_free (last);
          last = g_strdup (gt_dbus_tunnel1_get_state (t));
          if (g_strcmp0 (last, state) == 0)
            return;
        }
      iterate (20);
    }
  gt_test_fail ("%s did not become %s (last state %s)", name, state, last ? last : "none");
}

static void
tunnel_state_changed_cb (GtDBusManager1 *iface, const char *path, const char *name,
                         const char *state, const char *error, gpointer user_data)
{
  Fixture *f = user_data;

  g_ptr_array_add (f->state_signals, g_strdup_printf ("%s=%s", name, state));
}

static void
properties_changed_cb (GDBusObjectManagerClient *manager, GDBusObjectProxy *object,
                       GDBusProxy *iface, GVariant *changed, const char *const *invalidated,
                       gpointer user_data)
{
  Fixture *f = user_data;
  g_autoptr (GVariant) state = g_variant_lookup_value (changed, "State", NULL);

  if (state != NULL)
    f->n_state_notifies++;
}

static gboolean
saw_signal (Fixture *f, const char *what)
{
  for (guint i = 0; i < f->state_signals->len; i++)
    if (strcmp (f->state_signals->pdata[i], what) == 0)
      return TRUE;
  return FALSE;
}

/* Starts the manager and connects a GDBus client to it. */
static void
start_manager (Fixture *f)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *env_run = g_strdup_printf ("GT_RUNTIME_DIR=%s", f->run);
  const char *env[] = { env_run, "GT_MANAGER_READY_TIMEOUT=5s", "GT_MANAGER_STOP_TIMEOUT=5s",
                        NULL };
  gint64 deadline;
  g_autofree char *owner = NULL;

  if (g_getenv ("DBUS_SESSION_BUS_ADDRESS") == NULL)
    {
      g_test_skip ("no session bus (run under dbus-run-session)");
      return;
    }
  gt_test_args_addv (args, "-c", f->cfg, NULL);
  f->manager = gt_test_spawn ("manager", gt_test_binary (), args, NULL, env);
  f->bus = g_bus_get_sync (G_BUS_TYPE_SESSION, NULL, &error);
  g_assert_no_error (error);
  gt_dbus_errors_register ();

  deadline = gt_test_deadline_in (WAIT_MS);
  while (owner == NULL && g_get_monotonic_time () < deadline)
    {
      g_autoptr (GVariant) reply = g_dbus_connection_call_sync (
        f->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
        "GetNameOwner", g_variant_new ("(s)", GT_DBUS_NAME), G_VARIANT_TYPE ("(s)"),
        G_DBUS_CALL_FLAGS_NONE, 1000, NULL, NULL);

      if (reply != NULL)
        g_variant_get (reply, "(s)", &owner);
      else
        g_usleep (50000);
    }
  g_assert_nonnull (owner);
  f->objects = gt_dbus_object_manager_client_new_sync (
    f->bus, G_DBUS_OBJECT_MANAGER_CLIENT_FLAGS_DO_NOT_AUTO_START, GT_DBUS_NAME, GT_DBUS_PATH, NULL,
    &error);
  g_assert_no_error (error);
  f->manager_iface = gt_dbus_manager1_proxy_new_sync (f->bus, G_DBUS_PROXY_FLAGS_NONE,
                                                      GT_DBUS_NAME, GT_DBUS_PATH, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (gt_dbus_manager1_get_version (f->manager_iface), ==, PACKAGE_VERSION);
  g_signal_connect (f->manager_iface, "tunnel-state-changed",
                    G_CALLBACK (tunnel_state_changed_cb), f);
  g_signal_connect (f->objects, "interface-proxy-properties-changed",
                    G_CALLBACK (properties_changed_cb), f);
}

static int
http_status (Fixture *f, const char *host, char **body_out)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) r
    = gt_test_http_request (f->server_port, "GET", "/whoami", host, NULL, 0, &error);

  if (r == NULL)
    return 0;
  if (body_out != NULL)
    *body_out = g_strndup ((const char *) r->body->data, r->body->len);
  return (int) r->status;
}

/* Waits until a request for host gets want (iterating the main context meanwhile). */
static void
wait_http (Fixture *f, const char *host, int want)
{
  gint64 deadline = gt_test_deadline_in (WAIT_MS);
  int got = 0;

  while (g_get_monotonic_time () < deadline)
    {
      g_autofree char *body = NULL;

      got = http_status (f, host, &body);
      if (got == want)
        {
          if (want == 200)
            g_assert_nonnull (strstr (body, "desk-service"));
          return;
        }
      iterate (100);
    }
  gt_test_fail ("Host %s: status %d, want %d", host, got, want);
}

static void
test_control (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtDBusTunnel1) client = NULL;
  g_autoptr (GtDBusTunnel1) server = NULL;
  g_autofree char *document = NULL;
  g_autofree char *kind = NULL;
  g_autofree char *on_disk = NULL;
  g_autofree char *client_path = g_build_filename (f->cfg, "client.yaml", NULL);
  g_autofree char *bad = NULL;
  g_autofree char *good = NULL;
  gint64 deadline;
  guint line = 0, column = 0;
  const char *message = NULL;
  struct stat st;

  start_manager (f);
  if (g_test_failed () || f->objects == NULL)
    return;

  /* Both files are listed and run. */
  wait_state (f, "server.yaml", "running");
  wait_state (f, "client.yaml", "running");
  client = tunnel (f, "client.yaml");
  server = tunnel (f, "server.yaml");
  g_assert_cmpstr (gt_dbus_tunnel1_get_kind (client), ==, "client");
  g_assert_cmpstr (gt_dbus_tunnel1_get_kind (server), ==, "server");
  g_assert_cmpuint (gt_dbus_tunnel1_get_pid (client), >, 0);
  g_assert_cmpstr (gt_dbus_tunnel1_get_last_error (client), ==, "");

  /* Traffic flows and the counters follow (the workers report about once a second). */
  wait_http (f, "web.example.com", 200);
  deadline = gt_test_deadline_in (WAIT_MS);
  while ((gt_dbus_tunnel1_get_streams_total (server) == 0
          || gt_dbus_tunnel1_get_bytes_out (server) == 0
          || gt_dbus_tunnel1_get_bytes_in (client) == 0
          || gt_dbus_tunnel1_get_connections (client) == 0)
         && g_get_monotonic_time () < deadline)
    iterate (50);
  g_assert_cmpuint (gt_dbus_tunnel1_get_streams_total (server), >=, 1);
  g_assert_cmpuint (gt_dbus_tunnel1_get_bytes_out (server), >, 0);
  g_assert_cmpuint (gt_dbus_tunnel1_get_bytes_in (client), >, 0);
  g_assert_cmpuint (gt_dbus_tunnel1_get_connections (client), >=, 1);
  g_assert_cmpuint (gt_dbus_tunnel1_get_connections (server), >=, 1);

  /* Stop the client: its traffic stops, the signals tell. */
  g_assert_true (gt_dbus_manager1_call_stop_tunnel_sync (f->manager_iface, "client.yaml",
                                                         NULL,
                                                         &error));
  g_assert_no_error (error);
  wait_state (f, "client.yaml", "stopped");
  g_assert_cmpuint (gt_dbus_tunnel1_get_pid (client), ==, 0);
  wait_http (f, "web.example.com", 404);
  deadline = gt_test_deadline_in (WAIT_MS);
  while (!saw_signal (f, "client.yaml=stopped") && g_get_monotonic_time () < deadline)
    iterate (20);
  g_assert_true (saw_signal (f, "client.yaml=stopped"));
  g_assert_cmpuint (f->n_state_notifies, >, 0);

  /* A reload does not start a stopped tunnel. */
  g_assert_true (gt_dbus_manager1_call_reload_sync (f->manager_iface, NULL, &error));
  iterate (1000);
  g_assert_cmpstr (gt_dbus_tunnel1_get_state (client), ==, "stopped");

  /* Start it again (through the tunnel object this time): traffic resumes. */
  g_assert_true (gt_dbus_tunnel1_call_start_sync (client, NULL,
                                                  &error));
  g_assert_no_error (error);
  wait_state (f, "client.yaml", "running");
  wait_http (f, "web.example.com", 200);
  g_assert_true (saw_signal (f, "client.yaml=running"));

  /* The document comes without its secret. */
  g_assert_true (gt_dbus_manager1_call_get_config_sync (f->manager_iface, "client.yaml",
                                                        &document,
                                                        NULL, &error));
  g_assert_no_error (error);
  g_assert_null (strstr (document, SECRET));
  g_assert_nonnull (strstr (document, "secret: \"(unchanged)\""));
  g_assert_nonnull (strstr (document, "hostPrefix: web\n"));

  /* An invalid document: typed error with the place; the file stays as it was. */
  bad = g_strdup (document);
  {
    char *p = strstr (bad, "reconnectDelay: 100ms");

    g_assert_nonnull (p);
    memcpy (p, "reconnectDelay: 1xx  ", strlen ("reconnectDelay: 100ms"));
  }
  g_assert_false (gt_dbus_manager1_call_set_config_sync (f->manager_iface, "client.yaml", bad,
                                                         NULL,
                                                         &error));
  g_assert_error (error, GT_DBUS_ERROR, GT_DBUS_ERROR_VALUE);
  g_assert_true (gt_dbus_error_get_place (error, &line, &column, &message));
  g_assert_cmpuint (line, ==, 6);
  g_assert_cmpuint (column, ==, 19);
  g_assert_nonnull (strstr (message, "bad duration '1xx'"));
  g_dbus_error_strip_remote_error (error);
  if (!g_str_has_prefix (error->message, "client.yaml:6:19: "))
    gt_test_fail ("unexpected message: %s", error->message);
  g_clear_error (&error);
  /* A syntax error is typed too. */
  g_assert_false (gt_dbus_manager1_call_validate_config_sync (
    f->manager_iface, "x.yaml", "type: client\noptions: [\n", &kind,
    NULL, &error));
  g_assert_error (error, GT_DBUS_ERROR, GT_DBUS_ERROR_SYNTAX);
  g_dbus_error_strip_remote_error (error);
  g_assert_true (g_str_has_prefix (error->message, "x.yaml:"));
  g_clear_error (&error);
  g_assert_true (g_file_get_contents (client_path, &on_disk, NULL, NULL));
  g_assert_nonnull (strstr (on_disk, "reconnectDelay: 100ms"));
  g_assert_cmpstr (gt_dbus_tunnel1_get_state (client), ==, "running");

  /* A placeholder secret where no secret was saved is refused with its place. */
  g_assert_false (gt_dbus_manager1_call_set_config_sync (
    f->manager_iface, "new.yaml", "type: client\noptions:\n  secret: \"(unchanged)\"\n",
    NULL, &error));
  g_assert_error (error, GT_DBUS_ERROR, GT_DBUS_ERROR_VALUE);
  g_dbus_error_strip_remote_error (error);
  g_assert_true (g_str_has_prefix (error->message, "new.yaml:3:11: "));
  g_clear_error (&error);
  /* A document is bounded like a file of the config directory (10 MiB). */
  {
    gsize big_len = 11 * 1024 * 1024;
    g_autofree char *big = g_malloc (big_len + 1);

    memset (big, '#', big_len);
    big[big_len] = '\0';
    g_assert_false (gt_dbus_manager1_call_set_config_sync (f->manager_iface, "client.yaml", big,
                                                           NULL, &error));
    g_assert_error (error, GT_DBUS_ERROR, GT_DBUS_ERROR_INVALID);
    g_assert_nonnull (strstr (error->message, "client.yaml: larger than 10 MiB"));
    g_clear_error (&error);
  }
  /* Unknown names and names that are no file names. */
  g_assert_false (gt_dbus_manager1_call_stop_tunnel_sync (f->manager_iface, "nope.yaml",
                                                          NULL,
                                                          &error));
  g_assert_error (error, GT_DBUS_ERROR, GT_DBUS_ERROR_NO_TUNNEL);
  g_clear_error (&error);
  g_assert_false (gt_dbus_manager1_call_set_config_sync (f->manager_iface, "../evil.yaml",
                                                         document, NULL, &error));
  g_assert_error (error, GT_DBUS_ERROR, GT_DBUS_ERROR_BAD_NAME);
  g_clear_error (&error);

  /* A valid document (the secret kept as "(unchanged)") is written and applied. */
  g_assert_true (gt_dbus_manager1_call_validate_config_sync (
    f->manager_iface, "client.yaml", document, &kind, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (kind, ==, "client");
  {
    GString *s = g_string_new (document);

    g_string_replace (s, "hostPrefix: web\n", "hostPrefix: web2\n", 1);
    good = g_string_free (s, FALSE);
  }
  g_assert_true (gt_dbus_manager1_call_set_config_sync (f->manager_iface, "client.yaml", good,
                                                        NULL,
                                                        &error));
  g_assert_no_error (error);
  wait_http (f, "web2.example.com", 200);
  wait_http (f, "web.example.com", 404);
  g_clear_pointer (&on_disk, g_free);
  g_assert_true (g_file_get_contents (client_path, &on_disk, NULL, NULL));
  g_assert_nonnull (strstr (on_disk, "secret: " SECRET "\n"));
  g_assert_nonnull (strstr (on_disk, "hostPrefix: web2\n"));
  g_assert_cmpint (stat (client_path, &st), ==, 0);
  g_assert_cmpint (st.st_mode & 0777, ==, 0600);
  wait_state (f, "client.yaml", "running");
}

/* `gt status` prints the same state over D-Bus. */
static void
test_status (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autoptr (GSubprocess) sp = NULL;
  g_autoptr (GRegex) re = NULL;

  start_manager (f);
  if (g_test_failed () || f->objects == NULL)
    return;
  wait_state (f, "client.yaml", "running");
  {
    g_autoptr (GtDBusTunnel1) client = tunnel (f, "client.yaml");
    gint64 deadline = gt_test_deadline_in (WAIT_MS);

    /* The counters come with the worker's next report. */
    while (gt_dbus_tunnel1_get_connections (client) == 0 && g_get_monotonic_time () < deadline)
      iterate (50);
  }
  sp = g_subprocess_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error,
                         gt_test_binary (), "status", NULL);
  g_assert_no_error (error);
  g_assert_true (g_subprocess_communicate_utf8 (sp, NULL, NULL, &out, &err, &error));
  g_assert_no_error (error);
  g_assert_cmpint (g_subprocess_get_exit_status (sp), ==, 0);
  g_assert_nonnull (strstr (out, "gt manager " PACKAGE_VERSION ": running, "));
  re = g_regex_new ("^client\\.yaml +client +running +[1-9]", G_REGEX_MULTILINE, 0, NULL);
  if (!g_regex_match (re, out, 0, NULL))
    gt_test_fail ("unexpected gt status output:\n%s", out);
  g_assert_nonnull (strstr (out, "server.yaml"));
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, 0);

#define ADD(path, fn)                                                                              \
  g_test_add ("/gt/dbus/integration/" path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  ADD ("control", test_control);
  ADD ("status", test_status);
#undef ADD
  return gt_test_run ();
}
