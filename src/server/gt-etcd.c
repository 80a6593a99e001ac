/* gt-etcd.c: etcd v3 through its JSON gateway: requests with member failover and auth, the
 * pure answer parsers, request bodies, and watch streams read line by line. */
#include "config.h"

#define G_LOG_DOMAIN "gt-etcd"

#include <errno.h>
#include <libsoup/soup.h>
#include <string.h>

#include "gt-etcd.h"

G_DEFINE_QUARK (gt-etcd-error-quark, gt_etcd_error)

/* ------------------------------------------------------------------------------------------ */
/* Parsers */

void
gt_etcd_kv_free (GtEtcdKv *kv)
{
  if (kv == NULL)
    return;
  g_free (kv->key);
  g_free (kv->value);
  g_free (kv);
}

void
gt_etcd_event_free (GtEtcdEvent *event)
{
  if (event == NULL)
    return;
  gt_etcd_kv_free (event->kv);
  g_free (event);
}

static gboolean
bad (GError **error, const char *what)
{
  g_set_error (error, GT_ETCD_ERROR, GT_ETCD_ERROR_BAD_RESPONSE, "bad etcd answer: %s", what);
  return FALSE;
}

/* The gateway writes int64 as a decimal string; numbers are accepted too. Absent = 0. */
static gboolean
get_int64 (JsonObject *object, const char *name, gint64 *out, GError **error)
{
  JsonNode *node = json_object_get_member (object, name);
  const char *text;
  char *end = NULL;
  gint64 value;

  *out = 0;
  if (node == NULL || JSON_NODE_HOLDS_NULL (node))
    return TRUE;
  if (!JSON_NODE_HOLDS_VALUE (node))
    return bad (error, "an integer is not a value");
  if (json_node_get_value_type (node) == G_TYPE_INT64)
    {
      *out = json_node_get_int (node);
      return TRUE;
    }
  if (json_node_get_value_type (node) != G_TYPE_STRING)
    return bad (error, "an integer is neither a number nor a string");
  text = json_node_get_string (node);
  errno = 0;
  value = g_ascii_strtoll (text, &end, 10);
  if (*text == '\0' || end == NULL || *end != '\0' || errno != 0)
    return bad (error, "an integer string is not a number");
  *out = value;
  return TRUE;
}

static gboolean
get_bool (JsonObject *object, const char *name, gboolean *out, GError **error)
{
  JsonNode *node = json_object_get_member (object, name);

  *out = FALSE;
  if (node == NULL || JSON_NODE_HOLDS_NULL (node))
    return TRUE;
  if (!JSON_NODE_HOLDS_VALUE (node) || json_node_get_value_type (node) != G_TYPE_BOOLEAN)
    return bad (error, "a flag is not a boolean");
  *out = json_node_get_boolean (node);
  return TRUE;
}

/* A base64 member as a NUL-terminated string (keys and values are text here); absent = "". */
static gboolean
get_b64 (JsonObject *object, const char *name, char **out, GError **error)
{
  JsonNode *node = json_object_get_member (object, name);
  const char *text;
  guchar *raw;
  gsize len = 0;

  *out = NULL;
  if (node == NULL || JSON_NODE_HOLDS_NULL (node))
    {
      *out = g_strdup ("");
      return TRUE;
    }
  if (!JSON_NODE_HOLDS_VALUE (node) || json_node_get_value_type (node) != G_TYPE_STRING)
    return bad (error, "a key or value is not a string");
  text = json_node_get_string (node);
  for (const char *p = text; *p != '\0'; p++)
    if (!g_ascii_isalnum (*p) && *p != '+' && *p != '/' && *p != '=')
      return bad (error, "a key or value is not base64");
  raw = g_base64_decode (text, &len);
  if (memchr (raw, '\0', len) != NULL || !g_utf8_validate ((const char *) raw, len, NULL))
    {
      g_free (raw);
      return bad (error, "a key or value is not UTF-8 text");
    }
  *out = g_realloc (raw, len + 1);
  (*out)[len] = '\0';
  return TRUE;
}

static GtEtcdKv *
parse_kv (JsonNode *node, GError **error)
{
  g_autoptr (GtEtcdKv) kv = g_new0 (GtEtcdKv, 1);
  JsonObject *object;

  if (!JSON_NODE_HOLDS_OBJECT (node))
    {
      bad (error, "a kv is not an object");
      return NULL;
    }
  object = json_node_get_object (node);
  if (!get_b64 (object, "key", &kv->key, error) || !get_b64 (object, "value", &kv->value, error)
      || !get_int64 (object, "lease", &kv->lease, error)
      || !get_int64 (object, "create_revision", &kv->create_revision, error)
      || !get_int64 (object, "mod_revision", &kv->mod_revision, error))
    return NULL;
  return g_steal_pointer (&kv);
}

