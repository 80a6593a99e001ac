/* test-manager.c (integration): `gt -c DIR` supervising real server and client workers on
 * 127.0.0.1: broken files, crash restarts, reload, restart under a download, stop, -s errors,
 * connection churn (a new connection per request) across reload and restart, sd_notify order and
 * socket activation. Uses the gt binary from $GT_BINARY. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "gt-test-utils.h"

#define SECRET "manager-test-secret"
#define BIG_SIZE (50 * 1024 * 1024)
#define BIG_CHUNK (256 * 1024)

/* ------------------------------------------------------------------------------------------ */
/* Local HTTP services, TCP services of the harness: each answers "/" with its name, "/big" with
 * BIG_SIZE pattern bytes paced over ~3 s, "/slow" with 1 MiB over ~2 s. */

typedef struct
{
  char *name;
  guint16 port;
} Service;

static void
pattern_fill (guint8 *buf, gsize offset, gsize len)
{
  for (gsize i = 0; i < len; i++)
    {
      guint64 x = offset + i;

      buf[i] = (guint8) ((x * 2654435761u) >> 13);
    }
}

static gboolean
service_run_cb (GThreadedSocketService *service, GSocketConnection *conn, GObject *source,
                gpointer user_data)
{
  Service *svc = user_data;
  GInputStream *in = g_io_stream_get_input_stream (G_IO_STREAM (conn));
  GOutputStream *out = g_io_stream_get_output_stream (G_IO_STREAM (conn));
  g_autoptr (GString) head = g_string_new (NULL);
  g_autofree char *header = NULL;
  char c;
  gsize total = 0, chunk = 0, pause_us = 0;
  const char *path;

  g_socket_set_timeout (g_socket_connection_get_socket (conn), 30);
  while (!g_str_has_suffix (head->str, "\r\n\r\n") && head->len < 8192)
    {
      if (g_input_stream_read (in, &c, 1, NULL, NULL) != 1)
        return TRUE;
      g_string_append_c (head, c);
    }
  path = head->str + 4; /* "GET " */
  if (g_str_has_prefix (path, "/big "))
    total = BIG_SIZE, chunk = BIG_CHUNK, pause_us = 15000;
  else if (g_str_has_prefix (path, "/slow "))
    total = 1024 * 1024, chunk = 16 * 1024, pause_us = 30000;

  if (total == 0)
    {
      g_autofree char *body = g_strdup_printf ("service %s\n", svc->name);

      header = g_strdup_printf (
          "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s", strlen (body),
          body);
      g_output_stream_write_all (out, header, strlen (header), NULL, NULL, NULL);
      return TRUE;
    }
  header = g_strdup_printf ("HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                            total);
  if (!g_output_stream_write_all (out, header, strlen (header), NULL, NULL, NULL))
    return TRUE;
  {
    g_autofree guint8 *buf = g_malloc (chunk);

    for (gsize off = 0; off < total; off += chunk)
      {
        gsize n = MIN (chunk, total - off);

        pattern_fill (buf, off, n);
        if (!g_output_stream_write_all (out, buf, n, NULL, NULL, NULL))
          return TRUE;
        g_usleep (pause_us);
      }
  }
  return TRUE;
}

/* The harness stops the service at the end of the test, before the fixture frees svc. */
static Service *
service_start (const char *name)
{
  Service *svc = g_new0 (Service, 1);

  svc->name = g_strdup (name);
  svc->port = gt_test_tcp_service_start (G_CALLBACK (service_run_cb), svc)->port;
  return svc;
}

static void
service_free (Service *svc)
{
  g_free (svc->name);
  g_free (svc);
}

/* ------------------------------------------------------------------------------------------ */
/* HTTP through gt */

typedef struct
{
  int status;    /* 0: no response */
  gsize body_len;
  char *body;    /* first 256 bytes */
  char *sha256;
  char *error;
} Response;

static void
response_free (Response *r)
{
  g_free (r->body);
  g_free (r->sha256);
  g_free (r->error);
  g_free (r);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Response, response_free)

static Response *
http_get (guint16 port, const char *host, const char *path)
{
  Response *r = g_new0 (Response, 1);
  g_autoptr (GSocketClient) client = g_socket_client_new ();
  g_autoptr (GSocketConnection) conn = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GString) head = g_string_new (NULL);
  g_autoptr (GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  g_autofree char *req = NULL;
  g_autofree guint8 *buf = g_malloc (65536);
  gboolean in_body = FALSE;
  gssize n;

  g_socket_client_set_timeout (client, 20);
  conn = g_socket_client_connect_to_host (client, "127.0.0.1", port, NULL, &error);
  if (conn == NULL)
    {
      r->error = g_strdup (error->message);
      return r;
    }
  req = g_strdup_printf ("GET %s HTTP/1.1\r\nHost: %s.example.com\r\nConnection: close\r\n\r\n",
                         path, host);
  if (!g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (conn)), req,
                                  strlen (req), NULL, NULL, &error))
    {
      r->error = g_strdup (error->message);
      return r;
    }
  while ((n = g_input_stream_read (g_io_stream_get_input_stream (G_IO_STREAM (conn)), buf, 65536,
                                   NULL, &error)) > 0)
    {
      gsize off = 0;

      if (!in_body)
        {
          const char *end;

          g_string_append_len (head, (const char *) buf, n);
          end = strstr (head->str, "\r\n\r\n");
          if (end == NULL)
            continue;
          in_body = TRUE;
          sscanf (head->str, "HTTP/1.%*d %d", &r->status);
          off = n - (head->len - (end + 4 - head->str));
        }
      g_checksum_update (sum, buf + off, n - off);
      if (r->body_len < 256)
        {
          gsize keep = MIN ((gsize) n - off, 256 - r->body_len);
          char *b = g_realloc (r->body, r->body_len + keep + 1);

          memcpy (b + r->body_len, buf + off, keep);
          b[r->body_len + keep] = '\0';
          r->body = b;
        }
      r->body_len += n - off;
    }
  if (n < 0)
    r->error = g_strdup (error->message);
  r->sha256 = g_strdup (g_checksum_get_string (sum));
  return r;
}

