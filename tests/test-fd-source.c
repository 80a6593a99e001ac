/* test-fd-source.c: fd watches on the per-context epoll hub, over socketpairs. */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-fd-source.h"

typedef struct
{
  GtFdWatch *watch;
  int fd, peer;
  GIOCondition seen;
  guint calls;
} Side;

static void
side_cb (int fd, GIOCondition revents, gpointer user_data)
{
  Side *s = user_data;

  g_assert_cmpint (fd, ==, s->fd);
  s->seen |= revents;
  s->calls++;
}

static void
side_open (Side *s, GIOCondition events)
{
  int sv[2];

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), ==,
                   0);
  memset (s, 0, sizeof *s);
  s->fd = sv[0];
  s->peer = sv[1];
  s->watch = gt_fd_watch_new (s->fd, events, side_cb, s);
}

static void
side_close (Side *s)
{
  g_clear_pointer (&s->watch, gt_fd_watch_free);
  if (s->fd >= 0)
    close (s->fd);
  if (s->peer >= 0)
    close (s->peer);
  s->fd = s->peer = -1;
}

static void
iterate_until (Side *s, GIOCondition want)
{
  gint64 deadline = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;

  while (!(s->seen & want) && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, TRUE);
  g_assert_true (s->seen & want);
}

/* Runs what is ready now, and a few iterations more. */
static void
iterate_ready (void)
{
  for (guint i = 0; i < 5; i++)
    g_main_context_iteration (NULL, FALSE);
}

static void
test_events (void)
{
  Side s;

  side_open (&s, G_IO_IN);
  iterate_ready ();
  g_assert_cmpuint (s.calls, ==, 0);

  g_assert_cmpint (write (s.peer, "x", 1), ==, 1);
  iterate_until (&s, G_IO_IN);
  g_assert_cmpuint (s.seen, ==, G_IO_IN);

  /* Still readable, but not asked for: not reported. */
  gt_fd_watch_set_events (s.watch, 0);
  g_assert_cmpuint (gt_fd_watch_get_events (s.watch), ==, 0);
  s.seen = 0;
  s.calls = 0;
  iterate_ready ();
  g_assert_cmpuint (s.calls, ==, 0);

  /* Changed and changed back within one iteration: as if never changed. */
  gt_fd_watch_set_events (s.watch, G_IO_OUT);
  gt_fd_watch_set_events (s.watch, 0);
  iterate_ready ();
  g_assert_cmpuint (s.calls, ==, 0);

  gt_fd_watch_set_events (s.watch, G_IO_OUT);
  iterate_until (&s, G_IO_OUT);
  g_assert_cmpuint (s.seen, ==, G_IO_OUT);

  gt_fd_watch_set_events (s.watch, G_IO_IN | G_IO_OUT);
  s.seen = 0;
  iterate_until (&s, G_IO_IN);
  g_assert_cmpuint (s.seen, ==, G_IO_IN | G_IO_OUT);
  side_close (&s);
}

static void
test_hup (void)
{
  Side s;

  /* HUP comes even when no event is asked for. */
  side_open (&s, 0);
  close (s.peer);
  s.peer = -1;
  iterate_until (&s, G_IO_HUP);
  g_assert_false (s.seen & G_IO_OUT);
  side_close (&s);
}

typedef struct
{
  Side sides[8];
  guint calls;
} Group;

static void
free_all_cb (int fd, GIOCondition revents, gpointer user_data)
{
  Group *g = user_data;

  g->calls++;
  /* The first callback of the batch frees every watch (its own included) and closes the fds,
   * while the others' events are still pending in the same batch. */
  for (guint i = 0; i < G_N_ELEMENTS (g->sides); i++)
    side_close (&g->sides[i]);
}

static void
test_free_in_callback (void)
{
  Group g = { 0 };
  gint64 deadline = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;

  for (guint i = 0; i < G_N_ELEMENTS (g.sides); i++)
    {
      side_open (&g.sides[i], G_IO_IN);
      gt_fd_watch_free (g.sides[i].watch);
      g.sides[i].watch = gt_fd_watch_new (g.sides[i].fd, G_IO_IN, free_all_cb, &g);
      g_assert_cmpint (write (g.sides[i].peer, "x", 1), ==, 1);
    }
  while (g.calls == 0 && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, TRUE);
  g_assert_cmpuint (g.calls, ==, 1);
  iterate_ready ();
  g_assert_cmpuint (g.calls, ==, 1);
}

typedef struct
{
  Side old, new;
} Reuse;

