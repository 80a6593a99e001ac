/* Integration tests of faults under load (issue 14 "Scenarios"): gt processes killed and
 * restarted, a half-open tunnel, slowloris on every listener, a handshake flood from many
 * addresses. The one-address cases are in test-abuse-listen.c and test-abuse-auth.c. */
#define G_LOG_DOMAIN "gt-test"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "gt-certificate.h"
#include "gt-frame.h"
#include "gt-test-utils.h"

#define PATTERN_SIZE (256 * 1024)
#define CLIENT_ID "alice"
#define CLIENT_SECRET "s3cret-alice-Zq8"
#define BOB_SECRET "s3cret-bob-Lm4"
#define PREFIX "web"
#define HOST PREFIX ".example.com"
#define SNI_PREFIX "sec"
#define SNI_HOST SNI_PREFIX ".example.com"
#define TUNNELS 2
/* The client's reconnectDelay in these tests, and gt's backoff rules (gt-client-backoff.h:
 * doubling from it, capped at 5 s, ±20 % jitter). */
#define RECONNECT_DELAY_MS 200
#define BACKOFF_CAP_MS 5000
#define BACKOFF_JITTER 0.2
/* What a tunnel handshake and the first request take beyond the backoff, on a loaded machine. */
#define HANDSHAKE_MARGIN_MS 2000
/* Each load loop stops after this many operations or this long, whichever comes first. */
#define LOAD_MAX_OPS 20000
#define LOAD_MAX_MS 60000

typedef struct
{
  gpointer unused;
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  gt_test_setup ();
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  gt_test_teardown ();
}

/* ------------------------------------------------------------------------------------------ */
/* gt processes */

/* gt under ASan checks its leaks at a clean exit, although this program's environment turns the
 * checks off for itself (the TLS clients here run in glib-networking threads, which
 * LeakSanitizer cannot scan: tls_thread_tests in tests/meson.build). */
static GtTestProc *
spawn_gt (const char *name, GPtrArray *args, const char *cwd)
{
  const char *src = g_getenv ("GT_SOURCE_DIR");
  g_autofree char *lsan
      = g_strdup_printf ("LSAN_OPTIONS=suppressions=%s/tests/lsan.supp", src != NULL ? src : ".");
  const char *env[]
      = { "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:fast_unwind_on_malloc=0", lsan, NULL };

  return gt_test_spawn (name, NULL, args, cwd, env);
}

typedef struct
{
  guint16 port;     /* addr */
  guint16 api_port; /* apiAddr */
  guint16 tcp_port; /* the one port of tcpRange */
} Ports;

/* `gt server` with CLIENT_ID (and bob), its addr, apiAddr and a one-port tcpRange on the ports
 * of *ports (0: free ones, filled in), and extra. */
static GtTestProc *
start_server (const char *name, Ports *ports, GPtrArray *extra)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autofree char *line = NULL, *api_line = NULL;
  GtTestProc *p;

  if (ports->tcp_port == 0)
    {
      guint16 last;

      gt_test_free_port_range (1, &ports->tcp_port, &last);
    }
  gt_test_args_addv (args, "server", "--id", CLIENT_ID, "--secret", CLIENT_SECRET, "--id", "bob",
                     "--secret", BOB_SECRET, NULL);
  gt_test_args_add (args, "--addr");
  gt_test_args_add (args, "127.0.0.1:%u", ports->port);
  gt_test_args_add (args, "--apiAddr");
  gt_test_args_add (args, "127.0.0.1:%u", ports->api_port);
  gt_test_args_add (args, "--tcpRange");
  gt_test_args_add (args, "%u-%u", ports->tcp_port, ports->tcp_port);
  for (guint i = 0; extra != NULL && i < extra->len; i++)
    gt_test_args_add (args, "%s", (const char *)extra->pdata[i]);
  p = spawn_gt (name, args, NULL);
  line
      = gt_test_proc_expect_line (p, "listening on 127\\.0\\.0\\.1:[0-9]+$", NULL, GT_TEST_WAIT_MS);
  ports->port = (guint16)gt_test_capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");
  api_line
      = gt_test_proc_expect_line (p, "status API on 127\\.0\\.0\\.1:[0-9]+", NULL, GT_TEST_WAIT_MS);
  ports->api_port
      = (guint16)gt_test_capture_uint (api_line, "status API on 127\\.0\\.0\\.1:([0-9]+)");
  return p;
}

/* A client of CLIENT_ID with TUNNELS tunnels to remote_port: PREFIX from http_port, and the TCP
 * echo on the server's tcp_port. Does not wait for its tunnels. */
static GtTestProc *
spawn_client (const char *name, guint16 remote_port, guint16 http_port, guint16 tcp_port,
              GPtrArray *extra)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();

  gt_test_args_addv (args, "client", "--id", CLIENT_ID, "--secret", CLIENT_SECRET, NULL);
  gt_test_args_add (args, "--reconnectDelay");
  gt_test_args_add (args, "%ums", RECONNECT_DELAY_MS);
  gt_test_args_add (args, "--remoteConnections");
  gt_test_args_add (args, "%u", TUNNELS);
  gt_test_args_add (args, "--remote");
  gt_test_args_add (args, "tcp://127.0.0.1:%u", remote_port);
  gt_test_args_add (args, "--local");
  gt_test_args_add (args, "http://127.0.0.1:%u", http_port);
  gt_test_args_addv (args, "--hostPrefix", PREFIX, NULL);
  if (tcp_port != 0)
    {
      gt_test_args_add (args, "--local");
      gt_test_args_add (args, "tcp://127.0.0.1:%u", gt_test_tcp_echo ()->port);
      gt_test_args_add (args, "--remoteTCPPort");
      gt_test_args_add (args, "%u", tcp_port);
    }
  for (guint i = 0; extra != NULL && i < extra->len; i++)
    gt_test_args_add (args, "%s", (const char *)extra->pdata[i]);
  return spawn_gt (name, args, NULL);
}

static guint
proc_fd_count (int pid)
{
  g_autofree char *path = g_strdup_printf ("/proc/%d/fd", pid);
  g_autoptr (GDir) dir = g_dir_open (path, 0, NULL);
  guint n = 0;

  g_assert_nonnull (dir);
  while (g_dir_read_name (dir) != NULL)
    n++;
  return n;
}

/* Waits until pid has want fds (connections of finished streams close a moment after their
 * users'); returns the count it saw last. */
static guint
wait_fd_count (int pid, guint want, guint timeout_ms)
{
  gint64 deadline = gt_test_deadline_in (timeout_ms);
  guint n;

  while ((n = proc_fd_count (pid)) != want && g_get_monotonic_time () < deadline)
    g_usleep (50 * 1000);
  return n;
}

/* Fails the test, listing /proc/PID/fd, unless pid has want fds within a few seconds. */
static void
expect_fd_count (GtTestProc *p, guint want, const char *when)
{
  guint n = wait_fd_count (p->pid, want, 5000);

  g_test_message ("%s: %u fds %s (want %u)", p->name, n, when, want);
  if (n != want)
    {
      g_autofree char *dir = g_strdup_printf ("/proc/%d/fd", p->pid);
      g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
      const char *e;

      while (d != NULL && (e = g_dir_read_name (d)) != NULL)
        {
          g_autofree char *link = g_build_filename (dir, e, NULL);
          g_autofree char *target = g_file_read_link (link, NULL);

          g_test_message ("  fd %s -> %s", e, target != NULL ? target : "?");
        }
      {
        /* Where its sockets lead, when ss is there. */
        g_autofree char *out = NULL;
        g_autofree char *pid_re = g_strdup_printf ("pid=%d,", p->pid);

        if (g_spawn_command_line_sync ("ss -tanp", &out, NULL, NULL, NULL))
          {
            g_auto (GStrv) lines = g_strsplit (out, "\n", 0);

            for (guint i = 0; lines[i] != NULL; i++)
              if (strstr (lines[i], pid_re) != NULL)
                g_test_message ("  %s", lines[i]);
          }
      }
      gt_test_fail ("%s has %u fds %s, want %u", p->name, n, when, want);
    }
}

/* GET /metrics from the server's API. */
static char *
api_metrics (guint16 api_port)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) r
      = gt_test_http_request (api_port, "GET", "/metrics", "127.0.0.1", NULL, 0, &error);

  gt_test_expect_response (r, error, 200);
  return g_strndup ((const char *)r->body->data, r->body->len);
}

