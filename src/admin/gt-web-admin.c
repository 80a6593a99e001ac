/* gt-web-admin.c: the admin web UI (webAddr): login and sessions, the REST API under /api/, live
 * state over a WebSocket, traffic history, and the pages of ui/web/ from a GResource. */
#include "config.h"

#define G_LOG_DOMAIN "gt-admin"

#include <string.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include "gt-admin-auth.h"
#include "gt-admin-config.h"
#include "gt-api-server.h"
#include "gt-log.h"
#include "gt-web-admin.h"
#include "gt-web-resources.h"

#define COOKIE_NAME "gt_session"
#define CSRF_HEADER "X-CSRF-Token"
#define RESOURCE_ROOT "/org/gt/web"
#define MAX_LOG_LINES 500
#define SESSION_MAX_AGE_S (12 * 3600)

typedef struct
{
  char *token;
  char *csrf;
  char *username;
  gint64 created_us;
  gint64 used_us;
} Session;

typedef struct
{
  guint failures;
  gint64 window_start_us;
} LoginRecord;

typedef struct
{
  char *key;
  gint64 expires_us;
  guint uses_left;
} LoginKey;

struct _GtWebAdmin
{
  GObject parent_instance;

  GtConfigKind kind;
  char *config_path;
  GtApiServer *http;
  gboolean tls;
  gboolean loopback_only; /* bound to a loopback address: Host must be loopback too */
  Session *current;       /* the session of the request being handled */
  char *admin_user;     /* NULL: only one-time links log in */
  char *password_hash;  /* hash or GT's plaintext */
  GHashTable *sessions; /* token → Session* */
  GHashTable *logins;   /* address → LoginRecord* */
  GPtrArray *keys;      /* LoginKey* */

  GtServer *server;
  GtClient *client;
  gint64 relay_started_us;
  GtWebAdminApplyFunc apply_func;
  gpointer apply_data;
  char *last_apply_error;

  guint tick_id;
  GPtrArray *sockets;   /* SoupWebsocketConnection* of logged-in pages */
  GQueue history;       /* JsonNode* samples, oldest first */
  guint64 last_in, last_out;
  GHashTable *last_per; /* key → guint64[2] */
  gint64 last_sample_us;
  GHashTable *first_seen; /* stream key → gint64 µs */
  gint64 started_us;
};

G_DEFINE_FINAL_TYPE (GtWebAdmin, gt_web_admin, G_TYPE_OBJECT)

static void
session_free (Session *s)
{
  memset (s->token, 0, strlen (s->token));
  g_free (s->token);
  g_free (s->csrf);
  g_free (s->username);
  g_free (s);
}

static void
login_key_free (LoginKey *k)
{
  memset (k->key, 0, strlen (k->key));
  g_free (k->key);
  g_free (k);
}

/* Responses --------------------------------------------------------------------------------- */

static void
security_headers (SoupServerMessage *msg)
{
  SoupMessageHeaders *h = soup_server_message_get_response_headers (msg);

  soup_message_headers_replace (h, "X-Content-Type-Options", "nosniff");
  soup_message_headers_replace (h, "X-Frame-Options", "DENY");
  soup_message_headers_replace (h, "Referrer-Policy", "no-referrer");
  soup_message_headers_replace (h, "Cache-Control", "no-store");
  soup_message_headers_replace (h, "Content-Security-Policy",
                                "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'");
}

static void
reply_node (SoupServerMessage *msg, guint status, JsonNode *node)
{
  char *text = json_to_string (node, FALSE);

  security_headers (msg);
  soup_server_message_set_status (msg, status, NULL);
  soup_server_message_set_response (msg, "application/json", SOUP_MEMORY_TAKE, text,
                                    strlen (text));
}

static void
reply_error (SoupServerMessage *msg, guint status, const char *message)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonNode) root = NULL;

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "error");
  json_builder_add_string_value (b, message);
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  reply_node (msg, status, root);
}

static void
reply_ok (SoupServerMessage *msg)
{
  g_autoptr (JsonNode) root = json_from_string ("{\"ok\":true}", NULL);

  reply_node (msg, SOUP_STATUS_OK, root);
}

static JsonNode *
variant_to_json (GVariant *v)
{
  return json_gvariant_serialize (v);
}

/* Sessions and login ------------------------------------------------------------------------ */

static const char *
peer_address (SoupServerMessage *msg)
{
  GInetAddress *inet = NULL;
  GSocketAddress *remote = soup_server_message_get_remote_address (msg);
  static char buf[64];
  g_autofree char *text = NULL;

  if (remote != NULL && G_IS_INET_SOCKET_ADDRESS (remote))
    inet = g_inet_socket_address_get_address (G_INET_SOCKET_ADDRESS (remote));
  if (inet == NULL)
    return "?";
  text = g_inet_address_to_string (inet);
  g_strlcpy (buf, text, sizeof buf);
  return buf;
}

static Session *
find_session (GtWebAdmin *admin, SoupServerMessage *msg)
{
  SoupMessageHeaders *h = soup_server_message_get_request_headers (msg);
  const char *header = soup_message_headers_get_list (h, "Cookie");
  g_autoptr (GHashTable) cookies = NULL;
  gint64 now = g_get_monotonic_time ();
  const char *token;
  Session *s;

  if (header == NULL)
    return NULL;
  cookies = soup_header_parse_semi_param_list (header);
  token = g_hash_table_lookup (cookies, COOKIE_NAME);
  if (token == NULL || (s = g_hash_table_lookup (admin->sessions, token)) == NULL)
    return NULL;
  if (now - s->used_us > (gint64) GT_WEB_ADMIN_SESSION_IDLE_S * G_USEC_PER_SEC
      || now - s->created_us > (gint64) SESSION_MAX_AGE_S * G_USEC_PER_SEC)
    {
      g_hash_table_remove (admin->sessions, token);
      return NULL;
    }
  s->used_us = now;
  return s;
}

static Session *
new_session (GtWebAdmin *admin, SoupServerMessage *msg, const char *username)
{
  Session *s = g_new0 (Session, 1);
  g_autofree char *cookie = NULL;

  /* Full: the least recently used session goes. */
  if (g_hash_table_size (admin->sessions) >= GT_WEB_ADMIN_MAX_SESSIONS)
    {
      GHashTableIter iter;
      gpointer key, value;
      Session *oldest = NULL;

      g_hash_table_iter_init (&iter, admin->sessions);
      while (g_hash_table_iter_next (&iter, &key, &value))
        if (oldest == NULL || ((Session *) value)->used_us < oldest->used_us)
          oldest = value;
      g_hash_table_remove (admin->sessions, oldest->token);
    }
  s->token = gt_admin_random_token (32);
  s->csrf = gt_admin_random_token (16);
  s->username = g_strdup (username);
  s->created_us = s->used_us = g_get_monotonic_time ();
  g_hash_table_insert (admin->sessions, s->token, s);
  cookie = g_strdup_printf (COOKIE_NAME "=%s; Path=/; HttpOnly; SameSite=Strict%s; Max-Age=%d",
                            s->token, admin->tls ? "; Secure" : "", SESSION_MAX_AGE_S);
  soup_message_headers_append (soup_server_message_get_response_headers (msg), "Set-Cookie",
                               cookie);
  return s;
}

