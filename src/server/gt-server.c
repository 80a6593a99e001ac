/* gt-server.c: accepts tunnels and user traffic on one port, routes users to clients' services. */
#include "config.h"

#define G_LOG_DOMAIN "gt-server"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-fd-source.h"
#include "gt-frame.h"
#include "gt-http.h"
#include "gt-mux.h"
#include "gt-auth-api.h"
#include "gt-certificate.h"
#include "gt-lockout.h"
#include "gt-metrics.h"
#include "gt-port-pool.h"
#include "gt-proxy-protocol.h"
#include "gt-server.h"
#include "gt-systemd.h"
#include "gt-tls-sniff.h"
#include "gt-transport.h"
#include "gt-ws-stream.h"

/* The handshake never needs more than this many bytes. */
#define HANDSHAKE_MAX (GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE + GT_FRAME_MAX_CONTROL)
#define SNIFF_CHUNK 4096
/* Largest ClientHello accepted on the SNI listener. */
#define GT_SNIFF_TLS_MAX (16 * 1024)
#define PROXY_HEADER_MAX 536
/* Draining closes HTTP streams idle for this long (keep-alive between requests). */
#define DRAIN_IDLE_HTTP_US (1 * G_USEC_PER_SEC)
/* Right after start (a restart or upgrade) clients are still moving their tunnels over: a request
 * for an unknown host waits this long for its client before it gets a 404 / alert. */
#define STARTUP_GRACE_US (5 * G_USEC_PER_SEC)
/* A replaced client's service set is refused for this long so two clients sharing an id with
 * different configs do not push each other out forever. */
#define RETIRED_CONFIG_US (60 * G_USEC_PER_SEC)

typedef struct _Client Client;

typedef struct
{
  Client *client;
  guint16 service_index;
  guint16 port;
  GtPortPool *pool; /* not owned */
  int fd;
  GSource *source;
} TcpListener;

typedef struct
{
  Client *client;
  guint16 service_index;
  GtServiceKind kind;
} Route;

/* Limits in force for one client: its user's values, else the global ones. */
typedef struct
{
  guint connections;
  guint tcp_number;
  guint64 speed;
  guint host_number;
  char **host_regex; /* borrowed from the config */
  gboolean host_with_id;
} Limits;

/* Traffic of finished streams, per user and per service (metrics). */
typedef struct
{
  guint64 bytes_in;  /* from users toward the service */
  guint64 bytes_out; /* from the service back to users */
  guint64 streams;
} Traffic;

struct _Client
{
  GtServer *server;
  char *id;
  Limits limits;
  GtMuxRate *rate;   /* speed limit shared by its tunnels, NULL = unlimited */
  gboolean ephemeral; /* the status self-test: kept out of the metrics */
  GPtrArray *service_labels; /* char* per service index, for metrics */
  char *secret;      /* allow-any mode only: the first secret wins while connected */
  char *checksum;    /* identifies the service set */
  GPtrArray *tunnels; /* GtMux* (owned) */
  GPtrArray *routes;  /* Route* registered in http_routes (owned), keys in prefixes */
  GPtrArray *prefixes;
  GPtrArray *listeners; /* TcpListener* */
  GArray *ports;        /* GtWelcomePort */
};

typedef enum
{
  LISTENER_PLAIN, /* addr: tunnels, HTTP by Host, WebSocket tunnels */
  LISTENER_TLS,   /* tlsAddr: the same after TLS termination */
  LISTENER_SNI,   /* sniAddr: TLS pass-through routed by SNI */
} ListenerKind;

typedef struct
{
  GtServer *server;
  ListenerKind kind;
  int fd;
  GSource *source;
  char *address;
} Listener;

typedef struct
{
  GtServer *server;
  ListenerKind kind;
  int fd;            /* raw socket until TLS or WebSocket wrap it */
  GIOStream *io;     /* TLS connection or WebSocket tunnel stream */
  GSource *source;   /* fd watch */
  GSource *io_source;
  GCancellable *cancellable;
  guint timeout_id;
  guint8 *buf;
  gsize len;
  gsize cap;
  char *peer;        /* real user address (after a PROXY header) */
  GInetSocketAddress *peer_addr;
  GInetSocketAddress *local_addr;
  gboolean trusted;  /* from a trusted proxy: a PROXY header comes first */
  gboolean ws;       /* inside a WebSocket: only a tunnel handshake may follow */
  gboolean waiting_route; /* no client for it yet, but the server just started */
  GtHello *hello;    /* while the auth API answers */
  gsize consumed;
} Pending;

struct _GtServer
{
  GObject parent_instance;

  GtServerConfig *config;
  GPtrArray *listeners;    /* Listener* */
  char *listen_address;    /* first plain or TLS listener */
  GInetAddress *listen_inet;
  GTlsCertificate *certificate;
  GtCidrList *trusted_proxies;

  GHashTable *clients;     /* id → Client* */
  GHashTable *http_routes; /* prefix → Route* (owned by the client) */
  GHashTable *https_routes; /* prefix → Route* of https services (SNI) */
  GHashTable *pending;     /* Pending* set */
  GHashTable *retired;     /* "id\nchecksum" → expiry (gint64*) */
  GtPortPool *global_pool;
  GHashTable *user_pools;  /* id → GtPortPool* */
  GHashTable *ephemeral;   /* id → secret */
  GPtrArray *draining;     /* GtMux* of replaced clients finishing their streams */
  GtLockout *lockout;
  SoupSession *auth_session;
  GHashTable *user_traffic;     /* id → Traffic* */
  GHashTable *service_traffic;  /* "id\x1flabel" → Traffic* */
  GHashTable *handshake_failures; /* "user\x1freason" → guint64* */
  GHashTable *limit_rejections;   /* "user\x1fkind" → guint64* */
  guint drain_id;
  gint64 drain_deadline;
  gint64 started_at;
  GPtrArray *route_waiters; /* Pending* waiting for a client to register (startup grace) */
  guint route_wait_id;
  GBytes *bad_gateway;
  gboolean stopped;
};

enum
{
  PROP_0,
  PROP_LISTEN_ADDRESS,
  PROP_N_CLIENTS,
  PROP_N_TUNNELS,
  N_PROPS
};

enum
{
  SIGNAL_CLIENT_CONNECTED,
  SIGNAL_CLIENT_DISCONNECTED,
  SIGNAL_DRAINED,
  N_SIGNALS
};

static GParamSpec *properties[N_PROPS];
static guint signals[N_SIGNALS];

G_DEFINE_FINAL_TYPE (GtServer, gt_server, G_TYPE_OBJECT)

/* ------------------------------------------------------------------------------------------ */
/* Helpers */

static gboolean
secure_equal (const char *a, const char *b)
{
  gsize la = strlen (a), lb = strlen (b);
  guint8 diff = la != lb;

  /* Compare over the length of the expected secret regardless of where they differ. */
  for (gsize i = 0; i < lb; i++)
    diff |= (guint8) (b[i] ^ (i < la ? a[i] : 0));
  return diff == 0;
}

