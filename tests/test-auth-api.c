/* test-auth-api.c: the authAPI client against an in-test SoupServer, and its response parser.
 * The bounds of the request (status, size, time, cancellation) are gt-http-fetch.c's: covered here. */
#include "config.h"

#include <string.h>
#include <json-glib/json-glib.h>

#include "gt-auth-api.h"

#define SECRET "s3cr3t-never-shown"

typedef struct
{
  GSocketService *service;
  SoupServer *server;
  SoupSession *session;
  char *base;            /* "http://127.0.0.1:PORT" */
  GPtrArray *paused;     /* SoupServerMessage* held by /slow */
  guint n_requests;
  char *last_request_id;
  char *last_body;
  char *last_content_type;
} Fixture;

static void
respond (SoupServerMessage *msg, guint status, const char *body)
{
  soup_server_message_set_status (msg, status, NULL);
  soup_server_message_set_response (msg, "application/json", SOUP_MEMORY_COPY, body,
                                    strlen (body));
}

static void
handler_cb (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
            gpointer user_data)
{
  Fixture *f = user_data;
  SoupMessageHeaders *req_headers = soup_server_message_get_request_headers (msg);
  SoupMessageBody *req_body = soup_server_message_get_request_body (msg);
  g_autoptr (GBytes) flat = soup_message_body_flatten (req_body);

  f->n_requests++;
  g_free (f->last_request_id);
  f->last_request_id = g_strdup (soup_message_headers_get_one (req_headers, "Request-Id"));
  g_free (f->last_content_type);
  f->last_content_type = g_strdup (soup_message_headers_get_content_type (req_headers, NULL));
  g_free (f->last_body);
  f->last_body = g_strndup (g_bytes_get_data (flat, NULL), g_bytes_get_size (flat));

  if (soup_server_message_get_method (msg) != SOUP_METHOD_POST)
    respond (msg, 405, "{}");
  else if (strcmp (path, "/allow") == 0)
    respond (msg, 200, "{\"result\": true, \"appletTokens\": [\"web\", \"api\"]}");
  else if (strcmp (path, "/allow-none") == 0)
    respond (msg, 200, "{\"result\": true}");
  else if (strcmp (path, "/deny") == 0)
    respond (msg, 200, "{\"result\": false, \"appletTokens\": [\"web\"]}");
  else if (strcmp (path, "/500") == 0)
    respond (msg, 500, "{\"result\": true}");
  else if (strcmp (path, "/garbage") == 0)
    respond (msg, 200, "<html>not json");
  else if (strcmp (path, "/slow") == 0)
    {
      /* Never answered during the test. */
      soup_server_message_pause (msg);
      g_ptr_array_add (f->paused, g_object_ref (msg));
    }
  else if (strcmp (path, "/huge") == 0 || strcmp (path, "/huge-chunked") == 0)
    {
      SoupMessageBody *body = soup_server_message_get_response_body (msg);
      g_autofree char *chunk = g_strnfill (64 * 1024, ' ');

      soup_server_message_set_status (msg, 200, NULL);
      if (path[5] == '-')
        soup_message_headers_set_encoding (soup_server_message_get_response_headers (msg),
                                           SOUP_ENCODING_CHUNKED);
      soup_message_body_append (body, SOUP_MEMORY_COPY, "{\"result\": true", 15);
      for (int i = 0; i < 64; i++)
        soup_message_body_append (body, SOUP_MEMORY_COPY, chunk, strlen (chunk));
      soup_message_body_append (body, SOUP_MEMORY_COPY, "}", 1);
      soup_message_body_complete (body);
    }
  else
    respond (msg, 404, "{}");
}

/* Connections go to soup through soup_server_accept_iostream(): libsoup 3.2's own listener
 * leaks each accepted GSocket, which would drown real leaks in the ASan run. */
