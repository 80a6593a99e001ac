/* gt-client-probe.c: transport probes (PINGs before HELLO, docs/protocol.md §6.10) and the
 * choice of a client's remote by their results (auto mode, docs/configuration.md). */
#include "config.h"

#define G_LOG_DOMAIN "gt-client"

#include <string.h>

#include "gt-client-probe.h"
#include "gt-frame.h"
#include "gt-relay-endpoint.h"

/* An answer this much later than twice the fastest one came after a retransmission. */
#define LATE_EXTRA_MS 100.0
/* Score: median RTT plus this many ms per unit of loss (10 ms per percent). */
#define LOSS_WEIGHT_MS 1000.0

typedef struct
{
  GTask *task;
  GIOStream *io;
  GSource *in_source;
  guint timer_id;
  gint64 start_us;
  gint64 connect_us;
  gint64 sent_us[GT_PROBE_PINGS];
  double rtts[GT_PROBE_PINGS];
  guint n_sent;
  guint n_answered;
  guint8 buf[GT_FRAME_HEADER_SIZE + GT_FRAME_MAX_CONTROL];
  gsize len;
  gboolean refused; /* the server answered ERROR: a gt without probes */
  gboolean finished;
} Probe;

void
gt_probe_result_clear (GtProbeResult *result)
{
  g_clear_pointer (&result->error, g_free);
}

void
gt_probe_result_free (GtProbeResult *result)
{
  if (result == NULL)
    return;
  gt_probe_result_clear (result);
  g_free (result);
}

static int
cmp_double (gconstpointer a, gconstpointer b)
{
  double x = *(const double *) a, y = *(const double *) b;

  return x < y ? -1 : x > y;
}

void
gt_probe_result_compute (GtProbeResult *result, const double *rtts, guint n)
{
  g_autoptr (GArray) answered = g_array_new (FALSE, FALSE, sizeof (double));
  double min = G_MAXDOUBLE;
  guint late = 0;

  for (guint i = 0; i < n; i++)
    if (rtts[i] >= 0)
      {
        g_array_append_val (answered, rtts[i]);
        min = MIN (min, rtts[i]);
      }
  result->ok = answered->len > 0;
  if (!result->ok)
    {
      result->rtt_ms = 0;
      result->loss = 1;
      return;
    }
  for (guint i = 0; i < answered->len; i++)
    if (g_array_index (answered, double, i) > 2 * min + LATE_EXTRA_MS)
      late++;
  g_array_sort (answered, cmp_double);
  result->rtt_ms = g_array_index (answered, double, answered->len / 2);
  result->loss = (double) (n - answered->len + late) / n;
}

static void
probe_free (Probe *p)
{
  g_clear_handle_id (&p->timer_id, g_source_remove);
  if (p->in_source != NULL)
    {
      g_source_destroy (p->in_source);
      g_clear_pointer (&p->in_source, g_source_unref);
    }
  if (p->io != NULL)
    {
      gt_relay_endpoint_close_io (p->io);
      g_clear_object (&p->io);
    }
  g_free (p);
}

/* Completes the task with what was measured (error: the probe failed). */
static void
probe_finish (Probe *p, const char *error)
{
  GtProbeResult *result = g_new0 (GtProbeResult, 1);
  GTask *task = p->task;

  if (p->finished)
    return;
  p->finished = TRUE;
  if (error != NULL)
    result->error = g_strdup (error);
  else if (p->refused)
    {
      /* A server without probe answers: the connect time is all there is to go by. */
      result->ok = TRUE;
      result->rtt_ms = (p->connect_us - p->start_us) / 1000.0;
    }
  else
    {
      for (guint i = p->n_sent; i < GT_PROBE_PINGS; i++)
        p->rtts[i] = -1;
      gt_probe_result_compute (result, p->rtts, GT_PROBE_PINGS);
      if (!result->ok)
        result->error = g_strdup_printf ("none of %u PINGs answered", GT_PROBE_PINGS);
    }
  g_task_return_pointer (task, result, (GDestroyNotify) gt_probe_result_free);
  g_object_unref (task); /* frees p (the task data) */
}

/* FALSE when the probe ended (p is gone). */
static gboolean
probe_send_ping (Probe *p)
{
  guint8 frame[GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE + 8];
  gsize off = 0, len;
  guint64 seq = GUINT64_TO_BE ((guint64) p->n_sent);
  g_autoptr (GError) error = NULL;
  gssize n;

  if (p->n_sent == 0)
    {
      gt_preface_encode (frame);
      off = GT_PREFACE_SIZE;
    }
  gt_frame_header_encode (frame + off, GT_FRAME_PING, 0, 0, 8);
  memcpy (frame + off + GT_FRAME_HEADER_SIZE, &seq, 8);
  len = off + GT_FRAME_HEADER_SIZE + 8;
  p->sent_us[p->n_sent] = g_get_monotonic_time ();
  p->rtts[p->n_sent] = -1;
  p->n_sent++;
  n = g_pollable_output_stream_write_nonblocking (
    G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (p->io)), frame, len, NULL, &error);
  if (n == (gssize) len)
    return TRUE;
  /* A full buffer (not on the first: the preface must go): this PING counts as lost. */
  if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK) && p->n_sent > 1)
    return TRUE;
  /* An error, or part of a frame (what followed would be garbage). */
  probe_finish (p, n < 0 ? error->message : "the connection took only part of a PING");
  return FALSE;
}

