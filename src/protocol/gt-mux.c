/* gt-mux.c: the tunnel multiplexer: frame I/O on the tunnel, per-stream credit, socket relay; on
 * a tunnel with native streams (QUIC), each stream relayed over a transport stream of its own. */
#include "config.h"

#define G_LOG_DOMAIN "gt-mux"

#include <malloc.h>
#include <string.h>

#include <glib/gstdio.h>

#include "gt-fd-source.h"
#include "gt-mux.h"
#include "gt-mux-private.h"
#include "gt-native-streams.h"
#include "gt-relay-endpoint.h"
#include "gt-token-bucket.h"

/* Read buffer: room for the largest frame plus one large read. */
#define RBUF_READ (64 * 1024)
#define RBUF_SIZE (GT_FRAME_HEADER_SIZE + GT_FRAME_MAX_PAYLOAD + RBUF_READ)
/* Tunnel output back-pressure: streams stop reading their sockets above HIGH, resume below LOW. */
#define OUT_HIGH (1024 * 1024)
#define OUT_LOW (256 * 1024)
/* Frames at least this large are written at once when nothing is queued (bulk: no copy). */
#define DIRECT_WRITE_MIN (16 * 1024)
/* Flush without waiting for the end of the loop iteration above this many queued bytes. */
#define FLUSH_NOW (256 * 1024)
#define OUT_MIN_CAP (16 * 1024)
#define OUT_KEEP_CAP (64 * 1024)
/* The scratch buffer holds a DATA frame, or a DATAGRAM frame with the largest datagram. */
G_STATIC_ASSERT (GT_DATAGRAM_PREFIX_SIZE + GT_DATAGRAM_MAX_DATA <= GT_MUX_MAX_DATA);
/* Tunnel input stops being read above GT_MUX_OUT_PAUSE_INPUT queued bytes and resumes below this.
 * DATA stops at OUT_HIGH (plus one frame), so only what the peer makes us write (PONG, WINDOW,
 * RESET, ...) can reach the pause: a peer that sends without reading cannot grow our queue. */
#define OUT_RESUME_INPUT OUT_HIGH
/* Streams alive in the process: once their number fell to half of its peak (a peak of at least
 * TRIM_AFTER_STREAMS), the heap is trimmed. glibc keeps the small chunks of closed streams that
 * lie all over a brk heap (it only returns the top); after 10,000 idle connections closed, that
 * was 6 MB per process (docs/reliability.md, "Load scenarios"). */
#define TRIM_AFTER_STREAMS 1024

/* Native streams (docs/protocol.md §6.9): a stream's transport stream is not read while this many
 * bytes wait for its socket, so the transport's flow control holds the sender back. */
#define NATIVE_PENDING_MAX GT_INITIAL_WINDOW
/* A native stream's reset code on the transport: gt's reset code plus this. */
#define NATIVE_RESET_BASE 0x100


struct _GtMuxStream
{
  gint ref_count;
  GtMux *mux; /* not owned; NULL once closed */
  guint32 id;
  guint16 service_index;
  GtRelayEndpoint ep; /* the socket side: raw fd or pollable GIOStream */
  GtRelayEndpoint tun; /* native streams: the stream's own transport stream */
  GByteArray *tun_out; /* native: bytes from the socket the transport stream did not take yet */
  gint64 idle_timeout_us;
  gint64 last_activity;

  gint64 send_credit;  /* bytes we may still send */
  gint64 recv_credit;  /* bytes the peer may still send */
  gint64 unacked;      /* bytes delivered to the socket and not yet granted back */

  GByteArray *pending; /* bytes waiting to be written to the socket */
  GByteArray *unsent;  /* server: bytes read before OPEN that the rate limit held back; they go
                        * out as DATA before the socket is read again */
  GtHostRewriter *rewriter;
  GBytes *connect_fail_response;
  GtOpenAddr *addr;    /* the user's addresses, when the server sent them */

  guint local_eof : 1;       /* socket read side ended, SHUTDOWN sent */
  guint remote_shut : 1;     /* SHUTDOWN received */
  guint wrote_shut : 1;      /* shutdown(SHUT_WR) done on the socket */
  guint received_data : 1;   /* any DATA came from the peer */
  guint closed : 1;
  guint blocked : 1;         /* waiting for tunnel output to drain */
  guint throttled_read : 1;  /* socket → tunnel waits for the rate limit (from_socket) */
  guint throttled_write : 1; /* tunnel → socket waits for the rate limit (to_socket) */
  guint answered : 1;        /* the last bytes moved were an answer (see stream_is_idle) */
  guint tun_shut : 1;        /* native: FIN sent on the transport stream */
  guint forward : 1;         /* opened with FORWARD (docs/protocol.md §6.11) */
  guint forward_acked : 1;   /* client: the server answered FORWARD with ACK */
  guint peer_reset : 1;      /* ended by the peer's RESET (peer_reset_code) */
  guint32 peer_reset_code;

  guint64 bytes_to_socket;   /* delivered to the socket */
  guint64 bytes_from_socket; /* read from the socket */
};

struct _GtMux
{
  GObject parent_instance;

  GIOStream *io;
  GPollableInputStream *in;
  GPollableOutputStream *out;
  gboolean in_is_socket;
  gboolean is_server;
  GtNativeStreams *native; /* io, when its transport carries each stream natively */
  GPtrArray *incoming;     /* native, client: NativeIncoming* whose OPEN is being read */
  char *peer;

  GHashTable *streams; /* id → GtMuxStream* (owned ref) */
  guint32 next_stream_id;
  guint32 last_open_id; /* client: ids must increase */
  gboolean forward;      /* GT_CAP_FORWARD negotiated: server ids odd, client ids even */
  gboolean datagrams;    /* GT_CAP_DATAGRAM negotiated: DATAGRAM frames both ways */
  GtMuxDatagramFunc datagram_func;
  gpointer datagram_data;
  guint64 datagrams_native, datagrams_framed, datagrams_dropped;
  gboolean datagram_warned; /* a bad datagram from the transport was logged */
  guint32 forward_id;    /* client: the last FORWARD id sent; server: the last one received */
  GPtrArray *blocked;  /* GtMuxStream* waiting for output room (owned refs) */

  guint8 *rbuf;
  gsize rstart, rend;
  GSource *in_source;
  gsize pause_input_at, resume_input_at; /* GT_MUX_OUT_PAUSE_INPUT, OUT_RESUME_INPUT */
  gboolean input_paused; /* output backed up: the input is not read (in_source is NULL) */
  GSource *resume_source; /* idle source resuming the input */

  guint8 *out_buf;
  gsize out_cap, out_start, out_end;
  GSource *out_source;
  gboolean flush_scheduled;

  guint8 *scratch; /* header + one DATA payload */

  guint timer_id;
  gint64 idle_us, ping_us;
  gint64 last_rx, last_ping;
  gint64 probe_at, probe_us; /* a PING the peer must answer (with any bytes) in time; 0: none */

  guint64 bytes_in, bytes_out;
  guint64 pong_mark; /* bytes_out just after the last PONG was queued */
  GtMuxRate *rate;        /* shared with the other tunnels of the same client (rc box) */
  GPtrArray *throttled;   /* GtMuxStream* waiting for the rate limit (owned refs) */
  guint throttle_id;
  gint64 throttle_at;     /* when throttle_id fires (monotonic µs) */
  guint throttle_round;   /* rotates who is served first from the tokens of a wake-up */
  gboolean closed;
  gboolean going_away;     /* either side sent GOAWAY: no new streams on this tunnel */
  gboolean goaway_sent;
  gboolean goaway_received;
  gboolean in_dispatch;
};

enum
{
  PROP_0,
  PROP_N_STREAMS,
  PROP_PEER,
  N_PROPS
};

enum
{
  SIGNAL_STREAM_OPENED,
  SIGNAL_CLOSED,
  SIGNAL_GOAWAY,
  SIGNAL_STREAM_CLOSED,
  SIGNAL_FORWARD_OPENED,
  SIGNAL_FORWARD_ACCEPTED,
  N_SIGNALS
};

static GParamSpec *properties[N_PROPS];
static guint signals[N_SIGNALS];

G_DEFINE_FINAL_TYPE (GtMux, gt_mux, G_TYPE_OBJECT)

static void mux_fail (GtMux *mux, GError *error);
static void stream_update_events (GtMuxStream *s);
static void stream_finish (GtMuxStream *s);
static void mux_arm_output (GtMux *mux);
static void mux_schedule_resume (GtMux *mux);
static void stream_throttle (GtMuxStream *s, gboolean to_socket, GtTokenBucket *b, gsize want);
static void stream_read_socket (GtMuxStream *s);
static void stream_tun_cb (int fd, GIOCondition revents, gpointer user_data);
static void stream_maybe_finish (GtMuxStream *s);
static gboolean stream_tun_flush (GtMuxStream *s);
static void stream_tun_send (GtMuxStream *s, const guint8 *data, gsize len);

/* ------------------------------------------------------------------------------------------ */
/* Output: frames are appended to one contiguous buffer and written once per main-loop iteration
 * (the flusher below), so many small frames from different streams share one send(). */

typedef struct
{
  GSource source;
  GPtrArray *muxes; /* GtMux* with unflushed output (owned refs) */
} Flusher;

static void mux_flush (GtMux *mux);

static gboolean
flusher_prepare (GSource *source, gint *timeout)
{
  Flusher *f = (Flusher *) source;

  *timeout = -1;
  return f->muxes->len > 0;
}

static gboolean
flusher_check (GSource *source)
{
  return ((Flusher *) source)->muxes->len > 0;
}

static gboolean
flusher_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  Flusher *f = (Flusher *) source;
  g_autoptr (GPtrArray) muxes = f->muxes;

  f->muxes = g_ptr_array_new_with_free_func (g_object_unref);
  for (guint i = 0; i < muxes->len; i++)
    {
      GtMux *mux = muxes->pdata[i];

      mux->flush_scheduled = FALSE;
      mux_flush (mux);
    }
  return G_SOURCE_CONTINUE;
}

static void
flusher_finalize (GSource *source)
{
  g_ptr_array_unref (((Flusher *) source)->muxes);
}

static GSourceFuncs flusher_funcs = {
  flusher_prepare, flusher_check, flusher_dispatch, flusher_finalize, NULL, NULL,
};

static GPrivate flusher_key = G_PRIVATE_INIT ((GDestroyNotify) g_source_unref);

static Flusher *
flusher_get (void)
{
  Flusher *f = g_private_get (&flusher_key);

  if (f == NULL)
    {
      f = (Flusher *) g_source_new (&flusher_funcs, sizeof (Flusher));
      f->muxes = g_ptr_array_new_with_free_func (g_object_unref);
      g_source_set_name ((GSource *) f, "gt-mux-flusher");
      g_source_attach ((GSource *) f, g_main_context_get_thread_default ());
      g_private_set (&flusher_key, f);
    }
  return f;
}

static void
mux_schedule_flush (GtMux *mux)
{
  if (mux->flush_scheduled || mux->out_source != NULL)
    return;
  mux->flush_scheduled = TRUE;
  g_ptr_array_add (flusher_get ()->muxes, g_object_ref (mux));
}

static void
out_append (GtMux *mux, const guint8 *data, gsize len)
{
  gsize used = mux->out_end - mux->out_start;

  if (mux->out_end + len > mux->out_cap)
    {
      if (mux->out_start > 0)
        {
          memmove (mux->out_buf, mux->out_buf + mux->out_start, used);
          mux->out_start = 0;
          mux->out_end = used;
        }
      if (used + len > mux->out_cap)
        {
          mux->out_cap = MAX (MAX (mux->out_cap * 2, used + len), (gsize) OUT_MIN_CAP);
          mux->out_buf = g_realloc (mux->out_buf, mux->out_cap);
        }
    }
  memcpy (mux->out_buf + mux->out_end, data, len);
  mux->out_end += len;
}

