/* Integration tests of scale-out (docs/scale-out.md): a 3-member etcd cluster and three gt server
 * nodes on 127.0.0.1, clients moving between them, claims racing, etcd members failing. */
#define G_LOG_DOMAIN "gt-test"

#include <signal.h>
#include <stdarg.h>
#include <string.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "gt-frame.h"
#include "gt-test-utils.h"

#define PATTERN_SIZE (2 * GT_TEST_MIB)
#define N_MEMBERS 3
#define N_NODES 3
#define CLUSTER_SECRET "cluster-secret-Hq7Wm2"
#define CLIENT_SECRET "client-secret-Vb4Rk9"
/* What a failover may take (the promise), measured from the node's death. */
#define FAILOVER_MS 5000

typedef struct
{
  GtTestProc *proc;
  guint16 client_port;
  guint16 peer_port;
  char *dir;
} Member;

typedef struct
{
  GtTestProc *proc;
  guint16 port;
  char *config;
} Node;

typedef struct
{
  Member members[N_MEMBERS];
  Node nodes[N_NODES];
  char *initial_cluster;
  char *endpoints; /* YAML list */
  gboolean tls;    /* members serve https:// with tls/ca.pem, tls/member.*, client certs */
  GtTestHttp *service;
} Fixture;

static const char *const node_names[N_NODES] = { "a", "b", "c" };

/* ------------------------------------------------------------------------------------------ */
/* etcd */

static void
member_start (Fixture *f, guint i)
{
  Member *m = &f->members[i];
  g_autofree char *name = g_strdup_printf ("etcd-m%u", i + 1);
  g_autoptr (GPtrArray) args = gt_test_args_new ();

  const char *scheme = f->tls ? "https" : "http";

  gt_test_args_addv (args, "--name", name + 5, "--data-dir", m->dir, NULL);
  gt_test_args_add (args, "--listen-client-urls=%s://127.0.0.1:%u", scheme, m->client_port);
  gt_test_args_add (args, "--advertise-client-urls=%s://127.0.0.1:%u", scheme, m->client_port);
  if (f->tls)
    {
      gt_test_args_add (args, "--cert-file=%s/tls/member.pem", gt_test_tmpdir ());
      gt_test_args_add (args, "--key-file=%s/tls/member.key", gt_test_tmpdir ());
      gt_test_args_add (args, "--trusted-ca-file=%s/tls/ca.pem", gt_test_tmpdir ());
      gt_test_args_add (args, "--client-cert-auth");
    }
  gt_test_args_add (args, "--listen-peer-urls=http://127.0.0.1:%u", m->peer_port);
  gt_test_args_add (args, "--initial-advertise-peer-urls=http://127.0.0.1:%u", m->peer_port);
  gt_test_args_add (args, "--initial-cluster=%s", f->initial_cluster);
  gt_test_args_addv (args, "--initial-cluster-state", "new", "--initial-cluster-token",
                     "gt-test", "--heartbeat-interval", "100", "--election-timeout", "1000",
                     NULL);
  m->proc = gt_test_spawn (name, "etcd", args, NULL, NULL);
}

static void
members_wait_ready (Fixture *f)
{
  for (guint i = 0; i < N_MEMBERS; i++)
    if (f->members[i].proc != NULL && !gt_test_proc_has_exited (f->members[i].proc))
      g_free (gt_test_proc_expect_line (f->members[i].proc, "ready to serve client requests",
                                        NULL, GT_TEST_WAIT_MS));
}

