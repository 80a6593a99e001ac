/* gt-p2p-signalling.c: serves GT's XP requests (offer, get-offer, resp-answer) on the streams the
 * client hands over, with libsoup as the HTTP/1.1 server of those virtual connections. */
#include "config.h"

#define G_LOG_DOMAIN "gt-p2p"

#include "gt-p2p-signalling.h"

#include <errno.h>
#include <libsoup/soup.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-p2p-peer-module.h"
#include "gt-p2p-peer.h"
#include "gt-relay-endpoint.h"
#include "gt-turn-server.h"
#include "gt-xp.h"

/* A signalling body holds a description and some candidates: far less than this. */
#define MAX_BODY (64 * 1024)
/* As GT: a peer that opens no channel within this is closed. */
#define SETUP_TIMEOUT_MS (120 * 1000)

struct _GtP2pSignalling
{
  GObject parent_instance;

  const GtClientConfig *config;
  GtP2pTcpPortFunc tcp_port;
  gpointer tcp_port_data;
  SoupServer *soup;
  GHashTable *peers; /* id → GtP2pPeer* (owned) */
  guint next_id;
  /* The virtual connections libsoup serves, by the port of the made-up address each gets (what
   * ties a message to its socket: libsoup has no socket for an accepted GIOStream). */
  GHashTable *sockets; /* port → GSocket* (not owned; removed when it goes) */
  guint16 next_port;

};

G_DEFINE_FINAL_TYPE (GtP2pSignalling, gt_p2p_signalling, G_TYPE_OBJECT)

/* One XP response being streamed: items follow the peer's gathering. */
typedef struct
{
  GtP2pSignalling *self;
  SoupServerMessage *msg;
  GtP2pPeer *peer;
  gboolean with_id; /* get-offer: ends with the raw {"id":N} */
  gboolean paused;
} Exchange;

static void
exchange_free (Exchange *ex)
{
  if (ex->peer != NULL)
    g_signal_handlers_disconnect_by_data (ex->peer, ex);
  g_clear_object (&ex->peer);
  g_clear_object (&ex->msg);
  g_free (ex);
}

static void
exchange_append (Exchange *ex, const char *json)
{
  g_autoptr (GByteArray) item = g_byte_array_new ();
  SoupMessageBody *body = soup_server_message_get_response_body (ex->msg);

  gt_xp_item_encode (item, json);
  soup_message_body_append (body, SOUP_MEMORY_COPY, item->data, item->len);
}

static void
exchange_complete (Exchange *ex)
{
  SoupMessageBody *body = soup_server_message_get_response_body (ex->msg);

  if (ex->with_id)
    {
      g_autofree char *id = g_strdup_printf ("{\"id\":%u}", gt_p2p_peer_get_id (ex->peer));

      soup_message_body_append (body, SOUP_MEMORY_COPY, id, strlen (id));
    }
  soup_message_body_complete (body);
  g_signal_handlers_disconnect_by_data (ex->peer, ex);
  if (ex->paused)
    soup_server_message_unpause (ex->msg);
}

static void
local_candidate_cb (GtP2pPeer *peer, const char *candidate, gpointer user_data)
{
  Exchange *ex = user_data;
  g_autofree char *json = gt_xp_candidate_to_json (candidate, "0", 0);

  exchange_append (ex, json);
  if (ex->paused)
    soup_server_message_unpause (ex->msg);
}

static void
gathering_done_cb (GtP2pPeer *peer, gpointer user_data)
{
  exchange_complete (user_data);
}

static void
msg_finished_cb (SoupServerMessage *msg, gpointer user_data)
{
  Exchange *ex = user_data;

  g_signal_handlers_disconnect_by_data (msg, ex);
  exchange_free (ex);
}