/* Queues a frame. Large frames go straight to the socket when nothing is queued. */
static void
mux_send (GtMux *mux, const guint8 *data, gsize len)
{
  if (mux->closed)
    return;
  mux->bytes_out += len;

  if (mux->out_end == mux->out_start && len >= DIRECT_WRITE_MIN)
    {
      GOutputVector v = { data, len };
      gsize written = 0;
      g_autoptr (GError) error = NULL;

      if (g_pollable_output_stream_writev_nonblocking (mux->out, &v, 1, &written, NULL, &error)
          == G_POLLABLE_RETURN_FAILED)
        {
          mux_fail (mux, g_steal_pointer (&error));
          return;
        }
      if (written == len)
        return;
      out_append (mux, data + written, len - written);
      mux_arm_output (mux);
      return;
    }
  out_append (mux, data, len);
  if (mux->out_end - mux->out_start >= FLUSH_NOW)
    mux_flush (mux);
  else
    mux_schedule_flush (mux);
}

static gsize
mux_out_bytes (GtMux *mux)
{
  return mux->out_end - mux->out_start;
}

static void
mux_wake_blocked (GtMux *mux)
{
  g_autoptr (GPtrArray) woken = NULL;

  if (mux->blocked->len == 0)
    return;
  woken = g_steal_pointer (&mux->blocked);
  mux->blocked = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_mux_stream_unref);
  for (guint i = 0; i < woken->len; i++)
    {
      GtMuxStream *s = woken->pdata[i];

      s->blocked = FALSE;
      if (!s->closed)
        stream_update_events (s);
      /* Held-back bytes wait for no socket event: wake the stream from a timer. */
      if (!s->closed && s->unsent != NULL)
        stream_throttle (s, FALSE, &mux->rate->from_socket, s->unsent->len);
    }
}

/* Writes what the socket takes; arms the writable source for the rest. */
static void
mux_flush (GtMux *mux)
{
  G_GNUC_UNUSED g_autoptr (GObject) keep = g_object_ref (G_OBJECT (mux));

  while (mux->out_end > mux->out_start && !mux->closed)
    {
      GOutputVector v = { mux->out_buf + mux->out_start, mux->out_end - mux->out_start };
      gsize written = 0;
      g_autoptr (GError) error = NULL;
      GPollableReturn r;

      r = g_pollable_output_stream_writev_nonblocking (mux->out, &v, 1, &written, NULL, &error);
      if (r == G_POLLABLE_RETURN_FAILED)
        {
          mux_fail (mux, g_steal_pointer (&error));
          return;
        }
      mux->out_start += written;
      if (r == G_POLLABLE_RETURN_WOULD_BLOCK || written == 0)
        break;
    }
  if (mux->closed)
    return;
  if (mux->out_end == mux->out_start)
    {
      mux->out_start = mux->out_end = 0;
      /* An idle tunnel keeps no large buffer. */
      if (mux->out_cap > OUT_KEEP_CAP)
        {
          g_clear_pointer (&mux->out_buf, g_free);
          mux->out_cap = 0;
        }
      if (mux->out_source)
        {
          g_source_destroy (mux->out_source);
          g_clear_pointer (&mux->out_source, g_source_unref);
        }
    }
  else
    mux_arm_output (mux);
  if (G_UNLIKELY (mux->input_paused) && mux_out_bytes (mux) < mux->resume_input_at)
    mux_schedule_resume (mux);
  if (mux_out_bytes (mux) < OUT_LOW)
    mux_wake_blocked (mux);
}

static gboolean
mux_output_ready_cb (GObject *stream, gpointer user_data)
{
  GtMux *mux = user_data;

  mux_flush (mux);
  return G_SOURCE_CONTINUE; /* mux_flush destroys the source once drained */
}

static void
mux_arm_output (GtMux *mux)
{
  if (mux->out_source != NULL || mux->closed)
    return;
  mux->out_source = gt_pollable_source_for_io (mux->io, TRUE);
  g_source_set_callback (mux->out_source, (GSourceFunc) (void (*) (void)) mux_output_ready_cb,
                         mux, NULL);
  g_source_attach (mux->out_source, g_main_context_get_thread_default ());
}

static void
mux_send_frame_small (GtMux *mux, GByteArray *frame)
{
  mux_send (mux, frame->data, frame->len);
}

/* The peer broke the protocol: tell it (ERROR with code and reason, best effort) and close. */
static void
mux_protocol_error (GtMux *mux, GtErrorCode code, GError *error)
{
  g_autoptr (GByteArray) f = g_byte_array_new ();

  if (mux->closed)
    {
      g_error_free (error);
      return;
    }
  gt_frame_append_error (f, GT_FRAME_ERROR, code, error->message);
  mux_send (mux, f->data, f->len);
  mux_flush (mux);
  mux_fail (mux, error);
}

/* ------------------------------------------------------------------------------------------ */
/* Streams */

static gint live_streams;      /* atomic */
static gint live_streams_peak; /* atomic: the most since the last trim */

static void
live_streams_add (void)
{
  gint n = g_atomic_int_add (&live_streams, 1) + 1;
  gint peak;

  while ((peak = g_atomic_int_get (&live_streams_peak)) < n
         && !g_atomic_int_compare_and_exchange (&live_streams_peak, peak, n))
    ;
}

static void
live_streams_remove (void)
{
  gint n = g_atomic_int_add (&live_streams, -1) - 1;
  gint peak = g_atomic_int_get (&live_streams_peak);

  /* Halving steps: a burst of N streams is followed by about log2 (N / 1024) trims. */
  if (peak >= TRIM_AFTER_STREAMS && n <= peak / 2
      && g_atomic_int_compare_and_exchange (&live_streams_peak, peak, n))
    malloc_trim (0);
}

static void stream_fd_cb (int fd, GIOCondition revents, gpointer user_data);

static inline gboolean
stream_attached (GtMuxStream *s)
{
  return gt_relay_endpoint_is_attached (&s->ep);
}

GtMuxStream *
gt_mux_stream_ref (GtMuxStream *s)
{
  g_return_val_if_fail (s != NULL, NULL);
  g_atomic_int_inc (&s->ref_count);
  return s;
}

void
gt_mux_stream_unref (GtMuxStream *s)
{
  if (s == NULL || !g_atomic_int_dec_and_test (&s->ref_count))
    return;
  g_assert (s->ep.source == NULL && s->ep.in_source == NULL && s->ep.out_source == NULL);
  g_assert (s->tun.in_source == NULL && s->tun.out_source == NULL);
  gt_relay_endpoint_close (&s->ep);
  gt_relay_endpoint_close (&s->tun);
  if (s->tun_out)
    g_byte_array_unref (s->tun_out);
  if (s->pending)
    g_byte_array_unref (s->pending);
  if (s->unsent)
    g_byte_array_unref (s->unsent);
  g_clear_pointer (&s->rewriter, gt_host_rewriter_free);
  g_clear_pointer (&s->connect_fail_response, g_bytes_unref);
  g_free (s->addr);
  g_free (s);
  live_streams_remove ();
}

static GtMuxStream *
stream_new (GtMux *mux, guint32 id, guint16 service_index)
{
  GtMuxStream *s = g_new0 (GtMuxStream, 1);

  s->ref_count = 1;
  s->mux = mux;
  s->id = id;
  s->service_index = service_index;
  gt_relay_endpoint_init (&s->ep, stream_fd_cb, s);
  gt_relay_endpoint_init (&s->tun, stream_tun_cb, s);
  /* Native streams: the transport's flow control, not gt's windows. */
  s->send_credit = mux->native != NULL ? G_MAXINT32 : GT_INITIAL_WINDOW;
  s->recv_credit = mux->native != NULL ? G_MAXINT32 : GT_INITIAL_WINDOW;
  s->last_activity = g_get_monotonic_time ();
  live_streams_add ();
  g_hash_table_insert (mux->streams, GUINT_TO_POINTER (id), s);
  g_object_notify_by_pspec (G_OBJECT (mux), properties[PROP_N_STREAMS]);
  return s;
}

/* Removes the stream from its mux and releases its socket. */
static void
stream_close (GtMuxStream *s)
{
  GtMux *mux = s->mux;

  if (s->closed)
    return;
  s->closed = TRUE;
  gt_relay_endpoint_close (&s->ep);
  gt_relay_endpoint_close (&s->tun);
  g_clear_pointer (&s->tun_out, g_byte_array_unref);
  if (s->pending)
    g_byte_array_set_size (s->pending, 0);
  g_clear_pointer (&s->unsent, g_byte_array_unref);
  s->mux = NULL;
  if (mux != NULL)
    {
      g_signal_emit (mux, signals[SIGNAL_STREAM_CLOSED], 0, s);
      g_hash_table_remove (mux->streams, GUINT_TO_POINTER (s->id)); /* may drop last ref */
      g_object_notify_by_pspec (G_OBJECT (mux), properties[PROP_N_STREAMS]);
      if (mux->goaway_received && !mux->is_server && g_hash_table_size (mux->streams) == 0)
        gt_mux_close (mux, GT_ERROR_CODE_NONE, NULL);
    }
}

static void
stream_send_reset (GtMuxStream *s, GtResetCode code)
{
  g_autoptr (GByteArray) f = g_byte_array_sized_new (GT_FRAME_HEADER_SIZE + 4);

  if (s->mux == NULL)
    return;
  if (s->mux->native != NULL)
    {
      if (s->tun.io != NULL)
        gt_native_streams_reset (GT_NATIVE_STREAMS (s->tun.io), NATIVE_RESET_BASE + code);
      return;
    }
  gt_frame_append_reset (f, s->id, code);
  mux_send_frame_small (s->mux, f);
}

void
gt_mux_stream_reset (GtMuxStream *s, GtResetCode code)
{
  g_return_if_fail (s != NULL);
  if (s->closed)
    return;
  stream_send_reset (s, code);
  stream_close (s);
}

static void
stream_grant (GtMuxStream *s)
{
  g_autoptr (GByteArray) f = NULL;

  if (s->unacked < GT_INITIAL_WINDOW / 2 || s->remote_shut || s->mux == NULL
      || s->mux->native != NULL)
    return;
  f = g_byte_array_sized_new (GT_FRAME_HEADER_SIZE + 4);
  gt_frame_append_window (f, s->id, (guint32) s->unacked);
  s->recv_credit += s->unacked;
  s->unacked = 0;
  mux_send_frame_small (s->mux, f);
}

static void
stream_maybe_finish (GtMuxStream *s)
{
  if (s->closed)
    return;
  if (s->remote_shut && (s->pending == NULL || s->pending->len == 0) && !s->wrote_shut
      && stream_attached (s))
    {
      gt_relay_endpoint_shutdown_write (&s->ep);
      s->wrote_shut = TRUE;
    }
  if (s->local_eof && s->wrote_shut && (s->tun_shut || s->mux == NULL || s->mux->native == NULL))
    stream_finish (s);
}

static void
stream_finish (GtMuxStream *s)
{
  stream_close (s);
}

/* Rate limits (speed). Each direction has its own bucket and its own flag, so a stream waiting
 * to write never stops reading and the reverse. A direction stops only when its bucket is empty,
 * and waits for the bytes it needs (at most a burst, a tenth of a second), not a full bucket. */

