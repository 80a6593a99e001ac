/* fuzz-client-hello.c: libFuzzer target for the ClientHello SNI reader (gt_tls_sniff_sni). */
#include "gt-tls-sniff.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

#define FUZZ_MAX_LEN (16 * 1024)

static void
check_name (const char *sni)
{
  gsize len = strlen (sni);
  gsize label = 0;

  if (len == 0 || len > 255 || sni[len - 1] == '.')
    abort ();
  for (gsize i = 0; i < len; i++)
    {
      char c = sni[i];

      if (c == '.')
        {
          if (label == 0)
            abort ();
          label = 0;
        }
      else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')
        {
          if (++label > 63)
            abort ();
        }
      else
        abort ();
    }
}

static GtDecodeResult
run (const guint8 *buf, gsize len, gsize max_len)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *sni = NULL;
  GtDecodeResult r = gt_tls_sniff_sni (buf, len, max_len, &sni, &error);

  /* A result says why it failed, and only then. */
  if ((r == GT_DECODE_ERROR) != (error != NULL))
    abort ();
  if (error != NULL && error->domain != GT_TLS_SNIFF_ERROR)
    abort ();
  if (error != NULL && error->code == GT_TLS_SNIFF_ERROR_NOT_TLS && len > 0 && buf[0] == 22)
    abort ();
  if (r != GT_DECODE_OK && sni != NULL)
    abort ();
  if (sni != NULL)
    check_name (sni);
  if (r == GT_DECODE_OK && max_len != 0 && len > max_len)
    {
      /* Everything read lies within max_len: the same call on max_len bytes agrees. */
      g_autofree char *again = NULL;

      if (gt_tls_sniff_sni (buf, max_len, max_len, &again, NULL) != GT_DECODE_OK
          || g_strcmp0 (again, sni) != 0)
        abort ();
    }
  return r;
}

/* Exact-size copy so that ASan catches any read past the end. */
static GtDecodeResult
run_copy (const guint8 *buf, gsize len, gsize max_len)
{
  g_autofree guint8 *copy = g_memdup2 (buf, len);

  return run (copy, len, max_len);
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  GtDecodeResult r;

  /* The input as the first bytes of a connection. A hello still incomplete was incomplete one
   * byte earlier too. */
  r = run_copy (data, size, FUZZ_MAX_LEN);
  if (r == GT_DECODE_NEED_MORE && size > 0
      && run_copy (data, size - 1, FUZZ_MAX_LEN) != GT_DECODE_NEED_MORE)
    abort ();
  (void) run_copy (data, size, 0);

  /* The input minus its first byte as handshake bytes, re-framed into records of 1..256 payload
   * bytes, so that splits land everywhere inside the hello. */
  if (size >= 1)
    {
      gsize piece = (gsize) data[0] + 1;
      g_autoptr (GByteArray) framed = g_byte_array_new ();

      for (gsize pos = 1; pos < size; pos += piece)
        {
          gsize n = MIN (piece, size - pos);
          guint8 hdr[5] = { 22, 3, 1, (guint8) (n >> 8), (guint8) n };

          g_byte_array_append (framed, hdr, sizeof hdr);
          g_byte_array_append (framed, data + pos, (guint) n);
        }
      (void) run_copy (framed->data, framed->len, 0);
    }
  return 0;
}
