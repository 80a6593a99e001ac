/* gt-stun.c: STUN (RFC 8489) and TURN (RFC 8656) message parsing and building, bytes only. */
#include "config.h"

#include "gt-stun.h"

#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
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
gt_stun_address_from_native (const struct sockaddr_storage *ss, GtStunAddress *out)
{
  memset (out, 0, sizeof *out);
  if (ss->ss_family == AF_INET)
    {
      const struct sockaddr_in *in = (const struct sockaddr_in *) ss;

      out->family = 4;
      memcpy (out->bytes, &in->sin_addr, 4);
      out->port = g_ntohs (in->sin_port);
      return TRUE;
    }
  if (ss->ss_family == AF_INET6)
    {
      const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) ss;

      if (IN6_IS_ADDR_V4MAPPED (&in6->sin6_addr))
        {
          out->family = 4;
          memcpy (out->bytes, in6->sin6_addr.s6_addr + 12, 4);
        }
      else
        {
          out->family = 6;
          memcpy (out->bytes, &in6->sin6_addr, 16);
        }
      out->port = g_ntohs (in6->sin6_port);
      return TRUE;
    }
  return FALSE;
}

guint
gt_stun_address_to_native (const GtStunAddress *address, struct sockaddr_storage *ss)
{
  memset (ss, 0, sizeof *ss);
  if (address->family == 4)
    {
      struct sockaddr_in *in = (struct sockaddr_in *) ss;

      in->sin_family = AF_INET;
      memcpy (&in->sin_addr, address->bytes, 4);
      in->sin_port = g_htons (address->port);
      return sizeof *in;
    }
  if (address->family == 6)
    {
      struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) ss;

      in6->sin6_family = AF_INET6;
      memcpy (&in6->sin6_addr, address->bytes, 16);
      in6->sin6_port = g_htons (address->port);
      return sizeof *in6;
    }
  return 0;
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
    case GT_STUN_ATTR_CHANNEL_NUMBER:
    case GT_STUN_ATTR_LIFETIME:
    case GT_STUN_ATTR_XOR_PEER_ADDRESS:
    case GT_STUN_ATTR_DATA:
    case GT_STUN_ATTR_XOR_RELAYED_ADDRESS:
    case GT_STUN_ATTR_REQUESTED_ADDRESS_FAMILY:
    case GT_STUN_ATTR_EVEN_PORT:
    case GT_STUN_ATTR_REQUESTED_TRANSPORT:
    case GT_STUN_ATTR_DONT_FRAGMENT:
    case GT_STUN_ATTR_RESERVATION_TOKEN:
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

/* A string-like attribute (USERNAME, REALM, NONCE): bounded as RFC 8489 says (< 763 bytes). */
static gboolean
take_text (const guint8 *v, guint16 alen, const guint8 **ptr, guint16 *len)
{
  if (alen > 763)
    return FALSE;
  *ptr = v;
  *len = alen;
  return TRUE;
}

/* The TURN attributes; FALSE when one is malformed. */
static gboolean
parse_turn_attribute (const guint8 *buf, guint16 atype, const guint8 *v, guint16 alen,
                      GtStunMessage *out)
{
  switch (atype)
    {
    case GT_STUN_ATTR_USERNAME:
      return take_text (v, alen, &out->username, &out->username_len);
    case GT_STUN_ATTR_REALM:
      return take_text (v, alen, &out->realm, &out->realm_len);
    case GT_STUN_ATTR_NONCE:
      return take_text (v, alen, &out->nonce, &out->nonce_len);
    case GT_STUN_ATTR_DATA:
      out->data = v;
      out->data_len = alen;
      return TRUE;
    case GT_STUN_ATTR_LIFETIME:
      if (alen != 4)
        return FALSE;
      out->has_lifetime = TRUE;
      out->lifetime = rd32 (v);
      return TRUE;
    case GT_STUN_ATTR_CHANNEL_NUMBER:
      if (alen != 4)
        return FALSE;
      out->has_channel = TRUE;
      out->channel = rd16 (v);
      return TRUE;
    case GT_STUN_ATTR_REQUESTED_TRANSPORT:
      if (alen != 4)
        return FALSE;
      out->requested_transport = v[0];
      return TRUE;
    case GT_STUN_ATTR_REQUESTED_ADDRESS_FAMILY:
      if (alen != 4 || (v[0] != 0x01 && v[0] != 0x02))
        return FALSE;
      out->requested_family = v[0] == 0x01 ? 4 : 6;
      return TRUE;
    case GT_STUN_ATTR_EVEN_PORT:
      if (alen != 1)
        return FALSE;
      out->has_even_port = TRUE;
      return TRUE;
    case GT_STUN_ATTR_RESERVATION_TOKEN:
      if (alen != 8)
        return FALSE;
      out->has_reservation_token = TRUE;
      return TRUE;
    case GT_STUN_ATTR_DONT_FRAGMENT:
      if (alen != 0)
        return FALSE;
      out->dont_fragment = TRUE;
      return TRUE;
    case GT_STUN_ATTR_XOR_PEER_ADDRESS:
      if (out->n_peers >= GT_STUN_MAX_PEERS)
        return FALSE;
      if (!parse_xor_address (buf, v, alen, &out->peers[out->n_peers]))
        return FALSE;
      out->n_peers++;
      return TRUE;
    case GT_STUN_ATTR_XOR_RELAYED_ADDRESS:
      if (!parse_xor_address (buf, v, alen, &out->xor_relayed))
        return FALSE;
      out->has_xor_relayed = TRUE;
      return TRUE;
    default:
      return TRUE;
    }
}