/* Ends every session but keep (NULL: all) and closes their live sockets. */
static void
end_sessions (GtWebAdmin *admin, Session *keep)
{
  GHashTableIter iter;
  gpointer key, value;

  g_hash_table_iter_init (&iter, admin->sessions);
  while (g_hash_table_iter_next (&iter, &key, &value))
    if (value != keep)
      g_hash_table_iter_remove (&iter);
  for (guint i = admin->sockets->len; i > 0; i--)
    {
      SoupWebsocketConnection *ws = admin->sockets->pdata[i - 1];
      const char *token = g_object_get_data (G_OBJECT (ws), "gt-session");

      if (keep == NULL || token == NULL || strcmp (token, keep->token) != 0)
        soup_websocket_connection_close (ws, SOUP_WEBSOCKET_CLOSE_POLICY_VIOLATION,
                                         "session ended");
    }
}

static LoginRecord *
login_record (GtWebAdmin *admin, const char *address)
{
  LoginRecord *r = g_hash_table_lookup (admin->logins, address);
  gint64 now = g_get_monotonic_time ();

  if (r == NULL)
    {
      /* Bounded: forget every record rather than grow without end. */
      if (g_hash_table_size (admin->logins) >= 4096)
        g_hash_table_remove_all (admin->logins);
      r = g_new0 (LoginRecord, 1);
      r->window_start_us = now;
      g_hash_table_insert (admin->logins, g_strdup (address), r);
    }
  if (now - r->window_start_us > (gint64) GT_WEB_ADMIN_LOGIN_WINDOW_S * G_USEC_PER_SEC)
    {
      r->failures = 0;
      r->window_start_us = now;
    }
  return r;
}

static gboolean
use_login_key (GtWebAdmin *admin, const char *key)
{
  gint64 now = g_get_monotonic_time ();
  gboolean ok = FALSE;

  for (guint i = admin->keys->len; i > 0; i--)
    {
      LoginKey *k = admin->keys->pdata[i - 1];

      if (k->expires_us < now || k->uses_left == 0)
        g_ptr_array_remove_index (admin->keys, i - 1);
      else if (!ok && gt_admin_secure_equal (key, k->key))
        {
          ok = TRUE;
          if (--k->uses_left == 0)
            g_ptr_array_remove_index (admin->keys, i - 1);
        }
    }
  return ok;
}

static const char *
member_string (JsonObject *o, const char *name)
{
  JsonNode *n = json_object_get_member (o, name);

  if (n == NULL || !JSON_NODE_HOLDS_VALUE (n) || json_node_get_value_type (n) != G_TYPE_STRING)
    return NULL;
  return json_node_get_string (n);
}

static JsonNode *
session_json (Session *s, gboolean setup)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "username");
  json_builder_add_string_value (b, s->username);
  json_builder_set_member_name (b, "csrfToken");
  json_builder_add_string_value (b, s->csrf);
  json_builder_set_member_name (b, "needsPassword");
  json_builder_add_boolean_value (b, setup);
  json_builder_end_object (b);
  return json_builder_get_root (b);
}

static void
handle_login (GtWebAdmin *admin, SoupServerMessage *msg, JsonObject *body)
{
  const char *address = peer_address (msg);
  LoginRecord *r = login_record (admin, address);
  const char *key = member_string (body, "key");
  const char *user = member_string (body, "username");
  const char *password = member_string (body, "password");
  gboolean ok = FALSE;
  Session *s;
  g_autoptr (JsonNode) reply = NULL;

  if (r->failures >= GT_WEB_ADMIN_LOGIN_FAILURES)
    {
      g_autofree char *retry = g_strdup_printf ("%d", GT_WEB_ADMIN_LOGIN_WINDOW_S);

      soup_message_headers_replace (soup_server_message_get_response_headers (msg),
                                    "Retry-After", retry);
      reply_error (msg, 429, "too many failed logins: wait a minute");
      return;
    }
  if (key != NULL)
    ok = use_login_key (admin, key);
  else if (user != NULL && password != NULL && admin->admin_user != NULL
           && admin->password_hash != NULL)
    {
      /* Both checks always run: the time does not tell which one failed. */
      gboolean user_ok = gt_admin_secure_equal (user, admin->admin_user);
      gboolean password_ok = gt_admin_password_verify (password, admin->password_hash);

      ok = user_ok && password_ok;
    }
  if (!ok)
    {
      r->failures++;
      g_message ("admin UI: failed login from %s", address);
      reply_error (msg, SOUP_STATUS_UNAUTHORIZED, "wrong user name, password or link");
      return;
    }
  r->failures = 0;
  s = new_session (admin, msg, key != NULL ? (admin->admin_user ? admin->admin_user : "admin")
                                           : user);
  g_message ("admin UI: login from %s", address);
  reply = session_json (s, admin->password_hash == NULL);
  reply_node (msg, SOUP_STATUS_OK, reply);
}

/* The configuration document --------------------------------------------------------------- */

static JsonNode *
read_config_doc (GtWebAdmin *admin, gboolean *exists, GError **error)
{
  g_autofree char *data = NULL;
  gsize len = 0;
  g_autoptr (GError) local = NULL;

  *exists = FALSE;
  if (!g_file_get_contents (admin->config_path, &data, &len, &local))
    {
      if (g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        return json_from_string (admin->kind == GT_CONFIG_KIND_SERVER
                                   ? "{\"type\":\"server\",\"options\":{}}"
                                   : "{\"type\":\"client\",\"options\":{},\"services\":[]}",
                                 NULL);
      g_propagate_error (error, g_steal_pointer (&local));
      return NULL;
    }
  *exists = TRUE;
  return gt_admin_config_from_yaml (data, len, error);
}

static void
add_field_errors (JsonBuilder *b, const char *name, GPtrArray *errors)
{
  json_builder_set_member_name (b, name);
  json_builder_begin_array (b);
  for (guint i = 0; errors != NULL && i < errors->len; i++)
    {
      GtAdminFieldError *e = errors->pdata[i];

      json_builder_begin_object (b);
      json_builder_set_member_name (b, "field");
      json_builder_add_string_value (b, e->field);
      json_builder_set_member_name (b, "message");
      json_builder_add_string_value (b, e->message);
      json_builder_set_member_name (b, "line");
      json_builder_add_int_value (b, e->line);
      json_builder_set_member_name (b, "column");
      json_builder_add_int_value (b, e->column);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
}

/* Writes text to path atomically (0600), keeping the previous file as path.bak. */
static gboolean
write_config (const char *path, const char *text, GError **error)
{
  g_autofree char *backup = g_strconcat (path, ".bak", NULL);
  g_autofree char *old = NULL;
  gsize old_len;

  if (g_file_get_contents (path, &old, &old_len, NULL)
      && !g_file_set_contents_full (backup, old, old_len, G_FILE_SET_CONTENTS_CONSISTENT, 0600,
                                    error))
    return FALSE;
  return g_file_set_contents_full (path, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, error);
}

static void
take_credentials (GtWebAdmin *admin, JsonNode *doc)
{
  JsonNode *options = json_object_get_member (json_node_get_object (doc), "options");
  const char *user = NULL, *password = NULL;

  if (options != NULL && JSON_NODE_HOLDS_OBJECT (options))
    {
      user = member_string (json_node_get_object (options), "admin");
      password = member_string (json_node_get_object (options), "password");
    }
  g_free (admin->admin_user);
  admin->admin_user = g_strdup (user != NULL && *user ? user : "admin");
  if (admin->password_hash != NULL)
    memset (admin->password_hash, 0, strlen (admin->password_hash));
  g_free (admin->password_hash);
  admin->password_hash = password != NULL && *password ? g_strdup (password) : NULL;
}

static gboolean
apply_config (GtWebAdmin *admin, GError **error)
{
  g_clear_pointer (&admin->last_apply_error, g_free);
  if (admin->apply_func == NULL)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                           "this process cannot apply a configuration");
      return FALSE;
    }
  if (!admin->apply_func (admin->config_path, admin->apply_data, error))
    {
      admin->last_apply_error = g_strdup ((*error)->message);
      return FALSE;
    }
  return TRUE;
}

