/* gt-client-private.h: what the client object and its tcpForward part share. */
#pragma once

#include "gt-client.h"
#include "gt-mux.h"

G_BEGIN_DECLS

/* gt-client.c */
/* The ready tunnel with the forward capability and the fewest streams, or NULL. */
GtMux *_gt_client_pick_forward_tunnel (GtClient *client);
typedef struct _GtClientForward GtClientForward;
/* A ready tunnel that carries datagrams, or NULL. */
GtMux *_gt_client_pick_datagram_tunnel (GtClient *client);
/* The FORWARD part, NULL when the client does not ask for the capability. */
GtClientForward *_gt_client_get_forward (GtClient *client);

/* gt-client-forward.c: FORWARD streams (tcpForwardAddr listener, open_forward_stream). */

GtClientForward *_gt_client_forward_new (GtClient *client);
/* Fails the requests still waiting, closes the listener; streams end with their tunnels. */
void _gt_client_forward_stop (GtClientForward *forward);
void _gt_client_forward_free (GtClientForward *forward);
/* Opens the tcpForwardAddr listener (if configured). */
gboolean _gt_client_forward_listen (GtClientForward *forward, GError **error);
/* Draining: closes the listener (a new worker may hold the address already); the streams and
 * requests in flight go on. */
void _gt_client_forward_stop_listening (GtClientForward *forward);
/* A tunnel that accepted GT_CAP_FORWARD is ready: watch its FORWARD streams, serve the waiting
 * requests. */
void _gt_client_forward_tunnel_ready (GtClientForward *forward, GtMux *mux);

/* gt-client-udp.c: udp services (DATAGRAMs, docs/protocol.md §6.12). */

/* Most flows a udp service keeps; the least recently active goes first. */
#define GT_CLIENT_UDP_MAX_FLOWS 1024
typedef struct _GtClientUdp GtClientUdp;
/* services and local_addrs (GSocketAddress* per service, NULL until resolved) are borrowed. An
 * idle flow is forgotten after its service's localTimeout. */
GtClientUdp *_gt_client_udp_new (GtClient *client, GPtrArray *services, GPtrArray *local_addrs);
void _gt_client_udp_free (GtClientUdp *udp);
/* A tunnel that accepted GT_CAP_DATAGRAM: its datagrams reach the udp services. */
void _gt_client_udp_attach (GtClientUdp *udp, GtMux *mux);
guint _gt_client_udp_get_n_flows (GtClientUdp *udp);

G_END_DECLS
