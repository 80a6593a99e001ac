/* gt-fd-source.c: fd watches on one epoll-based GSource per main context; pollable fd sources. */

/* GLib 2.74 walks every attached source in prepare and check, and rebuilds the poll set, on each
 * iteration of a main context: with one GSource per socket, that bookkeeping grew with the number
 * of connections and was half of a relay's instructions. So every fd watch of a context goes
 * through one "hub" source instead: a level-triggered epoll set whose fd is the hub's only
 * GPollFD, read with epoll_wait (…, 0) when the loop finds it readable. The loop's cost per
 * iteration no longer depends on how many fds are watched.
 *
 * The hub polls its own GPollFD (g_source_add_poll) rather than a g_source_add_unix_fd tag, and
 * can recurse: GLib 2.74 wakes the context (an eventfd write, a read and one more poll()) both
 * on g_source_modify_unix_fd and around the dispatch of a source that cannot recurse, which
 * takes its fds out of the poll set for that time. gt never runs a nested main loop.
 *
 * A watch's events change in place: the change is queued and applied (EPOLL_CTL_MOD, only when
 * the mask differs from the kernel's) before the loop waits, so a mask set and restored within
 * one iteration costs no syscall. A watch is created, changed and freed only by the thread that
 * runs its context (as for every gt source). Freeing one removes it from the epoll set at once
 * (the caller may close the fd right after); its memory waits until the batch being dispatched
 * is done, so an event of that batch for it is skipped rather than read after free. */
#include "config.h"

#define G_LOG_DOMAIN "gt"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-fd-source.h"

/* G_IO_IN, G_IO_PRI, G_IO_OUT, G_IO_ERR and G_IO_HUP are poll()'s bits, which epoll shares. */
G_STATIC_ASSERT ((int) G_IO_IN == (int) EPOLLIN && (int) G_IO_PRI == (int) EPOLLPRI);
G_STATIC_ASSERT ((int) G_IO_OUT == (int) EPOLLOUT && (int) G_IO_ERR == (int) EPOLLERR);
G_STATIC_ASSERT ((int) G_IO_HUP == (int) EPOLLHUP);

#define WATCH_EVENTS (G_IO_IN | G_IO_PRI | G_IO_OUT)

typedef struct
{
  GSource source;
  GPollFD pfd;           /* the epoll fd */
  GMainContext *context; /* not owned: the key in hubs */
  GPtrArray *dirty;      /* watches whose events may differ from the kernel's */
  GPtrArray *graveyard;  /* watches freed while a batch was dispatched */
  guint dispatching;     /* batches being dispatched (nested only by a recursing loop) */
} GtFdHub;

struct _GtFdWatch
{
  GtFdHub *hub; /* holds a reference */
  int fd;       /* the caller's */
  int reg_fd;   /* in the epoll set: fd, or a dup of it when fd was already there; -1 if none */
  GIOCondition events;
  GIOCondition kernel_events;
  gboolean dirty; /* in hub->dirty */
  gboolean dead;  /* freed, memory pending in hub->graveyard */
  GtFdFunc func;
  gpointer user_data;
  GSource *resume; /* while paused: the timer that restores events */
  GIOCondition paused_events;
};

/* Process-wide: GMainContext → its hub (not owned; a hub removes itself when finalized). */
G_LOCK_DEFINE_STATIC (hubs);
static GHashTable *hubs;

static void
watch_release (GtFdWatch *watch)
{
  g_source_unref ((GSource *) watch->hub);
  g_free (watch);
}

static void
hub_flush (GtFdHub *hub)
{
  for (guint i = 0; i < hub->dirty->len; i++)
    {
      GtFdWatch *watch = hub->dirty->pdata[i];
      struct epoll_event ev = { 0 };

      watch->dirty = FALSE;
      if ((watch->events & WATCH_EVENTS) == watch->kernel_events)
        continue;
      ev.events = watch->events & WATCH_EVENTS;
      ev.data.ptr = watch;
      if (epoll_ctl (hub->pfd.fd, EPOLL_CTL_MOD, watch->reg_fd, &ev) == 0)
        watch->kernel_events = ev.events;
      else
        g_critical ("epoll_ctl MOD fd %d: %s (closed before its watch was freed?)", watch->fd,
                    g_strerror (errno));
    }
  g_ptr_array_set_size (hub->dirty, 0);
}

static gboolean
hub_prepare (GSource *source, gint *timeout)
{
  GtFdHub *hub = (GtFdHub *) source;

  /* Before the loop waits: the kernel must know which events are wanted now. */
  if (hub->dirty->len > 0)
    hub_flush (hub);
  *timeout = -1;
  return FALSE;
}

