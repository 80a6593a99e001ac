/* test-web-admin.c (integration): the admin web UI of real gt processes on 127.0.0.1, driven by
 * a libsoup client: zero-argument setup with a one-time link, login (right, wrong, rate-limited),
 * 401 without a session and 403 without the CSRF token on every endpoint, per-field config
 * errors, save + apply serving a new route, disconnecting a client, a client's new service, and
 * no secret in any answer. Uses the gt binary from $GT_BINARY. */
#include "config.h"

#include <string.h>

#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include "gt-admin-auth.h"
#include "gt-test-utils.h"

#define USER_SECRET "alice-secret-0123456789"
#define ADMIN_PASSWORD "correct horse battery"
#define NEW_PASSWORD "another-password-42"

typedef struct
{
  SoupSession *session;
  guint16 port;
  char *cookie; /* "gt_session=..." */
  char *csrf;
  GPtrArray *bodies; /* every answer's body, checked for secrets at the end */
  GPtrArray *secrets; /* strings no answer may contain */
} Admin;

typedef struct
{
  guint status;
  char *body;
  char *set_cookie;
  JsonNode *json;
} Reply;

static void
reply_free (Reply *r)
{
  g_free (r->body);
  g_free (r->set_cookie);
  g_clear_pointer (&r->json, json_node_unref);
  g_free (r);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Reply, reply_free)

static Admin *
admin_new (guint16 port)
{
  Admin *a = g_new0 (Admin, 1);

  a->session = soup_session_new_with_options ("timeout", 30, NULL);
  a->port = port;
  a->bodies = g_ptr_array_new_with_free_func (g_free);
  a->secrets = g_ptr_array_new_with_free_func (g_free);
  return a;
}

/* Every answer so far is free of every secret. */
static void
admin_check_secrets (Admin *a)
{
  for (guint i = 0; i < a->bodies->len; i++)
    for (guint j = 0; j < a->secrets->len; j++)
      if (strstr (a->bodies->pdata[i], a->secrets->pdata[j]) != NULL)
        gt_test_fail ("answer %u holds the secret '%s': %s", i, (char *) a->secrets->pdata[j],
                      (char *) a->bodies->pdata[i]);
}

static void
admin_free (Admin *a)
{
  admin_check_secrets (a);
  g_object_unref (a->session);
  g_free (a->cookie);
  g_free (a->csrf);
  g_ptr_array_unref (a->bodies);
  g_ptr_array_unref (a->secrets);
  g_free (a);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Admin, admin_free)

/* One request; cookie and csrf are sent when given (pass a->cookie, a->csrf, or NULL). */
static Reply *
request_full (Admin *a, const char *method, const char *path, const char *body,
              const char *cookie, const char *csrf)
{
  g_autofree char *url = g_strdup_printf ("http://127.0.0.1:%u%s", a->port, path);
  g_autoptr (SoupMessage) msg = soup_message_new (method, url);
  g_autoptr (GBytes) bytes = NULL;
  g_autoptr (GError) error = NULL;
  Reply *r = g_new0 (Reply, 1);
  SoupMessageHeaders *h = soup_message_get_request_headers (msg);

  if (cookie != NULL)
    soup_message_headers_replace (h, "Cookie", cookie);
  if (csrf != NULL)
    soup_message_headers_replace (h, "X-CSRF-Token", csrf);
  if (body != NULL)
    {
      g_autoptr (GBytes) b = g_bytes_new (body, strlen (body));

      soup_message_set_request_body_from_bytes (msg, "application/json", b);
    }
  bytes = soup_session_send_and_read (a->session, msg, NULL, &error);
  if (bytes == NULL)
    gt_test_fail ("%s %s: %s", method, path, error->message);
  r->status = soup_message_get_status (msg);
  r->body = g_strndup (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes));
  r->set_cookie = g_strdup (
      soup_message_headers_get_one (soup_message_get_response_headers (msg), "Set-Cookie"));
  r->json = json_from_string (r->body, NULL);
  g_ptr_array_add (a->bodies, g_strdup (r->body));
  return r;
}

static Reply *
request (Admin *a, const char *method, const char *path, const char *body)
{
  return request_full (a, method, path, body, a->cookie, a->csrf);
}

static JsonObject *
obj (Reply *r)
{
  if (r->json == NULL || !JSON_NODE_HOLDS_OBJECT (r->json))
    gt_test_fail ("not a JSON object: %s", r->body);
  return json_node_get_object (r->json);
}

