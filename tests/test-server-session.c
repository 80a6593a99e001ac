/* test-server-session.c: client sessions and the registry: routes, conflicts, replacement, removal. */
#include "config.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-server-registry.h"
#include "gt-server-session.h"
#include "gt-transport.h"

static GtLimits
plain_limits (void)
{
  GtLimits l = { .connections = 10, .max_services = 600 };

  return l;
}

static GtServerSession *
session_new (const char *id, const char *checksum, const GtLimits *limits)
{
  GtLimits plain = plain_limits ();

  return gt_server_session_new (id, checksum, limits ? limits : &plain, FALSE);
}

/* Adds the session to the registry and registers hello (no tcp services, no auth API). */
static GtErrorCode
add_and_register (GtServerRegistry *registry, GtServerSession *s, const GtHello *hello,
                  char **message)
{
  gt_server_registry_add (registry, s);
  return gt_server_session_register (s, registry, hello, NULL, NULL, NULL, message);
}

static void
test_register_routes (void)
{
  g_autoptr (GtServerRegistry) registry = gt_server_registry_new ();
  g_autoptr (GtServerSession) s = session_new ("alice", "sum1", NULL);
  g_autoptr (GtHello) hello = gt_hello_new ("alice", "secret");
  g_autofree char *message = NULL;
  GtServerRoute *route;

  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, "web", 0, FALSE);
  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTPS, "secure", 0, FALSE);
  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, "secure", 0, FALSE);
  g_assert_cmpint (add_and_register (registry, s, hello, &message), ==, GT_ERROR_CODE_NONE);
  g_assert_null (message);
  g_assert_true (gt_server_registry_lookup (registry, "alice") == s);
  g_assert_cmpuint (gt_server_registry_get_n_sessions (registry), ==, 1);

  route = gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "web");
  g_assert_nonnull (route);
  g_assert_true (route->session == s);
  g_assert_cmpuint (route->service_index, ==, 0);
  /* Host and SNI routes are separate: one prefix may be in both. */
  route = gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTPS, "secure");
  g_assert_nonnull (route);
  g_assert_cmpuint (route->service_index, ==, 1);
  g_assert_cmpint (route->kind, ==, GT_SERVICE_KIND_HTTPS);
  route = gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "secure");
  g_assert_nonnull (route);
  g_assert_cmpuint (route->service_index, ==, 2);
  g_assert_null (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTPS, "web"));
  g_assert_null (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "other"));
  g_assert_null (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_TCP, "web"));

  g_assert_cmpuint (s->service_labels->len, ==, 3);
  g_assert_cmpstr (s->service_labels->pdata[0], ==, "web");
  /* No tunnel yet: nothing to open a stream on. */
  g_assert_null (gt_server_session_pick_tunnel (s));
  g_assert_cmpuint (gt_server_session_get_n_tunnels (s), ==, 0);
}

static void
test_host_conflict (void)
{
  g_autoptr (GtServerRegistry) registry = gt_server_registry_new ();
  g_autoptr (GtServerSession) alice = session_new ("alice", "sum1", NULL);
  g_autoptr (GtServerSession) bob = session_new ("bob", "sum2", NULL);
  g_autoptr (GtHello) hello_a = gt_hello_new ("alice", "a");
  g_autoptr (GtHello) hello_b = gt_hello_new ("bob", "b");
  g_autofree char *message = NULL;

  gt_hello_add_service (hello_a, GT_SERVICE_KIND_HTTP, "web", 0, FALSE);
  gt_hello_add_service (hello_b, GT_SERVICE_KIND_HTTP, "blog", 0, FALSE);
  gt_hello_add_service (hello_b, GT_SERVICE_KIND_HTTP, "web", 0, FALSE);
  g_assert_cmpint (add_and_register (registry, alice, hello_a, &message), ==, GT_ERROR_CODE_NONE);
  g_assert_cmpint (add_and_register (registry, bob, hello_b, &message), ==,
                   GT_ERROR_CODE_HOST_CONFLICT);
  g_assert_cmpstr (message, ==, "host conflict: host prefix 'web' is used by another client");

  /* The refused client goes with what it registered before the conflict. */
  gt_server_registry_remove (registry, bob);
  g_assert_null (gt_server_registry_lookup (registry, "bob"));
  g_assert_null (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "blog"));
  g_assert_true (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "web")->session
                 == alice);
  g_assert_cmpuint (gt_server_registry_get_n_sessions (registry), ==, 1);
}

