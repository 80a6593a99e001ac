/* test-proxy-protocol.c: unit tests for the PROXY protocol parser, encoders and CIDR lists. */
#include "gt-proxy-protocol.h"

#include <string.h>

static const guint8 sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

/* Runs the parser and checks the invariants every call must keep. */
static GtDecodeResult
parse (const guint8 *buf, gsize len, GtProxyHeader *h, gsize *consumed, GError **error)
{
  GtDecodeResult r;

  *consumed = 12345;
  r = gt_proxy_header_parse (buf, len, h, consumed, error);
  if (r == GT_DECODE_OK)
    {
      g_assert_cmpuint (*consumed, >, 0);
      g_assert_cmpuint (*consumed, <=, len);
      g_assert_true (h->local == (h->src_addr == NULL));
      g_assert_true (h->local == (h->dst_addr == NULL));
      if (h->local)
        g_assert_cmpint (h->family, ==, G_SOCKET_FAMILY_INVALID);
      else
        g_assert_true (h->family == G_SOCKET_FAMILY_IPV4 || h->family == G_SOCKET_FAMILY_IPV6);
    }
  else
    {
      g_assert_null (h->src_addr);
      g_assert_null (h->dst_addr);
    }
  if (r == GT_DECODE_NEED_MORE)
    g_assert_cmpuint (*consumed, ==, 0);
  g_assert_true ((r == GT_DECODE_ERROR) == (error != NULL && *error != NULL) || error == NULL);
  return r;
}

static void
assert_proxy (const guint8 *buf, gsize len, gsize expect_consumed, GSocketFamily family,
              const char *src, guint16 sport, const char *dst, guint16 dport)
{
  g_auto (GtProxyHeader) h = { 0 };
  g_autoptr (GError) error = NULL;
  gsize consumed;

  g_assert_cmpint (parse (buf, len, &h, &consumed, &error), ==, GT_DECODE_OK);
  g_assert_no_error (error);
  g_assert_cmpuint (consumed, ==, expect_consumed);
  g_assert_false (h.local);
  g_assert_cmpint (h.family, ==, family);
  g_assert_cmpstr (h.src_addr, ==, src);
  g_assert_cmpstr (h.dst_addr, ==, dst);
  g_assert_cmpuint (h.src_port, ==, sport);
  g_assert_cmpuint (h.dst_port, ==, dport);
}

static void
assert_local (const guint8 *buf, gsize len, gsize expect_consumed)
{
  g_auto (GtProxyHeader) h = { 0 };
  g_autoptr (GError) error = NULL;
  gsize consumed;

  g_assert_cmpint (parse (buf, len, &h, &consumed, &error), ==, GT_DECODE_OK);
  g_assert_no_error (error);
  g_assert_cmpuint (consumed, ==, expect_consumed);
  g_assert_true (h.local);
}

static void
assert_error (const guint8 *buf, gsize len, int code)
{
  g_auto (GtProxyHeader) h = { 0 };
  g_autoptr (GError) error = NULL;
  gsize consumed;

  g_assert_cmpint (parse (buf, len, &h, &consumed, &error), ==, GT_DECODE_ERROR);
  g_assert_error (error, GT_PROXY_PROTOCOL_ERROR, code);
}

static void
assert_need_more_prefixes (const guint8 *buf, gsize len)
{
  for (gsize i = 0; i < len; i++)
    {
      g_auto (GtProxyHeader) h = { 0 };
      g_autoptr (GError) error = NULL;
      gsize consumed;
      GtDecodeResult r = parse (buf, i, &h, &consumed, &error);

      if (r != GT_DECODE_NEED_MORE)
        g_error ("prefix of %" G_GSIZE_FORMAT "/%" G_GSIZE_FORMAT " bytes gave %d (%s)", i, len, r,
                 error != NULL ? error->message : "no error");
    }
}

#define S(str) (const guint8 *) (str), strlen (str)

static void
assert_v1_error (const char *line)
{
  g_autofree char *escaped = g_strescape (line, NULL);

  g_test_message ("v1: %s", escaped);
  assert_error (S (line), GT_PROXY_PROTOCOL_ERROR_MALFORMED);
}

