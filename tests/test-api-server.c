/* test-api-server.c: the internal API (/status self-test, /statusResp, /metrics), real server. */
#include "config.h"

#include <string.h>
#include <glib/gstdio.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include "gt-api-server.h"
#include "gt-metrics.h"
#include "gt-server.h"

#define WAIT_US (30 * G_USEC_PER_SEC)

typedef struct
{
  GtServer *server;
  GtApiServer *api;
  SoupSession *session;
  guint n_connected;       /* "client-connected" signals of the server */
  GPtrArray *connected_ids;
  char *tmpdir;
} Fixture;

static void
client_connected_cb (GtServer *server, const char *id, gpointer user_data)
{
  Fixture *f = user_data;

  f->n_connected++;
  g_ptr_array_add (f->connected_ids, g_strdup (id));
}

static void
start_server (Fixture *f)
{
  g_autoptr (GtServerConfig) config = gt_server_config_new ();
  g_autoptr (GError) error = NULL;
  /* One configured user, so the server is not in (warned about) allow-any-client mode. */
  char *argv[] = { "--addr", "127.0.0.1:0", "--id", "alice", "--secret", "alice-pw", NULL };

  g_assert_true (gt_server_config_apply_args (config, G_N_ELEMENTS (argv) - 1, argv, &error));
  g_assert_no_error (error);
  g_assert_true (gt_server_config_validate (config, NULL, &error));
  g_assert_no_error (error);
  f->server = gt_server_new (g_steal_pointer (&config));
  g_signal_connect (f->server, "client-connected", G_CALLBACK (client_connected_cb), f);
  g_assert_true (gt_server_start (f->server, &error));
  g_assert_no_error (error);
  g_assert_nonnull (gt_server_get_listen_address (f->server));
}

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;

  f->connected_ids = g_ptr_array_new_with_free_func (g_free);
  start_server (f);
  f->session = soup_session_new_with_options ("timeout", 40, NULL);
  f->tmpdir = g_dir_make_tmp ("gt-api-XXXXXX", &error);
  g_assert_no_error (error);
}

static void
spin (guint n)
{
  for (guint i = 0; i < n; i++)
    g_main_context_iteration (NULL, FALSE);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  g_autoptr (GDir) dir = g_dir_open (f->tmpdir, 0, NULL);
  const char *name;

  g_clear_object (&f->api);
  soup_session_abort (f->session);
  g_clear_object (&f->session);
  if (f->server != NULL)
    {
      gt_server_stop (f->server);
      g_clear_object (&f->server);
    }
  /* Let closed sockets and finished sources settle before leak checking. */
  spin (50);
  while (dir != NULL && (name = g_dir_read_name (dir)) != NULL)
    {
      g_autofree char *path = g_build_filename (f->tmpdir, name, NULL);
      g_unlink (path);
    }
  g_rmdir (f->tmpdir);
  g_free (f->tmpdir);
  g_ptr_array_unref (f->connected_ids);
}

static void
start_api (Fixture *f, const char *cert, const char *key)
{
  g_autoptr (GError) error = NULL;

  f->api = gt_api_server_new (f->server, "127.0.0.1:0", cert, key, &error);
  g_assert_no_error (error);
  g_assert_nonnull (f->api);
  g_assert_true (g_str_has_prefix (gt_api_server_get_address (f->api), "127.0.0.1:"));
  g_assert_false (g_str_has_suffix (gt_api_server_get_address (f->api), ":0"));
}

typedef struct
{
  guint status;
  char *body;
  char *content_type;
  gboolean done;
} Reply;

static void
reply_clear (Reply *r)
{
  g_clear_pointer (&r->body, g_free);
  g_clear_pointer (&r->content_type, g_free);
}

static gboolean
accept_any_cert_cb (SoupMessage *msg, GTlsCertificate *cert, GTlsCertificateFlags errors,
                    gpointer user_data)
{
  return TRUE;
}

typedef struct
{
  SoupMessage *msg;
  Reply *reply;
} Pending;

static void
sent_cb (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Pending *p = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) bytes = soup_session_send_and_read_finish (SOUP_SESSION (source), res, &error);

  g_assert_no_error (error);
  p->reply->status = soup_message_get_status (p->msg);
  /* An empty body has NULL data. */
  p->reply->body = g_strndup (g_bytes_get_size (bytes) > 0 ? g_bytes_get_data (bytes, NULL) : "",
                              g_bytes_get_size (bytes));
  p->reply->content_type = g_strdup (
    soup_message_headers_get_one (soup_message_get_response_headers (p->msg), "Content-Type"));
  p->reply->done = TRUE;
  g_object_unref (p->msg);
  g_free (p);
}