static char *
big_sha256 (void)
{
  g_autoptr (GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  g_autofree guint8 *buf = g_malloc (BIG_CHUNK);

  for (gsize off = 0; off < BIG_SIZE; off += BIG_CHUNK)
    {
      pattern_fill (buf, off, BIG_CHUNK);
      g_checksum_update (sum, buf, BIG_CHUNK);
    }
  return g_strdup (g_checksum_get_string (sum));
}

/* Status of GET / on host (0 when no answer). */
static int
route_status (guint16 port, const char *host)
{
  g_autoptr (Response) r = http_get (port, host, "/");

  return r->status;
}

/* Waits up to timeout_ms for GET / on host to answer `want`; returns the ms it took, or -1. */
static gint64
wait_route (guint16 port, const char *host, int want, guint timeout_ms)
{
  gint64 start = g_get_monotonic_time ();

  while (g_get_monotonic_time () - start < (gint64) timeout_ms * 1000)
    {
      if (route_status (port, host) == want)
        return (g_get_monotonic_time () - start) / 1000;
      g_usleep (50 * 1000);
    }
  return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Fixture: a temp dir with cfg/ and run/, a manager process, local services */

typedef struct
{
  char *dir;
  char *cfg;
  char *run;
  char *log;
  GSubprocess *manager;
  Service *svc[3];
  guint16 server_port[2];
} Fixture;

static const char *
gt_binary (void)
{
  return gt_test_binary () != NULL ? gt_test_binary () : "gt";
}

static void
write_cfg (Fixture *f, const char *name, const char *text)
{
  g_autofree char *path = g_build_filename (f->cfg, name, NULL);
  g_autoptr (GError) error = NULL;

  g_file_set_contents (path, text, -1, &error);
  g_assert_no_error (error);
}

static void
write_server (Fixture *f, const char *name, const char *user, guint16 port)
{
  g_autofree char *text = g_strdup_printf ("type: server\n"
                                           "users:\n"
                                           "  %s:\n"
                                           "    secret: " SECRET "\n"
                                           "options:\n"
                                           "  addr: 127.0.0.1:%u\n",
                                           user, port);

  write_cfg (f, name, text);
}

/* services: "prefix=port,prefix=port"; options: more lines under options (NULL: a short
 * reconnectDelay). */
static void
write_client_with (Fixture *f, const char *name, const char *user, guint16 server_port,
                   const char *services, const char *options)
{
  g_autoptr (GString) s = g_string_new ("type: client\nservices:\n");
  g_auto (GStrv) items = g_strsplit (services, ",", -1);

  for (guint i = 0; items[i] != NULL; i++)
    {
      g_auto (GStrv) kv = g_strsplit (items[i], "=", 2);

      g_string_append_printf (s, "  - local: http://127.0.0.1:%s\n    hostPrefix: %s\n", kv[1],
                              kv[0]);
    }
  g_string_append_printf (s,
                          "options:\n  id: %s\n  secret: " SECRET "\n"
                          "  remote: tcp://127.0.0.1:%u\n%s",
                          user, server_port, options ? options : "  reconnectDelay: 100ms\n");
  write_cfg (f, name, s->str);
}

static void
write_client (Fixture *f, const char *name, const char *user, guint16 server_port,
              const char *services)
{
  write_client_with (f, name, user, server_port, services, NULL);
}

static void
die_with_test_cb (gpointer data)
{
  /* A failed assertion aborts the test without teardown: the manager must not outlive it. */
  prctl (PR_SET_PDEATHSIG, SIGTERM);
}

static GSubprocessLauncher *
launcher_new (Fixture *f)
{
  GSubprocessLauncher *l = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_NONE);

  g_subprocess_launcher_set_child_setup (l, die_with_test_cb, NULL, NULL);
  g_subprocess_launcher_setenv (l, "GT_RUNTIME_DIR", f->run, TRUE);
  g_subprocess_launcher_setenv (l, "GT_MANAGER_STOP_TIMEOUT", "10s", TRUE);
  g_subprocess_launcher_setenv (l, "GT_MANAGER_READY_TIMEOUT", "5s", TRUE);
  g_subprocess_launcher_unsetenv (l, "NOTIFY_SOCKET");
  g_subprocess_launcher_unsetenv (l, "LISTEN_FDS");
  return l;
}

static void
manager_start_with (Fixture *f, GSubprocessLauncher *l)
{
  g_autoptr (GError) error = NULL;

  g_subprocess_launcher_set_stderr_file_path (l, f->log);
  f->manager = g_subprocess_launcher_spawn (l, &error, gt_binary (), "-c", f->cfg, NULL);
  g_assert_no_error (error);
}

static void
manager_start (Fixture *f)
{
  g_autoptr (GSubprocessLauncher) l = launcher_new (f);

  manager_start_with (f, l);
}

static char *
manager_log (Fixture *f)
{
  char *text = NULL;

  g_file_get_contents (f->log, &text, NULL, NULL);
  return text != NULL ? text : g_strdup ("");
}

/* Runs `gt -s NAME`; returns its exit code, stderr in *err_out. */
static int
gt_signal (Fixture *f, const char *name, char **err_out)
{
  g_autoptr (GSubprocessLauncher) l = launcher_new (f);
  g_autoptr (GSubprocess) sp = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *out = NULL, *err = NULL;

  g_subprocess_launcher_set_flags (l,
                                   G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE);
  sp = g_subprocess_launcher_spawn (l, &error, gt_binary (), "-s", name, NULL);
  g_assert_no_error (error);
  g_subprocess_communicate_utf8 (sp, NULL, NULL, &out, &err, &error);
  g_assert_no_error (error);
  if (err_out != NULL)
    *err_out = g_strdup_printf ("%s%s", out ? out : "", err ? err : "");
  return g_subprocess_get_if_exited (sp) ? g_subprocess_get_exit_status (sp) : -1;
}

/* The pid of the newest worker started for config `name`, from the manager's log. */
static GPid
worker_pid (Fixture *f, const char *name)
{
  g_autofree char *log = manager_log (f);
  g_autofree char *needle = g_strdup_printf ("started worker %s (", name);
  const char *p = log, *hit = NULL;
  GPid pid = 0;

  while ((p = strstr (p, needle)) != NULL)
    hit = p++;
  if (hit != NULL)
    {
      const char *q = strstr (hit, "pid ");

      if (q != NULL)
        pid = (GPid) atoi (q + 4);
    }
  return pid;
}

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  gt_test_setup ();
  f->dir = g_strdup (gt_test_tmpdir ());
  f->cfg = g_build_filename (f->dir, "cfg", NULL);
  f->run = g_build_filename (f->dir, "run", NULL);
  f->log = g_build_filename (f->dir, "manager.log", NULL);
  g_mkdir (f->cfg, 0700);
  g_mkdir (f->run, 0700);
  f->svc[0] = service_start ("alpha");
  f->svc[1] = service_start ("beta");
  f->svc[2] = service_start ("gamma");
  f->server_port[0] = gt_test_free_port ();
  f->server_port[1] = gt_test_free_port ();
}

