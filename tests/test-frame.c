/* test-frame.c: unit tests for the tunnel frame codec (gt-frame.c). */
#include "gt-frame.h"

#include <string.h>

/* A sample of every frame type, built with the public encoders. */
typedef struct
{
  const char *name;
  GByteArray *bytes;
} Sample;

static const guint8 ping_opaque[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };

static GtHello *
make_hello (void)
{
  GtHello *hello = gt_hello_new ("client-1", "s3cret");

  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, "Www", 0, FALSE);
  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTPS, "secure-1", 0, FALSE);
  gt_hello_add_service (hello, GT_SERVICE_KIND_TCP, NULL, 2222, TRUE);
  gt_hello_add_service (hello, GT_SERVICE_KIND_TCP, NULL, 0, FALSE);
  return hello;
}

static GArray *
make_samples (void)
{
  GArray *samples = g_array_new (FALSE, TRUE, sizeof (Sample));
  g_autoptr (GtHello) hello = make_hello ();
  GtWelcomePort ports[] = { { 2, 40000 }, { 3, 65535 } };
  Sample s;

#define ADD(n)                   \
  s.name = (n);                  \
  s.bytes = g_byte_array_new (); \
  g_array_append_val (samples, s)

  ADD ("hello");
  g_assert_true (gt_frame_append_hello (s.bytes, hello, NULL));
  ADD ("welcome");
  gt_frame_append_welcome (s.bytes, ports, G_N_ELEMENTS (ports));
  ADD ("welcome-empty");
  gt_frame_append_welcome (s.bytes, NULL, 0);
  ADD ("open");
  gt_frame_append_open_header (s.bytes, 7, 1, 5);
  g_byte_array_append (s.bytes, (const guint8 *) "GET /", 5);
  ADD ("open-empty");
  gt_frame_append_open_header (s.bytes, 8, 0, 0);
  ADD ("data");
  gt_frame_append_header (s.bytes, GT_FRAME_DATA, 0, 7, 3);
  g_byte_array_append (s.bytes, (const guint8 *) "abc", 3);
  ADD ("shutdown");
  gt_frame_append_shutdown (s.bytes, 7);
  ADD ("reset");
  gt_frame_append_reset (s.bytes, 7, GT_RESET_CODE_CONNECT_FAILED);
  ADD ("window");
  gt_frame_append_window (s.bytes, 7, 131072);
  ADD ("ping");
  gt_frame_append_ping (s.bytes, FALSE, ping_opaque);
  ADD ("pong");
  gt_frame_append_ping (s.bytes, TRUE, ping_opaque);
  ADD ("goaway");
  gt_frame_append_error (s.bytes, GT_FRAME_GOAWAY, GT_ERROR_CODE_SHUTTING_DOWN, "bye");
  ADD ("error");
  gt_frame_append_error (s.bytes, GT_FRAME_ERROR, GT_ERROR_CODE_INVALID_AUTH, "wrong secret ✗");
#undef ADD

  return samples;
}

static void
free_samples (GArray *samples)
{
  for (guint i = 0; i < samples->len; i++)
    g_byte_array_unref (g_array_index (samples, Sample, i).bytes);
  g_array_unref (samples);
}

/* Decodes a payload with the decoder matching its type; TRUE if it decodes. */
static gboolean
decode_payload (const GtFrameHeader *hdr, const guint8 *payload, gsize len, GError **error)
{
  switch (hdr->type)
    {
    case GT_FRAME_HELLO:
      {
        g_autoptr (GtHello) hello = gt_hello_decode (payload, len, error);
        return hello != NULL;
      }
    case GT_FRAME_WELCOME:
      {
        g_autoptr (GArray) ports = gt_welcome_decode (payload, len, error);
        return ports != NULL;
      }
    case GT_FRAME_OPEN:
      return gt_open_decode (payload, len, NULL, NULL, NULL, error);
    case GT_FRAME_WINDOW:
      return gt_window_decode (payload, len, NULL, error);
    case GT_FRAME_RESET:
      return gt_reset_decode (payload, len, NULL, error);
    case GT_FRAME_ERROR:
    case GT_FRAME_GOAWAY:
      {
        g_autofree char *msg = NULL;
        return gt_error_decode (payload, len, NULL, &msg, error);
      }
    default:
      /* DATA, SHUTDOWN, PING: opaque or empty payload, checked by the header. */
      return TRUE;
    }
}

static void
decode_header_ok (const GByteArray *b, GtFrameHeader *hdr)
{
  g_autoptr (GError) error = NULL;

  g_assert_cmpint (gt_frame_header_decode (b->data, b->len, hdr, &error), ==, GT_DECODE_OK);
  g_assert_no_error (error);
  g_assert_cmpuint (hdr->length, ==, b->len - GT_FRAME_HEADER_SIZE);
}

/* Header bytes with arbitrary fields, bypassing the encoders' checks. */
static GtDecodeResult
decode_raw_header (guint8 type, guint8 flags, guint32 stream_id, guint32 length, GError **error)
{
  guint8 b[GT_FRAME_HEADER_SIZE];
  GtFrameHeader hdr;

  gt_frame_header_encode (b, type, flags, stream_id, length);
  return gt_frame_header_decode (b, sizeof b, &hdr, error);
}

static void
test_preface (void)
{
  guint8 b[GT_PREFACE_SIZE];
  guint8 version = 0;
  g_autoptr (GError) error = NULL;

  gt_preface_encode (b);
  g_assert_cmpuint (b[0], ==, 0xF0);
  g_assert_cmpuint (b[1], ==, 'G');
  g_assert_cmpuint (b[2], ==, 'T');
  g_assert_cmpuint (b[3], ==, GT_PROTOCOL_VERSION);

  g_assert_cmpint (gt_preface_decode (b, sizeof b, &version, &error), ==, GT_DECODE_OK);
  g_assert_no_error (error);
  g_assert_cmpuint (version, ==, GT_PROTOCOL_VERSION);

  for (gsize k = 0; k < GT_PREFACE_SIZE; k++)
    {
      g_assert_cmpint (gt_preface_decode (b, k, &version, &error), ==, GT_DECODE_NEED_MORE);
      g_assert_no_error (error);
    }

  /* Bad magic in each position, even before the whole preface arrived. */
  for (gsize i = 0; i < 3; i++)
    {
      guint8 bad[GT_PREFACE_SIZE];

      memcpy (bad, b, sizeof bad);
      bad[i] ^= 0x20;
      g_assert_cmpint (gt_preface_decode (bad, i + 1, &version, &error), ==, GT_DECODE_ERROR);
      g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
      g_clear_error (&error);
      g_assert_cmpint (gt_preface_decode (bad, sizeof bad, &version, &error), ==,
                       GT_DECODE_ERROR);
      g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
      g_clear_error (&error);
    }

  /* HTTP and TLS first bytes are not a preface. */
  g_assert_cmpint (gt_preface_decode ((const guint8 *) "GET ", 4, NULL, &error), ==,
                   GT_DECODE_ERROR);
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
  g_clear_error (&error);
  g_assert_cmpint (gt_preface_decode ((const guint8 *) "\x16\x03\x01\x02", 4, NULL, &error), ==,
                   GT_DECODE_ERROR);
  g_clear_error (&error);

  /* Other versions. */
  for (guint v = 0; v < 256; v++)
    {
      guint8 other[GT_PREFACE_SIZE] = { 0xF0, 'G', 'T', (guint8) v };

      if (v == GT_PROTOCOL_VERSION)
        continue;
      version = 0xAA;
      g_assert_cmpint (gt_preface_decode (other, sizeof other, &version, &error), ==,
                       GT_DECODE_ERROR);
      g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_VERSION);
      g_assert_cmpuint (version, ==, v);
      g_clear_error (&error);
    }
}

static void
test_header_layout (void)
{
  guint8 b[GT_FRAME_HEADER_SIZE];
  const guint8 expected[] = { 4, 0, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x0A, 0x0B };
  g_autoptr (GByteArray) arr = g_byte_array_new ();
  GtFrameHeader hdr = { 0 };

  gt_frame_header_encode (b, GT_FRAME_DATA, 0, 0x01020304, 0x0A0B);
  g_assert_cmpmem (b, sizeof b, expected, sizeof expected);

  gt_frame_append_header (arr, GT_FRAME_DATA, 0, 0x01020304, 0x0A0B);
  g_assert_cmpmem (arr->data, arr->len, expected, sizeof expected);

  g_assert_cmpint (gt_frame_header_decode (b, sizeof b, &hdr, NULL), ==, GT_DECODE_OK);
  g_assert_cmpuint (hdr.type, ==, GT_FRAME_DATA);
  g_assert_cmpuint (hdr.flags, ==, 0);
  g_assert_cmpuint (hdr.stream_id, ==, 0x01020304);
  g_assert_cmpuint (hdr.length, ==, 0x0A0B);

  /* Largest stream id works. */
  gt_frame_header_encode (b, GT_FRAME_SHUTDOWN, 0, G_MAXUINT32, 0);
  g_assert_cmpint (gt_frame_header_decode (b, sizeof b, &hdr, NULL), ==, GT_DECODE_OK);
  g_assert_cmpuint (hdr.stream_id, ==, G_MAXUINT32);
}