/* ---- v1 ---- */

static void
test_v1_valid (void)
{
  static const char tcp4[] = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
  static const char tcp6[] = "PROXY TCP6 2001:DB8::1 ::1 0 65535\r\n";
  static const char mapped[] = "PROXY TCP6 ::ffff:10.0.0.1 ::ffff:10.0.0.2 1 2\r\n";
  /* The longest lines the spec allows: 104 and 107 bytes. */
  static const char tcp6_max[] = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                                 "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
  static const char unknown_max[] = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                                    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";

  assert_proxy (S (tcp4), strstr (tcp4, "GET") - tcp4, G_SOCKET_FAMILY_IPV4, "192.168.0.1", 56324,
                "192.168.0.11", 443);
  assert_proxy (S (tcp6), strlen (tcp6), G_SOCKET_FAMILY_IPV6, "2001:db8::1", 0, "::1", 65535);
  assert_proxy (S (mapped), strlen (mapped), G_SOCKET_FAMILY_IPV6, "::ffff:10.0.0.1", 1,
                "::ffff:10.0.0.2", 2);
  g_assert_cmpuint (strlen (tcp6_max), ==, 104);
  assert_proxy (S (tcp6_max), 104, G_SOCKET_FAMILY_IPV6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                65535, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);

  assert_local (S ("PROXY UNKNOWN\r\n"), 15);
  assert_local (S ("PROXY UNKNOWN\r\nabc"), 15);
  g_assert_cmpuint (strlen (unknown_max), ==, 107);
  assert_local (S (unknown_max), 107);
}

static void
test_v1_truncated (void)
{
  const char *lines[] = {
    "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
    "PROXY TCP6 2001:db8::1 ::1 0 65535\r\n",
    "PROXY UNKNOWN\r\n",
    "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
    "65535 65535\r\n",
  };

  for (guint i = 0; i < G_N_ELEMENTS (lines); i++)
    assert_need_more_prefixes (S (lines[i]));
}

static void
test_v1_malformed (void)
{
  g_autofree char *too_long = NULL;
  const char *bad[] = {
    /* addresses */
    "PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n",
    "PROXY TCP4 1.2.3.4 1.2.3.256 1 2\r\n",
    "PROXY TCP4 01.2.3.4 1.2.3.4 1 2\r\n",
    "PROXY TCP4 ::1 1.2.3.4 1 2\r\n",
    "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
    "PROXY TCP6 ::1 ::g 1 2\r\n",
    "PROXY TCP6 fe80::1%lo ::1 1 2\r\n",
    "PROXY TCP4 localhost 1.2.3.4 1 2\r\n",
    /* ports */
    "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 0x2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 000001\r\n",
    /* spacing and fields */
    "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
    "PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
    "PROXY \r\n",
    "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "PROXY UNKNOWNX\r\n",
    /* line ends */
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
  };

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    assert_v1_error (bad[i]);

  /* A line that has not ended after 107 bytes, with and without a late CRLF. */
  too_long = g_strdup_printf ("PROXY UNKNOWN %0101d", 0);
  g_assert_cmpuint (strlen (too_long), ==, 115);
  assert_error ((const guint8 *) too_long, 107, GT_PROXY_PROTOCOL_ERROR_MALFORMED);
  assert_need_more_prefixes ((const guint8 *) too_long, 107);
  g_free (too_long);
  /* 106 bytes + CRLF = 108: the CR is the 107th byte, its LF would be one too many. */
  too_long = g_strdup_printf ("PROXY UNKNOWN %092d\r\n", 0);
  g_assert_cmpuint (strlen (too_long), ==, 108);
  assert_error (S (too_long), GT_PROXY_PROTOCOL_ERROR_MALFORMED);
  assert_need_more_prefixes ((const guint8 *) too_long, 107);
}

/* ---- v2 ---- */

