/* gt-fd-source.h: a GSource watching one file descriptor whose events can be changed cheaply. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

typedef void (*GtFdFunc) (int fd, GIOCondition revents, gpointer user_data);

/* Attached to the thread-default main context; destroy with gt_fd_source_free. */
GSource *gt_fd_source_new (int fd, GIOCondition events, GtFdFunc func, gpointer user_data);
void gt_fd_source_set_events (GSource *source, GIOCondition events);
GIOCondition gt_fd_source_get_events (GSource *source);
void gt_fd_source_free (GSource *source);
/* Stops watching for ms milliseconds, then restores the events (no-op while already paused). */
void gt_fd_source_pause (GSource *source, guint ms);
gboolean gt_fd_source_is_paused (GSource *source);

/* The pollable source of a stream on a socket (what g_pollable_*_stream_create_source gives for a
 * GSocketConnection's streams), polling fd itself: GIO's socket source is a child source that
 * GLib blocks for each dispatch, changing the context's poll set and waking it twice (see
 * gt-fd-source.c). Dispatches a GPollableSourceFunc with stream; unattached. */
GSource *gt_pollable_fd_source_new (GObject *stream, int fd, GIOCondition condition,
                                    GCancellable *cancellable);

/* The closure_callback of a GSourceFuncs whose callbacks are GPollableSourceFunc, for
 * g_source_set_closure (libsoup sets closures on the sources of the streams it is given). */
gboolean gt_pollable_source_closure_callback (GObject *stream, gpointer data);

/* The pollable source of io's input (output when output is TRUE): the fd source above for a
 * socket connection, else the stream's own, neither blocked while it dispatches. */
GSource *gt_pollable_source_for_io (GIOStream *io, gboolean output);

/* How long a listener rests after accept() ran out of fds or memory, and how often that is
 * logged (process-wide). */
#define GT_ACCEPT_PAUSE_MS 250
#define GT_ACCEPT_LOG_INTERVAL_MS 10000
/* For accept loops, after accept() failed with err on the listener watched by source (what names
 * it): FALSE for errors of one connection (try the next); otherwise (EMFILE, ENFILE, ENOBUFS, ...)
 * pauses the source for GT_ACCEPT_PAUSE_MS instead of spinning on it, logs at most once per
 * interval, and returns TRUE: stop accepting for now. */
gboolean gt_fd_source_accept_failed (GSource *source, int err, const char *what);

/* Socket helpers on raw non-blocking fds. */
void gt_socket_set_nodelay (int fd);
gboolean gt_socket_set_nonblocking (int fd);

G_END_DECLS