/* The value of the sample "name" or "name{labels}" in metrics text; -1 when absent. */
static double
metric (const char *text, const char *sample)
{
  g_autofree char *needle = g_strdup_printf ("\n%s ", sample);
  g_autofree char *with_nl = g_strdup_printf ("\n%s", text);
  const char *at = strstr (with_nl, needle);

  return at != NULL ? g_ascii_strtod (at + strlen (needle), NULL) : -1;
}

/* Waits until the server's metrics show exactly clients clients and alice's tunnels tunnels. */
static void
expect_routes (guint16 api_port, guint clients, guint tunnels, const char *when)
{
  gint64 deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
  double c, t;

  for (;;)
    {
      g_autofree char *m = api_metrics (api_port);

      c = metric (m, "gt_clients");
      t = metric (m, "gt_tunnels{user=\"" CLIENT_ID "\"}");
      if (t < 0)
        t = 0;
      if ((c == clients && t == tunnels) || g_get_monotonic_time () > deadline)
        break;
      g_usleep (100 * 1000);
    }
  if (c != clients || t != tunnels)
    gt_test_fail ("%s: the server has %.0f clients and %.0f tunnels of " CLIENT_ID
                  ", want %u and %u",
                  when, c, t, clients, tunnels);
}

/* ------------------------------------------------------------------------------------------ */
/* Load: HTTP requests on fresh connections and one TCP echo stream, each in a thread. */

typedef struct
{
  gint64 start, end;
  gboolean ok;
  char who[32]; /* the service that answered */
  char error[96];
} Sample;

typedef struct
{
  guint16 port; /* HTTP: the server's addr; echo: the server's tcp port */
  const char *host;
  gint stop;
  GThread *thread;
  GMutex lock;
  GArray *samples; /* Sample: HTTP requests, or echo rounds (who: "") */
  guint64 echoed;  /* echo bytes that came back intact */
  guint corrupt;   /* echo bytes that came back different */
} Load;

static void
load_add (Load *l, gint64 start, gboolean ok, const char *who, const char *error)
{
  Sample s = { start, g_get_monotonic_time (), ok, "", "" };

  g_strlcpy (s.who, who != NULL ? who : "", sizeof s.who);
  g_strlcpy (s.error, error != NULL ? error : "", sizeof s.error);
  g_mutex_lock (&l->lock);
  g_array_append_val (l->samples, s);
  g_mutex_unlock (&l->lock);
}

/* GET /whoami with Host host on a new connection to port, with Connection: close, so that the
 * local service ends its side too: an idle keep-alive connection that it kept open after gt's
 * FIN would hold an fd in the client until localTimeout (libsoup's server does keep it). */
static GtTestHttpResponse *
request_close (guint16 port, const char *host, guint timeout_ms, GError **error)
{
  g_autoptr (GByteArray) req
      = gt_test_http_build_request ("GET", "/whoami", host, NULL, 0, "Connection: close\r\n");
  g_autoptr (GtTestConn) c = gt_test_conn_connect (port, error);

  if (c == NULL
      || !gt_test_conn_write_all (c, req->data, req->len, gt_test_deadline_in (timeout_ms), error))
    return NULL;
  return gt_test_conn_read_response (c, gt_test_deadline_in (timeout_ms), error);
}

static gpointer
http_load_worker (gpointer data)
{
  Load *l = data;
  gint64 until = gt_test_deadline_in (LOAD_MAX_MS);

  for (guint i = 0;
       i < LOAD_MAX_OPS && !g_atomic_int_get (&l->stop) && g_get_monotonic_time () < until; i++)
    {
      g_autoptr (GError) error = NULL;
      gint64 start = g_get_monotonic_time ();
      g_autoptr (GtTestHttpResponse) r = request_close (l->port, l->host, 3000, &error);

      if (r != NULL && r->status == 200)
        {
          g_autofree char *who = g_strndup ((const char *)r->body->data, r->body->len);

          load_add (l, start, TRUE, who, NULL);
        }
      else
        {
          g_autofree char *e
              = r != NULL ? g_strdup_printf ("status %u", r->status) : g_strdup (error->message);

          load_add (l, start, FALSE, NULL, e);
        }
      g_usleep (20 * 1000);
    }
  return NULL;
}

/* One echo connection through the server's TCP port: banner, then 16 KiB rounds compared with
 * what was sent, until an error or the end; reconnects after a failure. */
static gpointer
echo_load_worker (gpointer data)
{
  Load *l = data;
  gint64 until = gt_test_deadline_in (LOAD_MAX_MS);
  const gsize round = 16 * 1024;
  guint ops = 0;

  while (ops < LOAD_MAX_OPS && !g_atomic_int_get (&l->stop) && g_get_monotonic_time () < until)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GtTestConn) c = gt_test_conn_connect (l->port, &error);
      gsize banner = strlen (GT_TEST_TCP_BANNER);
      gint64 start = g_get_monotonic_time ();

      while (c != NULL && c->in->len < banner
             && gt_test_conn_fill (c, gt_test_deadline_in (3000), &error) > 0)
        ;
      if (c == NULL || c->in->len < banner || memcmp (c->in->data, GT_TEST_TCP_BANNER, banner) != 0)
        {
          load_add (l, start, FALSE, NULL, error != NULL ? error->message : "no banner");
          ops++;
          g_usleep (50 * 1000);
          continue;
        }
      g_byte_array_remove_range (c->in, 0, banner);
      while (ops < LOAD_MAX_OPS && !g_atomic_int_get (&l->stop) && g_get_monotonic_time () < until)
        {
          const guint8 *want = gt_test_pattern () + (ops * 4099) % (PATTERN_SIZE - round);
          gboolean ok = TRUE;

          ops++;
          start = g_get_monotonic_time ();
          if (!gt_test_conn_write_all (c, want, round, gt_test_deadline_in (3000), &error))
            ok = FALSE;
          while (ok && c->in->len < round)
            if (gt_test_conn_fill (c, gt_test_deadline_in (3000), &error) <= 0)
              ok = FALSE;
          if (c->in->len > 0 && memcmp (c->in->data, want, MIN (c->in->len, round)) != 0)
            {
              g_mutex_lock (&l->lock);
              l->corrupt += MIN (c->in->len, round);
              g_mutex_unlock (&l->lock);
              ok = FALSE;
            }
          if (!ok)
            {
              load_add (l, start, FALSE, NULL, error != NULL ? error->message : "EOF");
              break;
            }
          g_mutex_lock (&l->lock);
          l->echoed += round;
          g_mutex_unlock (&l->lock);
          g_byte_array_remove_range (c->in, 0, round);
          load_add (l, start, TRUE, NULL, NULL);
          g_usleep (10 * 1000);
        }
      g_usleep (50 * 1000);
    }
  return NULL;
}

static Load *
load_start (GThreadFunc worker, guint16 port, const char *host)
{
  Load *l = g_new0 (Load, 1);

  l->port = port;
  l->host = host;
  l->samples = g_array_new (FALSE, FALSE, sizeof (Sample));
  g_mutex_init (&l->lock);
  l->thread = g_thread_new ("load", worker, l);
  return l;
}

static void
load_stop (Load *l)
{
  g_atomic_int_set (&l->stop, 1);
  g_thread_join (l->thread);
  l->thread = NULL;
}

static void
load_free (Load *l)
{
  if (l->thread != NULL)
    load_stop (l);
  g_array_unref (l->samples);
  g_mutex_clear (&l->lock);
  g_free (l);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Load, load_free)

static guint64
load_echoed (Load *l)
{
  guint64 n;

  g_mutex_lock (&l->lock);
  n = l->echoed;
  g_mutex_unlock (&l->lock);
  return n;
}

/* The first successful sample that started at or after since (into *out); FALSE when none yet. */
static gboolean
load_first_ok (Load *l, gint64 since, Sample *out)
{
  gboolean found = FALSE;

  g_mutex_lock (&l->lock);
  for (guint i = 0; i < l->samples->len && !found; i++)
    {
      Sample *s = &g_array_index (l->samples, Sample, i);

      if (s->ok && s->start >= since)
        {
          *out = *s;
          found = TRUE;
        }
    }
  g_mutex_unlock (&l->lock);
  return found;
}

