/* test-token-bucket.c: token bucket rate, burst and unlimited mode against a fake clock. */
#include "config.h"

#include "gt-token-bucket.h"

#define HOUR_US (G_GINT64_CONSTANT (3600) * G_USEC_PER_SEC)

/* A sender that always wants `chunk` bytes and sleeps exactly what the bucket says, for about
 * `duration_us` of fake time. Returns the bytes sent; *elapsed_us is the time of the last
 * take (the bytes of the final wait are not sent). */
static guint64
simulate (GtTokenBucket *b, gsize chunk, gint64 start_us, gint64 duration_us, guint *n_waits,
          gint64 *elapsed_us)
{
  gint64 now = start_us;
  guint64 sent = 0;

  *n_waits = 0;
  while (now < start_us + duration_us)
    {
      gsize got = gt_token_bucket_take (b, chunk, now);

      g_assert_cmpuint (got, <=, chunk);
      sent += got;
      *elapsed_us = now - start_us;
      if (got < chunk)
        {
          gint64 wait = gt_token_bucket_wait_us (b, chunk - got, now);

          /* A partial take means the bucket is empty: there must be a positive wait. */
          g_assert_cmpint (wait, >, 0);
          /* Never longer than refilling the whole burst takes: with the default burst above
           * 160 KiB/s that is a tenth of a second, never whole-second sleeps. */
          g_assert_cmpint (wait, <=, (gint64) (b->burst * G_USEC_PER_SEC / b->rate) + 1);
          now += wait;
          (*n_waits)++;
        }
    }
  return sent;
}

static void
test_average_rate (void)
{
  const guint64 rates[] = { 1024, 10000, 1024 * 1024, 100 * 1024 * 1024 };
  const gsize chunks[] = { 1, 1000, 65536, 256 * 1024 };

  for (guint r = 0; r < G_N_ELEMENTS (rates); r++)
    for (guint c = 0; c < G_N_ELEMENTS (chunks); c++)
      {
        GtTokenBucket b;
        guint n_waits;
        guint64 sent;
        gint64 elapsed;
        double expected;
        gint64 seconds = chunks[c] == 1 && rates[r] > 100000 ? 2 : 100;

        gt_token_bucket_init (&b, rates[r], 0);
        /* Start at an arbitrary clock value: the bucket must not depend on 0. */
        sent = simulate (&b, chunks[c], 123456789, seconds * G_USEC_PER_SEC, &n_waits,
                         &elapsed);
        g_assert_cmpint (elapsed, >=, (seconds - 17) * G_USEC_PER_SEC);
        /* The initial full bucket is extra on top of rate × time. */
        expected = (double) rates[r] * elapsed / G_USEC_PER_SEC + b.burst;
        g_assert_cmpfloat_with_epsilon ((double) sent / expected, 1.0, 0.01);
        g_assert_cmpuint (n_waits, >, 0);
      }
}

static void
test_steady_state_rate (void)
{
  GtTokenBucket b;
  guint n_waits;
  guint64 warm, sent;
  gint64 elapsed;

  /* Measured after draining the initial burst, the rate alone shows: within 1 %. */
  gt_token_bucket_init (&b, 4096, 0);
  warm = simulate (&b, 1500, 0, 5 * G_USEC_PER_SEC, &n_waits, &elapsed);
  g_assert_cmpuint (warm, >, 0);
  sent = simulate (&b, 1500, 5 * G_USEC_PER_SEC, 60 * G_USEC_PER_SEC, &n_waits,
                   &elapsed);
  g_assert_cmpint (elapsed, >=, 59 * G_USEC_PER_SEC);
  g_assert_cmpfloat_with_epsilon ((double) sent / (4096.0 * elapsed / G_USEC_PER_SEC), 1.0, 0.01);
}

static void
test_burst (void)
{
  GtTokenBucket b;

  gt_token_bucket_init (&b, 1000, 5000);
  g_assert_cmpfloat (b.burst, ==, 5000);
  /* Starts full: the burst is available at once, and no more. */
  g_assert_cmpuint (gt_token_bucket_take (&b, 100000, 0), ==, 5000);
  g_assert_cmpuint (gt_token_bucket_take (&b, 100000, 0), ==, 0);
  /* 1 ms at 1000 B/s is one byte. */
  g_assert_cmpuint (gt_token_bucket_take (&b, 100000, 1000), ==, 1);
  /* A long idle period refills only up to the burst. */
  g_assert_cmpuint (gt_token_bucket_take (&b, 100000, HOUR_US), ==, 5000);
  /* Waiting for more than the burst waits for the burst only. */
  g_assert_cmpint (gt_token_bucket_wait_us (&b, 100000, HOUR_US), ==,
                   5 * G_USEC_PER_SEC);
  g_assert_cmpint (gt_token_bucket_wait_us (&b, 500, HOUR_US), ==,
                   G_USEC_PER_SEC / 2);
  /* Half a second later the 500 bytes are there, exactly. */
  g_assert_cmpint (gt_token_bucket_wait_us (&b, 500, HOUR_US + 500000), ==, 0);
  g_assert_cmpuint (gt_token_bucket_take (&b, 600, HOUR_US + 500000), ==, 500);
}

