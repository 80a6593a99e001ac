/* gt-frame.c: encoder/decoder for gt's tunnel wire format over plain byte buffers. */
#include "gt-frame.h"

#include <string.h>

G_DEFINE_QUARK (gt-frame-error-quark, gt_frame_error)

#define HELLO_FLAG_REMOTE_RANDOM 0x01

/* Big-endian helpers. Callers have already checked that the bytes are there. */
static inline guint16
get_u16 (const guint8 *p)
{
  return (guint16) ((p[0] << 8) | p[1]);
}

static inline guint32
get_u32 (const guint8 *p)
{
  return ((guint32) p[0] << 24) | ((guint32) p[1] << 16) | ((guint32) p[2] << 8) | (guint32) p[3];
}

static inline void
put_u16 (guint8 *p, guint16 v)
{
  p[0] = (guint8) (v >> 8);
  p[1] = (guint8) v;
}

static inline void
put_u32 (guint8 *p, guint32 v)
{
  p[0] = (guint8) (v >> 24);
  p[1] = (guint8) (v >> 16);
  p[2] = (guint8) (v >> 8);
  p[3] = (guint8) v;
}

static void
append_u8 (GByteArray *out, guint8 v)
{
  g_byte_array_append (out, &v, 1);
}

static void
append_u16 (GByteArray *out, guint16 v)
{
  guint8 b[2];

  put_u16 (b, v);
  g_byte_array_append (out, b, sizeof b);
}

static void
append_u32 (GByteArray *out, guint32 v)
{
  guint8 b[4];

  put_u32 (b, v);
  g_byte_array_append (out, b, sizeof b);
}

/* Preface */

void
gt_preface_encode (guint8 out[GT_PREFACE_SIZE])
{
  out[0] = GT_PROTOCOL_MAGIC0;
  out[1] = GT_PROTOCOL_MAGIC1;
  out[2] = GT_PROTOCOL_MAGIC2;
  out[3] = GT_PROTOCOL_VERSION;
}

GtDecodeResult
gt_preface_decode (const guint8 *buf, gsize len, guint8 *version_out, GError **error)
{
  g_return_val_if_fail (buf != NULL || len == 0, GT_DECODE_ERROR);

  /* Reject a wrong magic as early as its first byte allows. */
  if ((len > 0 && buf[0] != GT_PROTOCOL_MAGIC0) || (len > 1 && buf[1] != GT_PROTOCOL_MAGIC1)
      || (len > 2 && buf[2] != GT_PROTOCOL_MAGIC2))
    {
      g_set_error_literal (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                           "not a gt tunnel preface (bad magic)");
      return GT_DECODE_ERROR;
    }
  if (len < GT_PREFACE_SIZE)
    return GT_DECODE_NEED_MORE;

  if (version_out != NULL)
    *version_out = buf[3];
  if (buf[3] != GT_PROTOCOL_VERSION)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_VERSION,
                   "unsupported protocol version %u (expected %u)", buf[3], GT_PROTOCOL_VERSION);
      return GT_DECODE_ERROR;
    }
  return GT_DECODE_OK;
}

/* Header */

static gboolean
type_is_connection_level (guint8 type)
{
  switch (type)
    {
    case GT_FRAME_HELLO:
    case GT_FRAME_WELCOME:
    case GT_FRAME_PING:
    case GT_FRAME_GOAWAY:
    case GT_FRAME_ERROR:
    case GT_FRAME_DATAGRAM:
      return TRUE;
    default:
      return FALSE;
    }
}

void
gt_frame_header_encode (guint8 out[GT_FRAME_HEADER_SIZE], GtFrameType type, guint8 flags,
                        guint32 stream_id, guint32 length)
{
  out[0] = (guint8) type;
  out[1] = flags;
  put_u32 (out + 2, stream_id);
  put_u32 (out + 6, length);
}

