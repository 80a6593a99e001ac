/* gt-server-listener.c: listening sockets and the sniffing of new connections up to a hand-off.
 * PROXY header, TLS, WebSocket upgrade, tunnel HELLO, HTTP Host, SNI: then a tunnel or a stream. */
#include "config.h"

#define G_LOG_DOMAIN "gt-server"

#include <errno.h>
#include <malloc.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-auth-api.h"
#include "gt-certificate.h"
#include "gt-fd-source.h"
#include "gt-http.h"
#include "gt-server-private.h"
#include "gt-systemd.h"
#include "gt-tls-sniff.h"
#include "gt-ws-stream.h"

/* The handshake never needs more than this many bytes. */
#define HANDSHAKE_MAX (GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE + GT_FRAME_MAX_CONTROL)
/* A new connection's buffer starts this small; it grows only as far as what arrived proves it
 * needs (a HELLO's frame header gives its length). */
#define SNIFF_CHUNK 4096
/* Largest ClientHello accepted on the SNI listener. */
#define GT_SNIFF_TLS_MAX (16 * 1024)
#define PROXY_HEADER_MAX 536
/* Right after start (a restart or upgrade) clients are still moving their tunnels over: a request
 * for an unknown host waits this long for its client before it gets a 404 / alert. */
#define STARTUP_GRACE_US (5 * G_USEC_PER_SEC)
/* Connections refused by maxPendingConnections / maxPendingPerAddress: one log line per this. */
#define REFUSED_LOG_INTERVAL_US (10 * G_USEC_PER_SEC)
/* After a burst that buffered this much, memory goes back to the system once it is over. */
#define TRIM_AFTER_BYTES (4 * 1024 * 1024)
/* All handshake buffers together: a connection that would grow them past this is dropped (a
 * usual HELLO or request head fits in the first chunk, which is always given). */
#define PENDING_BYTES_MAX (16 * 1024 * 1024)

/* Pending connections from one source address (maxPendingPerAddress); freed with its last one. */
typedef struct
{
  guint8 key[17]; /* address size (4 or 16), then its bytes */
  guint count;
} PendingAddr;

typedef struct
{
  GtServer *server;
  GtListenerKind kind;
  int fd;
  GtFdWatch *source;
  char *address;
  GtTransportListener *transport; /* datagram listeners (quicAddr): owns fd */
} Listener;

typedef struct
{
  GtServer *server;
  GtListenerKind kind;
  int fd;            /* raw socket until TLS or WebSocket wrap it */
  GIOStream *io;     /* TLS connection or WebSocket tunnel stream */
  GtFdWatch *source; /* fd watch */
  GSource *io_source;
  GCancellable *cancellable;
  guint timeout_id;
  guint8 *buf;
  gsize len;
  gsize cap;
  char *peer;        /* real user address (after a PROXY header) */
  GInetSocketAddress *peer_addr;
  GInetSocketAddress *local_addr;
  gboolean trusted;  /* from a trusted proxy: a PROXY header comes first */
  gboolean ws;       /* inside a WebSocket or QUIC stream: only a tunnel handshake may follow */
  gboolean waiting_route; /* no client for it yet, but the server just started */
  gboolean from_node; /* came over a node tunnel (cluster): never forwarded again */
  GtHello *hello;    /* while the auth API answers */
  gboolean has_caps; /* the HELLO had GT_FRAME_FLAG_CAPS */
  guint32 caps;
  gsize consumed;
  PendingAddr *addr_count; /* counted toward maxPendingPerAddress (not for trusted proxies) */
  gint64 started_us; /* accepted at (monotonic) */
  guint probes;      /* PINGs answered before HELLO (a client's transport probe) */
} Pending;

/* handshakeTimeout, never longer than timeout. */
static guint64
server_handshake_timeout_ms (GtServer *server)
{
  guint64 t = server->config->timeout_ms;

  if (server->config->handshake_timeout_ms != 0)
    t = MIN (t, server->config->handshake_timeout_ms);
  return MAX (t, 1);
}

