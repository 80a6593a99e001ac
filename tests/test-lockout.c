/* test-lockout.c: per-IP failure counting, blocking, expiry and bounded memory. */
#include "config.h"

#include "gt-lockout.h"

#define MS(x) ((gint64) (x) * 1000)
#define SEC(x) ((gint64) (x) * G_USEC_PER_SEC)

static void
test_block_after_exceeding (void)
{
  g_autoptr (GtLockout) l = gt_lockout_new (3, 60000);
  gint64 t = SEC (1000);

  /* GT blocks when the count exceeds reconnectTimes: 3 failures are allowed, the 4th blocks. */
  for (int i = 0; i < 3; i++)
    {
      gt_lockout_record_failure (l, "10.0.0.1", t + i);
      g_assert_false (gt_lockout_is_blocked (l, "10.0.0.1", t + i));
    }
  g_assert_cmpuint (gt_lockout_get_n_blocked (l, t + 3), ==, 0);
  gt_lockout_record_failure (l, "10.0.0.1", t + 3);
  g_assert_true (gt_lockout_is_blocked (l, "10.0.0.1", t + 3));
  g_assert_cmpuint (gt_lockout_get_n_blocked (l, t + 3), ==, 1);

  /* Other addresses are unaffected. */
  g_assert_false (gt_lockout_is_blocked (l, "10.0.0.2", t + 3));
  g_assert_false (gt_lockout_is_blocked (l, "::1", t + 3));
}

static void
test_expiry (void)
{
  g_autoptr (GtLockout) l = gt_lockout_new (1, 5000);
  gint64 t = SEC (50);

  gt_lockout_record_failure (l, "192.0.2.7", t);
  gt_lockout_record_failure (l, "192.0.2.7", t);
  g_assert_true (gt_lockout_is_blocked (l, "192.0.2.7", t));
  /* Failures while blocked do not extend the block. */
  gt_lockout_record_failure (l, "192.0.2.7", t + MS (4000));
  g_assert_true (gt_lockout_is_blocked (l, "192.0.2.7", t + MS (4999)));
  g_assert_cmpuint (gt_lockout_get_n_blocked (l, t + MS (4999)), ==, 1);
  g_assert_false (gt_lockout_is_blocked (l, "192.0.2.7", t + MS (5000)));
  g_assert_cmpuint (gt_lockout_get_n_blocked (l, t + MS (5000)), ==, 0);
  g_assert_cmpuint (gt_lockout_get_n_tracked (l), ==, 0);

  /* After the block the count starts again from 0: one failure is allowed again. */
  gt_lockout_record_failure (l, "192.0.2.7", t + MS (6000));
  g_assert_false (gt_lockout_is_blocked (l, "192.0.2.7", t + MS (6000)));
  gt_lockout_record_failure (l, "192.0.2.7", t + MS (6001));
  g_assert_true (gt_lockout_is_blocked (l, "192.0.2.7", t + MS (6001)));
}

static void
test_failures_forgotten (void)
{
  g_autoptr (GtLockout) l = gt_lockout_new (2, 1000);

  /* Failures spread wider than the duration never add up to a block. */
  for (int i = 0; i < 10; i++)
    {
      gt_lockout_record_failure (l, "10.1.1.1", MS (1000) * (i + 1));
      g_assert_false (gt_lockout_is_blocked (l, "10.1.1.1", MS (1000) * (i + 1)));
    }
  /* Close together they do. */
  for (int i = 0; i < 3; i++)
    gt_lockout_record_failure (l, "10.1.1.1", MS (20000) + i);
  g_assert_true (gt_lockout_is_blocked (l, "10.1.1.1", MS (20002)));
}

static void
test_success_resets (void)
{
  g_autoptr (GtLockout) l = gt_lockout_new (2, 60000);

  gt_lockout_record_failure (l, "10.2.2.2", 1);
  gt_lockout_record_failure (l, "10.2.2.2", 2);
  gt_lockout_record_success (l, "10.2.2.2");
  gt_lockout_record_failure (l, "10.2.2.2", 3);
  gt_lockout_record_failure (l, "10.2.2.2", 4);
  g_assert_false (gt_lockout_is_blocked (l, "10.2.2.2", 5));
  gt_lockout_record_failure (l, "10.2.2.2", 6);
  g_assert_true (gt_lockout_is_blocked (l, "10.2.2.2", 7));
  /* A success does not lift an active block. */
  gt_lockout_record_success (l, "10.2.2.2");
  g_assert_true (gt_lockout_is_blocked (l, "10.2.2.2", 8));
  /* Unknown IP: no-op. */
  gt_lockout_record_success (l, "10.9.9.9");
}

