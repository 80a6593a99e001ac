/* Integration tests of hostile logins: a refused HELLO beside a live client, a burst of bad logins
 * against a slow auth API, the lockout's time left, prefixes owned by configured users. */
#define G_LOG_DOMAIN "gt-test"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gio.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include "gt-frame.h"
#include "gt-test-utils.h"

#define SECRET_ALICE "alice-pw-Hq3Ns8Tb"
#define SECRET_BOB "bob-pw-Vd6Lk2Rm"
/* The auth API answers each request after this long. */
#define AUTH_DELAY_MS 200
/* Bad logins in the burst: with two requests at a time they took 300 × 0.2 s / 2 = 30 s. */
#define BURST 300
/* A legitimate login during the burst must get in within this (about 0.3 s expected). */
#define LOGIN_BOUND_MS 5000

/* ------------------------------------------------------------------------------------------ */
/* A slow auth API: POST /auth answers after AUTH_DELAY_MS; alice with her secret is allowed the
 * prefix "web", everyone else is refused. Lives in the harness's service thread. */

typedef struct
{
  SoupServer *server;
  GSocketService *service;
  guint16 port;
  GError *error;
  GPtrArray *delayed; /* GSource* (service thread), each answering one paused message */
  guint n_requests;   /* under gt_test_lock () */
  guint n_mallory;    /* requests about the burst's id, under gt_test_lock () */
} AuthApi;

static AuthApi *auth;

typedef struct
{
  SoupServerMessage *msg;
  gboolean allow;
} Delayed;

static void
delayed_free (gpointer data)
{
  Delayed *d = data;

  g_object_unref (d->msg);
  g_free (d);
}

static void
auth_answer (SoupServerMessage *msg, gboolean allow)
{
  const char *body = allow ? "{\"result\": true, \"appletTokens\": [\"web\"]}"
                           : "{\"result\": false}";

  soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
  soup_server_message_set_response (msg, "application/json", SOUP_MEMORY_COPY, body,
                                    strlen (body));
  soup_server_message_unpause (msg);
}

static gboolean
delayed_cb (gpointer data)
{
  Delayed *d = data;
  GSource *source = g_main_current_source ();

  auth_answer (d->msg, d->allow);
  if (g_ptr_array_remove_fast (auth->delayed, source))
    g_source_unref (source);
  return G_SOURCE_REMOVE;
}

static void
auth_cb (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
         gpointer user_data)
{
  g_autoptr (GBytes) body = soup_message_body_flatten (soup_server_message_get_request_body (msg));
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GMainContext) ctx = g_main_context_ref_thread_default ();
  const char *id = "", *secret = "";
  GSource *source;
  Delayed *d;

  if (json_parser_load_from_data (parser, g_bytes_get_data (body, NULL), g_bytes_get_size (body),
                                  NULL)
      && JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser)))
    {
      JsonObject *o = json_node_get_object (json_parser_get_root (parser));

      id = json_object_get_string_member_with_default (o, "networkClientId", "");
      secret = json_object_get_string_member_with_default (o, "networkSecretKey", "");
    }
  g_mutex_lock (gt_test_lock ());
  auth->n_requests++;
  if (strcmp (id, "mallory") == 0)
    auth->n_mallory++;
  g_cond_broadcast (gt_test_cond ());
  g_mutex_unlock (gt_test_lock ());

  d = g_new0 (Delayed, 1);
  d->msg = g_object_ref (msg);
  d->allow = strcmp (id, "alice") == 0 && strcmp (secret, SECRET_ALICE) == 0;
  soup_server_message_pause (msg);
  source = g_timeout_source_new (AUTH_DELAY_MS);
  g_source_set_callback (source, delayed_cb, d, delayed_free);
  g_source_attach (source, ctx);
  g_ptr_array_add (auth->delayed, source);
}

