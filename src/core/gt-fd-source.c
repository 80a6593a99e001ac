/* gt-fd-source.c: one persistent GSource per fd, events modified in place (no re-creation). */

/* The source polls its own GPollFD (g_source_add_poll) rather than a g_source_add_unix_fd tag: GLib
 * 2.74's g_source_modify_unix_fd wakes the context (an eventfd write, then a read and one more
 * poll() by the loop) on every change, even from the context's own thread, where the next
 * iteration reads the new events anyway. A relay changes a socket's events several times per
 * chunk it moves, so those wakeups were a third of a tunnel's syscalls. Events are only changed
 * from the thread that runs the source's context (as for every gt source). */
#include "config.h"

#define G_LOG_DOMAIN "gt"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "gt-fd-source.h"

typedef struct
{
  GSource source;
  GPollFD pfd;
  GIOCondition events;
  GtFdFunc func;
  gpointer user_data;
  int fd;
  GSource *resume; /* while paused: the timer that restores events */
  GIOCondition paused_events;
} GtFdSource;

static gboolean
gt_fd_source_check (GSource *source)
{
  GtFdSource *self = (GtFdSource *) source;

  /* poll() reports HUP and ERR whatever was asked, as g_source_query_unix_fd would. */
  return (self->pfd.revents & (self->pfd.events | G_IO_HUP | G_IO_ERR | G_IO_NVAL)) != 0;
}

static gboolean
gt_fd_source_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  GtFdSource *self = (GtFdSource *) source;
  GIOCondition revents = self->pfd.revents & (self->pfd.events | G_IO_HUP | G_IO_ERR | G_IO_NVAL);

  self->pfd.revents = 0;
  if (revents != 0)
    self->func (self->fd, revents, self->user_data);
  return G_SOURCE_CONTINUE;
}

static void
gt_fd_source_finalize (GSource *source)
{
  GtFdSource *self = (GtFdSource *) source;

  if (self->resume != NULL)
    {
      g_source_destroy (self->resume);
      g_clear_pointer (&self->resume, g_source_unref);
    }
}

static GSourceFuncs gt_fd_source_funcs = {
  NULL, gt_fd_source_check, gt_fd_source_dispatch, gt_fd_source_finalize, NULL, NULL,
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
  self->pfd.fd = fd;
  self->pfd.events = events;
  g_source_add_poll (source, &self->pfd);
  /* GLib blocks a source that cannot recurse for the time of its dispatch: it takes the source's
   * fds out of the context's poll set and puts them back after, each time waking the context (an
   * eventfd write, a read and one more poll()). gt never runs a nested main loop, so no dispatch
   * can recurse into itself and the block buys nothing. */
  g_source_set_can_recurse (source, TRUE);
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
  /* Read by the loop at its next iteration; no wakeup needed from the owning thread. */
  self->pfd.events = events;
}

GIOCondition
gt_fd_source_get_events (GSource *source)
{
  return ((GtFdSource *) source)->events;
}

void
gt_fd_source_free (GSource *source)
{
  GtFdSource *self = (GtFdSource *) source;

  if (source == NULL)
    return;
  if (self->resume != NULL)
    {
      g_source_destroy (self->resume);
      g_clear_pointer (&self->resume, g_source_unref);
    }
  g_source_destroy (source);
  g_source_unref (source);
}

static gboolean
gt_fd_source_resume_cb (gpointer user_data)
{
  GtFdSource *self = user_data;

  g_clear_pointer (&self->resume, g_source_unref);
  gt_fd_source_set_events ((GSource *) self, self->paused_events);
  return G_SOURCE_REMOVE;
}

void
gt_fd_source_pause (GSource *source, guint ms)
{
  GtFdSource *self = (GtFdSource *) source;

  if (self->resume != NULL)
    return;
  self->paused_events = self->events;
  gt_fd_source_set_events (source, 0);
  self->resume = g_timeout_source_new (ms);
  g_source_set_callback (self->resume, gt_fd_source_resume_cb, self, NULL);
  g_source_attach (self->resume, g_source_get_context (source));
}

gboolean
gt_fd_source_is_paused (GSource *source)
{
  return ((GtFdSource *) source)->resume != NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Pollable sources on a socket fd */

typedef struct
{
  GSource source;
  GObject *stream;
  GPollFD pfd;
} PollableFdSource;

static gboolean
pollable_fd_check (GSource *source)
{
  PollableFdSource *self = (PollableFdSource *) source;

  return (self->pfd.revents & (self->pfd.events | G_IO_HUP | G_IO_ERR | G_IO_NVAL)) != 0;
}

static gboolean
pollable_fd_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  PollableFdSource *self = (PollableFdSource *) source;
  GPollableSourceFunc func = (GPollableSourceFunc) (void (*) (void)) callback;

  self->pfd.revents = 0;
  if (func == NULL)
    return G_SOURCE_REMOVE;
  return func (self->stream, user_data);
}

