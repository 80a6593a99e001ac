/* gt-quic.c: QUIC connections (ngtcp2 0.12 + ngtcp2_crypto_gnutls) driven by the GLib main loop:
 * one UDP socket watch per client (per server endpoint), one timer source per connection for
 * ngtcp2's expiry and batched sends, and bidirectional streams as pollable GIOStreams. */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include "gt-certificate.h"
#include "gt-fd-source.h"
#include "gt-native-streams.h"
#include "gt-quic.h"
#include "gt-ready-source.h"

/* Largest UDP payload sent: 1452 fits Ethernet with IPv6. A connection starts at 1200 bytes, the
 * minimum every QUIC path carries, and goes up to this once ngtcp2's path MTU discovery saw a
 * padded probe of that size acknowledged (tunnels cross unknown paths: a lost probe costs
 * nothing, the connection stays at the size it had). */
#define MAX_UDP_PAYLOAD 1452
#define RX_BUF_SIZE 65536
/* Server connection IDs: long enough to be unguessable, fixed so short headers can be routed. */
#define SCID_LEN 18
/* Send buffers. A stream takes the application's bytes while fewer than TX_UNSENT_HIGH of them
 * wait to go out. Bytes sent stay until acknowledged; under loss that is a few round trips' worth
 * (those past a lost packet wait for its resend), which congestion control bounds in an honest
 * peer; TX_STREAM_MAX (above an honest peer's largest stream window, MAX_STREAM_WINDOW) and
 * TX_CONN_MAX (above its connection window, MAX_CONN_WINDOW) bound them against the others.
 * (A cap of 1 MiB on sent and unsent bytes together held one download over a 100 Mbit/s, 50 ms,
 * 2 %-loss link to 5.9 MB/s; docs/benchmarks.md, "Under loss and delay".) */
#define TX_UNSENT_HIGH (1024 * 1024)
#define TX_STREAM_MAX (8 * 1024 * 1024)
#define TX_CONN_MAX (32 * 1024 * 1024)
/* Receive windows: QUIC flow control is the only flow control of a QUIC tunnel's streams. A
 * stream's window bounds what it holds unread; the connection's credit goes back on arrival. */
#define STREAM_WINDOW (256 * 1024)
#define MAX_STREAM_WINDOW (6 * 1024 * 1024)
#define CONN_WINDOW (1024 * 1024)
#define MAX_CONN_WINDOW (16 * 1024 * 1024)
/* Packets of one flush that go out in one sendmsg (UDP GSO): all but the last of the same size,
 * together under the 64 KiB datagram limit. */
#define GSO_MAX 40
/* Packets sent or received per dispatch before the main loop gets a turn. */
#define BATCH 128
/* Connections a server holds at once (handshakes included): each costs a TLS session. */
#define MAX_SERVER_CONNS 4096
#define HANDSHAKE_TIMEOUT_NS (10 * NGTCP2_SECONDS)
/* A closed tunnel's last bytes (an ERROR frame, say) get this long to be acknowledged. */
#define CLOSE_LINGER_US (2 * G_USEC_PER_SEC)
/* Streams a client lets its server open at once: one per user connection (gt streams are native
 * QUIC streams, docs/protocol.md §6.0); each that ends makes room for the next. */
#define CLIENT_PEER_STREAMS 4096
/* Application error codes (docs/protocol.md §6.0); the mux's stream resets use codes of their own
 * (0x100 and up). */
#define APP_NO_ERROR 0
#define APP_STREAM_RESET 1
/* DATAGRAM frames (RFC 9221): the largest one a peer may send us (the packet size bounds what
 * really comes), the bytes a 1-RTT packet spends around one (short header with a connection ID
 * of up to 20 bytes, packet number, AEAD tag, frame type and length, room for an ACK), and how
 * many wait to be sent before more are dropped, as a full socket buffer drops them. */
#define MAX_DATAGRAM_FRAME 65535
#define DATAGRAM_OVERHEAD 64
#define MAX_DATAGRAMS_QUEUED 256

static const char priority[] =
  "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305"
  ":+AES-128-CCM";

typedef struct _QStream QStream;

struct _GtQuicConn
{
  grefcount ref;
  ngtcp2_conn *conn;
  ngtcp2_crypto_conn_ref conn_ref;
  gnutls_session_t session;
  gnutls_certificate_credentials_t cred; /* client only (a server's belongs to it) */
  GtQuicServer *server;                  /* server side (not owned; cleared when it goes) */
  gboolean is_server;
  int fd;                                /* client: owned; server: the endpoint's */
  struct sockaddr_storage local, remote;
  socklen_t local_len, remote_len;
  GMainContext *context;
  GSource *timer;       /* ngtcp2 expiry, and "flush now" (ready time 0) */
  GSource *in_source;   /* client: its socket */
  GSource *out_source;  /* while the socket's send buffer is full */
  guint8 *stalled;      /* the packet that did not fit the send buffer */
  gsize stalled_len;
  gsize stalled_seg;    /* its GSO segment size (0: one packet) */
  guint8 *batch;        /* GSO_MAX packets being gathered by conn_flush */
  struct sockaddr_storage stalled_to;
  socklen_t stalled_to_len;
  GHashTable *streams;  /* stream id (gint64 *) → QStream* (ref) */
  guint64 tx_buffered;  /* bytes in the streams' tx queues (sent or not), of streams not closed */
  GQueue tx_queue;      /* QStream* with bytes or a FIN to send */
  GQueue incoming;      /* server: QStream* opened by the peer, not handed out yet */
  GTask *connect_task;  /* client: until the handshake completes (it holds a ref meanwhile) */
  gulong cancel_id;
  GError *error;        /* set once closed */
  gboolean closed;
  gboolean handshake_done;
  guint handshake_timeout_ms;
  gboolean announced;   /* server: its tunnel stream went to the server */
  GtNativeStreamFunc accept_func; /* takes the streams the peer opens (after the tunnel's) */
  gpointer accept_data;
  GtNativeDatagramFunc datagram_func; /* takes the DATAGRAM frames that arrive */
  gpointer datagram_data;
  GQueue datagrams;     /* GBytes*: DATAGRAM frames to send, oldest first */
  guint datagram_tries; /* packets the oldest did not fit in */
  QStream *closing;     /* the tunnel stream, closed: its last bytes go out, then the connection */
  gint64 close_deadline_us;
  /* client verification */
  char *host;
  GtTlsVerify verify;
  char *verify_error;
  /* server: connection IDs registered in the endpoint's table */
  GPtrArray *cids;      /* CidKey* */
};

struct _QStream
{
  grefcount ref;
  GtQuicConn *conn; /* ref; cleared by stream_detach */
  gint64 id;
  /* receive side: chunks the application has not read yet */
  GQueue rx;        /* GBytes* */
  gsize rx_head_off;
  gsize rx_len;
  gboolean rx_fin;
  /* send side: chunks not acknowledged yet; offsets count from the stream's start */
  GQueue tx;        /* GBytes* */
  guint64 tx_base;  /* offset of the first chunk in tx */
  guint64 tx_sent;  /* handed to ngtcp2 */
  guint64 tx_end;
  gboolean tx_fin;  /* the application closed its side */
  gboolean fin_sent;
  gboolean in_tx_queue;
  gboolean tx_released; /* its tx bytes no longer count in the connection's tx_buffered */
  gboolean owns_conn;
  gboolean closed;  /* ngtcp2 is done with it */
  gboolean app_closed; /* the application closed it or reset it: incoming bytes are dropped */
  gboolean reset_sent;
  gboolean peer_reset; /* the peer sent RESET_STREAM (or STOP_SENDING) with peer_code */
  guint64 peer_code;
  GError *error;
};

typedef struct
{
  guint8 len;
  guint8 data[NGTCP2_MAX_CIDLEN];
} CidKey;

struct _GtQuicServer
{
  int fd;
  GSource *source;
  GMainContext *context;
  struct sockaddr_storage local;
  socklen_t local_len;
  gnutls_certificate_credentials_t cred;
  guint8 reset_secret[32];
  guint idle_timeout_ms;
  GHashTable *by_cid; /* CidKey* → GtQuicConn* (not owned) */
  GHashTable *conns;  /* GtQuicConn* (ref) */
  GtQuicTunnelFunc func;  /* NULL once it stopped accepting */
  gpointer user_data;
  guint8 *buf;
};

static void conn_flush (GtQuicConn *c);
static gboolean conn_out_cb (GSocket *socket, GIOCondition condition, gpointer user_data);
static void conn_fail (GtQuicConn *c, int liberr, GError *error);
static void conn_schedule (GtQuicConn *c);
static GIOStream *qstream_wrap (QStream *s);

static ngtcp2_tstamp
now_ns (void)
{
  return (ngtcp2_tstamp) g_get_monotonic_time () * NGTCP2_MICROSECONDS;
}

static void
rand_cb (uint8_t *dest, size_t destlen, const ngtcp2_rand_ctx *rand_ctx)
{
  gnutls_rnd (GNUTLS_RND_RANDOM, dest, destlen);
}

/* ------------------------------------------------------------------------------------------ */
/* Streams (state shared by the GIOStream and the connection) */

static QStream *
qstream_ref (QStream *s)
{
  g_ref_count_inc (&s->ref);
  return s;
}

static void
qstream_unref (QStream *s)
{
  if (!g_ref_count_dec (&s->ref))
    return;
  g_queue_clear_full (&s->rx, (GDestroyNotify) g_bytes_unref);
  g_queue_clear_full (&s->tx, (GDestroyNotify) g_bytes_unref);
  g_clear_error (&s->error);
  g_clear_pointer (&s->conn, gt_quic_conn_unref);
  g_free (s);
}

static QStream *
qstream_new (GtQuicConn *c, gint64 id)
{
  QStream *s = g_new0 (QStream, 1);
  gint64 *key = g_new (gint64, 1);

  g_ref_count_init (&s->ref);
  s->conn = gt_quic_conn_ref (c);
  s->id = id;
  *key = id;
  g_hash_table_insert (c->streams, key, qstream_ref (s));
  ngtcp2_conn_set_stream_user_data (c->conn, id, s);
  return s;
}

static void
qstream_fail (QStream *s, GError *error)
{
  if (s->error == NULL)
    s->error = error;
  else
    g_error_free (error);
}

static gboolean
qstream_has_tx (QStream *s)
{
  return s->error == NULL && !s->closed
         && (s->tx_sent < s->tx_end || (s->tx_fin && !s->fin_sent));
}

static void
qstream_queue_tx (QStream *s)
{
  GtQuicConn *c = s->conn;

  if (c == NULL || s->in_tx_queue || !qstream_has_tx (s))
    return;
  s->in_tx_queue = TRUE;
  g_queue_push_tail (&c->tx_queue, qstream_ref (s));
  conn_schedule (c);
}

static void
qstream_unqueue_tx (QStream *s)
{
  if (!s->in_tx_queue)
    return;
  s->in_tx_queue = FALSE;
  g_queue_remove (&s->conn->tx_queue, s);
  qstream_unref (s);
}

/* Vectors over the bytes not handed to ngtcp2 yet; *all: they reach the end. */
static gsize
qstream_tx_vecs (QStream *s, ngtcp2_vec *v, gsize max, gboolean *all)
{
  guint64 off = s->tx_base;
  gsize n = 0;

  for (GList *l = s->tx.head; l != NULL && n < max; l = l->next)
    {
      gsize len;
      const guint8 *data = g_bytes_get_data (l->data, &len);

      if (off + len > s->tx_sent)
        {
          gsize skip = s->tx_sent > off ? s->tx_sent - off : 0;

          v[n].base = (uint8_t *) data + skip;
          v[n].len = len - skip;
          n++;
        }
      off += len;
    }
  {
    guint64 covered = s->tx_sent;

    for (gsize i = 0; i < n; i++)
      covered += v[i].len;
    *all = covered == s->tx_end;
  }
  return n;
}

