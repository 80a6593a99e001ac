/* gt-transport-ws.c: ws:// and wss:// tunnels: the HTTP upgrade on both sides (framing is in
 * gt-ws-stream.c). */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include <libsoup/soup.h>
#include <string.h>

#include "gt-certificate.h"
#include "gt-http-proxy.h"
#include "gt-transport-private.h"
#include "gt-ws-stream.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ------------------------------------------------------------------------------------------ */
/* Handshake helpers */

static char *
ws_accept_key (const char *key)
{
  g_autoptr (GChecksum) sha1 = g_checksum_new (G_CHECKSUM_SHA1);
  guint8 digest[20];
  gsize digest_len = sizeof digest;

  g_checksum_update (sha1, (const guchar *) key, strlen (key));
  g_checksum_update (sha1, (const guchar *) WS_GUID, strlen (WS_GUID));
  g_checksum_get_digest (sha1, digest, &digest_len);
  return g_base64_encode (digest, digest_len);
}

/* A Sec-WebSocket-Key: base64 of exactly 16 bytes (24 characters ending in "=="). */
static gboolean
ws_key_is_valid (const char *key)
{
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

  if (key == NULL || strlen (key) != 24 || strcmp (key + 22, "==") != 0)
    return FALSE;
  for (gsize i = 0; i < 22; i++)
    if (key[i] == '\0' || strchr (b64, key[i]) == NULL)
      return FALSE;
  /* The last character before the padding carries 2 bits: the other 4 must be zero. */
  return (strchr (b64, key[21]) - b64) % 16 == 0;
}

/* Where the request head ends (after its blank line), or head_len when it has none. */
static gsize
head_end (const guint8 *head, gsize head_len)
{
  for (gsize i = 0; i + 3 < head_len; i++)
    if (head[i] == '\r' && memcmp (head + i, "\r\n\r\n", 4) == 0)
      return i + 4;
  return head_len;
}

static char *
reject_response (const char *reason, gboolean version)
{
  return g_strdup_printf ("HTTP/1.1 400 Bad Request\r\n"
                          "Content-Type: text/plain\r\n"
                          "Content-Length: %zu\r\n"
                          "%s"
                          "Connection: close\r\n"
                          "\r\n"
                          "%s\n",
                          strlen (reason) + 1, version ? "Sec-WebSocket-Version: 13\r\n" : "",
                          reason);
}

/* Validates an upgrade request: the 101 response to send, or NULL with the 400 response in
 * *reject and the error set. */
static char *
upgrade_check (const guint8 *head, gsize head_len, char **reject, GError **error)
{
  g_autoptr (SoupMessageHeaders) headers = NULL;
  g_autofree char *method = NULL;
  g_autofree char *target = NULL;
  g_autofree char *accept = NULL;
  const char *reason = NULL;
  gboolean version_hint = FALSE;
  SoupHTTPVersion version;
  const char *key;
  const char *ws_version;

  if (head_len == 0 || head_len > G_MAXINT)
    reason = "malformed request";
  else
    {
      headers = soup_message_headers_new (SOUP_MESSAGE_HEADERS_REQUEST);
      if (soup_headers_parse_request ((const char *) head, (int) head_len, headers, &method,
                                      &target, &version)
          != SOUP_STATUS_OK)
        reason = "malformed request";
    }
  if (reason != NULL)
    ;
  else if (strcmp (method, "GET") != 0)
    reason = "WebSocket upgrade needs GET";
  else if (version < SOUP_HTTP_1_1)
    reason = "WebSocket upgrade needs HTTP/1.1";
  else if (!soup_message_headers_header_contains (headers, "Upgrade", "websocket"))
    reason = "missing Upgrade: websocket";
  else if (!soup_message_headers_header_contains (headers, "Connection", "upgrade"))
    reason = "missing Connection: upgrade";
  else if ((ws_version = soup_message_headers_get_one (headers, "Sec-WebSocket-Version")) == NULL
           || strcmp (ws_version, "13") != 0)
    {
      reason = "unsupported Sec-WebSocket-Version";
      version_hint = TRUE;
    }
  else if (!ws_key_is_valid (key = soup_message_headers_get_one (headers, "Sec-WebSocket-Key")))
    reason = "invalid Sec-WebSocket-Key";
  if (reason != NULL)
    {
      *reject = reject_response (reason, version_hint);
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "bad WebSocket upgrade request: %s",
                   reason);
      return NULL;
    }
  accept = ws_accept_key (key);
  return g_strdup_printf ("HTTP/1.1 101 Switching Protocols\r\n"
                          "Upgrade: websocket\r\n"
                          "Connection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: %s\r\n"
                          "\r\n",
                          accept);
}