static void
etcd_start (Fixture *f)
{
  GString *ic = g_string_new (NULL);
  GString *ep = g_string_new ("[");

  for (guint i = 0; i < N_MEMBERS; i++)
    {
      Member *m = &f->members[i];
      g_autofree char *dir = g_strdup_printf ("etcd-data-%u", i + 1);

      m->client_port = gt_test_free_port ();
      do
        m->peer_port = gt_test_free_port ();
      while (m->peer_port == m->client_port);
      m->dir = g_build_filename (gt_test_tmpdir (), dir, NULL);
      g_string_append_printf (ic, "%sm%u=http://127.0.0.1:%u", i ? "," : "", i + 1, m->peer_port);
      g_string_append_printf (ep, "%s%s://127.0.0.1:%u", i ? ", " : "", f->tls ? "https" : "http",
                              m->client_port);
    }
  g_string_append (ep, "]");
  f->initial_cluster = g_string_free (ic, FALSE);
  f->endpoints = g_string_free (ep, FALSE);
  for (guint i = 0; i < N_MEMBERS; i++)
    member_start (f, i);
  members_wait_ready (f);
}

/* ------------------------------------------------------------------------------------------ */
/* gt nodes and clients */

static void
node_start_full (Fixture *f, guint i, const char *secret, const char *ttl, const char *extra,
                 gboolean wait_lease)
{
  Node *n = &f->nodes[i];
  g_autofree char *name = g_strdup_printf ("node-%s", node_names[i]);
  g_autofree char *file = g_strdup_printf ("%s.yaml", name);
  g_autofree char *text = NULL;
  g_autoptr (GPtrArray) args = gt_test_args_new ();

  if (n->port == 0)
    n->port = gt_test_free_port ();
  text = g_strdup_printf ("type: server\n"
                          "options:\n"
                          "  addr: 127.0.0.1:%u\n"
                          "  allowAnyClient: true\n"
                          "cluster:\n"
                          "  etcd: %s\n"
                          "  node: %s\n"
                          "  advertise: 127.0.0.1:%u\n"
                          "  ttl: %s\n"
                          "  secret: %s\n"
                          "%s",
                          n->port, f->endpoints, node_names[i], n->port, ttl, secret,
                          extra ? extra : "");
  g_free (n->config);
  n->config = gt_test_write_file (file, text);
  gt_test_args_addv (args, "server", "-c", n->config, NULL);
  n->proc = gt_test_spawn_gt (name, args);
  if (wait_lease)
    g_free (gt_test_proc_expect_line (n->proc, "holds etcd lease", NULL, GT_TEST_WAIT_MS));
}

static void
node_start_ttl (Fixture *f, guint i, const char *secret, const char *ttl)
{
  node_start_full (f, i, secret, ttl, NULL, TRUE);
}

static void
node_start (Fixture *f, guint i, const char *secret)
{
  node_start_ttl (f, i, secret, "2s");
}

/* A client of the local service under prefix, with remotes at the given nodes (in order). */
static GtTestProc *
client_start (Fixture *f, const char *id, const char *prefix, const guint *nodes, guint n_nodes)
{
  g_autofree char *name = g_strdup_printf ("client-%s", id);
  g_autoptr (GPtrArray) args = gt_test_args_new ();

  gt_test_args_addv (args, "client", "--id", id, "--secret", CLIENT_SECRET, NULL);
  for (guint i = 0; i < n_nodes; i++)
    gt_test_args_add (args, "--remote=tcp://127.0.0.1:%u", f->nodes[nodes[i]].port);
  gt_test_args_addv (args, "--reconnectDelay", "200ms", "--remoteConnections", "2", NULL);
  gt_test_args_add (args, "--local=http://127.0.0.1:%u", f->service->port);
  gt_test_args_addv (args, "--hostPrefix", prefix, NULL);
  return gt_test_spawn_gt (name, args);
}

/* One GET of /bytes?n=size through node i for host; the response or NULL. */
static GtTestHttpResponse *
get_bytes (Fixture *f, guint i, const char *host, gsize size, GError **error)
{
  g_autofree char *path = g_strdup_printf ("/bytes?n=%zu", size);

  return gt_test_http_request (f->nodes[i].port, "GET", path, host, NULL, 0, error);
}

