/* gt-transport.c: plain TCP tunnel transport and socket helpers shared by server and client. */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>

#include "gt-certificate.h"
#include "gt-fd-source.h"
#include "gt-http-proxy.h"
#include "gt-transport.h"
#include "gt-ws-stream.h"

typedef struct
{
  char *host;
  guint16 port;
  char *remote_cert;
  gboolean insecure;
  gboolean tls;
} ConnectData;

static void
connect_data_free (ConnectData *d)
{
  g_free (d->host);
  g_free (d->remote_cert);
  g_free (d);
}

static gboolean
is_pin (const char *remote_cert)
{
  return remote_cert != NULL && g_str_has_prefix (remote_cert, "sha256:");
}

static gboolean
accept_certificate_cb (GTlsConnection *conn, GTlsCertificate *peer, GTlsCertificateFlags errors,
                       gpointer user_data)
{
  ConnectData *d = user_data;

  if (d->insecure)
    return TRUE;
  if (is_pin (d->remote_cert))
    return gt_certificate_pin_matches (peer, d->remote_cert);
  return FALSE;
}

static void
tls_handshake_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  GError *error = NULL;

  ConnectData *d = g_task_get_task_data (task);

  g_signal_handlers_disconnect_by_data (source, d);
  if (!g_tls_connection_handshake_finish (G_TLS_CONNECTION (source), result, &error))
    {
      g_autofree char *why = NULL;

      if (g_error_matches (error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE))
        {
          if (is_pin (d->remote_cert))
            why = g_strdup ("the certificate does not match the pinned fingerprint; ");
          else if (d->remote_cert != NULL)
            why = g_strdup_printf ("the certificate is not signed by the CA in %s (or names "
                                   "another host); ",
                                   d->remote_cert);
          else
            why = g_strdup ("the certificate is not trusted by the system CAs (set remoteCert "
                            "to a CA file or a sha256: pin); ");
        }
      g_prefix_error (&error, "TLS with %s: %s", d->host, why ? why : "");
      g_task_return_error (task, error);
      return;
    }
  g_task_return_pointer (task, g_object_ref (source), g_object_unref);
}

/* Wraps a connected stream in TLS (tls://) or hands it back (tcp://). */
static void
connected (GTask *task, GIOStream *io)
{
  ConnectData *d = g_task_get_task_data (task);
  g_autoptr (GSocketConnectable) identity = NULL;
  GError *error = NULL;
  GIOStream *tls;

  if (!d->tls)
    {
      g_task_return_pointer (task, g_object_ref (io), g_object_unref);
      g_object_unref (task);
      return;
    }
  identity = g_network_address_new (d->host, d->port);
  tls = g_tls_client_connection_new (io, identity, &error);
  if (tls == NULL)
    {
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }
  g_tls_connection_set_require_close_notify (G_TLS_CONNECTION (tls), FALSE);
  if (is_pin (d->remote_cert) || d->insecure)
    /* Pinned or unverified: the system CA store is not needed, so it is never loaded (it costs
     * tens of MiB once parsed); accept_certificate_cb decides. */
    g_tls_connection_set_database (G_TLS_CONNECTION (tls), NULL);
  else if (d->remote_cert != NULL)
    {
      g_autoptr (GTlsDatabase) db = g_tls_file_database_new (d->remote_cert, &error);

      if (db == NULL)
        {
          g_object_unref (tls);
          g_task_return_error (task, error);
          g_object_unref (task);
          return;
        }
      g_tls_connection_set_database (G_TLS_CONNECTION (tls), db);
    }
  g_signal_connect (tls, "accept-certificate", G_CALLBACK (accept_certificate_cb), d);
  g_tls_connection_handshake_async (G_TLS_CONNECTION (tls), G_PRIORITY_DEFAULT,
                                    g_task_get_cancellable (task), tls_handshake_done_cb, task);
  g_object_unref (tls); /* the handshake keeps it alive; the task returns a new ref */
}

