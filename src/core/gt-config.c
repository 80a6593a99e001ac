/* gt-config.c: GT-compatible configuration model: YAML (libyaml), command line, validation. */
#include "config.h"

#include "gt-config.h"

#include <errno.h>
#include <gio/gio.h>
#include <stdarg.h>
#include <string.h>
#include <yaml.h>

G_DEFINE_QUARK (gt-config-error-quark, gt_config_error)

#define DEFAULT_SERVER_TIMEOUT_MS (90 * 1000)
#define DEFAULT_SERVER_CONNECTIONS 10
#define DEFAULT_MAX_HANDSHAKE_OPTIONS 600
#define DEFAULT_REMOTE_CONNECTIONS 3
#define MAX_REMOTE_CONNECTIONS 10
#define DEFAULT_REMOTE_IDLE_CONNECTIONS 1
#define DEFAULT_REMOTE_TIMEOUT_MS (45 * 1000)
#define DEFAULT_RECONNECT_DELAY_MS (5 * 1000)
#define DEFAULT_LOCAL_TIMEOUT_MS (120 * 1000)
#define DEFAULT_LOG_LEVEL "info"
#define DEFAULT_TLS_VERSION "tls1.2"
#define DEFAULT_WS_PATH "/gt-tunnel"
#define DEFAULT_RECONNECT_TIMES 3
#define DEFAULT_RECONNECT_DURATION_MS (5 * 60 * 1000)
#define DEFAULT_DRAIN_TIMEOUT_MS (30 * 1000)
#define MAX_ID_LEN 200
#define MAX_SECRET_LEN 200
#define MAX_PREFIX_LEN 63

G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtConfigIssue, gt_config_issue_free)

/* ------------------------------------------------------------------------------------------ */
/* Issues */

void
gt_config_issue_free (GtConfigIssue *issue)
{
  if (issue == NULL)
    return;
  g_free (issue->file);
  g_free (issue->message);
  g_free (issue);
}

char *
gt_config_issue_to_string (const GtConfigIssue *issue)
{
  g_return_val_if_fail (issue != NULL, NULL);

  if (issue->file == NULL)
    return g_strdup_printf ("command line: %s", issue->message);
  if (issue->line == 0)
    return g_strdup_printf ("%s: %s", issue->file, issue->message);
  return g_strdup_printf ("%s:%u:%u: %s", issue->file, issue->line, issue->column,
                          issue->message);
}

static GtConfigIssue *
issue_new_take (const char *file, guint line, guint column, char *message)
{
  GtConfigIssue *issue = g_new0 (GtConfigIssue, 1);

  issue->file = g_strdup (file);
  issue->line = line;
  issue->column = column;
  issue->message = message;
  return issue;
}

/* Turns an issue into a GError (and hands it to the caller if asked); always returns FALSE. */
static gboolean
fail_with_issue (GtConfigIssue *issue, int code, GtConfigIssue **issue_out, GError **error)
{
  g_autofree char *text = gt_config_issue_to_string (issue);

  g_set_error_literal (error, GT_CONFIG_ERROR, code, text);
  if (issue_out != NULL)
    {
      gt_config_issue_free (*issue_out);
      *issue_out = issue;
    }
  else
    gt_config_issue_free (issue);
  return FALSE;
}

/* Errors from the command line: "command line: message". */
static gboolean G_GNUC_PRINTF (3, 4)
cli_fail (GError **error, int code, const char *format, ...)
{
  va_list args;
  g_autofree char *message = NULL;

  va_start (args, format);
  message = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error (error, GT_CONFIG_ERROR, code, "command line: %s", message);
  return FALSE;
}

static void G_GNUC_PRINTF (5, 6)
add_warning (GPtrArray *warnings, const char *file, guint line, guint column,
             const char *format, ...)
{
  va_list args;
  char *message;

  va_start (args, format);
  message = g_strdup_vprintf (format, args);
  va_end (args);
  g_ptr_array_add (warnings, issue_new_take (file, line, column, message));
}

/* ------------------------------------------------------------------------------------------ */
/* Value parsers shared by YAML and the command line. They return NULL on success, or a
 * newly allocated message ("bad port 'x'") that the caller places. */

static gboolean
all_digits (const char *text)
{
  if (*text == '\0')
    return FALSE;
  for (; *text != '\0'; text++)
    if (!g_ascii_isdigit (*text))
      return FALSE;
  return TRUE;
}

/* port: decimal 0..65535; allow_zero decides whether 0 is acceptable. */
static char *
parse_port (const char *text, gboolean allow_zero, guint16 *out)
{
  guint64 value = 0;

  if (!all_digits (text) || strlen (text) > 5)
    return g_strdup_printf ("bad port '%s'", text);
  value = g_ascii_strtoull (text, NULL, 10);
  if (value > 65535 || (value == 0 && !allow_zero))
    return g_strdup_printf ("bad port '%s'", text);
  *out = (guint16) value;
  return NULL;
}

static char *
parse_uint (const char *text, guint64 max, guint64 *out)
{
  guint64 value;

  if (text[0] == '-' && all_digits (text + 1))
    return g_strdup_printf ("bad number '%s': must not be negative", text);
  if (!all_digits (text))
    return g_strdup_printf ("bad number '%s'", text);
  errno = 0;
  value = g_ascii_strtoull (text, NULL, 10);
  if (errno != 0 || value > max)
    return g_strdup_printf ("number '%s' is too large (at most %" G_GUINT64_FORMAT ")", text,
                            max);
  *out = value;
  return NULL;
}

static char *
parse_bool (const char *text, gboolean *out)
{
  static const char *const yes[] = { "true", "yes", "on" };
  static const char *const no[] = { "false", "no", "off" };

  for (guint i = 0; i < G_N_ELEMENTS (yes); i++)
    {
      if (g_ascii_strcasecmp (text, yes[i]) == 0)
        {
          *out = TRUE;
          return NULL;
        }
      if (g_ascii_strcasecmp (text, no[i]) == 0)
        {
          *out = FALSE;
          return NULL;
        }
    }
  return g_strdup_printf ("bad boolean '%s' (use true/false, yes/no or on/off)", text);
}

static char *
parse_duration_value (const char *text, guint64 *ms_out)
{
  if (!gt_parse_duration (text, ms_out))
    return g_strdup_printf ("bad duration '%s' (examples: 90s, 1m30s, 250ms)", text);
  return NULL;
}

static char *
parse_log_level (const char *text, char **out)
{
  static const char *const levels[] = {
    "trace", "debug", "info", "warn", "error", "fatal", "panic", "disable",
  };

  if (*text == '\0')
    {
      /* GT: an empty value is the zero value, i.e. the default. */
      *out = g_strdup (DEFAULT_LOG_LEVEL);
      return NULL;
    }
  for (guint i = 0; i < G_N_ELEMENTS (levels); i++)
    if (g_ascii_strcasecmp (text, levels[i]) == 0)
      {
        *out = g_strdup (levels[i]);
        return NULL;
      }
  return g_strdup_printf ("bad log level '%s' (use trace, debug, info, warn, error, fatal, "
                          "panic or disable)",
                          text);
}

static char *
parse_host_prefix (const char *text, char **out)
{
  gsize len = strlen (text);

  if (len == 0 || len > MAX_PREFIX_LEN)
    return g_strdup_printf ("bad host prefix '%s': use 1 to %d letters, digits or '-'", text,
                            MAX_PREFIX_LEN);
  for (const char *p = text; *p != '\0'; p++)
    if (!g_ascii_isalnum (*p) && *p != '-')
      return g_strdup_printf ("bad host prefix '%s': use 1 to %d letters, digits or '-'", text,
                              MAX_PREFIX_LEN);
  *out = g_ascii_strdown (text, -1);
  return NULL;
}

static gboolean
host_is_sane (const char *host)
{
  if (*host == '\0')
    return FALSE;
  for (const char *p = host; *p != '\0'; p++)
    {
      guchar c = (guchar) *p;
      if (c <= ' ' || c == 0x7f || strchr ("/?#@[]\\", c) != NULL)
        return FALSE;
    }
  return TRUE;
}

/* Splits "host", "host:port", "[v6]", "[v6]:port". *host gets the host without brackets,
 * *port the port text or NULL. The host may be empty (":80"). */
static gboolean
split_host_port (const char *text, char **host, char **port, gboolean *bracketed)
{
  const char *colon;

  *bracketed = FALSE;
  if (text[0] == '[')
    {
      const char *end = strchr (text, ']');
      if (end == NULL || end == text + 1)
        return FALSE;
      for (const char *p = text + 1; p < end; p++)
        if (!g_ascii_isxdigit (*p) && *p != ':' && *p != '.' && *p != '%'
            && !g_ascii_isalnum (*p))
          return FALSE;
      if (end[1] != '\0' && end[1] != ':')
        return FALSE;
      *host = g_strndup (text + 1, end - text - 1);
      *port = end[1] == ':' ? g_strdup (end + 2) : NULL;
      *bracketed = TRUE;
      return TRUE;
    }
  colon = strchr (text, ':');
  if (colon == NULL)
    {
      *host = g_strdup (text);
      *port = NULL;
      return TRUE;
    }
  if (strchr (colon + 1, ':') != NULL)
    return FALSE; /* a bare IPv6 address needs brackets */
  *host = g_strndup (text, colon - text);
  *port = g_strdup (colon + 1);
  return TRUE;
}

gboolean
gt_parse_duration (const char *text, guint64 *ms_out)
{
  /* Go's time.ParseDuration syntax, plus a bare integer meaning seconds. Negative durations
   * are refused: no option of gt means anything with them. */
  static const struct
  {
    const char *name;
    guint64 ns;
  } units[] = {
    { "ns", 1 },
    { "us", 1000 },
    { "\xc2\xb5s", 1000 }, /* µs, U+00B5 */
    { "\xce\xbcs", 1000 }, /* μs, U+03BC */
    { "ms", 1000000 },
    { "s", G_GUINT64_CONSTANT (1000000000) },
    { "m", G_GUINT64_CONSTANT (60000000000) },
    { "h", G_GUINT64_CONSTANT (3600000000000) },
  };
  const guint64 max_ns = G_MAXINT64; /* like Go */
  const char *p = text;
  guint64 total_ns = 0;

  g_return_val_if_fail (ms_out != NULL, FALSE);

  if (text == NULL || *text == '\0')
    return FALSE;

  if (all_digits (text))
    {
      guint64 seconds;
      if (strlen (text) > 12)
        return FALSE;
      seconds = g_ascii_strtoull (text, NULL, 10);
      *ms_out = seconds * 1000;
      return TRUE;
    }

  if (*p == '+')
    p++;
  if (strcmp (p, "0") == 0)
    {
      *ms_out = 0;
      return TRUE;
    }
  if (*p == '\0')
    return FALSE;

  while (*p != '\0')
    {
      guint64 whole = 0;
      guint64 frac = 0;
      guint64 scale = 1;
      gboolean digits = FALSE;
      gsize unit_len = 0;
      guint64 unit = 0;
      guint64 part;

      while (g_ascii_isdigit (*p))
        {
          if (whole > (max_ns - 9) / 10)
            return FALSE;
          whole = whole * 10 + (guint64) (*p - '0');
          digits = TRUE;
          p++;
        }
      if (*p == '.')
        {
          p++;
          while (g_ascii_isdigit (*p))
            {
              /* Digits beyond 1e18 precision do not change a millisecond result. */
              if (scale < G_GUINT64_CONSTANT (1000000000000000000))
                {
                  frac = frac * 10 + (guint64) (*p - '0');
                  scale *= 10;
                }
              digits = TRUE;
              p++;
            }
        }
      if (!digits)
        return FALSE;

      for (guint i = 0; i < G_N_ELEMENTS (units); i++)
        {
          gsize len = strlen (units[i].name);
          if (strncmp (p, units[i].name, len) == 0 && len > unit_len
              && !(len == 1 && units[i].name[0] == 'm' && p[1] == 's'))
            {
              unit_len = len;
              unit = units[i].ns;
            }
        }
      if (unit_len == 0)
        return FALSE;
      p += unit_len;

      if (whole > max_ns / unit)
        return FALSE;
      part = whole * unit;
      if (frac > 0)
        part += (guint64) ((long double) frac * (long double) unit / (long double) scale);
      if (part > max_ns - total_ns)
        return FALSE;
      total_ns += part;
    }

  *ms_out = total_ns / 1000000;
  return TRUE;
}

/* default_host replaces a missing host: "0.0.0.0" for user-facing listeners, "127.0.0.1" for
 * the internal API. */
static char *
normalize_addr (const char *text, const char *default_host, GError **error)
{
  g_autofree char *host = NULL;
  g_autofree char *port_text = NULL;
  g_autofree char *message = NULL;
  gboolean bracketed = FALSE;
  guint16 port = 0;

  g_return_val_if_fail (text != NULL, NULL);

  if (*text == '\0')
    {
      g_set_error_literal (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE,
                           "empty listen address");
      return NULL;
    }
  if (all_digits (text))
    {
      /* "80" means every IPv4 address, port 80 (GT). */
      message = parse_port (text, TRUE, &port);
      if (message != NULL)
        {
          g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE,
                       "bad listen address '%s': %s", text, message);
          return NULL;
        }
      return g_strdup_printf ("%s:%u", default_host, port);
    }
  if (!split_host_port (text, &host, &port_text, &bracketed)
      || (*host != '\0' && !bracketed && !host_is_sane (host)))
    {
      g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE, "bad listen address '%s'",
                   text);
      return NULL;
    }
  if (port_text == NULL)
    {
      g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE,
                   "bad listen address '%s': a port is required", text);
      return NULL;
    }
  message = parse_port (port_text, TRUE, &port);
  if (message != NULL)
    {
      g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE, "bad listen address '%s': %s",
                   text, message);
      return NULL;
    }
  if (*host == '\0')
    return g_strdup_printf ("%s:%u", default_host, port);
  if (bracketed)
    return g_strdup_printf ("[%s]:%u", host, port);
  return g_strdup_printf ("%s:%u", host, port);
}

char *
gt_normalize_listen_addr (const char *text, GError **error)
{
  g_return_val_if_fail (text != NULL, NULL);
  return normalize_addr (text, "0.0.0.0", error);
}