#define expect_status(r, want)                                                                   \
  G_STMT_START                                                                                   \
  {                                                                                              \
    if ((r)->status != (want))                                                                   \
      gt_test_fail ("status %u (want %u): %s", (r)->status, (guint)(want), (r)->body);           \
  }                                                                                              \
  G_STMT_END

/* Logs in with a body; keeps the cookie and CSRF token. */
static void
admin_login (Admin *a, const char *body)
{
  g_autoptr (Reply) r = request_full (a, "POST", "/api/login", body, NULL, NULL);
  const char *end;

  expect_status (r, 200);
  g_assert_nonnull (r->set_cookie);
  g_assert_true (g_str_has_prefix (r->set_cookie, "gt_session="));
  g_assert_nonnull (strstr (r->set_cookie, "HttpOnly"));
  g_assert_nonnull (strstr (r->set_cookie, "SameSite=Strict"));
  end = strchr (r->set_cookie, ';');
  g_free (a->cookie);
  a->cookie = g_strndup (r->set_cookie, end - r->set_cookie);
  g_free (a->csrf);
  a->csrf = g_strdup (json_object_get_string_member (obj (r), "csrfToken"));
}

static guint16
web_port_of (GtTestProc *p)
{
  g_autofree char *line = gt_test_proc_expect_line (p, "admin UI on http://127\\.0\\.0\\.1:[0-9]+",
                                                    NULL, GT_TEST_WAIT_MS);

  return (guint16) gt_test_capture_uint (line, "127\\.0\\.0\\.1:([0-9]+)");
}

static char *
login_key_of (GtTestProc *p)
{
  g_autofree char *line = gt_test_proc_expect_line (p, "#key=[0-9a-f]+", NULL, GT_TEST_WAIT_MS);
  g_autoptr (GRegex) re = g_regex_new ("#key=([0-9a-f]+)", 0, 0, NULL);
  g_autoptr (GMatchInfo) m = NULL;

  g_assert_true (g_regex_match (re, line, 0, &m));
  return g_match_info_fetch (m, 1);
}

static void
setup (gpointer f, gconstpointer data)
{
  gt_test_setup ();
}

static void
teardown (gpointer f, gconstpointer data)
{
  gt_test_teardown ();
}

static GtTestProc *
start_client (const char *name, guint16 server_port, guint16 service_port, const char *prefix)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();

  gt_test_args_addv (args, "client", "--id", "alice", "--secret", USER_SECRET, NULL);
  gt_test_args_add (args, "--remote=tcp://127.0.0.1:%u", server_port);
  gt_test_args_add (args, "--local=http://127.0.0.1:%u", service_port);
  gt_test_args_addv (args, "--hostPrefix", prefix, "--reconnectDelay", "200ms", NULL);
  return gt_test_spawn_gt (name, args);
}

/* `gt server` without arguments in an empty folder: the link logs in, a bad value comes back on
 * its field, a saved config starts the relay without a restart, a client's route serves, and a
 * disconnect closes the client's tunnel. */
