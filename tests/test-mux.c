/* test-mux.c: the multiplexer over a socketpair: relay, half-close, flow control, bad frames,
 * hostile peers. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-frame.h"
#include "gt-mux.h"
#include "gt-mux-private.h"
#include "gt-transport.h"

typedef struct
{
  GtMux *server;
  GtMux *client;
  GPtrArray *local_ends;   /* int fds (as pointers+1) of the "local service" side, by open order */
  GPtrArray *client_streams;
  gboolean client_closed;
  gboolean server_closed;
} Fixture;

static void
set_nonblocking (int fd)
{
  fcntl (fd, F_SETFL, fcntl (fd, F_GETFL) | O_NONBLOCK);
}

static void
stream_opened_cb (GtMux *mux, GtMuxStream *stream, guint service_index, gpointer user_data)
{
  Fixture *f = user_data;
  int sv[2];

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
  set_nonblocking (sv[1]);
  gt_mux_stream_attach_fd (stream, sv[0], 0);
  g_ptr_array_add (f->local_ends, GINT_TO_POINTER (sv[1] + 1));
  g_ptr_array_add (f->client_streams, gt_mux_stream_ref (stream));
}

static void
closed_cb (GtMux *mux, GError *error, gpointer user_data)
{
  *(gboolean *) user_data = TRUE;
}

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  int sv[2];
  g_autoptr (GIOStream) a = NULL;
  g_autoptr (GIOStream) b = NULL;

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
  a = gt_transport_wrap_fd (sv[0], NULL);
  b = gt_transport_wrap_fd (sv[1], NULL);
  g_assert_nonnull (a);
  g_assert_nonnull (b);
  f->server = gt_mux_new (a, TRUE, NULL, 0);
  f->client = gt_mux_new (b, FALSE, NULL, 0);
  f->local_ends = g_ptr_array_new ();
  f->client_streams = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_mux_stream_unref);
  g_signal_connect (f->client, "stream-opened", G_CALLBACK (stream_opened_cb), f);
  g_signal_connect (f->client, "closed", G_CALLBACK (closed_cb), &f->client_closed);
  g_signal_connect (f->server, "closed", G_CALLBACK (closed_cb), &f->server_closed);
  gt_mux_start (f->server);
  gt_mux_start (f->client);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  for (guint i = 0; i < f->local_ends->len; i++)
    close (GPOINTER_TO_INT (f->local_ends->pdata[i]) - 1);
  g_ptr_array_unref (f->local_ends);
  g_ptr_array_unref (f->client_streams);
  g_clear_object (&f->server);
  g_clear_object (&f->client);
  while (g_main_context_iteration (NULL, FALSE))
    ;
}

static int
local_end (Fixture *f, guint i)
{
  return GPOINTER_TO_INT (f->local_ends->pdata[i]) - 1;
}

/* Runs the loop until cond(f) or the deadline; fails on timeout. */
static void
spin_until (gboolean (*cond) (Fixture *, gpointer), Fixture *f, gpointer data)
{
  gint64 deadline = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;

  while (!cond (f, data))
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (NULL, FALSE);
      g_usleep (100);
    }
}

static gboolean
n_local_ends_is (Fixture *f, gpointer data)
{
  return f->local_ends->len == GPOINTER_TO_UINT (data);
}

typedef struct
{
  int fd;
  GByteArray *got;
  gsize want;
  gboolean eof;
} Reader;

static gboolean
reader_done (Fixture *f, gpointer data)
{
  Reader *r = data;
  guint8 buf[65536];
  ssize_t n;

  while ((n = read (r->fd, buf, sizeof buf)) > 0)
    g_byte_array_append (r->got, buf, n);
  if (n == 0)
    r->eof = TRUE;
  return r->eof || (r->want > 0 && r->got->len >= r->want);
}

/* Writes all of data to a non-blocking fd while running the loop (and draining a reader). */
static void
write_all (Fixture *f, int fd, const guint8 *data, gsize len, Reader *drain)
{
  gint64 deadline = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;

  while (len > 0)
    {
      ssize_t n = write (fd, data, len);

      if (n > 0)
        {
          data += n;
          len -= n;
          continue;
        }
      g_assert_true (n < 0 && errno == EAGAIN);
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (NULL, FALSE);
      if (drain)
        reader_done (f, drain);
    }
}

static GByteArray *
pattern (gsize len, guint seed)
{
  GByteArray *b = g_byte_array_sized_new (len);

  g_byte_array_set_size (b, len);
  for (gsize i = 0; i < len; i++)
    b->data[i] = (guint8) ((i * 31 + seed) ^ (i >> 9));
  return b;
}

static gboolean use_io_streams;

static int
open_user_stream (Fixture *f, const char *first, GtMuxStream **stream_out)
{
  int sv[2];
  GtMuxStream *s;

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
  set_nonblocking (sv[1]);
  if (use_io_streams)
    {
      /* The GIOStream path (used after TLS termination) instead of the raw fd fast path. */
      g_autoptr (GIOStream) io = gt_transport_wrap_fd (sv[0], NULL);

      s = gt_mux_open_stream_io (f->server, 0, io, (const guint8 *) first, strlen (first), NULL,
                                 0);
    }
  else
    s = gt_mux_open_stream (f->server, 0, sv[0], (const guint8 *) first, strlen (first), NULL,
                            0);
  g_assert_nonnull (s);
  if (stream_out)
    *stream_out = s;
  return sv[1];
}

