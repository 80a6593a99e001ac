/* Integration tests of P2P with real gt processes: the server's STUN endpoint (stunAddr) and
 * GT's XP signalling through the server to a client. */
#define G_LOG_DOMAIN "gt-test"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-sdp.h"
#include "gt-stun.h"
#include "gt-test-utils.h"
#include "gt-xp.h"

#define PATTERN_SIZE 1024
#define CLIENT_ID "alice"
#define CLIENT_SECRET "s3cret-alice"
#define PREFIX "web"
#define HOST PREFIX ".example.com"

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

/* A gt server with a STUN endpoint on 127.0.0.1:*stun_port (a free port). */
static GtTestProc *
start_server (guint16 *port_out, guint16 *stun_port_out)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autofree char *line = NULL;
  guint16 stun_port = gt_test_free_port ();
  GtTestProc *p;

  gt_test_args_addv (args, "server", "--id", CLIENT_ID, "--secret", CLIENT_SECRET, "--addr",
                     "127.0.0.1:0", "--stunAddr", NULL);
  gt_test_args_add (args, "127.0.0.1:%u", stun_port);
  p = gt_test_spawn_gt ("server", args);
  line = gt_test_proc_expect_line (p, "listening on 127\\.0\\.0\\.1:[0-9]+", NULL, GT_TEST_WAIT_MS);
  *port_out = (guint16)gt_test_capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");
  g_free (gt_test_proc_expect_line (p, "STUN on 127\\.0\\.0\\.1", NULL, GT_TEST_WAIT_MS));
  *stun_port_out = stun_port;
  return p;
}

static int
udp_socket (struct sockaddr_in *local)
{
  int fd = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  socklen_t len = sizeof *local;

  g_assert_cmpint (fd, >=, 0);
  memset (local, 0, sizeof *local);
  local->sin_family = AF_INET;
  local->sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  g_assert_cmpint (bind (fd, (struct sockaddr *)local, sizeof *local), ==, 0);
  g_assert_cmpint (getsockname (fd, (struct sockaddr *)local, &len), ==, 0);
  return fd;
}

static void
udp_send (int fd, guint16 port, const guint8 *buf, gsize len)
{
  struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons (port) };

  to.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  g_assert_cmpint (sendto (fd, buf, len, 0, (struct sockaddr *)&to, sizeof to), ==, (gssize)len);
}

/* The next datagram within timeout_ms, or -1. */
static gssize
udp_recv (int fd, guint8 *buf, gsize cap, guint timeout_ms)
{
  struct pollfd pfd = { .fd = fd, .events = POLLIN };

  if (poll (&pfd, 1, (int)timeout_ms) <= 0)
    return -1;
  return recv (fd, buf, cap, 0);
}

/* A Binding request gets a success answer carrying our own address and port. */
static void
expect_binding (int fd, const struct sockaddr_in *local, guint16 stun_port, guint8 seed)
{
  guint8 txid[12], req[GT_STUN_MAX_MESSAGE], resp[GT_STUN_MAX_MESSAGE];
  GtStunMessage msg;
  g_autoptr (GError) error = NULL;
  gssize n;

  for (guint i = 0; i < sizeof txid; i++)
    txid[i] = (guint8)(seed + i);
  udp_send (fd, stun_port, req, gt_stun_build_binding_request (txid, req));
  n = udp_recv (fd, resp, sizeof resp, GT_TEST_WAIT_MS);
  if (n < 0)
    gt_test_fail ("no STUN answer");
  if (!gt_stun_parse (resp, (gsize)n, &msg, &error))
    gt_test_fail ("bad STUN answer: %s", error->message);
  g_assert_cmpint (msg.klass, ==, GT_STUN_CLASS_SUCCESS);
  g_assert_cmpmem (msg.transaction_id, 12, txid, 12);
  g_assert_true (msg.has_fingerprint);
  g_assert_true (msg.has_xor_mapped);
  g_assert_cmpuint (msg.xor_mapped.family, ==, 4);
  g_assert_cmpuint (msg.xor_mapped.port, ==, ntohs (local->sin_port));
  g_assert_cmpmem (msg.xor_mapped.bytes, 4, &local->sin_addr, 4);
}