static void
qstream_acked (QStream *s, guint64 upto)
{
  while (!g_queue_is_empty (&s->tx))
    {
      gsize len = g_bytes_get_size (g_queue_peek_head (&s->tx));

      if (s->tx_base + len > upto)
        break;
      g_bytes_unref (g_queue_pop_head (&s->tx));
      s->tx_base += len;
      if (!s->tx_released && s->conn != NULL)
        s->conn->tx_buffered -= len;
    }
}

/* Everything of the stream in the connection goes: ngtcp2 closed it, or the connection went. */
static void
stream_detach (GtQuicConn *c, QStream *s)
{
  s->closed = TRUE;
  if (!s->tx_released)
    {
      c->tx_buffered -= s->tx_end - s->tx_base;
      s->tx_released = TRUE;
    }
  qstream_unqueue_tx (s);
  g_hash_table_remove (c->streams, &s->id);
}

/* ------------------------------------------------------------------------------------------ */
/* ngtcp2 callbacks */

static ngtcp2_conn *
get_conn_cb (ngtcp2_crypto_conn_ref *ref)
{
  return ((GtQuicConn *) ref->user_data)->conn;
}

static int
handshake_completed_cb (ngtcp2_conn *conn, void *user_data)
{
  GtQuicConn *c = user_data;

  c->handshake_done = TRUE;
  return 0;
}

static int
recv_datagram_cb (ngtcp2_conn *conn, uint32_t flags, const uint8_t *data, size_t datalen,
                  void *user_data)
{
  GtQuicConn *c = user_data;

  if (c->datagram_func != NULL && !c->closed)
    c->datagram_func (data, datalen, c->datagram_data);
  return 0;
}

static int
recv_stream_data_cb (ngtcp2_conn *conn, uint32_t flags, int64_t stream_id, uint64_t offset,
                     const uint8_t *data, size_t datalen, void *user_data,
                     void *stream_user_data)
{
  QStream *s = stream_user_data;

  /* The connection's credit goes back as bytes arrive: what a stream holds unread is bounded by
   * its own window, and a stream whose reader stalls must not take the others' credit. */
  ngtcp2_conn_extend_max_offset (conn, datalen);
  if (s == NULL || s->error != NULL || s->app_closed)
    {
      /* Nobody reads it: its credit goes back at once too. */
      ngtcp2_conn_extend_max_stream_offset (conn, stream_id, datalen);
      return 0;
    }
  if (datalen > 0)
    {
      g_queue_push_tail (&s->rx, g_bytes_new (data, datalen));
      s->rx_len += datalen;
    }
  if (flags & NGTCP2_STREAM_DATA_FLAG_FIN)
    s->rx_fin = TRUE;
  return 0;
}

static int
acked_stream_data_offset_cb (ngtcp2_conn *conn, int64_t stream_id, uint64_t offset,
                             uint64_t datalen, void *user_data, void *stream_user_data)
{
  QStream *s = stream_user_data;

  if (s != NULL)
    qstream_acked (s, offset + datalen);
  return 0;
}

static int
stream_open_cb (ngtcp2_conn *conn, int64_t stream_id, void *user_data)
{
  GtQuicConn *c = user_data;
  QStream *s;

  if (!ngtcp2_is_bidi_stream (stream_id) || ngtcp2_conn_is_local_stream (conn, stream_id))
    return 0;
  s = qstream_new (c, stream_id);
  g_queue_push_tail (&c->incoming, s);
  return 0;
}

static int
stream_close_cb (ngtcp2_conn *conn, uint32_t flags, int64_t stream_id, uint64_t app_error_code,
                 void *user_data, void *stream_user_data)
{
  GtQuicConn *c = user_data;
  QStream *s = stream_user_data;

  /* A client's server opens a stream per user connection: each one that ends frees a place. */
  if (!c->is_server && ngtcp2_is_bidi_stream (stream_id)
      && !ngtcp2_conn_is_local_stream (conn, stream_id))
    ngtcp2_conn_extend_max_streams_bidi (conn, 1);
  if (s == NULL)
    return 0;
  if ((flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET) && app_error_code != APP_NO_ERROR)
    qstream_fail (s, g_error_new (G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                                  "QUIC stream reset by the peer (code %" G_GUINT64_FORMAT ")",
                                  (guint64) app_error_code));
  else if (!s->rx_fin || !s->fin_sent)
    qstream_fail (s, g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                                          "QUIC stream closed"));
  stream_detach (c, s);
  return 0;
}

static int
stream_reset_cb (ngtcp2_conn *conn, int64_t stream_id, uint64_t final_size,
                 uint64_t app_error_code, void *user_data, void *stream_user_data)
{
  QStream *s = stream_user_data;

  if (s != NULL)
    {
      if (!s->peer_reset)
        {
          s->peer_reset = TRUE;
          s->peer_code = app_error_code;
        }
      qstream_fail (s, g_error_new (G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                                    "QUIC stream reset by the peer (code %" G_GUINT64_FORMAT ")",
                                    (guint64) app_error_code));
    }
  return 0;
}

static int
stream_stop_sending_cb (ngtcp2_conn *conn, int64_t stream_id, uint64_t app_error_code,
                        void *user_data, void *stream_user_data)
{
  QStream *s = stream_user_data;

  if (s != NULL)
    {
      if (!s->peer_reset)
        {
          s->peer_reset = TRUE;
          s->peer_code = app_error_code;
        }
      qstream_fail (s, g_error_new_literal (G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE,
                                            "the peer stopped reading the QUIC stream"));
    }
  return 0;
}

static int
extend_max_stream_data_cb (ngtcp2_conn *conn, int64_t stream_id, uint64_t max_data,
                           void *user_data, void *stream_user_data)
{
  QStream *s = stream_user_data;

  if (s != NULL)
    qstream_queue_tx (s);
  return 0;
}

static void
cid_key_set (CidKey *key, const uint8_t *data, gsize len)
{
  memset (key, 0, sizeof *key);
  key->len = MIN (len, sizeof key->data);
  memcpy (key->data, data, key->len);
}

static guint
cid_hash (gconstpointer p)
{
  const CidKey *k = p;
  guint h = k->len;

  for (guint i = 0; i < k->len; i++)
    h = h * 31 + k->data[i];
  return h;
}

static gboolean
cid_equal (gconstpointer a, gconstpointer b)
{
  const CidKey *x = a, *y = b;

  return x->len == y->len && memcmp (x->data, y->data, x->len) == 0;
}

static void
conn_add_cid (GtQuicConn *c, const uint8_t *data, gsize len)
{
  CidKey *key = g_new (CidKey, 1);

  cid_key_set (key, data, len);
  if (c->server == NULL || g_hash_table_contains (c->server->by_cid, key))
    {
      g_free (key);
      return;
    }
  g_hash_table_insert (c->server->by_cid, key, c);
  g_ptr_array_add (c->cids, key);
}

