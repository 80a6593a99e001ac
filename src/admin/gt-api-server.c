/* gt-api-server.c: the server's internal HTTP(S) API (apiAddr): /status self-test, /metrics. */
#include "config.h"

#include <string.h>
#include <sys/random.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include <glib/gstdio.h>

#include "gt-api-server.h"
#include "gt-certificate.h"
#include "gt-client.h"
#include "gt-config.h"
#include "gt-metrics.h"

#define STATUS_CACHE_US (15 * G_USEC_PER_SEC)
#define DEFAULT_READY_MS 10000
#define DEFAULT_REQUEST_MS 10000
#define MAX_RESPONSE (64 * 1024)
/* Consecutive tunnel failures after which the self-test gives up before its timeout. */
#define MAX_TUNNEL_FAILURES 3

typedef struct _SelfTest SelfTest;

struct _GtApiServer
{
  GObject parent_instance;

  GtServer *server; /* weak pointer */
  /* Connections are accepted here and handed to soup with soup_server_accept_iostream():
   * libsoup 3.2's own listener leaks every accepted GSocket. */
  GSocketService *service;
  SoupServer *soup;
  GTlsCertificate *cert; /* HTTPS when set */
  GPtrArray *handshakes; /* Handshake*, TLS handshakes in progress */
  GSocketService *internal_service; /* plain HTTP on loopback for the self-test when HTTPS */
  SoupServer *internal;
  char *address;        /* as bound */
  char *target_host;    /* where the self-test client dials /statusResp */
  guint16 target_port;

  GtApiMetricsFunc metrics_func;
  gpointer metrics_data;
  GDestroyNotify metrics_destroy;

  SelfTest *running;
  GPtrArray *waiters; /* SoupServerMessage*, paused until the running self-test ends */
  char *cached_body;  /* last successful /status body */
  gint64 cached_at_us;
  guint n_self_tests;
  guint ready_ms;
  guint request_ms;
};

G_DEFINE_FINAL_TYPE (GtApiServer, gt_api_server, G_TYPE_OBJECT)

static void self_test_finish (SelfTest *t, const char *body, const char *reason);

/* Responses --------------------------------------------------------------------------------- */

static char *
status_json (const char *status, const char *reason)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonNode) root = NULL;

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "status");
  json_builder_add_string_value (b, status);
  json_builder_set_member_name (b, "version");
  json_builder_add_string_value (b, PACKAGE_VERSION);
  if (reason != NULL)
    {
      json_builder_set_member_name (b, "error");
      json_builder_add_string_value (b, reason);
    }
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  return json_to_string (root, FALSE);
}

static void
respond (SoupServerMessage *msg, guint status, const char *content_type, char *body)
{
  soup_server_message_set_status (msg, status, NULL);
  soup_server_message_set_response (msg, content_type, SOUP_MEMORY_TAKE, body, strlen (body));
}

static void
respond_json (SoupServerMessage *msg, guint status, const char *json)
{
  respond (msg, status, "application/json", g_strdup (json));
}

/* Self-test --------------------------------------------------------------------------------- */

struct _SelfTest
{
  GtApiServer *api;
  GtServer *server; /* strong for the duration of the run */
  char *id;
  char *secret;
  GtClient *client;
  guint timer_id;
  guint idle_id;
  guint n_failures;
  char *last_failure;
  gboolean requesting;
  GCancellable *cancellable;
  GSocketConnection *conn;
  GByteArray *response;
  char *request;
  GSocketAddress *listen_addr;
};

static char *
random_hex (void)
{
  guint8 raw[16];
  GString *hex;

  if (getrandom (raw, sizeof raw, 0) != (ssize_t) sizeof raw)
    {
      /* Not expected; GLib's generator still makes a unique, unguessable-enough id. */
      for (guint i = 0; i < sizeof raw; i++)
        raw[i] = (guint8) g_random_int_range (0, 256);
    }
  hex = g_string_sized_new (2 * sizeof raw);
  for (guint i = 0; i < sizeof raw; i++)
    g_string_append_printf (hex, "%02x", raw[i]);
  return g_string_free (hex, FALSE);
}

/* 0.0.0.0 / :: are where a server listens, not where one connects: use loopback. */
static GInetAddress *
connectable_address (GInetAddress *addr)
{
  if (g_inet_address_get_is_any (addr))
    return g_inet_address_new_loopback (g_inet_address_get_family (addr));
  return g_object_ref (addr);
}

