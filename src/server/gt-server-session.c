/* gt-server-session.c: one connected client: its tunnels, its routes and tcp ports, its limits. */
#include "config.h"

#define G_LOG_DOMAIN "gt-server"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-fd-source.h"
#include "gt-server-private.h"
#include "gt-token-bucket.h"
#include "gt-transport.h"

/* A tcp port a service holds: its users' connections become streams of the session. */
struct _GtServerTcpPort
{
  GtServerSession *session;
  guint16 service_index;
  guint16 port;
  GtPortPool *pool; /* not owned */
  int fd;
  GtFdWatch *source;
};

enum
{
  SIGNAL_TUNNEL_CLOSED,
  SIGNAL_CLOSED,
  N_SIGNALS
};

static guint signals[N_SIGNALS];

G_DEFINE_FINAL_TYPE (GtServerSession, gt_server_session, G_TYPE_OBJECT)

static void
tcp_port_free (GtServerTcpPort *t)
{
  gt_fd_watch_free (t->source);
  if (t->fd >= 0)
    close (t->fd);
  if (t->pool)
    gt_port_pool_release (t->pool, t->port);
  g_free (t);
}

static void
route_free (GtServerRoute *route)
{
  g_free (route->key);
  g_free (route);
}

static void tunnel_closed_cb (GtMux *mux, GError *error, gpointer user_data);
static void stream_closed_cb (GtMux *mux, GtMuxStream *stream, gpointer user_data);

static void
session_unwatch (GtServerSession *s, GtMux *mux)
{
  g_signal_handlers_disconnect_by_func (mux, tunnel_closed_cb, s);
  g_signal_handlers_disconnect_by_func (mux, stream_closed_cb, s);
}

static void
gt_server_session_finalize (GObject *object)
{
  GtServerSession *s = GT_SERVER_SESSION (object);

  for (guint i = 0; i < s->tunnels->len; i++)
    session_unwatch (s, s->tunnels->pdata[i]);
  g_ptr_array_unref (s->tunnels);
  g_ptr_array_unref (s->tcp_ports);
  g_ptr_array_unref (s->udp_ports); /* before the flow table, which its flows are in */
  g_hash_table_unref (s->udp_flows);
  g_clear_handle_id (&s->udp_timer_id, g_source_remove);
  g_free (s->udp_buf);
  g_ptr_array_unref (s->routes);
  g_array_unref (s->ports);
  g_ptr_array_unref (s->service_labels);
  g_clear_pointer (&s->rate, g_rc_box_release);
  g_free (s->checksum);
  if (s->secret)
    {
      memset (s->secret, 0, strlen (s->secret));
      g_free (s->secret);
    }
  g_free (s->id);
  G_OBJECT_CLASS (gt_server_session_parent_class)->finalize (object);
}

