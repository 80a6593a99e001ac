/* gt-p2p-connect.c: `gt connect`: local TCP connections to a remote client's service over the
 * best path there is: a direct P2P path (signalled with GT's XP through the server, one data
 * channel per connection) once ICE connects, the relay path through the server before that and
 * after the direct path went away. */
#include "config.h"

#define G_LOG_DOMAIN "gt-p2p"

#include "gt-p2p-connect.h"

#include <libsoup/soup.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "gt-metrics.h"
#include "gt-p2p-peer-module.h"
#include "gt-sdp.h"
#include "gt-turn-server.h"
#include "gt-xp.h"

/* Candidates gathered after this still trickle... but GT's offer mode takes one body: an offer
 * goes with what was gathered by then. */
#define GATHER_WAIT_MS 3000
/* ICE + DTLS + SCTP must be up this long after the offer was sent. */
#define ATTEMPT_TIMEOUT_MS 20000
/* The peer's own timers are not ours: the remote client closes an idle peer (its
 * webrtcConnectionIdleTimeout); we close ours when the path fails. */
#define PEER_TIMER_MS (24u * 3600 * 1000)
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 60000
#define RELAY_BUF 16384
/* The answer and candidates are a few KiB: more is not a client speaking XP. */
#define MAX_XP_RESPONSE (64 * 1024)

typedef struct
{
  GtP2pConnect *self;
  GSocketConnection *conn;
  GBytes *pending;
  guint timeout_id;
} Waiting;

typedef struct
{
  GtP2pConnect *self; /* NULL once closed */
  guint refs;
  GSocketConnection *local;
  GIOStream *remote;
  GBytes *pending;
  GCancellable *cancellable;
  guint8 *buf[2]; /* 0: local → remote, 1: remote → local */
  gboolean eof[2];
} Relay;

struct _GtP2pConnect
{
  GObject parent_instance;

  GtConnectConfig *config;
  GSocketService *listener;
  char *local_address;
  SoupServer *metrics_server;
  SoupSession *session;

  GtP2pRelayOpenFunc relay_open;
  GtP2pRelayFinishFunc relay_finish;
  gpointer relay_data;
  GSocketConnectable *relay_target; /* of the default relay */
  GSocketClient *relay_client;
  GHashTable *relays; /* Relay* set */
  char *relay_description;

  /* The direct path: the current attempt, or the connected peer. */
  GtP2pPeer *peer;
  gboolean direct_up;
  gboolean offer_sent;
  const char *fail_reason;
  GCancellable *xp_cancellable;
  GByteArray *xp_buf;
  gboolean xp_answered;
  guint gather_id;
  guint attempt_timeout_id;
  guint retry_id;
  guint backoff_ms;
  gint64 last_attempt_us;

  GQueue waiting; /* Waiting*: connections waiting for the direct path (no relay path) */

  /* Metrics. */
  guint64 attempts, failures, retried, lost;
  GHashTable *successes;                   /* "local\nremote" → guint64* */
  guint64 direct_in_done, direct_out_done; /* of peers that closed */
  guint64 relay_in, relay_out;
  guint64 streams_direct, streams_relay, streams_refused;
};

G_DEFINE_FINAL_TYPE (GtP2pConnect, gt_p2p_connect, G_TYPE_OBJECT)

static void dispatch (GtP2pConnect *self, GSocketConnection *conn, GBytes *pending);
static void attempt_start (GtP2pConnect *self);

/* ------------------------------------------------------------------------------------------ */
/* The relay path: bytes copied both ways between the local connection and a relayed stream. */

static void
relay_unref (Relay *r)
{
  if (--r->refs > 0)
    return;
  g_clear_object (&r->local);
  g_clear_object (&r->remote);
  g_clear_pointer (&r->pending, g_bytes_unref);
  g_clear_object (&r->cancellable);
  g_free (r->buf[0]);
  g_free (r->buf[1]);
  g_free (r);
}

static void
relay_close (Relay *r)
{
  GtP2pConnect *self = r->self;

  if (self == NULL)
    return;
  r->self = NULL;
  g_cancellable_cancel (r->cancellable);
  if (r->local != NULL)
    g_io_stream_close (G_IO_STREAM (r->local), NULL, NULL);
  if (r->remote != NULL)
    g_io_stream_close (r->remote, NULL, NULL);
  g_hash_table_remove (self->relays, r); /* drops the set's reference */
}

static GIOStream *
relay_side (Relay *r, guint dir, gboolean input)
{
  /* dir 0 reads the local side and writes the remote one. */
  return (dir == 0) == input ? G_IO_STREAM (r->local) : r->remote;
}

static void relay_pump (Relay *r, guint dir);

