/* gt-fd-source.h: watches of file descriptors whose events change cheaply; pollable fd sources. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

typedef void (*GtFdFunc) (int fd, GIOCondition revents, gpointer user_data);

/* A watch of one fd in the thread-default main context. All the watches of a context share one
 * GSource (an epoll set, at G_PRIORITY_DEFAULT), so the loop's cost per iteration does not grow
 * with their number. func gets the ready events among those asked for, plus G_IO_HUP and
 * G_IO_ERR whatever was asked (even with events 0, as poll() does). A watch is created, changed
 * and freed by the thread that runs its context; it may be freed from any callback (its own
 * included), and must be freed before its fd is closed. */
typedef struct _GtFdWatch GtFdWatch;

/* How many ready fds one dispatch reports at most; the others come at the next iteration. */
#define GT_FD_HUB_BATCH 256

GtFdWatch *gt_fd_watch_new (int fd, GIOCondition events, GtFdFunc func, gpointer user_data);
/* Watch for exactly these events from now on (0 = none but HUP and ERR); cheap when unchanged. */
void gt_fd_watch_set_events (GtFdWatch *watch, GIOCondition events);
GIOCondition gt_fd_watch_get_events (GtFdWatch *watch);
void gt_fd_watch_free (GtFdWatch *watch);
/* Stops watching for ms milliseconds, then restores the events (no-op while already paused). */
void gt_fd_watch_pause (GtFdWatch *watch, guint ms);
gboolean gt_fd_watch_is_paused (GtFdWatch *watch);

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
/* For accept loops, after accept() failed with err on the listener watched by watch (what names
 * it): FALSE for errors of one connection (try the next); otherwise (EMFILE, ENFILE, ENOBUFS, ...)
 * pauses the watch for GT_ACCEPT_PAUSE_MS instead of spinning on it, logs at most once per
 * interval, and returns TRUE: stop accepting for now. */
gboolean gt_fd_watch_accept_failed (GtFdWatch *watch, int err, const char *what);

/* Socket helpers on raw non-blocking fds. */
void gt_socket_set_nodelay (int fd);
gboolean gt_socket_set_nonblocking (int fd);

G_END_DECLS
