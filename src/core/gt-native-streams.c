/* gt-native-streams.c: the native-streams capability of tunnel GIOStreams (see the header). */
#include "config.h"

#include "gt-native-streams.h"

G_DEFINE_INTERFACE (GtNativeStreams, gt_native_streams, G_TYPE_IO_STREAM)

static void
gt_native_streams_default_init (GtNativeStreamsInterface *iface)
{
}

GIOStream *
gt_native_streams_open (GtNativeStreams *tunnel, GError **error)
{
  g_return_val_if_fail (GT_IS_NATIVE_STREAMS (tunnel), NULL);
  return GT_NATIVE_STREAMS_GET_IFACE (tunnel)->open_stream (tunnel, error);
}

void
gt_native_streams_set_accept_func (GtNativeStreams *tunnel, GtNativeStreamFunc func,
                                   gpointer user_data)
{
  g_return_if_fail (GT_IS_NATIVE_STREAMS (tunnel));
  GT_NATIVE_STREAMS_GET_IFACE (tunnel)->set_accept_func (tunnel, func, user_data);
}

void
gt_native_streams_reset (GtNativeStreams *stream, guint64 code)
{
  g_return_if_fail (GT_IS_NATIVE_STREAMS (stream));
  GT_NATIVE_STREAMS_GET_IFACE (stream)->reset (stream, code);
}

gboolean
gt_native_streams_get_reset_code (GtNativeStreams *stream, guint64 *code)
{
  g_return_val_if_fail (GT_IS_NATIVE_STREAMS (stream), FALSE);
  return GT_NATIVE_STREAMS_GET_IFACE (stream)->get_reset_code (stream, code);
}
