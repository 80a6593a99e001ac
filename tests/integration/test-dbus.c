/* test-dbus.c (integration): the D-Bus control interface of a real `gt -c DIR` manager on a
 * private session bus (run under dbus-run-session): tunnels listed with their state and
 * counters, a tunnel stopped and started (traffic stops and resumes), an invalid document
 * refused with a typed error carrying line:column, a valid one applied, secrets never returned,
 * the state-change signals, and `gt status`. */
#include "config.h"

#include <string.h>
#include <sys/stat.h>

#include <gio/gio.h>

#include "gt-config.h"
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
  gboolean keyring;         /* let the manager use the keyring (else GT_KEYRING=off) */
  GSubprocess *keyring_daemon;
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
  if (f->keyring_daemon != NULL)
    {
      g_subprocess_force_exit (f->keyring_daemon);
      g_subprocess_wait (f->keyring_daemon, NULL, NULL);
      g_clear_object (&f->keyring_daemon);
    }
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
  /* Without a keyring of the test's own, secrets stay in the files (none is tried). */
  const char *env[] = { env_run, "GT_MANAGER_READY_TIMEOUT=5s", "GT_MANAGER_STOP_TIMEOUT=5s",
                        f->keyring ? NULL : "GT_KEYRING=off", NULL };
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

/* A connection entry of list for client id desk with the given peer prefix and state. */
static gboolean
has_connection (GVariant *list, const char *peer_prefix, const char *state)
{
  GVariantIter iter;
  const char *client, *peer, *s;
  guint32 index, streams;
  guint64 in, out;

  if (list == NULL)
    return FALSE;
  g_variant_iter_init (&iter, list);
  while (g_variant_iter_next (&iter, "(&su&s&sutt)", &client, &index, &peer, &s, &streams, &in,
                              &out))
    if (strcmp (client, "desk") == 0 && g_str_has_prefix (peer, peer_prefix)
        && strcmp (s, state) == 0)
      return TRUE;
  return FALSE;
}

/* A stream of client desk for service in list that is not in before (the streams of earlier
 * requests may stay half-open: the test service keeps idle connections): its bytes, or FALSE. */
static gboolean
new_stream (GVariant *list, GVariant *before, const char *service, guint64 *in_out,
            guint64 *out_out)
{
  GVariantIter iter;
  const char *client, *svc, *remote;
  guint32 tunnel, id;
  guint64 in, out;

  if (list == NULL)
    return FALSE;
  g_variant_iter_init (&iter, list);
  while (g_variant_iter_next (&iter, "(&suu&s&stt)", &client, &tunnel, &id, &svc, &remote, &in,
                              &out))
    {
      GVariantIter old;
      const char *old_client;
      guint32 old_tunnel, old_id;
      gboolean seen = FALSE;

      if (strcmp (client, "desk") != 0 || !g_str_has_prefix (svc, service))
        continue;
      g_variant_iter_init (&old, before);
      while (g_variant_iter_next (&old, "(&suu&s&stt)", &old_client, &old_tunnel, &old_id, NULL,
                                  NULL, NULL, NULL))
        seen |= old_tunnel == tunnel && old_id == id;
      if (seen)
        continue;
      *in_out = in;
      *out_out = out;
      return TRUE;
    }
  return FALSE;
}

/* Per-connection and per-stream counters: ConnectionList names each tunnel connection, and a
 * user connection kept open shows in StreamList on both sides with the bytes it carried. */