static void
test_zero_arg_setup (gpointer f, gconstpointer data)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autoptr (Admin) a = NULL;
  Admin *other_session = NULL;
  g_autoptr (Reply) r = NULL;
  g_autoptr (Reply) bad = NULL;
  g_autoptr (Reply) saved = NULL;
  g_autoptr (Reply) status = NULL;
  g_autoptr (Reply) config = NULL;
  g_autoptr (Reply) kick = NULL;
  g_autoptr (GtTestHttpResponse) resp = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *key = NULL;
  g_autofree char *body = NULL;
  g_autofree char *yaml = NULL;
  g_autofree char *file = NULL;
  GtTestProc *server, *client;
  GtTestHttp *svc;
  JsonArray *errors;
  guint16 relay_port = gt_test_free_port ();
  guint from = 0;

  GT_TEST_REQUIRE_GT ();
  gt_test_args_add (args, "server");
  server = gt_test_spawn ("server", gt_test_binary (), args, gt_test_tmpdir (), NULL);
  a = admin_new (web_port_of (server));
  key = login_key_of (server);
  g_ptr_array_add (a->secrets, g_strdup (key));
  g_ptr_array_add (a->secrets, g_strdup (USER_SECRET));
  g_ptr_array_add (a->secrets, g_strdup (ADMIN_PASSWORD));
  g_ptr_array_add (a->secrets, g_strdup ("pbkdf2-sha256"));

  /* Nothing runs yet; the one-time link logs in. */
  r = request_full (a, "GET", "/api/status", NULL, NULL, NULL);
  expect_status (r, 401);
  g_clear_pointer (&r, reply_free);
  r = request_full (a, "POST", "/api/login", "{\"key\":\"0123456789abcdef0123456789abcdef\"}",
                    NULL, NULL);
  expect_status (r, 401);
  g_clear_pointer (&r, reply_free);
  body = g_strdup_printf ("{\"key\":\"%s\"}", key);
  admin_login (a, body);
  status = request (a, "GET", "/api/status", NULL);
  expect_status (status, 200);
  g_assert_false (json_object_get_boolean_member (obj (status), "running"));
  g_assert_false (json_object_get_boolean_member (obj (status), "configExists"));
  g_clear_pointer (&status, reply_free);

  /* The loader's message comes back on the field, with FILE:LINE:COLUMN. */
  bad = request (a, "POST", "/api/config/validate",
                 "{\"config\":{\"type\":\"server\","
                 "\"options\":{\"addr\":\"127.0.0.1:notaport\"}}}");
  expect_status (bad, 422);
  errors = json_object_get_array_member (obj (bad), "errors");
  g_assert_cmpuint (json_array_get_length (errors), ==, 1);
  g_assert_cmpstr (json_object_get_string_member (json_array_get_object_element (errors, 0),
                                                  "field"),
                   ==, "options.addr");
  g_assert_true (g_regex_match_simple (
      "server\\.yaml:[0-9]+:[0-9]+: .*notaport",
      json_object_get_string_member (json_array_get_object_element (errors, 0), "message"), 0,
      0));
  file = g_build_filename (gt_test_tmpdir (), "server.yaml", NULL);
  g_assert_false (g_file_test (file, G_FILE_TEST_EXISTS)); /* validate does not save */

  /* A second session (the link again); setting the password in the saved file ends it. */
  {
    g_autoptr (Admin) other = admin_new (a->port);

    admin_login (other, body);
    g_clear_pointer (&r, reply_free);
    r = request (other, "GET", "/api/status", NULL);
    expect_status (r, 200);
    other_session = g_steal_pointer (&other);
  }

  /* Save + apply: the relay starts in the same process. */
  g_free (body);
  body = g_strdup_printf ("{\"config\":{\"type\":\"server\",\"options\":{\"addr\":\"127.0.0.1:%u\","
                          "\"admin\":\"root\",\"password\":\"%s\"},"
                          "\"users\":{\"alice\":{\"secret\":"
                          "\"%s\"}}},\"apply\":true}",
                          relay_port, ADMIN_PASSWORD, USER_SECRET);
  saved = request (a, "POST", "/api/config/save", body);
  expect_status (saved, 200);
  g_assert_true (json_object_get_boolean_member (obj (saved), "applied"));
  g_free (
      gt_test_proc_expect_line (server, "listening on 127\\.0\\.0\\.1", &from, GT_TEST_WAIT_MS));
  g_assert_true (g_file_get_contents (file, &yaml, NULL, NULL));
  g_assert_null (strstr (yaml, ADMIN_PASSWORD)); /* stored hashed */
  g_assert_nonnull (strstr (yaml, "pbkdf2-sha256$"));
  status = request (a, "GET", "/api/status", NULL);
  g_assert_true (json_object_get_boolean_member (obj (status), "running"));
  g_clear_pointer (&r, reply_free);
  r = request (other_session, "GET", "/api/status", NULL);
  expect_status (r, 401);
  g_ptr_array_extend (a->bodies, other_session->bodies, (GCopyFunc) (void (*) (void)) g_strdup,
                      NULL);
  g_clear_pointer (&other_session, admin_free);

  /* Secrets come back blank; saving them blank keeps them. */
  config = request (a, "GET", "/api/config", NULL);
  expect_status (config, 200);

  /* The new route serves. */
  svc = gt_test_http_start ("svc-one", 0, NULL);
  client = start_client ("client", relay_port, svc->port, "web");
  g_free (gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS));
  resp = gt_test_http_request (relay_port, "GET", "/whoami", "web.example.com", NULL, 0, &error);
  gt_test_expect_response (resp, error, 200);
  g_assert_cmpmem (resp->body->data, resp->body->len, "svc-one", 7);

  /* Disconnect: the server closes the client's tunnels. */
  kick = request (a, "POST", "/api/users/alice/disconnect", "{}");
  expect_status (kick, 200);
  g_free (gt_test_proc_expect_line (server, "tunnel closed: client=alice", &from, GT_TEST_WAIT_MS));
  g_clear_pointer (&kick, reply_free);
  kick = request (a, "POST", "/api/users/nobody/disconnect", "{}");
  expect_status (kick, 404);

  /* The one-time link is spent after a few uses (two used above). */
  g_free (body);
  body = g_strdup_printf ("{\"key\":\"%s\"}", key);
  for (guint i = 2; i < 3; i++)
    {
      g_clear_pointer (&r, reply_free);
      r = request_full (a, "POST", "/api/login", body, NULL, NULL);
      expect_status (r, 200);
    }
  g_clear_pointer (&r, reply_free);
  r = request_full (a, "POST", "/api/login", body, NULL, NULL);
  expect_status (r, 401);
  gt_test_proc_stop_cleanly (client);
  gt_test_proc_stop_cleanly (server);
}

