/* gt-p2p-peer-module.c: gt's side of the WebRTC peer module (gt-p2p-peer-module.h). */
#include "config.h"

#define G_LOG_DOMAIN "gt-p2p"

#include "gt-p2p-peer-module.h"

#include "gt-module.h"

const GtP2pPeerApi *_gt_p2p_peer_api;

void
gt_p2p_peer_module_register (const GtP2pPeerApi *api)
{
  g_return_if_fail (api != NULL);

  if (_gt_p2p_peer_api == NULL)
    _gt_p2p_peer_api = api;
}

gboolean
gt_p2p_peer_module_load (GError **error)
{
  if (_gt_p2p_peer_api != NULL)
    return TRUE;
  if (!gt_module_load ("gt-webrtc", "remoteSTUN (WebRTC peers)", error))
    return FALSE;
  if (_gt_p2p_peer_api == NULL)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_FAILED,
                           "gt's module gt-webrtc did not register the WebRTC peer");
      return FALSE;
    }
  return TRUE;
}
