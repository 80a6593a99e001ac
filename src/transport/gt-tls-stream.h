/* gt-tls-stream.h: TLS tunnels on GnuTLS directly, on a socket's fd, driven by the main loop. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* A TLS connection on base (a GSocketConnection) with GnuTLS sessions of its own instead of
 * glib-networking's: records are read from a large read-ahead buffer and written with one send()
 * per caller's write, and the pollable sources poll the fd themselves, so a tunnel costs the
 * syscalls of plain TCP plus the cipher. Single-threaded: every call from the thread of the main
 * context the stream is used in. */

/* Client side: host names the server (SNI unless it is an IP literal). */
GIOStream *_gt_tls_stream_new_client (GIOStream *base, const char *host, GError **error);

/* Server side with certificate (and its private key). */
GIOStream *_gt_tls_stream_new_server (GIOStream *base, GTlsCertificate *certificate,
                                      GError **error);

/* Client side: called during the handshake once the server's certificate arrived (see
 * _gt_tls_stream_get_peer_certificate); FALSE with an error ends the handshake with an alert and
 * fails it with that error. */
typedef gboolean (*GtTlsVerifyFunc) (GIOStream *stream, gpointer data, GError **error);
void _gt_tls_stream_set_verify (GIOStream *stream, GtTlsVerifyFunc verify, gpointer data);

/* Runs the handshake; completes with TRUE or an error. */
void _gt_tls_stream_handshake_async (GIOStream *stream, GCancellable *cancellable,
                                     GAsyncReadyCallback callback, gpointer user_data);
gboolean _gt_tls_stream_handshake_finish (GIOStream *stream, GAsyncResult *result,
                                          GError **error);

/* The server's certificate chain as GIO certificates (leaf first, issuers linked); NULL when
 * the server sent none. */
GTlsCertificate *_gt_tls_stream_get_peer_certificate (GIOStream *stream);

/* Writes the next n bytes of a caller's plaintext at dst. */
typedef void (*GtTlsFillFunc) (guint8 *dst, gsize n, gpointer data);

/* Queues len bytes of application data that fill writes straight into the send queue, where
 * they are sealed (a WebSocket client masks its frames there: no copy of its own). All or
 * nothing: FALSE, without calling fill, when stream is no GtTlsStream with records of gt's own,
 * is closed or failed, its queue is full (not writable) or len exceeds 272 KiB; the caller then
 * writes through the output stream as usual. */
gboolean _gt_tls_stream_write_with (GIOStream *stream, gsize len, GtTlsFillFunc fill,
                                    gpointer data);

/* Sends a TLS 1.3 KeyUpdate (asking the peer to update its keys too when request_peer) and moves
 * to the next write keys; done by itself every 2^24 records. FALSE when this stream's records
 * are GnuTLS's (TLS 1.2) or it is closed. */
gboolean _gt_tls_stream_update_keys (GIOStream *stream, gboolean request_peer);

/* What a TLS 1.3 record's decrypted inner plaintext (RFC 8446 §5.2: content, content type,
 * zero padding) holds after the handshake. Pure, for the record layer and its fuzz target. */
typedef enum
{
  GT_TLS_INNER_DATA,       /* application data: the first *data_len bytes */
  GT_TLS_INNER_CLOSE,      /* close_notify */
  GT_TLS_INNER_IGNORE,     /* session tickets */
  GT_TLS_INNER_KEY_UPDATE, /* the peer's next secret follows; *request: it asks for ours */
  GT_TLS_INNER_ERROR,      /* *why says what */
} GtTlsInner;

GtTlsInner _gt_tls_inner_parse (const guint8 *plain, gsize len, gsize *data_len,
                                gboolean *request, const char **why);

/* "TLS1.3-AES-128-GCM"-style description of the session, for logs. */
char *_gt_tls_stream_describe (GIOStream *stream);

G_END_DECLS