static gboolean
parse_limited (const guint8 *buf, gsize len, gsize limit, GtStunMessage *out, GError **error)
{
  guint16 type, body_len;
  gsize pos;
  guint n_attrs = 0;

  g_return_val_if_fail (buf != NULL || len == 0, FALSE);
  g_return_val_if_fail (out != NULL, FALSE);

  memset (out, 0, sizeof *out);
  out->requested_transport = -1;
  /* RFC 3489 clients: a Binding request (type 0x0001) whose cookie field is transaction id. */
  if (len >= GT_STUN_HEADER_SIZE && rd16 (buf) == 0x0001
      && rd32 (buf + 4) != GT_STUN_MAGIC_COOKIE)
    {
      out->classic = TRUE;
      memcpy (out->classic_cookie, buf + 4, 4);
    }
  else if (!gt_stun_looks_like_stun (buf, len))
    return fail (error, GT_STUN_ERROR_NOT_STUN, "not a STUN message");
  if (len > limit)
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

      /* After MESSAGE-INTEGRITY only FINGERPRINT counts (RFC 8489 §14.5). */
      if (out->integrity_offset != 0 && atype != GT_STUN_ATTR_FINGERPRINT)
        {
          pos += 4 + padded;
          continue;
        }
      switch (atype)
        {
        case GT_STUN_ATTR_MESSAGE_INTEGRITY:
          if (alen != 20)
            return fail (error, GT_STUN_ERROR_MALFORMED, "bad STUN MESSAGE-INTEGRITY length");
          out->integrity_offset = pos;
          break;
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
          else if (!parse_turn_attribute (buf, atype, v, alen, out))
            return fail (error, GT_STUN_ERROR_MALFORMED, "bad STUN or TURN attribute");
          break;
        }
      pos += 4 + padded;
    }
  return TRUE;
}

gboolean
gt_stun_parse (const guint8 *buf, gsize len, GtStunMessage *out, GError **error)
{
  return parse_limited (buf, len, GT_STUN_MAX_MESSAGE, out, error);
}

gboolean
gt_stun_parse_turn (const guint8 *buf, gsize len, GtStunMessage *out, GError **error)
{
  return parse_limited (buf, len, GT_TURN_MAX_MESSAGE, out, error);
}

void
gt_stun_long_term_key (const char *username, const char *realm, const char *password,
                       guint8 key[16])
{
  g_autoptr (GChecksum) md5 = g_checksum_new (G_CHECKSUM_MD5);
  gsize len = 16;

  g_checksum_update (md5, (const guchar *) username, -1);
  g_checksum_update (md5, (const guchar *) ":", 1);
  g_checksum_update (md5, (const guchar *) realm, -1);
  g_checksum_update (md5, (const guchar *) ":", 1);
  g_checksum_update (md5, (const guchar *) password, -1);
  g_checksum_get_digest (md5, key, &len);
}

/* HMAC-SHA1 over buf[0..upto) with the header's length set to end just after a
 * MESSAGE-INTEGRITY attribute placed at upto (RFC 8489 §14.5). */
static void
integrity (const guint8 *buf, gsize upto, const guint8 *key, gsize key_len, guint8 mac[20])
{
  g_autoptr (GHmac) hmac = g_hmac_new (G_CHECKSUM_SHA1, key, key_len);
  guint8 header[GT_STUN_HEADER_SIZE];
  gsize len = 20;

  memcpy (header, buf, GT_STUN_HEADER_SIZE);
  wr16 (header + 2, (guint16) (upto + 24 - GT_STUN_HEADER_SIZE));
  g_hmac_update (hmac, header, GT_STUN_HEADER_SIZE);
  g_hmac_update (hmac, buf + GT_STUN_HEADER_SIZE, upto - GT_STUN_HEADER_SIZE);
  g_hmac_get_digest (hmac, mac, &len);
}

