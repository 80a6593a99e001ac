/* `gt connect` across two NATs made by the test: the target client (hostA) and gt connect
 * (hostB, this process's own network namespace) are each behind a router doing nftables
 * masquerade; the gt server (with STUN) is on the "public" network between the routers.
 *
 *   hostA 10.1.0.2 ── natA (wan 198.18.1.2) ── pub 198.18.1.1 | 198.18.2.1 (server)
 *   hostB 10.2.0.2 ── natB (wan 198.18.2.2) ──┘
 *
 * The relay path is a tcpForward stream through the server (gt connect logs in as bob).
 * Checked: the direct path is reached through the NATs (the remote candidate is server-reflexive
 * or peer-reflexive, never the target's private address) and carries the bytes; with UDP dropped
 * between the routers the relay path carries them; when UDP comes back the direct path takes new
 * connections while a relayed one goes on; when UDP goes again, new connections take the relay. */
#define G_LOG_DOMAIN "gt-test"

#include <sched.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "gt-metrics.h"
#include "gt-test-utils.h"

#define PATTERN_SIZE (2 * GT_TEST_MIB)
#define CLIENT_ID "alice"
#define CLIENT_SECRET "s3cret-alice"
#define PREFIX "web"
#define SERVER_PORT 8080
#define STUN_PORT 3478
#define ECHO_PORT 7000

static gboolean in_netns;
static char *skip_reason;
static char ns_a[32], ns_na[32], ns_p[32], ns_nb[32];

typedef struct
{
  gpointer unused;
} Fixture;

/* A shell command that must succeed. */
static gboolean
run (GError **error, const char *fmt, ...)
{
  g_autofree char *cmd = NULL;
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  char *argv[] = { "/bin/sh", "-c", NULL, NULL };
  int status;
  va_list ap;

  va_start (ap, fmt);
  cmd = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  argv[2] = cmd;
  if (!g_spawn_sync (NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err, &status, error))
    return FALSE;
  if (!g_spawn_check_wait_status (status, NULL))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "'%s' failed: %s", cmd, err);
      return FALSE;
    }
  return TRUE;
}

static void
must (const char *fmt, const char *arg)
{
  g_autoptr (GError) error = NULL;

  if (!run (&error, fmt, arg, arg, arg, arg))
    gt_test_fail ("%s", error->message);
}

static void
topology_remove (void)
{
  if (ns_a[0] == '\0')
    return;
  run (NULL, "ip netns del %s; ip netns del %s; ip netns del %s; ip netns del %s 2>/dev/null", ns_a,
       ns_na, ns_p, ns_nb);
  ns_a[0] = '\0';
}

/* Namespaces of earlier runs whose test process is gone (a crash, a kill). */
static void
remove_stale (void)
{
  g_autoptr (GDir) dir = g_dir_open ("/run/netns", 0, NULL);
  const char *name;

  while (dir != NULL && (name = g_dir_read_name (dir)) != NULL)
    {
      guint64 pid;
      g_autofree char *digits = NULL;

      if (!g_str_has_prefix (name, "gtc"))
        continue;
      digits = g_strndup (name + 3, strspn (name + 3, "0123456789"));
      if (g_ascii_string_to_unsigned (digits, 10, 1, G_MAXINT, &pid, NULL)
          && kill ((pid_t)pid, 0) < 0)
        run (NULL, "ip netns del %s", name);
    }
}

/* Before any thread (namespaces belong to threads): this process becomes hostB; the rest are
 * named namespaces wired to it. */