static void
test_stun_binding (Fixture *f, gconstpointer data)
{
  guint16 port, stun_port;
  struct sockaddr_in local_a, local_b;
  int a, b;

  start_server (&port, &stun_port);
  a = udp_socket (&local_a);
  b = udp_socket (&local_b);
  expect_binding (a, &local_a, stun_port, 1);
  expect_binding (b, &local_b, stun_port, 100);
  expect_binding (a, &local_a, stun_port, 200);
  close (a);
  close (b);
}

/* Garbage, truncated, oversized and non-request messages get no answer, and the endpoint keeps
 * answering good requests afterwards. */
static void
test_stun_malformed (Fixture *f, gconstpointer data)
{
  static const guint8 txid[12] = { 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9 };
  guint16 port, stun_port;
  struct sockaddr_in local;
  guint8 req[GT_STUN_MAX_MESSAGE], resp[GT_STUN_MAX_MESSAGE];
  g_autofree guint8 *big = g_malloc0 (4000);
  GtStunMessage msg;
  gsize n;
  int fd;

  start_server (&port, &stun_port);
  fd = udp_socket (&local);

  udp_send (fd, stun_port, (const guint8 *)"GET / HTTP/1.1\r\n\r\n", 18);
  n = gt_stun_build_binding_request (txid, req);
  udp_send (fd, stun_port, req, n - 1); /* truncated */
  req[n - 1] ^= 0xff;                   /* bad FINGERPRINT */
  udp_send (fd, stun_port, req, n);
  /* Oversized: a valid header that announces all 4000 bytes. */
  n = gt_stun_build_binding_request (txid, big);
  big[2] = (4000 - 20) >> 8;
  big[3] = (4000 - 20) & 0xff;
  udp_send (fd, stun_port, big, 4000);
  /* A success response is never answered (no reflection loops between servers). */
  memcpy (req, big, 20);
  req[0] = 0x01;
  req[1] = 0x01;
  req[2] = req[3] = 0;
  udp_send (fd, stun_port, req, 20);
  g_assert_cmpint (udp_recv (fd, resp, sizeof resp, 500), <, 0);

  /* An unknown comprehension-required attribute: 420 with UNKNOWN-ATTRIBUTES. */
  memcpy (req, big, 20);
  req[2] = 0;
  req[3] = 8;
  memcpy (req + 20, "\x07\x77\x00\x04zzzz", 8);
  udp_send (fd, stun_port, req, 28);
  g_assert_cmpint (udp_recv (fd, resp, sizeof resp, GT_TEST_WAIT_MS), >, 0);
  g_assert_true (
      gt_stun_parse (resp, GT_STUN_HEADER_SIZE + ((resp[2] << 8) | resp[3]), &msg, NULL));
  g_assert_cmpuint (msg.error_code, ==, 420);

  expect_binding (fd, &local, stun_port, 42);
  close (fd);
}

/* ------------------------------------------------------------------------------------------ */
/* XP signalling through a real server to a real client */

/* A client serving PREFIX from a local HTTP service; extra options (NULL-terminated). */
static GtTestProc *
start_client (guint16 server_port, ...)
{
  GtTestHttp *h = gt_test_http_start ("svc", 0, NULL);
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  GtTestProc *p;
  const char *arg;
  va_list ap;

  gt_test_args_addv (args, "client", "--id", CLIENT_ID, "--secret", CLIENT_SECRET,
                     "--reconnectDelay", "200ms", "--remote", NULL);
  gt_test_args_add (args, "tcp://127.0.0.1:%u", server_port);
  gt_test_args_add (args, "--local");
  gt_test_args_add (args, "http://127.0.0.1:%u", h->port);
  gt_test_args_addv (args, "--hostPrefix", PREFIX, NULL);
  va_start (ap, server_port);
  while ((arg = va_arg (ap, const char *)) != NULL)
    gt_test_args_add (args, "%s", arg);
  va_end (ap);
  p = gt_test_spawn_gt ("client", args);
  g_free (gt_test_proc_expect_line (p, "tunnel started", NULL, GT_TEST_WAIT_MS));
  return p;
}

