/* gt-config-keys.c: the key tables (one row per GT key: name, type, field, help) that the YAML
 * loader and the command line share, and the setter that applies a row to its struct. */
#include "config.h"

#include "gt-config-private.h"

#include <string.h>

/* Server options: (the listener keys come from gt_listener_info(), see listener_opts()). */
#define SOPT(name, type, field, def, help)                                                      \
  { name, type, G_STRUCT_OFFSET (GtServerConfig, field), def, 0, help }
#define COPT(name, type, field, def, help)                                                      \
  { name, type, G_STRUCT_OFFSET (GtClientConfig, field), def, 0, help }
/* Per service and per user: offsets in the private entry (its public part comes first). */
#define VOPT(name, type, field, def, set, help)                                                 \
  { name, type, G_STRUCT_OFFSET (GtServiceEntry, pub.field), def, set, help }
#define UOPT(name, type, field, def, help)                                                      \
  { name, type, G_STRUCT_OFFSET (GtUserEntry, pub.field), def, 0, help }

static const GtConfigOpt server_opts[] = {
  SOPT ("certFile", GT_OPT_PATH, cert_file, 0, "PEM certificate of tlsAddr (else generated)"),
  SOPT ("keyFile", GT_OPT_PATH, key_file, 0, "PEM key of certFile"),
  SOPT ("tlsVersion", GT_OPT_TLS_VERSION, tls_version, 0, "lowest TLS version: tls1.1..tls1.3"),
  SOPT ("wsPath", GT_OPT_WS_PATH, ws_path, 0, "URL path of WebSocket tunnels"),
  SOPT ("proxyProtocol", GT_OPT_BOOL, proxy_protocol, 0, "accept PROXY protocol v1/v2 headers"),
  SOPT ("proxyProtocolTrustedCIDRs", GT_OPT_CIDRS, proxy_protocol_trusted_cidrs, 0,
        "sources allowed to send PROXY headers (repeatable)"),
  SOPT ("users", GT_OPT_PATH, users_file, 0, "YAML file of users (id: {secret: ...})"),
  SOPT ("authAPI", GT_OPT_HTTP_URL, auth_api, 0, "HTTP(S) URL that authenticates clients"),
  SOPT ("reconnectTimes", GT_OPT_UINT32, reconnect_times, DEFAULT_RECONNECT_TIMES,
        "failed logins before a lockout"),
  SOPT ("reconnectDuration", GT_OPT_DURATION, reconnect_duration_ms,
        DEFAULT_RECONNECT_DURATION_MS, "window and length of a lockout"),
  SOPT ("speed", GT_OPT_SPEED, speed, 0, "bytes per second per client (0 = unlimited)"),
  SOPT ("apiAddr", GT_OPT_API_ADDR, api_addr, 0, "status API address (host defaults to loopback)"),
  SOPT ("stunAddr", GT_OPT_ADDR, stun_addr, 0, "UDP address answering STUN Binding requests"),
  SOPT ("turn", GT_OPT_BOOL, turn, 0, "also relay as a TURN server on stunAddr (users' secrets)"),
  SOPT ("turnRelayAddr", GT_OPT_STRING, turn_relay_addr, 0,
        "IP address of TURN relayed addresses (default: stunAddr's)"),
  SOPT ("turnAllowLoopback", GT_OPT_BOOL, turn_allow_loopback, 0,
        "let TURN relay to loopback and unspecified addresses"),
  SOPT ("turnMaxAllocations", GT_OPT_UINT32, turn_max_allocations, 10,
        "TURN allocations per user"),
  SOPT ("apiCertFile", GT_OPT_PATH, api_cert_file, 0, "PEM certificate of the API"),
  SOPT ("apiKeyFile", GT_OPT_PATH, api_key_file, 0, "PEM key of apiCertFile"),
  SOPT ("apiTLSVersion", GT_OPT_TLS_VERSION, api_tls_version, 0, "lowest TLS version of the API"),
  SOPT ("drainTimeout", GT_OPT_DURATION, drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_MS,
        "how long a graceful stop waits"),
  SOPT ("timeout", GT_OPT_DURATION, timeout_ms, DEFAULT_SERVER_TIMEOUT_MS,
        "read timeout for connections"),
  SOPT ("handshakeTimeout", GT_OPT_DURATION, handshake_timeout_ms, 10 * 1000,
        "time for a tunnel handshake or a request head (at most timeout)"),
  SOPT ("maxPendingConnections", GT_OPT_UINT32, max_pending, 1024,
        "connections still in their handshake or request head"),
  SOPT ("maxPendingPerAddress", GT_OPT_UINT32, max_pending_per_address, 256,
        "the same, from one source address"),
  SOPT ("logLevel", GT_OPT_LOG_LEVEL, log_level, 0, "trace, debug, info, warn, error, disable"),
  SOPT ("tcpNumber", GT_OPT_UINT16, tcp_number, 0, "tcp ports per user (0 = unlimited)"),
  SOPT ("udpRanges", GT_OPT_PORT_RANGES, udp_ranges, 0,
        "udp ports for clients' udp services, A-B (repeatable)"),
  SOPT ("udpNumber", GT_OPT_UINT16, udp_number, 0, "udp ports per user (0 = unlimited)"),
  SOPT ("udpTimeout", GT_OPT_DURATION, udp_timeout_ms, DEFAULT_UDP_TIMEOUT_MS,
        "idle time after which a user's udp flow is forgotten"),
  SOPT ("connections", GT_OPT_UINT32, connections, DEFAULT_SERVER_CONNECTIONS,
        "tunnels per client"),
  SOPT ("maxHandShakeOptions", GT_OPT_UINT16, max_handshake_options,
        DEFAULT_MAX_HANDSHAKE_OPTIONS, "services per client"),
  SOPT ("allowAnyClient", GT_OPT_BOOL, allow_any_client, 0, "accept unknown client ids"),
#define XOPT SOPT
  XOPT ("webAddr", GT_OPT_API_ADDR, web.addr, 0,
        "admin web UI address (host defaults to loopback)"),
  XOPT ("webCertFile", GT_OPT_WEB_CERT, web.cert_file, 0, "PEM certificate of the web UI, or auto"),
  XOPT ("webKeyFile", GT_OPT_WEB_CERT, web.key_file, 0, "PEM key of webCertFile, or auto"),
  XOPT ("webInsecure", GT_OPT_BOOL, web.insecure, 0,
        "allow plain HTTP on a non-loopback webAddr"),
  XOPT ("admin", GT_OPT_STRING, web.admin, 0, "admin user of the web UI"),
  XOPT ("password", GT_OPT_PASSWORD, web.password, 0, "admin password (stored hashed)"),
#undef XOPT
  SOPT ("httpMUXHeader", GT_OPT_STRING, http_mux_header, 0,
        "HTTP header naming the client (Host: by its first label; other: its whole value)"),
  SOPT ("tcpForwardAllow", GT_OPT_FORWARD_RULES, tcp_forward_allow, 0,
        "CLIENT_ID:HOST_PREFIX a client may tcpForward to, * = any (repeatable)"),
};