static void
test_given_twice (void)
{
  g_autoptr (GtServerRegistry) registry = gt_server_registry_new ();
  g_autoptr (GtServerSession) s = session_new ("alice", "sum1", NULL);
  g_autoptr (GtHello) hello = gt_hello_new ("alice", "a");
  g_autofree char *message = NULL;

  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, "web", 0, FALSE);
  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, "web", 0, FALSE);
  g_assert_cmpint (add_and_register (registry, s, hello, &message), ==,
                   GT_ERROR_CODE_HOST_CONFLICT);
  g_assert_cmpstr (message, ==, "host conflict: host prefix 'web' is given twice");
  gt_server_registry_remove (registry, s);
  g_assert_null (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "web"));
  g_assert_cmpuint (gt_server_registry_get_n_sessions (registry), ==, 0);
}

static void
test_with_id_and_allowed (void)
{
  g_autoptr (GtServerRegistry) registry = gt_server_registry_new ();
  GtLimits limits = plain_limits ();
  g_autoptr (GtServerSession) s = NULL;
  g_autoptr (GtHello) hello = gt_hello_new ("Alice", "a");
  g_autofree char *message = NULL;
  char *allowed[] = { (char *) "web", NULL };

  limits.host_with_id = TRUE;
  s = session_new ("Alice", "sum1", &limits);
  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, "web", 0, FALSE);
  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, "admin", 0, FALSE);
  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, "alice", 0, FALSE);
  gt_server_registry_add (registry, s);
  /* The auth API allowed "web" only: "admin" is ignored, the own id is always allowed. */
  g_assert_cmpint (gt_server_session_register (s, registry, hello, allowed, NULL, NULL, &message),
                   ==, GT_ERROR_CODE_NONE);
  g_assert_null (message);
  g_assert_nonnull (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "alice-web"));
  g_assert_null (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "web"));
  g_assert_null (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "alice-admin"));
  g_assert_null (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "admin"));
  g_assert_nonnull (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "alice"));
  g_assert_cmpstr (s->service_labels->pdata[0], ==, "alice-web");
  g_assert_cmpstr (s->service_labels->pdata[1], ==, "admin (refused)");
  g_assert_cmpstr (s->service_labels->pdata[2], ==, "alice");
}

static void
test_limits_refuse (void)
{
  g_autoptr (GtServerRegistry) registry = gt_server_registry_new ();
  char *regex[] = { (char *) "^web$", NULL };
  GtLimits limits = plain_limits ();
  g_autoptr (GtServerSession) s = NULL;
  g_autoptr (GtHello) hello = gt_hello_new ("alice", "a");
  g_autofree char *message = NULL;

  limits.host_regex = regex;
  s = session_new ("alice", "sum1", &limits);
  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, "web", 0, FALSE);
  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, "blog", 0, FALSE);
  g_assert_cmpint (add_and_register (registry, s, hello, &message), ==,
                   GT_ERROR_CODE_HOST_REGEX);
  g_assert_cmpstr (message, ==, "host prefix 'blog' does not match the allowed patterns");
  gt_server_registry_remove (registry, s);
  g_assert_null (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "web"));
}

