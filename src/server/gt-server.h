/* gt-server.h: the public relay server: listeners, tunnel registry, routing by Host and port. */
#pragma once

#include <gio/gio.h>
#include "gt-config.h"

G_BEGIN_DECLS

#define GT_TYPE_SERVER (gt_server_get_type ())
G_DECLARE_FINAL_TYPE (GtServer, gt_server, GT, SERVER, GObject)

/* Takes ownership of config (validated). */
GtServer *gt_server_new (GtServerConfig *config);
gboolean gt_server_start (GtServer *server, GError **error);
/* Closes everything now. */
void gt_server_stop (GtServer *server);
/* Graceful stop: closes the listeners, sends GOAWAY on every tunnel, lets streams finish for up
 * to options.drainTimeout, then stops and emits "drained". */
void gt_server_drain (GtServer *server);
/* "127.0.0.1:8080" as bound (real port when 0 was asked). */
const char *gt_server_get_listen_address (GtServer *server);
/* The configuration the server runs with (owned by the server). */
const GtServerConfig *gt_server_get_config (GtServer *server);
guint gt_server_get_n_clients (GtServer *server);
guint gt_server_get_n_tunnels (GtServer *server);
/* Totals over every client: open tunnels and streams, and the traffic of every stream since the
 * start (finished and open). */
void gt_server_get_traffic (GtServer *server, GtTraffic *traffic);
/* The Prometheus text served on the status API's /metrics. */
char *gt_server_render_metrics (GtServer *server);
/* Credentials accepted in every auth mode until removed (the /status self-test uses them). */
void gt_server_add_ephemeral_user (GtServer *server, const char *id, const char *secret);
void gt_server_remove_ephemeral_user (GtServer *server, const char *id);

/* A snapshot for the admin UI and D-Bus (gt-server-state.c), a{sv}: kind "server",
 * listenAddress, listeners a{ss} (key → address), uptimeMs, tunnels, streams, bytesIn, bytesOut
 * (cumulative: from users toward clients, and back), clients aa{sv}: id, services as, tunnels
 * aa{sv} (index, peer, streams, bytesIn, bytesOut), streams aa{sv} (id, tunnel, service, remote
 * "IP:PORT" of the user, bytesIn, bytesOut, idleMs), bytesIn, bytesOut. No secret in it. */
GVariant *gt_server_get_state (GtServer *server);
/* Closes every tunnel of the connected client id (it may reconnect); FALSE when not connected. */
gboolean gt_server_disconnect_client (GtServer *server, const char *id);

G_END_DECLS