static gboolean
mux_throttle_cb (gpointer user_data)
{
  GtMux *mux = user_data;
  g_autoptr (GPtrArray) woken = g_steal_pointer (&mux->throttled);
  guint start;

  mux->throttle_id = 0;
  mux->throttled = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_mux_stream_unref);
  if (woken->len == 0)
    return G_SOURCE_REMOVE;
  /* The first served may take all the tokens there are: take turns, so that a long upload does
   * not starve the next request's head. */
  start = mux->throttle_round++ % woken->len;
  for (guint k = 0; k < woken->len; k++)
    {
      GtMuxStream *s = woken->pdata[(start + k) % woken->len];

      /* A direction whose tokens are still short throttles again on its next try. */
      s->throttled_read = FALSE;
      s->throttled_write = FALSE;
      if (s->closed)
        continue;
      if (s->unsent != NULL && !s->local_eof)
        stream_read_socket (s);
      if (s->closed)
        continue;
      stream_fd_cb (-1, s->pending && s->pending->len > 0 ? G_IO_OUT : 0, s);
      if (!s->closed)
        stream_update_events (s);
    }
  return G_SOURCE_REMOVE;
}

static void
stream_throttle (GtMuxStream *s, gboolean to_socket, GtTokenBucket *b, gsize want)
{
  GtMux *mux = s->mux;
  gint64 now = g_get_monotonic_time ();
  gint64 at;

  if (to_socket ? s->throttled_write : s->throttled_read)
    return;
  if (!s->throttled_read && !s->throttled_write)
    g_ptr_array_add (mux->throttled, gt_mux_stream_ref (s));
  if (to_socket)
    s->throttled_write = TRUE;
  else
    s->throttled_read = TRUE;
  /* wait_us() waits for at most one burst. The timer serves both directions: the earliest
   * wake-up wins. */
  at = now + MAX (gt_token_bucket_wait_us (b, want, now), (gint64) 1000);
  if (mux->throttle_id != 0 && mux->throttle_at <= at)
    return;
  g_clear_handle_id (&mux->throttle_id, g_source_remove);
  mux->throttle_at = at;
  mux->throttle_id = g_timeout_add ((guint) ((at - now + 999) / 1000), mux_throttle_cb, mux);
}

/* How many of len bytes may pass now in one direction; with none, the direction waits. */
static gsize
stream_rate_take (GtMuxStream *s, gboolean to_socket, gsize len)
{
  GtTokenBucket *b;
  gsize allowed;

  if (s->mux == NULL || s->mux->rate == NULL)
    return len;
  b = to_socket ? &s->mux->rate->to_socket : &s->mux->rate->from_socket;
  if (gt_token_bucket_is_unlimited (b))
    return len;
  allowed = gt_token_bucket_take (b, len, g_get_monotonic_time ());
  /* Only an empty bucket stops the direction: a read may return less than allowed, so a
   * partial grant is no reason to wait. */
  if (allowed == 0)
    stream_throttle (s, to_socket, b, len);
  return allowed;
}

static void
stream_rate_refund (GtMuxStream *s, gboolean to_socket, gsize unused)
{
  GtTokenBucket *b;

  if (unused == 0 || s->mux == NULL || s->mux->rate == NULL)
    return;
  b = to_socket ? &s->mux->rate->to_socket : &s->mux->rate->from_socket;
  if (!gt_token_bucket_is_unlimited (b))
    b->tokens = MIN (b->tokens + unused, b->burst);
}

/* Writes pending bytes to the socket; returns FALSE if the stream died. */
static gboolean
stream_flush_pending (GtMuxStream *s)
{
  while (s->pending && s->pending->len > 0 && !s->throttled_write)
    {
      gsize allowed = stream_rate_take (s, TRUE, s->pending->len);
      gssize n;

      if (allowed == 0)
        break;
      n = gt_relay_endpoint_send (&s->ep, s->pending->data, allowed);
      if (n == GT_RELAY_ENDPOINT_WOULD_BLOCK)
        {
          stream_rate_refund (s, TRUE, allowed);
          break;
        }
      if (n < 0)
        {
          gt_mux_stream_reset (s, GT_RESET_CODE_CLOSED);
          return FALSE;
        }
      stream_rate_refund (s, TRUE, allowed - n);
      g_byte_array_remove_range (s->pending, 0, n);
      s->unacked += n;
      s->bytes_to_socket += n;
      s->last_activity = g_get_monotonic_time ();
    }
  if (s->pending && s->pending->len == 0)
    {
      /* Idle streams hold no buffer. */
      g_clear_pointer (&s->pending, g_byte_array_unref);
    }
  stream_grant (s);
  return TRUE;
}

static void
stream_read_socket (GtMuxStream *s)
{
  GtMux *mux = s->mux;
  gsize want = MIN ((gint64) GT_MUX_MAX_DATA, s->send_credit);
  gsize allowed;
  gssize n;

  if (want == 0 || s->throttled_read)
    return;
  if (mux->native != NULL && s->tun_out != NULL && s->tun_out->len > 0)
    return; /* its transport stream takes no more for now */
  /* Streams woken together must not each add a frame past the bound. */
  if (mux->native == NULL && mux_out_bytes (mux) >= OUT_HIGH)
    {
      stream_update_events (s);
      return;
    }
  if (s->unsent != NULL)
    {
      /* First what was read before OPEN (in order, before anything newer from the socket). */
      allowed = stream_rate_take (s, FALSE, MIN (want, s->unsent->len));
      if (allowed == 0)
        return;
      memcpy (mux->scratch + GT_FRAME_HEADER_SIZE, s->unsent->data, allowed);
      g_byte_array_remove_range (s->unsent, 0, allowed);
      if (s->unsent->len == 0)
        g_clear_pointer (&s->unsent, g_byte_array_unref);
      else
        stream_throttle (s, FALSE, &mux->rate->from_socket, s->unsent->len);
      n = allowed;
      goto send;
    }
  allowed = stream_rate_take (s, FALSE, want);
  if (allowed == 0)
    return;
  n = gt_relay_endpoint_recv (&s->ep, mux->scratch + GT_FRAME_HEADER_SIZE, allowed);
  stream_rate_refund (s, FALSE, n > 0 ? allowed - n : allowed);
  if (n == GT_RELAY_ENDPOINT_WOULD_BLOCK)
    return;
  if (n < 0)
    {
      gt_mux_stream_reset (s, GT_RESET_CODE_CLOSED);
      return;
    }
  s->last_activity = g_get_monotonic_time ();
  if (n == 0 && mux->native != NULL)
    {
      s->local_eof = TRUE;
      stream_tun_flush (s); /* FIN once what waits went out */
      if (!s->closed)
        stream_update_events (s);
      stream_maybe_finish (s);
      return;
    }
  if (n == 0)
    {
      g_autoptr (GByteArray) f = g_byte_array_sized_new (GT_FRAME_HEADER_SIZE);

      s->local_eof = TRUE;
      gt_frame_append_shutdown (f, s->id);
      mux_send_frame_small (mux, f);
      stream_update_events (s);
      stream_maybe_finish (s);
      return;
    }
send:
  if (mux->native != NULL)
    {
      s->answered = !mux->is_server;
      s->bytes_from_socket += n;
      stream_tun_send (s, mux->scratch + GT_FRAME_HEADER_SIZE, n);
      if (!s->closed)
        stream_update_events (s);
      return;
    }
  gt_frame_header_encode (mux->scratch, GT_FRAME_DATA, 0, s->id, (guint32) n);
  s->answered = !mux->is_server; /* client: the local service's reply; server: the user's request */
  s->send_credit -= n;
  s->bytes_from_socket += n;
  mux_send (mux, mux->scratch, GT_FRAME_HEADER_SIZE + n);
  if (!s->closed)
    stream_update_events (s);
}

static void
stream_fd_cb (int fd, GIOCondition revents, gpointer user_data)
{
  GtMuxStream *s = user_data;
  G_GNUC_UNUSED g_autoptr (GtMuxStream) keep = gt_mux_stream_ref (s);

  if (revents & (G_IO_OUT | G_IO_ERR))
    {
      if (!stream_flush_pending (s))
        return;
      stream_maybe_finish (s);
      if (s->closed)
        return;
    }
  if (revents & (G_IO_IN | G_IO_HUP | G_IO_ERR))
    {
      if (!s->local_eof && !s->closed)
        stream_read_socket (s);
      else if ((revents & (G_IO_HUP | G_IO_ERR)) && !(revents & G_IO_IN) && !s->closed)
        {
          /* The socket is gone in both directions while we still had to write to it. */
          if (!s->wrote_shut)
            gt_mux_stream_reset (s, GT_RESET_CODE_CLOSED);
        }
    }
  if (!s->closed)
    stream_update_events (s);
}

static void
stream_update_events (GtMuxStream *s)
{
  GIOCondition events = 0;
  GtMux *mux = s->mux;

  if (s->closed || mux == NULL)
    return;
  if (mux->native != NULL && gt_relay_endpoint_is_attached (&s->tun))
    {
      GIOCondition tun_events = 0;

      /* Not read while its socket is behind: QUIC's window then stops the peer's sender. */
      if (!s->remote_shut && (s->pending == NULL || s->pending->len < NATIVE_PENDING_MAX))
        tun_events |= G_IO_IN;
      if (s->tun_out != NULL && s->tun_out->len > 0)
        tun_events |= G_IO_OUT;
      gt_relay_endpoint_set_events (&s->tun, tun_events);
    }
  if (!stream_attached (s))
    return;
  if (mux->native != NULL)
    {
      if (!s->local_eof && !s->throttled_read && (s->tun_out == NULL || s->tun_out->len == 0))
        events |= G_IO_IN;
    }
  else if (!s->local_eof && s->send_credit > 0 && !s->throttled_read)
    {
      if (mux_out_bytes (mux) >= OUT_HIGH)
        {
          if (!s->blocked)
            {
              s->blocked = TRUE;
              g_ptr_array_add (mux->blocked, gt_mux_stream_ref (s));
            }
        }
      else
        events |= G_IO_IN;
    }
  if (s->pending && s->pending->len > 0 && !s->throttled_write)
    events |= G_IO_OUT;
  gt_relay_endpoint_set_events (&s->ep, events);
}

/* Delivers tunnel bytes to the socket (or buffers them). */
static void
stream_deliver (GtMuxStream *s, const guint8 *data, gsize len)
{
  g_autoptr (GByteArray) rewritten = NULL;

  if (len > 0)
    s->answered = s->mux != NULL && s->mux->is_server; /* server: the reply; client: the request */
  if (s->rewriter != NULL)
    {
      g_autoptr (GError) error = NULL;

      rewritten = g_byte_array_sized_new (len + 64);
      if (!gt_host_rewriter_feed (s->rewriter, data, len, rewritten, &error))
        {
          g_message ("stream %u: cannot rewrite Host: %s", s->id, error->message);
          gt_mux_stream_reset (s, GT_RESET_CODE_CLOSED);
          return;
        }
      s->unacked += (gint64) len - (gint64) rewritten->len;
      if (gt_host_rewriter_is_done (s->rewriter))
        g_clear_pointer (&s->rewriter, gt_host_rewriter_free);
      data = rewritten->data;
      len = rewritten->len;
    }

  if (stream_attached (s) && (s->pending == NULL || s->pending->len == 0) && !s->wrote_shut)
    {
      while (len > 0 && !s->throttled_write)
        {
          gsize allowed = stream_rate_take (s, TRUE, len);
          gssize n;

          if (allowed == 0)
            break;
          n = gt_relay_endpoint_send (&s->ep, data, allowed);
          if (n == GT_RELAY_ENDPOINT_WOULD_BLOCK)
            {
              stream_rate_refund (s, TRUE, allowed);
              break;
            }
          if (n < 0)
            {
              gt_mux_stream_reset (s, GT_RESET_CODE_CLOSED);
              return;
            }
          stream_rate_refund (s, TRUE, allowed - n);
          data += n;
          len -= n;
          s->unacked += n;
          s->bytes_to_socket += n;
        }
      s->last_activity = g_get_monotonic_time ();
    }
  if (len > 0)
    {
      if (s->pending == NULL)
        s->pending = g_byte_array_sized_new (len);
      g_byte_array_append (s->pending, data, len);
      stream_update_events (s);
    }
  stream_grant (s);
}