/* Fails unless a GET through node i for host brings the pattern's first size bytes back. */
static void
expect_bytes (Fixture *f, guint i, const char *host, gsize size)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) r = get_bytes (f, i, host, size, &error);
  g_autofree char *what = g_strdup_printf ("%s through node %s", host, node_names[i]);

  gt_test_expect_response (r, error, 200);
  gt_test_check_bytes (what, r->body->data, r->body->len, gt_test_pattern (), size);
}

/* Polls GETs through node i until one answers 200 with the right bytes; the ms it took, or
 * G_MAXUINT on timeout. */
static guint
wait_reachable (Fixture *f, guint i, const char *host, guint timeout_ms)
{
  gint64 start = g_get_monotonic_time ();
  gint64 deadline = gt_test_deadline_in (timeout_ms);

  while (g_get_monotonic_time () < deadline)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GtTestHttpResponse) r = get_bytes (f, i, host, 1000, &error);

      if (r != NULL && r->status == 200 && r->body->len == 1000
          && memcmp (r->body->data, gt_test_pattern (), 1000) == 0)
        return (guint) ((g_get_monotonic_time () - start) / 1000);
      g_usleep (50 * 1000);
    }
  return G_MAXUINT;
}

static void
cluster_start (Fixture *f)
{
  etcd_start (f);
  for (guint i = 0; i < N_NODES; i++)
    node_start (f, i, CLUSTER_SECRET);
}

/* ------------------------------------------------------------------------------------------ */

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  gt_test_setup ();
  f->service = gt_test_http_start ("svc", 0, NULL);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  gt_test_teardown ();
  for (guint i = 0; i < N_MEMBERS; i++)
    g_free (f->members[i].dir);
  for (guint i = 0; i < N_NODES; i++)
    g_free (f->nodes[i].config);
  g_free (f->initial_cluster);
  g_free (f->endpoints);
}

#define REQUIRE_ETCD()                                                                             \
  G_STMT_START                                                                                     \
  {                                                                                                \
    g_autofree char *etcd_ = NULL;                                                                 \
    GT_TEST_REQUIRE_GT ();                                                                         \
    if ((etcd_ = g_find_program_in_path ("etcd")) == NULL)                                         \
      {                                                                                            \
        g_test_skip ("etcd is not installed (Debian: etcd-server)");                               \
        return;                                                                                    \
      }                                                                                            \
  }                                                                                                \
  G_STMT_END

/* A client on node A is reachable through B and C, and only its own host is forwarded. */
static void
test_forward (Fixture *f, gconstpointer data)
{
  static const guint on_a[] = { 0 };
  GtTestProc *client;
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) missing = NULL;

  REQUIRE_ETCD ();
  cluster_start (f);
  client = client_start (f, "c1", "web", on_a, 1);
  g_free (gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS));

  /* B and C learn the route from their watches. */
  for (guint i = 1; i < N_NODES; i++)
    if (wait_reachable (f, i, "web.example.com", 10000) == G_MAXUINT)
      gt_test_fail ("web is not reachable through node %s", node_names[i]);
  for (guint i = 0; i < N_NODES; i++)
    expect_bytes (f, i, "web.example.com", PATTERN_SIZE);
  g_free (gt_test_proc_expect_line (f->nodes[0].proc, "node tunnel accepted: node=b", NULL,
                                    1000));

  /* An unknown host is not forwarded anywhere. */
  missing = gt_test_http_request (f->nodes[1].port, "GET", "/", "nobody.example.com", NULL, 0,
                                  &error);
  gt_test_expect_response (missing, error, 404);
}

