/* gt-auth-api.c: GT's external auth API client (authAPI): asks an HTTP(S) endpoint about an id. */
#include "config.h"

#include <string.h>
#include <json-glib/json-glib.h>

#include "gt-auth-api.h"
#include "gt-http-fetch.h"

G_DEFINE_QUARK (gt-auth-error-quark, gt_auth_error)

/* json-glib parses nested values recursively: bound the depth before handing it the bytes. */
#define MAX_DEPTH 32

/* Parser ------------------------------------------------------------------------------------ */

static gboolean
depth_ok (const char *body, gsize len)
{
  guint depth = 0;
  gboolean in_string = FALSE;

  for (gsize i = 0; i < len; i++)
    {
      char c = body[i];

      if (in_string)
        {
          if (c == '\\')
            i++;
          else if (c == '"')
            in_string = FALSE;
        }
      else if (c == '"')
        in_string = TRUE;
      else if (c == '[' || c == '{')
        {
          if (++depth > MAX_DEPTH)
            return FALSE;
        }
      else if ((c == ']' || c == '}') && depth > 0)
        depth--;
    }
  return TRUE;
}

static gboolean
bad_response (GError **error, const char *what)
{
  g_set_error (error, GT_AUTH_ERROR, GT_AUTH_ERROR_BAD_RESPONSE, "bad auth API response: %s",
               what);
  return FALSE;
}

gboolean
gt_auth_api_parse_response (const char *body, gsize len, char ***prefixes_out, GError **error)
{
  g_autoptr (JsonParser) parser = NULL;
  g_autoptr (GPtrArray) tokens = NULL;
  g_autofree char *copy = NULL;
  JsonNode *root;
  JsonObject *obj;
  JsonNode *result;
  JsonNode *list;

  g_return_val_if_fail (body != NULL || len == 0, FALSE);
  g_return_val_if_fail (prefixes_out != NULL, FALSE);

  *prefixes_out = NULL;
  if (len > GT_AUTH_API_MAX_BODY)
    return bad_response (error, "body larger than 64 KiB");
  /* Embedded NULs fail validation too. */
  if (!g_utf8_validate_len (body, len, NULL))
    return bad_response (error, "body is not UTF-8");
  if (!depth_ok (body, len))
    return bad_response (error, "JSON nested too deeply");

  /* json-glib wants a terminated buffer. */
  copy = g_malloc (len + 1);
  if (len > 0)
    memcpy (copy, body, len);
  copy[len] = '\0';
  parser = json_parser_new_immutable ();
  if (!json_parser_load_from_data (parser, copy, len, NULL))
    return bad_response (error, "not JSON");
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    return bad_response (error, "not a JSON object");
  obj = json_node_get_object (root);

  result = json_object_get_member (obj, "result");
  if (result == NULL || !JSON_NODE_HOLDS_VALUE (result)
      || json_node_get_value_type (result) != G_TYPE_BOOLEAN)
    return bad_response (error, "\"result\" is missing or not a boolean");
  if (!json_node_get_boolean (result))
    {
      g_set_error_literal (error, GT_AUTH_ERROR, GT_AUTH_ERROR_DENIED,
                           "the auth API refused the id or secret");
      return FALSE;
    }

  tokens = g_ptr_array_new_with_free_func (g_free);
  list = json_object_get_member (obj, "appletTokens");
  if (list != NULL && !JSON_NODE_HOLDS_NULL (list))
    {
      JsonArray *array;
      guint n;

      if (!JSON_NODE_HOLDS_ARRAY (list))
        return bad_response (error, "\"appletTokens\" is not an array");
      array = json_node_get_array (list);
      n = json_array_get_length (array);
      if (n > GT_AUTH_API_MAX_TOKENS)
        return bad_response (error, "more than 1000 appletTokens");
      for (guint i = 0; i < n; i++)
        {
          JsonNode *item = json_array_get_element (array, i);
          const char *token;

          if (!JSON_NODE_HOLDS_VALUE (item) || json_node_get_value_type (item) != G_TYPE_STRING)
            return bad_response (error, "an appletToken is not a string");
          token = json_node_get_string (item);
          if (strlen (token) > GT_AUTH_API_MAX_TOKEN_LEN)
            return bad_response (error, "an appletToken is longer than 200 bytes");
          /* json-glib turns escapes such as \200 into raw bytes after the body was checked. */
          if (!g_utf8_validate (token, -1, NULL))
            return bad_response (error, "an appletToken is not UTF-8");
          if (*token != '\0')
            g_ptr_array_add (tokens, g_strdup (token));
        }
    }
  g_ptr_array_add (tokens, NULL);
  *prefixes_out = (char **) g_ptr_array_free (g_steal_pointer (&tokens), FALSE);
  return TRUE;
}