char *
_gt_server_http_reply (guint status, const char *reason, const char *body)
{
  return g_strdup_printf ("HTTP/1.1 %u %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                          status, reason, strlen (body), body);
}

/* ------------------------------------------------------------------------------------------ */
/* Pending connections: PROXY header, TLS handshake, then tunnel or user traffic */

static guint
pending_addr_hash (gconstpointer key)
{
  const guint8 *k = key;
  guint h = 5381;

  for (guint i = 0; i <= k[0]; i++)
    h = h * 33 + k[i];
  return h;
}

static gboolean
pending_addr_equal (gconstpointer a, gconstpointer b)
{
  const guint8 *x = a, *y = b;

  return x[0] == y[0] && memcmp (x + 1, y + 1, x[0]) == 0;
}

/* The table of PendingAddr (not owned: each is freed with its last connection). It lives as long
 * as the server object, past the pending connections. */
static GHashTable *
pending_addresses (GtServer *server)
{
  if (server->pending_by_address == NULL)
    {
      server->pending_by_address = g_hash_table_new (pending_addr_hash, pending_addr_equal);
      g_object_set_data_full (G_OBJECT (server), "gt-pending-by-address",
                              server->pending_by_address, (GDestroyNotify) g_hash_table_unref);
    }
  return server->pending_by_address;
}

static void
pending_addr_key (GInetAddress *address, guint8 key[17])
{
  gsize size = g_inet_address_get_native_size (address);

  key[0] = (guint8) size;
  memcpy (key + 1, g_inet_address_to_bytes (address), size);
}

/* Closes fd (when >= 0), with one log line per interval: the refused are many by nature. */
static void
server_refuse_connection (GtServer *server, int fd, const char *why)
{
  gint64 now = g_get_monotonic_time ();

  if (fd >= 0)
    close (fd);
  server->pending_refused++;
  if (server->pending_refused_logged_at != 0
      && now - server->pending_refused_logged_at < REFUSED_LOG_INTERVAL_US)
    return;
  g_warning ("connection closed before its handshake: %s (%u such since the last line)", why,
             server->pending_refused);
  server->pending_refused = 0;
  server->pending_refused_logged_at = now;
}

/* Counts p toward its address's pending connections; FALSE (and nothing counted) when the address
 * already has maxPendingPerAddress of them. */
static gboolean
pending_count_address (Pending *p, GInetAddress *address)
{
  GtServer *server = p->server;
  guint max = server->config->max_pending_per_address;
  GHashTable *table = pending_addresses (server);
  guint8 key[17];
  PendingAddr *a;

  pending_addr_key (address, key);
  a = g_hash_table_lookup (table, key);
  if (a != NULL && max != 0 && a->count >= max)
    return FALSE;
  if (a == NULL)
    {
      a = g_new0 (PendingAddr, 1);
      memcpy (a->key, key, sizeof key);
      g_hash_table_add (table, a);
    }
  a->count++;
  p->addr_count = a;
  return TRUE;
}

static void
pending_uncount_address (Pending *p)
{
  PendingAddr *a = g_steal_pointer (&p->addr_count);

  if (a == NULL || --a->count > 0)
    return;
  g_hash_table_remove (p->server->pending_by_address, a);
  g_free (a);
}

/* Bytes of handshake buffers; after a burst of big ones is over, glibc would keep the freed heap
 * (a fragmented brk heap is not trimmed): give it back, once per burst. */
static void
pending_account_buffer (Pending *p, gsize old_cap, gsize new_cap)
{
  GtServer *server = p->server;

  server->pending_bytes = server->pending_bytes + new_cap - old_cap;
  if (server->pending_bytes > server->pending_bytes_peak)
    server->pending_bytes_peak = server->pending_bytes;
  else if (server->pending_bytes_peak >= TRIM_AFTER_BYTES
           && server->pending_bytes < TRIM_AFTER_BYTES / 8)
    {
      server->pending_bytes_peak = server->pending_bytes;
      malloc_trim (0);
    }
}

static void
pending_free (Pending *p)
{
  pending_uncount_address (p);
  pending_account_buffer (p, p->cap, 0);
  if (p->waiting_route)
    g_ptr_array_remove (p->server->route_waiters, p);
  gt_fd_watch_free (p->source);
  if (p->io_source)
    {
      g_source_destroy (p->io_source);
      g_source_unref (p->io_source);
    }
  g_clear_handle_id (&p->timeout_id, g_source_remove);
  if (p->cancellable)
    {
      g_cancellable_cancel (p->cancellable);
      g_object_unref (p->cancellable);
    }
  if (p->fd >= 0)
    close (p->fd);
  if (p->io)
    {
      g_io_stream_close_async (p->io, G_PRIORITY_DEFAULT, NULL, NULL, NULL);
      g_object_unref (p->io);
    }
  g_clear_object (&p->peer_addr);
  g_clear_object (&p->local_addr);
  g_clear_pointer (&p->hello, gt_hello_free);
  g_free (p->buf);
  g_free (p->peer);
  g_free (p);
}

static void
pending_drop (Pending *p)
{
  g_hash_table_remove (p->server->pending, p);
}

/* Sends a short reply (HTTP error page, TLS alert, gt ERROR frame) and closes. */
static void
pending_reply_and_close (Pending *p, const guint8 *reply, gsize len)
{
  if (p->fd >= 0)
    {
      int fd = p->fd;

      p->fd = -1;
      g_clear_pointer (&p->source, gt_fd_watch_free); /* the fd is the linger's now */
      gt_socket_reply_and_close (fd, (const char *) reply, len);
    }
  else if (p->io != NULL && len > 0)
    {
      GOutputStream *out = g_io_stream_get_output_stream (p->io);

      if (G_IS_POLLABLE_OUTPUT_STREAM (out))
        (void) g_pollable_output_stream_write_nonblocking (G_POLLABLE_OUTPUT_STREAM (out), reply,
                                                           len, NULL, NULL);
    }
  pending_drop (p);
}

static void
pending_reply_text (Pending *p, const char *text)
{
  pending_reply_and_close (p, (const guint8 *) text, strlen (text));
}

static void
send_handshake_error (Pending *p, GtErrorCode code, const char *message)
{
  g_autoptr (GByteArray) f = g_byte_array_new ();

  gt_frame_append_error (f, GT_FRAME_ERROR, code, message);
  pending_reply_and_close (p, f->data, f->len);
}

/* The user's addresses for OPEN (PROXY protocol out, logs). */
static gboolean
pending_open_addr (Pending *p, GtOpenAddr *out)
{
  GInetAddress *src, *dst;

  if (p->peer_addr == NULL || p->local_addr == NULL)
    return FALSE;
  src = g_inet_socket_address_get_address (p->peer_addr);
  dst = g_inet_socket_address_get_address (p->local_addr);
  if (g_inet_address_get_family (src) != g_inet_address_get_family (dst))
    return FALSE;
  memset (out, 0, sizeof *out);
  out->family = g_inet_address_get_family (src) == G_SOCKET_FAMILY_IPV6 ? 6 : 4;
  memcpy (out->src, g_inet_address_to_bytes (src), g_inet_address_get_native_size (src));
  memcpy (out->dst, g_inet_address_to_bytes (dst), g_inet_address_get_native_size (dst));
  out->src_port = g_inet_socket_address_get_port (p->peer_addr);
  out->dst_port = g_inet_socket_address_get_port (p->local_addr);
  return TRUE;
}

/* Takes the connection out of the pending set: its fd or io now belongs to the caller. */
static void
pending_release (Pending *p, int *fd_out, GIOStream **io_out)
{
  *fd_out = p->fd;
  *io_out = p->io;
  p->fd = -1;
  p->io = NULL;
  pending_drop (p);
}

static char *
pending_ip (Pending *p)
{
  if (p->peer_addr == NULL)
    return g_strdup ("?");
  return g_inet_address_to_string (g_inet_socket_address_get_address (p->peer_addr));
}

static void
pending_refuse (Pending *p, const char *id, GtErrorCode code, const char *message)
{
  GtServer *server = p->server;
  const char *text = message ? message : gt_error_code_to_string (code);

  g_message ("tunnel from %s refused: client=%s: %s", p->peer, id ? id : "?", text);
  _gt_server_count_refusal (server, id, code);
  if (code == GT_ERROR_CODE_INVALID_AUTH)
    {
      g_autofree char *ip = pending_ip (p);

      gt_lockout_record_failure (server->lockout, ip, g_get_monotonic_time ());
    }
  send_handshake_error (p, code, text);
}

static void pending_attach_session (Pending *p, GtServerSession *session);
static void pending_claim (Pending *p, GtServerSession *session, GtHello *hello);

/* Attaches an accepted handshake to its client's session and starts the tunnel. */
static void
pending_finish_tunnel (Pending *p, gboolean authenticated, char **allowed)
{
  GtServer *server = p->server;
  g_autoptr (GtHello) hello = g_steal_pointer (&p->hello);
  g_autofree char *message = NULL;
  g_autofree char *ip = pending_ip (p);
  GtErrorCode code = GT_ERROR_CODE_NONE;
  GtServerSession *session;

  session = _gt_server_accept_hello (server, hello, authenticated, allowed, &code, &message);
  if (session == NULL)
    {
      pending_refuse (p, hello->id, code, message);
      return;
    }
  /* The self-test's success says nothing about the other logins from its address. */
  if (!session->ephemeral)
    gt_lockout_record_success (server->lockout, ip);
  if (server->cluster != NULL && !session->ephemeral)
    {
      pending_claim (p, session, g_steal_pointer (&hello));
      return;
    }
  pending_attach_session (p, session);
}

/* Hands the connection of an accepted handshake to a new tunnel of session. */
static void
pending_attach_session (Pending *p, GtServerSession *session)
{
  GtServer *server = p->server;
  g_autofree char *peer = g_strdup (p->peer);
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) io = NULL;
  g_autoptr (GtMux) mux = NULL;
  g_autofree guint8 *rest = NULL;
  gboolean has_caps = p->has_caps;
  guint32 caps = p->caps;
  gsize rest_len;
  int fd;

  /* Keep bytes that followed the HELLO, then hand the connection to a mux (p goes). */
  rest = g_memdup2 (p->buf + p->consumed, p->len - p->consumed);
  rest_len = p->len - p->consumed;
  pending_release (p, &fd, &io);
  if (io == NULL)
    {
      io = gt_transport_wrap_fd (fd, &error);
      if (io == NULL)
        {
          g_warning ("cannot wrap tunnel socket: %s", error->message);
          _gt_server_drop_session (server, session);
          return;
        }
    }
  mux = gt_mux_new (io, TRUE, rest, rest_len);
  gt_mux_set_peer (mux, peer);
  _gt_server_attach_tunnel (server, session, mux, has_caps, caps);
}

/* Cluster: the session's claims are made in etcd before its tunnel is accepted. The claim may
 * outlive its pending connection (the cancellable tells) and the server. */
typedef struct
{
  Pending *p;
  GCancellable *cancellable;
  GWeakRef server;
  GtServerSession *session;
  GtHello *hello;
} ClaimWait;

