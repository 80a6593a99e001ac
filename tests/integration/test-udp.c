/* test-udp.c (integration): udp:// services with real gt processes on 127.0.0.1: datagrams of
 * 1, 1000, 1200, 9000 and 65000 bytes from two user sources reach a UDP echo service in the test
 * through tcp://, ws:// and quic:// tunnels, and each source gets its own replies byte for byte;
 * udpNumber, udpTimeout, the flow bound, the speed limit and a HELLO without the capability. */
#define G_LOG_DOMAIN "gt-test"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gio.h>

#include "gt-test-utils.h"

#define CLIENT_ID "udpc"
#define CLIENT_SECRET "s3cret-udp"
#define PATTERN_SIZE (70 * 1024)
/* How long one datagram's echo may take before it is sent again (UDP may drop). */
#define REPLY_MS 2000
#define TRIES 5

/* 1000 bytes fit a QUIC packet of the path (a QUIC DATAGRAM frame); the others do not. */
static const gsize sizes[] = { 1, 1000, 1200, 9000, 65000 };

typedef struct
{
  const char *tmpdir;
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  gt_test_setup ();
  f->tmpdir = gt_test_tmpdir ();
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  gt_test_teardown ();
}

/* ------------------------------------------------------------------------------------------ */
/* Loopback UDP sockets and the echo service */

