/* Integration tests of the core relay: real gt server/client processes, in-test local services. */
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
#include <unistd.h>

#include <gio/gio.h>
#include <libsoup/soup.h>

#include "gt-test-utils.h"

/* Every wait is bounded by GT_TEST_WAIT_MS (or a shorter explicit) timeout. */
#define PATTERN_SIZE (64 * GT_TEST_MIB + GT_TEST_MIB)

#define CLIENT_ID "alice"
#define CLIENT_SECRET "s3cret-alice"
#define PREFIX "web"
#define HOST PREFIX ".example.com"

/* ------------------------------------------------------------------------------------------ */
/* Fixture: the harness keeps the per-test state. */

typedef struct
{
  gpointer unused;
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  gt_test_setup ();
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  gt_test_teardown ();
}

/* ------------------------------------------------------------------------------------------ */
/* Starting gt. */

static GtTestProc *
start_server (Fixture *f, const char *name, guint16 port, GPtrArray *extra, guint16 *port_out)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autofree char *line = NULL;
  GtTestProc *p;

  gt_test_args_addv (args, "server", "--id", CLIENT_ID, "--secret", CLIENT_SECRET, "--addr", NULL);
  gt_test_args_add (args, "127.0.0.1:%u", port);
  for (guint i = 0; extra != NULL && i < extra->len; i++)
    gt_test_args_add (args, "%s", (const char *)extra->pdata[i]);
  p = gt_test_spawn_gt (name, args);
  line = gt_test_proc_expect_line (p, "listening on 127\\.0\\.0\\.1:[0-9]+", NULL, GT_TEST_WAIT_MS);
  *port_out = (guint16)gt_test_capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");
  g_assert_cmpuint (*port_out, >, 0);
  if (port != 0)
    g_assert_cmpuint (*port_out, ==, port);
  return p;
}

/* services: the per-service options (--local ... --hostPrefix ...) and any other options. */
static GtTestProc *
start_client_with_secret (Fixture *f, const char *name, guint16 server_port, const char *secret,
                          GPtrArray *services)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();

  gt_test_args_addv (args, "client", "--id", CLIENT_ID, "--secret", secret, "--reconnectDelay",
                     "200ms", "--remote", NULL);
  gt_test_args_add (args, "tcp://127.0.0.1:%u", server_port);
  for (guint i = 0; services != NULL && i < services->len; i++)
    gt_test_args_add (args, "%s", (const char *)services->pdata[i]);
  return gt_test_spawn_gt (name, args);
}

/* Starts a client and waits for its first tunnel. */
static GtTestProc *
start_client (Fixture *f, const char *name, guint16 server_port, GPtrArray *services)
{
  GtTestProc *p = start_client_with_secret (f, name, server_port, CLIENT_SECRET, services);
  g_autofree char *line = gt_test_proc_expect_line (p, "tunnel started", NULL, GT_TEST_WAIT_MS);

  return p;
}

static GPtrArray *
http_service_args (guint16 local_port, const char *prefix)
{
  GPtrArray *a = gt_test_args_new ();

  gt_test_args_add (a, "--local");
  gt_test_args_add (a, "http://127.0.0.1:%u", local_port);
  if (prefix != NULL)
    gt_test_args_addv (a, "--hostPrefix", prefix, NULL);
  return a;
}

/* The common setup: a local service, a server on a free port, a client serving PREFIX. */
static guint16
start_relay (Fixture *f, const char *extra_client_option, ...)
{
  GtTestHttp *h = gt_test_http_start ("svc", 0, NULL);
  g_autoptr (GPtrArray) services = http_service_args (h->port, PREFIX);
  guint16 port;
  va_list ap;

  va_start (ap, extra_client_option);
  for (const char *a = extra_client_option; a != NULL; a = va_arg (ap, const char *))
    gt_test_args_add (services, "%s", a);
  va_end (ap);
  start_server (f, "server", 0, NULL, &port);
  start_client (f, "client", port, services);
  return port;
}

/* Harness self-test: the local services and the raw HTTP client, without gt. */

/* Reads exactly n bytes (appending to c->in). */
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

/* Server-speaks-first echo: banner before any byte is written, then 64 KiB echoed, then a
 * half-close exchange read to EOF. */