static gboolean
incoming_cb (GSocketService *service, GSocketConnection *conn, GObject *source, gpointer data)
{
  g_autoptr (GSocketAddress) local = g_socket_connection_get_local_address (conn, NULL);
  g_autoptr (GSocketAddress) remote = g_socket_connection_get_remote_address (conn, NULL);

  soup_server_accept_iostream (SOUP_SERVER (source), G_IO_STREAM (conn), local, remote, NULL);
  return TRUE;
}

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) want = g_inet_socket_address_new (lo, 0);
  g_autoptr (GSocketAddress) bound = NULL;

  f->paused = g_ptr_array_new_with_free_func (g_object_unref);
  f->server = soup_server_new (NULL, NULL);
  soup_server_add_handler (f->server, NULL, handler_cb, f, NULL);
  f->service = g_socket_service_new ();
  g_assert_true (g_socket_listener_add_address (G_SOCKET_LISTENER (f->service), want,
                                                G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP,
                                                G_OBJECT (f->server), &bound, &error));
  g_assert_no_error (error);
  g_signal_connect (f->service, "incoming", G_CALLBACK (incoming_cb), NULL);
  f->base = g_strdup_printf ("http://127.0.0.1:%u",
                             g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound)));
  f->session = soup_session_new ();
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  for (guint i = 0; i < f->paused->len; i++)
    {
      SoupServerMessage *msg = f->paused->pdata[i];

      respond (msg, 503, "{}");
      soup_server_message_unpause (msg);
    }
  g_ptr_array_unref (f->paused);
  soup_session_abort (f->session);
  g_object_unref (f->session);
  g_socket_service_stop (f->service);
  g_socket_listener_close (G_SOCKET_LISTENER (f->service));
  g_object_unref (f->service);
  soup_server_disconnect (f->server);
  g_object_unref (f->server);
  /* Let closed connections finish on both sides. */
  for (int i = 0; i < 10; i++)
    g_main_context_iteration (NULL, FALSE);
  g_free (f->base);
  g_free (f->last_request_id);
  g_free (f->last_body);
  g_free (f->last_content_type);
}

typedef struct
{
  GAsyncResult *result;
} Wait;

static void
done_cb (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Wait *w = user_data;

  g_assert_null (source);
  w->result = g_object_ref (res);
}

static char **
request (Fixture *f, const char *path, const char *const *prefixes, guint timeout_ms,
         GCancellable *cancellable, gint64 *elapsed_us, GError **error)
{
  g_autofree char *url = g_strconcat (f->base, path, NULL);
  Wait w = { NULL };
  gint64 start = g_get_monotonic_time ();
  char **out;

  gt_auth_api_request_async (f->session, url, "alice", SECRET, prefixes, timeout_ms, cancellable,
                             done_cb, &w);
  while (w.result == NULL)
    g_main_context_iteration (NULL, TRUE);
  if (elapsed_us != NULL)
    *elapsed_us = g_get_monotonic_time () - start;
  out = gt_auth_api_request_finish (w.result, error);
  g_object_unref (w.result);
  /* Whatever happened, the secret is not in the message. */
  if (error != NULL && *error != NULL)
    g_assert_null (strstr ((*error)->message, SECRET));
  return out;
}