static gboolean
parse_kvs (JsonObject *object, GPtrArray *out, GError **error)
{
  JsonNode *node = json_object_get_member (object, "kvs");
  JsonArray *array;
  guint n;

  if (node == NULL || JSON_NODE_HOLDS_NULL (node))
    return TRUE;
  if (!JSON_NODE_HOLDS_ARRAY (node))
    return bad (error, "kvs is not a list");
  array = json_node_get_array (node);
  n = json_array_get_length (array);
  if (out->len + n > GT_ETCD_MAX_KVS)
    return bad (error, "too many kvs");
  for (guint i = 0; i < n; i++)
    {
      GtEtcdKv *kv = parse_kv (json_array_get_element (array, i), error);

      if (kv == NULL)
        return FALSE;
      g_ptr_array_add (out, kv);
    }
  return TRUE;
}

static JsonObject *
get_object (JsonObject *object, const char *name)
{
  JsonNode *node = json_object_get_member (object, name);

  return node != NULL && JSON_NODE_HOLDS_OBJECT (node) ? json_node_get_object (node) : NULL;
}

static gboolean
header_revision (JsonObject *object, gint64 *revision, GError **error)
{
  JsonObject *header = get_object (object, "header");

  *revision = 0;
  return header == NULL || get_int64 (header, "revision", revision, error);
}

JsonObject *
gt_etcd_parse_object (const char *data, gsize len, GError **error)
{
  g_autoptr (JsonParser) parser = json_parser_new_immutable ();
  g_autoptr (GError) local = NULL;
  JsonNode *root;
  JsonObject *object;
  JsonNode *err;

  if (len > GT_ETCD_MAX_BODY)
    {
      bad (error, "too large");
      return NULL;
    }
  if (data == NULL || len == 0)
    {
      bad (error, "empty");
      return NULL;
    }
  if (!json_parser_load_from_data (parser, data, (gssize) len, &local))
    {
      g_set_error (error, GT_ETCD_ERROR, GT_ETCD_ERROR_BAD_RESPONSE, "bad etcd answer: %s",
                   local->message);
      return NULL;
    }
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    {
      bad (error, "not an object");
      return NULL;
    }
  object = json_node_get_object (root);
  err = json_object_get_member (object, "error");
  if (err != NULL)
    {
      const char *message = NULL;

      /* Unary calls: {"error": "text", "code": N, "message": "text"}; streams: {"error":
       * {"message": "text", ...}}. */
      if (JSON_NODE_HOLDS_OBJECT (err))
        err = json_object_get_member (json_node_get_object (err), "message");
      if (err != NULL && JSON_NODE_HOLDS_VALUE (err)
          && json_node_get_value_type (err) == G_TYPE_STRING)
        message = json_node_get_string (err);
      g_set_error (error, GT_ETCD_ERROR, GT_ETCD_ERROR_SERVER, "etcd: %.200s",
                   message != NULL && g_utf8_validate (message, -1, NULL) ? message : "error");
      return NULL;
    }
  /* Streamed answers come as {"result": {...}}. */
  if (get_object (object, "result") != NULL)
    object = get_object (object, "result");
  return json_object_ref (object);
}

GPtrArray *
gt_etcd_parse_range (JsonObject *object, gint64 *revision, GError **error)
{
  g_autoptr (GPtrArray) kvs = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_etcd_kv_free);

  if (!header_revision (object, revision, error) || !parse_kvs (object, kvs, error))
    return NULL;
  return g_steal_pointer (&kvs);
}

GPtrArray *
gt_etcd_parse_txn (JsonObject *object, gboolean *succeeded, GError **error)
{
  g_autoptr (GPtrArray) kvs = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_etcd_kv_free);
  JsonNode *node;

  if (!get_bool (object, "succeeded", succeeded, error))
    return NULL;
  node = json_object_get_member (object, "responses");
  if (node != NULL && !JSON_NODE_HOLDS_NULL (node))
    {
      JsonArray *array;

      if (!JSON_NODE_HOLDS_ARRAY (node))
        {
          bad (error, "responses is not a list");
          return NULL;
        }
      array = json_node_get_array (node);
      for (guint i = 0; i < json_array_get_length (array); i++)
        {
          JsonNode *item = json_array_get_element (array, i);
          JsonObject *range;

          if (!JSON_NODE_HOLDS_OBJECT (item))
            {
              bad (error, "a response is not an object");
              return NULL;
            }
          range = get_object (json_node_get_object (item), "response_range");
          if (range != NULL && !parse_kvs (range, kvs, error))
            return NULL;
        }
    }
  return g_steal_pointer (&kvs);
}

