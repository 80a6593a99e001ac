/* Integration tests of the secure transports (tls://, ws://, wss:// tunnels, tlsAddr, sniAddr, HTTP
 * CONNECT proxies, PROXY protocol in and out) with real gt processes and in-test services. */
#define G_LOG_DOMAIN "gt-test"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <libsoup/soup.h>

#include "gt-certificate.h"
#include "gt-test-utils.h"

/* Every wait is bounded by GT_TEST_WAIT_MS (or a shorter explicit) timeout. */
#define PATTERN_SIZE (4 * GT_TEST_MIB)

#define CLIENT_ID "alice"
#define CLIENT_SECRET "s3cret-alice"
#define PREFIX "web"
#define HOST PREFIX ".example.com"
#define SNI_PREFIX "sec"
#define SNI_HOST SNI_PREFIX ".example.com"

/* The address the PROXY protocol tests trust; gt clients connect from 127.0.0.1 (untrusted). */
#define TRUSTED_IP "127.0.0.2"

/* ------------------------------------------------------------------------------------------ */
/* Fixture: the harness keeps the children, services and the temp dir. */

typedef struct
{
  const char *tmpdir; /* the gt server's working directory (its generated certificate lands here) */
} Fixture;

/* ------------------------------------------------------------------------------------------ */
/* A local service that records the PROXY protocol header it receives: it reads the header (if
 * any) and one request head, then answers 200 with a body describing the header, e.g.
 * "v1 TCP4 203.0.113.7 198.51.100.9 40001 8080", "v2 TCP6 ...", "v2 LOCAL", "none". The
 * addresses and ports are in v1 order (src dst sport dport) for both versions. Parsed here, by
 * hand, independently of gt's parser. */

static const guint8 proxy_v2_sig[12]
    = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

/* -1: need more bytes; otherwise the header length (0 = none) and *desc. */
static gssize
recorder_parse (const guint8 *buf, gsize len, char **desc)
{
  gsize n;

  n = MIN (len, 6);
  if (memcmp (buf, "PROXY ", n) == 0)
    {
      const guint8 *eol;

      if (len < 6)
        return -1;
      eol = memmem (buf, MIN (len, 108), "\r\n", 2);
      if (eol == NULL)
        {
          if (len >= 108)
            {
              *desc = g_strdup ("v1 too long");
              return 0;
            }
          return -1;
        }
      *desc = g_strdup_printf ("v1 %.*s", (int) (eol - buf - 6), (const char *) buf + 6);
      return eol - buf + 2;
    }
  n = MIN (len, 12);
  if (memcmp (buf, proxy_v2_sig, n) == 0)
    {
      gsize body_len, total;
      guint8 ver_cmd, fam;

      if (len < 16)
        return -1;
      ver_cmd = buf[12];
      fam = buf[13];
      body_len = ((gsize) buf[14] << 8) | buf[15];
      total = 16 + body_len;
      if (len < total)
        return -1;
      if ((ver_cmd & 0xF0) != 0x20)
        *desc = g_strdup_printf ("v2 bad version byte 0x%02x", ver_cmd);
      else if ((ver_cmd & 0x0F) == 0)
        *desc = g_strdup ("v2 LOCAL");
      else if ((ver_cmd & 0x0F) != 1)
        *desc = g_strdup_printf ("v2 bad command 0x%02x", ver_cmd);
      else if (fam == 0x11 && body_len >= 12)
        {
          g_autoptr (GInetAddress) s
              = g_inet_address_new_from_bytes (buf + 16, G_SOCKET_FAMILY_IPV4);
          g_autoptr (GInetAddress) d
              = g_inet_address_new_from_bytes (buf + 20, G_SOCKET_FAMILY_IPV4);
          g_autofree char *ss = g_inet_address_to_string (s);
          g_autofree char *ds = g_inet_address_to_string (d);

          *desc = g_strdup_printf ("v2 TCP4 %s %s %u %u", ss, ds, (buf[24] << 8) | buf[25],
                                   (buf[26] << 8) | buf[27]);
        }
      else if (fam == 0x21 && body_len >= 36)
        {
          g_autoptr (GInetAddress) s
              = g_inet_address_new_from_bytes (buf + 16, G_SOCKET_FAMILY_IPV6);
          g_autoptr (GInetAddress) d
              = g_inet_address_new_from_bytes (buf + 32, G_SOCKET_FAMILY_IPV6);
          g_autofree char *ss = g_inet_address_to_string (s);
          g_autofree char *ds = g_inet_address_to_string (d);

          *desc = g_strdup_printf ("v2 TCP6 %s %s %u %u", ss, ds, (buf[48] << 8) | buf[49],
                                   (buf[50] << 8) | buf[51]);
        }
      else
        *desc = g_strdup_printf ("v2 family 0x%02x length %" G_GSIZE_FORMAT, fam, body_len);
      return total;
    }
  *desc = g_strdup ("none");
  return 0;
}

static gboolean
recorder_run_cb (GThreadedSocketService *service, GSocketConnection *conn, GObject *source,
                 gpointer user_data)
{
  GInputStream *in = g_io_stream_get_input_stream (G_IO_STREAM (conn));
  GOutputStream *out = g_io_stream_get_output_stream (G_IO_STREAM (conn));
  g_autoptr (GByteArray) buf = g_byte_array_new ();
  g_autofree char *desc = NULL;
  g_autofree char *reply = NULL;
  gssize header_len = -1;
  guint8 chunk[4096];

  g_socket_set_timeout (g_socket_connection_get_socket (conn), 30);
  for (;;)
    {
      gssize n;

      if (buf->len > 0 && header_len < 0)
        header_len = recorder_parse (buf->data, buf->len, &desc);
      if (header_len >= 0
          && memmem (buf->data + header_len, buf->len - header_len, "\r\n\r\n", 4) != NULL)
        break;
      if (buf->len > 65536)
        break;
      n = g_input_stream_read (in, chunk, sizeof chunk, NULL, NULL);
      if (n <= 0)
        {
          g_io_stream_close (G_IO_STREAM (conn), NULL, NULL);
          return TRUE;
        }
      g_byte_array_append (buf, chunk, n);
    }
  if (desc == NULL)
    desc = g_strdup ("no request head");
  reply = g_strdup_printf ("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                           "Content-Length: %" G_GSIZE_FORMAT "\r\nConnection: close\r\n\r\n%s",
                           strlen (desc), desc);
  g_output_stream_write_all (out, reply, strlen (reply), NULL, NULL, NULL);
  g_io_stream_close (G_IO_STREAM (conn), NULL, NULL);
  return TRUE;
}

static GtTestTcpService *
recorder_start (Fixture *f)
{
  return gt_test_tcp_service_start (G_CALLBACK (recorder_run_cb), NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* Blocking GIO user connections (test thread): TCP from a chosen source address, TLS on top. */

/* Connects to 127.0.0.1:port from src_ip (NULL: any); every later read or write times out. */
static GSocketConnection *
tcp_connect_from (const char *src_ip, guint16 port, GError **error)
{
  g_autoptr (GSocket) sock = NULL;
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) dst = g_inet_socket_address_new (lo, port);

  sock = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, error);
  if (sock == NULL)
    return NULL;
  g_socket_set_timeout (sock, GT_TEST_WAIT_MS / 1000);
  if (src_ip != NULL)
    {
      g_autoptr (GInetAddress) ia = g_inet_address_new_from_string (src_ip);
      g_autoptr (GSocketAddress) src = g_inet_socket_address_new (ia, 0);

      if (!g_socket_bind (sock, src, FALSE, error))
        return NULL;
    }
  if (!g_socket_connect (sock, dst, NULL, error))
    return NULL;
  return g_socket_connection_factory_create_connection (sock);
}

static guint16
connection_local_port (GSocketConnection *conn)
{
  g_autoptr (GSocketAddress) a = g_socket_connection_get_local_address (conn, NULL);

  g_assert_nonnull (a);
  return g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (a));
}

static gboolean
accept_any_cb (GTlsConnection *conn, GTlsCertificate *peer, GTlsCertificateFlags errors,
               gpointer user_data)
{
  return TRUE;
}

/* TLS client handshake over base. server_name is the identity (and the SNI when it is not an IP
 * address). With ca_file the peer must verify against it; without, any certificate is taken. */
