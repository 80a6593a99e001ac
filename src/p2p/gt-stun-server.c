/* gt-stun-server.c: answers STUN Binding requests on a UDP socket (the server's stunAddr). */
#include "config.h"

#define G_LOG_DOMAIN "gt-p2p"

#include "gt-stun-server.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-fd-source.h"
#include "gt-stun.h"

/* Datagrams read per wake-up, so that a flood does not starve the rest of the main loop. */
#define READS_PER_WAKE 64

struct _GtStunServer
{
  GObject parent_instance;

  char *addr;
  int fd;
  GtFdWatch *source;
  guint16 port;
  guint64 answered;
  guint64 dropped;
  GtTurnServer *turn;
};

G_DEFINE_FINAL_TYPE (GtStunServer, gt_stun_server, G_TYPE_OBJECT)

/* One datagram: the reply to send (length) or 0 to drop it. */
static gsize
answer (GtStunServer *server, const guint8 *buf, gsize len,
        const struct sockaddr_storage *from, guint8 *reply)
{
  g_autoptr (GError) error = NULL;
  GtStunMessage msg;
  GtStunAddress mapped;

  if (!gt_stun_parse (buf, len, &msg, &error))
    {
      g_debug ("STUN: dropped a datagram of %" G_GSIZE_FORMAT " bytes: %s", len, error->message);
      return 0;
    }
  /* Only requests get answers; responses and indications are never answered (RFC 8489 §6.3). */
  if (msg.klass != GT_STUN_CLASS_REQUEST)
    return 0;
  if (msg.method != GT_STUN_METHOD_BINDING)
    return gt_stun_build_error (&msg, 400, "Bad Request: only Binding is served", reply);
  if (msg.n_unknown > 0)
    return gt_stun_build_error (&msg, 420, "Unknown Attribute", reply);
  if (!gt_stun_address_from_native (from, &mapped))
    return 0;
  return gt_stun_build_binding_success (&msg, &mapped, reply);
}

static void
readable_cb (int fd, GIOCondition revents, gpointer user_data)
{
  GtStunServer *server = user_data;

  for (guint i = 0; i < READS_PER_WAKE; i++)
    {
      /* One byte more than the limit tells an oversized datagram from one that just fits. */
      guint8 buf[GT_TURN_MAX_MESSAGE + 1];
      guint8 reply[GT_STUN_MAX_MESSAGE];
      struct sockaddr_storage from;
      socklen_t from_len = sizeof from;
      gssize n;
      gsize reply_len;

      n = recvfrom (fd, buf, sizeof buf, MSG_TRUNC, (struct sockaddr *) &from, &from_len);
      if (n < 0)
        {
          if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            g_debug ("STUN: recvfrom: %s", g_strerror (errno));
          return;
        }
      if (server->turn != NULL && (gsize) n <= GT_TURN_MAX_MESSAGE
          && gt_turn_server_wants (buf, (gsize) n))
        {
          gt_turn_server_handle (server->turn, buf, (gsize) n, &from, from_len);
          continue;
        }
      if ((gsize) n > GT_STUN_MAX_MESSAGE)
        {
          server->dropped++;
          g_debug ("STUN: dropped an oversized datagram (%" G_GSSIZE_FORMAT " bytes)", n);
          continue;
        }
      reply_len = answer (server, buf, (gsize) n, &from, reply);
      if (reply_len == 0)
        {
          server->dropped++;
          continue;
        }
      if (sendto (fd, reply, reply_len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *) &from,
                  from_len)
          < 0)
        {
          g_debug ("STUN: sendto: %s", g_strerror (errno));
          server->dropped++;
          continue;
        }
      server->answered++;
    }
}

GtStunServer *
gt_stun_server_new (const char *addr)
{
  GtStunServer *server;

  g_return_val_if_fail (addr != NULL, NULL);

  server = g_object_new (GT_TYPE_STUN_SERVER, NULL);
  server->addr = g_strdup (addr);
  return server;
}

