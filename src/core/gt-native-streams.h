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

struct _GtNativeStreamsInterface
{
  GTypeInterface g_iface;

  GIOStream *(*open_stream) (GtNativeStreams *tunnel, GError **error);
  void (*set_accept_func) (GtNativeStreams *tunnel, GtNativeStreamFunc func, gpointer user_data);
  void (*reset) (GtNativeStreams *stream, guint64 code);
  gboolean (*get_reset_code) (GtNativeStreams *stream, guint64 *code);
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

G_END_DECLS