static void
check_details (Fixture *f, GtDBusTunnel1 *client, GtDBusTunnel1 *server)
{
  g_autofree char *remote = g_strdup_printf ("tcp://127.0.0.1:%u", f->server_port);
  g_autofree char *local = g_strdup_printf ("http://127.0.0.1:%u", f->service->port);
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestConn) conn = NULL;
  g_autoptr (GtTestHttpResponse) r = NULL;
  gint64 deadline = gt_test_deadline_in (WAIT_MS);
  guint64 server_in = 0, server_out = 0, client_in = 0, client_out = 0;
  g_autoptr (GVariant) server_before = NULL;
  g_autoptr (GVariant) client_before = NULL;

  while ((!has_connection (gt_dbus_tunnel1_get_connection_list (client), remote, "ready")
          || !has_connection (gt_dbus_tunnel1_get_connection_list (server), "127.0.0.1:", "open"))
         && g_get_monotonic_time () < deadline)
    iterate (50);
  g_assert_true (has_connection (gt_dbus_tunnel1_get_connection_list (client), remote, "ready"));
  g_assert_true (has_connection (gt_dbus_tunnel1_get_connection_list (server), "127.0.0.1:",
                                 "open"));

  /* A keep-alive connection stays a stream after its answer. */
  server_before = g_variant_ref (gt_dbus_tunnel1_get_stream_list (server));
  client_before = g_variant_ref (gt_dbus_tunnel1_get_stream_list (client));
  conn = gt_test_conn_connect (f->server_port, &error);
  g_assert_no_error (error);
  r = gt_test_conn_request (conn, "GET", "/whoami", "web.example.com", NULL, 0, WAIT_MS, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (r->status, ==, 200);
  deadline = gt_test_deadline_in (WAIT_MS);
  while (!(new_stream (gt_dbus_tunnel1_get_stream_list (server), server_before, "web", &server_in,
                       &server_out)
           && new_stream (gt_dbus_tunnel1_get_stream_list (client), client_before, local,
                          &client_in, &client_out))
         && g_get_monotonic_time () < deadline)
    iterate (50);
  /* The request went toward the service, the answer back: at least their sizes. */
  g_assert_cmpuint (server_in, >=, strlen ("GET /whoami HTTP/1.1\r\n"));
  g_assert_cmpuint (server_out, >=, r->body->len);
  g_assert_cmpuint (client_in, >=, strlen ("GET /whoami HTTP/1.1\r\n"));
  g_assert_cmpuint (client_out, >=, r->body->len);

  /* A last request asks the service to close: once the user closes too, the stream is over and
   * leaves the lists. */
  {
    g_autoptr (GByteArray) req = gt_test_http_build_request ("GET", "/whoami", "web.example.com",
                                                             NULL, 0, "Connection: close\r\n");
    g_autoptr (GtTestHttpResponse) last = NULL;

    g_assert_true (gt_test_conn_write_all (conn, req->data, req->len,
                                           gt_test_deadline_in (WAIT_MS), &error));
    g_assert_no_error (error);
    last = gt_test_conn_read_response (conn, gt_test_deadline_in (WAIT_MS), &error);
    g_assert_no_error (error);
    g_assert_cmpuint (last->status, ==, 200);
  }
  g_clear_pointer (&conn, gt_test_conn_free);
  deadline = gt_test_deadline_in (WAIT_MS);
  while ((new_stream (gt_dbus_tunnel1_get_stream_list (server), server_before, "web", &server_in,
                      &server_out)
          || new_stream (gt_dbus_tunnel1_get_stream_list (client), client_before, local,
                         &client_in, &client_out))
         && g_get_monotonic_time () < deadline)
    iterate (50);
  g_assert_false (new_stream (gt_dbus_tunnel1_get_stream_list (server), server_before, "web",
                              &server_in, &server_out));
  g_assert_false (new_stream (gt_dbus_tunnel1_get_stream_list (client), client_before, local,
                              &client_in, &client_out));
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
  check_details (f, client, server);

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
  /* Each tunnel connection on a line of its own under its configuration. */
  {
    g_autofree char *ready = g_strdup_printf ("\n  desk#[0-9]+ ready tcp://127\\.0\\.0\\.1:%u: "
                                              "[0-9]+ streams, ",
                                              f->server_port);

    if (!g_regex_match_simple (ready, out, 0, 0)
        || !g_regex_match_simple ("\n  desk#[0-9]+ open 127\\.0\\.0\\.1:[0-9]+: ", out, 0, 0))
      gt_test_fail ("no connection lines in gt status:\n%s", out);
  }
}

