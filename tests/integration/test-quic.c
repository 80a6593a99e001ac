/* Integration tests of quic:// tunnels (quicAddr): HTTP and TCP through QUIC, certificate
 * verification, a stalled stream beside busy ones, a NAT rebinding in the middle of a download,
 * and the fallback to tls:// when UDP is blocked. Real gt processes on 127.0.0.1; a UDP relay in
 * the test stands for the NAT (it can change its outside port, or drop everything). */
#define G_LOG_DOMAIN "gt-test"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gio.h>

#include "gt-certificate.h"
#include "gt-test-utils.h"

#define PATTERN_SIZE (24 * GT_TEST_MIB)

#define CLIENT_ID "alice"
#define CLIENT_SECRET "s3cret-alice"
#define PREFIX "web"
#define HOST PREFIX ".example.com"

typedef struct
{
  const char *tmpdir;
} Fixture;

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
/* A UDP relay: a NAT between the client and the server's quicAddr. Each client address gets its
 * own outside socket; rebind() replaces them all (new outside ports: a NAT rebinding); drop makes
 * it a firewall that blocks UDP. */

typedef struct
{
  struct sockaddr_in client;
  int out_fd;
} NatEntry;

typedef struct
{
  int in_fd;
  guint16 port;
  struct sockaddr_in server;
  GArray *entries; /* NatEntry */
  GThread *thread;
  gint stop;
  gint drop;
  gint rebind;
  gint rebinds_done;
  gint forwarded; /* datagrams client → server */
} Nat;

static int
udp_socket_loopback (guint16 port, guint16 *bound)
{
  struct sockaddr_in sa = { 0 };
  socklen_t len = sizeof sa;
  int fd = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

  g_assert_cmpint (fd, >=, 0);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  sa.sin_port = htons (port);
  g_assert_cmpint (bind (fd, (struct sockaddr *) &sa, sizeof sa), ==, 0);
  g_assert_cmpint (getsockname (fd, (struct sockaddr *) &sa, &len), ==, 0);
  if (bound != NULL)
    *bound = ntohs (sa.sin_port);
  return fd;
}

static gpointer
nat_thread (gpointer data)
{
  Nat *nat = data;
  guint8 buf[65536];

  while (!g_atomic_int_get (&nat->stop))
    {
      struct pollfd pfds[64];
      guint n = 0;

      if (g_atomic_int_get (&nat->rebind))
        {
          for (guint i = 0; i < nat->entries->len; i++)
            {
              NatEntry *e = &g_array_index (nat->entries, NatEntry, i);

              close (e->out_fd);
              e->out_fd = udp_socket_loopback (0, NULL);
            }
          g_atomic_int_set (&nat->rebind, 0);
          g_atomic_int_inc (&nat->rebinds_done);
        }
      pfds[n++] = (struct pollfd) { nat->in_fd, POLLIN, 0 };
      for (guint i = 0; i < nat->entries->len && n < G_N_ELEMENTS (pfds); i++)
        pfds[n++] = (struct pollfd) { g_array_index (nat->entries, NatEntry, i).out_fd, POLLIN, 0 };
      if (poll (pfds, n, 50) <= 0)
        continue;
      if (pfds[0].revents & POLLIN)
        for (;;)
          {
            struct sockaddr_in from;
            socklen_t from_len = sizeof from;
            ssize_t r = recvfrom (nat->in_fd, buf, sizeof buf, 0, (struct sockaddr *) &from,
                                  &from_len);
            NatEntry *e = NULL;

            if (r < 0)
              break;
            if (g_atomic_int_get (&nat->drop))
              continue;
            for (guint i = 0; i < nat->entries->len && e == NULL; i++)
              {
                NatEntry *x = &g_array_index (nat->entries, NatEntry, i);

                if (x->client.sin_port == from.sin_port
                    && x->client.sin_addr.s_addr == from.sin_addr.s_addr)
                  e = x;
              }
            if (e == NULL)
              {
                NatEntry ne = { from, udp_socket_loopback (0, NULL) };

                g_array_append_val (nat->entries, ne);
                e = &g_array_index (nat->entries, NatEntry, nat->entries->len - 1);
              }
            sendto (e->out_fd, buf, r, 0, (struct sockaddr *) &nat->server, sizeof nat->server);
            g_atomic_int_inc (&nat->forwarded);
          }
      for (guint k = 1; k < n; k++)
        if (pfds[k].revents & POLLIN)
          {
            NatEntry *e = &g_array_index (nat->entries, NatEntry, k - 1);

            for (;;)
              {
                ssize_t r = recv (e->out_fd, buf, sizeof buf, 0);

                if (r < 0)
                  break;
                if (!g_atomic_int_get (&nat->drop))
                  sendto (nat->in_fd, buf, r, 0, (struct sockaddr *) &e->client,
                          sizeof e->client);
              }
          }
    }
  return NULL;
}