static char *
http_reply (guint status, const char *reason, const char *body)
{
  return g_strdup_printf ("HTTP/1.1 %u %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                          status, reason, strlen (body), body);
}

static void
notify_counts (GtServer *server)
{
  g_object_notify_by_pspec (G_OBJECT (server), properties[PROP_N_CLIENTS]);
  g_object_notify_by_pspec (G_OBJECT (server), properties[PROP_N_TUNNELS]);
}

/* ------------------------------------------------------------------------------------------ */
/* Clients */

static void
tcp_listener_free (TcpListener *l)
{
  gt_fd_source_free (l->source);
  if (l->fd >= 0)
    close (l->fd);
  if (l->pool)
    gt_port_pool_release (l->pool, l->port);
  g_free (l);
}

static void client_tunnel_closed_cb (GtMux *mux, GError *error, gpointer user_data);

static void
client_free (Client *c)
{
  GtServer *server = c->server;

  for (guint i = 0; i < c->routes->len; i++)
    {
      Route *route = c->routes->pdata[i];
      GHashTable *table = route->kind == GT_SERVICE_KIND_HTTPS ? server->https_routes
                                                                : server->http_routes;
      Route *r = g_hash_table_lookup (table, c->prefixes->pdata[i]);

      if (r == route)
        g_hash_table_remove (table, c->prefixes->pdata[i]);
    }
  for (guint i = 0; i < c->tunnels->len; i++)
    g_signal_handlers_disconnect_by_data (c->tunnels->pdata[i], c);
  g_ptr_array_unref (c->tunnels);
  g_ptr_array_unref (c->listeners);
  g_ptr_array_unref (c->routes);
  g_ptr_array_unref (c->prefixes);
  g_array_unref (c->ports);
  g_ptr_array_unref (c->service_labels);
  g_clear_pointer (&c->rate, g_rc_box_release);
  g_free (c->checksum);
  if (c->secret)
    {
      memset (c->secret, 0, strlen (c->secret));
      g_free (c->secret);
    }
  g_free (c->id);
  g_free (c);
}

static void
client_close_tunnels (Client *c, GtErrorCode code, const char *message)
{
  g_autoptr (GPtrArray) tunnels = g_ptr_array_new_with_free_func (g_object_unref);

  for (guint i = 0; i < c->tunnels->len; i++)
    g_ptr_array_add (tunnels, g_object_ref (c->tunnels->pdata[i]));
  for (guint i = 0; i < tunnels->len; i++)
    gt_mux_close (tunnels->pdata[i], code, message);
}

/* Removes a client and releases its hosts and ports at once. */
static void
server_remove_client (GtServer *server, Client *c)
{
  g_autofree char *id = g_strdup (c->id);

  g_hash_table_remove (server->clients, c->id); /* frees c */
  g_message ("client %s left; its hosts and ports are released", id);
  g_signal_emit (server, signals[SIGNAL_CLIENT_DISCONNECTED], 0, id);
  notify_counts (server);
}

static void
client_tunnel_closed_cb (GtMux *mux, GError *error, gpointer user_data)
{
  Client *c = user_data;
  GtServer *server = c->server;

  g_message ("tunnel closed: client=%s remote=%s: %s", c->id,
             gt_mux_get_peer (mux) ? gt_mux_get_peer (mux) : "?",
             error ? error->message : "closed");
  g_signal_handlers_disconnect_by_func (mux, client_tunnel_closed_cb, c);
  g_ptr_array_remove (c->tunnels, mux);
  notify_counts (server);
  if (c->tunnels->len == 0)
    server_remove_client (server, c);
}

static GtMux *
client_pick_tunnel (Client *c)
{
  GtMux *best = NULL;
  guint best_n = G_MAXUINT;

  for (guint i = 0; i < c->tunnels->len; i++)
    {
      GtMux *m = c->tunnels->pdata[i];
      guint n;

      if (gt_mux_is_closed (m) || gt_mux_is_going_away (m))
        continue;
      n = gt_mux_get_n_streams (m);
      if (n < best_n)
        {
          best = m;
          best_n = n;
          if (n == 0)
            break;
        }
    }
  return best;
}

/* The user's addresses of an accepted socket, for OPEN. */
static gboolean
fd_open_addr (int fd, GtOpenAddr *out)
{
  struct sockaddr_storage peer, local;
  socklen_t plen = sizeof peer, llen = sizeof local;

  if (getpeername (fd, (struct sockaddr *) &peer, &plen) < 0
      || getsockname (fd, (struct sockaddr *) &local, &llen) < 0
      || peer.ss_family != local.ss_family)
    return FALSE;
  memset (out, 0, sizeof *out);
  if (peer.ss_family == AF_INET)
    {
      const struct sockaddr_in *p = (const struct sockaddr_in *) &peer;
      const struct sockaddr_in *l = (const struct sockaddr_in *) &local;

      out->family = 4;
      memcpy (out->src, &p->sin_addr, 4);
      memcpy (out->dst, &l->sin_addr, 4);
      out->src_port = g_ntohs (p->sin_port);
      out->dst_port = g_ntohs (l->sin_port);
      return TRUE;
    }
  if (peer.ss_family == AF_INET6)
    {
      const struct sockaddr_in6 *p = (const struct sockaddr_in6 *) &peer;
      const struct sockaddr_in6 *l = (const struct sockaddr_in6 *) &local;

      out->family = 6;
      memcpy (out->src, &p->sin6_addr, 16);
      memcpy (out->dst, &l->sin6_addr, 16);
      out->src_port = g_ntohs (p->sin6_port);
      out->dst_port = g_ntohs (l->sin6_port);
      return TRUE;
    }
  return FALSE;
}

static void
tcp_listener_accept_cb (int fd, GIOCondition revents, gpointer user_data)
{
  TcpListener *l = user_data;
  GtServer *server = l->client->server;

  for (int k = 0; k < 64; k++)
    {
      int cfd = accept4 (fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
      GtOpenAddr addr;
      gboolean has_addr;
      GtMux *mux;

      if (cfd < 0)
        {
          if (errno != EAGAIN && errno != EINTR)
            g_warning ("accept on tcp port %u: %s", l->port, g_strerror (errno));
          return;
        }
      mux = client_pick_tunnel (l->client);
      if (mux == NULL)
        {
          close (cfd);
          continue;
        }
      has_addr = fd_open_addr (cfd, &addr);
      gt_mux_open_stream_full (mux, l->service_index, cfd, NULL, NULL, 0,
                               has_addr ? &addr : NULL, NULL, server->config->timeout_ms);
    }
}

static char *
services_checksum (const GtHello *hello)
{
  g_autoptr (GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);

  for (guint i = 0; i < hello->services->len; i++)
    {
      const GtHelloService *s = hello->services->pdata[i];
      g_autofree char *line = g_strdup_printf ("%u|%d|%s|%u|%d\n", i, s->kind,
                                               s->prefix ? s->prefix : "", s->remote_port,
                                               s->remote_random);

      g_checksum_update (sum, (const guchar *) line, -1);
    }
  return g_strdup (g_checksum_get_string (sum));
}

static GtPortPool *
pool_for_user (GtServer *server, const char *id)
{
  GtPortPool *pool = g_hash_table_lookup (server->user_pools, id);

  return pool ? pool : server->global_pool;
}


/* Opens the tcp port of one service; GT_ERROR_CODE_NONE on success. */
static GtErrorCode
client_open_tcp (Client *c, guint16 index, const GtHelloService *svc, char **message)
{
  GtServer *server = c->server;
  GtPortPool *pool = pool_for_user (server, c->id);
  g_autoptr (GArray) tried = g_array_new (FALSE, FALSE, sizeof (guint16));
  g_autoptr (GError) last_error = NULL;

  for (int attempt = 0; attempt < 8; attempt++)
    {
      guint16 port = 0;
      int fd;
      TcpListener *l;
      GtWelcomePort wp;

      if (attempt == 0 && svc->remote_port != 0)
        port = svc->remote_port;
      else if (svc->remote_random)
        port = gt_port_pool_pick_random (pool, tried);
      if (port == 0)
        break;
      g_array_append_val (tried, port);
      if (!gt_port_pool_take (pool, port))
        continue;
      fd = gt_tcp_listen_on (server->listen_inet, port, &last_error);
      if (fd < 0)
        {
          gt_port_pool_release (pool, port);
          continue;
        }
      l = g_new0 (TcpListener, 1);
      l->client = c;
      l->service_index = index;
      l->port = port;
      l->pool = pool;
      l->fd = fd;
      l->source = gt_fd_source_new (fd, G_IO_IN, tcp_listener_accept_cb, l);
      g_ptr_array_add (c->listeners, l);
      wp.service_index = index;
      wp.port = port;
      g_array_append_val (c->ports, wp);
      g_message ("client %s: tcp port %u opened for service %u", c->id, port, index);
      return GT_ERROR_CODE_NONE;
    }
  if (svc->remote_port != 0 && !gt_port_pool_contains (pool, svc->remote_port)
      && !svc->remote_random)
    *message = g_strdup_printf ("port %u is not in the server's tcp range for this user",
                                svc->remote_port);
  else if (svc->remote_port != 0 && !svc->remote_random)
    *message = g_strdup_printf ("port %u is not available%s%s", svc->remote_port,
                                last_error ? ": " : "", last_error ? last_error->message : "");
  else
    *message = g_strdup ("no free port in the server's tcp range for this user");
  return GT_ERROR_CODE_PORT_UNAVAILABLE;
}

static void
count_in (GHashTable *table, const char *user, const char *what)
{
  g_autofree char *key = g_strdup_printf ("%s\x1f%s", user, what);
  guint64 *n = g_hash_table_lookup (table, key);

  if (n == NULL)
    {
      n = g_new0 (guint64, 1);
      g_hash_table_insert (table, g_steal_pointer (&key), n);
    }
  (*n)++;
}

/* Failures are labelled with the user only for configured users: client-chosen ids must not
 * grow the metrics without bound. */
static void
count_handshake_failure (GtServer *server, const char *id, const char *reason)
{
  const char *user = id && gt_server_config_find_user (server->config, id) ? id : "";

  count_in (server->handshake_failures, user, reason);
}

static void
count_limit_rejection (GtServer *server, const char *id, const char *kind)
{
  const char *user = id && gt_server_config_find_user (server->config, id) ? id : "";

  count_in (server->limit_rejections, user, kind);
}

static Traffic *
traffic_get (GHashTable *table, const char *key)
{
  Traffic *t = g_hash_table_lookup (table, key);

  if (t == NULL)
    {
      t = g_new0 (Traffic, 1);
      g_hash_table_insert (table, g_strdup (key), t);
    }
  return t;
}

static void
client_stream_closed_cb (GtMux *mux, GtMuxStream *stream, gpointer user_data)
{
  Client *c = user_data;
  GtServer *server = c->server;
  guint index = gt_mux_stream_get_service_index (stream);
  guint64 in = gt_mux_stream_get_bytes_from_socket (stream);
  guint64 out = gt_mux_stream_get_bytes_to_socket (stream);
  Traffic *t;

  if (c->ephemeral)
    return;
  t = traffic_get (server->user_traffic, c->id);

  t->bytes_in += in;
  t->bytes_out += out;
  t->streams++;
  if (index < c->service_labels->len)
    {
      g_autofree char *key = g_strdup_printf ("%s\x1f%s", c->id,
                                              (char *) c->service_labels->pdata[index]);

      t = traffic_get (server->service_traffic, key);
      t->bytes_in += in;
      t->bytes_out += out;
      t->streams++;
    }
}

static void
limits_for_user (GtServer *server, const char *id, Limits *l)
{
  const GtServerConfig *config = server->config;
  const GtUserConfig *u = gt_server_config_find_user (config, id);

  l->connections = config->connections;
  l->tcp_number = config->tcp_number;
  l->speed = config->speed;
  l->host_number = config->host_number;
  l->host_regex = config->host_regex;
  l->host_with_id = config->host_with_id;
  if (u == NULL)
    return;
  if (u->connections > 0)
    l->connections = (guint) u->connections;
  if (u->tcp_number >= 0)
    l->tcp_number = (guint) u->tcp_number;
  if (u->speed > 0)
    l->speed = u->speed;
  if (u->host_number >= 0)
    l->host_number = (guint) u->host_number;
  if (u->host_regex != NULL)
    l->host_regex = u->host_regex;
  if (u->host_with_id >= 0)
    l->host_with_id = u->host_with_id != 0;
}

static gboolean
prefix_matches_regex (char **regex, const char *prefix)
{
  if (regex == NULL || regex[0] == NULL)
    return TRUE;
  for (guint i = 0; regex[i] != NULL; i++)
    if (g_regex_match_simple (regex[i], prefix, 0, 0))
      return TRUE;
  return FALSE;
}

/* Registers the services of a new client; on error nothing stays registered. */
static GtErrorCode
client_register (Client *c, const GtHello *hello, char **allowed, char **message)
{
  GtServer *server = c->server;
  guint n_tcp = 0, n_hosts = 0;
  guint tcp_limit = c->limits.tcp_number;

  if (hello->services->len > server->config->max_handshake_options)
    {
      *message = g_strdup_printf ("%u services exceed the limit of %u", hello->services->len,
                                  server->config->max_handshake_options);
      return GT_ERROR_CODE_TOO_MANY_OPTIONS;
    }
  for (guint i = 0; i < hello->services->len; i++)
    if (((GtHelloService *) hello->services->pdata[i])->kind == GT_SERVICE_KIND_TCP)
      n_tcp++;
  if (tcp_limit > 0 && n_tcp > tcp_limit)
    {
      *message = g_strdup_printf ("%u tcp services exceed the limit of %u", n_tcp, tcp_limit);
      return GT_ERROR_CODE_TCP_NUMBER;
    }

  for (guint i = 0; i < hello->services->len; i++)
    {
      const GtHelloService *s = hello->services->pdata[i];

      if (s->kind == GT_SERVICE_KIND_HTTP || s->kind == GT_SERVICE_KIND_HTTPS)
        {
          GHashTable *table = s->kind == GT_SERVICE_KIND_HTTPS ? server->https_routes
                                                                : server->http_routes;
          gboolean own_id = g_ascii_strcasecmp (s->prefix, c->id) == 0;
          g_autofree char *key = NULL;
          Route *existing;
          Route *r;

          if (allowed != NULL && !own_id && !g_strv_contains ((const char *const *) allowed,
                                                              s->prefix))
            {
              g_message ("client %s: host prefix '%s' is not allowed by the auth API; ignored",
                         c->id, s->prefix);
              g_ptr_array_add (c->service_labels, g_strdup_printf ("%s (refused)", s->prefix));
              continue;
            }
          if (!own_id && !prefix_matches_regex (c->limits.host_regex, s->prefix))
            {
              *message = g_strdup_printf ("host prefix '%s' does not match the allowed patterns",
                                          s->prefix);
              return GT_ERROR_CODE_HOST_REGEX;
            }
          if (c->limits.host_number > 0 && ++n_hosts > c->limits.host_number)
            {
              *message = g_strdup_printf ("more than %u host prefixes", c->limits.host_number);
              return GT_ERROR_CODE_HOST_NUMBER;
            }
          key = c->limits.host_with_id && !own_id
                  ? g_ascii_strdown (c->id, -1)
                  : NULL;
          if (key != NULL)
            {
              char *with_id = g_strdup_printf ("%s-%s", key, s->prefix);

              g_free (key);
              key = with_id;
            }
          else
            key = g_strdup (s->prefix);
          g_ptr_array_add (c->service_labels, g_strdup (key));

          existing = g_hash_table_lookup (table, key);
          if (existing != NULL && existing->client != c)
            {
              *message = g_strdup_printf ("host prefix '%s' is used by another client", key);
              return GT_ERROR_CODE_HOST_CONFLICT;
            }
          if (existing != NULL)
            {
              *message = g_strdup_printf ("host prefix '%s' is given twice", key);
              return GT_ERROR_CODE_HOST_CONFLICT;
            }
          r = g_new0 (Route, 1);
          r->client = c;
          r->service_index = (guint16) i;
          r->kind = s->kind;
          g_ptr_array_add (c->routes, r);
          g_ptr_array_add (c->prefixes, g_strdup (key));
          g_hash_table_insert (table, g_steal_pointer (&key), r);
        }
      else
        {
          GtErrorCode code = client_open_tcp (c, (guint16) i, s, message);

          if (code != GT_ERROR_CODE_NONE)
            return code;
          g_ptr_array_add (c->service_labels,
                           g_strdup_printf ("tcp:%u", g_array_index (c->ports, GtWelcomePort,
                                                                     c->ports->len - 1).port));
        }
    }
  return GT_ERROR_CODE_NONE;
}

static void
draining_closed_cb (GtMux *mux, GError *error, gpointer user_data)
{
  GtServer *server = user_data;

  g_signal_handlers_disconnect_by_data (mux, server);
  g_ptr_array_remove (server->draining, mux);
}

/* A newer client took over this id: its routes and ports go at once, its tunnels get GOAWAY and
 * finish the streams they carry. */
static void
client_retire (Client *c)
{
  GtServer *server = c->server;

  for (guint i = 0; i < c->tunnels->len; i++)
    {
      GtMux *mux = c->tunnels->pdata[i];

      g_signal_handlers_disconnect_by_data (mux, c);
      if (gt_mux_is_closed (mux))
        continue;
      gt_mux_goaway (mux, GT_ERROR_CODE_CONFIG_CONFLICT,
                     "replaced by a client with a different config");
      if (gt_mux_get_n_streams (mux) == 0)
        {
          gt_mux_close (mux, GT_ERROR_CODE_NONE, NULL);
          continue;
        }
      g_ptr_array_add (server->draining, g_object_ref (mux));
      g_signal_connect (mux, "closed", G_CALLBACK (draining_closed_cb), server);
    }
  server_remove_client (server, c);
}

static gboolean
retired_config (GtServer *server, const char *id, const char *checksum)
{
  g_autofree char *key = g_strdup_printf ("%s\n%s", id, checksum);
  gint64 *expiry = g_hash_table_lookup (server->retired, key);

  if (expiry == NULL)
    return FALSE;
  if (*expiry < g_get_monotonic_time ())
    {
      g_hash_table_remove (server->retired, key);
      return FALSE;
    }
  return TRUE;
}

/* Authenticates a HELLO and attaches the tunnel; returns the client or NULL with code/message. */
static Client *
server_accept_hello (GtServer *server, const GtHello *hello, gboolean authenticated,
                     char **allowed, GtErrorCode *code, char **message)
{
  const GtUserConfig *user = gt_server_config_find_user (server->config, hello->id);
  gboolean allow_any = server->config->users->len == 0 || server->config->allow_any_client;
  g_autofree char *checksum = services_checksum (hello);
  Client *c = g_hash_table_lookup (server->clients, hello->id);

  const char *ephemeral = g_hash_table_lookup (server->ephemeral, hello->id);

  if (authenticated)
    ; /* the auth API said yes */
  else if (ephemeral != NULL)
    {
      if (!secure_equal (hello->secret, ephemeral))
        {
          *code = GT_ERROR_CODE_INVALID_AUTH;
          return NULL;
        }
    }
  else if (user != NULL)
    {
      if (!secure_equal (hello->secret, user->secret))
        {
          *code = GT_ERROR_CODE_INVALID_AUTH;
          return NULL;
        }
    }
  else if (!allow_any)
    {
      *code = GT_ERROR_CODE_INVALID_AUTH;
      return NULL;
    }
  else if (c != NULL && c->secret != NULL && !secure_equal (hello->secret, c->secret))
    {
      *code = GT_ERROR_CODE_INVALID_AUTH;
      return NULL;
    }

  if (retired_config (server, hello->id, checksum))
    {
      *code = GT_ERROR_CODE_CONFIG_CONFLICT;
      *message = g_strdup ("this service set was replaced by a newer client less than 60 s ago");
      return NULL;
    }

  if (c != NULL && g_strcmp0 (c->checksum, checksum) != 0)
    {
      /* The newest config wins (a client restarted with new services). */
      g_autofree char *key = g_strdup_printf ("%s\n%s", c->id, c->checksum);
      gint64 *expiry = g_new (gint64, 1);

      *expiry = g_get_monotonic_time () + RETIRED_CONFIG_US;
      g_hash_table_replace (server->retired, g_steal_pointer (&key), expiry);
      g_message ("client %s connected with a different service set; the old tunnels finish "
                 "their streams and get no new ones",
                 hello->id);
      client_retire (c);
      c = NULL;
    }

  if (c != NULL)
    {
      if (c->tunnels->len >= c->limits.connections)
        {
          *code = GT_ERROR_CODE_TOO_MANY_TUNNELS;
          *message = g_strdup_printf ("client %s already has %u tunnels (limit %u)", c->id,
                                      c->tunnels->len, c->limits.connections);
          return NULL;
        }
      return c;
    }

  c = g_new0 (Client, 1);
  c->server = server;
  c->id = g_strdup (hello->id);
  c->checksum = g_steal_pointer (&checksum);
  if (user == NULL)
    c->secret = g_strdup (hello->secret);
  c->tunnels = g_ptr_array_new_with_free_func (g_object_unref);
  c->routes = g_ptr_array_new_with_free_func (g_free);
  c->prefixes = g_ptr_array_new_with_free_func (g_free);
  c->listeners = g_ptr_array_new_with_free_func ((GDestroyNotify) tcp_listener_free);
  c->ports = g_array_new (FALSE, FALSE, sizeof (GtWelcomePort));
  c->service_labels = g_ptr_array_new_with_free_func (g_free);
  c->ephemeral = ephemeral != NULL;
  limits_for_user (server, c->id, &c->limits);
  if (c->ephemeral)
    {
      /* The status self-test is not a user: no host rules apply to it. */
      c->limits.host_with_id = FALSE;
      c->limits.host_regex = NULL;
      c->limits.host_number = 0;
      c->limits.speed = 0;
    }
  if (c->limits.speed > 0)
    {
      guint64 burst = GT_TOKEN_BUCKET_DEFAULT_BURST (c->limits.speed);

      c->rate = g_rc_box_new0 (GtMuxRate);
      gt_token_bucket_init (&c->rate->to_socket, c->limits.speed, burst);
      gt_token_bucket_init (&c->rate->from_socket, c->limits.speed, burst);
    }
  g_hash_table_insert (server->clients, c->id, c);
  *code = client_register (c, hello, allowed, message);
  if (*code != GT_ERROR_CODE_NONE)
    {
      g_hash_table_remove (server->clients, c->id);
      return NULL;
    }
  g_signal_emit (server, signals[SIGNAL_CLIENT_CONNECTED], 0, c->id);
  return c;
}

/* ------------------------------------------------------------------------------------------ */
/* Pending connections: PROXY header, TLS handshake, then tunnel or user traffic */

static void
pending_free (Pending *p)
{
  if (p->waiting_route)
    g_ptr_array_remove (p->server->route_waiters, p);
  gt_fd_source_free (p->source);
  if (p->io_source)
    {
      g_source_destroy (p->io_source);
      g_source_unref (p->io_source);
    }
  g_clear_handle_id (&p->timeout_id, g_source_remove);
  if (p->cancellable)
    {
      g_cancellable_cancel (p->cancellable);
      g_object_unref (p->cancellable);
    }
  if (p->fd >= 0)
    close (p->fd);
  if (p->io)
    {
      g_io_stream_close_async (p->io, G_PRIORITY_DEFAULT, NULL, NULL, NULL);
      g_object_unref (p->io);
    }
  g_clear_object (&p->peer_addr);
  g_clear_object (&p->local_addr);
  g_clear_pointer (&p->hello, gt_hello_free);
  g_free (p->buf);
  g_free (p->peer);
  g_free (p);
}

static void
pending_drop (Pending *p)
{
  g_hash_table_remove (p->server->pending, p);
}

/* Sends a short reply (HTTP error page, TLS alert, gt ERROR frame) and closes. */
static void
pending_reply_and_close (Pending *p, const guint8 *reply, gsize len)
{
  if (p->fd >= 0)
    {
      int fd = p->fd;

      p->fd = -1;
      gt_socket_reply_and_close (fd, (const char *) reply, len);
    }
  else if (p->io != NULL && len > 0)
    {
      GOutputStream *out = g_io_stream_get_output_stream (p->io);

      if (G_IS_POLLABLE_OUTPUT_STREAM (out))
        (void) g_pollable_output_stream_write_nonblocking (G_POLLABLE_OUTPUT_STREAM (out), reply,
                                                           len, NULL, NULL);
    }
  pending_drop (p);
}

static void
pending_reply_text (Pending *p, const char *text)
{
  pending_reply_and_close (p, (const guint8 *) text, strlen (text));
}

static void
send_handshake_error (Pending *p, GtErrorCode code, const char *message)
{
  g_autoptr (GByteArray) f = g_byte_array_new ();

  gt_frame_append_error (f, GT_FRAME_ERROR, code, message);
  pending_reply_and_close (p, f->data, f->len);
}

/* The user's addresses for OPEN (PROXY protocol out, logs). */
static gboolean
pending_open_addr (Pending *p, GtOpenAddr *out)
{
  GInetAddress *src, *dst;

  if (p->peer_addr == NULL || p->local_addr == NULL)
    return FALSE;
  src = g_inet_socket_address_get_address (p->peer_addr);
  dst = g_inet_socket_address_get_address (p->local_addr);
  if (g_inet_address_get_family (src) != g_inet_address_get_family (dst))
    return FALSE;
  memset (out, 0, sizeof *out);
  out->family = g_inet_address_get_family (src) == G_SOCKET_FAMILY_IPV6 ? 6 : 4;
  memcpy (out->src, g_inet_address_to_bytes (src), g_inet_address_get_native_size (src));
  memcpy (out->dst, g_inet_address_to_bytes (dst), g_inet_address_get_native_size (dst));
  out->src_port = g_inet_socket_address_get_port (p->peer_addr);
  out->dst_port = g_inet_socket_address_get_port (p->local_addr);
  return TRUE;
}

/* Takes the connection out of the pending set: its fd or io now belongs to the caller. */
static void
pending_release (Pending *p, int *fd_out, GIOStream **io_out)
{
  *fd_out = p->fd;
  *io_out = p->io;
  p->fd = -1;
  p->io = NULL;
  pending_drop (p);
}

static const char *
error_code_reason (GtErrorCode code)
{
  switch (code)
    {
    case GT_ERROR_CODE_INVALID_AUTH: return "invalid_auth";
    case GT_ERROR_CODE_PORT_UNAVAILABLE: return "port_unavailable";
    case GT_ERROR_CODE_TOO_MANY_TUNNELS: return "connections";
    case GT_ERROR_CODE_HOST_NUMBER: return "host_number";
    case GT_ERROR_CODE_HOST_CONFLICT: return "host_conflict";
    case GT_ERROR_CODE_HOST_REGEX: return "host_regex";
    case GT_ERROR_CODE_CONFIG_CONFLICT: return "config_conflict";
    case GT_ERROR_CODE_TOO_MANY_OPTIONS: return "max_options";
    case GT_ERROR_CODE_TCP_NUMBER: return "tcp_number";
    case GT_ERROR_CODE_UNSUPPORTED_VERSION: return "version";
    case GT_ERROR_CODE_PROTOCOL: return "protocol";
    default: return "other";
    }
}

static gboolean
is_limit_code (GtErrorCode code)
{
  return code == GT_ERROR_CODE_TOO_MANY_TUNNELS || code == GT_ERROR_CODE_HOST_NUMBER
         || code == GT_ERROR_CODE_HOST_REGEX || code == GT_ERROR_CODE_TOO_MANY_OPTIONS
         || code == GT_ERROR_CODE_TCP_NUMBER || code == GT_ERROR_CODE_PORT_UNAVAILABLE;
}

static char *
pending_ip (Pending *p)
{
  if (p->peer_addr == NULL)
    return g_strdup ("?");
  return g_inet_address_to_string (g_inet_socket_address_get_address (p->peer_addr));
}

static void
pending_refuse (Pending *p, const char *id, GtErrorCode code, const char *message)
{
  GtServer *server = p->server;
  const char *text = message ? message : gt_error_code_to_string (code);

  g_message ("tunnel from %s refused: client=%s: %s", p->peer, id ? id : "?", text);
  count_handshake_failure (server, id, error_code_reason (code));
  if (is_limit_code (code))
    count_limit_rejection (server, id, error_code_reason (code));
  if (code == GT_ERROR_CODE_INVALID_AUTH)
    {
      g_autofree char *ip = pending_ip (p);

      gt_lockout_record_failure (server->lockout, ip, g_get_monotonic_time ());
    }
  send_handshake_error (p, code, text);
}

/* Attaches an accepted handshake to its client and starts the tunnel. */
static void
pending_finish_tunnel (Pending *p, gboolean authenticated, char **allowed)
{
  GtServer *server = p->server;
  g_autoptr (GtHello) hello = g_steal_pointer (&p->hello);
  g_autofree char *message = NULL;
  g_autofree char *peer = g_strdup (p->peer);
  g_autofree char *ip = pending_ip (p);
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) io = NULL;
  g_autoptr (GtMux) mux = NULL;
  g_autoptr (GByteArray) welcome = NULL;
  g_autofree guint8 *rest = NULL;
  GtErrorCode code = GT_ERROR_CODE_NONE;
  gsize rest_len;
  Client *c;
  int fd;

  c = server_accept_hello (server, hello, authenticated, allowed, &code, &message);
  if (c == NULL)
    {
      pending_refuse (p, hello->id, code, message);
      return;
    }
  gt_lockout_record_success (server->lockout, ip);

  /* Keep bytes that followed the HELLO, then hand the connection to a mux. */
  rest = g_memdup2 (p->buf + p->consumed, p->len - p->consumed);
  rest_len = p->len - p->consumed;
  pending_release (p, &fd, &io);
  if (io == NULL)
    {
      io = gt_transport_wrap_fd (fd, &error);
      if (io == NULL)
        {
          g_warning ("cannot wrap tunnel socket: %s", error->message);
          if (c->tunnels->len == 0)
            server_remove_client (server, c);
          return;
        }
    }
  mux = gt_mux_new (io, TRUE, rest, rest_len);
  gt_mux_set_peer (mux, peer);
  gt_mux_set_keepalive (mux, server->config->timeout_ms, 0);
  gt_mux_set_rate (mux, c->rate);
  g_ptr_array_add (c->tunnels, g_object_ref (mux));
  g_signal_connect (mux, "closed", G_CALLBACK (client_tunnel_closed_cb), c);
  g_signal_connect (mux, "stream-closed", G_CALLBACK (client_stream_closed_cb), c);

  welcome = g_byte_array_new ();
  gt_frame_append_welcome (welcome, (const GtWelcomePort *) c->ports->data, c->ports->len);
  gt_mux_send_raw (mux, welcome->data, welcome->len);
  g_message ("tunnel accepted: client=%s remote=%s tunnels=%u", c->id, peer, c->tunnels->len);
  notify_counts (server);
  gt_mux_start (mux);
}

/* The auth request outlives its pending connection when that one is dropped: the cancellable
 * (cancelled by pending_free) tells. */
typedef struct
{
  Pending *p;
  GCancellable *cancellable;
} AuthWait;

static void
pending_auth_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  AuthWait *wait = user_data;
  Pending *p = wait->p;
  g_autoptr (GError) error = NULL;
  g_auto (GStrv) allowed = gt_auth_api_request_finish (result, &error);
  gboolean gone = g_cancellable_is_cancelled (wait->cancellable);

  g_object_unref (wait->cancellable);
  g_free (wait);
  if (gone)
    return;
  if (allowed == NULL)
    {
      g_autofree char *text = NULL;
      GtErrorCode code = GT_ERROR_CODE_INVALID_AUTH;

      if (g_error_matches (error, GT_AUTH_ERROR, GT_AUTH_ERROR_DENIED))
        text = g_strdup ("the auth API refused this id and secret");
      else
        {
          text = g_strdup_printf ("the auth API failed: %s", error->message);
          code = GT_ERROR_CODE_INTERNAL;
        }
      pending_refuse (p, p->hello->id, code, text);
      return;
    }
  pending_finish_tunnel (p, TRUE, allowed);
}

