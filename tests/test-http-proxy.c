/* test-http-proxy.c: proxies from the environment; HTTP CONNECT via a fake proxy and tinyproxy. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "gt-http-proxy.h"

static const char *const proxy_vars[] = { "http_proxy", "HTTP_PROXY", "https_proxy",
                                          "HTTPS_PROXY", "no_proxy", "NO_PROXY", NULL };

static void
clear_env (void)
{
  for (gsize i = 0; proxy_vars[i]; i++)
    g_unsetenv (proxy_vars[i]);
}

static void
assert_proxy (const char *scheme, const char *host, const char *expected)
{
  g_autofree char *got = gt_http_proxy_for (scheme, host);

  if (g_strcmp0 (got, expected) != 0)
    g_error ("proxy for %s://%s: expected %s, got %s", scheme, host, expected ? expected : "NULL",
             got ? got : "NULL");
}

static void
test_env_schemes (void)
{
  clear_env ();
  assert_proxy ("tcp", "example.com", NULL);
  assert_proxy ("tls", "example.com", NULL);

  g_setenv ("http_proxy", "http://p1:3128", TRUE);
  assert_proxy ("tcp", "example.com", "http://p1:3128");
  assert_proxy ("ws", "example.com", "http://p1:3128");
  assert_proxy ("tls", "example.com", NULL); /* https_proxy only */
  assert_proxy ("wss", "example.com", NULL);

  g_setenv ("https_proxy", "p2:8080", TRUE); /* no scheme: http:// is assumed */
  assert_proxy ("tls", "example.com", "http://p2:8080");
  assert_proxy ("wss", "example.com", "http://p2:8080");
  assert_proxy ("ws", "example.com", "http://p1:3128");

  /* Upper-case variants; lower-case wins; an empty value counts as unset. */
  clear_env ();
  g_setenv ("HTTPS_PROXY", "http://upper:1", TRUE);
  assert_proxy ("tls", "example.com", "http://upper:1");
  g_setenv ("https_proxy", "http://lower:2", TRUE);
  assert_proxy ("tls", "example.com", "http://lower:2");
  g_setenv ("https_proxy", "", TRUE);
  assert_proxy ("tls", "example.com", "http://upper:1");
  clear_env ();
}

static void
test_env_no_proxy (void)
{
  clear_env ();
  g_setenv ("http_proxy", "http://proxy:3128", TRUE);
  g_setenv ("no_proxy", "example.com, .internal,10.0.0.0/8 ,192.168.1.5,::1,*.corp,lan:8080",
            TRUE);

  assert_proxy ("ws", "example.com", NULL);
  assert_proxy ("ws", "EXAMPLE.com.", NULL);
  assert_proxy ("ws", "www.example.com", NULL);
  assert_proxy ("ws", "notexample.com", "http://proxy:3128");
  assert_proxy ("ws", "example.com.evil", "http://proxy:3128");
  assert_proxy ("ws", "a.b.internal", NULL);
  assert_proxy ("ws", "internal", NULL);
  assert_proxy ("ws", "xinternal", "http://proxy:3128");
  assert_proxy ("ws", "10.1.2.3", NULL);
  assert_proxy ("ws", "11.1.2.3", "http://proxy:3128");
  assert_proxy ("ws", "192.168.1.5", NULL);
  assert_proxy ("ws", "192.168.1.6", "http://proxy:3128");
  assert_proxy ("ws", "::1", NULL);
  assert_proxy ("ws", "[::1]", NULL);
  assert_proxy ("ws", "::2", "http://proxy:3128");
  assert_proxy ("ws", "x.corp", NULL);
  assert_proxy ("ws", "lan", NULL);

  g_setenv ("no_proxy", "", TRUE);
  g_setenv ("NO_PROXY", "example.com", TRUE);
  assert_proxy ("ws", "example.com", NULL);
  g_setenv ("no_proxy", "other.org", TRUE); /* lower-case wins */
  assert_proxy ("ws", "example.com", "http://proxy:3128");

  g_setenv ("no_proxy", "*", TRUE);
  assert_proxy ("ws", "anything.example", NULL);
  assert_proxy ("ws", "127.0.0.1", NULL);
  clear_env ();
}

static char **
resolve (GProxyResolver *resolver, const char *uri)
{
  g_autoptr (GError) error = NULL;
  char **result = g_proxy_resolver_lookup (resolver, uri, NULL, &error);

  g_assert_no_error (error);
  g_assert_nonnull (result);
  g_assert_nonnull (result[0]);
  g_assert_null (result[1]);
  return result;
}