gboolean
gt_parse_port_range (const char *text, GtPortRange *range, GError **error)
{
  g_autofree char *copy = NULL;
  g_autofree char *message = NULL;
  char *dash;
  guint16 first = 0, last = 0;

  g_return_val_if_fail (text != NULL, FALSE);
  g_return_val_if_fail (range != NULL, FALSE);

  copy = g_strstrip (g_strdup (text));
  if (strcmp (copy, "0") == 0)
    {
      /* GT: 0 means every port. */
      range->first = 1;
      range->last = 65535;
      return TRUE;
    }
  dash = strchr (copy, '-');
  if (dash == NULL)
    {
      message = parse_port (copy, FALSE, &first);
      last = first;
    }
  else
    {
      *dash = '\0';
      g_strstrip (copy);
      g_strstrip (dash + 1);
      message = parse_port (copy, FALSE, &first);
      if (message == NULL)
        message = parse_port (dash + 1, FALSE, &last);
    }
  if (message != NULL)
    {
      g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE, "bad port range '%s'", text);
      return FALSE;
    }
  if (first > last)
    {
      g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE,
                   "bad port range '%s': first port is greater than last", text);
      return FALSE;
    }
  range->first = first;
  range->last = last;
  return TRUE;
}

static char *
range_message (const char *text, GtPortRange *range)
{
  g_autoptr (GError) error = NULL;

  if (!gt_parse_port_range (text, range, &error))
    return g_strdup (error->message);
  return NULL;
}

static char *
listen_addr_message (const char *text, const char *default_host, char **out)
{
  g_autoptr (GError) error = NULL;

  *out = normalize_addr (text, default_host, &error);
  if (*out == NULL)
    return g_strdup (error->message);
  return NULL;
}

/* An address or a network: "10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1". */
static char *
parse_cidr (const char *text)
{
  g_autoptr (GInetAddressMask) mask = NULL;
  g_autoptr (GError) error = NULL;

  if (*text != '\0' && strchr (text, ' ') == NULL)
    mask = g_inet_address_mask_new_from_string (text, &error);
  if (mask == NULL)
    return g_strdup_printf ("bad CIDR or address '%s' (examples: 10.0.0.0/8, 192.168.1.7, "
                            "fd00::/8)",
                            text);
  return NULL;
}

/* A host regex must compile (GRegex, PCRE syntax; GT uses Go's RE2, the common subset is the
 * same). */
static char *
parse_regex (const char *text)
{
  g_autoptr (GRegex) regex = NULL;
  g_autoptr (GError) error = NULL;

  regex = g_regex_new (text, G_REGEX_DEFAULT, G_REGEX_MATCH_DEFAULT, &error);
  if (regex == NULL)
    {
      /* GLib's message repeats the pattern: keep only "at char N: why" when it is there. */
      const char *why = strlen (error->message) > strlen (text)
                          ? strstr (error->message + strlen (text), " at char ")
                          : NULL;
      return g_strdup_printf ("bad host regex '%s': %s", text,
                              why != NULL ? why + 1 : error->message);
    }
  return NULL;
}

/* http:// or https:// with a host (authAPI). */
static char *
parse_http_url (const char *name, const char *text)
{
  g_autoptr (GUri) uri = NULL;
  const char *scheme;

  uri = g_uri_parse (text, G_URI_FLAGS_NONE, NULL);
  scheme = uri != NULL ? g_uri_get_scheme (uri) : NULL;
  if (scheme == NULL
      || (g_ascii_strcasecmp (scheme, "http") != 0 && g_ascii_strcasecmp (scheme, "https") != 0))
    return g_strdup_printf ("bad %s URL '%s': it must start with http:// or https://", name,
                            text);
  if (g_uri_get_host (uri) == NULL || *g_uri_get_host (uri) == '\0')
    return g_strdup_printf ("bad %s URL '%s': it has no host", name, text);
  if (g_uri_get_userinfo (uri) != NULL)
    return g_strdup_printf ("bad %s URL: user information in the URL is not supported", name);
  return NULL;
}

/* A URL path for WebSocket tunnels: "/" followed by visible characters, no fragment. */
static gboolean
url_path_is_sane (const char *path)
{
  if (path[0] != '/')
    return FALSE;
  for (const char *p = path; *p != '\0'; p++)
    if ((guchar) *p <= ' ' || (guchar) *p == 0x7f || *p == '#')
      return FALSE;
  return TRUE;
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

static gboolean
looks_like_pin (const char *text)
{
  return g_ascii_strncasecmp (text, "sha256:", 7) == 0;
}

static char *
parse_proxy_protocol_version (const char *text, guint *out)
{
  if (g_ascii_strcasecmp (text, "v1") == 0 || strcmp (text, "1") == 0)
    *out = 1;
  else if (g_ascii_strcasecmp (text, "v2") == 0 || strcmp (text, "2") == 0)
    *out = 2;
  else if (*text == '\0')
    *out = 0;
  else
    return g_strdup_printf ("bad proxyProtocol '%s' (use v1 or v2)", text);
  return NULL;
}

static void
strv_append (char ***strv, const char *text)
{
  guint n = *strv != NULL ? g_strv_length (*strv) : 0;

  *strv = g_renew (char *, *strv, n + 2);
  (*strv)[n] = g_strdup (text);
  (*strv)[n + 1] = NULL;
}

static void
remote_free (GtRemote *remote)
{
  if (remote == NULL)
    return;
  g_free (remote->host);
  g_free (remote->scheme);
  g_free (remote->path);
  g_free (remote);
}

/* Splits "scheme://rest"; returns FALSE when there is no "://". */
static gboolean
split_scheme (const char *text, char **scheme, const char **rest)
{
  const char *sep = strstr (text, "://");

  if (sep == NULL)
    return FALSE;
  *scheme = g_ascii_strdown (text, sep - text);
  *rest = sep + 3;
  return TRUE;
}

static gboolean
scheme_is_sane (const char *scheme)
{
  if (!g_ascii_isalpha (*scheme))
    return FALSE;
  for (const char *p = scheme; *p != '\0'; p++)
    if (!g_ascii_isalnum (*p) && *p != '+' && *p != '-' && *p != '.')
      return FALSE;
  return TRUE;
}

/* Removes a trailing "/" (an empty path); anything longer is an error for our URLs. */
static char *
strip_empty_path (const char *rest, gboolean *had_path)
{
  const char *slash = strchr (rest, '/');

  *had_path = FALSE;
  if (slash == NULL)
    return g_strdup (rest);
  if (slash[1] != '\0')
    *had_path = TRUE;
  return g_strndup (rest, slash - rest);
}

static char *
parse_remote (const char *text, GtRemote **out)
{
  g_autofree char *scheme = NULL;
  g_autofree char *authority = NULL;
  g_autofree char *host = NULL;
  g_autofree char *port_text = NULL;
  const char *rest = text;
  g_autofree char *path = NULL;
  gboolean bracketed, had_path, websocket;
  guint16 port;
  GtRemote *remote;
  const GtSchemeInfo *info;

  if (split_scheme (text, &scheme, &rest))
    {
      if (!scheme_is_sane (scheme))
        return g_strdup_printf ("bad remote '%s'", text);
      if (gt_scheme_info_lookup (scheme) == NULL)
        return g_strdup_printf ("remote scheme '%s' is not supported by this version", scheme);
    }
  else
    scheme = g_strdup ("tcp");
  info = gt_scheme_info_lookup (scheme);
  websocket = info->has_path;
  port = info->default_port;
  if (websocket && strchr (rest, '/') != NULL)
    {
      /* ws/wss keep their path (the server's wsPath). */
      const char *slash = strchr (rest, '/');
      if (!url_path_is_sane (slash))
        return g_strdup_printf ("bad remote '%s': bad path", text);
      path = g_strdup (slash);
      authority = g_strndup (rest, slash - rest);
      had_path = FALSE;
    }
  else
    authority = strip_empty_path (rest, &had_path);
  if (had_path || !split_host_port (authority, &host, &port_text, &bracketed)
      || (!bracketed && !host_is_sane (host)))
    return g_strdup_printf ("bad remote '%s'", text);
  if (port_text != NULL)
    {
      char *message = parse_port (port_text, FALSE, &port);
      if (message != NULL)
        return message;
    }
  remote = g_new0 (GtRemote, 1);
  remote->scheme = g_steal_pointer (&scheme);
  remote->host = g_steal_pointer (&host);
  remote->port = port;
  if (websocket)
    remote->path = path != NULL ? g_steal_pointer (&path) : g_strdup (DEFAULT_WS_PATH);
  *out = remote;
  return NULL;
}

static void
service_free (GtServiceConfig *service)
{
  if (service == NULL)
    return;
  g_free (service->local_url);
  g_free (service->local_host);
  g_free (service->host_prefix);
  g_free (service);
}

static char *
parse_local_url (const char *text, GtServiceConfig **out)
{
  g_autofree char *scheme = NULL;
  g_autofree char *authority = NULL;
  g_autofree char *host = NULL;
  g_autofree char *port_text = NULL;
  const char *rest;
  gboolean bracketed, had_path;
  GtServiceKind kind;
  guint16 port;
  GtServiceConfig *service;

  if (!split_scheme (text, &scheme, &rest))
    return g_strdup_printf ("bad local URL '%s': the scheme must be http://, https:// or "
                            "tcp://",
                            text);
  if (strcmp (scheme, "http") == 0)
    {
      kind = GT_SERVICE_KIND_HTTP;
      port = 80;
    }
  else if (strcmp (scheme, "https") == 0)
    {
      kind = GT_SERVICE_KIND_HTTPS;
      port = 443;
    }
  else if (strcmp (scheme, "tcp") == 0)
    {
      kind = GT_SERVICE_KIND_TCP;
      port = 0;
    }
  else
    return g_strdup_printf ("bad local URL '%s': the scheme must be http://, https:// or "
                            "tcp://",
                            text);

  authority = strip_empty_path (rest, &had_path);
  if (had_path)
    return g_strdup_printf ("bad local URL '%s': a path is not supported", text);
  if (!split_host_port (authority, &host, &port_text, &bracketed)
      || (!bracketed && !host_is_sane (host)))
    return g_strdup_printf ("bad local URL '%s'", text);
  if (port_text != NULL)
    {
      char *message = parse_port (port_text, FALSE, &port);
      if (message != NULL)
        return message;
    }
  else if (kind == GT_SERVICE_KIND_TCP)
    return g_strdup_printf ("bad local URL '%s': tcp needs a port", text);

  service = g_new0 (GtServiceConfig, 1);
  service->kind = kind;
  service->local_url = g_strdup (text);
  service->local_host = g_steal_pointer (&host);
  service->local_port = port;
  service->local_timeout_ms = DEFAULT_LOCAL_TIMEOUT_MS;
  *out = service;
  return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Config objects */

typedef struct
{
  guint line, column;
} Place;

/* Where a value came from, for errors found by validate(): file NULL = command line. */
typedef struct
{
  char *file;
  guint line, column;
} KeyPlace;

static void
key_place_free (KeyPlace *place)
{
  g_free (place->file);
  g_free (place);
}

static GHashTable *
places_new (void)
{
  return g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                (GDestroyNotify) key_place_free);
}

static void
places_set (GHashTable *places, const char *key, const char *file, guint line, guint column)
{
  KeyPlace *place = g_new0 (KeyPlace, 1);

  place->file = line > 0 ? g_strdup (file) : NULL;
  place->line = line;
  place->column = column;
  g_hash_table_replace (places, g_strdup (key), place);
}

/* The public structs with what only this file needs. Configs always come from *_new(). */
typedef struct
{
  GtServerConfig pub;
  GHashTable *places;             /* "certFile", "host.regex.0", "users.ID.host.regex.0" ... */
  gboolean host_number_from_file; /* GT: YAML host.number/withID win over the command line */
  gboolean host_with_id_from_file;
} ServerPriv;

typedef struct
{
  GtClientConfig pub;
  GHashTable *places; /* "remoteCert" */
} ClientPriv;

/* A user with the places of its tcp ranges, for overlap messages. */
typedef struct
{
  GtUserConfig pub;
  GArray *range_places; /* Place, parallel to pub.tcp_ranges */
  char *file;           /* file the user was defined in (config or users file) */
  gboolean from_cli;    /* --id/--secret: a users file does not replace it */
} UserEntry;

static void
user_free (GtUserConfig *user)
{
  UserEntry *entry = (UserEntry *) user;

  if (user == NULL)
    return;
  g_free (user->id);
  if (user->secret != NULL)
    memset (user->secret, 0, strlen (user->secret));
  g_free (user->secret);
  g_clear_pointer (&user->tcp_ranges, g_array_unref);
  g_strfreev (user->host_regex);
  g_clear_pointer (&entry->range_places, g_array_unref);
  g_free (entry->file);
  g_free (entry);
}

static UserEntry *
user_new (const char *id, guint line, guint column)
{
  UserEntry *entry = g_new0 (UserEntry, 1);

  entry->pub.id = g_strdup (id);
  entry->pub.tcp_number = -1;
  entry->pub.connections = -1;
  entry->pub.host_number = -1;
  entry->pub.host_with_id = -1;
  entry->pub.line = line;
  entry->pub.column = column;
  return entry;
}

GtServerConfig *
gt_server_config_new (void)
{
  ServerPriv *priv = g_new0 (ServerPriv, 1);
  GtServerConfig *config = &priv->pub;

  priv->places = places_new ();
  config->timeout_ms = DEFAULT_SERVER_TIMEOUT_MS;
  config->log_level = g_strdup (DEFAULT_LOG_LEVEL);
  config->users = g_ptr_array_new_with_free_func ((GDestroyNotify) user_free);
  config->tcp_ranges = g_array_new (FALSE, FALSE, sizeof (GtPortRange));
  config->tcp_number = 0;
  config->connections = DEFAULT_SERVER_CONNECTIONS;
  config->max_handshake_options = DEFAULT_MAX_HANDSHAKE_OPTIONS;
  config->warnings = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_config_issue_free);
  config->tls_version = g_strdup (DEFAULT_TLS_VERSION);
  config->ws_path = g_strdup (DEFAULT_WS_PATH);
  config->reconnect_times = DEFAULT_RECONNECT_TIMES;
  config->reconnect_duration_ms = DEFAULT_RECONNECT_DURATION_MS;
  config->api_tls_version = g_strdup (DEFAULT_TLS_VERSION);
  config->drain_timeout_ms = DEFAULT_DRAIN_TIMEOUT_MS;
  return config;
}