static void
test_allow (Fixture *f, gconstpointer data)
{
  const char *const prefixes[] = { "web", "api", "admin", NULL };
  const char *const expected[] = { "web", "api", NULL };
  g_autoptr (GError) error = NULL;
  g_auto (GStrv) allowed = NULL;
  g_autoptr (JsonParser) parser = json_parser_new ();
  JsonObject *obj;
  JsonArray *tokens;
  gint64 request_id;

  allowed = request (f, "/allow", prefixes, 5000, NULL, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstrv (allowed, expected);

  /* GT's request: JSON body, Request-Id in unix seconds. */
  g_assert_cmpuint (f->n_requests, ==, 1);
  g_assert_cmpstr (f->last_content_type, ==, "application/json");
  g_assert_nonnull (f->last_request_id);
  request_id = g_ascii_strtoll (f->last_request_id, NULL, 10);
  g_assert_cmpint (ABS (request_id - g_get_real_time () / G_USEC_PER_SEC), <=, 5);
  g_assert_true (json_parser_load_from_data (parser, f->last_body, -1, &error));
  obj = json_node_get_object (json_parser_get_root (parser));
  g_assert_cmpstr (json_object_get_string_member (obj, "networkClientId"), ==, "alice");
  g_assert_cmpstr (json_object_get_string_member (obj, "networkSecretKey"), ==, SECRET);
  tokens = json_object_get_array_member (obj, "appletTokens");
  g_assert_cmpuint (json_array_get_length (tokens), ==, 3);
  g_assert_cmpstr (json_array_get_string_element (tokens, 2), ==, "admin");
}

static void
test_allow_no_tokens (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_auto (GStrv) allowed = NULL;
  g_autoptr (JsonParser) parser = json_parser_new ();
  JsonObject *obj;

  /* No prefixes asked: an empty array is sent; no tokens returned: an empty list. */
  allowed = request (f, "/allow-none", NULL, 5000, NULL, NULL, &error);
  g_assert_no_error (error);
  g_assert_nonnull (allowed);
  g_assert_cmpuint (g_strv_length (allowed), ==, 0);
  g_assert_true (json_parser_load_from_data (parser, f->last_body, -1, &error));
  obj = json_node_get_object (json_parser_get_root (parser));
  g_assert_cmpuint (json_array_get_length (json_object_get_array_member (obj, "appletTokens")),
                    ==, 0);
}

static void
test_deny (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_auto (GStrv) allowed = request (f, "/deny", NULL, 5000, NULL, NULL, &error);

  g_assert_null (allowed);
  g_assert_error (error, GT_AUTH_ERROR, GT_AUTH_ERROR_DENIED);
}

static void
test_http_error (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GError) error2 = NULL;
  g_auto (GStrv) allowed = request (f, "/500", NULL, 5000, NULL, NULL, &error);
  g_auto (GStrv) allowed2 = request (f, "/nowhere", NULL, 5000, NULL, NULL, &error2);

  g_assert_null (allowed);
  g_assert_error (error, GT_AUTH_ERROR, GT_AUTH_ERROR_HTTP);
  g_assert_nonnull (strstr (error->message, "500"));
  g_assert_null (allowed2);
  g_assert_error (error2, GT_AUTH_ERROR, GT_AUTH_ERROR_HTTP);
}

static void
test_timeout (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  gint64 elapsed;
  g_auto (GStrv) allowed = request (f, "/slow", NULL, 300, NULL, &elapsed, &error);

  g_assert_null (allowed);
  g_assert_error (error, GT_AUTH_ERROR, GT_AUTH_ERROR_TIMEOUT);
  g_assert_cmpint (elapsed, >=, 290 * 1000);
  g_assert_cmpint (elapsed, <, 3 * G_USEC_PER_SEC);
  g_assert_cmpuint (f->paused->len, ==, 1);
}

static gboolean
cancel_cb (gpointer user_data)
{
  g_cancellable_cancel (user_data);
  return G_SOURCE_REMOVE;
}

static void
test_cancel (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GError) error2 = NULL;
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autoptr (GCancellable) cancelled = g_cancellable_new ();
  g_auto (GStrv) allowed = NULL;
  g_auto (GStrv) allowed2 = NULL;
  gint64 elapsed;

  g_timeout_add (100, cancel_cb, cancellable);
  allowed = request (f, "/slow", NULL, 10000, cancellable, &elapsed, &error);
  g_assert_null (allowed);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_cmpint (elapsed, <, 3 * G_USEC_PER_SEC);

  g_cancellable_cancel (cancelled);
  allowed2 = request (f, "/allow", NULL, 10000, cancelled, NULL, &error2);
  g_assert_null (allowed2);
  g_assert_error (error2, G_IO_ERROR, G_IO_ERROR_CANCELLED);
}

static void
test_garbage (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_auto (GStrv) allowed = request (f, "/garbage", NULL, 5000, NULL, NULL, &error);

  g_assert_null (allowed);
  g_assert_error (error, GT_AUTH_ERROR, GT_AUTH_ERROR_BAD_RESPONSE);
}

static void
test_huge (Fixture *f, gconstpointer data)
{
  const char *paths[] = { "/huge", "/huge-chunked" };

  for (guint i = 0; i < G_N_ELEMENTS (paths); i++)
    {
      g_autoptr (GError) error = NULL;
      g_auto (GStrv) allowed = request (f, paths[i], NULL, 5000, NULL, NULL, &error);

      g_assert_null (allowed);
      g_assert_error (error, GT_AUTH_ERROR, GT_AUTH_ERROR_BAD_RESPONSE);
      g_assert_nonnull (strstr (error->message, "64 KiB"));
    }
}

