/* test-server-listener.c: listen addresses are taken without a resolver; the HTTP error replies;
 * how far a new connection's buffer may grow. */
#include "config.h"

#include "gt-http.h"
#include "gt-server-private.h"

static void
assert_address (const char *text, const char *ip, guint16 port)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GInetSocketAddress) sa = gt_listen_address_parse (text, &error);
  g_autofree char *got = NULL;

  g_assert_no_error (error);
  g_assert_nonnull (sa);
  got = g_inet_address_to_string (g_inet_socket_address_get_address (sa));
  g_assert_cmpstr (got, ==, ip);
  g_assert_cmpuint (g_inet_socket_address_get_port (sa), ==, port);
}

static void
test_listen_address (void)
{
  assert_address ("0.0.0.0:8080", "0.0.0.0", 8080);
  assert_address ("127.0.0.1:0", "127.0.0.1", 0);
  assert_address ("[::1]:443", "::1", 443);
  assert_address ("[::]:80", "::", 80);
  assert_address ("localhost:9000", "127.0.0.1", 9000);
  assert_address ("LocalHost:9001", "127.0.0.1", 9001);
}

static void
test_listen_address_no_dns (void)
{
  const char *bad[] = { "example.invalid:80", "gt.example.com:443", "[not-an-ip]:80" };

  /* Names other than localhost are refused at once, never looked up. */
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GInetSocketAddress) sa = gt_listen_address_parse (bad[i], &error);

      g_assert_null (sa);
      g_assert_nonnull (error);
    }
}

static void
test_http_reply (void)
{
  g_autofree char *reply = _gt_server_http_reply (404, "Not Found", "no gt client\n");

  g_assert_cmpstr (reply, ==,
                   "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   "Content-Length: 13\r\nConnection: close\r\n\r\nno gt client\n");
}

/* A new connection's buffer grows only as far as its bytes prove it must (issue 15). */
static void
test_buffer_limit (void)
{
  guint8 buf[GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE];
  gsize full = GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE;

  /* Nothing yet, or HTTP: up to the head limit (+1 byte to tell "too large"). */
  g_assert_cmpuint (_gt_server_pending_buffer_limit (GT_LISTENER_PLAIN, NULL, 0), ==,
                    GT_HTTP_MAX_HEAD + 1);
  g_assert_cmpuint (_gt_server_pending_buffer_limit (GT_LISTENER_PLAIN, (const guint8 *) "GET", 3),
                    ==, GT_HTTP_MAX_HEAD + 1);

  /* A tunnel preface without its frame header yet: one small chunk. */
  gt_preface_encode (buf);
  g_assert_cmpuint (_gt_server_pending_buffer_limit (GT_LISTENER_PLAIN, buf, GT_PREFACE_SIZE),
                    <=, 4096);

  /* A HELLO header: exactly its frame, whatever it claims up to the control limit. */
  gt_frame_header_encode (buf + GT_PREFACE_SIZE, GT_FRAME_HELLO, 0, 0, 300);
  g_assert_cmpuint (_gt_server_pending_buffer_limit (GT_LISTENER_PLAIN, buf, full), ==,
                    full + 300);
  gt_frame_header_encode (buf + GT_PREFACE_SIZE, GT_FRAME_HELLO, 0, 0, GT_FRAME_MAX_CONTROL);
  g_assert_cmpuint (_gt_server_pending_buffer_limit (GT_LISTENER_TLS, buf, full), ==,
                    full + GT_FRAME_MAX_CONTROL);

  /* A header that is not a valid HELLO proves nothing: one chunk, and the parser refuses it. */
  gt_frame_header_encode (buf + GT_PREFACE_SIZE, GT_FRAME_HELLO, 0, 0, GT_FRAME_MAX_CONTROL + 1);
  g_assert_cmpuint (_gt_server_pending_buffer_limit (GT_LISTENER_PLAIN, buf, full), <=, 4096);
  gt_frame_header_encode (buf + GT_PREFACE_SIZE, GT_FRAME_DATA, 0, 1, 60000);
  g_assert_cmpuint (_gt_server_pending_buffer_limit (GT_LISTENER_PLAIN, buf, full), <=, 4096);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/server/listener/listen-address", test_listen_address);
  g_test_add_func ("/gt/server/listener/listen-address-no-dns", test_listen_address_no_dns);
  g_test_add_func ("/gt/server/listener/http-reply", test_http_reply);
  g_test_add_func ("/gt/server/listener/buffer-limit", test_buffer_limit);
  return g_test_run ();
}
