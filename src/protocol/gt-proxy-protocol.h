/* gt-proxy-protocol.h: PROXY protocol v1/v2 parser and encoders; trusted-source CIDR lists. */
#pragma once

#include <gio/gio.h>

#include "gt-frame.h"

G_BEGIN_DECLS

#define GT_PROXY_PROTOCOL_ERROR (gt_proxy_protocol_error_quark ())
GQuark gt_proxy_protocol_error_quark (void);
typedef enum
{
  GT_PROXY_PROTOCOL_ERROR_MALFORMED,   /* a PROXY header, but broken */
  GT_PROXY_PROTOCOL_ERROR_NOT_PROXY,   /* the bytes cannot start a PROXY header */
  GT_PROXY_PROTOCOL_ERROR_UNSUPPORTED, /* well-formed, but a version or family gt does not relay */
} GtProxyProtocolErrorEnum;

/* Longest v1 header, "\r\n" included. */
#define GT_PROXY_V1_MAX_SIZE 107
/* v2 fixed part: 12-byte signature, ver/cmd, fam/proto, 16-bit length. */
#define GT_PROXY_V2_HEADER_SIZE 16

typedef struct
{
  gboolean local;       /* v2 LOCAL or UNSPEC, v1 UNKNOWN: no addresses, use the real endpoints */
  GSocketFamily family; /* G_SOCKET_FAMILY_IPV4 / _IPV6; G_SOCKET_FAMILY_INVALID when local */
  char *src_addr;       /* textual address (g_inet_address_to_string form); NULL when local */
  guint16 src_port;
  char *dst_addr;
  guint16 dst_port;
} GtProxyHeader;

/* Parses a PROXY header (v1 or v2) at the start of buf. out is overwritten (clear it before
 * reusing it) and filled only on OK; *consumed is then the header length.
 * NEED_MORE while incomplete (v1 ≤ 107 bytes, v2 ≤ 16 + 65535). ERROR NOT_PROXY when buf is
 * neither a prefix of "PROXY " nor of the v2 signature (nor starts with one of them).
 * ERROR UNSUPPORTED for a v2 version other than 2, and for v2 PROXY headers of families gt does not
 * relay (AF_UNIX, UDP); for the latter *consumed is still set to the header length, so a caller
 * may skip the header and use the real endpoints. ERROR MALFORMED otherwise. */
GtDecodeResult gt_proxy_header_parse (const guint8 *buf, gsize len, GtProxyHeader *out,
                                      gsize *consumed, GError **error);
void gt_proxy_header_clear (GtProxyHeader *h);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (GtProxyHeader, gt_proxy_header_clear)

/* Encoders for sending a header to a local service. Both addresses of the same family give
 * TCP4/TCP6; mixed families are sent as TCP6 with the IPv4 one IPv4-mapped. A NULL src or dst
 * gives "PROXY UNKNOWN\r\n" (v1) or a LOCAL header (v2). */
GBytes *gt_proxy_header_encode_v1 (GInetSocketAddress *src, GInetSocketAddress *dst);
GBytes *gt_proxy_header_encode_v2 (GInetSocketAddress *src, GInetSocketAddress *dst);

/* Trusted-source check: is addr inside any of the CIDRs ("10.0.0.0/8", "::1/128", "127.0.0.1")?
 * Entries are strict: no spaces, no host bits set beyond the prefix. An IPv4-mapped IPv6 address
 * also matches IPv4 entries. NULL or empty cidrs gives a list that matches nothing. */
typedef struct _GtCidrList GtCidrList;
GtCidrList *gt_cidr_list_new (const char *const *cidrs, GError **error);
gboolean gt_cidr_list_contains (const GtCidrList *list, GInetAddress *addr);
void gt_cidr_list_free (GtCidrList *list);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtCidrList, gt_cidr_list_free)

G_END_DECLS