static void
relay_written_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Relay *r = user_data;
  guint dir = GPOINTER_TO_UINT (g_object_get_data (source, "gt-dir"));
  g_autoptr (GError) error = NULL;

  if (!g_output_stream_write_all_finish (G_OUTPUT_STREAM (source), result, NULL, &error))
    relay_close (r);
  else if (r->self != NULL)
    relay_pump (r, dir);
  relay_unref (r);
}

static void
relay_read_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Relay *r = user_data;
  guint dir = GPOINTER_TO_UINT (g_object_get_data (source, "gt-dir"));
  g_autoptr (GError) error = NULL;
  gssize n = g_input_stream_read_finish (G_INPUT_STREAM (source), result, &error);

  if (r->self == NULL)
    ;
  else if (n < 0)
    relay_close (r);
  else if (n == 0)
    {
      GIOStream *out = relay_side (r, dir, FALSE);

      /* A half-close goes on as one; the relay ends when both sides ended. */
      r->eof[dir] = TRUE;
      if (G_IS_SOCKET_CONNECTION (out))
        g_socket_shutdown (g_socket_connection_get_socket (G_SOCKET_CONNECTION (out)), FALSE, TRUE,
                           NULL);
      else
        g_output_stream_close (g_io_stream_get_output_stream (out), NULL, NULL);
      if (r->eof[0] && r->eof[1])
        relay_close (r);
    }
  else
    {
      GOutputStream *out = g_io_stream_get_output_stream (relay_side (r, dir, FALSE));

      if (dir == 0)
        r->self->relay_out += (guint64)n;
      else
        r->self->relay_in += (guint64)n;
      g_object_set_data (G_OBJECT (out), "gt-dir", GUINT_TO_POINTER (dir));
      r->refs++;
      g_output_stream_write_all_async (out, r->buf[dir], (gsize)n, G_PRIORITY_DEFAULT,
                                       r->cancellable, relay_written_cb, r);
    }
  relay_unref (r);
}

static void
relay_pump (Relay *r, guint dir)
{
  GInputStream *in = g_io_stream_get_input_stream (relay_side (r, dir, TRUE));

  if (r->buf[dir] == NULL)
    r->buf[dir] = g_malloc (RELAY_BUF);
  g_object_set_data (G_OBJECT (in), "gt-dir", GUINT_TO_POINTER (dir));
  r->refs++;
  g_input_stream_read_async (in, r->buf[dir], RELAY_BUF, G_PRIORITY_DEFAULT, r->cancellable,
                             relay_read_cb, r);
}

static void
relay_pending_written_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Relay *r = user_data;
  g_autoptr (GError) error = NULL;

  if (!g_output_stream_write_all_finish (G_OUTPUT_STREAM (source), result, NULL, &error))
    relay_close (r);
  else if (r->self != NULL)
    {
      r->self->relay_out += g_bytes_get_size (r->pending);
      relay_pump (r, 0);
      relay_pump (r, 1);
    }
  relay_unref (r);
}

static void
relay_opened_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Relay *r = user_data;
  g_autoptr (GError) error = NULL;
  GtP2pConnect *self = r->self;
  GIOStream *remote = self != NULL ? self->relay_finish (result, &error) : NULL;

  if (self == NULL)
    {
      relay_unref (r);
      return;
    }
  if (remote == NULL)
    {
      g_message ("gt connect: the relay path failed: %s", error->message);
      relay_close (r);
      relay_unref (r);
      return;
    }
  r->remote = remote;
  if (G_IS_SOCKET_CONNECTION (remote))
    g_socket_set_option (g_socket_connection_get_socket (G_SOCKET_CONNECTION (remote)), IPPROTO_TCP,
                         1 /* TCP_NODELAY */, 1, NULL);
  if (r->pending != NULL && g_bytes_get_size (r->pending) > 0)
    {
      gsize len;
      const void *data = g_bytes_get_data (r->pending, &len);

      r->refs++;
      g_output_stream_write_all_async (g_io_stream_get_output_stream (remote), data, len,
                                       G_PRIORITY_DEFAULT, r->cancellable, relay_pending_written_cb,
                                       r);
    }
  else
    {
      relay_pump (r, 0);
      relay_pump (r, 1);
    }
  relay_unref (r);
}

static void
relay_start (GtP2pConnect *self, GSocketConnection *conn, GBytes *pending)
{
  Relay *r = g_new0 (Relay, 1);

  r->self = self;
  r->refs = 2; /* the set's and the open's */
  r->local = g_object_ref (conn);
  r->pending = pending != NULL ? g_bytes_ref (pending) : NULL;
  r->cancellable = g_cancellable_new ();
  g_hash_table_add (self->relays, r);
  self->streams_relay++;
  self->relay_open (r->cancellable, relay_opened_cb, r, self->relay_data);
}

