/* gt-config-private.h: internals shared by the config model, key tables, YAML, command line
 * and validation (gt-config*.c only). */
#pragma once

#include "gt-config.h"

G_BEGIN_DECLS

#define DEFAULT_SERVER_TIMEOUT_MS (90 * 1000)
#define DEFAULT_SERVER_CONNECTIONS 10
#define DEFAULT_MAX_HANDSHAKE_OPTIONS 600
#define DEFAULT_REMOTE_CONNECTIONS 3
#define MAX_REMOTE_CONNECTIONS 10
#define DEFAULT_REMOTE_IDLE_CONNECTIONS 1
#define DEFAULT_REMOTE_TIMEOUT_MS (45 * 1000)
#define DEFAULT_RECONNECT_DELAY_MS (5 * 1000)
#define DEFAULT_LOCAL_TIMEOUT_MS (120 * 1000)
#define DEFAULT_UDP_TIMEOUT_MS (60 * 1000)
#define DEFAULT_WEBRTC_CONNECTIONS 30
#define DEFAULT_WEBRTC_IDLE_TIMEOUT_MS (5 * 60 * 1000)
#define DEFAULT_LOG_LEVEL "info"
#define DEFAULT_TLS_VERSION "tls1.2"
#define DEFAULT_WS_PATH "/gt-tunnel"
#define DEFAULT_RECONNECT_TIMES 3
#define DEFAULT_RECONNECT_DURATION_MS (5 * 60 * 1000)
#define DEFAULT_DRAIN_TIMEOUT_MS (30 * 1000)
#define MAX_ID_LEN 200
#define MAX_SECRET_LEN 200
#define MAX_PREFIX_LEN 63
#define DEFAULT_CLUSTER_TTL_MS (10 * 1000)
#define DEFAULT_CLUSTER_PREFIX "/gt/"
#define MAX_PASSWORD_LEN 256


/* ------------------------------------------------------------------------------------------ */
/* The model's private parts (gt-config.c) */

typedef struct
{
  guint line, column;
} GtConfigPlace;

/* Where a value came from, for errors found by validate(): file NULL = command line. */
typedef struct
{
  char *file;
  guint line, column;
} GtConfigKeyPlace;

/* The public structs with what only the config code needs. Configs always come from *_new(). */
typedef struct
{
  GtServerConfig pub;
  GHashTable *places;             /* "certFile", "host.regex.0", "users.ID.host.regex.0" ... */
  gboolean host_number_from_file; /* GT: YAML host.number/withID win over the command line */
  gboolean host_with_id_from_file;
} GtServerConfigPriv;

typedef struct
{
  GtClientConfig pub;
  GHashTable *places; /* "remoteCert" */
} GtClientConfigPriv;

/* A user with the places of its tcp ranges, for overlap messages. */
typedef struct
{
  GtUserConfig pub;
  GArray *range_places; /* GtConfigPlace, parallel to pub.tcp_ranges */
  char *file;           /* file the user was defined in (config or users file) */
  gboolean from_cli;    /* --id/--secret: a users file does not replace it */
} GtUserEntry;

/* A service with what the loaders need to finish it. */
typedef struct
{
  GtServiceConfig pub;
  gboolean random_set; /* remoteTCPRandom was given (else it follows remoteTCPPort) */
  gboolean udp_random_set; /* remoteUDPRandom was given (else it follows remoteUDPPort) */
} GtServiceEntry;

/* Turns an issue at file:line:column with a message (taken, or formatted) into a GError, and
 * hands it to the caller if asked (issue_out); always returns FALSE. */
gboolean _gt_config_fail_take (GtConfigIssue **issue_out, GError **error, const char *file,
                               guint line, guint column, int code, char *message);
gboolean _gt_config_fail_printf (GtConfigIssue **issue_out, GError **error, const char *file,
                                 guint line, guint column, int code, const char *format, ...)
  G_GNUC_PRINTF (7, 8);
void _gt_config_add_warning (GPtrArray *warnings, const char *file, guint line, guint column,
                             const char *format, ...) G_GNUC_PRINTF (5, 6);
gboolean _gt_config_read_file (const char *path, char **data, gsize *len,
                               GtConfigIssue **issue_out, GError **error);

/* Value parsers shared by YAML and the command line. They return NULL on success, or a newly
 * allocated message ("bad port 'x'") that the caller places. */