/* Waits until a sample started at or after since succeeds, at most until deadline; returns its
 * end time (fails the test when none does). */
static gint64
load_wait_ok (Load *l, gint64 since, gint64 deadline, const char *what)
{
  Sample s;

  while (!load_first_ok (l, since, &s))
    {
      if (g_get_monotonic_time () > deadline)
        {
          Sample last = { 0 };

          g_mutex_lock (&l->lock);
          if (l->samples->len > 0)
            last = g_array_index (l->samples, Sample, l->samples->len - 1);
          g_mutex_unlock (&l->lock);
          gt_test_fail ("%s: no success within the bound (last error: %s)", what, last.error);
        }
      g_usleep (20 * 1000);
    }
  return s.end;
}

/* Checks the samples that started at or after since: every one succeeded, answered by who (when
 * not NULL); returns how many there were. */
static guint
load_expect_all_ok (Load *l, gint64 since, const char *who, const char *what)
{
  guint n = 0;

  g_mutex_lock (&l->lock);
  for (guint i = 0; i < l->samples->len; i++)
    {
      Sample s = g_array_index (l->samples, Sample, i);

      if (s.start < since)
        continue;
      n++;
      if (!s.ok || (who != NULL && strcmp (s.who, who) != 0))
        {
          g_mutex_unlock (&l->lock);
          gt_test_fail ("%s: a request %.2f s after the mark %s (%s)", what,
                        (s.start - since) / 1e6, s.ok ? "reached" : "failed",
                        s.ok ? s.who : s.error);
        }
    }
  g_mutex_unlock (&l->lock);
  return n;
}

/* Successful samples answered by someone other than who, started at or after since. */
static guint
load_count_other (Load *l, gint64 since, const char *who)
{
  guint n = 0;

  g_mutex_lock (&l->lock);
  for (guint i = 0; i < l->samples->len; i++)
    {
      Sample *s = &g_array_index (l->samples, Sample, i);

      if (s->start >= since && s->ok && strcmp (s->who, who) != 0)
        n++;
    }
  g_mutex_unlock (&l->lock);
  return n;
}

/* A few requests to HOST through port, all served: what gt creates on first use exists before
 * its fds are counted. */
static void
warm_up (guint16 port)
{
  for (guint i = 0; i < 5; i++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GtTestHttpResponse) r = request_close (port, HOST, 3000, &error);

      gt_test_expect_response (r, error, 200);
    }
  g_usleep (300 * 1000);
}

/* ------------------------------------------------------------------------------------------ */
/* 1. Kill and restart under load */

/* The longest a client can take to try again once its server is back down_ms after the tunnel
 * dropped: attempt n+1 comes delay(n) × (1 ± jitter) after attempt n (delay(0) =
 * reconnectDelay, doubling up to the cap). The attempt in progress when the server returns is
 * the last one that can have started before: with every jitter at its low end, attempt n starts
 * at 0.8 × (delay(0) + ... + delay(n-1)). Its wait is at most 1.2 × delay(n). */
static guint
backoff_bound_ms (guint64 down_ms)
{
  double start = 0, delay = RECONNECT_DELAY_MS;

  for (guint n = 0; n < 64; n++)
    {
      double next_start = start + (1 - BACKOFF_JITTER) * delay;

      if (next_start > down_ms)
        break;
      start = next_start;
      delay = MIN (delay * 2, BACKOFF_CAP_MS);
    }
  return (guint)((1 + BACKOFF_JITTER) * delay) + HANDSHAKE_MARGIN_MS;
}

typedef enum
{
  KILL_SERVER,
  KILL_CLIENT,
  KILL_BOTH,
} KillWhat;

static void
test_kill (Fixture *f, gconstpointer data)
{
  KillWhat what = GPOINTER_TO_UINT (data);
  GtTestHttp *svc1, *svc2;
  GtTestProc *server, *client, *survivor;
  g_autoptr (Load) http = NULL;
  g_autoptr (Load) echo = NULL;
  const char *who_after;
  Ports ports = { 0 };
  guint server_fds, client_fds, bound_ms = 0;
  gint64 kill_at, dead_at, back_at = 0, http_ok, echo_ok;
  guint64 echoed_before;

  GT_TEST_REQUIRE_GT ();
  svc1 = gt_test_http_start ("svc-1", 0, NULL);
  svc2 = gt_test_http_start ("svc-2", 0, NULL);
  gt_test_tcp_echo_start ();
  server = start_server ("server", &ports, NULL);
  client = spawn_client ("client", ports.port, svc1->port, ports.tcp_port, NULL);
  expect_routes (ports.api_port, 1, TUNNELS, "at the start");

  /* A first pass of load, so that what gt creates lazily exists before the fds are counted. */
  http = load_start (http_load_worker, ports.port, HOST);
  echo = load_start (echo_load_worker, ports.tcp_port, NULL);
  g_usleep (1000 * 1000);
  load_stop (http);
  load_stop (echo);
  g_assert_cmpuint (load_expect_all_ok (http, 0, "svc-1", "warm-up"), >, 0);
  g_assert_cmpuint (load_expect_all_ok (echo, 0, NULL, "warm-up echo"), >, 0);
  g_clear_pointer (&http, load_free);
  g_clear_pointer (&echo, load_free);
  g_usleep (300 * 1000);
  server_fds = proc_fd_count (server->pid);
  client_fds = proc_fd_count (client->pid);

  http = load_start (http_load_worker, ports.port, HOST);
  echo = load_start (echo_load_worker, ports.tcp_port, NULL);
  g_usleep (1000 * 1000);
  echoed_before = load_echoed (echo);
  g_assert_cmpuint (echoed_before, >, 0);

  kill_at = g_get_monotonic_time ();
  if (what != KILL_CLIENT)
    gt_test_proc_stop (server, SIGKILL);
  if (what != KILL_SERVER)
    gt_test_proc_stop (client, SIGKILL);
  /* Every success from here on is a recovery. */
  dead_at = g_get_monotonic_time ();
  /* Down for a second under load. */
  g_usleep (1000 * 1000);
  if (what != KILL_CLIENT)
    {
      server = start_server ("server-2", &ports, NULL);
      back_at = g_get_monotonic_time ();
      bound_ms = backoff_bound_ms ((back_at - kill_at) / 1000);
    }
  if (what != KILL_SERVER)
    {
      /* The new client serves another local service, to tell who answers. */
      back_at = g_get_monotonic_time ();
      client = spawn_client ("client-2", ports.port, svc2->port, ports.tcp_port, NULL);
      /* A new process dials at once: no backoff, only its start and handshake. */
      bound_ms = HANDSHAKE_MARGIN_MS;
    }
  survivor = what == KILL_SERVER ? client : what == KILL_CLIENT ? server : NULL;
  who_after = what == KILL_SERVER ? "svc-1" : "svc-2";

  http_ok = load_wait_ok (http, dead_at, back_at + bound_ms * 1000, "HTTP after the restart");
  echo_ok = load_wait_ok (echo, dead_at, back_at + bound_ms * 1000, "echo after the restart");
  g_test_message ("down %.2f s; HTTP back %.0f ms and echo back %.0f ms after the restart "
                  "(bound %u ms)",
                  (back_at - kill_at) / 1e6, (http_ok - back_at) / 1e3, (echo_ok - back_at) / 1e3,
                  bound_ms);

  /* Once back, everything is served, and by the live client only. */
  expect_routes (ports.api_port, 1, TUNNELS, "after the restart");
  {
    gint64 mark = g_get_monotonic_time ();

    g_usleep (1500 * 1000);
    load_stop (http);
    load_stop (echo);
    g_test_message ("%u requests and %u echo rounds after the tunnels were back, all served",
                    load_expect_all_ok (http, mark, who_after, "HTTP after the recovery"),
                    load_expect_all_ok (echo, mark, NULL, "echo after the recovery"));
  }
  g_assert_cmpuint (echo->corrupt, ==, 0);
  g_assert_cmpuint (load_echoed (echo), >, echoed_before);
  if (what != KILL_SERVER)
    g_assert_cmpuint (load_count_other (http, dead_at, "svc-2"), ==, 0);

  /* The survivor holds exactly the fds it held before (tunnels, listeners, log pipe...). */
  if (survivor != NULL)
    expect_fd_count (survivor, survivor == server ? server_fds : client_fds,
                     "after the restart and the load");
  else
    {
      /* Both new: the same set-up holds as many fds as the first pair did. */
      expect_fd_count (server, server_fds, "in the new server");
      expect_fd_count (client, client_fds, "in the new client");
    }
  expect_routes (ports.api_port, 1, TUNNELS, "at the end");
}