static void
connect_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GTask *task = user_data;
  GError *error = NULL;
  g_autoptr (GSocketConnection) conn = NULL;

  conn = g_socket_client_connect_to_host_finish (G_SOCKET_CLIENT (source), result, &error);
  if (conn == NULL)
    {
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }
  gt_socket_set_nodelay (g_socket_get_fd (g_socket_connection_get_socket (conn)));
  connected (task, G_IO_STREAM (conn));
}

static void
proxy_connect_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GTask *task = user_data;
  GError *error = NULL;
  g_autoptr (GIOStream) io = gt_http_connect_finish (result, &error);

  if (io == NULL)
    {
      g_prefix_error (&error, "through the HTTP proxy: ");
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }
  connected (task, io);
}

static void
ws_connect_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  GError *error = NULL;
  GIOStream *io = gt_ws_connect_finish (result, &error);

  if (io == NULL)
    g_task_return_error (task, error);
  else
    g_task_return_pointer (task, io, g_object_unref);
}

void
gt_transport_connect_async (const GtRemote *remote, const GtTransportSecurity *security,
                            GCancellable *cancellable, GAsyncReadyCallback callback,
                            gpointer user_data)
{
  GTask *task = g_task_new (NULL, cancellable, callback, user_data);
  ConnectData *d = g_new0 (ConnectData, 1);

  g_task_set_source_tag (task, gt_transport_connect_async);
  d->host = g_strdup (remote->host);
  d->port = remote->port;
  d->remote_cert = g_strdup (security ? security->remote_cert : NULL);
  d->insecure = security ? security->insecure : FALSE;
  g_task_set_task_data (task, d, (GDestroyNotify) connect_data_free);

  if (g_strcmp0 (remote->scheme, "ws") == 0 || g_strcmp0 (remote->scheme, "wss") == 0)
    {
      g_autofree char *url = NULL;
      g_autoptr (GTlsDatabase) db = NULL;
      g_autoptr (GProxyResolver) proxy = gt_http_proxy_resolver_new_from_env ();
      GError *error = NULL;

      if (strchr (remote->host, ':') != NULL && remote->host[0] != '[')
        url = g_strdup_printf ("%s://[%s]:%u%s", remote->scheme, remote->host, remote->port,
                               remote->path ? remote->path : "/");
      else
        url = g_strdup_printf ("%s://%s:%u%s", remote->scheme, remote->host, remote->port,
                               remote->path ? remote->path : "/");
      if (d->remote_cert != NULL && !is_pin (d->remote_cert))
        {
          db = g_tls_file_database_new (d->remote_cert, &error);
          if (db == NULL)
            {
              g_task_return_error (task, error);
              g_object_unref (task);
              return;
            }
        }
      gt_ws_connect_async (url, db, is_pin (d->remote_cert) ? d->remote_cert : NULL, d->insecure,
                           proxy, cancellable, ws_connect_done_cb, task);
      return;
    }

  if (g_strcmp0 (remote->scheme, "tcp") == 0 || g_strcmp0 (remote->scheme, "tls") == 0)
    {
      g_autofree char *proxy = NULL;
      g_autoptr (GSocketClient) client = NULL;

      d->tls = g_strcmp0 (remote->scheme, "tls") == 0;
      if (d->tls)
        proxy = gt_http_proxy_for ("tls", remote->host);
      if (proxy != NULL)
        {
          gt_http_connect_async (proxy, remote->host, remote->port, cancellable,
                                 proxy_connect_done_cb, task);
          return;
        }
      client = g_socket_client_new ();
      g_socket_client_set_timeout (client, 0);
      /* Proxies from the environment are handled above (no GIO proxy modules loaded). */
      g_socket_client_set_enable_proxy (client, FALSE);
      g_socket_client_connect_to_host_async (client, remote->host, remote->port, cancellable,
                                             connect_done_cb, task);
      return;
    }

  g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                           "transport '%s' is not supported", remote->scheme);
  g_object_unref (task);
}

GIOStream *
gt_transport_connect_finish (GAsyncResult *result, GError **error)
{
  return g_task_propagate_pointer (G_TASK (result), error);
}

