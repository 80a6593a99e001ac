/* gt-fd-source.c: one persistent GSource per fd, events modified in place (no re-creation). */
#include "config.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "gt-fd-source.h"

typedef struct
{
  GSource source;
  gpointer tag;
  GIOCondition events;
  GtFdFunc func;
  gpointer user_data;
  int fd;
} GtFdSource;

static gboolean
gt_fd_source_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  GtFdSource *self = (GtFdSource *) source;
  GIOCondition revents = g_source_query_unix_fd (source, self->tag);

  if (revents != 0)
    self->func (self->fd, revents, self->user_data);
  return G_SOURCE_CONTINUE;
}

static GSourceFuncs gt_fd_source_funcs = {
  NULL, NULL, gt_fd_source_dispatch, NULL, NULL, NULL,
};

GSource *
gt_fd_source_new (int fd, GIOCondition events, GtFdFunc func, gpointer user_data)
{
  GSource *source = g_source_new (&gt_fd_source_funcs, sizeof (GtFdSource));
  GtFdSource *self = (GtFdSource *) source;

  self->fd = fd;
  self->func = func;
  self->user_data = user_data;
  self->events = events;
  self->tag = g_source_add_unix_fd (source, fd, events);
  g_source_set_can_recurse (source, FALSE);
  g_source_attach (source, g_main_context_get_thread_default ());
  return source;
}

void
gt_fd_source_set_events (GSource *source, GIOCondition events)
{
  GtFdSource *self = (GtFdSource *) source;

  if (self->events == events)
    return;
  self->events = events;
  g_source_modify_unix_fd (source, self->tag, events);
}

GIOCondition
gt_fd_source_get_events (GSource *source)
{
  return ((GtFdSource *) source)->events;
}

void
gt_fd_source_free (GSource *source)
{
  if (source == NULL)
    return;
  g_source_destroy (source);
  g_source_unref (source);
}

void
gt_socket_set_nodelay (int fd)
{
  int one = 1;

  (void) setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

gboolean
gt_socket_set_nonblocking (int fd)
{
  int flags = fcntl (fd, F_GETFL);

  return flags >= 0 && fcntl (fd, F_SETFL, flags | O_NONBLOCK) == 0;
}
