/* gt-http-proxy.c: HTTP proxies from the environment and HTTP CONNECT tunnels through them. */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>

#include "gt-http-proxy.h"

/* ------------------------------------------------------------------------------------------ */
/* Environment */

typedef struct
{
  char *http;
  char *https;
  char *no_proxy;
} ProxyEnv;

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

static void
proxy_env_load (ProxyEnv *env)
{
  env->http = env_get ("http_proxy", "HTTP_PROXY");
  env->https = env_get ("https_proxy", "HTTPS_PROXY");
  env->no_proxy = env_get ("no_proxy", "NO_PROXY");
}

static void
proxy_env_clear (ProxyEnv *env)
{
  g_clear_pointer (&env->http, g_free);
  g_clear_pointer (&env->https, g_free);
  g_clear_pointer (&env->no_proxy, g_free);
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

static gboolean
no_proxy_entry_matches (const char *raw, const char *host, GInetAddress *host_ip)
{
  g_autofree char *entry = NULL;
  const char *colon;
  gsize n;

  if (strcmp (raw, "*") == 0)
    return TRUE;
  if (strchr (raw, '/') != NULL)
    {
      g_autoptr (GInetAddressMask) mask = g_inet_address_mask_new_from_string (raw, NULL);

      return mask != NULL && host_ip != NULL && g_inet_address_mask_matches (mask, host_ip);
    }
  if (g_str_has_prefix (raw, "*."))
    raw++;
  entry = g_ascii_strdown (raw, -1);
  /* "host:port": the port is ignored (one colon only, so IPv6 literals stay intact). */
  colon = strchr (entry, ':');
  if (colon != NULL && strchr (colon + 1, ':') == NULL && entry[0] != '[')
    entry[colon - entry] = '\0';
  else if (entry[0] == '[')
    {
      char *end = strchr (entry, ']');

      if (end != NULL)
        {
          *end = '\0';
          memmove (entry, entry + 1, strlen (entry + 1) + 1);
        }
    }
  n = strlen (entry);
  if (n > 1 && entry[n - 1] == '.')
    entry[--n] = '\0';
  if (n == 0)
    return FALSE;

  if (entry[0] == '.')
    return g_str_has_suffix (host, entry) || strcmp (host, entry + 1) == 0;
  if (host_ip != NULL)
    {
      g_autoptr (GInetAddress) ip = g_inet_address_new_from_string (entry);

      return ip != NULL && g_inet_address_equal (ip, host_ip);
    }
  if (strcmp (host, entry) == 0)
    return TRUE;
  return g_str_has_suffix (host, entry) && strlen (host) > n && host[strlen (host) - n - 1] == '.';
}

static gboolean
no_proxy_matches (const char *no_proxy, const char *host_in)
{
  g_autofree char *host = NULL;
  g_autoptr (GInetAddress) host_ip = NULL;
  g_auto (GStrv) entries = NULL;

  if (no_proxy == NULL)
    return FALSE;
  host = host_normalize (host_in);
  host_ip = g_inet_address_new_from_string (host);
  entries = g_strsplit_set (no_proxy, ", \t", -1);
  for (gsize i = 0; entries[i] != NULL; i++)
    if (entries[i][0] != '\0' && no_proxy_entry_matches (entries[i], host, host_ip))
      return TRUE;
  return FALSE;
}

static char *
proxy_env_lookup (const ProxyEnv *env, const char *scheme, const char *host)
{
  const char *proxy;

  if (g_ascii_strcasecmp (scheme, "tls") == 0 || g_ascii_strcasecmp (scheme, "wss") == 0
      || g_ascii_strcasecmp (scheme, "https") == 0)
    proxy = env->https;
  else
    proxy = env->http;
  if (proxy == NULL || no_proxy_matches (env->no_proxy, host))
    return NULL;
  if (strstr (proxy, "://") == NULL)
    return g_strconcat ("http://", proxy, NULL);
  return g_strdup (proxy);
}

char *
gt_http_proxy_for (const char *scheme, const char *host)
{
  ProxyEnv env = { NULL };
  char *result;

  g_return_val_if_fail (scheme != NULL, NULL);
  g_return_val_if_fail (host != NULL, NULL);

  proxy_env_load (&env);
  result = proxy_env_lookup (&env, scheme, host);
  proxy_env_clear (&env);
  return result;
}

/* ------------------------------------------------------------------------------------------ */
/* GProxyResolver over a snapshot of the environment */

#define GT_TYPE_ENV_PROXY_RESOLVER (gt_env_proxy_resolver_get_type ())
G_DECLARE_FINAL_TYPE (GtEnvProxyResolver, gt_env_proxy_resolver, GT, ENV_PROXY_RESOLVER, GObject)

struct _GtEnvProxyResolver
{
  GObject parent_instance;
  ProxyEnv env;
};

static void gt_env_proxy_resolver_iface_init (GProxyResolverInterface *iface);

G_DEFINE_TYPE_WITH_CODE (GtEnvProxyResolver, gt_env_proxy_resolver, G_TYPE_OBJECT,
                         G_IMPLEMENT_INTERFACE (G_TYPE_PROXY_RESOLVER,
                                                gt_env_proxy_resolver_iface_init))

static void
gt_env_proxy_resolver_finalize (GObject *object)
{
  GtEnvProxyResolver *self = GT_ENV_PROXY_RESOLVER (object);

  proxy_env_clear (&self->env);
  G_OBJECT_CLASS (gt_env_proxy_resolver_parent_class)->finalize (object);
}

static void
gt_env_proxy_resolver_class_init (GtEnvProxyResolverClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = gt_env_proxy_resolver_finalize;
}

static void
gt_env_proxy_resolver_init (GtEnvProxyResolver *self)
{
}

static gboolean
env_resolver_is_supported (GProxyResolver *resolver)
{
  return TRUE;
}

static char **
env_resolver_lookup (GProxyResolver *resolver, const char *uri, GCancellable *cancellable,
                     GError **error)
{
  GtEnvProxyResolver *self = GT_ENV_PROXY_RESOLVER (resolver);
  g_autofree char *scheme = NULL;
  g_autofree char *host = NULL;
  char **result;

  if (!g_uri_split_network (uri, G_URI_FLAGS_NONE, &scheme, &host, NULL, error))
    return NULL;
  result = g_new0 (char *, 2);
  result[0] = proxy_env_lookup (&self->env, scheme, host);
  if (result[0] == NULL)
    result[0] = g_strdup ("direct://");
  return result;
}

static void
env_resolver_lookup_async (GProxyResolver *resolver, const char *uri, GCancellable *cancellable,
                           GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GTask) task = g_task_new (resolver, cancellable, callback, user_data);
  GError *error = NULL;
  char **result;

  g_task_set_source_tag (task, env_resolver_lookup_async);
  result = env_resolver_lookup (resolver, uri, cancellable, &error);
  if (result == NULL)
    g_task_return_error (task, error);
  else
    g_task_return_pointer (task, result, (GDestroyNotify) g_strfreev);
}

static char **
env_resolver_lookup_finish (GProxyResolver *resolver, GAsyncResult *result, GError **error)
{
  return g_task_propagate_pointer (G_TASK (result), error);
}

static void
gt_env_proxy_resolver_iface_init (GProxyResolverInterface *iface)
{
  iface->is_supported = env_resolver_is_supported;
  iface->lookup = env_resolver_lookup;
  iface->lookup_async = env_resolver_lookup_async;
  iface->lookup_finish = env_resolver_lookup_finish;
}

GProxyResolver *
gt_http_proxy_resolver_new_from_env (void)
{
  GtEnvProxyResolver *self = g_object_new (GT_TYPE_ENV_PROXY_RESOLVER, NULL);

  proxy_env_load (&self->env);
  if (self->env.http == NULL && self->env.https == NULL)
    {
      g_object_unref (self);
      return NULL;
    }
  return G_PROXY_RESOLVER (self);
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
/* CONNECT */

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