GtDecodeResult
gt_frame_header_decode (const guint8 *buf, gsize len, GtFrameHeader *hdr, GError **error)
{
  guint8 type, flags;
  guint32 stream_id, length;
  guint8 allowed_flags = 0;
  const char *name;

  g_return_val_if_fail (buf != NULL || len == 0, GT_DECODE_ERROR);

  if (len < GT_FRAME_HEADER_SIZE)
    return GT_DECODE_NEED_MORE;

  type = buf[0];
  flags = buf[1];
  stream_id = get_u32 (buf + 2);
  length = get_u32 (buf + 6);

  if (type < GT_FRAME_HELLO || type > GT_FRAME_TYPE_LAST)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED, "unknown frame type %u",
                   type);
      return GT_DECODE_ERROR;
    }
  name = gt_frame_type_to_string (type);

  if (type == GT_FRAME_PING || type == GT_FRAME_FORWARD)
    allowed_flags = GT_FRAME_FLAG_ACK;
  else if (type == GT_FRAME_OPEN)
    allowed_flags = GT_FRAME_FLAG_ADDR;
  else if (type == GT_FRAME_HELLO || type == GT_FRAME_WELCOME)
    allowed_flags = GT_FRAME_FLAG_CAPS;
  if ((flags & ~allowed_flags) != 0)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                   "%s frame with unknown flags 0x%02x", name, flags);
      return GT_DECODE_ERROR;
    }

  if (type_is_connection_level (type) && stream_id != 0)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                   "%s frame on stream %u (must be stream 0)", name, stream_id);
      return GT_DECODE_ERROR;
    }
  if (!type_is_connection_level (type) && stream_id == 0)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                   "%s frame on stream 0", name);
      return GT_DECODE_ERROR;
    }

  switch (type)
    {
    case GT_FRAME_HELLO:
    case GT_FRAME_WELCOME:
    case GT_FRAME_GOAWAY:
    case GT_FRAME_ERROR:
      if (length > GT_FRAME_MAX_CONTROL)
        {
          g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE,
                       "%s payload of %u bytes exceeds limit %u", name, length,
                       (guint) GT_FRAME_MAX_CONTROL);
          return GT_DECODE_ERROR;
        }
      break;

    case GT_FRAME_DATA:
    case GT_FRAME_OPEN:
      if (length > GT_FRAME_MAX_PAYLOAD)
        {
          g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE,
                       "frame payload of %u bytes exceeds limit %u", length,
                       (guint) GT_FRAME_MAX_PAYLOAD);
          return GT_DECODE_ERROR;
        }
      if (type == GT_FRAME_OPEN && length < GT_OPEN_PREFIX_SIZE)
        {
          g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                       "OPEN payload of %u bytes is shorter than %u", length,
                       (guint) GT_OPEN_PREFIX_SIZE);
          return GT_DECODE_ERROR;
        }
      break;

    case GT_FRAME_DATAGRAM:
      if (length > GT_DATAGRAM_MAX_PAYLOAD)
        {
          g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE,
                       "DATAGRAM payload of %u bytes exceeds limit %u", length,
                       (guint) GT_DATAGRAM_MAX_PAYLOAD);
          return GT_DECODE_ERROR;
        }
      if (length < GT_DATAGRAM_PREFIX_SIZE)
        {
          g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                       "DATAGRAM payload of %u bytes is shorter than %u", length,
                       (guint) GT_DATAGRAM_PREFIX_SIZE);
          return GT_DECODE_ERROR;
        }
      break;

    case GT_FRAME_FORWARD:
      if (length > GT_FRAME_MAX_PAYLOAD)
        {
          g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE,
                       "frame payload of %u bytes exceeds limit %u", length,
                       (guint) GT_FRAME_MAX_PAYLOAD);
          return GT_DECODE_ERROR;
        }
      /* The answer (ACK) is empty; a request names a prefix of at least one byte. */
      if ((flags & GT_FRAME_FLAG_ACK) ? length != 0 : length < 2)
        {
          g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                       "FORWARD%s payload of %u bytes (must be %s)",
                       (flags & GT_FRAME_FLAG_ACK) ? " ACK" : "", length,
                       (flags & GT_FRAME_FLAG_ACK) ? "0" : "at least 2");
          return GT_DECODE_ERROR;
        }
      break;

    default:
      {
        guint32 exact = 0;

        if (type == GT_FRAME_WINDOW || type == GT_FRAME_RESET)
          exact = 4;
        else if (type == GT_FRAME_PING)
          exact = 8;
        /* SHUTDOWN: 0 */
        if (length != exact)
          {
            g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                         "%s payload of %u bytes (must be %u)", name, length, exact);
            return GT_DECODE_ERROR;
          }
      }
      break;
    }

  if (hdr != NULL)
    {
      hdr->type = type;
      hdr->flags = flags;
      hdr->stream_id = stream_id;
      hdr->length = length;
    }
  return GT_DECODE_OK;
}

/* Encoders */

void
gt_frame_append_header (GByteArray *out, GtFrameType type, guint8 flags, guint32 stream_id,
                        guint32 length)
{
  guint8 b[GT_FRAME_HEADER_SIZE];

  g_return_if_fail (out != NULL);
  g_return_if_fail (type >= GT_FRAME_HELLO && type <= GT_FRAME_TYPE_LAST);

  gt_frame_header_encode (b, type, flags, stream_id, length);
  g_byte_array_append (out, b, sizeof b);
}

static gboolean
id_is_valid (const guint8 *p, gsize len)
{
  for (gsize i = 0; i < len; i++)
    if (p[i] < 0x21 || p[i] > 0x7e)
      return FALSE;
  return TRUE;
}

static gboolean
prefix_is_valid (const guint8 *p, gsize len)
{
  for (gsize i = 0; i < len; i++)
    if (!g_ascii_isalnum (p[i]) && p[i] != '-')
      return FALSE;
  return TRUE;
}

static gboolean
kind_has_prefix (guint kind)
{
  return kind == GT_SERVICE_KIND_HTTP || kind == GT_SERVICE_KIND_HTTPS;
}

static gboolean
check_id_secret_len (gsize id_len, gsize secret_len, GError **error)
{
  if (id_len == 0)
    {
      g_set_error_literal (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                           "hello id is empty");
      return FALSE;
    }
  if (id_len > GT_ID_MAX_LEN)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE,
                   "hello id of %" G_GSIZE_FORMAT " bytes exceeds limit %u", id_len,
                   (guint) GT_ID_MAX_LEN);
      return FALSE;
    }
  if (secret_len == 0)
    {
      g_set_error_literal (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                           "hello secret is empty");
      return FALSE;
    }
  if (secret_len > GT_SECRET_MAX_LEN)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE,
                   "hello secret of %" G_GSIZE_FORMAT " bytes exceeds limit %u", secret_len,
                   (guint) GT_SECRET_MAX_LEN);
      return FALSE;
    }
  return TRUE;
}

static gboolean
check_n_services (gsize n, gboolean none_ok, GError **error)
{
  if (n == 0 && !none_ok)
    {
      g_set_error_literal (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                           "hello has no services");
      return FALSE;
    }
  if (n > GT_HELLO_MAX_SERVICES)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE,
                   "hello has %" G_GSIZE_FORMAT " services, limit is %u", n,
                   (guint) GT_HELLO_MAX_SERVICES);
      return FALSE;
    }
  return TRUE;
}

