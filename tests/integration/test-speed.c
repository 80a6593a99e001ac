/* Integration tests of `speed` (bytes per second per client, each direction on its own), timed
 * from outside with real gt processes: the duration of a transfer is bounded below strictly
 * (the limit holds) and above loosely (the machine may be loaded, but no long stalls). */
#define G_LOG_DOMAIN "gt-test"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include <gio/gio.h>

#include "gt-test-utils.h"

#define PATTERN_SIZE (16 * GT_TEST_MIB)
#define SECRET "s3cret-speed"
#define HOST "speed.example.com"

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

/* A server with `--speed rate` and a client serving a local HTTP service as HOST; the server's
 * port. */
static guint16
start_relay (guint64 rate)
{
  g_autoptr (GPtrArray) sargs = gt_test_args_new ();
  g_autoptr (GPtrArray) cargs = gt_test_args_new ();
  GtTestHttp *h = gt_test_http_start ("svc", 0, NULL);
  g_autofree char *line = NULL;
  GtTestProc *server, *client;
  guint16 port;

  gt_test_args_addv (sargs, "server", "--addr", "127.0.0.1:0", "--id", "speed", "--secret", SECRET,
                     NULL);
  gt_test_args_add (sargs, "--speed=%" G_GUINT64_FORMAT, rate);
  server = gt_test_spawn_gt ("server", sargs);
  line = gt_test_proc_expect_line (server, "listening on 127\\.0\\.0\\.1:[0-9]+", NULL,
                                   GT_TEST_WAIT_MS);
  port = (guint16) gt_test_capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");

  gt_test_args_addv (cargs, "client", "--id", "speed", "--secret", SECRET, "--remoteConnections",
                     "1", NULL);
  gt_test_args_add (cargs, "--remote=tcp://127.0.0.1:%u", port);
  gt_test_args_add (cargs, "--local=http://127.0.0.1:%u", h->port);
  gt_test_args_addv (cargs, "--hostPrefix", "speed", NULL);
  client = gt_test_spawn_gt ("client", cargs);
  g_free (gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS));
  return port;
}

/* One request in flight on its own connection, read without blocking. */
typedef struct
{
  const char *what;
  GtTestConn *conn;
  gsize body_len;  /* expected response body */
  gint64 start;
  gint64 last_rx;  /* last time bytes arrived */
  gint64 max_gap;  /* longest time without bytes (µs) */
  gint64 done;     /* when the response was complete, 0 before */
  GtTestHttpResponse *response;
} Transfer;

static void
transfer_clear (Transfer *t)
{
  g_clear_pointer (&t->conn, gt_test_conn_free);
  g_clear_pointer (&t->response, gt_test_http_response_free);
}

/* Sends the request; the kernel takes the whole (small or not) body while the read side runs in
 * transfers_run(). */
static void
transfer_start (Transfer *t, const char *what, guint16 port, const char *method,
                const char *path, gsize upload)
{
  g_autoptr (GError) error = NULL;

  memset (t, 0, sizeof *t);
  t->what = what;
  t->conn = gt_test_conn_connect (port, &error);
  g_assert_no_error (error);
  t->start = t->last_rx = g_get_monotonic_time ();
  if (upload == 0)
    {
      g_autoptr (GByteArray) req = gt_test_http_build_request (method, path, HOST, NULL, 0, NULL);

      if (!gt_test_conn_write_all (t->conn, req->data, req->len,
                                   gt_test_deadline_in (GT_TEST_WAIT_MS), &error))
        gt_test_fail ("%s: %s", what, error->message);
    }
}

/* Runs the transfers together until each has its response: uploads write their body as the
 * socket takes it, everyone reads what arrives. */
