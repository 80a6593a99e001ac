/* gt-transport.h: tunnel transports (tcp now; tls, ws, quic later) and raw TCP socket helpers. */
#pragma once

#include <gio/gio.h>
#include "gt-config.h"

G_BEGIN_DECLS

/* How a tunnel's server is authenticated (tls://, wss://). */
typedef struct
{
  const char *remote_cert; /* CA/certificate PEM file, or "sha256:<hex>" pin, or NULL (system CAs) */
  gboolean insecure;       /* accept any certificate */
} GtTransportSecurity;

/* Opens a tunnel connection to a remote; the result is a GIOStream with pollable streams:
 * tcp:// plain, tls:// TLS (through an HTTP CONNECT proxy from https_proxy/no_proxy), ws:// and
 * wss:// a WebSocket (through http_proxy/https_proxy). */
void gt_transport_connect_async (const GtRemote *remote, const GtTransportSecurity *security,
                                 GCancellable *cancellable, GAsyncReadyCallback callback,
                                 gpointer user_data);
GIOStream *gt_transport_connect_finish (GAsyncResult *result, GError **error);

/* Wraps an accepted socket fd (ownership taken) as a GIOStream with pollable streams. */
GIOStream *gt_transport_wrap_fd (int fd, GError **error);

/* Creates a non-blocking listening TCP socket bound to "host:port" (port 0 = any). */
int gt_tcp_listen (const char *addr, GError **error);
/* Same with a GInetAddress and port. */
int gt_tcp_listen_on (GInetAddress *address, guint16 port, GError **error);
/* "127.0.0.1:8080" / "[::1]:8080" for the local or peer side of a socket (free with g_free). */
char *gt_fd_describe_local (int fd);
char *gt_fd_describe_peer (int fd);
guint16 gt_fd_get_local_port (int fd);
/* Resolves a host:port into a socket address (IP literals without DNS). */
GSocketAddress *gt_resolve_address (const char *host, guint16 port, GError **error);

G_END_DECLS
