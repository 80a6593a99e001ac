/* gt-transport-tcp.c: tcp:// tunnels, the TCP dial every client transport starts with, and raw TCP
 * socket helpers shared by server and client. */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>

#include "gt-fd-source.h"
#include "gt-http-proxy.h"
#include "gt-transport-private.h"

/* ------------------------------------------------------------------------------------------ */
/* Dialing */

static void
tcp_connected (GTask *task, GIOStream *io)
{
  if (G_IS_SOCKET_CONNECTION (io))
    gt_socket_set_nodelay (g_socket_get_fd (g_socket_connection_get_socket (G_SOCKET_CONNECTION (io))));
  g_task_return_pointer (task, g_object_ref (io), g_object_unref);
  g_object_unref (task);
}

static void
tcp_direct_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GTask *task = user_data;
  GError *error = NULL;
  g_autoptr (GSocketConnection) conn = NULL;

  conn = g_socket_client_connect_finish (G_SOCKET_CLIENT (source), result, &error);
  if (conn == NULL)
    {
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }
  tcp_connected (task, G_IO_STREAM (conn));
}

static void
tcp_proxy_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
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
  tcp_connected (task, io);
}

void
_gt_transport_tcp_dial (const char *host, guint16 port, const char *proxy, GTask *task)
{
  g_autoptr (GSocketClient) client = NULL;
  g_autoptr (GSocketConnectable) addr = NULL;

  if (proxy != NULL)
    {
      gt_http_connect_async (proxy, host, port, g_task_get_cancellable (task), tcp_proxy_done_cb,
                             task);
      return;
    }
  /* Name resolution is asynchronous in GSocketClient. Proxies from the environment are handled
   * above, with gt's own no_proxy rules, so GIO's proxy lookup stays off. */
  client = g_socket_client_new ();
  g_socket_client_set_timeout (client, 0);
  g_socket_client_set_enable_proxy (client, FALSE);
  addr = g_network_address_new (host, port);
  g_socket_client_connect_async (client, addr, g_task_get_cancellable (task), tcp_direct_done_cb,
                                 task);
}

static void
tcp_dial (const GtRemote *remote, const GtTransportSecurity *security, GTask *task)
{
  /* tcp:// has always connected directly (gt's protocol is not HTTP). */
  _gt_transport_tcp_dial (remote->host, remote->port, NULL, task);
}

static void
tcp_accept (GIOStream *io, const guint8 *head, gsize head_len, GTlsCertificate *certificate,
            GTask *task)
{
  g_task_return_pointer (task, g_object_ref (io), g_object_unref);
  g_object_unref (task);
}

const GtTransportLeaf _gt_transport_tcp = { "tcp", tcp_dial, tcp_accept };

/* ------------------------------------------------------------------------------------------ */
/* Socket helpers */

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

static char *
bare_host (const char *host)
{
  if (host[0] == '[')
    return g_strndup (host + 1, strlen (host) > 2 ? strlen (host) - 2 : 0);
  return g_strdup (host);
}

static void
resolve_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  g_autolist (GInetAddress) list = NULL;
  GError *error = NULL;

  list = g_resolver_lookup_by_name_finish (G_RESOLVER (source), result, &error);
  if (list == NULL)
    {
      g_task_return_error (task, error);
      return;
    }
  g_task_return_pointer (task,
                         g_inet_socket_address_new (list->data,
                                                    GPOINTER_TO_UINT (g_task_get_task_data (task))),
                         g_object_unref);
}

void
gt_resolve_address_async (const char *host, guint16 port, GCancellable *cancellable,
                          GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GTask) task = g_task_new (NULL, cancellable, callback, user_data);
  g_autofree char *bare = bare_host (host);
  g_autoptr (GInetAddress) ia = g_inet_address_new_from_string (bare);
  g_autoptr (GResolver) resolver = NULL;

  g_task_set_source_tag (task, gt_resolve_address_async);
  if (ia != NULL)
    {
      g_task_return_pointer (task, g_inet_socket_address_new (ia, port), g_object_unref);
      return;
    }
  g_task_set_task_data (task, GUINT_TO_POINTER (port), NULL);
  resolver = g_resolver_get_default ();
  g_resolver_lookup_by_name_async (resolver, bare, cancellable, resolve_done_cb,
                                   g_steal_pointer (&task));
}

GSocketAddress *
gt_resolve_address_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gt_resolve_address_async, NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}

GSocketAddress *
gt_resolve_address (const char *host, guint16 port, GError **error)
{
  g_autoptr (GInetAddress) ia = NULL;
  g_autolist (GInetAddress) list = NULL;
  g_autofree char *bare = NULL;

  bare = bare_host (host);
  ia = g_inet_address_new_from_string (bare);
  if (ia == NULL)
    {
      g_autoptr (GResolver) resolver = g_resolver_get_default ();

      /* Blocks on DNS: only for start-up (listen addresses); see gt_resolve_address_async. */
      list = g_resolver_lookup_by_name (resolver, bare, NULL, error);
      if (list == NULL)
        return NULL;
      ia = g_object_ref (list->data);
    }
  return g_inet_socket_address_new (ia, port);
}

static int
socket_bind_on (GInetAddress *address, guint16 port, gboolean datagram, GError **error)
{
  g_autoptr (GSocketAddress) sa = g_inet_socket_address_new (address, port);
  struct sockaddr_storage ss;
  gsize len = g_socket_address_get_native_size (sa);
  int one = 1;
  int fd;

  if (!g_socket_address_to_native (sa, &ss, sizeof ss, error))
    return -1;
  fd = socket (ss.ss_family, (datagram ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC,
               0);
  if (fd < 0)
    {
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errno), "socket: %s",
                   g_strerror (errno));
      return -1;
    }
  setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind (fd, (struct sockaddr *) &ss, len) < 0 || (!datagram && listen (fd, 4096) < 0))
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
gt_tcp_listen_on (GInetAddress *address, guint16 port, GError **error)
{
  return socket_bind_on (address, port, FALSE, error);
}

int
gt_udp_bind_on (GInetAddress *address, guint16 port, GError **error)
{
  return socket_bind_on (address, port, TRUE, error);
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