static void
pending_claim_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  ClaimWait *wait = user_data;
  g_autoptr (GtServer) server = g_weak_ref_get (&wait->server);
  g_autoptr (GtServerSession) session = wait->session;
  g_autoptr (GtHello) hello = wait->hello;
  g_autoptr (GCancellable) cancellable = wait->cancellable;
  g_autofree char *message = NULL;
  Pending *p = wait->p;
  gboolean registered;
  GtErrorCode code;

  g_weak_ref_clear (&wait->server);
  g_free (wait);
  if (server == NULL || server->cluster == NULL)
    return;
  code = gt_cluster_claim_finish (server->cluster, result, &message);
  registered = gt_server_registry_lookup (server->registry, session->id) == session;
  if (!registered)
    {
      /* Replaced or gone while its claim ran: what the claim took goes too. */
      gt_cluster_release (server->cluster, session);
      if (code == GT_ERROR_CODE_NONE)
        {
          code = GT_ERROR_CODE_INTERNAL;
          g_free (message);
          message = g_strdup ("the client's session ended during its claim");
        }
    }
  if (g_cancellable_is_cancelled (cancellable) || code != GT_ERROR_CODE_NONE)
    {
      /* A session that got no tunnel goes, and so do the claims it got. */
      if (registered)
        _gt_server_drop_session (server, session);
      if (!g_cancellable_is_cancelled (cancellable))
        {
          p->hello = g_steal_pointer (&hello);
          pending_refuse (p, p->hello->id, code, message);
        }
      return;
    }
  pending_attach_session (p, session);
}

static void
pending_stop_reading (Pending *p)
{
  g_clear_pointer (&p->source, gt_fd_watch_free);
  if (p->io_source)
    {
      g_source_destroy (p->io_source);
      g_clear_pointer (&p->io_source, g_source_unref);
    }
}

static void
pending_claim (Pending *p, GtServerSession *session, GtHello *hello)
{
  ClaimWait *wait = g_new0 (ClaimWait, 1);

  pending_stop_reading (p);
  g_clear_object (&p->cancellable);
  p->cancellable = g_cancellable_new ();
  wait->p = p;
  wait->cancellable = g_object_ref (p->cancellable);
  g_weak_ref_init (&wait->server, p->server);
  wait->session = g_object_ref (session);
  wait->hello = hello;
  gt_cluster_claim_async (p->server->cluster, session, NULL, pending_claim_done_cb, wait);
}

/* A node-to-node tunnel (cluster): another node opens streams for users of our clients. */
static void
pending_finish_node (Pending *p)
{
  GtServer *server = p->server;
  g_autoptr (GtHello) hello = NULL;
  g_autofree char *ip = pending_ip (p);
  g_autofree char *peer = g_strdup (p->peer);
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) io = NULL;
  g_autoptr (GtMux) mux = NULL;
  g_autoptr (GByteArray) welcome = g_byte_array_new ();
  g_autofree guint8 *rest = NULL;
  gsize rest_len;
  int fd;

  if (server->cluster == NULL)
    {
      pending_refuse (p, p->hello->id, GT_ERROR_CODE_PROTOCOL, "this server is not a cluster node");
      return;
    }
  if (!gt_cluster_check_node (server->cluster, p->hello))
    {
      pending_refuse (p, p->hello->id, GT_ERROR_CODE_INVALID_AUTH, "bad cluster secret");
      return;
    }
  gt_lockout_record_success (server->lockout, ip);
  hello = g_steal_pointer (&p->hello);
  rest = g_memdup2 (p->buf + p->consumed, p->len - p->consumed);
  rest_len = p->len - p->consumed;
  pending_release (p, &fd, &io);
  if (io == NULL && (io = gt_transport_wrap_fd (fd, &error)) == NULL)
    {
      g_warning ("cannot wrap node tunnel socket: %s", error->message);
      return;
    }
  mux = gt_mux_new (io, FALSE, rest, rest_len);
  gt_mux_set_peer (mux, peer);
  gt_frame_append_welcome (welcome, NULL, 0);
  gt_mux_send_raw (mux, welcome->data, welcome->len);
  g_message ("node tunnel accepted: node=%s remote=%s", hello->id, peer);
  gt_cluster_add_inbound (server->cluster, mux);
}

/* The auth request outlives its pending connection when that one is dropped (the cancellable,
 * cancelled by pending_free, tells), and may outlive the server. */
typedef struct
{
  Pending *p;
  GCancellable *cancellable;
  GWeakRef server;
  char *ip;
  gboolean counted; /* an attempt in flight for the lockout */
} AuthWait;

static void
auth_wait_free (AuthWait *wait)
{
  g_object_unref (wait->cancellable);
  g_weak_ref_clear (&wait->server);
  g_free (wait->ip);
  g_free (wait);
}

static void
pending_auth_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  AuthWait *wait = user_data;
  Pending *p = wait->p;
  g_autoptr (GError) error = NULL;
  g_auto (GStrv) allowed = gt_auth_api_check_finish (result, &error);
  g_autoptr (GtServer) server = g_weak_ref_get (&wait->server);
  gboolean gone = server == NULL || g_cancellable_is_cancelled (wait->cancellable);

  if (server != NULL && wait->counted)
    gt_lockout_end_attempt (server->lockout, wait->ip);
  auth_wait_free (wait);
  if (gone)
    return;
  if (allowed == NULL)
    {
      g_autofree char *text = NULL;
      GtErrorCode code = GT_ERROR_CODE_INVALID_AUTH;

      if (g_error_matches (error, GT_AUTH_ERROR, GT_AUTH_ERROR_DENIED))
        text = g_strdup ("the auth API refused this id and secret");
      else
        {
          text = g_strdup_printf ("the auth API failed: %s", error->message);
          code = GT_ERROR_CODE_INTERNAL;
        }
      pending_refuse (p, p->hello->id, code, text);
      return;
    }
  pending_finish_tunnel (p, TRUE, allowed);
}

/* Refuses a login without looking at its secret (not a failure of its own). */
static void
pending_refuse_early (Pending *p, const char *text)
{
  g_message ("tunnel from %s refused: client=%s: %s", p->peer, p->hello->id, text);
  _gt_server_count_handshake_failure (p->server, p->hello->id, "locked_out");
  send_handshake_error (p, GT_ERROR_CODE_INVALID_AUTH, text);
}

/* Asks the auth API about the HELLO; the answer finishes or refuses the tunnel. */
static void
pending_ask_auth_api (Pending *p, const char *ip)
{
  GtServer *server = p->server;
  g_autoptr (GPtrArray) prefixes = g_ptr_array_new ();
  AuthWait *wait;
  gboolean counted = FALSE;

  for (guint i = 0; i < p->hello->services->len; i++)
    {
      GtHelloService *s = p->hello->services->pdata[i];

      if (s->prefix != NULL && *s->prefix != '\0')
        g_ptr_array_add (prefixes, s->prefix);
    }
  g_ptr_array_add (prefixes, NULL);

  /* A login whose answer is cached or already asked costs the API nothing; any other counts
   * toward the address's lockout while it waits, so a burst cannot fill the API's queue. */
  if (!gt_auth_api_knows (server->auth_api, p->hello->id, p->hello->secret,
                          (const char *const *) prefixes->pdata))
    {
      if (!gt_lockout_begin_attempt (server->lockout, ip, g_get_monotonic_time ()))
        {
          g_autofree char *text = g_strdup_printf (
            "too many logins from %s are being checked; try again in a few seconds", ip);

          pending_refuse_early (p, text);
          return;
        }
      counted = TRUE;
    }

  /* Stop reading while the API answers. */
  g_clear_pointer (&p->source, gt_fd_watch_free);
  if (p->io_source)
    {
      g_source_destroy (p->io_source);
      g_clear_pointer (&p->io_source, g_source_unref);
    }
  g_clear_object (&p->cancellable);
  p->cancellable = g_cancellable_new ();
  wait = g_new0 (AuthWait, 1);
  wait->p = p;
  wait->cancellable = g_object_ref (p->cancellable);
  g_weak_ref_init (&wait->server, server);
  wait->ip = g_strdup (ip);
  wait->counted = counted;
  /* options.timeout bounds the wait (queueing included), and its failure is reported to the
   * client: the connection's read timeout must not cut it short. */
  g_clear_handle_id (&p->timeout_id, g_source_remove);
  gt_auth_api_check_async (server->auth_api, ip, p->hello->id, p->hello->secret,
                           (const char *const *) prefixes->pdata, p->cancellable,
                           pending_auth_done_cb, wait);
}

/* PINGs a probe may send before it goes (docs/protocol.md §6.10). */
#define PROBE_PINGS_MAX 32