static void
pending_handle_tunnel (Pending *p)
{
  GtServer *server = p->server;
  GtFrameHeader h;
  guint8 version;
  g_autoptr (GError) error = NULL;
  g_autofree char *ip = NULL;
  GtDecodeResult r;
  gsize consumed;

  if (p->hello != NULL)
    return; /* waiting for the auth API */
  r = gt_preface_decode (p->buf, p->len, &version, &error);
  if (r == GT_DECODE_NEED_MORE)
    return;
  if (r == GT_DECODE_ERROR)
    {
      pending_refuse (p, NULL,
                      g_error_matches (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_VERSION)
                        ? GT_ERROR_CODE_UNSUPPORTED_VERSION
                        : GT_ERROR_CODE_PROTOCOL,
                      error->message);
      return;
    }
  r = gt_frame_header_decode (p->buf + GT_PREFACE_SIZE, p->len - GT_PREFACE_SIZE, &h, &error);
  if (r == GT_DECODE_NEED_MORE)
    return;
  if (r == GT_DECODE_OK && h.type != GT_FRAME_HELLO)
    {
      r = GT_DECODE_ERROR;
      error = g_error_new (GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                           "expected HELLO, got %s", gt_frame_type_to_string (h.type));
    }
  if (r == GT_DECODE_ERROR)
    {
      pending_refuse (p, NULL, GT_ERROR_CODE_PROTOCOL, error->message);
      return;
    }
  consumed = GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE + h.length;
  if (p->len < consumed)
    return;

  p->hello = gt_hello_decode (p->buf + GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE, h.length, &error);
  if (p->hello == NULL)
    {
      g_autofree char *text = g_strdup_printf ("bad HELLO: %s", error->message);

      pending_refuse (p, NULL, GT_ERROR_CODE_PROTOCOL, text);
      return;
    }
  p->consumed = consumed;

  /* Too many failed logins from this address: refused without looking at the secret. */
  ip = pending_ip (p);
  if (gt_lockout_is_blocked (server->lockout, ip, g_get_monotonic_time ()))
    {
      g_autofree char *text = g_strdup_printf (
        "too many failed logins from %s; try again in %" G_GUINT64_FORMAT " s", ip,
        server->config->reconnect_duration_ms / 1000);

      g_message ("tunnel from %s refused: client=%s: %s", p->peer, p->hello->id, text);
      count_handshake_failure (server, p->hello->id, "locked_out");
      send_handshake_error (p, GT_ERROR_CODE_INVALID_AUTH, text);
      return;
    }

  if (server->config->auth_api != NULL
      && !g_hash_table_contains (server->ephemeral, p->hello->id))
    {
      g_autoptr (GPtrArray) prefixes = g_ptr_array_new ();

      /* Stop reading while the API answers; the pending timeout still bounds the wait. */
      g_clear_pointer (&p->source, gt_fd_source_free);
      if (p->io_source)
        {
          g_source_destroy (p->io_source);
          g_clear_pointer (&p->io_source, g_source_unref);
        }
      for (guint i = 0; i < p->hello->services->len; i++)
        {
          GtHelloService *s = p->hello->services->pdata[i];

          if (s->prefix != NULL && *s->prefix != '\0')
            g_ptr_array_add (prefixes, s->prefix);
        }
      g_ptr_array_add (prefixes, NULL);
      if (server->auth_session == NULL)
        server->auth_session = soup_session_new ();
      g_clear_object (&p->cancellable);
      p->cancellable = g_cancellable_new ();
      {
        AuthWait *wait = g_new0 (AuthWait, 1);

        wait->p = p;
        wait->cancellable = g_object_ref (p->cancellable);
        /* The request's own timeout (options.timeout) bounds the wait, and its failure is
         * reported to the client: the connection's read timeout must not cut it short. */
        g_clear_handle_id (&p->timeout_id, g_source_remove);
        gt_auth_api_request_async (server->auth_session, server->config->auth_api, p->hello->id,
                                   p->hello->secret, (const char *const *) prefixes->pdata,
                                   (guint) MIN (server->config->timeout_ms, G_MAXUINT),
                                   p->cancellable, pending_auth_done_cb, wait);
      }
      return;
    }
  pending_finish_tunnel (p, FALSE, NULL);
}

