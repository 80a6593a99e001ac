/* gt-ws-stream.c: gt's own WebSocket framer: a tunnel byte stream in binary frames on a connection. */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include <string.h>

#include "gt-fd-source.h"
#include "gt-tls-stream.h"
#include "gt-ws-stream.h"
#include "gt-ws-frame.h"
#include "gt-ready-source.h"

/* Receive buffer for frame headers and small payloads; larger payload reads go straight into the
 * caller's buffer and are unmasked there. */
#define RX_SIZE (64 * 1024)
#define DIRECT_READ_MIN 2048
/* Queued frame bytes above which writes wait (back-pressure to the tunnel). */
#define TX_HIGH (512 * 1024)
#define KEEPALIVE_SECONDS 15
/* How long a closed stream may take to hand its last frames to a peer that does not read. */
#define CLOSE_FLUSH_SECONDS 10

typedef struct
{
  grefcount ref;
  GIOStream *base;
  GPollableInputStream *bin;
  GPollableOutputStream *bout;
  GMainContext *context;
  gboolean client;

  /* receiving */
  guint8 *rx;
  gsize rx_start;
  gsize rx_end;
  guint64 payload_left; /* of the current data frame */
  guint8 mask[4];
  guint mask_off;
  gboolean masked;
  gboolean in_message; /* a fragmented binary message goes on */
  gboolean eof;        /* close frame or end of the connection: reads return 0 */
  GError *error;

  /* sending */
  guint8 *tx;
  gsize tx_start;
  gsize tx_end;
  gsize tx_cap;
  gboolean close_sent;
  gboolean user_closed;
  gboolean closing; /* closed by the user: holds a ref until base is closed */
  gboolean base_closed;
  GSource *flush_source;
  GSource *ping_source;
  GSource *close_timeout;
} WsConn;

static void conn_flush (WsConn *c);

static WsConn *
conn_ref (WsConn *c)
{
  g_ref_count_inc (&c->ref);
  return c;
}

static void
clear_source (GSource **source)
{
  if (*source != NULL)
    {
      g_source_destroy (*source);
      g_clear_pointer (source, g_source_unref);
    }
}

static void
conn_unref (WsConn *c)
{
  if (!g_ref_count_dec (&c->ref))
    return;
  clear_source (&c->flush_source);
  clear_source (&c->ping_source);
  clear_source (&c->close_timeout);
  g_clear_object (&c->base);
  g_main_context_unref (c->context);
  g_clear_error (&c->error);
  g_free (c->rx);
  g_free (c->tx);
  g_free (c);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (WsConn, conn_unref)

static gsize
tx_len (WsConn *c)
{
  return c->tx_end - c->tx_start;
}

/* Room for `len` more bytes at tx_end. */
static guint8 *
tx_reserve (WsConn *c, gsize len)
{
  if (c->tx_start > 0 && c->tx_start == c->tx_end)
    c->tx_start = c->tx_end = 0;
  if (c->tx_end + len > c->tx_cap && c->tx_start > 0)
    {
      memmove (c->tx, c->tx + c->tx_start, tx_len (c));
      c->tx_end -= c->tx_start;
      c->tx_start = 0;
    }
  if (c->tx_end + len > c->tx_cap)
    {
      c->tx_cap = MAX (c->tx_end + len, MAX (c->tx_cap * 2, 64 * 1024));
      c->tx = g_realloc (c->tx, c->tx_cap);
    }
  return c->tx + c->tx_end;
}

static void
tx_append (WsConn *c, const void *data, gsize len)
{
  memcpy (tx_reserve (c, len), data, len);
  c->tx_end += len;
}

static void
new_mask (guint8 mask[4])
{
  guint32 r = g_random_int ();

  memcpy (mask, &r, 4);
}

/* Queues one whole frame whose payload is the first `len` bytes of the vectors. */
static void
queue_frame (WsConn *c, guint8 opcode, const GOutputVector *vectors, gsize n_vectors, gsize len)
{
  guint8 header[GT_WS_FRAME_MAX_HEADER];
  guint8 mask[4];
  gsize hlen;
  gsize left = len;
  guint off = 0;

  if (c->client)
    new_mask (mask);
  hlen = gt_ws_frame_write_header (header, TRUE, opcode, len, c->client ? mask : NULL);
  tx_reserve (c, hlen + len);
  tx_append (c, header, hlen);
  for (gsize i = 0; i < n_vectors && left > 0; i++)
    {
      gsize n = MIN (vectors[i].size, left);

      if (n == 0)
        continue;
      if (c->client)
        off = gt_ws_mask_copy (c->tx + c->tx_end, vectors[i].buffer, n, mask, off);
      else
        memcpy (c->tx + c->tx_end, vectors[i].buffer, n);
      c->tx_end += n;
      left -= n;
    }
}

static void
queue_control (WsConn *c, guint8 opcode, const guint8 *payload, gsize len)
{
  GOutputVector v = { payload, len };

  queue_frame (c, opcode, &v, 1, len);
}

static void
queue_close (WsConn *c, guint16 code)
{
  guint8 payload[2] = { code >> 8, code & 0xFF };

  if (c->close_sent)
    return;
  c->close_sent = TRUE;
  queue_control (c, GT_WS_OP_CLOSE, payload, code == GT_WS_CLOSE_NO_STATUS ? 0 : 2);
}

static void
base_close_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GError) error = NULL;

  if (!g_io_stream_close_finish (G_IO_STREAM (source), result, &error))
    g_debug ("WebSocket tunnel: closing the connection: %s", error->message);
}

