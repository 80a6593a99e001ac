/* gt-p2p-connect.h: `gt connect`: a local TCP listener whose connections reach a remote client's
 * service, over a direct P2P path (ICE, DTLS, SCTP: one data channel per connection) when there
 * is one and over the relay path through the server otherwise. */
#pragma once

#include <gio/gio.h>

#include "gt-p2p-connect-config.h"

G_BEGIN_DECLS

/* Opens one relayed stream to the target's service (the relay path); the result is a GIOStream
 * with pollable or plain async streams. */
typedef void (*GtP2pRelayOpenFunc) (GCancellable *cancellable, GAsyncReadyCallback callback,
                                    gpointer callback_data, gpointer user_data);
typedef GIOStream *(*GtP2pRelayFinishFunc) (GAsyncResult *result, GError **error);

#define GT_TYPE_P2P_CONNECT (gt_p2p_connect_get_type ())
G_DECLARE_FINAL_TYPE (GtP2pConnect, gt_p2p_connect, GT, P2P_CONNECT, GObject)

/* Takes config (validated). */
GtP2pConnect *gt_p2p_connect_new (GtConnectConfig *config);
/* Replaces the relay path (description: for the log; by default a TCP connection to relayAddr, or
 * to the server's host and the port of a `:PORT/` service label; none otherwise). */
void gt_p2p_connect_set_relay (GtP2pConnect *self, const char *description, GtP2pRelayOpenFunc open,
                               GtP2pRelayFinishFunc finish, gpointer user_data);
/* Listens, starts the metrics endpoint and the first P2P attempt. */
gboolean gt_p2p_connect_start (GtP2pConnect *self, GError **error);
/* The listener's address ("host:port"). */
const char *gt_p2p_connect_get_local_address (GtP2pConnect *self);
/* The metrics in Prometheus text format. */
char *gt_p2p_connect_metrics (GtP2pConnect *self);

G_END_DECLS