/* Request ----------------------------------------------------------------------------------- */

static GBytes *
build_body (const char *id, const char *secret, const char *const *prefixes)
{
  g_autoptr (JsonBuilder) builder = json_builder_new ();
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = NULL;
  char *text;
  gsize len;

  json_builder_begin_object (builder);
  json_builder_set_member_name (builder, "networkClientId");
  json_builder_add_string_value (builder, id);
  json_builder_set_member_name (builder, "networkSecretKey");
  json_builder_add_string_value (builder, secret);
  json_builder_set_member_name (builder, "appletTokens");
  json_builder_begin_array (builder);
  for (guint i = 0; prefixes != NULL && prefixes[i] != NULL; i++)
    json_builder_add_string_value (builder, prefixes[i]);
  json_builder_end_array (builder);
  json_builder_end_object (builder);

  root = json_builder_get_root (builder);
  json_generator_set_root (gen, root);
  text = json_generator_to_data (gen, &len);
  return g_bytes_new_take (text, len);
}

static void
fetch_cb (GObject *source, GAsyncResult *res, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  g_autoptr (GBytes) body = NULL;
  GError *error = NULL;
  char **prefixes = NULL;
  gsize len;
  const char *data;

  body = gt_http_fetch_finish (res, &error);
  if (body == NULL)
    {
      error = gt_http_fetch_error_as (error, GT_AUTH_ERROR, GT_AUTH_ERROR_TIMEOUT,
                                      GT_AUTH_ERROR_HTTP, GT_AUTH_ERROR_BAD_RESPONSE);
      g_task_return_error (task, error);
      return;
    }
  data = g_bytes_get_data (body, &len);
  if (!gt_auth_api_parse_response (data, len, &prefixes, &error))
    {
      g_task_return_error (task, error);
      return;
    }
  g_task_return_pointer (task, prefixes, (GDestroyNotify) g_strfreev);
}

void
gt_auth_api_request_async (SoupSession *session, const char *url, const char *id,
                           const char *secret, const char *const *prefixes, guint timeout_ms,
                           GCancellable *cancellable, GAsyncReadyCallback callback,
                           gpointer user_data)
{
  GTask *task;
  g_autoptr (SoupMessage) msg = NULL;
  g_autoptr (GBytes) body = NULL;
  g_autofree char *request_id = NULL;

  g_return_if_fail (SOUP_IS_SESSION (session));
  g_return_if_fail (url != NULL);
  g_return_if_fail (id != NULL);
  g_return_if_fail (secret != NULL);
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, gt_auth_api_request_async);
  /* Errors are mapped by fetch_cb (timeout vs cancel), not by GTask. */
  g_task_set_check_cancellable (task, FALSE);
  msg = soup_message_new (SOUP_METHOD_POST, url);
  if (msg == NULL)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "the auth API address is not a valid http(s) URL");
      g_object_unref (task);
      return;
    }
  body = build_body (id, secret, prefixes);
  soup_message_set_request_body_from_bytes (msg, "application/json", body);
  request_id = g_strdup_printf ("%" G_GINT64_FORMAT, g_get_real_time () / G_USEC_PER_SEC);
  soup_message_headers_replace (soup_message_get_request_headers (msg), "Request-Id",
                                request_id);
  gt_http_fetch_async (session, msg, "the auth API", GT_AUTH_API_MAX_BODY, timeout_ms,
                       cancellable, fetch_cb, task);
}

char **
gt_auth_api_request_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gt_auth_api_request_async,
                        NULL);

  return g_task_propagate_pointer (G_TASK (result), error);
}

/* Fair, cached client -------------------------------------------------------------------------- */

typedef struct _GtAuthApiAddress GtAuthApiAddress;

/* One question to the API; every login asking the same one while it runs waits for its answer. */
typedef struct
{
  GtAuthApi *api; /* NULL once the client is freed while the request runs */
  char *key;
  char *id;
  char *secret;
  char **prefixes;
  GtAuthApiAddress *address;
  GPtrArray *waiters; /* GTask* */
  gint64 deadline;    /* monotonic µs: queueing and asking together stay within the timeout */
  guint timer_id;     /* while queued */
  gboolean running;
} Flight;

