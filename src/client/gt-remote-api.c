/* gt-remote-api.c: GT's remote API client (remoteAPI): asks an HTTP(S) endpoint for the server. */
#include "config.h"

#include <string.h>
#include <json-glib/json-glib.h>

#include "gt-remote-api.h"
#include "gt-http-fetch.h"

G_DEFINE_QUARK (gt-remote-api-error-quark, gt_remote_api_error)

/* json-glib parses nested values recursively: bound the depth before handing it the bytes. */
#define MAX_DEPTH 32

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

static void
fetch_cb (GObject *source, GAsyncResult *res, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  g_autoptr (GBytes) body = NULL;
  GError *error = NULL;
  char *server = NULL;
  const char *data;
  gsize len;

  body = gt_http_fetch_finish (res, &error);
  if (body == NULL)
    {
      error = gt_http_fetch_error_as (error, GT_REMOTE_API_ERROR, GT_REMOTE_API_ERROR_TIMEOUT,
                                      GT_REMOTE_API_ERROR_HTTP, GT_REMOTE_API_ERROR_BAD_RESPONSE);
      g_task_return_error (task, error);
      return;
    }
  data = g_bytes_get_data (body, &len);
  if (!gt_remote_api_parse_answer (data, len, &server, NULL, &error))
    {
      g_task_return_error (task, error);
      return;
    }
  g_task_return_pointer (task, server, g_free);
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
  g_autoptr (SoupMessage) msg = NULL;
  GTask *task;

  g_return_if_fail (SOUP_IS_SESSION (session));
  g_return_if_fail (url != NULL);
  g_return_if_fail (id != NULL);

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, gt_remote_api_query_async);
  /* Errors are mapped by fetch_cb (timeout vs cancel), not by GTask. */
  g_task_set_check_cancellable (task, FALSE);

  /* network_client_id is added to whatever query the URL already has. */
  base = g_uri_parse (url, SOUP_HTTP_URI_FLAGS, NULL);
  if (base != NULL)
    {
      escaped = g_uri_escape_string (id, NULL, FALSE);
      query = g_string_new (g_uri_get_query (base));
      g_string_append_printf (query, "%snetwork_client_id=%s", query->len > 0 ? "&" : "",
                              escaped);
      full = soup_uri_copy (base, SOUP_URI_QUERY, query->str, SOUP_URI_NONE);
      msg = soup_message_new_from_uri (SOUP_METHOD_GET, full);
    }
  if (msg == NULL)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "the remote API address is not a valid http(s) URL");
      g_object_unref (task);
      return;
    }
  request_id = g_strdup_printf ("%" G_GINT64_FORMAT, g_get_real_time () / G_USEC_PER_SEC);
  soup_message_headers_replace (soup_message_get_request_headers (msg), "Request-Id",
                                request_id);
  gt_http_fetch_async (session, msg, "the remote API", GT_REMOTE_API_MAX_BODY, timeout_ms,
                       cancellable, fetch_cb, task);
}

char *
gt_remote_api_query_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gt_remote_api_query_async,
                        NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}