static const GtConfigOpt client_opts[] = {
  COPT ("id", GT_OPT_ID, id, 0, "identity on the server"),
  COPT ("secret", GT_OPT_SECRET, secret, 0, "secret of the id"),
  COPT ("remote", GT_OPT_REMOTES, remotes, 0, "server URL, tcp|tls|ws|wss://host:port (list)"),
  COPT ("remoteConnections", GT_OPT_UINT32, remote_connections, DEFAULT_REMOTE_CONNECTIONS,
        "tunnels kept open (1..10)"),
  COPT ("remoteIdleConnections", GT_OPT_UINT32, remote_idle_connections,
        DEFAULT_REMOTE_IDLE_CONNECTIONS, "idle tunnels kept"),
  COPT ("remoteTimeout", GT_OPT_DURATION, remote_timeout_ms, DEFAULT_REMOTE_TIMEOUT_MS,
        "tunnel timeout; pings every half of it"),
  COPT ("reconnectDelay", GT_OPT_DURATION, reconnect_delay_ms, DEFAULT_RECONNECT_DELAY_MS,
        "first reconnect delay, then exponential backoff"),
  COPT ("drainTimeout", GT_OPT_DURATION, drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_MS,
        "how long a graceful stop waits"),
  COPT ("logLevel", GT_OPT_LOG_LEVEL, log_level, 0, "trace, debug, info, warn, error, disable"),
  COPT ("remoteCert", GT_OPT_REMOTE_CERT, remote_cert, 0,
        "server certificate: a PEM file or a sha256: pin"),
  COPT ("remoteAPI", GT_OPT_HTTP_URL, remote_api, 0,
        "HTTP(S) URL that tells the server address (instead of remote)"),
  COPT ("remoteCertInsecure", GT_OPT_BOOL, remote_cert_insecure, 0,
        "do not verify the server certificate"),
  COPT ("remoteSTUN", GT_OPT_STUN_URLS, remote_stun, 0,
        "STUN server for P2P, stun:host[:port] (repeatable); none = P2P refused"),
  COPT ("remoteTURN", GT_OPT_STRING, remote_turn, 0,
        "TURN server (turn:host[:port]) for relayed P2P candidates; credentials from id/secret"),
  COPT ("webrtcConnections", GT_OPT_UINT32, webrtc_connections, DEFAULT_WEBRTC_CONNECTIONS,
        "P2P peers at once (1..50)"),
  COPT ("webrtcConnectionIdleTimeout", GT_OPT_DURATION, webrtc_idle_timeout_ms,
        DEFAULT_WEBRTC_IDLE_TIMEOUT_MS, "close a P2P peer this long after its last channel"),
  COPT ("webrtcMinPort", GT_OPT_UINT16, webrtc_min_port, 0, "lowest ICE UDP port (0 = any)"),
  COPT ("webrtcMaxPort", GT_OPT_UINT16, webrtc_max_port, 0, "highest ICE UDP port (0 = any)"),
  COPT ("tcpForwardAddr", GT_OPT_ADDR, tcp_forward_addr, 0,
        "local TCP listener whose connections go to tcpForwardHostPrefix"),
  COPT ("tcpForwardHostPrefix", GT_OPT_HOST_PREFIX, tcp_forward_host_prefix, 0,
        "host prefix of the other client's service that tcpForwardAddr reaches"),
#define XOPT COPT
  XOPT ("webAddr", GT_OPT_API_ADDR, web.addr, 0,
        "admin web UI address (host defaults to loopback)"),
  XOPT ("webCertFile", GT_OPT_WEB_CERT, web.cert_file, 0, "PEM certificate of the web UI, or auto"),
  XOPT ("webKeyFile", GT_OPT_WEB_CERT, web.key_file, 0, "PEM key of webCertFile, or auto"),
  XOPT ("webInsecure", GT_OPT_BOOL, web.insecure, 0,
        "allow plain HTTP on a non-loopback webAddr"),
  XOPT ("admin", GT_OPT_STRING, web.admin, 0, "admin user of the web UI"),
  XOPT ("password", GT_OPT_PASSWORD, web.password, 0, "admin password (stored hashed)"),
#undef XOPT
};