static void
pollable_fd_finalize (GSource *source)
{
  g_clear_object (&((PollableFdSource *) source)->stream);
}

gboolean
gt_pollable_source_closure_callback (GObject *stream, gpointer data)
{
  GClosure *closure = data;
  GValue param = G_VALUE_INIT;
  GValue result_value = G_VALUE_INIT;
  gboolean result;

  g_value_init (&result_value, G_TYPE_BOOLEAN);
  g_value_init (&param, G_TYPE_OBJECT);
  g_value_set_object (&param, stream);
  g_closure_invoke (closure, &result_value, 1, &param, NULL);
  result = g_value_get_boolean (&result_value);
  g_value_unset (&result_value);
  g_value_unset (&param);
  return result;
}

static GSourceFuncs pollable_fd_funcs = {
  NULL,
  pollable_fd_check,
  pollable_fd_dispatch,
  pollable_fd_finalize,
  (GSourceFunc) (void (*) (void)) gt_pollable_source_closure_callback,
  NULL,
};

GSource *
gt_pollable_fd_source_new (GObject *stream, int fd, GIOCondition condition,
                           GCancellable *cancellable)
{
  GSource *source = g_source_new (&pollable_fd_funcs, sizeof (PollableFdSource));
  PollableFdSource *self = (PollableFdSource *) source;

  g_source_set_static_name (source, "GtPollableFdSource");
  self->stream = g_object_ref (stream);
  self->pfd.fd = fd;
  self->pfd.events = condition;
  g_source_add_poll (source, &self->pfd);
  g_source_set_can_recurse (source, TRUE);
  if (cancellable != NULL)
    {
      g_autoptr (GSource) cancel = g_cancellable_source_new (cancellable);

      g_source_set_dummy_callback (cancel);
      g_source_add_child_source (source, cancel);
    }
  return source;
}

GSource *
gt_pollable_source_for_io (GIOStream *io, gboolean output)
{
  GSource *source;

  if (G_IS_SOCKET_CONNECTION (io))
    {
      int fd = g_socket_get_fd (g_socket_connection_get_socket (G_SOCKET_CONNECTION (io)));

      if (output)
        return gt_pollable_fd_source_new (G_OBJECT (g_io_stream_get_output_stream (io)), fd,
                                          G_IO_OUT, NULL);
      return gt_pollable_fd_source_new (G_OBJECT (g_io_stream_get_input_stream (io)), fd, G_IO_IN,
                                        NULL);
    }
  if (output)
    source = g_pollable_output_stream_create_source (
      G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (io)), NULL);
  else
    source = g_pollable_input_stream_create_source (
      G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (io)), NULL);
  g_source_set_can_recurse (source, TRUE);
  return source;
}

/* Errors of accept() that belong to the one connection (accept(2), "Error handling"). */
static gboolean
accept_error_is_transient (int err)
{
  switch (err)
    {
    case EAGAIN:
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
    case EPERM: /* a firewall rule refused this one connection */
      return TRUE;
    default:
      return FALSE;
    }
}

/* Process-wide: one line per interval whichever listener fails (they all fail together). */
G_LOCK_DEFINE_STATIC (accept_log);
static gint64 accept_logged_at;
static guint accept_failures;

gboolean
gt_fd_source_accept_failed (GSource *source, int err, const char *what)
{
  gint64 now = g_get_monotonic_time ();
  gboolean log = FALSE;
  guint failures = 0;

  if (accept_error_is_transient (err))
    return FALSE;
  /* Out of fds (EMFILE/ENFILE) or memory (ENOBUFS/ENOMEM): the listener stays readable, so
   * watching it would spin. Connections wait in the backlog until fds free up. */
  gt_fd_source_pause (source, GT_ACCEPT_PAUSE_MS);
  G_LOCK (accept_log);
  accept_failures++;
  if (accept_logged_at == 0 || now - accept_logged_at >= GT_ACCEPT_LOG_INTERVAL_MS * 1000)
    {
      log = TRUE;
      failures = accept_failures;
      accept_failures = 0;
      accept_logged_at = now;
    }
  G_UNLOCK (accept_log);
  if (log)
    g_warning ("accept on %s: %s; new connections wait, retried every %u ms (%u failure%s "
               "since the last such line)",
               what, g_strerror (err), GT_ACCEPT_PAUSE_MS, failures, failures == 1 ? "" : "s");
  return TRUE;
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