static void
peer_closed_cb (GtP2pPeer *peer, gpointer user_data)
{
  GtP2pSignalling *self = user_data;

  g_message ("P2P peer %u closed: path %s, %u channels, %" G_GUINT64_FORMAT " bytes in, %"
             G_GUINT64_FORMAT " bytes out (%u peers left)",
             gt_p2p_peer_get_id (peer), gt_p2p_peer_get_path (peer),
             gt_p2p_peer_get_n_channels_opened (peer), gt_p2p_peer_get_bytes_in (peer),
             gt_p2p_peer_get_bytes_out (peer), g_hash_table_size (self->peers) - 1);
  g_signal_handlers_disconnect_by_data (peer, self);
  g_hash_table_remove (self->peers, GUINT_TO_POINTER (gt_p2p_peer_get_id (peer)));
}

static GSocketConnectable *
route_cb (const char *label, gpointer user_data)
{
  return gt_p2p_signalling_route (user_data, label);
}

static GtP2pPeer *
peer_new (GtP2pSignalling *self)
{
  const GtClientConfig *config = self->config;
  GtP2pPeerOptions options = { 0 };
  g_autofree char *stun_host = NULL;
  guint16 stun_port = 0;
  g_autofree char *turn_host = NULL;
  g_autofree char *turn_username = NULL;
  g_autofree char *turn_password = NULL;
  GtP2pPeer *peer;

  /* The first STUN server that parses (validated by the config loader). */
  for (guint i = 0; config->remote_stun != NULL && config->remote_stun[i] != NULL; i++)
    {
      g_autoptr (GSocketConnectable) addr
        = g_network_address_parse (config->remote_stun[i] + 5, 3478, NULL);

      if (addr != NULL)
        {
          stun_host = g_strdup (g_network_address_get_hostname (G_NETWORK_ADDRESS (addr)));
          stun_port = g_network_address_get_port (G_NETWORK_ADDRESS (addr));
          break;
        }
    }
  options.stun_host = stun_host;
  options.stun_port = stun_port;
  /* TURN: credentials made from this client's id and secret, good for a day. */
  if (config->secret != NULL && gt_client_config_get_turn (config, &turn_host, &options.turn_port))
    {
      gt_turn_credentials (config->id, config->secret, 24 * 3600, &turn_username, &turn_password);
      options.turn_host = turn_host;
      options.turn_username = turn_username;
      options.turn_password = turn_password;
    }
  options.min_port = config->webrtc_min_port;
  options.max_port = config->webrtc_max_port;
  options.idle_timeout_ms = config->webrtc_idle_timeout_ms;
  options.setup_timeout_ms = SETUP_TIMEOUT_MS;
  options.loopback = TRUE;
  options.route = route_cb;
  options.route_data = self;
  if (++self->next_id == 0)
    self->next_id = 1;
  peer = gt_p2p_peer_new (&options, self->next_id);
  g_signal_connect (peer, "closed", G_CALLBACK (peer_closed_cb), self);
  g_hash_table_insert (self->peers, GUINT_TO_POINTER (self->next_id), peer);
  return peer;
}

static void
respond_error (GtP2pSignalling *self, SoupServerMessage *msg, guint status, const char *text)
{
  g_message ("P2P signalling: %u %s", status, text);
  soup_server_message_set_status (msg, status, NULL);
  soup_server_message_set_response (msg, "text/plain", SOUP_MEMORY_COPY, text, strlen (text));
}

/* The items of the request body: description items and candidate items, in order. */
static GPtrArray *
parse_items (GBytes *body, GError **error)
{
  g_autoptr (GPtrArray) items = g_ptr_array_new_with_free_func (g_free);
  gsize len, pos = 0;
  const guint8 *data = g_bytes_get_data (body, &len);

  while (pos < len)
    {
      const guint8 *json;
      gsize json_len, consumed;
      g_autofree GtXpItem *item = g_new0 (GtXpItem, 1);
      GtDecodeResult r = gt_xp_item_decode (data + pos, len - pos, &json, &json_len, &consumed,
                                            error);

      if (r == GT_DECODE_NEED_MORE)
        {
          g_set_error_literal (error, GT_XP_ERROR, GT_XP_ERROR_MALFORMED,
                               "signalling body ends inside an item");
          return NULL;
        }
      if (r == GT_DECODE_ERROR || !gt_xp_item_parse (json, json_len, item, error))
        return NULL;
      g_ptr_array_add (items, g_steal_pointer (&item));
      pos += consumed;
    }
  return g_steal_pointer (&items);
}

