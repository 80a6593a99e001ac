/* gt-types.c: the listener and tunnel-scheme tables shared by config, server, client and manager. */
#include "config.h"

#include <string.h>

#include "gt-config.h"
#include "gt-types.h"

static const GtListenerInfo listeners[GT_N_LISTENERS] = {
  [GT_LISTENER_PLAIN] = { GT_LISTENER_PLAIN, "addr", G_STRUCT_OFFSET (GtServerConfig, addr), FALSE },
  [GT_LISTENER_TLS] = { GT_LISTENER_TLS, "tlsAddr", G_STRUCT_OFFSET (GtServerConfig, tls_addr),
                        TRUE },
  [GT_LISTENER_SNI] = { GT_LISTENER_SNI, "sniAddr", G_STRUCT_OFFSET (GtServerConfig, sni_addr),
                        FALSE },
  [GT_LISTENER_QUIC] = { GT_LISTENER_QUIC, "quicAddr",
                         G_STRUCT_OFFSET (GtServerConfig, quic_addr), TRUE, TRUE },
};

static const GtSchemeInfo schemes[] = {
  { "tcp", GT_LISTENER_PLAIN, FALSE, FALSE, 80 },
  { "tls", GT_LISTENER_TLS, TRUE, FALSE, 443 },
  { "ws", GT_LISTENER_PLAIN, FALSE, TRUE, 80 },
  { "wss", GT_LISTENER_TLS, TRUE, TRUE, 443 },
#ifdef GT_WITH_QUIC
  { "quic", GT_LISTENER_QUIC, TRUE, FALSE, 443 },
#endif
};

static const char *const scheme_names[] = { "tcp", "tls", "ws", "wss",
#ifdef GT_WITH_QUIC
                                            "quic",
#endif
                                            NULL };

const GtListenerInfo *
gt_listener_info (GtListenerKind kind)
{
  g_return_val_if_fail (kind < GT_N_LISTENERS, NULL);
  return &listeners[kind];
}

const GtListenerInfo *
gt_listener_info_lookup (const char *key)
{
  for (guint i = 0; i < GT_N_LISTENERS; i++)
    if (g_strcmp0 (listeners[i].key, key) == 0)
      return &listeners[i];
  return NULL;
}

const char *
gt_listener_get_addr (const void *server_config, GtListenerKind kind)
{
  g_return_val_if_fail (server_config != NULL && kind < GT_N_LISTENERS, NULL);
  return G_STRUCT_MEMBER (const char *, server_config, listeners[kind].config_offset);
}

const GtSchemeInfo *
gt_scheme_info_lookup (const char *scheme)
{
  for (guint i = 0; i < G_N_ELEMENTS (schemes); i++)
    if (g_strcmp0 (schemes[i].scheme, scheme) == 0)
      return &schemes[i];
  return NULL;
}

const char *const *
gt_scheme_names (void)
{
  return scheme_names;
}