static void
test_refused (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocketListener) l = g_socket_listener_new ();
  g_autoptr (GError) error2 = NULL;
  g_auto (GStrv) allowed2 = NULL;
  guint16 port;
  Wait w = { NULL };
  g_autofree char *url = NULL;
  char **allowed;

  /* A port that was just free: nobody listens there. */
  port = g_socket_listener_add_any_inet_port (l, NULL, &error);
  g_assert_no_error (error);
  g_socket_listener_close (l);
  url = g_strdup_printf ("http://127.0.0.1:%u/allow", port);
  gt_auth_api_request_async (f->session, url, "alice", SECRET, NULL, 5000, NULL, done_cb, &w);
  while (w.result == NULL)
    g_main_context_iteration (NULL, TRUE);
  allowed = gt_auth_api_request_finish (w.result, &error);
  g_object_unref (w.result);
  g_assert_null (allowed);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CONNECTION_REFUSED);
  g_assert_null (strstr (error->message, SECRET));

  /* Not a URL at all. */
  w.result = NULL;
  gt_auth_api_request_async (f->session, "::not a url", "alice", SECRET, NULL, 5000, NULL, done_cb,
                             &w);
  while (w.result == NULL)
    g_main_context_iteration (NULL, TRUE);
  allowed2 = gt_auth_api_request_finish (w.result, &error2);
  g_object_unref (w.result);
  g_assert_null (allowed2);
  g_assert_error (error2, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
}

/* Parser-only cases. */

static void
check_parse (const char *body, int code, const char *const *expected)
{
  g_autoptr (GError) error = NULL;
  g_auto (GStrv) out = NULL;
  gboolean ok = gt_auth_api_parse_response (body, strlen (body), &out, &error);

  if (code < 0)
    {
      g_assert_no_error (error);
      g_assert_true (ok);
      g_assert_cmpstrv (out, expected);
    }
  else
    {
      g_assert_false (ok);
      g_assert_null (out);
      g_assert_error (error, GT_AUTH_ERROR, code);
    }
}

static void
test_parse (void)
{
  const char *const none[] = { NULL };
  const char *const ab[] = { "a", "b", NULL };
  g_autoptr (GString) many = g_string_new ("{\"result\":true,\"appletTokens\":[");
  g_autoptr (GString) long_token = g_string_new ("{\"result\":true,\"appletTokens\":[\"");
  g_autoptr (GString) ok_token = NULL;
  g_autoptr (GString) deep = g_string_new (NULL);
  g_autofree char *max_token = g_strnfill (200, 'x');
  const char *const max_tokens[] = { max_token, NULL };

  check_parse ("{\"result\":true,\"appletTokens\":[\"a\",\"b\"]}", -1, ab);
  check_parse ("{\"result\":true,\"appletTokens\":null}", -1, none);
  check_parse ("{\"result\":true,\"appletTokens\":[\"\",\"a\",\"b\"],\"x\":1}", -1, ab);
  check_parse ("{\"appletTokens\":[\"a\"],\"result\":false}", GT_AUTH_ERROR_DENIED, NULL);
  check_parse ("{\"result\":\"true\"}", GT_AUTH_ERROR_BAD_RESPONSE, NULL);
  check_parse ("{\"result\":1}", GT_AUTH_ERROR_BAD_RESPONSE, NULL);
  check_parse ("{}", GT_AUTH_ERROR_BAD_RESPONSE, NULL);
  check_parse ("[true]", GT_AUTH_ERROR_BAD_RESPONSE, NULL);
  check_parse ("", GT_AUTH_ERROR_BAD_RESPONSE, NULL);
  check_parse ("{\"result\":true,\"appletTokens\":\"a\"}", GT_AUTH_ERROR_BAD_RESPONSE, NULL);
  check_parse ("{\"result\":true,\"appletTokens\":[1]}", GT_AUTH_ERROR_BAD_RESPONSE, NULL);
  check_parse ("{\"result\":true,\"appletTokens\":[[\"a\"]]}", GT_AUTH_ERROR_BAD_RESPONSE, NULL);
  check_parse ("{\"result\":true} trailing", GT_AUTH_ERROR_BAD_RESPONSE, NULL);
  check_parse ("{\"result\":tr\xff\xfe}", GT_AUTH_ERROR_BAD_RESPONSE, NULL);
  /* json-glib decodes an octal escape into a byte that is not UTF-8: refused, not passed on. */
  check_parse ("{\"result\":true,\"appletTokens\":[\"caf\\200e9\"]}", GT_AUTH_ERROR_BAD_RESPONSE,
               NULL);

  /* 1000 tokens pass, 1001 do not. */
  for (int i = 0; i < 1000; i++)
    g_string_append_printf (many, "%s\"t%d\"", i ? "," : "", i);
  {
    g_autoptr (GString) ok_many = g_string_new (many->str);
    g_auto (GStrv) out = NULL;
    g_autoptr (GError) error = NULL;

    g_string_append (ok_many, "]}");
    g_assert_true (gt_auth_api_parse_response (ok_many->str, ok_many->len, &out, &error));
    g_assert_cmpuint (g_strv_length (out), ==, 1000);
  }
  g_string_append (many, ",\"t1000\"]}");
  check_parse (many->str, GT_AUTH_ERROR_BAD_RESPONSE, NULL);

  /* 200 bytes pass, 201 do not. */
  ok_token = g_string_new (long_token->str);
  g_string_append_printf (ok_token, "%s\"]}", max_token);
  check_parse (ok_token->str, -1, max_tokens);
  g_string_append_printf (long_token, "%sy\"]}", max_token);
  check_parse (long_token->str, GT_AUTH_ERROR_BAD_RESPONSE, NULL);

  /* Deep nesting is refused before json-glib recurses into it. */
  g_string_append (deep, "{\"result\":true,\"x\":");
  for (int i = 0; i < 20000; i++)
    g_string_append_c (deep, '[');
  for (int i = 0; i < 20000; i++)
    g_string_append_c (deep, ']');
  g_string_append_c (deep, '}');
  check_parse (deep->str, GT_AUTH_ERROR_BAD_RESPONSE, NULL);

  /* Not NUL-terminated, and embedded NULs. */
  {
    const char body[] = "{\"result\":true}XXXX";
    const char nul[] = "{\"result\":true}\0";
    g_auto (GStrv) out = NULL;
    g_autoptr (GError) error = NULL;

    g_assert_true (gt_auth_api_parse_response (body, 15, &out, &error));
    g_assert_no_error (error);
    g_assert_cmpuint (g_strv_length (out), ==, 0);
    g_clear_pointer (&out, g_strfreev);
    g_assert_false (gt_auth_api_parse_response (nul, sizeof nul - 1, &out, &error));
    g_assert_error (error, GT_AUTH_ERROR, GT_AUTH_ERROR_BAD_RESPONSE);
  }
}

