/* gt-http.h: pure helpers for the first HTTP request head: Host sniffing and Host rewriting. */
#pragma once

#include <glib.h>
#include "gt-frame.h"

G_BEGIN_DECLS

#define GT_HTTP_MAX_HEAD (8 * 1024)

#define GT_HTTP_ERROR (gt_http_error_quark ())
GQuark gt_http_error_quark (void);
typedef enum
{
  GT_HTTP_ERROR_MALFORMED, /* not an HTTP/1.x request head → 400 */
  GT_HTTP_ERROR_TOO_LARGE, /* head larger than the limit → 431 */
  GT_HTTP_ERROR_NO_HOST,   /* complete head without a Host header → 400 */
} GtHttpErrorEnum;

/* Looks at the bytes received so far on a user connection. Needs the complete head (up to the
 * blank line); NEED_MORE while it is incomplete and shorter than max_head; ERROR when it is
 * malformed (request line not "TOKEN SP TARGET SP HTTP/1.x", header line without a colon or with
 * bad name chars, NUL/bare CR), larger than max_head, or has no Host header. On OK *host_out is
 * the Host header value (trimmed, lower-cased, port removed, ≤ 255 bytes). Header name matching
 * is case-insensitive; optional whitespace after the colon. */
GtDecodeResult gt_http_sniff_host (const guint8 *buf, gsize len, gsize max_head, char **host_out,
                                   GError **error);

/* The longest value gt_http_sniff_field accepts (a host prefix is at most 200 bytes). */
#define GT_HTTP_MAX_FIELD_PREFIX 200

/* Like gt_http_sniff_host for another header (httpMUXHeader, case-insensitive name): on OK
 * *value_out is its whole OWS-trimmed value, lower-cased: 1..200 bytes of printable ASCII without
 * spaces (else MALFORMED); NO_HOST when the field is missing; several fields are MALFORMED. */
GtDecodeResult gt_http_sniff_field (const guint8 *buf, gsize len, gsize max_head,
                                    const char *field, char **value_out, GError **error);

/* Host prefix for routing: the first DNS label ("abc.example.com" → "abc"; a host without
 * dots is its own prefix). Returns NULL for an empty or invalid label. Lower-case. */
char *gt_http_host_prefix (const char *host);

/* Streaming rewriter for useLocalAsHTTPHost: replaces the value of the first request's Host
 * header by `host` (e.g. "127.0.0.1:8080"), whatever the chunking of the input; after the first
 * head it passes bytes through untouched. */
typedef struct _GtHostRewriter GtHostRewriter;
GtHostRewriter *gt_host_rewriter_new (const char *host);
void gt_host_rewriter_free (GtHostRewriter *rw);
/* Appends the output for these input bytes to out. Error (GT_HTTP_ERROR_TOO_LARGE) when the head
 * grows beyond GT_HTTP_MAX_HEAD without ending; bytes that are not HTTP pass through untouched. */
gboolean gt_host_rewriter_feed (GtHostRewriter *rw, const guint8 *data, gsize len,
                                GByteArray *out, GError **error);
/* TRUE once the first head has passed: the caller may then bypass the rewriter. */
gboolean gt_host_rewriter_is_done (const GtHostRewriter *rw);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtHostRewriter, gt_host_rewriter_free)

G_END_DECLS