gboolean
gt_stun_check_integrity (const guint8 *buf, const GtStunMessage *msg, const guint8 *key,
                         gsize key_len)
{
  guint8 mac[20];
  guint8 diff = 0;

  g_return_val_if_fail (buf != NULL && msg != NULL && key != NULL, FALSE);
  if (msg->integrity_offset < GT_STUN_HEADER_SIZE || msg->integrity_offset + 24 > msg->length)
    return FALSE;
  integrity (buf, msg->integrity_offset, key, key_len, mac);
  /* Compared in constant time: the MAC is a credential check. */
  for (guint i = 0; i < 20; i++)
    diff |= mac[i] ^ buf[msg->integrity_offset + 4 + i];
  return diff == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Building */

void
gt_stun_builder_init (GtStunBuilder *b, guint8 *out, gsize cap, guint16 method,
                      GtStunClass klass, const guint8 transaction_id[12])
{
  guint16 type = (guint16) ((method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2)
                            | ((klass & 0x1) << 4) | ((klass & 0x2) << 7));

  g_return_if_fail (cap >= GT_STUN_HEADER_SIZE);
  b->out = out;
  b->cap = MIN (cap, (gsize) G_MAXUINT16);
  b->pos = GT_STUN_HEADER_SIZE;
  wr16 (out, type);
  wr16 (out + 2, 0);
  wr32 (out + 4, GT_STUN_MAGIC_COOKIE);
  memcpy (out + 8, transaction_id, 12);
}

/* Reserves an attribute (zero padding) and returns a pointer to its value, or NULL if it does not
 * fit. */
static guint8 *
reserve (GtStunBuilder *b, guint16 type, gsize len)
{
  gsize padded = (len + 3) & ~(gsize) 3;
  guint8 *v;

  if (len > G_MAXUINT16 || b->pos + 4 + padded > b->cap)
    return NULL;
  v = b->out + b->pos + 4;
  wr16 (b->out + b->pos, type);
  wr16 (b->out + b->pos + 2, (guint16) len);
  memset (v + len, 0, padded - len);
  b->pos += 4 + padded;
  return v;
}

gboolean
gt_stun_builder_add_bytes (GtStunBuilder *b, guint16 type, const void *value, gsize len)
{
  guint8 *v = reserve (b, type, len);

  if (v == NULL)
    return FALSE;
  if (len > 0)
    memcpy (v, value, len);
  return TRUE;
}

gboolean
gt_stun_builder_add_u32 (GtStunBuilder *b, guint16 type, guint32 value)
{
  guint8 *v = reserve (b, type, 4);

  if (v == NULL)
    return FALSE;
  wr32 (v, value);
  return TRUE;
}

gboolean
gt_stun_builder_add_xor_address (GtStunBuilder *b, guint16 type, const GtStunAddress *address)
{
  gsize alen;
  guint8 *v;

  g_return_val_if_fail (address->family == 4 || address->family == 6, FALSE);
  alen = address->family == 4 ? 4 : 16;
  v = reserve (b, type, 4 + alen);
  if (v == NULL)
    return FALSE;
  v[0] = 0;
  v[1] = address->family == 4 ? 0x01 : 0x02;
  wr16 (v + 2, address->port ^ (GT_STUN_MAGIC_COOKIE >> 16));
  /* XORed with the cookie and the transaction id (header bytes 4..19). */
  for (gsize i = 0; i < alen; i++)
    v[4 + i] = address->bytes[i] ^ b->out[4 + i];
  return TRUE;
}

gboolean
gt_stun_builder_add_error (GtStunBuilder *b, guint code, const char *reason)
{
  gsize rlen = MIN (strlen (reason), 127);
  guint8 *v;

  g_return_val_if_fail (code >= 300 && code <= 699, FALSE);
  v = reserve (b, GT_STUN_ATTR_ERROR_CODE, 4 + rlen);
  if (v == NULL)
    return FALSE;
  v[0] = v[1] = 0;
  v[2] = (guint8) (code / 100);
  v[3] = (guint8) (code % 100);
  memcpy (v + 4, reason, rlen);
  return TRUE;
}

gsize
gt_stun_builder_finish (GtStunBuilder *b, const guint8 *key, gsize key_len)
{
  guint8 *v;

  /* SOFTWARE (8) + MESSAGE-INTEGRITY (24) + FINGERPRINT (8) */
  if (b->pos + 8 + (key != NULL ? 24 : 0) + 8 > b->cap)
    return 0;
  gt_stun_builder_add_bytes (b, GT_STUN_ATTR_SOFTWARE, SOFTWARE, sizeof SOFTWARE - 1);
  if (key != NULL)
    {
      gsize at = b->pos;

      v = reserve (b, GT_STUN_ATTR_MESSAGE_INTEGRITY, 20);
      integrity (b->out, at, key, key_len, v);
    }
  /* The CRC covers the header with the length that already counts the FINGERPRINT. */
  wr16 (b->out + 2, (guint16) (b->pos + 8 - GT_STUN_HEADER_SIZE));
  v = reserve (b, GT_STUN_ATTR_FINGERPRINT, 4);
  wr32 (v, fingerprint (b->out, b->pos - 8));
  return b->pos;
}

/* A classic (RFC 3489) answer: the request's cookie bytes back, the length, no SOFTWARE and no
 * FINGERPRINT (RFC 8489 §12). */
static gsize
finish_classic (GtStunBuilder *b, const GtStunMessage *request)
{
  memcpy (b->out + 4, request->classic_cookie, 4);
  wr16 (b->out + 2, (guint16) (b->pos - GT_STUN_HEADER_SIZE));
  return b->pos;
}

gsize
gt_stun_build_binding_request (const guint8 transaction_id[12], guint8 *out)
{
  GtStunBuilder b;

  g_return_val_if_fail (transaction_id != NULL && out != NULL, 0);
  gt_stun_builder_init (&b, out, GT_STUN_MAX_MESSAGE, GT_STUN_METHOD_BINDING,
                        GT_STUN_CLASS_REQUEST, transaction_id);
  return gt_stun_builder_finish (&b, NULL, 0);
}

gsize
gt_stun_build_binding_success (const GtStunMessage *request, const GtStunAddress *mapped,
                               guint8 *out)
{
  GtStunBuilder b;

  g_return_val_if_fail (request != NULL && mapped != NULL && out != NULL, 0);
  g_return_val_if_fail (mapped->family == 4 || mapped->family == 6, 0);
  gt_stun_builder_init (&b, out, GT_STUN_MAX_MESSAGE, request->method, GT_STUN_CLASS_SUCCESS,
                        request->transaction_id);
  if (request->classic)
    {
      guint8 v[20];
      gsize alen = mapped->family == 4 ? 4 : 16;

      v[0] = 0;
      v[1] = mapped->family == 4 ? 0x01 : 0x02;
      wr16 (v + 2, mapped->port);
      memcpy (v + 4, mapped->bytes, alen);
      gt_stun_builder_add_bytes (&b, GT_STUN_ATTR_MAPPED_ADDRESS, v, 4 + alen);
      return finish_classic (&b, request);
    }
  gt_stun_builder_add_xor_address (&b, GT_STUN_ATTR_XOR_MAPPED_ADDRESS, mapped);
  return gt_stun_builder_finish (&b, NULL, 0);
}

gsize
gt_stun_build_error (const GtStunMessage *request, guint code, const char *reason, guint8 *out)
{
  GtStunBuilder b;

  g_return_val_if_fail (request != NULL && reason != NULL && out != NULL, 0);
  g_return_val_if_fail (code >= 300 && code <= 699, 0);
  gt_stun_builder_init (&b, out, GT_STUN_MAX_MESSAGE, request->method, GT_STUN_CLASS_ERROR,
                        request->transaction_id);
  gt_stun_builder_add_error (&b, code, reason);
  if (code == 420 && request->n_unknown > 0)
    {
      guint8 types[2 * GT_STUN_MAX_UNKNOWN];

      for (guint i = 0; i < request->n_unknown; i++)
        wr16 (types + 2 * i, request->unknown[i]);
      gt_stun_builder_add_bytes (&b, GT_STUN_ATTR_UNKNOWN_ATTRIBUTES, types,
                                 2 * request->n_unknown);
    }
  if (request->classic)
    return finish_classic (&b, request);
  return gt_stun_builder_finish (&b, NULL, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* ChannelData */

gboolean
gt_turn_channel_data_parse (const guint8 *buf, gsize len, guint16 *channel, const guint8 **data,
                            gsize *data_len)
{
  guint16 number, dlen;

  if (len < 4)
    return FALSE;
  number = rd16 (buf);
  dlen = rd16 (buf + 2);
  if (number < GT_TURN_CHANNEL_MIN || number > GT_TURN_CHANNEL_MAX || (gsize) dlen > len - 4)
    return FALSE;
  *channel = number;
  *data = buf + 4;
  *data_len = dlen;
  return TRUE;
}

gsize
gt_turn_channel_data_build (guint16 channel, const guint8 *data, gsize data_len, guint8 *out)
{
  g_return_val_if_fail (data_len <= G_MAXUINT16, 0);
  wr16 (out, channel);
  wr16 (out + 2, (guint16) data_len);
  if (data_len > 0)
    memcpy (out + 4, data, data_len);
  return 4 + data_len;
}
