/* test-client.c: an in-process server and client relay to local services named by IP literal or by
 * host name (looked up without blocking the main loop). */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-client.h"
#include "gt-frame.h"
#include "gt-server.h"

#define TIMEOUT_US (10 * G_USEC_PER_SEC)

/* ---- local echo service (IPv4 and IPv6 loopback on one port) ---- */

typedef struct
{
  GSocketConnection *conn;
  guint8 buf[4096];
} EchoConn;

static void echo_read (EchoConn *e);

static void
echo_conn_free (EchoConn *e)
{
  g_io_stream_close (G_IO_STREAM (e->conn), NULL, NULL);
  g_object_unref (e->conn);
  g_free (e);
}

static void
echo_written_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  EchoConn *e = user_data;

  if (!g_output_stream_write_all_finish (G_OUTPUT_STREAM (source), result, NULL, NULL))
    {
      echo_conn_free (e);
      return;
    }
  echo_read (e);
}

static void
echo_read_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  EchoConn *e = user_data;
  gssize n = g_input_stream_read_finish (G_INPUT_STREAM (source), result, NULL);

  if (n <= 0)
    {
      echo_conn_free (e);
      return;
    }
  g_output_stream_write_all_async (g_io_stream_get_output_stream (G_IO_STREAM (e->conn)), e->buf,
                                   n, G_PRIORITY_DEFAULT, NULL, echo_written_cb, e);
}

static void
echo_read (EchoConn *e)
{
  g_input_stream_read_async (g_io_stream_get_input_stream (G_IO_STREAM (e->conn)), e->buf,
                             sizeof e->buf, G_PRIORITY_DEFAULT, NULL, echo_read_cb, e);
}

static gboolean
echo_incoming_cb (GSocketService *service, GSocketConnection *conn, GObject *source,
                  gpointer user_data)
{
  EchoConn *e = g_new0 (EchoConn, 1);

  e->conn = g_object_ref (conn);
  echo_read (e);
  return TRUE;
}

/* ---- fixture ---- */

typedef struct
{
  GSocketService *echo;
  guint16 echo_port;
  GtServer *server;
  GtClient *client;
  GtClient *visitor; /* forward tests */
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;

  f->echo = g_socket_service_new ();
  f->echo_port = g_socket_listener_add_any_inet_port (G_SOCKET_LISTENER (f->echo), NULL, &error);
  g_assert_no_error (error);
  g_signal_connect (f->echo, "incoming", G_CALLBACK (echo_incoming_cb), NULL);
  g_socket_service_start (f->echo);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  gint64 deadline = g_get_monotonic_time () + G_USEC_PER_SEC / 5;

  if (f->visitor)
    gt_client_stop (f->visitor);
  g_clear_object (&f->visitor);
  if (f->client)
    gt_client_stop (f->client);
  if (f->server)
    gt_server_stop (f->server);
  g_clear_object (&f->client);
  g_clear_object (&f->server);
  g_socket_service_stop (f->echo);
  g_socket_listener_close (G_SOCKET_LISTENER (f->echo));
  g_clear_object (&f->echo);
  while (g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, FALSE);
}

static void
start_server (Fixture *f)
{
  char *argv[] = { "--addr", "127.0.0.1:0", "--id", "demo", "--secret", "s3cret-s3cret",
                   "--id", "visitor", "--secret", "v1sitor-secret", "--id", "raw", "--secret",
                   "raw-secret", "--tcpForwardAllow", "visitor:demo", "--tcpForwardAllow",
                   "visitor:ghost", NULL };
  g_autoptr (GtServerConfig) config = gt_server_config_new ();
  g_autoptr (GError) error = NULL;

  g_assert_true (gt_server_config_apply_args (config, G_N_ELEMENTS (argv) - 1, argv, &error));
  g_assert_true (gt_server_config_validate (config, NULL, &error));
  g_assert_no_error (error);
  f->server = gt_server_new (g_steal_pointer (&config));
  g_assert_true (gt_server_start (f->server, &error));
  g_assert_no_error (error);
}

/* A client of the "demo" service at local_host; first_remote (if not NULL) is listed before the
 * server's tcp:// address. */