static GSocketAddress *
parse_listen_address (const char *text)
{
  g_autoptr (GSocketConnectable) parsed = NULL;
  g_autoptr (GInetAddress) inet = NULL;
  g_autoptr (GInetAddress) target = NULL;
  const char *host;

  parsed = g_network_address_parse (text, 0, NULL);
  if (parsed == NULL)
    return NULL;
  host = g_network_address_get_hostname (G_NETWORK_ADDRESS (parsed));
  inet = g_inet_address_new_from_string (host);
  if (inet == NULL || g_network_address_get_port (G_NETWORK_ADDRESS (parsed)) == 0)
    return NULL;
  target = connectable_address (inet);
  return g_inet_socket_address_new (target,
                                    g_network_address_get_port (G_NETWORK_ADDRESS (parsed)));
}

static void
self_test_free (SelfTest *t)
{
  g_clear_handle_id (&t->timer_id, g_source_remove);
  g_clear_handle_id (&t->idle_id, g_source_remove);
  if (t->cancellable != NULL)
    g_cancellable_cancel (t->cancellable);
  if (t->client != NULL)
    {
      g_signal_handlers_disconnect_by_data (t->client, t);
      gt_client_stop (t->client);
      g_clear_object (&t->client);
    }
  if (t->server != NULL)
    {
      gt_server_remove_ephemeral_user (t->server, t->id);
      g_clear_object (&t->server);
    }
  /* A pending read holds its own reference; it ends with CANCELLED and the socket closes. */
  g_clear_object (&t->conn);
  g_clear_object (&t->cancellable);
  g_clear_object (&t->listen_addr);
  g_clear_pointer (&t->response, g_byte_array_unref);
  g_free (t->request);
  g_free (t->id);
  if (t->secret != NULL)
    memset (t->secret, 0, strlen (t->secret));
  g_free (t->secret);
  g_free (t->last_failure);
  g_free (t);
}

/* Checks the relayed answer: an HTTP 200 whose body is statusResp's JSON with status "ok".
 * Returns the body, or NULL with *reason set. */
static char *
check_response (SelfTest *t, char **reason)
{
  const char *data = (const char *) t->response->data;
  gsize len = t->response->len;
  const char *end;
  gsize header_len;
  g_autoptr (SoupMessageHeaders) headers = NULL;
  guint status = 0;
  goffset content_length;
  g_autofree char *body = NULL;
  g_autoptr (JsonParser) parser = NULL;
  JsonNode *root;
  JsonObject *obj;

  end = g_strstr_len (data, len, "\r\n\r\n");
  if (end == NULL)
    {
      *reason = g_strdup (len == 0 ? "no answer through the tunnel"
                                   : "incomplete HTTP answer through the tunnel");
      return NULL;
    }
  header_len = end - data + 4;
  headers = soup_message_headers_new (SOUP_MESSAGE_HEADERS_RESPONSE);
  if (!soup_headers_parse_response (data, header_len, headers, NULL, &status, NULL))
    {
      *reason = g_strdup ("malformed HTTP answer through the tunnel");
      return NULL;
    }
  if (status != SOUP_STATUS_OK)
    {
      *reason = g_strdup_printf ("HTTP %u through the tunnel", status);
      return NULL;
    }
  content_length = soup_message_headers_get_content_length (headers);
  if (soup_message_headers_get_encoding (headers) == SOUP_ENCODING_CONTENT_LENGTH)
    {
      if ((gsize) content_length > len - header_len)
        {
          *reason = g_strdup ("truncated answer through the tunnel");
          return NULL;
        }
      body = g_strndup (data + header_len, content_length);
    }
  else
    {
      body = g_strndup (data + header_len, len - header_len);
    }

  parser = json_parser_new ();
  if (!json_parser_load_from_data (parser, body, -1, NULL)
      || (root = json_parser_get_root (parser)) == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    {
      *reason = g_strdup ("the answer through the tunnel is not the status JSON");
      return NULL;
    }
  obj = json_node_get_object (root);
  if (g_strcmp0 (json_object_get_string_member_with_default (obj, "status", NULL), "ok") != 0)
    {
      *reason = g_strdup ("the answer through the tunnel is not status ok");
      return NULL;
    }
  return g_steal_pointer (&body);
}

static void
read_cb (GObject *source, GAsyncResult *res, gpointer user_data)
{
  SelfTest *t = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) bytes = NULL;
  g_autofree char *body = NULL;
  g_autofree char *reason = NULL;

  bytes = g_input_stream_read_bytes_finish (G_INPUT_STREAM (source), res, &error);
  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return; /* t is gone or going: whoever cancelled finishes it */
  if (bytes == NULL)
    {
      g_autofree char *msg = g_strdup_printf ("reading the answer failed: %s", error->message);
      self_test_finish (t, NULL, msg);
      return;
    }
  if (g_bytes_get_size (bytes) > 0)
    {
      g_byte_array_append (t->response, g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes));
      if (t->response->len > MAX_RESPONSE)
        {
          self_test_finish (t, NULL, "the answer through the tunnel is too big");
          return;
        }
      g_input_stream_read_bytes_async (g_io_stream_get_input_stream (G_IO_STREAM (t->conn)),
                                       16384, G_PRIORITY_DEFAULT, t->cancellable, read_cb, t);
      return;
    }
  body = check_response (t, &reason);
  self_test_finish (t, body, reason);
}

