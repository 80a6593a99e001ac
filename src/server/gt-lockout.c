/* gt-lockout.c: per remote IP lockout after repeated failed handshakes (GT's reconnectTimes). */
#include "config.h"

#include "gt-lockout.h"

typedef struct
{
  char *ip;
  guint failures;
  gint64 blocked_until_us; /* 0 = not blocked */
  gint64 last_us;          /* time of the last failure or attempt */
  guint in_flight;         /* attempts started and not ended (an auth API is asked) */
  GList link;              /* in GtLockout.order; data = this entry */
} Entry;

struct _GtLockout
{
  guint max_failures;
  gint64 duration_us;
  GHashTable *entries; /* ip (owned by the Entry) → Entry* */
  GQueue order;        /* least recently updated first */
};

static void
entry_free (Entry *e)
{
  g_free (e->ip);
  g_free (e);
}

GtLockout *
gt_lockout_new (guint max_failures, guint64 duration_ms)
{
  GtLockout *l = g_new0 (GtLockout, 1);

  l->max_failures = max_failures;
  l->duration_us = (gint64) MIN (duration_ms, (guint64) G_MAXINT64 / 2000) * 1000;
  l->entries = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, (GDestroyNotify) entry_free);
  g_queue_init (&l->order);
  return l;
}

void
gt_lockout_free (GtLockout *l)
{
  if (l == NULL)
    return;
  /* The queue links live inside the entries: clear it first, then free the entries. */
  g_queue_init (&l->order);
  g_hash_table_unref (l->entries);
  g_free (l);
}

static void
drop (GtLockout *l, Entry *e)
{
  g_queue_unlink (&l->order, &e->link);
  g_hash_table_remove (l->entries, e->ip);
}

/* An entry is over when its block ended, or (not blocked) its last failure is older than
 * the duration. */
static gboolean
expired (GtLockout *l, Entry *e, gint64 now_us)
{
  if (e->blocked_until_us != 0)
    return now_us >= e->blocked_until_us;
  return e->in_flight == 0 && now_us - e->last_us >= l->duration_us;
}

/* The entry for ip, or NULL; drops it first when it has expired. */
static Entry *
lookup (GtLockout *l, const char *ip, gint64 now_us)
{
  Entry *e = g_hash_table_lookup (l->entries, ip);

  if (e != NULL && expired (l, e, now_us))
    {
      drop (l, e);
      e = NULL;
    }
  return e;
}

gboolean
gt_lockout_is_blocked (GtLockout *l, const char *ip, gint64 now_us)
{
  Entry *e;

  g_return_val_if_fail (l != NULL, FALSE);
  g_return_val_if_fail (ip != NULL, FALSE);

  if (l->max_failures == 0)
    return FALSE;
  e = lookup (l, ip, now_us);
  return e != NULL && e->blocked_until_us != 0;
}

static void
make_room (GtLockout *l)
{
  /* The least recently updated entries go. Entries expire in about that order, so stale ones
   * go first; a live one is evicted too when needed: bounded memory matters more than
   * remembering the oldest offender. */
  while (l->order.length >= GT_LOCKOUT_MAX_TRACKED)
    drop (l, l->order.head->data);
}

/* The entry for ip, created when needed, moved to the most recently updated end. */
static Entry *
touch (GtLockout *l, const char *ip, gint64 now_us)
{
  Entry *e = lookup (l, ip, now_us);

  if (e == NULL)
    {
      make_room (l);
      e = g_new0 (Entry, 1);
      e->ip = g_strdup (ip);
      e->link.data = e;
      g_hash_table_insert (l->entries, e->ip, e);
    }
  else
    {
      g_queue_unlink (&l->order, &e->link);
    }
  g_queue_push_tail_link (&l->order, &e->link);
  e->last_us = now_us;
  return e;
}

void
gt_lockout_record_failure (GtLockout *l, const char *ip, gint64 now_us)
{
  Entry *e;

  g_return_if_fail (l != NULL);
  g_return_if_fail (ip != NULL);

  if (l->max_failures == 0)
    return;
  e = touch (l, ip, now_us);
  /* A failure while blocked (a connection accepted before the block) does not extend it. */
  if (e->blocked_until_us != 0)
    return;
  e->failures++;
  if (e->failures > l->max_failures)
    e->blocked_until_us = MAX (now_us + l->duration_us, now_us + 1);
}

void
gt_lockout_record_success (GtLockout *l, const char *ip)
{
  Entry *e;

  g_return_if_fail (l != NULL);
  g_return_if_fail (ip != NULL);

  e = g_hash_table_lookup (l->entries, ip);
  /* A success cannot lift a block (blocked IPs are dropped before any handshake). */
  if (e == NULL || e->blocked_until_us != 0)
    return;
  e->failures = 0;
  if (e->in_flight == 0)
    drop (l, e);
}

gboolean
gt_lockout_begin_attempt (GtLockout *l, const char *ip, gint64 now_us)
{
  Entry *e;

  g_return_val_if_fail (l != NULL, FALSE);
  g_return_val_if_fail (ip != NULL, FALSE);

  if (l->max_failures == 0)
    return TRUE;
  e = touch (l, ip, now_us);
  /* Were every attempt in flight to fail, this one would come from a blocked address. */
  if (e->blocked_until_us != 0 || e->failures + e->in_flight > l->max_failures)
    return FALSE;
  e->in_flight++;
  return TRUE;
}

void
gt_lockout_end_attempt (GtLockout *l, const char *ip)
{
  Entry *e;

  g_return_if_fail (l != NULL);
  g_return_if_fail (ip != NULL);

  /* The entry may have been evicted meanwhile (bounded memory): then there is nothing to end. */
  e = g_hash_table_lookup (l->entries, ip);
  if (e != NULL && e->in_flight > 0)
    e->in_flight--;
}

gint64
gt_lockout_get_remaining (GtLockout *l, const char *ip, gint64 now_us)
{
  Entry *e;

  g_return_val_if_fail (l != NULL, 0);
  g_return_val_if_fail (ip != NULL, 0);

  e = lookup (l, ip, now_us);
  return e != NULL && e->blocked_until_us != 0 ? e->blocked_until_us - now_us : 0;
}

guint
gt_lockout_get_n_blocked (GtLockout *l, gint64 now_us)
{
  GHashTableIter iter;
  gpointer value;
  guint n = 0;

  g_return_val_if_fail (l != NULL, 0);

  g_hash_table_iter_init (&iter, l->entries);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      Entry *e = value;

      if (expired (l, e, now_us))
        {
          g_queue_unlink (&l->order, &e->link);
          g_hash_table_iter_remove (&iter);
        }
      else if (e->blocked_until_us != 0)
        {
          n++;
        }
    }
  return n;
}

guint
gt_lockout_get_n_tracked (GtLockout *l)
{
  g_return_val_if_fail (l != NULL, 0);
  return g_hash_table_size (l->entries);
}