/* Checks doc (secrets merged from the file) and, when save, writes it and maybe applies it.
 * Answers the request. */
static void
check_save_apply (GtWebAdmin *admin, SoupServerMessage *msg, JsonNode *doc, gboolean save,
                  gboolean apply)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) old = NULL;
  g_autoptr (GPtrArray) lines = NULL;
  g_autoptr (GPtrArray) errors = NULL;
  g_autoptr (GPtrArray) warnings = NULL;
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonNode) reply = NULL;
  g_autofree char *yaml = NULL;
  gboolean exists, ok;
  gboolean applied = FALSE;

  old = read_config_doc (admin, &exists, NULL);
  if (!gt_admin_config_merge_secrets (doc, old, &error)
      || (yaml = gt_admin_config_to_yaml (doc, &lines, &error)) == NULL)
    {
      reply_error (msg, SOUP_STATUS_BAD_REQUEST, error->message);
      return;
    }
  ok = gt_admin_config_check (admin->kind, yaml, admin->config_path, lines, &errors, &warnings);
  if (ok && save)
    {
      if (!write_config (admin->config_path, yaml, &error))
        {
          reply_error (msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, error->message);
          return;
        }
      g_autofree char *hash_before = g_strdup (admin->password_hash);

      g_message ("admin UI: configuration saved to %s", admin->config_path);
      take_credentials (admin, doc);
      if (g_strcmp0 (hash_before, admin->password_hash) != 0)
        {
          end_sessions (admin, admin->current);
          g_message ("admin UI: admin password changed; other sessions ended");
        }
      if (hash_before != NULL)
        memset (hash_before, 0, strlen (hash_before));
      if (apply)
        {
          applied = apply_config (admin, &error);
          if (!applied)
            g_warning ("admin UI: applying %s failed: %s", admin->config_path, error->message);
        }
    }
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "ok");
  json_builder_add_boolean_value (b, ok && error == NULL);
  json_builder_set_member_name (b, "saved");
  json_builder_add_boolean_value (b, ok && save);
  json_builder_set_member_name (b, "applied");
  json_builder_add_boolean_value (b, applied);
  if (error != NULL)
    {
      json_builder_set_member_name (b, "applyError");
      json_builder_add_string_value (b, error->message);
    }
  add_field_errors (b, "errors", errors);
  add_field_errors (b, "warnings", warnings);
  json_builder_end_object (b);
  reply = json_builder_get_root (b);
  reply_node (msg, ok ? SOUP_STATUS_OK : SOUP_STATUS_UNPROCESSABLE_ENTITY, reply);
}

static JsonObject *
ensure_object (JsonObject *parent, const char *name)
{
  JsonNode *n = json_object_get_member (parent, name);

  if (n == NULL || !JSON_NODE_HOLDS_OBJECT (n))
    {
      json_object_set_object_member (parent, name, json_object_new ());
      n = json_object_get_member (parent, name);
    }
  return json_node_get_object (n);
}

static JsonArray *
ensure_array (JsonObject *parent, const char *name)
{
  JsonNode *n = json_object_get_member (parent, name);

  if (n == NULL || !JSON_NODE_HOLDS_ARRAY (n))
    {
      json_object_set_array_member (parent, name, json_array_new ());
      n = json_object_get_member (parent, name);
    }
  return json_node_get_array (n);
}

static JsonNode *
keys_json (GtConfigKind kind, const char *section)
{
  g_autoptr (GVariant) v = gt_config_list_keys (kind, section);
  g_autoptr (JsonBuilder) b = json_builder_new ();
  GVariantIter iter;
  const char *name, *type, *help;

  json_builder_begin_array (b);
  g_variant_iter_init (&iter, v);
  while (g_variant_iter_next (&iter, "(&s&s&s)", &name, &type, &help))
    {
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "name");
      json_builder_add_string_value (b, name);
      json_builder_set_member_name (b, "type");
      json_builder_add_string_value (b, type);
      json_builder_set_member_name (b, "help");
      json_builder_add_string_value (b, help);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
  return json_builder_get_root (b);
}

static void
handle_config_get (GtWebAdmin *admin, SoupServerMessage *msg)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) doc = NULL;
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonNode) reply = NULL;
  gboolean exists;

  doc = read_config_doc (admin, &exists, &error);
  if (doc == NULL)
    {
      reply_error (msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, error->message);
      return;
    }
  gt_admin_config_blank_secrets (doc);
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "kind");
  json_builder_add_string_value (b, admin->kind == GT_CONFIG_KIND_SERVER ? "server" : "client");
  json_builder_set_member_name (b, "path");
  json_builder_add_string_value (b, admin->config_path);
  json_builder_set_member_name (b, "exists");
  json_builder_add_boolean_value (b, exists);
  json_builder_set_member_name (b, "config");
  json_builder_add_value (b, g_steal_pointer (&doc));
  json_builder_set_member_name (b, "schema");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "options");
  json_builder_add_value (b, keys_json (admin->kind, "options"));
  json_builder_set_member_name (b, admin->kind == GT_CONFIG_KIND_SERVER ? "users" : "services");
  json_builder_add_value (b, keys_json (admin->kind, admin->kind == GT_CONFIG_KIND_SERVER
                                                       ? "users"
                                                       : "services"));
  json_builder_end_object (b);
  json_builder_end_object (b);
  reply = json_builder_get_root (b);
  reply_node (msg, SOUP_STATUS_OK, reply);
}