static void
send_async (Fixture *f, const char *method, const char *path, gboolean https, Reply *reply)
{
  g_autofree char *url = g_strdup_printf ("%s://%s%s", https ? "https" : "http",
                                          gt_api_server_get_address (f->api), path);
  Pending *p = g_new0 (Pending, 1);

  p->msg = soup_message_new (method, url);
  p->reply = reply;
  if (https)
    g_signal_connect (p->msg, "accept-certificate", G_CALLBACK (accept_any_cert_cb), NULL);
  soup_session_send_and_read_async (f->session, p->msg, G_PRIORITY_DEFAULT, NULL, sent_cb, p);
}

static void
wait_reply (Reply *reply)
{
  gint64 deadline = g_get_monotonic_time () + WAIT_US;

  while (!reply->done)
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (NULL, TRUE);
    }
}

static gint64
get (Fixture *f, const char *path, gboolean https, Reply *reply)
{
  gint64 start = g_get_monotonic_time ();

  send_async (f, SOUP_METHOD_GET, path, https, reply);
  wait_reply (reply);
  return g_get_monotonic_time () - start;
}

static JsonObject *
parse_object (JsonParser *parser, const char *text)
{
  g_autoptr (GError) error = NULL;

  g_assert_true (json_parser_load_from_data (parser, text, -1, &error));
  g_assert_no_error (error);
  g_assert_true (JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser)));
  return json_node_get_object (json_parser_get_root (parser));
}

static void
assert_status_ok (const Reply *r)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  JsonObject *obj;

  g_assert_cmpuint (r->status, ==, 200);
  obj = parse_object (parser, r->body);
  g_assert_cmpstr (json_object_get_string_member (obj, "status"), ==, "ok");
  g_assert_cmpstr (json_object_get_string_member (obj, "version"), ==, PACKAGE_VERSION);
}

/* The self-test cleans up after itself: its client leaves the server. */
static void
wait_no_clients (Fixture *f)
{
  gint64 deadline = g_get_monotonic_time () + WAIT_US;

  while (gt_server_get_n_clients (f->server) > 0)
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (NULL, TRUE);
    }
}

static void
test_status_resp (Fixture *f, gconstpointer data)
{
  Reply r = { 0 };

  start_api (f, NULL, NULL);
  get (f, "/statusResp", FALSE, &r);
  assert_status_ok (&r);
  g_assert_true (g_str_has_prefix (r.content_type, "application/json"));
  reply_clear (&r);
  g_assert_cmpuint (gt_api_server_get_n_self_tests (f->api), ==, 0);
}

static void
test_status_ok_cached (Fixture *f, gconstpointer data)
{
  Reply r1 = { 0 }, r2 = { 0 };
  gint64 second_us;

  start_api (f, NULL, NULL);
  get (f, "/status", FALSE, &r1);
  assert_status_ok (&r1);
  g_assert_cmpuint (gt_api_server_get_n_self_tests (f->api), ==, 1);
  /* One client connected: the self-test's, with a 32-hex random id. */
  g_assert_cmpuint (f->n_connected, ==, 1);
  g_assert_cmpuint (strlen (f->connected_ids->pdata[0]), ==, 32);
  wait_no_clients (f);

  /* Cached: no new run, no new client, fast. */
  second_us = get (f, "/status", FALSE, &r2);
  assert_status_ok (&r2);
  g_assert_cmpstr (r1.body, ==, r2.body);
  g_assert_cmpuint (gt_api_server_get_n_self_tests (f->api), ==, 1);
  g_assert_cmpuint (f->n_connected, ==, 1);
  g_assert_cmpint (second_us, <, G_USEC_PER_SEC / 2);
  reply_clear (&r1);
  reply_clear (&r2);
}

static void
test_status_concurrent (Fixture *f, gconstpointer data)
{
  Reply r[3] = { { 0 } };

  start_api (f, NULL, NULL);
  /* Three callers at once share one run. */
  for (guint i = 0; i < G_N_ELEMENTS (r); i++)
    send_async (f, SOUP_METHOD_GET, "/status", FALSE, &r[i]);
  for (guint i = 0; i < G_N_ELEMENTS (r); i++)
    {
      wait_reply (&r[i]);
      assert_status_ok (&r[i]);
      reply_clear (&r[i]);
    }
  g_assert_cmpuint (gt_api_server_get_n_self_tests (f->api), ==, 1);
  g_assert_cmpuint (f->n_connected, ==, 1);
  wait_no_clients (f);
}

