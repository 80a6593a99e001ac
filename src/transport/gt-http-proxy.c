/* gt-http-proxy.c: HTTP proxies from the environment and HTTP CONNECT tunnels through them. */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>

#include "gt-http-proxy.h"

/* ------------------------------------------------------------------------------------------ */
/* Environment: GIO's GSimpleProxyResolver, fed with http_proxy, https_proxy and no_proxy */

static char *
env_get (const char *lower, const char *upper)
{
  const char *v = g_getenv (lower);

  if (v == NULL || *v == '\0')
    v = g_getenv (upper);
  if (v == NULL)
    return NULL;
  v += strspn (v, " \t");
  return *v != '\0' ? g_strchomp (g_strdup (v)) : NULL;
}

/* A proxy without a scheme is an HTTP proxy. */
static char *
proxy_url (char *value)
{
  char *url;

  if (value == NULL || strstr (value, "://") != NULL)
    return value;
  url = g_strconcat ("http://", value, NULL);
  g_free (value);
  return url;
}

/* Lower-case, without IPv6 brackets or a trailing dot. */
static char *
host_normalize (const char *host)
{
  gsize n = strlen (host);
  char *out;

  if (n >= 2 && host[0] == '[' && host[n - 1] == ']')
    out = g_ascii_strdown (host + 1, n - 2);
  else
    out = g_ascii_strdown (host, n);
  n = strlen (out);
  if (n > 1 && out[n - 1] == '.')
    out[n - 1] = '\0';
  return out;
}

/* A no_proxy entry in GSimpleProxyResolver's ignore-hosts syntax, or NULL to skip it. gt has
 * always ignored a port in no_proxy ("lan:8080" means all of lan), which GSimpleProxyResolver
 * would not, so the port goes; case, brackets and a trailing dot are normalised like hosts. */
static char *
no_proxy_entry (const char *raw)
{
  g_autofree char *entry = NULL;
  const char *colon;

  if (raw[0] == '\0')
    return NULL;
  if (strchr (raw, '/') != NULL) /* CIDR */
    return g_strdup (raw);
  entry = g_strdup (raw);
  colon = strchr (entry, ':');
  if (entry[0] == '[')
    {
      char *end = strchr (entry, ']');

      if (end != NULL)
        end[1] = '\0';
    }
  else if (colon != NULL && strchr (colon + 1, ':') == NULL)
    entry[colon - entry] = '\0';
  if (entry[0] == '\0' || strcmp (entry, ".") == 0)
    return NULL;
  return host_normalize (entry);
}

/* GSimpleProxyResolver, with is_supported (GLib 2.74's leaves it NULL, so that
 * g_proxy_resolver_is_supported crashes on it). */
#define GT_TYPE_ENV_PROXY_RESOLVER (gt_env_proxy_resolver_get_type ())
G_DECLARE_FINAL_TYPE (GtEnvProxyResolver, gt_env_proxy_resolver, GT, ENV_PROXY_RESOLVER,
                      GSimpleProxyResolver)

struct _GtEnvProxyResolver
{
  GSimpleProxyResolver parent_instance;
};

static void gt_env_proxy_resolver_iface_init (GProxyResolverInterface *iface);

G_DEFINE_TYPE_WITH_CODE (GtEnvProxyResolver, gt_env_proxy_resolver, G_TYPE_SIMPLE_PROXY_RESOLVER,
                         G_IMPLEMENT_INTERFACE (G_TYPE_PROXY_RESOLVER,
                                                gt_env_proxy_resolver_iface_init))

static gboolean
env_resolver_is_supported (GProxyResolver *resolver)
{
  return TRUE;
}

static void
gt_env_proxy_resolver_iface_init (GProxyResolverInterface *iface)
{
  GProxyResolverInterface *parent = g_type_interface_peek_parent (iface);

  iface->is_supported = env_resolver_is_supported;
  iface->lookup = parent->lookup;
  iface->lookup_async = parent->lookup_async;
  iface->lookup_finish = parent->lookup_finish;
}

