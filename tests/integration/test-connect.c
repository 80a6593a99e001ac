/* Integration tests of `gt connect` on 127.0.0.1: real gt server, target client and gt connect
 * processes; bytes through the direct P2P path, through the relay path when P2P is refused, and
 * the metrics that tell them apart. */
#define G_LOG_DOMAIN "gt-test"

#include <string.h>

#include "gt-metrics.h"
#include "gt-test-utils.h"

#define PATTERN_SIZE (2 * GT_TEST_MIB)
#define CLIENT_ID "alice"
#define CLIENT_SECRET "s3cret-alice"
#define PREFIX "web"

typedef struct
{
  gpointer unused;
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  gt_test_setup ();
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  gt_test_teardown ();
}

/* Set by a test before it starts the server and the target: TURN on the server's stunAddr, and
 * the target's remoteTURN pointing there. */
static gboolean with_turn;

static GtTestProc *
start_server (guint16 *port_out, guint16 *stun_port_out, guint16 tcp_port)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autofree char *line = NULL;
  guint16 stun_port = gt_test_free_port ();
  GtTestProc *p;

  /* bob may open tcpForward streams to alice's prefix. */
  gt_test_args_addv (args, "server", "--id", CLIENT_ID, "--secret", CLIENT_SECRET, "--id", "bob",
                     "--secret", "s3cret-bob", "--tcpForwardAllow", "bob:" PREFIX, "--addr",
                     "127.0.0.1:0", "--stunAddr", NULL);
  gt_test_args_add (args, "127.0.0.1:%u", stun_port);
  if (tcp_port != 0)
    {
      gt_test_args_add (args, "--tcpRange");
      gt_test_args_add (args, "%u-%u", tcp_port, tcp_port);
    }
  if (with_turn)
    gt_test_args_addv (args, "--turn", "--turnAllowLoopback", NULL);
  p = gt_test_spawn_gt ("server", args);
  line = gt_test_proc_expect_line (p, "listening on 127\\.0\\.0\\.1:[0-9]+", NULL, GT_TEST_WAIT_MS);
  *port_out = (guint16)gt_test_capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");
  *stun_port_out = stun_port;
  return p;
}

/* The target client: an http service (host prefix web) and, when tcp_port, the TCP echo on that
 * server port; P2P accepted when with_stun. */
static GtTestProc *
start_target (guint16 server_port, guint16 stun_port, gboolean with_stun, guint16 tcp_port)
{
  GtTestHttp *h = gt_test_http_start ("svc", 0, NULL);
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  GtTestProc *p;

  gt_test_args_addv (args, "client", "--id", CLIENT_ID, "--secret", CLIENT_SECRET,
                     "--reconnectDelay", "200ms", "--remote", NULL);
  gt_test_args_add (args, "tcp://127.0.0.1:%u", server_port);
  gt_test_args_add (args, "--local");
  gt_test_args_add (args, "http://127.0.0.1:%u", h->port);
  gt_test_args_addv (args, "--hostPrefix", PREFIX, NULL);
  if (tcp_port != 0)
    {
      gt_test_args_add (args, "--local");
      gt_test_args_add (args, "tcp://127.0.0.1:%u", gt_test_tcp_echo_start ()->port);
      gt_test_args_add (args, "--remoteTCPPort");
      gt_test_args_add (args, "%u", tcp_port);
    }
  if (with_stun)
    {
      gt_test_args_add (args, "--remoteSTUN");
      gt_test_args_add (args, "stun:127.0.0.1:%u", stun_port);
    }
  if (with_turn)
    {
      gt_test_args_add (args, "--remoteTURN");
      gt_test_args_add (args, "turn:127.0.0.1:%u", stun_port);
    }
  p = gt_test_spawn_gt ("client", args);
  g_free (gt_test_proc_expect_line (p, "tunnel started", NULL, GT_TEST_WAIT_MS));
  return p;
}