static void
wait_done_cb (GObject *source, GAsyncResult *result, gpointer data)
{
  g_subprocess_wait_finish (G_SUBPROCESS (source), result, NULL);
  *(gboolean *) data = TRUE;
}

/* TRUE when sp exited within timeout_ms. */
static gboolean
wait_exit (GSubprocess *sp, guint timeout_ms)
{
  gint64 deadline = g_get_monotonic_time () + (gint64) timeout_ms * 1000;
  gboolean done = FALSE;

  g_subprocess_wait_async (sp, NULL, wait_done_cb, &done);
  while (!done && g_get_monotonic_time () < deadline)
    {
      g_main_context_iteration (NULL, FALSE);
      if (!done)
        g_usleep (10 * 1000);
    }
  /* Leave no callback pointing at our stack. */
  while (!done)
    {
      g_subprocess_force_exit (sp);
      g_main_context_iteration (NULL, TRUE);
    }
  return g_get_monotonic_time () < deadline;
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  if (f->manager != NULL)
    {
      g_subprocess_send_signal (f->manager, SIGTERM);
      if (!wait_exit (f->manager, 15000))
        g_test_message ("manager did not stop on SIGTERM within 15 s");
      /* Workers have PR_SET_PDEATHSIG: they go with the manager. */
      g_subprocess_force_exit (f->manager);
      g_subprocess_wait (f->manager, NULL, NULL);
      if (g_test_failed ())
        {
          g_autofree char *log = manager_log (f);

          g_test_message ("manager log:\n%s", log);
        }
      g_clear_object (&f->manager);
    }
  g_free (f->dir);
  g_free (f->cfg);
  g_free (f->run);
  g_free (f->log);
  gt_test_teardown (); /* stops the services, removes the temp dir */
  for (guint i = 0; i < G_N_ELEMENTS (f->svc); i++)
    g_clear_pointer (&f->svc[i], service_free);
}