/* A node entry (node-to-node tunnel) is never mixed with services. */
static gboolean
check_node_alone (GPtrArray *services, GError **error)
{
  if (services->len > 1
      && ((const GtHelloService *) g_ptr_array_index (services, 0))->kind == GT_SERVICE_KIND_NODE)
    {
      g_set_error_literal (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                           "a node hello has exactly one entry");
      return FALSE;
    }
  return TRUE;
}

/* Checks one service; prefix/prefix_len are the raw bytes (not NUL-terminated). */
static gboolean
check_service (guint index, guint kind, guint flags, guint port, const guint8 *prefix,
               gsize prefix_len, GError **error)
{
  if (kind > GT_SERVICE_KIND_UDP)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                   "hello service %u has unknown kind %u", index, kind);
      return FALSE;
    }
  if (kind == GT_SERVICE_KIND_NODE && (index != 0 || flags != 0 || port != 0 || prefix_len != 0))
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                   "hello service %u: a node entry is the only service, without port, flags "
                   "or prefix", index);
      return FALSE;
    }
  if ((flags & ~HELLO_FLAG_REMOTE_RANDOM) != 0)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                   "hello service %u has unknown flags 0x%02x", index, flags);
      return FALSE;
    }
  if (kind_has_prefix (kind))
    {
      if (flags != 0 || port != 0)
        {
          g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                       "hello service %u: port and random flag are for tcp and udp only", index);
          return FALSE;
        }
      if (prefix_len == 0)
        {
          g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                       "hello service %u: http/https service needs a host prefix", index);
          return FALSE;
        }
      if (prefix_len > GT_PREFIX_MAX_LEN)
        {
          g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE,
                       "hello service %u: host prefix of %" G_GSIZE_FORMAT
                       " bytes exceeds limit %u",
                       index, prefix_len, (guint) GT_PREFIX_MAX_LEN);
          return FALSE;
        }
      if (!prefix_is_valid (prefix, prefix_len))
        {
          g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                       "hello service %u: host prefix may only contain letters, digits and '-'",
                       index);
          return FALSE;
        }
    }
  else if (prefix_len != 0)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                   "hello service %u: a tcp or udp service must not have a host prefix", index);
      return FALSE;
    }
  return TRUE;
}

/* udp services travel as DATAGRAM frames: a HELLO that lists one announces GT_CAP_DATAGRAM. */
static gboolean
check_udp_caps (GPtrArray *services, guint32 caps, GError **error)
{
  for (guint i = 0; services != NULL && i < services->len; i++)
    if (((const GtHelloService *) g_ptr_array_index (services, i))->kind == GT_SERVICE_KIND_UDP
        && !(caps & GT_CAP_DATAGRAM))
      {
        g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                     "hello service %u: a udp service needs the DATAGRAM capability", i);
        return FALSE;
      }
  return TRUE;
}

gboolean
gt_frame_append_hello (GByteArray *out, const GtHello *hello, GError **error)
{
  gsize id_len, secret_len, size;
  guint n;

  g_return_val_if_fail (out != NULL, FALSE);
  g_return_val_if_fail (hello != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  id_len = hello->id != NULL ? strlen (hello->id) : 0;
  secret_len = hello->secret != NULL ? strlen (hello->secret) : 0;
  n = hello->services != NULL ? hello->services->len : 0;

  if (!check_id_secret_len (id_len, secret_len, error))
    return FALSE;
  if (!id_is_valid ((const guint8 *) hello->id, id_len))
    {
      g_set_error_literal (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                           "hello id must be printable ASCII without spaces");
      return FALSE;
    }
  if (!check_n_services (n, (hello->caps & GT_CAP_FORWARD) != 0, error))
    return FALSE;

  size = 1 + id_len + 1 + secret_len + 2 + (hello->caps != 0 ? 4 : 0);
  for (guint i = 0; i < n; i++)
    {
      const GtHelloService *s = g_ptr_array_index (hello->services, i);
      gsize prefix_len = s->prefix != NULL ? strlen (s->prefix) : 0;

      if (!check_service (i, s->kind, s->remote_random ? HELLO_FLAG_REMOTE_RANDOM : 0,
                          s->remote_port, (const guint8 *) s->prefix, prefix_len, error))
        return FALSE;
      size += 5 + prefix_len;
    }
  if (!check_node_alone (hello->services, error)
      || !check_udp_caps (hello->services, hello->caps, error))
    return FALSE;
  if (size > GT_FRAME_MAX_CONTROL)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE,
                   "HELLO payload of %" G_GSIZE_FORMAT " bytes exceeds limit %u", size,
                   (guint) GT_FRAME_MAX_CONTROL);
      return FALSE;
    }

  gt_frame_append_header (out, GT_FRAME_HELLO, hello->caps != 0 ? GT_FRAME_FLAG_CAPS : 0, 0,
                          (guint32) size);
  append_u8 (out, (guint8) id_len);
  g_byte_array_append (out, (const guint8 *) hello->id, (guint) id_len);
  append_u8 (out, (guint8) secret_len);
  g_byte_array_append (out, (const guint8 *) hello->secret, (guint) secret_len);
  append_u16 (out, (guint16) n);
  for (guint i = 0; i < n; i++)
    {
      const GtHelloService *s = g_ptr_array_index (hello->services, i);
      gsize prefix_len = s->prefix != NULL ? strlen (s->prefix) : 0;

      append_u8 (out, (guint8) s->kind);
      append_u8 (out, s->remote_random ? HELLO_FLAG_REMOTE_RANDOM : 0);
      append_u16 (out, s->remote_port);
      append_u8 (out, (guint8) prefix_len);
      /* Host names are case-insensitive; the wire form is lower case. */
      for (gsize j = 0; j < prefix_len; j++)
        append_u8 (out, (guint8) g_ascii_tolower (s->prefix[j]));
    }
  if (hello->caps != 0)
    append_u32 (out, hello->caps);
  return TRUE;
}