static int
udp_socket (guint16 *port)
{
  struct sockaddr_in sa = { 0 };
  socklen_t len = sizeof sa;
  int fd = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int size = 4 * 1024 * 1024;

  g_assert_cmpint (fd, >=, 0);
  (void) setsockopt (fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  (void) setsockopt (fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  g_assert_cmpint (bind (fd, (struct sockaddr *) &sa, sizeof sa), ==, 0);
  g_assert_cmpint (getsockname (fd, (struct sockaddr *) &sa, &len), ==, 0);
  if (port != NULL)
    *port = ntohs (sa.sin_port);
  return fd;
}

typedef struct
{
  int fd;
  guint16 port;
  GThread *thread;
  gint stop;
  gint echoed;
  gint sources; /* distinct source ports seen */
} Echo;

static gpointer
echo_thread (gpointer data)
{
  Echo *e = data;
  g_autofree guint8 *buf = g_malloc (65536);
  g_autoptr (GHashTable) seen = g_hash_table_new (NULL, NULL);

  while (!g_atomic_int_get (&e->stop))
    {
      struct pollfd pfd = { e->fd, POLLIN, 0 };
      struct sockaddr_in from;
      socklen_t from_len = sizeof from;
      ssize_t n;

      if (poll (&pfd, 1, 50) <= 0)
        continue;
      n = recvfrom (e->fd, buf, 65536, 0, (struct sockaddr *) &from, &from_len);
      if (n < 0)
        continue;
      if (g_hash_table_add (seen, GUINT_TO_POINTER (ntohs (from.sin_port))))
        g_atomic_int_inc (&e->sources);
      if (sendto (e->fd, buf, n, 0, (struct sockaddr *) &from, from_len) == n)
        g_atomic_int_inc (&e->echoed);
    }
  return NULL;
}

static void
echo_start (Echo *e)
{
  memset (e, 0, sizeof *e);
  e->fd = udp_socket (&e->port);
  e->thread = g_thread_new ("udp-echo", echo_thread, e);
}

static void
echo_stop (Echo *e)
{
  if (e->thread == NULL)
    return;
  g_atomic_int_set (&e->stop, 1);
  g_thread_join (e->thread);
  e->thread = NULL;
  close (e->fd);
}

/* The bytes source `who` sends as a datagram of len bytes: each source and size its own. */
static guint8 *
payload (guint who, gsize len)
{
  const guint8 *pattern = gt_test_pattern ();
  guint8 *p = g_malloc (MAX (len, 1));

  for (gsize i = 0; i < len; i++)
    p[i] = pattern[(i + who * 977 + len) % PATTERN_SIZE] ^ (guint8) (who * 0x5b);
  return p;
}

/* Waits up to ms for a datagram on fd; its length, or -1 when none came. */
static gssize
recv_within (int fd, guint8 *buf, gsize size, guint ms)
{
  gint64 deadline = gt_test_deadline_in (ms);

  for (;;)
    {
      struct pollfd pfd = { fd, POLLIN, 0 };
      gint64 left = (deadline - g_get_monotonic_time ()) / 1000;

      if (left <= 0)
        return -1;
      if (poll (&pfd, 1, (int) left) <= 0)
        continue;
      return recv (fd, buf, size, MSG_DONTWAIT);
    }
}

/* Every size from both sources, interleaved: each source's echo is its own bytes. */
static void
check_echoes (guint16 public_port)
{
  struct sockaddr_in to = { 0 };
  int fds[2];
  g_autofree guint8 *buf = g_malloc (65536);

  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  to.sin_port = htons (public_port);
  fds[0] = udp_socket (NULL);
  fds[1] = udp_socket (NULL);
  for (guint i = 0; i < G_N_ELEMENTS (sizes); i++)
    {
      g_autofree guint8 *want0 = payload (0, sizes[i]);
      g_autofree guint8 *want1 = payload (1, sizes[i]);
      guint8 *want[2] = { want0, want1 };
      gboolean done[2] = { FALSE, FALSE };

      for (guint t = 0; t < TRIES && !(done[0] && done[1]); t++)
        {
          for (guint w = 0; w < 2; w++)
            if (!done[w])
              g_assert_cmpint (sendto (fds[w], want[w], sizes[i], 0, (struct sockaddr *) &to,
                                       sizeof to), ==, (gssize) sizes[i]);
          for (guint w = 0; w < 2; w++)
            {
              g_autofree char *what = NULL;
              gssize n;

              if (done[w])
                continue;
              n = recv_within (fds[w], buf, 65536, REPLY_MS);
              if (n < 0)
                {
                  g_test_message ("source %u: no echo of %" G_GSIZE_FORMAT " bytes (try %u)", w,
                                  sizes[i], t + 1);
                  continue;
                }
              what = g_strdup_printf ("echo of %" G_GSIZE_FORMAT " bytes to source %u",
                                      sizes[i], w);
              gt_test_check_bytes (what, buf, n, want[w], sizes[i]);
              done[w] = TRUE;
            }
        }
      if (!done[0] || !done[1])
        gt_test_fail ("no echo of %" G_GSIZE_FORMAT " bytes after %u tries", sizes[i], TRIES);
      /* An earlier try's duplicate may still come: drain it before the next size. */
      for (guint w = 0; w < 2; w++)
        while (recv_within (fds[w], buf, 65536, 50) >= 0)
          ;
    }
  close (fds[0]);
  close (fds[1]);
}

/* ------------------------------------------------------------------------------------------ */
/* gt processes */

typedef struct
{
  GtTestProc *proc;
  guint16 addr_port;
  guint16 quic_port;
  guint16 api_port;
} Server;

/* The value of the sample "name" or "name{labels}" in the server's /metrics; -1 when absent. */
static double
metric (Server *s, const char *sample)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) r
      = gt_test_http_request (s->api_port, "GET", "/metrics", "127.0.0.1", NULL, 0, &error);
  g_autofree char *text = NULL;
  g_autofree char *needle = g_strdup_printf ("\n%s ", sample);
  const char *at;

  gt_test_expect_response (r, error, 200);
  text = g_strdup_printf ("\n%.*s", (int) r->body->len, (const char *) r->body->data);
  at = strstr (text, needle);
  return at != NULL ? g_ascii_strtod (at + strlen (needle), NULL) : -1;
}

static guint16
wait_listen_port (GtTestProc *p, const char *suffix_regex)
{
  g_autofree char *regex
      = g_strdup_printf ("listening on 127\\.0\\.0\\.1:([0-9]+)%s$", suffix_regex);
  g_autofree char *line = gt_test_proc_expect_line (p, regex, NULL, GT_TEST_WAIT_MS);

  return (guint16) gt_test_capture_uint (line, regex);
}

