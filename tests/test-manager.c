/* test-manager.c: unit tests of the manager's pieces: LISTEN_FDS, sd_notify, watchdog, pid file,
 * runtime dir and the config directory scan. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "gt-manager.h"
#include "gt-systemd.h"

static char *self_exe;

/* ------------------------------------------------------------------------------------------ */
/* Child side of the LISTEN_FDS tests: runs in a fresh exec with fds 3.. set by the parent. */

static guint16
fd_port (int fd)
{
  struct sockaddr_in sin;
  socklen_t len = sizeof sin;

  if (getsockname (fd, (struct sockaddr *) &sin, &len) < 0 || sin.sin_family != AF_INET)
    return 0;
  return ntohs (sin.sin_port);
}

/* GT_TEST_CHILD_EXPECT="name=port,name=port,..." (port 0: take must fail). Exit 0 when all hold. */
static int
listen_fds_child (void)
{
  g_auto (GStrv) items = g_strsplit (g_getenv ("GT_TEST_CHILD_EXPECT"), ",", -1);

  for (guint i = 0; items[i] != NULL; i++)
    {
      g_auto (GStrv) kv = g_strsplit (items[i], "=", 2);
      guint port = (guint) g_ascii_strtoull (kv[1], NULL, 10);
      int fd = gt_listen_fds_take (kv[0]);

      if (port == 0)
        {
          if (fd >= 0)
            {
              g_printerr ("child: %s: got fd %d, expected none\n", kv[0], fd);
              return 1;
            }
          continue;
        }
      if (fd < 0 || fd_port (fd) != port)
        {
          g_printerr ("child: %s: fd %d port %u, expected port %u\n", kv[0], fd,
                      fd >= 0 ? fd_port (fd) : 0, port);
          return 1;
        }
      if ((fcntl (fd, F_GETFD) & FD_CLOEXEC) == 0)
        {
          g_printerr ("child: %s: fd %d is not CLOEXEC\n", kv[0], fd);
          return 1;
        }
    }
  if (g_getenv ("LISTEN_FDS") != NULL || g_getenv ("LISTEN_PID") != NULL
      || g_getenv ("LISTEN_FDNAMES") != NULL)
    {
      g_printerr ("child: LISTEN_* still in the environment\n");
      return 1;
    }
  return 0;
}

static int
listen_on_loopback (guint16 *port)
{
  struct sockaddr_in sin = { 0 };
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  g_assert_cmpint (fd, >=, 0);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  g_assert_no_errno (bind (fd, (struct sockaddr *) &sin, sizeof sin));
  g_assert_no_errno (listen (fd, 16));
  *port = fd_port (fd);
  return fd;
}

/* Spawns this binary in child mode with `n` loopback listeners as fds 3.., env from `env`
 * ("KEY=VALUE" or "-KEY" to unset; "%PORTi%" is replaced by the port of fd i). */
static int
run_listen_child (guint n, const char *const *env, const char *expect)
{
  g_autoptr (GSubprocessLauncher) launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_NONE);
  g_autoptr (GSubprocess) sp = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *expect_text = g_strdup (expect);
  guint16 ports[4];

  g_assert_cmpuint (n, <=, G_N_ELEMENTS (ports));
  for (guint i = 0; i < n; i++)
    {
      int fd = listen_on_loopback (&ports[i]);
      g_autofree char *pat = g_strdup_printf ("%%PORT%u%%", i);
      g_autofree char *num = g_strdup_printf ("%u", ports[i]);
      g_autoptr (GString) s = g_string_new (expect_text);

      g_string_replace (s, pat, num, 0);
      g_free (expect_text);
      expect_text = g_string_free (g_steal_pointer (&s), FALSE);
      g_subprocess_launcher_take_fd (launcher, fd, GT_LISTEN_FDS_START + (int) i);
    }
  g_subprocess_launcher_unsetenv (launcher, "LISTEN_FDS");
  g_subprocess_launcher_unsetenv (launcher, "LISTEN_PID");
  g_subprocess_launcher_unsetenv (launcher, "LISTEN_FDNAMES");
  for (guint i = 0; env[i] != NULL; i++)
    {
      if (env[i][0] == '-')
        g_subprocess_launcher_unsetenv (launcher, env[i] + 1);
      else
        {
          g_auto (GStrv) kv = g_strsplit (env[i], "=", 2);

          g_subprocess_launcher_setenv (launcher, kv[0], kv[1], TRUE);
        }
    }
  g_subprocess_launcher_setenv (launcher, "GT_TEST_CHILD", "listen-fds", TRUE);
  g_subprocess_launcher_setenv (launcher, "GT_TEST_CHILD_EXPECT", expect_text, TRUE);
  sp = g_subprocess_launcher_spawn (launcher, &error, self_exe, NULL);
  g_assert_no_error (error);
  g_subprocess_wait (sp, NULL, &error);
  g_assert_no_error (error);
  g_assert_true (g_subprocess_get_if_exited (sp));
  return g_subprocess_get_exit_status (sp);
}

