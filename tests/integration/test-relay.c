/* Integration tests of the core relay: real gt server/client processes, in-test local services. */
#define G_LOG_DOMAIN "gt-test"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gio.h>
#include <libsoup/soup.h>

/* Every wait in this file is bounded by this (or a shorter explicit) timeout. */
#define WAIT_MS 20000
#define MIB (1024 * 1024)
#define PATTERN_SIZE (64 * MIB + MIB)

#define CLIENT_ID "alice"
#define CLIENT_SECRET "s3cret-alice"
#define PREFIX "web"
#define HOST PREFIX ".example.com"

#define TCP_BANNER "SSH-2.0-test\r\n"

/* ------------------------------------------------------------------------------------------ */
/* Shared state: one lock and one condition for everything the service thread updates. */

static GMutex state_lock;
static GCond state_cond;
static GMainContext *service_ctx;
static GMainLoop *service_loop;
static GThread *service_thread;
static GPtrArray *live_procs; /* GtProc *, under state_lock; read by the abort handler */
static guint8 *pattern;       /* deterministic bytes served by /bytes and used as bodies */
static const char *gt_binary;
static gboolean verbose_logs;

static gint64
deadline_in (guint ms)
{
  return g_get_monotonic_time () + (gint64)ms * 1000;
}

#define test_fail(...)                                                                             \
  G_STMT_START                                                                                     \
  {                                                                                                \
    g_autofree char *msg_ = g_strdup_printf (__VA_ARGS__);                                         \
    g_assertion_message (G_LOG_DOMAIN, __FILE__, __LINE__, G_STRFUNC, msg_);                       \
  }                                                                                                \
  G_STMT_END

static void
fill_pattern (void)
{
  guint32 x = 0x9e3779b9u;

  pattern = g_malloc (PATTERN_SIZE);
  for (gsize i = 0; i < PATTERN_SIZE; i += 4)
    {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      memcpy (pattern + i, &x, 4);
    }
}

/* Compares received bytes with the expected ones, failing with the first differing offset. */
static void
check_bytes (const char *what, const guint8 *got, gsize got_len, const guint8 *want, gsize want_len)
{
  gsize n = MIN (got_len, want_len);

  for (gsize i = 0; i < n; i++)
    if (got[i] != want[i])
      test_fail ("%s: byte %" G_GSIZE_FORMAT
                 " differs (got 0x%02x, want 0x%02x; lengths %" G_GSIZE_FORMAT "/%" G_GSIZE_FORMAT
                 ")",
                 what, i, got[i], want[i], got_len, want_len);
  if (got_len != want_len)
    test_fail ("%s: got %" G_GSIZE_FORMAT " bytes, want %" G_GSIZE_FORMAT, what, got_len, want_len);
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

static void
service_call (GFunc func, gpointer data)
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
/* gt child processes: output read line by line in the service thread into a log buffer. */

typedef struct
{
  char *name;
  GSubprocess *proc;
  int pid;
  GDataInputStream *log_in;
  GCancellable *cancellable;
  GPtrArray *lines; /* char *, under state_lock */
  gboolean eof;     /* under state_lock */
  gboolean exited;  /* under state_lock */
} GtProc;

static void
gt_proc_clear (gpointer data)
{
  GtProc *p = data;

  g_free (p->name);
  g_clear_object (&p->proc);
  g_clear_object (&p->log_in);
  g_clear_object (&p->cancellable);
  g_clear_pointer (&p->lines, g_ptr_array_unref);
}

static void
gt_proc_unref (GtProc *p)
{
  g_atomic_rc_box_release_full (p, gt_proc_clear);
}

static void proc_line_cb (GObject *source, GAsyncResult *result, gpointer user_data);

static void
proc_read_next (GtProc *p)
{
  g_data_input_stream_read_line_async (p->log_in, G_PRIORITY_DEFAULT, p->cancellable, proc_line_cb,
                                       p);
}

static void
proc_line_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GtProc *p = user_data;
  gsize len = 0;
  char *line
      = g_data_input_stream_read_line_finish (G_DATA_INPUT_STREAM (source), result, &len, NULL);

  if (line == NULL)
    {
      g_mutex_lock (&state_lock);
      p->eof = TRUE;
      g_cond_broadcast (&state_cond);
      g_mutex_unlock (&state_lock);
      gt_proc_unref (p);
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
  GtProc *p = user_data;

  g_subprocess_wait_finish (G_SUBPROCESS (source), result, NULL);
  g_mutex_lock (&state_lock);
  p->exited = TRUE;
  g_cond_broadcast (&state_cond);
  g_mutex_unlock (&state_lock);
  gt_proc_unref (p);
}

static void
proc_start_io_in_service (gpointer data, gpointer unused)
{
  GtProc *p = data;

  g_subprocess_wait_async (p->proc, NULL, proc_exited_cb, g_atomic_rc_box_acquire (p));
  proc_read_next (g_atomic_rc_box_acquire (p));
}

static void
proc_cancel_in_service (gpointer data, gpointer unused)
{
  g_cancellable_cancel (((GtProc *)data)->cancellable);
}

static void
child_setup_cb (gpointer data)
{
  /* A test that aborts must not leave gt processes behind. */
  prctl (PR_SET_PDEATHSIG, SIGKILL);
}

typedef struct _LocalHttp LocalHttp;
typedef struct _TcpEcho TcpEcho;

typedef struct
{
  GPtrArray *procs;  /* GtProc * */
  GPtrArray *locals; /* LocalHttp * */
  TcpEcho *tcp_echo;
} Fixture;

static GPtrArray *
args_new (void)
{
  return g_ptr_array_new_with_free_func (g_free);
}

G_GNUC_PRINTF (2, 3) static void args_add (GPtrArray *args, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  g_ptr_array_add (args, g_strdup_vprintf (fmt, ap));
  va_end (ap);
}

G_GNUC_NULL_TERMINATED static void
args_addv (GPtrArray *args, ...)
{
  va_list ap;
  const char *a;

  va_start (ap, args);
  while ((a = va_arg (ap, const char *)) != NULL)
    g_ptr_array_add (args, g_strdup (a));
  va_end (ap);
}

static GtProc *
spawn_gt (Fixture *f, const char *name, GPtrArray *args)
{
  g_autoptr (GSubprocessLauncher) launcher = NULL;
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *cmdline = NULL;
  GtProc *p;

  g_ptr_array_add (argv, (gpointer)gt_binary);
  for (guint i = 0; args != NULL && i < args->len; i++)
    g_ptr_array_add (argv, args->pdata[i]);
  if (g_getenv ("GT_TEST_LOG_LEVEL") != NULL)
    {
      g_ptr_array_add (argv, (gpointer) "--logLevel");
      g_ptr_array_add (argv, (gpointer)g_getenv ("GT_TEST_LOG_LEVEL"));
    }
  g_ptr_array_add (argv, NULL);
  cmdline = g_strjoinv (" ", (char **)argv->pdata);
  g_test_message ("spawn %s: %s", name, cmdline);

  launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE
                                        | G_SUBPROCESS_FLAGS_STDERR_MERGE);
  g_subprocess_launcher_set_child_setup (launcher, child_setup_cb, NULL, NULL);

  p = g_atomic_rc_box_new0 (GtProc);
  p->name = g_strdup (name);
  p->lines = g_ptr_array_new_with_free_func (g_free);
  p->cancellable = g_cancellable_new ();
  p->proc = g_subprocess_launcher_spawnv (launcher, (const char *const *)argv->pdata, &error);
  g_assert_no_error (error);
  p->pid = atoi (g_subprocess_get_identifier (p->proc));
  p->log_in = g_data_input_stream_new (g_subprocess_get_stdout_pipe (p->proc));
  g_data_input_stream_set_newline_type (p->log_in, G_DATA_STREAM_NEWLINE_TYPE_LF);

  g_mutex_lock (&state_lock);
  g_ptr_array_add (live_procs, p);
  g_mutex_unlock (&state_lock);
  g_ptr_array_add (f->procs, g_atomic_rc_box_acquire (p));
  service_call (proc_start_io_in_service, p);
  return p;
}

static gboolean
proc_has_exited (GtProc *p)
{
  gboolean exited;

  g_mutex_lock (&state_lock);
  exited = p->exited;
  g_mutex_unlock (&state_lock);
  return exited;
}