/* The peer reset the stream (RESET frame, or its native stream reset) with code. */
static void
stream_peer_reset (GtMuxStream *s, guint32 code)
{
  s->peer_reset = TRUE;
  s->peer_reset_code = code;
  if (code == GT_RESET_CODE_CONNECT_FAILED && !s->received_data && s->connect_fail_response != NULL
      && stream_attached (s))
    {
      gsize rlen;
      const char *r = g_bytes_get_data (s->connect_fail_response, &rlen);

      gt_relay_endpoint_reply_and_close (&s->ep, (const guint8 *) r, rlen);
    }
  stream_close (s);
}

/* ------------------------------------------------------------------------------------------ */
/* Native streams (docs/protocol.md §6.9): each stream relays between its socket and a transport
 * stream of its own; EOF is FIN, a reset is the transport's stream reset. */

/* The transport stream failed: reset by the peer (with gt's code in it), or its connection went. */
static void
stream_tun_failed (GtMuxStream *s)
{
  guint64 code = 0;
  guint32 reset = GT_RESET_CODE_CLOSED;

  if (s->tun.io != NULL && gt_native_streams_get_reset_code (GT_NATIVE_STREAMS (s->tun.io), &code)
      && code >= NATIVE_RESET_BASE && code - NATIVE_RESET_BASE <= G_MAXUINT32)
    reset = (guint32) (code - NATIVE_RESET_BASE);
  stream_peer_reset (s, reset);
}

/* Writes what waits in tun_out; then the FIN once the socket's EOF came. FALSE: the stream died. */
static gboolean
stream_tun_flush (GtMuxStream *s)
{
  while (s->tun_out != NULL && s->tun_out->len > 0)
    {
      gssize n = gt_relay_endpoint_send (&s->tun, s->tun_out->data, s->tun_out->len);

      if (n == GT_RELAY_ENDPOINT_WOULD_BLOCK)
        break;
      if (n < 0)
        {
          stream_tun_failed (s);
          return FALSE;
        }
      g_byte_array_remove_range (s->tun_out, 0, n);
      s->mux->bytes_out += n;
    }
  if (s->tun_out != NULL && s->tun_out->len == 0)
    g_clear_pointer (&s->tun_out, g_byte_array_unref);
  if (s->tun_out == NULL && s->local_eof && !s->tun_shut)
    {
      gt_relay_endpoint_shutdown_write (&s->tun);
      s->tun_shut = TRUE;
    }
  return TRUE;
}

/* Bytes for the peer: to the transport stream, or into tun_out for what it does not take now. */
static void
stream_tun_send (GtMuxStream *s, const guint8 *data, gsize len)
{
  if (s->tun_out == NULL || s->tun_out->len == 0)
    {
      gssize n = gt_relay_endpoint_send (&s->tun, data, len);

      if (n == GT_RELAY_ENDPOINT_ERROR)
        {
          stream_tun_failed (s);
          return;
        }
      if (n > 0)
        {
          s->mux->bytes_out += n;
          data += n;
          len -= n;
        }
    }
  if (len == 0)
    return;
  if (s->tun_out == NULL)
    s->tun_out = g_byte_array_sized_new (len);
  g_byte_array_append (s->tun_out, data, len);
}

/* Bytes from the peer, while the socket keeps up (a few reads: other streams get their turn). */
static void
stream_tun_read (GtMuxStream *s)
{
  GtMux *mux = s->mux;

  for (int k = 0; k < 4 && !s->closed && !s->remote_shut
                  && (s->pending == NULL || s->pending->len < NATIVE_PENDING_MAX);
       k++)
    {
      gssize n;

      /* After the first read, only while there is more (a would-block read costs a GError). */
      if (k > 0 && !g_pollable_input_stream_is_readable (s->tun.in))
        break;
      n = gt_relay_endpoint_recv (&s->tun, mux->scratch, GT_MUX_MAX_DATA);

      if (n == GT_RELAY_ENDPOINT_WOULD_BLOCK)
        break;
      if (n < 0)
        {
          stream_tun_failed (s);
          return;
        }
      if (n == 0)
        {
          s->remote_shut = TRUE;
          break;
        }
      mux->bytes_in += n;
      mux->last_rx = g_get_monotonic_time ();
      s->received_data = TRUE;
      stream_deliver (s, mux->scratch, n);
    }
}

static void
stream_tun_cb (int fd, GIOCondition revents, gpointer user_data)
{
  GtMuxStream *s = user_data;
  G_GNUC_UNUSED g_autoptr (GtMuxStream) keep = gt_mux_stream_ref (s);

  if ((revents & G_IO_OUT) && !stream_tun_flush (s))
    return;
  if ((revents & G_IO_IN) && !s->closed)
    stream_tun_read (s);
  if (!s->closed)
    stream_maybe_finish (s);
  if (!s->closed)
    stream_update_events (s);
}

static void
stream_attach (GtMuxStream *s, int fd, GIOStream *io, guint64 idle_timeout_ms)
{
  if (io != NULL)
    gt_relay_endpoint_attach_io (&s->ep, io);
  else
    gt_relay_endpoint_attach_fd (&s->ep, fd);
  s->idle_timeout_us = (gint64) idle_timeout_ms * 1000;
  s->last_activity = g_get_monotonic_time ();
  if (s->pending && s->pending->len > 0)
    {
      if (!stream_flush_pending (s))
        return;
    }
  stream_update_events (s);
  stream_maybe_finish (s);
}

void
gt_mux_stream_attach_fd (GtMuxStream *s, int fd, guint64 idle_timeout_ms)
{
  g_return_if_fail (s != NULL);
  g_return_if_fail (!stream_attached (s));

  if (s->closed)
    {
      g_close (fd, NULL);
      return;
    }
  stream_attach (s, fd, NULL, idle_timeout_ms);
}

void
gt_mux_stream_set_rewriter (GtMuxStream *s, GtHostRewriter *rewriter)
{
  g_autoptr (GByteArray) waiting = NULL;

  g_return_if_fail (s != NULL);
  g_return_if_fail (s->bytes_to_socket == 0);
  g_clear_pointer (&s->rewriter, gt_host_rewriter_free);
  s->rewriter = rewriter;
  /* The request head usually came with OPEN, before the local service was dialed: it waits in
   * pending and has not met the rewriter yet. */
  waiting = g_steal_pointer (&s->pending);
  if (waiting != NULL && waiting->len > 0 && !s->closed)
    stream_deliver (s, waiting->data, waiting->len);
}

gboolean
gt_mux_stream_is_closed (GtMuxStream *s)
{
  return s->closed;
}

guint32
gt_mux_stream_get_id (GtMuxStream *s)
{
  return s->id;
}

guint16
gt_mux_stream_get_service_index (GtMuxStream *s)
{
  return s->service_index;
}

GtMux *
gt_mux_stream_get_mux (GtMuxStream *s)
{
  return s->mux;
}

gint64
gt_mux_stream_get_idle_us (GtMuxStream *s)
{
  return g_get_monotonic_time () - s->last_activity;
}

guint64
gt_mux_stream_get_bytes_to_socket (GtMuxStream *s)
{
  return s->bytes_to_socket;
}

guint64
gt_mux_stream_get_bytes_from_socket (GtMuxStream *s)
{
  return s->bytes_from_socket;
}

void
gt_mux_set_rate (GtMux *mux, GtMuxRate *rate)
{
  g_return_if_fail (GT_IS_MUX (mux));
  g_clear_pointer (&mux->rate, g_rc_box_release);
  mux->rate = rate ? g_rc_box_acquire (rate) : NULL;
}

void
gt_mux_foreach_stream (GtMux *mux, GtMuxStreamFunc func, gpointer user_data)
{
  GHashTableIter iter;
  gpointer value;

  g_hash_table_iter_init (&iter, mux->streams);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    func (value, user_data);
}

/* Resets the streams idle for at least idle_us whose service index the filter accepts. Used by
 * graceful stops: an HTTP connection idle between requests is not in flight. A stream whose last
 * bytes were the user's (a request that has no answer yet) is in flight, however long the answer
 * takes. */
void
gt_mux_reset_idle_streams (GtMux *mux, gint64 idle_us, GtMuxServiceFilter filter,
                           gpointer user_data)
{
  g_autoptr (GPtrArray) idle = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_mux_stream_unref);
  gint64 now = g_get_monotonic_time ();
  GHashTableIter iter;
  gpointer value;

  g_return_if_fail (GT_IS_MUX (mux));
  g_hash_table_iter_init (&iter, mux->streams);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      GtMuxStream *s = value;

      /* Idle means nothing moves AND nothing waits: a stream held back by flow control or
       * a slow reader (pending bytes, no credit) is still in flight. */
      if (s->answered && now - s->last_activity >= idle_us
          && (s->pending == NULL || s->pending->len == 0) && s->send_credit > 0
          && !s->throttled_read && !s->throttled_write
          && filter (s->service_index, user_data))
        g_ptr_array_add (idle, gt_mux_stream_ref (s));
    }
  for (guint i = 0; i < idle->len; i++)
    gt_mux_stream_reset (idle->pdata[i], GT_RESET_CODE_CLOSED);
}

const GtOpenAddr *
gt_mux_stream_get_addr (GtMuxStream *s)
{
  return s->addr;
}

gsize
gt_mux_stream_get_buffered (GtMuxStream *s)
{
  return s->pending ? s->pending->len : 0;
}

const guint8 *
gt_mux_stream_peek_pending (GtMuxStream *s, gsize *len)
{
  *len = s->pending ? s->pending->len : 0;
  return s->pending ? s->pending->data : NULL;
}

GtMuxStream *
gt_mux_open_stream_full (GtMux *mux, guint16 service_index, int fd, GIOStream *io,
                         const guint8 *data, gsize len, const GtOpenAddr *addr,
                         GBytes *connect_fail_response, guint64 idle_timeout_ms)
{
  GtMuxStream *s;
  g_autoptr (GByteArray) f = NULL;
  g_autoptr (GIOStream) tun = NULL;
  G_GNUC_UNUSED g_autoptr (GtMuxStream) keep = NULL;

  g_return_val_if_fail (GT_IS_MUX (mux), NULL);
  g_return_val_if_fail (mux->is_server, NULL);
  g_return_val_if_fail (len <= GT_INITIAL_WINDOW && len <= GT_FRAME_MAX_PAYLOAD - 2, NULL);

  if (mux->closed)
    {
      if (fd >= 0)
        g_close (fd, NULL);
      return NULL;
    }
  if (mux->native != NULL)
    {
      g_autoptr (GError) error = NULL;

      tun = gt_native_streams_open (mux->native, &error);
      if (tun == NULL)
        {
          g_message ("%s: %s", mux->peer ? mux->peer : "tunnel", error->message);
          if (fd >= 0 && connect_fail_response != NULL)
            gt_socket_reply_and_close (fd, g_bytes_get_data (connect_fail_response, NULL),
                                       g_bytes_get_size (connect_fail_response));
          else if (fd >= 0)
            g_close (fd, NULL);
          return NULL;
        }
    }
  if (mux->next_stream_id >= G_MAXUINT32 - 3)
    gt_mux_goaway (mux, GT_ERROR_CODE_NONE, "stream ids exhausted");
  /* With FORWARD the client opens the even ids: ours are the odd ones. */
  mux->next_stream_id += mux->forward && mux->next_stream_id > 0 ? 2 : 1;
  s = stream_new (mux, mux->next_stream_id, service_index);
  keep = gt_mux_stream_ref (s);
  if (tun != NULL)
    gt_relay_endpoint_attach_io (&s->tun, tun);
  if (connect_fail_response)
    s->connect_fail_response = g_bytes_ref (connect_fail_response);

  /* The bytes read before the stream existed (a request head, maybe a body) count against the
   * rate limit too: what the bucket does not cover now follows as DATA when it does. */
  if (len > 0 && mux->rate != NULL && !gt_token_bucket_is_unlimited (&mux->rate->from_socket))
    {
      gsize first = gt_token_bucket_take (&mux->rate->from_socket, len, g_get_monotonic_time ());

      if (first < len)
        {
          s->unsent = g_byte_array_sized_new (len - first);
          g_byte_array_append (s->unsent, data + first, len - first);
          len = first;
        }
    }
  f = g_byte_array_sized_new (GT_FRAME_HEADER_SIZE + GT_OPEN_PREFIX_SIZE + len);
  gt_frame_append_open_header_addr (f, s->id, service_index, addr, len);
  g_byte_array_append (f, data, len);
  s->send_credit -= len;
  s->bytes_from_socket += len; /* read by the server before the stream existed */
  if (tun != NULL)
    stream_tun_send (s, f->data, f->len); /* OPEN heads the stream's own transport stream */
  else
    mux_send (mux, f->data, f->len);
  if (mux->closed || s->closed)
    {
      if (fd >= 0)
        g_close (fd, NULL);
      return NULL;
    }
  if (s->unsent != NULL)
    stream_throttle (s, FALSE, &mux->rate->from_socket, s->unsent->len);
  stream_attach (s, fd, io, idle_timeout_ms);
  return s;
}