static Nat *
nat_start (guint16 server_port)
{
  Nat *nat = g_new0 (Nat, 1);

  nat->in_fd = udp_socket_loopback (0, &nat->port);
  nat->server.sin_family = AF_INET;
  nat->server.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  nat->server.sin_port = htons (server_port);
  nat->entries = g_array_new (FALSE, FALSE, sizeof (NatEntry));
  nat->thread = g_thread_new ("nat", nat_thread, nat);
  return nat;
}

static void
nat_free (Nat *nat)
{
  g_atomic_int_set (&nat->stop, 1);
  g_thread_join (nat->thread);
  for (guint i = 0; i < nat->entries->len; i++)
    close (g_array_index (nat->entries, NatEntry, i).out_fd);
  g_array_unref (nat->entries);
  close (nat->in_fd);
  g_free (nat);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Nat, nat_free)

/* Changes every outside port of the NAT; returns once done. */
static void
nat_rebind (Nat *nat)
{
  gint before = g_atomic_int_get (&nat->rebinds_done);
  gint64 deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);

  g_atomic_int_set (&nat->rebind, 1);
  while (g_atomic_int_get (&nat->rebinds_done) == before)
    {
      if (g_get_monotonic_time () > deadline)
        gt_test_fail ("the NAT did not rebind");
      g_usleep (1000);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* gt processes */

typedef struct
{
  GtTestProc *proc;
  guint16 addr_port;
  guint16 tls_port;
  guint16 quic_port;
  char *cert_path;
  char *fingerprint;
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

  return (guint16) gt_test_capture_uint (line, regex);
}

#define FINGERPRINT_RE "TLS certificate (.+), fingerprint (sha256:[0-9a-f]{64})"

/* A server with addr, tlsAddr and quicAddr (quicAddr on tlsAddr's port number when same_port),
 * its generated certificate in f->tmpdir. */
static void
start_server (Fixture *f, gboolean same_port, Server *out)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autoptr (GRegex) re = g_regex_new (FINGERPRINT_RE, 0, 0, NULL);
  g_autoptr (GMatchInfo) mi = NULL;
  g_autofree char *line = NULL;
  guint16 port = 0;

  memset (out, 0, sizeof *out);
  if (same_port)
    {
      /* A port free for TCP and UDP alike. */
      for (int i = 0; i < 50 && port == 0; i++)
        {
          guint16 p = gt_test_free_port ();
          int fd = udp_socket_loopback (p, NULL);

          close (fd);
          port = p;
        }
    }
  guint16 first, last;

  gt_test_free_port_range (4, &first, &last);
  gt_test_args_addv (args, "server", "--id", CLIENT_ID, "--secret", CLIENT_SECRET, "--addr",
                     "127.0.0.1:0", NULL);
  gt_test_args_add (args, "--tcpRange");
  gt_test_args_add (args, "%u-%u", first, last);
  gt_test_args_add (args, "--tlsAddr");
  gt_test_args_add (args, "127.0.0.1:%u", port);
  gt_test_args_add (args, "--quicAddr");
  gt_test_args_add (args, "127.0.0.1:%u", port);
  out->proc = gt_test_spawn ("server", NULL, args, f->tmpdir, NULL);
  out->addr_port = wait_listen_port (out->proc, "");
  out->tls_port = wait_listen_port (out->proc, " \\(TLS\\)");
  out->quic_port = wait_listen_port (out->proc, " \\(UDP, QUIC\\)");
  if (same_port)
    {
      g_assert_cmpuint (out->tls_port, ==, port);
      g_assert_cmpuint (out->quic_port, ==, port);
    }
  line = gt_test_proc_expect_line (out->proc, FINGERPRINT_RE, NULL, GT_TEST_WAIT_MS);
  g_assert_true (g_regex_match (re, line, 0, &mi));
  out->cert_path = g_match_info_fetch (mi, 1);
  out->fingerprint = g_match_info_fetch (mi, 2);
}

/* A client of CLIENT_ID with the remotes (one or more --remote values) and extra options. */
static GtTestProc *
spawn_client (const char *name, const char *const *remotes, GPtrArray *extra)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();

  gt_test_args_addv (args, "client", "--id", CLIENT_ID, "--secret", CLIENT_SECRET,
                     "--reconnectDelay", "200ms", "--remoteConnections", "2", NULL);
  for (guint i = 0; remotes[i] != NULL; i++)
    gt_test_args_addv (args, "--remote", remotes[i], NULL);
  for (guint i = 0; extra != NULL && i < extra->len; i++)
    gt_test_args_add (args, "%s", (const char *) extra->pdata[i]);
  return gt_test_spawn (name, NULL, args, NULL, NULL);
}