static void
test_retire_replace (void)
{
  g_autoptr (GtServerRegistry) registry = gt_server_registry_new ();
  g_autoptr (GtServerSession) old = session_new ("alice", "sum1", NULL);
  g_autoptr (GtServerSession) fresh = session_new ("alice", "sum2", NULL);
  g_autoptr (GtHello) hello_old = gt_hello_new ("alice", "a");
  g_autoptr (GtHello) hello_new = gt_hello_new ("alice", "a");
  g_autoptr (GPtrArray) busy = g_ptr_array_new_with_free_func (g_object_unref);
  g_autofree char *message = NULL;
  gint64 now = g_get_monotonic_time ();

  gt_hello_add_service (hello_old, GT_SERVICE_KIND_HTTP, "web", 0, FALSE);
  gt_hello_add_service (hello_new, GT_SERVICE_KIND_HTTP, "web", 0, FALSE);
  gt_hello_add_service (hello_new, GT_SERVICE_KIND_HTTP, "blog", 0, FALSE);
  g_assert_cmpint (add_and_register (registry, old, hello_old, &message), ==, GT_ERROR_CODE_NONE);
  g_assert_false (gt_server_registry_is_retired (registry, "alice", "sum1", now));

  /* A newer client with another service set takes the id over: the old one's hosts go at once
   * and its service set is refused until the expiry. */
  gt_server_session_retire (old, busy);
  g_assert_cmpuint (busy->len, ==, 0);
  gt_server_registry_retire (registry, old, now, now + 1000);
  g_assert_null (gt_server_registry_lookup (registry, "alice"));
  g_assert_null (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "web"));
  g_assert_true (gt_server_registry_is_retired (registry, "alice", "sum1", now + 1000));
  g_assert_false (gt_server_registry_is_retired (registry, "alice", "sum2", now));
  g_assert_false (gt_server_registry_is_retired (registry, "bob", "sum1", now));

  g_assert_cmpint (add_and_register (registry, fresh, hello_new, &message), ==,
                   GT_ERROR_CODE_NONE);
  g_assert_true (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "web")->session
                 == fresh);
  g_assert_true (gt_server_registry_lookup (registry, "alice") == fresh);

  /* After the expiry the old set is accepted again (and forgotten). */
  g_assert_false (gt_server_registry_is_retired (registry, "alice", "sum1", now + 1001));
  g_assert_false (gt_server_registry_is_retired (registry, "alice", "sum1", now));
}

/* Every replacement remembers a service set: they must go by time, not only when the same set
 * comes back, and never more than the bound. */
static void
test_retired_bounded (void)
{
  g_autoptr (GtServerRegistry) registry = gt_server_registry_new ();
  gint64 now = 1000000;

  for (guint i = 0; i < 3000; i++)
    {
      g_autofree char *sum = g_strdup_printf ("sum%u", i);
      g_autoptr (GtServerSession) s = session_new ("alice", sum, NULL);

      gt_server_registry_add (registry, s);
      now += 1000;
      gt_server_registry_retire (registry, s, now, now + 100 * 1000);
    }
  /* Only the last 100 ms of replacements are still in force. */
  g_assert_cmpuint (gt_server_registry_get_n_retired (registry), <=, 101);
  g_assert_true (gt_server_registry_is_retired (registry, "alice", "sum2999", now));
  g_assert_false (gt_server_registry_is_retired (registry, "alice", "sum100", now));
  g_assert_false (gt_server_registry_is_retired (registry, "alice", "sum2999", now + 200 * 1000));
  g_assert_cmpuint (gt_server_registry_get_n_retired (registry), ==, 0);

  /* Long expiries: the oldest go beyond the bound. */
  for (guint i = 0; i < GT_SERVER_REGISTRY_MAX_RETIRED + 500; i++)
    {
      g_autofree char *id = g_strdup_printf ("c%u", i);
      g_autoptr (GtServerSession) s = session_new (id, "sum", NULL);

      gt_server_registry_add (registry, s);
      gt_server_registry_retire (registry, s, now, now + 60 * G_USEC_PER_SEC);
    }
  g_assert_cmpuint (gt_server_registry_get_n_retired (registry), ==,
                    GT_SERVER_REGISTRY_MAX_RETIRED);
  g_assert_true (gt_server_registry_is_retired (registry, "c4500", "sum", now));
  g_assert_false (gt_server_registry_is_retired (registry, "c0", "sum", now));
}

