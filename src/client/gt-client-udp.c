/* gt-client-udp.c: the client's udp services: one connected UDP socket toward the local service
 * per flow (a user source on the server's port), whose replies go back as datagrams. */
#include "config.h"

#define G_LOG_DOMAIN "gt-client"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-client-private.h"
#include "gt-fd-source.h"

/* Datagrams read from one flow's socket per wakeup before the main loop gets a turn. */
#define UDP_BATCH 64
#define UDP_BUF_SIZE (GT_DATAGRAM_MAX_DATA + 1)

typedef struct
{
  GtClientUdp *udp;
  guint32 id;
  guint16 service_index;
  int fd;
  GtFdWatch *source;
  GtMux *mux; /* the tunnel its last datagram came on; replies take it (a reference) */
  gint64 last_us;
  GList link; /* in the service's lru */
} Flow;

struct _GtClientUdp
{
  GtClient *client;       /* owns this */
  GPtrArray *services;    /* GtServiceConfig* (borrowed from the config) */
  GPtrArray *local_addrs; /* GSocketAddress* per service, NULL until resolved (borrowed) */
  GHashTable *flows;      /* flow id → Flow* (owned) */
  GQueue *lru;            /* per service: Flow*, least recently active first */
  gboolean *evict_logged; /* per service */
  gboolean *socket_failed; /* per service: the last socket for a flow failed (logged once) */
  guint timer_id;
  guint8 *buf;
  gboolean stray_logged;
};

static void
flow_free (gpointer data)
{
  Flow *f = data;

  gt_fd_watch_free (f->source);
  if (f->fd >= 0)
    close (f->fd);
  g_clear_object (&f->mux);
  g_free (f);
}

static void
flow_forget (Flow *f)
{
  g_queue_unlink (&f->udp->lru[f->service_index], &f->link);
  g_hash_table_remove (f->udp->flows, GUINT_TO_POINTER (f->id)); /* frees f */
}

static void
flow_touch (Flow *f)
{
  GQueue *q = &f->udp->lru[f->service_index];

  f->last_us = g_get_monotonic_time ();
  g_queue_unlink (q, &f->link);
  g_queue_push_tail_link (q, &f->link);
}

static void
flow_read_cb (int fd, GIOCondition revents, gpointer user_data)
{
  Flow *f = user_data;
  GtClientUdp *u = f->udp;
  guint32 id = f->id;

  for (int k = 0; k < UDP_BATCH; k++)
    {
      ssize_t n = recv (fd, u->buf, UDP_BUF_SIZE, MSG_TRUNC);

      if (n < 0)
        {
          /* ECONNREFUSED: an ICMP port unreachable from the local service; the user's next
           * datagram tries again. */
          if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            g_debug ("udp flow %u: %s", id, g_strerror (errno));
          return;
        }
      if (n > GT_DATAGRAM_MAX_DATA)
        continue;
      flow_touch (f);
      if (f->mux == NULL || gt_mux_is_closed (f->mux))
        {
          /* Its tunnel is gone: another one of the client's takes the replies. */
          GtMux *other = _gt_client_pick_datagram_tunnel (u->client);

          if (other == NULL)
            continue;
          g_set_object (&f->mux, other);
        }
      gt_mux_send_datagram (f->mux, f->id, f->service_index, u->buf, n);
      /* Sending cannot end the flow (only the timer and new flows do), but stay careful. */
      if (g_hash_table_lookup (u->flows, GUINT_TO_POINTER (id)) != f)
        return;
    }
}