static void
assert_failed (const Reply *r, const char *reason_part)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  JsonObject *obj;

  g_assert_cmpuint (r->status, ==, 503);
  obj = parse_object (parser, r->body);
  g_assert_cmpstr (json_object_get_string_member (obj, "status"), ==, "failed");
  g_assert_cmpstr (json_object_get_string_member (obj, "version"), ==, PACKAGE_VERSION);
  g_assert_nonnull (strstr (json_object_get_string_member (obj, "error"), reason_part));
}

static void
test_status_failed (Fixture *f, gconstpointer data)
{
  Reply r1 = { 0 }, r2 = { 0 };
  gint64 took;

  start_api (f, NULL, NULL);
  /* The server's listener is gone: the self-test client cannot connect. */
  gt_server_stop (f->server);
  took = get (f, "/status", FALSE, &r1);
  assert_failed (&r1, "cannot connect");
  /* It gives up after a few failed attempts, well before the 10 s bound. */
  g_assert_cmpint (took, <, 8 * G_USEC_PER_SEC);
  g_assert_cmpuint (f->n_connected, ==, 0);

  /* Failures are not cached: the next call runs again. */
  get (f, "/status", FALSE, &r2);
  g_assert_cmpuint (r2.status, ==, 503);
  g_assert_cmpuint (gt_api_server_get_n_self_tests (f->api), ==, 2);
  reply_clear (&r1);
  reply_clear (&r2);
}

static void
black_hole_accept_cb (GObject *source, GAsyncResult *res, gpointer user_data)
{
  GPtrArray *conns = user_data;
  GSocketConnection *conn;

  conn = g_socket_listener_accept_finish (G_SOCKET_LISTENER (source), res, NULL, NULL);
  if (conn == NULL)
    return;
  /* Kept open and never answered. */
  g_ptr_array_add (conns, conn);
  g_socket_listener_accept_async (G_SOCKET_LISTENER (source), NULL, black_hole_accept_cb, conns);
}

static void
test_status_ready_timeout (Fixture *f, gconstpointer data)
{
  Reply r = { 0 };
  gint64 took;
  g_autoptr (GSocketListener) hole = g_socket_listener_new ();
  g_autoptr (GPtrArray) conns = g_ptr_array_new_with_free_func (g_object_unref);
  g_autoptr (GSocketConnectable) where = NULL;
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) addr = NULL;
  g_autoptr (GError) error = NULL;

  start_api (f, NULL, NULL);
  /* Something that accepts on the server's port but never completes a handshake. */
  where = g_network_address_parse (gt_server_get_listen_address (f->server), 0, &error);
  g_assert_no_error (error);
  gt_server_stop (f->server);
  addr = g_inet_socket_address_new (lo, g_network_address_get_port (G_NETWORK_ADDRESS (where)));
  g_assert_true (g_socket_listener_add_address (hole, addr, G_SOCKET_TYPE_STREAM,
                                                G_SOCKET_PROTOCOL_TCP, NULL, NULL, &error));
  g_assert_no_error (error);
  g_socket_listener_accept_async (hole, NULL, black_hole_accept_cb, conns);

  gt_api_server_set_self_test_timeouts (f->api, 300, 0);
  took = get (f, "/status", FALSE, &r);
  assert_failed (&r, "not ready in time");
  g_assert_cmpint (took, >=, 290 * 1000);
  g_assert_cmpint (took, <, 5 * G_USEC_PER_SEC);
  g_assert_cmpuint (conns->len, ==, 1);
  reply_clear (&r);
  g_socket_listener_close (hole);
  spin (10);
}

static void
test_status_server_gone (Fixture *f, gconstpointer data)
{
  Reply r = { 0 };

  start_api (f, NULL, NULL);
  gt_server_stop (f->server);
  g_clear_object (&f->server);
  get (f, "/status", FALSE, &r);
  assert_failed (&r, "server is gone");
  reply_clear (&r);
}

typedef struct
{
  guint calls;
  guint destroyed;
} MetricsData;

static char *
metrics_cb (gpointer user_data)
{
  MetricsData *m = user_data;
  GString *out = g_string_new (NULL);
  const char *const labels[] = { "user", "alice", NULL };

  m->calls++;
  gt_metrics_write_family (out, "gt_test_calls", "counter", "Calls of the metrics func.");
  gt_metrics_write_sample (out, "gt_test_calls", labels, m->calls);
  return g_string_free (out, FALSE);
}