static int
get_new_connection_id_cb (ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                          void *user_data)
{
  GtQuicConn *c = user_data;

  gnutls_rnd (GNUTLS_RND_RANDOM, cid->data, cidlen);
  cid->datalen = cidlen;
  if (c->server != NULL)
    {
      if (ngtcp2_crypto_generate_stateless_reset_token (
            token, c->server->reset_secret, sizeof c->server->reset_secret, cid)
          != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
      conn_add_cid (c, cid->data, cid->datalen);
    }
  else
    gnutls_rnd (GNUTLS_RND_RANDOM, token, NGTCP2_STATELESS_RESET_TOKENLEN);
  return 0;
}

static int
remove_connection_id_cb (ngtcp2_conn *conn, const ngtcp2_cid *cid, void *user_data)
{
  GtQuicConn *c = user_data;
  CidKey key;

  if (c->server == NULL)
    return 0;
  cid_key_set (&key, cid->data, cid->datalen);
  for (guint i = 0; i < c->cids->len; i++)
    if (cid_equal (c->cids->pdata[i], &key))
      {
        g_hash_table_remove (c->server->by_cid, &key);
        g_ptr_array_remove_index_fast (c->cids, i);
        break;
      }
  return 0;
}

static void
fill_callbacks (ngtcp2_callbacks *cb, gboolean server)
{
  memset (cb, 0, sizeof *cb);
  if (server)
    cb->recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
  else
    {
      cb->client_initial = ngtcp2_crypto_client_initial_cb;
      cb->recv_retry = ngtcp2_crypto_recv_retry_cb;
    }
  cb->recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
  cb->encrypt = ngtcp2_crypto_encrypt_cb;
  cb->decrypt = ngtcp2_crypto_decrypt_cb;
  cb->hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb->update_key = ngtcp2_crypto_update_key_cb;
  cb->delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb->delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb->get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb->version_negotiation = ngtcp2_crypto_version_negotiation_cb;
  cb->rand = rand_cb;
  cb->get_new_connection_id = get_new_connection_id_cb;
  cb->remove_connection_id = remove_connection_id_cb;
  cb->handshake_completed = handshake_completed_cb;
  cb->recv_stream_data = recv_stream_data_cb;
  cb->acked_stream_data_offset = acked_stream_data_offset_cb;
  cb->stream_open = stream_open_cb;
  cb->stream_close = stream_close_cb;
  cb->stream_reset = stream_reset_cb;
  cb->stream_stop_sending = stream_stop_sending_cb;
  cb->extend_max_stream_data = extend_max_stream_data_cb;
  cb->recv_datagram = recv_datagram_cb;
}

static void
fill_settings (ngtcp2_settings *st, ngtcp2_transport_params *tp, guint idle_timeout_ms,
               gboolean server)
{
  ngtcp2_settings_default (st);
  st->initial_ts = now_ns ();
  st->max_tx_udp_payload_size = MAX_UDP_PAYLOAD;
  st->max_window = MAX_CONN_WINDOW;
  st->max_stream_window = MAX_STREAM_WINDOW;
  st->handshake_timeout = HANDSHAKE_TIMEOUT_NS;
  /* BBR: a loss-based controller (CUBIC, Reno) takes random loss for congestion and halves its
   * window each time; at 2 % loss and 50 ms RTT CUBIC moved 0.4 MB/s where BBR moved 5 and TCP
   * tunnels (Linux BBR here) 1.5 (docs/benchmarks.md, "Under loss and delay"). BBR also keeps its
   * name in ngtcp2 1.x, where BBR2 is gone. */
  st->cc_algo = NGTCP2_CC_ALGO_BBR;
  ngtcp2_transport_params_default (tp);
  tp->initial_max_stream_data_bidi_local = STREAM_WINDOW;
  tp->initial_max_stream_data_bidi_remote = STREAM_WINDOW;
  tp->initial_max_data = CONN_WINDOW;
  /* The server takes one stream from its client: the tunnel's control stream; the client takes
   * the streams its server opens, one per gt stream. */
  tp->initial_max_streams_bidi = server ? 1 : CLIENT_PEER_STREAMS;
  tp->initial_max_streams_uni = 0;
  tp->max_idle_timeout = (ngtcp2_duration) idle_timeout_ms * NGTCP2_MILLISECONDS;
  tp->active_connection_id_limit = 4;
  /* gt's datagrams (docs/protocol.md §6.12) ride in DATAGRAM frames when they fit a packet. */
  tp->max_datagram_frame_size = MAX_DATAGRAM_FRAME;
}

/* ------------------------------------------------------------------------------------------ */
/* Sending */

/* Whether the kernel takes UDP_SEGMENT (Linux 4.18+); cleared at the first refusal. */
static gint gso_supported = 1;

/* Sends len bytes to `to`: one datagram, or (seg > 0 and < len) datagrams of seg bytes each but
 * the last, with one sendmsg (GSO) or, where GSO is refused, one by one. -1 and errno on error. */
static ssize_t
udp_send (int fd, const guint8 *buf, gsize len, gsize seg, const struct sockaddr *to,
          socklen_t to_len)
{
  struct iovec iov = { (void *) buf, len };
  struct msghdr msg = { 0 };
  union
  {
    char buf[CMSG_SPACE (sizeof (guint16))];
    struct cmsghdr align;
  } control;
  ssize_t n;

  msg.msg_name = (void *) to;
  msg.msg_namelen = to_len;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (seg > 0 && seg < len && g_atomic_int_get (&gso_supported))
    {
      struct cmsghdr *cm;
      guint16 size = seg;

      memset (&control, 0, sizeof control);
      msg.msg_control = control.buf;
      msg.msg_controllen = sizeof control.buf;
      cm = CMSG_FIRSTHDR (&msg);
      cm->cmsg_level = SOL_UDP;
      cm->cmsg_type = UDP_SEGMENT;
      cm->cmsg_len = CMSG_LEN (sizeof size);
      memcpy (CMSG_DATA (cm), &size, sizeof size);
      do
        n = sendmsg (fd, &msg, MSG_DONTWAIT);
      while (n < 0 && errno == EINTR);
      if (n >= 0 || (errno != EIO && errno != EINVAL && errno != ENOPROTOOPT
                     && errno != EOPNOTSUPP))
        return n;
      g_atomic_int_set (&gso_supported, 0);
      g_debug ("QUIC: no UDP GSO here (%s): one packet per send", g_strerror (errno));
    }
  if (seg == 0 || seg >= len)
    {
      do
        n = sendto (fd, buf, len, MSG_DONTWAIT, to, to_len);
      while (n < 0 && errno == EINTR);
      return n;
    }
  for (gsize off = 0; off < len; off += seg)
    {
      do
        n = sendto (fd, buf + off, MIN (seg, len - off), MSG_DONTWAIT, to, to_len);
      while (n < 0 && errno == EINTR);
      if (n < 0 && off == 0)
        return -1;
      if (n < 0)
        return (ssize_t) off; /* partly sent: the rest is lost, QUIC resends it */
    }
  return (ssize_t) len;
}

/* ------------------------------------------------------------------------------------------ */
/* Receiving */

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

/* Asks the kernel to hand over packets of one flow together (UDP GRO, Linux 5.0+): one recvmsg
 * for a whole GSO batch of the peer instead of one per packet. Without it, nothing changes. */
static void
udp_enable_gro (int fd)
{
  int one = 1;

  if (setsockopt (fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) != 0)
    g_debug ("QUIC: no UDP GRO here (%s)", g_strerror (errno));
}

/* One recvmsg: the bytes of one datagram, or of several packets of the same size (the last may
 * be shorter) the kernel coalesced, *seg being then their size (else the whole length). */
static ssize_t
udp_recv (int fd, guint8 *buf, gsize size, struct sockaddr_storage *from, socklen_t *from_len,
          gsize *seg)
{
  struct iovec iov = { buf, size };
  struct msghdr msg = { 0 };
  union
  {
    char buf[CMSG_SPACE (sizeof (int))];
    struct cmsghdr align;
  } control;
  ssize_t n;

  msg.msg_name = from;
  msg.msg_namelen = sizeof *from;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  do
    n = recvmsg (fd, &msg, MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return n;
  *from_len = msg.msg_namelen;
  *seg = n;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR (&msg); cm != NULL; cm = CMSG_NXTHDR (&msg, cm))
    if (cm->cmsg_level == IPPROTO_UDP && cm->cmsg_type == UDP_GRO
        && cm->cmsg_len >= CMSG_LEN (sizeof (int)))
      {
        int gso;

        memcpy (&gso, CMSG_DATA (cm), sizeof gso);
        if (gso > 0 && gso < n)
          *seg = gso;
      }
  return n;
}

static void
conn_watch_out (GtQuicConn *c)
{
  g_autoptr (GSocket) sock = NULL;
  int dupfd = dup (c->fd);

  if (dupfd >= 0)
    sock = g_socket_new_from_fd (dupfd, NULL);
  if (sock == NULL)
    {
      if (dupfd >= 0)
        close (dupfd);
      g_clear_pointer (&c->stalled, g_free); /* lost: QUIC resends it */
      conn_schedule (c);
      return;
    }
  c->out_source = g_socket_create_source (sock, G_IO_OUT, NULL);
  g_source_set_callback (c->out_source, (GSourceFunc) (void (*) (void)) conn_out_cb, c, NULL);
  g_source_attach (c->out_source, c->context);
}

static gboolean
conn_out_cb (GSocket *socket, GIOCondition condition, gpointer user_data)
{
  GtQuicConn *c = user_data;
  g_autoptr (GtQuicConn) hold = gt_quic_conn_ref (c);

  g_clear_pointer (&c->out_source, g_source_unref);
  if (c->stalled != NULL)
    {
      ssize_t n = udp_send (c->fd, c->stalled, c->stalled_len, c->stalled_seg,
                            (struct sockaddr *) &c->stalled_to, c->stalled_to_len);

      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS))
        {
          conn_watch_out (c);
          return G_SOURCE_REMOVE;
        }
      g_clear_pointer (&c->stalled, g_free);
    }
  conn_flush (c);
  return G_SOURCE_REMOVE;
}

/* Sends one packet, or a GSO batch of seg-sized packets. FALSE: the socket's buffer is full; the
 * bytes wait and so does the connection. */
static gboolean
conn_send_packet (GtQuicConn *c, const guint8 *pkt, gsize len, gsize seg,
                  const struct sockaddr *to, socklen_t to_len)
{
  ssize_t n = udp_send (c->fd, pkt, len, seg, to, to_len);

  if (n >= 0)
    return TRUE;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
    {
      c->stalled = g_memdup2 (pkt, len);
      c->stalled_len = len;
      c->stalled_seg = seg;
      memcpy (&c->stalled_to, to, to_len);
      c->stalled_to_len = to_len;
      conn_watch_out (c);
      return FALSE;
    }
  /* ICMP errors and the like: the packet is lost; QUIC's recovery and timeouts decide. */
  g_debug ("QUIC send: %s", g_strerror (errno));
  return TRUE;
}

static void
timer_update (GtQuicConn *c)
{
  ngtcp2_tstamp expiry;
  gint64 now_us, at_us;

  if (c->closed || c->timer == NULL)
    return;
  expiry = ngtcp2_conn_get_expiry (c->conn);
  if (expiry == UINT64_MAX && c->closing == NULL)
    {
      g_source_set_ready_time (c->timer, -1);
      return;
    }
  now_us = g_get_monotonic_time ();
  at_us = expiry == UINT64_MAX ? G_MAXINT64 : (gint64) (expiry / NGTCP2_MICROSECONDS);
  if (c->closing != NULL)
    at_us = MIN (at_us, c->close_deadline_us);
  g_source_set_ready_time (c->timer, MAX (at_us, now_us));
}

static void
conn_schedule (GtQuicConn *c)
{
  if (!c->closed && c->timer != NULL)
    g_source_set_ready_time (c->timer, 0);
}

static void
stream_sent (QStream *s, ngtcp2_ssize ndatalen, gboolean fin_requested, gsize offered)
{
  if (ndatalen < 0)
    return;
  s->tx_sent += (guint64) ndatalen;
  if (fin_requested && (gsize) ndatalen == offered)
    s->fin_sent = TRUE;
}

static void
conn_flush (GtQuicConn *c)
{
  ngtcp2_path_storage ps;
  ngtcp2_pkt_info pi;
  ngtcp2_tstamp ts = now_ns ();
  guint packets = 0;
  /* The batch being gathered: count packets of seg bytes (the last may be shorter) to `to`. */
  gsize off = 0, seg = 0, count = 0;
  struct sockaddr_storage to;
  socklen_t to_len = 0;
  gboolean blocked = FALSE;

  if (c->closed || c->stalled != NULL)
    return;
  if (c->batch == NULL)
    c->batch = g_malloc (GSO_MAX * MAX_UDP_PAYLOAD);
  ngtcp2_path_storage_zero (&ps);
  for (;;)
    {
      guint8 *buf = c->batch + off;
      QStream *s = g_queue_peek_head (&c->tx_queue);
      ngtcp2_vec v[16];
      gsize nv = 0, offered = 0;
      gboolean all = FALSE, fin = FALSE;
      uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
      ngtcp2_ssize ndatalen = -1, nwrite;
      gint64 sid = -1;

      if (c->datagrams.length > 0 && c->handshake_done)
        {
          GBytes *d = g_queue_peek_head (&c->datagrams);
          ngtcp2_vec dv;
          gsize dlen = 0;
          int accepted = 0;

          dv.base = (uint8_t *) g_bytes_get_data (d, &dlen);
          dv.len = dlen;
          nwrite = ngtcp2_conn_writev_datagram (c->conn, &ps.path, &pi, buf, MAX_UDP_PAYLOAD,
                                                &accepted, NGTCP2_WRITE_DATAGRAM_FLAG_MORE, 0,
                                                &dv, 1, ts);
          if (accepted || (nwrite < 0 && nwrite != NGTCP2_ERR_WRITE_MORE
                           && !ngtcp2_err_is_fatal ((int) nwrite))
              || (nwrite > 0 && ++c->datagram_tries > 2))
            {
              /* Sent; or refused (the peer takes none this size): dropped, as UDP drops; or it
               * did not fit in two packets in a row. */
              g_bytes_unref (g_queue_pop_head (&c->datagrams));
              c->datagram_tries = 0;
            }
          if (nwrite == NGTCP2_ERR_WRITE_MORE)
            continue; /* the packet has room for more */
          if (nwrite < 0 && ngtcp2_err_is_fatal ((int) nwrite))
            {
              conn_fail (c, (int) nwrite, NULL);
              return;
            }
          if (nwrite < 0)
            continue;
          if (nwrite == 0)
            break; /* congestion: they wait */
          goto have_packet;
        }
      if (s != NULL)
        {
          sid = s->id;
          nv = qstream_tx_vecs (s, v, G_N_ELEMENTS (v), &all);
          for (gsize i = 0; i < nv; i++)
            offered += v[i].len;
          if (s->tx_fin && all)
            {
              fin = TRUE;
              flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
            }
        }
      nwrite = ngtcp2_conn_writev_stream (c->conn, &ps.path, &pi, buf, MAX_UDP_PAYLOAD, &ndatalen,
                                          flags, sid, v, nv, ts);
      if (nwrite < 0)
        {
          switch (nwrite)
            {
            case NGTCP2_ERR_STREAM_DATA_BLOCKED:
            case NGTCP2_ERR_STREAM_SHUT_WR:
            case NGTCP2_ERR_STREAM_NOT_FOUND:
              /* Waits for extend_max_stream_data (or is gone). */
              qstream_unqueue_tx (s);
              continue;
            case NGTCP2_ERR_WRITE_MORE:
              stream_sent (s, ndatalen, fin, offered);
              if (!qstream_has_tx (s))
                qstream_unqueue_tx (s);
              else if (c->tx_queue.length > 1)
                {
                  /* Round robin: every stream gets its share of the packets. */
                  g_queue_pop_head (&c->tx_queue);
                  g_queue_push_tail (&c->tx_queue, s);
                }
              continue;
            default:
              conn_fail (c, (int) nwrite, NULL);
              return;
            }
        }
      if (s != NULL && ndatalen >= 0)
        {
          stream_sent (s, ndatalen, fin, offered);
          if (!qstream_has_tx (s))
            qstream_unqueue_tx (s);
          else if (c->tx_queue.length > 1)
            {
              g_queue_pop_head (&c->tx_queue);
              g_queue_push_tail (&c->tx_queue, s);
            }
        }
      if (nwrite == 0)
        break;
    have_packet:
      if (count > 0
          && ((gsize) nwrite > seg || ps.path.remote.addrlen != to_len
              || memcmp (ps.path.remote.addr, &to, to_len) != 0))
        {
          /* It does not fit the batch: the batch goes, this packet starts the next one. */
          if (!conn_send_packet (c, c->batch, off, seg, (struct sockaddr *) &to, to_len))
            {
              blocked = TRUE;
              count = 0;
              break; /* the new packet is lost: QUIC resends it */
            }
          memmove (c->batch, buf, nwrite);
          off = count = 0;
        }
      if (count == 0)
        {
          seg = nwrite;
          to_len = MIN (ps.path.remote.addrlen, sizeof to);
          memcpy (&to, ps.path.remote.addr, to_len);
        }
      off += nwrite;
      count++;
      if ((gsize) nwrite < seg || count == GSO_MAX)
        {
          gboolean sent = conn_send_packet (c, c->batch, off, seg, (struct sockaddr *) &to,
                                            to_len);

          off = count = 0;
          if (!sent)
            {
              blocked = TRUE;
              break;
            }
        }
      if (++packets >= BATCH)
        break;
    }
  if (count > 0 && !blocked)
    conn_send_packet (c, c->batch, off, seg, (struct sockaddr *) &to, to_len);
  ngtcp2_conn_update_pkt_tx_time (c->conn, ts);
  if (packets >= BATCH && !blocked && !c->closed)
    {
      /* More next iteration; the main loop gets its turn. */
      conn_schedule (c);
      return;
    }
  timer_update (c);
}