static void
write_cb (GObject *source, GAsyncResult *res, gpointer user_data)
{
  SelfTest *t = user_data;
  g_autoptr (GError) error = NULL;

  if (!g_output_stream_write_all_finish (G_OUTPUT_STREAM (source), res, NULL, &error))
    {
      g_autofree char *msg = NULL;

      if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        return;
      msg = g_strdup_printf ("sending the request failed: %s", error->message);
      self_test_finish (t, NULL, msg);
      return;
    }
  t->response = g_byte_array_new ();
  g_input_stream_read_bytes_async (g_io_stream_get_input_stream (G_IO_STREAM (t->conn)), 16384,
                                   G_PRIORITY_DEFAULT, t->cancellable, read_cb, t);
}

static void
connect_cb (GObject *source, GAsyncResult *res, gpointer user_data)
{
  SelfTest *t = user_data;
  g_autoptr (GError) error = NULL;
  GSocketConnection *conn;

  conn = g_socket_client_connect_finish (G_SOCKET_CLIENT (source), res, &error);
  if (conn == NULL)
    {
      g_autofree char *msg = NULL;

      if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        return;
      msg = g_strdup_printf ("cannot connect to the server's listener: %s", error->message);
      self_test_finish (t, NULL, msg);
      return;
    }
  t->conn = conn;
  {
    /* With httpMUXHeader the server routes by that header (as GT's self-test does too). */
    const char *mux = t->server ? gt_server_get_config (t->server)->http_mux_header : NULL;
    g_autofree char *mux_line = mux ? g_strdup_printf ("%s: %s\r\n", mux, t->id) : g_strdup ("");

    t->request = g_strdup_printf ("GET /statusResp HTTP/1.1\r\n"
                                  "Host: %s.example.com\r\n"
                                  "%s"
                                  "User-Agent: gt-self-test/" PACKAGE_VERSION "\r\n"
                                  "Connection: close\r\n"
                                  "\r\n",
                                  t->id, mux_line);
  }
  g_output_stream_write_all_async (g_io_stream_get_output_stream (G_IO_STREAM (conn)), t->request,
                                   strlen (t->request), G_PRIORITY_DEFAULT, t->cancellable,
                                   write_cb, t);
}

static gboolean
request_timeout_cb (gpointer user_data)
{
  SelfTest *t = user_data;

  t->timer_id = 0;
  self_test_finish (t, NULL, "no answer through the tunnel in time");
  return G_SOURCE_REMOVE;
}

static void
self_test_request (SelfTest *t)
{
  g_autoptr (GSocketClient) sc = g_socket_client_new ();

  t->requesting = TRUE;
  g_clear_handle_id (&t->timer_id, g_source_remove);
  t->timer_id = g_timeout_add (t->api->request_ms, request_timeout_cb, t);
  g_socket_client_connect_async (sc, G_SOCKET_CONNECTABLE (t->listen_addr), t->cancellable,
                                 connect_cb, t);
}

static void
n_ready_cb (GObject *object, GParamSpec *pspec, gpointer user_data)
{
  SelfTest *t = user_data;

  if (!t->requesting && gt_client_get_n_ready (t->client) > 0)
    self_test_request (t);
}

static gboolean
give_up_cb (gpointer user_data)
{
  SelfTest *t = user_data;
  g_autofree char *msg = NULL;

  t->idle_id = 0;
  msg = g_strdup_printf ("the self-test client cannot connect: %s", t->last_failure);
  self_test_finish (t, NULL, msg);
  return G_SOURCE_REMOVE;
}