static GByteArray *
v2 (guint8 ver_cmd, guint8 fam, guint16 length, const guint8 *body, gsize body_len)
{
  GByteArray *a = g_byte_array_new ();
  guint8 fixed[4] = { ver_cmd, fam, (guint8) (length >> 8), (guint8) length };

  g_byte_array_append (a, sig, sizeof sig);
  g_byte_array_append (a, fixed, sizeof fixed);
  if (body_len > 0)
    g_byte_array_append (a, body, (guint) body_len);
  return a;
}

static const guint8 v4_body[] = { 192, 168, 0, 1, 10, 0, 0, 2, 0xdc, 0x04, 0x01, 0xbb };
static const guint8 v6_body[] = {
  0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, /* 2001:db8::1 */
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,             /* ::1 */
  0, 80, 0xff, 0xff,
};

static void
test_v2_valid (void)
{
  g_autoptr (GByteArray) h4 = v2 (0x21, 0x11, 12, v4_body, sizeof v4_body);
  g_autoptr (GByteArray) h6 = v2 (0x21, 0x21, 36, v6_body, sizeof v6_body);
  g_autoptr (GByteArray) tlv = g_byte_array_new ();
  g_autoptr (GByteArray) h4_tlv = NULL;
  static const guint8 tlvs[] = { 0x04, 0x00, 0x03, 0, 0, 0,         /* NOOP, 3 bytes */
                                 0x02, 0x00, 0x05, 'a', '.', 'b', 'c', 'd', /* AUTHORITY */
                                 0x03, 0x00, 0x00 };                /* empty */
  static const guint8 local_body[] = { 1, 2, 3, 4, 5 };
  g_autoptr (GByteArray) local = v2 (0x20, 0x00, 0, NULL, 0);
  g_autoptr (GByteArray) local_fam = v2 (0x20, 0x11, 5, local_body, sizeof local_body);
  g_autoptr (GByteArray) local_odd_fam = v2 (0x20, 0x77, 5, local_body, sizeof local_body);
  g_autoptr (GByteArray) unspec = v2 (0x21, 0x00, 5, local_body, sizeof local_body);

  assert_proxy (h4->data, h4->len, 28, G_SOCKET_FAMILY_IPV4, "192.168.0.1", 56324, "10.0.0.2",
                443);
  assert_proxy (h6->data, h6->len, 52, G_SOCKET_FAMILY_IPV6, "2001:db8::1", 80, "::1", 65535);

  /* Data after the header is not consumed. */
  g_byte_array_append (h4, (const guint8 *) "GET", 3);
  assert_proxy (h4->data, h4->len, 28, G_SOCKET_FAMILY_IPV4, "192.168.0.1", 56324, "10.0.0.2",
                443);

  g_byte_array_append (tlv, v4_body, sizeof v4_body);
  g_byte_array_append (tlv, tlvs, sizeof tlvs);
  h4_tlv = v2 (0x21, 0x11, (guint16) tlv->len, tlv->data, tlv->len);
  assert_proxy (h4_tlv->data, h4_tlv->len, 16 + tlv->len, G_SOCKET_FAMILY_IPV4, "192.168.0.1",
                56324, "10.0.0.2", 443);

  assert_local (local->data, local->len, 16);
  assert_local (local_fam->data, local_fam->len, 21);
  assert_local (local_odd_fam->data, local_odd_fam->len, 21);
  assert_local (unspec->data, unspec->len, 21);
}

static void
test_v2_unsupported_family (void)
{
  g_autofree guint8 *unix_body = g_malloc0 (216);
  const struct
  {
    guint8 fam;
    const guint8 *body;
    gsize len;
  } cases[] = {
    { 0x12, v4_body, sizeof v4_body },
    { 0x22, v6_body, sizeof v6_body },
    { 0x31, unix_body, 216 },
    { 0x32, unix_body, 216 },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GByteArray) h = v2 (0x21, cases[i].fam, (guint16) cases[i].len, cases[i].body,
                                     cases[i].len);
      g_auto (GtProxyHeader) hdr = { 0 };
      g_autoptr (GError) error = NULL;
      gsize consumed;

      g_byte_array_append (h, (const guint8 *) "xyz", 3);
      g_assert_cmpint (parse (h->data, h->len, &hdr, &consumed, &error), ==, GT_DECODE_ERROR);
      g_assert_error (error, GT_PROXY_PROTOCOL_ERROR, GT_PROXY_PROTOCOL_ERROR_UNSUPPORTED);
      /* The header is well-formed: a caller may skip it. */
      g_assert_cmpuint (consumed, ==, 16 + cases[i].len);
      assert_need_more_prefixes (h->data, h->len - 3);
    }
}

