/* test-server-listener.c: listen addresses are taken without a resolver; the HTTP error replies. */
#include "config.h"

#include "gt-server-private.h"

static void
assert_address (const char *text, const char *ip, guint16 port)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GInetSocketAddress) sa = _gt_server_parse_listen_address (text, &error);
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
      g_autoptr (GInetSocketAddress) sa = _gt_server_parse_listen_address (bad[i], &error);

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

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/server/listener/listen-address", test_listen_address);
  g_test_add_func ("/gt/server/listener/listen-address-no-dns", test_listen_address_no_dns);
  g_test_add_func ("/gt/server/listener/http-reply", test_http_reply);
  return g_test_run ();
}
