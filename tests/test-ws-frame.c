/* test-ws-frame.c: WebSocket frame headers, masking and limits; the framer stream against raw
 * frames (fragmentation, ping/pong, close, text, oversized and unmasked frames). */
#include "config.h"

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gio.h>

#include "gt-ws-frame.h"
#include "gt-ws-stream.h"

/* ------------------------------------------------------------------------------------------ */
/* Pure codec */

static void
test_header_roundtrip (void)
{
  static const guint64 lengths[] = { 0, 1, 125, 126, 127, 65535, 65536, 300000,
                                     G_GUINT64_CONSTANT (1) << 40 };
  static const gsize expected_len[] = { 2, 2, 2, 4, 4, 4, 10, 10, 10 };
  const guint8 mask[4] = { 0x11, 0x22, 0x33, 0x44 };

  for (gsize i = 0; i < G_N_ELEMENTS (lengths); i++)
    for (int masked = 0; masked <= 1; masked++)
      {
        guint8 buf[GT_WS_FRAME_MAX_HEADER];
        GtWsFrameHeader hdr;
        g_autoptr (GError) error = NULL;
        guint16 code = 0;
        gsize n = gt_ws_frame_write_header (buf, TRUE, GT_WS_OP_BINARY, lengths[i],
                                            masked ? mask : NULL);

        g_assert_cmpuint (n, ==, expected_len[i] + (masked ? 4 : 0));
        /* Every prefix needs more. */
        for (gsize cut = 0; cut < n; cut++)
          g_assert_cmpint (gt_ws_frame_parse_header (buf, cut, masked, G_MAXUINT64, &hdr, &code,
                                                     &error),
                           ==, GT_WS_PARSE_NEED_MORE);
        g_assert_cmpint (gt_ws_frame_parse_header (buf, n, masked, G_MAXUINT64, &hdr, &code,
                                                   &error),
                         ==, GT_WS_PARSE_OK);
        g_assert_no_error (error);
        g_assert_true (hdr.fin);
        g_assert_cmpuint (hdr.opcode, ==, GT_WS_OP_BINARY);
        g_assert_cmpuint (hdr.length, ==, lengths[i]);
        g_assert_cmpuint (hdr.header_len, ==, n);
        if (masked)
          g_assert_cmpmem (hdr.mask, 4, mask, 4);
      }
}

static void
assert_parse_error (const guint8 *buf, gsize len, gboolean masked, guint64 max, int code,
                    guint16 close_code)
{
  GtWsFrameHeader hdr;
  g_autoptr (GError) error = NULL;
  guint16 got = 0;

  g_assert_cmpint (gt_ws_frame_parse_header (buf, len, masked, max, &hdr, &got, &error), ==,
                   GT_WS_PARSE_ERROR);
  g_assert_error (error, G_IO_ERROR, code);
  g_assert_cmpuint (got, ==, close_code);
}

static void
test_header_errors (void)
{
  const guint8 rsv[] = { 0xC2, 0x00 };                   /* RSV1 */
  const guint8 opcode3[] = { 0x83, 0x00 };               /* reserved data opcode */
  const guint8 opcode_b[] = { 0x8B, 0x00 };              /* reserved control opcode */
  const guint8 frag_ping[] = { 0x09, 0x00 };             /* ping without FIN */
  const guint8 long_ping[] = { 0x89, 0x7E, 0x00, 0x7E }; /* ping with 126 bytes */
  const guint8 masked[] = { 0x82, 0x81, 1, 2, 3, 4, 0 }; /* masked, to a client */

  assert_parse_error (rsv, sizeof rsv, FALSE, 1024, G_IO_ERROR_INVALID_DATA, 1002);
  assert_parse_error (opcode3, sizeof opcode3, FALSE, 1024, G_IO_ERROR_INVALID_DATA, 1002);
  assert_parse_error (opcode_b, sizeof opcode_b, FALSE, 1024, G_IO_ERROR_INVALID_DATA, 1002);
  assert_parse_error (frag_ping, sizeof frag_ping, FALSE, 1024, G_IO_ERROR_INVALID_DATA, 1002);
  assert_parse_error (long_ping, sizeof long_ping, FALSE, 1024, G_IO_ERROR_INVALID_DATA, 1002);
  assert_parse_error (masked, sizeof masked, FALSE, 1024, G_IO_ERROR_INVALID_DATA, 1002);
}

