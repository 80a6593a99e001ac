/* The integration test harness: gt child processes, in-test services, raw HTTP clients, cleanup. */
#define G_LOG_DOMAIN "gt-test"

#include "gt-test-utils.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib/gstdio.h>

/* ------------------------------------------------------------------------------------------ */
/* Shared state: one lock and one condition for everything the service thread updates. */

static GMutex state_lock;
static GCond state_cond;
static GMainContext *service_ctx;
static GMainLoop *service_loop;
static GThread *service_thread;
static GPtrArray *live_procs; /* GtTestProc *, under state_lock; read by the abort handler */
static guint8 *pattern;       /* deterministic bytes served by /bytes and used as bodies */
static gsize pattern_size;
static gboolean verbose_logs;

/* The running test's state; the tmpdir name is read by the abort handler. */
static GPtrArray *test_procs;        /* GtTestProc *, one reference each */
static GPtrArray *test_locals;       /* GtTestHttp * */
static GPtrArray *test_tcp_services; /* GtTestTcpService * */
static GtTestTcpService *test_tcp_echo;
static char *test_tmpdir;

static void proc_unref (GtTestProc *p);

gint64
gt_test_deadline_in (guint ms)
{
  return g_get_monotonic_time () + (gint64)ms * 1000 * gt_test_time_scale ();
}

/* ------------------------------------------------------------------------------------------ */
/* Memcheck: with GT_VALGRIND set (build-aux/dev valgrind), every gt child runs under valgrind. */

gboolean
gt_test_under_valgrind (void)
{
  const char *v = g_getenv ("GT_VALGRIND");

  return v != NULL && *v != '\0' && strcmp (v, "0") != 0;
}

guint
gt_test_time_scale (void)
{
  const char *v = g_getenv ("GT_TEST_TIME_SCALE");
  guint64 n;

  if (v != NULL && g_ascii_string_to_unsigned (v, 10, 1, 100, &n, NULL))
    return (guint) n;
  /* gt starts and runs some 10-50 times slower under memcheck. */
  return gt_test_under_valgrind () ? 10 : 1;
}

gboolean
gt_test_checks_resources (void)
{
  static gsize said;

  if (!gt_test_under_valgrind ())
    return TRUE;
  if (g_once_init_enter (&said))
    {
      g_test_message ("under valgrind: RSS and latency bounds are not enforced");
      g_once_init_leave (&said, 1);
    }
  return FALSE;
}

/* Adds valgrind and its options in front of a gt command line. Each process (and each worker
 * the manager spawns, --trace-children) writes its report to valgrind-NAME-PID.log in the test's
 * directory, which gt_test_teardown checks. */
static void
valgrind_wrap (GPtrArray *argv, const char *name)
{
  const char *src = g_getenv ("GT_SOURCE_DIR");
  g_autofree char *supp = g_build_filename (src != NULL ? src : ".", "tests", "valgrind.supp",
                                            NULL);
  g_autofree char *log = g_strdup_printf ("--log-file=%s/valgrind-%s-%%p.log", gt_test_tmpdir (),
                                          name);

  g_ptr_array_add (argv, g_strdup ("valgrind"));
  g_ptr_array_add (argv, g_strdup ("--tool=memcheck"));
  g_ptr_array_add (argv, g_strdup ("--leak-check=full"));
  g_ptr_array_add (argv, g_strdup ("--show-leak-kinds=definite"));
  g_ptr_array_add (argv, g_strdup ("--errors-for-leak-kinds=definite"));
  g_ptr_array_add (argv, g_strdup_printf ("--error-exitcode=%d", GT_TEST_VALGRIND_STATUS));
  g_ptr_array_add (argv, g_strdup ("--num-callers=40"));
  g_ptr_array_add (argv, g_strdup ("--trace-children=yes"));
  g_ptr_array_add (argv, g_strdup ("--child-silent-after-fork=yes"));
  g_ptr_array_add (argv, g_strdup_printf ("--suppressions=%s", supp));
  g_ptr_array_add (argv, g_steal_pointer (&log));
  /* More options, e.g. --show-leak-kinds=all --gen-suppressions=all to write suppressions. */
  if (g_getenv ("GT_VALGRIND_ARGS") != NULL)
    {
      g_auto (GStrv) extra = g_strsplit (g_getenv ("GT_VALGRIND_ARGS"), " ", -1);

      for (guint i = 0; extra[i] != NULL; i++)
        if (*extra[i] != '\0')
          g_ptr_array_add (argv, g_strdup (extra[i]));
    }
}

/* A memcheck report with errors: "ERROR SUMMARY: N" with N > 0 at exit, or, for a process killed
 * before its summary, an error already reported. */
static gboolean
valgrind_log_has_errors (const char *text)
{
  static const char *const errors
    = "ERROR SUMMARY: [1-9]|^==[0-9]+== (Invalid (read|write|free)|Conditional jump"
      "|Use of uninitialised|Syscall param|Mismatched free|Source and destination overlap"
      "|Argument '[a-z]+' of function)";

  return g_regex_match_simple (errors, text, G_REGEX_MULTILINE, 0);
}

