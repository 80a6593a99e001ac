/* gt-quic.h: QUIC connections (ngtcp2 0.12 + GnuTLS) on the GLib main loop, and their
 * bidirectional streams as GIOStreams with pollable streams. The only file that sees ngtcp2. */
#pragma once

#include <gio/gio.h>

#include "gt-transport-private.h"

G_BEGIN_DECLS

/* gt's own ALPN: a QUIC tunnel speaks gt's protocol (docs/protocol.md) with each gt stream a QUIC
 * stream of its own (gt/1 carried them all on one stream: not spoken any more). */
#define GT_QUIC_ALPN "gt/2"

typedef struct _GtQuicConn GtQuicConn;
typedef struct _GtQuicServer GtQuicServer;

GtQuicConn *gt_quic_conn_ref (GtQuicConn *conn);
void gt_quic_conn_unref (GtQuicConn *conn);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtQuicConn, gt_quic_conn_unref)

/* Client: a QUIC connection to address (host names the server for verification and SNI),
 * verified as verify says (copied). idle_timeout_ms: the connection's idle timeout; keep-alive
 * packets go out at half of it. handshake_timeout_ms: no handshake by then fails (0 = 10 s).
 * Completes with the connection once its handshake is done. */
void gt_quic_connect_async (const char *host, GSocketAddress *address, const GtTlsVerify *verify,
                            guint idle_timeout_ms, guint handshake_timeout_ms,
                            GCancellable *cancellable,
                            GAsyncReadyCallback callback, gpointer user_data);
GtQuicConn *gt_quic_connect_finish (GAsyncResult *result, GError **error);

/* Opens a bidirectional stream. With owns_conn, closing the stream (or dropping its last ref)
 * closes the whole connection: the stream is the connection's tunnel. */
GIOStream *gt_quic_conn_open_stream (GtQuicConn *conn, gboolean owns_conn, GError **error);

/* Closes the connection now (CONNECTION_CLOSE, no error): its streams fail. */
void gt_quic_conn_close (GtQuicConn *conn);

/* Called with the first bidirectional stream a client opens on each new connection (the tunnel;
 * it owns the connection: ref it to keep it); peer is the client's address. Every stream
 * implements GtNativeStreams: the tunnel opens and accepts the connection's other streams. */
typedef void (*GtQuicTunnelFunc) (GIOStream *tunnel, GInetSocketAddress *peer,
                                  gpointer user_data);

/* Server: accepts QUIC connections on the bound UDP socket fd (ownership taken) with certificate
 * (and its private key), on the thread-default main context. */
GtQuicServer *gt_quic_server_new (int fd, GTlsCertificate *certificate, guint idle_timeout_ms,
                                  GtQuicTunnelFunc func, gpointer user_data, GError **error);
/* No new connections (nor tunnels) from now on; the current ones carry on. */
void gt_quic_server_stop_accepting (GtQuicServer *server);
/* Closes every connection and the socket. */
void gt_quic_server_free (GtQuicServer *server);

G_END_DECLS
