/* gt-server.c: the GtServer object: start, stop and drain, client admission, the public API. */
#include "config.h"

#define G_LOG_DOMAIN "gt-server"

#include <string.h>

#include "gt-server-private.h"

/* Draining closes HTTP streams idle for this long (keep-alive between requests). */
#define DRAIN_IDLE_HTTP_US (1 * G_USEC_PER_SEC)
/* Draining lets connections accepted before it finish their request head (and go to the clients'
 * tunnels) for up to this long before it tells the clients to move. */
#define DRAIN_PENDING_US (1 * G_USEC_PER_SEC)
/* A replaced client's service set is refused for this long so two clients sharing an id with
 * different configs do not push each other out forever. */
#define RETIRED_CONFIG_US (60 * G_USEC_PER_SEC)

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

static void
notify_counts (GtServer *server)
{
  g_object_notify_by_pspec (G_OBJECT (server), properties[PROP_N_CLIENTS]);
  g_object_notify_by_pspec (G_OBJECT (server), properties[PROP_N_TUNNELS]);
}

/* ------------------------------------------------------------------------------------------ */
/* Sessions */

/* Removes a session and releases its hosts and ports at once. */
static void
server_remove_session (GtServer *server, GtServerSession *session)
{
  g_autofree char *id = g_strdup (session->id);

  g_signal_handlers_disconnect_by_data (session, server);
  if (server->cluster != NULL)
    gt_cluster_release (server->cluster, session);
  gt_server_registry_remove (server->registry, session); /* may free session */
  g_message ("client %s left; its hosts and ports are released", id);
  g_signal_emit (server, signals[SIGNAL_CLIENT_DISCONNECTED], 0, id);
  notify_counts (server);
}

static void
session_tunnel_closed_cb (GtServerSession *session, GtMux *mux, gpointer user_data)
{
  notify_counts (user_data);
}

static void
session_closed_cb (GtServerSession *session, gpointer user_data)
{
  server_remove_session (user_data, session);
}