static void
metrics_destroy (gpointer user_data)
{
  ((MetricsData *) user_data)->destroyed++;
}

static void
test_metrics (Fixture *f, gconstpointer data)
{
  Reply r0 = { 0 }, r1 = { 0 }, r2 = { 0 };
  MetricsData m = { 0 };
  const char *const labels[] = { "user", "alice", NULL };
  double v = 0;

  start_api (f, NULL, NULL);
  get (f, "/metrics", FALSE, &r0);
  g_assert_cmpuint (r0.status, ==, 200);
  g_assert_cmpstr (r0.body, ==, "");
  g_assert_true (g_str_has_prefix (r0.content_type, "text/plain; version=0.0.4"));

  gt_api_server_set_metrics_func (f->api, metrics_cb, &m, metrics_destroy);
  get (f, "/metrics", FALSE, &r1);
  get (f, "/metrics", FALSE, &r2);
  g_assert_cmpuint (r2.status, ==, 200);
  g_assert_true (g_str_has_prefix (r2.content_type, "text/plain; version=0.0.4"));
  g_assert_true (gt_metrics_parse_sample (r1.body, "gt_test_calls", labels, &v));
  g_assert_cmpfloat (v, ==, 1);
  g_assert_true (gt_metrics_parse_sample (r2.body, "gt_test_calls", labels, &v));
  g_assert_cmpfloat (v, ==, 2);
  g_assert_cmpuint (m.destroyed, ==, 0);
  /* The user data is released when replaced and when the API goes. */
  gt_api_server_set_metrics_func (f->api, metrics_cb, &m, metrics_destroy);
  g_assert_cmpuint (m.destroyed, ==, 1);
  g_clear_object (&f->api);
  g_assert_cmpuint (m.destroyed, ==, 2);
  reply_clear (&r0);
  reply_clear (&r1);
  reply_clear (&r2);
}

static void
test_other_paths (Fixture *f, gconstpointer data)
{
  Reply r1 = { 0 }, r2 = { 0 };

  start_api (f, NULL, NULL);
  get (f, "/nope", FALSE, &r1);
  g_assert_cmpuint (r1.status, ==, 404);
  g_assert_true (g_str_has_prefix (r1.content_type, "application/json"));
  send_async (f, SOUP_METHOD_POST, "/status", FALSE, &r2);
  wait_reply (&r2);
  g_assert_cmpuint (r2.status, ==, 405);
  g_assert_cmpuint (gt_api_server_get_n_self_tests (f->api), ==, 0);
  reply_clear (&r1);
  reply_clear (&r2);
}

