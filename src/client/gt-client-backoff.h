/* gt-client-backoff.h: reconnect delays of a tunnel slot (exponential, capped, with jitter). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Shortest first delay, whatever reconnectDelay says. */
#define GT_CLIENT_BACKOFF_MIN_MS 100
/* Delays stop growing here (or at reconnectDelay when that is longer). */
#define GT_CLIENT_BACKOFF_CAP_MS 5000
/* ±20 % jitter so a server restart is not met by every client at the same instant. */
#define GT_CLIENT_BACKOFF_JITTER 0.2

typedef struct
{
  guint64 base_ms; /* first delay */
  guint64 cap_ms;
  guint attempt;   /* failed attempts since the last successful tunnel */
} GtClientBackoff;

/* reconnect_delay_ms: the client's reconnectDelay. */
void gt_client_backoff_init (GtClientBackoff *backoff, guint64 reconnect_delay_ms);
/* The delay before the next attempt without jitter: base doubled per failed attempt, capped. */
guint64 gt_client_backoff_get_delay_ms (const GtClientBackoff *backoff);
/* An attempt failed: returns the jittered delay before the next one (jitter in [-1, 1) scales
 * ±GT_CLIENT_BACKOFF_JITTER) and counts the attempt. */
guint gt_client_backoff_next_with_jitter (GtClientBackoff *backoff, double jitter);
/* Same with a random jitter. */
guint gt_client_backoff_next (GtClientBackoff *backoff);
/* A tunnel was established: the next failure waits the base delay again. */
void gt_client_backoff_reset (GtClientBackoff *backoff);

G_END_DECLS