/* ------------------------------------------------------------------------------------------ */
/* 2. Half-open tunnel: a relay between client and server that stops forwarding, sockets open */

typedef struct
{
  int down, up; /* the client's side, the server's side */
  gboolean frozen;
} RelayPair;

typedef struct
{
  int listen_fd;
  guint16 port, target;
  gint stop;
  gint freeze;   /* set: every pair open now stops forwarding */
  guint n_pairs; /* under lock */
  GMutex lock;
  GThread *thread;
} Relay;

static int
relay_connect_target (guint16 port)
{
  struct sockaddr_in sa = { 0 };
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  sa.sin_family = AF_INET;
  sa.sin_port = htons (port);
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  if (fd < 0 || connect (fd, (struct sockaddr *)&sa, sizeof sa) < 0)
    {
      if (fd >= 0)
        close (fd);
      return -1;
    }
  return fd;
}

/* Moves what is readable from one socket to the other (blocking writes: loopback, small
 * amounts); FALSE when either side ended. */
static gboolean
relay_forward (int from, int to)
{
  guint8 buf[65536];
  gssize n = recv (from, buf, sizeof buf, MSG_DONTWAIT);
  gsize done = 0;

  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
    return FALSE;
  while (n > 0 && done < (gsize)n)
    {
      gssize w = send (to, buf + done, n - done, MSG_NOSIGNAL);

      if (w < 0)
        return FALSE;
      done += w;
    }
  return TRUE;
}

static gpointer
relay_worker (gpointer data)
{
  Relay *r = data;
  g_autoptr (GArray) pairs = g_array_new (FALSE, FALSE, sizeof (RelayPair));
  g_autofree struct pollfd *pfds = NULL;
  gint64 until = gt_test_deadline_in (LOAD_MAX_MS * 2);

  while (!g_atomic_int_get (&r->stop) && g_get_monotonic_time () < until)
    {
      guint n = 0;

      if (g_atomic_int_compare_and_exchange (&r->freeze, 1, 0))
        for (guint i = 0; i < pairs->len; i++)
          g_array_index (pairs, RelayPair, i).frozen = TRUE;
      pfds = g_renew (struct pollfd, pfds, 1 + 2 * pairs->len);
      pfds[n++] = (struct pollfd){ r->listen_fd, POLLIN, 0 };
      for (guint i = 0; i < pairs->len; i++)
        {
          RelayPair *p = &g_array_index (pairs, RelayPair, i);

          /* A frozen pair is not polled: its bytes stay in the kernel's buffers. */
          pfds[n++] = (struct pollfd){ p->frozen ? -1 : p->down, POLLIN, 0 };
          pfds[n++] = (struct pollfd){ p->frozen ? -1 : p->up, POLLIN, 0 };
        }
      if (poll (pfds, n, 50) <= 0)
        continue;
      /* The pairs polled (the new one, if any, is added below). */
      for (guint i = pairs->len; i-- > 0;)
        {
          RelayPair *p = &g_array_index (pairs, RelayPair, i);
          struct pollfd *pd = &pfds[1 + 2 * i], *pu = &pfds[2 + 2 * i];

          if (p->frozen)
            continue;
          if ((pd->revents && !relay_forward (p->down, p->up))
              || (pu->revents && !relay_forward (p->up, p->down)))
            {
              close (p->down);
              close (p->up);
              g_array_remove_index (pairs, i);
            }
        }
      if (pfds[0].revents & POLLIN)
        {
          int down = accept4 (r->listen_fd, NULL, NULL, SOCK_CLOEXEC);
          int up = down >= 0 ? relay_connect_target (r->target) : -1;

          if (up >= 0)
            {
              RelayPair p = { down, up, FALSE };

              g_array_append_val (pairs, p);
              g_mutex_lock (&r->lock);
              r->n_pairs++;
              g_mutex_unlock (&r->lock);
            }
          else if (down >= 0)
            close (down);
        }
    }
  for (guint i = 0; i < pairs->len; i++)
    {
      close (g_array_index (pairs, RelayPair, i).down);
      close (g_array_index (pairs, RelayPair, i).up);
    }
  return NULL;
}

static Relay *
relay_start (guint16 target)
{
  Relay *r = g_new0 (Relay, 1);
  struct sockaddr_in sa = { 0 };
  socklen_t len = sizeof sa;

  r->target = target;
  r->listen_fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  g_assert_cmpint (r->listen_fd, >=, 0);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  g_assert_no_errno (bind (r->listen_fd, (struct sockaddr *)&sa, sizeof sa));
  g_assert_no_errno (listen (r->listen_fd, 64));
  g_assert_no_errno (getsockname (r->listen_fd, (struct sockaddr *)&sa, &len));
  r->port = ntohs (sa.sin_port);
  g_mutex_init (&r->lock);
  r->thread = g_thread_new ("relay", relay_worker, r);
  return r;
}

static guint
relay_n_pairs (Relay *r)
{
  guint n;

  g_mutex_lock (&r->lock);
  n = r->n_pairs;
  g_mutex_unlock (&r->lock);
  return n;
}

static void
relay_free (Relay *r)
{
  g_atomic_int_set (&r->stop, 1);
  g_thread_join (r->thread);
  close (r->listen_fd);
  g_mutex_clear (&r->lock);
  g_free (r);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Relay, relay_free)

#define HALF_OPEN_CLIENT_TIMEOUT_S 3
/* Long: the server must find the half-open tunnels by its probe, well before this. */
#define HALF_OPEN_SERVER_TIMEOUT_S 30
/* GT_SERVER_SESSION_PROBE_MS (src/server/gt-server-session.h). */
#define PROBE_S 10

/* Waits for the server to close TUNNELS tunnels on an unanswered probe, within the probe's
 * time of the client's first new attempt (the backoff's first delay after since). */
static void
await_probe (GtTestProc *server, guint *from, gint64 since, gint64 *seen)
{
  gint64 bound_us = ((gint64)backoff_bound_ms (0) + (PROBE_S + 1) * 1000) * 1000;

  for (guint i = 0; i < TUNNELS; i++)
    g_free (gt_test_proc_expect_line (server, "tunnel closed: .*no answer to a ping", from,
                                      GT_TEST_WAIT_MS * 2));
  *seen = g_get_monotonic_time ();
  if (*seen - since > bound_us)
    gt_test_fail ("the server took %.1f s after the client's reconnection to drop the "
                  "half-open tunnels (bound %.1f s)",
                  (*seen - since) / 1e6, bound_us / 1e6);
}

/* Six requests one after the other, each served within 3 s. */
static void
expect_requests_served (guint16 port, guint *n_ok)
{
  for (*n_ok = 0; *n_ok < 6; (*n_ok)++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GtTestHttpResponse) r = request_close (port, HOST, 3000, &error);

      gt_test_expect_response (r, error, 200);
    }
}

/* data: TRUE when the server allows the client only its TUNNELS tunnels (`connections`), so
 * that the half-open ones, while they count, keep the new ones out. */