/* Connections are handed to soup by our own listener: libsoup 3.2's leaks every GSocket. */
static gboolean
auth_incoming_cb (GSocketService *service, GSocketConnection *conn, GObject *source,
                  gpointer user_data)
{
  g_autoptr (GSocketAddress) local = g_socket_connection_get_local_address (conn, NULL);
  g_autoptr (GSocketAddress) remote = g_socket_connection_get_remote_address (conn, NULL);

  soup_server_accept_iostream (auth->server, G_IO_STREAM (conn), local, remote, NULL);
  return TRUE;
}

static void
auth_start_in_service (gpointer data, gpointer unused)
{
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) addr = g_inet_socket_address_new (lo, 0);
  g_autoptr (GSocketAddress) bound = NULL;

  auth->server = soup_server_new (NULL, NULL);
  soup_server_add_handler (auth->server, "/auth", auth_cb, NULL, NULL);
  auth->service = g_socket_service_new ();
  g_socket_listener_set_backlog (G_SOCKET_LISTENER (auth->service), 1024);
  if (!g_socket_listener_add_address (G_SOCKET_LISTENER (auth->service), addr,
                                      G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, NULL, &bound,
                                      &auth->error))
    return;
  auth->port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));
  g_signal_connect (auth->service, "incoming", G_CALLBACK (auth_incoming_cb), NULL);
  g_socket_service_start (auth->service);
}

static void
auth_stop_in_service (gpointer data, gpointer unused)
{
  /* Requests still waiting are dropped with their connections. */
  while (auth->delayed->len > 0)
    {
      GSource *source = g_ptr_array_steal_index_fast (auth->delayed, 0);

      g_source_destroy (source);
      g_source_unref (source);
    }
  if (auth->service != NULL)
    {
      g_socket_service_stop (auth->service);
      g_socket_listener_close (G_SOCKET_LISTENER (auth->service));
      g_clear_object (&auth->service);
    }
  soup_server_disconnect (auth->server);
  g_clear_object (&auth->server);
}

static void
auth_start (void)
{
  g_assert_null (auth);
  auth = g_new0 (AuthApi, 1);
  auth->delayed = g_ptr_array_new ();
  gt_test_service_call (auth_start_in_service, NULL);
  g_assert_no_error (auth->error);
}

static void
auth_stop (void)
{
  if (auth == NULL)
    return;
  gt_test_service_call (auth_stop_in_service, NULL);
  g_ptr_array_unref (auth->delayed);
  g_clear_pointer (&auth, g_free);
}

static guint
auth_count (guint *counter)
{
  guint n;

  g_mutex_lock (gt_test_lock ());
  n = *counter;
  g_mutex_unlock (gt_test_lock ());
  return n;
}

/* ------------------------------------------------------------------------------------------ */
/* gt processes and raw handshakes */

/* The harness keeps the children and services; the auth API is ours. */
typedef struct
{
  gboolean unused;
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  gt_test_setup ();
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  gt_test_stop_all ();
  auth_stop ();
  gt_test_teardown ();
}

/* `gt server --addr 127.0.0.1:0 ARGS...`; returns it with its port. */
G_GNUC_NULL_TERMINATED static GtTestProc *
start_server (guint16 *port, ...)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autofree char *line = NULL;
  const char *a;
  GtTestProc *p;
  va_list ap;

  gt_test_args_addv (args, "server", "--addr", "127.0.0.1:0", NULL);
  va_start (ap, port);
  while ((a = va_arg (ap, const char *)) != NULL)
    gt_test_args_add (args, "%s", a);
  va_end (ap);
  p = gt_test_spawn_gt ("server", args);
  line = gt_test_proc_expect_line (p, "listening on 127\\.0\\.0\\.1:[0-9]+", NULL, GT_TEST_WAIT_MS);
  *port = (guint16) gt_test_capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");
  return p;
}

/* `gt client --id ID --secret S --remote tcp://127.0.0.1:PORT --local URL --hostPrefix PREFIX
 * ARGS...`, one tunnel, quick retries. */