static void
run_tcp_banner_echo (guint16 port)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestConn) c = gt_test_conn_connect (port, &error);
  g_autoptr (GtTestConn) h = NULL;
  gsize n = 64 * 1024, m = 300 * 1024 + 17;
  gint64 deadline;

  g_assert_no_error (error);
  conn_read_exact (c, strlen (GT_TEST_TCP_BANNER), GT_TEST_WAIT_MS, "banner");
  gt_test_check_bytes ("banner", c->in->data, c->in->len, (const guint8 *)GT_TEST_TCP_BANNER,
                       strlen (GT_TEST_TCP_BANNER));
  g_byte_array_set_size (c->in, 0);

  /* Write and read at the same time: the echo may come back while we still write. */
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
          gssize w = send (c->fd, gt_test_pattern () + 1000 + sent, n - sent, MSG_NOSIGNAL);

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
  gt_test_check_bytes ("tcp echo", c->in->data, c->in->len, gt_test_pattern () + 1000, n);

  /* Half-close: all data, then SHUT_WR; the service echoes everything and closes after EOF. */
  h = gt_test_conn_connect (port, &error);
  g_assert_no_error (error);
  conn_read_exact (h, strlen (GT_TEST_TCP_BANNER), GT_TEST_WAIT_MS,
                   "banner (half-close connection)");
  g_byte_array_set_size (h->in, 0);
  deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
  for (gsize sent = 0; sent < m || !h->eof;)
    {
      struct pollfd pfd = { h->fd, POLLIN | (sent < m ? POLLOUT : 0), 0 };

      if (g_get_monotonic_time () > deadline)
        gt_test_fail ("half-close: timed out, sent %" G_GSIZE_FORMAT " of %" G_GSIZE_FORMAT
                   ", received %u, eof %d",
                   sent, m, h->in->len, h->eof);
      if (poll (&pfd, 1, 50) <= 0)
        continue;
      if ((pfd.revents & POLLOUT) && sent < m)
        {
          gssize w = send (h->fd, gt_test_pattern () + 7 + sent, m - sent, MSG_NOSIGNAL);

          if (w < 0 && errno != EAGAIN)
            gt_test_fail ("half-close: send: %s", g_strerror (errno));
          sent += MAX (w, 0);
          if (sent == m)
            g_assert_cmpint (shutdown (h->fd, SHUT_WR), ==, 0);
        }
      if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
        {
          if (gt_test_conn_read_now (h, &error) == -1)
            gt_test_fail ("half-close: %s after %u bytes", error->message, h->in->len);
        }
    }
  gt_test_check_bytes ("half-close echo", h->in->data, h->in->len, gt_test_pattern () + 7, m);
}

static void run_concurrent (guint16 port);