/* ------------------------------------------------------------------------------------------ */
/* Connection lifecycle */

GtQuicConn *
gt_quic_conn_ref (GtQuicConn *c)
{
  g_ref_count_inc (&c->ref);
  return c;
}

static void
conn_release_sources (GtQuicConn *c)
{
  if (c->timer != NULL)
    {
      g_source_destroy (c->timer);
      g_clear_pointer (&c->timer, g_source_unref);
    }
  if (c->in_source != NULL)
    {
      g_source_destroy (c->in_source);
      g_clear_pointer (&c->in_source, g_source_unref);
    }
  if (c->out_source != NULL)
    {
      g_source_destroy (c->out_source);
      g_clear_pointer (&c->out_source, g_source_unref);
    }
}

void
gt_quic_conn_unref (GtQuicConn *c)
{
  if (!g_ref_count_dec (&c->ref))
    return;
  g_assert (c->closed || c->conn == NULL || g_hash_table_size (c->streams) == 0);
  conn_release_sources (c);
  g_clear_pointer (&c->closing, qstream_unref);
  g_clear_pointer (&c->streams, g_hash_table_unref);
  g_queue_clear_full (&c->incoming, (GDestroyNotify) qstream_unref);
  g_queue_clear_full (&c->tx_queue, (GDestroyNotify) qstream_unref);
  g_queue_clear_full (&c->datagrams, (GDestroyNotify) g_bytes_unref);
  if (c->conn != NULL)
    ngtcp2_conn_del (c->conn);
  if (c->session != NULL)
    gnutls_deinit (c->session);
  if (c->cred != NULL)
    gnutls_certificate_free_credentials (c->cred);
  if (!c->is_server && c->fd >= 0)
    close (c->fd);
  g_clear_pointer (&c->cids, g_ptr_array_unref);
  g_clear_pointer (&c->stalled, g_free);
  g_clear_pointer (&c->batch, g_free);
  g_clear_error (&c->error);
  g_free (c->host);
  g_free (c->verify_error);
  _gt_tls_verify_clear (&c->verify);
  g_clear_pointer (&c->context, g_main_context_unref);
  g_free (c);
}

static void server_forget (GtQuicServer *server, GtQuicConn *c);

/* Client: the handshake is over (error NULL: it succeeded). */
static void
conn_finish_connect (GtQuicConn *c, GError *error)
{
  GTask *task = g_steal_pointer (&c->connect_task);

  if (task == NULL)
    {
      g_clear_error (&error);
      return;
    }
  g_cancellable_disconnect (g_task_get_cancellable (task), c->cancel_id);
  c->cancel_id = 0;
  if (error != NULL)
    g_task_return_error (task, error);
  else
    g_task_return_pointer (task, gt_quic_conn_ref (c), (GDestroyNotify) gt_quic_conn_unref);
  g_object_unref (task);
  gt_quic_conn_unref (c); /* the handshake's own ref */
}

static GError *
conn_error_from (GtQuicConn *c, int liberr)
{
  ngtcp2_connection_close_error cc;
  const ngtcp2_connection_close_error *ccerr = &cc;

  if (c->verify_error != NULL)
    return g_error_new_literal (G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE, c->verify_error);
  if (liberr == NGTCP2_ERR_IDLE_CLOSE)
    return g_error_new_literal (G_IO_ERROR, G_IO_ERROR_TIMED_OUT,
                                "QUIC connection idle for too long");
  if (liberr == NGTCP2_ERR_HANDSHAKE_TIMEOUT)
    return g_error_new (G_IO_ERROR, G_IO_ERROR_TIMED_OUT,
                        "no QUIC handshake within %u ms (is UDP blocked?)",
                        c->handshake_timeout_ms != 0 ? c->handshake_timeout_ms : 10000);
  if (liberr == NGTCP2_ERR_DRAINING || liberr == NGTCP2_ERR_CLOSING)
    {
      ngtcp2_conn_get_connection_close_error (c->conn, &cc);
      if (ccerr->type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT
          && (ccerr->error_code & 0xff00) == NGTCP2_CRYPTO_ERROR)
        return g_error_new (G_TLS_ERROR, G_TLS_ERROR_HANDSHAKE,
                            "QUIC: the peer refused the TLS handshake (alert %u)",
                            (guint) (ccerr->error_code & 0xff));
      if (ccerr->reasonlen > 0)
        return g_error_new (G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                            "QUIC connection closed by the peer: %.*s", (int) ccerr->reasonlen,
                            (const char *) ccerr->reason);
      return g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                                  "QUIC connection closed by the peer");
    }
  if (liberr == NGTCP2_ERR_CRYPTO)
    return g_error_new (G_TLS_ERROR, G_TLS_ERROR_HANDSHAKE, "QUIC TLS handshake failed (alert %u)",
                        (guint) ngtcp2_conn_get_tls_alert (c->conn));
  return g_error_new (G_IO_ERROR, G_IO_ERROR_FAILED, "QUIC: %s", ngtcp2_strerror (liberr));
}

/* Ends the connection: a CONNECTION_CLOSE goes out unless the peer ended it or it timed out;
 * every stream fails with error (made from liberr when NULL). */
static void
conn_fail (GtQuicConn *c, int liberr, GError *error)
{
  g_autoptr (GtQuicConn) hold = gt_quic_conn_ref (c);
  GHashTableIter iter;
  gpointer value;

  if (c->closed)
    {
      g_clear_error (&error);
      return;
    }
  if (error == NULL)
    error = conn_error_from (c, liberr);
  if (liberr != NGTCP2_ERR_DRAINING && liberr != NGTCP2_ERR_IDLE_CLOSE
      && liberr != NGTCP2_ERR_HANDSHAKE_TIMEOUT && liberr != NGTCP2_ERR_CLOSING
      && liberr != NGTCP2_ERR_DROP_CONN && c->conn != NULL && c->stalled == NULL)
    {
      ngtcp2_connection_close_error ccerr;
      ngtcp2_path_storage ps;
      ngtcp2_pkt_info pi;
      guint8 buf[MAX_UDP_PAYLOAD];
      ngtcp2_ssize n;

      ngtcp2_path_storage_zero (&ps);
      if (liberr == 0)
        ngtcp2_connection_close_error_set_application_error (&ccerr, APP_NO_ERROR, NULL, 0);
      else if (liberr == NGTCP2_ERR_CRYPTO)
        ngtcp2_connection_close_error_set_transport_error_tls_alert (
          &ccerr, ngtcp2_conn_get_tls_alert (c->conn), NULL, 0);
      else
        ngtcp2_connection_close_error_set_transport_error_liberr (&ccerr, liberr, NULL, 0);
      n = ngtcp2_conn_write_connection_close (c->conn, &ps.path, &pi, buf, sizeof buf, &ccerr,
                                              now_ns ());
      if (n > 0)
        conn_send_packet (c, buf, n, 0, ps.path.remote.addr, ps.path.remote.addrlen);
    }
  c->closed = TRUE;
  c->error = g_error_copy (error);
  conn_release_sources (c);
  g_clear_pointer (&c->closing, qstream_unref);
  g_hash_table_iter_init (&iter, c->streams);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      QStream *s = value;

      s->closed = TRUE;
      qstream_fail (s, g_error_copy (error));
    }
  g_queue_clear_full (&c->tx_queue, (GDestroyNotify) qstream_unref);
  for (GList *l = c->incoming.head; l != NULL; l = l->next)
    ((QStream *) l->data)->closed = TRUE;
  /* Streams hold the connection; the connection lets go of them (the GIOStreams keep theirs). */
  {
    g_autoptr (GHashTable) streams = g_steal_pointer (&c->streams);

    c->streams = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free,
                                        (GDestroyNotify) qstream_unref);
    g_hash_table_iter_init (&iter, streams);
    while (g_hash_table_iter_next (&iter, NULL, &value))
      ((QStream *) value)->in_tx_queue = FALSE;
  }
  conn_finish_connect (c, g_error_copy (error));
  if (c->server != NULL)
    server_forget (c->server, c);
  g_error_free (error);
}

void
gt_quic_conn_close (GtQuicConn *c)
{
  g_return_if_fail (c != NULL);
  conn_fail (c, 0, g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CLOSED, "QUIC connection closed"));
}

static void
conn_after_io (GtQuicConn *c)
{
  if (c->closed)
    return;
  if (c->closing != NULL
      && ((c->closing->tx_base == c->closing->tx_end && c->closing->fin_sent)
          || c->closing->error != NULL || g_get_monotonic_time () >= c->close_deadline_us))
    {
      gt_quic_conn_close (c);
      return;
    }
  if (c->connect_task != NULL && g_cancellable_is_cancelled (g_task_get_cancellable (c->connect_task)))
    {
      conn_fail (c, 0, g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CANCELLED, "cancelled"));
      return;
    }
  if (!c->is_server && c->handshake_done && c->connect_task != NULL)
    conn_finish_connect (c, NULL);
  while (!g_queue_is_empty (&c->incoming))
    {
      QStream *s = g_queue_peek_head (&c->incoming);
      g_autoptr (GIOStream) io = NULL;

      if (c->is_server && !c->announced)
        {
          g_autoptr (GSocketAddress) peer = NULL;

          g_queue_pop_head (&c->incoming);
          if (c->server != NULL && c->server->func == NULL)
            {
              /* A new tunnel after the listener stopped accepting: not taken. */
              qstream_unref (s);
              conn_fail (c, 0, g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CLOSED,
                                                    "QUIC listener closed"));
              return;
            }
          if (c->server == NULL || s->closed)
            {
              qstream_unref (s);
              continue;
            }
          c->announced = TRUE;
          s->owns_conn = TRUE;
          io = qstream_wrap (s);
          qstream_unref (s);
          peer = g_socket_address_new_from_native (&c->remote, c->remote_len);
          c->server->func (io, G_IS_INET_SOCKET_ADDRESS (peer) ? G_INET_SOCKET_ADDRESS (peer)
                                                                : NULL,
                           c->server->user_data);
          if (c->closed)
            return;
          continue;
        }
      if (c->accept_func == NULL && !c->is_server)
        break; /* a client's streams wait for its mux (bounded by CLIENT_PEER_STREAMS) */
      g_queue_pop_head (&c->incoming);
      if (s->closed || c->accept_func == NULL)
        {
          /* Nobody takes it (a server takes only its tunnel stream from a client). */
          if (!s->closed)
            ngtcp2_conn_shutdown_stream (c->conn, s->id, APP_STREAM_RESET);
          qstream_unref (s);
          continue;
        }
      io = qstream_wrap (s);
      qstream_unref (s);
      c->accept_func (io, c->accept_data);
      if (c->closed)
        return;
    }
  conn_flush (c);
}