GIOStream *
gt_transport_wrap_fd (int fd, GError **error)
{
  g_autoptr (GSocket) socket = g_socket_new_from_fd (fd, error);

  if (socket == NULL)
    {
      close (fd);
      return NULL;
    }
  gt_socket_set_nodelay (fd);
  return G_IO_STREAM (g_socket_connection_factory_create_connection (socket));
}

GSocketAddress *
gt_resolve_address (const char *host, guint16 port, GError **error)
{
  g_autoptr (GInetAddress) ia = NULL;
  g_autolist (GInetAddress) list = NULL;
  g_autofree char *bare = NULL;

  if (host[0] == '[')
    bare = g_strndup (host + 1, strlen (host) > 2 ? strlen (host) - 2 : 0);
  else
    bare = g_strdup (host);
  ia = g_inet_address_new_from_string (bare);
  if (ia == NULL)
    {
      list = g_resolver_lookup_by_name (g_resolver_get_default (), bare, NULL, error);
      if (list == NULL)
        return NULL;
      ia = g_object_ref (list->data);
    }
  return g_inet_socket_address_new (ia, port);
}

int
gt_tcp_listen_on (GInetAddress *address, guint16 port, GError **error)
{
  g_autoptr (GSocketAddress) sa = g_inet_socket_address_new (address, port);
  struct sockaddr_storage ss;
  gsize len = g_socket_address_get_native_size (sa);
  int one = 1;
  int fd;

  if (!g_socket_address_to_native (sa, &ss, sizeof ss, error))
    return -1;
  fd = socket (ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    {
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errno), "socket: %s",
                   g_strerror (errno));
      return -1;
    }
  setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind (fd, (struct sockaddr *) &ss, len) < 0 || listen (fd, 4096) < 0)
    {
      int saved = errno;
      g_autofree char *text = g_inet_address_to_string (address);

      close (fd);
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved), "cannot listen on %s:%u: %s",
                   text, port, g_strerror (saved));
      return -1;
    }
  return fd;
}

int
gt_tcp_listen (const char *addr, GError **error)
{
  g_autoptr (GSocketConnectable) na = g_network_address_parse (addr, 0, error);
  g_autoptr (GSocketAddress) sa = NULL;

  if (na == NULL)
    return -1;
  sa = gt_resolve_address (g_network_address_get_hostname (G_NETWORK_ADDRESS (na)),
                           g_network_address_get_port (G_NETWORK_ADDRESS (na)), error);
  if (sa == NULL)
    return -1;
  return gt_tcp_listen_on (g_inet_socket_address_get_address (G_INET_SOCKET_ADDRESS (sa)),
                           g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (sa)), error);
}

static char *
describe (int fd, gboolean peer)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  g_autoptr (GSocketAddress) sa = NULL;
  g_autofree char *ip = NULL;
  guint16 port;
  GInetAddress *ia;

  if ((peer ? getpeername (fd, (struct sockaddr *) &ss, &len)
            : getsockname (fd, (struct sockaddr *) &ss, &len)) < 0)
    return g_strdup ("?");
  sa = g_socket_address_new_from_native (&ss, len);
  if (sa == NULL || !G_IS_INET_SOCKET_ADDRESS (sa))
    return g_strdup ("?");
  ia = g_inet_socket_address_get_address (G_INET_SOCKET_ADDRESS (sa));
  port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (sa));
  ip = g_inet_address_to_string (ia);
  if (g_inet_address_get_family (ia) == G_SOCKET_FAMILY_IPV6)
    return g_strdup_printf ("[%s]:%u", ip, port);
  return g_strdup_printf ("%s:%u", ip, port);
}

char *
gt_fd_describe_local (int fd)
{
  return describe (fd, FALSE);
}

char *
gt_fd_describe_peer (int fd)
{
  return describe (fd, TRUE);
}

guint16
gt_fd_get_local_port (int fd)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;

  if (getsockname (fd, (struct sockaddr *) &ss, &len) < 0)
    return 0;
  if (ss.ss_family == AF_INET)
    return g_ntohs (((struct sockaddr_in *) &ss)->sin_port);
  if (ss.ss_family == AF_INET6)
    return g_ntohs (((struct sockaddr_in6 *) &ss)->sin6_port);
  return 0;
}