/* A server with webAddr and an admin password in its file. */
static GtTestProc *
start_configured_server (guint16 *relay_port_out)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autofree char *hash = gt_admin_password_hash (ADMIN_PASSWORD, NULL);
  guint16 relay_port = gt_test_free_port ();
  g_autofree char *text = g_strdup_printf ("type: server\n"
                                           "users:\n"
                                           "  alice:\n"
                                           "    secret: %s\n"
                                           "options:\n"
                                           "  addr: 127.0.0.1:%u\n"
                                           "  webAddr: 127.0.0.1:0\n"
                                           "  admin: root\n"
                                           "  password: \"%s\"\n",
                                           USER_SECRET, relay_port, hash);
  g_autofree char *path = gt_test_write_file ("server.yaml", text);

  gt_test_args_addv (args, "server", "-c", path, NULL);
  if (relay_port_out != NULL)
    *relay_port_out = relay_port;
  return gt_test_spawn_gt ("server", args);
}

/* Every endpoint: 401 without a session; the state-changing ones: 403 without the CSRF token. */
static const struct
{
  const char *method;
  const char *path;
  const char *body;
} endpoints[] = {
  { "GET", "/api/session", NULL },
  { "GET", "/api/status", NULL },
  { "GET", "/api/connections", NULL },
  { "GET", "/api/config", NULL },
  { "POST", "/api/config/validate", "{\"config\":{}}" },
  { "POST", "/api/config/save", "{\"config\":{}}" },
  { "POST", "/api/config/apply", "{}" },
  { "GET", "/api/users", NULL },
  { "POST", "/api/users", "{\"id\":\"bob\",\"user\":{\"secret\":\"bob-secret\"}}" },
  { "PUT", "/api/users/alice", "{\"user\":{\"secret\":\"x\"}}" },
  { "DELETE", "/api/users/alice", NULL },
  { "POST", "/api/users/alice/disconnect", "{}" },
  { "GET", "/api/services", NULL },
  { "POST", "/api/services", "{\"service\":{\"local\":\"http://127.0.0.1:1\"}}" },
  { "DELETE", "/api/services/0", NULL },
  { "GET", "/api/traffic", NULL },
  { "GET", "/api/logs", NULL },
  { "GET", "/api/ws", NULL },
  { "POST", "/api/password", "{\"password\":\"whatever-password\"}" },
  { "POST", "/api/logout", "{}" },
};