/* An offer as Chromium makes one, with a host candidate nobody listens on. */
static char *
make_offer_body (const char *ufrag)
{
  g_autoptr (GByteArray) body = g_byte_array_new ();
  g_autofree char *sdp = g_strdup_printf (
      "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
      "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
      "a=ice-ufrag:%s\r\na=ice-pwd:aB3dE5fG7hI9jK1lM3nO5pQ7\r\n"
      "a=fingerprint:sha-256 4A:2D:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:"
      "44:55:66:77:88:99:AA:BB:CC:DD:50\r\na=setup:actpass\r\na=mid:0\r\n"
      "a=sctp-port:5000\r\n",
      ufrag);
  g_autofree char *desc = gt_xp_description_to_json ("offer", sdp);
  g_autofree char *cand
      = gt_xp_candidate_to_json ("candidate:1 1 udp 2122260223 127.0.0.1 9 typ host", "0", 0);
  g_autofree char *end = gt_xp_candidate_to_json ("", "0", 0);

  gt_xp_item_encode (body, desc);
  gt_xp_item_encode (body, cand);
  gt_xp_item_encode (body, end);
  g_byte_array_append (body, (const guint8 *)"", 1);
  return (char *)g_byte_array_free (g_steal_pointer (&body), FALSE);
}

static gsize
offer_body_len (const char *body)
{
  gsize pos = 0;

  /* Three items: each [len:u16][json]. */
  for (guint i = 0; i < 3; i++)
    pos += 2 + (((guint8)body[pos] << 8) | (guint8)body[pos + 1]);
  return pos;
}

/* The items of a response body; *rest gets what follows the last item (get-offer's id). */
static GPtrArray *
response_items (GByteArray *body, char **rest)
{
  GPtrArray *items = g_ptr_array_new_with_free_func (g_free);
  gsize pos = 0;

  while (pos < body->len && body->data[pos] != '{')
    {
      const guint8 *json;
      gsize json_len, consumed;
      g_autoptr (GError) error = NULL;
      GtXpItem *item = g_new0 (GtXpItem, 1);

      if (gt_xp_item_decode (body->data + pos, body->len - pos, &json, &json_len, &consumed, &error)
          != GT_DECODE_OK)
        gt_test_fail ("bad item in the response at %" G_GSIZE_FORMAT, pos);
      if (!gt_xp_item_parse (json, json_len, item, &error))
        gt_test_fail ("bad item JSON: %s", error->message);
      g_ptr_array_add (items, item);
      pos += consumed;
    }
  if (rest != NULL)
    *rest = g_strndup ((const char *)body->data + pos, body->len - pos);
  return items;
}

static void
check_answer_items (GPtrArray *items, GtSdpSetup want_setup)
{
  GtXpItem *first;
  g_autoptr (GtSdp) sdp = NULL;
  g_autoptr (GError) error = NULL;
  guint loopback = 0;

  g_assert_cmpuint (items->len, >=, 2);
  first = items->pdata[0];
  g_assert_cmpint (first->kind, ==, GT_XP_ITEM_DESCRIPTION);
  sdp = gt_sdp_parse (first->sdp, strlen (first->sdp), &error);
  g_assert_no_error (error);
  g_assert_cmpint (sdp->setup, ==, want_setup);
  g_assert_cmpstr (sdp->mid, ==, "0");
  for (guint i = 1; i < items->len; i++)
    {
      GtXpItem *c = items->pdata[i];

      g_assert_cmpint (c->kind, ==, GT_XP_ITEM_CANDIDATE);
      g_assert_true (gt_sdp_candidate_is_udp (c->candidate));
      loopback += strstr (c->candidate, " 127.0.0.1 ") != NULL;
    }
  g_assert_cmpuint (loopback, >=, 1);
}

static void
items_free (gpointer p)
{
  gt_xp_item_clear (p);
  g_free (p);
}