/* The check before a replacement: the client being replaced does not conflict with its
 * successor, everyone else does, and nothing is taken. */
static void
test_check_before_replace (void)
{
  g_autoptr (GtServerRegistry) registry = gt_server_registry_new ();
  g_autoptr (GtServerSession) old = session_new ("alice", "sum1", NULL);
  g_autoptr (GtServerSession) bob = session_new ("bob", "sum3", NULL);
  g_autoptr (GtServerSession) fresh = session_new ("alice", "sum2", NULL);
  g_autoptr (GtHello) hello_old = gt_hello_new ("alice", "a");
  g_autoptr (GtHello) hello_bob = gt_hello_new ("bob", "b");
  g_autoptr (GtHello) good = gt_hello_new ("alice", "a");
  g_autoptr (GtHello) conflict = gt_hello_new ("alice", "a");
  g_autoptr (GtHello) twice = gt_hello_new ("alice", "a");
  g_autoptr (GtHello) port = gt_hello_new ("alice", "a");
  g_autoptr (GArray) ranges = g_array_new (FALSE, FALSE, sizeof (GtPortRange));
  g_autoptr (GtPortPool) pool = NULL;
  GtPortRange range = { 20000, 20010 };
  g_autofree char *message = NULL;

  g_array_append_val (ranges, range);
  pool = gt_port_pool_new (ranges);
  gt_hello_add_service (hello_old, GT_SERVICE_KIND_HTTP, "web", 0, FALSE);
  gt_hello_add_service (hello_bob, GT_SERVICE_KIND_HTTP, "blog", 0, FALSE);
  g_assert_cmpint (add_and_register (registry, old, hello_old, &message), ==, GT_ERROR_CODE_NONE);
  g_assert_cmpint (add_and_register (registry, bob, hello_bob, &message), ==, GT_ERROR_CODE_NONE);

  gt_hello_add_service (good, GT_SERVICE_KIND_HTTP, "web", 0, FALSE);
  gt_hello_add_service (good, GT_SERVICE_KIND_HTTP, "shop", 0, FALSE);
  g_assert_cmpint (gt_server_session_check (fresh, registry, good, NULL, pool, old, &message), ==,
                   GT_ERROR_CODE_NONE);
  g_assert_null (message);

  gt_hello_add_service (conflict, GT_SERVICE_KIND_HTTP, "web", 0, FALSE);
  gt_hello_add_service (conflict, GT_SERVICE_KIND_HTTP, "blog", 0, FALSE);
  g_assert_cmpint (gt_server_session_check (fresh, registry, conflict, NULL, pool, old, &message),
                   ==, GT_ERROR_CODE_HOST_CONFLICT);
  g_assert_cmpstr (message, ==, "host conflict: host prefix 'blog' is used by another client");
  g_clear_pointer (&message, g_free);

  gt_hello_add_service (twice, GT_SERVICE_KIND_HTTP, "shop", 0, FALSE);
  gt_hello_add_service (twice, GT_SERVICE_KIND_HTTP, "shop", 0, FALSE);
  g_assert_cmpint (gt_server_session_check (fresh, registry, twice, NULL, pool, old, &message), ==,
                   GT_ERROR_CODE_HOST_CONFLICT);
  g_assert_cmpstr (message, ==, "host conflict: host prefix 'shop' is given twice");
  g_clear_pointer (&message, g_free);

  gt_hello_add_service (port, GT_SERVICE_KIND_TCP, NULL, 30000, FALSE);
  g_assert_cmpint (gt_server_session_check (fresh, registry, port, NULL, pool, old, &message), ==,
                   GT_ERROR_CODE_PORT_UNAVAILABLE);
  g_assert_cmpstr (message, ==, "port 30000 is not in the server's tcp range for this user");
  g_clear_pointer (&message, g_free);
  g_assert_true (gt_port_pool_take (pool, 20005));
  g_assert_cmpint (gt_server_session_check (fresh, registry, port, NULL, NULL, old, &message), ==,
                   GT_ERROR_CODE_PORT_UNAVAILABLE);
  g_clear_pointer (&message, g_free);

  /* Nothing was taken and the old client still holds its route. */
  g_assert_true (gt_server_registry_lookup (registry, "alice") == old);
  g_assert_true (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "web")->session
                 == old);
  g_assert_null (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "shop"));
  g_assert_cmpuint (gt_port_pool_n_used (pool), ==, 1);
}