static void
default_relay_open (GCancellable *cancellable, GAsyncReadyCallback callback, gpointer callback_data,
                    gpointer user_data)
{
  GtP2pConnect *self = user_data;

  g_socket_client_connect_async (self->relay_client, self->relay_target, cancellable, callback,
                                 callback_data);
}

static GIOStream *
default_relay_finish (GAsyncResult *result, GError **error)
{
  g_autoptr (GObject) client = g_async_result_get_source_object (result);

  return G_IO_STREAM (g_socket_client_connect_finish (G_SOCKET_CLIENT (client), result, error));
}

static gboolean
has_relay (GtP2pConnect *self)
{
  return self->relay_open != NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Connections waiting for the direct path (when there is no relay path). */

static void
waiting_free (Waiting *w)
{
  g_clear_handle_id (&w->timeout_id, g_source_remove);
  g_clear_object (&w->conn);
  g_clear_pointer (&w->pending, g_bytes_unref);
  g_free (w);
}

static gboolean
waiting_timeout_cb (gpointer user_data)
{
  Waiting *w = user_data;
  GtP2pConnect *self = w->self;

  w->timeout_id = 0;
  g_queue_remove (&self->waiting, w);
  self->streams_refused++;
  g_message ("gt connect: no direct path within %" G_GUINT64_FORMAT " ms and no relay path: "
             "connection closed",
             self->config->direct_wait_ms);
  g_io_stream_close (G_IO_STREAM (w->conn), NULL, NULL);
  waiting_free (w);
  return G_SOURCE_REMOVE;
}

static void
flush_waiting (GtP2pConnect *self)
{
  GQueue queue = self->waiting;

  g_queue_init (&self->waiting);
  for (GList *l = queue.head; l != NULL; l = l->next)
    {
      Waiting *w = l->data;

      dispatch (self, w->conn, w->pending);
      waiting_free (w);
    }
  g_list_free (queue.head);
}

/* ------------------------------------------------------------------------------------------ */
/* The direct path: one P2P peer at a time, offered to the remote client through the server. */

static GSocketConnectable *
refuse_route_cb (const char *label, gpointer user_data)
{
  return NULL; /* the remote side opens no channels towards us */
}

static gboolean
retry_cb (gpointer user_data)
{
  GtP2pConnect *self = user_data;

  self->retry_id = 0;
  attempt_start (self);
  return G_SOURCE_REMOVE;
}

/* A new attempt now, or when the backoff since the last one has passed. */
static void
schedule_attempt (GtP2pConnect *self)
{
  gint64 due;
  gint64 now = g_get_monotonic_time ();

  if (self->peer != NULL || self->retry_id != 0)
    return;
  due = self->last_attempt_us + (gint64)self->backoff_ms * 1000;
  if (due <= now)
    attempt_start (self);
  else
    self->retry_id = g_timeout_add ((guint)((due - now) / 1000 + 1), retry_cb, self);
}

/* Ends the current attempt: the peer's "closed" handler does the rest. */
static void
attempt_fail (GtP2pConnect *self, const char *why)
{
  if (self->peer == NULL)
    return;
  self->fail_reason = why;
  gt_p2p_peer_close (self->peer);
}

static gboolean
attempt_timeout_cb (gpointer user_data)
{
  GtP2pConnect *self = user_data;

  self->attempt_timeout_id = 0;
  attempt_fail (self, "ICE, DTLS and SCTP not up in time");
  return G_SOURCE_REMOVE;
}

static void
peer_connected_cb (GtP2pPeer *peer, gpointer user_data)
{
  GtP2pConnect *self = user_data;
  g_autofree char *key
      = g_strdup_printf ("%s\n%s", gt_p2p_peer_get_path (peer), gt_p2p_peer_get_remote_path (peer));
  guint64 *count = g_hash_table_lookup (self->successes, key);

  if (count == NULL)
    {
      count = g_new0 (guint64, 1);
      g_hash_table_insert (self->successes, g_steal_pointer (&key), count);
    }
  (*count)++;
  self->direct_up = TRUE;
  self->backoff_ms = BACKOFF_MIN_MS;
  g_clear_handle_id (&self->attempt_timeout_id, g_source_remove);
  g_message ("gt connect: direct path up (attempt %u; local %s, remote %s candidate)",
             gt_p2p_peer_get_id (peer), gt_p2p_peer_get_path (peer),
             gt_p2p_peer_get_remote_path (peer));
  flush_waiting (self);
}

static void
peer_orphaned_cb (GtP2pPeer *peer, GSocketConnection *conn, GBytes *pending, gpointer user_data)
{
  GtP2pConnect *self = user_data;

  /* Nothing went either way yet: the connection can start again on another path. */
  self->retried++;
  g_debug ("gt connect: a connection that had sent nothing is retried");
  dispatch (self, conn, pending);
}

static void
peer_closed_cb (GtP2pPeer *peer, gpointer user_data)
{
  GtP2pConnect *self = user_data;
  gboolean was_up = self->direct_up;
  guint id = gt_p2p_peer_get_id (peer);

  self->direct_in_done += gt_p2p_peer_get_bytes_in (peer);
  self->direct_out_done += gt_p2p_peer_get_bytes_out (peer);
  g_signal_handlers_disconnect_by_data (peer, self);
  g_clear_object (&self->peer);
  self->direct_up = FALSE;
  g_cancellable_cancel (self->xp_cancellable);
  g_clear_object (&self->xp_cancellable);
  g_clear_handle_id (&self->gather_id, g_source_remove);
  g_clear_handle_id (&self->attempt_timeout_id, g_source_remove);
  if (was_up)
    {
      self->lost++;
      g_message ("gt connect: direct path %u down%s%s; new connections take the %s", id,
                 self->fail_reason ? ": " : "", self->fail_reason ? self->fail_reason : "",
                 has_relay (self) ? "relay path" : "next direct path");
      self->backoff_ms = BACKOFF_MIN_MS;
    }
  else
    {
      self->failures++;
      g_message ("gt connect: P2P attempt %u failed: %s; the %s carries the traffic, next "
                 "attempt in %u s",
                 id, self->fail_reason ? self->fail_reason : "the peer closed",
                 has_relay (self) ? "relay path" : "nothing", self->backoff_ms / 1000);
    }
  self->fail_reason = NULL;
  /* Lazy after a path that worked (the remote closes idle peers): the next connection starts an
   * attempt. After a failure: again when the backoff has passed. */
  if (!was_up || !g_queue_is_empty (&self->waiting))
    schedule_attempt (self);
  if (!was_up)
    self->backoff_ms = MIN (self->backoff_ms * 2, BACKOFF_MAX_MS);
}

static void xp_read (GtP2pConnect *self);

static gboolean
xp_apply_items (GtP2pConnect *self, GError **error)
{
  for (;;)
    {
      const guint8 *json;
      gsize json_len, consumed;
      g_auto (GtXpItem) item = { 0 };
      GtDecodeResult res = gt_xp_item_decode (self->xp_buf->data, self->xp_buf->len, &json,
                                              &json_len, &consumed, error);

      if (res == GT_DECODE_NEED_MORE)
        return TRUE;
      if (res != GT_DECODE_OK || !gt_xp_item_parse (json, json_len, &item, error))
        return FALSE;
      if (!self->xp_answered)
        {
          g_autoptr (GtSdp) sdp = NULL;

          if (item.kind != GT_XP_ITEM_DESCRIPTION || g_strcmp0 (item.type, "answer") != 0)
            {
              g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                                   "the response does not start with an answer");
              return FALSE;
            }
          sdp = gt_sdp_parse (item.sdp, strlen (item.sdp), error);
          if (sdp == NULL || !gt_p2p_peer_set_remote_answer (self->peer, sdp, error))
            return FALSE;
          self->xp_answered = TRUE;
        }
      else if (item.kind != GT_XP_ITEM_CANDIDATE)
        {
          g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                               "a second session description");
          return FALSE;
        }
      else
        {
          if (*item.candidate != '\0')
            g_debug ("gt connect: remote %s", item.candidate);
          if (!gt_p2p_peer_add_remote_candidate (self->peer, item.candidate, error))
            return FALSE;
        }
      g_byte_array_remove_range (self->xp_buf, 0, (guint)consumed);
    }
}

