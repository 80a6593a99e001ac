/* test-ws-stream.c: WebSocket tunnel streams: SoupServer and raw accept, 8 MiB both ways, wss. */
#include "config.h"

#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <libsoup/soup.h>

#include "gt-certificate.h"
#include "gt-http-proxy.h"
#include "gt-ws-stream.h"

#define READ_SIZE (320 * 1024)

/* ------------------------------------------------------------------------------------------ */
/* A peer drives a tunnel stream the way the multiplexer does: read_nonblocking and
 * writev_nonblocking from pollable sources. It sends send_len bytes and checks what it receives. */

typedef struct _Peer
{
  const char *name;
  GIOStream *io;
  GPollableInputStream *in;
  GPollableOutputStream *out;
  const guint8 *send_data;
  gsize send_len;
  gsize sent;
  const guint8 *expect_data;
  gsize expect_len;
  gsize received;
  GSource *in_source;
  GSource *out_source;
  guint8 *buf;
  gboolean eof;
  GError *error;
  guint would_block;
  gsize pause_at; /* stop reading for a while once this much arrived (0 = never) */
  gboolean paused;
  guint resume_id;
  struct _Peer *other;     /* checked when a pause ends */
  gboolean other_held_back; /* other's output was not writable then */
} Peer;

static void peer_arm_input (Peer *p);

static Peer *
peer_new (const char *name, const guint8 *send_data, gsize send_len, const guint8 *expect_data,
          gsize expect_len)
{
  Peer *p = g_new0 (Peer, 1);

  p->name = name;
  p->send_data = send_data;
  p->send_len = send_len;
  p->expect_data = expect_data;
  p->expect_len = expect_len;
  p->buf = g_malloc (READ_SIZE);
  return p;
}

static void
peer_stop_sources (Peer *p)
{
  if (p->in_source)
    {
      g_source_destroy (p->in_source);
      g_clear_pointer (&p->in_source, g_source_unref);
    }
  if (p->out_source)
    {
      g_source_destroy (p->out_source);
      g_clear_pointer (&p->out_source, g_source_unref);
    }
  g_clear_handle_id (&p->resume_id, g_source_remove);
}

static void
peer_free (Peer *p)
{
  peer_stop_sources (p);
  g_clear_object (&p->io);
  g_clear_error (&p->error);
  g_free (p->buf);
  g_free (p);
}

static gboolean
peer_done (Peer *p)
{
  return p->sent == p->send_len && p->received == p->expect_len;
}

static gboolean
peer_resume_cb (gpointer data)
{
  Peer *p = data;

  p->resume_id = 0;
  p->paused = FALSE;
  /* The writer had more to send while nobody read: it must be held back by now. */
  if (p->other != NULL && p->other->sent < p->other->send_len)
    p->other_held_back = !g_pollable_output_stream_is_writable (p->other->out);
  peer_arm_input (p);
  return G_SOURCE_REMOVE;
}

static gboolean
peer_readable_cb (GObject *stream, gpointer data)
{
  Peer *p = data;
  g_autoptr (GError) error = NULL;
  gssize n;

  n = g_pollable_input_stream_read_nonblocking (p->in, p->buf, READ_SIZE, NULL, &error);
  if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
    return G_SOURCE_CONTINUE;
  if (n < 0)
    {
      p->error = g_steal_pointer (&error);
      g_clear_pointer (&p->in_source, g_source_unref);
      return G_SOURCE_REMOVE;
    }
  if (n == 0)
    {
      p->eof = TRUE;
      g_clear_pointer (&p->in_source, g_source_unref);
      return G_SOURCE_REMOVE;
    }
  if ((gsize) n > p->expect_len - p->received)
    g_error ("%s: received %" G_GSSIZE_FORMAT " bytes more than expected (at %" G_GSIZE_FORMAT
             ", read %" G_GSSIZE_FORMAT ")",
             p->name, n - (gssize) (p->expect_len - p->received), p->received, n);
  if (memcmp (p->buf, p->expect_data + p->received, n) != 0)
    g_error ("%s: data mismatch in bytes %" G_GSIZE_FORMAT "..+%" G_GSSIZE_FORMAT, p->name,
             p->received, n);
  p->received += n;
  if (p->pause_at > 0 && p->received >= p->pause_at && !p->paused)
    {
      p->paused = TRUE;
      p->pause_at = 0;
      p->resume_id = g_timeout_add (500, peer_resume_cb, p);
      g_clear_pointer (&p->in_source, g_source_unref);
      return G_SOURCE_REMOVE;
    }
  return G_SOURCE_CONTINUE;
}

static gboolean
peer_writable_cb (GObject *stream, gpointer data)
{
  Peer *p = data;
  g_autoptr (GError) error = NULL;
  GOutputVector v[2];
  gsize left = p->send_len - p->sent;
  gsize want = g_random_int_range (1, 300 * 1024); /* MIN evaluates its arguments twice */
  gsize chunk = MIN (left, want);
  gsize want_first = g_random_int_range (0, 64 * 1024);
  gsize first = MIN (chunk, want_first);
  gsize written = 0;
  GPollableReturn r;

  if (left == 0)
    {
      g_clear_pointer (&p->out_source, g_source_unref);
      return G_SOURCE_REMOVE;
    }
  /* Two vectors, the first possibly empty, as the multiplexer may pass. */
  v[0].buffer = p->send_data + p->sent;
  v[0].size = first;
  v[1].buffer = p->send_data + p->sent + first;
  v[1].size = chunk - first;
  r = g_pollable_output_stream_writev_nonblocking (p->out, v, 2, &written, NULL, &error);
  if (r == G_POLLABLE_RETURN_WOULD_BLOCK)
    {
      p->would_block++;
      return G_SOURCE_CONTINUE;
    }
  if (r == G_POLLABLE_RETURN_FAILED)
    {
      p->error = g_steal_pointer (&error);
      g_clear_pointer (&p->out_source, g_source_unref);
      return G_SOURCE_REMOVE;
    }
  g_assert_cmpuint (written, >, 0);
  g_assert_cmpuint (written, <=, GT_WS_MAX_MESSAGE);
  g_assert_cmpuint (written, <=, chunk);
  p->sent += written;
  if (p->sent == p->send_len)
    {
      g_clear_pointer (&p->out_source, g_source_unref);
      return G_SOURCE_REMOVE;
    }
  return G_SOURCE_CONTINUE;
}

