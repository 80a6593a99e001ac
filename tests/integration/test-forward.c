/* test-forward.c (integration): GT's tcpForwardAddr/tcpForwardHostPrefix with real gt processes
 * on 127.0.0.1: bytes through one client's local listener reach another client's service of that
 * host prefix and come back; refusals (tcpForwardAllow, unknown prefix, offline client, a service
 * that refuses) close the local connection with one clear log line. */
#define G_LOG_DOMAIN "gt-test"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include <gio/gio.h>

#include "gt-test-utils.h"

#define SECRET "forward-test-secret"
#define N_CONNS 4
#define PAYLOAD GT_TEST_MIB
#define PATTERN_SIZE (PAYLOAD + N_CONNS * 4099)

static GtTestProc *
start_server (guint16 *port)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autofree char *line = NULL;
  g_autofree char *path = NULL;
  GtTestProc *p;

  /* b may reach svc, d dead; g the prefix ghost that nobody holds; w any prefix; c nothing. */
  path = gt_test_write_file ("server.yaml", "users:\n"
                                            "  a: {secret: " SECRET "}\n"
                                            "  adead: {secret: " SECRET "}\n"
                                            "  b: {secret: " SECRET "}\n"
                                            "  c: {secret: " SECRET "}\n"
                                            "  d: {secret: " SECRET "}\n"
                                            "  g: {secret: " SECRET "}\n"
                                            "  w: {secret: " SECRET "}\n"
                                            "options:\n"
                                            "  tcpForwardAllow:\n"
                                            "    - b:svc\n"
                                            "    - d:dead\n"
                                            "    - g:ghost\n"
                                            "    - w:*\n");
  gt_test_args_addv (args, "server", "-c", path, "--addr", "127.0.0.1:0", NULL);
  p = gt_test_spawn_gt ("server", args);
  line = gt_test_proc_expect_line (p, "listening on 127\\.0\\.0\\.1:[0-9]+", NULL, GT_TEST_WAIT_MS);
  *port = (guint16) gt_test_capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");
  return p;
}

/* A client publishing local (an http service with host prefix prefix). */
static GtTestProc *
start_service_client (const char *id, guint16 server_port, guint16 local_port, const char *prefix)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  GtTestProc *p;

  gt_test_args_addv (args, "client", "--id", id, "--secret", SECRET, NULL);
  gt_test_args_add (args, "--remote=tcp://127.0.0.1:%u", server_port);
  gt_test_args_add (args, "--local=http://127.0.0.1:%u", local_port);
  gt_test_args_add (args, "--hostPrefix=%s", prefix);
  p = gt_test_spawn_gt (id, args);
  g_free (gt_test_proc_expect_line (p, "tunnel started", NULL, GT_TEST_WAIT_MS));
  return p;
}

/* A client with no service of its own whose listener forwards to prefix; *listen_port gets it. */
static GtTestProc *
start_forward_client (const char *id, guint16 server_port, const char *prefix,
                      guint16 *listen_port)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  GtTestProc *p;

  *listen_port = gt_test_free_port ();
  gt_test_args_addv (args, "client", "--id", id, "--secret", SECRET, NULL);
  gt_test_args_add (args, "--remote=tcp://127.0.0.1:%u", server_port);
  /* GT's spelling: one dash. */
  gt_test_args_add (args, "-tcpForwardAddr=127.0.0.1:%u", *listen_port);
  gt_test_args_add (args, "-tcpForwardHostPrefix=%s", prefix);
  p = gt_test_spawn_gt (id, args);
  g_free (gt_test_proc_expect_line (p, "tcpForward: listening on", NULL, GT_TEST_WAIT_MS));
  g_free (gt_test_proc_expect_line (p, "tunnel started", NULL, GT_TEST_WAIT_MS));
  return p;
}

typedef struct
{
  GtTestConn *c;
  const guint8 *data; /* what this connection sends */
  gsize sent;
  gboolean banner_done;
  gboolean shut;
} Flow;