/* A `services:` entry, or the most recent --local on the command line (`local` itself creates
 * the entry and is not a row). */
static const GtConfigOpt service_opts[] = {
  VOPT ("hostPrefix", GT_OPT_HOST_PREFIX, host_prefix, 0, 0,
        "host prefix (default: the id, for one prefix-less service)"),
  VOPT ("remoteTCPPort", GT_OPT_PORT, remote_tcp_port, 0, 0, "server port for a tcp service"),
  VOPT ("remoteTCPRandom", GT_OPT_BOOL, remote_tcp_random, 0,
        G_STRUCT_OFFSET (GtServiceEntry, random_set),
        "accept a random server port from the pool"),
  VOPT ("remoteUDPPort", GT_OPT_PORT, remote_udp_port, 0, 0, "server port for a udp service"),
  VOPT ("remoteUDPRandom", GT_OPT_BOOL, remote_udp_random, 0,
        G_STRUCT_OFFSET (GtServiceEntry, udp_random_set),
        "accept a random server udp port from the pool"),
  VOPT ("useLocalAsHTTPHost", GT_OPT_BOOL, use_local_as_http_host, 0, 0,
        "rewrite the Host header to the local address"),
  VOPT ("localTimeout", GT_OPT_DURATION, local_timeout_ms, DEFAULT_LOCAL_TIMEOUT_MS, 0,
        "idle timeout of local connections"),
  VOPT ("proxyProtocol", GT_OPT_PROXY_PROTOCOL_VERSION, proxy_protocol, 0, 0,
        "send a PROXY v1|v2 header to the local service"),
};

/* A `users:` entry (the id is its mapping key; --id/--secret on the command line). */
static const GtConfigOpt user_opts[] = {
  UOPT ("secret", GT_OPT_USER_SECRET, secret, 0, "the client's secret"),
  UOPT ("tcp", GT_OPT_TCP_RANGES, tcp_ranges, 0, "private port pool: a list of {range: A-B}"),
  UOPT ("tcpNumber", GT_OPT_INT16, tcp_number, 0, "tcp ports this user may open"),
  UOPT ("udpNumber", GT_OPT_INT16, udp_number, 0, "udp ports this user may open"),
  UOPT ("speed", GT_OPT_SPEED, speed, 0, "bytes per second per client (0 = options.speed)"),
  UOPT ("connections", GT_OPT_INT32, connections, -1,
        "tunnels per client (0 = options.connections)"),
  UOPT ("host", GT_OPT_HOST_RULES, host_regex, 0, "host prefix rules: number, regex, withID"),
};

/* The server's `cluster:` mapping (ours; docs/scale-out.md), --cluster.KEY on the command line. */
static const GtConfigOpt cluster_opts[] = {
  SOPT ("etcd", GT_OPT_HTTP_URLS, cluster_etcd, 0, "etcd member URL, http(s)://host:port (list)"),
  SOPT ("node", GT_OPT_STRING, cluster_node, 0, "this node's name, unique in the cluster"),
  SOPT ("advertise", GT_OPT_STRING, cluster_advertise, 0,
        "host:port where the other nodes reach this node's addr"),
  SOPT ("ttl", GT_OPT_DURATION, cluster_ttl_ms, DEFAULT_CLUSTER_TTL_MS,
        "lease TTL: a dead node's claims vanish after it"),
  SOPT ("secret", GT_OPT_SECRET, cluster_secret, 0, "secret the nodes share for node tunnels"),
  SOPT ("prefix", GT_OPT_STRING, cluster_prefix, 0, "etcd key prefix (default /gt/)"),
  SOPT ("etcdCA", GT_OPT_PATH, cluster_etcd_ca, 0, "PEM CA file for https:// etcd members"),
  SOPT ("etcdCert", GT_OPT_PATH, cluster_etcd_cert, 0, "PEM client certificate for etcd"),
  SOPT ("etcdKey", GT_OPT_PATH, cluster_etcd_key, 0, "PEM key of etcdCert"),
  SOPT ("etcdUser", GT_OPT_STRING, cluster_etcd_user, 0, "etcd user (etcd auth)"),
  SOPT ("etcdPassword", GT_OPT_SECRET, cluster_etcd_password, 0, "password of etcdUser"),
};

