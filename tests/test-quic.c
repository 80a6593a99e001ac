/* Unit tests of the QUIC wrapper (gt-quic.c) and the quic:// leaf: a client and a server in one
 * process on 127.0.0.1, bytes both ways, half-close, errors, and a handshake nobody answers. */
#include "config.h"

#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "gt-certificate.h"
#include "gt-mux.h"
#include "gt-native-streams.h"
#include "gt-quic.h"
#include "gt-transport.h"

#define WAIT_US (20 * G_USEC_PER_SEC)

typedef struct
{
  char *dir;
  GTlsCertificate *cert;
  char *cert_path;
  GtTransportListener *listener;
  guint16 port;
  GPtrArray *accepted; /* GIOStream * */
  GInetSocketAddress *last_peer;
} Fixture;

static void
tunnel_cb (GIOStream *tunnel, GInetSocketAddress *peer, gpointer user_data)
{
  Fixture *f = user_data;

  g_ptr_array_add (f->accepted, g_object_ref (tunnel));
  g_clear_object (&f->last_peer);
  f->last_peer = peer != NULL ? g_object_ref (peer) : NULL;
}

static int
udp_bound (guint16 *port)
{
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GError) error = NULL;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  int fd = gt_udp_bind_on (lo, 0, &error);

  g_assert_no_error (error);
  g_assert_cmpint (getsockname (fd, (struct sockaddr *) &ss, &len), ==, 0);
  *port = g_ntohs (((struct sockaddr_in *) &ss)->sin_port);
  return fd;
}

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *key = NULL;
  const char *names[] = { "localhost", "127.0.0.1", NULL };
  int fd;

  f->dir = g_dir_make_tmp ("gt-quic-XXXXXX", &error);
  g_assert_no_error (error);
  f->cert_path = g_build_filename (f->dir, "cert.pem", NULL);
  key = g_build_filename (f->dir, "key.pem", NULL);
  g_assert_true (gt_certificate_generate (f->cert_path, key, names, &error));
  g_assert_no_error (error);
  f->cert = g_tls_certificate_new_from_files (f->cert_path, key, &error);
  g_assert_no_error (error);
  f->accepted = g_ptr_array_new_with_free_func (g_object_unref);
  fd = udp_bound (&f->port);
  f->listener = gt_transport_listen ("quic", fd, f->cert, 5000, tunnel_cb, f, &error);
  g_assert_no_error (error);
  g_assert_nonnull (f->listener);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  g_autofree char *key = g_build_filename (f->dir, "key.pem", NULL);

  g_clear_pointer (&f->accepted, g_ptr_array_unref);
  gt_transport_listener_free (f->listener);
  g_clear_object (&f->cert);
  g_clear_object (&f->last_peer);
  /* Let the closes go out and the sources go. */
  for (int i = 0; i < 100 && g_main_context_iteration (NULL, FALSE); i++)
    ;
  g_unlink (f->cert_path);
  g_unlink (key);
  g_rmdir (f->dir);
  g_free (f->cert_path);
  g_free (f->dir);
}

typedef struct
{
  gboolean done;
  GIOStream *io;
  GError *error;
} Result;

static void
connect_cb (GObject *source, GAsyncResult *result, gpointer data)
{
  Result *r = data;

  r->io = gt_transport_connect_finish (result, &r->error);
  r->done = TRUE;
}

static void
iterate_until (gboolean *flag, const char *what)
{
  gint64 deadline = g_get_monotonic_time () + WAIT_US;

  while (!*flag)
    {
      if (g_get_monotonic_time () > deadline)
        g_error ("timed out waiting for %s", what);
      g_main_context_iteration (NULL, TRUE);
    }
}