/* udp_number 0: no limit, and flows forgotten after 1 s idle (the timeout test). */
static void
start_server_full (Fixture *f, gboolean quic, guint udp_number, const char *speed, Server *out)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  guint16 first, last;

  memset (out, 0, sizeof *out);
  gt_test_free_port_range (4, &first, &last);
  out->api_port = gt_test_free_port ();
  gt_test_args_addv (args, "server", "--id", CLIENT_ID, "--secret", CLIENT_SECRET, "--addr",
                     "127.0.0.1:0", "--udpTimeout", udp_number == 0 ? "1s" : "5s", NULL);
  gt_test_args_add (args, "--apiAddr=127.0.0.1:%u", out->api_port);
  gt_test_args_add (args, "--udpRanges=%u-%u", first, last);
  gt_test_args_add (args, "--udpNumber=%u", udp_number);
  if (speed != NULL)
    gt_test_args_addv (args, "--speed", speed, NULL);
  if (quic)
    gt_test_args_addv (args, "--tlsAddr", "127.0.0.1:0", "--quicAddr", "127.0.0.1:0", NULL);
  out->proc = gt_test_spawn ("server", NULL, args, f->tmpdir, NULL);
  out->addr_port = wait_listen_port (out->proc, "");
  if (quic)
    out->quic_port = wait_listen_port (out->proc, " \\(UDP, QUIC\\)");
}

static void
start_server (Fixture *f, gboolean quic, guint udp_number, Server *out)
{
  start_server_full (f, quic, udp_number, NULL, out);
}

static GtTestProc *
spawn_client (const char *remote, guint n_services, guint16 echo_port)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();

  gt_test_args_addv (args, "client", "--id", CLIENT_ID, "--secret", CLIENT_SECRET,
                     "--reconnectDelay", "200ms", "--remoteConnections", "2",
                     "--remoteCertInsecure", "--remote", remote, NULL);
  for (guint i = 0; i < n_services; i++)
    {
      gt_test_args_add (args, "--local=udp://127.0.0.1:%u", echo_port);
      gt_test_args_add (args, "--remoteUDPRandom");
    }
  return gt_test_spawn ("client", NULL, args, NULL, NULL);
}

/* scheme: "tcp", "ws" or "quic". */
static void
run_echo (Fixture *f, const char *scheme)
{
  gboolean quic = strcmp (scheme, "quic") == 0;
  Server s;
  Echo echo;
  g_autofree char *remote = NULL;
  g_autofree char *line = NULL;
  GtTestProc *c;
  guint16 public_port;

  GT_TEST_REQUIRE_GT ();
  echo_start (&echo);
  start_server (f, quic, 1, &s);
  remote = g_strdup_printf ("%s://127.0.0.1:%u", scheme, quic ? s.quic_port : s.addr_port);
  c = spawn_client (remote, 1, echo.port);
  if (!gt_test_proc_wait_count (c, "tunnel started: remote=", 2, GT_TEST_WAIT_MS))
    gt_test_fail ("the client's tunnels did not start");
  line = gt_test_proc_expect_line (c, "udp port=[0-9]+ service=0", NULL, GT_TEST_WAIT_MS);
  public_port = (guint16) gt_test_capture_uint (line, "udp port=([0-9]+)");
  g_free (gt_test_proc_expect_line (s.proc, "udp port [0-9]+ opened for service 0", NULL,
                                    GT_TEST_WAIT_MS));

  check_echoes (public_port);
  /* Two user sources: two flows, two sockets toward the service. */
  g_assert_cmpint (g_atomic_int_get (&echo.sources), ==, 2);
  g_assert_cmpint (g_atomic_int_get (&echo.echoed), >=, 2 * (gint) G_N_ELEMENTS (sizes));
  g_assert_cmpfloat (metric (&s, "gt_udp_flows{user=\"" CLIENT_ID "\"}"), ==, 2);
  g_assert_cmpfloat (metric (&s, "gt_udp_flows_total"), ==, 2);
  g_assert_cmpfloat (metric (&s, "gt_udp_datagrams_total{direction=\"in\"}"), >=,
                     2 * G_N_ELEMENTS (sizes));
  g_assert_cmpfloat (metric (&s, "gt_udp_datagrams_total{direction=\"out\"}"), >=,
                     2 * G_N_ELEMENTS (sizes));
  g_assert_cmpuint (gt_test_proc_count_matches (c, "failed|CRITICAL|WARNING"), ==, 0);
  g_assert_cmpuint (gt_test_proc_count_matches (s.proc, "CRITICAL|WARNING"), ==, 0);
  gt_test_stop_all ();
  echo_stop (&echo);
}