static GIOStream *
tls_client_handshake (GIOStream *base, const char *server_name, guint16 port, const char *ca_file,
                      GError **error)
{
  g_autoptr (GSocketConnectable) identity = g_network_address_new (server_name, port);
  g_autoptr (GIOStream) tls = g_tls_client_connection_new (base, identity, error);

  if (tls == NULL)
    return NULL;
  g_tls_connection_set_require_close_notify (G_TLS_CONNECTION (tls), FALSE);
  if (ca_file != NULL)
    {
      g_autoptr (GTlsDatabase) db = g_tls_file_database_new (ca_file, error);

      if (db == NULL)
        return NULL;
      g_tls_connection_set_database (G_TLS_CONNECTION (tls), db);
    }
  else
    g_signal_connect (tls, "accept-certificate", G_CALLBACK (accept_any_cb), NULL);
  if (!g_tls_connection_handshake (G_TLS_CONNECTION (tls), NULL, error))
    return NULL;
  return g_steal_pointer (&tls);
}

/* One HTTP/1.1 request on io, the response read completely. */
static GtTestHttpResponse *
io_request_full (GIOStream *io, const char *method, const char *path, const char *host,
                 const void *body, gsize body_len, const char *extra_headers, GError **error)
{
  g_autoptr (GByteArray) req
      = gt_test_http_build_request (method, path, host, body, body_len, extra_headers);
  g_autoptr (GByteArray) in = g_byte_array_new ();
  g_autofree guint8 *chunk = g_malloc (65536);
  gboolean eof = FALSE;

  if (!g_output_stream_write_all (g_io_stream_get_output_stream (io), req->data, req->len, NULL,
                                  NULL, error))
    return NULL;
  for (;;)
    {
      GtTestHttpResponse *r = NULL;
      gsize consumed = 0;
      int res = gt_test_http_parse_response (in->data, in->len, eof, &consumed, &r, error);
      gssize n;

      if (res < 0)
        return NULL;
      if (res > 0)
        return r;
      n = g_input_stream_read (g_io_stream_get_input_stream (io), chunk, 65536, NULL, error);
      if (n < 0)
        return NULL;
      if (n == 0)
        eof = TRUE;
      g_byte_array_append (in, chunk, n);
    }
}

static GtTestHttpResponse *
io_request (GIOStream *io, const char *method, const char *path, const char *host,
            const void *body, gsize body_len, GError **error)
{
  return io_request_full (io, method, path, host, body, body_len, NULL, error);
}

/* Reads until EOF; a reset counts as the end. Returns what arrived (NULL on a timeout). */
static GByteArray *
io_read_all (GIOStream *io, GError **error)
{
  g_autoptr (GByteArray) got = g_byte_array_new ();
  guint8 chunk[16384];

  for (;;)
    {
      g_autoptr (GError) local_error = NULL;
      gssize n = g_input_stream_read (g_io_stream_get_input_stream (io), chunk, sizeof chunk, NULL,
                                      &local_error);

      if (n == 0
          || (n < 0 && g_error_matches (local_error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED)))
        return g_steal_pointer (&got);
      if (n < 0)
        {
          g_propagate_prefixed_error (error, g_steal_pointer (&local_error),
                                      "after %u bytes: ", got->len);
          return NULL;
        }
      g_byte_array_append (got, chunk, n);
    }
}

static void
io_write_or_fail (GIOStream *io, const void *data, gsize len, const char *what)
{
  g_autoptr (GError) error = NULL;

  if (!g_output_stream_write_all (g_io_stream_get_output_stream (io), data, len, NULL, NULL,
                                  &error))
    gt_test_fail ("%s: write failed: %s", what, error->message);
}

/* Sends bytes to port from 127.0.0.1 and checks that the answer is exactly one fatal TLS alert
 * with the given description, followed by the end of the connection. */
static void
expect_tls_alert (guint16 port, GBytes *bytes, guint8 description, const char *what)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocketConnection) conn = tcp_connect_from (NULL, port, &error);
  g_autoptr (GByteArray) got = NULL;
  const guint8 want[7] = { 0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description };

  g_assert_no_error (error);
  io_write_or_fail (G_IO_STREAM (conn), g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes),
                    what);
  got = io_read_all (G_IO_STREAM (conn), &error);
  if (got == NULL)
    gt_test_fail ("%s: no end of connection after the alert: %s", what, error->message);
  if (got->len != 7 || memcmp (got->data, want, 5) != 0 || got->data[5] != 2)
    gt_test_fail ("%s: want a 7-byte fatal alert record (15 03 03 00 02 02 %02x), got %u bytes"
               "%s%02x %02x ... %02x %02x",
               what, description, got->len, got->len > 0 ? ": " : " ",
               got->len > 0 ? got->data[0] : 0, got->len > 1 ? got->data[1] : 0,
               got->len > 5 ? got->data[5] : 0, got->len > 6 ? got->data[6] : 0);
  if (got->data[6] != description)
    gt_test_fail ("%s: alert description %u, want %u", what, got->data[6], description);
}

static GBytes *
read_test_file (const char *name)
{
  const char *dir = g_getenv ("GT_TEST_FILES");
  g_autofree char *path = NULL;
  g_autoptr (GError) error = NULL;
  char *data = NULL;
  gsize len = 0;

  if (dir == NULL)
    {
      g_autofree char *here = g_path_get_dirname (__FILE__);

      path = g_build_filename (here, "..", "files", "tls", name, NULL);
    }
  else
    path = g_build_filename (dir, "tls", name, NULL);
  if (!g_file_get_contents (path, &data, &len, &error))
    gt_test_fail ("cannot read test file %s: %s", path, error->message);
  return g_bytes_new_take (data, len);
}

/* "sha256:<hex>" of the DER of the first certificate in a PEM file, computed here. */
static char *
pem_fingerprint (const char *path)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GTlsCertificate) cert = g_tls_certificate_new_from_file (path, &error);
  g_autoptr (GByteArray) der = NULL;
  g_autofree char *hex = NULL;

  g_assert_no_error (error);
  g_object_get (cert, "certificate", &der, NULL);
  hex = g_compute_checksum_for_data (G_CHECKSUM_SHA256, der->data, der->len);
  return g_strconcat ("sha256:", hex, NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* Starting gt. */

enum
{
  LISTEN_ADDR = 1 << 0,
  LISTEN_TLS = 1 << 1,
  LISTEN_SNI = 1 << 2,
};

typedef struct
{
  GtTestProc *proc;
  guint16 addr_port;
  guint16 tls_port;
  guint16 sni_port;
  char *cert_path;   /* tlsAddr: the certificate file named in the log */
  char *fingerprint; /* tlsAddr: "sha256:<hex>" from the log */
} Server;

static void
server_clear (Server *s)
{
  g_clear_pointer (&s->cert_path, g_free);
  g_clear_pointer (&s->fingerprint, g_free);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Server, server_clear)

static guint16
wait_listen_port (GtTestProc *p, const char *suffix_regex)
{
  g_autofree char *regex
      = g_strdup_printf ("listening on 127\\.0\\.0\\.1:([0-9]+)%s$", suffix_regex);
  g_autofree char *line = gt_test_proc_expect_line (p, regex, NULL, GT_TEST_WAIT_MS);
  guint port = gt_test_capture_uint (line, regex);

  g_assert_cmpuint (port, >, 0);
  g_assert_cmpuint (port, <, 65536);
  return (guint16) port;
}

#define FINGERPRINT_RE                                                                             \
  "TLS certificate (.+), fingerprint (sha256:[0-9a-f]{64}) \\(clients may pin it with "            \
  "remoteCert: (sha256:[0-9a-f]{64})\\)$"

/* A server in f->tmpdir with the listed listeners on free ports, user CLIENT_ID. */
static void
start_server (Fixture *f, const char *name, guint listeners, GPtrArray *extra, Server *out)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();

  memset (out, 0, sizeof *out);
  gt_test_args_addv (args, "server", "--id", CLIENT_ID, "--secret", CLIENT_SECRET, NULL);
  if (listeners & LISTEN_ADDR)
    gt_test_args_addv (args, "--addr", "127.0.0.1:0", NULL);
  if (listeners & LISTEN_TLS)
    gt_test_args_addv (args, "--tlsAddr", "127.0.0.1:0", NULL);
  if (listeners & LISTEN_SNI)
    gt_test_args_addv (args, "--sniAddr", "127.0.0.1:0", NULL);
  for (guint i = 0; extra != NULL && i < extra->len; i++)
    gt_test_args_add (args, "%s", (const char *) extra->pdata[i]);
  out->proc = gt_test_spawn (name, NULL, args, f->tmpdir, NULL);
  if (listeners & LISTEN_ADDR)
    out->addr_port = wait_listen_port (out->proc, "");
  if (listeners & LISTEN_TLS)
    {
      g_autofree char *line = NULL;
      g_autoptr (GRegex) re = g_regex_new (FINGERPRINT_RE, 0, 0, NULL);
      g_autoptr (GMatchInfo) mi = NULL;
      g_autofree char *pin = NULL;

      out->tls_port = wait_listen_port (out->proc, " \\(TLS\\)");
      line = gt_test_proc_expect_line (out->proc, FINGERPRINT_RE, NULL, GT_TEST_WAIT_MS);
      g_assert_true (g_regex_match (re, line, 0, &mi));
      out->cert_path = g_match_info_fetch (mi, 1);
      out->fingerprint = g_match_info_fetch (mi, 2);
      pin = g_match_info_fetch (mi, 3);
      g_assert_cmpstr (pin, ==, out->fingerprint);
    }
  if (listeners & LISTEN_SNI)
    out->sni_port = wait_listen_port (out->proc, " \\(TLS pass-through by SNI\\)");
}

