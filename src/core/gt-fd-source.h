/* gt-fd-source.h: a GSource watching one file descriptor whose events can be changed cheaply. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef void (*GtFdFunc) (int fd, GIOCondition revents, gpointer user_data);

/* Attached to the thread-default main context; destroy with gt_fd_source_free. */
GSource *gt_fd_source_new (int fd, GIOCondition events, GtFdFunc func, gpointer user_data);
void gt_fd_source_set_events (GSource *source, GIOCondition events);
GIOCondition gt_fd_source_get_events (GSource *source);
void gt_fd_source_free (GSource *source);

/* Socket helpers on raw non-blocking fds. */
void gt_socket_set_nodelay (int fd);
gboolean gt_socket_set_nonblocking (int fd);

G_END_DECLS
