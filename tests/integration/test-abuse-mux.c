/* Integration tests of hostile tunnel peers: floods that make gt write while the peer never reads. */
#define G_LOG_DOMAIN "gt-test"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gio.h>

#include "gt-frame.h"
#include "gt-test-utils.h"

#define SECRET_WEB "web-pw-Hk4Zq8Lm"
#define SECRET_FLOOD "flood-pw-Rb7Wx2Ne"
#define HOST "web.example.com"
/* A flood lasts this long or this many bytes, whichever comes first. A bounded gt reads 256 MB
 * of PINGs in a second or two; an unbounded one queues a PONG per PING and slows down (a send()
 * per frame), but still passes 64 MB well within the time. */
#define FLOOD_MS 15000
#define FLOOD_MAX_BYTES ((guint64) 256 * GT_TEST_MIB)
/* Peak RSS (VmHWM) every gt process must stay under; without the bound it grows with the flood
 * (hundreds of MB). */
#define RSS_LIMIT_KB (64 * 1024)

/* ------------------------------------------------------------------------------------------ */
/* Plain blocking sockets with timeouts, so that every read and write is bounded. */

static int
socket_with_timeouts (void)
{
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct timeval tv = { 0, 200 * 1000 };

  g_assert_cmpint (fd, >=, 0);
  setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

static int
connect_loopback (guint16 port)
{
  int fd = socket_with_timeouts ();
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons (port),
                            .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };

  g_assert_cmpint (connect (fd, (struct sockaddr *)&sa, sizeof sa), ==, 0);
  return fd;
}

/* Writes all of data before the deadline; FALSE when the peer is gone or the time is up. */
static gboolean
send_all (int fd, const guint8 *data, gsize len, gint64 deadline)
{
  while (len > 0 && g_get_monotonic_time () < deadline)
    {
      ssize_t n = send (fd, data, len, MSG_NOSIGNAL);

      if (n > 0)
        {
          data += n;
          len -= n;
        }
      else if (n < 0 && errno != EAGAIN && errno != EINTR)
        return FALSE;
    }
  return len == 0;
}

/* Reads exactly len bytes before the deadline. */
static gboolean
recv_all (int fd, guint8 *data, gsize len, gint64 deadline)
{
  while (len > 0 && g_get_monotonic_time () < deadline)
    {
      ssize_t n = recv (fd, data, len, 0);

      if (n > 0)
        {
          data += n;
          len -= n;
        }
      else if (n == 0 || (errno != EAGAIN && errno != EINTR))
        return FALSE;
    }
  return len == 0;
}

/* Reads one frame; returns its payload (NULL on failure) and its header in h. */
static GByteArray *
recv_frame (int fd, GtFrameHeader *h, gint64 deadline)
{
  guint8 hdr[GT_FRAME_HEADER_SIZE];
  g_autoptr (GByteArray) payload = g_byte_array_new ();

  if (!recv_all (fd, hdr, sizeof hdr, deadline)
      || gt_frame_header_decode (hdr, sizeof hdr, h, NULL) != GT_DECODE_OK)
    return NULL;
  g_byte_array_set_size (payload, h->length);
  if (!recv_all (fd, payload->data, h->length, deadline))
    return NULL;
  return g_steal_pointer (&payload);
}

/* Peak resident memory of a process in kB, from /proc/PID/status. */
static guint64
peak_rss_kb (int pid)
{
  g_autofree char *path = g_strdup_printf ("/proc/%d/status", pid);
  g_autofree char *text = NULL;
  const char *line;

  if (!g_file_get_contents (path, &text, NULL, NULL))
    return 0;
  line = strstr (text, "VmHWM:");
  g_assert_nonnull (line);
  return g_ascii_strtoull (line + strlen ("VmHWM:"), NULL, 10);
}

/* ------------------------------------------------------------------------------------------ */
/* A flood of PINGs on a connected tunnel, in a thread of its own; nothing is ever read. */

typedef struct
{
  int fd;
  guint64 written;
  gint64 elapsed_ms;
  gint done; /* atomic */
} Flood;