/* A client of CLIENT_ID to remote; extra: services and other options; env as spawn_proc. */
static GtTestProc *
spawn_client (Fixture *f, const char *name, const char *remote, GPtrArray *extra,
              const char *const *env)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();

  gt_test_args_addv (args, "client", "--id", CLIENT_ID, "--secret", CLIENT_SECRET,
                     "--reconnectDelay", "200ms", "--remoteConnections", "2", "--remote", remote,
                     NULL);
  for (guint i = 0; extra != NULL && i < extra->len; i++)
    gt_test_args_add (args, "%s", (const char *) extra->pdata[i]);
  return gt_test_spawn (name, NULL, args, NULL, env);
}

/* Waits for "tunnel started: remote=<remote>". The log may show a ws/wss remote with or without
 * its path, so only scheme://host:port must match. */
static void
expect_tunnel_started (GtTestProc *client, const char *remote)
{
  const char *after_scheme = strstr (remote, "://");
  const char *path = after_scheme != NULL ? strchr (after_scheme + 3, '/') : NULL;
  g_autofree char *base
      = g_strndup (remote, path != NULL ? (gsize) (path - remote) : strlen (remote));
  g_autofree char *escaped = g_regex_escape_string (base, -1);
  g_autofree char *regex
      = g_strdup_printf ("tunnel started: remote=%s(/[^ ]*)? tunnels=[0-9]+", escaped);
  g_autofree char *line = gt_test_proc_expect_line (client, regex, NULL, GT_TEST_WAIT_MS);
}

static GtTestProc *
start_client (Fixture *f, const char *name, const char *remote, GPtrArray *extra,
              const char *const *env)
{
  GtTestProc *p = spawn_client (f, name, remote, extra, env);

  expect_tunnel_started (p, remote);
  return p;
}

/* Stops a process in the middle of a test (the teardown skips it then). */
static void
stop_now (GtTestProc *p)
{
  gt_test_proc_stop_cleanly (p);
}

static GPtrArray *
service_args (const char *scheme, guint16 local_port, const char *prefix)
{
  GPtrArray *a = gt_test_args_new ();

  gt_test_args_add (a, "--local");
  gt_test_args_add (a, "%s://127.0.0.1:%u", scheme, local_port);
  if (prefix != NULL)
    gt_test_args_addv (a, "--hostPrefix", prefix, NULL);
  return a;
}

/* 1 MiB POST /echo to the addr port with Host HOST: the tunnel carries HTTP both ways. */
static void
check_echo_via (guint16 port, const char *host)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) resp = gt_test_http_request (
      port, "POST", "/echo", host, gt_test_pattern () + 7, GT_TEST_MIB, &error);

  gt_test_expect_response (resp, error, 200);
  gt_test_check_bytes ("1 MiB echo", resp->body->data, resp->body->len, gt_test_pattern () + 7,
                       GT_TEST_MIB);
}

static char *
body_string (GtTestHttpResponse *resp)
{
  return g_strndup ((const char *) resp->body->data, resp->body->len);
}

static void
check_whoami (guint16 port, const char *host, const char *want)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) resp
      = gt_test_http_request (port, "GET", "/whoami", host, NULL, 0, &error);
  g_autofree char *body = NULL;

  gt_test_expect_response (resp, error, 200);
  body = body_string (resp);
  g_assert_cmpstr (body, ==, want);
}

/* ------------------------------------------------------------------------------------------ */
/* Fixture */

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  gt_test_setup ();
  f->tmpdir = gt_test_tmpdir ();
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  gt_test_teardown ();
}

/* ------------------------------------------------------------------------------------------ */
/* tls:// tunnels and the generated certificate */

static void
test_tls_generated_cert (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  g_auto (Server) s2 = { 0 };
  g_autofree char *want_cert = NULL;
  g_autofree char *want_key = NULL;
  g_autofree char *computed = NULL;
  g_autofree char *line = NULL;
  g_autofree char *escaped = NULL;
  g_autofree char *regex = NULL;
  GStatBuf st;

  GT_TEST_REQUIRE_GT ();
  start_server (f, "server", LISTEN_ADDR | LISTEN_TLS, NULL, &s);
  want_cert = g_build_filename (f->tmpdir, "gt-server-cert.pem", NULL);
  want_key = g_build_filename (f->tmpdir, "gt-server-key.pem", NULL);
  /* Made in the server's working directory (no -c), once, and announced. */
  g_assert_cmpstr (s.cert_path, ==, want_cert);
  escaped = g_regex_escape_string (want_cert, -1);
  regex = g_strdup_printf ("generated a self-signed certificate: %s$", escaped);
  line = gt_test_proc_expect_line (s.proc, regex, NULL, GT_TEST_WAIT_MS);
  g_assert_true (g_file_test (want_cert, G_FILE_TEST_IS_REGULAR));
  g_assert_true (g_file_test (want_key, G_FILE_TEST_IS_REGULAR));
  g_assert_cmpint (g_stat (want_key, &st), ==, 0);
  if ((st.st_mode & 0077) != 0)
    gt_test_fail ("the generated key %s has mode %03o: readable by others", want_key,
               (guint) (st.st_mode & 0777));
  /* The logged fingerprint is the SHA-256 of the certificate's DER. */
  computed = pem_fingerprint (want_cert);
  g_assert_cmpstr (s.fingerprint, ==, computed);

  /* A restart in the same place reuses it. */
  stop_now (s.proc);
  start_server (f, "server-again", LISTEN_ADDR | LISTEN_TLS, NULL, &s2);
  g_assert_cmpstr (s2.cert_path, ==, want_cert);
  g_assert_cmpstr (s2.fingerprint, ==, s.fingerprint);
  g_assert_cmpuint (gt_test_proc_count_matches (s2.proc, "generated a self-signed certificate"), ==,
                    0);
}

/* Starts a server with addr and tlsAddr, a local service and a client over tls:// with the given
 * verification options; checks the tunnel carries HTTP. */
static void
run_tls_client (Fixture *f, Server *s, const char *name, const char *opt, const char *value)
{
  GtTestHttp *h = gt_test_http_start ("svc-web", 0, NULL);
  g_autoptr (GPtrArray) extra = service_args ("http", h->port, PREFIX);
  g_autofree char *remote = g_strdup_printf ("tls://127.0.0.1:%u", s->tls_port);
  GtTestProc *c;

  if (opt != NULL)
    gt_test_args_add (extra, "%s", opt);
  if (value != NULL)
    gt_test_args_add (extra, "%s", value);
  c = start_client (f, name, remote, extra, NULL);
  check_whoami (s->addr_port, HOST, "svc-web");
  check_echo_via (s->addr_port, HOST);
  g_assert_cmpuint (gt_test_proc_count_matches (c, "tunnel [0-9]+ to .* failed"), ==, 0);
}

static void
test_tls_ca_file (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  g_autofree char *line = NULL;

  GT_TEST_REQUIRE_GT ();
  start_server (f, "server", LISTEN_ADDR | LISTEN_TLS, NULL, &s);
  /* The generated certificate names 127.0.0.1, so it verifies as its own CA. */
  run_tls_client (f, &s, "client", "--remoteCert", s.cert_path);
  line = gt_test_proc_expect_line (s.proc, "tunnel accepted: client=" CLIENT_ID " ", NULL,
                                   GT_TEST_WAIT_MS);
}