GPtrArray *
gt_etcd_parse_watch (JsonObject *object, gboolean *created, gboolean *canceled, gint64 *revision,
                     GError **error)
{
  g_autoptr (GPtrArray) events
    = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_etcd_event_free);
  JsonNode *node;

  if (!get_bool (object, "created", created, error)
      || !get_bool (object, "canceled", canceled, error)
      || !header_revision (object, revision, error))
    return NULL;
  node = json_object_get_member (object, "events");
  if (node == NULL || JSON_NODE_HOLDS_NULL (node))
    return g_steal_pointer (&events);
  if (!JSON_NODE_HOLDS_ARRAY (node))
    {
      bad (error, "events is not a list");
      return NULL;
    }
  for (guint i = 0; i < json_array_get_length (json_node_get_array (node)); i++)
    {
      JsonNode *item = json_array_get_element (json_node_get_array (node), i);
      g_autoptr (GtEtcdKv) kv = NULL;
      JsonNode *type, *kv_node;
      GtEtcdEvent *event;

      if (i >= GT_ETCD_MAX_KVS)
        {
          bad (error, "too many events");
          return NULL;
        }
      if (!JSON_NODE_HOLDS_OBJECT (item))
        {
          bad (error, "an event is not an object");
          return NULL;
        }
      kv_node = json_object_get_member (json_node_get_object (item), "kv");
      if (kv_node == NULL || (kv = parse_kv (kv_node, error)) == NULL)
        {
          if (kv_node == NULL)
            bad (error, "an event has no kv");
          return NULL;
        }
      event = g_new0 (GtEtcdEvent, 1);
      event->type = GT_ETCD_EVENT_PUT;
      type = json_object_get_member (json_node_get_object (item), "type");
      if (type != NULL && JSON_NODE_HOLDS_VALUE (type)
          && json_node_get_value_type (type) == G_TYPE_STRING
          && strcmp (json_node_get_string (type), "DELETE") == 0)
        event->type = GT_ETCD_EVENT_DELETE;
      event->kv = g_steal_pointer (&kv);
      g_ptr_array_add (events, event);
    }
  return g_steal_pointer (&events);
}

gboolean
gt_etcd_parse_lease (JsonObject *object, gint64 *id, gint64 *ttl, GError **error)
{
  return get_int64 (object, "ID", id, error) && get_int64 (object, "TTL", ttl, error);
}

/* ------------------------------------------------------------------------------------------ */
/* Request bodies */

static void
add_b64 (JsonBuilder *b, const char *name, const char *text)
{
  g_autofree char *enc = g_base64_encode ((const guchar *) text, strlen (text));

  json_builder_set_member_name (b, name);
  json_builder_add_string_value (b, enc);
}

static void
add_int64 (JsonBuilder *b, const char *name, gint64 value)
{
  g_autofree char *text = g_strdup_printf ("%" G_GINT64_FORMAT, value);

  json_builder_set_member_name (b, name);
  json_builder_add_string_value (b, text);
}

/* The first key after every key that starts with prefix. */
static char *
prefix_end (const char *prefix)
{
  char *end = g_strdup (prefix);
  gsize n = strlen (end);

  g_assert (n > 0 && (guchar) end[n - 1] < 0x7f);
  end[n - 1]++;
  return end;
}

JsonNode *
gt_etcd_body_lease_grant (gint64 ttl_s)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();

  json_builder_begin_object (b);
  add_int64 (b, "TTL", ttl_s);
  json_builder_end_object (b);
  return json_builder_get_root (b);
}

JsonNode *
gt_etcd_body_lease_id (gint64 id)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();

  json_builder_begin_object (b);
  add_int64 (b, "ID", id);
  json_builder_end_object (b);
  return json_builder_get_root (b);
}

JsonNode *
gt_etcd_body_range_prefix (const char *prefix)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autofree char *end = prefix_end (prefix);

  json_builder_begin_object (b);
  add_b64 (b, "key", prefix);
  add_b64 (b, "range_end", end);
  json_builder_end_object (b);
  return json_builder_get_root (b);
}

