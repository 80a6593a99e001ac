/* gt-relay-endpoint.c: the socket side of a relayed stream; lingering closes of user sockets. */
#include "config.h"

#define G_LOG_DOMAIN "gt-relay"

#include <string.h>
#include <unistd.h>

#include "gt-relay-endpoint.h"

void
gt_relay_endpoint_init (GtRelayEndpoint *ep, GtFdFunc func, gpointer user_data)
{
  memset (ep, 0, sizeof *ep);
  ep->fd = -1;
  ep->func = func;
  ep->user_data = user_data;
}

void
gt_relay_endpoint_attach_fd (GtRelayEndpoint *ep, int fd)
{
  g_return_if_fail (!gt_relay_endpoint_is_attached (ep));
  ep->fd = fd;
  gt_socket_set_nonblocking (fd);
  gt_socket_set_nodelay (fd);
}

void
gt_relay_endpoint_attach_io (GtRelayEndpoint *ep, GIOStream *io)
{
  g_return_if_fail (!gt_relay_endpoint_is_attached (ep));
  g_return_if_fail (G_IS_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (io)));
  g_return_if_fail (G_IS_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (io)));
  ep->io = g_object_ref (io);
  ep->in = G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (io));
  ep->out = G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (io));
}

gssize
_gt_relay_endpoint_recv_io (GtRelayEndpoint *ep, guint8 *buf, gsize len)
{
  g_autoptr (GError) error = NULL;
  gssize n;

  if (ep->io == NULL)
    return GT_RELAY_ENDPOINT_ERROR;
  n = g_pollable_input_stream_read_nonblocking (ep->in, buf, len, NULL, &error);
  if (n >= 0)
    return n;
  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
    return GT_RELAY_ENDPOINT_WOULD_BLOCK;
  if (g_error_matches (error, G_TLS_ERROR, G_TLS_ERROR_EOF))
    return 0; /* peer closed without close_notify: a plain EOF for a relay */
  g_debug ("read error: %s", error->message);
  return GT_RELAY_ENDPOINT_ERROR;
}

gssize
_gt_relay_endpoint_send_io (GtRelayEndpoint *ep, const guint8 *data, gsize len)
{
  GOutputVector v = { data, len };
  gsize written = 0;
  GPollableReturn r;

  if (ep->io == NULL)
    return GT_RELAY_ENDPOINT_ERROR;
  r = g_pollable_output_stream_writev_nonblocking (ep->out, &v, 1, &written, NULL, NULL);
  if (r == G_POLLABLE_RETURN_FAILED)
    return GT_RELAY_ENDPOINT_ERROR;
  if (r == G_POLLABLE_RETURN_WOULD_BLOCK && written == 0)
    return GT_RELAY_ENDPOINT_WOULD_BLOCK;
  return written;
}

static gboolean
io_in_cb (GObject *stream, gpointer user_data)
{
  GtRelayEndpoint *ep = user_data;

  ep->func (-1, G_IO_IN, ep->user_data);
  return G_SOURCE_CONTINUE;
}

static gboolean
io_out_cb (GObject *stream, gpointer user_data)
{
  GtRelayEndpoint *ep = user_data;

  ep->func (-1, G_IO_OUT, ep->user_data);
  return G_SOURCE_CONTINUE;
}

static void
source_clear (GSource **source)
{
  if (*source == NULL)
    return;
  g_source_destroy (*source);
  g_clear_pointer (source, g_source_unref);
}

static GSource *
io_source_new (GtRelayEndpoint *ep, gboolean input)
{
  GSource *source = input ? g_pollable_input_stream_create_source (ep->in, NULL)
                          : g_pollable_output_stream_create_source (ep->out, NULL);

  g_source_set_callback (source, (GSourceFunc) (void (*) (void)) (input ? io_in_cb : io_out_cb),
                         ep, NULL);
  g_source_attach (source, g_main_context_get_thread_default ());
  return source;
}

/* The first watch of a raw fd, or any change of a GIOStream's watches. */
void
_gt_relay_endpoint_watch (GtRelayEndpoint *ep, GIOCondition events)
{
  if (ep->fd >= 0)
    {
      ep->source = gt_fd_watch_new (ep->fd, events, ep->func, ep->user_data);
      return;
    }
  if (ep->io == NULL || ep->io_events == events)
    return;
  if ((events & G_IO_IN) && ep->in_source == NULL)
    ep->in_source = io_source_new (ep, TRUE);
  else if (!(events & G_IO_IN))
    source_clear (&ep->in_source);
  if ((events & G_IO_OUT) && ep->out_source == NULL)
    ep->out_source = io_source_new (ep, FALSE);
  else if (!(events & G_IO_OUT))
    source_clear (&ep->out_source);
  ep->io_events = events;
}