G_GNUC_NULL_TERMINATED static GtTestProc *
start_client (const char *name, guint16 port, const char *id, const char *secret,
              const char *prefix, guint16 local_port, ...)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  const char *a;
  va_list ap;

  gt_test_args_addv (args, "client", "--id", id, "--secret", secret, "--reconnectDelay", "200ms",
                     "--remoteConnections", "1", NULL);
  gt_test_args_add (args, "--remote");
  gt_test_args_add (args, "tcp://127.0.0.1:%u", port);
  gt_test_args_add (args, "--local");
  gt_test_args_add (args, "http://127.0.0.1:%u", local_port);
  gt_test_args_addv (args, "--hostPrefix", prefix, NULL);
  va_start (ap, local_port);
  while ((a = va_arg (ap, const char *)) != NULL)
    gt_test_args_add (args, "%s", a);
  va_end (ap);
  return gt_test_spawn_gt (name, args);
}

/* GET /whoami through the server with Host PREFIX.example.com must reach the service name. */
static void
expect_whoami (guint16 port, const char *prefix, const char *name)
{
  g_autofree char *host = g_strdup_printf ("%s.example.com", prefix);
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) r
    = gt_test_http_request (port, "GET", "/whoami", host, NULL, 0, &error);

  gt_test_expect_response (r, error, 200);
  gt_test_check_bytes ("whoami", r->body->data, r->body->len, (const guint8 *) name,
                       strlen (name));
}

/* Connects from src_ip to the server and sends the preface and a HELLO with one http service;
 * NULL when the server closed the connection first. */
static GtTestConn *
hello_send (guint16 port, const char *src_ip, const char *id, const char *secret,
            const char *prefix)
{
  g_autoptr (GtHello) hello = gt_hello_new (id, secret);
  g_autoptr (GByteArray) out = g_byte_array_new ();
  g_autoptr (GtTestConn) c = g_new0 (GtTestConn, 1);
  g_autoptr (GError) error = NULL;
  struct sockaddr_in src = { 0 }, dst = { 0 };
  guint8 preface[GT_PREFACE_SIZE];
  gint64 deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);

  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, prefix, 0, FALSE);
  gt_preface_encode (preface);
  g_byte_array_append (out, preface, sizeof preface);
  g_assert_true (gt_frame_append_hello (out, hello, &error));
  c->in = g_byte_array_new ();
  c->fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  g_assert_cmpint (c->fd, >=, 0);
  src.sin_family = AF_INET;
  g_assert_cmpint (inet_pton (AF_INET, src_ip, &src.sin_addr), ==, 1);
  g_assert_cmpint (bind (c->fd, (struct sockaddr *) &src, sizeof src), ==, 0);
  dst.sin_family = AF_INET;
  dst.sin_port = htons (port);
  dst.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  if (connect (c->fd, (struct sockaddr *) &dst, sizeof dst) < 0)
    g_assert_cmpint (errno, ==, EINPROGRESS);
  if (!gt_test_fd_poll (c->fd, POLLOUT, deadline, &error))
    gt_test_fail ("HELLO from %s: %s", src_ip, error->message);
  if (!gt_test_conn_check_connected (c, &error)
      || !gt_test_conn_write_all (c, out->data, out->len, deadline, &error))
    return NULL;
  return g_steal_pointer (&c);
}

/* The server's answer to a HELLO: 0 for WELCOME, else the ERROR code with its message; -1 when the
 * connection ended without one or the deadline passed. */
