/* gt-config.h: GT-compatible configuration model for server and client, YAML + command line. */
#pragma once

#include <gio/gio.h>
#include "gt-types.h"

G_BEGIN_DECLS

#define GT_CONFIG_ERROR (gt_config_error_quark ())
GQuark gt_config_error_quark (void);

typedef enum
{
  GT_CONFIG_ERROR_IO,      /* file cannot be read */
  GT_CONFIG_ERROR_SYNTAX,  /* YAML syntax error */
  GT_CONFIG_ERROR_TYPE,    /* wrong type for a key (mapping where scalar expected, ...) */
  GT_CONFIG_ERROR_VALUE,   /* bad value (port, range, duration, url, ...) */
  GT_CONFIG_ERROR_INVALID, /* inconsistent config (overlapping ranges, missing key, ...) */
  GT_CONFIG_ERROR_USAGE,   /* command line mistake */
} GtConfigErrorEnum;

typedef enum
{
  GT_CONFIG_KIND_UNKNOWN = 0,
  GT_CONFIG_KIND_SERVER,
  GT_CONFIG_KIND_CLIENT,
} GtConfigKind;

/* A diagnostic with its place: reusable by the CLI, the web UI and D-Bus.
 * file is NULL for data not from a file, line/column are 1-based, 0 when unknown
 * (e.g. values from the command line). */
typedef struct
{
  char *file;
  guint line;
  guint column;
  char *message;
  gboolean debug; /* a warning not worth one at every start (a GT key that changes nothing
                   * here): shown at log level debug */
} GtConfigIssue;

void gt_config_issue_free (GtConfigIssue *issue);
/* "FILE:LINE:COLUMN: message", or "command line: message" when there is no file. */
char *gt_config_issue_to_string (const GtConfigIssue *issue);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtConfigIssue, gt_config_issue_free)

typedef struct
{
  guint16 first;
  guint16 last;
} GtPortRange;

/* The web admin UI of a server or client (GT's webAddr, admin, password keys). */
typedef struct
{
  char *addr;        /* webAddr: "7000" → "127.0.0.1:7000"; NULL = no admin UI */
  char *cert_file;   /* webCertFile: PEM, or "auto" for a generated certificate */
  char *key_file;    /* webKeyFile: PEM, or "auto" */
  gboolean insecure; /* webInsecure (ours): allow plain HTTP on a non-loopback webAddr */
  char *admin;       /* admin user name */
  char *password;    /* a "pbkdf2-sha256$..." hash (or GT's plaintext until saved); never logged */
} GtWebConfig;

typedef struct
{
  char *id;
  char *secret;          /* never logged */
  GArray *tcp_ranges;    /* GtPortRange; NULL = use the global pool */
  gint tcp_number;       /* -1 = inherit options.tcpNumber */
  gint udp_number;       /* -1 = inherit options.udpNumber */
  guint line, column;    /* where the user was defined (0 = command line) */
  guint64 speed;         /* bytes/s per client; 0 = inherit options.speed */
  gint connections;      /* -1 = inherit options.connections */
  gint host_number;      /* -1 = inherit host.number */
  char **host_regex;     /* NULL = inherit host.regex (compiled at validate) */
  gint host_with_id;     /* -1 = inherit host.withID, else 0/1 */
} GtUserConfig;