/* Answers a transport probe's PING at once; FALSE when the answer does not fit the socket now
 * (a probe that does not read its answers is dropped). */
static gboolean
pending_answer_ping (Pending *p, const guint8 *payload)
{
  guint8 pong[GT_FRAME_HEADER_SIZE + 8];
  gssize n;

  gt_frame_header_encode (pong, GT_FRAME_PING, GT_FRAME_FLAG_ACK, 0, 8);
  memcpy (pong + GT_FRAME_HEADER_SIZE, payload, 8);
  if (p->fd >= 0)
    n = send (p->fd, pong, sizeof pong, MSG_DONTWAIT | MSG_NOSIGNAL);
  else
    n = g_pollable_output_stream_write_nonblocking (
      G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (p->io)), pong, sizeof pong, NULL,
      NULL);
  return n == (gssize) sizeof pong;
}

static void
pending_handle_tunnel (Pending *p)
{
  GtServer *server = p->server;
  GtFrameHeader h;
  guint8 version;
  g_autoptr (GError) error = NULL;
  g_autofree char *ip = NULL;
  GtDecodeResult r;
  gsize consumed;
  gint64 now;

  if (p->hello != NULL)
    return; /* waiting for the auth API */
  r = gt_preface_decode (p->buf, p->len, &version, &error);
  if (r == GT_DECODE_NEED_MORE)
    return;
  if (r == GT_DECODE_ERROR)
    {
      pending_refuse (p, NULL,
                      g_error_matches (error, GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_VERSION)
                        ? GT_ERROR_CODE_UNSUPPORTED_VERSION
                        : GT_ERROR_CODE_PROTOCOL,
                      error->message);
      return;
    }
  r = gt_frame_header_decode (p->buf + GT_PREFACE_SIZE, p->len - GT_PREFACE_SIZE, &h, &error);
  /* A client's transport probe: PINGs before any HELLO, each answered at once. */
  while (r == GT_DECODE_OK && h.type == GT_FRAME_PING && !(h.flags & GT_FRAME_FLAG_ACK))
    {
      gsize flen = GT_FRAME_HEADER_SIZE + h.length;

      if (p->len < GT_PREFACE_SIZE + flen)
        return;
      if (++p->probes > PROBE_PINGS_MAX
          || !pending_answer_ping (p, p->buf + GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE))
        {
          g_debug ("%s: transport probe ended (%u pings)", p->peer, p->probes);
          pending_drop (p);
          return;
        }
      memmove (p->buf + GT_PREFACE_SIZE, p->buf + GT_PREFACE_SIZE + flen,
               p->len - GT_PREFACE_SIZE - flen);
      p->len -= flen;
      r = gt_frame_header_decode (p->buf + GT_PREFACE_SIZE, p->len - GT_PREFACE_SIZE, &h, &error);
    }
  if (r == GT_DECODE_NEED_MORE)
    return;
  if (r == GT_DECODE_OK && h.type != GT_FRAME_HELLO)
    {
      r = GT_DECODE_ERROR;
      error = g_error_new (GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                           "expected HELLO, got %s", gt_frame_type_to_string (h.type));
    }
  if (r == GT_DECODE_ERROR)
    {
      pending_refuse (p, NULL, GT_ERROR_CODE_PROTOCOL, error->message);
      return;
    }
  consumed = GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE + h.length;
  if (p->len < consumed)
    return;

  p->hello = gt_hello_decode_flags (p->buf + GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE, h.length,
                                    h.flags, &error);
  if (p->hello == NULL)
    {
      g_autofree char *text = g_strdup_printf ("bad HELLO: %s", error->message);

      pending_refuse (p, NULL, GT_ERROR_CODE_PROTOCOL, text);
      return;
    }
  p->consumed = consumed;
  p->has_caps = p->hello->has_caps;
  p->caps = p->hello->caps;

  /* The status self-test logs in from loopback like everyone there: a lockout of that address
   * must not fail it. Its user is known to this process only. */
  if (!gt_hello_is_node (p->hello) && _gt_server_is_ephemeral_login (server, p->hello))
    {
      pending_finish_tunnel (p, FALSE, NULL);
      return;
    }

  /* Too many failed logins from this address: refused without looking at the secret. */
  ip = pending_ip (p);
  now = g_get_monotonic_time ();
  if (gt_lockout_is_blocked (server->lockout, ip, now))
    {
      gint64 left_s = (gt_lockout_get_remaining (server->lockout, ip, now) + G_USEC_PER_SEC - 1)
                      / G_USEC_PER_SEC;
      g_autofree char *text = g_strdup_printf (
        "too many failed logins from %s; try again in %" G_GINT64_FORMAT " s", ip, left_s);

      pending_refuse_early (p, text);
      return;
    }

  if (gt_hello_is_node (p->hello))
    {
      pending_finish_node (p);
      return;
    }
  if (server->auth_api != NULL && !g_hash_table_contains (server->ephemeral, p->hello->id))
    {
      pending_ask_auth_api (p, ip);
      return;
    }
  pending_finish_tunnel (p, FALSE, NULL);
}

static void pending_watch (Pending *p);

static void
pending_ws_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Pending *p = user_data;
  g_autoptr (GError) error = NULL;
  GIOStream *ws = gt_transport_accept_finish (result, &error);

  if (ws == NULL)
    {
      if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        return; /* p is gone */
      g_message ("websocket upgrade from %s refused: %s", p->peer, error->message);
      g_clear_object (&p->io);
      pending_drop (p);
      return;
    }
  g_clear_object (&p->cancellable);
  g_clear_object (&p->io);
  p->io = ws;
  p->ws = TRUE;
  p->len = 0;
  pending_watch (p);
}

/* A WebSocket upgrade on the tunnel path: answer it (without blocking) and read the tunnel
 * handshake inside. */
static void
pending_handle_websocket (Pending *p)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) base = NULL;

  if (p->io != NULL)
    base = g_object_ref (p->io);
  else
    {
      base = gt_transport_wrap_fd (p->fd, &error);
      p->fd = -1;
      if (base == NULL)
        {
          pending_drop (p);
          return;
        }
    }
  gt_fd_watch_free (p->source);
  p->source = NULL;
  if (p->io_source)
    {
      g_source_destroy (p->io_source);
      g_clear_pointer (&p->io_source, g_source_unref);
    }
  g_clear_object (&p->cancellable);
  p->cancellable = g_cancellable_new ();
  gt_transport_accept_async (p->kind == GT_LISTENER_TLS ? "wss" : "ws", base, p->buf, p->len,
                             NULL, p->cancellable, pending_ws_done_cb, p);
}

static void pending_dispatch (Pending *p);

/* Hands the user connection and the bytes read so far to a new stream of the route's client. */
static void
pending_open_stream (Pending *p, GtMux *mux, GtServerRoute *route, GBytes *connect_fail_response)
{
  guint64 timeout_ms = p->server->config->timeout_ms;
  g_autoptr (GIOStream) io = NULL;
  g_autofree guint8 *data = g_steal_pointer (&p->buf);
  gsize len = p->len;
  GtOpenAddr addr;
  gboolean has_addr = pending_open_addr (p, &addr);
  int fd;

  pending_release (p, &fd, &io);
  gt_mux_open_stream_full (mux, route->service_index, fd, io, data, len, has_addr ? &addr : NULL,
                           connect_fail_response, timeout_ms);
}

static gboolean
route_wait_cb (gpointer user_data)
{
  GtServer *server = user_data;
  g_autoptr (GPtrArray) waiters = g_steal_pointer (&server->route_waiters);

  server->route_wait_id = 0;
  server->route_waiters = g_ptr_array_new ();
  for (guint i = 0; i < waiters->len; i++)
    {
      Pending *p = waiters->pdata[i];

      if (g_hash_table_contains (server->pending, p))
        pending_dispatch (p); /* re-queues itself while the grace lasts */
    }
  return G_SOURCE_REMOVE;
}

