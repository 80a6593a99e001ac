/* gt-manager.c: the supervisor: one `gt server|client -c FILE` worker per config, owning their
 * listening sockets, restarting them when they die, replacing them on reload/restart. */
#include "config.h"

#define G_LOG_DOMAIN "gt-manager"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib-unix.h>
#include <glib/gi18n-lib.h>
#include <glib/gstdio.h>

#include "gt-manager.h"
#include "gt-systemd.h"
#include "gt-worker-report.h"

G_DEFINE_QUARK (gt-manager-error-quark, gt_manager_error)

/* A worker that dies sooner than this after its start is restarted with backoff. */
#define QUICK_EXIT_US (10 * G_USEC_PER_SEC)
#define BACKOFF_MAX_S 60
/* A worker that ran long enough is restarted after this delay. */
#define RESTART_DELAY_MS 100

typedef enum
{
  PHASE_IDLE,
  PHASE_STARTING,
  PHASE_RUNNING,
  PHASE_RELOADING,
  PHASE_STOPPING,
  PHASE_STOPPED,
} Phase;

static const char *const phase_names[] = { "idle", "starting", "running", "reloading",
                                           "stopping", "stopped" };

typedef enum
{
  COMMAND_NONE,
  COMMAND_RELOAD,
  COMMAND_RESTART,
} Command;

/* One worker process. */
typedef struct
{
  GSubprocess *subprocess;
  GPid pid;
  char *unit_path;  /* the config it runs */
  char *name;       /* for logs */
  gint64 started_us;
  gboolean ready;
  gboolean stopping;
  guint ready_timeout_id;
  guint kill_id;
  char *status;     /* last STATUS= it sent */
  gboolean reconnecting; /* last GT_STATE= it sent was "reconnecting" */
  char *error;           /* last GT_ERROR= it sent */
  GtTraffic traffic;     /* last GT_TRAFFIC= it sent */
  GVariant *details;     /* last GT_DETAILS= it sent, NULL before */
} Proc;

/* One config file and the worker(s) running it. */
typedef struct
{
  char *path;
  char *name;
  GtConfigKind kind;
  char *checksum;
  GHashTable *listen_addrs; /* key → "host:port" */
  GPid current;             /* the worker serving, 0 when none */
  GPid next;                /* a worker starting (first start, restart, replacement), 0 when none */
  guint restart_id;
  guint backoff_s;
  gboolean disabled;  /* stopped through the control API: not started again until asked */
  char *config_error; /* the file became invalid; the running worker keeps the old config */
  char *exit_error;   /* how its last worker ended, or why it could not start */
} Unit;

/* A file of the last scan that is not running because it is invalid. */
typedef struct
{
  GtConfigKind kind;
  char *error;
} Invalid;

/* A listening socket owned by the manager and shared by the successive workers of an address. */
typedef struct
{
  char *addr;
  int fd;
  gboolean inherited; /* from our own LISTEN_FDS: kept even when unused */
} Listener;

struct _GtManager
{
  GObject parent_instance;

  char *path;
  char *root_dir; /* for short names in logs */
  guint depth;
  guint64 stop_timeout_ms;
  guint64 ready_timeout_ms;

  char *exe;           /* binary spawned for workers */
  char *runtime_dir;
  char *pid_path;
  char *state_path;
  int lock_fd;

  Phase phase;
  Command pending;
  guint64 requested;   /* commands received (signals) */
  guint64 completed;   /* value of `requested` when the last completed command started */
  guint64 command_serial;
  guint n_config_errors;
  gboolean notified_ready;
  gboolean stop_signalled;

  gboolean allow_empty;
  GHashTable *units;     /* path → Unit* */
  GHashTable *invalid;   /* path → Invalid* (files with no unit) */
  GPtrArray *deferred;   /* paths of clients to replace once the servers are replaced */
  GHashTable *procs;     /* GINT_TO_POINTER (pid) → Proc* */
  GHashTable *listeners; /* addr → Listener* */
  GPtrArray *inherited;  /* GtListenFd* from our own LISTEN_FDS, not yet bound to an address */

  int notify_fd;
  char *notify_address;
  guint notify_source_id;
  guint signal_ids[4];
  guint watchdog_id;
  GCancellable *cancellable;
};

G_DEFINE_FINAL_TYPE (GtManager, gt_manager, G_TYPE_OBJECT)

enum
{
  SIGNAL_STOPPED,
  SIGNAL_UNIT_CHANGED,
  SIGNAL_UNITS_CHANGED,
  SIGNAL_PHASE_CHANGED,
  N_SIGNALS
};

static guint signals[N_SIGNALS];

static void unit_spawn (GtManager *self, Unit *unit);
static gboolean notify_cb (int fd, GIOCondition condition, gpointer user_data);
static void check_settled (GtManager *self);
static void run_command (GtManager *self, Command command);
static char *short_name (GtManager *self, const char *path);

static void
set_phase (GtManager *self, Phase phase)
{
  if (self->phase == phase)
    return;
  self->phase = phase;
  g_signal_emit (self, signals[SIGNAL_PHASE_CHANGED], 0);
}

static void
unit_changed (GtManager *self, const char *path)
{
  g_autofree char *name = short_name (self, path);

  g_signal_emit (self, signals[SIGNAL_UNIT_CHANGED], 0, name);
}

static void
invalid_free (Invalid *inv)
{
  g_free (inv->error);
  g_free (inv);
}

/* ------------------------------------------------------------------------------------------ */
/* Scan */

void
gt_manager_entry_free (GtManagerEntry *entry)
{
  if (entry == NULL)
    return;
  g_free (entry->path);
  g_free (entry->checksum);
  g_clear_error (&entry->error);
  g_clear_pointer (&entry->listen_addrs, g_hash_table_unref);
  g_free (entry);
}

/* The listeners of a loaded server config, by key (gt_listener_info): the sockets to own. */
static void
entry_take_listeners (GtManagerEntry *entry, const GtServerConfig *config)
{
  for (GtListenerKind kind = 0; kind < GT_N_LISTENERS; kind++)
    {
      const char *addr = gt_listener_get_addr (config, kind);

      /* A UDP socket may share its address with a TCP one: "udp:" keeps them apart. */
      if (addr != NULL)
        g_hash_table_replace (entry->listen_addrs, g_strdup (gt_listener_info (kind)->key),
                              gt_listener_info (kind)->datagram ? g_strconcat ("udp:", addr, NULL)
                                                                : g_strdup (addr));
    }
}

static void
entry_check (GtManagerEntry *entry)
{
  g_autofree char *data = NULL;
  g_autoptr (GError) error = NULL;
  gsize len = 0;

  if (!g_file_get_contents (entry->path, &data, &len, &error))
    {
      entry->error = g_error_new (GT_CONFIG_ERROR, GT_CONFIG_ERROR_IO, "%s: cannot read the file: %s",
                                  entry->path, error->message);
      return;
    }
  entry->checksum = g_compute_checksum_for_data (G_CHECKSUM_SHA256, (const guchar *) data, len);
  entry->kind = gt_config_detect_kind_file (entry->path, &error);
  if (entry->kind == GT_CONFIG_KIND_UNKNOWN)
    {
      entry->error = error != NULL ? g_steal_pointer (&error)
                                   : g_error_new (GT_CONFIG_ERROR, GT_CONFIG_ERROR_INVALID,
                                                  "%s: cannot tell the config kind", entry->path);
      return;
    }

  if (entry->kind == GT_CONFIG_KIND_SERVER)
    {
      g_autoptr (GtServerConfig) config = gt_server_config_new ();

      if (!gt_server_config_load_data (config, data, (gssize) len, entry->path, NULL, &error)
          || !gt_server_config_validate (config, NULL, &error))
        {
          entry->error = g_steal_pointer (&error);
          return;
        }
      entry_take_listeners (entry, config);
    }
  else
    {
      g_autoptr (GtClientConfig) config = gt_client_config_new ();

      if (!gt_client_config_load_data (config, data, (gssize) len, entry->path, NULL, &error)
          || !gt_client_config_validate (config, NULL, &error))
        {
          entry->error = g_steal_pointer (&error);
          return;
        }
    }
}

static GtManagerEntry *
entry_new (const char *path)
{
  GtManagerEntry *entry = g_new0 (GtManagerEntry, 1);

  entry->path = g_strdup (path);
  entry->listen_addrs = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  return entry;
}

static gboolean
is_config_name (const char *name)
{
  return name[0] != '.' && (g_str_has_suffix (name, ".yaml") || g_str_has_suffix (name, ".yml"));
}

static void
scan_dir (const char *dir, guint level, guint depth, GPtrArray *out)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GDir) d = g_dir_open (dir, 0, &error);
  const char *name;

  if (d == NULL)
    {
      g_warning ("cannot read directory %s: %s", dir, error->message);
      return;
    }
  while ((name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *path = g_build_filename (dir, name, NULL);
      struct stat st, lst;

      if (name[0] == '.' || lstat (path, &lst) < 0)
        continue;
      /* Symlinked directories are not followed (no loops); symlinked files are. */
      if (S_ISDIR (lst.st_mode))
        {
          if (depth == 0 || level < depth)
            scan_dir (path, level + 1, depth, out);
          continue;
        }
      if (!is_config_name (name) || stat (path, &st) < 0 || !S_ISREG (st.st_mode))
        continue;
      if (st.st_size > GT_MANAGER_MAX_CONFIG_SIZE)
        {
          g_warning ("%s: skipped: larger than %d MiB", path, GT_MANAGER_MAX_CONFIG_SIZE >> 20);
          continue;
        }
      g_ptr_array_add (out, entry_new (path));
    }
}

static int
entry_compare (gconstpointer a, gconstpointer b)
{
  const GtManagerEntry *ea = *(GtManagerEntry *const *) a;
  const GtManagerEntry *eb = *(GtManagerEntry *const *) b;

  return strcmp (ea->path, eb->path);
}