/* Without remoteSTUN, an XP request gets GT's 403 and plain requests still reach the service. */
static void
test_xp_forbidden (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *offer = make_offer_body ("abcd");
  guint16 port, stun_port;
  GtTestProc *client;

  start_server (&port, &stun_port);
  client = start_client (port, NULL);
  for (guint i = 0; i < 3; i++)
    {
      g_autoptr (GtTestHttpResponse) r
          = gt_test_http_request (port, "XP", "/", HOST, offer, offer_body_len (offer), &error);

      gt_test_expect_response (r, error, 403);
      g_assert_cmpstr (gt_test_http_response_header (r, "Connection"), ==, "Closed");
    }
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "GET", "/whoami", HOST, NULL, 0, &error);

    gt_test_expect_response (r, error, 200);
  }
  g_assert_cmpuint (gt_test_proc_count_matches (client, "refused, no remoteSTUN"), ==, 3);
}

/* Bad signalling bodies get 400 with the reason, and the client keeps serving. */
static void
test_xp_bad (Fixture *f, gconstpointer data)
{
  /* Framing errors, then items whose JSON is wrong. */
  static const struct
  {
    const char *bytes;
    gsize len;
  } framing[] = {
    { "\x00", 1 },        /* ends inside an item's length */
    { "\x00\x00", 2 },    /* empty item */
    { "\x00\x05[1,", 5 }, /* ends inside an item */
    { "\x10\x01{", 3 },   /* announces more than 4096 bytes */
  };
  static const char *const items[] = {
    "[1,2]",                              /* not an object */
    "{\"sdp\":\"x\"}",                    /* no type */
    "{\"type\":\"offer\",\"sdp\":\"x\"}", /* not SDP */
    "{\"candidate\":\"x\"}",              /* no description first */
  };
  g_autoptr (GError) error = NULL;
  guint16 port, stun_port;
  g_autofree char *stun = NULL;
  GtTestProc *client;

  start_server (&port, &stun_port);
  stun = g_strdup_printf ("stun:127.0.0.1:%u", stun_port);
  client = start_client (port, "--remoteSTUN", stun, NULL);
  for (guint i = 0; i < G_N_ELEMENTS (framing); i++)
    {
      g_autoptr (GtTestHttpResponse) r
          = gt_test_http_request (port, "XP", "/", HOST, framing[i].bytes, framing[i].len, &error);

      gt_test_expect_response (r, error, 400);
    }
  for (guint i = 0; i < G_N_ELEMENTS (items); i++)
    {
      g_autoptr (GByteArray) body = g_byte_array_new ();
      g_autoptr (GtTestHttpResponse) r = NULL;

      gt_xp_item_encode (body, items[i]);
      r = gt_test_http_request (port, "XP", "/", HOST, body->data, body->len, &error);
      gt_test_expect_response (r, error, 400);
    }
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "XP", "/", HOST, "\x00\x02{}", 4, &error);
    gt_test_expect_response (r, error, 400);
    g_assert_nonnull (strstr ((const char *)r->body->data, "neither"));
  }
  /* A body over 64 KiB: the client stops reading it and closes the exchange (no answer). */
  {
    g_autofree char *big = g_malloc0 (4 * 1024 * 1024);
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "XP", "/", HOST, big, 4 * 1024 * 1024, &error);

    g_assert_null (r);
    g_assert_nonnull (error);
    g_clear_error (&error);
    g_assert_true (
        gt_test_proc_wait_count (client, "request body over 65536 bytes", 1, GT_TEST_WAIT_MS));
  }
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "GET", "/whoami", HOST, NULL, 0, &error);

    gt_test_expect_response (r, error, 200);
  }
}

/* A valid offer gets an answer (DTLS client, setup:active) and loopback candidates; with
 * webrtcConnections 1 the next offer gets 403 while the first peer lives. get-offer returns an
 * offer, candidates and the raw id; resp-answer with an unknown id gets 404. */