static void
test_harness_direct (Fixture *f, gconstpointer data)
{
  GtTestHttp *h = gt_test_http_start ("direct", 0, NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (SoupSession) session = soup_session_new ();
  g_autofree char *uri = g_strdup_printf ("http://127.0.0.1:%u/host", h->port);
  g_autoptr (SoupMessage) msg = soup_message_new ("GET", uri);
  g_autoptr (GBytes) host_body = NULL;
  g_autoptr (GtTestConn) c = NULL;

  {
    g_autoptr (GtTestHttpResponse) r = gt_test_http_request (
        h->port, "POST", "/echo", "x.example.com", gt_test_pattern () + 3, GT_TEST_MIB, &error);

    gt_test_expect_response (r, error, 200);
    gt_test_check_bytes ("direct echo", r->body->data, r->body->len, gt_test_pattern () + 3,
                         GT_TEST_MIB);
  }
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (h->port, "GET", "/chunked?n=300001", "x", NULL, 0, &error);

    gt_test_expect_response (r, error, 200);
    g_assert_cmpstr (gt_test_http_response_header (r, "Transfer-Encoding"), ==, "chunked");
    gt_test_check_bytes ("direct chunked", r->body->data, r->body->len, gt_test_pattern (), 300001);
  }
  c = gt_test_conn_connect (h->port, &error);
  g_assert_no_error (error);
  for (guint i = 0; i < 20; i++)
    {
      g_autofree char *path = g_strdup_printf ("/bytes?n=%u", i * 1000);
      g_autoptr (GtTestHttpResponse) r
          = gt_test_conn_request (c, "GET", path, "x", NULL, 0, GT_TEST_WAIT_MS, &error);

      gt_test_expect_response (r, error, 200);
      gt_test_check_bytes ("direct keep-alive", r->body->data, r->body->len, gt_test_pattern (),
                           i * 1000);
    }

  /* SoupSession keeps a Host header set by hand: the relay tests rely on it. */
  soup_message_headers_replace (soup_message_get_request_headers (msg), "Host",
                                "custom.example.com");
  host_body = soup_session_send_and_read (session, msg, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (g_bytes_get_data (host_body, NULL), g_bytes_get_size (host_body),
                   "custom.example.com", strlen ("custom.example.com"));

  gt_test_ws_echo (h->port, "ws.example.com");
  run_concurrent (h->port);
  gt_test_tcp_echo_start ();
  run_tcp_banner_echo (gt_test_tcp_echo ()->port);
}

/* ------------------------------------------------------------------------------------------ */
/* 1. Bodies of 1 MiB both ways through host routing. */

static void
test_http_bodies (Fixture *f, gconstpointer data)
{
  GtTestHttp *a, *b;
  g_autoptr (GPtrArray) services = NULL;
  g_autoptr (GError) error = NULL;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  a = gt_test_http_start ("service-a", 0, NULL);
  b = gt_test_http_start ("service-b", 0, NULL);
  services = http_service_args (a->port, PREFIX);
  gt_test_args_addv (services, "--local", NULL);
  gt_test_args_add (services, "http://127.0.0.1:%u", b->port);
  gt_test_args_addv (services, "--hostPrefix", "other", NULL);
  start_server (f, "server", 0, NULL, &port);
  start_client (f, "client", port, services);

  /* Routing by the first label of Host, with or without a port suffix. */
  {
    static const struct
    {
      const char *host;
      const char *want;
    } routes[] = {
      { HOST, "service-a" },
      { "other.example.com", "service-b" },
      { HOST ":8080", "service-a" },
      { "other.example.com:1234", "service-b" },
    };

    for (guint i = 0; i < G_N_ELEMENTS (routes); i++)
      {
        g_autoptr (GtTestHttpResponse) r
            = gt_test_http_request (port, "GET", "/whoami", routes[i].host, NULL, 0, &error);

        gt_test_expect_response (r, error, 200);
        gt_test_check_bytes (routes[i].host, r->body->data, r->body->len,
                             (const guint8 *)routes[i].want, strlen (routes[i].want));
      }
  }
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "GET", "/bytes?n=1048576", HOST, NULL, 0, &error);

    gt_test_expect_response (r, error, 200);
    g_assert_cmpstr (gt_test_http_response_header (r, "Content-Length"), ==, "1048576");
    gt_test_check_bytes ("GET 1 MiB", r->body->data, r->body->len, gt_test_pattern (), GT_TEST_MIB);
  }
  {
    g_autoptr (GtTestHttpResponse) r = gt_test_http_request (
        port, "POST", "/echo", HOST, gt_test_pattern () + 12345, GT_TEST_MIB, &error);

    gt_test_expect_response (r, error, 200);
    g_assert_cmpstr (gt_test_http_response_header (r, "Content-Length"), ==, "1048576");
    gt_test_check_bytes ("POST 1 MiB", r->body->data, r->body->len, gt_test_pattern () + 12345,
                         GT_TEST_MIB);
  }
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "POST", "/echo", "other.example.com",
                                gt_test_pattern () + 777, GT_TEST_MIB + 3, &error);

    gt_test_expect_response (r, error, 200);
    g_assert_cmpstr (gt_test_http_response_header (r, "Content-Length"), ==, "1048579");
    gt_test_check_bytes ("POST 1 MiB + 3 (other)", r->body->data, r->body->len,
                         gt_test_pattern () + 777, GT_TEST_MIB + 3);
  }
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "GET", "/chunked?n=1048576", HOST, NULL, 0, &error);

    gt_test_expect_response (r, error, 200);
    g_assert_cmpstr (gt_test_http_response_header (r, "Transfer-Encoding"), ==, "chunked");
    gt_test_check_bytes ("GET 1 MiB chunked", r->body->data, r->body->len, gt_test_pattern (),
                         GT_TEST_MIB);
  }
}

/* 2. 1,000 keep-alive requests on one connection. */

static void
test_keep_alive (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestConn) c = NULL;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  port = start_relay (f, NULL);
  c = gt_test_conn_connect (port, &error);
  g_assert_no_error (error);
  for (guint i = 0; i < 1000; i++)
    {
      g_autoptr (GtTestHttpResponse) r = NULL;
      gsize n = (i * 7919) % 6000;

      if (i % 2 == 0)
        {
          g_autofree char *path = g_strdup_printf ("/bytes?n=%" G_GSIZE_FORMAT, n);

          r = gt_test_conn_request (c, "GET", path, HOST, NULL, 0, GT_TEST_WAIT_MS, &error);
          if (r == NULL)
            gt_test_fail ("request %u on the kept-alive connection failed: %s", i, error->message);
          gt_test_expect_response (r, error, 200);
          gt_test_check_bytes ("keep-alive GET", r->body->data, r->body->len, gt_test_pattern (),
                               n);
        }
      else
        {
          r = gt_test_conn_request (c, "POST", "/echo", HOST, gt_test_pattern () + i, n,
                                    GT_TEST_WAIT_MS, &error);
          if (r == NULL)
            gt_test_fail ("request %u on the kept-alive connection failed: %s", i, error->message);
          gt_test_expect_response (r, error, 200);
          gt_test_check_bytes ("keep-alive POST", r->body->data, r->body->len,
                               gt_test_pattern () + i, n);
        }
    }
  g_assert_cmpuint (c->in->len, ==, 0);
}