static void
reuse_cb (int fd, GIOCondition revents, gpointer user_data)
{
  Reuse *r = user_data;

  /* Freed and closed in its own callback; the next socket takes the same fd number. */
  side_close (&r->old);
  side_open (&r->new, G_IO_IN);
  g_assert_cmpint (write (r->new.peer, "y", 1), ==, 1);
}

static void
test_free_self_reuse_fd (void)
{
  Reuse r;
  gint64 deadline = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;

  side_open (&r.old, G_IO_IN);
  gt_fd_watch_free (r.old.watch);
  r.old.watch = gt_fd_watch_new (r.old.fd, G_IO_IN, reuse_cb, &r);
  g_assert_cmpint (write (r.old.peer, "x", 1), ==, 1);
  while (r.old.watch != NULL && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, TRUE);
  g_assert_null (r.old.watch);
  iterate_until (&r.new, G_IO_IN);
  side_close (&r.new);
}

static void
test_pause (void)
{
  Side s;
  gint64 start;

  side_open (&s, G_IO_IN);
  g_assert_cmpint (write (s.peer, "x", 1), ==, 1);
  start = g_get_monotonic_time ();
  gt_fd_watch_pause (s.watch, 100);
  g_assert_true (gt_fd_watch_is_paused (s.watch));
  g_assert_cmpuint (gt_fd_watch_get_events (s.watch), ==, 0);
  iterate_ready ();
  g_assert_cmpuint (s.calls, ==, 0);
  iterate_until (&s, G_IO_IN);
  g_assert_cmpint (g_get_monotonic_time () - start, >=, 100 * 1000);
  g_assert_false (gt_fd_watch_is_paused (s.watch));
  g_assert_cmpuint (gt_fd_watch_get_events (s.watch), ==, G_IO_IN);

  /* Freed while paused: the timer goes with it. */
  gt_fd_watch_pause (s.watch, 50);
  side_close (&s);
  g_usleep (60 * 1000);
  iterate_ready ();
}

static void
test_accept_failed (void)
{
  Side s;

  side_open (&s, G_IO_IN);
  g_assert_false (gt_fd_watch_accept_failed (s.watch, ECONNABORTED, "test"));
  g_assert_false (gt_fd_watch_is_paused (s.watch));
  g_test_expect_message ("gt", G_LOG_LEVEL_WARNING, "accept on test: *");
  g_assert_true (gt_fd_watch_accept_failed (s.watch, EMFILE, "test"));
  g_test_assert_expected_messages ();
  g_assert_true (gt_fd_watch_is_paused (s.watch));
  side_close (&s);
}

#define MANY 600

/* How many fds the main context would poll now. */
static gint
context_poll_fds (void)
{
  GMainContext *context = g_main_context_default ();
  GPollFD fds[64];
  gint max_priority, timeout, n;

  g_assert_true (g_main_context_acquire (context));
  g_main_context_prepare (context, &max_priority);
  n = g_main_context_query (context, max_priority, &timeout, fds, G_N_ELEMENTS (fds));
  g_assert_cmpint (n, <=, G_N_ELEMENTS (fds));
  for (gint i = 0; i < n; i++)
    fds[i].revents = 0;
  g_main_context_check (context, max_priority, fds, n);
  g_main_context_release (context);
  return n;
}

static void
test_many (void)
{
  Side *sides = g_new0 (Side, MANY);
  guint reported = 0;
  guint before;
  gint poll_fds;

  side_open (&sides[0], G_IO_IN);
  poll_fds = context_poll_fds ();
  for (guint i = 1; i < MANY; i++)
    side_open (&sides[i], G_IO_IN);
  /* The loop's poll set does not grow with the watches: they are all in the one epoll fd. */
  g_assert_cmpint (context_poll_fds (), ==, poll_fds);
  for (guint i = 0; i < MANY; i++)
    g_assert_cmpint (write (sides[i].peer, "x", 1), ==, 1);
  /* One dispatch reports a bounded batch; level-triggered, the rest come next. */
  g_assert_true (g_main_context_iteration (NULL, TRUE));
  for (guint i = 0; i < MANY; i++)
    reported += sides[i].calls;
  g_assert_cmpuint (reported, >, 0);
  g_assert_cmpuint (reported, <=, GT_FD_HUB_BATCH);

  /* The kernel hands out the fds not reported yet first: every one has had its turn after
   * MANY / GT_FD_HUB_BATCH more dispatches, none twice before. */
  for (guint round = 1; round * GT_FD_HUB_BATCH < MANY; round++)
    {
      before = reported;
      g_assert_true (g_main_context_iteration (NULL, TRUE));
      reported = 0;
      for (guint i = 0; i < MANY; i++)
        reported += sides[i].calls;
      g_assert_cmpuint (reported, >, before);
      g_assert_cmpuint (reported, <=, before + GT_FD_HUB_BATCH);
    }
  for (guint i = 0; i < MANY; i++)
    {
      g_assert_cmpuint (sides[i].calls, >=, 1);
      g_assert_cmpuint (sides[i].calls, <=, 2);
    }
  for (guint i = 0; i < MANY; i++)
    side_close (&sides[i]);
  g_free (sides);
}

