/* gt-config.h: GT-compatible configuration model for server and client, YAML + command line. */
#pragma once

#include <glib.h>
#include "gt-frame.h"

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
} GtConfigIssue;

void gt_config_issue_free (GtConfigIssue *issue);
/* "FILE:LINE:COLUMN: message", or "command line: message" when there is no file. */
char *gt_config_issue_to_string (const GtConfigIssue *issue);

typedef struct
{
  guint16 first;
  guint16 last;
} GtPortRange;

typedef struct
{
  char *id;
  char *secret;          /* never logged */
  GArray *tcp_ranges;    /* GtPortRange; NULL = use the global pool */
  gint tcp_number;       /* -1 = inherit options.tcpNumber */
  guint line, column;    /* where the user was defined (0 = command line) */
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
  guint connections;       /* options.connections, default 10 */
  guint max_handshake_options; /* options.maxHandShakeOptions, default 600 */
  gboolean allow_any_client;   /* options.allowAnyClient */
  GPtrArray *warnings;     /* GtConfigIssue*: unknown keys, ignored keys */
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
  gboolean use_local_as_http_host;
  guint64 local_timeout_ms; /* default 120 s */
  guint line, column;       /* where the service was defined (0 = command line) */
} GtServiceConfig;

typedef struct
{
  char *host;
  guint16 port;
  char *scheme;   /* "tcp" for now */
} GtRemote;

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
  char *log_level;           /* default "info" */
  GPtrArray *services;       /* GtServiceConfig* */
  GPtrArray *warnings;       /* GtConfigIssue* */
} GtClientConfig;

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

/* Helpers shared with other parsers. */
gboolean gt_parse_duration (const char *text, guint64 *ms_out); /* Go syntax: 90s, 1m30s, 250ms, 1h */
/* "80" → "0.0.0.0:80", ":80" → "0.0.0.0:80", "127.0.0.1:80", "[::1]:80" */
char *gt_normalize_listen_addr (const char *text, GError **error);
gboolean gt_parse_port_range (const char *text, GtPortRange *range, GError **error);

const GtUserConfig *gt_server_config_find_user (const GtServerConfig *config, const char *id);

G_END_DECLS