/* gt connect with its listener on *local_port and metrics on *metrics_port. */
static GtTestProc *
start_connect (guint16 server_port, guint16 stun_port, const char *service, guint16 *local_port,
               guint16 *metrics_port, const char *extra)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autofree char *line = NULL;
  GtTestProc *p;

  *metrics_port = gt_test_free_port ();
  gt_test_args_addv (args, "connect", "--remote", NULL);
  gt_test_args_add (args, "tcp://127.0.0.1:%u", server_port);
  gt_test_args_addv (args, "--hostPrefix", PREFIX, "--localAddr", "127.0.0.1:0", NULL);
  if (service != NULL)
    gt_test_args_addv (args, "--service", service, NULL);
  gt_test_args_add (args, "--metricsAddr");
  gt_test_args_add (args, "127.0.0.1:%u", *metrics_port);
  gt_test_args_add (args, "--remoteSTUN");
  gt_test_args_add (args, "stun:127.0.0.1:%u", stun_port);
  if (extra != NULL)
    {
      g_auto (GStrv) words = g_strsplit (extra, " ", -1);

      for (guint i = 0; words[i] != NULL; i++)
        gt_test_args_add (args, "%s", words[i]);
    }
  p = gt_test_spawn_gt ("connect", args);
  line = gt_test_proc_expect_line (p, "listening on 127\\.0\\.0\\.1:[0-9]+", NULL, GT_TEST_WAIT_MS);
  *local_port = (guint16)gt_test_capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");
  return p;
}

static double
metric (guint16 metrics_port, const char *name, const char *const *labels)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) r
      = gt_test_http_request (metrics_port, "GET", "/metrics", "127.0.0.1", NULL, 0, &error);
  g_autofree char *text = NULL;
  double value = -1;

  gt_test_expect_response (r, error, 200);
  text = g_strndup ((const char *)r->body->data, r->body->len);
  if (!gt_metrics_parse_sample (text, name, labels, &value))
    gt_test_fail ("no sample %s in:\n%s", name, text);
  return value;
}

/* One connection to the TCP echo through port: the banner, then n pattern bytes echoed. */
static void
echo_through (guint16 port, gsize n)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestConn) c = gt_test_conn_connect (port, &error);
  gint64 deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
  gsize want = strlen (GT_TEST_TCP_BANNER) + n;

  g_assert_no_error (error);
  if (!gt_test_conn_write_all (c, gt_test_pattern (), n, deadline, &error))
    gt_test_fail ("write: %s", error->message);
  while (c->in->len < want)
    if (gt_test_conn_fill (c, deadline, &error) <= 0)
      gt_test_fail ("echo: %u of %" G_GSIZE_FORMAT " bytes: %s", c->in->len, want,
                    error != NULL ? error->message : "EOF");
  gt_test_check_bytes ("banner", c->in->data, strlen (GT_TEST_TCP_BANNER),
                       (const guint8 *)GT_TEST_TCP_BANNER, strlen (GT_TEST_TCP_BANNER));
  gt_test_check_bytes ("echo", c->in->data + strlen (GT_TEST_TCP_BANNER), n, gt_test_pattern (), n);
}

/* HTTP through gt connect on the direct path: bodies both ways compared; the metrics count the
 * attempt, a host-candidate success and the bytes as direct. */
static void
test_direct (Fixture *f, gconstpointer data)
{
  guint16 port, stun_port, local_port, metrics_port;
  const char *direct[] = { "path", "direct", NULL };
  const char *relay[] = { "path", "relay", NULL };
  const char *host[] = { "type", "host", "remote_type", "host", NULL };
  const char *direct_out[] = { "path", "direct", "direction", "out", NULL };
  const char *direct_in[] = { "path", "direct", "direction", "in", NULL };
  GtTestProc *connect;

  GT_TEST_REQUIRE_GT ();
  start_server (&port, &stun_port, 0);
  start_target (port, stun_port, TRUE, 0);
  connect = start_connect (port, stun_port, "gt", &local_port, &metrics_port, NULL);
  g_free (gt_test_proc_expect_line (connect, "direct path up", NULL, GT_TEST_WAIT_MS));

  for (guint i = 0; i < 4; i++)
    {
      g_autoptr (GError) error = NULL;
      g_autofree char *path = g_strdup_printf ("/bytes?n=%u", 300000 + i);
      g_autoptr (GtTestHttpResponse) r
          = gt_test_http_request (local_port, "GET", path, PREFIX, NULL, 0, &error);

      gt_test_expect_response (r, error, 200);
      gt_test_check_bytes ("download", r->body->data, r->body->len, gt_test_pattern (), 300000 + i);
    }
  for (guint i = 0; i < 2; i++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GtTestHttpResponse) r = gt_test_http_request (
          local_port, "POST", "/echo", PREFIX, gt_test_pattern (), PATTERN_SIZE, &error);

      gt_test_expect_response (r, error, 200);
      gt_test_check_bytes ("echo", r->body->data, r->body->len, gt_test_pattern (), PATTERN_SIZE);
    }
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_streams_total", direct), ==, 6);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_streams_total", relay), ==, 0);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_p2p_attempts_total", NULL), ==, 1);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_p2p_successes_total", host), ==, 1);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_direct_up", NULL), ==, 1);
  /* Request bodies out, response bodies in (plus the HTTP heads). */
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_bytes_total", direct_out), >=,
                     2.0 * PATTERN_SIZE);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_bytes_total", direct_in), >=,
                     2.0 * PATTERN_SIZE + 4 * 300000);
}