static GIOStream *
dial (Fixture *f, const char *remote_cert, gboolean insecure, guint handshake_ms, guint16 port,
      GError **error)
{
  GtRemote remote = { (char *) "127.0.0.1", port, (char *) "quic", NULL };
  GtTransportSecurity security = { remote_cert, insecure, 5000, handshake_ms };
  Result r = { 0 };

  gt_transport_connect_async (&remote, &security, NULL, connect_cb, &r);
  iterate_until (&r.done, "the QUIC connect");
  if (r.error != NULL)
    g_propagate_error (error, r.error);
  return r.io;
}

/* Writes all of data (pollable, on the main loop) and, with fin, closes the output. */
static void
write_all (GIOStream *io, const guint8 *data, gsize len, gboolean fin)
{
  GPollableOutputStream *out = G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (io));
  gint64 deadline = g_get_monotonic_time () + WAIT_US;
  gsize done = 0;

  while (done < len)
    {
      g_autoptr (GError) error = NULL;
      gssize n = g_pollable_output_stream_write_nonblocking (out, data + done, len - done, NULL,
                                                             &error);

      if (n < 0 && !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        g_error ("write: %s", error->message);
      if (n > 0)
        done += n;
      else
        g_main_context_iteration (NULL, TRUE);
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
    }
  if (fin)
    g_assert_true (g_output_stream_close (G_OUTPUT_STREAM (out), NULL, NULL));
}

/* Reads until EOF (or want bytes when not to_eof); returns what came, or NULL with error. */
static GByteArray *
read_some (GIOStream *io, gsize want, gboolean to_eof, GError **error)
{
  GPollableInputStream *in = G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (io));
  g_autoptr (GByteArray) got = g_byte_array_new ();
  gint64 deadline = g_get_monotonic_time () + WAIT_US;
  guint8 buf[65536];

  while (to_eof || got->len < want)
    {
      g_autoptr (GError) local = NULL;
      gssize n = g_pollable_input_stream_read_nonblocking (in, buf, sizeof buf, NULL, &local);

      if (n == 0)
        break;
      if (n > 0)
        g_byte_array_append (got, buf, n);
      else if (g_error_matches (local, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        g_main_context_iteration (NULL, TRUE);
      else
        {
          g_propagate_error (error, g_steal_pointer (&local));
          return NULL;
        }
      if (g_get_monotonic_time () > deadline)
        g_error ("read timed out after %u bytes", got->len);
    }
  return g_steal_pointer (&got);
}

static guint8 *
pattern (gsize n, guint seed)
{
  guint8 *p = g_malloc (n);
  guint32 x = seed * 2654435761u + 1;

  for (gsize i = 0; i < n; i++)
    {
      x = x * 1103515245u + 12345u;
      p[i] = x >> 24;
    }
  return p;
}

/* One step of a non-blocking transfer: writes what fits of data[*off..len) (then FIN once all is
 * written), reads what came into got; TRUE when something moved. */
static gboolean
pump_step (GIOStream *io, const guint8 *data, gsize len, gsize *off, gboolean *fin_sent,
           GByteArray *got, gboolean *eof)
{
  GPollableOutputStream *out = G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (io));
  GPollableInputStream *in = G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (io));
  gboolean moved = FALSE;
  guint8 buf[65536];

  if (*off < len)
    {
      g_autoptr (GError) error = NULL;
      gssize n = g_pollable_output_stream_write_nonblocking (out, data + *off, len - *off, NULL,
                                                             &error);

      if (n < 0 && !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        g_error ("write: %s", error->message);
      if (n > 0)
        {
          *off += n;
          moved = TRUE;
        }
    }
  else if (!*fin_sent)
    {
      g_assert_true (g_output_stream_close (G_OUTPUT_STREAM (out), NULL, NULL));
      *fin_sent = TRUE;
      moved = TRUE;
    }
  while (!*eof)
    {
      g_autoptr (GError) error = NULL;
      gssize n = g_pollable_input_stream_read_nonblocking (in, buf, sizeof buf, NULL, &error);

      if (n == 0)
        *eof = TRUE;
      else if (n > 0)
        g_byte_array_append (got, buf, n);
      else if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        break;
      else
        g_error ("read: %s", error->message);
      moved = TRUE;
    }
  return moved;
}