static void
test_half_open (Fixture *f, gconstpointer data)
{
  gboolean at_limit = GPOINTER_TO_UINT (data);
  g_autoptr (GPtrArray) server_extra = gt_test_args_new ();
  g_autoptr (GPtrArray) client_extra = gt_test_args_new ();
  g_autoptr (Relay) relay = NULL;
  g_autoptr (Load) http = NULL;
  GtTestHttp *svc;
  GtTestProc *server, *client;
  Ports ports = { 0 };
  guint client_from, started_from, server_from, pairs, server_fds, client_fds, n_ok;
  gint64 frozen_at, client_seen, back_at, server_seen, bound_us;

  GT_TEST_REQUIRE_GT ();
  svc = gt_test_http_start ("svc-1", 0, NULL);
  gt_test_args_add (server_extra, "--timeout");
  gt_test_args_add (server_extra, "%us", HALF_OPEN_SERVER_TIMEOUT_S);
  if (at_limit)
    {
      gt_test_args_add (server_extra, "--connections");
      gt_test_args_add (server_extra, "%u", TUNNELS);
    }
  server = start_server ("server", &ports, server_extra);
  relay = relay_start (ports.port);
  gt_test_args_add (client_extra, "--remoteTimeout");
  gt_test_args_add (client_extra, "%us", HALF_OPEN_CLIENT_TIMEOUT_S);
  client = spawn_client ("client", relay->port, svc->port, 0, client_extra);
  expect_routes (ports.api_port, 1, TUNNELS, "at the start");
  warm_up (ports.port);
  /* Idle for longer than the client's timeout: its pings (every remoteTimeout / 2) and the
   * server's answers keep the tunnels up. */
  g_usleep ((HALF_OPEN_CLIENT_TIMEOUT_S + 2) * G_USEC_PER_SEC);
  g_assert_cmpuint (gt_test_proc_count_matches (client, "tunnel [0-9]+ closed"), ==, 0);
  g_assert_cmpuint (relay_n_pairs (relay), ==, TUNNELS);
  server_fds = proc_fd_count (server->pid);
  client_fds = proc_fd_count (client->pid);
  http = load_start (http_load_worker, ports.port, HOST);
  g_usleep (500 * 1000);
  load_stop (http);
  g_assert_cmpuint (load_expect_all_ok (http, 0, "svc-1", "before the freeze"), >, 0);
  g_clear_pointer (&http, load_free);

  /* No user traffic from here: the half-open tunnels hold no stream, the worst case for the
   * server's choice of a tunnel. */
  client_from = started_from = gt_test_proc_line_count (client);
  server_from = gt_test_proc_line_count (server);
  g_atomic_int_set (&relay->freeze, 1);
  frozen_at = g_get_monotonic_time ();

  /* The client stops hearing from the server: its tunnels go after remoteTimeout (checked
   * once a second). */
  for (guint i = 0; i < TUNNELS; i++)
    g_free (gt_test_proc_expect_line (client, "tunnel [0-9]+ closed: no data from the peer",
                                      &client_from, GT_TEST_WAIT_MS));
  client_seen = g_get_monotonic_time ();
  g_test_message ("half-open: the client dropped its tunnels %.1f s after the freeze "
                  "(remoteTimeout %u s)",
                  (client_seen - frozen_at) / 1e6, HALF_OPEN_CLIENT_TIMEOUT_S);
  g_assert_cmpint (client_seen - frozen_at, >=, (HALF_OPEN_CLIENT_TIMEOUT_S - 1) * G_USEC_PER_SEC);
  if (client_seen - frozen_at > (HALF_OPEN_CLIENT_TIMEOUT_S + 2) * G_USEC_PER_SEC)
    gt_test_fail ("the client took %.1f s to see a half-open tunnel (remoteTimeout %u s)",
                  (client_seen - frozen_at) / 1e6, HALF_OPEN_CLIENT_TIMEOUT_S);

  if (!at_limit)
    {
      /* Its new tunnels (new relay connections, forwarded) are taken at once, and requests go
       * to them, none into the half-open ones, which the server probes meanwhile: they never
       * answer and are closed after the probe's time, long before the server's timeout. */
      for (guint i = 0; i < TUNNELS; i++)
        g_free (gt_test_proc_expect_line (client, "tunnel started", &started_from,
                                          backoff_bound_ms (0) + GT_TEST_WAIT_MS));
      back_at = g_get_monotonic_time ();
      expect_requests_served (ports.port, &n_ok);
      await_probe (server, &server_from, client_seen, &server_seen);
      g_assert_cmpint (back_at, <, server_seen);
    }
  else
    {
      /* The half-open tunnels count: the new ones are refused, but each refusal makes the
       * server probe the old ones, which are gone after the probe's time; the client gets in at
       * its next attempt. */
      await_probe (server, &server_from, client_seen, &server_seen);
      g_assert_cmpuint (gt_test_proc_count_matches (client, "already has 2 tunnels"), >, 0);
      bound_us = (gint64)backoff_bound_ms ((server_seen - client_seen) / 1000) * 1000;
      for (guint i = 0; i < TUNNELS; i++)
        g_free (gt_test_proc_expect_line (client, "tunnel started", &started_from,
                                          (guint)(bound_us / 1000) + GT_TEST_WAIT_MS));
      back_at = g_get_monotonic_time ();
      if (back_at - server_seen > bound_us)
        gt_test_fail ("the client got its tunnels back %.1f s after the server dropped the old "
                      "ones (bound %.1f s)",
                      (back_at - server_seen) / 1e6, bound_us / 1e6);
      expect_requests_served (ports.port, &n_ok);
    }
  g_test_message ("the server closed the half-open tunnels %.1f s after the client dropped "
                  "them (probe %u s, timeout %u s); the client's tunnels were back %.1f s after "
                  "the freeze, %u requests served at once",
                  (server_seen - client_seen) / 1e6, PROBE_S, HALF_OPEN_SERVER_TIMEOUT_S,
                  (back_at - frozen_at) / 1e6, n_ok);
  g_assert_cmpuint (gt_test_proc_count_matches (server, "no data from the peer"), ==, 0);
  expect_routes (ports.api_port, 1, TUNNELS, "after the half-open tunnels were replaced");
  pairs = relay_n_pairs (relay);
  g_assert_cmpuint (pairs, >=, 2 * TUNNELS);
  g_test_message ("%u relay connections in all", pairs);
  http = load_start (http_load_worker, ports.port, HOST);
  g_usleep (1000 * 1000);
  load_stop (http);
  g_assert_cmpuint (load_expect_all_ok (http, 0, "svc-1", "after the replacement"), >, 0);
  /* Both hold what they held before: the half-open tunnels' sockets are closed, not leaked. */
  expect_fd_count (server, server_fds, "after the half-open tunnels were replaced");
  expect_fd_count (client, client_fds, "after the half-open tunnels were replaced");
}

/* ------------------------------------------------------------------------------------------ */
/* 3. Slowloris on every listener, legitimate users served meanwhile */

#if defined(__SANITIZE_ADDRESS__)
/* Under ASan (with the slow unwinder) this program's own TLS handshakes, which run in
 * glib-networking threads, take more than 3 s: the legitimate users need more time. */
#define SLOW_HANDSHAKE_S 10
#else
#define SLOW_HANDSHAKE_S 3
#endif

typedef struct
{
  const char *name;
  int fd;
  GIOStream *tls;        /* set when the slow bytes go through our own TLS session */
  const guint8 *trickle; /* sent one byte per second */
  gsize trickle_len, sent;
  gint64 opened, closed;
} Slow;

/* A slow peer on fd that sends trickle (trickle_len bytes) one byte per second from now. */
static Slow *
slow_add (GPtrArray *slows, const char *name, int fd, const void *trickle, gsize trickle_len)
{
  Slow *s = g_new0 (Slow, 1);

  s->name = name;
  s->fd = fd;
  s->trickle = trickle;
  s->trickle_len = trickle_len;
  s->opened = g_get_monotonic_time ();
  g_ptr_array_add (slows, s);
  return s;
}

/* Whether the server has closed fd (EOF or reset); reads and drops whatever else came. */
static gboolean
slow_closed (int fd)
{
  guint8 buf[4096];

  for (;;)
    {
      gssize n = recv (fd, buf, sizeof buf, MSG_DONTWAIT);

      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        return TRUE;
      if (n < 0)
        return FALSE;
    }
}

/* Looks for the closures of slows (Slow *) every 20 ms in a thread of its own, so that the
 * times do not depend on how long the legitimate requests take; until all are closed or stop
 * is set (bounded by the caller's deadline). */
typedef struct
{
  GPtrArray *slows;
  GMutex lock; /* guards each Slow's closed */
  gint stop;
  gint64 until;
} Watch;