/* Closes the connection (without blocking) once nothing is left to send and either the user closed
 * the stream or both close frames have passed. */
static void
conn_maybe_close_base (WsConn *c)
{
  gboolean release;

  if (c->base_closed || tx_len (c) > 0)
    return;
  if (!c->closing && !(c->close_sent && (c->eof || c->error != NULL)))
    return;
  c->base_closed = TRUE;
  clear_source (&c->flush_source);
  clear_source (&c->ping_source);
  clear_source (&c->close_timeout);
  g_io_stream_close_async (c->base, G_PRIORITY_DEFAULT, NULL, base_close_done_cb, NULL);
  release = c->closing;
  c->closing = FALSE;
  if (release)
    conn_unref (c);
}

/* Records the first error; sends a close frame with close_code (0 = none) and stops reading. */
static void
conn_fail (WsConn *c, GError *error, guint16 close_code)
{
  g_debug ("WebSocket tunnel: %s", error->message);
  if (c->error == NULL && !c->eof)
    c->error = error;
  else
    g_error_free (error);
  if (close_code != 0 && !c->base_closed)
    queue_close (c, close_code);
  else
    c->close_sent = TRUE; /* the connection is unusable: send nothing more */
  c->payload_left = 0;
  conn_flush (c);
}

static gboolean
flush_ready_cb (GObject *stream, gpointer user_data)
{
  g_autoptr (WsConn) c = conn_ref (user_data);

  conn_flush (c);
  return G_SOURCE_CONTINUE; /* conn_flush destroys the source once drained */
}

/* Writes what the connection takes; a source writes the rest later. */
static void
conn_flush (WsConn *c)
{
  while (tx_len (c) > 0 && !c->base_closed)
    {
      GOutputVector v = { c->tx + c->tx_start, tx_len (c) };
      g_autoptr (GError) error = NULL;
      gsize written = 0;
      GPollableReturn r;

      r = g_pollable_output_stream_writev_nonblocking (c->bout, &v, 1, &written, NULL, &error);
      if (r == G_POLLABLE_RETURN_FAILED)
        {
          c->tx_start = c->tx_end = 0;
          if (c->error == NULL && !c->eof)
            c->error = g_steal_pointer (&error);
          c->close_sent = TRUE;
          break;
        }
      c->tx_start += written;
      if (r == G_POLLABLE_RETURN_WOULD_BLOCK || written == 0)
        break;
    }
  if (tx_len (c) == 0)
    {
      c->tx_start = c->tx_end = 0;
      clear_source (&c->flush_source);
      /* A closed or failed connection keeps no buffer. */
      if (c->close_sent)
        {
          g_clear_pointer (&c->tx, g_free);
          c->tx_cap = 0;
        }
      conn_maybe_close_base (c);
      return;
    }
  if (c->flush_source == NULL && !c->base_closed)
    {
      c->flush_source = gt_pollable_source_for_io (c->base, TRUE);
      g_source_set_callback (c->flush_source, (GSourceFunc) (void (*) (void)) flush_ready_cb, c,
                             NULL);
      g_source_attach (c->flush_source, c->context);
    }
}

