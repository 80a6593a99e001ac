/* fuzz-proxy-protocol.c: libFuzzer target for the PROXY protocol parser and CIDR list parser. */
#include "gt-proxy-protocol.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

static GtDecodeResult
parse_copy (const guint8 *data, gsize size, GtProxyHeader *h, gsize *consumed, GError **error)
{
  /* Exact-size copy so that ASan catches any read past the end. */
  g_autofree guint8 *copy = g_memdup2 (data, size);

  return gt_proxy_header_parse (copy, size, h, consumed, error);
}

static GInetSocketAddress *
socket_address (const char *addr, guint16 port)
{
  /* Not g_inet_socket_address_new_from_string: it turns IPv4-mapped IPv6 into IPv4. */
  g_autoptr (GInetAddress) a = g_inet_address_new_from_string (addr);

  if (a == NULL)
    abort ();
  return G_INET_SOCKET_ADDRESS (g_inet_socket_address_new (a, port));
}

/* A parsed header encodes (v1 and v2) into bytes that parse back to the same endpoints. */
static void
check_roundtrip (const GtProxyHeader *h)
{
  g_autoptr (GInetSocketAddress) src = socket_address (h->src_addr, h->src_port);
  g_autoptr (GInetSocketAddress) dst = socket_address (h->dst_addr, h->dst_port);
  GBytes *encoded[2] = { gt_proxy_header_encode_v1 (src, dst),
                         gt_proxy_header_encode_v2 (src, dst) };

  for (guint i = 0; i < 2; i++)
    {
      g_auto (GtProxyHeader) back = { 0 };
      gsize len, consumed = 0;
      const guint8 *bytes = g_bytes_get_data (encoded[i], &len);

      if (gt_proxy_header_parse (bytes, len, &back, &consumed, NULL) != GT_DECODE_OK
          || consumed != len || back.local || back.family != h->family
          || g_strcmp0 (back.src_addr, h->src_addr) != 0
          || g_strcmp0 (back.dst_addr, h->dst_addr) != 0 || back.src_port != h->src_port
          || back.dst_port != h->dst_port)
        abort ();
      g_bytes_unref (encoded[i]);
    }
}

/* The input as a newline-separated CIDR list; matched against the parsed source when both work. */
static void
check_cidrs (const guint8 *data, gsize size, const GtProxyHeader *h)
{
  g_autofree char *text = g_strndup ((const char *) data, MIN (size, 4096));
  g_auto (GStrv) lines = g_strsplit (text, "\n", 64);
  g_autoptr (GError) error = NULL;
  g_autoptr (GtCidrList) list = gt_cidr_list_new ((const char *const *) lines, &error);

  if ((list == NULL) != (error != NULL))
    abort ();
  if (list != NULL && h->src_addr != NULL)
    {
      g_autoptr (GInetAddress) addr = g_inet_address_new_from_string (h->src_addr);

      if (addr == NULL)
        abort ();
      (void) gt_cidr_list_contains (list, addr);
    }
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_auto (GtProxyHeader) h = { 0 };
  g_autoptr (GError) error = NULL;
  gsize consumed = 0;
  GtDecodeResult r = parse_copy (data, size, &h, &consumed, &error);

  if ((r == GT_DECODE_ERROR) != (error != NULL))
    abort ();
  if (error != NULL && error->domain != GT_PROXY_PROTOCOL_ERROR)
    abort ();
  if (r == GT_DECODE_OK)
    {
      if (consumed == 0 || consumed > size || consumed > GT_PROXY_V2_HEADER_SIZE + 65535)
        abort ();
      if (h.local != (h.src_addr == NULL) || h.local != (h.dst_addr == NULL))
        abort ();
      if (data[0] == 'P' && consumed > GT_PROXY_V1_MAX_SIZE)
        abort ();
      if (!h.local)
        check_roundtrip (&h);
    }
  else if (r == GT_DECODE_NEED_MORE)
    {
      if (consumed != 0 || h.src_addr != NULL || size >= GT_PROXY_V2_HEADER_SIZE + 65535)
        abort ();
    }
  else if (consumed != 0 && (error->code != GT_PROXY_PROTOCOL_ERROR_UNSUPPORTED || consumed > size))
    abort ();

  /* A header that is complete at n bytes was incomplete, never wrong, before its end. */
  if (r == GT_DECODE_OK && consumed > 0)
    {
      g_auto (GtProxyHeader) h2 = { 0 };
      gsize c2 = 0;

      if (parse_copy (data, consumed - 1, &h2, &c2, NULL) != GT_DECODE_NEED_MORE)
        abort ();
    }

  check_cidrs (data, size, &h);
  return 0;
}
