/* gt-proxy-protocol.c: strict PROXY protocol v1/v2 parsing and encoding over byte buffers. */
#include "gt-proxy-protocol.h"

#include <arpa/inet.h>
#include <string.h>

G_DEFINE_QUARK (gt-proxy-protocol-error-quark, gt_proxy_protocol_error)

static const guint8 v2_signature[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };
static const char v1_prefix[] = "PROXY ";
#define V1_PREFIX_LEN (sizeof v1_prefix - 1)

#define V2_VERSION 0x2
#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1
#define V2_FAM_UNSPEC 0x00
#define V2_FAM_TCP4 0x11
#define V2_FAM_UDP4 0x12
#define V2_FAM_TCP6 0x21
#define V2_FAM_UDP6 0x22
#define V2_FAM_UNIX_STREAM 0x31
#define V2_FAM_UNIX_DGRAM 0x32
#define V2_ADDR_LEN_INET 12
#define V2_ADDR_LEN_INET6 36
#define V2_ADDR_LEN_UNIX 216
#define TLV_HEADER_SIZE 3

static GtDecodeResult
fail (GError **error, GtProxyProtocolErrorEnum code, const char *what)
{
  g_set_error (error, GT_PROXY_PROTOCOL_ERROR, code, "PROXY header: %s", what);
  return GT_DECODE_ERROR;
}

void
gt_proxy_header_clear (GtProxyHeader *h)
{
  if (h == NULL)
    return;
  g_clear_pointer (&h->src_addr, g_free);
  g_clear_pointer (&h->dst_addr, g_free);
  memset (h, 0, sizeof *h);
  h->family = G_SOCKET_FAMILY_INVALID;
}

/* ---- v1 ---- */

/* Decimal port: "0" or 1-5 digits without a leading zero, at most 65535. */
static gboolean
parse_port (const char *s, guint16 *port)
{
  guint v = 0;
  gsize n = strlen (s);

  if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
    return FALSE;
  for (gsize i = 0; i < n; i++)
    {
      if (!g_ascii_isdigit (s[i]))
        return FALSE;
      v = v * 10 + (guint) (s[i] - '0');
    }
  if (v > G_MAXUINT16)
    return FALSE;
  *port = (guint16) v;
  return TRUE;
}

/* An address of the given family in canonical text form, or NULL. The character check keeps
 * out anything inet_pton might tolerate beyond plain addresses (scope ids, spaces). */
static char *
parse_v1_address (const char *s, GSocketFamily family)
{
  g_autoptr (GInetAddress) addr = NULL;

  for (const char *p = s; *p != '\0'; p++)
    {
      if (family == G_SOCKET_FAMILY_IPV4 ? !(g_ascii_isdigit (*p) || *p == '.')
                                         : !(g_ascii_isxdigit (*p) || *p == ':' || *p == '.'))
        return NULL;
    }
  addr = g_inet_address_new_from_string (s);
  if (addr == NULL || g_inet_address_get_family (addr) != family)
    return NULL;
  return g_inet_address_to_string (addr);
}