static void
tunnel_failed_cb (GtClient *client, const char *message, gpointer user_data)
{
  SelfTest *t = user_data;

  g_free (t->last_failure);
  t->last_failure = g_strdup (message != NULL ? message : "unknown error");
  /* Not from inside the client's own signal: stopping it there would pull the rug. */
  if (++t->n_failures >= MAX_TUNNEL_FAILURES && !t->requesting && t->idle_id == 0)
    t->idle_id = g_idle_add (give_up_cb, t);
}

static gboolean
ready_timeout_cb (gpointer user_data)
{
  SelfTest *t = user_data;
  g_autofree char *msg = NULL;

  t->timer_id = 0;
  if (t->last_failure != NULL)
    msg = g_strdup_printf ("the self-test client was not ready in time: %s", t->last_failure);
  else
    msg = g_strdup ("the self-test client was not ready in time");
  self_test_finish (t, NULL, msg);
  return G_SOURCE_REMOVE;
}

static GtClientConfig *
self_test_config (SelfTest *t, GError **error)
{
  g_autoptr (GtClientConfig) config = gt_client_config_new ();
  GtApiServer *api = t->api;
  GtRemote *remote = g_new0 (GtRemote, 1);
  GtServiceConfig *service = g_new0 (GtServiceConfig, 1);
  GInetSocketAddress *listen = G_INET_SOCKET_ADDRESS (t->listen_addr);
  gboolean v6 = strchr (api->target_host, ':') != NULL;

  config->id = g_strdup (t->id);
  config->secret = g_strdup (t->secret);

  remote->scheme = g_strdup ("tcp");
  remote->host = g_inet_address_to_string (g_inet_socket_address_get_address (listen));
  remote->port = g_inet_socket_address_get_port (listen);
  g_ptr_array_add (config->remotes, remote);

  service->kind = GT_SERVICE_KIND_HTTP;
  service->local_url = g_strdup_printf (v6 ? "http://[%s]:%u" : "http://%s:%u", api->target_host,
                                        api->target_port);
  service->local_host = g_strdup (api->target_host);
  service->local_port = api->target_port;
  service->host_prefix = g_strdup (t->id);
  service->local_timeout_ms = 30000;
  g_ptr_array_add (config->services, service);

  config->remote_connections = 1;
  config->remote_idle_connections = 1;
  config->remote_timeout_ms = 10000;
  config->reconnect_delay_ms = 500;

  if (!gt_client_config_validate (config, NULL, error))
    return NULL;
  return g_steal_pointer (&config);
}

static void
self_test_start (GtApiServer *api)
{
  SelfTest *t = g_new0 (SelfTest, 1);
  g_autoptr (GError) error = NULL;
  GtClientConfig *config;
  const char *listen;

  t->api = api;
  api->running = t;
  api->n_self_tests++;
  t->cancellable = g_cancellable_new ();

  if (api->server == NULL)
    {
      self_test_finish (t, NULL, "the server is gone");
      return;
    }
  listen = gt_server_get_listen_address (api->server);
  t->listen_addr = listen != NULL ? parse_listen_address (listen) : NULL;
  if (t->listen_addr == NULL)
    {
      self_test_finish (t, NULL, "the server has no listener");
      return;
    }

  t->id = random_hex ();
  t->secret = random_hex ();
  t->server = g_object_ref (api->server);
  gt_server_add_ephemeral_user (t->server, t->id, t->secret);

  config = self_test_config (t, &error);
  if (config == NULL)
    {
      g_autofree char *msg = g_strdup_printf ("bad self-test client config: %s", error->message);
      self_test_finish (t, NULL, msg);
      return;
    }
  t->client = gt_client_new (config);
  g_signal_connect (t->client, "notify::n-ready", G_CALLBACK (n_ready_cb), t);
  g_signal_connect (t->client, "tunnel-failed", G_CALLBACK (tunnel_failed_cb), t);
  t->timer_id = g_timeout_add (api->ready_ms, ready_timeout_cb, t);
  g_debug ("api: self-test %u started", api->n_self_tests);
  if (!gt_client_start (t->client, &error))
    {
      g_autofree char *msg = g_strdup_printf ("the self-test client did not start: %s",
                                              error->message);
      self_test_finish (t, NULL, msg);
      return;
    }
  if (api->running == t && !t->requesting && gt_client_get_n_ready (t->client) > 0)
    self_test_request (t);
}

static void
waiter_finished_cb (SoupServerMessage *msg, gpointer user_data)
{
  GtApiServer *api = user_data;

  g_signal_handlers_disconnect_by_data (msg, api);
  g_ptr_array_remove (api->waiters, msg);
}

/* Ends the running self-test: exactly one of body (success) or reason (failure). Answers every
 * waiting caller and cleans up (client stopped, ephemeral user removed). */