static void
test_auth (gpointer f, gconstpointer data)
{
  g_autoptr (Admin) a = NULL;
  g_autoptr (Admin) b = NULL;
  g_autoptr (Reply) r = NULL;
  g_autofree char *right = g_strdup_printf ("{\"username\":\"root\",\"password\":\"%s\"}",
                                            ADMIN_PASSWORD);
  g_autofree char *file = g_build_filename (gt_test_tmpdir (), "server.yaml", NULL);
  g_autofree char *before = NULL;
  g_autofree char *after = NULL;
  GtTestProc *server;

  GT_TEST_REQUIRE_GT ();
  server = start_configured_server (NULL);
  a = admin_new (web_port_of (server));
  g_assert_cmpuint (gt_test_proc_count_matches (server, "#key="), ==, 0); /* a password is set */
  g_ptr_array_add (a->secrets, g_strdup (USER_SECRET));
  g_ptr_array_add (a->secrets, g_strdup (ADMIN_PASSWORD));
  g_ptr_array_add (a->secrets, g_strdup ("pbkdf2-sha256"));

  for (guint i = 0; i < G_N_ELEMENTS (endpoints); i++)
    {
      g_clear_pointer (&r, reply_free);
      r = request_full (a, endpoints[i].method, endpoints[i].path, endpoints[i].body, NULL,
                        "whatever");
      if (r->status != 401)
        gt_test_fail ("%s %s without a session: %u", endpoints[i].method, endpoints[i].path,
                      r->status);
    }
  g_assert_true (g_file_get_contents (file, &before, NULL, NULL));

  /* DNS rebinding: another site's name pointed at 127.0.0.1 is refused before anything else. */
  {
    g_autoptr (GtTestHttpResponse) resp = NULL;
    g_autoptr (GError) error = NULL;

    resp = gt_test_http_request (a->port, "POST", "/api/login", "evil.example.com",
                                 right, strlen (right), &error);
    gt_test_expect_response (resp, error, 421);
    g_clear_pointer (&resp, gt_test_http_response_free);
    resp = gt_test_http_request (a->port, "GET", "/api/health", "localhost", NULL, 0, &error);
    gt_test_expect_response (resp, error, 200);
  }

  /* Wrong user, wrong password, then right. */
  g_clear_pointer (&r, reply_free);
  r = request_full (a, "POST", "/api/login",
                    "{\"username\":\"admin\",\"password\":\"" ADMIN_PASSWORD "\"}", NULL, NULL);
  expect_status (r, 401);
  g_assert_null (r->set_cookie);
  g_clear_pointer (&r, reply_free);
  r = request_full (a, "POST", "/api/login", "{\"username\":\"root\",\"password\":\"nope\"}",
                    NULL, NULL);
  expect_status (r, 401);
  admin_login (a, right);
  g_clear_pointer (&r, reply_free);
  r = request (a, "GET", "/api/status", NULL);
  expect_status (r, 200);
  g_assert_true (json_object_get_boolean_member (obj (r), "running"));

  /* Logged in, but without the CSRF token: 403, and nothing changes. */
  for (guint i = 0; i < G_N_ELEMENTS (endpoints); i++)
    {
      if (strcmp (endpoints[i].method, "GET") == 0)
        continue;
      g_clear_pointer (&r, reply_free);
      r = request_full (a, endpoints[i].method, endpoints[i].path, endpoints[i].body, a->cookie,
                        NULL);
      if (r->status != 403)
        gt_test_fail ("%s %s without the CSRF token: %u", endpoints[i].method, endpoints[i].path,
                      r->status);
      g_clear_pointer (&r, reply_free);
      r = request_full (a, endpoints[i].method, endpoints[i].path, endpoints[i].body, a->cookie,
                        "0000");
      if (r->status != 403)
        gt_test_fail ("%s %s with a wrong CSRF token: %u", endpoints[i].method,
                      endpoints[i].path, r->status);
    }
  g_assert_true (g_file_get_contents (file, &after, NULL, NULL));
  g_assert_cmpstr (before, ==, after);

  /* Every GET with the session answers, and holds no secret (checked at the end). */
  for (guint i = 0; i < G_N_ELEMENTS (endpoints); i++)
    {
      if (strcmp (endpoints[i].method, "GET") != 0 || strcmp (endpoints[i].path, "/api/ws") == 0)
        continue;
      g_clear_pointer (&r, reply_free);
      r = request (a, "GET", endpoints[i].path, NULL);
      if (r->status != 200
          && !(strcmp (endpoints[i].path, "/api/services") == 0 && r->status == 404))
        gt_test_fail ("GET %s: %u %s", endpoints[i].path, r->status, r->body);
    }

  /* A second session; changing the password in the first ends it. */
  b = admin_new (a->port);
  admin_login (b, right);
  g_clear_pointer (&r, reply_free);
  r = request (b, "GET", "/api/status", NULL);
  expect_status (r, 200);
  g_clear_pointer (&r, reply_free);
  r = request (a, "POST", "/api/password", "{\"password\":\"" NEW_PASSWORD "\"}");
  expect_status (r, 200);
  g_clear_pointer (&r, reply_free);
  r = request (b, "GET", "/api/status", NULL);
  expect_status (r, 401);
  g_clear_pointer (&r, reply_free);
  r = request (a, "GET", "/api/status", NULL);
  expect_status (r, 200);
  g_ptr_array_add (a->secrets, g_strdup (NEW_PASSWORD));
  g_clear_pointer (&r, reply_free);
  r = request_full (a, "POST", "/api/login", right, NULL, NULL);
  expect_status (r, 401); /* the old password no longer works */

  /* Rate limit: after the failures of this window, even the right password waits. */
  for (guint i = 0; i < 10 && r->status != 429; i++)
    {
      g_clear_pointer (&r, reply_free);
      r = request_full (a, "POST", "/api/login", "{\"username\":\"root\",\"password\":\"x\"}",
                        NULL, NULL);
    }
  expect_status (r, 429);
  g_clear_pointer (&r, reply_free);
  r = request_full (a, "POST", "/api/login",
                    "{\"username\":\"root\",\"password\":\"" NEW_PASSWORD "\"}", NULL, NULL);
  expect_status (r, 429);
  gt_test_proc_stop_cleanly (server);
}