GPtrArray *
gt_manager_scan (const char *path, guint depth, GError **error)
{
  g_autoptr (GPtrArray) entries = NULL;
  g_autoptr (GHashTable) addr_owner = NULL;
  struct stat st;

  g_return_val_if_fail (path != NULL, NULL);

  if (stat (path, &st) < 0)
    {
      int saved = errno;

      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved), "%s: %s", path,
                   g_strerror (saved));
      return NULL;
    }
  entries = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_manager_entry_free);
  if (S_ISDIR (st.st_mode))
    scan_dir (path, 1, depth, entries);
  else if (st.st_size > GT_MANAGER_MAX_CONFIG_SIZE)
    g_warning ("%s: skipped: larger than %d MiB", path, GT_MANAGER_MAX_CONFIG_SIZE >> 20);
  else
    g_ptr_array_add (entries, entry_new (path));
  g_ptr_array_sort (entries, entry_compare);

  /* Two servers on one address would share its socket and split the traffic between them. */
  addr_owner = g_hash_table_new (g_str_hash, g_str_equal);
  for (guint i = 0; i < entries->len; i++)
    {
      GtManagerEntry *entry = entries->pdata[i];
      GHashTableIter iter;
      gpointer value;

      entry_check (entry);
      if (entry->error != NULL)
        continue;
      for (GtListenerKind kind = 0; kind < GT_N_LISTENERS && entry->error == NULL; kind++)
        {
          const char *key = gt_listener_info (kind)->key;
          const char *addr = g_hash_table_lookup (entry->listen_addrs, key);
          const char *owner = addr != NULL ? g_hash_table_lookup (addr_owner, addr) : NULL;

          if (owner != NULL)
            entry->error = g_error_new (GT_CONFIG_ERROR, GT_CONFIG_ERROR_INVALID,
                                        "%s: options.%s %s is already used by %s", entry->path,
                                        key, addr, owner);
        }
      if (entry->error != NULL)
        continue;
      g_hash_table_iter_init (&iter, entry->listen_addrs);
      while (g_hash_table_iter_next (&iter, NULL, &value))
        g_hash_table_insert (addr_owner, value, entry->path);
    }
  return g_steal_pointer (&entries);
}

/* ------------------------------------------------------------------------------------------ */
/* Runtime dir, pid file, state file */

char *
gt_manager_runtime_dir (gboolean create, GError **error)
{
  const char *xdg = g_getenv ("XDG_RUNTIME_DIR");
  const char *own = g_getenv ("GT_RUNTIME_DIR");
  g_autofree char *dir = NULL;
  struct stat st;

  /* One manager per runtime dir: units running several managers give each its own. */
  if (own != NULL && own[0] == '/')
    dir = g_strdup (own);
  else if (xdg != NULL && xdg[0] == '/')
    dir = g_build_filename (xdg, "gt", NULL);
  else
    {
      g_autofree char *leaf = g_strdup_printf ("gt-%u", (guint) getuid ());

      dir = g_build_filename (g_get_tmp_dir (), leaf, NULL);
    }
  if (create && g_mkdir_with_parents (dir, 0700) < 0)
    {
      int saved = errno;

      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved), "cannot create %s: %s", dir,
                   g_strerror (saved));
      return NULL;
    }
  if (lstat (dir, &st) == 0)
    {
      /* In a shared temp dir, someone else could have made it first. */
      if (!S_ISDIR (st.st_mode) || st.st_uid != getuid () || (st.st_mode & 0022) != 0)
        {
          g_set_error (error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
                       "%s is not a private directory of this user", dir);
          return NULL;
        }
    }
  else if (create)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "%s does not exist", dir);
      return NULL;
    }
  return g_steal_pointer (&dir);
}

/* Field 22 of /proc/PID/stat: start time in clock ticks since boot; 0 when unknown. */
static guint64
proc_start_time (GPid pid)
{
  g_autofree char *path = g_strdup_printf ("/proc/%d/stat", (int) pid);
  g_autofree char *data = NULL;
  g_auto (GStrv) fields = NULL;
  const char *after;
  guint64 v = 0;

  if (!g_file_get_contents (path, &data, NULL, NULL))
    return 0;
  /* The command name (field 2) may contain spaces and parentheses: skip to the last ')'. */
  after = strrchr (data, ')');
  if (after == NULL)
    return 0;
  fields = g_strsplit (after + 2, " ", 0);
  /* fields[0] is field 3 (state), so field 22 is fields[19]. */
  if (g_strv_length (fields) < 20 || !g_ascii_string_to_unsigned (fields[19], 10, 0, G_MAXUINT64,
                                                                   &v, NULL))
    return 0;
  return v;
}

static gboolean
proc_looks_like_gt (GPid pid)
{
  g_autofree char *exe_link = g_strdup_printf ("/proc/%d/exe", (int) pid);
  g_autofree char *cmd_path = g_strdup_printf ("/proc/%d/cmdline", (int) pid);
  g_autofree char *exe = g_file_read_link (exe_link, NULL);
  g_autofree char *cmdline = NULL;

  if (exe != NULL)
    {
      g_autofree char *base = g_path_get_basename (exe);

      if (g_str_has_prefix (base, "gt"))
        return TRUE;
    }
  if (g_file_get_contents (cmd_path, &cmdline, NULL, NULL))
    {
      g_autofree char *base = g_path_get_basename (cmdline);

      if (g_str_has_prefix (base, "gt"))
        return TRUE;
    }
  return FALSE;
}

gboolean
gt_manager_pid_file_write (const char *path, GError **error)
{
  g_autofree char *text = g_strdup_printf ("%d %" G_GUINT64_FORMAT "\n", (int) getpid (),
                                           proc_start_time (getpid ()));

  return g_file_set_contents_full (path, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0644, error);
}

GPid
gt_manager_pid_file_read (const char *path, GError **error)
{
  g_autofree char *text = NULL;
  g_auto (GStrv) parts = NULL;
  g_autoptr (GError) local_error = NULL;
  guint64 pid = 0, start = 0;
  gboolean have_start;

  if (!g_file_get_contents (path, &text, NULL, &local_error))
    {
      if (g_error_matches (local_error, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        g_set_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_NOT_RUNNING,
                     "no gt manager is running (no %s)", path);
      else
        g_set_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_NOT_RUNNING,
                     "no gt manager is running (%s)", local_error->message);
      return 0;
    }
  g_strstrip (text);
  parts = g_strsplit (text, " ", 3);
  if (parts[0] == NULL || !g_ascii_string_to_unsigned (parts[0], 10, 1, G_MAXINT, &pid, NULL))
    {
      g_set_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_NOT_RUNNING,
                   "no gt manager is running (%s holds no pid)", path);
      return 0;
    }
  have_start = parts[1] != NULL
               && g_ascii_string_to_unsigned (parts[1], 10, 0, G_MAXUINT64, &start, NULL)
               && start != 0;
  if (kill ((pid_t) pid, 0) < 0 && errno == ESRCH)
    {
      g_set_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_NOT_RUNNING,
                   "no gt manager is running (pid %d from %s is gone)", (int) pid, path);
      return 0;
    }
  /* Same pid, other process: the manager died and the pid was reused. */
  if (have_start ? proc_start_time ((GPid) pid) != start : !proc_looks_like_gt ((GPid) pid))
    {
      g_set_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_NOT_RUNNING,
                   "no gt manager is running (pid %d from %s is another process)", (int) pid,
                   path);
      return 0;
    }
  return (GPid) pid;
}

static void
write_state (GtManager *self)
{
  g_autoptr (GKeyFile) kf = NULL;
  g_autofree char *data = NULL;
  g_autoptr (GError) error = NULL;

  if (self->state_path == NULL)
    return;
  kf = g_key_file_new ();
  g_key_file_set_integer (kf, "manager", "pid", (int) getpid ());
  g_key_file_set_string (kf, "manager", "phase", phase_names[self->phase]);
  g_key_file_set_uint64 (kf, "manager", "requested", self->requested);
  g_key_file_set_uint64 (kf, "manager", "completed", self->completed);
  g_key_file_set_integer (kf, "manager", "running", (int) gt_manager_get_n_running (self));
  g_key_file_set_integer (kf, "manager", "config-errors", (int) self->n_config_errors);
  data = g_key_file_to_data (kf, NULL, NULL);
  if (!g_file_set_contents_full (self->state_path, data, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0644,
                                 &error))
    g_debug ("cannot write %s: %s", self->state_path, error->message);
}

/* ------------------------------------------------------------------------------------------ */
/* Listeners */

static void
listener_free (Listener *l)
{
  if (l->fd >= 0 && !l->inherited)
    close (l->fd);
  g_free (l->addr);
  g_free (l);
}

/* TRUE when fd is a listening socket bound to what `sa` asks (a wildcard matches a wildcard of
 * either family: systemd binds ListenStream=8080 to [::]:8080). */
static gboolean
fd_matches (int fd, GSocketAddress *sa)
{
  g_autoptr (GSocket) sock = NULL;
  g_autoptr (GSocketAddress) local = NULL;
  GInetAddress *want, *have;

  sock = g_socket_new_from_fd (dup (fd), NULL);
  if (sock == NULL)
    return FALSE;
  local = g_socket_get_local_address (sock, NULL);
  if (local == NULL || !G_IS_INET_SOCKET_ADDRESS (local) || !G_IS_INET_SOCKET_ADDRESS (sa))
    return FALSE;
  if (g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (local))
      != g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (sa)))
    return FALSE;
  want = g_inet_socket_address_get_address (G_INET_SOCKET_ADDRESS (sa));
  have = g_inet_socket_address_get_address (G_INET_SOCKET_ADDRESS (local));
  if (g_inet_address_get_is_any (want))
    return g_inet_address_get_is_any (have);
  return g_inet_address_equal (want, have);
}

static int
inherited_take (GtManager *self, GtListenerKind kind, GSocketAddress *sa)
{
  guint n_servers = 0;
  GHashTableIter iter;
  gpointer value;

  for (guint i = 0; i < self->inherited->len; i++)
    {
      GtListenFd *lfd = self->inherited->pdata[i];

      if (fd_matches (lfd->fd, sa))
        {
          int fd = lfd->fd;

          g_ptr_array_remove_index (self->inherited, i);
          return fd;
        }
    }
  /* By name only when the choice is unambiguous: a single server config. */
  g_hash_table_iter_init (&iter, self->units);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    if (((Unit *) value)->kind == GT_CONFIG_KIND_SERVER)
      n_servers++;
  if (n_servers != 1)
    return -1;
  for (guint i = 0; i < self->inherited->len; i++)
    {
      GtListenFd *lfd = self->inherited->pdata[i];

      if (strcmp (lfd->name, gt_listener_info (kind)->key) == 0
          || (kind == GT_LISTENER_PLAIN
              && (strcmp (lfd->name, "unknown") == 0 || g_str_has_suffix (lfd->name, ".socket"))))
        {
          int fd = lfd->fd;

          g_ptr_array_remove_index (self->inherited, i);
          return fd;
        }
    }
  return -1;
}