static gboolean
topology_make (GError **error)
{
  int pid = getpid ();
  g_autofree char *ip = g_find_program_in_path ("ip");
  g_autofree char *nft = g_find_program_in_path ("nft");

  if (geteuid () != 0)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
                           "needs root for network namespaces");
      return FALSE;
    }
  if (ip == NULL || nft == NULL)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                           "needs ip (iproute2) and nft (nftables)");
      return FALSE;
    }
  remove_stale ();
  if (unshare (CLONE_NEWNET) < 0)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "unshare(CLONE_NEWNET): %s",
                   g_strerror (errno));
      return FALSE;
    }
  g_snprintf (ns_a, sizeof ns_a, "gtc%da", pid);
  g_snprintf (ns_na, sizeof ns_na, "gtc%dna", pid);
  g_snprintf (ns_p, sizeof ns_p, "gtc%dp", pid);
  g_snprintf (ns_nb, sizeof ns_nb, "gtc%dnb", pid);
  atexit (topology_remove);
  /* An aborted test runs no atexit handler: a watcher removes the namespaces once we are gone. */
  {
    g_autofree char *watch = g_strdup_printf (
        "while kill -0 %d 2>/dev/null; do sleep 1; done; ip netns del %s; ip netns del %s; "
        "ip netns del %s; ip netns del %s",
        pid, ns_a, ns_na, ns_p, ns_nb);
    char *watch_argv[] = { "/bin/sh", "-c", watch, NULL };

    g_spawn_async (NULL, watch_argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                   NULL, NULL, NULL, NULL);
  }
  if (!run (error, "ip netns add %s && ip netns add %s && ip netns add %s && ip netns add %s", ns_a,
            ns_na, ns_p, ns_nb)
      || !run (error,
               "ip link set lo up && ip -n %s link set lo up && ip -n %s link set lo up "
               "&& ip -n %s link set lo up && ip -n %s link set lo up",
               ns_a, ns_na, ns_p, ns_nb)
      /* hostA ── natA */
      || !run (error, "ip -n %s link add a0 type veth peer name a1 netns %s", ns_a, ns_na)
      || !run (error,
               "ip -n %s addr add 10.1.0.2/24 dev a0 && ip -n %s link set a0 up && "
               "ip -n %s route add default via 10.1.0.1",
               ns_a, ns_a, ns_a)
      || !run (error, "ip -n %s addr add 10.1.0.1/24 dev a1 && ip -n %s link set a1 up", ns_na,
               ns_na)
      /* natA ── pub */
      || !run (error, "ip -n %s link add wa type veth peer name pa netns %s", ns_na, ns_p)
      || !run (error,
               "ip -n %s addr add 198.18.1.2/24 dev wa && ip -n %s link set wa up && "
               "ip -n %s route add default via 198.18.1.1",
               ns_na, ns_na, ns_na)
      || !run (error, "ip -n %s addr add 198.18.1.1/24 dev pa && ip -n %s link set pa up", ns_p,
               ns_p)
      /* pub ── natB */
      || !run (error, "ip -n %s link add pb type veth peer name wb netns %s", ns_p, ns_nb)
      || !run (error, "ip -n %s addr add 198.18.2.1/24 dev pb && ip -n %s link set pb up", ns_p,
               ns_p)
      || !run (error,
               "ip -n %s addr add 198.18.2.2/24 dev wb && ip -n %s link set wb up && "
               "ip -n %s route add default via 198.18.2.1",
               ns_nb, ns_nb, ns_nb)
      /* natB ── hostB (this process) */
      || !run (error, "ip -n %s link add b1 type veth peer name b0 netns %d", ns_nb, pid)
      || !run (error, "ip -n %s addr add 10.2.0.1/24 dev b1 && ip -n %s link set b1 up", ns_nb,
               ns_nb)
      || !run (error, "ip addr add 10.2.0.2/24 dev b0 && ip link set b0 up && "
                      "ip route add default via 10.2.0.1")
      /* Forwarding, and masquerade on the routers' public side. */
      || !run (error,
               "ip netns exec %s sysctl -qw net.ipv4.ip_forward=1 && "
               "ip netns exec %s sysctl -qw net.ipv4.ip_forward=1 && "
               "ip netns exec %s sysctl -qw net.ipv4.ip_forward=1",
               ns_na, ns_p, ns_nb)
      || !run (error,
               "ip netns exec %s nft 'add table ip nat; add chain ip nat gtpost { type nat "
               "hook postrouting priority 100; }; add rule ip nat gtpost oifname \"wa\" "
               "masquerade'",
               ns_na)
      || !run (error,
               "ip netns exec %s nft 'add table ip nat; add chain ip nat gtpost { type nat "
               "hook postrouting priority 100; }; add rule ip nat gtpost oifname \"wb\" "
               "masquerade'",
               ns_nb)
      /* The routers drop unsolicited UDP to themselves, as home routers do: else the kernel
       * keeps a conntrack entry for the peer's first check (answered with ICMP) and masquerade
       * then maps the next outgoing datagram to another port, a symmetric NAT. */
      || !run (error,
               "ip netns exec %s nft 'add table inet gtfw; add chain inet gtfw gtin { "
               "type filter hook input priority 0; policy accept; }; add rule inet gtfw "
               "gtin iifname \"wa\" meta l4proto udp drop'",
               ns_na)
      || !run (error,
               "ip netns exec %s nft 'add table inet gtfw; add chain inet gtfw gtin { "
               "type filter hook input priority 0; policy accept; }; add rule inet gtfw "
               "gtin iifname \"wb\" meta l4proto udp drop'",
               ns_nb)
      /* The filter that blocks UDP between the routers (not to the server) when asked. */
      || !run (error,
               "ip netns exec %s nft 'add table inet gtf; add chain inet gtf gtfwd { type "
               "filter hook forward priority 0; policy accept; }'",
               ns_p))
    return FALSE;
  return TRUE;
}