static gpointer
flood_worker (gpointer data)
{
  Flood *fl = data;
  g_autoptr (GByteArray) block = g_byte_array_new ();
  static const guint8 opaque[8] = "flooding";
  gint64 start = g_get_monotonic_time ();
  gint64 deadline = start + FLOOD_MS * 1000;

  while (block->len + GT_FRAME_HEADER_SIZE + 8 <= 64 * 1024)
    gt_frame_append_ping (block, FALSE, opaque);
  while (g_get_monotonic_time () < deadline && fl->written < FLOOD_MAX_BYTES)
    {
      ssize_t n = send (fl->fd, block->data, block->len, MSG_NOSIGNAL);

      /* A short write cuts a frame: finish the block so the next one starts on a boundary. */
      if (n > 0 && (gsize)n < block->len)
        {
          if (!send_all (fl->fd, block->data + n, block->len - n, deadline + G_USEC_PER_SEC))
            break;
          n = block->len;
        }
      if (n > 0)
        fl->written += n;
      else if (n < 0 && errno != EAGAIN && errno != EINTR)
        break;
    }
  fl->elapsed_ms = (g_get_monotonic_time () - start) / 1000;
  g_atomic_int_set (&fl->done, TRUE);
  return NULL;
}

/* ------------------------------------------------------------------------------------------ */

/* Every test has the legitimate client's local HTTP service. */
typedef struct
{
  GtTestHttp *local;
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  gt_test_setup ();
  f->local = gt_test_http_start ("web", 0, NULL);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  gt_test_stop_all ();
  /* No secret in any line gt wrote. */
  for (guint i = 0; i < gt_test_procs ()->len; i++)
    {
      GtTestProc *p = gt_test_procs ()->pdata[i];

      g_assert_cmpuint (gt_test_proc_count_matches (p, SECRET_WEB), ==, 0);
      g_assert_cmpuint (gt_test_proc_count_matches (p, SECRET_FLOOD), ==, 0);
    }
  gt_test_teardown ();
}

/* The flood is over: p's peak RSS stayed under the limit and p still runs. */
static void
check_peak_rss (GtTestProc *p, const Flood *fl)
{
  guint64 peak = peak_rss_kb (p->pid);

  g_test_message ("flood: %" G_GUINT64_FORMAT " MB of PINGs in %" G_GINT64_FORMAT
                  " ms; %s peak RSS %" G_GUINT64_FORMAT " kB", fl->written / GT_TEST_MIB,
                  fl->elapsed_ms, p->name, peak);
  g_assert_cmpuint (peak, >, 0);
  if (gt_test_checks_resources ())
    g_assert_cmpuint (peak, <, RSS_LIMIT_KB);
  g_assert_false (gt_test_proc_has_exited (p));
}

static GtTestProc *
start_server (guint16 *port)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autofree char *line = NULL;
  GtTestProc *p;

  gt_test_args_addv (args, "server", "--addr", "127.0.0.1:0", "--id", "web", "--secret",
                     SECRET_WEB, "--id", "flood", "--secret", SECRET_FLOOD, NULL);
  p = gt_test_spawn_gt ("server", args);
  line = gt_test_proc_expect_line (p, "listening on 127\\.0\\.0\\.1:[0-9]+", NULL, GT_TEST_WAIT_MS);
  *port = (guint16)gt_test_capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");
  return p;
}

static GtTestProc *
start_client (guint16 port, GtTestHttp *local)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();

  gt_test_args_addv (args, "client", "--id", "web", "--secret", SECRET_WEB, "--reconnectDelay",
                     "200ms", "--remoteConnections", "1", "--hostPrefix", "web", "--remote", NULL);
  gt_test_args_add (args, "tcp://127.0.0.1:%u", port);
  gt_test_args_add (args, "--local");
  gt_test_args_add (args, "http://127.0.0.1:%u", local->port);
  return gt_test_spawn_gt ("client", args);
}