/* The fair, cached client ------------------------------------------------------------------ */

typedef struct
{
  guint n_done;
  guint n_allowed;
  guint n_denied;
  guint n_timeout;
  guint n_cancelled;
} Tally;

static void
tally_cb (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Tally *t = user_data;
  g_autoptr (GError) error = NULL;
  g_auto (GStrv) allowed = gt_auth_api_check_finish (res, &error);

  t->n_done++;
  if (allowed != NULL)
    t->n_allowed++;
  else if (g_error_matches (error, GT_AUTH_ERROR, GT_AUTH_ERROR_DENIED))
    t->n_denied++;
  else if (g_error_matches (error, GT_AUTH_ERROR, GT_AUTH_ERROR_TIMEOUT))
    t->n_timeout++;
  else if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    t->n_cancelled++;
  if (error != NULL)
    g_assert_null (strstr (error->message, SECRET));
}

/* Iterates until *counter reaches n (fails after 10 s). */
static void
iterate_until (guint *counter, guint n)
{
  gint64 deadline = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;

  while (*counter < n)
    {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      g_main_context_iteration (NULL, FALSE);
      g_usleep (1000);
    }
}

/* Iterates for ms milliseconds. */
static void
iterate_for (guint ms)
{
  gint64 end = g_get_monotonic_time () + (gint64) ms * 1000;

  while (g_get_monotonic_time () < end)
    {
      g_main_context_iteration (NULL, FALSE);
      g_usleep (1000);
    }
}

static GtAuthApi *
client_new (Fixture *f, const char *path, guint timeout_ms, guint max_requests, guint cache_ms)
{
  g_autofree char *url = g_strconcat (f->base, path, NULL);

  return gt_auth_api_new (url, timeout_ms, max_requests, 2, cache_ms);
}