/* POST /api/config/{validate,save}: {"config": DOC, "apply": bool} */
static void
handle_config_post (GtWebAdmin *admin, SoupServerMessage *msg, JsonObject *body, gboolean save)
{
  JsonNode *doc = json_object_get_member (body, "config");
  JsonNode *apply = json_object_get_member (body, "apply");
  g_autoptr (JsonNode) copy = NULL;

  if (doc == NULL || !JSON_NODE_HOLDS_OBJECT (doc))
    {
      reply_error (msg, SOUP_STATUS_BAD_REQUEST, "the body needs a \"config\" object");
      return;
    }
  copy = json_node_copy (doc);
  check_save_apply (admin, msg, copy, save,
                    apply == NULL || !JSON_NODE_HOLDS_VALUE (apply)
                      || json_node_get_boolean (apply));
}

/* Users (server) and services (client): edits of the file's document, then save and apply. */
static void
handle_users (GtWebAdmin *admin, SoupServerMessage *msg, const char *method, const char *id,
              const char *action, JsonObject *body)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) doc = NULL;
  JsonObject *users;
  gboolean exists;

  if (admin->kind != GT_CONFIG_KIND_SERVER)
    {
      reply_error (msg, SOUP_STATUS_NOT_FOUND, "users are a server's");
      return;
    }
  if (id != NULL && action != NULL && strcmp (action, "disconnect") == 0
      && method == SOUP_METHOD_POST)
    {
      if (admin->server == NULL || !gt_server_disconnect_client (admin->server, id))
        reply_error (msg, SOUP_STATUS_NOT_FOUND, "this client is not connected");
      else
        reply_ok (msg);
      return;
    }
  if (action != NULL)
    {
      reply_error (msg, SOUP_STATUS_NOT_FOUND, "not found");
      return;
    }
  doc = read_config_doc (admin, &exists, &error);
  if (doc == NULL)
    {
      reply_error (msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, error->message);
      return;
    }
  users = ensure_object (json_node_get_object (doc), "users");
  if (method == SOUP_METHOD_GET && id == NULL)
    {
      g_autoptr (JsonNode) reply = json_node_new (JSON_NODE_OBJECT);
      g_autoptr (GVariant) state = admin->server ? gt_server_get_state (admin->server) : NULL;
      JsonObject *out = json_object_new ();

      gt_admin_config_blank_secrets (doc);
      json_object_set_object_member (out, "users", json_object_ref (users));
      json_object_set_member (out, "schema", keys_json (admin->kind, "users"));
      if (state != NULL)
        json_object_set_member (out, "state", variant_to_json (state));
      json_node_take_object (reply, out);
      reply_node (msg, SOUP_STATUS_OK, reply);
      return;
    }
  if ((method == SOUP_METHOD_POST && id == NULL) || (method == SOUP_METHOD_PUT && id != NULL))
    {
      const char *new_id = id != NULL ? id : member_string (body, "id");
      JsonNode *user = json_object_get_member (body, "user");

      if (new_id == NULL || *new_id == '\0' || user == NULL || !JSON_NODE_HOLDS_OBJECT (user))
        {
          reply_error (msg, SOUP_STATUS_BAD_REQUEST, "give \"id\" and a \"user\" object");
          return;
        }
      if (method == SOUP_METHOD_POST && json_object_has_member (users, new_id))
        {
          reply_error (msg, SOUP_STATUS_CONFLICT, "this user exists already");
          return;
        }
      if (method == SOUP_METHOD_PUT && !json_object_has_member (users, new_id))
        {
          reply_error (msg, SOUP_STATUS_NOT_FOUND, "no such user");
          return;
        }
      json_object_set_member (users, new_id, json_node_copy (user));
    }
  else if (method == SOUP_METHOD_DELETE && id != NULL)
    {
      if (!json_object_has_member (users, id))
        {
          reply_error (msg, SOUP_STATUS_NOT_FOUND, "no such user");
          return;
        }
      json_object_remove_member (users, id);
    }
  else
    {
      reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method not allowed");
      return;
    }
  check_save_apply (admin, msg, doc, TRUE, TRUE);
}

static void
handle_services (GtWebAdmin *admin, SoupServerMessage *msg, const char *method,
                 const char *index_text, JsonObject *body)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) doc = NULL;
  JsonArray *services;
  gboolean exists;
  guint64 index = 0;

  if (admin->kind != GT_CONFIG_KIND_CLIENT)
    {
      reply_error (msg, SOUP_STATUS_NOT_FOUND, "services are a client's");
      return;
    }
  doc = read_config_doc (admin, &exists, &error);
  if (doc == NULL)
    {
      reply_error (msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, error->message);
      return;
    }
  services = ensure_array (json_node_get_object (doc), "services");
  if (index_text != NULL
      && (!g_ascii_string_to_unsigned (index_text, 10, 0, G_MAXUINT16, &index, NULL)
          || index >= json_array_get_length (services)))
    {
      reply_error (msg, SOUP_STATUS_NOT_FOUND, "no such service");
      return;
    }
  if (method == SOUP_METHOD_GET && index_text == NULL)
    {
      g_autoptr (JsonNode) reply = json_node_new (JSON_NODE_OBJECT);
      g_autoptr (GVariant) state = admin->client ? gt_client_get_state (admin->client) : NULL;
      JsonObject *out = json_object_new ();

      json_object_set_array_member (out, "services", json_array_ref (services));
      json_object_set_member (out, "schema", keys_json (admin->kind, "services"));
      if (state != NULL)
        json_object_set_member (out, "state", variant_to_json (state));
      json_node_take_object (reply, out);
      reply_node (msg, SOUP_STATUS_OK, reply);
      return;
    }
  if ((method == SOUP_METHOD_POST && index_text == NULL)
      || (method == SOUP_METHOD_PUT && index_text != NULL))
    {
      JsonNode *service = json_object_get_member (body, "service");

      if (service == NULL || !JSON_NODE_HOLDS_OBJECT (service))
        {
          reply_error (msg, SOUP_STATUS_BAD_REQUEST, "give a \"service\" object");
          return;
        }
      if (index_text == NULL)
        json_array_add_element (services, json_node_copy (service));
      else
        {
          /* JsonArray has no replace: rebuild it. */
          JsonArray *rebuilt = json_array_new ();

          for (guint i = 0; i < json_array_get_length (services); i++)
            json_array_add_element (rebuilt, i == index
                                               ? json_node_copy (service)
                                               : json_node_copy (
                                                   json_array_get_element (services, i)));
          json_object_set_array_member (json_node_get_object (doc), "services", rebuilt);
        }
    }
  else if (method == SOUP_METHOD_DELETE && index_text != NULL)
    json_array_remove_element (services, index);
  else
    {
      reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method not allowed");
      return;
    }
  check_save_apply (admin, msg, doc, TRUE, TRUE);
}

