/* gt-native-streams.h: the capability of a tunnel GIOStream whose transport carries each gt stream
 * as a stream of its own (QUIC): the mux opens, accepts and resets those instead of framing. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

#define GT_TYPE_NATIVE_STREAMS (gt_native_streams_get_type ())
G_DECLARE_INTERFACE (GtNativeStreams, gt_native_streams, GT, NATIVE_STREAMS, GIOStream)

/* Called with each stream the peer opens (a GIOStream with pollable streams that also implements
 * GtNativeStreams; ref it to keep it). */
typedef void (*GtNativeStreamFunc) (GIOStream *stream, gpointer user_data);
/* Called with each datagram the peer sends beside the streams (data is valid during the call). */
typedef void (*GtNativeDatagramFunc) (const guint8 *data, gsize len, gpointer user_data);

struct _GtNativeStreamsInterface
{
  GTypeInterface g_iface;

  GIOStream *(*open_stream) (GtNativeStreams *tunnel, GError **error);
  void (*set_accept_func) (GtNativeStreams *tunnel, GtNativeStreamFunc func, gpointer user_data);
  void (*reset) (GtNativeStreams *stream, guint64 code);
  gboolean (*get_reset_code) (GtNativeStreams *stream, guint64 *code);

  /* Optional (NULL when the transport has none): unreliable datagrams on the connection of a
   * tunnel stream (QUIC DATAGRAM frames, RFC 9221). */
  gsize (*get_max_datagram) (GtNativeStreams *tunnel);
  gboolean (*send_datagram) (GtNativeStreams *tunnel, const guint8 *head, gsize head_len,
                             const guint8 *data, gsize len);
  void (*set_datagram_func) (GtNativeStreams *tunnel, GtNativeDatagramFunc func,
                             gpointer user_data);
};

/* Opens a new bidirectional stream beside tunnel (the control stream) on the same connection. */
GIOStream *gt_native_streams_open (GtNativeStreams *tunnel, GError **error);
/* Hands every stream the peer opens from now on (and those already waiting) to func; NULL stops
 * taking them (the next ones are reset). Called on the tunnel's main context. */
void gt_native_streams_set_accept_func (GtNativeStreams *tunnel, GtNativeStreamFunc func,
                                        gpointer user_data);
/* Aborts stream in both directions with an application code (the peer's reads fail, and it can
 * learn the code with gt_native_streams_get_reset_code). */
void gt_native_streams_reset (GtNativeStreams *stream, guint64 code);
/* TRUE with the code when the peer reset stream. */
gboolean gt_native_streams_get_reset_code (GtNativeStreams *stream, guint64 *code);
/* The largest datagram (head + data) that goes out as one unreliable datagram now: 0 when the
 * transport or the peer takes none. */
gsize gt_native_streams_get_max_datagram (GtNativeStreams *tunnel);
/* Queues head + data as one datagram (at most gt_native_streams_get_max_datagram bytes); FALSE
 * when it was dropped (the connection's datagram queue is full or it closed). */
gboolean gt_native_streams_send_datagram (GtNativeStreams *tunnel, const guint8 *head,
                                          gsize head_len, const guint8 *data, gsize len);
/* Hands every datagram that arrives to func (NULL: they are dropped). It runs while the
 * transport reads a packet: it must not close the tunnel, only queue what it sends. */
void gt_native_streams_set_datagram_func (GtNativeStreams *tunnel, GtNativeDatagramFunc func,
                                          gpointer user_data);

G_END_DECLS