static void
peer_arm_input (Peer *p)
{
  if (p->in_source != NULL)
    return;
  p->in_source = g_pollable_input_stream_create_source (p->in, NULL);
  g_source_set_callback (p->in_source, (GSourceFunc) (void (*) (void)) peer_readable_cb, p, NULL);
  g_source_attach (p->in_source, NULL);
}

static void
peer_start (Peer *p, GIOStream *io)
{
  p->io = g_object_ref (io);
  g_assert_true (G_IS_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (io)));
  g_assert_true (G_IS_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (io)));
  p->in = G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (io));
  p->out = G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (io));
  g_assert_true (g_pollable_input_stream_can_poll (p->in));
  g_assert_true (g_pollable_output_stream_can_poll (p->out));
  peer_arm_input (p);
  if (p->send_len > 0)
    {
      p->out_source = g_pollable_output_stream_create_source (p->out, NULL);
      g_source_set_callback (p->out_source, (GSourceFunc) (void (*) (void)) peer_writable_cb, p,
                             NULL);
      g_source_attach (p->out_source, NULL);
    }
}

static gboolean
timeout_cb (gpointer data)
{
  gboolean *flag = data;

  *flag = TRUE;
  return G_SOURCE_REMOVE;
}

/* Iterates the main context until cond(data) or the timeout; returns cond(data). */
static gboolean
spin_until (gboolean (*cond) (gpointer), gpointer data, guint timeout_ms)
{
  gboolean timed_out = FALSE;
  guint id = g_timeout_add (timeout_ms, timeout_cb, &timed_out);

  while (!cond (data) && !timed_out)
    g_main_context_iteration (NULL, TRUE);
  if (!timed_out)
    g_source_remove (id);
  return cond (data);
}

static gboolean
always_false (gpointer data)
{
  return FALSE;
}

static void
spin_for (guint ms)
{
  spin_until (always_false, NULL, ms);
}

static guint8 *
random_bytes (gsize len, guint32 seed)
{
  g_autoptr (GRand) rand = g_rand_new_with_seed (seed);
  guint8 *data = g_malloc (len);

  for (gsize i = 0; i < len; i += 4)
    {
      guint32 r = g_rand_int (rand);

      memcpy (data + i, &r, MIN (4, len - i));
    }
  return data;
}

/* ------------------------------------------------------------------------------------------ */
/* Client helper */

typedef struct
{
  GIOStream *io;
  GError *error;
  gboolean done;
} ConnectResult;

static void
connect_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  ConnectResult *r = user_data;

  r->io = gt_ws_connect_finish (result, &r->error);
  r->done = TRUE;
}

static gboolean
connect_done (gpointer data)
{
  return ((ConnectResult *) data)->done;
}

static GIOStream *
ws_connect (const char *url, GTlsDatabase *db, const char *pin, gboolean insecure,
            GProxyResolver *proxy, GError **error)
{
  ConnectResult r = { NULL, NULL, FALSE };

  gt_ws_connect_async (url, db, pin, insecure, proxy, NULL, connect_cb, &r);
  g_assert_true (spin_until (connect_done, &r, 20000));
  if (r.error != NULL)
    g_propagate_error (error, r.error);
  return r.io;
}

/* ------------------------------------------------------------------------------------------ */
/* Test 1: interop with libsoup's own WebSocket (SoupServer handler), our framer on the client */

typedef struct
{
  SoupWebsocketConnection *raw; /* the server's connection */
  gboolean send_text;
  gushort close_code;
  gboolean closed;
  /* binary messages checked against expect, and send_len bytes sent in messages of mixed sizes */
  const guint8 *expect;
  gsize expect_len;
  gsize received;
  const guint8 *send;
  gsize send_len;
  guint messages;
  gboolean mismatch;
} SoupFixture;

static void
soup_closed_cb (SoupWebsocketConnection *ws, gpointer data)
{
  SoupFixture *f = data;

  f->close_code = soup_websocket_connection_get_close_code (ws);
  f->closed = TRUE;
}

static void
soup_message_cb (SoupWebsocketConnection *ws, gint type, GBytes *message, gpointer data)
{
  SoupFixture *f = data;
  gsize len;
  const guint8 *bytes = g_bytes_get_data (message, &len);

  f->messages++;
  if (type != SOUP_WEBSOCKET_DATA_BINARY || len > f->expect_len - f->received
      || memcmp (bytes, f->expect + f->received, len) != 0)
    f->mismatch = TRUE;
  else
    f->received += len;
}