static void
test_listen_fds_named (void)
{
  const char *env[] = { "LISTEN_FDS=2", "LISTEN_FDNAMES=tlsAddr:addr", NULL };

  /* Names pick the fds, whatever their order; each fd is given once. */
  g_assert_cmpint (run_listen_child (2, env, "addr=%PORT1%,tlsAddr=%PORT0%,addr=0,sniAddr=0"),
                   ==, 0);
  /* The check itself fails when the expectation is wrong. */
  g_assert_cmpint (run_listen_child (2, env, "addr=%PORT0%"), ==, 1);
}

static void
test_listen_fds_unnamed (void)
{
  const char *env[] = { "LISTEN_FDS=1", "-LISTEN_FDNAMES", NULL };
  const char *env_unit[] = { "LISTEN_FDS=1", "LISTEN_FDNAMES=gt-server.socket", NULL };

  g_assert_cmpint (run_listen_child (1, env, "tlsAddr=0,addr=%PORT0%"), ==, 0);
  g_assert_cmpint (run_listen_child (1, env_unit, "addr=%PORT0%"), ==, 0);
}

static void
test_listen_fds_pid (void)
{
  const char *other[] = { "LISTEN_FDS=1", "LISTEN_FDNAMES=addr", "LISTEN_PID=1", NULL };
  const char *bad[] = { "LISTEN_FDS=x", "LISTEN_FDNAMES=addr", NULL };

  /* For another process: not ours, but still removed from the environment. */
  g_assert_cmpint (run_listen_child (1, other, "addr=0"), ==, 0);
  g_assert_cmpint (run_listen_child (1, bad, "addr=0"), ==, 0);
}

static void
test_listen_fds_none (void)
{
  g_unsetenv ("LISTEN_FDS");
  gt_listen_fds_reset ();
  g_assert_cmpint (gt_listen_fds_take ("addr"), ==, -1);
  g_assert_cmpuint (gt_listen_fds_count (), ==, 0);
  /* Parsing removed nothing and found nothing: an fd 3 that exists is not taken. */
  g_setenv ("LISTEN_FDS", "0", TRUE);
  gt_listen_fds_reset ();
  g_assert_cmpint (gt_listen_fds_take ("addr"), ==, -1);
  g_assert_null (g_getenv ("LISTEN_FDS"));
  gt_listen_fds_reset ();
}

/* ------------------------------------------------------------------------------------------ */
/* sd_notify */

static int
notify_receiver (const char *address)
{
  struct sockaddr_un sa = { 0 };
  socklen_t len;
  int fd = socket (AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), one = 1;

  g_assert_cmpint (fd, >=, 0);
  g_assert_no_errno (setsockopt (fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one));
  sa.sun_family = AF_UNIX;
  strcpy (sa.sun_path, address);
  if (address[0] == '@')
    {
      sa.sun_path[0] = '\0';
      len = offsetof (struct sockaddr_un, sun_path) + strlen (address);
    }
  else
    len = sizeof sa;
  g_assert_no_errno (bind (fd, (struct sockaddr *) &sa, len));
  return fd;
}