static GPtrArray *
http_service (guint16 port)
{
  GPtrArray *a = gt_test_args_new ();

  gt_test_args_add (a, "--local");
  gt_test_args_add (a, "http://127.0.0.1:%u", port);
  gt_test_args_addv (a, "--hostPrefix", PREFIX, NULL);
  return a;
}

static void
expect_started (GtTestProc *c, const char *remote, guint n)
{
  g_autofree char *escaped = g_regex_escape_string (remote, -1);
  g_autofree char *regex = g_strdup_printf ("tunnel started: remote=%s tunnels=", escaped);

  if (!gt_test_proc_wait_count (c, regex, n, GT_TEST_WAIT_MS))
    gt_test_fail ("%s: fewer than %u tunnels to %s started", c->name, n, remote);
}

/* ------------------------------------------------------------------------------------------ */
/* Checks over the tunnel */

static void
conn_read_exact (GtTestConn *c, gsize n, guint timeout_ms, const char *what)
{
  g_autoptr (GError) error = NULL;
  gint64 deadline = gt_test_deadline_in (timeout_ms);

  while (c->in->len < n)
    {
      gssize r = gt_test_conn_fill (c, deadline, &error);

      if (r <= 0)
        gt_test_fail ("%s: %s after %u of %" G_GSIZE_FORMAT " bytes", what,
                      r == 0 ? "EOF" : error->message, c->in->len, n);
    }
}

static void
check_get_bytes (guint16 port, gsize n)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = g_strdup_printf ("/bytes?n=%" G_GSIZE_FORMAT, n);
  g_autoptr (GtTestHttpResponse) resp
      = gt_test_http_request (port, "GET", path, HOST, NULL, 0, &error);

  gt_test_expect_response (resp, error, 200);
  gt_test_check_bytes ("GET /bytes", resp->body->data, resp->body->len, gt_test_pattern (), n);
}

static void
check_echo (guint16 port)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) resp = gt_test_http_request (
      port, "POST", "/echo", HOST, gt_test_pattern () + 11, GT_TEST_MIB, &error);

  gt_test_expect_response (resp, error, 200);
  gt_test_check_bytes ("1 MiB echo", resp->body->data, resp->body->len, gt_test_pattern () + 11,
                       GT_TEST_MIB);
}

/* TCP through the tunnel: the banner, then 1 MiB echoed while it is being written. */
static void
check_tcp_echo (guint16 port)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestConn) c = gt_test_conn_connect (port, &error);
  gsize n = GT_TEST_MIB;
  gint64 deadline;

  g_assert_no_error (error);
  conn_read_exact (c, strlen (GT_TEST_TCP_BANNER), GT_TEST_WAIT_MS, "banner");
  gt_test_check_bytes ("banner", c->in->data, c->in->len, (const guint8 *) GT_TEST_TCP_BANNER,
                       strlen (GT_TEST_TCP_BANNER));
  g_byte_array_set_size (c->in, 0);
  deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
  for (gsize sent = 0; sent < n || c->in->len < n;)
    {
      struct pollfd pfd = { c->fd, POLLIN | (sent < n ? POLLOUT : 0), 0 };

      if (g_get_monotonic_time () > deadline)
        gt_test_fail ("tcp echo: timed out, sent %" G_GSIZE_FORMAT " received %u", sent,
                      c->in->len);
      if (poll (&pfd, 1, 50) <= 0)
        continue;
      if ((pfd.revents & POLLOUT) && sent < n)
        {
          gssize w = send (c->fd, gt_test_pattern () + 333 + sent, n - sent, MSG_NOSIGNAL);

          if (w < 0 && errno != EAGAIN)
            gt_test_fail ("tcp echo: send: %s", g_strerror (errno));
          sent += MAX (w, 0);
        }
      if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
        {
          gssize r = gt_test_conn_read_now (c, &error);

          if (r == 0 || r == -1)
            gt_test_fail ("tcp echo: %s after %u bytes", r == 0 ? "EOF" : error->message,
                          c->in->len);
        }
    }
  gt_test_check_bytes ("tcp echo", c->in->data, c->in->len, gt_test_pattern () + 333, n);
}

/* n requests at once on n connections (GET /bytes of distinct sizes from size up); every body
 * must match. */