static void
test_hello_roundtrip (void)
{
  g_autoptr (GtHello) hello = make_hello ();
  g_autoptr (GtHello) decoded = NULL;
  g_autoptr (GByteArray) b = g_byte_array_new ();
  g_autoptr (GError) error = NULL;
  GtFrameHeader hdr;
  const GtHelloService *s;

  g_assert_true (gt_frame_append_hello (b, hello, &error));
  g_assert_no_error (error);
  decode_header_ok (b, &hdr);
  g_assert_cmpuint (hdr.type, ==, GT_FRAME_HELLO);
  g_assert_cmpuint (hdr.stream_id, ==, 0);

  decoded = gt_hello_decode (b->data + GT_FRAME_HEADER_SIZE, hdr.length, &error);
  g_assert_no_error (error);
  g_assert_nonnull (decoded);
  g_assert_cmpstr (decoded->id, ==, "client-1");
  g_assert_cmpstr (decoded->secret, ==, "s3cret");
  g_assert_cmpuint (decoded->services->len, ==, 4);

  s = g_ptr_array_index (decoded->services, 0);
  g_assert_cmpint (s->kind, ==, GT_SERVICE_KIND_HTTP);
  g_assert_cmpstr (s->prefix, ==, "www"); /* stored lower case */
  g_assert_cmpuint (s->remote_port, ==, 0);
  g_assert_false (s->remote_random);
  s = g_ptr_array_index (decoded->services, 1);
  g_assert_cmpint (s->kind, ==, GT_SERVICE_KIND_HTTPS);
  g_assert_cmpstr (s->prefix, ==, "secure-1");
  s = g_ptr_array_index (decoded->services, 2);
  g_assert_cmpint (s->kind, ==, GT_SERVICE_KIND_TCP);
  g_assert_null (s->prefix);
  g_assert_cmpuint (s->remote_port, ==, 2222);
  g_assert_true (s->remote_random);
  s = g_ptr_array_index (decoded->services, 3);
  g_assert_cmpint (s->kind, ==, GT_SERVICE_KIND_TCP);
  g_assert_cmpuint (s->remote_port, ==, 0);
  g_assert_false (s->remote_random);
}

/* The exact bytes of the example in docs/protocol.md. */
static void
test_hello_layout (void)
{
  g_autoptr (GtHello) hello = gt_hello_new ("ab", "xyz");
  g_autoptr (GByteArray) b = g_byte_array_new ();
  const guint8 expected[] = {
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x11, /* HELLO, stream 0, 17 bytes */
    0x02, 'a', 'b',                                             /* id */
    0x03, 'x', 'y', 'z',                                        /* secret */
    0x00, 0x01,                                                 /* 1 service */
    0x00, 0x00, 0x00, 0x00, 0x03, 'w', 'e', 'b',                /* http, prefix "web" */
  };

  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, "WEB", 1234, TRUE);
  g_assert_true (gt_frame_append_hello (b, hello, NULL));
  g_assert_cmpmem (b->data, b->len, expected, sizeof expected);
}