JsonNode *
gt_etcd_body_claim (const char *const *keys, const char *const *values, gint64 lease)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "compare");
  json_builder_begin_array (b);
  for (guint i = 0; keys[i] != NULL; i++)
    {
      json_builder_begin_object (b);
      add_b64 (b, "key", keys[i]);
      json_builder_set_member_name (b, "target");
      json_builder_add_string_value (b, "CREATE");
      json_builder_set_member_name (b, "result");
      json_builder_add_string_value (b, "EQUAL");
      add_int64 (b, "create_revision", 0);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
  json_builder_set_member_name (b, "success");
  json_builder_begin_array (b);
  for (guint i = 0; keys[i] != NULL; i++)
    {
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "request_put");
      json_builder_begin_object (b);
      add_b64 (b, "key", keys[i]);
      add_b64 (b, "value", values[i]);
      add_int64 (b, "lease", lease);
      json_builder_end_object (b);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
  json_builder_set_member_name (b, "failure");
  json_builder_begin_array (b);
  for (guint i = 0; keys[i] != NULL; i++)
    {
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "request_range");
      json_builder_begin_object (b);
      add_b64 (b, "key", keys[i]);
      json_builder_end_object (b);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
  json_builder_end_object (b);
  return json_builder_get_root (b);
}

JsonNode *
gt_etcd_body_release (const char *key, gint64 lease)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "compare");
  json_builder_begin_array (b);
  json_builder_begin_object (b);
  add_b64 (b, "key", key);
  json_builder_set_member_name (b, "target");
  json_builder_add_string_value (b, "LEASE");
  json_builder_set_member_name (b, "result");
  json_builder_add_string_value (b, "EQUAL");
  add_int64 (b, "lease", lease);
  json_builder_end_object (b);
  json_builder_end_array (b);
  json_builder_set_member_name (b, "success");
  json_builder_begin_array (b);
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "request_delete_range");
  json_builder_begin_object (b);
  add_b64 (b, "key", key);
  json_builder_end_object (b);
  json_builder_end_object (b);
  json_builder_end_array (b);
  json_builder_end_object (b);
  return json_builder_get_root (b);
}

/* ------------------------------------------------------------------------------------------ */
/* Requests */

struct _GtEtcd
{
  char **endpoints;
  guint current;      /* the member that answered last */
  SoupSession *session;
  SoupSession *watch_session; /* no I/O timeout: watches are quiet for long */
  GTlsCertificate *client_cert;
  char *user;
  char *password;
  char *token;        /* auth token, NULL = none yet */
  guint timeout_ms;
  GCancellable *cancellable; /* cancelled by free: every request ends */
};

/* One request: the flow owns the task's first reference until it returns; each try on a member
 * is an Attempt holding its own reference, so that a try that libsoup never finishes (it can
 * hang on a TLS handshake the member refuses) is simply left behind when its timer fires. */
typedef struct
{
  GtEtcd *etcd;
  char *path;
  GBytes *body;
  guint tries;        /* members tried */
  gboolean authenticating;
  gboolean reauth_done;
  gboolean returned;
  guint serial;       /* of the current attempt */
  guint timer_id;
  GCancellable *attempt; /* the current attempt's, cancelled by its timer or with the task */
  GCancellable *task_cancellable;
  gulong cancel_id;
} Call;

typedef struct
{
  GTask *task;
  guint serial;
  SoupMessage *msg;
  GInputStream *stream;
  GByteArray *reply;
} Attempt;

static void
attempt_free (Attempt *a)
{
  g_object_unref (a->task);
  g_clear_object (&a->msg);
  g_clear_object (&a->stream);
  g_byte_array_unref (a->reply);
  g_free (a);
}

static void
call_attempt_end (Call *call)
{
  call->serial++; /* a late callback of the attempt finds itself stale */
  g_clear_handle_id (&call->timer_id, g_source_remove);
  if (call->attempt != NULL)
    {
      g_cancellable_cancel (call->attempt);
      g_clear_object (&call->attempt);
    }
}

static void
call_free (Call *call)
{
  g_assert (call->timer_id == 0);
  if (call->cancel_id != 0)
    g_cancellable_disconnect (call->task_cancellable, call->cancel_id);
  g_clear_object (&call->task_cancellable);
  g_free (call->path);
  g_bytes_unref (call->body);
  g_free (call);
}

static GBytes *
node_to_bytes (JsonNode *node)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  gsize len = 0;
  char *text;

  json_generator_set_root (gen, node);
  text = json_generator_to_data (gen, &len);
  return g_bytes_new_take (text, len);
}

static SoupMessage *
etcd_message (GtEtcd *etcd, const char *path, GBytes *body)
{
  g_autofree char *url = g_strconcat (etcd->endpoints[etcd->current], path, NULL);
  SoupMessage *msg = soup_message_new (SOUP_METHOD_POST, url);

  if (msg == NULL)
    return NULL;
  soup_message_set_request_body_from_bytes (msg, "application/json", body);
  if (etcd->token != NULL && !g_str_has_suffix (path, "/auth/authenticate"))
    soup_message_headers_replace (soup_message_get_request_headers (msg), "Authorization",
                                  etcd->token);
  if (etcd->client_cert != NULL)
    soup_message_set_tls_client_certificate (msg, etcd->client_cert);
  return msg;
}