/* A prefix owned by a configured user is refused to everyone else, connected or not. */
static void
test_owned_prefix (void)
{
  g_autoptr (GtServerRegistry) registry = gt_server_registry_new ();
  g_autoptr (GtServerSession) bob = session_new ("bob", "sum1", NULL);
  g_autoptr (GtServerSession) alice = session_new ("alice", "sum2", NULL);
  g_autoptr (GtHello) hello_bob = gt_hello_new ("bob", "b");
  g_autoptr (GtHello) hello_alice = gt_hello_new ("alice", "a");
  g_autofree char *message = NULL;

  gt_server_registry_set_owner (registry, "Alice", "alice");
  gt_hello_add_service (hello_bob, GT_SERVICE_KIND_HTTP, "alice", 0, FALSE);
  g_assert_cmpint (add_and_register (registry, bob, hello_bob, &message), ==,
                   GT_ERROR_CODE_HOST_CONFLICT);
  g_assert_cmpstr (message, ==, "host conflict: host prefix 'alice' belongs to another user");
  gt_server_registry_remove (registry, bob);
  g_assert_null (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "alice"));

  gt_hello_add_service (hello_alice, GT_SERVICE_KIND_HTTP, "alice", 0, FALSE);
  g_assert_cmpint (add_and_register (registry, alice, hello_alice, &message), ==,
                   GT_ERROR_CODE_NONE);
  g_assert_true (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "alice")->session
                 == alice);
}

/* A free loopback port, as a one-port range. */
static guint16
free_port (void)
{
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GError) error = NULL;
  int fd = gt_tcp_listen_on (lo, 0, &error);
  struct sockaddr_in sin;
  socklen_t len = sizeof sin;

  g_assert_no_error (error);
  g_assert_cmpint (getsockname (fd, (struct sockaddr *) &sin, &len), ==, 0);
  close (fd);
  return g_ntohs (sin.sin_port);
}