static char *
notify_receive (int fd, pid_t *pid)
{
  char buf[1024];
  union
  {
    struct cmsghdr align;
    char data[CMSG_SPACE (sizeof (struct ucred))];
  } control;
  struct iovec iov = { buf, sizeof buf - 1 };
  struct msghdr msg = { 0 };
  ssize_t n;

  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = &control;
  msg.msg_controllen = sizeof control;
  n = recvmsg (fd, &msg, MSG_DONTWAIT);
  if (n < 0)
    return NULL;
  buf[n] = '\0';
  *pid = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR (&msg); c != NULL; c = CMSG_NXTHDR (&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS)
      *pid = ((struct ucred *) CMSG_DATA (c))->pid;
  return g_strdup (buf);
}

static void
test_notify_abstract (void)
{
  g_autofree char *address = g_strdup_printf ("@gt-test-notify-%d-%u", (int) getpid (),
                                              g_random_int ());
  int fd = notify_receiver (address);
  g_autofree char *text = NULL;
  pid_t pid;

  g_setenv ("NOTIFY_SOCKET", address, TRUE);
  g_assert_true (gt_sd_notify_enabled ());
  gt_sd_notify ("READY=1\nSTATUS=%u workers running", 3u);
  text = notify_receive (fd, &pid);
  g_assert_cmpstr (text, ==, "READY=1\nSTATUS=3 workers running");
  g_assert_cmpint (pid, ==, getpid ());
  /* Nothing more was sent. */
  g_assert_null (notify_receive (fd, &pid));
  close (fd);
  g_unsetenv ("NOTIFY_SOCKET");
  g_assert_false (gt_sd_notify_enabled ());
  gt_sd_notify ("READY=1"); /* a no-op, not a crash */
}

static void
test_notify_path (void)
{
  g_autofree char *dir = g_dir_make_tmp ("gt-test-notify-XXXXXX", NULL);
  g_autofree char *path = g_build_filename (dir, "notify", NULL);
  g_autoptr (GError) error = NULL;
  g_autofree char *text = NULL;
  int fd = notify_receiver (path);
  pid_t pid;

  g_assert_true (gt_sd_notify_to (path, "STOPPING=1", &error));
  g_assert_no_error (error);
  text = notify_receive (fd, &pid);
  g_assert_cmpstr (text, ==, "STOPPING=1");
  close (fd);
  g_unlink (path);
  /* The receiver is gone: an error, not a hang. */
  g_assert_false (gt_sd_notify_to (path, "READY=1", &error));
  g_assert_nonnull (error);
  g_clear_error (&error);
  g_assert_false (gt_sd_notify_to ("vsock:2:1", "READY=1", &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED);
  g_rmdir (dir);
}

static void
test_watchdog (void)
{
  g_autofree char *me = g_strdup_printf ("%d", (int) getpid ());

  g_unsetenv ("WATCHDOG_USEC");
  g_unsetenv ("WATCHDOG_PID");
  g_assert_cmpuint (gt_sd_watchdog_usec (), ==, 0);
  g_setenv ("WATCHDOG_USEC", "30000000", TRUE);
  g_assert_cmpuint (gt_sd_watchdog_usec (), ==, 30000000);
  g_setenv ("WATCHDOG_PID", me, TRUE);
  g_assert_cmpuint (gt_sd_watchdog_usec (), ==, 30000000);
  g_setenv ("WATCHDOG_PID", "1", TRUE);
  g_assert_cmpuint (gt_sd_watchdog_usec (), ==, 0);
  g_setenv ("WATCHDOG_PID", me, TRUE);
  g_setenv ("WATCHDOG_USEC", "30s", TRUE);
  g_assert_cmpuint (gt_sd_watchdog_usec (), ==, 0);
  g_unsetenv ("WATCHDOG_USEC");
  g_unsetenv ("WATCHDOG_PID");
  g_assert_cmpuint (gt_sd_monotonic_usec (), >, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* pid file and runtime dir */

static void
test_pid_file (void)
{
  g_autofree char *dir = g_dir_make_tmp ("gt-test-pid-XXXXXX", NULL);
  g_autofree char *path = g_build_filename (dir, "manager.pid", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GSubprocess) sp = NULL;
  g_autofree char *contents = NULL;
  g_autofree char *text = NULL;

  /* Missing. */
  g_assert_cmpint (gt_manager_pid_file_read (path, &error), ==, 0);
  g_assert_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_NOT_RUNNING);
  g_assert_nonnull (strstr (error->message, "no gt manager is running"));
  g_clear_error (&error);

  /* Ours. */
  g_assert_true (gt_manager_pid_file_write (path, &error));
  g_assert_no_error (error);
  g_assert_cmpint (gt_manager_pid_file_read (path, &error), ==, getpid ());
  g_assert_no_error (error);

  /* Same pid, other start time: a recycled pid. */
  g_file_get_contents (path, &contents, NULL, NULL);
  text = g_strdup_printf ("%d 1\n", (int) getpid ());
  g_file_set_contents (path, text, -1, NULL);
  g_assert_cmpint (gt_manager_pid_file_read (path, &error), ==, 0);
  g_assert_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_NOT_RUNNING);
  g_assert_nonnull (strstr (error->message, "another process"));
  g_clear_error (&error);

  /* A dead process. */
  sp = g_subprocess_new (G_SUBPROCESS_FLAGS_NONE, &error, "true", NULL);
  g_assert_no_error (error);
  g_subprocess_wait (sp, NULL, NULL);
  g_free (text);
  text = g_strdup_printf ("%s 12345\n", g_subprocess_get_identifier (sp));
  g_file_set_contents (path, text, -1, NULL);
  g_assert_cmpint (gt_manager_pid_file_read (path, &error), ==, 0);
  g_assert_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_NOT_RUNNING);
  g_clear_error (&error);

  /* Garbage. */
  g_file_set_contents (path, "hello\n", -1, NULL);
  g_assert_cmpint (gt_manager_pid_file_read (path, &error), ==, 0);
  g_assert_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_NOT_RUNNING);
  g_clear_error (&error);

  g_unlink (path);
  g_rmdir (dir);
}