static void
xp_read_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GtP2pConnect *self = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) bytes
      = g_input_stream_read_bytes_finish (G_INPUT_STREAM (source), result, &error);

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return; /* self may be gone */
  if (bytes == NULL)
    {
      g_message ("gt connect: signalling: %s", error->message);
      if (!self->xp_answered)
        attempt_fail (self, "the signalling response broke off");
      return;
    }
  if (g_bytes_get_size (bytes) == 0)
    {
      /* The remote ended its candidates; ICE goes on. */
      if (!self->xp_answered)
        attempt_fail (self, "the signalling response had no answer");
      return;
    }
  g_byte_array_append (self->xp_buf, g_bytes_get_data (bytes, NULL),
                       (guint)g_bytes_get_size (bytes));
  if (self->xp_buf->len > MAX_XP_RESPONSE || !xp_apply_items (self, &error))
    {
      g_message ("gt connect: bad signalling response: %s",
                 error != NULL ? error->message : "too large");
      attempt_fail (self, "bad signalling response");
      return;
    }
  xp_read (self);
}

static void
xp_read (GtP2pConnect *self)
{
  GInputStream *in = g_object_get_data (G_OBJECT (self->xp_cancellable), "gt-in");

  g_input_stream_read_bytes_async (in, 8192, G_PRIORITY_DEFAULT, self->xp_cancellable, xp_read_cb,
                                   self);
}