static Listener *
listener_get (GtManager *self, GtListenerKind kind, const char *addr, GError **error)
{
  Listener *l = g_hash_table_lookup (self->listeners, addr);
  g_autoptr (GSocketAddress) sa = NULL;
  gssize native_len;
  g_autofree guchar *native = NULL;
  int fd, one = 1;

  gboolean datagram = g_str_has_prefix (addr, "udp:");

  if (l != NULL)
    return l;
  /* The server's own rule (no resolver; localhost is 127.0.0.1): a worker started alone and one
   * under the manager bind the same address. */
  sa = G_SOCKET_ADDRESS (gt_listen_address_parse (datagram ? addr + 4 : addr, error));
  if (sa == NULL)
    return NULL;

  fd = inherited_take (self, kind, sa);
  if (fd >= 0)
    {
      l = g_new0 (Listener, 1);
      l->addr = g_strdup (addr);
      l->fd = fd;
      l->inherited = TRUE;
      g_message ("using the socket-activated fd %d for %s (%s)", fd, gt_listener_info (kind)->key,
                 addr);
      g_hash_table_insert (self->listeners, l->addr, l);
      return l;
    }

  native_len = g_socket_address_get_native_size (sa);
  native = g_malloc0 (native_len);
  if (!g_socket_address_to_native (sa, native, native_len, error))
    return NULL;
  fd = socket (g_socket_address_get_family (sa),
               (datagram ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    goto fail;
  setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind (fd, (struct sockaddr *) native, (socklen_t) native_len) < 0
      || (!datagram && listen (fd, SOMAXCONN) < 0))
    goto fail;

  l = g_new0 (Listener, 1);
  l->addr = g_strdup (addr);
  l->fd = fd;
  {
    g_autoptr (GSocket) sock = g_socket_new_from_fd (dup (fd), NULL);
    g_autoptr (GSocketAddress) local = sock ? g_socket_get_local_address (sock, NULL) : NULL;
    g_autofree char *text = NULL;

    if (local != NULL && G_IS_INET_SOCKET_ADDRESS (local))
      {
        g_autofree char *ip = g_inet_address_to_string (
          g_inet_socket_address_get_address (G_INET_SOCKET_ADDRESS (local)));

        text = g_strdup_printf ("%s:%u", ip,
                                g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (local)));
      }
    g_message ("manager listening socket for %s on %s", gt_listener_info (kind)->key,
               text ? text : addr);
  }
  g_hash_table_insert (self->listeners, l->addr, l);
  return l;

fail:
  {
    int saved = errno;

    if (fd >= 0)
      close (fd);
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved), "cannot listen on %s: %s",
                 addr, g_strerror (saved));
    return NULL;
  }
}

/* Closes the sockets no config uses any more (inherited ones go back to the pool). */
static void
listeners_gc (GtManager *self)
{
  GHashTableIter iter, uiter;
  gpointer key, value, uvalue;

  g_hash_table_iter_init (&iter, self->listeners);
  while (g_hash_table_iter_next (&iter, &key, &value))
    {
      Listener *l = value;
      gboolean used = FALSE;

      g_hash_table_iter_init (&uiter, self->units);
      while (!used && g_hash_table_iter_next (&uiter, NULL, &uvalue))
        {
          GHashTableIter aiter;
          gpointer avalue;

          g_hash_table_iter_init (&aiter, ((Unit *) uvalue)->listen_addrs);
          while (!used && g_hash_table_iter_next (&aiter, NULL, &avalue))
            used = strcmp (avalue, l->addr) == 0;
        }
      if (used)
        continue;
      if (l->inherited)
        {
          GtListenFd *lfd = g_new0 (GtListenFd, 1);

          lfd->fd = l->fd;
          lfd->name = g_strdup ("unknown");
          g_ptr_array_add (self->inherited, lfd);
        }
      else
        g_message ("closing the listening socket on %s (no config uses it)", l->addr);
      g_hash_table_iter_remove (&iter);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Processes */

static void
proc_free (Proc *p)
{
  g_clear_handle_id (&p->ready_timeout_id, g_source_remove);
  g_clear_handle_id (&p->kill_id, g_source_remove);
  g_clear_object (&p->subprocess);
  g_free (p->unit_path);
  g_free (p->name);
  g_free (p->status);
  g_free (p->error);
  g_clear_pointer (&p->details, g_variant_unref);
  g_free (p);
}

static void
unit_free (Unit *u)
{
  g_clear_handle_id (&u->restart_id, g_source_remove);
  g_free (u->path);
  g_free (u->name);
  g_free (u->checksum);
  g_free (u->config_error);
  g_free (u->exit_error);
  g_clear_pointer (&u->listen_addrs, g_hash_table_unref);
  g_free (u);
}

static Proc *
proc_lookup (GtManager *self, GPid pid)
{
  return pid != 0 ? g_hash_table_lookup (self->procs, GINT_TO_POINTER (pid)) : NULL;
}

guint
gt_manager_get_n_running (GtManager *self)
{
  GHashTableIter iter;
  gpointer value;
  guint n = 0;

  g_return_val_if_fail (GT_IS_MANAGER (self), 0);

  g_hash_table_iter_init (&iter, self->procs);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    if (!((Proc *) value)->stopping)
      n++;
  return n;
}

static void
notify_status (GtManager *self)
{
  write_state (self);
  gt_sd_notify ("STATUS=%u workers running", gt_manager_get_n_running (self));
}

static char *
describe_exit (GSubprocess *sp)
{
  if (g_subprocess_get_if_exited (sp))
    return g_strdup_printf ("exited with code %d", g_subprocess_get_exit_status (sp));
  if (g_subprocess_get_if_signaled (sp))
    {
      int sig = g_subprocess_get_term_sig (sp);
      const char *abbrev = sigabbrev_np (sig);

      if (abbrev != NULL)
        return g_strdup_printf ("killed by signal SIG%s (%d)", abbrev, sig);
      return g_strdup_printf ("killed by signal %d", sig);
    }
  return g_strdup ("ended");
}

static gboolean
kill_cb (gpointer user_data)
{
  Proc *p = user_data;

  p->kill_id = 0;
  g_warning ("%s did not stop within its stop timeout; killing it", p->name);
  g_subprocess_force_exit (p->subprocess);
  return G_SOURCE_REMOVE;
}

static void
proc_stop (GtManager *self, Proc *p)
{
  if (p == NULL || p->stopping)
    return;
  p->stopping = TRUE;
  g_clear_handle_id (&p->ready_timeout_id, g_source_remove);
  g_message ("stopping %s", p->name);
  g_subprocess_send_signal (p->subprocess, SIGTERM);
  p->kill_id = g_timeout_add (self->stop_timeout_ms, kill_cb, p);
}

typedef struct
{
  GtManager *self;
  char *path;
} RestartData;

static void
restart_data_free (gpointer data)
{
  RestartData *rd = data;

  g_free (rd->path);
  g_free (rd);
}

static gboolean
unit_restart_cb (gpointer user_data)
{
  RestartData *rd = user_data;
  Unit *u = g_hash_table_lookup (rd->self->units, rd->path);

  if (u == NULL)
    return G_SOURCE_REMOVE;
  u->restart_id = 0;
  if (u->current == 0 && u->next == 0 && rd->self->phase != PHASE_STOPPING)
    unit_spawn (rd->self, u);
  return G_SOURCE_REMOVE;
}

/* After a death or a failed spawn: try again, with backoff when it keeps failing fast. */
static void
unit_schedule_restart (GtManager *self, Unit *u, gboolean quick, gboolean spawn_failed)
{
  RestartData *rd;
  guint delay_ms;

  if (self->phase == PHASE_STOPPING || self->phase == PHASE_STOPPED || u->restart_id != 0)
    return;
  if (quick)
    {
      u->backoff_s = u->backoff_s == 0 ? 1 : MIN (u->backoff_s * 2, BACKOFF_MAX_S);
      delay_ms = u->backoff_s * 1000;
      if (spawn_failed)
        g_warning ("retrying worker %s in %u s", u->name, u->backoff_s);
      else
        g_warning ("worker %s exited too quickly; restarting in %u s", u->name, u->backoff_s);
    }
  else
    {
      u->backoff_s = 0;
      delay_ms = RESTART_DELAY_MS;
    }
  rd = g_new0 (RestartData, 1);
  rd->self = self;
  rd->path = g_strdup (u->path);
  u->restart_id = g_timeout_add_full (G_PRIORITY_DEFAULT, delay_ms, unit_restart_cb, rd,
                                      restart_data_free);
}

static void
proc_became_ready (GtManager *self, Proc *p, gboolean timed_out)
{
  Unit *u;

  if (p->ready)
    return;
  p->ready = TRUE;
  g_clear_handle_id (&p->ready_timeout_id, g_source_remove);
  if (timed_out)
    g_warning ("%s did not report READY=1 within %" G_GUINT64_FORMAT " ms; counting it as ready",
               p->name, self->ready_timeout_ms);
  else
    g_message ("%s is ready", p->name);
  u = g_hash_table_lookup (self->units, p->unit_path);
  if (u != NULL)
    unit_changed (self, u->path);
  if (u != NULL && u->next == p->pid)
    {
      Proc *old = proc_lookup (self, u->current);

      u->current = p->pid;
      u->next = 0;
      /* The new worker accepts on the shared sockets now; the old one may drain. */
      if (old != NULL)
        proc_stop (self, old);
    }
  notify_status (self);
  check_settled (self);
}

static gboolean
ready_timeout_cb (gpointer user_data)
{
  Proc *p = user_data;
  GtManager *self = g_object_get_data (G_OBJECT (p->subprocess), "gt-manager");

  p->ready_timeout_id = 0;
  proc_became_ready (self, p, TRUE);
  return G_SOURCE_REMOVE;
}

static void
proc_wait_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GtManager) self = user_data;
  GSubprocess *sp = G_SUBPROCESS (source);
  g_autoptr (GError) error = NULL;
  g_autofree char *why = NULL;
  GHashTableIter iter;
  gpointer value;
  Proc *p = NULL;
  Unit *u;

  g_subprocess_wait_finish (sp, result, &error);
  /* What the worker said before it died (GT_ERROR=) comes first. */
  if (self->notify_fd >= 0)
    notify_cb (self->notify_fd, G_IO_IN, self);
  g_hash_table_iter_init (&iter, self->procs);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    if (((Proc *) value)->subprocess == sp)
      p = value;
  if (p == NULL)
    return;

  why = describe_exit (sp);
  u = g_hash_table_lookup (self->units, p->unit_path);
  if (p->stopping)
    g_message ("%s %s", p->name, why);
  else
    g_warning ("%s %s", p->name, why);
  if (u != NULL && !p->stopping)
    {
      g_free (u->exit_error);
      u->exit_error = p->error != NULL ? g_strdup_printf ("%s (%s)", why, p->error)
                                       : g_strdup (why);
    }

  if (u != NULL && (u->current == p->pid || u->next == p->pid))
    {
      gboolean quick = g_get_monotonic_time () - p->started_us < QUICK_EXIT_US;
      gboolean was_next = u->next == p->pid;

      if (was_next)
        u->next = 0;
      else
        u->current = 0;
      if (was_next && u->current != 0)
        g_warning ("the replacement for %s failed; the running worker stays", u->name);
      else if (u->current == 0 && u->next == 0 && !p->stopping)
        unit_schedule_restart (self, u, quick, FALSE);
    }
  g_hash_table_remove (self->procs, GINT_TO_POINTER (p->pid));
  notify_status (self);
  if (u != NULL)
    unit_changed (self, u->path);

  if (self->phase == PHASE_STOPPING && g_hash_table_size (self->procs) == 0)
    {
      set_phase (self, PHASE_STOPPED);
      write_state (self);
      g_message ("all workers stopped");
      g_signal_emit (self, signals[SIGNAL_STOPPED], 0);
      return;
    }
  check_settled (self);
}