static gboolean
close_timeout_cb (gpointer user_data)
{
  g_autoptr (WsConn) c = conn_ref (user_data);

  g_debug ("WebSocket tunnel: peer did not take the last frames in time");
  g_clear_pointer (&c->close_timeout, g_source_unref);
  c->tx_start = c->tx_end = 0;
  conn_maybe_close_base (c);
  return G_SOURCE_REMOVE;
}

/* The user closed the stream: close 1000, then the connection. Never blocks. */
static void
conn_close (WsConn *c)
{
  if (c->user_closed)
    return;
  c->user_closed = TRUE;
  if (c->base_closed)
    return;
  c->closing = TRUE;
  conn_ref (c);
  queue_close (c, GT_WS_CLOSE_NORMAL);
  conn_flush (c);
  if (!c->base_closed && c->close_timeout == NULL)
    {
      c->close_timeout = g_timeout_source_new_seconds (CLOSE_FLUSH_SECONDS);
      g_source_set_callback (c->close_timeout, close_timeout_cb, c, NULL);
      g_source_attach (c->close_timeout, c->context);
    }
}

static gboolean
ping_cb (gpointer user_data)
{
  g_autoptr (WsConn) c = conn_ref (user_data);

  if (c->close_sent || c->base_closed)
    return G_SOURCE_CONTINUE;
  queue_control (c, GT_WS_OP_PING, NULL, 0);
  conn_flush (c);
  return G_SOURCE_CONTINUE;
}

/* ------------------------------------------------------------------------------------------ */
/* Receiving */

static gsize
rx_avail (WsConn *c)
{
  return c->rx_end - c->rx_start;
}

/* The unread bytes (NULL before the first read allocates the buffer). */
static const guint8 *
rx_head (WsConn *c)
{
  return c->rx != NULL ? c->rx + c->rx_start : NULL;
}

/* TRUE when a read would make progress without reading the connection. */
static gboolean
conn_in_ready (WsConn *c)
{
  GtWsFrameHeader hdr;
  guint16 code;
  GtWsParseResult r;

  if (c->error != NULL || c->eof || c->base_closed)
    return TRUE;
  if (rx_avail (c) == 0)
    return FALSE;
  if (c->payload_left > 0)
    return TRUE;
  r = gt_ws_frame_parse_header (rx_head (c), rx_avail (c), !c->client, GT_WS_MAX_FRAME_IN,
                                &hdr, &code, NULL);
  if (r == GT_WS_PARSE_NEED_MORE)
    return FALSE;
  if (r == GT_WS_PARSE_OK && (hdr.opcode & 0x8) != 0)
    return rx_avail (c) >= hdr.header_len + hdr.length;
  return TRUE;
}

/* Reads the connection into the receive buffer: >0 bytes, 0 at its end, -1 with an error. */
static gssize
rx_fill (WsConn *c, GError **error)
{
  gssize n;

  if (c->rx == NULL)
    c->rx = g_malloc (RX_SIZE);
  if (c->rx_start > 0)
    {
      memmove (c->rx, c->rx + c->rx_start, rx_avail (c));
      c->rx_end -= c->rx_start;
      c->rx_start = 0;
    }
  g_assert (c->rx_end < RX_SIZE);
  n = g_pollable_input_stream_read_nonblocking (c->bin, c->rx + c->rx_end, RX_SIZE - c->rx_end,
                                                NULL, error);
  if (n > 0)
    c->rx_end += n;
  return n;
}

static void
take_payload (WsConn *c, guint8 *dst, const guint8 *src, gsize n)
{
  if (c->masked)
    c->mask_off = gt_ws_mask_copy (dst, src, n, c->mask, c->mask_off);
  else if (dst != src)
    memcpy (dst, src, n);
  c->payload_left -= n;
}

static gssize
conn_fail_read (WsConn *c, GError *error, guint16 close_code, GError **out)
{
  g_propagate_error (out, g_error_copy (error));
  conn_fail (c, error, close_code);
  return -1;
}