/* Cluster: TRUE when another node holds the host, and the connection went to it. */
static gboolean
pending_forward (Pending *p, GtServiceKind kind, const char *host)
{
  GtServer *server = p->server;
  g_autofree char *prefix = NULL;
  g_autoptr (GIOStream) io = NULL;
  guint8 *data;
  gsize len = p->len;
  GtOpenAddr addr;
  gboolean has_addr;
  GtListenerKind listener = p->kind;
  int fd;

  if (server->cluster == NULL || p->from_node || host == NULL
      || (prefix = gt_http_host_prefix (host)) == NULL
      || !gt_cluster_holds_elsewhere (server->cluster, kind, prefix))
    return FALSE;
  has_addr = pending_open_addr (p, &addr);
  data = g_steal_pointer (&p->buf);
  pending_release (p, &fd, &io);
  if (!gt_cluster_forward (server->cluster, kind, prefix, listener, fd,
                           io ? g_object_ref (io) : NULL, data, len, has_addr ? &addr : NULL,
                           server->config->timeout_ms))
    {
      /* Too many waiting for that node: closed at once. */
      if (fd >= 0)
        close (fd);
      if (io != NULL)
        g_object_unref (io); /* the reference given */
      g_free (data);
    }
  return TRUE;
}

/* TRUE when the connection was parked to wait for its client (startup grace). */
static gboolean
pending_wait_for_route (Pending *p)
{
  GtServer *server = p->server;

  /* Within the grace, and well before the connection's own timeout would drop it. A draining
   * server gets no new clients. */
  if (server->moving || server->stopped)
    return FALSE;
  if (g_get_monotonic_time () - server->started_at
      >= MIN (STARTUP_GRACE_US, (gint64) server_handshake_timeout_ms (server) * 1000 / 2))
    return FALSE;
  if (!p->waiting_route)
    {
      p->waiting_route = TRUE;
      g_clear_pointer (&p->source, gt_fd_watch_free);
      if (p->io_source)
        {
          g_source_destroy (p->io_source);
          g_clear_pointer (&p->io_source, g_source_unref);
        }
    }
  g_ptr_array_add (server->route_waiters, p);
  if (server->route_wait_id == 0)
    server->route_wait_id = g_timeout_add (50, route_wait_cb, server);
  return TRUE;
}

/* The route of a host prefix and the tunnel of its client for a new stream. */
static GtMux *
server_find_tunnel_prefix (GtServer *server, GtServiceKind kind, const char *prefix,
                           GtServerRoute **route_out)
{
  GtServerRoute *route = prefix ? gt_server_registry_lookup_route (server->registry, kind, prefix)
                                : NULL;

  *route_out = route;
  return route ? gt_server_session_pick_tunnel (route->session) : NULL;
}

/* The same for a host name (HTTP Host or SNI): its first label is the prefix. */
static GtMux *
server_find_tunnel (GtServer *server, GtServiceKind kind, const char *host,
                    GtServerRoute **route_out)
{
  g_autofree char *prefix = host ? gt_http_host_prefix (host) : NULL;

  return server_find_tunnel_prefix (server, kind, prefix, route_out);
}

static void
pending_handle_http (Pending *p)
{
  GtServer *server = p->server;
  const char *mux_header = server->config->http_mux_header;
  g_autofree char *host = NULL;
  g_autoptr (GError) error = NULL;
  GtDecodeResult r;
  GtServerRoute *route;
  GtMux *mux;

  /* httpMUXHeader: another header names the client, with its whole value (GT's rule). */
  if (mux_header != NULL)
    r = gt_http_sniff_field (p->buf, p->len, GT_HTTP_MAX_HEAD, mux_header, &host, &error);
  else
    r = gt_http_sniff_host (p->buf, p->len, GT_HTTP_MAX_HEAD, &host, &error);
  if (r == GT_DECODE_NEED_MORE)
    return;
  /* A WebSocket tunnel's upgrade carries Host, not the routing header. */
  if (r == GT_DECODE_ERROR && mux_header != NULL
      && g_error_matches (error, GT_HTTP_ERROR, GT_HTTP_ERROR_NO_HOST)
      && server->config->ws_path != NULL
      && gt_ws_is_upgrade_request (p->buf, p->len, server->config->ws_path))
    {
      pending_handle_websocket (p);
      return;
    }
  if (r == GT_DECODE_ERROR)
    {
      gboolean too_large = g_error_matches (error, GT_HTTP_ERROR, GT_HTTP_ERROR_TOO_LARGE);
      g_autofree char *body = g_strdup_printf ("bad request: %s\n", error->message);
      g_autofree char *reply
        = too_large ? _gt_server_http_reply (431, "Request Header Fields Too Large", body)
                    : _gt_server_http_reply (400, "Bad Request", body);

      g_message ("bad request from %s: %s", p->peer, error->message);
      pending_reply_text (p, reply);
      return;
    }

  if (server->config->ws_path != NULL
      && gt_ws_is_upgrade_request (p->buf, p->len, server->config->ws_path))
    {
      pending_handle_websocket (p);
      return;
    }

  if (mux_header != NULL)
    mux = server_find_tunnel_prefix (server, GT_SERVICE_KIND_HTTP, host, &route);
  else
    mux = server_find_tunnel (server, GT_SERVICE_KIND_HTTP, host, &route);
  if (mux == NULL && route == NULL && pending_forward (p, GT_SERVICE_KIND_HTTP, host))
    return;
  if (mux == NULL && pending_wait_for_route (p))
    return;
  if (mux == NULL && route != NULL && server->moving)
    {
      /* Its client moved to the server that replaces this one; the user may try again. */
      g_autofree char *reply = _gt_server_http_reply (
        503, "Service Unavailable", "the gt server is restarting; try again\n");

      pending_reply_text (p, reply);
      return;
    }
  if (mux == NULL)
    {
      g_autofree char *body = g_strdup_printf ("no gt client serves host \"%s\"\n", host);
      g_autofree char *reply = _gt_server_http_reply (404, "Not Found", body);

      g_debug ("no route for host %s from %s", host, p->peer);
      pending_reply_text (p, reply);
      return;
    }

  pending_open_stream (p, mux, route, server->bad_gateway);
}

static void
pending_handle_sni (Pending *p)
{
  GtServer *server = p->server;
  g_autofree char *sni = NULL;
  g_autoptr (GError) error = NULL;
  guint8 alert[GT_TLS_ALERT_SIZE];
  GtDecodeResult r;
  GtServerRoute *route;
  GtMux *mux;

  r = gt_tls_sniff_sni (p->buf, p->len, GT_SNIFF_TLS_MAX, &sni, &error);
  if (r == GT_DECODE_NEED_MORE)
    return;
  if (r == GT_DECODE_ERROR)
    {
      g_message ("bad TLS ClientHello from %s: %s", p->peer, error->message);
      pending_reply_and_close (p, alert, gt_tls_alert (alert, GT_TLS_ALERT_DECODE_ERROR));
      return;
    }
  mux = server_find_tunnel (server, GT_SERVICE_KIND_HTTPS, sni, &route);
  if (mux == NULL && route == NULL && pending_forward (p, GT_SERVICE_KIND_HTTPS, sni))
    return;
  if (mux == NULL && sni != NULL && pending_wait_for_route (p))
    return;
  if (mux == NULL)
    {
      g_message ("no https service for server name \"%s\" from %s", sni ? sni : "(none)",
                 p->peer);
      pending_reply_and_close (p, alert, gt_tls_alert (alert, GT_TLS_ALERT_UNRECOGNIZED_NAME));
      return;
    }
  pending_open_stream (p, mux, route, NULL);
}