static Flow *
flow_new (GtClientUdp *u, guint32 id, guint16 index)
{
  const GtServiceConfig *svc = u->services->pdata[index];
  GSocketAddress *addr = u->local_addrs->len > index ? u->local_addrs->pdata[index] : NULL;
  struct sockaddr_storage ss;
  GQueue *q = &u->lru[index];
  g_autoptr (GError) error = NULL;
  Flow *f;
  int fd;

  if (addr == NULL)
    {
      g_debug ("udp service %u (%s): its address is not resolved (yet); datagram dropped",
               index, svc->local_url);
      return NULL;
    }
  if (!g_socket_address_to_native (addr, &ss, sizeof ss, &error))
    return NULL;
  fd = socket (ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect (fd, (struct sockaddr *) &ss, g_socket_address_get_native_size (addr)) < 0)
    {
      /* Out of fds, say: one line until a socket works again, not one per datagram. */
      if (!u->socket_failed[index])
        g_message ("udp service %u (%s): no socket for a new flow: %s", index, svc->local_url,
                   g_strerror (errno));
      u->socket_failed[index] = TRUE;
      if (fd >= 0)
        close (fd);
      return NULL;
    }
  u->socket_failed[index] = FALSE;
  if (q->length >= GT_CLIENT_UDP_MAX_FLOWS)
    {
      if (!u->evict_logged[index])
        g_message ("udp service %u (%s) has %u flows: the least recently active are forgotten "
                   "from now on",
                   index, svc->local_url, (guint) GT_CLIENT_UDP_MAX_FLOWS);
      u->evict_logged[index] = TRUE;
      flow_forget (q->head->data);
    }
  f = g_new0 (Flow, 1);
  f->udp = u;
  f->id = id;
  f->service_index = index;
  f->fd = fd;
  f->link.data = f;
  f->source = gt_fd_watch_new (fd, G_IO_IN, flow_read_cb, f);
  g_hash_table_insert (u->flows, GUINT_TO_POINTER (id), f);
  g_queue_push_tail_link (q, &f->link);
  return f;
}

static void
datagram_cb (GtMux *mux, guint32 flow_id, guint16 service_index, const guint8 *data, gsize len,
             gpointer user_data)
{
  GtClientUdp *u = user_data;
  Flow *f;

  if (service_index >= u->services->len
      || ((GtServiceConfig *) u->services->pdata[service_index])->kind != GT_SERVICE_KIND_UDP)
    {
      if (!u->stray_logged)
        g_warning ("datagram for service %u, which is not a udp service: dropped (further ones "
                   "silently)",
                   service_index);
      u->stray_logged = TRUE;
      return;
    }
  f = g_hash_table_lookup (u->flows, GUINT_TO_POINTER (flow_id));
  if (f != NULL && f->service_index != service_index)
    {
      flow_forget (f);
      f = NULL;
    }
  if (f == NULL && (f = flow_new (u, flow_id, service_index)) == NULL)
    return;
  if (f->mux != mux)
    g_set_object (&f->mux, mux);
  flow_touch (f);
  if (send (f->fd, data, len, 0) < 0)
    g_debug ("udp flow %u: %s", flow_id, g_strerror (errno));
}

static gboolean
expire_cb (gpointer user_data)
{
  GtClientUdp *u = user_data;
  gint64 now = g_get_monotonic_time ();

  for (guint i = 0; i < u->services->len; i++)
    {
      const GtServiceConfig *svc = u->services->pdata[i];
      gint64 limit = now - (gint64) svc->local_timeout_ms * 1000;

      while (u->lru[i].head != NULL && ((Flow *) u->lru[i].head->data)->last_us < limit)
        flow_forget (u->lru[i].head->data);
    }
  return G_SOURCE_CONTINUE;
}

GtClientUdp *
_gt_client_udp_new (GtClient *client, GPtrArray *services, GPtrArray *local_addrs)
{
  GtClientUdp *u = g_new0 (GtClientUdp, 1);

  u->client = client;
  u->services = services;
  u->local_addrs = local_addrs;
  u->flows = g_hash_table_new_full (NULL, NULL, NULL, flow_free);
  u->lru = g_new0 (GQueue, MAX (services->len, 1));
  u->evict_logged = g_new0 (gboolean, MAX (services->len, 1));
  u->socket_failed = g_new0 (gboolean, MAX (services->len, 1));
  u->buf = g_malloc (UDP_BUF_SIZE);
  u->timer_id = g_timeout_add_seconds (1, expire_cb, u);
  return u;
}

void
_gt_client_udp_free (GtClientUdp *u)
{
  g_clear_handle_id (&u->timer_id, g_source_remove);
  g_hash_table_unref (u->flows);
  g_free (u->lru);
  g_free (u->evict_logged);
  g_free (u->socket_failed);
  g_free (u->buf);
  g_free (u);
}

void
_gt_client_udp_attach (GtClientUdp *u, GtMux *mux)
{
  gt_mux_set_datagrams (mux, TRUE);
  gt_mux_set_datagram_func (mux, datagram_cb, u);
}

guint
_gt_client_udp_get_n_flows (GtClientUdp *u)
{
  return g_hash_table_size (u->flows);
}