void
_gt_server_drop_session (GtServer *server, GtServerSession *session)
{
  if (gt_server_session_get_n_tunnels (session) == 0)
    server_remove_session (server, session);
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
server_retire_session (GtServer *server, GtServerSession *session)
{
  g_autoptr (GPtrArray) busy = g_ptr_array_new_with_free_func (g_object_unref);
  g_autoptr (GtServerSession) ref = g_object_ref (session);

  gt_server_session_retire (session, busy);
  for (guint i = 0; i < busy->len; i++)
    {
      g_ptr_array_add (server->draining, g_object_ref (busy->pdata[i]));
      g_signal_connect (busy->pdata[i], "closed", G_CALLBACK (draining_closed_cb), server);
    }
  /* Its ports go now, before the session itself is released, so the new client can take them. */
  gt_server_session_close_ports (session);
  gt_server_registry_retire (server->registry, session, g_get_monotonic_time (),
                             g_get_monotonic_time () + RETIRED_CONFIG_US);
  server_remove_session (server, session);
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

GtServerSession *
_gt_server_accept_hello (GtServer *server, const GtHello *hello, gboolean authenticated,
                         char **allowed, GtErrorCode *code, char **message)
{
  const GtUserConfig *user = gt_server_config_find_user (server->config, hello->id);
  gboolean allow_any = server->config->users->len == 0 || server->config->allow_any_client;
  g_autofree char *checksum = services_checksum (hello);
  GtServerSession *s = gt_server_registry_lookup (server->registry, hello->id);
  const char *ephemeral = g_hash_table_lookup (server->ephemeral, hello->id);
  g_autoptr (GtServerSession) fresh = NULL;
  GtLimits limits;

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
  else if (s != NULL && s->secret != NULL && !secure_equal (hello->secret, s->secret))
    {
      *code = GT_ERROR_CODE_INVALID_AUTH;
      return NULL;
    }

  if (gt_server_registry_is_retired (server->registry, hello->id, checksum,
                                     g_get_monotonic_time ()))
    {
      *code = GT_ERROR_CODE_CONFIG_CONFLICT;
      *message = g_strdup ("this service set was replaced by a newer client less than 60 s ago");
      return NULL;
    }

  if (s != NULL && g_strcmp0 (s->checksum, checksum) == 0)
    {
      *code = gt_limits_check_tunnels (&s->limits, s->id, s->tunnels->len, message);
      /* The client may be replacing half-open tunnels that still count: the dead ones are
       * found and closed before its next attempt. */
      if (*code == GT_ERROR_CODE_TOO_MANY_TUNNELS)
        gt_server_session_probe_tunnels (s);
      return *code == GT_ERROR_CODE_NONE ? s : NULL;
    }

  gt_limits_resolve (&limits, server->config, user, ephemeral != NULL);
  fresh = gt_server_session_new (hello->id, checksum, &limits, ephemeral != NULL);
  gt_server_session_set_udp (fresh, server->udp_pool, server->config->udp_timeout_ms);
  if (s != NULL)
    {
      /* The newest config wins (a client restarted with new services), but only once it is
       * known to be acceptable: a refused HELLO must not cut off the connected client. */
      *code = gt_server_session_check (fresh, server->registry, hello, allowed,
                                       pool_for_user (server, hello->id), s, message);
      if (*code != GT_ERROR_CODE_NONE)
        return NULL;
      g_message ("client %s connected with a different service set; the old tunnels finish "
                 "their streams and get no new ones",
                 hello->id);
      server_retire_session (server, s);
    }
  if (user == NULL)
    gt_server_session_set_secret (fresh, hello->secret);
  gt_server_session_set_counters (fresh, &server->counters, server->config->timeout_ms);
  gt_server_registry_add (server->registry, fresh);
  *code = gt_server_session_register (fresh, server->registry, hello, allowed,
                                      pool_for_user (server, hello->id), server->listen_inet,
                                      message);
  if (*code != GT_ERROR_CODE_NONE)
    {
      gt_server_registry_remove (server->registry, fresh);
      return NULL;
    }
  g_signal_connect (fresh, "tunnel-closed", G_CALLBACK (session_tunnel_closed_cb), server);
  g_signal_connect (fresh, "closed", G_CALLBACK (session_closed_cb), server);
  g_signal_emit (server, signals[SIGNAL_CLIENT_CONNECTED], 0, fresh->id);
  return fresh; /* the registry holds it */
}

gboolean
_gt_server_is_ephemeral_login (GtServer *server, const GtHello *hello)
{
  const char *secret = g_hash_table_lookup (server->ephemeral, hello->id);

  return secret != NULL && secure_equal (hello->secret, secret);
}

void
_gt_server_attach_tunnel (GtServer *server, GtServerSession *session, GtMux *mux,
                          gboolean has_caps, guint32 caps)
{
  g_autoptr (GByteArray) welcome = g_byte_array_new ();

  /* Capabilities: only those this server knows, and only to a client that asked. FORWARD
   * streams are framed on the tunnel: not on one whose streams are native (quic://). */
  caps &= GT_CAPS_KNOWN;
  if (gt_mux_has_native_streams (mux))
    caps &= ~(guint32) GT_CAP_FORWARD;
  /* Before the session adds the tunnel: it takes its flows' replies then. */
  gt_mux_set_datagrams (mux, has_caps && (caps & GT_CAP_DATAGRAM));
  gt_mux_set_keepalive (mux, server->config->timeout_ms, 0);
  gt_server_session_add_tunnel (session, mux);
  _gt_server_forward_watch (server, session, mux, has_caps && (caps & GT_CAP_FORWARD));
  if (has_caps)
    gt_frame_append_welcome_caps (welcome, (const GtWelcomePort *) session->ports->data,
                                  session->ports->len, caps);
  else
    gt_frame_append_welcome (welcome, (const GtWelcomePort *) session->ports->data,
                             session->ports->len);
  gt_mux_send_raw (mux, welcome->data, welcome->len);
  /* A handshake that finished on a server that already sent its clients away. */
  if (server->moving)
    gt_mux_goaway (mux, GT_ERROR_CODE_SHUTTING_DOWN, "server is shutting down");
  g_message ("tunnel accepted: client=%s remote=%s tunnels=%u", session->id,
             gt_mux_get_peer (mux) ? gt_mux_get_peer (mux) : "?", session->tunnels->len);
  notify_counts (server);
  gt_mux_start (mux);
}

/* ------------------------------------------------------------------------------------------ */
/* Start, stop, drain */

static void
adopt_node_stream_cb (int fd, GtListenerKind kind, const GtOpenAddr *addr, gpointer user_data)
{
  _gt_server_adopt_node_stream (user_data, fd, kind, addr);
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
  if (!_gt_server_open_listeners (server, error))
    return FALSE;
  if (config->cluster_etcd != NULL)
    {
      server->cluster = gt_cluster_new (config, adopt_node_stream_cb, server, error);
      if (server->cluster == NULL)
        return FALSE;
      gt_cluster_start (server->cluster);
    }
  g_object_notify_by_pspec (G_OBJECT (server), properties[PROP_LISTEN_ADDRESS]);
  return TRUE;
}

static void
server_close_listeners (GtServer *server)
{
  g_ptr_array_set_size (server->listeners, 0);
}

/* A drain: no new connections; tunnels that share a listener's socket (QUIC) stay. */
static void
server_stop_listening (GtServer *server)
{
  for (guint i = server->listeners->len; i > 0; i--)
    if (!_gt_server_listener_stop_accepting (server->listeners->pdata[i - 1]))
      g_ptr_array_remove_index (server->listeners, i - 1);
}

void
gt_server_stop (GtServer *server)
{
  GtServerSession *s;

  g_return_if_fail (GT_IS_SERVER (server));
  if (server->stopped)
    return;
  server->stopped = TRUE;
  g_clear_handle_id (&server->drain_id, g_source_remove);
  g_clear_handle_id (&server->route_wait_id, g_source_remove);
  server_stop_listening (server);
  g_hash_table_remove_all (server->pending);
  while ((s = gt_server_registry_get_any (server->registry)) != NULL)
    {
      g_autoptr (GtServerSession) ref = g_object_ref (s);

      /* Closing the last tunnel ends the session ("closed"); remove it if that did not. */
      gt_server_session_close_tunnels (s, GT_ERROR_CODE_SHUTTING_DOWN, "server is shutting down");
      if (gt_server_registry_lookup (server->registry, s->id) == s)
        server_remove_session (server, s);
    }
  server_close_listeners (server);
}

static void
add_streams_cb (GtServerSession *session, gpointer user_data)
{
  *(guint *) user_data += gt_server_session_get_n_streams (session);
}

static void
add_tunnels_cb (GtServerSession *session, gpointer user_data)
{
  *(guint *) user_data += gt_server_session_get_n_tunnels (session);
}

static void
reset_idle_http_cb (GtServerSession *session, gpointer user_data)
{
  gt_server_session_reset_idle_http_streams (session, DRAIN_IDLE_HTTP_US);
}

static void
drain_session_cb (GtServerSession *session, gpointer user_data)
{
  gt_server_session_goaway (session, GT_ERROR_CODE_SHUTTING_DOWN, "server is shutting down");
  /* Release the tcp ports now so a new server (restart, upgrade) can open them. */
  gt_server_session_close_ports (session);
}

static void
cluster_left_cb (gpointer user_data)
{
  g_autoptr (GtServer) server = user_data;

  g_signal_emit (server, signals[SIGNAL_DRAINED], 0);
}

static gboolean
drain_check_cb (gpointer user_data)
{
  GtServer *server = user_data;
  guint n = 0;

  gt_server_registry_foreach (server->registry, reset_idle_http_cb, NULL);
  gt_server_registry_foreach (server->registry, add_streams_cb, &n);

  if (n > 0 && g_get_monotonic_time () < server->drain_deadline)
    return G_SOURCE_CONTINUE;
  if (n > 0)
    g_message ("drain time is over; closing %u streams", n);
  else
    g_message ("all streams finished");
  server->drain_id = 0;
  gt_server_stop (server);
  if (server->cluster != NULL)
    {
      /* Give the lease back before saying drained (the loop ends then): every claim goes at
       * once and the clients can move now, not after cluster.ttl. Bounded by the cluster. */
      gt_cluster_leave_async (server->cluster, cluster_left_cb, g_object_ref (server));
      return G_SOURCE_REMOVE;
    }
  g_signal_emit (server, signals[SIGNAL_DRAINED], 0);
  return G_SOURCE_REMOVE;
}

/* Second step of the drain: the clients move to the new server, the streams here finish. */
static void
drain_move_clients (GtServer *server)
{
  server->moving = TRUE;
  gt_server_registry_foreach (server->registry, drain_session_cb, NULL);
  server->drain_id = g_timeout_add (100, drain_check_cb, server);
}

/* First step: connections accepted before the listeners closed finish their request head and
 * are routed to the clients' tunnels here, which the clients would otherwise be leaving. */
static gboolean
drain_pending_check_cb (gpointer user_data)
{
  GtServer *server = user_data;
  guint n = g_hash_table_size (server->pending);

  if (n > 0 && g_get_monotonic_time () - server->drain_started < DRAIN_PENDING_US)
    return G_SOURCE_CONTINUE;
  if (n > 0)
    g_message ("%u connections did not finish their request head in time; clients are asked to "
               "move",
               n);
  drain_move_clients (server);
  return G_SOURCE_REMOVE;
}

void
gt_server_drain (GtServer *server)
{
  g_return_if_fail (GT_IS_SERVER (server));
  if (server->stopped || server->drain_id != 0 || server->moving)
    return;
  g_message ("draining: no new connections; clients are asked to move (up to %" G_GUINT64_FORMAT
             " ms for streams to finish)",
             server->config->drain_timeout_ms);
  server_stop_listening (server);
  server->drain_started = g_get_monotonic_time ();
  server->drain_deadline
    = server->drain_started + (gint64) server->config->drain_timeout_ms * 1000;
  if (g_hash_table_size (server->pending) > 0)
    server->drain_id = g_timeout_add (10, drain_pending_check_cb, server);
  else
    drain_move_clients (server);
}

/* ------------------------------------------------------------------------------------------ */
/* Public API */

void
gt_server_add_ephemeral_user (GtServer *server, const char *id, const char *secret)
{
  g_return_if_fail (GT_IS_SERVER (server));
  g_hash_table_replace (server->ephemeral, g_strdup (id), g_strdup (secret));
}

void
gt_server_remove_ephemeral_user (GtServer *server, const char *id)
{
  GtServerSession *s;

  g_return_if_fail (GT_IS_SERVER (server));
  g_hash_table_remove (server->ephemeral, id);
  s = gt_server_registry_lookup (server->registry, id);
  if (s != NULL)
    gt_server_session_close_tunnels (s, GT_ERROR_CODE_NONE, NULL);
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
  return gt_server_registry_get_n_sessions (server->registry);
}

guint
gt_server_get_n_tunnels (GtServer *server)
{
  guint n = 0;

  gt_server_registry_foreach (server->registry, add_tunnels_cb, &n);
  return n;
}

GtServer *
gt_server_new (GtServerConfig *config)
{
  GtServer *server = g_object_new (GT_TYPE_SERVER, NULL);
  g_autofree char *reply = _gt_server_http_reply (
    502, "Bad Gateway", "the gt client could not reach its local service\n");

  server->config = config;
  server->global_pool = gt_port_pool_new (config->tcp_ranges);
  server->udp_pool = gt_port_pool_new (config->udp_ranges);
  for (guint i = 0; i < config->users->len; i++)
    {
      GtUserConfig *u = config->users->pdata[i];

      /* What a user owns in the config is never first-come: its id as a host prefix, and its
       * own tcp ports (validation keeps them out of the shared pool and other users' pools). */
      gt_server_registry_set_owner (server->registry, u->id, u->id);
      if (u->tcp_ranges != NULL && u->tcp_ranges->len > 0)
        g_hash_table_insert (server->user_pools, g_strdup (u->id),
                             gt_port_pool_new (u->tcp_ranges));
    }
  server->bad_gateway = g_bytes_new (reply, strlen (reply));
  server->lockout = gt_lockout_new (config->reconnect_times, config->reconnect_duration_ms);
  if (config->auth_api != NULL)
    server->auth_api
      = gt_auth_api_new (config->auth_api, (guint) MIN (config->timeout_ms, G_MAXUINT),
                         GT_AUTH_API_MAX_REQUESTS, GT_AUTH_API_MAX_PER_ADDRESS,
                         GT_AUTH_API_CACHE_MS);
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

  g_clear_pointer (&server->registry, gt_server_registry_free);
  g_clear_pointer (&server->cluster, gt_cluster_free);
  g_ptr_array_unref (server->listeners);
  g_clear_object (&server->certificate);
  g_clear_pointer (&server->trusted_proxies, gt_cidr_list_free);
  g_hash_table_unref (server->pending);
  g_hash_table_unref (server->forward_links);
  g_hash_table_unref (server->user_pools);
  g_hash_table_unref (server->ephemeral);
  g_ptr_array_unref (server->draining);
  g_ptr_array_unref (server->route_waiters);
  _gt_server_counters_clear (&server->counters);
  /* Logins still waiting for the auth API are answered (and dropped) before the lockout goes. */
  g_clear_pointer (&server->auth_api, gt_auth_api_free);
  g_clear_pointer (&server->lockout, gt_lockout_free);
  gt_port_pool_free (server->global_pool);
  gt_port_pool_free (server->udp_pool);
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
  server->listeners = _gt_server_listeners_new ();
  server->registry = gt_server_registry_new ();
  server->pending = _gt_server_pending_new ();
  server->forward_links = _gt_server_forward_links_new ();
  server->user_pools = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                              (GDestroyNotify) gt_port_pool_free);
  server->ephemeral = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  server->draining = g_ptr_array_new_with_free_func (g_object_unref);
  server->route_waiters = g_ptr_array_new ();
  _gt_server_counters_init (&server->counters);
}