static void call_send (GTask *task);

/* Ends the call: object or error (taken). */
static void
call_return (GTask *task, JsonObject *object, GError *error)
{
  Call *call = g_task_get_task_data (task);

  call_attempt_end (call);
  call->returned = TRUE;
  if (object != NULL)
    g_task_return_pointer (task, object, (GDestroyNotify) json_object_unref);
  else
    g_task_return_error (task, error);
  g_object_unref (task); /* the flow's reference */
}

static void
call_next_member (GTask *task, const char *why)
{
  Call *call = g_task_get_task_data (task);
  GtEtcd *etcd = call->etcd;

  g_debug ("etcd member %s: %s", etcd->endpoints[etcd->current], why);
  etcd->current = (etcd->current + 1) % g_strv_length (etcd->endpoints);
  if (++call->tries >= g_strv_length (etcd->endpoints))
    {
      call_return (task, NULL,
                   g_error_new (GT_ETCD_ERROR, GT_ETCD_ERROR_UNAVAILABLE,
                                "no etcd member answered (last: %s)", why));
      return;
    }
  call_send (task);
}

/* An attempt's callback: FALSE (and the attempt freed) when it no longer counts. */
static gboolean
attempt_current (Attempt *a)
{
  Call *call = g_task_get_task_data (a->task);

  if (!call->returned && a->serial == call->serial)
    return TRUE;
  attempt_free (a);
  return FALSE;
}

/* The attempt failed on this member: cancelled with the task, or try the next member. */
static void
attempt_failed (Attempt *a, const GError *error)
{
  GTask *task = a->task;
  Call *call = g_task_get_task_data (task);
  g_autofree char *why = g_strdup (error->message);

  attempt_free (a);
  if (g_cancellable_is_cancelled (call->task_cancellable))
    call_return (task, NULL, g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CANCELLED, "cancelled"));
  else
    {
      call_attempt_end (call);
      call_next_member (task, why);
    }
}

static void
attempt_done (Attempt *a)
{
  GTask *task = a->task;
  Call *call = g_task_get_task_data (task);
  GtEtcd *etcd = call->etcd;
  g_autoptr (GError) error = NULL;
  JsonObject *object;
  guint status = soup_message_get_status (a->msg);

  object = gt_etcd_parse_object ((const char *) a->reply->data, a->reply->len, &error);
  attempt_free (a);
  call_attempt_end (call);
  if (object == NULL && status >= 500 && status != 503
      && !g_error_matches (error, GT_ETCD_ERROR, GT_ETCD_ERROR_SERVER))
    {
      call_next_member (task, error->message);
      return;
    }
  if (object == NULL && g_error_matches (error, GT_ETCD_ERROR, GT_ETCD_ERROR_SERVER)
      && (strstr (error->message, "no leader") != NULL
          || strstr (error->message, "timed out") != NULL
          || strstr (error->message, "stopped") != NULL))
    {
      /* This member cannot serve now; another one may. */
      call_next_member (task, error->message);
      return;
    }
  if (object == NULL && call->authenticating)
    {
      call_return (task, NULL, g_steal_pointer (&error));
      return;
    }
  if (object == NULL && etcd->user != NULL && !call->reauth_done
      && g_error_matches (error, GT_ETCD_ERROR, GT_ETCD_ERROR_SERVER)
      && (strstr (error->message, "token") != NULL || strstr (error->message, "auth") != NULL))
    {
      /* An expired token: sign in again once. */
      g_clear_pointer (&etcd->token, g_free);
      call->reauth_done = TRUE;
      call_send (task);
      return;
    }
  if (call->authenticating)
    {
      JsonNode *token = json_object_get_member (object, "token");

      if (token == NULL || !JSON_NODE_HOLDS_VALUE (token)
          || json_node_get_value_type (token) != G_TYPE_STRING
          || strpbrk (json_node_get_string (token), "\r\n") != NULL)
        {
          json_object_unref (object);
          call_return (task, NULL,
                       g_error_new (GT_ETCD_ERROR, GT_ETCD_ERROR_BAD_RESPONSE,
                                    "etcd sign-in answer has no token"));
          return;
        }
      g_free (etcd->token);
      etcd->token = g_strdup (json_node_get_string (token));
      json_object_unref (object);
      call->authenticating = FALSE;
      call_send (task);
      return;
    }
  if (object == NULL)
    call_return (task, NULL, g_steal_pointer (&error));
  else
    call_return (task, object, NULL);
}

