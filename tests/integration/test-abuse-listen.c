/* Integration tests of the listener under hostile peers: connections that never finish their
 * handshake, fd exhaustion, partial PROXY headers (issue 15; the 431 for an oversized request
 * head is in test-relay.c's errors test). */
#define G_LOG_DOMAIN "gt-test"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-frame.h"
#include "gt-test-utils.h"

#define PATTERN_SIZE (64 * 1024)
#define CLIENT_ID "alice"
#define CLIENT_SECRET "s3cret-alice"
#define PREFIX "web"
#define HOST PREFIX ".example.com"
/* Attackers connect from these loopback addresses; gt clients connect from 127.0.0.1. */
#define ATTACKER_IP "127.0.0.2"
#define TRUSTED_IP "127.0.0.3"

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

/* ------------------------------------------------------------------------------------------ */
/* gt processes and what /proc says about them */

static GtTestProc *
start_server (GPtrArray *extra, guint16 *port_out)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autofree char *line = NULL;
  GtTestProc *p;

  gt_test_args_addv (args, "server", "--id", CLIENT_ID, "--secret", CLIENT_SECRET, "--addr",
                     "127.0.0.1:0", NULL);
  for (guint i = 0; extra != NULL && i < extra->len; i++)
    gt_test_args_add (args, "%s", (const char *)extra->pdata[i]);
  p = gt_test_spawn_gt ("server", args);
  line = gt_test_proc_expect_line (p, "listening on 127\\.0\\.0\\.1:[0-9]+", NULL, GT_TEST_WAIT_MS);
  *port_out = (guint16)gt_test_capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");
  return p;
}

/* A client serving PREFIX from a local HTTP service; waits for its tunnel. */
static GtTestProc *
start_client (guint16 server_port)
{
  GtTestHttp *h = gt_test_http_start ("svc", 0, NULL);
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  GtTestProc *p;
  g_autofree char *line = NULL;

  gt_test_args_addv (args, "client", "--id", CLIENT_ID, "--secret", CLIENT_SECRET,
                     "--reconnectDelay", "200ms", "--remote", NULL);
  gt_test_args_add (args, "tcp://127.0.0.1:%u", server_port);
  gt_test_args_add (args, "--local");
  gt_test_args_add (args, "http://127.0.0.1:%u", h->port);
  gt_test_args_addv (args, "--hostPrefix", PREFIX, NULL);
  p = gt_test_spawn_gt ("client", args);
  line = gt_test_proc_expect_line (p, "tunnel started", NULL, GT_TEST_WAIT_MS);
  return p;
}

static void
expect_request_ok (guint16 port, const char *what)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) r
      = gt_test_http_request (port, "GET", "/whoami", HOST, NULL, 0, &error);

  if (r == NULL)
    gt_test_fail ("%s: %s", what, error->message);
  gt_test_expect_response (r, error, 200);
}

/* VmRSS in KiB. */
static guint64
proc_rss_kib (int pid)
{
  g_autofree char *path = g_strdup_printf ("/proc/%d/status", pid);
  g_autofree char *text = NULL;
  const char *line;

  if (!g_file_get_contents (path, &text, NULL, NULL))
    gt_test_fail ("cannot read %s", path);
  line = strstr (text, "\nVmRSS:");
  if (line == NULL)
    gt_test_fail ("no VmRSS in %s", path);
  return g_ascii_strtoull (line + strlen ("\nVmRSS:"), NULL, 10);
}

/* utime + stime in seconds. */
static double
proc_cpu_seconds (int pid)
{
  g_autofree char *path = g_strdup_printf ("/proc/%d/stat", pid);
  g_autofree char *text = NULL;
  g_auto (GStrv) fields = NULL;
  const char *rest;

  if (!g_file_get_contents (path, &text, NULL, NULL))
    gt_test_fail ("cannot read %s", path);
  rest = strrchr (text, ')');
  g_assert_nonnull (rest);
  /* After "pid (comm)": state is field 3, utime 14, stime 15. */
  fields = g_strsplit (rest + 2, " ", 0);
  g_assert_cmpuint (g_strv_length (fields), >, 13);
  return (double)(g_ascii_strtoull (fields[11], NULL, 10) + g_ascii_strtoull (fields[12], NULL, 10))
         / (double)sysconf (_SC_CLK_TCK);
}