/* Users are added through the API and take effect at once; bad bodies get a clear 400. */
static void
test_users (gpointer f, gconstpointer data)
{
  g_autoptr (Admin) a = NULL;
  g_autoptr (Reply) r = NULL;
  g_autoptr (GtTestHttpResponse) resp = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *right = g_strdup_printf ("{\"username\":\"root\",\"password\":\"%s\"}",
                                            ADMIN_PASSWORD);
  GtTestProc *server, *client;
  GtTestHttp *svc;
  guint16 relay_port;
  JsonArray *errors;

  GT_TEST_REQUIRE_GT ();
  server = start_configured_server (&relay_port);
  a = admin_new (web_port_of (server));
  g_ptr_array_add (a->secrets, g_strdup (USER_SECRET));
  g_ptr_array_add (a->secrets, g_strdup ("bob-secret-987654"));
  g_ptr_array_add (a->secrets, g_strdup ("pbkdf2-sha256"));
  admin_login (a, right);

  r = request (a, "POST", "/api/users", "not json");
  expect_status (r, 400);
  g_clear_pointer (&r, reply_free);
  r = request (a, "POST", "/api/users",
               "{\"id\":\"bob\",\"user\":{\"secret\":\"bob-secret-987654\","
               "\"connections\":\"many\"}}");
  expect_status (r, 422);
  errors = json_object_get_array_member (obj (r), "errors");
  g_assert_cmpstr (json_object_get_string_member (json_array_get_object_element (errors, 0),
                                                  "field"),
                   ==, "users.bob.connections");
  g_clear_pointer (&r, reply_free);
  r = request (a, "POST", "/api/users",
               "{\"id\":\"bob\",\"user\":{\"secret\":\"bob-secret-987654\"}}");
  expect_status (r, 200);
  g_assert_true (json_object_get_boolean_member (obj (r), "applied"));
  g_clear_pointer (&r, reply_free);
  r = request (a, "GET", "/api/users", NULL);
  expect_status (r, 200);
  g_assert_true (json_object_has_member (json_object_get_object_member (obj (r), "users"), "bob"));
  g_assert_true (
      json_object_has_member (json_object_get_object_member (obj (r), "users"), "alice"));

  /* alice's secret survived the save (it was never sent back): alice still logs in. */
  svc = gt_test_http_start ("svc-alice", 0, NULL);
  client = start_client ("client", relay_port, svc->port, "alice");
  g_free (gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS));
  resp = gt_test_http_request (relay_port, "GET", "/whoami", "alice.example.com", NULL, 0, &error);
  gt_test_expect_response (resp, error, 200);
  g_clear_pointer (&r, reply_free);
  r = request (a, "GET", "/api/connections", NULL);
  expect_status (r, 200);
  g_assert_nonnull (strstr (r->body, "\"id\":\"alice\""));

  /* A saved file whose listener cannot open: the previous file runs again. */
  {
    g_autoptr (GSocket) taken = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM,
                                              G_SOCKET_PROTOCOL_TCP, NULL);
    g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
    g_autoptr (GSocketAddress) any = g_inet_socket_address_new (lo, 0);
    g_autoptr (GSocketAddress) bound = NULL;
    g_autoptr (Reply) cfg = request (a, "GET", "/api/config", NULL);
    JsonObject *doc = json_object_get_object_member (obj (cfg), "config");
    g_autoptr (JsonNode) send = json_node_new (JSON_NODE_OBJECT);
    JsonObject *wrap = json_object_new ();
    g_autofree char *addr = NULL;
    g_autofree char *text = NULL;

    g_assert_true (g_socket_bind (taken, any, TRUE, NULL));
    g_assert_true (g_socket_listen (taken, NULL));
    bound = g_socket_get_local_address (taken, NULL);
    addr = g_strdup_printf ("127.0.0.1:%u",
                            g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound)));
    json_object_set_string_member (json_object_get_object_member (doc, "options"), "addr", addr);
    json_object_set_object_member (wrap, "config", json_object_ref (doc));
    json_node_take_object (send, wrap);
    text = json_to_string (send, FALSE);
    g_clear_pointer (&r, reply_free);
    r = request (a, "POST", "/api/config/save", text);
    expect_status (r, 200);
    g_assert_false (json_object_get_boolean_member (obj (r), "applied"));
    g_assert_nonnull (strstr (json_object_get_string_member (obj (r), "applyError"),
                              "runs again"));
    g_clear_pointer (&r, reply_free);
    r = request (a, "GET", "/api/status", NULL);
    g_assert_true (json_object_get_boolean_member (obj (r), "running"));
    g_clear_pointer (&resp, gt_test_http_response_free);
    for (gint64 deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
         g_get_monotonic_time () < deadline; g_usleep (100 * 1000))
      {
        g_clear_pointer (&resp, gt_test_http_response_free);
        g_clear_error (&error);
        resp = gt_test_http_request (relay_port, "GET", "/whoami", "alice.example.com", NULL, 0,
                                     &error);
        if (resp != NULL && resp->status == 200)
          break;
      }
    gt_test_expect_response (resp, error, 200);
  }
  gt_test_proc_stop_cleanly (client);
  gt_test_proc_stop_cleanly (server);
}

