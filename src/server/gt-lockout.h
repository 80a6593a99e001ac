/* gt-lockout.h: per remote IP lockout after repeated failed handshakes (GT's reconnectTimes). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* GT semantics: failures are counted per IP; once the count exceeds max_failures the IP is
 * blocked for duration_ms, after which its count starts again from 0. Beyond GT, an IP's
 * failure count is also forgotten after duration_ms without a new failure, and a successful
 * handshake clears it, so that old mistakes do not add up forever.
 *
 * Memory is bounded: at most GT_LOCKOUT_MAX_TRACKED IPs are tracked; a new IP beyond that
 * evicts the least recently updated one. Expired entries are dropped lazily, on lookups and in
 * gt_lockout_get_n_blocked(). Times are monotonic microseconds. Not thread-safe. */
#define GT_LOCKOUT_MAX_TRACKED 65536

typedef struct _GtLockout GtLockout;

/* max_failures 0 = never block */
GtLockout *gt_lockout_new (guint max_failures, guint64 duration_ms);
void gt_lockout_free (GtLockout *l);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtLockout, gt_lockout_free)
gboolean gt_lockout_is_blocked (GtLockout *l, const char *ip, gint64 now_us);
/* Blocked once failures > max (GT: "exceeds"). */
void gt_lockout_record_failure (GtLockout *l, const char *ip, gint64 now_us);
/* Clears ip's failures (not a block). */
void gt_lockout_record_success (GtLockout *l, const char *ip);
/* A login whose answer takes time (an auth API) counts toward the block while it is in flight, so
 * that a burst cannot start more attempts than failures would be allowed: FALSE (refuse it, it is
 * not a failure) when ip is blocked or failures + attempts in flight already exceed
 * max_failures.
 * Each TRUE is paired with gt_lockout_end_attempt(), before its failure or success is recorded. */
gboolean gt_lockout_begin_attempt (GtLockout *l, const char *ip, gint64 now_us);
void gt_lockout_end_attempt (GtLockout *l, const char *ip);
/* Microseconds until ip's block ends, 0 when it is not blocked. */
gint64 gt_lockout_get_remaining (GtLockout *l, const char *ip, gint64 now_us);
guint gt_lockout_get_n_blocked (GtLockout *l, gint64 now_us);
/* IPs currently remembered (blocked or with failures), expired ones included until dropped. */
guint gt_lockout_get_n_tracked (GtLockout *l);

G_END_DECLS