static void
test_remove_frees_ports (void)
{
  g_autoptr (GtServerRegistry) registry = gt_server_registry_new ();
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GArray) ranges = g_array_new (FALSE, FALSE, sizeof (GtPortRange));
  g_autoptr (GtHello) hello = gt_hello_new ("alice", "a");
  g_autoptr (GtHello) again = gt_hello_new ("bob", "b");
  g_autoptr (GError) error = NULL;
  g_autofree char *message = NULL;
  g_autofree char *label = NULL;
  GtServerSession *s = session_new ("alice", "sum1", NULL);
  GtServerSession *other;
  GtPortPool *pool;
  GtPortRange range;
  GtWelcomePort *wp;
  int fd;

  range.first = range.last = free_port ();
  g_array_append_val (ranges, range);
  pool = gt_port_pool_new (ranges);
  gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, "web", 0, FALSE);
  gt_hello_add_service (hello, GT_SERVICE_KIND_TCP, NULL, 0, TRUE);
  gt_server_registry_add (registry, s);
  g_assert_cmpint (gt_server_session_register (s, registry, hello, NULL, pool, lo, &message), ==,
                   GT_ERROR_CODE_NONE);
  g_assert_null (message);
  g_assert_cmpuint (s->ports->len, ==, 1);
  wp = &g_array_index (s->ports, GtWelcomePort, 0);
  g_assert_cmpuint (wp->port, ==, range.first);
  g_assert_cmpuint (wp->service_index, ==, 1);
  g_assert_cmpuint (gt_port_pool_n_used (pool), ==, 1);
  label = g_strdup_printf ("tcp:%u", range.first);
  g_assert_cmpstr (s->service_labels->pdata[1], ==, label);

  /* The only port is taken: another client gets none. */
  other = session_new ("bob", "sum2", NULL);
  gt_hello_add_service (again, GT_SERVICE_KIND_TCP, NULL, 0, TRUE);
  gt_server_registry_add (registry, other);
  g_assert_cmpint (gt_server_session_register (other, registry, again, NULL, pool, lo, &message),
                   ==, GT_ERROR_CODE_PORT_UNAVAILABLE);
  g_assert_cmpstr (message, ==, "no free port in the server's tcp range for this user");
  g_clear_pointer (&message, g_free);
  gt_server_registry_remove (registry, other);
  g_object_unref (other);

  /* Removal drops the registry's reference: the routes go, the port closes and is free again. */
  gt_server_registry_remove (registry, s);
  g_assert_null (gt_server_registry_lookup_route (registry, GT_SERVICE_KIND_HTTP, "web"));
  g_assert_cmpuint (gt_port_pool_n_used (pool), ==, 1); /* the test still holds the session */
  g_object_unref (s);
  g_assert_cmpuint (gt_port_pool_n_used (pool), ==, 0);
  fd = gt_tcp_listen_on (lo, range.first, &error);
  g_assert_no_error (error);
  g_assert_cmpint (fd, >=, 0);
  close (fd);
  gt_port_pool_free (pool);
}

/* udp services: a UDP port from the udp pool, in WELCOME's list and labelled udp:PORT; no pool,
 * a port outside it, a port in use and udpNumber refuse; closing the ports frees them. */
