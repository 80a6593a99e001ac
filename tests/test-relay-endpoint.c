/* test-relay-endpoint.c: the socket side of relayed streams over socketpairs and GIOStreams. */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-relay-endpoint.h"

typedef struct
{
  GIOCondition seen;
  guint calls;
} Events;

static void
events_cb (int fd, GIOCondition revents, gpointer user_data)
{
  Events *e = user_data;

  e->seen |= revents;
  e->calls++;
}

static void
iterate_until (Events *e, GIOCondition want)
{
  gint64 deadline = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;

  while (!(e->seen & want) && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, TRUE);
  g_assert_true (e->seen & want);
}

static void
socket_pair (int sv[2])
{
  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
}

/* The GIOStream a TLS-terminated user connection would be, minus the TLS. */
static GIOStream *
socket_connection_new (int fd)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocket) socket = g_socket_new_from_fd (fd, &error);

  g_assert_no_error (error);
  return G_IO_STREAM (g_socket_connection_factory_create_connection (socket));
}

static void
check_endpoint (GtRelayEndpoint *ep, int peer, Events *e)
{
  guint8 buf[64];

  /* Nothing to read yet. */
  g_assert_cmpint (gt_relay_endpoint_recv (ep, buf, sizeof buf), ==,
                   GT_RELAY_ENDPOINT_WOULD_BLOCK);

  /* Bytes from the peer wake the reader. */
  gt_relay_endpoint_set_events (ep, G_IO_IN);
  g_assert_cmpint (send (peer, "ping", 4, 0), ==, 4);
  iterate_until (e, G_IO_IN);
  g_assert_cmpint (gt_relay_endpoint_recv (ep, buf, sizeof buf), ==, 4);
  g_assert_cmpmem (buf, 4, "ping", 4);

  /* Writable at once; bytes arrive at the peer. */
  e->seen = 0;
  gt_relay_endpoint_set_events (ep, G_IO_OUT);
  iterate_until (e, G_IO_OUT);
  g_assert_cmpint (gt_relay_endpoint_send (ep, (const guint8 *) "pong", 4), ==, 4);
  g_assert_cmpint (recv (peer, buf, sizeof buf, 0), ==, 4);
  g_assert_cmpmem (buf, 4, "pong", 4);

  /* No watch, no callback. */
  gt_relay_endpoint_set_events (ep, 0);
  e->calls = 0;
  g_assert_cmpint (send (peer, "x", 1, 0), ==, 1);
  while (g_main_context_iteration (NULL, FALSE))
    ;
  g_assert_cmpuint (e->calls, ==, 0);
  g_assert_cmpint (gt_relay_endpoint_recv (ep, buf, sizeof buf), ==, 1);

  /* Half-close: the peer sees EOF (a raw socket; a GIOStream closes its output stream, which
   * for TLS sends close_notify) and can still send. */
  gt_relay_endpoint_shutdown_write (ep);
  if (ep->fd >= 0)
    g_assert_cmpint (recv (peer, buf, sizeof buf, 0), ==, 0);
  g_assert_cmpint (send (peer, "late", 4, 0), ==, 4);
  e->seen = 0;
  gt_relay_endpoint_set_events (ep, G_IO_IN);
  iterate_until (e, G_IO_IN);
  g_assert_cmpint (gt_relay_endpoint_recv (ep, buf, sizeof buf), ==, 4);

  /* EOF from the peer reads as 0. */
  shutdown (peer, SHUT_WR);
  e->seen = 0;
  iterate_until (e, G_IO_IN);
  g_assert_cmpint (gt_relay_endpoint_recv (ep, buf, sizeof buf), ==, 0);

  gt_relay_endpoint_close (ep);
  g_assert_false (gt_relay_endpoint_is_attached (ep));
  g_assert_null (ep->source);
  g_assert_null (ep->in_source);
  g_assert_null (ep->out_source);
}

static void
test_fd (void)
{
  GtRelayEndpoint ep;
  Events e = { 0 };
  int sv[2];

  socket_pair (sv);
  gt_relay_endpoint_init (&ep, events_cb, &e);
  g_assert_false (gt_relay_endpoint_is_attached (&ep));
  gt_relay_endpoint_attach_fd (&ep, sv[0]);
  g_assert_true (gt_relay_endpoint_is_attached (&ep));
  check_endpoint (&ep, sv[1], &e);
  close (sv[1]);
}