static gboolean
proc_wait_exit (GtProc *p, guint timeout_ms)
{
  gint64 end = deadline_in (timeout_ms);
  gboolean exited;

  g_mutex_lock (&state_lock);
  while (!p->exited && g_cond_wait_until (&state_cond, &state_lock, end))
    ;
  exited = p->exited;
  g_mutex_unlock (&state_lock);
  return exited;
}

/* Sends sig and waits for the exit; escalates to SIGKILL when the process does not go. */
static void
proc_stop (GtProc *p, int sig)
{
  if (proc_has_exited (p))
    return;
  g_subprocess_send_signal (p->proc, sig);
  if (proc_wait_exit (p, 10000))
    return;
  g_printerr ("# %s did not exit within 10 s of signal %d, killing it\n", p->name, sig);
  g_subprocess_force_exit (p->proc);
  proc_wait_exit (p, 10000);
}

/* Stops p with SIGTERM and checks that it exits with status 0, as the CLI promises. */
static void
proc_stop_cleanly (GtProc *p)
{
  proc_stop (p, SIGTERM);
  if (!proc_has_exited (p))
    test_fail ("%s did not exit after SIGTERM and SIGKILL", p->name);
  if (g_subprocess_get_if_signaled (p->proc))
    test_fail ("%s was terminated by signal %d (%s) after SIGTERM instead of exiting with 0",
               p->name, g_subprocess_get_term_sig (p->proc),
               g_strsignal (g_subprocess_get_term_sig (p->proc)));
  if (g_subprocess_get_exit_status (p->proc) != 0)
    test_fail ("%s exited with status %d after SIGTERM", p->name,
               g_subprocess_get_exit_status (p->proc));
}

static guint
proc_line_count (GtProc *p)
{
  guint n;

  g_mutex_lock (&state_lock);
  n = p->lines->len;
  g_mutex_unlock (&state_lock);
  return n;
}

static guint
proc_count_matches (GtProc *p, const char *regex)
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

/* Waits for a log line at index >= *from matching regex; returns a copy of it (and moves
 * *from past it), or NULL when the timeout passes or the output ends first. */
static char *
proc_wait_line (GtProc *p, const char *regex, guint *from, guint timeout_ms)
{
  g_autoptr (GRegex) re = g_regex_new (regex, 0, 0, NULL);
  gint64 end = deadline_in (timeout_ms);
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

#define proc_expect_line(p, regex, from, timeout_ms)                                               \
  ({                                                                                               \
    char *line_ = proc_wait_line ((p), (regex), (from), (timeout_ms));                             \
    if (line_ == NULL)                                                                             \
      test_fail ("no line matching /%s/ from %s within %u ms%s", (regex), (p)->name,               \
                 (guint)(timeout_ms), proc_has_exited (p) ? " (process exited)" : "");             \
    line_;                                                                                         \
  })

/* First capture group of regex in line. */
static guint
capture_uint (const char *line, const char *regex)
{
  g_autoptr (GRegex) re = g_regex_new (regex, 0, 0, NULL);
  g_autoptr (GMatchInfo) mi = NULL;
  g_autofree char *s = NULL;

  if (!g_regex_match (re, line, 0, &mi))
    test_fail ("line '%s' does not match /%s/", line, regex);
  s = g_match_info_fetch (mi, 1);
  return (guint)g_ascii_strtoull (s, NULL, 10);
}

static void
proc_finalize (GtProc *p)
{
  gint64 end;

  proc_stop (p, SIGTERM);
  /* The log pipe normally ends with the process; cancel the reader if it does not. */
  end = deadline_in (5000);
  g_mutex_lock (&state_lock);
  while (!p->eof && g_cond_wait_until (&state_cond, &state_lock, end))
    ;
  g_mutex_unlock (&state_lock);
  service_call (proc_cancel_in_service, p);
  g_mutex_lock (&state_lock);
  while (!p->eof)
    g_cond_wait (&state_cond, &state_lock);
  g_ptr_array_remove (live_procs, p);
  g_mutex_unlock (&state_lock);
  gt_proc_unref (p);
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
      GtProc *p = live_procs->pdata[i];
      guint first = p->lines->len > 300 ? p->lines->len - 300 : 0;

      fprintf (stderr, "# ---- output of %s (pid %d), %u lines%s ----\n", p->name, p->pid,
               p->lines->len, first > 0 ? ", last 300 shown" : "");
      for (guint j = first; j < p->lines->len; j++)
        fprintf (stderr, "# [%s] %s\n", p->name, (const char *)p->lines->pdata[j]);
      kill (p->pid, SIGKILL);
    }
  fflush (stderr);
  if (locked)
    g_mutex_unlock (&state_lock);
  signal (sig, SIG_DFL);
  raise (sig);
}

/* ------------------------------------------------------------------------------------------ */
/* The local HTTP service: a SoupServer living in the service thread. */

struct _LocalHttp
{
  SoupServer *server;
  char *name;
  guint16 port;
};

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

  return v != NULL ? MIN (g_ascii_strtoull (v, NULL, 10), (guint64)PATTERN_SIZE) : dflt;
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

static void
whoami_cb (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
           gpointer user_data)
{
  LocalHttp *h = user_data;

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
  soup_websocket_connection_set_max_incoming_payload_size (ws, 16 * MIB);
  g_signal_connect (ws, "message", G_CALLBACK (ws_message_cb), NULL);
  g_signal_connect (ws, "closed", G_CALLBACK (ws_closed_cb), NULL);
}

typedef struct
{
  LocalHttp *h;
  GError *error;
} LocalHttpStart;

static void
local_http_start_in_service (gpointer data, gpointer unused)
{
  LocalHttpStart *st = data;
  LocalHttp *h = st->h;
  g_autoptr (GSocket) sock = NULL;
  g_autoptr (GInetAddress) lo = NULL;
  g_autoptr (GSocketAddress) addr = NULL;
  g_autoptr (GSocketAddress) bound = NULL;

  h->server = soup_server_new ("server-header", "gt-test-service ", NULL);
  soup_server_add_handler (h->server, "/echo", echo_cb, h, NULL);
  soup_server_add_handler (h->server, "/bytes", bytes_cb, h, NULL);
  soup_server_add_handler (h->server, "/chunked", chunked_cb, h, NULL);
  soup_server_add_handler (h->server, "/whoami", whoami_cb, h, NULL);
  soup_server_add_handler (h->server, "/host", host_cb, h, NULL);
  soup_server_add_handler (h->server, "/slow", slow_cb, h, NULL);
  soup_server_add_websocket_handler (h->server, "/ws", NULL, NULL, ws_cb, h, NULL);
  /* Our own socket: soup_server_listen_local keeps GSocket's backlog of 10, which makes 200
   * simultaneous connections wait for SYN retransmits. */
  sock = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP,
                       &st->error);
  if (sock == NULL)
    return;
  g_socket_set_listen_backlog (sock, 1024);
  lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  addr = g_inet_socket_address_new (lo, h->port);
  if (!g_socket_bind (sock, addr, TRUE, &st->error) || !g_socket_listen (sock, &st->error)
      || !soup_server_listen_socket (h->server, sock, 0, &st->error))
    return;
  bound = g_socket_get_local_address (sock, &st->error);
  if (bound == NULL)
    return;
  h->port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));
}

static void
local_http_stop_in_service (gpointer data, gpointer unused)
{
  LocalHttp *h = data;

  if (h->server != NULL)
    soup_server_disconnect (h->server);
  g_clear_object (&h->server);
}

/* Starts the local service on port (0 = any free port). */
static LocalHttp *
local_http_start (Fixture *f, const char *name, guint16 port)
{
  LocalHttpStart st = { NULL, NULL };

  st.h = g_new0 (LocalHttp, 1);
  st.h->name = g_strdup (name);
  st.h->port = port;
  service_call (local_http_start_in_service, &st);
  g_assert_no_error (st.error);
  g_ptr_array_add (f->locals, st.h);
  return st.h;
}

static void
local_http_stop (LocalHttp *h)
{
  service_call (local_http_stop_in_service, h);
}

static void
local_http_free (gpointer data)
{
  LocalHttp *h = data;

  local_http_stop (h);
  g_free (h->name);
  g_free (h);
}