static void
soup_ws_handler (SoupServer *server, SoupServerMessage *msg, const char *path,
                 SoupWebsocketConnection *ws, gpointer data)
{
  SoupFixture *f = data;
  gsize off = 0;

  f->raw = g_object_ref (ws);
  g_signal_connect (ws, "closed", G_CALLBACK (soup_closed_cb), f);
  g_signal_connect (ws, "message", G_CALLBACK (soup_message_cb), f);
  soup_websocket_connection_set_max_incoming_payload_size (ws, 1024 * 1024);
  if (f->send_text)
    {
      soup_websocket_connection_send_text (ws, "hello");
      return;
    }
  /* libsoup's pings and empty messages must pass unnoticed. */
  soup_websocket_connection_set_keepalive_interval (ws, 1);
  soup_websocket_connection_send_binary (ws, "", 0);
  while (off < f->send_len)
    {
      gsize want = g_random_int_range (1, 200 * 1024); /* MIN evaluates its arguments twice */
      gsize n = MIN (f->send_len - off, want);

      soup_websocket_connection_send_binary (ws, f->send + off, n);
      off += n;
    }
}

/* Connections are accepted by a GSocketService and handed over with soup_server_accept_iostream:
 * soup_server_listen_local in libsoup 3.2 leaks its local address and each accepted GSocket. */
static gboolean
soup_incoming_cb (GSocketService *service, GSocketConnection *conn, GObject *source,
                  gpointer data)
{
  SoupServer *server = data;
  g_autoptr (GSocketAddress) local = g_socket_connection_get_local_address (conn, NULL);
  g_autoptr (GSocketAddress) remote = g_socket_connection_get_remote_address (conn, NULL);
  g_autoptr (GError) error = NULL;

  g_assert_true (soup_server_accept_iostream (server, G_IO_STREAM (conn), local, remote, &error));
  g_assert_no_error (error);
  return TRUE;
}

static SoupServer *
soup_server_start (SoupFixture *f, guint16 *port, GSocketService **service_out)
{
  SoupServer *server = soup_server_new (NULL, NULL);
  GSocketService *service = g_socket_service_new ();
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) addr = g_inet_socket_address_new (lo, 0);
  g_autoptr (GSocketAddress) effective = NULL;
  g_autoptr (GError) error = NULL;

  soup_server_add_websocket_handler (server, "/tunnel", NULL, NULL, soup_ws_handler, f, NULL);
  g_socket_listener_add_address (G_SOCKET_LISTENER (service), addr, G_SOCKET_TYPE_STREAM,
                                 G_SOCKET_PROTOCOL_TCP, NULL, &effective, &error);
  g_assert_no_error (error);
  *port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (effective));
  g_signal_connect (service, "incoming", G_CALLBACK (soup_incoming_cb), server);
  g_socket_service_start (service);
  *service_out = service;
  return server;
}

static void
soup_server_stop (GSocketService *service)
{
  g_socket_service_stop (service);
  g_socket_listener_close (G_SOCKET_LISTENER (service));
  g_object_unref (service);
}

static gboolean
both_done (gpointer data)
{
  Peer **peers = data;

  return (peer_done (peers[0]) && peer_done (peers[1])) || peers[0]->error || peers[1]->error
         || peers[0]->eof || peers[1]->eof;
}

static gboolean
peer_eof_or_error (gpointer data)
{
  Peer *p = data;

  return p->eof || p->error != NULL;
}

static gboolean
soup_closed (gpointer data)
{
  return ((SoupFixture *) data)->closed;
}

typedef struct
{
  Peer *client;
  SoupFixture *f;
} SoupPair;

static gboolean
soup_pair_done (gpointer data)
{
  SoupPair *p = data;

  return (peer_done (p->client) && p->f->received == p->f->expect_len) || p->client->error
         || p->client->eof || p->f->mismatch || p->f->closed;
}

static void
test_soup_server (void)
{
  const gsize len = 2 * 1024 * 1024;
  g_autofree guint8 *up = random_bytes (len, 1);
  g_autofree guint8 *down = random_bytes (len, 2);
  SoupFixture f = { 0 };
  g_autoptr (SoupServer) server = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *url = NULL;
  GSocketService *service;
  GIOStream *io;
  Peer *client;
  SoupPair pair;
  guint16 port;

  f.expect = up;
  f.expect_len = len;
  f.send = down;
  f.send_len = len;
  client = peer_new ("client", up, len, down, len);
  server = soup_server_start (&f, &port, &service);
  url = g_strdup_printf ("ws://127.0.0.1:%u/tunnel", port);

  io = ws_connect (url, NULL, NULL, FALSE, NULL, &error);
  g_assert_no_error (error);
  peer_start (client, io);
  g_object_unref (io);

  pair.client = client;
  pair.f = &f;
  g_assert_true (spin_until (soup_pair_done, &pair, 30000));
  g_assert_no_error (client->error);
  g_assert_false (f.mismatch);
  g_assert_false (f.closed);
  g_assert_true (peer_done (client));
  g_assert_cmpuint (f.received, ==, len);
  /* Our frames are whole messages of at most GT_WS_MAX_MESSAGE bytes. */
  g_assert_cmpuint (f.messages, >=, len / GT_WS_MAX_MESSAGE);
  /* libsoup's keepalive pings (every second) were answered: the connection is still open. */
  spin_for (1500);
  g_assert_false (f.closed);
  g_assert_cmpint (soup_websocket_connection_get_state (f.raw), ==, SOUP_WEBSOCKET_STATE_OPEN);

  /* Closing the client's stream closes the WebSocket with code 1000. */
  g_io_stream_close (client->io, NULL, NULL);
  g_assert_true (spin_until (soup_closed, &f, 10000));
  g_assert_cmpuint (f.close_code, ==, SOUP_WEBSOCKET_CLOSE_NORMAL);

  /* Writes after the close fail. */
  {
    gsize written = 0;
    GOutputVector v = { "x", 1 };

    g_assert_cmpint (g_pollable_output_stream_writev_nonblocking (client->out, &v, 1, &written,
                                                                   NULL, &error),
                     ==, G_POLLABLE_RETURN_FAILED);
    g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CLOSED);
  }

  peer_free (client);
  g_clear_object (&f.raw);
  spin_for (100);
  soup_server_stop (service);
}