static void
gt_env_proxy_resolver_class_init (GtEnvProxyResolverClass *klass)
{
}

static void
gt_env_proxy_resolver_init (GtEnvProxyResolver *self)
{
}

GProxyResolver *
gt_http_proxy_resolver_new_from_env (void)
{
  g_autofree char *http = proxy_url (env_get ("http_proxy", "HTTP_PROXY"));
  g_autofree char *https = proxy_url (env_get ("https_proxy", "HTTPS_PROXY"));
  g_autofree char *no_proxy = env_get ("no_proxy", "NO_PROXY");
  g_autoptr (GPtrArray) ignore = g_ptr_array_new_with_free_func (g_free);
  g_auto (GStrv) entries = NULL;
  GSimpleProxyResolver *resolver;

  if (http == NULL && https == NULL)
    return NULL;
  entries = g_strsplit_set (no_proxy != NULL ? no_proxy : "", ", \t", -1);
  for (gsize i = 0; entries[i] != NULL; i++)
    {
      char *entry;

      if (strcmp (entries[i], "*") == 0)
        return NULL; /* no proxy for any host */
      entry = no_proxy_entry (entries[i]);
      if (entry != NULL)
        g_ptr_array_add (ignore, entry);
    }
  g_ptr_array_add (ignore, NULL);
  resolver = g_object_new (GT_TYPE_ENV_PROXY_RESOLVER, "ignore-hosts", ignore->pdata, NULL);
  /* Tunnels over TLS (tls://, wss://) use https_proxy, the others http_proxy. */
  for (const char *const *s = (const char *const[]){ "tcp", "ws", "http", NULL }; *s; s++)
    if (http != NULL)
      g_simple_proxy_resolver_set_uri_proxy (resolver, *s, http);
  for (const char *const *s = (const char *const[]){ "tls", "wss", "https", NULL }; *s; s++)
    if (https != NULL)
      g_simple_proxy_resolver_set_uri_proxy (resolver, *s, https);
  return G_PROXY_RESOLVER (resolver);
}

char *
gt_http_proxy_lookup (GProxyResolver *resolver, const char *scheme, const char *host,
                      guint16 port, GError **error)
{
  g_autofree char *bare = NULL;
  g_autofree char *uri = NULL;
  g_auto (GStrv) proxies = NULL;

  g_return_val_if_fail (scheme != NULL && host != NULL, NULL);

  if (resolver == NULL)
    return g_strdup ("direct://");
  bare = host_normalize (host);
  uri = g_strdup_printf (strchr (bare, ':') != NULL ? "%s://[%s]:%u/" : "%s://%s:%u/", scheme,
                         bare, port);
  /* GSimpleProxyResolver answers at once, without I/O. */
  proxies = g_proxy_resolver_lookup (resolver, uri, NULL, error);
  if (proxies == NULL)
    return NULL;
  return g_strdup (proxies[0] != NULL ? proxies[0] : "direct://");
}

char *
gt_http_proxy_for (const char *scheme, const char *host)
{
  g_autoptr (GProxyResolver) resolver = gt_http_proxy_resolver_new_from_env ();
  g_autofree char *proxy = NULL;

  g_return_val_if_fail (scheme != NULL, NULL);
  g_return_val_if_fail (host != NULL, NULL);

  proxy = gt_http_proxy_lookup (resolver, scheme, host, 1, NULL);
  if (proxy == NULL || strcmp (proxy, "direct://") == 0)
    return NULL;
  return g_steal_pointer (&proxy);
}

/* ------------------------------------------------------------------------------------------ */
/* Reading a head without over-reading */

typedef struct
{
  GIOStream *io;
  GByteArray *buf;
  gsize max_len;
  GSource *source;
} HeadRead;

static void
head_read_free (HeadRead *hr)
{
  if (hr->source != NULL)
    {
      g_source_destroy (hr->source);
      g_source_unref (hr->source);
    }
  g_clear_object (&hr->io);
  g_clear_pointer (&hr->buf, g_byte_array_unref);
  g_free (hr);
}