/* 4 MiB each way at once, then FIN from each side: both sides see all bytes, then EOF. */
static void
test_bytes_both_ways (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) client = dial (f, NULL, TRUE, 0, f->port, &error);
  gsize n = 4 * 1024 * 1024;
  g_autofree guint8 *up = pattern (n, 1);
  g_autofree guint8 *down = pattern (n, 2);
  g_autoptr (GByteArray) got_up = g_byte_array_new ();
  g_autoptr (GByteArray) got_down = g_byte_array_new ();
  gsize up_off = 0, down_off = 0;
  gboolean up_fin = FALSE, down_fin = FALSE, up_eof = FALSE, down_eof = FALSE;
  gint64 deadline = g_get_monotonic_time () + WAIT_US;
  GIOStream *server;

  g_assert_no_error (error);
  /* The server hears of the tunnel with its first bytes. */
  write_all (client, up, 1000, FALSE);
  up_off = 1000;
  while (f->accepted->len == 0)
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (NULL, TRUE);
    }
  server = f->accepted->pdata[0];
  g_assert_nonnull (f->last_peer);
  while (!up_eof || !down_eof)
    {
      gboolean moved = pump_step (client, up, n, &up_off, &up_fin, got_down, &down_eof);

      moved |= pump_step (server, down, n, &down_off, &down_fin, got_up, &up_eof);
      if (!moved)
        g_main_context_iteration (NULL, TRUE);
      if (g_get_monotonic_time () > deadline)
        g_error ("transfer timed out: up %u, down %u", got_up->len, got_down->len);
    }
  g_assert_cmpuint (got_up->len, ==, n);
  g_assert_cmpuint (got_down->len, ==, n);
  g_assert_true (memcmp (got_up->data, up, n) == 0);
  g_assert_true (memcmp (got_down->data, down, n) == 0);
}

/* The server closes its tunnel right after writing: the client still gets the last bytes, then
 * the end (error or EOF, never a hang). */
static void
test_close_delivers_last_bytes (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) client = dial (f, NULL, TRUE, 0, f->port, &error);
  g_autoptr (GByteArray) got = NULL;
  GIOStream *server;

  g_assert_no_error (error);
  write_all (client, (const guint8 *) "hello", 5, FALSE);
  while (f->accepted->len == 0)
    g_main_context_iteration (NULL, TRUE);
  server = f->accepted->pdata[0];
  write_all (server, (const guint8 *) "last words", 10, FALSE);
  g_assert_true (g_io_stream_close (server, NULL, NULL));
  g_ptr_array_set_size (f->accepted, 0);
  got = read_some (client, 10, FALSE, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (got->data, got->len, "last words", 10);
  /* Then the connection ends. */
  {
    g_autoptr (GByteArray) rest = read_some (client, 1, TRUE, &error);

    if (rest != NULL)
      g_assert_cmpuint (rest->len, ==, 0);
    else
      g_assert_true (error->domain == G_IO_ERROR);
  }
}

static void
native_accept_cb (GIOStream *stream, gpointer user_data)
{
  g_ptr_array_add (user_data, g_object_ref (stream));
}

/* Native streams: the server opens streams beside the tunnel and the client takes them; each
 * carries its own bytes and FIN; a stream the client never reads holds up none of the others;
 * a reset reaches the peer with its code. */
