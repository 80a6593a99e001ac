/* test-transport.c: the transport seam: scheme → leaf, dial and accept through it, TLS settings,
 * async name resolution. */
#include "config.h"

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib-unix.h>
#include <glib/gstdio.h>

#include "gt-certificate.h"
#include "gt-tls-stream.h"
#include "gt-transport.h"
#include "gt-types.h"
#include "gt-ws-frame.h"

typedef struct
{
  GIOStream *io;
  GSocketAddress *address;
  GError *error;
  gboolean done;
} Result;

static void
connect_cb (GObject *source, GAsyncResult *result, gpointer data)
{
  Result *r = data;

  r->io = gt_transport_connect_finish (result, &r->error);
  r->done = TRUE;
}

static void
accept_cb (GObject *source, GAsyncResult *result, gpointer data)
{
  Result *r = data;

  r->io = gt_transport_accept_finish (result, &r->error);
  r->done = TRUE;
}

static void
resolve_cb (GObject *source, GAsyncResult *result, gpointer data)
{
  Result *r = data;

  r->address = gt_resolve_address_finish (result, &r->error);
  r->done = TRUE;
}

static gboolean
timeout_cb (gpointer data)
{
  *(gboolean *) data = TRUE;
  return G_SOURCE_REMOVE;
}

static void
wait_done (Result *r)
{
  gboolean timed_out = FALSE;
  guint id = g_timeout_add (10000, timeout_cb, &timed_out);

  while (!r->done && !timed_out)
    g_main_context_iteration (NULL, TRUE);
  g_assert_false (timed_out);
  g_source_remove (id);
}

static void
result_clear (Result *r)
{
  g_clear_object (&r->io);
  g_clear_object (&r->address);
  g_clear_error (&r->error);
  r->done = FALSE;
}

/* Every scheme of the shared table has a leaf, and nothing else does. */
static void
test_table (void)
{
  const char *const *names = gt_scheme_names ();

  g_assert_nonnull (names[0]);
  for (gsize i = 0; names[i] != NULL; i++)
    {
      g_assert_nonnull (gt_scheme_info_lookup (names[i]));
      if (!gt_transport_supports (names[i]))
        g_error ("scheme %s has no transport leaf", names[i]);
    }
  g_assert_false (gt_transport_supports ("sctp"));
  g_assert_false (gt_transport_supports ("TCP"));
  g_assert_false (gt_transport_supports (""));
  g_assert_false (gt_transport_supports (NULL));
}

static void
test_unsupported (void)
{
  GtRemote remote = { (char *) "127.0.0.1", 1, (char *) "sctp", NULL };
  Result r = { 0 };
  g_autoptr (GIOStream) io = NULL;
  g_autoptr (GInputStream) in = g_memory_input_stream_new ();
  g_autoptr (GOutputStream) out = g_memory_output_stream_new_resizable ();

  gt_transport_connect_async (&remote, NULL, NULL, connect_cb, &r);
  wait_done (&r);
  g_assert_error (r.error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED);
  g_assert_nonnull (strstr (r.error->message, "sctp"));
  result_clear (&r);

  io = g_simple_io_stream_new (in, out);
  gt_transport_accept_async ("sctp", io, NULL, 0, NULL, NULL, accept_cb, &r);
  wait_done (&r);
  g_assert_error (r.error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED);
  result_clear (&r);
}

static void
socket_pair (GIOStream **a, int *b)
{
  g_autoptr (GError) error = NULL;
  int fds[2];

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0);
  *a = gt_transport_wrap_fd (fds[0], &error);
  g_assert_no_error (error);
  *b = fds[1];
}

/* tcp: dial a local listener, accept hands the stream back as is. */
static void
test_tcp (void)
{
  g_autoptr (GSocketListener) listener = g_socket_listener_new ();
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) io = NULL;
  Result r = { 0 };
  GtRemote remote = { (char *) "127.0.0.1", 0, (char *) "tcp", NULL };
  int fd;

  remote.port = g_socket_listener_add_any_inet_port (listener, NULL, &error);
  g_assert_no_error (error);
  gt_transport_connect_async (&remote, NULL, NULL, connect_cb, &r);
  wait_done (&r);
  g_assert_no_error (r.error);
  g_assert_true (G_IS_SOCKET_CONNECTION (r.io));
  g_assert_true (g_pollable_input_stream_can_poll (
    G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (r.io))));
  result_clear (&r);

  socket_pair (&io, &fd);
  gt_transport_accept_async ("tcp", io, NULL, 0, NULL, NULL, accept_cb, &r);
  wait_done (&r);
  g_assert_no_error (r.error);
  g_assert_true (r.io == io);
  result_clear (&r);
  close (fd);
}