static void pending_watch (Pending *p);

/* A WebSocket upgrade on the tunnel path: answer it and read the tunnel handshake inside. */
static void
pending_handle_websocket (Pending *p)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) base = NULL;
  GIOStream *ws;

  if (p->io != NULL)
    base = g_object_ref (p->io);
  else
    {
      base = gt_transport_wrap_fd (p->fd, &error);
      p->fd = -1;
      if (base == NULL)
        {
          pending_drop (p);
          return;
        }
    }
  gt_fd_source_free (p->source);
  p->source = NULL;
  if (p->io_source)
    {
      g_source_destroy (p->io_source);
      g_clear_pointer (&p->io_source, g_source_unref);
    }
  ws = gt_ws_server_accept (base, p->buf, p->len, &error);
  if (ws == NULL)
    {
      g_message ("websocket upgrade from %s refused: %s", p->peer, error->message);
      g_clear_object (&p->io);
      pending_drop (p);
      return;
    }
  g_clear_object (&p->io);
  p->io = ws;
  p->ws = TRUE;
  p->len = 0;
  pending_watch (p);
}

static void pending_dispatch (Pending *p);

/* Hands the user connection and the bytes read so far to a new stream of the route's client. */
static void
pending_open_stream (Pending *p, GtMux *mux, Route *route, GBytes *connect_fail_response)
{
  guint64 timeout_ms = p->server->config->timeout_ms;
  g_autoptr (GIOStream) io = NULL;
  g_autofree guint8 *data = g_steal_pointer (&p->buf);
  gsize len = p->len;
  GtOpenAddr addr;
  gboolean has_addr = pending_open_addr (p, &addr);
  int fd;

  pending_release (p, &fd, &io);
  gt_mux_open_stream_full (mux, route->service_index, fd, io, data, len, has_addr ? &addr : NULL,
                           connect_fail_response, timeout_ms);
}