static void
append_welcome (GByteArray *out, const GtWelcomePort *ports, guint n_ports, gboolean with_caps,
                guint32 caps)
{
  g_return_if_fail (out != NULL);
  g_return_if_fail (ports != NULL || n_ports == 0);
  g_return_if_fail (n_ports <= GT_HELLO_MAX_SERVICES);

  gt_frame_append_header (out, GT_FRAME_WELCOME, with_caps ? GT_FRAME_FLAG_CAPS : 0, 0,
                          2 + 4 * n_ports + (with_caps ? 4 : 0));
  append_u16 (out, (guint16) n_ports);
  for (guint i = 0; i < n_ports; i++)
    {
      append_u16 (out, ports[i].service_index);
      append_u16 (out, ports[i].port);
    }
  if (with_caps)
    append_u32 (out, caps);
}

void
gt_frame_append_welcome (GByteArray *out, const GtWelcomePort *ports, guint n_ports)
{
  append_welcome (out, ports, n_ports, FALSE, 0);
}

void
gt_frame_append_welcome_caps (GByteArray *out, const GtWelcomePort *ports, guint n_ports,
                              guint32 caps)
{
  append_welcome (out, ports, n_ports, TRUE, caps);
}

gboolean
gt_forward_prefix_is_valid (const char *s)
{
  gsize len = s != NULL ? strlen (s) : 0;

  return len >= 1 && len <= GT_PREFIX_MAX_LEN && prefix_is_valid ((const guint8 *) s, len);
}

void
gt_frame_append_forward_header (GByteArray *out, guint32 stream_id, const char *prefix,
                                gsize data_len)
{
  gsize prefix_len;

  g_return_if_fail (out != NULL);
  g_return_if_fail (stream_id != 0);
  g_return_if_fail (gt_forward_prefix_is_valid (prefix));
  prefix_len = strlen (prefix);
  g_return_if_fail (data_len <= GT_FRAME_MAX_PAYLOAD - 1 - prefix_len);

  gt_frame_append_header (out, GT_FRAME_FORWARD, 0, stream_id,
                          (guint32) (1 + prefix_len + data_len));
  append_u8 (out, (guint8) prefix_len);
  for (gsize i = 0; i < prefix_len; i++)
    append_u8 (out, (guint8) g_ascii_tolower (prefix[i]));
}

void
gt_frame_append_forward_ack (GByteArray *out, guint32 stream_id)
{
  g_return_if_fail (out != NULL);
  g_return_if_fail (stream_id != 0);

  gt_frame_append_header (out, GT_FRAME_FORWARD, GT_FRAME_FLAG_ACK, stream_id, 0);
}

void
gt_frame_append_window (GByteArray *out, guint32 stream_id, guint32 increment)
{
  g_return_if_fail (out != NULL);
  g_return_if_fail (stream_id != 0);
  g_return_if_fail (increment != 0);

  gt_frame_append_header (out, GT_FRAME_WINDOW, 0, stream_id, 4);
  append_u32 (out, increment);
}

void
gt_frame_append_reset (GByteArray *out, guint32 stream_id, GtResetCode code)
{
  g_return_if_fail (out != NULL);
  g_return_if_fail (stream_id != 0);

  gt_frame_append_header (out, GT_FRAME_RESET, 0, stream_id, 4);
  append_u32 (out, (guint32) code);
}

void
gt_frame_append_shutdown (GByteArray *out, guint32 stream_id)
{
  g_return_if_fail (out != NULL);
  g_return_if_fail (stream_id != 0);

  gt_frame_append_header (out, GT_FRAME_SHUTDOWN, 0, stream_id, 0);
}

void
gt_frame_append_ping (GByteArray *out, gboolean ack, const guint8 opaque[8])
{
  static const guint8 zero[8] = { 0 };

  g_return_if_fail (out != NULL);

  gt_frame_append_header (out, GT_FRAME_PING, ack ? GT_FRAME_FLAG_ACK : 0, 0, 8);
  g_byte_array_append (out, opaque != NULL ? opaque : zero, 8);
}

/* Longest prefix of the valid UTF-8 string s that fits in max bytes without splitting a
 * character. */
static gsize
utf8_truncated_len (const char *s, gsize len, gsize max)
{
  gsize cut;

  if (len <= max)
    return len;
  cut = max;
  /* Step back over continuation bytes (10xxxxxx) to the start of a character. */
  while (cut > 0 && ((guint8) s[cut] & 0xc0) == 0x80)
    cut--;
  return cut;
}

void
gt_frame_append_error (GByteArray *out, GtFrameType type, GtErrorCode code, const char *message)
{
  g_autofree char *valid = NULL;
  gsize len;

  g_return_if_fail (out != NULL);
  g_return_if_fail (type == GT_FRAME_ERROR || type == GT_FRAME_GOAWAY);

  if (message == NULL)
    message = "";
  if (!g_utf8_validate (message, -1, NULL))
    message = valid = g_utf8_make_valid (message, -1);
  len = utf8_truncated_len (message, strlen (message), GT_MESSAGE_MAX_LEN);

  gt_frame_append_header (out, type, 0, 0, (guint32) (4 + len));
  append_u16 (out, (guint16) code);
  append_u16 (out, (guint16) len);
  g_byte_array_append (out, (const guint8 *) message, (guint) len);
}