static void
start_client_with (Fixture *f, const char *local_host, const char *first_remote)
{
  g_autofree char *remote =
    g_strdup_printf ("tcp://%s", gt_server_get_listen_address (f->server));
  g_autofree char *local = g_strdup_printf ("http://%s:%u", local_host, f->echo_port);
  char *argv_one[] = { "--id", "demo", "--secret", "s3cret-s3cret", "--remote", remote,
                       "--local", local, "--hostPrefix", "demo", "--reconnectDelay", "100ms",
                       NULL };
  char *argv_two[] = { "--id", "demo", "--secret", "s3cret-s3cret",
                       "--remote", (char *) first_remote, "--remote", remote,
                       "--local", local, "--hostPrefix", "demo", "--reconnectDelay", "100ms",
                       NULL };
  char **argv = first_remote != NULL ? argv_two : argv_one;
  int argc = first_remote != NULL ? G_N_ELEMENTS (argv_two) - 1 : G_N_ELEMENTS (argv_one) - 1;
  g_autoptr (GtClientConfig) config = gt_client_config_new ();
  g_autoptr (GError) error = NULL;
  gint64 deadline;

  g_assert_true (gt_client_config_apply_args (config, argc, argv, &error));
  g_assert_true (gt_client_config_validate (config, NULL, &error));
  g_assert_no_error (error);
  f->client = gt_client_new (g_steal_pointer (&config));
  g_assert_true (gt_client_start (f->client, &error));
  g_assert_no_error (error);

  deadline = g_get_monotonic_time () + TIMEOUT_US;
  while (gt_client_get_n_ready (f->client) == 0 && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, TRUE);
  g_assert_cmpuint (gt_client_get_n_ready (f->client), >=, 1);
}

static void
start_client (Fixture *f, const char *local_host)
{
  start_client_with (f, local_host, NULL);
}

/* Connects to the server's HTTP port, sends a request for the "demo" service and returns what
 * comes back once as many bytes as were sent arrived (the local service echoes). */
static char *
request_through_tunnel (Fixture *f)
{
  static const char request[] = "GET /hello HTTP/1.1\r\nHost: demo.example.com\r\n\r\n";
  g_autoptr (GSocketConnectable) addr = NULL;
  g_autoptr (GSocketClient) sc = g_socket_client_new ();
  g_autoptr (GSocketConnection) conn = NULL;
  g_autoptr (GError) error = NULL;
  GString *got = g_string_new (NULL);
  gint64 deadline = g_get_monotonic_time () + TIMEOUT_US;
  int fd;

  addr = g_network_address_parse (gt_server_get_listen_address (f->server), 0, &error);
  g_assert_no_error (error);
  /* A loopback connect completes in the kernel's backlog: blocking here is harmless. */
  conn = g_socket_client_connect (sc, addr, NULL, &error);
  g_assert_no_error (error);
  fd = g_socket_get_fd (g_socket_connection_get_socket (conn));
  g_assert_cmpint (send (fd, request, strlen (request), MSG_NOSIGNAL), ==, strlen (request));

  while (got->len < strlen (request) && g_get_monotonic_time () < deadline)
    {
      char buf[512];
      ssize_t n = recv (fd, buf, sizeof buf, MSG_DONTWAIT);

      if (n > 0)
        g_string_append_len (got, buf, n);
      else if (n == 0 || (errno != EAGAIN && errno != EINTR))
        break;
      else
        g_main_context_iteration (NULL, TRUE);
    }
  return g_string_free (got, FALSE);
}

static void
test_relay (Fixture *f, gconstpointer data)
{
  const char *local_host = data;
  g_autofree char *reply = NULL;

  start_server (f);
  start_client (f, local_host);
  reply = request_through_tunnel (f);
  g_assert_cmpstr (reply, ==, "GET /hello HTTP/1.1\r\nHost: demo.example.com\r\n\r\n");
  /* A second connection reuses the resolved address. */
  g_clear_pointer (&reply, g_free);
  reply = request_through_tunnel (f);
  g_assert_cmpstr (reply, ==, "GET /hello HTTP/1.1\r\nHost: demo.example.com\r\n\r\n");
}

/* Auto mode (remotes of two transports): the ws:// remote refuses, the tcp:// one answers the
 * probe's PINGs; the state says which was chosen, why, and what each probe measured. */