static void
transfers_run (Transfer **ts, guint n, const guint8 *const *uploads, const gsize *upload_lens,
               guint timeout_ms)
{
  gint64 deadline = gt_test_deadline_in (timeout_ms);
  g_autofree gsize *sent = g_new0 (gsize, n);
  g_autofree gboolean *head_sent = g_new0 (gboolean, n);

  for (;;)
    {
      struct pollfd pfds[8];
      guint left = 0;
      gint64 now;

      g_assert_cmpuint (n, <=, G_N_ELEMENTS (pfds));
      for (guint i = 0; i < n; i++)
        {
          gboolean writing = upload_lens != NULL && upload_lens[i] > 0 && sent[i] < upload_lens[i];

          pfds[i].fd = ts[i]->done ? -1 : ts[i]->conn->fd;
          pfds[i].events = POLLIN | (writing ? POLLOUT : 0);
          pfds[i].revents = 0;
          if (!ts[i]->done)
            left++;
        }
      if (left == 0)
        return;
      now = g_get_monotonic_time ();
      if (now > deadline)
        for (guint i = 0; i < n; i++)
          if (!ts[i]->done)
            gt_test_fail ("%s: no complete response after %u ms (%u bytes in, longest gap %.1f s)",
                          ts[i]->what, timeout_ms, ts[i]->conn->in->len,
                          ts[i]->max_gap / 1e6);
      if (poll (pfds, n, 100) < 0 && errno != EINTR)
        gt_test_fail ("poll: %s", g_strerror (errno));
      for (guint i = 0; i < n; i++)
        {
          Transfer *t = ts[i];
          g_autoptr (GError) error = NULL;

          if (t->done)
            continue;
          if ((pfds[i].revents & POLLOUT) && upload_lens != NULL)
            {
              if (!head_sent[i])
                {
                  g_autofree char *head = g_strdup_printf (
                    "POST /sink HTTP/1.1\r\nHost: " HOST "\r\nContent-Length: %" G_GSIZE_FORMAT
                    "\r\n\r\n",
                    upload_lens[i]);

                  if (!gt_test_conn_write_all (t->conn, head, strlen (head),
                                               gt_test_deadline_in (GT_TEST_WAIT_MS), &error))
                    gt_test_fail ("%s: %s", t->what, error->message);
                  head_sent[i] = TRUE;
                }
              else
                {
                  gssize w = send (t->conn->fd, uploads[i] + sent[i], upload_lens[i] - sent[i],
                                   MSG_NOSIGNAL | MSG_DONTWAIT);

                  if (w < 0 && errno != EAGAIN)
                    gt_test_fail ("%s: send: %s", t->what, g_strerror (errno));
                  sent[i] += MAX (w, 0);
                }
            }
          if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR))
            {
              gssize r = gt_test_conn_read_now (t->conn, &error);
              gsize consumed = 0;
              int res;

              if (r == -1)
                gt_test_fail ("%s: %s", t->what, error->message);
              if (r > 0)
                {
                  now = g_get_monotonic_time ();
                  t->max_gap = MAX (t->max_gap, now - t->last_rx);
                  t->last_rx = now;
                }
              res = gt_test_http_parse_response (t->conn->in->data, t->conn->in->len, r == 0,
                                                 &consumed, &t->response, &error);
              if (res < 0)
                gt_test_fail ("%s: %s", t->what, error->message);
              if (res > 0)
                t->done = g_get_monotonic_time ();
              else if (r == 0)
                gt_test_fail ("%s: EOF after %u bytes", t->what, t->conn->in->len);
            }
        }
    }
}

static double
transfer_seconds (const Transfer *t)
{
  return (t->done - t->start) / 1e6;
}

/* The limit holds (strict lower bound: the bytes minus one burst of a tenth of a second, less 5 %
 * for timer rounding), and the transfer is not much slower than the limit (loose upper bound). */
static void
check_duration (const char *what, double seconds, gsize bytes, guint64 rate)
{
  double burst = MAX (rate / 10.0, 1.0);
  double floor_s = (bytes - burst) / rate * 0.95;
  double ceiling_s = (double) bytes / rate * 2.5 + 3.0;

  g_test_message ("%s: %" G_GSIZE_FORMAT " bytes in %.2f s at %" G_GUINT64_FORMAT
                  " B/s (bounds %.2f .. %.2f s)",
                  what, bytes, seconds, rate, floor_s, ceiling_s);
  if (seconds < floor_s)
    gt_test_fail ("%s: %" G_GSIZE_FORMAT " bytes took %.2f s at a limit of %" G_GUINT64_FORMAT
                  " B/s: at least %.2f s expected",
                  what, bytes, seconds, rate, floor_s);
  if (seconds > ceiling_s)
    gt_test_fail ("%s: %" G_GSIZE_FORMAT " bytes took %.2f s at a limit of %" G_GUINT64_FORMAT
                  " B/s: at most %.2f s expected",
                  what, bytes, seconds, rate, ceiling_s);
}

static void
expect_body (Transfer *t, const guint8 *want, gsize want_len)
{
  if (t->response->status != 200)
    gt_test_fail ("%s: status %u", t->what, t->response->status);
  gt_test_check_bytes (t->what, t->response->body->data, t->response->body->len, want, want_len);
}

