/* fuzz-hello.c: libFuzzer target for the HELLO payload decoder, checking encode/decode agree. */
#include "gt-frame.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

static void
assert_same (const GtHello *a, const GtHello *b)
{
  if (strcmp (a->id, b->id) != 0 || strcmp (a->secret, b->secret) != 0
      || a->services->len != b->services->len)
    abort ();
  for (guint i = 0; i < a->services->len; i++)
    {
      const GtHelloService *x = g_ptr_array_index (a->services, i);
      const GtHelloService *y = g_ptr_array_index (b->services, i);

      if (x->kind != y->kind || x->remote_port != y->remote_port
          || x->remote_random != y->remote_random || g_strcmp0 (x->prefix, y->prefix) != 0)
        abort ();
      /* http/https always have a lower-case prefix; tcp, udp and node entries never have one. */
      if ((x->kind == GT_SERVICE_KIND_TCP || x->kind == GT_SERVICE_KIND_UDP
           || x->kind == GT_SERVICE_KIND_NODE)
          != (x->prefix == NULL))
        abort ();
      if (x->prefix != NULL)
        {
          g_autofree char *lower = g_ascii_strdown (x->prefix, -1);
          if (strcmp (lower, x->prefix) != 0 || x->prefix[0] == '\0')
            abort ();
        }
    }
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (GtHello) hello = NULL;
  g_autoptr (GtHello) again = NULL;
  g_autoptr (GByteArray) out = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree guint8 *copy = NULL;
  GtFrameHeader hdr;

  /* Exact-size copy so that ASan catches any read past the input. */
  copy = g_memdup2 (data, size);
  hello = gt_hello_decode (copy, size, &error);
  if (hello == NULL)
    {
      if (error == NULL || error->domain != GT_FRAME_ERROR_DOMAIN)
        abort ();
      return 0;
    }
  if (error != NULL)
    abort ();

  /* Whatever decodes must re-encode, to the same size, and decode to the same values. */
  out = g_byte_array_new ();
  if (!gt_frame_append_hello (out, hello, &error))
    abort ();
  if (out->len != GT_FRAME_HEADER_SIZE + size)
    abort ();
  if (gt_frame_header_decode (out->data, out->len, &hdr, &error) != GT_DECODE_OK
      || hdr.type != GT_FRAME_HELLO || hdr.stream_id != 0 || hdr.length != size)
    abort ();
  again = gt_hello_decode (out->data + GT_FRAME_HEADER_SIZE, hdr.length, &error);
  if (again == NULL)
    abort ();
  assert_same (hello, again);
  return 0;
}