static void
test_runtime_dir (void)
{
  g_autofree char *tmp = g_dir_make_tmp ("gt-test-rt-XXXXXX", NULL);
  g_autofree char *expect = g_build_filename (tmp, "gt", NULL);
  g_autofree char *own = g_build_filename (tmp, "own", NULL);
  g_autofree char *dir = NULL;
  g_autoptr (GError) error = NULL;
  struct stat st;

  g_unsetenv ("GT_RUNTIME_DIR");
  g_setenv ("XDG_RUNTIME_DIR", tmp, TRUE);
  /* Without create, the path is given even when missing (and nothing is created). */
  dir = gt_manager_runtime_dir (FALSE, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (dir, ==, expect);
  g_assert_false (g_file_test (expect, G_FILE_TEST_EXISTS));
  g_clear_pointer (&dir, g_free);
  dir = gt_manager_runtime_dir (TRUE, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (dir, ==, expect);
  g_assert_no_errno (stat (dir, &st));
  g_assert_cmpint (st.st_mode & 0777, ==, 0700);

  /* Not private: refused. */
  g_assert_no_errno (chmod (dir, 0777));
  g_clear_pointer (&dir, g_free);
  g_assert_null (gt_manager_runtime_dir (TRUE, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED);
  g_clear_error (&error);
  g_rmdir (expect);

  g_setenv ("GT_RUNTIME_DIR", own, TRUE);
  dir = gt_manager_runtime_dir (TRUE, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (dir, ==, own);
  g_rmdir (own);

  /* -s with nobody there: a clear error. */
  g_assert_cmpint (gt_manager_send_signal ("reload", &error), ==, 1);
  g_assert_nonnull (error);
  g_assert_nonnull (strstr (error->message, "no gt manager is running"));
  g_clear_error (&error);
  g_assert_true (g_mkdir (own, 0700) == 0);
  g_assert_cmpint (gt_manager_send_signal ("stop", &error), ==, 1);
  g_assert_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_NOT_RUNNING);
  g_clear_error (&error);
  g_assert_cmpint (gt_manager_send_signal ("explode", &error), ==, 1);
  g_assert_nonnull (strstr (error->message, "unknown signal"));
  g_rmdir (own);
  g_unsetenv ("GT_RUNTIME_DIR");
  g_unsetenv ("XDG_RUNTIME_DIR");
  g_rmdir (tmp);
}

/* ------------------------------------------------------------------------------------------ */
/* Scan */

static const char server_yaml[] = "type: server\n"
                                  "users:\n"
                                  "  u1:\n"
                                  "    secret: s1\n"
                                  "options:\n"
                                  "  addr: 127.0.0.1:%u\n";
static const char client_yaml[] = "services:\n"
                                  "  - local: http://127.0.0.1:8000\n"
                                  "    hostPrefix: web\n"
                                  "options:\n"
                                  "  id: u1\n"
                                  "  secret: s1\n"
                                  "  remote: tcp://127.0.0.1:9000\n";

static void
write_file (const char *dir, const char *name, const char *text)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);
  g_autofree char *parent = g_path_get_dirname (path);
  g_autoptr (GError) error = NULL;

  g_mkdir_with_parents (parent, 0700);
  g_file_set_contents (path, text, -1, &error);
  g_assert_no_error (error);
}

static void
write_server (const char *dir, const char *name, guint port)
{
  g_autofree char *text = g_strdup_printf (server_yaml, port);

  write_file (dir, name, text);
}

static void
rm_rf (const char *path)
{
  g_autoptr (GDir) d = g_dir_open (path, 0, NULL);
  const char *name;

  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *child = g_build_filename (path, name, NULL);

      if (g_file_test (child, G_FILE_TEST_IS_DIR) && !g_file_test (child, G_FILE_TEST_IS_SYMLINK))
        rm_rf (child);
      else
        g_unlink (child);
    }
  g_rmdir (path);
}