/* Answers are reused for a moment, keyed so that another secret or other prefixes ask again. */
static void
test_client_cache (Fixture *f, gconstpointer data)
{
  const char *const web[] = { "web", NULL };
  g_autoptr (GtAuthApi) allow = client_new (f, "/allow", 5000, 8, 300);
  g_autoptr (GtAuthApi) deny = client_new (f, "/deny", 5000, 8, 300);
  Tally t = { 0 };

  gt_auth_api_check_async (allow, "10.0.0.1", "alice", SECRET, web, NULL, tally_cb, &t);
  iterate_until (&t.n_done, 1);
  g_assert_cmpuint (f->n_requests, ==, 1);
  g_assert_true (gt_auth_api_knows (allow, "alice", SECRET, web));
  /* From another address too: the answer is about the credentials. */
  gt_auth_api_check_async (allow, "10.0.0.2", "alice", SECRET, web, NULL, tally_cb, &t);
  iterate_until (&t.n_done, 2);
  g_assert_cmpuint (f->n_requests, ==, 1);
  g_assert_cmpuint (t.n_allowed, ==, 2);

  g_assert_false (gt_auth_api_knows (allow, "alice", "changed", web));
  gt_auth_api_check_async (allow, "10.0.0.1", "alice", "changed", web, NULL, tally_cb, &t);
  iterate_until (&t.n_done, 3);
  g_assert_cmpuint (f->n_requests, ==, 2);
  g_assert_false (gt_auth_api_knows (allow, "alice", SECRET, NULL));
  g_assert_false (gt_auth_api_knows (allow, "bob", SECRET, web));

  /* A no is reused as well. */
  for (guint i = 0; i < 3; i++)
    {
      gt_auth_api_check_async (deny, "10.0.0.1", "alice", SECRET, web, NULL, tally_cb, &t);
      iterate_until (&t.n_done, 4 + i);
    }
  g_assert_cmpuint (t.n_denied, ==, 3);
  g_assert_cmpuint (f->n_requests, ==, 3);

  /* Then they expire. */
  iterate_for (400);
  g_assert_false (gt_auth_api_knows (allow, "alice", SECRET, web));
  gt_auth_api_check_async (allow, "10.0.0.1", "alice", SECRET, web, NULL, tally_cb, &t);
  iterate_until (&t.n_done, 7);
  g_assert_cmpuint (f->n_requests, ==, 4);
}

static void
answer_paused (Fixture *f)
{
  for (guint i = 0; i < f->paused->len; i++)
    {
      SoupServerMessage *msg = f->paused->pdata[i];

      respond (msg, 200, "{\"result\": false}");
      soup_server_message_unpause (msg);
    }
  g_ptr_array_set_size (f->paused, 0);
}

static char *
paused_body (Fixture *f, guint i)
{
  SoupMessageBody *body = soup_server_message_get_request_body (f->paused->pdata[i]);
  g_autoptr (GBytes) flat = soup_message_body_flatten (body);

  return g_strndup (g_bytes_get_data (flat, NULL), g_bytes_get_size (flat));
}

/* A burst from one address runs two at a time; the same question is asked once; another address
 * gets its turn at once. */
static void
test_client_fair (Fixture *f, gconstpointer data)
{
  g_autoptr (GtAuthApi) api = client_new (f, "/slow", 10000, 3, 5000);
  g_autofree char *body = NULL;
  Tally t = { 0 };

  for (guint i = 0; i < 100; i++)
    {
      g_autofree char *secret = g_strdup_printf ("wrong-%u", i % 50);

      gt_auth_api_check_async (api, "10.0.0.1", "mallory", secret, NULL, NULL, tally_cb, &t);
    }
  iterate_until (&f->paused->len, 2);
  iterate_for (200);
  g_assert_cmpuint (f->paused->len, ==, 2);

  gt_auth_api_check_async (api, "10.0.0.2", "alice", SECRET, NULL, NULL, tally_cb, &t);
  iterate_until (&f->paused->len, 3);
  body = paused_body (f, 2);
  g_assert_nonnull (strstr (body, "\"alice\""));
  iterate_for (100);
  g_assert_cmpuint (f->paused->len, ==, 3);

  /* Answering lets the rest through: 50 distinct questions and alice's, 101 answers. */
  for (gint64 end = g_get_monotonic_time () + 20 * G_USEC_PER_SEC; t.n_done < 101;)
    {
      g_assert_cmpint (g_get_monotonic_time (), <, end);
      answer_paused (f);
      g_main_context_iteration (NULL, FALSE);
      g_usleep (1000);
    }
  g_assert_cmpuint (t.n_denied, ==, 101);
  g_assert_cmpuint (f->n_requests, ==, 51);
}