static void
test_text_message (void)
{
  SoupFixture f = { 0 };
  g_autoptr (SoupServer) server = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *url = NULL;
  GSocketService *service;
  GIOStream *io;
  Peer *client;
  guint16 port;

  f.send_text = TRUE;
  client = peer_new ("client", NULL, 0, NULL, 0);
  server = soup_server_start (&f, &port, &service);
  url = g_strdup_printf ("ws://127.0.0.1:%u/tunnel", port);
  io = ws_connect (url, NULL, NULL, FALSE, NULL, &error);
  g_assert_no_error (error);
  peer_start (client, io);
  g_object_unref (io);

  g_assert_true (spin_until (peer_eof_or_error, client, 10000));
  g_assert_error (client->error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
  g_assert_true (spin_until (soup_closed, &f, 10000));
  g_assert_cmpuint (f.close_code, ==, SOUP_WEBSOCKET_CLOSE_UNSUPPORTED_DATA);

  peer_free (client);
  g_clear_object (&f.raw);
  spin_for (100);
  soup_server_stop (service);
}

/* ------------------------------------------------------------------------------------------ */
/* A raw server: GSocketService, optional TLS, head read by the test, gt_ws_server_accept */

typedef struct
{
  GSocketService *service;
  guint16 port;
  GTlsCertificate *cert;
  Peer *peer;
  GIOStream *conn;
  GError *error; /* TLS handshake or accept failure */
  gboolean failed;
  gboolean small_buffers; /* so that back-pressure shows quickly */
} RawServer;

static void
raw_head_cb (GObject *source, GAsyncResult *result, gpointer data)
{
  RawServer *s = data;
  g_autoptr (GBytes) head = NULL;
  g_autoptr (GIOStream) ws = NULL;
  gsize len;
  const guint8 *bytes;

  head = gt_http_read_head_finish (result, &s->error);
  if (head == NULL)
    {
      s->failed = TRUE;
      return;
    }
  bytes = g_bytes_get_data (head, &len);
  if (!gt_ws_is_upgrade_request (bytes, len, "/tunnel"))
    {
      const char *reply = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";

      g_output_stream_write_all (g_io_stream_get_output_stream (s->conn), reply, strlen (reply),
                                 NULL, NULL, NULL);
      g_io_stream_close (s->conn, NULL, NULL);
      s->failed = TRUE;
      return;
    }
  ws = gt_ws_server_accept (s->conn, bytes, len, &s->error);
  if (ws == NULL)
    {
      s->failed = TRUE;
      return;
    }
  peer_start (s->peer, ws);
}

static void
raw_handshake_cb (GObject *source, GAsyncResult *result, gpointer data)
{
  RawServer *s = data;

  if (!g_tls_connection_handshake_finish (G_TLS_CONNECTION (source), result, &s->error))
    {
      s->failed = TRUE;
      return;
    }
  gt_http_read_head_async (s->conn, 8192, NULL, raw_head_cb, s);
}

static gboolean
raw_incoming_cb (GSocketService *service, GSocketConnection *conn, GObject *source, gpointer data)
{
  RawServer *s = data;

  g_clear_object (&s->conn);
  g_clear_error (&s->error);
  s->failed = FALSE;
  if (s->small_buffers)
    {
      GSocket *socket = g_socket_connection_get_socket (conn);

      g_assert_true (g_socket_set_option (socket, SOL_SOCKET, SO_RCVBUF, 64 * 1024, NULL));
      g_assert_true (g_socket_set_option (socket, SOL_SOCKET, SO_SNDBUF, 64 * 1024, NULL));
    }
  if (s->cert != NULL)
    {
      s->conn = g_tls_server_connection_new (G_IO_STREAM (conn), s->cert, &s->error);
      g_assert_no_error (s->error);
      g_tls_connection_handshake_async (G_TLS_CONNECTION (s->conn), G_PRIORITY_DEFAULT, NULL,
                                        raw_handshake_cb, s);
    }
  else
    {
      s->conn = g_object_ref (G_IO_STREAM (conn));
      gt_http_read_head_async (s->conn, 8192, NULL, raw_head_cb, s);
    }
  return TRUE;
}

static RawServer *
raw_server_new (GTlsCertificate *cert)
{
  RawServer *s = g_new0 (RawServer, 1);
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) addr = g_inet_socket_address_new (lo, 0);
  g_autoptr (GSocketAddress) effective = NULL;
  g_autoptr (GError) error = NULL;

  s->cert = cert ? g_object_ref (cert) : NULL;
  s->service = g_socket_service_new ();
  g_socket_listener_add_address (G_SOCKET_LISTENER (s->service), addr, G_SOCKET_TYPE_STREAM,
                                 G_SOCKET_PROTOCOL_TCP, NULL, &effective, &error);
  g_assert_no_error (error);
  s->port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (effective));
  g_signal_connect (s->service, "incoming", G_CALLBACK (raw_incoming_cb), s);
  g_socket_service_start (s->service);
  return s;
}