static void
test_v2_truncated (void)
{
  g_autoptr (GByteArray) h4 = v2 (0x21, 0x11, 12, v4_body, sizeof v4_body);
  g_autoptr (GByteArray) h6 = v2 (0x21, 0x21, 36, v6_body, sizeof v6_body);
  g_autoptr (GByteArray) local = v2 (0x20, 0x00, 0, NULL, 0);
  g_autoptr (GByteArray) big = g_byte_array_new ();
  g_autoptr (GByteArray) h_big = NULL;
  gsize consumed = 0;
  g_auto (GtProxyHeader) hdr = { 0 };

  assert_need_more_prefixes (h4->data, h4->len);
  assert_need_more_prefixes (h6->data, h6->len);
  assert_need_more_prefixes (local->data, local->len);

  /* The largest v2 header: 16 + 65535 bytes, one big TLV after the addresses. */
  g_byte_array_append (big, v4_body, sizeof v4_body);
  {
    guint8 tlv_hdr[3] = { 0xE0, (guint8) ((65535 - 12 - 3) >> 8), (guint8) (65535 - 12 - 3) };

    g_byte_array_append (big, tlv_hdr, sizeof tlv_hdr);
    g_byte_array_set_size (big, 65535);
    memset (big->data + 15, 'v', 65535 - 15);
  }
  h_big = v2 (0x21, 0x11, 65535, big->data, big->len);
  g_assert_cmpint (gt_proxy_header_parse (h_big->data, h_big->len - 1, &hdr, &consumed, NULL), ==,
                   GT_DECODE_NEED_MORE);
  assert_proxy (h_big->data, h_big->len, 16 + 65535, G_SOCKET_FAMILY_IPV4, "192.168.0.1", 56324,
                "10.0.0.2", 443);
}

static void
test_v2_malformed (void)
{
  static const guint8 tlv_over[] = { 192, 168, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2, 0x04, 0x00, 0x05, 0 };
  static const guint8 tlv_cut[] = { 192, 168, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2, 0x04, 0x00 };
  g_autoptr (GByteArray) version1 = v2 (0x11, 0x11, 12, v4_body, sizeof v4_body);
  g_autoptr (GByteArray) version3 = v2 (0x31, 0x11, 12, v4_body, sizeof v4_body);
  g_autoptr (GByteArray) cmd2 = v2 (0x22, 0x11, 12, v4_body, sizeof v4_body);
  g_autoptr (GByteArray) fam41 = v2 (0x21, 0x41, 12, v4_body, sizeof v4_body);
  g_autoptr (GByteArray) fam13 = v2 (0x21, 0x13, 12, v4_body, sizeof v4_body);
  g_autoptr (GByteArray) short4 = v2 (0x21, 0x11, 11, v4_body, 11);
  g_autoptr (GByteArray) short6 = v2 (0x21, 0x21, 35, v6_body, 35);
  g_autoptr (GByteArray) short6_v4 = v2 (0x21, 0x21, 12, v4_body, sizeof v4_body);
  g_autoptr (GByteArray) short_unix = v2 (0x21, 0x31, 36, v6_body, sizeof v6_body);
  g_autoptr (GByteArray) over = v2 (0x21, 0x11, sizeof tlv_over, tlv_over, sizeof tlv_over);
  g_autoptr (GByteArray) cut = v2 (0x21, 0x11, sizeof tlv_cut, tlv_cut, sizeof tlv_cut);

  assert_error (version1->data, version1->len, GT_PROXY_PROTOCOL_ERROR_UNSUPPORTED);
  assert_error (version3->data, version3->len, GT_PROXY_PROTOCOL_ERROR_UNSUPPORTED);
  assert_error (cmd2->data, cmd2->len, GT_PROXY_PROTOCOL_ERROR_MALFORMED);
  assert_error (fam41->data, fam41->len, GT_PROXY_PROTOCOL_ERROR_MALFORMED);
  assert_error (fam13->data, fam13->len, GT_PROXY_PROTOCOL_ERROR_MALFORMED);
  /* A length too short for the family is refused from the 16-byte fixed part on. */
  assert_error (short4->data, 16, GT_PROXY_PROTOCOL_ERROR_MALFORMED);
  assert_error (short4->data, short4->len, GT_PROXY_PROTOCOL_ERROR_MALFORMED);
  assert_error (short6->data, short6->len, GT_PROXY_PROTOCOL_ERROR_MALFORMED);
  assert_error (short6_v4->data, short6_v4->len, GT_PROXY_PROTOCOL_ERROR_MALFORMED);
  assert_error (short_unix->data, short_unix->len, GT_PROXY_PROTOCOL_ERROR_MALFORMED);
  /* TLVs must stay inside the declared length. */
  assert_error (over->data, over->len, GT_PROXY_PROTOCOL_ERROR_MALFORMED);
  assert_error (cut->data, cut->len, GT_PROXY_PROTOCOL_ERROR_MALFORMED);
}