/* A failed read of the connection: would-block passes through, anything else ends the tunnel. */
static gssize
read_failed (WsConn *c, GError *local, GError **error)
{
  if (g_error_matches (local, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
    {
      g_propagate_error (error, local);
      return -1;
    }
  return conn_fail_read (c, local, 0, error);
}

/* Handles a complete control frame at rx_start (header already parsed). */
static gboolean
handle_control (WsConn *c, const GtWsFrameHeader *hdr, GError **error)
{
  guint8 payload[GT_WS_CONTROL_MAX];
  gsize len = hdr->length;
  GError *local = NULL;
  guint16 code;

  if (hdr->masked)
    gt_ws_mask_copy (payload, c->rx + c->rx_start + hdr->header_len, len, hdr->mask, 0);
  else
    memcpy (payload, c->rx + c->rx_start + hdr->header_len, len);
  c->rx_start += hdr->header_len + len;

  switch (hdr->opcode)
    {
    case GT_WS_OP_PING:
      if (!c->close_sent)
        {
          queue_control (c, GT_WS_OP_PONG, payload, len);
          conn_flush (c);
        }
      return TRUE;
    case GT_WS_OP_PONG:
      return TRUE;
    case GT_WS_OP_CLOSE:
    default:
      if (!gt_ws_close_payload_parse (payload, len, &code, &local))
        {
          conn_fail_read (c, local, GT_WS_CLOSE_PROTOCOL_ERROR, error);
          return FALSE;
        }
      g_debug ("WebSocket tunnel: peer closed with %u", code);
      c->eof = TRUE;
      c->payload_left = 0;
      /* Echo the code (RFC 6455 5.5.1); then the connection closes. */
      queue_close (c, code == GT_WS_CLOSE_NO_STATUS ? GT_WS_CLOSE_NORMAL : code);
      conn_flush (c);
      return TRUE;
    }
}

static gssize
conn_read (WsConn *c, guint8 *buffer, gsize count, GError **error)
{
  if (count == 0)
    return 0;
  for (;;)
    {
      GtWsFrameHeader hdr;
      GError *local = NULL;
      guint16 code = 0;
      GtWsParseResult r;
      gssize n;

      if (c->error != NULL)
        {
          g_propagate_error (error, g_error_copy (c->error));
          return -1;
        }
      if (c->eof || c->base_closed)
        return 0;

      if (c->payload_left > 0)
        {
          gsize want = MIN (count, c->payload_left);

          if (rx_avail (c) > 0)
            {
              gsize take = MIN (want, rx_avail (c));

              take_payload (c, buffer, c->rx + c->rx_start, take);
              c->rx_start += take;
              return take;
            }
          if (want >= DIRECT_READ_MIN || want == c->payload_left)
            {
              n = g_pollable_input_stream_read_nonblocking (c->bin, buffer, want, NULL, &local);
              if (n > 0)
                {
                  take_payload (c, buffer, buffer, n);
                  return n;
                }
            }
          else
            n = rx_fill (c, &local);
          if (n < 0)
            return read_failed (c, local, error);
          if (n == 0)
            return conn_fail_read (c,
                                   g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                                                        "WebSocket tunnel: connection closed in "
                                                        "the middle of a frame"),
                                   0, error);
          continue;
        }

      r = gt_ws_frame_parse_header (rx_head (c), rx_avail (c), !c->client,
                                    GT_WS_MAX_FRAME_IN, &hdr, &code, &local);
      if (r == GT_WS_PARSE_ERROR)
        return conn_fail_read (c, local, code, error);
      if (r == GT_WS_PARSE_NEED_MORE
          || ((hdr.opcode & 0x8) != 0 && rx_avail (c) < hdr.header_len + hdr.length))
        {
          n = rx_fill (c, &local);
          if (n < 0)
            return read_failed (c, local, error);
          if (n == 0)
            {
              /* The peer went away without a close frame: the end of the tunnel all the same. */
              c->eof = TRUE;
              c->close_sent = TRUE;
              c->tx_start = c->tx_end = 0;
              conn_maybe_close_base (c);
              return 0;
            }
          continue;
        }

      if ((hdr.opcode & 0x8) != 0)
        {
          if (!handle_control (c, &hdr, error))
            return -1;
          continue;
        }
      if (hdr.opcode == GT_WS_OP_TEXT)
        return conn_fail_read (c,
                               g_error_new_literal (G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                                                    "WebSocket tunnel: text message received"),
                               GT_WS_CLOSE_UNSUPPORTED_DATA, error);
      if ((hdr.opcode == GT_WS_OP_CONTINUATION) != c->in_message)
        return conn_fail_read (c,
                               g_error_new_literal (G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                                                    c->in_message
                                                      ? "WebSocket tunnel: new message inside "
                                                        "a fragmented one"
                                                      : "WebSocket tunnel: continuation frame "
                                                        "without a message"),
                               GT_WS_CLOSE_PROTOCOL_ERROR, error);
      c->rx_start += hdr.header_len;
      c->in_message = !hdr.fin;
      c->payload_left = hdr.length;
      c->masked = hdr.masked;
      memcpy (c->mask, hdr.mask, 4);
      c->mask_off = 0;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Sending */

static gboolean
conn_out_check (WsConn *c, GError **error)
{
  if (c->error != NULL)
    {
      g_propagate_error (error, g_error_copy (c->error));
      return FALSE;
    }
  if (c->user_closed)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_CLOSED, "WebSocket tunnel is closed");
      return FALSE;
    }
  if (c->close_sent || c->eof || c->base_closed)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                           "WebSocket tunnel closed by peer");
      return FALSE;
    }
  return TRUE;
}