GtMuxStream *
gt_mux_open_stream (GtMux *mux, guint16 service_index, int fd, const guint8 *data, gsize len,
                    GBytes *connect_fail_response, guint64 idle_timeout_ms)
{
  return gt_mux_open_stream_full (mux, service_index, fd, NULL, data, len, NULL,
                                  connect_fail_response, idle_timeout_ms);
}

GtMuxStream *
gt_mux_open_stream_io (GtMux *mux, guint16 service_index, GIOStream *io, const guint8 *data,
                       gsize len, GBytes *connect_fail_response, guint64 idle_timeout_ms)
{
  g_return_val_if_fail (G_IS_IO_STREAM (io), NULL);
  return gt_mux_open_stream_full (mux, service_index, -1, io, data, len, NULL,
                                  connect_fail_response, idle_timeout_ms);
}

/* A datagram that came as a transport datagram (a QUIC DATAGRAM frame): the same payload as a
 * DATAGRAM frame's. It arrives while the transport reads a packet, so a bad one is dropped with
 * a log line rather than closing the tunnel from inside the transport. */
static void
mux_native_datagram_cb (const guint8 *data, gsize len, gpointer user_data)
{
  GtMux *mux = user_data;
  g_autoptr (GError) error = NULL;
  guint32 flow_id;
  guint16 service_index;
  const guint8 *bytes;
  gsize bytes_len;

  if (mux->closed || !mux->datagrams)
    return;
  if (!gt_datagram_decode (data, len, &flow_id, &service_index, &bytes, &bytes_len, &error))
    {
      if (!mux->datagram_warned)
        g_warning ("%s: bad datagram dropped (further ones silently): %s",
                   mux->peer ? mux->peer : "tunnel", error->message);
      mux->datagram_warned = TRUE;
      return;
    }
  if (mux->datagram_func != NULL)
    mux->datagram_func (mux, flow_id, service_index, bytes, bytes_len, mux->datagram_data);
}

void
gt_mux_set_datagrams (GtMux *mux, gboolean datagrams)
{
  g_return_if_fail (GT_IS_MUX (mux));
  mux->datagrams = datagrams;
  if (mux->native != NULL)
    gt_native_streams_set_datagram_func (mux->native, datagrams ? mux_native_datagram_cb : NULL,
                                         mux);
}

gboolean
gt_mux_get_datagrams (GtMux *mux)
{
  g_return_val_if_fail (GT_IS_MUX (mux), FALSE);
  return mux->datagrams;
}

void
gt_mux_set_datagram_func (GtMux *mux, GtMuxDatagramFunc func, gpointer user_data)
{
  g_return_if_fail (GT_IS_MUX (mux));
  mux->datagram_func = func;
  mux->datagram_data = user_data;
}

gboolean
gt_mux_send_datagram (GtMux *mux, guint32 flow_id, guint16 service_index, const guint8 *data,
                      gsize len)
{
  guint8 *frame;

  g_return_val_if_fail (GT_IS_MUX (mux), FALSE);
  g_return_val_if_fail (flow_id != 0, FALSE);
  g_return_val_if_fail (len <= GT_DATAGRAM_MAX_DATA, FALSE);

  if (mux->closed || !mux->datagrams)
    {
      mux->datagrams_dropped++;
      return FALSE;
    }
  if (mux->native != NULL
      && GT_DATAGRAM_PREFIX_SIZE + len <= gt_native_streams_get_max_datagram (mux->native))
    {
      guint8 head[GT_DATAGRAM_PREFIX_SIZE];

      gt_datagram_prefix_encode (head, flow_id, service_index);
      if (gt_native_streams_send_datagram (mux->native, head, sizeof head, data, len))
        {
          mux->datagrams_native++;
          return TRUE;
        }
      mux->datagrams_dropped++;
      return FALSE;
    }
  /* Reliable path: a DATAGRAM frame among the others (on quic://, on the control stream).
   * Like a full socket buffer, a backed-up tunnel drops the datagram instead of queueing it. */
  if (mux_out_bytes (mux) >= OUT_HIGH)
    {
      mux->datagrams_dropped++;
      return FALSE;
    }
  frame = mux->scratch;
  gt_frame_header_encode (frame, GT_FRAME_DATAGRAM, 0, 0,
                          (guint32) (GT_DATAGRAM_PREFIX_SIZE + len));
  gt_datagram_prefix_encode (frame + GT_FRAME_HEADER_SIZE, flow_id, service_index);
  if (len > 0)
    memcpy (frame + GT_FRAME_HEADER_SIZE + GT_DATAGRAM_PREFIX_SIZE, data, len);
  mux_send (mux, frame, GT_FRAME_HEADER_SIZE + GT_DATAGRAM_PREFIX_SIZE + len);
  mux->datagrams_framed++;
  return !mux->closed;
}

void
gt_mux_get_datagram_counts (GtMux *mux, guint64 *native, guint64 *framed, guint64 *dropped)
{
  g_return_if_fail (GT_IS_MUX (mux));
  if (native != NULL)
    *native = mux->datagrams_native;
  if (framed != NULL)
    *framed = mux->datagrams_framed;
  if (dropped != NULL)
    *dropped = mux->datagrams_dropped;
}

gboolean
gt_mux_has_native_streams (GtMux *mux)
{
  g_return_val_if_fail (GT_IS_MUX (mux), FALSE);
  return mux->native != NULL;
}

void
gt_mux_set_forward (GtMux *mux, gboolean forward)
{
  g_return_if_fail (GT_IS_MUX (mux));
  mux->forward = forward;
}

gboolean
gt_mux_get_forward (GtMux *mux)
{
  g_return_val_if_fail (GT_IS_MUX (mux), FALSE);
  return mux->forward;
}

GtMuxStream *
gt_mux_open_forward (GtMux *mux, const char *prefix, int fd, GIOStream *io,
                     guint64 idle_timeout_ms, GError **error)
{
  g_autoptr (GByteArray) f = NULL;
  GtMuxStream *s;

  g_return_val_if_fail (GT_IS_MUX (mux), NULL);
  g_return_val_if_fail (!mux->is_server, NULL);
  g_return_val_if_fail ((fd >= 0) != (io != NULL), NULL);

  if (!gt_forward_prefix_is_valid (prefix))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "bad host prefix '%s': 1 to %u letters, digits or '-'", prefix ? prefix : "",
                   (guint) GT_PREFIX_MAX_LEN);
      return NULL;
    }
  if (!mux->forward)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                           "the server did not accept the forward capability on this tunnel");
      return NULL;
    }
  if (mux->closed || mux->going_away || mux->forward_id >= G_MAXUINT32 - 2)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_CLOSED,
                           "the tunnel takes no new streams");
      return NULL;
    }
  mux->forward_id += 2;
  s = stream_new (mux, mux->forward_id, GT_MUX_FORWARD_SERVICE);
  s->forward = TRUE;
  f = g_byte_array_sized_new (GT_FRAME_HEADER_SIZE + 1 + strlen (prefix));
  gt_frame_append_forward_header (f, s->id, prefix, 0);
  mux_send (mux, f->data, f->len);
  if (mux->closed)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_CLOSED, "the tunnel closed");
      return NULL;
    }
  stream_attach (s, fd, io, idle_timeout_ms);
  return s;
}

void
gt_mux_stream_accept_forward (GtMuxStream *s)
{
  g_autoptr (GByteArray) f = NULL;

  g_return_if_fail (s != NULL);
  g_return_if_fail (s->forward);
  if (s->closed || s->mux == NULL || s->forward_acked)
    return;
  s->forward_acked = TRUE;
  f = g_byte_array_sized_new (GT_FRAME_HEADER_SIZE);
  gt_frame_append_forward_ack (f, s->id);
  mux_send_frame_small (s->mux, f);
}

void
gt_mux_stream_attach_io (GtMuxStream *s, GIOStream *io, guint64 idle_timeout_ms)
{
  g_return_if_fail (s != NULL);
  g_return_if_fail (G_IS_IO_STREAM (io));
  g_return_if_fail (!stream_attached (s));

  if (s->closed)
    return;
  stream_attach (s, -1, io, idle_timeout_ms);
}

gboolean
gt_mux_stream_is_forward (GtMuxStream *s)
{
  return s->forward;
}

gboolean
gt_mux_stream_get_peer_reset (GtMuxStream *s, guint32 *code)
{
  if (s->peer_reset && code != NULL)
    *code = s->peer_reset_code;
  return s->peer_reset;
}

/* ------------------------------------------------------------------------------------------ */
/* Frame handling */

static void
handle_stream_frame (GtMux *mux, const GtFrameHeader *h, const guint8 *p)
{
  GtMuxStream *s = g_hash_table_lookup (mux->streams, GUINT_TO_POINTER (h->stream_id));
  g_autoptr (GError) error = NULL;
  G_GNUC_UNUSED g_autoptr (GtMuxStream) keep = NULL;

  if (s == NULL)
    {
      /* Ids up to the last one opened are streams that ended here: their late frames (in flight
       * when we reset) are dropped. A higher id was never opened. With FORWARD, even ids are the
       * client's and count separately. */
      guint32 highest = mux->is_server ? mux->next_stream_id : mux->last_open_id;

      if (mux->forward && h->stream_id % 2 == 0)
        highest = mux->forward_id;
      if (h->stream_id > highest)
        mux_protocol_error (mux, GT_ERROR_CODE_PROTOCOL,
                            g_error_new (GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                                         "%s for stream %u, which was never opened",
                                         gt_frame_type_to_string (h->type), h->stream_id));
      return;
    }
  keep = gt_mux_stream_ref (s);

  switch (h->type)
    {
    case GT_FRAME_DATA:
      if (s->remote_shut)
        {
          gt_mux_stream_reset (s, GT_RESET_CODE_CLOSED);
          return;
        }
      if ((gint64) h->length > s->recv_credit)
        {
          g_message ("%s: stream %u exceeded its window (%u > %" G_GINT64_FORMAT ")",
                     mux->peer ? mux->peer : "tunnel", s->id, h->length, s->recv_credit);
          gt_mux_stream_reset (s, GT_RESET_CODE_FLOW_CONTROL);
          return;
        }
      s->recv_credit -= h->length;
      s->received_data = TRUE;
      stream_deliver (s, p, h->length);
      break;

    case GT_FRAME_SHUTDOWN:
      s->remote_shut = TRUE;
      stream_maybe_finish (s);
      break;

    case GT_FRAME_WINDOW:
      {
        guint32 inc;

        if (!gt_window_decode (p, h->length, &inc, &error))
          {
            gt_mux_stream_reset (s, GT_RESET_CODE_FLOW_CONTROL);
            return;
          }
        if (s->send_credit + inc > (gint64) G_MAXINT32)
          {
            gt_mux_stream_reset (s, GT_RESET_CODE_FLOW_CONTROL);
            return;
          }
        s->send_credit += inc;
        stream_update_events (s);
      }
      break;

    case GT_FRAME_RESET:
      {
        guint32 code = 0;

        (void) gt_reset_decode (p, h->length, &code, NULL);
        stream_peer_reset (s, code);
      }
      break;

    default:
      g_assert_not_reached ();
    }
}

