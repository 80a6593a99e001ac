/* gt-ws-stream.h: WebSocket tunnels: gt's own framer stream and the HTTP upgrade on both sides. */
#pragma once

#include <gio/gio.h>

#include "gt-ws-frame.h"

G_BEGIN_DECLS

/* Wraps base (a connection with pollable streams on which the HTTP upgrade is done; a ref is
 * taken) as a GIOStream with pollable streams. Each write sends one binary frame of at most
 * GT_WS_MAX_MESSAGE bytes (client frames masked); received binary messages, fragmented or not, are
 * read as a byte stream straight from the connection, so a reader that stops holds the peer back.
 * Pings are answered, a text message is an error (G_IO_ERROR_INVALID_DATA, close code 1003), a
 * close frame reads as EOF. Closing sends close 1000 and then closes base, never blocking. Writes
 * after the peer's close fail with G_IO_ERROR_CONNECTION_CLOSED, after our own with
 * G_IO_ERROR_CLOSED. Keepalive pings every 15 s. preread: bytes read from base after the upgrade
 * head. The stream runs on the thread-default main context of the caller. */
GIOStream *gt_ws_stream_new (GIOStream *base, gboolean client, const guint8 *preread,
                             gsize preread_len);

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
 * without the final blank line; bytes after the head are the first WebSocket bytes) was already
 * read. Validates it (GET, HTTP/1.1, Upgrade: websocket, Connection: upgrade,
 * Sec-WebSocket-Version: 13, a base64 Sec-WebSocket-Key of 16 bytes), writes the 101 response
 * without blocking and returns the tunnel stream. On a bad request it writes a 400 response and
 * fails with G_IO_ERROR_INVALID_DATA. */
void gt_ws_server_accept_async (GIOStream *io, const guint8 *head, gsize head_len,
                                GCancellable *cancellable, GAsyncReadyCallback callback,
                                gpointer user_data);
GIOStream *gt_ws_server_accept_finish (GAsyncResult *result, GError **error);

/* The same, writing the response with a blocking write: only for callers without a main loop
 * (the upgrade fuzz target writes into memory). */
GIOStream *gt_ws_server_accept (GIOStream *io, const guint8 *head, gsize head_len, GError **error);

/* Cheap check on a sniffed head: "GET <path>[?query] HTTP/1.x" (any path when path is NULL) with
 * an Upgrade header containing "websocket". */
gboolean gt_ws_is_upgrade_request (const guint8 *head, gsize head_len, const char *path);

G_END_DECLS