/* Prints every report with errors in dir and fails the test if there is one. */
static void
valgrind_check_logs (const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const char *entry;
  guint bad = 0;

  while (d != NULL && (entry = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *path = NULL;
      g_autofree char *text = NULL;

      if (!g_str_has_prefix (entry, "valgrind-") || !g_str_has_suffix (entry, ".log"))
        continue;
      path = g_build_filename (dir, entry, NULL);
      if (!g_file_get_contents (path, &text, NULL, NULL) || !valgrind_log_has_errors (text))
        continue;
      g_printerr ("# ---- %s ----\n%s\n", entry, text);
      bad++;
    }
  if (bad > 0)
    gt_test_fail ("valgrind found errors in %u gt process%s (reports above)", bad,
                  bad == 1 ? "" : "es");
}

static void
fill_pattern (void)
{
  guint32 x = 0x9e3779b9u;

  pattern = g_malloc (pattern_size);
  for (gsize i = 0; i < pattern_size; i += 4)
    {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      memcpy (pattern + i, &x, 4);
    }
}

/* Compares received bytes with the expected ones, failing with the first differing offset. */
void
gt_test_check_bytes (const char *what, const guint8 *got, gsize got_len, const guint8 *want,
                     gsize want_len)
{
  gsize n = MIN (got_len, want_len);

  for (gsize i = 0; i < n; i++)
    if (got[i] != want[i])
      gt_test_fail ("%s: byte %" G_GSIZE_FORMAT
                    " differs (got 0x%02x, want 0x%02x; lengths %" G_GSIZE_FORMAT
                    "/%" G_GSIZE_FORMAT ")",
                    what, i, got[i], want[i], got_len, want_len);
  if (got_len != want_len)
    gt_test_fail ("%s: got %" G_GSIZE_FORMAT " bytes, want %" G_GSIZE_FORMAT, what, got_len,
                  want_len);
}

/* Runs func(data) in the service thread and waits for it. */
typedef struct
{
  GFunc func;
  gpointer data;
  gboolean done;
} ServiceCall;

static gboolean
service_call_cb (gpointer user_data)
{
  ServiceCall *call = user_data;

  call->func (call->data, NULL);
  g_mutex_lock (&state_lock);
  call->done = TRUE;
  g_cond_broadcast (&state_cond);
  g_mutex_unlock (&state_lock);
  return G_SOURCE_REMOVE;
}

void
gt_test_service_call (GFunc func, gpointer data)
{
  ServiceCall call = { func, data, FALSE };

  g_main_context_invoke (service_ctx, service_call_cb, &call);
  g_mutex_lock (&state_lock);
  while (!call.done)
    g_cond_wait (&state_cond, &state_lock);
  g_mutex_unlock (&state_lock);
}

static gpointer
service_thread_main (gpointer data)
{
  g_main_context_push_thread_default (service_ctx);
  g_main_loop_run (service_loop);
  g_main_context_pop_thread_default (service_ctx);
  return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Child processes: output read line by line in the service thread into a log buffer. */

static void
proc_clear (gpointer data)
{
  GtTestProc *p = data;

  g_free (p->name);
  g_clear_object (&p->proc);
  g_clear_object (&p->log_in);
  g_clear_object (&p->cancellable);
  g_clear_pointer (&p->lines, g_ptr_array_unref);
}

static void
proc_unref (GtTestProc *p)
{
  g_atomic_rc_box_release_full (p, proc_clear);
}

static void proc_line_cb (GObject *source, GAsyncResult *result, gpointer user_data);

static void
proc_read_next (GtTestProc *p)
{
  g_data_input_stream_read_line_async (p->log_in, G_PRIORITY_DEFAULT, p->cancellable, proc_line_cb,
                                       p);
}

static void
proc_line_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GtTestProc *p = user_data;
  gsize len = 0;
  char *line
      = g_data_input_stream_read_line_finish (G_DATA_INPUT_STREAM (source), result, &len, NULL);

  if (line == NULL)
    {
      g_mutex_lock (&state_lock);
      p->eof = TRUE;
      g_cond_broadcast (&state_cond);
      g_mutex_unlock (&state_lock);
      proc_unref (p);
      return;
    }
  if (len > 0 && line[len - 1] == '\r')
    line[len - 1] = '\0';
  if (verbose_logs)
    g_printerr ("# [%s] %s\n", p->name, line);
  g_mutex_lock (&state_lock);
  g_ptr_array_add (p->lines, line);
  g_cond_broadcast (&state_cond);
  g_mutex_unlock (&state_lock);
  proc_read_next (p);
}

static void
proc_exited_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GtTestProc *p = user_data;

  g_subprocess_wait_finish (G_SUBPROCESS (source), result, NULL);
  g_mutex_lock (&state_lock);
  p->exited = TRUE;
  g_cond_broadcast (&state_cond);
  g_mutex_unlock (&state_lock);
  proc_unref (p);
}

static void
proc_start_io_in_service (gpointer data, gpointer unused)
{
  GtTestProc *p = data;

  g_subprocess_wait_async (p->proc, NULL, proc_exited_cb, g_atomic_rc_box_acquire (p));
  proc_read_next (g_atomic_rc_box_acquire (p));
}

static void
proc_cancel_in_service (gpointer data, gpointer unused)
{
  g_cancellable_cancel (((GtTestProc *)data)->cancellable);
}

static void
child_setup_cb (gpointer data)
{
  /* A test that aborts must not leave gt processes behind. */
  prctl (PR_SET_PDEATHSIG, SIGKILL);
}

GPtrArray *
gt_test_args_new (void)
{
  return g_ptr_array_new_with_free_func (g_free);
}

void
gt_test_args_add (GPtrArray *args, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  g_ptr_array_add (args, g_strdup_vprintf (fmt, ap));
  va_end (ap);
}

void
gt_test_args_addv (GPtrArray *args, ...)
{
  va_list ap;
  const char *a;

  va_start (ap, args);
  while ((a = va_arg (ap, const char *)) != NULL)
    g_ptr_array_add (args, g_strdup (a));
  va_end (ap);
}

static const char *const proxy_env_names[]
    = { "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy",
        "NO_PROXY",   "all_proxy",  "ALL_PROXY",   NULL };

GtTestProc *
gt_test_spawn (const char *name, const char *program, GPtrArray *args, const char *cwd,
               const char *const *env)
{
  g_autoptr (GSubprocessLauncher) launcher = NULL;
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *cmdline = NULL;
  g_autofree char *envline = NULL;
  g_autoptr (GPtrArray) owned = g_ptr_array_new_with_free_func (g_free);
  GtTestProc *p;

  if (gt_test_under_valgrind ()
      && (program == NULL || g_strcmp0 (program, gt_test_binary ()) == 0))
    {
      valgrind_wrap (owned, name);
      for (guint i = 0; i < owned->len; i++)
        g_ptr_array_add (argv, owned->pdata[i]);
    }
  g_ptr_array_add (argv, (gpointer)(program != NULL ? program : gt_test_binary ()));
  for (guint i = 0; args != NULL && i < args->len; i++)
    g_ptr_array_add (argv, args->pdata[i]);
  if (program == NULL && g_getenv ("GT_TEST_LOG_LEVEL") != NULL)
    {
      g_ptr_array_add (argv, (gpointer) "--logLevel");
      g_ptr_array_add (argv, (gpointer)g_getenv ("GT_TEST_LOG_LEVEL"));
    }
  g_ptr_array_add (argv, NULL);
  cmdline = g_strjoinv (" ", (char **)argv->pdata);
  envline = env != NULL ? g_strjoinv (" ", (char **)env) : g_strdup ("");
  g_test_message ("spawn %s: %s %s%s%s", name, envline, cmdline, cwd ? " in " : "", cwd ? cwd : "");

  launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE
                                        | G_SUBPROCESS_FLAGS_STDERR_MERGE);
  g_subprocess_launcher_set_child_setup (launcher, child_setup_cb, NULL, NULL);
  if (cwd != NULL)
    g_subprocess_launcher_set_cwd (launcher, cwd);
  for (guint i = 0; proxy_env_names[i] != NULL; i++)
    g_subprocess_launcher_unsetenv (launcher, proxy_env_names[i]);
  for (guint i = 0; env != NULL && env[i] != NULL; i++)
    {
      const char *eq = strchr (env[i], '=');
      g_autofree char *key = g_strndup (env[i], eq - env[i]);

      g_subprocess_launcher_setenv (launcher, key, eq + 1, TRUE);
    }

  p = g_atomic_rc_box_new0 (GtTestProc);
  p->name = g_strdup (name);
  p->lines = g_ptr_array_new_with_free_func (g_free);
  p->cancellable = g_cancellable_new ();
  p->proc = g_subprocess_launcher_spawnv (launcher, (const char *const *)argv->pdata, &error);
  g_assert_no_error (error);
  p->pid = atoi (g_subprocess_get_identifier (p->proc));
  p->is_gt = program == NULL;
  p->log_in = g_data_input_stream_new (g_subprocess_get_stdout_pipe (p->proc));
  g_data_input_stream_set_newline_type (p->log_in, G_DATA_STREAM_NEWLINE_TYPE_LF);

  g_mutex_lock (&state_lock);
  g_ptr_array_add (live_procs, p);
  g_mutex_unlock (&state_lock);
  g_ptr_array_add (test_procs, g_atomic_rc_box_acquire (p));
  gt_test_service_call (proc_start_io_in_service, p);
  return p;
}