static void
test_same_fd (void)
{
  Side s, t;
  GtFdWatch *second;

  side_open (&s, G_IO_IN);
  memset (&t, 0, sizeof t);
  t.fd = s.fd;
  t.peer = -1;
  second = gt_fd_watch_new (s.fd, G_IO_OUT, side_cb, &t);
  g_assert_cmpint (write (s.peer, "x", 1), ==, 1);
  iterate_until (&s, G_IO_IN);
  iterate_until (&t, G_IO_OUT);
  g_assert_cmpuint (s.seen, ==, G_IO_IN);
  g_assert_cmpuint (t.seen, ==, G_IO_OUT);

  /* Freeing one leaves the other watching. */
  gt_fd_watch_free (second);
  s.seen = 0;
  gt_fd_watch_set_events (s.watch, G_IO_OUT);
  iterate_until (&s, G_IO_OUT);
  side_close (&s);
}

static void
test_free_then_close_with_dup (void)
{
  Side s;
  int other;

  /* A socket whose fd another holder keeps (as gt manager's workers share their listeners):
   * after the watch is freed and the fd closed, nothing of it is left in the epoll set, which
   * would otherwise report the still-open socket for good. */
  side_open (&s, G_IO_IN);
  other = dup (s.fd);
  g_assert_cmpint (other, >=, 0);
  g_clear_pointer (&s.watch, gt_fd_watch_free);
  close (s.fd);
  s.fd = -1;
  g_assert_cmpint (write (s.peer, "x", 1), ==, 1);
  iterate_ready ();
  g_assert_cmpuint (s.calls, ==, 0);
  g_assert_false (g_main_context_iteration (NULL, FALSE));
  close (other);
  side_close (&s);
}

static gpointer
thread_worker (gpointer data)
{
  GMainContext *context = g_main_context_new ();
  gint64 deadline = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;
  Side s;

  g_main_context_push_thread_default (context);
  side_open (&s, G_IO_IN);
  g_assert_cmpint (write (s.peer, "x", 1), ==, 1);
  while (!(s.seen & G_IO_IN) && g_get_monotonic_time () < deadline)
    g_main_context_iteration (context, TRUE);
  side_close (&s);
  g_main_context_pop_thread_default (context);
  g_main_context_unref (context);
  return GUINT_TO_POINTER (s.seen);
}

static void
test_thread (void)
{
  Side s;
  GThread *threads[4];

  /* The main context's watch stays ready but is never iterated while the threads run theirs. */
  side_open (&s, G_IO_IN);
  g_assert_cmpint (write (s.peer, "x", 1), ==, 1);
  for (guint i = 0; i < G_N_ELEMENTS (threads); i++)
    threads[i] = g_thread_new ("fd-watch", thread_worker, NULL);
  for (guint i = 0; i < G_N_ELEMENTS (threads); i++)
    g_assert_cmpuint (GPOINTER_TO_UINT (g_thread_join (threads[i])), ==, G_IO_IN);
  g_assert_cmpuint (s.calls, ==, 0);
  iterate_until (&s, G_IO_IN);
  side_close (&s);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/gt/core/fd-source/events", test_events);
  g_test_add_func ("/gt/core/fd-source/hup", test_hup);
  g_test_add_func ("/gt/core/fd-source/free-in-callback", test_free_in_callback);
  g_test_add_func ("/gt/core/fd-source/free-self-reuse-fd", test_free_self_reuse_fd);
  g_test_add_func ("/gt/core/fd-source/pause", test_pause);
  g_test_add_func ("/gt/core/fd-source/accept-failed", test_accept_failed);
  g_test_add_func ("/gt/core/fd-source/many", test_many);
  g_test_add_func ("/gt/core/fd-source/same-fd", test_same_fd);
  g_test_add_func ("/gt/core/fd-source/free-then-close-with-dup", test_free_then_close_with_dup);
  g_test_add_func ("/gt/core/fd-source/thread", test_thread);
  return g_test_run ();
}