static void
block_udp (gboolean block)
{
  if (block)
    must ("ip netns exec %s nft 'add rule inet gtf gtfwd meta l4proto udp drop'", ns_p);
  else
    must ("ip netns exec %s nft 'flush chain inet gtf gtfwd'", ns_p);
  /* Flows already tracked by the NATs stay; what matters is the forwarding filter. */
}

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  gt_test_setup ();
  if (in_netns)
    block_udp (FALSE);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  gt_test_teardown ();
}

/* A gt (or other) process in a named namespace. */
static GtTestProc *
spawn_in (const char *ns, const char *name, gboolean gt, const char *const *argv)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();

  gt_test_args_addv (args, "netns", "exec", ns, NULL);
  if (gt)
    gt_test_args_addv (args, gt_test_binary (), argv[0], "--logLevel",
                       g_getenv ("GT_TEST_LOG_LEVEL") ? g_getenv ("GT_TEST_LOG_LEVEL") : "info",
                       NULL);
  for (guint i = gt ? 1 : 0; argv[i] != NULL; i++)
    gt_test_args_add (args, "%s", argv[i]);
  return gt_test_spawn (name, "ip", args, NULL, NULL);
}

/* The server on pub, the TCP echo and the target client on hostA, gt connect here. */
static GtTestProc *
start_all (guint16 *local_port, guint16 *metrics_port)
{
  g_autofree char *server_addr = g_strdup_printf ("0.0.0.0:%u", SERVER_PORT);
  g_autofree char *stun_addr = g_strdup_printf ("0.0.0.0:%u", STUN_PORT);
  g_autofree char *echo_port = g_strdup_printf ("%u", ECHO_PORT);
  g_autofree char *local = g_strdup_printf ("http://127.0.0.1:%u", ECHO_PORT);
  g_autofree char *line = NULL;
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  /* bob (gt connect) may open tcpForward streams to alice's prefix: the relay path. */
  const char *server_argv[]
      = { "server",      "--id",   CLIENT_ID,   "--secret",   CLIENT_SECRET,
          "--id",        "bob",    "--secret",  "s3cret-bob", "--tcpForwardAllow",
          "bob:" PREFIX, "--addr", server_addr, "--stunAddr", stun_addr,
          NULL };
  const char *echo_argv[]
      = { "python3", "-c",
          "import socketserver,sys\n"
          "class H(socketserver.BaseRequestHandler):\n"
          "  def handle(self):\n"
          "    while True:\n"
          "      d=self.request.recv(65536)\n"
          "      if not d: break\n"
          "      self.request.sendall(d)\n"
          "socketserver.ThreadingTCPServer.allow_reuse_address=True\n"
          "s=socketserver.ThreadingTCPServer(('127.0.0.1',int(sys.argv[1])),H)\n"
          "print('echo ready',flush=True)\n"
          "s.serve_forever()\n",
          echo_port, NULL };
  /* The echo as the http service of the prefix: tcpForward streams and XP requests are routed
   * by it, and the direct path's label PREFIX/ chooses it. */
  const char *client_argv[] = { "client",   "--id",         CLIENT_ID,
                                "--secret", CLIENT_SECRET,  "--reconnectDelay",
                                "200ms",    "--remote",     "tcp://198.18.1.1:8080",
                                "--local",  local,          "--hostPrefix",
                                PREFIX,     "--remoteSTUN", "stun:198.18.1.1:3478",
                                NULL };
  GtTestProc *server, *echo, *client, *connect;

  server = spawn_in (ns_p, "server", TRUE, server_argv);
  g_free (gt_test_proc_expect_line (server, "listening on", NULL, GT_TEST_WAIT_MS));
  echo = spawn_in (ns_a, "echo", FALSE, echo_argv);
  g_free (gt_test_proc_expect_line (echo, "echo ready", NULL, GT_TEST_WAIT_MS));
  client = spawn_in (ns_a, "client", TRUE, client_argv);
  g_free (gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS));

  *metrics_port = gt_test_free_port ();
  gt_test_args_addv (args, "connect", "--remote", "tcp://198.18.2.1:8080", "--hostPrefix", PREFIX,
                     "--id", "bob", "--secret", "s3cret-bob", "--localAddr", "127.0.0.1:0",
                     "--remoteSTUN", "stun:198.18.2.1:3478", "--metricsAddr", NULL);
  gt_test_args_add (args, "127.0.0.1:%u", *metrics_port);
  connect = gt_test_spawn_gt ("connect", args);
  line = gt_test_proc_expect_line (connect, "listening on 127\\.0\\.0\\.1:[0-9]+", NULL,
                                   GT_TEST_WAIT_MS);
  g_assert_cmpuint (gt_test_proc_count_matches (connect, "relay path: tcpForward"), ==, 1);
  *local_port = (guint16)gt_test_capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");
  return connect;
}

