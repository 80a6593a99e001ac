/* gt-quic-module.c: the entry of the module gt-quic (gt-quic.c, gt-transport-quic.c, with ngtcp2
 * and GnuTLS): registers the quic:// leaf with the transport seam as gt loads it. */
#include "config.h"

#include <gmodule.h>

#include "gt-module.h"
#include "gt-transport-private.h"

G_MODULE_EXPORT const char *g_module_check_init (GModule *module);

const char *
g_module_check_init (GModule *module)
{
  const char *why = gt_module_check_version (PACKAGE_VERSION);

  if (why != NULL)
    return why;
  _gt_transport_register_leaf (&_gt_transport_quic);
  return NULL;
}
