/* The integration test harness: gt child processes, in-test services, raw HTTP clients, cleanup. */
#pragma once

#include <gio/gio.h>
#include <libsoup/soup.h>

G_BEGIN_DECLS

/* Every wait in the integration tests is bounded by this (or a shorter explicit) timeout. */
#define GT_TEST_WAIT_MS 20000
#define GT_TEST_MIB (1024 * 1024)
/* What the TCP echo service sends first, before it echoes. */
#define GT_TEST_TCP_BANNER "SSH-2.0-test\r\n"

/* ------------------------------------------------------------------------------------------ */
/* The harness: init, per-test setup and teardown, shared state. */

/* g_test_init(), signal handlers (an abort prints the children's logs, kills them and removes the
 * test's temp dir), the service thread, and pattern_size deterministic pattern bytes. */
void gt_test_init (int *argc, char ***argv, gsize pattern_size);
/* g_test_run(), then stops the service thread and frees the harness; returns g_test_run()'s. */
int gt_test_run (void);

/* Starts a test's harness state (children, services, temp dir); call from the fixture setup. */
void gt_test_setup (void);
/* Stops every child still running, newest first (clients before their servers); gt must exit 0
 * on SIGTERM, other programs just go. Idempotent: gt_test_teardown() calls it too. */
void gt_test_stop_all (void);
/* Stops the children, then the local HTTP and TCP services; removes the temp dir (kept when
 * GT_TEST_KEEP_TMP is set). */
void gt_test_teardown (void);

/* The gt binary from $GT_BINARY, NULL when unset or empty. */
const char *gt_test_binary (void);
/* The deterministic bytes served by /bytes and used as request bodies (gt_test_init's size). */
const guint8 *gt_test_pattern (void);
/* The lock and condition for everything the service thread updates (broadcast on each change). */
GMutex *gt_test_lock (void);
GCond *gt_test_cond (void);
/* Runs func(data, NULL) in the service thread and waits for it to return. */
void gt_test_service_call (GFunc func, gpointer data);
/* The monotonic time ms milliseconds from now. */
gint64 gt_test_deadline_in (guint ms);

/* GT_VALGRIND set (and not 0): gt children run under valgrind memcheck; a report with errors
 * fails the test. Such a child exits with GT_TEST_VALGRIND_STATUS when memcheck found errors. */
#define GT_TEST_VALGRIND_STATUS 99
gboolean gt_test_under_valgrind (void);
/* Factor applied to gt_test_deadline_in: GT_TEST_TIME_SCALE, else 10 under valgrind, else 1. */
guint gt_test_time_scale (void);
/* FALSE under valgrind, where memcheck's shadow memory and slowdown make a gt process's RSS and
 * latency say nothing about gt: bounds on them are then reported (g_test_message) but not
 * enforced. Every other check of the test still applies. */
gboolean gt_test_checks_resources (void);

/* A failed assertion with a printf-style message. */
#define gt_test_fail(...)                                                                          \
  G_STMT_START                                                                                     \
  {                                                                                                \
    g_autofree char *msg_ = g_strdup_printf (__VA_ARGS__);                                         \
    g_assertion_message (G_LOG_DOMAIN, __FILE__, __LINE__, G_STRFUNC, msg_);                       \
  }                                                                                                \
  G_STMT_END

/* Skips the test when $GT_BINARY is not set. */
#define GT_TEST_REQUIRE_GT()                                                                       \
  G_STMT_START                                                                                     \
  {                                                                                                \
    if (gt_test_binary () == NULL)                                                                 \
      {                                                                                            \
        g_test_skip ("GT_BINARY is not set");                                                      \
        return;                                                                                    \
      }                                                                                            \
  }                                                                                                \
  G_STMT_END

/* Compares received bytes with the expected ones, failing with the first differing offset. */
void gt_test_check_bytes (const char *what, const guint8 *got, gsize got_len, const guint8 *want,
                          gsize want_len);
/* Removes path and everything below it (symbolic links are not followed). */
void gt_test_remove_tree (const char *path);
/* The test's temp dir, created on first use and removed by gt_test_teardown(). */
const char *gt_test_tmpdir (void);
/* Writes text to name in the test's temp dir; returns the file's path. */
char *gt_test_write_file (const char *name, const char *text);

/* ------------------------------------------------------------------------------------------ */
/* Child processes: their merged stdout/stderr is read line by line in the service thread. */

typedef struct
{
  char *name;
  GSubprocess *proc;
  int pid;
  gboolean is_gt;
  GDataInputStream *log_in;
  GCancellable *cancellable;
  GPtrArray *lines; /* char *, under gt_test_lock() */
  gboolean eof;     /* under gt_test_lock() */
  gboolean exited;  /* under gt_test_lock() */
} GtTestProc;

