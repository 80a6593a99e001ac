/* gt-client-backoff.c: reconnect delays of a tunnel slot (pure arithmetic, no main loop). */
#include "config.h"

#include "gt-client-backoff.h"

void
gt_client_backoff_init (GtClientBackoff *backoff, guint64 reconnect_delay_ms)
{
  g_return_if_fail (backoff != NULL);
  backoff->base_ms = MAX (reconnect_delay_ms, GT_CLIENT_BACKOFF_MIN_MS);
  backoff->cap_ms = MAX (backoff->base_ms, GT_CLIENT_BACKOFF_CAP_MS);
  backoff->attempt = 0;
}

guint64
gt_client_backoff_get_delay_ms (const GtClientBackoff *backoff)
{
  guint64 delay = backoff->base_ms;

  for (guint i = 0; i < backoff->attempt && delay < backoff->cap_ms; i++)
    delay *= 2;
  return MIN (delay, backoff->cap_ms);
}

guint
gt_client_backoff_next_with_jitter (GtClientBackoff *backoff, double jitter)
{
  guint64 delay = gt_client_backoff_get_delay_ms (backoff);

  jitter = CLAMP (jitter, -1.0, 1.0);
  if (backoff->attempt < G_MAXUINT)
    backoff->attempt++;
  return (guint) MIN (delay * (1.0 + GT_CLIENT_BACKOFF_JITTER * jitter), (double) G_MAXUINT);
}

guint
gt_client_backoff_next (GtClientBackoff *backoff)
{
  return gt_client_backoff_next_with_jitter (backoff, g_random_double_range (-1.0, 1.0));
}

void
gt_client_backoff_reset (GtClientBackoff *backoff)
{
  backoff->attempt = 0;
}