static gboolean
hub_check (GSource *source)
{
  return (((GtFdHub *) source)->pfd.revents & G_IO_IN) != 0;
}

static gboolean
hub_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  GtFdHub *hub = (GtFdHub *) source;
  struct epoll_event events[GT_FD_HUB_BATCH];
  int n;

  hub->pfd.revents = 0;
  if (hub->dirty->len > 0)
    hub_flush (hub);
  /* At most GT_FD_HUB_BATCH: level-triggered, the rest stay ready and the epoll fd readable
   * for the next iteration, when the kernel hands them out first (it queues the ones it
   * reported behind them), and other sources get their turn in between. */
  do
    n = epoll_wait (hub->pfd.fd, events, G_N_ELEMENTS (events), 0);
  while (n < 0 && errno == EINTR);
  hub->dispatching++;
  for (int i = 0; i < n; i++)
    {
      GtFdWatch *watch = events[i].data.ptr;
      GIOCondition revents;

      if (watch->dead)
        continue; /* freed by an earlier callback of this batch */
      /* Events turned off since the kernel's mask was set are not reported; HUP and ERR
       * always are (as poll() does). */
      revents = events[i].events & (watch->events | G_IO_HUP | G_IO_ERR);
      if (revents != 0)
        watch->func (watch->fd, revents, watch->user_data);
    }
  if (--hub->dispatching == 0 && hub->graveyard->len > 0)
    {
      for (guint i = 0; i < hub->graveyard->len; i++)
        watch_release (hub->graveyard->pdata[i]);
      g_ptr_array_set_size (hub->graveyard, 0);
    }
  return G_SOURCE_CONTINUE;
}

static void
hub_finalize (GSource *source)
{
  GtFdHub *hub = (GtFdHub *) source;

  /* Every watch holds a reference: none is left, and none is in the arrays. */
  G_LOCK (hubs);
  if (g_hash_table_lookup (hubs, hub->context) == hub)
    g_hash_table_remove (hubs, hub->context);
  G_UNLOCK (hubs);
  close (hub->pfd.fd);
  g_ptr_array_unref (hub->dirty);
  g_ptr_array_unref (hub->graveyard);
}

static GSourceFuncs hub_funcs = {
  hub_prepare, hub_check, hub_dispatch, hub_finalize, NULL, NULL,
};

/* The hub of the thread-default context, created on first use; a new reference. */
static GtFdHub *
hub_get (void)
{
  GMainContext *context = g_main_context_get_thread_default ();
  GtFdHub *hub;
  int epfd;

  if (context == NULL)
    context = g_main_context_default ();
  G_LOCK (hubs);
  if (hubs == NULL)
    hubs = g_hash_table_new (NULL, NULL);
  hub = g_hash_table_lookup (hubs, context);
  /* A destroyed hub belonged to a context that is gone (and whose address was reused). */
  if (hub != NULL && !g_source_is_destroyed ((GSource *) hub))
    {
      g_source_ref ((GSource *) hub);
      G_UNLOCK (hubs);
      return hub;
    }
  epfd = epoll_create1 (EPOLL_CLOEXEC);
  if (epfd < 0)
    g_error ("epoll_create1: %s", g_strerror (errno)); /* out of fds or memory at start */
  hub = (GtFdHub *) g_source_new (&hub_funcs, sizeof (GtFdHub));
  g_source_set_static_name ((GSource *) hub, "GtFdHub");
  hub->context = context;
  hub->dirty = g_ptr_array_new ();
  hub->graveyard = g_ptr_array_new ();
  hub->pfd.fd = epfd;
  hub->pfd.events = G_IO_IN;
  g_source_add_poll ((GSource *) hub, &hub->pfd);
  g_source_set_can_recurse ((GSource *) hub, TRUE);
  g_source_attach ((GSource *) hub, context);
  g_hash_table_replace (hubs, context, hub); /* the context's reference; this one is the caller's */
  G_UNLOCK (hubs);
  return hub;
}

static int
watch_register (GtFdWatch *watch, int fd)
{
  struct epoll_event ev = { 0 };

  ev.events = watch->events & WATCH_EVENTS;
  ev.data.ptr = watch;
  if (epoll_ctl (watch->hub->pfd.fd, EPOLL_CTL_ADD, fd, &ev) < 0)
    return errno;
  watch->reg_fd = fd;
  watch->kernel_events = ev.events;
  return 0;
}