static char *
scan_names (const char *dir, guint depth)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) entries = gt_manager_scan (dir, depth, &error);
  g_autoptr (GString) s = g_string_new (NULL);

  g_assert_no_error (error);
  for (guint i = 0; i < entries->len; i++)
    {
      GtManagerEntry *e = entries->pdata[i];

      g_string_append_printf (s, "%s%s", s->len ? " " : "", e->path + strlen (dir) + 1);
    }
  return g_string_free (g_steal_pointer (&s), FALSE);
}

static void
test_scan_depth (void)
{
  g_autofree char *dir = g_dir_make_tmp ("gt-test-scan-XXXXXX", NULL);
  g_autofree char *names = NULL;

  write_server (dir, "a.yaml", 9001);
  write_file (dir, "sub/b.yml", client_yaml);
  write_server (dir, "sub/deeper/c.yaml", 9003);
  write_file (dir, "notes.txt", "not a config");
  write_server (dir, ".hidden.yaml", 9004);
  write_file (dir, "sub/README.md", "# no");

  names = scan_names (dir, 1);
  g_assert_cmpstr (names, ==, "a.yaml");
  g_free (names);
  names = scan_names (dir, 2);
  g_assert_cmpstr (names, ==, "a.yaml sub/b.yml");
  g_free (names);
  names = scan_names (dir, 3);
  g_assert_cmpstr (names, ==, "a.yaml sub/b.yml sub/deeper/c.yaml");
  g_free (names);
  names = scan_names (dir, 0);
  g_assert_cmpstr (names, ==, "a.yaml sub/b.yml sub/deeper/c.yaml");
  rm_rf (dir);
}

