/* gt-client.c: keeps tunnels to the server up (backoff + jitter) and dials local services. */
#include "config.h"

#define G_LOG_DOMAIN "gt-client"

#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-client.h"
#include "gt-client-backoff.h"
#include "gt-client-probe.h"
#include "gt-client-private.h"
#include "gt-fd-source.h"
#include "gt-frame.h"
#include "gt-http.h"
#include "gt-log.h"
#include "gt-mux.h"
#include "gt-proxy-protocol.h"
#include "gt-relay-endpoint.h"
#include "gt-remote-api.h"
#include "gt-transport.h"
#include "gt-xp.h"

#define HANDSHAKE_REPLY_MAX (GT_FRAME_HEADER_SIZE + GT_FRAME_MAX_CONTROL)
/* The handshake buffer: the reply plus what may follow it in the same reads. */
#define HANDSHAKE_BUF_SIZE (HANDSHAKE_REPLY_MAX + 64 * 1024)
/* Length of the secret made up when none is set (as GT). */
#define RANDOM_SECRET_LEN 64
/* Draining closes HTTP streams idle for this long (keep-alive between requests). */
#define DRAIN_IDLE_HTTP_US (1 * G_USEC_PER_SEC)
/* Draining waits this long for a server's answer to GOAWAY (older servers send none) before it
 * counts on no further OPEN coming. */
#define DRAIN_GOAWAY_ANSWER_US (2 * G_USEC_PER_SEC)
/* Auto mode: probes again this often, and at most this often after a tunnel failed. */
#define PROBE_PERIOD_MS (5 * 60 * 1000)
#define PROBE_RETRY_MS (10 * 1000)
/* A round of probes decides by then at the latest: a probe still connecting (a TCP handshake
 * into a black hole) counts as failed. */
#define PROBE_DEADLINE_MS 4000
/* A QUIC handshake that gets no answer gives up after this when other remotes remain. */
#define QUIC_FALLBACK_HANDSHAKE_MS 3000

typedef enum
{
  SLOT_IDLE,
  SLOT_CONNECTING,
  SLOT_READY,
  SLOT_WAITING,
} SlotState;

typedef struct
{
  GtClient *client;
  guint index;
  SlotState state;
  guint remote_index;
  GCancellable *cancellable;
  GIOStream *io;    /* during the handshake */
  guint8 *buf;
  gsize len;
  guint handshake_timeout_id;
  GtMux *mux;
  guint retry_id;
  GtClientBackoff backoff;
  gboolean off_choice; /* auto mode: the chosen remote failed here; the list order rules */
} Slot;

typedef struct
{
  GtClient *client;
  GtMuxStream *stream;
  int fd;
  GtFdWatch *source;
  guint service_index;
  const GtServiceConfig *service;
  gboolean waiting; /* for the service's address lookup */
} Dial;

typedef struct
{
  GtClient *client;
  guint service_index;
} Lookup;

struct _GtClient
{
  GObject parent_instance;

  GtClientConfig *config;
  Slot *slots;
  guint n_slots;
  GByteArray *hello; /* preface + HELLO frame */
  GPtrArray *local_addrs; /* GSocketAddress* per service (NULL if resolution failed) */
  gboolean *resolving;    /* per service: host name lookup in progress */
  GCancellable *lookups;  /* cancels the lookups on stop */
  GArray *tcp_ports;      /* guint16 per service */
  GHashTable *dials;      /* Dial* in progress */
  GPtrArray *draining;    /* GtMux* that got GOAWAY and still carry streams */
  GtClientSignallingFunc signalling_func;
  gpointer signalling_data;
  GtClientForward *forward; /* tcpForward: NULL unless asked for */
  GtClientUdp *udp;         /* udp services: NULL without any */
  gboolean udp_refused_logged;
  gboolean forward_refused_logged;
  gboolean stopped;
  gboolean random_secret; /* options.secret was not set: made up for this run */
  guint drain_id;
  gint64 drain_started;
  gint64 drain_deadline;
  /* Traffic of the tunnels already gone, and every stream opened (gt_client_get_traffic). */
  guint64 gone_bytes_in, gone_bytes_out;
  guint64 streams_total;
  /* remoteAPI: the server address it gave, asked again after a tunnel drops or fails */
  SoupSession *api_session;
  GtRemote *api_remote;
  gboolean api_stale;
  gboolean api_querying;
  guint api_retry_id;
  /* auto mode: remotes of several transports, chosen by probes (gt-client-probe.c) */
  gboolean auto_mode;
  gboolean decided;             /* the first round of probes ended */
  int chosen;                   /* index in config->remotes, -1 = none answered */
  GtProbeResult *probe_results; /* per remote, of the last round */
  guint probes_left;            /* of the round in progress */
  gboolean *probe_waiting;      /* per remote: its probe of this round has not ended */
  GCancellable *probe_round;    /* cancelled at the round's deadline and on stop */
  guint probe_deadline_id;
  guint probe_id;               /* the next round */
  gint64 probe_at_us;           /* when it starts */
  gint64 last_probe_us;
  char *choice_reason;
};

enum
{
  PROP_0,
  PROP_N_READY,
  N_PROPS
};

enum
{
  SIGNAL_TUNNEL_READY,
  SIGNAL_TUNNEL_FAILED,
  SIGNAL_DRAINED,
  N_SIGNALS
};

static GParamSpec *properties[N_PROPS];
static guint signals[N_SIGNALS];

G_DEFINE_FINAL_TYPE (GtClient, gt_client, G_TYPE_OBJECT)

static void slot_connect (Slot *slot);
static void client_probe_later (GtClient *client, guint delay_ms);
static GtTransportSecurity client_security (GtClient *client);
static void client_auto_move_next (GtClient *client);

static void
object_unref0 (gpointer object)
{
  if (object != NULL)
    g_object_unref (object);
}

static const GtRemote *
slot_remote (Slot *slot)
{
  GtClientConfig *config = slot->client->config;

  /* slot_connect runs only once the remote API answered. */
  if (config->remote_api != NULL)
    return slot->client->api_remote;
  return config->remotes->pdata[slot->remote_index % config->remotes->len];
}

static char *
remote_to_string (const GtRemote *r)
{
  if (strchr (r->host, ':') != NULL && r->host[0] != '[')
    return g_strdup_printf ("%s://[%s]:%u", r->scheme, r->host, r->port);
  return g_strdup_printf ("%s://%s:%u", r->scheme, r->host, r->port);
}

/* ------------------------------------------------------------------------------------------ */
/* Local dialing */

static void
dial_free (Dial *d)
{
  gt_fd_watch_free (d->source);
  if (d->fd >= 0)
    close (d->fd);
  g_clear_pointer (&d->stream, gt_mux_stream_unref);
  g_free (d);
}

static GInetSocketAddress *
open_addr_to_socket_address (guint8 family, const guint8 *bytes, guint16 port)
{
  g_autoptr (GInetAddress) ia = g_inet_address_new_from_bytes (
    bytes, family == 6 ? G_SOCKET_FAMILY_IPV6 : G_SOCKET_FAMILY_IPV4);

  return G_INET_SOCKET_ADDRESS (g_inet_socket_address_new (ia, port));
}

/* PROXY protocol out: tells the local service who the user really is. */
static gboolean
send_proxy_header (Dial *d)
{
  const GtOpenAddr *addr = gt_mux_stream_get_addr (d->stream);
  g_autoptr (GBytes) header = NULL;
  g_autoptr (GInetSocketAddress) src = NULL;
  g_autoptr (GInetSocketAddress) dst = NULL;
  const guint8 *data;
  gsize len;
  gssize n;

  if (addr != NULL)
    {
      src = open_addr_to_socket_address (addr->family, addr->src, addr->src_port);
      dst = open_addr_to_socket_address (addr->family, addr->dst, addr->dst_port);
    }
  header = d->service->proxy_protocol == 2 ? gt_proxy_header_encode_v2 (src, dst)
                                           : gt_proxy_header_encode_v1 (src, dst);
  data = g_bytes_get_data (header, &len);
  /* A fresh connection's send buffer always takes a header this small. */
  n = send (d->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n != (gssize) len)
    {
      gt_log_service (G_LOG_LEVEL_MESSAGE, d->service->local_url,
                      "stream %u: cannot send the PROXY header to %s",
                      gt_mux_stream_get_id (d->stream), d->service->local_url);
      return FALSE;
    }
  return TRUE;
}