/* Feeds one datagram from `from` to the connection. */
static void
conn_read_packet (GtQuicConn *c, const guint8 *data, gsize len, const struct sockaddr *from,
                  socklen_t from_len, ngtcp2_tstamp ts)
{
  ngtcp2_path path;
  ngtcp2_pkt_info pi = { 0 };
  int rv;

  if (c->closed)
    return;
  path.local.addr = (struct sockaddr *) &c->local;
  path.local.addrlen = c->local_len;
  path.remote.addr = (struct sockaddr *) from;
  path.remote.addrlen = from_len;
  path.user_data = NULL;
  rv = ngtcp2_conn_read_pkt (c->conn, &path, &pi, data, len, ts);
  if (rv == 0)
    {
      /* The peer's current address: a server follows a client that migrated. */
      const ngtcp2_path *cur = ngtcp2_conn_get_path (c->conn);

      if (cur->remote.addrlen <= sizeof c->remote)
        {
          memcpy (&c->remote, cur->remote.addr, cur->remote.addrlen);
          c->remote_len = cur->remote.addrlen;
        }
      return;
    }
  if (rv == NGTCP2_ERR_DISCARD_PKT)
    return;
  conn_fail (c, rv, NULL);
}

static gboolean
timer_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  return callback (user_data);
}

static GSourceFuncs timer_funcs = { NULL, NULL, timer_dispatch, NULL, NULL, NULL };

static gboolean
conn_timer_cb (gpointer user_data)
{
  GtQuicConn *c = user_data;
  g_autoptr (GtQuicConn) hold = gt_quic_conn_ref (c);
  ngtcp2_tstamp ts = now_ns ();
  int rv;

  g_source_set_ready_time (c->timer, -1);
  if (ngtcp2_conn_get_expiry (c->conn) <= ts)
    {
      rv = ngtcp2_conn_handle_expiry (c->conn, ts);
      if (rv != 0)
        {
          conn_fail (c, rv, NULL);
          return G_SOURCE_CONTINUE;
        }
    }
  conn_after_io (c);
  return G_SOURCE_CONTINUE;
}

static GtQuicConn *
conn_new (gboolean is_server, int fd, guint idle_timeout_ms)
{
  GtQuicConn *c = g_new0 (GtQuicConn, 1);

  g_ref_count_init (&c->ref);
  c->is_server = is_server;
  c->fd = fd;
  c->context = g_main_context_ref_thread_default ();
  c->streams = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free,
                                      (GDestroyNotify) qstream_unref);
  c->cids = g_ptr_array_new_with_free_func (g_free); /* CidKey, keys of server->by_cid */
  c->conn_ref.get_conn = get_conn_cb;
  c->conn_ref.user_data = c;
  c->timer = g_source_new (&timer_funcs, sizeof (GSource));
  g_source_set_static_name (c->timer, "gt-quic-timer");
  g_source_set_callback (c->timer, conn_timer_cb, c, NULL);
  g_source_attach (c->timer, c->context);
  return c;
}

static gboolean
tls_session_setup (GtQuicConn *c, gnutls_certificate_credentials_t cred, GError **error)
{
  gnutls_datum_t alpn = { (unsigned char *) GT_QUIC_ALPN, sizeof GT_QUIC_ALPN - 1 };
  int rv;

  rv = gnutls_init (&c->session, (c->is_server ? GNUTLS_SERVER : GNUTLS_CLIENT)
                                   | GNUTLS_ENABLE_EARLY_DATA | GNUTLS_NO_END_OF_EARLY_DATA);
  if (rv == 0)
    rv = c->is_server ? ngtcp2_crypto_gnutls_configure_server_session (c->session)
                      : ngtcp2_crypto_gnutls_configure_client_session (c->session);
  if (rv == 0)
    rv = gnutls_priority_set_direct (c->session, priority, NULL);
  if (rv == 0)
    rv = gnutls_credentials_set (c->session, GNUTLS_CRD_CERTIFICATE, cred);
  if (rv == 0)
    rv = gnutls_alpn_set_protocols (c->session, &alpn, 1, GNUTLS_ALPN_MANDATORY);
  if (rv != 0)
    {
      g_set_error (error, G_TLS_ERROR, G_TLS_ERROR_MISC, "QUIC TLS setup: %s",
                   gnutls_strerror (rv));
      return FALSE;
    }
  gnutls_session_set_ptr (c->session, &c->conn_ref);
  return TRUE;
}

/* ------------------------------------------------------------------------------------------ */
/* Client */

/* The server's certificate, checked as tls:// checks it (same options, same messages). */
static int
client_verify_cb (gnutls_session_t session)
{
  GtQuicConn *c = ((ngtcp2_crypto_conn_ref *) gnutls_session_get_ptr (session))->user_data;
  const gnutls_datum_t *certs;
  unsigned int n = 0;
  g_autoptr (GTlsCertificate) peer = NULL;
  g_autofree char *fp = NULL;
  g_autoptr (GError) error = NULL;
  GTlsCertificate *issuer = NULL;

  if (c->verify.insecure && c->verify.pin == NULL)
    return 0;
  certs = gnutls_certificate_get_peers (session, &n);
  if (certs == NULL || n == 0)
    {
      c->verify_error = g_strdup_printf ("QUIC server %s sent no certificate", c->host);
      return -1;
    }
  /* The chain, leaf first, as a GTlsCertificate for GIO's verification. */
  for (int i = (int) n - 1; i >= 0; i--)
    {
      g_autoptr (GByteArray) der = g_byte_array_new ();
      g_autofree char *b64 = NULL;
      g_autofree char *pem = NULL;
      GTlsCertificate *cert;

      g_byte_array_append (der, certs[i].data, certs[i].size);
      b64 = g_base64_encode (der->data, der->len);
      pem = g_strdup_printf ("-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n", b64);
      cert = g_initable_new (g_tls_backend_get_certificate_type (g_tls_backend_get_default ()),
                             NULL, &error, "certificate-pem", pem, "issuer", issuer, NULL);
      g_clear_object (&issuer);
      if (cert == NULL)
        {
          c->verify_error = g_strdup_printf ("QUIC server %s sent a bad certificate: %s",
                                             c->host, error->message);
          return -1;
        }
      issuer = cert;
    }
  peer = issuer;
  fp = gt_certificate_fingerprint (peer);
  if (c->verify.pin != NULL)
    {
      if (gt_certificate_pin_matches (peer, c->verify.pin))
        return 0;
      c->verify_error = g_strdup_printf (
        "TLS certificate of %s (%s) does not match the pinned fingerprint", c->host,
        fp ? fp : "unknown");
      return -1;
    }
  {
    GTlsDatabase *db = c->verify.database != NULL
                         ? c->verify.database
                         : g_tls_backend_get_default_database (g_tls_backend_get_default ());
    g_autoptr (GSocketConnectable) identity = g_network_address_new (c->host, 0);
    GTlsCertificateFlags flags;
    g_autofree char *why = NULL;
    g_autofree char *hint = NULL;

    flags = g_tls_database_verify_chain (db, peer, G_TLS_DATABASE_PURPOSE_AUTHENTICATE_SERVER,
                                         identity, NULL, G_TLS_DATABASE_VERIFY_NONE, NULL,
                                         &error);
    if (db != c->verify.database)
      g_object_unref (db);
    if (error == NULL && flags == 0)
      return 0;
    why = error != NULL ? g_strdup (error->message) : _gt_tls_describe_cert_errors (flags);
    if (c->verify.ca_file != NULL)
      hint = g_strdup_printf ("; the CA in %s did not sign it or it names another host",
                              c->verify.ca_file);
    else
      hint = g_strdup ("; the system CAs do not trust it (set remoteCert to a CA file or a "
                       "sha256: pin)");
    c->verify_error = g_strdup_printf ("TLS certificate of %s not trusted: %s (%s)%s", c->host,
                                       why, fp ? fp : "unknown", hint);
    return -1;
  }
}

static gboolean
client_read_cb (int fd, GIOCondition revents, gpointer user_data)
{
  GtQuicConn *c = user_data;
  g_autoptr (GtQuicConn) hold = gt_quic_conn_ref (c);
  guint8 buf[RX_BUF_SIZE];
  ngtcp2_tstamp ts = now_ns ();

  for (int k = 0; k < BATCH && !c->closed; k++)
    {
      struct sockaddr_storage from;
      socklen_t from_len = sizeof from;
      gsize seg;
      ssize_t n = udp_recv (c->fd, buf, sizeof buf, &from, &from_len, &seg);

      if (n < 0)
        break; /* EAGAIN, or an ICMP error report: QUIC's timers decide */
      /* An empty datagram is no QUIC packet (ngtcp2 asserts on one): the loop skips it. */
      for (gsize off = 0; off < (gsize) n && !c->closed; off += seg)
        conn_read_packet (c, buf + off, MIN (seg, n - off), (struct sockaddr *) &from, from_len,
                          ts);
    }
  conn_after_io (c);
  return G_SOURCE_CONTINUE;
}

static int
udp_socket_for (int family, struct sockaddr_storage *local, socklen_t *local_len, GError **error)
{
  int fd = socket (family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int size = 4 * 1024 * 1024;

  if (fd < 0)
    {
      int err = errno;

      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err), "UDP socket: %s",
                   g_strerror (err));
      return -1;
    }
  /* Bursts of a fast sender must not overflow the default (~208 KiB) buffers. */
  setsockopt (fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  setsockopt (fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  udp_enable_gro (fd);
  {
    struct sockaddr_storage any = { 0 };
    socklen_t any_len = family == AF_INET6 ? sizeof (struct sockaddr_in6)
                                           : sizeof (struct sockaddr_in);

    any.ss_family = family;
    if (bind (fd, (struct sockaddr *) &any, any_len) != 0
        || getsockname (fd, (struct sockaddr *) local, local_len) != 0)
      {
        int err = errno;

        close (fd);
        g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err), "UDP bind: %s",
                     g_strerror (err));
        return -1;
      }
  }
  return fd;
}

static gboolean
client_socket_cb (GSocket *socket, GIOCondition condition, gpointer user_data)
{
  return client_read_cb (-1, condition, user_data);
}

/* Wakes the connection up: conn_after_io fails it (always on the connection's own context). */
static void
connect_cancelled_cb (GCancellable *cancellable, gpointer user_data)
{
  GtQuicConn *c = user_data;

  if (c->timer != NULL)
    g_source_set_ready_time (c->timer, 0);
}

