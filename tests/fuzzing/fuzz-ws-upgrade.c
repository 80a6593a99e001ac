/* fuzz-ws-upgrade.c: the WebSocket upgrade request check and answer (server side), and the status
 * line taken from an HTTP proxy's answer to CONNECT (client side). */
#include "config.h"

#include <gio/gio.h>

#include "gt-http-proxy.h"
#include "gt-ws-stream.h"

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autofree char *status = NULL;

  (void) gt_ws_is_upgrade_request (data, size, "/gt-tunnel");
  status = gt_http_status_line (data, size);

  /* The full accept path writes its 101 or 400 into memory. */
  if (size <= 8192)
    {
      g_autoptr (GInputStream) in = g_memory_input_stream_new ();
      g_autoptr (GOutputStream) out = g_memory_output_stream_new_resizable ();
      g_autoptr (GIOStream) io = g_simple_io_stream_new (in, out);
      g_autoptr (GError) error = NULL;
      g_autoptr (GIOStream) ws = gt_ws_server_accept (io, data, size, &error);

      if (ws == NULL && error == NULL)
        abort ();
      if (ws != NULL)
        g_io_stream_close (ws, NULL, NULL);
    }
  return 0;
}
