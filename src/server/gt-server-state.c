/* gt-server-state.c: a snapshot of the running server (clients, tunnels, streams, traffic) as a
 * GVariant, and disconnecting a client: what the admin UI and D-Bus read and do. */
#include "config.h"

#define G_LOG_DOMAIN "gt-server"

#include "gt-server-private.h"

static char *
format_open_addr (const GtOpenAddr *addr)
{
  g_autoptr (GInetAddress) inet = NULL;
  g_autofree char *host = NULL;

  if (addr == NULL || (addr->family != 4 && addr->family != 6))
    return g_strdup ("");
  inet = g_inet_address_new_from_bytes (addr->src, addr->family == 4 ? G_SOCKET_FAMILY_IPV4
                                                                      : G_SOCKET_FAMILY_IPV6);
  host = g_inet_address_to_string (inet);
  if (addr->family == 6)
    return g_strdup_printf ("[%s]:%u", host, addr->src_port);
  return g_strdup_printf ("%s:%u", host, addr->src_port);
}

typedef struct
{
  GtServerSession *session;
  GVariantBuilder *streams;
  guint tunnel_index;
  guint64 bytes_in;  /* from users toward the client's services */
  guint64 bytes_out;
} StreamWalk;

static void
add_stream_cb (GtMuxStream *stream, gpointer user_data)
{
  StreamWalk *w = user_data;
  guint index = gt_mux_stream_get_service_index (stream);
  guint64 in = gt_mux_stream_get_bytes_from_socket (stream);
  guint64 out = gt_mux_stream_get_bytes_to_socket (stream);
  g_autofree char *remote = format_open_addr (gt_mux_stream_get_addr (stream));
  const char *service = index < w->session->service_labels->len
                          ? w->session->service_labels->pdata[index]
                          : "";

  w->bytes_in += in;
  w->bytes_out += out;
  g_variant_builder_open (w->streams, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (w->streams, "{sv}", "id",
                         g_variant_new_uint32 (gt_mux_stream_get_id (stream)));
  g_variant_builder_add (w->streams, "{sv}", "tunnel", g_variant_new_uint32 (w->tunnel_index));
  g_variant_builder_add (w->streams, "{sv}", "service", g_variant_new_string (service));
  g_variant_builder_add (w->streams, "{sv}", "remote", g_variant_new_string (remote));
  g_variant_builder_add (w->streams, "{sv}", "bytesIn", g_variant_new_uint64 (in));
  g_variant_builder_add (w->streams, "{sv}", "bytesOut", g_variant_new_uint64 (out));
  g_variant_builder_add (w->streams, "{sv}", "idleMs",
                         g_variant_new_uint64 (gt_mux_stream_get_idle_us (stream) / 1000));
  g_variant_builder_close (w->streams);
}

typedef struct
{
  GtServer *server;
  GVariantBuilder clients;
  guint64 bytes_in;
  guint64 bytes_out;
  guint n_streams;
} Walk;

static void
add_client_cb (GtServerSession *session, gpointer user_data)
{
  Walk *walk = user_data;
  GVariantBuilder tunnels;
  GVariantBuilder streams;
  GVariantBuilder services;
  StreamWalk sw = { session, &streams, 0, 0, 0 };
  guint64 done_in = 0, done_out = 0;

  if (session->ephemeral)
    return; /* the /status self-test */
  g_variant_builder_init (&tunnels, G_VARIANT_TYPE ("aa{sv}"));
  g_variant_builder_init (&streams, G_VARIANT_TYPE ("aa{sv}"));
  g_variant_builder_init (&services, G_VARIANT_TYPE ("as"));
  for (guint i = 0; i < session->tunnels->len; i++)
    {
      GtMux *mux = session->tunnels->pdata[i];
      const char *peer = gt_mux_get_peer (mux);

      g_variant_builder_open (&tunnels, G_VARIANT_TYPE_VARDICT);
      g_variant_builder_add (&tunnels, "{sv}", "index", g_variant_new_uint32 (i));
      g_variant_builder_add (&tunnels, "{sv}", "peer", g_variant_new_string (peer ? peer : ""));
      g_variant_builder_add (&tunnels, "{sv}", "streams",
                             g_variant_new_uint32 (gt_mux_get_n_streams (mux)));
      g_variant_builder_add (&tunnels, "{sv}", "bytesIn",
                             g_variant_new_uint64 (gt_mux_get_bytes_in (mux)));
      g_variant_builder_add (&tunnels, "{sv}", "bytesOut",
                             g_variant_new_uint64 (gt_mux_get_bytes_out (mux)));
      g_variant_builder_close (&tunnels);
      sw.tunnel_index = i;
      gt_mux_foreach_stream (mux, add_stream_cb, &sw);
    }
  for (guint i = 0; i < session->service_labels->len; i++)
    g_variant_builder_add (&services, "s", (const char *) session->service_labels->pdata[i]);
  _gt_server_counters_get_user_traffic (&walk->server->counters, session->id, &done_in,
                                        &done_out);
  walk->bytes_in += sw.bytes_in;
  walk->bytes_out += sw.bytes_out;
  walk->n_streams += gt_server_session_get_n_streams (session);

  g_variant_builder_open (&walk->clients, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&walk->clients, "{sv}", "id", g_variant_new_string (session->id));
  g_variant_builder_add (&walk->clients, "{sv}", "services", g_variant_builder_end (&services));
  g_variant_builder_add (&walk->clients, "{sv}", "tunnels", g_variant_builder_end (&tunnels));
  g_variant_builder_add (&walk->clients, "{sv}", "streams", g_variant_builder_end (&streams));
  /* Cumulative: finished streams of this id plus the open ones. */
  g_variant_builder_add (&walk->clients, "{sv}", "bytesIn",
                         g_variant_new_uint64 (done_in + sw.bytes_in));
  g_variant_builder_add (&walk->clients, "{sv}", "bytesOut",
                         g_variant_new_uint64 (done_out + sw.bytes_out));
  g_variant_builder_close (&walk->clients);
}

GVariant *
gt_server_get_state (GtServer *server)
{
  GVariantBuilder b;
  GVariantBuilder listeners;
  Walk walk = { server };
  guint64 done_in = 0, done_out = 0;

  g_return_val_if_fail (GT_IS_SERVER (server), NULL);

  g_variant_builder_init (&walk.clients, G_VARIANT_TYPE ("aa{sv}"));
  gt_server_registry_foreach (server->registry, add_client_cb, &walk);
  _gt_server_counters_get_user_traffic (&server->counters, NULL, &done_in, &done_out);

  g_variant_builder_init (&listeners, G_VARIANT_TYPE ("a{ss}"));
  for (guint i = 0; i < GT_N_LISTENERS; i++)
    {
      const char *addr = gt_listener_get_addr (server->config, i);

      if (addr != NULL)
        g_variant_builder_add (&listeners, "{ss}", gt_listener_info (i)->key, addr);
    }

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "kind", g_variant_new_string ("server"));
  g_variant_builder_add (&b, "{sv}", "listenAddress",
                         g_variant_new_string (server->listen_address ? server->listen_address
                                                                      : ""));
  g_variant_builder_add (&b, "{sv}", "listeners", g_variant_builder_end (&listeners));
  g_variant_builder_add (&b, "{sv}", "uptimeMs",
                         g_variant_new_uint64 (server->started_at > 0
                                                 ? (g_get_monotonic_time () - server->started_at)
                                                     / 1000
                                                 : 0));
  g_variant_builder_add (&b, "{sv}", "tunnels",
                         g_variant_new_uint32 (gt_server_get_n_tunnels (server)));
  g_variant_builder_add (&b, "{sv}", "streams", g_variant_new_uint32 (walk.n_streams));
  g_variant_builder_add (&b, "{sv}", "bytesIn", g_variant_new_uint64 (done_in + walk.bytes_in));
  g_variant_builder_add (&b, "{sv}", "bytesOut",
                         g_variant_new_uint64 (done_out + walk.bytes_out));
  g_variant_builder_add (&b, "{sv}", "clients", g_variant_builder_end (&walk.clients));
  return g_variant_ref_sink (g_variant_builder_end (&b));
}

gboolean
gt_server_disconnect_client (GtServer *server, const char *id)
{
  GtServerSession *session;

  g_return_val_if_fail (GT_IS_SERVER (server), FALSE);
  g_return_val_if_fail (id != NULL, FALSE);

  session = gt_server_registry_lookup (server->registry, id);
  if (session == NULL || session->ephemeral)
    return FALSE;
  g_message ("disconnecting client '%s' on request", id);
  /* Closing the last tunnel emits "closed": the server removes the session as for any loss. */
  gt_server_session_close_tunnels (session, GT_ERROR_CODE_NONE,
                                  "disconnected by the admin");
  return TRUE;
}