static void
resolve_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  char ***out = user_data;
  g_autoptr (GError) error = NULL;

  *out = g_proxy_resolver_lookup_finish (G_PROXY_RESOLVER (source), result, &error);
  g_assert_no_error (error);
}

static void
test_env_resolver (void)
{
  g_autoptr (GProxyResolver) none = NULL;
  g_autoptr (GProxyResolver) resolver = NULL;
  g_auto (GStrv) a = NULL;
  g_auto (GStrv) b = NULL;
  g_auto (GStrv) c = NULL;
  g_auto (GStrv) d = NULL;
  g_autoptr (GError) error = NULL;

  clear_env ();
  none = gt_http_proxy_resolver_new_from_env ();
  g_assert_null (none);

  g_setenv ("http_proxy", "http://proxy:3128", TRUE);
  g_setenv ("no_proxy", "local.example", TRUE);
  resolver = gt_http_proxy_resolver_new_from_env ();
  clear_env (); /* the resolver keeps what it saw */
  g_assert_nonnull (resolver);
  g_assert_true (g_proxy_resolver_is_supported (resolver));

  a = resolve (resolver, "ws://gt.example:80/tunnel");
  g_assert_cmpstr (a[0], ==, "http://proxy:3128");
  b = resolve (resolver, "ws://local.example/tunnel");
  g_assert_cmpstr (b[0], ==, "direct://");
  c = resolve (resolver, "wss://gt.example/tunnel"); /* no https_proxy */
  g_assert_cmpstr (c[0], ==, "direct://");

  g_proxy_resolver_lookup_async (resolver, "ws://[::1]:8080/", NULL, resolve_cb, &d);
  while (d == NULL)
    g_main_context_iteration (NULL, TRUE);
  g_assert_cmpstr (d[0], ==, "http://proxy:3128");

  g_assert_null (g_proxy_resolver_lookup (resolver, "not a uri", NULL, &error));
  g_assert_nonnull (error);
}

/* ------------------------------------------------------------------------------------------ */
/* Servers in threads, with plain blocking sockets */

static int
listen_any (guint16 *port)
{
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof sa;
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (bind (fd, (struct sockaddr *) &sa, sizeof sa), ==, 0);
  g_assert_cmpint (listen (fd, 8), ==, 0);
  g_assert_cmpint (getsockname (fd, (struct sockaddr *) &sa, &len), ==, 0);
  *port = ntohs (sa.sin_port);
  return fd;
}

static gboolean
send_all (int fd, const void *data, gsize len)
{
  const guint8 *p = data;

  while (len > 0)
    {
      ssize_t n = send (fd, p, len, MSG_NOSIGNAL);

      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return FALSE;
      p += n;
      len -= n;
    }
  return TRUE;
}

/* Echo server: sends "HELLO\n", then echoes until EOF. One connection. */
static gpointer
echo_thread (gpointer data)
{
  int lfd = GPOINTER_TO_INT (data);
  int fd = accept (lfd, NULL, NULL);
  char buf[16384];
  ssize_t n;

  close (lfd);
  if (fd < 0)
    return NULL;
  send_all (fd, "HELLO\n", 6);
  while ((n = recv (fd, buf, sizeof buf, 0)) > 0)
    if (!send_all (fd, buf, n))
      break;
  close (fd);
  return NULL;
}

typedef enum
{
  PROXY_OK,
  PROXY_407,
  PROXY_403,
  PROXY_GARBAGE,
  PROXY_HUGE,
  PROXY_CLOSE,
} ProxyMode;

typedef struct
{
  int lfd;
  ProxyMode mode;
  char *request_line; /* set by the proxy thread */
  char *auth;
  gboolean spliced;
} FakeProxy;

static char *
read_head (int fd)
{
  GString *s = g_string_new (NULL);
  char c;

  while (s->len < 16384 && recv (fd, &c, 1, 0) == 1)
    {
      g_string_append_c (s, c);
      if (g_str_has_suffix (s->str, "\r\n\r\n"))
        break;
    }
  return g_string_free (s, FALSE);
}

static void
splice_fds (int a, int b)
{
  struct pollfd p[2] = { { a, POLLIN, 0 }, { b, POLLIN, 0 } };
  char buf[16384];

  for (;;)
    {
      if (poll (p, 2, 10000) <= 0)
        return;
      for (int i = 0; i < 2; i++)
        if (p[i].revents)
          {
            ssize_t n = recv (p[i].fd, buf, sizeof buf, 0);

            if (n <= 0 || !send_all (p[1 - i].fd, buf, n))
              return;
          }
    }
}