static void
test_udp_echo (Fixture *f, gconstpointer data)
{
  run_echo (f, data);
}

/* udpNumber 1: a client with two udp services is refused with the limit's message. */
static void
test_udp_number (Fixture *f, gconstpointer data)
{
  Server s;
  g_autofree char *remote = NULL;
  g_autofree char *line = NULL;
  GtTestProc *c;

  GT_TEST_REQUIRE_GT ();
  start_server (f, FALSE, 1, &s);
  remote = g_strdup_printf ("tcp://127.0.0.1:%u", s.addr_port);
  c = spawn_client (remote, 2, 9);
  line = gt_test_proc_expect_line (c, "server refused: 2 udp services exceed the limit of 1 "
                                   "\\(code 18\\)", NULL, GT_TEST_WAIT_MS);
  g_assert_cmpuint (gt_test_proc_count_matches (c, "tunnel started"), ==, 0);
  g_assert_cmpuint (gt_test_proc_count_matches (s.proc, "udp port [0-9]+ opened"), ==, 0);
  g_assert_cmpfloat (metric (&s, "gt_limit_rejections_total{user=\"" CLIENT_ID
                                 "\",kind=\"udp_number\"}"), >=, 1);
}

/* A HELLO with a udp service but without the DATAGRAM capability (what a peer that cannot carry
 * datagrams would send): ERROR PROTOCOL with a message that says so, and the connection ends. */
static void
test_udp_without_capability (Fixture *f, gconstpointer data)
{
  static const guint8 hello[] = {
    0xF0, 'G', 'T', 1,                                /* preface */
    1, 0, 0, 0, 0, 0, 0, 0, 0, 5 + 11 + 2 + 5,         /* HELLO, no flags, stream 0, length */
    4, 'u', 'd', 'p', 'c',                             /* id */
    10, 's', '3', 'c', 'r', 'e', 't', '-', 'u', 'd', 'p', /* secret */
    0, 1,                                              /* one service */
    4, 1, 0, 0, 0,                                     /* udp, random, port 0, no prefix */
  };
  struct sockaddr_in sa = { 0 };
  g_autofree char *text = NULL;
  guint8 buf[512];
  gsize got = 0;
  Server s;
  int fd;

  GT_TEST_REQUIRE_GT ();
  start_server (f, FALSE, 0, &s);
  /* A plain socket: no proxy lookup (GSocketClient asks libproxy). */
  fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  g_assert_cmpint (fd, >=, 0);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  sa.sin_port = htons (s.addr_port);
  g_assert_cmpint (connect (fd, (struct sockaddr *) &sa, sizeof sa), ==, 0);
  g_assert_cmpint (send (fd, hello, sizeof hello, MSG_NOSIGNAL), ==, (gssize) sizeof hello);
  /* Everything until the server closes. */
  for (;;)
    {
      struct pollfd pfd = { fd, POLLIN, 0 };
      gssize n;

      g_assert_cmpint (poll (&pfd, 1, GT_TEST_WAIT_MS), ==, 1);
      n = recv (fd, buf + got, sizeof buf - got, 0);
      g_assert_cmpint (n, >=, 0);
      if (n == 0 || got + n == sizeof buf)
        break;
      got += n;
    }
  close (fd);
  /* ERROR (10) on stream 0, code PROTOCOL (11), and the reason. */
  g_assert_cmpuint (got, >, 14);
  g_assert_cmpuint (buf[0], ==, 10);
  g_assert_cmpuint ((buf[10] << 8) | buf[11], ==, 11);
  text = g_strndup ((const char *) buf + 14, got - 14);
  g_assert_nonnull (strstr (text, "a udp service needs the DATAGRAM capability"));
  g_assert_cmpuint (gt_test_proc_count_matches (s.proc, "udp port [0-9]+ opened"), ==, 0);
}