/* 2 servers + 2 clients (alpha, beta on server 0; gamma on server 1) + a broken file. */
static void
setup_four (Fixture *f)
{
  g_autofree char *a = g_strdup_printf ("alpha=%u,beta=%u", f->svc[0]->port, f->svc[1]->port);
  g_autofree char *g = g_strdup_printf ("gamma=%u", f->svc[2]->port);

  write_server (f, "s0.yaml", "u0", f->server_port[0]);
  write_server (f, "s1.yaml", "u1", f->server_port[1]);
  write_client (f, "c0.yaml", "u0", f->server_port[0], a);
  write_client (f, "c1.yaml", "u1", f->server_port[1], g);
  write_cfg (f, "zz-broken.yaml", "type: server\noptions:\n  addr: [\n");
  manager_start (f);
  g_assert_cmpint (wait_route (f->server_port[0], "alpha", 200, 10000), >=, 0);
  g_assert_cmpint (wait_route (f->server_port[0], "beta", 200, 10000), >=, 0);
  g_assert_cmpint (wait_route (f->server_port[1], "gamma", 200, 10000), >=, 0);
}

static void
test_dir (Fixture *f, gconstpointer data)
{
  g_autoptr (Response) r = NULL;
  g_autofree char *log = NULL;
  g_autofree char *place = NULL;

  setup_four (f);
  r = http_get (f->server_port[1], "gamma", "/");
  g_assert_cmpint (r->status, ==, 200);
  g_assert_cmpstr (r->body, ==, "service gamma\n");
  /* Hosts are per server. */
  g_assert_cmpint (route_status (f->server_port[1], "alpha"), ==, 404);
  log = manager_log (f);
  place = g_strdup_printf ("%s/zz-broken.yaml:4:1:", f->cfg);
  g_assert_nonnull (strstr (log, place));
  g_assert_nonnull (strstr (log, "4 workers running"));
}