/* 3. WebSocket echo through the tunnel. */

static void
test_websocket (Fixture *f, gconstpointer data)
{
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  port = start_relay (f, NULL);
  gt_test_ws_echo (port, HOST);
}

/* 4. TCP forward of a server-speaks-first service, including half-close. */

static void
test_tcp_forward (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) server_extra = gt_test_args_new ();
  g_autoptr (GPtrArray) services = gt_test_args_new ();
  g_autofree char *line = NULL;
  guint16 first = 0, last = 0, port, tcp_port;
  GtTestProc *client;

  GT_TEST_REQUIRE_GT ();
  gt_test_tcp_echo_start ();
  gt_test_free_port_range (10, &first, &last);
  gt_test_args_add (server_extra, "--tcpRange");
  gt_test_args_add (server_extra, "%u-%u", first, last);
  start_server (f, "server", 0, server_extra, &port);
  gt_test_args_add (services, "--local");
  gt_test_args_add (services, "tcp://127.0.0.1:%u", gt_test_tcp_echo ()->port);
  gt_test_args_add (services, "--remoteTCPRandom");
  client = start_client (f, "client", port, services);
  line = gt_test_proc_expect_line (client, "tcp port=[0-9]+", NULL, GT_TEST_WAIT_MS);
  tcp_port = (guint16)gt_test_capture_uint (line, "tcp port=([0-9]+)");
  if (tcp_port < first || tcp_port > last)
    gt_test_fail ("tcp port %u outside --tcpRange %u-%u", tcp_port, first, last);
  run_tcp_banner_echo (tcp_port);
}

/* 5. 200 concurrent connections, each a slow request with its own body. */

typedef struct
{
  GtTestConn *c;
  GByteArray *req;
  gsize sent;
  gboolean connected;
  GtTestHttpResponse *resp;
} Slot;

/* N connections opened at once, each POSTing a distinct body to /slow?ms=300; all responses
 * must arrive (in any order) within GT_TEST_WAIT_MS, so the requests must really run concurrently.
 */
static void
run_concurrent (guint16 port)
{
  enum
  {
    N = 200
  };
  Slot slots[N] = { { 0 } };
  struct pollfd pfds[N];
  g_autoptr (GError) error = NULL;
  gint64 start, deadline;
  guint done = 0;

  start = g_get_monotonic_time ();
  deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
  for (guint i = 0; i < N; i++)
    {
      g_autofree char *body = g_strdup_printf ("request %03u %.*s", i, (int)(100 + i * 13),
                                               "abcdefghijklmnopqrstuvwxyz0123456789"
                                               "abcdefghijklmnopqrstuvwxyz0123456789"
                                               "abcdefghijklmnopqrstuvwxyz0123456789"
                                               "abcdefghijklmnopqrstuvwxyz0123456789"
                                               "abcdefghijklmnopqrstuvwxyz0123456789"
                                               "abcdefghijklmnopqrstuvwxyz0123456789"
                                               "abcdefghijklmnopqrstuvwxyz0123456789"
                                               "abcdefghijklmnopqrstuvwxyz0123456789");

      slots[i].c = gt_test_conn_connect_start (port, &error);
      g_assert_no_error (error);
      slots[i].req
          = gt_test_http_build_request ("POST", "/slow?ms=300", HOST, body, strlen (body), NULL);
    }

  /* All 200 are in flight at once; each response takes 300 ms at the service. */
  while (done < N)
    {
      guint idx[N], n = 0;

      if (g_get_monotonic_time () > deadline)
        {
          GString *s = g_string_new (NULL);

          for (guint i = 0; i < N; i++)
            if (slots[i].resp == NULL)
              g_string_append_printf (s, " %u(sent %" G_GSIZE_FORMAT "/%u, got %u%s)", i,
                                      slots[i].sent, slots[i].req->len, slots[i].c->in->len,
                                      slots[i].c->eof ? ", eof" : "");
          gt_test_fail ("%u of %u concurrent requests unfinished after %d s:%s", N - done, N,
                     GT_TEST_WAIT_MS / 1000, s->str);
        }
      for (guint i = 0; i < N; i++)
        if (slots[i].resp == NULL)
          {
            pfds[n].fd = slots[i].c->fd;
            pfds[n].events = slots[i].sent < slots[i].req->len ? POLLOUT : POLLIN;
            pfds[n].revents = 0;
            idx[n++] = i;
          }
      if (poll (pfds, n, 100) <= 0)
        continue;
      for (guint k = 0; k < n; k++)
        {
          Slot *s = &slots[idx[k]];

          if (pfds[k].revents == 0)
            continue;
          if (!s->connected)
            {
              if (!gt_test_conn_check_connected (s->c, &error))
                gt_test_fail ("connection %u: %s", idx[k], error->message);
              s->connected = TRUE;
            }
          if (s->sent < s->req->len)
            {
              gssize w
                  = send (s->c->fd, s->req->data + s->sent, s->req->len - s->sent, MSG_NOSIGNAL);

              if (w < 0 && errno != EAGAIN)
                gt_test_fail ("connection %u: send: %s", idx[k], g_strerror (errno));
              s->sent += MAX (w, 0);
            }
          else
            {
              gsize consumed;
              int res;

              if (gt_test_conn_read_now (s->c, &error) == -1)
                gt_test_fail ("connection %u: %s", idx[k], error->message);
              res = gt_test_http_parse_response (s->c->in->data, s->c->in->len, s->c->eof,
                                                 &consumed, &s->resp, &error);
              if (res < 0)
                gt_test_fail ("connection %u: %s", idx[k], error->message);
              if (res > 0)
                done++;
            }
        }
    }
  g_test_message ("200 concurrent slow requests took %.2f s",
                  (g_get_monotonic_time () - start) / 1e6);

  for (guint i = 0; i < N; i++)
    {
      const guint8 *want
          = (const guint8 *)memmem (slots[i].req->data, slots[i].req->len, "\r\n\r\n", 4) + 4;
      gsize want_len = slots[i].req->data + slots[i].req->len - want;

      gt_test_expect_response (slots[i].resp, error, 200);
      gt_test_check_bytes ("concurrent echo", slots[i].resp->body->data, slots[i].resp->body->len,
                           want, want_len);
      gt_test_http_response_free (slots[i].resp);
      g_byte_array_unref (slots[i].req);
      gt_test_conn_free (slots[i].c);
    }
}

