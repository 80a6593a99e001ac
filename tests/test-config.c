/* test-config.c: unit tests of the GT-compatible configuration model (YAML, command line). */
#include "config.h"

#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "gt-config.h"
#include "gt-config-private.h" /* the key tables, to check each row has a test */

/* The source directory of this file: tests/meson.build sets GT_TEST_FILES and GT_SOURCE_DIR;
 * without them (running the binary by hand) __FILE__ is tried, relative to the current
 * directory and to the build directory (the parent of the test binary's directory). */
static char *
source_tests_dir (void)
{
  g_autofree char *dir = g_path_get_dirname (__FILE__);
  g_autofree char *from_build = NULL;

  if (g_path_is_absolute (dir) || g_file_test (dir, G_FILE_TEST_IS_DIR))
    return g_steal_pointer (&dir);
  from_build = g_build_filename (g_test_get_dir (G_TEST_BUILT), "..", dir, NULL);
  return g_steal_pointer (&from_build);
}

/* tests/files/config/NAME */
static char *
test_file (const char *name)
{
  const char *dir = g_getenv ("GT_TEST_FILES");
  g_autofree char *src_dir = NULL;

  if (dir != NULL)
    return g_build_filename (dir, "config", name, NULL);
  src_dir = source_tests_dir ();
  return g_build_filename (src_dir, "files", "config", name, NULL);
}

/* data/NAME of the source tree. */
static char *
data_file (const char *name)
{
  const char *dir = g_getenv ("GT_SOURCE_DIR");
  g_autofree char *src_dir = NULL;

  if (dir != NULL)
    return g_build_filename (dir, "data", name, NULL);
  src_dir = source_tests_dir ();
  return g_build_filename (src_dir, "..", "data", name, NULL);
}

static gboolean
warnings_contain (GPtrArray *warnings, const char *text)
{
  for (guint i = 0; i < warnings->len; i++)
    {
      g_autofree char *s = gt_config_issue_to_string (g_ptr_array_index (warnings, i));
      if (strcmp (s, text) == 0)
        return TRUE;
    }
  return FALSE;
}

static void
dump_warnings (GPtrArray *warnings)
{
  for (guint i = 0; i < warnings->len; i++)
    {
      g_autofree char *s = gt_config_issue_to_string (g_ptr_array_index (warnings, i));
      g_test_message ("warning: %s", s);
    }
}

static const GtRemote *
remote_at (const GtClientConfig *config, guint i)
{
  g_assert_cmpuint (i, <, config->remotes->len);
  return g_ptr_array_index (config->remotes, i);
}

static const GtServiceConfig *
service_at (const GtClientConfig *config, guint i)
{
  g_assert_cmpuint (i, <, config->services->len);
  return g_ptr_array_index (config->services, i);
}

static const GtPortRange *
range_at (GArray *ranges, guint i)
{
  g_assert_nonnull (ranges);
  g_assert_cmpuint (i, <, ranges->len);
  return &g_array_index (ranges, GtPortRange, i);
}

/* ------------------------------------------------------------------------------------------ */