/* N_CONNS connections at once through port: each reads the echo service's banner, sends 1 MiB
 * (its own slice of the pattern) while reading the echo, compares it, half-closes and reads the
 * service's close. All in one poll loop, bounded by one deadline. */
static void
run_concurrent_echo (guint16 port)
{
  Flow flows[N_CONNS] = { 0 };
  gsize banner = strlen (GT_TEST_TCP_BANNER);
  gint64 deadline = gt_test_deadline_in (GT_TEST_WAIT_MS * 2);
  g_autoptr (GError) error = NULL;
  guint done = 0;

  for (guint i = 0; i < N_CONNS; i++)
    {
      flows[i].c = gt_test_conn_connect (port, &error);
      g_assert_no_error (error);
      flows[i].data = gt_test_pattern () + i * 4099;
    }
  while (done < N_CONNS)
    {
      struct pollfd pfd[N_CONNS];

      if (g_get_monotonic_time () > deadline)
        gt_test_fail ("forward echo timed out with %u of %u connections done", done, N_CONNS);
      for (guint i = 0; i < N_CONNS; i++)
        {
          Flow *f = &flows[i];

          pfd[i].fd = f->c->eof ? -1 : f->c->fd;
          pfd[i].events = POLLIN | (f->banner_done && f->sent < PAYLOAD ? POLLOUT : 0);
          pfd[i].revents = 0;
        }
      if (poll (pfd, N_CONNS, 50) <= 0)
        continue;
      for (guint i = 0; i < N_CONNS; i++)
        {
          Flow *f = &flows[i];

          if (pfd[i].revents & POLLOUT)
            {
              gssize w = send (f->c->fd, f->data + f->sent, MIN (PAYLOAD - f->sent, 65536),
                               MSG_NOSIGNAL | MSG_DONTWAIT);

              if (w < 0 && errno != EAGAIN)
                gt_test_fail ("connection %u: send: %s", i, g_strerror (errno));
              f->sent += MAX (w, 0);
            }
          if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))
            {
              gssize r = gt_test_conn_read_now (f->c, &error);

              if (r == -1)
                gt_test_fail ("connection %u: %s after %u bytes", i, error->message,
                              f->c->in->len);
              if (r == 0)
                {
                  /* The service closes only after our half-close and its full echo. */
                  if (!f->shut)
                    gt_test_fail ("connection %u: EOF after %u bytes before the half-close", i,
                                  f->c->in->len);
                  gt_test_check_bytes ("forward echo", f->c->in->data, f->c->in->len, f->data,
                                       PAYLOAD);
                  done++;
                  continue;
                }
            }
          if (!f->banner_done && f->c->in->len >= banner)
            {
              gt_test_check_bytes ("banner", f->c->in->data, banner,
                                   (const guint8 *) GT_TEST_TCP_BANNER, banner);
              g_byte_array_remove_range (f->c->in, 0, banner);
              f->banner_done = TRUE;
            }
          if (f->banner_done && !f->shut && f->c->in->len >= PAYLOAD)
            {
              gt_test_check_bytes ("forward echo", f->c->in->data, f->c->in->len, f->data,
                                   PAYLOAD);
              g_assert_cmpint (shutdown (f->c->fd, SHUT_WR), ==, 0);
              f->shut = TRUE;
            }
        }
    }
  for (guint i = 0; i < N_CONNS; i++)
    gt_test_conn_free (flows[i].c);
}

static void
test_forward_echo (void)
{
  GtTestProc *server, *b;
  guint16 port, listen_port;

  GT_TEST_REQUIRE_GT ();
  gt_test_setup ();
  gt_test_tcp_echo_start ();
  server = start_server (&port);
  start_service_client ("a", port, gt_test_tcp_echo ()->port, "svc");
  b = start_forward_client ("b", port, "svc", &listen_port);
  run_concurrent_echo (listen_port);
  /* A second round on the same tunnels: the streams of the first are gone, ids go on. */
  run_concurrent_echo (listen_port);
  g_assert_cmpuint (gt_test_proc_count_matches (b, "tcpForward to"), ==, 0);
  g_assert_cmpuint (gt_test_proc_count_matches (server, "tcpForward .* refused"), ==, 0);
  gt_test_teardown ();
}

