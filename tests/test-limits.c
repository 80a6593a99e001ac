/* test-limits.c: a user's limits resolved from its values and the global ones, and the checks. */
#include "config.h"

#include "gt-limits.h"

/* A user that inherits every limit, as the config loader leaves it. */
static GtUserConfig
inheriting_user (void)
{
  GtUserConfig u = { 0 };

  u.id = (char *) "alice";
  u.tcp_number = -1;
  u.udp_number = -1;
  u.connections = -1;
  u.host_number = -1;
  u.host_with_id = -1;
  return u;
}

static GtServerConfig *
global_config (void)
{
  const char *regex[] = { "^web[0-9]+$", NULL };
  GtServerConfig *config = gt_server_config_new ();

  config->connections = 10;
  config->tcp_number = 3;
  config->udp_number = 5;
  config->speed = 1000;
  config->host_number = 2;
  config->host_regex = g_strdupv ((char **) regex);
  config->host_with_id = TRUE;
  config->max_handshake_options = 600;
  return config;
}

static void
test_resolve_global (void)
{
  g_autoptr (GtServerConfig) config = global_config ();
  GtUserConfig user = inheriting_user ();
  GtLimits unknown, inheriting;

  gt_limits_resolve (&unknown, config, NULL, FALSE);
  gt_limits_resolve (&inheriting, config, &user, FALSE);
  for (GtLimits *l = &unknown; l != NULL; l = l == &unknown ? &inheriting : NULL)
    {
      g_assert_cmpuint (l->connections, ==, 10);
      g_assert_cmpuint (l->tcp_number, ==, 3);
      g_assert_cmpuint (l->udp_number, ==, 5);
      g_assert_cmpuint (l->speed, ==, 1000);
      g_assert_cmpuint (l->host_number, ==, 2);
      g_assert_true (l->host_regex == config->host_regex);
      g_assert_true (l->host_with_id);
      g_assert_cmpuint (l->max_services, ==, 600);
    }
}

static void
test_resolve_user (void)
{
  static char *own_regex[] = { (char *) "^api$", NULL };
  g_autoptr (GtServerConfig) config = global_config ();
  GtUserConfig user = inheriting_user ();
  GtLimits l;

  user.connections = 2;
  user.tcp_number = 0; /* 0 is a value (unlimited), not "inherit" */
  user.udp_number = 1;
  user.speed = 5000;
  user.host_number = 7;
  user.host_regex = own_regex;
  user.host_with_id = 0;
  gt_limits_resolve (&l, config, &user, FALSE);
  g_assert_cmpuint (l.connections, ==, 2);
  g_assert_cmpuint (l.tcp_number, ==, 0);
  g_assert_cmpuint (l.udp_number, ==, 1);
  g_assert_cmpuint (l.speed, ==, 5000);
  g_assert_cmpuint (l.host_number, ==, 7);
  g_assert_true (l.host_regex == own_regex);
  g_assert_false (l.host_with_id);
  g_assert_cmpuint (l.max_services, ==, 600);
}

static void
test_resolve_exempt (void)
{
  g_autoptr (GtServerConfig) config = global_config ();
  GtLimits l;

  /* The status self-test: no host rules, no speed limit; the counts still apply. */
  gt_limits_resolve (&l, config, NULL, TRUE);
  g_assert_null (l.host_regex);
  g_assert_false (l.host_with_id);
  g_assert_cmpuint (l.host_number, ==, 0);
  g_assert_cmpuint (l.speed, ==, 0);
  g_assert_cmpuint (l.connections, ==, 10);
  g_assert_cmpuint (l.tcp_number, ==, 3);
}

static void
test_check_services (void)
{
  GtLimits l = { .max_services = 4, .tcp_number = 2 };
  g_autofree char *message = NULL;

  g_assert_cmpint (gt_limits_check_services (&l, 4, 2, &message), ==, GT_ERROR_CODE_NONE);
  g_assert_null (message);
  g_assert_cmpint (gt_limits_check_services (&l, 5, 0, &message), ==,
                   GT_ERROR_CODE_TOO_MANY_OPTIONS);
  g_assert_cmpstr (message, ==, "5 services exceed the limit of 4");
  g_clear_pointer (&message, g_free);
  g_assert_cmpint (gt_limits_check_services (&l, 3, 3, &message), ==, GT_ERROR_CODE_TCP_NUMBER);
  g_assert_cmpstr (message, ==, "3 tcp services exceed the limit of 2");
  g_clear_pointer (&message, g_free);
  l.tcp_number = 0; /* unlimited */
  g_assert_cmpint (gt_limits_check_services (&l, 4, 4, &message), ==, GT_ERROR_CODE_NONE);
  g_assert_null (message);
}