static guint
proc_fd_count (int pid)
{
  g_autofree char *path = g_strdup_printf ("/proc/%d/fd", pid);
  g_autoptr (GDir) dir = g_dir_open (path, 0, NULL);
  guint n = 0;

  g_assert_nonnull (dir);
  while (g_dir_read_name (dir) != NULL)
    n++;
  return n;
}

/* The share of one CPU that pid used over ms of waiting. */
static double
proc_cpu_share (int pid, guint ms)
{
  double cpu0 = proc_cpu_seconds (pid);
  gint64 t0 = g_get_monotonic_time ();

  g_usleep (ms * 1000);
  return (proc_cpu_seconds (pid) - cpu0)
         / ((double)(g_get_monotonic_time () - t0) / G_USEC_PER_SEC);
}

/* ------------------------------------------------------------------------------------------ */
/* Raw sockets from a chosen loopback address */

/* Starts non-blocking connects of n sockets from src_ip to 127.0.0.1:port. */
static GArray *
connect_many (const char *src_ip, guint16 port, guint n)
{
  GArray *fds = g_array_new (FALSE, FALSE, sizeof (int));
  struct sockaddr_in src = { 0 }, dst = { 0 };

  src.sin_family = AF_INET;
  g_assert_cmpint (inet_pton (AF_INET, src_ip, &src.sin_addr), ==, 1);
  dst.sin_family = AF_INET;
  dst.sin_port = htons (port);
  g_assert_cmpint (inet_pton (AF_INET, "127.0.0.1", &dst.sin_addr), ==, 1);
  for (guint i = 0; i < n; i++)
    {
      int fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

      g_assert_cmpint (fd, >=, 0);
      if (bind (fd, (struct sockaddr *)&src, sizeof src) < 0)
        gt_test_fail ("bind %s: %s", src_ip, g_strerror (errno));
      if (connect (fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS)
        gt_test_fail ("connect: %s", g_strerror (errno));
      g_array_append_val (fds, fd);
    }
  return fds;
}

static void
close_all (GArray *fds)
{
  for (guint i = 0; i < fds->len; i++)
    if (g_array_index (fds, int, i) >= 0)
      close (g_array_index (fds, int, i));
  g_array_set_size (fds, 0);
}

/* How many of fds the server has closed (EOF or reset readable now). */
static guint
count_closed (GArray *fds)
{
  guint closed = 0;

  for (guint i = 0; i < fds->len; i++)
    {
      struct pollfd pfd = { g_array_index (fds, int, i), POLLIN, 0 };
      char c;

      if (poll (&pfd, 1, 0) == 1)
        {
          gssize r = recv (pfd.fd, &c, 1, MSG_DONTWAIT);

          if (r == 0 || (r < 0 && errno != EAGAIN))
            closed++;
        }
    }
  return closed;
}

/* Waits until at least n of fds are closed, or for ms (scaled under valgrind, where the server
 * needs longer to close them). */
static void
wait_closed (GArray *fds, guint n, guint ms)
{
  gint64 deadline = gt_test_deadline_in (ms);

  while (count_closed (fds) < n && g_get_monotonic_time () < deadline)
    g_usleep (20 * 1000);
}

/* Writes data to every socket of fds (non-blocking, all at once) until each has taken it all or
 * failed (a closed connection). */
static void
send_to_all (GArray *fds, const guint8 *data, gsize len)
{
  g_autofree gsize *sent = g_new0 (gsize, fds->len);
  g_autofree gboolean *done = g_new0 (gboolean, fds->len);
  gint64 deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
  guint left = fds->len;

  while (left > 0)
    {
      if (g_get_monotonic_time () > deadline)
        gt_test_fail ("sending to %u connections: %u still pending", fds->len, left);
      for (guint i = 0; i < fds->len; i++)
        {
          gssize w;

          if (done[i])
            continue;
          w = send (g_array_index (fds, int, i), data + sent[i], len - sent[i],
                    MSG_NOSIGNAL | MSG_DONTWAIT);
          if (w > 0)
            sent[i] += w;
          if ((w < 0 && errno != EAGAIN && errno != ENOTCONN) || sent[i] == len)
            {
              done[i] = TRUE;
              left--;
            }
        }
      if (left > 0)
        g_usleep (2000);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* 1. Many connections each one byte short of a 64 KiB HELLO: memory stays bounded, a legitimate
 * client still connects, and memory comes back when they close. */

#define PARTIAL_HELLOS 1500
#define MAX_PER_ADDRESS 256 /* maxPendingPerAddress's default */
#if defined(__SANITIZE_ADDRESS__)
/* A sanitized gt (the ASan suite) carries redzones and a quarantine of freed blocks: 87 MB here
 * with the fix. The plain build's bound is the one that catches the defect (69 MB before the fix);
 * under ASan this run checks memory errors and only a gross leak. */
#define RSS_BOUND_KIB (160 * 1024)
#else
#define RSS_BOUND_KIB (48 * 1024)
#endif

static void
test_partial_hellos (Fixture *f, gconstpointer data)
{
  g_autoptr (GArray) fds = NULL;
  g_autofree guint8 *hello = g_malloc0 (GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE + 65535);
  gsize hello_len = GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE + 65535 - 1;
  GtTestProc *server;
  struct rlimit rl;
  guint64 rss, rss_before;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  /* The attackers' sockets (and the server's, inherited) need more than 1024 fds. */
  g_assert_cmpint (getrlimit (RLIMIT_NOFILE, &rl), ==, 0);
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < PARTIAL_HELLOS + 200)
    {
      g_test_skip ("RLIMIT_NOFILE too low");
      return;
    }
  rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? 65536 : MIN (rl.rlim_max, 65536);
  g_assert_cmpint (setrlimit (RLIMIT_NOFILE, &rl), ==, 0);

  server = start_server (NULL, &port);
  rss_before = proc_rss_kib (server->pid);
  gt_preface_encode (hello);
  gt_frame_header_encode (hello + GT_PREFACE_SIZE, GT_FRAME_HELLO, 0, 0, 65535);

  /* 1000 from one address (maxPendingPerAddress holds it), 500 from five more (the buffer
   * budget of all pending connections holds them). */
  fds = connect_many (ATTACKER_IP, port, PARTIAL_HELLOS - 500);
  for (guint i = 0; i < 5; i++)
    {
      g_autofree char *ip = g_strdup_printf ("127.0.0.%u", 10 + i);
      g_autoptr (GArray) more = connect_many (ip, port, 100);

      g_array_append_vals (fds, more->data, more->len);
    }
  send_to_all (fds, hello, hello_len);
  wait_closed (fds, PARTIAL_HELLOS - 500 - MAX_PER_ADDRESS, 500);
  rss = proc_rss_kib (server->pid);
  g_test_message ("server RSS %" G_GUINT64_FORMAT " KiB before, %" G_GUINT64_FORMAT
                  " KiB with %u partial HELLOs",
                  rss_before, rss, PARTIAL_HELLOS);
  if (rss > RSS_BOUND_KIB && gt_test_checks_resources ())
    gt_test_fail ("server RSS %" G_GUINT64_FORMAT " KiB with %u partial HELLOs (bound %u KiB)", rss,
                  PARTIAL_HELLOS, RSS_BOUND_KIB);
  /* Most were closed at once (maxPendingPerAddress), with few log lines. */
  g_assert_cmpuint (count_closed (fds), >=, PARTIAL_HELLOS - 500 - MAX_PER_ADDRESS);
  g_assert_cmpuint (gt_test_proc_count_matches (server, "closed before its handshake"), <=, 2);

  /* A legitimate client from another address still gets its tunnel and serves requests. */
  start_client (port);
  expect_request_ok (port, "request while the partial HELLOs are held");

  close_all (fds);
  g_usleep (1000 * 1000);
  rss = proc_rss_kib (server->pid);
  g_test_message ("server RSS %" G_GUINT64_FORMAT " KiB after they closed", rss);
  if (rss > RSS_BOUND_KIB && gt_test_checks_resources ())
    gt_test_fail ("server RSS %" G_GUINT64_FORMAT " KiB after the partial HELLOs closed", rss);
  expect_request_ok (port, "request after the partial HELLOs closed");
}

/* ------------------------------------------------------------------------------------------ */
/* 2. Pre-auth caps in total and per address, and the handshake timeout. */

static void
test_pending_caps (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) extra = gt_test_args_new ();
  g_autoptr (GArray) a = NULL, b = NULL, c = NULL;
  GtTestProc *server;
  guint16 port;
  gint64 t0, deadline;

  GT_TEST_REQUIRE_GT ();
  gt_test_args_addv (extra, "--maxPendingConnections", "20", "--maxPendingPerAddress", "8",
                     "--handshakeTimeout", "2s", "--timeout", "60s", NULL);
  server = start_server (extra, &port);

  t0 = g_get_monotonic_time ();
  a = connect_many ("127.0.0.2", port, 12);
  g_usleep (300 * 1000);
  b = connect_many ("127.0.0.3", port, 12);
  g_usleep (300 * 1000);
  c = connect_many ("127.0.0.4", port, 12);
  g_usleep (500 * 1000);
  /* 8 of each address are kept, until 20 in all. */
  g_assert_cmpuint (count_closed (a), ==, 4);
  g_assert_cmpuint (count_closed (b), ==, 4);
  g_assert_cmpuint (count_closed (c), ==, 8);
  g_assert_cmpuint (gt_test_proc_count_matches (server, "closed before its handshake"), ==, 1);

  /* The held ones go after handshakeTimeout, long before timeout. */
  deadline = gt_test_deadline_in (8000);
  while (count_closed (a) + count_closed (b) + count_closed (c) < 20)
    {
      if (g_get_monotonic_time () > deadline)
        gt_test_fail ("idle connections were not closed by the handshake timeout");
      g_usleep (50 * 1000);
    }
  g_test_message ("idle connections closed after %.1f s",
                  (double)(g_get_monotonic_time () - t0) / G_USEC_PER_SEC);
  g_assert_cmpint (g_get_monotonic_time () - t0, >=, 1500 * 1000);

  /* Served again: a request (no client: 404). */
  {
    g_autoptr (GError) error = NULL;
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "GET", "/", "nobody.example.com", NULL, 0, &error);

    gt_test_expect_response (r, error, 404);
  }
  close_all (a);
  close_all (b);
  close_all (c);
}