typedef struct
{
  guint16 port;
  char *host;
  GtTestHttpResponse *resp;
} SlowRequest;

static gpointer
slow_request_thread (gpointer data)
{
  SlowRequest *sr = data;
  g_autoptr (GError) error = NULL;

  sr->resp = gt_test_http_request (sr->port, "GET", "/slow?ms=3000", sr->host, NULL, 0, &error);
  return NULL;
}

typedef struct
{
  SoupWebsocketConnection *ws;
  char *first_message;
  gboolean done;
  char *error;
} WsWait;

static void
ws_message_cb (SoupWebsocketConnection *ws, int type, GBytes *message, gpointer user_data)
{
  WsWait *w = user_data;

  if (w->first_message == NULL)
    w->first_message = g_strndup (g_bytes_get_data (message, NULL), g_bytes_get_size (message));
  w->done = TRUE;
}

static void
ws_connected_cb (GObject *source, GAsyncResult *res, gpointer user_data)
{
  WsWait *w = user_data;
  g_autoptr (GError) error = NULL;

  w->ws = soup_session_websocket_connect_finish (SOUP_SESSION (source), res, &error);
  if (w->ws == NULL)
    {
      w->error = g_strdup (error->message);
      w->done = TRUE;
      return;
    }
  g_signal_connect (w->ws, "message", G_CALLBACK (ws_message_cb), w);
}

/* A client with webAddr: a service added through the API serves at once, its request shows in
 * the connections while it runs, and the live socket pushes the state. */