static GtDecodeResult
parse_v1 (const guint8 *buf, gsize len, GtProxyHeader *out, gsize *consumed, GError **error)
{
  gsize n = MIN (len, GT_PROXY_V1_MAX_SIZE);
  gsize eol = 0;
  gboolean found = FALSE;
  char line[GT_PROXY_V1_MAX_SIZE];
  char *fields[6];
  guint n_fields = 0;
  GSocketFamily family;
  g_autofree char *src = NULL;
  g_autofree char *dst = NULL;
  guint16 sport, dport;

  /* Judge the bytes as they come so that garbage fails before 107 bytes have arrived. */
  for (gsize i = 0; i < n && !found; i++)
    {
      if (buf[i] == '\r')
        {
          if (i + 1 == n)
            {
              if (len > n)
                return fail (error, GT_PROXY_PROTOCOL_ERROR_MALFORMED, "v1 line too long");
              return GT_DECODE_NEED_MORE;
            }
          if (buf[i + 1] != '\n')
            return fail (error, GT_PROXY_PROTOCOL_ERROR_MALFORMED, "v1 line without CRLF");
          eol = i;
          found = TRUE;
        }
      else if (buf[i] < 0x20 || buf[i] > 0x7e)
        return fail (error, GT_PROXY_PROTOCOL_ERROR_MALFORMED, "bad byte in v1 line");
    }
  if (!found)
    {
      if (len >= GT_PROXY_V1_MAX_SIZE)
        return fail (error, GT_PROXY_PROTOCOL_ERROR_MALFORMED, "v1 line too long");
      return GT_DECODE_NEED_MORE;
    }
  g_assert (eol >= V1_PREFIX_LEN && eol < sizeof line);

  memcpy (line, buf, eol);
  line[eol] = '\0';

  /* "UNKNOWN": the rest of the line is to be ignored. */
  if (g_str_has_prefix (line + V1_PREFIX_LEN, "UNKNOWN")
      && (line[V1_PREFIX_LEN + 7] == '\0' || line[V1_PREFIX_LEN + 7] == ' '))
    {
      out->local = TRUE;
      *consumed = eol + 2;
      return GT_DECODE_OK;
    }

  /* Exactly six fields separated by single spaces. */
  fields[n_fields++] = line;
  for (char *p = line; *p != '\0'; p++)
    {
      if (*p != ' ')
        continue;
      *p = '\0';
      if (n_fields == G_N_ELEMENTS (fields))
        return fail (error, GT_PROXY_PROTOCOL_ERROR_MALFORMED, "too many v1 fields");
      fields[n_fields++] = p + 1;
    }
  if (n_fields != G_N_ELEMENTS (fields))
    return fail (error, GT_PROXY_PROTOCOL_ERROR_MALFORMED, "too few v1 fields");

  if (strcmp (fields[1], "TCP4") == 0)
    family = G_SOCKET_FAMILY_IPV4;
  else if (strcmp (fields[1], "TCP6") == 0)
    family = G_SOCKET_FAMILY_IPV6;
  else
    return fail (error, GT_PROXY_PROTOCOL_ERROR_MALFORMED, "unknown v1 protocol");

  src = parse_v1_address (fields[2], family);
  dst = parse_v1_address (fields[3], family);
  if (src == NULL || dst == NULL)
    return fail (error, GT_PROXY_PROTOCOL_ERROR_MALFORMED, "bad v1 address");
  if (!parse_port (fields[4], &sport) || !parse_port (fields[5], &dport))
    return fail (error, GT_PROXY_PROTOCOL_ERROR_MALFORMED, "bad v1 port");

  out->family = family;
  out->src_addr = g_steal_pointer (&src);
  out->dst_addr = g_steal_pointer (&dst);
  out->src_port = sport;
  out->dst_port = dport;
  *consumed = eol + 2;
  return GT_DECODE_OK;
}

/* ---- v2 ---- */

static char *
format_address (const guint8 *bytes, int af)
{
  char text[INET6_ADDRSTRLEN];

  if (inet_ntop (af, bytes, text, sizeof text) == NULL)
    return NULL;
  return g_strdup (text);
}