GIOStream *
gt_ws_server_accept (GIOStream *io, const guint8 *head, gsize head_len, GError **error)
{
  g_autofree char *reject = NULL;
  g_autofree char *response = NULL;
  gsize end;

  g_return_val_if_fail (G_IS_IO_STREAM (io), NULL);
  g_return_val_if_fail (head != NULL || head_len == 0, NULL);

  response = upgrade_check (head, head_len, &reject, error);
  if (!g_output_stream_write_all (g_io_stream_get_output_stream (io),
                                  response ? response : reject,
                                  strlen (response ? response : reject), NULL, NULL,
                                  response ? error : NULL)
      || response == NULL)
    return NULL;
  end = head_end (head, head_len);
  return gt_ws_stream_new (io, FALSE, head + end, head_len - end);
}

typedef struct
{
  GIOStream *io;
  char *response;
  GBytes *rest; /* bytes after the head */
  GError *reject_error;
} WsAccept;

static void
ws_accept_free (WsAccept *wa)
{
  g_clear_object (&wa->io);
  g_free (wa->response);
  g_clear_pointer (&wa->rest, g_bytes_unref);
  g_clear_error (&wa->reject_error);
  g_free (wa);
}

static void
ws_accept_written_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  WsAccept *wa = g_task_get_task_data (task);
  GError *error = NULL;
  gsize len;
  const guint8 *rest;

  if (!g_output_stream_write_all_finish (G_OUTPUT_STREAM (source), result, NULL, &error))
    {
      if (wa->reject_error != NULL)
        {
          g_debug ("WebSocket handshake: writing the response failed: %s", error->message);
          g_clear_error (&error);
          g_task_return_error (task, g_steal_pointer (&wa->reject_error));
          return;
        }
      g_task_return_error (task, error);
      return;
    }
  if (wa->reject_error != NULL)
    {
      g_task_return_error (task, g_steal_pointer (&wa->reject_error));
      return;
    }
  rest = g_bytes_get_data (wa->rest, &len);
  g_task_return_pointer (task, gt_ws_stream_new (wa->io, FALSE, rest, len), g_object_unref);
}

/* Takes ownership of task. */
static void
ws_server_accept (GIOStream *io, const guint8 *head, gsize head_len, GTask *task)
{
  WsAccept *wa = g_new0 (WsAccept, 1);
  g_autofree char *reject = NULL;
  gsize end = head_end (head, head_len);

  g_task_set_task_data (task, wa, (GDestroyNotify) ws_accept_free);
  wa->io = g_object_ref (io);
  wa->rest = g_bytes_new (head + end, head_len - end);
  wa->response = upgrade_check (head, head_len, &reject, &wa->reject_error);
  if (wa->response == NULL)
    wa->response = g_steal_pointer (&reject);
  g_output_stream_write_all_async (g_io_stream_get_output_stream (io), wa->response,
                                   strlen (wa->response), G_PRIORITY_DEFAULT,
                                   g_task_get_cancellable (task), ws_accept_written_cb, task);
}

void
gt_ws_server_accept_async (GIOStream *io, const guint8 *head, gsize head_len,
                           GCancellable *cancellable, GAsyncReadyCallback callback,
                           gpointer user_data)
{
  GTask *task;

  g_return_if_fail (G_IS_IO_STREAM (io));
  g_return_if_fail (head != NULL || head_len == 0);

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, gt_ws_server_accept_async);
  ws_server_accept (io, head, head_len, task);
}

GIOStream *
gt_ws_server_accept_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gt_ws_server_accept_async,
                        NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}