static void
check_concurrent_sized (guint16 port, guint n, gsize size)
{
  g_autoptr (GPtrArray) conns = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_test_conn_free);
  g_autoptr (GError) error = NULL;
  gint64 deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);

  for (guint i = 0; i < n; i++)
    {
      g_autofree char *path = g_strdup_printf ("/bytes?n=%" G_GSIZE_FORMAT, size + i * 997);
      g_autoptr (GByteArray) req = gt_test_http_build_request ("GET", path, HOST, NULL, 0, NULL);
      GtTestConn *c = gt_test_conn_connect (port, &error);

      g_assert_no_error (error);
      g_assert_true (gt_test_conn_write_all (c, req->data, req->len, deadline, &error));
      g_ptr_array_add (conns, c);
    }
  for (guint i = 0; i < n; i++)
    {
      g_autoptr (GtTestHttpResponse) resp
          = gt_test_conn_read_response (conns->pdata[i], deadline, &error);

      gt_test_expect_response (resp, error, 200);
      gt_test_check_bytes ("concurrent GET", resp->body->data, resp->body->len, gt_test_pattern (),
                           size + i * 997);
    }
}

static void
check_concurrent (guint16 port, guint n)
{
  check_concurrent_sized (port, n, 20000);
}

/* ------------------------------------------------------------------------------------------ */
/* Tests */

/* HTTP and TCP through quic:// (pinned certificate, quicAddr on tlsAddr's port number). */
static void
test_quic_http_tcp (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  GtTestHttp *h;
  g_autoptr (GPtrArray) extra = NULL;
  g_autofree char *remote = NULL;
  g_autofree char *line = NULL;
  GtTestProc *c;
  guint16 tcp_port;

  GT_TEST_REQUIRE_GT ();
  start_server (f, TRUE, &s);
  h = gt_test_http_start ("svc", 0, NULL);
  gt_test_tcp_echo_start ();
  extra = http_service (h->port);
  gt_test_args_add (extra, "--local");
  gt_test_args_add (extra, "tcp://127.0.0.1:%u", gt_test_tcp_echo ()->port);
  gt_test_args_add (extra, "--remoteTCPRandom");
  gt_test_args_addv (extra, "--remoteCert", s.fingerprint, NULL);
  remote = g_strdup_printf ("quic://127.0.0.1:%u", s.quic_port);
  c = spawn_client ("client", (const char *const[]) { remote, NULL }, extra);
  expect_started (c, remote, 2);
  line = gt_test_proc_expect_line (c, "tcp port=[0-9]+", NULL, GT_TEST_WAIT_MS);
  tcp_port = (guint16) gt_test_capture_uint (line, "tcp port=([0-9]+)");

  check_get_bytes (s.addr_port, GT_TEST_MIB);
  check_get_bytes (s.addr_port, 16 * GT_TEST_MIB);
  check_echo (s.addr_port);
  check_tcp_echo (tcp_port);
  check_concurrent (s.addr_port, 64);
  /* Many streams with 1 MiB bodies at once (each a QUIC stream of its own). */
  check_concurrent_sized (s.addr_port, 32, GT_TEST_MIB);
  g_assert_cmpuint (gt_test_proc_count_matches (s.proc, "tunnel accepted: client=" CLIENT_ID), >=,
                    2);
  g_assert_cmpuint (gt_test_proc_count_matches (c, "failed"), ==, 0);
}

/* A local service that refuses: the client resets the stream's QUIC stream with CONNECT_FAILED
 * and the user gets 502, while the tunnel carries on. */
static void
test_quic_connect_failed (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  g_autoptr (GPtrArray) extra = NULL;
  g_autofree char *remote = NULL;
  g_autoptr (GError) error = NULL;
  GtTestProc *c;

  GT_TEST_REQUIRE_GT ();
  start_server (f, FALSE, &s);
  extra = http_service (gt_test_free_port ()); /* nothing listens there */
  gt_test_args_addv (extra, "--remoteCertInsecure", "--remoteConnections", "1", NULL);
  remote = g_strdup_printf ("quic://127.0.0.1:%u", s.quic_port);
  c = spawn_client ("client", (const char *const[]) { remote, NULL }, extra);
  expect_started (c, remote, 1);
  for (int i = 0; i < 3; i++)
    {
      g_autoptr (GtTestHttpResponse) resp
          = gt_test_http_request (s.addr_port, "GET", "/", HOST, NULL, 0, &error);

      gt_test_expect_response (resp, error, 502);
    }
  g_assert_cmpuint (gt_test_proc_count_matches (c, "tunnel started"), ==, 1);
}

