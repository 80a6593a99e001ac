/* gt-systemd.c: socket activation (LISTEN_FDS), sd_notify and the watchdog period, without libsystemd. */
#include "config.h"

#define G_LOG_DOMAIN "gt-manager"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <gio/gio.h>

#include "gt-systemd.h"

static GMutex listen_lock;
static gboolean listen_parsed;
static GPtrArray *listen_fds; /* GtListenFd*, not yet taken */

void
gt_listen_fd_free (GtListenFd *lfd)
{
  if (lfd == NULL)
    return;
  g_free (lfd->name);
  g_free (lfd);
}

static gboolean
parse_uint (const char *text, guint64 max, guint64 *out)
{
  guint64 v;

  if (text == NULL || !g_ascii_string_to_unsigned (text, 10, 0, max, &v, NULL))
    return FALSE;
  *out = v;
  return TRUE;
}

/* Called with listen_lock held. */
static void
listen_parse_locked (void)
{
  const char *pid_text, *fds_text, *names_text;
  g_auto (GStrv) names = NULL;
  guint64 pid = 0, n = 0;
  guint n_names;

  if (listen_parsed)
    return;
  listen_parsed = TRUE;
  listen_fds = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_listen_fd_free);

  pid_text = g_getenv ("LISTEN_PID");
  fds_text = g_getenv ("LISTEN_FDS");
  names_text = g_getenv ("LISTEN_FDNAMES");

  if (fds_text == NULL)
    goto out;
  if (pid_text != NULL && (!parse_uint (pid_text, G_MAXINT, &pid) || (pid_t) pid != getpid ()))
    {
      g_debug ("LISTEN_PID=%s is not for us (pid %d): ignoring LISTEN_FDS", pid_text,
               (int) getpid ());
      goto out;
    }
  if (!parse_uint (fds_text, 4096, &n))
    {
      g_warning ("ignoring invalid LISTEN_FDS=%s", fds_text);
      goto out;
    }

  names = names_text != NULL ? g_strsplit (names_text, ":", -1) : g_new0 (char *, 1);
  n_names = g_strv_length (names);
  if (names_text != NULL && n_names != n)
    g_warning ("LISTEN_FDNAMES has %u names for %u fds", n_names, (guint) n);

  for (guint i = 0; i < n; i++)
    {
      int fd = GT_LISTEN_FDS_START + (int) i;
      int flags = fcntl (fd, F_GETFD);
      struct stat st;
      GtListenFd *lfd;

      if (flags < 0 || fstat (fd, &st) < 0)
        {
          g_warning ("inherited fd %d (LISTEN_FDS) is not open", fd);
          continue;
        }
      /* Not ours to leak into children, taken or not. */
      fcntl (fd, F_SETFD, flags | FD_CLOEXEC);
      if (!S_ISSOCK (st.st_mode))
        {
          g_warning ("inherited fd %d (LISTEN_FDS) is not a socket; ignoring it", fd);
          continue;
        }
      lfd = g_new0 (GtListenFd, 1);
      lfd->fd = fd;
      lfd->name = g_strdup (i < n_names && names[i][0] != '\0' ? names[i] : "unknown");
      g_ptr_array_add (listen_fds, lfd);
    }

out:
  /* The fds are ours now; children must not believe they are theirs. */
  g_unsetenv ("LISTEN_PID");
  g_unsetenv ("LISTEN_FDS");
  g_unsetenv ("LISTEN_FDNAMES");
}

static gboolean
is_unnamed (const char *name)
{
  return name[0] == '\0' || strcmp (name, "unknown") == 0 || g_str_has_suffix (name, ".socket");
}

int
gt_listen_fds_take (const char *name)
{
  int fd = -1;

  g_return_val_if_fail (name != NULL, -1);

  g_mutex_lock (&listen_lock);
  listen_parse_locked ();
  for (guint pass = 0; pass < 2 && fd < 0; pass++)
    {
      if (pass == 1 && strcmp (name, "addr") != 0)
        break;
      for (guint i = 0; i < listen_fds->len; i++)
        {
          GtListenFd *lfd = listen_fds->pdata[i];

          if (pass == 0 ? strcmp (lfd->name, name) == 0 : is_unnamed (lfd->name))
            {
              fd = lfd->fd;
              g_ptr_array_remove_index (listen_fds, i);
              break;
            }
        }
    }
  g_mutex_unlock (&listen_lock);
  return fd;
}

