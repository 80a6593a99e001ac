/* gt-p2p-peer-module.h: the seam between the P2P code in gt and the WebRTC peer (gt-p2p-peer.c,
 * with libnice, GnuTLS and usrsctp), which is the module gt-webrtc: a table of the peer's
 * functions that the module registers as it loads. Code in gt includes this header instead of
 * gt-p2p-peer.h: its gt_p2p_peer_* calls then go through the table (load it first). */
#pragma once

#include "gt-p2p-peer.h"

G_BEGIN_DECLS

#define GT_P2P_PEER_FUNCS(X) \
  X (gt_p2p_peer_get_type) \
  X (gt_p2p_peer_new) \
  X (gt_p2p_peer_get_id) \
  X (gt_p2p_peer_set_remote_offer) \
  X (gt_p2p_peer_create_offer) \
  X (gt_p2p_peer_set_remote_answer) \
  X (gt_p2p_peer_get_local_sdp) \
  X (gt_p2p_peer_add_remote_candidate) \
  X (gt_p2p_peer_get_local_candidates) \
  X (gt_p2p_peer_is_gathering_done) \
  X (gt_p2p_peer_is_closed) \
  X (gt_p2p_peer_close) \
  X (gt_p2p_peer_get_n_channels) \
  X (gt_p2p_peer_get_n_channels_opened) \
  X (gt_p2p_peer_get_path) \
  X (gt_p2p_peer_get_bytes_in) \
  X (gt_p2p_peer_get_bytes_out) \
  X (gt_p2p_peer_get_remote_path) \
  X (gt_p2p_peer_is_connected) \
  X (gt_p2p_peer_open_channel)

#define GT_P2P_PEER_DECLARE(name) __typeof__ (name) *name;
typedef struct
{
  GT_P2P_PEER_FUNCS (GT_P2P_PEER_DECLARE)
} GtP2pPeerApi;
#undef GT_P2P_PEER_DECLARE

/* Called by the module's g_module_check_init (and by tests that link gt-p2p-peer.c instead). */
void gt_p2p_peer_module_register (const GtP2pPeerApi *api);

/* Loads the module gt-webrtc unless the table is there already; the error names the module and
 * remoteSTUN, the key that enables WebRTC answers (gt-module.h). */
gboolean gt_p2p_peer_module_load (GError **error);

/* The registered table; NULL before gt_p2p_peer_module_load succeeded. */
extern const GtP2pPeerApi *_gt_p2p_peer_api;

/* From here on, the peer's functions go through the table (not in the module itself, which
 * defines GT_P2P_PEER_MODULE_BUILD to take the real functions' addresses). */
#ifndef GT_P2P_PEER_MODULE_BUILD
#define gt_p2p_peer_get_type (_gt_p2p_peer_api->gt_p2p_peer_get_type)
#define gt_p2p_peer_new (_gt_p2p_peer_api->gt_p2p_peer_new)
#define gt_p2p_peer_get_id (_gt_p2p_peer_api->gt_p2p_peer_get_id)
#define gt_p2p_peer_set_remote_offer (_gt_p2p_peer_api->gt_p2p_peer_set_remote_offer)
#define gt_p2p_peer_create_offer (_gt_p2p_peer_api->gt_p2p_peer_create_offer)
#define gt_p2p_peer_set_remote_answer (_gt_p2p_peer_api->gt_p2p_peer_set_remote_answer)
#define gt_p2p_peer_get_local_sdp (_gt_p2p_peer_api->gt_p2p_peer_get_local_sdp)
#define gt_p2p_peer_add_remote_candidate (_gt_p2p_peer_api->gt_p2p_peer_add_remote_candidate)
#define gt_p2p_peer_get_local_candidates (_gt_p2p_peer_api->gt_p2p_peer_get_local_candidates)
#define gt_p2p_peer_is_gathering_done (_gt_p2p_peer_api->gt_p2p_peer_is_gathering_done)
#define gt_p2p_peer_is_closed (_gt_p2p_peer_api->gt_p2p_peer_is_closed)
#define gt_p2p_peer_close (_gt_p2p_peer_api->gt_p2p_peer_close)
#define gt_p2p_peer_get_n_channels (_gt_p2p_peer_api->gt_p2p_peer_get_n_channels)
#define gt_p2p_peer_get_n_channels_opened (_gt_p2p_peer_api->gt_p2p_peer_get_n_channels_opened)
#define gt_p2p_peer_get_path (_gt_p2p_peer_api->gt_p2p_peer_get_path)
#define gt_p2p_peer_get_bytes_in (_gt_p2p_peer_api->gt_p2p_peer_get_bytes_in)
#define gt_p2p_peer_get_bytes_out (_gt_p2p_peer_api->gt_p2p_peer_get_bytes_out)
#define gt_p2p_peer_get_remote_path (_gt_p2p_peer_api->gt_p2p_peer_get_remote_path)
#define gt_p2p_peer_is_connected (_gt_p2p_peer_api->gt_p2p_peer_is_connected)
#define gt_p2p_peer_open_channel (_gt_p2p_peer_api->gt_p2p_peer_open_channel)
#endif

G_END_DECLS