static gboolean
looks_like_proxy_header (const guint8 *buf, gsize len)
{
  static const guint8 v2[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

  return (len >= 6 && memcmp (buf, "PROXY ", 6) == 0) || (len >= 12 && memcmp (buf, v2, 12) == 0);
}

/* Looks at what arrived so far and moves the connection on when it can. */
static void
pending_dispatch (Pending *p)
{
  GtServer *server = p->server;

  if (server->config->proxy_protocol && !p->trusted && !p->ws
      && looks_like_proxy_header (p->buf, p->len))
    {
      g_message ("PROXY header from untrusted address %s refused", p->peer);
      pending_drop (p);
      return;
    }
  /* Every listener takes tunnels (0xF0 is no TLS record type), the SNI one included. */
  if (p->buf[0] == GT_PROTOCOL_MAGIC0 && p->from_node)
    {
      g_message ("a stream from another node carries a tunnel handshake; closing");
      pending_drop (p);
    }
  else if (p->buf[0] == GT_PROTOCOL_MAGIC0)
    pending_handle_tunnel (p);
  else if (p->kind == GT_LISTENER_SNI)
    pending_handle_sni (p);
  else if (p->ws)
    {
      g_message ("%s tunnel from %s does not start with the gt preface",
                 p->kind == GT_LISTENER_QUIC ? "QUIC" : "websocket", p->peer);
      pending_drop (p);
    }
  else
    pending_handle_http (p);
}

gsize
_gt_server_pending_buffer_limit (GtListenerKind kind, const guint8 *buf, gsize len)
{
  if (len > 0 && buf[0] == GT_PROTOCOL_MAGIC0)
    {
      GtFrameHeader h;

      /* Up to the end of the HELLO that the frame header announces; bytes after it stay in the
       * socket for the tunnel. Until then (or when the header is bad) one chunk is enough. */
      if (len >= GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE
          && gt_frame_header_decode (buf + GT_PREFACE_SIZE, len - GT_PREFACE_SIZE, &h, NULL)
               == GT_DECODE_OK
          && h.type == GT_FRAME_HELLO)
        return MIN (GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE + (gsize) h.length, HANDSHAKE_MAX);
      return SNIFF_CHUNK;
    }
  if (kind == GT_LISTENER_SNI)
    return GT_SNIFF_TLS_MAX + 1;
  return GT_HTTP_MAX_HEAD + 1;
}

static void
pending_read (Pending *p)
{
  gsize limit = _gt_server_pending_buffer_limit (p->kind, p->buf, p->len);
  gssize n;

  if (p->cap - p->len < SNIFF_CHUNK && p->cap < limit)
    {
      gsize cap = MIN (MAX (p->cap * 2, (gsize) SNIFF_CHUNK), limit);

      if (cap > SNIFF_CHUNK && p->server->pending_bytes + (cap - p->cap) > PENDING_BYTES_MAX)
        {
          server_refuse_connection (p->server, -1,
                                    "the buffers of connections in their handshake are full");
          pending_drop (p);
          return;
        }
      pending_account_buffer (p, p->cap, cap);
      p->cap = cap;
      p->buf = g_realloc (p->buf, p->cap);
    }
  if (p->len >= MIN (p->cap, limit))
    {
      pending_dispatch (p); /* at the limit: the parsers report it */
      return;
    }
  if (p->fd >= 0)
    {
      n = recv (p->fd, p->buf + p->len, p->cap - p->len, MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    }
  else
    {
      g_autoptr (GError) error = NULL;

      n = g_pollable_input_stream_read_nonblocking (
        G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (p->io)), p->buf + p->len,
        p->cap - p->len, NULL, &error);
      if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        return;
      if (n < 0)
        g_debug ("%s: %s", p->peer, error->message);
    }
  if (n <= 0)
    {
      g_debug ("%s closed before sending a complete request", p->peer);
      pending_drop (p);
      return;
    }
  p->len += n;
  pending_dispatch (p);
}

static void
pending_fd_cb (int fd, GIOCondition revents, gpointer user_data)
{
  pending_read (user_data);
}

static gboolean
pending_io_cb (GObject *stream, gpointer user_data)
{
  pending_read (user_data);
  return G_SOURCE_CONTINUE;
}

static void
pending_watch (Pending *p)
{
  if (p->fd >= 0)
    p->source = gt_fd_watch_new (p->fd, G_IO_IN, pending_fd_cb, p);
  else
    {
      p->io_source = g_pollable_input_stream_create_source (
        G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (p->io)), NULL);
      g_source_set_callback (p->io_source, (GSourceFunc) (void (*) (void)) pending_io_cb, p, NULL);
      g_source_attach (p->io_source, g_main_context_get_thread_default ());
    }
}

static void
pending_tls_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Pending *p = user_data;
  g_autoptr (GError) error = NULL;
  GIOStream *tls = gt_transport_accept_finish (result, &error);

  if (tls == NULL)
    {
      if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        {
          g_message ("TLS handshake with %s failed: %s", p->peer, error->message);
          pending_drop (p);
        }
      return;
    }
  g_clear_object (&p->cancellable);
  p->io = tls;
  pending_watch (p);
}

/* tlsAddr: the TLS handshake with the server certificate, through the tls:// transport leaf. */
static void
pending_start_tls (Pending *p)
{
  GtServer *server = p->server;
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) base = gt_transport_wrap_fd (p->fd, &error);

  p->fd = -1;
  if (base == NULL)
    {
      pending_drop (p);
      return;
    }
  p->cancellable = g_cancellable_new ();
  gt_transport_accept_async ("tls", base, NULL, 0, server->certificate, p->cancellable,
                             pending_tls_done_cb, p);
}

/* PROXY protocol from a trusted load balancer: read exactly the header, then carry on. The bytes
 * after it (a TLS ClientHello on tlsAddr) must stay in the socket, so new bytes are peeked at; an
 * incomplete header is all header, so they are then taken into p->buf, and the next wake-up means
 * new bytes or EOF (a peek alone would leave the socket readable and spin). */
static void
pending_proxy_cb (int fd, GIOCondition revents, gpointer user_data)
{
  Pending *p = user_data;
  g_auto (GtProxyHeader) header = { 0 };
  g_autoptr (GError) error = NULL;
  gsize consumed = 0;
  GtDecodeResult r;
  gssize n;

  if (p->buf == NULL)
    {
      pending_account_buffer (p, 0, PROXY_HEADER_MAX);
      p->cap = PROXY_HEADER_MAX;
      p->buf = g_malloc (p->cap);
    }
  n = recv (fd, p->buf + p->len, p->cap - p->len, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  if (n <= 0)
    {
      g_debug ("%s closed before sending a complete PROXY header", p->peer);
      pending_drop (p);
      return;
    }
  r = gt_proxy_header_parse (p->buf, p->len + n, &header, &consumed, &error);
  if (r == GT_DECODE_NEED_MORE && p->len + n < p->cap)
    {
      if (recv (fd, p->buf + p->len, n, MSG_DONTWAIT) != n)
        {
          pending_drop (p);
          return;
        }
      p->len += n;
      return;
    }
  if (r != GT_DECODE_OK)
    {
      g_message ("bad PROXY header from %s: %s", p->peer,
                 error ? error->message : "header too long");
      pending_drop (p);
      return;
    }
  g_assert (consumed > p->len && consumed <= p->len + n);
  /* Take exactly the rest of the header. */
  if (recv (fd, p->buf + p->len, consumed - p->len, MSG_DONTWAIT) != (gssize) (consumed - p->len))
    {
      pending_drop (p);
      return;
    }
  p->len = 0;
  if (!header.local && header.src_addr != NULL)
    {
      g_autoptr (GInetAddress) src = g_inet_address_new_from_string (header.src_addr);
      g_autoptr (GInetAddress) dst = g_inet_address_new_from_string (header.dst_addr);

      if (src != NULL && dst != NULL)
        {
          g_autofree char *via = g_steal_pointer (&p->peer);

          g_clear_object (&p->peer_addr);
          g_clear_object (&p->local_addr);
          p->peer_addr = G_INET_SOCKET_ADDRESS (g_inet_socket_address_new (src, header.src_port));
          p->local_addr = G_INET_SOCKET_ADDRESS (g_inet_socket_address_new (dst, header.dst_port));
          p->peer = g_inet_address_get_family (src) == G_SOCKET_FAMILY_IPV6
                      ? g_strdup_printf ("[%s]:%u", header.src_addr, header.src_port)
                      : g_strdup_printf ("%s:%u", header.src_addr, header.src_port);
          g_debug ("connection from %s via %s (PROXY protocol)", p->peer, via);
          /* From here the real source is what maxPendingPerAddress counts. */
          if (!pending_count_address (p, src))
            {
              g_autofree char *why = g_strdup_printf (
                "%u connections from %s are in their handshake (maxPendingPerAddress)",
                p->server->config->max_pending_per_address, header.src_addr);
              int cfd = p->fd;

              p->fd = -1;
              g_clear_pointer (&p->source, gt_fd_watch_free); /* before its fd closes */
              server_refuse_connection (p->server, cfd, why);
              pending_drop (p);
              return;
            }
        }
    }
  g_clear_pointer (&p->source, gt_fd_watch_free);
  if (p->kind == GT_LISTENER_TLS)
    pending_start_tls (p);
  else
    pending_watch (p);
}

static gboolean
pending_timeout_cb (gpointer user_data)
{
  Pending *p = user_data;

  p->timeout_id = 0;
  g_message ("%s sent no complete request within the handshake timeout; closing", p->peer);
  pending_drop (p);
  return G_SOURCE_REMOVE;
}

static GInetSocketAddress *
fd_address (int fd, gboolean peer)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  GSocketAddress *sa;

  if ((peer ? getpeername (fd, (struct sockaddr *) &ss, &len)
            : getsockname (fd, (struct sockaddr *) &ss, &len)) < 0)
    return NULL;
  sa = g_socket_address_new_from_native (&ss, len);
  if (sa != NULL && !G_IS_INET_SOCKET_ADDRESS (sa))
    g_clear_object (&sa);
  return (GInetSocketAddress *) sa;
}