/* A node with another cluster secret cannot open a node tunnel. */
static void
test_bad_secret (Fixture *f, gconstpointer data)
{
  static const guint on_a[] = { 0 };
  GtTestProc *client;
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) r = NULL;

  REQUIRE_ETCD ();
  etcd_start (f);
  node_start (f, 0, CLUSTER_SECRET);
  node_start (f, 1, "not-the-cluster-secret");
  client = client_start (f, "c1", "web", on_a, 1);
  g_free (gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS));
  g_free (gt_test_proc_expect_line (f->nodes[1].proc, "holds etcd lease", NULL, 1000));
  /* B knows where web lives but A refuses B's tunnel: 502, never the service's bytes. */
  for (guint tries = 0; tries < 50; tries++)
    {
      g_clear_pointer (&r, gt_test_http_response_free);
      g_clear_error (&error);
      r = get_bytes (f, 1, "web.example.com", 1000, &error);
      if (r != NULL && r->status == 502)
        break;
      g_usleep (100 * 1000);
    }
  gt_test_expect_response (r, error, 502);
  g_free (gt_test_proc_expect_line (f->nodes[0].proc, "client=b: bad cluster secret", NULL,
                                    GT_TEST_WAIT_MS));
}

/* Kill node A: its client moves to B and requests through B (and C) work within 5 s. */
static void
test_failover (Fixture *f, gconstpointer data)
{
  static const guint remotes[] = { 0, 1, 2 };
  GtTestProc *client;
  guint took;

  REQUIRE_ETCD ();
  cluster_start (f);
  client = client_start (f, "c1", "web", remotes, 3);
  g_free (gt_test_proc_expect_line (client, "tunnel started: remote=tcp://127.0.0.1", NULL,
                                    GT_TEST_WAIT_MS));
  if (wait_reachable (f, 1, "web.example.com", 10000) == G_MAXUINT)
    gt_test_fail ("web is not reachable through node b before the failover");

  gt_test_proc_stop (f->nodes[0].proc, SIGKILL);
  took = wait_reachable (f, 1, "web.example.com", 3 * FAILOVER_MS);
  g_test_message ("requests through node b work again %u ms after node a died", took);
  if (took > FAILOVER_MS)
    gt_test_fail ("the client's host came back after %u ms (want at most %u)", took,
                  FAILOVER_MS);
  expect_bytes (f, 1, "web.example.com", PATTERN_SIZE);
  if (wait_reachable (f, 2, "web.example.com", 5000) == G_MAXUINT)
    gt_test_fail ("web is not reachable through node c after the failover");
  expect_bytes (f, 2, "web.example.com", PATTERN_SIZE);
}

/* A node HELLO to a server that is not a cluster node: ERROR PROTOCOL, no tunnel. */
static void
test_not_a_node (Fixture *f, gconstpointer data)
{
  g_autoptr (GtHello) hello = gt_hello_new ("a", CLUSTER_SECRET);
  g_autoptr (GByteArray) out = g_byte_array_new ();
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autoptr (GtTestConn) c = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *message = NULL;
  gint64 deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
  guint8 preface[GT_PREFACE_SIZE];
  GtTestProc *server;
  GtFrameHeader h;
  guint16 code = 0;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  port = gt_test_free_port ();
  gt_test_args_addv (args, "server", "--allowAnyClient", NULL);
  gt_test_args_add (args, "--addr=127.0.0.1:%u", port);
  server = gt_test_spawn_gt ("plain", args);
  g_free (gt_test_proc_expect_line (server, "listening on", NULL, GT_TEST_WAIT_MS));

  gt_hello_add_service (hello, GT_SERVICE_KIND_NODE, NULL, 0, FALSE);
  gt_preface_encode (preface);
  g_byte_array_append (out, preface, sizeof preface);
  g_assert_true (gt_frame_append_hello (out, hello, &error));
  c = gt_test_conn_connect (port, &error);
  g_assert_nonnull (c);
  g_assert_true (gt_test_conn_write_all (c, out->data, out->len, deadline, &error));
  g_assert_true (gt_test_conn_read_to_eof (c, TRUE, deadline, &error));
  g_assert_cmpint (gt_frame_header_decode (c->in->data, c->in->len, &h, NULL), ==, GT_DECODE_OK);
  g_assert_cmpint (h.type, ==, GT_FRAME_ERROR);
  g_assert_cmpuint (c->in->len, >=, GT_FRAME_HEADER_SIZE + h.length);
  g_assert_true (gt_error_decode (c->in->data + GT_FRAME_HEADER_SIZE, h.length, &code, &message,
                                  NULL));
  g_assert_cmpuint (code, ==, GT_ERROR_CODE_PROTOCOL);
  g_assert_cmpstr (message, ==, "this server is not a cluster node");
  g_assert_cmpuint (gt_test_proc_count_matches (server, CLUSTER_SECRET), ==, 0);
}