/* Waits until name has an owner on the test's bus. */
static gboolean
wait_name (Fixture *f, const char *name)
{
  gint64 deadline = gt_test_deadline_in (WAIT_MS);

  while (g_get_monotonic_time () < deadline)
    {
      g_autoptr (GVariant) reply = g_dbus_connection_call_sync (
        f->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
        "NameHasOwner", g_variant_new ("(s)", name), G_VARIANT_TYPE ("(b)"),
        G_DBUS_CALL_FLAGS_NONE, 1000, NULL, NULL);
      gboolean has = FALSE;

      if (reply != NULL)
        g_variant_get (reply, "(b)", &has);
      if (has)
        return TRUE;
      g_usleep (50000);
    }
  return FALSE;
}

/* A keyring of the test's own on its bus: gnome-keyring-daemon with a new, unlocked login
 * keyring under the test's directory. */
static gboolean
start_keyring (Fixture *f)
{
  g_autoptr (GSubprocessLauncher) launcher = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *home = g_build_filename (gt_test_tmpdir (), "home", NULL);
  g_autofree char *data = g_build_filename (home, "data", NULL);
  g_autofree char *runtime = g_build_filename (home, "run", NULL);
  g_autofree char *program = g_find_program_in_path ("gnome-keyring-daemon");
  GOutputStream *in;

  g_autofree char *tool = g_find_program_in_path ("secret-tool");

  if (program == NULL || tool == NULL)
    {
      g_test_skip ("gnome-keyring-daemon or secret-tool (libsecret-tools) is not installed");
      return FALSE;
    }
  if (g_getenv ("DBUS_SESSION_BUS_ADDRESS") == NULL)
    {
      g_test_skip ("no session bus (run under dbus-run-session)");
      return FALSE;
    }
  g_assert_cmpint (g_mkdir_with_parents (data, 0700), ==, 0);
  g_assert_cmpint (g_mkdir_with_parents (runtime, 0700), ==, 0);
  f->bus = g_bus_get_sync (G_BUS_TYPE_SESSION, NULL, &error);
  g_assert_no_error (error);
  launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDIN_PIPE);
  g_subprocess_launcher_setenv (launcher, "HOME", home, TRUE);
  g_subprocess_launcher_setenv (launcher, "XDG_DATA_HOME", data, TRUE);
  g_subprocess_launcher_setenv (launcher, "XDG_RUNTIME_DIR", runtime, TRUE);
  f->keyring_daemon = g_subprocess_launcher_spawn (launcher, &error, program, "--foreground",
                                                   "--unlock", "--components=secrets", NULL);
  g_assert_no_error (error);
  /* --unlock: the login keyring's password on stdin, made with it. */
  in = g_subprocess_get_stdin_pipe (f->keyring_daemon);
  g_assert_true (g_output_stream_write_all (in, "test", 4, NULL, NULL, &error));
  g_assert_true (g_output_stream_close (in, NULL, &error));
  g_assert_no_error (error);
  if (!wait_name (f, "org.freedesktop.secrets"))
    gt_test_fail ("gnome-keyring-daemon did not take org.freedesktop.secrets");
  return TRUE;
}

/* A client secret saved over D-Bus goes to the keyring, not to the file, and the worker reads it
 * from there (the server accepts the client: traffic flows); without a keyring item the client
 * fails with the reason as its LastError. */