/* GT options accepted but not implemented: a loose shape check, no failure. A key that turns a
 * feature on gets a warning; a key that only tunes such a feature (or that GT itself ignores), or
 * that is set to GT's default, changes nothing and gets a debug line (GT users keep them in their
 * files, and a warning at every start would be noise). */
#define COMMON_UNSUPPORTED                                                                      \
  { "sentryDSN", GT_LOOSE_SCALAR, NULL, "" },                                                   \
    { "sentryLevel", GT_LOOSE_LIST, "sentryDSN", NULL },                                        \
    { "sentrySampleRate", GT_LOOSE_SCALAR, "sentryDSN", NULL },                                 \
    { "sentryRelease", GT_LOOSE_SCALAR, "sentryDSN", NULL },                                    \
    { "sentryEnvironment", GT_LOOSE_SCALAR, "sentryDSN", NULL },                                \
    { "sentryServerName", GT_LOOSE_SCALAR, "sentryDSN", NULL },                                 \
    { "sentryDebug", GT_LOOSE_BOOL, "sentryDSN", NULL },                                        \
    { "logFile", GT_LOOSE_SCALAR, NULL, "" },                                                   \
    { "logFileMaxSize", GT_LOOSE_SCALAR, "logFile", NULL },                                     \
    { "logFileMaxCount", GT_LOOSE_SCALAR, "logFile", NULL },                                    \
    { "pprof", GT_LOOSE_BOOL, "*", NULL },                                                      \
    { "signingKey", GT_LOOSE_SCALAR, "*", NULL }

static const GtConfigLoose server_unsupported[] = {
  { "timeoutOnUnidirectionalTraffic", GT_LOOSE_BOOL, NULL, "false" },
  { "stunLogLevel", GT_LOOSE_SCALAR, "*", NULL }, /* stunAddr logs through gt's log level */
  { "bbr", GT_LOOSE_BOOL, "*", NULL },           /* QUIC uses ngtcp2's congestion control */
  COMMON_UNSUPPORTED,
};

static const GtConfigLoose client_unsupported[] = {
  { "webrtcLogLevel", GT_LOOSE_SCALAR, "*", NULL }, /* P2P logs through gt's log level */
  { "webrtcThreadMode", GT_LOOSE_BOOL, "*", NULL },  /* P2P runs on the main loop */
  /* GT's count of P2P peers for tcpForward: gt relays through the server, no peers to build. */
  { "tcpForwardConnections", GT_LOOSE_SCALAR, "*", NULL },
  { "bbr", GT_LOOSE_BOOL, "", NULL }, /* parsed by GT's client, never used */
  COMMON_UNSUPPORTED,
};

/* Help of the listener rows; a listener without one gets a generic line. */
static const char *const listener_help[GT_N_LISTENERS] = {
  [GT_LISTENER_PLAIN] = "tunnels and HTTP users: 80, :80, 127.0.0.1:80, [::1]:80",
  [GT_LISTENER_TLS] = "the same behind TLS (certFile/keyFile, else a generated cert)",
  [GT_LISTENER_SNI] = "TLS pass-through to https services, routed by SNI",
  [GT_LISTENER_QUIC] = "UDP: quic:// tunnels, with tlsAddr's certificate (may share its port)",
};

/* The listener rows, made from gt_listener_info(): a new listener is one row there. */
static const GtConfigOpt *
listener_opts (void)
{
  static GtConfigOpt opts[GT_N_LISTENERS];
  static gsize initialized = 0;

  if (g_once_init_enter (&initialized))
    {
      for (guint i = 0; i < GT_N_LISTENERS; i++)
        {
          const GtListenerInfo *info = gt_listener_info (i);

          opts[i].name = info->key;
          opts[i].type = GT_OPT_ADDR;
          opts[i].offset = info->config_offset;
          opts[i].help = listener_help[i] != NULL ? listener_help[i] : "listen address";
        }
      g_once_init_leave (&initialized, 1);
    }
  return opts;
}

const GtConfigOpt *
_gt_config_opts (GtConfigKeys keys, gsize *n_out)
{
  switch (keys)
    {
    case GT_CONFIG_KEYS_SERVER:
      *n_out = G_N_ELEMENTS (server_opts);
      return server_opts;
    case GT_CONFIG_KEYS_CLIENT:
      *n_out = G_N_ELEMENTS (client_opts);
      return client_opts;
    case GT_CONFIG_KEYS_SERVICE:
      *n_out = G_N_ELEMENTS (service_opts);
      return service_opts;
    case GT_CONFIG_KEYS_USER:
      *n_out = G_N_ELEMENTS (user_opts);
      return user_opts;
    case GT_CONFIG_KEYS_CLUSTER:
      *n_out = G_N_ELEMENTS (cluster_opts);
      return cluster_opts;
    default:
      g_assert_not_reached ();
    }
}