static void
call_read_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Attempt *a = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) chunk = g_input_stream_read_bytes_finish (G_INPUT_STREAM (source), result,
                                                               &error);

  if (!attempt_current (a))
    return;
  if (chunk == NULL)
    {
      attempt_failed (a, error);
      return;
    }
  if (g_bytes_get_size (chunk) == 0)
    {
      attempt_done (a);
      return;
    }
  if (a->reply->len + g_bytes_get_size (chunk) > GT_ETCD_MAX_BODY)
    {
      GTask *task = a->task;

      attempt_free (a);
      call_return (task, NULL,
                   g_error_new (GT_ETCD_ERROR, GT_ETCD_ERROR_BAD_RESPONSE,
                                "etcd answer larger than %d bytes", GT_ETCD_MAX_BODY));
      return;
    }
  g_byte_array_append (a->reply, g_bytes_get_data (chunk, NULL), g_bytes_get_size (chunk));
  g_input_stream_read_bytes_async (a->stream, 64 * 1024, G_PRIORITY_DEFAULT,
                                   ((Call *) g_task_get_task_data (a->task))->attempt,
                                   call_read_cb, a);
}

static void
call_sent_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Attempt *a = user_data;
  g_autoptr (GError) error = NULL;
  GInputStream *stream = soup_session_send_finish (SOUP_SESSION (source), result, &error);

  if (!attempt_current (a))
    {
      g_clear_object (&stream);
      return;
    }
  if (stream == NULL)
    {
      attempt_failed (a, error);
      return;
    }
  a->stream = stream;
  g_input_stream_read_bytes_async (a->stream, 64 * 1024, G_PRIORITY_DEFAULT,
                                   ((Call *) g_task_get_task_data (a->task))->attempt,
                                   call_read_cb, a);
}

static gboolean
call_timeout_cb (gpointer user_data)
{
  GTask *task = user_data;
  Call *call = g_task_get_task_data (task);

  call->timer_id = 0;
  /* The attempt is left behind (its callbacks find it stale); the next member is tried. */
  call_attempt_end (call);
  call_next_member (task, "no answer in time");
  return G_SOURCE_REMOVE;
}

static void
call_task_cancelled_cb (GCancellable *cancellable, gpointer user_data)
{
  Call *call = user_data;

  if (call->attempt != NULL)
    g_cancellable_cancel (call->attempt);
}

static void
call_send (GTask *task)
{
  Call *call = g_task_get_task_data (task);
  GtEtcd *etcd = call->etcd;
  g_autoptr (GBytes) auth_body = NULL;
  Attempt *a;

  if (g_cancellable_is_cancelled (call->task_cancellable))
    {
      call_return (task, NULL, g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CANCELLED, "cancelled"));
      return;
    }
  call_attempt_end (call);
  a = g_new0 (Attempt, 1);
  a->task = g_object_ref (task);
  a->serial = call->serial;
  a->reply = g_byte_array_new ();
  if (etcd->user != NULL && etcd->token == NULL)
    {
      g_autoptr (JsonBuilder) b = json_builder_new ();
      g_autoptr (JsonNode) root = NULL;

      json_builder_begin_object (b);
      json_builder_set_member_name (b, "name");
      json_builder_add_string_value (b, etcd->user);
      json_builder_set_member_name (b, "password");
      json_builder_add_string_value (b, etcd->password);
      json_builder_end_object (b);
      root = json_builder_get_root (b);
      auth_body = node_to_bytes (root);
      call->authenticating = TRUE;
      a->msg = etcd_message (etcd, "/v3/auth/authenticate", auth_body);
    }
  else
    a->msg = etcd_message (etcd, call->path, call->body);
  if (a->msg == NULL)
    {
      attempt_free (a);
      call_return (task, NULL,
                   g_error_new (GT_ETCD_ERROR, GT_ETCD_ERROR_UNAVAILABLE, "bad etcd URL %s",
                                etcd->endpoints[etcd->current]));
      return;
    }
  /* libsoup's own I/O timeout does not cover every stall: each member gets timeout_ms. */
  call->attempt = g_cancellable_new ();
  call->timer_id = g_timeout_add (etcd->timeout_ms, call_timeout_cb, task);
  soup_session_send_async (etcd->session, a->msg, G_PRIORITY_DEFAULT, call->attempt,
                           call_sent_cb, a);
}

void
gt_etcd_call_async (GtEtcd *etcd, const char *path, JsonNode *body, GCancellable *cancellable,
                    GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = g_task_new (NULL, cancellable ? cancellable : etcd->cancellable, callback,
                            user_data);
  Call *call = g_new0 (Call, 1);

  g_task_set_source_tag (task, gt_etcd_call_async);
  call->etcd = etcd;
  call->path = g_strdup (path);
  call->body = node_to_bytes (body);
  call->task_cancellable = g_object_ref (g_task_get_cancellable (task));
  g_task_set_task_data (task, call, (GDestroyNotify) call_free);
  call->cancel_id = g_cancellable_connect (call->task_cancellable,
                                           G_CALLBACK (call_task_cancelled_cb), call, NULL);
  call_send (task);
}