static void
test_header_errors_more (void)
{
  const guint8 unmasked[] = { 0x82, 0x01, 0 }; /* a server requires masked frames */
  const guint8 top_bit[] = { 0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0 };
  const guint8 big[] = { 0x82, 0x7F, 0, 0, 0, 0, 0, 0x10, 0, 1 }; /* 1 MiB + 1 */
  const guint8 big_ping_ok[] = { 0x89, 0x7D };                     /* 125: the most allowed */
  GtWsFrameHeader hdr;
  guint16 code = 0;

  assert_parse_error (unmasked, sizeof unmasked, TRUE, 1024, G_IO_ERROR_INVALID_DATA, 1002);
  assert_parse_error (top_bit, sizeof top_bit, FALSE, G_MAXUINT64, G_IO_ERROR_INVALID_DATA, 1002);
  /* The limit is checked on the header alone, before any payload arrives. */
  assert_parse_error (big, sizeof big, FALSE, 1024 * 1024, G_IO_ERROR_MESSAGE_TOO_LARGE, 1009);
  g_assert_cmpint (gt_ws_frame_parse_header (big, sizeof big, FALSE, 1024 * 1024 + 1, &hdr, &code,
                                             NULL),
                   ==, GT_WS_PARSE_OK);
  g_assert_cmpint (gt_ws_frame_parse_header (big_ping_ok, sizeof big_ping_ok, FALSE, 0, &hdr,
                                             &code, NULL),
                   ==, GT_WS_PARSE_OK);
  g_assert_cmpuint (hdr.length, ==, 125);
}

static void
test_mask (void)
{
  const guint8 mask[4] = { 0xA5, 0x01, 0xFF, 0x3C };
  g_autofree guint8 *src = g_malloc (4099);
  g_autofree guint8 *dst = g_malloc (4099 + 16);

  for (gsize i = 0; i < 4099; i++)
    src[i] = (guint8) (i * 7 + 3);
  /* Every alignment, start offset and length against the byte-at-a-time definition. */
  for (gsize align = 0; align < 8; align++)
    for (guint offset = 0; offset < 4; offset++)
      for (gsize len = 0; len < 4099; len += (len < 40 ? 1 : 97))
        {
          guint end = gt_ws_mask_copy (dst + align, src, len, mask, offset);

          for (gsize i = 0; i < len; i++)
            if (dst[align + i] != (src[i] ^ mask[(offset + i) % 4]))
              g_error ("mask: align %zu offset %u len %zu: byte %zu wrong", align, offset, len,
                       i);
          g_assert_cmpuint (end, ==, (offset + len) % 4);
          /* In place, and twice is the identity. */
          gt_ws_mask_copy (dst + align, dst + align, len, mask, offset);
          g_assert_cmpmem (dst + align, len, src, len);
        }
}

