/* gt-transport-private.h: the transport seam's leaf table and helpers shared between leaves. */
#pragma once

#include "gt-transport.h"

G_BEGIN_DECLS

/* One tunnel transport. Both operations complete `task` (owned by the leaf from then on) with a
 * GIOStream whose streams are pollable, or an error. */
typedef struct
{
  const char *scheme; /* a row of the scheme table in gt-types.c */
  /* Client: opens a tunnel connection to remote. */
  void (*dial) (const GtRemote *remote, const GtTransportSecurity *security, GTask *task);
  /* Server: turns io, accepted on the scheme's listener (after that listener's own TLS, for
   * tlsAddr), into the tunnel stream; head: the bytes already sniffed from io. */
  void (*accept) (GIOStream *io, const guint8 *head, gsize head_len,
                  GTlsCertificate *certificate, GTask *task);
  /* Server, datagram transports only (NULL otherwise): see gt_transport_listen. */
  gpointer (*listen) (int fd, GTlsCertificate *certificate, guint64 idle_timeout_ms,
                      GtTransportTunnelFunc func, gpointer user_data, GError **error);
  void (*listener_stop) (gpointer listener);
  void (*listener_free) (gpointer listener);
} GtTransportLeaf;

extern const GtTransportLeaf _gt_transport_tcp;
extern const GtTransportLeaf _gt_transport_tls;
extern const GtTransportLeaf _gt_transport_ws;
extern const GtTransportLeaf _gt_transport_wss;
#ifdef GT_WITH_QUIC
extern const GtTransportLeaf _gt_transport_quic; /* in the module gt-quic */
#endif

/* Makes a leaf built as a module available (its scheme must be one of module_leaves in
 * gt-transport.c): called by the module's g_module_check_init as gt loads it, and by tests that
 * link the leaf's sources instead. */
void _gt_transport_register_leaf (const GtTransportLeaf *leaf);

/* A TCP connection (TCP_NODELAY set) to host:port, through the HTTP CONNECT proxy proxy_url
 * ("http://[user:pass@]host[:port]") or directly when it is NULL. Completes task. */
void _gt_transport_tcp_dial (const char *host, guint16 port, const char *proxy_url, GTask *task);

/* How a TLS client verifies its server: against database (a CA file's, named ca_file in messages),
 * or the system CAs when it is NULL; or by the certificate's SHA-256 pin (the CA store is then
 * never loaded); or not at all when insecure. */
typedef struct
{
  GTlsDatabase *database;
  char *ca_file;
  char *pin;
  gboolean insecure;
} GtTlsVerify;

void _gt_tls_verify_clear (GtTlsVerify *verify);

/* Fills verify from a GtTransportSecurity (a remote_cert that is not a pin is a CA file, loaded
 * here). FALSE with an error for an unreadable file. */
gboolean _gt_tls_verify_init (GtTlsVerify *verify, const GtTransportSecurity *security,
                              GError **error);

/* The one TLS client of tls:// and wss://: wraps io in TLS to host:port and runs the handshake,
 * verifying the server as verify says. Completes task with the TLS GIOStream (gt-tls-stream.h). */
void _gt_tls_client_handshake (GIOStream *io, const char *host, guint16 port,
                               const GtTlsVerify *verify, GTask *task);

/* "not signed by a trusted CA, expired" for certificate errors (never empty). */
char *_gt_tls_describe_cert_errors (GTlsCertificateFlags flags);

G_END_DECLS
