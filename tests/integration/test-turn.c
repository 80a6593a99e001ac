/* Integration tests of the TURN relay of a real gt server (turn: true on stunAddr), with libnice
 * as the TURN client: two ICE agents that may only use relayed candidates reach each other
 * through gt, bytes compared; wrong credentials get no relayed address. */
#define G_LOG_DOMAIN "gt-test"

#include <agent.h>
#include <string.h>

#include "gt-stun.h"
#include "gt-test-utils.h"
#include "gt-turn-server.h"

#define USER "alice"
#define SECRET "s3cret-alice"
#define MESSAGES 20
#define MESSAGE_SIZE 1000

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

static GtTestProc *
start_server (guint16 *stun_port_out, guint max_allocations)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  guint16 stun_port = gt_test_free_port ();
  GtTestProc *p;

  gt_test_args_addv (args, "server", "--id", USER, "--secret", SECRET, "--addr", "127.0.0.1:0",
                     "--turn", "--turnAllowLoopback", "--logLevel", "debug", "--stunAddr", NULL);
  gt_test_args_add (args, "127.0.0.1:%u", stun_port);
  gt_test_args_add (args, "--turnMaxAllocations=%u", max_allocations);
  p = gt_test_spawn_gt ("server", args);
  g_free (gt_test_proc_expect_line (p, "TURN on 127\\.0\\.0\\.1", NULL, GT_TEST_WAIT_MS));
  *stun_port_out = stun_port;
  return p;
}

typedef struct
{
  NiceAgent *agent;
  guint stream;
  gboolean gathered;
  gboolean ready;
  gboolean failed;
  GByteArray *received;
} Peer;

static void
gathering_done_cb (NiceAgent *agent, guint stream, gpointer user_data)
{
  ((Peer *)user_data)->gathered = TRUE;
}

static void
state_cb (NiceAgent *agent, guint stream, guint component, guint state, gpointer user_data)
{
  Peer *peer = user_data;

  if (state == NICE_COMPONENT_STATE_READY)
    peer->ready = TRUE;
  else if (state == NICE_COMPONENT_STATE_FAILED)
    peer->failed = TRUE;
}

static void
recv_cb (NiceAgent *agent, guint stream, guint component, guint len, gchar *buf, gpointer user_data)
{
  g_byte_array_append (((Peer *)user_data)->received, (const guint8 *)buf, len);
}

/* An agent that may only use a relayed candidate on gt's TURN server, with REST credentials
 * for USER made from secret. */
static void
peer_init (Peer *peer, gboolean controlling, guint16 stun_port, const char *secret)
{
  g_autofree char *username = NULL;
  g_autofree char *password = NULL;

  memset (peer, 0, sizeof *peer);
  peer->received = g_byte_array_new ();
  peer->agent = nice_agent_new (g_main_context_default (), NICE_COMPATIBILITY_RFC5245);
  g_object_set (peer->agent, "controlling-mode", controlling, "force-relay", TRUE, "upnp", FALSE,
                NULL);
  g_signal_connect (peer->agent, "candidate-gathering-done", G_CALLBACK (gathering_done_cb), peer);
  g_signal_connect (peer->agent, "component-state-changed", G_CALLBACK (state_cb), peer);
  /* libnice skips loopback interfaces when it lists them itself: name the address. */
  {
    NiceAddress lo;

    nice_address_init (&lo);
    g_assert_true (nice_address_set_from_string (&lo, "127.0.0.1"));
    g_assert_true (nice_agent_add_local_address (peer->agent, &lo));
  }
  peer->stream = nice_agent_add_stream (peer->agent, 1);
  g_assert_cmpuint (peer->stream, >, 0);
  username = g_strdup_printf ("%" G_GINT64_FORMAT ":%s", g_get_real_time () / G_USEC_PER_SEC + 3600,
                              USER);
  password = gt_turn_password (secret, username);
  g_assert_true (nice_agent_set_relay_info (peer->agent, peer->stream, 1, "127.0.0.1", stun_port,
                                            username, password, NICE_RELAY_TYPE_TURN_UDP));
  nice_agent_attach_recv (peer->agent, peer->stream, 1, g_main_context_default (), recv_cb, peer);
  g_assert_true (nice_agent_gather_candidates (peer->agent, peer->stream));
}