gboolean
gt_stun_server_start (GtStunServer *server, GError **error)
{
  g_autoptr (GSocketConnectable) connectable = NULL;
  g_autoptr (GSocketAddressEnumerator) enumerator = NULL;
  g_autoptr (GSocketAddress) address = NULL;
  g_autoptr (GSocketAddress) bound = NULL;
  struct sockaddr_storage ss;
  socklen_t ss_len = sizeof ss;
  int one = 1;
  int fd;

  g_return_val_if_fail (GT_IS_STUN_SERVER (server), FALSE);
  g_return_val_if_fail (server->fd < 0, FALSE);

  /* The config loader normalized the address to an IP literal and a port. */
  connectable = g_network_address_parse (server->addr, 3478, error);
  if (connectable == NULL)
    return FALSE;
  enumerator = g_socket_connectable_enumerate (connectable);
  address = g_socket_address_enumerator_next (enumerator, NULL, error);
  if (address == NULL)
    {
      if (error != NULL && *error == NULL)
        g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "bad stunAddr '%s'",
                     server->addr);
      return FALSE;
    }
  if (!g_socket_address_to_native (address, &ss, sizeof ss, error))
    return FALSE;
  fd = socket (ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    {
      int err = errno;

      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err), "stunAddr %s: %s",
                   server->addr, g_strerror (err));
      return FALSE;
    }
  /* As GT: several processes (old and new worker during a restart) may share the port. */
  setsockopt (fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (bind (fd, (struct sockaddr *) &ss, g_socket_address_get_native_size (address)) < 0)
    {
      int err = errno;

      close (fd);
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err), "stunAddr %s: %s",
                   server->addr, g_strerror (err));
      return FALSE;
    }
  if (getsockname (fd, (struct sockaddr *) &ss, &ss_len) == 0)
    {
      bound = g_socket_address_new_from_native (&ss, ss_len);
      if (G_IS_INET_SOCKET_ADDRESS (bound))
        server->port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));
    }
  server->fd = fd;
  server->source = gt_fd_watch_new (fd, G_IO_IN, readable_cb, server);
  g_message ("STUN on %s (udp)", server->addr);
  return TRUE;
}

void
gt_stun_server_stop (GtStunServer *server)
{
  g_return_if_fail (GT_IS_STUN_SERVER (server));

  g_clear_pointer (&server->turn, gt_turn_server_free);
  g_clear_pointer (&server->source, gt_fd_watch_free);
  if (server->fd >= 0)
    {
      close (server->fd);
      server->fd = -1;
    }
}

void
gt_stun_server_enable_turn (GtStunServer *server, const GtTurnOptions *options)
{
  g_return_if_fail (GT_IS_STUN_SERVER (server));
  g_return_if_fail (server->fd >= 0 && server->turn == NULL);

  server->turn = gt_turn_server_new (options, server->fd);
}

GtTurnServer *
gt_stun_server_get_turn (GtStunServer *server)
{
  g_return_val_if_fail (GT_IS_STUN_SERVER (server), NULL);
  return server->turn;
}

guint16
gt_stun_server_get_port (GtStunServer *server)
{
  g_return_val_if_fail (GT_IS_STUN_SERVER (server), 0);
  return server->port;
}

guint64
gt_stun_server_get_answered (GtStunServer *server)
{
  g_return_val_if_fail (GT_IS_STUN_SERVER (server), 0);
  return server->answered;
}

guint64
gt_stun_server_get_dropped (GtStunServer *server)
{
  g_return_val_if_fail (GT_IS_STUN_SERVER (server), 0);
  return server->dropped;
}

static void
gt_stun_server_finalize (GObject *object)
{
  GtStunServer *server = GT_STUN_SERVER (object);

  gt_stun_server_stop (server);
  g_free (server->addr);
  G_OBJECT_CLASS (gt_stun_server_parent_class)->finalize (object);
}

static void
gt_stun_server_class_init (GtStunServerClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = gt_stun_server_finalize;
}

static void
gt_stun_server_init (GtStunServer *server)
{
  server->fd = -1;
}