static gboolean
head_complete (const GByteArray *buf)
{
  const guint8 *d = buf->data;
  gsize n = buf->len;

  return (n >= 4 && memcmp (d + n - 4, "\r\n\r\n", 4) == 0)
         || (n >= 2 && d[n - 1] == '\n' && d[n - 2] == '\n');
}

/* Returns TRUE when the task has been completed. */
static gboolean
head_read_step (GTask *task)
{
  HeadRead *hr = g_task_get_task_data (task);
  GPollableInputStream *in = G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (hr->io));

  for (;;)
    {
      g_autoptr (GError) error = NULL;
      guint8 byte;
      gssize n;

      n = g_pollable_input_stream_read_nonblocking (in, &byte, 1, g_task_get_cancellable (task),
                                                    &error);
      if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        return FALSE;
      if (n < 0)
        {
          g_task_return_error (task, g_steal_pointer (&error));
          return TRUE;
        }
      if (n == 0)
        {
          g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                                   "connection closed before the end of the HTTP response head");
          return TRUE;
        }
      g_byte_array_append (hr->buf, &byte, 1);
      if (head_complete (hr->buf))
        {
          g_task_return_pointer (task, g_byte_array_free_to_bytes (g_steal_pointer (&hr->buf)),
                                 (GDestroyNotify) g_bytes_unref);
          return TRUE;
        }
      if (hr->buf->len >= hr->max_len)
        {
          g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE,
                                   "HTTP response head larger than %" G_GSIZE_FORMAT " bytes",
                                   hr->max_len);
          return TRUE;
        }
    }
}

static gboolean
head_readable_cb (GObject *stream, gpointer user_data)
{
  GTask *task = user_data;

  if (!head_read_step (task))
    return G_SOURCE_CONTINUE;
  /* Completed: the source goes away with the task data; drop our reference to it first. */
  g_clear_pointer (&((HeadRead *) g_task_get_task_data (task))->source, g_source_unref);
  return G_SOURCE_REMOVE;
}

void
gt_http_read_head_async (GIOStream *io, gsize max_len, GCancellable *cancellable,
                         GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GTask) task = NULL;
  HeadRead *hr;
  GInputStream *in;

  g_return_if_fail (G_IS_IO_STREAM (io));
  in = g_io_stream_get_input_stream (io);
  g_return_if_fail (G_IS_POLLABLE_INPUT_STREAM (in));

  task = g_task_new (io, cancellable, callback, user_data);
  g_task_set_source_tag (task, gt_http_read_head_async);
  hr = g_new0 (HeadRead, 1);
  hr->io = g_object_ref (io);
  hr->buf = g_byte_array_sized_new (256);
  hr->max_len = max_len > 0 ? max_len : GT_HTTP_PROXY_MAX_HEAD;
  g_task_set_task_data (task, hr, (GDestroyNotify) head_read_free);

  if (head_read_step (task))
    return;
  hr->source = g_pollable_input_stream_create_source (G_POLLABLE_INPUT_STREAM (in), cancellable);
  g_source_set_callback (hr->source, (GSourceFunc) (void (*) (void)) head_readable_cb,
                         g_object_ref (task), g_object_unref);
  g_source_attach (hr->source, g_task_get_context (task));
}

GBytes *
gt_http_read_head_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gt_http_read_head_async, NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}

char *
gt_http_status_line (const guint8 *head, gsize len)
{
  GString *s = g_string_new (NULL);

  for (gsize i = 0; i < len && s->len < 200; i++)
    {
      if (head[i] == '\r' || head[i] == '\n')
        break;
      g_string_append_c (s, head[i] >= 0x20 && head[i] < 0x7f ? (char) head[i] : '?');
    }
  return g_string_free (s, FALSE);
}

/* ------------------------------------------------------------------------------------------ */
/* CONNECT
 *
 * GIO has an HTTP CONNECT GProxy ("http" extension, used by GSocketClient), but it is not used
 * here: it reports a refusal only as "HTTP proxy connection failed" / "authentication required"
 * without the proxy's status line, which is what a user needs to see to fix a proxy setup
 * (tests/test-http-proxy.c checks it). So the request and the head reading stay gt's own; the
 * choice of proxy is GIO's resolver above. */

