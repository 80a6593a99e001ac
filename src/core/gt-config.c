/* gt-config.c: the GT-compatible configuration model: defaults, issues, users, and the value
 * parsers (durations, ports, listen addresses, URLs) shared by YAML and the command line. */
#include "config.h"

#include "gt-config-private.h"

#include <errno.h>
#include <gio/gio.h>
#include <stdarg.h>
#include <string.h>

G_DEFINE_QUARK (gt-config-error-quark, gt_config_error)

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

gboolean
_gt_config_fail_take (GtConfigIssue **issue_out, GError **error, const char *file, guint line,
                      guint column, int code, char *message)
{
  GtConfigIssue *issue = issue_new_take (file, line, column, message);
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

gboolean
_gt_config_fail_printf (GtConfigIssue **issue_out, GError **error, const char *file, guint line,
                        guint column, int code, const char *format, ...)
{
  va_list args;
  char *message;

  va_start (args, format);
  message = g_strdup_vprintf (format, args);
  va_end (args);
  return _gt_config_fail_take (issue_out, error, file, line, column, code, message);
}

void
_gt_config_add_warning (GPtrArray *warnings, const char *file, guint line, guint column,
                        const char *format, ...)
{
  va_list args;
  char *message;

  va_start (args, format);
  message = g_strdup_vprintf (format, args);
  va_end (args);
  g_ptr_array_add (warnings, issue_new_take (file, line, column, message));
}

static gboolean
loose_value_is_gt_default (const GtConfigLoose *loose, const char *value)
{
  if (loose->gt_default == NULL)
    return FALSE;
  if (value == NULL || *value == '\0')
    return TRUE;
  if (loose->type == GT_LOOSE_BOOL)
    {
      gboolean v = FALSE, d = TRUE;
      g_autofree char *bad = _gt_config_parse_bool (value, &v);
      g_autofree char *bad_default = _gt_config_parse_bool (loose->gt_default, &d);

      return bad == NULL && bad_default == NULL && v == d;
    }
  return g_ascii_strcasecmp (value, loose->gt_default) == 0;
}

void
_gt_config_add_unsupported (GPtrArray *warnings, const char *file, guint line, guint column,
                            const GtConfigLoose *loose, const char *display, const char *value,
                            const char *shape_problem)
{
  char *message;
  gboolean debug = TRUE;

  if (shape_problem != NULL)
    {
      /* A value GT would not take either: worth telling. */
      message = g_strdup_printf ("%s is not supported by this version of gt and is ignored (%s)",
                                 display, shape_problem);
      debug = FALSE;
    }
  else if (loose->tunes != NULL && strcmp (loose->tunes, "*") == 0)
    message = g_strdup_printf ("%s is ignored: gt has no such setting, it changes nothing", display);
  else if (loose->tunes != NULL && *loose->tunes != '\0')
    message = g_strdup_printf ("%s is ignored: it only tunes %s, which this version of gt does "
                               "not support",
                               display, loose->tunes);
  else if (loose->tunes != NULL)
    message = g_strdup_printf ("%s is ignored: GT does not use it either", display);
  else if (loose_value_is_gt_default (loose, value))
    message = g_strdup_printf ("%s is not supported by this version of gt; its value is GT's "
                               "default, so it changes nothing",
                               display);
  else
    {
      message = g_strdup_printf ("%s is not supported by this version of gt and is ignored",
                                 display);
      debug = FALSE;
    }
  g_ptr_array_add (warnings, issue_new_take (file, line, column, message));
  ((GtConfigIssue *) g_ptr_array_index (warnings, warnings->len - 1))->debug = debug;
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
char *
_gt_config_parse_port (const char *text, gboolean allow_zero, guint16 *out)
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

char *
_gt_config_parse_uint (const char *text, guint64 max, guint64 *out)
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

char *
_gt_config_parse_bool (const char *text, gboolean *out)
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

char *
_gt_config_parse_duration (const char *text, guint64 *ms_out)
{
  if (!gt_parse_duration (text, ms_out))
    return g_strdup_printf ("bad duration '%s' (examples: 90s, 1m30s, 250ms)", text);
  return NULL;
}

char *
_gt_config_parse_log_level (const char *text, char **out)
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

char *
_gt_config_parse_host_prefix (const char *text, char **out)
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
      message = _gt_config_parse_port (text, TRUE, &port);
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
  message = _gt_config_parse_port (port_text, TRUE, &port);
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

GInetSocketAddress *
gt_listen_address_parse (const char *addr, GError **error)
{
  g_autoptr (GSocketConnectable) na = NULL;
  g_autoptr (GInetAddress) ia = NULL;
  g_autofree char *bare = NULL;
  const char *host;

  g_return_val_if_fail (addr != NULL, NULL);

  na = g_network_address_parse (addr, 0, error);
  if (na == NULL)
    return NULL;
  host = g_network_address_get_hostname (G_NETWORK_ADDRESS (na));
  if (host[0] == '[')
    bare = g_strndup (host + 1, strlen (host) > 2 ? strlen (host) - 2 : 0);
  else
    bare = g_strdup (host);
  ia = g_inet_address_new_from_string (bare);
  if (ia == NULL && g_ascii_strcasecmp (bare, "localhost") == 0)
    ia = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  if (ia == NULL)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "cannot listen on '%s': the host must be an IP address or localhost", addr);
      return NULL;
    }
  return G_INET_SOCKET_ADDRESS (
    g_inet_socket_address_new (ia, g_network_address_get_port (G_NETWORK_ADDRESS (na))));
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
      message = _gt_config_parse_port (copy, FALSE, &first);
      last = first;
    }
  else
    {
      *dash = '\0';
      g_strstrip (copy);
      g_strstrip (dash + 1);
      message = _gt_config_parse_port (copy, FALSE, &first);
      if (message == NULL)
        message = _gt_config_parse_port (dash + 1, FALSE, &last);
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

char *
_gt_config_parse_range (const char *text, GtPortRange *range)
{
  g_autoptr (GError) error = NULL;

  if (!gt_parse_port_range (text, range, &error))
    return g_strdup (error->message);
  return NULL;
}

char *
_gt_config_parse_listen_addr (const char *text, const char *default_host, char **out)
{
  g_autoptr (GError) error = NULL;

  *out = normalize_addr (text, default_host, &error);
  if (*out == NULL)
    return g_strdup (error->message);
  return NULL;
}

/* An address or a network: "10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1". */
char *
_gt_config_parse_cidr (const char *text)
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

char *
_gt_config_parse_forward_rule (const char *text)
{
  const char *colon = strrchr (text, ':');
  g_autofree char *id = colon ? g_strndup (text, colon - text) : NULL;
  g_autofree char *prefix = NULL;
  g_autofree char *message = NULL;
  gboolean id_ok = id != NULL && *id != '\0' && strlen (id) <= MAX_ID_LEN;

  for (const char *p = id; id_ok && *p != '\0'; p++)
    if ((guchar) *p < 0x21 || (guchar) *p > 0x7e)
      id_ok = FALSE;
  if (id_ok && strcmp (colon + 1, "*") != 0)
    message = _gt_config_parse_host_prefix (colon + 1, &prefix);
  if (!id_ok || message != NULL)
    return g_strdup_printf ("bad tcpForwardAllow rule '%s': use CLIENT_ID:HOST_PREFIX, either "
                            "may be * (examples: laptop:web, laptop:*, *:db)",
                            text);
  return NULL;
}

/* "SCHEME:host[:port]" (default port 3478) of the key remoteSTUN or remoteTURN. */
static char *
parse_udp_server_url (const char *key, const char *scheme, const char *text, char **host_out,
                      guint16 *port_out)
{
  g_autoptr (GSocketConnectable) addr = NULL;
  g_autofree char *host = NULL;
  gsize scheme_len = strlen (scheme);
  const char *rest;
  guint16 port;

  if (g_ascii_strncasecmp (text, scheme, scheme_len) != 0 || text[scheme_len] != ':')
    return g_strdup_printf ("bad %s '%s': use %s:host[:port]", key, text, scheme);
  rest = text + scheme_len + 1;
  if (*rest == '\0' || strpbrk (rest, " /?#@") != NULL
      || (addr = g_network_address_parse (rest, 3478, NULL)) == NULL)
    return g_strdup_printf ("bad %s '%s': use %s:host[:port]", key, text, scheme);
  host = g_strdup (g_network_address_get_hostname (G_NETWORK_ADDRESS (addr)));
  port = g_network_address_get_port (G_NETWORK_ADDRESS (addr));
  if (port == 0)
    return g_strdup_printf ("bad %s '%s': port 0", key, text);
  if (host_out != NULL)
    *host_out = g_steal_pointer (&host);
  if (port_out != NULL)
    *port_out = port;
  return NULL;
}

char *
_gt_config_parse_stun_url (const char *text, char **host_out, guint16 *port_out)
{
  return parse_udp_server_url ("remoteSTUN", "stun", text, host_out, port_out);
}

char *
_gt_config_parse_turn_url (const char *text, char **host_out, guint16 *port_out)
{
  return parse_udp_server_url ("remoteTURN", "turn", text, host_out, port_out);
}

gboolean
gt_client_config_get_turn (const GtClientConfig *config, char **host_out, guint16 *port_out)
{
  g_autofree char *message = NULL;

  if (config->remote_turn == NULL)
    return FALSE;
  message = _gt_config_parse_turn_url (config->remote_turn, host_out, port_out);
  return message == NULL;
}

/* A host regex must compile (GRegex, PCRE syntax; GT uses Go's RE2, the common subset is the
 * same). */
char *
_gt_config_parse_regex (const char *text)
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
char *
_gt_config_parse_http_url (const char *name, const char *text)
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
gboolean
_gt_config_url_path_is_sane (const char *path)
{
  if (path[0] != '/')
    return FALSE;
  for (const char *p = path; *p != '\0'; p++)
    if ((guchar) *p <= ' ' || (guchar) *p == 0x7f || *p == '#')
      return FALSE;
  return TRUE;
}

gboolean
_gt_config_looks_like_pin (const char *text)
{
  return g_ascii_strncasecmp (text, "sha256:", 7) == 0;
}

char *
_gt_config_parse_proxy_protocol_version (const char *text, guint *out)
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

void
_gt_config_strv_append (char ***strv, const char *text)
{
  guint n = *strv != NULL ? g_strv_length (*strv) : 0;

  *strv = g_renew (char *, *strv, n + 2);
  (*strv)[n] = g_strdup (text);
  (*strv)[n + 1] = NULL;
}

void
gt_remote_free (GtRemote *remote)
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

GtRemote *
gt_remote_parse (const char *text, char **message)
{
  GtRemote *remote = NULL;

  *message = _gt_config_parse_remote (text, &remote);
  return remote;
}

char *
_gt_config_parse_remote (const char *text, GtRemote **out)
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
      if (!_gt_config_url_path_is_sane (slash))
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
      char *message = _gt_config_parse_port (port_text, FALSE, &port);
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

GtRemote *
gt_remote_parse_url (const char *text, GError **error)
{
  GtRemote *remote = NULL;
  g_autofree char *message = NULL;

  g_return_val_if_fail (text != NULL, NULL);
  message = _gt_config_parse_remote (text, &remote);
  if (message != NULL)
    {
      g_set_error_literal (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE, message);
      return NULL;
    }
  return remote;
}

void
_gt_config_service_free (GtServiceConfig *service)
{
  if (service == NULL)
    return;
  g_free (service->local_url);
  g_free (service->local_host);
  g_free (service->host_prefix);
  g_free (service);
}

char *
_gt_config_parse_local_url (const char *text, GtServiceConfig **out)
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
    return g_strdup_printf ("bad local URL '%s': the scheme must be http://, https://, "
                            "tcp:// or udp://",
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
  else if (strcmp (scheme, "udp") == 0)
    {
      kind = GT_SERVICE_KIND_UDP;
      port = 0;
    }
  else
    return g_strdup_printf ("bad local URL '%s': the scheme must be http://, https://, "
                            "tcp:// or udp://",
                            text);

  authority = strip_empty_path (rest, &had_path);
  if (had_path)
    return g_strdup_printf ("bad local URL '%s': a path is not supported", text);
  if (!split_host_port (authority, &host, &port_text, &bracketed)
      || (!bracketed && !host_is_sane (host)))
    return g_strdup_printf ("bad local URL '%s'", text);
  if (port_text != NULL)
    {
      char *message = _gt_config_parse_port (port_text, FALSE, &port);
      if (message != NULL)
        return message;
    }
  else if (kind == GT_SERVICE_KIND_TCP || kind == GT_SERVICE_KIND_UDP)
    return g_strdup_printf ("bad local URL '%s': %s needs a port", text, scheme);

  service = &((GtServiceEntry *) g_new0 (GtServiceEntry, 1))->pub;
  service->kind = kind;
  service->local_url = g_strdup (text);
  service->local_host = g_steal_pointer (&host);
  service->local_port = port;
  service->local_timeout_ms = DEFAULT_LOCAL_TIMEOUT_MS;
  *out = service;
  return NULL;
}

void
_gt_config_service_finish (GtServiceConfig *service)
{
  if (!((GtServiceEntry *) service)->random_set)
    service->remote_tcp_random = service->kind == GT_SERVICE_KIND_TCP
                                 && service->remote_tcp_port == 0;
  if (!((GtServiceEntry *) service)->udp_random_set)
    service->remote_udp_random = service->kind == GT_SERVICE_KIND_UDP
                                 && service->remote_udp_port == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Config objects */

static void
key_place_free (GtConfigKeyPlace *place)
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

void
_gt_config_places_set (GHashTable *places, const char *key, const char *file, guint line,
                       guint column)
{
  GtConfigKeyPlace *place = g_new0 (GtConfigKeyPlace, 1);

  place->file = line > 0 ? g_strdup (file) : NULL;
  place->line = line;
  place->column = column;
  g_hash_table_replace (places, g_strdup (key), place);
}

void
_gt_config_user_free (GtUserConfig *user)
{
  GtUserEntry *entry = (GtUserEntry *) user;

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

GtUserEntry *
_gt_config_user_new (const char *id, guint line, guint column)
{
  GtUserEntry *entry = g_new0 (GtUserEntry, 1);

  entry->pub.id = g_strdup (id);
  entry->pub.tcp_number = -1;
  entry->pub.udp_number = -1;
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
  GtServerConfigPriv *priv = g_new0 (GtServerConfigPriv, 1);
  GtServerConfig *config = &priv->pub;

  priv->places = places_new ();
  config->timeout_ms = DEFAULT_SERVER_TIMEOUT_MS;
  config->log_level = g_strdup (DEFAULT_LOG_LEVEL);
  config->users = g_ptr_array_new_with_free_func ((GDestroyNotify) _gt_config_user_free);
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
  for (GtListenerKind kind = 0; kind < GT_N_LISTENERS; kind++)
    g_free (G_STRUCT_MEMBER (char *, config, gt_listener_info (kind)->config_offset));
  g_free (config->config_path);
  g_free (config->log_level);
  g_ptr_array_unref (config->users);
  g_array_unref (config->tcp_ranges);
  g_clear_pointer (&config->udp_ranges, g_array_unref);
  g_ptr_array_unref (config->warnings);
  g_free (config->cert_file);
  g_free (config->key_file);
  g_free (config->tls_version);
  g_free (config->ws_path);
  g_strfreev (config->proxy_protocol_trusted_cidrs);
  g_strfreev (config->tcp_forward_allow);
  g_free (config->users_file);
  g_free (config->auth_api);
  g_free (config->http_mux_header);
  g_strfreev (config->host_regex);
  g_free (config->api_addr);
  g_free (config->stun_addr);
  g_free (config->turn_relay_addr);
  g_free (config->api_cert_file);
  g_free (config->api_key_file);
  g_free (config->api_tls_version);
  g_strfreev (config->cluster_etcd);
  g_free (config->cluster_node);
  g_free (config->cluster_advertise);
  if (config->cluster_secret != NULL)
    memset (config->cluster_secret, 0, strlen (config->cluster_secret));
  g_free (config->cluster_secret);
  g_free (config->cluster_prefix);
  g_free (config->cluster_etcd_ca);
  g_free (config->cluster_etcd_cert);
  g_free (config->cluster_etcd_key);
  g_free (config->cluster_etcd_user);
  if (config->cluster_etcd_password != NULL)
    memset (config->cluster_etcd_password, 0, strlen (config->cluster_etcd_password));
  g_free (config->cluster_etcd_password);
  _gt_web_config_clear (&config->web);
  g_hash_table_unref (((GtServerConfigPriv *) config)->places);
  g_free (config);
}

void
_gt_web_config_clear (GtWebConfig *web)
{
  g_clear_pointer (&web->addr, g_free);
  g_clear_pointer (&web->cert_file, g_free);
  g_clear_pointer (&web->key_file, g_free);
  g_clear_pointer (&web->admin, g_free);
  if (web->password != NULL)
    memset (web->password, 0, strlen (web->password));
  g_clear_pointer (&web->password, g_free);
}

GtClientConfig *
gt_client_config_new (void)
{
  GtClientConfigPriv *priv = g_new0 (GtClientConfigPriv, 1);
  GtClientConfig *config = &priv->pub;

  priv->places = places_new ();
  config->remotes = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_remote_free);
  config->remote_connections = DEFAULT_REMOTE_CONNECTIONS;
  config->remote_idle_connections = DEFAULT_REMOTE_IDLE_CONNECTIONS;
  config->remote_timeout_ms = DEFAULT_REMOTE_TIMEOUT_MS;
  config->reconnect_delay_ms = DEFAULT_RECONNECT_DELAY_MS;
  config->drain_timeout_ms = DEFAULT_DRAIN_TIMEOUT_MS;
  config->webrtc_connections = DEFAULT_WEBRTC_CONNECTIONS;
  config->webrtc_idle_timeout_ms = DEFAULT_WEBRTC_IDLE_TIMEOUT_MS;
  config->log_level = g_strdup (DEFAULT_LOG_LEVEL);
  config->services = g_ptr_array_new_with_free_func ((GDestroyNotify) _gt_config_service_free);
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
  g_strfreev (config->remote_stun);
  g_free (config->remote_turn);
  g_free (config->tcp_forward_addr);
  g_free (config->tcp_forward_host_prefix);
  _gt_web_config_clear (&config->web);
  g_free (config->remote_api);
  g_hash_table_unref (((GtClientConfigPriv *) config)->places);
  g_free (config);
}

const GtUserConfig *
gt_server_config_find_user (const GtServerConfig *config, const char *id)
{
  gint index;

  g_return_val_if_fail (config != NULL, NULL);
  g_return_val_if_fail (id != NULL, NULL);

  index = _gt_config_find_user_index (config, id);
  return index >= 0 ? g_ptr_array_index (config->users, index) : NULL;
}

gint
_gt_config_find_user_index (const GtServerConfig *config, const char *id)
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
void
_gt_config_client_clamp (GtClientConfig *config)
{
  if (config->remote_connections == 0)
    config->remote_connections = DEFAULT_REMOTE_CONNECTIONS;
  if (config->remote_connections > MAX_REMOTE_CONNECTIONS)
    config->remote_connections = MAX_REMOTE_CONNECTIONS;
  if (config->remote_idle_connections == 0)
    config->remote_idle_connections = DEFAULT_REMOTE_IDLE_CONNECTIONS;
  if (config->remote_idle_connections > config->remote_connections)
    config->remote_idle_connections = config->remote_connections;
  /* As GT's release builds. */
  config->webrtc_connections = CLAMP (config->webrtc_connections, 1, 50);
}

gboolean
_gt_config_read_file (const char *path, char **data, gsize *len, GtConfigIssue **issue_out,
                      GError **error)
{
  g_autoptr (GError) local_error = NULL;

  if (!g_file_get_contents (path, data, len, &local_error))
    return _gt_config_fail_printf (issue_out, error, path, 0, 0, GT_CONFIG_ERROR_IO,
                                   "cannot read the file: %s", local_error->message);
  return TRUE;
}