static void
test_welcome_roundtrip (void)
{
  GtWelcomePort ports[] = { { 0, 1 }, { 2, 40000 }, { 599, 65535 } };
  g_autoptr (GByteArray) b = g_byte_array_new ();
  g_autoptr (GArray) decoded = NULL;
  g_autoptr (GError) error = NULL;
  GtFrameHeader hdr;

  gt_frame_append_welcome (b, ports, G_N_ELEMENTS (ports));
  decode_header_ok (b, &hdr);
  g_assert_cmpuint (hdr.type, ==, GT_FRAME_WELCOME);
  g_assert_cmpuint (hdr.length, ==, 2 + 3 * 4);
  g_assert_cmpuint (b->data[GT_FRAME_HEADER_SIZE + 1], ==, 3);

  decoded = gt_welcome_decode (b->data + GT_FRAME_HEADER_SIZE, hdr.length, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (decoded->len, ==, 3);
  for (guint i = 0; i < 3; i++)
    {
      GtWelcomePort *p = &g_array_index (decoded, GtWelcomePort, i);
      g_assert_cmpuint (p->service_index, ==, ports[i].service_index);
      g_assert_cmpuint (p->port, ==, ports[i].port);
    }

  g_clear_pointer (&decoded, g_array_unref);
  g_byte_array_set_size (b, 0);
  gt_frame_append_welcome (b, NULL, 0);
  decode_header_ok (b, &hdr);
  decoded = gt_welcome_decode (b->data + GT_FRAME_HEADER_SIZE, hdr.length, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (decoded->len, ==, 0);
}

static void
test_welcome_bad (void)
{
  g_autoptr (GError) error = NULL;
  const guint8 short_list[] = { 0x00, 0x02, 0x00, 0x01, 0x00, 0x50 };
  const guint8 trailing[] = { 0x00, 0x00, 0xFF };
  const guint8 too_many[] = { 0x02, 0x59 }; /* 601 */

  g_assert_null (gt_welcome_decode (short_list, sizeof short_list, &error));
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
  g_clear_error (&error);
  g_assert_null (gt_welcome_decode (trailing, sizeof trailing, &error));
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
  g_clear_error (&error);
  g_assert_null (gt_welcome_decode (too_many, sizeof too_many, &error));
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE);
  g_clear_error (&error);
  g_assert_null (gt_welcome_decode (NULL, 0, &error));
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
}

static void
test_open_roundtrip (void)
{
  g_autoptr (GByteArray) b = g_byte_array_new ();
  g_autoptr (GError) error = NULL;
  GtFrameHeader hdr;
  guint16 index = 0;
  const guint8 *data = NULL;
  gsize data_len = 0;

  gt_frame_append_open_header (b, 42, 513, 4);
  g_byte_array_append (b, (const guint8 *) "HEAD", 4);
  decode_header_ok (b, &hdr);
  g_assert_cmpuint (hdr.type, ==, GT_FRAME_OPEN);
  g_assert_cmpuint (hdr.stream_id, ==, 42);
  g_assert_cmpuint (hdr.length, ==, GT_OPEN_PREFIX_SIZE + 4);
  g_assert_cmpuint (b->data[GT_FRAME_HEADER_SIZE], ==, 0x02);
  g_assert_cmpuint (b->data[GT_FRAME_HEADER_SIZE + 1], ==, 0x01);

  g_assert_true (gt_open_decode (b->data + GT_FRAME_HEADER_SIZE, hdr.length, &index, &data,
                                 &data_len, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (index, ==, 513);
  g_assert_cmpmem (data, data_len, "HEAD", 4);

  g_assert_false (gt_open_decode ((const guint8 *) "\x00", 1, &index, &data, &data_len, &error));
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
}

static void
test_data_roundtrip (void)
{
  g_autoptr (GByteArray) b = g_byte_array_new ();
  GtFrameHeader hdr;

  gt_frame_append_header (b, GT_FRAME_DATA, 0, 3, 5);
  g_byte_array_append (b, (const guint8 *) "hello", 5);
  decode_header_ok (b, &hdr);
  g_assert_cmpuint (hdr.type, ==, GT_FRAME_DATA);
  g_assert_cmpuint (hdr.stream_id, ==, 3);
  g_assert_cmpmem (b->data + GT_FRAME_HEADER_SIZE, hdr.length, "hello", 5);
}

static void
test_stream_control_roundtrip (void)
{
  g_autoptr (GByteArray) b = g_byte_array_new ();
  g_autoptr (GError) error = NULL;
  GtFrameHeader hdr;
  guint32 v = 0;
  const guint8 zero_window[] = { 0, 0, 0, 0 };

  gt_frame_append_window (b, 9, 0x80000001);
  decode_header_ok (b, &hdr);
  g_assert_cmpuint (hdr.type, ==, GT_FRAME_WINDOW);
  g_assert_cmpuint (hdr.stream_id, ==, 9);
  g_assert_true (gt_window_decode (b->data + GT_FRAME_HEADER_SIZE, hdr.length, &v, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (v, ==, 0x80000001);

  g_assert_false (gt_window_decode (zero_window, 4, &v, &error));
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
  g_clear_error (&error);
  g_assert_false (gt_window_decode (zero_window, 3, &v, &error));
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
  g_clear_error (&error);

  g_byte_array_set_size (b, 0);
  gt_frame_append_reset (b, 11, GT_RESET_CODE_FLOW_CONTROL);
  decode_header_ok (b, &hdr);
  g_assert_cmpuint (hdr.type, ==, GT_FRAME_RESET);
  g_assert_cmpuint (hdr.stream_id, ==, 11);
  g_assert_true (gt_reset_decode (b->data + GT_FRAME_HEADER_SIZE, hdr.length, &v, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (v, ==, GT_RESET_CODE_FLOW_CONTROL);
  g_assert_false (gt_reset_decode (b->data + GT_FRAME_HEADER_SIZE, 5, &v, &error));
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
  g_clear_error (&error);

  g_byte_array_set_size (b, 0);
  gt_frame_append_shutdown (b, 12);
  g_assert_cmpuint (b->len, ==, GT_FRAME_HEADER_SIZE);
  decode_header_ok (b, &hdr);
  g_assert_cmpuint (hdr.type, ==, GT_FRAME_SHUTDOWN);
  g_assert_cmpuint (hdr.stream_id, ==, 12);
  g_assert_cmpuint (hdr.length, ==, 0);
}

static void
test_ping_roundtrip (void)
{
  g_autoptr (GByteArray) b = g_byte_array_new ();
  GtFrameHeader hdr;

  gt_frame_append_ping (b, FALSE, ping_opaque);
  decode_header_ok (b, &hdr);
  g_assert_cmpuint (hdr.type, ==, GT_FRAME_PING);
  g_assert_cmpuint (hdr.flags, ==, 0);
  g_assert_cmpuint (hdr.stream_id, ==, 0);
  g_assert_cmpmem (b->data + GT_FRAME_HEADER_SIZE, hdr.length, ping_opaque, 8);

  g_byte_array_set_size (b, 0);
  gt_frame_append_ping (b, TRUE, ping_opaque);
  decode_header_ok (b, &hdr);
  g_assert_cmpuint (hdr.flags, ==, GT_FRAME_FLAG_ACK);
  g_assert_cmpmem (b->data + GT_FRAME_HEADER_SIZE, hdr.length, ping_opaque, 8);
}

static void
test_error_roundtrip (void)
{
  GtFrameType types[] = { GT_FRAME_ERROR, GT_FRAME_GOAWAY };

  for (guint i = 0; i < G_N_ELEMENTS (types); i++)
    {
      g_autoptr (GByteArray) b = g_byte_array_new ();
      g_autoptr (GError) error = NULL;
      g_autofree char *msg = NULL;
      GtFrameHeader hdr;
      guint16 code = 0;

      gt_frame_append_error (b, types[i], GT_ERROR_CODE_HOST_CONFLICT, "prefix «www» taken");
      decode_header_ok (b, &hdr);
      g_assert_cmpuint (hdr.type, ==, types[i]);
      g_assert_cmpuint (hdr.stream_id, ==, 0);
      g_assert_true (gt_error_decode (b->data + GT_FRAME_HEADER_SIZE, hdr.length, &code, &msg,
                                      &error));
      g_assert_no_error (error);
      g_assert_cmpuint (code, ==, GT_ERROR_CODE_HOST_CONFLICT);
      g_assert_cmpstr (msg, ==, "prefix «www» taken");
      g_clear_pointer (&msg, g_free);

      /* NULL message encodes as empty. */
      g_byte_array_set_size (b, 0);
      gt_frame_append_error (b, types[i], GT_ERROR_CODE_NONE, NULL);
      decode_header_ok (b, &hdr);
      g_assert_cmpuint (hdr.length, ==, 4);
      g_assert_true (gt_error_decode (b->data + GT_FRAME_HEADER_SIZE, hdr.length, &code, &msg,
                                      &error));
      g_assert_cmpstr (msg, ==, "");
    }
}

static void
test_error_truncation (void)
{
  g_autoptr (GByteArray) b = g_byte_array_new ();
  g_autoptr (GString) long_msg = g_string_new (NULL);
  g_autofree char *msg = NULL;
  g_autoptr (GError) error = NULL;
  GtFrameHeader hdr;
  guint16 code;

  /* 1023 ASCII bytes + a 2-byte character: the character must not be split. */
  for (guint i = 0; i < GT_MESSAGE_MAX_LEN - 1; i++)
    g_string_append_c (long_msg, 'a');
  g_string_append (long_msg, "é and more");
  gt_frame_append_error (b, GT_FRAME_ERROR, GT_ERROR_CODE_INTERNAL, long_msg->str);
  decode_header_ok (b, &hdr);
  g_assert_cmpuint (hdr.length, ==, 4 + GT_MESSAGE_MAX_LEN - 1);
  g_assert_true (gt_error_decode (b->data + GT_FRAME_HEADER_SIZE, hdr.length, &code, &msg,
                                  &error));
  g_assert_no_error (error);
  g_assert_cmpuint (strlen (msg), ==, GT_MESSAGE_MAX_LEN - 1);
  g_clear_pointer (&msg, g_free);

  /* Exactly the limit is kept whole. */
  g_string_truncate (long_msg, GT_MESSAGE_MAX_LEN - 1);
  g_string_append_c (long_msg, 'z');
  g_byte_array_set_size (b, 0);
  gt_frame_append_error (b, GT_FRAME_ERROR, GT_ERROR_CODE_INTERNAL, long_msg->str);
  decode_header_ok (b, &hdr);
  g_assert_cmpuint (hdr.length, ==, 4 + GT_MESSAGE_MAX_LEN);

  /* Invalid UTF-8 from the caller still yields a decodable frame. */
  g_byte_array_set_size (b, 0);
  gt_frame_append_error (b, GT_FRAME_ERROR, GT_ERROR_CODE_INTERNAL, "bad \xC3\x28 bytes");
  decode_header_ok (b, &hdr);
  g_assert_true (gt_error_decode (b->data + GT_FRAME_HEADER_SIZE, hdr.length, &code, &msg,
                                  &error));
  g_assert_no_error (error);
  g_assert_true (g_str_has_prefix (msg, "bad "));
}

static void
test_error_bad (void)
{
  g_autoptr (GError) error = NULL;
  char *msg = NULL;
  guint16 code;
  const guint8 bad_utf8[] = { 0x00, 0x01, 0x00, 0x02, 0xC3, 0x28 };
  const guint8 overlong[] = { 0x00, 0x01, 0x00, 0x02, 0xC0, 0xAF };
  const guint8 with_nul[] = { 0x00, 0x01, 0x00, 0x03, 'a', 0x00, 'b' };
  const guint8 short_msg[] = { 0x00, 0x01, 0x00, 0x05, 'a', 'b' };
  const guint8 trailing[] = { 0x00, 0x01, 0x00, 0x01, 'a', 'b' };
  const guint8 too_long[] = { 0x00, 0x01, 0x04, 0x01 }; /* 1025 */
  struct
  {
    const guint8 *buf;
    gsize len;
    gint code;
  } cases[] = {
    { bad_utf8, sizeof bad_utf8, GT_FRAME_ERROR_MALFORMED },
    { overlong, sizeof overlong, GT_FRAME_ERROR_MALFORMED },
    { with_nul, sizeof with_nul, GT_FRAME_ERROR_MALFORMED },
    { short_msg, sizeof short_msg, GT_FRAME_ERROR_MALFORMED },
    { trailing, sizeof trailing, GT_FRAME_ERROR_MALFORMED },
    { too_long, sizeof too_long, GT_FRAME_ERROR_TOO_LARGE },
    { too_long, 3, GT_FRAME_ERROR_MALFORMED },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_assert_false (gt_error_decode (cases[i].buf, cases[i].len, &code, &msg, &error));
      g_assert_error (error, GT_FRAME_ERROR_DOMAIN, cases[i].code);
      g_assert_null (msg);
      g_clear_error (&error);
    }
}

/* Every strict prefix of a valid frame: NEED_MORE while the header is incomplete, then the
 * header decodes and the short payload is refused by its decoder (never a crash). */
static void
test_truncated (void)
{
  GArray *samples = make_samples ();

  for (guint i = 0; i < samples->len; i++)
    {
      Sample *s = &g_array_index (samples, Sample, i);
      GtFrameHeader full;
      g_autoptr (GError) error = NULL;

      decode_header_ok (s->bytes, &full);
      g_assert_true (decode_payload (&full, s->bytes->data + GT_FRAME_HEADER_SIZE, full.length,
                                     &error));
      g_assert_no_error (error);

      for (gsize k = 0; k < s->bytes->len; k++)
        {
          /* A fresh copy of exactly k bytes, so ASan sees any overread. */
          g_autofree guint8 *copy = g_memdup2 (s->bytes->data, k > 0 ? k : 1);
          GtFrameHeader hdr;
          gsize plen;
          gboolean ok;

          if (k < GT_FRAME_HEADER_SIZE)
            {
              g_assert_cmpint (gt_frame_header_decode (copy, k, &hdr, &error), ==,
                               GT_DECODE_NEED_MORE);
              g_assert_no_error (error);
              continue;
            }
          g_assert_cmpint (gt_frame_header_decode (copy, k, &hdr, &error), ==, GT_DECODE_OK);
          plen = k - GT_FRAME_HEADER_SIZE;
          ok = decode_payload (&hdr, copy + GT_FRAME_HEADER_SIZE, plen, &error);
          switch (hdr.type)
            {
            case GT_FRAME_OPEN:
              /* OPEN data runs to the end of the payload: only the index can be short. */
              g_assert_cmpint (ok, ==, plen >= GT_OPEN_PREFIX_SIZE);
              break;
            case GT_FRAME_DATA:
            case GT_FRAME_PING:
              g_assert_true (ok); /* opaque: the caller waits for hdr.length bytes */
              break;
            default:
              if (ok)
                g_error ("%s: prefix of %" G_GSIZE_FORMAT " bytes decoded", s->name, k);
              g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
              break;
            }
          g_clear_error (&error);
        }
    }
  free_samples (samples);
}

/* Flipping bits and lengths of valid frames never crashes a decoder. */
static void
test_mutations (void)
{
  GArray *samples = make_samples ();

  for (guint i = 0; i < samples->len; i++)
    {
      Sample *s = &g_array_index (samples, Sample, i);

      for (guint round = 0; round < 2000; round++)
        {
          g_autofree guint8 *copy = g_memdup2 (s->bytes->data, s->bytes->len);
          gsize len = s->bytes->len;
          guint flips = g_test_rand_int_range (1, 4);
          GtFrameHeader hdr;
          g_autoptr (GError) error = NULL;

          for (guint f = 0; f < flips; f++)
            copy[g_test_rand_int_range (0, len)] ^= (guint8) (1 << g_test_rand_int_range (0, 8));
          if (gt_frame_header_decode (copy, len, &hdr, &error) != GT_DECODE_OK)
            {
              g_assert_nonnull (error);
              continue;
            }
          if (hdr.length > len - GT_FRAME_HEADER_SIZE)
            continue;
          if (!decode_payload (&hdr, copy + GT_FRAME_HEADER_SIZE, hdr.length, &error))
            g_assert_nonnull (error);
        }
    }
  free_samples (samples);
}

static void
test_too_large (void)
{
  g_autoptr (GError) error = NULL;
  GtFrameType control[] = { GT_FRAME_HELLO, GT_FRAME_WELCOME, GT_FRAME_GOAWAY, GT_FRAME_ERROR };
  GtFrameType bulk[] = { GT_FRAME_DATA, GT_FRAME_OPEN };

  for (guint i = 0; i < G_N_ELEMENTS (control); i++)
    {
      g_assert_cmpint (decode_raw_header (control[i], 0, 0, GT_FRAME_MAX_CONTROL, &error), ==,
                       GT_DECODE_OK);
      g_assert_no_error (error);
      g_assert_cmpint (decode_raw_header (control[i], 0, 0, GT_FRAME_MAX_CONTROL + 1, &error), ==,
                       GT_DECODE_ERROR);
      g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE);
      g_clear_error (&error);
      g_assert_cmpint (decode_raw_header (control[i], 0, 0, G_MAXUINT32, &error), ==,
                       GT_DECODE_ERROR);
      g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE);
      g_clear_error (&error);
    }
  for (guint i = 0; i < G_N_ELEMENTS (bulk); i++)
    {
      g_assert_cmpint (decode_raw_header (bulk[i], 0, 1, GT_FRAME_MAX_PAYLOAD, &error), ==,
                       GT_DECODE_OK);
      g_assert_no_error (error);
      g_assert_cmpint (decode_raw_header (bulk[i], 0, 1, GT_FRAME_MAX_PAYLOAD + 1, &error), ==,
                       GT_DECODE_ERROR);
      g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE);
      g_clear_error (&error);
      g_assert_cmpint (decode_raw_header (bulk[i], 0, 1, G_MAXUINT32, &error), ==,
                       GT_DECODE_ERROR);
      g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE);
      g_clear_error (&error);
    }

  /* The message names the size and the limit. */
  g_assert_cmpint (decode_raw_header (GT_FRAME_DATA, 0, 1, 300000, &error), ==, GT_DECODE_ERROR);
  g_assert_cmpstr (error->message, ==, "frame payload of 300000 bytes exceeds limit 262144");
  g_clear_error (&error);

  /* Payload decoders refuse lengths beyond the frame limits. */
  {
    gsize big = GT_FRAME_MAX_CONTROL + 1;
    g_autofree guint8 *buf = g_malloc0 (GT_FRAME_MAX_PAYLOAD + 1);

    g_assert_null (gt_hello_decode (buf, big, &error));
    g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE);
    g_clear_error (&error);
    g_assert_false (gt_open_decode (buf, GT_FRAME_MAX_PAYLOAD + 1, NULL, NULL, NULL, &error));
    g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE);
    g_clear_error (&error);
  }
}

static void
test_exact_sizes (void)
{
  struct
  {
    GtFrameType type;
    guint8 flags;
    guint32 stream;
    guint32 good;
  } cases[] = {
    { GT_FRAME_WINDOW, 0, 1, 4 },
    { GT_FRAME_RESET, 0, 1, 4 },
    { GT_FRAME_PING, 0, 0, 8 },
    { GT_FRAME_PING, GT_FRAME_FLAG_ACK, 0, 8 },
    { GT_FRAME_SHUTDOWN, 0, 1, 0 },
  };
  g_autoptr (GError) error = NULL;

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      guint32 bad[] = { cases[i].good + 1, cases[i].good + 1000, G_MAXUINT32, cases[i].good - 1 };

      g_assert_cmpint (decode_raw_header (cases[i].type, cases[i].flags, cases[i].stream,
                                          cases[i].good, &error), ==, GT_DECODE_OK);
      g_assert_no_error (error);
      for (guint j = 0; j < G_N_ELEMENTS (bad); j++)
        {
          if (cases[i].good == 0 && j == 3)
            continue; /* good - 1 wraps to G_MAXUINT32, already covered */
          g_assert_cmpint (decode_raw_header (cases[i].type, cases[i].flags, cases[i].stream,
                                              bad[j], &error), ==, GT_DECODE_ERROR);
          g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
          g_clear_error (&error);
        }
    }

  /* OPEN needs at least its service index. */
  for (guint32 l = 0; l < GT_OPEN_PREFIX_SIZE; l++)
    {
      g_assert_cmpint (decode_raw_header (GT_FRAME_OPEN, 0, 1, l, &error), ==, GT_DECODE_ERROR);
      g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
      g_clear_error (&error);
    }
  g_assert_cmpint (decode_raw_header (GT_FRAME_OPEN, 0, 1, GT_OPEN_PREFIX_SIZE, &error), ==,
                   GT_DECODE_OK);
  /* Empty DATA is allowed. */
  g_assert_cmpint (decode_raw_header (GT_FRAME_DATA, 0, 1, 0, &error), ==, GT_DECODE_OK);
}