void
gt_frame_append_open_header (GByteArray *out, guint32 stream_id, guint16 service_index,
                             gsize data_len)
{
  g_return_if_fail (out != NULL);
  g_return_if_fail (stream_id != 0);
  g_return_if_fail (data_len <= GT_FRAME_MAX_PAYLOAD - GT_OPEN_PREFIX_SIZE);

  gt_frame_append_header (out, GT_FRAME_OPEN, 0, stream_id,
                          (guint32) (GT_OPEN_PREFIX_SIZE + data_len));
  append_u16 (out, service_index);
}

gsize
gt_open_addr_size (const GtOpenAddr *addr)
{
  return addr == NULL ? 0 : addr->family == 6 ? 1 + 16 + 2 + 16 + 2 : 1 + 4 + 2 + 4 + 2;
}

void
gt_frame_append_open_header_addr (GByteArray *out, guint32 stream_id, guint16 service_index,
                                  const GtOpenAddr *addr, gsize data_len)
{
  gsize alen = gt_open_addr_size (addr);
  guint n;

  g_return_if_fail (out != NULL);
  g_return_if_fail (stream_id != 0);
  g_return_if_fail (addr == NULL || addr->family == 4 || addr->family == 6);
  g_return_if_fail (data_len <= GT_FRAME_MAX_PAYLOAD - GT_OPEN_PREFIX_SIZE - alen);

  gt_frame_append_header (out, GT_FRAME_OPEN, addr ? GT_FRAME_FLAG_ADDR : 0, stream_id,
                          (guint32) (GT_OPEN_PREFIX_SIZE + alen + data_len));
  append_u16 (out, service_index);
  if (addr == NULL)
    return;
  n = addr->family == 6 ? 16 : 4;
  g_byte_array_append (out, &addr->family, 1);
  g_byte_array_append (out, addr->src, n);
  append_u16 (out, addr->src_port);
  g_byte_array_append (out, addr->dst, n);
  append_u16 (out, addr->dst_port);
}

/* Decoders */

static void
hello_service_free (gpointer data)
{
  GtHelloService *s = data;

  if (s == NULL)
    return;
  g_free (s->prefix);
  g_free (s);
}

GtHello *
gt_hello_new (const char *id, const char *secret)
{
  GtHello *hello = g_new0 (GtHello, 1);

  hello->id = g_strdup (id);
  hello->secret = g_strdup (secret);
  hello->services = g_ptr_array_new_with_free_func (hello_service_free);
  return hello;
}

void
gt_hello_free (GtHello *hello)
{
  if (hello == NULL)
    return;
  g_free (hello->id);
  if (hello->secret != NULL)
    {
      /* Do not leave the secret lying around in freed memory. */
      memset (hello->secret, 0, strlen (hello->secret));
      g_free (hello->secret);
    }
  g_clear_pointer (&hello->services, g_ptr_array_unref);
  g_free (hello);
}

/* http/https keep their prefix (lower-cased) and never carry port or random flag; tcp never
 * carries a prefix. */
void
gt_hello_add_service (GtHello *hello, GtServiceKind kind, const char *prefix, guint16 remote_port,
                      gboolean remote_random)
{
  GtHelloService *s;

  g_return_if_fail (hello != NULL);
  g_return_if_fail (kind <= GT_SERVICE_KIND_UDP);

  s = g_new0 (GtHelloService, 1);
  s->kind = kind;
  if (kind_has_prefix (kind))
    s->prefix = g_ascii_strdown (prefix != NULL ? prefix : "", -1);
  else
    {
      s->remote_port = remote_port;
      s->remote_random = remote_random;
    }
  g_ptr_array_add (hello->services, s);
}

static void
set_truncated (GError **error, const char *what)
{
  g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED, "%s is truncated", what);
}

GtHello *
gt_hello_decode (const guint8 *buf, gsize len, GError **error)
{
  return gt_hello_decode_flags (buf, len, 0, error);
}