static void
test_tls_pin (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  g_autoptr (GString) colons = g_string_new ("SHA256:");
  GtTestProc *c;

  GT_TEST_REQUIRE_GT ();
  start_server (f, "server", LISTEN_ADDR | LISTEN_TLS, NULL, &s);
  run_tls_client (f, &s, "client-pin", "--remoteCert", s.fingerprint);
  c = gt_test_procs ()->pdata[gt_test_procs ()->len - 1];
  stop_now (c);

  /* The documented variants: any case, colons between the bytes. */
  for (const char *p = s.fingerprint + strlen ("sha256:"); *p != '\0'; p += 2)
    g_string_append_printf (colons, "%s%c%c", colons->len > 7 ? ":" : "", g_ascii_toupper (p[0]),
                            g_ascii_toupper (p[1]));
  run_tls_client (f, &s, "client-pin-colons", "--remoteCert", colons->str);
}

/* A client whose verification must fail: it logs a clear failure and retries, never starts. */
static void
expect_tls_refused (Fixture *f, Server *s, const char *scheme, guint16 port, const char *name,
                    const char *opt, const char *value, const char *reason_regex)
{
  g_autoptr (GPtrArray) extra = service_args ("http", 9, PREFIX);
  g_autofree char *remote = g_strdup_printf ("%s://127.0.0.1:%u", scheme, port);
  g_autofree char *escaped = g_regex_escape_string (remote, -1);
  g_autofree char *fail_re
      = g_strdup_printf ("tunnel [0-9]+ to %s(/[^ ]*)? failed: .*%s", escaped, reason_regex);
  g_autofree char *line1 = NULL;
  g_autofree char *line2 = NULL;
  g_autofree char *retry = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) resp = NULL;
  guint from = 0;
  GtTestProc *c;

  if (opt != NULL)
    gt_test_args_add (extra, "%s", opt);
  if (value != NULL)
    gt_test_args_add (extra, "%s", value);
  c = spawn_client (f, name, remote, extra, NULL);
  line1 = gt_test_proc_expect_line (c, fail_re, &from, GT_TEST_WAIT_MS);
  g_test_message ("%s: %s", name, line1);
  retry = gt_test_proc_expect_line (c, "retrying in [0-9]+ ms", &from, GT_TEST_WAIT_MS);
  /* and it does retry (and fails again) */
  line2 = gt_test_proc_expect_line (c, fail_re, &from, GT_TEST_WAIT_MS);
  g_assert_cmpuint (gt_test_proc_count_matches (c, "tunnel started"), ==, 0);
  g_assert_false (gt_test_proc_has_exited (c));
  /* The server has no route for the client. */
  resp = gt_test_http_request (s->addr_port, "GET", "/whoami", HOST, NULL, 0, &error);
  gt_test_expect_response (resp, error, 404);
  stop_now (c);
}

static void
test_tls_wrong_pin (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  g_autofree char *wrong = NULL;
  g_autofree char *line = NULL;

  GT_TEST_REQUIRE_GT ();
  start_server (f, "server", LISTEN_ADDR | LISTEN_TLS, NULL, &s);
  /* the right fingerprint with its last digit changed */
  wrong = g_strdup (s.fingerprint);
  wrong[strlen (wrong) - 1] = wrong[strlen (wrong) - 1] == '0' ? '1' : '0';
  expect_tls_refused (f, &s, "tls", s.tls_port, "client-wrong-pin", "--remoteCert", wrong,
                      "(?i)(pin|fingerprint)");
  /* The server saw the failed handshakes (no tunnel accepted). */
  g_assert_cmpuint (gt_test_proc_count_matches (s.proc, "tunnel accepted"), ==, 0);
  line = gt_test_proc_expect_line (s.proc, "TLS handshake with 127\\.0\\.0\\.1:[0-9]+ failed", NULL,
                           GT_TEST_WAIT_MS);
}

static void
test_tls_wrong_ca (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  g_autofree char *other_cert = NULL;
  g_autofree char *other_key = NULL;
  const char *names[] = { "127.0.0.1", "localhost", NULL };
  g_autoptr (GError) error = NULL;

  GT_TEST_REQUIRE_GT ();
  start_server (f, "server", LISTEN_ADDR | LISTEN_TLS, NULL, &s);
  /* Another self-signed certificate for the same names: a CA that did not sign the server's. */
  other_cert = g_build_filename (f->tmpdir, "other-cert.pem", NULL);
  other_key = g_build_filename (f->tmpdir, "other-key.pem", NULL);
  g_assert_true (gt_certificate_generate (other_cert, other_key, names, &error));
  g_assert_no_error (error);
  expect_tls_refused (f, &s, "tls", s.tls_port, "client-wrong-ca", "--remoteCert", other_cert,
                      "(?i)(certificate|verif|trust|unknown|issuer)");
  /* Without remoteCert the system CAs do not know it either. */
  expect_tls_refused (f, &s, "tls", s.tls_port, "client-system-ca", NULL, NULL,
                      "(?i)(certificate|verif|trust|unknown|issuer)");
}

static void
test_tls_insecure (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  GtTestProc *c;

  GT_TEST_REQUIRE_GT ();
  start_server (f, "server", LISTEN_ADDR | LISTEN_TLS, NULL, &s);
  run_tls_client (f, &s, "client-insecure", "--remoteCertInsecure", NULL);
  c = gt_test_procs ()->pdata[gt_test_procs ()->len - 1];
  /* Issue 3: "remoteCertInsecure: true skips verification with a loud warning". */
  if (gt_test_proc_count_matches (c, " WARN .*(?i)(insecure|not verif|verification)") == 0)
    gt_test_fail ("no WARN line about the unverified server certificate in the client's log");
}

/* ------------------------------------------------------------------------------------------ */
/* tlsAddr: HTTPS terminated by the server and routed by Host */

static void
test_tls_listener_https (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  GtTestHttp *web = gt_test_http_start ("svc-web", 0, NULL);
  GtTestHttp *other = gt_test_http_start ("svc-other", 0, NULL);
  g_autoptr (GPtrArray) extra = service_args ("http", web->port, PREFIX);
  g_autofree char *remote = NULL;
  g_autoptr (GError) error = NULL;
  struct
  {
    const char *server_name; /* identity and SNI */
    const char *host;        /* Host header */
    guint status;
    const char *body;
  } cases[] = {
    /* verified against the generated certificate (it names 127.0.0.1); no SNI is sent */
    { "127.0.0.1", HOST, 200, "svc-web" },
    { "127.0.0.1", "other.example.com", 200, "svc-other" },
    /* the SNI name does not decide the route, the Host header does */
    { "other.example.com", HOST, 200, "svc-web" },
    { "127.0.0.1", "nobody.example.com", 404, NULL },
  };

  GT_TEST_REQUIRE_GT ();
  start_server (f, "server", LISTEN_ADDR | LISTEN_TLS, NULL, &s);
  gt_test_args_addv (extra, "--local", NULL);
  gt_test_args_add (extra, "http://127.0.0.1:%u", other->port);
  gt_test_args_addv (extra, "--hostPrefix", "other", NULL);
  remote = g_strdup_printf ("tcp://127.0.0.1:%u", s.addr_port);
  start_client (f, "client", remote, extra, NULL);

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GSocketConnection) conn = tcp_connect_from (NULL, s.tls_port, &error);
      g_autoptr (GIOStream) tls = NULL;
      g_autoptr (GtTestHttpResponse) resp = NULL;
      g_autofree char *body = NULL;
      gboolean verify = g_hostname_is_ip_address (cases[i].server_name);

      g_assert_no_error (error);
      tls = tls_client_handshake (G_IO_STREAM (conn), cases[i].server_name, s.tls_port,
                                  verify ? s.cert_path : NULL, &error);
      if (tls == NULL)
        gt_test_fail ("case %u: TLS handshake with tlsAddr failed: %s", i, error->message);
      resp = io_request (tls, "GET", "/whoami", cases[i].host, NULL, 0, &error);
      gt_test_expect_response (resp, error, cases[i].status);
      body = body_string (resp);
      if (cases[i].body != NULL)
        g_assert_cmpstr (body, ==, cases[i].body);
      else
        g_assert_nonnull (strstr (body, cases[i].host));
      if (cases[i].status == 200)
        {
          /* keep-alive on the same TLS connection, with a 1 MiB body */
          g_autoptr (GtTestHttpResponse) echo = io_request (
              tls, "POST", "/echo", cases[i].host, gt_test_pattern () + 3, GT_TEST_MIB, &error);

          gt_test_expect_response (echo, error, 200);
          gt_test_check_bytes ("echo over tlsAddr", echo->body->data, echo->body->len,
                               gt_test_pattern () + 3, GT_TEST_MIB);
        }
    }
  /* Plain HTTP on addr still works next to it. */
  check_whoami (s.addr_port, "other.example.com", "svc-other");
}