/* A target without remoteSTUN refuses P2P (GT's 403): every connection takes the relay path (the
 * server's port of a tcp service) from the first one on, and keeps working. */
static void
test_relay_when_refused (Fixture *f, gconstpointer data)
{
  guint16 port, stun_port, local_port, metrics_port, tcp_port = gt_test_free_port ();
  const char *direct[] = { "path", "direct", NULL };
  const char *relay[] = { "path", "relay", NULL };
  const char *relay_out[] = { "path", "relay", "direction", "out", NULL };
  const char *relay_in[] = { "path", "relay", "direction", "in", NULL };
  g_autofree char *service = g_strdup_printf (":%u/", tcp_port);
  GtTestProc *connect;

  GT_TEST_REQUIRE_GT ();
  start_server (&port, &stun_port, tcp_port);
  start_target (port, stun_port, FALSE, tcp_port);
  connect = start_connect (port, stun_port, service, &local_port, &metrics_port, NULL);
  /* At once, while the first attempt is still on its way. */
  echo_through (local_port, 100000);
  g_free (gt_test_proc_expect_line (connect, "P2P attempt 1 failed", NULL, GT_TEST_WAIT_MS));
  g_assert_cmpuint (gt_test_proc_count_matches (connect, "answered 403"), >=, 1);
  for (guint i = 0; i < 3; i++)
    echo_through (local_port, GT_TEST_MIB);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_streams_total", relay), ==, 4);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_streams_total", direct), ==, 0);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_bytes_total", relay_out), ==,
                     100000 + 3.0 * GT_TEST_MIB);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_bytes_total", relay_in), ==,
                     100000 + 3.0 * GT_TEST_MIB + 4 * strlen (GT_TEST_TCP_BANNER));
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_p2p_failures_total", NULL), >=, 1);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_direct_up", NULL), ==, 0);
}

/* With client credentials the relay path is a tcpForward stream through the server to the
 * target's http service of that prefix (bob logs in; the server allows bob:web). The target
 * refuses P2P: every request takes that relay and gets the service's bytes. */
static void
test_tcpforward_relay (Fixture *f, gconstpointer data)
{
  guint16 port, stun_port, local_port, metrics_port;
  const char *direct[] = { "path", "direct", NULL };
  const char *relay[] = { "path", "relay", NULL };
  const char *relay_out[] = { "path", "relay", "direction", "out", NULL };
  GtTestProc *connect;

  GT_TEST_REQUIRE_GT ();
  start_server (&port, &stun_port, 0);
  start_target (port, stun_port, FALSE, 0);
  connect = start_connect (port, stun_port, NULL, &local_port, &metrics_port,
                           "--id bob --secret s3cret-bob");
  g_assert_cmpuint (gt_test_proc_count_matches (connect, "relay path: tcpForward"), ==, 1);
  for (guint i = 0; i < 3; i++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GtTestHttpResponse) r = gt_test_http_request (
          local_port, "POST", "/echo", PREFIX, gt_test_pattern (), GT_TEST_MIB, &error);

      gt_test_expect_response (r, error, 200);
      gt_test_check_bytes ("echo", r->body->data, r->body->len, gt_test_pattern (), GT_TEST_MIB);
    }
  g_free (gt_test_proc_expect_line (connect, "P2P attempt 1 failed", NULL, GT_TEST_WAIT_MS));
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_streams_total", relay), ==, 3);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_streams_total", direct), ==, 0);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_bytes_total", relay_out), >=,
                     3.0 * GT_TEST_MIB);
}