static void
raw_server_free (RawServer *s)
{
  g_socket_service_stop (s->service);
  g_socket_listener_close (G_SOCKET_LISTENER (s->service));
  g_clear_object (&s->service);
  g_clear_object (&s->conn);
  g_clear_object (&s->cert);
  g_clear_error (&s->error);
  g_free (s);
}

static void
test_raw_8mib (void)
{
  const gsize len = 8 * 1024 * 1024;
  g_autofree guint8 *up = random_bytes (len, 3);
  g_autofree guint8 *down = random_bytes (len, 4);
  RawServer *s = raw_server_new (NULL);
  g_autoptr (GError) error = NULL;
  g_autofree char *url = NULL;
  GIOStream *io;
  Peer *client;
  Peer *peers[2];

  s->small_buffers = TRUE;
  s->peer = peer_new ("server", down, len, up, len);
  client = peer_new ("client", up, len, down, len);
  /* Both readers pause once: the writers must then see back-pressure, not an overflow. */
  client->pause_at = 1024 * 1024;
  s->peer->pause_at = 256 * 1024;
  client->other = s->peer;
  s->peer->other = client;

  url = g_strdup_printf ("ws://127.0.0.1:%u/tunnel?x=1", s->port);
  io = ws_connect (url, NULL, NULL, FALSE, NULL, &error);
  g_assert_no_error (error);
  peer_start (client, io);
  g_object_unref (io);

  peers[0] = client;
  peers[1] = s->peer;
  g_assert_true (spin_until (both_done, peers, 60000));
  g_assert_no_error (client->error);
  g_assert_no_error (s->peer->error);
  g_assert_false (client->eof);
  g_assert_false (s->peer->eof);
  g_assert_cmpuint (client->received, ==, len);
  g_assert_cmpuint (s->peer->received, ==, len);
  g_assert_true (client->other_held_back);
  g_assert_true (s->peer->other_held_back);

  /* The server closes this time. */
  g_io_stream_close (s->peer->io, NULL, NULL);
  g_assert_true (spin_until (peer_eof_or_error, client, 10000));
  g_assert_no_error (client->error);
  g_assert_true (client->eof);

  peer_free (client);
  peer_free (s->peer);
  spin_for (100);
  raw_server_free (s);
}

/* ------------------------------------------------------------------------------------------ */
/* Handshake validation over a socketpair */

static void
socket_pair (GIOStream **server, int *client_fd)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocket) socket = NULL;
  int fds[2];

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0);
  socket = g_socket_new_from_fd (fds[0], &error);
  g_assert_no_error (error);
  *server = G_IO_STREAM (g_socket_connection_factory_create_connection (socket));
  *client_fd = fds[1];
}

static char *
read_response (int fd)
{
  GString *s = g_string_new (NULL);
  char buf[1024];
  ssize_t n;

  /* The server end is closed (or the head is complete) before this is called. */
  while ((n = recv (fd, buf, sizeof buf, MSG_DONTWAIT)) > 0)
    g_string_append_len (s, buf, n);
  return g_string_free (s, FALSE);
}

#define GOOD_KEY "dGhlIHNhbXBsZSBub25jZQ=="