static void
xp_sent_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GtP2pConnect *self = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GInputStream) in = soup_session_send_finish (SOUP_SESSION (source), result, &error);
  SoupMessage *msg;
  guint status;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  if (in == NULL)
    {
      g_message ("gt connect: signalling through %s: %s", self->config->remote_url, error->message);
      attempt_fail (self, "the server could not be reached");
      return;
    }
  msg = soup_session_get_async_result_message (SOUP_SESSION (source), result);
  status = soup_message_get_status (msg);
  if (status != 200)
    {
      g_message ("gt connect: the P2P request to %s was answered %u %s%s", self->config->host,
                 status, soup_message_get_reason_phrase (msg),
                 status == 403   ? " (no remoteSTUN on the client, or too many peers)"
                 : status == 404 ? " (no client with an http service of that host prefix)"
                                 : "");
      attempt_fail (self, "P2P refused");
      return;
    }
  g_object_set_data_full (G_OBJECT (self->xp_cancellable), "gt-in", g_object_ref (in),
                          g_object_unref);
  xp_read (self);
}

/* GT's offer mode: the offer and our candidates in one body; the answer and the remote's
 * candidates stream back. */
static void
send_offer (GtP2pConnect *self)
{
  g_autoptr (GByteArray) body = g_byte_array_new ();
  g_autofree char *sdp = NULL;
  g_autofree char *json = NULL;
  g_autoptr (SoupMessage) msg = NULL;
  g_autoptr (GBytes) bytes = NULL;
  const char *const *cands;

  if (self->offer_sent || self->peer == NULL)
    return;
  self->offer_sent = TRUE;
  g_clear_handle_id (&self->gather_id, g_source_remove);
  sdp = gt_p2p_peer_get_local_sdp (self->peer);
  json = gt_xp_description_to_json ("offer", sdp);
  gt_xp_item_encode (body, json);
  cands = gt_p2p_peer_get_local_candidates (self->peer);
  for (guint i = 0; cands != NULL && cands[i] != NULL; i++)
    {
      g_autofree char *c = gt_xp_candidate_to_json (cands[i], "0", 0);

      g_debug ("gt connect: local %s", cands[i]);
      gt_xp_item_encode (body, c);
    }
  g_clear_pointer (&json, g_free);
  json = gt_xp_candidate_to_json ("", "0", 0);
  gt_xp_item_encode (body, json);

  msg = soup_message_new ("XP", self->config->remote_url);
  /* Routed by the server like any request: the Host names the target client. */
  soup_message_headers_replace (soup_message_get_request_headers (msg), "Host", self->config->host);
  soup_message_headers_replace (soup_message_get_request_headers (msg), "User-Agent", "gt-connect");
  /* The server routes a connection by its first request only. */
  soup_message_add_flags (msg, SOUP_MESSAGE_NEW_CONNECTION);
  bytes = g_byte_array_free_to_bytes (g_steal_pointer (&body));
  soup_message_set_request_body_from_bytes (msg, "application/octet-stream", bytes);
  g_debug ("gt connect: offering to %s through %s", self->config->host, self->config->remote_url);
  soup_session_send_async (self->session, msg, G_PRIORITY_DEFAULT, self->xp_cancellable, xp_sent_cb,
                           self);
  self->attempt_timeout_id = g_timeout_add (ATTEMPT_TIMEOUT_MS, attempt_timeout_cb, self);
}

static void
gathering_done_cb (GtP2pPeer *peer, gpointer user_data)
{
  send_offer (user_data);
}

static gboolean
gather_timeout_cb (gpointer user_data)
{
  GtP2pConnect *self = user_data;

  self->gather_id = 0;
  send_offer (self);
  return G_SOURCE_REMOVE;
}