GtTestProc *
gt_test_spawn_gt (const char *name, GPtrArray *args)
{
  return gt_test_spawn (name, NULL, args, NULL, NULL);
}

GPtrArray *
gt_test_procs (void)
{
  return test_procs;
}

gboolean
gt_test_proc_has_exited (GtTestProc *p)
{
  gboolean exited;

  g_mutex_lock (&state_lock);
  exited = p->exited;
  g_mutex_unlock (&state_lock);
  return exited;
}

gboolean
gt_test_proc_wait_exit (GtTestProc *p, guint timeout_ms)
{
  gint64 end = gt_test_deadline_in (timeout_ms);
  gboolean exited;

  g_mutex_lock (&state_lock);
  while (!p->exited && g_cond_wait_until (&state_cond, &state_lock, end))
    ;
  exited = p->exited;
  g_mutex_unlock (&state_lock);
  return exited;
}

/* Sends sig and waits for the exit; escalates to SIGKILL when the process does not go. */
void
gt_test_proc_stop (GtTestProc *p, int sig)
{
  if (gt_test_proc_has_exited (p))
    return;
  g_subprocess_send_signal (p->proc, sig);
  if (gt_test_proc_wait_exit (p, 10000))
    return;
  g_printerr ("# %s did not exit within 10 s of signal %d, killing it\n", p->name, sig);
  g_subprocess_force_exit (p->proc);
  gt_test_proc_wait_exit (p, 10000);
}

/* Stops p with SIGTERM and checks that it exits with status 0, as the CLI promises. */
void
gt_test_proc_stop_cleanly (GtTestProc *p)
{
  gt_test_proc_stop (p, SIGTERM);
  if (!gt_test_proc_has_exited (p))
    gt_test_fail ("%s did not exit after SIGTERM and SIGKILL", p->name);
  if (g_subprocess_get_if_signaled (p->proc))
    gt_test_fail ("%s was terminated by signal %d (%s) after SIGTERM instead of exiting with 0",
                  p->name, g_subprocess_get_term_sig (p->proc),
                  g_strsignal (g_subprocess_get_term_sig (p->proc)));
  if (g_subprocess_get_exit_status (p->proc) == GT_TEST_VALGRIND_STATUS
      && gt_test_under_valgrind ())
    valgrind_check_logs (gt_test_tmpdir ());
  if (g_subprocess_get_exit_status (p->proc) != 0)
    gt_test_fail ("%s exited with status %d after SIGTERM", p->name,
                  g_subprocess_get_exit_status (p->proc));
}

guint
gt_test_proc_line_count (GtTestProc *p)
{
  guint n;

  g_mutex_lock (&state_lock);
  n = p->lines->len;
  g_mutex_unlock (&state_lock);
  return n;
}

guint
gt_test_proc_count_matches (GtTestProc *p, const char *regex)
{
  g_autoptr (GRegex) re = g_regex_new (regex, 0, 0, NULL);
  guint n = 0;

  g_assert_nonnull (re);
  g_mutex_lock (&state_lock);
  for (guint i = 0; i < p->lines->len; i++)
    if (g_regex_match (re, p->lines->pdata[i], 0, NULL))
      n++;
  g_mutex_unlock (&state_lock);
  return n;
}

/* Waits until at least n lines match regex. */
gboolean
gt_test_proc_wait_count (GtTestProc *p, const char *regex, guint n, guint timeout_ms)
{
  gint64 end = gt_test_deadline_in (timeout_ms);

  while (gt_test_proc_count_matches (p, regex) < n)
    {
      if (g_get_monotonic_time () >= end)
        return FALSE;
      g_usleep (20 * 1000);
    }
  return TRUE;
}

/* Waits for a log line at index >= *from matching regex; returns a copy of it (and moves
 * *from past it), or NULL when the timeout passes or the output ends first. */
char *
gt_test_proc_wait_line (GtTestProc *p, const char *regex, guint *from, guint timeout_ms)
{
  g_autoptr (GRegex) re = g_regex_new (regex, 0, 0, NULL);
  gint64 end = gt_test_deadline_in (timeout_ms);
  guint i = from != NULL ? *from : 0;
  char *found = NULL;

  g_assert_nonnull (re);
  g_mutex_lock (&state_lock);
  for (;;)
    {
      for (; i < p->lines->len; i++)
        if (g_regex_match (re, p->lines->pdata[i], 0, NULL))
          {
            found = g_strdup (p->lines->pdata[i]);
            if (from != NULL)
              *from = i + 1;
            break;
          }
      if (found != NULL || p->eof || g_get_monotonic_time () >= end)
        break;
      g_cond_wait_until (&state_cond, &state_lock, end);
    }
  g_mutex_unlock (&state_lock);
  return found;
}

/* First capture group of regex in line. */
guint
gt_test_capture_uint (const char *line, const char *regex)
{
  g_autoptr (GRegex) re = g_regex_new (regex, 0, 0, NULL);
  g_autoptr (GMatchInfo) mi = NULL;
  g_autofree char *s = NULL;

  if (!g_regex_match (re, line, 0, &mi))
    gt_test_fail ("line '%s' does not match /%s/", line, regex);
  s = g_match_info_fetch (mi, 1);
  return (guint)g_ascii_strtoull (s, NULL, 10);
}

static void
proc_finalize (GtTestProc *p)
{
  gint64 end;

  gt_test_proc_stop (p, SIGTERM);
  /* The log pipe normally ends with the process; cancel the reader if it does not. */
  end = gt_test_deadline_in (5000);
  g_mutex_lock (&state_lock);
  while (!p->eof && g_cond_wait_until (&state_cond, &state_lock, end))
    ;
  g_mutex_unlock (&state_lock);
  gt_test_service_call (proc_cancel_in_service, p);
  g_mutex_lock (&state_lock);
  while (!p->eof)
    g_cond_wait (&state_cond, &state_lock);
  g_ptr_array_remove (live_procs, p);
  g_mutex_unlock (&state_lock);
  proc_unref (p);
}

/* On abort (failed assertion) or a harness timeout: print the logs, kill the children. */
static void
fatal_signal_handler (int sig)
{
  gboolean locked = FALSE;

  signal (SIGABRT, SIG_DFL); /* a second abort inside this handler must end the process */
  for (int i = 0; i < 200 && !(locked = g_mutex_trylock (&state_lock)); i++)
    g_usleep (1000);
  for (guint i = 0; live_procs != NULL && i < live_procs->len; i++)
    {
      GtTestProc *p = live_procs->pdata[i];
      guint first = p->lines->len > 300 ? p->lines->len - 300 : 0;

      fprintf (stderr, "# ---- output of %s (pid %d), %u lines%s ----\n", p->name, p->pid,
               p->lines->len, first > 0 ? ", last 300 shown" : "");
      for (guint j = first; j < p->lines->len; j++)
        fprintf (stderr, "# [%s] %s\n", p->name, (const char *)p->lines->pdata[j]);
      kill (p->pid, SIGKILL);
    }
  fflush (stderr);
  if (test_tmpdir != NULL && g_getenv ("GT_TEST_KEEP_TMP") == NULL)
    gt_test_remove_tree (test_tmpdir);
  if (locked)
    g_mutex_unlock (&state_lock);
  signal (sig, SIG_DFL);
  raise (sig);
}

