/* gt-stun.c: STUN (RFC 8489) message parsing and building, bytes only. */
#include "config.h"

#include "gt-stun.h"

#include <string.h>
#include <zlib.h>

G_DEFINE_QUARK (gt-stun-error-quark, gt_stun_error)

#define FINGERPRINT_XOR 0x5354554Eu
#define SOFTWARE "gt"

static guint16
rd16 (const guint8 *p)
{
  return (guint16) ((p[0] << 8) | p[1]);
}

static guint32
rd32 (const guint8 *p)
{
  return ((guint32) p[0] << 24) | ((guint32) p[1] << 16) | ((guint32) p[2] << 8) | p[3];
}

static void
wr16 (guint8 *p, guint16 v)
{
  p[0] = v >> 8;
  p[1] = v & 0xff;
}

static void
wr32 (guint8 *p, guint32 v)
{
  p[0] = v >> 24;
  p[1] = (v >> 16) & 0xff;
  p[2] = (v >> 8) & 0xff;
  p[3] = v & 0xff;
}

gboolean
gt_stun_looks_like_stun (const guint8 *buf, gsize len)
{
  return len >= GT_STUN_HEADER_SIZE && (buf[0] & 0xC0) == 0
         && rd32 (buf + 4) == GT_STUN_MAGIC_COOKIE;
}

static guint32
fingerprint (const guint8 *buf, gsize len)
{
  return (guint32) crc32 (0L, buf, (uInt) len) ^ FINGERPRINT_XOR;
}

/* The attribute types whose meaning this code knows (the others below 0x8000 are "unknown
 * comprehension-required" and get a 420). */
static gboolean
attribute_known (guint16 type)
{
  switch (type)
    {
    case GT_STUN_ATTR_MAPPED_ADDRESS:
    case GT_STUN_ATTR_USERNAME:
    case GT_STUN_ATTR_MESSAGE_INTEGRITY:
    case GT_STUN_ATTR_ERROR_CODE:
    case GT_STUN_ATTR_UNKNOWN_ATTRIBUTES:
    case GT_STUN_ATTR_REALM:
    case GT_STUN_ATTR_NONCE:
    case GT_STUN_ATTR_MESSAGE_INTEGRITY_SHA256:
    case GT_STUN_ATTR_PASSWORD_ALGORITHM:
    case GT_STUN_ATTR_USERHASH:
    case GT_STUN_ATTR_XOR_MAPPED_ADDRESS:
    case GT_STUN_ATTR_PRIORITY:
    case GT_STUN_ATTR_USE_CANDIDATE:
      return TRUE;
    default:
      return type >= 0x8000;
    }
}

static gboolean
fail (GError **error, GtStunErrorEnum code, const char *message)
{
  g_set_error_literal (error, GT_STUN_ERROR, code, message);
  return FALSE;
}

static gboolean
parse_xor_address (const guint8 *header, const guint8 *v, guint16 len, GtStunAddress *out)
{
  guint8 family;
  gsize alen;

  if (len < 4 || v[0] != 0)
    return FALSE;
  family = v[1];
  if (family == 0x01)
    alen = 4;
  else if (family == 0x02)
    alen = 16;
  else
    return FALSE;
  if (len != 4 + alen)
    return FALSE;
  out->family = family == 0x01 ? 4 : 6;
  out->port = rd16 (v + 2) ^ (GT_STUN_MAGIC_COOKIE >> 16);
  /* The address is XORed with the cookie and then the transaction id (header bytes 4..19). */
  for (gsize i = 0; i < alen; i++)
    out->bytes[i] = v[4 + i] ^ header[4 + i];
  return TRUE;
}