static gboolean
conn_out_ready (WsConn *c)
{
  return c->error != NULL || c->closing || c->base_closed || c->close_sent || c->eof
         || tx_len (c) < TX_HIGH;
}

/* A client frame written into a TLS stream's send queue: the header, then the payload masked. */
typedef struct
{
  guint8 header[GT_WS_FRAME_MAX_HEADER];
  gsize hlen;
  gsize hpos;
  guint8 mask[4];
  guint mask_off;
  const GOutputVector *v;
  gsize i;
  gsize pos;
} MaskFill;

static void
mask_fill_cb (guint8 *dst, gsize n, gpointer data)
{
  MaskFill *f = data;

  if (f->hpos < f->hlen)
    {
      gsize h = MIN (n, f->hlen - f->hpos);

      memcpy (dst, f->header + f->hpos, h);
      f->hpos += h;
      dst += h;
      n -= h;
    }
  while (n > 0)
    {
      gsize k = MIN (n, f->v[f->i].size - f->pos);

      f->mask_off = gt_ws_mask_copy (dst, (const guint8 *) f->v[f->i].buffer + f->pos, k, f->mask,
                                     f->mask_off);
      dst += k;
      n -= k;
      f->pos += k;
      if (f->pos == f->v[f->i].size)
        {
          f->i++;
          f->pos = 0;
        }
    }
}

/* Sends up to GT_WS_MAX_MESSAGE bytes of the vectors as one binary frame; returns how many. A
 * server frame goes out in one vectored write with the caller's buffers when nothing is queued;
 * a client frame on gt's TLS stream is masked straight into its send queue. */
static gsize
conn_send (WsConn *c, const GOutputVector *vectors, gsize n_vectors)
{
  guint8 header[GT_WS_FRAME_MAX_HEADER];
  GOutputVector local[9];
  gsize total = 0;
  gsize take;
  gsize hlen;
  gsize nv = 0;
  gsize written = 0;
  gsize skip;
  GPollableReturn r;

  for (gsize i = 0; i < n_vectors && total < GT_WS_MAX_MESSAGE; i++)
    total += vectors[i].size;
  take = MIN (total, GT_WS_MAX_MESSAGE);
  if (take == 0)
    return 0;
  if (c->client && tx_len (c) == 0 && !c->base_closed)
    {
      MaskFill f = { .v = vectors };

      new_mask (f.mask);
      f.hlen = gt_ws_frame_write_header (f.header, TRUE, GT_WS_OP_BINARY, take, f.mask);
      if (_gt_tls_stream_write_with (c->base, f.hlen + take, mask_fill_cb, &f))
        return take;
    }
  if (c->client || tx_len (c) > 0 || n_vectors >= G_N_ELEMENTS (local))
    {
      queue_frame (c, GT_WS_OP_BINARY, vectors, n_vectors, take);
      conn_flush (c);
      return take;
    }

  hlen = gt_ws_frame_write_header (header, TRUE, GT_WS_OP_BINARY, take, NULL);
  local[nv++] = (GOutputVector) { header, hlen };
  for (gsize i = 0, left = take; i < n_vectors && left > 0; i++)
    if (vectors[i].size > 0)
      {
        local[nv++] = (GOutputVector) { vectors[i].buffer, MIN (vectors[i].size, left) };
        left -= local[nv - 1].size;
      }
  r = g_pollable_output_stream_writev_nonblocking (c->bout, local, nv, &written, NULL, NULL);
  if (r == G_POLLABLE_RETURN_FAILED)
    written = 0; /* queued below; the flush reports the error */
  /* Queue what the connection did not take. */
  skip = written;
  for (gsize i = 0; i < nv; i++)
    {
      if (skip >= local[i].size)
        {
          skip -= local[i].size;
          continue;
        }
      tx_append (c, (const guint8 *) local[i].buffer + skip, local[i].size - skip);
      skip = 0;
    }
  if (tx_len (c) > 0)
    conn_flush (c);
  return take;
}