GtHello *
gt_hello_decode_flags (const guint8 *buf, gsize len, guint8 header_flags, GError **error)
{
  g_autoptr (GtHello) hello = NULL;
  gsize pos = 0, id_len, secret_len;
  const guint8 *id, *secret;
  guint32 caps = 0;
  guint n;

  g_return_val_if_fail (buf != NULL || len == 0, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (len > GT_FRAME_MAX_CONTROL)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE,
                   "HELLO payload of %" G_GSIZE_FORMAT " bytes exceeds limit %u", len,
                   (guint) GT_FRAME_MAX_CONTROL);
      return NULL;
    }

  /* Every length is checked against its limit and against the bytes left before use. */
  if (len < 1)
    {
      set_truncated (error, "hello id");
      return NULL;
    }
  id_len = buf[pos++];
  if (id_len == 0 || id_len > GT_ID_MAX_LEN)
    {
      check_id_secret_len (id_len, 1, error);
      return NULL;
    }
  if (len - pos < id_len)
    {
      set_truncated (error, "hello id");
      return NULL;
    }
  id = buf + pos;
  pos += id_len;
  if (!id_is_valid (id, id_len))
    {
      g_set_error_literal (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                           "hello id must be printable ASCII without spaces");
      return NULL;
    }

  if (len - pos < 1)
    {
      set_truncated (error, "hello secret");
      return NULL;
    }
  secret_len = buf[pos++];
  if (!check_id_secret_len (id_len, secret_len, error))
    return NULL;
  if (len - pos < secret_len)
    {
      set_truncated (error, "hello secret");
      return NULL;
    }
  secret = buf + pos;
  pos += secret_len;
  if (memchr (secret, 0, secret_len) != NULL)
    {
      g_set_error_literal (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                           "hello secret contains a NUL byte");
      return NULL;
    }

  if (len - pos < 2)
    {
      set_truncated (error, "hello service count");
      return NULL;
    }
  n = get_u16 (buf + pos);
  pos += 2;
  if (header_flags & GT_FRAME_FLAG_CAPS)
    {
      /* The capabilities end the payload: read them first, the services end before them. */
      if (len - pos < 4)
        {
          set_truncated (error, "hello capabilities");
          return NULL;
        }
      caps = get_u32 (buf + len - 4);
      len -= 4;
    }
  if (!check_n_services (n, (caps & GT_CAP_FORWARD) != 0, error))
    return NULL;
  /* Each service takes at least 5 bytes: refuse impossible counts before allocating. */
  if ((len - pos) / 5 < n)
    {
      set_truncated (error, "hello service list");
      return NULL;
    }

  hello = g_new0 (GtHello, 1);
  hello->caps = caps;
  hello->has_caps = (header_flags & GT_FRAME_FLAG_CAPS) != 0;
  hello->id = g_strndup ((const char *) id, id_len);
  hello->secret = g_strndup ((const char *) secret, secret_len);
  hello->services = g_ptr_array_new_full (n, hello_service_free);

  for (guint i = 0; i < n; i++)
    {
      guint kind, flags, port;
      gsize prefix_len;
      GtHelloService *s;

      if (len - pos < 5)
        {
          set_truncated (error, "hello service");
          return NULL;
        }
      kind = buf[pos];
      flags = buf[pos + 1];
      port = get_u16 (buf + pos + 2);
      prefix_len = buf[pos + 4];
      pos += 5;
      if (len - pos < prefix_len)
        {
          set_truncated (error, "hello host prefix");
          return NULL;
        }
      if (!check_service (i, kind, flags, port, buf + pos, prefix_len, error))
        return NULL;

      s = g_new0 (GtHelloService, 1);
      s->kind = kind;
      s->remote_port = port;
      s->remote_random = (flags & HELLO_FLAG_REMOTE_RANDOM) != 0;
      if (kind_has_prefix (kind))
        s->prefix = g_ascii_strdown ((const char *) buf + pos, prefix_len);
      pos += prefix_len;
      g_ptr_array_add (hello->services, s);
    }

  if (pos != len)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                   "%" G_GSIZE_FORMAT " trailing bytes after hello", len - pos);
      return NULL;
    }
  if (!check_node_alone (hello->services, error)
      || !check_udp_caps (hello->services, hello->caps, error))
    return NULL;
  return g_steal_pointer (&hello);
}

GArray *
gt_welcome_decode (const guint8 *buf, gsize len, GError **error)
{
  return gt_welcome_decode_flags (buf, len, 0, NULL, error);
}

GArray *
gt_welcome_decode_flags (const guint8 *buf, gsize len, guint8 flags, guint32 *caps,
                         GError **error)
{
  GArray *ports;
  guint n;

  g_return_val_if_fail (buf != NULL || len == 0, NULL);

  if (caps != NULL)
    *caps = 0;
  if (flags & GT_FRAME_FLAG_CAPS)
    {
      if (len < 6)
        {
          set_truncated (error, "welcome capabilities");
          return NULL;
        }
      if (caps != NULL)
        *caps = get_u32 (buf + len - 4);
      len -= 4;
    }

  if (len < 2)
    {
      set_truncated (error, "welcome");
      return NULL;
    }
  n = get_u16 (buf);
  if (n > GT_HELLO_MAX_SERVICES)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE,
                   "welcome has %u ports, limit is %u", n, (guint) GT_HELLO_MAX_SERVICES);
      return NULL;
    }
  if (len != 2 + (gsize) n * 4)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                   "welcome of %" G_GSIZE_FORMAT " bytes does not match its %u ports", len, n);
      return NULL;
    }

  ports = g_array_sized_new (FALSE, FALSE, sizeof (GtWelcomePort), n);
  for (guint i = 0; i < n; i++)
    {
      GtWelcomePort p;

      p.service_index = get_u16 (buf + 2 + i * 4);
      p.port = get_u16 (buf + 2 + i * 4 + 2);
      g_array_append_val (ports, p);
    }
  return ports;
}

gboolean
gt_forward_decode (const guint8 *buf, gsize len, char **prefix, const guint8 **data,
                   gsize *data_len, GError **error)
{
  gsize prefix_len;

  g_return_val_if_fail (buf != NULL || len == 0, FALSE);

  if (len < 1)
    {
      set_truncated (error, "forward host prefix");
      return FALSE;
    }
  prefix_len = buf[0];
  if (prefix_len == 0 || prefix_len > GT_PREFIX_MAX_LEN)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                   "forward host prefix of %" G_GSIZE_FORMAT " bytes (must be 1 to %u)",
                   prefix_len, (guint) GT_PREFIX_MAX_LEN);
      return FALSE;
    }
  if (len - 1 < prefix_len)
    {
      set_truncated (error, "forward host prefix");
      return FALSE;
    }
  if (!prefix_is_valid (buf + 1, prefix_len))
    {
      g_set_error_literal (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                           "forward host prefix may only contain letters, digits and '-'");
      return FALSE;
    }
  *prefix = g_ascii_strdown ((const char *) buf + 1, prefix_len);
  *data = buf + 1 + prefix_len;
  *data_len = len - 1 - prefix_len;
  return TRUE;
}