static void
child_setup (gpointer user_data)
{
  pid_t manager = GPOINTER_TO_INT (user_data);

  /* A worker must not outlive a manager that was killed: its sockets would block a new one. */
  prctl (PR_SET_PDEATHSIG, SIGTERM);
  if (getppid () != manager)
    raise (SIGTERM);
}

static const char *
kind_name (GtConfigKind kind)
{
  return kind == GT_CONFIG_KIND_SERVER ? "server" : "client";
}

/* Starts a worker for `unit` as its `next`: it replaces `current` once it reported READY=1. */
static void
unit_spawn (GtManager *self, Unit *u)
{
  g_autoptr (GSubprocessLauncher) launcher = NULL;
  g_autoptr (GSubprocess) sp = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GString) names = g_string_new (NULL);
  g_autofree char *manager_pid = g_strdup_printf ("%d", (int) getpid ());
  const char *argv[5];
  guint n_fds = 0;
  Proc *p;

  g_clear_handle_id (&u->restart_id, g_source_remove);
  if (u->disabled)
    return;
  launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_NONE);
  for (const char *const *v = (const char *const[]){ "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                                                     "WATCHDOG_USEC", "WATCHDOG_PID", NULL };
       *v != NULL; v++)
    g_subprocess_launcher_unsetenv (launcher, *v);
  g_subprocess_launcher_setenv (launcher, "NOTIFY_SOCKET", self->notify_address, TRUE);
  g_subprocess_launcher_setenv (launcher, "GT_MANAGER_PID", manager_pid, TRUE);

  if (u->kind == GT_CONFIG_KIND_SERVER)
    {
      /* In the order of the listener table: the worker finds them by name (LISTEN_FDNAMES). */
      for (GtListenerKind kind = 0; kind < GT_N_LISTENERS; kind++)
        {
          const char *key = gt_listener_info (kind)->key;
          const char *addr = g_hash_table_lookup (u->listen_addrs, key);
          Listener *l;
          int copy;

          if (addr == NULL)
            continue;
          l = listener_get (self, kind, addr, &error);
          if (l == NULL)
            {
              g_warning ("cannot start worker %s: %s", u->name, error->message);
              g_free (u->exit_error);
              u->exit_error = g_strdup (error->message);
              unit_changed (self, u->path);
              unit_schedule_restart (self, u, TRUE, TRUE);
              check_settled (self);
              return;
            }
          copy = fcntl (l->fd, F_DUPFD_CLOEXEC, 3);
          g_subprocess_launcher_take_fd (launcher, copy, GT_LISTEN_FDS_START + (int) n_fds);
          g_string_append_printf (names, "%s%s", n_fds ? ":" : "", key);
          n_fds++;
        }
      if (n_fds > 0)
        {
          g_autofree char *n_text = g_strdup_printf ("%u", n_fds);

          /* No LISTEN_PID: the pid is unknown before exec (see gt_listen_fds_take). */
          g_subprocess_launcher_setenv (launcher, "LISTEN_FDS", n_text, TRUE);
          g_subprocess_launcher_setenv (launcher, "LISTEN_FDNAMES", names->str, TRUE);
        }
    }
  g_subprocess_launcher_set_child_setup (launcher, child_setup, GINT_TO_POINTER (getpid ()), NULL);

  argv[0] = self->exe;
  argv[1] = kind_name (u->kind);
  argv[2] = "-c";
  argv[3] = u->path;
  argv[4] = NULL;
  sp = g_subprocess_launcher_spawnv (launcher, argv, &error);
  if (sp == NULL)
    {
      g_warning ("cannot start worker %s: %s", u->name, error->message);
      g_free (u->exit_error);
      u->exit_error = g_strdup (error->message);
      unit_changed (self, u->path);
      unit_schedule_restart (self, u, TRUE, TRUE);
      check_settled (self);
      return;
    }

  p = g_new0 (Proc, 1);
  p->subprocess = g_object_ref (sp);
  p->pid = (GPid) g_ascii_strtoll (g_subprocess_get_identifier (sp), NULL, 10);
  p->unit_path = g_strdup (u->path);
  p->name = g_strdup_printf ("worker %s (%s, pid %d)", u->name, kind_name (u->kind), (int) p->pid);
  p->started_us = g_get_monotonic_time ();
  g_object_set_data (G_OBJECT (sp), "gt-manager", self);
  g_hash_table_insert (self->procs, GINT_TO_POINTER (p->pid), p);
  if (u->next != 0)
    proc_stop (self, proc_lookup (self, u->next));
  u->next = p->pid;
  g_message ("started %s", p->name);
  p->ready_timeout_id = g_timeout_add (self->ready_timeout_ms, ready_timeout_cb, p);
  g_subprocess_wait_async (sp, NULL, proc_wait_cb, g_object_ref (self));
  notify_status (self);
  unit_changed (self, u->path);
}

/* ------------------------------------------------------------------------------------------ */
/* Notify socket (workers report READY=1 / STOPPING=1 / STATUS= like they would to systemd) */

char *
gt_manager_worker_traffic_line (const GtTraffic *traffic)
{
  g_return_val_if_fail (traffic != NULL, NULL);
  return g_strdup_printf ("GT_TRAFFIC=%u %u %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT
                          " %" G_GUINT64_FORMAT,
                          traffic->tunnels, traffic->streams, traffic->streams_total,
                          traffic->bytes_in, traffic->bytes_out);
}

gboolean
gt_manager_is_worker (void)
{
  return g_getenv ("GT_MANAGER_PID") != NULL;
}

/* "TUNNELS STREAMS STREAMS_TOTAL BYTES_IN BYTES_OUT", as gt_manager_worker_traffic_line. */
static gboolean
parse_traffic (const char *text, GtTraffic *t)
{
  g_auto (GStrv) f = g_strsplit (text, " ", 6);
  guint64 v[5];

  if (g_strv_length (f) != 5)
    return FALSE;
  for (guint i = 0; i < 5; i++)
    if (!g_ascii_string_to_unsigned (f[i], 10, 0, i < 2 ? G_MAXUINT : G_MAXUINT64, &v[i], NULL))
      return FALSE;
  t->tunnels = (guint) v[0];
  t->streams = (guint) v[1];
  t->streams_total = v[2];
  t->bytes_in = v[3];
  t->bytes_out = v[4];
  return TRUE;
}

static void
handle_notify (GtManager *self, pid_t pid, const char *text)
{
  Proc *p = proc_lookup (self, pid);
  g_auto (GStrv) lines = NULL;
  gboolean changed = FALSE;

  if (p == NULL)
    {
      g_debug ("notify message from unknown pid %d ignored", (int) pid);
      return;
    }
  lines = g_strsplit (text, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++)
    {
      if (strcmp (lines[i], "READY=1") == 0)
        proc_became_ready (self, p, FALSE);
      else if (g_str_has_prefix (lines[i], "STATUS="))
        {
          g_free (p->status);
          p->status = g_strdup (lines[i] + 7);
          g_debug ("%s: %s", p->name, p->status);
        }
      else if (strcmp (lines[i], "STOPPING=1") == 0)
        g_debug ("%s is stopping", p->name);
      else if (g_str_has_prefix (lines[i], "GT_STATE="))
        {
          gboolean reconnecting = strcmp (lines[i] + 9, "reconnecting") == 0;

          changed |= reconnecting != p->reconnecting;
          p->reconnecting = reconnecting;
          if (!reconnecting)
            g_clear_pointer (&p->error, g_free);
        }
      else if (g_str_has_prefix (lines[i], "GT_ERROR="))
        {
          /* Bounded by the datagram size; shown to the user as is. */
          g_free (p->error);
          p->error = g_utf8_make_valid (lines[i] + 9, -1);
          changed = TRUE;
        }
      else if (g_str_has_prefix (lines[i], "GT_TRAFFIC="))
        {
          GtTraffic t = { 0 };

          if (parse_traffic (lines[i] + 11, &t) && memcmp (&t, &p->traffic, sizeof t) != 0)
            {
              p->traffic = t;
              changed = TRUE;
            }
        }
      else if (g_str_has_prefix (lines[i], "GT_DETAILS="))
        {
          g_autoptr (GError) error = NULL;
          g_autoptr (GVariant) details = gt_worker_details_parse (lines[i] + 11, &error);

          if (details == NULL)
            g_debug ("%s: %s", p->name, error->message);
          else if (p->details == NULL || !g_variant_equal (details, p->details))
            {
              g_clear_pointer (&p->details, g_variant_unref);
              p->details = g_steal_pointer (&details);
              changed = TRUE;
            }
        }
    }
  if (changed)
    unit_changed (self, p->unit_path);
}

