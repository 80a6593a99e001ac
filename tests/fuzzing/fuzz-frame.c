/* fuzz-frame.c: libFuzzer target walking a buffer as a tunnel preface followed by frames. */
#include "gt-frame.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

static void
decode_payload (const GtFrameHeader *hdr, const guint8 *payload, gsize len)
{
  g_autoptr (GError) error = NULL;
  gboolean ok = TRUE;

  switch (hdr->type)
    {
    case GT_FRAME_HELLO:
      {
        g_autoptr (GtHello) hello = gt_hello_decode_flags (payload, len, hdr->flags, &error);
        ok = hello != NULL;
        /* No service only for a client that forwards (CAPS with GT_CAP_FORWARD). */
        if (ok && (hello->id == NULL || hello->secret == NULL
                   || (hello->services->len == 0 && !(hello->caps & GT_CAP_FORWARD))
                   || hello->has_caps != ((hdr->flags & GT_FRAME_FLAG_CAPS) != 0)))
          abort ();
      }
      break;
    case GT_FRAME_WELCOME:
      {
        guint32 caps = 0;
        g_autoptr (GArray) ports = gt_welcome_decode_flags (payload, len, hdr->flags, &caps,
                                                            &error);
        gsize extra = (hdr->flags & GT_FRAME_FLAG_CAPS) ? 4 : 0;

        ok = ports != NULL;
        if (ok && 2 + (gsize) ports->len * 4 + extra != len)
          abort ();
      }
      break;
    case GT_FRAME_FORWARD:
      if (!(hdr->flags & GT_FRAME_FLAG_ACK))
        {
          g_autofree char *prefix = NULL;
          const guint8 *d = NULL;
          gsize d_len = 0;

          ok = gt_forward_decode (payload, len, &prefix, &d, &d_len, &error);
          if (ok && (!gt_forward_prefix_is_valid (prefix) || d != payload + 1 + strlen (prefix)
                     || d_len + 1 + strlen (prefix) != len))
            abort ();
        }
      else if (len != 0)
        abort (); /* the header decoder lets only an empty ACK through */
      break;
    case GT_FRAME_OPEN:
      {
        guint16 index;
        const guint8 *d = NULL;
        gsize d_len = 0;

        ok = gt_open_decode (payload, len, &index, &d, &d_len, &error);
        if (ok && (d != payload + GT_OPEN_PREFIX_SIZE || d_len + GT_OPEN_PREFIX_SIZE != len))
          abort ();
      }
      break;
    case GT_FRAME_DATAGRAM:
      {
        guint32 flow = 0;
        guint16 index;
        const guint8 *d = NULL;
        gsize d_len = 0;

        ok = gt_datagram_decode (payload, len, &flow, &index, &d, &d_len, &error);
        if (ok && (flow == 0 || d != payload + GT_DATAGRAM_PREFIX_SIZE
                   || d_len + GT_DATAGRAM_PREFIX_SIZE != len))
          abort ();
      }
      break;
    case GT_FRAME_WINDOW:
      {
        guint32 inc = 0;

        ok = gt_window_decode (payload, len, &inc, &error);
        if (ok && inc == 0)
          abort ();
      }
      break;
    case GT_FRAME_RESET:
      {
        guint32 code;

        ok = gt_reset_decode (payload, len, &code, &error);
        if (ok)
          (void) gt_reset_code_to_string (code);
      }
      break;
    case GT_FRAME_ERROR:
    case GT_FRAME_GOAWAY:
      {
        g_autofree char *msg = NULL;
        guint16 code;

        ok = gt_error_decode (payload, len, &code, &msg, &error);
        if (ok && (!g_utf8_validate (msg, -1, NULL) || strlen (msg) > GT_MESSAGE_MAX_LEN))
          abort ();
        if (ok)
          (void) gt_error_code_to_string ((GtErrorCode) code);
      }
      break;
    default:
      break;
    }

  /* A decoder either succeeds or says why. */
  if (ok != (error == NULL) || (error != NULL && error->domain != GT_FRAME_ERROR_DOMAIN))
    abort ();
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (GError) error = NULL;
  guint8 version;
  gsize pos;

  if (gt_preface_decode (data, size, &version, &error) != GT_DECODE_OK)
    return 0;

  pos = GT_PREFACE_SIZE;
  while (pos < size)
    {
      GtFrameHeader hdr;
      g_autofree guint8 *payload = NULL;
      GtDecodeResult r;

      g_clear_error (&error);
      r = gt_frame_header_decode (data + pos, size - pos, &hdr, &error);
      if (r != GT_DECODE_OK)
        {
          if ((r == GT_DECODE_ERROR) != (error != NULL))
            abort ();
          break;
        }
      if (hdr.type < GT_FRAME_HELLO || hdr.type > GT_FRAME_TYPE_LAST
          || hdr.length > GT_FRAME_MAX_PAYLOAD)
        abort ();
      (void) gt_frame_type_to_string (hdr.type);
      pos += GT_FRAME_HEADER_SIZE;
      if (size - pos < hdr.length)
        break;
      /* Exact-size copy so that ASan catches any read past the payload. */
      payload = g_memdup2 (data + pos, hdr.length);
      decode_payload (&hdr, payload, hdr.length);
      pos += hdr.length;
    }
  return 0;
}