typedef struct
{
  char *config_path;       /* file it was loaded from, or NULL */
  char *addr;              /* "host:port" normalized ("80" → "0.0.0.0:80"); NULL = unset */
  guint64 timeout_ms;      /* options.timeout, default 90 s */
  char *log_level;         /* options.logLevel, default "info" */
  GPtrArray *users;        /* GtUserConfig*, in definition order, ids unique */
  GArray *tcp_ranges;      /* global pool: top-level tcp: + --tcpRange; GtPortRange */
  guint tcp_number;        /* options.tcpNumber, 0 = unlimited */
  GArray *udp_ranges;      /* options.udpRanges (ours): the pool of udp ports; GtPortRange */
  guint udp_number;        /* options.udpNumber (ours): udp ports per user, 0 = unlimited */
  guint64 udp_timeout_ms;  /* options.udpTimeout (ours): idle time after which a user's udp
                            * flow is forgotten, default 60 s */
  guint connections;       /* options.connections, default 10 */
  guint max_handshake_options; /* options.maxHandShakeOptions, default 600 */
  gboolean allow_any_client;   /* options.allowAnyClient */
  GPtrArray *warnings;     /* GtConfigIssue*: unknown keys, ignored keys */
  char *tls_addr;          /* options.tlsAddr, normalized like addr; NULL = unset */
  char *cert_file;         /* options.certFile (PEM); NULL with tls_addr = generated cert */
  char *key_file;          /* options.keyFile (PEM) */
  char *tls_version;       /* options.tlsVersion: "tls1.1", "tls1.2" (default), "tls1.3" */
  char *sni_addr;          /* options.sniAddr: TLS pass-through routed by SNI; NULL = unset */
  char *quic_addr;         /* options.quicAddr (UDP): quic:// tunnels, same certificate as tlsAddr */
  char *ws_path;           /* gt's options.wsPath: WebSocket tunnel path, default "/gt-tunnel" */
  gboolean proxy_protocol; /* gt's options.proxyProtocol: accept PROXY v1/v2 headers */
  char **proxy_protocol_trusted_cidrs; /* gt's options.proxyProtocolTrustedCIDRs; NULL = none */
  char *users_file;        /* options.users: path of a users YAML file (read by validate) */
  char *auth_api;          /* options.authAPI: http:// or https:// URL; NULL = unset */
  char *http_mux_header;   /* options.httpMUXHeader: NULL or "Host" = route by the Host prefix */
  char **tcp_forward_allow; /* options.tcpForwardAllow (ours): "ID:PREFIX" rules, * = any; which
                             * clients may open FORWARD streams to which prefixes; NULL = only a
                             * client's own prefixes */
  guint reconnect_times;   /* options.reconnectTimes, default 3 */
  guint64 reconnect_duration_ms; /* options.reconnectDuration, default 5 min */
  guint64 speed;           /* options.speed: bytes/s per client, 0 = unlimited */
  guint host_number;       /* host.number / --hostNumber, 0 = unlimited */
  char **host_regex;       /* host.regex ∪ --hostRegex; NULL = any prefix */
  gboolean host_with_id;   /* host.withID / --hostWithID */
  char *api_addr;          /* options.apiAddr: "8081" → "127.0.0.1:8081"; NULL = unset */
  char *stun_addr;         /* options.stunAddr: UDP STUN server, normalized like addr; NULL = unset */
  gboolean turn;           /* options.turn (ours): TURN relay on stunAddr */
  char *turn_relay_addr;   /* options.turnRelayAddr (ours): IP of relayed addresses; NULL = stunAddr's */
  gboolean turn_allow_loopback; /* options.turnAllowLoopback (ours): relay to loopback peers */
  guint turn_max_allocations;   /* options.turnMaxAllocations (ours): per user, default 10 */
  char *api_cert_file;     /* options.apiCertFile */
  char *api_key_file;      /* options.apiKeyFile */
  char *api_tls_version;   /* options.apiTLSVersion, default "tls1.2" */
  guint64 drain_timeout_ms; /* gt's options.drainTimeout, default 30 s */
  guint64 handshake_timeout_ms; /* options.handshakeTimeout (ours), default 10 s, ≤ timeout */
  guint max_pending;            /* options.maxPendingConnections (ours), default 1024 */
  guint max_pending_per_address; /* options.maxPendingPerAddress (ours), default 256 */
  /* cluster: (ours, docs/scale-out.md); cluster_etcd NULL = a single server, no cluster. */
  char **cluster_etcd;          /* cluster.etcd: http(s):// URLs of etcd members */
  char *cluster_node;           /* cluster.node: this node's name, unique in the cluster */
  char *cluster_advertise;      /* cluster.advertise: host:port other nodes reach addr on */
  guint64 cluster_ttl_ms;       /* cluster.ttl: lease TTL, default 10 s */
  char *cluster_secret;         /* cluster.secret: shared by the nodes, never logged */
  char *cluster_prefix;         /* cluster.prefix: etcd key prefix, default "/gt/" */
  char *cluster_etcd_ca;        /* cluster.etcdCA: PEM CA file for https:// etcd */
  char *cluster_etcd_cert;      /* cluster.etcdCert, cluster.etcdKey: client certificate */
  char *cluster_etcd_key;
  char *cluster_etcd_user;      /* cluster.etcdUser, cluster.etcdPassword: etcd auth */
  char *cluster_etcd_password;
  GtWebConfig web;              /* options.webAddr, webCertFile, ..., admin, password */
} GtServerConfig;

typedef struct
{
  GtServiceKind kind;
  char *local_url;          /* as given */
  char *local_host;         /* host to dial */
  guint16 local_port;       /* port to dial (http default 80, https 443) */
  char *host_prefix;        /* http/https: resolved prefix (defaults to id for the first
                               prefix-less service); NULL for tcp */
  guint16 remote_tcp_port;  /* tcp */
  gboolean remote_tcp_random; /* tcp: default TRUE iff remote_tcp_port == 0 */
  guint16 remote_udp_port;  /* udp (ours): server port, 0 = any from the pool */
  gboolean remote_udp_random; /* udp: default TRUE iff remote_udp_port == 0 */
  gboolean use_local_as_http_host;
  guint64 local_timeout_ms; /* default 120 s */
  guint line, column;       /* where the service was defined (0 = command line) */
  guint proxy_protocol;     /* gt's service key proxyProtocol: 0 none, 1 = v1, 2 = v2 */
} GtServiceConfig;