static gboolean
decode_u32_payload (const guint8 *buf, gsize len, const char *name, guint32 *value,
                    GError **error)
{
  if (len != 4)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                   "%s payload of %" G_GSIZE_FORMAT " bytes (must be 4)", name, len);
      return FALSE;
    }
  *value = get_u32 (buf);
  return TRUE;
}

void
gt_datagram_prefix_encode (guint8 out[GT_DATAGRAM_PREFIX_SIZE], guint32 flow_id,
                           guint16 service_index)
{
  put_u32 (out, flow_id);
  put_u16 (out + 4, service_index);
}

void
gt_frame_append_datagram_header (GByteArray *out, guint32 flow_id, guint16 service_index,
                                 gsize data_len)
{
  guint8 b[GT_DATAGRAM_PREFIX_SIZE];

  g_return_if_fail (out != NULL);
  g_return_if_fail (flow_id != 0);
  g_return_if_fail (data_len <= GT_DATAGRAM_MAX_DATA);

  gt_frame_append_header (out, GT_FRAME_DATAGRAM, 0, 0,
                          (guint32) (GT_DATAGRAM_PREFIX_SIZE + data_len));
  gt_datagram_prefix_encode (b, flow_id, service_index);
  g_byte_array_append (out, b, sizeof b);
}

gboolean
gt_datagram_decode (const guint8 *buf, gsize len, guint32 *flow_id, guint16 *service_index,
                    const guint8 **data, gsize *data_len, GError **error)
{
  guint32 id;

  g_return_val_if_fail (buf != NULL || len == 0, FALSE);

  if (len < GT_DATAGRAM_PREFIX_SIZE)
    {
      set_truncated (error, "DATAGRAM");
      return FALSE;
    }
  if (len > GT_DATAGRAM_MAX_PAYLOAD)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE,
                   "DATAGRAM of %" G_GSIZE_FORMAT " bytes exceeds limit %u",
                   len - GT_DATAGRAM_PREFIX_SIZE, (guint) GT_DATAGRAM_MAX_DATA);
      return FALSE;
    }
  id = get_u32 (buf);
  if (id == 0)
    {
      g_set_error_literal (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                           "DATAGRAM with flow id 0");
      return FALSE;
    }
  *flow_id = id;
  *service_index = get_u16 (buf + 4);
  *data = buf + GT_DATAGRAM_PREFIX_SIZE;
  *data_len = len - GT_DATAGRAM_PREFIX_SIZE;
  return TRUE;
}

gboolean
gt_window_decode (const guint8 *buf, gsize len, guint32 *increment, GError **error)
{
  guint32 v;

  g_return_val_if_fail (buf != NULL || len == 0, FALSE);

  if (!decode_u32_payload (buf, len, "WINDOW", &v, error))
    return FALSE;
  if (v == 0)
    {
      g_set_error_literal (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                           "WINDOW increment of 0");
      return FALSE;
    }
  if (increment != NULL)
    *increment = v;
  return TRUE;
}

gboolean
gt_reset_decode (const guint8 *buf, gsize len, guint32 *code, GError **error)
{
  guint32 v;

  g_return_val_if_fail (buf != NULL || len == 0, FALSE);

  if (!decode_u32_payload (buf, len, "RESET", &v, error))
    return FALSE;
  if (code != NULL)
    *code = v;
  return TRUE;
}

gboolean
gt_open_decode_addr (const guint8 *buf, gsize len, guint8 flags, guint16 *service_index,
                     GtOpenAddr *addr, gboolean *has_addr, const guint8 **data, gsize *data_len,
                     GError **error)
{
  const guint8 *rest;
  gsize rest_len;
  GtOpenAddr a = { 0 };
  guint n;

  if (!gt_open_decode (buf, len, service_index, &rest, &rest_len, error))
    return FALSE;
  if (has_addr != NULL)
    *has_addr = FALSE;
  if (flags & GT_FRAME_FLAG_ADDR)
    {
      if (rest_len < 1 || (rest[0] != 4 && rest[0] != 6))
        {
          g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                       "OPEN address block with a bad family");
          return FALSE;
        }
      a.family = rest[0];
      if (rest_len < gt_open_addr_size (&a))
        {
          set_truncated (error, "OPEN address block");
          return FALSE;
        }
      n = a.family == 6 ? 16 : 4;
      memcpy (a.src, rest + 1, n);
      a.src_port = get_u16 (rest + 1 + n);
      memcpy (a.dst, rest + 3 + n, n);
      a.dst_port = get_u16 (rest + 3 + 2 * n);
      rest += gt_open_addr_size (&a);
      rest_len -= gt_open_addr_size (&a);
      if (addr != NULL)
        *addr = a;
      if (has_addr != NULL)
        *has_addr = TRUE;
    }
  if (data != NULL)
    *data = rest;
  if (data_len != NULL)
    *data_len = rest_len;
  return TRUE;
}