/* Out of fds: closes the oldest connection still in its handshake from the source address that
 * has the most of them (at least two; never one that waits for the auth API), so that the others'
 * new connections are not held up until the attacker's time out. FALSE when there is none. */
static gboolean
server_evict_pending_for_fd (GtServer *server, int err)
{
  GHashTableIter iter;
  Pending *p, *victim = NULL;
  g_autofree char *why = NULL;

  g_hash_table_iter_init (&iter, server->pending);
  while (g_hash_table_iter_next (&iter, (gpointer *) &p, NULL))
    {
      if (p->addr_count == NULL || p->addr_count->count < 2 || p->hello != NULL)
        continue;
      if (victim == NULL || p->addr_count->count > victim->addr_count->count
          || (p->addr_count->count == victim->addr_count->count
              && p->started_us < victim->started_us))
        victim = p;
    }
  if (victim == NULL)
    return FALSE;
  why = g_strdup_printf ("accept: %s: the oldest handshake of the busiest source address gives "
                         "way", g_strerror (err));
  server_refuse_connection (server, -1, why);
  pending_drop (victim);
  return TRUE;
}

static void
listener_accept_cb (int fd, GIOCondition revents, gpointer user_data)
{
  Listener *l = user_data;
  GtServer *server = l->server;

  for (int k = 0; k < 64; k++)
    {
      int cfd = accept4 (fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
      guint max_pending = server->config->max_pending;
      Pending *p;

      if (cfd < 0)
        {
          int err = errno;

          /* Bounded by the loop: at most one eviction per connection waiting in the backlog. */
          if ((err == EMFILE || err == ENFILE) && server_evict_pending_for_fd (server, err))
            continue;
          if (gt_fd_watch_accept_failed (l->source, err, l->address) || err == EAGAIN
              || err == EINTR)
            return;
          continue; /* that connection failed: the next one */
        }
      if (max_pending != 0 && g_hash_table_size (server->pending) >= max_pending)
        {
          g_autofree char *why = g_strdup_printf (
            "%u connections are in their handshake (maxPendingConnections)", max_pending);

          server_refuse_connection (server, cfd, why);
          continue;
        }
      p = g_new0 (Pending, 1);
      p->server = server;
      p->kind = l->kind;
      p->fd = cfd;
      p->started_us = g_get_monotonic_time ();
      p->peer_addr = fd_address (cfd, TRUE);
      if (server->trusted_proxies != NULL && p->peer_addr != NULL
          && gt_cidr_list_contains (server->trusted_proxies,
                                    g_inet_socket_address_get_address (p->peer_addr)))
        p->trusted = TRUE; /* counted by the address in its PROXY header */
      else if (p->peer_addr != NULL
               && !pending_count_address (p, g_inet_socket_address_get_address (p->peer_addr)))
        {
          g_autofree char *ip = pending_ip (p);
          g_autofree char *why = g_strdup_printf (
            "%u connections from %s are in their handshake (maxPendingPerAddress)",
            server->config->max_pending_per_address, ip);

          p->fd = -1;
          pending_free (p);
          server_refuse_connection (server, cfd, why);
          continue;
        }
      gt_socket_set_nodelay (cfd);
      p->peer = gt_fd_describe_peer (cfd);
      p->local_addr = fd_address (cfd, FALSE);
      p->timeout_id = g_timeout_add (server_handshake_timeout_ms (server), pending_timeout_cb, p);
      g_hash_table_add (server->pending, p);
      if (p->trusted)
        p->source = gt_fd_watch_new (cfd, G_IO_IN, pending_proxy_cb, p);
      else if (l->kind == GT_LISTENER_TLS)
        pending_start_tls (p);
      else
        pending_watch (p);
    }
}

static GInetSocketAddress *
open_addr_socket (const GtOpenAddr *addr, gboolean src)
{
  g_autoptr (GInetAddress) ia = g_inet_address_new_from_bytes (
    src ? addr->src : addr->dst, addr->family == 6 ? G_SOCKET_FAMILY_IPV6 : G_SOCKET_FAMILY_IPV4);

  return G_INET_SOCKET_ADDRESS (
    g_inet_socket_address_new (ia, src ? addr->src_port : addr->dst_port));
}

void
_gt_server_adopt_node_stream (GtServer *server, int fd, GtListenerKind kind,
                              const GtOpenAddr *addr)
{
  guint max_pending = server->config->max_pending;
  Pending *p;

  if (server->stopped
      || (max_pending != 0 && g_hash_table_size (server->pending) >= max_pending))
    {
      server_refuse_connection (server, fd, "too many connections in their handshake");
      return;
    }
  p = g_new0 (Pending, 1);
  p->server = server;
  p->kind = kind;
  p->fd = fd;
  p->from_node = TRUE;
  p->started_us = g_get_monotonic_time ();
  if (addr != NULL)
    {
      g_autofree char *ip = NULL;

      p->peer_addr = open_addr_socket (addr, TRUE);
      p->local_addr = open_addr_socket (addr, FALSE);
      ip = g_inet_address_to_string (g_inet_socket_address_get_address (p->peer_addr));
      p->peer = g_strdup_printf ("%s:%u (via node)", ip, addr->src_port);
    }
  else
    p->peer = g_strdup ("(via node)");
  p->timeout_id = g_timeout_add (server_handshake_timeout_ms (server), pending_timeout_cb, p);
  g_hash_table_add (server->pending, p);
  pending_watch (p);
}

/* quicAddr: a client opened its tunnel stream; its handshake is read like any other. */
static void
listener_tunnel_cb (GIOStream *tunnel, GInetSocketAddress *peer, gpointer user_data)
{
  Listener *l = user_data;
  GtServer *server = l->server;
  guint max_pending = server->config->max_pending;
  Pending *p;

  if (max_pending != 0 && g_hash_table_size (server->pending) >= max_pending)
    {
      g_debug ("QUIC tunnel refused: %u connections are in their handshake", max_pending);
      g_io_stream_close (tunnel, NULL, NULL);
      return;
    }
  p = g_new0 (Pending, 1);
  p->server = server;
  p->kind = l->kind;
  p->fd = -1;
  p->io = g_object_ref (tunnel);
  p->ws = TRUE;
  p->started_us = g_get_monotonic_time ();
  p->peer_addr = peer != NULL ? g_object_ref (peer) : NULL;
  if (p->peer_addr != NULL
      && !pending_count_address (p, g_inet_socket_address_get_address (p->peer_addr)))
    {
      g_debug ("QUIC tunnel refused: too many handshakes from one address");
      g_io_stream_close (tunnel, NULL, NULL);
      pending_free (p);
      return;
    }
  if (peer != NULL)
    {
      g_autofree char *ip = g_inet_address_to_string (g_inet_socket_address_get_address (peer));

      p->peer = strchr (ip, ':') != NULL
                  ? g_strdup_printf ("[%s]:%u", ip, g_inet_socket_address_get_port (peer))
                  : g_strdup_printf ("%s:%u", ip, g_inet_socket_address_get_port (peer));
    }
  else
    p->peer = g_strdup ("?");
  p->timeout_id = g_timeout_add (server_handshake_timeout_ms (server), pending_timeout_cb, p);
  g_hash_table_add (server->pending, p);
  pending_watch (p);
}

static void
listener_free (Listener *l)
{
  gt_fd_watch_free (l->source);
  if (l->transport != NULL)
    gt_transport_listener_free (l->transport);
  else if (l->fd >= 0)
    close (l->fd);
  g_free (l->address);
  g_free (l);
}

static const char *
listener_note (GtListenerKind kind)
{
  switch (kind)
    {
    case GT_LISTENER_TLS: return " (TLS)";
    case GT_LISTENER_SNI: return " (TLS pass-through by SNI)";
    case GT_LISTENER_QUIC: return " (UDP, QUIC)";
    case GT_LISTENER_PLAIN:
    case GT_N_LISTENERS:
    default: return "";
    }
}

/* Opens (or takes over from systemd / the manager) the listener of one table row. */
static gboolean
server_add_listener (GtServer *server, const GtListenerInfo *info, const char *addr,
                     GError **error)
{
  int fd = gt_listen_fds_take (info->key);
  Listener *l;

  if (fd < 0)
    {
      g_autoptr (GInetSocketAddress) sa = gt_listen_address_parse (addr, error);

      if (sa == NULL)
        return FALSE;
      if (info->datagram)
        fd = gt_udp_bind_on (g_inet_socket_address_get_address (sa),
                             g_inet_socket_address_get_port (sa), error);
      else
        fd = gt_tcp_listen_on (g_inet_socket_address_get_address (sa),
                               g_inet_socket_address_get_port (sa), error);
      if (fd < 0)
        return FALSE;
    }
  else
    gt_socket_set_nonblocking (fd);

  l = g_new0 (Listener, 1);
  l->server = server;
  l->kind = info->kind;
  l->fd = fd;
  l->address = gt_fd_describe_local (fd);
  if (info->datagram)
    {
      const char *scheme = NULL;

      for (const char *const *s = gt_scheme_names (); *s != NULL && scheme == NULL; s++)
        if (gt_scheme_info_lookup (*s)->listener == info->kind)
          scheme = *s;
      if (scheme == NULL)
        {
          g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                       "%s needs a gt built with QUIC (ngtcp2; meson option quic)", info->key);
          close (fd);
          l->fd = -1;
          listener_free (l);
          return FALSE;
        }
      l->transport = gt_transport_listen (scheme, fd, server->certificate,
                                          server->config->timeout_ms, listener_tunnel_cb, l,
                                          error);
      if (l->transport == NULL)
        {
          l->fd = -1;
          listener_free (l);
          return FALSE;
        }
    }
  else
    l->source = gt_fd_watch_new (fd, G_IO_IN, listener_accept_cb, l);
  g_ptr_array_add (server->listeners, l);
  if (server->listen_address == NULL && info->kind != GT_LISTENER_SNI && !info->datagram)
    {
      g_autoptr (GInetSocketAddress) local = fd_address (fd, FALSE);

      server->listen_address = g_strdup (l->address);
      if (local != NULL)
        server->listen_inet = g_object_ref (g_inet_socket_address_get_address (local));
    }
  g_message ("listening on %s%s", l->address, listener_note (info->kind));
  return TRUE;
}

