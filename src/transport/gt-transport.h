/* gt-transport.h: the tunnel transport seam (tcp, tls, ws, wss, quic; one leaf per scheme) and raw
 * socket helpers. */
#pragma once

#include <gio/gio.h>
#include "gt-config.h"

G_BEGIN_DECLS

/* How a tunnel's server is authenticated (tls://, wss://). */
typedef struct
{
  const char *remote_cert; /* CA/certificate PEM file, or "sha256:<hex>" pin, or NULL (system CAs) */
  gboolean insecure;       /* accept any certificate */
  guint64 idle_timeout_ms; /* quic://: idle timeout (keep-alive at half of it); 0 = 60 s */
  guint handshake_timeout_ms; /* quic://: no handshake by then = UDP blocked; 0 = 10 s */
} GtTransportSecurity;

/* TRUE when a leaf implements this scheme (a row of gt_scheme_info_lookup's table), built in or
 * as a module. */
gboolean gt_transport_supports (const char *scheme);

/* Makes the leaf of scheme ready, loading its module (gt-module.h) when it is one, so that a
 * configuration that needs a missing module fails at start with one clear error: the key named is
 * the server's listener of the scheme (quicAddr) when listener is TRUE, else the client's remote.
 * Dial, accept and listen load the module themselves when nothing did before. */
gboolean gt_transport_load (const char *scheme, gboolean listener, GError **error);

/* Client: opens a tunnel connection to a remote; the result is a GIOStream with pollable streams:
 * tcp:// plain, tls:// TLS (through an HTTP CONNECT proxy from https_proxy/no_proxy), ws:// and
 * wss:// a WebSocket (through http_proxy/https_proxy), quic:// the connection's control stream.
 * Never blocks (DNS included). A tunnel stream whose transport carries each gt stream natively
 * (quic://, here and from gt_transport_listen) implements GtNativeStreams (gt-native-streams.h,
 * in core so that the mux sees it): the mux then opens, accepts and resets those instead of
 * framing DATA, WINDOW, SHUTDOWN and RESET on the tunnel (docs/protocol.md §6.9). */
void gt_transport_connect_async (const GtRemote *remote, const GtTransportSecurity *security,
                                 GCancellable *cancellable, GAsyncReadyCallback callback,
                                 gpointer user_data);
GIOStream *gt_transport_connect_finish (GAsyncResult *result, GError **error);

/* Server: turns io, accepted on the listener of `scheme`, into the tunnel stream: tcp:// as is,
 * tls:// after the TLS handshake with certificate, ws:// and wss:// (io already past tlsAddr's TLS)
 * after the HTTP upgrade in head/head_len (the sniffed bytes), answered without blocking. */
void gt_transport_accept_async (const char *scheme, GIOStream *io, const guint8 *head,
                                gsize head_len, GTlsCertificate *certificate,
                                GCancellable *cancellable, GAsyncReadyCallback callback,
                                gpointer user_data);
GIOStream *gt_transport_accept_finish (GAsyncResult *result, GError **error);

/* A server's datagram listener (quicAddr): tunnels arrive through a callback, not an accept. */
typedef struct _GtTransportListener GtTransportListener;

/* Called with each new tunnel stream (a GIOStream with pollable streams; ref it to keep it) and
 * the address of its client. */
typedef void (*GtTransportTunnelFunc) (GIOStream *tunnel, GInetSocketAddress *peer,
                                       gpointer user_data);

/* Server: accepts tunnels of `scheme` (a datagram transport: quic) on the bound UDP socket fd
 * (ownership taken), with certificate, on the thread-default main context. idle_timeout_ms: 0 =
 * 60 s. */
GtTransportListener *gt_transport_listen (const char *scheme, int fd, GTlsCertificate *certificate,
                                          guint64 idle_timeout_ms, GtTransportTunnelFunc func,
                                          gpointer user_data, GError **error);
/* No new tunnels from now on; the ones it made carry on (a drain). */
void gt_transport_listener_stop_accepting (GtTransportListener *listener);
/* Ends the listener and every tunnel it made. */
void gt_transport_listener_free (GtTransportListener *listener);

/* TLS settings for the whole process (minimum version "tls1.1", "tls1.2" or "tls1.3", NULL =
 * tls1.2; cipher order for tunnels). GIO takes them only once, before the first TLS connection:
 * call at start, before threads exist; later calls only validate. G_TLS_GNUTLS_PRIORITY from the
 * environment wins. */
gboolean gt_transport_tls_init (const char *min_version, GError **error);

/* Wraps an accepted socket fd (ownership taken) as a GIOStream with pollable streams. */
GIOStream *gt_transport_wrap_fd (int fd, GError **error);

/* Creates a non-blocking listening TCP socket bound to "host:port" (port 0 = any). */
int gt_tcp_listen (const char *addr, GError **error);
/* Same with a GInetAddress and port. */
int gt_tcp_listen_on (GInetAddress *address, guint16 port, GError **error);
/* A non-blocking UDP socket bound to address:port. */
int gt_udp_bind_on (GInetAddress *address, guint16 port, GError **error);
/* "127.0.0.1:8080" / "[::1]:8080" for the local or peer side of a socket (free with g_free). */
char *gt_fd_describe_local (int fd);
char *gt_fd_describe_peer (int fd);
guint16 gt_fd_get_local_port (int fd);
/* Resolves a host:port into a socket address. IP literals need no DNS; a name blocks on DNS, so
 * on a running main loop use the async variant. */
GSocketAddress *gt_resolve_address (const char *host, guint16 port, GError **error);
void gt_resolve_address_async (const char *host, guint16 port, GCancellable *cancellable,
                               GAsyncReadyCallback callback, gpointer user_data);
GSocketAddress *gt_resolve_address_finish (GAsyncResult *result, GError **error);

G_END_DECLS
