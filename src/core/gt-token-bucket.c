/* gt-token-bucket.c: a token bucket for per-client speed limits (smooth, no 1 s sleeps). */
#include "config.h"

#include "gt-token-bucket.h"

void
gt_token_bucket_init (GtTokenBucket *b, guint64 rate_bytes_per_s, guint64 burst_bytes)
{
  g_return_if_fail (b != NULL);

  b->rate = (double) rate_bytes_per_s;
  if (burst_bytes == 0)
    burst_bytes = GT_TOKEN_BUCKET_DEFAULT_BURST (rate_bytes_per_s);
  b->burst = (double) burst_bytes;
  b->tokens = b->burst;
  b->last_us = G_MININT64;
}

gboolean
gt_token_bucket_is_unlimited (const GtTokenBucket *b)
{
  return b->rate <= 0;
}

static void
refill (GtTokenBucket *b, gint64 now_us)
{
  if (b->last_us == G_MININT64)
    {
      b->last_us = now_us;
      return;
    }
  if (now_us <= b->last_us)
    return;
  b->tokens = MIN (b->burst, b->tokens + (double) (now_us - b->last_us) * b->rate / 1e6);
  b->last_us = now_us;
}

gsize
gt_token_bucket_take (GtTokenBucket *b, gsize want, gint64 now_us)
{
  double avail;
  gsize n;

  g_return_val_if_fail (b != NULL, 0);

  if (gt_token_bucket_is_unlimited (b) || want == 0)
    return want;
  refill (b, now_us);
  /* The epsilon absorbs rounding of the refill product, so that after waiting exactly
   * wait_us() the promised bytes are really there. */
  avail = b->tokens + 1e-6;
  if (avail < 1)
    return 0;
  /* tokens ≤ burst, so the truncating cast is a floor that fits. */
  n = (double) want < avail ? want : (gsize) avail;
  b->tokens = MAX (0.0, b->tokens - (double) n);
  return n;
}

gboolean
gt_token_bucket_take_whole (GtTokenBucket *b, gsize len, gint64 now_us)
{
  g_return_val_if_fail (b != NULL, FALSE);

  if (gt_token_bucket_is_unlimited (b) || len == 0)
    return TRUE;
  refill (b, now_us);
  if (b->tokens + 1e-6 < MIN ((double) len, b->burst))
    return FALSE;
  /* May go below 0: take() gives nothing and wait_us() counts the debt in. */
  b->tokens -= (double) len;
  return TRUE;
}

gint64
gt_token_bucket_wait_us (GtTokenBucket *b, gsize want, gint64 now_us)
{
  double need;
  double us;
  gint64 whole;

  g_return_val_if_fail (b != NULL, 0);

  if (gt_token_bucket_is_unlimited (b) || want == 0)
    return 0;
  refill (b, now_us);
  need = MIN ((double) want, b->burst);
  if (b->tokens + 1e-6 >= need)
    return 0;
  us = (need - b->tokens) * 1e6 / b->rate;
  whole = (gint64) us;
  if ((double) whole < us)
    whole++;
  return MAX ((gint64) 1, whole);
}