/* ------------------------------------------------------------------------------------------ */
/* A server with only sniAddr (GT's `-addr ""` removes the file's plain listener): tunnels reach
 * it on that port, and TLS users are passed through to the client's https service. */

static void
test_sni_only (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  g_autofree char *cert_path = g_build_filename (f->tmpdir, "local-cert.pem", NULL);
  g_autofree char *key_path = g_build_filename (f->tmpdir, "local-key.pem", NULL);
  const char *names[] = { SNI_HOST, "localhost", NULL };
  g_autoptr (GTlsCertificate) cert = NULL;
  g_autoptr (GPtrArray) extra = gt_test_args_new ();
  g_autoptr (GPtrArray) services = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *config = NULL, *remote = NULL;

  GT_TEST_REQUIRE_GT ();
  g_assert_true (gt_certificate_generate (cert_path, key_path, names, &error));
  g_assert_no_error (error);
  cert = g_tls_certificate_new_from_files (cert_path, key_path, &error);
  g_assert_no_error (error);
  services = service_args ("https", gt_test_http_start ("local-https", 0, cert)->port, SNI_PREFIX);

  /* The file has a plain listener; `-addr ""` takes it away, as with GT. */
  config = gt_test_write_file ("server.yaml", "type: server\n"
                                              "options:\n"
                                              "  addr: 127.0.0.1:0\n");
  gt_test_args_addv (extra, "-c", config, "-addr", "", NULL);
  start_server (f, "server", LISTEN_SNI, extra, &s);
  g_assert_cmpuint (gt_test_proc_count_matches (s.proc, "listening on"), ==, 1);

  remote = g_strdup_printf ("tcp://127.0.0.1:%u", s.sni_port);
  start_client (f, "client", remote, services, NULL);
  g_assert_cmpuint (gt_test_proc_count_matches (s.proc, "listening on"), ==, 1);

  for (guint i = 0; i < 3; i++)
    {
      g_autoptr (GSocketConnection) conn = tcp_connect_from (NULL, s.sni_port, &error);
      g_autoptr (GIOStream) tls = NULL;
      g_autoptr (GtTestHttpResponse) resp = NULL;
      g_autofree char *body = NULL;

      g_assert_no_error (error);
      tls = tls_client_handshake (G_IO_STREAM (conn), SNI_HOST, 443, cert_path, &error);
      if (tls == NULL)
        gt_test_fail ("TLS through the only listener (sniAddr): %s", error->message);
      /* Passed through: the user sees the local service's own certificate. */
      g_assert_true (g_tls_certificate_is_same (
        g_tls_connection_get_peer_certificate (G_TLS_CONNECTION (tls)), cert));
      resp = io_request_full (tls, "GET", "/whoami", SNI_HOST, NULL, 0, "Connection: close\r\n",
                              &error);
      gt_test_expect_response (resp, error, 200);
      body = body_string (resp);
      g_assert_cmpstr (body, ==, "local-https");
    }
}

/* ------------------------------------------------------------------------------------------ */
/* sniAddr: TLS pass-through to the client's https:// service */