/* ------------------------------------------------------------------------------------------ */
/* 3. Out of fds: no spin, few log lines, existing streams work, new connections once fds free. */

/* Leaves the server 8 free fds and connects many more than that to port: it must rest (no CPU
 * spin, few log lines). Returns the connections. */
static GArray *
exhaust_fds (GtTestProc *server, guint16 port)
{
  struct rlimit rl;
  GArray *idle;
  guint lines;
  double share;

  rl.rlim_cur = rl.rlim_max = proc_fd_count (server->pid) + 8;
  if (prlimit (server->pid, RLIMIT_NOFILE, &rl, NULL) < 0)
    gt_test_fail ("prlimit: %s", g_strerror (errno));
  idle = connect_many (ATTACKER_IP, port, 40);
  g_usleep (500 * 1000);
  lines = gt_test_proc_line_count (server);
  share = proc_cpu_share (server->pid, 3000);
  lines = gt_test_proc_line_count (server) - lines;
  g_test_message ("out of fds (port %u): server CPU %.0f %%, %u log lines in 3 s", port,
                  share * 100, lines);
  /* Spinning shows as 30-100 % (less when its log pipe is the bottleneck); resting is ~0. */
  if (share > 0.2 && gt_test_checks_resources ())
    gt_test_fail ("server used %.0f %% CPU while out of fds", share * 100);
  g_assert_cmpuint (lines, <=, 5);
  g_assert_cmpuint (gt_test_proc_count_matches (server, "Too many open files"), >=, 1);
  return idle;
}

