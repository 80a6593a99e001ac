/* gt-tls-sniff.c: finds the SNI name in a ClientHello spread over TLS records, without copies. */
#include "gt-tls-sniff.h"

#include <string.h>

G_DEFINE_QUARK (gt-tls-sniff-error-quark, gt_tls_sniff_error)

#define CONTENT_TYPE_HANDSHAKE 22
#define CONTENT_TYPE_ALERT 21
#define HANDSHAKE_CLIENT_HELLO 1
#define RECORD_HEADER_SIZE 5
#define HANDSHAKE_HEADER_SIZE 4
#define EXT_SERVER_NAME 0
#define NAME_TYPE_HOST_NAME 0
#define MAX_SESSION_ID 32
#define MAX_DNS_NAME 255
#define MAX_DNS_LABEL 63
/* legacy_version(2) random(32) session_id(1+0) cipher_suites(2+2) compression_methods(1+1) */
#define MIN_CLIENT_HELLO_BODY 41

/* Reads the handshake message through the record layer. The framing pass has checked every record
 * header and that the bytes of the whole message are in the buffer, so the reader only has to
 * respect `limit`, the end of the structure being walked (an offset into the handshake message). */
typedef struct
{
  const guint8 *buf;
  gsize len;
  gsize pos;      /* next byte in buf */
  gsize rec_left; /* payload bytes left in the current record */
  gsize off;      /* bytes of the handshake message read so far */
  gsize limit;    /* reads must not go past this handshake offset */
} Reader;

static gboolean
reader_take (Reader *r, guint8 *dst, gsize n)
{
  if (n > r->limit - r->off)
    return FALSE;
  while (n > 0)
    {
      gsize chunk;

      if (r->rec_left == 0)
        {
          g_assert (r->len - r->pos >= RECORD_HEADER_SIZE);
          r->rec_left = ((gsize) r->buf[r->pos + 3] << 8) | r->buf[r->pos + 4];
          r->pos += RECORD_HEADER_SIZE;
          g_assert (r->rec_left > 0);
        }
      chunk = MIN (n, r->rec_left);
      g_assert (r->len - r->pos >= chunk);
      if (dst != NULL)
        {
          memcpy (dst, r->buf + r->pos, chunk);
          dst += chunk;
        }
      r->pos += chunk;
      r->rec_left -= chunk;
      r->off += chunk;
      n -= chunk;
    }
  return TRUE;
}

static gboolean
reader_u8 (Reader *r, guint *v)
{
  guint8 b;

  if (!reader_take (r, &b, 1))
    return FALSE;
  *v = b;
  return TRUE;
}

static gboolean
reader_u16 (Reader *r, guint *v)
{
  guint8 b[2];

  if (!reader_take (r, b, 2))
    return FALSE;
  *v = ((guint) b[0] << 8) | b[1];
  return TRUE;
}

static gboolean
reader_skip (Reader *r, gsize n)
{
  return reader_take (r, NULL, n);
}

static GtDecodeResult
malformed (GError **error, const char *what)
{
  g_set_error (error, GT_TLS_SNIFF_ERROR, GT_TLS_SNIFF_ERROR_MALFORMED, "Malformed ClientHello: %s",
               what);
  return GT_DECODE_ERROR;
}

/* Smallest buffer that could complete the hello: from pos, the current record has rec_left
 * payload bytes left and the hello needs rest more bytes (at least one more record header if they
 * do not fit). */
static gsize
min_total (gsize pos, gsize rec_left, gsize rest)
{
  if (rest <= rec_left)
    return pos + rest;
  return pos + rec_left + RECORD_HEADER_SIZE + (rest - rec_left);
}

static GtDecodeResult
need_more_within (gsize needed, gsize max_len, GError **error)
{
  if (needed > max_len)
    {
      g_set_error (error, GT_TLS_SNIFF_ERROR, GT_TLS_SNIFF_ERROR_TOO_LARGE,
                   "ClientHello larger than %" G_GSIZE_FORMAT " bytes", max_len);
      return GT_DECODE_ERROR;
    }
  return GT_DECODE_NEED_MORE;
}

/* Checks the record layer up to the end of the ClientHello. On OK, *hs_total is the size of the
 * handshake message (header included) and all of it is in buf. */
