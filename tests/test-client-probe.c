/* Unit tests of the auto mode's arithmetic (gt-client-probe.c): round trips to RTT and loss, and
 * the choice among remotes with its reason. */
#include "config.h"

#include "gt-client-probe.h"

static const char *const names[] = { "quic://h:1", "tls://h:2", "tcp://h:3" };

static GtProbeResult
ok (double rtt_ms, double loss)
{
  GtProbeResult r = { TRUE, rtt_ms, loss, NULL };

  return r;
}

static void
test_compute (void)
{
  const double clean[] = { 20, 21, 19, 22, 20, 20, 23, 20, 21, 20 };
  /* One unanswered, one answered after a retransmission (> 2 × 19 + 100 ms). */
  const double lossy[] = { 20, 21, 19, -1, 20, 400, 23, 20, 21, 20 };
  const double none[] = { -1, -1, -1 };
  GtProbeResult r = { 0 };

  gt_probe_result_compute (&r, clean, G_N_ELEMENTS (clean));
  g_assert_true (r.ok);
  g_assert_cmpfloat (r.rtt_ms, ==, 20);
  g_assert_cmpfloat (r.loss, ==, 0);
  gt_probe_result_compute (&r, lossy, G_N_ELEMENTS (lossy));
  g_assert_true (r.ok);
  g_assert_cmpfloat (r.rtt_ms, ==, 20); /* the median of the 9 answers, the late one included */
  g_assert_cmpfloat_with_epsilon (r.loss, 0.2, 1e-9);
  gt_probe_result_compute (&r, none, G_N_ELEMENTS (none));
  g_assert_false (r.ok);
  g_assert_cmpfloat (r.loss, ==, 1);
}

static void
test_choose (void)
{
  g_autofree char *reason = NULL;
  GtProbeResult r[3];

  /* UDP blocked: the one that answered, and the reason names the failure. */
  r[0] = (GtProbeResult) { FALSE, 0, 1, (char *) "no QUIC handshake within 3000 ms" };
  r[1] = ok (0.4, 0);
  g_assert_cmpint (gt_probe_choose (r, names, 2, -1, &reason), ==, 1);
  g_assert_cmpstr (reason, ==, "quic://h:1 failed (no QUIC handshake within 3000 ms); "
                               "tls://h:2 rtt 0.4 ms, loss 0%");
  g_clear_pointer (&reason, g_free);

  /* A tie (within 10% and 1 ms): the first listed; the one in use stays. */
  r[0] = ok (50, 0);
  r[1] = ok (48, 0);
  g_assert_cmpint (gt_probe_choose (r, names, 2, -1, &reason), ==, 0);
  g_clear_pointer (&reason, g_free);
  g_assert_cmpint (gt_probe_choose (r, names, 2, 1, &reason), ==, 1);
  g_clear_pointer (&reason, g_free);

  /* Loss weighs 10 ms per percent: 2% loss at 50 ms loses to 60 ms clean. */
  r[0] = ok (60, 0);
  r[1] = ok (50, 0.02);
  r[2] = ok (90, 0);
  g_assert_cmpint (gt_probe_choose (r, names, 3, 1, &reason), ==, 0);
  g_assert_cmpstr (reason, ==, "quic://h:1 rtt 60.0 ms, loss 0%; tls://h:2 rtt 50.0 ms, "
                               "loss 2%; tcp://h:3 rtt 90.0 ms, loss 0%");
  g_clear_pointer (&reason, g_free);

  /* Nothing answered. */
  r[0] = (GtProbeResult) { FALSE, 0, 1, (char *) "refused" };
  r[1] = (GtProbeResult) { FALSE, 0, 1, NULL };
  g_assert_cmpint (gt_probe_choose (r, names, 2, 0, &reason), ==, -1);
  g_assert_cmpstr (reason, ==, "quic://h:1 failed (refused); tls://h:2 failed (no answer)");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/client/probe/compute", test_compute);
  g_test_add_func ("/gt/client/probe/choose", test_choose);
  return g_test_run ();
}