static void
items_free (gpointer p)
{
  GtXpItem *item = p;

  gt_xp_item_clear (item);
  g_free (item);
}

/* Description (if want_description) then candidates. */
static gboolean
apply_items (GtP2pPeer *peer, GPtrArray *items, const char *want_type, GError **error)
{
  g_autoptr (GtSdp) sdp = NULL;
  GtXpItem *first;

  if (items->len == 0 || ((GtXpItem *) items->pdata[0])->kind != GT_XP_ITEM_DESCRIPTION)
    {
      g_set_error_literal (error, GT_XP_ERROR, GT_XP_ERROR_MALFORMED,
                           "the first signalling item is not a session description");
      return FALSE;
    }
  first = items->pdata[0];
  if (strcmp (first->type, want_type) != 0)
    {
      g_set_error (error, GT_XP_ERROR, GT_XP_ERROR_MALFORMED, "expected an %s, got an %s",
                   want_type, first->type);
      return FALSE;
    }
  sdp = gt_sdp_parse (first->sdp, strlen (first->sdp), error);
  if (sdp == NULL)
    return FALSE;
  if (strcmp (want_type, "offer") == 0 ? !gt_p2p_peer_set_remote_offer (peer, sdp, error)
                                       : !gt_p2p_peer_set_remote_answer (peer, sdp, error))
    return FALSE;
  for (guint i = 1; i < items->len; i++)
    {
      GtXpItem *item = items->pdata[i];

      if (item->kind != GT_XP_ITEM_CANDIDATE)
        {
          g_set_error_literal (error, GT_XP_ERROR, GT_XP_ERROR_MALFORMED,
                               "a second session description");
          return FALSE;
        }
      if (!gt_p2p_peer_add_remote_candidate (peer, item->candidate, error))
        return FALSE;
    }
  return TRUE;
}

/* Streams the local description and candidates as the response. */
static void
start_exchange (GtP2pSignalling *self, SoupServerMessage *msg, GtP2pPeer *peer,
                const char *type, gboolean with_id)
{
  Exchange *ex = g_new0 (Exchange, 1);
  g_autofree char *sdp = gt_p2p_peer_get_local_sdp (peer);
  g_autofree char *json = gt_xp_description_to_json (type, sdp);
  const char *const *cands;

  ex->self = self;
  ex->msg = g_object_ref (msg);
  ex->peer = g_object_ref (peer);
  ex->with_id = with_id;
  soup_server_message_set_status (msg, 200, NULL);
  soup_message_headers_set_encoding (soup_server_message_get_response_headers (msg),
                                     SOUP_ENCODING_CHUNKED);
  soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Content-Type",
                                "application/octet-stream");
  exchange_append (ex, json);
  cands = gt_p2p_peer_get_local_candidates (peer);
  for (guint i = 0; cands != NULL && cands[i] != NULL; i++)
    {
      g_autofree char *c = gt_xp_candidate_to_json (cands[i], "0", 0);

      exchange_append (ex, c);
    }
  g_signal_connect (msg, "finished", G_CALLBACK (msg_finished_cb), ex);
  if (gt_p2p_peer_is_gathering_done (peer))
    {
      exchange_complete (ex);
      return;
    }
  g_signal_connect (peer, "local-candidate", G_CALLBACK (local_candidate_cb), ex);
  g_signal_connect (peer, "gathering-done", G_CALLBACK (gathering_done_cb), ex);
  /* A peer that fails while gathering still ends its answer. */
  g_signal_connect (peer, "closed", G_CALLBACK (gathering_done_cb), ex);
  /* Not paused here: the answer and the candidates so far go out now (a peer waiting for them
   * starts ICE at once); libsoup pauses a chunked body by itself when it runs out of chunks, and
   * each later candidate unpauses it. */
  ex->paused = TRUE;
}