/* ------------------------------------------------------------------------------------------ */
/* The GIOStream and its two pollable streams */

#define GT_TYPE_WS_CONN_INPUT (gt_ws_conn_input_get_type ())
G_DECLARE_FINAL_TYPE (GtWsConnInput, gt_ws_conn_input, GT, WS_CONN_INPUT, GInputStream)
struct _GtWsConnInput
{
  GInputStream parent_instance;
  WsConn *conn;
};

#define GT_TYPE_WS_CONN_OUTPUT (gt_ws_conn_output_get_type ())
G_DECLARE_FINAL_TYPE (GtWsConnOutput, gt_ws_conn_output, GT, WS_CONN_OUTPUT, GOutputStream)
struct _GtWsConnOutput
{
  GOutputStream parent_instance;
  WsConn *conn;
};

#define GT_TYPE_WS_CONN_STREAM (gt_ws_conn_stream_get_type ())
G_DECLARE_FINAL_TYPE (GtWsConnStream, gt_ws_conn_stream, GT, WS_CONN_STREAM, GIOStream)
struct _GtWsConnStream
{
  GIOStream parent_instance;
  GInputStream *in;
  GOutputStream *out;
};

static void input_pollable_init (GPollableInputStreamInterface *iface);
static void output_pollable_init (GPollableOutputStreamInterface *iface);

G_DEFINE_TYPE_WITH_CODE (GtWsConnInput, gt_ws_conn_input, G_TYPE_INPUT_STREAM,
                         G_IMPLEMENT_INTERFACE (G_TYPE_POLLABLE_INPUT_STREAM,
                                                input_pollable_init))
G_DEFINE_TYPE_WITH_CODE (GtWsConnOutput, gt_ws_conn_output, G_TYPE_OUTPUT_STREAM,
                         G_IMPLEMENT_INTERFACE (G_TYPE_POLLABLE_OUTPUT_STREAM,
                                                output_pollable_init))
G_DEFINE_TYPE (GtWsConnStream, gt_ws_conn_stream, G_TYPE_IO_STREAM)

/* Close operations never block here: the async variants finish at once instead of running the
 * sync ones in a worker thread (GIO's default). */
static void
return_true_async (gpointer source, GCancellable *cancellable, GAsyncReadyCallback callback,
                   gpointer user_data, gpointer tag)
{
  g_autoptr (GTask) task = g_task_new (source, cancellable, callback, user_data);

  g_task_set_source_tag (task, tag);
  g_task_return_boolean (task, TRUE);
}

static gssize
input_read_nonblocking (GPollableInputStream *stream, void *buffer, gsize count, GError **error)
{
  return conn_read (GT_WS_CONN_INPUT (stream)->conn, buffer, count, error);
}