/* ------------------------------------------------------------------------------------------ */
/* The local HTTP service: a SoupServer living in the service thread. */

static void
echo_cb (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
         gpointer user_data)
{
  g_autoptr (GBytes) body = soup_message_body_flatten (soup_server_message_get_request_body (msg));

  soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
  soup_server_message_set_response (msg, "application/octet-stream", SOUP_MEMORY_COPY,
                                    g_bytes_get_data (body, NULL), g_bytes_get_size (body));
}

static gsize
query_size (GHashTable *query, const char *key, gsize dflt)
{
  const char *v = query != NULL ? g_hash_table_lookup (query, key) : NULL;

  return v != NULL ? MIN (g_ascii_strtoull (v, NULL, 10), (guint64)pattern_size) : dflt;
}

static void
bytes_cb (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
          gpointer user_data)
{
  soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
  soup_server_message_set_response (msg, "application/octet-stream", SOUP_MEMORY_STATIC,
                                    (const char *)pattern, query_size (query, "n", 0));
}

static void
chunked_cb (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
            gpointer user_data)
{
  gsize n = query_size (query, "n", 0);
  SoupMessageBody *body = soup_server_message_get_response_body (msg);

  soup_message_headers_set_encoding (soup_server_message_get_response_headers (msg),
                                     SOUP_ENCODING_CHUNKED);
  for (gsize off = 0; off < n; off += 10007)
    soup_message_body_append (body, SOUP_MEMORY_STATIC, pattern + off, MIN (10007, n - off));
  soup_message_body_complete (body);
  soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
}

/* /sink: answers with the decimal size of the request body (upload measurements). */
static void
sink_cb (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
         gpointer user_data)
{
  g_autoptr (GBytes) body = soup_message_body_flatten (soup_server_message_get_request_body (msg));
  g_autofree char *text = g_strdup_printf ("%" G_GSIZE_FORMAT, g_bytes_get_size (body));

  soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
  soup_server_message_set_response (msg, "text/plain", SOUP_MEMORY_COPY, text, strlen (text));
}

static void
whoami_cb (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
           gpointer user_data)
{
  GtTestHttp *h = user_data;

  soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
  soup_server_message_set_response (msg, "text/plain", SOUP_MEMORY_COPY, h->name, strlen (h->name));
}

static void
host_cb (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
         gpointer user_data)
{
  const char *host
      = soup_message_headers_get_one (soup_server_message_get_request_headers (msg), "Host");

  host = host != NULL ? host : "(none)";
  soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
  soup_server_message_set_response (msg, "text/plain", SOUP_MEMORY_COPY, host, strlen (host));
}

static gboolean
slow_done_cb (gpointer data)
{
  soup_server_message_unpause (SOUP_SERVER_MESSAGE (data));
  return G_SOURCE_REMOVE;
}

/* /slow?ms=M: echoes the request body after M milliseconds. */
static void
slow_cb (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
         gpointer user_data)
{
  g_autoptr (GSource) timeout = g_timeout_source_new ((guint)query_size (query, "ms", 200));

  echo_cb (server, msg, path, query, user_data);
  soup_server_message_pause (msg);
  g_source_set_callback (timeout, slow_done_cb, g_object_ref (msg), g_object_unref);
  g_source_attach (timeout, g_main_context_get_thread_default ());
}

static void
ws_message_cb (SoupWebsocketConnection *ws, gint type, GBytes *message, gpointer user_data)
{
  soup_websocket_connection_send_message (ws, type, message);
}

static void
ws_closed_cb (SoupWebsocketConnection *ws, gpointer user_data)
{
  g_object_unref (ws);
}

static void
ws_cb (SoupServer *server, SoupServerMessage *msg, const char *path, SoupWebsocketConnection *ws,
       gpointer user_data)
{
  g_object_ref (ws); /* released in "closed" */
  soup_websocket_connection_set_max_incoming_payload_size (ws, 16 * GT_TEST_MIB);
  g_signal_connect (ws, "message", G_CALLBACK (ws_message_cb), NULL);
  g_signal_connect (ws, "closed", G_CALLBACK (ws_closed_cb), NULL);
}

typedef struct
{
  GtTestHttp *h;
  GError *error;
} HttpStart;

/* Our own socket: soup_server_listen_local keeps GSocket's backlog of 10, which makes 200
 * simultaneous connections wait for SYN retransmits. */
static gboolean
soup_listen_loopback (SoupServer *server, guint16 *port, SoupServerListenOptions options,
                      GError **error)
{
  g_autoptr (GSocket) sock = NULL;
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) addr = g_inet_socket_address_new (lo, *port);
  g_autoptr (GSocketAddress) bound = NULL;

  sock = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, error);
  if (sock == NULL)
    return FALSE;
  g_socket_set_listen_backlog (sock, 1024);
  if (!g_socket_bind (sock, addr, TRUE, error) || !g_socket_listen (sock, error)
      || !soup_server_listen_socket (server, sock, options, error))
    return FALSE;
  bound = g_socket_get_local_address (sock, error);
  if (bound == NULL)
    return FALSE;
  *port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));
  return TRUE;
}

static void
http_start_in_service (gpointer data, gpointer unused)
{
  HttpStart *st = data;
  GtTestHttp *h = st->h;

  h->server
      = soup_server_new ("server-header", "gt-test-service ", "tls-certificate", h->cert, NULL);
  soup_server_add_handler (h->server, "/echo", echo_cb, h, NULL);
  soup_server_add_handler (h->server, "/bytes", bytes_cb, h, NULL);
  soup_server_add_handler (h->server, "/chunked", chunked_cb, h, NULL);
  soup_server_add_handler (h->server, "/sink", sink_cb, h, NULL);
  soup_server_add_handler (h->server, "/whoami", whoami_cb, h, NULL);
  soup_server_add_handler (h->server, "/host", host_cb, h, NULL);
  soup_server_add_handler (h->server, "/slow", slow_cb, h, NULL);
  soup_server_add_websocket_handler (h->server, "/ws", NULL, NULL, ws_cb, h, NULL);
  soup_listen_loopback (h->server, &h->port, h->cert != NULL ? SOUP_SERVER_LISTEN_HTTPS : 0,
                        &st->error);
}

static void
http_stop_in_service (gpointer data, gpointer unused)
{
  GtTestHttp *h = data;

  if (h->server != NULL)
    soup_server_disconnect (h->server);
  g_clear_object (&h->server);
}

GtTestHttp *
gt_test_http_start (const char *name, guint16 port, GTlsCertificate *cert)
{
  HttpStart st = { NULL, NULL };

  st.h = g_new0 (GtTestHttp, 1);
  st.h->name = g_strdup (name);
  st.h->port = port;
  st.h->cert = cert != NULL ? g_object_ref (cert) : NULL;
  g_ptr_array_add (test_locals, st.h);
  gt_test_service_call (http_start_in_service, &st);
  g_assert_no_error (st.error);
  return st.h;
}

void
gt_test_http_stop (GtTestHttp *h)
{
  gt_test_service_call (http_stop_in_service, h);
}