static void
test_udp_ports (void)
{
  g_autoptr (GtServerRegistry) registry = gt_server_registry_new ();
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GArray) ranges = g_array_new (FALSE, FALSE, sizeof (GtPortRange));
  g_autoptr (GtHello) hello = gt_hello_new ("alice", "a");
  g_autoptr (GtHello) two = gt_hello_new ("bob", "b");
  g_autoptr (GtServerSession) s = session_new ("alice", "sum1", NULL);
  g_autoptr (GtServerSession) other = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *message = NULL;
  g_autofree char *label = NULL;
  GtLimits one_udp = plain_limits ();
  GtPortPool *pool;
  GtPortRange range;
  GtWelcomePort *wp;
  int fd;

  range.first = range.last = free_port ();
  g_array_append_val (ranges, range);
  pool = gt_port_pool_new (ranges);
  gt_hello_add_service (hello, GT_SERVICE_KIND_TCP, NULL, 0, TRUE);
  gt_hello_add_service (hello, GT_SERVICE_KIND_UDP, NULL, range.first, FALSE);
  hello->caps = GT_CAP_DATAGRAM;

  /* Without udpRanges. */
  gt_server_registry_add (registry, s);
  g_assert_cmpint (gt_server_session_check (s, registry, hello, NULL, pool, NULL, &message), ==,
                   GT_ERROR_CODE_PORT_UNAVAILABLE);
  g_assert_cmpstr (message, ==, "no udp ports on this server (udpRanges)");
  g_clear_pointer (&message, g_free);

  /* The tcp service takes the tcp pool's port, the udp service the same number in UDP. */
  gt_server_session_set_udp (s, pool, 60000);
  {
    g_autoptr (GArray) tcp_ranges = g_array_new (FALSE, FALSE, sizeof (GtPortRange));
    GtPortRange tr;
    GtPortPool *tcp_pool;

    tr.first = tr.last = free_port ();
    g_array_append_val (tcp_ranges, tr);
    tcp_pool = gt_port_pool_new (tcp_ranges);
    g_assert_cmpint (gt_server_session_check (s, registry, hello, NULL, tcp_pool, NULL,
                                              &message), ==, GT_ERROR_CODE_NONE);
    g_assert_cmpint (gt_server_session_register (s, registry, hello, NULL, tcp_pool, lo,
                                                 &message), ==, GT_ERROR_CODE_NONE);
    g_assert_null (message);
    g_assert_cmpuint (s->ports->len, ==, 2);
    wp = &g_array_index (s->ports, GtWelcomePort, 1);
    g_assert_cmpuint (wp->service_index, ==, 1);
    g_assert_cmpuint (wp->port, ==, range.first);
    label = g_strdup_printf ("udp:%u", range.first);
    g_assert_cmpstr (s->service_labels->pdata[1], ==, label);
    g_assert_true (gt_server_session_has_udp_port (s, range.first));
    g_assert_false (gt_server_session_has_udp_port (s, tr.first));
    g_assert_cmpuint (gt_port_pool_n_used (pool), ==, 1);
    g_assert_cmpuint (gt_server_session_get_n_udp_flows (s), ==, 0);
    /* The UDP port is bound, without SO_REUSEADDR: nobody else gets it. */
    fd = gt_udp_bind_on (lo, range.first, &error);
    g_assert_cmpint (fd, <, 0);
    g_clear_error (&error);
    gt_server_session_close_ports (s);
    gt_port_pool_free (tcp_pool);
  }
  g_assert_cmpuint (gt_port_pool_n_used (pool), ==, 0);
  fd = gt_udp_bind_on (lo, range.first, &error);
  g_assert_no_error (error);
  close (fd);

  /* udpNumber 1 and two udp services; a port outside udpRanges. */
  one_udp.udp_number = 1;
  other = session_new ("bob", "sum2", &one_udp);
  gt_server_session_set_udp (other, pool, 60000);
  gt_hello_add_service (two, GT_SERVICE_KIND_UDP, NULL, 0, TRUE);
  gt_hello_add_service (two, GT_SERVICE_KIND_UDP, NULL, 0, TRUE);
  two->caps = GT_CAP_DATAGRAM;
  g_assert_cmpint (gt_server_session_check (other, registry, two, NULL, NULL, NULL, &message), ==,
                   GT_ERROR_CODE_UDP_NUMBER);
  g_assert_cmpstr (message, ==, "2 udp services exceed the limit of 1");
  g_clear_pointer (&message, g_free);
  g_ptr_array_set_size (two->services, 1);
  ((GtHelloService *) two->services->pdata[0])->remote_port
      = range.first == 65535 ? 1 : range.first + 1;
  ((GtHelloService *) two->services->pdata[0])->remote_random = FALSE;
  g_assert_cmpint (gt_server_session_check (other, registry, two, NULL, NULL, NULL, &message), ==,
                   GT_ERROR_CODE_PORT_UNAVAILABLE);
  g_assert_true (g_str_has_suffix (message, "is not in the server's udpRanges"));
  gt_port_pool_free (pool);
}

static void
count_cb (GtServerSession *session, gpointer user_data)
{
  (*(guint *) user_data)++;
}

static void
count_tunnel_cb (GtServerSession *session, GtMux *mux, gpointer user_data)
{
  g_assert_true (GT_IS_MUX (mux));
  g_assert_true (gt_mux_is_closed (mux));
  (*(guint *) user_data)++;
}

static GtMux *
mux_pair (int *peer_fd)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) io = NULL;
  int fds[2];

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0);
  io = gt_transport_wrap_fd (fds[0], &error);
  g_assert_no_error (error);
  *peer_fd = fds[1];
  return gt_mux_new (io, TRUE, NULL, 0);
}