gboolean
gt_stun_parse (const guint8 *buf, gsize len, GtStunMessage *out, GError **error)
{
  guint16 type, body_len;
  gsize pos;
  guint n_attrs = 0;

  g_return_val_if_fail (buf != NULL || len == 0, FALSE);
  g_return_val_if_fail (out != NULL, FALSE);

  memset (out, 0, sizeof *out);
  /* RFC 3489 clients: a Binding request (type 0x0001) whose cookie field is transaction id. */
  if (len >= GT_STUN_HEADER_SIZE && rd16 (buf) == 0x0001
      && rd32 (buf + 4) != GT_STUN_MAGIC_COOKIE)
    {
      out->classic = TRUE;
      memcpy (out->classic_cookie, buf + 4, 4);
    }
  else if (!gt_stun_looks_like_stun (buf, len))
    return fail (error, GT_STUN_ERROR_NOT_STUN, "not a STUN message");
  if (len > GT_STUN_MAX_MESSAGE)
    return fail (error, GT_STUN_ERROR_TOO_LARGE, "STUN message too large");
  type = rd16 (buf);
  body_len = rd16 (buf + 2);
  if ((body_len & 3) != 0 || (gsize) body_len + GT_STUN_HEADER_SIZE != len)
    return fail (error, GT_STUN_ERROR_NOT_STUN, "STUN length does not match the datagram");

  out->klass = (GtStunClass) (((type >> 7) & 0x2) | ((type >> 4) & 0x1));
  out->method = (guint16) ((type & 0x000F) | ((type >> 1) & 0x0070) | ((type >> 2) & 0x0F80));
  memcpy (out->transaction_id, buf + 8, 12);
  out->length = len;

  for (pos = GT_STUN_HEADER_SIZE; pos < len;)
    {
      guint16 atype, alen;
      const guint8 *v;
      gsize padded;

      if (len - pos < 4)
        return fail (error, GT_STUN_ERROR_MALFORMED, "truncated STUN attribute header");
      if (out->has_fingerprint)
        return fail (error, GT_STUN_ERROR_MALFORMED, "STUN attribute after FINGERPRINT");
      if (++n_attrs > GT_STUN_MAX_ATTRIBUTES)
        return fail (error, GT_STUN_ERROR_TOO_LARGE, "too many STUN attributes");
      atype = rd16 (buf + pos);
      alen = rd16 (buf + pos + 2);
      v = buf + pos + 4;
      padded = ((gsize) alen + 3) & ~(gsize) 3;
      if (padded > len - pos - 4)
        return fail (error, GT_STUN_ERROR_MALFORMED, "STUN attribute runs past the message");

      switch (atype)
        {
        case GT_STUN_ATTR_FINGERPRINT:
          if (out->classic)
            return fail (error, GT_STUN_ERROR_NOT_STUN, "a FINGERPRINT without magic cookie");
          if (alen != 4)
            return fail (error, GT_STUN_ERROR_MALFORMED, "bad STUN FINGERPRINT length");
          if (rd32 (v) != fingerprint (buf, pos))
            return fail (error, GT_STUN_ERROR_MALFORMED, "wrong STUN FINGERPRINT");
          out->has_fingerprint = TRUE;
          break;
        case GT_STUN_ATTR_XOR_MAPPED_ADDRESS:
          if (!parse_xor_address (buf, v, alen, &out->xor_mapped))
            return fail (error, GT_STUN_ERROR_MALFORMED, "bad STUN XOR-MAPPED-ADDRESS");
          out->has_xor_mapped = TRUE;
          break;
        case GT_STUN_ATTR_ERROR_CODE:
          if (alen < 4 || (v[2] & 0x7) < 3 || (v[2] & 0x7) > 6 || v[3] > 99)
            return fail (error, GT_STUN_ERROR_MALFORMED, "bad STUN ERROR-CODE");
          out->error_code = (v[2] & 0x7) * 100u + v[3];
          break;
        default:
          if (!attribute_known (atype) && out->n_unknown < GT_STUN_MAX_UNKNOWN)
            out->unknown[out->n_unknown++] = atype;
          break;
        }
      pos += 4 + padded;
    }
  return TRUE;
}

/* ------------------------------------------------------------------------------------------ */
/* Building */

static void
put_header (guint8 *out, guint16 method, GtStunClass klass, const guint8 transaction_id[12])
{
  guint16 type = (guint16) ((method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2)
                            | ((klass & 0x1) << 4) | ((klass & 0x2) << 7));

  wr16 (out, type);
  wr16 (out + 2, 0);
  wr32 (out + 4, GT_STUN_MAGIC_COOKIE);
  memcpy (out + 8, transaction_id, 12);
}

/* Appends an attribute (zero padding) at *pos and returns a pointer to its value. */
static guint8 *
put_attr (guint8 *out, gsize *pos, guint16 type, const void *value, guint16 len)
{
  guint8 *v = out + *pos + 4;
  gsize padded = ((gsize) len + 3) & ~(gsize) 3;

  g_assert (*pos + 4 + padded <= GT_STUN_MAX_MESSAGE);
  wr16 (out + *pos, type);
  wr16 (out + *pos + 2, len);
  if (value != NULL)
    memcpy (v, value, len);
  memset (v + len, 0, padded - len);
  *pos += 4 + padded;
  return v;
}