/* Waiting in the queue counts toward the timeout; freeing the client answers everyone. */
static void
test_client_queue_timeout (Fixture *f, gconstpointer data)
{
  GtAuthApi *api = client_new (f, "/slow", 300, 1, 5000);
  Tally t = { 0 };

  gt_auth_api_check_async (api, "10.0.0.1", "alice", SECRET, NULL, NULL, tally_cb, &t);
  gt_auth_api_check_async (api, "10.0.0.2", "bob", SECRET, NULL, NULL, tally_cb, &t);
  iterate_until (&t.n_done, 2);
  g_assert_cmpuint (t.n_timeout, ==, 2);
  g_assert_cmpuint (f->n_requests, ==, 1);

  gt_auth_api_check_async (api, "10.0.0.1", "carol", SECRET, NULL, NULL, tally_cb, &t);
  gt_auth_api_check_async (api, "10.0.0.2", "dave", SECRET, NULL, NULL, tally_cb, &t);
  iterate_until (&f->n_requests, 2);
  gt_auth_api_free (api);
  iterate_until (&t.n_done, 4);
  g_assert_cmpuint (t.n_cancelled, ==, 2);
}

static void
answer_one (Fixture *f, const char *needle)
{
  for (guint i = 0; i < f->paused->len; i++)
    {
      g_autofree char *b = paused_body (f, i);

      if (strstr (b, needle) != NULL)
        {
          SoupServerMessage *msg = f->paused->pdata[i];

          respond (msg, 200, "{\"result\": false}");
          soup_server_message_unpause (msg);
          g_ptr_array_remove_index (f->paused, i);
          return;
        }
    }
  g_assert_not_reached ();
}

/* A queued question that times out while its address still has one running must leave the
 * ready queue: the next free slot would otherwise start an empty queue (a crash). */
static void
test_client_timeout_while_ready (Fixture *f, gconstpointer data)
{
  g_autoptr (GtAuthApi) api = client_new (f, "/slow", 400, 3, 5000);
  Tally t = { 0 };

  gt_auth_api_check_async (api, "10.0.0.2", "bob1", SECRET, NULL, NULL, tally_cb, &t);
  gt_auth_api_check_async (api, "10.0.0.1", "amy1", SECRET, NULL, NULL, tally_cb, &t);
  gt_auth_api_check_async (api, "10.0.0.1", "amy2", SECRET, NULL, NULL, tally_cb, &t);
  gt_auth_api_check_async (api, "10.0.0.2", "bob2", SECRET, NULL, NULL, tally_cb, &t);
  gt_auth_api_check_async (api, "10.0.0.1", "amy3", SECRET, NULL, NULL, tally_cb, &t);
  iterate_until (&f->paused->len, 3);
  answer_one (f, "amy1");
  iterate_until (&t.n_done, 1);
  iterate_until (&f->paused->len, 3); /* bob2 started */
  /* A busy main loop: every timer is due in one iteration. */
  g_usleep (600 * 1000);
  iterate_until (&t.n_done, 5);
  /* amy2 and bob1 ran past their deadline, amy3 timed out waiting; bob2 is still answered. */
  g_assert_cmpuint (t.n_timeout, >=, 1);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
#define ADD(path, fn) \
  g_test_add ("/gt/auth-api/" path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  ADD ("allow", test_allow);
  ADD ("allow-no-tokens", test_allow_no_tokens);
  ADD ("deny", test_deny);
  ADD ("http-error", test_http_error);
  ADD ("timeout", test_timeout);
  ADD ("cancel", test_cancel);
  ADD ("garbage", test_garbage);
  ADD ("huge", test_huge);
  ADD ("refused", test_refused);
  ADD ("client-cache", test_client_cache);
  ADD ("client-fair", test_client_fair);
  ADD ("client-queue-timeout", test_client_queue_timeout);
  ADD ("client-timeout-while-ready", test_client_timeout_while_ready);
#undef ADD
  g_test_add_func ("/gt/auth-api/parse", test_parse);
  return g_test_run ();
}
