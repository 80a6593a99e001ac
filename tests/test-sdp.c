/* test-sdp.c: the data channel SDP subset (gt-sdp.c): Chromium's offer, our answer, errors. */
#include "gt-sdp.h"

#include <string.h>

#define FP                                                                                         \
  "4A:2D:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:"  \
  "50"

static const char chromium_offer[]
    = "v=0\r\n"
      "o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"
      "s=-\r\n"
      "t=0 0\r\n"
      "a=group:BUNDLE 0\r\n"
      "a=msid-semantic: WMS\r\n"
      "m=application 43971 UDP/DTLS/SCTP webrtc-datachannel\r\n"
      "c=IN IP4 127.0.0.1\r\n"
      "a=candidate:2584366936 1 udp 2122260223 127.0.0.1 43971 typ host generation 0 network-id "
      "1\r\n"
      "a=candidate:1688247244 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active generation 0\r\n"
      "a=ice-ufrag:1Gm7\r\n"
      "a=ice-pwd:aB3dE5fG7hI9jK1lM3nO5pQ7\r\n"
      "a=ice-options:trickle\r\n"
      "a=fingerprint:sha-256 " FP "\r\n"
      "a=setup:actpass\r\n"
      "a=mid:0\r\n"
      "a=sctp-port:5000\r\n"
      "a=max-message-size:262144\r\n";

static void
test_chromium_offer (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtSdp) sdp = gt_sdp_parse (chromium_offer, strlen (chromium_offer), &error);

  g_assert_no_error (error);
  g_assert_cmpstr (sdp->ice_ufrag, ==, "1Gm7");
  g_assert_cmpstr (sdp->ice_pwd, ==, "aB3dE5fG7hI9jK1lM3nO5pQ7");
  g_assert_cmpuint (sdp->fingerprint[0], ==, 0x4A);
  g_assert_cmpuint (sdp->fingerprint[31], ==, 0x50);
  g_assert_cmpint (sdp->setup, ==, GT_SDP_SETUP_ACTPASS);
  g_assert_cmpstr (sdp->mid, ==, "0");
  g_assert_cmpuint (sdp->sctp_port, ==, 5000);
  g_assert_cmpuint (sdp->max_message_size, ==, 262144);
  /* The TCP candidate is left out. */
  g_assert_cmpuint (sdp->candidates->len, ==, 1);
  g_assert_true (g_str_has_prefix (sdp->candidates->pdata[0], "candidate:2584366936 1 udp"));
  g_assert_false (sdp->end_of_candidates);
}

static void
test_build (void)
{
  static const guint8 fp[GT_SDP_FINGERPRINT_LEN] = { 0xab, 1, 2, 3 };
  const char *cands[] = { "candidate:1 1 UDP 2015363327 127.0.0.1 43873 typ host", NULL };
  g_autofree char *text = gt_sdp_build ("data", "ufrg", "0123456789abcdefghijklmn", fp,
                                        GT_SDP_SETUP_ACTIVE, cands, TRUE);
  g_autoptr (GtSdp) sdp = gt_sdp_parse (text, strlen (text), NULL);

  g_assert_nonnull (strstr (text, "\r\nc=IN IP4 0.0.0.0\r\n"));
  g_assert_nonnull (strstr (text, "a=fingerprint:sha-256 AB:01:02:03:00:"));
  g_assert_nonnull (sdp);
  g_assert_cmpstr (sdp->mid, ==, "data");
  g_assert_cmpint (sdp->setup, ==, GT_SDP_SETUP_ACTIVE);
  g_assert_cmpmem (sdp->fingerprint, GT_SDP_FINGERPRINT_LEN, fp, GT_SDP_FINGERPRINT_LEN);
  g_assert_cmpuint (sdp->candidates->len, ==, 1);
  g_assert_true (sdp->end_of_candidates);
}

static void
expect_error (const char *from, const char *to, gint code)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *text = NULL;
  g_autoptr (GtSdp) sdp = NULL;
  g_auto (GStrv) parts = g_strsplit (chromium_offer, from, 2);

  g_assert_cmpuint (g_strv_length (parts), ==, 2);
  text = g_strconcat (parts[0], to, parts[1], NULL);
  sdp = gt_sdp_parse (text, strlen (text), &error);
  g_assert_null (sdp);
  g_assert_error (error, GT_SDP_ERROR, code);
}

static void
test_errors (void)
{
  expect_error ("v=0", "x=0", GT_SDP_ERROR_MALFORMED);
  expect_error ("m=application 43971 UDP/DTLS/SCTP webrtc-datachannel",
                "m=audio 9 UDP/TLS/RTP/SAVPF 111", GT_SDP_ERROR_UNSUPPORTED);
  expect_error ("a=fingerprint:sha-256 " FP, "a=fingerprint:sha-1 AB:CD", GT_SDP_ERROR_UNSUPPORTED);
  expect_error ("a=fingerprint:sha-256 4A:2D", "a=fingerprint:sha-256 4A:2",
                GT_SDP_ERROR_UNSUPPORTED);
  expect_error ("a=ice-ufrag:1Gm7", "a=ice-ufrag:1G m7", GT_SDP_ERROR_MALFORMED);
  expect_error ("a=ice-pwd:aB3dE5fG7hI9jK1lM3nO5pQ7", "a=ice-pwd:short", GT_SDP_ERROR_MALFORMED);
  expect_error ("a=ice-pwd:aB3dE5fG7hI9jK1lM3nO5pQ7\r\n", "", GT_SDP_ERROR_UNSUPPORTED);
  expect_error ("a=setup:actpass", "a=setup:holdconn", GT_SDP_ERROR_MALFORMED);
  expect_error ("a=sctp-port:5000", "a=sctp-port:99999", GT_SDP_ERROR_MALFORMED);
  expect_error ("s=-", "garbage", GT_SDP_ERROR_MALFORMED);
  g_assert_false (gt_sdp_candidate_is_udp ("candidate:1 1 udp x 127.0.0.1 9 typ host"));
  g_assert_false (gt_sdp_candidate_is_udp ("candidate:1 1 udp 5 127.0.0.1 70000 typ host"));
  g_assert_true (gt_sdp_candidate_is_udp ("candidate:1 1 UDP 5 ::1 7 typ host"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/protocol/sdp/chromium-offer", test_chromium_offer);
  g_test_add_func ("/gt/protocol/sdp/build", test_build);
  g_test_add_func ("/gt/protocol/sdp/errors", test_errors);
  return g_test_run ();
}
