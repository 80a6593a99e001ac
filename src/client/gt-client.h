/* gt-client.h: the relay client: a pool of tunnels to the server, local dialing per stream. */
#pragma once

#include <gio/gio.h>
#include "gt-config.h"

G_BEGIN_DECLS

#define GT_TYPE_CLIENT (gt_client_get_type ())
G_DECLARE_FINAL_TYPE (GtClient, gt_client, GT, CLIENT, GObject)

/* Takes ownership of config (validated). */
GtClient *gt_client_new (GtClientConfig *config);
gboolean gt_client_start (GtClient *client, GError **error);
void gt_client_stop (GtClient *client);
/* Graceful stop: no new tunnels; waits up to timeout_ms for open streams, then stops and emits
 * "drained". */
void gt_client_drain (GtClient *client, guint64 timeout_ms);
/* Number of tunnels that completed the handshake and are open. */
guint gt_client_get_n_ready (GtClient *client);
/* options.drainTimeout in ms. */
guint64 gt_client_get_drain_timeout (GtClient *client);
/* The configuration (owned by the client). */
const GtClientConfig *gt_client_get_config (GtClient *client);
/* Open tunnels (handshake done) and streams; bytes in (from the server) and out counted on the
 * tunnels, frame headers included, since the start. */
void gt_client_get_traffic (GtClient *client, GtTraffic *traffic);
/* Port the server opened for a tcp (or udp) service, 0 if unknown. */
guint16 gt_client_get_tcp_port (GtClient *client, guint service_index);

/* GT's P2P signalling: a stream of an http service that starts with an "XP" request is not
 * dialed; func gets fd (owned), one end of a socketpair whose other end carries the stream, and
 * serves the XP request on it. Without a func such requests get GT's 403. */
typedef void (*GtClientSignallingFunc) (GtClient *client, int fd, gpointer user_data);
void gt_client_set_signalling_func (GtClient *client, GtClientSignallingFunc func,
                                    gpointer user_data);
/* GT's tcpForward (docs/protocol.md §6.11): streams this client opens, through the server, to the
 * service of the client that holds a host prefix (the server decides who may reach whom:
 * tcpForwardAllow). A client whose config sets tcpForwardAddr/tcpForwardHostPrefix does this by
 * itself; another one calls gt_client_enable_forward before gt_client_start so that its tunnels
 * ask the server for the capability (a server without it refuses such a tunnel; see the log). */
void gt_client_enable_forward (GtClient *client);
/* Opens one stream to the service of the client holding host_prefix. It waits for a tunnel
 * that can carry it (at most remoteTimeout, at least 1 s), sends FORWARD, and completes when the
 * server routed the stream (its ACK) or refused it. Only one request at a time per stream; any
 * number may run at once. Main-loop thread only. */
void gt_client_open_forward_stream_async (GtClient *client, const char *host_prefix,
                                          GCancellable *cancellable,
                                          GAsyncReadyCallback callback, gpointer user_data);
/* A GSocketConnection (one end of a local socket pair; the other end is the stream): bytes
 * written reach the service, its answers can be read; closing the write side half-closes the
 * stream (SHUTDOWN), closing the connection ends it. A RESET that comes later (e.g. the service
 * refused the connection: the target client answers CONNECT_FAILED) shows as end of stream or a
 * reset socket. Errors (domain G_IO_ERROR, message "tcpForward to 'PREFIX': why"):
 * PERMISSION_DENIED (no tcpForwardAllow rule on the server lets this client reach it),
 * HOST_NOT_FOUND (no connected client holds it), HOST_UNREACHABLE (its client is offline),
 * TIMED_OUT (no tunnel up in time), NOT_SUPPORTED (forward not enabled, or the server did not
 * accept it), INVALID_ARGUMENT (bad prefix), CANCELLED, CLOSED (client stopping),
 * CONNECTION_CLOSED (the tunnel closed before the answer). */
GIOStream *gt_client_open_forward_stream_finish (GtClient *client, GAsyncResult *result,
                                                 GError **error);

/* The configuration's web admin keys (owned by the client). */
const GtWebConfig *gt_client_get_web_config (GtClient *client);
/* A snapshot for the admin UI and D-Bus, a{sv}: kind "client", id, tunnels (ready), streams,
 * bytesIn/bytesOut (of the open streams: toward the local services, and back), tunnelList
 * aa{sv} (index, state, remote URL, streams, bytesIn, bytesOut), streamList aa{sv} (id, tunnel,
 * service (local URL), serviceIndex, remote (user IP:PORT), bytesIn, bytesOut, idleMs),
 * services aa{sv} (local, kind, hostPrefix, remoteTCPPort). No secret in it. */
GVariant *gt_client_get_state (GtClient *client);

G_END_DECLS