/* ------------------------------------------------------------------------------------------ */
/* A server-speaks-first TCP service: banner on accept, then echo, close after the peer's EOF. */

struct _TcpEcho
{
  GSocketService *service;
  guint16 port;
};

static gboolean
tcp_echo_run_cb (GThreadedSocketService *service, GSocketConnection *conn, GObject *source,
                 gpointer user_data)
{
  GInputStream *in = g_io_stream_get_input_stream (G_IO_STREAM (conn));
  GOutputStream *out = g_io_stream_get_output_stream (G_IO_STREAM (conn));
  g_autofree guint8 *buf = g_malloc (65536);

  g_socket_set_timeout (g_socket_connection_get_socket (conn), 60);
  if (!g_output_stream_write_all (out, TCP_BANNER, strlen (TCP_BANNER), NULL, NULL, NULL))
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

static void
tcp_echo_start_in_service (gpointer data, gpointer unused)
{
  TcpEcho *t = data;
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) addr = g_inet_socket_address_new (lo, 0);
  g_autoptr (GSocketAddress) bound = NULL;
  g_autoptr (GError) error = NULL;

  t->service = g_threaded_socket_service_new (16);
  g_signal_connect (t->service, "run", G_CALLBACK (tcp_echo_run_cb), NULL);
  g_socket_listener_add_address (G_SOCKET_LISTENER (t->service), addr, G_SOCKET_TYPE_STREAM,
                                 G_SOCKET_PROTOCOL_TCP, NULL, &bound, &error);
  g_assert_no_error (error);
  t->port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));
  g_socket_service_start (t->service);
}

static void
tcp_echo_stop_in_service (gpointer data, gpointer unused)
{
  TcpEcho *t = data;

  g_socket_service_stop (t->service);
  g_socket_listener_close (G_SOCKET_LISTENER (t->service));
  g_clear_object (&t->service);
}

static TcpEcho *
tcp_echo_start (Fixture *f)
{
  g_assert_null (f->tcp_echo);
  f->tcp_echo = g_new0 (TcpEcho, 1);
  service_call (tcp_echo_start_in_service, f->tcp_echo);
  return f->tcp_echo;
}

/* ------------------------------------------------------------------------------------------ */
/* Raw client sockets and an HTTP/1.1 response parser (Content-Length, chunked, until-close). */

typedef struct
{
  int fd;
  GByteArray *in; /* received, not yet consumed */
  gboolean eof;
} Conn;

static void
conn_free (Conn *c)
{
  if (c->fd >= 0)
    close (c->fd);
  g_byte_array_unref (c->in);
  g_free (c);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Conn, conn_free)

static gboolean
fd_poll (int fd, short events, gint64 deadline, GError **error)
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
static Conn *
conn_connect_start (guint16 port, GError **error)
{
  struct sockaddr_in sa = { 0 };
  Conn *c;

  sa.sin_family = AF_INET;
  sa.sin_port = htons (port);
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  c = g_new0 (Conn, 1);
  c->in = g_byte_array_new ();
  c->fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  g_assert_cmpint (c->fd, >=, 0);
  if (connect (c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
    {
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errno), "connect to %u: %s", port,
                   g_strerror (errno));
      conn_free (c);
      return NULL;
    }
  return c;
}

static gboolean
conn_check_connected (Conn *c, GError **error)
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

static Conn *
conn_connect (guint16 port, GError **error)
{
  g_autoptr (Conn) c = conn_connect_start (port, error);

  if (c == NULL || !fd_poll (c->fd, POLLOUT, deadline_in (10000), error)
      || !conn_check_connected (c, error))
    return NULL;
  return g_steal_pointer (&c);
}

static gboolean
conn_write_all (Conn *c, const void *data, gsize len, gint64 deadline, GError **error)
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
          if (!fd_poll (c->fd, POLLOUT, deadline, error))
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
static gssize
conn_read_now (Conn *c, GError **error)
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
static gssize
conn_fill (Conn *c, gint64 deadline, GError **error)
{
  for (;;)
    {
      gssize n = conn_read_now (c, error);

      if (n != -2)
        return n;
      if (!fd_poll (c->fd, POLLIN, deadline, error))
        return -1;
    }
}