static void
test_native_streams (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) client = dial (f, NULL, TRUE, 0, f->port, &error);
  g_autoptr (GPtrArray) taken = g_ptr_array_new_with_free_func (g_object_unref);
  g_autoptr (GPtrArray) opened = g_ptr_array_new_with_free_func (g_object_unref);
  gsize big = 8 * 1024 * 1024, n = 512 * 1024;
  g_autofree guint8 *stalled_bytes = pattern (big, 7);
  gsize stalled_off = 0;
  gboolean stalled_fin = FALSE, unused_eof = FALSE;
  g_autoptr (GByteArray) unused = g_byte_array_new ();
  gint64 deadline = g_get_monotonic_time () + WAIT_US;
  GIOStream *server;
  guint64 code = 0;

  g_assert_no_error (error);
  g_assert_true (GT_IS_NATIVE_STREAMS (client));
  gt_native_streams_set_accept_func (GT_NATIVE_STREAMS (client), native_accept_cb, taken);
  write_all (client, (const guint8 *) "hello", 5, FALSE);
  while (f->accepted->len == 0)
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (NULL, TRUE);
    }
  server = f->accepted->pdata[0];
  g_assert_true (GT_IS_NATIVE_STREAMS (server));

  /* Stream 0 is stalled: the server writes 8 MiB the client does not read (yet). */
  for (int i = 0; i < 5; i++)
    {
      GIOStream *s = gt_native_streams_open (GT_NATIVE_STREAMS (server), &error);

      g_assert_no_error (error);
      g_ptr_array_add (opened, s);
    }
  while (pump_step (opened->pdata[0], stalled_bytes, big, &stalled_off, &stalled_fin, unused,
                    &unused_eof))
    ;
  while (taken->len == 0)
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (NULL, TRUE);
    }
  /* Streams 1-3 carry n bytes each and FIN, read by the client while stream 0 waits (each
   * opened once the one before is done: the client takes them in this order). */
  for (guint i = 1; i <= 3; i++)
    {
      g_autofree guint8 *bytes = pattern (n, 10 + i);
      g_autoptr (GByteArray) got = NULL;

      while (pump_step (opened->pdata[0], stalled_bytes, big, &stalled_off, &stalled_fin, unused,
                        &unused_eof))
        ;
      write_all (opened->pdata[i], bytes, n, TRUE);
      while (taken->len <= i)
        {
          g_assert_cmpint (g_get_monotonic_time (), <, deadline);
          g_main_context_iteration (NULL, TRUE);
        }
      got = read_some (taken->pdata[i], 0, TRUE, &error);
      g_assert_no_error (error);
      g_assert_cmpuint (got->len, ==, n);
      g_assert_true (memcmp (got->data, bytes, n) == 0);
    }
  /* Stream 0 is still held back by its window, not done. */
  g_assert_cmpuint (stalled_off, <, big);

  /* Stream 4: the server resets it with a code the client sees. */
  write_all (opened->pdata[4], (const guint8 *) "x", 1, FALSE);
  while (taken->len < 5)
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (NULL, TRUE);
    }
  gt_native_streams_reset (GT_NATIVE_STREAMS (opened->pdata[4]), 0x105);
  while (!gt_native_streams_get_reset_code (GT_NATIVE_STREAMS (taken->pdata[4]), &code))
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (NULL, TRUE);
    }
  g_assert_cmpuint (code, ==, 0x105);

  /* The stalled stream, read at last, gets all its bytes. */
  {
    g_autoptr (GByteArray) got = g_byte_array_new ();
    gsize ignored = 0;
    gboolean fin = TRUE, eof = FALSE;

    while (!stalled_fin || !eof)
      {
        gboolean moved = pump_step (opened->pdata[0], stalled_bytes, big, &stalled_off,
                                    &stalled_fin, unused, &unused_eof);

        moved |= pump_step (taken->pdata[0], NULL, 0, &ignored, &fin, got, &eof);
        if (!moved)
          g_main_context_iteration (NULL, TRUE);
        g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      }
    g_assert_cmpuint (got->len, ==, big);
    g_assert_true (memcmp (got->data, stalled_bytes, big) == 0);
  }
}

/* Send buffers (gt-quic.c): a stream takes up to 1 MiB the network has not taken yet, and a
 * connection holds at most 32 MiB of its streams' bytes until the peer acknowledges them. With
 * nothing sent yet (the main loop has not run), 32 streams take 1 MiB each and the next none;
 * once the peer reads, the acknowledgements make room again and every byte arrives. */