static guint32
valid_length (guint8 type)
{
  switch (type)
    {
    case GT_FRAME_WINDOW:
    case GT_FRAME_RESET:
      return 4;
    case GT_FRAME_PING:
      return 8;
    case GT_FRAME_SHUTDOWN:
      return 0;
    case GT_FRAME_DATAGRAM:
      return GT_DATAGRAM_PREFIX_SIZE;
    default:
      return 2;
    }
}

static gboolean
is_connection_level (guint8 type)
{
  return type == GT_FRAME_HELLO || type == GT_FRAME_WELCOME || type == GT_FRAME_PING
         || type == GT_FRAME_GOAWAY || type == GT_FRAME_ERROR || type == GT_FRAME_DATAGRAM;
}

static void
test_stream_ids (void)
{
  g_autoptr (GError) error = NULL;

  for (guint8 t = GT_FRAME_HELLO; t <= GT_FRAME_TYPE_LAST; t++)
    {
      guint32 good = is_connection_level (t) ? 0 : 1;
      guint32 bads[] = { 1, 0x7FFFFFFF, G_MAXUINT32 };

      g_assert_cmpint (decode_raw_header (t, 0, good, valid_length (t), &error), ==,
                       GT_DECODE_OK);
      g_assert_no_error (error);
      if (is_connection_level (t))
        {
          for (guint j = 0; j < G_N_ELEMENTS (bads); j++)
            {
              g_assert_cmpint (decode_raw_header (t, 0, bads[j], valid_length (t), &error), ==,
                               GT_DECODE_ERROR);
              g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
              g_clear_error (&error);
            }
        }
      else
        {
          g_assert_cmpint (decode_raw_header (t, 0, 0, valid_length (t), &error), ==,
                           GT_DECODE_ERROR);
          g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
          g_clear_error (&error);
        }
    }
}

static void
test_unknown_type (void)
{
  g_autoptr (GError) error = NULL;
  guint8 types[] = { 0, GT_FRAME_TYPE_LAST + 1, 77, 0x80, 0xFF };

  for (guint i = 0; i < G_N_ELEMENTS (types); i++)
    {
      g_assert_cmpint (decode_raw_header (types[i], 0, 0, 0, &error), ==, GT_DECODE_ERROR);
      g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
      if (types[i] == 77)
        g_assert_cmpstr (error->message, ==, "unknown frame type 77");
      g_clear_error (&error);
      g_assert_cmpint (decode_raw_header (types[i], 0, 1, 4, &error), ==, GT_DECODE_ERROR);
      g_clear_error (&error);
    }
}

static void
test_unknown_flags (void)
{
  g_autoptr (GError) error = NULL;

  for (guint8 t = GT_FRAME_HELLO; t <= GT_FRAME_TYPE_LAST; t++)
    {
      guint32 stream = is_connection_level (t) ? 0 : 1;

      for (guint bit = 0; bit < 8; bit++)
        {
          guint8 flags = (guint8) (1 << bit);
          gboolean ack = t == GT_FRAME_FORWARD && flags == GT_FRAME_FLAG_ACK; /* empty */
          GtDecodeResult r
            = decode_raw_header (t, flags, stream, ack ? 0 : valid_length (t), &error);

          if ((t == GT_FRAME_PING && flags == GT_FRAME_FLAG_ACK)
              || (t == GT_FRAME_OPEN && flags == GT_FRAME_FLAG_ADDR) || ack
              || ((t == GT_FRAME_HELLO || t == GT_FRAME_WELCOME) && flags == GT_FRAME_FLAG_CAPS))
            {
              g_assert_cmpint (r, ==, GT_DECODE_OK);
              g_assert_no_error (error);
              continue;
            }
          g_assert_cmpint (r, ==, GT_DECODE_ERROR);
          g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
          g_clear_error (&error);
        }
    }
  g_assert_cmpint (decode_raw_header (GT_FRAME_PING, GT_FRAME_FLAG_ACK | 0x02, 0, 8, &error), ==,
                   GT_DECODE_ERROR);
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
}

/* Hello limits, checked the same way by the encoder and the decoder. */

static GtHello *
hello_with_id (gsize id_len)
{
  g_autofree char *id = g_strnfill (id_len, 'i');
  GtHello *hello = gt_hello_new (id, "secret");

  gt_hello_add_service (hello, GT_SERVICE_KIND_TCP, NULL, 80, FALSE);
  return hello;
}

/* Encodes a hello payload by hand (no checks), for the decoder's negative cases. */
static GByteArray *
raw_hello (const char *id, gsize id_len, const char *secret, gsize secret_len, guint n,
           const guint8 *service, gsize service_len)
{
  GByteArray *b = g_byte_array_new ();
  guint8 v;

  v = (guint8) id_len;
  g_byte_array_append (b, &v, 1);
  g_byte_array_append (b, (const guint8 *) id, (guint) id_len);
  v = (guint8) secret_len;
  g_byte_array_append (b, &v, 1);
  g_byte_array_append (b, (const guint8 *) secret, (guint) secret_len);
  v = (guint8) (n >> 8);
  g_byte_array_append (b, &v, 1);
  v = (guint8) n;
  g_byte_array_append (b, &v, 1);
  for (guint i = 0; i < n && service != NULL; i++)
    g_byte_array_append (b, service, (guint) service_len);
  return b;
}

static void
assert_hello_rejected (GByteArray *payload, gint code)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtHello) hello = gt_hello_decode (payload->data, payload->len, &error);

  g_assert_null (hello);
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, code);
  g_byte_array_unref (payload);
}

static void
assert_append_rejected (const GtHello *hello, gint code)
{
  g_autoptr (GByteArray) b = g_byte_array_new ();
  g_autoptr (GError) error = NULL;

  g_byte_array_append (b, (const guint8 *) "xy", 2);
  g_assert_false (gt_frame_append_hello (b, hello, &error));
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, code);
  g_assert_cmpuint (b->len, ==, 2); /* nothing appended */
}