/* POST /api/password {"username"?, "password"}: stored hashed in the file; other sessions end. */
static void
handle_password (GtWebAdmin *admin, SoupServerMessage *msg, Session *session, JsonObject *body)
{
  const char *user = member_string (body, "username");
  const char *password = member_string (body, "password");
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) doc = NULL;
  g_autofree char *hash = NULL;
  g_autofree char *yaml = NULL;
  g_autoptr (GPtrArray) lines = NULL;
  g_autoptr (GPtrArray) errors = NULL;
  JsonObject *options;
  gboolean exists;

  if (password == NULL || strlen (password) < 8 || strlen (password) > 256)
    {
      reply_error (msg, SOUP_STATUS_BAD_REQUEST, "the password must be 8 to 256 bytes");
      return;
    }
  doc = read_config_doc (admin, &exists, &error);
  if (doc == NULL || !exists)
    {
      reply_error (msg, SOUP_STATUS_CONFLICT,
                   doc == NULL ? error->message : "save a configuration first");
      return;
    }
  options = ensure_object (json_node_get_object (doc), "options");
  hash = gt_admin_password_hash (password, &error);
  if (hash == NULL)
    {
      reply_error (msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, error->message);
      return;
    }
  if (user != NULL && *user != '\0')
    json_object_set_string_member (options, "admin", user);
  json_object_set_string_member (options, "password", hash);
  yaml = gt_admin_config_to_yaml (doc, &lines, &error);
  if (yaml == NULL || !gt_admin_config_check (admin->kind, yaml, admin->config_path, lines,
                                              &errors, NULL))
    {
      reply_error (msg, SOUP_STATUS_UNPROCESSABLE_ENTITY,
                   yaml == NULL           ? error->message
                   : errors->len > 0      ? ((GtAdminFieldError *) errors->pdata[0])->message
                                          : "invalid configuration");
      return;
    }
  if (!write_config (admin->config_path, yaml, &error))
    {
      reply_error (msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, error->message);
      return;
    }
  take_credentials (admin, doc);
  g_free (session->username);
  session->username = g_strdup (admin->admin_user);
  end_sessions (admin, session);
  g_message ("admin UI: admin password changed; other sessions ended");
  reply_ok (msg);
}

/* State, traffic, logs ---------------------------------------------------------------------- */

static GVariant *
relay_state (GtWebAdmin *admin)
{
  if (admin->server != NULL)
    return gt_server_get_state (admin->server);
  if (admin->client != NULL)
    return gt_client_get_state (admin->client);
  return NULL;
}

/* Adds ageMs to each stream (first seen by the admin; streams are sampled every second). */
static void
add_ages (GtWebAdmin *admin, JsonNode *state, GHashTable *seen_now)
{
  JsonObject *root = json_node_get_object (state);
  gint64 now = g_get_monotonic_time ();
  g_autoptr (GPtrArray) lists = g_ptr_array_new ();

  if (json_object_has_member (root, "clients"))
    {
      JsonArray *clients = json_object_get_array_member (root, "clients");

      for (guint i = 0; i < json_array_get_length (clients); i++)
        g_ptr_array_add (lists, json_array_get_object_element (clients, i));
    }
  else
    g_ptr_array_add (lists, root);
  for (guint i = 0; i < lists->len; i++)
    {
      JsonObject *owner = lists->pdata[i];
      const char *member = json_object_has_member (owner, "streamList") ? "streamList"
                                                                         : "streams";
      JsonNode *node = json_object_get_member (owner, member);
      const char *who = json_object_get_string_member_with_default (owner, "id", "");
      JsonArray *streams;

      if (node == NULL || !JSON_NODE_HOLDS_ARRAY (node))
        continue;
      streams = json_node_get_array (node);
      for (guint j = 0; j < json_array_get_length (streams); j++)
        {
          JsonObject *s = json_array_get_object_element (streams, j);
          g_autofree char *key = g_strdup_printf (
              "%s\x1f%" G_GINT64_FORMAT "\x1f%" G_GINT64_FORMAT, who,
              json_object_get_int_member_with_default (s, "tunnel", 0),
              json_object_get_int_member_with_default (s, "id", 0));
          gint64 *first = g_hash_table_lookup (admin->first_seen, key);
          gint64 since;

          since = first != NULL ? *first : now;
          if (seen_now != NULL)
            {
              gint64 *v = g_new (gint64, 1);

              *v = since;
              g_hash_table_insert (seen_now, g_strdup (key), v);
            }
          json_object_set_int_member (s, "ageMs", (now - since) / 1000);
        }
    }
}

static JsonNode *
status_json (GtWebAdmin *admin)
{
  g_autoptr (GVariant) state = relay_state (admin);
  JsonObject *o = json_object_new ();
  JsonNode *node = json_node_new (JSON_NODE_OBJECT);

  json_object_set_string_member (o, "version", PACKAGE_VERSION);
  json_object_set_string_member (o, "kind",
                                 admin->kind == GT_CONFIG_KIND_SERVER ? "server" : "client");
  json_object_set_string_member (o, "configPath", admin->config_path);
  json_object_set_boolean_member (o, "configExists",
                                  g_file_test (admin->config_path, G_FILE_TEST_EXISTS));
  json_object_set_boolean_member (o, "running", state != NULL);
  json_object_set_int_member (o, "processUptimeMs",
                              (g_get_monotonic_time () - admin->started_us) / 1000);
  if (admin->last_apply_error != NULL)
    json_object_set_string_member (o, "applyError", admin->last_apply_error);
  if (state != NULL)
    {
      JsonNode *s = variant_to_json (state);

      add_ages (admin, s, NULL);
      json_object_set_member (o, "state", s);
    }
  json_node_take_object (node, o);
  return node;
}

static void
history_clear (GtWebAdmin *admin)
{
  g_queue_clear_full (&admin->history, (GDestroyNotify) json_node_unref);
}

/* Once a second: a traffic sample (bytes/s in and out, per client or per tunnel), stream ages,
 * and the state pushed to every live page. */