void
gt_quic_connect_async (const char *host, GSocketAddress *address, const GtTlsVerify *verify,
                       guint idle_timeout_ms, guint handshake_timeout_ms,
                       GCancellable *cancellable,
                       GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GTask) task = g_task_new (NULL, cancellable, callback, user_data);
  g_autoptr (GtQuicConn) c = NULL;
  GError *error = NULL;
  ngtcp2_callbacks cb;
  ngtcp2_settings st;
  ngtcp2_transport_params tp;
  ngtcp2_cid dcid, scid;
  ngtcp2_path path;
  int fd, rv;
  struct sockaddr_storage local;
  socklen_t local_len = sizeof local;

  g_task_set_source_tag (task, gt_quic_connect_async);
  if (!gt_tls_backend_check (&error))
    {
      g_task_return_error (task, error);
      return;
    }
  if (verify->pin != NULL && !gt_certificate_pin_is_valid (verify->pin))
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "invalid certificate pin (expected sha256:<64 hex digits>)");
      return;
    }
  fd = udp_socket_for (g_socket_address_get_family (address), &local, &local_len, &error);
  if (fd < 0)
    {
      g_task_return_error (task, error);
      return;
    }
  c = conn_new (FALSE, fd, idle_timeout_ms);
  memcpy (&c->local, &local, local_len);
  c->local_len = local_len;
  c->remote_len = sizeof c->remote;
  if (!g_socket_address_to_native (address, &c->remote, sizeof c->remote, &error))
    {
      g_task_return_error (task, error);
      c->closed = TRUE;
      return;
    }
  c->remote_len = g_socket_address_get_native_size (address);
  c->host = g_strdup (host);
  c->verify.database = verify->database ? g_object_ref (verify->database) : NULL;
  c->verify.ca_file = g_strdup (verify->ca_file);
  c->verify.pin = g_strdup (verify->pin);
  c->verify.insecure = verify->insecure;

  if (gnutls_certificate_allocate_credentials (&c->cred) != 0)
    {
      g_task_return_new_error (task, G_TLS_ERROR, G_TLS_ERROR_MISC, "QUIC: no TLS credentials");
      c->closed = TRUE;
      return;
    }
  gnutls_certificate_set_verify_function (c->cred, client_verify_cb);
  if (!tls_session_setup (c, c->cred, &error))
    {
      g_task_return_error (task, error);
      c->closed = TRUE;
      return;
    }
  if (g_hostname_is_ip_address (host) == FALSE)
    gnutls_server_name_set (c->session, GNUTLS_NAME_DNS, host, strlen (host));

  dcid.datalen = SCID_LEN;
  gnutls_rnd (GNUTLS_RND_RANDOM, dcid.data, dcid.datalen);
  scid.datalen = SCID_LEN;
  gnutls_rnd (GNUTLS_RND_RANDOM, scid.data, scid.datalen);
  path.local.addr = (struct sockaddr *) &c->local;
  path.local.addrlen = c->local_len;
  path.remote.addr = (struct sockaddr *) &c->remote;
  path.remote.addrlen = c->remote_len;
  path.user_data = NULL;
  fill_callbacks (&cb, FALSE);
  fill_settings (&st, &tp, idle_timeout_ms, FALSE);
  if (handshake_timeout_ms != 0)
    st.handshake_timeout = (ngtcp2_duration) handshake_timeout_ms * NGTCP2_MILLISECONDS;
  c->handshake_timeout_ms = handshake_timeout_ms != 0 ? handshake_timeout_ms : 10000;
  rv = ngtcp2_conn_client_new (&c->conn, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cb, &st, &tp,
                               NULL, c);
  if (rv != 0)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_FAILED, "QUIC: %s",
                               ngtcp2_strerror (rv));
      c->closed = TRUE;
      return;
    }
  ngtcp2_conn_set_tls_native_handle (c->conn, c->session);
  if (idle_timeout_ms > 0)
    ngtcp2_conn_set_keep_alive_timeout (c->conn,
                                        (ngtcp2_duration) idle_timeout_ms / 2
                                          * NGTCP2_MILLISECONDS);
  {
    g_autoptr (GSocket) sock = g_socket_new_from_fd (dup (c->fd), NULL);

    c->in_source = g_socket_create_source (sock, G_IO_IN, NULL);
    g_source_set_callback (c->in_source, (GSourceFunc) (void (*) (void)) client_socket_cb, c,
                           NULL);
    g_source_attach (c->in_source, c->context);
  }
  c->connect_task = g_steal_pointer (&task);
  gt_quic_conn_ref (c); /* dropped by conn_finish_connect */
  if (cancellable != NULL)
    c->cancel_id = g_cancellable_connect (cancellable, G_CALLBACK (connect_cancelled_cb), c, NULL);
  conn_flush (c);
}

GtQuicConn *
gt_quic_connect_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gt_quic_connect_async, NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}

GIOStream *
gt_quic_conn_open_stream (GtQuicConn *c, gboolean owns_conn, GError **error)
{
  int64_t id;
  int rv;
  QStream *s;
  GIOStream *io;

  if (c->closed)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_CLOSED, "QUIC connection closed");
      return NULL;
    }
  rv = ngtcp2_conn_open_bidi_stream (c->conn, &id, NULL);
  if (rv != 0)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_TOO_MANY_OPEN_FILES,
                   "cannot open a QUIC stream: %s",
                   rv == NGTCP2_ERR_STREAM_ID_BLOCKED ? "the peer allows no more at once"
                                                      : ngtcp2_strerror (rv));
      return NULL;
    }
  s = qstream_new (c, id);
  s->owns_conn = owns_conn;
  io = qstream_wrap (s);
  qstream_unref (s);
  return io;
}

/* ------------------------------------------------------------------------------------------ */
/* Server */

static void
server_forget (GtQuicServer *server, GtQuicConn *c)
{
  for (guint i = 0; i < c->cids->len; i++)
    g_hash_table_remove (server->by_cid, c->cids->pdata[i]);
  g_ptr_array_set_size (c->cids, 0);
  c->server = NULL;
  g_hash_table_remove (server->conns, c); /* may drop the last ref: callers hold one */
}

static GtQuicConn *
server_accept (GtQuicServer *server, const guint8 *data, gsize len, const struct sockaddr *from,
               socklen_t from_len)
{
  ngtcp2_pkt_hd hd;
  ngtcp2_callbacks cb;
  ngtcp2_settings st;
  ngtcp2_transport_params tp;
  ngtcp2_cid scid;
  ngtcp2_path path;
  g_autoptr (GError) error = NULL;
  GtQuicConn *c;
  int rv;

  if (ngtcp2_accept (&hd, data, len) != 0)
    return NULL;
  if (g_hash_table_size (server->conns) >= MAX_SERVER_CONNS)
    {
      g_debug ("QUIC: %u connections, new one refused", MAX_SERVER_CONNS);
      return NULL;
    }
  c = conn_new (TRUE, server->fd, server->idle_timeout_ms);
  c->server = server;
  memcpy (&c->local, &server->local, server->local_len);
  c->local_len = server->local_len;
  memcpy (&c->remote, from, from_len);
  c->remote_len = from_len;
  if (!tls_session_setup (c, server->cred, &error))
    {
      g_warning ("%s", error->message);
      c->closed = TRUE;
      gt_quic_conn_unref (c);
      return NULL;
    }
  scid.datalen = SCID_LEN;
  gnutls_rnd (GNUTLS_RND_RANDOM, scid.data, scid.datalen);
  path.local.addr = (struct sockaddr *) &c->local;
  path.local.addrlen = c->local_len;
  path.remote.addr = (struct sockaddr *) &c->remote;
  path.remote.addrlen = c->remote_len;
  path.user_data = NULL;
  fill_callbacks (&cb, TRUE);
  fill_settings (&st, &tp, server->idle_timeout_ms, TRUE);
  tp.original_dcid = hd.dcid;
  tp.stateless_reset_token_present = 1;
  if (ngtcp2_crypto_generate_stateless_reset_token (tp.stateless_reset_token, server->reset_secret,
                                                    sizeof server->reset_secret, &scid)
      != 0)
    {
      c->closed = TRUE;
      gt_quic_conn_unref (c);
      return NULL;
    }
  rv = ngtcp2_conn_server_new (&c->conn, &hd.scid, &scid, &path, hd.version, &cb, &st, &tp, NULL,
                               c);
  if (rv != 0)
    {
      g_debug ("QUIC: %s", ngtcp2_strerror (rv));
      c->closed = TRUE;
      gt_quic_conn_unref (c);
      return NULL;
    }
  ngtcp2_conn_set_tls_native_handle (c->conn, c->session);
  g_hash_table_add (server->conns, c);
  conn_add_cid (c, scid.data, scid.datalen);
  conn_add_cid (c, hd.dcid.data, hd.dcid.datalen); /* the client's retransmitted Initials */
  return c;
}

static gboolean
server_read_cb (GSocket *socket, GIOCondition condition, gpointer user_data)
{
  GtQuicServer *server = user_data;
  g_autoptr (GPtrArray) touched = g_ptr_array_new_with_free_func (
    (GDestroyNotify) gt_quic_conn_unref);
  ngtcp2_tstamp ts = now_ns ();

  for (int k = 0; k < BATCH; k++)
    {
      struct sockaddr_storage from;
      socklen_t from_len = sizeof from;
      gsize seg;
      ssize_t n = udp_recv (server->fd, server->buf, RX_BUF_SIZE, &from, &from_len, &seg);

      if (n < 0)
        break;
      /* Coalesced packets come from one sender and one flow, but each is looked up on its own:
       * nothing says they belong to one connection. ngtcp2 asserts on an empty buffer (anyone
       * could end the server with an empty datagram): the loop skips one. */
      for (gsize off = 0; off < (gsize) n; off += seg)
        {
          const guint8 *pkt = server->buf + off;
          gsize len = MIN (seg, n - off);
          ngtcp2_version_cid vc;
          CidKey key;
          GtQuicConn *c;

          if (ngtcp2_pkt_decode_version_cid (&vc, pkt, len, SCID_LEN) != 0)
            continue; /* not QUIC, or a version we do not speak */
          cid_key_set (&key, vc.dcid, vc.dcidlen);
          c = g_hash_table_lookup (server->by_cid, &key);
          if (c == NULL && server->func == NULL)
            continue; /* no new connections any more */
          if (c == NULL)
            {
              c = server_accept (server, pkt, len, (struct sockaddr *) &from, from_len);
              if (c == NULL)
                continue;
            }
          if (!g_ptr_array_find (touched, c, NULL))
            g_ptr_array_add (touched, gt_quic_conn_ref (c));
          conn_read_packet (c, pkt, len, (struct sockaddr *) &from, from_len, ts);
        }
    }
  for (guint i = 0; i < touched->len; i++)
    conn_after_io (touched->pdata[i]);
  return G_SOURCE_CONTINUE;
}