/* ws accept answers the upgrade without blocking: the 101 arrives, then frames flow. */
static void
test_ws_accept (void)
{
  const char *head = "GET /gt-tunnel HTTP/1.1\r\n"
                     "Host: gt.example\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "\r\n";
  g_autoptr (GIOStream) io = NULL;
  g_autoptr (GString) response = g_string_new (NULL);
  Result r = { 0 };
  char buf[512];
  int fd;

  for (int bad = 0; bad <= 1; bad++)
    {
      socket_pair (&io, &fd);
      g_string_truncate (response, 0);
      gt_transport_accept_async (bad ? "wss" : "ws", io, (const guint8 *) head,
                                 strlen (head) - (bad ? 50 : 0), NULL, NULL, accept_cb, &r);
      wait_done (&r);
      while (!g_str_has_suffix (response->str, bad ? "\n" : "\r\n\r\n"))
        {
          ssize_t n = recv (fd, buf, sizeof buf, 0);

          g_assert_cmpint (n, >, 0);
          g_string_append_len (response, buf, n);
        }
      if (bad)
        {
          g_assert_error (r.error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
          g_assert_true (g_str_has_prefix (response->str, "HTTP/1.1 400 "));
        }
      else
        {
          g_assert_no_error (r.error);
          g_assert_true (g_str_has_prefix (response->str, "HTTP/1.1 101 "));
          g_assert_nonnull (strstr (response->str, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
          g_assert_true (g_pollable_output_stream_can_poll (
            G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (r.io))));
        }
      result_clear (&r);
      g_clear_object (&io);
      close (fd);
      while (g_main_context_iteration (NULL, FALSE))
        ;
    }
}

static void
test_tls_accept_needs_cert (void)
{
  g_autoptr (GIOStream) io = NULL;
  Result r = { 0 };
  int fd;

  socket_pair (&io, &fd);
  gt_transport_accept_async ("tls", io, NULL, 0, NULL, NULL, accept_cb, &r);
  wait_done (&r);
  g_assert_error (r.error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
  result_clear (&r);
  close (fd);
}

/* A bad pin fails before any connection is made. */
static void
test_bad_pin (void)
{
  const char *const schemes[] = { "tls", "wss" };

  if (!gt_tls_backend_check (NULL))
    {
      g_test_skip ("no TLS backend (glib-networking)");
      return;
    }
  for (gsize i = 0; i < G_N_ELEMENTS (schemes); i++)
    {
      g_autoptr (GSocketListener) listener = g_socket_listener_new ();
      GtRemote remote = { (char *) "127.0.0.1", 0, (char *) schemes[i], (char *) "/gt-tunnel" };
      GtTransportSecurity security = { "sha256:1234", FALSE };
      Result r = { 0 };

      remote.port = g_socket_listener_add_any_inet_port (listener, NULL, NULL);
      gt_transport_connect_async (&remote, &security, NULL, connect_cb, &r);
      wait_done (&r);
      g_assert_error (r.error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
      g_assert_nonnull (strstr (r.error->message, "pin"));
      result_clear (&r);
    }
}

static void
test_tls_init (void)
{
  g_autoptr (GError) error = NULL;

  g_assert_false (gt_transport_tls_init ("ssl3", &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_unsetenv ("G_TLS_GNUTLS_PRIORITY");
  g_assert_true (gt_transport_tls_init ("tls1.3", &error));
  g_assert_no_error (error);
  g_assert_nonnull (strstr (g_getenv ("G_TLS_GNUTLS_PRIORITY"), "+VERS-TLS1.3"));
  /* AES-128-GCM is preferred for tunnels. */
  g_assert_nonnull (strstr (g_getenv ("G_TLS_GNUTLS_PRIORITY"), "-CIPHER-ALL:+AES-128-GCM"));
  /* Once only: a second call does not change what GIO may already use. */
  g_assert_true (gt_transport_tls_init ("tls1.1", &error));
  g_assert_null (strstr (g_getenv ("G_TLS_GNUTLS_PRIORITY"), "TLS1.1"));
}

static void
test_resolve_async (void)
{
  Result r = { 0 };
  g_autofree char *text = NULL;

  gt_resolve_address_async ("[::1]", 80, NULL, resolve_cb, &r);
  wait_done (&r);
  g_assert_no_error (r.error);
  text = g_inet_address_to_string (
    g_inet_socket_address_get_address (G_INET_SOCKET_ADDRESS (r.address)));
  g_assert_cmpstr (text, ==, "::1");
  g_assert_cmpuint (g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (r.address)), ==, 80);
  result_clear (&r);

  gt_resolve_address_async ("localhost", 8080, NULL, resolve_cb, &r);
  wait_done (&r);
  g_assert_no_error (r.error);
  g_assert_cmpuint (g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (r.address)), ==, 8080);
  g_assert_true (g_inet_address_get_is_loopback (
    g_inet_socket_address_get_address (G_INET_SOCKET_ADDRESS (r.address))));
  result_clear (&r);
}

static gboolean
readable_cb (GObject *stream, gpointer data)
{
  *(gboolean *) data = TRUE;
  return G_SOURCE_REMOVE;
}

static void
handshake_cb (GObject *source, GAsyncResult *result, gpointer data)
{
  Result *r = data;

  if (_gt_tls_stream_handshake_finish (G_IO_STREAM (source), result, &r->error))
    r->io = g_object_ref (G_IO_STREAM (source));
  r->done = TRUE;
}

static GTlsCertificate *
test_certificate (void)
{
  g_autofree char *dir = g_dir_make_tmp ("gt-test-tls-XXXXXX", NULL);
  g_autofree char *cert = g_build_filename (dir, "cert.pem", NULL);
  g_autofree char *key = g_build_filename (dir, "key.pem", NULL);
  g_autoptr (GError) error = NULL;
  GTlsCertificate *c;

  g_assert_true (gt_certificate_generate (cert, key, NULL, &error));
  g_assert_no_error (error);
  c = g_tls_certificate_new_from_files (cert, key, &error);
  g_assert_no_error (error);
  g_unlink (cert);
  g_unlink (key);
  g_rmdir (dir);
  return c;
}

/* Reads from in, iterating the main context, until n bytes arrived or EOF. */
static gsize
read_all_nonblocking (GPollableInputStream *in, guint8 *buf, gsize n)
{
  gsize got = 0;
  gint64 deadline = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;

  while (got < n && g_get_monotonic_time () < deadline)
    {
      g_autoptr (GError) error = NULL;
      gssize r = g_pollable_input_stream_read_nonblocking (in, buf + got, n - got, NULL, &error);

      if (r == 0)
        break;
      if (r < 0)
        {
          g_assert_error (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK);
          g_main_context_iteration (NULL, FALSE);
          continue;
        }
      got += r;
    }
  return got;
}

/* gt's own GnuTLS streams on a socket pair: handshake, the peer's certificate, bytes both ways
 * through many records, back-pressure with a bounded queue that the sources release, EOF. */
static void
test_tls_stream (void)
{
  g_autoptr (GTlsCertificate) cert = test_certificate ();
  g_autoptr (GTlsCertificate) peer = NULL;
  g_autoptr (GIOStream) a = NULL;
  g_autoptr (GIOStream) b = NULL;
  g_autoptr (GIOStream) client = NULL;
  g_autoptr (GIOStream) server = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree guint8 *big = g_malloc (3 * 1024 * 1024);
  g_autofree guint8 *back = g_malloc (3 * 1024 * 1024);
  g_autofree char *fp_cert = NULL;
  g_autofree char *fp_peer = NULL;
  g_autofree char *desc = NULL;
  Result rc = { NULL }, rs = { NULL };
  GPollableOutputStream *out;
  GPollableInputStream *in;
  gsize queued = 0;
  gboolean fired = FALSE;
  GSource *source;
  int fds[2];

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0);
  g_assert_true (g_unix_set_fd_nonblocking (fds[0], TRUE, NULL));
  g_assert_true (g_unix_set_fd_nonblocking (fds[1], TRUE, NULL));
  a = gt_transport_wrap_fd (fds[0], &error);
  g_assert_no_error (error);
  b = gt_transport_wrap_fd (fds[1], &error);
  g_assert_no_error (error);

  /* Only sockets: anything else is refused with a clear error. */
  {
    g_autoptr (GInputStream) mem_in = g_memory_input_stream_new ();
    g_autoptr (GOutputStream) mem_out = g_memory_output_stream_new_resizable ();
    g_autoptr (GIOStream) mem = g_simple_io_stream_new (mem_in, mem_out);
    g_autoptr (GIOStream) none = _gt_tls_stream_new_client (mem, "x", &error);

    g_assert_null (none);
    g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED);
    g_clear_error (&error);
  }

  client = _gt_tls_stream_new_client (a, "gt.example", &error);
  g_assert_no_error (error);
  server = _gt_tls_stream_new_server (b, cert, &error);
  g_assert_no_error (error);
  _gt_tls_stream_handshake_async (client, NULL, handshake_cb, &rc);
  _gt_tls_stream_handshake_async (server, NULL, handshake_cb, &rs);
  while (!rc.done || !rs.done)
    g_main_context_iteration (NULL, TRUE);
  g_assert_no_error (rc.error);
  g_assert_no_error (rs.error);

  /* The client sees the server's certificate (the chain GIO verifies). */
  peer = _gt_tls_stream_get_peer_certificate (client);
  g_assert_nonnull (peer);
  fp_cert = gt_certificate_fingerprint (cert);
  fp_peer = gt_certificate_fingerprint (peer);
  g_assert_cmpstr (fp_cert, ==, fp_peer);
  g_assert_null (_gt_tls_stream_get_peer_certificate (server));
  desc = _gt_tls_stream_describe (client);
  g_assert_nonnull (strstr (desc, "TLS1."));

  /* Nothing to read yet. */
  in = G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (server));
  g_assert_true (g_pollable_input_stream_can_poll (in));
  g_assert_cmpint (g_pollable_input_stream_read_nonblocking (in, back, 16, NULL, &error), ==, -1);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK);
  g_clear_error (&error);

  /* The client writes while the server does not read: the queue stops at its bound. */
  for (gsize i = 0; i < 3 * 1024 * 1024; i++)
    big[i] = (guint8) (i * 31 + (i >> 12));
  out = G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (client));
  for (;;)
    {
      gssize n = g_pollable_output_stream_write_nonblocking (out, big + queued,
                                                             3 * 1024 * 1024 - queued, NULL,
                                                             &error);
      if (n < 0)
        {
          g_assert_error (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK);
          g_clear_error (&error);
          break;
        }
      queued += n;
      g_assert_cmpuint (queued, <, 3 * 1024 * 1024);
    }
  g_assert_false (g_pollable_output_stream_is_writable (out));
  source = g_pollable_output_stream_create_source (out, NULL);
  g_source_set_callback (source, (GSourceFunc) (void (*) (void)) readable_cb, &fired, NULL);
  g_source_attach (source, NULL);
  g_source_unref (source);

  /* The server reads: the client's source fires once the queue drained below its bound. */
  {
    gsize got = 0;

    while (!fired)
      {
        gsize n = read_all_nonblocking (in, back + got, MIN (64 * 1024, queued - got));

        g_assert_cmpuint (n, >, 0);
        got += n;
      }
    /* Finish: everything queued arrives intact, then the rest of the 3 MiB. */
    while (queued < 3 * 1024 * 1024)
      {
        gssize n = g_pollable_output_stream_write_nonblocking (out, big + queued,
                                                               3 * 1024 * 1024 - queued, NULL,
                                                               &error);
        if (n < 0)
          {
            g_assert_error (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK);
            g_clear_error (&error);
          }
        else
          queued += n;
        got += read_all_nonblocking (in, back + got, MIN (256 * 1024, queued - got));
      }
    got += read_all_nonblocking (in, back + got, 3 * 1024 * 1024 - got);
    g_assert_cmpuint (got, ==, 3 * 1024 * 1024);
    g_assert_cmpmem (back, got, big, got);
  }

  /* The other way, with blocking calls. */
  g_assert_true (g_output_stream_write_all (g_io_stream_get_output_stream (server), "pong", 4,
                                            NULL, NULL, &error));
  g_assert_no_error (error);
  fired = FALSE;
  source = g_pollable_input_stream_create_source (
    G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (client)), NULL);
  g_source_set_callback (source, (GSourceFunc) (void (*) (void)) readable_cb, &fired, NULL);
  g_source_attach (source, NULL);
  g_source_unref (source);
  while (!fired)
    g_main_context_iteration (NULL, TRUE);
  g_assert_cmpint (g_input_stream_read (g_io_stream_get_input_stream (client), back, 16, NULL,
                                        &error),
                   ==, 4);
  g_assert_cmpmem (back, 4, "pong", 4);

  /* Closing the client is EOF for the server; writes after close fail. */
  g_assert_true (g_io_stream_close (client, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (read_all_nonblocking (in, back, 16), ==, 0);
  g_assert_cmpint (g_pollable_output_stream_write_nonblocking (out, "x", 1, NULL, &error), <, 0);
  g_assert_nonnull (error);
  result_clear (&rc);
  result_clear (&rs);
}

/* The other end of test_tls_stream_interop: glib-networking's TLS (GnuTLS's own record layer)
 * in a thread, echoing len bytes and closing with close_notify. */
typedef struct
{
  GIOStream *base;
  GTlsCertificate *cert; /* server: its certificate; NULL: a client */
  gsize len;
  GError *error;
  gboolean echoed;
} GioPeer;

static gboolean
accept_any_cb (GTlsConnection *conn, GTlsCertificate *cert, GTlsCertificateFlags errors,
               gpointer data)
{
  return TRUE;
}

static gpointer
gio_peer_thread (gpointer data)
{
  GioPeer *p = data;
  g_autoptr (GMainContext) context = g_main_context_new ();
  g_autoptr (GIOStream) tls = NULL;
  g_autofree guint8 *buf = g_malloc (p->len);
  gsize n = 0;

  g_main_context_push_thread_default (context);
  if (p->cert != NULL)
    tls = G_IO_STREAM (g_tls_server_connection_new (p->base, p->cert, &p->error));
  else
    {
      tls = G_IO_STREAM (g_tls_client_connection_new (p->base, NULL, &p->error));
      if (tls != NULL)
        g_signal_connect (tls, "accept-certificate", G_CALLBACK (accept_any_cb), NULL);
    }
  if (tls != NULL && g_tls_connection_handshake (G_TLS_CONNECTION (tls), NULL, &p->error)
      && g_input_stream_read_all (g_io_stream_get_input_stream (tls), buf, p->len, &n, NULL,
                                  &p->error)
      && n == p->len
      && g_output_stream_write_all (g_io_stream_get_output_stream (tls), buf, p->len, NULL,
                                    NULL, &p->error))
    p->echoed = TRUE;
  if (tls != NULL)
    (void) g_io_stream_close (tls, NULL, NULL);
  g_main_context_pop_thread_default (context);
  return NULL;
}

static void
copy_fill_cb (guint8 *dst, gsize n, gpointer data)
{
  const guint8 **src = data;

  memcpy (dst, *src, n);
  *src += n;
}

/* gt's records (sealed and opened by gt after GnuTLS's handshake) against GnuTLS's own record
 * layer, both ways round: bytes through many records each way (some filled in place by
 * _gt_tls_stream_write_with), a KeyUpdate each way in the middle, close_notify read as EOF. */
static void
test_tls_stream_interop (void)
{
  g_autoptr (GTlsCertificate) cert = test_certificate ();
  gsize len = 3 * 1024 * 1024 + 1234;
  g_autofree guint8 *big = g_malloc (len);
  g_autofree guint8 *back = g_malloc (len);

  for (gsize i = 0; i < len; i++)
    big[i] = (guint8) (i * 7 + (i >> 14));
  for (int gt_is_server = 0; gt_is_server <= 1; gt_is_server++)
    {
      g_autoptr (GIOStream) a = NULL;
      g_autoptr (GIOStream) b = NULL;
      g_autoptr (GIOStream) gt = NULL;
      g_autoptr (GError) error = NULL;
      g_autofree char *desc = NULL;
      GioPeer peer = { NULL };
      Result r = { NULL };
      GThread *thread;
      GPollableOutputStream *out;
      gsize sent = 0;
      gboolean updated = FALSE;
      int fds[2];

      g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0);
      g_assert_true (g_unix_set_fd_nonblocking (fds[0], TRUE, NULL));
      a = gt_transport_wrap_fd (fds[0], &error);
      g_assert_no_error (error);
      b = gt_transport_wrap_fd (fds[1], &error);
      g_assert_no_error (error);
      peer.base = b;
      peer.cert = gt_is_server ? NULL : cert;
      peer.len = len;
      thread = g_thread_new ("gio-tls-peer", gio_peer_thread, &peer);

      gt = gt_is_server ? _gt_tls_stream_new_server (a, cert, &error)
                        : _gt_tls_stream_new_client (a, "gt.example", &error);
      g_assert_no_error (error);
      _gt_tls_stream_handshake_async (gt, NULL, handshake_cb, &r);
      wait_done (&r);
      g_assert_no_error (r.error);
      desc = _gt_tls_stream_describe (gt);
      g_assert_nonnull (strstr (desc, "TLS1.3"));

      /* The first 100,000 bytes filled straight into the send queue (records span the pieces);
       * not on a plain socket stream. */
      {
        const guint8 *src = big;

        g_assert_false (_gt_tls_stream_write_with (a, 10, copy_fill_cb, &src));
        g_assert_true (_gt_tls_stream_write_with (gt, 100000, copy_fill_cb, &src));
        g_assert_true (src == big + 100000);
        sent = 100000;
      }
      out = G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (gt));
      /* A vectored write: small and large pieces in shared records. */
      {
        GOutputVector v[4] = { { big + sent, 7 }, { big + sent + 7, 0 },
                               { big + sent + 7, 20000 }, { big + sent + 20007, 13 } };
        gsize written = 0;

        g_assert_cmpint (g_pollable_output_stream_writev_nonblocking (out, v, 4, &written, NULL,
                                                                      &error),
                         ==, G_POLLABLE_RETURN_OK);
        g_assert_no_error (error);
        g_assert_cmpuint (written, ==, 20020);
        sent += written;
      }
      while (sent < len)
        {
          /* Key updates both ways mid-stream: ours, and the one the peer must answer with. */
          if (sent > len / 2 && !updated)
            {
              g_assert_true (_gt_tls_stream_update_keys (gt, TRUE));
              updated = TRUE;
            }
          gssize n = g_pollable_output_stream_write_nonblocking (out, big + sent, len - sent,
                                                                 NULL, &error);
          if (n < 0)
            {
              g_assert_error (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK);
              g_clear_error (&error);
              g_main_context_iteration (NULL, TRUE);
              continue;
            }
          sent += n;
        }
      {
        GPollableInputStream *in = G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (gt));
        guint8 extra[16];

        g_assert_cmpuint (read_all_nonblocking (in, back, len), ==, len);
        g_assert_cmpmem (back, len, big, len);
        /* The peer's close_notify: EOF, not an error. */
        g_assert_cmpuint (read_all_nonblocking (in, extra, sizeof extra), ==, 0);
      }
      g_thread_join (thread);
      g_assert_no_error (peer.error);
      g_assert_true (peer.echoed);
      g_assert_true (g_io_stream_close (gt, NULL, &error));
      g_assert_no_error (error);
      result_clear (&r);
    }
}