static gboolean
notify_cb (int fd, GIOCondition condition, gpointer user_data)
{
  GtManager *self = user_data;
  /* Room for the longest GT_DETAILS= line; longer datagrams are dropped. */
  gsize buf_size = GT_WORKER_DETAILS_MAX_LINE + 4096;
  g_autofree char *buf = g_malloc (buf_size);

  for (;;)
    {
      union
      {
        struct cmsghdr align;
        char data[CMSG_SPACE (sizeof (struct ucred)) + CMSG_SPACE (sizeof (int) * 16)];
      } control;
      struct iovec iov = { buf, buf_size - 1 };
      struct msghdr msg = { 0 };
      struct ucred *cred = NULL;
      ssize_t n;

      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = &control;
      msg.msg_controllen = sizeof control;
      n = recvmsg (fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
      if (n < 0)
        break;
      for (struct cmsghdr *c = CMSG_FIRSTHDR (&msg); c != NULL; c = CMSG_NXTHDR (&msg, c))
        {
          if (c->cmsg_level != SOL_SOCKET)
            continue;
          if (c->cmsg_type == SCM_CREDENTIALS
              && c->cmsg_len == CMSG_LEN (sizeof (struct ucred)))
            cred = (struct ucred *) CMSG_DATA (c);
          else if (c->cmsg_type == SCM_RIGHTS)
            {
              /* We keep no fd store: close whatever was sent. */
              int *fds = (int *) CMSG_DATA (c);
              gsize n_fds = (c->cmsg_len - CMSG_LEN (0)) / sizeof (int);

              for (gsize i = 0; i < n_fds; i++)
                close (fds[i]);
            }
        }
      if (cred == NULL || (gsize) n >= buf_size - 1)
        continue;
      buf[n] = '\0';
      handle_notify (self, cred->pid, buf);
    }
  return G_SOURCE_CONTINUE;
}

static gboolean
notify_socket_open (GtManager *self, GError **error)
{
  struct sockaddr_un sa = { 0 };
  g_autofree char *name = NULL;
  socklen_t len;
  int fd, one = 1;

  name = g_strdup_printf ("gt-manager/%d/%08x/notify", (int) getpid (), g_random_int ());
  fd = socket (AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    goto fail;
  if (setsockopt (fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0)
    goto fail;
  sa.sun_family = AF_UNIX;
  /* Abstract namespace: nothing to clean up, nothing another user can pre-create. */
  memcpy (sa.sun_path + 1, name, strlen (name));
  len = offsetof (struct sockaddr_un, sun_path) + 1 + strlen (name);
  if (bind (fd, (struct sockaddr *) &sa, len) < 0)
    goto fail;
  self->notify_fd = fd;
  self->notify_address = g_strdup_printf ("@%s", name);
  self->notify_source_id = g_unix_fd_add (fd, G_IO_IN, notify_cb, self);
  return TRUE;

fail:
  {
    int saved = errno;

    if (fd >= 0)
      close (fd);
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved),
                 "cannot create the notify socket: %s", g_strerror (saved));
    return FALSE;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Commands */

static char *
short_name (GtManager *self, const char *path)
{
  if (self->root_dir != NULL && g_str_has_prefix (path, self->root_dir)
      && path[strlen (self->root_dir)] == G_DIR_SEPARATOR)
    return g_strdup (path + strlen (self->root_dir) + 1);
  return g_path_get_basename (path);
}

static void
unit_update_from (Unit *u, GtManagerEntry *e)
{
  u->kind = e->kind;
  g_free (u->checksum);
  u->checksum = g_strdup (e->checksum);
  g_clear_pointer (&u->listen_addrs, g_hash_table_unref);
  u->listen_addrs = g_hash_table_ref (e->listen_addrs);
}

/* Scans and converges: new files start, removed ones stop, changed ones (all with `force`) are
 * replaced by a new worker that takes over once ready. Invalid files keep their running worker. */
static void
apply_scan (GtManager *self, gboolean force)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) entries = gt_manager_scan (self->path, self->depth, &error);
  g_autoptr (GHashTable) seen = g_hash_table_new (g_str_hash, g_str_equal);
  g_autoptr (GPtrArray) to_spawn = g_ptr_array_new ();
  guint n_servers = 0;
  GHashTableIter iter;
  gpointer key, value;

  if (entries == NULL)
    {
      g_warning ("cannot scan %s: %s; keeping the running workers", self->path, error->message);
      self->n_config_errors = 1;
      return;
    }

  self->n_config_errors = 0;
  g_hash_table_remove_all (self->invalid);
  for (guint i = 0; i < entries->len; i++)
    {
      GtManagerEntry *e = entries->pdata[i];
      Unit *u = g_hash_table_lookup (self->units, e->path);

      g_hash_table_add (seen, e->path);
      if (e->error != NULL)
        {
          self->n_config_errors++;
          g_warning ("%s%s", e->error->message,
                     u != NULL ? " (the running worker keeps its previous config)" : "");
          if (u != NULL)
            {
              g_free (u->config_error);
              u->config_error = g_strdup (e->error->message);
            }
          else
            {
              Invalid *inv = g_new0 (Invalid, 1);

              inv->kind = e->kind;
              inv->error = g_strdup (e->error->message);
              g_hash_table_insert (self->invalid, g_strdup (e->path), inv);
            }
          continue;
        }
      if (u != NULL)
        g_clear_pointer (&u->config_error, g_free);
      if (u == NULL)
        {
          u = g_new0 (Unit, 1);
          u->path = g_strdup (e->path);
          u->name = short_name (self, e->path);
          unit_update_from (u, e);
          g_hash_table_insert (self->units, u->path, u);
          g_ptr_array_add (to_spawn, u);
          continue;
        }
      if (force || u->kind != e->kind || g_strcmp0 (u->checksum, e->checksum) != 0)
        {
          if (!force)
            g_message ("%s changed", u->name);
          unit_update_from (u, e);
          u->backoff_s = 0;
          g_ptr_array_add (to_spawn, u);
        }
    }

  /* Files that disappeared: their workers stop. */
  g_hash_table_iter_init (&iter, self->units);
  while (g_hash_table_iter_next (&iter, &key, &value))
    {
      Unit *u = value;

      if (g_hash_table_contains (seen, key))
        continue;
      g_message ("%s was removed; stopping its worker", u->name);
      proc_stop (self, proc_lookup (self, u->current));
      proc_stop (self, proc_lookup (self, u->next));
      g_hash_table_iter_remove (&iter);
    }
  g_signal_emit (self, signals[SIGNAL_UNITS_CHANGED], 0);

  /* Sockets first: an address that moved from one file to another keeps its socket. */
  listeners_gc (self);
  /* Servers first: clients replaced at the same time would otherwise connect to the old server
   * and move again when it goes away. Clients already running follow the go-away themselves. */
  for (guint i = 0; i < to_spawn->len; i++)
    if (((Unit *) to_spawn->pdata[i])->kind == GT_CONFIG_KIND_SERVER)
      {
        n_servers++;
        unit_spawn (self, to_spawn->pdata[i]);
      }
  for (guint i = 0; i < to_spawn->len; i++)
    {
      Unit *u = to_spawn->pdata[i];

      if (u->kind == GT_CONFIG_KIND_SERVER)
        continue;
      if (n_servers > 0 && u->current != 0)
        g_ptr_array_add (self->deferred, g_strdup (u->path));
      else
        unit_spawn (self, u);
    }
}

static void
finish_command (GtManager *self)
{
  Command pending = self->pending;

  self->completed = self->command_serial;
  set_phase (self, PHASE_RUNNING);
  g_message ("%u workers running%s", gt_manager_get_n_running (self),
             self->n_config_errors ? " (some configs have errors, see above)" : "");
  gt_sd_notify ("READY=1\nSTATUS=%u workers running", gt_manager_get_n_running (self));
  self->notified_ready = TRUE;
  write_state (self);
  self->pending = COMMAND_NONE;
  if (pending != COMMAND_NONE)
    run_command (self, pending);
}

static void
check_settled (GtManager *self)
{
  GHashTableIter iter;
  gpointer value;

  if (self->phase != PHASE_STARTING && self->phase != PHASE_RELOADING)
    return;
  g_hash_table_iter_init (&iter, self->units);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    if (((Unit *) value)->next != 0)
      return;
  if (self->deferred->len > 0)
    {
      g_autoptr (GPtrArray) deferred = g_steal_pointer (&self->deferred);

      self->deferred = g_ptr_array_new_with_free_func (g_free);
      for (guint i = 0; i < deferred->len; i++)
        {
          Unit *u = g_hash_table_lookup (self->units, deferred->pdata[i]);

          if (u != NULL && u->next == 0)
            unit_spawn (self, u);
        }
      /* A spawn that failed at once left nothing pending and may have finished already. */
      if (self->phase != PHASE_STARTING && self->phase != PHASE_RELOADING)
        return;
      g_hash_table_iter_init (&iter, self->units);
      while (g_hash_table_iter_next (&iter, NULL, &value))
        if (((Unit *) value)->next != 0)
          return;
    }
  finish_command (self);
}

static void
run_command (GtManager *self, Command command)
{
  if (self->phase == PHASE_STOPPING || self->phase == PHASE_STOPPED)
    return;
  if (self->phase != PHASE_RUNNING)
    {
      /* One at a time; a restart asked during a reload includes the reload. */
      self->pending = MAX (self->pending, command);
      return;
    }
  self->command_serial = self->requested;
  set_phase (self, PHASE_RELOADING);
  write_state (self);
  gt_sd_notify ("RELOADING=1\nMONOTONIC_USEC=%" G_GUINT64_FORMAT "\nSTATUS=%s",
                gt_sd_monotonic_usec (), command == COMMAND_RESTART ? "restarting" : "reloading");
  if (command == COMMAND_RESTART)
    {
      /* The binary on disk now: after an upgrade this is the new one. */
      g_autofree char *exe = g_file_read_link ("/proc/self/exe", NULL);

      if (exe != NULL && g_str_has_suffix (exe, " (deleted)"))
        exe[strlen (exe) - strlen (" (deleted)")] = '\0';
      if (exe != NULL && g_file_test (exe, G_FILE_TEST_IS_EXECUTABLE))
        {
          g_free (self->exe);
          self->exe = g_steal_pointer (&exe);
        }
      g_message ("restarting every worker with %s", self->exe);
    }
  else
    g_message ("reloading %s", self->path);
  apply_scan (self, command == COMMAND_RESTART);
  check_settled (self);
}

void
gt_manager_reload (GtManager *self)
{
  g_return_if_fail (GT_IS_MANAGER (self));
  run_command (self, COMMAND_RELOAD);
}

void
gt_manager_restart (GtManager *self)
{
  g_return_if_fail (GT_IS_MANAGER (self));
  run_command (self, COMMAND_RESTART);
}

void
gt_manager_stop (GtManager *self)
{
  GHashTableIter iter;
  gpointer value;

  g_return_if_fail (GT_IS_MANAGER (self));

  if (self->phase == PHASE_STOPPED)
    return;
  if (self->phase == PHASE_STOPPING)
    {
      /* Asked twice: no more waiting. */
      g_message ("stop asked again: killing the workers");
      g_hash_table_iter_init (&iter, self->procs);
      while (g_hash_table_iter_next (&iter, NULL, &value))
        g_subprocess_force_exit (((Proc *) value)->subprocess);
      return;
    }
  set_phase (self, PHASE_STOPPING);
  self->pending = COMMAND_NONE;
  g_ptr_array_set_size (self->deferred, 0);
  gt_sd_notify ("STOPPING=1\nSTATUS=stopping");
  g_message ("stopping %u workers", g_hash_table_size (self->procs));
  g_hash_table_iter_init (&iter, self->units);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    g_clear_handle_id (&((Unit *) value)->restart_id, g_source_remove);
  g_hash_table_iter_init (&iter, self->procs);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    proc_stop (self, value);
  write_state (self);
  if (g_hash_table_size (self->procs) == 0)
    {
      set_phase (self, PHASE_STOPPED);
      write_state (self);
      g_signal_emit (self, signals[SIGNAL_STOPPED], 0);
    }
}

gboolean
gt_manager_is_stopped (GtManager *self)
{
  g_return_val_if_fail (GT_IS_MANAGER (self), FALSE);
  return self->phase == PHASE_STOPPED;
}

static gboolean
sighup_cb (gpointer user_data)
{
  GtManager *self = user_data;

  self->requested++;
  write_state (self);
  gt_manager_reload (self);
  return G_SOURCE_CONTINUE;
}

static gboolean
sigusr2_cb (gpointer user_data)
{
  GtManager *self = user_data;

  self->requested++;
  write_state (self);
  gt_manager_restart (self);
  return G_SOURCE_CONTINUE;
}

static gboolean
sigterm_cb (gpointer user_data)
{
  gt_manager_stop (user_data);
  return G_SOURCE_CONTINUE;
}

static gboolean
watchdog_cb (gpointer user_data)
{
  gt_sd_notify ("WATCHDOG=1");
  return G_SOURCE_CONTINUE;
}

/* ------------------------------------------------------------------------------------------ */
/* Object */

static void
gt_manager_dispose (GObject *object)
{
  GtManager *self = GT_MANAGER (object);
  GHashTableIter iter;
  gpointer value;

  for (guint i = 0; i < G_N_ELEMENTS (self->signal_ids); i++)
    g_clear_handle_id (&self->signal_ids[i], g_source_remove);
  g_clear_handle_id (&self->watchdog_id, g_source_remove);
  g_clear_handle_id (&self->notify_source_id, g_source_remove);
  /* Normally empty (stop waits for every worker); never leave a child behind. */
  if (self->procs != NULL)
    {
      g_hash_table_iter_init (&iter, self->procs);
      while (g_hash_table_iter_next (&iter, NULL, &value))
        g_subprocess_force_exit (((Proc *) value)->subprocess);
    }
  g_cancellable_cancel (self->cancellable);
  G_OBJECT_CLASS (gt_manager_parent_class)->dispose (object);
}

static void
gt_manager_finalize (GObject *object)
{
  GtManager *self = GT_MANAGER (object);

  if (self->pid_path != NULL)
    {
      g_autoptr (GError) error = NULL;

      /* Only our own pid file: a newer manager may have taken over. */
      if (gt_manager_pid_file_read (self->pid_path, &error) == getpid ())
        g_unlink (self->pid_path);
      if (self->state_path != NULL)
        g_unlink (self->state_path);
    }
  if (self->lock_fd >= 0)
    close (self->lock_fd);
  if (self->notify_fd >= 0)
    close (self->notify_fd);
  g_clear_pointer (&self->procs, g_hash_table_unref);
  g_clear_pointer (&self->units, g_hash_table_unref);
  g_clear_pointer (&self->invalid, g_hash_table_unref);
  g_clear_pointer (&self->listeners, g_hash_table_unref);
  if (self->inherited != NULL)
    for (guint i = 0; i < self->inherited->len; i++)
      close (((GtListenFd *) self->inherited->pdata[i])->fd);
  g_clear_pointer (&self->inherited, g_ptr_array_unref);
  g_clear_pointer (&self->deferred, g_ptr_array_unref);
  g_clear_object (&self->cancellable);
  g_free (self->path);
  g_free (self->root_dir);
  g_free (self->exe);
  g_free (self->runtime_dir);
  g_free (self->pid_path);
  g_free (self->state_path);
  g_free (self->notify_address);
  G_OBJECT_CLASS (gt_manager_parent_class)->finalize (object);
}

static void
gt_manager_class_init (GtManagerClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->dispose = gt_manager_dispose;
  object_class->finalize = gt_manager_finalize;

  /* Every worker stopped after gt_manager_stop. */
  signals[SIGNAL_STOPPED] = g_signal_new ("stopped", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                                          0, NULL, NULL, NULL, G_TYPE_NONE, 0);
  /* Something gt_manager_get_unit returns for this unit name may have changed. */
  signals[SIGNAL_UNIT_CHANGED] = g_signal_new ("unit-changed", G_TYPE_FROM_CLASS (klass),
                                               G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                               G_TYPE_NONE, 1, G_TYPE_STRING);
  /* The last scan may have found or lost configuration files. */
  signals[SIGNAL_UNITS_CHANGED] = g_signal_new ("units-changed", G_TYPE_FROM_CLASS (klass),
                                                G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                                G_TYPE_NONE, 0);
  /* gt_manager_get_phase changed. */
  signals[SIGNAL_PHASE_CHANGED] = g_signal_new ("phase-changed", G_TYPE_FROM_CLASS (klass),
                                                G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                                G_TYPE_NONE, 0);
}

static void
gt_manager_init (GtManager *self)
{
  self->stop_timeout_ms = GT_MANAGER_DEFAULT_STOP_TIMEOUT_MS;
  self->ready_timeout_ms = GT_MANAGER_DEFAULT_READY_TIMEOUT_MS;
  self->lock_fd = -1;
  self->notify_fd = -1;
  self->units = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, (GDestroyNotify) unit_free);
  self->invalid = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                         (GDestroyNotify) invalid_free);
  self->procs = g_hash_table_new_full (NULL, NULL, NULL, (GDestroyNotify) proc_free);
  self->listeners = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                           (GDestroyNotify) listener_free);
  self->inherited = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_listen_fd_free);
  self->deferred = g_ptr_array_new_with_free_func (g_free);
  self->cancellable = g_cancellable_new ();
}