/* Client: the server opened stream id (OPEN on the tunnel, or at the head of tun, the stream's
 * own transport stream). FALSE when the tunnel closed. */
static gboolean
mux_stream_opened (GtMux *mux, guint32 id, guint16 service_index, const GtOpenAddr *addr,
                   const guint8 *data, gsize data_len, GIOStream *tun)
{
  GtMuxStream *s;
  G_GNUC_UNUSED g_autoptr (GtMuxStream) keep = NULL;

  if (data_len > GT_INITIAL_WINDOW)
    {
      mux_protocol_error (mux, GT_ERROR_CODE_FLOW_CONTROL,
                          g_error_new (GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE,
                                       "OPEN data exceeds the stream window"));
      return FALSE;
    }
  s = stream_new (mux, id, service_index);
  keep = gt_mux_stream_ref (s);
  if (tun != NULL)
    gt_relay_endpoint_attach_io (&s->tun, tun);
  if (addr != NULL)
    s->addr = g_memdup2 (addr, sizeof *addr);
  s->recv_credit -= data_len;
  if (data_len > 0)
    {
      s->received_data = TRUE;
      stream_deliver (s, data, data_len);
    }
  /* After our own GOAWAY the server may have sent OPENs before it saw it: those are served.
   * After the server's, it opens nothing more. */
  if (mux->goaway_received)
    {
      gt_mux_stream_reset (s, GT_RESET_CODE_REFUSED);
      return TRUE;
    }
  g_signal_emit (mux, signals[SIGNAL_STREAM_OPENED], 0, s, (guint) service_index);
  if (!s->closed)
    stream_update_events (s); /* a native stream is read before its socket is attached */
  return !mux->closed;
}

/* Native streams, client: a stream the server opened; its OPEN frame is read before anything. */
typedef struct
{
  GtMux *mux; /* not owned: the mux frees its NativeIncoming before it goes */
  GIOStream *io;
  GSource *source;
  guint8 *buf;
  gsize len, need;
} NativeIncoming;

static void
native_incoming_free (NativeIncoming *in)
{
  if (in->source != NULL)
    {
      g_source_destroy (in->source);
      g_source_unref (in->source);
    }
  if (in->io != NULL)
    {
      gt_relay_endpoint_close_io (in->io);
      g_object_unref (in->io);
    }
  g_free (in->buf);
  g_free (in);
}

static void
native_incoming_fail (NativeIncoming *in, GError *error)
{
  mux_protocol_error (in->mux, GT_ERROR_CODE_PROTOCOL, error);
}

static gboolean
native_incoming_cb (GObject *stream, gpointer user_data)
{
  NativeIncoming *in = user_data;
  GtMux *mux = in->mux;
  G_GNUC_UNUSED g_autoptr (GObject) hold = g_object_ref (G_OBJECT (mux));
  GtFrameHeader h;
  GtOpenAddr addr;
  gboolean has_addr = FALSE;
  guint16 service_index;
  const guint8 *data;
  gsize data_len;

  for (;;)
    {
      g_autoptr (GError) error = NULL;
      gssize n = g_pollable_input_stream_read_nonblocking (
        G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (in->io)), in->buf + in->len,
        in->need - in->len, NULL, &error);

      if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        return G_SOURCE_CONTINUE;
      if (n < 0)
        {
          /* Reset before its OPEN came (the user left at once): nothing to serve. */
          g_debug ("a new stream failed before its OPEN: %s", error->message);
          g_ptr_array_remove_fast (mux->incoming, in);
          return G_SOURCE_REMOVE;
        }
      if (n == 0)
        {
          native_incoming_fail (in, g_error_new_literal (GT_FRAME_ERROR_DOMAIN,
                                                         GT_FRAME_ERROR_MALFORMED,
                                                         "a stream ended before its OPEN frame"));
          return G_SOURCE_REMOVE; /* the teardown freed it */
        }
      in->len += n;
      if (in->len < in->need)
        continue;
      if (gt_frame_header_decode (in->buf, in->len, &h, &error) == GT_DECODE_ERROR)
        {
          native_incoming_fail (in, g_steal_pointer (&error));
          return G_SOURCE_REMOVE;
        }
      if (h.type != GT_FRAME_OPEN)
        {
          native_incoming_fail (in, g_error_new (GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                                                 "a stream starts with %s, not OPEN",
                                                 gt_frame_type_to_string (h.type)));
          return G_SOURCE_REMOVE;
        }
      if (in->need == GT_FRAME_HEADER_SIZE + (gsize) h.length)
        break;
      in->need = GT_FRAME_HEADER_SIZE + (gsize) h.length; /* bounded by the header's check */
      in->buf = g_realloc (in->buf, in->need);
    }
  if (!gt_open_decode_addr (in->buf + GT_FRAME_HEADER_SIZE, h.length, h.flags, &service_index,
                            &addr, &has_addr, &data, &data_len, NULL))
    {
      native_incoming_fail (in, g_error_new_literal (GT_FRAME_ERROR_DOMAIN,
                                                     GT_FRAME_ERROR_MALFORMED, "bad OPEN frame"));
      return G_SOURCE_REMOVE;
    }
  /* Streams arrive in any order: ids need only be new. */
  if (h.stream_id == 0 || g_hash_table_contains (mux->streams, GUINT_TO_POINTER (h.stream_id)))
    {
      native_incoming_fail (in, g_error_new (GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                                             "OPEN for stream %u, which is open already",
                                             h.stream_id));
      return G_SOURCE_REMOVE;
    }
  mux->last_open_id = MAX (mux->last_open_id, h.stream_id);
  {
    g_autoptr (GIOStream) io = g_steal_pointer (&in->io);
    g_autofree guint8 *buf = g_steal_pointer (&in->buf); /* data points into it */

    g_ptr_array_remove_fast (mux->incoming, in); /* destroys this source */
    (void) mux_stream_opened (mux, h.stream_id, service_index, has_addr ? &addr : NULL, data,
                              data_len, io);
  }
  return G_SOURCE_REMOVE;
}

static void
mux_native_accept_cb (GIOStream *stream, gpointer user_data)
{
  GtMux *mux = user_data;
  NativeIncoming *in;

  if (mux->closed)
    return;
  in = g_new0 (NativeIncoming, 1);
  in->mux = mux;
  in->io = g_object_ref (stream);
  in->need = GT_FRAME_HEADER_SIZE;
  in->buf = g_malloc (in->need);
  in->source = gt_pollable_source_for_io (stream, FALSE);
  g_source_set_callback (in->source, (GSourceFunc) (void (*) (void)) native_incoming_cb, in, NULL);
  g_source_attach (in->source, g_main_context_get_thread_default ());
  g_ptr_array_add (mux->incoming, in);
}

/* FORWARD: a client opens a stream to a host prefix (server), or the server's ACK (client). */
static gboolean
handle_forward (GtMux *mux, const GtFrameHeader *h, const guint8 *p)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *prefix = NULL;
  const guint8 *data;
  gsize data_len;
  GtMuxStream *s;
  G_GNUC_UNUSED g_autoptr (GtMuxStream) keep = NULL;

  if (!mux->forward)
    {
      mux_protocol_error (mux, GT_ERROR_CODE_PROTOCOL,
                          g_error_new (GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                                       "FORWARD without the forward capability"));
      return FALSE;
    }
  if (!mux->is_server)
    {
      if (!(h->flags & GT_FRAME_FLAG_ACK) || h->stream_id % 2 != 0
          || h->stream_id > mux->forward_id)
        {
          mux_protocol_error (mux, GT_ERROR_CODE_PROTOCOL,
                              g_error_new (GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                                           "FORWARD from the server for stream %u",
                                           h->stream_id));
          return FALSE;
        }
      s = g_hash_table_lookup (mux->streams, GUINT_TO_POINTER (h->stream_id));
      if (s == NULL || !s->forward || s->forward_acked)
        return TRUE; /* ended here meanwhile (a repeated ACK is as harmless) */
      s->forward_acked = TRUE;
      keep = gt_mux_stream_ref (s);
      g_signal_emit (mux, signals[SIGNAL_FORWARD_ACCEPTED], 0, s);
      return !mux->closed;
    }
  if ((h->flags & GT_FRAME_FLAG_ACK) || h->stream_id % 2 != 0 || h->stream_id <= mux->forward_id)
    {
      mux_protocol_error (mux, GT_ERROR_CODE_PROTOCOL,
                          g_error_new (GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                                       "FORWARD%s for stream %u after stream %u",
                                       (h->flags & GT_FRAME_FLAG_ACK) ? " ACK" : "",
                                       h->stream_id, mux->forward_id));
      return FALSE;
    }
  if (!gt_forward_decode (p, h->length, &prefix, &data, &data_len, &error))
    {
      mux_protocol_error (mux, GT_ERROR_CODE_PROTOCOL, g_steal_pointer (&error));
      return FALSE;
    }
  mux->forward_id = h->stream_id;
  if (data_len > GT_INITIAL_WINDOW)
    {
      mux_protocol_error (mux, GT_ERROR_CODE_FLOW_CONTROL,
                          g_error_new (GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_TOO_LARGE,
                                       "FORWARD data exceeds the stream window"));
      return FALSE;
    }
  s = stream_new (mux, h->stream_id, GT_MUX_FORWARD_SERVICE);
  keep = gt_mux_stream_ref (s);
  s->forward = TRUE;
  s->recv_credit -= data_len;
  if (data_len > 0)
    {
      s->received_data = TRUE;
      stream_deliver (s, data, data_len);
    }
  if (mux->going_away)
    {
      gt_mux_stream_reset (s, GT_RESET_CODE_REFUSED);
      return TRUE;
    }
  g_signal_emit (mux, signals[SIGNAL_FORWARD_OPENED], 0, s, prefix);
  /* Nobody took it: refused rather than left open. */
  if (!s->closed && !stream_attached (s) && !s->forward_acked)
    gt_mux_stream_reset (s, GT_RESET_CODE_REFUSED);
  return !mux->closed;
}