static void
attempt_start (GtP2pConnect *self)
{
  GtP2pPeerOptions options = { 0 };
  g_autoptr (GError) error = NULL;
  g_autofree char *turn_username = NULL;
  g_autofree char *turn_password = NULL;

  if (self->peer != NULL)
    return;
  g_clear_handle_id (&self->retry_id, g_source_remove);
  self->attempts++;
  self->last_attempt_us = g_get_monotonic_time ();
  options.stun_host = self->config->stun_host;
  options.stun_port = self->config->stun_port;
  if (self->config->turn_host != NULL)
    {
      gt_turn_credentials (self->config->id, self->config->secret, 24 * 3600, &turn_username,
                           &turn_password);
      options.turn_host = self->config->turn_host;
      options.turn_port = self->config->turn_port;
      options.turn_username = turn_username;
      options.turn_password = turn_password;
    }
  options.min_port = self->config->webrtc_min_port;
  options.max_port = self->config->webrtc_max_port;
  options.idle_timeout_ms = PEER_TIMER_MS;
  options.setup_timeout_ms = PEER_TIMER_MS;
  options.loopback = TRUE;
  options.keepalive_check = TRUE;
  options.route = refuse_route_cb;
  self->peer = gt_p2p_peer_new (&options, (guint)self->attempts);
  self->offer_sent = FALSE;
  self->xp_answered = FALSE;
  g_byte_array_set_size (self->xp_buf, 0);
  self->xp_cancellable = g_cancellable_new ();
  g_signal_connect (self->peer, "connected", G_CALLBACK (peer_connected_cb), self);
  g_signal_connect (self->peer, "channel-orphaned", G_CALLBACK (peer_orphaned_cb), self);
  g_signal_connect (self->peer, "closed", G_CALLBACK (peer_closed_cb), self);
  g_signal_connect (self->peer, "gathering-done", G_CALLBACK (gathering_done_cb), self);
  g_debug ("gt connect: P2P attempt %" G_GUINT64_FORMAT, self->attempts);
  if (!gt_p2p_peer_create_offer (self->peer, &error))
    {
      g_message ("gt connect: %s", error->message);
      attempt_fail (self, "no offer could be made");
      return;
    }
  if (gt_p2p_peer_is_gathering_done (self->peer))
    send_offer (self);
  else
    self->gather_id = g_timeout_add (GATHER_WAIT_MS, gather_timeout_cb, self);
}

/* ------------------------------------------------------------------------------------------ */
/* Local connections */

/* A connection (with bytes already read from it, when it is retried) goes to the best path. */
static void
dispatch (GtP2pConnect *self, GSocketConnection *conn, GBytes *pending)
{
  g_autoptr (GError) error = NULL;

  if (self->peer != NULL && gt_p2p_peer_is_connected (self->peer))
    {
      if (gt_p2p_peer_open_channel (self->peer, self->config->service, conn, pending, &error))
        {
          self->streams_direct++;
          return;
        }
      g_message ("gt connect: direct path: %s", error->message);
    }
  if (has_relay (self))
    relay_start (self, conn, pending);
  else
    {
      Waiting *w = g_new0 (Waiting, 1);

      w->self = self;
      w->conn = g_object_ref (conn);
      w->pending = pending != NULL ? g_bytes_ref (pending) : NULL;
      w->timeout_id = g_timeout_add ((guint)MIN (self->config->direct_wait_ms, G_MAXUINT),
                                     waiting_timeout_cb, w);
      g_queue_push_tail (&self->waiting, w);
    }
  if (self->peer == NULL)
    schedule_attempt (self);
}

static gboolean
incoming_cb (GSocketService *service, GSocketConnection *conn, GObject *source, gpointer data)
{
  dispatch (data, conn, NULL);
  return TRUE;
}

/* ------------------------------------------------------------------------------------------ */
/* Metrics */