static gboolean
can_add_peer (GtP2pSignalling *self, SoupServerMessage *msg)
{
  if (g_hash_table_size (self->peers) < self->config->webrtc_connections)
    return TRUE;
  g_message ("P2P signalling: refused, %u peers open (webrtcConnections)",
             g_hash_table_size (self->peers));
  soup_server_message_set_status (msg, 403, NULL);
  soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Connection",
                                "Closed");
  return FALSE;
}

static void
handler_cb (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
            gpointer user_data)
{
  GtP2pSignalling *self = user_data;
  SoupMessageHeaders *headers = soup_server_message_get_request_headers (msg);
  const char *op = soup_message_headers_get_one (headers, "WebRTC-OP");
  g_autoptr (GBytes) body = NULL;
  g_autoptr (GPtrArray) items = NULL;
  g_autoptr (GError) error = NULL;
  GtP2pPeer *peer;

  if (strcmp (soup_server_message_get_method (msg), "XP") != 0)
    {
      respond_error (self, msg, 405, "only XP requests are served here");
      return;
    }
  body = soup_message_body_flatten (soup_server_message_get_request_body (msg));
  if (g_bytes_get_size (body) > MAX_BODY)
    {
      respond_error (self, msg, 413, "signalling body too large");
      return;
    }
  items = parse_items (body, &error);
  if (items == NULL)
    {
      respond_error (self, msg, 400, error->message);
      return;
    }
  g_ptr_array_set_free_func (items, items_free);

  if (op != NULL && strcmp (op, "get-offer") == 0)
    {
      if (!can_add_peer (self, msg))
        return;
      peer = peer_new (self);
      if (!gt_p2p_peer_create_offer (peer, &error))
        {
          gt_p2p_peer_close (peer);
          respond_error (self, msg, 500, error->message);
          return;
        }
      g_message ("P2P peer %u: offering", gt_p2p_peer_get_id (peer));
      start_exchange (self, msg, peer, "offer", TRUE);
      return;
    }
  if (op != NULL && strcmp (op, "resp-answer") == 0)
    {
      const char *id_text = soup_message_headers_get_one (headers, "WebRTC-OP-ID");
      guint64 id = 0;

      if (id_text == NULL || !g_ascii_string_to_unsigned (id_text, 10, 1, G_MAXUINT, &id, NULL)
          || (peer = g_hash_table_lookup (self->peers, GUINT_TO_POINTER ((guint) id))) == NULL)
        {
          respond_error (self, msg, 404, "no P2P peer with that WebRTC-OP-ID");
          return;
        }
      if (!apply_items (peer, items, "answer", &error))
        {
          respond_error (self, msg, 400, error->message);
          gt_p2p_peer_close (peer);
          return;
        }
      soup_server_message_set_status (msg, 200, NULL);
      return;
    }

  /* Offer mode: the body is the peer's offer and candidates. */
  if (!can_add_peer (self, msg))
    return;
  peer = peer_new (self);
  if (!apply_items (peer, items, "offer", &error))
    {
      respond_error (self, msg, 400, error->message);
      gt_p2p_peer_close (peer);
      return;
    }
  g_message ("P2P peer %u: answering an offer", gt_p2p_peer_get_id (peer));
  start_exchange (self, msg, peer, "answer", FALSE);
}

