/* gt-remote-api.c: GT's remote API client (remoteAPI): asks an HTTP(S) endpoint for the server. */
#include "config.h"

#include <string.h>
#include <json-glib/json-glib.h>

#include "gt-remote-api.h"

G_DEFINE_QUARK (gt-remote-api-error-quark, gt_remote_api_error)

/* json-glib parses nested values recursively: bound the depth before handing it the bytes. */
#define MAX_DEPTH 32
#define READ_CHUNK 16384

/* Parser ------------------------------------------------------------------------------------ */

/* Bounds the nesting, and refuses a \u0000 escape in a string: json-glib would decode it into a
 * string that ends early ("tcp://a\u0000b" would read as "tcp://a"). */
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
          if (c == '\\' && i + 5 < len && body[i + 1] == 'u'
              && memcmp (body + i + 2, "0000", 4) == 0)
            return FALSE;
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
bad_answer (GError **error, const char *what)
{
  g_set_error (error, GT_REMOTE_API_ERROR, GT_REMOTE_API_ERROR_BAD_RESPONSE,
               "bad remote API answer: %s", what);
  return FALSE;
}

/* An address as the answer may carry it: a printable UTF-8 string of bounded length. */
static gboolean
address_ok (const char *text)
{
  gsize len = strlen (text);

  if (len == 0 || len > GT_REMOTE_API_MAX_ADDRESS)
    return FALSE;
  /* json-glib turns escapes such as \200 into raw bytes after the body was checked. */
  if (!g_utf8_validate (text, len, NULL))
    return FALSE;
  for (const char *p = text; *p != '\0'; p = g_utf8_next_char (p))
    if (!g_unichar_isprint (g_utf8_get_char (p)) || g_unichar_isspace (g_utf8_get_char (p)))
      return FALSE;
  return TRUE;
}

gboolean
gt_remote_api_parse_answer (const char *body, gsize len, char **server_out, char **stun_out,
                            GError **error)
{
  g_autoptr (JsonParser) parser = NULL;
  g_autofree char *copy = NULL;
  JsonNode *root, *server, *stun;
  JsonObject *obj;

  g_return_val_if_fail (body != NULL || len == 0, FALSE);
  g_return_val_if_fail (server_out != NULL, FALSE);

  *server_out = NULL;
  if (stun_out != NULL)
    *stun_out = NULL;
  if (len > GT_REMOTE_API_MAX_BODY)
    return bad_answer (error, "body larger than 64 KiB");
  /* Embedded NULs fail validation too. */
  if (!g_utf8_validate_len (body, len, NULL))
    return bad_answer (error, "body is not UTF-8");
  if (!depth_ok (body, len))
    return bad_answer (error, "JSON nested too deeply or a NUL in a string");

  /* json-glib wants a terminated buffer. */
  copy = g_malloc (len + 1);
  if (len > 0)
    memcpy (copy, body, len);
  copy[len] = '\0';
  parser = json_parser_new_immutable ();
  if (!json_parser_load_from_data (parser, copy, len, NULL))
    return bad_answer (error, "not JSON");
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    return bad_answer (error, "not a JSON object");
  obj = json_node_get_object (root);

  server = json_object_get_member (obj, "serverAddress");
  if (server == NULL || !JSON_NODE_HOLDS_VALUE (server)
      || json_node_get_value_type (server) != G_TYPE_STRING)
    return bad_answer (error, "\"serverAddress\" is missing or not a string");
  if (!address_ok (json_node_get_string (server)))
    return bad_answer (error, "\"serverAddress\" is empty, too long or not printable");
  stun = json_object_get_member (obj, "stunAddress");
  if (stun != NULL && !JSON_NODE_HOLDS_NULL (stun))
    {
      if (!JSON_NODE_HOLDS_VALUE (stun) || json_node_get_value_type (stun) != G_TYPE_STRING)
        return bad_answer (error, "\"stunAddress\" is not a string");
      if (!address_ok (json_node_get_string (stun)))
        return bad_answer (error, "\"stunAddress\" is empty, too long or not printable");
      if (stun_out != NULL)
        *stun_out = g_strdup (json_node_get_string (stun));
    }
  *server_out = g_strdup (json_node_get_string (server));
  return TRUE;
}

/* Request ----------------------------------------------------------------------------------- */

