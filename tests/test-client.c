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
  char *argv[] = { "--addr", "127.0.0.1:0", "--id", "demo", "--secret", "s3cret-s3cret", NULL };
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
  return g_test_run ();
}