static void
test_server_defaults (void)
{
  g_autoptr (GtServerConfig) config = gt_server_config_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *path = test_file ("empty.yaml");

  g_assert_null (config->addr);
  g_assert_null (config->config_path);
  g_assert_cmpuint (config->timeout_ms, ==, 90000);
  g_assert_cmpstr (config->log_level, ==, "info");
  g_assert_cmpuint (config->users->len, ==, 0);
  g_assert_cmpuint (config->tcp_ranges->len, ==, 0);
  g_assert_cmpuint (config->tcp_number, ==, 0);
  g_assert_cmpuint (config->connections, ==, 10);
  g_assert_cmpuint (config->max_handshake_options, ==, 600);
  g_assert_false (config->allow_any_client);
  g_assert_cmpuint (config->warnings->len, ==, 0);

  /* An empty file keeps every default. */
  g_assert_true (gt_server_config_load_file (config, path, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (config->config_path, ==, path);
  g_assert_cmpuint (config->timeout_ms, ==, 90000);
  g_assert_cmpuint (config->connections, ==, 10);
  g_assert_cmpuint (config->warnings->len, ==, 0);

  /* Validation needs a listener. */
  g_assert_false (gt_server_config_validate (config, NULL, &error));
  g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_INVALID);
  {
    g_autofree char *expected = g_strdup_printf ("%s: no listener: set options.addr, tlsAddr, "
                                                 "sniAddr or quicAddr",
                                                 path);
    g_assert_cmpstr (error->message, ==, expected);
  }
}

static void
test_client_defaults (void)
{
  g_autoptr (GtClientConfig) config = gt_client_config_new ();
  g_autoptr (GError) error = NULL;

  g_assert_null (config->id);
  g_assert_null (config->secret);
  g_assert_cmpuint (config->remotes->len, ==, 0);
  g_assert_cmpuint (config->remote_connections, ==, 3);
  g_assert_cmpuint (config->remote_idle_connections, ==, 1);
  g_assert_cmpuint (config->remote_timeout_ms, ==, 45000);
  g_assert_cmpuint (config->reconnect_delay_ms, ==, 5000);
  g_assert_cmpstr (config->log_level, ==, "info");
  g_assert_cmpuint (config->services->len, ==, 0);

  g_assert_true (gt_client_config_load_data (config, "", 0, NULL, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (gt_client_config_load_data (config, "# only a comment\n", -1, NULL, NULL,
                                             &error));
  g_assert_no_error (error);
  g_assert_cmpuint (config->remote_timeout_ms, ==, 45000);

  /* Minimal client: only the service defaults are left to check. */
  g_assert_true (gt_client_config_load_data (config,
                                             "options: {id: x, secret: y, remote: h}\n"
                                             "services: [{local: 'http://a'}, "
                                             "{local: 'tcp://b:1', remoteTCPPort: 5}, "
                                             "{local: 'tcp://b:2'}]\n",
                                             -1, "min.yaml", NULL, &error));
  g_assert_no_error (error);
  g_assert_true (gt_client_config_validate (config, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (remote_at (config, 0)->scheme, ==, "tcp");
  g_assert_cmpstr (remote_at (config, 0)->host, ==, "h");
  g_assert_cmpuint (remote_at (config, 0)->port, ==, 80);
  g_assert_cmpint (service_at (config, 0)->kind, ==, GT_SERVICE_KIND_HTTP);
  g_assert_cmpstr (service_at (config, 0)->local_host, ==, "a");
  g_assert_cmpuint (service_at (config, 0)->local_port, ==, 80);
  g_assert_cmpstr (service_at (config, 0)->host_prefix, ==, "x");
  g_assert_false (service_at (config, 0)->use_local_as_http_host);
  g_assert_cmpuint (service_at (config, 0)->local_timeout_ms, ==, 120000);
  g_assert_false (service_at (config, 0)->remote_tcp_random);
  g_assert_cmpuint (service_at (config, 1)->remote_tcp_port, ==, 5);
  g_assert_false (service_at (config, 1)->remote_tcp_random);
  g_assert_null (service_at (config, 1)->host_prefix);
  g_assert_cmpuint (service_at (config, 2)->remote_tcp_port, ==, 0);
  g_assert_true (service_at (config, 2)->remote_tcp_random);
}

static void
test_server_gt_example (void)
{
  g_autoptr (GtServerConfig) config = gt_server_config_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *path = test_file ("server-gt.yaml");
  const GtUserConfig *user;
  g_autofree char *w1 = NULL;

  g_assert_true (gt_server_config_load_file (config, path, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (gt_server_config_validate (config, NULL, &error));
  g_assert_no_error (error);
  dump_warnings (config->warnings);

  g_assert_cmpstr (config->addr, ==, "0.0.0.0:80");
  g_assert_cmpuint (config->timeout_ms, ==, 90000);
  g_assert_cmpstr (config->log_level, ==, "debug");
  g_assert_cmpuint (config->tcp_number, ==, 10);
  g_assert_cmpuint (config->connections, ==, 20);
  g_assert_cmpuint (config->max_handshake_options, ==, 100);
  g_assert_true (config->allow_any_client);
  g_assert_cmpuint (config->tcp_ranges->len, ==, 1);
  g_assert_cmpuint (range_at (config->tcp_ranges, 0)->first, ==, 50000);
  g_assert_cmpuint (range_at (config->tcp_ranges, 0)->last, ==, 65535);

  g_assert_cmpuint (config->users->len, ==, 2);
  user = g_ptr_array_index (config->users, 0);
  g_assert_cmpstr (user->id, ==, "id1");
  g_assert_cmpstr (user->secret, ==, "secret1");
  g_assert_cmpuint (user->line, ==, 5);
  g_assert_cmpuint (user->column, ==, 3);
  g_assert_cmpint (user->tcp_number, ==, 3);
  g_assert_cmpuint (user->tcp_ranges->len, ==, 2);
  g_assert_cmpuint (range_at (user->tcp_ranges, 0)->first, ==, 10000);
  g_assert_cmpuint (range_at (user->tcp_ranges, 0)->last, ==, 10100);
  g_assert_cmpuint (range_at (user->tcp_ranges, 1)->first, ==, 10200);
  g_assert_cmpuint (range_at (user->tcp_ranges, 1)->last, ==, 10200);
  user = gt_server_config_find_user (config, "id2");
  g_assert_nonnull (user);
  g_assert_cmpstr (user->secret, ==, "secret2");
  g_assert_null (user->tcp_ranges);
  g_assert_cmpint (user->tcp_number, ==, -1);
  g_assert_null (gt_server_config_find_user (config, "id3"));

  g_assert_cmpuint (user->speed, ==, 1024);
  g_assert_cmpint (user->connections, ==, -1);
  g_assert_cmpstr (config->tls_addr, ==, "0.0.0.0:443");
  g_assert_cmpstr (config->cert_file, ==, "/etc/gt/cert.pem");
  g_assert_cmpstr (config->key_file, ==, "/etc/gt/key.pem");
  g_assert_cmpstr (config->tls_version, ==, "tls1.2");

  /* GT keys we do not implement, with their place; sentryLevel only tunes sentryDSN (absent),
   * so it changes nothing: a debug note, not a warning. */
  g_assert_cmpuint (config->warnings->len, ==, 1);
  w1 = g_strdup_printf ("%s:27:3: key 'sentryLevel' is ignored: it only tunes sentryDSN, which "
                        "this version of gt does not support",
                        path);
  g_assert_true (warnings_contain (config->warnings, w1));
  g_assert_true (((GtConfigIssue *) config->warnings->pdata[0])->debug);
}

/* GT keys that change nothing here are debug notes; keys that would turn a feature on warn. */
static void
test_unsupported_levels (void)
{
  static const struct
  {
    const char *yaml;    /* under options: of a client */
    const char *message; /* after "c.yaml:2:3: " */
    gboolean debug;
  } cases[] = {
    { "webrtcThreadMode: true",
      "key 'webrtcThreadMode' is ignored: gt has no such setting, it changes nothing", TRUE },
    { "tcpForwardConnections: 3",
      "key 'tcpForwardConnections' is ignored: gt has no such setting, it changes nothing", TRUE },
    { "bbr: true", "key 'bbr' is ignored: GT does not use it either", TRUE },
    { "logFile: ''",
      "key 'logFile' is not supported by this version of gt; its value is GT's default, so "
      "it changes nothing",
      TRUE },
    { "logFile: /tmp/x.log", "key 'logFile' is not supported by this version of gt and is ignored",
      FALSE },
    { "webrtcThreadMode: {a: 1}",
      "key 'webrtcThreadMode' is not supported by this version of gt and is ignored (it should "
      "be a scalar, not a mapping)",
      FALSE },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GtClientConfig) config = gt_client_config_new ();
      g_autoptr (GError) error = NULL;
      g_autofree char *yaml = g_strdup_printf ("options:\n  %s\n", cases[i].yaml);
      g_autofree char *want = g_strdup_printf ("c.yaml:2:3: %s", cases[i].message);
      GtConfigIssue *issue;

      g_test_message ("%s", cases[i].yaml);
      g_assert_true (gt_client_config_load_data (config, yaml, -1, "c.yaml", NULL, &error));
      g_assert_no_error (error);
      dump_warnings (config->warnings);
      g_assert_cmpuint (config->warnings->len, ==, 1);
      issue = config->warnings->pdata[0];
      g_assert_true (warnings_contain (config->warnings, want));
      g_assert_cmpint (issue->debug, ==, cases[i].debug);
    }

  /* The server's command line: a key at GT's default or with no use in gt changes nothing; a
   * key that would turn a feature on warns. */
  {
    g_autoptr (GtServerConfig) config = gt_server_config_new ();
    g_autoptr (GError) error = NULL;
    char *argv[] = { "--timeoutOnUnidirectionalTraffic=false", "--bbr",
                     "--timeoutOnUnidirectionalTraffic", NULL };

    g_assert_true (gt_server_config_apply_args (config, 3, argv, &error));
    g_assert_no_error (error);
    dump_warnings (config->warnings);
    g_assert_cmpuint (config->warnings->len, ==, 3);
    g_assert_true (((GtConfigIssue *) config->warnings->pdata[0])->debug);
    g_assert_true (((GtConfigIssue *) config->warnings->pdata[1])->debug);
    g_assert_true (warnings_contain (config->warnings,
                                     "command line: option '--bbr' is ignored: gt has no such "
                                     "setting, it changes nothing"));
    g_assert_false (((GtConfigIssue *) config->warnings->pdata[2])->debug);
  }
  /* The client's command line too. */
  {
    g_autoptr (GtClientConfig) config = gt_client_config_new ();
    g_autoptr (GError) error = NULL;
    char *argv[] = { "--webrtcThreadMode", "--logFile", "/tmp/gt.log", NULL };

    g_assert_true (gt_client_config_apply_args (config, 3, argv, &error));
    g_assert_no_error (error);
    dump_warnings (config->warnings);
    g_assert_cmpuint (config->warnings->len, ==, 2);
    g_assert_true (((GtConfigIssue *) config->warnings->pdata[0])->debug);
    g_assert_false (((GtConfigIssue *) config->warnings->pdata[1])->debug);
  }
}

static void
test_client_gt_example (void)
{
  g_autoptr (GtClientConfig) config = gt_client_config_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *path = test_file ("client-gt.yaml");
  g_autofree char *warning = NULL;
  const GtServiceConfig *s;

  g_assert_true (gt_client_config_load_file (config, path, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (gt_client_config_validate (config, NULL, &error));
  g_assert_no_error (error);

  g_assert_cmpstr (config->id, ==, "id1");
  g_assert_cmpstr (config->secret, ==, "secret1");
  g_assert_cmpuint (config->remotes->len, ==, 3);
  g_assert_cmpstr (remote_at (config, 0)->host, ==, "1.1.1.1");
  g_assert_cmpuint (remote_at (config, 0)->port, ==, 80);
  g_assert_cmpstr (remote_at (config, 1)->host, ==, "example.com");
  g_assert_cmpuint (remote_at (config, 1)->port, ==, 8080);
  g_assert_cmpstr (remote_at (config, 1)->scheme, ==, "tcp");
  g_assert_cmpstr (remote_at (config, 2)->host, ==, "example.org");
  g_assert_cmpuint (remote_at (config, 2)->port, ==, 80);
  g_assert_cmpuint (config->remote_connections, ==, 5);
  g_assert_cmpuint (config->remote_idle_connections, ==, 2);
  g_assert_cmpuint (config->remote_timeout_ms, ==, 30000);
  g_assert_cmpuint (config->reconnect_delay_ms, ==, 2000); /* bare integer = seconds */
  g_assert_cmpstr (config->log_level, ==, "warn");

  g_assert_cmpuint (config->services->len, ==, 5);
  s = service_at (config, 0);
  g_assert_cmpint (s->kind, ==, GT_SERVICE_KIND_HTTP);
  g_assert_cmpstr (s->local_url, ==, "http://127.0.0.1:80");
  g_assert_cmpstr (s->local_host, ==, "127.0.0.1");
  g_assert_cmpuint (s->local_port, ==, 80);
  g_assert_cmpstr (s->host_prefix, ==, "blog"); /* stored lower-case */
  g_assert_true (s->use_local_as_http_host);
  g_assert_cmpuint (s->local_timeout_ms, ==, 60000);
  g_assert_cmpuint (s->line, ==, 3);
  g_assert_cmpuint (s->column, ==, 5);
  s = service_at (config, 1);
  g_assert_cmpint (s->kind, ==, GT_SERVICE_KIND_HTTPS);
  g_assert_cmpuint (s->local_port, ==, 443);
  g_assert_cmpstr (s->host_prefix, ==, "id1"); /* first prefix-less http/https service */
  s = service_at (config, 2);
  g_assert_cmpint (s->kind, ==, GT_SERVICE_KIND_TCP);
  g_assert_cmpuint (s->local_port, ==, 22);
  g_assert_cmpuint (s->remote_tcp_port, ==, 10022);
  g_assert_false (s->remote_tcp_random);
  g_assert_null (s->host_prefix);
  s = service_at (config, 3);
  g_assert_cmpuint (s->remote_tcp_port, ==, 0);
  g_assert_true (s->remote_tcp_random);
  s = service_at (config, 4);
  g_assert_cmpstr (s->local_host, ==, "::1");
  g_assert_cmpuint (s->local_port, ==, 8080);
  g_assert_cmpstr (s->host_prefix, ==, "v6");

  g_assert_cmpstr (config->remote_cert, ==,
                   "sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789");
  g_assert_false (config->remote_cert_insecure);
  g_assert_cmpuint (service_at (config, 0)->proxy_protocol, ==, 0);
  g_assert_null (remote_at (config, 0)->path);

  /* Every key of GT's example is one gt implements now. */
  g_assert_cmpuint (config->warnings->len, ==, 0);
  g_assert_cmpstr (config->remote_stun[0], ==, "stun:127.0.0.1:3478");
  g_assert_null (config->remote_stun[1]);
  g_assert_cmpstr (config->remote_api, ==, "http://127.0.0.1:1/api");
}

static void
test_demo_files (void)
{
  g_autoptr (GtServerConfig) server = gt_server_config_new ();
  g_autoptr (GtClientConfig) client = gt_client_config_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *server_path = data_file ("server.yaml");
  g_autofree char *client_path = data_file ("client.yaml");
  const GtUserConfig *user;

  g_assert_cmpint (gt_config_detect_kind_file (server_path, &error), ==, GT_CONFIG_KIND_SERVER);
  g_assert_no_error (error);
  g_assert_cmpint (gt_config_detect_kind_file (client_path, &error), ==, GT_CONFIG_KIND_CLIENT);
  g_assert_no_error (error);

  g_assert_true (gt_server_config_load_file (server, server_path, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (gt_server_config_validate (server, NULL, &error));
  g_assert_no_error (error);
  dump_warnings (server->warnings);
  g_assert_cmpuint (server->warnings->len, ==, 0);
  g_assert_cmpstr (server->addr, ==, "127.0.0.1:8080");
  g_assert_cmpuint (server->timeout_ms, ==, 90000);
  user = gt_server_config_find_user (server, "demo");
  g_assert_nonnull (user);
  g_assert_cmpstr (user->secret, ==, "demo-secret-change-me");
  g_assert_cmpuint (range_at (user->tcp_ranges, 0)->first, ==, 20000);
  g_assert_cmpuint (range_at (user->tcp_ranges, 0)->last, ==, 20100);

  g_assert_true (gt_client_config_load_file (client, client_path, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (gt_client_config_validate (client, NULL, &error));
  g_assert_no_error (error);
  dump_warnings (client->warnings);
  g_assert_cmpuint (client->warnings->len, ==, 0);
  g_assert_cmpstr (client->id, ==, "demo");
  g_assert_cmpstr (client->secret, ==, user->secret);
  g_assert_cmpstr (remote_at (client, 0)->host, ==, "127.0.0.1");
  g_assert_cmpuint (remote_at (client, 0)->port, ==, 8080);
  g_assert_cmpuint (client->services->len, ==, 2);
  g_assert_cmpstr (service_at (client, 0)->host_prefix, ==, "demo");
  g_assert_cmpuint (service_at (client, 0)->local_port, ==, 8081);
  g_assert_cmpint (service_at (client, 1)->kind, ==, GT_SERVICE_KIND_TCP);
  g_assert_cmpuint (service_at (client, 1)->remote_tcp_port, ==, 20001);
  /* The demo's tcp port lies in the demo user's range. */
  g_assert_cmpuint (service_at (client, 1)->remote_tcp_port, >=,
                    range_at (user->tcp_ranges, 0)->first);
  g_assert_cmpuint (service_at (client, 1)->remote_tcp_port, <=,
                    range_at (user->tcp_ranges, 0)->last);
}

static void
test_unknown_key (void)
{
  g_autoptr (GtServerConfig) config = gt_server_config_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *path = test_file ("server-unknown-key.yaml");
  g_autofree char *w1 = NULL, *w2 = NULL;
  const GtConfigIssue *issue;

  g_assert_true (gt_server_config_load_file (config, path, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (config->addr, ==, "0.0.0.0:8080");
  g_assert_cmpuint (config->warnings->len, ==, 2);
  issue = g_ptr_array_index (config->warnings, 0);
  g_assert_cmpstr (issue->file, ==, path);
  g_assert_cmpuint (issue->line, ==, 4);
  g_assert_cmpuint (issue->column, ==, 3);
  g_assert_cmpstr (issue->message, ==, "unknown key 'frobnicate'");
  w1 = g_strdup_printf ("%s:4:3: unknown key 'frobnicate'", path);
  w2 = g_strdup_printf ("%s:8:5: unknown key 'colour'", path);
  g_assert_true (warnings_contain (config->warnings, w1));
  g_assert_true (warnings_contain (config->warnings, w2));
  g_assert_true (gt_server_config_validate (config, NULL, &error));
  g_assert_no_error (error);
  /* The secret never appears in a warning. */
  for (guint i = 0; i < config->warnings->len; i++)
    {
      g_autofree char *s = gt_config_issue_to_string (g_ptr_array_index (config->warnings, i));
      g_assert_null (strstr (s, "alice-secret"));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Bad files: the exact "FILE:LINE:COLUMN: message". */

typedef struct
{
  const char *file;
  GtConfigKind kind;
  gboolean at_validate; /* the error comes from validate(), not load */
  GtConfigErrorEnum code;
  guint line, column;
  const char *message;
} BadFile;

static const BadFile bad_files[] = {
  { "bad-type.yaml", GT_CONFIG_KIND_SERVER, FALSE, GT_CONFIG_ERROR_TYPE, 5, 5,
    "'timeout' must be a scalar, not a mapping" },
  { "bad-port.yaml", GT_CONFIG_KIND_CLIENT, FALSE, GT_CONFIG_ERROR_VALUE, 3, 20,
    "bad port '70000'" },
  { "bad-range.yaml", GT_CONFIG_KIND_SERVER, FALSE, GT_CONFIG_ERROR_VALUE, 3, 12,
    "bad port range '20000-10000': first port is greater than last" },
  { "overlap.yaml", GT_CONFIG_KIND_SERVER, TRUE, GT_CONFIG_ERROR_INVALID, 13, 16,
    "tcp range 10000-10010 of user 'b' overlaps the range of user 'a'" },
  { "two-http.yaml", GT_CONFIG_KIND_CLIENT, TRUE, GT_CONFIG_ERROR_INVALID, 8, 5,
    "two http services without hostPrefix: give each a hostPrefix" },
  { "bad-duration.yaml", GT_CONFIG_KIND_CLIENT, FALSE, GT_CONFIG_ERROR_VALUE, 5, 18,
    "bad duration 'abc' (examples: 90s, 1m30s, 250ms)" },
  { "bad-scheme.yaml", GT_CONFIG_KIND_CLIENT, FALSE, GT_CONFIG_ERROR_VALUE, 7, 7,
    "remote scheme 'sctp' is not supported by this version" },
  { "syntax.yaml", GT_CONFIG_KIND_SERVER, FALSE, GT_CONFIG_ERROR_SYNTAX, 4, 2,
    "YAML syntax error: did not find expected key (while parsing a block mapping started at "
    "line 1, column 1)" },
  { "duplicate.yaml", GT_CONFIG_KIND_SERVER, FALSE, GT_CONFIG_ERROR_INVALID, 5, 3,
    "duplicate key 'addr'" },
};

static void
test_bad_file (gconstpointer data)
{
  const BadFile *bad = data;
  g_autofree char *path = test_file (bad->file);
  g_autofree char *expected = g_strdup_printf ("%s:%u:%u: %s", path, bad->line, bad->column,
                                               bad->message);
  g_autoptr (GError) error = NULL;
  GtConfigIssue *issue = NULL;
  gboolean ok;

  if (bad->kind == GT_CONFIG_KIND_SERVER)
    {
      g_autoptr (GtServerConfig) config = gt_server_config_new ();
      ok = gt_server_config_load_file (config, path, &issue, &error);
      if (bad->at_validate)
        {
          g_assert_true (ok);
          g_assert_no_error (error);
          ok = gt_server_config_validate (config, &issue, &error);
        }
    }
  else
    {
      g_autoptr (GtClientConfig) config = gt_client_config_new ();
      ok = gt_client_config_load_file (config, path, &issue, &error);
      if (bad->at_validate)
        {
          g_assert_true (ok);
          g_assert_no_error (error);
          ok = gt_client_config_validate (config, &issue, &error);
        }
    }
  g_assert_false (ok);
  g_assert_error (error, GT_CONFIG_ERROR, (gint) bad->code);
  g_assert_cmpstr (error->message, ==, expected);
  g_assert_nonnull (issue);
  g_assert_cmpstr (issue->file, ==, path);
  g_assert_cmpuint (issue->line, ==, bad->line);
  g_assert_cmpuint (issue->column, ==, bad->column);
  g_assert_cmpstr (issue->message, ==, bad->message);
  gt_config_issue_free (issue);
}

/* Inline documents: each an error at a place. */
typedef struct
{
  GtConfigKind kind;
  const char *yaml;
  const char *expected; /* with FILE = "t.yaml" */
} BadData;

static const BadData bad_data[] = {
  { GT_CONFIG_KIND_SERVER, "options:\n  addr: 0\n  connections: -1\n",
    "t.yaml:3:16: bad number '-1': must not be negative" },
  { GT_CONFIG_KIND_SERVER, "options:\n  addr: 80\n  allowAnyClient: maybe\n",
    "t.yaml:3:19: bad boolean 'maybe' (use true/false, yes/no or on/off)" },
  { GT_CONFIG_KIND_SERVER, "options:\n  addr: 127.0.0.1:65536\n",
    "t.yaml:2:9: bad listen address '127.0.0.1:65536': bad port '65536'" },
  { GT_CONFIG_KIND_SERVER, "options:\n  addr: [80]\n",
    "t.yaml:2:9: 'addr' must be a scalar, not a list" },
  { GT_CONFIG_KIND_SERVER, "options:\n  maxHandShakeOptions: 65536\n",
    "t.yaml:2:24: number '65536' is too large (at most 65535)" },
  { GT_CONFIG_KIND_SERVER, "options:\n  logLevel: loud\n",
    "t.yaml:2:13: bad log level 'loud' (use trace, debug, info, warn, error, fatal, panic or "
    "disable)" },
  { GT_CONFIG_KIND_SERVER, "users: [a, b]\n", "t.yaml:1:8: 'users' must be a mapping, not a list" },
  { GT_CONFIG_KIND_SERVER, "tcp:\n  - range: 0-10\n", "t.yaml:2:12: bad port range '0-10'" },
  { GT_CONFIG_KIND_SERVER, "tcp: {range: 1-2}\n",
    "t.yaml:1:6: 'tcp' must be a list, not a mapping" },
  { GT_CONFIG_KIND_SERVER, "type: client\n",
    "t.yaml:1:7: type is 'client' but a server configuration was expected" },
  { GT_CONFIG_KIND_SERVER, "type: proxy\n",
    "t.yaml:1:7: unknown type 'proxy' (expected server or client)" },
  { GT_CONFIG_KIND_SERVER, "- a\n- b\n",
    "t.yaml:1:1: the top level must be a mapping, not a list" },
  { GT_CONFIG_KIND_SERVER, "users:\n  a:\n    secret: {x: 1}\n",
    "t.yaml:3:13: 'secret' must be a scalar, not a mapping" },
  { GT_CONFIG_KIND_CLIENT, "services:\n  - local: ftp://x\n",
    "t.yaml:2:12: bad local URL 'ftp://x': the scheme must be http://, https://, tcp:// or "
    "udp://" },
  { GT_CONFIG_KIND_CLIENT, "services:\n  - local: tcp://127.0.0.1\n",
    "t.yaml:2:12: bad local URL 'tcp://127.0.0.1': tcp needs a port" },
  { GT_CONFIG_KIND_CLIENT, "services:\n  - local: http://h:0\n", "t.yaml:2:12: bad port '0'" },
  { GT_CONFIG_KIND_CLIENT, "services:\n  - hostPrefix: a\n",
    "t.yaml:2:5: service without 'local'" },
  { GT_CONFIG_KIND_CLIENT, "services:\n  - local: http://h\n    hostPrefix: a.b\n",
    "t.yaml:3:17: bad host prefix 'a.b': use 1 to 63 letters, digits or '-'" },
  { GT_CONFIG_KIND_CLIENT, "services: http://h\n",
    "t.yaml:1:11: 'services' must be a list, not a scalar" },
  { GT_CONFIG_KIND_CLIENT, "options:\n  remote: tcp://h:0\n", "t.yaml:2:11: bad port '0'" },
  { GT_CONFIG_KIND_CLIENT, "options:\n  remote: sctp://h\n",
    "t.yaml:2:11: remote scheme 'sctp' is not supported by this version" },
  { GT_CONFIG_KIND_CLIENT, "options:\n  remote: tls://h/path\n",
    "t.yaml:2:11: bad remote 'tls://h/path'" },
  { GT_CONFIG_KIND_CLIENT, "options:\n  remote: 'ws://h/a b'\n",
    "t.yaml:2:11: bad remote 'ws://h/a b': bad path" },
  { GT_CONFIG_KIND_CLIENT, "options:\n  remoteTimeout: -5s\n",
    "t.yaml:2:18: bad duration '-5s' (examples: 90s, 1m30s, 250ms)" },
  { GT_CONFIG_KIND_CLIENT, "options:\n  id: \"a\\0b\"\n", "t.yaml:2:7: 'id' contains a NUL byte" },
  { GT_CONFIG_KIND_CLIENT, "options: {id: a, id: b}\n", "t.yaml:1:18: duplicate key 'id'" },
  { GT_CONFIG_KIND_CLIENT, "options:\n  [a]: b\n",
    "t.yaml:2:3: keys of 'options' must be scalars" },
  { GT_CONFIG_KIND_SERVER, "options:\n  proxyProtocolTrustedCIDRs: [10.0.0.0/8, 10.0.0.0/33]\n",
    "t.yaml:2:43: bad CIDR or address '10.0.0.0/33' (examples: 10.0.0.0/8, 192.168.1.7, "
    "fd00::/8)" },
  { GT_CONFIG_KIND_SERVER, "options:\n  proxyProtocolTrustedCIDRs: example.org\n",
    "t.yaml:2:30: bad CIDR or address 'example.org' (examples: 10.0.0.0/8, 192.168.1.7, "
    "fd00::/8)" },
  { GT_CONFIG_KIND_SERVER, "options:\n  authAPI: ftp://auth.example.org/\n",
    "t.yaml:2:12: bad authAPI URL 'ftp://auth.example.org/': it must start with http:// or "
    "https://" },
  { GT_CONFIG_KIND_SERVER, "options:\n  authAPI: 'http:///check'\n",
    "t.yaml:2:12: bad authAPI URL 'http:///check': it has no host" },
  { GT_CONFIG_KIND_SERVER, "options:\n  wsPath: tunnel\n",
    "t.yaml:2:11: bad wsPath 'tunnel': it must start with '/' and contain no space or '#'" },
  { GT_CONFIG_KIND_SERVER, "options:\n  speed: 4294967296\n",
    "t.yaml:2:10: number '4294967296' is too large (at most 4294967295)" },
  { GT_CONFIG_KIND_SERVER, "options:\n  apiAddr: '127.0.0.1:x'\n",
    "t.yaml:2:12: bad listen address '127.0.0.1:x': bad port 'x'" },
  { GT_CONFIG_KIND_SERVER, "host:\n  number: -2\n",
    "t.yaml:2:11: bad number '-2': must not be negative" },
  { GT_CONFIG_KIND_SERVER, "host:\n  withID: sometimes\n",
    "t.yaml:2:11: bad boolean 'sometimes' (use true/false, yes/no or on/off)" },
  { GT_CONFIG_KIND_SERVER, "host: [a]\n", "t.yaml:1:7: 'host' must be a mapping, not a list" },
  { GT_CONFIG_KIND_SERVER, "users:\n  u:\n    connections: many\n",
    "t.yaml:3:18: bad number 'many'" },
  { GT_CONFIG_KIND_CLIENT, "services:\n  - local: http://h\n    proxyProtocol: v3\n",
    "t.yaml:3:20: bad proxyProtocol 'v3' (use v1 or v2)" },
  { GT_CONFIG_KIND_CLIENT, "options:\n  remoteCert: sha256:abcd\n",
    "t.yaml:2:15: bad remoteCert pin 'sha256:abcd': use sha256: followed by 64 hex digits "
    "(colons allowed)" },
  { GT_CONFIG_KIND_CLIENT, "options:\n  remoteCertInsecure: 2\n",
    "t.yaml:2:23: bad boolean '2' (use true/false, yes/no or on/off)" },
  { GT_CONFIG_KIND_CLIENT, "options: [\n", NULL }, /* syntax error, place checked loosely */
};

static void
test_bad_data (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (bad_data); i++)
    {
      const BadData *bad = &bad_data[i];
      g_autoptr (GError) error = NULL;
      gboolean ok;

      if (bad->kind == GT_CONFIG_KIND_SERVER)
        {
          g_autoptr (GtServerConfig) config = gt_server_config_new ();
          ok = gt_server_config_load_data (config, bad->yaml, -1, "t.yaml", NULL, &error);
        }
      else
        {
          g_autoptr (GtClientConfig) config = gt_client_config_new ();
          ok = gt_client_config_load_data (config, bad->yaml, -1, "t.yaml", NULL, &error);
        }
      g_test_message ("%s", bad->yaml);
      g_assert_false (ok);
      g_assert_nonnull (error);
      g_assert_true (error->domain == GT_CONFIG_ERROR);
      if (bad->expected != NULL)
        g_assert_cmpstr (error->message, ==, bad->expected);
      else
        g_assert_true (g_str_has_prefix (error->message, "t.yaml:2:1: YAML syntax error: "));
    }
}

static void
test_missing_file (void)
{
  g_autoptr (GtServerConfig) config = gt_server_config_new ();
  g_autoptr (GError) error = NULL;
  GtConfigIssue *issue = NULL;

  g_assert_false (gt_server_config_load_file (config, "/nonexistent/gt.yaml", &issue, &error));
  g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_IO);
  g_assert_true (g_str_has_prefix (error->message, "/nonexistent/gt.yaml: cannot read the file: "));
  g_assert_nonnull (issue);
  g_assert_cmpuint (issue->line, ==, 0);
  gt_config_issue_free (issue);
}

/* ------------------------------------------------------------------------------------------ */
/* Values */

/* The cluster: mapping (scale-out) and --cluster.KEY options: all or nothing, checked. */
static void
test_server_cluster (void)
{
  static const char *const good = "options: {addr: 8080}\n"
                                  "cluster:\n"
                                  "  etcd: [http://127.0.0.1:2379, https://10.0.0.2:2379]\n"
                                  "  node: a-1\n"
                                  "  advertise: 10.0.0.1:8080\n"
                                  "  secret: s3\n";
  static const struct
  {
    const char *yaml;
    const char *message;
  } bad[] = {
    { "options: {addr: 8080}\ncluster: {node: a, advertise: 'h:1', secret: s}\n", "needs etcd" },
    { "options: {addr: 8080}\ncluster: {etcd: ftp://x, node: a}\n", "etcd" },
    { "options: {addr: 8080}\ncluster: {etcd: http://e:1, advertise: 'h:1', secret: s}\n",
      "cluster.node is required" },
    { "options: {addr: 8080}\ncluster: {etcd: http://e:1, node: 'a b', advertise: 'h:1', "
      "secret: s}\n",
      "cluster.node is required" },
    { "options: {addr: 8080}\ncluster: {etcd: http://e:1, node: a, advertise: 'h:1'}\n",
      "cluster.secret is required" },
    { "options: {addr: 8080}\ncluster: {etcd: http://e:1, node: a, advertise: h, secret: s}\n",
      "cluster.advertise" },
    { "options: {addr: 8080}\ncluster: {etcd: http://e:1, node: a, advertise: 'h:1', "
      "secret: s, ttl: 1s}\n",
      "at least 2s" },
    { "options: {addr: 8080}\ncluster: {etcd: http://e:1, node: a, advertise: 'h:1', "
      "secret: s, etcdUser: u}\n",
      "go together" },
    { "cluster: {etcd: http://e:1, node: a, advertise: 'h:1', secret: s}\n", "options.addr" },
  };
  g_autoptr (GtServerConfig) config = gt_server_config_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *help = gt_config_describe_options (GT_CONFIG_KIND_SERVER);
  char *argv[] = { (char *) "--cluster.etcd", (char *) "http://10.0.0.3:2379",
                   (char *) "--cluster.ttl=4s", NULL };

  g_assert_true (gt_server_config_load_data (config, good, -1, NULL, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (gt_server_config_apply_args (config, 2, argv, &error));
  g_assert_true (gt_server_config_apply_args (config, 1, argv + 2, &error));
  g_assert_true (gt_server_config_validate (config, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (g_strv_length (config->cluster_etcd), ==, 3);
  g_assert_cmpstr (config->cluster_etcd[2], ==, "http://10.0.0.3:2379");
  g_assert_cmpstr (config->cluster_node, ==, "a-1");
  g_assert_cmpstr (config->cluster_advertise, ==, "10.0.0.1:8080");
  g_assert_cmpstr (config->cluster_prefix, ==, "/gt/");
  g_assert_cmpuint (config->cluster_ttl_ms, ==, 4000);
  g_assert_nonnull (strstr (help, "--cluster.etcd URL"));
  g_assert_nonnull (strstr (help, "--cluster.advertise"));

  /* Without cluster: nothing changes. */
  {
    g_autoptr (GtServerConfig) plain = gt_server_config_new ();

    g_assert_true (gt_server_config_load_data (plain, "options: {addr: 80}\n", -1, NULL, NULL,
                                               &error));
    g_assert_null (plain->cluster_etcd);
    g_assert_cmpuint (plain->cluster_ttl_ms, ==, 0);
  }
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autoptr (GtServerConfig) c = gt_server_config_new ();
      g_autoptr (GError) e = NULL;
      gboolean ok = gt_server_config_load_data (c, bad[i].yaml, -1, "t.yaml", NULL, &e)
                    && gt_server_config_validate (c, NULL, &e);

      g_assert_false (ok);
      if (strstr (e->message, bad[i].message) == NULL)
        g_error ("case %u: '%s' does not say '%s'", i, e->message, bad[i].message);
    }
}

static void
test_zero_means_default (void)
{
  g_autoptr (GtServerConfig) server = gt_server_config_new ();
  g_autoptr (GtClientConfig) client = gt_client_config_new ();
  g_autoptr (GError) error = NULL;

  g_assert_true (gt_server_config_load_data (server,
                                             "options:\n  timeout: 0\n  connections: 0\n"
                                             "  maxHandShakeOptions: 0\n  logLevel: ''\n",
                                             -1, NULL, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (server->timeout_ms, ==, 90000);
  g_assert_cmpuint (server->connections, ==, 10);
  g_assert_cmpuint (server->max_handshake_options, ==, 600);
  g_assert_cmpstr (server->log_level, ==, "info");

  g_assert_true (gt_client_config_load_data (client,
                                             "options:\n  remoteConnections: 0\n"
                                             "  remoteIdleConnections: 0\n  remoteTimeout: 0s\n"
                                             "  reconnectDelay: 0\n",
                                             -1, NULL, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (client->remote_connections, ==, 3);
  g_assert_cmpuint (client->remote_idle_connections, ==, 1);
  g_assert_cmpuint (client->remote_timeout_ms, ==, 45000);
  g_assert_cmpuint (client->reconnect_delay_ms, ==, 5000);

  /* Clamps: connections 1..10, idle 1..connections. */
  g_assert_true (gt_client_config_load_data (client,
                                             "options:\n  remoteConnections: 50\n"
                                             "  remoteIdleConnections: 20\n",
                                             -1, NULL, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (client->remote_connections, ==, 10);
  g_assert_cmpuint (client->remote_idle_connections, ==, 10);
  g_assert_true (gt_client_config_load_data (client, "options: {remoteConnections: 2}\n", -1,
                                             NULL, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (client->remote_idle_connections, ==, 2);
}

static void
test_booleans (void)
{
  const char *yes[] = { "true", "True", "yes", "YES", "on" };
  const char *no[] = { "false", "FALSE", "no", "off", "Off" };

  for (guint i = 0; i < G_N_ELEMENTS (yes); i++)
    {
      g_autoptr (GtServerConfig) config = gt_server_config_new ();
      g_autoptr (GError) error = NULL;
      g_autofree char *yaml = g_strdup_printf ("options: {allowAnyClient: %s}", yes[i]);
      g_assert_true (gt_server_config_load_data (config, yaml, -1, NULL, NULL, &error));
      g_assert_no_error (error);
      g_assert_true (config->allow_any_client);
    }
  for (guint i = 0; i < G_N_ELEMENTS (no); i++)
    {
      g_autoptr (GtServerConfig) config = gt_server_config_new ();
      g_autoptr (GError) error = NULL;
      g_autofree char *yaml = g_strdup_printf ("options: {allowAnyClient: %s}", no[i]);
      config->allow_any_client = TRUE;
      g_assert_true (gt_server_config_load_data (config, yaml, -1, NULL, NULL, &error));
      g_assert_no_error (error);
      g_assert_false (config->allow_any_client);
    }
}

static void
test_durations (void)
{
  static const struct
  {
    const char *text;
    guint64 ms;
  } good[] = {
    { "90s", 90000 },   { "1m30s", 90000 }, { "250ms", 250 },    { "1h", 3600000 },
    { "1.5s", 1500 },   { "90", 90000 },    { "0", 0 },          { "2h45m", 9900000 },
    { "1500us", 1 },    { ".5s", 500 },     { "1.s", 1000 },     { "1000000ns", 1 },
    { "+3s", 3000 },    { "1\xc2\xb5s", 0 }, { "1m0.5s", 60500 },
  };
  static const char *const bad[] = {
    "", "abc", "-1s", "1", "s", "1x", "1.5", "1s 2s", " 1s", "1s-", ".s", "9999999999999h", "1e3s",
  };

  for (guint i = 0; i < G_N_ELEMENTS (good); i++)
    {
      guint64 ms = G_MAXUINT64;
      g_test_message ("duration '%s'", good[i].text);
      g_assert_true (gt_parse_duration (good[i].text, &ms));
      g_assert_cmpuint (ms, ==, good[i].ms);
    }
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      guint64 ms = 0;
      g_test_message ("duration '%s'", bad[i]);
      /* "1" alone is a bare integer (seconds): it must parse. */
      if (strcmp (bad[i], "1") == 0)
        {
          g_assert_true (gt_parse_duration (bad[i], &ms));
          g_assert_cmpuint (ms, ==, 1000);
          continue;
        }
      g_assert_false (gt_parse_duration (bad[i], &ms));
    }
}

static void
test_listen_addr (void)
{
  static const struct
  {
    const char *in, *out;
  } cases[] = {
    { "80", "0.0.0.0:80" },
    { ":80", "0.0.0.0:80" },
    { "0.0.0.0:80", "0.0.0.0:80" },
    { "127.0.0.1:0", "127.0.0.1:0" },
    { "[::1]:80", "[::1]:80" },
    { "localhost:8080", "localhost:8080" },
    { "", NULL },
    { "localhost", NULL },
    { "::1:80", NULL },
    { "1.2.3.4:99999", NULL },
    { "1.2.3.4:x", NULL },
    { "[::1]", NULL },
    { "a b:80", NULL },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) error = NULL;
      g_autofree char *out = gt_normalize_listen_addr (cases[i].in, &error);
      g_test_message ("addr '%s'", cases[i].in);
      g_assert_cmpstr (out, ==, cases[i].out);
      if (cases[i].out == NULL)
        g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE);
      else
        g_assert_no_error (error);
    }
}

static void
test_port_range (void)
{
  static const struct
  {
    const char *text;
    gboolean ok;
    guint16 first, last;
  } cases[] = {
    { "10000-20000", TRUE, 10000, 20000 },
    { "8080", TRUE, 8080, 8080 },
    { "0", TRUE, 1, 65535 },
    { " 1 - 2 ", TRUE, 1, 2 },
    { "5-5", TRUE, 5, 5 },
    { "20-10", FALSE, 0, 0 },
    { "0-10", FALSE, 0, 0 },
    { "1-65536", FALSE, 0, 0 },
    { "a-b", FALSE, 0, 0 },
    { "-5", FALSE, 0, 0 },
    { "", FALSE, 0, 0 },
    { "1-2-3", FALSE, 0, 0 },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) error = NULL;
      GtPortRange range = { 0, 0 };
      g_test_message ("range '%s'", cases[i].text);
      g_assert_cmpint (gt_parse_port_range (cases[i].text, &range, &error), ==, cases[i].ok);
      if (cases[i].ok)
        {
          g_assert_no_error (error);
          g_assert_cmpuint (range.first, ==, cases[i].first);
          g_assert_cmpuint (range.last, ==, cases[i].last);
        }
      else
        g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Command line */

static void
test_server_cli (void)
{
  g_autoptr (GtServerConfig) config = gt_server_config_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *path = test_file ("server-gt.yaml");
  char *argv[] = {
    "--addr", "127.0.0.1:9000", "-timeout=2m", "--logLevel=ERROR", "-connections", "4",
    "--id", "id1", "--secret", "cli-secret", "-id=id9", "-secret", "s9",
    "--tcpRange", "40000-40010", "--tcpRange=0", "-allowAnyClient=false", "--tlsAddr", "443",
    "--pprof", NULL,
  };
  const GtUserConfig *user;

  g_assert_true (gt_server_config_load_file (config, path, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (gt_server_config_apply_args (config, G_N_ELEMENTS (argv) - 1, argv, &error));
  g_assert_no_error (error);

  g_assert_cmpstr (config->addr, ==, "127.0.0.1:9000");
  g_assert_cmpuint (config->timeout_ms, ==, 120000);
  g_assert_cmpstr (config->log_level, ==, "error");
  g_assert_cmpuint (config->connections, ==, 4);
  g_assert_cmpuint (config->max_handshake_options, ==, 100); /* from the file */
  g_assert_false (config->allow_any_client);
  g_assert_cmpuint (config->tcp_ranges->len, ==, 3);
  g_assert_cmpuint (range_at (config->tcp_ranges, 1)->first, ==, 40000);
  g_assert_cmpuint (range_at (config->tcp_ranges, 2)->first, ==, 1);
  g_assert_cmpuint (range_at (config->tcp_ranges, 2)->last, ==, 65535);

  /* The CLI user replaces the file's id1 (secret only), in place; id9 is added. */
  g_assert_cmpuint (config->users->len, ==, 3);
  user = g_ptr_array_index (config->users, 0);
  g_assert_cmpstr (user->id, ==, "id1");
  g_assert_cmpstr (user->secret, ==, "cli-secret");
  g_assert_null (user->tcp_ranges);
  g_assert_cmpuint (user->line, ==, 0);
  user = gt_server_config_find_user (config, "id9");
  g_assert_nonnull (user);
  g_assert_cmpstr (user->secret, ==, "s9");
  g_assert_cmpstr (config->tls_addr, ==, "0.0.0.0:443");
  g_assert_true (warnings_contain (config->warnings,
                                   "command line: option '--pprof' is ignored: gt has no such "
                                   "setting, it changes nothing"));

  /* Bare boolean. */
  {
    char *argv2[] = { "-allowAnyClient", NULL };
    g_assert_true (gt_server_config_apply_args (config, 1, argv2, &error));
    g_assert_no_error (error);
    g_assert_true (config->allow_any_client);
  }
}

typedef struct
{
  gboolean client;
  const char *args[8];
  GtConfigErrorEnum code;
  const char *message;
} BadArgs;

static const BadArgs bad_args[] = {
  { FALSE, { "--foo", "1" }, GT_CONFIG_ERROR_USAGE, "command line: unknown option '--foo'" },
  { TRUE, { "-foo=1" }, GT_CONFIG_ERROR_USAGE, "command line: unknown option '--foo'" },
  { FALSE, { "--id", "a", "--id", "b", "--secret", "s" }, GT_CONFIG_ERROR_USAGE,
    "command line: --id and --secret must be given the same number of times (2 --id, 1 "
    "--secret)" },
  { FALSE, { "--addr" }, GT_CONFIG_ERROR_USAGE, "command line: option '--addr' needs a value" },
  { FALSE, { "--timeout", "abc" }, GT_CONFIG_ERROR_VALUE,
    "command line: --timeout: bad duration 'abc' (examples: 90s, 1m30s, 250ms)" },
  { FALSE, { "--tcpRange", "9-1" }, GT_CONFIG_ERROR_VALUE,
    "command line: --tcpRange: bad port range '9-1': first port is greater than last" },
  { FALSE, { "stray" }, GT_CONFIG_ERROR_USAGE, "command line: unexpected argument 'stray'" },
  { FALSE, { "--allowAnyClient=perhaps" }, GT_CONFIG_ERROR_VALUE,
    "command line: --allowAnyClient: bad boolean 'perhaps' (use true/false, yes/no or on/off)" },
  { TRUE, { "--local", "tcp://h:1", "--remoteTCPPort", "x" }, GT_CONFIG_ERROR_VALUE,
    "command line: --remoteTCPPort: bad port 'x'" },
  { TRUE, { "--remote", "sctp://h" }, GT_CONFIG_ERROR_VALUE,
    "command line: --remote: remote scheme 'sctp' is not supported by this version" },
  { TRUE, { "--hostPrefix", "a" }, GT_CONFIG_ERROR_USAGE,
    "command line: --hostPrefix needs a --local service" },
  { TRUE, { "--hostPrefix", "a", "--local", "http://a", "--local", "http://b" },
    GT_CONFIG_ERROR_USAGE, "command line: --hostPrefix must follow the --local it applies to" },
  { TRUE, { "--local", "sctp://h:1" }, GT_CONFIG_ERROR_VALUE,
    "command line: --local: bad local URL 'sctp://h:1': the scheme must be http://, https://, "
    "tcp:// or udp://" },
  { FALSE, { "--id", "", "--secret", "s" }, GT_CONFIG_ERROR_VALUE,
    "command line: --id: id must be 1 to 200 bytes" },
  { FALSE, { "--proxyProtocolTrustedCIDRs", "10.0.0.0/8", "--proxyProtocolTrustedCIDRs", "x" },
    GT_CONFIG_ERROR_VALUE,
    "command line: --proxyProtocolTrustedCIDRs: bad CIDR or address 'x' (examples: 10.0.0.0/8, "
    "192.168.1.7, fd00::/8)" },
  { FALSE, { "--authAPI", "auth.example.org" }, GT_CONFIG_ERROR_VALUE,
    "command line: --authAPI: bad authAPI URL 'auth.example.org': it must start with http:// "
    "or https://" },
  { FALSE, { "--hostNumber", "x" }, GT_CONFIG_ERROR_VALUE,
    "command line: --hostNumber: bad number 'x'" },
  { FALSE, { "--hostWithID=perhaps" }, GT_CONFIG_ERROR_VALUE,
    "command line: --hostWithID: bad boolean 'perhaps' (use true/false, yes/no or on/off)" },
  { FALSE, { "--reconnectDuration", "soon" }, GT_CONFIG_ERROR_VALUE,
    "command line: --reconnectDuration: bad duration 'soon' (examples: 90s, 1m30s, 250ms)" },
  { FALSE, { "--hostRegex" }, GT_CONFIG_ERROR_USAGE,
    "command line: option '--hostRegex' needs a value" },
  { TRUE, { "--local", "http://h", "--proxyProtocol", "v9" }, GT_CONFIG_ERROR_VALUE,
    "command line: --proxyProtocol: bad proxyProtocol 'v9' (use v1 or v2)" },
  { TRUE, { "--remoteCert", "sha256:zz" }, GT_CONFIG_ERROR_VALUE,
    "command line: --remoteCert: bad remoteCert pin 'sha256:zz': use sha256: followed by 64 hex "
    "digits (colons allowed)" },
};

static void
test_bad_args (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (bad_args); i++)
    {
      const BadArgs *bad = &bad_args[i];
      g_autoptr (GError) error = NULL;
      int argc = 0;
      gboolean ok;

      while (argc < (int) G_N_ELEMENTS (bad->args) && bad->args[argc] != NULL)
        argc++;
      if (bad->client)
        {
          g_autoptr (GtClientConfig) config = gt_client_config_new ();
          ok = gt_client_config_apply_args (config, argc, (char **) bad->args, &error);
        }
      else
        {
          g_autoptr (GtServerConfig) config = gt_server_config_new ();
          ok = gt_server_config_apply_args (config, argc, (char **) bad->args, &error);
        }
      g_test_message ("%s", bad->message);
      g_assert_false (ok);
      g_assert_error (error, GT_CONFIG_ERROR, (gint) bad->code);
      g_assert_cmpstr (error->message, ==, bad->message);
    }
}

static void
test_client_cli (void)
{
  g_autoptr (GtClientConfig) config = gt_client_config_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *path = test_file ("client-gt.yaml");
  char *argv[] = {
    "--id", "cli", "-secret=s3cret", "--remote", "10.0.0.1:9000", "-remote=tcp://10.0.0.2",
    "--remoteConnections", "7", "--remoteIdleConnections=9", "--remoteTimeout", "1m",
    "--reconnectDelay=500ms", "--logLevel", "trace",
    "--local", "http://127.0.0.1:3000", "--hostPrefix", "Web", "--useLocalAsHTTPHost",
    "--localTimeout=5s",
    "-local", "tcp://127.0.0.1:5432", "-remoteTCPPort=15432", "--remoteTCPRandom",
    "--proxyProtocol", "v2", "--remote", "wss://gt.example.org/tunnel?x=1",
    "--local=tcp://127.0.0.1:6379",
    "--local", "https://127.0.0.1:8443", "--remoteCertInsecure", NULL,
  };
  const GtServiceConfig *s;

  g_assert_true (gt_client_config_load_file (config, path, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (gt_client_config_apply_args (config, G_N_ELEMENTS (argv) - 1, argv, &error));
  g_assert_no_error (error);

  g_assert_cmpstr (config->id, ==, "cli");
  g_assert_cmpstr (config->secret, ==, "s3cret");
  /* CLI remotes replace the file's. */
  g_assert_cmpuint (config->remotes->len, ==, 3);
  g_assert_cmpstr (remote_at (config, 0)->host, ==, "10.0.0.1");
  g_assert_cmpuint (remote_at (config, 0)->port, ==, 9000);
  g_assert_cmpstr (remote_at (config, 1)->host, ==, "10.0.0.2");
  g_assert_cmpuint (remote_at (config, 1)->port, ==, 80);
  g_assert_cmpstr (remote_at (config, 2)->scheme, ==, "wss");
  g_assert_cmpstr (remote_at (config, 2)->host, ==, "gt.example.org");
  g_assert_cmpuint (remote_at (config, 2)->port, ==, 443);
  g_assert_cmpstr (remote_at (config, 2)->path, ==, "/tunnel?x=1");
  g_assert_cmpuint (config->remote_connections, ==, 7);
  g_assert_cmpuint (config->remote_idle_connections, ==, 7); /* clamped */
  g_assert_cmpuint (config->remote_timeout_ms, ==, 60000);
  g_assert_cmpuint (config->reconnect_delay_ms, ==, 500);
  g_assert_cmpstr (config->log_level, ==, "trace");

  /* 4 CLI services first (GT's order), then the file's 5. */
  g_assert_cmpuint (config->services->len, ==, 9);
  s = service_at (config, 0);
  g_assert_cmpstr (s->local_url, ==, "http://127.0.0.1:3000");
  g_assert_cmpstr (s->host_prefix, ==, "web");
  g_assert_true (s->use_local_as_http_host);
  g_assert_cmpuint (s->local_timeout_ms, ==, 5000);
  g_assert_cmpuint (s->line, ==, 0);
  s = service_at (config, 1);
  g_assert_cmpint (s->kind, ==, GT_SERVICE_KIND_TCP);
  g_assert_cmpuint (s->remote_tcp_port, ==, 15432);
  g_assert_true (s->remote_tcp_random);
  g_assert_cmpuint (s->local_timeout_ms, ==, 120000);
  g_assert_cmpuint (s->proxy_protocol, ==, 2);
  s = service_at (config, 2);
  g_assert_cmpuint (s->proxy_protocol, ==, 0);
  g_assert_cmpuint (s->local_port, ==, 6379);
  g_assert_cmpuint (s->remote_tcp_port, ==, 0);
  g_assert_true (s->remote_tcp_random);
  s = service_at (config, 3);
  g_assert_cmpint (s->kind, ==, GT_SERVICE_KIND_HTTPS);
  g_assert_null (s->host_prefix); /* resolved by validate() */
  s = service_at (config, 4);
  g_assert_cmpstr (s->local_url, ==, "http://127.0.0.1:80");
  g_assert_cmpstr (s->host_prefix, ==, "blog");
  g_assert_cmpuint (s->line, ==, 3);
  g_assert_true (config->remote_cert_insecure);
  g_assert_cmpuint (config->warnings->len, ==, 0); /* remoteAPI in the file is a real key now */

  /* The CLI's prefix-less https service takes the id as prefix, so the file's own prefix-less
   * https service (line 7) is now a second one: validate() must say so, at that service. */
  g_assert_false (gt_client_config_validate (config, NULL, &error));
  {
    g_autofree char *expected = g_strdup_printf ("%s:7:5: two http services without "
                                                 "hostPrefix: give each a hostPrefix",
                                                 path);
    g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_INVALID);
    g_assert_cmpstr (error->message, ==, expected);
  }
  g_assert_cmpstr (service_at (config, 3)->host_prefix, ==, "cli");
}

static void
test_client_cli_positions (void)
{
  g_autoptr (GError) error = NULL;

  /* With a single --local, the service options may come before it (GT ignores positions). */
  {
    g_autoptr (GtClientConfig) config = gt_client_config_new ();
    char *argv[] = { "--remoteTCPPort", "2222", "--remoteTCPRandom=false", "--id", "x",
                     "--local", "tcp://127.0.0.1:22", "--localTimeout", "1s", NULL };
    g_assert_true (gt_client_config_apply_args (config, G_N_ELEMENTS (argv) - 1, argv, &error));
    g_assert_no_error (error);
    g_assert_cmpuint (config->services->len, ==, 1);
    g_assert_cmpuint (service_at (config, 0)->remote_tcp_port, ==, 2222);
    g_assert_false (service_at (config, 0)->remote_tcp_random);
    g_assert_cmpuint (service_at (config, 0)->local_timeout_ms, ==, 1000);
    g_assert_cmpstr (config->id, ==, "x");
  }
  /* With several, each option belongs to the --local before it. */
  {
    g_autoptr (GtClientConfig) config = gt_client_config_new ();
    char *argv[] = { "--local", "http://a:1", "--hostPrefix", "one", "--local", "http://b:2",
                     "--hostPrefix", "two", "--useLocalAsHTTPHost=true", "--local",
                     "tcp://c:3", "--remoteTCPRandom=off", "--remoteTCPPort", "3", NULL };
    g_assert_true (gt_client_config_apply_args (config, G_N_ELEMENTS (argv) - 1, argv, &error));
    g_assert_no_error (error);
    g_assert_cmpuint (config->services->len, ==, 3);
    g_assert_cmpstr (service_at (config, 0)->host_prefix, ==, "one");
    g_assert_false (service_at (config, 0)->use_local_as_http_host);
    g_assert_cmpstr (service_at (config, 1)->host_prefix, ==, "two");
    g_assert_true (service_at (config, 1)->use_local_as_http_host);
    g_assert_false (service_at (config, 2)->remote_tcp_random);
    g_assert_cmpuint (service_at (config, 2)->remote_tcp_port, ==, 3);
  }
}

static void
test_extract_config_path (void)
{
  static const struct
  {
    const char *args[6];
    const char *path;
    const char *rest[6];
  } cases[] = {
    { { "-c", "a.yaml", "--addr", "80" }, "a.yaml", { "--addr", "80" } },
    { { "--addr", "80", "--config", "b.yaml" }, "b.yaml", { "--addr", "80" } },
    { { "-c=c.yaml" }, "c.yaml", { NULL } },
    { { "--config=d.yaml", "--id", "x" }, "d.yaml", { "--id", "x" } },
    { { "-config", "e.yaml" }, "e.yaml", { NULL } },
    { { "--id", "x" }, NULL, { "--id", "x" } },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      char *argv[7] = { NULL };
      int argc = 0;
      g_autoptr (GError) error = NULL;
      g_autofree char *path = NULL;
      int expected_argc = 0;

      while (argc < 6 && cases[i].args[argc] != NULL)
        {
          argv[argc] = (char *) cases[i].args[argc];
          argc++;
        }
      while (expected_argc < 6 && cases[i].rest[expected_argc] != NULL)
        expected_argc++;
      path = gt_config_extract_config_path (&argc, argv, &error);
      g_assert_no_error (error);
      g_assert_cmpstr (path, ==, cases[i].path);
      g_assert_cmpint (argc, ==, expected_argc);
      for (int j = 0; j < argc; j++)
        g_assert_cmpstr (argv[j], ==, cases[i].rest[j]);
      g_assert_null (argv[argc]);
    }

  {
    /* The last of several wins; a trailing one without a value is an error. */
    char *argv[] = { "-c", "a", "--config=b", "--id", "x", NULL };
    int argc = 5;
    g_autoptr (GError) error = NULL;
    g_autofree char *path = gt_config_extract_config_path (&argc, argv, &error);
    g_assert_no_error (error);
    g_assert_cmpstr (path, ==, "b");
    g_assert_cmpint (argc, ==, 2);
  }
  {
    char *argv[] = { "-c", "a", "--addr", "80", "-c", NULL };
    int argc = 5;
    g_autoptr (GError) error = NULL;
    g_autofree char *path = gt_config_extract_config_path (&argc, argv, &error);
    g_assert_null (path);
    g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_USAGE);
    g_assert_cmpstr (error->message, ==, "command line: option '--config' needs a value");
  }
  {
    char *argv[] = { "--addr", "80", "-c", NULL };
    int argc = 3;
    g_autoptr (GError) error = NULL;
    g_autofree char *path = gt_config_extract_config_path (&argc, argv, &error);
    g_assert_null (path);
    g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_USAGE);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Validation */

static void
test_client_validate (void)
{
  static const struct
  {
    const char *yaml;
    const char *expected;
  } cases[] = {
    { "options: {secret: s, remote: h}\nservices: [{local: 'http://a'}]\n",
      "v.yaml: options.id is required" },
    { "options: {id: a}\nservices: [{local: 'http://a'}]\n",
      "v.yaml: no remote: set options.remote (or options.remoteAPI) or --remote" },
    { "options: {id: a, secret: s}\nservices: [{local: 'http://a'}]\n",
      "v.yaml: no remote: set options.remote (or options.remoteAPI) or --remote" },
    { "options: {id: a, secret: s, remote: h}\n",
      "v.yaml: no service: add an entry to services: or use --local (or set tcpForwardAddr "
      "and tcpForwardHostPrefix)" },
    { "options: {id: a, secret: s, remote: h}\nservices:\n  - local: http://a\n"
      "    hostPrefix: X\n  - local: https://b\n    hostPrefix: x\n",
      "v.yaml:5:5: host prefix 'x' is used by two services" },
    { "options: {id: a, secret: s, remote: h}\nservices:\n  - local: http://a\n"
      "  - local: https://b\n    hostPrefix: a\n",
      "v.yaml:4:5: host prefix 'a' is used by two services" },
    { "options: {id: a, secret: s, remote: h}\nservices:\n  - local: tcp://a:1\n"
      "    remoteTCPRandom: false\n",
      "v.yaml:3:5: tcp service 'tcp://a:1' needs remoteTCPPort or remoteTCPRandom: true" },
    { "options: {id: a, secret: s, remote: h}\nservices:\n  - local: udp://a:1\n"
      "    remoteUDPRandom: false\n",
      "v.yaml:3:5: udp service 'udp://a:1' needs remoteUDPPort or remoteUDPRandom: true" },
    { "options: {id: a.b, secret: s, remote: h}\nservices:\n  - local: http://a\n",
      "v.yaml:3:5: the id 'a.b' cannot be the host prefix of 'http://a': give the service a "
      "hostPrefix" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GtClientConfig) config = gt_client_config_new ();
      g_autoptr (GError) error = NULL;
      GtConfigIssue *issue = NULL;

      g_test_message ("%s", cases[i].yaml);
      g_assert_true (gt_client_config_load_data (config, cases[i].yaml, -1, "v.yaml", NULL,
                                                 &error));
      g_assert_no_error (error);
      g_assert_false (gt_client_config_validate (config, &issue, &error));
      g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_INVALID);
      g_assert_cmpstr (error->message, ==, cases[i].expected);
      g_assert_nonnull (issue);
      gt_config_issue_free (issue);
    }

  /* remoteAPI replaces remote; it must be an http(s) URL. */
  {
    g_autoptr (GtClientConfig) config = gt_client_config_new ();
    g_autoptr (GtClientConfig) bad = gt_client_config_new ();
    g_autoptr (GError) error = NULL;
    const char *yaml = "options: {id: a, secret: s, remoteAPI: 'https://api.example/gt?x=1'}\n"
                       "services: [{local: 'http://a'}]\n";

    g_assert_true (gt_client_config_load_data (config, yaml, -1, "v.yaml", NULL, &error));
    g_assert_true (gt_client_config_validate (config, NULL, &error));
    g_assert_no_error (error);
    g_assert_cmpstr (config->remote_api, ==, "https://api.example/gt?x=1");
    g_assert_false (gt_client_config_load_data (bad, "options: {remoteAPI: 'ftp://x'}\n", -1,
                                                "v.yaml", NULL, &error));
    g_assert_nonnull (error);
  }

  /* Without a file the message is marked as coming from the command line. */
  {
    g_autoptr (GtClientConfig) config = gt_client_config_new ();
    g_autoptr (GError) error = NULL;
    char *argv[] = { "--id", "a", "--local", "http://x", NULL };
    g_assert_true (gt_client_config_apply_args (config, 4, argv, &error));
    g_assert_false (gt_client_config_validate (config, NULL, &error));
    g_assert_cmpstr (error->message, ==, "command line: no remote: set options.remote (or options.remoteAPI) or --remote");
  }

  /* No secret is fine (GT): the client makes one up when it starts. */
  {
    g_autoptr (GtClientConfig) config = gt_client_config_new ();
    g_autoptr (GError) error = NULL;
    char *argv[] = { "--id", "a", "--remote", "h", "--local", "http://x", NULL };
    char *argv_empty[] = { "--secret", "s", "--secret=", NULL };
    g_assert_true (gt_client_config_apply_args (config, 6, argv, &error));
    g_assert_true (gt_client_config_validate (config, NULL, &error));
    g_assert_no_error (error);
    g_assert_null (config->secret);
    /* An empty secret (GT's default) is the same: none. */
    g_assert_true (gt_client_config_apply_args (config, 3, argv_empty, &error));
    g_assert_no_error (error);
    g_assert_null (config->secret);
  }
}

static void
test_server_validate (void)
{
  static const struct
  {
    const char *yaml;
    const char *expected;
  } cases[] = {
    { "options: {addr: 80}\ntcp: [{range: 100-200}]\nusers:\n  u:\n    secret: s\n"
      "    tcp: [{range: 150-300}]\n",
      "v.yaml:6:19: tcp range 150-300 of user 'u' overlaps the global tcp pool" },
    { "options: {addr: 80}\nusers:\n  u:\n    tcp: [{range: 1-2}]\n",
      "v.yaml:3:3: user 'u' needs a secret of 1 to 200 bytes" },
    { "options: {addr: 80}\nusers:\n  u:\n",
      "v.yaml:3:3: user 'u' needs a secret of 1 to 200 bytes" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GtServerConfig) config = gt_server_config_new ();
      g_autoptr (GError) error = NULL;

      g_test_message ("%s", cases[i].yaml);
      g_assert_true (gt_server_config_load_data (config, cases[i].yaml, -1, "v.yaml", NULL,
                                                 &error));
      g_assert_no_error (error);
      g_assert_false (gt_server_config_validate (config, NULL, &error));
      g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_INVALID);
      g_assert_cmpstr (error->message, ==, cases[i].expected);
    }

  /* No users: GT's allow-any-client mode, with a warning. */
  {
    g_autoptr (GtServerConfig) config = gt_server_config_new ();
    g_autoptr (GError) error = NULL;
    g_assert_true (gt_server_config_load_data (config, "options: {addr: 80}", -1, "v.yaml", NULL,
                                               &error));
    g_assert_false (config->allow_any_client);
    g_assert_true (gt_server_config_validate (config, NULL, &error));
    g_assert_no_error (error);
    g_assert_true (config->allow_any_client);
    g_assert_true (warnings_contain (config->warnings,
                                     "v.yaml: no users are configured: any client id is "
                                     "accepted (allowAnyClient)"));
  }
  /* Adjacent, non-overlapping user ranges are fine. */
  {
    g_autoptr (GtServerConfig) config = gt_server_config_new ();
    g_autoptr (GError) error = NULL;
    g_assert_true (gt_server_config_load_data (config,
                                               "options: {addr: 80}\ntcp: [{range: 1-99}]\n"
                                               "users:\n  a: {secret: x, tcp: [{range: 100}]}\n"
                                               "  b: {secret: y, tcp: [{range: 101-200}]}\n",
                                               -1, NULL, NULL, &error));
    g_assert_no_error (error);
    g_assert_true (gt_server_config_validate (config, NULL, &error));
    g_assert_no_error (error);
  }
}

static void
test_detect_kind (void)
{
  static const struct
  {
    const char *yaml;
    GtConfigKind kind;
  } cases[] = {
    { "", GT_CONFIG_KIND_SERVER },
    { "options: {addr: 80}\n", GT_CONFIG_KIND_SERVER },
    { "services: []\n", GT_CONFIG_KIND_CLIENT },
    { "type: client\n", GT_CONFIG_KIND_CLIENT },
    { "type: server\nservices: []\n", GT_CONFIG_KIND_SERVER },
    { "type: ~\nservices: []\n", GT_CONFIG_KIND_CLIENT },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) error = NULL;
      g_assert_cmpint (gt_config_detect_kind_data (cases[i].yaml, -1, &error), ==, cases[i].kind);
      g_assert_no_error (error);
    }

  {
    g_autoptr (GError) error = NULL;
    g_assert_cmpint (gt_config_detect_kind_data ("version: 1\ntype: connect\n", -1, &error), ==,
                     GT_CONFIG_KIND_UNKNOWN);
    g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE);
    g_assert_cmpstr (error->message, ==,
                     "<data>:2:7: unknown type 'connect' (expected server or client)");
  }
  {
    g_autoptr (GError) error = NULL;
    g_autofree char *path = test_file ("client-gt.yaml");
    g_assert_cmpint (gt_config_detect_kind_file (path, &error), ==, GT_CONFIG_KIND_CLIENT);
    g_assert_no_error (error);
  }
  {
    g_autoptr (GError) error = NULL;
    g_autofree char *path = test_file ("syntax.yaml");
    g_assert_cmpint (gt_config_detect_kind_file (path, &error), ==, GT_CONFIG_KIND_UNKNOWN);
    g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_SYNTAX);
  }
}

static void
test_secrets_not_printed (void)
{
  g_autofree char *long_secret = g_strnfill (201, 'Q');
  g_autofree char *yaml = g_strdup_printf ("users:\n  u:\n    secret: %s\n", long_secret);
  g_autoptr (GtServerConfig) server = gt_server_config_new ();
  g_autoptr (GtClientConfig) client = gt_client_config_new ();
  g_autoptr (GError) error = NULL;
  char *argv[] = { "--secret", long_secret, NULL };

  g_assert_false (gt_server_config_load_data (server, yaml, -1, "s.yaml", NULL, &error));
  g_assert_cmpstr (error->message, ==, "s.yaml:3:13: secret of user 'u' must be 1 to 200 bytes");
  g_clear_error (&error);

  g_assert_false (gt_client_config_apply_args (client, 2, argv, &error));
  g_assert_cmpstr (error->message, ==, "command line: --secret: secret must be 1 to 200 bytes");
  g_clear_error (&error);

  g_assert_false (gt_client_config_load_data (client, "options:\n  secret: [hunter2]\n", -1,
                                              "c.yaml", NULL, &error));
  g_assert_cmpstr (error->message, ==, "c.yaml:2:11: 'secret' must be a scalar, not a list");
  g_assert_null (strstr (error->message, "hunter2"));
}

static void
test_multiple_documents_and_aliases (void)
{
  g_autoptr (GtServerConfig) config = gt_server_config_new ();
  g_autoptr (GError) error = NULL;

  /* Aliases resolve; a cyclic alias must not hang or crash; a second document is ignored. */
  g_assert_true (gt_server_config_load_data (config,
                                             "options: &o {addr: 80}\n"
                                             "users:\n  a: &u {secret: x}\n  b: *u\n"
                                             "extra: &h [*h]\n"
                                             "---\noptions: {addr: 81}\n",
                                             -1, "m.yaml", NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (config->addr, ==, "0.0.0.0:80");
  g_assert_cmpuint (config->users->len, ==, 2);
  g_assert_cmpstr (((GtUserConfig *) g_ptr_array_index (config->users, 1))->secret, ==, "x");
  g_assert_true (warnings_contain (config->warnings,
                                   "m.yaml:7:1: only the first YAML document is read; the rest "
                                   "is ignored"));
  /* A cycle inside a key that is read is an error, not a hang. */
  g_assert_false (gt_server_config_load_data (config, "host: {regex: &h [*h]}\n", -1, "m.yaml",
                                              NULL, &error));
  g_assert_cmpstr (error->message, ==, "m.yaml:1:15: 'regex' must be a scalar, not a list");
}

/* ------------------------------------------------------------------------------------------ */
/* Keys of the secure transports, multi-user and supervision work */

static void
test_server_new_defaults (void)
{
  g_autoptr (GtServerConfig) config = gt_server_config_new ();
  g_autoptr (GError) error = NULL;

  g_assert_null (config->tls_addr);
  g_assert_null (config->cert_file);
  g_assert_null (config->key_file);
  g_assert_cmpstr (config->tls_version, ==, "tls1.2");
  g_assert_null (config->sni_addr);
  g_assert_cmpstr (config->ws_path, ==, "/gt-tunnel");
  g_assert_false (config->proxy_protocol);
  g_assert_null (config->proxy_protocol_trusted_cidrs);
  g_assert_null (config->users_file);
  g_assert_null (config->auth_api);
  g_assert_cmpuint (config->reconnect_times, ==, 3);
  g_assert_cmpuint (config->reconnect_duration_ms, ==, 5 * 60 * 1000);
  g_assert_cmpuint (config->speed, ==, 0);
  g_assert_cmpuint (config->host_number, ==, 0);
  g_assert_null (config->host_regex);
  g_assert_false (config->host_with_id);
  g_assert_null (config->api_addr);
  g_assert_null (config->api_cert_file);
  g_assert_null (config->api_key_file);
  g_assert_cmpstr (config->api_tls_version, ==, "tls1.2");
  g_assert_cmpuint (config->drain_timeout_ms, ==, 30000);

  /* Zero and empty values mean the default (GT's MergeConfig). */
  g_assert_true (gt_server_config_load_data (config,
                                             "options:\n  sniAddr: 443\n  reconnectTimes: 0\n"
                                             "  reconnectDuration: 0\n  drainTimeout: 0s\n"
                                             "  wsPath: ''\n  tlsVersion: ''\n",
                                             -1, "d.yaml", NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (config->warnings->len, ==, 0);
  g_assert_cmpuint (config->reconnect_times, ==, 3);
  g_assert_cmpuint (config->reconnect_duration_ms, ==, 5 * 60 * 1000);
  g_assert_cmpuint (config->drain_timeout_ms, ==, 30000);
  g_assert_cmpstr (config->ws_path, ==, "/gt-tunnel");
  g_assert_cmpstr (config->tls_version, ==, "tls1.2");

  /* sniAddr alone is a listener. */
  g_assert_true (gt_server_config_validate (config, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (config->sni_addr, ==, "0.0.0.0:443");
  g_assert_null (config->addr);
}

static void
test_user_new_defaults (void)
{
  g_autoptr (GtServerConfig) config = gt_server_config_new ();
  g_autoptr (GError) error = NULL;
  const GtUserConfig *user;

  g_assert_true (gt_server_config_load_data (config,
                                             "users:\n  u: {secret: s, speed: 0, "
                                             "connections: 0, host: {}}\n",
                                             -1, NULL, NULL, &error));
  g_assert_no_error (error);
  user = gt_server_config_find_user (config, "u");
  g_assert_cmpuint (user->speed, ==, 0);
  g_assert_cmpint (user->connections, ==, -1);
  g_assert_cmpint (user->host_number, ==, -1);
  g_assert_null (user->host_regex);
  g_assert_cmpint (user->host_with_id, ==, -1);
  g_assert_cmpint (user->tcp_number, ==, -1);
}

static void
test_server_full (void)
{
  g_autoptr (GtServerConfig) config = gt_server_config_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *path = test_file ("server-full.yaml");
  g_autofree char *dir = g_path_get_dirname (path);
  g_autofree char *cert = g_build_filename (dir, "certs", "server.pem", NULL);
  g_autofree char *users = g_build_filename (dir, "users.yaml", NULL);
  g_autofree char *api_cert = g_build_filename (dir, "api.pem", NULL);
  const GtUserConfig *user;

  g_assert_true (gt_server_config_load_file (config, path, NULL, &error));
  g_assert_no_error (error);
  dump_warnings (config->warnings);
  g_assert_cmpuint (config->warnings->len, ==, 0);

  g_assert_cmpstr (config->addr, ==, "0.0.0.0:8080");
  g_assert_cmpstr (config->tls_addr, ==, "0.0.0.0:8443");
  g_assert_cmpstr (config->cert_file, ==, cert); /* relative to the file's folder */
  g_assert_cmpstr (config->key_file, ==, "/etc/gt/server.key");
  g_assert_cmpstr (config->tls_version, ==, "tls1.3");
  g_assert_cmpstr (config->sni_addr, ==, "127.0.0.1:9443");
  g_assert_cmpstr (config->ws_path, ==, "/tunnel");
  g_assert_true (config->proxy_protocol);
  g_assert_cmpuint (g_strv_length (config->proxy_protocol_trusted_cidrs), ==, 2);
  g_assert_cmpstr (config->proxy_protocol_trusted_cidrs[0], ==, "10.0.0.0/8");
  g_assert_cmpstr (config->proxy_protocol_trusted_cidrs[1], ==, "::1");
  g_assert_cmpstr (config->users_file, ==, users);
  g_assert_cmpstr (config->auth_api, ==, "https://auth.example.org/check");
  g_assert_cmpuint (config->reconnect_times, ==, 5);
  g_assert_cmpuint (config->reconnect_duration_ms, ==, 10 * 60 * 1000);
  g_assert_cmpuint (config->speed, ==, 1048576);
  g_assert_cmpstr (config->api_addr, ==, "127.0.0.1:8081");
  g_assert_cmpstr (config->api_cert_file, ==, api_cert);
  g_assert_cmpstr (config->api_tls_version, ==, "tls1.1");
  g_assert_cmpuint (config->drain_timeout_ms, ==, 60000);
  g_assert_cmpuint (config->host_number, ==, 5);
  g_assert_false (config->host_with_id);
  g_assert_cmpuint (g_strv_length (config->host_regex), ==, 2);
  g_assert_cmpstr (config->host_regex[0], ==, "^web-[0-9]+$");
  g_assert_cmpstr (config->host_regex[1], ==, "^api$");

  user = gt_server_config_find_user (config, "alice");
  g_assert_cmpuint (user->speed, ==, 2048);
  g_assert_cmpint (user->connections, ==, 4);
  g_assert_cmpint (user->host_number, ==, 2);
  g_assert_cmpint (user->host_with_id, ==, 1);
  g_assert_cmpuint (g_strv_length (user->host_regex), ==, 1);
  g_assert_cmpstr (user->host_regex[0], ==, "^[a-z]+$");
  user = gt_server_config_find_user (config, "bob");
  g_assert_cmpint (user->connections, ==, -1); /* 0 = the global value */
  g_assert_null (gt_server_config_find_user (config, "carol")); /* users file: at validate */

  g_assert_true (gt_server_config_validate (config, NULL, &error));
  g_assert_no_error (error);
  /* The users file replaced bob's entry and added carol; no allow-any mode (authAPI). */
  g_assert_cmpuint (config->users->len, ==, 3);
  user = gt_server_config_find_user (config, "bob");
  g_assert_cmpstr (user->secret, ==, "bob-file-secret");
  g_assert_cmpint (user->tcp_number, ==, 2);
  g_assert_cmpint (user->connections, ==, -1);
  g_assert_cmpuint (user->line, ==, 2);
  user = gt_server_config_find_user (config, "carol");
  g_assert_cmpstr (user->secret, ==, "carol-file-secret");
  g_assert_cmpuint (user->speed, ==, 100);
  g_assert_cmpstr (user->host_regex[0], ==, "^c");
  g_assert_null (user->host_regex[1]);
  g_assert_cmpstr (gt_server_config_find_user (config, "alice")->secret, ==,
                   "alice-config-secret");
  g_assert_false (config->allow_any_client);

  /* Validating again (reload) reads the users file again and changes nothing. */
  g_assert_true (gt_server_config_validate (config, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (config->users->len, ==, 3);
}

static void
test_server_new_cli (void)
{
  g_autoptr (GtServerConfig) config = gt_server_config_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *path = test_file ("server-full.yaml");
  char *argv[] = {
    "--tlsAddr", "127.0.0.1:10443", "--certFile", "c.pem", "--keyFile=k.pem",
    "--tlsVersion", "tls1.0", "--sniAddr", "[::1]:9443", "--wsPath", "/ws",
    "--proxyProtocol=false", "--proxyProtocolTrustedCIDRs", "192.168.0.0/16",
    "-proxyProtocolTrustedCIDRs=fd00::/8", "--users", "u.yaml",
    "--authAPI", "http://127.0.0.1:9/auth", "--reconnectTimes", "7",
    "--reconnectDuration", "30s", "--speed", "4096", "--hostNumber", "9", "--hostRegex",
    "^x$", "-hostRegex=^y$", "--hostWithID", "--apiAddr", ":9090", "--apiCertFile", "a.pem",
    "--apiKeyFile", "a.key", "--apiTLSVersion", "tls1.3", "--drainTimeout", "5s",
    "--id", "bob", "--secret", "bob-cli-secret", NULL,
  };

  g_assert_true (gt_server_config_load_file (config, path, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (gt_server_config_apply_args (config, G_N_ELEMENTS (argv) - 1, argv, &error));
  g_assert_no_error (error);
  dump_warnings (config->warnings);

  g_assert_cmpstr (config->tls_addr, ==, "127.0.0.1:10443");
  g_assert_cmpstr (config->cert_file, ==, "c.pem"); /* the command line: as given */
  g_assert_cmpstr (config->key_file, ==, "k.pem");
  g_assert_cmpstr (config->tls_version, ==, "tls1.2");
  g_assert_true (warnings_contain (config->warnings,
                                   "command line: --tlsVersion: unknown tlsVersion 'tls1.0': "
                                   "tls1.2 is used (use tls1.1, tls1.2 or tls1.3)"));
  g_assert_cmpstr (config->sni_addr, ==, "[::1]:9443");
  g_assert_cmpstr (config->ws_path, ==, "/ws");
  g_assert_false (config->proxy_protocol);
  /* The command line replaces the file's list. */
  g_assert_cmpuint (g_strv_length (config->proxy_protocol_trusted_cidrs), ==, 2);
  g_assert_cmpstr (config->proxy_protocol_trusted_cidrs[0], ==, "192.168.0.0/16");
  g_assert_cmpstr (config->proxy_protocol_trusted_cidrs[1], ==, "fd00::/8");
  g_assert_cmpstr (config->users_file, ==, "u.yaml");
  g_assert_cmpstr (config->auth_api, ==, "http://127.0.0.1:9/auth");
  g_assert_cmpuint (config->reconnect_times, ==, 7);
  g_assert_cmpuint (config->reconnect_duration_ms, ==, 30000);
  g_assert_cmpuint (config->speed, ==, 4096);
  g_assert_cmpstr (config->api_addr, ==, "127.0.0.1:9090");
  g_assert_cmpstr (config->api_cert_file, ==, "a.pem");
  g_assert_cmpstr (config->api_key_file, ==, "a.key");
  g_assert_cmpstr (config->api_tls_version, ==, "tls1.3");
  g_assert_cmpuint (config->drain_timeout_ms, ==, 5000);

  /* GT: host.number and host.withID of the file win; regexes are the union. */
  g_assert_cmpuint (config->host_number, ==, 5);
  g_assert_false (config->host_with_id);
  g_assert_true (warnings_contain (config->warnings,
                                   "command line: --hostNumber is ignored: host.number of the "
                                   "file wins (as in GT)"));
  g_assert_true (warnings_contain (config->warnings,
                                   "command line: --hostWithID is ignored: host.withID of the "
                                   "file wins (as in GT)"));
  g_assert_cmpuint (g_strv_length (config->host_regex), ==, 4);
  g_assert_cmpstr (config->host_regex[0], ==, "^web-[0-9]+$");
  g_assert_cmpstr (config->host_regex[3], ==, "^y$");

  /* Without a file, the host options apply. */
  {
    g_autoptr (GtServerConfig) bare = gt_server_config_new ();
    char *argv2[] = { "--addr", "80", "--hostNumber", "3", "--hostWithID", "--hostRegex", "^a",
                      "--proxyProtocol", "--proxyProtocolTrustedCIDRs", "127.0.0.1", NULL };
    g_assert_true (gt_server_config_apply_args (bare, G_N_ELEMENTS (argv2) - 1, argv2, &error));
    g_assert_no_error (error);
    g_assert_cmpuint (bare->host_number, ==, 3);
    g_assert_true (bare->host_with_id);
    g_assert_cmpstr (bare->host_regex[0], ==, "^a");
    g_assert_true (bare->proxy_protocol);
    g_assert_true (gt_server_config_validate (bare, NULL, &error));
    g_assert_no_error (error);
  }
}

static void
test_users_file_precedence (void)
{
  g_autoptr (GtServerConfig) config = gt_server_config_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *path = test_file ("server-full.yaml");
  char *argv[] = { "--id", "bob", "--secret", "bob-cli-secret", "--id", "carol", "--secret",
                   "carol-cli-secret", "--id", "erin", "--secret", "erin-cli-secret", NULL };
  const GtUserConfig *user;

  /* config users < users file (whole entry) < --id/--secret (the entry, secret only). */
  g_assert_true (gt_server_config_load_file (config, path, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (gt_server_config_apply_args (config, G_N_ELEMENTS (argv) - 1, argv, &error));
  g_assert_no_error (error);
  g_assert_true (gt_server_config_validate (config, NULL, &error));
  g_assert_no_error (error);

  g_assert_cmpuint (config->users->len, ==, 4);
  user = gt_server_config_find_user (config, "alice");
  g_assert_cmpstr (user->secret, ==, "alice-config-secret");
  g_assert_cmpuint (user->speed, ==, 2048);
  user = gt_server_config_find_user (config, "bob");
  g_assert_cmpstr (user->secret, ==, "bob-cli-secret");
  g_assert_cmpint (user->tcp_number, ==, -1); /* not the users file's 2 */
  g_assert_cmpuint (user->line, ==, 0);
  user = gt_server_config_find_user (config, "carol");
  g_assert_cmpstr (user->secret, ==, "carol-cli-secret");
  g_assert_cmpuint (user->speed, ==, 0);
  g_assert_null (user->host_regex);
  user = gt_server_config_find_user (config, "erin");
  g_assert_cmpstr (user->secret, ==, "erin-cli-secret");
}

static void
test_users_file_errors (void)
{
  g_autofree char *path = test_file ("server-users-bad.yaml");
  g_autofree char *users = test_file ("users-bad.yaml");
  g_autofree char *expected = g_strdup_printf ("%s:4:10: bad number 'fast'", users);

  {
    g_autoptr (GtServerConfig) config = gt_server_config_new ();
    g_autoptr (GError) error = NULL;
    GtConfigIssue *issue = NULL;

    g_assert_true (gt_server_config_load_file (config, path, NULL, &error));
    g_assert_no_error (error);
    g_assert_false (gt_server_config_validate (config, &issue, &error));
    g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE);
    g_assert_cmpstr (error->message, ==, expected);
    g_assert_cmpstr (issue->file, ==, users);
    g_assert_cmpuint (issue->line, ==, 4);
    g_assert_cmpuint (issue->column, ==, 10);
    g_assert_null (strstr (error->message, "dave-secret"));
    gt_config_issue_free (issue);
  }
  /* A user of the users file without a secret: the place is in the users file. */
  {
    g_autoptr (GtServerConfig) config = gt_server_config_new ();
    g_autoptr (GError) error = NULL;
    g_autofree char *tmp = NULL;
    g_autofree char *yaml = NULL;
    g_autofree char *message = NULL;
    int fd = g_file_open_tmp ("gt-users-XXXXXX.yaml", &tmp, &error);

    g_assert_no_error (error);
    close (fd);
    g_assert_true (g_file_set_contents (tmp, "# users\nfrank:\n  tcpNumber: 1\n", -1, &error));
    yaml = g_strdup_printf ("options:\n  addr: 80\n  users: %s\n", tmp);
    g_assert_true (gt_server_config_load_data (config, yaml, -1, "u.yaml", NULL, &error));
    g_assert_no_error (error);
    g_assert_false (gt_server_config_validate (config, NULL, &error));
    message = g_strdup_printf ("%s:2:1: user 'frank' needs a secret of 1 to 200 bytes", tmp);
    g_assert_cmpstr (error->message, ==, message);
    g_unlink (tmp);
  }
  /* A missing users file. */
  {
    g_autoptr (GtServerConfig) config = gt_server_config_new ();
    g_autoptr (GError) error = NULL;

    g_assert_true (gt_server_config_load_data (config,
                                               "options:\n  addr: 80\n"
                                               "  users: /nonexistent/users.yaml\n",
                                               -1, "u.yaml", NULL, &error));
    g_assert_false (gt_server_config_validate (config, NULL, &error));
    g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_IO);
    g_assert_true (g_str_has_prefix (error->message,
                                     "/nonexistent/users.yaml: cannot read the file: "));
  }
}

static void
test_host_regex (void)
{
  const char *prefix = "r.yaml:3:7: bad host regex '(a': ";

  /* A regex that does not compile is an error at its place; GRegex says why. */
  {
    g_autoptr (GtServerConfig) config = gt_server_config_new ();
    g_autoptr (GError) error = NULL;
    g_assert_false (gt_server_config_load_data (config, "host:\n  regex:\n    - '(a'\n", -1,
                                                "r.yaml", NULL, &error));
    g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE);
    g_test_message ("%s", error->message);
    g_assert_true (g_str_has_prefix (error->message, prefix));
    g_assert_cmpuint (strlen (error->message), >, strlen (prefix));
  }
  {
    g_autoptr (GtServerConfig) config = gt_server_config_new ();
    g_autoptr (GError) error = NULL;
    g_assert_false (gt_server_config_load_data (config,
                                                "users:\n  u:\n    host: {regex: '[z'}\n", -1,
                                                "r.yaml", NULL, &error));
    g_assert_true (g_str_has_prefix (error->message, "r.yaml:3:19: bad host regex '[z': "));
  }
  {
    g_autoptr (GtServerConfig) config = gt_server_config_new ();
    g_autoptr (GError) error = NULL;
    char *argv[] = { "--hostRegex", "a)", NULL };
    g_assert_false (gt_server_config_apply_args (config, 2, argv, &error));
    g_assert_true (g_str_has_prefix (error->message,
                                     "command line: --hostRegex: bad host regex 'a)': "));
  }
  /* validate() compiles them again (values set by code, e.g. the web UI). */
  {
    g_autoptr (GtServerConfig) config = gt_server_config_new ();
    g_autoptr (GError) error = NULL;
    g_assert_true (gt_server_config_load_data (config,
                                               "options: {addr: 80}\nhost:\n  regex: [a, b]\n",
                                               -1, "r.yaml", NULL, &error));
    g_free (config->host_regex[1]);
    config->host_regex[1] = g_strdup ("b(");
    g_assert_false (gt_server_config_validate (config, NULL, &error));
    g_assert_true (g_str_has_prefix (error->message, "r.yaml:3:14: bad host regex 'b(': "));
  }
}

static void
test_server_validate_new (void)
{
  static const struct
  {
    const char *yaml;
    const char *expected;
  } cases[] = {
    { "options:\n  addr: 80\n  certFile: c.pem\n", "v.yaml:3:13: certFile is set without keyFile" },
    { "options:\n  tlsAddr: 443\n  keyFile: k.pem\n",
      "v.yaml:3:12: keyFile is set without certFile" },
    { "options:\n  addr: 80\n  apiAddr: 81\n  apiKeyFile: k.pem\n",
      "v.yaml:4:15: apiKeyFile is set without apiCertFile" },
    { "options:\n  addr: 80\n  proxyProtocol: true\n",
      "v.yaml:3:18: proxyProtocol needs proxyProtocolTrustedCIDRs" },
    { "options:\n  addr: 80\n  proxyProtocol: true\n  proxyProtocolTrustedCIDRs: []\n",
      "v.yaml:3:18: proxyProtocol needs proxyProtocolTrustedCIDRs" },
    { "options:\n  tlsAddr: 443\n  sniAddr: ':443'\n",
      "v.yaml:3:12: sniAddr 0.0.0.0:443 is also the address of tlsAddr" },
    { "options:\n  apiAddr: 8081\n", "v.yaml: no listener: set options.addr, tlsAddr, sniAddr or quicAddr" },
    { "options:\n  addr: 8080\n  turn: true\n",
      "v.yaml:3:9: turn needs stunAddr (TURN is served on the STUN socket)" },
    { "options:\n  addr: 8080\n  stunAddr: 3478\n  turn: true\n",
      "v.yaml:4:9: turn needs turnRelayAddr when stunAddr listens on every address (the IP "
      "peers reach relayed addresses on)" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GtServerConfig) config = gt_server_config_new ();
      g_autoptr (GError) error = NULL;

      g_test_message ("%s", cases[i].yaml);
      g_assert_true (gt_server_config_load_data (config, cases[i].yaml, -1, "v.yaml", NULL,
                                                 &error));
      g_assert_no_error (error);
      g_assert_false (gt_server_config_validate (config, NULL, &error));
      g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_INVALID);
      g_assert_cmpstr (error->message, ==, cases[i].expected);
    }

  /* turnRelayAddr is an IP address; by default stunAddr's. */
  {
    g_autoptr (GtServerConfig) config = gt_server_config_new ();
    g_autoptr (GError) error = NULL;
    g_assert_true (gt_server_config_load_data (config,
                                               "options:\n  addr: 8080\n  stunAddr: "
                                               "'[::1]:3478'\n  turn: true\n",
                                               -1, "v.yaml", NULL, &error));
    g_assert_true (gt_server_config_validate (config, NULL, &error));
    g_assert_cmpstr (config->turn_relay_addr, ==, "::1");
    g_assert_cmpuint (config->turn_max_allocations, ==, 10);
  }
  {
    g_autoptr (GtServerConfig) config = gt_server_config_new ();
    g_autoptr (GError) error = NULL;
    g_assert_true (gt_server_config_load_data (config,
                                               "options:\n  addr: 8080\n  stunAddr: 3478\n"
                                               "  turn: true\n  turnRelayAddr: relay\n",
                                               -1, "v.yaml", NULL, &error));
    g_assert_false (gt_server_config_validate (config, NULL, &error));
    g_assert_cmpstr (error->message, ==,
                     "v.yaml:5:18: bad turnRelayAddr 'relay': it must be an IP address");
  }
  /* Values from the command line are reported as such. */
  {
    g_autoptr (GtServerConfig) config = gt_server_config_new ();
    g_autoptr (GError) error = NULL;
    char *argv[] = { "--addr", "80", "--apiCertFile", "a.pem", NULL };
    g_assert_true (gt_server_config_apply_args (config, 4, argv, &error));
    g_assert_false (gt_server_config_validate (config, NULL, &error));
    g_assert_cmpstr (error->message, ==, "command line: apiCertFile is set without apiKeyFile");
  }
  /* Port 0 (any free port) may be shared; tlsAddr without cert and key is allowed (a
   * certificate is generated at run time). */
  {
    g_autoptr (GtServerConfig) config = gt_server_config_new ();
    g_autoptr (GError) error = NULL;
    g_assert_true (gt_server_config_load_data (config,
                                               "options: {addr: 0, tlsAddr: 0, sniAddr: 0, "
                                               "apiAddr: 0, tlsVersion: tls1.4}\n",
                                               -1, "v.yaml", NULL, &error));
    g_assert_true (warnings_contain (config->warnings,
                                     "v.yaml:1:68: unknown tlsVersion 'tls1.4': tls1.2 is used "
                                     "(use tls1.1, tls1.2 or tls1.3)"));
    g_assert_true (gt_server_config_validate (config, NULL, &error));
    g_assert_no_error (error);
    g_assert_cmpstr (config->api_addr, ==, "127.0.0.1:0");
    g_assert_cmpstr (config->tls_version, ==, "tls1.2");
  }
}

static void
test_api_addr (void)
{
  static const struct
  {
    const char *in, *out;
  } cases[] = {
    { "8081", "127.0.0.1:8081" },
    { ":8081", "127.0.0.1:8081" },
    { "0.0.0.0:8081", "0.0.0.0:8081" },
    { "[::1]:8081", "[::1]:8081" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GtServerConfig) config = gt_server_config_new ();
      g_autoptr (GError) error = NULL;
      char *argv[] = { "--apiAddr", (char *) cases[i].in, NULL };

      g_assert_true (gt_server_config_apply_args (config, 2, argv, &error));
      g_assert_no_error (error);
      g_assert_cmpstr (config->api_addr, ==, cases[i].out);
    }
}

/* The P2P keys: stunAddr on the server; remoteSTUN and the webrtc* keys on the client. */
static void
test_p2p_keys (void)
{
  static const char yaml[] = "options:\n"
                             "  id: a\n"
                             "  secret: b\n"
                             "  remote: tcp://127.0.0.1:1\n"
                             "  remoteSTUN:\n"
                             "    - stun:127.0.0.1:3478\n"
                             "    - stun:[::1]\n"
                             "  webrtcConnections: 200\n"
                             "  webrtcConnectionIdleTimeout: 30s\n"
                             "  webrtcMinPort: 50000\n"
                             "  webrtcMaxPort: 50100\n"
                             "services:\n"
                             "  - local: http://127.0.0.1:80\n";
  g_autoptr (GtClientConfig) config = gt_client_config_new ();
  g_autoptr (GtClientConfig) defaults = gt_client_config_new ();
  g_autoptr (GtServerConfig) server = gt_server_config_new ();
  g_autoptr (GError) error = NULL;
  char *argv[] = { "--remoteSTUN", "stun:10.0.0.1:19302", NULL };
  char *bad[] = { "--remoteSTUN", "http://x", NULL };
  char *server_argv[] = { "--stunAddr", "3478", NULL };

  g_assert_null (defaults->remote_stun);
  g_assert_cmpuint (defaults->webrtc_connections, ==, 30);
  g_assert_cmpuint (defaults->webrtc_idle_timeout_ms, ==, 5 * 60 * 1000);

  g_assert_true (gt_client_config_load_data (config, yaml, -1, NULL, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (g_strv_length (config->remote_stun), ==, 2);
  g_assert_cmpstr (config->remote_stun[1], ==, "stun:[::1]");
  g_assert_cmpuint (config->webrtc_connections, ==, 50); /* clamped as GT */
  g_assert_cmpuint (config->webrtc_idle_timeout_ms, ==, 30000);
  g_assert_cmpuint (config->webrtc_min_port, ==, 50000);
  g_assert_cmpuint (config->webrtc_max_port, ==, 50100);
  g_assert_cmpuint (config->warnings->len, ==, 0);
  g_assert_true (gt_client_config_validate (config, NULL, &error));

  /* The command line replaces the file's list. */
  g_assert_true (gt_client_config_apply_args (config, 2, argv, &error));
  g_assert_cmpuint (g_strv_length (config->remote_stun), ==, 1);
  g_assert_cmpstr (config->remote_stun[0], ==, "stun:10.0.0.1:19302");
  g_assert_false (gt_client_config_apply_args (config, 2, bad, &error));
  g_assert_nonnull (strstr (error->message, "remoteSTUN"));
  g_clear_error (&error);

  config->webrtc_max_port = 40000;
  g_assert_false (gt_client_config_validate (config, NULL, &error));
  g_assert_nonnull (strstr (error->message, "webrtcMaxPort"));
  g_clear_error (&error);

  g_assert_true (gt_server_config_apply_args (server, 2, server_argv, &error));
  g_assert_cmpstr (server->stun_addr, ==, "0.0.0.0:3478");
}

static void
test_remotes_and_cert (void)
{
  static const struct
  {
    const char *url, *scheme, *host;
    guint16 port;
    const char *path;
  } cases[] = {
    { "h", "tcp", "h", 80, NULL },
    { "h:81", "tcp", "h", 81, NULL },
    { "tcp://h/", "tcp", "h", 80, NULL },
    { "tls://h", "tls", "h", 443, NULL },
    { "TLS://h:8443", "tls", "h", 8443, NULL },
    { "ws://h", "ws", "h", 80, "/gt-tunnel" },
    { "ws://h:8080/", "ws", "h", 8080, "/" },
    { "wss://[::1]/a/b", "wss", "::1", 443, "/a/b" },
  };
  g_autofree char *pem = test_file ("client-gt.yaml"); /* any existing file */
  g_autofree char *yaml = NULL;

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GtClientConfig) config = gt_client_config_new ();
      g_autoptr (GError) error = NULL;
      char *argv[] = { "--remote", (char *) cases[i].url, NULL };

      g_test_message ("%s", cases[i].url);
      g_assert_true (gt_client_config_apply_args (config, 2, argv, &error));
      g_assert_no_error (error);
      g_assert_cmpstr (remote_at (config, 0)->scheme, ==, cases[i].scheme);
      g_assert_cmpstr (remote_at (config, 0)->host, ==, cases[i].host);
      g_assert_cmpuint (remote_at (config, 0)->port, ==, cases[i].port);
      g_assert_cmpstr (remote_at (config, 0)->path, ==, cases[i].path);
    }

  /* remoteCert: a file that must exist at validate(), or a pin. */
  {
    g_autoptr (GtClientConfig) config = gt_client_config_new ();
    g_autoptr (GError) error = NULL;
    g_assert_true (gt_client_config_load_data (config,
                                               "options:\n  id: a\n  secret: s\n"
                                               "  remote: tls://h\n"
                                               "  remoteCert: /nonexistent/ca.pem\n"
                                               "services: [{local: 'http://a'}]\n",
                                               -1, "c.yaml", NULL, &error));
    g_assert_no_error (error);
    g_assert_false (gt_client_config_validate (config, NULL, &error));
    g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_INVALID);
    g_assert_cmpstr (error->message, ==,
                     "c.yaml:5:15: remoteCert file '/nonexistent/ca.pem' does not exist (give a "
                     "PEM file or a sha256: pin)");
  }
  yaml = g_strdup_printf ("options:\n  id: a\n  secret: s\n  remote: wss://h\n"
                          "  remoteCert: %s\n  remoteCertInsecure: yes\n"
                          "services: [{local: 'http://a', proxyProtocol: V1}]\n",
                          pem);
  {
    g_autoptr (GtClientConfig) config = gt_client_config_new ();
    g_autoptr (GError) error = NULL;
    g_assert_true (gt_client_config_load_data (config, yaml, -1, "c.yaml", NULL, &error));
    g_assert_true (gt_client_config_validate (config, NULL, &error));
    g_assert_no_error (error);
    g_assert_cmpstr (config->remote_cert, ==, pem);
    g_assert_true (config->remote_cert_insecure);
    g_assert_cmpuint (service_at (config, 0)->proxy_protocol, ==, 1);
  }
  {
    g_autoptr (GtClientConfig) config = gt_client_config_new ();
    g_autoptr (GError) error = NULL;
    char *argv[] = { "--id", "a", "--secret", "s", "--remote", "tls://h", "--local", "http://a",
                     "--remoteCert",
                     "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                     NULL };
    g_assert_true (gt_client_config_apply_args (config, G_N_ELEMENTS (argv) - 1, argv, &error));
    g_assert_true (gt_client_config_validate (config, NULL, &error));
    g_assert_no_error (error);
    g_assert_true (g_str_has_prefix (config->remote_cert, "sha256:0000"));
    g_assert_false (config->remote_cert_insecure);
  }
}

static void
test_new_secrets_not_printed (void)
{
  g_autoptr (GtServerConfig) config = gt_server_config_new ();
  g_autoptr (GError) error = NULL;

  /* A user:password in the auth URL is refused without repeating it. */
  g_assert_false (gt_server_config_load_data (
    config, "options:\n  authAPI: https://op:hunter2@a.example/\n", -1, "s.yaml", NULL, &error));
  g_assert_cmpstr (error->message, ==,
                   "s.yaml:2:12: bad authAPI URL: user information in the URL is not supported");
}

/* ------------------------------------------------------------------------------------------ */
/* Table-driven keys: every per-service and per-user key, from YAML and the command line */

typedef struct
{
  const char *key;
  const char *local; /* the service's local URL */
  const char *value; /* YAML scalar and command-line value */
  void (*check) (const GtServiceConfig *service);
} ServiceKeyCase;

static void
check_host_prefix (const GtServiceConfig *s)
{
  g_assert_cmpstr (s->host_prefix, ==, "web-1");
}

static void
check_remote_tcp_port (const GtServiceConfig *s)
{
  g_assert_cmpuint (s->remote_tcp_port, ==, 15432);
  g_assert_false (s->remote_tcp_random); /* a port given: random only when asked */
}

static void
check_remote_tcp_port_zero (const GtServiceConfig *s)
{
  g_assert_cmpuint (s->remote_tcp_port, ==, 0);
  g_assert_true (s->remote_tcp_random);
}

static void
check_remote_tcp_random_off (const GtServiceConfig *s)
{
  g_assert_cmpuint (s->remote_tcp_port, ==, 0);
  g_assert_false (s->remote_tcp_random);
}

static void
check_use_local_as_http_host (const GtServiceConfig *s)
{
  g_assert_true (s->use_local_as_http_host);
}

static void
check_remote_udp_port (const GtServiceConfig *s)
{
  g_assert_cmpint (s->kind, ==, GT_SERVICE_KIND_UDP);
  g_assert_cmpuint (s->remote_udp_port, ==, 5353);
  g_assert_false (s->remote_udp_random);
  g_assert_cmpuint (s->remote_tcp_port, ==, 0);
}

static void
check_remote_udp_random (const GtServiceConfig *s)
{
  g_assert_cmpuint (s->remote_udp_port, ==, 0);
  g_assert_true (s->remote_udp_random);
  g_assert_false (s->remote_tcp_random);
}

static void
check_local_timeout (const GtServiceConfig *s)
{
  g_assert_cmpuint (s->local_timeout_ms, ==, 1500);
}

static void
check_local_timeout_zero (const GtServiceConfig *s)
{
  g_assert_cmpuint (s->local_timeout_ms, ==, 120000);
}

static void
check_proxy_protocol_v1 (const GtServiceConfig *s)
{
  g_assert_cmpuint (s->proxy_protocol, ==, 1);
}

static void
check_proxy_protocol_v2 (const GtServiceConfig *s)
{
  g_assert_cmpuint (s->proxy_protocol, ==, 2);
}

static const ServiceKeyCase service_key_cases[] = {
  { "hostPrefix", "http://127.0.0.1:3000", "Web-1", check_host_prefix },
  { "remoteTCPPort", "tcp://127.0.0.1:5432", "15432", check_remote_tcp_port },
  { "remoteTCPPort", "tcp://127.0.0.1:5432", "0", check_remote_tcp_port_zero },
  { "remoteTCPRandom", "tcp://127.0.0.1:5432", "false", check_remote_tcp_random_off },
  { "remoteTCPRandom", "tcp://127.0.0.1:5432", "yes", check_remote_tcp_port_zero },
  { "remoteUDPPort", "udp://127.0.0.1:53", "5353", check_remote_udp_port },
  { "remoteUDPRandom", "udp://127.0.0.1:53", "yes", check_remote_udp_random },
  { "useLocalAsHTTPHost", "http://127.0.0.1:3000", "on", check_use_local_as_http_host },
  { "localTimeout", "http://127.0.0.1:3000", "1.5s", check_local_timeout },
  { "localTimeout", "http://127.0.0.1:3000", "0", check_local_timeout_zero },
  { "proxyProtocol", "tcp://127.0.0.1:5432", "v1", check_proxy_protocol_v1 },
  { "proxyProtocol", "http://127.0.0.1:3000", "2", check_proxy_protocol_v2 },
};

static void
assert_services_equal (const GtServiceConfig *a, const GtServiceConfig *b)
{
  g_assert_cmpint (a->kind, ==, b->kind);
  g_assert_cmpstr (a->local_url, ==, b->local_url);
  g_assert_cmpstr (a->host_prefix, ==, b->host_prefix);
  g_assert_cmpuint (a->remote_tcp_port, ==, b->remote_tcp_port);
  g_assert_cmpint (a->remote_tcp_random, ==, b->remote_tcp_random);
  g_assert_cmpuint (a->remote_udp_port, ==, b->remote_udp_port);
  g_assert_cmpint (a->remote_udp_random, ==, b->remote_udp_random);
  g_assert_cmpint (a->use_local_as_http_host, ==, b->use_local_as_http_host);
  g_assert_cmpuint (a->local_timeout_ms, ==, b->local_timeout_ms);
  g_assert_cmpuint (a->proxy_protocol, ==, b->proxy_protocol);
}

static void
test_service_keys (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (service_key_cases); i++)
    {
      const ServiceKeyCase *c = &service_key_cases[i];
      g_autoptr (GtClientConfig) from_yaml = gt_client_config_new ();
      g_autoptr (GtClientConfig) from_args = gt_client_config_new ();
      g_autoptr (GtClientConfig) from_inline = gt_client_config_new ();
      g_autoptr (GError) error = NULL;
      g_autofree char *yaml = g_strdup_printf ("services:\n  - local: %s\n    %s: %s\n",
                                               c->local, c->key, c->value);
      g_autofree char *option = g_strdup_printf ("-%s", c->key);
      g_autofree char *inline_option = g_strdup_printf ("--%s=%s", c->key, c->value);
      gboolean flag = _gt_config_opt_find (GT_CONFIG_KEYS_SERVICE, c->key)->type == GT_OPT_BOOL;
      /* A boolean's value must be inline (`--key value` would be a bare flag and an argument). */
      char *argv[] = { "-local", (char *) c->local, option, (char *) c->value, NULL };
      char *inline_argv[] = { inline_option, "--local", (char *) c->local, NULL };

      g_test_message ("%s: %s", c->key, c->value);
      g_assert_true (gt_client_config_load_data (from_yaml, yaml, -1, "c.yaml", NULL, &error));
      g_assert_no_error (error);
      dump_warnings (from_yaml->warnings);
      g_assert_cmpuint (from_yaml->warnings->len, ==, 0);
      g_assert_cmpuint (from_yaml->services->len, ==, 1);
      c->check (service_at (from_yaml, 0));

      if (!flag)
        {
          g_assert_true (gt_client_config_apply_args (from_args, G_N_ELEMENTS (argv) - 1, argv,
                                                      &error));
          g_assert_no_error (error);
          g_assert_cmpuint (from_args->warnings->len, ==, 0);
          g_assert_cmpuint (from_args->services->len, ==, 1);
          c->check (service_at (from_args, 0));
          assert_services_equal (service_at (from_yaml, 0), service_at (from_args, 0));
        }

      /* With a single --local, its options may come before it. */
      g_assert_true (gt_client_config_apply_args (from_inline, G_N_ELEMENTS (inline_argv) - 1,
                                                  inline_argv, &error));
      g_assert_no_error (error);
      g_assert_cmpuint (from_inline->warnings->len, ==, 0);
      g_assert_cmpuint (from_inline->services->len, ==, 1);
      c->check (service_at (from_inline, 0));
      assert_services_equal (service_at (from_yaml, 0), service_at (from_inline, 0));
    }
}

/* The boolean service keys are bare flags on the command line. */
static void
test_service_keys_bare (void)
{
  g_autoptr (GtClientConfig) config = gt_client_config_new ();
  g_autoptr (GError) error = NULL;
  char *argv[] = { "--local", "tcp://127.0.0.1:5432", "--remoteTCPPort", "7000",
                   "--remoteTCPRandom", "--local", "http://127.0.0.1:80", "--useLocalAsHTTPHost",
                   NULL };

  g_assert_true (gt_client_config_apply_args (config, G_N_ELEMENTS (argv) - 1, argv, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (service_at (config, 0)->remote_tcp_port, ==, 7000);
  g_assert_true (service_at (config, 0)->remote_tcp_random);
  g_assert_false (service_at (config, 0)->use_local_as_http_host);
  g_assert_true (service_at (config, 1)->use_local_as_http_host);
  g_assert_false (service_at (config, 1)->remote_tcp_random);
}

typedef struct
{
  const char *key;
  const char *value;
  const char *message;
} BadKeyCase;

static const BadKeyCase bad_service_keys[] = {
  { "hostPrefix", "a_b", "bad host prefix 'a_b': use 1 to 63 letters, digits or '-'" },
  { "remoteTCPPort", "70000", "bad port '70000'" },
  { "remoteTCPRandom", "maybe", "bad boolean 'maybe' (use true/false, yes/no or on/off)" },
  { "remoteUDPPort", "65536", "bad port '65536'" },
  { "remoteUDPRandom", "2", "bad boolean '2' (use true/false, yes/no or on/off)" },
  { "useLocalAsHTTPHost", "2", "bad boolean '2' (use true/false, yes/no or on/off)" },
  { "localTimeout", "5 parsecs", "bad duration '5 parsecs' (examples: 90s, 1m30s, 250ms)" },
  { "proxyProtocol", "v3", "bad proxyProtocol 'v3' (use v1 or v2)" },
};

static void
test_service_keys_bad (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (bad_service_keys); i++)
    {
      const BadKeyCase *c = &bad_service_keys[i];
      g_autoptr (GtClientConfig) from_yaml = gt_client_config_new ();
      g_autoptr (GtClientConfig) from_args = gt_client_config_new ();
      g_autoptr (GError) error = NULL;
      g_autofree char *yaml = g_strdup_printf ("services:\n  - local: tcp://h:1\n    %s: %s\n",
                                               c->key, c->value);
      g_autofree char *yaml_message = g_strdup_printf ("c.yaml:3:%u: %s",
                                                       (guint) strlen (c->key) + 7, c->message);
      g_autofree char *option = g_strdup_printf ("--%s=%s", c->key, c->value);
      g_autofree char *args_message = g_strdup_printf ("command line: --%s: %s", c->key,
                                                       c->message);
      char *argv[] = { "--local", "tcp://h:1", option, NULL };

      g_assert_false (gt_client_config_load_data (from_yaml, yaml, -1, "c.yaml", NULL, &error));
      g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE);
      g_assert_cmpstr (error->message, ==, yaml_message);
      g_clear_error (&error);

      g_assert_false (gt_client_config_apply_args (from_args, G_N_ELEMENTS (argv) - 1, argv,
                                                   &error));
      g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE);
      g_assert_cmpstr (error->message, ==, args_message);
    }
}

typedef struct
{
  const char *key;
  const char *value; /* YAML, may be a flow collection */
  void (*check) (const GtUserConfig *user);
} UserKeyCase;

static void
check_user_secret (const GtUserConfig *u)
{
  g_assert_cmpstr (u->secret, ==, "s3cret");
}

static void
check_user_tcp (const GtUserConfig *u)
{
  g_assert_nonnull (u->tcp_ranges);
  g_assert_cmpuint (u->tcp_ranges->len, ==, 2);
  g_assert_cmpuint (g_array_index (u->tcp_ranges, GtPortRange, 0).first, ==, 2000);
  g_assert_cmpuint (g_array_index (u->tcp_ranges, GtPortRange, 0).last, ==, 2010);
  g_assert_cmpuint (g_array_index (u->tcp_ranges, GtPortRange, 1).first, ==, 3000);
  g_assert_cmpuint (g_array_index (u->tcp_ranges, GtPortRange, 1).last, ==, 3000);
}

static void
check_user_tcp_number (const GtUserConfig *u)
{
  g_assert_cmpint (u->tcp_number, ==, 65535);
}

static void
check_user_tcp_number_zero (const GtUserConfig *u)
{
  g_assert_cmpint (u->tcp_number, ==, 0);
}

static void
check_user_udp_number (const GtUserConfig *u)
{
  g_assert_cmpint (u->udp_number, ==, 3);
  g_assert_cmpint (u->tcp_number, ==, -1);
}

static void
check_user_speed (const GtUserConfig *u)
{
  g_assert_cmpuint (u->speed, ==, G_MAXUINT32);
}

static void
check_user_connections (const GtUserConfig *u)
{
  g_assert_cmpint (u->connections, ==, 4);
}

static void
check_user_connections_zero (const GtUserConfig *u)
{
  g_assert_cmpint (u->connections, ==, -1); /* GT: 0 = options.connections */
}

static void
check_user_host (const GtUserConfig *u)
{
  g_assert_cmpint (u->host_number, ==, 2);
  g_assert_cmpint (u->host_with_id, ==, 1);
  g_assert_nonnull (u->host_regex);
  g_assert_cmpstr (u->host_regex[0], ==, "^a");
  g_assert_null (u->host_regex[1]);
}

static const UserKeyCase user_key_cases[] = {
  { "secret", "s3cret", check_user_secret },
  { "tcp", "[{range: 2000-2010}, {range: '3000'}]", check_user_tcp },
  { "tcpNumber", "65535", check_user_tcp_number },
  { "tcpNumber", "0", check_user_tcp_number_zero },
  { "udpNumber", "3", check_user_udp_number },
  { "speed", "4294967295", check_user_speed },
  { "connections", "4", check_user_connections },
  { "connections", "0", check_user_connections_zero },
  { "host", "{number: 2, withID: true, regex: ['^a']}", check_user_host },
};

static void
test_user_keys (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (user_key_cases); i++)
    {
      const UserKeyCase *c = &user_key_cases[i];
      g_autoptr (GtServerConfig) config = gt_server_config_new ();
      g_autoptr (GError) error = NULL;
      g_autofree char *yaml = g_strdup_printf ("users:\n  u:\n    %s: %s\n", c->key, c->value);
      const GtUserConfig *user;

      g_test_message ("%s: %s", c->key, c->value);
      g_assert_true (gt_server_config_load_data (config, yaml, -1, "s.yaml", NULL, &error));
      g_assert_no_error (error);
      dump_warnings (config->warnings);
      g_assert_cmpuint (config->warnings->len, ==, 0);
      user = gt_server_config_find_user (config, "u");
      g_assert_nonnull (user);
      c->check (user);
    }
}

/* GT's command line has the users' id and secret; they give the same user as the file. */
static void
test_user_keys_cli (void)
{
  g_autoptr (GtServerConfig) from_yaml = gt_server_config_new ();
  g_autoptr (GtServerConfig) from_args = gt_server_config_new ();
  g_autoptr (GError) error = NULL;
  char *argv[] = { "--id", "u", "-secret=s3cret", NULL };
  const GtUserConfig *a, *b;

  g_assert_true (gt_server_config_load_data (from_yaml, "users:\n  u:\n    secret: s3cret\n",
                                             -1, "s.yaml", NULL, &error));
  g_assert_no_error (error);
  g_assert_true (gt_server_config_apply_args (from_args, G_N_ELEMENTS (argv) - 1, argv, &error));
  g_assert_no_error (error);
  a = gt_server_config_find_user (from_yaml, "u");
  b = gt_server_config_find_user (from_args, "u");
  g_assert_nonnull (a);
  g_assert_nonnull (b);
  g_assert_cmpstr (a->secret, ==, b->secret);
  g_assert_cmpint (a->tcp_number, ==, b->tcp_number);
  g_assert_cmpint (a->udp_number, ==, b->udp_number);
  g_assert_cmpint (a->connections, ==, b->connections);
  g_assert_cmpuint (a->speed, ==, b->speed);
  g_assert_cmpint (a->host_number, ==, b->host_number);
  g_assert_cmpint (a->host_with_id, ==, b->host_with_id);
  g_assert_null (b->tcp_ranges);
}

static const BadKeyCase bad_user_keys[] = {
  { "secret", "''", "secret of user 'u' must be 1 to 200 bytes" },
  { "tcpNumber", "65536", "number '65536' is too large (at most 65535)" },
  { "speed", "-1", "bad number '-1': must not be negative" },
  { "connections", "x", "bad number 'x'" },
  { "connections", "2147483648", "number '2147483648' is too large (at most 2147483647)" },
};

static void
test_user_keys_bad (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (bad_user_keys); i++)
    {
      const BadKeyCase *c = &bad_user_keys[i];
      g_autoptr (GtServerConfig) config = gt_server_config_new ();
      g_autoptr (GError) error = NULL;
      g_autofree char *yaml = g_strdup_printf ("users:\n  u:\n    %s: %s\n", c->key, c->value);
      g_autofree char *message = g_strdup_printf ("s.yaml:3:%u: %s", (guint) strlen (c->key) + 7,
                                                  c->message);

      g_assert_false (gt_server_config_load_data (config, yaml, -1, "s.yaml", NULL, &error));
      g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE);
      g_assert_cmpstr (error->message, ==, message);
    }
}

/* Every row of the key tables has a case above: a new key comes with its test. */
/* udp: the server's udpRanges, udpNumber and udpTimeout in YAML and on the command line, a
 * client's udp:// service from the file and from --local. */
static void
test_udp_keys (void)
{
  g_autoptr (GtServerConfig) server = gt_server_config_new ();
  g_autoptr (GtServerConfig) defaults = gt_server_config_new ();
  g_autoptr (GtClientConfig) client = gt_client_config_new ();
  g_autoptr (GError) error = NULL;
  const char *yaml = "options:\n  addr: 8080\n  udpRanges: ['20000-20010', '30000']\n"
                     "  udpNumber: 2\n"
                     "  udpTimeout: 5s\nusers:\n  u:\n    secret: s\n    udpNumber: 1\n";
  char *argv[] = { "--udpRanges", "40000-40001", "--udpRanges=41000", "--udpNumber", "7", NULL };
  char *cargv[] = { "--id", "c", "--secret", "s", "--remote", "tcp://h:1", "--local",
                    "udp://127.0.0.1:53", "--remoteUDPPort", "5300", NULL };
  const GtServiceConfig *svc;
  GtPortRange *r;

  g_assert_true (gt_server_config_load_data (server, yaml, -1, "s.yaml", NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (server->warnings->len, ==, 0);
  g_assert_true (gt_server_config_validate (server, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (server->udp_ranges->len, ==, 2);
  r = &g_array_index (server->udp_ranges, GtPortRange, 0);
  g_assert_cmpuint (r->first, ==, 20000);
  g_assert_cmpuint (r->last, ==, 20010);
  r = &g_array_index (server->udp_ranges, GtPortRange, 1);
  g_assert_cmpuint (r->first, ==, 30000);
  g_assert_cmpuint (r->last, ==, 30000);
  g_assert_cmpuint (server->udp_number, ==, 2);
  g_assert_cmpuint (server->udp_timeout_ms, ==, 5000);
  g_assert_cmpint (gt_server_config_find_user (server, "u")->udp_number, ==, 1);
  /* The command line replaces the file's ranges. */
  g_assert_true (gt_server_config_apply_args (server, G_N_ELEMENTS (argv) - 1, argv, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (server->udp_ranges->len, ==, 2);
  g_assert_cmpuint (g_array_index (server->udp_ranges, GtPortRange, 0).first, ==, 40000);
  g_assert_cmpuint (g_array_index (server->udp_ranges, GtPortRange, 1).last, ==, 41000);
  g_assert_cmpuint (server->udp_number, ==, 7);

  /* Defaults: no pool, no limit, 60 s. */
  g_assert_true (gt_server_config_load_data (defaults, "options: {addr: 8080}\n", -1, "d.yaml",
                                             NULL, &error));
  g_assert_true (gt_server_config_validate (defaults, NULL, &error));
  g_assert_no_error (error);
  g_assert_null (defaults->udp_ranges);
  g_assert_cmpuint (defaults->udp_number, ==, 0);
  g_assert_cmpuint (defaults->udp_timeout_ms, ==, 60000);

  {
    g_autoptr (GtServerConfig) bad = gt_server_config_new ();

    g_assert_false (gt_server_config_load_data (bad, "options:\n  udpRanges: [9-2]\n", -1,
                                                "b.yaml", NULL, &error));
    g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE);
    g_assert_true (g_str_has_prefix (error->message, "b.yaml:2:15: "));
    g_clear_error (&error);
  }

  {
    g_autoptr (GtClientConfig) bad = gt_client_config_new ();

    g_assert_false (gt_client_config_load_data (bad, "services:\n  - local: udp://a\n", -1,
                                                "c.yaml", NULL, &error));
    g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE);
    g_assert_cmpstr (error->message, ==, "c.yaml:2:12: bad local URL 'udp://a': udp needs a port");
    g_clear_error (&error);
  }
  g_assert_true (gt_client_config_apply_args (client, G_N_ELEMENTS (cargv) - 1, cargv, &error));
  g_assert_no_error (error);
  g_assert_true (gt_client_config_validate (client, NULL, &error));
  g_assert_no_error (error);
  svc = client->services->pdata[0];
  g_assert_cmpint (svc->kind, ==, GT_SERVICE_KIND_UDP);
  g_assert_cmpstr (svc->local_host, ==, "127.0.0.1");
  g_assert_cmpuint (svc->local_port, ==, 53);
  g_assert_cmpuint (svc->remote_udp_port, ==, 5300);
  g_assert_false (svc->remote_udp_random);
  g_assert_null (svc->host_prefix);
}

static void
test_key_tables_covered (void)
{
  const GtConfigOpt *rows;
  gsize n = 0;

  rows = _gt_config_opts (GT_CONFIG_KEYS_SERVICE, &n);
  g_assert_cmpuint (n, >, 0);
  for (gsize i = 0; i < n; i++)
    {
      gboolean good = FALSE, bad = FALSE;

      for (guint j = 0; j < G_N_ELEMENTS (service_key_cases); j++)
        good |= strcmp (service_key_cases[j].key, rows[i].name) == 0;
      for (guint j = 0; j < G_N_ELEMENTS (bad_service_keys); j++)
        bad |= strcmp (bad_service_keys[j].key, rows[i].name) == 0;
      g_test_message ("service key %s", rows[i].name);
      g_assert_true (good && bad);
      g_assert_nonnull (rows[i].help);
      g_assert_true (_gt_config_opt_find (GT_CONFIG_KEYS_SERVICE, rows[i].name) == &rows[i]);
    }
  rows = _gt_config_opts (GT_CONFIG_KEYS_USER, &n);
  g_assert_cmpuint (n, >, 0);
  for (gsize i = 0; i < n; i++)
    {
      gboolean good = FALSE;

      for (guint j = 0; j < G_N_ELEMENTS (user_key_cases); j++)
        good |= strcmp (user_key_cases[j].key, rows[i].name) == 0;
      g_test_message ("user key %s", rows[i].name);
      g_assert_true (good);
      g_assert_nonnull (rows[i].help);
    }
}

/* The listener keys are the rows of gt_listener_info(), in YAML, on the command line and in
 * validation. */
static void
test_listener_keys (void)
{
  for (guint kind = 0; kind < GT_N_LISTENERS; kind++)
    {
      const char *key = gt_listener_info (kind)->key;
      g_autoptr (GtServerConfig) from_yaml = gt_server_config_new ();
      g_autoptr (GtServerConfig) from_args = gt_server_config_new ();
      g_autoptr (GtServerConfig) both = gt_server_config_new ();
      g_autoptr (GError) error = NULL;
      g_autofree char *yaml = g_strdup_printf ("options:\n  %s: 127.0.0.1:%u\n", key,
                                               9000 + kind);
      g_autofree char *option = g_strdup_printf ("--%s=%u", key, 9100 + kind);
      g_autofree char *expected = g_strdup_printf ("0.0.0.0:%u", 9100 + kind);
      g_autofree char *in_yaml = g_strdup_printf ("127.0.0.1:%u", 9000 + kind);
      g_autofree char *clash = NULL;
      char *argv[] = { option, NULL };

      g_assert_true (gt_server_config_load_data (from_yaml, yaml, -1, "s.yaml", NULL, &error));
      g_assert_no_error (error);
      g_assert_cmpuint (from_yaml->warnings->len, ==, 0);
      for (guint other = 0; other < GT_N_LISTENERS; other++)
        g_assert_cmpstr (gt_listener_get_addr (from_yaml, other), ==,
                         other == kind ? in_yaml : NULL);
      g_assert_true (gt_server_config_validate (from_yaml, NULL, &error));
      g_assert_no_error (error);

      g_assert_true (gt_server_config_apply_args (from_args, 1, argv, &error));
      g_assert_no_error (error);
      g_assert_cmpstr (gt_listener_get_addr (from_args, kind), ==, expected);

      /* GT's `-addr ""`: no such listener, also over the file's value. */
      {
        g_autofree char *empty = g_strdup_printf ("--%s=", key);
        char *argv_empty[] = { empty, NULL };

        g_assert_true (gt_server_config_apply_args (from_yaml, 1, argv_empty, &error));
        g_assert_no_error (error);
        g_assert_null (gt_listener_get_addr (from_yaml, kind));
      }

      /* Two listeners on one address: the later key is named, at its place. */
      if (kind == 0)
        continue;
      clash = g_strdup_printf ("options:\n  %s: 127.0.0.1:9000\n  %s: 127.0.0.1:9000\n",
                               gt_listener_info (0)->key, key);
      g_assert_true (gt_server_config_load_data (both, clash, -1, "s.yaml", NULL, &error));
      if (gt_listener_info (kind)->datagram)
        {
          /* UDP beside TCP on one address is no clash. */
          g_assert_true (gt_server_config_validate (both, NULL, &error));
          g_assert_no_error (error);
          continue;
        }
      g_assert_false (gt_server_config_validate (both, NULL, &error));
      g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_INVALID);
      g_assert_true (g_str_has_prefix (error->message, "s.yaml:3:"));
      g_assert_nonnull (strstr (error->message, key));
    }
}

/* The command-line help comes from the same rows: every key, with its kind of value. */
static void
test_describe_options (void)
{
  g_autofree char *server = gt_config_describe_options (GT_CONFIG_KIND_SERVER);
  g_autofree char *client = gt_config_describe_options (GT_CONFIG_KIND_CLIENT);
  static const char *const server_lines[] = {
    "  --addr ADDR ", "  --tlsAddr ADDR ", "  --sniAddr ADDR ", "  --timeout DURATION ",
    "  --allowAnyClient ", "  --proxyProtocolTrustedCIDRs CIDR ", "  --users FILE ",
  };
  static const char *const client_lines[] = {
    "  --remote URL ", "  --remoteCert FILE|PIN ", "  --remoteCertInsecure ", "  --local URL ",
    "  --hostPrefix NAME ", "  --remoteTCPPort PORT ", "  --remoteTCPRandom ",
    "  --useLocalAsHTTPHost ", "  --localTimeout DURATION ", "  --proxyProtocol v1|v2 ",
  };
  const char *local_at;

  g_test_message ("server:\n%s", server);
  g_test_message ("client:\n%s", client);
  for (guint i = 0; i < G_N_ELEMENTS (server_lines); i++)
    g_assert_nonnull (strstr (server, server_lines[i]));
  for (guint i = 0; i < G_N_ELEMENTS (client_lines); i++)
    g_assert_nonnull (strstr (client, client_lines[i]));
  /* Service options come after --local, client options before it. */
  local_at = strstr (client, "  --local URL ");
  g_assert_true (strstr (client, "  --hostPrefix ") > local_at);
  g_assert_true (strstr (client, "  --remote URL ") < local_at);
  g_assert_null (strstr (server, "--hostPrefix"));
  g_assert_null (strstr (client, "--tlsAddr"));
}

/* GT's tcpForwardAddr/tcpForwardHostPrefix (YAML and GT's one-dash flags) and the server's
 * tcpForwardAllow rules. */
static void
test_tcp_forward (void)
{
  {
    g_autoptr (GtClientConfig) config = gt_client_config_new ();
    g_autoptr (GError) error = NULL;
    char *argv[] = { "-tcpForwardAddr", "127.0.0.1:2222", "-tcpForwardHostPrefix=Web", NULL };

    g_assert_true (gt_client_config_load_data (config,
                                               "options: {id: b, secret: s, remote: h}\n", -1,
                                               "f.yaml", NULL, &error));
    g_assert_true (gt_client_config_apply_args (config, 3, argv, &error));
    g_assert_no_error (error);
    /* No service of its own: a client that only forwards. */
    g_assert_true (gt_client_config_validate (config, NULL, &error));
    g_assert_no_error (error);
    g_assert_cmpstr (config->tcp_forward_addr, ==, "127.0.0.1:2222");
    g_assert_cmpstr (config->tcp_forward_host_prefix, ==, "web");
    g_assert_cmpuint (config->warnings->len, ==, 0);
  }
  {
    g_autoptr (GtClientConfig) config = gt_client_config_new ();
    g_autoptr (GError) error = NULL;

    g_assert_true (gt_client_config_load_data (config,
                                               "options: {id: b, secret: s, remote: h,\n"
                                               "  tcpForwardAddr: ':2222'}\n",
                                               -1, "f.yaml", NULL, &error));
    g_assert_cmpstr (config->tcp_forward_addr, ==, "0.0.0.0:2222");
    g_assert_false (gt_client_config_validate (config, NULL, &error));
    g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_INVALID);
    g_assert_nonnull (strstr (error->message, "tcpForwardAddr and tcpForwardHostPrefix go "
                                              "together"));
  }
  {
    g_autoptr (GtClientConfig) config = gt_client_config_new ();
    g_autoptr (GError) error = NULL;

    g_assert_false (gt_client_config_load_data (config,
                                                "options: {tcpForwardHostPrefix: 'a.b'}\n", -1,
                                                "f.yaml", NULL, &error));
    g_assert_nonnull (strstr (error->message, "bad host prefix 'a.b'"));
  }
  {
    g_autoptr (GtServerConfig) config = gt_server_config_new ();
    g_autoptr (GError) error = NULL;
    char *argv[] = { "--tcpForwardAllow", "ops:*", NULL };

    g_assert_true (gt_server_config_load_data (config,
                                               "options:\n  tcpForwardAllow: [b:web, '*:db', "
                                               "'x:y:Z']\n",
                                               -1, "s.yaml", NULL, &error));
    g_assert_no_error (error);
    g_assert_cmpuint (g_strv_length (config->tcp_forward_allow), ==, 3);
    g_assert_cmpstr (config->tcp_forward_allow[2], ==, "x:y:Z"); /* id "x:y", prefix Z */
    /* The command line replaces the file's list. */
    g_assert_true (gt_server_config_apply_args (config, 2, argv, &error));
    g_assert_no_error (error);
    g_assert_cmpuint (g_strv_length (config->tcp_forward_allow), ==, 1);
    g_assert_cmpstr (config->tcp_forward_allow[0], ==, "ops:*");
  }
  {
    const char *bad[] = { "b", ":web", "b:", "b:a.b", "b c:web" };

    for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
      {
        g_autoptr (GtServerConfig) config = gt_server_config_new ();
        g_autoptr (GError) error = NULL;
        g_autofree char *yaml = g_strdup_printf ("options:\n  tcpForwardAllow: ['%s']\n", bad[i]);

        g_test_message ("%s", bad[i]);
        g_assert_false (gt_server_config_load_data (config, yaml, -1, "s.yaml", NULL, &error));
        g_assert_nonnull (strstr (error->message, "bad tcpForwardAllow rule"));
      }
  }
}

/* remoteTURN: a turn: URL, only with remoteSTUN; its host and port for the peers. */
static void
test_client_turn (void)
{
  static const struct
  {
    const char *yaml;
    const char *expected; /* NULL: valid */
  } cases[] = {
    { "options: {id: a, secret: s, remote: 'tcp://h:1', remoteSTUN: 'stun:h:3478', "
      "remoteTURN: 'turn:relay.example.org:5349'}\nservices: [{local: 'tcp://127.0.0.1:1'}]\n",
      NULL },
    { "options: {id: a, secret: s, remote: 'tcp://h:1', remoteSTUN: 'stun:h:3478', "
      "remoteTURN: 'stun:h:3478'}\nservices: [{local: 'tcp://127.0.0.1:1'}]\n",
      "c.yaml: bad remoteTURN 'stun:h:3478': use turn:host[:port]" },
    { "options: {id: a, secret: s, remote: 'tcp://h:1', remoteTURN: 'turn:h'}\n"
      "services: [{local: 'tcp://127.0.0.1:1'}]\n",
      "c.yaml: remoteTURN needs remoteSTUN (P2P is on only with remoteSTUN)" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GtClientConfig) config = gt_client_config_new ();
      g_autoptr (GError) error = NULL;
      g_autofree char *host = NULL;
      guint16 port = 0;

      g_test_message ("%s", cases[i].yaml);
      g_assert_true (gt_client_config_load_data (config, cases[i].yaml, -1, "c.yaml", NULL,
                                                 &error));
      if (cases[i].expected == NULL)
        {
          g_assert_true (gt_client_config_validate (config, NULL, &error));
          g_assert_true (gt_client_config_get_turn (config, &host, &port));
          g_assert_cmpstr (host, ==, "relay.example.org");
          g_assert_cmpuint (port, ==, 5349);
        }
      else
        {
          g_assert_false (gt_client_config_validate (config, NULL, &error));
          g_assert_cmpstr (error->message, ==, cases[i].expected);
        }
    }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/gt/core/config/server/defaults", test_server_defaults);
  g_test_add_func ("/gt/core/config/server/cluster", test_server_cluster);
  g_test_add_func ("/gt/core/config/client/defaults", test_client_defaults);
  g_test_add_func ("/gt/core/config/server/gt-example", test_server_gt_example);
  g_test_add_func ("/gt/core/config/client/gt-example", test_client_gt_example);
  g_test_add_func ("/gt/core/config/unsupported-levels", test_unsupported_levels);
  g_test_add_func ("/gt/core/config/demo-files", test_demo_files);
  g_test_add_func ("/gt/core/config/unknown-key", test_unknown_key);
  g_test_add_func ("/gt/core/config/tcp-forward", test_tcp_forward);
  for (guint i = 0; i < G_N_ELEMENTS (bad_files); i++)
    {
      g_autofree char *name = g_strdup_printf ("/gt/core/config/bad-file/%s", bad_files[i].file);
      g_test_add_data_func (name, &bad_files[i], test_bad_file);
    }
  g_test_add_func ("/gt/core/config/bad-data", test_bad_data);
  g_test_add_func ("/gt/core/config/missing-file", test_missing_file);
  g_test_add_func ("/gt/core/config/zero-means-default", test_zero_means_default);
  g_test_add_func ("/gt/core/config/booleans", test_booleans);
  g_test_add_func ("/gt/core/config/durations", test_durations);
  g_test_add_func ("/gt/core/config/listen-addr", test_listen_addr);
  g_test_add_func ("/gt/core/config/port-range", test_port_range);
  g_test_add_func ("/gt/core/config/server/cli", test_server_cli);
  g_test_add_func ("/gt/core/config/client/cli", test_client_cli);
  g_test_add_func ("/gt/core/config/client/cli-positions", test_client_cli_positions);
  g_test_add_func ("/gt/core/config/bad-args", test_bad_args);
  g_test_add_func ("/gt/core/config/extract-config-path", test_extract_config_path);
  g_test_add_func ("/gt/core/config/client/validate", test_client_validate);
  g_test_add_func ("/gt/core/config/server/validate", test_server_validate);
  g_test_add_func ("/gt/core/config/detect-kind", test_detect_kind);
  g_test_add_func ("/gt/core/config/secrets-not-printed", test_secrets_not_printed);
  g_test_add_func ("/gt/core/config/documents-and-aliases", test_multiple_documents_and_aliases);
  g_test_add_func ("/gt/core/config/server/new-defaults", test_server_new_defaults);
  g_test_add_func ("/gt/core/config/server/user-new-defaults", test_user_new_defaults);
  g_test_add_func ("/gt/core/config/server/full", test_server_full);
  g_test_add_func ("/gt/core/config/server/new-cli", test_server_new_cli);
  g_test_add_func ("/gt/core/config/server/users-file-precedence", test_users_file_precedence);
  g_test_add_func ("/gt/core/config/server/users-file-errors", test_users_file_errors);
  g_test_add_func ("/gt/core/config/server/host-regex", test_host_regex);
  g_test_add_func ("/gt/core/config/server/validate-new", test_server_validate_new);
  g_test_add_func ("/gt/core/config/server/api-addr", test_api_addr);
  g_test_add_func ("/gt/core/config/p2p-keys", test_p2p_keys);
  g_test_add_func ("/gt/core/config/client/remotes-and-cert", test_remotes_and_cert);
  g_test_add_func ("/gt/core/config/new-secrets-not-printed", test_new_secrets_not_printed);
  g_test_add_func ("/gt/core/config/client/service-keys", test_service_keys);
  g_test_add_func ("/gt/core/config/client/service-keys-bare", test_service_keys_bare);
  g_test_add_func ("/gt/core/config/client/service-keys-bad", test_service_keys_bad);
  g_test_add_func ("/gt/core/config/server/user-keys", test_user_keys);
  g_test_add_func ("/gt/core/config/server/user-keys-cli", test_user_keys_cli);
  g_test_add_func ("/gt/core/config/server/user-keys-bad", test_user_keys_bad);
  g_test_add_func ("/gt/core/config/key-tables-covered", test_key_tables_covered);
  g_test_add_func ("/gt/core/config/udp", test_udp_keys);
  g_test_add_func ("/gt/core/config/server/listener-keys", test_listener_keys);
  g_test_add_func ("/gt/core/config/describe-options", test_describe_options);
  g_test_add_func ("/gt/core/config/client/turn", test_client_turn);

  return g_test_run ();
}