void
gt_server_config_free (GtServerConfig *config)
{
  if (config == NULL)
    return;
  g_free (config->config_path);
  g_free (config->addr);
  g_free (config->log_level);
  g_ptr_array_unref (config->users);
  g_array_unref (config->tcp_ranges);
  g_ptr_array_unref (config->warnings);
  g_free (config->tls_addr);
  g_free (config->cert_file);
  g_free (config->key_file);
  g_free (config->tls_version);
  g_free (config->sni_addr);
  g_free (config->ws_path);
  g_strfreev (config->proxy_protocol_trusted_cidrs);
  g_free (config->users_file);
  g_free (config->auth_api);
  g_strfreev (config->host_regex);
  g_free (config->api_addr);
  g_free (config->api_cert_file);
  g_free (config->api_key_file);
  g_free (config->api_tls_version);
  g_hash_table_unref (((ServerPriv *) config)->places);
  g_free (config);
}

GtClientConfig *
gt_client_config_new (void)
{
  ClientPriv *priv = g_new0 (ClientPriv, 1);
  GtClientConfig *config = &priv->pub;

  priv->places = places_new ();
  config->remotes = g_ptr_array_new_with_free_func ((GDestroyNotify) remote_free);
  config->remote_connections = DEFAULT_REMOTE_CONNECTIONS;
  config->remote_idle_connections = DEFAULT_REMOTE_IDLE_CONNECTIONS;
  config->remote_timeout_ms = DEFAULT_REMOTE_TIMEOUT_MS;
  config->reconnect_delay_ms = DEFAULT_RECONNECT_DELAY_MS;
  config->drain_timeout_ms = DEFAULT_DRAIN_TIMEOUT_MS;
  config->log_level = g_strdup (DEFAULT_LOG_LEVEL);
  config->services = g_ptr_array_new_with_free_func ((GDestroyNotify) service_free);
  config->warnings = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_config_issue_free);
  return config;
}

void
gt_client_config_free (GtClientConfig *config)
{
  if (config == NULL)
    return;
  g_free (config->config_path);
  g_free (config->id);
  if (config->secret != NULL)
    memset (config->secret, 0, strlen (config->secret));
  g_free (config->secret);
  g_ptr_array_unref (config->remotes);
  g_free (config->log_level);
  g_ptr_array_unref (config->services);
  g_ptr_array_unref (config->warnings);
  g_free (config->remote_cert);
  g_hash_table_unref (((ClientPriv *) config)->places);
  g_free (config);
}

const GtUserConfig *
gt_server_config_find_user (const GtServerConfig *config, const char *id)
{
  g_return_val_if_fail (config != NULL, NULL);
  g_return_val_if_fail (id != NULL, NULL);

  for (guint i = 0; i < config->users->len; i++)
    {
      const GtUserConfig *user = g_ptr_array_index (config->users, i);
      if (g_strcmp0 (user->id, id) == 0)
        return user;
    }
  return NULL;
}

static gint
find_user_index (GtServerConfig *config, const char *id)
{
  for (guint i = 0; i < config->users->len; i++)
    {
      const GtUserConfig *user = g_ptr_array_index (config->users, i);
      if (g_strcmp0 (user->id, id) == 0)
        return (gint) i;
    }
  return -1;
}

/* GT's MergeConfig: a zero means the default; clamps of the client pool sizes. */
static void
client_clamp (GtClientConfig *config)
{
  if (config->remote_connections == 0)
    config->remote_connections = DEFAULT_REMOTE_CONNECTIONS;
  if (config->remote_connections > MAX_REMOTE_CONNECTIONS)
    config->remote_connections = MAX_REMOTE_CONNECTIONS;
  if (config->remote_idle_connections == 0)
    config->remote_idle_connections = DEFAULT_REMOTE_IDLE_CONNECTIONS;
  if (config->remote_idle_connections > config->remote_connections)
    config->remote_idle_connections = config->remote_connections;
}

/* ------------------------------------------------------------------------------------------ */
/* Option tables: one description per GT option, used by YAML and the command line. */

typedef enum
{
  OPT_ADDR,
  OPT_DURATION,
  OPT_LOG_LEVEL,
  OPT_UINT16,
  OPT_UINT32,
  OPT_BOOL,
  OPT_ID,
  OPT_SECRET,
  OPT_REMOTES,
  OPT_STRING,      /* "" = unset */
  OPT_PATH,        /* a file; relative paths in a file are relative to that file's folder */
  OPT_TLS_VERSION, /* unknown values: a warning and tls1.2, as GT */
  OPT_API_ADDR,    /* listen address, host defaults to 127.0.0.1 */
  OPT_WS_PATH,
  OPT_HTTP_URL,
  OPT_CIDRS,       /* list; the file replaces, the command line repeats */
  OPT_SPEED,       /* bytes/s, guint64 field, GT's uint32 range */
  OPT_REMOTE_CERT, /* a pin "sha256:..." or a path (OPT_PATH rules) */
} OptType;

typedef struct
{
  const char *name;
  OptType type;
  gsize offset;
  guint64 zero_default; /* GT MergeConfig: value used when 0 is given */
} OptDef;

#define SOPT(name, type, field, def) { name, type, G_STRUCT_OFFSET (GtServerConfig, field), def }
#define COPT(name, type, field, def) { name, type, G_STRUCT_OFFSET (GtClientConfig, field), def }

static const OptDef server_opts[] = {
  SOPT ("addr", OPT_ADDR, addr, 0),
  SOPT ("tlsAddr", OPT_ADDR, tls_addr, 0),
  SOPT ("certFile", OPT_PATH, cert_file, 0),
  SOPT ("keyFile", OPT_PATH, key_file, 0),
  SOPT ("tlsVersion", OPT_TLS_VERSION, tls_version, 0),
  SOPT ("sniAddr", OPT_ADDR, sni_addr, 0),
  SOPT ("wsPath", OPT_WS_PATH, ws_path, 0),
  SOPT ("proxyProtocol", OPT_BOOL, proxy_protocol, 0),
  SOPT ("proxyProtocolTrustedCIDRs", OPT_CIDRS, proxy_protocol_trusted_cidrs, 0),
  SOPT ("users", OPT_PATH, users_file, 0),
  SOPT ("authAPI", OPT_HTTP_URL, auth_api, 0),
  SOPT ("reconnectTimes", OPT_UINT32, reconnect_times, DEFAULT_RECONNECT_TIMES),
  SOPT ("reconnectDuration", OPT_DURATION, reconnect_duration_ms,
        DEFAULT_RECONNECT_DURATION_MS),
  SOPT ("speed", OPT_SPEED, speed, 0),
  SOPT ("apiAddr", OPT_API_ADDR, api_addr, 0),
  SOPT ("apiCertFile", OPT_PATH, api_cert_file, 0),
  SOPT ("apiKeyFile", OPT_PATH, api_key_file, 0),
  SOPT ("apiTLSVersion", OPT_TLS_VERSION, api_tls_version, 0),
  SOPT ("drainTimeout", OPT_DURATION, drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_MS),
  SOPT ("timeout", OPT_DURATION, timeout_ms, DEFAULT_SERVER_TIMEOUT_MS),
  SOPT ("logLevel", OPT_LOG_LEVEL, log_level, 0),
  SOPT ("tcpNumber", OPT_UINT16, tcp_number, 0),
  SOPT ("connections", OPT_UINT32, connections, DEFAULT_SERVER_CONNECTIONS),
  SOPT ("maxHandShakeOptions", OPT_UINT16, max_handshake_options,
        DEFAULT_MAX_HANDSHAKE_OPTIONS),
  SOPT ("allowAnyClient", OPT_BOOL, allow_any_client, 0),
};

static const OptDef client_opts[] = {
  COPT ("id", OPT_ID, id, 0),
  COPT ("secret", OPT_SECRET, secret, 0),
  COPT ("remote", OPT_REMOTES, remotes, 0),
  COPT ("remoteConnections", OPT_UINT32, remote_connections, DEFAULT_REMOTE_CONNECTIONS),
  COPT ("remoteIdleConnections", OPT_UINT32, remote_idle_connections,
        DEFAULT_REMOTE_IDLE_CONNECTIONS),
  COPT ("remoteTimeout", OPT_DURATION, remote_timeout_ms, DEFAULT_REMOTE_TIMEOUT_MS),
  COPT ("reconnectDelay", OPT_DURATION, reconnect_delay_ms, DEFAULT_RECONNECT_DELAY_MS),
  COPT ("drainTimeout", OPT_DURATION, drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_MS),
  COPT ("logLevel", OPT_LOG_LEVEL, log_level, 0),
  COPT ("remoteCert", OPT_REMOTE_CERT, remote_cert, 0),
  COPT ("remoteCertInsecure", OPT_BOOL, remote_cert_insecure, 0),
};

/* GT options accepted but not implemented: a warning, a loose shape check, no failure. */
typedef enum
{
  LOOSE_SCALAR, /* string, number, duration */
  LOOSE_BOOL,   /* scalar; bare on the command line */
  LOOSE_LIST,   /* scalar or list of scalars; repeatable on the command line */
  LOOSE_MAP,    /* YAML only */
} LooseType;

typedef struct
{
  const char *name;
  LooseType type;
} LooseDef;

#define COMMON_UNSUPPORTED                                                                      \
  { "sentryDSN", LOOSE_SCALAR }, { "sentryLevel", LOOSE_LIST },                                 \
    { "sentrySampleRate", LOOSE_SCALAR }, { "sentryRelease", LOOSE_SCALAR },                    \
    { "sentryEnvironment", LOOSE_SCALAR }, { "sentryServerName", LOOSE_SCALAR },                \
    { "sentryDebug", LOOSE_BOOL }, { "logFile", LOOSE_SCALAR },                                 \
    { "logFileMaxSize", LOOSE_SCALAR }, { "logFileMaxCount", LOOSE_SCALAR },                    \
    { "webAddr", LOOSE_SCALAR }, { "webCertFile", LOOSE_SCALAR },                               \
    { "webKeyFile", LOOSE_SCALAR }, { "pprof", LOOSE_BOOL }, { "signingKey", LOOSE_SCALAR },    \
    { "admin", LOOSE_SCALAR }, { "password", LOOSE_SCALAR }, { "bbr", LOOSE_BOOL }

static const LooseDef server_unsupported[] = {
  { "httpMUXHeader", LOOSE_SCALAR },
  { "timeoutOnUnidirectionalTraffic", LOOSE_BOOL },
  { "stunAddr", LOOSE_SCALAR },
  { "stunLogLevel", LOOSE_SCALAR },
  { "quicAddr", LOOSE_SCALAR },
  COMMON_UNSUPPORTED,
};

static const LooseDef client_unsupported[] = {
  { "remoteSTUN", LOOSE_LIST },
  { "remoteAPI", LOOSE_SCALAR },
  { "webrtcConnectionIdleTimeout", LOOSE_SCALAR },
  { "webrtcConnections", LOOSE_SCALAR },
  { "webrtcLogLevel", LOOSE_SCALAR },
  { "webrtcMinPort", LOOSE_SCALAR },
  { "webrtcMaxPort", LOOSE_SCALAR },
  { "webrtcThreadMode", LOOSE_BOOL },
  { "tcpForwardAddr", LOOSE_SCALAR },
  { "tcpForwardHostPrefix", LOOSE_SCALAR },
  { "tcpForwardConnections", LOOSE_SCALAR },
  COMMON_UNSUPPORTED,
};

static const LooseDef *
find_loose (const LooseDef *defs, gsize n, const char *name)
{
  for (gsize i = 0; i < n; i++)
    if (strcmp (defs[i].name, name) == 0)
      return &defs[i];
  return NULL;
}

static const OptDef *
find_opt (const OptDef *defs, gsize n, const char *name)
{
  for (gsize i = 0; i < n; i++)
    if (strcmp (defs[i].name, name) == 0)
      return &defs[i];
  return NULL;
}

static void
set_string (char **field, const char *value)
{
  char *copy = g_strdup (value);

  g_free (*field);
  *field = copy;
}

/* Sets a scalar option from text; returns NULL or an error message. OPT_REMOTES and OPT_CIDRS
 * append. *warning receives a message for values replaced by a default (tlsVersion). */
static char *
opt_set (void *config, const OptDef *def, const char *text, char **warning)
{
  char *base = config;
  char *message = NULL;
  char **string_field = (char **) (base + def->offset);

  switch (def->type)
    {
    case OPT_STRING:
    case OPT_PATH:
      set_string (string_field, *text != '\0' ? text : NULL);
      break;
    case OPT_TLS_VERSION:
      {
        static const char *const versions[] = { "tls1.1", "tls1.2", "tls1.3" };
        const char *chosen = NULL;

        for (guint i = 0; i < G_N_ELEMENTS (versions); i++)
          if (g_ascii_strcasecmp (text, versions[i]) == 0)
            chosen = versions[i];
        if (chosen == NULL)
          {
            if (*text != '\0')
              *warning = g_strdup_printf ("unknown %s '%s': tls1.2 is used (use tls1.1, tls1.2 "
                                          "or tls1.3)",
                                          def->name, text);
            chosen = DEFAULT_TLS_VERSION;
          }
        set_string (string_field, chosen);
        break;
      }
    case OPT_API_ADDR:
      {
        char *addr = NULL;
        message = listen_addr_message (text, "127.0.0.1", &addr);
        if (message == NULL)
          {
            g_free (*string_field);
            *string_field = addr;
          }
        break;
      }
    case OPT_WS_PATH:
      if (*text == '\0')
        set_string (string_field, DEFAULT_WS_PATH);
      else if (!url_path_is_sane (text))
        message = g_strdup_printf ("bad %s '%s': it must start with '/' and contain no space or "
                                   "'#'",
                                   def->name, text);
      else
        set_string (string_field, text);
      break;
    case OPT_HTTP_URL:
      if (*text == '\0')
        set_string (string_field, NULL);
      else if ((message = parse_http_url (def->name, text)) == NULL)
        set_string (string_field, text);
      break;
    case OPT_CIDRS:
      if ((message = parse_cidr (text)) == NULL)
        strv_append ((char ***) (base + def->offset), text);
      break;
    case OPT_SPEED:
      {
        guint64 value = 0;
        message = parse_uint (text, G_MAXUINT32, &value);
        if (message == NULL)
          *(guint64 *) (base + def->offset) = value;
        break;
      }
    case OPT_REMOTE_CERT:
      if (*text == '\0')
        set_string (string_field, NULL);
      else if (looks_like_pin (text))
        {
          char *pin = NULL;
          if (!parse_pin (text, &pin))
            message = g_strdup_printf ("bad %s pin '%s': use sha256: followed by 64 hex digits "
                                       "(colons allowed)",
                                       def->name, text);
          else
            {
              g_free (*string_field);
              *string_field = pin;
            }
        }
      else
        set_string (string_field, text);
      break;
    case OPT_ADDR:
      {
        char *addr = NULL;
        message = listen_addr_message (text, "0.0.0.0", &addr);
        if (message == NULL)
          {
            char **field = (char **) (base + def->offset);
            g_free (*field);
            *field = addr;
          }
        break;
      }
    case OPT_DURATION:
      {
        guint64 ms = 0;
        message = parse_duration_value (text, &ms);
        if (message == NULL)
          *(guint64 *) (base + def->offset) = ms == 0 ? def->zero_default : ms;
        break;
      }
    case OPT_LOG_LEVEL:
      {
        char *level = NULL;
        message = parse_log_level (text, &level);
        if (message == NULL)
          {
            char **field = (char **) (base + def->offset);
            g_free (*field);
            *field = level;
          }
        break;
      }
    case OPT_UINT16:
    case OPT_UINT32:
      {
        guint64 value = 0;
        message = parse_uint (text, def->type == OPT_UINT16 ? G_MAXUINT16 : G_MAXUINT32, &value);
        if (message == NULL)
          *(guint *) (base + def->offset) = value == 0 ? (guint) def->zero_default : (guint) value;
        break;
      }
    case OPT_BOOL:
      {
        gboolean value = FALSE;
        message = parse_bool (text, &value);
        if (message == NULL)
          *(gboolean *) (base + def->offset) = value;
        break;
      }
    case OPT_ID:
    case OPT_SECRET:
      {
        gsize len = strlen (text);
        if (len == 0 || len > MAX_ID_LEN)
          message = g_strdup_printf ("%s must be 1 to %d bytes", def->name, MAX_ID_LEN);
        else
          {
            char **field = (char **) (base + def->offset);
            if (*field != NULL && def->type == OPT_SECRET)
              memset (*field, 0, strlen (*field));
            g_free (*field);
            *field = g_strdup (text);
          }
        break;
      }
    case OPT_REMOTES:
      {
        GtRemote *remote = NULL;
        message = parse_remote (text, &remote);
        if (message == NULL)
          g_ptr_array_add (*(GPtrArray **) (base + def->offset), remote);
        break;
      }
    default:
      g_assert_not_reached ();
    }
  return message;
}