static void
test_hello_id_limits (void)
{
  static const guint8 tcp[] = { 2, 0, 0, 80, 0 };
  g_autofree char *long_id = g_strnfill (201, 'i');
  g_autofree char *max_id = g_strnfill (200, 'i');

  {
    g_autoptr (GtHello) h = hello_with_id (0);
    assert_append_rejected (h, GT_FRAME_ERROR_MALFORMED);
  }
  {
    g_autoptr (GtHello) h = hello_with_id (201);
    assert_append_rejected (h, GT_FRAME_ERROR_TOO_LARGE);
  }
  {
    g_autoptr (GtHello) h = hello_with_id (200);
    g_autoptr (GByteArray) b = g_byte_array_new ();
    g_autoptr (GtHello) d = NULL;

    g_assert_true (gt_frame_append_hello (b, h, NULL));
    d = gt_hello_decode (b->data + GT_FRAME_HEADER_SIZE, b->len - GT_FRAME_HEADER_SIZE, NULL);
    g_assert_nonnull (d);
    g_assert_cmpstr (d->id, ==, max_id);
  }
  {
    g_autoptr (GtHello) h = gt_hello_new ("has space", "s");
    gt_hello_add_service (h, GT_SERVICE_KIND_TCP, NULL, 0, TRUE);
    assert_append_rejected (h, GT_FRAME_ERROR_MALFORMED);
  }
  {
    g_autoptr (GtHello) h = gt_hello_new ("id", NULL);
    gt_hello_add_service (h, GT_SERVICE_KIND_TCP, NULL, 0, TRUE);
    assert_append_rejected (h, GT_FRAME_ERROR_MALFORMED);
  }
  {
    g_autofree char *long_secret = g_strnfill (201, 's');
    g_autoptr (GtHello) h = gt_hello_new ("id", long_secret);
    gt_hello_add_service (h, GT_SERVICE_KIND_TCP, NULL, 0, TRUE);
    assert_append_rejected (h, GT_FRAME_ERROR_TOO_LARGE);
  }

  assert_hello_rejected (raw_hello ("", 0, "s", 1, 1, tcp, 5), GT_FRAME_ERROR_MALFORMED);
  assert_hello_rejected (raw_hello (long_id, 201, "s", 1, 1, tcp, 5), GT_FRAME_ERROR_TOO_LARGE);
  assert_hello_rejected (raw_hello ("a b", 3, "s", 1, 1, tcp, 5), GT_FRAME_ERROR_MALFORMED);
  assert_hello_rejected (raw_hello ("a\x7f", 2, "s", 1, 1, tcp, 5), GT_FRAME_ERROR_MALFORMED);
  assert_hello_rejected (raw_hello ("\xc3\xa9", 2, "s", 1, 1, tcp, 5), GT_FRAME_ERROR_MALFORMED);
  assert_hello_rejected (raw_hello ("a", 1, "", 0, 1, tcp, 5), GT_FRAME_ERROR_MALFORMED);
  assert_hello_rejected (raw_hello ("a", 1, long_id, 201, 1, tcp, 5), GT_FRAME_ERROR_TOO_LARGE);
  assert_hello_rejected (raw_hello ("a", 1, "s\0t", 3, 1, tcp, 5), GT_FRAME_ERROR_MALFORMED);
  /* id length running past the end */
  {
    GByteArray *b = raw_hello ("abc", 3, "s", 1, 1, tcp, 5);
    b->data[0] = 250;
    assert_hello_rejected (b, GT_FRAME_ERROR_TOO_LARGE);
    b = raw_hello ("abc", 3, "s", 1, 1, tcp, 5);
    g_byte_array_set_size (b, 3);
    assert_hello_rejected (b, GT_FRAME_ERROR_MALFORMED);
  }
  /* Empty payload. */
  {
    g_autoptr (GError) error = NULL;
    g_assert_null (gt_hello_decode (NULL, 0, &error));
    g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
  }
}

static void
test_hello_service_limits (void)
{
  static const guint8 tcp[] = { 2, 1, 0x1F, 0x90, 0 };

  /* 600 services is the limit for both sides; 601 is refused. */
  {
    g_autoptr (GtHello) h = gt_hello_new ("id", "secret");
    g_autoptr (GByteArray) b = g_byte_array_new ();
    g_autoptr (GtHello) d = NULL;

    for (guint i = 0; i < GT_HELLO_MAX_SERVICES; i++)
      gt_hello_add_service (h, GT_SERVICE_KIND_TCP, NULL, (guint16) (10000 + i), FALSE);
    g_assert_true (gt_frame_append_hello (b, h, NULL));
    d = gt_hello_decode (b->data + GT_FRAME_HEADER_SIZE, b->len - GT_FRAME_HEADER_SIZE, NULL);
    g_assert_nonnull (d);
    g_assert_cmpuint (d->services->len, ==, GT_HELLO_MAX_SERVICES);
    g_assert_cmpuint (((GtHelloService *) g_ptr_array_index (d->services, 599))->remote_port,
                      ==, 10599);

    gt_hello_add_service (h, GT_SERVICE_KIND_TCP, NULL, 1, FALSE);
    assert_append_rejected (h, GT_FRAME_ERROR_TOO_LARGE);
  }
  {
    g_autoptr (GtHello) h = gt_hello_new ("id", "secret");
    assert_append_rejected (h, GT_FRAME_ERROR_MALFORMED); /* no services */
  }
  assert_hello_rejected (raw_hello ("a", 1, "s", 1, 601, tcp, 5), GT_FRAME_ERROR_TOO_LARGE);
  assert_hello_rejected (raw_hello ("a", 1, "s", 1, 0, NULL, 0), GT_FRAME_ERROR_MALFORMED);
  /* A large count with few bytes behind it is refused without building the list. */
  assert_hello_rejected (raw_hello ("a", 1, "s", 1, 600, NULL, 0), GT_FRAME_ERROR_MALFORMED);
  assert_hello_rejected (raw_hello ("a", 1, "s", 1, 0xFFFF, tcp, 5), GT_FRAME_ERROR_TOO_LARGE);

  /* Trailing bytes. */
  {
    GByteArray *b = raw_hello ("a", 1, "s", 1, 1, tcp, 5);
    g_byte_array_append (b, (const guint8 *) "!", 1);
    assert_hello_rejected (b, GT_FRAME_ERROR_MALFORMED);
  }

  /* A hello whose payload would exceed the control frame limit is refused by the encoder. */
  {
    g_autoptr (GtHello) h = gt_hello_new ("id", "secret");
    g_autofree char *prefix = g_strnfill (GT_PREFIX_MAX_LEN, 'p');

    for (guint i = 0; i < GT_HELLO_MAX_SERVICES; i++)
      gt_hello_add_service (h, GT_SERVICE_KIND_HTTP, prefix, 0, FALSE);
    assert_append_rejected (h, GT_FRAME_ERROR_TOO_LARGE);
  }
}

static void
test_hello_prefix (void)
{
  const char *bad[] = { "a.b", "a_b", "a b", "a/b", "é", "a:80", "*" };
  g_autofree char *long_prefix = g_strnfill (201, 'p');
  g_autofree char *max_prefix = g_strnfill (200, 'P');

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autoptr (GtHello) h = gt_hello_new ("id", "secret");
      guint8 svc[64] = { GT_SERVICE_KIND_HTTPS, 0, 0, 0, (guint8) strlen (bad[i]) };

      gt_hello_add_service (h, GT_SERVICE_KIND_HTTP, bad[i], 0, FALSE);
      assert_append_rejected (h, GT_FRAME_ERROR_MALFORMED);

      memcpy (svc + 5, bad[i], strlen (bad[i]));
      assert_hello_rejected (raw_hello ("a", 1, "s", 1, 1, svc, 5 + strlen (bad[i])),
                             GT_FRAME_ERROR_MALFORMED);
    }

  /* http/https need a prefix. */
  {
    g_autoptr (GtHello) h = gt_hello_new ("id", "secret");
    gt_hello_add_service (h, GT_SERVICE_KIND_HTTPS, NULL, 0, FALSE);
    assert_append_rejected (h, GT_FRAME_ERROR_MALFORMED);
  }
  {
    static const guint8 svc[] = { GT_SERVICE_KIND_HTTP, 0, 0, 0, 0 };
    assert_hello_rejected (raw_hello ("a", 1, "s", 1, 1, svc, sizeof svc),
                           GT_FRAME_ERROR_MALFORMED);
  }
  /* Prefix length limit. */
  {
    g_autoptr (GtHello) h = gt_hello_new ("id", "secret");
    gt_hello_add_service (h, GT_SERVICE_KIND_HTTP, long_prefix, 0, FALSE);
    assert_append_rejected (h, GT_FRAME_ERROR_TOO_LARGE);
  }
  {
    g_autoptr (GtHello) h = gt_hello_new ("id", "secret");
    g_autoptr (GByteArray) b = g_byte_array_new ();
    g_autoptr (GtHello) d = NULL;
    g_autofree char *lower = g_ascii_strdown (max_prefix, -1);

    gt_hello_add_service (h, GT_SERVICE_KIND_HTTP, max_prefix, 0, FALSE);
    g_assert_true (gt_frame_append_hello (b, h, NULL));
    d = gt_hello_decode (b->data + GT_FRAME_HEADER_SIZE, b->len - GT_FRAME_HEADER_SIZE, NULL);
    g_assert_nonnull (d);
    g_assert_cmpstr (((GtHelloService *) g_ptr_array_index (d->services, 0))->prefix, ==, lower);
  }
  /* Upper case on the wire is accepted and stored lower case. */
  {
    static const guint8 svc[] = { GT_SERVICE_KIND_HTTP, 0, 0, 0, 3, 'W', 'w', '-' };
    GByteArray *b = raw_hello ("a", 1, "s", 1, 1, svc, sizeof svc);
    g_autoptr (GtHello) d = gt_hello_decode (b->data, b->len, NULL);

    g_assert_nonnull (d);
    g_assert_cmpstr (((GtHelloService *) g_ptr_array_index (d->services, 0))->prefix, ==, "ww-");
    g_byte_array_unref (b);
  }
  /* tcp carries no prefix; http carries no port/random; unknown kinds and flags. */
  {
    static const guint8 tcp_prefix[] = { GT_SERVICE_KIND_TCP, 0, 0, 80, 1, 'a' };
    static const guint8 http_port[] = { GT_SERVICE_KIND_HTTP, 0, 0, 80, 1, 'a' };
    static const guint8 http_random[] = { GT_SERVICE_KIND_HTTP, 1, 0, 0, 1, 'a' };
    static const guint8 kind3[] = { 3, 0, 0, 80, 0 };
    static const guint8 flag2[] = { GT_SERVICE_KIND_TCP, 2, 0, 80, 0 };
    static const guint8 short_prefix[] = { GT_SERVICE_KIND_HTTP, 0, 0, 0, 9, 'a' };

    assert_hello_rejected (raw_hello ("a", 1, "s", 1, 1, tcp_prefix, sizeof tcp_prefix),
                           GT_FRAME_ERROR_MALFORMED);
    assert_hello_rejected (raw_hello ("a", 1, "s", 1, 1, http_port, sizeof http_port),
                           GT_FRAME_ERROR_MALFORMED);
    assert_hello_rejected (raw_hello ("a", 1, "s", 1, 1, http_random, sizeof http_random),
                           GT_FRAME_ERROR_MALFORMED);
    assert_hello_rejected (raw_hello ("a", 1, "s", 1, 1, kind3, sizeof kind3),
                           GT_FRAME_ERROR_MALFORMED);
    assert_hello_rejected (raw_hello ("a", 1, "s", 1, 1, flag2, sizeof flag2),
                           GT_FRAME_ERROR_MALFORMED);
    assert_hello_rejected (raw_hello ("a", 1, "s", 1, 1, short_prefix, sizeof short_prefix),
                           GT_FRAME_ERROR_MALFORMED);
  }
  /* A node entry (node-to-node tunnel, docs/scale-out.md) is alone, without port, flags or
   * prefix; kind 4 is unknown. */
  {
    static const guint8 node[] = { GT_SERVICE_KIND_NODE, 0, 0, 0, 0 };
    static const guint8 node_flag[] = { GT_SERVICE_KIND_NODE, 1, 0, 0, 0 };
    static const guint8 node_prefix[] = { GT_SERVICE_KIND_NODE, 0, 0, 0, 1, 'a' };
    static const guint8 kind4[] = { 4, 0, 0, 0, 0 };
    static const guint8 tcp[] = { GT_SERVICE_KIND_TCP, 0, 0, 80, 0 };
    g_autoptr (GByteArray) one = raw_hello ("a", 1, "s", 1, 1, node, sizeof node);
    g_autoptr (GByteArray) after = raw_hello ("a", 1, "s", 1, 1, tcp, sizeof tcp);
    g_autoptr (GtHello) d = gt_hello_decode (one->data, one->len, NULL);
    g_autoptr (GtHello) h = gt_hello_new ("a", "s");
    g_autoptr (GByteArray) enc = g_byte_array_new ();
    g_autoptr (GError) error = NULL;

    g_assert_nonnull (d);
    g_assert_cmpuint (d->services->len, ==, 1);
    g_assert_cmpint (((GtHelloService *) d->services->pdata[0])->kind, ==, GT_SERVICE_KIND_NODE);
    assert_hello_rejected (raw_hello ("a", 1, "s", 1, 2, node, sizeof node),
                           GT_FRAME_ERROR_MALFORMED);
    g_byte_array_append (after, node, sizeof node); /* tcp, then node: 2 entries announced? */
    after->data[1 + 1 + 1 + 1 + 1] = 2;
    assert_hello_rejected (g_byte_array_ref (after), GT_FRAME_ERROR_MALFORMED);
    assert_hello_rejected (raw_hello ("a", 1, "s", 1, 1, node_flag, sizeof node_flag),
                           GT_FRAME_ERROR_MALFORMED);
    assert_hello_rejected (raw_hello ("a", 1, "s", 1, 1, node_prefix, sizeof node_prefix),
                           GT_FRAME_ERROR_MALFORMED);
    assert_hello_rejected (raw_hello ("a", 1, "s", 1, 1, kind4, sizeof kind4),
                           GT_FRAME_ERROR_MALFORMED);
    /* The encoder refuses a node entry with services. */
    gt_hello_add_service (h, GT_SERVICE_KIND_NODE, NULL, 0, FALSE);
    gt_hello_add_service (h, GT_SERVICE_KIND_TCP, NULL, 80, FALSE);
    g_assert_false (gt_frame_append_hello (enc, h, &error));
    g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
  }
  /* gt_hello_add_service() normalises: tcp drops a prefix, http drops port and random. */
  {
    g_autoptr (GtHello) h = gt_hello_new ("id", "secret");
    const GtHelloService *s;

    gt_hello_add_service (h, GT_SERVICE_KIND_TCP, "ignored", 22, TRUE);
    gt_hello_add_service (h, GT_SERVICE_KIND_HTTP, "AbC", 8080, TRUE);
    s = g_ptr_array_index (h->services, 0);
    g_assert_null (s->prefix);
    g_assert_cmpuint (s->remote_port, ==, 22);
    g_assert_true (s->remote_random);
    s = g_ptr_array_index (h->services, 1);
    g_assert_cmpstr (s->prefix, ==, "abc");
    g_assert_cmpuint (s->remote_port, ==, 0);
    g_assert_false (s->remote_random);
  }
}