static void
http_free (gpointer data)
{
  GtTestHttp *h = data;

  gt_test_http_stop (h);
  g_clear_object (&h->cert);
  g_free (h->name);
  g_free (h);
}

/* ------------------------------------------------------------------------------------------ */
/* TCP services: GThreadedSocketService on loopback, the TCP echo. */

static gboolean
tcp_echo_run_cb (GThreadedSocketService *service, GSocketConnection *conn, GObject *source,
                 gpointer user_data)
{
  GInputStream *in = g_io_stream_get_input_stream (G_IO_STREAM (conn));
  GOutputStream *out = g_io_stream_get_output_stream (G_IO_STREAM (conn));
  g_autofree guint8 *buf = g_malloc (65536);

  g_socket_set_timeout (g_socket_connection_get_socket (conn), 60);
  if (!g_output_stream_write_all (out, GT_TEST_TCP_BANNER, strlen (GT_TEST_TCP_BANNER), NULL, NULL,
                                  NULL))
    return TRUE;
  for (;;)
    {
      gssize n = g_input_stream_read (in, buf, 65536, NULL, NULL);

      if (n <= 0)
        break;
      if (!g_output_stream_write_all (out, buf, n, NULL, NULL, NULL))
        break;
    }
  g_io_stream_close (G_IO_STREAM (conn), NULL, NULL);
  return TRUE;
}

typedef struct
{
  GtTestTcpService *t;
  GCallback run_cb;
  gpointer user_data;
} TcpServiceStart;

static void
tcp_service_start_in_service (gpointer data, gpointer unused)
{
  TcpServiceStart *st = data;
  GtTestTcpService *t = st->t;
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) addr = g_inet_socket_address_new (lo, 0);
  g_autoptr (GSocketAddress) bound = NULL;
  g_autoptr (GError) error = NULL;

  t->service = g_threaded_socket_service_new (16);
  /* Users that open a connection per request must not find the accept queue full (GIO's default
   * backlog is 10): a dropped SYN is retried only after a second. */
  g_socket_listener_set_backlog (G_SOCKET_LISTENER (t->service), 1024);
  g_signal_connect (t->service, "run", st->run_cb, st->user_data);
  g_socket_listener_add_address (G_SOCKET_LISTENER (t->service), addr, G_SOCKET_TYPE_STREAM,
                                 G_SOCKET_PROTOCOL_TCP, NULL, &bound, &error);
  g_assert_no_error (error);
  t->port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));
  g_socket_service_start (t->service);
}

static void
tcp_service_stop_in_service (gpointer data, gpointer unused)
{
  GtTestTcpService *t = data;

  g_socket_service_stop (t->service);
  g_socket_listener_close (G_SOCKET_LISTENER (t->service));
  g_clear_object (&t->service);
}

static void
tcp_service_free (gpointer data)
{
  gt_test_service_call (tcp_service_stop_in_service, data);
  g_free (data);
}

GtTestTcpService *
gt_test_tcp_service_start (GCallback run_cb, gpointer user_data)
{
  TcpServiceStart st = { g_new0 (GtTestTcpService, 1), run_cb, user_data };

  g_ptr_array_add (test_tcp_services, st.t);
  gt_test_service_call (tcp_service_start_in_service, &st);
  return st.t;
}

GtTestTcpService *
gt_test_tcp_echo_start (void)
{
  g_assert_null (test_tcp_echo);
  test_tcp_echo = gt_test_tcp_service_start (G_CALLBACK (tcp_echo_run_cb), NULL);
  return test_tcp_echo;
}

GtTestTcpService *
gt_test_tcp_echo (void)
{
  return test_tcp_echo;
}

/* ------------------------------------------------------------------------------------------ */
/* Raw client sockets and an HTTP/1.1 response parser (Content-Length, chunked, until-close). */

void
gt_test_conn_free (GtTestConn *c)
{
  if (c->fd >= 0)
    close (c->fd);
  g_byte_array_unref (c->in);
  g_free (c);
}

gboolean
gt_test_fd_poll (int fd, short events, gint64 deadline, GError **error)
{
  for (;;)
    {
      struct pollfd pfd = { fd, events, 0 };
      gint64 left = deadline - g_get_monotonic_time ();
      int r;

      if (left <= 0)
        {
          g_set_error (error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "timed out waiting on socket");
          return FALSE;
        }
      r = poll (&pfd, 1, (int)MAX (1, left / 1000));
      if (r > 0)
        return TRUE;
      if (r < 0 && errno != EINTR)
        {
          g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errno), "poll: %s",
                       g_strerror (errno));
          return FALSE;
        }
    }
}

/* Starts a non-blocking connect to 127.0.0.1:port; completion shows as POLLOUT. */
GtTestConn *
gt_test_conn_connect_start (guint16 port, GError **error)
{
  struct sockaddr_in sa = { 0 };
  GtTestConn *c;

  sa.sin_family = AF_INET;
  sa.sin_port = htons (port);
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  c = g_new0 (GtTestConn, 1);
  c->in = g_byte_array_new ();
  c->fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  g_assert_cmpint (c->fd, >=, 0);
  if (connect (c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
    {
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errno), "connect to %u: %s", port,
                   g_strerror (errno));
      gt_test_conn_free (c);
      return NULL;
    }
  return c;
}

gboolean
gt_test_conn_check_connected (GtTestConn *c, GError **error)
{
  int err = 0;
  socklen_t len = sizeof err;

  getsockopt (c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0)
    {
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err), "connect: %s", g_strerror (err));
      return FALSE;
    }
  return TRUE;
}

GtTestConn *
gt_test_conn_connect (guint16 port, GError **error)
{
  g_autoptr (GtTestConn) c = gt_test_conn_connect_start (port, error);

  if (c == NULL || !gt_test_fd_poll (c->fd, POLLOUT, gt_test_deadline_in (10000), error)
      || !gt_test_conn_check_connected (c, error))
    return NULL;
  return g_steal_pointer (&c);
}

gboolean
gt_test_conn_write_all (GtTestConn *c, const void *data, gsize len, gint64 deadline, GError **error)
{
  const guint8 *p = data;

  while (len > 0)
    {
      gssize n = send (c->fd, p, len, MSG_NOSIGNAL);

      if (n > 0)
        {
          p += n;
          len -= n;
        }
      else if (n < 0 && (errno == EAGAIN || errno == EINTR))
        {
          if (!gt_test_fd_poll (c->fd, POLLOUT, deadline, error))
            return FALSE;
        }
      else
        {
          g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errno), "send: %s",
                       g_strerror (errno));
          return FALSE;
        }
    }
  return TRUE;
}

/* Non-blocking read of what is available: >0 bytes appended, 0 EOF, -1 error, -2 nothing yet. */
gssize
gt_test_conn_read_now (GtTestConn *c, GError **error)
{
  guint8 buf[256 * 1024];
  gssize n = recv (c->fd, buf, sizeof buf, 0);

  if (n > 0)
    {
      g_byte_array_append (c->in, buf, n);
      return n;
    }
  if (n == 0)
    {
      c->eof = TRUE;
      return 0;
    }
  if (errno == EAGAIN || errno == EINTR)
    return -2;
  g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errno), "recv: %s", g_strerror (errno));
  return -1;
}

