/* gt-server-private.h: what the parts of the server (object, listener, metrics) share. */
#pragma once

#include "gt-auth-api.h"
#include "gt-lockout.h"
#include "gt-port-pool.h"
#include "gt-proxy-protocol.h"
#include "gt-server.h"
#include "gt-server-cluster.h"
#include "gt-server-registry.h"
#include "gt-server-session.h"
#include "gt-transport.h"

G_BEGIN_DECLS

/* Traffic and refusal counters for the metrics; they outlive the sessions. */
struct _GtServerCounters
{
  GHashTable *user_traffic;       /* id → GtServerTraffic* of finished streams */
  GHashTable *service_traffic;    /* "id\x1flabel" → GtServerTraffic* */
  GHashTable *handshake_failures; /* "user\x1freason" → guint64* */
  GHashTable *limit_rejections;   /* "user\x1fkind" → guint64* */
  /* udp services (gt-server-udp.c): datagrams from users to the tunnels, from the tunnels to
   * users, and dropped (a full tunnel, a send error, too large); flows started */
  guint64 udp_in, udp_out, udp_dropped, udp_flows;
};

struct _GtServer
{
  GObject parent_instance;

  GtServerConfig *config;
  GPtrArray *listeners;     /* listening sockets (gt-server-listener.c) */
  char *listen_address;     /* first plain or TLS listener */
  GInetAddress *listen_inet;
  GTlsCertificate *certificate;
  GtCidrList *trusted_proxies;

  GtServerRegistry *registry; /* connected clients and their routes */
  GHashTable *pending;        /* connections still being sniffed (gt-server-listener.c) */
  GtPortPool *global_pool;
  GHashTable *user_pools;     /* id → GtPortPool* */
  GtPortPool *udp_pool;       /* udpRanges: every user's udp services */
  GHashTable *ephemeral;      /* id → secret */
  GPtrArray *draining;        /* GtMux* of replaced clients finishing their streams */
  GtLockout *lockout;
  GtAuthApi *auth_api;        /* NULL without authAPI */
  GtCluster *cluster;         /* NULL without cluster: (docs/scale-out.md) */
  GtServerCounters counters;
  GHashTable *forward_links;  /* GtMuxStream* → the other hop of a FORWARD (a reference) */
  guint drain_id;
  gint64 drain_started;
  gint64 drain_deadline;
  gboolean moving;          /* draining, and the clients were told to move (GOAWAY) */
  gint64 started_at;
  GPtrArray *route_waiters; /* pending connections waiting for a client (startup grace) */
  guint route_wait_id;
  GBytes *bad_gateway;
  gboolean stopped;
  /* Connections before their handshake or request head (gt-server-listener.c) */
  GHashTable *pending_by_address; /* per source address (maxPendingPerAddress) */
  gsize pending_bytes;            /* their buffers, for the trim after a burst */
  gsize pending_bytes_peak;
  gint64 pending_refused_logged_at;
  guint pending_refused;          /* closed at once since the last log line */
};

/* gt-server.c */
/* Authenticates a HELLO and returns the session to attach the tunnel to (not a new reference), or
 * NULL with *code and maybe *message. */
GtServerSession *_gt_server_accept_hello (GtServer *server, const GtHello *hello,
                                          gboolean authenticated, char **allowed,
                                          GtErrorCode *code, char **message);
/* A HELLO of the status self-test's ephemeral user with its secret: not subject to the lockout
 * of its address (loopback, shared with real clients). */
gboolean _gt_server_is_ephemeral_login (GtServer *server, const GtHello *hello);
/* A new tunnel of session: WELCOME is sent and the tunnel started. has_caps: the HELLO had
 * GT_FRAME_FLAG_CAPS, with caps. */
void _gt_server_attach_tunnel (GtServer *server, GtServerSession *session, GtMux *mux,
                               gboolean has_caps, guint32 caps);

/* gt-server-forward.c */
/* Watches a new tunnel's streams for the FORWARD relay; with forward (GT_CAP_FORWARD accepted)
 * its client may open FORWARD streams. */
void _gt_server_forward_watch (GtServer *server, GtServerSession *session, GtMux *mux,
                               gboolean forward);
GHashTable *_gt_server_forward_links_new (void);
/* Removes a session that never got a tunnel. */
void _gt_server_drop_session (GtServer *server, GtServerSession *session);

/* gt-server-listener.c */
GPtrArray *_gt_server_listeners_new (void);
GHashTable *_gt_server_pending_new (void);
/* Loads the certificate when a listener terminates TLS, then opens every configured listener. */
gboolean _gt_server_open_listeners (GtServer *server, GError **error);
/* Stops a listener taking new connections; FALSE when it can simply be freed (a TCP listener),
 * TRUE when it stays for the tunnels on its socket (quicAddr). */
gboolean _gt_server_listener_stop_accepting (gpointer listener);
char *_gt_server_http_reply (guint status, const char *reason, const char *body);
/* Cluster: a connection that came over a node tunnel, sniffed and routed like a user's. */
void _gt_server_adopt_node_stream (GtServer *server, int fd, GtListenerKind kind,
                                   const GtOpenAddr *addr);
/* How many bytes a new connection's buffer may hold, given what arrived (buf, len): a HELLO only
 * as long as its frame header says, an HTTP head or ClientHello up to its limit (+1 to tell). */
gsize _gt_server_pending_buffer_limit (GtListenerKind kind, const guint8 *buf, gsize len);

/* gt-server-udp.c */
/* Binds the server port of one tcp or udp service: svc's remote_port first, then (with
 * remote_random) up to 7 random ports of pool, each taken from the pool while tried. Returns the
 * fd and *port_out, or -1 with *message for the peer (kind names the port, e.g. "udp port";
 * range the pool, e.g. "udpRanges"). */
typedef int (*GtServerBindFunc) (GInetAddress *address, guint16 port, GError **error);
int _gt_server_bind_service_port (const GtHelloService *svc, GtPortPool *pool,
                                  GtServerBindFunc bind_fn, GInetAddress *listen_inet,
                                  const char *kind, const char *range, guint16 *port_out,
                                  char **message);
GtErrorCode _gt_server_session_open_udp (GtServerSession *s, guint16 index,
                                         const GtHelloService *svc, GtPortPool *pool,
                                         GInetAddress *listen_inet, char **message);
void _gt_server_udp_port_free (GtServerUdpPort *port);
gboolean _gt_server_session_holds_udp_port (GtServerSession *s, GtPortPool *pool, guint16 port);
/* A new tunnel of a session with udp ports: the replies of its flows arrive on it. */
void _gt_server_session_udp_attach (GtServerSession *s, GtMux *mux);

/* gt-server-metrics.c */
void _gt_server_counters_init (GtServerCounters *counters);
void _gt_server_counters_clear (GtServerCounters *counters);
/* A finished stream of session. */
void _gt_server_counters_add (GtServerCounters *counters, GtServerSession *session,
                              GtMuxStream *stream);
/* Bytes of the finished streams of user id (all users when NULL). */
void _gt_server_counters_get_user_traffic (GtServerCounters *counters, const char *id,
                                           guint64 *bytes_in, guint64 *bytes_out);
/* A refused tunnel handshake (reason label), counted as a limit rejection too when a limit
 * refused it. id may be NULL. */
void _gt_server_count_refusal (GtServer *server, const char *id, GtErrorCode code);
void _gt_server_count_handshake_failure (GtServer *server, const char *id, const char *reason);

G_END_DECLS