static double
metric (guint16 metrics_port, const char *name, const char *const *labels)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) r
      = gt_test_http_request (metrics_port, "GET", "/metrics", "127.0.0.1", NULL, 0, &error);
  g_autofree char *text = NULL;
  double value = 0;

  gt_test_expect_response (r, error, 200);
  text = g_strndup ((const char *)r->body->data, r->body->len);
  if (!gt_metrics_parse_sample (text, name, labels, &value))
    return 0; /* a label set not seen yet */
  return value;
}

/* n pattern bytes (from offset) through c, echoed back and compared. */
static void
echo_on (GtTestConn *c, gsize offset, gsize n)
{
  g_autoptr (GError) error = NULL;
  gint64 deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);

  g_byte_array_set_size (c->in, 0);
  if (!gt_test_conn_write_all (c, gt_test_pattern () + offset, n, deadline, &error))
    gt_test_fail ("write: %s", error->message);
  while (c->in->len < n)
    if (gt_test_conn_fill (c, deadline, &error) <= 0)
      gt_test_fail ("echo: %u of %" G_GSIZE_FORMAT " bytes: %s", c->in->len, n,
                    error != NULL ? error->message : "EOF");
  gt_test_check_bytes ("echo", c->in->data, c->in->len, gt_test_pattern () + offset, n);
}

static void
echo_once (guint16 port, gsize n)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestConn) c = gt_test_conn_connect (port, &error);

  g_assert_no_error (error);
  echo_on (c, 0, n);
}

#define SKIP_UNLESS_NETNS()                                                                        \
  G_STMT_START                                                                                     \
  {                                                                                                \
    GT_TEST_REQUIRE_GT ();                                                                         \
    if (!in_netns)                                                                                 \
      {                                                                                            \
        g_test_skip (skip_reason);                                                                 \
        return;                                                                                    \
      }                                                                                            \
  }                                                                                                \
  G_STMT_END

/* Through both NATs: the direct path comes up with a reflexive remote candidate and carries the
 * bytes of every connection. */
static void
test_direct (Fixture *f, gconstpointer data)
{
  guint16 local_port, metrics_port;
  const char *direct[] = { "path", "direct", NULL };
  const char *relay[] = { "path", "relay", NULL };
  const char *direct_out[] = { "path", "direct", "direction", "out", NULL };
  static const char *const local_types[] = { "host", "srflx", "prflx" };
  static const char *const reflexive[] = { "srflx", "prflx" };
  double successes = 0;
  g_autofree char *up = NULL;
  GtTestProc *connect;

  SKIP_UNLESS_NETNS ();
  connect = start_all (&local_port, &metrics_port);
  up = gt_test_proc_expect_line (connect, "direct path up", NULL, GT_TEST_WAIT_MS);
  if (strstr (up, "remote srflx") == NULL && strstr (up, "remote prflx") == NULL)
    gt_test_fail ("the direct path did not go through the NAT: %s", up);
  for (guint i = 0; i < 3; i++)
    echo_once (local_port, GT_TEST_MIB);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_streams_total", direct), ==, 3);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_streams_total", relay), ==, 0);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_bytes_total", direct_out), ==,
                     3.0 * GT_TEST_MIB);
  /* One success, and its remote candidate is reflexive (the NAT's address). */
  for (guint i = 0; i < G_N_ELEMENTS (local_types); i++)
    for (guint j = 0; j < G_N_ELEMENTS (reflexive); j++)
      {
        const char *labels[] = { "type", local_types[i], "remote_type", reflexive[j], NULL };

        successes += metric (metrics_port, "gt_connect_p2p_successes_total", labels);
      }
  g_assert_cmpfloat (successes, ==, 1);
}