static gpointer
proxy_thread (gpointer data)
{
  FakeProxy *fp = data;
  int fd = accept (fp->lfd, NULL, NULL);
  g_autofree char *head = NULL;
  g_auto (GStrv) lines = NULL;

  if (fd < 0)
    return NULL;
  head = read_head (fd);
  lines = g_strsplit (head, "\r\n", -1);
  fp->request_line = g_strdup (lines[0]);
  for (gsize i = 1; lines[i]; i++)
    if (g_ascii_strncasecmp (lines[i], "Proxy-Authorization: ", 21) == 0)
      fp->auth = g_strdup (lines[i] + 21);

  switch (fp->mode)
    {
    case PROXY_OK:
      {
        char host[64];
        unsigned port;
        struct sockaddr_in sa = { .sin_family = AF_INET };
        char greeting[6];
        g_autofree char *reply = NULL;
        int up;

        if (sscanf (fp->request_line, "CONNECT %63[0-9.]:%u HTTP/1.1", host, &port) != 2)
          break;
        up = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        inet_pton (AF_INET, host, &sa.sin_addr);
        sa.sin_port = htons (port);
        if (connect (up, (struct sockaddr *) &sa, sizeof sa) != 0
            || recv (up, greeting, sizeof greeting, MSG_WAITALL) != sizeof greeting)
          {
            close (up);
            break;
          }
        /* The head and the first tunnelled bytes in one segment: the client must not eat them. */
        reply = g_strdup_printf ("HTTP/1.1 200 Connection established\r\nVia: fake\r\n\r\n%.6s",
                                 greeting);
        send_all (fd, reply, strlen (reply));
        fp->spliced = TRUE;
        splice_fds (fd, up);
        close (up);
      }
      break;
    case PROXY_407:
      {
        const char *r = "HTTP/1.1 407 Proxy Authentication Required\r\n"
                        "Proxy-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\n\r\n";

        send_all (fd, r, strlen (r));
      }
      break;
    case PROXY_403:
      {
        const char *r = "HTTP/1.0 403 Forbidden\r\n\r\n";

        send_all (fd, r, strlen (r));
      }
      break;
    case PROXY_GARBAGE:
      {
        const char *r = "SSH-2.0-OpenSSH\x01\r\n\r\n";

        send_all (fd, r, strlen (r));
      }
      break;
    case PROXY_HUGE:
      {
        g_autofree char *r = g_strnfill (9000, 'a');

        send_all (fd, "HTTP/1.1 200 OK\r\nX: ", 20);
        send_all (fd, r, strlen (r));
        /* Keep the connection open: the client must stop on its own. */
        g_free (read_head (fd));
      }
      break;
    case PROXY_CLOSE:
      send_all (fd, "HTTP/1.1 200", 12);
      break;
    }
  close (fd);
  return NULL;
}

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

  r->io = gt_http_connect_finish (result, &r->error);
  r->done = TRUE;
}

static GIOStream *
connect_sync (const char *proxy_url, const char *host, guint16 port, GError **error)
{
  ConnectResult r = { NULL, NULL, FALSE };

  gt_http_connect_async (proxy_url, host, port, NULL, connect_cb, &r);
  while (!r.done)
    g_main_context_iteration (NULL, TRUE);
  if (r.error != NULL)
    g_propagate_error (error, r.error);
  return r.io;
}