static void
dial_finish (Dial *d, int error_code)
{
  GtClient *client = d->client;
  GtMuxStream *stream = d->stream;

  if (gt_mux_stream_is_closed (stream))
    {
      g_hash_table_remove (client->dials, d);
      return;
    }
  if (error_code != 0)
    {
      gt_log_service (G_LOG_LEVEL_MESSAGE, d->service->local_url,
                      "stream %u: cannot connect to %s: %s", gt_mux_stream_get_id (stream),
                      d->service->local_url, g_strerror (error_code));
      gt_mux_stream_reset (stream, GT_RESET_CODE_CONNECT_FAILED);
      g_hash_table_remove (client->dials, d);
      return;
    }
  if (d->service->proxy_protocol != 0 && !send_proxy_header (d))
    {
      gt_mux_stream_reset (stream, GT_RESET_CODE_CONNECT_FAILED);
      g_hash_table_remove (client->dials, d);
      return;
    }
  {
    int fd = d->fd;

    d->fd = -1;
    g_clear_pointer (&d->source, gt_fd_watch_free);
    gt_mux_stream_attach_fd (stream, fd, d->service->local_timeout_ms);
  }
  g_hash_table_remove (client->dials, d);
}

static void
dial_fd_cb (int fd, GIOCondition revents, gpointer user_data)
{
  Dial *d = user_data;
  int err = 0;
  socklen_t len = sizeof err;

  if (getsockopt (fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
    err = errno;
  dial_finish (d, err);
}

static void
dial_start (Dial *d)
{
  GtClient *client = d->client;
  GSocketAddress *addr = client->local_addrs->pdata[d->service_index];
  struct sockaddr_storage ss;
  int fd;

  d->waiting = FALSE;
  if (gt_mux_stream_is_closed (d->stream))
    {
      g_hash_table_remove (client->dials, d);
      return;
    }
  if (addr == NULL)
    {
      gt_mux_stream_reset (d->stream, GT_RESET_CODE_CONNECT_FAILED);
      g_hash_table_remove (client->dials, d);
      return;
    }
  if (!g_socket_address_to_native (addr, &ss, sizeof ss, NULL))
    {
      dial_finish (d, EINVAL);
      return;
    }
  fd = socket (ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    {
      dial_finish (d, errno);
      return;
    }
  d->fd = fd;
  if (connect (fd, (struct sockaddr *) &ss, g_socket_address_get_native_size (addr)) == 0)
    {
      dial_finish (d, 0);
      return;
    }
  if (errno != EINPROGRESS)
    {
      dial_finish (d, errno);
      return;
    }
  d->source = gt_fd_watch_new (fd, G_IO_OUT, dial_fd_cb, d);
}

/* GT's XP method: the first request of the stream is P2P signalling, not for the service. */
static gboolean
is_signalling (GtMuxStream *stream, const GtServiceConfig *service)
{
  gsize len;
  const guint8 *data = gt_mux_stream_peek_pending (stream, &len);

  return service->kind == GT_SERVICE_KIND_HTTP && len >= 3 && memcmp (data, "XP ", 3) == 0;
}

/* Hands the stream to the signalling func through a socketpair (or refuses it as GT does). */
static void
start_signalling (GtClient *client, GtMuxStream *stream, const GtServiceConfig *service)
{
  int sv[2];

  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
    {
      g_message ("stream %u: socketpair: %s", gt_mux_stream_get_id (stream), g_strerror (errno));
      gt_mux_stream_reset (stream, GT_RESET_CODE_CONNECT_FAILED);
      return;
    }
  gt_mux_stream_attach_fd (stream, sv[0], service->local_timeout_ms);
  if (client->signalling_func != NULL)
    {
      client->signalling_func (client, sv[1], client->signalling_data);
      return;
    }
  /* A fresh socketpair's buffer takes these few bytes. */
  if (send (sv[1], GT_XP_FORBIDDEN, strlen (GT_XP_FORBIDDEN),
            MSG_NOSIGNAL | MSG_DONTWAIT)
      < 0)
    g_debug ("stream %u: cannot refuse P2P: %s", gt_mux_stream_get_id (stream), g_strerror (errno));
  shutdown (sv[1], SHUT_WR);
  /* Closing a unix socket with unread bytes would reset its peer before the 403 is read. */
  {
    char sink[4096];

    while (recv (sv[1], sink, sizeof sink, MSG_DONTWAIT) > 0)
      ;
  }
  close (sv[1]);
}

static void
stream_opened_cb (GtMux *mux, GtMuxStream *stream, guint service_index, gpointer user_data)
{
  GtClient *client = user_data;
  GtClientConfig *config = client->config;
  Dial *d;

  client->streams_total++;
  if (service_index >= config->services->len)
    {
      g_message ("stream %u: unknown service index %u", gt_mux_stream_get_id (stream),
                 service_index);
      gt_mux_stream_reset (stream, GT_RESET_CODE_NO_SERVICE);
      return;
    }
  if (is_signalling (stream, config->services->pdata[service_index]))
    {
      start_signalling (client, stream, config->services->pdata[service_index]);
      return;
    }

  d = g_new0 (Dial, 1);
  d->client = client;
  d->stream = gt_mux_stream_ref (stream);
  d->service_index = service_index;
  d->service = config->services->pdata[service_index];
  /* Now, while the request head that came with OPEN still waits in the stream. */
  if (d->service->use_local_as_http_host && d->service->kind == GT_SERVICE_KIND_HTTP)
    {
      g_autofree char *host = NULL;

      if (strchr (d->service->local_host, ':') != NULL && d->service->local_host[0] != '[')
        host = g_strdup_printf ("[%s]:%u", d->service->local_host, d->service->local_port);
      else
        host = g_strdup_printf ("%s:%u", d->service->local_host, d->service->local_port);
      gt_mux_stream_set_rewriter (stream, gt_host_rewriter_new (host));
    }
  d->fd = -1;
  g_hash_table_add (client->dials, d);
  /* Bytes from the user wait in the stream until the address is known. */
  d->waiting = client->resolving[service_index];
  if (!d->waiting)
    dial_start (d);
}

/* ------------------------------------------------------------------------------------------ */
/* Local service addresses: IP literals at once, host names without blocking the main loop */

static char *
local_host_bare (const char *host)
{
  gsize len = strlen (host);

  if (host[0] == '[' && len >= 2 && host[len - 1] == ']')
    return g_strndup (host + 1, len - 2);
  return g_strdup (host);
}

static void
lookup_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autofree Lookup *l = user_data;
  g_autoptr (GError) error = NULL;
  GList *list = g_resolver_lookup_by_name_finish (G_RESOLVER (source), result, &error);
  g_autoptr (GPtrArray) ready = NULL;
  GtServiceConfig *s;
  GtClient *client;
  GHashTableIter iter;
  gpointer key;

  if (list == NULL && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return; /* the client stopped (and may be gone) */
  client = l->client;
  s = client->config->services->pdata[l->service_index];
  client->resolving[l->service_index] = FALSE;
  if (list == NULL)
    gt_log_service (G_LOG_LEVEL_WARNING, s->local_url, "service %u (%s): cannot resolve %s: %s",
                    l->service_index, s->local_url, s->local_host, error->message);
  else
    {
      client->local_addrs->pdata[l->service_index] =
        g_inet_socket_address_new (list->data, s->local_port);
      g_resolver_free_addresses (list);
    }

  ready = g_ptr_array_new ();
  g_hash_table_iter_init (&iter, client->dials);
  while (g_hash_table_iter_next (&iter, &key, NULL))
    {
      Dial *d = key;

      if (d->waiting && d->service_index == l->service_index)
        g_ptr_array_add (ready, d);
    }
  for (guint i = 0; i < ready->len; i++)
    dial_start (ready->pdata[i]);
}

static void
client_resolve_services (GtClient *client)
{
  GPtrArray *services = client->config->services;
  g_autoptr (GResolver) resolver = NULL;

  client->resolving = g_new0 (gboolean, MAX (services->len, 1));
  for (guint i = 0; i < services->len; i++)
    {
      GtServiceConfig *s = services->pdata[i];
      g_autofree char *bare = local_host_bare (s->local_host);
      g_autoptr (GInetAddress) ia = g_inet_address_new_from_string (bare);
      Lookup *l;

      if (ia != NULL)
        {
          g_ptr_array_add (client->local_addrs, g_inet_socket_address_new (ia, s->local_port));
          continue;
        }
      g_ptr_array_add (client->local_addrs, NULL);
      if (resolver == NULL)
        resolver = g_resolver_get_default ();
      l = g_new0 (Lookup, 1);
      l->client = client;
      l->service_index = i;
      client->resolving[i] = TRUE;
      g_resolver_lookup_by_name_async (resolver, bare, client->lookups, lookup_done_cb, l);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Tunnel slots */

static gboolean
slot_retry_cb (gpointer user_data)
{
  Slot *slot = user_data;

  slot->retry_id = 0;
  slot_connect (slot);
  return G_SOURCE_REMOVE;
}

static void
slot_reset_handshake (Slot *slot)
{
  g_clear_handle_id (&slot->handshake_timeout_id, g_source_remove);
  if (slot->cancellable)
    {
      g_cancellable_cancel (slot->cancellable);
      g_clear_object (&slot->cancellable);
    }
  if (slot->io)
    {
      gt_relay_endpoint_close_io (slot->io);
      g_clear_object (&slot->io);
    }
  slot->len = 0;
}

/* delay: G_MAXUINT for the next backoff delay. */
static void
slot_schedule_retry_in (Slot *slot, guint delay)
{
  slot_reset_handshake (slot);
  if (slot->client->stopped)
    return;
  /* The server may have moved: the remote API is asked again before the next attempt. */
  slot->client->api_stale = TRUE;
  /* Auto mode: the chosen remote failed (not a planned move): the list order rules this slot
   * until the next choice, and the probes run again soon. */
  if (slot->client->auto_mode && delay != 0 && slot->client->chosen >= 0
      && slot->remote_index % slot->client->config->remotes->len == (guint) slot->client->chosen)
    {
      slot->off_choice = TRUE;
      client_probe_later (slot->client, 0);
    }
  /* Try the next remote in the list next time (fallback). The delay grows once per round over
   * the remotes: a dead server node must not slow the move to a living one (scale-out). */
  slot->remote_index++;
  if (delay != G_MAXUINT)
    ; /* the caller's (0 after a server's GOAWAY: move at once) */
  else if (slot->client->config->remotes->len > 1
           && slot->remote_index % slot->client->config->remotes->len != 0)
    delay = (guint) gt_client_backoff_get_delay_ms (&slot->backoff);
  else
    delay = gt_client_backoff_next (&slot->backoff);
  slot->state = SLOT_WAITING;
  g_message ("tunnel %u: retrying in %u ms", slot->index + 1, delay);
  g_clear_handle_id (&slot->retry_id, g_source_remove);
  slot->retry_id = g_timeout_add (delay, slot_retry_cb, slot);
}

static void
slot_schedule_retry (Slot *slot)
{
  slot_schedule_retry_in (slot, G_MAXUINT);
}

static void
client_count_gone (GtClient *client, GtMux *mux)
{
  client->gone_bytes_in += gt_mux_get_bytes_in (mux);
  client->gone_bytes_out += gt_mux_get_bytes_out (mux);
}

static void
slot_mux_closed_cb (GtMux *mux, GError *error, gpointer user_data)
{
  Slot *slot = user_data;
  GtClient *client = slot->client;

  g_signal_handlers_disconnect_by_data (mux, slot);
  if (slot->mux == mux)
    {
      g_message ("tunnel %u closed: %s", slot->index + 1, error ? error->message : "closed");
      client_count_gone (client, mux);
      g_clear_object (&slot->mux);
      slot->state = SLOT_IDLE;
      g_object_notify_by_pspec (G_OBJECT (client), properties[PROP_N_READY]);
      if (!client->stopped && client->drain_id == 0)
        slot_schedule_retry (slot);
    }
}

static void
draining_closed_cb (GtMux *mux, GError *error, gpointer user_data)
{
  GtClient *client = user_data;

  g_signal_handlers_disconnect_by_data (mux, client);
  client_count_gone (client, mux);
  g_ptr_array_remove (client->draining, mux);
}

static void
slot_mux_goaway_cb (GtMux *mux, gpointer user_data)
{
  Slot *slot = user_data;
  GtClient *client = slot->client;

  if (slot->mux != mux)
    return;
  /* Let the old tunnel finish its streams while a new one is built. */
  g_signal_handlers_disconnect_by_data (mux, slot);
  g_signal_handlers_disconnect_by_func (mux, stream_opened_cb, client);
  if (!gt_mux_is_closed (mux))
    {
      g_ptr_array_add (client->draining, g_object_ref (mux));
      g_signal_connect (mux, "closed", G_CALLBACK (draining_closed_cb), client);
    }
  g_clear_object (&slot->mux);
  slot->state = SLOT_IDLE;
  gt_client_backoff_reset (&slot->backoff);
  g_object_notify_by_pspec (G_OBJECT (client), properties[PROP_N_READY]);
  /* A planned move (the server restarts or drains): the users of our services wait for the new
   * tunnel, so it is built at once; failures after that back off as usual. */
  if (!client->stopped && client->drain_id == 0)
    slot_schedule_retry_in (slot, 0);
}

static void
slot_handshake_failed (Slot *slot, const char *what)
{
  g_autofree char *remote = remote_to_string (slot_remote (slot));

  g_message ("tunnel %u to %s failed: %s", slot->index + 1, remote, what);
  g_signal_emit (slot->client, signals[SIGNAL_TUNNEL_FAILED], 0, what);
  slot_schedule_retry (slot);
}

static void
slot_welcome (Slot *slot, guint8 flags, const guint8 *payload, gsize len, gsize consumed)
{
  GtClient *client = slot->client;
  g_autoptr (GError) error = NULL;
  guint32 caps = 0;
  g_autoptr (GArray) ports = gt_welcome_decode_flags (payload, len, flags, &caps, &error);
  g_autofree char *remote = remote_to_string (slot_remote (slot));
  guint n_ready = 0;

  if (ports == NULL)
    {
      slot_handshake_failed (slot, error->message);
      return;
    }
  for (guint i = 0; i < ports->len; i++)
    {
      GtWelcomePort *p = &g_array_index (ports, GtWelcomePort, i);

      if (p->service_index >= client->tcp_ports->len)
        continue;
      if (g_array_index (client->tcp_ports, guint16, p->service_index) != p->port)
        {
          const GtServiceConfig *s = client->config->services->pdata[p->service_index];

          g_array_index (client->tcp_ports, guint16, p->service_index) = p->port;
          g_message ("%s port=%u service=%u", s->kind == GT_SERVICE_KIND_UDP ? "udp" : "tcp",
                     p->port, p->service_index);
        }
    }

  g_clear_handle_id (&slot->handshake_timeout_id, g_source_remove);
  slot->mux = gt_mux_new (slot->io, FALSE, slot->buf + consumed, slot->len - consumed);
  gt_mux_set_peer (slot->mux, remote);
  gt_mux_set_keepalive (slot->mux, client->config->remote_timeout_ms,
                        client->config->remote_timeout_ms / 2);
  g_signal_connect (slot->mux, "stream-opened", G_CALLBACK (stream_opened_cb), client);
  g_signal_connect (slot->mux, "closed", G_CALLBACK (slot_mux_closed_cb), slot);
  g_signal_connect (slot->mux, "goaway", G_CALLBACK (slot_mux_goaway_cb), slot);
  if (client->udp != NULL && (caps & GT_CAP_DATAGRAM))
    _gt_client_udp_attach (client->udp, slot->mux);
  else if (client->udp != NULL && !client->udp_refused_logged)
    {
      client->udp_refused_logged = TRUE;
      g_warning ("the server at %s did not accept datagrams (too old for udp services): the "
                 "udp services get nothing on this tunnel",
                 remote);
    }
  if (client->forward != NULL && (caps & GT_CAP_FORWARD))
    gt_mux_set_forward (slot->mux, TRUE);
  else if (client->forward != NULL && !client->forward_refused_logged)
    {
      client->forward_refused_logged = TRUE;
      g_message ("tcpForward: the server at %s did not accept forward streams on this tunnel",
                 remote);
    }
  g_clear_object (&slot->io);
  g_clear_object (&slot->cancellable);
  slot->len = 0;
  slot->state = SLOT_READY;
  gt_client_backoff_reset (&slot->backoff);
  for (guint i = 0; i < client->n_slots; i++)
    if (client->slots[i].state == SLOT_READY)
      n_ready++;
  g_message ("tunnel started: remote=%s tunnels=%u", remote, n_ready);
  g_object_notify_by_pspec (G_OBJECT (client), properties[PROP_N_READY]);
  g_signal_emit (client, signals[SIGNAL_TUNNEL_READY], 0);
  gt_mux_start (slot->mux);
  client_auto_move_next (client);
  if (slot->mux != NULL && gt_mux_get_forward (slot->mux))
    _gt_client_forward_tunnel_ready (client->forward, slot->mux);
}

static void slot_read_reply (Slot *slot);

static void
slot_read_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Slot *slot = user_data;
  g_autoptr (GError) error = NULL;
  gssize n = g_input_stream_read_finish (G_INPUT_STREAM (source), result, &error);
  GtFrameHeader h;
  GtDecodeResult r;

  if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return; /* slot already moved on */
  if (n <= 0)
    {
      slot_handshake_failed (slot, n == 0 ? "connection closed by the server during the handshake"
                                          : error->message);
      return;
    }
  slot->len += n;
  r = gt_frame_header_decode (slot->buf, slot->len, &h, &error);
  if (r == GT_DECODE_ERROR)
    {
      slot_handshake_failed (slot, error->message);
      return;
    }
  if (r == GT_DECODE_OK && (h.type != GT_FRAME_WELCOME && h.type != GT_FRAME_ERROR))
    {
      g_autofree char *what = NULL;

      /* Say what came instead of waiting for a payload the client would not accept. */
      if (GT_FRAME_HEADER_SIZE + (gsize) h.length > HANDSHAKE_REPLY_MAX)
        what = g_strdup_printf ("the server's reply to the handshake (a %s frame of %u bytes) "
                                "exceeds the %u bytes accepted before WELCOME",
                                gt_frame_type_to_string (h.type), h.length,
                                (guint) HANDSHAKE_REPLY_MAX);
      else
        what = g_strdup_printf ("unexpected %s frame from the server before WELCOME",
                                gt_frame_type_to_string (h.type));
      slot_handshake_failed (slot, what);
      return;
    }
  if (r == GT_DECODE_NEED_MORE || slot->len < GT_FRAME_HEADER_SIZE + h.length)
    {
      slot_read_reply (slot);
      return;
    }
  if (h.type == GT_FRAME_WELCOME)
    {
      slot_welcome (slot, h.flags, slot->buf + GT_FRAME_HEADER_SIZE, h.length,
                    GT_FRAME_HEADER_SIZE + h.length);
      return;
    }
  if (h.type == GT_FRAME_ERROR)
    {
      guint16 code = 0;
      g_autofree char *message = NULL;

      if (!gt_error_decode (slot->buf + GT_FRAME_HEADER_SIZE, h.length, &code, &message, &error))
        {
          slot_handshake_failed (slot, error->message);
          return;
        }
      g_message ("server refused: %s (code %u)",
                 message && *message ? message : gt_error_code_to_string (code), code);
      if (code == GT_ERROR_CODE_PROTOCOL && slot->client->forward != NULL && message != NULL
          && strstr (message, "unknown flags 0x04") != NULL)
        g_message ("the server does not know forward streams (tcpForwardAddr, gt connect): "
                   "upgrade it, or remove tcpForwardAddr/tcpForwardHostPrefix from this client");
      if (code == GT_ERROR_CODE_INVALID_AUTH && slot->client->random_secret)
        g_message ("this client has no secret of its own (options.secret): set options.secret "
                   "(--secret) to the secret the server has for id '%s'",
                   slot->client->config->id);
      g_signal_emit (slot->client, signals[SIGNAL_TUNNEL_FAILED], 0,
                     message ? message : gt_error_code_to_string (code));
      slot_schedule_retry (slot);
      return;
    }
  g_assert_not_reached ();
}

static void
slot_read_reply (Slot *slot)
{
  GInputStream *in = g_io_stream_get_input_stream (slot->io);

  if (slot->buf == NULL)
    slot->buf = g_malloc (HANDSHAKE_BUF_SIZE);
  /* A full buffer would read 0 bytes, which looks like the server closing. */
  if (slot->len >= HANDSHAKE_BUF_SIZE)
    {
      g_autofree char *what
          = g_strdup_printf ("the server's reply to the handshake exceeds the %u bytes accepted "
                             "before WELCOME", (guint) HANDSHAKE_BUF_SIZE);

      slot_handshake_failed (slot, what);
      return;
    }
  g_input_stream_read_async (in, slot->buf + slot->len, HANDSHAKE_BUF_SIZE - slot->len,
                             G_PRIORITY_DEFAULT, slot->cancellable, slot_read_cb, slot);
}

static void
slot_hello_written_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Slot *slot = user_data;
  g_autoptr (GError) error = NULL;

  if (!g_output_stream_write_all_finish (G_OUTPUT_STREAM (source), result, NULL, &error))
    {
      if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        slot_handshake_failed (slot, error->message);
      return;
    }
  slot_read_reply (slot);
}

static void
slot_connected_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Slot *slot = user_data;
  g_autoptr (GError) error = NULL;
  GIOStream *io = gt_transport_connect_finish (result, &error);

  if (io == NULL)
    {
      if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        slot_handshake_failed (slot, error->message);
      return;
    }
  slot->io = io;
  g_output_stream_write_all_async (g_io_stream_get_output_stream (io), slot->client->hello->data,
                                   slot->client->hello->len, G_PRIORITY_DEFAULT,
                                   slot->cancellable, slot_hello_written_cb, slot);
}

static gboolean
slot_handshake_timeout_cb (gpointer user_data)
{
  Slot *slot = user_data;

  slot->handshake_timeout_id = 0;
  slot_handshake_failed (slot, "handshake timed out");
  return G_SOURCE_REMOVE;
}

/* ------------------------------------------------------------------------------------------ */
/* remoteAPI */

static void client_query_api (GtClient *client);

static gboolean
api_retry_cb (gpointer user_data)
{
  GtClient *client = user_data;

  client->api_retry_id = 0;
  client_query_api (client);
  return G_SOURCE_REMOVE;
}

static void
api_query_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GtClient *client = user_data;
  g_autoptr (GError) error = NULL;
  g_autofree char *address = gt_remote_api_query_finish (result, &error);
  g_autoptr (GtRemote) remote = NULL;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return; /* stopped: client may be gone */
  client->api_querying = FALSE;
  if (address != NULL)
    remote = gt_remote_parse_url (address, &error);
  if (remote == NULL)
    {
      g_message ("remote API %s: %s; asking again in %" G_GUINT64_FORMAT " ms",
                 client->config->remote_api, error->message, client->config->reconnect_delay_ms);
      client->api_retry_id = g_timeout_add (MAX (client->config->reconnect_delay_ms, 100),
                                            api_retry_cb, client);
      return;
    }
  {
    g_autofree char *text = remote_to_string (remote);

    if (client->api_remote == NULL || g_strcmp0 (text, address) != 0)
      g_message ("remote API: the server is %s", text);
  }
  g_clear_pointer (&client->api_remote, gt_remote_free);
  client->api_remote = g_steal_pointer (&remote);
  client->api_stale = FALSE;
  for (guint i = 0; i < client->n_slots; i++)
    {
      Slot *slot = &client->slots[i];

      if (slot->state == SLOT_WAITING && slot->retry_id == 0 && slot->mux == NULL
          && client->drain_id == 0)
        slot_connect (slot);
    }
}

static void
client_query_api (GtClient *client)
{
  if (client->stopped || client->api_querying || client->api_retry_id != 0)
    return;
  if (client->api_session == NULL)
    client->api_session = soup_session_new ();
  client->api_querying = TRUE;
  gt_remote_api_query_async (client->api_session, client->config->remote_api, client->config->id,
                             (guint) MIN (client->config->remote_timeout_ms, G_MAXUINT),
                             client->lookups, api_query_done_cb, client);
}

static void
slot_connect (Slot *slot)
{
  GtClient *client = slot->client;
  g_autofree char *remote = NULL;

  if (client->stopped)
    return;
  if (client->config->remote_api != NULL && (client->api_remote == NULL || client->api_stale))
    {
      /* Waits for the answer (api_query_done_cb connects the waiting slots). */
      slot->state = SLOT_WAITING;
      client_query_api (client);
      return;
    }
  if (client->auto_mode && !client->decided)
    {
      /* Waits for the first choice (client_decide connects the waiting slots). */
      slot->state = SLOT_WAITING;
      client_probe_later (client, 0);
      return;
    }
  if (client->auto_mode && client->chosen >= 0 && !slot->off_choice)
    slot->remote_index = (guint) client->chosen;
  remote = remote_to_string (slot_remote (slot));
  slot->state = SLOT_CONNECTING;
  slot->cancellable = g_cancellable_new ();
  g_message ("connecting to %s (tunnel %u)", remote, slot->index + 1);
  slot->handshake_timeout_id = g_timeout_add (MAX (client->config->remote_timeout_ms, 1000),
                                              slot_handshake_timeout_cb, slot);
  {
    GtTransportSecurity security = client_security (client);

    gt_transport_connect_async (slot_remote (slot), &security, slot->cancellable,
                                slot_connected_cb, slot);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Auto mode: remotes of several transports (quic:// and tls://, say); probes of each, at start
 * and every PROBE_PERIOD_MS, choose where the tunnels go (docs/configuration.md). */

typedef struct
{
  GtClient *client; /* not owned: the probe's cancellable (client->lookups) outlives it */
  guint index;
} ProbeCall;

/* With other remotes to fall back on, a QUIC handshake that gets no answer (UDP blocked) gives
 * up after a few seconds. */
static GtTransportSecurity
client_security (GtClient *client)
{
  GtTransportSecurity security = { client->config->remote_cert,
                                   client->config->remote_cert_insecure,
                                   client->config->remote_timeout_ms,
                                   client->config->remotes->len > 1 ? QUIC_FALLBACK_HANDSHAKE_MS
                                                                    : 0 };

  return security;
}

/* Moves one ready tunnel that is not on the chosen remote (one at a time: the server's limit of
 * tunnels per client is not exceeded for long); slot_welcome calls again for the next. */
static void
client_auto_move_next (GtClient *client)
{
  GPtrArray *remotes = client->config->remotes;

  if (!client->auto_mode || client->chosen < 0 || client->stopped || client->drain_id != 0)
    return;
  for (guint i = 0; i < client->n_slots; i++)
    if (client->slots[i].state == SLOT_CONNECTING)
      return;
  for (guint i = 0; i < client->n_slots; i++)
    {
      Slot *slot = &client->slots[i];
      GtMux *mux = slot->mux;
      g_autofree char *from = NULL;
      g_autofree char *to = NULL;

      /* A tunnel that fell off the chosen remote stays until the next probe reached it. */
      if (slot->state != SLOT_READY || mux == NULL || slot->off_choice
          || slot->remote_index % remotes->len == (guint) client->chosen)
        continue;
      from = remote_to_string (slot_remote (slot));
      to = remote_to_string (remotes->pdata[client->chosen]);
      g_message ("tunnel %u: moving from %s to %s", slot->index + 1, from, to);
      /* Its streams finish on it (and OPENs on their way are still served): GOAWAY, then it
       * closes once the server answered and its streams are done. */
      g_signal_handlers_disconnect_by_data (mux, slot);
      g_ptr_array_add (client->draining, g_object_ref (mux));
      g_signal_connect (mux, "closed", G_CALLBACK (draining_closed_cb), client);
      gt_mux_goaway (mux, GT_ERROR_CODE_NONE, "the client moves to another transport");
      g_clear_object (&slot->mux);
      slot->state = SLOT_IDLE;
      slot->off_choice = FALSE;
      g_object_notify_by_pspec (G_OBJECT (client), properties[PROP_N_READY]);
      slot_connect (slot);
      return;
    }
}

static void
client_decide (GtClient *client)
{
  GPtrArray *remotes = client->config->remotes;
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *reason = NULL;
  gboolean first = !client->decided;
  int winner;

  for (guint i = 0; i < remotes->len; i++)
    g_ptr_array_add (names, remote_to_string (remotes->pdata[i]));
  winner = gt_probe_choose (client->probe_results, (const char *const *) names->pdata,
                            remotes->len, client->chosen, &reason);
  client->decided = TRUE;
  g_free (client->choice_reason);
  client->choice_reason = g_strdup (reason);
  if (winner < 0)
    g_message ("transport choice: none (%s); trying the remotes in order", reason);
  else if (winner != client->chosen || first)
    g_message ("transport choice: %s (%s)", (const char *) names->pdata[winner], reason);
  else
    g_debug ("transport choice: %s stays (%s)", (const char *) names->pdata[winner], reason);
  /* The probe just reached the winner: tunnels that fell off it go back (client_auto_move_next). */
  if (winner >= 0)
    for (guint i = 0; i < client->n_slots; i++)
      client->slots[i].off_choice = FALSE;
  client->chosen = winner;
  client_probe_later (client, winner >= 0 ? PROBE_PERIOD_MS : PROBE_RETRY_MS);
  for (guint i = 0; i < client->n_slots; i++)
    {
      Slot *slot = &client->slots[i];

      if (slot->state == SLOT_WAITING && slot->retry_id == 0 && slot->mux == NULL
          && client->drain_id == 0)
        slot_connect (slot);
    }
  client_auto_move_next (client);
}

static void
probe_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autofree ProbeCall *call = user_data;
  g_autoptr (GtProbeResult) r = NULL;
  GtClient *client;

  /* Cancelled: the client stopped (it may be gone), or the round's deadline decided without it. */
  if (g_cancellable_is_cancelled (g_task_get_cancellable (G_TASK (result))))
    return;
  client = call->client;
  r = gt_client_probe_finish (result);
  gt_probe_result_clear (&client->probe_results[call->index]);
  client->probe_results[call->index] = *r;
  r->error = NULL; /* moved */
  client->probe_waiting[call->index] = FALSE;
  if (--client->probes_left == 0 && !client->stopped)
    {
      g_clear_handle_id (&client->probe_deadline_id, g_source_remove);
      client_decide (client);
    }
}

/* The round's deadline: the probes still going count as failed, and the choice is made now. */
static gboolean
client_probe_deadline_cb (gpointer user_data)
{
  GtClient *client = user_data;

  client->probe_deadline_id = 0;
  for (guint i = 0; i < client->config->remotes->len; i++)
    if (client->probe_waiting[i])
      {
        client->probe_waiting[i] = FALSE;
        gt_probe_result_clear (&client->probe_results[i]);
        memset (&client->probe_results[i], 0, sizeof client->probe_results[i]);
        client->probe_results[i].error
          = g_strdup_printf ("no answer within %u ms", PROBE_DEADLINE_MS);
      }
  client->probes_left = 0;
  g_cancellable_cancel (client->probe_round);
  client_decide (client);
  return G_SOURCE_REMOVE;
}

static gboolean
client_probe_cb (gpointer user_data)
{
  GtClient *client = user_data;
  GtTransportSecurity security = client_security (client);

  client->probe_id = 0;
  if (client->probes_left > 0 || client->stopped)
    return G_SOURCE_REMOVE;
  client->last_probe_us = g_get_monotonic_time ();
  client->probes_left = client->config->remotes->len;
  g_clear_object (&client->probe_round);
  client->probe_round = g_cancellable_new ();
  client->probe_deadline_id = g_timeout_add (PROBE_DEADLINE_MS, client_probe_deadline_cb, client);
  for (guint i = 0; i < client->config->remotes->len; i++)
    {
      ProbeCall *call = g_new0 (ProbeCall, 1);

      call->client = client;
      call->index = i;
      client->probe_waiting[i] = TRUE;
      gt_client_probe_async (client->config->remotes->pdata[i], &security, client->probe_round,
                             probe_done_cb, call);
    }
  return G_SOURCE_REMOVE;
}

/* The next round of probes in delay_ms (0: as soon as PROBE_RETRY_MS allows after the last);
 * a round due earlier stays. */
static void
client_probe_later (GtClient *client, guint delay_ms)
{
  gint64 now = g_get_monotonic_time ();

  if (client->stopped || client->probes_left > 0)
    return;
  if (delay_ms == 0 && client->last_probe_us != 0
      && now - client->last_probe_us < (gint64) PROBE_RETRY_MS * 1000)
    delay_ms = (guint) (PROBE_RETRY_MS - (now - client->last_probe_us) / 1000);
  if (client->probe_id != 0 && client->probe_at_us <= now + (gint64) delay_ms * 1000)
    return;
  g_clear_handle_id (&client->probe_id, g_source_remove);
  if (delay_ms == 0)
    {
      client_probe_cb (client);
      return;
    }
  client->probe_at_us = now + (gint64) delay_ms * 1000;
  client->probe_id = g_timeout_add (delay_ms, client_probe_cb, client);
}

/* ------------------------------------------------------------------------------------------ */
/* Public API */

/* GT's rule for a client without a secret: a random one (letters and digits) for this run. */
static gboolean
make_random_secret (char **out, GError **error)
{
  static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  char *secret = g_malloc (RANDOM_SECRET_LEN + 1);
  gsize n = 0;

  while (n < RANDOM_SECRET_LEN)
    {
      guint8 bytes[RANDOM_SECRET_LEN];
      gssize got = getrandom (bytes, sizeof bytes, 0);

      if (got < 0 && errno == EINTR)
        continue;
      if (got < 0)
        {
          int saved = errno;

          g_free (secret);
          g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved),
                       "cannot make a random secret: %s", g_strerror (saved));
          return FALSE;
        }
      /* 62 × 4 = 248: bytes above are dropped so that every character is equally likely. */
      for (gssize i = 0; i < got && n < RANDOM_SECRET_LEN; i++)
        if (bytes[i] < 248)
          secret[n++] = alphabet[bytes[i] % 62];
    }
  secret[n] = '\0';
  *out = secret;
  return TRUE;
}

gboolean
gt_client_start (GtClient *client, GError **error)
{
  GtClientConfig *config = client->config;
  g_autoptr (GtHello) hello = NULL;

  if (config->secret == NULL || *config->secret == '\0')
    {
      g_free (config->secret);
      config->secret = NULL;
      if (!make_random_secret (&config->secret, error))
        return FALSE;
      client->random_secret = TRUE;
      g_message ("options.secret is not set: using a random secret for this run (as GT does); "
                 "only a server that accepts any client takes it, and after a restart the id is "
                 "free again once the old tunnels are gone. Set options.secret (--secret) to "
                 "keep it");
    }
  /* A remote whose transport is a module (quic://) that is missing fails here, once. */
  for (guint i = 0; i < config->remotes->len; i++)
    if (!gt_transport_load (((GtRemote *) config->remotes->pdata[i])->scheme, FALSE, error))
      return FALSE;
  hello = gt_hello_new (config->id, config->secret);
  if (config->tcp_forward_host_prefix != NULL)
    gt_client_enable_forward (client);
  if (client->forward != NULL)
    {
      hello->caps = GT_CAP_FORWARD;
      if (!_gt_client_forward_listen (client->forward, error))
        return FALSE;
    }
  client_resolve_services (client);
  for (guint i = 0; i < config->services->len; i++)
    {
      GtServiceConfig *s = config->services->pdata[i];

      if (s->kind == GT_SERVICE_KIND_UDP)
        {
          gt_hello_add_service (hello, s->kind, NULL, s->remote_udp_port, s->remote_udp_random);
          hello->caps |= GT_CAP_DATAGRAM;
          if (client->udp == NULL)
            client->udp = _gt_client_udp_new (client, config->services, client->local_addrs);
          continue;
        }
      gt_hello_add_service (hello, s->kind, s->host_prefix, s->remote_tcp_port,
                            s->remote_tcp_random);
    }
  g_array_set_size (client->tcp_ports, config->services->len);

  client->hello = g_byte_array_new ();
  g_byte_array_set_size (client->hello, GT_PREFACE_SIZE);
  gt_preface_encode (client->hello->data);
  if (!gt_frame_append_hello (client->hello, hello, error))
    return FALSE;

  if (config->remote_cert_insecure)
    g_warning ("remoteCertInsecure is set: the server's TLS certificate is NOT verified; anyone on "
               "the path can read and change the tunnel (pin it with remoteCert: sha256:...)");
  client->chosen = -1;
  if (config->remote_api == NULL)
    for (guint i = 1; i < config->remotes->len && !client->auto_mode; i++)
      if (g_strcmp0 (((GtRemote *) config->remotes->pdata[i])->scheme,
                     ((GtRemote *) config->remotes->pdata[0])->scheme) != 0)
        client->auto_mode = TRUE;
  if (client->auto_mode)
    {
      client->probe_results = g_new0 (GtProbeResult, config->remotes->len);
      client->probe_waiting = g_new0 (gboolean, config->remotes->len);
    }
  client->n_slots = config->remote_connections;
  client->slots = g_new0 (Slot, client->n_slots);
  for (guint i = 0; i < client->n_slots; i++)
    {
      client->slots[i].client = client;
      client->slots[i].index = i;
      gt_client_backoff_init (&client->slots[i].backoff, config->reconnect_delay_ms);
      slot_connect (&client->slots[i]);
    }
  return TRUE;
}

static guint
client_count_streams (GtClient *client)
{
  guint n = 0;

  for (guint i = 0; i < client->n_slots; i++)
    if (client->slots[i].mux != NULL)
      n += gt_mux_get_n_streams (client->slots[i].mux);
  for (guint i = 0; i < client->draining->len; i++)
    n += gt_mux_get_n_streams (client->draining->pdata[i]);
  return n;
}

static gboolean
is_http_service_cb (guint service_index, gpointer user_data)
{
  GtClient *client = user_data;
  GPtrArray *services = client->config->services;

  return service_index < services->len
         && ((GtServiceConfig *) services->pdata[service_index])->kind == GT_SERVICE_KIND_HTTP;
}

/* While draining, an HTTP connection idle between requests is not in flight: close it. */
static void
close_idle_http_streams (GtClient *client)
{
  for (guint i = 0; i < client->n_slots; i++)
    if (client->slots[i].mux != NULL)
      gt_mux_reset_idle_streams (client->slots[i].mux, DRAIN_IDLE_HTTP_US, is_http_service_cb,
                                 client);
  for (guint i = 0; i < client->draining->len; i++)
    gt_mux_reset_idle_streams (client->draining->pdata[i], DRAIN_IDLE_HTTP_US,
                               is_http_service_cb, client);
}

/* A tunnel told to go away on which the server may still have OPENs on their way. */
static gboolean
client_awaits_goaway_answer (GtClient *client)
{
  if (g_get_monotonic_time () - client->drain_started >= DRAIN_GOAWAY_ANSWER_US)
    return FALSE;
  for (guint i = 0; i < client->n_slots; i++)
    if (client->slots[i].mux != NULL && !gt_mux_peer_is_going_away (client->slots[i].mux))
      return TRUE;
  return FALSE;
}

static gboolean
client_drain_check_cb (gpointer user_data)
{
  GtClient *client = user_data;
  guint n;

  close_idle_http_streams (client);
  n = client_count_streams (client);

  if ((n > 0 || client_awaits_goaway_answer (client))
      && g_get_monotonic_time () < client->drain_deadline)
    return G_SOURCE_CONTINUE;
  if (n > 0)
    g_message ("drain time is over; closing %u streams", n);
  client->drain_id = 0;
  gt_client_stop (client);
  g_signal_emit (client, signals[SIGNAL_DRAINED], 0);
  return G_SOURCE_REMOVE;
}

void
gt_client_drain (GtClient *client, guint64 timeout_ms)
{
  g_return_if_fail (GT_IS_CLIENT (client));
  if (client->stopped || client->drain_id != 0)
    return;
  g_message ("draining: no new tunnels; open streams may finish (up to %" G_GUINT64_FORMAT " ms)",
             timeout_ms);
  client->drain_started = g_get_monotonic_time ();
  if (client->forward != NULL)
    _gt_client_forward_stop_listening (client->forward);
  for (guint i = 0; i < client->n_slots; i++)
    {
      Slot *slot = &client->slots[i];

      g_clear_handle_id (&slot->retry_id, g_source_remove);
      if (slot->state == SLOT_CONNECTING)
        {
          slot_reset_handshake (slot);
          slot->state = SLOT_IDLE;
        }
      /* The server stops opening streams here (and says so); those already sent are served. */
      if (slot->mux != NULL)
        gt_mux_goaway (slot->mux, GT_ERROR_CODE_SHUTTING_DOWN, "client is shutting down");
    }
  client->drain_deadline = client->drain_started + (gint64) timeout_ms * 1000;
  client->drain_id = g_timeout_add (100, client_drain_check_cb, client);
}

void
gt_client_stop (GtClient *client)
{
  g_return_if_fail (GT_IS_CLIENT (client));
  if (client->stopped)
    return;
  client->stopped = TRUE;
  if (client->forward != NULL)
    _gt_client_forward_stop (client->forward);
  g_cancellable_cancel (client->lookups);
  g_clear_handle_id (&client->drain_id, g_source_remove);
  g_clear_handle_id (&client->api_retry_id, g_source_remove);
  g_clear_handle_id (&client->probe_id, g_source_remove);
  g_clear_handle_id (&client->probe_deadline_id, g_source_remove);
  if (client->probe_round != NULL)
    g_cancellable_cancel (client->probe_round);
  for (guint i = 0; i < client->n_slots; i++)
    {
      Slot *slot = &client->slots[i];

      g_clear_handle_id (&slot->retry_id, g_source_remove);
      slot_reset_handshake (slot);
      if (slot->mux)
        {
          g_signal_handlers_disconnect_by_data (slot->mux, slot);
          g_signal_handlers_disconnect_by_data (slot->mux, client);
          gt_mux_close (slot->mux, GT_ERROR_CODE_NONE, NULL);
          g_clear_object (&slot->mux);
        }
    }
  for (guint i = 0; i < client->draining->len; i++)
    {
      g_signal_handlers_disconnect_by_data (client->draining->pdata[i], client);
      gt_mux_close (client->draining->pdata[i], GT_ERROR_CODE_NONE, NULL);
    }
  g_ptr_array_set_size (client->draining, 0);
  g_hash_table_remove_all (client->dials);
  g_clear_pointer (&client->udp, _gt_client_udp_free);
}

void
gt_client_enable_forward (GtClient *client)
{
  g_return_if_fail (GT_IS_CLIENT (client));
  g_return_if_fail (client->hello == NULL); /* before gt_client_start */
  if (client->forward == NULL)
    client->forward = _gt_client_forward_new (client);
}

GtClientForward *
_gt_client_get_forward (GtClient *client)
{
  return client->forward;
}

GtMux *
_gt_client_pick_forward_tunnel (GtClient *client)
{
  GtMux *best = NULL;
  guint best_n = G_MAXUINT;

  for (guint i = 0; i < client->n_slots; i++)
    {
      GtMux *m = client->slots[i].mux;
      guint n;

      if (client->slots[i].state != SLOT_READY || m == NULL || !gt_mux_get_forward (m)
          || gt_mux_is_closed (m) || gt_mux_is_going_away (m))
        continue;
      n = gt_mux_get_n_streams (m);
      if (n < best_n)
        {
          best = m;
          best_n = n;
        }
    }
  return best;
}

GtMux *
_gt_client_pick_datagram_tunnel (GtClient *client)
{
  for (guint i = 0; i < client->n_slots; i++)
    {
      GtMux *m = client->slots[i].mux;

      if (client->slots[i].state == SLOT_READY && m != NULL && gt_mux_get_datagrams (m)
          && !gt_mux_is_closed (m))
        return m;
    }
  return NULL;
}

guint
gt_client_get_n_ready (GtClient *client)
{
  guint n = 0;

  for (guint i = 0; i < client->n_slots; i++)
    if (client->slots[i].state == SLOT_READY)
      n++;
  return n;
}

/* gt_client_get_state ---------------------------------------------------------------------- */

static char *
format_user_addr (const GtOpenAddr *addr)
{
  g_autoptr (GInetAddress) inet = NULL;
  g_autofree char *host = NULL;

  if (addr == NULL || (addr->family != 4 && addr->family != 6))
    return g_strdup ("");
  inet = g_inet_address_new_from_bytes (addr->src, addr->family == 4 ? G_SOCKET_FAMILY_IPV4
                                                                      : G_SOCKET_FAMILY_IPV6);
  host = g_inet_address_to_string (inet);
  return addr->family == 6 ? g_strdup_printf ("[%s]:%u", host, addr->src_port)
                           : g_strdup_printf ("%s:%u", host, addr->src_port);
}

typedef struct
{
  GtClient *client;
  GVariantBuilder *streams;
  guint tunnel;
  guint n_streams;
  guint64 bytes_in, bytes_out;
} StateWalk;

static void
state_stream_cb (GtMuxStream *stream, gpointer user_data)
{
  StateWalk *w = user_data;
  guint index = gt_mux_stream_get_service_index (stream);
  GPtrArray *services = w->client->config->services;
  const char *local = index < services->len
                        ? ((GtServiceConfig *) services->pdata[index])->local_url
                        : "";
  g_autofree char *remote = format_user_addr (gt_mux_stream_get_addr (stream));
  /* To the local service: what users sent; from it: what goes back. */
  guint64 in = gt_mux_stream_get_bytes_to_socket (stream);
  guint64 out = gt_mux_stream_get_bytes_from_socket (stream);

  w->n_streams++;
  w->bytes_in += in;
  w->bytes_out += out;
  g_variant_builder_open (w->streams, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (w->streams, "{sv}", "id",
                         g_variant_new_uint32 (gt_mux_stream_get_id (stream)));
  g_variant_builder_add (w->streams, "{sv}", "tunnel", g_variant_new_uint32 (w->tunnel));
  g_variant_builder_add (w->streams, "{sv}", "service", g_variant_new_string (local));
  g_variant_builder_add (w->streams, "{sv}", "serviceIndex", g_variant_new_uint32 (index));
  g_variant_builder_add (w->streams, "{sv}", "remote", g_variant_new_string (remote));
  g_variant_builder_add (w->streams, "{sv}", "bytesIn", g_variant_new_uint64 (in));
  g_variant_builder_add (w->streams, "{sv}", "bytesOut", g_variant_new_uint64 (out));
  g_variant_builder_add (w->streams, "{sv}", "idleMs",
                         g_variant_new_uint64 (gt_mux_stream_get_idle_us (stream) / 1000));
  g_variant_builder_close (w->streams);
}

/* Auto mode: the remote chosen ("" for none yet or none answered), why, and each probe. */
static GVariant *
client_choice_state (GtClient *client)
{
  GPtrArray *remotes = client->config->remotes;
  GVariantBuilder c, probes;
  g_autofree char *chosen = client->chosen >= 0 ? remote_to_string (remotes->pdata[client->chosen])
                                                : g_strdup ("");

  g_variant_builder_init (&probes, G_VARIANT_TYPE ("aa{sv}"));
  for (guint i = 0; client->decided && i < remotes->len; i++)
    {
      const GtProbeResult *r = &client->probe_results[i];
      g_autofree char *url = remote_to_string (remotes->pdata[i]);

      g_variant_builder_open (&probes, G_VARIANT_TYPE_VARDICT);
      g_variant_builder_add (&probes, "{sv}", "remote", g_variant_new_string (url));
      g_variant_builder_add (&probes, "{sv}", "ok", g_variant_new_boolean (r->ok));
      g_variant_builder_add (&probes, "{sv}", "rttMs", g_variant_new_double (r->rtt_ms));
      g_variant_builder_add (&probes, "{sv}", "loss", g_variant_new_double (r->loss));
      if (r->error != NULL)
        g_variant_builder_add (&probes, "{sv}", "error", g_variant_new_string (r->error));
      g_variant_builder_close (&probes);
    }
  g_variant_builder_init (&c, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&c, "{sv}", "chosen", g_variant_new_string (chosen));
  g_variant_builder_add (&c, "{sv}", "reason",
                         g_variant_new_string (client->choice_reason ? client->choice_reason
                                                                     : "probing"));
  g_variant_builder_add (&c, "{sv}", "probes", g_variant_builder_end (&probes));
  return g_variant_builder_end (&c);
}

GVariant *
gt_client_get_state (GtClient *client)
{
  static const char *const state_names[] = { "idle", "connecting", "ready", "waiting" };
  GVariantBuilder b, tunnels, streams, services;
  StateWalk w = { client, &streams };

  g_return_val_if_fail (GT_IS_CLIENT (client), NULL);

  g_variant_builder_init (&tunnels, G_VARIANT_TYPE ("aa{sv}"));
  g_variant_builder_init (&streams, G_VARIANT_TYPE ("aa{sv}"));
  for (guint i = 0; i < client->n_slots; i++)
    {
      Slot *slot = &client->slots[i];
      const GtRemote *remote = slot_remote (slot);
      g_autofree char *url = g_strdup_printf ("%s://%s:%u", remote->scheme, remote->host,
                                              remote->port);

      g_variant_builder_open (&tunnels, G_VARIANT_TYPE_VARDICT);
      g_variant_builder_add (&tunnels, "{sv}", "index", g_variant_new_uint32 (i));
      g_variant_builder_add (&tunnels, "{sv}", "state",
                             g_variant_new_string (state_names[slot->state]));
      g_variant_builder_add (&tunnels, "{sv}", "remote", g_variant_new_string (url));
      g_variant_builder_add (&tunnels, "{sv}", "streams",
                             g_variant_new_uint32 (slot->mux != NULL
                                                     ? gt_mux_get_n_streams (slot->mux)
                                                     : 0));
      g_variant_builder_add (&tunnels, "{sv}", "bytesIn",
                             g_variant_new_uint64 (slot->mux ? gt_mux_get_bytes_in (slot->mux)
                                                             : 0));
      g_variant_builder_add (&tunnels, "{sv}", "bytesOut",
                             g_variant_new_uint64 (slot->mux ? gt_mux_get_bytes_out (slot->mux)
                                                             : 0));
      g_variant_builder_close (&tunnels);
      if (slot->mux != NULL)
        {
          w.tunnel = i;
          gt_mux_foreach_stream (slot->mux, state_stream_cb, &w);
        }
    }
  g_variant_builder_init (&services, G_VARIANT_TYPE ("aa{sv}"));
  for (guint i = 0; i < client->config->services->len; i++)
    {
      const GtServiceConfig *svc = client->config->services->pdata[i];
      static const char *const kinds[] = { "http", "https", "tcp", "node", "udp" };
      gboolean udp = svc->kind == GT_SERVICE_KIND_UDP;

      g_variant_builder_open (&services, G_VARIANT_TYPE_VARDICT);
      g_variant_builder_add (&services, "{sv}", "local", g_variant_new_string (svc->local_url));
      g_variant_builder_add (&services, "{sv}", "kind",
                             g_variant_new_string (svc->kind < G_N_ELEMENTS (kinds)
                                                     ? kinds[svc->kind] : "?"));
      g_variant_builder_add (&services, "{sv}", "hostPrefix",
                             g_variant_new_string (svc->host_prefix ? svc->host_prefix : ""));
      /* The server port of a tcp or udp service (gt_client_get_tcp_port holds both). */
      g_variant_builder_add (&services, "{sv}", udp ? "remoteUDPPort" : "remoteTCPPort",
                             g_variant_new_uint32 (gt_client_get_tcp_port (client, i)));
      g_variant_builder_close (&services);
    }

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "kind", g_variant_new_string ("client"));
  g_variant_builder_add (&b, "{sv}", "id", g_variant_new_string (client->config->id));
  g_variant_builder_add (&b, "{sv}", "tunnels",
                         g_variant_new_uint32 (gt_client_get_n_ready (client)));
  g_variant_builder_add (&b, "{sv}", "streams", g_variant_new_uint32 (w.n_streams));
  g_variant_builder_add (&b, "{sv}", "bytesIn", g_variant_new_uint64 (w.bytes_in));
  g_variant_builder_add (&b, "{sv}", "bytesOut", g_variant_new_uint64 (w.bytes_out));
  g_variant_builder_add (&b, "{sv}", "tunnelList", g_variant_builder_end (&tunnels));
  g_variant_builder_add (&b, "{sv}", "streamList", g_variant_builder_end (&streams));
  g_variant_builder_add (&b, "{sv}", "services", g_variant_builder_end (&services));
  if (client->auto_mode)
    g_variant_builder_add (&b, "{sv}", "transportChoice", client_choice_state (client));
  return g_variant_ref_sink (g_variant_builder_end (&b));
}

const GtWebConfig *
gt_client_get_web_config (GtClient *client)
{
  g_return_val_if_fail (GT_IS_CLIENT (client), NULL);
  return &client->config->web;
}

guint64
gt_client_get_drain_timeout (GtClient *client)
{
  return client->config->drain_timeout_ms;
}

const GtClientConfig *
gt_client_get_config (GtClient *client)
{
  g_return_val_if_fail (GT_IS_CLIENT (client), NULL);
  return client->config;
}

void
gt_client_set_signalling_func (GtClient *client, GtClientSignallingFunc func, gpointer user_data)
{
  g_return_if_fail (GT_IS_CLIENT (client));

  client->signalling_func = func;
  client->signalling_data = user_data;
}

guint16
gt_client_get_tcp_port (GtClient *client, guint service_index)
{
  if (service_index >= client->tcp_ports->len)
    return 0;
  return g_array_index (client->tcp_ports, guint16, service_index);
}

GtClient *
gt_client_new (GtClientConfig *config)
{
  GtClient *client = g_object_new (GT_TYPE_CLIENT, NULL);

  client->config = config;
  return client;
}

static void
gt_client_dispose (GObject *object)
{
  GtClient *client = GT_CLIENT (object);

  gt_client_stop (client);
  G_OBJECT_CLASS (gt_client_parent_class)->dispose (object);
}

static void
gt_client_finalize (GObject *object)
{
  GtClient *client = GT_CLIENT (object);

  for (guint i = 0; i < client->n_slots; i++)
    g_free (client->slots[i].buf);
  g_free (client->slots);
  if (client->hello)
    g_byte_array_unref (client->hello);
  g_ptr_array_unref (client->local_addrs);
  g_free (client->resolving);
  g_object_unref (client->lookups);
  g_array_unref (client->tcp_ports);
  g_hash_table_unref (client->dials);
  g_ptr_array_unref (client->draining);
  g_clear_pointer (&client->forward, _gt_client_forward_free);
  g_clear_pointer (&client->udp, _gt_client_udp_free);
  g_clear_pointer (&client->api_remote, gt_remote_free);
  g_clear_object (&client->api_session);
  if (client->probe_results != NULL)
    for (guint i = 0; i < client->config->remotes->len; i++)
      gt_probe_result_clear (&client->probe_results[i]);
  g_free (client->probe_results);
  g_free (client->probe_waiting);
  g_clear_object (&client->probe_round);
  g_free (client->choice_reason);
  g_clear_pointer (&client->config, gt_client_config_free);
  G_OBJECT_CLASS (gt_client_parent_class)->finalize (object);
}

static void
gt_client_get_property (GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
  GtClient *client = GT_CLIENT (object);

  switch (prop_id)
    {
    case PROP_N_READY:
      g_value_set_uint (value, gt_client_get_n_ready (client));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
gt_client_class_init (GtClientClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->dispose = gt_client_dispose;
  object_class->finalize = gt_client_finalize;
  object_class->get_property = gt_client_get_property;

  properties[PROP_N_READY] =
    g_param_spec_uint ("n-ready", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  signals[SIGNAL_TUNNEL_READY] =
    g_signal_new ("tunnel-ready", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL,
                  NULL, G_TYPE_NONE, 0);
  /* A tunnel attempt failed; the string says why (server message or transport error). */
  signals[SIGNAL_TUNNEL_FAILED] =
    g_signal_new ("tunnel-failed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL,
                  NULL, G_TYPE_NONE, 1, G_TYPE_STRING);
  /* gt_client_drain finished. */
  signals[SIGNAL_DRAINED] =
    g_signal_new ("drained", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                  G_TYPE_NONE, 0);
}

static void
gt_client_init (GtClient *client)
{
  /* Entries are NULL for services whose address did not resolve. */
  client->local_addrs = g_ptr_array_new_with_free_func (object_unref0);
  client->lookups = g_cancellable_new ();
  client->tcp_ports = g_array_new (FALSE, TRUE, sizeof (guint16));
  client->dials = g_hash_table_new_full (NULL, NULL, (GDestroyNotify) dial_free, NULL);
  client->draining = g_ptr_array_new_with_free_func (g_object_unref);
}

void
gt_client_get_traffic (GtClient *client, GtTraffic *traffic)
{
  g_return_if_fail (GT_IS_CLIENT (client));
  g_return_if_fail (traffic != NULL);

  memset (traffic, 0, sizeof *traffic);
  traffic->streams_total = client->streams_total;
  traffic->bytes_in = client->gone_bytes_in;
  traffic->bytes_out = client->gone_bytes_out;
  for (guint i = 0; i < client->n_slots; i++)
    {
      GtMux *mux = client->slots[i].mux;

      if (mux == NULL)
        continue;
      if (client->slots[i].state == SLOT_READY)
        traffic->tunnels++;
      traffic->streams += gt_mux_get_n_streams (mux);
      traffic->bytes_in += gt_mux_get_bytes_in (mux);
      traffic->bytes_out += gt_mux_get_bytes_out (mux);
    }
  for (guint i = 0; i < client->draining->len; i++)
    {
      GtMux *mux = client->draining->pdata[i];

      traffic->streams += gt_mux_get_n_streams (mux);
      traffic->bytes_in += gt_mux_get_bytes_in (mux);
      traffic->bytes_out += gt_mux_get_bytes_out (mux);
    }
}
