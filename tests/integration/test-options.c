/* test-options.c (integration): GT options with real gt processes on 127.0.0.1: remoteAPI (the
 * client asks an HTTP API for its server, also after the server moved), httpMUXHeader (the server
 * routes by a header carrying the client id). */
#define G_LOG_DOMAIN "gt-test"

#include <stdlib.h>
#include <string.h>

#include <gio/gio.h>
#include <libsoup/soup.h>

#include "gt-test-utils.h"

#define SECRET "options-test-secret"

/* ------------------------------------------------------------------------------------------ */
/* The remote API: GET /gt/server answers {"serverAddress": ...} with the port set by the test,
 * 503 while it is 0. Runs in the harness's service thread; state under gt_test_lock(). */

typedef struct
{
  GtTestHttp *http;
  guint16 server_port; /* 0: answer 503 */
  guint n_requests;
  guint n_failed;      /* answered 503 */
  char *last_id;       /* network_client_id of the last request */
  char *last_extra;    /* the "keep" query parameter that was in the configured URL */
  gint64 last_request_id;
} RemoteApi;

static void
remote_api_cb (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
               gpointer user_data)
{
  RemoteApi *api = user_data;
  const char *rid
    = soup_message_headers_get_one (soup_server_message_get_request_headers (msg), "Request-Id");
  g_autofree char *body = NULL;

  g_mutex_lock (gt_test_lock ());
  api->n_requests++;
  g_free (api->last_id);
  g_free (api->last_extra);
  api->last_id = g_strdup (query ? g_hash_table_lookup (query, "network_client_id") : NULL);
  api->last_extra = g_strdup (query ? g_hash_table_lookup (query, "keep") : NULL);
  api->last_request_id = rid ? g_ascii_strtoll (rid, NULL, 10) : -1;
  if (api->server_port == 0)
    {
      api->n_failed++;
      soup_server_message_set_status (msg, 503, NULL);
    }
  else
    {
      body = g_strdup_printf ("{\"serverAddress\": \"tcp://127.0.0.1:%u\", \"stunAddress\": null}",
                              api->server_port);
      soup_server_message_set_status (msg, 200, NULL);
      soup_server_message_set_response (msg, "application/json", SOUP_MEMORY_COPY, body,
                                        strlen (body));
    }
  g_cond_broadcast (gt_test_cond ());
  g_mutex_unlock (gt_test_lock ());
}

static void
remote_api_add_in_service (gpointer data, gpointer unused)
{
  RemoteApi *api = data;

  soup_server_add_handler (api->http->server, "/gt/server", remote_api_cb, api, NULL);
}

static void
remote_api_set_port (RemoteApi *api, guint16 port)
{
  g_mutex_lock (gt_test_lock ());
  api->server_port = port;
  g_mutex_unlock (gt_test_lock ());
}

/* ------------------------------------------------------------------------------------------ */

static GtTestProc *
start_server_with (const char *name, guint16 *port, const char *extra)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autofree char *line = NULL;
  GtTestProc *p;

  gt_test_args_addv (args, "server", "--addr", "127.0.0.1:0", "--id", "opt", "--secret", SECRET,
                     NULL);
  if (extra != NULL)
    gt_test_args_addv (args, extra, "--apiAddr", "127.0.0.1:0", NULL);
  p = gt_test_spawn_gt (name, args);
  line = gt_test_proc_expect_line (p, "listening on 127\\.0\\.0\\.1:[0-9]+", NULL, GT_TEST_WAIT_MS);
  *port = (guint16) gt_test_capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");
  return p;
}

static GtTestProc *
start_server (const char *name, guint16 *port)
{
  return start_server_with (name, port, NULL);
}

/* GET /whoami through the server on port with Host opt.example.com answers the service's name. */
static void
expect_route (guint16 port, const char *want, guint timeout_ms)
{
  gint64 deadline = gt_test_deadline_in (timeout_ms);
  g_autoptr (GError) error = NULL;

  for (;;)
    {
      g_autoptr (GtTestHttpResponse) r = NULL;

      g_clear_error (&error);
      r = gt_test_http_request (port, "GET", "/whoami", "opt.example.com", NULL, 0, &error);
      if (r != NULL && r->status == 200 && r->body->len == strlen (want)
          && memcmp (r->body->data, want, r->body->len) == 0)
        return;
      if (g_get_monotonic_time () > deadline)
        gt_test_fail ("no answer from %s through port %u: %s", want, port,
                      r ? "wrong answer" : error->message);
      g_usleep (100 * 1000);
    }
}

