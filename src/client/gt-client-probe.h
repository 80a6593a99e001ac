/* gt-client-probe.h: transport probes of a client's remotes (round trips and late or lost
 * answers of PINGs sent before HELLO) and the choice among them (auto mode). */
#pragma once

#include <gio/gio.h>

#include "gt-config.h"
#include "gt-transport.h"

G_BEGIN_DECLS

/* PINGs per probe, their spacing, and how long the last one's answer is awaited. */
#define GT_PROBE_PINGS 10
#define GT_PROBE_INTERVAL_MS 50
#define GT_PROBE_WAIT_MS 1000

typedef struct
{
  gboolean ok;      /* the transport connected and answered at least one PING */
  double rtt_ms;    /* median round trip of the answered PINGs */
  double loss;      /* 0..1: PINGs unanswered, or answered late (after a retransmission) */
  char *error;      /* why not ok */
} GtProbeResult;

void gt_probe_result_clear (GtProbeResult *result);

/* Connects to remote (as a tunnel would, with security), sends the preface and GT_PROBE_PINGS
 * PINGs GT_PROBE_INTERVAL_MS apart, and measures their answers; then closes. Completes with a
 * GtProbeResult (free with gt_probe_result_free); never fails: a failure is a result. */
void gt_client_probe_async (const GtRemote *remote, const GtTransportSecurity *security,
                            GCancellable *cancellable, GAsyncReadyCallback callback,
                            gpointer user_data);
GtProbeResult *gt_client_probe_finish (GAsyncResult *result);
void gt_probe_result_free (GtProbeResult *result);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtProbeResult, gt_probe_result_free)

/* Round trips (ms, in the order sent; < 0 = no answer) to the result's rtt and loss. */
void gt_probe_result_compute (GtProbeResult *result, const double *rtts, guint n);

/* The best of n results (index), or -1 when none is ok: the lowest score (median RTT plus 10 ms
 * per percent of loss); a result within 10% (and 1 ms) of the best that comes first in the list
 * wins, and so does `current` (the remote in use, -1 for none), so that near ties change
 * nothing. *reason (free it) says why, naming remotes by names[i]. */
int gt_probe_choose (const GtProbeResult *results, const char *const *names, guint n, int current,
                     char **reason);

G_END_DECLS
