/* gt-port-pool.h: a pool of TCP ports (ranges) handed out to clients' tcp services. */
#pragma once

#include <glib.h>
#include "gt-config.h"

G_BEGIN_DECLS

typedef struct _GtPortPool GtPortPool;

GtPortPool *gt_port_pool_new (const GArray *ranges /* GtPortRange, may be NULL */);
void gt_port_pool_free (GtPortPool *pool);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtPortPool, gt_port_pool_free)
gboolean gt_port_pool_is_empty (const GtPortPool *pool);
gboolean gt_port_pool_contains (const GtPortPool *pool, guint16 port);
gboolean gt_port_pool_in_use (const GtPortPool *pool, guint16 port);
/* Marks a port as used; FALSE if outside the pool or already in use. */
gboolean gt_port_pool_take (GtPortPool *pool, guint16 port);
/* A free port chosen at random, 0 if none; does not mark it (call take). skip: ports to avoid. */
guint16 gt_port_pool_pick_random (const GtPortPool *pool, const GArray *skip);
void gt_port_pool_release (GtPortPool *pool, guint16 port);
guint gt_port_pool_n_used (const GtPortPool *pool);

G_END_DECLS