static void
test_strings (void)
{
  struct
  {
    GtErrorCode code;
    const char *text;
  } codes[] = {
    { GT_ERROR_CODE_INVALID_AUTH, "invalid id or secret" },
    { GT_ERROR_CODE_PORT_UNAVAILABLE, "port not available" },
    { GT_ERROR_CODE_TOO_MANY_TUNNELS, "reached the max connections" },
    { GT_ERROR_CODE_HOST_NUMBER, "the number of host prefixes exceeded the limit" },
    { GT_ERROR_CODE_HOST_CONFLICT, "host conflict" },
    { GT_ERROR_CODE_HOST_REGEX, "host regex mismatch" },
    { GT_ERROR_CODE_CONFIG_CONFLICT, "another client with a different config is connected" },
    { GT_ERROR_CODE_TOO_MANY_OPTIONS, "the number of options exceeded the limit" },
    { GT_ERROR_CODE_TCP_NUMBER, "the number of tcp ports exceeded the limit" },
    { GT_ERROR_CODE_UNSUPPORTED_VERSION, "unsupported protocol version" },
    { GT_ERROR_CODE_PROTOCOL, "protocol error" },
    { GT_ERROR_CODE_FLOW_CONTROL, "flow control error" },
    { GT_ERROR_CODE_SHUTTING_DOWN, "server is shutting down" },
    { GT_ERROR_CODE_TIMEOUT, "timeout" },
    { GT_ERROR_CODE_INTERNAL, "internal error" },
    { GT_ERROR_CODE_ELSEWHERE, "held by another server node" },
    { GT_ERROR_CODE_REGISTRY_UNAVAILABLE, "the cluster registry is unavailable" },
    { GT_ERROR_CODE_UDP_NUMBER, "the number of udp ports exceeded the limit" },
    { (GtErrorCode) 19, "unknown error" },
    { (GtErrorCode) 0xFFFF, "unknown error" },
  };
  const char *names[] = { "HELLO", "WELCOME", "OPEN",   "DATA",   "SHUTDOWN",
                          "RESET", "WINDOW",  "PING",   "GOAWAY", "ERROR" };

  for (guint i = 0; i < G_N_ELEMENTS (codes); i++)
    g_assert_cmpstr (gt_error_code_to_string (codes[i].code), ==, codes[i].text);
  for (guint i = 0; i < G_N_ELEMENTS (names); i++)
    g_assert_cmpstr (gt_frame_type_to_string ((guint8) (GT_FRAME_HELLO + i)), ==, names[i]);
  g_assert_cmpstr (gt_frame_type_to_string (0), ==, "UNKNOWN");
  g_assert_cmpstr (gt_frame_type_to_string (200), ==, "UNKNOWN");

  g_assert_cmpstr (g_quark_to_string (GT_FRAME_ERROR_DOMAIN), ==, "gt-frame-error-quark");
}

/* Several frames back to back in one buffer decode one after another. */
static void
test_stream_of_frames (void)
{
  GArray *samples = make_samples ();
  g_autoptr (GByteArray) all = g_byte_array_new ();
  guint8 preface[GT_PREFACE_SIZE];
  gsize pos;
  guint count = 0;

  gt_preface_encode (preface);
  g_byte_array_append (all, preface, sizeof preface);
  for (guint i = 0; i < samples->len; i++)
    {
      GByteArray *b = g_array_index (samples, Sample, i).bytes;
      g_byte_array_append (all, b->data, b->len);
    }

  g_assert_cmpint (gt_preface_decode (all->data, all->len, NULL, NULL), ==, GT_DECODE_OK);
  pos = GT_PREFACE_SIZE;
  while (pos < all->len)
    {
      GtFrameHeader hdr;
      g_autoptr (GError) error = NULL;

      g_assert_cmpint (gt_frame_header_decode (all->data + pos, all->len - pos, &hdr, &error), ==,
                       GT_DECODE_OK);
      pos += GT_FRAME_HEADER_SIZE;
      g_assert_cmpuint (all->len - pos, >=, hdr.length);
      g_assert_true (decode_payload (&hdr, all->data + pos, hdr.length, &error));
      g_assert_no_error (error);
      pos += hdr.length;
      count++;
    }
  g_assert_cmpuint (pos, ==, all->len);
  g_assert_cmpuint (count, ==, samples->len);
  free_samples (samples);
}

static void
test_open_addr (void)
{
  g_autoptr (GByteArray) out = g_byte_array_new ();
  g_autoptr (GError) error = NULL;
  GtOpenAddr a = { 6, { 0 }, 43210, { 0 }, 443 }, b;
  GtFrameHeader h;
  guint16 index = 0;
  gboolean has_addr = FALSE;
  const guint8 *data = NULL;
  gsize data_len = 0;

  a.src[15] = 1;
  a.dst[0] = 0xfe;
  gt_frame_append_open_header_addr (out, 7, 3, &a, 5);
  g_byte_array_append (out, (const guint8 *) "hello", 5);
  g_assert_cmpint (gt_frame_header_decode (out->data, out->len, &h, &error), ==, GT_DECODE_OK);
  g_assert_cmpuint (h.flags, ==, GT_FRAME_FLAG_ADDR);
  g_assert_cmpuint (h.length, ==, 2 + 37 + 5);
  g_assert_true (gt_open_decode_addr (out->data + GT_FRAME_HEADER_SIZE, h.length, h.flags, &index,
                                      &b, &has_addr, &data, &data_len, &error));
  g_assert_true (has_addr);
  g_assert_cmpuint (index, ==, 3);
  g_assert_cmpuint (b.family, ==, 6);
  g_assert_cmpmem (a.src, 16, b.src, 16);
  g_assert_cmpmem (a.dst, 16, b.dst, 16);
  g_assert_cmpuint (b.src_port, ==, 43210);
  g_assert_cmpuint (b.dst_port, ==, 443);
  g_assert_cmpmem (data, data_len, "hello", 5);

  /* A truncated address block and a bad family are errors. */
  for (gsize cut = 3; cut < 2 + 37; cut++)
    {
      g_assert_false (gt_open_decode_addr (out->data + GT_FRAME_HEADER_SIZE, cut,
                                           GT_FRAME_FLAG_ADDR, NULL, &b, NULL, NULL, NULL, &error));
      g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
      g_clear_error (&error);
    }
  out->data[GT_FRAME_HEADER_SIZE + 2] = 5;
  g_assert_false (gt_open_decode_addr (out->data + GT_FRAME_HEADER_SIZE, h.length, h.flags, NULL,
                                       &b, NULL, NULL, NULL, &error));
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
}

/* docs/protocol.md §6.9: CAPS on HELLO. The capabilities end the payload; a forward-only client
 * lists no service. */