/* A node stopped with SIGTERM gives its lease back: its client moves long before the TTL. */
static void
test_graceful_stop (Fixture *f, gconstpointer data)
{
  static const guint remotes[] = { 0, 1 };
  GtTestProc *client;
  guint took;

  REQUIRE_ETCD ();
  etcd_start (f);
  node_start_ttl (f, 0, CLUSTER_SECRET, "30s");
  node_start_ttl (f, 1, CLUSTER_SECRET, "30s");
  client = client_start (f, "c1", "web", remotes, 2);
  g_free (gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS));
  if (wait_reachable (f, 1, "web.example.com", 10000) == G_MAXUINT)
    gt_test_fail ("web is not reachable through node b");

  gt_test_proc_stop_cleanly (f->nodes[0].proc);
  g_free (gt_test_proc_expect_line (f->nodes[0].proc, "its lease and claims are released", NULL,
                                    1000));
  took = wait_reachable (f, 1, "web.example.com", 3 * FAILOVER_MS);
  g_test_message ("requests through node b work again %u ms after node a stopped", took);
  if (took > FAILOVER_MS)
    gt_test_fail ("the client's host came back after %u ms (want at most %u; the TTL is 30 s)",
                  took, FAILOVER_MS);
  expect_bytes (f, 1, "web.example.com", PATTERN_SIZE);
}

/* Runs etcdctl (v3 API, its own timeouts) against the first member; fails the test unless it
 * succeeds. */
static void
etcdctl (Fixture *f, const char *first, ...)
{
  g_autoptr (GPtrArray) argv = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autoptr (GError) error = NULL;
  const char *env[] = { "ETCDCTL_API=3", "PATH=/usr/bin:/bin", NULL };
  int status = 0;
  va_list ap;

  g_ptr_array_add (argv, g_strdup ("etcdctl"));
  g_ptr_array_add (argv, g_strdup_printf ("--endpoints=http://127.0.0.1:%u",
                                          f->members[0].client_port));
  g_ptr_array_add (argv, g_strdup ("--dial-timeout=5s"));
  g_ptr_array_add (argv, g_strdup ("--command-timeout=10s"));
  va_start (ap, first);
  for (const char *a = first; a != NULL; a = va_arg (ap, const char *))
    g_ptr_array_add (argv, g_strdup (a));
  va_end (ap);
  g_ptr_array_add (argv, NULL);
  if (!g_spawn_sync (NULL, (char **) argv->pdata, (char **) env, G_SPAWN_SEARCH_PATH, NULL, NULL,
                     &out, &err, &status, &error)
      || !g_spawn_check_wait_status (status, &error))
    gt_test_fail ("etcdctl %s: %s: %s", first, error->message, err ? err : "");
}

