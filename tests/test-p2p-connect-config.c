/* Unit tests of gt connect's configuration: the YAML form, the command line and validation. */
#include <string.h>

#include "gt-config.h"
#include "gt-p2p-connect-config.h"

static GtConnectConfig *
load (const char *yaml, GError **error)
{
  g_autoptr (GtConnectConfig) config = gt_connect_config_new ();

  if (!gt_connect_config_load_data (config, yaml, strlen (yaml), error)
      || !gt_connect_config_validate (config, error))
    return NULL;
  return g_steal_pointer (&config);
}

static void
test_yaml (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtConnectConfig) c = load ("type: connect\n"
                                        "options:\n"
                                        "  remote: tls://gt.example.com:443\n"
                                        "  remoteSTUN: [stun:198.51.100.1:3479, stun:x]\n"
                                        "  tcp_forward_host_prefix: web.example.com\n"
                                        "  tcp_forward_addr: http://127.0.0.1:2222\n"
                                        "  id: bob\n"
                                        "  secret: s\n"
                                        "  webrtcMinPort: 40000\n"
                                        "  webrtcMaxPort: 40100\n"
                                        "  directWait: 2s\n",
                                        &error);

  g_assert_no_error (error);
  g_assert_cmpstr (c->remote_url, ==, "https://gt.example.com:443/");
  g_assert_cmpstr (c->remote_tunnel, ==, "tls://gt.example.com:443");
  g_assert_cmpstr (c->remote_host, ==, "gt.example.com");
  g_assert_cmpstr (c->stun_host, ==, "198.51.100.1");
  g_assert_cmpuint (c->stun_port, ==, 3479);
  g_assert_cmpstr (c->host, ==, "web.example.com");
  g_assert_cmpstr (c->local_addr, ==, "127.0.0.1:2222");
  /* With credentials the label is the prefix's service, what the tcpForward relay reaches. */
  g_assert_cmpstr (c->service, ==, "web/");
  g_assert_cmpuint (c->webrtc_min_port, ==, 40000);
  g_assert_cmpuint (c->webrtc_max_port, ==, 40100);
  g_assert_cmpuint (c->direct_wait_ms, ==, 2000);
}

static void
test_args (void)
{
  g_autoptr (GtConnectConfig) c = gt_connect_config_new ();
  g_autoptr (GError) error = NULL;
  char *argv[] = { "--remote=tcp://127.0.0.1:8080",
                   "-hostPrefix",
                   "web",
                   "--localAddr",
                   "127.0.0.1:0",
                   "--service",
                   ":2222/" };

  g_assert_true (gt_connect_config_apply_args (c, G_N_ELEMENTS (argv), argv, &error));
  g_assert_true (gt_connect_config_validate (c, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (c->remote_url, ==, "http://127.0.0.1:8080/");
  g_assert_cmpstr (c->remote_tunnel, ==, "tcp://127.0.0.1:8080");
  g_assert_cmpstr (c->service, ==, ":2222/");
  g_assert_null (c->id);
}

/* Each bad input gets one error naming what is wrong. */
static void
test_errors (void)
{
  static const struct
  {
    const char *yaml;
    const char *message;
  } cases[] = {
    { "type: client\n", "type: connect" },
    { "type: connect\nservices: []\n", "unknown top-level key 'services'" },
    { "- a\n", "a mapping" },
    { "type: connect\noptions: {remote: [\n", "YAML line" },
    { "type: connect\noptions: {nope: 1}\n", "unknown option 'nope'" },
    { "type: connect\noptions: {remote: tcp://a:1, hostPrefix: web}\n",
      "needs remote, hostPrefix and localAddr" },
    { "type: connect\noptions: {remote: 'ftp://a:1', hostPrefix: w, localAddr: ':0'}\n",
      "remote: 'ftp://a:1'" },
    { "type: connect\noptions: {remote: 'tcp://a', hostPrefix: w, localAddr: ':0'}\n",
      "is not a tcp://" },
    { "type: connect\noptions: {remote: tcp://a:1, hostPrefix: 'a/b', localAddr: ':0'}\n",
      "hostPrefix: 'a/b'" },
    { "type: connect\noptions: {remoteSTUN: 'turn:x'}\n", "remoteSTUN: 'turn:x'" },
    { "type: connect\noptions: {webrtcMinPort: 70000}\n", "not a port" },
    { "type: connect\noptions: {remote: tcp://a:1, hostPrefix: w, localAddr: ':0', "
      "webrtcMinPort: 5}\n",
      "both or neither" },
    { "type: connect\noptions: {remote: tcp://a:1, hostPrefix: w, localAddr: ':0', id: x}\n",
      "id and secret" },
    { "type: connect\noptions: {relayAddr: nowhere}\n", "relayAddr: 'nowhere'" },
    { "type: connect\noptions: {directWait: soon}\n", "directWait: 'soon'" },
    { "type: connect\noptions: {remote: {a: b}}\n", "a string is expected" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GtConnectConfig) c = load (cases[i].yaml, &error);

      g_assert_null (c);
      g_assert_nonnull (error);
      if (strstr (error->message, cases[i].message) == NULL)
        g_error ("case %u: '%s' does not say '%s'", i, error->message, cases[i].message);
    }
}

static void
test_args_errors (void)
{
  g_autoptr (GtConnectConfig) c = gt_connect_config_new ();
  g_autoptr (GError) error = NULL;
  char *missing[] = { "--remote" };
  char *bare[] = { "tcp://a:1" };

  g_assert_false (gt_connect_config_apply_args (c, 1, missing, &error));
  g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_USAGE);
  g_clear_error (&error);
  g_assert_false (gt_connect_config_apply_args (c, 1, bare, &error));
  g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_USAGE);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/p2p/connect-config/yaml", test_yaml);
  g_test_add_func ("/gt/p2p/connect-config/args", test_args);
  g_test_add_func ("/gt/p2p/connect-config/errors", test_errors);
  g_test_add_func ("/gt/p2p/connect-config/args-errors", test_args_errors);
  return g_test_run ();
}
