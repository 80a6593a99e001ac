/* gt-http.c: pure HTTP/1.x request-head helpers: Host sniffing for routing and Host rewriting. */
#include "config.h"

#include <string.h>

#include "gt-http.h"

G_DEFINE_QUARK (gt-http-error-quark, gt_http_error)

/* DNS limits: a whole name and one label. */
#define HOST_MAX_LEN 255
#define LABEL_MAX_LEN 63
/* A port is at most 5 digits ("65535"). */
#define PORT_MAX_DIGITS 5

static const char http_version_prefix[] = "HTTP/1.";

/* RFC 9110 token character. */
static inline gboolean
is_tchar (guint8 c)
{
  switch (c)
    {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-':
    case '.': case '^': case '_': case '`': case '|': case '~':
      return TRUE;
    default:
      return g_ascii_isalnum (c);
    }
}

/* Bytes allowed in a field value: VCHAR, SP, HT and obs-text; no other control byte. */
static inline gboolean
is_field_value_char (guint8 c)
{
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* Bytes allowed in a request-target: anything visible (obs-text tolerated), no space or CTL. */
static inline gboolean
is_target_char (guint8 c)
{
  return c > 0x20 && c != 0x7f;
}

static inline gboolean
is_reg_name_char (guint8 c)
{
  return g_ascii_isalnum (c) || c == '.' || c == '-' || c == '_';
}

static GtDecodeResult
set_malformed (GError **error, const char *what)
{
  /* Never quote the offending bytes: the message may end up in a log line. */
  g_set_error (error, GT_HTTP_ERROR, GT_HTTP_ERROR_MALFORMED, "Malformed HTTP request: %s", what);
  return GT_DECODE_ERROR;
}

typedef enum
{
  SNIFF_METHOD,
  SNIFF_TARGET,
  SNIFF_VERSION,
  SNIFF_REQUEST_LINE_CR,
  SNIFF_REQUEST_LINE_LF,
  SNIFF_LINE_START,
  SNIFF_NAME,
  SNIFF_VALUE,
  SNIFF_FIELD_LF,
  SNIFF_END_LF,
} SniffState;

/* Walks buf[0..len) as an HTTP/1.x request head. OK when a complete, well-formed head ends in
 * it; NEED_MORE when every byte so far can still begin a well-formed head (so any truncation
 * of a good head gives NEED_MORE); ERROR as soon as a byte rules that out. On OK, *host and
 * *host_len give the OWS-trimmed value of the only Host field (NULL when there is none). */
static GtDecodeResult
parse_head (const guint8 *buf, gsize len, const char *field, const guint8 **host, gsize *host_len,
            GError **error)
{
  gsize field_len = strlen (field);
  SniffState state = SNIFF_METHOD;
  gsize token_start = 0;
  gsize version_idx = 0;
  gsize name_start = 0;
  gsize name_end = 0;
  gsize value_start = 0;
  gsize value_end = 0;
  guint n_host = 0;

  *host = NULL;
  *host_len = 0;

  for (gsize i = 0; i < len; i++)
    {
      guint8 c = buf[i];

      switch (state)
        {
        case SNIFF_METHOD:
          if (is_tchar (c))
            break;
          if (c == ' ' && i > 0)
            {
              state = SNIFF_TARGET;
              token_start = i + 1;
              break;
            }
          return set_malformed (error, "invalid request method");

        case SNIFF_TARGET:
          while (i < len && is_target_char (buf[i]))
            i++;
          if (i == len)
            return GT_DECODE_NEED_MORE;
          if (buf[i] == ' ' && i > token_start)
            {
              state = SNIFF_VERSION;
              version_idx = 0;
              break;
            }
          return set_malformed (error, "invalid request target");

        case SNIFF_VERSION:
          if (version_idx < sizeof http_version_prefix - 1)
            {
              if (c != (guint8) http_version_prefix[version_idx])
                return set_malformed (error, "invalid HTTP version");
              version_idx++;
              break;
            }
          if (!g_ascii_isdigit (c))
            return set_malformed (error, "invalid HTTP version");
          state = SNIFF_REQUEST_LINE_CR;
          break;

        case SNIFF_REQUEST_LINE_CR:
          if (c != '\r')
            return set_malformed (error, "request line not ended by CRLF");
          state = SNIFF_REQUEST_LINE_LF;
          break;

        case SNIFF_REQUEST_LINE_LF:
          if (c != '\n')
            return set_malformed (error, "bare CR");
          state = SNIFF_LINE_START;
          break;

        case SNIFF_LINE_START:
          if (c == '\r')
            {
              state = SNIFF_END_LF;
              break;
            }
          if (is_tchar (c))
            {
              name_start = i;
              state = SNIFF_NAME;
              break;
            }
          if (c == ' ' || c == '\t')
            return set_malformed (error, "obsolete line folding");
          return set_malformed (error, "invalid header field name");

        case SNIFF_NAME:
          if (is_tchar (c))
            break;
          if (c == ':')
            {
              name_end = i;
              value_start = i + 1;
              state = SNIFF_VALUE;
              break;
            }
          return set_malformed (error, "invalid header field name");

        case SNIFF_VALUE:
          while (i < len && is_field_value_char (buf[i]))
            i++;
          if (i == len)
            return GT_DECODE_NEED_MORE;
          if (buf[i] != '\r')
            return set_malformed (error, "invalid byte in header field value");
          value_end = i;
          state = SNIFF_FIELD_LF;
          break;

        case SNIFF_FIELD_LF:
          if (c != '\n')
            return set_malformed (error, "bare CR");
          if (name_end - name_start == field_len
              && g_ascii_strncasecmp ((const char *) buf + name_start, field, field_len) == 0)
            {
              /* Two fields could route differently than the service reads them. */
              if (++n_host > 1)
                return set_malformed (error, "several header fields of the routing header");
              while (value_start < value_end
                     && (buf[value_start] == ' ' || buf[value_start] == '\t'))
                value_start++;
              while (value_end > value_start
                     && (buf[value_end - 1] == ' ' || buf[value_end - 1] == '\t'))
                value_end--;
              *host = buf + value_start;
              *host_len = value_end - value_start;
            }
          state = SNIFF_LINE_START;
          break;

        case SNIFF_END_LF:
          if (c != '\n')
            return set_malformed (error, "bare CR");
          return GT_DECODE_OK;

        default:
          g_assert_not_reached ();
        }
    }

  return GT_DECODE_NEED_MORE;
}

/* Checks a Host field value ("name", "name:port", "[v6]", "[v6]:port") and returns the host
 * part, lower-cased, without the port. */
static char *
parse_host_value (const guint8 *v, gsize n, GError **error)
{
  gsize host_len;

  if (v[0] == '[')
    {
      const guint8 *close = memchr (v, ']', n);
      char inner[HOST_MAX_LEN + 1];
      gsize inner_len;

      if (close == NULL)
        {
          set_malformed (error, "unterminated IPv6 literal in Host");
          return NULL;
        }
      host_len = close - v + 1;
      inner_len = host_len - 2;
      if (inner_len == 0 || host_len > HOST_MAX_LEN)
        {
          set_malformed (error, "invalid IPv6 literal in Host");
          return NULL;
        }
      for (gsize i = 1; i <= inner_len; i++)
        if (!g_ascii_isxdigit (v[i]) && v[i] != ':' && v[i] != '.')
          {
            set_malformed (error, "invalid IPv6 literal in Host");
            return NULL;
          }
      memcpy (inner, v + 1, inner_len);
      inner[inner_len] = '\0';
      /* The ':' test keeps a bracketed IPv4 address out. */
      if (memchr (inner, ':', inner_len) == NULL || !g_hostname_is_ip_address (inner))
        {
          set_malformed (error, "invalid IPv6 literal in Host");
          return NULL;
        }
    }
  else
    {
      for (host_len = 0; host_len < n && v[host_len] != ':'; host_len++)
        if (!is_reg_name_char (v[host_len]))
          {
            set_malformed (error, "invalid character in Host");
            return NULL;
          }
      if (host_len == 0 || host_len > HOST_MAX_LEN)
        {
          set_malformed (error, "invalid Host length");
          return NULL;
        }
    }

  if (host_len < n)
    {
      /* RFC 3986 allows an empty port after the colon. */
      gsize port_digits = n - host_len - 1;

      if (v[host_len] != ':' || port_digits > PORT_MAX_DIGITS)
        {
          set_malformed (error, "invalid port in Host");
          return NULL;
        }
      for (gsize i = host_len + 1; i < n; i++)
        if (!g_ascii_isdigit (v[i]))
          {
            set_malformed (error, "invalid port in Host");
            return NULL;
          }
    }

  return g_ascii_strdown ((const char *) v, host_len);
}

GtDecodeResult
gt_http_sniff_host (const guint8 *buf, gsize len, gsize max_head, char **host_out,
                    GError **error)
{
  const guint8 *host = NULL;
  gsize host_len = 0;
  GtDecodeResult res;
  char *parsed;

  g_return_val_if_fail (buf != NULL || len == 0, GT_DECODE_ERROR);
  g_return_val_if_fail (max_head > 0, GT_DECODE_ERROR);
  g_return_val_if_fail (host_out != NULL, GT_DECODE_ERROR);
  g_return_val_if_fail (error == NULL || *error == NULL, GT_DECODE_ERROR);

  *host_out = NULL;

  /* Bytes past max_head never matter: a head must end within the limit. */
  res = parse_head (buf, MIN (len, max_head), "host", &host, &host_len, error);
  if (res == GT_DECODE_ERROR)
    return GT_DECODE_ERROR;
  if (res == GT_DECODE_NEED_MORE)
    {
      if (len < max_head)
        return GT_DECODE_NEED_MORE;
      g_set_error (error, GT_HTTP_ERROR, GT_HTTP_ERROR_TOO_LARGE,
                   "HTTP request head larger than %" G_GSIZE_FORMAT " bytes", max_head);
      return GT_DECODE_ERROR;
    }

  if (host == NULL || host_len == 0)
    {
      g_set_error_literal (error, GT_HTTP_ERROR, GT_HTTP_ERROR_NO_HOST,
                           "HTTP request without a Host header");
      return GT_DECODE_ERROR;
    }

  parsed = parse_host_value (host, host_len, error);
  if (parsed == NULL)
    return GT_DECODE_ERROR;

  *host_out = parsed;
  return GT_DECODE_OK;
}

GtDecodeResult
gt_http_sniff_field (const guint8 *buf, gsize len, gsize max_head, const char *field,
                     char **value_out, GError **error)
{
  const guint8 *value = NULL;
  gsize value_len = 0;
  GtDecodeResult res;

  g_return_val_if_fail (buf != NULL || len == 0, GT_DECODE_ERROR);
  g_return_val_if_fail (max_head > 0, GT_DECODE_ERROR);
  g_return_val_if_fail (field != NULL && *field != '\0', GT_DECODE_ERROR);
  g_return_val_if_fail (value_out != NULL, GT_DECODE_ERROR);
  g_return_val_if_fail (error == NULL || *error == NULL, GT_DECODE_ERROR);

  *value_out = NULL;
  res = parse_head (buf, MIN (len, max_head), field, &value, &value_len, error);
  if (res == GT_DECODE_ERROR)
    return GT_DECODE_ERROR;
  if (res == GT_DECODE_NEED_MORE)
    {
      if (len < max_head)
        return GT_DECODE_NEED_MORE;
      g_set_error (error, GT_HTTP_ERROR, GT_HTTP_ERROR_TOO_LARGE,
                   "HTTP request head larger than %" G_GSIZE_FORMAT " bytes", max_head);
      return GT_DECODE_ERROR;
    }
  if (value == NULL || value_len == 0)
    {
      g_set_error (error, GT_HTTP_ERROR, GT_HTTP_ERROR_NO_HOST,
                   "HTTP request without a %s header", field);
      return GT_DECODE_ERROR;
    }
  if (value_len > GT_HTTP_MAX_FIELD_PREFIX)
    {
      set_malformed (error, "routing header value too long");
      return GT_DECODE_ERROR;
    }
  for (gsize i = 0; i < value_len; i++)
    if (value[i] <= 0x20 || value[i] >= 0x7F)
      {
        set_malformed (error, "routing header value is not printable ASCII without spaces");
        return GT_DECODE_ERROR;
      }
  *value_out = g_ascii_strdown ((const char *) value, value_len);
  return GT_DECODE_OK;
}

char *
gt_http_host_prefix (const char *host)
{
  const char *dot;
  gsize label_len;

  g_return_val_if_fail (host != NULL, NULL);

  /* An address names no tunnel client. */
  if (host[0] == '[' || g_hostname_is_ip_address (host))
    return NULL;

  dot = strchr (host, '.');
  label_len = dot != NULL ? (gsize) (dot - host) : strlen (host);
  if (label_len == 0 || label_len > LABEL_MAX_LEN)
    return NULL;

  /* Hyphens are accepted anywhere ("-x", "x-"): the prefix is only a lookup key, and a key
   * no client registered simply finds nothing. */
  for (gsize i = 0; i < label_len; i++)
    if (!g_ascii_isalnum (host[i]) && host[i] != '-')
      return NULL;

  return g_ascii_strdown (host, label_len);
}

/* Host rewriter ------------------------------------------------------------------------------ */

typedef enum
{
  RW_REQUEST_LINE, /* copying the request line */
  RW_LINE_START,   /* at the start of a header line: matching "host:" or the blank line */
  RW_PASS_LINE,    /* copying the rest of a header line */
  RW_SKIP_LINE,    /* dropping the rest of the replaced Host line (or its folded parts) */
  RW_DONE,         /* past the first head (or not HTTP): pass-through */
  RW_FAILED,
} RwState;

static const char host_name_colon[] = "host:";
#define HOST_NAME_COLON_LEN (sizeof host_name_colon - 1)

struct _GtHostRewriter
{
  char *line;      /* "Host: <host>\r\n" */
  gsize line_len;
  RwState state;
  guint8 pending[HOST_NAME_COLON_LEN]; /* held back while the line may still be "host:" */
  gsize n_pending;
  gsize head_bytes; /* input bytes of the head seen so far */
  gboolean replaced;
  gboolean after_host; /* the last line was the replaced Host line: a folded line belongs to it */
};

GtHostRewriter *
gt_host_rewriter_new (const char *host)
{
  GtHostRewriter *rw;

  g_return_val_if_fail (host != NULL, NULL);
  g_return_val_if_fail (strpbrk (host, "\r\n") == NULL, NULL);

  rw = g_new0 (GtHostRewriter, 1);
  rw->line = g_strdup_printf ("Host: %s\r\n", host);
  rw->line_len = strlen (rw->line);
  rw->state = RW_REQUEST_LINE;
  return rw;
}

void
gt_host_rewriter_free (GtHostRewriter *rw)
{
  if (rw == NULL)
    return;
  g_free (rw->line);
  g_free (rw);
}

gboolean
gt_host_rewriter_is_done (const GtHostRewriter *rw)
{
  g_return_val_if_fail (rw != NULL, FALSE);
  return rw->state == RW_DONE;
}

static void
flush_pending (GtHostRewriter *rw, GByteArray *out)
{
  g_byte_array_append (out, rw->pending, rw->n_pending);
  rw->n_pending = 0;
}

/* Handles one byte at the start of a header line; returns FALSE when the byte was not
 * consumed and must be handled again in the new state (RW_PASS_LINE). */
static gboolean
line_start_byte (GtHostRewriter *rw, guint8 c, GByteArray *out)
{
  if (rw->n_pending == 0)
    {
      if (c == '\n')
        {
          /* Blank line ended by a bare LF: lenient, but still the end of the head. */
          g_byte_array_append (out, &c, 1);
          rw->state = RW_DONE;
          return TRUE;
        }
      if (c == '\r')
        {
          rw->pending[rw->n_pending++] = c;
          return TRUE;
        }
      if (rw->after_host && (c == ' ' || c == '\t'))
        {
          /* obs-fold: this line continues the Host value we replaced. */
          rw->state = RW_SKIP_LINE;
          return TRUE;
        }
      rw->after_host = FALSE;
    }
  else if (rw->pending[0] == '\r')
    {
      if (c == '\n')
        {
          flush_pending (rw, out);
          g_byte_array_append (out, &c, 1);
          rw->state = RW_DONE;
          return TRUE;
        }
      rw->after_host = FALSE;
      flush_pending (rw, out);
      rw->state = RW_PASS_LINE;
      return FALSE;
    }

  if (!rw->replaced && g_ascii_tolower (c) == host_name_colon[rw->n_pending])
    {
      rw->pending[rw->n_pending++] = c;
      if (rw->n_pending == HOST_NAME_COLON_LEN)
        {
          rw->n_pending = 0;
          g_byte_array_append (out, (const guint8 *) rw->line, rw->line_len);
          rw->replaced = TRUE;
          rw->after_host = TRUE;
          rw->state = RW_SKIP_LINE;
        }
      return TRUE;
    }

  flush_pending (rw, out);
  rw->state = RW_PASS_LINE;
  return FALSE;
}

gboolean
gt_host_rewriter_feed (GtHostRewriter *rw, const guint8 *data, gsize len, GByteArray *out,
                       GError **error)
{
  guint out_len_before;
  gsize i = 0;

  g_return_val_if_fail (rw != NULL, FALSE);
  g_return_val_if_fail (data != NULL || len == 0, FALSE);
  g_return_val_if_fail (out != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (rw->state == RW_FAILED)
    {
      g_set_error_literal (error, GT_HTTP_ERROR, GT_HTTP_ERROR_TOO_LARGE,
                           "HTTP request head too large");
      return FALSE;
    }

  out_len_before = out->len;

  while (i < len && rw->state != RW_DONE)
    {
      /* Never look further than one byte past the limit: output stays bounded by the head. */
      gsize avail = MIN (len - i, GT_HTTP_MAX_HEAD + 1 - rw->head_bytes);
      const guint8 *p = data + i;
      gsize step = 0;

      switch (rw->state)
        {
        case RW_REQUEST_LINE:
          /* Clearly not HTTP (a first byte that is not a method char, or a control byte in
           * the first line): stop looking so other protocols pass unharmed. */
          if (rw->head_bytes == 0 && !is_tchar (p[0]))
            {
              rw->state = RW_DONE;
              break;
            }
          while (step < avail)
            {
              guint8 c = p[step++];

              if (c == '\n')
                {
                  rw->state = RW_LINE_START;
                  break;
                }
              if (c < 0x20 && c != '\r' && c != '\t')
                {
                  rw->state = RW_DONE;
                  break;
                }
            }
          g_byte_array_append (out, p, step);
          break;

        case RW_LINE_START:
          step = 1;
          if (!line_start_byte (rw, p[0], out))
            step = 0; /* reprocessed in RW_PASS_LINE */
          break;

        case RW_PASS_LINE:
        case RW_SKIP_LINE:
          {
            const guint8 *nl = memchr (p, '\n', avail);

            step = nl != NULL ? (gsize) (nl - p) + 1 : avail;
            if (rw->state == RW_PASS_LINE)
              g_byte_array_append (out, p, step);
            if (nl != NULL)
              rw->state = RW_LINE_START;
          }
          break;

        case RW_DONE:
        case RW_FAILED:
        default:
          g_assert_not_reached ();
        }

      i += step;
      rw->head_bytes += step;
      if (rw->head_bytes > GT_HTTP_MAX_HEAD)
        {
          rw->state = RW_FAILED;
          g_byte_array_set_size (out, out_len_before);
          g_set_error (error, GT_HTTP_ERROR, GT_HTTP_ERROR_TOO_LARGE,
                       "HTTP request head larger than %d bytes", GT_HTTP_MAX_HEAD);
          return FALSE;
        }
    }

  if (i < len)
    g_byte_array_append (out, data + i, len - i);
  return TRUE;
}