static void
test_keyring (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtDBusTunnel1) client = NULL;
  g_autofree char *client_path = g_build_filename (f->cfg, "client.yaml", NULL);
  g_autofree char *document = NULL;
  g_autofree char *again = NULL;
  g_autofree char *on_disk = NULL;
  g_autofree char *stored = NULL;
  g_autofree char *good = NULL;
  g_autofree char *orphan = NULL;
  gint64 deadline;
  struct stat st;

  if (!start_keyring (f))
    return;
  f->keyring = TRUE;
  g_clear_object (&f->bus);
  start_manager (f);
  if (g_test_failed () || f->objects == NULL)
    return;
  wait_state (f, "client.yaml", "running");
  wait_http (f, "web.example.com", 200);

  /* Saving the document moves the file's secret to the keyring. */
  g_assert_true (gt_dbus_manager1_call_get_config_sync (f->manager_iface, "client.yaml",
                                                        &document, NULL, &error));
  g_assert_no_error (error);
  {
    GString *s = g_string_new (document);

    g_string_replace (s, "hostPrefix: web\n", "hostPrefix: vault\n", 1);
    good = g_string_free (s, FALSE);
  }
  g_assert_true (gt_dbus_manager1_call_set_config_sync (f->manager_iface, "client.yaml", good,
                                                        NULL, &error));
  g_assert_no_error (error);
  g_assert_true (g_file_get_contents (client_path, &on_disk, NULL, NULL));
  g_assert_null (strstr (on_disk, SECRET));
  g_assert_nonnull (strstr (on_disk, "secret: \"" GT_CONFIG_SECRET_KEYRING "\"\n"));
  g_assert_nonnull (strstr (on_disk, "hostPrefix: vault\n"));
  g_assert_cmpint (stat (client_path, &st), ==, 0);
  g_assert_cmpint (st.st_mode & 0777, ==, 0600);
  /* In the keyring under the file's path (read with secret-tool: libsecret's own allocations
   * stay out of this process). */
  {
    g_autoptr (GSubprocess) tool = g_subprocess_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error,
                                                     "secret-tool", "lookup", "config",
                                                     client_path, NULL);

    g_assert_no_error (error);
    g_assert_true (g_subprocess_communicate_utf8 (tool, NULL, NULL, &stored, NULL, &error));
    g_assert_no_error (error);
    g_assert_cmpstr (stored, ==, SECRET);
  }

  /* The new worker got the secret from the keyring: the server lets it in. */
  wait_http (f, "vault.example.com", 200);
  client = tunnel (f, "client.yaml");
  g_assert_cmpstr (gt_dbus_tunnel1_get_state (client), ==, "running");
  /* GetConfig hides where the secret is, like any secret. */
  g_assert_true (gt_dbus_manager1_call_get_config_sync (f->manager_iface, "client.yaml",
                                                        &again, NULL, &error));
  g_assert_no_error (error);
  g_assert_nonnull (strstr (again, "secret: \"" GT_CONFIG_SECRET_PLACEHOLDER "\""));
  g_assert_null (strstr (again, GT_CONFIG_SECRET_KEYRING));

  /* A file that points to the keyring without an item there: failed, and LastError says why. */
  orphan = g_strdup_printf ("type: client\n"
                            "options:\n"
                            "  id: orphan\n"
                            "  secret: \"" GT_CONFIG_SECRET_KEYRING "\"\n"
                            "  remote: tcp://127.0.0.1:%u\n"
                            "services:\n"
                            "  - local: http://127.0.0.1:%u\n"
                            "    hostPrefix: orphan\n",
                            f->server_port, f->service->port);
  g_assert_true (gt_dbus_manager1_call_set_config_sync (f->manager_iface, "orphan.yaml", orphan,
                                                        NULL, &error));
  g_assert_no_error (error);
  deadline = gt_test_deadline_in (WAIT_MS);
  while (g_get_monotonic_time () < deadline)
    {
      g_autoptr (GtDBusTunnel1) t = tunnel (f, "orphan.yaml");

      /* Between its restarts (with backoff) it is failed, with the reason. */
      if (t != NULL && strstr (gt_dbus_tunnel1_get_last_error (t), "keyring") != NULL
          && strcmp (gt_dbus_tunnel1_get_state (t), "failed") == 0)
        break;
      iterate (50);
    }
  {
    g_autoptr (GtDBusTunnel1) t = tunnel (f, "orphan.yaml");

    g_assert_nonnull (t);
    if (strstr (gt_dbus_tunnel1_get_last_error (t), "keyring has no secret") == NULL)
      gt_test_fail ("orphan.yaml: LastError %s", gt_dbus_tunnel1_get_last_error (t));
    g_assert_cmpstr (gt_dbus_tunnel1_get_state (t), ==, "failed");
    g_assert_cmpuint (gt_dbus_tunnel1_get_pid (t), ==, 0);
  }
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, 0);

#define ADD(path, fn)                                                                              \
  g_test_add ("/gt/dbus/integration/" path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  ADD ("control", test_control);
  ADD ("status", test_status);
  ADD ("keyring", test_keyring);
#undef ADD
  return gt_test_run ();
}