static gboolean
probe_timer_cb (gpointer user_data)
{
  Probe *p = user_data;

  p->timer_id = 0;
  if (g_task_return_error_if_cancelled (p->task))
    {
      p->finished = TRUE;
      g_object_unref (p->task);
      return G_SOURCE_REMOVE;
    }
  if (p->n_sent < GT_PROBE_PINGS)
    {
      if (!probe_send_ping (p))
        return G_SOURCE_REMOVE;
      p->timer_id = g_timeout_add (p->n_sent < GT_PROBE_PINGS ? GT_PROBE_INTERVAL_MS
                                                             : GT_PROBE_WAIT_MS,
                                   probe_timer_cb, p);
      return G_SOURCE_REMOVE;
    }
  probe_finish (p, NULL); /* the last answers did not come in time */
  return G_SOURCE_REMOVE;
}

static gboolean
probe_input_cb (GObject *stream, gpointer user_data)
{
  Probe *p = user_data;

  for (;;)
    {
      g_autoptr (GError) error = NULL;
      GtFrameHeader h;
      gssize n = g_pollable_input_stream_read_nonblocking (
        G_POLLABLE_INPUT_STREAM (stream), p->buf + p->len, sizeof p->buf - p->len, NULL, &error);

      if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        return G_SOURCE_CONTINUE;
      if (n <= 0)
        {
          /* Closed: after an ERROR (an older server), or in the middle of the probe. */
          probe_finish (p, p->refused || p->n_answered > 0
                             ? NULL
                             : (n == 0 ? "the server closed the probe" : error->message));
          return G_SOURCE_REMOVE;
        }
      p->len += n;
      while (gt_frame_header_decode (p->buf, p->len, &h, NULL) == GT_DECODE_OK
             && p->len >= GT_FRAME_HEADER_SIZE + (gsize) h.length)
        {
          gsize flen = GT_FRAME_HEADER_SIZE + h.length;

          if (h.type == GT_FRAME_PING && (h.flags & GT_FRAME_FLAG_ACK) && h.length == 8)
            {
              guint64 seq;

              memcpy (&seq, p->buf + GT_FRAME_HEADER_SIZE, 8);
              seq = GUINT64_FROM_BE (seq);
              if (seq < p->n_sent && p->rtts[seq] < 0)
                {
                  p->rtts[seq] = (g_get_monotonic_time () - p->sent_us[seq]) / 1000.0;
                  p->n_answered++;
                }
            }
          else if (h.type == GT_FRAME_ERROR)
            p->refused = TRUE;
          memmove (p->buf, p->buf + flen, p->len - flen);
          p->len -= flen;
        }
      if (p->refused || p->n_answered == GT_PROBE_PINGS)
        {
          probe_finish (p, NULL);
          return G_SOURCE_REMOVE;
        }
      if (p->len == sizeof p->buf)
        {
          probe_finish (p, "a malformed answer to the probe");
          return G_SOURCE_REMOVE;
        }
    }
}

static void
probe_connected_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Probe *p = user_data;
  g_autoptr (GError) error = NULL;

  p->io = gt_transport_connect_finish (result, &error);
  if (p->io == NULL)
    {
      probe_finish (p, error->message);
      return;
    }
  p->connect_us = g_get_monotonic_time ();
  p->in_source = gt_pollable_source_for_io (p->io, FALSE);
  g_source_set_callback (p->in_source, (GSourceFunc) (void (*) (void)) probe_input_cb, p, NULL);
  g_source_attach (p->in_source, g_main_context_get_thread_default ());
  probe_timer_cb (p);
}

void
gt_client_probe_async (const GtRemote *remote, const GtTransportSecurity *security,
                       GCancellable *cancellable, GAsyncReadyCallback callback,
                       gpointer user_data)
{
  Probe *p = g_new0 (Probe, 1);

  p->task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (p->task, gt_client_probe_async);
  g_task_set_task_data (p->task, p, (GDestroyNotify) probe_free);
  p->start_us = g_get_monotonic_time ();
  gt_transport_connect_async (remote, security, cancellable, probe_connected_cb, p);
}

GtProbeResult *
gt_client_probe_finish (GAsyncResult *result)
{
  g_autoptr (GError) error = NULL;
  GtProbeResult *r;

  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gt_client_probe_async, NULL);
  r = g_task_propagate_pointer (G_TASK (result), &error);
  if (r == NULL)
    {
      r = g_new0 (GtProbeResult, 1);
      r->error = g_strdup (error->message);
    }
  return r;
}

static double
score (const GtProbeResult *r)
{
  return r->rtt_ms + r->loss * LOSS_WEIGHT_MS;
}

int
gt_probe_choose (const GtProbeResult *results, const char *const *names, guint n, int current,
                 char **reason)
{
  g_autoptr (GString) why = g_string_new (NULL);
  int best = -1, winner = -1;
  double tolerance;

  for (guint i = 0; i < n; i++)
    {
      if (i > 0)
        g_string_append (why, "; ");
      if (!results[i].ok)
        {
          g_string_append_printf (why, "%s failed (%s)", names[i],
                                  results[i].error ? results[i].error : "no answer");
          continue;
        }
      g_string_append_printf (why, "%s rtt %.1f ms, loss %.0f%%", names[i], results[i].rtt_ms,
                              results[i].loss * 100);
      if (best < 0 || score (&results[i]) < score (&results[best]))
        best = i;
    }
  if (best < 0)
    {
      *reason = g_string_free (g_steal_pointer (&why), FALSE);
      return -1;
    }
  /* Near ties change nothing: the remote in use stays, else the first listed wins. */
  tolerance = score (&results[best]) * 0.1 + 1.0;
  if (current >= 0 && (guint) current < n && results[current].ok
      && score (&results[current]) <= score (&results[best]) + tolerance)
    winner = current;
  for (guint i = 0; i < n && winner < 0; i++)
    if (results[i].ok && score (&results[i]) <= score (&results[best]) + tolerance)
      winner = i;
  *reason = g_string_free (g_steal_pointer (&why), FALSE);
  return winner;
}