static gboolean
tick_cb (gpointer user_data)
{
  GtWebAdmin *admin = user_data;
  g_autoptr (GVariant) state = relay_state (admin);
  g_autoptr (JsonNode) state_json = NULL;
  g_autoptr (GHashTable) seen_now = NULL;
  g_autoptr (GHashTable) per_now = NULL;
  JsonObject *sample, *per;
  JsonNode *sample_node;
  gint64 now = g_get_monotonic_time ();
  double secs = admin->last_sample_us > 0 ? (now - admin->last_sample_us) / 1e6 : 1.0;
  guint64 in = 0, out = 0;

  if (state != NULL)
    {
      JsonObject *root;

      state_json = variant_to_json (state);
      seen_now = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
      add_ages (admin, state_json, seen_now);
      g_hash_table_unref (admin->first_seen);
      admin->first_seen = g_steal_pointer (&seen_now);
      root = json_node_get_object (state_json);
      in = json_object_get_int_member_with_default (root, "bytesIn", 0);
      out = json_object_get_int_member_with_default (root, "bytesOut", 0);
    }

  sample = json_object_new ();
  per = json_object_new ();
  per_now = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  json_object_set_int_member (sample, "t", g_get_real_time () / 1000);
  json_object_set_int_member (sample, "in",
                              (gint64) ((in >= admin->last_in ? in - admin->last_in : 0) / secs));
  json_object_set_int_member (
      sample, "out", (gint64) ((out >= admin->last_out ? out - admin->last_out : 0) / secs));
  if (state_json != NULL)
    {
      JsonObject *root = json_node_get_object (state_json);
      JsonArray *items = json_object_has_member (root, "clients")
                           ? json_object_get_array_member (root, "clients")
                           : json_object_get_array_member (root, "tunnelList");

      for (guint i = 0; items != NULL && i < json_array_get_length (items); i++)
        {
          JsonObject *it = json_array_get_object_element (items, i);
          g_autofree char *key = json_object_has_member (it, "id")
                                   ? g_strdup (json_object_get_string_member (it, "id"))
                                   : g_strdup_printf ("tunnel %" G_GINT64_FORMAT,
                                                      json_object_get_int_member (it, "index"));
          guint64 *v = g_new (guint64, 2);
          guint64 *last = g_hash_table_lookup (admin->last_per, key);
          JsonArray *pair = json_array_new ();

          v[0] = json_object_get_int_member_with_default (it, "bytesIn", 0);
          v[1] = json_object_get_int_member_with_default (it, "bytesOut", 0);
          for (guint d = 0; d < 2; d++)
            json_array_add_int_element (
                pair, last && v[d] >= last[d] ? (gint64) ((v[d] - last[d]) / secs) : 0);
          json_object_set_array_member (per, key, pair);
          g_hash_table_insert (per_now, g_steal_pointer (&key), v);
        }
    }
  json_object_set_object_member (sample, "per", per);
  g_hash_table_unref (admin->last_per);
  admin->last_per = g_steal_pointer (&per_now);
  admin->last_in = in;
  admin->last_out = out;
  admin->last_sample_us = now;
  sample_node = json_node_init_object (json_node_alloc (), sample);
  json_object_unref (sample);
  g_queue_push_tail (&admin->history, sample_node);
  while (g_queue_get_length (&admin->history) > GT_WEB_ADMIN_HISTORY)
    json_node_unref (g_queue_pop_head (&admin->history));

  if (admin->sockets->len > 0)
    {
      g_autoptr (JsonNode) msg = json_node_new (JSON_NODE_OBJECT);
      JsonObject *o = json_object_new ();
      g_autofree char *text = NULL;

      json_object_set_string_member (o, "type", "state");
      json_object_set_boolean_member (o, "running", state_json != NULL);
      if (state_json != NULL)
        json_object_set_member (o, "state", json_node_ref (state_json));
      json_object_set_member (o, "sample", json_node_ref (sample_node));
      json_node_take_object (msg, o);
      text = json_to_string (msg, FALSE);
      for (guint i = 0; i < admin->sockets->len; i++)
        {
          SoupWebsocketConnection *ws = admin->sockets->pdata[i];

          if (soup_websocket_connection_get_state (ws) == SOUP_WEBSOCKET_STATE_OPEN)
            soup_websocket_connection_send_text (ws, text);
        }
    }
  return G_SOURCE_CONTINUE;
}

static void
handle_traffic (GtWebAdmin *admin, SoupServerMessage *msg)
{
  g_autoptr (JsonNode) reply = json_node_new (JSON_NODE_OBJECT);
  JsonObject *o = json_object_new ();
  JsonArray *samples = json_array_new ();

  for (GList *l = admin->history.head; l != NULL; l = l->next)
    json_array_add_element (samples, json_node_ref (l->data));
  json_object_set_array_member (o, "samples", samples);
  json_object_set_int_member (o, "intervalMs", 1000);
  json_node_take_object (reply, o);
  reply_node (msg, SOUP_STATUS_OK, reply);
}

static void
handle_logs (GtWebAdmin *admin, SoupServerMessage *msg, GHashTable *query)
{
  const char *after_text = query ? g_hash_table_lookup (query, "after") : NULL;
  guint64 after = 0, last = 0;
  g_autoptr (GPtrArray) lines = NULL;
  g_autoptr (JsonNode) reply = json_node_new (JSON_NODE_OBJECT);
  JsonObject *o = json_object_new ();
  JsonArray *array = json_array_new ();

  if (after_text != NULL)
    g_ascii_string_to_unsigned (after_text, 10, 0, G_MAXUINT64, &after, NULL);
  lines = gt_log_get_recent (after, MAX_LOG_LINES, &last);
  for (guint i = 0; i < lines->len; i++)
    json_array_add_string_element (array, lines->pdata[i]);
  json_object_set_array_member (o, "lines", array);
  json_object_set_int_member (o, "last", (gint64) last);
  json_node_take_object (reply, o);
  reply_node (msg, SOUP_STATUS_OK, reply);
}

/* Routing ----------------------------------------------------------------------------------- */

/* A UI bound to loopback answers only requests addressed to loopback by name or address: a page
 * of another site whose name an attacker points at 127.0.0.1 (DNS rebinding) is refused. */
static gboolean
host_allowed (GtWebAdmin *admin, SoupServerMessage *msg)
{
  const char *host = soup_message_headers_get_one (soup_server_message_get_request_headers (msg),
                                                   "Host");
  g_autofree char *name = NULL;
  g_autoptr (GInetAddress) inet = NULL;
  const char *end;

  if (!admin->loopback_only)
    return TRUE;
  if (host == NULL)
    return FALSE;
  if (host[0] == '[')
    {
      end = strchr (host, ']');
      if (end == NULL)
        return FALSE;
      name = g_strndup (host + 1, end - host - 1);
    }
  else
    {
      end = strrchr (host, ':');
      name = end != NULL ? g_strndup (host, end - host) : g_strdup (host);
    }
  if (g_ascii_strcasecmp (name, "localhost") == 0)
    return TRUE;
  inet = g_inet_address_new_from_string (name);
  return inet != NULL && g_inet_address_get_is_loopback (inet);
}

static gboolean
is_state_changing (const char *method)
{
  return method != SOUP_METHOD_GET && method != SOUP_METHOD_HEAD;
}