static GtDecodeResult
check_records (const guint8 *buf, gsize len, gsize max_len, gsize *hs_total, GError **error)
{
  guint8 hs_hdr[HANDSHAKE_HEADER_SIZE];
  gsize hs_hdr_have = 0;
  gsize total = 0; /* 0 until the handshake header is complete */
  gsize have = 0;  /* handshake bytes seen */
  gsize pos = 0;

  for (;;)
    {
      gsize avail = len - pos;
      gsize rec_len, rec_left, rest;

      /* Judge the part of the record header that has arrived before waiting for the rest. */
      if (avail >= 1 && buf[pos] != CONTENT_TYPE_HANDSHAKE)
        return malformed (error, "record of another type before the end of the hello");
      if (avail >= 2 && buf[pos + 1] != 3)
        return malformed (error, "bad record version");
      if (avail >= 3 && (buf[pos + 2] < 1 || buf[pos + 2] > 4))
        return malformed (error, "bad record version");
      rest = total != 0 ? total - have
                        : HANDSHAKE_HEADER_SIZE - hs_hdr_have + MIN_CLIENT_HELLO_BODY;
      if (avail < RECORD_HEADER_SIZE)
        return need_more_within (min_total (pos, 0, rest), max_len, error);
      rec_len = ((gsize) buf[pos + 3] << 8) | buf[pos + 4];
      if (rec_len == 0)
        return malformed (error, "empty handshake record");
      if (rec_len > GT_TLS_MAX_RECORD_PAYLOAD)
        return malformed (error, "record too long");
      pos += RECORD_HEADER_SIZE;
      avail -= RECORD_HEADER_SIZE;
      rec_left = rec_len;

      /* The 4-byte handshake header may itself be split over records. */
      while (hs_hdr_have < HANDSHAKE_HEADER_SIZE && rec_left > 0 && avail > 0)
        {
          hs_hdr[hs_hdr_have++] = buf[pos++];
          rec_left--;
          avail--;
          have++;
        }
      if (hs_hdr_have >= 1 && hs_hdr[0] != HANDSHAKE_CLIENT_HELLO)
        return malformed (error, "not a ClientHello");
      if (hs_hdr_have < HANDSHAKE_HEADER_SIZE)
        {
          if (rec_left == 0)
            continue;
          rest = HANDSHAKE_HEADER_SIZE - hs_hdr_have + MIN_CLIENT_HELLO_BODY;
          return need_more_within (min_total (pos, rec_left, rest), max_len, error);
        }
      if (total == 0)
        {
          gsize body = ((gsize) hs_hdr[1] << 16) | ((gsize) hs_hdr[2] << 8) | hs_hdr[3];

          if (body < MIN_CLIENT_HELLO_BODY)
            return malformed (error, "too short");
          total = HANDSHAKE_HEADER_SIZE + body;
        }

      rest = total - have;
      if (min_total (pos, rec_left, rest) > max_len)
        return need_more_within (min_total (pos, rec_left, rest), max_len, error);
      if (rest <= rec_left)
        {
          /* The hello ends in this record; what follows it is not ours to judge. */
          if (avail < rest)
            return GT_DECODE_NEED_MORE;
          *hs_total = total;
          return GT_DECODE_OK;
        }
      if (avail < rec_left)
        return GT_DECODE_NEED_MORE;
      pos += rec_left;
      have += rec_left;
    }
}

/* Validates and normalises a host_name: one trailing dot removed, lower-cased. */
static char *
normalise_host_name (const guint8 *name, gsize len, GError **error)
{
  gsize label = 0;

  if (len > 0 && name[len - 1] == '.')
    len--;
  if (len == 0 || len > MAX_DNS_NAME)
    {
      malformed (error, "bad server_name length");
      return NULL;
    }
  for (gsize i = 0; i < len; i++)
    {
      guint8 c = name[i];

      if (c == '.')
        {
          if (label == 0)
            {
              malformed (error, "empty label in server_name");
              return NULL;
            }
          label = 0;
          continue;
        }
      if (!g_ascii_isalnum (c) && c != '-')
        {
          malformed (error, "bad character in server_name");
          return NULL;
        }
      if (++label > MAX_DNS_LABEL)
        {
          malformed (error, "label too long in server_name");
          return NULL;
        }
    }
  if (label == 0)
    {
      malformed (error, "empty label in server_name");
      return NULL;
    }
  return g_ascii_strdown ((const char *) name, (gssize) len);
}