/* Reads until EOF (a reset also counts as the end when allow_reset). */
static gboolean
conn_read_to_eof (Conn *c, gboolean allow_reset, gint64 deadline, GError **error)
{
  g_autoptr (GError) local_error = NULL;

  while (!c->eof)
    {
      gssize n = conn_fill (c, deadline, &local_error);

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

typedef struct
{
  guint status;
  char *reason;
  GPtrArray *header_names;  /* char * */
  GPtrArray *header_values; /* char * */
  GByteArray *body;
} HttpResponse;

static void
http_response_free (HttpResponse *r)
{
  g_free (r->reason);
  g_ptr_array_unref (r->header_names);
  g_ptr_array_unref (r->header_values);
  g_byte_array_unref (r->body);
  g_free (r);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC (HttpResponse, http_response_free)

static const char *
http_response_header (HttpResponse *r, const char *name)
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
static int
http_parse_response (const guint8 *data, gsize len, gboolean eof, gsize *consumed,
                     HttpResponse **out, GError **error)
{
  const guint8 *end = data + len;
  const guint8 *head_end = len >= 4 ? memmem (data, len, "\r\n\r\n", 4) : NULL;
  g_autoptr (HttpResponse) r = NULL;
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
  r = g_new0 (HttpResponse, 1);
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
  te = http_response_header (r, "Transfer-Encoding");
  cl = http_response_header (r, "Content-Length");
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

static HttpResponse *
conn_read_response (Conn *c, gint64 deadline, GError **error)
{
  for (;;)
    {
      HttpResponse *r = NULL;
      gsize consumed = 0;
      int res = http_parse_response (c->in->data, c->in->len, c->eof, &consumed, &r, error);

      if (res < 0)
        return NULL;
      if (res > 0)
        {
          g_byte_array_remove_range (c->in, 0, consumed);
          return r;
        }
      if (conn_fill (c, deadline, error) < 0)
        return NULL;
    }
}

static GByteArray *
http_build_request (const char *method, const char *path, const char *host, const void *body,
                    gsize body_len, const char *extra_headers)
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
static HttpResponse *
conn_request (Conn *c, const char *method, const char *path, const char *host, const void *body,
              gsize body_len, guint timeout_ms, GError **error)
{
  g_autoptr (GByteArray) req = http_build_request (method, path, host, body, body_len, NULL);
  gint64 deadline = deadline_in (timeout_ms);

  if (!conn_write_all (c, req->data, req->len, deadline, error))
    return NULL;
  return conn_read_response (c, deadline, error);
}

/* One request on a fresh connection to the relay port with the given Host; returns status and
 * body (NULL and error on transport or parse failures). */
static HttpResponse *
http_request (guint16 port, const char *method, const char *path, const char *host,
              const void *body, gsize body_len, GError **error)
{
  g_autoptr (Conn) c = conn_connect (port, error);

  if (c == NULL)
    return NULL;
  return conn_request (c, method, path, host, body, body_len, WAIT_MS, error);
}

#define expect_response(resp, error, want_status)                                                  \
  G_STMT_START                                                                                     \
  {                                                                                                \
    if ((resp) == NULL)                                                                            \
      test_fail ("request failed: %s", (error) != NULL ? (error)->message : "?");                  \
    if ((resp)->status != (want_status))                                                           \
      test_fail ("status %u '%s' (want %u), body '%.*s'", (resp)->status, (resp)->reason,          \
                 (guint)(want_status), (int)MIN ((resp)->body->len, 300),                          \
                 (const char *)(resp)->body->data);                                                \
  }                                                                                                \
  G_STMT_END

/* ------------------------------------------------------------------------------------------ */
/* Starting gt. */

static guint16
free_port (void)
{
  struct sockaddr_in sa = { 0 };
  socklen_t len = sizeof sa;
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  g_assert_cmpint (bind (fd, (struct sockaddr *)&sa, sizeof sa), ==, 0);
  g_assert_cmpint (getsockname (fd, (struct sockaddr *)&sa, &len), ==, 0);
  close (fd);
  return ntohs (sa.sin_port);
}

static gboolean
port_is_free (guint16 port)
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

static void
free_port_range (guint n, guint16 *first, guint16 *last)
{
  for (int attempt = 0; attempt < 100; attempt++)
    {
      guint16 a = (guint16)g_random_int_range (20000, 60000);
      guint i;

      for (i = 0; i < n && port_is_free (a + i); i++)
        ;
      if (i == n)
        {
          *first = a;
          *last = a + n - 1;
          return;
        }
    }
  test_fail ("no free range of %u ports found", n);
}

static GtProc *
start_server (Fixture *f, const char *name, guint16 port, GPtrArray *extra, guint16 *port_out)
{
  g_autoptr (GPtrArray) args = args_new ();
  g_autofree char *line = NULL;
  GtProc *p;

  args_addv (args, "server", "--id", CLIENT_ID, "--secret", CLIENT_SECRET, "--addr", NULL);
  args_add (args, "127.0.0.1:%u", port);
  for (guint i = 0; extra != NULL && i < extra->len; i++)
    args_add (args, "%s", (const char *)extra->pdata[i]);
  p = spawn_gt (f, name, args);
  line = proc_expect_line (p, "listening on 127\\.0\\.0\\.1:[0-9]+", NULL, WAIT_MS);
  *port_out = (guint16)capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");
  g_assert_cmpuint (*port_out, >, 0);
  if (port != 0)
    g_assert_cmpuint (*port_out, ==, port);
  return p;
}

/* services: the per-service options (--local ... --hostPrefix ...) and any other options. */
static GtProc *
start_client_with_secret (Fixture *f, const char *name, guint16 server_port, const char *secret,
                          GPtrArray *services)
{
  g_autoptr (GPtrArray) args = args_new ();

  args_addv (args, "client", "--id", CLIENT_ID, "--secret", secret, "--reconnectDelay", "200ms",
             "--remote", NULL);
  args_add (args, "tcp://127.0.0.1:%u", server_port);
  for (guint i = 0; services != NULL && i < services->len; i++)
    args_add (args, "%s", (const char *)services->pdata[i]);
  return spawn_gt (f, name, args);
}

/* Starts a client and waits for its first tunnel. */
static GtProc *
start_client (Fixture *f, const char *name, guint16 server_port, GPtrArray *services)
{
  GtProc *p = start_client_with_secret (f, name, server_port, CLIENT_SECRET, services);
  g_autofree char *line = proc_expect_line (p, "tunnel started", NULL, WAIT_MS);

  return p;
}

static GPtrArray *
http_service_args (guint16 local_port, const char *prefix)
{
  GPtrArray *a = args_new ();

  args_add (a, "--local");
  args_add (a, "http://127.0.0.1:%u", local_port);
  if (prefix != NULL)
    args_addv (a, "--hostPrefix", prefix, NULL);
  return a;
}

/* The common setup: a local service, a server on a free port, a client serving PREFIX. */
static guint16
start_relay (Fixture *f, const char *extra_client_option, ...)
{
  LocalHttp *h = local_http_start (f, "svc", 0);
  g_autoptr (GPtrArray) services = http_service_args (h->port, PREFIX);
  guint16 port;
  va_list ap;

  va_start (ap, extra_client_option);
  for (const char *a = extra_client_option; a != NULL; a = va_arg (ap, const char *))
    args_add (services, "%s", a);
  va_end (ap);
  start_server (f, "server", 0, NULL, &port);
  start_client (f, "client", port, services);
  return port;
}

/* ------------------------------------------------------------------------------------------ */
/* Fixture */

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  f->procs = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_proc_unref);
  f->locals = g_ptr_array_new_with_free_func (local_http_free);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  /* gt processes first (newest first, so clients go before their server): their connections
   * to the local services then end. Each must stop cleanly on SIGTERM. */
  for (guint i = f->procs->len; i > 0; i--)
    {
      GtProc *p = f->procs->pdata[i - 1];

      if (!proc_has_exited (p))
        proc_stop_cleanly (p);
      proc_finalize (p);
    }
  g_ptr_array_unref (f->procs);
  g_ptr_array_unref (f->locals);
  if (f->tcp_echo != NULL)
    {
      service_call (tcp_echo_stop_in_service, f->tcp_echo);
      g_free (f->tcp_echo);
    }
}

#define REQUIRE_GT()                                                                               \
  G_STMT_START                                                                                     \
  {                                                                                                \
    if (gt_binary == NULL)                                                                         \
      {                                                                                            \
        g_test_skip ("GT_BINARY is not set");                                                      \
        return;                                                                                    \
      }                                                                                            \
  }                                                                                                \
  G_STMT_END

/* ------------------------------------------------------------------------------------------ */
/* Harness self-test: the local services and the raw HTTP client, without gt. */

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
      soup_websocket_connection_set_max_incoming_payload_size (c->ws, 16 * MIB);
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
static gboolean
iterate_until (const gboolean *flag, gint64 deadline)
{
  guint wake = g_timeout_add (20, wake_cb, NULL);

  while (!*flag && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, TRUE);
  g_source_remove (wake);
  return *flag;
}

/* WebSocket echo of 100 messages of varied sizes (text and binary, up to 200 KiB) over
 * ws://127.0.0.1:port/ws with the given Host header. */
static void
run_ws_echo (guint16 port, const char *host)
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
  if (!iterate_until (&c.connected, deadline_in (WAIT_MS)))
    test_fail ("WebSocket connect timed out");
  if (c.ws == NULL)
    test_fail ("WebSocket connect failed: %s (HTTP status %u)", c.error->message,
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
      deadline = deadline_in (WAIT_MS);
      wake = g_timeout_add (20, wake_cb, NULL);
      while (c.messages->len <= i && !c.closed && g_get_monotonic_time () < deadline)
        g_main_context_iteration (NULL, TRUE);
      g_source_remove (wake);
      if (c.messages->len <= i)
        test_fail ("no echo for WebSocket message %u (%" G_GSIZE_FORMAT " bytes)%s", i, size,
                   c.closed ? ": connection closed" : "");
      got = c.messages->pdata[i];
      type = g_array_index (c.types, gint, i);
      g_assert_cmpint (type, ==, binary ? SOUP_WEBSOCKET_DATA_BINARY : SOUP_WEBSOCKET_DATA_TEXT);
      check_bytes ("WebSocket echo", g_bytes_get_data (got, NULL), g_bytes_get_size (got),
                   g_bytes_get_data (sent, NULL), size);
    }

  soup_websocket_connection_close (c.ws, SOUP_WEBSOCKET_CLOSE_NORMAL, NULL);
  if (!iterate_until (&c.closed, deadline_in (WAIT_MS)))
    test_fail ("WebSocket close handshake timed out");
  g_assert_cmpint (soup_websocket_connection_get_close_code (c.ws), ==,
                   SOUP_WEBSOCKET_CLOSE_NORMAL);
  g_clear_object (&c.ws);
  g_ptr_array_unref (c.messages);
  g_array_unref (c.types);
}

/* Reads exactly n bytes (appending to c->in). */
static void
conn_read_exact (Conn *c, gsize n, guint timeout_ms, const char *what)
{
  g_autoptr (GError) error = NULL;
  gint64 deadline = deadline_in (timeout_ms);

  while (c->in->len < n)
    {
      gssize r = conn_fill (c, deadline, &error);

      if (r <= 0)
        test_fail ("%s: %s after %u of %" G_GSIZE_FORMAT " bytes", what,
                   r == 0 ? "EOF" : error->message, c->in->len, n);
    }
}

/* Server-speaks-first echo: banner before any byte is written, then 64 KiB echoed, then a
 * half-close exchange read to EOF. */
static void
run_tcp_banner_echo (guint16 port)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (Conn) c = conn_connect (port, &error);
  g_autoptr (Conn) h = NULL;
  gsize n = 64 * 1024, m = 300 * 1024 + 17;
  gint64 deadline;

  g_assert_no_error (error);
  conn_read_exact (c, strlen (TCP_BANNER), WAIT_MS, "banner");
  check_bytes ("banner", c->in->data, c->in->len, (const guint8 *)TCP_BANNER, strlen (TCP_BANNER));
  g_byte_array_set_size (c->in, 0);

  /* Write and read at the same time: the echo may come back while we still write. */
  deadline = deadline_in (WAIT_MS);
  for (gsize sent = 0; sent < n || c->in->len < n;)
    {
      struct pollfd pfd = { c->fd, POLLIN | (sent < n ? POLLOUT : 0), 0 };

      if (g_get_monotonic_time () > deadline)
        test_fail ("tcp echo: timed out, sent %" G_GSIZE_FORMAT " received %u", sent, c->in->len);
      if (poll (&pfd, 1, 50) <= 0)
        continue;
      if ((pfd.revents & POLLOUT) && sent < n)
        {
          gssize w = send (c->fd, pattern + 1000 + sent, n - sent, MSG_NOSIGNAL);

          if (w < 0 && errno != EAGAIN)
            test_fail ("tcp echo: send: %s", g_strerror (errno));
          sent += MAX (w, 0);
        }
      if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
        {
          gssize r = conn_read_now (c, &error);

          if (r == 0 || r == -1)
            test_fail ("tcp echo: %s after %u bytes", r == 0 ? "EOF" : error->message, c->in->len);
        }
    }
  check_bytes ("tcp echo", c->in->data, c->in->len, pattern + 1000, n);

  /* Half-close: all data, then SHUT_WR; the service echoes everything and closes after EOF. */
  h = conn_connect (port, &error);
  g_assert_no_error (error);
  conn_read_exact (h, strlen (TCP_BANNER), WAIT_MS, "banner (half-close connection)");
  g_byte_array_set_size (h->in, 0);
  deadline = deadline_in (WAIT_MS);
  for (gsize sent = 0; sent < m || !h->eof;)
    {
      struct pollfd pfd = { h->fd, POLLIN | (sent < m ? POLLOUT : 0), 0 };

      if (g_get_monotonic_time () > deadline)
        test_fail ("half-close: timed out, sent %" G_GSIZE_FORMAT " of %" G_GSIZE_FORMAT
                   ", received %u, eof %d",
                   sent, m, h->in->len, h->eof);
      if (poll (&pfd, 1, 50) <= 0)
        continue;
      if ((pfd.revents & POLLOUT) && sent < m)
        {
          gssize w = send (h->fd, pattern + 7 + sent, m - sent, MSG_NOSIGNAL);

          if (w < 0 && errno != EAGAIN)
            test_fail ("half-close: send: %s", g_strerror (errno));
          sent += MAX (w, 0);
          if (sent == m)
            g_assert_cmpint (shutdown (h->fd, SHUT_WR), ==, 0);
        }
      if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
        {
          if (conn_read_now (h, &error) == -1)
            test_fail ("half-close: %s after %u bytes", error->message, h->in->len);
        }
    }
  check_bytes ("half-close echo", h->in->data, h->in->len, pattern + 7, m);
}