static void
expect_request_ok (guint16 port)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) r
      = gt_test_http_request (port, "GET", "/bytes?n=100000", HOST, NULL, 0, &error);

  gt_test_expect_response (r, error, 200);
  gt_test_check_bytes ("bytes", r->body->data, r->body->len, gt_test_pattern (), 100000);
}

/* An authenticated tunnel peer floods the server with PINGs and reads nothing: the server's
 * memory stays bounded and a legitimate client's requests keep working meanwhile. */
static void
test_server_ping_flood (Fixture *f, gconstpointer data)
{
  GtTestProc *server, *client;
  guint16 port;
  g_autoptr (GtHello) hello = gt_hello_new ("flood", SECRET_FLOOD);
  g_autoptr (GByteArray) hs = g_byte_array_new ();
  g_autoptr (GByteArray) reply = NULL;
  g_autoptr (GThread) thread = NULL;
  GtFrameHeader h;
  Flood fl = { 0 };
  guint n_requests = 0;
  gint64 max_latency_us = 0;

  GT_TEST_REQUIRE_GT ();
  server = start_server (&port);
  client = start_client (port, f->local);
  g_free (gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS));
  expect_request_ok (port);

  /* The flooder: a real tunnel of the test's own user, after WELCOME. */
  g_byte_array_set_size (hs, GT_PREFACE_SIZE);
  gt_preface_encode (hs->data);
  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, "flood", 0, FALSE);
  g_assert_true (gt_frame_append_hello (hs, hello, NULL));
  fl.fd = connect_loopback (port);
  g_assert_true (send_all (fl.fd, hs->data, hs->len, gt_test_deadline_in (GT_TEST_WAIT_MS)));
  reply = recv_frame (fl.fd, &h, gt_test_deadline_in (GT_TEST_WAIT_MS));
  g_assert_nonnull (reply);
  g_assert_cmpint (h.type, ==, GT_FRAME_WELCOME);

  thread = g_thread_new ("flood", flood_worker, &fl);
  /* Requests one after the other while the flood lasts (it ends by itself within FLOOD_MS). */
  while (!g_atomic_int_get (&fl.done))
    {
      gint64 t0 = g_get_monotonic_time ();

      expect_request_ok (port);
      max_latency_us = MAX (max_latency_us, g_get_monotonic_time () - t0);
      n_requests++;
      g_usleep (10 * 1000);
    }
  g_thread_join (g_steal_pointer (&thread));
  g_test_message ("%u requests during the flood, slowest %" G_GINT64_FORMAT " ms", n_requests,
                  max_latency_us / 1000);
  check_peak_rss (server, &fl);
  expect_request_ok (port);
  close (fl.fd);
}

/* ------------------------------------------------------------------------------------------ */
/* A hostile server made by the test: it takes one tunnel, reads its HELLO, then misbehaves. */

typedef enum
{
  HOSTILE_FLOOD,    /* WELCOME, then PINGs without reading */
  HOSTILE_OVERSIZE, /* a DATA frame of 200000 bytes instead of WELCOME */
} HostileMode;

typedef struct
{
  HostileMode mode;
  int listen_fd;
  guint16 port;
  gboolean welcomed;
  Flood flood;
  GThread *thread;
} Hostile;