const GtConfigOpt *
_gt_config_opt_find (GtConfigKeys keys, const char *name)
{
  const GtConfigOpt *defs;
  gsize n;

  if (keys == GT_CONFIG_KEYS_SERVER)
    {
      const GtListenerInfo *info = gt_listener_info_lookup (name);

      if (info != NULL)
        return &listener_opts ()[info->kind];
    }
  defs = _gt_config_opts (keys, &n);
  for (gsize i = 0; i < n; i++)
    if (strcmp (defs[i].name, name) == 0)
      return &defs[i];
  return NULL;
}

const GtConfigLoose *
_gt_config_loose_find (GtConfigKeys keys, const char *name)
{
  const GtConfigLoose *defs;
  gsize n;

  if (keys == GT_CONFIG_KEYS_SERVER)
    {
      defs = server_unsupported;
      n = G_N_ELEMENTS (server_unsupported);
    }
  else if (keys == GT_CONFIG_KEYS_CLIENT)
    {
      defs = client_unsupported;
      n = G_N_ELEMENTS (client_unsupported);
    }
  else
    return NULL;
  for (gsize i = 0; i < n; i++)
    if (strcmp (defs[i].name, name) == 0)
      return &defs[i];
  return NULL;
}

/* "sha256:" + 64 hex digits, colons allowed between them; normalized to lower case without
 * colons. */
static gboolean
parse_pin (const char *text, char **out)
{
  GString *hex;

  if (g_ascii_strncasecmp (text, "sha256:", 7) != 0)
    return FALSE;
  hex = g_string_new ("sha256:");
  for (const char *p = text + 7; *p != '\0'; p++)
    {
      if (*p == ':')
        continue;
      if (!g_ascii_isxdigit (*p) || hex->len >= 7 + 64)
        {
          g_string_free (hex, TRUE);
          return FALSE;
        }
      g_string_append_c (hex, g_ascii_tolower (*p));
    }
  if (hex->len != 7 + 64)
    {
      g_string_free (hex, TRUE);
      return FALSE;
    }
  *out = g_string_free (hex, FALSE);
  return TRUE;
}

/* The value an empty string and an unset key of a string type stand for (NULL: none). */
static const char *
string_default (GtConfigOptType type)
{
  switch (type)
    {
    case GT_OPT_LOG_LEVEL:
      return DEFAULT_LOG_LEVEL;
    case GT_OPT_TLS_VERSION:
      return DEFAULT_TLS_VERSION;
    case GT_OPT_WS_PATH:
      return DEFAULT_WS_PATH;
    default:
      return NULL;
    }
}

void
_gt_config_opts_set_defaults (void *config, GtConfigKeys keys)
{
  char *base = config;
  const GtConfigOpt *rows;
  gsize n = 0;

  g_assert (keys == GT_CONFIG_KEYS_SERVER || keys == GT_CONFIG_KEYS_CLIENT);

  rows = _gt_config_opts (keys, &n);
  for (gsize i = 0; i < n; i++)
    {
      const GtConfigOpt *def = &rows[i];
      const char *text = string_default (def->type);
      char **string_field = (char **) (base + def->offset);

      if (text != NULL && *string_field == NULL)
        *string_field = g_strdup (text);
      if (def->zero_default == 0)
        continue;
      if (def->type == GT_OPT_DURATION && *(guint64 *) (base + def->offset) == 0)
        *(guint64 *) (base + def->offset) = (guint64) def->zero_default;
      else if ((def->type == GT_OPT_UINT16 || def->type == GT_OPT_UINT32)
               && *(guint *) (base + def->offset) == 0)
        *(guint *) (base + def->offset) = (guint) def->zero_default;
    }
}

static void
set_string (char **field, const char *value)
{
  char *copy = g_strdup (value);

  g_free (*field);
  *field = copy;
}

/* A secret's old value does not stay in freed memory. */
static void
set_secret (char **field, const char *value)
{
  if (*field != NULL)
    memset (*field, 0, strlen (*field));
  set_string (field, value);
}

static guint64
number_max (GtConfigOptType type)
{
  switch (type)
    {
    case GT_OPT_UINT16:
    case GT_OPT_INT16:
      return G_MAXUINT16;
    case GT_OPT_INT32:
      return G_MAXINT32;
    case GT_OPT_UINT32:
    case GT_OPT_SPEED:
    default:
      return G_MAXUINT32;
    }
}

/* A row's integer field: guint (UINT16/32), gint (INT16/32) or guint64 (SPEED); zero_default
 * replaces 0 except for SPEED (0 = unlimited or inherit). */
