/* gt-http-proxy.h: HTTP proxies from the environment and HTTP CONNECT tunnels through them. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* Largest proxy (or WebSocket handshake) response head accepted. */
#define GT_HTTP_PROXY_MAX_HEAD (8 * 1024)

/* The proxy URL to use for a tunnel of `scheme` to `host`, from the environment: "tls" and "wss"
 * use https_proxy, every other scheme ("tcp", "ws") http_proxy; lower-case variables win over
 * upper-case ones, empty means unset. no_proxy/NO_PROXY is a comma list of host names (matching
 * the name and its subdomains), ".domain" / "*.domain" suffixes, IP addresses, CIDR blocks and "*".
 * A proxy without a scheme gets "http://". Returns NULL for a direct connection. */
char *gt_http_proxy_for (const char *scheme, const char *host);

/* GIO's GSimpleProxyResolver answering like gt_http_proxy_for (for tcp/tls/ws/wss URIs), with the
 * environment read once now; NULL (no proxy at all) when neither http_proxy nor https_proxy is
 * set, or no_proxy is "*". */
GProxyResolver *gt_http_proxy_resolver_new_from_env (void);

/* The proxy URL ("direct://" for none) resolver gives for scheme://host:port, with host
 * normalised as no_proxy matching expects (case, brackets, trailing dot). resolver NULL = direct. */
char *gt_http_proxy_lookup (GProxyResolver *resolver, const char *scheme, const char *host,
                            guint16 port, GError **error);

/* Opens a TCP connection to the proxy (an "http://[user:pass@]host[:port]" URL, port 80 by
 * default) and sends CONNECT host:port, with Basic authentication when the URL carries a user.
 * After a 2xx response the result is the tunnelled connection (a GSocketConnection with pollable
 * streams, nothing after the response head consumed). Another status fails with the status line
 * in the message: G_IO_ERROR_PROXY_AUTH_FAILED for 407, G_IO_ERROR_PROXY_FAILED otherwise. */
void gt_http_connect_async (const char *proxy_url, const char *host, guint16 port,
                            GCancellable *cancellable, GAsyncReadyCallback callback,
                            gpointer user_data);
GIOStream *gt_http_connect_finish (GAsyncResult *result, GError **error);

/* Reads an HTTP head (through the blank line) from io's pollable input stream one byte at a time,
 * so that nothing after it is consumed. Fails with G_IO_ERROR_MESSAGE_TOO_LARGE beyond max_len and
 * G_IO_ERROR_CONNECTION_CLOSED on EOF. The result holds the head including the blank line. */
void gt_http_read_head_async (GIOStream *io, gsize max_len, GCancellable *cancellable,
                              GAsyncReadyCallback callback, gpointer user_data);
GBytes *gt_http_read_head_finish (GAsyncResult *result, GError **error);

/* The first line of a head, printable ASCII only and at most 200 bytes, for error messages. */
char *gt_http_status_line (const guint8 *head, gsize len);

G_END_DECLS
