/* test-p2p-signalling.c: GT's data channel label routing (gt_p2p_signalling_route). */
#include "gt-config.h"
#include "gt-p2p-signalling.h"

static guint16
tcp_port_cb (guint service_index, gpointer user_data)
{
  return service_index == 2 ? 2222 : 0;
}

static char *
route (GtP2pSignalling *s, const char *label)
{
  g_autoptr (GSocketConnectable) c = gt_p2p_signalling_route (s, label);

  if (c == NULL)
    return NULL;
  return g_strdup_printf ("%s:%u", g_network_address_get_hostname (G_NETWORK_ADDRESS (c)),
                          g_network_address_get_port (G_NETWORK_ADDRESS (c)));
}

static void
test_labels (void)
{
  static const char yaml[] = "options:\n"
                             "  id: a\n"
                             "  secret: b\n"
                             "  remote: tcp://127.0.0.1:1\n"
                             "services:\n"
                             "  - local: http://127.0.0.1:8001\n"
                             "    hostPrefix: web\n"
                             "  - local: http://127.0.0.1:8002\n"
                             "    hostPrefix: blog\n"
                             "  - local: tcp://127.0.0.1:22\n"
                             "    remoteTCPPort: 2222\n";
  static const struct
  {
    const char *label, *want;
  } cases[] = {
    { "gt", "127.0.0.1:8001" }, /* no '/': the first service */
    { "", "127.0.0.1:8001" },
    { "blog/1", "127.0.0.1:8002" },
    { "@blog/x/y", "127.0.0.1:8002" },
    { "BLOG/", "127.0.0.1:8002" },
    { "web/", "127.0.0.1:8001" },
    { ":2222/ssh", "127.0.0.1:22" },
    { ":2223/", NULL },
    { ":0/", NULL },
    { ":x/", NULL },
    { ":99999/", NULL },
    { "nope/", NULL },
    { "@/", NULL },
    { "/", NULL },
  };
  g_autoptr (GtClientConfig) config = gt_client_config_new ();
  g_autoptr (GtP2pSignalling) s = NULL;
  g_autoptr (GError) error = NULL;

  g_assert_true (gt_client_config_load_data (config, yaml, -1, NULL, NULL, &error));
  g_assert_true (gt_client_config_validate (config, NULL, &error));
  s = gt_p2p_signalling_new (config, tcp_port_cb, NULL);
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *got = route (s, cases[i].label);

      if (g_strcmp0 (got, cases[i].want) != 0)
        g_error ("label '%s': got %s, want %s", cases[i].label, got, cases[i].want);
    }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/p2p/signalling/labels", test_labels);
  return g_test_run ();
}
