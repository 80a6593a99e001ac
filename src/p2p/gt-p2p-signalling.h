/* gt-p2p-signalling.h: a client's side of GT's XP signalling: serves XP requests arriving on
 * tunnel streams (offer, get-offer, resp-answer) and keeps the P2P peers they create. */
#pragma once

#include <gio/gio.h>

#include "gt-config.h"

G_BEGIN_DECLS

/* The server port opened for a tcp service (0 = none), for ":port/" labels. */
typedef guint16 (*GtP2pTcpPortFunc) (guint service_index, gpointer user_data);

#define GT_TYPE_P2P_SIGNALLING (gt_p2p_signalling_get_type ())
G_DECLARE_FINAL_TYPE (GtP2pSignalling, gt_p2p_signalling, GT, P2P_SIGNALLING, GObject)

/* config must outlive the object. */
GtP2pSignalling *gt_p2p_signalling_new (const GtClientConfig *config, GtP2pTcpPortFunc tcp_port,
                                        gpointer user_data);
/* Serves the XP request on fd (owned): GT's 403 without remoteSTUN or with webrtcConnections
 * peers already open. */
void gt_p2p_signalling_accept (GtP2pSignalling *self, int fd);
guint gt_p2p_signalling_get_n_peers (GtP2pSignalling *self);

/* GT's label routing: which local URL serves a data channel label. NULL when none. */
GSocketConnectable *gt_p2p_signalling_route (GtP2pSignalling *self, const char *label);

G_END_DECLS