static void
closed_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  *(gboolean *)user_data = TRUE;
}

static void iterate (void);

/* Closes the agent as libnice wants: its TURN allocations are released (Refresh, lifetime 0). */
static void
peer_clear (Peer *peer)
{
  gboolean closed = FALSE;
  gint64 deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);

  nice_agent_attach_recv (peer->agent, peer->stream, 1, g_main_context_default (), NULL, NULL);
  nice_agent_close_async (peer->agent, closed_cb, &closed);
  while (!closed && g_get_monotonic_time () < deadline)
    iterate ();
  g_assert_true (closed);
  g_object_unref (peer->agent);
  g_byte_array_unref (peer->received);
}

static guint
relayed_candidates (Peer *peer)
{
  GSList *cands = nice_agent_get_local_candidates (peer->agent, peer->stream, 1);
  guint n = 0;

  for (GSList *l = cands; l != NULL; l = l->next)
    if (((NiceCandidate *)l->data)->type == NICE_CANDIDATE_TYPE_RELAYED)
      n++;
  g_slist_free_full (cands, (GDestroyNotify)nice_candidate_free);
  return n;
}

/* Gives b what a knows of itself: credentials and candidates. */
static void
tell (Peer *from, Peer *to)
{
  g_autofree char *ufrag = NULL;
  g_autofree char *pwd = NULL;
  GSList *cands;

  g_assert_true (nice_agent_get_local_credentials (from->agent, from->stream, &ufrag, &pwd));
  g_assert_true (nice_agent_set_remote_credentials (to->agent, to->stream, ufrag, pwd));
  cands = nice_agent_get_local_candidates (from->agent, from->stream, 1);
  g_assert_cmpint (nice_agent_set_remote_candidates (to->agent, to->stream, 1, cands), >, 0);
  g_slist_free_full (cands, (GDestroyNotify)nice_candidate_free);
}

static void
iterate (void)
{
  if (!g_main_context_iteration (NULL, FALSE))
    g_usleep (2000);
}

static gboolean
both (const Peer *a, const Peer *b, gsize offset)
{
  return G_STRUCT_MEMBER (gboolean, a, offset) && G_STRUCT_MEMBER (gboolean, b, offset);
}

static gboolean
wait_both (const Peer *a, const Peer *b, gsize offset, guint ms)
{
  gint64 deadline = gt_test_deadline_in (ms);

  while (!both (a, b, offset) && g_get_monotonic_time () < deadline)
    iterate ();
  return both (a, b, offset);
}

static void
send_all (Peer *from, const guint8 *data, gsize len)
{
  for (gsize off = 0; off < len; off += MESSAGE_SIZE)
    g_assert_cmpint (
        nice_agent_send (from->agent, from->stream, 1, MESSAGE_SIZE, (const gchar *)data + off), ==,
        MESSAGE_SIZE);
}