static char *
set_number (char *base, const GtConfigOpt *def, const char *text)
{
  guint64 value = 0;
  char *message = _gt_config_parse_uint (text, number_max (def->type), &value);
  gint64 stored;

  if (message != NULL)
    return message;
  stored = value == 0 ? def->zero_default : (gint64) value;
  if (def->type == GT_OPT_SPEED)
    *(guint64 *) (base + def->offset) = value;
  else if (def->type == GT_OPT_INT16 || def->type == GT_OPT_INT32)
    *(gint *) (base + def->offset) = (gint) stored;
  else
    *(guint *) (base + def->offset) = (guint) stored;
  return NULL;
}

static const char *
tls_version (const GtConfigOpt *def, const char *text, char **warning)
{
  static const char *const versions[] = { "tls1.1", "tls1.2", "tls1.3" };

  for (guint i = 0; i < G_N_ELEMENTS (versions); i++)
    if (g_ascii_strcasecmp (text, versions[i]) == 0)
      return versions[i];
  if (*text != '\0')
    *warning = g_strdup_printf ("unknown %s '%s': tls1.2 is used (use tls1.1, tls1.2 or "
                                "tls1.3)",
                                def->name, text);
  return string_default (def->type);
}

static char *
parse_pin_value (const GtConfigOpt *def, const char *text, char **out)
{
  if (!parse_pin (text, out))
    return g_strdup_printf ("bad %s pin '%s': use sha256: followed by 64 hex digits (colons "
                            "allowed)",
                            def->name, text);
  return NULL;
}

char *
_gt_config_opt_set (void *target, const GtConfigOpt *def, const char *text, char **warning)
{
  char *base = target;
  char *message = NULL;
  char **string_field = (char **) (base + def->offset);
  char *parsed = NULL; /* a new value for string_field */

  switch (def->type)
    {
    case GT_OPT_STRING:
    case GT_OPT_PATH:
    case GT_OPT_WEB_CERT:
      set_string (string_field, *text != '\0' ? text : NULL);
      break;
    case GT_OPT_TLS_VERSION:
      set_string (string_field, tls_version (def, text, warning));
      break;
    case GT_OPT_ADDR:
    case GT_OPT_API_ADDR:
      /* GT's `-addr ""`: no such listener (it may replace the file's one). */
      if (*text == '\0')
        {
          set_string (string_field, NULL);
          break;
        }
      message = _gt_config_parse_listen_addr (text,
                                              def->type == GT_OPT_ADDR ? "0.0.0.0" : "127.0.0.1",
                                              &parsed);
      /* A server listener binds without a resolver (alone or under the manager): a name other
       * than localhost is refused here, at its place, rather than when the socket opens. */
      if (message == NULL && def->type == GT_OPT_ADDR)
        {
          g_autoptr (GInetSocketAddress) sa = gt_listen_address_parse (parsed, NULL);

          if (sa == NULL)
            {
              message = g_strdup_printf ("bad listen address '%s': the host must be an IP "
                                         "address or localhost (gt does not look up names for "
                                         "its listeners)",
                                         text);
              g_clear_pointer (&parsed, g_free);
            }
        }
      break;
    case GT_OPT_WS_PATH:
      if (*text == '\0')
        set_string (string_field, string_default (def->type));
      else if (!_gt_config_url_path_is_sane (text))
        message = g_strdup_printf ("bad %s '%s': it must start with '/' and contain no space or "
                                   "'#'",
                                   def->name, text);
      else
        set_string (string_field, text);
      break;
    case GT_OPT_HTTP_URL:
      if (*text == '\0')
        set_string (string_field, NULL);
      else if ((message = _gt_config_parse_http_url (def->name, text)) == NULL)
        set_string (string_field, text);
      break;
    case GT_OPT_CIDRS:
      if ((message = _gt_config_parse_cidr (text)) == NULL)
        _gt_config_strv_append ((char ***) (base + def->offset), text);
      break;
    case GT_OPT_HTTP_URLS:
      if ((message = _gt_config_parse_http_url (def->name, text)) == NULL)
        _gt_config_strv_append ((char ***) (base + def->offset), text);
      break;
    case GT_OPT_PORT_RANGES:
      {
        GArray **ranges = (GArray **) (base + def->offset);
        GtPortRange range;

        if ((message = _gt_config_parse_range (text, &range)) != NULL)
          break;
        if (*ranges == NULL)
          *ranges = g_array_new (FALSE, FALSE, sizeof (GtPortRange));
        g_array_append_val (*ranges, range);
        break;
      }
    case GT_OPT_STUN_URLS:
      if ((message = _gt_config_parse_stun_url (text, NULL, NULL)) == NULL)
        _gt_config_strv_append ((char ***) (base + def->offset), text);
      break;
    case GT_OPT_FORWARD_RULES:
      if ((message = _gt_config_parse_forward_rule (text)) == NULL)
        _gt_config_strv_append ((char ***) (base + def->offset), text);
      break;
    case GT_OPT_REMOTE_CERT:
      if (*text == '\0')
        set_string (string_field, NULL);
      else if (_gt_config_looks_like_pin (text))
        message = parse_pin_value (def, text, &parsed);
      else
        set_string (string_field, text);
      break;
    case GT_OPT_DURATION:
      {
        guint64 ms = 0;
        message = _gt_config_parse_duration (text, &ms);
        if (message == NULL)
          *(guint64 *) (base + def->offset) = ms == 0 ? (guint64) def->zero_default : ms;
        break;
      }
    case GT_OPT_LOG_LEVEL:
      message = _gt_config_parse_log_level (text, &parsed);
      break;
    case GT_OPT_UINT16:
    case GT_OPT_UINT32:
    case GT_OPT_INT16:
    case GT_OPT_INT32:
    case GT_OPT_SPEED:
      message = set_number (base, def, text);
      break;
    case GT_OPT_BOOL:
      message = _gt_config_parse_bool (text, (gboolean *) (base + def->offset));
      break;
    case GT_OPT_PASSWORD:
      if (strlen (text) > MAX_PASSWORD_LEN)
        message = g_strdup_printf ("%s must be at most %d bytes", def->name, MAX_PASSWORD_LEN);
      else
        set_secret (string_field, *text != '\0' ? text : NULL);
      break;
    case GT_OPT_ID:
    case GT_OPT_SECRET:
    case GT_OPT_USER_SECRET:
      /* A client without a secret (GT's empty default) makes one up when it starts. */
      if (def->type == GT_OPT_SECRET && *text == '\0')
        set_secret (string_field, NULL);
      else if (*text == '\0'
               || strlen (text) > (def->type == GT_OPT_ID ? MAX_ID_LEN : MAX_SECRET_LEN))
        message = def->type == GT_OPT_USER_SECRET
                    ? g_strdup_printf ("secret of user '%s' must be 1 to %d bytes",
                                       ((GtUserConfig *) base)->id, MAX_SECRET_LEN)
                    : g_strdup_printf ("%s must be 1 to %d bytes", def->name,
                                       def->type == GT_OPT_ID ? MAX_ID_LEN : MAX_SECRET_LEN);
      else
        set_secret (string_field, text);
      break;
    case GT_OPT_HOST_PREFIX:
      message = _gt_config_parse_host_prefix (text, &parsed);
      break;
    case GT_OPT_PORT:
      message = _gt_config_parse_port (text, TRUE, (guint16 *) (base + def->offset));
      break;
    case GT_OPT_PROXY_PROTOCOL_VERSION:
      message = _gt_config_parse_proxy_protocol_version (text, (guint *) (base + def->offset));
      break;
    case GT_OPT_REMOTES:
      {
        GtRemote *remote = NULL;
        message = _gt_config_parse_remote (text, &remote);
        if (message == NULL)
          g_ptr_array_add (*(GPtrArray **) (base + def->offset), remote);
        break;
      }
    case GT_OPT_TCP_RANGES:
    case GT_OPT_HOST_RULES:
    default:
      g_assert_not_reached ();
    }
  if (parsed != NULL)
    {
      g_free (*string_field);
      *string_field = parsed;
    }
  if (message == NULL && def->set_offset != 0)
    *(gboolean *) (base + def->set_offset) = TRUE;
  return message;
}