static void
test_concurrent (Fixture *f, gconstpointer data)
{
  GT_TEST_REQUIRE_GT ();
  run_concurrent (start_relay (f, NULL));
}

/* 6. Local service down, then up: 502 then 200 on the same tunnel. */

static void
test_local_down_up (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) services = NULL;
  g_autoptr (GError) error = NULL;
  guint16 local_port = gt_test_free_port (), port;
  guint tunnels_before;
  GtTestHttp *h;
  GtTestProc *client;

  GT_TEST_REQUIRE_GT ();
  services = http_service_args (local_port, PREFIX);
  gt_test_args_addv (services, "--remoteConnections", "1", "--remoteIdleConnections", "1", NULL);
  start_server (f, "server", 0, NULL, &port);
  client = start_client (f, "client", port, services);
  /* Let the pool settle so that only new tunnels count below. */
  g_usleep (500 * 1000);
  tunnels_before = gt_test_proc_count_matches (client, "tunnel started");

  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "GET", "/echo", HOST, NULL, 0, &error);

    gt_test_expect_response (r, error, 502);
  }
  h = gt_test_http_start ("late-service", local_port, NULL);
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "POST", "/echo", HOST, "after", 5, &error);

    gt_test_expect_response (r, error, 200);
    gt_test_check_bytes ("echo after the service came up", r->body->data, r->body->len,
                 (const guint8 *)"after", 5);
  }
  gt_test_http_stop (h);
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "GET", "/echo", HOST, NULL, 0, &error);

    gt_test_expect_response (r, error, 502);
  }
  g_assert_false (gt_test_proc_has_exited (client));
  g_assert_cmpuint (gt_test_proc_count_matches (client, "tunnel started"), ==, tunnels_before);
}

/* 7a. A stalled incomplete head and a stalled request body do not disturb other requests. */