static void
test_relay (Fixture *f, gconstpointer data)
{
  guint16 stun_port;
  GtTestProc *server = start_server (&stun_port, 10);
  Peer a, b;
  NiceCandidate *local = NULL, *remote = NULL;
  const guint8 *pattern = gt_test_pattern ();
  gint64 deadline;

  peer_init (&a, TRUE, stun_port, SECRET);
  peer_init (&b, FALSE, stun_port, SECRET);
  g_assert_true (wait_both (&a, &b, G_STRUCT_OFFSET (Peer, gathered), GT_TEST_WAIT_MS));
  /* force-relay: the only candidates are gt's relayed addresses. */
  g_assert_cmpuint (relayed_candidates (&a), ==, 1);
  g_assert_cmpuint (relayed_candidates (&b), ==, 1);
  g_assert_true (gt_test_proc_wait_count (server,
                                          "TURN: user alice from 127\\.0\\.0\\.1:[0-9]+ "
                                          "relayed at 127\\.0\\.0\\.1:[0-9]+",
                                          2, GT_TEST_WAIT_MS));

  tell (&a, &b);
  tell (&b, &a);
  g_assert_true (wait_both (&a, &b, G_STRUCT_OFFSET (Peer, ready), GT_TEST_WAIT_MS));
  g_assert_false (a.failed || b.failed);
  g_assert_true (nice_agent_get_selected_pair (a.agent, a.stream, 1, &local, &remote));
  g_assert_cmpint (local->type, ==, NICE_CANDIDATE_TYPE_RELAYED);
  g_assert_cmpint (remote->type, ==, NICE_CANDIDATE_TYPE_RELAYED);

  /* Both ways, through two relayed addresses of gt. */
  send_all (&a, pattern, MESSAGES * MESSAGE_SIZE);
  send_all (&b, pattern + 7, MESSAGES * MESSAGE_SIZE);
  deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
  while ((a.received->len < MESSAGES * MESSAGE_SIZE || b.received->len < MESSAGES * MESSAGE_SIZE)
         && g_get_monotonic_time () < deadline)
    iterate ();
  /* UDP on loopback loses nothing at this rate; order is kept on one path. */
  gt_test_check_bytes ("b received", b.received->data, b.received->len, pattern,
                       MESSAGES * MESSAGE_SIZE);
  gt_test_check_bytes ("a received", a.received->data, a.received->len, pattern + 7,
                       MESSAGES * MESSAGE_SIZE);

  peer_clear (&a);
  peer_clear (&b);
  /* The agents release their allocations (Refresh with lifetime 0) as they go. */
  g_assert_true (
      gt_test_proc_wait_count (server, "TURN: user alice from .* released", 2, GT_TEST_WAIT_MS));
  gt_test_proc_stop_cleanly (server);
}

/* A password made from another secret gets no relayed address; the secret is never logged. */
static void
test_wrong_secret (Fixture *f, gconstpointer data)
{
  guint16 stun_port;
  GtTestProc *server = start_server (&stun_port, 10);
  Peer a;

  peer_init (&a, TRUE, stun_port, "not-the-secret");
  g_assert_true (wait_both (&a, &a, G_STRUCT_OFFSET (Peer, gathered), GT_TEST_WAIT_MS));
  g_assert_cmpuint (relayed_candidates (&a), ==, 0);
  g_assert_true (gt_test_proc_wait_count (server, "TURN: wrong MESSAGE-INTEGRITY for user alice", 1,
                                          GT_TEST_WAIT_MS));
  g_assert_cmpuint (gt_test_proc_count_matches (server, "relayed at"), ==, 0);
  peer_clear (&a);
  gt_test_proc_stop_cleanly (server);
  g_assert_cmpuint (gt_test_proc_count_matches (server, SECRET), ==, 0);
}

/* turnMaxAllocations bounds what one user holds: the second agent is refused (486). */
static void
test_quota (Fixture *f, gconstpointer data)
{
  guint16 stun_port;
  GtTestProc *server = start_server (&stun_port, 1);
  Peer a, b;

  peer_init (&a, TRUE, stun_port, SECRET);
  g_assert_true (wait_both (&a, &a, G_STRUCT_OFFSET (Peer, gathered), GT_TEST_WAIT_MS));
  g_assert_cmpuint (relayed_candidates (&a), ==, 1);
  peer_init (&b, FALSE, stun_port, SECRET);
  g_assert_true (wait_both (&b, &b, G_STRUCT_OFFSET (Peer, gathered), GT_TEST_WAIT_MS));
  g_assert_cmpuint (relayed_candidates (&b), ==, 0);
  g_assert_true (gt_test_proc_wait_count (server, "allocation refused for user alice: quota of 1",
                                          1, GT_TEST_WAIT_MS));
  peer_clear (&a);
  peer_clear (&b);
  gt_test_proc_stop_cleanly (server);
}