gboolean
gt_ws_is_upgrade_request (const guint8 *head, gsize head_len, const char *path)
{
  const char *s = (const char *) head;
  const char *end = s + head_len;
  const char *target;
  const char *line;
  gsize target_len;

  if (head == NULL || head_len < 16 || memcmp (s, "GET ", 4) != 0)
    return FALSE;
  target = s + 4;
  line = memchr (target, ' ', end - target);
  if (line == NULL)
    return FALSE;
  target_len = line - target;
  if (path != NULL)
    {
      const char *q = memchr (target, '?', target_len);
      gsize path_len = q != NULL ? (gsize) (q - target) : target_len;

      if (path_len != strlen (path) || memcmp (target, path, path_len) != 0)
        return FALSE;
    }
  if ((gsize) (end - line) < 10 || memcmp (line, " HTTP/1.", 8) != 0)
    return FALSE;

  /* Header lines: look for Upgrade with a "websocket" token. */
  line = memchr (line, '\n', end - line);
  while (line != NULL && line + 1 < end)
    {
      const char *start = line + 1;
      const char *eol = memchr (start, '\n', end - start);
      gsize len = (eol != NULL ? eol : end) - start;

      if (len >= 8 && g_ascii_strncasecmp (start, "upgrade:", 8) == 0)
        {
          g_autofree char *value = g_ascii_strdown (start + 8, len - 8);

          if (strstr (value, "websocket") != NULL)
            return TRUE;
        }
      line = eol;
    }
  return FALSE;
}

/* ------------------------------------------------------------------------------------------ */
/* Client */

typedef struct
{
  GUri *uri;
  char *url; /* without user info, for the proxy resolver */
  char *host;
  guint16 port;
  gboolean tls;
  GtTlsVerify verify;
  GIOStream *io;
  char *key;
  char *request;
} WsConnect;

static void
ws_connect_free (WsConnect *wc)
{
  g_clear_pointer (&wc->uri, g_uri_unref);
  g_free (wc->url);
  g_free (wc->host);
  _gt_tls_verify_clear (&wc->verify);
  g_clear_object (&wc->io);
  g_free (wc->key);
  g_free (wc->request);
  g_free (wc);
}

static void
ws_connect_head_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  WsConnect *wc = g_task_get_task_data (task);
  g_autoptr (GBytes) head = NULL;
  g_autoptr (SoupMessageHeaders) headers = NULL;
  g_autofree char *expected = NULL;
  g_autofree char *line = NULL;
  const char *accept;
  GError *error = NULL;
  const guint8 *data;
  gsize len;
  guint status = 0;

  head = gt_http_read_head_finish (result, &error);
  if (head == NULL)
    {
      g_prefix_error (&error, "WebSocket handshake with %s: ", wc->host);
      g_task_return_error (task, error);
      return;
    }
  data = g_bytes_get_data (head, &len);
  line = gt_http_status_line (data, len);
  headers = soup_message_headers_new (SOUP_MESSAGE_HEADERS_RESPONSE);
  if (!soup_headers_parse_response ((const char *) data, (int) len, headers, NULL, &status, NULL)
      || status != SOUP_STATUS_SWITCHING_PROTOCOLS)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_FAILED,
                               "WebSocket handshake with %s refused: %s", wc->host, line);
      return;
    }
  expected = ws_accept_key (wc->key);
  accept = soup_message_headers_get_one (headers, "Sec-WebSocket-Accept");
  if (!soup_message_headers_header_contains (headers, "Upgrade", "websocket")
      || !soup_message_headers_header_contains (headers, "Connection", "upgrade")
      || accept == NULL || strcmp (accept, expected) != 0
      || soup_message_headers_get_one (headers, "Sec-WebSocket-Extensions") != NULL)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                               "WebSocket handshake with %s: invalid 101 response", wc->host);
      return;
    }
  /* The head was read byte by byte: nothing after it was consumed. */
  g_task_return_pointer (task, gt_ws_stream_new (wc->io, TRUE, NULL, 0), g_object_unref);
}

static void
ws_connect_written_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  WsConnect *wc = g_task_get_task_data (task);
  GCancellable *cancellable = g_task_get_cancellable (task);
  GError *error = NULL;

  if (!g_output_stream_write_all_finish (G_OUTPUT_STREAM (source), result, NULL, &error))
    {
      g_prefix_error (&error, "WebSocket handshake with %s: ", wc->host);
      g_task_return_error (task, error);
      return;
    }
  gt_http_read_head_async (wc->io, GT_HTTP_PROXY_MAX_HEAD, cancellable, ws_connect_head_cb,
                           g_steal_pointer (&task));
}