static void
test_stalled_head (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestConn) partial_head = NULL;
  g_autoptr (GtTestConn) partial_body = NULL;
  static const char head_part[] = "GET / HTTP/1.1\r\nHo";
  static const char body_part[] = "POST /echo HTTP/1.1\r\nHost: " HOST "\r\n"
                                  "Content-Length: 100000\r\n\r\nonly the start";
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  port = start_relay (f, "--remoteConnections", "1", NULL);
  partial_head = gt_test_conn_connect (port, &error);
  g_assert_no_error (error);
  g_assert_true (gt_test_conn_write_all (partial_head, head_part, strlen (head_part),
                                         gt_test_deadline_in (5000), &error));
  partial_body = gt_test_conn_connect (port, &error);
  g_assert_no_error (error);
  g_assert_true (gt_test_conn_write_all (partial_body, body_part, strlen (body_part),
                                         gt_test_deadline_in (5000), &error));
  g_usleep (300 * 1000);

  for (guint i = 0; i < 20; i++)
    {
      gsize n = 1000 + i * 5000;
      g_autoptr (GtTestHttpResponse) r = NULL;
      g_autoptr (GtTestConn) c = gt_test_conn_connect (port, &error);
      gint64 t0 = g_get_monotonic_time ();

      g_assert_no_error (error);
      r = gt_test_conn_request (c, "POST", "/echo", HOST, gt_test_pattern () + i, n, 10000, &error);
      if (r == NULL)
        gt_test_fail ("request %u while others stall: %s", i, error->message);
      gt_test_expect_response (r, error, 200);
      gt_test_check_bytes ("echo while others stall", r->body->data, r->body->len,
                           gt_test_pattern () + i, n);
      if (g_get_monotonic_time () - t0 > 5 * G_USEC_PER_SEC)
        gt_test_fail ("request %u took %.1f s while others stall", i,
                   (g_get_monotonic_time () - t0) / 1e6);
    }

  /* The stalled request body still completes once the rest arrives. */
  {
    g_autoptr (GtTestHttpResponse) r = NULL;
    gsize have = strlen ("only the start");
    g_autoptr (GByteArray) want = g_byte_array_new ();

    g_byte_array_append (want, (const guint8 *)"only the start", have);
    g_byte_array_append (want, gt_test_pattern (), 100000 - have);
    g_assert_true (gt_test_conn_write_all (partial_body, gt_test_pattern (), 100000 - have,
                                           gt_test_deadline_in (GT_TEST_WAIT_MS), &error));
    r = gt_test_conn_read_response (partial_body, gt_test_deadline_in (GT_TEST_WAIT_MS), &error);
    gt_test_expect_response (r, error, 200);
    gt_test_check_bytes ("completed stalled body", r->body->data, r->body->len, want->data,
                         want->len);
  }
}

/* 7b. A reader that stops reading a 64 MiB download does not stall other streams on the
 * single tunnel. */

static void
test_stalled_reader (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestConn) big = NULL;
  g_autoptr (GByteArray) req = NULL;
  const guint8 *head_end;
  gsize body_start, total = 64 * GT_TEST_MIB, got;
  guint16 port;
  GtTestProc *client;
  gint64 deadline;

  GT_TEST_REQUIRE_GT ();
  port = start_relay (f, "--remoteConnections", "1", "--remoteIdleConnections", "1", NULL);
  client = g_ptr_array_index (gt_test_procs (), 1);

  big = gt_test_conn_connect (port, &error);
  g_assert_no_error (error);
  req = gt_test_http_build_request ("GET", "/bytes?n=67108864", HOST, NULL, 0, NULL);
  g_assert_true (
      gt_test_conn_write_all (big, req->data, req->len, gt_test_deadline_in (5000), &error));
  conn_read_exact (big, 65536, GT_TEST_WAIT_MS, "start of the 64 MiB download");
  /* Stop reading; give the relay time to fill every buffer on the way. */
  g_usleep (1500 * 1000);

  for (guint i = 0; i < 20; i++)
    {
      g_autoptr (GtTestHttpResponse) r = NULL;
      g_autoptr (GtTestConn) c = gt_test_conn_connect (port, &error);
      gsize n = 10000 + i * 20000;

      g_assert_no_error (error);
      if (i % 2 == 0)
        {
          g_autofree char *path = g_strdup_printf ("/bytes?n=%" G_GSIZE_FORMAT, n);

          r = gt_test_conn_request (c, "GET", path, HOST, NULL, 0, 10000, &error);
        }
      else
        r = gt_test_conn_request (c, "POST", "/echo", HOST, gt_test_pattern () + i, n, 10000,
                                  &error);
      if (r == NULL)
        gt_test_fail ("request %u while a reader stalls on the same tunnel: %s", i, error->message);
      gt_test_expect_response (r, error, 200);
      gt_test_check_bytes ("request next to a stalled reader", r->body->data, r->body->len,
                   i % 2 == 0 ? gt_test_pattern () : gt_test_pattern () + i, n);
    }

  /* The stalled download resumes and its 64 MiB arrive intact. */
  head_end = big->in->len >= 4 ? memmem (big->in->data, big->in->len, "\r\n\r\n", 4) : NULL;
  g_assert_nonnull (head_end);
  g_assert_true (g_str_has_prefix ((const char *)big->in->data, "HTTP/1.1 200"));
  body_start = head_end + 4 - big->in->data;
  got = big->in->len - body_start;
  gt_test_check_bytes ("64 MiB download (start)", big->in->data + body_start, got,
                       gt_test_pattern (), got);
  deadline = gt_test_deadline_in (60000);
  while (got < total)
    {
      guint8 buf[256 * 1024];
      gssize n = recv (big->fd, buf, MIN (sizeof buf, total - got), 0);

      if (n > 0)
        {
          if (memcmp (buf, gt_test_pattern () + got, n) != 0)
            gt_test_check_bytes ("64 MiB download", buf, n, gt_test_pattern () + got, n);
          got += n;
        }
      else if (n == 0)
        gt_test_fail ("64 MiB download: EOF after %" G_GSIZE_FORMAT " bytes", got);
      else if (errno == EAGAIN || errno == EINTR)
        {
          if (!gt_test_fd_poll (big->fd, POLLIN, deadline, &error))
            gt_test_fail ("64 MiB download: %s after %" G_GSIZE_FORMAT " bytes", error->message,
                          got);
        }
      else
        gt_test_fail ("64 MiB download: recv: %s", g_strerror (errno));
    }
  g_assert_cmpuint (gt_test_proc_count_matches (client, "tunnel started"), ==, 1);
}