static void
test_sni_pass_through (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  g_autofree char *local_cert_path = g_build_filename (f->tmpdir, "local-cert.pem", NULL);
  g_autofree char *local_key_path = g_build_filename (f->tmpdir, "local-key.pem", NULL);
  const char *names[] = { SNI_HOST, "abc.example.com", "localhost", NULL };
  g_autoptr (GTlsCertificate) local_cert = NULL;
  g_autoptr (GTlsCertificate) server_cert = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) extra = NULL;
  g_autofree char *remote = NULL;
  g_autofree char *line = NULL;
  GtTestHttp *h;

  GT_TEST_REQUIRE_GT ();
  g_assert_true (gt_certificate_generate (local_cert_path, local_key_path, names, &error));
  g_assert_no_error (error);
  local_cert = g_tls_certificate_new_from_files (local_cert_path, local_key_path, &error);
  g_assert_no_error (error);
  h = gt_test_http_start ("local-https", 0, local_cert);

  /* tlsAddr too, so the server has a certificate of its own that the user must NOT see. */
  start_server (f, "server", LISTEN_ADDR | LISTEN_TLS | LISTEN_SNI, NULL, &s);
  server_cert = g_tls_certificate_new_from_file (s.cert_path, &error);
  g_assert_no_error (error);
  extra = service_args ("https", h->port, SNI_PREFIX);
  remote = g_strdup_printf ("tcp://127.0.0.1:%u", s.addr_port);
  start_client (f, "client", remote, extra, NULL);

  /* A real TLS client with SNI sec.example.com, verifying against the LOCAL certificate. */
  {
    g_autoptr (GSocketConnection) conn = tcp_connect_from (NULL, s.sni_port, &error);
    g_autoptr (GIOStream) tls = NULL;
    g_autoptr (GtTestHttpResponse) resp = NULL;
    g_autoptr (GtTestHttpResponse) echo = NULL;
    g_autofree char *body = NULL;
    GTlsCertificate *peer;

    g_assert_no_error (error);
    tls = tls_client_handshake (G_IO_STREAM (conn), SNI_HOST, 443, local_cert_path, &error);
    if (tls == NULL)
      gt_test_fail ("TLS through sniAddr, verified against the local service's certificate: %s",
                 error->message);
    peer = g_tls_connection_get_peer_certificate (G_TLS_CONNECTION (tls));
    g_assert_nonnull (peer);
    g_assert_true (g_tls_certificate_is_same (peer, local_cert));
    g_assert_false (g_tls_certificate_is_same (peer, server_cert));
    resp = io_request (tls, "GET", "/whoami", SNI_HOST, NULL, 0, &error);
    gt_test_expect_response (resp, error, 200);
    body = body_string (resp);
    g_assert_cmpstr (body, ==, "local-https");
    /* The local SoupServer keeps an HTTPS connection open after the peer's close_notify and
     * FIN (seen with libsoup 3.2), which would hold the relayed stream open: ask it to close. */
    echo = io_request_full (tls, "POST", "/echo", SNI_HOST, gt_test_pattern () + 11, GT_TEST_MIB,
                            "Connection: close\r\n", &error);
    gt_test_expect_response (echo, error, 200);
    gt_test_check_bytes ("echo through sniAddr", echo->body->data, echo->body->len,
                         gt_test_pattern () + 11, GT_TEST_MIB);
  }

  /* A ClientHello split over three TCP segments (the SNI of the captured hello patched to
   * sec.example.com, same length): the local service answers with its ServerHello. */
  {
    g_autoptr (GBytes) hello = read_test_file ("client-hello-sni.bin");
    gsize len = g_bytes_get_size (hello);
    g_autofree guint8 *patched = g_memdup2 (g_bytes_get_data (hello, NULL), len);
    guint8 *at = memmem (patched, len, "abc.example.com", 15);
    g_autoptr (GSocketConnection) conn = NULL;
    gsize cuts[] = { 0, 3, 100, len };
    guint8 reply[5];
    gsize got = 0;

    g_assert_nonnull (at);
    memcpy (at, "sec", 3);
    conn = tcp_connect_from (NULL, s.sni_port, &error);
    g_assert_no_error (error);
    g_socket_set_option (g_socket_connection_get_socket (conn), IPPROTO_TCP, TCP_NODELAY, 1, NULL);
    for (guint i = 0; i + 1 < G_N_ELEMENTS (cuts); i++)
      {
        io_write_or_fail (G_IO_STREAM (conn), patched + cuts[i], cuts[i + 1] - cuts[i],
                          "split ClientHello");
        g_usleep (100 * 1000);
      }
    if (!g_input_stream_read_all (g_io_stream_get_input_stream (G_IO_STREAM (conn)), reply,
                                  sizeof reply, &got, NULL, &error)
        || got < sizeof reply)
      gt_test_fail ("no TLS record back after a split ClientHello (%" G_GSIZE_FORMAT " bytes): %s",
                 got, error ? error->message : "EOF");
    if (reply[0] != 0x16 || reply[1] != 0x03)
      gt_test_fail (
          "after a split ClientHello: record type %u version %u.%u, want a handshake (22) "
          "from the local service",
          reply[0], reply[1], reply[2]);
  }

  /* Unknown name, no SNI: unrecognized_name. Malformed, not TLS, oversized: decode_error. */
  {
    g_autoptr (GBytes) unknown = read_test_file ("client-hello-sni.bin"); /* abc.example.com */
    g_autoptr (GBytes) no_sni = read_test_file ("client-hello-no-sni.bin");
    g_autoptr (GBytes) large = read_test_file ("client-hello-large.bin");
    static const guint8 malformed[] = { 0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00,
                                        0x00, 0x04, 0x03, 0x03, 0x00, 0x00 };
    static const char not_tls[] = "GET / HTTP/1.1\r\nHost: " SNI_HOST "\r\n\r\n";
    g_autoptr (GBytes) malformed_b = g_bytes_new_static (malformed, sizeof malformed);
    g_autoptr (GBytes) not_tls_b = g_bytes_new_static (not_tls, strlen (not_tls));

    expect_tls_alert (s.sni_port, unknown, 112, "unknown SNI name");
    line = gt_test_proc_expect_line (s.proc,
                             "no https service for server name \"abc\\.example\\.com\" from "
                             "127\\.0\\.0\\.1:[0-9]+",
                             NULL, GT_TEST_WAIT_MS);
    expect_tls_alert (s.sni_port, no_sni, 112, "ClientHello without SNI");
    expect_tls_alert (s.sni_port, malformed_b, 50, "malformed ClientHello");
    expect_tls_alert (s.sni_port, not_tls_b, 50, "plain HTTP on sniAddr");
    expect_tls_alert (s.sni_port, large, 50, "oversized ClientHello");
    /* one log line each (the line is written before the alert, but read here asynchronously) */
    if (!gt_test_proc_wait_count (s.proc, "bad TLS ClientHello from 127\\.0\\.0\\.1:", 3,
                                  GT_TEST_WAIT_MS))
      gt_test_fail ("want 3 'bad TLS ClientHello' lines in the server log, got %u",
                 gt_test_proc_count_matches (s.proc, "bad TLS ClientHello from 127\\.0\\.0\\.1:"));
    g_assert_cmpuint (gt_test_proc_count_matches (s.proc, "no https service for server name"), ==,
                      2);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* ws:// and wss:// tunnels */

static void
test_ws_tunnel (Fixture *f, gconstpointer data)
{
  const char *scheme = data;
  gboolean secure = strcmp (scheme, "wss") == 0;
  g_auto (Server) s = { 0 };
  GtTestHttp *h = gt_test_http_start ("svc-web", 0, NULL);
  g_autoptr (GPtrArray) extra = service_args ("http", h->port, PREFIX);
  g_autofree char *remote = NULL;
  g_autofree char *line = NULL;
  GtTestProc *c;

  GT_TEST_REQUIRE_GT ();
  start_server (f, "server", LISTEN_ADDR | LISTEN_TLS, NULL, &s);
  remote = g_strdup_printf ("%s://127.0.0.1:%u", scheme, secure ? s.tls_port : s.addr_port);
  if (secure)
    gt_test_args_addv (extra, "--remoteCert", s.cert_path, NULL);
  c = start_client (f, "client", remote, extra, NULL);
  line = gt_test_proc_expect_line (s.proc, "tunnel accepted: client=" CLIENT_ID " ", NULL,
                                   GT_TEST_WAIT_MS);
  check_whoami (s.addr_port, HOST, "svc-web");
  check_echo_via (s.addr_port, HOST);
  gt_test_ws_echo (s.addr_port, HOST);

  if (secure)
    {
      /* wss:// with a fingerprint pin, and a refused wrong pin. */
      g_autoptr (GPtrArray) extra2 = service_args ("http", h->port, PREFIX);
      g_autofree char *wrong = g_strdup (s.fingerprint);

      stop_now (c);
      gt_test_args_addv (extra2, "--remoteCert", s.fingerprint, NULL);
      start_client (f, "client-pin", remote, extra2, NULL);
      check_echo_via (s.addr_port, HOST);
      stop_now (gt_test_procs ()->pdata[gt_test_procs ()->len - 1]);
      wrong[strlen (wrong) - 1] = wrong[strlen (wrong) - 1] == 'a' ? 'b' : 'a';
      expect_tls_refused (f, &s, "wss", s.tls_port, "client-wrong-pin", "--remoteCert", wrong,
                          "");
    }
}

static void
test_ws_path (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  GtTestHttp *h = gt_test_http_start ("svc-web", 0, NULL);
  g_autoptr (GPtrArray) extra = service_args ("http", h->port, PREFIX);
  g_autoptr (GPtrArray) server_extra = gt_test_args_new ();
  g_autofree char *remote = NULL;
  g_autofree char *wrong = NULL;
  g_autofree char *line = NULL;
  GtTestProc *c;

  GT_TEST_REQUIRE_GT ();
  gt_test_args_addv (server_extra, "--wsPath", "/custom/tunnel", NULL);
  start_server (f, "server", LISTEN_ADDR, server_extra, &s);
  remote = g_strdup_printf ("ws://127.0.0.1:%u/custom/tunnel", s.addr_port);
  c = start_client (f, "client", remote, extra, NULL);
  check_echo_via (s.addr_port, HOST);
  stop_now (c);

  /* The default path is not a tunnel endpoint on this server. */
  wrong = g_strdup_printf ("ws://127.0.0.1:%u", s.addr_port);
  c = spawn_client (f, "client-default-path", wrong, extra, NULL);
  line = gt_test_proc_expect_line (
      c, "tunnel [0-9]+ to ws://127\\.0\\.0\\.1:[0-9]+(/gt-tunnel)? failed", NULL, GT_TEST_WAIT_MS);
  g_assert_cmpuint (gt_test_proc_count_matches (c, "tunnel started"), ==, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* Through a real HTTP CONNECT proxy (tinyproxy) */

static gboolean
wait_connectable (guint16 port, guint timeout_ms)
{
  gint64 end = gt_test_deadline_in (timeout_ms);

  while (g_get_monotonic_time () < end)
    {
      g_autoptr (GSocketConnection) c = tcp_connect_from (NULL, port, NULL);

      if (c != NULL)
        return TRUE;
      g_usleep (50 * 1000);
    }
  return FALSE;
}

static guint
file_count (const char *path, const char *needle)
{
  g_autofree char *text = NULL;
  guint n = 0;

  if (!g_file_get_contents (path, &text, NULL, NULL))
    return 0;
  for (const char *p = text; (p = strstr (p, needle)) != NULL; p += strlen (needle))
    n++;
  return n;
}

/* Waits until path holds needle (tinyproxy writes its log as it goes). */
static gboolean
file_wait_for (const char *path, const char *needle, guint timeout_ms)
{
  gint64 end = gt_test_deadline_in (timeout_ms);

  while (file_count (path, needle) == 0)
    {
      if (g_get_monotonic_time () >= end)
        return FALSE;
      g_usleep (50 * 1000);
    }
  return TRUE;
}

static void
test_http_proxy (Fixture *f, gconstpointer data)
{
  g_autofree char *tinyproxy = g_find_program_in_path ("tinyproxy");
  g_auto (Server) s = { 0 };
  g_autofree char *conf_path = NULL;
  g_autofree char *log_path = NULL;
  g_autofree char *conf = NULL;
  g_autofree char *proxy_url = NULL;
  g_autofree char *env_http = NULL;
  g_autofree char *env_https = NULL;
  g_autoptr (GPtrArray) proxy_args = gt_test_args_new ();
  g_autoptr (GError) error = NULL;
  GtTestHttp *h;
  guint16 proxy_port;
  GtTestProc *c;
  struct
  {
    const char *scheme;
    gboolean tls_port;
    const char *cert; /* "file", "pin" or NULL */
  } remotes[] = { { "ws", FALSE, NULL }, { "tls", TRUE, "file" }, { "wss", TRUE, "pin" } };

  GT_TEST_REQUIRE_GT ();
  if (tinyproxy == NULL)
    {
      g_test_skip ("tinyproxy is not installed (apt-get install tinyproxy): the HTTP CONNECT "
                   "proxy test needs it");
      return;
    }
  h = gt_test_http_start ("svc-web", 0, NULL);
  start_server (f, "server", LISTEN_ADDR | LISTEN_TLS, NULL, &s);

  proxy_port = gt_test_free_port ();
  conf_path = g_build_filename (f->tmpdir, "tinyproxy.conf", NULL);
  log_path = g_build_filename (f->tmpdir, "tinyproxy.log", NULL);
  conf = g_strdup_printf ("Port %u\nListen 127.0.0.1\nTimeout 60\nLogFile \"%s\"\nLogLevel Info\n"
                          "MaxClients 20\nAllow 127.0.0.1\nConnectPort %u\nConnectPort %u\n"
                          "DisableViaHeader Yes\n",
                          proxy_port, log_path, s.addr_port, s.tls_port);
  g_assert_true (g_file_set_contents (conf_path, conf, -1, &error));
  g_assert_no_error (error);
  /* tinyproxy as root would switch to nobody: let it write its log anyway. */
  g_chmod (f->tmpdir, 0777);
  gt_test_args_addv (proxy_args, "-d", "-c", conf_path, NULL);
  gt_test_spawn ("tinyproxy", tinyproxy, proxy_args, f->tmpdir, NULL);
  if (!wait_connectable (proxy_port, GT_TEST_WAIT_MS))
    gt_test_fail ("tinyproxy does not listen on 127.0.0.1:%u", proxy_port);

  proxy_url = g_strdup_printf ("http://127.0.0.1:%u", proxy_port);
  env_http = g_strconcat ("http_proxy=", proxy_url, NULL);
  env_https = g_strconcat ("https_proxy=", proxy_url, NULL);
  for (guint i = 0; i < G_N_ELEMENTS (remotes); i++)
    {
      const char *env[] = { env_http, env_https, NULL };
      guint16 port = remotes[i].tls_port ? s.tls_port : s.addr_port;
      g_autofree char *remote = g_strdup_printf ("%s://127.0.0.1:%u", remotes[i].scheme, port);
      g_autofree char *needle = g_strdup_printf ("CONNECT 127.0.0.1:%u ", port);
      g_autofree char *name = g_strdup_printf ("client-%s", remotes[i].scheme);
      g_autoptr (GPtrArray) extra = service_args ("http", h->port, PREFIX);
      guint before = file_count (log_path, needle);

      if (g_strcmp0 (remotes[i].cert, "file") == 0)
        gt_test_args_addv (extra, "--remoteCert", s.cert_path, NULL);
      else if (g_strcmp0 (remotes[i].cert, "pin") == 0)
        gt_test_args_addv (extra, "--remoteCert", s.fingerprint, NULL);
      c = start_client (f, name, remote, extra, env);
      check_echo_via (s.addr_port, HOST);
      if (!file_wait_for (log_path, needle, GT_TEST_WAIT_MS)
          || file_count (log_path, needle) <= before)
        gt_test_fail ("%s: tinyproxy's log %s shows no '%s'", remote, log_path, needle);
      stop_now (c);
    }

  /* no_proxy=127.0.0.1: the client goes direct, the proxy sees no new CONNECT. */
  {
    g_autofree char *needle = g_strdup_printf ("CONNECT 127.0.0.1:%u ", s.addr_port);
    g_autofree char *remote = g_strdup_printf ("ws://127.0.0.1:%u", s.addr_port);
    g_autoptr (GPtrArray) extra = service_args ("http", h->port, PREFIX);
    const char *env[] = { env_http, env_https, "no_proxy=localhost,127.0.0.1", NULL };
    guint before = file_count (log_path, needle);

    c = start_client (f, "client-no-proxy", remote, extra, env);
    check_echo_via (s.addr_port, HOST);
    g_usleep (300 * 1000);
    g_assert_cmpuint (file_count (log_path, needle), ==, before);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* PROXY protocol */

/* A user connection to port from src_ip, with a PROXY header (may be NULL) and one request;
 * returns the response body. */
static char *
proxied_request (const char *src_ip, guint16 port, const void *header, gsize header_len,
                 const char *host, gboolean tls)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocketConnection) conn = tcp_connect_from (src_ip, port, &error);
  g_autoptr (GIOStream) io = NULL;
  g_autoptr (GtTestHttpResponse) resp = NULL;

  g_assert_no_error (error);
  if (header != NULL)
    io_write_or_fail (G_IO_STREAM (conn), header, header_len, "PROXY header");
  if (tls)
    {
      io = tls_client_handshake (G_IO_STREAM (conn), "127.0.0.1", port, NULL, &error);
      if (io == NULL)
        gt_test_fail ("TLS after a PROXY header: %s", error->message);
    }
  else
    io = g_object_ref (G_IO_STREAM (conn));
  resp = io_request (io, "GET", "/pp", host, NULL, 0, &error);
  gt_test_expect_response (resp, error, 200);
  return body_string (resp);
}

/* A connection that must be closed without any answer. */
static void
expect_dropped (const char *src_ip, guint16 port, const void *bytes, gsize len, guint16 *local_port,
                const char *what)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocketConnection) conn = tcp_connect_from (src_ip, port, &error);
  g_autoptr (GByteArray) got = NULL;

  g_assert_no_error (error);
  *local_port = connection_local_port (conn);
  io_write_or_fail (G_IO_STREAM (conn), bytes, len, what);
  got = io_read_all (G_IO_STREAM (conn), &error);
  if (got == NULL)
    gt_test_fail ("%s: the connection was not closed: %s", what, error->message);
  if (got->len != 0)
    gt_test_fail ("%s: got %u bytes back ('%.*s'), want the connection closed without an answer",
               what, got->len, (int) MIN (got->len, 200), (const char *) got->data);
}

static void
test_proxy_protocol_in (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  GtTestTcpService *rec = recorder_start (f);
  g_autoptr (GPtrArray) server_extra = gt_test_args_new ();
  g_autoptr (GPtrArray) extra = service_args ("http", rec->port, "pp");
  g_autofree char *remote = NULL;
  g_autofree char *body = NULL;
  g_autofree char *line = NULL;
  g_autofree char *want = NULL;
  g_autofree char *regex = NULL;
  static const char v1[] = "PROXY TCP4 203.0.113.7 198.51.100.9 40001 8080\r\n";
  static const char v1_tls[] = "PROXY TCP4 203.0.113.8 198.51.100.9 40004 8443\r\n";
  static const char v1_bad[] = "PROXY TCP4 203.0.113.9 198.51.100.9 40003 8080\r\n"
                               "NOT HTTP AT ALL\r\n\r\n";
  static const char untrusted[] = "PROXY TCP4 192.0.2.66 198.51.100.9 40005 8080\r\n"
                                  "GET /pp HTTP/1.1\r\nHost: pp.example.com\r\n\r\n";
  static const char plain[] = "GET /pp HTTP/1.1\r\nHost: pp.example.com\r\n\r\n";
  guint8 v2[16 + 36] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
                         0x21, 0x21, 0x00, 36 };
  g_autoptr (GInetAddress) v2_src = g_inet_address_new_from_string ("2001:db8::7");
  g_autoptr (GInetAddress) v2_dst = g_inet_address_new_from_string ("2001:db8::1");
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  gt_test_args_addv (server_extra, "--proxyProtocol", "--proxyProtocolTrustedCIDRs",
                     TRUSTED_IP "/32", "--logLevel", "debug", NULL);
  start_server (f, "server", LISTEN_ADDR | LISTEN_TLS, server_extra, &s);
  /* The client itself connects from 127.0.0.1, an untrusted address, without a header. */
  gt_test_args_addv (extra, "--proxyProtocol", "v2", NULL);
  remote = g_strdup_printf ("tcp://127.0.0.1:%u", s.addr_port);
  start_client (f, "client", remote, extra, NULL);

  /* v1 from the trusted address: the ORIGINAL addresses reach the local service (as v2). */
  body = proxied_request (TRUSTED_IP, s.addr_port, v1, strlen (v1), "pp.example.com", FALSE);
  g_assert_cmpstr (body, ==, "v2 TCP4 203.0.113.7 198.51.100.9 40001 8080");
  line = gt_test_proc_expect_line (
      s.proc, "connection from 203\\.0\\.113\\.7:40001 via 127\\.0\\.0\\.2:", NULL,
      GT_TEST_WAIT_MS);
  g_clear_pointer (&body, g_free);
  g_clear_pointer (&line, g_free);

  /* v2, IPv6 addresses. */
  memcpy (v2 + 16, g_inet_address_to_bytes (v2_src), 16);
  memcpy (v2 + 32, g_inet_address_to_bytes (v2_dst), 16);
  v2[48] = 40002 >> 8;
  v2[49] = 40002 & 0xff;
  v2[50] = 443 >> 8;
  v2[51] = 443 & 0xff;
  body = proxied_request (TRUSTED_IP, s.addr_port, v2, sizeof v2, "pp.example.com", FALSE);
  g_assert_cmpstr (body, ==, "v2 TCP6 2001:db8::7 2001:db8::1 40002 443");
  line = gt_test_proc_expect_line (
      s.proc, "connection from \\[2001:db8::7\\]:40002 via 127\\.0\\.0\\.2:", NULL,
      GT_TEST_WAIT_MS);
  g_clear_pointer (&body, g_free);
  g_clear_pointer (&line, g_free);

  /* On tlsAddr the header comes before the TLS handshake. */
  body = proxied_request (TRUSTED_IP, s.tls_port, v1_tls, strlen (v1_tls), "pp.example.com", TRUE);
  g_assert_cmpstr (body, ==, "v2 TCP4 203.0.113.8 198.51.100.9 40004 8443");
  g_clear_pointer (&body, g_free);

  /* The real address in an info-level line: a bad request after the header. */
  {
    g_autoptr (GError) error = NULL;
    g_autoptr (GSocketConnection) conn = tcp_connect_from (TRUSTED_IP, s.addr_port, &error);
    g_autoptr (GByteArray) got = NULL;

    g_assert_no_error (error);
    io_write_or_fail (G_IO_STREAM (conn), v1_bad, strlen (v1_bad), "bad request");
    got = io_read_all (G_IO_STREAM (conn), &error);
    g_assert_no_error (error);
    if (got->len < 12 || memcmp (got->data, "HTTP/1.1 400", 12) != 0)
      gt_test_fail ("bad request after a PROXY header: want 400, got '%.*s'",
                 (int) MIN (got->len, 100), (const char *) got->data);
    line = gt_test_proc_expect_line (
        s.proc, " INFO bad request from 203\\.0\\.113\\.9:40003: ", NULL, GT_TEST_WAIT_MS);
    g_clear_pointer (&line, g_free);
  }

  /* A PROXY header from an untrusted address is refused. */
  expect_dropped ("127.0.0.1", s.addr_port, untrusted, strlen (untrusted), &port,
                  "PROXY header from an untrusted address");
  regex = g_strdup_printf ("PROXY header from untrusted address 127\\.0\\.0\\.1:%u refused", port);
  line = gt_test_proc_expect_line (s.proc, regex, NULL, GT_TEST_WAIT_MS);
  g_clear_pointer (&line, g_free);
  g_clear_pointer (&regex, g_free);
  g_assert_cmpuint (gt_test_proc_count_matches (s.proc, "192\\.0\\.2\\.66"), ==, 0);

  /* The trusted address must send a header. */
  expect_dropped (TRUSTED_IP, s.addr_port, plain, strlen (plain), &port,
                  "no PROXY header from the trusted address");
  regex = g_strdup_printf ("bad PROXY header from 127\\.0\\.0\\.2:%u", port);
  line = gt_test_proc_expect_line (s.proc, regex, NULL, GT_TEST_WAIT_MS);
  g_clear_pointer (&line, g_free);

  /* Untrusted without a header: served normally, with the real address. */
  {
    g_autoptr (GError) error = NULL;
    g_autoptr (GSocketConnection) conn = tcp_connect_from ("127.0.0.1", s.addr_port, &error);
    g_autoptr (GtTestHttpResponse) resp = NULL;

    g_assert_no_error (error);
    resp = io_request (G_IO_STREAM (conn), "GET", "/pp", "pp.example.com", NULL, 0, &error);
    gt_test_expect_response (resp, error, 200);
    body = body_string (resp);
    want = g_strdup_printf ("v2 TCP4 127.0.0.1 127.0.0.1 %u %u", connection_local_port (conn),
                            s.addr_port);
    g_assert_cmpstr (body, ==, want);
  }
}