static void
test_default_burst (void)
{
  GtTokenBucket b;

  /* A tenth of a second at every rate: 4 KiB at 1 KiB/s take about 4 s, not 0 (GT). */
  gt_token_bucket_init (&b, 10 * 1024 * 1024, 0);
  g_assert_cmpfloat (b.burst, ==, 1024 * 1024);
  gt_token_bucket_init (&b, 1024, 0);
  g_assert_cmpfloat (b.burst, ==, 102);
  g_assert_cmpuint (gt_token_bucket_take (&b, 4096, 0), ==, 102);
  g_assert_cmpint (gt_token_bucket_wait_us (&b, 4096, 0), ==, 102 * G_USEC_PER_SEC / 1024 + 1);
  gt_token_bucket_init (&b, 5, 0);
  g_assert_cmpfloat (b.burst, ==, 1);
}

static void
test_clock_backwards (void)
{
  GtTokenBucket b;

  gt_token_bucket_init (&b, 1000, 1000);
  g_assert_cmpuint (gt_token_bucket_take (&b, 1000, 10 * G_USEC_PER_SEC), ==, 1000);
  /* An earlier time adds nothing and does not make the next refill larger. */
  g_assert_cmpuint (gt_token_bucket_take (&b, 1000, 0), ==, 0);
  g_assert_cmpuint (gt_token_bucket_take (&b, 1000, 10 * G_USEC_PER_SEC + 100000), ==, 100);
}

static void
test_unlimited (void)
{
  GtTokenBucket b;

  gt_token_bucket_init (&b, 0, 0);
  g_assert_true (gt_token_bucket_is_unlimited (&b));
  for (int i = 0; i < 1000; i++)
    {
      g_assert_cmpuint (gt_token_bucket_take (&b, G_MAXSIZE / 2, 0), ==, G_MAXSIZE / 2);
      g_assert_cmpint (gt_token_bucket_wait_us (&b, G_MAXSIZE / 2, 0), ==, 0);
    }
}

static void
test_zero_want (void)
{
  GtTokenBucket b;

  gt_token_bucket_init (&b, 100, 100);
  g_assert_cmpuint (gt_token_bucket_take (&b, 100, 0), ==, 100);
  g_assert_cmpuint (gt_token_bucket_take (&b, 0, 0), ==, 0);
  g_assert_cmpint (gt_token_bucket_wait_us (&b, 0, 0), ==, 0);
  g_assert_cmpint (gt_token_bucket_wait_us (&b, 1, 0), ==, 10000);
}

/* Whole datagrams: each passes only when the bucket holds it (or the burst, for a larger one),
 * and over time no more than the rate passes, big datagrams included. */
static void
test_take_whole (void)
{
  GtTokenBucket b;
  gint64 now = 1000;
  guint64 passed = 0;

  gt_token_bucket_init (&b, 10000, 1000); /* 10 kB/s, 1 kB burst */
  g_assert_true (gt_token_bucket_take_whole (&b, 600, now));
  g_assert_false (gt_token_bucket_take_whole (&b, 600, now)); /* 400 left: nothing taken */
  g_assert_true (gt_token_bucket_take_whole (&b, 400, now));
  g_assert_false (gt_token_bucket_take_whole (&b, 1, now));
  /* Larger than the burst: passes on a full bucket, leaves a debt that blocks streams too. */
  now += G_USEC_PER_SEC / 10;
  g_assert_true (gt_token_bucket_take_whole (&b, 5000, now));
  g_assert_cmpuint (gt_token_bucket_take (&b, 100, now), ==, 0);
  g_assert_cmpint (gt_token_bucket_wait_us (&b, 1, now), >=, 4 * G_USEC_PER_SEC / 10);
  /* 10 s of 1200-byte and 9000-byte datagrams offered every ms: about 10 kB/s passes. */
  for (gint64 t = 0; t < 10 * G_USEC_PER_SEC; t += 1000)
    {
      gsize len = (t / 1000) % 2 ? 1200 : 9000;

      if (gt_token_bucket_take_whole (&b, len, now + t))
        passed += len;
    }
  g_assert_cmpuint (passed, <=, 10000 * 10 + 9000);
  g_assert_cmpuint (passed, >=, 10000 * 10 * 8 / 10);
  /* Unlimited: everything. */
  gt_token_bucket_init (&b, 0, 0);
  g_assert_true (gt_token_bucket_take_whole (&b, 65507, now));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/token-bucket/average-rate", test_average_rate);
  g_test_add_func ("/gt/token-bucket/steady-state-rate", test_steady_state_rate);
  g_test_add_func ("/gt/token-bucket/burst", test_burst);
  g_test_add_func ("/gt/token-bucket/take-whole", test_take_whole);
  g_test_add_func ("/gt/token-bucket/default-burst", test_default_burst);
  g_test_add_func ("/gt/token-bucket/clock-backwards", test_clock_backwards);
  g_test_add_func ("/gt/token-bucket/unlimited", test_unlimited);
  g_test_add_func ("/gt/token-bucket/zero-want", test_zero_want);
  return g_test_run ();
}