static void
test_kill_worker (Fixture *f, gconstpointer data)
{
  const char *names[] = { "c0.yaml", "s0.yaml" };

  setup_four (f);
  for (guint i = 0; i < G_N_ELEMENTS (names); i++)
    {
      GPid pid = worker_pid (f, names[i]);
      gint64 took;

      g_assert_cmpint (pid, >, 0);
      g_assert_no_errno (kill (pid, SIGKILL));
      took = wait_route (f->server_port[0], "alpha", 200, 2000);
      g_test_message ("%s killed: traffic again after %" G_GINT64_FORMAT " ms", names[i], took);
      /* Within 2 s, and by a new worker. */
      g_assert_cmpint (took, >=, 0);
      g_assert_cmpint (worker_pid (f, names[i]), !=, pid);
      {
        g_autofree char *log = manager_log (f);
        g_autofree char *why = g_strdup_printf ("pid %d) killed by signal SIGKILL", (int) pid);

        g_assert_nonnull (strstr (log, why));
      }
    }
  /* The server on the other port did not notice. */
  g_assert_cmpint (route_status (f->server_port[1], "gamma"), ==, 200);
}

typedef struct
{
  guint16 port;
  const char *host;
  const char *path;
  Response *response;
} Download;

static gpointer
download_thread (gpointer data)
{
  Download *d = data;

  d->response = http_get (d->port, d->host, d->path);
  return NULL;
}

static void
test_reload (Fixture *f, gconstpointer data)
{
  g_autofree char *services = NULL;
  g_autofree char *err = NULL;
  g_autofree char *c1 = g_build_filename (f->cfg, "c1.yaml", NULL);
  Download slow = { f->server_port[0], "beta", "/slow", NULL };
  GThread *t;
  GPid s0, s1;

  setup_four (f);
  s0 = worker_pid (f, "s0.yaml");
  s1 = worker_pid (f, "s1.yaml");
  /* A stream on a client that is not touched by the reload. */
  t = g_thread_new ("slow", download_thread, &slow);
  g_usleep (200 * 1000);

  /* c0: alpha removed, delta added (served by gamma's service); c1 removed. */
  services = g_strdup_printf ("beta=%u,delta=%u", f->svc[1]->port, f->svc[2]->port);
  write_client (f, "c0.yaml", "u0", f->server_port[0], services);
  g_unlink (c1);
  g_assert_cmpint (gt_signal (f, "reload", &err), ==, 0);
  g_test_message ("gt -s reload: %s", err);

  g_assert_cmpint (wait_route (f->server_port[0], "delta", 200, 3000), >=, 0);
  g_assert_cmpint (wait_route (f->server_port[0], "alpha", 404, 3000), >=, 0);
  g_assert_cmpint (wait_route (f->server_port[1], "gamma", 404, 3000), >=, 0);
  g_assert_cmpint (route_status (f->server_port[0], "beta"), ==, 200);
  /* Unchanged servers kept running. */
  g_assert_cmpint (worker_pid (f, "s0.yaml"), ==, s0);
  g_assert_cmpint (worker_pid (f, "s1.yaml"), ==, s1);
  g_assert_cmpint (kill (s0, 0), ==, 0);

  g_thread_join (t);
  g_assert_null (slow.response->error);
  g_assert_cmpint (slow.response->status, ==, 200);
  g_assert_cmpuint (slow.response->body_len, ==, 1024 * 1024);
  response_free (slow.response);
}

static void
test_restart_download (Fixture *f, gconstpointer data)
{
  g_autofree char *want = big_sha256 ();
  g_autofree char *err = NULL;
  Download big = { 0, "alpha", "/big", NULL };
  GThread *t;
  GPid s0, c0;

  setup_four (f);
  s0 = worker_pid (f, "s0.yaml");
  c0 = worker_pid (f, "c0.yaml");
  big.port = f->server_port[0];
  t = g_thread_new ("big", download_thread, &big);
  g_usleep (500 * 1000);
  g_assert_cmpint (gt_signal (f, "restart", &err), ==, 0);
  g_test_message ("gt -s restart: %s", err);
  /* New processes, routes keep working. */
  g_assert_cmpint (worker_pid (f, "s0.yaml"), !=, s0);
  g_assert_cmpint (worker_pid (f, "c0.yaml"), !=, c0);
  g_assert_cmpint (route_status (f->server_port[0], "beta"), ==, 200);
  g_thread_join (t);
  g_assert_null (big.response->error);
  g_assert_cmpint (big.response->status, ==, 200);
  g_assert_cmpuint (big.response->body_len, ==, BIG_SIZE);
  g_assert_cmpstr (big.response->sha256, ==, want);
  response_free (big.response);
}

