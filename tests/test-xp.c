/* test-xp.c: GT's signalling items (gt-xp.c): framing and JSON shapes. */
#include "gt-xp.h"

#include <string.h>

static void
test_roundtrip (void)
{
  g_autoptr (GByteArray) body = g_byte_array_new ();
  g_autofree char *desc = gt_xp_description_to_json ("offer", "v=0\r\nline \"quoted\"\r\n");
  g_autofree char *cand
      = gt_xp_candidate_to_json ("candidate:1 1 udp 5 127.0.0.1 9 typ host", "0", 0);
  g_autofree char *end = gt_xp_candidate_to_json ("", NULL, -1);
  const char *want[] = { desc, cand, end };
  gsize pos = 0;

  gt_xp_item_encode (body, desc);
  gt_xp_item_encode (body, cand);
  gt_xp_item_encode (body, end);
  for (guint i = 0; i < 3; i++)
    {
      const guint8 *item;
      gsize item_len, consumed;

      /* Every prefix of an item is incomplete. */
      for (gsize cut = 0; cut < 2 + strlen (want[i]); cut++)
        g_assert_cmpint (
            gt_xp_item_decode (body->data + pos, cut, &item, &item_len, &consumed, NULL), ==,
            GT_DECODE_NEED_MORE);
      g_assert_cmpint (
          gt_xp_item_decode (body->data + pos, body->len - pos, &item, &item_len, &consumed, NULL),
          ==, GT_DECODE_OK);
      g_assert_cmpmem (item, item_len, want[i], strlen (want[i]));
      pos += consumed;
    }
  g_assert_cmpuint (pos, ==, body->len);

  {
    g_auto (GtXpItem) d = { 0 };
    g_auto (GtXpItem) c = { 0 };
    g_auto (GtXpItem) e = { 0 };

    g_assert_true (gt_xp_item_parse ((const guint8 *)desc, strlen (desc), &d, NULL));
    g_assert_cmpint (d.kind, ==, GT_XP_ITEM_DESCRIPTION);
    g_assert_cmpstr (d.type, ==, "offer");
    g_assert_cmpstr (d.sdp, ==, "v=0\r\nline \"quoted\"\r\n");
    g_assert_true (gt_xp_item_parse ((const guint8 *)cand, strlen (cand), &c, NULL));
    g_assert_cmpint (c.kind, ==, GT_XP_ITEM_CANDIDATE);
    g_assert_cmpstr (c.sdp_mid, ==, "0");
    g_assert_cmpint (c.sdp_mline_index, ==, 0);
    g_assert_true (gt_xp_item_parse ((const guint8 *)end, strlen (end), &e, NULL));
    g_assert_cmpstr (e.candidate, ==, "");
    g_assert_null (e.sdp_mid);
    g_assert_cmpint (e.sdp_mline_index, ==, -1);
  }
}

static void
test_bad_framing (void)
{
  static const guint8 empty[] = { 0, 0, '{' };
  static const guint8 big[] = { 0x10, 0x01, '{' };
  g_autoptr (GError) error = NULL;
  const guint8 *item;
  gsize item_len, consumed;

  g_assert_cmpint (gt_xp_item_decode (empty, sizeof empty, &item, &item_len, &consumed, &error), ==,
                   GT_DECODE_ERROR);
  g_assert_error (error, GT_XP_ERROR, GT_XP_ERROR_MALFORMED);
  g_clear_error (&error);
  /* 4097 bytes announced: refused before the bytes arrive. */
  g_assert_cmpint (gt_xp_item_decode (big, sizeof big, &item, &item_len, &consumed, &error), ==,
                   GT_DECODE_ERROR);
  g_assert_error (error, GT_XP_ERROR, GT_XP_ERROR_TOO_LARGE);
}

static void
test_bad_json (void)
{
  static const char *const bad[] = {
    "",
    "{",
    "[1,2]",
    "\"offer\"",
    "{}",
    "{\"type\":\"pranswer\",\"sdp\":\"v=0\"}",
    "{\"type\":\"offer\"}",
    "{\"type\":\"offer\",\"sdp\":5}",
    "{\"type\":\"offer\",\"sdp\":\"\\ud800\"}",
    "{\"candidate\":5}",
    "{\"candidate\":\"c\",\"sdpMid\":[]}",
    "{\"candidate\":\"c\",\"sdpMLineIndex\":-1}",
    "{\"candidate\":\"c\",\"sdpMLineIndex\":70000}",
    "{\"candidate\":\"c\",\"sdpMLineIndex\":\"0\"}",
    "{\"candidate\":\"c\",\"sdpMLineIndex\":1.5}",
    "\xff\xfe{}",
  };

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autoptr (GError) error = NULL;
      g_auto (GtXpItem) item = { 0 };

      if (gt_xp_item_parse ((const guint8 *)bad[i], strlen (bad[i]), &item, &error))
        g_error ("accepted %s", bad[i]);
      g_assert_error (error, GT_XP_ERROR, GT_XP_ERROR_MALFORMED);
      g_assert_null (item.sdp);
      g_assert_null (item.candidate);
    }
  /* Embedded NUL. */
  {
    g_auto (GtXpItem) item = { 0 };
    g_assert_false (gt_xp_item_parse ((const guint8 *)"{\"candidate\":\"\"}\0x", 18, &item, NULL));
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/protocol/xp/roundtrip", test_roundtrip);
  g_test_add_func ("/gt/protocol/xp/bad-framing", test_bad_framing);
  g_test_add_func ("/gt/protocol/xp/bad-json", test_bad_json);
  return g_test_run ();
}