static int
hello_reply (GtTestConn *c, gint64 deadline, char **message)
{
  for (;;)
    {
      g_autoptr (GError) error = NULL;
      GtFrameHeader h;
      guint16 code;

      if (gt_frame_header_decode (c->in->data, c->in->len, &h, NULL) == GT_DECODE_OK
          && c->in->len >= GT_FRAME_HEADER_SIZE + h.length)
        {
          if (h.type == GT_FRAME_WELCOME)
            return 0;
          g_assert_cmpint (h.type, ==, GT_FRAME_ERROR);
          g_assert_true (gt_error_decode (c->in->data + GT_FRAME_HEADER_SIZE, h.length, &code,
                                          message, NULL));
          return code;
        }
      if (gt_test_conn_fill (c, deadline, &error) <= 0)
        return -1;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* A HELLO with alice's secret that the server must refuse (a port outside her range) does not
 * push the connected alice out: validation comes before replacement. */

static void
test_refused_hello_keeps_client (Fixture *f, gconstpointer data)
{
  GtTestHttp *h;
  GtTestProc *server, *alice, *intruder;
  g_autofree char *range = NULL, *outside = NULL, *re = NULL;
  guint16 port, first, last;

  GT_TEST_REQUIRE_GT ();
  h = gt_test_http_start ("alice-svc", 0, NULL);
  gt_test_free_port_range (2, &first, &last);
  range = g_strdup_printf ("%u-%u", first, last);
  server = start_server (&port, "--id", "alice", "--secret", SECRET_ALICE, "--tcpRange", range,
                         NULL);
  alice = start_client ("alice", port, "alice", SECRET_ALICE, "web", h->port, NULL);
  g_free (gt_test_proc_expect_line (alice, "tunnel started", NULL, GT_TEST_WAIT_MS));
  expect_whoami (port, "web", "alice-svc");

  /* Same id and secret, another service set with a port it may not have: refused... */
  outside = g_strdup_printf ("%u", last + 1);
  intruder = start_client ("intruder", port, "alice", SECRET_ALICE, "web", h->port, "--local",
                           "tcp://127.0.0.1:9", "--remoteTCPPort", outside, NULL);
  re = g_strdup_printf ("server refused: port %u is not in the server's tcp range for this user "
                        "\\(code 2\\)$",
                        last + 1);
  g_free (gt_test_proc_expect_line (intruder, re, NULL, GT_TEST_WAIT_MS));
  gt_test_proc_stop (intruder, SIGTERM);

  /* ...and alice keeps her tunnel and her route. */
  expect_whoami (port, "web", "alice-svc");
  g_assert_cmpuint (gt_test_proc_count_matches (server, "different service set"), ==, 0);
  g_assert_cmpuint (gt_test_proc_count_matches (alice, "tunnel started"), ==, 1);
  g_assert_cmpuint (gt_test_proc_count_matches (alice, "server refused|tunnel closed|GOAWAY"), ==,
                    0);
}

/* ------------------------------------------------------------------------------------------ */
/* A burst of bad logins from one address against a slow auth API: a login from another address
 * gets in at once; the burst costs the API a few requests; the lockout tells the time left. */

static void
test_burst (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) conns = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_test_conn_free);
  g_autoptr (GRegex) locked_re
    = g_regex_new ("^too many failed logins from 127\\.0\\.0\\.2; try again in ([0-9]+) s$", 0,
                   0, NULL);
  g_autofree char *url = NULL;
  GtTestHttp *h;
  GtTestProc *server, *alice;
  guint16 port;
  gint64 deadline, start, elapsed_ms;
  guint n_refused = 0, n_mallory, left[2];

  GT_TEST_REQUIRE_GT ();
  auth_start ();
  h = gt_test_http_start ("alice-svc", 0, NULL);
  url = g_strdup_printf ("http://127.0.0.1:%u/auth", auth->port);
  server = start_server (&port, "--authAPI", url, "--reconnectTimes", "3", "--reconnectDuration",
                         "10s", NULL);

  for (guint i = 0; i < BURST; i++)
    {
      g_autofree char *secret = g_strdup_printf ("wrong-%u", i);
      GtTestConn *c = hello_send (port, "127.0.0.2", "mallory", secret, "web");

      if (c != NULL)
        g_ptr_array_add (conns, c);
    }
  deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
  while (auth_count (&auth->n_mallory) == 0)
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_usleep (10 * 1000);
    }

  /* alice, from 127.0.0.1, while the burst is being answered. */
  start = g_get_monotonic_time ();
  alice = start_client ("alice", port, "alice", SECRET_ALICE, "web", h->port, NULL);
  g_free (gt_test_proc_expect_line (alice, "tunnel started", NULL, GT_TEST_WAIT_MS));
  elapsed_ms = (g_get_monotonic_time () - start) / 1000;
  g_test_message ("alice got in after %" G_GINT64_FORMAT " ms during a burst of %u bad logins",
                  elapsed_ms, BURST);
  if (elapsed_ms >= LOGIN_BOUND_MS && gt_test_checks_resources ())
    gt_test_fail ("alice needed %" G_GINT64_FORMAT " ms to log in during the burst (bound %u)",
                  elapsed_ms, LOGIN_BOUND_MS);
  expect_whoami (port, "web", "alice-svc");

  /* Every bad login is refused; only reconnectTimes + 1 of them reached the API. */
  deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
  for (guint i = 0; i < conns->len; i++)
    {
      g_autofree char *message = NULL;
      int code = hello_reply (conns->pdata[i], deadline, &message);

      g_assert_cmpint (code, !=, 0);
      if (code > 0)
        n_refused++;
    }
  n_mallory = auth_count (&auth->n_mallory);
  g_test_message ("%u of %u bad logins answered with a refusal; %u reached the auth API",
                  n_refused, conns->len, n_mallory);
  g_assert_cmpuint (n_mallory, <=, 4);

  /* 127.0.0.2 is locked out, and the refusal says for how much longer. */
  for (guint k = 0; k < 2; k++)
    {
      g_autoptr (GtTestConn) c = NULL;
      g_autoptr (GMatchInfo) match = NULL;
      g_autofree char *message = NULL;
      g_autofree char *n = NULL;

      if (k == 1)
        g_usleep (2200 * 1000);
      c = hello_send (port, "127.0.0.2", "mallory", "wrong-again", "web");
      g_assert_nonnull (c);
      g_assert_cmpint (hello_reply (c, gt_test_deadline_in (GT_TEST_WAIT_MS), &message), ==, 1);
      if (!g_regex_match (locked_re, message, 0, &match))
        gt_test_fail ("refusal '%s' is not the lockout with the time left", message);
      n = g_match_info_fetch (match, 1);
      left[k] = (guint) g_ascii_strtoull (n, NULL, 10);
    }
  g_test_message ("lockout: %u s left, then %u s", left[0], left[1]);
  g_assert_cmpuint (left[0], <=, 10);
  g_assert_cmpuint (left[1], <=, left[0] - 2);
  g_assert_cmpuint (auth_count (&auth->n_mallory), ==, n_mallory);
  g_assert_false (gt_test_proc_has_exited (server));
}