static GtDecodeResult
parse_v2 (const guint8 *buf, gsize len, GtProxyHeader *out, gsize *consumed, GError **error)
{
  guint version, command, fam;
  gsize body_len, total, addr_len, pos;
  int af;

  if (len < GT_PROXY_V2_HEADER_SIZE)
    return GT_DECODE_NEED_MORE;
  version = buf[12] >> 4;
  command = buf[12] & 0x0f;
  fam = buf[13];
  body_len = ((gsize) buf[14] << 8) | buf[15];
  total = GT_PROXY_V2_HEADER_SIZE + body_len;

  if (version != V2_VERSION)
    return fail (error, GT_PROXY_PROTOCOL_ERROR_UNSUPPORTED, "unsupported v2 version");
  if (command != V2_CMD_LOCAL && command != V2_CMD_PROXY)
    return fail (error, GT_PROXY_PROTOCOL_ERROR_MALFORMED, "unknown v2 command");

  if (command == V2_CMD_LOCAL || fam == V2_FAM_UNSPEC)
    {
      /* The block (family included) is to be discarded; the real endpoints count. */
      if (len < total)
        return GT_DECODE_NEED_MORE;
      out->local = TRUE;
      *consumed = total;
      return GT_DECODE_OK;
    }

  switch (fam)
    {
    case V2_FAM_TCP4:
    case V2_FAM_UDP4:
      addr_len = V2_ADDR_LEN_INET;
      break;
    case V2_FAM_TCP6:
    case V2_FAM_UDP6:
      addr_len = V2_ADDR_LEN_INET6;
      break;
    case V2_FAM_UNIX_STREAM:
    case V2_FAM_UNIX_DGRAM:
      addr_len = V2_ADDR_LEN_UNIX;
      break;
    default:
      return fail (error, GT_PROXY_PROTOCOL_ERROR_MALFORMED, "unknown v2 family");
    }
  if (body_len < addr_len)
    return fail (error, GT_PROXY_PROTOCOL_ERROR_MALFORMED, "v2 length too short for its family");
  if (len < total)
    return GT_DECODE_NEED_MORE;

  /* TLVs fill the rest of the block exactly; none of them matters to gt. */
  pos = GT_PROXY_V2_HEADER_SIZE + addr_len;
  while (pos < total)
    {
      gsize tlv_len;

      if (total - pos < TLV_HEADER_SIZE)
        return fail (error, GT_PROXY_PROTOCOL_ERROR_MALFORMED, "truncated v2 TLV");
      tlv_len = ((gsize) buf[pos + 1] << 8) | buf[pos + 2];
      if (tlv_len > total - pos - TLV_HEADER_SIZE)
        return fail (error, GT_PROXY_PROTOCOL_ERROR_MALFORMED, "v2 TLV beyond the header");
      pos += TLV_HEADER_SIZE + tlv_len;
    }

  if (fam != V2_FAM_TCP4 && fam != V2_FAM_TCP6)
    {
      *consumed = total;
      return fail (error, GT_PROXY_PROTOCOL_ERROR_UNSUPPORTED, "v2 family other than TCP");
    }

  pos = GT_PROXY_V2_HEADER_SIZE;
  af = fam == V2_FAM_TCP4 ? AF_INET : AF_INET6;
  {
    gsize a = fam == V2_FAM_TCP4 ? 4 : 16;
    const guint8 *ports = buf + pos + 2 * a;

    out->family = fam == V2_FAM_TCP4 ? G_SOCKET_FAMILY_IPV4 : G_SOCKET_FAMILY_IPV6;
    out->src_addr = format_address (buf + pos, af);
    out->dst_addr = format_address (buf + pos + a, af);
    out->src_port = (guint16) ((ports[0] << 8) | ports[1]);
    out->dst_port = (guint16) ((ports[2] << 8) | ports[3]);
  }
  if (out->src_addr == NULL || out->dst_addr == NULL)
    {
      gt_proxy_header_clear (out);
      return fail (error, GT_PROXY_PROTOCOL_ERROR_MALFORMED, "bad v2 address");
    }
  *consumed = total;
  return GT_DECODE_OK;
}

GtDecodeResult
gt_proxy_header_parse (const guint8 *buf, gsize len, GtProxyHeader *out, gsize *consumed,
                       GError **error)
{
  GtDecodeResult res;

  g_return_val_if_fail (buf != NULL || len == 0, GT_DECODE_ERROR);
  g_return_val_if_fail (out != NULL, GT_DECODE_ERROR);
  g_return_val_if_fail (consumed != NULL, GT_DECODE_ERROR);
  g_return_val_if_fail (error == NULL || *error == NULL, GT_DECODE_ERROR);

  memset (out, 0, sizeof *out);
  out->family = G_SOCKET_FAMILY_INVALID;
  *consumed = 0;
  if (len == 0)
    return GT_DECODE_NEED_MORE;

  if (memcmp (buf, v2_signature, MIN (len, sizeof v2_signature)) == 0)
    {
      if (len < sizeof v2_signature)
        return GT_DECODE_NEED_MORE;
      res = parse_v2 (buf, len, out, consumed, error);
    }
  else if (memcmp (buf, v1_prefix, MIN (len, V1_PREFIX_LEN)) == 0)
    {
      if (len < V1_PREFIX_LEN)
        return GT_DECODE_NEED_MORE;
      res = parse_v1 (buf, len, out, consumed, error);
    }
  else
    return fail (error, GT_PROXY_PROTOCOL_ERROR_NOT_PROXY, "not a PROXY protocol header");

  if (res != GT_DECODE_OK)
    {
      /* *consumed survives only for the skippable UNSUPPORTED family case. */
      if (res != GT_DECODE_ERROR || error == NULL || *error == NULL
          || (*error)->code != GT_PROXY_PROTOCOL_ERROR_UNSUPPORTED)
        *consumed = 0;
      gt_proxy_header_clear (out);
    }
  return res;
}