static gboolean
route_wait_cb (gpointer user_data)
{
  GtServer *server = user_data;
  g_autoptr (GPtrArray) waiters = g_steal_pointer (&server->route_waiters);

  server->route_wait_id = 0;
  server->route_waiters = g_ptr_array_new ();
  for (guint i = 0; i < waiters->len; i++)
    {
      Pending *p = waiters->pdata[i];

      if (g_hash_table_contains (server->pending, p))
        pending_dispatch (p); /* re-queues itself while the grace lasts */
    }
  return G_SOURCE_REMOVE;
}

/* TRUE when the connection was parked to wait for its client (startup grace). */
static gboolean
pending_wait_for_route (Pending *p)
{
  GtServer *server = p->server;

  /* Within the grace, and well before the connection's own timeout would drop it. */
  if (g_get_monotonic_time () - server->started_at
      >= MIN (STARTUP_GRACE_US, (gint64) server->config->timeout_ms * 1000 / 2))
    return FALSE;
  if (!p->waiting_route)
    {
      p->waiting_route = TRUE;
      g_clear_pointer (&p->source, gt_fd_source_free);
      if (p->io_source)
        {
          g_source_destroy (p->io_source);
          g_clear_pointer (&p->io_source, g_source_unref);
        }
    }
  g_ptr_array_add (server->route_waiters, p);
  if (server->route_wait_id == 0)
    server->route_wait_id = g_timeout_add (50, route_wait_cb, server);
  return TRUE;
}

static void
pending_handle_http (Pending *p)
{
  GtServer *server = p->server;
  g_autofree char *host = NULL;
  g_autofree char *prefix = NULL;
  g_autoptr (GError) error = NULL;
  GtDecodeResult r;
  Route *route;
  GtMux *mux;

  r = gt_http_sniff_host (p->buf, p->len, GT_HTTP_MAX_HEAD, &host, &error);
  if (r == GT_DECODE_NEED_MORE)
    return;
  if (r == GT_DECODE_ERROR)
    {
      g_autofree char *body = g_strdup_printf ("bad request: %s\n", error->message);
      g_autofree char *reply = http_reply (400, "Bad Request", body);

      g_message ("bad request from %s: %s", p->peer, error->message);
      pending_reply_text (p, reply);
      return;
    }

  if (server->config->ws_path != NULL
      && gt_ws_is_upgrade_request (p->buf, p->len, server->config->ws_path))
    {
      pending_handle_websocket (p);
      return;
    }

  prefix = gt_http_host_prefix (host);
  route = prefix ? g_hash_table_lookup (server->http_routes, prefix) : NULL;
  mux = route ? client_pick_tunnel (route->client) : NULL;
  if (mux == NULL && pending_wait_for_route (p))
    return;
  if (mux == NULL)
    {
      g_autofree char *body = g_strdup_printf ("no gt client serves host \"%s\"\n", host);
      g_autofree char *reply = http_reply (404, "Not Found", body);

      g_debug ("no route for host %s from %s", host, p->peer);
      pending_reply_text (p, reply);
      return;
    }

  pending_open_stream (p, mux, route, server->bad_gateway);
}

static void
pending_handle_sni (Pending *p)
{
  GtServer *server = p->server;
  g_autofree char *sni = NULL;
  g_autofree char *prefix = NULL;
  g_autoptr (GError) error = NULL;
  guint8 alert[GT_TLS_ALERT_SIZE];
  GtDecodeResult r;
  Route *route;
  GtMux *mux;

  r = gt_tls_sniff_sni (p->buf, p->len, GT_SNIFF_TLS_MAX, &sni, &error);
  if (r == GT_DECODE_NEED_MORE)
    return;
  if (r == GT_DECODE_ERROR)
    {
      g_message ("bad TLS ClientHello from %s: %s", p->peer, error->message);
      pending_reply_and_close (p, alert, gt_tls_alert (alert, GT_TLS_ALERT_DECODE_ERROR));
      return;
    }
  prefix = sni ? gt_http_host_prefix (sni) : NULL;
  route = prefix ? g_hash_table_lookup (server->https_routes, prefix) : NULL;
  mux = route ? client_pick_tunnel (route->client) : NULL;
  if (mux == NULL && sni != NULL && pending_wait_for_route (p))
    return;
  if (mux == NULL)
    {
      g_message ("no https service for server name \"%s\" from %s", sni ? sni : "(none)",
                 p->peer);
      pending_reply_and_close (p, alert, gt_tls_alert (alert, GT_TLS_ALERT_UNRECOGNIZED_NAME));
      return;
    }
  pending_open_stream (p, mux, route, NULL);
}

static gboolean
looks_like_proxy_header (const guint8 *buf, gsize len)
{
  static const guint8 v2[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

  return (len >= 6 && memcmp (buf, "PROXY ", 6) == 0) || (len >= 12 && memcmp (buf, v2, 12) == 0);
}

/* Looks at what arrived so far and moves the connection on when it can. */
static void
pending_dispatch (Pending *p)
{
  GtServer *server = p->server;

  if (server->config->proxy_protocol && !p->trusted && !p->ws
      && looks_like_proxy_header (p->buf, p->len))
    {
      g_message ("PROXY header from untrusted address %s refused", p->peer);
      pending_drop (p);
      return;
    }
  if (p->kind == LISTENER_SNI)
    pending_handle_sni (p);
  else if (p->buf[0] == GT_PROTOCOL_MAGIC0)
    pending_handle_tunnel (p);
  else if (p->ws)
    {
      g_message ("websocket tunnel from %s does not start with the gt preface", p->peer);
      pending_drop (p);
    }
  else
    pending_handle_http (p);
}

static gsize
pending_limit (Pending *p)
{
  if (p->len > 0 && p->buf[0] == GT_PROTOCOL_MAGIC0)
    return HANDSHAKE_MAX;
  if (p->kind == LISTENER_SNI)
    return GT_SNIFF_TLS_MAX + 1;
  return GT_HTTP_MAX_HEAD + 1;
}

static void
pending_read (Pending *p)
{
  gsize limit = pending_limit (p);
  gssize n;

  if (p->cap - p->len < SNIFF_CHUNK && p->cap < limit)
    {
      p->cap = MIN (MAX (p->cap * 2, (gsize) SNIFF_CHUNK), limit);
      p->buf = g_realloc (p->buf, p->cap);
    }
  if (p->len >= p->cap)
    {
      pending_dispatch (p); /* at the limit: the parsers report it */
      return;
    }
  if (p->fd >= 0)
    {
      n = recv (p->fd, p->buf + p->len, p->cap - p->len, MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    }
  else
    {
      g_autoptr (GError) error = NULL;

      n = g_pollable_input_stream_read_nonblocking (
        G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (p->io)), p->buf + p->len,
        p->cap - p->len, NULL, &error);
      if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        return;
      if (n < 0)
        g_debug ("%s: %s", p->peer, error->message);
    }
  if (n <= 0)
    {
      g_debug ("%s closed before sending a complete request", p->peer);
      pending_drop (p);
      return;
    }
  p->len += n;
  pending_dispatch (p);
}

static void
pending_fd_cb (int fd, GIOCondition revents, gpointer user_data)
{
  pending_read (user_data);
}

static gboolean
pending_io_cb (GObject *stream, gpointer user_data)
{
  pending_read (user_data);
  return G_SOURCE_CONTINUE;
}

static void
pending_watch (Pending *p)
{
  if (p->fd >= 0)
    p->source = gt_fd_source_new (p->fd, G_IO_IN, pending_fd_cb, p);
  else
    {
      p->io_source = g_pollable_input_stream_create_source (
        G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (p->io)), NULL);
      g_source_set_callback (p->io_source, (GSourceFunc) (void (*) (void)) pending_io_cb, p, NULL);
      g_source_attach (p->io_source, g_main_context_get_thread_default ());
    }
}