/* ---- neither ---- */

static void
test_not_proxy (void)
{
  static const guint8 tls[] = { 22, 3, 1, 0, 100 };
  static const guint8 almost_sig[] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49,
                                       0x54, 0x0B, 0x21, 0x11, 0x00, 0x0C };
  static const guint8 frame_preface[] = { 0xF0, 'G', 'T', 1 };

  assert_error (S ("GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n"),
                GT_PROXY_PROTOCOL_ERROR_NOT_PROXY);
  assert_error (S ("PROXZ TCP4"), GT_PROXY_PROTOCOL_ERROR_NOT_PROXY);
  assert_error (S ("proxy TCP4"), GT_PROXY_PROTOCOL_ERROR_NOT_PROXY);
  assert_error (S ("PROXY\tTCP4"), GT_PROXY_PROTOCOL_ERROR_NOT_PROXY);
  assert_error (S ("\r\n\r\nGET"), GT_PROXY_PROTOCOL_ERROR_NOT_PROXY);
  assert_error (S ("X"), GT_PROXY_PROTOCOL_ERROR_NOT_PROXY);
  assert_error (tls, sizeof tls, GT_PROXY_PROTOCOL_ERROR_NOT_PROXY);
  assert_error (almost_sig, sizeof almost_sig, GT_PROXY_PROTOCOL_ERROR_NOT_PROXY);
  assert_error (frame_preface, sizeof frame_preface, GT_PROXY_PROTOCOL_ERROR_NOT_PROXY);

  /* Prefixes of either form are undecided. */
  assert_need_more_prefixes (S ("PROXY "));
  assert_need_more_prefixes (sig, sizeof sig);
}

/* ---- encoders ---- */

static GInetSocketAddress *
sa (const char *addr, guint16 port)
{
  return G_INET_SOCKET_ADDRESS (g_inet_socket_address_new_from_string (addr, port));
}

static void
roundtrip (GBytes *bytes, GSocketFamily family, const char *src, guint16 sport, const char *dst,
           guint16 dport)
{
  gsize len;
  const guint8 *data = g_bytes_get_data (bytes, &len);

  assert_proxy (data, len, len, family, src, sport, dst, dport);
  assert_need_more_prefixes (data, len);
}