static void
test_addresses (Fixture *f, gconstpointer data)
{
  const char *loopback[] = { "0", ":0", "localhost:0", "127.0.0.1:0" };
  const char *bad[] = { "", "abc", "::1:80", "70000", "127.0.0.1:x", "[::1]", "example.com:80",
                        "1.2.3.4.5:80" };
  g_autoptr (GError) error = NULL;

  for (guint i = 0; i < G_N_ELEMENTS (loopback); i++)
    {
      g_autoptr (GtApiServer) api = gt_api_server_new (f->server, loopback[i], NULL, NULL, &error);

      g_assert_no_error (error);
      g_assert_true (g_str_has_prefix (gt_api_server_get_address (api), "127.0.0.1:"));
      g_assert_false (g_str_has_suffix (gt_api_server_get_address (api), ":0"));
    }
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autoptr (GtApiServer) api = gt_api_server_new (f->server, bad[i], NULL, NULL, &error);

      g_assert_null (api);
      g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
      g_clear_error (&error);
    }
  /* Only one of cert and key. */
  g_assert_null (gt_api_server_new (f->server, "0", "/nonexistent.pem", NULL, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_assert_null (gt_api_server_new (f->server, "0", "/nonexistent.pem", "/nonexistent.key",
                                    &error));
  g_assert_nonnull (error);
  g_clear_error (&error);
  /* IPv6 loopback, where the host has it. */
  {
    g_autoptr (GtApiServer) api = gt_api_server_new (f->server, "[::1]:0", NULL, NULL, &error);

    if (api != NULL)
      g_assert_true (g_str_has_prefix (gt_api_server_get_address (api), "[::1]:"));
    else
      g_test_message ("no IPv6 loopback: %s", error->message);
  }
}

/* A self-signed P-256 certificate for 127.0.0.1, written as PEM files. */
static void
make_cert (const char *cert_path, const char *key_path)
{
  gnutls_x509_privkey_t key;
  gnutls_x509_crt_t crt;
  gnutls_datum_t cert_pem = { 0 }, key_pem = { 0 };
  guint8 serial[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
  guint8 ip[4] = { 127, 0, 0, 1 };
  time_t now = time (NULL);
  g_autoptr (GError) error = NULL;

  g_assert_cmpint (gnutls_x509_privkey_init (&key), ==, 0);
  g_assert_cmpint (gnutls_x509_privkey_generate (key, GNUTLS_PK_ECDSA,
                                                 GNUTLS_CURVE_TO_BITS (GNUTLS_ECC_CURVE_SECP256R1),
                                                 0), ==, 0);
  g_assert_cmpint (gnutls_x509_crt_init (&crt), ==, 0);
  g_assert_cmpint (gnutls_x509_crt_set_version (crt, 3), ==, 0);
  g_assert_cmpint (gnutls_x509_crt_set_serial (crt, serial, sizeof serial), ==, 0);
  g_assert_cmpint (gnutls_x509_crt_set_activation_time (crt, now - 3600), ==, 0);
  g_assert_cmpint (gnutls_x509_crt_set_expiration_time (crt, now + 86400), ==, 0);
  g_assert_cmpint (gnutls_x509_crt_set_dn_by_oid (crt, GNUTLS_OID_X520_COMMON_NAME, 0,
                                                  "127.0.0.1", 9), ==, 0);
  g_assert_cmpint (gnutls_x509_crt_set_subject_alt_name (crt, GNUTLS_SAN_IPADDRESS, ip, sizeof ip,
                                                         GNUTLS_FSAN_SET), ==, 0);
  g_assert_cmpint (gnutls_x509_crt_set_key (crt, key), ==, 0);
  g_assert_cmpint (gnutls_x509_crt_sign2 (crt, crt, key, GNUTLS_DIG_SHA256, 0), ==, 0);
  g_assert_cmpint (gnutls_x509_crt_export2 (crt, GNUTLS_X509_FMT_PEM, &cert_pem), ==, 0);
  g_assert_cmpint (gnutls_x509_privkey_export2_pkcs8 (key, GNUTLS_X509_FMT_PEM, NULL,
                                                      GNUTLS_PKCS_PLAIN, &key_pem), ==, 0);
  g_assert_true (g_file_set_contents (cert_path, (const char *) cert_pem.data, cert_pem.size,
                                      &error));
  g_assert_true (g_file_set_contents (key_path, (const char *) key_pem.data, key_pem.size,
                                      &error));
  gnutls_free (cert_pem.data);
  gnutls_free (key_pem.data);
  gnutls_x509_crt_deinit (crt);
  gnutls_x509_privkey_deinit (key);
}

static void
test_https (Fixture *f, gconstpointer data)
{
  g_autofree char *cert = g_build_filename (f->tmpdir, "api.crt", NULL);
  g_autofree char *key = g_build_filename (f->tmpdir, "api.key", NULL);
  Reply r1 = { 0 }, r2 = { 0 };

  if (!g_tls_backend_supports_tls (g_tls_backend_get_default ()))
    {
      g_test_skip ("no TLS backend (glib-networking)");
      return;
    }
  make_cert (cert, key);
  start_api (f, cert, key);
  get (f, "/statusResp", TRUE, &r1);
  assert_status_ok (&r1);
  /* The self-test works behind HTTPS too. */
  get (f, "/status", TRUE, &r2);
  assert_status_ok (&r2);
  g_assert_cmpuint (f->n_connected, ==, 1);
  reply_clear (&r1);
  reply_clear (&r2);
  wait_no_clients (f);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
#define ADD(path, fn) \
  g_test_add ("/gt/api-server/" path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  ADD ("status-resp", test_status_resp);
  ADD ("status-ok-cached", test_status_ok_cached);
  ADD ("status-concurrent", test_status_concurrent);
  ADD ("status-failed", test_status_failed);
  ADD ("status-ready-timeout", test_status_ready_timeout);
  ADD ("status-server-gone", test_status_server_gone);
  ADD ("metrics", test_metrics);
  ADD ("other-paths", test_other_paths);
  ADD ("addresses", test_addresses);
  ADD ("https", test_https);
#undef ADD
  return g_test_run ();
}
