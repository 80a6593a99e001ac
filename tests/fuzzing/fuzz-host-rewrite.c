/* fuzz-host-rewrite.c: libFuzzer target checking GtHostRewriter output is independent of chunking. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "gt-http.h"

#define LOCAL_HOST "127.0.0.1:8080"
#define MAX_SPLITS 8

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (GtHostRewriter) whole = gt_host_rewriter_new (LOCAL_HOST);
  g_autoptr (GtHostRewriter) pieces = gt_host_rewriter_new (LOCAL_HOST);
  g_autoptr (GByteArray) out_whole = g_byte_array_new ();
  g_autoptr (GByteArray) out_pieces = g_byte_array_new ();
  g_autoptr (GError) error_whole = NULL;
  g_autoptr (GError) error_pieces = NULL;
  const guint8 *input;
  gsize input_len, n_splits, off = 0;
  gboolean ok_whole, ok_pieces = TRUE;

  /* Byte 0: number of splits; bytes 1..n: chunk lengths (0 allowed); the rest is the stream. */
  if (size < 1)
    return 0;
  n_splits = MIN ((gsize) data[0] % (MAX_SPLITS + 1), size - 1);
  input = data + 1 + n_splits;
  input_len = size - 1 - n_splits;

  ok_whole = gt_host_rewriter_feed (whole, input, input_len, out_whole, &error_whole);

  for (gsize i = 0; i <= n_splits && ok_pieces; i++)
    {
      /* Chunk lengths scale so long inputs still get split in the middle. */
      gsize chunk = i < n_splits ? (gsize) data[1 + i] * (1 + input_len / 256) : input_len - off;

      chunk = MIN (chunk, input_len - off);
      ok_pieces = gt_host_rewriter_feed (pieces, input + off, chunk, out_pieces, &error_pieces);
      off += chunk;
    }
  if (ok_pieces && off < input_len)
    ok_pieces = gt_host_rewriter_feed (pieces, input + off, input_len - off, out_pieces,
                                       &error_pieces);

  if (ok_whole != ok_pieces)
    abort ();
  if (!ok_whole)
    {
      if (!g_error_matches (error_whole, GT_HTTP_ERROR, GT_HTTP_ERROR_TOO_LARGE)
          || !g_error_matches (error_pieces, GT_HTTP_ERROR, GT_HTTP_ERROR_TOO_LARGE))
        abort ();
      return 0;
    }
  if (error_whole != NULL || error_pieces != NULL)
    abort ();
  if (out_whole->len != out_pieces->len
      || (out_whole->len > 0 && memcmp (out_whole->data, out_pieces->data, out_whole->len) != 0))
    abort ();
  if (gt_host_rewriter_is_done (whole) != gt_host_rewriter_is_done (pieces))
    abort ();
  /* Output grows by at most the replacement line over the input. */
  if (out_whole->len > input_len + strlen ("Host: " LOCAL_HOST "\r\n"))
    abort ();

  return 0;
}