static void
pending_tls_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Pending *p = user_data;
  g_autoptr (GError) error = NULL;

  if (!g_tls_connection_handshake_finish (G_TLS_CONNECTION (source), result, &error))
    {
      if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        {
          g_message ("TLS handshake with %s failed: %s", p->peer, error->message);
          pending_drop (p);
        }
      return;
    }
  g_clear_object (&p->cancellable);
  pending_watch (p);
}

static void
pending_start_tls (Pending *p)
{
  GtServer *server = p->server;
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) base = gt_transport_wrap_fd (p->fd, &error);
  GIOStream *tls;

  p->fd = -1;
  if (base == NULL)
    {
      pending_drop (p);
      return;
    }
  tls = g_tls_server_connection_new (base, server->certificate, &error);
  if (tls == NULL)
    {
      g_warning ("cannot start TLS for %s: %s", p->peer, error->message);
      pending_drop (p);
      return;
    }
  g_tls_connection_set_require_close_notify (G_TLS_CONNECTION (tls), FALSE);
  /* No client certificates are asked for: no CA store is needed (it is big once loaded). */
  g_tls_connection_set_database (G_TLS_CONNECTION (tls), NULL);
  p->io = tls;
  p->cancellable = g_cancellable_new ();
  g_tls_connection_handshake_async (G_TLS_CONNECTION (tls), G_PRIORITY_DEFAULT, p->cancellable,
                                    pending_tls_done_cb, p);
}

/* PROXY protocol from a trusted load balancer: read exactly the header, then carry on. */
static void
pending_proxy_cb (int fd, GIOCondition revents, gpointer user_data)
{
  Pending *p = user_data;
  guint8 buf[PROXY_HEADER_MAX];
  g_auto (GtProxyHeader) header = { 0 };
  g_autoptr (GError) error = NULL;
  gsize consumed = 0;
  gssize n = recv (fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
  GtDecodeResult r;

  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  if (n <= 0)
    {
      pending_drop (p);
      return;
    }
  r = gt_proxy_header_parse (buf, n, &header, &consumed, &error);
  if (r == GT_DECODE_NEED_MORE && (gsize) n < sizeof buf)
    return;
  if (r != GT_DECODE_OK)
    {
      g_message ("bad PROXY header from %s: %s", p->peer,
                 error ? error->message : "header too long");
      pending_drop (p);
      return;
    }
  (void) recv (fd, buf, consumed, MSG_DONTWAIT); /* consume exactly the header */
  if (!header.local && header.src_addr != NULL)
    {
      g_autoptr (GInetAddress) src = g_inet_address_new_from_string (header.src_addr);
      g_autoptr (GInetAddress) dst = g_inet_address_new_from_string (header.dst_addr);

      if (src != NULL && dst != NULL)
        {
          g_autofree char *via = g_steal_pointer (&p->peer);

          g_clear_object (&p->peer_addr);
          g_clear_object (&p->local_addr);
          p->peer_addr = G_INET_SOCKET_ADDRESS (g_inet_socket_address_new (src, header.src_port));
          p->local_addr = G_INET_SOCKET_ADDRESS (g_inet_socket_address_new (dst, header.dst_port));
          p->peer = g_inet_address_get_family (src) == G_SOCKET_FAMILY_IPV6
                      ? g_strdup_printf ("[%s]:%u", header.src_addr, header.src_port)
                      : g_strdup_printf ("%s:%u", header.src_addr, header.src_port);
          g_debug ("connection from %s via %s (PROXY protocol)", p->peer, via);
        }
    }
  g_clear_pointer (&p->source, gt_fd_source_free);
  if (p->kind == LISTENER_TLS)
    pending_start_tls (p);
  else
    pending_watch (p);
}

static gboolean
pending_timeout_cb (gpointer user_data)
{
  Pending *p = user_data;

  p->timeout_id = 0;
  g_message ("%s sent no complete request within the timeout; closing", p->peer);
  pending_drop (p);
  return G_SOURCE_REMOVE;
}

static GInetSocketAddress *
fd_address (int fd, gboolean peer)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  GSocketAddress *sa;

  if ((peer ? getpeername (fd, (struct sockaddr *) &ss, &len)
            : getsockname (fd, (struct sockaddr *) &ss, &len)) < 0)
    return NULL;
  sa = g_socket_address_new_from_native (&ss, len);
  if (sa != NULL && !G_IS_INET_SOCKET_ADDRESS (sa))
    g_clear_object (&sa);
  return (GInetSocketAddress *) sa;
}

static void
listener_accept_cb (int fd, GIOCondition revents, gpointer user_data)
{
  Listener *l = user_data;
  GtServer *server = l->server;

  for (int k = 0; k < 64; k++)
    {
      int cfd = accept4 (fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
      Pending *p;

      if (cfd < 0)
        {
          if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            g_warning ("accept on %s: %s", l->address, g_strerror (errno));
          return;
        }
      gt_socket_set_nodelay (cfd);
      p = g_new0 (Pending, 1);
      p->server = server;
      p->kind = l->kind;
      p->fd = cfd;
      p->peer = gt_fd_describe_peer (cfd);
      p->peer_addr = fd_address (cfd, TRUE);
      p->local_addr = fd_address (cfd, FALSE);
      p->timeout_id = g_timeout_add (MAX (server->config->timeout_ms, 1), pending_timeout_cb, p);
      g_hash_table_add (server->pending, p);
      if (server->trusted_proxies != NULL && p->peer_addr != NULL
          && gt_cidr_list_contains (server->trusted_proxies,
                                    g_inet_socket_address_get_address (p->peer_addr)))
        {
          p->trusted = TRUE;
          p->source = gt_fd_source_new (cfd, G_IO_IN, pending_proxy_cb, p);
        }
      else if (l->kind == LISTENER_TLS)
        pending_start_tls (p);
      else
        pending_watch (p);
    }
}

static void
listener_free (Listener *l)
{
  gt_fd_source_free (l->source);
  if (l->fd >= 0)
    close (l->fd);
  g_free (l->address);
  g_free (l);
}

/* Opens (or takes over from systemd / the manager) the listener for one config key. */
static gboolean
server_add_listener (GtServer *server, const char *key, const char *addr, ListenerKind kind,
                     GError **error)
{
  int fd = gt_listen_fds_take (key);
  Listener *l;

  if (fd < 0)
    {
      g_autoptr (GSocketConnectable) na = g_network_address_parse (addr, 0, error);
      g_autoptr (GSocketAddress) sa = NULL;

      if (na == NULL)
        return FALSE;
      sa = gt_resolve_address (g_network_address_get_hostname (G_NETWORK_ADDRESS (na)),
                               g_network_address_get_port (G_NETWORK_ADDRESS (na)), error);
      if (sa == NULL)
        return FALSE;
      fd = gt_tcp_listen_on (g_inet_socket_address_get_address (G_INET_SOCKET_ADDRESS (sa)),
                             g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (sa)), error);
      if (fd < 0)
        return FALSE;
    }
  else
    gt_socket_set_nonblocking (fd);

  l = g_new0 (Listener, 1);
  l->server = server;
  l->kind = kind;
  l->fd = fd;
  l->address = gt_fd_describe_local (fd);
  l->source = gt_fd_source_new (fd, G_IO_IN, listener_accept_cb, l);
  g_ptr_array_add (server->listeners, l);
  if (server->listen_address == NULL && kind != LISTENER_SNI)
    {
      g_autoptr (GInetSocketAddress) local = fd_address (fd, FALSE);

      server->listen_address = g_strdup (l->address);
      if (local != NULL)
        server->listen_inet = g_object_ref (g_inet_socket_address_get_address (local));
    }
  g_message ("listening on %s%s", l->address,
             kind == LISTENER_TLS ? " (TLS)" : kind == LISTENER_SNI ? " (TLS pass-through by SNI)"
                                                                    : "");
  return TRUE;
}

/* ------------------------------------------------------------------------------------------ */
/* Public API */

/* GIO has no per-connection minimum TLS version: GnuTLS's priority string does it, process-wide,
 * before the TLS backend is first used. */
static void
set_tls_priority (const char *version)
{
  const char *priority = NULL;

  if (g_getenv ("G_TLS_GNUTLS_PRIORITY") != NULL)
    return;
  if (g_strcmp0 (version, "tls1.3") == 0)
    priority = "NORMAL:-VERS-ALL:+VERS-TLS1.3";
  else if (g_strcmp0 (version, "tls1.1") == 0)
    priority = "NORMAL:+VERS-TLS1.1";
  else
    priority = "NORMAL:-VERS-TLS1.1:-VERS-TLS1.0";
  g_setenv ("G_TLS_GNUTLS_PRIORITY", priority, FALSE);
}