/* With credentials the direct path takes the label PREFIX/ (the service the tcpForward relay
 * reaches), and carries the requests once up. */
static void
test_tcpforward_then_direct (Fixture *f, gconstpointer data)
{
  guint16 port, stun_port, local_port, metrics_port;
  const char *direct[] = { "path", "direct", NULL };
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) r = NULL;
  GtTestProc *connect;

  GT_TEST_REQUIRE_GT ();
  start_server (&port, &stun_port, 0);
  start_target (port, stun_port, TRUE, 0);
  connect = start_connect (port, stun_port, NULL, &local_port, &metrics_port,
                           "--id bob --secret s3cret-bob");
  g_assert_cmpuint (gt_test_proc_count_matches (connect, "service '" PREFIX "/'"), ==, 1);
  g_free (gt_test_proc_expect_line (connect, "direct path up", NULL, GT_TEST_WAIT_MS));
  r = gt_test_http_request (local_port, "GET", "/whoami", PREFIX, NULL, 0, &error);
  gt_test_expect_response (r, error, 200);
  g_assert_cmpmem (r->body->data, r->body->len, "svc", 3);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_streams_total", direct), ==, 1);
}

/* No relay path (an http service label) and P2P refused: a connection waits directWait for the
 * direct path, then is closed and counted. */
static void
test_no_path (Fixture *f, gconstpointer data)
{
  guint16 port, stun_port, local_port, metrics_port;
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestConn) c = NULL;
  GtTestProc *connect;

  GT_TEST_REQUIRE_GT ();
  start_server (&port, &stun_port, 0);
  start_target (port, stun_port, FALSE, 0);
  connect = start_connect (port, stun_port, PREFIX "/", &local_port, &metrics_port,
                           "--directWait 500ms");
  g_assert_cmpuint (gt_test_proc_count_matches (connect, "relay path: none"), ==, 1);
  c = gt_test_conn_connect (local_port, &error);
  g_assert_no_error (error);
  if (!gt_test_conn_read_to_eof (c, TRUE, gt_test_deadline_in (GT_TEST_WAIT_MS), &error))
    gt_test_fail ("the connection was not closed: %s", error->message);
  g_assert_cmpuint (c->in->len, ==, 0);
  g_free (
      gt_test_proc_expect_line (connect, "no direct path within 500 ms", NULL, GT_TEST_WAIT_MS));
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_streams_refused_total", NULL), ==, 1);
}

/* The YAML form (type: connect, GT's client key names) runs as the command line does; bad
 * configurations fail with one clear message. */
static void
test_config_file (Fixture *f, gconstpointer data)
{
  guint16 port, stun_port, metrics_port = gt_test_free_port ();
  g_autofree char *yaml = NULL;
  g_autofree char *path = NULL;
  g_autofree char *bad = NULL;
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autoptr (GPtrArray) bad_args = gt_test_args_new ();
  g_autofree char *line = NULL;
  GtTestProc *connect, *broken;
  guint16 local_port;

  GT_TEST_REQUIRE_GT ();
  start_server (&port, &stun_port, 0);
  start_target (port, stun_port, TRUE, 0);
  yaml = g_strdup_printf ("type: connect\n"
                          "options:\n"
                          "  remote: tcp://127.0.0.1:%u\n"
                          "  remoteSTUN:\n"
                          "    - stun:127.0.0.1:%u\n"
                          "  tcpForwardHostPrefix: " PREFIX "\n"
                          "  tcpForwardAddr: tcp://127.0.0.1:0\n"
                          "  metricsAddr: 127.0.0.1:%u\n",
                          port, stun_port, metrics_port);
  path = gt_test_write_file ("connect.yaml", yaml);
  gt_test_args_addv (args, "connect", "-c", path, NULL);
  connect = gt_test_spawn_gt ("connect", args);
  line = gt_test_proc_expect_line (connect, "listening on 127\\.0\\.0\\.1:[0-9]+", NULL,
                                   GT_TEST_WAIT_MS);
  local_port = (guint16)gt_test_capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");
  g_free (gt_test_proc_expect_line (connect, "direct path up", NULL, GT_TEST_WAIT_MS));
  {
    g_autoptr (GError) error = NULL;
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (local_port, "GET", "/whoami", PREFIX, NULL, 0, &error);

    gt_test_expect_response (r, error, 200);
    g_assert_cmpmem (r->body->data, r->body->len, "svc", 3);
  }

  bad = gt_test_write_file ("bad.yaml", "type: connect\noptions:\n  remote: ftp://x:1\n"
                                        "  hostPrefix: a\n  localAddr: 127.0.0.1:0\n");
  gt_test_args_addv (bad_args, "connect", "-c", bad, NULL);
  broken = gt_test_spawn_gt ("broken", bad_args);
  g_free (gt_test_proc_expect_line (broken, "remote: 'ftp://x:1' is not a tcp://", NULL,
                                    GT_TEST_WAIT_MS));
  g_assert_true (gt_test_proc_wait_exit (broken, GT_TEST_WAIT_MS));
  g_assert_cmpint (g_subprocess_get_exit_status (broken->proc), ==, 1);
}

