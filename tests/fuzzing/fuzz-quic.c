/* fuzz-quic.c: libFuzzer target for the QUIC server's datagram path: connection-ID lookup, the
 * accept of new connections (ngtcp2_accept), packet reading and the clean-up of connections that
 * fail. The input is a list of datagrams, each [len:u16 big-endian][bytes] (the rest of the input
 * is the last one), sent from one loopback address to a fresh server. */
#include "config.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "gt-certificate.h"
#include "gt-quic.h"
#include "gt-transport.h"

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

/* Datagrams per input and main-loop turns per input. */
#define MAX_DATAGRAMS 16
#define MAX_TURNS 200

static GTlsCertificate *certificate;
static int peer_fd = -1;

static void
setup_once (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = NULL;
  g_autofree char *cert_path = NULL;
  g_autofree char *key_path = NULL;
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  const char *names[] = { "localhost", NULL };

  dir = g_dir_make_tmp ("gt-fuzz-quic-XXXXXX", &error);
  if (dir == NULL)
    abort ();
  cert_path = g_build_filename (dir, "cert.pem", NULL);
  key_path = g_build_filename (dir, "key.pem", NULL);
  if (!gt_certificate_generate (cert_path, key_path, names, &error))
    abort ();
  certificate = g_tls_certificate_new_from_files (cert_path, key_path, &error);
  if (certificate == NULL)
    abort ();
  g_unlink (cert_path);
  g_unlink (key_path);
  g_rmdir (dir);
  peer_fd = gt_udp_bind_on (lo, 0, &error);
  if (peer_fd < 0)
    abort ();
  fcntl (peer_fd, F_SETFL, fcntl (peer_fd, F_GETFL) | O_NONBLOCK);
}

static void
tunnel_cb (GIOStream *tunnel, GInetSocketAddress *peer, gpointer user_data)
{
  /* Not reached without a handshake; dropping the tunnel closes its connection. */
}

static void
drain_peer (void)
{
  guint8 buf[2048];

  while (recv (peer_fd, buf, sizeof buf, MSG_DONTWAIT) >= 0)
    ;
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GError) error = NULL;
  struct sockaddr_storage server_addr;
  socklen_t server_len = sizeof server_addr;
  GtQuicServer *server;
  int fd, sent = 0;

  if (size > 64 * 1024)
    return 0;
  if (certificate == NULL)
    setup_once ();
  fd = gt_udp_bind_on (lo, 0, &error);
  if (fd < 0 || getsockname (fd, (struct sockaddr *) &server_addr, &server_len) != 0)
    abort ();
  server = gt_quic_server_new (fd, certificate, 1000, tunnel_cb, NULL, &error);
  if (server == NULL)
    abort ();

  while (size > 0 && sent < MAX_DATAGRAMS)
    {
      gsize len = size;

      if (size >= 2 && sent < MAX_DATAGRAMS - 1)
        {
          len = MIN ((gsize) ((data[0] << 8) | data[1]), size - 2);
          data += 2;
          size -= 2;
        }
      /* Loopback UDP does not lose these few datagrams: the server reads them all below. */
      (void) sendto (peer_fd, data, len, 0, (struct sockaddr *) &server_addr, server_len);
      data += len;
      size -= len;
      sent++;
    }

  for (int turn = 0; turn < MAX_TURNS && g_main_context_iteration (NULL, FALSE); turn++)
    drain_peer ();
  gt_quic_server_free (server);
  for (int turn = 0; turn < MAX_TURNS && g_main_context_iteration (NULL, FALSE); turn++)
    ;
  drain_peer ();
  return 0;
}
