/* test-port-pool.c: port ranges, taking, releasing and random picks. */
#include "config.h"

#include "gt-port-pool.h"

static GArray *
ranges (guint16 a, guint16 b, guint16 c, guint16 d)
{
  GArray *r = g_array_new (FALSE, FALSE, sizeof (GtPortRange));
  GtPortRange x = { a, b }, y = { c, d };

  g_array_append_val (r, x);
  if (c != 0)
    g_array_append_val (r, y);
  return r;
}

static void
test_take_release (void)
{
  g_autoptr (GArray) r = ranges (20000, 20002, 30000, 30000);
  g_autoptr (GtPortPool) pool = gt_port_pool_new (r);

  g_assert_false (gt_port_pool_is_empty (pool));
  g_assert_true (gt_port_pool_contains (pool, 20001));
  g_assert_true (gt_port_pool_contains (pool, 30000));
  g_assert_false (gt_port_pool_contains (pool, 20003));
  g_assert_false (gt_port_pool_contains (pool, 29999));
  g_assert_true (gt_port_pool_take (pool, 20001));
  g_assert_false (gt_port_pool_take (pool, 20001));
  g_assert_false (gt_port_pool_take (pool, 12345));
  g_assert_cmpuint (gt_port_pool_n_used (pool), ==, 1);
  gt_port_pool_release (pool, 20001);
  g_assert_true (gt_port_pool_take (pool, 20001));
}

static void
test_random_exhausts (void)
{
  g_autoptr (GArray) r = ranges (40000, 40009, 50000, 50004);
  g_autoptr (GtPortPool) pool = gt_port_pool_new (r);
  g_autoptr (GHashTable) seen = g_hash_table_new (NULL, NULL);

  /* Every port of the pool is handed out exactly once, then none is left. */
  for (int i = 0; i < 15; i++)
    {
      guint16 p = gt_port_pool_pick_random (pool, NULL);

      g_assert_cmpuint (p, !=, 0);
      g_assert_true (gt_port_pool_contains (pool, p));
      g_assert_false (g_hash_table_contains (seen, GUINT_TO_POINTER (p)));
      g_hash_table_add (seen, GUINT_TO_POINTER (p));
      g_assert_true (gt_port_pool_take (pool, p));
    }
  g_assert_cmpuint (gt_port_pool_pick_random (pool, NULL), ==, 0);
}

static void
test_random_skip (void)
{
  g_autoptr (GArray) r = ranges (1000, 1001, 0, 0);
  g_autoptr (GtPortPool) pool = gt_port_pool_new (r);
  g_autoptr (GArray) skip = g_array_new (FALSE, FALSE, sizeof (guint16));
  guint16 p = 1000;

  g_array_append_val (skip, p);
  for (int i = 0; i < 20; i++)
    g_assert_cmpuint (gt_port_pool_pick_random (pool, skip), ==, 1001);
}

static void
test_empty (void)
{
  g_autoptr (GtPortPool) pool = gt_port_pool_new (NULL);

  g_assert_true (gt_port_pool_is_empty (pool));
  g_assert_cmpuint (gt_port_pool_pick_random (pool, NULL), ==, 0);
  g_assert_false (gt_port_pool_take (pool, 80));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/server/port-pool/take-release", test_take_release);
  g_test_add_func ("/gt/server/port-pool/random-exhausts", test_random_exhausts);
  g_test_add_func ("/gt/server/port-pool/random-skip", test_random_skip);
  g_test_add_func ("/gt/server/port-pool/empty", test_empty);
  return g_test_run ();
}