/* The questions of one client address: at most max_per_address run at once. */
struct _GtAuthApiAddress
{
  char *address;
  guint running;
  GQueue waiting; /* Flight* */
  gboolean ready; /* in GtAuthApi.ready */
};

typedef struct
{
  char *key;
  char **allowed; /* NULL: denied */
  gint64 expiry;
  GList link;
} CacheEntry;

struct _GtAuthApi
{
  char *url;
  guint timeout_ms;
  guint max_requests;
  guint max_per_address;
  gint64 cache_us;
  SoupSession *session;
  GCancellable *cancellable;
  guint8 hmac_key[32];
  GHashTable *flights;   /* key (borrowed) → Flight* */
  GHashTable *addresses; /* address (borrowed) → GtAuthApiAddress* (owned) */
  GQueue ready;          /* GtAuthApiAddress* with questions waiting, served in turn */
  guint running;
  GHashTable *cache;     /* key (borrowed) → CacheEntry* (owned) */
  GQueue cache_order;    /* oldest first */
};

static void
address_free (GtAuthApiAddress *a)
{
  g_queue_clear (&a->waiting);
  g_free (a->address);
  g_free (a);
}

static void
cache_entry_free (CacheEntry *c)
{
  g_free (c->key);
  g_strfreev (c->allowed);
  g_free (c);
}

static void
flight_free (Flight *f)
{
  g_clear_handle_id (&f->timer_id, g_source_remove);
  g_free (f->key);
  g_free (f->id);
  if (f->secret != NULL)
    memset (f->secret, 0, strlen (f->secret));
  g_free (f->secret);
  g_strfreev (f->prefixes);
  g_ptr_array_unref (f->waiters);
  g_free (f);
}

/* Answers every login waiting for f (allowed or error), then frees f. Waiters may run at once:
 * the caller must be done with the client. */
static void
flight_answer (Flight *f, char **allowed, const GError *error)
{
  for (guint i = 0; i < f->waiters->len; i++)
    {
      GTask *task = f->waiters->pdata[i];

      if (allowed != NULL)
        g_task_return_pointer (task, g_strdupv (allowed), (GDestroyNotify) g_strfreev);
      else
        g_task_return_error (task, g_error_copy (error));
    }
  flight_free (f);
}

GtAuthApi *
gt_auth_api_new (const char *url, guint timeout_ms, guint max_requests, guint max_per_address,
                 guint cache_ms)
{
  GtAuthApi *api;

  g_return_val_if_fail (url != NULL, NULL);
  g_return_val_if_fail (max_requests > 0 && max_per_address > 0, NULL);

  api = g_new0 (GtAuthApi, 1);
  api->url = g_strdup (url);
  api->timeout_ms = timeout_ms;
  api->max_requests = max_requests;
  api->max_per_address = max_per_address;
  api->cache_us = (gint64) cache_ms * 1000;
  /* libsoup queues beyond its per-host connections (2 by default): allow what we schedule. */
  api->session = soup_session_new_with_options ("max-conns", (int) max_requests + 2,
                                                "max-conns-per-host", (int) max_requests, NULL);
  api->cancellable = g_cancellable_new ();
  /* The cache is keyed by an HMAC of the credentials, never by the secret itself. */
  for (guint i = 0; i < G_N_ELEMENTS (api->hmac_key); i += 4)
    {
      guint32 r = g_random_int ();

      memcpy (api->hmac_key + i, &r, 4);
    }
  api->flights = g_hash_table_new (g_str_hash, g_str_equal);
  api->addresses = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                          (GDestroyNotify) address_free);
  api->cache = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                      (GDestroyNotify) cache_entry_free);
  return api;
}

void
gt_auth_api_free (GtAuthApi *api)
{
  g_autoptr (GPtrArray) queued = g_ptr_array_new ();
  g_autoptr (GError) error = NULL;
  GHashTableIter iter;
  gpointer value;

  if (api == NULL)
    return;
  g_hash_table_iter_init (&iter, api->flights);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      Flight *f = value;

      f->api = NULL;
      f->address = NULL;
      /* A running one is answered and freed by its callback once the request is cancelled. */
      if (!f->running)
        g_ptr_array_add (queued, f);
    }
  g_cancellable_cancel (api->cancellable);
  g_hash_table_unref (api->flights);
  g_queue_clear (&api->ready);
  g_hash_table_unref (api->addresses);
  /* The queue links live inside the entries: clear it first. */
  g_queue_init (&api->cache_order);
  g_hash_table_unref (api->cache);
  soup_session_abort (api->session);
  g_object_unref (api->session);
  g_object_unref (api->cancellable);
  memset (api->hmac_key, 0, sizeof api->hmac_key);
  g_free (api->url);
  g_free (api);

  error = g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CANCELLED, "the server is stopping");
  for (guint i = 0; i < queued->len; i++)
    flight_answer (queued->pdata[i], NULL, error);
}

