/* gt-client.c: keeps tunnels to the server up (backoff + jitter) and dials local services. */
#include "config.h"

#define G_LOG_DOMAIN "gt-client"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-client.h"
#include "gt-client-backoff.h"
#include "gt-fd-source.h"
#include "gt-frame.h"
#include "gt-http.h"
#include "gt-mux.h"
#include "gt-proxy-protocol.h"
#include "gt-relay-endpoint.h"
#include "gt-remote-api.h"
#include "gt-transport.h"

#define HANDSHAKE_REPLY_MAX (GT_FRAME_HEADER_SIZE + GT_FRAME_MAX_CONTROL)
/* The handshake buffer: the reply plus what may follow it in the same reads. */
#define HANDSHAKE_BUF_SIZE (HANDSHAKE_REPLY_MAX + 64 * 1024)
/* Draining closes HTTP streams idle for this long (keep-alive between requests). */
#define DRAIN_IDLE_HTTP_US (1 * G_USEC_PER_SEC)
/* Draining waits this long for a server's answer to GOAWAY (older servers send none) before it
 * counts on no further OPEN coming. */
#define DRAIN_GOAWAY_ANSWER_US (2 * G_USEC_PER_SEC)

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
} Slot;

typedef struct
{
  GtClient *client;
  GtMuxStream *stream;
  int fd;
  GSource *source;
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
  gboolean stopped;
  guint drain_id;
  gint64 drain_started;
  gint64 drain_deadline;
  /* remoteAPI: the server address it gave, asked again after a tunnel drops or fails */
  SoupSession *api_session;
  GtRemote *api_remote;
  gboolean api_stale;
  gboolean api_querying;
  guint api_retry_id;
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
  gt_fd_source_free (d->source);
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
      g_message ("stream %u: cannot send the PROXY header to %s", gt_mux_stream_get_id (d->stream),
                 d->service->local_url);
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
      g_message ("stream %u: cannot connect to %s: %s", gt_mux_stream_get_id (stream),
                 d->service->local_url, g_strerror (error_code));
      gt_mux_stream_reset (stream, GT_RESET_CODE_CONNECT_FAILED);
      g_hash_table_remove (client->dials, d);
      return;
    }
  if (d->service->use_local_as_http_host && d->service->kind == GT_SERVICE_KIND_HTTP)
    {
      g_autofree char *host = NULL;

      if (strchr (d->service->local_host, ':') != NULL && d->service->local_host[0] != '[')
        host = g_strdup_printf ("[%s]:%u", d->service->local_host, d->service->local_port);
      else
        host = g_strdup_printf ("%s:%u", d->service->local_host, d->service->local_port);
      gt_mux_stream_set_rewriter (stream, gt_host_rewriter_new (host));
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
    g_clear_pointer (&d->source, gt_fd_source_free);
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
  d->source = gt_fd_source_new (fd, G_IO_OUT, dial_fd_cb, d);
}

static void
stream_opened_cb (GtMux *mux, GtMuxStream *stream, guint service_index, gpointer user_data)
{
  GtClient *client = user_data;
  GtClientConfig *config = client->config;
  Dial *d;

  if (service_index >= config->services->len)
    {
      g_message ("stream %u: unknown service index %u", gt_mux_stream_get_id (stream),
                 service_index);
      gt_mux_stream_reset (stream, GT_RESET_CODE_NO_SERVICE);
      return;
    }

  d = g_new0 (Dial, 1);
  d->client = client;
  d->stream = gt_mux_stream_ref (stream);
  d->service_index = service_index;
  d->service = config->services->pdata[service_index];
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
    g_warning ("service %u (%s): cannot resolve %s: %s", l->service_index, s->local_url,
               s->local_host, error->message);
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
  if (delay == G_MAXUINT)
    delay = gt_client_backoff_next (&slot->backoff);
  slot->state = SLOT_WAITING;
  /* The server may have moved: the remote API is asked again before the next attempt. */
  slot->client->api_stale = TRUE;
  /* Try the next remote in the list next time (fallback). */
  slot->remote_index++;
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
slot_mux_closed_cb (GtMux *mux, GError *error, gpointer user_data)
{
  Slot *slot = user_data;
  GtClient *client = slot->client;

  g_signal_handlers_disconnect_by_data (mux, slot);
  if (slot->mux == mux)
    {
      g_message ("tunnel %u closed: %s", slot->index + 1, error ? error->message : "closed");
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
slot_welcome (Slot *slot, const guint8 *payload, gsize len, gsize consumed)
{
  GtClient *client = slot->client;
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) ports = gt_welcome_decode (payload, len, &error);
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
          g_array_index (client->tcp_ports, guint16, p->service_index) = p->port;
          g_message ("tcp port=%u service=%u", p->port, p->service_index);
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
      slot_welcome (slot, slot->buf + GT_FRAME_HEADER_SIZE, h.length,
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
    remote = gt_remote_parse (address, &error);
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
  remote = remote_to_string (slot_remote (slot));
  slot->state = SLOT_CONNECTING;
  slot->cancellable = g_cancellable_new ();
  g_message ("connecting to %s (tunnel %u)", remote, slot->index + 1);
  slot->handshake_timeout_id = g_timeout_add (MAX (client->config->remote_timeout_ms, 1000),
                                              slot_handshake_timeout_cb, slot);
  {
    GtTransportSecurity security = { client->config->remote_cert,
                                     client->config->remote_cert_insecure };

    gt_transport_connect_async (slot_remote (slot), &security, slot->cancellable,
                                slot_connected_cb, slot);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Public API */

gboolean
gt_client_start (GtClient *client, GError **error)
{
  GtClientConfig *config = client->config;
  g_autoptr (GtHello) hello = gt_hello_new (config->id, config->secret);

  client_resolve_services (client);
  for (guint i = 0; i < config->services->len; i++)
    {
      GtServiceConfig *s = config->services->pdata[i];

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
  g_cancellable_cancel (client->lookups);
  g_clear_handle_id (&client->drain_id, g_source_remove);
  g_clear_handle_id (&client->api_retry_id, g_source_remove);
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

guint64
gt_client_get_drain_timeout (GtClient *client)
{
  return client->config->drain_timeout_ms;
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
  g_clear_pointer (&client->api_remote, gt_remote_free);
  g_clear_object (&client->api_session);
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