GtFdWatch *
gt_fd_watch_new (int fd, GIOCondition events, GtFdFunc func, gpointer user_data)
{
  GtFdWatch *watch;
  int err;

  g_return_val_if_fail (fd >= 0, NULL);
  g_return_val_if_fail (func != NULL, NULL);
  watch = g_new0 (GtFdWatch, 1);
  watch->hub = hub_get ();
  watch->fd = fd;
  watch->reg_fd = -1;
  watch->func = func;
  watch->user_data = user_data;
  watch->events = events;
  err = watch_register (watch, fd);
  if (err == EEXIST)
    {
      /* Another watch of this context has fd: epoll keys its entries on (file, fd), so a dup
       * is a second entry for the same socket. */
      int dup_fd = fcntl (fd, F_DUPFD_CLOEXEC, 0);

      err = dup_fd < 0 ? errno : watch_register (watch, dup_fd);
      if (err != 0 && dup_fd >= 0)
        close (dup_fd);
    }
  if (err != 0)
    g_critical ("watching fd %d: %s", fd, g_strerror (err)); /* not a pollable fd: never ready */
  return watch;
}

void
gt_fd_watch_set_events (GtFdWatch *watch, GIOCondition events)
{
  if (watch->events == events)
    return;
  watch->events = events;
  /* Applied before the loop next waits (hub_prepare), or reads the epoll set (hub_dispatch). */
  if (!watch->dirty && watch->reg_fd >= 0)
    {
      watch->dirty = TRUE;
      g_ptr_array_add (watch->hub->dirty, watch);
    }
}

GIOCondition
gt_fd_watch_get_events (GtFdWatch *watch)
{
  return watch->events;
}

static void
watch_clear_resume (GtFdWatch *watch)
{
  if (watch->resume == NULL)
    return;
  g_source_destroy (watch->resume);
  g_clear_pointer (&watch->resume, g_source_unref);
}

void
gt_fd_watch_free (GtFdWatch *watch)
{
  GtFdHub *hub;

  if (watch == NULL)
    return;
  hub = watch->hub;
  watch_clear_resume (watch);
  /* Out of the epoll set now: the caller may close fd next, and an entry left for a socket
   * that still has a dup elsewhere (another process's) would stay ready for good. */
  if (watch->reg_fd >= 0)
    {
      if (epoll_ctl (hub->pfd.fd, EPOLL_CTL_DEL, watch->reg_fd, NULL) < 0)
        g_critical ("epoll_ctl DEL fd %d: %s (closed before its watch was freed?)", watch->fd,
                    g_strerror (errno));
      if (watch->reg_fd != watch->fd)
        close (watch->reg_fd);
      watch->reg_fd = -1;
    }
  if (watch->dirty)
    g_ptr_array_remove_fast (hub->dirty, watch);
  watch->dirty = FALSE;
  watch->dead = TRUE;
  if (hub->dispatching > 0)
    g_ptr_array_add (hub->graveyard, watch); /* its event may be later in this batch */
  else
    watch_release (watch);
}

static gboolean
gt_fd_watch_resume_cb (gpointer user_data)
{
  GtFdWatch *watch = user_data;

  g_clear_pointer (&watch->resume, g_source_unref);
  gt_fd_watch_set_events (watch, watch->paused_events);
  return G_SOURCE_REMOVE;
}

void
gt_fd_watch_pause (GtFdWatch *watch, guint ms)
{
  if (watch->resume != NULL)
    return;
  if (g_source_is_destroyed ((GSource *) watch->hub))
    return; /* its context is gone: nothing runs it any more */
  watch->paused_events = watch->events;
  gt_fd_watch_set_events (watch, 0);
  watch->resume = g_timeout_source_new (ms);
  g_source_set_callback (watch->resume, gt_fd_watch_resume_cb, watch, NULL);
  g_source_attach (watch->resume, watch->hub->context);
}

gboolean
gt_fd_watch_is_paused (GtFdWatch *watch)
{
  return watch->resume != NULL;
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
gt_fd_watch_accept_failed (GtFdWatch *watch, int err, const char *what)
{
  gint64 now = g_get_monotonic_time ();
  gboolean log = FALSE;
  guint failures = 0;

  if (accept_error_is_transient (err))
    return FALSE;
  /* Out of fds (EMFILE/ENFILE) or memory (ENOBUFS/ENOMEM): the listener stays readable, so
   * watching it would spin. Connections wait in the backlog until fds free up. */
  gt_fd_watch_pause (watch, GT_ACCEPT_PAUSE_MS);
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