/* ---- encoders ---- */

/* The two addresses as raw bytes of one family: mixed families go IPv6 with IPv4-mapped bytes. */
static GSocketFamily
endpoint_bytes (GInetSocketAddress *src, GInetSocketAddress *dst, guint8 src_bytes[16],
                guint8 dst_bytes[16])
{
  GInetAddress *a[2] = { g_inet_socket_address_get_address (src),
                         g_inet_socket_address_get_address (dst) };
  guint8 *out[2] = { src_bytes, dst_bytes };
  gboolean mixed = g_inet_address_get_family (a[0]) != g_inet_address_get_family (a[1]);

  for (guint i = 0; i < 2; i++)
    {
      const guint8 *raw = g_inet_address_to_bytes (a[i]);

      if (g_inet_address_get_family (a[i]) == G_SOCKET_FAMILY_IPV6)
        memcpy (out[i], raw, 16);
      else if (mixed)
        {
          static const guint8 mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

          memcpy (out[i], mapped, sizeof mapped);
          memcpy (out[i] + 12, raw, 4);
        }
      else
        memcpy (out[i], raw, 4);
    }
  return mixed ? G_SOCKET_FAMILY_IPV6 : g_inet_address_get_family (a[0]);
}

GBytes *
gt_proxy_header_encode_v1 (GInetSocketAddress *src, GInetSocketAddress *dst)
{
  guint8 s[16], d[16];
  g_autofree char *src_text = NULL;
  g_autofree char *dst_text = NULL;
  GSocketFamily family;
  char *line;

  g_return_val_if_fail (src == NULL || G_IS_INET_SOCKET_ADDRESS (src), NULL);
  g_return_val_if_fail (dst == NULL || G_IS_INET_SOCKET_ADDRESS (dst), NULL);

  if (src == NULL || dst == NULL)
    return g_bytes_new_static ("PROXY UNKNOWN\r\n", 15);

  family = endpoint_bytes (src, dst, s, d);
  src_text = format_address (s, family == G_SOCKET_FAMILY_IPV4 ? AF_INET : AF_INET6);
  dst_text = format_address (d, family == G_SOCKET_FAMILY_IPV4 ? AF_INET : AF_INET6);
  g_assert (src_text != NULL && dst_text != NULL);
  line = g_strdup_printf ("PROXY %s %s %s %u %u\r\n",
                          family == G_SOCKET_FAMILY_IPV4 ? "TCP4" : "TCP6", src_text, dst_text,
                          g_inet_socket_address_get_port (src),
                          g_inet_socket_address_get_port (dst));
  g_assert (strlen (line) <= GT_PROXY_V1_MAX_SIZE);
  return g_bytes_new_take (line, strlen (line));
}

GBytes *
gt_proxy_header_encode_v2 (GInetSocketAddress *src, GInetSocketAddress *dst)
{
  g_autoptr (GByteArray) out = g_byte_array_sized_new (GT_PROXY_V2_HEADER_SIZE + 36);
  guint8 s[16], d[16], fixed[4], ports[4];
  guint16 sport, dport;
  gsize a;
  GSocketFamily family;

  g_return_val_if_fail (src == NULL || G_IS_INET_SOCKET_ADDRESS (src), NULL);
  g_return_val_if_fail (dst == NULL || G_IS_INET_SOCKET_ADDRESS (dst), NULL);

  g_byte_array_append (out, v2_signature, sizeof v2_signature);
  if (src == NULL || dst == NULL)
    {
      fixed[0] = (V2_VERSION << 4) | V2_CMD_LOCAL;
      fixed[1] = V2_FAM_UNSPEC;
      fixed[2] = 0;
      fixed[3] = 0;
      g_byte_array_append (out, fixed, sizeof fixed);
      return g_byte_array_free_to_bytes (g_steal_pointer (&out));
    }

  family = endpoint_bytes (src, dst, s, d);
  a = family == G_SOCKET_FAMILY_IPV4 ? 4 : 16;
  fixed[0] = (V2_VERSION << 4) | V2_CMD_PROXY;
  fixed[1] = family == G_SOCKET_FAMILY_IPV4 ? V2_FAM_TCP4 : V2_FAM_TCP6;
  fixed[2] = 0;
  fixed[3] = (guint8) (2 * a + 4);
  sport = g_inet_socket_address_get_port (src);
  dport = g_inet_socket_address_get_port (dst);
  ports[0] = (guint8) (sport >> 8);
  ports[1] = (guint8) sport;
  ports[2] = (guint8) (dport >> 8);
  ports[3] = (guint8) dport;
  g_byte_array_append (out, fixed, sizeof fixed);
  g_byte_array_append (out, s, a);
  g_byte_array_append (out, d, a);
  g_byte_array_append (out, ports, sizeof ports);
  return g_byte_array_free_to_bytes (g_steal_pointer (&out));
}

