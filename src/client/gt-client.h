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
/* Port the server opened for a tcp service, 0 if unknown. */
guint16 gt_client_get_tcp_port (GtClient *client, guint service_index);

/* GT's P2P signalling: a stream of an http service that starts with an "XP" request is not
 * dialed; func gets fd (owned), one end of a socketpair whose other end carries the stream, and
 * serves the XP request on it. Without a func such requests get GT's 403. */
typedef void (*GtClientSignallingFunc) (GtClient *client, int fd, gpointer user_data);
void gt_client_set_signalling_func (GtClient *client, GtClientSignallingFunc func,
                                    gpointer user_data);
/* The configuration's web admin keys (owned by the client). */
const GtWebConfig *gt_client_get_web_config (GtClient *client);
/* A snapshot for the admin UI and D-Bus, a{sv}: kind "client", id, tunnels (ready), streams,
 * bytesIn/bytesOut (of the open streams: toward the local services, and back), tunnelList
 * aa{sv} (index, state, remote URL, streams, bytesIn, bytesOut), streamList aa{sv} (id, tunnel,
 * service (local URL), serviceIndex, remote (user IP:PORT), bytesIn, bytesOut, idleMs),
 * services aa{sv} (local, kind, hostPrefix, remoteTCPPort). No secret in it. */
GVariant *gt_client_get_state (GtClient *client);

G_END_DECLS