/* Reads more bytes (waiting until the deadline): >0 appended, 0 EOF, -1 error or timeout. */
gssize
gt_test_conn_fill (GtTestConn *c, gint64 deadline, GError **error)
{
  for (;;)
    {
      gssize n = gt_test_conn_read_now (c, error);

      if (n != -2)
        return n;
      if (!gt_test_fd_poll (c->fd, POLLIN, deadline, error))
        return -1;
    }
}

/* Reads until EOF (a reset also counts as the end when allow_reset). */
gboolean
gt_test_conn_read_to_eof (GtTestConn *c, gboolean allow_reset, gint64 deadline, GError **error)
{
  g_autoptr (GError) local_error = NULL;

  while (!c->eof)
    {
      gssize n = gt_test_conn_fill (c, deadline, &local_error);

      if (n < 0)
        {
          if (allow_reset
              && g_error_matches (local_error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED))
            return TRUE;
          g_propagate_error (error, g_steal_pointer (&local_error));
          return FALSE;
        }
    }
  return TRUE;
}

void
gt_test_http_response_free (GtTestHttpResponse *r)
{
  g_free (r->reason);
  g_ptr_array_unref (r->header_names);
  g_ptr_array_unref (r->header_values);
  g_byte_array_unref (r->body);
  g_free (r);
}

const char *
gt_test_http_response_header (GtTestHttpResponse *r, const char *name)
{
  for (guint i = 0; i < r->header_names->len; i++)
    if (g_ascii_strcasecmp (r->header_names->pdata[i], name) == 0)
      return r->header_values->pdata[i];
  return NULL;
}

static const guint8 *
find_crlf (const guint8 *p, const guint8 *end)
{
  for (; p + 1 < end; p++)
    if (p[0] == '\r' && p[1] == '\n')
      return p;
  return NULL;
}

/* Parses one response at the start of data: 1 complete (*consumed set), 0 needs more bytes,
 * -1 malformed. eof says no more bytes will come (ends an until-close body). */
int
gt_test_http_parse_response (const guint8 *data, gsize len, gboolean eof, gsize *consumed,
                             GtTestHttpResponse **out, GError **error)
{
  /* Nothing read yet may be a NULL buffer: no arithmetic on it (UBSan). */
  const guint8 *end = len > 0 ? data + len : data;
  const guint8 *head_end = len >= 4 ? memmem (data, len, "\r\n\r\n", 4) : NULL;
  g_autoptr (GtTestHttpResponse) r = NULL;
  g_autofree char *head = NULL;
  g_auto (GStrv) lines = NULL;
  const char *te, *cl;
  const guint8 *p;
  char *sp;

  if (head_end == NULL)
    {
      if (len > 65536 || eof)
        {
          g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                       "%s before the end of the response head (%" G_GSIZE_FORMAT " bytes: "
                       "'%.*s')",
                       eof ? "EOF" : "too many bytes", len, (int)MIN (len, 200),
                       (const char *)data);
          return -1;
        }
      return 0;
    }
  head = g_strndup ((const char *)data, head_end - data);
  lines = g_strsplit (head, "\r\n", -1);
  r = g_new0 (GtTestHttpResponse, 1);
  r->header_names = g_ptr_array_new_with_free_func (g_free);
  r->header_values = g_ptr_array_new_with_free_func (g_free);
  r->body = g_byte_array_new ();
  if (!g_str_has_prefix (lines[0], "HTTP/1.") || strlen (lines[0]) < 12 || lines[0][8] != ' '
      || !g_ascii_isdigit (lines[0][9]) || !g_ascii_isdigit (lines[0][10])
      || !g_ascii_isdigit (lines[0][11]))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "bad status line '%s'", lines[0]);
      return -1;
    }
  r->status = (guint)g_ascii_strtoull (lines[0] + 9, NULL, 10);
  r->reason = g_strdup (lines[0][12] == ' ' ? lines[0] + 13 : "");
  for (guint i = 1; lines[i] != NULL; i++)
    {
      char *colon = strchr (lines[i], ':');

      if (colon == NULL)
        {
          g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "bad header line '%s'",
                       lines[i]);
          return -1;
        }
      g_ptr_array_add (r->header_names, g_strstrip (g_strndup (lines[i], colon - lines[i])));
      g_ptr_array_add (r->header_values, g_strstrip (g_strdup (colon + 1)));
    }

  p = head_end + 4;
  te = gt_test_http_response_header (r, "Transfer-Encoding");
  cl = gt_test_http_response_header (r, "Content-Length");
  if (r->status / 100 == 1 || r->status == 204 || r->status == 304)
    ;
  else if (te != NULL && g_ascii_strcasecmp (te, "chunked") == 0)
    {
      for (;;)
        {
          const guint8 *eol = find_crlf (p, end);
          g_autofree char *size_line = NULL;
          guint64 size;

          if (eol == NULL)
            goto need_more;
          size_line = g_strndup ((const char *)p, eol - p);
          if ((sp = strchr (size_line, ';')) != NULL)
            *sp = '\0';
          if (!g_ascii_isxdigit (size_line[0]))
            {
              g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "bad chunk size '%s'",
                           size_line);
              return -1;
            }
          size = g_ascii_strtoull (size_line, NULL, 16);
          p = eol + 2;
          if (size == 0)
            {
              /* trailers, then an empty line */
              for (;;)
                {
                  eol = find_crlf (p, end);
                  if (eol == NULL)
                    goto need_more;
                  if (eol == p)
                    {
                      p += 2;
                      break;
                    }
                  p = eol + 2;
                }
              break;
            }
          if ((gsize)(end - p) < size + 2)
            goto need_more;
          if (p[size] != '\r' || p[size + 1] != '\n')
            {
              g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "chunk without CRLF");
              return -1;
            }
          g_byte_array_append (r->body, p, size);
          p += size + 2;
        }
    }
  else if (cl != NULL)
    {
      guint64 n = g_ascii_strtoull (cl, NULL, 10);

      if ((guint64)(end - p) < n)
        goto need_more;
      g_byte_array_append (r->body, p, n);
      p += n;
    }
  else
    {
      if (!eof)
        return 0;
      g_byte_array_append (r->body, p, end - p);
      p = end;
    }
  *consumed = p - data;
  *out = g_steal_pointer (&r);
  return 1;

need_more:
  if (eof)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                   "EOF in the response body (status %u, %" G_GSIZE_FORMAT " bytes buffered)",
                   r->status, len);
      return -1;
    }
  return 0;
}

GtTestHttpResponse *
gt_test_conn_read_response (GtTestConn *c, gint64 deadline, GError **error)
{
  for (;;)
    {
      GtTestHttpResponse *r = NULL;
      gsize consumed = 0;
      int res = gt_test_http_parse_response (c->in->data, c->in->len, c->eof, &consumed, &r, error);

      if (res < 0)
        return NULL;
      if (res > 0)
        {
          g_byte_array_remove_range (c->in, 0, consumed);
          return r;
        }
      if (gt_test_conn_fill (c, deadline, error) < 0)
        return NULL;
    }
}