static void run_concurrent (guint16 port);

static void
test_harness_direct (Fixture *f, gconstpointer data)
{
  LocalHttp *h = local_http_start (f, "direct", 0);
  g_autoptr (GError) error = NULL;
  g_autoptr (SoupSession) session = soup_session_new ();
  g_autofree char *uri = g_strdup_printf ("http://127.0.0.1:%u/host", h->port);
  g_autoptr (SoupMessage) msg = soup_message_new ("GET", uri);
  g_autoptr (GBytes) host_body = NULL;
  g_autoptr (Conn) c = NULL;

  {
    g_autoptr (HttpResponse) r
        = http_request (h->port, "POST", "/echo", "x.example.com", pattern + 3, MIB, &error);

    expect_response (r, error, 200);
    check_bytes ("direct echo", r->body->data, r->body->len, pattern + 3, MIB);
  }
  {
    g_autoptr (HttpResponse) r
        = http_request (h->port, "GET", "/chunked?n=300001", "x", NULL, 0, &error);

    expect_response (r, error, 200);
    g_assert_cmpstr (http_response_header (r, "Transfer-Encoding"), ==, "chunked");
    check_bytes ("direct chunked", r->body->data, r->body->len, pattern, 300001);
  }
  c = conn_connect (h->port, &error);
  g_assert_no_error (error);
  for (guint i = 0; i < 20; i++)
    {
      g_autofree char *path = g_strdup_printf ("/bytes?n=%u", i * 1000);
      g_autoptr (HttpResponse) r = conn_request (c, "GET", path, "x", NULL, 0, WAIT_MS, &error);

      expect_response (r, error, 200);
      check_bytes ("direct keep-alive", r->body->data, r->body->len, pattern, i * 1000);
    }

  /* SoupSession keeps a Host header set by hand: the relay tests rely on it. */
  soup_message_headers_replace (soup_message_get_request_headers (msg), "Host",
                                "custom.example.com");
  host_body = soup_session_send_and_read (session, msg, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (g_bytes_get_data (host_body, NULL), g_bytes_get_size (host_body),
                   "custom.example.com", strlen ("custom.example.com"));

  run_ws_echo (h->port, "ws.example.com");
  run_concurrent (h->port);
  tcp_echo_start (f);
  run_tcp_banner_echo (f->tcp_echo->port);
}

/* ------------------------------------------------------------------------------------------ */
/* 1. Bodies of 1 MiB both ways through host routing. */

static void
test_http_bodies (Fixture *f, gconstpointer data)
{
  LocalHttp *a, *b;
  g_autoptr (GPtrArray) services = NULL;
  g_autoptr (GError) error = NULL;
  guint16 port;

  REQUIRE_GT ();
  a = local_http_start (f, "service-a", 0);
  b = local_http_start (f, "service-b", 0);
  services = http_service_args (a->port, PREFIX);
  args_addv (services, "--local", NULL);
  args_add (services, "http://127.0.0.1:%u", b->port);
  args_addv (services, "--hostPrefix", "other", NULL);
  start_server (f, "server", 0, NULL, &port);
  start_client (f, "client", port, services);

  /* Routing by the first label of Host, with or without a port suffix. */
  {
    static const struct
    {
      const char *host;
      const char *want;
    } routes[] = {
      { HOST, "service-a" },
      { "other.example.com", "service-b" },
      { HOST ":8080", "service-a" },
      { "other.example.com:1234", "service-b" },
    };

    for (guint i = 0; i < G_N_ELEMENTS (routes); i++)
      {
        g_autoptr (HttpResponse) r
            = http_request (port, "GET", "/whoami", routes[i].host, NULL, 0, &error);

        expect_response (r, error, 200);
        check_bytes (routes[i].host, r->body->data, r->body->len, (const guint8 *)routes[i].want,
                     strlen (routes[i].want));
      }
  }
  {
    g_autoptr (HttpResponse) r
        = http_request (port, "GET", "/bytes?n=1048576", HOST, NULL, 0, &error);

    expect_response (r, error, 200);
    g_assert_cmpstr (http_response_header (r, "Content-Length"), ==, "1048576");
    check_bytes ("GET 1 MiB", r->body->data, r->body->len, pattern, MIB);
  }
  {
    g_autoptr (HttpResponse) r
        = http_request (port, "POST", "/echo", HOST, pattern + 12345, MIB, &error);

    expect_response (r, error, 200);
    g_assert_cmpstr (http_response_header (r, "Content-Length"), ==, "1048576");
    check_bytes ("POST 1 MiB", r->body->data, r->body->len, pattern + 12345, MIB);
  }
  {
    g_autoptr (HttpResponse) r
        = http_request (port, "POST", "/echo", "other.example.com", pattern + 777, MIB + 3, &error);

    expect_response (r, error, 200);
    g_assert_cmpstr (http_response_header (r, "Content-Length"), ==, "1048579");
    check_bytes ("POST 1 MiB + 3 (other)", r->body->data, r->body->len, pattern + 777, MIB + 3);
  }
  {
    g_autoptr (HttpResponse) r
        = http_request (port, "GET", "/chunked?n=1048576", HOST, NULL, 0, &error);

    expect_response (r, error, 200);
    g_assert_cmpstr (http_response_header (r, "Transfer-Encoding"), ==, "chunked");
    check_bytes ("GET 1 MiB chunked", r->body->data, r->body->len, pattern, MIB);
  }
}

/* 2. 1,000 keep-alive requests on one connection. */

static void
test_keep_alive (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (Conn) c = NULL;
  guint16 port;

  REQUIRE_GT ();
  port = start_relay (f, NULL);
  c = conn_connect (port, &error);
  g_assert_no_error (error);
  for (guint i = 0; i < 1000; i++)
    {
      g_autoptr (HttpResponse) r = NULL;
      gsize n = (i * 7919) % 6000;

      if (i % 2 == 0)
        {
          g_autofree char *path = g_strdup_printf ("/bytes?n=%" G_GSIZE_FORMAT, n);

          r = conn_request (c, "GET", path, HOST, NULL, 0, WAIT_MS, &error);
          if (r == NULL)
            test_fail ("request %u on the kept-alive connection failed: %s", i, error->message);
          expect_response (r, error, 200);
          check_bytes ("keep-alive GET", r->body->data, r->body->len, pattern, n);
        }
      else
        {
          r = conn_request (c, "POST", "/echo", HOST, pattern + i, n, WAIT_MS, &error);
          if (r == NULL)
            test_fail ("request %u on the kept-alive connection failed: %s", i, error->message);
          expect_response (r, error, 200);
          check_bytes ("keep-alive POST", r->body->data, r->body->len, pattern + i, n);
        }
    }
  g_assert_cmpuint (c->in->len, ==, 0);
}

/* 3. WebSocket echo through the tunnel. */

static void
test_websocket (Fixture *f, gconstpointer data)
{
  guint16 port;

  REQUIRE_GT ();
  port = start_relay (f, NULL);
  run_ws_echo (port, HOST);
}

/* 4. TCP forward of a server-speaks-first service, including half-close. */

static void
test_tcp_forward (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) server_extra = args_new ();
  g_autoptr (GPtrArray) services = args_new ();
  g_autofree char *line = NULL;
  guint16 first = 0, last = 0, port, tcp_port;
  GtProc *client;

  REQUIRE_GT ();
  tcp_echo_start (f);
  free_port_range (10, &first, &last);
  args_add (server_extra, "--tcpRange");
  args_add (server_extra, "%u-%u", first, last);
  start_server (f, "server", 0, server_extra, &port);
  args_add (services, "--local");
  args_add (services, "tcp://127.0.0.1:%u", f->tcp_echo->port);
  args_add (services, "--remoteTCPRandom");
  client = start_client (f, "client", port, services);
  line = proc_expect_line (client, "tcp port=[0-9]+", NULL, WAIT_MS);
  tcp_port = (guint16)capture_uint (line, "tcp port=([0-9]+)");
  if (tcp_port < first || tcp_port > last)
    test_fail ("tcp port %u outside --tcpRange %u-%u", tcp_port, first, last);
  run_tcp_banner_echo (tcp_port);
}