/* Unauthenticated Allocates from one source (a spoofed victim, say) get at most the per-source
 * burst of 401s plus the refill, not one answer each; once the flood stops, a real client from
 * the same address is answered and allocates. */
static void
test_answer_rate_limit (Fixture *f, gconstpointer data)
{
  enum { REQUESTS = 200, BURST = 20, RATE = 10 };
  guint16 stun_port;
  GtTestProc *server = start_server (&stun_port, 10);
  g_autoptr (GSocket) sock = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_DATAGRAM,
                                           G_SOCKET_PROTOCOL_UDP, NULL);
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) any = g_inet_socket_address_new (lo, 0);
  g_autoptr (GSocketAddress) to = g_inet_socket_address_new (lo, stun_port);
  gint64 start = g_get_monotonic_time (), elapsed_us;
  guint answers = 0, bound;
  Peer a;

  g_assert_nonnull (sock);
  g_assert_true (g_socket_bind (sock, any, FALSE, NULL));
  for (guint i = 0; i < REQUESTS; i++)
    {
      guint8 out[GT_STUN_MAX_MESSAGE], tid[12] = { 0 };
      GtStunBuilder b;
      gsize n;

      memcpy (tid, &i, sizeof i);
      gt_stun_builder_init (&b, out, sizeof out, GT_STUN_METHOD_ALLOCATE, GT_STUN_CLASS_REQUEST,
                            tid);
      n = gt_stun_builder_finish (&b, NULL, 0);
      g_assert_cmpint (g_socket_send_to (sock, to, (const char *)out, n, NULL, NULL), ==, n);
    }
  /* Collect answers until the socket stays quiet for half a second. */
  g_socket_set_timeout (sock, 1);
  while (g_socket_condition_timed_wait (sock, G_IO_IN, 500 * 1000, NULL, NULL))
    {
      guint8 in[GT_STUN_MAX_MESSAGE];
      GtStunMessage msg;
      gssize n = g_socket_receive (sock, (char *)in, sizeof in, NULL, NULL);

      g_assert_cmpint (n, >, 0);
      g_assert_true (gt_stun_parse (in, n, &msg, NULL));
      g_assert_cmpuint (msg.klass, ==, GT_STUN_CLASS_ERROR);
      answers++;
    }
  elapsed_us = g_get_monotonic_time () - start;
  bound = BURST + (guint)(RATE * elapsed_us / G_USEC_PER_SEC) + 1;
  g_test_message ("%u answers to %u requests in %.2f s (bound %u)", answers, REQUESTS,
                  elapsed_us / 1e6, bound);
  g_assert_cmpuint (answers, >=, 1);
  g_assert_cmpuint (answers, <=, bound);
  g_assert_true (gt_test_proc_wait_count (server, "TURN: rate limit: [0-9]+ unauthenticated", 1,
                                          GT_TEST_WAIT_MS));
  /* The bucket refills (RATE per second): a client from the same IP allocates. */
  g_usleep (2 * G_USEC_PER_SEC);
  peer_init (&a, TRUE, stun_port, SECRET);
  g_assert_true (wait_both (&a, &a, G_STRUCT_OFFSET (Peer, gathered), GT_TEST_WAIT_MS));
  g_assert_cmpuint (relayed_candidates (&a), ==, 1);
  peer_clear (&a);
  gt_test_proc_stop_cleanly (server);
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, MESSAGES * MESSAGE_SIZE + 16);
#define ADD(path, fn)                                                                              \
  g_test_add ("/gt/integration/turn/" path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  ADD ("relay", test_relay);
  ADD ("wrong-secret", test_wrong_secret);
  ADD ("quota", test_quota);
  ADD ("answer-rate-limit", test_answer_rate_limit);
#undef ADD
  return gt_test_run ();
}