static void
api_cb (SoupServer *soup, SoupServerMessage *msg, const char *path, GHashTable *query,
        gpointer user_data)
{
  GtWebAdmin *admin = user_data;
  const char *method = soup_server_message_get_method (msg);
  SoupMessageBody *req_body = soup_server_message_get_request_body (msg);
  g_autoptr (JsonNode) body_node = NULL;
  g_autoptr (GError) error = NULL;
  g_auto (GStrv) parts = NULL;
  JsonObject *body = NULL;
  Session *session;
  guint n;

  if (!host_allowed (admin, msg))
    {
      reply_error (msg, SOUP_STATUS_MISDIRECTED_REQUEST, "this UI answers on loopback only");
      return;
    }
  if (is_state_changing (method))
    {
      g_autoptr (GBytes) bytes = soup_message_body_flatten (req_body);
      gsize len = g_bytes_get_size (bytes);

      if (len == 0)
        body_node = json_from_string ("{}", NULL);
      else
        body_node = gt_admin_parse_json_body (g_bytes_get_data (bytes, NULL), len, &error);
      if (body_node == NULL)
        {
          reply_error (msg, SOUP_STATUS_BAD_REQUEST, error->message);
          return;
        }
      body = json_node_get_object (body_node);
    }

  if (strcmp (path, "/api/login") == 0)
    {
      if (method != SOUP_METHOD_POST)
        reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "use POST");
      else
        handle_login (admin, msg, body);
      return;
    }
  if (strcmp (path, "/api/health") == 0)
    {
      reply_ok (msg);
      return;
    }

  session = find_session (admin, msg);
  if (session == NULL)
    {
      reply_error (msg, SOUP_STATUS_UNAUTHORIZED, "log in first");
      return;
    }
  if (is_state_changing (method))
    {
      const char *csrf = soup_message_headers_get_one (
          soup_server_message_get_request_headers (msg), CSRF_HEADER);

      if (csrf == NULL || !gt_admin_secure_equal (csrf, session->csrf))
        {
          reply_error (msg, SOUP_STATUS_FORBIDDEN, "missing or wrong " CSRF_HEADER " header");
          return;
        }
    }

  admin->current = session;
  parts = g_strsplit (path + strlen ("/api/"), "/", 5);
  n = g_strv_length (parts);
  if (n == 1 && strcmp (parts[0], "session") == 0 && method == SOUP_METHOD_GET)
    {
      g_autoptr (JsonNode) reply = session_json (session, admin->password_hash == NULL);
      reply_node (msg, SOUP_STATUS_OK, reply);
    }
  else if (n == 1 && strcmp (parts[0], "logout") == 0 && method == SOUP_METHOD_POST)
    {
      g_hash_table_remove (admin->sessions, session->token);
      soup_message_headers_append (soup_server_message_get_response_headers (msg), "Set-Cookie",
                                   COOKIE_NAME "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
      reply_ok (msg);
    }
  else if (n == 1 && strcmp (parts[0], "status") == 0 && method == SOUP_METHOD_GET)
    {
      g_autoptr (JsonNode) reply = status_json (admin);
      reply_node (msg, SOUP_STATUS_OK, reply);
    }
  else if (n == 1 && strcmp (parts[0], "connections") == 0 && method == SOUP_METHOD_GET)
    {
      g_autoptr (JsonNode) reply = status_json (admin);
      reply_node (msg, SOUP_STATUS_OK, reply);
    }
  else if (n == 1 && strcmp (parts[0], "config") == 0 && method == SOUP_METHOD_GET)
    handle_config_get (admin, msg);
  else if (n == 2 && strcmp (parts[0], "config") == 0 && method == SOUP_METHOD_POST
           && (strcmp (parts[1], "validate") == 0 || strcmp (parts[1], "save") == 0))
    handle_config_post (admin, msg, body, strcmp (parts[1], "save") == 0);
  else if (n == 2 && strcmp (parts[0], "config") == 0 && method == SOUP_METHOD_POST
           && strcmp (parts[1], "apply") == 0)
    {
      if (!apply_config (admin, &error))
        reply_error (msg, SOUP_STATUS_UNPROCESSABLE_ENTITY, error->message);
      else
        reply_ok (msg);
    }
  else if (n >= 1 && n <= 3 && strcmp (parts[0], "users") == 0)
    handle_users (admin, msg, method, n >= 2 ? parts[1] : NULL, n == 3 ? parts[2] : NULL, body);
  else if (n >= 1 && n <= 2 && strcmp (parts[0], "services") == 0)
    handle_services (admin, msg, method, n == 2 ? parts[1] : NULL, body);
  else if (n == 1 && strcmp (parts[0], "traffic") == 0 && method == SOUP_METHOD_GET)
    handle_traffic (admin, msg);
  else if (n == 1 && strcmp (parts[0], "logs") == 0 && method == SOUP_METHOD_GET)
    handle_logs (admin, msg, query);
  else if (n == 1 && strcmp (parts[0], "password") == 0 && method == SOUP_METHOD_POST)
    handle_password (admin, msg, session, body);
  else
    reply_error (msg, SOUP_STATUS_NOT_FOUND, "not found");
  admin->current = NULL;
}

/* The live socket: only for a session; the early handler refuses others before the upgrade. */
static void
ws_early_cb (SoupServer *soup, SoupServerMessage *msg, const char *path, GHashTable *query,
             gpointer user_data)
{
  GtWebAdmin *admin = user_data;

  if (!host_allowed (admin, msg))
    reply_error (msg, SOUP_STATUS_MISDIRECTED_REQUEST, "this UI answers on loopback only");
  else if (find_session (admin, msg) == NULL)
    reply_error (msg, SOUP_STATUS_UNAUTHORIZED, "log in first");
}

static void
ws_closed_cb (SoupWebsocketConnection *ws, gpointer user_data)
{
  GtWebAdmin *admin = user_data;

  g_signal_handlers_disconnect_by_data (ws, admin);
  g_ptr_array_remove (admin->sockets, ws);
}

static void
ws_cb (SoupServer *soup, SoupServerMessage *msg, const char *path,
       SoupWebsocketConnection *ws, gpointer user_data)
{
  GtWebAdmin *admin = user_data;
  Session *session = find_session (admin, msg);

  if (session == NULL)
    {
      soup_websocket_connection_close (ws, SOUP_WEBSOCKET_CLOSE_POLICY_VIOLATION, "log in first");
      return;
    }
  g_object_set_data_full (G_OBJECT (ws), "gt-session", g_strdup (session->token), g_free);
  g_ptr_array_add (admin->sockets, g_object_ref (ws));
  g_signal_connect (ws, "closed", G_CALLBACK (ws_closed_cb), admin);
}

static const char *
content_type (const char *path)
{
  if (g_str_has_suffix (path, ".html"))
    return "text/html; charset=utf-8";
  if (g_str_has_suffix (path, ".js"))
    return "text/javascript; charset=utf-8";
  if (g_str_has_suffix (path, ".css"))
    return "text/css; charset=utf-8";
  if (g_str_has_suffix (path, ".svg"))
    return "image/svg+xml";
  return "application/octet-stream";
}

static void
page_cb (SoupServer *soup, SoupServerMessage *msg, const char *path, GHashTable *query,
         gpointer user_data)
{
  const char *method = soup_server_message_get_method (msg);
  g_autofree char *resource = NULL;
  g_autoptr (GBytes) bytes = NULL;

  if (method != SOUP_METHOD_GET && method != SOUP_METHOD_HEAD)
    {
      reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method not allowed");
      return;
    }
  if (strcmp (path, "/") == 0 || strchr (path + 1, '/') != NULL || strstr (path, "..") != NULL)
    path = "/index.html";
  resource = g_strconcat (RESOURCE_ROOT, path, NULL);
  bytes = g_resources_lookup_data (resource, G_RESOURCE_LOOKUP_FLAGS_NONE, NULL);
  if (bytes == NULL)
    {
      reply_error (msg, SOUP_STATUS_NOT_FOUND, "not found");
      return;
    }
  security_headers (msg);
  soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
  soup_server_message_set_response (msg, content_type (path), SOUP_MEMORY_COPY,
                                    g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes));
}

