/* fuzz-datagram.c: libFuzzer target for the DATAGRAM decode path: the input is a run of frames
 * as a tunnel carries them (only DATAGRAM payloads are decoded), and also one QUIC DATAGRAM
 * frame's payload as a quic:// tunnel hands it over. */
#include "gt-frame.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

/* Decodes one payload from an exact-size copy (ASan catches any read past it). */
static void
decode_one (const guint8 *bytes, gsize len)
{
  g_autofree guint8 *copy = g_memdup2 (bytes, len);
  g_autoptr (GError) error = NULL;
  guint32 flow = 0;
  guint16 index = 0;
  const guint8 *d = NULL;
  gsize d_len = 0;
  gboolean ok = gt_datagram_decode (copy, len, &flow, &index, &d, &d_len, &error);

  if (ok != (error == NULL) || (error != NULL && error->domain != GT_FRAME_ERROR_DOMAIN))
    abort ();
  if (!ok)
    return;
  if (flow == 0 || d != copy + GT_DATAGRAM_PREFIX_SIZE
      || d_len + GT_DATAGRAM_PREFIX_SIZE != len || d_len > GT_DATAGRAM_MAX_DATA)
    abort ();
  /* What decodes encodes back to the same bytes. */
  {
    g_autoptr (GByteArray) again = g_byte_array_new ();

    gt_frame_append_datagram_header (again, flow, index, d_len);
    if (again->len != GT_FRAME_HEADER_SIZE + GT_DATAGRAM_PREFIX_SIZE
        || memcmp (again->data + GT_FRAME_HEADER_SIZE, copy, GT_DATAGRAM_PREFIX_SIZE) != 0)
      abort ();
  }
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  gsize pos = 0;

  decode_one (data, size);
  while (pos < size)
    {
      g_autoptr (GError) error = NULL;
      GtFrameHeader hdr;
      GtDecodeResult r = gt_frame_header_decode (data + pos, size - pos, &hdr, &error);

      if (r != GT_DECODE_OK)
        {
          if ((r == GT_DECODE_ERROR) != (error != NULL))
            abort ();
          break;
        }
      if (hdr.type == GT_FRAME_DATAGRAM
          && (hdr.stream_id != 0 || hdr.flags != 0 || hdr.length < GT_DATAGRAM_PREFIX_SIZE
              || hdr.length > GT_DATAGRAM_MAX_PAYLOAD))
        abort ();
      pos += GT_FRAME_HEADER_SIZE;
      if (size - pos < hdr.length)
        break;
      if (hdr.type == GT_FRAME_DATAGRAM)
        decode_one (data + pos, hdr.length);
      pos += hdr.length;
    }
  return 0;
}