char *
gt_p2p_connect_metrics (GtP2pConnect *self)
{
  GString *out = g_string_new (NULL);
  guint64 direct_in = self->direct_in_done, direct_out = self->direct_out_done;
  GHashTableIter iter;
  gpointer key, value;

  if (self->peer != NULL)
    {
      direct_in += gt_p2p_peer_get_bytes_in (self->peer);
      direct_out += gt_p2p_peer_get_bytes_out (self->peer);
    }
  gt_metrics_write_family (out, "gt_connect_p2p_attempts_total", "counter",
                           "P2P attempts (XP offers) to the target client.");
  gt_metrics_write_sample (out, "gt_connect_p2p_attempts_total", NULL, (double)self->attempts);
  gt_metrics_write_family (out, "gt_connect_p2p_successes_total", "counter",
                           "Direct paths established, by local and remote candidate type.");
  g_hash_table_iter_init (&iter, self->successes);
  while (g_hash_table_iter_next (&iter, &key, &value))
    {
      g_auto (GStrv) types = g_strsplit (key, "\n", 2);
      const char *labels[] = { "type", types[0], "remote_type", types[1], NULL };

      gt_metrics_write_sample (out, "gt_connect_p2p_successes_total", labels,
                               (double)*(guint64 *)value);
    }
  gt_metrics_write_family (out, "gt_connect_p2p_failures_total", "counter",
                           "P2P attempts that did not reach a direct path.");
  gt_metrics_write_sample (out, "gt_connect_p2p_failures_total", NULL, (double)self->failures);
  gt_metrics_write_family (out, "gt_connect_direct_lost_total", "counter",
                           "Direct paths that went down after they were up.");
  gt_metrics_write_sample (out, "gt_connect_direct_lost_total", NULL, (double)self->lost);
  gt_metrics_write_family (out, "gt_connect_direct_up", "gauge",
                           "1 while new connections take the direct path.");
  gt_metrics_write_sample (out, "gt_connect_direct_up", NULL, self->direct_up ? 1 : 0);
  gt_metrics_write_family (out, "gt_connect_bytes_total", "counter",
                           "Bytes by path; out = from local connections to the service.");
  {
    const char *l1[] = { "path", "direct", "direction", "in", NULL };
    const char *l2[] = { "path", "direct", "direction", "out", NULL };
    const char *l3[] = { "path", "relay", "direction", "in", NULL };
    const char *l4[] = { "path", "relay", "direction", "out", NULL };
    const char *s1[] = { "path", "direct", NULL };
    const char *s2[] = { "path", "relay", NULL };

    gt_metrics_write_sample (out, "gt_connect_bytes_total", l1, (double)direct_in);
    gt_metrics_write_sample (out, "gt_connect_bytes_total", l2, (double)direct_out);
    gt_metrics_write_sample (out, "gt_connect_bytes_total", l3, (double)self->relay_in);
    gt_metrics_write_sample (out, "gt_connect_bytes_total", l4, (double)self->relay_out);
    gt_metrics_write_family (out, "gt_connect_streams_total", "counter",
                             "Local connections by the path they were given.");
    gt_metrics_write_sample (out, "gt_connect_streams_total", s1, (double)self->streams_direct);
    gt_metrics_write_sample (out, "gt_connect_streams_total", s2, (double)self->streams_relay);
  }
  gt_metrics_write_family (out, "gt_connect_streams_retried_total", "counter",
                           "Connections moved off a failed direct path before any byte.");
  gt_metrics_write_sample (out, "gt_connect_streams_retried_total", NULL, (double)self->retried);
  gt_metrics_write_family (out, "gt_connect_streams_refused_total", "counter",
                           "Connections closed for want of any path.");
  gt_metrics_write_sample (out, "gt_connect_streams_refused_total", NULL,
                           (double)self->streams_refused);
  return g_string_free (out, FALSE);
}

static void
metrics_cb (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
            gpointer user_data)
{
  g_autofree char *text = NULL;

  if (strcmp (soup_server_message_get_method (msg), "GET") != 0)
    {
      soup_server_message_set_status (msg, 405, NULL);
      return;
    }
  text = gt_p2p_connect_metrics (user_data);
  soup_server_message_set_status (msg, 200, NULL);
  soup_server_message_set_response (msg, GT_METRICS_CONTENT_TYPE, SOUP_MEMORY_TAKE,
                                    g_steal_pointer (&text), strlen (text));
}

/* ------------------------------------------------------------------------------------------ */
/* Lifecycle */

static GSocketAddress *
resolve_address (const char *text, GError **error)
{
  g_autoptr (GSocketConnectable) addr = g_network_address_parse (text, 0, error);
  g_autoptr (GSocketAddressEnumerator) e = NULL;

  if (addr == NULL)
    return NULL;
  e = g_socket_connectable_enumerate (addr);
  return g_socket_address_enumerator_next (e, NULL, error);
}

gboolean
gt_p2p_connect_start (GtP2pConnect *self, GError **error)
{
  g_autoptr (GSocketAddress) addr = resolve_address (self->config->local_addr, error);
  g_autoptr (GSocketAddress) effective = NULL;
  g_autofree char *host = NULL;

  if (addr == NULL)
    {
      g_prefix_error (error, "localAddr: ");
      return FALSE;
    }
  self->listener = g_socket_service_new ();
  if (!g_socket_listener_add_address (G_SOCKET_LISTENER (self->listener), addr,
                                      G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, NULL, &effective,
                                      error))
    {
      g_prefix_error (error, "localAddr %s: ", self->config->local_addr);
      return FALSE;
    }
  host = g_inet_address_to_string (
      g_inet_socket_address_get_address (G_INET_SOCKET_ADDRESS (effective)));
  self->local_address
      = g_strdup_printf (strchr (host, ':') ? "[%s]:%u" : "%s:%u", host,
                         g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (effective)));
  g_signal_connect (self->listener, "incoming", G_CALLBACK (incoming_cb), self);
  if (self->config->metrics_addr != NULL)
    {
      g_autoptr (GSocketAddress) maddr = resolve_address (self->config->metrics_addr, error);

      self->metrics_server = soup_server_new (NULL, NULL);
      soup_server_add_handler (self->metrics_server, "/metrics", metrics_cb, self, NULL);
      if (maddr == NULL || !soup_server_listen (self->metrics_server, maddr, 0, error))
        {
          g_prefix_error (error, "metricsAddr %s: ", self->config->metrics_addr);
          return FALSE;
        }
    }
  g_socket_service_start (self->listener);
  g_message ("gt connect: listening on %s for %s (service '%s'), relay path: %s",
             self->local_address, self->config->host, self->config->service,
             has_relay (self) ? self->relay_description : "none");
  attempt_start (self);
  return TRUE;
}

