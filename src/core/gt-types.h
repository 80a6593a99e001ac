/* gt-types.h: small enums and the two tables (listeners, tunnel schemes) every layer shares. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* What a service carries; the numbers are also its value on the wire (HELLO, docs/protocol.md). */
typedef enum
{
  GT_SERVICE_KIND_HTTP = 0,
  GT_SERVICE_KIND_HTTPS = 1,
  GT_SERVICE_KIND_TCP = 2,
  /* Not a service: the only entry of a node-to-node tunnel's HELLO (docs/scale-out.md). */
  GT_SERVICE_KIND_NODE = 3,
  /* UDP datagrams on a server port (needs GT_CAP_DATAGRAM, docs/protocol.md §6.12). */
  GT_SERVICE_KIND_UDP = 4,
} GtServiceKind;

/* The server's listening sockets. Every listener also recognises tunnels (docs/protocol.md). */
typedef enum
{
  GT_LISTENER_PLAIN, /* addr: tunnels (tcp://, ws://), HTTP routed by Host */
  GT_LISTENER_TLS,   /* tlsAddr: the same after TLS termination (tls://, wss://, HTTPS by Host) */
  GT_LISTENER_SNI,   /* sniAddr: TLS pass-through routed by SNI */
  GT_LISTENER_QUIC,  /* quicAddr (UDP): quic:// tunnels */
  GT_N_LISTENERS
} GtListenerKind;

typedef struct
{
  GtListenerKind kind;
  const char *key;      /* config key under options: and command-line option name */
  gsize config_offset;  /* offset of its char * address in GtServerConfig */
  gboolean terminates_tls; /* needs the server certificate (certFile/keyFile or generated) */
  gboolean datagram;       /* a UDP socket (its address may equal a TCP listener's) */
} GtListenerInfo;

/* All listeners in a fixed order (index = GtListenerKind). The config loader, the server and the
 * manager's socket hand-over walk this table; a new listener is one row here. */
const GtListenerInfo *gt_listener_info (GtListenerKind kind);
const GtListenerInfo *gt_listener_info_lookup (const char *key);
/* The address of listener kind in a GtServerConfig (NULL = not configured). */
const char *gt_listener_get_addr (const void *server_config, GtListenerKind kind);

/* Tunnel schemes a client may name in `remote`. */
typedef struct
{
  const char *scheme;       /* "tcp", "tls", "ws", "wss", "quic" */
  GtListenerKind listener;  /* the server listener that accepts it */
  gboolean secure;          /* TLS: remoteCert / remoteCertInsecure apply */
  gboolean has_path;        /* URL path is meaningful (WebSocket) */
  guint16 default_port;     /* when the URL has none */
} GtSchemeInfo;

/* NULL when the scheme is not a tunnel transport gt knows. */
const GtSchemeInfo *gt_scheme_info_lookup (const char *scheme);
/* NULL-terminated list of the scheme names, for messages ("tcp, tls, ws, wss"). */
const char *const *gt_scheme_names (void);

/* Traffic of one running server or client, as the control APIs (D-Bus, web admin) show it. */
typedef struct
{
  guint tunnels;         /* tunnel connections open */
  guint streams;         /* streams open now */
  guint64 streams_total; /* streams opened since the start */
  guint64 bytes_in;      /* bytes toward the services (users to server, tunnel to client) */
  guint64 bytes_out;     /* bytes back toward the users */
} GtTraffic;

G_END_DECLS
