/* gt-p2p-peer.h: one WebRTC peer connection of a client: ICE (libnice), DTLS 1.2 (GnuTLS),
 * SCTP (usrsctp) and DCEP; each data channel the peer opens is relayed to a local service. */
#pragma once

#include <gio/gio.h>

#include "gt-sdp.h"

G_BEGIN_DECLS

/* The local address a data channel's label leads to (GT's label routing), or NULL to refuse. */
typedef GSocketConnectable *(*GtP2pRouteFunc) (const char *label, gpointer user_data);

typedef struct
{
  char *stun_host;          /* NULL = no STUN server */
  guint16 stun_port;
  char *turn_host;          /* NULL = no TURN server (relayed candidates) */
  guint16 turn_port;
  char *turn_username;      /* TURN REST credentials (gt_turn_credentials) */
  char *turn_password;      /* never logged */
  guint min_port, max_port; /* ICE UDP port range, 0 = any */
  guint64 idle_timeout_ms;  /* closes this long after the last channel closed */
  guint64 setup_timeout_ms; /* closes when no channel opened within this */
  gboolean loopback;        /* also gather 127.0.0.1 (tests, same-host peers) */
  gboolean keepalive_check; /* ICE keepalives are checks: a silent path fails the peer */
  GtP2pRouteFunc route;
  gpointer route_data;
} GtP2pPeerOptions;

#define GT_TYPE_P2P_PEER (gt_p2p_peer_get_type ())
G_DECLARE_FINAL_TYPE (GtP2pPeer, gt_p2p_peer, GT, P2P_PEER, GObject)

/* Signals: "local-candidate" (const char *candidate: "candidate:..."), "gathering-done",
 * "connected" (the SCTP association is up: channels can be opened),
 * "channel-orphaned" (GSocketConnection *conn, GBytes *pending): while closing, for each channel
 * this side opened that sent and received nothing yet, its connection is handed back with the
 * bytes read from it and not sent (gt connect re-tries it on the relay),
 * "closed" (emitted once, when ICE/DTLS/SCTP failed or ended or a timeout hit). */
GtP2pPeer *gt_p2p_peer_new (const GtP2pPeerOptions *options, guint id);
guint gt_p2p_peer_get_id (GtP2pPeer *peer);

/* Answerer: applies the peer's offer (with its candidates) and starts gathering. */
gboolean gt_p2p_peer_set_remote_offer (GtP2pPeer *peer, const GtSdp *offer, GError **error);
/* Offerer: starts gathering; then gt_p2p_peer_get_local_sdp is the offer. */
gboolean gt_p2p_peer_create_offer (GtP2pPeer *peer, GError **error);
/* Offerer: applies the answer (with its candidates). */
gboolean gt_p2p_peer_set_remote_answer (GtP2pPeer *peer, const GtSdp *answer, GError **error);
/* Our description, without candidates (they trickle). g_free(). */
char *gt_p2p_peer_get_local_sdp (GtP2pPeer *peer);
/* A trickled candidate of the peer ("candidate:..."; "" = end of candidates). */
gboolean gt_p2p_peer_add_remote_candidate (GtP2pPeer *peer, const char *candidate,
                                           GError **error);
/* Local candidates gathered so far (NULL-terminated, owned by the peer). */
const char *const *gt_p2p_peer_get_local_candidates (GtP2pPeer *peer);
gboolean gt_p2p_peer_is_gathering_done (GtP2pPeer *peer);
gboolean gt_p2p_peer_is_closed (GtP2pPeer *peer);
void gt_p2p_peer_close (GtP2pPeer *peer);

/* Opens a data channel (DCEP, reliable and ordered) with label whose messages carry conn's bytes
 * both ways (pending, at most 16 KiB or NULL, first), as for a channel the peer opened. FALSE
 * before "connected" or when no stream id is free. */
gboolean gt_p2p_peer_open_channel (GtP2pPeer *peer, const char *label, GSocketConnection *conn,
                                   GBytes *pending, GError **error);
gboolean gt_p2p_peer_is_connected (GtP2pPeer *peer);

/* Figures of this peer. */
guint gt_p2p_peer_get_n_channels (GtP2pPeer *peer);
guint gt_p2p_peer_get_n_channels_opened (GtP2pPeer *peer);
/* The local candidate type of the ICE pair in use ("host", "srflx", "prflx", "relay"), or
 * "none" before ICE connected. */
const char *gt_p2p_peer_get_path (GtP2pPeer *peer);
/* The same for the remote candidate of that pair. */
const char *gt_p2p_peer_get_remote_path (GtP2pPeer *peer);
guint64 gt_p2p_peer_get_bytes_in (GtP2pPeer *peer);
guint64 gt_p2p_peer_get_bytes_out (GtP2pPeer *peer);

G_END_DECLS