gboolean
gt_open_decode (const guint8 *buf, gsize len, guint16 *service_index, const guint8 **data,
                gsize *data_len, GError **error)
{
  g_return_val_if_fail (buf != NULL || len == 0, FALSE);

  if (len < GT_OPEN_PREFIX_SIZE)
    {
      set_truncated (error, "OPEN payload");
      return FALSE;
    }
  if (len > GT_FRAME_MAX_PAYLOAD)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE,
                   "frame payload of %" G_GSIZE_FORMAT " bytes exceeds limit %u", len,
                   (guint) GT_FRAME_MAX_PAYLOAD);
      return FALSE;
    }
  if (service_index != NULL)
    *service_index = get_u16 (buf);
  if (data != NULL)
    *data = buf + GT_OPEN_PREFIX_SIZE;
  if (data_len != NULL)
    *data_len = len - GT_OPEN_PREFIX_SIZE;
  return TRUE;
}

gboolean
gt_error_decode (const guint8 *buf, gsize len, guint16 *code, char **message, GError **error)
{
  guint msg_len;

  g_return_val_if_fail (buf != NULL || len == 0, FALSE);

  if (len < 4)
    {
      set_truncated (error, "error payload");
      return FALSE;
    }
  msg_len = get_u16 (buf + 2);
  if (msg_len > GT_MESSAGE_MAX_LEN)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE,
                   "error message of %u bytes exceeds limit %u", msg_len,
                   (guint) GT_MESSAGE_MAX_LEN);
      return FALSE;
    }
  if (len != 4 + (gsize) msg_len)
    {
      g_set_error (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                   "error payload of %" G_GSIZE_FORMAT " bytes does not match message length %u",
                   len, msg_len);
      return FALSE;
    }
  /* g_utf8_validate_len() also refuses embedded NUL bytes. */
  if (!g_utf8_validate_len ((const char *) buf + 4, msg_len, NULL))
    {
      g_set_error_literal (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                           "error message is not valid UTF-8");
      return FALSE;
    }
  if (code != NULL)
    *code = get_u16 (buf);
  if (message != NULL)
    *message = g_strndup ((const char *) buf + 4, msg_len);
  return TRUE;
}

const char *
gt_error_code_to_string (GtErrorCode code)
{
  switch (code)
    {
    case GT_ERROR_CODE_NONE:
      return "no error";
    case GT_ERROR_CODE_INVALID_AUTH:
      return "invalid id or secret";
    case GT_ERROR_CODE_PORT_UNAVAILABLE:
      return "port not available";
    case GT_ERROR_CODE_TOO_MANY_TUNNELS:
      return "reached the max connections";
    case GT_ERROR_CODE_HOST_NUMBER:
      return "the number of host prefixes exceeded the limit";
    case GT_ERROR_CODE_HOST_CONFLICT:
      return "host conflict";
    case GT_ERROR_CODE_HOST_REGEX:
      return "host regex mismatch";
    case GT_ERROR_CODE_CONFIG_CONFLICT:
      return "another client with a different config is connected";
    case GT_ERROR_CODE_TOO_MANY_OPTIONS:
      return "the number of options exceeded the limit";
    case GT_ERROR_CODE_TCP_NUMBER:
      return "the number of tcp ports exceeded the limit";
    case GT_ERROR_CODE_UNSUPPORTED_VERSION:
      return "unsupported protocol version";
    case GT_ERROR_CODE_PROTOCOL:
      return "protocol error";
    case GT_ERROR_CODE_FLOW_CONTROL:
      return "flow control error";
    case GT_ERROR_CODE_SHUTTING_DOWN:
      return "server is shutting down";
    case GT_ERROR_CODE_TIMEOUT:
      return "timeout";
    case GT_ERROR_CODE_INTERNAL:
      return "internal error";
    case GT_ERROR_CODE_ELSEWHERE:
      return "held by another server node";
    case GT_ERROR_CODE_REGISTRY_UNAVAILABLE:
      return "the cluster registry is unavailable";
    case GT_ERROR_CODE_UDP_NUMBER:
      return "the number of udp ports exceeded the limit";
    default:
      return "unknown error";
    }
}

const char *
gt_frame_type_to_string (guint8 type)
{
  switch (type)
    {
    case GT_FRAME_HELLO:
      return "HELLO";
    case GT_FRAME_WELCOME:
      return "WELCOME";
    case GT_FRAME_OPEN:
      return "OPEN";
    case GT_FRAME_DATA:
      return "DATA";
    case GT_FRAME_SHUTDOWN:
      return "SHUTDOWN";
    case GT_FRAME_RESET:
      return "RESET";
    case GT_FRAME_WINDOW:
      return "WINDOW";
    case GT_FRAME_PING:
      return "PING";
    case GT_FRAME_GOAWAY:
      return "GOAWAY";
    case GT_FRAME_ERROR:
      return "ERROR";
    case GT_FRAME_FORWARD:
      return "FORWARD";
    case GT_FRAME_DATAGRAM:
      return "DATAGRAM";
    default:
      return "UNKNOWN";
    }
}

const char *
gt_reset_code_to_string (guint32 code)
{
  switch (code)
    {
    case GT_RESET_CODE_CLOSED:
      return "closed";
    case GT_RESET_CODE_CONNECT_FAILED:
      return "the local service could not be reached";
    case GT_RESET_CODE_NO_SERVICE:
      return "no such service";
    case GT_RESET_CODE_TIMEOUT:
      return "idle timeout";
    case GT_RESET_CODE_FLOW_CONTROL:
      return "flow control error";
    case GT_RESET_CODE_REFUSED:
      return "refused";
    case GT_RESET_CODE_UNKNOWN_HOST:
      return "no client holds this host prefix";
    case GT_RESET_CODE_NOT_ALLOWED:
      return "not allowed by the server's tcpForwardAllow";
    case GT_RESET_CODE_TARGET_OFFLINE:
      return "the client of this host prefix is offline";
    default:
      return "closed";
    }
}