static void
test_check_udp (void)
{
  GtLimits l = { .udp_number = 1 };
  g_autofree char *message = NULL;

  g_assert_cmpint (gt_limits_check_udp (&l, 1, &message), ==, GT_ERROR_CODE_NONE);
  g_assert_null (message);
  g_assert_cmpint (gt_limits_check_udp (&l, 2, &message), ==, GT_ERROR_CODE_UDP_NUMBER);
  g_assert_cmpstr (message, ==, "2 udp services exceed the limit of 1");
  g_clear_pointer (&message, g_free);
  l.udp_number = 0; /* unlimited */
  g_assert_cmpint (gt_limits_check_udp (&l, 600, &message), ==, GT_ERROR_CODE_NONE);
  g_assert_null (message);
}

static void
test_check_host (void)
{
  static char *regex[] = { (char *) "^web[0-9]+$", (char *) "^api$", NULL };
  GtLimits l = { .host_regex = regex, .host_number = 2 };
  g_autofree char *message = NULL;

  g_assert_cmpint (gt_limits_check_host (&l, "web1", FALSE, 0, &message), ==, GT_ERROR_CODE_NONE);
  g_assert_cmpint (gt_limits_check_host (&l, "api", FALSE, 1, &message), ==, GT_ERROR_CODE_NONE);
  g_assert_null (message);
  g_assert_cmpint (gt_limits_check_host (&l, "blog", FALSE, 0, &message), ==,
                   GT_ERROR_CODE_HOST_REGEX);
  g_assert_cmpstr (message, ==, "host prefix 'blog' does not match the allowed patterns");
  g_clear_pointer (&message, g_free);
  /* The client's own id is always allowed by the patterns, but it counts. */
  g_assert_cmpint (gt_limits_check_host (&l, "alice", TRUE, 0, &message), ==, GT_ERROR_CODE_NONE);
  g_assert_cmpint (gt_limits_check_host (&l, "alice", TRUE, 2, &message), ==,
                   GT_ERROR_CODE_HOST_NUMBER);
  g_assert_cmpstr (message, ==, "more than 2 host prefixes");
  g_clear_pointer (&message, g_free);
  g_assert_cmpint (gt_limits_check_host (&l, "web2", FALSE, 2, &message), ==,
                   GT_ERROR_CODE_HOST_NUMBER);
  g_clear_pointer (&message, g_free);
  /* No patterns and no count: anything goes. */
  l.host_regex = NULL;
  l.host_number = 0;
  g_assert_cmpint (gt_limits_check_host (&l, "blog", FALSE, 1000, &message), ==,
                   GT_ERROR_CODE_NONE);
  g_assert_null (message);
}

static void
test_check_tunnels (void)
{
  GtLimits l = { .connections = 2 };
  g_autofree char *message = NULL;

  g_assert_cmpint (gt_limits_check_tunnels (&l, "alice", 0, &message), ==, GT_ERROR_CODE_NONE);
  g_assert_cmpint (gt_limits_check_tunnels (&l, "alice", 1, &message), ==, GT_ERROR_CODE_NONE);
  g_assert_null (message);
  g_assert_cmpint (gt_limits_check_tunnels (&l, "alice", 2, &message), ==,
                   GT_ERROR_CODE_TOO_MANY_TUNNELS);
  g_assert_cmpstr (message, ==, "client alice already has 2 tunnels (limit 2)");
}

static void
test_host_key (void)
{
  GtLimits l = { .host_with_id = TRUE };
  g_autofree char *with_id = gt_limits_host_key (&l, "Alice", "web", FALSE);
  g_autofree char *own = gt_limits_host_key (&l, "Alice", "alice", TRUE);
  g_autofree char *plain = NULL;

  g_assert_cmpstr (with_id, ==, "alice-web");
  g_assert_cmpstr (own, ==, "alice");
  l.host_with_id = FALSE;
  plain = gt_limits_host_key (&l, "Alice", "web", FALSE);
  g_assert_cmpstr (plain, ==, "web");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/server/limits/resolve-global", test_resolve_global);
  g_test_add_func ("/gt/server/limits/resolve-user", test_resolve_user);
  g_test_add_func ("/gt/server/limits/resolve-exempt", test_resolve_exempt);
  g_test_add_func ("/gt/server/limits/check-services", test_check_services);
  g_test_add_func ("/gt/server/limits/check-udp", test_check_udp);
  g_test_add_func ("/gt/server/limits/check-host", test_check_host);
  g_test_add_func ("/gt/server/limits/check-tunnels", test_check_tunnels);
  g_test_add_func ("/gt/server/limits/host-key", test_host_key);
  return g_test_run ();
}
