/* gt-webrtc-module.c: the entry of the module gt-webrtc (gt-p2p-peer.c, with libnice, GnuTLS and
 * usrsctp): registers the peer's functions with gt's P2P code as gt loads it. */
#include "config.h"

#include <gmodule.h>

#include "gt-module.h"

#define GT_P2P_PEER_MODULE_BUILD
#include "gt-p2p-peer-module.h"

#define GT_P2P_PEER_FILL(name) name,
static const GtP2pPeerApi api = { GT_P2P_PEER_FUNCS (GT_P2P_PEER_FILL) };

G_MODULE_EXPORT const char *g_module_check_init (GModule *module);

const char *
g_module_check_init (GModule *module)
{
  const char *why = gt_module_check_version (PACKAGE_VERSION);

  if (why != NULL)
    return why;
  gt_p2p_peer_module_register (&api);
  return NULL;
}
