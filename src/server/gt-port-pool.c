/* gt-port-pool.c: port ranges with an in-use set; random picks for remoteTCPRandom. */
#include "config.h"

#include "gt-port-pool.h"

struct _GtPortPool
{
  GArray *ranges;   /* GtPortRange */
  GHashTable *used; /* port → port */
  guint total;
};

GtPortPool *
gt_port_pool_new (const GArray *ranges)
{
  GtPortPool *pool = g_new0 (GtPortPool, 1);

  pool->ranges = g_array_new (FALSE, FALSE, sizeof (GtPortRange));
  pool->used = g_hash_table_new (NULL, NULL);
  for (guint i = 0; ranges != NULL && i < ranges->len; i++)
    {
      GtPortRange r = g_array_index (ranges, GtPortRange, i);

      if (r.first == 0 || r.last < r.first)
        continue;
      g_array_append_val (pool->ranges, r);
      pool->total += (guint) r.last - r.first + 1;
    }
  return pool;
}

void
gt_port_pool_free (GtPortPool *pool)
{
  if (pool == NULL)
    return;
  g_array_unref (pool->ranges);
  g_hash_table_unref (pool->used);
  g_free (pool);
}

gboolean
gt_port_pool_is_empty (const GtPortPool *pool)
{
  return pool->total == 0;
}

gboolean
gt_port_pool_contains (const GtPortPool *pool, guint16 port)
{
  for (guint i = 0; i < pool->ranges->len; i++)
    {
      GtPortRange r = g_array_index (pool->ranges, GtPortRange, i);

      if (port >= r.first && port <= r.last)
        return TRUE;
    }
  return FALSE;
}

gboolean
gt_port_pool_in_use (const GtPortPool *pool, guint16 port)
{
  return g_hash_table_contains (pool->used, GUINT_TO_POINTER (port));
}

gboolean
gt_port_pool_take (GtPortPool *pool, guint16 port)
{
  if (!gt_port_pool_contains (pool, port) || gt_port_pool_in_use (pool, port))
    return FALSE;
  g_hash_table_add (pool->used, GUINT_TO_POINTER (port));
  return TRUE;
}

static gboolean
skipped (const GArray *skip, guint16 port)
{
  for (guint i = 0; skip != NULL && i < skip->len; i++)
    if (g_array_index (skip, guint16, i) == port)
      return TRUE;
  return FALSE;
}

guint16
gt_port_pool_pick_random (const GtPortPool *pool, const GArray *skip)
{
  guint start;

  if (pool->total == 0)
    return 0;
  /* Walk the whole pool once from a random offset: finds a free port whenever one exists. */
  start = g_random_int_range (0, (gint32) pool->total);
  for (guint k = 0; k < pool->total; k++)
    {
      guint idx = (start + k) % pool->total;

      for (guint i = 0; i < pool->ranges->len; i++)
        {
          GtPortRange r = g_array_index (pool->ranges, GtPortRange, i);
          guint size = (guint) r.last - r.first + 1;

          if (idx < size)
            {
              guint16 port = (guint16) (r.first + idx);

              if (!gt_port_pool_in_use (pool, port) && !skipped (skip, port))
                return port;
              break;
            }
          idx -= size;
        }
    }
  return 0;
}

void
gt_port_pool_release (GtPortPool *pool, guint16 port)
{
  g_hash_table_remove (pool->used, GUINT_TO_POINTER (port));
}

guint
gt_port_pool_n_used (const GtPortPool *pool)
{
  return g_hash_table_size (pool->used);
}