/* ------------------------------------------------------------------------------------------ */
/* YAML */

typedef struct
{
  yaml_document_t doc;
  gboolean have_doc;
  const char *file;
  char *base_dir;     /* folder of the file for relative paths; NULL = as given */
  GPtrArray *warnings;
  GHashTable *places; /* KeyPlace of values that validate() checks */
  gboolean users_file; /* loading options.users: command-line users are kept */
  GtConfigIssue **issue_out;
  GError **error;
} Loader;

static void
loader_clear (Loader *ld)
{
  if (ld->have_doc)
    yaml_document_delete (&ld->doc);
  ld->have_doc = FALSE;
  g_clear_pointer (&ld->base_dir, g_free);
}

static guint
node_line (yaml_node_t *node)
{
  return node != NULL ? (guint) node->start_mark.line + 1 : 0;
}

static guint
node_column (yaml_node_t *node)
{
  return node != NULL ? (guint) node->start_mark.column + 1 : 0;
}

static gboolean G_GNUC_PRINTF (4, 5)
ld_fail (Loader *ld, yaml_node_t *node, int code, const char *format, ...)
{
  va_list args;
  char *message;

  va_start (args, format);
  message = g_strdup_vprintf (format, args);
  va_end (args);
  return fail_with_issue (issue_new_take (ld->file, node_line (node), node_column (node),
                                          message),
                          code, ld->issue_out, ld->error);
}

static gboolean
ld_fail_take (Loader *ld, yaml_node_t *node, int code, char *message)
{
  return fail_with_issue (issue_new_take (ld->file, node_line (node), node_column (node),
                                          message),
                          code, ld->issue_out, ld->error);
}

static const char *
node_kind_name (yaml_node_t *node)
{
  switch (node->type)
    {
    case YAML_SCALAR_NODE:
      return "scalar";
    case YAML_SEQUENCE_NODE:
      return "list";
    case YAML_MAPPING_NODE:
      return "mapping";
    case YAML_NO_NODE:
    default:
      return "nothing";
    }
}

static gboolean
node_is_null (yaml_node_t *node)
{
  const char *value;

  if (node == NULL)
    return TRUE;
  if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    return FALSE;
  value = (const char *) node->data.scalar.value;
  return node->data.scalar.length == 0 || strcmp (value, "~") == 0
         || strcmp (value, "null") == 0 || strcmp (value, "Null") == 0
         || strcmp (value, "NULL") == 0;
}

static yaml_node_t *
ld_node (Loader *ld, int id)
{
  return yaml_document_get_node (&ld->doc, id);
}

/* Scalar text of a node (NULL for a null node). Fails on other shapes and on NUL bytes. */
static gboolean
ld_scalar (Loader *ld, yaml_node_t *node, const char *key, const char **out)
{
  *out = NULL;
  if (node_is_null (node))
    return TRUE;
  if (node->type != YAML_SCALAR_NODE)
    return ld_fail (ld, node, GT_CONFIG_ERROR_TYPE, "'%s' must be a scalar, not a %s", key,
                    node_kind_name (node));
  if (strlen ((const char *) node->data.scalar.value) != node->data.scalar.length)
    return ld_fail (ld, node, GT_CONFIG_ERROR_VALUE, "'%s' contains a NUL byte", key);
  *out = (const char *) node->data.scalar.value;
  return TRUE;
}

/* Checks a mapping (keys are scalars, no duplicate keys); a null node is an empty mapping. */
static gboolean
ld_mapping (Loader *ld, yaml_node_t *node, const char *key, gboolean *present)
{
  g_autoptr (GHashTable) seen = NULL;

  *present = FALSE;
  if (node_is_null (node))
    return TRUE;
  if (node->type != YAML_MAPPING_NODE)
    return ld_fail (ld, node, GT_CONFIG_ERROR_TYPE, "'%s' must be a mapping, not a %s", key,
                    node_kind_name (node));
  seen = g_hash_table_new (g_str_hash, g_str_equal);
  for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
       pair < node->data.mapping.pairs.top; pair++)
    {
      yaml_node_t *k = ld_node (ld, pair->key);
      const char *name;

      if (k == NULL || k->type != YAML_SCALAR_NODE)
        return ld_fail (ld, k != NULL ? k : node, GT_CONFIG_ERROR_TYPE,
                        "keys of '%s' must be scalars", key);
      name = (const char *) k->data.scalar.value;
      if (strlen (name) != k->data.scalar.length)
        return ld_fail (ld, k, GT_CONFIG_ERROR_VALUE, "a key of '%s' contains a NUL byte", key);
      if (!g_hash_table_add (seen, (gpointer) name))
        return ld_fail (ld, k, GT_CONFIG_ERROR_INVALID, "duplicate key '%s'", name);
    }
  *present = TRUE;
  return TRUE;
}

static gboolean
ld_sequence (Loader *ld, yaml_node_t *node, const char *key, gboolean *present)
{
  *present = FALSE;
  if (node_is_null (node))
    return TRUE;
  if (node->type != YAML_SEQUENCE_NODE)
    return ld_fail (ld, node, GT_CONFIG_ERROR_TYPE, "'%s' must be a list, not a %s", key,
                    node_kind_name (node));
  *present = TRUE;
  return TRUE;
}

/* Loops over the pairs of a mapping already checked by ld_mapping(); `continue` works, `break`
 * does not (nested loops). */
#define FOREACH_PAIR(ld, map, kvar, vvar, namevar)                                              \
  for (yaml_node_pair_t *pair_ = (map)->data.mapping.pairs.start;                               \
       pair_ < (map)->data.mapping.pairs.top; pair_++)                                          \
    for (yaml_node_t *kvar = ld_node ((ld), pair_->key), *vvar = ld_node ((ld), pair_->value),  \
                     *once_ = kvar;                                                             \
         once_ != NULL; once_ = NULL)                                                           \
      for (const char *namevar = (const char *) kvar->data.scalar.value; namevar != NULL;     \
           namevar = NULL)

#define FOREACH_ITEM(ld, seq, ivar)                                                             \
  for (yaml_node_item_t *item_ = (seq)->data.sequence.items.start;                              \
       item_ < (seq)->data.sequence.items.top; item_++)                                         \
    for (yaml_node_t *ivar = ld_node ((ld), *item_), *oncei_ = (yaml_node_t *) 1;              \
         oncei_ != NULL; oncei_ = NULL)

static void
ld_warn_unknown (Loader *ld, yaml_node_t *key_node, const char *name)
{
  add_warning (ld->warnings, ld->file, node_line (key_node), node_column (key_node),
               "unknown key '%s'", name);
}

/* Warns about a GT key we do not implement; checks its shape loosely (never fails). */
static void
ld_warn_unsupported (Loader *ld, yaml_node_t *key_node, yaml_node_t *value,
                     const char *display, LooseType type)
{
  gboolean ok = TRUE;
  const char *expected = "a scalar";

  if (!node_is_null (value))
    switch (type)
      {
      case LOOSE_SCALAR:
      case LOOSE_BOOL:
        ok = value->type == YAML_SCALAR_NODE;
        break;
      case LOOSE_LIST:
        expected = "a scalar or a list of scalars";
        if (value->type == YAML_SEQUENCE_NODE)
          {
            FOREACH_ITEM (ld, value, item)
              if (item == NULL || item->type != YAML_SCALAR_NODE)
                ok = FALSE;
          }
        else
          ok = value->type == YAML_SCALAR_NODE;
        break;
      case LOOSE_MAP:
        expected = "a mapping";
        ok = value->type == YAML_MAPPING_NODE;
        break;
      default:
        g_assert_not_reached ();
      }
  if (ok)
    add_warning (ld->warnings, ld->file, node_line (key_node), node_column (key_node),
                 "key '%s' is not supported by this version of gt and is ignored", display);
  else
    add_warning (ld->warnings, ld->file, node_line (key_node), node_column (key_node),
                 "key '%s' is not supported by this version of gt and is ignored (it should "
                 "be %s, not a %s)",
                 display, expected, node_kind_name (value));
}

static void
ld_place (Loader *ld, const char *key, yaml_node_t *node)
{
  if (ld->places != NULL)
    places_set (ld->places, key, ld->file, node_line (node), node_column (node));
}

/* Sets one value of an option, with the file's rules for relative paths. */
static gboolean
ld_option_value (Loader *ld, void *config, const OptDef *def, yaml_node_t *node,
                 const char *text)
{
  g_autofree char *resolved = NULL;
  g_autofree char *warning = NULL;
  char *message;

  if ((def->type == OPT_PATH || (def->type == OPT_REMOTE_CERT && !looks_like_pin (text)))
      && *text != '\0' && ld->base_dir != NULL && !g_path_is_absolute (text))
    text = resolved = g_build_filename (ld->base_dir, text, NULL);
  message = opt_set (config, def, text, &warning);
  if (message != NULL)
    return ld_fail_take (ld, node, GT_CONFIG_ERROR_VALUE, message);
  if (warning != NULL)
    add_warning (ld->warnings, ld->file, node_line (node), node_column (node), "%s", warning);
  return TRUE;
}

/* An option of the `options:` mapping, from the tables above. */
static gboolean
ld_option (Loader *ld, void *config, const OptDef *def, yaml_node_t *value)
{
  const char *text = NULL;

  if (def->type == OPT_REMOTES || def->type == OPT_CIDRS)
    {
      gboolean is_list = FALSE;

      if (node_is_null (value))
        return TRUE;
      /* YAML replaces: a file loaded later wins over an earlier one. */
      if (def->type == OPT_REMOTES)
        g_ptr_array_set_size (*(GPtrArray **) ((char *) config + def->offset), 0);
      else
        g_clear_pointer ((char ***) ((char *) config + def->offset), g_strfreev);
      if (value != NULL && value->type == YAML_SEQUENCE_NODE)
        {
          if (!ld_sequence (ld, value, def->name, &is_list))
            return FALSE;
          FOREACH_ITEM (ld, value, item)
          {
            if (item == NULL)
              continue;
            if (!ld_scalar (ld, item, def->name, &text))
              return FALSE;
            if (text == NULL)
              continue;
            if (!ld_option_value (ld, config, def, item, text))
              return FALSE;
          }
          return TRUE;
        }
    }

  if (!ld_scalar (ld, value, def->name, &text))
    return FALSE;
  if (text == NULL)
    return TRUE; /* null: keep the current value */
  ld_place (ld, def->name, value);
  return ld_option_value (ld, config, def, value, text);
}

static gboolean
ld_options (Loader *ld, void *config, yaml_node_t *map, const OptDef *opts, gsize n_opts,
            const LooseDef *unsupported, gsize n_unsupported)
{
  gboolean present;

  if (!ld_mapping (ld, map, "options", &present))
    return FALSE;
  if (!present)
    return TRUE;
  FOREACH_PAIR (ld, map, key, value, name)
  {
    const OptDef *def = find_opt (opts, n_opts, name);
    const LooseDef *loose;

    if (def != NULL)
      {
        if (!ld_option (ld, config, def, value))
          return FALSE;
      }
    else if ((loose = find_loose (unsupported, n_unsupported, name)) != NULL)
      ld_warn_unsupported (ld, key, value, name, loose->type);
    else
      ld_warn_unknown (ld, key, name);
  }
  return TRUE;
}

/* A `tcp:` list of `{range: A-B}` entries, appended to ranges (and places). */
static gboolean
ld_tcp_ranges (Loader *ld, yaml_node_t *list, const char *key, GArray **ranges,
               GArray **places)
{
  gboolean present;

  if (!ld_sequence (ld, list, key, &present))
    return FALSE;
  if (!present)
    return TRUE;
  FOREACH_ITEM (ld, list, item)
  {
    gboolean is_map;

    if (item == NULL)
      continue;
    if (!ld_mapping (ld, item, "tcp", &is_map))
      return FALSE;
    if (!is_map)
      continue;
    FOREACH_PAIR (ld, item, k, v, name)
    {
      if (strcmp (name, "range") == 0)
        {
          const char *text;
          GtPortRange range;
          Place place = { node_line (v), node_column (v) };
          char *message;

          if (!ld_scalar (ld, v, "range", &text))
            return FALSE;
          if (text == NULL)
            continue;
          message = range_message (text, &range);
          if (message != NULL)
            return ld_fail_take (ld, v, GT_CONFIG_ERROR_VALUE, message);
          if (*ranges == NULL)
            *ranges = g_array_new (FALSE, FALSE, sizeof (GtPortRange));
          g_array_append_val (*ranges, range);
          if (places != NULL)
            {
              if (*places == NULL)
                *places = g_array_new (FALSE, FALSE, sizeof (Place));
              g_array_append_val (*places, place);
            }
        }
      else
        ld_warn_unknown (ld, k, name);
    }
  }
  return TRUE;
}