typedef struct
{
  char *proxy_host;
  guint16 proxy_port;
  char *proxy_desc; /* host:port of the proxy, for messages */
  char *authority;  /* host:port being connected to */
  char *auth;       /* Proxy-Authorization value or NULL */
  char *request;
  GSocketConnection *conn;
} ConnectData;

static void
connect_data_free (ConnectData *cd)
{
  g_free (cd->proxy_host);
  g_free (cd->proxy_desc);
  g_free (cd->authority);
  if (cd->auth != NULL)
    memset (cd->auth, 0, strlen (cd->auth));
  g_free (cd->auth);
  if (cd->request != NULL)
    memset (cd->request, 0, strlen (cd->request));
  g_free (cd->request);
  g_clear_object (&cd->conn);
  g_free (cd);
}

/* Parses "HTTP/1.x NNN ..." into the status code; 0 when it is not such a line. */
static guint
parse_status (const guint8 *head, gsize len)
{
  if (len < 12 || memcmp (head, "HTTP/1.", 7) != 0 || !g_ascii_isdigit (head[7]) || head[8] != ' '
      || !g_ascii_isdigit (head[9]) || !g_ascii_isdigit (head[10])
      || !g_ascii_isdigit (head[11]) || (len > 12 && head[12] != ' ' && head[12] != '\r'
                                         && head[12] != '\n'))
    return 0;
  return (head[9] - '0') * 100 + (head[10] - '0') * 10 + (head[11] - '0');
}

static void
connect_head_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  ConnectData *cd = g_task_get_task_data (task);
  g_autoptr (GBytes) head = NULL;
  g_autofree char *line = NULL;
  GError *error = NULL;
  const guint8 *data;
  gsize len;
  guint status;

  head = gt_http_read_head_finish (result, &error);
  if (head == NULL)
    {
      g_prefix_error (&error, "HTTP proxy %s: ", cd->proxy_desc);
      g_task_return_error (task, error);
      return;
    }
  data = g_bytes_get_data (head, &len);
  status = parse_status (data, len);
  line = gt_http_status_line (data, len);
  if (status == 0)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_PROXY_FAILED,
                               "HTTP proxy %s sent an invalid response: %s", cd->proxy_desc,
                               line);
      return;
    }
  if (status < 200 || status > 299)
    {
      g_task_return_new_error (task, G_IO_ERROR,
                               status == 407 ? G_IO_ERROR_PROXY_AUTH_FAILED
                                             : G_IO_ERROR_PROXY_FAILED,
                               "HTTP proxy %s refused CONNECT %s: %s", cd->proxy_desc,
                               cd->authority, line);
      return;
    }
  g_task_return_pointer (task, g_steal_pointer (&cd->conn), g_object_unref);
}

static void
connect_written_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  ConnectData *cd = g_task_get_task_data (task);
  GCancellable *cancellable = g_task_get_cancellable (task);
  GError *error = NULL;

  if (!g_output_stream_write_all_finish (G_OUTPUT_STREAM (source), result, NULL, &error))
    {
      g_prefix_error (&error, "HTTP proxy %s: ", cd->proxy_desc);
      g_task_return_error (task, error);
      return;
    }
  gt_http_read_head_async (G_IO_STREAM (cd->conn), GT_HTTP_PROXY_MAX_HEAD,
                           cancellable, connect_head_cb,
                           g_steal_pointer (&task));
}