static gboolean
server_load_certificate (GtServer *server, GError **error)
{
  GtServerConfig *config = server->config;
  g_autofree char *cert_path = NULL;
  g_autofree char *key_path = NULL;
  g_autofree char *fingerprint = NULL;

  if (!gt_tls_backend_check (error))
    return FALSE;
  if (config->cert_file != NULL && config->key_file != NULL)
    {
      cert_path = g_strdup (config->cert_file);
      key_path = g_strdup (config->key_file);
    }
  else
    {
      /* Quick start without a CA: a self-signed certificate made once, kept next to the config. */
      g_autofree char *dir = config->config_path ? g_path_get_dirname (config->config_path)
                                                 : g_get_current_dir ();

      cert_path = g_build_filename (dir, "gt-server-cert.pem", NULL);
      key_path = g_build_filename (dir, "gt-server-key.pem", NULL);
      if (!g_file_test (cert_path, G_FILE_TEST_EXISTS) || !g_file_test (key_path, G_FILE_TEST_EXISTS))
        {
          const char *names[] = { "localhost", "127.0.0.1", "::1", g_get_host_name (), NULL };

          if (!gt_certificate_generate (cert_path, key_path, names, error))
            return FALSE;
          g_message ("generated a self-signed certificate: %s", cert_path);
        }
    }
  server->certificate = g_tls_certificate_new_from_files (cert_path, key_path, error);
  if (server->certificate == NULL)
    return FALSE;
  fingerprint = gt_certificate_fingerprint (server->certificate);
  g_message ("TLS certificate %s, fingerprint %s (clients may pin it with remoteCert: %s)",
             cert_path, fingerprint, fingerprint);
  return TRUE;
}

gboolean
gt_server_start (GtServer *server, GError **error)
{
  GtServerConfig *config;

  g_return_val_if_fail (GT_IS_SERVER (server), FALSE);
  config = server->config;
  server->started_at = g_get_monotonic_time ();

  if (config->proxy_protocol && config->proxy_protocol_trusted_cidrs != NULL)
    {
      server->trusted_proxies
        = gt_cidr_list_new ((const char *const *) config->proxy_protocol_trusted_cidrs, error);
      if (server->trusted_proxies == NULL)
        return FALSE;
    }
  if (config->tls_addr != NULL)
    {
      set_tls_priority (config->tls_version);
      if (!server_load_certificate (server, error))
        return FALSE;
    }
  if (config->addr != NULL && !server_add_listener (server, "addr", config->addr, LISTENER_PLAIN,
                                                    error))
    return FALSE;
  if (config->tls_addr != NULL
      && !server_add_listener (server, "tlsAddr", config->tls_addr, LISTENER_TLS, error))
    return FALSE;
  if (config->sni_addr != NULL
      && !server_add_listener (server, "sniAddr", config->sni_addr, LISTENER_SNI, error))
    return FALSE;
  if (server->listen_inet == NULL)
    {
      /* Only an SNI listener: tcp services bind on its address. */
      Listener *l = server->listeners->pdata[0];
      g_autoptr (GInetSocketAddress) local = fd_address (l->fd, FALSE);

      if (local != NULL)
        server->listen_inet = g_object_ref (g_inet_socket_address_get_address (local));
    }
  g_object_notify_by_pspec (G_OBJECT (server), properties[PROP_LISTEN_ADDRESS]);
  return TRUE;
}

typedef struct
{
  GtServer *server;
  GHashTable *user_live;    /* id → Traffic* of open streams */
  GHashTable *service_live; /* "id\x1flabel" → Traffic* */
  Client *client;
} LiveScan;

static void
live_stream_cb (GtMuxStream *stream, gpointer user_data)
{
  LiveScan *scan = user_data;
  Client *c = scan->client;
  guint index = gt_mux_stream_get_service_index (stream);
  Traffic *t;

  if (c->ephemeral)
    return;
  t = traffic_get (scan->user_live, c->id);

  t->bytes_in += gt_mux_stream_get_bytes_from_socket (stream);
  t->bytes_out += gt_mux_stream_get_bytes_to_socket (stream);
  t->streams++;
  if (index < c->service_labels->len)
    {
      g_autofree char *key = g_strdup_printf ("%s\x1f%s", c->id,
                                              (char *) c->service_labels->pdata[index]);

      t = traffic_get (scan->service_live, key);
      t->bytes_in += gt_mux_stream_get_bytes_from_socket (stream);
      t->bytes_out += gt_mux_stream_get_bytes_to_socket (stream);
      t->streams++;
    }
}

static Traffic
traffic_sum (GHashTable *done, GHashTable *live, const char *key)
{
  Traffic sum = { 0 };
  Traffic *a = g_hash_table_lookup (done, key);
  Traffic *b = g_hash_table_lookup (live, key);

  if (a)
    {
      sum.bytes_in += a->bytes_in;
      sum.bytes_out += a->bytes_out;
      sum.streams += a->streams;
    }
  if (b)
    {
      sum.bytes_in += b->bytes_in;
      sum.bytes_out += b->bytes_out;
    }
  return sum;
}

static void
write_split_counter (GString *out, const char *name, GHashTable *table, const char *second)
{
  GHashTableIter iter;
  gpointer key, value;

  g_hash_table_iter_init (&iter, table);
  while (g_hash_table_iter_next (&iter, &key, &value))
    {
      g_auto (GStrv) parts = g_strsplit (key, "\x1f", 2);
      const char *labels[] = { "user", parts[0], second, parts[1] ? parts[1] : "", NULL };

      gt_metrics_write_sample (out, name, labels, (double) *(guint64 *) value);
    }
}

/* Prometheus text for GET /metrics. */
char *
gt_server_render_metrics (GtServer *server)
{
  GString *out = g_string_new (NULL);
  g_autoptr (GHashTable) user_live = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  g_autoptr (GHashTable) service_live = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                                               g_free);
  g_autoptr (GHashTable) users = g_hash_table_new (g_str_hash, g_str_equal);
  g_autoptr (GHashTable) services = g_hash_table_new (g_str_hash, g_str_equal);
  GHashTableIter iter;
  gpointer key, value;

  g_hash_table_iter_init (&iter, server->clients);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      LiveScan scan = { server, user_live, service_live, value };

      for (guint i = 0; i < scan.client->tunnels->len; i++)
        gt_mux_foreach_stream (scan.client->tunnels->pdata[i], live_stream_cb, &scan);
    }
  g_hash_table_iter_init (&iter, server->user_traffic);
  while (g_hash_table_iter_next (&iter, &key, NULL))
    g_hash_table_add (users, key);
  g_hash_table_iter_init (&iter, user_live);
  while (g_hash_table_iter_next (&iter, &key, NULL))
    g_hash_table_add (users, key);
  g_hash_table_iter_init (&iter, server->service_traffic);
  while (g_hash_table_iter_next (&iter, &key, NULL))
    g_hash_table_add (services, key);
  g_hash_table_iter_init (&iter, service_live);
  while (g_hash_table_iter_next (&iter, &key, NULL))
    g_hash_table_add (services, key);

  gt_metrics_write_family (out, "gt_clients", "gauge", "Clients connected.");
  gt_metrics_write_sample (out, "gt_clients", NULL, g_hash_table_size (server->clients));

  gt_metrics_write_family (out, "gt_tunnels", "gauge", "Open tunnels per user.");
  gt_metrics_write_family (out, "gt_streams", "gauge", "Open streams per user.");
  g_hash_table_iter_init (&iter, server->clients);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      Client *c = value;
      const char *labels[] = { "user", c->id, NULL };
      guint streams = 0;

      if (c->ephemeral)
        continue;
      for (guint i = 0; i < c->tunnels->len; i++)
        streams += gt_mux_get_n_streams (c->tunnels->pdata[i]);
      gt_metrics_write_sample (out, "gt_tunnels", labels, c->tunnels->len);
      gt_metrics_write_sample (out, "gt_streams", labels, streams);
    }

  gt_metrics_write_family (out, "gt_user_bytes_total", "counter",
                           "Bytes relayed per user: in = from users to the service, out = back.");
  gt_metrics_write_family (out, "gt_user_streams_total", "counter", "Streams finished per user.");
  g_hash_table_iter_init (&iter, users);
  while (g_hash_table_iter_next (&iter, &key, NULL))
    {
      Traffic t = traffic_sum (server->user_traffic, user_live, key);
      const char *in[] = { "user", key, "direction", "in", NULL };
      const char *outl[] = { "user", key, "direction", "out", NULL };
      const char *plain[] = { "user", key, NULL };

      gt_metrics_write_sample (out, "gt_user_bytes_total", in, (double) t.bytes_in);
      gt_metrics_write_sample (out, "gt_user_bytes_total", outl, (double) t.bytes_out);
      gt_metrics_write_sample (out, "gt_user_streams_total", plain, (double) t.streams);
    }

  gt_metrics_write_family (out, "gt_service_bytes_total", "counter",
                           "Bytes relayed per service (host prefix or tcp:port).");
  gt_metrics_write_family (out, "gt_service_streams_total", "counter",
                           "Streams finished per service.");
  g_hash_table_iter_init (&iter, services);
  while (g_hash_table_iter_next (&iter, &key, NULL))
    {
      Traffic t = traffic_sum (server->service_traffic, service_live, key);
      g_auto (GStrv) parts = g_strsplit (key, "\x1f", 2);
      const char *in[] = { "user", parts[0], "service", parts[1], "direction", "in", NULL };
      const char *outl[] = { "user", parts[0], "service", parts[1], "direction", "out", NULL };
      const char *plain[] = { "user", parts[0], "service", parts[1], NULL };

      gt_metrics_write_sample (out, "gt_service_bytes_total", in, (double) t.bytes_in);
      gt_metrics_write_sample (out, "gt_service_bytes_total", outl, (double) t.bytes_out);
      gt_metrics_write_sample (out, "gt_service_streams_total", plain, (double) t.streams);
    }

  gt_metrics_write_family (out, "gt_handshake_failures_total", "counter",
                           "Refused tunnel handshakes by reason (user label only for configured "
                           "users).");
  write_split_counter (out, "gt_handshake_failures_total", server->handshake_failures, "reason");
  gt_metrics_write_family (out, "gt_limit_rejections_total", "counter",
                           "Tunnels refused by a limit, by kind.");
  write_split_counter (out, "gt_limit_rejections_total", server->limit_rejections, "kind");

  gt_metrics_write_family (out, "gt_lockout_blocked_addresses", "gauge",
                           "Addresses refused after too many failed logins.");
  gt_metrics_write_sample (out, "gt_lockout_blocked_addresses", NULL,
                           gt_lockout_get_n_blocked (server->lockout, g_get_monotonic_time ()));
  gt_metrics_write_family (out, "gt_process_open_fds", "gauge", "Open file descriptors.");
  gt_metrics_write_sample (out, "gt_process_open_fds", NULL, gt_process_open_fds ());
  gt_metrics_write_family (out, "gt_process_resident_memory_bytes", "gauge", "Resident memory.");
  gt_metrics_write_sample (out, "gt_process_resident_memory_bytes", NULL,
                           (double) gt_process_rss_bytes ());
  return g_string_free (out, FALSE);
}

