/* gt-server-udp.c: the udp ports of clients' udp services: each user source (address and port)
 * is a flow whose datagrams go to the client as DATAGRAMs, and whose replies go back to it. */
#include "config.h"

#define G_LOG_DOMAIN "gt-server"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-fd-source.h"
#include "gt-server-private.h"
#include "gt-transport.h"

/* Datagrams read from one port per wakeup before the main loop gets a turn. */
#define UDP_BATCH 64
/* A receive buffer takes the largest UDP datagram (and tells a larger one by its length). */
#define UDP_BUF_SIZE (GT_DATAGRAM_MAX_DATA + 1)

typedef struct _GtServerUdpFlow GtServerUdpFlow;

struct _GtServerUdpPort
{
  GtServerSession *session; /* not owned */
  guint16 service_index;
  guint16 port;
  GtPortPool *pool; /* not owned */
  int fd;
  GtFdWatch *source;
  GHashTable *by_addr; /* sockaddr bytes (the flow's) → GtServerUdpFlow* (owned) */
  GQueue lru;          /* GtServerUdpFlow*: least recently active first */
  gboolean evict_logged;
};

struct _GtServerUdpFlow
{
  GtServerUdpPort *port;
  guint32 id;
  struct sockaddr_storage addr;
  socklen_t addr_len;
  gint64 last_us;
  GtMux *mux; /* the tunnel its datagrams take while it stays open (a reference) */
  GList link; /* in port->lru */
};

/* The server's counters (NULL for the status self-test, which is kept out of the metrics). */
static GtServerCounters *
port_counters (GtServerUdpPort *p)
{
  return p->session->ephemeral ? NULL : p->session->counters;
}

#define COUNT(p, field)                                                                         \
  G_STMT_START                                                                                  \
  {                                                                                             \
    GtServerCounters *c_ = port_counters (p);                                                   \
    if (c_ != NULL)                                                                             \
      c_->field++;                                                                              \
  }                                                                                             \
  G_STMT_END

/* Flow ids are unique in the server process, so a client that reconnects never takes a new
 * flow for an old one. 0 is never used. */
static guint32 next_flow_id;

static guint32
flow_id_new (void)
{
  guint32 id;

  do
    id = (guint32) g_atomic_int_add ((gint *) &next_flow_id, 1) + 1;
  while (id == 0);
  return id;
}

/* Key of the by_addr table: the bytes that tell two sources apart. */
typedef struct
{
  guint8 len;
  guint8 bytes[1 + 16 + 2];
} AddrKey;

static void
addr_key_set (AddrKey *key, const struct sockaddr_storage *ss)
{
  memset (key, 0, sizeof *key);
  if (ss->ss_family == AF_INET6)
    {
      const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *) ss;

      key->bytes[0] = 6;
      memcpy (key->bytes + 1, &s6->sin6_addr, 16);
      memcpy (key->bytes + 17, &s6->sin6_port, 2);
      key->len = 19;
    }
  else
    {
      const struct sockaddr_in *s4 = (const struct sockaddr_in *) ss;

      key->bytes[0] = 4;
      memcpy (key->bytes + 1, &s4->sin_addr, 4);
      memcpy (key->bytes + 5, &s4->sin_port, 2);
      key->len = 7;
    }
}

static guint
addr_key_hash (gconstpointer p)
{
  const AddrKey *k = p;
  guint h = 5381;

  for (guint i = 0; i < k->len; i++)
    h = h * 33 + k->bytes[i];
  return h;
}

static gboolean
addr_key_equal (gconstpointer a, gconstpointer b)
{
  const AddrKey *x = a, *y = b;

  return x->len == y->len && memcmp (x->bytes, y->bytes, x->len) == 0;
}

static void
flow_forget (GtServerUdpFlow *f)
{
  GtServerUdpPort *p = f->port;
  AddrKey key;

  g_queue_unlink (&p->lru, &f->link);
  g_hash_table_remove (p->session->udp_flows, GUINT_TO_POINTER (f->id));
  addr_key_set (&key, &f->addr);
  g_hash_table_remove (p->by_addr, &key); /* frees f */
}

static void
flow_free (gpointer data)
{
  GtServerUdpFlow *f = data;

  g_clear_object (&f->mux);
  g_free (f);
}

static void
flow_touch (GtServerUdpFlow *f, gint64 now)
{
  f->last_us = now;
  g_queue_unlink (&f->port->lru, &f->link);
  g_queue_push_tail_link (&f->port->lru, &f->link);
}

void
_gt_server_udp_port_free (GtServerUdpPort *p)
{
  /* The session's id table points into this port's flows. */
  while (p->lru.head != NULL)
    flow_forget (p->lru.head->data);
  g_hash_table_unref (p->by_addr);
  gt_fd_watch_free (p->source);
  if (p->fd >= 0)
    close (p->fd);
  if (p->pool != NULL)
    gt_port_pool_release (p->pool, p->port);
  g_free (p);
}