static void
ws_connect_send_request (GTask *task)
{
  WsConnect *wc = g_task_get_task_data (task);
  g_autofree char *host = NULL;
  g_autofree char *path = NULL;
  g_autofree char *port = NULL;
  guint8 nonce[16];
  gboolean default_port = wc->port == (wc->tls ? 443 : 80);

  for (gsize i = 0; i < sizeof nonce; i += 4)
    {
      guint32 r = g_random_int ();

      memcpy (nonce + i, &r, 4);
    }
  wc->key = g_base64_encode (nonce, sizeof nonce);
  host = strchr (wc->host, ':') != NULL ? g_strdup_printf ("[%s]", wc->host) : g_strdup (wc->host);
  path = g_strdup (*g_uri_get_path (wc->uri) != '\0' ? g_uri_get_path (wc->uri) : "/");
  port = default_port ? g_strdup ("") : g_strdup_printf (":%u", wc->port);
  wc->request = g_strdup_printf ("GET %s%s%s HTTP/1.1\r\n"
                                 "Host: %s%s\r\n"
                                 "Upgrade: websocket\r\n"
                                 "Connection: Upgrade\r\n"
                                 "Sec-WebSocket-Key: %s\r\n"
                                 "Sec-WebSocket-Version: 13\r\n"
                                 "User-Agent: gt/" PACKAGE_VERSION "\r\n"
                                 "\r\n",
                                 path, g_uri_get_query (wc->uri) != NULL ? "?" : "",
                                 g_uri_get_query (wc->uri) != NULL ? g_uri_get_query (wc->uri) : "",
                                 host, port, wc->key);
  g_output_stream_write_all_async (g_io_stream_get_output_stream (wc->io), wc->request,
                                   strlen (wc->request), G_PRIORITY_DEFAULT,
                                   g_task_get_cancellable (task), ws_connect_written_cb, task);
}

static void
ws_connect_tls_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GTask *task = user_data;
  WsConnect *wc = g_task_get_task_data (task);
  GError *error = NULL;
  GIOStream *io = g_task_propagate_pointer (G_TASK (result), &error);

  if (io == NULL)
    {
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }
  g_clear_object (&wc->io);
  wc->io = io;
  ws_connect_send_request (task);
}

static void
ws_connect_tcp_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GTask *task = user_data;
  WsConnect *wc = g_task_get_task_data (task);
  GError *error = NULL;
  GTask *handshake;

  wc->io = g_task_propagate_pointer (G_TASK (result), &error);
  if (wc->io == NULL)
    {
      if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_PROXY_AUTH_FAILED)
          && !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_PROXY_FAILED)
          && !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED))
        g_prefix_error (&error, "%s:%u: ", wc->host, wc->port);
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }
  if (!wc->tls)
    {
      ws_connect_send_request (task);
      return;
    }
  handshake = g_task_new (NULL, g_task_get_cancellable (task), ws_connect_tls_cb, task);
  _gt_tls_client_handshake (wc->io, wc->host, wc->port, &wc->verify, handshake);
}

/* Opens the TCP connection, directly or through the proxy the resolver names. */
static void
ws_connect_start (GTask *task, const char *proxy_url)
{
  WsConnect *wc = g_task_get_task_data (task);
  GTask *tcp;

  if (proxy_url != NULL && strcmp (proxy_url, "direct://") != 0
      && !g_str_has_prefix (proxy_url, "http://"))
    {
      g_autofree char *scheme = g_uri_parse_scheme (proxy_url);

      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                               "unsupported proxy type '%s' (only http:// proxies)",
                               scheme ? scheme : "?");
      g_object_unref (task);
      return;
    }
  tcp = g_task_new (NULL, g_task_get_cancellable (task), ws_connect_tcp_cb, task);
  _gt_transport_tcp_dial (wc->host, wc->port,
                          proxy_url != NULL && g_str_has_prefix (proxy_url, "http://") ? proxy_url
                                                                                        : NULL,
                          tcp);
}

static void
ws_connect_lookup_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GTask *task = user_data;
  g_auto (GStrv) proxies = NULL;
  GError *error = NULL;

  proxies = g_proxy_resolver_lookup_finish (G_PROXY_RESOLVER (source), result, &error);
  if (proxies == NULL)
    {
      g_prefix_error (&error, "proxy lookup: ");
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }
  ws_connect_start (task, proxies[0]);
}