static void
test_close_payload (void)
{
  const guint8 normal[] = { 0x03, 0xE8, 'b', 'y', 'e' };
  const guint8 reserved[] = { 0x03, 0xED };     /* 1005 is never sent */
  const guint8 bad_utf8[] = { 0x03, 0xE8, 0xFF };
  const guint8 app[] = { 0x0F, 0xA0 };          /* 4000: for applications */
  guint16 code = 0;
  g_autoptr (GError) error = NULL;

  g_assert_true (gt_ws_close_payload_parse (NULL, 0, &code, NULL));
  g_assert_cmpuint (code, ==, GT_WS_CLOSE_NO_STATUS);
  g_assert_true (gt_ws_close_payload_parse (normal, sizeof normal, &code, NULL));
  g_assert_cmpuint (code, ==, 1000);
  g_assert_true (gt_ws_close_payload_parse (app, sizeof app, &code, NULL));
  g_assert_cmpuint (code, ==, 4000);
  g_assert_false (gt_ws_close_payload_parse (normal, 1, &code, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
  g_clear_error (&error);
  g_assert_false (gt_ws_close_payload_parse (reserved, sizeof reserved, &code, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
  g_clear_error (&error);
  g_assert_false (gt_ws_close_payload_parse (bad_utf8, sizeof bad_utf8, &code, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
}

/* ------------------------------------------------------------------------------------------ */
/* The framer stream against raw frames on a socketpair */

typedef struct
{
  GIOStream *ws; /* gt's end */
  int fd;        /* the raw peer */
  gboolean client;
} Pair;

static void
pair_setup (Pair *p, gboolean client, const guint8 *preread, gsize preread_len)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocket) socket = NULL;
  g_autoptr (GIOStream) io = NULL;
  int fds[2];

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0);
  socket = g_socket_new_from_fd (fds[0], &error);
  g_assert_no_error (error);
  io = G_IO_STREAM (g_socket_connection_factory_create_connection (socket));
  p->ws = gt_ws_stream_new (io, client, preread, preread_len);
  p->fd = fds[1];
  p->client = client;
}

static void
pair_teardown (Pair *p)
{
  g_clear_object (&p->ws);
  if (p->fd >= 0)
    close (p->fd);
  while (g_main_context_iteration (NULL, FALSE))
    ;
}

/* A frame as the raw peer sends it: masked when gt's end is a server. */
static void
raw_send (Pair *p, gboolean fin, guint8 opcode, const void *payload, gsize len)
{
  guint8 header[GT_WS_FRAME_MAX_HEADER];
  const guint8 mask[4] = { 0x9E, 0x12, 0x7B, 0xC0 };
  g_autofree guint8 *body = g_malloc (len + 1);
  gsize n = gt_ws_frame_write_header (header, fin, opcode, len, p->client ? NULL : mask);

  if (p->client)
    memcpy (body, payload, len);
  else
    gt_ws_mask_copy (body, payload, len, mask, 0);
  g_assert_cmpint (write (p->fd, header, n), ==, (gssize) n);
  if (len > 0)
    g_assert_cmpint (write (p->fd, body, len), ==, (gssize) len);
}

static gboolean
stop_cb (gpointer data)
{
  *(gboolean *) data = TRUE;
  return G_SOURCE_REMOVE;
}

/* Reads what gt's end delivers until want bytes, EOF or an error; runs the main context. */
static gssize
ws_read (Pair *p, guint8 *buf, gsize want, GError **error)
{
  GPollableInputStream *in = G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (p->ws));
  gboolean timed_out = FALSE;
  guint id = g_timeout_add (5000, stop_cb, &timed_out);
  gsize got = 0;

  while (got < want && !timed_out)
    {
      g_autoptr (GError) local = NULL;
      gssize n = g_pollable_input_stream_read_nonblocking (in, buf + got, want - got, NULL, &local);

      if (n > 0)
        {
          got += n;
          continue;
        }
      if (n == 0)
        break;
      if (!g_error_matches (local, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        {
          g_propagate_error (error, g_steal_pointer (&local));
          g_source_remove (id);
          return -1;
        }
      g_main_context_iteration (NULL, TRUE);
    }
  if (!timed_out)
    g_source_remove (id);
  return got;
}

/* Reads one frame from the raw peer's side (header and payload, unmasked). */
static GtWsFrameHeader
raw_recv (Pair *p, GByteArray *payload)
{
  guint8 buf[GT_WS_FRAME_MAX_HEADER + 256];
  gsize have = 0;
  GtWsFrameHeader hdr;
  guint16 code;

  for (;;)
    {
      ssize_t n;
      GtWsParseResult r = gt_ws_frame_parse_header (buf, have, p->client, G_MAXUINT64, &hdr,
                                                    &code, NULL);

      if (r == GT_WS_PARSE_OK && have >= hdr.header_len + hdr.length)
        break;
      g_assert_cmpint (r, !=, GT_WS_PARSE_ERROR);
      /* gt writes small frames at once; let its sources run for anything queued. */
      while (g_main_context_iteration (NULL, FALSE))
        ;
      n = recv (p->fd, buf + have, 1, MSG_DONTWAIT);
      if (n < 0)
        {
          g_main_context_iteration (NULL, FALSE);
          g_usleep (1000);
          continue;
        }
      g_assert_cmpint (n, ==, 1);
      have++;
      g_assert_cmpuint (have, <=, sizeof buf);
    }
  g_byte_array_set_size (payload, hdr.length);
  if (hdr.masked)
    gt_ws_mask_copy (payload->data, buf + hdr.header_len, hdr.length, hdr.mask, 0);
  else
    memcpy (payload->data, buf + hdr.header_len, hdr.length);
  return hdr;
}

static guint16
close_code_of (GByteArray *payload)
{
  g_assert_cmpuint (payload->len, >=, 2);
  return ((guint16) payload->data[0] << 8) | payload->data[1];
}

static void
test_stream_fragments (void)
{
  Pair p = { 0 };
  g_autoptr (GByteArray) got = g_byte_array_new ();
  g_autoptr (GError) error = NULL;
  guint8 buf[64];
  GtWsFrameHeader hdr;

  pair_setup (&p, FALSE, NULL, 0);
  /* A fragmented message with a ping in the middle, then an empty message, then another. */
  raw_send (&p, FALSE, GT_WS_OP_BINARY, "abc", 3);
  raw_send (&p, TRUE, GT_WS_OP_PING, "p!", 2);
  raw_send (&p, FALSE, GT_WS_OP_CONTINUATION, "", 0);
  raw_send (&p, FALSE, GT_WS_OP_CONTINUATION, "def", 3);
  raw_send (&p, TRUE, GT_WS_OP_CONTINUATION, "ghi", 3);
  raw_send (&p, TRUE, GT_WS_OP_BINARY, "", 0);
  raw_send (&p, TRUE, GT_WS_OP_PONG, "", 0); /* unsolicited pongs are ignored */
  raw_send (&p, TRUE, GT_WS_OP_BINARY, "jk", 2);
  g_assert_cmpint (ws_read (&p, buf, 11, &error), ==, 11);
  g_assert_no_error (error);
  g_assert_cmpmem (buf, 11, "abcdefghijk", 11);
  /* The ping was answered with its payload, unmasked from a server. */
  hdr = raw_recv (&p, got);
  g_assert_cmpuint (hdr.opcode, ==, GT_WS_OP_PONG);
  g_assert_false (hdr.masked);
  g_assert_cmpmem (got->data, got->len, "p!", 2);

  /* The peer closes: EOF, the code echoed, then the connection ends. */
  raw_send (&p, TRUE, GT_WS_OP_CLOSE, "\x03\xe8", 2);
  g_assert_cmpint (ws_read (&p, buf, sizeof buf, &error), ==, 0);
  g_assert_no_error (error);
  hdr = raw_recv (&p, got);
  g_assert_cmpuint (hdr.opcode, ==, GT_WS_OP_CLOSE);
  g_assert_cmpuint (close_code_of (got), ==, 1000);
  {
    gsize written = 0;
    GOutputVector v = { "x", 1 };
    GPollableOutputStream *out
      = G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (p.ws));

    g_assert_cmpint (g_pollable_output_stream_writev_nonblocking (out, &v, 1, &written, NULL,
                                                                   &error),
                     ==, G_POLLABLE_RETURN_FAILED);
    g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED);
  }
  pair_teardown (&p);
}

/* Sends bad input to a server-side stream: the read fails with `code`, the peer gets close_code. */
static void
assert_stream_rejects (const guint8 *frame, gsize len, gboolean client, int code,
                       guint16 close_code)
{
  Pair p = { 0 };
  g_autoptr (GByteArray) got = g_byte_array_new ();
  g_autoptr (GError) error = NULL;
  guint8 buf[64];
  GtWsFrameHeader hdr;

  pair_setup (&p, client, NULL, 0);
  g_assert_cmpint (write (p.fd, frame, len), ==, (gssize) len);
  g_assert_cmpint (ws_read (&p, buf, sizeof buf, &error), ==, -1);
  g_assert_error (error, G_IO_ERROR, code);
  hdr = raw_recv (&p, got);
  g_assert_cmpuint (hdr.opcode, ==, GT_WS_OP_CLOSE);
  g_assert_cmpuint (close_code_of (got), ==, close_code);
  pair_teardown (&p);
}

static void
test_stream_rejects (void)
{
  /* masked text "hi" (mask 0) to a server */
  const guint8 text[] = { 0x81, 0x82, 0, 0, 0, 0, 'h', 'i' };
  /* unmasked binary to a server */
  const guint8 unmasked[] = { 0x82, 0x02, 'h', 'i' };
  /* a continuation without a message */
  const guint8 cont[] = { 0x80, 0x80, 0, 0, 0, 0 };
  /* a new message inside a fragmented one */
  const guint8 nested[] = { 0x02, 0x80, 0, 0, 0, 0, 0x82, 0x80, 0, 0, 0, 0 };
  /* more than GT_WS_MAX_FRAME_IN announced: refused on the header, nothing allocated */
  guint8 huge[14] = { 0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
  guint64 len = (guint64) GT_WS_MAX_FRAME_IN + 1;

  for (int i = 0; i < 8; i++)
    huge[2 + i] = (len >> (56 - 8 * i)) & 0xFF;
  assert_stream_rejects (text, sizeof text, FALSE, G_IO_ERROR_INVALID_DATA, 1003);
  assert_stream_rejects (unmasked, sizeof unmasked, FALSE, G_IO_ERROR_INVALID_DATA, 1002);
  assert_stream_rejects (cont, sizeof cont, FALSE, G_IO_ERROR_INVALID_DATA, 1002);
  assert_stream_rejects (nested, sizeof nested, FALSE, G_IO_ERROR_INVALID_DATA, 1002);
  assert_stream_rejects (huge, sizeof huge, FALSE, G_IO_ERROR_MESSAGE_TOO_LARGE, 1009);
  /* A client refuses masked frames from a server. */
  assert_stream_rejects (text, sizeof text, TRUE, G_IO_ERROR_INVALID_DATA, 1002);
}

static void
test_stream_writes (void)
{
  for (int client = 0; client <= 1; client++)
    {
      Pair p = { 0 };
      g_autoptr (GByteArray) got = g_byte_array_new ();
      g_autoptr (GError) error = NULL;
      GPollableOutputStream *out;
      GOutputVector v[3] = { { "he", 2 }, { "", 0 }, { "llo", 3 } };
      gsize written = 0;
      GtWsFrameHeader hdr;

      pair_setup (&p, client, NULL, 0);
      out = G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (p.ws));
      g_assert_cmpint (g_pollable_output_stream_writev_nonblocking (out, v, 3, &written, NULL,
                                                                     &error),
                       ==, G_POLLABLE_RETURN_OK);
      g_assert_cmpuint (written, ==, 5);
      hdr = raw_recv (&p, got);
      g_assert_cmpuint (hdr.opcode, ==, GT_WS_OP_BINARY);
      g_assert_true (hdr.fin);
      g_assert_cmpint (hdr.masked, ==, client); /* clients mask, servers do not */
      g_assert_cmpmem (got->data, got->len, "hello", 5);

      /* Closing sends close 1000 and then ends the connection. */
      g_assert_true (g_io_stream_close (p.ws, NULL, &error));
      hdr = raw_recv (&p, got);
      g_assert_cmpuint (hdr.opcode, ==, GT_WS_OP_CLOSE);
      g_assert_cmpuint (close_code_of (got), ==, 1000);
      {
        guint8 c;
        ssize_t n;

        for (int i = 0; i < 2000; i++)
          {
            g_main_context_iteration (NULL, FALSE);
            n = recv (p.fd, &c, 1, MSG_DONTWAIT);
            if (n >= 0)
              break;
            g_usleep (1000);
          }
        g_assert_cmpint (n, ==, 0);
      }
      pair_teardown (&p);
    }
}

static void
test_stream_preread (void)
{
  const guint8 mask[4] = { 1, 2, 3, 4 };
  guint8 frame[32];
  gsize n = gt_ws_frame_write_header (frame, TRUE, GT_WS_OP_BINARY, 3, mask);
  Pair p = { 0 };
  g_autoptr (GError) error = NULL;
  guint8 buf[8];

  gt_ws_mask_copy (frame + n, (const guint8 *) "xyz", 3, mask, 0);
  /* Bytes that came with the upgrade head are the first frame. */
  pair_setup (&p, FALSE, frame, n + 3);
  raw_send (&p, TRUE, GT_WS_OP_BINARY, "w", 1);
  g_assert_cmpint (ws_read (&p, buf, 4, &error), ==, 4);
  g_assert_cmpmem (buf, 4, "xyzw", 4);
  pair_teardown (&p);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/transport/ws-frame/header-roundtrip", test_header_roundtrip);
  g_test_add_func ("/gt/transport/ws-frame/header-errors", test_header_errors);
  g_test_add_func ("/gt/transport/ws-frame/header-limits", test_header_errors_more);
  g_test_add_func ("/gt/transport/ws-frame/mask", test_mask);
  g_test_add_func ("/gt/transport/ws-frame/close-payload", test_close_payload);
  g_test_add_func ("/gt/transport/ws-frame/stream/fragments", test_stream_fragments);
  g_test_add_func ("/gt/transport/ws-frame/stream/rejects", test_stream_rejects);
  g_test_add_func ("/gt/transport/ws-frame/stream/writes", test_stream_writes);
  g_test_add_func ("/gt/transport/ws-frame/stream/preread", test_stream_preread);
  return g_test_run ();
}