/* Bounds what libsoup collects of a request body. */
static void
got_chunk_cb (SoupServerMessage *msg, GBytes *chunk, gpointer user_data)
{
  GtP2pSignalling *self = user_data;
  gsize *total = g_object_get_data (G_OBJECT (msg), "gt-body-total");

  *total += g_bytes_get_size (chunk);
  if (*total > MAX_BODY)
    {
      GSocketAddress *addr = soup_server_message_get_remote_address (msg);
      GSocket *socket = NULL;

      if (G_IS_INET_SOCKET_ADDRESS (addr))
        socket = g_hash_table_lookup (self->sockets, GUINT_TO_POINTER (g_inet_socket_address_get_port (
                                                       G_INET_SOCKET_ADDRESS (addr))));

      g_message ("P2P signalling: request body over %d bytes, closing", MAX_BODY);
      g_signal_handlers_disconnect_by_func (msg, got_chunk_cb, user_data);
      if (socket != NULL)
        g_socket_shutdown (socket, TRUE, TRUE, NULL);
    }
}

static void
request_started_cb (SoupServer *server, SoupServerMessage *msg, gpointer user_data)
{
  g_object_set_data_full (G_OBJECT (msg), "gt-body-total", g_new0 (gsize, 1), g_free);
  g_signal_connect (msg, "got-chunk", G_CALLBACK (got_chunk_cb), user_data);
}

static void
socket_gone_cb (gpointer data, GObject *where_the_object_was)
{
  GtP2pSignalling *self = data;
  GHashTableIter iter;
  gpointer value;

  g_hash_table_iter_init (&iter, self->sockets);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    if (value == (gpointer) where_the_object_was)
      {
        g_hash_table_iter_remove (&iter);
        break;
      }
}

/* GT's 403; what the peer still sends is read (bounded) before the close, so that a request
 * body still on its way does not turn the close into a reset that loses the answer. */
static void
refuse (int fd)
{
  gt_socket_reply_and_close (fd, GT_XP_FORBIDDEN, strlen (GT_XP_FORBIDDEN));
}

void
gt_p2p_signalling_accept (GtP2pSignalling *self, int fd)
{
  g_autoptr (GSocket) socket = NULL;
  g_autoptr (GSocketConnection) conn = NULL;
  g_autoptr (GSocketAddress) local = NULL;
  g_autoptr (GSocketAddress) remote = NULL;
  g_autoptr (GError) error = NULL;

  g_return_if_fail (GT_IS_P2P_SIGNALLING (self));

  /* As GT: without a STUN server, or with all peers in use, P2P is refused at once. */
  if (self->config->remote_stun == NULL || self->config->remote_stun[0] == NULL)
    {
      g_message ("P2P signalling: refused, no remoteSTUN configured");
      refuse (fd);
      return;
    }
  /* The CLI loads the peer's module at start (remoteSTUN); this covers everyone else. */
  if (!gt_p2p_peer_module_load (&error))
    {
      g_message ("P2P signalling: refused, %s", error->message);
      refuse (fd);
      return;
    }
  if (g_hash_table_size (self->peers) >= self->config->webrtc_connections)
    {
      g_message ("P2P signalling: refused, %u peers open (webrtcConnections)",
                 g_hash_table_size (self->peers));
      refuse (fd);
      return;
    }
  socket = g_socket_new_from_fd (fd, &error);
  if (socket == NULL)
    {
      g_message ("P2P signalling: %s", error->message);
      close (fd);
      return;
    }
  conn = g_socket_connection_factory_create_connection (socket);
  /* libsoup wants addresses (the user's real one stays with the server): a port of our own
   * names the connection. */
  if (++self->next_port == 0)
    self->next_port = 1;
  g_hash_table_insert (self->sockets, GUINT_TO_POINTER (self->next_port), socket);
  g_object_weak_ref (G_OBJECT (socket), socket_gone_cb, self);
  local = g_inet_socket_address_new_from_string ("127.0.0.1", 0);
  remote = g_inet_socket_address_new_from_string ("127.0.0.1", self->next_port);
  if (!soup_server_accept_iostream (self->soup, G_IO_STREAM (conn), local, remote, &error))
    g_message ("P2P signalling: %s", error->message);
}

guint
gt_p2p_signalling_get_n_peers (GtP2pSignalling *self)
{
  g_return_val_if_fail (GT_IS_P2P_SIGNALLING (self), 0);
  return g_hash_table_size (self->peers);
}

