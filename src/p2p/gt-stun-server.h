/* gt-stun-server.h: the server's UDP STUN endpoint (stunAddr): answers Binding requests, and
 * hands TURN to gt-turn-server when enabled. */
#pragma once

#include <gio/gio.h>

#include "gt-turn-server.h"

G_BEGIN_DECLS

#define GT_TYPE_STUN_SERVER (gt_stun_server_get_type ())
G_DECLARE_FINAL_TYPE (GtStunServer, gt_stun_server, GT, STUN_SERVER, GObject)

/* addr: "host:port" as normalized by the config loader ("0.0.0.0:3478"). */
GtStunServer *gt_stun_server_new (const char *addr);
/* Binds the UDP socket and starts answering on the thread-default main context. */
gboolean gt_stun_server_start (GtStunServer *server, GError **error);
void gt_stun_server_stop (GtStunServer *server);
/* Serves TURN on the same socket (after start); options are copied. */
void gt_stun_server_enable_turn (GtStunServer *server, const GtTurnOptions *options);
GtTurnServer *gt_stun_server_get_turn (GtStunServer *server);
/* The bound port (useful with port 0). */
guint16 gt_stun_server_get_port (GtStunServer *server);
guint64 gt_stun_server_get_answered (GtStunServer *server);
guint64 gt_stun_server_get_dropped (GtStunServer *server);

G_END_DECLS