static void
test_remote_api (void)
{
  RemoteApi api = { 0 };
  GtTestHttp *svc;
  GtTestProc *s1, *s2, *client;
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  guint16 p1, p2;
  gint64 now_s = g_get_real_time () / G_USEC_PER_SEC;
  guint n;

  GT_TEST_REQUIRE_GT ();
  gt_test_setup ();
  svc = gt_test_http_start ("svc", 0, NULL);
  api.http = gt_test_http_start ("api", 0, NULL);
  gt_test_service_call (remote_api_add_in_service, &api);
  s1 = start_server ("server1", &p1);

  /* No remote: the client asks the API, which fails at first and is asked again. */
  gt_test_args_addv (args, "client", "--id", "opt", "--secret", SECRET, "--reconnectDelay",
                     "200ms", NULL);
  gt_test_args_add (args, "--remoteAPI=http://127.0.0.1:%u/gt/server?keep=yes", api.http->port);
  gt_test_args_add (args, "--local=http://127.0.0.1:%u", svc->port);
  client = gt_test_spawn_gt ("client", args);
  g_free (gt_test_proc_expect_line (client, "remote API .*HTTP 503.*asking again", NULL,
                                    GT_TEST_WAIT_MS));
  remote_api_set_port (&api, p1);
  g_free (gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS));
  expect_route (p1, "svc", GT_TEST_WAIT_MS);

  g_mutex_lock (gt_test_lock ());
  g_assert_cmpuint (api.n_failed, >=, 1);
  g_assert_cmpuint (api.n_requests, >, api.n_failed);
  g_assert_cmpstr (api.last_id, ==, "opt");
  g_assert_cmpstr (api.last_extra, ==, "yes");
  g_assert_cmpint (api.last_request_id, >=, now_s - 5);
  g_assert_cmpint (api.last_request_id, <=, now_s + 60);
  n = api.n_requests;
  g_mutex_unlock (gt_test_lock ());

  /* The server moves: the API names the new one, the old one stops; the client asks again and
   * follows (GT asked again but kept the old address). */
  s2 = start_server ("server2", &p2);
  remote_api_set_port (&api, p2);
  gt_test_proc_stop_cleanly (s1);
  expect_route (p2, "svc", GT_TEST_WAIT_MS);
  g_mutex_lock (gt_test_lock ());
  g_assert_cmpuint (api.n_requests, >, n);
  g_mutex_unlock (gt_test_lock ());
  g_assert_false (gt_test_proc_has_exited (client));
  (void) s2;
  gt_test_teardown ();
  g_free (api.last_id);
  g_free (api.last_extra);
}

/* One GET /whoami on a new connection with Host and extra header lines. */
static GtTestHttpResponse *
request_with (guint16 port, const char *host, const char *extra)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestConn) c = gt_test_conn_connect (port, &error);
  g_autoptr (GByteArray) req = NULL;
  GtTestHttpResponse *r;

  g_assert_no_error (error);
  req = gt_test_http_build_request ("GET", "/whoami", host, NULL, 0, extra);
  g_assert_true (gt_test_conn_write_all (c, req->data, req->len, gt_test_deadline_in (5000),
                                         &error));
  r = gt_test_conn_read_response (c, gt_test_deadline_in (GT_TEST_WAIT_MS), &error);
  g_assert_no_error (error);
  return r;
}

/* httpMUXHeader: the whole value of the named header (any case) is the client's prefix; Host no
 * longer routes. */
static void
test_http_mux_header (void)
{
  GtTestHttp *svc;
  GtTestProc *client, *server;
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  gt_test_setup ();
  svc = gt_test_http_start ("svc", 0, NULL);
  server = start_server_with ("server", &port, "--httpMUXHeader=EID");
  gt_test_args_addv (args, "client", "--id", "opt", "--secret", SECRET, NULL);
  gt_test_args_add (args, "--remote=tcp://127.0.0.1:%u", port);
  gt_test_args_add (args, "--local=http://127.0.0.1:%u", svc->port);
  client = gt_test_spawn_gt ("client", args);
  g_free (gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS));

  {
    g_autoptr (GtTestHttpResponse) r = request_with (port, "anything.example.com", "EID: opt\r\n");

    g_assert_cmpuint (r->status, ==, 200);
    gt_test_check_bytes ("body", r->body->data, r->body->len, (const guint8 *) "svc", 3);
  }
  {
    g_autoptr (GtTestHttpResponse) r = request_with (port, "x", "eid:  OPT \r\n");

    g_assert_cmpuint (r->status, ==, 200);
  }
  {
    /* Host alone does not route any more. */
    g_autoptr (GtTestHttpResponse) r = request_with (port, "opt.example.com", NULL);

    g_assert_cmpuint (r->status, ==, 400);
  }
  {
    g_autoptr (GtTestHttpResponse) r = request_with (port, "opt.example.com", "EID: other\r\n");

    g_assert_cmpuint (r->status, ==, 404);
  }
  {
    /* The status API's end-to-end self-test goes through the server with the header too. */
    g_autofree char *line = gt_test_proc_expect_line (
      server, "status API on 127\\.0\\.0\\.1:[0-9]+", NULL, GT_TEST_WAIT_MS);
    guint16 api = (guint16) gt_test_capture_uint (line, "status API on 127\\.0\\.0\\.1:([0-9]+)");
    g_autoptr (GError) error = NULL;
    g_autoptr (GtTestHttpResponse) r
      = gt_test_http_request (api, "GET", "/status", "127.0.0.1", NULL, 0, &error);

    g_assert_no_error (error);
    g_assert_cmpuint (r->status, ==, 200);
  }
  gt_test_teardown ();
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, 0);
  g_test_add_func ("/gt/options/integration/remote-api", test_remote_api);
  g_test_add_func ("/gt/options/integration/http-mux-header", test_http_mux_header);
  return gt_test_run ();
}