static gpointer
watch_worker (gpointer data)
{
  Watch *w = data;
  g_autofree struct pollfd *pfds = g_new0 (struct pollfd, w->slows->len);
  g_autofree Slow **which = g_new0 (Slow *, w->slows->len);

  while (!g_atomic_int_get (&w->stop) && g_get_monotonic_time () < w->until)
    {
      guint n = 0;

      g_mutex_lock (&w->lock);
      for (guint i = 0; i < w->slows->len; i++)
        {
          Slow *s = w->slows->pdata[i];

          if (s->closed == 0)
            {
              pfds[n] = (struct pollfd){ s->fd, POLLIN, 0 };
              which[n++] = s;
            }
        }
      g_mutex_unlock (&w->lock);
      if (n == 0)
        break;
      if (poll (pfds, n, 20) <= 0)
        continue;
      for (guint i = 0; i < n; i++)
        if (pfds[i].revents != 0 && slow_closed (pfds[i].fd))
          {
            g_mutex_lock (&w->lock);
            which[i]->closed = g_get_monotonic_time ();
            g_mutex_unlock (&w->lock);
          }
    }
  return NULL;
}

static int
connect_fd (guint16 port)
{
  g_autoptr (GError) error = NULL;
  GtTestConn *c = gt_test_conn_connect (port, &error);
  int fd;

  if (c == NULL)
    gt_test_fail ("connect to %u: %s", port, error->message);
  fd = c->fd;
  c->fd = -1;
  gt_test_conn_free (c);
  return fd;
}

static void
send_or_fail (int fd, const void *data, gsize len, const char *what)
{
  if (send (fd, data, len, MSG_NOSIGNAL) != (gssize)len)
    gt_test_fail ("%s: send: %s", what, g_strerror (errno));
}

static gboolean
accept_any_cb (GTlsConnection *conn, GTlsCertificate *peer, GTlsCertificateFlags errors,
               gpointer user_data)
{
  return TRUE;
}

/* A TLS session over a new connection to port, with SNI server_name; any certificate. */
static GIOStream *
tls_connect (guint16 port, const char *server_name, GSocketConnection **conn_out, GError **error)
{
  g_autoptr (GSocketClient) sc = g_socket_client_new ();
  g_autoptr (GSocketConnection) conn = NULL;
  g_autoptr (GSocketConnectable) identity = g_network_address_new (server_name, port);
  g_autoptr (GIOStream) tls = NULL;

  g_socket_client_set_timeout (sc, 10);
  conn = g_socket_client_connect_to_host (sc, "127.0.0.1", port, NULL, error);
  if (conn == NULL)
    return NULL;
  tls = g_tls_client_connection_new (G_IO_STREAM (conn), identity, error);
  if (tls == NULL)
    return NULL;
  g_tls_connection_set_require_close_notify (G_TLS_CONNECTION (tls), FALSE);
  g_signal_connect (tls, "accept-certificate", G_CALLBACK (accept_any_cb), NULL);
  if (!g_tls_connection_handshake (G_TLS_CONNECTION (tls), NULL, error))
    return NULL;
  if (conn_out != NULL)
    *conn_out = g_object_ref (conn);
  return g_steal_pointer (&tls);
}

/* GET /whoami over TLS to port with SNI and Host host; the answering service's name, or NULL
 * with error. */
static char *
tls_whoami (guint16 port, const char *host, GError **error)
{
  g_autoptr (GIOStream) tls = tls_connect (port, host, NULL, error);
  g_autoptr (GByteArray) req = NULL;
  g_autoptr (GByteArray) in = g_byte_array_new ();
  guint8 chunk[4096];

  if (tls == NULL)
    return NULL;
  req = gt_test_http_build_request ("GET", "/whoami", host, NULL, 0, "Connection: close\r\n");
  if (!g_output_stream_write_all (g_io_stream_get_output_stream (tls), req->data, req->len, NULL,
                                  NULL, error))
    return NULL;
  for (;;)
    {
      g_autoptr (GtTestHttpResponse) r = NULL;
      gsize consumed;
      gssize n;
      int res = gt_test_http_parse_response (in->data, in->len, FALSE, &consumed, &r, error);

      if (res < 0)
        return NULL;
      if (res > 0)
        {
          if (r->status != 200)
            {
              g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "status %u", r->status);
              return NULL;
            }
          return g_strndup ((const char *)r->body->data, r->body->len);
        }
      n = g_input_stream_read (g_io_stream_get_input_stream (tls), chunk, sizeof chunk, NULL,
                               error);
      if (n < 0)
        return NULL;
      if (n == 0)
        {
          g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "EOF before the response");
          return NULL;
        }
      g_byte_array_append (in, chunk, n);
    }
}

static GBytes *
read_tls_file (const char *name)
{
  const char *dir = g_getenv ("GT_TEST_FILES");
  g_autofree char *path = NULL;
  g_autoptr (GError) error = NULL;
  char *data = NULL;
  gsize len = 0;

  if (dir == NULL)
    {
      g_autofree char *here = g_path_get_dirname (__FILE__);

      path = g_build_filename (here, "..", "files", "tls", name, NULL);
    }
  else
    path = g_build_filename (dir, "tls", name, NULL);
  if (!g_file_get_contents (path, &data, &len, &error))
    gt_test_fail ("cannot read test file %s: %s", path, error->message);
  return g_bytes_new_take (data, len);
}

static guint16
wait_listen_port (GtTestProc *p, const char *suffix_regex)
{
  g_autofree char *regex
      = g_strdup_printf ("listening on 127\\.0\\.0\\.1:([0-9]+)%s$", suffix_regex);
  g_autofree char *line = gt_test_proc_expect_line (p, regex, NULL, GT_TEST_WAIT_MS);

  return (guint16)gt_test_capture_uint (line, regex);
}