typedef struct
{
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

/* Ends the request with an error: stops the timer, then reports. Takes the task reference. */
static void
finish_error (GTask *task, GError *error)
{
  Request *req = g_task_get_task_data (task);

  if (req->timer != NULL)
    g_source_destroy (req->timer);
  if (req->timed_out)
    {
      g_task_return_new_error (task, GT_REMOTE_API_ERROR, GT_REMOTE_API_ERROR_TIMEOUT,
                               "the remote API did not answer within %u ms", req->timeout_ms);
      g_error_free (error);
    }
  else
    {
      if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED)
          && error->domain != GT_REMOTE_API_ERROR)
        g_prefix_error (&error, "remote API request failed: ");
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
  char *server = NULL;

  bytes = g_input_stream_read_bytes_finish (G_INPUT_STREAM (source), res, &error);
  if (bytes == NULL)
    {
      finish_error (task, error);
      return;
    }
  if (g_bytes_get_size (bytes) > 0)
    {
      g_byte_array_append (req->body, g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes));
      if (req->body->len > GT_REMOTE_API_MAX_BODY)
        {
          finish_error (task, g_error_new_literal (GT_REMOTE_API_ERROR,
                                                   GT_REMOTE_API_ERROR_BAD_RESPONSE,
                                                   "bad remote API answer: body larger than "
                                                   "64 KiB"));
          return;
        }
      g_input_stream_read_bytes_async (req->stream, READ_CHUNK, G_PRIORITY_DEFAULT,
                                       req->cancellable, read_cb, task);
      return;
    }
  if (!gt_remote_api_parse_answer ((const char *) req->body->data, req->body->len, &server, NULL,
                                   &error))
    {
      finish_error (task, error);
      return;
    }
  if (req->timer != NULL)
    g_source_destroy (req->timer);
  g_task_return_pointer (task, server, g_free);
  g_object_unref (task);
}

static void
send_cb (GObject *source, GAsyncResult *res, gpointer user_data)
{
  GTask *task = user_data;
  Request *req = g_task_get_task_data (task);
  GError *error = NULL;
  guint status;

  req->stream = soup_session_send_finish (SOUP_SESSION (source), res, &error);
  if (req->stream == NULL)
    {
      finish_error (task, error);
      return;
    }
  status = soup_message_get_status (req->msg);
  if (status != SOUP_STATUS_OK)
    {
      finish_error (task, g_error_new (GT_REMOTE_API_ERROR, GT_REMOTE_API_ERROR_HTTP,
                                       "the remote API answered HTTP %u", status));
      return;
    }
  /* A declared length over the bound is refused before reading any of it. */
  if (soup_message_headers_get_content_length (soup_message_get_response_headers (req->msg))
      > GT_REMOTE_API_MAX_BODY)
    {
      finish_error (task, g_error_new_literal (GT_REMOTE_API_ERROR,
                                               GT_REMOTE_API_ERROR_BAD_RESPONSE,
                                               "bad remote API answer: body larger than 64 KiB"));
      return;
    }
  req->body = g_byte_array_new ();
  g_input_stream_read_bytes_async (req->stream, READ_CHUNK, G_PRIORITY_DEFAULT, req->cancellable,
                                   read_cb, task);
}

void
gt_remote_api_query_async (SoupSession *session, const char *url, const char *id,
                           guint timeout_ms, GCancellable *cancellable,
                           GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GUri) base = NULL;
  g_autoptr (GUri) full = NULL;
  g_autoptr (GString) query = NULL;
  g_autofree char *escaped = NULL;
  g_autofree char *request_id = NULL;
  GTask *task;
  Request *req;

  g_return_if_fail (SOUP_IS_SESSION (session));
  g_return_if_fail (url != NULL);
  g_return_if_fail (id != NULL);

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, gt_remote_api_query_async);
  /* Errors are mapped here (timeout vs cancel), not by GTask. */
  g_task_set_check_cancellable (task, FALSE);
  req = g_new0 (Request, 1);
  req->cancellable = g_cancellable_new ();
  req->timeout_ms = timeout_ms;
  g_task_set_task_data (task, req, (GDestroyNotify) request_free);

  /* network_client_id is added to whatever query the URL already has. */
  base = g_uri_parse (url, SOUP_HTTP_URI_FLAGS, NULL);
  if (base != NULL)
    {
      escaped = g_uri_escape_string (id, NULL, FALSE);
      query = g_string_new (g_uri_get_query (base));
      g_string_append_printf (query, "%snetwork_client_id=%s", query->len > 0 ? "&" : "",
                              escaped);
      full = soup_uri_copy (base, SOUP_URI_QUERY, query->str, SOUP_URI_NONE);
      req->msg = soup_message_new_from_uri (SOUP_METHOD_GET, full);
    }
  if (req->msg == NULL)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "the remote API address is not a valid http(s) URL");
      g_object_unref (task);
      return;
    }
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

char *
gt_remote_api_query_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gt_remote_api_query_async,
                        NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}
