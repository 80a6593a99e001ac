/* gt-auth-api.c: GT's external auth API client (authAPI): asks an HTTP(S) endpoint about an id. */
#include "config.h"

#include <string.h>
#include <json-glib/json-glib.h>

#include "gt-auth-api.h"

G_DEFINE_QUARK (gt-auth-error-quark, gt_auth_error)

/* json-glib parses nested values recursively: bound the depth before handing it the bytes. */
#define MAX_DEPTH 32
#define READ_CHUNK 16384

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
          if (*token != '\0')
            g_ptr_array_add (tokens, g_strdup (token));
        }
    }
  g_ptr_array_add (tokens, NULL);
  *prefixes_out = (char **) g_ptr_array_free (g_steal_pointer (&tokens), FALSE);
  return TRUE;
}

/* Request ----------------------------------------------------------------------------------- */

typedef struct
{
  SoupSession *session;
  SoupMessage *msg;
  GCancellable *cancellable; /* ours: fires on timeout or when the caller cancels */
  GCancellable *caller;
  gulong caller_handler;
  GSource *timer;
  guint timeout_ms;
  gboolean timed_out;
  GInputStream *stream;
  GByteArray *body;
} Request;

static void
request_free (Request *req)
{
  if (req->timer != NULL)
    {
      g_source_destroy (req->timer);
      g_source_unref (req->timer);
    }
  if (req->caller != NULL)
    {
      g_cancellable_disconnect (req->caller, req->caller_handler);
      g_object_unref (req->caller);
    }
  g_clear_object (&req->stream);
  g_clear_object (&req->msg);
  g_clear_object (&req->session);
  g_clear_object (&req->cancellable);
  g_clear_pointer (&req->body, g_byte_array_unref);
  g_free (req);
}

static void
caller_cancelled_cb (GCancellable *caller, gpointer user_data)
{
  g_cancellable_cancel (G_CANCELLABLE (user_data));
}

static gboolean
timeout_cb (gpointer user_data)
{
  GTask *task = user_data;
  Request *req = g_task_get_task_data (task);

  req->timed_out = TRUE;
  g_cancellable_cancel (req->cancellable);
  return G_SOURCE_REMOVE;
}

/* Ends the request: stops the timer, then reports. Takes the task reference. */
static void
finish_error (GTask *task, GError *error)
{
  Request *req = g_task_get_task_data (task);

  if (req->timer != NULL)
    g_source_destroy (req->timer);
  if (req->timed_out)
    {
      g_task_return_new_error (task, GT_AUTH_ERROR, GT_AUTH_ERROR_TIMEOUT,
                               "the auth API did not answer within %u ms", req->timeout_ms);
      g_error_free (error);
    }
  else if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED)
           || error->domain == GT_AUTH_ERROR)
    {
      g_task_return_error (task, error);
    }
  else
    {
      /* Transport errors keep their domain and code; the message names no secret (the
       * request body is never part of it). */
      g_prefix_error (&error, "auth API request failed: ");
      g_task_return_error (task, error);
    }
  g_object_unref (task);
}

static void
read_cb (GObject *source, GAsyncResult *res, gpointer user_data)
{
  GTask *task = user_data;
  Request *req = g_task_get_task_data (task);
  g_autoptr (GBytes) bytes = NULL;
  GError *error = NULL;
  char **prefixes = NULL;

  bytes = g_input_stream_read_bytes_finish (G_INPUT_STREAM (source), res, &error);
  if (bytes == NULL)
    {
      finish_error (task, error);
      return;
    }
  if (g_bytes_get_size (bytes) > 0)
    {
      g_byte_array_append (req->body, g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes));
      if (req->body->len > GT_AUTH_API_MAX_BODY)
        {
          finish_error (task, g_error_new_literal (GT_AUTH_ERROR, GT_AUTH_ERROR_BAD_RESPONSE,
                                                   "bad auth API response: body larger than "
                                                   "64 KiB"));
          return;
        }
      g_input_stream_read_bytes_async (req->stream, READ_CHUNK, G_PRIORITY_DEFAULT,
                                       req->cancellable, read_cb, task);
      return;
    }

  if (!gt_auth_api_parse_response ((const char *) req->body->data, req->body->len, &prefixes,
                                   &error))
    {
      finish_error (task, error);
      return;
    }
  if (req->timer != NULL)
    g_source_destroy (req->timer);
  g_task_return_pointer (task, prefixes, (GDestroyNotify) g_strfreev);
  g_object_unref (task);
}