char *_gt_config_parse_port (const char *text, gboolean allow_zero, guint16 *out);
char *_gt_config_parse_uint (const char *text, guint64 max, guint64 *out);
char *_gt_config_parse_bool (const char *text, gboolean *out);
char *_gt_config_parse_duration (const char *text, guint64 *ms_out);
char *_gt_config_parse_log_level (const char *text, char **out);
char *_gt_config_parse_host_prefix (const char *text, char **out);
char *_gt_config_parse_cidr (const char *text);
/* A tcpForwardAllow rule "ID:PREFIX" (either may be "*"): NULL or an error message. */
char *_gt_config_parse_forward_rule (const char *text);
/* "stun:host[:port]" (port default 3478, [v6] literal allowed): NULL or an error message. */
char *_gt_config_parse_stun_url (const char *text, char **host_out, guint16 *port_out);
char *_gt_config_parse_turn_url (const char *text, char **host_out, guint16 *port_out);
char *_gt_config_parse_regex (const char *text);
char *_gt_config_parse_http_url (const char *name, const char *text);
char *_gt_config_parse_range (const char *text, GtPortRange *range);
char *_gt_config_parse_listen_addr (const char *text, const char *default_host, char **out);
char *_gt_config_parse_remote (const char *text, GtRemote **out);
char *_gt_config_parse_proxy_protocol_version (const char *text, guint *out);
/* A new GtServiceEntry for a `local` URL (remote_tcp_random still to be finished). */
char *_gt_config_parse_local_url (const char *text, GtServiceConfig **out);
gboolean _gt_config_url_path_is_sane (const char *path);
gboolean _gt_config_looks_like_pin (const char *text);
void _gt_config_strv_append (char ***strv, const char *text);

void _gt_web_config_clear (GtWebConfig *web);
void _gt_config_places_set (GHashTable *places, const char *key, const char *file, guint line,
                            guint column);
GtUserEntry *_gt_config_user_new (const char *id, guint line, guint column);
void _gt_config_user_free (GtUserConfig *user);
gint _gt_config_find_user_index (const GtServerConfig *config, const char *id);
void _gt_config_service_free (GtServiceConfig *service);
/* GT's default: a tcp service without remoteTCPPort takes a random port unless told not to. */
void _gt_config_service_finish (GtServiceConfig *service);
/* GT's MergeConfig: a zero means the default; clamps of the client pool sizes. */
void _gt_config_client_clamp (GtClientConfig *config);

/* ------------------------------------------------------------------------------------------ */
/* Key tables (gt-config-keys.c): one row per key, used by YAML and the command line */

typedef enum
{
  GT_OPT_ADDR,
  GT_OPT_DURATION,
  GT_OPT_LOG_LEVEL,
  GT_OPT_UINT16,      /* guint field */
  GT_OPT_UINT32,      /* guint field */
  GT_OPT_INT16,       /* gint field, 0..65535 */
  GT_OPT_INT32,       /* gint field, 0..G_MAXINT32 */
  GT_OPT_BOOL,
  GT_OPT_ID,
  GT_OPT_SECRET,
  GT_OPT_PASSWORD,
  GT_OPT_WEB_CERT,    /* GT_OPT_PATH, or "auto" for a generated certificate */    /* the web admin's password: a hash or plaintext, "" = unset */
  GT_OPT_USER_SECRET, /* a user's secret (the message names the user) */
  GT_OPT_REMOTES,
  GT_OPT_STRING,      /* "" = unset */
  GT_OPT_PATH,        /* a file; relative paths in a file are relative to that file's folder */
  GT_OPT_TLS_VERSION, /* unknown values: a warning and tls1.2, as GT */
  GT_OPT_API_ADDR,    /* listen address, host defaults to 127.0.0.1 */
  GT_OPT_WS_PATH,
  GT_OPT_HTTP_URL,
  GT_OPT_CIDRS,       /* list; the file replaces, the command line repeats */
  GT_OPT_STUN_URLS,   /* list of stun:host[:port], like GT_OPT_CIDRS */
  GT_OPT_FORWARD_RULES, /* list of ID:PREFIX (tcpForwardAllow), like GT_OPT_CIDRS */
  GT_OPT_SPEED,       /* bytes/s, guint64 field, GT's uint32 range */
  GT_OPT_REMOTE_CERT, /* a pin "sha256:..." or a path (GT_OPT_PATH rules) */
  GT_OPT_HOST_PREFIX,
  GT_OPT_PORT,        /* guint16 field, 0 allowed */
  GT_OPT_PROXY_PROTOCOL_VERSION, /* guint field: 0, 1 or 2 */
  GT_OPT_TCP_RANGES,  /* YAML structure: a list of {range: A-B} (loader only) */
  GT_OPT_HOST_RULES,  /* YAML structure: {number, withID, regex} (loader only) */
  GT_OPT_HTTP_URLS,   /* list of http(s):// URLs (char **); the file replaces, the command
                       * line repeats */
  GT_OPT_PORT_RANGES, /* list of "A-B" port ranges (GArray of GtPortRange), like GT_OPT_CIDRS */
} GtConfigOptType;