/* The server's certificate is verified as for tls://: a CA file, and a wrong pin refused. */
static void
test_quic_verify (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  GtTestHttp *h;
  g_autoptr (GPtrArray) ok = NULL;
  g_autoptr (GPtrArray) bad = NULL;
  g_autoptr (GPtrArray) other = NULL;
  g_autofree char *remote = NULL;
  g_autofree char *wrong = NULL;
  g_autofree char *other_cert = NULL;
  g_autofree char *other_key = NULL;
  g_autofree char *line = NULL;
  const char *names[] = { "127.0.0.1", "localhost", NULL };
  g_autoptr (GError) error = NULL;
  GtTestProc *c;

  GT_TEST_REQUIRE_GT ();
  start_server (f, FALSE, &s);
  h = gt_test_http_start ("svc", 0, NULL);
  remote = g_strdup_printf ("quic://127.0.0.1:%u", s.quic_port);

  /* The generated certificate names 127.0.0.1: it is its own CA. */
  ok = http_service (h->port);
  gt_test_args_addv (ok, "--remoteCert", s.cert_path, NULL);
  c = spawn_client ("client-ca", (const char *const[]) { remote, NULL }, ok);
  expect_started (c, remote, 1);
  check_get_bytes (s.addr_port, 100000);
  gt_test_proc_stop_cleanly (c);

  /* A wrong pin: refused with a message that says so, retried, never started. */
  wrong = g_strdup (s.fingerprint);
  wrong[strlen (wrong) - 1] = wrong[strlen (wrong) - 1] == '0' ? '1' : '0';
  bad = http_service (h->port);
  gt_test_args_addv (bad, "--remoteCert", wrong, NULL);
  c = spawn_client ("client-wrong-pin", (const char *const[]) { remote, NULL }, bad);
  line = gt_test_proc_expect_line (c, "tunnel [0-9]+ to quic://.* failed: .*does not match the "
                                      "pinned fingerprint", NULL, GT_TEST_WAIT_MS);
  g_free (g_steal_pointer (&line));
  line = gt_test_proc_expect_line (c, "retrying in [0-9]+ ms", NULL, GT_TEST_WAIT_MS);
  g_assert_cmpuint (gt_test_proc_count_matches (c, "tunnel started"), ==, 0);
  gt_test_proc_stop_cleanly (c);

  /* A CA that did not sign the server's certificate. */
  other_cert = g_build_filename (f->tmpdir, "other-cert.pem", NULL);
  other_key = g_build_filename (f->tmpdir, "other-key.pem", NULL);
  g_assert_true (gt_certificate_generate (other_cert, other_key, names, &error));
  g_assert_no_error (error);
  other = http_service (h->port);
  gt_test_args_addv (other, "--remoteCert", other_cert, NULL);
  c = spawn_client ("client-wrong-ca", (const char *const[]) { remote, NULL }, other);
  g_free (g_steal_pointer (&line));
  line = gt_test_proc_expect_line (c, "tunnel [0-9]+ to quic://.* failed: TLS certificate of "
                                      "127\\.0\\.0\\.1 not trusted", NULL, GT_TEST_WAIT_MS);
  g_assert_cmpuint (gt_test_proc_count_matches (c, "tunnel started"), ==, 0);
}

/* A user that stops reading a large download does not hold up the other users' streams. */
static void
test_quic_stalled_stream (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  GtTestHttp *h;
  g_autoptr (GPtrArray) extra = NULL;
  g_autofree char *remote = NULL;
  g_autoptr (GtTestConn) stalled = NULL;
  g_autoptr (GByteArray) req = NULL;
  g_autoptr (GError) error = NULL;
  gsize big = 20 * GT_TEST_MIB;
  gint64 t0;
  GtTestProc *c;

  GT_TEST_REQUIRE_GT ();
  start_server (f, FALSE, &s);
  h = gt_test_http_start ("svc", 0, NULL);
  extra = http_service (h->port);
  gt_test_args_addv (extra, "--remoteCertInsecure", "--remoteConnections", "1", NULL);
  remote = g_strdup_printf ("quic://127.0.0.1:%u", s.quic_port);
  c = spawn_client ("client", (const char *const[]) { remote, NULL }, extra);
  expect_started (c, remote, 1);

  /* 20 MiB requested and never read: everything between fills up. */
  stalled = gt_test_conn_connect (s.addr_port, &error);
  g_assert_no_error (error);
  req = gt_test_http_build_request ("GET", "/bytes?n=20971520", HOST, NULL, 0, NULL);
  g_assert_true (gt_test_conn_write_all (stalled, req->data, req->len,
                                         gt_test_deadline_in (GT_TEST_WAIT_MS), &error));
  g_usleep (500 * 1000);

  /* Meanwhile other users get 1 MiB each, on the same single tunnel, one after the other and
   * then 16 at once. */
  t0 = g_get_monotonic_time ();
  for (int i = 0; i < 8; i++)
    check_get_bytes (s.addr_port, GT_TEST_MIB);
  check_concurrent_sized (s.addr_port, 16, GT_TEST_MIB);
  g_test_message ("24 MiB beside a stalled stream in %.2f s",
                  (g_get_monotonic_time () - t0) / 1e6);

  /* And the stalled one still gets all of its bytes once it reads. */
  {
    g_autoptr (GtTestHttpResponse) resp
        = gt_test_conn_read_response (stalled, gt_test_deadline_in (GT_TEST_WAIT_MS), &error);

    gt_test_expect_response (resp, error, 200);
    gt_test_check_bytes ("stalled download", resp->body->data, resp->body->len,
                         gt_test_pattern (), big);
  }
}