static void
test_relay_both_ways (Fixture *f, gconstpointer data)
{
  g_autoptr (GByteArray) up = pattern (3 * 1024 * 1024 + 17, 1);
  g_autoptr (GByteArray) down = pattern (2 * 1024 * 1024 + 5, 2);
  Reader at_local = { 0 }, at_user = { 0 };
  int user = open_user_stream (f, "HEAD", NULL);
  int local;

  spin_until (n_local_ends_is, f, GUINT_TO_POINTER (1));
  local = local_end (f, 0);

  /* The first bytes arrive before anything else. */
  at_local.fd = local;
  at_local.got = g_byte_array_new ();
  at_local.want = 4;
  spin_until (reader_done, f, &at_local);
  g_assert_cmpmem (at_local.got->data, 4, "HEAD", 4);
  g_byte_array_set_size (at_local.got, 0);

  /* Upload with half-close: the local side sees EOF after exactly the bytes sent. */
  at_local.want = 0;
  write_all (f, user, up->data, up->len, &at_local);
  shutdown (user, SHUT_WR);
  spin_until (reader_done, f, &at_local);
  g_assert_cmpmem (at_local.got->data, at_local.got->len, up->data, up->len);

  /* The other direction still works after the half-close. */
  at_user.fd = user;
  at_user.got = g_byte_array_new ();
  write_all (f, local, down->data, down->len, &at_user);
  shutdown (local, SHUT_WR);
  spin_until (reader_done, f, &at_user);
  g_assert_cmpmem (at_user.got->data, at_user.got->len, down->data, down->len);

  /* Both directions ended: the stream is gone on both sides. */
  while (gt_mux_get_n_streams (f->server) > 0 || gt_mux_get_n_streams (f->client) > 0)
    g_main_context_iteration (NULL, TRUE);
  close (user);
  g_byte_array_unref (at_local.got);
  g_byte_array_unref (at_user.got);
}

static void
test_relay_io (Fixture *f, gconstpointer data)
{
  use_io_streams = TRUE;
  test_relay_both_ways (f, data);
  use_io_streams = FALSE;
}

static void
test_stalled_stream (Fixture *f, gconstpointer data)
{
  g_autoptr (GByteArray) big = pattern (8 * 1024 * 1024, 3);
  g_autoptr (GByteArray) other = pattern (4 * 1024 * 1024, 4);
  GtMuxStream *stalled_server = NULL;
  int user_a = open_user_stream (f, "", &stalled_server);
  int user_b;
  gsize pushed = 0;
  gint64 deadline;
  Reader at_b = { 0 };
  GtMuxStream *stalled_client;

  spin_until (n_local_ends_is, f, GUINT_TO_POINTER (1));
  /* Stream A: the user pushes as much as it can; the local side never reads. */
  deadline = g_get_monotonic_time () + 2 * G_USEC_PER_SEC;
  while (g_get_monotonic_time () < deadline && pushed < big->len)
    {
      ssize_t n = write (user_a, big->data + pushed, MIN (big->len - pushed, 65536));

      if (n > 0)
        pushed += n;
      g_main_context_iteration (NULL, FALSE);
    }
  /* Back-pressure reached the user: far less than 8 MiB was accepted. */
  g_assert_cmpuint (pushed, <, big->len);
  stalled_client = f->client_streams->pdata[0];
  g_assert_cmpuint (gt_mux_stream_get_buffered (stalled_client), <=, GT_INITIAL_WINDOW);

  /* Stream B moves 4 MiB meanwhile. */
  user_b = open_user_stream (f, "", NULL);
  spin_until (n_local_ends_is, f, GUINT_TO_POINTER (2));
  at_b.fd = local_end (f, 1);
  at_b.got = g_byte_array_new ();
  write_all (f, user_b, other->data, other->len, &at_b);
  shutdown (user_b, SHUT_WR);
  spin_until (reader_done, f, &at_b);
  g_assert_cmpmem (at_b.got->data, at_b.got->len, other->data, other->len);
  g_assert_cmpuint (gt_mux_stream_get_buffered (stalled_client), <=, GT_INITIAL_WINDOW);
  g_assert_false (gt_mux_stream_is_closed (stalled_server));

  /* Now A's reader wakes up and gets exactly what was pushed, in order. */
  {
    Reader at_a = { local_end (f, 0), g_byte_array_new (), pushed, FALSE };

    spin_until (reader_done, f, &at_a);
    g_assert_cmpmem (at_a.got->data, pushed, big->data, pushed);
    g_byte_array_unref (at_a.got);
  }
  close (user_a);
  close (user_b);
  g_byte_array_unref (at_b.got);
}

static void
test_reset_on_local_close (Fixture *f, gconstpointer data)
{
  int user = open_user_stream (f, "x", NULL);
  Reader at_user = { 0 };

  spin_until (n_local_ends_is, f, GUINT_TO_POINTER (1));
  /* The local service closes both ways: the user sees EOF. */
  close (local_end (f, 0));
  f->local_ends->pdata[0] = GINT_TO_POINTER (open ("/dev/null", O_RDONLY) + 1);
  at_user.fd = user;
  at_user.got = g_byte_array_new ();
  spin_until (reader_done, f, &at_user);
  g_assert_true (at_user.eof);
  g_assert_false (f->client_closed);
  g_assert_false (f->server_closed);
  close (user);
  g_byte_array_unref (at_user.got);
}

static gboolean
client_closed (Fixture *f, gpointer data)
{
  return f->client_closed;
}

static void
test_window_violation (Fixture *f, gconstpointer data)
{
  /* A peer that sends more than the window gets the stream reset, the tunnel survives. */
  int user = open_user_stream (f, "", NULL);
  g_autoptr (GByteArray) frame = g_byte_array_new ();
  guint8 hdr[GT_FRAME_HEADER_SIZE];
  g_autofree guint8 *payload = g_malloc0 (GT_FRAME_MAX_PAYLOAD);

  spin_until (n_local_ends_is, f, GUINT_TO_POINTER (1));
  for (int i = 0; i < 2; i++)
    {
      gt_frame_header_encode (hdr, GT_FRAME_DATA, 0, 1, GT_FRAME_MAX_PAYLOAD);
      gt_mux_send_raw (f->server, hdr, sizeof hdr);
      gt_mux_send_raw (f->server, payload, GT_FRAME_MAX_PAYLOAD);
    }
  {
    gint64 deadline = g_get_monotonic_time () + 2 * G_USEC_PER_SEC;

    while (g_get_monotonic_time () < deadline
           && !gt_mux_stream_is_closed (f->client_streams->pdata[0]))
      g_main_context_iteration (NULL, FALSE);
  }
  g_assert_true (gt_mux_stream_is_closed (f->client_streams->pdata[0]));
  g_assert_false (f->client_closed);
  close (user);
}

static void
test_garbage_closes_tunnel (Fixture *f, gconstpointer data)
{
  static const guint8 junk[GT_FRAME_HEADER_SIZE] = { 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0 };

  gt_mux_send_raw (f->server, junk, sizeof junk);
  spin_until (client_closed, f, NULL);
  g_assert_true (gt_mux_is_closed (f->client));
}