/* ---- trusted-source CIDR lists ---- */

struct _GtCidrList
{
  gsize n;
  GInetAddressMask *items[];
};

/* GInetAddressMask checks the address, the prefix against the family and the host bits; the
 * syntax check here keeps out what its parser would tolerate ("/+8", "/08", " 8", scope ids). */
static GInetAddressMask *
parse_cidr (const char *text, GError **error)
{
  const char *slash = strchr (text, '/');
  g_autoptr (GError) local_error = NULL;
  GInetAddressMask *mask;

  for (const char *p = text; slash != NULL ? p < slash : *p != '\0'; p++)
    {
      if (!g_ascii_isxdigit (*p) && *p != ':' && *p != '.')
        goto bad;
    }
  if (slash != NULL)
    {
      gsize n = strlen (slash + 1);
      guint prefix = 0;

      if (n == 0 || n > 3 || (n > 1 && slash[1] == '0'))
        goto bad;
      for (gsize i = 0; i < n; i++)
        {
          if (!g_ascii_isdigit (slash[1 + i]))
            goto bad;
          prefix = prefix * 10 + (guint) (slash[1 + i] - '0');
        }
      if (prefix > 128) /* more than any family: the mask's property would refuse it */
        goto bad;
    }
  mask = g_inet_address_mask_new_from_string (text, &local_error);
  if (mask != NULL)
    return mask;
  g_set_error (error, GT_PROXY_PROTOCOL_ERROR, GT_PROXY_PROTOCOL_ERROR_MALFORMED,
               "Invalid CIDR “%s”: %s", text, local_error->message);
  return NULL;

bad:
  g_set_error (error, GT_PROXY_PROTOCOL_ERROR, GT_PROXY_PROTOCOL_ERROR_MALFORMED,
               "Invalid CIDR “%s”", text);
  return NULL;
}

GtCidrList *
gt_cidr_list_new (const char *const *cidrs, GError **error)
{
  gsize n = cidrs != NULL ? g_strv_length ((char **) cidrs) : 0;
  g_autoptr (GtCidrList) list = NULL;

  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  list = g_malloc0 (sizeof (GtCidrList) + n * sizeof (GInetAddressMask *));
  for (gsize i = 0; i < n; i++)
    {
      list->items[i] = parse_cidr (cidrs[i], error);
      if (list->items[i] == NULL)
        return NULL;
      list->n++;
    }
  return g_steal_pointer (&list);
}

gboolean
gt_cidr_list_contains (const GtCidrList *list, GInetAddress *addr)
{
  static const guint8 mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
  g_autoptr (GInetAddress) mapped = NULL;
  const guint8 *bytes;

  g_return_val_if_fail (list != NULL, FALSE);
  g_return_val_if_fail (G_IS_INET_ADDRESS (addr), FALSE);

  /* A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d: they match IPv4 entries too. */
  bytes = g_inet_address_to_bytes (addr);
  if (g_inet_address_get_family (addr) == G_SOCKET_FAMILY_IPV6
      && memcmp (bytes, mapped_prefix, sizeof mapped_prefix) == 0)
    mapped = g_inet_address_new_from_bytes (bytes + 12, G_SOCKET_FAMILY_IPV4);
  for (gsize i = 0; i < list->n; i++)
    {
      if (g_inet_address_mask_matches (list->items[i], addr))
        return TRUE;
      if (mapped != NULL && g_inet_address_mask_matches (list->items[i], mapped))
        return TRUE;
    }
  return FALSE;
}

void
gt_cidr_list_free (GtCidrList *list)
{
  if (list == NULL)
    return;
  for (gsize i = 0; i < list->n; i++)
    g_object_unref (list->items[i]);
  g_free (list);
}