static void
test_fd_exhaustion (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) extra = NULL;
  g_autoptr (GArray) idle = NULL;
  g_autoptr (GtTestConn) c = NULL;
  g_autoptr (GError) error = NULL;
  GtTestProc *server;
  guint16 port;
  gint64 deadline;
  gboolean ok = FALSE;

  GT_TEST_REQUIRE_GT ();
  /* A long handshake timeout: the attacker's connections do not go away by themselves during the
   * test, so a new user only gets in if the server makes room. */
  extra = g_ptr_array_new ();
  g_ptr_array_add (extra, "--handshakeTimeout");
  g_ptr_array_add (extra, "120s");
  server = start_server (extra, &port);
  start_client (port);

  /* An existing user connection (keep-alive). */
  c = gt_test_conn_connect (port, &error);
  g_assert_no_error (error);
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_conn_request (c, "GET", "/whoami", HOST, NULL, 0, GT_TEST_WAIT_MS, &error);

    gt_test_expect_response (r, error, 200);
  }

  idle = exhaust_fds (server, port);

  /* The existing connection is still served. */
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_conn_request (c, "GET", "/whoami", HOST, NULL, 0, GT_TEST_WAIT_MS, &error);

    gt_test_expect_response (r, error, 200);
  }

  /* A new user from another address gets in while the attacker still holds every fd: the oldest
   * handshake of the attacker's address gives way. */
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "GET", "/whoami", HOST, NULL, 0, &error);

    gt_test_expect_response (r, error, 200);
  }

  /* Once fds free up, new connections are accepted again. */
  close_all (idle);
  deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
  while (!ok && g_get_monotonic_time () < deadline)
    {
      g_autoptr (GError) e = NULL;
      g_autoptr (GtTestHttpResponse) r
          = gt_test_http_request (port, "GET", "/whoami", HOST, NULL, 0, &e);

      ok = r != NULL && r->status == 200;
      if (!ok)
        g_usleep (100 * 1000);
    }
  if (!ok)
    gt_test_fail ("no new connection was served after the fds were freed");
}