/* ------------------------------------------------------------------------------------------ */
/* A raw peer: the test writes frames to one mux by hand and reads what it answers. */

typedef struct
{
  GtMux *mux;
  int fd;              /* the peer's end (non-blocking) */
  GByteArray *in;      /* bytes read from the mux, not yet parsed */
  gboolean closed;     /* the mux emitted "closed" */
  gboolean eof;
  guint n_pings, n_pongs, n_resets, n_errors;
  guint16 error_code;
  guint8 last_pong[8];
} Peer;

static void
peer_reset_stream_cb (GtMux *mux, GtMuxStream *stream, guint service_index, gpointer user_data)
{
  gt_mux_stream_reset (stream, GT_RESET_CODE_NO_SERVICE);
}

static void
peer_setup (Peer *p, gboolean mux_is_server)
{
  int sv[2];
  g_autoptr (GIOStream) io = NULL;

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
  io = gt_transport_wrap_fd (sv[0], NULL);
  set_nonblocking (sv[1]);
  p->fd = sv[1];
  p->in = g_byte_array_new ();
  p->mux = gt_mux_new (io, mux_is_server, NULL, 0);
  g_signal_connect (p->mux, "closed", G_CALLBACK (closed_cb), &p->closed);
  if (!mux_is_server)
    g_signal_connect (p->mux, "stream-opened", G_CALLBACK (peer_reset_stream_cb), NULL);
  gt_mux_start (p->mux);
}

static void
peer_teardown (Peer *p)
{
  g_clear_object (&p->mux);
  close (p->fd);
  g_byte_array_unref (p->in);
  while (g_main_context_iteration (NULL, FALSE))
    ;
}

/* Reads what is there and counts the frames in it; returns the bytes read. */
static gsize
peer_read (Peer *p)
{
  guint8 buf[65536];
  gsize total = 0;
  ssize_t n;
  GtFrameHeader h;

  while ((n = read (p->fd, buf, sizeof buf)) > 0)
    {
      g_byte_array_append (p->in, buf, n);
      total += n;
    }
  if (n == 0)
    p->eof = TRUE;
  while (gt_frame_header_decode (p->in->data, p->in->len, &h, NULL) == GT_DECODE_OK
         && p->in->len >= GT_FRAME_HEADER_SIZE + h.length)
    {
      const guint8 *payload = p->in->data + GT_FRAME_HEADER_SIZE;

      if (h.type == GT_FRAME_PING && (h.flags & GT_FRAME_FLAG_ACK))
        {
          p->n_pongs++;
          memcpy (p->last_pong, payload, 8);
        }
      else if (h.type == GT_FRAME_PING)
        p->n_pings++;
      else if (h.type == GT_FRAME_RESET)
        p->n_resets++;
      else if (h.type == GT_FRAME_ERROR)
        {
          p->n_errors++;
          g_assert_true (gt_error_decode (payload, h.length, &p->error_code, NULL, NULL));
        }
      g_byte_array_remove_range (p->in, 0, GT_FRAME_HEADER_SIZE + h.length);
    }
  return total;
}

static void
peer_write_all (Peer *p, const guint8 *data, gsize len)
{
  write_all (NULL, p->fd, data, len, NULL);
}

/* Writes one frame with the given payload. */
static void
peer_send (Peer *p, GtFrameType type, guint8 flags, guint32 stream_id, const void *payload,
           gsize len)
{
  guint8 hdr[GT_FRAME_HEADER_SIZE];

  gt_frame_header_encode (hdr, type, flags, stream_id, (guint32) len);
  peer_write_all (p, hdr, sizeof hdr);
  if (len > 0)
    peer_write_all (p, payload, len);
}

static void
peer_send_open (Peer *p, guint32 stream_id)
{
  g_autoptr (GByteArray) f = g_byte_array_new ();

  gt_frame_append_open_header (f, stream_id, 7, 0);
  peer_write_all (p, f->data, f->len);
}

/* Runs the loop (reading from the mux) until cond(p) or 60 s pass (a failure; the floods take
 * a few seconds under sanitizers). */
static void
peer_spin_until (Peer *p, gboolean (*cond) (Peer *, gpointer), gpointer data)
{
  gint64 deadline = g_get_monotonic_time () + 60 * G_USEC_PER_SEC;

  while (peer_read (p), !cond (p, data))
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (NULL, FALSE);
      g_usleep (100);
    }
}

static gboolean
peer_got_error_and_eof (Peer *p, gpointer data)
{
  return p->n_errors > 0 && p->eof && p->closed;
}

static gboolean
peer_got_pong (Peer *p, gpointer data)
{
  return p->n_pongs > 0 && memcmp (p->last_pong, data, 8) == 0;
}

/* The peer floods PINGs and reads nothing: PONGs are coalesced, the queue stays tiny (the
 * defect: one PONG queued per PING, 18 bytes per 18, without limit). Once the peer reads, a
 * fresh PING gets its own PONG. */
static void
test_ping_flood (void)
{
  Peer p = { 0 };
  g_autoptr (GByteArray) block = g_byte_array_new ();
  static const guint8 opaque[8] = "floodin";
  static const guint8 fresh[8] = "fresh!!";
  gsize written = 0, off = 0, max_queued = 0;
  gint64 deadline = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;

  peer_setup (&p, TRUE);
  while (block->len + 18 <= 65536)
    gt_frame_append_ping (block, FALSE, opaque);
  /* 32 MiB of PINGs (~1.9 million), whole blocks, bounded in time. */
  while (written < 32 * 1024 * 1024)
    {
      ssize_t n = write (p.fd, block->data + off, block->len - off);

      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      if (n > 0)
        {
          off = (off + n) % block->len;
          written += n;
        }
      g_main_context_iteration (NULL, FALSE);
      max_queued = MAX (max_queued, gt_mux_get_queued_out (p.mux));
    }
  peer_write_all (&p, block->data + off, off > 0 ? block->len - off : 0);
  g_assert_cmpuint (max_queued, <, 4096);
  g_assert_false (p.closed);

  /* The peer reads now: everything queued drains, a new PING is answered with its own bytes. */
  {
    gint64 quiet_until = g_get_monotonic_time () + 200 * 1000;

    while (g_get_monotonic_time () < quiet_until)
      {
        if (peer_read (&p) > 0 || g_main_context_iteration (NULL, FALSE))
          quiet_until = g_get_monotonic_time () + 200 * 1000;
        g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      }
  }
  g_assert_cmpuint (p.n_pongs, >, 0);
  g_assert_cmpuint (p.n_pongs, <, written / 18 / 10);
  peer_send (&p, GT_FRAME_PING, 0, 0, fresh, 8);
  peer_spin_until (&p, peer_got_pong, (gpointer) fresh);
  g_assert_cmpuint (gt_mux_get_queued_out (p.mux), ==, 0);
  peer_teardown (&p);
}

