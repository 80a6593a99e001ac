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

gsize
gt_native_streams_get_max_datagram (GtNativeStreams *tunnel)
{
  GtNativeStreamsInterface *iface;

  g_return_val_if_fail (GT_IS_NATIVE_STREAMS (tunnel), 0);
  iface = GT_NATIVE_STREAMS_GET_IFACE (tunnel);
  return iface->get_max_datagram != NULL ? iface->get_max_datagram (tunnel) : 0;
}

gboolean
gt_native_streams_send_datagram (GtNativeStreams *tunnel, const guint8 *head, gsize head_len,
                                 const guint8 *data, gsize len)
{
  GtNativeStreamsInterface *iface;

  g_return_val_if_fail (GT_IS_NATIVE_STREAMS (tunnel), FALSE);
  iface = GT_NATIVE_STREAMS_GET_IFACE (tunnel);
  if (iface->send_datagram == NULL)
    return FALSE;
  return iface->send_datagram (tunnel, head, head_len, data, len);
}

void
gt_native_streams_set_datagram_func (GtNativeStreams *tunnel, GtNativeDatagramFunc func,
                                     gpointer user_data)
{
  GtNativeStreamsInterface *iface;

  g_return_if_fail (GT_IS_NATIVE_STREAMS (tunnel));
  iface = GT_NATIVE_STREAMS_GET_IFACE (tunnel);
  if (iface->set_datagram_func != NULL)
    iface->set_datagram_func (tunnel, func, user_data);
}