/* The same on a client's TCP port (its own accept loop). */
static void
test_fd_exhaustion_tcp_port (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) extra = gt_test_args_new ();
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autoptr (GArray) idle = NULL;
  GtTestTcpService *echo = gt_test_tcp_echo_start ();
  GtTestProc *server, *client;
  g_autofree char *line = NULL;
  guint16 port, first, last;
  gint64 deadline;
  gboolean ok = FALSE;

  GT_TEST_REQUIRE_GT ();
  gt_test_free_port_range (1, &first, &last);
  gt_test_args_add (extra, "--tcpRange");
  gt_test_args_add (extra, "%u-%u", first, last);
  server = start_server (extra, &port);
  gt_test_args_addv (args, "client", "--id", CLIENT_ID, "--secret", CLIENT_SECRET, "--remote",
                     NULL);
  gt_test_args_add (args, "tcp://127.0.0.1:%u", port);
  gt_test_args_add (args, "--local");
  gt_test_args_add (args, "tcp://127.0.0.1:%u", echo->port);
  gt_test_args_add (args, "--remoteTCPPort");
  gt_test_args_add (args, "%u", first);
  client = gt_test_spawn_gt ("client", args);
  line = gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS);

  idle = exhaust_fds (server, first);

  close_all (idle);
  deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
  while (!ok && g_get_monotonic_time () < deadline)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GtTestConn) c = gt_test_conn_connect (first, &error);

      while (c != NULL && c->in->len < strlen (GT_TEST_TCP_BANNER)
             && gt_test_conn_fill (c, gt_test_deadline_in (1000), NULL) > 0)
        ;
      ok = c != NULL && c->in->len >= strlen (GT_TEST_TCP_BANNER);
      if (!ok)
        g_usleep (100 * 1000);
    }
  if (!ok)
    gt_test_fail ("the tcp port served no new connection after the fds were freed");
}