static gboolean
peer_pings_are (Peer *p, gpointer data)
{
  return p->n_pings == GPOINTER_TO_UINT (data);
}

static gboolean
peer_mux_closed (Peer *p, gpointer data)
{
  return p->closed;
}

/* A probe (the server's check of a client's other tunnels when it opens one): a peer that
 * answers keeps the tunnel; a silent one (a half-open connection) loses it after the probe's
 * time, long before the idle timeout. */
static void
test_probe (void)
{
  static const guint8 opaque[8] = "answer!";
  Peer p = { 0 };
  gint64 start, until;

  peer_setup (&p, TRUE);
  gt_mux_set_keepalive (p.mux, 60000, 0);
  gt_mux_probe (p.mux, 1000);
  g_assert_true (gt_mux_is_probing (p.mux));
  peer_spin_until (&p, peer_pings_are, GUINT_TO_POINTER (1));
  peer_send (&p, GT_FRAME_PING, GT_FRAME_FLAG_ACK, 0, opaque, 8);
  until = g_get_monotonic_time () + 2500 * 1000;
  while (g_get_monotonic_time () < until)
    {
      peer_read (&p);
      g_main_context_iteration (NULL, FALSE);
      g_usleep (1000);
    }
  g_assert_false (p.closed);
  g_assert_false (gt_mux_is_probing (p.mux));

  start = g_get_monotonic_time ();
  gt_mux_probe (p.mux, 1000);
  /* A second probe while one is pending sends nothing more. */
  gt_mux_probe (p.mux, 1000);
  peer_spin_until (&p, peer_mux_closed, NULL);
  g_assert_cmpuint (p.n_pings, ==, 2);
  g_assert_cmpint (g_get_monotonic_time () - start, >=, 1000 * 1000);
  g_assert_cmpint (g_get_monotonic_time () - start, <, 3500 * 1000);
  peer_teardown (&p);
}

static gboolean
peer_resets_are (Peer *p, gpointer data)
{
  return p->n_resets == GPOINTER_TO_UINT (data) && !gt_mux_is_input_paused (p->mux);
}

/* A hostile server floods OPENs the client refuses and reads nothing: each would queue a RESET.
 * The client stops reading the tunnel at the bound, resumes when the peer reads, and answers
 * every OPEN in the end. The bound is lowered to 256 KiB so that the flood stays short (under
 * sanitizers too); the default one is the same code with another number. */
#define TEST_PAUSE (256 * 1024)
static void
test_reset_flood_pauses_input (void)
{
  Peer p = { 0 };
  g_autoptr (GByteArray) block = g_byte_array_new ();
  guint32 next_id = 1;
  gsize off = 0, written = 0, max_queued = 0;
  gint64 deadline = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;
  gint64 stuck_since = 0;
  guint n_opens;

  peer_setup (&p, FALSE);
  _gt_mux_set_input_pause (p.mux, TEST_PAUSE);
  /* Write OPENs until the client has not read anything for 300 ms (at most 200000). */
  while (next_id < 200000)
    {
      ssize_t n;

      if (off == block->len)
        {
          g_byte_array_set_size (block, 0);
          off = 0;
          for (guint i = 0; i < 4096; i++)
            gt_frame_append_open_header (block, next_id++, 7, 0);
        }
      n = write (p.fd, block->data + off, block->len - off);
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      if (n > 0)
        {
          off += n;
          written += n;
          stuck_since = 0;
        }
      else if (stuck_since == 0)
        stuck_since = g_get_monotonic_time ();
      else if (g_get_monotonic_time () - stuck_since > 300 * 1000)
        break;
      g_main_context_iteration (NULL, FALSE);
      max_queued = MAX (max_queued, gt_mux_get_queued_out (p.mux));
    }
  g_assert_cmpuint (max_queued, <=, TEST_PAUSE + 4096);
  g_assert_cmpuint (max_queued, >=, TEST_PAUSE);
  g_assert_true (gt_mux_is_input_paused (p.mux));
  g_assert_false (p.closed);

  /* The peer reads: the input resumes and every complete OPEN gets its RESET. */
  n_opens = written / (GT_FRAME_HEADER_SIZE + GT_OPEN_PREFIX_SIZE);
  peer_spin_until (&p, peer_resets_are, GUINT_TO_POINTER (n_opens));
  g_assert_false (p.closed);
  g_assert_cmpuint (gt_mux_get_n_streams (p.mux), ==, 0);
  peer_teardown (&p);
}

/* DATA (or any stream frame) for an id that was never opened: ERROR PROTOCOL, tunnel closed. */
static void
test_never_opened_stream (gconstpointer data)
{
  gboolean mux_is_server = GPOINTER_TO_INT (data);
  Peer p = { 0 };

  peer_setup (&p, mux_is_server);
  if (!mux_is_server)
    peer_send_open (&p, 1);
  peer_send (&p, GT_FRAME_DATA, 0, 5, "x", 1);
  peer_spin_until (&p, peer_got_error_and_eof, NULL);
  g_assert_cmpuint (p.error_code, ==, GT_ERROR_CODE_PROTOCOL);
  peer_teardown (&p);
}