static void
test_client_services (gpointer f, gconstpointer data)
{
  g_autoptr (Admin) a = NULL;
  g_autoptr (Reply) r = NULL;
  g_autoptr (GtTestHttpResponse) resp = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autofree char *hash = gt_admin_password_hash (ADMIN_PASSWORD, NULL);
  g_autofree char *right = g_strdup_printf ("{\"username\":\"root\",\"password\":\"%s\"}",
                                            ADMIN_PASSWORD);
  g_autofree char *text = NULL;
  g_autofree char *path = NULL;
  g_autofree char *body = NULL;
  g_autofree char *want = NULL;
  g_autofree char *url = NULL;
  g_autoptr (SoupMessage) upgrade = NULL;
  SlowRequest sr = { 0 };
  WsWait w = { 0 };
  GThread *thread;
  GtTestProc *client;
  GtTestHttp *svc1, *svc2;
  guint16 relay_port;
  gboolean seen = FALSE;
  guint from = 0;

  GT_TEST_REQUIRE_GT ();
  start_configured_server (&relay_port);
  svc1 = gt_test_http_start ("svc-first", 0, NULL);
  svc2 = gt_test_http_start ("svc-second", 0, NULL);
  text = g_strdup_printf ("type: client\n"
                          "options:\n"
                          "  id: alice\n"
                          "  secret: %s\n"
                          "  remote: tcp://127.0.0.1:%u\n"
                          "  reconnectDelay: 200ms\n"
                          "  webAddr: 127.0.0.1:0\n"
                          "  admin: root\n"
                          "  password: \"%s\"\n"
                          "services:\n"
                          "  - local: http://127.0.0.1:%u\n"
                          "    hostPrefix: first\n",
                          USER_SECRET, relay_port, hash, svc1->port);
  path = gt_test_write_file ("client.yaml", text);
  gt_test_args_addv (args, "client", "-c", path, NULL);
  client = gt_test_spawn_gt ("client", args);
  a = admin_new (web_port_of (client));
  g_ptr_array_add (a->secrets, g_strdup (USER_SECRET));
  g_ptr_array_add (a->secrets, g_strdup ("pbkdf2-sha256"));
  g_free (gt_test_proc_expect_line (client, "tunnel started", &from, GT_TEST_WAIT_MS));
  admin_login (a, right);

  r = request (a, "POST", "/api/users", "{\"id\":\"x\",\"user\":{}}");
  expect_status (r, 404); /* users are a server's */
  g_clear_pointer (&r, reply_free);
  r = request (a, "POST", "/api/services", "{\"service\":{\"local\":\"ftp://nowhere\"}}");
  expect_status (r, 422);
  g_assert_nonnull (strstr (r->body, "\"field\":\"services.1.local\""));
  g_clear_pointer (&r, reply_free);
  body = g_strdup_printf (
      "{\"service\":{\"local\":\"http://127.0.0.1:%u\",\"hostPrefix\":\"second\"}}",
      svc2->port);
  r = request (a, "POST", "/api/services", body);
  expect_status (r, 200);
  g_assert_true (json_object_get_boolean_member (obj (r), "applied"));
  g_free (gt_test_proc_expect_line (client, "tunnel started", &from, GT_TEST_WAIT_MS));

  resp = gt_test_http_request (relay_port, "GET", "/whoami", "second.example.com", NULL, 0, &error);
  gt_test_expect_response (resp, error, 200);
  g_assert_cmpmem (resp->body->data, resp->body->len, "svc-second", 10);

  /* A request in flight shows in the connections, with the service it goes to. */
  sr.port = relay_port;
  sr.host = g_strdup ("second.example.com");
  thread = g_thread_new ("slow", slow_request_thread, &sr);
  want = g_strdup_printf ("\"service\":\"http://127.0.0.1:%u\"", svc2->port);
  for (gint64 deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);
       !seen && g_get_monotonic_time () < deadline;)
    {
      g_clear_pointer (&r, reply_free);
      r = request (a, "GET", "/api/connections", NULL);
      seen = strstr (r->body, want) != NULL && strstr (r->body, "\"remote\":\"127.0.0.1:") != NULL;
      if (!seen)
        g_usleep (100 * 1000);
    }
  g_assert_true (seen);
  g_thread_join (thread);
  g_assert_nonnull (sr.resp);
  g_assert_cmpuint (sr.resp->status, ==, 200);
  gt_test_http_response_free (sr.resp);
  g_free (sr.host);

  /* The live socket: refused without a session (401 checked in auth), pushes state with one. */
  url = g_strdup_printf ("ws://127.0.0.1:%u/api/ws", a->port);
  upgrade = soup_message_new ("GET", url);
  soup_message_headers_replace (soup_message_get_request_headers (upgrade), "Cookie", a->cookie);
  soup_session_websocket_connect_async (a->session, upgrade, NULL, NULL, G_PRIORITY_DEFAULT, NULL,
                                        ws_connected_cb, &w);
  gt_test_iterate_until (&w.done, gt_test_deadline_in (GT_TEST_WAIT_MS));
  if (w.error != NULL)
    gt_test_fail ("WebSocket: %s", w.error);
  g_assert_nonnull (w.first_message);
  g_assert_true (g_str_has_prefix (w.first_message, "{\"type\":\"state\""));
  g_assert_nonnull (strstr (w.first_message, "\"kind\":\"client\""));
  g_ptr_array_add (a->bodies, g_strdup (w.first_message));
  soup_websocket_connection_close (w.ws, SOUP_WEBSOCKET_CLOSE_NORMAL, NULL);
  g_clear_object (&w.ws);
  g_free (w.first_message);
  gt_test_proc_stop_cleanly (client);
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, 0);
  g_test_add ("/gt/web-admin/zero-arg-setup", void, NULL, setup, test_zero_arg_setup, teardown);
  g_test_add ("/gt/web-admin/auth", void, NULL, setup, test_auth, teardown);
  g_test_add ("/gt/web-admin/users", void, NULL, setup, test_users, teardown);
  g_test_add ("/gt/web-admin/client-services", void, NULL, setup, test_client_services,
              teardown);
  return gt_test_run ();
}