static char *
credentials_key (GtAuthApi *api, const char *id, const char *secret, const char *const *prefixes)
{
  g_autoptr (GHmac) hmac = g_hmac_new (G_CHECKSUM_SHA256, api->hmac_key, sizeof api->hmac_key);

  /* NUL separates the fields: none of them contains one. */
  g_hmac_update (hmac, (const guchar *) id, strlen (id) + 1);
  g_hmac_update (hmac, (const guchar *) secret, strlen (secret) + 1);
  for (guint i = 0; prefixes != NULL && prefixes[i] != NULL; i++)
    g_hmac_update (hmac, (const guchar *) prefixes[i], strlen (prefixes[i]) + 1);
  return g_strdup (g_hmac_get_string (hmac));
}

static void
cache_drop (GtAuthApi *api, CacheEntry *c)
{
  g_queue_unlink (&api->cache_order, &c->link);
  g_hash_table_remove (api->cache, c->key);
}

/* The cached entry for key, NULL when none or expired (expired ones go, oldest first). */
static CacheEntry *
cache_lookup (GtAuthApi *api, const char *key, gint64 now)
{
  CacheEntry *c;

  while ((c = g_queue_peek_head (&api->cache_order)) != NULL && c->expiry <= now)
    cache_drop (api, c);
  return g_hash_table_lookup (api->cache, key);
}

static void
cache_store (GtAuthApi *api, const char *key, char **allowed)
{
  CacheEntry *c = g_hash_table_lookup (api->cache, key);

  if (api->cache_us <= 0)
    return;
  if (c != NULL)
    cache_drop (api, c);
  while (api->cache_order.length >= GT_AUTH_API_CACHE_MAX)
    cache_drop (api, g_queue_peek_head (&api->cache_order));
  c = g_new0 (CacheEntry, 1);
  c->key = g_strdup (key);
  c->allowed = g_strdupv (allowed);
  c->expiry = g_get_monotonic_time () + api->cache_us;
  c->link.data = c;
  g_hash_table_insert (api->cache, c->key, c);
  g_queue_push_tail_link (&api->cache_order, &c->link);
}

static void
address_make_ready (GtAuthApi *api, GtAuthApiAddress *a)
{
  if (!a->ready && a->waiting.length > 0 && a->running < api->max_per_address)
    {
      a->ready = TRUE;
      g_queue_push_tail (&api->ready, a);
    }
}

/* Forgets an address with nothing running or waiting. */
static void
address_release (GtAuthApi *api, GtAuthApiAddress *a)
{
  if (a->running > 0 || a->waiting.length > 0)
    return;
  if (a->ready)
    g_queue_remove (&api->ready, a);
  g_hash_table_remove (api->addresses, a->address);
}

static void flight_done_cb (GObject *source, GAsyncResult *result, gpointer user_data);

static void
flight_start (GtAuthApi *api, Flight *f)
{
  gint64 left_ms = (f->deadline - g_get_monotonic_time ()) / 1000;

  g_clear_handle_id (&f->timer_id, g_source_remove);
  f->running = TRUE;
  api->running++;
  f->address->running++;
  gt_auth_api_request_async (api->session, api->url, f->id, f->secret,
                             (const char *const *) f->prefixes,
                             api->timeout_ms > 0 ? (guint) CLAMP (left_ms, 1, G_MAXUINT) : 0,
                             api->cancellable, flight_done_cb, f);
}

/* Starts waiting questions while there is room, one address after the other, so that an
 * address with many questions does not keep a new one waiting behind all of them. */
static void
api_pump (GtAuthApi *api)
{
  while (api->running < api->max_requests && api->ready.length > 0)
    {
      GtAuthApiAddress *a = g_queue_pop_head (&api->ready);

      a->ready = FALSE;
      flight_start (api, g_queue_pop_head (&a->waiting));
      address_make_ready (api, a);
    }
}