/* Frames for a stream we reset ourselves may have been in flight: they are ignored. */
static void
test_late_frames_ignored (void)
{
  Peer p = { 0 };
  static const guint8 opaque[8] = "alive??";
  guint8 inc[4] = { 0, 0, 0, 1 };

  peer_setup (&p, FALSE);
  peer_send_open (&p, 1); /* refused by the client: RESET */
  peer_send (&p, GT_FRAME_DATA, 0, 1, "late", 4);
  peer_send (&p, GT_FRAME_WINDOW, 0, 1, inc, 4);
  peer_send (&p, GT_FRAME_SHUTDOWN, 0, 1, NULL, 0);
  peer_send (&p, GT_FRAME_PING, 0, 0, opaque, 8);
  peer_spin_until (&p, peer_got_pong, (gpointer) opaque);
  g_assert_cmpuint (p.n_resets, ==, 1);
  g_assert_cmpuint (p.n_errors, ==, 0);
  g_assert_false (p.closed);
  peer_teardown (&p);
}

/* A bad OPEN is answered with ERROR PROTOCOL: a reused id, an OPEN sent to the server, a
 * truncated OPEN. */
static void
test_bad_open (void)
{
  for (guint i = 0; i < 3; i++)
    {
      Peer p = { 0 };

      peer_setup (&p, i == 1);
      if (i == 0)
        {
          peer_send_open (&p, 2);
          peer_send_open (&p, 2);
        }
      else if (i == 1)
        peer_send_open (&p, 1);
      else
        peer_send (&p, GT_FRAME_OPEN, 0, 1, "\x00", 1);
      peer_spin_until (&p, peer_got_error_and_eof, NULL);
      g_assert_cmpuint (p.error_code, ==, GT_ERROR_CODE_PROTOCOL);
      peer_teardown (&p);
    }
}

static gboolean
peer_went_away (Fixture *f, gpointer data)
{
  return gt_mux_peer_is_going_away (data);
}

/* The local end checks the request it got and answers; the user reads the whole answer. */
static void
answer_request (Fixture *f, guint i, int user, const char *request, const char *answer)
{
  Reader at_local = { local_end (f, i), g_byte_array_new (), strlen (request), FALSE };
  Reader at_user = { user, g_byte_array_new (), strlen (answer), FALSE };

  spin_until (reader_done, f, &at_local);
  g_assert_cmpmem (at_local.got->data, at_local.got->len, request, strlen (request));
  write_all (f, local_end (f, i), (const guint8 *) answer, strlen (answer), NULL);
  spin_until (reader_done, f, &at_user);
  g_assert_cmpmem (at_user.got->data, at_user.got->len, answer, strlen (answer));
  g_byte_array_unref (at_local.got);
  g_byte_array_unref (at_user.got);
}

/* A client that drains sends GOAWAY: an OPEN the server sent before it saw it is still served,
 * the server opens nothing more and answers with its own GOAWAY, and the client closes the tunnel
 * only once the answer came and its streams are done. */
static void
test_client_goaway (Fixture *f, gconstpointer data)
{
  int user1 = open_user_stream (f, "one", NULL);
  int user2;

  spin_until (n_local_ends_is, f, GUINT_TO_POINTER (1));
  /* The client's GOAWAY and the server's next OPEN cross on the wire. */
  gt_mux_goaway (f->client, GT_ERROR_CODE_SHUTTING_DOWN, "client is shutting down");
  user2 = open_user_stream (f, "two", NULL);
  g_assert_true (gt_mux_is_going_away (f->client));
  g_assert_false (gt_mux_peer_is_going_away (f->client));

  spin_until (peer_went_away, f, f->client);
  g_assert_true (gt_mux_peer_is_going_away (f->server));
  g_assert_true (gt_mux_is_going_away (f->server)); /* the server picks other tunnels now */
  spin_until (n_local_ends_is, f, GUINT_TO_POINTER (2));
  g_assert_false (f->client_closed);

  answer_request (f, 1, user2, "two", "answer two");
  answer_request (f, 0, user1, "one", "answer one");
  g_assert_false (f->client_closed);
  /* Both streams end: the client closes the tunnel. */
  close (user1);
  close (user2);
  shutdown (local_end (f, 0), SHUT_WR);
  shutdown (local_end (f, 1), SHUT_WR);
  spin_until (client_closed, f, NULL);
}

static gboolean
any_service_cb (guint service_index, gpointer user_data)
{
  return TRUE;
}

static gboolean
streams_gone (Fixture *f, gpointer data)
{
  return gt_mux_get_n_streams (f->server) == 0 && gt_mux_get_n_streams (f->client) == 0;
}

/* A graceful stop closes connections idle between requests, never a request still waiting for
 * its answer, however long that takes. */
static void
test_idle_reset_spares_requests (Fixture *f, gconstpointer data)
{
  int user = open_user_stream (f, "GET /slow", NULL);
  Reader at_local = { 0 };

  spin_until (n_local_ends_is, f, GUINT_TO_POINTER (1));
  at_local.fd = local_end (f, 0);
  at_local.got = g_byte_array_new ();
  at_local.want = 9;
  spin_until (reader_done, f, &at_local);
  g_usleep (60 * 1000);
  gt_mux_reset_idle_streams (f->server, 50 * 1000, any_service_cb, NULL);
  gt_mux_reset_idle_streams (f->client, 50 * 1000, any_service_cb, NULL);
  g_assert_cmpuint (gt_mux_get_n_streams (f->server), ==, 1);
  g_assert_cmpuint (gt_mux_get_n_streams (f->client), ==, 1);

  /* Answered, then idle: now it goes, on either side. */
  write_all (f, local_end (f, 0), (const guint8 *) "200 OK", 6, NULL);
  {
    Reader at_user = { user, g_byte_array_new (), 6, FALSE };

    spin_until (reader_done, f, &at_user);
    g_byte_array_unref (at_user.got);
  }
  g_usleep (60 * 1000);
  gt_mux_reset_idle_streams (f->client, 50 * 1000, any_service_cb, NULL);
  spin_until (streams_gone, f, NULL);
  close (user);
  g_byte_array_unref (at_local.got);
}

/* ---- FORWARD (docs/protocol.md §6.9) ---- */

typedef struct
{
  char *prefix;       /* of the last FORWARD the server saw */
  GtResetCode refuse; /* 0: accept with a socket pair whose far end goes to far_ends */
  GPtrArray *far_ends;
  GPtrArray *streams;
  guint accepted;     /* client: "forward-accepted" */
  guint32 closed_code;
  gboolean closed_by_reset;
} Forward;