static void
self_test_finish (SelfTest *t, const char *body, const char *reason)
{
  GtApiServer *api = t->api;
  g_autoptr (GPtrArray) waiters = NULL;
  g_autofree char *failed = NULL;

  g_assert (api->running == t);
  api->running = NULL;
  if (body != NULL)
    {
      g_free (api->cached_body);
      api->cached_body = g_strdup (body);
      api->cached_at_us = g_get_monotonic_time ();
      g_debug ("api: self-test ok");
    }
  else
    {
      failed = status_json ("failed", reason);
      g_message ("api: self-test failed: %s", reason);
    }
  self_test_free (t);

  waiters = g_steal_pointer (&api->waiters);
  api->waiters = g_ptr_array_new_with_free_func (g_object_unref);
  for (guint i = 0; i < waiters->len; i++)
    {
      SoupServerMessage *msg = waiters->pdata[i];

      g_signal_handlers_disconnect_by_data (msg, api);
      if (body != NULL)
        respond_json (msg, SOUP_STATUS_OK, body);
      else
        respond_json (msg, SOUP_STATUS_SERVICE_UNAVAILABLE, failed);
      soup_server_message_unpause (msg);
    }
}

/* Handlers ---------------------------------------------------------------------------------- */

static void
handle_status (GtApiServer *api, SoupServerMessage *msg)
{
  if (api->cached_body != NULL
      && g_get_monotonic_time () - api->cached_at_us < STATUS_CACHE_US)
    {
      respond_json (msg, SOUP_STATUS_OK, api->cached_body);
      return;
    }
  soup_server_message_pause (msg);
  g_ptr_array_add (api->waiters, g_object_ref (msg));
  g_signal_connect (msg, "finished", G_CALLBACK (waiter_finished_cb), api);
  if (api->running == NULL)
    self_test_start (api);
}

static void
handler_cb (SoupServer *soup, SoupServerMessage *msg, const char *path, GHashTable *query,
            gpointer user_data)
{
  GtApiServer *api = user_data;
  const char *method = soup_server_message_get_method (msg);

  if (method != SOUP_METHOD_GET && method != SOUP_METHOD_HEAD)
    {
      soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Allow",
                                    "GET, HEAD");
      respond_json (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "{\"error\":\"method not allowed\"}");
      return;
    }
  if (strcmp (path, "/statusResp") == 0)
    respond (msg, SOUP_STATUS_OK, "application/json", status_json ("ok", NULL));
  else if (strcmp (path, "/status") == 0)
    handle_status (api, msg);
  else if (strcmp (path, "/metrics") == 0)
    {
      char *text = api->metrics_func != NULL ? api->metrics_func (api->metrics_data) : NULL;

      respond (msg, SOUP_STATUS_OK, GT_METRICS_CONTENT_TYPE, text != NULL ? text : g_strdup (""));
    }
  else
    respond_json (msg, SOUP_STATUS_NOT_FOUND, "{\"error\":\"not found\"}");
}

/* Only what the self-test client fetches. */
static void
internal_handler_cb (SoupServer *soup, SoupServerMessage *msg, const char *path,
                     GHashTable *query, gpointer user_data)
{
  if (strcmp (path, "/statusResp") == 0)
    respond (msg, SOUP_STATUS_OK, "application/json", status_json ("ok", NULL));
  else
    respond_json (msg, SOUP_STATUS_NOT_FOUND, "{\"error\":\"not found\"}");
}

/* Setup ------------------------------------------------------------------------------------- */

/* "8081", ":8081", "127.0.0.1:8081", "[::1]:8081", "localhost:8081" */
static GSocketAddress *
parse_api_address (const char *addr, GError **error)
{
  g_autofree char *host = NULL;
  const char *port_text;
  g_autoptr (GInetAddress) inet = NULL;
  guint64 port;

  if (addr[0] == '[')
    {
      const char *close = strchr (addr, ']');

      if (close == NULL || close[1] != ':')
        goto bad;
      host = g_strndup (addr + 1, close - addr - 1);
      port_text = close + 2;
    }
  else
    {
      const char *colon = strrchr (addr, ':');

      if (colon != NULL && strchr (addr, ':') != colon)
        goto bad; /* a bare IPv6 address needs brackets */
      host = colon != NULL ? g_strndup (addr, colon - addr) : g_strdup ("");
      port_text = colon != NULL ? colon + 1 : addr;
    }
  if (!g_ascii_string_to_unsigned (port_text, 10, 0, 65535, &port, NULL))
    goto bad;
  if (*host == '\0' || g_ascii_strcasecmp (host, "localhost") == 0)
    inet = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  else
    inet = g_inet_address_new_from_string (host);
  if (inet == NULL)
    goto bad;
  return g_inet_socket_address_new (inet, (guint16) port);

bad:
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
               "bad apiAddr '%s': use PORT, HOST:PORT or [V6]:PORT with an IP address", addr);
  return NULL;
}

