/* test-stun.c: the STUN message parser and builders (gt-stun.c), against RFC 5769's test
 * vectors and hand-made broken messages. */
#include "gt-stun.h"

#include <string.h>

/* RFC 5769 §2.1: a Binding request with SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
 * MESSAGE-INTEGRITY and FINGERPRINT. */
static const guint8 rfc5769_request[] = {
  0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
  0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
  0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
  0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
  0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
  0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
  0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
};

/* RFC 5769 §2.2: the IPv4 response, XOR-MAPPED-ADDRESS 192.0.2.1:32853. */
static const guint8 rfc5769_response_v4[] = {
  0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
  0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
  0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
  0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
  0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
};

/* RFC 5769 §2.3: the IPv6 response, 2001:db8:1234:5678:11:2233:4455:6677 port 32853. */
static const guint8 rfc5769_response_v6[] = {
  0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
  0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
  0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa,
  0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9, 0x00, 0x08, 0x00, 0x14,
  0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75,
  0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
};

static void
test_rfc5769_request (void)
{
  g_autoptr (GError) error = NULL;
  GtStunMessage msg;

  g_assert_true (gt_stun_parse (rfc5769_request, sizeof rfc5769_request, &msg, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (msg.method, ==, GT_STUN_METHOD_BINDING);
  g_assert_cmpint (msg.klass, ==, GT_STUN_CLASS_REQUEST);
  g_assert_true (msg.has_fingerprint);
  g_assert_cmpuint (msg.n_unknown, ==, 0);
  g_assert_cmpmem (msg.transaction_id, 12, rfc5769_request + 8, 12);
}

static void
test_rfc5769_responses (void)
{
  static const guint8 v4[] = { 192, 0, 2, 1 };
  static const guint8 v6[] = { 0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0x56, 0x78,
                               0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77 };
  GtStunMessage msg;

  g_assert_true (gt_stun_parse (rfc5769_response_v4, sizeof rfc5769_response_v4, &msg, NULL));
  g_assert_cmpint (msg.klass, ==, GT_STUN_CLASS_SUCCESS);
  g_assert_true (msg.has_xor_mapped);
  g_assert_cmpuint (msg.xor_mapped.family, ==, 4);
  g_assert_cmpuint (msg.xor_mapped.port, ==, 32853);
  g_assert_cmpmem (msg.xor_mapped.bytes, 4, v4, 4);

  g_assert_true (gt_stun_parse (rfc5769_response_v6, sizeof rfc5769_response_v6, &msg, NULL));
  g_assert_cmpuint (msg.xor_mapped.family, ==, 6);
  g_assert_cmpuint (msg.xor_mapped.port, ==, 32853);
  g_assert_cmpmem (msg.xor_mapped.bytes, 16, v6, 16);
}

/* Our own request and response parse back, and the response XORs with the request's id. */
static void
test_build_roundtrip (void)
{
  static const guint8 txid[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
  guint8 req[GT_STUN_MAX_MESSAGE], resp[GT_STUN_MAX_MESSAGE];
  GtStunMessage msg, back;
  GtStunAddress mapped = { .family = 6, .port = 40000 };
  gsize n;

  n = gt_stun_build_binding_request (txid, req);
  g_assert_true (gt_stun_parse (req, n, &msg, NULL));
  g_assert_cmpint (msg.klass, ==, GT_STUN_CLASS_REQUEST);
  g_assert_true (msg.has_fingerprint);
  g_assert_cmpmem (msg.transaction_id, 12, txid, 12);

  for (guint i = 0; i < 16; i++)
    mapped.bytes[i] = (guint8)(0xf0 + i);
  n = gt_stun_build_binding_success (&msg, &mapped, resp);
  g_assert_true (gt_stun_parse (resp, n, &back, NULL));
  g_assert_cmpint (back.klass, ==, GT_STUN_CLASS_SUCCESS);
  g_assert_cmpuint (back.method, ==, GT_STUN_METHOD_BINDING);
  g_assert_cmpmem (back.transaction_id, 12, txid, 12);
  g_assert_true (back.has_xor_mapped);
  g_assert_cmpuint (back.xor_mapped.family, ==, 6);
  g_assert_cmpuint (back.xor_mapped.port, ==, 40000);
  g_assert_cmpmem (back.xor_mapped.bytes, 16, mapped.bytes, 16);
}

static void
test_error_unknown (void)
{
  guint8 req[64], resp[GT_STUN_MAX_MESSAGE];
  GtStunMessage msg, back;
  gsize n;

  /* A request with one unknown comprehension-required attribute (0x0777) and no FINGERPRINT. */
  memcpy (req, rfc5769_request, 20);
  req[2] = 0;
  req[3] = 8;
  req[20] = 0x07;
  req[21] = 0x77;
  req[22] = 0;
  req[23] = 4;
  memset (req + 24, 0xaa, 4);
  g_assert_true (gt_stun_parse (req, 28, &msg, NULL));
  g_assert_cmpuint (msg.n_unknown, ==, 1);
  g_assert_cmpuint (msg.unknown[0], ==, 0x0777);
  g_assert_false (msg.has_fingerprint);

  n = gt_stun_build_error (&msg, 420, "Unknown Attribute", resp);
  g_assert_true (gt_stun_parse (resp, n, &back, NULL));
  g_assert_cmpint (back.klass, ==, GT_STUN_CLASS_ERROR);
  g_assert_cmpuint (back.error_code, ==, 420);
}

static void
expect_fail (const guint8 *buf, gsize len, gint code)
{
  g_autoptr (GError) error = NULL;
  g_autofree guint8 *copy = g_memdup2 (buf, len);
  GtStunMessage msg;

  g_assert_false (gt_stun_parse (copy, len, &msg, &error));
  g_assert_error (error, GT_STUN_ERROR, code);
}

/* A classic (RFC 3489) Binding request, as libnice sends to discover its server-reflexive
 * address: the answer echoes all 16 transaction id bytes and carries a plain MAPPED-ADDRESS. */
static void
test_classic_binding (void)
{
  static const guint8 req[20] = { 0x00, 0x01, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4,
                                  5,    6,    7,    8,    9,    10,   11,   12 };
  static const guint8 want[32] = { 0x01, 0x01, 0x00, 0x0c, 0xde, 0xad, 0xbe, 0xef, 1,    2, 3,
                                   4,    5,    6,    7,    8,    9,    10,   11,   12,   0x00,
                                   0x01, 0x00, 0x08, 0x00, 0x01, 0xd4, 0x31, 198,  18,   2, 2 };
  GtStunAddress mapped = { .family = 4, .bytes = { 198, 18, 2, 2 }, .port = 54321 };
  guint8 out[GT_STUN_MAX_MESSAGE];
  g_autoptr (GError) error = NULL;
  GtStunMessage msg;
  guint8 other[20];
  gsize n;

  g_assert_true (gt_stun_parse (req, sizeof req, &msg, &error));
  g_assert_no_error (error);
  g_assert_true (msg.classic);
  g_assert_cmpint (msg.klass, ==, GT_STUN_CLASS_REQUEST);
  g_assert_cmpuint (msg.method, ==, GT_STUN_METHOD_BINDING);
  n = gt_stun_build_binding_success (&msg, &mapped, out);
  g_assert_cmpmem (out, n, want, sizeof want);

  /* Without the cookie, only a Binding request is taken. */
  memcpy (other, req, sizeof other);
  other[1] = 0x11; /* an indication */
  expect_fail (other, sizeof other, GT_STUN_ERROR_NOT_STUN);
  /* A modern request is not classic. */
  n = gt_stun_build_binding_request ((const guint8 *)"abcdefghijkl", out);
  g_assert_true (gt_stun_parse (out, n, &msg, NULL));
  g_assert_false (msg.classic);
}

static void
test_malformed (void)
{
  guint8 buf[GT_STUN_MAX_MESSAGE + 4];

  /* Not STUN: too short, top bits set, wrong cookie, length not matching. */
  expect_fail (rfc5769_request, 19, GT_STUN_ERROR_NOT_STUN);
  memcpy (buf, rfc5769_request, sizeof rfc5769_request);
  buf[0] |= 0x40;
  expect_fail (buf, sizeof rfc5769_request, GT_STUN_ERROR_NOT_STUN);
  memcpy (buf, rfc5769_request, sizeof rfc5769_request);
  buf[4] ^= 1;
  expect_fail (buf, sizeof rfc5769_request, GT_STUN_ERROR_NOT_STUN);
  expect_fail (rfc5769_request, sizeof rfc5769_request - 4, GT_STUN_ERROR_NOT_STUN);

  /* A bit flipped in the body: the FINGERPRINT no longer matches. */
  memcpy (buf, rfc5769_request, sizeof rfc5769_request);
  buf[30] ^= 1;
  expect_fail (buf, sizeof rfc5769_request, GT_STUN_ERROR_MALFORMED);

  /* An attribute whose length runs past the end. */
  memcpy (buf, rfc5769_request, sizeof rfc5769_request);
  buf[23] = 0xff;
  expect_fail (buf, sizeof rfc5769_request, GT_STUN_ERROR_MALFORMED);

  /* An attribute after FINGERPRINT. */
  memcpy (buf, rfc5769_request, sizeof rfc5769_request);
  memset (buf + sizeof rfc5769_request, 0, 4);
  buf[2] = 0;
  buf[3] = 0x58 + 4;
  expect_fail (buf, sizeof rfc5769_request + 4, GT_STUN_ERROR_MALFORMED);

  /* A bad XOR-MAPPED-ADDRESS family. */
  memcpy (buf, rfc5769_response_v4, sizeof rfc5769_response_v4);
  buf[41] = 3;
  expect_fail (buf, sizeof rfc5769_response_v4, GT_STUN_ERROR_MALFORMED);

  /* Oversized: a well-formed header announcing more than the limit. */
  memset (buf, 0, sizeof buf);
  memcpy (buf, rfc5769_request, 20);
  buf[2] = (GT_STUN_MAX_MESSAGE + 4 - 20) >> 8;
  buf[3] = (GT_STUN_MAX_MESSAGE + 4 - 20) & 0xff;
  expect_fail (buf, GT_STUN_MAX_MESSAGE + 4, GT_STUN_ERROR_TOO_LARGE);

  /* Too many (empty, comprehension-optional) attributes. */
  memset (buf, 0, sizeof buf);
  memcpy (buf, rfc5769_request, 20);
  for (guint i = 0; i <= GT_STUN_MAX_ATTRIBUTES; i++)
    {
      buf[20 + 4 * i] = 0x80;
      buf[20 + 4 * i + 1] = 0x50;
    }
  buf[2] = 0;
  buf[3] = (guint8)(4 * (GT_STUN_MAX_ATTRIBUTES + 1));
  expect_fail (buf, 20 + 4 * (GT_STUN_MAX_ATTRIBUTES + 1), GT_STUN_ERROR_TOO_LARGE);
}

/* RFC 5769 §2.4: a request with long-term authentication (username "マトリックス", password
 * "TheMatrIX" after SASLprep, realm "example.org"). */
static const guint8 rfc5769_long_term[] = {
  0x00, 0x01, 0x00, 0x60, 0x21, 0x12, 0xa4, 0x42, 0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0,
  0x29, 0xda, 0x41, 0x2e, 0x00, 0x06, 0x00, 0x12, 0xe3, 0x83, 0x9e, 0xe3, 0x83, 0x88, 0xe3, 0x83,
  0xaa, 0xe3, 0x83, 0x83, 0xe3, 0x82, 0xaf, 0xe3, 0x82, 0xb9, 0x00, 0x00, 0x00, 0x15, 0x00, 0x1c,
  0x66, 0x2f, 0x2f, 0x34, 0x39, 0x39, 0x6b, 0x39, 0x35, 0x34, 0x64, 0x36, 0x4f, 0x4c, 0x33, 0x34,
  0x6f, 0x4c, 0x39, 0x46, 0x53, 0x54, 0x76, 0x79, 0x36, 0x34, 0x73, 0x41, 0x00, 0x14, 0x00, 0x0b,
  0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x6f, 0x72, 0x67, 0x00, 0x00, 0x08, 0x00, 0x14,
  0xf6, 0x70, 0x24, 0x65, 0x6d, 0xd6, 0x4a, 0x3e, 0x02, 0xb8, 0xe0, 0x71, 0x2e, 0x85, 0xc9, 0xa2,
  0x8c, 0xa8, 0x96, 0x66,
};

static void
test_integrity (void)
{
  static const char short_term[] = "VOkJxbRl1RmTxUk/WvJxBt";
  g_autoptr (GError) error = NULL;
  guint8 key[16];
  guint8 bad[sizeof rfc5769_request];
  GtStunMessage msg;

  /* Short-term credentials: the key is the password. */
  g_assert_true (gt_stun_parse (rfc5769_request, sizeof rfc5769_request, &msg, &error));
  g_assert_cmpuint (msg.integrity_offset, ==, 0x4c);
  g_assert_cmpmem (msg.username, msg.username_len, "evtj:h6vY", 9);
  g_assert_true (gt_stun_check_integrity (rfc5769_request, &msg, (const guint8 *) short_term,
                                          strlen (short_term)));
  g_assert_false (gt_stun_check_integrity (rfc5769_request, &msg, (const guint8 *) "x", 1));
  /* A changed byte before MESSAGE-INTEGRITY breaks it (and the FINGERPRINT: drop that). */
  memcpy (bad, rfc5769_request, sizeof bad);
  bad[0x40] ^= 1;
  bad[3] = 0x58 - 8;
  g_assert_true (gt_stun_parse (bad, sizeof bad - 8, &msg, NULL));
  g_assert_false (gt_stun_check_integrity (bad, &msg, (const guint8 *) short_term,
                                           strlen (short_term)));

  /* Long-term credentials. */
  g_assert_true (gt_stun_parse (rfc5769_long_term, sizeof rfc5769_long_term, &msg, &error));
  g_assert_no_error (error);
  g_assert_cmpmem (msg.realm, msg.realm_len, "example.org", 11);
  g_assert_cmpmem (msg.nonce, msg.nonce_len, "f//499k954d6OL34oL9FSTvy64sA", 28);
  gt_stun_long_term_key ("\xe3\x83\x9e\xe3\x83\x88\xe3\x83\xaa\xe3\x83\x83\xe3\x82\xaf\xe3\x82\xb9",
                         "example.org", "TheMatrIX", key);
  g_assert_true (gt_stun_check_integrity (rfc5769_long_term, &msg, key, sizeof key));
  gt_stun_long_term_key ("\xe3\x83\x9e\xe3\x83\x88\xe3\x83\xaa\xe3\x83\x83\xe3\x82\xaf\xe3\x82\xb9",
                         "example.org", "TheMatrix", key);
  g_assert_false (gt_stun_check_integrity (rfc5769_long_term, &msg, key, sizeof key));
}

/* A TURN Allocate success built with a key parses back with every attribute and checks. */
static void
test_turn_roundtrip (void)
{
  static const guint8 txid[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
  static const guint8 key[16] = { 0x42 };
  GtStunAddress relayed = { .family = 4, .bytes = { 127, 0, 0, 1 }, .port = 50000 };
  GtStunAddress peer = { .family = 6, .bytes = { [15] = 1 }, .port = 4242 };
  guint8 out[GT_TURN_MAX_MESSAGE];
  guint8 payload[3000];
  GtStunBuilder b;
  GtStunMessage msg;
  gsize n;

  gt_stun_builder_init (&b, out, sizeof out, GT_STUN_METHOD_ALLOCATE, GT_STUN_CLASS_SUCCESS, txid);
  g_assert_true (gt_stun_builder_add_xor_address (&b, GT_STUN_ATTR_XOR_RELAYED_ADDRESS, &relayed));
  g_assert_true (gt_stun_builder_add_u32 (&b, GT_STUN_ATTR_LIFETIME, 600));
  n = gt_stun_builder_finish (&b, key, sizeof key);
  g_assert_cmpuint (n, >, 0);
  g_assert_true (gt_stun_parse_turn (out, n, &msg, NULL));
  g_assert_cmpuint (msg.method, ==, GT_STUN_METHOD_ALLOCATE);
  g_assert_cmpint (msg.klass, ==, GT_STUN_CLASS_SUCCESS);
  g_assert_true (msg.has_xor_relayed);
  g_assert_cmpmem (msg.xor_relayed.bytes, 4, relayed.bytes, 4);
  g_assert_cmpuint (msg.xor_relayed.port, ==, 50000);
  g_assert_true (msg.has_lifetime);
  g_assert_cmpuint (msg.lifetime, ==, 600);
  g_assert_true (msg.has_fingerprint);
  g_assert_true (gt_stun_check_integrity (out, &msg, key, sizeof key));

  /* A Send indication with a large DATA: too large for plain STUN, fine for TURN. */
  memset (payload, 0xab, sizeof payload);
  gt_stun_builder_init (&b, out, sizeof out, GT_STUN_METHOD_SEND, GT_STUN_CLASS_INDICATION, txid);
  g_assert_true (gt_stun_builder_add_xor_address (&b, GT_STUN_ATTR_XOR_PEER_ADDRESS, &peer));
  g_assert_true (gt_stun_builder_add_bytes (&b, GT_STUN_ATTR_DATA, payload, sizeof payload));
  /* What does not fit is refused and leaves the message as it was. */
  g_assert_false (gt_stun_builder_add_bytes (&b, GT_STUN_ATTR_DATA, payload, sizeof payload));
  n = gt_stun_builder_finish (&b, NULL, 0);
  g_assert_false (gt_stun_parse (out, n, &msg, NULL));
  g_assert_true (gt_stun_parse_turn (out, n, &msg, NULL));
  g_assert_cmpuint (msg.n_peers, ==, 1);
  g_assert_cmpuint (msg.peers[0].family, ==, 6);
  g_assert_cmpmem (msg.peers[0].bytes, 16, peer.bytes, 16);
  g_assert_cmpuint (msg.peers[0].port, ==, 4242);
  g_assert_cmpmem (msg.data, msg.data_len, payload, sizeof payload);
}

static void
test_channel_data (void)
{
  guint8 out[64];
  const guint8 *data;
  gsize len, data_len;
  guint16 channel;

  len = gt_turn_channel_data_build (0x4001, (const guint8 *) "hello", 5, out);
  g_assert_cmpuint (len, ==, 9);
  g_assert_true (gt_turn_channel_data_parse (out, len, &channel, &data, &data_len));
  g_assert_cmpuint (channel, ==, 0x4001);
  g_assert_cmpmem (data, data_len, "hello", 5);
  /* Padding after the data is allowed; a length past the datagram or a channel out of range
   * is not. */
  memset (out + len, 0, 3);
  g_assert_true (gt_turn_channel_data_parse (out, len + 3, &channel, &data, &data_len));
  g_assert_cmpuint (data_len, ==, 5);
  g_assert_false (gt_turn_channel_data_parse (out, len - 1, &channel, &data, &data_len));
  g_assert_false (gt_turn_channel_data_parse (out, 3, &channel, &data, &data_len));
  out[0] = 0x50;
  g_assert_false (gt_turn_channel_data_parse (out, len, &channel, &data, &data_len));
  out[0] = 0x3f;
  g_assert_false (gt_turn_channel_data_parse (out, len, &channel, &data, &data_len));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/protocol/stun/rfc5769-request", test_rfc5769_request);
  g_test_add_func ("/gt/protocol/stun/rfc5769-responses", test_rfc5769_responses);
  g_test_add_func ("/gt/protocol/stun/build-roundtrip", test_build_roundtrip);
  g_test_add_func ("/gt/protocol/stun/error-unknown", test_error_unknown);
  g_test_add_func ("/gt/protocol/stun/malformed", test_malformed);
  g_test_add_func ("/gt/protocol/stun/integrity", test_integrity);
  g_test_add_func ("/gt/protocol/stun/turn-roundtrip", test_turn_roundtrip);
  g_test_add_func ("/gt/protocol/stun/channel-data", test_channel_data);
  g_test_add_func ("/gt/protocol/stun/classic-binding", test_classic_binding);
  return g_test_run ();
}