/* 8. Wrong secret: refused, retried, still running. */

static void
test_wrong_secret (Fixture *f, gconstpointer data)
{
  GtTestHttp *h;
  g_autoptr (GPtrArray) services = NULL;
  g_autofree char *l1 = NULL, *l2 = NULL, *l3 = NULL, *l4 = NULL;
  GtTestProc *client;
  guint16 port;
  guint from = 0;

  GT_TEST_REQUIRE_GT ();
  h = gt_test_http_start ("svc", 0, NULL);
  services = http_service_args (h->port, PREFIX);
  start_server (f, "server", 0, NULL, &port);
  client = start_client_with_secret (f, "client", port, "not-the-secret", services);
  l1 = gt_test_proc_expect_line (client, "server refused: invalid id or secret", &from,
                                 GT_TEST_WAIT_MS);
  l2 = gt_test_proc_expect_line (client, "retrying in", &from, GT_TEST_WAIT_MS);
  l3 = gt_test_proc_expect_line (client, "server refused: invalid id or secret", &from,
                                 GT_TEST_WAIT_MS);
  l4 = gt_test_proc_expect_line (client, "retrying in", &from, GT_TEST_WAIT_MS);
  g_usleep (200 * 1000);
  g_assert_false (gt_test_proc_has_exited (client));
  g_assert_cmpuint (gt_test_proc_count_matches (client, "tunnel started"), ==, 0);
}

/* 9. Unknown host → 404 naming it; malformed heads → 400, oversized → 431. */

static void
test_errors (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  port = start_relay (f, NULL);
  {
    g_autoptr (GtTestConn) c = gt_test_conn_connect (port, &error);
    g_autoptr (GtTestHttpResponse) r = NULL;
    g_autofree char *body = NULL;

    g_assert_no_error (error);
    r = gt_test_conn_request (c, "GET", "/", "nobody.example.com", NULL, 0, GT_TEST_WAIT_MS,
                              &error);
    gt_test_expect_response (r, error, 404);
    body = g_strndup ((const char *)r->body->data, r->body->len);
    if (strstr (body, "nobody.example.com") == NULL)
      gt_test_fail ("404 body does not name the host: '%s'", body);
    /* then the server closes */
    if (!gt_test_conn_read_to_eof (c, TRUE, gt_test_deadline_in (5000), &error))
      gt_test_fail ("connection not closed after the 404: %s", error->message);
  }
  {
    static const char *const bad[] = {
      "\x01\x02 garbage that is not http\r\n\r\n",
      "GET / HTTP/1.1\r\nHost " HOST "\r\n\r\n",
      "GET /\r\nHost: " HOST "\r\n\r\n",
    };

    for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
      {
        g_autoptr (GtTestConn) c = gt_test_conn_connect (port, &error);
        g_autoptr (GtTestHttpResponse) r = NULL;

        g_assert_no_error (error);
        g_assert_true (gt_test_conn_write_all (c, bad[i], strlen (bad[i]),
                                               gt_test_deadline_in (5000), &error));
        r = gt_test_conn_read_response (c, gt_test_deadline_in (GT_TEST_WAIT_MS), &error);
        if (r == NULL)
          gt_test_fail ("malformed head %u: no response: %s", i, error->message);
        gt_test_expect_response (r, error, 400);
      }
  }
  {
    g_autoptr (GtTestConn) c = gt_test_conn_connect (port, &error);
    g_autoptr (GtTestHttpResponse) r = NULL;
    g_autoptr (GString) big = g_string_new ("GET / HTTP/1.1\r\nHost: " HOST "\r\n");
    g_autoptr (GError) write_error = NULL;

    g_assert_no_error (error);
    for (guint i = 0; i < 250; i++)
      g_string_append_printf (big, "X-Padding-%03u: %064u\r\n", i, i);
    g_string_append (big, "\r\n");
    g_assert_cmpuint (big->len, >, 16 * 1024);
    /* the server may answer and close before it read everything */
    gt_test_conn_write_all (c, big->str, big->len, gt_test_deadline_in (5000), &write_error);
    r = gt_test_conn_read_response (c, gt_test_deadline_in (GT_TEST_WAIT_MS), &error);
    if (r == NULL)
      gt_test_fail ("oversized head: no response: %s (write: %s)", error->message,
                 write_error != NULL ? write_error->message : "ok");
    gt_test_expect_response (r, error, 431);
    g_assert_cmpstr (r->reason, ==, "Request Header Fields Too Large");
  }
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "GET", "/whoami", HOST, NULL, 0, &error);

    gt_test_expect_response (r, error, 200);
  }
}

