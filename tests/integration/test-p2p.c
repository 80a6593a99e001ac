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

#include "gt-stun.h"
#include "gt-test-utils.h"

#define PATTERN_SIZE 1024
#define CLIENT_ID "alice"
#define CLIENT_SECRET "s3cret-alice"

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
  *port_out = (guint16) gt_test_capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");
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
  g_assert_cmpint (bind (fd, (struct sockaddr *) local, sizeof *local), ==, 0);
  g_assert_cmpint (getsockname (fd, (struct sockaddr *) local, &len), ==, 0);
  return fd;
}

static void
udp_send (int fd, guint16 port, const guint8 *buf, gsize len)
{
  struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons (port) };

  to.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  g_assert_cmpint (sendto (fd, buf, len, 0, (struct sockaddr *) &to, sizeof to), ==, (gssize) len);
}

/* The next datagram within timeout_ms, or -1. */
static gssize
udp_recv (int fd, guint8 *buf, gsize cap, guint timeout_ms)
{
  struct pollfd pfd = { .fd = fd, .events = POLLIN };

  if (poll (&pfd, 1, (int) timeout_ms) <= 0)
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
    txid[i] = (guint8) (seed + i);
  udp_send (fd, stun_port, req, gt_stun_build_binding_request (txid, req));
  n = udp_recv (fd, resp, sizeof resp, GT_TEST_WAIT_MS);
  if (n < 0)
    gt_test_fail ("no STUN answer");
  if (!gt_stun_parse (resp, (gsize) n, &msg, &error))
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

  udp_send (fd, stun_port, (const guint8 *) "GET / HTTP/1.1\r\n\r\n", 18);
  n = gt_stun_build_binding_request (txid, req);
  udp_send (fd, stun_port, req, n - 1);          /* truncated */
  req[n - 1] ^= 0xff;                            /* bad FINGERPRINT */
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
  g_assert_true (gt_stun_parse (resp, GT_STUN_HEADER_SIZE + ((resp[2] << 8) | resp[3]), &msg,
                                NULL));
  g_assert_cmpuint (msg.error_code, ==, 420);

  expect_binding (fd, &local, stun_port, 42);
  close (fd);
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, PATTERN_SIZE);
  g_test_add ("/gt/p2p/stun/binding", Fixture, NULL, fixture_setup, test_stun_binding,
              fixture_teardown);
  g_test_add ("/gt/p2p/stun/malformed", Fixture, NULL, fixture_setup, test_stun_malformed,
              fixture_teardown);
  return gt_test_run ();
}