static void
flight_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Flight *f = user_data;
  GtAuthApi *api = f->api;
  g_autoptr (GError) error = NULL;
  g_auto (GStrv) allowed = gt_auth_api_request_finish (result, &error);

  if (api != NULL)
    {
      /* Yes and no are reused for a moment; failures of the API itself are not. */
      if (allowed != NULL || g_error_matches (error, GT_AUTH_ERROR, GT_AUTH_ERROR_DENIED))
        cache_store (api, f->key, allowed);
      g_hash_table_remove (api->flights, f->key);
      api->running--;
      f->address->running--;
      address_make_ready (api, f->address);
      address_release (api, f->address);
      api_pump (api);
    }
  flight_answer (f, allowed, error);
}

static gboolean
flight_timeout_cb (gpointer user_data)
{
  Flight *f = user_data;
  GtAuthApi *api = f->api;
  g_autoptr (GError) error = NULL;

  f->timer_id = 0;
  g_queue_remove (&f->address->waiting, f);
  if (f->address->ready && f->address->waiting.length == 0)
    {
      g_queue_remove (&api->ready, f->address);
      f->address->ready = FALSE;
    }
  g_hash_table_remove (api->flights, f->key);
  address_release (api, f->address);
  error = g_error_new (GT_AUTH_ERROR, GT_AUTH_ERROR_TIMEOUT,
                       "the auth API did not answer within %u ms", api->timeout_ms);
  flight_answer (f, NULL, error);
  return G_SOURCE_REMOVE;
}

gboolean
gt_auth_api_knows (GtAuthApi *api, const char *id, const char *secret,
                   const char *const *prefixes)
{
  g_autofree char *key = NULL;

  g_return_val_if_fail (api != NULL, FALSE);
  g_return_val_if_fail (id != NULL && secret != NULL, FALSE);

  key = credentials_key (api, id, secret, prefixes);
  return cache_lookup (api, key, g_get_monotonic_time ()) != NULL
         || g_hash_table_contains (api->flights, key);
}

void
gt_auth_api_check_async (GtAuthApi *api, const char *address, const char *id, const char *secret,
                         const char *const *prefixes, GCancellable *cancellable,
                         GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GTask) task = NULL;
  g_autofree char *key = NULL;
  GtAuthApiAddress *a;
  CacheEntry *c;
  Flight *f;

  g_return_if_fail (api != NULL);
  g_return_if_fail (address != NULL && id != NULL && secret != NULL);

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, gt_auth_api_check_async);
  key = credentials_key (api, id, secret, prefixes);
  c = cache_lookup (api, key, g_get_monotonic_time ());
  if (c != NULL && c->allowed != NULL)
    {
      g_task_return_pointer (task, g_strdupv (c->allowed), (GDestroyNotify) g_strfreev);
      return;
    }
  if (c != NULL)
    {
      g_task_return_new_error (task, GT_AUTH_ERROR, GT_AUTH_ERROR_DENIED,
                               "the auth API refused the id or secret");
      return;
    }
  f = g_hash_table_lookup (api->flights, key);
  if (f != NULL)
    {
      g_ptr_array_add (f->waiters, g_steal_pointer (&task));
      return;
    }

  a = g_hash_table_lookup (api->addresses, address);
  if (a == NULL)
    {
      a = g_new0 (GtAuthApiAddress, 1);
      a->address = g_strdup (address);
      g_hash_table_insert (api->addresses, a->address, a);
    }
  f = g_new0 (Flight, 1);
  f->api = api;
  f->key = g_steal_pointer (&key);
  f->id = g_strdup (id);
  f->secret = g_strdup (secret);
  f->prefixes = g_strdupv ((char **) prefixes);
  f->address = a;
  f->waiters = g_ptr_array_new_with_free_func (g_object_unref);
  g_ptr_array_add (f->waiters, g_steal_pointer (&task));
  f->deadline = g_get_monotonic_time () + (gint64) api->timeout_ms * 1000;
  if (api->timeout_ms > 0)
    f->timer_id = g_timeout_add (api->timeout_ms, flight_timeout_cb, f);
  g_hash_table_insert (api->flights, f->key, f);
  g_queue_push_tail (&a->waiting, f);
  address_make_ready (api, a);
  api_pump (api);
}

char **
gt_auth_api_check_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gt_auth_api_check_async, NULL);

  return g_task_propagate_pointer (G_TASK (result), error);
}