/* A `host:` mapping (global or per user): GT's host-prefix rules. */
typedef struct
{
  gboolean number_set;
  guint64 number;
  gboolean with_id_set;
  gboolean with_id;
  gboolean regex_set;
  char **regex; /* NULL for an empty list */
} HostRules;

static void
host_rules_clear (HostRules *rules)
{
  g_clear_pointer (&rules->regex, g_strfreev);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (HostRules, host_rules_clear)

static gboolean
ld_host_regex_item (Loader *ld, yaml_node_t *node, const char *key_prefix, HostRules *rules)
{
  const char *text;
  char *message;
  g_autofree char *place_key = NULL;

  if (!ld_scalar (ld, node, "regex", &text))
    return FALSE;
  if (text == NULL)
    return TRUE;
  message = parse_regex (text);
  if (message != NULL)
    return ld_fail_take (ld, node, GT_CONFIG_ERROR_VALUE, message);
  place_key = g_strdup_printf ("%s.regex.%u", key_prefix,
                               rules->regex != NULL ? g_strv_length (rules->regex) : 0);
  ld_place (ld, place_key, node);
  strv_append (&rules->regex, text);
  return TRUE;
}

static gboolean
ld_host (Loader *ld, yaml_node_t *map, const char *key_prefix, HostRules *rules)
{
  gboolean present;

  if (!ld_mapping (ld, map, "host", &present))
    return FALSE;
  if (!present)
    return TRUE;
  FOREACH_PAIR (ld, map, k, v, name)
  {
    const char *text;
    char *message;

    if (strcmp (name, "number") == 0)
      {
        if (!ld_scalar (ld, v, "number", &text))
          return FALSE;
        if (text == NULL)
          continue;
        message = parse_uint (text, G_MAXINT32, &rules->number);
        if (message != NULL)
          return ld_fail_take (ld, v, GT_CONFIG_ERROR_VALUE, message);
        rules->number_set = TRUE;
      }
    else if (strcmp (name, "withID") == 0)
      {
        if (!ld_scalar (ld, v, "withID", &text))
          return FALSE;
        if (text == NULL)
          continue;
        message = parse_bool (text, &rules->with_id);
        if (message != NULL)
          return ld_fail_take (ld, v, GT_CONFIG_ERROR_VALUE, message);
        rules->with_id_set = TRUE;
      }
    else if (strcmp (name, "regex") == 0)
      {
        if (node_is_null (v))
          continue;
        g_clear_pointer (&rules->regex, g_strfreev);
        rules->regex_set = TRUE;
        if (v->type == YAML_SEQUENCE_NODE)
          {
            FOREACH_ITEM (ld, v, item)
            {
              if (item != NULL && !ld_host_regex_item (ld, item, key_prefix, rules))
                return FALSE;
            }
          }
        else if (!ld_host_regex_item (ld, v, key_prefix, rules))
          return FALSE;
      }
    else
      ld_warn_unknown (ld, k, name);
  }
  return TRUE;
}

static gboolean
ld_user_fields (Loader *ld, UserEntry *entry, yaml_node_t *value, const char *id)
{
  FOREACH_PAIR (ld, value, k, v, name)
  {
    const char *text;
    guint64 number;
    char *message;

    if (strcmp (name, "secret") == 0)
      {
        gsize len;

        if (!ld_scalar (ld, v, "secret", &text))
          return FALSE;
        if (text == NULL)
          continue;
        len = strlen (text);
        if (len == 0 || len > MAX_SECRET_LEN)
          return ld_fail (ld, v, GT_CONFIG_ERROR_VALUE,
                          "secret of user '%s' must be 1 to %d bytes", id, MAX_SECRET_LEN);
        g_free (entry->pub.secret);
        entry->pub.secret = g_strdup (text);
      }
    else if (strcmp (name, "tcp") == 0)
      {
        if (!ld_tcp_ranges (ld, v, "tcp", &entry->pub.tcp_ranges, &entry->range_places))
          return FALSE;
      }
    else if (strcmp (name, "tcpNumber") == 0 || strcmp (name, "speed") == 0
             || strcmp (name, "connections") == 0)
      {
        guint64 max = name[0] == 't'   ? G_MAXUINT16
                      : name[0] == 's' ? G_MAXUINT32
                                       : (guint64) G_MAXINT32;

        if (!ld_scalar (ld, v, name, &text))
          return FALSE;
        if (text == NULL)
          continue;
        message = parse_uint (text, max, &number);
        if (message != NULL)
          return ld_fail_take (ld, v, GT_CONFIG_ERROR_VALUE, message);
        if (name[0] == 't')
          entry->pub.tcp_number = (gint) number;
        else if (name[0] == 's')
          entry->pub.speed = number; /* 0 = options.speed */
        else
          entry->pub.connections = number == 0 ? -1 : (gint) number; /* GT: 0 = global */
      }
    else if (strcmp (name, "host") == 0)
      {
        g_auto (HostRules) rules = { 0 };
        g_autofree char *key_prefix = g_strdup_printf ("users.%s.host", id);

        if (!ld_host (ld, v, key_prefix, &rules))
          return FALSE;
        if (rules.number_set)
          entry->pub.host_number = (gint) rules.number;
        if (rules.with_id_set)
          entry->pub.host_with_id = rules.with_id ? 1 : 0;
        if (rules.regex_set)
          {
            g_strfreev (entry->pub.host_regex);
            entry->pub.host_regex = g_steal_pointer (&rules.regex);
          }
      }
    else
      ld_warn_unknown (ld, k, name);
  }
  return TRUE;
}

static gboolean
ld_user (Loader *ld, GtServerConfig *config, yaml_node_t *key, yaml_node_t *value,
         const char *id)
{
  UserEntry *entry;
  gboolean present;
  gint index;
  gsize id_len = strlen (id);

  if (id_len == 0 || id_len > MAX_ID_LEN)
    return ld_fail (ld, key, GT_CONFIG_ERROR_VALUE, "user id must be 1 to %d bytes",
                    MAX_ID_LEN);
  if (!ld_mapping (ld, value, id, &present))
    return FALSE;

  entry = user_new (id, node_line (key), node_column (key));
  entry->file = g_strdup (ld->file);
  if (present && !ld_user_fields (ld, entry, value, id))
    {
      user_free (&entry->pub);
      return FALSE;
    }

  index = find_user_index (config, id);
  if (index < 0)
    g_ptr_array_add (config->users, entry);
  else if (ld->users_file && ((UserEntry *) g_ptr_array_index (config->users, index))->from_cli)
    user_free (&entry->pub); /* GT: --id/--secret win over the users file */
  else
    {
      /* The users file replaces the config's entry; a file loaded twice: the later wins. */
      user_free (g_ptr_array_index (config->users, index));
      g_ptr_array_index (config->users, index) = entry;
    }
  return TRUE;
}

static gboolean
ld_users (Loader *ld, GtServerConfig *config, yaml_node_t *map)
{
  gboolean present;

  if (!ld_mapping (ld, map, "users", &present))
    return FALSE;
  if (!present)
    return TRUE;
  FOREACH_PAIR (ld, map, key, value, id)
  {
    if (!ld_user (ld, config, key, value, id))
      return FALSE;
  }
  return TRUE;
}

/* The `type:` key; expected is SERVER, CLIENT or UNKNOWN (detect only). */
static gboolean
ld_type (Loader *ld, yaml_node_t *value, GtConfigKind expected, GtConfigKind *kind_out)
{
  const char *text;
  GtConfigKind kind;

  if (!ld_scalar (ld, value, "type", &text))
    return FALSE;
  if (text == NULL)
    {
      *kind_out = GT_CONFIG_KIND_UNKNOWN;
      return TRUE;
    }
  if (strcmp (text, "server") == 0)
    kind = GT_CONFIG_KIND_SERVER;
  else if (strcmp (text, "client") == 0)
    kind = GT_CONFIG_KIND_CLIENT;
  else
    return ld_fail (ld, value, GT_CONFIG_ERROR_VALUE,
                    "unknown type '%s' (expected server or client)", text);
  if (expected != GT_CONFIG_KIND_UNKNOWN && kind != expected)
    return ld_fail (ld, value, GT_CONFIG_ERROR_INVALID,
                    "type is '%s' but a %s configuration was expected", text,
                    expected == GT_CONFIG_KIND_SERVER ? "server" : "client");
  *kind_out = kind;
  return TRUE;
}

static gboolean
ld_service (Loader *ld, GtClientConfig *config, yaml_node_t *item)
{
  yaml_node_t *local_node = NULL;
  GtServiceConfig *service = NULL;
  gboolean present, random_set = FALSE;
  const char *text;
  char *message;

  if (!ld_mapping (ld, item, "services", &present))
    return FALSE;
  if (!present)
    return ld_fail (ld, item, GT_CONFIG_ERROR_INVALID, "service without 'local'");

  FOREACH_PAIR (ld, item, k, v, name)
  {
    if (strcmp (name, "local") == 0)
      local_node = v;
  }
  if (!ld_scalar (ld, local_node, "local", &text))
    return FALSE;
  if (text == NULL)
    return ld_fail (ld, local_node != NULL ? local_node : item, GT_CONFIG_ERROR_INVALID,
                    "service without 'local'");
  message = parse_local_url (text, &service);
  if (message != NULL)
    return ld_fail_take (ld, local_node, GT_CONFIG_ERROR_VALUE, message);
  service->line = node_line (item);
  service->column = node_column (item);
  g_ptr_array_add (config->services, service);

  FOREACH_PAIR (ld, item, k, v, name)
  {
    if (strcmp (name, "local") == 0)
      continue;
    if (strcmp (name, "hostPrefix") == 0)
      {
        char *prefix = NULL;
        if (!ld_scalar (ld, v, name, &text))
          return FALSE;
        if (text == NULL)
          continue;
        message = parse_host_prefix (text, &prefix);
        if (message != NULL)
          return ld_fail_take (ld, v, GT_CONFIG_ERROR_VALUE, message);
        g_free (service->host_prefix);
        service->host_prefix = prefix;
      }
    else if (strcmp (name, "remoteTCPPort") == 0)
      {
        if (!ld_scalar (ld, v, name, &text))
          return FALSE;
        if (text == NULL)
          continue;
        message = parse_port (text, TRUE, &service->remote_tcp_port);
        if (message != NULL)
          return ld_fail_take (ld, v, GT_CONFIG_ERROR_VALUE, message);
      }
    else if (strcmp (name, "remoteTCPRandom") == 0 || strcmp (name, "useLocalAsHTTPHost") == 0)
      {
        gboolean value;
        if (!ld_scalar (ld, v, name, &text))
          return FALSE;
        if (text == NULL)
          continue;
        message = parse_bool (text, &value);
        if (message != NULL)
          return ld_fail_take (ld, v, GT_CONFIG_ERROR_VALUE, message);
        if (name[0] == 'r')
          {
            service->remote_tcp_random = value;
            random_set = TRUE;
          }
        else
          service->use_local_as_http_host = value;
      }
    else if (strcmp (name, "localTimeout") == 0)
      {
        guint64 ms;
        if (!ld_scalar (ld, v, name, &text))
          return FALSE;
        if (text == NULL)
          continue;
        message = parse_duration_value (text, &ms);
        if (message != NULL)
          return ld_fail_take (ld, v, GT_CONFIG_ERROR_VALUE, message);
        service->local_timeout_ms = ms == 0 ? DEFAULT_LOCAL_TIMEOUT_MS : ms;
      }
    else if (strcmp (name, "proxyProtocol") == 0)
      {
        if (!ld_scalar (ld, v, name, &text))
          return FALSE;
        if (text == NULL)
          continue;
        message = parse_proxy_protocol_version (text, &service->proxy_protocol);
        if (message != NULL)
          return ld_fail_take (ld, v, GT_CONFIG_ERROR_VALUE, message);
      }
    else
      ld_warn_unknown (ld, k, name);
  }

  if (!random_set)
    service->remote_tcp_random = service->kind == GT_SERVICE_KIND_TCP
                                 && service->remote_tcp_port == 0;
  return TRUE;
}

static gboolean
ld_services (Loader *ld, GtClientConfig *config, yaml_node_t *list)
{
  gboolean present;

  if (!ld_sequence (ld, list, "services", &present))
    return FALSE;
  if (!present)
    return TRUE;
  FOREACH_ITEM (ld, list, item)
  {
    if (item == NULL)
      continue;
    if (!ld_service (ld, config, item))
      return FALSE;
  }
  return TRUE;
}

/* Computes line/column of a byte offset (reader errors only give an offset). */
static void
offset_to_place (const char *data, gsize len, gsize offset, guint *line, guint *column)
{
  *line = 1;
  *column = 1;
  for (gsize i = 0; i < offset && i < len; i++)
    {
      if (data[i] == '\n')
        {
          (*line)++;
          *column = 1;
        }
      else if (((guchar) data[i] & 0xc0) != 0x80)
        (*column)++;
    }
}

static gboolean
ld_parser_error (Loader *ld, yaml_parser_t *parser, const char *data, gsize len)
{
  guint line = 0, column = 0;
  char *message;

  if (parser->error == YAML_READER_ERROR)
    {
      offset_to_place (data, len, parser->problem_offset, &line, &column);
      message = g_strdup_printf ("YAML error: %s",
                                 parser->problem != NULL ? parser->problem : "bad input");
    }
  else if (parser->error == YAML_MEMORY_ERROR)
    message = g_strdup ("YAML error: out of memory");
  else
    {
      line = (guint) parser->problem_mark.line + 1;
      column = (guint) parser->problem_mark.column + 1;
      if (parser->context != NULL)
        message = g_strdup_printf ("YAML syntax error: %s (%s started at line %u, column %u)",
                                   parser->problem != NULL ? parser->problem : "unknown",
                                   parser->context,
                                   (guint) parser->context_mark.line + 1,
                                   (guint) parser->context_mark.column + 1);
      else
        message = g_strdup_printf ("YAML syntax error: %s",
                                   parser->problem != NULL ? parser->problem : "unknown");
    }
  return fail_with_issue (issue_new_take (ld->file, line, column, message),
                          GT_CONFIG_ERROR_SYNTAX, ld->issue_out, ld->error);
}

/* Parses the first document; *root_out is NULL for an empty file. A later document is a
 * warning (GT reads only the first). */
static gboolean
ld_parse (Loader *ld, const char *data, gssize len, yaml_node_t **root_out)
{
  yaml_parser_t parser;
  yaml_document_t extra;
  gsize size = len < 0 ? strlen (data) : (gsize) len;
  gboolean ok = TRUE;
  yaml_node_t *root;

  *root_out = NULL;
  if (!yaml_parser_initialize (&parser))
    return fail_with_issue (issue_new_take (ld->file, 0, 0, g_strdup ("YAML error: out of memory")),
                            GT_CONFIG_ERROR_SYNTAX, ld->issue_out, ld->error);
  yaml_parser_set_input_string (&parser, (const unsigned char *) data, size);
  if (!yaml_parser_load (&parser, &ld->doc))
    {
      ok = ld_parser_error (ld, &parser, data, size);
      yaml_parser_delete (&parser);
      return ok;
    }
  ld->have_doc = TRUE;
  root = yaml_document_get_root_node (&ld->doc);
  if (root != NULL)
    {
      if (!yaml_parser_load (&parser, &extra))
        ok = ld_parser_error (ld, &parser, data, size);
      else
        {
          yaml_node_t *extra_root = yaml_document_get_root_node (&extra);
          if (extra_root != NULL)
            add_warning (ld->warnings, ld->file, node_line (extra_root),
                         node_column (extra_root),
                         "only the first YAML document is read; the rest is ignored");
          yaml_document_delete (&extra);
        }
    }
  yaml_parser_delete (&parser);
  *root_out = root;
  return ok;
}

static gboolean
ld_root_mapping (Loader *ld, yaml_node_t *root, gboolean *present)
{
  *present = FALSE;
  if (root == NULL || node_is_null (root))
    return TRUE;
  if (root->type != YAML_MAPPING_NODE)
    return ld_fail (ld, root, GT_CONFIG_ERROR_TYPE,
                    "the top level must be a mapping, not a %s", node_kind_name (root));
  return ld_mapping (ld, root, "top level", present);
}

static gboolean
server_load (GtServerConfig *config, Loader *ld, const char *data, gssize len)
{
  yaml_node_t *root;
  gboolean present;
  GtConfigKind kind;

  if (!ld_parse (ld, data, len, &root) || !ld_root_mapping (ld, root, &present))
    return FALSE;
  if (!present)
    return TRUE;
  FOREACH_PAIR (ld, root, key, value, name)
  {
    if (strcmp (name, "version") == 0)
      ; /* ignored, as GT does */
    else if (strcmp (name, "type") == 0)
      {
        if (!ld_type (ld, value, GT_CONFIG_KIND_SERVER, &kind))
          return FALSE;
      }
    else if (strcmp (name, "options") == 0)
      {
        if (!ld_options (ld, config, value, server_opts, G_N_ELEMENTS (server_opts),
                         server_unsupported, G_N_ELEMENTS (server_unsupported)))
          return FALSE;
      }
    else if (strcmp (name, "users") == 0)
      {
        if (!ld_users (ld, config, value))
          return FALSE;
      }
    else if (strcmp (name, "tcp") == 0)
      {
        if (!ld_tcp_ranges (ld, value, "tcp", &config->tcp_ranges, NULL))
          return FALSE;
      }
    else if (strcmp (name, "host") == 0)
      {
        ServerPriv *priv = (ServerPriv *) config;
        g_auto (HostRules) rules = { 0 };

        if (!ld_host (ld, value, "host", &rules))
          return FALSE;
        if (rules.number_set)
          {
            config->host_number = (guint) rules.number;
            priv->host_number_from_file = TRUE;
          }
        if (rules.with_id_set)
          {
            config->host_with_id = rules.with_id;
            priv->host_with_id_from_file = TRUE;
          }
        if (rules.regex_set)
          {
            /* Replaces an earlier file's list; --hostRegex values are added after. */
            g_strfreev (config->host_regex);
            config->host_regex = g_steal_pointer (&rules.regex);
          }
      }
    else
      ld_warn_unknown (ld, key, name);
  }
  return TRUE;
}

static gboolean
client_load (GtClientConfig *config, Loader *ld, const char *data, gssize len)
{
  yaml_node_t *root;
  gboolean present;
  GtConfigKind kind;

  if (!ld_parse (ld, data, len, &root) || !ld_root_mapping (ld, root, &present))
    return FALSE;
  if (!present)
    return TRUE;
  FOREACH_PAIR (ld, root, key, value, name)
  {
    if (strcmp (name, "version") == 0)
      ;
    else if (strcmp (name, "type") == 0)
      {
        if (!ld_type (ld, value, GT_CONFIG_KIND_CLIENT, &kind))
          return FALSE;
      }
    else if (strcmp (name, "options") == 0)
      {
        if (!ld_options (ld, config, value, client_opts, G_N_ELEMENTS (client_opts),
                         client_unsupported, G_N_ELEMENTS (client_unsupported)))
          return FALSE;
      }
    else if (strcmp (name, "services") == 0)
      {
        if (!ld_services (ld, config, value))
          return FALSE;
      }
    else
      ld_warn_unknown (ld, key, name);
  }
  client_clamp (config);
  return TRUE;
}

/* Relative paths in a file are relative to the file's folder ("." means as given). */
static char *
base_dir_of (const char *filename)
{
  g_autofree char *dir = NULL;

  if (filename == NULL)
    return NULL;
  dir = g_path_get_dirname (filename);
  if (strcmp (dir, ".") == 0)
    return NULL;
  return g_steal_pointer (&dir);
}

static gboolean
read_file (const char *path, char **data, gsize *len, GtConfigIssue **issue_out,
           GError **error)
{
  g_autoptr (GError) local_error = NULL;

  if (!g_file_get_contents (path, data, len, &local_error))
    return fail_with_issue (issue_new_take (path, 0, 0,
                                            g_strdup_printf ("cannot read the file: %s",
                                                             local_error->message)),
                            GT_CONFIG_ERROR_IO, issue_out, error);
  return TRUE;
}

gboolean
gt_server_config_load_data (GtServerConfig *config, const char *data, gssize len,
                            const char *filename, GtConfigIssue **issue_out, GError **error)
{
  Loader ld = { 0 };
  gboolean ok;

  g_return_val_if_fail (config != NULL, FALSE);
  g_return_val_if_fail (data != NULL || len == 0, FALSE);

  if (data == NULL)
    data = "";
  ld.file = filename != NULL ? filename : "<data>";
  ld.base_dir = base_dir_of (filename);
  ld.warnings = config->warnings;
  ld.places = ((ServerPriv *) config)->places;
  ld.issue_out = issue_out;
  ld.error = error;
  if (filename != NULL)
    {
      g_free (config->config_path);
      config->config_path = g_strdup (filename);
    }
  ok = server_load (config, &ld, data, len);
  loader_clear (&ld);
  return ok;
}

gboolean
gt_client_config_load_data (GtClientConfig *config, const char *data, gssize len,
                            const char *filename, GtConfigIssue **issue_out, GError **error)
{
  Loader ld = { 0 };
  gboolean ok;

  g_return_val_if_fail (config != NULL, FALSE);
  g_return_val_if_fail (data != NULL || len == 0, FALSE);

  if (data == NULL)
    data = "";
  ld.file = filename != NULL ? filename : "<data>";
  ld.base_dir = base_dir_of (filename);
  ld.warnings = config->warnings;
  ld.places = ((ClientPriv *) config)->places;
  ld.issue_out = issue_out;
  ld.error = error;
  if (filename != NULL)
    {
      g_free (config->config_path);
      config->config_path = g_strdup (filename);
    }
  ok = client_load (config, &ld, data, len);
  loader_clear (&ld);
  return ok;
}

gboolean
gt_server_config_load_file (GtServerConfig *config, const char *path,
                            GtConfigIssue **issue_out, GError **error)
{
  g_autofree char *data = NULL;
  gsize len = 0;

  g_return_val_if_fail (config != NULL, FALSE);
  g_return_val_if_fail (path != NULL, FALSE);

  if (!read_file (path, &data, &len, issue_out, error))
    return FALSE;
  return gt_server_config_load_data (config, data, (gssize) len, path, issue_out, error);
}

gboolean
gt_client_config_load_file (GtClientConfig *config, const char *path,
                            GtConfigIssue **issue_out, GError **error)
{
  g_autofree char *data = NULL;
  gsize len = 0;

  g_return_val_if_fail (config != NULL, FALSE);
  g_return_val_if_fail (path != NULL, FALSE);

  if (!read_file (path, &data, &len, issue_out, error))
    return FALSE;
  return gt_client_config_load_data (config, data, (gssize) len, path, issue_out, error);
}

static GtConfigKind
detect_kind (const char *data, gssize len, const char *filename, GError **error)
{
  Loader ld = { 0 };
  g_autoptr (GPtrArray) warnings = g_ptr_array_new_with_free_func (
    (GDestroyNotify) gt_config_issue_free);
  yaml_node_t *root;
  gboolean present;
  GtConfigKind kind = GT_CONFIG_KIND_SERVER;
  gboolean has_services = FALSE, has_type = FALSE;

  ld.file = filename != NULL ? filename : "<data>";
  ld.warnings = warnings;
  ld.error = error;
  if (!ld_parse (&ld, data, len, &root) || !ld_root_mapping (&ld, root, &present))
    {
      loader_clear (&ld);
      return GT_CONFIG_KIND_UNKNOWN;
    }
  if (present)
    {
      FOREACH_PAIR (&ld, root, key, value, name)
      {
        if (strcmp (name, "type") == 0)
          {
            GtConfigKind type_kind;
            if (!ld_type (&ld, value, GT_CONFIG_KIND_UNKNOWN, &type_kind))
              {
                loader_clear (&ld);
                return GT_CONFIG_KIND_UNKNOWN;
              }
            if (type_kind != GT_CONFIG_KIND_UNKNOWN)
              {
                has_type = TRUE;
                kind = type_kind;
              }
          }
        else if (strcmp (name, "services") == 0)
          has_services = TRUE;
      }
    }
  loader_clear (&ld);
  if (!has_type && has_services)
    kind = GT_CONFIG_KIND_CLIENT;
  return kind;
}

GtConfigKind
gt_config_detect_kind_data (const char *data, gssize len, GError **error)
{
  g_return_val_if_fail (data != NULL || len == 0, GT_CONFIG_KIND_UNKNOWN);
  return detect_kind (data != NULL ? data : "", len, NULL, error);
}

GtConfigKind
gt_config_detect_kind_file (const char *path, GError **error)
{
  g_autofree char *data = NULL;
  gsize len = 0;

  g_return_val_if_fail (path != NULL, GT_CONFIG_KIND_UNKNOWN);

  if (!read_file (path, &data, &len, NULL, error))
    return GT_CONFIG_KIND_UNKNOWN;
  return detect_kind (data, (gssize) len, path, error);
}

/* ------------------------------------------------------------------------------------------ */
/* Command line */

/* Splits "-name", "--name", "-name=value", "--name=value"; FALSE if arg is not an option. */
static gboolean
cli_split (const char *arg, char **name, const char **value)
{
  const char *start, *eq;

  if (arg[0] != '-' || arg[1] == '\0')
    return FALSE;
  start = arg[1] == '-' ? arg + 2 : arg + 1;
  if (*start == '\0' || *start == '-' || *start == '=')
    return FALSE;
  eq = strchr (start, '=');
  if (eq != NULL)
    {
      *name = g_strndup (start, eq - start);
      *value = eq + 1;
    }
  else
    {
      *name = g_strdup (start);
      *value = NULL;
    }
  return TRUE;
}

/* Gets the value of an option taking one: after '=' or the next argument. */
static gboolean
cli_take_value (int argc, char **argv, int *i, const char *name, const char *inline_value,
                const char **out, GError **error)
{
  if (inline_value != NULL)
    {
      *out = inline_value;
      return TRUE;
    }
  if (*i + 1 >= argc)
    return cli_fail (error, GT_CONFIG_ERROR_USAGE, "option '--%s' needs a value", name);
  (*i)++;
  *out = argv[*i];
  return TRUE;
}

/* Handles a GT option that we accept but ignore; returns FALSE with an error if the value is
 * missing. */
static gboolean
cli_unsupported (GPtrArray *warnings, const LooseDef *loose, int argc, char **argv, int *i,
                 const char *inline_value, GError **error)
{
  const char *value = NULL;

  if (loose->type == LOOSE_BOOL)
    {
      gboolean unused;
      g_autofree char *message = NULL;
      if (inline_value != NULL && (message = parse_bool (inline_value, &unused)) != NULL)
        return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--%s: %s", loose->name, message);
    }
  else if (!cli_take_value (argc, argv, i, loose->name, inline_value, &value, error))
    return FALSE;
  add_warning (warnings, NULL, 0, 0,
               "option '--%s' is not supported by this version of gt and is ignored",
               loose->name);
  return TRUE;
}

/* Applies a table option from the command line; value NULL means a bare boolean. */
static gboolean
cli_option (void *config, GPtrArray *warnings, GHashTable *places, const OptDef *def, int argc,
            char **argv, int *i, const char *inline_value, GError **error)
{
  const char *value = NULL;
  g_autofree char *message = NULL;
  g_autofree char *warning = NULL;

  if (def->type == OPT_BOOL && inline_value == NULL)
    value = "true";
  else if (!cli_take_value (argc, argv, i, def->name, inline_value, &value, error))
    return FALSE;
  message = opt_set (config, def, value, &warning);
  if (message != NULL)
    return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--%s: %s", def->name, message);
  if (warning != NULL)
    add_warning (warnings, NULL, 0, 0, "--%s: %s", def->name, warning);
  places_set (places, def->name, NULL, 0, 0);
  return TRUE;
}

gboolean
gt_server_config_apply_args (GtServerConfig *config, int argc, char **argv, GError **error)
{
  g_autoptr (GPtrArray) ids = g_ptr_array_new ();
  g_autoptr (GPtrArray) secrets = g_ptr_array_new ();
  ServerPriv *priv = (ServerPriv *) config;
  gboolean cidrs_replaced = FALSE;

  g_return_val_if_fail (config != NULL, FALSE);
  g_return_val_if_fail (argc == 0 || argv != NULL, FALSE);

  for (int i = 0; i < argc; i++)
    {
      g_autofree char *name = NULL;
      const char *inline_value = NULL, *value = NULL;
      const OptDef *def;
      const LooseDef *loose;

      if (!cli_split (argv[i], &name, &inline_value))
        return cli_fail (error, GT_CONFIG_ERROR_USAGE, "unexpected argument '%s'", argv[i]);

      if ((def = find_opt (server_opts, G_N_ELEMENTS (server_opts), name)) != NULL)
        {
          if (def->type == OPT_CIDRS && !cidrs_replaced)
            {
              /* The command line replaces the file's list. */
              g_clear_pointer (&config->proxy_protocol_trusted_cidrs, g_strfreev);
              cidrs_replaced = TRUE;
            }
          if (!cli_option (config, config->warnings, priv->places, def, argc, argv, &i,
                           inline_value, error))
            return FALSE;
        }
      else if (strcmp (name, "hostNumber") == 0)
        {
          guint64 number = 0;
          g_autofree char *message = NULL;
          if (!cli_take_value (argc, argv, &i, name, inline_value, &value, error))
            return FALSE;
          message = parse_uint (value, G_MAXINT32, &number);
          if (message != NULL)
            return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--hostNumber: %s", message);
          if (priv->host_number_from_file)
            add_warning (config->warnings, NULL, 0, 0,
                         "--hostNumber is ignored: host.number of the file wins (as in GT)");
          else
            config->host_number = (guint) number;
        }
      else if (strcmp (name, "hostWithID") == 0)
        {
          gboolean with_id = TRUE;
          g_autofree char *message = NULL;
          if (inline_value != NULL && (message = parse_bool (inline_value, &with_id)) != NULL)
            return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--hostWithID: %s", message);
          if (priv->host_with_id_from_file)
            add_warning (config->warnings, NULL, 0, 0,
                         "--hostWithID is ignored: host.withID of the file wins (as in GT)");
          else
            config->host_with_id = with_id;
        }
      else if (strcmp (name, "hostRegex") == 0)
        {
          g_autofree char *message = NULL;
          g_autofree char *place_key = NULL;
          if (!cli_take_value (argc, argv, &i, name, inline_value, &value, error))
            return FALSE;
          message = parse_regex (value);
          if (message != NULL)
            return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--hostRegex: %s", message);
          /* GT: the union of host.regex and --hostRegex. */
          place_key = g_strdup_printf (
            "host.regex.%u", config->host_regex != NULL ? g_strv_length (config->host_regex) : 0);
          places_set (priv->places, place_key, NULL, 0, 0);
          strv_append (&config->host_regex, value);
        }
      else if (strcmp (name, "id") == 0 || strcmp (name, "secret") == 0)
        {
          gsize len;
          if (!cli_take_value (argc, argv, &i, name, inline_value, &value, error))
            return FALSE;
          len = strlen (value);
          if (len == 0 || len > MAX_ID_LEN)
            return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--%s: %s must be 1 to %d bytes", name,
                             name, MAX_ID_LEN);
          g_ptr_array_add (name[0] == 'i' ? ids : secrets, (gpointer) value);
        }
      else if (strcmp (name, "tcpRange") == 0)
        {
          GtPortRange range;
          g_autofree char *message = NULL;
          if (!cli_take_value (argc, argv, &i, name, inline_value, &value, error))
            return FALSE;
          message = range_message (value, &range);
          if (message != NULL)
            return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--tcpRange: %s", message);
          g_array_append_val (config->tcp_ranges, range);
        }
      else if ((loose = find_loose (server_unsupported, G_N_ELEMENTS (server_unsupported), name))
               != NULL)
        {
          if (!cli_unsupported (config->warnings, loose, argc, argv, &i, inline_value, error))
            return FALSE;
        }
      else
        return cli_fail (error, GT_CONFIG_ERROR_USAGE, "unknown option '--%s'", name);
    }

  if (ids->len != secrets->len)
    return cli_fail (error, GT_CONFIG_ERROR_USAGE,
                     "--id and --secret must be given the same number of times (%u --id, %u "
                     "--secret)",
                     ids->len, secrets->len);
  for (guint i = 0; i < ids->len; i++)
    {
      const char *id = g_ptr_array_index (ids, i);
      UserEntry *entry = user_new (id, 0, 0);
      gint index = find_user_index (config, id);

      entry->from_cli = TRUE;
      entry->pub.secret = g_strdup (g_ptr_array_index (secrets, i));
      if (index >= 0)
        {
          /* GT: a command-line user replaces the file's entry (secret only). */
          user_free (g_ptr_array_index (config->users, index));
          g_ptr_array_index (config->users, index) = entry;
        }
      else
        g_ptr_array_add (config->users, entry);
    }
  return TRUE;
}