static void
test_auto_choice (Fixture *f, gconstpointer data)
{
  g_autofree char *tcp = NULL;
  g_autoptr (GVariant) state = NULL;
  g_autoptr (GVariant) choice = NULL;
  g_autoptr (GVariant) probes = NULL;
  g_autoptr (GVariant) dead = NULL;
  g_autoptr (GVariant) live = NULL;
  const char *chosen = NULL, *reason = NULL, *remote = NULL;
  gboolean ok = TRUE;
  double rtt = 0, loss = 1;
  g_autofree char *reply = NULL;

  start_server (f);
  tcp = g_strdup_printf ("tcp://%s", gt_server_get_listen_address (f->server));
  start_client_with (f, "127.0.0.1", "ws://127.0.0.1:1");
  state = gt_client_get_state (f->client);
  choice = g_variant_lookup_value (state, "transportChoice", G_VARIANT_TYPE_VARDICT);
  g_assert_nonnull (choice);
  g_assert_true (g_variant_lookup (choice, "chosen", "&s", &chosen));
  g_assert_cmpstr (chosen, ==, tcp);
  g_assert_true (g_variant_lookup (choice, "reason", "&s", &reason));
  g_assert_true (g_str_has_prefix (reason, "ws://127.0.0.1:1 failed ("));
  probes = g_variant_lookup_value (choice, "probes", G_VARIANT_TYPE ("aa{sv}"));
  g_assert_cmpuint (g_variant_n_children (probes), ==, 2);
  dead = g_variant_get_child_value (probes, 0);
  g_assert_true (g_variant_lookup (dead, "ok", "b", &ok));
  g_assert_false (ok);
  live = g_variant_get_child_value (probes, 1);
  g_assert_true (g_variant_lookup (live, "remote", "&s", &remote));
  g_assert_cmpstr (remote, ==, tcp);
  g_assert_true (g_variant_lookup (live, "ok", "b", &ok));
  g_assert_true (ok);
  g_assert_true (g_variant_lookup (live, "rttMs", "d", &rtt));
  g_assert_cmpfloat (rtt, >, 0);
  g_assert_true (g_variant_lookup (live, "loss", "d", &loss));
  g_assert_cmpfloat (loss, <, 1);
  /* The tunnel it chose carries the service. */
  reply = request_through_tunnel (f);
  g_assert_true (g_str_has_prefix (reply, "GET /hello"));
}

/* The server answers a probe's PINGs before HELLO, each with its own bytes, up to 32; the 33rd
 * ends the connection. */
static void
test_probe_answers (Fixture *f, gconstpointer data)
{
  g_autoptr (GSocketConnectable) addr = NULL;
  g_autoptr (GSocketClient) sc = g_socket_client_new ();
  g_autoptr (GSocketConnection) conn = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GByteArray) out = g_byte_array_new ();
  g_autoptr (GByteArray) got = g_byte_array_new ();
  gint64 deadline = g_get_monotonic_time () + TIMEOUT_US;
  gboolean eof = FALSE;
  int fd;

  start_server (f);
  addr = g_network_address_parse (gt_server_get_listen_address (f->server), 0, &error);
  g_assert_no_error (error);
  conn = g_socket_client_connect (sc, addr, NULL, &error);
  g_assert_no_error (error);
  fd = g_socket_get_fd (g_socket_connection_get_socket (conn));
  g_byte_array_set_size (out, GT_PREFACE_SIZE);
  gt_preface_encode (out->data);
  for (guint i = 0; i < 33; i++)
    {
      guint8 frame[GT_FRAME_HEADER_SIZE + 8];
      guint64 seq = GUINT64_TO_BE ((guint64) i + 1000);

      gt_frame_header_encode (frame, GT_FRAME_PING, 0, 0, 8);
      memcpy (frame + GT_FRAME_HEADER_SIZE, &seq, 8);
      g_byte_array_append (out, frame, sizeof frame);
    }
  g_assert_cmpint (send (fd, out->data, out->len, MSG_NOSIGNAL), ==, out->len);
  while (!eof && g_get_monotonic_time () < deadline)
    {
      guint8 buf[4096];
      ssize_t n = recv (fd, buf, sizeof buf, MSG_DONTWAIT);

      if (n > 0)
        g_byte_array_append (got, buf, n);
      else if (n == 0 || (errno != EAGAIN && errno != EINTR))
        eof = TRUE;
      else
        g_main_context_iteration (NULL, TRUE);
    }
  g_assert_true (eof);
  g_assert_cmpuint (got->len, ==, 32 * (GT_FRAME_HEADER_SIZE + 8));
  for (guint i = 0; i < 32; i++)
    {
      const guint8 *p = got->data + i * (GT_FRAME_HEADER_SIZE + 8);
      GtFrameHeader h;
      guint64 seq;

      g_assert_cmpint (gt_frame_header_decode (p, GT_FRAME_HEADER_SIZE + 8, &h, NULL), ==,
                       GT_DECODE_OK);
      g_assert_cmpuint (h.type, ==, GT_FRAME_PING);
      g_assert_cmpuint (h.flags, ==, GT_FRAME_FLAG_ACK);
      memcpy (&seq, p + GT_FRAME_HEADER_SIZE, 8);
      g_assert_cmpuint (GUINT64_FROM_BE (seq), ==, i + 1000);
    }
}