gboolean
_gt_server_listener_stop_accepting (gpointer listener)
{
  Listener *l = listener;

  if (l->transport == NULL)
    return FALSE;
  gt_transport_listener_stop_accepting (l->transport);
  return TRUE;
}

GPtrArray *
_gt_server_listeners_new (void)
{
  return g_ptr_array_new_with_free_func ((GDestroyNotify) listener_free);
}

GHashTable *
_gt_server_pending_new (void)
{
  return g_hash_table_new_full (NULL, NULL, (GDestroyNotify) pending_free, NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* TLS termination (tlsAddr) */

static gboolean
server_load_certificate (GtServer *server, GError **error)
{
  GtServerConfig *config = server->config;
  g_autofree char *cert_path = NULL;
  g_autofree char *key_path = NULL;
  g_autofree char *fingerprint = NULL;

  if (!gt_tls_backend_check (error))
    return FALSE;
  if (config->cert_file != NULL && config->key_file != NULL)
    {
      cert_path = g_strdup (config->cert_file);
      key_path = g_strdup (config->key_file);
    }
  else
    {
      /* Quick start without a CA: a self-signed certificate made once, kept next to the config. */
      g_autofree char *dir = config->config_path ? g_path_get_dirname (config->config_path)
                                                 : g_get_current_dir ();

      cert_path = g_build_filename (dir, "gt-server-cert.pem", NULL);
      key_path = g_build_filename (dir, "gt-server-key.pem", NULL);
      if (!g_file_test (cert_path, G_FILE_TEST_EXISTS)
          || !g_file_test (key_path, G_FILE_TEST_EXISTS))
        {
          const char *names[] = { "localhost", "127.0.0.1", "::1", g_get_host_name (), NULL };

          if (!gt_certificate_generate (cert_path, key_path, names, error))
            return FALSE;
          g_message ("generated a self-signed certificate: %s", cert_path);
        }
    }
  server->certificate = g_tls_certificate_new_from_files (cert_path, key_path, error);
  if (server->certificate == NULL)
    return FALSE;
  fingerprint = gt_certificate_fingerprint (server->certificate);
  g_message ("TLS certificate %s, fingerprint %s (clients may pin it with remoteCert: %s)",
             cert_path, fingerprint, fingerprint);
  return TRUE;
}


gboolean
_gt_server_open_listeners (GtServer *server, GError **error)
{
  const GtServerConfig *config = server->config;
  gboolean tls = FALSE;

  for (guint k = 0; k < GT_N_LISTENERS; k++)
    if (gt_listener_get_addr (config, k) != NULL && gt_listener_info (k)->terminates_tls)
      tls = TRUE;
  if (tls)
    {
      /* The CLI set it at start; this checks the version (and sets it when nobody did). */
      if (!gt_transport_tls_init (config->tls_version, error))
        return FALSE;
      if (!server_load_certificate (server, error))
        return FALSE;
    }
  for (guint k = 0; k < GT_N_LISTENERS; k++)
    {
      const char *addr = gt_listener_get_addr (config, k);

      if (addr != NULL && !server_add_listener (server, gt_listener_info (k), addr, error))
        return FALSE;
    }
  if (server->listen_inet == NULL && server->listeners->len > 0)
    {
      /* Only an SNI listener: tcp services bind on its address. */
      Listener *l = server->listeners->pdata[0];
      g_autoptr (GInetSocketAddress) local = fd_address (l->fd, FALSE);

      if (local != NULL)
        server->listen_inet = g_object_ref (g_inet_socket_address_get_address (local));
    }
  return TRUE;
}