static void
test_xp_offer_answer (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *offer = make_offer_body ("abcd");
  g_autofree char *stun = NULL;
  guint16 port, stun_port;
  GtTestProc *client;

  start_server (&port, &stun_port);
  stun = g_strdup_printf ("stun:127.0.0.1:%u", stun_port);
  client = start_client (port, "--remoteSTUN", stun, "--webrtcConnections", "1", NULL);
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "XP", "/", HOST, offer, offer_body_len (offer), &error);
    g_autoptr (GPtrArray) items = NULL;

    gt_test_expect_response (r, error, 200);
    items = response_items (r->body, NULL);
    g_ptr_array_set_free_func (items, items_free);
    check_answer_items (items, GT_SDP_SETUP_ACTIVE);
  }
  {
    g_autoptr (GtTestHttpResponse) r
        = gt_test_http_request (port, "XP", "/", HOST, offer, offer_body_len (offer), &error);

    gt_test_expect_response (r, error, 403);
  }
  (void)client;
}

static void
test_xp_get_offer (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *stun = NULL;
  g_autofree char *rest = NULL;
  g_autoptr (GPtrArray) items = NULL;
  g_autoptr (GByteArray) req = NULL;
  g_autoptr (GtTestHttpResponse) r = NULL;
  g_autoptr (GtTestConn) c = NULL;
  guint16 port, stun_port;

  start_server (&port, &stun_port);
  stun = g_strdup_printf ("stun:127.0.0.1:%u", stun_port);
  start_client (port, "--remoteSTUN", stun, NULL);

  c = gt_test_conn_connect (port, &error);
  g_assert_no_error (error);
  req = gt_test_http_build_request ("XP", "/", HOST, NULL, 0,
                                    "WebRTC-OP: get-offer\r\n"
                                    "Content-Length: 0\r\n");
  g_assert_true (gt_test_conn_write_all (c, req->data, req->len,
                                         gt_test_deadline_in (GT_TEST_WAIT_MS), &error));
  r = gt_test_conn_read_response (c, gt_test_deadline_in (GT_TEST_WAIT_MS), &error);
  gt_test_expect_response (r, error, 200);
  items = response_items (r->body, &rest);
  g_ptr_array_set_free_func (items, items_free);
  check_answer_items (items, GT_SDP_SETUP_ACTPASS);
  g_assert_cmpstr (((GtXpItem *)items->pdata[0])->type, ==, "offer");
  g_assert_true (g_str_has_prefix (rest, "{\"id\":") && g_str_has_suffix (rest, "}"));
  g_assert_cmpuint (g_ascii_strtoull (rest + 6, NULL, 10), >=, 1);

  {
    g_autoptr (GByteArray) req2 = gt_test_http_build_request (
        "XP", "/", HOST, NULL, 0,
        "WebRTC-OP: resp-answer\r\nWebRTC-OP-ID: 999\r\nContent-Length: 0\r\n");
    g_autoptr (GtTestConn) c2 = gt_test_conn_connect (port, &error);
    g_autoptr (GtTestHttpResponse) r2 = NULL;

    g_assert_true (gt_test_conn_write_all (c2, req2->data, req2->len,
                                           gt_test_deadline_in (GT_TEST_WAIT_MS), &error));
    r2 = gt_test_conn_read_response (c2, gt_test_deadline_in (GT_TEST_WAIT_MS), &error);
    gt_test_expect_response (r2, error, 404);
  }
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, PATTERN_SIZE);
  g_test_add ("/gt/p2p/stun/binding", Fixture, NULL, fixture_setup, test_stun_binding,
              fixture_teardown);
  g_test_add ("/gt/p2p/stun/malformed", Fixture, NULL, fixture_setup, test_stun_malformed,
              fixture_teardown);
  g_test_add ("/gt/p2p/xp/forbidden", Fixture, NULL, fixture_setup, test_xp_forbidden,
              fixture_teardown);
  g_test_add ("/gt/p2p/xp/bad", Fixture, NULL, fixture_setup, test_xp_bad, fixture_teardown);
  g_test_add ("/gt/p2p/xp/offer-answer", Fixture, NULL, fixture_setup, test_xp_offer_answer,
              fixture_teardown);
  g_test_add ("/gt/p2p/xp/get-offer", Fixture, NULL, fixture_setup, test_xp_get_offer,
              fixture_teardown);
  return gt_test_run ();
}