#define SEND_UNSENT_HIGH (1024 * 1024)
#define SEND_CONN_MAX (32 * 1024 * 1024)

static void
test_send_buffers (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) client = dial (f, NULL, TRUE, 0, f->port, &error);
  g_autoptr (GPtrArray) taken = g_ptr_array_new_with_free_func (g_object_unref);
  g_autoptr (GPtrArray) opened = g_ptr_array_new_with_free_func (g_object_unref);
  const guint nstreams = SEND_CONN_MAX / SEND_UNSENT_HIGH + 1;
  const gsize len = SEND_UNSENT_HIGH + 64 * 1024;
  g_autofree guint8 *bytes = pattern (len, 3);
  g_autofree gsize *off = g_new0 (gsize, nstreams);
  g_autofree gboolean *fin = g_new0 (gboolean, nstreams);
  g_autofree gboolean *eof = g_new0 (gboolean, nstreams);
  g_autoptr (GPtrArray) got = g_ptr_array_new_with_free_func ((GDestroyNotify) g_byte_array_unref);
  gint64 deadline = g_get_monotonic_time () + WAIT_US;
  GByteArray *unused = g_byte_array_new ();
  gboolean unused_eof = FALSE;
  GIOStream *server;
  guint done = 0;

  g_assert_no_error (error);
  gt_native_streams_set_accept_func (GT_NATIVE_STREAMS (client), native_accept_cb, taken);
  write_all (client, (const guint8 *) "hello", 5, FALSE);
  while (f->accepted->len == 0)
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (NULL, TRUE);
    }
  server = f->accepted->pdata[0];

  for (guint i = 0; i < nstreams; i++)
    {
      GIOStream *s = gt_native_streams_open (GT_NATIVE_STREAMS (server), &error);
      GPollableOutputStream *out = G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (s));
      gssize n;

      g_assert_no_error (error);
      g_ptr_array_add (opened, s);
      g_ptr_array_add (got, g_byte_array_new ());
      /* Writes until the stream refuses, without running the main loop. */
      while ((n = g_pollable_output_stream_write_nonblocking (out, bytes + off[i], len - off[i],
                                                              NULL, NULL))
             > 0)
        off[i] += n;
      g_assert_cmpuint (off[i], ==, i < nstreams - 1 ? SEND_UNSENT_HIGH : 0);
      g_assert_false (g_pollable_output_stream_is_writable (out));
    }

  /* The client reads every stream while the server writes the rest and FIN. */
  while (done < nstreams)
    {
      gboolean moved = FALSE;

      done = 0;
      for (guint i = 0; i < nstreams; i++)
        {
          gsize ignored = 0;
          gboolean no_fin = TRUE;

          moved |= pump_step (opened->pdata[i], bytes, len, &off[i], &fin[i], unused,
                              &unused_eof);
          if (i < taken->len)
            moved |= pump_step (taken->pdata[i], NULL, 0, &ignored, &no_fin, got->pdata[i],
                                &eof[i]);
          done += eof[i];
        }
      if (!moved)
        g_main_context_iteration (NULL, TRUE);
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
    }
  for (guint i = 0; i < nstreams; i++)
    {
      GByteArray *g = got->pdata[i];

      g_assert_cmpmem (g->data, g->len, bytes, len);
    }
  g_assert_cmpuint (unused->len, ==, 0);
  g_byte_array_unref (unused);
}