GByteArray *
gt_test_http_build_request (const char *method, const char *path, const char *host,
                            const void *body, gsize body_len, const char *extra_headers)
{
  GByteArray *req = g_byte_array_new ();
  g_autoptr (GString) head = g_string_new (NULL);

  g_string_append_printf (head, "%s %s HTTP/1.1\r\n", method, path);
  if (host != NULL)
    g_string_append_printf (head, "Host: %s\r\n", host);
  if (body != NULL)
    g_string_append_printf (head, "Content-Length: %" G_GSIZE_FORMAT "\r\n", body_len);
  if (extra_headers != NULL)
    g_string_append (head, extra_headers);
  g_string_append (head, "\r\n");
  g_byte_array_append (req, (const guint8 *)head->str, head->len);
  if (body != NULL)
    g_byte_array_append (req, body, body_len);
  return req;
}

/* One request on an open connection (keep-alive); body NULL means none. */
GtTestHttpResponse *
gt_test_conn_request (GtTestConn *c, const char *method, const char *path, const char *host,
                      const void *body, gsize body_len, guint timeout_ms, GError **error)
{
  g_autoptr (GByteArray) req
      = gt_test_http_build_request (method, path, host, body, body_len, NULL);
  gint64 deadline = gt_test_deadline_in (timeout_ms);

  if (!gt_test_conn_write_all (c, req->data, req->len, deadline, error))
    return NULL;
  return gt_test_conn_read_response (c, deadline, error);
}

/* One request on a fresh connection to the relay port with the given Host; returns status and
 * body (NULL and error on transport or parse failures). */
GtTestHttpResponse *
gt_test_http_request (guint16 port, const char *method, const char *path, const char *host,
                      const void *body, gsize body_len, GError **error)
{
  g_autoptr (GtTestConn) c = gt_test_conn_connect (port, error);

  if (c == NULL)
    return NULL;
  return gt_test_conn_request (c, method, path, host, body, body_len, GT_TEST_WAIT_MS, error);
}

/* ------------------------------------------------------------------------------------------ */
/* Ports and files. */

guint16
gt_test_free_port (void)
{
  struct sockaddr_in sa = { 0 };
  socklen_t len = sizeof sa;
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  g_assert_no_errno (bind (fd, (struct sockaddr *)&sa, sizeof sa));
  g_assert_no_errno (getsockname (fd, (struct sockaddr *)&sa, &len));
  close (fd);
  return ntohs (sa.sin_port);
}

gboolean
gt_test_port_is_free (guint16 port)
{
  struct sockaddr_in sa = { 0 };
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  gboolean ok;

  setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sa.sin_family = AF_INET;
  sa.sin_port = htons (port);
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  ok = bind (fd, (struct sockaddr *)&sa, sizeof sa) == 0;
  close (fd);
  return ok;
}

void
gt_test_free_port_range (guint n, guint16 *first, guint16 *last)
{
  for (int attempt = 0; attempt < 100; attempt++)
    {
      guint16 a = (guint16)g_random_int_range (20000, 60000);
      guint i;

      for (i = 0; i < n && gt_test_port_is_free (a + i); i++)
        ;
      if (i == n)
        {
          *first = a;
          *last = a + n - 1;
          return;
        }
    }
  gt_test_fail ("no free range of %u ports found", n);
}

/* ------------------------------------------------------------------------------------------ */
/* A WebSocket client in the test thread. */

typedef struct
{
  SoupWebsocketConnection *ws;
  GError *error;
  gboolean connected;
  GPtrArray *messages; /* GBytes *, in arrival order */
  GArray *types;
  gboolean closed;
} WsClient;

static void
ws_client_message_cb (SoupWebsocketConnection *ws, gint type, GBytes *message, gpointer data)
{
  WsClient *c = data;

  g_ptr_array_add (c->messages, g_bytes_ref (message));
  g_array_append_val (c->types, type);
}

static void
ws_client_closed_cb (SoupWebsocketConnection *ws, gpointer data)
{
  ((WsClient *)data)->closed = TRUE;
}

static void
ws_client_connected_cb (GObject *source, GAsyncResult *result, gpointer data)
{
  WsClient *c = data;

  c->ws = soup_session_websocket_connect_finish (SOUP_SESSION (source), result, &c->error);
  c->connected = TRUE;
  if (c->ws != NULL)
    {
      soup_websocket_connection_set_max_incoming_payload_size (c->ws, 16 * GT_TEST_MIB);
      g_signal_connect (c->ws, "message", G_CALLBACK (ws_client_message_cb), c);
      g_signal_connect (c->ws, "closed", G_CALLBACK (ws_client_closed_cb), c);
    }
}

static gboolean
wake_cb (gpointer data)
{
  return G_SOURCE_CONTINUE;
}

/* Iterates the test thread's default context until *flag or the deadline. */
gboolean
gt_test_iterate_until (const gboolean *flag, gint64 deadline)
{
  guint wake = g_timeout_add (20, wake_cb, NULL);

  while (!*flag && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, TRUE);
  g_source_remove (wake);
  return *flag;
}

/* WebSocket echo of 100 messages of varied sizes (text and binary, up to 200 KiB) over
 * ws://127.0.0.1:port/ws with the given Host header. */
void
gt_test_ws_echo (guint16 port, const char *host)
{
  static const gsize sizes[]
      = { 0, 1, 2, 125, 126, 127, 1000, 4096, 65535, 65536, 65537, 100000, 200 * 1024 };
  g_autoptr (SoupSession) session = soup_session_new ();
  g_autofree char *uri = g_strdup_printf ("ws://127.0.0.1:%u/ws", port);
  g_autoptr (SoupMessage) msg = soup_message_new ("GET", uri);
  WsClient c = { 0 };
  gint64 deadline;

  /* Uncompressed frames: the relay should see the raw sizes. */
  soup_session_remove_feature_by_type (session, SOUP_TYPE_WEBSOCKET_EXTENSION_MANAGER);
  soup_message_headers_replace (soup_message_get_request_headers (msg), "Host", host);
  c.messages = g_ptr_array_new_with_free_func ((GDestroyNotify)g_bytes_unref);
  c.types = g_array_new (FALSE, FALSE, sizeof (gint));
  soup_session_websocket_connect_async (session, msg, NULL, NULL, G_PRIORITY_DEFAULT, NULL,
                                        ws_client_connected_cb, &c);
  if (!gt_test_iterate_until (&c.connected, gt_test_deadline_in (GT_TEST_WAIT_MS)))
    gt_test_fail ("WebSocket connect timed out");
  if (c.ws == NULL)
    gt_test_fail ("WebSocket connect failed: %s (HTTP status %u)", c.error->message,
                  soup_message_get_status (msg));

  for (guint i = 0; i < 100; i++)
    {
      gsize size = i < G_N_ELEMENTS (sizes) ? sizes[i] : (i * 7919) % 30000;
      gboolean binary = (i % 2 == 1) || size == 200 * 1024;
      const guint8 *src = pattern + i * 4099;
      g_autofree char *text = NULL;
      g_autoptr (GBytes) sent = NULL;
      GBytes *got;
      gint type;
      guint wake;

      if (i == 50 || i == 99)
        {
          size = 200 * 1024;
          binary = TRUE;
        }
      if (binary)
        sent = g_bytes_new_static (src, size);
      else
        {
          text = g_malloc (size + 1);
          for (gsize j = 0; j < size; j++)
            text[j] = 'a' + src[j] % 26;
          text[size] = '\0';
          sent = g_bytes_new_static (text, size);
        }
      soup_websocket_connection_send_message (
          c.ws, binary ? SOUP_WEBSOCKET_DATA_BINARY : SOUP_WEBSOCKET_DATA_TEXT, sent);
      deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
      wake = g_timeout_add (20, wake_cb, NULL);
      while (c.messages->len <= i && !c.closed && g_get_monotonic_time () < deadline)
        g_main_context_iteration (NULL, TRUE);
      g_source_remove (wake);
      if (c.messages->len <= i)
        gt_test_fail ("no echo for WebSocket message %u (%" G_GSIZE_FORMAT " bytes)%s", i, size,
                      c.closed ? ": connection closed" : "");
      got = c.messages->pdata[i];
      type = g_array_index (c.types, gint, i);
      g_assert_cmpint (type, ==, binary ? SOUP_WEBSOCKET_DATA_BINARY : SOUP_WEBSOCKET_DATA_TEXT);
      gt_test_check_bytes ("WebSocket echo", g_bytes_get_data (got, NULL), g_bytes_get_size (got),
                           g_bytes_get_data (sent, NULL), size);
    }

  soup_websocket_connection_close (c.ws, SOUP_WEBSOCKET_CLOSE_NORMAL, NULL);
  if (!gt_test_iterate_until (&c.closed, gt_test_deadline_in (GT_TEST_WAIT_MS)))
    gt_test_fail ("WebSocket close handshake timed out");
  g_assert_cmpint (soup_websocket_connection_get_close_code (c.ws), ==,
                   SOUP_WEBSOCKET_CLOSE_NORMAL);
  g_clear_object (&c.ws);
  g_ptr_array_unref (c.messages);
  g_array_unref (c.types);
}