static void
server_close_listeners (GtServer *server)
{
  g_ptr_array_set_size (server->listeners, 0);
}

void
gt_server_stop (GtServer *server)
{
  GHashTableIter iter;
  gpointer value;

  g_return_if_fail (GT_IS_SERVER (server));
  if (server->stopped)
    return;
  server->stopped = TRUE;
  g_clear_handle_id (&server->drain_id, g_source_remove);
  g_clear_handle_id (&server->route_wait_id, g_source_remove);
  server_close_listeners (server);
  g_hash_table_remove_all (server->pending);
  while (g_hash_table_size (server->clients) > 0)
    {
      g_autofree char *id = NULL;
      Client *c;

      g_hash_table_iter_init (&iter, server->clients);
      g_hash_table_iter_next (&iter, NULL, &value);
      c = value;
      id = g_strdup (c->id);
      /* Closing the last tunnel may free c: look it up again by a copy of its id. */
      client_close_tunnels (c, GT_ERROR_CODE_SHUTTING_DOWN, "server is shutting down");
      c = g_hash_table_lookup (server->clients, id);
      if (c != NULL)
        server_remove_client (server, c);
    }
}

static guint
server_count_streams (GtServer *server)
{
  GHashTableIter iter;
  gpointer value;
  guint n = 0;

  g_hash_table_iter_init (&iter, server->clients);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      Client *c = value;

      for (guint i = 0; i < c->tunnels->len; i++)
        n += gt_mux_get_n_streams (c->tunnels->pdata[i]);
    }
  return n;
}

static gboolean
is_http_service_cb (guint service_index, gpointer user_data)
{
  Client *c = user_data;

  for (guint i = 0; i < c->routes->len; i++)
    {
      Route *r = c->routes->pdata[i];

      if (r->service_index == service_index)
        return r->kind == GT_SERVICE_KIND_HTTP;
    }
  return FALSE;
}

static void
close_idle_http_streams (GtServer *server)
{
  GHashTableIter iter;
  gpointer value;

  g_hash_table_iter_init (&iter, server->clients);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      Client *c = value;

      for (guint i = 0; i < c->tunnels->len; i++)
        gt_mux_reset_idle_streams (c->tunnels->pdata[i], DRAIN_IDLE_HTTP_US, is_http_service_cb,
                                   c);
    }
}

static gboolean
drain_check_cb (gpointer user_data)
{
  GtServer *server = user_data;
  guint n;

  close_idle_http_streams (server);
  n = server_count_streams (server);

  if (n > 0 && g_get_monotonic_time () < server->drain_deadline)
    return G_SOURCE_CONTINUE;
  if (n > 0)
    g_message ("drain time is over; closing %u streams", n);
  else
    g_message ("all streams finished");
  server->drain_id = 0;
  gt_server_stop (server);
  g_signal_emit (server, signals[SIGNAL_DRAINED], 0);
  return G_SOURCE_REMOVE;
}

void
gt_server_drain (GtServer *server)
{
  GHashTableIter iter;
  gpointer value;

  g_return_if_fail (GT_IS_SERVER (server));
  if (server->stopped || server->drain_id != 0)
    return;
  g_message ("draining: no new connections; clients are asked to move (up to %" G_GUINT64_FORMAT
             " ms for streams to finish)",
             server->config->drain_timeout_ms);
  server_close_listeners (server);
  g_hash_table_iter_init (&iter, server->clients);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      Client *c = value;

      for (guint i = 0; i < c->tunnels->len; i++)
        gt_mux_goaway (c->tunnels->pdata[i], GT_ERROR_CODE_SHUTTING_DOWN,
                       "server is shutting down");
      /* Release the tcp ports now so a new server (restart, upgrade) can open them. */
      g_ptr_array_set_size (c->listeners, 0);
    }
  server->drain_deadline = g_get_monotonic_time () + (gint64) server->config->drain_timeout_ms * 1000;
  server->drain_id = g_timeout_add (100, drain_check_cb, server);
}

void
gt_server_add_ephemeral_user (GtServer *server, const char *id, const char *secret)
{
  g_return_if_fail (GT_IS_SERVER (server));
  g_hash_table_replace (server->ephemeral, g_strdup (id), g_strdup (secret));
}

void
gt_server_remove_ephemeral_user (GtServer *server, const char *id)
{
  Client *c;

  g_return_if_fail (GT_IS_SERVER (server));
  g_hash_table_remove (server->ephemeral, id);
  c = g_hash_table_lookup (server->clients, id);
  if (c != NULL)
    client_close_tunnels (c, GT_ERROR_CODE_NONE, NULL);
}

const char *
gt_server_get_listen_address (GtServer *server)
{
  return server->listen_address;
}

const GtServerConfig *
gt_server_get_config (GtServer *server)
{
  g_return_val_if_fail (GT_IS_SERVER (server), NULL);
  return server->config;
}

guint
gt_server_get_n_clients (GtServer *server)
{
  return g_hash_table_size (server->clients);
}

guint
gt_server_get_n_tunnels (GtServer *server)
{
  GHashTableIter iter;
  gpointer value;
  guint n = 0;

  g_hash_table_iter_init (&iter, server->clients);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    n += ((Client *) value)->tunnels->len;
  return n;
}

GtServer *
gt_server_new (GtServerConfig *config)
{
  GtServer *server = g_object_new (GT_TYPE_SERVER, NULL);
  g_autofree char *body = g_strdup ("the gt client could not reach its local service\n");
  g_autofree char *reply = http_reply (502, "Bad Gateway", body);

  server->config = config;
  server->global_pool = gt_port_pool_new (config->tcp_ranges);
  for (guint i = 0; i < config->users->len; i++)
    {
      GtUserConfig *u = config->users->pdata[i];

      if (u->tcp_ranges != NULL && u->tcp_ranges->len > 0)
        g_hash_table_insert (server->user_pools, g_strdup (u->id),
                             gt_port_pool_new (u->tcp_ranges));
    }
  server->bad_gateway = g_bytes_new (reply, strlen (reply));
  server->lockout = gt_lockout_new (config->reconnect_times, config->reconnect_duration_ms);
  return server;
}

static void
gt_server_dispose (GObject *object)
{
  GtServer *server = GT_SERVER (object);

  gt_server_stop (server);
  G_OBJECT_CLASS (gt_server_parent_class)->dispose (object);
}

static void
gt_server_finalize (GObject *object)
{
  GtServer *server = GT_SERVER (object);

  g_hash_table_unref (server->clients);
  g_hash_table_unref (server->http_routes);
  g_hash_table_unref (server->https_routes);
  g_ptr_array_unref (server->listeners);
  g_clear_object (&server->certificate);
  g_clear_pointer (&server->trusted_proxies, gt_cidr_list_free);
  g_hash_table_unref (server->pending);
  g_hash_table_unref (server->retired);
  g_hash_table_unref (server->user_pools);
  g_hash_table_unref (server->ephemeral);
  g_ptr_array_unref (server->draining);
  g_ptr_array_unref (server->route_waiters);
  g_hash_table_unref (server->user_traffic);
  g_hash_table_unref (server->service_traffic);
  g_hash_table_unref (server->handshake_failures);
  g_hash_table_unref (server->limit_rejections);
  g_clear_pointer (&server->lockout, gt_lockout_free);
  g_clear_object (&server->auth_session);
  gt_port_pool_free (server->global_pool);
  g_clear_pointer (&server->config, gt_server_config_free);
  g_clear_pointer (&server->bad_gateway, g_bytes_unref);
  g_clear_object (&server->listen_inet);
  g_free (server->listen_address);
  G_OBJECT_CLASS (gt_server_parent_class)->finalize (object);
}

static void
gt_server_get_property (GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
  GtServer *server = GT_SERVER (object);

  switch (prop_id)
    {
    case PROP_LISTEN_ADDRESS:
      g_value_set_string (value, server->listen_address);
      break;
    case PROP_N_CLIENTS:
      g_value_set_uint (value, gt_server_get_n_clients (server));
      break;
    case PROP_N_TUNNELS:
      g_value_set_uint (value, gt_server_get_n_tunnels (server));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
gt_server_class_init (GtServerClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->dispose = gt_server_dispose;
  object_class->finalize = gt_server_finalize;
  object_class->get_property = gt_server_get_property;

  properties[PROP_LISTEN_ADDRESS] =
    g_param_spec_string ("listen-address", NULL, NULL, NULL,
                         G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);
  properties[PROP_N_CLIENTS] =
    g_param_spec_uint ("n-clients", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);
  properties[PROP_N_TUNNELS] =
    g_param_spec_uint ("n-tunnels", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  signals[SIGNAL_CLIENT_CONNECTED] =
    g_signal_new ("client-connected", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL,
                  NULL, NULL, G_TYPE_NONE, 1, G_TYPE_STRING);
  signals[SIGNAL_CLIENT_DISCONNECTED] =
    g_signal_new ("client-disconnected", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL,
                  NULL, NULL, G_TYPE_NONE, 1, G_TYPE_STRING);
  /* gt_server_drain finished: every stream ended or the drain time ran out. */
  signals[SIGNAL_DRAINED] =
    g_signal_new ("drained", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                  G_TYPE_NONE, 0);
}

static void
gt_server_init (GtServer *server)
{
  server->listeners = g_ptr_array_new_with_free_func ((GDestroyNotify) listener_free);
  server->clients = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                           (GDestroyNotify) client_free);
  server->http_routes = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  server->https_routes = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  server->pending = g_hash_table_new_full (NULL, NULL, (GDestroyNotify) pending_free, NULL);
  server->retired = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  server->user_pools = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                              (GDestroyNotify) gt_port_pool_free);
  server->ephemeral = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  server->draining = g_ptr_array_new_with_free_func (g_object_unref);
  server->route_waiters = g_ptr_array_new ();
  server->user_traffic = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  server->service_traffic = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  server->handshake_failures = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  server->limit_rejections = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
}
