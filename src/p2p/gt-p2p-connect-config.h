/* gt-p2p-connect-config.h: the configuration of `gt connect` (native P2P from a gt process to a
 * remote client's service): command-line options and the YAML form (`type: connect`). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct
{
  char *remote;        /* the server: tcp://, tls://, http:// or https:// host:port */
  char *remote_url;    /* remote as the http(s):// URL of the XP request */
  char *remote_tunnel; /* remote as the tcp:// or tls:// address of a client's tunnel */
  char *remote_host;   /* remote's host name, for the default relay address */
  char *host;          /* Host of the XP request: the target client's host prefix (or name) */
  char *service;       /* data channel label choosing the target's service; default "gt", or
                        * "PREFIX/" with a tcpForward relay (the service that relay reaches) */
  gboolean service_set;
  char *id, *secret; /* client credentials: the relay path is a tcpForward stream */
  char *local_addr;  /* host:port of the local TCP listener */
  char *relay_addr;  /* host:port of the relay path; NULL = server host + the :port/ label */
  char *stun_host;   /* from remoteSTUN; NULL = host candidates only */
  guint16 stun_port;
  char *turn_host;   /* from remoteTURN (needs id and secret); NULL = no relayed candidates */
  guint16 turn_port;
  guint webrtc_min_port, webrtc_max_port;
  char *metrics_addr; /* host:port serving /metrics; NULL = none */
  char *log_level;
  guint64 direct_wait_ms; /* without a relay path: how long a connection waits for direct */
} GtConnectConfig;

GtConnectConfig *gt_connect_config_new (void);
void gt_connect_config_free (GtConnectConfig *config);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtConnectConfig, gt_connect_config_free)

/* Sets one key (GT's camelCase name, or one of GT's aliases). */
gboolean gt_connect_config_set (GtConnectConfig *config, const char *key, const char *value,
                                GError **error);
/* The YAML form: `type: connect` and an `options:` mapping of keys (remoteSTUN may be a list;
 * its first entry is used). */
gboolean gt_connect_config_load_data (GtConnectConfig *config, const char *data, gsize len,
                                      GError **error);
gboolean gt_connect_config_load_file (GtConnectConfig *config, const char *path, GError **error);
/* `--key value`, `--key=value`, `-key value`. */
gboolean gt_connect_config_apply_args (GtConnectConfig *config, int argc, char **argv,
                                       GError **error);
/* Required keys present, addresses that parse; fills remote_url, remote_host. */
gboolean gt_connect_config_validate (GtConnectConfig *config, GError **error);

/* The option lines of `gt connect --help`. */
extern const char gt_connect_config_usage[];

G_END_DECLS