static void
test_stop (Fixture *f, gconstpointer data)
{
  g_autofree char *err = NULL;
  GPid workers[4];
  const char *names[] = { "s0.yaml", "s1.yaml", "c0.yaml", "c1.yaml" };
  g_autofree char *pid_file = g_build_filename (f->run, "manager.pid", NULL);

  setup_four (f);
  for (guint i = 0; i < 4; i++)
    workers[i] = worker_pid (f, names[i]);
  g_assert_true (g_file_test (pid_file, G_FILE_TEST_EXISTS));
  g_assert_cmpint (gt_signal (f, "stop", &err), ==, 0);
  g_assert_true (wait_exit (f->manager, 15000));
  g_assert_true (g_subprocess_get_if_exited (f->manager));
  g_assert_cmpint (g_subprocess_get_exit_status (f->manager), ==, 0);
  for (guint i = 0; i < 4; i++)
    g_assert_true (kill (workers[i], 0) < 0 && errno == ESRCH);
  g_assert_false (g_file_test (pid_file, G_FILE_TEST_EXISTS));
  {
    g_autofree char *log = manager_log (f);

    /* Each worker was asked to stop (SIGTERM) and exited by itself with 0. */
    for (guint i = 0; i < 4; i++)
      {
        g_autofree char *ok = g_strdup_printf ("pid %d) exited with code 0", (int) workers[i]);

        g_assert_nonnull (strstr (log, ok));
      }
  }
  /* Nobody home now. */
  g_clear_pointer (&err, g_free);
  g_assert_cmpint (gt_signal (f, "reload", &err), ==, 1);
  g_assert_nonnull (strstr (err, "no gt manager is running"));
}

static void
test_no_manager (Fixture *f, gconstpointer data)
{
  const char *names[] = { "reload", "restart", "stop" };

  for (guint i = 0; i < G_N_ELEMENTS (names); i++)
    {
      g_autofree char *err = NULL;

      g_assert_cmpint (gt_signal (f, names[i], &err), ==, 1);
      g_test_message ("gt -s %s: %s", names[i], err);
      g_assert_nonnull (strstr (err, "no gt manager is running"));
    }
}

/* Reads datagrams from a notify socket until `n_keys` of READY=1/RELOADING=1/STOPPING=1 arrived. */
static void
notify_collect (int fd, GString *keys, guint n_keys, guint timeout_ms)
{
  gint64 start = g_get_monotonic_time ();
  guint have = 0;

  for (guint i = 0; i < keys->len; i++)
    have += keys->str[i] == ' ';
  while (have < n_keys && g_get_monotonic_time () - start < (gint64) timeout_ms * 1000)
    {
      char buf[1024];
      ssize_t n = recv (fd, buf, sizeof buf - 1, MSG_DONTWAIT);
      g_auto (GStrv) lines = NULL;

      if (n < 0)
        {
          g_usleep (20 * 1000);
          continue;
        }
      buf[n] = '\0';
      lines = g_strsplit (buf, "\n", -1);
      for (guint i = 0; lines[i] != NULL; i++)
        {
          if (strcmp (lines[i], "READY=1") == 0 || strcmp (lines[i], "RELOADING=1") == 0
              || strcmp (lines[i], "STOPPING=1") == 0)
            {
              g_string_append_printf (keys, "%.*s ", (int) (strchr (lines[i], '=') - lines[i]),
                                      lines[i]);
              have++;
            }
          if (g_str_has_prefix (lines[i], "RELOADING=1"))
            g_assert_nonnull (strstr (buf, "MONOTONIC_USEC="));
        }
    }
}