/* The client's address changes (a NAT rebinding) in the middle of a download: the same tunnel
 * carries on and the download completes intact. */
static void
test_quic_rebind (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  GtTestHttp *h;
  g_autoptr (GPtrArray) extra = NULL;
  g_autofree char *remote = NULL;
  g_autoptr (Nat) nat = NULL;
  g_autoptr (GtTestConn) dl = NULL;
  g_autoptr (GByteArray) req = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) resp = NULL;
  gsize big = 24 * GT_TEST_MIB;
  gint64 deadline;
  GtTestProc *c;

  GT_TEST_REQUIRE_GT ();
  start_server (f, FALSE, &s);
  nat = nat_start (s.quic_port);
  h = gt_test_http_start ("svc", 0, NULL);
  extra = http_service (h->port);
  gt_test_args_addv (extra, "--remoteCertInsecure", "--remoteConnections", "1", NULL);
  remote = g_strdup_printf ("quic://127.0.0.1:%u", nat->port);
  c = spawn_client ("client", (const char *const[]) { remote, NULL }, extra);
  expect_started (c, remote, 1);

  dl = gt_test_conn_connect (s.addr_port, &error);
  g_assert_no_error (error);
  req = gt_test_http_build_request ("GET", "/bytes?n=25165824", HOST, NULL, 0, NULL);
  deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
  g_assert_true (gt_test_conn_write_all (dl, req->data, req->len, deadline, &error));
  /* Read a few MiB slowly enough that the download is surely still running, then rebind. */
  while (dl->in->len < 3 * GT_TEST_MIB)
    if (gt_test_conn_fill (dl, deadline, &error) <= 0)
      gt_test_fail ("download before the rebind: %s", error ? error->message : "EOF");
  nat_rebind (nat);
  g_test_message ("rebound after %u bytes", dl->in->len);
  resp = gt_test_conn_read_response (dl, gt_test_deadline_in (GT_TEST_WAIT_MS), &error);
  gt_test_expect_response (resp, error, 200);
  gt_test_check_bytes ("download across the rebind", resp->body->data, resp->body->len,
                       gt_test_pattern (), big);
  /* The same tunnel: no second start, no failure. */
  g_assert_cmpuint (gt_test_proc_count_matches (c, "tunnel started"), ==, 1);
  g_assert_cmpuint (gt_test_proc_count_matches (c, "failed"), ==, 0);
  /* And it still works afterwards. */
  check_get_bytes (s.addr_port, GT_TEST_MIB);
}

/* A graceful stop (SIGTERM: a drain) lets a download on a QUIC tunnel finish: the tunnels share
 * the listener's UDP socket, which must stay open until they are done. */