/* Reads the greeting, then echoes 256 KiB of random bytes through the stream in 16 KiB steps. */
static void
assert_echo (GIOStream *io)
{
  GInputStream *in = g_io_stream_get_input_stream (io);
  GOutputStream *out = g_io_stream_get_output_stream (io);
  g_autoptr (GError) error = NULL;
  guint8 chunk[16384];
  guint8 back[16384];
  char greeting[7] = { 0 };
  gsize n = 0;

  g_assert_true (G_IS_POLLABLE_INPUT_STREAM (in));
  g_assert_true (g_pollable_input_stream_can_poll (G_POLLABLE_INPUT_STREAM (in)));
  g_assert_true (g_input_stream_read_all (in, greeting, 6, &n, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (greeting, ==, "HELLO\n");

  for (int i = 0; i < 16; i++)
    {
      for (gsize j = 0; j < sizeof chunk; j++)
        chunk[j] = g_random_int ();
      g_assert_true (g_output_stream_write_all (out, chunk, sizeof chunk, NULL, NULL, &error));
      g_assert_no_error (error);
      g_assert_true (g_input_stream_read_all (in, back, sizeof back, &n, NULL, &error));
      g_assert_no_error (error);
      g_assert_cmpmem (chunk, sizeof chunk, back, n);
    }
}

static void
test_connect_ok (void)
{
  FakeProxy fp = { 0 };
  guint16 proxy_port, target_port;
  int target_fd = listen_any (&target_port);
  GThread *echo, *proxy;
  g_autofree char *url = NULL;
  g_autofree char *expected_line = NULL;
  g_autoptr (GIOStream) io = NULL;
  g_autoptr (GError) error = NULL;

  fp.lfd = listen_any (&proxy_port);
  fp.mode = PROXY_OK;
  echo = g_thread_new ("echo", echo_thread, GINT_TO_POINTER (target_fd));
  proxy = g_thread_new ("proxy", proxy_thread, &fp);

  /* Credentials in the URL: percent-decoded, then sent as Basic authentication. */
  url = g_strdup_printf ("http://user:p%%40ss@127.0.0.1:%u", proxy_port);
  io = connect_sync (url, "127.0.0.1", target_port, &error);
  g_assert_no_error (error);
  g_assert_true (G_IS_SOCKET_CONNECTION (io));
  assert_echo (io);
  g_io_stream_close (io, NULL, NULL);
  g_thread_join (proxy);
  g_thread_join (echo);

  expected_line = g_strdup_printf ("CONNECT 127.0.0.1:%u HTTP/1.1", target_port);
  g_assert_cmpstr (fp.request_line, ==, expected_line);
  g_assert_cmpstr (fp.auth, ==, "Basic dXNlcjpwQHNz"); /* base64 ("user:p@ss") */
  g_assert_true (fp.spliced);
  close (fp.lfd);
  g_free (fp.request_line);
  g_free (fp.auth);
}

static void
run_failing_proxy (ProxyMode mode, GQuark domain, int code, const char *needle)
{
  FakeProxy fp = { 0 };
  guint16 proxy_port;
  GThread *proxy;
  g_autofree char *url = NULL;
  g_autoptr (GIOStream) io = NULL;
  g_autoptr (GError) error = NULL;

  fp.lfd = listen_any (&proxy_port);
  fp.mode = mode;
  proxy = g_thread_new ("proxy", proxy_thread, &fp);
  url = g_strdup_printf ("127.0.0.1:%u", proxy_port); /* no scheme: http:// */
  io = connect_sync (url, "gt.example", 443, &error);
  g_assert_null (io);
  g_assert_error (error, domain, code);
  if (needle != NULL && strstr (error->message, needle) == NULL)
    g_error ("'%s' not in error message '%s'", needle, error->message);
  g_thread_join (proxy);
  g_assert_cmpstr (fp.request_line, ==, "CONNECT gt.example:443 HTTP/1.1");
  g_assert_null (fp.auth);
  close (fp.lfd);
  g_free (fp.request_line);
}

static void
test_connect_407 (void)
{
  run_failing_proxy (PROXY_407, G_IO_ERROR, G_IO_ERROR_PROXY_AUTH_FAILED,
                     "HTTP/1.1 407 Proxy Authentication Required");
}

static void
test_connect_403 (void)
{
  run_failing_proxy (PROXY_403, G_IO_ERROR, G_IO_ERROR_PROXY_FAILED, "HTTP/1.0 403 Forbidden");
}

static void
test_connect_garbage (void)
{
  /* The control byte is replaced in the message. */
  run_failing_proxy (PROXY_GARBAGE, G_IO_ERROR, G_IO_ERROR_PROXY_FAILED, "SSH-2.0-OpenSSH?");
}

static void
test_connect_huge (void)
{
  run_failing_proxy (PROXY_HUGE, G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE, NULL);
}

static void
test_connect_closed (void)
{
  run_failing_proxy (PROXY_CLOSE, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED, NULL);
}

static void
test_connect_bad_url (void)
{
  g_autoptr (GError) e1 = NULL;
  g_autoptr (GError) e2 = NULL;
  g_autoptr (GError) e3 = NULL;
  guint16 port;
  int fd = listen_any (&port);
  g_autofree char *refused = NULL;

  g_assert_null (connect_sync ("socks5://127.0.0.1:1080", "gt.example", 443, &e1));
  g_assert_error (e1, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED);
  g_assert_null (connect_sync ("http://[bad", "gt.example", 443, &e2));
  g_assert_error (e2, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
  close (fd); /* nothing listens there any more */
  refused = g_strdup_printf ("http://127.0.0.1:%u", port);
  g_assert_null (connect_sync (refused, "gt.example", 443, &e3));
  g_assert_nonnull (e3);
  g_assert_nonnull (strstr (e3->message, "HTTP proxy 127.0.0.1:"));
}

/* ------------------------------------------------------------------------------------------ */
/* A real proxy */

static void
test_tinyproxy (void)
{
  g_autofree char *tinyproxy = g_find_program_in_path ("tinyproxy");
  g_autofree char *dir = NULL;
  g_autofree char *conf_path = NULL;
  g_autofree char *log_path = NULL;
  g_autofree char *conf = NULL;
  g_autofree char *url = NULL;
  g_autoptr (GSubprocess) proc = NULL;
  g_autoptr (GIOStream) io = NULL;
  g_autoptr (GError) error = NULL;
  guint16 proxy_port, target_port;
  int target_fd;
  GThread *echo;
  int probe;

  if (tinyproxy == NULL)
    {
      g_test_skip ("tinyproxy not installed");
      return;
    }
  dir = g_dir_make_tmp ("gt-tinyproxy-XXXXXX", &error);
  g_assert_no_error (error);
  conf_path = g_build_filename (dir, "tinyproxy.conf", NULL);
  log_path = g_build_filename (dir, "tinyproxy.log", NULL);
  /* A free port: bind, read it, close, and hand it to tinyproxy. */
  probe = listen_any (&proxy_port);
  close (probe);
  conf = g_strdup_printf ("Port %u\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\n"
                          "MaxClients 4\nLogLevel Info\nLogFile \"%s\"\n%s",
                          proxy_port, log_path,
                          geteuid () == 0 ? "User nobody\nGroup nogroup\n" : "");
  g_assert_true (g_file_set_contents (conf_path, conf, -1, &error));
  g_chmod (dir, 0755);
  g_chmod (conf_path, 0644);
  {
    /* tinyproxy opens its log file after dropping privileges. */
    g_assert_true (g_file_set_contents (log_path, "", 0, NULL));
    g_chmod (log_path, 0666);
  }

  proc = g_subprocess_new (G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_SILENCE,
                           &error, tinyproxy, "-d", "-c", conf_path, NULL);
  g_assert_no_error (error);

  target_fd = listen_any (&target_port);
  echo = g_thread_new ("echo", echo_thread, GINT_TO_POINTER (target_fd));

  url = g_strdup_printf ("http://127.0.0.1:%u", proxy_port);
  /* tinyproxy needs a moment to listen. */
  for (int i = 0; i < 100 && io == NULL; i++)
    {
      g_clear_error (&error);
      io = connect_sync (url, "127.0.0.1", target_port, &error);
      if (io == NULL)
        g_usleep (50000);
    }
  g_assert_no_error (error);
  assert_echo (io);
  g_io_stream_close (io, NULL, NULL);
  g_thread_join (echo);

  g_subprocess_send_signal (proc, SIGTERM);
  g_subprocess_wait (proc, NULL, NULL);
  g_unlink (conf_path);
  g_unlink (log_path);
  g_rmdir (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/gt/transport/http-proxy/env/schemes", test_env_schemes);
  g_test_add_func ("/gt/transport/http-proxy/env/no-proxy", test_env_no_proxy);
  g_test_add_func ("/gt/transport/http-proxy/env/resolver", test_env_resolver);
  g_test_add_func ("/gt/transport/http-proxy/connect/ok", test_connect_ok);
  g_test_add_func ("/gt/transport/http-proxy/connect/407", test_connect_407);
  g_test_add_func ("/gt/transport/http-proxy/connect/403", test_connect_403);
  g_test_add_func ("/gt/transport/http-proxy/connect/garbage", test_connect_garbage);
  g_test_add_func ("/gt/transport/http-proxy/connect/huge-head", test_connect_huge);
  g_test_add_func ("/gt/transport/http-proxy/connect/closed", test_connect_closed);
  g_test_add_func ("/gt/transport/http-proxy/connect/bad-url", test_connect_bad_url);
  g_test_add_func ("/gt/transport/http-proxy/tinyproxy", test_tinyproxy);
  return g_test_run ();
}