/* A flow idle for the server's udpTimeout is forgotten: the source's next datagram is a new
 * flow (a new flow id), which reaches the service from a new socket of the client (whose own
 * flows last the service's localTimeout, 120 s). */
static void
test_udp_timeout (Fixture *f, gconstpointer data)
{
  Server s;
  Echo echo;
  g_autofree char *remote = NULL;
  g_autofree char *line = NULL;
  g_autofree guint8 *buf = g_malloc (65536);
  struct sockaddr_in to = { 0 };
  GtTestProc *c;
  int fd;

  GT_TEST_REQUIRE_GT ();
  echo_start (&echo);
  start_server (f, FALSE, 0, &s);
  remote = g_strdup_printf ("tcp://127.0.0.1:%u", s.addr_port);
  c = spawn_client (remote, 1, echo.port);
  line = gt_test_proc_expect_line (c, "udp port=[0-9]+ service=0", NULL, GT_TEST_WAIT_MS);
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  to.sin_port = htons ((guint16) gt_test_capture_uint (line, "udp port=([0-9]+)"));
  fd = udp_socket (NULL);
  for (guint round = 0; round < 2; round++)
    {
      gssize n = -1;

      for (guint t = 0; t < TRIES && n < 0; t++)
        {
          g_assert_cmpint (sendto (fd, "ping", 4, 0, (struct sockaddr *) &to, sizeof to), ==, 4);
          n = recv_within (fd, buf, 65536, REPLY_MS);
        }
      gt_test_check_bytes ("echo", buf, MAX (n, 0), (const guint8 *) "ping", 4);
      g_assert_cmpint (g_atomic_int_get (&echo.sources), ==, round + 1);
      if (round == 0)
        g_usleep (3 * G_USEC_PER_SEC); /* udpTimeout is 1 s here; the timer ticks every second */
    }
  close (fd);
  gt_test_stop_all ();
  echo_stop (&echo);
}

/* More user sources than a port keeps flows for (1024): the least recently active are forgotten
 * with one log line on each side, every source still gets its echo, and a forgotten source that
 * comes back is a new flow. */
static void
test_udp_many_flows (Fixture *f, gconstpointer data)
{
  const guint n = 1024 + 6;
  Server s;
  Echo echo;
  g_autofree char *remote = NULL;
  g_autofree char *line = NULL;
  g_autofree guint8 *buf = g_malloc (65536);
  g_autofree int *fds = g_new0 (int, n);
  struct sockaddr_in to = { 0 };
  GtTestProc *c;

  GT_TEST_REQUIRE_GT ();
  echo_start (&echo);
  start_server (f, FALSE, 0, &s);
  remote = g_strdup_printf ("tcp://127.0.0.1:%u", s.addr_port);
  c = spawn_client (remote, 1, echo.port);
  line = gt_test_proc_expect_line (c, "udp port=[0-9]+ service=0", NULL, GT_TEST_WAIT_MS);
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  to.sin_port = htons ((guint16) gt_test_capture_uint (line, "udp port=([0-9]+)"));
  for (guint i = 0; i <= n; i++)
    {
      /* The last round is source 0 again, forgotten by then. */
      guint w = i % n;
      char msg[16];
      gssize len = g_snprintf (msg, sizeof msg, "src %u", w), got = -1;

      if (i < n)
        fds[w] = udp_socket (NULL);
      for (guint t = 0; t < TRIES && got < 0; t++)
        {
          g_assert_cmpint (sendto (fds[w], msg, len, 0, (struct sockaddr *) &to, sizeof to), ==,
                           len);
          got = recv_within (fds[w], buf, 65536, REPLY_MS);
        }
      gt_test_check_bytes ("echo", buf, MAX (got, 0), (const guint8 *) msg, len);
    }
  /* A socket per flow: n + 1 of them (source 0 twice), less one if the kernel gave a closed
   * (forgotten) flow's port to a new one. */
  g_assert_cmpint (g_atomic_int_get (&echo.sources), >=, n);
  g_assert_cmpuint (gt_test_proc_count_matches (s.proc, "udp port [0-9]+ has 1024 flows"), ==, 1);
  g_assert_cmpuint (gt_test_proc_count_matches (c, "udp service 0 .* has 1024 flows"), ==, 1);
  for (guint i = 0; i < n; i++)
    close (fds[i]);
  gt_test_stop_all ();
  echo_stop (&echo);
}