static gboolean
handle_frame (GtMux *mux, const GtFrameHeader *h, const guint8 *p)
{
  g_autoptr (GError) error = NULL;

  switch (h->type)
    {
    case GT_FRAME_DATA:
    case GT_FRAME_SHUTDOWN:
    case GT_FRAME_WINDOW:
    case GT_FRAME_RESET:
    case GT_FRAME_OPEN:
      if (mux->native != NULL)
        {
          mux_protocol_error (mux, GT_ERROR_CODE_PROTOCOL,
                              g_error_new (GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                                           "%s frame on the control stream of a tunnel with "
                                           "native streams", gt_frame_type_to_string (h->type)));
          return FALSE;
        }
      if (h->type != GT_FRAME_OPEN)
        {
          handle_stream_frame (mux, h, p);
          return !mux->closed;
        }
      {
        guint16 service_index;
        const guint8 *data;
        gsize data_len;

        if (mux->is_server)
          {
            mux_protocol_error (mux, GT_ERROR_CODE_PROTOCOL,
                                g_error_new (GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                                             "OPEN from a client"));
            return FALSE;
          }
        GtOpenAddr addr;
        gboolean has_addr = FALSE;

        if (!gt_open_decode_addr (p, h->length, h->flags, &service_index, &addr, &has_addr, &data,
                                  &data_len, &error))
          {
            mux_protocol_error (mux, GT_ERROR_CODE_PROTOCOL, g_steal_pointer (&error));
            return FALSE;
          }
        if (h->stream_id <= mux->last_open_id || (mux->forward && h->stream_id % 2 == 0))
          {
            mux_protocol_error (mux, GT_ERROR_CODE_PROTOCOL,
                                g_error_new (GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                                             "OPEN for stream %u after stream %u", h->stream_id,
                                             mux->last_open_id));
            return FALSE;
          }
        mux->last_open_id = h->stream_id;
        return mux_stream_opened (mux, h->stream_id, service_index, has_addr ? &addr : NULL, data,
                                  data_len, NULL);
      }

    case GT_FRAME_FORWARD:
      return handle_forward (mux, h, p);

    case GT_FRAME_DATAGRAM:
      {
        guint32 flow_id;
        guint16 service_index;
        const guint8 *data;
        gsize data_len;

        if (!mux->datagrams)
          {
            mux_protocol_error (mux, GT_ERROR_CODE_PROTOCOL,
                                g_error_new_literal (GT_FRAME_ERROR_DOMAIN,
                                                     GT_FRAME_ERROR_MALFORMED,
                                                     "DATAGRAM without the datagram "
                                                     "capability"));
            return FALSE;
          }
        if (!gt_datagram_decode (p, h->length, &flow_id, &service_index, &data, &data_len,
                                 &error))
          {
            mux_protocol_error (mux, GT_ERROR_CODE_PROTOCOL, g_steal_pointer (&error));
            return FALSE;
          }
        if (mux->datagram_func != NULL)
          mux->datagram_func (mux, flow_id, service_index, data, data_len, mux->datagram_data);
        return !mux->closed;
      }

    case GT_FRAME_PING:
      /* At most one PONG waits in the queue: a PING that comes while one is still unsent is
       * answered by it (the bytes queued after the last PONG are all that is queued otherwise). */
      if (!(h->flags & GT_FRAME_FLAG_ACK)
          && mux_out_bytes (mux) <= mux->bytes_out - mux->pong_mark)
        {
          guint8 frame[GT_FRAME_HEADER_SIZE + 8];

          gt_frame_header_encode (frame, GT_FRAME_PING, GT_FRAME_FLAG_ACK, 0, 8);
          memcpy (frame + GT_FRAME_HEADER_SIZE, p, 8);
          mux_send (mux, frame, sizeof frame);
          mux->pong_mark = mux->bytes_out;
        }
      return TRUE;

    case GT_FRAME_GOAWAY:
      {
        guint16 code = 0;
        g_autofree char *message = NULL;

        (void) gt_error_decode (p, h->length, &code, &message, NULL);
        if (mux->goaway_received)
          return TRUE;
        mux->goaway_received = TRUE;
        if (mux->is_server && !mux->goaway_sent)
          {
            /* The client drains this tunnel: the answer tells it that no OPEN can follow, so it
             * may close the tunnel once its streams are done. */
            gt_mux_goaway (mux, GT_ERROR_CODE_NONE, "no new streams on this tunnel");
          }
        g_message ("%s: peer is going away: %s", mux->peer ? mux->peer : "tunnel",
                   message && *message ? message : gt_error_code_to_string (code));
        mux->going_away = TRUE;
        g_signal_emit (mux, signals[SIGNAL_GOAWAY], 0);
        if (!mux->is_server && g_hash_table_size (mux->streams) == 0)
          gt_mux_close (mux, GT_ERROR_CODE_NONE, NULL);
        return !mux->closed;
      }

    case GT_FRAME_ERROR:
      {
        guint16 code = 0;
        g_autofree char *message = NULL;

        if (!gt_error_decode (p, h->length, &code, &message, &error))
          {
            mux_fail (mux, g_steal_pointer (&error));
            return FALSE;
          }
        mux_fail (mux, g_error_new (GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                                    "peer error: %s (code %u)",
                                    message && *message ? message : gt_error_code_to_string (code),
                                    code));
        return FALSE;
      }

    case GT_FRAME_HELLO:
    case GT_FRAME_WELCOME:
    default:
      mux_protocol_error (mux, GT_ERROR_CODE_PROTOCOL,
                          g_error_new (GT_FRAME_ERROR_DOMAIN, GT_FRAME_ERROR_MALFORMED,
                                       "unexpected %s frame", gt_frame_type_to_string (h->type)));
      return FALSE;
    }
}

/* Stops reading the tunnel until its output drains (mux_flush schedules the resume). */
static void
mux_pause_input (GtMux *mux)
{
  if (mux->input_paused)
    return;
  mux->input_paused = TRUE;
  g_debug ("%s: output backed up (%" G_GSIZE_FORMAT " bytes): input paused",
           mux->peer ? mux->peer : "tunnel", mux_out_bytes (mux));
  if (mux->in_source)
    {
      g_source_destroy (mux->in_source);
      g_clear_pointer (&mux->in_source, g_source_unref);
    }
}

static gboolean mux_input_ready_cb (GObject *stream, gpointer user_data);

static void
mux_watch_input (GtMux *mux)
{
  mux->in_source = gt_pollable_source_for_io (mux->io, FALSE);
  g_source_set_callback (mux->in_source, (GSourceFunc) (void (*) (void)) mux_input_ready_cb, mux,
                         NULL);
  g_source_attach (mux->in_source, g_main_context_get_thread_default ());
}

static void mux_process (GtMux *mux);

/* From an idle source, not from mux_flush: mux_flush runs inside frame handling. */
static gboolean
mux_resume_cb (gpointer user_data)
{
  GtMux *mux = user_data;
  G_GNUC_UNUSED g_autoptr (GObject) keep = g_object_ref (G_OBJECT (mux));

  g_clear_pointer (&mux->resume_source, g_source_unref);
  if (mux->closed || !mux->input_paused)
    return G_SOURCE_REMOVE;
  mux->input_paused = FALSE;
  g_debug ("%s: input resumed", mux->peer ? mux->peer : "tunnel");
  /* The frames already read come first; they may pause the input again. */
  mux_process (mux);
  if (!mux->closed && !mux->input_paused && mux->in_source == NULL)
    mux_watch_input (mux);
  return G_SOURCE_REMOVE;
}

static void
mux_schedule_resume (GtMux *mux)
{
  if (mux->resume_source != NULL || mux->closed)
    return;
  mux->resume_source = g_idle_source_new ();
  g_source_set_priority (mux->resume_source, G_PRIORITY_DEFAULT);
  g_source_set_callback (mux->resume_source, mux_resume_cb, mux, NULL);
  g_source_attach (mux->resume_source, g_main_context_get_thread_default ());
}

/* Parses and handles every complete frame in the read buffer. */
static void
mux_process (GtMux *mux)
{
  while (!mux->closed && mux->rend - mux->rstart >= GT_FRAME_HEADER_SIZE)
    {
      GtFrameHeader h;
      g_autoptr (GError) error = NULL;
      const guint8 *base = mux->rbuf + mux->rstart;

      if (G_UNLIKELY (mux_out_bytes (mux) >= mux->pause_input_at))
        {
          mux_pause_input (mux);
          break;
        }
      if (gt_frame_header_decode (base, mux->rend - mux->rstart, &h, &error) == GT_DECODE_ERROR)
        {
          mux_protocol_error (mux, GT_ERROR_CODE_PROTOCOL, g_steal_pointer (&error));
          return;
        }
      if (mux->rend - mux->rstart < GT_FRAME_HEADER_SIZE + (gsize) h.length)
        break;
      mux->rstart += GT_FRAME_HEADER_SIZE + h.length;
      if (!handle_frame (mux, &h, base + GT_FRAME_HEADER_SIZE))
        return;
    }
  if (mux->rstart == mux->rend)
    mux->rstart = mux->rend = 0;
}

static gboolean
mux_input_ready_cb (GObject *stream, gpointer user_data)
{
  GtMux *mux = user_data;
  G_GNUC_UNUSED g_autoptr (GObject) keep = g_object_ref (G_OBJECT (mux));
  /* A socket read that returns less than asked means it is drained; TLS and WebSocket streams
   * return one record or message per read, so they are read a few times per wakeup. */
  guint reads_left = mux->in_is_socket ? 4 : 16;

  while (!mux->closed && reads_left-- > 0)
    {
      g_autoptr (GError) error = NULL;
      gsize room;
      gssize n;

      if (RBUF_SIZE - mux->rend < RBUF_READ)
        {
          memmove (mux->rbuf, mux->rbuf + mux->rstart, mux->rend - mux->rstart);
          mux->rend -= mux->rstart;
          mux->rstart = 0;
        }
      room = RBUF_SIZE - mux->rend;
      n = g_pollable_input_stream_read_nonblocking (mux->in, mux->rbuf + mux->rend, room, NULL,
                                                    &error);
      if (n < 0)
        {
          if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
            break;
          mux_fail (mux, g_steal_pointer (&error));
          return G_SOURCE_REMOVE;
        }
      if (n == 0)
        {
          mux_fail (mux, g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                                              "tunnel closed by peer"));
          return G_SOURCE_REMOVE;
        }
      mux->bytes_in += n;
      mux->rend += n;
      mux->last_rx = g_get_monotonic_time ();
      mux->probe_at = 0;
      mux_process (mux);
      if (G_UNLIKELY (mux->input_paused))
        return G_SOURCE_REMOVE; /* mux_pause_input destroyed this source */
      if (mux->in_is_socket && (gsize) n < room)
        break;
    }
  return mux->closed ? G_SOURCE_REMOVE : G_SOURCE_CONTINUE;
}

/* ------------------------------------------------------------------------------------------ */
/* Timers */

static void
mux_send_ping (GtMux *mux, gint64 now)
{
  guint8 frame[GT_FRAME_HEADER_SIZE + 8];
  gint64 stamp = GINT64_TO_BE (now);

  gt_frame_header_encode (frame, GT_FRAME_PING, 0, 0, 8);
  memcpy (frame + GT_FRAME_HEADER_SIZE, &stamp, 8);
  mux_send (mux, frame, sizeof frame);
  mux->last_ping = now;
}

static gboolean
mux_timer_cb (gpointer user_data)
{
  GtMux *mux = user_data;
  G_GNUC_UNUSED g_autoptr (GObject) keep = g_object_ref (G_OBJECT (mux));
  gint64 now = g_get_monotonic_time ();
  GHashTableIter iter;
  gpointer value;
  g_autoptr (GPtrArray) expired = NULL;

  if (mux->closed)
    {
      mux->timer_id = 0;
      return G_SOURCE_REMOVE;
    }
  if (mux->idle_us > 0 && now - mux->last_rx > mux->idle_us)
    {
      mux_fail (mux, g_error_new (G_IO_ERROR, G_IO_ERROR_TIMED_OUT,
                                  "no data from the peer for %" G_GINT64_FORMAT " s",
                                  mux->idle_us / G_USEC_PER_SEC));
      mux->timer_id = 0;
      return G_SOURCE_REMOVE;
    }
  /* While we do not read (our output is backed up), silence proves nothing. */
  if (mux->probe_at != 0 && mux->input_paused)
    mux->probe_at = now;
  if (mux->probe_at != 0 && now - mux->probe_at > mux->probe_us)
    {
      mux_fail (mux, g_error_new (G_IO_ERROR, G_IO_ERROR_TIMED_OUT,
                                  "no answer to a ping for %" G_GINT64_FORMAT " s",
                                  mux->probe_us / G_USEC_PER_SEC));
      mux->timer_id = 0;
      return G_SOURCE_REMOVE;
    }
  if (mux->ping_us > 0 && now - mux->last_ping >= mux->ping_us)
    mux_send_ping (mux, now);

  g_hash_table_iter_init (&iter, mux->streams);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      GtMuxStream *s = value;

      if (s->idle_timeout_us > 0 && stream_attached (s) && now - s->last_activity > s->idle_timeout_us)
        {
          if (expired == NULL)
            expired = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_mux_stream_unref);
          g_ptr_array_add (expired, gt_mux_stream_ref (s));
        }
    }
  for (guint i = 0; expired && i < expired->len; i++)
    {
      GtMuxStream *s = expired->pdata[i];

      g_debug ("stream %u: idle timeout", s->id);
      gt_mux_stream_reset (s, GT_RESET_CODE_TIMEOUT);
    }
  return G_SOURCE_CONTINUE;
}

