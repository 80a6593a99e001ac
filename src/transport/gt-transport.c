/* gt-transport.c: plain TCP tunnel transport and socket helpers shared by server and client. */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>

#include "gt-fd-source.h"
#include "gt-transport.h"

static void
connect_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  GError *error = NULL;
  GSocketConnection *conn;

  conn = g_socket_client_connect_to_host_finish (G_SOCKET_CLIENT (source), result, &error);
  if (conn == NULL)
    {
      g_task_return_error (task, error);
      return;
    }
  gt_socket_set_nodelay (g_socket_get_fd (g_socket_connection_get_socket (conn)));
  g_task_return_pointer (task, conn, g_object_unref);
}

void
gt_transport_connect_async (const GtRemote *remote, GCancellable *cancellable,
                            GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GSocketClient) client = NULL;
  g_autoptr (GTask) task = g_task_new (NULL, cancellable, callback, user_data);

  g_task_set_source_tag (task, gt_transport_connect_async);
  if (g_strcmp0 (remote->scheme, "tcp") != 0)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                               "transport '%s' is not supported", remote->scheme);
      return;
    }
  client = g_socket_client_new ();
  g_socket_client_set_timeout (client, 0);
  /* Proxies from the environment are handled by gt itself (no GIO proxy modules loaded). */
  g_socket_client_set_enable_proxy (client, FALSE);
  g_socket_client_connect_to_host_async (client, remote->host, remote->port, cancellable,
                                         connect_done_cb, g_steal_pointer (&task));
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