/* A CA, a certificate for the etcd members (127.0.0.1) and one for the gt nodes, in tls/. */
static void
make_certificates (void)
{
  static const char script[] =
    "set -e; mkdir -p tls; cd tls\n"
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
    "  -out ca.pem -days 2 -subj /CN=gt-test-ca 2>/dev/null\n"
    "for n in member node; do\n"
    "  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $n.key -out $n.csr "
    "    -subj /CN=$n 2>/dev/null\n"
    "  printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n' > $n.ext\n"
    "  openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $n.pem "
    "    -days 2 -extfile $n.ext 2>/dev/null\n"
    "done\n";
  const char *argv[] = { "sh", "-c", script, NULL };
  g_autoptr (GError) error = NULL;
  g_autofree char *err = NULL;
  int status = 0;

  if (!g_spawn_sync (gt_test_tmpdir (), (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                     NULL, &err, &status, &error)
      || !g_spawn_check_wait_status (status, &error))
    gt_test_fail ("making test certificates: %s %s", error->message, err ? err : "");
}

/* etcd over TLS with client certificates: nodes verify the members with etcdCA and show their
 * own certificate; a node without it gets no lease. */
static void
test_etcd_tls (Fixture *f, gconstpointer data)
{
  static const guint on_a[] = { 0 };
  g_autofree char *dir = NULL;
  g_autofree char *with_cert = NULL;
  g_autofree char *without_cert = NULL;
  GtTestProc *client;

  REQUIRE_ETCD ();
  if (g_find_program_in_path ("openssl") == NULL)
    {
      g_test_skip ("openssl is not installed");
      return;
    }
  make_certificates ();
  f->tls = TRUE;
  etcd_start (f);
  dir = g_build_filename (gt_test_tmpdir (), "tls", NULL);
  with_cert = g_strdup_printf ("  etcdCA: %s/ca.pem\n  etcdCert: %s/node.pem\n"
                               "  etcdKey: %s/node.key\n",
                               dir, dir, dir);
  without_cert = g_strdup_printf ("  etcdCA: %s/ca.pem\n", dir);

  node_start_full (f, 0, CLUSTER_SECRET, "2s", with_cert, TRUE);
  node_start_full (f, 1, CLUSTER_SECRET, "2s", without_cert, FALSE);
  node_start_full (f, 2, CLUSTER_SECRET, "2s", with_cert, TRUE);
  g_free (gt_test_proc_expect_line (f->nodes[1].proc, "etcd is unreachable", NULL,
                                    GT_TEST_WAIT_MS));
  client = client_start (f, "c1", "web", on_a, 1);
  g_free (gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS));
  if (wait_reachable (f, 2, "web.example.com", 10000) == G_MAXUINT)
    gt_test_fail ("web is not reachable through node c");
  expect_bytes (f, 2, "web.example.com", PATTERN_SIZE);
  if (gt_test_proc_count_matches (f->nodes[1].proc, "holds etcd lease") != 0)
    gt_test_fail ("a node without a client certificate got a lease");
}

/* etcd with authentication: nodes sign in with etcdUser/etcdPassword; a wrong password gets no
 * lease (and says why), the right one works end to end. */
static void
test_etcd_auth (Fixture *f, gconstpointer data)
{
  static const guint on_a[] = { 0 };
  GtTestProc *client;
  g_autofree char *line = NULL;

  REQUIRE_ETCD ();
  etcd_start (f);
  etcdctl (f, "user", "add", "root:root-pw-Xk3", "--interactive=false", NULL);
  etcdctl (f, "user", "add", "gt:gt-pw-Lm8q", "--interactive=false", NULL);
  etcdctl (f, "role", "add", "gt", NULL);
  etcdctl (f, "role", "grant-permission", "gt", "--prefix=true", "readwrite", "/gt/", NULL);
  etcdctl (f, "user", "grant-role", "gt", "gt", NULL);
  etcdctl (f, "auth", "enable", NULL);

  node_start_full (f, 0, CLUSTER_SECRET, "2s", "  etcdUser: gt\n  etcdPassword: gt-pw-Lm8q\n",
                   TRUE);
  node_start_full (f, 1, CLUSTER_SECRET, "2s", "  etcdUser: gt\n  etcdPassword: wrong-Qz1\n",
                   FALSE);
  line = gt_test_proc_expect_line (f->nodes[1].proc, "etcd is unreachable.*authentication failed",
                                   NULL, GT_TEST_WAIT_MS);
  if (strstr (line, "wrong-Qz1") != NULL || strstr (line, "gt-pw-Lm8q") != NULL)
    gt_test_fail ("a password in a log line: %s", line);
  node_start_full (f, 2, CLUSTER_SECRET, "2s", "  etcdUser: gt\n  etcdPassword: gt-pw-Lm8q\n",
                   TRUE);

  client = client_start (f, "c1", "web", on_a, 1);
  g_free (gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS));
  if (wait_reachable (f, 2, "web.example.com", 10000) == G_MAXUINT)
    gt_test_fail ("web is not reachable through node c");
  expect_bytes (f, 2, "web.example.com", PATTERN_SIZE);
  for (guint i = 0; i < N_NODES; i++)
    if (gt_test_proc_count_matches (f->nodes[i].proc, "gt-pw-Lm8q|wrong-Qz1") != 0)
      gt_test_fail ("node %s logged a password", node_names[i]);
}