/* ------------------------------------------------------------------------------------------ */
/* A host prefix equal to a configured user's id is that user's: nobody else takes it, even while
 * its owner is offline. */

static void
test_owned_prefix (Fixture *f, gconstpointer data)
{
  GtTestHttp *h;
  GtTestProc *alice, *bob;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  h = gt_test_http_start ("alice-svc", 0, NULL);
  start_server (&port, "--id", "alice", "--secret", SECRET_ALICE, "--id", "bob", "--secret",
                SECRET_BOB, NULL);
  bob = start_client ("bob", port, "bob", SECRET_BOB, "alice", h->port, NULL);
  g_free (gt_test_proc_expect_line (
    bob,
    "server refused: host conflict: host prefix 'alice' belongs to another user \\(code 5\\)$",
    NULL,
    GT_TEST_WAIT_MS));
  g_assert_cmpuint (gt_test_proc_count_matches (bob, "tunnel started"), ==, 0);
  gt_test_proc_stop (bob, SIGTERM);

  alice = start_client ("alice", port, "alice", SECRET_ALICE, "alice", h->port, NULL);
  g_free (gt_test_proc_expect_line (alice, "tunnel started", NULL, GT_TEST_WAIT_MS));
  expect_whoami (port, "alice", "alice-svc");
}

/* ------------------------------------------------------------------------------------------ */

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, 0);

#define ADD(path, func)                                                                            \
  g_test_add ("/gt/integration/abuse-auth/" path, Fixture, NULL, fixture_setup, func,            \
              fixture_teardown)
  ADD ("refused-hello-keeps-client", test_refused_hello_keeps_client);
  ADD ("burst", test_burst);
  ADD ("owned-prefix", test_owned_prefix);
#undef ADD

  return gt_test_run ();
}