/* UDP dropped between the routers: P2P fails and the relay carries everything, from the first
 * connection on. UDP back: the next attempt reaches the direct path, which takes the new
 * connections while the relayed one goes on. UDP gone again: the direct path goes down and new
 * connections take the relay. */
static void
test_udp_blocked (Fixture *f, gconstpointer data)
{
  guint16 local_port, metrics_port;
  const char *direct[] = { "path", "direct", NULL };
  const char *relay[] = { "path", "relay", NULL };
  const char *relay_out[] = { "path", "relay", "direction", "out", NULL };
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestConn) long_lived = NULL;
  g_autoptr (GtTestConn) busy = NULL;
  g_autoptr (GtTestConn) idle = NULL;
  gint64 deadline;
  guint from = 0;
  GtTestProc *connect;

  SKIP_UNLESS_NETNS ();
  block_udp (TRUE);
  connect = start_all (&local_port, &metrics_port);
  long_lived = gt_test_conn_connect (local_port, &error);
  g_assert_no_error (error);
  echo_on (long_lived, 0, 300000);
  g_free (gt_test_proc_expect_line (connect, "P2P attempt 1 failed", &from, 60000));
  for (guint i = 0; i < 3; i++)
    echo_once (local_port, GT_TEST_MIB);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_streams_total", relay), ==, 4);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_streams_total", direct), ==, 0);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_bytes_total", relay_out), ==,
                     300000 + 3.0 * GT_TEST_MIB);
  g_assert_cmpuint (gt_test_proc_count_matches (connect, "direct path up"), ==, 0);

  /* Upgrade. */
  block_udp (FALSE);
  g_free (gt_test_proc_expect_line (connect, "direct path up", &from, 90000));
  echo_once (local_port, GT_TEST_MIB);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_streams_total", direct), ==, 1);
  echo_on (long_lived, 1000, 300000);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_streams_total", relay), ==, 4);

  /* Two more direct connections: one carries bytes, one stays silent. */
  busy = gt_test_conn_connect (local_port, &error);
  g_assert_no_error (error);
  echo_on (busy, 0, 1000);
  idle = gt_test_conn_connect (local_port, &error);
  g_assert_no_error (error);
  deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
  while (metric (metrics_port, "gt_connect_streams_total", direct) < 3
         && g_get_monotonic_time () < deadline)
    g_usleep (20000);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_streams_total", direct), ==, 3);

  /* Fallback. */
  block_udp (TRUE);
  g_free (gt_test_proc_expect_line (connect, "direct path [0-9]+ down", &from, 90000));
  echo_once (local_port, GT_TEST_MIB);
  echo_on (long_lived, 2000, 300000);
  /* The silent one was moved to the relay and works; the busy one was closed. */
  echo_on (idle, 3000, 200000);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_streams_retried_total", NULL), ==, 1);
  g_assert_cmpfloat (metric (metrics_port, "gt_connect_streams_total", relay), ==, 6);
  if (!gt_test_conn_read_to_eof (busy, TRUE, gt_test_deadline_in (GT_TEST_WAIT_MS), &error))
    gt_test_fail ("the busy direct connection was not closed: %s", error->message);
}

int
main (int argc, char **argv)
{
  g_autoptr (GError) error = NULL;

  in_netns = topology_make (&error);
  if (!in_netns)
    skip_reason
        = g_strdelimit (g_strdup_printf ("no NAT topology: %s", error->message), "\r\n", ' ');
  gt_test_init (&argc, &argv, PATTERN_SIZE);
  g_test_add ("/gt/connect/nat/direct", Fixture, NULL, fixture_setup, test_direct,
              fixture_teardown);
  g_test_add ("/gt/connect/nat/udp-blocked", Fixture, NULL, fixture_setup, test_udp_blocked,
              fixture_teardown);
  return gt_test_run ();
}