/* Auto mode with a remote that never answers its TLS handshake (a listener that accepts nothing):
 * the round decides at its deadline, on the other remote. */
static void
test_auto_deadline (Fixture *f, gconstpointer data)
{
  g_autoptr (GSocket) silent = NULL;
  g_autoptr (GSocketAddress) any = NULL;
  g_autoptr (GSocketAddress) bound = NULL;
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) state = NULL;
  g_autoptr (GVariant) choice = NULL;
  g_autofree char *tls = NULL;
  g_autofree char *tcp = NULL;
  g_autofree char *want = NULL;
  const char *chosen = NULL, *reason = NULL;
  gint64 t0;

  silent = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP,
                         &error);
  g_assert_no_error (error);
  any = g_inet_socket_address_new (lo, 0);
  g_assert_true (g_socket_bind (silent, any, TRUE, &error));
  g_assert_true (g_socket_listen (silent, &error));
  bound = g_socket_get_local_address (silent, &error);
  g_assert_no_error (error);
  tls = g_strdup_printf ("tls://127.0.0.1:%u",
                         g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound)));
  start_server (f);
  tcp = g_strdup_printf ("tcp://%s", gt_server_get_listen_address (f->server));
  t0 = g_get_monotonic_time ();
  start_client_with (f, "127.0.0.1", tls);
  g_test_message ("a tunnel after %.1f s", (g_get_monotonic_time () - t0) / 1e6);
  state = gt_client_get_state (f->client);
  choice = g_variant_lookup_value (state, "transportChoice", G_VARIANT_TYPE_VARDICT);
  g_assert_true (g_variant_lookup (choice, "chosen", "&s", &chosen));
  g_assert_cmpstr (chosen, ==, tcp);
  g_assert_true (g_variant_lookup (choice, "reason", "&s", &reason));
  want = g_strdup_printf ("%s failed (no answer within 4000 ms); %s rtt ", tls, tcp);
  g_assert_true (g_str_has_prefix (reason, want));
}

/* ---- tcpForward through the in-process server (docs/protocol.md §6.9) ---- */

static GtClient *
start_visitor (Fixture *f)
{
  g_autofree char *remote =
    g_strdup_printf ("tcp://%s", gt_server_get_listen_address (f->server));
  g_autofree char *local = g_strdup_printf ("http://127.0.0.1:%u", f->echo_port);
  char *argv[] = { "--id", "visitor", "--secret", "v1sitor-secret", "--remote", remote,
                   "--local", local, "--hostPrefix", "visitor", NULL };
  g_autoptr (GtClientConfig) config = gt_client_config_new ();
  g_autoptr (GError) error = NULL;
  GtClient *client;
  gint64 deadline;

  g_assert_true (gt_client_config_apply_args (config, G_N_ELEMENTS (argv) - 1, argv, &error));
  g_assert_true (gt_client_config_validate (config, NULL, &error));
  g_assert_no_error (error);
  client = gt_client_new (g_steal_pointer (&config));
  gt_client_enable_forward (client);
  g_assert_true (gt_client_start (client, &error));
  g_assert_no_error (error);
  deadline = g_get_monotonic_time () + TIMEOUT_US;
  while (gt_client_get_n_ready (client) == 0 && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, TRUE);
  g_assert_cmpuint (gt_client_get_n_ready (client), >=, 1);
  return client;
}