static void
test_encode (void)
{
  g_autoptr (GInetSocketAddress) a4 = sa ("203.0.113.7", 51000);
  g_autoptr (GInetSocketAddress) b4 = sa ("10.0.0.2", 443);
  g_autoptr (GInetSocketAddress) a6 = sa ("2001:db8::7", 0);
  g_autoptr (GInetSocketAddress) b6 = sa ("::1", 65535);
  g_autoptr (GBytes) v1_4 = gt_proxy_header_encode_v1 (a4, b4);
  g_autoptr (GBytes) v1_6 = gt_proxy_header_encode_v1 (a6, b6);
  g_autoptr (GBytes) v1_mixed = gt_proxy_header_encode_v1 (a4, b6);
  g_autoptr (GBytes) v1_unknown = gt_proxy_header_encode_v1 (NULL, b4);
  g_autoptr (GBytes) v2_4 = gt_proxy_header_encode_v2 (a4, b4);
  g_autoptr (GBytes) v2_6 = gt_proxy_header_encode_v2 (a6, b6);
  g_autoptr (GBytes) v2_mixed = gt_proxy_header_encode_v2 (a6, b4);
  g_autoptr (GBytes) v2_local = gt_proxy_header_encode_v2 (a4, NULL);
  static const char v1_4_expected[] = "PROXY TCP4 203.0.113.7 10.0.0.2 51000 443\r\n";
  static const guint8 v2_4_expected[] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55,
                                          0x49, 0x54, 0x0A, 0x21, 0x11, 0x00, 0x0C, 203, 0,
                                          113, 7, 10, 0, 0, 2, 0xc7, 0x38, 0x01, 0xbb };
  static const guint8 v2_local_expected[] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51,
                                              0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00 };
  gsize len;
  const guint8 *data;

  /* Exact bytes, checked against the spec rather than against the parser. */
  data = g_bytes_get_data (v1_4, &len);
  g_assert_cmpmem (data, len, v1_4_expected, strlen (v1_4_expected));
  data = g_bytes_get_data (v2_4, &len);
  g_assert_cmpmem (data, len, v2_4_expected, sizeof v2_4_expected);
  data = g_bytes_get_data (v2_local, &len);
  g_assert_cmpmem (data, len, v2_local_expected, sizeof v2_local_expected);
  data = g_bytes_get_data (v1_unknown, &len);
  g_assert_cmpmem (data, len, "PROXY UNKNOWN\r\n", 15);
  g_assert_cmpuint (g_bytes_get_size (v2_6), ==, 16 + 36);

  roundtrip (v1_4, G_SOCKET_FAMILY_IPV4, "203.0.113.7", 51000, "10.0.0.2", 443);
  roundtrip (v1_6, G_SOCKET_FAMILY_IPV6, "2001:db8::7", 0, "::1", 65535);
  roundtrip (v1_mixed, G_SOCKET_FAMILY_IPV6, "::ffff:203.0.113.7", 51000, "::1", 65535);
  roundtrip (v2_4, G_SOCKET_FAMILY_IPV4, "203.0.113.7", 51000, "10.0.0.2", 443);
  roundtrip (v2_6, G_SOCKET_FAMILY_IPV6, "2001:db8::7", 0, "::1", 65535);
  roundtrip (v2_mixed, G_SOCKET_FAMILY_IPV6, "2001:db8::7", 0, "::ffff:10.0.0.2", 443);
  data = g_bytes_get_data (v1_unknown, &len);
  assert_local (data, len, len);
  data = g_bytes_get_data (v2_local, &len);
  assert_local (data, len, len);
}

/* ---- CIDR lists ---- */

static gboolean
contains (const GtCidrList *list, const char *addr)
{
  g_autoptr (GInetAddress) a = g_inet_address_new_from_string (addr);

  g_assert_nonnull (a);
  return gt_cidr_list_contains (list, a);
}