typedef struct
{
  const char *name;
  GtConfigOptType type;
  gsize offset;         /* of the field in the target struct */
  gint64 zero_default;  /* GT MergeConfig: value stored when 0 is given */
  gsize set_offset;     /* 0, or the offset of a gboolean set to TRUE when the key is given */
  const char *help;
} GtConfigOpt;

/* GT options accepted but not implemented: a warning, a loose shape check, no failure. */
typedef enum
{
  GT_LOOSE_SCALAR, /* string, number, duration */
  GT_LOOSE_BOOL,   /* scalar; bare on the command line */
  GT_LOOSE_LIST,   /* scalar or list of scalars; repeatable on the command line */
  GT_LOOSE_MAP,    /* YAML only */
} GtConfigLooseType;

typedef struct
{
  const char *name;
  GtConfigLooseType type;
  /* The GT key whose feature this one only tunes (its own warning covers it), "" for a key GT
   * itself never uses, "*" for a key gt has no use for (e.g. a log level of a part gt logs
   * through its own logLevel), NULL for a key that turns a feature on. */
  const char *tunes;
  /* GT's default value (NULL: none); a key set to it, or to nothing, changes nothing either. */
  const char *gt_default;
} GtConfigLoose;

typedef enum
{
  GT_CONFIG_KEYS_SERVER,  /* server options: (also GtServerConfig on the command line) */
  GT_CONFIG_KEYS_CLIENT,  /* client options: */
  GT_CONFIG_KEYS_SERVICE, /* an entry of a client's services: / the most recent --local */
  GT_CONFIG_KEYS_USER,    /* an entry of a server's users: */
  GT_CONFIG_KEYS_CLUSTER, /* the server's cluster: mapping (--cluster.KEY on the command line) */
} GtConfigKeys;

/* The row of `name` in a table, NULL when there is none. Server options include the listener
 * keys of gt_listener_info(). */
const GtConfigOpt *_gt_config_opt_find (GtConfigKeys keys, const char *name);
/* The rows of a table in order (for the server without the listener rows), *n_out the count. */
const GtConfigOpt *_gt_config_opts (GtConfigKeys keys, gsize *n_out);
/* Gives every row of a server or client table that is 0 or NULL its default (zero_default, or
 * the default of its type: log level, TLS version, WebSocket path), as GT's MergeConfig. */
void _gt_config_opts_set_defaults (void *config, GtConfigKeys keys);
/* GT keys accepted but ignored, for server and client options only. */
const GtConfigLoose *_gt_config_loose_find (GtConfigKeys keys, const char *name);
/* The diagnostic of a GT key that this version does not implement, with the value given (NULL:
 * none, or a bare boolean flag): a warning, or a debug note when the key changes nothing. */
void _gt_config_add_unsupported (GPtrArray *warnings, const char *file, guint line, guint column,
                                 const GtConfigLoose *loose, const char *display,
                                 const char *value, const char *shape_problem);
/* Sets a scalar key from text in target (the struct the row's offsets are relative to);
 * returns NULL or an error message. GT_OPT_REMOTES and GT_OPT_CIDRS append. *warning receives
 * a message for values replaced by a default (tlsVersion). */
char *_gt_config_opt_set (void *target, const GtConfigOpt *def, const char *text,
                          char **warning);

/* ------------------------------------------------------------------------------------------ */
/* YAML (gt-config-yaml.c) */

/* Loads a users file's `id: {secret: ...}` mapping into config (see
 * gt_server_config_load_users_file). */
gboolean _gt_config_yaml_load_users (GtServerConfig *config, const char *data, gsize len,
                                     const char *file, GtConfigIssue **issue_out,
                                     GError **error);

G_END_DECLS