static void
test_slowloris (Fixture *f, gconstpointer data)
{
  static const char http_head[]
      = "GET /whoami HTTP/1.1\r\nHost: " HOST "\r\nUser-Agent: slow\r\nX-Pad: aaaaaaaaaaaaaaaa";
  static const char ws_head[] = "GET /gt-tunnel HTTP/1.1\r\nHost: " HOST "\r\nUpgrade: "
                                "websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13"
                                "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Pad: aaaa";
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autoptr (GPtrArray) slows = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GBytes) hello_bytes = read_tls_file ("client-hello-sni.bin");
  g_autoptr (GtHello) hello = gt_hello_new (CLIENT_ID, CLIENT_SECRET);
  g_autoptr (GByteArray) tunnel = g_byte_array_new ();
  g_autoptr (GTlsCertificate) local_cert = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocketConnection) https_conn = NULL;
  g_autoptr (GIOStream) https_tls = NULL;
  g_autofree char *cert_path = g_build_filename (gt_test_tmpdir (), "local-cert.pem", NULL);
  g_autofree char *key_path = g_build_filename (gt_test_tmpdir (), "local-key.pem", NULL);
  const char *names[] = { SNI_HOST, NULL };
  const guint8 *ch = g_bytes_get_data (hello_bytes, NULL);
  gsize ch_len = g_bytes_get_size (hello_bytes);
  guint8 preface[GT_PREFACE_SIZE];
  GtTestHttp *svc, *https;
  GtTestProc *server, *client;
  guint16 port, tls_port, sni_port;
  guint legit[3] = { 0 }, open;
  gint64 deadline, https_opened;
  Watch watch = { 0 };
  GThread *watcher;
  guint server_fds;

  GT_TEST_REQUIRE_GT ();
  svc = gt_test_http_start ("svc-1", 0, NULL);
  g_assert_true (gt_certificate_generate (cert_path, key_path, names, &error));
  g_assert_no_error (error);
  local_cert = g_tls_certificate_new_from_files (cert_path, key_path, &error);
  g_assert_no_error (error);
  https = gt_test_http_start ("local-https", 0, local_cert);

  gt_test_args_addv (args, "server", "--id", CLIENT_ID, "--secret", CLIENT_SECRET, "--addr",
                     "127.0.0.1:0", "--tlsAddr", "127.0.0.1:0", "--sniAddr", "127.0.0.1:0",
                     "--timeout", "60s", NULL);
  gt_test_args_add (args, "--handshakeTimeout");
  gt_test_args_add (args, "%us", SLOW_HANDSHAKE_S);
  server = spawn_gt ("server", args, gt_test_tmpdir ());
  port = wait_listen_port (server, "");
  tls_port = wait_listen_port (server, " \\(TLS\\)");
  sni_port = wait_listen_port (server, " \\(TLS pass-through by SNI\\)");
  {
    g_autoptr (GPtrArray) extra = gt_test_args_new ();

    gt_test_args_add (extra, "--local");
    gt_test_args_add (extra, "https://127.0.0.1:%u", https->port);
    gt_test_args_addv (extra, "--hostPrefix", SNI_PREFIX, NULL);
    client = spawn_client ("client", port, svc->port, 0, extra);
    g_free (
        gt_test_proc_expect_line (client, "tunnel started: .* tunnels=2", NULL, GT_TEST_WAIT_MS));
  }
  warm_up (port);
  for (guint i = 0; i < 2; i++)
    {
      g_autofree char *who
          = tls_whoami (i == 0 ? tls_port : sni_port, i == 0 ? HOST : SNI_HOST, &error);

      g_assert_no_error (error);
    }
  g_usleep (300 * 1000);
  server_fds = proc_fd_count (server->pid);

  gt_preface_encode (preface);
  g_byte_array_append (tunnel, preface, sizeof preface);
  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, "slow", 0, FALSE);
  g_assert_true (gt_frame_append_hello (tunnel, hello, &error));
  /* An HTTPS request over a finished TLS handshake to tlsAddr, its head one byte at a time. */
  https_opened = g_get_monotonic_time ();
  https_tls = tls_connect (tls_port, HOST, &https_conn, &error);
  g_assert_no_error (error);

  slow_add (slows, "addr: HTTP head", connect_fd (port), http_head, strlen (http_head));
  {
    /* The preface and the HELLO's header at once, its body byte by byte. */
    int fd = connect_fd (port);

    send_or_fail (fd, tunnel->data, GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE, "tunnel handshake");
    slow_add (slows, "addr: tunnel handshake", fd,
              tunnel->data + GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE,
              tunnel->len - GT_PREFACE_SIZE - GT_FRAME_HEADER_SIZE - 1);
  }
  slow_add (slows, "addr: WebSocket upgrade head", connect_fd (port), ws_head, strlen (ws_head));
  {
    /* A whole upgrade head (answered with 101), then no tunnel handshake in the WebSocket. */
    int fd = connect_fd (port);
    g_autofree char *head = g_strdup_printf ("%s\r\n\r\n", ws_head);

    send_or_fail (fd, head, strlen (head), "WebSocket upgrade");
    slow_add (slows, "addr: WebSocket upgraded, no HELLO", fd, NULL, 0);
  }
  {
    int fd = connect_fd (tls_port);

    send_or_fail (fd, ch, 40, "partial ClientHello");
    slow_add (slows, "tlsAddr: partial ClientHello", fd, ch + 40, ch_len - 41);
  }
  {
    /* A whole ClientHello, then nothing: the server's reply waits for the rest of the
     * handshake. */
    int fd = connect_fd (tls_port);

    send_or_fail (fd, ch, ch_len, "ClientHello");
    slow_add (slows, "tlsAddr: partial TLS handshake", fd, NULL, 0);
  }
  {
    Slow *s = slow_add (slows, "tlsAddr: HTTPS request head",
                        g_socket_get_fd (g_socket_connection_get_socket (https_conn)), http_head,
                        strlen (http_head));

    s->tls = https_tls;
    /* The server's clock for it started with the connection, before the TLS handshake. */
    s->opened = https_opened;
  }
  {
    int fd = connect_fd (sni_port);

    send_or_fail (fd, ch, 40, "partial ClientHello");
    slow_add (slows, "sniAddr: partial ClientHello", fd, ch + 40, ch_len - 41);
  }
  {
    int fd = connect_fd (sni_port);

    send_or_fail (fd, tunnel->data, GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE, "tunnel handshake");
    slow_add (slows, "sniAddr: tunnel handshake", fd,
              tunnel->data + GT_PREFACE_SIZE + GT_FRAME_HEADER_SIZE,
              tunnel->len - GT_PREFACE_SIZE - GT_FRAME_HEADER_SIZE - 1);
  }

  /* Once a second: one more byte from each slow peer still open, and one legitimate request per
   * listener; until every slow peer was dropped (bounded: handshakeTimeout + a few seconds). */
  deadline = gt_test_deadline_in ((SLOW_HANDSHAKE_S + 6) * 1000);
  watch.slows = slows;
  watch.until = deadline;
  g_mutex_init (&watch.lock);
  watcher = g_thread_new ("watch", watch_worker, &watch);
  do
    {
      gint64 tick = g_get_monotonic_time ();

      open = 0;
      for (guint i = 0; i < slows->len; i++)
        {
          Slow *s = slows->pdata[i];
          gboolean closed;

          g_mutex_lock (&watch.lock);
          closed = s->closed != 0;
          g_mutex_unlock (&watch.lock);
          if (closed)
            continue;
          open++;
          if (s->sent < s->trickle_len)
            {
              if (s->tls != NULL)
                g_output_stream_write (g_io_stream_get_output_stream (s->tls), s->trickle + s->sent,
                                       1, NULL, NULL);
              else
                (void)send (s->fd, s->trickle + s->sent, 1, MSG_NOSIGNAL);
              s->sent++;
            }
        }
      if (open == 0)
        break;
      {
        g_autoptr (GError) e = NULL;
        g_autoptr (GtTestHttpResponse) r = request_close (port, HOST, GT_TEST_WAIT_MS, &e);
        g_autofree char *tls_who = NULL, *sni_who = NULL;

        gt_test_expect_response (r, e, 200);
        legit[0]++;
        tls_who = tls_whoami (tls_port, HOST, &e);
        if (g_strcmp0 (tls_who, "svc-1") != 0)
          gt_test_fail ("HTTPS on tlsAddr during the slowloris: %s",
                        e != NULL ? e->message : tls_who);
        legit[1]++;
        sni_who = tls_whoami (sni_port, SNI_HOST, &e);
        if (g_strcmp0 (sni_who, "local-https") != 0)
          gt_test_fail ("TLS through sniAddr during the slowloris: %s",
                        e != NULL ? e->message : sni_who);
        legit[2]++;
      }
      g_usleep (MAX (0, G_USEC_PER_SEC - (g_get_monotonic_time () - tick)));
    }
  while (g_get_monotonic_time () < deadline);
  g_atomic_int_set (&watch.stop, 1);
  g_thread_join (watcher);
  g_mutex_clear (&watch.lock);

  for (guint i = 0; i < slows->len; i++)
    {
      Slow *s = slows->pdata[i];
      double after = (s->closed - s->opened) / 1e6;

      if (s->closed == 0)
        gt_test_fail ("%s: still open %.1f s after it began (handshakeTimeout %u s)", s->name,
                      (g_get_monotonic_time () - s->opened) / 1e6, SLOW_HANDSHAKE_S);
      g_test_message ("%s: dropped after %.2f s, %" G_GSIZE_FORMAT " slow bytes sent", s->name,
                      after, s->sent);
      /* Not before handshakeTimeout, however slowly the bytes came, and not much after. */
      if (after < SLOW_HANDSHAKE_S - 0.3 || after > SLOW_HANDSHAKE_S + 1.5)
        gt_test_fail ("%s: dropped after %.1f s, handshakeTimeout is %u s", s->name, after,
                      SLOW_HANDSHAKE_S);
      if (s->tls == NULL)
        close (s->fd);
    }
  g_test_message ("legitimate requests meanwhile: %u on addr, %u on tlsAddr, %u on sniAddr, "
                  "all served",
                  legit[0], legit[1], legit[2]);
  /* Each round ran while slow peers were held (every round under ASan takes seconds). */
  for (guint i = 0; i < G_N_ELEMENTS (legit); i++)
    g_assert_cmpuint (legit[i], >=, 2);
  expect_fd_count (server, server_fds, "after the slowloris");
  g_assert_false (gt_test_proc_has_exited (server));
  g_assert_cmpuint (gt_test_proc_count_matches (client, "tunnel [0-9]+ closed"), ==, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* 4. A flood of wrong secrets from many addresses */

#define FLOOD_FIRST 2
#define FLOOD_LAST 50
#define FLOOD_TIMES 2 /* reconnectTimes */
#define LOCKOUT_RE "^too many failed logins from 127\\.0\\.0\\.[0-9]+; try again in [0-9]+ s$"

/* Sends the preface and a HELLO from src_ip; returns the server's answer: 0 WELCOME, the ERROR
 * code (message in *message), -1 when the connection ended without one. */
static int
raw_hello (guint16 port, const char *src_ip, const char *id, const char *secret, char **message)
{
  g_autoptr (GtHello) hello = gt_hello_new (id, secret);
  g_autoptr (GByteArray) out = g_byte_array_new ();
  g_autoptr (GtTestConn) c = g_new0 (GtTestConn, 1);
  g_autoptr (GError) error = NULL;
  struct sockaddr_in src = { 0 }, dst = { 0 };
  guint8 preface[GT_PREFACE_SIZE];
  gint64 deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);

  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, PREFIX, 0, FALSE);
  gt_preface_encode (preface);
  g_byte_array_append (out, preface, sizeof preface);
  g_assert_true (gt_frame_append_hello (out, hello, &error));
  c->in = g_byte_array_new ();
  c->fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  g_assert_cmpint (c->fd, >=, 0);
  src.sin_family = AF_INET;
  g_assert_cmpint (inet_pton (AF_INET, src_ip, &src.sin_addr), ==, 1);
  g_assert_no_errno (bind (c->fd, (struct sockaddr *)&src, sizeof src));
  dst.sin_family = AF_INET;
  dst.sin_port = htons (port);
  dst.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  if (connect (c->fd, (struct sockaddr *)&dst, sizeof dst) < 0)
    g_assert_cmpint (errno, ==, EINPROGRESS);
  if (!gt_test_fd_poll (c->fd, POLLOUT, deadline, &error)
      || !gt_test_conn_check_connected (c, &error)
      || !gt_test_conn_write_all (c, out->data, out->len, deadline, &error))
    return -1;
  for (;;)
    {
      GtFrameHeader h;
      guint16 code;

      if (gt_frame_header_decode (c->in->data, c->in->len, &h, NULL) == GT_DECODE_OK
          && c->in->len >= GT_FRAME_HEADER_SIZE + h.length)
        {
          if (h.type == GT_FRAME_WELCOME)
            return 0;
          g_assert_cmpint (h.type, ==, GT_FRAME_ERROR);
          g_assert_true (
              gt_error_decode (c->in->data + GT_FRAME_HEADER_SIZE, h.length, &code, message, NULL));
          return code;
        }
      if (gt_test_conn_fill (c, deadline, NULL) <= 0)
        return -1;
    }
}