/* ------------------------------------------------------------------------------------------ */
/* Help text from the tables */

static const char *
metavar (GtConfigOptType type)
{
  switch (type)
    {
    case GT_OPT_ADDR:
    case GT_OPT_API_ADDR:
      return "ADDR";
    case GT_OPT_DURATION:
      return "DURATION";
    case GT_OPT_LOG_LEVEL:
      return "LEVEL";
    case GT_OPT_UINT16:
    case GT_OPT_UINT32:
    case GT_OPT_INT16:
    case GT_OPT_INT32:
    case GT_OPT_SPEED:
      return "N";
    case GT_OPT_PORT:
      return "PORT";
    case GT_OPT_ID:
      return "ID";
    case GT_OPT_SECRET:
    case GT_OPT_USER_SECRET:
    case GT_OPT_PASSWORD:
      return "SECRET";
    case GT_OPT_REMOTES:
    case GT_OPT_HTTP_URL:
    case GT_OPT_HTTP_URLS:
      return "URL";
    case GT_OPT_STRING:
      return "TEXT";
    case GT_OPT_PATH:
      return "FILE";
    case GT_OPT_WEB_CERT:
      return "FILE|auto";
    case GT_OPT_TLS_VERSION:
      return "VERSION";
    case GT_OPT_WS_PATH:
      return "PATH";
    case GT_OPT_CIDRS:
      return "CIDR";
    case GT_OPT_STUN_URLS:
      return "URL";
    case GT_OPT_FORWARD_RULES:
      return "ID:PREFIX";
    case GT_OPT_REMOTE_CERT:
      return "FILE|PIN";
    case GT_OPT_HOST_PREFIX:
      return "NAME";
    case GT_OPT_PROXY_PROTOCOL_VERSION:
      return "v1|v2";
    case GT_OPT_PORT_RANGES:
      return "A-B";
    case GT_OPT_BOOL:
    case GT_OPT_TCP_RANGES:
    case GT_OPT_HOST_RULES:
    default:
      return NULL;
    }
}