static gssize
input_read (GInputStream *stream, void *buffer, gsize count, GCancellable *cancellable,
            GError **error)
{
  gssize n = conn_read (GT_WS_CONN_INPUT (stream)->conn, buffer, count, error);

  /* The tunnel runs on a main context: waiting here would stall it. */
  if (n < 0 && g_error_matches (*error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
    {
      g_clear_error (error);
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                           "blocking reads are not supported on a WebSocket tunnel");
    }
  return n;
}

static gboolean
input_close (GInputStream *stream, GCancellable *cancellable, GError **error)
{
  return TRUE;
}

static void
input_close_async (GInputStream *stream, int io_priority, GCancellable *cancellable,
                   GAsyncReadyCallback callback, gpointer user_data)
{
  return_true_async (stream, cancellable, callback, user_data, input_close_async);
}

static gboolean
input_close_finish (GInputStream *stream, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

static gboolean
input_can_poll (GPollableInputStream *stream)
{
  return TRUE;
}

static gboolean
input_is_readable (GPollableInputStream *stream)
{
  WsConn *c = GT_WS_CONN_INPUT (stream)->conn;

  return conn_in_ready (c) || g_pollable_input_stream_is_readable (c->bin);
}

static GSource *
input_create_source (GPollableInputStream *stream, GCancellable *cancellable)
{
  WsConn *c = GT_WS_CONN_INPUT (stream)->conn;
  g_autoptr (GSource) child = NULL;

  if (!c->base_closed)
    child = gt_pollable_source_for_io (c->base, FALSE);
  return _gt_ready_source_new (G_OBJECT (stream), (gboolean (*) (gpointer)) conn_in_ready,
                               conn_ref (c), (GDestroyNotify) conn_unref, child, cancellable);
}

static void
gt_ws_conn_input_finalize (GObject *object)
{
  g_clear_pointer (&GT_WS_CONN_INPUT (object)->conn, conn_unref);
  G_OBJECT_CLASS (gt_ws_conn_input_parent_class)->finalize (object);
}

static void
gt_ws_conn_input_class_init (GtWsConnInputClass *klass)
{
  GInputStreamClass *in_class = G_INPUT_STREAM_CLASS (klass);

  G_OBJECT_CLASS (klass)->finalize = gt_ws_conn_input_finalize;
  in_class->read_fn = input_read;
  in_class->close_fn = input_close;
  in_class->close_async = input_close_async;
  in_class->close_finish = input_close_finish;
}

static void
input_pollable_init (GPollableInputStreamInterface *iface)
{
  iface->can_poll = input_can_poll;
  iface->is_readable = input_is_readable;
  iface->create_source = input_create_source;
  iface->read_nonblocking = input_read_nonblocking;
}

static void
gt_ws_conn_input_init (GtWsConnInput *self)
{
}

static GPollableReturn
output_writev_nonblocking (GPollableOutputStream *stream, const GOutputVector *vectors,
                           gsize n_vectors, gsize *bytes_written, GError **error)
{
  WsConn *c = GT_WS_CONN_OUTPUT (stream)->conn;

  *bytes_written = 0;
  if (!conn_out_check (c, error))
    return G_POLLABLE_RETURN_FAILED;
  if (tx_len (c) >= TX_HIGH)
    {
      conn_flush (c);
      if (!conn_out_check (c, error))
        return G_POLLABLE_RETURN_FAILED;
      if (tx_len (c) >= TX_HIGH)
        return G_POLLABLE_RETURN_WOULD_BLOCK;
    }
  *bytes_written = conn_send (c, vectors, n_vectors);
  return G_POLLABLE_RETURN_OK;
}

static gssize
output_write_nonblocking (GPollableOutputStream *stream, const void *buffer, gsize count,
                          GError **error)
{
  GOutputVector v = { buffer, count };
  gsize written = 0;

  switch (output_writev_nonblocking (stream, &v, 1, &written, error))
    {
    case G_POLLABLE_RETURN_OK:
      return written;
    case G_POLLABLE_RETURN_WOULD_BLOCK:
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "tunnel send queue is full");
      return -1;
    case G_POLLABLE_RETURN_FAILED:
    default:
      return -1;
    }
}

/* A blocking write cannot wait for the main context: it queues regardless of the high mark. */
static gssize
output_write (GOutputStream *stream, const void *buffer, gsize count, GCancellable *cancellable,
              GError **error)
{
  WsConn *c = GT_WS_CONN_OUTPUT (stream)->conn;
  GOutputVector v = { buffer, count };

  if (!conn_out_check (c, error))
    return -1;
  return conn_send (c, &v, 1);
}

static gboolean
output_close (GOutputStream *stream, GCancellable *cancellable, GError **error)
{
  conn_close (GT_WS_CONN_OUTPUT (stream)->conn);
  return TRUE;
}

static void
output_close_async (GOutputStream *stream, int io_priority, GCancellable *cancellable,
                    GAsyncReadyCallback callback, gpointer user_data)
{
  conn_close (GT_WS_CONN_OUTPUT (stream)->conn);
  return_true_async (stream, cancellable, callback, user_data, output_close_async);
}

static gboolean
output_close_finish (GOutputStream *stream, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

static gboolean
output_can_poll (GPollableOutputStream *stream)
{
  return TRUE;
}

static gboolean
output_is_writable (GPollableOutputStream *stream)
{
  return conn_out_ready (GT_WS_CONN_OUTPUT (stream)->conn);
}

static GSource *
output_create_source (GPollableOutputStream *stream, GCancellable *cancellable)
{
  WsConn *c = GT_WS_CONN_OUTPUT (stream)->conn;

  return _gt_ready_source_new (G_OBJECT (stream), (gboolean (*) (gpointer)) conn_out_ready,
                               conn_ref (c), (GDestroyNotify) conn_unref, NULL, cancellable);
}

static void
gt_ws_conn_output_finalize (GObject *object)
{
  g_clear_pointer (&GT_WS_CONN_OUTPUT (object)->conn, conn_unref);
  G_OBJECT_CLASS (gt_ws_conn_output_parent_class)->finalize (object);
}

static void
gt_ws_conn_output_class_init (GtWsConnOutputClass *klass)
{
  GOutputStreamClass *out_class = G_OUTPUT_STREAM_CLASS (klass);

  G_OBJECT_CLASS (klass)->finalize = gt_ws_conn_output_finalize;
  out_class->write_fn = output_write;
  out_class->close_fn = output_close;
  out_class->close_async = output_close_async;
  out_class->close_finish = output_close_finish;
}

static void
output_pollable_init (GPollableOutputStreamInterface *iface)
{
  iface->can_poll = output_can_poll;
  iface->is_writable = output_is_writable;
  iface->create_source = output_create_source;
  iface->write_nonblocking = output_write_nonblocking;
  iface->writev_nonblocking = output_writev_nonblocking;
}

static void
gt_ws_conn_output_init (GtWsConnOutput *self)
{
}

static GInputStream *
stream_get_input_stream (GIOStream *stream)
{
  return GT_WS_CONN_STREAM (stream)->in;
}

static GOutputStream *
stream_get_output_stream (GIOStream *stream)
{
  return GT_WS_CONN_STREAM (stream)->out;
}

static void
stream_close_async (GIOStream *stream, int io_priority, GCancellable *cancellable,
                    GAsyncReadyCallback callback, gpointer user_data)
{
  /* The parent's close_fn closes both streams, which never blocks here. */
  G_IO_STREAM_CLASS (gt_ws_conn_stream_parent_class)->close_fn (stream, cancellable, NULL);
  return_true_async (stream, cancellable, callback, user_data, stream_close_async);
}

static gboolean
stream_close_finish (GIOStream *stream, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

static void
gt_ws_conn_stream_finalize (GObject *object)
{
  GtWsConnStream *self = GT_WS_CONN_STREAM (object);

  g_clear_object (&self->in);
  g_clear_object (&self->out);
  G_OBJECT_CLASS (gt_ws_conn_stream_parent_class)->finalize (object);
}

static void
gt_ws_conn_stream_class_init (GtWsConnStreamClass *klass)
{
  GIOStreamClass *io_class = G_IO_STREAM_CLASS (klass);

  G_OBJECT_CLASS (klass)->finalize = gt_ws_conn_stream_finalize;
  io_class->get_input_stream = stream_get_input_stream;
  io_class->get_output_stream = stream_get_output_stream;
  io_class->close_async = stream_close_async;
  io_class->close_finish = stream_close_finish;
}

static void
gt_ws_conn_stream_init (GtWsConnStream *self)
{
}

GIOStream *
gt_ws_stream_new (GIOStream *base, gboolean client, const guint8 *preread, gsize preread_len)
{
  GtWsConnStream *self;
  GtWsConnInput *in;
  GtWsConnOutput *out;
  WsConn *c;

  g_return_val_if_fail (G_IS_IO_STREAM (base), NULL);
  g_return_val_if_fail (G_IS_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (base)), NULL);
  g_return_val_if_fail (G_IS_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (base)), NULL);
  g_return_val_if_fail (preread_len < RX_SIZE, NULL);

  c = g_new0 (WsConn, 1);
  g_ref_count_init (&c->ref);
  c->base = g_object_ref (base);
  c->bin = G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (base));
  c->bout = G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (base));
  c->context = g_main_context_ref_thread_default ();
  c->client = client;
  if (preread_len > 0)
    {
      c->rx = g_malloc (RX_SIZE);
      memcpy (c->rx, preread, preread_len);
      c->rx_end = preread_len;
    }
  c->ping_source = g_timeout_source_new_seconds (KEEPALIVE_SECONDS);
  g_source_set_callback (c->ping_source, ping_cb, c, NULL);
  g_source_attach (c->ping_source, c->context);

  self = g_object_new (GT_TYPE_WS_CONN_STREAM, NULL);
  in = g_object_new (GT_TYPE_WS_CONN_INPUT, NULL);
  out = g_object_new (GT_TYPE_WS_CONN_OUTPUT, NULL);
  in->conn = conn_ref (c);
  out->conn = c; /* the initial ref */
  self->in = G_INPUT_STREAM (in);
  self->out = G_OUTPUT_STREAM (out);
  return G_IO_STREAM (self);
}