static void
test_accept_valid (void)
{
  const char *head = "GET /tunnel HTTP/1.1\r\n"
                     "Host: gt.example\r\n"
                     "Upgrade: WebSocket\r\n"
                     "Connection: keep-alive, Upgrade\r\n"
                     "Sec-WebSocket-Key: " GOOD_KEY "\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "\r\n";
  g_autoptr (GIOStream) server = NULL;
  g_autoptr (GIOStream) ws = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *response = NULL;
  int fd;

  socket_pair (&server, &fd);
  ws = gt_ws_server_accept (server, (const guint8 *) head, strlen (head), &error);
  g_assert_no_error (error);
  g_assert_nonnull (ws);
  response = read_response (fd);
  g_assert_true (g_str_has_prefix (response, "HTTP/1.1 101 Switching Protocols\r\n"));
  /* RFC 6455 section 1.3's example. */
  g_assert_nonnull (
    strstr (response, "\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
  g_assert_true (g_str_has_suffix (response, "\r\n\r\n"));
  close (fd);
  g_io_stream_close (ws, NULL, NULL);
  g_clear_object (&ws);
  spin_for (50);
}

static void
assert_rejected (const char *head, const char *needle)
{
  g_autoptr (GIOStream) server = NULL;
  g_autoptr (GIOStream) ws = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *response = NULL;
  int fd;

  socket_pair (&server, &fd);
  ws = gt_ws_server_accept (server, (const guint8 *) head, strlen (head), &error);
  g_assert_null (ws);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
  response = read_response (fd);
  if (!g_str_has_prefix (response, "HTTP/1.1 400 Bad Request\r\n"))
    g_error ("for head %s: response %s", head, response);
  if (needle != NULL && strstr (response, needle) == NULL)
    g_error ("'%s' not in response %s", needle, response);
  close (fd);
}

static void
test_accept_bad (void)
{
#define H(method, version, upgrade, connection, key, wsver)                                       \
  method " /tunnel " version "\r\nHost: x\r\n" upgrade connection key wsver "\r\n"
#define UP "Upgrade: websocket\r\n"
#define CONN "Connection: Upgrade\r\n"
#define KEY "Sec-WebSocket-Key: " GOOD_KEY "\r\n"
#define VER "Sec-WebSocket-Version: 13\r\n"

  assert_rejected (H ("POST", "HTTP/1.1", UP, CONN, KEY, VER), "GET");
  assert_rejected (H ("GET", "HTTP/1.0", UP, CONN, KEY, VER), "HTTP/1.1");
  assert_rejected (H ("GET", "HTTP/1.1", "", CONN, KEY, VER), "Upgrade");
  assert_rejected (H ("GET", "HTTP/1.1", "Upgrade: h2c\r\n", CONN, KEY, VER), "Upgrade");
  assert_rejected (H ("GET", "HTTP/1.1", UP, "", KEY, VER), "Connection");
  assert_rejected (H ("GET", "HTTP/1.1", UP, "Connection: close\r\n", KEY, VER), "Connection");
  assert_rejected (H ("GET", "HTTP/1.1", UP, CONN, KEY, ""), "Sec-WebSocket-Version: 13");
  assert_rejected (H ("GET", "HTTP/1.1", UP, CONN, KEY, "Sec-WebSocket-Version: 8\r\n"),
                   "Sec-WebSocket-Version: 13");
  assert_rejected (H ("GET", "HTTP/1.1", UP, CONN, "", VER), "Key");
  /* 15 bytes, 17 bytes, not base64, non-zero padding bits */
  assert_rejected (H ("GET", "HTTP/1.1", UP, CONN, "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n",
                      VER),
                   "Key");
  assert_rejected (H ("GET", "HTTP/1.1", UP, CONN,
                      "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=\r\n", VER),
                   "Key");
  assert_rejected (H ("GET", "HTTP/1.1", UP, CONN,
                      "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA*A==\r\n", VER),
                   "Key");
  assert_rejected (H ("GET", "HTTP/1.1", UP, CONN,
                      "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAB==\r\n", VER),
                   "Key");
  assert_rejected ("\x16\x03\x01garbage\r\n\r\n", NULL);
  assert_rejected ("GET\r\n\r\n", NULL);
  {
    g_autoptr (GIOStream) server = NULL;
    g_autoptr (GError) error = NULL;
    int fd;

    socket_pair (&server, &fd);
    g_assert_null (gt_ws_server_accept (server, (const guint8 *) "", 0, &error));
    g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
    close (fd);
  }
#undef H
#undef UP
#undef CONN
#undef KEY
#undef VER
}

static void
test_is_upgrade (void)
{
  const char *good = "GET /tunnel?a=b HTTP/1.1\r\nHost: x\r\nupgrade:  WebSocket\r\n\r\n";
  const char *plain = "GET /tunnel HTTP/1.1\r\nHost: x\r\n\r\n";
  const char *post = "POST /tunnel HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
  const char *other = "GET /tunnelx HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
  const char *h2c = "GET /tunnel HTTP/1.1\r\nUpgrade: h2c\r\n\r\n";

#define U(s, path) gt_ws_is_upgrade_request ((const guint8 *) (s), strlen (s), path)
  g_assert_true (U (good, "/tunnel"));
  g_assert_true (U (good, NULL));
  g_assert_false (U (good, "/"));
  g_assert_false (U (plain, "/tunnel"));
  g_assert_false (U (post, "/tunnel"));
  g_assert_false (U (other, "/tunnel"));
  g_assert_false (U (h2c, "/tunnel"));
  g_assert_false (gt_ws_is_upgrade_request ((const guint8 *) good, 10, NULL));
  g_assert_false (gt_ws_is_upgrade_request (NULL, 0, NULL));
#undef U
}

static void
test_connect_errors (void)
{
  RawServer *s = raw_server_new (NULL);
  g_autoptr (GError) e1 = NULL;
  g_autoptr (GError) e2 = NULL;
  g_autoptr (GError) e3 = NULL;
  g_autoptr (GError) e4 = NULL;
  g_autofree char *url = g_strdup_printf ("ws://127.0.0.1:%u/other", s->port);

  g_assert_null (ws_connect ("http://127.0.0.1/", NULL, NULL, FALSE, NULL, &e1));
  g_assert_error (e1, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
  g_assert_null (ws_connect ("wss://127.0.0.1/", NULL, "sha256:1234", FALSE, NULL, &e2));
  g_assert_error (e2, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);

  /* The raw server answers a request for another path with 404. */
  s->peer = peer_new ("server", NULL, 0, NULL, 0);
  g_assert_null (ws_connect (url, NULL, NULL, FALSE, NULL, &e3));
  g_assert_nonnull (e3);
  g_assert_error (e3, G_IO_ERROR, G_IO_ERROR_FAILED);
  g_assert_nonnull (strstr (e3->message, "refused: HTTP/1.1 404 Not Found"));
  peer_free (s->peer);

  /* Nothing listening. */
  {
    guint16 port = s->port;
    g_autofree char *closed = NULL;

    raw_server_free (s);
    closed = g_strdup_printf ("ws://127.0.0.1:%u/tunnel", port);
    g_assert_null (ws_connect (closed, NULL, NULL, FALSE, NULL, &e4));
    g_assert_nonnull (e4);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* wss */

typedef struct
{
  char *dir;
  char *cert_path;
  char *key_path;
  GTlsCertificate *cert;
  RawServer *server;
} TlsFixture;

static void
tls_setup (TlsFixture *f, gconstpointer data)
{
  static const char *const names[] = { "localhost", "127.0.0.1", NULL };
  g_autoptr (GError) error = NULL;

  f->dir = g_dir_make_tmp ("gt-wss-XXXXXX", &error);
  g_assert_no_error (error);
  f->cert_path = g_build_filename (f->dir, "cert.pem", NULL);
  f->key_path = g_build_filename (f->dir, "key.pem", NULL);
  g_assert_true (gt_certificate_generate (f->cert_path, f->key_path, names, &error));
  g_assert_no_error (error);
  f->cert = g_tls_certificate_new_from_files (f->cert_path, f->key_path, &error);
  g_assert_no_error (error);
  f->server = raw_server_new (f->cert);
}

static void
tls_teardown (TlsFixture *f, gconstpointer data)
{
  raw_server_free (f->server);
  g_clear_object (&f->cert);
  g_unlink (f->cert_path);
  g_unlink (f->key_path);
  g_rmdir (f->dir);
  g_free (f->cert_path);
  g_free (f->key_path);
  g_free (f->dir);
}

/* Connects and exchanges 256 KiB each way; returns the connect error, if any. */
static GError *
wss_exchange (TlsFixture *f, const char *host, GTlsDatabase *db, const char *pin,
              gboolean insecure)
{
  const gsize len = 256 * 1024;
  g_autofree guint8 *up = random_bytes (len, 5);
  g_autofree guint8 *down = random_bytes (len, 6);
  g_autofree char *url = g_strdup_printf ("wss://%s:%u/tunnel", host, f->server->port);
  GError *error = NULL;
  GIOStream *io;
  Peer *client;
  Peer *peers[2];

  f->server->peer = peer_new ("server", down, len, up, len);
  client = peer_new ("client", up, len, down, len);
  io = ws_connect (url, db, pin, insecure, NULL, &error);
  if (io == NULL)
    {
      peer_free (client);
      /* Let the server side see the failed handshake before its peer goes. */
      spin_for (50);
      peer_free (f->server->peer);
      f->server->peer = NULL;
      return error;
    }
  g_assert_true (G_IS_TLS_CONNECTION (f->server->conn));
  peer_start (client, io);
  g_object_unref (io);
  peers[0] = client;
  peers[1] = f->server->peer;
  g_assert_true (spin_until (both_done, peers, 30000));
  g_assert_no_error (client->error);
  g_assert_no_error (f->server->peer->error);
  g_assert_true (peer_done (client));
  g_assert_true (peer_done (f->server->peer));
  g_io_stream_close (client->io, NULL, NULL);
  g_assert_true (spin_until (peer_eof_or_error, f->server->peer, 10000));
  peer_free (client);
  peer_free (f->server->peer);
  f->server->peer = NULL;
  spin_for (50);
  return NULL;
}

static void
test_wss_ca (TlsFixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GTlsDatabase) db = g_tls_file_database_new (f->cert_path, &error);
  g_autoptr (GError) e1 = NULL;
  g_autoptr (GError) e2 = NULL;

  g_assert_no_error (error);
  e1 = wss_exchange (f, "127.0.0.1", db, NULL, FALSE);
  g_assert_no_error (e1);
  e2 = wss_exchange (f, "localhost", db, NULL, FALSE);
  g_assert_no_error (e2);
}

static void
test_wss_untrusted (TlsFixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *fp = gt_certificate_fingerprint (f->cert);

  /* System CAs do not know the generated certificate. */
  error = wss_exchange (f, "127.0.0.1", NULL, NULL, FALSE);
  g_assert_error (error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE);
  g_assert_nonnull (strstr (error->message, "not trusted"));
  g_assert_nonnull (strstr (error->message, fp));
}

static void
test_wss_pin (TlsFixture *f, gconstpointer data)
{
  g_autofree char *fp = gt_certificate_fingerprint (f->cert);
  g_autofree char *wrong = g_strdup (fp);
  g_autoptr (GError) e1 = NULL;
  g_autoptr (GError) e2 = NULL;
  g_autoptr (GError) e3 = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GTlsDatabase) db = g_tls_file_database_new (f->cert_path, &error);

  g_assert_no_error (error);
  wrong[strlen (wrong) - 1] = wrong[strlen (wrong) - 1] == 'a' ? 'b' : 'a';

  e1 = wss_exchange (f, "127.0.0.1", NULL, fp, FALSE);
  g_assert_no_error (e1);
  e2 = wss_exchange (f, "127.0.0.1", NULL, wrong, FALSE);
  g_assert_error (e2, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE);
  g_assert_nonnull (strstr (e2->message, "pinned"));
  /* Trusted by the CA file but not the pinned one: the pin still decides. */
  e3 = wss_exchange (f, "127.0.0.1", db, wrong, FALSE);
  g_assert_error (e3, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE);
}

static void
test_wss_insecure (TlsFixture *f, gconstpointer data)
{
  g_autoptr (GError) e1 = NULL;

  /* Wrong name and unknown CA: accepted anyway. */
  e1 = wss_exchange (f, "127.0.0.1", NULL, NULL, TRUE);
  g_assert_no_error (e1);
}

static void
test_wss_wrong_name (TlsFixture *f, gconstpointer data)
{
  static const char *const names[] = { "other.example", NULL };
  g_autoptr (GError) error = NULL;
  g_autoptr (GTlsDatabase) db = NULL;
  g_autoptr (GTlsCertificate) other = NULL;
  g_autoptr (GError) e1 = NULL;

  /* The server now presents a certificate for another name, trusted through the CA file. */
  g_assert_true (gt_certificate_generate (f->cert_path, f->key_path, names, &error));
  g_assert_no_error (error);
  other = g_tls_certificate_new_from_files (f->cert_path, f->key_path, &error);
  g_assert_no_error (error);
  g_set_object (&f->server->cert, other);
  db = g_tls_file_database_new (f->cert_path, &error);
  g_assert_no_error (error);

  e1 = wss_exchange (f, "127.0.0.1", db, NULL, FALSE);
  g_assert_error (e1, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE);
  g_assert_nonnull (strstr (e1->message, "another host name"));
}

/* ------------------------------------------------------------------------------------------ */
/* Through a real HTTP proxy */

static void
test_ws_tinyproxy (void)
{
  g_autofree char *tinyproxy = g_find_program_in_path ("tinyproxy");
  g_autofree char *dir = NULL;
  g_autofree char *conf_path = NULL;
  g_autofree char *conf = NULL;
  g_autofree char *url = NULL;
  g_autofree char *proxy_url = NULL;
  g_autoptr (GSubprocess) proc = NULL;
  g_autoptr (GProxyResolver) resolver = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocket) probe = NULL;
  g_autoptr (GSocketAddress) any = NULL;
  g_autoptr (GSocketAddress) bound = NULL;
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  const gsize len = 1024 * 1024;
  g_autofree guint8 *up = random_bytes (len, 7);
  g_autofree guint8 *down = random_bytes (len, 8);
  RawServer *s;
  GIOStream *io = NULL;
  Peer *client;
  Peer *peers[2];
  guint16 proxy_port;

  if (tinyproxy == NULL)
    {
      g_test_skip ("tinyproxy not installed");
      return;
    }
  probe = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, &error);
  g_assert_no_error (error);
  any = g_inet_socket_address_new (lo, 0);
  g_assert_true (g_socket_bind (probe, any, TRUE, &error));
  bound = g_socket_get_local_address (probe, &error);
  proxy_port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));
  g_socket_close (probe, NULL);

  dir = g_dir_make_tmp ("gt-ws-tinyproxy-XXXXXX", &error);
  g_assert_no_error (error);
  g_chmod (dir, 0755);
  conf_path = g_build_filename (dir, "tinyproxy.conf", NULL);
  conf = g_strdup_printf ("Port %u\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\n"
                          "MaxClients 4\nLogLevel Critical\n%s",
                          proxy_port, geteuid () == 0 ? "User nobody\nGroup nogroup\n" : "");
  g_assert_true (g_file_set_contents (conf_path, conf, -1, &error));
  g_chmod (conf_path, 0644);
  proc = g_subprocess_new (G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_SILENCE,
                           &error, tinyproxy, "-d", "-c", conf_path, NULL);
  g_assert_no_error (error);

  proxy_url = g_strdup_printf ("http://127.0.0.1:%u", proxy_port);
  g_setenv ("http_proxy", proxy_url, TRUE);
  g_unsetenv ("no_proxy");
  g_unsetenv ("NO_PROXY");
  resolver = gt_http_proxy_resolver_new_from_env ();
  g_unsetenv ("http_proxy");
  g_assert_nonnull (resolver);

  s = raw_server_new (NULL);
  s->peer = peer_new ("server", down, len, up, len);
  client = peer_new ("client", up, len, down, len);
  url = g_strdup_printf ("ws://127.0.0.1:%u/tunnel", s->port);
  for (int i = 0; i < 100 && io == NULL; i++)
    {
      g_clear_error (&error);
      io = ws_connect (url, NULL, NULL, FALSE, resolver, &error);
      if (io == NULL)
        g_usleep (50000);
    }
  g_assert_no_error (error);
  peer_start (client, io);
  g_object_unref (io);
  peers[0] = client;
  peers[1] = s->peer;
  g_assert_true (spin_until (both_done, peers, 30000));
  g_assert_no_error (client->error);
  g_assert_no_error (s->peer->error);
  g_assert_true (peer_done (client) && peer_done (s->peer));
  g_io_stream_close (client->io, NULL, NULL);
  g_assert_true (spin_until (peer_eof_or_error, s->peer, 10000));

  peer_free (client);
  peer_free (s->peer);
  spin_for (50);
  raw_server_free (s);
  g_subprocess_send_signal (proc, SIGTERM);
  g_subprocess_wait (proc, NULL, NULL);
  g_unlink (conf_path);
  g_rmdir (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/gt/transport/ws-stream/soup-server", test_soup_server);
  g_test_add_func ("/gt/transport/ws-stream/text-message", test_text_message);
  g_test_add_func ("/gt/transport/ws-stream/raw-8mib", test_raw_8mib);
  g_test_add_func ("/gt/transport/ws-stream/accept-valid", test_accept_valid);
  g_test_add_func ("/gt/transport/ws-stream/accept-bad", test_accept_bad);
  g_test_add_func ("/gt/transport/ws-stream/is-upgrade", test_is_upgrade);
  g_test_add_func ("/gt/transport/ws-stream/connect-errors", test_connect_errors);
  g_test_add ("/gt/transport/ws-stream/wss/ca", TlsFixture, NULL, tls_setup, test_wss_ca,
              tls_teardown);
  g_test_add ("/gt/transport/ws-stream/wss/untrusted", TlsFixture, NULL, tls_setup,
              test_wss_untrusted, tls_teardown);
  g_test_add ("/gt/transport/ws-stream/wss/pin", TlsFixture, NULL, tls_setup, test_wss_pin,
              tls_teardown);
  g_test_add ("/gt/transport/ws-stream/wss/insecure", TlsFixture, NULL, tls_setup,
              test_wss_insecure, tls_teardown);
  g_test_add ("/gt/transport/ws-stream/wss/wrong-name", TlsFixture, NULL, tls_setup,
              test_wss_wrong_name, tls_teardown);
  g_test_add_func ("/gt/transport/ws-stream/tinyproxy", test_ws_tinyproxy);
  return g_test_run ();
}