static void
download (guint16 port, gsize n, guint64 rate, gint64 max_gap_us)
{
  g_autofree char *path = g_strdup_printf ("/bytes?n=%" G_GSIZE_FORMAT, n);
  g_autofree char *what = g_strdup_printf ("download of %" G_GSIZE_FORMAT " bytes", n);
  Transfer t;
  Transfer *ts[] = { &t };

  transfer_start (&t, what, port, "GET", path, 0);
  transfers_run (ts, 1, NULL, NULL, (guint) (n * 4000 / rate) + 20000);
  expect_body (&t, gt_test_pattern (), n);
  check_duration (what, transfer_seconds (&t), n, rate);
  if (max_gap_us > 0 && t.max_gap > max_gap_us)
    gt_test_fail ("%s: no byte arrived for %.2f s (smooth flow expected)", what, t.max_gap / 1e6);
  transfer_clear (&t);
}

static void
upload (guint16 port, gsize n, guint64 rate)
{
  g_autofree char *what = g_strdup_printf ("upload of %" G_GSIZE_FORMAT " bytes", n);
  g_autofree char *want = g_strdup_printf ("%" G_GSIZE_FORMAT, n);
  const guint8 *bodies[] = { gt_test_pattern () };
  gsize lens[] = { n };
  Transfer t;
  Transfer *ts[] = { &t };

  transfer_start (&t, what, port, "POST", "/sink", n);
  transfers_run (ts, 1, bodies, lens, (guint) (n * 4000 / rate) + 20000);
  expect_body (&t, (const guint8 *) want, strlen (want));
  check_duration (what, transfer_seconds (&t), n, rate);
  transfer_clear (&t);
}

/* 1 KiB/s: GT's example (4 KiB take 4 to 5 s in each direction), bytes arrive steadily, and an
 * upload and a download at the same time each get the whole rate (directions are separate). */
static void
test_small (Fixture *f, gconstpointer data)
{
  const guint64 rate = 1024;
  const gsize n = 6 * 1024;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  port = start_relay (rate);

  upload (port, 4096, rate);
  download (port, 4096, rate, 0);
  /* Smooth: a burst is a tenth of a second, so a byte comes at least every second. */
  download (port, n, rate, 1500 * 1000);

  {
    g_autofree char *want = g_strdup_printf ("%" G_GSIZE_FORMAT, n);
    g_autofree char *path = g_strdup_printf ("/bytes?n=%" G_GSIZE_FORMAT, n);
    const guint8 *bodies[] = { gt_test_pattern (), NULL };
    gsize lens[] = { n, 0 };
    Transfer up, down;
    Transfer *ts[] = { &up, &down };
    gint64 t0 = g_get_monotonic_time ();
    double total;

    transfer_start (&up, "concurrent upload", port, "POST", "/sink", n);
    transfer_start (&down, "concurrent download", port, "GET", path, 0);
    transfers_run (ts, 2, bodies, lens, 60000);
    total = (g_get_monotonic_time () - t0) / 1e6;
    expect_body (&up, (const guint8 *) want, strlen (want));
    expect_body (&down, gt_test_pattern (), n);
    check_duration ("concurrent upload", transfer_seconds (&up), n, rate);
    check_duration ("concurrent download", transfer_seconds (&down), n, rate);
    /* One shared budget (or one direction holding the other) would need 2 × 6 s. */
    if (total > 10.0)
      gt_test_fail ("an upload and a download of %" G_GSIZE_FORMAT " bytes each at %"
                    G_GUINT64_FORMAT " B/s took %.2f s together: the directions are not limited "
                    "separately",
                    n, rate, total);
    transfer_clear (&up);
    transfer_clear (&down);
  }
}

/* 4 MiB/s: the same bounds at a rate where the limit, not the timer, decides. */
static void
test_large (Fixture *f, gconstpointer data)
{
  const guint64 rate = 4 * GT_TEST_MIB;
  const gsize n = 12 * GT_TEST_MIB;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  port = start_relay (rate);
  download (port, n, rate, 1500 * 1000);
  upload (port, n, rate);
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, PATTERN_SIZE);

#define ADD(path, func)                                                                         \
  g_test_add ("/gt/integration/speed/" path, Fixture, NULL, fixture_setup, func,               \
              fixture_teardown)
  ADD ("small", test_small);
  ADD ("large", test_large);
#undef ADD

  return gt_test_run ();
}
