/* fuzz-mux.c: libFuzzer target for the multiplexer reading a peer's frames after the handshake:
 * stream state (OPEN, DATA, FIN, RESET, WINDOW), flow-control bounds, PING, GOAWAY, ERROR,
 * DATAGRAM. The first input byte picks the side, what the client does with opened streams and
 * whether datagrams were agreed on (then each one that arrives is sent back); the rest arrives on
 * the tunnel socket, which then reaches end of file. */
#include "config.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-mux.h"
#include "gt-transport.h"

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

/* Main-loop turns per input: enough for the mux to read everything and close on end of file. */
#define MAX_TURNS 2000

typedef struct
{
  GArray *local_fds; /* our ends of the sockets attached to opened streams */
  gboolean attach;
  gboolean closed;
} Run;

static void
set_nonblocking (int fd)
{
  fcntl (fd, F_SETFL, fcntl (fd, F_GETFL) | O_NONBLOCK);
}

static void
drain (int fd)
{
  guint8 buf[65536];

  while (read (fd, buf, sizeof buf) > 0)
    ;
}

static void
stream_opened_cb (GtMux *mux, GtMuxStream *stream, guint service_index, gpointer user_data)
{
  Run *run = user_data;
  int sv[2];

  if (!run->attach || socketpair (AF_UNIX, SOCK_STREAM, 0, sv) != 0)
    {
      gt_mux_stream_reset (stream, GT_RESET_CODE_NO_SERVICE);
      return;
    }
  set_nonblocking (sv[1]);
  gt_mux_stream_attach_fd (stream, sv[0], 0);
  g_array_append_val (run->local_fds, sv[1]);
}

static void
datagram_cb (GtMux *mux, guint32 flow_id, guint16 service_index, const guint8 *data, gsize len,
             gpointer user_data)
{
  if (flow_id == 0 || len > GT_DATAGRAM_MAX_DATA)
    abort ();
  gt_mux_send_datagram (mux, flow_id, service_index, data, len);
}

static void
closed_cb (GtMux *mux, GError *error, gpointer user_data)
{
  ((Run *) user_data)->closed = TRUE;
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  Run run = { 0 };
  g_autoptr (GIOStream) io = NULL;
  g_autoptr (GtMux) mux = NULL;
  int sv[2];
  gsize off = 0;
  guint8 mode;

  /* Bounded by the socket buffer, so that the whole input can be written before the loop. */
  if (size < 1 || size > 128 * 1024)
    return 0;
  mode = data[0];
  data++;
  size--;
  if (socketpair (AF_UNIX, SOCK_STREAM, 0, sv) != 0)
    abort ();
  io = gt_transport_wrap_fd (sv[0], NULL);
  if (io == NULL)
    abort ();
  set_nonblocking (sv[1]);
  run.local_fds = g_array_new (FALSE, FALSE, sizeof (int));
  run.attach = (mode & 2) != 0;
  mux = gt_mux_new (io, (mode & 1) != 0, NULL, 0);
  g_signal_connect (mux, "stream-opened", G_CALLBACK (stream_opened_cb), &run);
  g_signal_connect (mux, "closed", G_CALLBACK (closed_cb), &run);
  if (mode & 4)
    {
      gt_mux_set_datagrams (mux, TRUE);
      gt_mux_set_datagram_func (mux, datagram_cb, NULL);
    }
  gt_mux_start (mux);

  for (int turn = 0; turn < MAX_TURNS && !run.closed; turn++)
    {
      if (off < size)
        {
          ssize_t n = write (sv[1], data + off, size - off);

          if (n > 0)
            off += n;
          if (off == size)
            shutdown (sv[1], SHUT_WR);
        }
      else if (size == 0 && turn == 0)
        shutdown (sv[1], SHUT_WR);
      drain (sv[1]);
      for (guint i = 0; i < run.local_fds->len; i++)
        drain (g_array_index (run.local_fds, int, i));
      g_main_context_iteration (NULL, FALSE);
    }
  /* What the mux reports never exceeds what it was given. */
  if (gt_mux_get_bytes_in (mux) > size)
    abort ();

  g_clear_object (&mux);
  close (sv[1]);
  for (guint i = 0; i < run.local_fds->len; i++)
    close (g_array_index (run.local_fds, int, i));
  g_array_unref (run.local_fds);
  while (g_main_context_iteration (NULL, FALSE))
    ;
  return 0;
}
