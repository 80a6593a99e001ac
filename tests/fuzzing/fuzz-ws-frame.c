/* fuzz-ws-frame.c: the WebSocket frame parser and gt's framer stream reading arbitrary bytes, as
 * a server (masked frames expected) and as a client. */
#include "config.h"

#include <gio/gio.h>

#include "gt-ws-frame.h"
#include "gt-ws-stream.h"

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

static void
read_all (const guint8 *data, size_t size, gboolean client)
{
  g_autoptr (GInputStream) in = g_memory_input_stream_new_from_data (data, size, NULL);
  g_autoptr (GOutputStream) out = g_memory_output_stream_new_resizable ();
  g_autoptr (GIOStream) io = g_simple_io_stream_new (in, out);
  g_autoptr (GIOStream) ws = NULL;
  GPollableInputStream *wsin;
  guint8 buf[4096];
  gsize total = 0;

  ws = gt_ws_stream_new (io, client, NULL, 0);
  wsin = G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (ws));
  for (;;)
    {
      g_autoptr (GError) error = NULL;
      gssize n = g_pollable_input_stream_read_nonblocking (wsin, buf, sizeof buf, NULL, &error);

      if (n <= 0)
        {
          if (n < 0 && error == NULL)
            abort ();
          break;
        }
      total += n;
      /* Payload never exceeds the input. */
      if (total > size)
        abort ();
    }
  g_io_stream_close (ws, NULL, NULL);
  g_clear_object (&ws);
  while (g_main_context_iteration (NULL, FALSE))
    ;
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  for (int masked = 0; masked <= 1; masked++)
    {
      GtWsFrameHeader hdr;
      g_autoptr (GError) error = NULL;
      guint16 code = 0;
      GtWsParseResult r;

      r = gt_ws_frame_parse_header (data, size, masked, GT_WS_MAX_FRAME_IN, &hdr, &code, &error);
      if (r == GT_WS_PARSE_ERROR && (error == NULL || code < 1000))
        abort ();
      if (r == GT_WS_PARSE_OK
          && (hdr.header_len > size || hdr.header_len > GT_WS_FRAME_MAX_HEADER
              || ((hdr.opcode & 0x8) && hdr.length > GT_WS_CONTROL_MAX)))
        abort ();
      if (r == GT_WS_PARSE_OK && (hdr.opcode & 0x8) && size >= hdr.header_len + hdr.length)
        {
          guint8 payload[GT_WS_CONTROL_MAX];
          g_autoptr (GError) close_error = NULL;

          gt_ws_mask_copy (payload, data + hdr.header_len, hdr.length, hdr.mask, 0);
          (void) gt_ws_close_payload_parse (payload, hdr.length, &code, &close_error);
        }
    }
  if (size <= 64 * 1024)
    {
      read_all (data, size, FALSE);
      read_all (data, size, TRUE);
    }
  return 0;
}