static void
describe_rows (GString *out, const GtConfigOpt *rows, gsize n, const char *prefix)
{
  for (gsize i = 0; i < n; i++)
    {
      const char *value = metavar (rows[i].type);
      g_autofree char *left = g_strdup_printf ("--%s%s%s%s", prefix, rows[i].name,
                                               value != NULL ? " " : "",
                                               value != NULL ? value : "");

      g_string_append_printf (out, "  %-34s %s\n", left, rows[i].help);
    }
}

char *
gt_config_describe_options (GtConfigKind kind)
{
  GString *out = g_string_new (NULL);
  const GtConfigOpt *rows;
  gsize n = 0;

  g_return_val_if_fail (kind == GT_CONFIG_KIND_SERVER || kind == GT_CONFIG_KIND_CLIENT, NULL);

  if (kind == GT_CONFIG_KIND_SERVER)
    {
      describe_rows (out, listener_opts (), GT_N_LISTENERS, "");
      rows = _gt_config_opts (GT_CONFIG_KEYS_SERVER, &n);
      describe_rows (out, rows, n, "");
      g_string_append (out, "Scale-out (YAML cluster: mapping; docs/scale-out.md):\n");
      rows = _gt_config_opts (GT_CONFIG_KEYS_CLUSTER, &n);
      describe_rows (out, rows, n, "cluster.");
      return g_string_free (out, FALSE);
    }
  rows = _gt_config_opts (GT_CONFIG_KEYS_CLIENT, &n);
  describe_rows (out, rows, n, "");
  g_string_append (out, "Per service, applying to the most recent --local:\n");
  g_string_append_printf (out, "  %-34s %s\n", "--local URL",
                          "http://host[:port], https://host[:port], tcp://host:port, "
                          "udp://host:port");
  rows = _gt_config_opts (GT_CONFIG_KEYS_SERVICE, &n);
  describe_rows (out, rows, n, "");
  return g_string_free (out, FALSE);
}

/* ------------------------------------------------------------------------------------------ */
/* The tables for other layers (admin UI, D-Bus) */

static const char *
value_kind (GtConfigOptType type)
{
  switch (type)
    {
    case GT_OPT_BOOL:
      return "bool";
    case GT_OPT_UINT16:
    case GT_OPT_UINT32:
    case GT_OPT_INT16:
    case GT_OPT_INT32:
    case GT_OPT_SPEED:
    case GT_OPT_PORT:
      return "number";
    case GT_OPT_DURATION:
      return "duration";
    case GT_OPT_SECRET:
    case GT_OPT_USER_SECRET:
    case GT_OPT_PASSWORD:
      return "secret";
    case GT_OPT_REMOTES:
    case GT_OPT_CIDRS:
    case GT_OPT_STUN_URLS:
    case GT_OPT_HTTP_URLS:
    case GT_OPT_FORWARD_RULES:
    case GT_OPT_PORT_RANGES:
      return "list";
    case GT_OPT_TCP_RANGES:
      return "ranges";
    case GT_OPT_HOST_RULES:
      return "host-rules";
    case GT_OPT_LOG_LEVEL:
      return "log-level";
    case GT_OPT_TLS_VERSION:
      return "tls-version";
    default:
      return "string";
    }
}

static void
add_rows (GVariantBuilder *b, const GtConfigOpt *rows, gsize n)
{
  for (gsize i = 0; i < n; i++)
    g_variant_builder_add (b, "(sss)", rows[i].name, value_kind (rows[i].type), rows[i].help);
}

GVariant *
gt_config_list_keys (GtConfigKind kind, const char *section)
{
  GVariantBuilder b;
  const GtConfigOpt *rows;
  gsize n = 0;

  g_return_val_if_fail (section != NULL, NULL);
  g_variant_builder_init (&b, G_VARIANT_TYPE ("a(sss)"));
  if (strcmp (section, "options") == 0 && kind == GT_CONFIG_KIND_SERVER)
    {
      add_rows (&b, listener_opts (), GT_N_LISTENERS);
      rows = _gt_config_opts (GT_CONFIG_KEYS_SERVER, &n);
      add_rows (&b, rows, n);
    }
  else if (strcmp (section, "options") == 0 && kind == GT_CONFIG_KIND_CLIENT)
    {
      rows = _gt_config_opts (GT_CONFIG_KEYS_CLIENT, &n);
      add_rows (&b, rows, n);
    }
  else if (strcmp (section, "users") == 0 && kind == GT_CONFIG_KIND_SERVER)
    {
      rows = _gt_config_opts (GT_CONFIG_KEYS_USER, &n);
      add_rows (&b, rows, n);
    }
  else if (strcmp (section, "services") == 0 && kind == GT_CONFIG_KIND_CLIENT)
    {
      g_variant_builder_add (&b, "(sss)", "local", "string",
                             "local service URL: http://, https://, tcp:// or udp://host:port");
      rows = _gt_config_opts (GT_CONFIG_KEYS_SERVICE, &n);
      add_rows (&b, rows, n);
    }
  return g_variant_ref_sink (g_variant_builder_end (&b));
}