static void
test_cidr (void)
{
  const char *const cidrs[] = { "10.0.0.0/8", "192.168.1.128/25", "127.0.0.1", "::1/128",
                                "2001:db8:abcd::/48", "fe80::/10", NULL };
  const char *const v4_any[] = { "0.0.0.0/0", NULL };
  const char *const v6_any[] = { "::/0", NULL };
  const char *const none[] = { NULL };
  g_autoptr (GError) error = NULL;
  g_autoptr (GtCidrList) list = gt_cidr_list_new (cidrs, &error);
  g_autoptr (GtCidrList) all4 = gt_cidr_list_new (v4_any, &error);
  g_autoptr (GtCidrList) all6 = gt_cidr_list_new (v6_any, &error);
  g_autoptr (GtCidrList) empty = gt_cidr_list_new (none, &error);
  g_autoptr (GtCidrList) null_list = gt_cidr_list_new (NULL, &error);

  g_assert_no_error (error);
  g_assert_nonnull (list);

  g_assert_true (contains (list, "10.0.0.0"));
  g_assert_true (contains (list, "10.255.255.255"));
  g_assert_false (contains (list, "11.0.0.0"));
  g_assert_false (contains (list, "9.255.255.255"));
  g_assert_true (contains (list, "192.168.1.128"));
  g_assert_true (contains (list, "192.168.1.255"));
  g_assert_false (contains (list, "192.168.1.127"));
  g_assert_true (contains (list, "127.0.0.1"));
  g_assert_false (contains (list, "127.0.0.2"));
  g_assert_true (contains (list, "::1"));
  g_assert_false (contains (list, "::2"));
  g_assert_true (contains (list, "2001:db8:abcd:ffff::1"));
  g_assert_false (contains (list, "2001:db8:abce::1"));
  g_assert_true (contains (list, "febf::1"));
  g_assert_false (contains (list, "fec0::1"));
  /* IPv4-mapped peers of a dual-stack socket match IPv4 entries; families never mix otherwise. */
  g_assert_true (contains (list, "::ffff:10.1.2.3"));
  g_assert_false (contains (list, "::ffff:11.1.2.3"));
  g_assert_false (contains (list, "::a01:203"));

  g_assert_true (contains (all4, "1.2.3.4"));
  g_assert_true (contains (all4, "255.255.255.255"));
  g_assert_false (contains (all4, "2001:db8::1"));
  g_assert_true (contains (all6, "2001:db8::1"));
  g_assert_false (contains (all6, "1.2.3.4"));
  g_assert_false (contains (empty, "127.0.0.1"));
  g_assert_false (contains (null_list, "::1"));
}

static void
test_cidr_invalid (void)
{
  const char *bad[] = { "10.0.0.0/33", "::/129", "10.0.0.1/8", "2001:db8::1/32", "10.0.0.0/",
                        "10.0.0.0/+8", "10.0.0.0/-8", "10.0.0.0/08", "10.0.0.0/8/8", "/8", "",
                        "abc", "example.com", " 10.0.0.0/8", "10.0.0.0/8 ", "10.0.0/8",
                        "10.0.0.0/1000", "fe80::1%lo" };

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      const char *const cidrs[] = { "127.0.0.1", bad[i], NULL };
      g_autoptr (GError) error = NULL;
      g_autoptr (GtCidrList) list = gt_cidr_list_new (cidrs, &error);

      g_test_message ("cidr: “%s”", bad[i]);
      g_assert_null (list);
      g_assert_error (error, GT_PROXY_PROTOCOL_ERROR, GT_PROXY_PROTOCOL_ERROR_MALFORMED);
      g_assert_nonnull (strstr (error->message, bad[i]));
    }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/gt/protocol/proxy/v1-valid", test_v1_valid);
  g_test_add_func ("/gt/protocol/proxy/v1-truncated", test_v1_truncated);
  g_test_add_func ("/gt/protocol/proxy/v1-malformed", test_v1_malformed);
  g_test_add_func ("/gt/protocol/proxy/v2-valid", test_v2_valid);
  g_test_add_func ("/gt/protocol/proxy/v2-unsupported-family", test_v2_unsupported_family);
  g_test_add_func ("/gt/protocol/proxy/v2-truncated", test_v2_truncated);
  g_test_add_func ("/gt/protocol/proxy/v2-malformed", test_v2_malformed);
  g_test_add_func ("/gt/protocol/proxy/not-proxy", test_not_proxy);
  g_test_add_func ("/gt/protocol/proxy/encode", test_encode);
  g_test_add_func ("/gt/protocol/proxy/cidr", test_cidr);
  g_test_add_func ("/gt/protocol/proxy/cidr-invalid", test_cidr_invalid);

  return g_test_run ();
}