/* Walks a server_name extension (the reader's limit is the end of the extension). */
static GtDecodeResult
parse_server_name (Reader *r, char **sni_out, GError **error)
{
  guint list_len;

  if (!reader_u16 (r, &list_len) || list_len != r->limit - r->off || list_len == 0)
    return malformed (error, "bad server_name list");
  while (r->off < r->limit)
    {
      guint type, name_len;
      /* One byte more than a DNS name may hold, for the trailing dot. */
      guint8 name[MAX_DNS_NAME + 1];

      if (!reader_u8 (r, &type) || !reader_u16 (r, &name_len))
        return malformed (error, "truncated server_name entry");
      if (type != NAME_TYPE_HOST_NAME || *sni_out != NULL)
        {
          /* Other name types share the u16-length layout (RFC 6066 §3); only the first host
           * name counts. */
          if (!reader_skip (r, name_len))
            return malformed (error, "truncated server_name entry");
          continue;
        }
      if (name_len == 0 || name_len > sizeof name)
        return malformed (error, "bad server_name length");
      if (!reader_take (r, name, name_len))
        return malformed (error, "truncated server_name entry");
      *sni_out = normalise_host_name (name, name_len, error);
      if (*sni_out == NULL)
        return GT_DECODE_ERROR;
    }
  return GT_DECODE_OK;
}

static GtDecodeResult
parse_client_hello (Reader *r, char **sni_out, GError **error)
{
  guint version, n;
  gboolean seen_sni = FALSE;
  gsize hello_end = r->limit;

  if (!reader_skip (r, HANDSHAKE_HEADER_SIZE))
    return malformed (error, "truncated");
  if (!reader_u16 (r, &version) || (version >> 8) != 3)
    return malformed (error, "bad legacy_version");
  if (!reader_skip (r, 32))
    return malformed (error, "truncated random");
  if (!reader_u8 (r, &n) || n > MAX_SESSION_ID || !reader_skip (r, n))
    return malformed (error, "bad session_id");
  if (!reader_u16 (r, &n) || n < 2 || n % 2 != 0 || !reader_skip (r, n))
    return malformed (error, "bad cipher_suites");
  if (!reader_u8 (r, &n) || n < 1 || !reader_skip (r, n))
    return malformed (error, "bad compression_methods");
  if (r->off == hello_end)
    return GT_DECODE_OK; /* no extensions */

  if (!reader_u16 (r, &n) || n != hello_end - r->off)
    return malformed (error, "extensions do not fill the hello");
  while (r->off < hello_end)
    {
      guint type, ext_len;

      if (!reader_u16 (r, &type) || !reader_u16 (r, &ext_len) || ext_len > hello_end - r->off)
        return malformed (error, "truncated extension");
      if (type != EXT_SERVER_NAME)
        {
          if (!reader_skip (r, ext_len))
            return malformed (error, "truncated extension");
          continue;
        }
      if (seen_sni)
        return malformed (error, "duplicate server_name extension");
      seen_sni = TRUE;
      r->limit = r->off + ext_len;
      if (parse_server_name (r, sni_out, error) != GT_DECODE_OK)
        return GT_DECODE_ERROR;
      r->limit = hello_end;
    }
  return GT_DECODE_OK;
}

GtDecodeResult
gt_tls_sniff_sni (const guint8 *buf, gsize len, gsize max_len, char **sni_out, GError **error)
{
  Reader r = { 0 };
  gsize hs_total = 0;
  GtDecodeResult res;

  g_return_val_if_fail (buf != NULL || len == 0, GT_DECODE_ERROR);
  g_return_val_if_fail (sni_out != NULL, GT_DECODE_ERROR);
  g_return_val_if_fail (error == NULL || *error == NULL, GT_DECODE_ERROR);

  *sni_out = NULL;
  if (max_len == 0)
    max_len = G_MAXSIZE;
  if (len == 0)
    return GT_DECODE_NEED_MORE;
  if (buf[0] != CONTENT_TYPE_HANDSHAKE)
    {
      g_set_error_literal (error, GT_TLS_SNIFF_ERROR, GT_TLS_SNIFF_ERROR_NOT_TLS,
                           "Not a TLS handshake record");
      return GT_DECODE_ERROR;
    }

  res = check_records (buf, len, max_len, &hs_total, error);
  if (res != GT_DECODE_OK)
    return res;

  r.buf = buf;
  r.len = len;
  r.limit = hs_total;
  res = parse_client_hello (&r, sni_out, error);
  if (res != GT_DECODE_OK)
    g_clear_pointer (sni_out, g_free);
  return res;
}

gsize
gt_tls_alert (guint8 out[GT_TLS_ALERT_SIZE], guint8 description)
{
  g_return_val_if_fail (out != NULL, 0);

  out[0] = CONTENT_TYPE_ALERT;
  out[1] = 3;
  out[2] = 3;
  out[3] = 0;
  out[4] = 2;
  out[5] = 2; /* fatal */
  out[6] = description;
  return GT_TLS_ALERT_SIZE;
}
