/* Integration tests of what GT users expect from gt: GT's options and words, end to end with
 * real gt processes on 127.0.0.1. */
#define G_LOG_DOMAIN "gt-test"

#include <string.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "gt-test-utils.h"

#define PATTERN_SIZE (1024 * 1024)
#define SECRET "s3cret-compat"

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
/* Starting gt */

/* gt with the NULL-terminated arguments; NULL arguments end the list. */
static GtTestProc *
spawn_gt (const char *name, const char *first, va_list ap)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();

  for (const char *a = first; a != NULL; a = va_arg (ap, const char *))
    gt_test_args_add (args, "%s", a);
  return gt_test_spawn_gt (name, args);
}

/* The port of the first "listening on 127.0.0.1:P<note>" line of p. */
static guint16
listening_port (GtTestProc *p, const char *note_re)
{
  g_autofree char *re = g_strdup_printf ("listening on 127\\.0\\.0\\.1:([0-9]+)%s$", note_re);
  g_autofree char *line = gt_test_proc_expect_line (p, re, NULL, GT_TEST_WAIT_MS);

  return (guint16) gt_test_capture_uint (line, re);
}

/* A server (`server` and the arguments); *port_out is its plain listener (addr). */
static GtTestProc *
start_server (guint16 *port_out, const char *first, ...)
{
  GtTestProc *p;
  va_list ap;

  va_start (ap, first);
  p = spawn_gt ("server", first, ap);
  va_end (ap);
  if (port_out != NULL)
    *port_out = listening_port (p, "");
  return p;
}

static GtTestProc *
start_client (const char *name, const char *first, ...)
{
  GtTestProc *p;
  va_list ap;

  va_start (ap, first);
  p = spawn_gt (name, first, ap);
  va_end (ap);
  return p;
}

static void
wait_started (GtTestProc *client)
{
  g_free (gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS));
}

static char *
remote_of (guint16 port)
{
  return g_strdup_printf ("tcp://127.0.0.1:%u", port);
}

static char *
local_of (GtTestHttp *h)
{
  return g_strdup_printf ("http://127.0.0.1:%u", h->port);
}

/* GET path through the server with Host host; the body as a string. */
static char *
get_body (guint16 port, const char *path, const char *host)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) r
    = gt_test_http_request (port, "GET", path, host, NULL, 0, &error);

  gt_test_expect_response (r, error, 200);
  return g_strndup ((const char *) r->body->data, r->body->len);
}

static void
expect_host_seen (guint16 port, const char *host, const char *want)
{
  g_autofree char *got = get_body (port, "/host", host);

  if (g_strcmp0 (got, want) != 0)
    gt_test_fail ("a request for %s reached the local service with Host '%s', want '%s'", host,
                  got, want);
}

/* ------------------------------------------------------------------------------------------ */
/* useLocalAsHTTPHost: the local service sees its own host:port instead of the user's Host,
 * whether the option comes from the command line or from YAML; without it, the user's Host. */