static void
send_cb (GObject *source, GAsyncResult *res, gpointer user_data)
{
  GTask *task = user_data;
  Request *req = g_task_get_task_data (task);
  GError *error = NULL;
  guint status;
  goffset length;

  req->stream = soup_session_send_finish (SOUP_SESSION (source), res, &error);
  if (req->stream == NULL)
    {
      finish_error (task, error);
      return;
    }
  status = soup_message_get_status (req->msg);
  if (status != SOUP_STATUS_OK)
    {
      finish_error (task, g_error_new (GT_AUTH_ERROR, GT_AUTH_ERROR_HTTP,
                                       "the auth API answered HTTP %u", status));
      return;
    }
  /* A declared length over the bound is refused before reading any of it. */
  length = soup_message_headers_get_content_length (soup_message_get_response_headers (req->msg));
  if (length > GT_AUTH_API_MAX_BODY)
    {
      finish_error (task, g_error_new_literal (GT_AUTH_ERROR, GT_AUTH_ERROR_BAD_RESPONSE,
                                               "bad auth API response: body larger than 64 KiB"));
      return;
    }
  req->body = g_byte_array_new ();
  g_input_stream_read_bytes_async (req->stream, READ_CHUNK, G_PRIORITY_DEFAULT, req->cancellable,
                                   read_cb, task);
}

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

void
gt_auth_api_request_async (SoupSession *session, const char *url, const char *id,
                           const char *secret, const char *const *prefixes, guint timeout_ms,
                           GCancellable *cancellable, GAsyncReadyCallback callback,
                           gpointer user_data)
{
  GTask *task;
  Request *req;
  g_autoptr (GBytes) body = NULL;
  g_autofree char *request_id = NULL;

  g_return_if_fail (SOUP_IS_SESSION (session));
  g_return_if_fail (url != NULL);
  g_return_if_fail (id != NULL);
  g_return_if_fail (secret != NULL);
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, gt_auth_api_request_async);
  /* Errors are mapped here (timeout vs cancel), not by GTask. */
  g_task_set_check_cancellable (task, FALSE);
  req = g_new0 (Request, 1);
  req->session = g_object_ref (session);
  req->cancellable = g_cancellable_new ();
  req->timeout_ms = timeout_ms;
  g_task_set_task_data (task, req, (GDestroyNotify) request_free);

  req->msg = soup_message_new (SOUP_METHOD_POST, url);
  if (req->msg == NULL)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "the auth API address is not a valid http(s) URL");
      g_object_unref (task);
      return;
    }
  body = build_body (id, secret, prefixes);
  soup_message_set_request_body_from_bytes (req->msg, "application/json", body);
  request_id = g_strdup_printf ("%" G_GINT64_FORMAT, g_get_real_time () / G_USEC_PER_SEC);
  soup_message_headers_replace (soup_message_get_request_headers (req->msg), "Request-Id",
                                request_id);

  if (cancellable != NULL)
    {
      req->caller = g_object_ref (cancellable);
      /* Runs at once if already cancelled: then the send fails with CANCELLED right away. */
      req->caller_handler = g_cancellable_connect (cancellable, G_CALLBACK (caller_cancelled_cb),
                                                   g_object_ref (req->cancellable),
                                                   g_object_unref);
    }
  if (timeout_ms > 0)
    {
      req->timer = g_timeout_source_new (timeout_ms);
      g_task_attach_source (task, req->timer, timeout_cb);
    }
  soup_session_send_async (session, req->msg, G_PRIORITY_DEFAULT, req->cancellable, send_cb,
                           task);
}

char **
gt_auth_api_request_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gt_auth_api_request_async,
                        NULL);

  return g_task_propagate_pointer (G_TASK (result), error);
}