void
gt_test_remove_tree (const char *path)
{
  g_autoptr (GDir) dir = g_dir_open (path, 0, NULL);
  const char *name;

  while (dir != NULL && (name = g_dir_read_name (dir)) != NULL)
    {
      g_autofree char *child = g_build_filename (path, name, NULL);

      if (g_file_test (child, G_FILE_TEST_IS_DIR) && !g_file_test (child, G_FILE_TEST_IS_SYMLINK))
        gt_test_remove_tree (child);
      else
        g_unlink (child);
    }
  g_rmdir (path);
}

static void
drop_log_cb (const char *domain, GLogLevelFlags level, const char *message, gpointer data)
{
}

/* ------------------------------------------------------------------------------------------ */
/* The harness's life: init, one setup and teardown per test, run. */

const char *
gt_test_binary (void)
{
  const char *bin = g_getenv ("GT_BINARY");

  return bin != NULL && *bin != '\0' ? bin : NULL;
}

const guint8 *
gt_test_pattern (void)
{
  return pattern;
}

GMutex *
gt_test_lock (void)
{
  return &state_lock;
}

GCond *
gt_test_cond (void)
{
  return &state_cond;
}

void
gt_test_init (int *argc, char ***argv, gsize size)
{
  g_test_init (argc, argv, NULL);

  signal (SIGPIPE, SIG_IGN);
  signal (SIGABRT, fatal_signal_handler);
  signal (SIGTERM, fatal_signal_handler);
  verbose_logs = g_getenv ("GT_TEST_VERBOSE") != NULL;
  if (!verbose_logs)
    {
      /* libsoup traces every WebSocket frame at debug level */
      g_log_set_handler ("libsoup", G_LOG_LEVEL_DEBUG | G_LOG_LEVEL_INFO, drop_log_cb, NULL);
      g_log_set_handler ("GLib-GIO", G_LOG_LEVEL_DEBUG | G_LOG_LEVEL_INFO, drop_log_cb, NULL);
    }
  pattern_size = size;
  fill_pattern ();
  live_procs = g_ptr_array_new ();
  service_ctx = g_main_context_new ();
  service_loop = g_main_loop_new (service_ctx, FALSE);
  service_thread = g_thread_new ("services", service_thread_main, NULL);
}

static void
quit_in_service (gpointer data, gpointer unused)
{
  g_main_loop_quit (service_loop);
}

int
gt_test_run (void)
{
  int ret = g_test_run ();

  /* Past this point the handler's state is being freed: an abort at exit (e.g. LeakSanitizer's
   * report) must not run it. */
  signal (SIGABRT, SIG_DFL);
  signal (SIGTERM, SIG_DFL);
  /* Quit from inside the loop: a quit before the thread reached g_main_loop_run would be lost. */
  gt_test_service_call (quit_in_service, NULL);
  g_thread_join (service_thread);
  g_main_loop_unref (service_loop);
  g_main_context_unref (service_ctx);
  g_ptr_array_unref (live_procs);
  g_clear_pointer (&pattern, g_free);
  return ret;
}

void
gt_test_setup (void)
{
  g_assert_null (test_procs);
  test_procs = g_ptr_array_new_with_free_func ((GDestroyNotify)proc_unref);
  test_locals = g_ptr_array_new_with_free_func (http_free);
  test_tcp_services = g_ptr_array_new_with_free_func (tcp_service_free);
}

const char *
gt_test_tmpdir (void)
{
  if (test_tmpdir == NULL)
    {
      g_autoptr (GError) error = NULL;
      char *dir = g_dir_make_tmp ("gt-test-XXXXXX", &error);

      g_assert_no_error (error);
      g_mutex_lock (&state_lock);
      test_tmpdir = dir;
      g_mutex_unlock (&state_lock);
    }
  return test_tmpdir;
}

char *
gt_test_write_file (const char *name, const char *text)
{
  char *path = g_build_filename (gt_test_tmpdir (), name, NULL);
  g_autoptr (GError) error = NULL;

  g_file_set_contents (path, text, -1, &error);
  g_assert_no_error (error);
  return path;
}

void
gt_test_stop_all (void)
{
  /* Newest first, so clients go before their server and their connections to the local
   * services end. */
  for (guint i = test_procs->len; i > 0; i--)
    {
      GtTestProc *p = test_procs->pdata[i - 1];

      if (gt_test_proc_has_exited (p))
        continue;
      if (p->is_gt)
        gt_test_proc_stop_cleanly (p);
      else
        gt_test_proc_stop (p, SIGTERM);
    }
}

void
gt_test_teardown (void)
{
  char *dir;

  gt_test_stop_all ();
  for (guint i = test_procs->len; i > 0; i--)
    proc_finalize (test_procs->pdata[i - 1]);
  g_clear_pointer (&test_procs, g_ptr_array_unref);
  g_clear_pointer (&test_locals, g_ptr_array_unref);
  g_clear_pointer (&test_tcp_services, g_ptr_array_unref);
  test_tcp_echo = NULL;
  if (test_tmpdir != NULL && gt_test_under_valgrind ())
    valgrind_check_logs (test_tmpdir);
  g_mutex_lock (&state_lock);
  dir = g_steal_pointer (&test_tmpdir);
  g_mutex_unlock (&state_lock);
  if (dir != NULL && g_getenv ("GT_TEST_KEEP_TMP") == NULL)
    gt_test_remove_tree (dir);
  else if (dir != NULL)
    g_test_message ("kept %s", dir);
  g_free (dir);
}