/* ------------------------------------------------------------------------------------------ */
/* 4. A partial PROXY header from a trusted source: no spin, EOF seen at once. */

static int
connect_one (const char *src_ip, guint16 port)
{
  g_autoptr (GArray) fds = connect_many (src_ip, port, 1);
  int fd = g_array_index (fds, int, 0);
  struct pollfd pfd = { fd, POLLOUT, 0 };

  g_assert_cmpint (poll (&pfd, 1, 5000), ==, 1);
  g_array_set_size (fds, 0);
  return fd;
}

static void
test_proxy_partial (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) extra = gt_test_args_new ();
  static const char partial[] = "PROXY TCP4 203.0.113.7 198.51";
  static const char rest[]
      = ".100.9 40001 8080\r\nGET / HTTP/1.1\r\nHost: nobody.example.com\r\n\r\n";
  GtTestProc *server;
  guint16 port;
  guint fds;
  double share;
  gint64 t0, deadline;
  int fd;

  GT_TEST_REQUIRE_GT ();
  gt_test_args_addv (extra, "--proxyProtocol", "--proxyProtocolTrustedCIDRs", TRUSTED_IP "/32",
                     "--handshakeTimeout", "3s", "--timeout", "60s", NULL);
  server = start_server (extra, &port);
  fds = proc_fd_count (server->pid);

  /* Partial header, then close: dropped at once. */
  fd = connect_one (TRUSTED_IP, port);
  g_assert_cmpint (send (fd, partial, strlen (partial), MSG_NOSIGNAL), ==, strlen (partial));
  g_usleep (200 * 1000);
  share = proc_cpu_share (server->pid, 1000);
  g_test_message ("partial PROXY header: server CPU %.0f %%", share * 100);
  if (share > 0.5 && gt_test_checks_resources ())
    gt_test_fail ("server used %.0f %% CPU on a partial PROXY header", share * 100);
  close (fd);
  deadline = gt_test_deadline_in (1000);
  while (proc_fd_count (server->pid) > fds)
    {
      if (g_get_monotonic_time () > deadline)
        gt_test_fail ("the server kept a closed connection with a partial PROXY header");
      g_usleep (20 * 1000);
    }
  share = proc_cpu_share (server->pid, 500);
  if (gt_test_checks_resources ())
    g_assert_cmpfloat (share, <, 0.5);

  /* A header in two parts is read whole, and what follows is the request. */
  fd = connect_one (TRUSTED_IP, port);
  g_assert_cmpint (send (fd, partial, strlen (partial), MSG_NOSIGNAL), ==, strlen (partial));
  g_usleep (200 * 1000);
  g_assert_cmpint (send (fd, rest, strlen (rest), MSG_NOSIGNAL), ==, strlen (rest));
  {
    g_autoptr (GtTestConn) c = g_new0 (GtTestConn, 1);
    g_autoptr (GError) error = NULL;
    g_autoptr (GtTestHttpResponse) r = NULL;

    c->fd = fd;
    c->in = g_byte_array_new ();
    r = gt_test_conn_read_response (c, gt_test_deadline_in (GT_TEST_WAIT_MS), &error);
    gt_test_expect_response (r, error, 404);
  }

  /* Partial header held: low CPU until the handshake timeout closes it. */
  fd = connect_one (TRUSTED_IP, port);
  t0 = g_get_monotonic_time ();
  g_assert_cmpint (send (fd, partial, strlen (partial), MSG_NOSIGNAL), ==, strlen (partial));
  share = proc_cpu_share (server->pid, 1500);
  if (share > 0.5 && gt_test_checks_resources ())
    gt_test_fail ("server used %.0f %% CPU on a held partial PROXY header", share * 100);
  {
    struct pollfd pfd = { fd, POLLIN, 0 };
    char c;

    g_assert_cmpint (poll (&pfd, 1, 8000), ==, 1);
    g_assert_cmpint (recv (fd, &c, 1, 0), <=, 0);
  }
  g_test_message ("held partial PROXY header closed after %.1f s",
                  (double)(g_get_monotonic_time () - t0) / G_USEC_PER_SEC);
  close (fd);
}