/* 5. 200 concurrent connections, each a slow request with its own body. */

typedef struct
{
  Conn *c;
  GByteArray *req;
  gsize sent;
  gboolean connected;
  HttpResponse *resp;
} Slot;

/* N connections opened at once, each POSTing a distinct body to /slow?ms=300; all responses
 * must arrive (in any order) within WAIT_MS, so the requests must really run concurrently. */
static void
run_concurrent (guint16 port)
{
  enum
  {
    N = 200
  };
  Slot slots[N] = { { 0 } };
  struct pollfd pfds[N];
  g_autoptr (GError) error = NULL;
  gint64 start, deadline;
  guint done = 0;

  start = g_get_monotonic_time ();
  deadline = deadline_in (WAIT_MS);
  for (guint i = 0; i < N; i++)
    {
      g_autofree char *body = g_strdup_printf ("request %03u %.*s", i, (int)(100 + i * 13),
                                               "abcdefghijklmnopqrstuvwxyz0123456789"
                                               "abcdefghijklmnopqrstuvwxyz0123456789"
                                               "abcdefghijklmnopqrstuvwxyz0123456789"
                                               "abcdefghijklmnopqrstuvwxyz0123456789"
                                               "abcdefghijklmnopqrstuvwxyz0123456789"
                                               "abcdefghijklmnopqrstuvwxyz0123456789"
                                               "abcdefghijklmnopqrstuvwxyz0123456789"
                                               "abcdefghijklmnopqrstuvwxyz0123456789");

      slots[i].c = conn_connect_start (port, &error);
      g_assert_no_error (error);
      slots[i].req = http_build_request ("POST", "/slow?ms=300", HOST, body, strlen (body), NULL);
    }

  /* All 200 are in flight at once; each response takes 300 ms at the service. */
  while (done < N)
    {
      guint idx[N], n = 0;

      if (g_get_monotonic_time () > deadline)
        {
          GString *s = g_string_new (NULL);

          for (guint i = 0; i < N; i++)
            if (slots[i].resp == NULL)
              g_string_append_printf (s, " %u(sent %" G_GSIZE_FORMAT "/%u, got %u%s)", i,
                                      slots[i].sent, slots[i].req->len, slots[i].c->in->len,
                                      slots[i].c->eof ? ", eof" : "");
          test_fail ("%u of %u concurrent requests unfinished after %d s:%s", N - done, N,
                     WAIT_MS / 1000, s->str);
        }
      for (guint i = 0; i < N; i++)
        if (slots[i].resp == NULL)
          {
            pfds[n].fd = slots[i].c->fd;
            pfds[n].events = slots[i].sent < slots[i].req->len ? POLLOUT : POLLIN;
            pfds[n].revents = 0;
            idx[n++] = i;
          }
      if (poll (pfds, n, 100) <= 0)
        continue;
      for (guint k = 0; k < n; k++)
        {
          Slot *s = &slots[idx[k]];

          if (pfds[k].revents == 0)
            continue;
          if (!s->connected)
            {
              if (!conn_check_connected (s->c, &error))
                test_fail ("connection %u: %s", idx[k], error->message);
              s->connected = TRUE;
            }
          if (s->sent < s->req->len)
            {
              gssize w
                  = send (s->c->fd, s->req->data + s->sent, s->req->len - s->sent, MSG_NOSIGNAL);

              if (w < 0 && errno != EAGAIN)
                test_fail ("connection %u: send: %s", idx[k], g_strerror (errno));
              s->sent += MAX (w, 0);
            }
          else
            {
              gsize consumed;
              int res;

              if (conn_read_now (s->c, &error) == -1)
                test_fail ("connection %u: %s", idx[k], error->message);
              res = http_parse_response (s->c->in->data, s->c->in->len, s->c->eof, &consumed,
                                         &s->resp, &error);
              if (res < 0)
                test_fail ("connection %u: %s", idx[k], error->message);
              if (res > 0)
                done++;
            }
        }
    }
  g_test_message ("200 concurrent slow requests took %.2f s",
                  (g_get_monotonic_time () - start) / 1e6);

  for (guint i = 0; i < N; i++)
    {
      const guint8 *want
          = (const guint8 *)memmem (slots[i].req->data, slots[i].req->len, "\r\n\r\n", 4) + 4;
      gsize want_len = slots[i].req->data + slots[i].req->len - want;

      expect_response (slots[i].resp, error, 200);
      check_bytes ("concurrent echo", slots[i].resp->body->data, slots[i].resp->body->len, want,
                   want_len);
      http_response_free (slots[i].resp);
      g_byte_array_unref (slots[i].req);
      conn_free (slots[i].c);
    }
}

static void
test_concurrent (Fixture *f, gconstpointer data)
{
  REQUIRE_GT ();
  run_concurrent (start_relay (f, NULL));
}

/* 6. Local service down, then up: 502 then 200 on the same tunnel. */

static void
test_local_down_up (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) services = NULL;
  g_autoptr (GError) error = NULL;
  guint16 local_port = free_port (), port;
  guint tunnels_before;
  LocalHttp *h;
  GtProc *client;

  REQUIRE_GT ();
  services = http_service_args (local_port, PREFIX);
  args_addv (services, "--remoteConnections", "1", "--remoteIdleConnections", "1", NULL);
  start_server (f, "server", 0, NULL, &port);
  client = start_client (f, "client", port, services);
  /* Let the pool settle so that only new tunnels count below. */
  g_usleep (500 * 1000);
  tunnels_before = proc_count_matches (client, "tunnel started");

  {
    g_autoptr (HttpResponse) r = http_request (port, "GET", "/echo", HOST, NULL, 0, &error);

    expect_response (r, error, 502);
  }
  h = local_http_start (f, "late-service", local_port);
  {
    g_autoptr (HttpResponse) r = http_request (port, "POST", "/echo", HOST, "after", 5, &error);

    expect_response (r, error, 200);
    check_bytes ("echo after the service came up", r->body->data, r->body->len,
                 (const guint8 *)"after", 5);
  }
  local_http_stop (h);
  {
    g_autoptr (HttpResponse) r = http_request (port, "GET", "/echo", HOST, NULL, 0, &error);

    expect_response (r, error, 502);
  }
  g_assert_false (proc_has_exited (client));
  g_assert_cmpuint (proc_count_matches (client, "tunnel started"), ==, tunnels_before);
}