static void
test_use_local_as_http_host (Fixture *f, gconstpointer data)
{
  GtTestHttp *h;
  g_autofree char *local = NULL, *remote = NULL, *config = NULL, *want = NULL;
  GtTestProc *cli, *yaml;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  h = gt_test_http_start ("svc", 0, NULL);
  local = local_of (h);
  want = g_strdup_printf ("127.0.0.1:%u", h->port);
  start_server (&port, "server", "--addr", "127.0.0.1:0", NULL);
  remote = remote_of (port);

  /* Command line: two services of one local server, one rewriting. */
  cli = start_client ("cli", "client", "--id", "cli", "--secret", SECRET, "--remote", remote,
                      "--local", local, "--hostPrefix", "plain", "--local", local, "--hostPrefix",
                      "rewritten", "--useLocalAsHTTPHost", NULL);
  /* YAML: the same, in a file. */
  config = g_strdup_printf ("type: client\n"
                            "options:\n"
                            "  id: yaml\n"
                            "  secret: " SECRET "\n"
                            "  remote: %s\n"
                            "services:\n"
                            "  - local: %s\n"
                            "    hostPrefix: yamlplain\n"
                            "  - local: %s\n"
                            "    hostPrefix: yamlrewritten\n"
                            "    useLocalAsHTTPHost: true\n",
                            remote, local, local);
  {
    g_autofree char *path = gt_test_write_file ("client.yaml", config);

    yaml = start_client ("yaml", "client", "-c", path, NULL);
  }
  wait_started (cli);
  wait_started (yaml);

  for (guint i = 0; i < 3; i++)
    {
      expect_host_seen (port, "rewritten.example.com", want);
      expect_host_seen (port, "plain.example.com", "plain.example.com");
      expect_host_seen (port, "yamlrewritten.example.com:8080", want);
      expect_host_seen (port, "yamlplain.example.com", "yamlplain.example.com");
    }
  /* A body after the rewritten head arrives intact. */
  {
    g_autoptr (GError) error = NULL;
    g_autoptr (GtTestHttpResponse) r = gt_test_http_request (
      port, "POST", "/echo", "rewritten.example.com", gt_test_pattern (), 100000, &error);

    gt_test_expect_response (r, error, 200);
    gt_test_check_bytes ("echo after a rewritten head", r->body->data, r->body->len,
                         gt_test_pattern (), 100000);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* A client without a secret (GT): it makes up a random one. A server that accepts any client
 * takes it and keeps the id for it while it is connected; a server that knows the id refuses it,
 * and the client says how to proceed. */

static void
test_no_secret (Fixture *f, gconstpointer data)
{
  GtTestHttp *h;
  g_autofree char *local = NULL, *remote = NULL, *remote_users = NULL;
  GtTestProc *first, *second, *third, *known, *users;
  guint16 port, port_users;
  guint from = 0;

  GT_TEST_REQUIRE_GT ();
  h = gt_test_http_start ("svc", 0, NULL);
  local = local_of (h);
  start_server (&port, "server", "--addr", "127.0.0.1:0", NULL);
  remote = remote_of (port);

  first = start_client ("first", "client", "--id", "nosecret", "--remote", remote, "--local",
                        local, "--hostPrefix", "web", NULL);
  g_free (gt_test_proc_expect_line (first, "using a random secret for this run", NULL,
                                    GT_TEST_WAIT_MS));
  wait_started (first);
  g_assert_false (gt_test_proc_has_exited (first));
  {
    g_autofree char *body = get_body (port, "/whoami", "web.example.com");

    g_assert_cmpstr (body, ==, "svc");
  }

  /* Another process with the same id has another random secret: not while the first is there
   * (one tunnel, stopped after its first refusal: failed logins count toward the lockout). */
  second = start_client ("second", "client", "--id", "nosecret", "--remoteConnections", "1",
                         "--remote", remote, "--local", local, "--hostPrefix", "web", NULL);
  g_free (gt_test_proc_expect_line (second, "server refused: invalid id or secret \\(code 1\\)$",
                                    &from, GT_TEST_WAIT_MS));
  g_free (gt_test_proc_expect_line (
    second, "no secret of its own .*set options\\.secret \\(--secret\\) to the secret the "
            "server has for id 'nosecret'",
    &from, GT_TEST_WAIT_MS));
  gt_test_proc_stop_cleanly (second);
  g_assert_cmpuint (gt_test_proc_count_matches (second, "tunnel started"), ==, 0);
  {
    g_autofree char *body = get_body (port, "/whoami", "web.example.com");

    g_assert_cmpstr (body, ==, "svc");
  }
  /* Once the first is gone, the id is free again for a new random secret. */
  gt_test_proc_stop_cleanly (first);
  third = start_client ("third", "client", "--id", "nosecret", "--remote", remote, "--local",
                        local, "--hostPrefix", "web", NULL);
  wait_started (third);
  {
    g_autofree char *body = get_body (port, "/whoami", "web.example.com");

    g_assert_cmpstr (body, ==, "svc");
  }

  /* A server with users: the id has a secret there, and the client is told to set it. */
  users = start_server (&port_users, "server", "--addr", "127.0.0.1:0", "--id", "known",
                        "--secret", SECRET, NULL);
  (void) users;
  remote_users = remote_of (port_users);
  known = start_client ("known", "client", "--id", "known", "--remote", remote_users, "--local",
                        local, NULL);
  from = 0;
  g_free (gt_test_proc_expect_line (known, "server refused: invalid id or secret \\(code 1\\)$",
                                    &from, GT_TEST_WAIT_MS));
  g_free (gt_test_proc_expect_line (known, "set options\\.secret \\(--secret\\)", &from,
                                    GT_TEST_WAIT_MS));
}

/* ------------------------------------------------------------------------------------------ */
/* GT-only keys that change nothing here (they tune a GT feature that is off, or are set to GT's
 * default) start quietly: a debug line, no warning at every start. A key that would turn a
 * feature on still warns. */

static void
test_inert_gt_keys (Fixture *f, gconstpointer data)
{
  GtTestHttp *h;
  g_autofree char *local = NULL, *remote = NULL, *config = NULL, *path = NULL;
  GtTestProc *server, *quiet, *loud, *debug;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  h = gt_test_http_start ("svc", 0, NULL);
  local = local_of (h);
  server = start_server (&port, "server", "--addr", "127.0.0.1:0", "--logLevel", "info", "--bbr",
                         "--stunLogLevel", "debug", "--httpMUXHeader", "Host",
                         "--timeoutOnUnidirectionalTraffic=false", "--sentryLevel", "error",
                         "--pprof", NULL);
  remote = remote_of (port);
  config = g_strdup_printf ("type: client\n"
                            "options:\n"
                            "  id: quiet\n"
                            "  secret: " SECRET "\n"
                            "  remote: %s\n"
                            "  webrtcThreadMode: true\n"
                            "  webrtcConnections: 30\n"
                            "  webrtcMinPort: 10000\n"
                            "  webrtcMaxPort: 20000\n"
                            "  webrtcLogLevel: warning\n"
                            "  webrtcConnectionIdleTimeout: 5m\n"
                            "  tcpForwardConnections: 3\n"
                            "  bbr: false\n"
                            "  logFileMaxCount: 7\n"
                            "  sentryDebug: false\n"
                            "  remoteSTUN: []\n"
                            "services:\n"
                            "  - local: %s\n",
                            remote, local);
  path = gt_test_write_file ("client.yaml", config);
  quiet = start_client ("quiet", "client", "-c", path, "--logLevel", "info",
                        "--webrtcThreadMode", "--webrtcMaxPort", "20001", NULL);
  wait_started (quiet);
  {
    g_autofree char *body = get_body (port, "/whoami", "quiet.example.com");

    g_assert_cmpstr (body, ==, "svc");
  }
  g_assert_cmpuint (gt_test_proc_count_matches (quiet, " WARN "), ==, 0);
  /* The server's one warning is the allow-any notice. */
  g_assert_cmpuint (gt_test_proc_count_matches (server, " WARN "), ==, 1);
  g_assert_cmpuint (gt_test_proc_count_matches (server, " WARN .*any client id is accepted"), ==,
                    1);

  /* At debug level the keys are still named. */
  debug = start_client ("debug", "client", "-c", path, "--id", "debug", "--logLevel", "debug",
                        "--webrtcThreadMode", NULL);
  g_free (gt_test_proc_expect_line (
    debug, " DEBUG .*option '--webrtcThreadMode' is ignored: gt has no such setting", NULL,
    GT_TEST_WAIT_MS));
  g_free (gt_test_proc_expect_line (
    debug, " DEBUG .*client\\.yaml:[0-9]+:3: key 'tcpForwardConnections' is ignored", NULL,
    GT_TEST_WAIT_MS));
  wait_started (debug);
  g_assert_cmpuint (gt_test_proc_count_matches (debug, " WARN "), ==, 0);

  /* A key that would change something (a log file) still warns. */
  loud = start_client ("loud", "client", "-c", path, "--id", "loud", "--logLevel", "info",
                       "--logFile", "/nonexistent/gt.log", NULL);
  g_free (gt_test_proc_expect_line (
    loud, " WARN .*option '--logFile' is not supported by this version of gt and is ignored",
    NULL, GT_TEST_WAIT_MS));
  wait_started (loud);
}

/* ------------------------------------------------------------------------------------------ */
/* A listener's host: the same rule for a server alone and under the manager (`gt -c DIR`): an
 * IP address or localhost (127.0.0.1); another name, even one the resolver knows (the machine's
 * own name), is refused at its place in the file. */

static GtTestProc *
spawn_plain (const char *name, const char *dir, const char *first, ...)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autofree char *run = g_build_filename (gt_test_tmpdir (), "run", NULL);
  g_autofree char *run_env = g_strdup_printf ("GT_RUNTIME_DIR=%s", run);
  const char *env[] = { run_env, NULL };
  va_list ap;

  g_assert_cmpint (g_mkdir_with_parents (run, 0700), ==, 0);
  va_start (ap, first);
  for (const char *a = first; a != NULL; a = va_arg (ap, const char *))
    gt_test_args_add (args, "%s", a);
  va_end (ap);
  /* gt_test_binary() rather than NULL: no --logLevel, which the manager would not take. */
  return gt_test_spawn (name, gt_test_binary (), args, dir, env);
}

static void
expect_failed_exit (GtTestProc *p)
{
  if (!gt_test_proc_wait_exit (p, GT_TEST_WAIT_MS))
    gt_test_fail ("%s still runs with a bad listen address", p->name);
  g_assert_cmpint (g_subprocess_get_exit_status (p->proc), !=, 0);
}

static void
test_listener_host_names (Fixture *f, gconstpointer data)
{
  g_autofree char *dir = g_build_filename (gt_test_tmpdir (), "configs", NULL);
  g_autofree char *file = g_build_filename (dir, "server.yaml", NULL);
  const char *host = g_get_host_name ();
  g_autofree char *yaml = NULL, *want = NULL, *esc = NULL;
  GtTestProc *alone, *manager;

  GT_TEST_REQUIRE_GT ();
  if (g_hostname_is_ip_address (host) || g_ascii_strcasecmp (host, "localhost") == 0)
    host = "gt-test.invalid";
  g_assert_cmpint (g_mkdir_with_parents (dir, 0700), ==, 0);
  yaml = g_strdup_printf ("type: server\noptions:\n  addr: %s:0\n", host);
  g_assert_true (g_file_set_contents (file, yaml, -1, NULL));
  want = g_strdup_printf ("%s:0': the host must be an IP address or localhost", host);
  esc = g_regex_escape_string (want, -1);
  g_free (want);
  want = g_strdup_printf ("server\\.yaml:3:9: bad listen address '%s", esc);

  alone = spawn_plain ("alone", dir, "server", "-c", file, NULL);
  expect_failed_exit (alone);
  g_free (gt_test_proc_expect_line (alone, want, NULL, GT_TEST_WAIT_MS));
  manager = spawn_plain ("manager", dir, "-c", dir, NULL);
  expect_failed_exit (manager);
  g_free (gt_test_proc_expect_line (manager, want, NULL, GT_TEST_WAIT_MS));

  /* localhost is 127.0.0.1 for both. */
  g_assert_true (g_file_set_contents (file, "type: server\noptions:\n  addr: localhost:0\n", -1,
                                      NULL));
  alone = spawn_plain ("alone-localhost", dir, "server", "-c", file, NULL);
  g_free (gt_test_proc_expect_line (alone, "listening on 127\\.0\\.0\\.1:[0-9]+$", NULL,
                                    GT_TEST_WAIT_MS));
  gt_test_proc_stop_cleanly (alone);
  manager = spawn_plain ("manager-localhost", dir, "-c", dir, NULL);
  g_free (gt_test_proc_expect_line (manager, "listening on 127\\.0\\.0\\.1:[0-9]+$", NULL,
                                    GT_TEST_WAIT_MS));
  gt_test_proc_stop_cleanly (manager);
}

/* ------------------------------------------------------------------------------------------ */

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, PATTERN_SIZE);

#define ADD(path, func)                                                                         \
  g_test_add ("/gt/integration/compat/" path, Fixture, NULL, fixture_setup, func,              \
              fixture_teardown)
  ADD ("use-local-as-http-host", test_use_local_as_http_host);
  ADD ("no-secret", test_no_secret);
  ADD ("inert-gt-keys", test_inert_gt_keys);
  ADD ("listener-host-names", test_listener_host_names);
#undef ADD

  return gt_test_run ();
}