typedef struct
{
  char *host;
  guint16 port;
  char *scheme;   /* "tcp", "tls", "ws" or "wss" */
  char *path;     /* ws/wss: URL path, default "/gt-tunnel"; NULL for tcp/tls */
} GtRemote;

void gt_remote_free (GtRemote *remote);
/* "host:port", "tcp://host:port", ... as a client's remote; NULL with *message on error. */
GtRemote *gt_remote_parse (const char *text, char **message);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtRemote, gt_remote_free)

typedef struct
{
  char *config_path;
  char *id;
  char *secret;              /* never logged */
  GPtrArray *remotes;        /* GtRemote*; "host" → tcp://host:80 */
  guint remote_connections;  /* default 3, clamped 1..10 */
  guint remote_idle_connections; /* default 1, clamped 1..remote_connections */
  guint64 remote_timeout_ms; /* default 45 s */
  guint64 reconnect_delay_ms; /* default 5 s */
  guint64 drain_timeout_ms;  /* gt's options.drainTimeout: graceful stop waits this long, 30 s */
  char *log_level;           /* default "info" */
  GPtrArray *services;       /* GtServiceConfig* */
  GPtrArray *warnings;       /* GtConfigIssue* */
  char *remote_cert;         /* options.remoteCert: PEM file path or "sha256:<hex>" pin */
  gboolean remote_cert_insecure; /* options.remoteCertInsecure */
  char **remote_stun;        /* options.remoteSTUN: "stun:host[:port]" URLs; NULL = P2P refused */
  char *remote_turn;         /* options.remoteTURN (ours): "turn:host[:port]"; NULL = no TURN */
  guint webrtc_connections;  /* options.webrtcConnections: P2P peers at once, default 30 (1..50) */
  guint64 webrtc_idle_timeout_ms; /* options.webrtcConnectionIdleTimeout, default 5 min */
  guint webrtc_min_port;     /* options.webrtcMinPort: ICE UDP ports, 0 = any */
  guint webrtc_max_port;     /* options.webrtcMaxPort */
  GtWebConfig web;               /* options.webAddr, webCertFile, ..., admin, password */
  char *remote_api;          /* options.remoteAPI: http(s) URL telling the server; NULL = unset */
  char *tcp_forward_addr;    /* options.tcpForwardAddr: local listener, "host:port"; NULL = off */
  char *tcp_forward_host_prefix; /* options.tcpForwardHostPrefix: where its connections go */
} GtClientConfig;

/* gt_remote_parse with a GError (GT_CONFIG_ERROR_VALUE) instead of a message. */
GtRemote *gt_remote_parse_url (const char *text, GError **error);

GtServerConfig *gt_server_config_new (void);  /* defaults */
void gt_server_config_free (GtServerConfig *config);
GtClientConfig *gt_client_config_new (void);  /* defaults */
void gt_client_config_free (GtClientConfig *config);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtServerConfig, gt_server_config_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtClientConfig, gt_client_config_free)

/* Tells what a YAML file is: `type:` key, else `services:` means client, else server. */
GtConfigKind gt_config_detect_kind_file (const char *path, GError **error);
GtConfigKind gt_config_detect_kind_data (const char *data, gssize len, GError **error);

/* Load YAML into an existing config (defaults already set). On failure the GError message is
 * "FILE:LINE:COLUMN: what is wrong" and *issue_out (if not NULL) receives the structured form.
 * Unknown keys are added to config->warnings (and do not fail). */
gboolean gt_server_config_load_file (GtServerConfig *config, const char *path,
                                     GtConfigIssue **issue_out, GError **error);
gboolean gt_server_config_load_data (GtServerConfig *config, const char *data, gssize len,
                                     const char *filename, GtConfigIssue **issue_out,
                                     GError **error);
gboolean gt_client_config_load_file (GtClientConfig *config, const char *path,
                                     GtConfigIssue **issue_out, GError **error);
gboolean gt_client_config_load_data (GtClientConfig *config, const char *data, gssize len,
                                     const char *filename, GtConfigIssue **issue_out,
                                     GError **error);

/* Command-line options (GT names, `-name`, `--name`, `-name=value`, `--name value`; bare
 * booleans). argv excludes the subcommand; `-c/--config FILE` is handled by the caller and must
 * have been removed (see gt_config_extract_config_path). Options override file values.
 * Client: `--local URL` starts a service; `--hostPrefix`, `--remoteTCPPort`, `--remoteTCPRandom`,
 * `--useLocalAsHTTPHost`, `--localTimeout` apply to the most recent `--local`.
 * Server: `--id`/`--secret` repeatable, paired by position; `--tcpRange` repeatable. */