/* A node killed and restarted at once under its name: the old run's lease still holds the name
 * and the client; the new run takes both over when it expires. */
static void
test_node_restart (Fixture *f, gconstpointer data)
{
  static const guint on_a[] = { 0 };
  GtTestProc *client;

  REQUIRE_ETCD ();
  cluster_start (f);
  client = client_start (f, "c1", "web", on_a, 1);
  g_free (gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS));
  if (wait_reachable (f, 1, "web.example.com", 10000) == G_MAXUINT)
    gt_test_fail ("web is not reachable through node b");

  gt_test_proc_stop (f->nodes[0].proc, SIGKILL);
  node_start (f, 0, CLUSTER_SECRET);
  g_free (gt_test_proc_expect_line (f->nodes[0].proc, "is announced at", NULL, GT_TEST_WAIT_MS));
  if (wait_reachable (f, 1, "web.example.com", 15000) == G_MAXUINT)
    gt_test_fail ("web is not reachable through node b after node a restarted");
  expect_bytes (f, 2, "web.example.com", PATTERN_SIZE);
}

/* The same prefix claimed by two clients on two nodes at once: exactly one wins. */
static void
test_claim_race (Fixture *f, gconstpointer data)
{
  static const guint on_b[] = { 1 };
  static const guint on_c[] = { 2 };
  GtTestProc *x, *y, *winner, *loser;
  gint64 deadline;

  REQUIRE_ETCD ();
  cluster_start (f);
  x = client_start (f, "x", "race", on_b, 1);
  y = client_start (f, "y", "race", on_c, 1);
  deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
  while (gt_test_proc_count_matches (x, "tunnel started") == 0
         && gt_test_proc_count_matches (y, "tunnel started") == 0
         && g_get_monotonic_time () < deadline)
    g_usleep (20 * 1000);
  winner = gt_test_proc_count_matches (x, "tunnel started") > 0 ? x : y;
  loser = winner == x ? y : x;
  if (gt_test_proc_count_matches (winner, "tunnel started") == 0)
    gt_test_fail ("neither client got the prefix");
  /* The loser is told why, and keeps being refused while the winner holds the prefix. */
  g_free (gt_test_proc_expect_line (loser, "host prefix 'race' is held by node . \\(code 16\\)",
                                    NULL, GT_TEST_WAIT_MS));
  if (!gt_test_proc_wait_count (loser, "server refused", 3, GT_TEST_WAIT_MS))
    gt_test_fail ("the losing client was not refused again");
  if (gt_test_proc_count_matches (loser, "tunnel started") != 0)
    gt_test_fail ("both clients got the prefix");
  /* Every node routes it to the same client. */
  for (guint i = 0; i < N_NODES; i++)
    if (wait_reachable (f, i, "race.example.com", 10000) == G_MAXUINT)
      gt_test_fail ("race is not reachable through node %s", node_names[i]);
}

