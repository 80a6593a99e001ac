/* Integration tests of what GT users expect from gt: GT's options and words, end to end with
 * real gt processes on 127.0.0.1. */
#define G_LOG_DOMAIN "gt-test"

#include <string.h>

#include <gio/gio.h>

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

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, PATTERN_SIZE);

#define ADD(path, func)                                                                         \
  g_test_add ("/gt/integration/compat/" path, Fixture, NULL, fixture_setup, func,              \
              fixture_teardown)
  ADD ("use-local-as-http-host", test_use_local_as_http_host);
#undef ADD

  return gt_test_run ();
}