/* Bytes after the handshake that are no valid record fail the reader with a TLS error at once:
 * a forged record (its tag does not match) and a header announcing an oversized record. */
static void
test_tls_stream_bad_record (void)
{
  static const guint8 forged[5 + 32] = { 0x17, 3, 3, 0, 32, 1, 2, 3 };
  static const guint8 oversized[5] = { 0x17, 3, 3, 0xff, 0xff };
  g_autoptr (GTlsCertificate) cert = test_certificate ();

  for (int i = 0; i < 2; i++)
    {
      g_autoptr (GIOStream) a = NULL;
      g_autoptr (GIOStream) b = NULL;
      g_autoptr (GIOStream) client = NULL;
      g_autoptr (GIOStream) server = NULL;
      g_autoptr (GError) error = NULL;
      Result rc = { NULL }, rs = { NULL };
      GPollableInputStream *in;
      const guint8 *junk = i == 0 ? forged : oversized;
      gsize junk_len = i == 0 ? sizeof forged : sizeof oversized;
      guint8 buf[64];
      gssize n = -1;
      gint64 deadline = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
      int fds[2];

      g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0);
      g_assert_true (g_unix_set_fd_nonblocking (fds[0], TRUE, NULL));
      g_assert_true (g_unix_set_fd_nonblocking (fds[1], TRUE, NULL));
      a = gt_transport_wrap_fd (fds[0], &error);
      g_assert_no_error (error);
      b = gt_transport_wrap_fd (fds[1], &error);
      g_assert_no_error (error);
      client = _gt_tls_stream_new_client (a, "gt.example", &error);
      g_assert_no_error (error);
      server = _gt_tls_stream_new_server (b, cert, &error);
      g_assert_no_error (error);
      _gt_tls_stream_handshake_async (client, NULL, handshake_cb, &rc);
      _gt_tls_stream_handshake_async (server, NULL, handshake_cb, &rs);
      while (!rc.done || !rs.done)
        g_main_context_iteration (NULL, TRUE);
      g_assert_no_error (rc.error);
      g_assert_no_error (rs.error);

      g_assert_cmpint (write (fds[1], junk, junk_len), ==, (gssize) junk_len);
      in = G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (client));
      while (g_get_monotonic_time () < deadline)
        {
          n = g_pollable_input_stream_read_nonblocking (in, buf, sizeof buf, NULL, &error);
          if (n >= 0 || !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
            break;
          g_clear_error (&error);
          g_main_context_iteration (NULL, FALSE);
        }
      g_assert_cmpint (n, ==, -1);
      g_assert_error (error, G_TLS_ERROR, G_TLS_ERROR_MISC);
      result_clear (&rc);
      result_clear (&rs);
    }
}