GtManager *
gt_manager_new (const char *path, guint depth)
{
  GtManager *self;

  g_return_val_if_fail (path != NULL, NULL);

  self = g_object_new (GT_TYPE_MANAGER, NULL);
  self->path = g_canonicalize_filename (path, NULL);
  self->depth = depth;
  if (g_file_test (self->path, G_FILE_TEST_IS_DIR))
    self->root_dir = g_strdup (self->path);
  else
    self->root_dir = g_path_get_dirname (self->path);
  return self;
}

void
gt_manager_set_stop_timeout (GtManager *self, guint64 ms)
{
  g_return_if_fail (GT_IS_MANAGER (self));
  self->stop_timeout_ms = MAX (ms, 1);
}

void
gt_manager_set_ready_timeout (GtManager *self, guint64 ms)
{
  g_return_if_fail (GT_IS_MANAGER (self));
  self->ready_timeout_ms = MAX (ms, 1);
}

static gboolean
take_runtime_files (GtManager *self, GError **error)
{
  g_autofree char *lock_path = NULL;
  GPid other;

  self->runtime_dir = gt_manager_runtime_dir (TRUE, error);
  if (self->runtime_dir == NULL)
    return FALSE;
  self->pid_path = g_build_filename (self->runtime_dir, "manager.pid", NULL);
  lock_path = g_build_filename (self->runtime_dir, "manager.lock", NULL);
  self->lock_fd = open (lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (self->lock_fd < 0 || flock (self->lock_fd, LOCK_EX | LOCK_NB) < 0)
    {
      other = gt_manager_pid_file_read (self->pid_path, NULL);
      g_clear_pointer (&self->pid_path, g_free);
      if (other != 0)
        g_set_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_RUNNING,
                     "another gt manager is running (pid %d, %s)", (int) other,
                     self->runtime_dir);
      else
        g_set_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_RUNNING,
                     "another gt manager holds %s", lock_path);
      return FALSE;
    }
  if (!gt_manager_pid_file_write (self->pid_path, error))
    {
      g_clear_pointer (&self->pid_path, g_free);
      return FALSE;
    }
  self->state_path = g_build_filename (self->runtime_dir, "manager.state", NULL);
  return TRUE;
}