GtQuicServer *
gt_quic_server_new (int fd, GTlsCertificate *certificate, guint idle_timeout_ms,
                    GtQuicTunnelFunc func, gpointer user_data, GError **error)
{
  GtQuicServer *server;
  g_autofree char *cert_pem = NULL;
  g_autofree char *key_pem = NULL;
  gnutls_datum_t cd, kd;
  int rv;

  g_object_get (certificate, "certificate-pem", &cert_pem, "private-key-pem", &key_pem, NULL);
  if (cert_pem == NULL || key_pem == NULL)
    {
      g_set_error_literal (error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE,
                           "QUIC needs the certificate's private key in PEM");
      close (fd);
      return NULL;
    }
  server = g_new0 (GtQuicServer, 1);
  server->fd = fd;
  server->local_len = sizeof server->local;
  if (getsockname (fd, (struct sockaddr *) &server->local, &server->local_len) != 0)
    server->local_len = 0;
  server->idle_timeout_ms = idle_timeout_ms;
  server->func = func;
  server->user_data = user_data;
  server->buf = g_malloc (RX_BUF_SIZE);
  server->context = g_main_context_ref_thread_default ();
  server->by_cid = g_hash_table_new_full (cid_hash, cid_equal, NULL, NULL);
  server->conns = g_hash_table_new_full (NULL, NULL, (GDestroyNotify) gt_quic_conn_unref, NULL);
  gnutls_rnd (GNUTLS_RND_RANDOM, server->reset_secret, sizeof server->reset_secret);
  cd.data = (unsigned char *) cert_pem;
  cd.size = strlen (cert_pem);
  kd.data = (unsigned char *) key_pem;
  kd.size = strlen (key_pem);
  rv = gnutls_certificate_allocate_credentials (&server->cred);
  if (rv == 0)
    rv = gnutls_certificate_set_x509_key_mem2 (server->cred, &cd, &kd, GNUTLS_X509_FMT_PEM, NULL,
                                               0);
  if (rv < 0)
    {
      g_set_error (error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE, "QUIC certificate: %s",
                   gnutls_strerror (rv));
      gt_quic_server_free (server);
      return NULL;
    }
  {
    int size = 4 * 1024 * 1024;
    g_autoptr (GSocket) sock = NULL;

    setsockopt (fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt (fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    udp_enable_gro (fd);
    sock = g_socket_new_from_fd (dup (fd), error);
    if (sock == NULL)
      {
        gt_quic_server_free (server);
        return NULL;
      }
    server->source = g_socket_create_source (sock, G_IO_IN, NULL);
    g_source_set_callback (server->source, (GSourceFunc) (void (*) (void)) server_read_cb, server,
                           NULL);
    g_source_attach (server->source, server->context);
  }
  return server;
}

void
gt_quic_server_stop_accepting (GtQuicServer *server)
{
  server->func = NULL;
  server->user_data = NULL;
}

void
gt_quic_server_free (GtQuicServer *server)
{
  GHashTableIter iter;
  gpointer key;
  g_autoptr (GPtrArray) conns = g_ptr_array_new_with_free_func (
    (GDestroyNotify) gt_quic_conn_unref);

  if (server == NULL)
    return;
  if (server->source != NULL)
    {
      g_source_destroy (server->source);
      g_source_unref (server->source);
    }
  if (server->conns != NULL)
    {
      g_hash_table_iter_init (&iter, server->conns);
      while (g_hash_table_iter_next (&iter, &key, NULL))
        g_ptr_array_add (conns, gt_quic_conn_ref (key));
      for (guint i = 0; i < conns->len; i++)
        gt_quic_conn_close (conns->pdata[i]);
      g_hash_table_unref (server->conns);
    }
  g_clear_pointer (&server->by_cid, g_hash_table_unref);
  if (server->cred != NULL)
    gnutls_certificate_free_credentials (server->cred);
  if (server->fd >= 0)
    close (server->fd);
  g_clear_pointer (&server->context, g_main_context_unref);
  g_free (server->buf);
  g_free (server);
}

/* ------------------------------------------------------------------------------------------ */
/* A stream as a GIOStream */

#define GT_TYPE_QUIC_INPUT (gt_quic_input_get_type ())
G_DECLARE_FINAL_TYPE (GtQuicInput, gt_quic_input, GT, QUIC_INPUT, GInputStream)
#define GT_TYPE_QUIC_OUTPUT (gt_quic_output_get_type ())
G_DECLARE_FINAL_TYPE (GtQuicOutput, gt_quic_output, GT, QUIC_OUTPUT, GOutputStream)
#define GT_TYPE_QUIC_STREAM (gt_quic_stream_get_type ())
G_DECLARE_FINAL_TYPE (GtQuicStream, gt_quic_stream, GT, QUIC_STREAM, GIOStream)

struct _GtQuicInput
{
  GInputStream parent_instance;
  QStream *s;
};

struct _GtQuicOutput
{
  GOutputStream parent_instance;
  QStream *s;
};

struct _GtQuicStream
{
  GIOStream parent_instance;
  QStream *s;
  GInputStream *in;
  GOutputStream *out;
};

static void input_pollable_init (GPollableInputStreamInterface *iface);
static void output_pollable_init (GPollableOutputStreamInterface *iface);

G_DEFINE_TYPE_WITH_CODE (GtQuicInput, gt_quic_input, G_TYPE_INPUT_STREAM,
                         G_IMPLEMENT_INTERFACE (G_TYPE_POLLABLE_INPUT_STREAM,
                                                input_pollable_init))
G_DEFINE_TYPE_WITH_CODE (GtQuicOutput, gt_quic_output, G_TYPE_OUTPUT_STREAM,
                         G_IMPLEMENT_INTERFACE (G_TYPE_POLLABLE_OUTPUT_STREAM,
                                                output_pollable_init))
static void native_streams_init (GtNativeStreamsInterface *iface);

G_DEFINE_TYPE_WITH_CODE (GtQuicStream, gt_quic_stream, G_TYPE_IO_STREAM,
                         G_IMPLEMENT_INTERFACE (GT_TYPE_NATIVE_STREAMS, native_streams_init))

static void
return_true_async (gpointer source, GCancellable *cancellable, GAsyncReadyCallback callback,
                   gpointer user_data, gpointer tag)
{
  g_autoptr (GTask) task = g_task_new (source, cancellable, callback, user_data);

  g_task_set_source_tag (task, tag);
  g_task_return_boolean (task, TRUE);
}

static gboolean
qstream_in_ready (QStream *s)
{
  return s->rx_len > 0 || s->rx_fin || s->error != NULL;
}

/* How many more bytes the application may write to s now. */
static gsize
qstream_tx_room (QStream *s)
{
  guint64 unsent = s->tx_end - s->tx_sent, held = s->tx_end - s->tx_base;
  guint64 conn_held = s->conn != NULL ? s->conn->tx_buffered : 0;

  if (unsent >= TX_UNSENT_HIGH || held >= TX_STREAM_MAX || conn_held >= TX_CONN_MAX)
    return 0;
  return MIN (TX_UNSENT_HIGH - unsent, MIN (TX_STREAM_MAX - held, TX_CONN_MAX - conn_held));
}

static gboolean
qstream_out_ready (QStream *s)
{
  return s->error != NULL || s->tx_fin || qstream_tx_room (s) > 0;
}

static gssize
qstream_read (QStream *s, guint8 *buffer, gsize count, GError **error)
{
  gsize done = 0;

  while (done < count && !g_queue_is_empty (&s->rx))
    {
      GBytes *b = g_queue_peek_head (&s->rx);
      gsize len;
      const guint8 *data = g_bytes_get_data (b, &len);
      gsize take = MIN (count - done, len - s->rx_head_off);

      memcpy (buffer + done, data + s->rx_head_off, take);
      done += take;
      s->rx_head_off += take;
      if (s->rx_head_off == len)
        {
          g_bytes_unref (g_queue_pop_head (&s->rx));
          s->rx_head_off = 0;
        }
    }
  s->rx_len -= done;
  if (done > 0)
    {
      GtQuicConn *c = s->conn;

      /* The stream's credit goes back as the application reads: QUIC's stream windows are the
       * only flow control of gt's streams on QUIC. */
      if (c != NULL && !c->closed && !s->closed)
        {
          ngtcp2_conn_extend_max_stream_offset (c->conn, s->id, done);
          conn_schedule (c);
        }
      return done;
    }
  if (s->rx_fin)
    return 0;
  if (s->error != NULL)
    {
      g_propagate_error (error, g_error_copy (s->error));
      return -1;
    }
  g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "no QUIC stream data yet");
  return -1;
}

static GPollableReturn
qstream_writev (QStream *s, const GOutputVector *vectors, gsize n_vectors, gsize *written,
                GError **error)
{
  gsize total = 0, room;
  GByteArray *chunk;

  *written = 0;
  if (s->error != NULL)
    {
      g_propagate_error (error, g_error_copy (s->error));
      return G_POLLABLE_RETURN_FAILED;
    }
  if (s->tx_fin || s->conn == NULL)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_CLOSED, "QUIC stream closed");
      return G_POLLABLE_RETURN_FAILED;
    }
  room = qstream_tx_room (s);
  if (room == 0)
    return G_POLLABLE_RETURN_WOULD_BLOCK;
  for (gsize i = 0; i < n_vectors; i++)
    total += vectors[i].size;
  total = MIN (total, room);
  if (total == 0)
    return G_POLLABLE_RETURN_OK;
  chunk = g_byte_array_sized_new (total);
  for (gsize i = 0; i < n_vectors && chunk->len < total; i++)
    g_byte_array_append (chunk, vectors[i].buffer, MIN (vectors[i].size, total - chunk->len));
  g_queue_push_tail (&s->tx, g_byte_array_free_to_bytes (chunk));
  s->tx_end += total;
  if (!s->tx_released)
    s->conn->tx_buffered += total;
  *written = total;
  qstream_queue_tx (s);
  return G_POLLABLE_RETURN_OK;
}

static void
qstream_shutdown_write (QStream *s)
{
  if (s->tx_fin)
    return;
  s->tx_fin = TRUE;
  qstream_queue_tx (s);
}

/* Unread bytes are dropped (the stream is reset or closed: its credit no longer matters). */
static void
qstream_drop_rx (QStream *s)
{
  g_queue_clear_full (&s->rx, (GDestroyNotify) g_bytes_unref);
  s->rx_len = 0;
  s->rx_head_off = 0;
}

/* The application is done with the stream. */
static void
qstream_close (QStream *s)
{
  GtQuicConn *c = s->conn;

  if (c == NULL)
    return;
  if (s->owns_conn)
    {
      /* The tunnel's last bytes (an ERROR frame, a GOAWAY) reach the peer before the end. */
      if (c->closed || c->closing != NULL)
        return;
      qstream_shutdown_write (s);
      c->closing = qstream_ref (s);
      c->close_deadline_us = g_get_monotonic_time () + CLOSE_LINGER_US;
      conn_schedule (c);
      return;
    }
  if (s->app_closed)
    return;
  s->app_closed = TRUE;
  qstream_drop_rx (s);
  if (!c->closed && !s->closed)
    {
      if (!s->rx_fin || s->error != NULL)
        ngtcp2_conn_shutdown_stream (c->conn, s->id, APP_STREAM_RESET);
      else
        qstream_shutdown_write (s);
      conn_schedule (c);
    }
}

/* Aborts the stream both ways with code (RESET_STREAM and STOP_SENDING). */
static void
qstream_reset (QStream *s, guint64 code)
{
  GtQuicConn *c = s->conn;

  if (c == NULL || s->app_closed)
    return;
  s->app_closed = TRUE;
  qstream_drop_rx (s);
  if (!c->closed && !s->closed)
    {
      ngtcp2_conn_shutdown_stream (c->conn, s->id, code);
      qstream_unqueue_tx (s);
      conn_schedule (c);
    }
  qstream_fail (s, g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CLOSED, "QUIC stream reset"));
}

static gssize
input_read_nonblocking (GPollableInputStream *stream, void *buffer, gsize count, GError **error)
{
  return qstream_read (GT_QUIC_INPUT (stream)->s, buffer, count, error);
}