/* TURN on the server: the target client and gt connect (bob) each allocate a relayed address
 * with credentials made from their own id and secret, and the pair still reaches its service. */
static void
test_turn (Fixture *f, gconstpointer data)
{
  guint16 port, stun_port, local_port, metrics_port;
  g_autofree char *extra = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) r = NULL;
  GtTestProc *server, *connect;

  GT_TEST_REQUIRE_GT ();
  with_turn = TRUE;
  server = start_server (&port, &stun_port, 0);
  g_free (gt_test_proc_expect_line (server, "TURN on 127\\.0\\.0\\.1", NULL, GT_TEST_WAIT_MS));
  start_target (port, stun_port, TRUE, 0);
  extra = g_strdup_printf ("--id bob --secret s3cret-bob --remoteTURN turn:127.0.0.1:%u",
                           stun_port);
  connect = start_connect (port, stun_port, "gt", &local_port, &metrics_port, extra);
  g_free (gt_test_proc_expect_line (connect, "direct path up", NULL, GT_TEST_WAIT_MS));
  /* Both peers gathered a relayed candidate on gt's TURN server. */
  g_assert_true (gt_test_proc_wait_count (server, "TURN: user bob from 127\\.0\\.0\\.1:[0-9]+ "
                                          "relayed at 127\\.0\\.0\\.1:[0-9]+", 1,
                                          GT_TEST_WAIT_MS));
  g_assert_true (gt_test_proc_wait_count (server, "TURN: user " CLIENT_ID " from "
                                          "127\\.0\\.0\\.1:[0-9]+ relayed at", 1,
                                          GT_TEST_WAIT_MS));
  r = gt_test_http_request (local_port, "GET", "/bytes?n=100000", PREFIX, NULL, 0, &error);
  gt_test_expect_response (r, error, 200);
  gt_test_check_bytes ("download", r->body->data, r->body->len, gt_test_pattern (), 100000);
  g_assert_cmpuint (gt_test_proc_count_matches (server, "s3cret"), ==, 0);
  with_turn = FALSE;
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, PATTERN_SIZE);
  g_test_add ("/gt/connect/direct", Fixture, NULL, fixture_setup, test_direct, fixture_teardown);
  g_test_add ("/gt/connect/turn", Fixture, NULL, fixture_setup, test_turn, fixture_teardown);
  g_test_add ("/gt/connect/relay-when-refused", Fixture, NULL, fixture_setup,
              test_relay_when_refused, fixture_teardown);
  g_test_add ("/gt/connect/tcpforward-relay", Fixture, NULL, fixture_setup, test_tcpforward_relay,
              fixture_teardown);
  g_test_add ("/gt/connect/tcpforward-then-direct", Fixture, NULL, fixture_setup,
              test_tcpforward_then_direct, fixture_teardown);
  g_test_add ("/gt/connect/no-path", Fixture, NULL, fixture_setup, test_no_path, fixture_teardown);
  g_test_add ("/gt/connect/config-file", Fixture, NULL, fixture_setup, test_config_file,
              fixture_teardown);
  return gt_test_run ();
}