/* Connects to port and expects the connection to end (EOF or reset) without a byte; then
 * exactly one more line of client matching regex. */
static void
expect_closed_with_line (GtTestProc *client, guint16 port, const char *regex)
{
  guint before = gt_test_proc_count_matches (client, regex);
  guint before_all = gt_test_proc_count_matches (client, "tcpForward to");
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestConn) c = gt_test_conn_connect (port, &error);

  g_assert_no_error (error);
  if (!gt_test_conn_read_to_eof (c, TRUE, gt_test_deadline_in (GT_TEST_WAIT_MS), &error))
    gt_test_fail ("%s: the refused connection was not closed: %s", client->name,
                  error ? error->message : "?");
  g_assert_cmpuint (c->in->len, ==, 0);
  if (!gt_test_proc_wait_count (client, regex, before + 1, GT_TEST_WAIT_MS))
    gt_test_fail ("%s: no line matching /%s/", client->name, regex);
  g_assert_cmpuint (gt_test_proc_count_matches (client, "tcpForward to"), ==, before_all + 1);
}

static void
test_forward_refused (void)
{
  GtTestProc *server, *a, *b, *c, *d, *g, *w;
  guint16 port, pb, pc, pd, pg, pw;

  GT_TEST_REQUIRE_GT ();
  gt_test_setup ();
  gt_test_tcp_echo_start ();
  server = start_server (&port);
  a = start_service_client ("a", port, gt_test_tcp_echo ()->port, "svc");
  /* dead's local service refuses connections (nothing listens on that port). */
  start_service_client ("adead", port, gt_test_free_port (), "dead");
  b = start_forward_client ("b", port, "svc", &pb);
  c = start_forward_client ("c", port, "svc", &pc);
  g = start_forward_client ("g", port, "ghost", &pg);
  w = start_forward_client ("w", port, "nobody", &pw);
  d = start_forward_client ("d", port, "dead", &pd);

  /* No rule lets c reach svc, although it exists. */
  expect_closed_with_line (c, pc,
                           "tcpForward to 'svc': not allowed by the server's tcpForwardAllow; "
                           "closed the connection from 127\\.0\\.0\\.1:[0-9]+$");
  g_assert_cmpuint (gt_test_proc_count_matches (server, "tcpForward from client c to 'svc' "
                                                        "refused: no tcpForwardAllow rule"),
                    ==, 1);
  /* w may reach any prefix, but nobody holds this one. */
  expect_closed_with_line (w, pw, "tcpForward to 'nobody': no client holds this host prefix; ");
  /* g's rule names ghost: a known prefix whose client is away. */
  expect_closed_with_line (g, pg, "tcpForward to 'ghost': the client of this host prefix is "
                                  "offline; ");
  /* The service of dead refuses: its client resets the stream, and d hears why. */
  expect_closed_with_line (d, pd, "tcpForward to 'dead': the local service could not be "
                                  "reached; ");

  /* The target goes offline: b's connection is closed with the reason. */
  gt_test_proc_stop (a, SIGKILL);
  g_free (gt_test_proc_expect_line (server, "client a left", NULL, GT_TEST_WAIT_MS));
  expect_closed_with_line (b, pb, "tcpForward to 'svc': the client of this host prefix is "
                                  "offline; ");
  gt_test_teardown ();
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, PATTERN_SIZE);
  g_test_add_func ("/gt/forward/integration/echo", test_forward_echo);
  g_test_add_func ("/gt/forward/integration/refused", test_forward_refused);
  return gt_test_run ();
}