static void
test_quic_drain (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  GtTestHttp *h;
  g_autoptr (GPtrArray) extra = NULL;
  g_autofree char *remote = NULL;
  g_autoptr (GtTestConn) dl = NULL;
  g_autoptr (GByteArray) req = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) resp = NULL;
  g_autofree char *line = NULL;
  gint64 deadline;
  GtTestProc *c;

  GT_TEST_REQUIRE_GT ();
  start_server (f, FALSE, &s);
  h = gt_test_http_start ("svc", 0, NULL);
  extra = http_service (h->port);
  gt_test_args_addv (extra, "--remoteCertInsecure", "--remoteConnections", "1", NULL);
  remote = g_strdup_printf ("quic://127.0.0.1:%u", s.quic_port);
  c = spawn_client ("client", (const char *const[]) { remote, NULL }, extra);
  expect_started (c, remote, 1);

  dl = gt_test_conn_connect (s.addr_port, &error);
  g_assert_no_error (error);
  req = gt_test_http_build_request ("GET", "/bytes?n=25165824", HOST, NULL, 0, NULL);
  deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
  g_assert_true (gt_test_conn_write_all (dl, req->data, req->len, deadline, &error));
  while (dl->in->len < 2 * GT_TEST_MIB)
    if (gt_test_conn_fill (dl, deadline, &error) <= 0)
      gt_test_fail ("download before the drain: %s", error ? error->message : "EOF");
  g_assert_cmpint (kill (s.proc->pid, SIGTERM), ==, 0);
  line = gt_test_proc_expect_line (s.proc, "draining", NULL, GT_TEST_WAIT_MS);
  resp = gt_test_conn_read_response (dl, gt_test_deadline_in (GT_TEST_WAIT_MS), &error);
  gt_test_expect_response (resp, error, 200);
  gt_test_check_bytes ("download across the drain", resp->body->data, resp->body->len,
                       gt_test_pattern (), 24 * GT_TEST_MIB);
  g_assert_true (gt_test_proc_wait_exit (s.proc, GT_TEST_WAIT_MS));
}

/* UDP blocked (data NULL: the NAT drops everything; "closed": no socket on the QUIC port): with
 * quic:// then tls:// listed (auto mode), the probes choose TLS, say why, and the client is on
 * TLS within 5 s. */
static void
test_quic_blocked_fallback (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  GtTestHttp *h;
  g_autoptr (GPtrArray) extra = NULL;
  g_autofree char *quic = NULL;
  g_autofree char *tls = NULL;
  g_autoptr (Nat) nat = NULL;
  gint64 t0;
  double took;
  guint16 quic_port;
  GtTestProc *c;

  GT_TEST_REQUIRE_GT ();
  start_server (f, FALSE, &s);
  if (data == NULL)
    {
      nat = nat_start (s.quic_port);
      g_atomic_int_set (&nat->drop, 1);
      quic_port = nat->port;
    }
  else
    {
      /* A UDP port bound and closed again: nothing listens there. */
      close (udp_socket_loopback (0, &quic_port));
    }
  h = gt_test_http_start ("svc", 0, NULL);
  extra = http_service (h->port);
  gt_test_args_addv (extra, "--remoteCertInsecure", "--remoteConnections", "1", NULL);
  quic = g_strdup_printf ("quic://127.0.0.1:%u", quic_port);
  tls = g_strdup_printf ("tls://127.0.0.1:%u", s.tls_port);
  t0 = g_get_monotonic_time ();
  c = spawn_client ("client", (const char *const[]) { quic, tls, NULL }, extra);
  expect_started (c, tls, 1);
  took = (g_get_monotonic_time () - t0) / 1e6;
  g_test_message ("on tls:// after %.2f s", took);
  if (took > 5.0 * (g_getenv ("GT_TEST_SLOW") != NULL ? 3 : 1) && gt_test_checks_resources ())
    gt_test_fail ("the fallback to tls:// took %.2f s (want < 5 s)", took);
  {
    g_autofree char *re = g_strdup_printf (
      "transport choice: tls://127\\.0\\.0\\.1:%u \\(quic://127\\.0\\.0\\.1:%u failed "
      "\\(.*no QUIC handshake within 3000 ms .*\\); tls://127\\.0\\.0\\.1:%u rtt [0-9.]+ ms, "
      "loss [0-9]+%%\\)", s.tls_port, quic_port, s.tls_port);
    g_autofree char *line = gt_test_proc_expect_line (c, re, NULL, GT_TEST_WAIT_MS);
  }
  /* The tunnels never tried QUIC: the probe did. */
  g_assert_cmpuint (gt_test_proc_count_matches (c, "connecting to quic://"), ==, 0);
  check_get_bytes (s.addr_port, GT_TEST_MIB);
}

/* Auto mode with both transports working: each is probed (the server answers the probes' PINGs
 * before any HELLO), one is chosen with the figures as its reason, and the tunnels go there. */