/* 7a. A stalled incomplete head and a stalled request body do not disturb other requests. */

static void
test_stalled_head (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (Conn) partial_head = NULL;
  g_autoptr (Conn) partial_body = NULL;
  static const char head_part[] = "GET / HTTP/1.1\r\nHo";
  static const char body_part[] = "POST /echo HTTP/1.1\r\nHost: " HOST "\r\n"
                                  "Content-Length: 100000\r\n\r\nonly the start";
  guint16 port;

  REQUIRE_GT ();
  port = start_relay (f, "--remoteConnections", "1", NULL);
  partial_head = conn_connect (port, &error);
  g_assert_no_error (error);
  g_assert_true (
      conn_write_all (partial_head, head_part, strlen (head_part), deadline_in (5000), &error));
  partial_body = conn_connect (port, &error);
  g_assert_no_error (error);
  g_assert_true (
      conn_write_all (partial_body, body_part, strlen (body_part), deadline_in (5000), &error));
  g_usleep (300 * 1000);

  for (guint i = 0; i < 20; i++)
    {
      gsize n = 1000 + i * 5000;
      g_autoptr (HttpResponse) r = NULL;
      g_autoptr (Conn) c = conn_connect (port, &error);
      gint64 t0 = g_get_monotonic_time ();

      g_assert_no_error (error);
      r = conn_request (c, "POST", "/echo", HOST, pattern + i, n, 10000, &error);
      if (r == NULL)
        test_fail ("request %u while others stall: %s", i, error->message);
      expect_response (r, error, 200);
      check_bytes ("echo while others stall", r->body->data, r->body->len, pattern + i, n);
      if (g_get_monotonic_time () - t0 > 5 * G_USEC_PER_SEC)
        test_fail ("request %u took %.1f s while others stall", i,
                   (g_get_monotonic_time () - t0) / 1e6);
    }

  /* The stalled request body still completes once the rest arrives. */
  {
    g_autoptr (HttpResponse) r = NULL;
    gsize have = strlen ("only the start");
    g_autoptr (GByteArray) want = g_byte_array_new ();

    g_byte_array_append (want, (const guint8 *)"only the start", have);
    g_byte_array_append (want, pattern, 100000 - have);
    g_assert_true (
        conn_write_all (partial_body, pattern, 100000 - have, deadline_in (WAIT_MS), &error));
    r = conn_read_response (partial_body, deadline_in (WAIT_MS), &error);
    expect_response (r, error, 200);
    check_bytes ("completed stalled body", r->body->data, r->body->len, want->data, want->len);
  }
}

/* 7b. A reader that stops reading a 64 MiB download does not stall other streams on the
 * single tunnel. */

static void
test_stalled_reader (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (Conn) big = NULL;
  g_autoptr (GByteArray) req = NULL;
  const guint8 *head_end;
  gsize body_start, total = 64 * MIB, got;
  guint16 port;
  GtProc *client;
  gint64 deadline;

  REQUIRE_GT ();
  port = start_relay (f, "--remoteConnections", "1", "--remoteIdleConnections", "1", NULL);
  client = g_ptr_array_index (f->procs, 1);

  big = conn_connect (port, &error);
  g_assert_no_error (error);
  req = http_build_request ("GET", "/bytes?n=67108864", HOST, NULL, 0, NULL);
  g_assert_true (conn_write_all (big, req->data, req->len, deadline_in (5000), &error));
  conn_read_exact (big, 65536, WAIT_MS, "start of the 64 MiB download");
  /* Stop reading; give the relay time to fill every buffer on the way. */
  g_usleep (1500 * 1000);

  for (guint i = 0; i < 20; i++)
    {
      g_autoptr (HttpResponse) r = NULL;
      g_autoptr (Conn) c = conn_connect (port, &error);
      gsize n = 10000 + i * 20000;

      g_assert_no_error (error);
      if (i % 2 == 0)
        {
          g_autofree char *path = g_strdup_printf ("/bytes?n=%" G_GSIZE_FORMAT, n);

          r = conn_request (c, "GET", path, HOST, NULL, 0, 10000, &error);
        }
      else
        r = conn_request (c, "POST", "/echo", HOST, pattern + i, n, 10000, &error);
      if (r == NULL)
        test_fail ("request %u while a reader stalls on the same tunnel: %s", i, error->message);
      expect_response (r, error, 200);
      check_bytes ("request next to a stalled reader", r->body->data, r->body->len,
                   i % 2 == 0 ? pattern : pattern + i, n);
    }

  /* The stalled download resumes and its 64 MiB arrive intact. */
  head_end = big->in->len >= 4 ? memmem (big->in->data, big->in->len, "\r\n\r\n", 4) : NULL;
  g_assert_nonnull (head_end);
  g_assert_true (g_str_has_prefix ((const char *)big->in->data, "HTTP/1.1 200"));
  body_start = head_end + 4 - big->in->data;
  got = big->in->len - body_start;
  check_bytes ("64 MiB download (start)", big->in->data + body_start, got, pattern, got);
  deadline = deadline_in (60000);
  while (got < total)
    {
      guint8 buf[256 * 1024];
      gssize n = recv (big->fd, buf, MIN (sizeof buf, total - got), 0);

      if (n > 0)
        {
          if (memcmp (buf, pattern + got, n) != 0)
            check_bytes ("64 MiB download", buf, n, pattern + got, n);
          got += n;
        }
      else if (n == 0)
        test_fail ("64 MiB download: EOF after %" G_GSIZE_FORMAT " bytes", got);
      else if (errno == EAGAIN || errno == EINTR)
        {
          if (!fd_poll (big->fd, POLLIN, deadline, &error))
            test_fail ("64 MiB download: %s after %" G_GSIZE_FORMAT " bytes", error->message, got);
        }
      else
        test_fail ("64 MiB download: recv: %s", g_strerror (errno));
    }
  g_assert_cmpuint (proc_count_matches (client, "tunnel started"), ==, 1);
}

/* 8. Wrong secret: refused, retried, still running. */

static void
test_wrong_secret (Fixture *f, gconstpointer data)
{
  LocalHttp *h;
  g_autoptr (GPtrArray) services = NULL;
  g_autofree char *l1 = NULL, *l2 = NULL, *l3 = NULL, *l4 = NULL;
  GtProc *client;
  guint16 port;
  guint from = 0;

  REQUIRE_GT ();
  h = local_http_start (f, "svc", 0);
  services = http_service_args (h->port, PREFIX);
  start_server (f, "server", 0, NULL, &port);
  client = start_client_with_secret (f, "client", port, "not-the-secret", services);
  l1 = proc_expect_line (client, "server refused: invalid id or secret", &from, WAIT_MS);
  l2 = proc_expect_line (client, "retrying in", &from, WAIT_MS);
  l3 = proc_expect_line (client, "server refused: invalid id or secret", &from, WAIT_MS);
  l4 = proc_expect_line (client, "retrying in", &from, WAIT_MS);
  g_usleep (200 * 1000);
  g_assert_false (proc_has_exited (client));
  g_assert_cmpuint (proc_count_matches (client, "tunnel started"), ==, 0);
}

/* 9. Unknown host → 404 naming it; malformed or oversized heads → 400. */