static void
test_never_block (void)
{
  g_autoptr (GtLockout) l = gt_lockout_new (0, 60000);

  for (int i = 0; i < 1000; i++)
    gt_lockout_record_failure (l, "10.3.3.3", i);
  g_assert_false (gt_lockout_is_blocked (l, "10.3.3.3", 1000));
  g_assert_cmpuint (gt_lockout_get_n_blocked (l, 1000), ==, 0);
  g_assert_cmpuint (gt_lockout_get_n_tracked (l), ==, 0);
}

static char *
ip_for (guint i)
{
  return g_strdup_printf ("10.%u.%u.%u", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
}

static void
test_bounded (void)
{
  g_autoptr (GtLockout) l = gt_lockout_new (1, 3600 * 1000);
  const guint n = GT_LOCKOUT_MAX_TRACKED + 5000;

  /* Block many addresses: the table stays at its bound, the oldest are forgotten. */
  for (guint i = 0; i < n; i++)
    {
      g_autofree char *ip = ip_for (i);

      gt_lockout_record_failure (l, ip, SEC (1) + i);
      gt_lockout_record_failure (l, ip, SEC (1) + i);
      g_assert_cmpuint (gt_lockout_get_n_tracked (l), <=, GT_LOCKOUT_MAX_TRACKED);
    }
  g_assert_cmpuint (gt_lockout_get_n_tracked (l), ==, GT_LOCKOUT_MAX_TRACKED);
  g_assert_cmpuint (gt_lockout_get_n_blocked (l, SEC (2)), ==, GT_LOCKOUT_MAX_TRACKED);
  for (guint i = 0; i < n; i += 997)
    {
      g_autofree char *ip = ip_for (i);
      gboolean evicted = i < n - GT_LOCKOUT_MAX_TRACKED;

      g_assert_cmpint (gt_lockout_is_blocked (l, ip, SEC (2)), ==, !evicted);
    }

  /* Refreshing an old entry moves it to the back: it survives the next evictions. */
  {
    g_autofree char *old = ip_for (n - GT_LOCKOUT_MAX_TRACKED);
    g_autofree char *next = ip_for (n - GT_LOCKOUT_MAX_TRACKED + 1);
    g_autofree char *fresh = ip_for (n);

    gt_lockout_record_failure (l, old, SEC (3));
    gt_lockout_record_failure (l, fresh, SEC (3));
    g_assert_true (gt_lockout_is_blocked (l, old, SEC (3)));
    g_assert_false (gt_lockout_is_blocked (l, next, SEC (3)));
  }

  /* After the duration everything expires and is dropped lazily. */
  g_assert_cmpuint (gt_lockout_get_n_blocked (l, SEC (3601 + 10)), ==, 0);
  g_assert_cmpuint (gt_lockout_get_n_tracked (l), ==, 0);
}

static void
test_expired_evicted_first (void)
{
  g_autoptr (GtLockout) l = gt_lockout_new (5, 1000);

  /* A table full of stale (expired, never looked up) entries makes room without complaint. */
  for (guint i = 0; i < GT_LOCKOUT_MAX_TRACKED; i++)
    {
      g_autofree char *ip = ip_for (i);
      gt_lockout_record_failure (l, ip, i);
    }
  g_assert_cmpuint (gt_lockout_get_n_tracked (l), ==, GT_LOCKOUT_MAX_TRACKED);
  gt_lockout_record_failure (l, "203.0.113.1", SEC (100));
  g_assert_cmpuint (gt_lockout_get_n_tracked (l), ==, GT_LOCKOUT_MAX_TRACKED);
  g_assert_cmpuint (gt_lockout_get_n_blocked (l, SEC (100)), ==, 0);
  g_assert_cmpuint (gt_lockout_get_n_tracked (l), ==, 1);
}

/* Attempts in flight count toward the block: a burst cannot start more than max + 1. */
static void
test_in_flight (void)
{
  g_autoptr (GtLockout) l = gt_lockout_new (3, 60000);
  gint64 t = SEC (100);
  guint started = 0;

  for (int i = 0; i < 300; i++)
    if (gt_lockout_begin_attempt (l, "10.0.0.1", t))
      started++;
  g_assert_cmpuint (started, ==, 4);
  /* Refusals are not failures, and another address is not affected. */
  g_assert_false (gt_lockout_is_blocked (l, "10.0.0.1", t));
  g_assert_true (gt_lockout_begin_attempt (l, "10.0.0.2", t));

  /* An attempt that ends frees its place; one that fails keeps it as a failure. */
  gt_lockout_end_attempt (l, "10.0.0.1");
  g_assert_true (gt_lockout_begin_attempt (l, "10.0.0.1", t));
  gt_lockout_end_attempt (l, "10.0.0.1");
  gt_lockout_record_failure (l, "10.0.0.1", t);
  g_assert_false (gt_lockout_begin_attempt (l, "10.0.0.1", t));

  /* Attempts in flight are not forgotten with old failures. */
  g_assert_false (gt_lockout_is_blocked (l, "10.0.0.1", t + SEC (120)));
  g_assert_false (gt_lockout_begin_attempt (l, "10.0.0.1", t + SEC (120)));

  /* The three others fail: four failures block, and no attempt starts. */
  for (int i = 0; i < 3; i++)
    {
      gt_lockout_end_attempt (l, "10.0.0.1");
      gt_lockout_record_failure (l, "10.0.0.1", t + SEC (120));
    }
  g_assert_true (gt_lockout_is_blocked (l, "10.0.0.1", t + SEC (120)));
  g_assert_false (gt_lockout_begin_attempt (l, "10.0.0.1", t + SEC (120)));

  /* A success clears the failures but not the other attempts in flight. */
  g_assert_true (gt_lockout_begin_attempt (l, "10.0.0.3", t));
  g_assert_true (gt_lockout_begin_attempt (l, "10.0.0.3", t));
  gt_lockout_end_attempt (l, "10.0.0.3");
  gt_lockout_record_success (l, "10.0.0.3");
  for (int i = 0; i < 3; i++)
    g_assert_true (gt_lockout_begin_attempt (l, "10.0.0.3", t));
  g_assert_false (gt_lockout_begin_attempt (l, "10.0.0.3", t));

  /* Never blocking means never refusing. */
  {
    g_autoptr (GtLockout) never = gt_lockout_new (0, 60000);

    for (int i = 0; i < 100; i++)
      g_assert_true (gt_lockout_begin_attempt (never, "10.0.0.1", t));
    g_assert_cmpuint (gt_lockout_get_n_tracked (never), ==, 0);
  }
}

static void
test_remaining (void)
{
  g_autoptr (GtLockout) l = gt_lockout_new (1, 60000);
  gint64 t = SEC (100);

  g_assert_cmpint (gt_lockout_get_remaining (l, "10.0.0.1", t), ==, 0);
  gt_lockout_record_failure (l, "10.0.0.1", t);
  g_assert_cmpint (gt_lockout_get_remaining (l, "10.0.0.1", t), ==, 0);
  gt_lockout_record_failure (l, "10.0.0.1", t);
  g_assert_cmpint (gt_lockout_get_remaining (l, "10.0.0.1", t), ==, SEC (60));
  g_assert_cmpint (gt_lockout_get_remaining (l, "10.0.0.1", t + SEC (45)), ==, SEC (15));
  g_assert_cmpint (gt_lockout_get_remaining (l, "10.0.0.1", t + SEC (60)), ==, 0);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/lockout/block-after-exceeding", test_block_after_exceeding);
  g_test_add_func ("/gt/lockout/expiry", test_expiry);
  g_test_add_func ("/gt/lockout/failures-forgotten", test_failures_forgotten);
  g_test_add_func ("/gt/lockout/success-resets", test_success_resets);
  g_test_add_func ("/gt/lockout/never-block", test_never_block);
  g_test_add_func ("/gt/lockout/bounded", test_bounded);
  g_test_add_func ("/gt/lockout/in-flight", test_in_flight);
  g_test_add_func ("/gt/lockout/remaining", test_remaining);
  g_test_add_func ("/gt/lockout/expired-evicted-first", test_expired_evicted_first);
  return g_test_run ();
}