/* Verification: the right pin passes; a wrong one and an untrusted CA fail with their reason. */
static void
test_verify (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *pin = gt_certificate_fingerprint (f->cert);
  g_autofree char *wrong = g_strdup (pin);
  g_autoptr (GIOStream) ok = NULL;
  g_autoptr (GIOStream) ca = NULL;
  g_autoptr (GIOStream) bad = NULL;
  g_autoptr (GIOStream) sys = NULL;

  ok = dial (f, pin, FALSE, 0, f->port, &error);
  g_assert_no_error (error);
  ca = dial (f, f->cert_path, FALSE, 0, f->port, &error);
  g_assert_no_error (error);

  wrong[strlen (wrong) - 1] = wrong[strlen (wrong) - 1] == 'a' ? 'b' : 'a';
  bad = dial (f, wrong, FALSE, 0, f->port, &error);
  g_assert_null (bad);
  g_assert_error (error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE);
  g_assert_nonnull (strstr (error->message, "does not match the pinned fingerprint"));
  g_clear_error (&error);

  /* The system CAs do not know a self-signed certificate. */
  sys = dial (f, NULL, FALSE, 0, f->port, &error);
  g_assert_null (sys);
  g_assert_error (error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE);
  g_assert_nonnull (strstr (error->message, "not trusted"));
}

/* Nobody answers on the port: the handshake gives up after its timeout, with a clear error. */
static void
test_no_answer (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  guint16 port;
  int fd = udp_bound (&port); /* bound, never read: datagrams vanish */
  gint64 t0 = g_get_monotonic_time ();
  g_autoptr (GIOStream) io = dial (f, NULL, TRUE, 1500, port, &error);
  double took = (g_get_monotonic_time () - t0) / 1e6;

  close (fd);
  g_assert_null (io);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT);
  g_assert_nonnull (strstr (error->message, "UDP blocked"));
  g_assert_cmpfloat (took, >=, 1.4);
  g_assert_cmpfloat (took, <, 10.0);
}

/* The listener is gone (its connections closed, its port too): a new dial fails, no hang. */
static void
test_listener_gone (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) io = NULL;

  gt_transport_listener_free (f->listener);
  f->listener = NULL;
  io = dial (f, NULL, TRUE, 1000, f->port, &error);
  g_assert_null (io);
  g_assert_nonnull (error);
}

/* Datagrams that are no QUIC packet (empty, one byte, a short header for no connection) are
 * dropped and the server still accepts tunnels: an empty one once aborted it (fuzz-quic). */
static void
test_junk_datagrams (Fixture *f, gconstpointer data)
{
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) client = NULL;
  struct sockaddr_in to = { 0 };
  const guint8 junk[] = { 0x40, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18 };
  gint64 deadline = g_get_monotonic_time () + WAIT_US;
  int fd = gt_udp_bind_on (lo, 0, &error);

  g_assert_no_error (error);
  to.sin_family = AF_INET;
  to.sin_port = g_htons (f->port);
  to.sin_addr.s_addr = g_htonl (INADDR_LOOPBACK);
  g_assert_cmpint (sendto (fd, junk, 0, 0, (struct sockaddr *) &to, sizeof to), ==, 0);
  g_assert_cmpint (sendto (fd, junk, 1, 0, (struct sockaddr *) &to, sizeof to), ==, 1);
  g_assert_cmpint (sendto (fd, junk, sizeof junk, 0, (struct sockaddr *) &to, sizeof to), ==,
                   sizeof junk);
  close (fd);
  for (int i = 0; i < 50 && g_main_context_iteration (NULL, FALSE); i++)
    ;

  client = dial (f, NULL, TRUE, 0, f->port, &error);
  g_assert_no_error (error);
  write_all (client, junk, sizeof junk, FALSE);
  while (f->accepted->len == 0)
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (NULL, TRUE);
    }
}

typedef struct
{
  guint32 flow_id;
  guint16 service_index;
  GBytes *bytes;
} Datagram;

static void
datagram_free (gpointer data)
{
  Datagram *d = data;

  g_bytes_unref (d->bytes);
  g_free (d);
}

static void
collect_datagram_cb (GtMux *mux, guint32 flow_id, guint16 service_index, const guint8 *data,
                     gsize len, gpointer user_data)
{
  Datagram *d = g_new0 (Datagram, 1);

  d->flow_id = flow_id;
  d->service_index = service_index;
  d->bytes = g_bytes_new (data, len);
  g_ptr_array_add (user_data, d);
}