static void
test_tunnels_closed (void)
{
  g_autoptr (GtServerSession) s = session_new ("alice", "sum1", NULL);
  g_autoptr (GtMux) a = NULL;
  g_autoptr (GtMux) b = NULL;
  guint n_tunnel_closed = 0, n_closed = 0;
  int peer_a, peer_b;

  a = mux_pair (&peer_a);
  b = mux_pair (&peer_b);
  g_signal_connect (s, "tunnel-closed", G_CALLBACK (count_tunnel_cb), &n_tunnel_closed);
  g_signal_connect (s, "closed", G_CALLBACK (count_cb), &n_closed);
  gt_server_session_add_tunnel (s, a);
  gt_server_session_add_tunnel (s, b);
  g_assert_cmpuint (gt_server_session_get_n_tunnels (s), ==, 2);
  g_assert_nonnull (gt_server_session_pick_tunnel (s));
  g_assert_cmpuint (gt_server_session_get_n_streams (s), ==, 0);

  /* A tunnel going away leaves the others in service; the last one ends the session. */
  gt_mux_close (a, GT_ERROR_CODE_NONE, NULL);
  g_assert_cmpuint (n_tunnel_closed, ==, 1);
  g_assert_cmpuint (n_closed, ==, 0);
  g_assert_true (gt_server_session_pick_tunnel (s) == b);
  gt_server_session_close_tunnels (s, GT_ERROR_CODE_SHUTTING_DOWN, "bye");
  g_assert_cmpuint (n_tunnel_closed, ==, 2);
  g_assert_cmpuint (n_closed, ==, 1);
  g_assert_cmpuint (gt_server_session_get_n_tunnels (s), ==, 0);
  g_assert_null (gt_server_session_pick_tunnel (s));
  close (peer_a);
  close (peer_b);
}

static void
test_retire_busy (void)
{
  g_autoptr (GtServerSession) s = session_new ("alice", "sum1", NULL);
  g_autoptr (GPtrArray) busy = g_ptr_array_new_with_free_func (g_object_unref);
  g_autoptr (GtMux) idle = NULL;
  guint n_closed = 0;
  int peer;

  idle = mux_pair (&peer);
  g_signal_connect (s, "closed", G_CALLBACK (count_cb), &n_closed);
  gt_server_session_add_tunnel (s, idle);
  /* A retired session's idle tunnel is closed at once and no longer reported to it. */
  gt_server_session_retire (s, busy);
  g_assert_cmpuint (busy->len, ==, 0);
  g_assert_true (gt_mux_is_closed (idle));
  g_assert_cmpuint (n_closed, ==, 0);
  close (peer);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/server/session/register-routes", test_register_routes);
  g_test_add_func ("/gt/server/session/host-conflict", test_host_conflict);
  g_test_add_func ("/gt/server/session/given-twice", test_given_twice);
  g_test_add_func ("/gt/server/session/with-id-and-allowed", test_with_id_and_allowed);
  g_test_add_func ("/gt/server/session/limits-refuse", test_limits_refuse);
  g_test_add_func ("/gt/server/session/retire-replace", test_retire_replace);
  g_test_add_func ("/gt/server/session/retired-bounded", test_retired_bounded);
  g_test_add_func ("/gt/server/session/check-before-replace", test_check_before_replace);
  g_test_add_func ("/gt/server/session/owned-prefix", test_owned_prefix);
  g_test_add_func ("/gt/server/session/udp-ports", test_udp_ports);
  g_test_add_func ("/gt/server/session/remove-frees-ports", test_remove_frees_ports);
  g_test_add_func ("/gt/server/session/tunnels-closed", test_tunnels_closed);
  g_test_add_func ("/gt/server/session/retire-busy", test_retire_busy);
  return g_test_run ();
}