JsonObject *
gt_etcd_call_finish (GtEtcd *etcd, GAsyncResult *result, GError **error)
{
  return g_task_propagate_pointer (G_TASK (result), error);
}

GtEtcd *
gt_etcd_new (const GtEtcdOptions *options, GError **error)
{
  GtEtcd *etcd;
  g_autoptr (GTlsDatabase) database = NULL;
  g_autoptr (GTlsCertificate) cert = NULL;
  guint timeout_s = MAX (1, (options->timeout_ms + 999) / 1000);

  g_return_val_if_fail (options->endpoints != NULL && options->endpoints[0] != NULL, NULL);

  if (options->ca_file != NULL)
    {
      database = g_tls_file_database_new (options->ca_file, error);
      if (database == NULL)
        return NULL;
    }
  if (options->cert_file != NULL)
    {
      cert = g_tls_certificate_new_from_files (options->cert_file, options->key_file, error);
      if (cert == NULL)
        return NULL;
    }
  etcd = g_new0 (GtEtcd, 1);
  etcd->endpoints = g_new0 (char *, g_strv_length ((char **) options->endpoints) + 1);
  for (guint i = 0; options->endpoints[i] != NULL; i++)
    {
      const char *e = options->endpoints[i];
      gsize n = strlen (e);

      etcd->endpoints[i] = g_strndup (e, n > 0 && e[n - 1] == '/' ? n - 1 : n);
    }
  etcd->session = soup_session_new_with_options ("timeout", timeout_s, "idle-timeout", 30,
                                                 "max-conns-per-host", 8, NULL);
  etcd->watch_session = soup_session_new_with_options ("timeout", 0, "idle-timeout", 0, NULL);
  if (database != NULL)
    {
      soup_session_set_tls_database (etcd->session, database);
      soup_session_set_tls_database (etcd->watch_session, database);
    }
  etcd->client_cert = g_steal_pointer (&cert);
  etcd->user = g_strdup (options->user);
  etcd->password = g_strdup (options->password);
  etcd->cancellable = g_cancellable_new ();
  etcd->timeout_ms = MAX (options->timeout_ms, 100);
  return etcd;
}

void
gt_etcd_free (GtEtcd *etcd)
{
  if (etcd == NULL)
    return;
  g_cancellable_cancel (etcd->cancellable);
  soup_session_abort (etcd->session);
  soup_session_abort (etcd->watch_session);
  g_object_unref (etcd->session);
  g_object_unref (etcd->watch_session);
  g_object_unref (etcd->cancellable);
  g_clear_object (&etcd->client_cert);
  g_strfreev (etcd->endpoints);
  g_free (etcd->user);
  if (etcd->password != NULL)
    memset (etcd->password, 0, strlen (etcd->password));
  g_free (etcd->password);
  if (etcd->token != NULL)
    memset (etcd->token, 0, strlen (etcd->token));
  g_free (etcd->token);
  g_free (etcd);
}

/* ------------------------------------------------------------------------------------------ */
/* Watch streams */

struct _GtEtcdWatch
{
  GtEtcd *etcd;
  GCancellable *cancellable;
  SoupMessage *msg;
  GInputStream *stream;
  GByteArray *line;
  GtEtcdWatchFunc func;
  GtEtcdWatchDone done;
  gpointer user_data;
  guint refs;    /* the owner's, and the one of the read or send in flight */
  gboolean freed;
};

static void
watch_unref (GtEtcdWatch *watch)
{
  if (--watch->refs > 0)
    return;
  g_clear_object (&watch->stream);
  g_clear_object (&watch->msg);
  g_clear_object (&watch->cancellable);
  g_byte_array_unref (watch->line);
  g_free (watch);
}

static void
watch_end (GtEtcdWatch *watch, const GError *error)
{
  GtEtcdWatchDone done = watch->done;

  watch->done = NULL;
  if (done != NULL)
    done (error, watch->user_data);
}