void
gt_relay_endpoint_unwatch (GtRelayEndpoint *ep)
{
  g_clear_pointer (&ep->source, gt_fd_watch_free);
  source_clear (&ep->in_source);
  source_clear (&ep->out_source);
  ep->io_events = 0;
}

void
gt_relay_endpoint_shutdown_write (GtRelayEndpoint *ep)
{
  if (ep->fd >= 0)
    shutdown (ep->fd, SHUT_WR);
  else if (ep->io != NULL)
    (void) g_output_stream_close (G_OUTPUT_STREAM (ep->out), NULL, NULL);
}

void
gt_relay_endpoint_close (GtRelayEndpoint *ep)
{
  gt_relay_endpoint_unwatch (ep);
  if (ep->fd >= 0)
    {
      close (ep->fd);
      ep->fd = -1;
    }
  if (ep->io != NULL)
    {
      gt_relay_endpoint_close_io (ep->io);
      g_clear_object (&ep->io);
      ep->in = NULL;
      ep->out = NULL;
    }
}

void
gt_relay_endpoint_reply_and_close (GtRelayEndpoint *ep, const guint8 *reply, gsize len)
{
  gt_relay_endpoint_unwatch (ep);
  if (ep->fd >= 0)
    {
      int fd = ep->fd;

      ep->fd = -1;
      gt_socket_reply_and_close (fd, (const char *) reply, len);
      return;
    }
  if (ep->io != NULL)
    (void) _gt_relay_endpoint_send_io (ep, reply, len); /* small: fits the TLS buffer */
  gt_relay_endpoint_close (ep);
}

static void
close_io_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GError) error = NULL;

  if (!g_io_stream_close_finish (G_IO_STREAM (source), result, &error))
    g_debug ("close: %s", error->message);
  g_object_unref (source);
}

void
gt_relay_endpoint_close_io (GIOStream *io)
{
  g_return_if_fail (G_IS_IO_STREAM (io));
  if (g_io_stream_is_closed (io) || g_io_stream_has_pending (io))
    return;
  /* Closing a socket never blocks; doing it now keeps the fd count exact. */
  if (G_IS_SOCKET_CONNECTION (io))
    {
      (void) g_io_stream_close (io, NULL, NULL);
      return;
    }
  g_io_stream_close_async (io, G_PRIORITY_DEFAULT, NULL, close_io_done_cb, g_object_ref (io));
}

/* ------------------------------------------------------------------------------------------ */
/* Short replies on user sockets (404, 400, 502) */

typedef struct
{
  int fd;
  GtFdWatch *source;
  guint timeout_id;
  gsize drained;
} LingerClose;

static void
linger_free (LingerClose *l)
{
  gt_fd_watch_free (l->source);
  g_clear_handle_id (&l->timeout_id, g_source_remove);
  close (l->fd);
  g_free (l);
}

static void
linger_fd_cb (int fd, GIOCondition revents, gpointer user_data)
{
  LingerClose *l = user_data;
  guint8 buf[4096];
  ssize_t n = recv (fd, buf, sizeof buf, MSG_DONTWAIT);

  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  l->drained += n > 0 ? n : 0;
  if (n <= 0 || l->drained > 1024 * 1024)
    linger_free (l);
}

static gboolean
linger_timeout_cb (gpointer user_data)
{
  LingerClose *l = user_data;

  l->timeout_id = 0;
  linger_free (l);
  return G_SOURCE_REMOVE;
}

void
gt_socket_reply_and_close (int fd, const char *reply, gsize len)
{
  LingerClose *l;

  gt_socket_set_nonblocking (fd);
  if (len > 0)
    (void) send (fd, reply, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  shutdown (fd, SHUT_WR);
  l = g_new0 (LingerClose, 1);
  l->fd = fd;
  l->source = gt_fd_watch_new (fd, G_IO_IN, linger_fd_cb, l);
  l->timeout_id = g_timeout_add_seconds (2, linger_timeout_cb, l);
}