static GtServerUdpFlow *
flow_new (GtServerUdpPort *p, const struct sockaddr_storage *from, socklen_t from_len)
{
  GtServerUdpFlow *f;
  AddrKey *key;

  if (g_hash_table_size (p->by_addr) >= GT_SERVER_UDP_MAX_FLOWS)
    {
      if (!p->evict_logged)
        g_message ("client %s: udp port %u has %u flows: the least recently active are "
                   "forgotten from now on",
                   p->session->id, p->port, (guint) GT_SERVER_UDP_MAX_FLOWS);
      p->evict_logged = TRUE;
      flow_forget (p->lru.head->data);
    }
  f = g_new0 (GtServerUdpFlow, 1);
  f->port = p;
  f->id = flow_id_new ();
  memcpy (&f->addr, from, MIN ((gsize) from_len, sizeof f->addr));
  f->addr_len = from_len;
  f->link.data = f;
  key = g_new (AddrKey, 1);
  addr_key_set (key, from);
  g_hash_table_insert (p->by_addr, key, f);
  g_hash_table_insert (p->session->udp_flows, GUINT_TO_POINTER (f->id), f);
  g_queue_push_tail_link (&p->lru, &f->link);
  COUNT (p, udp_flows);
  return f;
}

/* The tunnel a flow's datagrams take: the same one while it is open (datagrams of one flow stay
 * in order), else the session's pick. */
static GtMux *
flow_tunnel (GtServerUdpFlow *f)
{
  if (f->mux != NULL && !gt_mux_is_closed (f->mux) && !gt_mux_is_going_away (f->mux))
    return f->mux;
  g_clear_object (&f->mux);
  f->mux = gt_server_session_pick_tunnel (f->port->session);
  if (f->mux != NULL && !gt_mux_get_datagrams (f->mux))
    f->mux = NULL;
  if (f->mux != NULL)
    g_object_ref (f->mux);
  return f->mux;
}

static void
udp_port_read_cb (int fd, GIOCondition revents, gpointer user_data)
{
  GtServerUdpPort *p = user_data;
  /* A tunnel that fails while a datagram is written may end the session: it stays until the
   * loop is done, and the loop stops once the port is gone. */
  g_autoptr (GtServerSession) s = g_object_ref (p->session);
  gint64 now = g_get_monotonic_time ();

  if (s->udp_buf == NULL)
    s->udp_buf = g_malloc (UDP_BUF_SIZE);
  for (int k = 0; k < UDP_BATCH; k++)
    {
      struct sockaddr_storage from;
      socklen_t from_len = sizeof from;
      ssize_t n = recvfrom (fd, s->udp_buf, UDP_BUF_SIZE, MSG_TRUNC, (struct sockaddr *) &from,
                            &from_len);
      GtServerUdpFlow *f;
      GtMux *mux;
      AddrKey key;

      if (n < 0)
        {
          if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            g_debug ("udp port %u: %s", p->port, g_strerror (errno));
          return;
        }
      if (n > GT_DATAGRAM_MAX_DATA
          || (from.ss_family != AF_INET && from.ss_family != AF_INET6))
        {
          COUNT (p, udp_dropped);
          continue;
        }
      COUNT (p, udp_in);
      /* The client's speed limit: a datagram passes whole or not at all. */
      if (s->rate != NULL && !gt_token_bucket_take_whole (&s->rate->from_socket, n, now))
        {
          COUNT (p, udp_dropped);
          continue;
        }
      addr_key_set (&key, &from);
      f = g_hash_table_lookup (p->by_addr, &key);
      if (f == NULL)
        {
          f = flow_new (p, &from, from_len);
          g_debug ("client %s: udp port %u: new flow %u", s->id, p->port, f->id);
        }
      flow_touch (f, now);
      mux = flow_tunnel (f);
      if (mux == NULL || !gt_mux_send_datagram (mux, f->id, p->service_index, s->udp_buf, n))
        {
          if (!g_ptr_array_find (s->udp_ports, p, NULL))
            return;
          COUNT (p, udp_dropped);
        }
    }
}

/* A datagram from the client: the reply of a flow goes to its user source. */
static void
session_datagram_cb (GtMux *mux, guint32 flow_id, guint16 service_index, const guint8 *data,
                     gsize len, gpointer user_data)
{
  GtServerSession *s = user_data;
  GtServerUdpFlow *f = g_hash_table_lookup (s->udp_flows, GUINT_TO_POINTER (flow_id));
  gint64 now = g_get_monotonic_time ();

  if (f == NULL || f->port->service_index != service_index)
    {
      /* Forgotten (idle or evicted), or never ours: dropped as a stray datagram would be. */
      g_debug ("client %s: datagram for unknown udp flow %u dropped", s->id, flow_id);
      return;
    }
  flow_touch (f, now);
  if (s->rate != NULL && !gt_token_bucket_take_whole (&s->rate->to_socket, len, now))
    {
      COUNT (f->port, udp_dropped);
      return;
    }
  if (sendto (f->port->fd, data, len, 0, (struct sockaddr *) &f->addr, f->addr_len) < 0)
    {
      COUNT (f->port, udp_dropped);
      g_debug ("udp port %u: %s", f->port->port, g_strerror (errno));
      return;
    }
  COUNT (f->port, udp_out);
}