gboolean
gt_manager_start (GtManager *self, GError **error)
{
  guint64 watchdog;

  g_return_val_if_fail (GT_IS_MANAGER (self), FALSE);
  g_return_val_if_fail (self->phase == PHASE_IDLE, FALSE);

  self->exe = g_file_read_link ("/proc/self/exe", error);
  if (self->exe == NULL)
    return FALSE;
  if (g_str_has_suffix (self->exe, " (deleted)"))
    {
      g_free (self->exe);
      self->exe = g_strdup ("/proc/self/exe");
    }
  if (!take_runtime_files (self, error))
    return FALSE;
  if (!notify_socket_open (self, error))
    return FALSE;

  /* Our own socket activation: kept for the workers' listeners, matched by address. */
  g_ptr_array_extend_and_steal (self->inherited, gt_listen_fds_take_all ());
  if (self->inherited->len > 0)
    g_message ("%u listening sockets from socket activation", self->inherited->len);

  self->signal_ids[0] = g_unix_signal_add (SIGHUP, sighup_cb, self);
  self->signal_ids[1] = g_unix_signal_add (SIGUSR2, sigusr2_cb, self);
  self->signal_ids[2] = g_unix_signal_add (SIGTERM, sigterm_cb, self);
  self->signal_ids[3] = g_unix_signal_add (SIGINT, sigterm_cb, self);
  watchdog = gt_sd_watchdog_usec ();
  if (watchdog > 0)
    self->watchdog_id = g_timeout_add (MAX (watchdog / 2000, 1), watchdog_cb, self);

  set_phase (self, PHASE_STARTING);
  g_message ("gt manager %s (pid %d) for %s", PACKAGE_VERSION, (int) getpid (), self->path);
  apply_scan (self, FALSE);
  if (g_hash_table_size (self->units) == 0 && !self->allow_empty)
    {
      set_phase (self, PHASE_STOPPED);
      g_set_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_NO_CONFIG,
                   "%s: no valid configuration to run", self->path);
      return FALSE;
    }
  write_state (self);
  check_settled (self);
  return TRUE;
}

/* ------------------------------------------------------------------------------------------ */
/* Entry points for the command line */

static guint64
env_duration (const char *name, guint64 fallback)
{
  const char *text = g_getenv (name);
  guint64 ms;

  if (text == NULL)
    return fallback;
  if (!gt_parse_duration (text, &ms))
    {
      g_warning ("ignoring %s=%s (not a duration such as 30s)", name, text);
      return fallback;
    }
  return ms;
}

static void
stopped_cb (GtManager *self, gpointer user_data)
{
  g_main_loop_quit (user_data);
}

int
gt_manager_run (const char *path, guint depth, GError **error)
{
  g_autoptr (GtManager) self = NULL;

  g_return_val_if_fail (path != NULL, 1);

  self = gt_manager_new (path, depth);
  return gt_manager_run_full (self, error);
}

int
gt_manager_run_full (GtManager *self, GError **error)
{
  g_autoptr (GMainLoop) loop = NULL;

  g_return_val_if_fail (GT_IS_MANAGER (self), 1);

  signal (SIGPIPE, SIG_IGN);
  gt_manager_set_stop_timeout (self, env_duration ("GT_MANAGER_STOP_TIMEOUT",
                                                   GT_MANAGER_DEFAULT_STOP_TIMEOUT_MS));
  gt_manager_set_ready_timeout (self, env_duration ("GT_MANAGER_READY_TIMEOUT",
                                                    GT_MANAGER_DEFAULT_READY_TIMEOUT_MS));
  loop = g_main_loop_new (NULL, FALSE);
  g_signal_connect (self, "stopped", G_CALLBACK (stopped_cb), loop);
  if (!gt_manager_start (self, error))
    return 1;
  g_main_loop_run (loop);
  g_signal_handlers_disconnect_by_func (self, stopped_cb, loop);
  return 0;
}

static gboolean
read_state (const char *path, guint64 *completed, guint64 *requested, char **phase,
            int *running, int *errors)
{
  g_autoptr (GKeyFile) kf = g_key_file_new ();

  if (!g_key_file_load_from_file (kf, path, G_KEY_FILE_NONE, NULL))
    return FALSE;
  *completed = g_key_file_get_uint64 (kf, "manager", "completed", NULL);
  *requested = g_key_file_get_uint64 (kf, "manager", "requested", NULL);
  *phase = g_key_file_get_string (kf, "manager", "phase", NULL);
  *running = g_key_file_get_integer (kf, "manager", "running", NULL);
  *errors = g_key_file_get_integer (kf, "manager", "config-errors", NULL);
  return TRUE;
}

int
gt_manager_send_signal (const char *name, GError **error)
{
  g_autofree char *dir = NULL;
  g_autofree char *pid_path = NULL;
  g_autofree char *state_path = NULL;
  g_autofree char *phase = NULL;
  guint64 completed = 0, requested0 = 0, requested;
  guint64 start, wait_ms;
  int sig, running = 0, errors = 0;
  GPid pid;

  g_return_val_if_fail (name != NULL, 1);

  if (strcmp (name, "reload") == 0)
    sig = SIGHUP;
  else if (strcmp (name, "restart") == 0)
    sig = SIGUSR2;
  else if (strcmp (name, "stop") == 0)
    sig = SIGTERM;
  else
    {
      g_set_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_FAILED,
                   "unknown signal '%s' (reload, restart, stop)", name);
      return 1;
    }

  dir = gt_manager_runtime_dir (FALSE, error);
  if (dir == NULL)
    return 1;
  pid_path = g_build_filename (dir, "manager.pid", NULL);
  state_path = g_build_filename (dir, "manager.state", NULL);
  pid = gt_manager_pid_file_read (pid_path, error);
  if (pid == 0)
    return 1;
  read_state (state_path, &completed, &requested0, &phase, &running, &errors);
  g_clear_pointer (&phase, g_free);

  if (kill (pid, sig) < 0)
    {
      int saved = errno;

      g_set_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_FAILED,
                   "cannot signal the gt manager (pid %d): %s", (int) pid, g_strerror (saved));
      return 1;
    }

  if (sig == SIGTERM)
    wait_ms = env_duration ("GT_MANAGER_STOP_TIMEOUT", GT_MANAGER_DEFAULT_STOP_TIMEOUT_MS) + 15000;
  else
    wait_ms = MAX (60000, 2 * env_duration ("GT_MANAGER_READY_TIMEOUT",
                                            GT_MANAGER_DEFAULT_READY_TIMEOUT_MS) + 15000);
  start = g_get_monotonic_time ();
  while ((guint64) (g_get_monotonic_time () - start) < wait_ms * 1000)
    {
      g_usleep (50 * 1000);
      if (gt_manager_pid_file_read (pid_path, NULL) != pid)
        {
          if (sig == SIGTERM)
            {
              g_message ("gt manager (pid %d) stopped", (int) pid);
              return 0;
            }
          g_set_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_FAILED,
                       "the gt manager (pid %d) exited during %s", (int) pid, name);
          return 1;
        }
      if (sig == SIGTERM)
        continue;
      if (!read_state (state_path, &completed, &requested, &phase, &running, &errors))
        continue;
      if (completed > requested0 && g_strcmp0 (phase, "running") == 0)
        {
          g_message ("%s done: %d workers running%s", name, running,
                     errors ? ", some configs have errors (see the manager's log)" : "");
          return 0;
        }
      g_clear_pointer (&phase, g_free);
    }
  g_set_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_TIMEOUT,
               "the gt manager (pid %d) did not finish %s within %" G_GUINT64_FORMAT " s",
               (int) pid, name, wait_ms / 1000);
  return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Control API */

static const char *const unit_state_names[] = { "starting", "running", "reconnecting", "failed",
                                                "stopped" };

const char *
gt_manager_unit_state_to_string (GtManagerUnitState state)
{
  g_return_val_if_fail (state <= GT_MANAGER_UNIT_STOPPED, "failed");
  return unit_state_names[state];
}

void
gt_manager_unit_info_free (GtManagerUnitInfo *info)
{
  if (info == NULL)
    return;
  g_free (info->name);
  g_free (info->path);
  g_free (info->error);
  g_clear_pointer (&info->details, g_variant_unref);
  g_free (info);
}

void
gt_manager_set_allow_empty (GtManager *self, gboolean allow_empty)
{
  g_return_if_fail (GT_IS_MANAGER (self));
  self->allow_empty = allow_empty;
}

const char *
gt_manager_get_path (GtManager *self)
{
  g_return_val_if_fail (GT_IS_MANAGER (self), NULL);
  return self->path;
}

const char *
gt_manager_get_phase (GtManager *self)
{
  g_return_val_if_fail (GT_IS_MANAGER (self), NULL);
  return phase_names[self->phase];
}

static GtManagerUnitInfo *
unit_info (GtManager *self, Unit *u)
{
  GtManagerUnitInfo *info = g_new0 (GtManagerUnitInfo, 1);
  Proc *p = proc_lookup (self, u->current);
  const char *error = NULL;

  if (p == NULL)
    p = proc_lookup (self, u->next);
  info->name = g_strdup (u->name);
  info->path = g_strdup (u->path);
  info->kind = u->kind;
  if (u->disabled)
    info->state = GT_MANAGER_UNIT_STOPPED;
  else if (p == NULL)
    info->state = GT_MANAGER_UNIT_FAILED;
  else if (p->reconnecting)
    info->state = GT_MANAGER_UNIT_RECONNECTING;
  else if (!p->ready)
    info->state = GT_MANAGER_UNIT_STARTING;
  else
    info->state = GT_MANAGER_UNIT_RUNNING;
  if (p != NULL && !u->disabled)
    {
      info->pid = p->pid;
      info->traffic = p->traffic;
      if (p->details != NULL)
        info->details = g_variant_ref (p->details);
      error = p->error;
    }
  if (info->details == NULL)
    info->details = gt_worker_details_empty ();
  if (error == NULL)
    error = u->config_error;
  if (error == NULL && info->state == GT_MANAGER_UNIT_FAILED)
    error = u->exit_error;
  info->error = g_strdup (error);
  return info;
}

static int
info_compare (gconstpointer a, gconstpointer b)
{
  return strcmp ((*(GtManagerUnitInfo *const *) a)->name, (*(GtManagerUnitInfo *const *) b)->name);
}