/* The server's speed limit holds for datagrams: at 20 kB/s, of 100 kB/s offered about a fifth
 * passes, as whole datagrams; the rest is dropped and counted. */
static void
test_udp_speed (Fixture *f, gconstpointer data)
{
  Server s;
  Echo echo;
  g_autofree char *remote = NULL;
  g_autofree char *line = NULL;
  g_autofree guint8 *buf = g_malloc (65536);
  g_autofree guint8 *want = payload (0, 1000);
  struct sockaddr_in to = { 0 };
  guint echoed = 0;
  gint64 start, elapsed;
  double in;
  gssize n;
  GtTestProc *c;
  int fd;

  GT_TEST_REQUIRE_GT ();
  echo_start (&echo);
  start_server_full (f, FALSE, 0, "20000", &s);
  remote = g_strdup_printf ("tcp://127.0.0.1:%u", s.addr_port);
  c = spawn_client (remote, 1, echo.port);
  line = gt_test_proc_expect_line (c, "udp port=[0-9]+ service=0", NULL, GT_TEST_WAIT_MS);
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  to.sin_port = htons ((guint16) gt_test_capture_uint (line, "udp port=([0-9]+)"));
  fd = udp_socket (NULL);
  start = g_get_monotonic_time ();
  /* 1000 bytes every 10 ms for a second: 100 kB/s offered, five times the limit. */
  for (guint i = 0; i < 100; i++)
    {
      g_assert_cmpint (sendto (fd, want, 1000, 0, (struct sockaddr *) &to, sizeof to), ==, 1000);
      while ((n = recv_within (fd, buf, 65536, 10)) >= 0)
        {
          gt_test_check_bytes ("echo", buf, n, want, 1000);
          echoed++;
        }
    }
  while ((n = recv_within (fd, buf, 65536, 500)) >= 0)
    {
      gt_test_check_bytes ("echo", buf, n, want, 1000);
      echoed++;
    }
  elapsed = g_get_monotonic_time () - start;
  g_test_message ("%u of 100 echoed in %.2f s", echoed, elapsed / 1e6);
  /* The burst (2 kB) and 20 kB/s, each way: about 2 + 20 per second. */
  g_assert_cmpuint (echoed, >=, 10);
  g_assert_cmpuint (echoed, <=, 2 + 1 + elapsed * 20 / G_USEC_PER_SEC);
  /* Every datagram the port took was echoed or dropped, whole. */
  in = metric (&s, "gt_udp_datagrams_total{direction=\"in\"}");
  g_assert_cmpfloat (metric (&s, "gt_udp_datagrams_total{direction=\"dropped\"}"), ==,
                     in - echoed);
  close (fd);
  gt_test_stop_all ();
  echo_stop (&echo);
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, PATTERN_SIZE);
#define ADD(path, func)                                                                         \
  g_test_add ("/gt/integration/udp/" path, Fixture, NULL, fixture_setup, func, fixture_teardown)
  g_test_add ("/gt/integration/udp/tcp", Fixture, "tcp", fixture_setup, test_udp_echo,
              fixture_teardown);
  g_test_add ("/gt/integration/udp/ws", Fixture, "ws", fixture_setup, test_udp_echo,
              fixture_teardown);
  g_test_add ("/gt/integration/udp/quic", Fixture, "quic", fixture_setup, test_udp_echo,
              fixture_teardown);
  ADD ("udp-number", test_udp_number);
  ADD ("without-capability", test_udp_without_capability);
  ADD ("timeout", test_udp_timeout);
  ADD ("many-flows", test_udp_many_flows);
  ADD ("speed", test_udp_speed);
#undef ADD
  return gt_test_run ();
}