static void
test_sd_notify (Fixture *f, gconstpointer data)
{
  g_autoptr (GSubprocessLauncher) l = launcher_new (f);
  g_autofree char *address = g_strdup_printf ("@gt-itest-notify-%d-%u", (int) getpid (),
                                              g_random_int ());
  g_autoptr (GString) keys = g_string_new (NULL);
  g_autofree char *g = g_strdup_printf ("gamma=%u", f->svc[2]->port);
  g_autofree char *err = NULL;
  struct sockaddr_un sa = { 0 };
  int fd;

  fd = socket (AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sa.sun_family = AF_UNIX;
  memcpy (sa.sun_path + 1, address + 1, strlen (address) - 1);
  g_assert_no_errno (bind (fd, (struct sockaddr *) &sa,
                           offsetof (struct sockaddr_un, sun_path) + strlen (address)));
  write_server (f, "s1.yaml", "u1", f->server_port[1]);
  write_client (f, "c1.yaml", "u1", f->server_port[1], g);
  g_subprocess_launcher_setenv (l, "NOTIFY_SOCKET", address, TRUE);
  manager_start_with (f, l);

  notify_collect (fd, keys, 1, 10000);
  g_assert_cmpstr (keys->str, ==, "READY ");
  /* READY=1 came after the workers were ready. */
  g_assert_cmpint (route_status (f->server_port[1], "gamma"), ==, 200);
  g_assert_cmpint (gt_signal (f, "reload", &err), ==, 0);
  notify_collect (fd, keys, 3, 10000);
  g_assert_cmpstr (keys->str, ==, "READY RELOADING READY ");
  g_subprocess_send_signal (f->manager, SIGTERM);
  notify_collect (fd, keys, 4, 10000);
  g_assert_cmpstr (keys->str, ==, "READY RELOADING READY STOPPING ");
  g_assert_true (wait_exit (f->manager, 15000));
  g_assert_cmpint (g_subprocess_get_exit_status (f->manager), ==, 0);
  close (fd);
}

static void
test_socket_activation (Fixture *f, gconstpointer data)
{
  g_autoptr (GSubprocessLauncher) l = launcher_new (f);
  g_autofree char *g = g_strdup_printf ("gamma=%u", f->svc[2]->port);
  struct sockaddr_in sin = { 0 };
  socklen_t len = sizeof sin;
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  guint16 port;
  int probe;

  /* Like systemd: the socket exists and queues connections before gt runs. */
  setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  g_assert_no_errno (bind (fd, (struct sockaddr *) &sin, sizeof sin));
  g_assert_no_errno (listen (fd, 64));
  g_assert_no_errno (getsockname (fd, (struct sockaddr *) &sin, &len));
  port = ntohs (sin.sin_port);
  probe = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  g_assert_no_errno (connect (probe, (struct sockaddr *) &sin, sizeof sin));

  write_server (f, "s1.yaml", "u1", port);
  write_client (f, "c1.yaml", "u1", port, g);
  g_subprocess_launcher_take_fd (l, fd, 3);
  g_subprocess_launcher_setenv (l, "LISTEN_FDS", "1", TRUE);
  g_subprocess_launcher_setenv (l, "LISTEN_FDNAMES", "addr", TRUE);
  manager_start_with (f, l);
  g_assert_cmpint (wait_route (port, "gamma", 200, 10000), >=, 0);
  {
    g_autofree char *log = manager_log (f);

    g_assert_nonnull (strstr (log, "socket-activated fd"));
    g_assert_null (strstr (log, "manager listening socket"));
  }
  /* The connection made before gt started is served too (a request with no Host: 400 or 404). */
  {
    const char req[] = "GET / HTTP/1.1\r\nHost: gamma.example.com\r\nConnection: close\r\n\r\n";
    char buf[64] = { 0 };
    struct timeval tv = { 10, 0 };

    setsockopt (probe, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    g_assert_cmpint (write (probe, req, sizeof req - 1), ==, (gssize) sizeof req - 1);
    g_assert_cmpint (read (probe, buf, sizeof buf - 1), >, 12);
    g_assert_true (g_str_has_prefix (buf, "HTTP/1.1 200"));
    close (probe);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Connection churn: a new connection per request while workers are replaced */

#define CHURN_USERS 8

typedef struct
{
  guint16 port;
  volatile gint stop;
  volatile gint ok;
  volatile gint failed;
  gint64 max_us; /* slowest answer, under the mutex */
  GMutex mutex;
  GPtrArray *failures; /* char *, under the mutex */
} Churn;

static gpointer
churn_thread (gpointer data)
{
  Churn *c = data;

  while (!g_atomic_int_get (&c->stop))
    {
      gint64 start = g_get_monotonic_time ();
      g_autoptr (Response) r = http_get (c->port, "alpha", "/");
      gint64 took = g_get_monotonic_time () - start;

      g_mutex_lock (&c->mutex);
      c->max_us = MAX (c->max_us, took);
      if (r->status == 200 && r->error == NULL && g_strcmp0 (r->body, "service alpha\n") == 0)
        c->ok++;
      else
        {
          c->failed++;
          if (c->failures->len < 20)
            {
              const char *why = r->error         ? r->error
                                : r->status == 0 ? "no answer"
                                                 : "wrong answer";

              g_ptr_array_add (c->failures,
                               g_strdup_printf ("status %d after %" G_GINT64_FORMAT " ms: %s",
                                                r->status, took / 1000, why));
            }
        }
      g_mutex_unlock (&c->mutex);
    }
  return NULL;
}

/* Users who open a new connection for every request, to an origin that closes after every answer,
 * while the manager runs reload (client changed), reload (server changed), restart, reload: not
 * one request fails. The client keeps the default reconnectDelay (5 s): moving to a new server
 * after its GOAWAY must not wait for it. */
static void
test_churn (Fixture *f, gconstpointer data)
{
  static const char *const steps[] = { "reload c0", "reload s0", "restart", "reload c0" };
  g_autofree char *services = g_strdup_printf ("alpha=%u", f->svc[0]->port);
  Churn c = { 0 };
  GThread *threads[CHURN_USERS];
  GPid s0, c0;

  write_server (f, "s0.yaml", "u0", f->server_port[0]);
  write_client_with (f, "c0.yaml", "u0", f->server_port[0], services, "");
  manager_start (f);
  g_assert_cmpint (wait_route (f->server_port[0], "alpha", 200, 10000), >=, 0);
  s0 = worker_pid (f, "s0.yaml");
  c0 = worker_pid (f, "c0.yaml");

  c.port = f->server_port[0];
  c.failures = g_ptr_array_new_with_free_func (g_free);
  g_mutex_init (&c.mutex);
  for (guint i = 0; i < CHURN_USERS; i++)
    threads[i] = g_thread_new ("churn", churn_thread, &c);

  for (guint i = 0; i < G_N_ELEMENTS (steps); i++)
    {
      g_autofree char *err = NULL;
      gint ok_before = g_atomic_int_get (&c.ok);

      g_usleep (1500 * 1000);
      if (g_str_has_prefix (steps[i], "reload "))
        {
          /* A real change, so that the worker is replaced. */
          g_autofree char *name = g_strdup_printf ("%s.yaml", steps[i] + 7);
          g_autofree char *path = g_build_filename (f->cfg, name, NULL);
          g_autofree char *text = NULL;
          g_autofree char *changed = NULL;

          g_assert_true (g_file_get_contents (path, &text, NULL, NULL));
          changed = g_strdup_printf ("%s# change %u\n", text, i);
          write_cfg (f, name, changed);
          g_assert_cmpint (gt_signal (f, "reload", &err), ==, 0);
        }
      else
        g_assert_cmpint (gt_signal (f, "restart", &err), ==, 0);
      g_test_message ("%s done; %d requests so far, %d failed", steps[i], g_atomic_int_get (&c.ok),
                      g_atomic_int_get (&c.failed));
      /* Traffic went on during the step. */
      g_assert_cmpint (g_atomic_int_get (&c.ok), >, ok_before);
    }
  g_usleep (1500 * 1000);
  g_atomic_int_set (&c.stop, 1);
  for (guint i = 0; i < CHURN_USERS; i++)
    g_thread_join (threads[i]);

  g_test_message ("churn: %d requests answered, %d failed, slowest %" G_GINT64_FORMAT " ms", c.ok,
                  c.failed, c.max_us / 1000);
  for (guint i = 0; i < c.failures->len; i++)
    g_test_message ("failed: %s", (const char *) c.failures->pdata[i]);
  g_assert_cmpint (c.failed, ==, 0);
  g_assert_cmpint (c.ok, >=, 100);
  /* No answer waited for a client's reconnect delay (5 s). */
  g_assert_cmpint (c.max_us, <, 4 * G_USEC_PER_SEC);
  g_assert_cmpint (worker_pid (f, "s0.yaml"), !=, s0);
  g_assert_cmpint (worker_pid (f, "c0.yaml"), !=, c0);
  g_ptr_array_unref (c.failures);
  g_mutex_clear (&c.mutex);
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, 0);

#define ADD(path, fn)                                                                              \
  g_test_add ("/gt/manager/integration/" path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  ADD ("dir-with-broken-file", test_dir);
  ADD ("kill-worker", test_kill_worker);
  ADD ("reload", test_reload);
  ADD ("restart-download", test_restart_download);
  ADD ("churn", test_churn);
  ADD ("stop", test_stop);
  ADD ("no-manager", test_no_manager);
  ADD ("sd-notify", test_sd_notify);
  ADD ("socket-activation", test_socket_activation);
#undef ADD
  return gt_test_run ();
}
