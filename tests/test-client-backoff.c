/* test-client-backoff.c: reconnect delays grow, stop at the cap, jitter within ±20 %, reset. */
#include "config.h"

#include "gt-client-backoff.h"

static void
test_growth (void)
{
  static const guint64 expected[] = { 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000 };
  GtClientBackoff b;

  gt_client_backoff_init (&b, 100);
  for (guint i = 0; i < G_N_ELEMENTS (expected); i++)
    {
      g_assert_cmpuint (gt_client_backoff_get_delay_ms (&b), ==, expected[i]);
      g_assert_cmpuint (gt_client_backoff_next_with_jitter (&b, 0.0), ==, expected[i]);
      g_assert_cmpuint (b.attempt, ==, i + 1);
    }
}

static void
test_default_delay (void)
{
  GtClientBackoff b;

  /* reconnectDelay's default (5 s) is also the cap: every retry waits 5 s. */
  gt_client_backoff_init (&b, 5000);
  for (guint i = 0; i < 10; i++)
    g_assert_cmpuint (gt_client_backoff_next_with_jitter (&b, 0.0), ==, 5000);
}

static void
test_cap (void)
{
  GtClientBackoff b;

  /* A reconnectDelay longer than the cap is the cap. */
  gt_client_backoff_init (&b, 12000);
  g_assert_cmpuint (b.cap_ms, ==, 12000);
  for (guint i = 0; i < 5; i++)
    g_assert_cmpuint (gt_client_backoff_next_with_jitter (&b, 0.0), ==, 12000);

  /* Shorter delays double up to 5 s and stay there, however many attempts fail. */
  gt_client_backoff_init (&b, 300);
  b.attempt = G_MAXUINT - 1;
  g_assert_cmpuint (gt_client_backoff_next_with_jitter (&b, 0.0), ==, GT_CLIENT_BACKOFF_CAP_MS);
  g_assert_cmpuint (gt_client_backoff_next_with_jitter (&b, 0.0), ==, GT_CLIENT_BACKOFF_CAP_MS);
  g_assert_cmpuint (b.attempt, ==, G_MAXUINT);
  g_assert_cmpuint (gt_client_backoff_next_with_jitter (&b, 0.0), ==, GT_CLIENT_BACKOFF_CAP_MS);
}

static void
test_minimum (void)
{
  GtClientBackoff b;

  gt_client_backoff_init (&b, 0);
  g_assert_cmpuint (gt_client_backoff_next_with_jitter (&b, 0.0), ==, GT_CLIENT_BACKOFF_MIN_MS);
  gt_client_backoff_init (&b, 1);
  g_assert_cmpuint (gt_client_backoff_next_with_jitter (&b, 0.0), ==, GT_CLIENT_BACKOFF_MIN_MS);
  g_assert_cmpuint (gt_client_backoff_next_with_jitter (&b, 0.0), ==,
                    2 * GT_CLIENT_BACKOFF_MIN_MS);
}

static void
test_jitter_bounds (void)
{
  GtClientBackoff b;
  guint lo = G_MAXUINT, hi = 0;

  /* The extremes of the jitter factor. */
  gt_client_backoff_init (&b, 1000);
  g_assert_cmpuint (gt_client_backoff_next_with_jitter (&b, -1.0), ==, 800);
  g_assert_cmpuint (gt_client_backoff_next_with_jitter (&b, 1.0), ==, 2400);
  g_assert_cmpuint (gt_client_backoff_next_with_jitter (&b, 5.0), ==, 4800); /* clamped */

  /* Random jitter: every delay within ±20 % of the unjittered one, and not always the same. */
  for (guint i = 0; i < 2000; i++)
    {
      guint64 plain;
      guint d;

      gt_client_backoff_init (&b, 1000);
      b.attempt = i % 5;
      plain = gt_client_backoff_get_delay_ms (&b);
      d = gt_client_backoff_next (&b);
      g_assert_cmpuint (d, >=, plain * 8 / 10);
      g_assert_cmpuint (d, <=, plain * 12 / 10);
      if (plain == 1000)
        {
          lo = MIN (lo, d);
          hi = MAX (hi, d);
        }
    }
  g_assert_cmpuint (lo, <, 900);
  g_assert_cmpuint (hi, >, 1100);
}

static void
test_reset (void)
{
  GtClientBackoff b;

  gt_client_backoff_init (&b, 250);
  (void) gt_client_backoff_next_with_jitter (&b, 0.0);
  (void) gt_client_backoff_next_with_jitter (&b, 0.0);
  (void) gt_client_backoff_next_with_jitter (&b, 0.0);
  g_assert_cmpuint (gt_client_backoff_get_delay_ms (&b), ==, 2000);
  /* A tunnel came up: the next failure waits the base delay again. */
  gt_client_backoff_reset (&b);
  g_assert_cmpuint (b.attempt, ==, 0);
  g_assert_cmpuint (gt_client_backoff_next_with_jitter (&b, 0.0), ==, 250);
  g_assert_cmpuint (gt_client_backoff_next_with_jitter (&b, 0.0), ==, 500);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/gt/client/backoff/growth", test_growth);
  g_test_add_func ("/gt/client/backoff/default-delay", test_default_delay);
  g_test_add_func ("/gt/client/backoff/cap", test_cap);
  g_test_add_func ("/gt/client/backoff/minimum", test_minimum);
  g_test_add_func ("/gt/client/backoff/jitter-bounds", test_jitter_bounds);
  g_test_add_func ("/gt/client/backoff/reset", test_reset);
  return g_test_run ();
}
