/* gt-client-private.h: what the client object and its tcpForward part share. */
#pragma once

#include "gt-client.h"
#include "gt-mux.h"

G_BEGIN_DECLS

/* gt-client.c */
/* The ready tunnel with the forward capability and the fewest streams, or NULL. */
GtMux *_gt_client_pick_forward_tunnel (GtClient *client);
typedef struct _GtClientForward GtClientForward;
/* The FORWARD part, NULL when the client does not ask for the capability. */
GtClientForward *_gt_client_get_forward (GtClient *client);

/* gt-client-forward.c: FORWARD streams (tcpForwardAddr listener, open_forward_stream). */

GtClientForward *_gt_client_forward_new (GtClient *client);
/* Fails the requests still waiting, closes the listener; streams end with their tunnels. */
void _gt_client_forward_stop (GtClientForward *forward);
void _gt_client_forward_free (GtClientForward *forward);
/* Opens the tcpForwardAddr listener (if configured). */
gboolean _gt_client_forward_listen (GtClientForward *forward, GError **error);
/* A tunnel that accepted GT_CAP_FORWARD is ready: watch its FORWARD streams, serve the waiting
 * requests. */
void _gt_client_forward_tunnel_ready (GtClientForward *forward, GtMux *mux);

G_END_DECLS