#define HANDSHAKE_TIMEOUT_MS 10000

typedef struct
{
  GtApiServer *api; /* NULL once the API is gone */
  GCancellable *cancellable;
  guint timer_id;
  GSocketAddress *local;
  GSocketAddress *remote;
} Handshake;

static void
handshake_free (Handshake *h)
{
  g_clear_handle_id (&h->timer_id, g_source_remove);
  g_clear_object (&h->cancellable);
  g_clear_object (&h->local);
  g_clear_object (&h->remote);
  g_free (h);
}

static gboolean
handshake_timeout_cb (gpointer user_data)
{
  Handshake *h = user_data;

  h->timer_id = 0;
  g_cancellable_cancel (h->cancellable);
  return G_SOURCE_REMOVE;
}

static void
handshake_cb (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Handshake *h = user_data;
  g_autoptr (GError) error = NULL;
  gboolean ok = g_tls_connection_handshake_finish (G_TLS_CONNECTION (source), res, &error);

  if (h->api != NULL)
    g_ptr_array_remove_fast (h->api->handshakes, h);
  if (ok && h->api != NULL)
    soup_server_accept_iostream (h->api->soup, G_IO_STREAM (source), h->local, h->remote, NULL);
  else if (!ok)
    g_debug ("api: TLS handshake failed: %s", error->message);
  /* Our reference from g_tls_server_connection_new(); soup holds its own. */
  g_object_unref (source);
  handshake_free (h);
}

static gboolean
incoming_cb (GSocketService *service, GSocketConnection *conn, GObject *source_object,
             gpointer user_data)
{
  SoupServer *soup = SOUP_SERVER (source_object);
  GtApiServer *api = user_data;
  g_autoptr (GSocketAddress) local = g_socket_connection_get_local_address (conn, NULL);
  g_autoptr (GSocketAddress) remote = g_socket_connection_get_remote_address (conn, NULL);
  g_autoptr (GError) error = NULL;
  GIOStream *tls;
  Handshake *h;

  if (service != api->service || api->cert == NULL)
    {
      soup_server_accept_iostream (soup, G_IO_STREAM (conn), local, remote, NULL);
      return TRUE;
    }
  tls = g_tls_server_connection_new (G_IO_STREAM (conn), api->cert, &error);
  if (tls == NULL)
    {
      g_warning ("api: cannot start TLS: %s", error->message);
      return TRUE;
    }
  h = g_new0 (Handshake, 1);
  h->api = api;
  h->cancellable = g_cancellable_new ();
  h->local = g_steal_pointer (&local);
  h->remote = g_steal_pointer (&remote);
  /* A peer that never finishes its handshake does not hold the connection forever. */
  h->timer_id = g_timeout_add (HANDSHAKE_TIMEOUT_MS, handshake_timeout_cb, h);
  g_ptr_array_add (api->handshakes, h);
  g_tls_connection_handshake_async (G_TLS_CONNECTION (tls), G_PRIORITY_DEFAULT, h->cancellable,
                                    handshake_cb, h);
  return TRUE;
}

/* Listens on want for soup; returns the bound address. */
static GSocketService *
listen_for (GtApiServer *api, SoupServer *soup, GSocketAddress *want,
            GInetSocketAddress **bound, GError **error)
{
  g_autoptr (GSocketService) service = g_socket_service_new ();
  g_autoptr (GSocketAddress) effective = NULL;

  if (!g_socket_listener_add_address (G_SOCKET_LISTENER (service), want, G_SOCKET_TYPE_STREAM,
                                      G_SOCKET_PROTOCOL_TCP, G_OBJECT (soup), &effective, error))
    return NULL;
  g_signal_connect (service, "incoming", G_CALLBACK (incoming_cb), api);
  *bound = G_INET_SOCKET_ADDRESS (g_steal_pointer (&effective));
  return g_steal_pointer (&service);
}

static char *
format_address (GInetAddress *inet, guint16 port)
{
  g_autofree char *host = g_inet_address_to_string (inet);

  if (g_inet_address_get_family (inet) == G_SOCKET_FAMILY_IPV6)
    return g_strdup_printf ("[%s]:%u", host, port);
  return g_strdup_printf ("%s:%u", host, port);
}