/* One message of the stream; FALSE when the stream must end. */
static gboolean
watch_message (GtEtcdWatch *watch, const guint8 *data, gsize len)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonObject) object = gt_etcd_parse_object ((const char *) data, len, &error);
  g_autoptr (GPtrArray) events = NULL;
  gboolean created, canceled;
  gint64 revision;

  if (object != NULL)
    events = gt_etcd_parse_watch (object, &created, &canceled, &revision, &error);
  if (events == NULL)
    {
      watch_end (watch, error);
      return FALSE;
    }
  if (canceled)
    {
      g_autoptr (GError) why = g_error_new (GT_ETCD_ERROR, GT_ETCD_ERROR_SERVER,
                                            "etcd canceled the watch (compacted?)");
      watch_end (watch, why);
      return FALSE;
    }
  if (events->len > 0 || created)
    watch->func (events, revision, watch->user_data);
  return TRUE;
}

static void
watch_read_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GtEtcdWatch *watch = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) chunk = g_input_stream_read_bytes_finish (G_INPUT_STREAM (source), result,
                                                               &error);
  const guint8 *data;
  gsize len, start = 0;

  if (watch->freed)
    {
      watch_unref (watch);
      return;
    }
  if (chunk == NULL || g_bytes_get_size (chunk) == 0)
    {
      g_autoptr (GError) eof = error ? NULL
                                     : g_error_new (GT_ETCD_ERROR, GT_ETCD_ERROR_UNAVAILABLE,
                                                    "etcd closed the watch stream");
      watch_end (watch, error ? error : eof);
      watch_unref (watch);
      return;
    }
  data = g_bytes_get_data (chunk, &len);
  for (gsize i = 0; i < len; i++)
    if (data[i] == '\n')
      {
        g_byte_array_append (watch->line, data + start, i - start);
        start = i + 1;
        if (watch->line->len > 0
            && !watch_message (watch, watch->line->data, watch->line->len))
          {
            watch_unref (watch);
            return;
          }
        g_byte_array_set_size (watch->line, 0);
        if (watch->freed)
          {
            watch_unref (watch);
            return;
          }
      }
  g_byte_array_append (watch->line, data + start, len - start);
  if (watch->line->len > GT_ETCD_MAX_BODY)
    {
      g_autoptr (GError) big = g_error_new (GT_ETCD_ERROR, GT_ETCD_ERROR_BAD_RESPONSE,
                                            "etcd watch message larger than %d bytes",
                                            GT_ETCD_MAX_BODY);
      watch_end (watch, big);
      watch_unref (watch);
      return;
    }
  g_input_stream_read_bytes_async (watch->stream, 64 * 1024, G_PRIORITY_DEFAULT,
                                   watch->cancellable, watch_read_cb, watch);
}

static void
watch_sent_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GtEtcdWatch *watch = user_data;
  g_autoptr (GError) error = NULL;
  GInputStream *stream = soup_session_send_finish (SOUP_SESSION (source), result, &error);

  if (watch->freed)
    {
      g_clear_object (&stream);
      watch_unref (watch);
      return;
    }
  if (stream == NULL)
    {
      /* The next attempt (the owner's) goes to another member. */
      watch->etcd->current = (watch->etcd->current + 1) % g_strv_length (watch->etcd->endpoints);
      watch_end (watch, error);
      watch_unref (watch);
      return;
    }
  watch->stream = stream;
  g_input_stream_read_bytes_async (watch->stream, 64 * 1024, G_PRIORITY_DEFAULT,
                                   watch->cancellable, watch_read_cb, watch);
}

GtEtcdWatch *
gt_etcd_watch (GtEtcd *etcd, const char *prefix, gint64 start_revision, GtEtcdWatchFunc func,
               GtEtcdWatchDone done, gpointer user_data)
{
  GtEtcdWatch *watch = g_new0 (GtEtcdWatch, 1);
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonNode) root = NULL;
  g_autoptr (GBytes) body = NULL;
  g_autofree char *end = prefix_end (prefix);

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "create_request");
  json_builder_begin_object (b);
  add_b64 (b, "key", prefix);
  add_b64 (b, "range_end", end);
  add_int64 (b, "start_revision", start_revision);
  json_builder_end_object (b);
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  body = node_to_bytes (root);

  watch->etcd = etcd;
  watch->cancellable = g_cancellable_new ();
  watch->line = g_byte_array_new ();
  watch->func = func;
  watch->done = done;
  watch->user_data = user_data;
  watch->refs = 2;
  watch->msg = etcd_message (etcd, "/v3/watch", body);
  soup_session_send_async (etcd->watch_session, watch->msg, G_PRIORITY_DEFAULT,
                           watch->cancellable, watch_sent_cb, watch);
  return watch;
}

void
gt_etcd_watch_free (GtEtcdWatch *watch)
{
  if (watch == NULL)
    return;
  /* The read or send in flight ends with the cancellation and drops the last reference. */
  watch->freed = TRUE;
  watch->done = NULL;
  g_cancellable_cancel (watch->cancellable);
  watch_unref (watch);
}