/* Argument lists (GPtrArray of char *) for gt_test_spawn(). */
GPtrArray *gt_test_args_new (void);
G_GNUC_PRINTF (2, 3) void gt_test_args_add (GPtrArray *args, const char *fmt, ...);
G_GNUC_NULL_TERMINATED void gt_test_args_addv (GPtrArray *args, ...);

/* Starts program (gt when NULL, with --logLevel $GT_TEST_LOG_LEVEL) with args in cwd (NULL: ours),
 * without our proxy variables, with env ("NAME=VALUE", NULL-terminated) on top. It dies with the
 * test and is stopped by gt_test_teardown(). */
GtTestProc *gt_test_spawn (const char *name, const char *program, GPtrArray *args, const char *cwd,
                           const char *const *env);
/* gt_test_spawn() of gt with args. */
GtTestProc *gt_test_spawn_gt (const char *name, GPtrArray *args);
/* The children of the running test, oldest first (GtTestProc *). */
GPtrArray *gt_test_procs (void);

gboolean gt_test_proc_has_exited (GtTestProc *p);
/* TRUE when p exited within timeout_ms. */
gboolean gt_test_proc_wait_exit (GtTestProc *p, guint timeout_ms);
/* Sends sig and waits for the exit; escalates to SIGKILL when the process does not go. */
void gt_test_proc_stop (GtTestProc *p, int sig);
/* Stops p with SIGTERM and checks that it exits with status 0, as the CLI promises. */
void gt_test_proc_stop_cleanly (GtTestProc *p);
/* How many lines p has written so far. */
guint gt_test_proc_line_count (GtTestProc *p);
/* How many lines of p match regex so far. */
guint gt_test_proc_count_matches (GtTestProc *p, const char *regex);
/* Waits until at least n lines match regex; FALSE on timeout. */
gboolean gt_test_proc_wait_count (GtTestProc *p, const char *regex, guint n, guint timeout_ms);
/* Waits for a line at index >= *from (0 when from is NULL) matching regex; returns a copy of it
 * (and moves *from past it), or NULL when the timeout passes or the output ends first. */
char *gt_test_proc_wait_line (GtTestProc *p, const char *regex, guint *from, guint timeout_ms);
/* gt_test_proc_wait_line() that fails the test when no line comes. */
#define gt_test_proc_expect_line(p, regex, from, timeout_ms)                                       \
  ({                                                                                               \
    char *line_ = gt_test_proc_wait_line ((p), (regex), (from), (timeout_ms));                     \
    if (line_ == NULL)                                                                             \
      gt_test_fail ("no line matching /%s/ from %s within %u ms%s", (regex), (p)->name,            \
                    (guint)(timeout_ms), gt_test_proc_has_exited (p) ? " (process exited)" : "");  \
    line_;                                                                                         \
  })
/* The first capture group of regex in line as a number; fails the test when it does not match. */
guint gt_test_capture_uint (const char *line, const char *regex);

/* ------------------------------------------------------------------------------------------ */
/* In-test services, living in the service thread until the test ends. */

/* A local HTTP(S) service: /echo (the body back), /bytes?n=N (pattern bytes), /chunked?n=N
 * (the same, chunked), /sink (reads the body, answers its size), /whoami (its name), /host (the
 * Host header), /slow?ms=M (echo after M ms), /ws (WebSocket echo). */
typedef struct
{
  SoupServer *server;
  GTlsCertificate *cert;
  char *name;
  guint16 port;
} GtTestHttp;

/* Starts a local service on 127.0.0.1:port (0: any free port); HTTPS with cert when not NULL. */
GtTestHttp *gt_test_http_start (const char *name, guint16 port, GTlsCertificate *cert);
/* Stops listening and closes the service's connections (the test's end frees it). */
void gt_test_http_stop (GtTestHttp *h);

/* A loopback TCP service on a free port: run_cb is a GThreadedSocketService "run" handler (each
 * connection in a thread of its own) called with user_data. */
typedef struct
{
  GSocketService *service;
  guint16 port;
} GtTestTcpService;

/* Starts a TCP service; it stops at the end of the test. */
GtTestTcpService *gt_test_tcp_service_start (GCallback run_cb, gpointer user_data);
/* Starts the test's server-speaks-first TCP echo (one per test): GT_TEST_TCP_BANNER on accept,
 * then echo until the peer's EOF. */
GtTestTcpService *gt_test_tcp_echo_start (void);
/* The test's TCP echo service, NULL before gt_test_tcp_echo_start(). */
GtTestTcpService *gt_test_tcp_echo (void);

/* ------------------------------------------------------------------------------------------ */
/* Raw client sockets and an HTTP/1.1 response parser (Content-Length, chunked, until-close). */

typedef struct
{
  int fd;
  GByteArray *in; /* received, not yet consumed */
  gboolean eof;
} GtTestConn;