static void
server_forward_cb (GtMux *mux, GtMuxStream *stream, const char *prefix, gpointer user_data)
{
  Forward *fw = user_data;
  int sv[2];

  g_free (fw->prefix);
  fw->prefix = g_strdup (prefix);
  g_ptr_array_add (fw->streams, gt_mux_stream_ref (stream));
  if (fw->refuse != 0)
    {
      gt_mux_stream_reset (stream, fw->refuse);
      return;
    }
  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
  set_nonblocking (sv[1]);
  gt_mux_stream_attach_fd (stream, sv[0], 0);
  g_ptr_array_add (fw->far_ends, GINT_TO_POINTER (sv[1] + 1));
  gt_mux_stream_accept_forward (stream);
}

static void
client_forward_accepted_cb (GtMux *mux, GtMuxStream *stream, gpointer user_data)
{
  ((Forward *) user_data)->accepted++;
}

static void
client_stream_closed_cb (GtMux *mux, GtMuxStream *stream, gpointer user_data)
{
  Forward *fw = user_data;

  if (gt_mux_stream_is_forward (stream))
    fw->closed_by_reset = gt_mux_stream_get_peer_reset (stream, &fw->closed_code);
}

static void
forward_setup (Fixture *f, Forward *fw)
{
  fw->far_ends = g_ptr_array_new ();
  fw->streams = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_mux_stream_unref);
  gt_mux_set_forward (f->server, TRUE);
  gt_mux_set_forward (f->client, TRUE);
  g_signal_connect (f->server, "forward-opened", G_CALLBACK (server_forward_cb), fw);
  g_signal_connect (f->client, "forward-accepted", G_CALLBACK (client_forward_accepted_cb), fw);
  g_signal_connect (f->client, "stream-closed", G_CALLBACK (client_stream_closed_cb), fw);
}

/* fw lives on the test's stack: the muxes outlive it until the fixture's teardown. */
static void
forward_teardown (Fixture *f, Forward *fw)
{
  g_signal_handlers_disconnect_by_data (f->server, fw);
  g_signal_handlers_disconnect_by_data (f->client, fw);
  for (guint i = 0; i < fw->far_ends->len; i++)
    close (GPOINTER_TO_INT (fw->far_ends->pdata[i]) - 1);
  g_ptr_array_unref (fw->far_ends);
  g_ptr_array_unref (fw->streams);
  g_free (fw->prefix);
}

static gboolean
forward_accepted_is (Fixture *f, gpointer data)
{
  gpointer *args = data;

  return ((Forward *) args[0])->accepted == GPOINTER_TO_UINT (args[1]);
}

/* A client-opened stream relays both ways with half-close, next to server-opened ones: the
 * server's ids are odd, the client's even, and neither side mixes them up. */
static void
test_forward_relay (Fixture *f, gconstpointer data)
{
  Forward fw = { 0 };
  g_autoptr (GByteArray) up = pattern (700 * 1024 + 3, 5);
  g_autoptr (GByteArray) down = pattern (600 * 1024 + 1, 6);
  g_autoptr (GError) error = NULL;
  Reader at_far = { 0 }, at_near = { 0 };
  GtMuxStream *s1, *s2, *fs;
  gpointer args[2] = { &fw, GUINT_TO_POINTER (1) };
  int sv[2], near, far;

  forward_setup (f, &fw);
  /* Server-opened streams first and after: ids 1 and 3. */
  close (open_user_stream (f, "A", &s1));
  g_assert_cmpuint (gt_mux_stream_get_id (s1), ==, 1);

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
  set_nonblocking (sv[1]);
  near = sv[1];
  fs = gt_mux_open_forward (f->client, "SvC", sv[0], NULL, 0, &error);
  g_assert_no_error (error);
  g_assert_nonnull (fs);
  g_assert_cmpuint (gt_mux_stream_get_id (fs), ==, 2);
  g_assert_true (gt_mux_stream_is_forward (fs));
  close (open_user_stream (f, "B", &s2));
  g_assert_cmpuint (gt_mux_stream_get_id (s2), ==, 3);

  spin_until (forward_accepted_is, f, args);
  g_assert_cmpstr (fw.prefix, ==, "svc");
  g_assert_cmpuint (fw.far_ends->len, ==, 1);
  far = GPOINTER_TO_INT (fw.far_ends->pdata[0]) - 1;

  at_far.fd = far;
  at_far.got = g_byte_array_new ();
  write_all (f, near, up->data, up->len, &at_far);
  shutdown (near, SHUT_WR);
  spin_until (reader_done, f, &at_far);
  g_assert_cmpmem (at_far.got->data, at_far.got->len, up->data, up->len);

  at_near.fd = near;
  at_near.got = g_byte_array_new ();
  write_all (f, far, down->data, down->len, &at_near);
  shutdown (far, SHUT_WR);
  spin_until (reader_done, f, &at_near);
  g_assert_cmpmem (at_near.got->data, at_near.got->len, down->data, down->len);
  g_assert_false (fw.closed_by_reset);

  /* The next client stream is 4. */
  {
    int sv2[2];
    GtMuxStream *next;

    g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM, 0, sv2), ==, 0);
    next = gt_mux_open_forward (f->client, "svc", sv2[0], NULL, 0, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (gt_mux_stream_get_id (next), ==, 4);
    close (sv2[1]);
  }
  g_assert_false (f->client_closed);
  g_assert_false (f->server_closed);
  close (near);
  g_byte_array_unref (at_far.got);
  g_byte_array_unref (at_near.got);
  forward_teardown (f, &fw);
}

static gboolean
forward_closed (Fixture *f, gpointer data)
{
  return ((Forward *) data)->closed_by_reset;
}