static gssize
input_read (GInputStream *stream, void *buffer, gsize count, GCancellable *cancellable,
            GError **error)
{
  gssize n = qstream_read (GT_QUIC_INPUT (stream)->s, buffer, count, error);

  if (n < 0 && g_error_matches (*error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
    {
      g_clear_error (error);
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                           "blocking reads are not supported on a QUIC stream");
    }
  return n;
}

static gboolean
input_close (GInputStream *stream, GCancellable *cancellable, GError **error)
{
  return TRUE;
}

static void
input_close_async (GInputStream *stream, int io_priority, GCancellable *cancellable,
                   GAsyncReadyCallback callback, gpointer user_data)
{
  return_true_async (stream, cancellable, callback, user_data, input_close_async);
}

static gboolean
input_close_finish (GInputStream *stream, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

static gboolean
input_can_poll (GPollableInputStream *stream)
{
  return TRUE;
}

static gboolean
input_is_readable (GPollableInputStream *stream)
{
  return qstream_in_ready (GT_QUIC_INPUT (stream)->s);
}

static GSource *
input_create_source (GPollableInputStream *stream, GCancellable *cancellable)
{
  QStream *s = GT_QUIC_INPUT (stream)->s;

  return _gt_ready_source_new (G_OBJECT (stream), (gboolean (*) (gpointer)) qstream_in_ready,
                               qstream_ref (s), (GDestroyNotify) qstream_unref, NULL,
                               cancellable);
}

static void
gt_quic_input_finalize (GObject *object)
{
  g_clear_pointer (&GT_QUIC_INPUT (object)->s, qstream_unref);
  G_OBJECT_CLASS (gt_quic_input_parent_class)->finalize (object);
}

static void
gt_quic_input_class_init (GtQuicInputClass *klass)
{
  GInputStreamClass *in_class = G_INPUT_STREAM_CLASS (klass);

  G_OBJECT_CLASS (klass)->finalize = gt_quic_input_finalize;
  in_class->read_fn = input_read;
  in_class->close_fn = input_close;
  in_class->close_async = input_close_async;
  in_class->close_finish = input_close_finish;
}

static void
input_pollable_init (GPollableInputStreamInterface *iface)
{
  iface->can_poll = input_can_poll;
  iface->is_readable = input_is_readable;
  iface->create_source = input_create_source;
  iface->read_nonblocking = input_read_nonblocking;
}

static void
gt_quic_input_init (GtQuicInput *self)
{
}

static GPollableReturn
output_writev_nonblocking (GPollableOutputStream *stream, const GOutputVector *vectors,
                           gsize n_vectors, gsize *bytes_written, GError **error)
{
  return qstream_writev (GT_QUIC_OUTPUT (stream)->s, vectors, n_vectors, bytes_written, error);
}

static gssize
output_write_nonblocking (GPollableOutputStream *stream, const void *buffer, gsize count,
                          GError **error)
{
  GOutputVector v = { buffer, count };
  gsize written = 0;

  switch (output_writev_nonblocking (stream, &v, 1, &written, error))
    {
    case G_POLLABLE_RETURN_OK:
      return written;
    case G_POLLABLE_RETURN_WOULD_BLOCK:
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "QUIC stream buffer full");
      return -1;
    case G_POLLABLE_RETURN_FAILED:
    default:
      return -1;
    }
}

/* A blocking write cannot wait for the main context: it fails when the buffer is full. */
static gssize
output_write (GOutputStream *stream, const void *buffer, gsize count, GCancellable *cancellable,
              GError **error)
{
  gssize n = output_write_nonblocking (G_POLLABLE_OUTPUT_STREAM (stream), buffer, count, error);

  if (n < 0 && g_error_matches (*error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
    {
      g_clear_error (error);
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                           "blocking writes are not supported on a QUIC stream");
    }
  return n;
}

static gboolean
output_close (GOutputStream *stream, GCancellable *cancellable, GError **error)
{
  qstream_shutdown_write (GT_QUIC_OUTPUT (stream)->s);
  return TRUE;
}

static void
output_close_async (GOutputStream *stream, int io_priority, GCancellable *cancellable,
                    GAsyncReadyCallback callback, gpointer user_data)
{
  qstream_shutdown_write (GT_QUIC_OUTPUT (stream)->s);
  return_true_async (stream, cancellable, callback, user_data, output_close_async);
}

static gboolean
output_close_finish (GOutputStream *stream, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

static gboolean
output_can_poll (GPollableOutputStream *stream)
{
  return TRUE;
}

static gboolean
output_is_writable (GPollableOutputStream *stream)
{
  return qstream_out_ready (GT_QUIC_OUTPUT (stream)->s);
}

static GSource *
output_create_source (GPollableOutputStream *stream, GCancellable *cancellable)
{
  QStream *s = GT_QUIC_OUTPUT (stream)->s;

  return _gt_ready_source_new (G_OBJECT (stream), (gboolean (*) (gpointer)) qstream_out_ready,
                               qstream_ref (s), (GDestroyNotify) qstream_unref, NULL,
                               cancellable);
}

static void
gt_quic_output_finalize (GObject *object)
{
  g_clear_pointer (&GT_QUIC_OUTPUT (object)->s, qstream_unref);
  G_OBJECT_CLASS (gt_quic_output_parent_class)->finalize (object);
}

static void
gt_quic_output_class_init (GtQuicOutputClass *klass)
{
  GOutputStreamClass *out_class = G_OUTPUT_STREAM_CLASS (klass);

  G_OBJECT_CLASS (klass)->finalize = gt_quic_output_finalize;
  out_class->write_fn = output_write;
  out_class->close_fn = output_close;
  out_class->close_async = output_close_async;
  out_class->close_finish = output_close_finish;
}

static void
output_pollable_init (GPollableOutputStreamInterface *iface)
{
  iface->can_poll = output_can_poll;
  iface->is_writable = output_is_writable;
  iface->create_source = output_create_source;
  iface->write_nonblocking = output_write_nonblocking;
  iface->writev_nonblocking = output_writev_nonblocking;
}

static void
gt_quic_output_init (GtQuicOutput *self)
{
}

static GInputStream *
stream_get_input_stream (GIOStream *stream)
{
  return GT_QUIC_STREAM (stream)->in;
}

static GOutputStream *
stream_get_output_stream (GIOStream *stream)
{
  return GT_QUIC_STREAM (stream)->out;
}

static gboolean
stream_close_fn (GIOStream *stream, GCancellable *cancellable, GError **error)
{
  qstream_close (GT_QUIC_STREAM (stream)->s);
  return TRUE;
}

static void
stream_close_async (GIOStream *stream, int io_priority, GCancellable *cancellable,
                    GAsyncReadyCallback callback, gpointer user_data)
{
  qstream_close (GT_QUIC_STREAM (stream)->s);
  return_true_async (stream, cancellable, callback, user_data, stream_close_async);
}

static gboolean
stream_close_finish (GIOStream *stream, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

static void
gt_quic_stream_finalize (GObject *object)
{
  GtQuicStream *self = GT_QUIC_STREAM (object);

  g_clear_object (&self->in);
  g_clear_object (&self->out);
  g_clear_pointer (&self->s, qstream_unref);
  G_OBJECT_CLASS (gt_quic_stream_parent_class)->finalize (object);
}

static void
gt_quic_stream_class_init (GtQuicStreamClass *klass)
{
  GIOStreamClass *io_class = G_IO_STREAM_CLASS (klass);

  G_OBJECT_CLASS (klass)->finalize = gt_quic_stream_finalize;
  io_class->get_input_stream = stream_get_input_stream;
  io_class->get_output_stream = stream_get_output_stream;
  io_class->close_fn = stream_close_fn;
  io_class->close_async = stream_close_async;
  io_class->close_finish = stream_close_finish;
}

static void
gt_quic_stream_init (GtQuicStream *self)
{
}

/* Native streams: every stream of the connection is a gt stream beside the tunnel's. */

static GIOStream *
native_open_stream (GtNativeStreams *tunnel, GError **error)
{
  QStream *s = GT_QUIC_STREAM (tunnel)->s;

  if (s->conn == NULL)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_CLOSED, "QUIC connection closed");
      return NULL;
    }
  return gt_quic_conn_open_stream (s->conn, FALSE, error);
}

static void
native_set_accept_func (GtNativeStreams *tunnel, GtNativeStreamFunc func, gpointer user_data)
{
  GtQuicConn *c = GT_QUIC_STREAM (tunnel)->s->conn;

  if (c == NULL)
    return;
  c->accept_func = func;
  c->accept_data = user_data;
  conn_schedule (c); /* the streams that waited go out from the timer */
}

static void
native_reset (GtNativeStreams *stream, guint64 code)
{
  qstream_reset (GT_QUIC_STREAM (stream)->s, code);
}

static gboolean
native_get_reset_code (GtNativeStreams *stream, guint64 *code)
{
  QStream *s = GT_QUIC_STREAM (stream)->s;

  if (!s->peer_reset)
    return FALSE;
  *code = s->peer_code;
  return TRUE;
}

/* Datagrams: QUIC DATAGRAM frames of the tunnel's connection, when the peer takes them. */

static gsize
native_get_max_datagram (GtNativeStreams *tunnel)
{
  GtQuicConn *c = GT_QUIC_STREAM (tunnel)->s->conn;
  const ngtcp2_transport_params *tp;
  gsize path_max;

  if (c == NULL || c->closed || !c->handshake_done)
    return 0;
  tp = ngtcp2_conn_get_remote_transport_params (c->conn);
  if (tp == NULL || tp->max_datagram_frame_size <= 3)
    return 0;
  /* The frame's type and length take 3 bytes of the peer's limit (a length below 16384); the
   * packet is the path's size (1200 bytes until a larger one is known), not MAX_UDP_PAYLOAD. */
  path_max = ngtcp2_conn_get_path_max_tx_udp_payload_size (c->conn);
  if (path_max <= DATAGRAM_OVERHEAD)
    return 0;
  return (gsize) MIN (tp->max_datagram_frame_size - 3, path_max - DATAGRAM_OVERHEAD);
}

static gboolean
native_send_datagram (GtNativeStreams *tunnel, const guint8 *head, gsize head_len,
                      const guint8 *data, gsize len)
{
  GtQuicConn *c = GT_QUIC_STREAM (tunnel)->s->conn;
  guint8 *bytes;

  if (c == NULL || c->closed || !c->handshake_done
      || c->datagrams.length >= MAX_DATAGRAMS_QUEUED
      || head_len + len > native_get_max_datagram (tunnel))
    return FALSE;
  bytes = g_malloc (head_len + len);
  memcpy (bytes, head, head_len);
  if (len > 0)
    memcpy (bytes + head_len, data, len);
  g_queue_push_tail (&c->datagrams, g_bytes_new_take (bytes, head_len + len));
  conn_schedule (c);
  return TRUE;
}

static void
native_set_datagram_func (GtNativeStreams *tunnel, GtNativeDatagramFunc func, gpointer user_data)
{
  GtQuicConn *c = GT_QUIC_STREAM (tunnel)->s->conn;

  if (c == NULL)
    return;
  c->datagram_func = func;
  c->datagram_data = user_data;
}

static void
native_streams_init (GtNativeStreamsInterface *iface)
{
  iface->open_stream = native_open_stream;
  iface->set_accept_func = native_set_accept_func;
  iface->reset = native_reset;
  iface->get_reset_code = native_get_reset_code;
  iface->get_max_datagram = native_get_max_datagram;
  iface->send_datagram = native_send_datagram;
  iface->set_datagram_func = native_set_datagram_func;
}

static GIOStream *
qstream_wrap (QStream *s)
{
  GtQuicStream *self = g_object_new (GT_TYPE_QUIC_STREAM, NULL);
  GtQuicInput *in = g_object_new (GT_TYPE_QUIC_INPUT, NULL);
  GtQuicOutput *out = g_object_new (GT_TYPE_QUIC_OUTPUT, NULL);

  in->s = qstream_ref (s);
  out->s = qstream_ref (s);
  self->s = qstream_ref (s);
  self->in = G_INPUT_STREAM (in);
  self->out = G_OUTPUT_STREAM (out);
  return G_IO_STREAM (self);
}