/* A peer that is not TLS fails the handshake with an error, not a hang. */
static void
test_tls_stream_not_tls (void)
{
  g_autoptr (GIOStream) a = NULL;
  g_autoptr (GIOStream) client = NULL;
  g_autoptr (GError) error = NULL;
  Result r = { NULL };
  int fd;

  socket_pair (&a, &fd);
  client = _gt_tls_stream_new_client (a, "gt.example", &error);
  g_assert_no_error (error);
  g_assert_cmpint (write (fd, "HTTP/1.1 400 Bad Request\r\n\r\n", 28), ==, 28);
  _gt_tls_stream_handshake_async (client, NULL, handshake_cb, &r);
  while (!r.done)
    g_main_context_iteration (NULL, TRUE);
  g_assert_nonnull (r.error);
  g_assert_true (r.error->domain == G_TLS_ERROR);
  close (fd);
  result_clear (&r);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/transport/table", test_table);
  g_test_add_func ("/gt/transport/unsupported", test_unsupported);
  g_test_add_func ("/gt/transport/tcp", test_tcp);
  g_test_add_func ("/gt/transport/ws-accept", test_ws_accept);
  g_test_add_func ("/gt/transport/tls-accept-needs-cert", test_tls_accept_needs_cert);
  g_test_add_func ("/gt/transport/bad-pin", test_bad_pin);
  g_test_add_func ("/gt/transport/tls-init", test_tls_init);
  g_test_add_func ("/gt/transport/resolve-async", test_resolve_async);
  g_test_add_func ("/gt/transport/tls-stream", test_tls_stream);
  g_test_add_func ("/gt/transport/tls-stream-not-tls", test_tls_stream_not_tls);
  g_test_add_func ("/gt/transport/tls-stream-interop", test_tls_stream_interop);
  g_test_add_func ("/gt/transport/tls-stream-bad-record", test_tls_stream_bad_record);
  return g_test_run ();
}