static gboolean
is_service_option (const char *name)
{
  return strcmp (name, "hostPrefix") == 0 || strcmp (name, "remoteTCPPort") == 0
         || strcmp (name, "remoteTCPRandom") == 0 || strcmp (name, "useLocalAsHTTPHost") == 0
         || strcmp (name, "localTimeout") == 0 || strcmp (name, "proxyProtocol") == 0;
}

static char *
service_set (GtServiceConfig *service, const char *name, const char *value, gboolean *random_set)
{
  char *message = NULL;

  if (strcmp (name, "hostPrefix") == 0)
    {
      char *prefix = NULL;
      message = parse_host_prefix (value, &prefix);
      if (message == NULL)
        {
          g_free (service->host_prefix);
          service->host_prefix = prefix;
        }
    }
  else if (strcmp (name, "remoteTCPPort") == 0)
    message = parse_port (value, TRUE, &service->remote_tcp_port);
  else if (strcmp (name, "remoteTCPRandom") == 0)
    {
      message = parse_bool (value, &service->remote_tcp_random);
      *random_set = TRUE;
    }
  else if (strcmp (name, "useLocalAsHTTPHost") == 0)
    message = parse_bool (value, &service->use_local_as_http_host);
  else if (strcmp (name, "localTimeout") == 0)
    {
      guint64 ms = 0;
      message = parse_duration_value (value, &ms);
      if (message == NULL)
        service->local_timeout_ms = ms == 0 ? DEFAULT_LOCAL_TIMEOUT_MS : ms;
    }
  else if (strcmp (name, "proxyProtocol") == 0)
    message = parse_proxy_protocol_version (value, &service->proxy_protocol);
  else
    g_assert_not_reached ();
  return message;
}