static void
test_hello_caps (void)
{
  g_autoptr (GtHello) hello = gt_hello_new ("b", "s");
  g_autoptr (GtHello) back = NULL;
  g_autoptr (GtHello) plain_back = NULL;
  g_autoptr (GByteArray) b = g_byte_array_new ();
  g_autoptr (GError) error = NULL;
  GtFrameHeader h;
  const guint8 expected[] = {
    0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, /* HELLO, CAPS, 10 bytes */
    0x01, 'b', 0x01, 's',                                       /* id, secret */
    0x00, 0x00,                                                 /* no service */
    0x00, 0x00, 0x00, 0x01,                                     /* caps: FORWARD */
  };

  hello->caps = GT_CAP_FORWARD;
  g_assert_true (gt_frame_append_hello (b, hello, &error));
  g_assert_no_error (error);
  g_assert_cmpmem (b->data, b->len, expected, sizeof expected);
  g_assert_cmpint (gt_frame_header_decode (b->data, b->len, &h, &error), ==, GT_DECODE_OK);
  back = gt_hello_decode_flags (b->data + GT_FRAME_HEADER_SIZE, h.length, h.flags, &error);
  g_assert_no_error (error);
  g_assert_true (back->has_caps);
  g_assert_cmpuint (back->caps, ==, GT_CAP_FORWARD);
  g_assert_cmpuint (back->services->len, ==, 0);

  /* What an older server does with it: the caps are trailing bytes (and the HELLO's flag is
   * unknown to its header check), so a client sends CAPS only when it needs a capability. */
  g_assert_null (gt_hello_decode (b->data + GT_FRAME_HEADER_SIZE, h.length, &error));
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
  g_clear_error (&error);

  /* Without FORWARD, no service is still malformed; with a service, unknown bits are kept for
   * the receiver to ignore. */
  hello->caps = 0x80000000u;
  g_byte_array_set_size (b, 0);
  g_assert_false (gt_frame_append_hello (b, hello, &error));
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
  g_clear_error (&error);
  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, "web", 0, FALSE);
  g_assert_true (gt_frame_append_hello (b, hello, &error));
  g_assert_cmpint (gt_frame_header_decode (b->data, b->len, &h, &error), ==, GT_DECODE_OK);
  g_assert_cmpuint (h.flags, ==, GT_FRAME_FLAG_CAPS);
  plain_back = gt_hello_decode_flags (b->data + GT_FRAME_HEADER_SIZE, h.length, h.flags, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (plain_back->caps, ==, 0x80000000u);
  g_assert_cmpstr (((GtHelloService *) plain_back->services->pdata[0])->prefix, ==, "web");

  /* CAPS with fewer than 4 bytes after the count is truncated, never read past the end. */
  {
    const guint8 short_caps[] = { 0x01, 'b', 0x01, 's', 0x00, 0x00, 0x00, 0x01 };

    g_assert_null (gt_hello_decode_flags (short_caps, sizeof short_caps, GT_FRAME_FLAG_CAPS,
                                          &error));
    g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
  }
}

/* WELCOME with CAPS answers only a HELLO with CAPS; the plain one is what older clients read. */
static void
test_welcome_caps (void)
{
  GtWelcomePort ports[] = { { 1, 40000 } };
  g_autoptr (GByteArray) b = g_byte_array_new ();
  g_autoptr (GByteArray) plain = g_byte_array_new ();
  g_autoptr (GArray) got = NULL;
  g_autoptr (GArray) old = NULL;
  g_autoptr (GError) error = NULL;
  guint32 caps = 99;
  GtFrameHeader h;
  const guint8 expected[] = {
    0x02, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, /* WELCOME, CAPS, 10 bytes */
    0x00, 0x01, 0x00, 0x01, 0x9c, 0x40,                         /* 1 port: service 1, 40000 */
    0x00, 0x00, 0x00, 0x01,                                     /* caps: FORWARD */
  };

  gt_frame_append_welcome_caps (b, ports, 1, GT_CAP_FORWARD);
  g_assert_cmpmem (b->data, b->len, expected, sizeof expected);
  g_assert_cmpint (gt_frame_header_decode (b->data, b->len, &h, &error), ==, GT_DECODE_OK);
  got = gt_welcome_decode_flags (b->data + GT_FRAME_HEADER_SIZE, h.length, h.flags, &caps, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (caps, ==, GT_CAP_FORWARD);
  g_assert_cmpuint (got->len, ==, 1);
  g_assert_cmpuint (g_array_index (got, GtWelcomePort, 0).port, ==, 40000);
  /* An older client could not read it (hence never sent to one). */
  old = gt_welcome_decode (b->data + GT_FRAME_HEADER_SIZE, h.length, &error);
  g_assert_null (old);
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
  g_clear_error (&error);

  /* The plain WELCOME: no flag, no caps. */
  gt_frame_append_welcome (plain, ports, 1);
  g_assert_cmpuint (plain->data[1], ==, 0);
  g_clear_pointer (&got, g_array_unref);
  got = gt_welcome_decode_flags (plain->data + GT_FRAME_HEADER_SIZE,
                                 plain->len - GT_FRAME_HEADER_SIZE, 0, &caps, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (caps, ==, 0);
}

/* FORWARD: prefixLen, prefix (sent lower case), data; the ACK is empty. */
/* DATAGRAM frames: every size a UDP datagram can have goes through unclipped; short, oversized
 * and flow-0 payloads are errors, before and after the header. */
static void
test_datagram_codec (void)
{
  const gsize sizes[] = { 0, 1, 1200, 9000, 65000, GT_DATAGRAM_MAX_DATA };

  for (guint i = 0; i < G_N_ELEMENTS (sizes); i++)
    {
      g_autoptr (GByteArray) b = g_byte_array_new ();
      g_autoptr (GError) error = NULL;
      g_autofree guint8 *data = g_malloc (MAX (sizes[i], 1));
      GtFrameHeader h;
      guint32 flow = 0;
      guint16 index = 0;
      const guint8 *got = NULL;
      gsize got_len = 0;

      for (gsize j = 0; j < sizes[i]; j++)
        data[j] = (guint8) (j * 7 + i);
      gt_frame_append_datagram_header (b, 0x01020304, 0x0506, sizes[i]);
      g_byte_array_append (b, data, (guint) sizes[i]);
      g_assert_cmpuint (b->len, ==, GT_FRAME_HEADER_SIZE + GT_DATAGRAM_PREFIX_SIZE + sizes[i]);
      /* type 12, flags 0, stream 0, length, flow id, service index */
      g_assert_cmpuint (b->data[0], ==, 12);
      g_assert_cmpuint (b->data[1], ==, 0);
      g_assert_cmpmem (b->data + 2, 4, "\0\0\0\0", 4);
      g_assert_cmpmem (b->data + GT_FRAME_HEADER_SIZE, 6, "\x01\x02\x03\x04\x05\x06", 6);
      g_assert_cmpint (gt_frame_header_decode (b->data, b->len, &h, &error), ==, GT_DECODE_OK);
      g_assert_no_error (error);
      g_assert_cmpuint (h.type, ==, GT_FRAME_DATAGRAM);
      g_assert_cmpuint (h.length, ==, GT_DATAGRAM_PREFIX_SIZE + sizes[i]);
      g_assert_true (gt_datagram_decode (b->data + GT_FRAME_HEADER_SIZE, h.length, &flow, &index,
                                         &got, &got_len, &error));
      g_assert_no_error (error);
      g_assert_cmpuint (flow, ==, 0x01020304);
      g_assert_cmpuint (index, ==, 0x0506);
      g_assert_cmpmem (got, got_len, data, sizes[i]);

      /* Every truncation of the prefix is refused. */
      for (gsize cut = 0; cut < GT_DATAGRAM_PREFIX_SIZE; cut++)
        {
          g_assert_false (gt_datagram_decode (b->data + GT_FRAME_HEADER_SIZE, cut, &flow, &index,
                                              &got, &got_len, &error));
          g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
          g_clear_error (&error);
        }
      /* A header whose payload has not fully arrived yet decodes; the frame waits for it. */
      g_assert_cmpint (gt_frame_header_decode (b->data, GT_FRAME_HEADER_SIZE - 1, &h, &error),
                       ==, GT_DECODE_NEED_MORE);
    }

  {
    g_autoptr (GError) error = NULL;
    guint8 hdr[GT_FRAME_HEADER_SIZE];
    guint8 zero_flow[GT_DATAGRAM_PREFIX_SIZE + 3] = { 0, 0, 0, 0, 0, 1, 'a', 'b', 'c' };
    g_autofree guint8 *big = g_malloc0 (GT_DATAGRAM_MAX_PAYLOAD + 1);
    guint32 flow;
    guint16 index;
    const guint8 *got;
    gsize got_len;

    /* Oversized: one byte more than a UDP datagram can carry, in the header and the payload. */
    gt_frame_header_encode (hdr, GT_FRAME_DATAGRAM, 0, 0, GT_DATAGRAM_MAX_PAYLOAD + 1);
    g_assert_cmpint (gt_frame_header_decode (hdr, sizeof hdr, NULL, &error), ==,
                     GT_DECODE_ERROR);
    g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE);
    g_clear_error (&error);
    gt_frame_header_encode (hdr, GT_FRAME_DATAGRAM, 0, 0, G_MAXUINT32);
    g_assert_cmpint (gt_frame_header_decode (hdr, sizeof hdr, NULL, &error), ==,
                     GT_DECODE_ERROR);
    g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE);
    g_clear_error (&error);
    big[3] = 1;
    g_assert_false (gt_datagram_decode (big, GT_DATAGRAM_MAX_PAYLOAD + 1, &flow, &index, &got,
                                        &got_len, &error));
    g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE);
    g_clear_error (&error);
    g_assert_true (gt_datagram_decode (big, GT_DATAGRAM_MAX_PAYLOAD, &flow, &index, &got,
                                       &got_len, &error));
    g_assert_cmpuint (got_len, ==, GT_DATAGRAM_MAX_DATA);

    /* Too short for its prefix, a stream id, a flag. */
    gt_frame_header_encode (hdr, GT_FRAME_DATAGRAM, 0, 0, GT_DATAGRAM_PREFIX_SIZE - 1);
    g_assert_cmpint (gt_frame_header_decode (hdr, sizeof hdr, NULL, &error), ==,
                     GT_DECODE_ERROR);
    g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
    g_clear_error (&error);
    gt_frame_header_encode (hdr, GT_FRAME_DATAGRAM, 0, 7, GT_DATAGRAM_PREFIX_SIZE);
    g_assert_cmpint (gt_frame_header_decode (hdr, sizeof hdr, NULL, &error), ==,
                     GT_DECODE_ERROR);
    g_clear_error (&error);
    gt_frame_header_encode (hdr, GT_FRAME_DATAGRAM, GT_FRAME_FLAG_ACK, 0,
                            GT_DATAGRAM_PREFIX_SIZE);
    g_assert_cmpint (gt_frame_header_decode (hdr, sizeof hdr, NULL, &error), ==,
                     GT_DECODE_ERROR);
    g_clear_error (&error);

    /* Flow 0 names no flow. */
    g_assert_false (gt_datagram_decode (zero_flow, sizeof zero_flow, &flow, &index, &got,
                                        &got_len, &error));
    g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
  }
}