GPtrArray *
gt_manager_list_units (GtManager *self)
{
  GPtrArray *out;
  GHashTableIter iter;
  gpointer key, value;

  g_return_val_if_fail (GT_IS_MANAGER (self), NULL);

  out = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_manager_unit_info_free);
  g_hash_table_iter_init (&iter, self->units);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    g_ptr_array_add (out, unit_info (self, value));
  g_hash_table_iter_init (&iter, self->invalid);
  while (g_hash_table_iter_next (&iter, &key, &value))
    {
      GtManagerUnitInfo *info = g_new0 (GtManagerUnitInfo, 1);

      info->name = short_name (self, key);
      info->path = g_strdup (key);
      info->kind = ((Invalid *) value)->kind;
      info->state = GT_MANAGER_UNIT_FAILED;
      info->error = g_strdup (((Invalid *) value)->error);
      info->details = gt_worker_details_empty ();
      g_ptr_array_add (out, info);
    }
  g_ptr_array_sort (out, info_compare);
  return out;
}

/* The path of a unit name: the config file itself, or name under the config directory. */
static char *
unit_path_for (GtManager *self, const char *name)
{
  if (!g_file_test (self->path, G_FILE_TEST_IS_DIR))
    {
      g_autofree char *base = g_path_get_basename (self->path);

      return strcmp (base, name) == 0 ? g_strdup (self->path) : NULL;
    }
  return g_build_filename (self->path, name, NULL);
}

static Unit *
unit_lookup (GtManager *self, const char *name, GError **error)
{
  g_autofree char *path = unit_path_for (self, name);
  Unit *u = path != NULL ? g_hash_table_lookup (self->units, path) : NULL;

  if (u == NULL)
    g_set_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_NO_UNIT,
                 _("no running configuration named '%s'"), name);
  return u;
}

GtManagerUnitInfo *
gt_manager_get_unit (GtManager *self, const char *name)
{
  g_autoptr (GPtrArray) all = NULL;

  g_return_val_if_fail (GT_IS_MANAGER (self), NULL);
  g_return_val_if_fail (name != NULL, NULL);

  all = gt_manager_list_units (self);
  for (guint i = 0; i < all->len; i++)
    if (strcmp (((GtManagerUnitInfo *) all->pdata[i])->name, name) == 0)
      return g_ptr_array_steal_index (all, i);
  return NULL;
}

gboolean
gt_manager_stop_unit (GtManager *self, const char *name, GError **error)
{
  Unit *u;

  g_return_val_if_fail (GT_IS_MANAGER (self), FALSE);
  g_return_val_if_fail (name != NULL, FALSE);

  u = unit_lookup (self, name, error);
  if (u == NULL)
    return FALSE;
  if (!u->disabled)
    g_message ("stopping %s on request", u->name);
  u->disabled = TRUE;
  g_clear_handle_id (&u->restart_id, g_source_remove);
  proc_stop (self, proc_lookup (self, u->current));
  proc_stop (self, proc_lookup (self, u->next));
  unit_changed (self, u->path);
  check_settled (self);
  return TRUE;
}

gboolean
gt_manager_start_unit (GtManager *self, const char *name, GError **error)
{
  Unit *u;

  g_return_val_if_fail (GT_IS_MANAGER (self), FALSE);
  g_return_val_if_fail (name != NULL, FALSE);

  u = unit_lookup (self, name, error);
  if (u == NULL)
    return FALSE;
  if (self->phase == PHASE_STOPPING || self->phase == PHASE_STOPPED)
    {
      g_set_error_literal (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_FAILED,
                           _("the manager is stopping"));
      return FALSE;
    }
  u->disabled = FALSE;
  u->backoff_s = 0;
  g_clear_pointer (&u->exit_error, g_free);
  /* A worker still draining after a stop is left to finish; a new one takes the sockets. */
  {
    Proc *cur = proc_lookup (self, u->current);

    if (cur != NULL && cur->stopping)
      u->current = 0;
  }
  if (u->current == 0 && u->next == 0)
    {
      g_message ("starting %s on request", u->name);
      unit_spawn (self, u);
    }
  unit_changed (self, u->path);
  return TRUE;
}

GtConfigKind
gt_manager_check_config (const char *name, const char *text, gssize len,
                         GtConfigIssue **issue_out, GError **error)
{
  GtConfigKind kind;

  g_return_val_if_fail (name != NULL, GT_CONFIG_KIND_UNKNOWN);
  g_return_val_if_fail (text != NULL, GT_CONFIG_KIND_UNKNOWN);

  /* The same bound as a file of a config directory. */
  if ((len < 0 ? strlen (text) : (gsize) len) > GT_MANAGER_MAX_CONFIG_SIZE)
    {
      g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_INVALID, _("%s: larger than %d MiB"),
                   name, GT_MANAGER_MAX_CONFIG_SIZE >> 20);
      return GT_CONFIG_KIND_UNKNOWN;
    }
  kind = gt_config_detect_kind_data (text, len, error);
  if (kind == GT_CONFIG_KIND_UNKNOWN)
    {
      if (error != NULL && *error != NULL)
        g_prefix_error (error, "%s:", name);
      return kind;
    }
  if (kind == GT_CONFIG_KIND_SERVER)
    {
      g_autoptr (GtServerConfig) config = gt_server_config_new ();

      if (!gt_server_config_load_data (config, text, len, name, issue_out, error)
          || !gt_server_config_validate (config, issue_out, error))
        return GT_CONFIG_KIND_UNKNOWN;
    }
  else
    {
      g_autoptr (GtClientConfig) config = gt_client_config_new ();

      if (!gt_client_config_load_data (config, text, len, name, issue_out, error)
          || !gt_client_config_validate (config, issue_out, error))
        return GT_CONFIG_KIND_UNKNOWN;
    }
  return kind;
}

char *
gt_manager_get_config (GtManager *self, const char *name, GError **error)
{
  g_autofree char *path = NULL;
  g_autofree char *text = NULL;
  gsize len = 0;
  gboolean known;

  g_return_val_if_fail (GT_IS_MANAGER (self), NULL);
  g_return_val_if_fail (name != NULL, NULL);

  path = unit_path_for (self, name);
  known = path != NULL
          && (g_hash_table_contains (self->units, path) || g_hash_table_contains (self->invalid, path));
  if (!known)
    {
      g_set_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_NO_UNIT,
                   _("no configuration named '%s'"), name);
      return NULL;
    }
  if (!g_file_get_contents (path, &text, &len, error))
    return NULL;
  return gt_config_redact_secrets (text, (gssize) len, error);
}

/* A new file's name: "NAME.yaml" with letters, digits, '-', '_' and '.'. */
static gboolean
is_new_name_ok (const char *name)
{
  if (name[0] == '\0' || name[0] == '.' || strlen (name) > 128 || !is_config_name (name))
    return FALSE;
  for (const char *c = name; *c != '\0'; c++)
    if (!g_ascii_isalnum (*c) && *c != '-' && *c != '_' && *c != '.')
      return FALSE;
  return TRUE;
}

char *
gt_manager_prepare_config (GtManager *self, const char *name, const char *text, char **path_out,
                           GtConfigKind *kind_out, GtConfigIssue **issue_out, GError **error)
{
  g_autofree char *path = NULL;
  g_autofree char *old_text = NULL;
  g_autofree char *full = NULL;
  g_autoptr (GError) local_error = NULL;
  gsize old_len = 0;
  gboolean exists;
  GtConfigKind kind;

  g_return_val_if_fail (GT_IS_MANAGER (self), NULL);
  g_return_val_if_fail (name != NULL, NULL);
  g_return_val_if_fail (text != NULL, NULL);

  if (strlen (text) > GT_MANAGER_MAX_CONFIG_SIZE)
    {
      gt_manager_check_config (name, text, -1, issue_out, error);
      return NULL;
    }
  path = unit_path_for (self, name);
  exists = path != NULL
           && (g_hash_table_contains (self->units, path) || g_hash_table_contains (self->invalid, path));
  if (!exists && (path == NULL || !is_new_name_ok (name)))
    {
      g_set_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_BAD_NAME,
                   _("'%s' is not a configuration of this manager, and cannot be a new one (a "
                     "file name such as home.yaml in a config directory)"),
                   name);
      return NULL;
    }
  if (exists)
    g_file_get_contents (path, &old_text, &old_len, NULL);
  full = gt_config_restore_secrets (text, -1, old_text, (gssize) old_len, &local_error);
  if (old_text != NULL)
    memset (old_text, 0, old_len);
  if (full == NULL)
    {
      g_propagate_prefixed_error (error, g_steal_pointer (&local_error), "%s:", name);
      return NULL;
    }
  kind = gt_manager_check_config (name, full, -1, issue_out, error);
  if (kind == GT_CONFIG_KIND_UNKNOWN)
    {
      memset (full, 0, strlen (full));
      return NULL;
    }
  if (path_out != NULL)
    *path_out = g_steal_pointer (&path);
  if (kind_out != NULL)
    *kind_out = kind;
  return g_steal_pointer (&full);
}

gboolean
gt_manager_write_config (GtManager *self, const char *name, const char *path, const char *full,
                         GError **error)
{
  gboolean exists;

  g_return_val_if_fail (GT_IS_MANAGER (self), FALSE);
  g_return_val_if_fail (name != NULL && path != NULL && full != NULL, FALSE);

  exists = g_file_test (path, G_FILE_TEST_EXISTS);
  /* The file may hold a secret: only its owner reads it. */
  if (!g_file_set_contents_full (path, full, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, error))
    return FALSE;
  g_chmod (path, 0600);
  g_message ("%s %s through the control API; reloading", name, exists ? "changed" : "created");
  self->requested++;
  write_state (self);
  gt_manager_reload (self);
  return TRUE;
}

gboolean
gt_manager_set_config (GtManager *self, const char *name, const char *text,
                       GtConfigIssue **issue_out, GError **error)
{
  g_autofree char *path = NULL;
  g_autofree char *full = NULL;
  gboolean ok;

  full = gt_manager_prepare_config (self, name, text, &path, NULL, issue_out, error);
  if (full == NULL)
    return FALSE;
  ok = gt_manager_write_config (self, name, path, full, error);
  memset (full, 0, strlen (full));
  return ok;
}