typedef struct
{
  char *name;
  const char *value; /* NULL = bare boolean */
} CliItem;

static void
cli_item_clear (CliItem *item)
{
  g_free (item->name);
}

gboolean
gt_client_config_apply_args (GtClientConfig *config, int argc, char **argv, GError **error)
{
  g_autoptr (GArray) items = g_array_new (FALSE, TRUE, sizeof (CliItem));
  g_autoptr (GPtrArray) services = g_ptr_array_new_with_free_func (
    (GDestroyNotify) service_free);
  g_autoptr (GArray) random_set = g_array_new (FALSE, TRUE, sizeof (gboolean));
  gboolean remotes_replaced = FALSE;
  gint current = -1;

  g_return_val_if_fail (config != NULL, FALSE);
  g_return_val_if_fail (argc == 0 || argv != NULL, FALSE);

  g_array_set_clear_func (items, (GDestroyNotify) cli_item_clear);

  /* First pass: split into (name, value) and create the services, so that options written
   * before a single --local can still reach it (GT ignores positions then). */
  for (int i = 0; i < argc; i++)
    {
      CliItem item = { NULL, NULL };
      const char *inline_value = NULL;
      const OptDef *def;
      const LooseDef *loose;
      gboolean bare_ok;

      if (!cli_split (argv[i], &item.name, &inline_value))
        return cli_fail (error, GT_CONFIG_ERROR_USAGE, "unexpected argument '%s'", argv[i]);
      g_array_append_val (items, item);

      def = find_opt (client_opts, G_N_ELEMENTS (client_opts), item.name);
      loose = find_loose (client_unsupported, G_N_ELEMENTS (client_unsupported), item.name);
      if (def == NULL && loose == NULL && strcmp (item.name, "local") != 0
          && !is_service_option (item.name))
        return cli_fail (error, GT_CONFIG_ERROR_USAGE, "unknown option '--%s'", item.name);

      bare_ok = (def != NULL && def->type == OPT_BOOL)
                || (loose != NULL && loose->type == LOOSE_BOOL)
                || strcmp (item.name, "remoteTCPRandom") == 0
                || strcmp (item.name, "useLocalAsHTTPHost") == 0;
      if (inline_value != NULL || !bare_ok)
        {
          if (!cli_take_value (argc, argv, &i, item.name, inline_value,
                               &g_array_index (items, CliItem, items->len - 1).value, error))
            return FALSE;
        }

      if (strcmp (item.name, "local") == 0)
        {
          GtServiceConfig *service = NULL;
          gboolean no = FALSE;
          g_autofree char *message = parse_local_url (
            g_array_index (items, CliItem, items->len - 1).value, &service);
          if (message != NULL)
            return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--local: %s", message);
          service->local_timeout_ms = DEFAULT_LOCAL_TIMEOUT_MS;
          g_ptr_array_add (services, service);
          g_array_append_val (random_set, no);
        }
    }

  /* Second pass: apply in order; service options go to the most recent --local. */
  for (guint i = 0; i < items->len; i++)
    {
      const CliItem *item = &g_array_index (items, CliItem, i);
      const OptDef *def = find_opt (client_opts, G_N_ELEMENTS (client_opts), item->name);
      const LooseDef *loose;
      g_autofree char *message = NULL;
      GtServiceConfig *service;
      gint target;

      if (def != NULL)
        {
          if (def->type == OPT_REMOTES && !remotes_replaced)
            {
              /* The command line replaces the file's remotes. */
              g_ptr_array_set_size (config->remotes, 0);
              remotes_replaced = TRUE;
            }
          g_autofree char *warning = NULL;

          message = opt_set (config, def, item->value != NULL ? item->value : "true", &warning);
          if (message != NULL)
            return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--%s: %s", def->name, message);
          if (warning != NULL)
            add_warning (config->warnings, NULL, 0, 0, "--%s: %s", def->name, warning);
          places_set (((ClientPriv *) config)->places, def->name, NULL, 0, 0);
          continue;
        }
      if (strcmp (item->name, "local") == 0)
        {
          current++;
          continue;
        }
      loose = find_loose (client_unsupported, G_N_ELEMENTS (client_unsupported), item->name);
      if (loose != NULL)
        {
          gboolean unused;
          if (loose->type == LOOSE_BOOL && item->value != NULL
              && (message = parse_bool (item->value, &unused)) != NULL)
            return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--%s: %s", loose->name, message);
          add_warning (config->warnings, NULL, 0, 0,
                       "option '--%s' is not supported by this version of gt and is ignored",
                       loose->name);
          continue;
        }

      /* A per-service option. */
      if (services->len == 0)
        return cli_fail (error, GT_CONFIG_ERROR_USAGE, "--%s needs a --local service",
                         item->name);
      target = services->len == 1 ? 0 : current;
      if (target < 0)
        return cli_fail (error, GT_CONFIG_ERROR_USAGE,
                         "--%s must follow the --local it applies to", item->name);
      service = g_ptr_array_index (services, target);
      message = service_set (service, item->name, item->value != NULL ? item->value : "true",
                             &g_array_index (random_set, gboolean, target));
      if (message != NULL)
        return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--%s: %s", item->name, message);
    }

  for (guint i = 0; i < services->len; i++)
    {
      GtServiceConfig *service = g_ptr_array_index (services, i);
      if (!g_array_index (random_set, gboolean, i))
        service->remote_tcp_random = service->kind == GT_SERVICE_KIND_TCP
                                     && service->remote_tcp_port == 0;
    }
  /* GT's order: command-line services first, then the file's. */
  g_ptr_array_set_free_func (services, NULL);
  for (guint i = 0; i < services->len; i++)
    g_ptr_array_insert (config->services, (gint) i, g_ptr_array_index (services, i));

  client_clamp (config);
  return TRUE;
}

char *
gt_config_extract_config_path (int *argc, char **argv, GError **error)
{
  g_autofree char *path = NULL;
  int out = 0;
  int n;

  g_return_val_if_fail (argc != NULL, NULL);
  g_return_val_if_fail (*argc == 0 || argv != NULL, NULL);

  n = *argc;
  for (int i = 0; i < n; i++)
    {
      g_autofree char *name = NULL;
      const char *inline_value = NULL;

      if (strcmp (argv[i], "--") == 0)
        {
          /* Everything after "--" is left alone. */
          for (; i < n; i++)
            argv[out++] = argv[i];
          break;
        }
      if (cli_split (argv[i], &name, &inline_value)
          && (strcmp (name, "c") == 0 || strcmp (name, "config") == 0))
        {
          g_clear_pointer (&path, g_free); /* the last one wins */
          if (inline_value != NULL)
            path = g_strdup (inline_value);
          else if (i + 1 < n)
            path = g_strdup (argv[++i]);
          else
            {
              cli_fail (error, GT_CONFIG_ERROR_USAGE, "option '--config' needs a value");
              return NULL;
            }
          if (*path == '\0')
            {
              cli_fail (error, GT_CONFIG_ERROR_USAGE, "option '--config' needs a value");
              return NULL;
            }
          continue;
        }
      argv[out++] = argv[i];
    }
  if (out < n)
    argv[out] = NULL;
  *argc = out;
  return g_steal_pointer (&path);
}

/* ------------------------------------------------------------------------------------------ */
/* Validation */

static gboolean G_GNUC_PRINTF (7, 8)
fail_at (const char *file, guint line, guint column, int code, GtConfigIssue **issue_out,
         GError **error, const char *format, ...)
{
  va_list args;
  char *message;

  va_start (args, format);
  message = g_strdup_vprintf (format, args);
  va_end (args);
  /* A place from the command line has no file. */
  return fail_with_issue (issue_new_take (line > 0 ? file : NULL, line, column, message), code,
                          issue_out, error);
}

/* For errors that belong to no single entry: the file when there is one. */
static gboolean G_GNUC_PRINTF (5, 6)
fail_global (const char *file, int code, GtConfigIssue **issue_out, GError **error,
             const char *format, ...)
{
  va_list args;
  char *message;

  va_start (args, format);
  message = g_strdup_vprintf (format, args);
  va_end (args);
  return fail_with_issue (issue_new_take (file, 0, 0, message), code, issue_out, error);
}