/* SOFTWARE and FINGERPRINT, and the final length in the header; a classic answer gets only its
 * length and the request's cookie bytes. */
static gsize
finish (guint8 *out, gsize pos, const GtStunMessage *request)
{
  guint8 *v;

  if (request != NULL && request->classic)
    {
      memcpy (out + 4, request->classic_cookie, 4);
      wr16 (out + 2, (guint16) (pos - GT_STUN_HEADER_SIZE));
      return pos;
    }
  put_attr (out, &pos, GT_STUN_ATTR_SOFTWARE, SOFTWARE, sizeof SOFTWARE - 1);
  /* The CRC covers the header with the length that already counts the FINGERPRINT. */
  wr16 (out + 2, (guint16) (pos + 8 - GT_STUN_HEADER_SIZE));
  v = put_attr (out, &pos, GT_STUN_ATTR_FINGERPRINT, NULL, 4);
  wr32 (v, fingerprint (out, pos - 8));
  return pos;
}

gsize
gt_stun_build_binding_request (const guint8 transaction_id[12], guint8 *out)
{
  g_return_val_if_fail (transaction_id != NULL && out != NULL, 0);

  put_header (out, GT_STUN_METHOD_BINDING, GT_STUN_CLASS_REQUEST, transaction_id);
  return finish (out, GT_STUN_HEADER_SIZE, NULL);
}

gsize
gt_stun_build_binding_success (const GtStunMessage *request, const GtStunAddress *mapped,
                               guint8 *out)
{
  gsize pos = GT_STUN_HEADER_SIZE;
  gsize alen;
  guint8 *v;

  g_return_val_if_fail (request != NULL && mapped != NULL && out != NULL, 0);
  g_return_val_if_fail (mapped->family == 4 || mapped->family == 6, 0);

  alen = mapped->family == 4 ? 4 : 16;
  put_header (out, request->method, GT_STUN_CLASS_SUCCESS, request->transaction_id);
  if (request->classic)
    {
      v = put_attr (out, &pos, GT_STUN_ATTR_MAPPED_ADDRESS, NULL, (guint16) (4 + alen));
      v[0] = 0;
      v[1] = mapped->family == 4 ? 0x01 : 0x02;
      wr16 (v + 2, mapped->port);
      memcpy (v + 4, mapped->bytes, alen);
      return finish (out, pos, request);
    }
  v = put_attr (out, &pos, GT_STUN_ATTR_XOR_MAPPED_ADDRESS, NULL, (guint16) (4 + alen));
  v[0] = 0;
  v[1] = mapped->family == 4 ? 0x01 : 0x02;
  wr16 (v + 2, mapped->port ^ (GT_STUN_MAGIC_COOKIE >> 16));
  for (gsize i = 0; i < alen; i++)
    v[4 + i] = mapped->bytes[i] ^ out[4 + i];
  return finish (out, pos, request);
}

gsize
gt_stun_build_error (const GtStunMessage *request, guint code, const char *reason, guint8 *out)
{
  gsize pos = GT_STUN_HEADER_SIZE;
  gsize rlen;
  guint8 *v;

  g_return_val_if_fail (request != NULL && reason != NULL && out != NULL, 0);
  g_return_val_if_fail (code >= 300 && code <= 699, 0);

  rlen = MIN (strlen (reason), 127);
  put_header (out, request->method, GT_STUN_CLASS_ERROR, request->transaction_id);
  v = put_attr (out, &pos, GT_STUN_ATTR_ERROR_CODE, NULL, (guint16) (4 + rlen));
  v[0] = v[1] = 0;
  v[2] = (guint8) (code / 100);
  v[3] = (guint8) (code % 100);
  memcpy (v + 4, reason, rlen);
  if (code == 420 && request->n_unknown > 0)
    {
      v = put_attr (out, &pos, GT_STUN_ATTR_UNKNOWN_ATTRIBUTES, NULL,
                    (guint16) (2 * request->n_unknown));
      for (guint i = 0; i < request->n_unknown; i++)
        wr16 (v + 2 * i, request->unknown[i]);
    }
  return finish (out, pos, request);
}