static void
opened_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GAsyncResult **out = user_data;

  *out = g_object_ref (result);
}

/* Opens a forward stream and runs the loop until it is answered. */
static GIOStream *
open_forward (GtClient *client, const char *prefix, GError **error)
{
  g_autoptr (GAsyncResult) result = NULL;
  gint64 deadline = g_get_monotonic_time () + TIMEOUT_US;

  gt_client_open_forward_stream_async (client, prefix, NULL, opened_cb, &result);
  while (result == NULL && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, TRUE);
  g_assert_nonnull (result);
  return gt_client_open_forward_stream_finish (client, result, error);
}

/* The API: a stream to the demo client's echo; refusals as GErrors. */
static void
test_forward_api (Fixture *f, gconstpointer data)
{
  static const char msg[] = "through the server and back";
  g_autoptr (GIOStream) io = NULL;
  g_autoptr (GError) error = NULL;
  GSocket *socket;
  GString *got = g_string_new (NULL);
  gint64 deadline;

  start_server (f);
  start_client (f, "127.0.0.1");
  f->visitor = start_visitor (f);

  io = open_forward (f->visitor, "Demo", &error);
  g_assert_no_error (error);
  g_assert_true (G_IS_SOCKET_CONNECTION (io));
  socket = g_socket_connection_get_socket (G_SOCKET_CONNECTION (io));
  g_socket_set_blocking (socket, FALSE);
  g_assert_cmpint (g_socket_send (socket, msg, strlen (msg), NULL, &error), ==, strlen (msg));
  deadline = g_get_monotonic_time () + TIMEOUT_US;
  while (got->len < strlen (msg) && g_get_monotonic_time () < deadline)
    {
      char buf[256];
      gssize n = g_socket_receive (socket, buf, sizeof buf, NULL, &error);

      if (n > 0)
        g_string_append_len (got, buf, n);
      else if (n == 0)
        break;
      else
        {
          g_assert_error (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK);
          g_clear_error (&error);
          g_main_context_iteration (NULL, TRUE);
        }
    }
  g_assert_cmpstr (got->str, ==, msg);
  g_string_free (got, TRUE);

  /* An abrupt close on the caller's side ends both hops: no stream stays behind on the target
   * client (its echo connection is closed) or on the visitor. */
  {
    GtTraffic target = { 0 }, visitor = { 0 };

    gt_client_get_traffic (f->client, &target);
    g_assert_cmpuint (target.streams, ==, 1);
    g_clear_object (&io);
    deadline = g_get_monotonic_time () + TIMEOUT_US;
    do
      {
        g_main_context_iteration (NULL, FALSE);
        gt_client_get_traffic (f->client, &target);
        gt_client_get_traffic (f->visitor, &visitor);
      }
    while ((target.streams > 0 || visitor.streams > 0) && g_get_monotonic_time () < deadline);
    g_assert_cmpuint (target.streams, ==, 0);
    g_assert_cmpuint (visitor.streams, ==, 0);
  }

  /* No rule lets visitor reach its neighbour prefix "nope" (nobody holds it either: the answer
   * does not tell). */
  g_assert_null (open_forward (f->visitor, "nope", &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED);
  g_assert_nonnull (strstr (error->message, "tcpForward to 'nope'"));
  g_clear_error (&error);
  /* A rule names ghost, but its client is away. */
  g_assert_null (open_forward (f->visitor, "ghost", &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_HOST_UNREACHABLE);
  g_clear_error (&error);
  /* Its own prefix is always allowed (frp's same-user default). */
  g_clear_object (&io);
  io = open_forward (f->visitor, "visitor", &error);
  g_assert_no_error (error);
  /* A client that did not ask for the capability cannot open one. */
  g_assert_null (open_forward (f->client, "demo", &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED);
  g_clear_error (&error);
  g_assert_null (open_forward (f->visitor, "no.dots", &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
}

/* Sends preface + a HELLO (with caps when caps != 0) for user raw and returns the header of
 * the server's answer and its payload. */
static GByteArray *
raw_handshake (Fixture *f, guint32 caps, GtFrameHeader *h)
{
  g_autoptr (GtHello) hello = gt_hello_new ("raw", "raw-secret");
  g_autoptr (GByteArray) out = g_byte_array_new ();
  g_autoptr (GSocketConnectable) addr = NULL;
  g_autoptr (GSocketClient) sc = g_socket_client_new ();
  g_autoptr (GSocketConnection) conn = NULL;
  g_autoptr (GError) error = NULL;
  GByteArray *in = g_byte_array_new ();
  gint64 deadline = g_get_monotonic_time () + TIMEOUT_US;
  int fd;

  hello->caps = caps;
  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, "rawsvc", 0, FALSE);
  g_byte_array_set_size (out, GT_PREFACE_SIZE);
  gt_preface_encode (out->data);
  g_assert_true (gt_frame_append_hello (out, hello, NULL));
  addr = g_network_address_parse (gt_server_get_listen_address (f->server), 0, &error);
  conn = g_socket_client_connect (sc, addr, NULL, &error);
  g_assert_no_error (error);
  fd = g_socket_get_fd (g_socket_connection_get_socket (conn));
  g_assert_cmpint (send (fd, out->data, out->len, MSG_NOSIGNAL), ==, out->len);
  while (g_get_monotonic_time () < deadline)
    {
      guint8 buf[512];
      ssize_t n = recv (fd, buf, sizeof buf, MSG_DONTWAIT);

      if (n > 0)
        g_byte_array_append (in, buf, n);
      if (gt_frame_header_decode (in->data, in->len, h, NULL) == GT_DECODE_OK
          && in->len >= GT_FRAME_HEADER_SIZE + h->length)
        break;
      if (n == 0)
        break;
      g_main_context_iteration (NULL, FALSE);
      g_usleep (1000);
    }
  g_assert_cmpint (gt_frame_header_decode (in->data, in->len, h, NULL), ==, GT_DECODE_OK);
  g_byte_array_remove_range (in, 0, GT_FRAME_HEADER_SIZE);
  return in;
}

/* Capability negotiation against a real server: a HELLO without CAPS (an older client) gets
 * the WELCOME it always got, byte for byte; with CAPS, the server answers with the ones it
 * knows. */
static void
test_forward_negotiation (Fixture *f, gconstpointer data)
{
  GtFrameHeader h;
  g_autoptr (GByteArray) plain = NULL;
  g_autoptr (GByteArray) caps = NULL;
  g_autoptr (GArray) ports = NULL;
  g_autoptr (GError) error = NULL;
  guint32 got = 0;

  start_server (f);
  plain = raw_handshake (f, 0, &h);
  g_assert_cmpuint (h.type, ==, GT_FRAME_WELCOME);
  g_assert_cmpuint (h.flags, ==, 0);
  g_assert_cmpuint (h.length, ==, 2);
  ports = gt_welcome_decode (plain->data, h.length, &error); /* what an old client runs */
  g_assert_no_error (error);

  caps = raw_handshake (f, GT_CAP_FORWARD | 0x80000000u, &h);
  g_assert_cmpuint (h.type, ==, GT_FRAME_WELCOME);
  g_assert_cmpuint (h.flags, ==, GT_FRAME_FLAG_CAPS);
  g_clear_pointer (&ports, g_array_unref);
  ports = gt_welcome_decode_flags (caps->data, h.length, h.flags, &got, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (got, ==, GT_CAP_FORWARD); /* the unknown bit is not echoed */
}

static GtClient *
start_forwarder (Fixture *f, guint16 port)
{
  g_autofree char *remote =
    g_strdup_printf ("tcp://%s", gt_server_get_listen_address (f->server));
  g_autofree char *addr = g_strdup_printf ("127.0.0.1:%u", port);
  char *argv[] = { "--id", "visitor", "--secret", "v1sitor-secret", "--remote", remote,
                   "--tcpForwardAddr", addr, "--tcpForwardHostPrefix", "demo", NULL };
  g_autoptr (GtClientConfig) config = gt_client_config_new ();
  g_autoptr (GError) error = NULL;
  GtClient *client;
  gint64 deadline;

  g_assert_true (gt_client_config_apply_args (config, G_N_ELEMENTS (argv) - 1, argv, &error));
  g_assert_true (gt_client_config_validate (config, NULL, &error));
  g_assert_no_error (error);
  client = gt_client_new (g_steal_pointer (&config));
  g_assert_true (gt_client_start (client, &error));
  g_assert_no_error (error);
  deadline = g_get_monotonic_time () + TIMEOUT_US;
  while (gt_client_get_n_ready (client) == 0 && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, TRUE);
  g_assert_cmpuint (gt_client_get_n_ready (client), >=, 1);
  return client;
}

/* A reload starts the new client before the old one drains: both bind tcpForwardAddr, and once
 * the old one drains (its listener closed) connections go on through the new one. */
static void
test_forward_listener_handover (Fixture *f, gconstpointer data)
{
  g_autoptr (GSocket) probe = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM,
                                            G_SOCKET_PROTOCOL_TCP, NULL);
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) any = g_inet_socket_address_new (lo, 0);
  g_autoptr (GSocketAddress) bound = NULL;
  g_autoptr (GtClient) second = NULL;
  g_autoptr (GError) error = NULL;
  guint16 port;

  g_assert_true (g_socket_bind (probe, any, FALSE, &error));
  bound = g_socket_get_local_address (probe, &error);
  port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));
  g_socket_close (probe, NULL);

  start_server (f);
  start_client (f, "127.0.0.1");
  f->visitor = start_forwarder (f, port);
  second = start_forwarder (f, port);
  gt_client_drain (f->visitor, 2000);
  for (guint round = 0; round < 4; round++)
    {
      g_autoptr (GSocketClient) sc = g_socket_client_new ();
      g_autoptr (GSocketConnection) conn = NULL;
      GString *got = g_string_new (NULL);
      gint64 deadline = g_get_monotonic_time () + TIMEOUT_US;
      int fd;

      conn = g_socket_client_connect_to_host (sc, "127.0.0.1", port, NULL, &error);
      g_assert_no_error (error);
      fd = g_socket_get_fd (g_socket_connection_get_socket (conn));
      g_assert_cmpint (send (fd, "handover", 8, MSG_NOSIGNAL), ==, 8);
      while (got->len < 8 && g_get_monotonic_time () < deadline)
        {
          char buf[64];
          ssize_t n = recv (fd, buf, sizeof buf, MSG_DONTWAIT);

          if (n > 0)
            g_string_append_len (got, buf, n);
          else if (n == 0 || (errno != EAGAIN && errno != EINTR))
            break;
          else
            g_main_context_iteration (NULL, TRUE);
        }
      g_assert_cmpstr (got->str, ==, "handover");
      g_string_free (got, TRUE);
    }
  gt_client_stop (second);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add ("/gt/client/probe-answers", Fixture, NULL, fixture_setup, test_probe_answers,
              fixture_teardown);
  g_test_add ("/gt/client/auto-deadline", Fixture, NULL, fixture_setup, test_auto_deadline,
              fixture_teardown);
  g_test_add ("/gt/client/auto-choice", Fixture, NULL, fixture_setup, test_auto_choice,
              fixture_teardown);
  g_test_add ("/gt/client/relay/ipv4-literal", Fixture, "127.0.0.1", fixture_setup, test_relay,
              fixture_teardown);
  g_test_add ("/gt/client/relay/ipv6-literal", Fixture, "[::1]", fixture_setup, test_relay,
              fixture_teardown);
  /* "localhost" comes from /etc/hosts: a host-name lookup that never leaves the machine. */
  g_test_add ("/gt/client/relay/host-name", Fixture, "localhost", fixture_setup, test_relay,
              fixture_teardown);
  g_test_add ("/gt/client/forward/api", Fixture, NULL, fixture_setup, test_forward_api,
              fixture_teardown);
  g_test_add ("/gt/client/forward/negotiation", Fixture, NULL, fixture_setup,
              test_forward_negotiation, fixture_teardown);
  g_test_add ("/gt/client/forward/listener-handover", Fixture, NULL, fixture_setup,
              test_forward_listener_handover, fixture_teardown);
  return g_test_run ();
}