static void
test_io_stream (void)
{
  GtRelayEndpoint ep;
  Events e = { 0 };
  g_autoptr (GIOStream) io = NULL;
  int sv[2];

  socket_pair (sv);
  io = socket_connection_new (sv[0]);
  gt_relay_endpoint_init (&ep, events_cb, &e);
  gt_relay_endpoint_attach_io (&ep, io);
  g_assert_true (gt_relay_endpoint_is_attached (&ep));
  check_endpoint (&ep, sv[1], &e);
  /* A socket connection closes at once. */
  g_assert_true (g_io_stream_is_closed (io));
  close (sv[1]);
}

static void
test_close_io_async (void)
{
  g_autoptr (GInputStream) in = g_memory_input_stream_new ();
  g_autoptr (GOutputStream) out = g_memory_output_stream_new_resizable ();
  g_autoptr (GIOStream) io = g_simple_io_stream_new (in, out);
  gint64 deadline = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;

  /* Not a socket: closed in the background, holding its own reference meanwhile. */
  gt_relay_endpoint_close_io (io);
  g_assert_false (g_io_stream_is_closed (io));
  g_assert_true (g_io_stream_has_pending (io));
  /* A second close while the first runs is a no-op. */
  gt_relay_endpoint_close_io (io);
  while (!g_io_stream_is_closed (io) && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, TRUE);
  g_assert_true (g_io_stream_is_closed (io));
  g_assert_true (g_input_stream_is_closed (in));
  g_assert_true (g_output_stream_is_closed (out));
}

static void
test_reply_and_close_fd (void)
{
  static const char reply[] = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
  GtRelayEndpoint ep;
  Events e = { 0 };
  GString *got = g_string_new (NULL);
  gint64 deadline = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;
  int sv[2];

  socket_pair (sv);
  gt_relay_endpoint_init (&ep, events_cb, &e);
  gt_relay_endpoint_attach_fd (&ep, sv[0]);
  gt_relay_endpoint_set_events (&ep, G_IO_IN);
  /* The user is still sending when the reply goes out: the reply must not be lost. */
  g_assert_cmpint (send (sv[1], "GET / HTTP/1.1\r\n", 16, 0), ==, 16);
  gt_relay_endpoint_reply_and_close (&ep, (const guint8 *) reply, strlen (reply));
  g_assert_false (gt_relay_endpoint_is_attached (&ep));
  g_assert_null (ep.source);
  g_assert_cmpint (send (sv[1], "Host: x\r\n\r\n", 11, MSG_NOSIGNAL), ==, 11);
  shutdown (sv[1], SHUT_WR);

  /* The reply, then EOF once the lingering close read what the user sent. */
  gt_socket_set_nonblocking (sv[1]);
  while (g_get_monotonic_time () < deadline)
    {
      char buf[256];
      ssize_t n = recv (sv[1], buf, sizeof buf, 0);

      if (n > 0)
        g_string_append_len (got, buf, n);
      else if (n == 0)
        break;
      else
        {
          g_assert_true (errno == EAGAIN || errno == EINTR);
          g_main_context_iteration (NULL, TRUE);
        }
    }
  g_assert_cmpstr (got->str, ==, reply);
  g_assert_cmpuint (e.calls, ==, 0);
  g_string_free (got, TRUE);
  close (sv[1]);
  while (g_main_context_iteration (NULL, FALSE))
    ;
}

static void
test_reply_and_close_io (void)
{
  static const char reply[] = "HTTP/1.1 502 Bad Gateway\r\n\r\n";
  GtRelayEndpoint ep;
  Events e = { 0 };
  g_autoptr (GIOStream) io = NULL;
  char buf[256];
  gsize got = 0;
  ssize_t n;
  int sv[2];

  socket_pair (sv);
  io = socket_connection_new (sv[0]);
  gt_relay_endpoint_init (&ep, events_cb, &e);
  gt_relay_endpoint_attach_io (&ep, io);
  gt_relay_endpoint_reply_and_close (&ep, (const guint8 *) reply, strlen (reply));
  g_assert_false (gt_relay_endpoint_is_attached (&ep));
  g_assert_true (g_io_stream_is_closed (io));
  while ((n = recv (sv[1], buf + got, sizeof buf - got, 0)) > 0)
    got += n;
  g_assert_cmpint (n, ==, 0);
  g_assert_cmpmem (buf, got, reply, strlen (reply));
  close (sv[1]);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/gt/core/relay-endpoint/fd", test_fd);
  g_test_add_func ("/gt/core/relay-endpoint/io-stream", test_io_stream);
  g_test_add_func ("/gt/core/relay-endpoint/close-io-async", test_close_io_async);
  g_test_add_func ("/gt/core/relay-endpoint/reply-and-close-fd", test_reply_and_close_fd);
  g_test_add_func ("/gt/core/relay-endpoint/reply-and-close-io", test_reply_and_close_io);
  return g_test_run ();
}
