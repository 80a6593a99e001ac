/* gt-relay-endpoint.h: the socket side of a relayed stream (raw fd or pollable GIOStream). */
#pragma once

#include <errno.h>
#include <sys/socket.h>

#include <gio/gio.h>
#include "gt-fd-source.h"

G_BEGIN_DECLS

#define GT_RELAY_ENDPOINT_WOULD_BLOCK (-1)
#define GT_RELAY_ENDPOINT_ERROR (-2)

/* Embedded by value in its owner: no allocation per endpoint, and the raw-fd operations below are
 * inlined into the relay loop (the hot path). func gets the ready events (G_IO_IN, G_IO_OUT,
 * G_IO_HUP, G_IO_ERR); fd is -1 for a GIOStream endpoint. */
typedef struct
{
  int fd;                   /* raw socket (fast path), or -1 */
  GIOStream *io;            /* pollable stream (TLS, ...) when there is no raw socket */
  GPollableInputStream *in; /* io's streams (not owned) */
  GPollableOutputStream *out;
  GtFdWatch *source;               /* fd watch */
  GSource *in_source, *out_source; /* io watches */
  GIOCondition io_events;
  GtFdFunc func;
  gpointer user_data;
} GtRelayEndpoint;

void gt_relay_endpoint_init (GtRelayEndpoint *ep, GtFdFunc func, gpointer user_data);
/* Takes ownership of fd and makes it non-blocking with TCP_NODELAY. */
void gt_relay_endpoint_attach_fd (GtRelayEndpoint *ep, int fd);
/* Takes a reference on io (its streams must be pollable). */
void gt_relay_endpoint_attach_io (GtRelayEndpoint *ep, GIOStream *io);
/* Drops the watches, keeps the socket. */
void gt_relay_endpoint_unwatch (GtRelayEndpoint *ep);
/* Half-close: no more bytes to the socket. */
void gt_relay_endpoint_shutdown_write (GtRelayEndpoint *ep);
/* Closes a raw fd at once and a GIOStream in the background; the endpoint is detached after. */
void gt_relay_endpoint_close (GtRelayEndpoint *ep);
/* Sends a short reply (e.g. a 502) and closes: a raw fd lingers (gt_socket_reply_and_close). */
void gt_relay_endpoint_reply_and_close (GtRelayEndpoint *ep, const guint8 *reply, gsize len);

/* Closes io without blocking the caller: TLS and WebSocket streams finish their close handshake
 * asynchronously (a reference is kept until then); socket connections close at once. */
void gt_relay_endpoint_close_io (GIOStream *io);

/* Close a socket after sending a short reply, reading what the peer still sends (bounded) so
 * the reply is not lost to a TCP reset. Takes ownership of fd. */
void gt_socket_reply_and_close (int fd, const char *reply, gsize len);

gssize _gt_relay_endpoint_recv_io (GtRelayEndpoint *ep, guint8 *buf, gsize len);
gssize _gt_relay_endpoint_send_io (GtRelayEndpoint *ep, const guint8 *data, gsize len);
void _gt_relay_endpoint_watch (GtRelayEndpoint *ep, GIOCondition events);

static inline gboolean
gt_relay_endpoint_is_attached (const GtRelayEndpoint *ep)
{
  return ep->fd >= 0 || ep->io != NULL;
}

/* Bytes read (0 = EOF), GT_RELAY_ENDPOINT_WOULD_BLOCK or GT_RELAY_ENDPOINT_ERROR. */
static inline gssize
gt_relay_endpoint_recv (GtRelayEndpoint *ep, guint8 *buf, gsize len)
{
  gssize n;

  if (G_UNLIKELY (ep->fd < 0))
    return _gt_relay_endpoint_recv_io (ep, buf, len);
  do
    n = recv (ep->fd, buf, len, MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return errno == EAGAIN || errno == EWOULDBLOCK ? GT_RELAY_ENDPOINT_WOULD_BLOCK
                                                   : GT_RELAY_ENDPOINT_ERROR;
  return n;
}

/* Bytes written, GT_RELAY_ENDPOINT_WOULD_BLOCK or GT_RELAY_ENDPOINT_ERROR. */
static inline gssize
gt_relay_endpoint_send (GtRelayEndpoint *ep, const guint8 *data, gsize len)
{
  gssize n;

  if (G_UNLIKELY (ep->fd < 0))
    return _gt_relay_endpoint_send_io (ep, data, len);
  do
    n = send (ep->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return errno == EAGAIN || errno == EWOULDBLOCK ? GT_RELAY_ENDPOINT_WOULD_BLOCK
                                                   : GT_RELAY_ENDPOINT_ERROR;
  return n;
}

/* Watch for exactly these events (0 = none). */
static inline void
gt_relay_endpoint_set_events (GtRelayEndpoint *ep, GIOCondition events)
{
  if (G_LIKELY (ep->source != NULL))
    gt_fd_watch_set_events (ep->source, events);
  else
    _gt_relay_endpoint_watch (ep, events);
}

G_END_DECLS