/* One etcd member dies: routes keep working and new clients are still accepted. */
static void
test_member_down (Fixture *f, gconstpointer data)
{
  static const guint on_a[] = { 0 };
  static const guint on_c[] = { 2 };
  GtTestProc *first, *second;

  REQUIRE_ETCD ();
  cluster_start (f);
  first = client_start (f, "c1", "web", on_a, 1);
  g_free (gt_test_proc_expect_line (first, "tunnel started", NULL, GT_TEST_WAIT_MS));
  if (wait_reachable (f, 1, "web.example.com", 10000) == G_MAXUINT)
    gt_test_fail ("web is not reachable through node b");

  /* The first member is the one every node asks first. */
  gt_test_proc_stop (f->members[0].proc, SIGKILL);
  for (guint round = 0; round < 3; round++)
    for (guint i = 0; i < N_NODES; i++)
      expect_bytes (f, i, "web.example.com", 100 * 1024);
  second = client_start (f, "c2", "api", on_c, 1);
  g_free (gt_test_proc_expect_line (second, "tunnel started", NULL, GT_TEST_WAIT_MS));
  for (guint i = 0; i < N_NODES; i++)
    if (wait_reachable (f, i, "api.example.com", 10000) == G_MAXUINT)
      gt_test_fail ("api is not reachable through node %s", node_names[i]);
  /* Held longer than the lease TTL: the keep-alive goes to the living members. */
  g_usleep (3 * G_USEC_PER_SEC);
  expect_bytes (f, 1, "web.example.com", PATTERN_SIZE);
  expect_bytes (f, 0, "api.example.com", PATTERN_SIZE);
}

/* Every etcd member down, then back: held routes keep working throughout, new claims are
 * refused with a clear error, then accepted again. */
static void
test_outage (Fixture *f, gconstpointer data)
{
  static const guint on_a[] = { 0 };
  static const guint on_c[] = { 2 };
  GtTestProc *first, *second;
  gint64 until;

  REQUIRE_ETCD ();
  cluster_start (f);
  first = client_start (f, "c1", "web", on_a, 1);
  g_free (gt_test_proc_expect_line (first, "tunnel started", NULL, GT_TEST_WAIT_MS));
  for (guint i = 1; i < N_NODES; i++)
    if (wait_reachable (f, i, "web.example.com", 10000) == G_MAXUINT)
      gt_test_fail ("web is not reachable through node %s", node_names[i]);

  for (guint i = 0; i < N_MEMBERS; i++)
    gt_test_proc_stop (f->members[i].proc, SIGKILL);

  /* A new client is refused with the registry's error while etcd is away. */
  second = client_start (f, "c2", "api", on_c, 1);
  g_free (gt_test_proc_expect_line (second, "registry.*\\(code 17\\)", NULL, GT_TEST_WAIT_MS));

  /* Held routes work for well over the lease TTL, directly and forwarded. */
  until = gt_test_deadline_in (5000);
  while (g_get_monotonic_time () < until)
    for (guint i = 0; i < N_NODES; i++)
      expect_bytes (f, i, "web.example.com", 64 * 1024);
  if (gt_test_proc_count_matches (second, "tunnel started") != 0)
    gt_test_fail ("a client was accepted while etcd was down");

  for (guint i = 0; i < N_MEMBERS; i++)
    member_start (f, i);
  members_wait_ready (f);
  g_free (gt_test_proc_expect_line (second, "tunnel started", NULL, GT_TEST_WAIT_MS));
  for (guint i = 0; i < N_NODES; i++)
    {
      if (wait_reachable (f, i, "api.example.com", 15000) == G_MAXUINT)
        gt_test_fail ("api is not reachable through node %s after etcd came back",
                      node_names[i]);
      expect_bytes (f, i, "web.example.com", PATTERN_SIZE);
    }
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, PATTERN_SIZE);

#define ADD(path, fn)                                                                              \
  g_test_add ("/gt/cluster/integration/" path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  ADD ("forward", test_forward);
  ADD ("bad-secret", test_bad_secret);
  ADD ("not-a-node", test_not_a_node);
  ADD ("failover", test_failover);
  ADD ("graceful-stop", test_graceful_stop);
  ADD ("node-restart", test_node_restart);
  ADD ("claim-race", test_claim_race);
  ADD ("etcd-member-down", test_member_down);
  ADD ("etcd-outage", test_outage);
  ADD ("etcd-auth", test_etcd_auth);
  ADD ("etcd-tls", test_etcd_tls);
#undef ADD
  return gt_test_run ();
}
