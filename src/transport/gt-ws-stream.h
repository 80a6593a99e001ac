/* gt-ws-stream.h: a gt tunnel (byte stream) carried in the binary messages of a WebSocket. */
#pragma once

#include <gio/gio.h>
#include <libsoup/soup.h>

G_BEGIN_DECLS

/* Largest message sent (one writev call becomes at most one message of this size); peers accept
 * messages up to GT_WS_MAX_MESSAGE + 64 bytes. */
#define GT_WS_MAX_MESSAGE (256 * 1024)

/* Wraps an open WebSocket (a ref is taken) as a GIOStream whose streams are pollable. Received
 * binary messages are queued for reading; each write sends one binary message. A text message is a
 * protocol error (close code 1003). Closing the GIOStream or its output stream closes the
 * WebSocket with 1000. Keepalive pings every 15 s. Without gt's own I/O wrapper (a connection made
 * by SoupServer or SoupSession) receiving cannot be throttled, so the queue limit is larger there
 * (4 MiB instead of 1 MiB) and writes are never held back while the connection is open. */
GIOStream *gt_ws_stream_new (SoupWebsocketConnection *ws);

/* Client: connects to ws://host[:port]/path or wss://host[:port]/path and performs the WebSocket
 * handshake. wss verifies the server against the system CA store, or against tls_database when it
 * is not NULL; with a pin ("sha256:HEX", see gt_certificate_pin_matches) the server certificate
 * must have that fingerprint (a pinned self-signed certificate is accepted); insecure accepts any
 * certificate. proxy: a resolver for the URL (gt_http_proxy_resolver_new_from_env); "direct://"
 * and http:// proxies (HTTP CONNECT) are supported. NULL = connect directly. */
void gt_ws_connect_async (const char *url, GTlsDatabase *tls_database, const char *pin,
                          gboolean insecure, GProxyResolver *proxy, GCancellable *cancellable,
                          GAsyncReadyCallback callback, gpointer user_data);
GIOStream *gt_ws_connect_finish (GAsyncResult *result, GError **error);

/* Server: io is a connection on which a complete HTTP upgrade request head (head/head_len, with or
 * without the final blank line) was already read. Validates it (GET, HTTP/1.1, Upgrade: websocket,
 * Connection: upgrade, Sec-WebSocket-Version: 13, a base64 Sec-WebSocket-Key of 16 bytes), writes
 * the 101 response and returns the tunnel stream. On a bad request it writes a 400 response itself
 * and returns NULL with a G_IO_ERROR_INVALID_DATA error. The write is a short blocking write. */
GIOStream *gt_ws_server_accept (GIOStream *io, const guint8 *head, gsize head_len, GError **error);

/* Cheap check on a sniffed head: "GET <path>[?query] HTTP/1.x" (any path when path is NULL) with
 * an Upgrade header containing "websocket". */
gboolean gt_ws_is_upgrade_request (const guint8 *head, gsize head_len, const char *path);

G_END_DECLS