void
gt_mux_set_keepalive (GtMux *mux, guint64 idle_ms, guint64 ping_ms)
{
  g_return_if_fail (GT_IS_MUX (mux));
  mux->idle_us = (gint64) idle_ms * 1000;
  mux->ping_us = (gint64) ping_ms * 1000;
}

void
gt_mux_probe (GtMux *mux, guint64 timeout_ms)
{
  gint64 now = g_get_monotonic_time ();

  g_return_if_fail (GT_IS_MUX (mux));
  if (mux->closed || mux->probe_at != 0)
    return;
  mux_send_ping (mux, now);
  mux->probe_at = now;
  mux->probe_us = (gint64) timeout_ms * 1000;
}

gboolean
gt_mux_is_probing (GtMux *mux)
{
  g_return_val_if_fail (GT_IS_MUX (mux), FALSE);
  return mux->probe_at != 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Lifecycle */

static void
mux_teardown (GtMux *mux)
{
  g_autoptr (GPtrArray) streams = NULL;
  GHashTableIter iter;
  gpointer value;

  mux->closed = TRUE;
  if (mux->in_source)
    {
      g_source_destroy (mux->in_source);
      g_clear_pointer (&mux->in_source, g_source_unref);
    }
  if (mux->out_source)
    {
      g_source_destroy (mux->out_source);
      g_clear_pointer (&mux->out_source, g_source_unref);
    }
  g_clear_handle_id (&mux->timer_id, g_source_remove);
  g_clear_handle_id (&mux->throttle_id, g_source_remove);
  if (mux->resume_source)
    {
      g_source_destroy (mux->resume_source);
      g_clear_pointer (&mux->resume_source, g_source_unref);
    }

  streams = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_mux_stream_unref);
  g_hash_table_iter_init (&iter, mux->streams);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    g_ptr_array_add (streams, gt_mux_stream_ref (value));
  for (guint i = 0; i < streams->len; i++)
    stream_close (streams->pdata[i]);
  if (mux->native != NULL && !mux->is_server)
    gt_native_streams_set_accept_func (mux->native, NULL, NULL);
  if (mux->native != NULL && mux->datagrams)
    gt_native_streams_set_datagram_func (mux->native, NULL, NULL);
  g_ptr_array_set_size (mux->incoming, 0);
  g_ptr_array_set_size (mux->blocked, 0);
  g_ptr_array_set_size (mux->throttled, 0);

  g_clear_pointer (&mux->out_buf, g_free);
  mux->out_cap = mux->out_start = mux->out_end = 0;
  if (mux->io)
    gt_relay_endpoint_close_io (mux->io);
}

static void
mux_fail (GtMux *mux, GError *error)
{
  g_autoptr (GError) owned = error;

  if (mux->closed)
    return;
  g_object_ref (mux);
  mux_teardown (mux);
  g_signal_emit (mux, signals[SIGNAL_CLOSED], 0, owned);
  g_object_unref (mux);
}

void
gt_mux_close (GtMux *mux, GtErrorCode code, const char *message)
{
  g_return_if_fail (GT_IS_MUX (mux));
  if (mux->closed)
    return;
  if (code != GT_ERROR_CODE_NONE)
    {
      g_autoptr (GByteArray) f = g_byte_array_new ();

      gt_frame_append_error (f, GT_FRAME_ERROR, code, message);
      /* Best effort: whatever is queued plus the error, without waiting. */
      mux_send (mux, f->data, f->len);
      mux_flush (mux);
    }
  mux_fail (mux, g_error_new (G_IO_ERROR, G_IO_ERROR_CLOSED, "%s",
                              message ? message : "tunnel closed"));
}

void
gt_mux_goaway (GtMux *mux, GtErrorCode code, const char *message)
{
  g_autoptr (GByteArray) f = g_byte_array_new ();

  g_return_if_fail (GT_IS_MUX (mux));
  if (mux->closed || mux->goaway_sent)
    return;
  mux->going_away = TRUE;
  mux->goaway_sent = TRUE;
  gt_frame_append_error (f, GT_FRAME_GOAWAY, code, message);
  mux_send (mux, f->data, f->len);
}

void
gt_mux_send_raw (GtMux *mux, const guint8 *data, gsize len)
{
  g_return_if_fail (GT_IS_MUX (mux));
  mux_send (mux, data, len);
}

gboolean
gt_mux_is_closed (GtMux *mux)
{
  return mux->closed;
}

gsize
gt_mux_get_queued_out (GtMux *mux)
{
  return mux_out_bytes (mux);
}

gboolean
gt_mux_is_input_paused (GtMux *mux)
{
  return mux->input_paused;
}

void
_gt_mux_set_input_pause (GtMux *mux, gsize pause_input)
{
  g_return_if_fail (GT_IS_MUX (mux));
  g_return_if_fail (pause_input >= 4);
  mux->pause_input_at = pause_input;
  mux->resume_input_at = pause_input / 4;
}

gboolean
gt_mux_is_going_away (GtMux *mux)
{
  return mux->going_away;
}

gboolean
gt_mux_peer_is_going_away (GtMux *mux)
{
  return mux->goaway_received;
}

guint
gt_mux_get_n_streams (GtMux *mux)
{
  return g_hash_table_size (mux->streams);
}

guint64
gt_mux_get_bytes_in (GtMux *mux)
{
  return mux->bytes_in;
}

guint64
gt_mux_get_bytes_out (GtMux *mux)
{
  return mux->bytes_out;
}

const char *
gt_mux_get_peer (GtMux *mux)
{
  return mux->peer;
}

void
gt_mux_set_peer (GtMux *mux, const char *peer)
{
  g_free (mux->peer);
  mux->peer = g_strdup (peer);
  g_object_notify_by_pspec (G_OBJECT (mux), properties[PROP_PEER]);
}

void
gt_mux_start (GtMux *mux)
{
  g_return_if_fail (GT_IS_MUX (mux));
  g_return_if_fail (mux->in_source == NULL);

  mux->last_rx = mux->last_ping = g_get_monotonic_time ();
  mux_watch_input (mux);
  if (mux->native != NULL && !mux->is_server)
    gt_native_streams_set_accept_func (mux->native, mux_native_accept_cb, mux);
  mux->timer_id = g_timeout_add_seconds (1, mux_timer_cb, mux);
  if (mux->rend > mux->rstart)
    mux_process (mux);
}

GtMux *
gt_mux_new (GIOStream *io, gboolean is_server, const guint8 *preread, gsize preread_len)
{
  GtMux *mux;

  g_return_val_if_fail (G_IS_IO_STREAM (io), NULL);
  g_return_val_if_fail (preread_len <= RBUF_SIZE, NULL);

  mux = g_object_new (GT_TYPE_MUX, NULL);
  mux->io = g_object_ref (io);
  mux->in = G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (io));
  mux->out = G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (io));
  mux->is_server = is_server;
  mux->in_is_socket = G_IS_SOCKET_CONNECTION (io);
  if (GT_IS_NATIVE_STREAMS (io))
    mux->native = GT_NATIVE_STREAMS (io);
  if (preread_len > 0)
    {
      memcpy (mux->rbuf, preread, preread_len);
      mux->rend = preread_len;
    }
  return mux;
}

static void
gt_mux_dispose (GObject *object)
{
  GtMux *mux = GT_MUX (object);

  if (!mux->closed)
    mux_teardown (mux);
  g_clear_object (&mux->io);
  G_OBJECT_CLASS (gt_mux_parent_class)->dispose (object);
}

static void
gt_mux_finalize (GObject *object)
{
  GtMux *mux = GT_MUX (object);

  g_hash_table_unref (mux->streams);
  g_ptr_array_unref (mux->blocked);
  g_ptr_array_unref (mux->throttled);
  g_ptr_array_unref (mux->incoming);
  g_clear_pointer (&mux->rate, g_rc_box_release);
  g_free (mux->rbuf);
  g_free (mux->scratch);
  g_free (mux->peer);
  G_OBJECT_CLASS (gt_mux_parent_class)->finalize (object);
}

static void
gt_mux_get_property (GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
  GtMux *mux = GT_MUX (object);

  switch (prop_id)
    {
    case PROP_N_STREAMS:
      g_value_set_uint (value, g_hash_table_size (mux->streams));
      break;
    case PROP_PEER:
      g_value_set_string (value, mux->peer);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
gt_mux_class_init (GtMuxClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->dispose = gt_mux_dispose;
  object_class->finalize = gt_mux_finalize;
  object_class->get_property = gt_mux_get_property;

  properties[PROP_N_STREAMS] =
    g_param_spec_uint ("n-streams", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);
  properties[PROP_PEER] =
    g_param_spec_string ("peer", NULL, NULL, NULL,
                         G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  /* Client side: a stream was opened by the server for a service. */
  signals[SIGNAL_STREAM_OPENED] =
    g_signal_new ("stream-opened", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL,
                  NULL, G_TYPE_NONE, 2, G_TYPE_POINTER, G_TYPE_UINT);
  /* The tunnel is closed; the GError says why. */
  signals[SIGNAL_CLOSED] =
    g_signal_new ("closed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                  G_TYPE_NONE, 1, G_TYPE_ERROR);
  /* A stream ended (its byte counters are final). */
  signals[SIGNAL_STREAM_CLOSED] =
    g_signal_new ("stream-closed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL,
                  NULL, G_TYPE_NONE, 1, G_TYPE_POINTER);
  /* Server side: a client opened a stream with FORWARD (GtMuxStream *stream, const char *prefix).
   * The handler attaches a socket and accepts it (gt_mux_stream_accept_forward), or resets it. */
  signals[SIGNAL_FORWARD_OPENED] =
    g_signal_new ("forward-opened", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL,
                  NULL, G_TYPE_NONE, 2, G_TYPE_POINTER, G_TYPE_STRING);
  /* Client side: the server answered our FORWARD with ACK (GtMuxStream *stream). */
  signals[SIGNAL_FORWARD_ACCEPTED] =
    g_signal_new ("forward-accepted", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL,
                  NULL, NULL, G_TYPE_NONE, 1, G_TYPE_POINTER);
  /* The peer sent GOAWAY. */
  signals[SIGNAL_GOAWAY] =
    g_signal_new ("goaway", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                  G_TYPE_NONE, 0);
}

static void
gt_mux_init (GtMux *mux)
{
  mux->streams = g_hash_table_new_full (NULL, NULL, NULL, (GDestroyNotify) gt_mux_stream_unref);
  mux->blocked = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_mux_stream_unref);
  mux->throttled = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_mux_stream_unref);
  mux->incoming = g_ptr_array_new_with_free_func ((GDestroyNotify) native_incoming_free);
  mux->pause_input_at = GT_MUX_OUT_PAUSE_INPUT;
  mux->resume_input_at = OUT_RESUME_INPUT;
  mux->rbuf = g_malloc (RBUF_SIZE);
  mux->scratch = g_malloc (GT_FRAME_HEADER_SIZE + GT_MUX_MAX_DATA);
}