/* Behind a trusted proxy, maxPendingPerAddress counts the addresses of the PROXY headers, not
 * the proxy's own. */
static void
test_proxy_per_address (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) extra = gt_test_args_new ();
  g_autoptr (GArray) fds = g_array_new (FALSE, FALSE, sizeof (int));
  g_autoptr (GArray) other = g_array_new (FALSE, FALSE, sizeof (int));
  static const char header[] = "PROXY TCP4 203.0.113.7 198.51.100.9 40001 8080\r\n";
  static const char header2[] = "PROXY TCP4 203.0.113.8 198.51.100.9 40002 8080\r\n";
  GtTestProc *server;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  gt_test_args_addv (extra, "--proxyProtocol", "--proxyProtocolTrustedCIDRs", TRUSTED_IP "/32",
                     "--maxPendingPerAddress", "3", NULL);
  server = start_server (extra, &port);
  for (guint i = 0; i < 5; i++)
    {
      int fd = connect_one (TRUSTED_IP, port);

      g_assert_cmpint (send (fd, header, strlen (header), MSG_NOSIGNAL), ==, strlen (header));
      g_array_append_val (fds, fd);
    }
  for (guint i = 0; i < 3; i++)
    {
      int fd = connect_one (TRUSTED_IP, port);

      g_assert_cmpint (send (fd, header2, strlen (header2), MSG_NOSIGNAL), ==, strlen (header2));
      g_array_append_val (other, fd);
    }
  g_usleep (500 * 1000);
  /* 3 of 203.0.113.7's are kept, and all of 203.0.113.8's: 6 from the proxy itself. */
  g_assert_cmpuint (count_closed (fds), ==, 2);
  g_assert_cmpuint (count_closed (other), ==, 0);
  g_assert_cmpuint (gt_test_proc_count_matches (server, "from 203\\.0\\.113\\.7 are in their"), ==,
                    1);
  close_all (fds);
  close_all (other);
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, PATTERN_SIZE);
  g_test_add ("/gt/abuse/listen/partial-hellos", Fixture, NULL, fixture_setup, test_partial_hellos,
              fixture_teardown);
  g_test_add ("/gt/abuse/listen/pending-caps", Fixture, NULL, fixture_setup, test_pending_caps,
              fixture_teardown);
  g_test_add ("/gt/abuse/listen/fd-exhaustion", Fixture, NULL, fixture_setup, test_fd_exhaustion,
              fixture_teardown);
  g_test_add ("/gt/abuse/listen/fd-exhaustion-tcp-port", Fixture, NULL, fixture_setup,
              test_fd_exhaustion_tcp_port, fixture_teardown);
  g_test_add ("/gt/abuse/listen/proxy-partial", Fixture, NULL, fixture_setup, test_proxy_partial,
              fixture_teardown);
  g_test_add ("/gt/abuse/listen/proxy-per-address", Fixture, NULL, fixture_setup,
              test_proxy_per_address, fixture_teardown);
  return gt_test_run ();
}