/* Takes ownership of task. */
static void
ws_connect (const char *url, GtTlsVerify *verify, GProxyResolver *proxy, GTask *task)
{
  g_autoptr (GError) error = NULL;
  WsConnect *wc;
  const char *scheme;
  int port;

  wc = g_new0 (WsConnect, 1);
  g_task_set_task_data (task, wc, (GDestroyNotify) ws_connect_free);
  wc->verify = *verify; /* taken */
  memset (verify, 0, sizeof *verify);

  wc->uri = g_uri_parse (url, G_URI_FLAGS_ENCODED, &error);
  if (wc->uri == NULL)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "invalid WebSocket URL: %s", error->message);
      g_object_unref (task);
      return;
    }
  scheme = g_uri_get_scheme (wc->uri);
  if (g_ascii_strcasecmp (scheme, "wss") == 0)
    wc->tls = TRUE;
  else if (g_ascii_strcasecmp (scheme, "ws") != 0)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "invalid WebSocket URL: scheme must be ws or wss");
      g_object_unref (task);
      return;
    }
  if (g_uri_get_host (wc->uri) == NULL || *g_uri_get_host (wc->uri) == '\0')
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "invalid WebSocket URL: no host");
      g_object_unref (task);
      return;
    }
  if (wc->verify.pin != NULL && !gt_certificate_pin_is_valid (wc->verify.pin))
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "invalid certificate pin (expected sha256:<64 hex digits>)");
      g_object_unref (task);
      return;
    }
  wc->host = g_strdup (g_uri_get_host (wc->uri));
  port = g_uri_get_port (wc->uri);
  wc->port = port > 0 ? port : (wc->tls ? 443 : 80);
  wc->url = g_uri_to_string_partial (wc->uri, G_URI_HIDE_USERINFO);

  if (proxy != NULL)
    {
      g_proxy_resolver_lookup_async (proxy, wc->url, g_task_get_cancellable (task),
                                     ws_connect_lookup_cb, task);
      return;
    }
  ws_connect_start (task, NULL);
}

void
gt_ws_connect_async (const char *url, GTlsDatabase *tls_database, const char *pin,
                     gboolean insecure, GProxyResolver *proxy, GCancellable *cancellable,
                     GAsyncReadyCallback callback, gpointer user_data)
{
  GtTlsVerify verify = { NULL };
  GTask *task;

  g_return_if_fail (url != NULL);
  g_return_if_fail (tls_database == NULL || G_IS_TLS_DATABASE (tls_database));

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, gt_ws_connect_async);
  verify.database = tls_database != NULL ? g_object_ref (tls_database) : NULL;
  verify.pin = g_strdup (pin);
  verify.insecure = insecure;
  ws_connect (url, &verify, proxy, task);
}

GIOStream *
gt_ws_connect_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gt_ws_connect_async, NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}

/* ------------------------------------------------------------------------------------------ */
/* The ws:// and wss:// leaves */

static void
ws_dial (const GtRemote *remote, const GtTransportSecurity *security, GTask *task)
{
  g_autoptr (GProxyResolver) proxy = gt_http_proxy_resolver_new_from_env ();
  g_autofree char *url = NULL;
  const char *path = remote->path ? remote->path : "/";
  GtTlsVerify verify;
  GError *error = NULL;

  if (strchr (remote->host, ':') != NULL && remote->host[0] != '[')
    url = g_strdup_printf ("%s://[%s]:%u%s", remote->scheme, remote->host, remote->port, path);
  else
    url = g_strdup_printf ("%s://%s:%u%s", remote->scheme, remote->host, remote->port, path);
  if (!_gt_tls_verify_init (&verify, security, &error))
    {
      _gt_tls_verify_clear (&verify);
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }
  ws_connect (url, &verify, proxy, task);
}

static void
ws_accept (GIOStream *io, const guint8 *head, gsize head_len, GTlsCertificate *certificate,
           GTask *task)
{
  ws_server_accept (io, head, head_len, task);
}

const GtTransportLeaf _gt_transport_ws = { "ws", ws_dial, ws_accept };
/* wss:// is ws:// inside tlsAddr's TLS: the listener terminates TLS before the upgrade arrives. */
const GtTransportLeaf _gt_transport_wss = { "wss", ws_dial, ws_accept };