static void
connect_connected_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  ConnectData *cd = g_task_get_task_data (task);
  GCancellable *cancellable = g_task_get_cancellable (task);
  GError *error = NULL;
  GOutputStream *out;

  cd->conn = g_socket_client_connect_finish (G_SOCKET_CLIENT (source), result, &error);
  if (cd->conn == NULL)
    {
      g_prefix_error (&error, "HTTP proxy %s: ", cd->proxy_desc);
      g_task_return_error (task, error);
      return;
    }
  g_socket_set_option (g_socket_connection_get_socket (cd->conn), IPPROTO_TCP, TCP_NODELAY, 1,
                       NULL);
  cd->request = g_strdup_printf ("CONNECT %s HTTP/1.1\r\n"
                                 "Host: %s\r\n"
                                 "User-Agent: gt/" PACKAGE_VERSION "\r\n"
                                 "%s%s%s"
                                 "\r\n",
                                 cd->authority, cd->authority,
                                 cd->auth != NULL ? "Proxy-Authorization: " : "",
                                 cd->auth != NULL ? cd->auth : "", cd->auth != NULL ? "\r\n" : "");
  out = g_io_stream_get_output_stream (G_IO_STREAM (cd->conn));
  g_output_stream_write_all_async (out, cd->request, strlen (cd->request), G_PRIORITY_DEFAULT,
                                   cancellable, connect_written_cb,
                                   g_steal_pointer (&task));
}

void
gt_http_connect_async (const char *proxy_url, const char *host, guint16 port,
                       GCancellable *cancellable, GAsyncReadyCallback callback,
                       gpointer user_data)
{
  g_autoptr (GTask) task = NULL;
  g_autoptr (GUri) uri = NULL;
  g_autoptr (GSocketClient) client = NULL;
  g_autoptr (GSocketConnectable) addr = NULL;
  g_autofree char *with_scheme = NULL;
  g_autofree char *target = NULL;
  GError *error = NULL;
  ConnectData *cd;
  const char *user;

  g_return_if_fail (proxy_url != NULL);
  g_return_if_fail (host != NULL && *host != '\0');

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, gt_http_connect_async);

  if (strstr (proxy_url, "://") == NULL)
    proxy_url = with_scheme = g_strconcat ("http://", proxy_url, NULL);
  uri = g_uri_parse (proxy_url, G_URI_FLAGS_HAS_PASSWORD, &error);
  if (uri == NULL)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "invalid proxy URL: %s", error->message);
      g_error_free (error);
      return;
    }
  if (g_ascii_strcasecmp (g_uri_get_scheme (uri), "http") != 0 || g_uri_get_host (uri) == NULL
      || *g_uri_get_host (uri) == '\0')
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                               "unsupported proxy URL (only http://host[:port] proxies): "
                               "scheme '%s'",
                               g_uri_get_scheme (uri));
      return;
    }

  cd = g_new0 (ConnectData, 1);
  g_task_set_task_data (task, cd, (GDestroyNotify) connect_data_free);
  cd->proxy_host = g_strdup (g_uri_get_host (uri));
  cd->proxy_port = g_uri_get_port (uri) > 0 ? g_uri_get_port (uri) : 80;
  cd->proxy_desc = strchr (cd->proxy_host, ':') != NULL
                     ? g_strdup_printf ("[%s]:%u", cd->proxy_host, cd->proxy_port)
                     : g_strdup_printf ("%s:%u", cd->proxy_host, cd->proxy_port);
  if (strchr (host, ':') != NULL && host[0] != '[')
    target = g_strdup_printf ("[%s]", host);
  else
    target = g_strdup (host);
  cd->authority = g_strdup_printf ("%s:%u", target, port);
  if (strpbrk (cd->authority, " \r\n\t") != NULL)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "invalid CONNECT target host");
      return;
    }

  user = g_uri_get_user (uri);
  if (user != NULL && *user != '\0')
    {
      const char *password = g_uri_get_password (uri);
      g_autofree char *cred = g_strdup_printf ("%s:%s", user, password ? password : "");
      g_autofree char *b64 = g_base64_encode ((const guchar *) cred, strlen (cred));

      cd->auth = g_strconcat ("Basic ", b64, NULL);
      memset (cred, 0, strlen (cred));
    }

  client = g_socket_client_new ();
  g_socket_client_set_enable_proxy (client, FALSE);
  addr = g_network_address_new (cd->proxy_host, cd->proxy_port);
  g_socket_client_connect_async (client, addr, cancellable, connect_connected_cb,
                                 g_steal_pointer (&task));
}

GIOStream *
gt_http_connect_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gt_http_connect_async, NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}