gboolean gt_server_config_apply_args (GtServerConfig *config, int argc, char **argv,
                                      GError **error);
gboolean gt_client_config_apply_args (GtClientConfig *config, int argc, char **argv,
                                      GError **error);

/* Help for the command line made from the key tables: one "  --name VALUE  what" line per
 * option of a server or client (the client's per-service options after the others). The
 * options with their own rules (--id/--secret of the server, --tcpRange, --host*) are not in
 * it. Free with g_free(). */
char *gt_config_describe_options (GtConfigKind kind);

/* The keys of a section ("options"; "users" of a server; "services" of a client) from the key
 * tables, as a(sss): name, kind of value ("string", "number", "bool", "duration", "secret",
 * "list", "ranges", "host-rules", "log-level", "tls-version"), help. Empty for other sections. */
GVariant *gt_config_list_keys (GtConfigKind kind, const char *section);

/* Pulls `-c FILE`, `--config FILE`, `-c=FILE`, `--config=FILE`, `-config FILE` out of argv
 * (argv is modified in place, *argc updated). Returns the path (or NULL). */
char *gt_config_extract_config_path (int *argc, char **argv, GError **error);

/* Final validation after file + args: required keys, defaults that depend on other keys (client
 * default prefix = id), two prefix-less http services, duplicate prefixes, tcp services without
 * port and without random, overlapping ranges. Errors carry the place of the offending entry. */
gboolean gt_server_config_validate (GtServerConfig *config, GtConfigIssue **issue_out,
                                    GError **error);
gboolean gt_client_config_validate (GtClientConfig *config, GtConfigIssue **issue_out,
                                    GError **error);

/* Control APIs never show secrets: gt_config_redact_secrets returns the YAML document with the
 * value of every `secret:` key replaced by the quoted placeholder; gt_config_restore_secrets puts
 * back, in an edited document, the value old_text had at the same key path wherever the
 * placeholder is still there (error "LINE:COLUMN: ..." when old_text has none). Both fail on a
 * YAML syntax error. */
#define GT_CONFIG_SECRET_PLACEHOLDER "(unchanged)"
/* A client's `secret: "(keyring)"`: the secret is in the user's keyring (src/dbus/gt-keyring.h),
 * not in the file. */
#define GT_CONFIG_SECRET_KEYRING "(keyring)"
char *gt_config_redact_secrets (const char *text, gssize len, GError **error);
char *gt_config_restore_secrets (const char *text, gssize len, const char *old_text,
                                 gssize old_len, GError **error);
/* text with the `secret:` value at path ("options/secret", as in the places above) replaced by
 * value, double-quoted (value needs no escaping: no quote, backslash or control character); a
 * copy of text when it has no secret there. NULL with error on a YAML syntax error. */
char *gt_config_replace_secret (const char *text, gssize len, const char *path,
                                const char *value, GError **error);

/* Helpers shared with other parsers. */
gboolean gt_parse_duration (const char *text, guint64 *ms_out); /* Go syntax: 90s, 1m30s, 250ms, 1h */
/* "80" → "0.0.0.0:80", ":80" → "0.0.0.0:80", "127.0.0.1:80", "[::1]:80" */
char *gt_normalize_listen_addr (const char *text, GError **error);
/* TRUE for a normalized listen address on loopback ("127.0.0.1:80", "[::1]:80", "localhost:80"). */
gboolean gt_listen_addr_is_loopback (const char *addr);
/* The socket address of a normalized server listen address, without a resolver: an IP address,
 * or localhost (127.0.0.1). The server and the manager both bind through it. */
GInetSocketAddress *gt_listen_address_parse (const char *addr, GError **error);
gboolean gt_parse_port_range (const char *text, GtPortRange *range, GError **error);

/* Reads config->users_file (map id → user, same schema as `users:`) and merges it: an entry
 * replaces the config's entry of the same id, command-line users (--id/--secret, line 0) keep
 * their secret over it. Called by gt_server_config_validate when users_file is set; errors
 * carry the users file's own FILE:LINE:COLUMN. Loading twice is harmless. */
gboolean gt_server_config_load_users_file (GtServerConfig *config, GtConfigIssue **issue_out,
                                           GError **error);

/* remoteTURN's host and port (validated by gt_client_config_validate); FALSE when unset. */
gboolean gt_client_config_get_turn (const GtClientConfig *config, char **host_out,
                                    guint16 *port_out);
const GtUserConfig *gt_server_config_find_user (const GtServerConfig *config, const char *id);

G_END_DECLS