static gboolean
udp_expire_cb (gpointer user_data)
{
  GtServerSession *s = user_data;
  gint64 limit = g_get_monotonic_time () - (gint64) s->udp_timeout_ms * 1000;

  for (guint i = 0; i < s->udp_ports->len; i++)
    {
      GtServerUdpPort *p = s->udp_ports->pdata[i];

      while (p->lru.head != NULL && ((GtServerUdpFlow *) p->lru.head->data)->last_us < limit)
        {
          g_debug ("client %s: udp port %u: flow %u idle, forgotten", s->id, p->port,
                   ((GtServerUdpFlow *) p->lru.head->data)->id);
          flow_forget (p->lru.head->data);
        }
    }
  return G_SOURCE_CONTINUE;
}

/* A UDP socket of a udp port. Without SO_REUSEADDR (unlike gt_udp_bind_on): on Linux it would
 * let another socket with it bind the same port and take the users' datagrams. */
static int
udp_port_bind (GInetAddress *address, guint16 port, GError **error)
{
  g_autoptr (GSocketAddress) sa = g_inet_socket_address_new (address, port);
  struct sockaddr_storage ss;
  int fd;

  if (!g_socket_address_to_native (sa, &ss, sizeof ss, error))
    return -1;
  fd = socket (ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind (fd, (struct sockaddr *) &ss, g_socket_address_get_native_size (sa)) < 0)
    {
      int saved = errno;
      g_autofree char *text = g_inet_address_to_string (address);

      if (fd >= 0)
        close (fd);
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved),
                   "cannot bind udp port %s:%u: %s", text, port, g_strerror (saved));
      return -1;
    }
  return fd;
}

void
_gt_server_session_udp_attach (GtServerSession *s, GtMux *mux)
{
  if (s->udp_ports->len == 0)
    return;
  gt_mux_set_datagram_func (mux, session_datagram_cb, s);
}

GtErrorCode
_gt_server_session_open_udp (GtServerSession *s, guint16 index, const GtHelloService *svc,
                             GtPortPool *pool, GInetAddress *listen_inet, char **message)
{
  GtServerUdpPort *p;
  GtWelcomePort wp;
  guint16 port = 0;
  int fd;

  if (listen_inet == NULL)
    {
      *message = g_strdup ("no address to open udp ports on");
      return GT_ERROR_CODE_PORT_UNAVAILABLE;
    }
  fd = _gt_server_bind_service_port (svc, pool, udp_port_bind, listen_inet, "udp port",
                                     "udpRanges", &port, message);
  if (fd < 0)
    return GT_ERROR_CODE_PORT_UNAVAILABLE;
  p = g_new0 (GtServerUdpPort, 1);
  p->session = s;
  p->service_index = index;
  p->port = port;
  p->pool = pool;
  p->fd = fd;
  p->by_addr = g_hash_table_new_full (addr_key_hash, addr_key_equal, g_free, flow_free);
  p->source = gt_fd_watch_new (fd, G_IO_IN, udp_port_read_cb, p);
  g_ptr_array_add (s->udp_ports, p);
  wp.service_index = index;
  wp.port = port;
  g_array_append_val (s->ports, wp);
  if (s->udp_timer_id == 0)
    s->udp_timer_id = g_timeout_add_seconds (1, udp_expire_cb, s);
  g_message ("client %s: udp port %u opened for service %u", s->id, port, index);
  return GT_ERROR_CODE_NONE;
}

gboolean
_gt_server_session_holds_udp_port (GtServerSession *s, GtPortPool *pool, guint16 port)
{
  for (guint i = 0; s != NULL && i < s->udp_ports->len; i++)
    {
      GtServerUdpPort *p = s->udp_ports->pdata[i];

      if (p->pool == pool && p->port == port)
        return TRUE;
    }
  return FALSE;
}

gboolean
gt_server_session_has_udp_port (GtServerSession *session, guint16 port)
{
  g_return_val_if_fail (GT_IS_SERVER_SESSION (session), FALSE);
  return _gt_server_session_holds_udp_port (session, session->udp_pool, port);
}

guint
gt_server_session_get_n_udp_flows (GtServerSession *session)
{
  g_return_val_if_fail (GT_IS_SERVER_SESSION (session), 0);
  return g_hash_table_size (session->udp_flows);
}