static void
test_flood (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) extra = gt_test_args_new ();
  g_autoptr (Load) http = NULL;
  g_autoptr (GRegex) lockout_re = g_regex_new (LOCKOUT_RE, 0, 0, NULL);
  GtTestHttp *svc, *bob_svc;
  GtTestProc *server, *bob;
  Ports ports = { 0 };
  guint refused = 0, locked = 0, n_addr = FLOOD_LAST - FLOOD_FIRST + 1, server_fds;
  gint64 flood_at, bob_at;
  g_autofree char *m = NULL;

  GT_TEST_REQUIRE_GT ();
  svc = gt_test_http_start ("svc-1", 0, NULL);
  bob_svc = gt_test_http_start ("bob-svc", 0, NULL);
  gt_test_args_add (extra, "--reconnectTimes");
  gt_test_args_add (extra, "%u", FLOOD_TIMES);
  gt_test_args_addv (extra, "--reconnectDuration", "5m", NULL);
  server = start_server ("server", &ports, extra);
  spawn_client ("client", ports.port, svc->port, 0, NULL);
  expect_routes (ports.api_port, 1, TUNNELS, "at the start");
  warm_up (ports.port);
  server_fds = proc_fd_count (server->pid);
  http = load_start (http_load_worker, ports.port, HOST);
  g_usleep (300 * 1000);
  flood_at = g_get_monotonic_time ();

  /* reconnectTimes + 1 wrong secrets for alice from each address: refused... */
  for (guint k = 0; k <= FLOOD_TIMES; k++)
    for (guint a = FLOOD_FIRST; a <= FLOOD_LAST; a++)
      {
        g_autofree char *ip = g_strdup_printf ("127.0.0.%u", a);
        g_autofree char *secret = g_strdup_printf ("wrong-%u-%u", a, k);
        g_autofree char *message = NULL;
        int code = raw_hello (ports.port, ip, CLIENT_ID, secret, &message);

        if (code != 1 || g_strcmp0 (message, "invalid id or secret") != 0)
          gt_test_fail ("wrong secret %u from %s: code %d '%s'", k + 1, ip, code, message);
        refused++;
      }

  /* ...then each address is locked out, even with the right secret... */
  for (guint a = FLOOD_FIRST; a <= FLOOD_LAST; a++)
    {
      g_autofree char *ip = g_strdup_printf ("127.0.0.%u", a);
      g_autofree char *message = NULL;
      int code = raw_hello (ports.port, ip, CLIENT_ID, a % 2 ? CLIENT_SECRET : "wrong", &message);

      if (code != 1 || !g_regex_match (lockout_re, message, 0, NULL)
          || strstr (message, ip) == NULL)
        gt_test_fail ("after %u failures from %s: code %d '%s', want the lockout", FLOOD_TIMES + 1,
                      ip, code, message);
      locked++;
    }

  /* ...while a client from 127.0.0.1 connects... */
  bob_at = g_get_monotonic_time ();
  {
    g_autoptr (GPtrArray) args = gt_test_args_new ();

    gt_test_args_addv (args, "client", "--id", "bob", "--secret", BOB_SECRET, "--remoteConnections",
                       "1", NULL);
    gt_test_args_add (args, "--remote");
    gt_test_args_add (args, "tcp://127.0.0.1:%u", ports.port);
    gt_test_args_add (args, "--local");
    gt_test_args_add (args, "http://127.0.0.1:%u", bob_svc->port);
    gt_test_args_addv (args, "--hostPrefix", "bob", NULL);
    bob = spawn_gt ("bob", args, NULL);
    g_free (gt_test_proc_expect_line (bob, "tunnel started", NULL, GT_TEST_WAIT_MS));
  }
  {
    g_autoptr (GError) error = NULL;
    g_autoptr (GtTestHttpResponse) r
        = request_close (ports.port, "bob.example.com", GT_TEST_WAIT_MS, &error);

    gt_test_expect_response (r, error, 200);
    gt_test_check_bytes ("bob's whoami", r->body->data, r->body->len, (const guint8 *)"bob-svc", 7);
  }
  g_usleep (300 * 1000);
  load_stop (http);

  /* ...and alice's users were served throughout, by her tunnels, which stayed. */
  m = api_metrics (ports.api_port);
  g_test_message ("%u wrong secrets from %u addresses refused, %u lockouts; bob in after "
                  "%.0f ms; %u requests to alice meanwhile, all served; metrics: %.0f blocked "
                  "addresses",
                  refused, n_addr, locked, (g_get_monotonic_time () - bob_at) / 1e3,
                  load_expect_all_ok (http, 0, "svc-1", "alice during the flood"),
                  metric (m, "gt_lockout_blocked_addresses"));
  g_assert_cmpfloat (metric (m, "gt_lockout_blocked_addresses"), ==, n_addr);
  g_assert_cmpfloat (metric (m, "gt_tunnels{user=\"" CLIENT_ID "\"}"), ==, TUNNELS);
  g_assert_cmpfloat (metric (m, "gt_clients"), ==, 2);
  g_assert_cmpuint (load_count_other (http, flood_at, "svc-1"), ==, 0);
  g_assert_false (gt_test_proc_has_exited (server));
  /* The refused connections are closed; one more socket: bob's tunnel. */
  expect_fd_count (server, server_fds + 1, "after the flood, with bob's tunnel");
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, PATTERN_SIZE);

#define ADD(path, func, data)                                                                      \
  g_test_add ("/gt/integration/chaos/" path, Fixture, data, fixture_setup, func, fixture_teardown)
  ADD ("kill-server", test_kill, GUINT_TO_POINTER (KILL_SERVER));
  ADD ("kill-client", test_kill, GUINT_TO_POINTER (KILL_CLIENT));
  ADD ("kill-both", test_kill, GUINT_TO_POINTER (KILL_BOTH));
  ADD ("half-open", test_half_open, GUINT_TO_POINTER (FALSE));
  ADD ("half-open-at-limit", test_half_open, GUINT_TO_POINTER (TRUE));
  ADD ("slowloris", test_slowloris, NULL);
  ADD ("flood", test_flood, NULL);
#undef ADD

  return gt_test_run ();
}