static void
test_errors (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  guint16 port;

  REQUIRE_GT ();
  port = start_relay (f, NULL);
  {
    g_autoptr (Conn) c = conn_connect (port, &error);
    g_autoptr (HttpResponse) r = NULL;
    g_autofree char *body = NULL;

    g_assert_no_error (error);
    r = conn_request (c, "GET", "/", "nobody.example.com", NULL, 0, WAIT_MS, &error);
    expect_response (r, error, 404);
    body = g_strndup ((const char *)r->body->data, r->body->len);
    if (strstr (body, "nobody.example.com") == NULL)
      test_fail ("404 body does not name the host: '%s'", body);
    /* then the server closes */
    if (!conn_read_to_eof (c, TRUE, deadline_in (5000), &error))
      test_fail ("connection not closed after the 404: %s", error->message);
  }
  {
    static const char *const bad[] = {
      "\x01\x02 garbage that is not http\r\n\r\n",
      "GET / HTTP/1.1\r\nHost " HOST "\r\n\r\n",
      "GET /\r\nHost: " HOST "\r\n\r\n",
    };

    for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
      {
        g_autoptr (Conn) c = conn_connect (port, &error);
        g_autoptr (HttpResponse) r = NULL;

        g_assert_no_error (error);
        g_assert_true (conn_write_all (c, bad[i], strlen (bad[i]), deadline_in (5000), &error));
        r = conn_read_response (c, deadline_in (WAIT_MS), &error);
        if (r == NULL)
          test_fail ("malformed head %u: no response: %s", i, error->message);
        expect_response (r, error, 400);
      }
  }
  {
    g_autoptr (Conn) c = conn_connect (port, &error);
    g_autoptr (HttpResponse) r = NULL;
    g_autoptr (GString) big = g_string_new ("GET / HTTP/1.1\r\nHost: " HOST "\r\n");
    g_autoptr (GError) write_error = NULL;

    g_assert_no_error (error);
    for (guint i = 0; i < 250; i++)
      g_string_append_printf (big, "X-Padding-%03u: %064u\r\n", i, i);
    g_string_append (big, "\r\n");
    g_assert_cmpuint (big->len, >, 16 * 1024);
    /* the server may answer and close before it read everything */
    conn_write_all (c, big->str, big->len, deadline_in (5000), &write_error);
    r = conn_read_response (c, deadline_in (WAIT_MS), &error);
    if (r == NULL)
      test_fail ("oversized head: no response: %s (write: %s)", error->message,
                 write_error != NULL ? write_error->message : "ok");
    expect_response (r, error, 400);
  }
  {
    g_autoptr (HttpResponse) r = http_request (port, "GET", "/whoami", HOST, NULL, 0, &error);

    expect_response (r, error, 200);
  }
}

/* 10. Client restart: routes go away with the client and come back with a new one. */

static void
test_client_restart (Fixture *f, gconstpointer data)
{
  LocalHttp *h;
  g_autoptr (GPtrArray) services = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GString) seen = g_string_new (NULL);
  GtProc *client;
  guint16 port;
  gboolean got_404 = FALSE;
  gint64 deadline;

  REQUIRE_GT ();
  h = local_http_start (f, "svc", 0);
  services = http_service_args (h->port, PREFIX);
  start_server (f, "server", 0, NULL, &port);
  client = start_client (f, "client-1", port, services);
  {
    g_autoptr (HttpResponse) r = http_request (port, "GET", "/whoami", HOST, NULL, 0, &error);

    expect_response (r, error, 200);
  }

  proc_stop_cleanly (client);

  /* The server notices the closed tunnel right away; allow it a moment. */
  deadline = deadline_in (5000);
  while (!got_404 && g_get_monotonic_time () < deadline)
    {
      g_autoptr (GError) e = NULL;
      g_autoptr (HttpResponse) r = http_request (port, "GET", "/whoami", HOST, NULL, 0, &e);

      g_string_append_printf (seen, " %u", r != NULL ? r->status : 0);
      got_404 = r != NULL && r->status == 404;
      if (!got_404)
        g_usleep (100 * 1000);
    }
  if (!got_404)
    test_fail ("no 404 after the client stopped; statuses seen:%s", seen->str);

  start_client (f, "client-2", port, services);
  {
    g_autoptr (HttpResponse) r = http_request (port, "GET", "/whoami", HOST, NULL, 0, &error);

    expect_response (r, error, 200);
    check_bytes ("whoami after client restart", r->body->data, r->body->len, (const guint8 *)"svc",
                 3);
  }
}

/* 11. Server restart on the same port: the client reconnects by itself. */

static void
test_server_restart (Fixture *f, gconstpointer data)
{
  LocalHttp *h;
  g_autoptr (GPtrArray) services = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *line = NULL;
  GtProc *server, *client;
  guint16 port = free_port (), got_port;
  guint from;

  REQUIRE_GT ();
  h = local_http_start (f, "svc", 0);
  services = http_service_args (h->port, PREFIX);
  server = start_server (f, "server-1", port, NULL, &got_port);
  client = start_client (f, "client", port, services);
  {
    g_autoptr (HttpResponse) r = http_request (port, "POST", "/echo", HOST, "one", 3, &error);

    expect_response (r, error, 200);
  }

  proc_stop_cleanly (server);
  /* Counted after the old server is gone: the client may still have been starting tunnels. */
  from = proc_line_count (client);

  server = start_server (f, "server-2", port, NULL, &got_port);
  /* A fresh server accepting a tunnel proves the reconnect; the client then says so too. */
  line = proc_expect_line (server, "tunnel accepted", NULL, WAIT_MS);
  g_free (line);
  line = proc_expect_line (client, "tunnel started", &from, WAIT_MS);
  {
    g_autoptr (HttpResponse) r
        = http_request (port, "POST", "/echo", HOST, pattern, 200000, &error);

    expect_response (r, error, 200);
    check_bytes ("echo after server restart", r->body->data, r->body->len, pattern, 200000);
  }
}

/* ------------------------------------------------------------------------------------------ */

static void
drop_log_cb (const char *domain, GLogLevelFlags level, const char *message, gpointer data)
{
}

int
main (int argc, char **argv)
{
  int ret;

  g_test_init (&argc, &argv, NULL);

  signal (SIGPIPE, SIG_IGN);
  signal (SIGABRT, fatal_signal_handler);
  signal (SIGTERM, fatal_signal_handler);
  gt_binary = g_getenv ("GT_BINARY");
  if (gt_binary != NULL && *gt_binary == '\0')
    gt_binary = NULL;
  verbose_logs = g_getenv ("GT_TEST_VERBOSE") != NULL;
  if (!verbose_logs)
    {
      /* libsoup traces every WebSocket frame at debug level */
      g_log_set_handler ("libsoup", G_LOG_LEVEL_DEBUG | G_LOG_LEVEL_INFO, drop_log_cb, NULL);
      g_log_set_handler ("GLib-GIO", G_LOG_LEVEL_DEBUG | G_LOG_LEVEL_INFO, drop_log_cb, NULL);
    }
  fill_pattern ();
  live_procs = g_ptr_array_new ();
  service_ctx = g_main_context_new ();
  service_loop = g_main_loop_new (service_ctx, FALSE);
  service_thread = g_thread_new ("services", service_thread_main, NULL);

#define ADD(path, func)                                                                            \
  g_test_add ("/gt/integration/relay/" path, Fixture, NULL, fixture_setup, func, fixture_teardown)
  ADD ("harness/direct", test_harness_direct);
  ADD ("http-bodies", test_http_bodies);
  ADD ("keep-alive", test_keep_alive);
  ADD ("websocket", test_websocket);
  ADD ("tcp-forward", test_tcp_forward);
  ADD ("concurrent", test_concurrent);
  ADD ("local-down-up", test_local_down_up);
  ADD ("stalled-head", test_stalled_head);
  ADD ("stalled-reader", test_stalled_reader);
  ADD ("wrong-secret", test_wrong_secret);
  ADD ("errors", test_errors);
  ADD ("client-restart", test_client_restart);
  ADD ("server-restart", test_server_restart);
#undef ADD

  ret = g_test_run ();

  /* Past this point the handler's state is being freed: an abort at exit (e.g. LeakSanitizer's
   * report) must not run it. */
  signal (SIGABRT, SIG_DFL);
  signal (SIGTERM, SIG_DFL);
  g_main_loop_quit (service_loop);
  g_thread_join (service_thread);
  g_main_loop_unref (service_loop);
  g_main_context_unref (service_ctx);
  g_ptr_array_unref (live_procs);
  g_free (pattern);
  return ret;
}