/* "auto": a self-signed certificate made now (files in a private temp dir, removed at once). */
static GTlsCertificate *
generated_certificate (GError **error)
{
  g_autofree char *dir = g_dir_make_tmp ("gt-web-XXXXXX", error);
  g_autofree char *cert_path = NULL;
  g_autofree char *key_path = NULL;
  const char *const names[] = { "localhost", "127.0.0.1", "::1", NULL };
  GTlsCertificate *cert = NULL;

  if (dir == NULL)
    return NULL;
  cert_path = g_build_filename (dir, "cert.pem", NULL);
  key_path = g_build_filename (dir, "key.pem", NULL);
  if (gt_certificate_generate (cert_path, key_path, names, error))
    cert = g_tls_certificate_new_from_files (cert_path, key_path, error);
  g_unlink (cert_path);
  g_unlink (key_path);
  g_rmdir (dir);
  return cert;
}

/* server NULL: the admin UI's listener (no /status, /metrics; its handlers come from
 * gt-web-admin.c), where cert_file "auto" means a generated certificate. */
static GtApiServer *
api_server_new (GtServer *server, const char *addr, const char *cert_file, const char *key_file,
                const char *what, GError **error)
{
  g_autoptr (GtApiServer) api = NULL;
  g_autoptr (GSocketAddress) want = NULL;
  g_autoptr (GTlsCertificate) cert = NULL;
  g_autoptr (GInetSocketAddress) bound = NULL;
  g_autoptr (GInetAddress) target = NULL;

  if ((cert_file == NULL) != (key_file == NULL))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "the %s needs both a certificate and a key file for HTTPS", what);
      return NULL;
    }
  want = parse_api_address (addr, error);
  if (want == NULL)
    return NULL;
  if (cert_file != NULL && server == NULL && strcmp (cert_file, "auto") == 0)
    cert = generated_certificate (error);
  else if (cert_file != NULL)
    cert = g_tls_certificate_new_from_files (cert_file, key_file, error);
  if (cert_file != NULL && cert == NULL)
    {
      g_prefix_error (error, "%s certificate: ", what);
      return NULL;
    }

  api = g_object_new (GT_TYPE_API_SERVER, NULL);
  api->server = server;
  if (server != NULL)
    g_object_add_weak_pointer (G_OBJECT (server), (gpointer *) &api->server);
  api->cert = g_steal_pointer (&cert);
  api->soup = soup_server_new ("server-header", "gt/" PACKAGE_VERSION " ", NULL);
  if (server != NULL)
    soup_server_add_handler (api->soup, NULL, handler_cb, api, NULL);
  api->service = listen_for (api, api->soup, want, &bound, error);
  if (api->service == NULL)
    {
      g_prefix_error (error, "%s listener %s: ", what, addr);
      return NULL;
    }
  api->address = format_address (g_inet_socket_address_get_address (bound),
                                 g_inet_socket_address_get_port (bound));
  if (server == NULL)
    return g_steal_pointer (&api);

  if (api->cert != NULL)
    {
      g_autoptr (GInetSocketAddress) internal_bound = NULL;
      g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
      g_autoptr (GSocketAddress) lo_any = g_inet_socket_address_new (lo, 0);

      /* The tunnel carries the self-test's plain HTTP request to its local service: give it
       * a plain loopback listener that only answers /statusResp. */
      api->internal = soup_server_new ("server-header", "gt/" PACKAGE_VERSION " ", NULL);
      soup_server_add_handler (api->internal, NULL, internal_handler_cb, api, NULL);
      api->internal_service = listen_for (api, api->internal, lo_any, &internal_bound, error);
      if (api->internal_service == NULL)
        {
          g_prefix_error (error, "API self-test listener: ");
          return NULL;
        }
      api->target_host = g_strdup ("127.0.0.1");
      api->target_port = g_inet_socket_address_get_port (internal_bound);
    }
  else
    {
      target = connectable_address (g_inet_socket_address_get_address (bound));
      api->target_host = g_inet_address_to_string (target);
      api->target_port = g_inet_socket_address_get_port (bound);
    }
  g_message ("API listening on %s://%s", api->cert != NULL ? "https" : "http", api->address);
  return g_steal_pointer (&api);
}

GtApiServer *
gt_api_server_new (GtServer *server, const char *addr, const char *cert_file,
                   const char *key_file, GError **error)
{
  g_return_val_if_fail (GT_IS_SERVER (server), NULL);
  g_return_val_if_fail (addr != NULL, NULL);
  return api_server_new (server, addr, cert_file, key_file, "API", error);
}

