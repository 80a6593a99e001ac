/* gt-token-bucket.h: a token bucket for per-client speed limits (smooth, no 1 s sleeps). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Tokens are bytes. The bucket refills continuously at `rate` bytes per second up to `burst`
 * bytes; a sender takes what is there and waits gt_token_bucket_wait_us() for the rest.
 *
 * Burst guidance: burst_bytes 0 picks GT_TOKEN_BUCKET_DEFAULT_BURST (rate), i.e. a tenth of a
 * second of traffic (at least one byte): the flow is smooth at every rate (~10 wakeups per second
 * at most, never a wait longer than 0.1 s for a burst), and a transfer of N bytes takes about
 * N / rate seconds, as GT's `speed` does (4 KiB at 1 KiB/s: 4 s), instead of passing a fixed
 * 16 KiB at once. A burst smaller than the largest single read is fine: take() hands out partial
 * amounts.
 *
 * The bucket starts full. Times are monotonic microseconds (g_get_monotonic_time(), or a fake
 * clock in tests); a clock that goes backwards adds nothing. Not thread-safe. */
typedef struct
{
  double rate;   /* bytes per second; 0 = unlimited */
  double burst;  /* capacity in bytes */
  double tokens; /* bytes available at last_us */
  gint64 last_us; /* G_MININT64 until the first use */
} GtTokenBucket;

#define GT_TOKEN_BUCKET_MIN_BURST ((guint64) 1)
#define GT_TOKEN_BUCKET_DEFAULT_BURST(rate) MAX ((guint64) (rate) / 10, GT_TOKEN_BUCKET_MIN_BURST)

/* rate 0 = unlimited; burst 0 = GT_TOKEN_BUCKET_DEFAULT_BURST (rate). */
void gt_token_bucket_init (GtTokenBucket *b, guint64 rate_bytes_per_s, guint64 burst_bytes);
/* Bytes allowed now (≤ want), consumed from the bucket. Unlimited: want. */
gsize gt_token_bucket_take (GtTokenBucket *b, gsize want, gint64 now_us);
/* For what cannot be split (a datagram): TRUE when min (len, burst) bytes are there, and then
 * len bytes are taken, a datagram larger than the burst leaving a debt that the refill pays
 * before anything else passes (the long-run rate holds); FALSE (nothing taken) otherwise. */
gboolean gt_token_bucket_take_whole (GtTokenBucket *b, gsize len, gint64 now_us);
/* µs until min (want, burst) bytes are available; 0 if they are now (or unlimited). */
gint64 gt_token_bucket_wait_us (GtTokenBucket *b, gsize want, gint64 now_us);
gboolean gt_token_bucket_is_unlimited (const GtTokenBucket *b);

G_END_DECLS