static void
test_scan_size_limit (void)
{
  g_autofree char *dir = g_dir_make_tmp ("gt-test-scan-XXXXXX", NULL);
  g_autofree char *big = g_build_filename (dir, "big.yaml", NULL);
  g_autofree char *names = NULL;
  int fd;

  write_server (dir, "a.yaml", 9001);
  fd = open (big, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  g_assert_cmpint (fd, >=, 0);
  g_assert_no_errno (ftruncate (fd, GT_MANAGER_MAX_CONFIG_SIZE + 1));
  close (fd);
  g_test_expect_message ("gt-manager", G_LOG_LEVEL_WARNING, "*big.yaml: skipped: larger than 10 MiB");
  names = scan_names (dir, 0);
  g_test_assert_expected_messages ();
  g_assert_cmpstr (names, ==, "a.yaml");
  /* Exactly at the limit is still read (and here rejected as a config, not skipped). */
  g_assert_no_errno (truncate (big, GT_MANAGER_MAX_CONFIG_SIZE));
  g_free (names);
  names = scan_names (dir, 0);
  g_assert_cmpstr (names, ==, "a.yaml big.yaml");
  rm_rf (dir);
}

static void
test_scan_classify (void)
{
  g_autofree char *dir = g_dir_make_tmp ("gt-test-scan-XXXXXX", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) entries = NULL;
  GtManagerEntry *e;

  write_server (dir, "1-server.yaml", 9001);
  write_file (dir, "2-client.yaml", client_yaml);
  write_file (dir, "3-tls.yaml",
              "type: server\n"
              "options:\n"
              "  addr: 9005\n"
              "  tlsAddr: 127.0.0.1:9443\n"
              "  sniAddr: ':9444'\n");
  entries = gt_manager_scan (dir, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (entries->len, ==, 3);

  e = entries->pdata[0];
  g_assert_no_error (e->error);
  g_assert_cmpint (e->kind, ==, GT_CONFIG_KIND_SERVER);
  g_assert_cmpstr (g_hash_table_lookup (e->listen_addrs, "addr"), ==, "127.0.0.1:9001");
  g_assert_cmpuint (g_hash_table_size (e->listen_addrs), ==, 1);
  g_assert_cmpuint (strlen (e->checksum), ==, 64);

  e = entries->pdata[1];
  g_assert_no_error (e->error);
  g_assert_cmpint (e->kind, ==, GT_CONFIG_KIND_CLIENT);
  g_assert_cmpuint (g_hash_table_size (e->listen_addrs), ==, 0);

  e = entries->pdata[2];
  g_assert_no_error (e->error);
  g_assert_cmpint (e->kind, ==, GT_CONFIG_KIND_SERVER);
  g_assert_cmpstr (g_hash_table_lookup (e->listen_addrs, "addr"), ==, "0.0.0.0:9005");
  g_assert_cmpstr (g_hash_table_lookup (e->listen_addrs, "tlsAddr"), ==, "127.0.0.1:9443");
  g_assert_cmpstr (g_hash_table_lookup (e->listen_addrs, "sniAddr"), ==, "0.0.0.0:9444");

  /* A single file is a one-entry scan; a missing path is an error. */
  g_clear_pointer (&entries, g_ptr_array_unref);
  {
    g_autofree char *one = g_build_filename (dir, "2-client.yaml", NULL);

    entries = gt_manager_scan (one, 3, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (entries->len, ==, 1);
    g_clear_pointer (&entries, g_ptr_array_unref);
  }
  {
    g_autofree char *missing = g_build_filename (dir, "nope", NULL);

    g_assert_null (gt_manager_scan (missing, 3, &error));
    g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  }
  rm_rf (dir);
}

/* The manager learns the sockets to own from the config model: every key of the listener table,
 * normalized like the server does, whatever YAML spelling gave it; the command line of a worker
 * is not involved. */
static void
test_scan_listener_keys (void)
{
  g_autofree char *dir = g_dir_make_tmp ("gt-test-scan-XXXXXX", NULL);

  for (GtListenerKind kind = 0; kind < GT_N_LISTENERS; kind++)
    {
      const char *key = gt_listener_info (kind)->key;
      g_autofree char *name = g_strdup_printf ("%u-%s.yaml", kind, key);
      g_autofree char *path = g_build_filename (dir, name, NULL);
      /* Flow style, an anchor and an alias: the real loader reads them all. */
      g_autofree char *yaml = g_strdup_printf ("type: server\n"
                                               "port: &p '95%02u'\n"
                                               "options: {%s: *p, timeout: 5s}\n",
                                               kind, key);
      g_autofree char *expected = g_strdup_printf ("0.0.0.0:95%02u", kind);
      /* A UDP listener's socket is told apart from a TCP one on the same address. */
      g_autofree char *expected_key = g_strdup_printf (
        "%s0.0.0.0:95%02u", gt_listener_info (kind)->datagram ? "udp:" : "", kind);
      g_autoptr (GtServerConfig) config = gt_server_config_new ();
      g_autoptr (GPtrArray) entries = NULL;
      g_autoptr (GError) error = NULL;
      GtManagerEntry *e;

      write_file (dir, name, yaml);
      entries = gt_manager_scan (path, 0, &error);
      g_assert_no_error (error);
      g_assert_cmpuint (entries->len, ==, 1);
      e = entries->pdata[0];
      g_assert_no_error (e->error);
      g_assert_cmpint (e->kind, ==, GT_CONFIG_KIND_SERVER);
      g_assert_cmpuint (g_hash_table_size (e->listen_addrs), ==, 1);
      g_assert_cmpstr (g_hash_table_lookup (e->listen_addrs, key), ==, expected_key);

      /* The same address the server itself would listen on. */
      g_assert_true (gt_server_config_load_file (config, path, NULL, &error));
      g_assert_no_error (error);
      g_assert_cmpstr (gt_listener_get_addr (config, kind), ==, expected);
    }
  rm_rf (dir);
}

/* Two server configs may not own the same socket, whichever listener keys name it. */
static void
test_scan_listener_conflict (void)
{
  g_autofree char *dir = g_dir_make_tmp ("gt-test-scan-XXXXXX", NULL);
  g_autoptr (GPtrArray) entries = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *expected = NULL;
  GtManagerEntry *e;

  write_file (dir, "a.yaml", "type: server\noptions:\n  sniAddr: 127.0.0.1:9601\n");
  write_file (dir, "b.yaml", "type: server\noptions:\n  addr: 127.0.0.1:9602\n"
                             "  tlsAddr: 127.0.0.1:9601\n");
  entries = gt_manager_scan (dir, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (entries->len, ==, 2);
  e = entries->pdata[0];
  g_assert_no_error (e->error);
  e = entries->pdata[1];
  g_assert_nonnull (e->error);
  expected = g_strdup_printf ("%s/b.yaml: options.tlsAddr 127.0.0.1:9601 is already used by "
                              "%s/a.yaml",
                              dir, dir);
  g_assert_cmpstr (e->error->message, ==, expected);
  rm_rf (dir);
}

static void
assert_place (const GtManagerEntry *e, const char *dir, const char *name, const char *place)
{
  g_autofree char *prefix = g_strdup_printf ("%s/%s:%s", dir, name, place);

  g_assert_nonnull (e->error);
  g_test_message ("%s", e->error->message);
  if (!g_str_has_prefix (e->error->message, prefix))
    g_error ("expected '%s...', got '%s'", prefix, e->error->message);
}

static void
test_scan_broken (void)
{
  g_autofree char *dir = g_dir_make_tmp ("gt-test-scan-XXXXXX", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) entries = NULL;

  write_server (dir, "a-good.yaml", 9001);
  write_file (dir, "b-syntax.yaml", "type: server\noptions:\n  addr: [1, 2\n");
  write_file (dir, "c-value.yaml", "type: server\noptions:\n  addr: 127.0.0.1:9002\n  timeout: soon\n");
  write_file (dir, "d-type.yaml", "type: spaceship\n");
  write_file (dir, "e-client.yaml", "services:\n  - local: ftp://x\noptions:\n  id: a\n  secret: b\n"
                                    "  remote: tcp://127.0.0.1:1\n");
  write_server (dir, "f-same-addr.yaml", 9001);
  {
    g_autofree char *dangling = g_build_filename (dir, "g-dangling.yaml", NULL);

    g_assert_no_errno (symlink ("/nonexistent/x.yaml", dangling));
  }
  write_file (dir, "h-good.yaml", client_yaml);

  entries = gt_manager_scan (dir, 0, &error);
  g_assert_no_error (error);
  /* The dangling link is not a regular file: not listed. */
  g_assert_cmpuint (entries->len, ==, 7);
  g_assert_no_error (((GtManagerEntry *) entries->pdata[0])->error);
  assert_place (entries->pdata[1], dir, "b-syntax.yaml", "4:1:");
  assert_place (entries->pdata[2], dir, "c-value.yaml", "4:12:");
  assert_place (entries->pdata[3], dir, "d-type.yaml", "1:7:");
  assert_place (entries->pdata[4], dir, "e-client.yaml", "2:");
  g_assert_nonnull (strstr (((GtManagerEntry *) entries->pdata[5])->error->message,
                            "already used by"));
  g_assert_no_error (((GtManagerEntry *) entries->pdata[6])->error);
  rm_rf (dir);
}

static gboolean saw_broken_place;

static void
manager_log_cb (const char *domain, GLogLevelFlags level, const char *message, gpointer data)
{
  if (strstr (message, "broken.yaml:2:") != NULL)
    saw_broken_place = TRUE;
}

static void
test_manager_no_config (void)
{
  g_autofree char *dir = g_dir_make_tmp ("gt-test-mgr-XXXXXX", NULL);
  g_autofree char *rt = g_build_filename (dir, "run", NULL);
  g_autofree char *cfg = g_build_filename (dir, "cfg", NULL);
  g_autofree char *pid_path = g_build_filename (rt, "manager.pid", NULL);
  g_autoptr (GError) error = NULL;

  g_setenv ("GT_RUNTIME_DIR", rt, TRUE);
  write_file (cfg, "broken.yaml", "options: [\n");
  {
  GLogLevelFlags fatal;
  guint handler;

  /* The manager's warnings are expected here: caught, not fatal. */
  fatal = g_log_set_always_fatal (G_LOG_FATAL_MASK);
  handler = g_log_set_handler ("gt-manager", G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE,
                               manager_log_cb, NULL);
  g_assert_cmpint (gt_manager_run (cfg, 3, &error), ==, 1);
  g_log_remove_handler ("gt-manager", handler);
  g_log_set_always_fatal (fatal);
  }
  g_assert_true (saw_broken_place);
  g_assert_error (error, GT_MANAGER_ERROR, GT_MANAGER_ERROR_NO_CONFIG);
  /* No pid file left behind. */
  g_assert_false (g_file_test (pid_path, G_FILE_TEST_EXISTS));
  g_unsetenv ("GT_RUNTIME_DIR");
  rm_rf (dir);
}

int
main (int argc, char **argv)
{
  if (g_strcmp0 (g_getenv ("GT_TEST_CHILD"), "listen-fds") == 0)
    return listen_fds_child ();

  g_test_init (&argc, &argv, NULL);
  self_exe = g_file_read_link ("/proc/self/exe", NULL);

  g_test_add_func ("/gt/manager/systemd/listen-fds/named", test_listen_fds_named);
  g_test_add_func ("/gt/manager/systemd/listen-fds/unnamed", test_listen_fds_unnamed);
  g_test_add_func ("/gt/manager/systemd/listen-fds/pid", test_listen_fds_pid);
  g_test_add_func ("/gt/manager/systemd/listen-fds/none", test_listen_fds_none);
  g_test_add_func ("/gt/manager/systemd/notify/abstract", test_notify_abstract);
  g_test_add_func ("/gt/manager/systemd/notify/path", test_notify_path);
  g_test_add_func ("/gt/manager/systemd/watchdog", test_watchdog);
  g_test_add_func ("/gt/manager/pid-file", test_pid_file);
  g_test_add_func ("/gt/manager/runtime-dir", test_runtime_dir);
  g_test_add_func ("/gt/manager/scan/depth", test_scan_depth);
  g_test_add_func ("/gt/manager/scan/size-limit", test_scan_size_limit);
  g_test_add_func ("/gt/manager/scan/classify", test_scan_classify);
  g_test_add_func ("/gt/manager/scan/broken", test_scan_broken);
  g_test_add_func ("/gt/manager/scan/listener-keys", test_scan_listener_keys);
  g_test_add_func ("/gt/manager/scan/listener-conflict", test_scan_listener_conflict);
  g_test_add_func ("/gt/manager/run/no-config", test_manager_no_config);
  return g_test_run ();
}