static void
test_proxy_protocol_out (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  GtTestTcpService *rec = recorder_start (f);
  g_autoptr (GPtrArray) extra = service_args ("http", rec->port, "ppone");
  g_autoptr (GPtrArray) server_extra = gt_test_args_new ();
  g_autofree char *remote = NULL;
  g_autofree char *line = NULL;
  const struct
  {
    const char *host;
    const char *version; /* what the recorder must have seen */
  } cases[] = { { "ppone.example.com", "v1" }, { "pptwo.example.com", "v2" },
                { "ppnone.example.com", "none" } };
  guint16 tcp_port;

  GT_TEST_REQUIRE_GT ();
  gt_test_args_addv (server_extra, "--tcpRange", "30000-40000", NULL);
  start_server (f, "server", LISTEN_ADDR, server_extra, &s);
  gt_test_args_addv (extra, "--proxyProtocol", "v1", "--local", NULL);
  gt_test_args_add (extra, "http://127.0.0.1:%u", rec->port);
  gt_test_args_addv (extra, "--hostPrefix", "pptwo", "--proxyProtocol", "v2", "--local", NULL);
  gt_test_args_add (extra, "http://127.0.0.1:%u", rec->port);
  gt_test_args_addv (extra, "--hostPrefix", "ppnone", "--local", NULL);
  gt_test_args_add (extra, "tcp://127.0.0.1:%u", rec->port);
  gt_test_args_addv (extra, "--remoteTCPRandom", "--proxyProtocol", "v1", NULL);
  remote = g_strdup_printf ("tcp://127.0.0.1:%u", s.addr_port);
  {
    GtTestProc *c = start_client (f, "client", remote, extra, NULL);

    line = gt_test_proc_expect_line (c, "tcp port=[0-9]+ service=3", NULL, GT_TEST_WAIT_MS);
    tcp_port = (guint16) gt_test_capture_uint (line, "tcp port=([0-9]+) service=3");
  }

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GSocketConnection) conn = tcp_connect_from ("127.0.0.1", s.addr_port, &error);
      g_autoptr (GtTestHttpResponse) resp = NULL;
      g_autofree char *body = NULL;
      g_autofree char *want = NULL;

      g_assert_no_error (error);
      resp = io_request (G_IO_STREAM (conn), "GET", "/pp", cases[i].host, NULL, 0, &error);
      gt_test_expect_response (resp, error, 200);
      body = body_string (resp);
      if (strcmp (cases[i].version, "none") == 0)
        want = g_strdup ("none");
      else
        want = g_strdup_printf ("%s TCP4 127.0.0.1 127.0.0.1 %u %u", cases[i].version,
                                connection_local_port (conn), s.addr_port);
      g_assert_cmpstr (body, ==, want);
    }

  /* A tcp service gets the header too, before any user byte. */
  {
    g_autoptr (GError) error = NULL;
    g_autoptr (GSocketConnection) conn = tcp_connect_from ("127.0.0.1", tcp_port, &error);
    g_autoptr (GtTestHttpResponse) resp = NULL;
    g_autofree char *body = NULL;
    g_autofree char *want = NULL;

    g_assert_no_error (error);
    resp = io_request (G_IO_STREAM (conn), "GET", "/pp", "whatever", NULL, 0, &error);
    gt_test_expect_response (resp, error, 200);
    body = body_string (resp);
    want = g_strdup_printf ("v1 TCP4 127.0.0.1 127.0.0.1 %u %u", connection_local_port (conn),
                            tcp_port);
    g_assert_cmpstr (body, ==, want);
  }
}