/* A refused FORWARD ends the client's stream with the server's code; no ACK comes. */
static void
test_forward_refused (Fixture *f, gconstpointer data)
{
  Forward fw = { 0 };
  g_autoptr (GError) error = NULL;
  Reader at_near = { 0 };
  int sv[2];

  forward_setup (f, &fw);
  fw.refuse = GT_RESET_CODE_NOT_ALLOWED;
  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
  set_nonblocking (sv[1]);
  g_assert_nonnull (gt_mux_open_forward (f->client, "svc", sv[0], NULL, 0, &error));
  spin_until (forward_closed, f, &fw);
  g_assert_cmpuint (fw.closed_code, ==, GT_RESET_CODE_NOT_ALLOWED);
  g_assert_cmpuint (fw.accepted, ==, 0);
  /* The local end sees the end of the stream. */
  at_near.fd = sv[1];
  at_near.got = g_byte_array_new ();
  spin_until (reader_done, f, &at_near);
  g_assert_cmpuint (at_near.got->len, ==, 0);
  g_assert_false (f->client_closed);
  close (sv[1]);
  g_byte_array_unref (at_near.got);
  forward_teardown (f, &fw);
}

/* Without the capability: the client API refuses (and leaves the fd to the caller); a FORWARD
 * that arrives anyway is a protocol error, as is the server's ACK to a client without it. */
static void
test_forward_without_capability (void)
{
  for (guint i = 0; i < 2; i++)
    {
      Peer p = { 0 };

      peer_setup (&p, i == 0);
      if (i == 0)
        peer_send (&p, GT_FRAME_FORWARD, 0, 2, "\x03svc", 4);
      else
        {
          g_autoptr (GError) error = NULL;
          int sv[2];

          g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
          g_assert_null (gt_mux_open_forward (p.mux, "svc", sv[0], NULL, 0, &error));
          g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED);
          g_assert_cmpint (fcntl (sv[0], F_GETFD), >=, 0); /* still ours */
          close (sv[0]);
          close (sv[1]);
          peer_send (&p, GT_FRAME_FORWARD, GT_FRAME_FLAG_ACK, 2, NULL, 0);
        }
      peer_spin_until (&p, peer_got_error_and_eof, NULL);
      g_assert_cmpuint (p.error_code, ==, GT_ERROR_CODE_PROTOCOL);
      peer_teardown (&p);
    }
}

/* With the capability, ids keep to their parity: an odd or repeated FORWARD id, an even OPEN,
 * an ACK for a stream never opened, a stream frame above the client's highest id: each closes
 * the tunnel with ERROR PROTOCOL. */