/* For values whose place was recorded while loading (KeyPlace); the file when unknown. */
static gboolean G_GNUC_PRINTF (7, 8)
fail_key (GHashTable *places, const char *key, const char *file, int code,
          GtConfigIssue **issue_out, GError **error, const char *format, ...)
{
  const KeyPlace *place = g_hash_table_lookup (places, key);
  va_list args;
  char *message;
  GtConfigIssue *issue;

  va_start (args, format);
  message = g_strdup_vprintf (format, args);
  va_end (args);
  if (place == NULL)
    issue = issue_new_take (file, 0, 0, message);
  else
    issue = issue_new_take (place->file, place->line, place->column, message);
  return fail_with_issue (issue, code, issue_out, error);
}

static gboolean
check_regexes (GHashTable *places, char **regex, const char *key_prefix, const char *file,
               GtConfigIssue **issue_out, GError **error)
{
  for (guint i = 0; regex != NULL && regex[i] != NULL; i++)
    {
      g_autofree char *message = parse_regex (regex[i]);
      g_autofree char *key = NULL;

      if (message == NULL)
        continue;
      key = g_strdup_printf ("%s.regex.%u", key_prefix, i);
      return fail_key (places, key, file, GT_CONFIG_ERROR_VALUE, issue_out, error, "%s",
                       message);
    }
  return TRUE;
}

/* certFile/keyFile and apiCertFile/apiKeyFile go together. */
static gboolean
check_pair (GHashTable *places, const char *file, const char *a_name, const char *a,
            const char *b_name, const char *b, GtConfigIssue **issue_out, GError **error)
{
  if (a != NULL && b == NULL)
    return fail_key (places, a_name, file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                     "%s is set without %s", a_name, b_name);
  if (a == NULL && b != NULL)
    return fail_key (places, b_name, file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                     "%s is set without %s", b_name, a_name);
  return TRUE;
}

static gboolean
listen_port_is_zero (const char *addr)
{
  return g_str_has_suffix (addr, ":0");
}

gboolean
gt_server_config_load_users_file (GtServerConfig *config, GtConfigIssue **issue_out,
                                  GError **error)
{
  g_autofree char *data = NULL;
  gsize len = 0;
  Loader ld = { 0 };
  yaml_node_t *root;
  gboolean present = FALSE;
  gboolean ok;

  g_return_val_if_fail (config != NULL, FALSE);

  if (config->users_file == NULL)
    return TRUE;
  /* Refuse devices and FIFOs (a typo must not hang or fill the memory). */
  if (g_file_test (config->users_file, G_FILE_TEST_EXISTS)
      && !g_file_test (config->users_file, G_FILE_TEST_IS_REGULAR))
    return fail_with_issue (issue_new_take (config->users_file, 0, 0,
                                            g_strdup ("the users file is not a regular file")),
                            GT_CONFIG_ERROR_IO, issue_out, error);
  if (!read_file (config->users_file, &data, &len, issue_out, error))
    return FALSE;
  ld.file = config->users_file;
  ld.warnings = config->warnings;
  ld.places = ((ServerPriv *) config)->places;
  ld.users_file = TRUE;
  ld.issue_out = issue_out;
  ld.error = error;
  ok = ld_parse (&ld, data, (gssize) len, &root) && ld_root_mapping (&ld, root, &present)
       && (!present || ld_users (&ld, config, root));
  loader_clear (&ld);
  return ok;
}

static gboolean
ranges_overlap (const GtPortRange *a, const GtPortRange *b)
{
  return a->first <= b->last && b->first <= a->last;
}

gboolean
gt_server_config_validate (GtServerConfig *config, GtConfigIssue **issue_out, GError **error)
{
  ServerPriv *priv = (ServerPriv *) config;
  const char *file;

  g_return_val_if_fail (config != NULL, FALSE);

  file = config->config_path;
  if (config->addr == NULL && config->tls_addr == NULL && config->sni_addr == NULL)
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "no listener: set options.addr, tlsAddr or sniAddr");
  if (config->users_file != NULL
      && !gt_server_config_load_users_file (config, issue_out, error))
    return FALSE;

  {
    const struct
    {
      const char *name;
      const char *addr;
    } listeners[] = {
      { "addr", config->addr },
      { "tlsAddr", config->tls_addr },
      { "sniAddr", config->sni_addr },
      { "apiAddr", config->api_addr },
    };

    for (guint a = 0; a < G_N_ELEMENTS (listeners); a++)
      for (guint b = a + 1; b < G_N_ELEMENTS (listeners); b++)
        if (listeners[a].addr != NULL && g_strcmp0 (listeners[a].addr, listeners[b].addr) == 0
            && !listen_port_is_zero (listeners[a].addr))
          return fail_key (priv->places, listeners[b].name, file, GT_CONFIG_ERROR_INVALID,
                           issue_out, error, "%s %s is also the address of %s",
                           listeners[b].name, listeners[b].addr, listeners[a].name);
  }
  if (!check_pair (priv->places, file, "certFile", config->cert_file, "keyFile",
                   config->key_file, issue_out, error)
      || !check_pair (priv->places, file, "apiCertFile", config->api_cert_file, "apiKeyFile",
                      config->api_key_file, issue_out, error))
    return FALSE;
  if (config->proxy_protocol
      && (config->proxy_protocol_trusted_cidrs == NULL
          || config->proxy_protocol_trusted_cidrs[0] == NULL))
    return fail_key (priv->places, "proxyProtocol", file, GT_CONFIG_ERROR_INVALID, issue_out,
                     error, "proxyProtocol needs proxyProtocolTrustedCIDRs");
  for (guint i = 0; config->proxy_protocol_trusted_cidrs != NULL
                    && config->proxy_protocol_trusted_cidrs[i] != NULL;
       i++)
    {
      g_autofree char *message = parse_cidr (config->proxy_protocol_trusted_cidrs[i]);
      if (message != NULL)
        return fail_global (file, GT_CONFIG_ERROR_VALUE, issue_out, error, "%s", message);
    }
  if (config->auth_api != NULL)
    {
      g_autofree char *message = parse_http_url ("authAPI", config->auth_api);
      if (message != NULL)
        return fail_key (priv->places, "authAPI", file, GT_CONFIG_ERROR_VALUE, issue_out, error,
                         "%s", message);
    }
  if (config->ws_path == NULL)
    config->ws_path = g_strdup (DEFAULT_WS_PATH);
  else if (!url_path_is_sane (config->ws_path))
    return fail_key (priv->places, "wsPath", file, GT_CONFIG_ERROR_VALUE, issue_out, error,
                     "bad wsPath '%s': it must start with '/' and contain no space or '#'",
                     config->ws_path);
  if (config->tls_version == NULL)
    config->tls_version = g_strdup (DEFAULT_TLS_VERSION);
  if (config->api_tls_version == NULL)
    config->api_tls_version = g_strdup (DEFAULT_TLS_VERSION);
  if (config->reconnect_times == 0)
    config->reconnect_times = DEFAULT_RECONNECT_TIMES;
  if (config->reconnect_duration_ms == 0)
    config->reconnect_duration_ms = DEFAULT_RECONNECT_DURATION_MS;
  if (config->drain_timeout_ms == 0)
    config->drain_timeout_ms = DEFAULT_DRAIN_TIMEOUT_MS;
  if (!check_regexes (priv->places, config->host_regex, "host", file, issue_out, error))
    return FALSE;

  if (config->timeout_ms == 0)
    config->timeout_ms = DEFAULT_SERVER_TIMEOUT_MS;
  if (config->connections == 0)
    config->connections = DEFAULT_SERVER_CONNECTIONS;
  if (config->max_handshake_options == 0)
    config->max_handshake_options = DEFAULT_MAX_HANDSHAKE_OPTIONS;
  if (config->log_level == NULL)
    config->log_level = g_strdup (DEFAULT_LOG_LEVEL);

  for (guint i = 0; i < config->users->len; i++)
    {
      UserEntry *entry = g_ptr_array_index (config->users, i);
      GtUserConfig *user = &entry->pub;
      gsize id_len = user->id != NULL ? strlen (user->id) : 0;
      gsize secret_len = user->secret != NULL ? strlen (user->secret) : 0;
      const char *user_file = entry->file != NULL ? entry->file : config->config_path;
      g_autofree char *key_prefix = g_strdup_printf ("users.%s.host", user->id);

      if (id_len == 0 || id_len > MAX_ID_LEN)
        return fail_at (user_file, user->line, user->column, GT_CONFIG_ERROR_INVALID, issue_out,
                        error, "user id must be 1 to %d bytes", MAX_ID_LEN);
      if (secret_len == 0 || secret_len > MAX_SECRET_LEN)
        return fail_at (user_file, user->line, user->column, GT_CONFIG_ERROR_INVALID, issue_out,
                        error, "user '%s' needs a secret of 1 to %d bytes", user->id,
                        MAX_SECRET_LEN);
      if (!check_regexes (priv->places, user->host_regex, key_prefix, user_file, issue_out,
                          error))
        return FALSE;
      if (user->tcp_ranges != NULL && user->tcp_ranges->len == 0)
        g_clear_pointer (&user->tcp_ranges, g_array_unref); /* `tcp: []` = the global pool */
      if (user->tcp_ranges == NULL)
        continue;

      for (guint r = 0; r < user->tcp_ranges->len; r++)
        {
          const GtPortRange *range = &g_array_index (user->tcp_ranges, GtPortRange, r);
          Place place = { user->line, user->column };

          if (entry->range_places != NULL && r < entry->range_places->len)
            place = g_array_index (entry->range_places, Place, r);

          for (guint g = 0; g < config->tcp_ranges->len; g++)
            if (ranges_overlap (range, &g_array_index (config->tcp_ranges, GtPortRange, g)))
              return fail_at (user_file, place.line, place.column, GT_CONFIG_ERROR_INVALID,
                              issue_out, error,
                              "tcp range %u-%u of user '%s' overlaps the global tcp pool",
                              range->first, range->last, user->id);

          for (guint j = 0; j < i; j++)
            {
              const GtUserConfig *other = g_ptr_array_index (config->users, j);
              if (other->tcp_ranges == NULL)
                continue;
              for (guint o = 0; o < other->tcp_ranges->len; o++)
                if (ranges_overlap (range, &g_array_index (other->tcp_ranges, GtPortRange, o)))
                  return fail_at (user_file, place.line, place.column, GT_CONFIG_ERROR_INVALID,
                                  issue_out, error,
                                  "tcp range %u-%u of user '%s' overlaps the range of user '%s'",
                                  range->first, range->last, user->id, other->id);
            }
        }
    }

  if (config->users->len == 0 && config->auth_api == NULL && !config->allow_any_client)
    {
      /* GT: no users (and no auth API) means any client id is accepted. */
      config->allow_any_client = TRUE;
      add_warning (config->warnings, file, 0, 0,
                   "no users are configured: any client id is accepted (allowAnyClient)");
    }
  return TRUE;
}

gboolean
gt_client_config_validate (GtClientConfig *config, GtConfigIssue **issue_out, GError **error)
{
  const char *file;
  GtServiceConfig *unprefixed = NULL;
  g_autoptr (GHashTable) prefixes = NULL;

  g_return_val_if_fail (config != NULL, FALSE);

  file = config->config_path;
  if (config->id == NULL || *config->id == '\0')
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "options.id is required");
  if (strlen (config->id) > MAX_ID_LEN)
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "options.id must be 1 to %d bytes", MAX_ID_LEN);
  if (config->secret == NULL || *config->secret == '\0')
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "options.secret is required");
  if (strlen (config->secret) > MAX_SECRET_LEN)
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "options.secret must be 1 to %d bytes", MAX_SECRET_LEN);
  if (config->remotes->len == 0)
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "no remote: set options.remote or --remote");
  if (config->services->len == 0)
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "no service: add an entry to services: or use --local");
  if (config->remote_cert != NULL && !looks_like_pin (config->remote_cert))
    {
      GHashTable *places = ((ClientPriv *) config)->places;

      if (!g_file_test (config->remote_cert, G_FILE_TEST_IS_REGULAR))
        return fail_key (places, "remoteCert", file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                         "remoteCert file '%s' does not exist (give a PEM file or a "
                         "sha256: pin)",
                         config->remote_cert);
    }

  if (config->remote_timeout_ms == 0)
    config->remote_timeout_ms = DEFAULT_REMOTE_TIMEOUT_MS;
  if (config->reconnect_delay_ms == 0)
    config->reconnect_delay_ms = DEFAULT_RECONNECT_DELAY_MS;
  if (config->drain_timeout_ms == 0)
    config->drain_timeout_ms = DEFAULT_DRAIN_TIMEOUT_MS;
  if (config->log_level == NULL)
    config->log_level = g_strdup (DEFAULT_LOG_LEVEL);
  client_clamp (config);

  prefixes = g_hash_table_new (g_str_hash, g_str_equal);
  for (guint i = 0; i < config->services->len; i++)
    {
      GtServiceConfig *service = g_ptr_array_index (config->services, i);

      if (service->kind == GT_SERVICE_KIND_TCP)
        {
          if (service->host_prefix != NULL)
            {
              add_warning (config->warnings, service->line > 0 ? file : NULL, service->line,
                           service->column, "hostPrefix is ignored for the tcp service '%s'",
                           service->local_url);
              g_clear_pointer (&service->host_prefix, g_free);
            }
          if (service->remote_tcp_port == 0 && !service->remote_tcp_random)
            return fail_at (file, service->line, service->column, GT_CONFIG_ERROR_INVALID,
                            issue_out, error,
                            "tcp service '%s' needs remoteTCPPort or remoteTCPRandom: true",
                            service->local_url);
          continue;
        }

      if (service->host_prefix == NULL)
        {
          g_autofree char *message = NULL;
          char *prefix = NULL;

          if (unprefixed != NULL)
            return fail_at (file, service->line, service->column, GT_CONFIG_ERROR_INVALID,
                            issue_out, error,
                            "two http services without hostPrefix: give each a hostPrefix");
          unprefixed = service;
          message = parse_host_prefix (config->id, &prefix);
          if (message != NULL)
            return fail_at (file, service->line, service->column, GT_CONFIG_ERROR_INVALID,
                            issue_out, error,
                            "the id '%s' cannot be the host prefix of '%s': give the service "
                            "a hostPrefix",
                            config->id, service->local_url);
          service->host_prefix = prefix;
        }
      if (!g_hash_table_add (prefixes, service->host_prefix))
        return fail_at (file, service->line, service->column, GT_CONFIG_ERROR_INVALID,
                        issue_out, error, "host prefix '%s' is used by two services",
                        service->host_prefix);
    }
  return TRUE;
}