static void
gt_server_session_class_init (GtServerSessionClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->finalize = gt_server_session_finalize;

  signals[SIGNAL_TUNNEL_CLOSED] =
    g_signal_new ("tunnel-closed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL,
                  NULL, G_TYPE_NONE, 1, GT_TYPE_MUX);
  signals[SIGNAL_CLOSED] =
    g_signal_new ("closed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                  G_TYPE_NONE, 0);
}

static void
gt_server_session_init (GtServerSession *s)
{
  s->tunnels = g_ptr_array_new_with_free_func (g_object_unref);
  s->routes = g_ptr_array_new_with_free_func ((GDestroyNotify) route_free);
  s->tcp_ports = g_ptr_array_new_with_free_func ((GDestroyNotify) tcp_port_free);
  s->udp_ports = g_ptr_array_new_with_free_func ((GDestroyNotify) _gt_server_udp_port_free);
  s->udp_flows = g_hash_table_new (NULL, NULL);
  s->ports = g_array_new (FALSE, FALSE, sizeof (GtWelcomePort));
  s->service_labels = g_ptr_array_new_with_free_func (g_free);
}

GtServerSession *
gt_server_session_new (const char *id, const char *checksum, const GtLimits *limits,
                       gboolean ephemeral)
{
  GtServerSession *s;

  g_return_val_if_fail (id != NULL, NULL);
  g_return_val_if_fail (limits != NULL, NULL);

  s = g_object_new (GT_TYPE_SERVER_SESSION, NULL);
  s->id = g_strdup (id);
  s->checksum = g_strdup (checksum);
  s->limits = *limits;
  s->ephemeral = ephemeral;
  if (limits->speed > 0)
    {
      guint64 burst = GT_TOKEN_BUCKET_DEFAULT_BURST (limits->speed);

      s->rate = g_rc_box_new0 (GtMuxRate);
      gt_token_bucket_init (&s->rate->to_socket, limits->speed, burst);
      gt_token_bucket_init (&s->rate->from_socket, limits->speed, burst);
    }
  return s;
}

void
gt_server_session_set_secret (GtServerSession *session, const char *secret)
{
  g_return_if_fail (GT_IS_SERVER_SESSION (session));
  if (session->secret)
    {
      memset (session->secret, 0, strlen (session->secret));
      g_free (session->secret);
    }
  session->secret = g_strdup (secret);
}

void
gt_server_session_set_udp (GtServerSession *session, GtPortPool *udp_pool,
                           guint64 udp_timeout_ms)
{
  g_return_if_fail (GT_IS_SERVER_SESSION (session));
  session->udp_pool = udp_pool;
  session->udp_timeout_ms = udp_timeout_ms;
}

void
gt_server_session_set_counters (GtServerSession *session, GtServerCounters *counters,
                                guint64 timeout_ms)
{
  g_return_if_fail (GT_IS_SERVER_SESSION (session));
  session->counters = counters;
  session->timeout_ms = timeout_ms;
}

/* ------------------------------------------------------------------------------------------ */
/* Tunnels */

static void
tunnel_closed_cb (GtMux *mux, GError *error, gpointer user_data)
{
  g_autoptr (GtServerSession) s = g_object_ref (user_data);
  g_autoptr (GtMux) closed = g_object_ref (mux);

  g_message ("tunnel closed: client=%s remote=%s: %s", s->id,
             gt_mux_get_peer (mux) ? gt_mux_get_peer (mux) : "?",
             error ? error->message : "closed");
  session_unwatch (s, mux);
  g_ptr_array_remove (s->tunnels, mux);
  g_signal_emit (s, signals[SIGNAL_TUNNEL_CLOSED], 0, closed);
  if (s->tunnels->len == 0)
    g_signal_emit (s, signals[SIGNAL_CLOSED], 0);
}

static void
stream_closed_cb (GtMux *mux, GtMuxStream *stream, gpointer user_data)
{
  GtServerSession *s = user_data;

  if (s->counters != NULL && !s->ephemeral)
    _gt_server_counters_add (s->counters, s, stream);
}

void
gt_server_session_probe_tunnels (GtServerSession *session)
{
  guint64 ms = GT_SERVER_SESSION_PROBE_MS;

  g_return_if_fail (GT_IS_SERVER_SESSION (session));
  if (session->timeout_ms > 0)
    ms = MIN (ms, session->timeout_ms);
  for (guint i = 0; i < session->tunnels->len; i++)
    gt_mux_probe (session->tunnels->pdata[i], ms);
}

void
gt_server_session_add_tunnel (GtServerSession *session, GtMux *mux)
{
  g_return_if_fail (GT_IS_SERVER_SESSION (session));
  g_return_if_fail (GT_IS_MUX (mux));

  /* A client opens another tunnel when it starts, or when it gave up on one: one that stopped
   * hearing from us while our side still looks open (a half-open connection, which we would
   * only notice after `timeout`). */
  gt_server_session_probe_tunnels (session);
  gt_mux_set_rate (mux, session->rate);
  g_ptr_array_add (session->tunnels, g_object_ref (mux));
  g_signal_connect (mux, "closed", G_CALLBACK (tunnel_closed_cb), session);
  g_signal_connect (mux, "stream-closed", G_CALLBACK (stream_closed_cb), session);
  _gt_server_session_udp_attach (session, mux);
}

GtMux *
gt_server_session_pick_tunnel (GtServerSession *session)
{
  GtMux *best = NULL;
  guint best_n = G_MAXUINT;
  gboolean best_probing = TRUE;

  for (guint i = 0; i < session->tunnels->len; i++)
    {
      GtMux *m = session->tunnels->pdata[i];
      gboolean probing;
      guint n;

      if (gt_mux_is_closed (m) || gt_mux_is_going_away (m))
        continue;
      /* A tunnel that has not answered its probe yet may be dead: the others come first. */
      probing = gt_mux_is_probing (m);
      n = gt_mux_get_n_streams (m);
      if ((best_probing && !probing) || (probing == best_probing && n < best_n))
        {
          best = m;
          best_n = n;
          best_probing = probing;
          if (n == 0 && !probing)
            break;
        }
    }
  return best;
}

guint
gt_server_session_get_n_tunnels (GtServerSession *session)
{
  g_return_val_if_fail (GT_IS_SERVER_SESSION (session), 0);
  return session->tunnels->len;
}

guint
gt_server_session_get_n_streams (GtServerSession *session)
{
  guint n = 0;

  g_return_val_if_fail (GT_IS_SERVER_SESSION (session), 0);
  for (guint i = 0; i < session->tunnels->len; i++)
    n += gt_mux_get_n_streams (session->tunnels->pdata[i]);
  return n;
}

void
gt_server_session_close_tunnels (GtServerSession *session, GtErrorCode code, const char *message)
{
  g_autoptr (GPtrArray) tunnels = NULL;

  g_return_if_fail (GT_IS_SERVER_SESSION (session));
  /* Closing a tunnel changes the array (and may end the session): work on a copy. */
  tunnels = g_ptr_array_copy (session->tunnels, (GCopyFunc) (void (*) (void)) g_object_ref, NULL);
  g_ptr_array_set_free_func (tunnels, g_object_unref);
  for (guint i = 0; i < tunnels->len; i++)
    gt_mux_close (tunnels->pdata[i], code, message);
}

void
gt_server_session_goaway (GtServerSession *session, GtErrorCode code, const char *message)
{
  g_return_if_fail (GT_IS_SERVER_SESSION (session));
  for (guint i = 0; i < session->tunnels->len; i++)
    gt_mux_goaway (session->tunnels->pdata[i], code, message);
}

void
gt_server_session_retire (GtServerSession *session, GPtrArray *busy)
{
  g_return_if_fail (GT_IS_SERVER_SESSION (session));
  g_return_if_fail (busy != NULL);

  for (guint i = 0; i < session->tunnels->len; i++)
    {
      GtMux *mux = session->tunnels->pdata[i];

      session_unwatch (session, mux);
      if (gt_mux_is_closed (mux))
        continue;
      gt_mux_goaway (mux, GT_ERROR_CODE_CONFIG_CONFLICT,
                     "replaced by a client with a different config");
      if (gt_mux_get_n_streams (mux) == 0)
        {
          gt_mux_close (mux, GT_ERROR_CODE_NONE, NULL);
          continue;
        }
      g_ptr_array_add (busy, g_object_ref (mux));
    }
}

void
gt_server_session_close_ports (GtServerSession *session)
{
  g_return_if_fail (GT_IS_SERVER_SESSION (session));
  g_ptr_array_set_size (session->tcp_ports, 0);
  g_ptr_array_set_size (session->udp_ports, 0);
  g_clear_handle_id (&session->udp_timer_id, g_source_remove);
}

static gboolean
is_http_service_cb (guint service_index, gpointer user_data)
{
  GtServerSession *s = user_data;

  for (guint i = 0; i < s->routes->len; i++)
    {
      GtServerRoute *r = s->routes->pdata[i];

      if (r->service_index == service_index)
        return r->kind == GT_SERVICE_KIND_HTTP;
    }
  return FALSE;
}

void
gt_server_session_reset_idle_http_streams (GtServerSession *session, gint64 idle_us)
{
  g_return_if_fail (GT_IS_SERVER_SESSION (session));
  for (guint i = 0; i < session->tunnels->len; i++)
    gt_mux_reset_idle_streams (session->tunnels->pdata[i], idle_us, is_http_service_cb, session);
}

/* ------------------------------------------------------------------------------------------ */
/* Tcp ports */

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
tcp_port_accept_cb (int fd, GIOCondition revents, gpointer user_data)
{
  GtServerTcpPort *t = user_data;

  for (int k = 0; k < 64; k++)
    {
      int cfd = accept4 (fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
      GtOpenAddr addr;
      gboolean has_addr;
      GtMux *mux;

      if (cfd < 0)
        {
          int err = errno;
          g_autofree char *what = NULL;

          if (err == EAGAIN || err == EINTR)
            return;
          what = g_strdup_printf ("tcp port %u", t->port);
          if (gt_fd_watch_accept_failed (t->source, err, what))
            return; /* out of fds: paused, not spinning */
          continue;
        }
      mux = gt_server_session_pick_tunnel (t->session);
      if (mux == NULL)
        {
          close (cfd);
          continue;
        }
      has_addr = fd_open_addr (cfd, &addr);
      gt_mux_open_stream_full (mux, t->service_index, cfd, NULL, NULL, 0,
                               has_addr ? &addr : NULL, NULL, t->session->timeout_ms);
    }
}

int
_gt_server_bind_service_port (const GtHelloService *svc, GtPortPool *pool,
                              GtServerBindFunc bind_fn, GInetAddress *listen_inet,
                              const char *kind, const char *range, guint16 *port_out,
                              char **message)
{
  g_autoptr (GArray) tried = g_array_new (FALSE, FALSE, sizeof (guint16));
  g_autoptr (GError) last_error = NULL;

  for (int attempt = 0; attempt < 8; attempt++)
    {
      guint16 port = 0;
      int fd;

      if (attempt == 0 && svc->remote_port != 0)
        port = svc->remote_port;
      else if (svc->remote_random)
        port = gt_port_pool_pick_random (pool, tried);
      if (port == 0)
        break;
      g_array_append_val (tried, port);
      if (!gt_port_pool_take (pool, port))
        continue;
      g_clear_error (&last_error);
      fd = bind_fn (listen_inet, port, &last_error);
      if (fd < 0)
        {
          gt_port_pool_release (pool, port);
          continue;
        }
      *port_out = port;
      return fd;
    }
  if (svc->remote_port != 0 && !gt_port_pool_contains (pool, svc->remote_port)
      && !svc->remote_random)
    *message = g_strdup_printf ("%s %u is not in the server's %s", kind, svc->remote_port,
                                range);
  else if (svc->remote_port != 0 && !svc->remote_random)
    *message = g_strdup_printf ("%s %u is not available%s%s", kind, svc->remote_port,
                                last_error ? ": " : "", last_error ? last_error->message : "");
  else
    *message = g_strdup_printf ("no free port in the server's %s", range);
  return -1;
}

/* Opens the tcp port of one service; GT_ERROR_CODE_NONE on success. */
static GtErrorCode
session_open_tcp (GtServerSession *s, guint16 index, const GtHelloService *svc, GtPortPool *pool,
                  GInetAddress *listen_inet, char **message)
{
  GtServerTcpPort *t;
  GtWelcomePort wp;
  guint16 port = 0;
  int fd = _gt_server_bind_service_port (svc, pool, gt_tcp_listen_on, listen_inet, "port",
                                         "tcp range for this user", &port, message);

  if (fd < 0)
    return GT_ERROR_CODE_PORT_UNAVAILABLE;
  t = g_new0 (GtServerTcpPort, 1);
  t->session = s;
  t->service_index = index;
  t->port = port;
  t->pool = pool;
  t->fd = fd;
  t->source = gt_fd_watch_new (fd, G_IO_IN, tcp_port_accept_cb, t);
  g_ptr_array_add (s->tcp_ports, t);
  wp.service_index = index;
  wp.port = port;
  g_array_append_val (s->ports, wp);
  g_message ("client %s: tcp port %u opened for service %u", s->id, port, index);
  return GT_ERROR_CODE_NONE;
}

/* ------------------------------------------------------------------------------------------ */
/* Registration */

/* The route key of a host service, or NULL (and GT_ERROR_CODE_NONE) when the auth API did not
 * allow the prefix and it is ignored; n_hosts counts the accepted ones. */
static GtErrorCode
session_host_key (GtServerSession *s, const GtHelloService *svc, char **allowed, guint *n_hosts,
                  char **key_out, char **message)
{
  gboolean own_id = g_ascii_strcasecmp (svc->prefix, s->id) == 0;
  GtErrorCode code;

  *key_out = NULL;
  if (allowed != NULL && !own_id && !g_strv_contains ((const char *const *) allowed, svc->prefix))
    return GT_ERROR_CODE_NONE;
  code = gt_limits_check_host (&s->limits, svc->prefix, own_id, *n_hosts, message);
  if (code != GT_ERROR_CODE_NONE)
    return code;
  (*n_hosts)++;
  *key_out = gt_limits_host_key (&s->limits, s->id, svc->prefix, own_id);
  return GT_ERROR_CODE_NONE;
}

static GtErrorCode
session_check_services (GtServerSession *s, const GtHello *hello, char **message)
{
  guint n_tcp = 0, n_udp = 0;
  GtErrorCode code;

  for (guint i = 0; i < hello->services->len; i++)
    {
      GtServiceKind kind = ((GtHelloService *) hello->services->pdata[i])->kind;

      n_tcp += kind == GT_SERVICE_KIND_TCP;
      n_udp += kind == GT_SERVICE_KIND_UDP;
    }
  code = gt_limits_check_services (&s->limits, hello->services->len, n_tcp, message);
  if (code == GT_ERROR_CODE_NONE)
    code = gt_limits_check_udp (&s->limits, n_udp, message);
  return code;
}

/* What a udp service needs from the pool: refusals as register would give them. */
static GtErrorCode
session_check_udp (GtServerSession *s, const GtHelloService *svc, GtServerSession *replacing,
                   char **message)
{
  GtPortPool *pool = s->udp_pool;
  guint16 port = svc->remote_port;

  if (pool == NULL || gt_port_pool_is_empty (pool))
    {
      *message = g_strdup ("no udp ports on this server (udpRanges)");
      return GT_ERROR_CODE_PORT_UNAVAILABLE;
    }
  if (port != 0 && !svc->remote_random && !gt_port_pool_contains (pool, port))
    {
      *message = g_strdup_printf ("udp port %u is not in the server's udpRanges", port);
      return GT_ERROR_CODE_PORT_UNAVAILABLE;
    }
  if (port != 0 && !svc->remote_random && gt_port_pool_in_use (pool, port)
      && !_gt_server_session_holds_udp_port (replacing, pool, port))
    {
      *message = g_strdup_printf ("udp port %u is not available", port);
      return GT_ERROR_CODE_PORT_UNAVAILABLE;
    }
  return GT_ERROR_CODE_NONE;
}

static gboolean
session_holds_port (GtServerSession *s, GtPortPool *pool, guint16 port)
{
  for (guint i = 0; s != NULL && i < s->tcp_ports->len; i++)
    {
      GtServerTcpPort *t = s->tcp_ports->pdata[i];

      if (t->pool == pool && t->port == port)
        return TRUE;
    }
  return FALSE;
}

GtErrorCode
gt_server_session_check (GtServerSession *session, GtServerRegistry *registry,
                         const GtHello *hello, char **allowed, GtPortPool *pool,
                         GtServerSession *replacing, char **message)
{
  g_autoptr (GHashTable) keys = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  guint n_hosts = 0;
  GtErrorCode code;

  g_return_val_if_fail (GT_IS_SERVER_SESSION (session), GT_ERROR_CODE_INTERNAL);
  g_return_val_if_fail (registry != NULL, GT_ERROR_CODE_INTERNAL);
  g_return_val_if_fail (hello != NULL, GT_ERROR_CODE_INTERNAL);

  code = session_check_services (session, hello, message);
  for (guint i = 0; code == GT_ERROR_CODE_NONE && i < hello->services->len; i++)
    {
      const GtHelloService *svc = hello->services->pdata[i];
      g_autofree char *key = NULL;

      if (svc->kind == GT_SERVICE_KIND_UDP)
        {
          code = session_check_udp (session, svc, replacing, message);
          continue;
        }
      if (svc->kind == GT_SERVICE_KIND_TCP)
        {
          guint16 port = svc->remote_port;

          if (pool == NULL)
            {
              *message = g_strdup ("no tcp ports on this server");
              code = GT_ERROR_CODE_PORT_UNAVAILABLE;
            }
          else if (port != 0 && !svc->remote_random && !gt_port_pool_contains (pool, port))
            {
              *message = g_strdup_printf ("port %u is not in the server's tcp range for this "
                                          "user", port);
              code = GT_ERROR_CODE_PORT_UNAVAILABLE;
            }
          else if (port != 0 && !svc->remote_random && gt_port_pool_in_use (pool, port)
                   && !session_holds_port (replacing, pool, port))
            {
              *message = g_strdup_printf ("port %u is not available", port);
              code = GT_ERROR_CODE_PORT_UNAVAILABLE;
            }
          continue;
        }
      code = session_host_key (session, svc, allowed, &n_hosts, &key, message);
      if (code != GT_ERROR_CODE_NONE || key == NULL)
        continue;
      /* The same key twice in one HELLO: registration would refuse the second. */
      code = gt_server_registry_check_route (registry, svc->kind, key, session, replacing,
                                             message);
      if (code == GT_ERROR_CODE_NONE
          && !g_hash_table_add (keys, g_strdup_printf ("%d:%s", svc->kind, key)))
        {
          *message = g_strdup_printf ("host conflict: host prefix '%s' is given twice", key);
          code = GT_ERROR_CODE_HOST_CONFLICT;
        }
    }
  return code;
}

GtErrorCode
gt_server_session_register (GtServerSession *session, GtServerRegistry *registry,
                            const GtHello *hello, char **allowed, GtPortPool *pool,
                            GInetAddress *listen_inet, char **message)
{
  GtServerSession *s = session;
  guint n_hosts = 0;
  GtErrorCode code;

  g_return_val_if_fail (GT_IS_SERVER_SESSION (session), GT_ERROR_CODE_INTERNAL);
  g_return_val_if_fail (registry != NULL, GT_ERROR_CODE_INTERNAL);
  g_return_val_if_fail (hello != NULL, GT_ERROR_CODE_INTERNAL);

  code = session_check_services (s, hello, message);
  if (code != GT_ERROR_CODE_NONE)
    return code;

  for (guint i = 0; i < hello->services->len; i++)
    {
      const GtHelloService *svc = hello->services->pdata[i];
      GtServerRoute *route;
      char *key;

      if (svc->kind == GT_SERVICE_KIND_UDP)
        {
          GtWelcomePort *wp;

          code = session_check_udp (s, svc, NULL, message);
          if (code == GT_ERROR_CODE_NONE)
            code = _gt_server_session_open_udp (s, (guint16) i, svc, s->udp_pool,
                                                listen_inet, message);
          if (code != GT_ERROR_CODE_NONE)
            return code;
          wp = &g_array_index (s->ports, GtWelcomePort, s->ports->len - 1);
          g_ptr_array_add (s->service_labels, g_strdup_printf ("udp:%u", wp->port));
          continue;
        }
      if (svc->kind == GT_SERVICE_KIND_TCP)
        {
          GtWelcomePort *wp;

          if (pool == NULL)
            {
              *message = g_strdup ("no tcp ports on this server");
              return GT_ERROR_CODE_PORT_UNAVAILABLE;
            }
          code = session_open_tcp (s, (guint16) i, svc, pool, listen_inet, message);
          if (code != GT_ERROR_CODE_NONE)
            return code;
          wp = &g_array_index (s->ports, GtWelcomePort, s->ports->len - 1);
          g_ptr_array_add (s->service_labels, g_strdup_printf ("tcp:%u", wp->port));
          continue;
        }

      code = session_host_key (s, svc, allowed, &n_hosts, &key, message);
      if (code != GT_ERROR_CODE_NONE)
        return code;
      if (key == NULL)
        {
          g_message ("client %s: host prefix '%s' is not allowed by the auth API; ignored", s->id,
                     svc->prefix);
          g_ptr_array_add (s->service_labels, g_strdup_printf ("%s (refused)", svc->prefix));
          continue;
        }
      route = g_new0 (GtServerRoute, 1);
      route->session = s;
      route->service_index = (guint16) i;
      route->kind = svc->kind;
      route->key = key;
      g_ptr_array_add (s->service_labels, g_strdup (route->key));
      code = gt_server_registry_add_route (registry, route, message);
      if (code != GT_ERROR_CODE_NONE)
        {
          route_free (route);
          return code;
        }
      g_ptr_array_add (s->routes, route);
    }
  return GT_ERROR_CODE_NONE;
}