static void
test_forward_bad_ids (void)
{
  for (guint i = 0; i < 5; i++)
    {
      Peer p = { 0 };
      gboolean server = i != 2 && i != 3;

      peer_setup (&p, server);
      gt_mux_set_forward (p.mux, TRUE);
      if (server)
        g_signal_connect (p.mux, "forward-opened", G_CALLBACK (peer_reset_stream_cb), NULL);
      switch (i)
        {
        case 0: /* odd FORWARD id */
          peer_send (&p, GT_FRAME_FORWARD, 0, 1, "\x03svc", 4);
          break;
        case 1: /* the same id twice */
          peer_send (&p, GT_FRAME_FORWARD, 0, 2, "\x03svc", 4);
          peer_send (&p, GT_FRAME_FORWARD, 0, 2, "\x03svc", 4);
          break;
        case 2: /* OPEN with an even id */
          peer_send_open (&p, 2);
          break;
        case 3: /* ACK for a FORWARD never sent */
          peer_send (&p, GT_FRAME_FORWARD, GT_FRAME_FLAG_ACK, 2, NULL, 0);
          break;
        default: /* DATA above the client's highest id */
          peer_send (&p, GT_FRAME_FORWARD, 0, 2, "\x03svc", 4);
          peer_send (&p, GT_FRAME_DATA, 0, 6, "x", 1);
          break;
        }
      peer_spin_until (&p, peer_got_error_and_eof, NULL);
      g_assert_cmpuint (p.error_code, ==, GT_ERROR_CODE_PROTOCOL);
      peer_teardown (&p);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Datagrams (docs/protocol.md §6.12) */

typedef struct
{
  guint32 flow_id;
  guint16 service_index;
  GBytes *bytes;
} Datagram;

static void
datagram_free (gpointer data)
{
  Datagram *d = data;

  g_bytes_unref (d->bytes);
  g_free (d);
}

static void
collect_datagram_cb (GtMux *mux, guint32 flow_id, guint16 service_index, const guint8 *data,
                     gsize len, gpointer user_data)
{
  Datagram *d = g_new0 (Datagram, 1);

  d->flow_id = flow_id;
  d->service_index = service_index;
  d->bytes = g_bytes_new (data, len);
  g_ptr_array_add (user_data, d);
}

static gboolean
array_len_is (Fixture *f, gpointer data)
{
  gpointer *args = data;

  return ((GPtrArray *) args[0])->len == GPOINTER_TO_UINT (args[1]);
}

/* Datagrams of every size both ways, whole and in order, among stream frames. */
static void
test_datagram_relay (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) at_client = g_ptr_array_new_with_free_func (datagram_free);
  g_autoptr (GPtrArray) at_server = g_ptr_array_new_with_free_func (datagram_free);
  const gsize sizes[] = { 0, 1, 1200, 9000, 65000, GT_DATAGRAM_MAX_DATA };
  guint64 native = 9, framed = 0, dropped = 9;

  gt_mux_set_datagrams (f->server, TRUE);
  gt_mux_set_datagrams (f->client, TRUE);
  g_assert_true (gt_mux_get_datagrams (f->client));
  gt_mux_set_datagram_func (f->server, collect_datagram_cb, at_server);
  gt_mux_set_datagram_func (f->client, collect_datagram_cb, at_client);
  for (guint i = 0; i < G_N_ELEMENTS (sizes); i++)
    {
      g_autoptr (GByteArray) down = pattern (sizes[i], i);
      g_autoptr (GByteArray) up = pattern (sizes[i], 100 + i);

      g_assert_true (gt_mux_send_datagram (f->server, 1 + i, 3, down->data, down->len));
      g_assert_true (gt_mux_send_datagram (f->client, 1 + i, 3, up->data, up->len));
    }
  {
    gpointer a[] = { at_client, GUINT_TO_POINTER (G_N_ELEMENTS (sizes)) };
    gpointer b[] = { at_server, GUINT_TO_POINTER (G_N_ELEMENTS (sizes)) };

    spin_until (array_len_is, f, a);
    spin_until (array_len_is, f, b);
  }
  for (guint i = 0; i < G_N_ELEMENTS (sizes); i++)
    {
      g_autoptr (GByteArray) down = pattern (sizes[i], i);
      g_autoptr (GByteArray) up = pattern (sizes[i], 100 + i);
      Datagram *c = at_client->pdata[i], *s = at_server->pdata[i];

      g_assert_cmpuint (c->flow_id, ==, 1 + i);
      g_assert_cmpuint (c->service_index, ==, 3);
      g_assert_cmpmem (g_bytes_get_data (c->bytes, NULL), g_bytes_get_size (c->bytes),
                       down->data, down->len);
      g_assert_cmpuint (s->flow_id, ==, 1 + i);
      g_assert_cmpmem (g_bytes_get_data (s->bytes, NULL), g_bytes_get_size (s->bytes), up->data,
                       up->len);
    }
  gt_mux_get_datagram_counts (f->server, &native, &framed, &dropped);
  g_assert_cmpuint (native, ==, 0);
  g_assert_cmpuint (framed, ==, G_N_ELEMENTS (sizes));
  g_assert_cmpuint (dropped, ==, 0);
  g_assert_false (f->client_closed || f->server_closed);
}

/* DATAGRAM without the capability, or with flow id 0, is a protocol error for the tunnel; a mux
 * without the capability sends none. */
static void
test_datagram_bad (void)
{
  for (guint i = 0; i < 3; i++)
    {
      static const guint8 good[] = { 0, 0, 0, 1, 0, 0, 'x' };
      static const guint8 flow0[] = { 0, 0, 0, 0, 0, 0, 'x' };
      Peer p = { 0 };

      peer_setup (&p, i != 1);
      if (i == 2)
        gt_mux_set_datagrams (p.mux, TRUE);
      else
        g_assert_false (gt_mux_send_datagram (p.mux, 1, 0, (const guint8 *) "x", 1));
      peer_send (&p, GT_FRAME_DATAGRAM, 0, 0, i == 2 ? flow0 : good, sizeof good);
      peer_spin_until (&p, peer_got_error_and_eof, NULL);
      g_assert_cmpuint (p.error_code, ==, GT_ERROR_CODE_PROTOCOL);
      peer_teardown (&p);
    }
}

/* A peer that reads nothing: datagrams are dropped once the output is backed up, never queued
 * without bound. */
static void
test_datagram_backed_up (void)
{
  g_autoptr (GByteArray) big = pattern (GT_DATAGRAM_MAX_DATA, 5);
  guint64 native = 0, framed = 0, dropped = 0;
  Peer p = { 0 };

  peer_setup (&p, TRUE);
  gt_mux_set_datagrams (p.mux, TRUE);
  for (guint i = 0; i < 200; i++)
    {
      gt_mux_send_datagram (p.mux, 1, 0, big->data, big->len);
      g_main_context_iteration (NULL, FALSE);
      g_assert_cmpuint (gt_mux_get_queued_out (p.mux), <,
                        1024 * 1024 + GT_FRAME_HEADER_SIZE + GT_DATAGRAM_MAX_PAYLOAD);
    }
  gt_mux_get_datagram_counts (p.mux, &native, &framed, &dropped);
  g_assert_cmpuint (framed + dropped, ==, 200);
  g_assert_cmpuint (dropped, >, 100);
  g_assert_false (p.closed);
  peer_teardown (&p);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add ("/gt/protocol/mux/relay-both-ways", Fixture, NULL, fixture_setup,
              test_relay_both_ways, fixture_teardown);
  g_test_add ("/gt/protocol/mux/relay-io-stream", Fixture, NULL, fixture_setup, test_relay_io,
              fixture_teardown);
  g_test_add ("/gt/protocol/mux/stalled-stream", Fixture, NULL, fixture_setup,
              test_stalled_stream, fixture_teardown);
  g_test_add ("/gt/protocol/mux/local-close", Fixture, NULL, fixture_setup,
              test_reset_on_local_close, fixture_teardown);
  g_test_add ("/gt/protocol/mux/window-violation", Fixture, NULL, fixture_setup,
              test_window_violation, fixture_teardown);
  g_test_add ("/gt/protocol/mux/garbage", Fixture, NULL, fixture_setup,
              test_garbage_closes_tunnel, fixture_teardown);
  g_test_add_func ("/gt/protocol/mux/ping-flood", test_ping_flood);
  g_test_add_func ("/gt/protocol/mux/reset-flood-pauses-input", test_reset_flood_pauses_input);
  g_test_add_data_func ("/gt/protocol/mux/never-opened/server", GINT_TO_POINTER (TRUE),
                        test_never_opened_stream);
  g_test_add_data_func ("/gt/protocol/mux/never-opened/client", GINT_TO_POINTER (FALSE),
                        test_never_opened_stream);
  g_test_add_func ("/gt/protocol/mux/late-frames-ignored", test_late_frames_ignored);
  g_test_add_func ("/gt/protocol/mux/bad-open", test_bad_open);
  g_test_add ("/gt/protocol/mux/forward/relay", Fixture, NULL, fixture_setup, test_forward_relay,
              fixture_teardown);
  g_test_add ("/gt/protocol/mux/forward/refused", Fixture, NULL, fixture_setup,
              test_forward_refused, fixture_teardown);
  g_test_add_func ("/gt/protocol/mux/forward/without-capability",
                   test_forward_without_capability);
  g_test_add_func ("/gt/protocol/mux/forward/bad-ids", test_forward_bad_ids);
  g_test_add_func ("/gt/protocol/mux/probe", test_probe);
  g_test_add ("/gt/protocol/mux/client-goaway", Fixture, NULL, fixture_setup, test_client_goaway,
              fixture_teardown);
  g_test_add ("/gt/protocol/mux/datagram/relay", Fixture, NULL, fixture_setup,
              test_datagram_relay, fixture_teardown);
  g_test_add_func ("/gt/protocol/mux/datagram/bad", test_datagram_bad);
  g_test_add_func ("/gt/protocol/mux/datagram/backed-up", test_datagram_backed_up);
  g_test_add ("/gt/protocol/mux/idle-reset-spares-requests", Fixture, NULL, fixture_setup,
              test_idle_reset_spares_requests, fixture_teardown);
  return g_test_run ();
}