GPtrArray *
gt_listen_fds_take_all (void)
{
  GPtrArray *all;

  g_mutex_lock (&listen_lock);
  listen_parse_locked ();
  all = g_steal_pointer (&listen_fds);
  listen_fds = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_listen_fd_free);
  g_mutex_unlock (&listen_lock);
  return all;
}

guint
gt_listen_fds_count (void)
{
  guint n;

  g_mutex_lock (&listen_lock);
  listen_parse_locked ();
  n = listen_fds->len;
  g_mutex_unlock (&listen_lock);
  return n;
}

void
gt_listen_fds_reset (void)
{
  g_mutex_lock (&listen_lock);
  g_clear_pointer (&listen_fds, g_ptr_array_unref);
  listen_parsed = FALSE;
  g_mutex_unlock (&listen_lock);
}

static gboolean
notify_address (const char *address, struct sockaddr_un *sa, socklen_t *len, GError **error)
{
  gsize n;

  memset (sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (address == NULL || (address[0] != '/' && address[0] != '@'))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                   "unsupported notify socket address '%s'", address ? address : "");
      return FALSE;
    }
  n = strlen (address);
  if (n < 2 || n > sizeof sa->sun_path - (address[0] == '/' ? 1 : 0))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "notify socket address has a bad length");
      return FALSE;
    }
  memcpy (sa->sun_path, address, n);
  if (address[0] == '@')
    {
      /* Abstract namespace: leading NUL, no terminator counted. */
      sa->sun_path[0] = '\0';
      *len = offsetof (struct sockaddr_un, sun_path) + n;
    }
  else
    *len = offsetof (struct sockaddr_un, sun_path) + n + 1;
  return TRUE;
}

gboolean
gt_sd_notify_to (const char *socket_address, const char *message, GError **error)
{
  return gt_sd_notify_to_full (socket_address, message, TRUE, error);
}

gboolean
gt_sd_notify_to_full (const char *socket_address, const char *message, gboolean block,
                      GError **error)
{
  struct sockaddr_un sa;
  socklen_t len;
  int fd;
  ssize_t sent;

  g_return_val_if_fail (message != NULL, FALSE);

  if (!notify_address (socket_address, &sa, &len, error))
    return FALSE;
  fd = socket (AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    {
      int saved = errno;

      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved), "socket: %s",
                   g_strerror (saved));
      return FALSE;
    }
  do
    sent = sendto (fd, message, strlen (message), MSG_NOSIGNAL | (block ? 0 : MSG_DONTWAIT),
                   (struct sockaddr *) &sa, len);
  while (sent < 0 && errno == EINTR);
  if (sent < 0)
    {
      int saved = errno;

      close (fd);
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved),
                   "cannot send to notify socket %s: %s", socket_address, g_strerror (saved));
      return FALSE;
    }
  close (fd);
  return TRUE;
}

gboolean
gt_sd_notify_enabled (void)
{
  const char *address = g_getenv ("NOTIFY_SOCKET");

  return address != NULL && (address[0] == '/' || address[0] == '@') && address[1] != '\0';
}

void
gt_sd_notify (const char *fmt, ...)
{
  g_autofree char *message = NULL;
  g_autoptr (GError) error = NULL;
  va_list args;

  if (!gt_sd_notify_enabled ())
    return;
  va_start (args, fmt);
  message = g_strdup_vprintf (fmt, args);
  va_end (args);
  if (!gt_sd_notify_to (g_getenv ("NOTIFY_SOCKET"), message, &error))
    g_debug ("sd_notify: %s", error->message);
}

guint64
gt_sd_watchdog_usec (void)
{
  const char *usec_text = g_getenv ("WATCHDOG_USEC");
  const char *pid_text = g_getenv ("WATCHDOG_PID");
  guint64 usec, pid;

  if (!parse_uint (usec_text, G_MAXUINT64 - 1, &usec) || usec == 0)
    return 0;
  if (pid_text != NULL && (!parse_uint (pid_text, G_MAXINT, &pid) || (pid_t) pid != getpid ()))
    return 0;
  return usec;
}

guint64
gt_sd_monotonic_usec (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (guint64) ts.tv_sec * G_USEC_PER_SEC + (guint64) ts.tv_nsec / 1000;
}
