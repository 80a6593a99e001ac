/* fuzz-stun.c: libFuzzer target for the STUN and TURN parsers (gt_stun_parse, gt_stun_parse_turn,
 * ChannelData, MESSAGE-INTEGRITY) and the answers built from what they accept. */
#include "gt-stun.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (GError) error = NULL;
  g_autofree guint8 *copy = g_memdup2 (data, size);
  guint8 out[GT_STUN_MAX_MESSAGE];
  GtStunMessage msg, back;
  GtStunAddress mapped = { .family = 4, .bytes = { 127, 0, 0, 1 }, .port = 3478 };
  gboolean ok = gt_stun_parse (copy, size, &msg, &error);
  gsize n;
  static const guint8 key[16] = { 7 };
  const guint8 *cdata;
  gsize cdata_len;
  guint16 channel;

  /* ChannelData: the data lies inside the datagram. */
  if (gt_turn_channel_data_parse (copy, size, &channel, &cdata, &cdata_len)
      && (channel < GT_TURN_CHANNEL_MIN || channel > GT_TURN_CHANNEL_MAX || cdata != copy + 4
          || cdata_len > size - 4))
    abort ();
  /* The TURN parser accepts all the STUN parser does, and its pointers stay inside. */
  {
    GtStunMessage turn;

    if (gt_stun_parse_turn (copy, size, &turn, NULL))
      {
        if (turn.length != size || turn.n_peers > GT_STUN_MAX_PEERS
            || (turn.data != NULL && (turn.data < copy || turn.data + turn.data_len > copy + size))
            || (turn.username != NULL
                && (turn.username < copy || turn.username + turn.username_len > copy + size))
            || (turn.integrity_offset != 0 && turn.integrity_offset + 24 > size))
          abort ();
        (void) gt_stun_check_integrity (copy, &turn, key, sizeof key);
      }
    else if (ok)
      abort ();
  }

  /* A result says why it failed, and only then. */
  if (ok != (error == NULL) || (error != NULL && error->domain != GT_STUN_ERROR))
    abort ();
  if (!ok)
    return 0;
  if (msg.length != size || size > GT_STUN_MAX_MESSAGE || msg.n_unknown > GT_STUN_MAX_UNKNOWN
      || (msg.has_xor_mapped && msg.xor_mapped.family != 4 && msg.xor_mapped.family != 6))
    abort ();

  /* A classic (RFC 3489) request gets classic answers: its 16 id bytes back, MAPPED-ADDRESS. */
  if (msg.classic)
    {
      n = gt_stun_build_binding_success (&msg, &mapped, out);
      if (n != 32 || out[0] != 0x01 || out[1] != 0x01 || memcmp (out + 4, copy + 4, 16) != 0
          || out[20] != 0x00 || out[21] != 0x01 || memcmp (out + 28, mapped.bytes, 4) != 0)
        abort ();
      n = gt_stun_build_error (&msg, 420, "Unknown Attribute", out);
      if (n < 24 || out[0] != 0x01 || out[1] != 0x11 || memcmp (out + 4, copy + 4, 16) != 0
          || 20 + (gsize) (out[2] << 8 | out[3]) != n)
        abort ();
      return 0;
    }

  /* Every answer the server may build from an accepted message parses back, with its id. */
  n = gt_stun_build_binding_success (&msg, &mapped, out);
  if (!gt_stun_parse (out, n, &back, NULL) || memcmp (back.transaction_id, msg.transaction_id, 12)
      || !back.has_xor_mapped || back.xor_mapped.port != 3478
      || memcmp (back.xor_mapped.bytes, mapped.bytes, 4) != 0)
    abort ();
  n = gt_stun_build_error (&msg, 420, "Unknown Attribute", out);
  if (!gt_stun_parse (out, n, &back, NULL) || back.error_code != 420
      || back.klass != GT_STUN_CLASS_ERROR)
    abort ();
  return 0;
}