/* 10. Client restart: routes go away with the client and come back with a new one. */

static void
test_client_restart (Fixture *f, gconstpointer data)
{
  GtTestHttp *h;
  g_autoptr (GPtrArray) services = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GString) seen = g_string_new (NULL);
  GtTestProc *client;
  guint16 port;
  gboolean got_404 = FALSE;
  gint64 deadline;

  GT_TEST_REQUIRE_GT ();
  h = gt_test_http_start ("svc", 0, NULL);
  services = http_service_args (h->port, PREFIX);
  start_server (f, "server", 0, NULL, &port);
  client = start_client (f, "client-1", port, services);
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "GET", "/whoami", HOST, NULL, 0, &error);

    gt_test_expect_response (r, error, 200);
  }

  gt_test_proc_stop_cleanly (client);

  /* The server notices the closed tunnel right away; allow it a moment. */
  deadline = gt_test_deadline_in (5000);
  while (!got_404 && g_get_monotonic_time () < deadline)
    {
      g_autoptr (GError) e = NULL;
      g_autoptr (GtTestHttpResponse) r
          = gt_test_http_request (port, "GET", "/whoami", HOST, NULL, 0, &e);

      g_string_append_printf (seen, " %u", r != NULL ? r->status : 0);
      got_404 = r != NULL && r->status == 404;
      if (!got_404)
        g_usleep (100 * 1000);
    }
  if (!got_404)
    gt_test_fail ("no 404 after the client stopped; statuses seen:%s", seen->str);

  start_client (f, "client-2", port, services);
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "GET", "/whoami", HOST, NULL, 0, &error);

    gt_test_expect_response (r, error, 200);
    gt_test_check_bytes ("whoami after client restart", r->body->data, r->body->len,
                         (const guint8 *)"svc", 3);
  }
}

/* 11. Server restart on the same port: the client reconnects by itself. */

static void
test_server_restart (Fixture *f, gconstpointer data)
{
  GtTestHttp *h;
  g_autoptr (GPtrArray) services = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *line = NULL;
  GtTestProc *server, *client;
  guint16 port = gt_test_free_port (), got_port;
  guint from;

  GT_TEST_REQUIRE_GT ();
  h = gt_test_http_start ("svc", 0, NULL);
  services = http_service_args (h->port, PREFIX);
  server = start_server (f, "server-1", port, NULL, &got_port);
  client = start_client (f, "client", port, services);
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "POST", "/echo", HOST, "one", 3, &error);

    gt_test_expect_response (r, error, 200);
  }

  gt_test_proc_stop_cleanly (server);
  /* Counted after the old server is gone: the client may still have been starting tunnels. */
  from = gt_test_proc_line_count (client);

  server = start_server (f, "server-2", port, NULL, &got_port);
  /* A fresh server accepting a tunnel proves the reconnect; the client then says so too. */
  line = gt_test_proc_expect_line (server, "tunnel accepted", NULL, GT_TEST_WAIT_MS);
  g_free (line);
  line = gt_test_proc_expect_line (client, "tunnel started", &from, GT_TEST_WAIT_MS);
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "POST", "/echo", HOST, gt_test_pattern (), 200000, &error);

    gt_test_expect_response (r, error, 200);
    gt_test_check_bytes ("echo after server restart", r->body->data, r->body->len,
                         gt_test_pattern (), 200000);
  }
}

/* ------------------------------------------------------------------------------------------ */

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, PATTERN_SIZE);

#define ADD(path, func)                                                                            \
  g_test_add ("/gt/integration/relay/" path, Fixture, NULL, fixture_setup, func, fixture_teardown)
  ADD ("harness/direct", test_harness_direct);
  ADD ("http-bodies", test_http_bodies);
  ADD ("keep-alive", test_keep_alive);
  ADD ("websocket", test_websocket);
  ADD ("tcp-forward", test_tcp_forward);
  ADD ("concurrent", test_concurrent);
  ADD ("local-down-up", test_local_down_up);
  ADD ("stalled-head", test_stalled_head);
  ADD ("stalled-reader", test_stalled_reader);
  ADD ("wrong-secret", test_wrong_secret);
  ADD ("errors", test_errors);
  ADD ("client-restart", test_client_restart);
  ADD ("server-restart", test_server_restart);
#undef ADD

  return gt_test_run ();
}
