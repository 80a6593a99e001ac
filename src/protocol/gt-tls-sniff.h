/* gt-tls-sniff.h: reads the SNI name of a TLS ClientHello without terminating TLS (no sockets). */
#pragma once

#include <glib.h>

#include "gt-frame.h"

G_BEGIN_DECLS

#define GT_TLS_SNIFF_ERROR (gt_tls_sniff_error_quark ())
GQuark gt_tls_sniff_error_quark (void);
typedef enum
{
  GT_TLS_SNIFF_ERROR_MALFORMED, /* TLS records, but not a well-formed ClientHello / server_name */
  GT_TLS_SNIFF_ERROR_TOO_LARGE, /* the ClientHello would need more than max_len bytes */
  GT_TLS_SNIFF_ERROR_NOT_TLS,   /* first byte is not a TLS handshake record: treat as non-TLS */
} GtTlsSniffErrorEnum;

/* Largest TLS record payload accepted (TLSPlaintext limit plus the slack the RFCs allow). */
#define GT_TLS_MAX_RECORD_PAYLOAD (16384 + 256)

/* Reads the ClientHello from the first bytes of a connection: one or more handshake records
 * (content type 22) whose payloads concatenate into the handshake message.
 *
 * Returns NEED_MORE while the hello is incomplete and still fits in max_len bytes (0 = no limit
 * beyond the 24-bit handshake length); ERROR with GT_TLS_SNIFF_ERROR_TOO_LARGE when it cannot;
 * ERROR with NOT_TLS when buf[0] is not 22; ERROR with MALFORMED for any other violation.
 * On OK, *sni_out is the first host_name of the server_name extension, lower-cased, with one
 * trailing dot removed, checked to be a DNS name (letters, digits, '-', non-empty labels of at
 * most 63 bytes, at most 255 bytes); or NULL when the hello has no server_name host_name.
 * *sni_out is NULL on every other result. Only the bytes up to the end of the ClientHello are
 * read; whatever follows it is left to the caller. */
GtDecodeResult gt_tls_sniff_sni (const guint8 *buf, gsize len, gsize max_len, char **sni_out,
                                 GError **error);

/* Alert descriptions (RFC 8446 §6). */
#define GT_TLS_ALERT_HANDSHAKE_FAILURE 40
#define GT_TLS_ALERT_DECODE_ERROR 50
#define GT_TLS_ALERT_INTERNAL_ERROR 80
#define GT_TLS_ALERT_UNRECOGNIZED_NAME 112

#define GT_TLS_ALERT_SIZE 7

/* Writes a plaintext fatal alert record (type 21, version 3.3, length 2, level 2, description)
 * and returns its size, GT_TLS_ALERT_SIZE. */
gsize gt_tls_alert (guint8 out[GT_TLS_ALERT_SIZE], guint8 description);

G_END_DECLS