static void
test_quic_auto_choice (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  GtTestHttp *h;
  g_autoptr (GPtrArray) extra = NULL;
  g_autofree char *quic = NULL;
  g_autofree char *tls = NULL;
  g_autofree char *re = NULL;
  g_autofree char *line = NULL;
  g_autofree char *chosen = NULL;
  g_autoptr (GRegex) choice = NULL;
  g_autoptr (GMatchInfo) mi = NULL;
  GtTestProc *c;

  GT_TEST_REQUIRE_GT ();
  start_server (f, FALSE, &s);
  h = gt_test_http_start ("svc", 0, NULL);
  extra = http_service (h->port);
  gt_test_args_addv (extra, "--remoteCertInsecure", NULL);
  quic = g_strdup_printf ("quic://127.0.0.1:%u", s.quic_port);
  tls = g_strdup_printf ("tls://127.0.0.1:%u", s.tls_port);
  c = spawn_client ("client", (const char *const[]) { quic, tls, NULL }, extra);
  re = g_strdup_printf ("transport choice: ((quic|tls)://127\\.0\\.0\\.1:[0-9]+) "
                        "\\(quic://127\\.0\\.0\\.1:%u rtt [0-9.]+ ms, loss [0-9]+%%; "
                        "tls://127\\.0\\.0\\.1:%u rtt [0-9.]+ ms, loss [0-9]+%%\\)$",
                        s.quic_port, s.tls_port);
  line = gt_test_proc_expect_line (c, re, NULL, GT_TEST_WAIT_MS);
  choice = g_regex_new (re, 0, 0, NULL);
  g_assert_true (g_regex_match (choice, line, 0, &mi));
  chosen = g_match_info_fetch (mi, 1);
  g_test_message ("%s", line);
  /* Both tunnels on the chosen one, none anywhere else. */
  expect_started (c, chosen, 2);
  g_assert_cmpuint (gt_test_proc_count_matches (c, "tunnel started"), ==, 2);
  check_get_bytes (s.addr_port, GT_TEST_MIB);
  check_concurrent (s.addr_port, 16);
}

/* Auto mode falls back and comes back: on QUIC at first; UDP then blocked, the tunnel moves to
 * TLS within seconds; UDP open again, the next probe (10 s after the last, at most) moves it
 * back to QUIC, and requests work all along the way. */
static void
test_quic_auto_return (Fixture *f, gconstpointer data)
{
  g_auto (Server) s = { 0 };
  GtTestHttp *h;
  g_autoptr (GPtrArray) extra = NULL;
  g_autofree char *quic = NULL;
  g_autofree char *tls = NULL;
  g_autofree char *re = NULL;
  g_autofree char *line = NULL;
  g_autoptr (Nat) nat = NULL;
  GtTestProc *c;

  GT_TEST_REQUIRE_GT ();
  start_server (f, FALSE, &s);
  nat = nat_start (s.quic_port);
  h = gt_test_http_start ("svc", 0, NULL);
  extra = http_service (h->port);
  gt_test_args_addv (extra, "--remoteCertInsecure", "--remoteConnections", "1",
                     "--remoteTimeout", "2s", NULL);
  quic = g_strdup_printf ("quic://127.0.0.1:%u", nat->port);
  tls = g_strdup_printf ("tls://127.0.0.1:%u", s.tls_port);
  c = spawn_client ("client", (const char *const[]) { quic, tls, NULL }, extra);
  /* A tie on loopback: the first listed. */
  re = g_strdup_printf ("transport choice: quic://127\\.0\\.0\\.1:%u ", nat->port);
  line = gt_test_proc_expect_line (c, re, NULL, GT_TEST_WAIT_MS);
  expect_started (c, quic, 1);
  check_get_bytes (s.addr_port, 100000);

  g_atomic_int_set (&nat->drop, 1);
  expect_started (c, tls, 1);
  check_get_bytes (s.addr_port, 100000);
  g_atomic_int_set (&nat->drop, 0);

  g_free (g_steal_pointer (&line));
  line = gt_test_proc_expect_line (c, "tunnel 1: moving from tls://.* to quic://", NULL,
                                   GT_TEST_WAIT_MS);
  if (!gt_test_proc_wait_count (c, "tunnel started: remote=quic://", 2, GT_TEST_WAIT_MS))
    gt_test_fail ("the tunnel did not come back to QUIC");
  check_get_bytes (s.addr_port, GT_TEST_MIB);
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, PATTERN_SIZE);

#define ADD(path, func)                                                                            \
  g_test_add ("/gt/integration/quic/" path, Fixture, NULL, fixture_setup, func, fixture_teardown)
  ADD ("http-tcp", test_quic_http_tcp);
  ADD ("verify", test_quic_verify);
  ADD ("connect-failed", test_quic_connect_failed);
  ADD ("stalled-stream", test_quic_stalled_stream);
  ADD ("rebind", test_quic_rebind);
  ADD ("blocked-fallback", test_quic_blocked_fallback);
  g_test_add ("/gt/integration/quic/closed-port-fallback", Fixture, "closed", fixture_setup,
              test_quic_blocked_fallback, fixture_teardown);
  ADD ("drain", test_quic_drain);
  ADD ("auto-choice", test_quic_auto_choice);
  ADD ("auto-return", test_quic_auto_return);
#undef ADD

  return gt_test_run ();
}