/* GT's label rules: "name" (no '/') → the first service; "@name/..." and "name/..." → the
 * http(s) service with that host prefix; ":port/..." → the tcp service the server opened that
 * port for. */
GSocketConnectable *
gt_p2p_signalling_route (GtP2pSignalling *self, const char *label)
{
  const GtClientConfig *config = self->config;
  const char *slash = strchr (label, '/');
  g_autofree char *key = NULL;
  const GtServiceConfig *found = NULL;

  g_return_val_if_fail (GT_IS_P2P_SIGNALLING (self), NULL);

  if (config->services->len == 0)
    return NULL;
  if (slash == NULL)
    found = config->services->pdata[0];
  else if (label[0] == ':')
    {
      guint64 port;

      key = g_strndup (label + 1, slash - label - 1);
      if (!g_ascii_string_to_unsigned (key, 10, 1, 65535, &port, NULL))
        return NULL;
      for (guint i = 0; i < config->services->len && found == NULL; i++)
        {
          const GtServiceConfig *s = config->services->pdata[i];

          if (s->kind == GT_SERVICE_KIND_TCP && self->tcp_port != NULL
              && self->tcp_port (i, self->tcp_port_data) == port)
            found = s;
        }
    }
  else
    {
      const char *start = label[0] == '@' ? label + 1 : label;

      key = g_ascii_strdown (start, slash - start);
      for (guint i = 0; i < config->services->len && found == NULL; i++)
        {
          const GtServiceConfig *s = config->services->pdata[i];

          if (s->host_prefix != NULL && g_ascii_strcasecmp (s->host_prefix, key) == 0)
            found = s;
        }
    }
  if (found == NULL)
    return NULL;
  return g_network_address_new (found->local_host, found->local_port);
}

GtP2pSignalling *
gt_p2p_signalling_new (const GtClientConfig *config, GtP2pTcpPortFunc tcp_port,
                       gpointer user_data)
{
  GtP2pSignalling *self;

  g_return_val_if_fail (config != NULL, NULL);

  self = g_object_new (GT_TYPE_P2P_SIGNALLING, NULL);
  self->config = config;
  self->tcp_port = tcp_port;
  self->tcp_port_data = user_data;
  return self;
}

static void
close_peer (gpointer key, gpointer value, gpointer user_data)
{
  g_signal_handlers_disconnect_by_data (value, user_data);
  gt_p2p_peer_close (value);
}

static void
gt_p2p_signalling_dispose (GObject *object)
{
  GtP2pSignalling *self = GT_P2P_SIGNALLING (object);

  if (self->peers != NULL)
    g_hash_table_foreach (self->peers, close_peer, self);
  g_clear_pointer (&self->peers, g_hash_table_unref);
  if (self->soup != NULL)
    soup_server_disconnect (self->soup);
  g_clear_object (&self->soup);
  if (self->sockets != NULL)
    {
      GHashTableIter iter;
      gpointer value;

      g_hash_table_iter_init (&iter, self->sockets);
      while (g_hash_table_iter_next (&iter, NULL, &value))
        g_object_weak_unref (value, socket_gone_cb, self);
      g_clear_pointer (&self->sockets, g_hash_table_unref);
    }
  G_OBJECT_CLASS (gt_p2p_signalling_parent_class)->dispose (object);
}

static void
gt_p2p_signalling_class_init (GtP2pSignallingClass *klass)
{
  G_OBJECT_CLASS (klass)->dispose = gt_p2p_signalling_dispose;
}

static void
gt_p2p_signalling_init (GtP2pSignalling *self)
{
  self->peers = g_hash_table_new_full (NULL, NULL, NULL, g_object_unref);
  self->sockets = g_hash_table_new (NULL, NULL);
  self->soup = soup_server_new ("server-header", "gt", NULL);
  soup_server_add_handler (self->soup, NULL, handler_cb, self, NULL);
  g_signal_connect (self->soup, "request-started", G_CALLBACK (request_started_cb), self);
}