/* udp services: kind 4 with port and random flag, only with the DATAGRAM capability. */
static void
test_hello_udp (void)
{
  g_autoptr (GtHello) hello = gt_hello_new ("u", "s");
  g_autoptr (GByteArray) b = g_byte_array_new ();
  g_autoptr (GtHello) back = NULL;
  g_autoptr (GError) error = NULL;
  const GtHelloService *svc;
  GtFrameHeader h;

  gt_hello_add_service (hello, GT_SERVICE_KIND_UDP, NULL, 5353, TRUE);
  /* Without the capability the encoder refuses it. */
  g_assert_false (gt_frame_append_hello (b, hello, &error));
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
  g_assert_nonnull (strstr (error->message, "DATAGRAM capability"));
  g_clear_error (&error);
  g_assert_cmpuint (b->len, ==, 0);

  hello->caps = GT_CAP_DATAGRAM;
  g_assert_true (gt_frame_append_hello (b, hello, &error));
  g_assert_no_error (error);
  g_assert_cmpint (gt_frame_header_decode (b->data, b->len, &h, &error), ==, GT_DECODE_OK);
  back = gt_hello_decode_flags (b->data + GT_FRAME_HEADER_SIZE, h.length, h.flags, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (back->caps, ==, GT_CAP_DATAGRAM);
  g_assert_cmpuint (back->services->len, ==, 1);
  svc = back->services->pdata[0];
  g_assert_cmpint (svc->kind, ==, GT_SERVICE_KIND_UDP);
  g_assert_cmpuint (svc->remote_port, ==, 5353);
  g_assert_true (svc->remote_random);
  g_assert_null (svc->prefix);

  /* The same bytes with the capability bit cleared: a clear refusal, not a udp service. */
  b->data[b->len - 1] = 0;
  g_assert_null (gt_hello_decode_flags (b->data + GT_FRAME_HEADER_SIZE, h.length, h.flags,
                                        &error));
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
  g_assert_nonnull (strstr (error->message, "DATAGRAM capability"));
  g_clear_error (&error);
  /* Kind 5 is unknown. */
  b->data[b->len - 1] = GT_CAP_DATAGRAM;
  b->data[GT_FRAME_HEADER_SIZE + 1 + 1 + 1 + 1 + 2] = 5;
  g_assert_null (gt_hello_decode_flags (b->data + GT_FRAME_HEADER_SIZE, h.length, h.flags,
                                        &error));
  g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
}

static void
test_forward_codec (void)
{
  g_autoptr (GByteArray) b = g_byte_array_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *prefix = NULL;
  const guint8 *data = NULL;
  gsize data_len = 0;
  GtFrameHeader h;
  const guint8 expected[] = {
    0x0b, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x06, /* FORWARD, stream 2, 6 bytes */
    0x03, 's', 'v', 'c', 'h', 'i',                              /* "svc", data "hi" */
    0x0b, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, /* FORWARD ACK, stream 2 */
  };

  gt_frame_append_forward_header (b, 2, "SvC", 2);
  g_byte_array_append (b, (const guint8 *) "hi", 2);
  gt_frame_append_forward_ack (b, 2);
  g_assert_cmpmem (b->data, b->len, expected, sizeof expected);

  g_assert_cmpint (gt_frame_header_decode (b->data, b->len, &h, &error), ==, GT_DECODE_OK);
  g_assert_cmpuint (h.type, ==, GT_FRAME_FORWARD);
  g_assert_true (gt_forward_decode (b->data + GT_FRAME_HEADER_SIZE, h.length, &prefix, &data,
                                    &data_len, &error));
  g_assert_cmpstr (prefix, ==, "svc");
  g_assert_cmpmem (data, data_len, "hi", 2);
  g_assert_cmpint (gt_frame_header_decode (b->data + 16, b->len - 16, &h, &error), ==,
                   GT_DECODE_OK);
  g_assert_cmpuint (h.flags, ==, GT_FRAME_FLAG_ACK);
  g_assert_cmpuint (h.length, ==, 0);

  /* Bad payloads: each refused with a reason, nothing read past the end. */
  {
    static const struct
    {
      const char *bytes;
      gsize len;
    } bad[] = {
      { "", 0 },             /* nothing */
      { "\x00x", 2 },        /* empty prefix */
      { "\x05svc", 4 },      /* truncated prefix */
      { "\x03s.c", 4 },      /* not [A-Za-z0-9-] */
      { "\x03s\x00" "c", 4 }, /* NUL */
      { "\xc9", 1 },         /* 201 bytes: over the limit */
    };

    for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
      {
        g_autofree guint8 *copy = g_memdup2 (bad[i].bytes, bad[i].len);
        char *p = NULL;

        g_assert_false (gt_forward_decode (copy, bad[i].len, &p, &data, &data_len, &error));
        g_assert_null (p);
        g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED);
        g_clear_error (&error);
      }
  }
  /* Header rules: ACK must be empty, a request must name at least one byte of prefix, stream 0
   * is not a stream. */
  {
    guint8 hdr[GT_FRAME_HEADER_SIZE];

    gt_frame_header_encode (hdr, GT_FRAME_FORWARD, GT_FRAME_FLAG_ACK, 2, 1);
    g_assert_cmpint (gt_frame_header_decode (hdr, sizeof hdr, &h, &error), ==, GT_DECODE_ERROR);
    g_clear_error (&error);
    gt_frame_header_encode (hdr, GT_FRAME_FORWARD, 0, 2, 1);
    g_assert_cmpint (gt_frame_header_decode (hdr, sizeof hdr, &h, &error), ==, GT_DECODE_ERROR);
    g_clear_error (&error);
    gt_frame_header_encode (hdr, GT_FRAME_FORWARD, 0, 0, 4);
    g_assert_cmpint (gt_frame_header_decode (hdr, sizeof hdr, &h, &error), ==, GT_DECODE_ERROR);
    g_clear_error (&error);
    gt_frame_header_encode (hdr, GT_FRAME_FORWARD, 0, 2, GT_FRAME_MAX_PAYLOAD + 1);
    g_assert_cmpint (gt_frame_header_decode (hdr, sizeof hdr, &h, &error), ==, GT_DECODE_ERROR);
    g_assert_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE);
  }
  g_assert_true (gt_forward_prefix_is_valid ("a-1"));
  g_assert_false (gt_forward_prefix_is_valid (""));
  g_assert_false (gt_forward_prefix_is_valid ("a.b"));
  g_assert_cmpstr (gt_reset_code_to_string (GT_RESET_CODE_NOT_ALLOWED), ==,
                   "not allowed by the server's tcpForwardAllow");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/gt/protocol/frame/preface", test_preface);
  g_test_add_func ("/gt/protocol/frame/header/layout", test_header_layout);
  g_test_add_func ("/gt/protocol/frame/header/too-large", test_too_large);
  g_test_add_func ("/gt/protocol/frame/header/exact-sizes", test_exact_sizes);
  g_test_add_func ("/gt/protocol/frame/header/stream-ids", test_stream_ids);
  g_test_add_func ("/gt/protocol/frame/header/unknown-type", test_unknown_type);
  g_test_add_func ("/gt/protocol/frame/header/unknown-flags", test_unknown_flags);
  g_test_add_func ("/gt/protocol/frame/hello/roundtrip", test_hello_roundtrip);
  g_test_add_func ("/gt/protocol/frame/hello/layout", test_hello_layout);
  g_test_add_func ("/gt/protocol/frame/hello/caps", test_hello_caps);
  g_test_add_func ("/gt/protocol/frame/welcome/caps", test_welcome_caps);
  g_test_add_func ("/gt/protocol/frame/forward", test_forward_codec);
  g_test_add_func ("/gt/protocol/frame/datagram", test_datagram_codec);
  g_test_add_func ("/gt/protocol/frame/hello/udp", test_hello_udp);
  g_test_add_func ("/gt/protocol/frame/hello/id-limits", test_hello_id_limits);
  g_test_add_func ("/gt/protocol/frame/hello/service-limits", test_hello_service_limits);
  g_test_add_func ("/gt/protocol/frame/hello/prefix", test_hello_prefix);
  g_test_add_func ("/gt/protocol/frame/welcome/roundtrip", test_welcome_roundtrip);
  g_test_add_func ("/gt/protocol/frame/welcome/bad", test_welcome_bad);
  g_test_add_func ("/gt/protocol/frame/open/roundtrip", test_open_roundtrip);
  g_test_add_func ("/gt/protocol/frame/data/roundtrip", test_data_roundtrip);
  g_test_add_func ("/gt/protocol/frame/stream-control/roundtrip", test_stream_control_roundtrip);
  g_test_add_func ("/gt/protocol/frame/ping/roundtrip", test_ping_roundtrip);
  g_test_add_func ("/gt/protocol/frame/error/roundtrip", test_error_roundtrip);
  g_test_add_func ("/gt/protocol/frame/error/truncation", test_error_truncation);
  g_test_add_func ("/gt/protocol/frame/error/bad", test_error_bad);
  g_test_add_func ("/gt/protocol/frame/truncated", test_truncated);
  g_test_add_func ("/gt/protocol/frame/mutations", test_mutations);
  g_test_add_func ("/gt/protocol/frame/sequence", test_stream_of_frames);
  g_test_add_func ("/gt/protocol/frame/strings", test_strings);

  g_test_add_func ("/gt/protocol/frame/open-addr", test_open_addr);
  return g_test_run ();
}