/* Object ------------------------------------------------------------------------------------ */

GtWebAdmin *
gt_web_admin_new (GtConfigKind kind, const char *config_path, const char *addr,
                  const GtWebConfig *web, GError **error)
{
  g_autoptr (GtWebAdmin) admin = NULL;
  SoupServer *soup;

  g_return_val_if_fail (kind == GT_CONFIG_KIND_SERVER || kind == GT_CONFIG_KIND_CLIENT, NULL);
  g_return_val_if_fail (config_path != NULL && addr != NULL, NULL);

  /* Referencing the resource keeps it linked in from the static library (and registered). */
  g_assert (gt_web_get_resource () != NULL);
  admin = g_object_new (GT_TYPE_WEB_ADMIN, NULL);
  admin->kind = kind;
  admin->config_path = g_strdup (config_path);
  admin->http = gt_api_server_new_for_web (addr, web ? web->cert_file : NULL,
                                           web ? web->key_file : NULL, error);
  if (admin->http == NULL)
    return NULL;
  admin->tls = gt_api_server_is_tls (admin->http);
  admin->loopback_only = gt_listen_addr_is_loopback (gt_api_server_get_address (admin->http));
  gt_web_admin_set_credentials (admin, web);
  soup = gt_api_server_get_soup_server (admin->http);
  soup_server_add_handler (soup, "/api", api_cb, admin, NULL);
  soup_server_add_early_handler (soup, "/api/ws", ws_early_cb, admin, NULL);
  soup_server_add_websocket_handler (soup, "/api/ws", NULL, NULL, ws_cb, admin, NULL);
  soup_server_add_handler (soup, NULL, page_cb, admin, NULL);
  admin->tick_id = g_timeout_add_seconds (1, tick_cb, admin);
  g_message ("admin UI on %s://%s", admin->tls ? "https" : "http",
             gt_api_server_get_address (admin->http));
  return g_steal_pointer (&admin);
}

const char *
gt_web_admin_get_address (GtWebAdmin *admin)
{
  g_return_val_if_fail (GT_IS_WEB_ADMIN (admin), NULL);
  return gt_api_server_get_address (admin->http);
}

char *
gt_web_admin_make_login_link (GtWebAdmin *admin)
{
  LoginKey *k;
  const char *address;
  g_autofree char *host = NULL;

  g_return_val_if_fail (GT_IS_WEB_ADMIN (admin), NULL);
  k = g_new0 (LoginKey, 1);
  k->key = gt_admin_random_token (16);
  k->expires_us = g_get_monotonic_time () + (gint64) GT_WEB_ADMIN_KEY_TTL_S * G_USEC_PER_SEC;
  k->uses_left = GT_WEB_ADMIN_KEY_USES;
  g_ptr_array_add (admin->keys, k);
  address = gt_api_server_get_address (admin->http);
  /* A wildcard address is where the UI listens, not where a browser goes. */
  if (g_str_has_prefix (address, "0.0.0.0:"))
    host = g_strconcat ("127.0.0.1", address + strlen ("0.0.0.0"), NULL);
  else if (g_str_has_prefix (address, "[::]:"))
    host = g_strconcat ("[::1]", address + strlen ("[::]"), NULL);
  else
    host = g_strdup (address);
  return g_strdup_printf ("%s://%s/#key=%s", admin->tls ? "https" : "http", host, k->key);
}

static void
relay_changed (GtWebAdmin *admin)
{
  history_clear (admin);
  admin->last_in = admin->last_out = 0;
  admin->last_sample_us = 0;
  g_hash_table_remove_all (admin->last_per);
}

void
gt_web_admin_set_server (GtWebAdmin *admin, GtServer *server)
{
  g_return_if_fail (GT_IS_WEB_ADMIN (admin));
  admin->server = server;
  relay_changed (admin);
}

void
gt_web_admin_set_client (GtWebAdmin *admin, GtClient *client)
{
  g_return_if_fail (GT_IS_WEB_ADMIN (admin));
  admin->client = client;
  relay_changed (admin);
}

void
gt_web_admin_set_apply_func (GtWebAdmin *admin, GtWebAdminApplyFunc func, gpointer user_data)
{
  g_return_if_fail (GT_IS_WEB_ADMIN (admin));
  admin->apply_func = func;
  admin->apply_data = user_data;
}

void
gt_web_admin_set_credentials (GtWebAdmin *admin, const GtWebConfig *web)
{
  g_return_if_fail (GT_IS_WEB_ADMIN (admin));
  g_free (admin->admin_user);
  admin->admin_user = g_strdup (web != NULL && web->admin != NULL ? web->admin : "admin");
  if (admin->password_hash != NULL)
    memset (admin->password_hash, 0, strlen (admin->password_hash));
  g_free (admin->password_hash);
  admin->password_hash = web != NULL && web->password != NULL ? g_strdup (web->password) : NULL;
}

static void
gt_web_admin_dispose (GObject *object)
{
  GtWebAdmin *admin = GT_WEB_ADMIN (object);

  g_clear_handle_id (&admin->tick_id, g_source_remove);
  if (admin->sockets != NULL)
    {
      for (guint i = 0; i < admin->sockets->len; i++)
        g_signal_handlers_disconnect_by_data (admin->sockets->pdata[i], admin);
      g_ptr_array_set_size (admin->sockets, 0);
    }
  g_clear_object (&admin->http);
  history_clear (admin);
  G_OBJECT_CLASS (gt_web_admin_parent_class)->dispose (object);
}

static void
gt_web_admin_finalize (GObject *object)
{
  GtWebAdmin *admin = GT_WEB_ADMIN (object);

  g_free (admin->config_path);
  g_free (admin->admin_user);
  if (admin->password_hash != NULL)
    memset (admin->password_hash, 0, strlen (admin->password_hash));
  g_free (admin->password_hash);
  g_free (admin->last_apply_error);
  g_hash_table_unref (admin->sessions);
  g_hash_table_unref (admin->logins);
  g_hash_table_unref (admin->first_seen);
  g_hash_table_unref (admin->last_per);
  g_ptr_array_unref (admin->keys);
  g_ptr_array_unref (admin->sockets);
  G_OBJECT_CLASS (gt_web_admin_parent_class)->finalize (object);
}

static void
gt_web_admin_class_init (GtWebAdminClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->dispose = gt_web_admin_dispose;
  object_class->finalize = gt_web_admin_finalize;
}

static void
gt_web_admin_init (GtWebAdmin *admin)
{
  admin->sessions = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                           (GDestroyNotify) session_free);
  admin->logins = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  admin->keys = g_ptr_array_new_with_free_func ((GDestroyNotify) login_key_free);
  admin->sockets = g_ptr_array_new_with_free_func (g_object_unref);
  admin->first_seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  admin->last_per = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  g_queue_init (&admin->history);
  admin->started_us = g_get_monotonic_time ();
}