/* ------------------------------------------------------------------------------------------ */
int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, PATTERN_SIZE);

#define ADD(path, func, data)                                                                      \
  g_test_add ("/gt/integration/secure/" path, Fixture, data, fixture_setup, func, fixture_teardown)
  ADD ("tls/generated-cert", test_tls_generated_cert, NULL);
  ADD ("tls/ca-file", test_tls_ca_file, NULL);
  ADD ("tls/pin", test_tls_pin, NULL);
  ADD ("tls/wrong-pin", test_tls_wrong_pin, NULL);
  ADD ("tls/wrong-ca", test_tls_wrong_ca, NULL);
  ADD ("tls/insecure", test_tls_insecure, NULL);
  ADD ("tls-listener/https-by-host", test_tls_listener_https, NULL);
  ADD ("sni/pass-through", test_sni_pass_through, NULL);
  ADD ("sni/only-listener", test_sni_only, NULL);
  ADD ("ws/tunnel", test_ws_tunnel, "ws");
  ADD ("wss/tunnel", test_ws_tunnel, "wss");
  ADD ("ws/path", test_ws_path, NULL);
  ADD ("http-proxy/tinyproxy", test_http_proxy, NULL);
  ADD ("proxy-protocol/in", test_proxy_protocol_in, NULL);
  ADD ("proxy-protocol/out", test_proxy_protocol_out, NULL);
#undef ADD

  return gt_test_run ();
}
