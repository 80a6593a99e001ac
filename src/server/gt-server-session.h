/* gt-server-session.h: one connected client: its tunnels, routes, tcp ports and limits. */
#pragma once

#include <gio/gio.h>
#include "gt-frame.h"
#include "gt-limits.h"
#include "gt-mux.h"
#include "gt-port-pool.h"

G_BEGIN_DECLS

#define GT_TYPE_SERVER_SESSION (gt_server_session_get_type ())
G_DECLARE_FINAL_TYPE (GtServerSession, gt_server_session, GT, SERVER_SESSION, GObject)

typedef struct _GtServerRegistry GtServerRegistry;
typedef struct _GtServerCounters GtServerCounters;
typedef struct _GtServerTcpPort GtServerTcpPort;
typedef struct _GtServerUdpPort GtServerUdpPort;

/* A host prefix (http by Host, https by SNI) of one session's service. */
typedef struct
{
  GtServerSession *session; /* the session owns the route */
  guint16 service_index;
  GtServiceKind kind;
  char *key; /* the prefix it is registered under (host.withID applied) */
} GtServerRoute;

/* The fields are read by the server's parts; they change only through the functions below. */
struct _GtServerSession
{
  GObject parent_instance;

  char *id;
  char *checksum;             /* identifies the service set */
  char *secret;               /* allow-any mode only: the first secret wins while connected */
  GtLimits limits;
  GtMuxRate *rate;            /* speed limit shared by its tunnels, NULL = unlimited */
  gboolean ephemeral;         /* the status self-test: kept out of the metrics */
  guint64 timeout_ms;         /* stream open timeout for its tcp users */
  GtServerCounters *counters; /* traffic of finished streams (borrowed, may be NULL) */
  GPtrArray *service_labels;  /* char* per service index, for metrics */
  GPtrArray *tunnels;         /* GtMux* (owned) */
  GPtrArray *routes;          /* GtServerRoute* (owned), registered in the registry */
  GPtrArray *tcp_ports;       /* GtServerTcpPort* (owned) */
  GArray *ports;              /* GtWelcomePort, announced in WELCOME */
  GPtrArray *udp_ports;       /* GtServerUdpPort* (owned, gt-server-udp.c) */
  GHashTable *udp_flows;      /* flow id → its flow (owned by its port) */
  GtPortPool *udp_pool;       /* udpRanges (borrowed from the server), NULL = none */
  guint64 udp_timeout_ms;     /* udpTimeout */
  guint udp_timer_id;         /* forgets idle flows */
  guint8 *udp_buf;            /* receive buffer of its udp ports */
};

/* Most flows (user sources) a udp port keeps; the least recently active goes first. */
#define GT_SERVER_UDP_MAX_FLOWS 1024

/* Signals: "tunnel-closed" (GtMux *mux) after each tunnel that closed on its own; "closed" when
 * the last one did: the session has no way left to reach its client. */
GtServerSession *gt_server_session_new (const char *id, const char *checksum,
                                        const GtLimits *limits, gboolean ephemeral);
void gt_server_session_set_secret (GtServerSession *session, const char *secret);
void gt_server_session_set_counters (GtServerSession *session, GtServerCounters *counters,
                                     guint64 timeout_ms);
/* Where udp services take their ports (before check and register), and how long an idle flow
 * is kept. */
void gt_server_session_set_udp (GtServerSession *session, GtPortPool *udp_pool,
                                guint64 udp_timeout_ms);
/* Whether port is one of its udp ports (rather than a tcp port). */
gboolean gt_server_session_has_udp_port (GtServerSession *session, guint16 port);
/* Flows its udp ports keep now. */
guint gt_server_session_get_n_udp_flows (GtServerSession *session);

/* Registers the services of a HELLO: routes in registry, tcp ports from pool bound on
 * listen_inet. allowed: the prefixes the auth API allowed (NULL = no auth API). Returns
 * GT_ERROR_CODE_NONE, else the refusal (the caller removes the session: nothing stays). */
GtErrorCode gt_server_session_register (GtServerSession *session, GtServerRegistry *registry,
                                        const GtHello *hello, char **allowed, GtPortPool *pool,
                                        GInetAddress *listen_inet, char **message);

/* What register would answer, without taking anything: limits, host routes (those of replacing,
 * which may be NULL, count as free) and fixed tcp ports. A client that replaces another is
 * checked first so that a refused HELLO leaves the connected client alone. */
GtErrorCode gt_server_session_check (GtServerSession *session, GtServerRegistry *registry,
                                     const GtHello *hello, char **allowed, GtPortPool *pool,
                                     GtServerSession *replacing, char **message);

/* How long a tunnel has to answer a probe (at most the server's `timeout`). */
#define GT_SERVER_SESSION_PROBE_MS 10000

/* Adds a tunnel; the session's other tunnels are probed (gt_mux_probe()). */
void gt_server_session_add_tunnel (GtServerSession *session, GtMux *mux);
/* Probes every tunnel: those that stay silent for GT_SERVER_SESSION_PROBE_MS (or `timeout`)
 * after a PING are closed. */
void gt_server_session_probe_tunnels (GtServerSession *session);
/* The open tunnel with the fewest streams, those still waiting for the answer to a probe last;
 * NULL when none can take a new stream. */
GtMux *gt_server_session_pick_tunnel (GtServerSession *session);
guint gt_server_session_get_n_tunnels (GtServerSession *session);
guint gt_server_session_get_n_streams (GtServerSession *session);
void gt_server_session_close_tunnels (GtServerSession *session, GtErrorCode code,
                                      const char *message);
/* Sends GOAWAY on every tunnel; the tunnels stay until they close. */
void gt_server_session_goaway (GtServerSession *session, GtErrorCode code, const char *message);
/* A newer client took over: tunnels get GOAWAY, idle ones close now, busy ones (still carrying
 * streams) are added to busy (a reference each) to finish. The session no longer watches them. */
void gt_server_session_retire (GtServerSession *session, GPtrArray *busy);
/* Closes the tcp and udp ports (and gives them back to their pools) now. */
void gt_server_session_close_ports (GtServerSession *session);
/* Resets http streams idle for idle_us (draining: keep-alive between requests). */
void gt_server_session_reset_idle_http_streams (GtServerSession *session, gint64 idle_us);

G_END_DECLS