static gpointer
hostile_worker (gpointer data)
{
  Hostile *hs = data;
  gint64 deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
  struct pollfd pfd = { hs->listen_fd, POLLIN, 0 };
  guint8 preface[GT_PREFACE_SIZE];
  g_autoptr (GByteArray) hello = NULL;
  GtFrameHeader h;
  int fd;

  if (poll (&pfd, 1, GT_TEST_WAIT_MS) != 1)
    return NULL;
  fd = accept4 (hs->listen_fd, NULL, NULL, SOCK_CLOEXEC);
  if (fd < 0)
    return NULL;
  {
    struct timeval tv = { 0, 200 * 1000 };

    setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  if (recv_all (fd, preface, sizeof preface, deadline)
      && (hello = recv_frame (fd, &h, deadline)) != NULL && h.type == GT_FRAME_HELLO)
    {
      g_autoptr (GByteArray) out = g_byte_array_new ();

      if (hs->mode == HOSTILE_FLOOD)
        {
          gt_frame_append_welcome (out, NULL, 0);
          hs->welcomed = send_all (fd, out->data, out->len, deadline);
          hs->flood.fd = fd;
          if (hs->welcomed)
            flood_worker (&hs->flood);
        }
      else
        {
          gt_frame_append_header (out, GT_FRAME_DATA, 0, 1, 200000);
          g_byte_array_set_size (out, GT_FRAME_HEADER_SIZE + 200000);
          memset (out->data + GT_FRAME_HEADER_SIZE, 'x', 200000);
          /* The client may stop reading early: a short write is fine. */
          (void)send_all (fd, out->data, out->len, gt_test_deadline_in (3000));
          /* Keep the connection open a while: the client must not see a close. */
          {
            guint8 sink[4096];
            gint64 until = gt_test_deadline_in (3000);

            while (g_get_monotonic_time () < until)
              {
                ssize_t n = recv (fd, sink, sizeof sink, 0);

                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                  break;
              }
          }
        }
    }
  close (fd);
  return NULL;
}

/* Starts the hostile server and a gt client (one tunnel) that connects to it. */
static GtTestProc *
hostile_start (Fixture *f, Hostile *hs, HostileMode mode)
{
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof sa;

  hs->mode = mode;
  hs->listen_fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  g_assert_cmpint (hs->listen_fd, >=, 0);
  g_assert_cmpint (bind (hs->listen_fd, (struct sockaddr *)&sa, sizeof sa), ==, 0);
  g_assert_cmpint (listen (hs->listen_fd, 16), ==, 0);
  g_assert_cmpint (getsockname (hs->listen_fd, (struct sockaddr *)&sa, &len), ==, 0);
  hs->port = ntohs (sa.sin_port);
  hs->thread = g_thread_new ("hostile", hostile_worker, hs);
  return start_client (hs->port, f->local);
}

/* Waits for the hostile server to finish (bounded by its own timeouts) and closes it. */
static void
hostile_join (Hostile *hs)
{
  g_thread_join (g_steal_pointer (&hs->thread));
  close (hs->listen_fd);
}

/* A hostile server answers WELCOME then floods PINGs and reads nothing: the client's memory
 * stays bounded. */
static void
test_client_ping_flood (Fixture *f, gconstpointer data)
{
  Hostile hs = { 0 };
  GtTestProc *client;

  GT_TEST_REQUIRE_GT ();
  client = hostile_start (f, &hs, HOSTILE_FLOOD);
  g_free (gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS));
  hostile_join (&hs);
  g_assert_true (hs.welcomed);
  check_peak_rss (client, &hs.flood);
  gt_test_proc_stop_cleanly (client);
}

/* A server whose answer to HELLO is larger than the client accepts before WELCOME: the client
 * says so, not that the server closed the connection. */
static void
test_client_handshake_oversize (Fixture *f, gconstpointer data)
{
  Hostile hs = { 0 };
  GtTestProc *client;

  GT_TEST_REQUIRE_GT ();
  client = hostile_start (f, &hs, HOSTILE_OVERSIZE);
  g_free (gt_test_proc_expect_line (
      client, "tunnel 1 to .* failed: .*DATA frame of 200000 bytes.* accepted before WELCOME",
      NULL, GT_TEST_WAIT_MS));
  hostile_join (&hs);
  g_assert_cmpuint (gt_test_proc_count_matches (client, "closed by the server"), ==, 0);
  gt_test_proc_stop_cleanly (client);
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, GT_TEST_MIB);

#define ADD(path, func)                                                                            \
  g_test_add ("/gt/integration/abuse/mux/" path, Fixture, NULL, fixture_setup, func,              \
              fixture_teardown)
  ADD ("server-ping-flood", test_server_ping_flood);
  ADD ("client-ping-flood", test_client_ping_flood);
  ADD ("client-handshake-oversize", test_client_handshake_oversize);
#undef ADD
  return gt_test_run ();
}