void gt_test_conn_free (GtTestConn *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtTestConn, gt_test_conn_free)

/* poll() on fd for events until the deadline (G_IO_ERROR_TIMED_OUT after it). */
gboolean gt_test_fd_poll (int fd, short events, gint64 deadline, GError **error);
/* Starts a non-blocking connect to 127.0.0.1:port; completion shows as POLLOUT. */
GtTestConn *gt_test_conn_connect_start (guint16 port, GError **error);
/* After POLLOUT: whether the connect succeeded. */
gboolean gt_test_conn_check_connected (GtTestConn *c, GError **error);
/* Connects to 127.0.0.1:port within 10 s. */
GtTestConn *gt_test_conn_connect (guint16 port, GError **error);
gboolean gt_test_conn_write_all (GtTestConn *c, const void *data, gsize len, gint64 deadline,
                                 GError **error);
/* One non-blocking read into c->in: >0 bytes appended, 0 EOF, -1 error, -2 nothing yet. */
gssize gt_test_conn_read_now (GtTestConn *c, GError **error);
/* Reads more bytes into c->in (waiting until the deadline): >0 appended, 0 EOF, -1 error or
 * timeout. */
gssize gt_test_conn_fill (GtTestConn *c, gint64 deadline, GError **error);
/* Reads until EOF (a reset also counts as the end when allow_reset). */
gboolean gt_test_conn_read_to_eof (GtTestConn *c, gboolean allow_reset, gint64 deadline,
                                   GError **error);

typedef struct
{
  guint status;
  char *reason;
  GPtrArray *header_names;
  GPtrArray *header_values;
  GByteArray *body;
} GtTestHttpResponse;

void gt_test_http_response_free (GtTestHttpResponse *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtTestHttpResponse, gt_test_http_response_free)
/* The first header called name (case-insensitive), or NULL. */
const char *gt_test_http_response_header (GtTestHttpResponse *r, const char *name);
/* Parses one response from data: 1 and *out, *consumed when complete, 0 when more is needed,
 * -1 and error when it is malformed (eof: no more bytes will come). */
int gt_test_http_parse_response (const guint8 *data, gsize len, gboolean eof, gsize *consumed,
                                 GtTestHttpResponse **out, GError **error);
/* Reads one response from c. */
GtTestHttpResponse *gt_test_conn_read_response (GtTestConn *c, gint64 deadline, GError **error);
/* A request head (with Host when not NULL, Content-Length when body) and body; extra_headers are
 * whole "Name: value\r\n" lines. */
GByteArray *gt_test_http_build_request (const char *method, const char *path, const char *host,
                                        const void *body, gsize body_len,
                                        const char *extra_headers);
/* One request on an open connection (keep-alive); body NULL means none. */
GtTestHttpResponse *gt_test_conn_request (GtTestConn *c, const char *method, const char *path,
                                          const char *host, const void *body, gsize body_len,
                                          guint timeout_ms, GError **error);
/* One request on a fresh connection to 127.0.0.1:port with the given Host; NULL and error on
 * transport or parse failures. */
GtTestHttpResponse *gt_test_http_request (guint16 port, const char *method, const char *path,
                                          const char *host, const void *body, gsize body_len,
                                          GError **error);

/* Fails the test unless resp is a response with want_status. */
#define gt_test_expect_response(resp, error, want_status)                                          \
  G_STMT_START                                                                                     \
  {                                                                                                \
    if ((resp) == NULL)                                                                            \
      gt_test_fail ("request failed: %s", (error) != NULL ? (error)->message : "?");               \
    if ((resp)->status != (want_status))                                                           \
      gt_test_fail ("status %u '%s' (want %u), body '%.*s'", (resp)->status, (resp)->reason,       \
                    (guint)(want_status), (int)MIN ((resp)->body->len, 300),                       \
                    (const char *)(resp)->body->data);                                             \
  }                                                                                                \
  G_STMT_END

/* Iterates the thread's default context until *flag or the deadline; returns *flag. */
gboolean gt_test_iterate_until (const gboolean *flag, gint64 deadline);
/* WebSocket echo of 100 messages of varied sizes (text and binary, up to 200 KiB) over
 * ws://127.0.0.1:port/ws with the given Host header; fails the test on any difference. */
void gt_test_ws_echo (guint16 port, const char *host);

/* ------------------------------------------------------------------------------------------ */
/* Ports on 127.0.0.1. */

/* A port that was free a moment ago. */
guint16 gt_test_free_port (void);
/* Whether port can be bound now. */
gboolean gt_test_port_is_free (guint16 port);
/* n consecutive free ports in [20000, 60000); fails the test when none are found. */
void gt_test_free_port_range (guint n, guint16 *first, guint16 *last);

G_END_DECLS