static void
wait_datagrams_at (GPtrArray *got, guint n, int line)
{
  gint64 deadline = g_get_monotonic_time () + WAIT_US;

  while (got->len < n)
    {
      if (g_get_monotonic_time () > deadline)
        g_error ("line %d: %u of %u datagrams came", line, got->len, n);
      g_main_context_iteration (NULL, TRUE);
    }
}
#define wait_datagrams(got, n) wait_datagrams_at ((got), (n), __LINE__)

static void
check_datagram (GPtrArray *got, guint i, guint32 flow_id, guint16 index, const guint8 *want,
                gsize len)
{
  Datagram *d = got->pdata[i];

  g_assert_cmpuint (d->flow_id, ==, flow_id);
  g_assert_cmpuint (d->service_index, ==, index);
  g_assert_cmpmem (g_bytes_get_data (d->bytes, NULL), g_bytes_get_size (d->bytes), want, len);
}

/* gt's datagrams over a QUIC tunnel (two muxes): those that fit a packet go as QUIC DATAGRAM
 * frames, larger ones as DATAGRAM frames on the control stream, both ways, byte for byte; a
 * malformed QUIC datagram is dropped with one warning and the tunnel carries on. */
static void
test_datagrams (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) client = dial (f, NULL, TRUE, 0, f->port, &error);
  g_autoptr (GPtrArray) server_got = g_ptr_array_new_with_free_func (datagram_free);
  g_autoptr (GPtrArray) client_got = g_ptr_array_new_with_free_func (datagram_free);
  g_autoptr (GtMux) cmux = NULL;
  g_autoptr (GtMux) smux = NULL;
  /* 1 and 1000 bytes fit the first packets of a path (1200 bytes), 1200 bytes fit once path MTU
   * discovery found the 1452 bytes of loopback; the others never fit. */
  const gsize sizes[] = { 1, 1000, 1200, 9000, 65000 };
  guint8 *bytes[G_N_ELEMENTS (sizes)];
  gint64 deadline = g_get_monotonic_time () + WAIT_US;
  guint64 native = 0, framed = 0, dropped = 0;
  const guint8 bad[] = { 0, 0, 0, 0, 0, 1, 'x' }; /* flow id 0 */

  g_assert_no_error (error);
  for (guint i = 0; i < G_N_ELEMENTS (sizes); i++)
    bytes[i] = pattern (sizes[i], 40 + i);
  /* What fits one packet goes as a QUIC datagram: at least 1000 bytes (with gt's prefix) from the
   * start, never more than a 1452-byte packet holds. */
  g_assert_cmpuint (gt_native_streams_get_max_datagram (GT_NATIVE_STREAMS (client)), >=,
                    GT_DATAGRAM_PREFIX_SIZE + 1000);
  g_assert_cmpuint (gt_native_streams_get_max_datagram (GT_NATIVE_STREAMS (client)), <,
                    1452);

  cmux = gt_mux_new (client, FALSE, NULL, 0);
  gt_mux_set_datagrams (cmux, TRUE);
  gt_mux_set_datagram_func (cmux, collect_datagram_cb, client_got);
  gt_mux_start (cmux);
  /* The first one, framed on the control stream, makes the server see the tunnel. */
  g_assert_true (gt_mux_send_datagram (cmux, 3, 2, bytes[3], sizes[3]));
  while (f->accepted->len == 0)
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (NULL, TRUE);
    }
  smux = gt_mux_new (f->accepted->pdata[0], TRUE, NULL, 0);
  gt_mux_set_datagrams (smux, TRUE);
  gt_mux_set_datagram_func (smux, collect_datagram_cb, server_got);
  gt_mux_start (smux);
  wait_datagrams (server_got, 1);
  check_datagram (server_got, 0, 3, 2, bytes[3], sizes[3]);

  g_assert_true (gt_mux_send_datagram (cmux, 3, 2, bytes[1], sizes[1]));
  wait_datagrams (server_got, 2);
  check_datagram (server_got, 1, 3, 2, bytes[1], sizes[1]);
  gt_mux_get_datagram_counts (cmux, &native, &framed, &dropped);
  g_assert_cmpuint (native, ==, 1);
  g_assert_cmpuint (framed, ==, 1);
  g_assert_cmpuint (dropped, ==, 0);

  /* Path MTU discovery raises both ends' packets to 1452 bytes (loopback carries them). */
  while (gt_native_streams_get_max_datagram (GT_NATIVE_STREAMS (f->accepted->pdata[0]))
           < GT_DATAGRAM_PREFIX_SIZE + 1200
         || gt_native_streams_get_max_datagram (GT_NATIVE_STREAMS (client))
              < GT_DATAGRAM_PREFIX_SIZE + 1200)
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (NULL, TRUE);
    }

  /* Server to client, every size, one at a time (each path keeps its own order). */
  for (guint i = 0; i < G_N_ELEMENTS (sizes); i++)
    {
      g_assert_true (gt_mux_send_datagram (smux, 70000 + i, 0, bytes[i], sizes[i]));
      wait_datagrams (client_got, i + 1);
      check_datagram (client_got, i, 70000 + i, 0, bytes[i], sizes[i]);
    }
  gt_mux_get_datagram_counts (smux, &native, &framed, &dropped);
  g_assert_cmpuint (native, ==, 3);
  g_assert_cmpuint (framed, ==, 2);
  g_assert_cmpuint (dropped, ==, 0);

  /* A malformed QUIC datagram: one warning, nothing delivered, the tunnel goes on. */
  g_test_expect_message ("gt-mux", G_LOG_LEVEL_WARNING, "*bad datagram dropped*flow id 0*");
  g_assert_true (gt_native_streams_send_datagram (GT_NATIVE_STREAMS (client), bad, sizeof bad,
                                                  NULL, 0));
  g_assert_true (gt_mux_send_datagram (cmux, 9, 1, bytes[0], sizes[0]));
  wait_datagrams (server_got, 3);
  g_test_assert_expected_messages ();
  check_datagram (server_got, 2, 9, 1, bytes[0], sizes[0]);
  g_assert_false (gt_mux_is_closed (smux));

  gt_mux_close (cmux, GT_ERROR_CODE_NONE, NULL);
  gt_mux_close (smux, GT_ERROR_CODE_NONE, NULL);
  for (guint i = 0; i < G_N_ELEMENTS (sizes); i++)
    g_free (bytes[i]);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  /* This test links the leaf's sources instead of loading the module gt-quic. */
  _gt_transport_register_leaf (&_gt_transport_quic);
  g_test_add ("/gt/transport/quic/bytes-both-ways", Fixture, NULL, fixture_setup,
              test_bytes_both_ways, fixture_teardown);
  g_test_add ("/gt/transport/quic/close-delivers-last-bytes", Fixture, NULL, fixture_setup,
              test_close_delivers_last_bytes, fixture_teardown);
  g_test_add ("/gt/transport/quic/native-streams", Fixture, NULL, fixture_setup,
              test_native_streams, fixture_teardown);
  g_test_add ("/gt/transport/quic/send-buffers", Fixture, NULL, fixture_setup,
              test_send_buffers, fixture_teardown);
  g_test_add ("/gt/transport/quic/verify", Fixture, NULL, fixture_setup, test_verify,
              fixture_teardown);
  g_test_add ("/gt/transport/quic/no-answer", Fixture, NULL, fixture_setup, test_no_answer,
              fixture_teardown);
  g_test_add ("/gt/transport/quic/junk-datagrams", Fixture, NULL, fixture_setup,
              test_junk_datagrams, fixture_teardown);
  g_test_add ("/gt/transport/quic/listener-gone", Fixture, NULL, fixture_setup, test_listener_gone,
              fixture_teardown);
  g_test_add ("/gt/transport/quic/datagrams", Fixture, NULL, fixture_setup, test_datagrams,
              fixture_teardown);
  return g_test_run ();
}