GtApiServer *
gt_api_server_new_for_web (const char *addr, const char *cert_file, const char *key_file,
                           GError **error)
{
  g_return_val_if_fail (addr != NULL, NULL);
  return api_server_new (NULL, addr, cert_file, key_file, "admin UI", error);
}

SoupServer *
gt_api_server_get_soup_server (GtApiServer *api)
{
  g_return_val_if_fail (GT_IS_API_SERVER (api), NULL);
  return api->soup;
}

gboolean
gt_api_server_is_tls (GtApiServer *api)
{
  g_return_val_if_fail (GT_IS_API_SERVER (api), FALSE);
  return api->cert != NULL;
}

const char *
gt_api_server_get_address (GtApiServer *api)
{
  g_return_val_if_fail (GT_IS_API_SERVER (api), NULL);
  return api->address;
}

void
gt_api_server_set_metrics_func (GtApiServer *api, GtApiMetricsFunc func, gpointer user_data,
                                GDestroyNotify destroy)
{
  g_return_if_fail (GT_IS_API_SERVER (api));

  if (api->metrics_destroy != NULL)
    api->metrics_destroy (api->metrics_data);
  api->metrics_func = func;
  api->metrics_data = user_data;
  api->metrics_destroy = destroy;
}

guint
gt_api_server_get_n_self_tests (GtApiServer *api)
{
  g_return_val_if_fail (GT_IS_API_SERVER (api), 0);
  return api->n_self_tests;
}

void
gt_api_server_set_self_test_timeouts (GtApiServer *api, guint ready_ms, guint request_ms)
{
  g_return_if_fail (GT_IS_API_SERVER (api));
  api->ready_ms = ready_ms > 0 ? ready_ms : DEFAULT_READY_MS;
  api->request_ms = request_ms > 0 ? request_ms : DEFAULT_REQUEST_MS;
}

static void
gt_api_server_dispose (GObject *object)
{
  GtApiServer *api = GT_API_SERVER (object);

  if (api->running != NULL)
    self_test_finish (api->running, NULL, "the API is shutting down");
  for (guint i = 0; i < api->handshakes->len; i++)
    {
      Handshake *h = api->handshakes->pdata[i];

      /* handshake_cb frees it, with CANCELLED, without touching the API. */
      h->api = NULL;
      g_clear_handle_id (&h->timer_id, g_source_remove);
      g_cancellable_cancel (h->cancellable);
    }
  g_ptr_array_set_size (api->handshakes, 0);
  if (api->service != NULL)
    {
      g_socket_service_stop (api->service);
      g_socket_listener_close (G_SOCKET_LISTENER (api->service));
    }
  if (api->internal_service != NULL)
    {
      g_socket_service_stop (api->internal_service);
      g_socket_listener_close (G_SOCKET_LISTENER (api->internal_service));
    }
  g_clear_object (&api->service);
  g_clear_object (&api->internal_service);
  if (api->soup != NULL)
    soup_server_disconnect (api->soup);
  if (api->internal != NULL)
    soup_server_disconnect (api->internal);
  g_clear_object (&api->soup);
  g_clear_object (&api->internal);
  g_clear_object (&api->cert);
  if (api->server != NULL)
    {
      g_object_remove_weak_pointer (G_OBJECT (api->server), (gpointer *) &api->server);
      api->server = NULL;
    }
  gt_api_server_set_metrics_func (api, NULL, NULL, NULL);
  G_OBJECT_CLASS (gt_api_server_parent_class)->dispose (object);
}

static void
gt_api_server_finalize (GObject *object)
{
  GtApiServer *api = GT_API_SERVER (object);

  g_ptr_array_unref (api->waiters);
  g_ptr_array_unref (api->handshakes);
  g_free (api->cached_body);
  g_free (api->address);
  g_free (api->target_host);
  G_OBJECT_CLASS (gt_api_server_parent_class)->finalize (object);
}

static void
gt_api_server_class_init (GtApiServerClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->dispose = gt_api_server_dispose;
  object_class->finalize = gt_api_server_finalize;
}

static void
gt_api_server_init (GtApiServer *api)
{
  api->waiters = g_ptr_array_new_with_free_func (g_object_unref);
  api->handshakes = g_ptr_array_new ();
  api->ready_ms = DEFAULT_READY_MS;
  api->request_ms = DEFAULT_REQUEST_MS;
}
