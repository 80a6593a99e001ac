/* gt-server-cluster.h: scale-out: this node's etcd lease and claims, the routing cache kept by
 * watches, and the node-to-node tunnels that carry user connections to the node holding a client
 * (docs/scale-out.md). */
#pragma once

#include <gio/gio.h>
#include "gt-config.h"
#include "gt-frame.h"
#include "gt-mux.h"
#include "gt-server-session.h"

G_BEGIN_DECLS

typedef struct _GtCluster GtCluster;

/* Hands a connection that came in over a node tunnel to the server's sniffing (kind: the
 * listener kind the sending node saw it on). fd is owned by the callee. */
typedef void (*GtClusterAdoptFunc) (int fd, GtListenerKind kind, const GtOpenAddr *addr,
                                    gpointer user_data);

GtCluster *gt_cluster_new (const GtServerConfig *config, GtClusterAdoptFunc adopt,
                           gpointer user_data, GError **error);
/* Grants the lease, claims the node name and starts the routing cache. */
void gt_cluster_start (GtCluster *cluster);
void gt_cluster_free (GtCluster *cluster);
/* Revokes the lease (all claims go at once), then calls done; within about 2 s whatever etcd
 * does. done is not called when the cluster is freed first. */
void gt_cluster_leave_async (GtCluster *cluster, GDestroyNotify done, gpointer user_data);

/* Claims session's client id, host prefixes and tcp ports under this node's lease (all or none).
 * Claims the session already holds cost nothing; several claims run one after the other. */
void gt_cluster_claim_async (GtCluster *cluster, GtServerSession *session,
                             GCancellable *cancellable, GAsyncReadyCallback callback,
                             gpointer user_data);
/* GT_ERROR_CODE_NONE, ELSEWHERE (held by another node) or REGISTRY_UNAVAILABLE, with a message. */
GtErrorCode gt_cluster_claim_finish (GtCluster *cluster, GAsyncResult *result, char **message);
/* Deletes what session holds (only while it is still under this node's lease). */
void gt_cluster_release (GtCluster *cluster, GtServerSession *session);

/* Whether the routing cache names another node for this host prefix. */
gboolean gt_cluster_holds_elsewhere (GtCluster *cluster, GtServiceKind kind, const char *prefix);
/* A user connection for a host prefix that no local client serves: TRUE when another node
 * holds it, and the connection (fd or io, and data) now belongs to the cluster, which opens a
 * stream for it on that node's tunnel. */
gboolean gt_cluster_forward (GtCluster *cluster, GtServiceKind kind, const char *prefix,
                             GtListenerKind listener, int fd, GIOStream *io, guint8 *data,
                             gsize len, const GtOpenAddr *addr, guint64 timeout_ms);

/* Node tunnel from a HELLO whose entry is a node: TRUE when the secret is the cluster's. */
gboolean gt_cluster_check_node (GtCluster *cluster, const GtHello *hello);
/* Takes the accepted node tunnel (WELCOME already queued); its streams are adopted. */
void gt_cluster_add_inbound (GtCluster *cluster, GtMux *mux);

/* For status: whether etcd answered lately, and claims held. */
gboolean gt_cluster_is_registry_up (GtCluster *cluster);
guint gt_cluster_get_n_claims (GtCluster *cluster);

/* TRUE when hello opens a node tunnel. */
gboolean gt_hello_is_node (const GtHello *hello);

G_END_DECLS