const char *
gt_p2p_connect_get_local_address (GtP2pConnect *self)
{
  return self->local_address;
}

void
gt_p2p_connect_set_relay (GtP2pConnect *self, const char *description, GtP2pRelayOpenFunc open,
                          GtP2pRelayFinishFunc finish, gpointer user_data)
{
  g_free (self->relay_description);
  self->relay_description = g_strdup (description);
  self->relay_open = open;
  self->relay_finish = finish;
  self->relay_data = user_data;
}

GtP2pConnect *
gt_p2p_connect_new (GtConnectConfig *config)
{
  GtP2pConnect *self = g_object_new (GT_TYPE_P2P_CONNECT, NULL);
  const char *service = config->service;

  self->config = config;
  self->session = soup_session_new_with_options ("user-agent", "gt-connect", "timeout", 30, NULL);
  /* The relay path: relayAddr, or the server's port of a `:PORT/` tcp service. */
  if (config->relay_addr != NULL)
    self->relay_target = g_network_address_parse (config->relay_addr, 0, NULL);
  else if (service[0] == ':')
    {
      guint64 port;
      g_autofree char *digits = g_strndup (service + 1, strcspn (service + 1, "/"));

      if (g_ascii_string_to_unsigned (digits, 10, 1, 65535, &port, NULL))
        self->relay_target = g_network_address_new (config->remote_host, (guint16)port);
    }
  if (self->relay_target != NULL)
    {
      g_autofree char *target = g_socket_connectable_to_string (self->relay_target);
      g_autofree char *what = g_strdup_printf ("TCP to %s", target);

      self->relay_client = g_socket_client_new ();
      gt_p2p_connect_set_relay (self, what, default_relay_open, default_relay_finish, self);
    }
  return self;
}

static void
gt_p2p_connect_dispose (GObject *object)
{
  GtP2pConnect *self = GT_P2P_CONNECT (object);
  GHashTableIter iter;
  gpointer r;

  if (self->listener != NULL)
    {
      g_socket_service_stop (self->listener);
      g_socket_listener_close (G_SOCKET_LISTENER (self->listener));
      g_signal_handlers_disconnect_by_data (self->listener, self);
      g_clear_object (&self->listener);
    }
  g_clear_object (&self->metrics_server);
  g_clear_handle_id (&self->retry_id, g_source_remove);
  if (self->peer != NULL)
    {
      g_signal_handlers_disconnect_by_data (self->peer, self);
      gt_p2p_peer_close (self->peer);
      g_clear_object (&self->peer);
    }
  if (self->xp_cancellable != NULL)
    g_cancellable_cancel (self->xp_cancellable);
  g_clear_object (&self->xp_cancellable);
  g_clear_handle_id (&self->gather_id, g_source_remove);
  g_clear_handle_id (&self->attempt_timeout_id, g_source_remove);
  g_queue_clear_full (&self->waiting, (GDestroyNotify)waiting_free);
  if (self->relays != NULL)
    {
      g_autoptr (GPtrArray) all = g_ptr_array_new ();

      g_hash_table_iter_init (&iter, self->relays);
      while (g_hash_table_iter_next (&iter, &r, NULL))
        g_ptr_array_add (all, r);
      for (guint i = 0; i < all->len; i++)
        relay_close (all->pdata[i]);
    }
  g_clear_object (&self->session);
  g_clear_object (&self->relay_client);
  g_clear_object (&self->relay_target);
  G_OBJECT_CLASS (gt_p2p_connect_parent_class)->dispose (object);
}

static void
gt_p2p_connect_finalize (GObject *object)
{
  GtP2pConnect *self = GT_P2P_CONNECT (object);

  g_hash_table_unref (self->relays);
  g_hash_table_unref (self->successes);
  g_byte_array_unref (self->xp_buf);
  g_free (self->local_address);
  g_free (self->relay_description);
  gt_connect_config_free (self->config);
  G_OBJECT_CLASS (gt_p2p_connect_parent_class)->finalize (object);
}

static void
gt_p2p_connect_class_init (GtP2pConnectClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->dispose = gt_p2p_connect_dispose;
  object_class->finalize = gt_p2p_connect_finalize;
}

static void
gt_p2p_connect_init (GtP2pConnect *self)
{
  self->relays = g_hash_table_new_full (NULL, NULL, (GDestroyNotify)relay_unref, NULL);
  self->successes = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  self->xp_buf = g_byte_array_new ();
  self->backoff_ms = BACKOFF_MIN_MS;
  g_queue_init (&self->waiting);
}
