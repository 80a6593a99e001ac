/* gt-transport-quic.c: quic:// tunnels: a QUIC connection (gt-quic.c) whose first bidirectional
 * stream carries the tunnel; the server side listens on quicAddr (UDP). */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include "gt-quic.h"
#include "gt-transport-private.h"

#define DEFAULT_IDLE_TIMEOUT_MS 60000

typedef struct
{
  char *host;
  guint16 port;
  GtTlsVerify verify;
  guint idle_timeout_ms;
  guint handshake_timeout_ms;
} QuicDial;

static void
quic_dial_free (QuicDial *d)
{
  g_free (d->host);
  _gt_tls_verify_clear (&d->verify);
  g_free (d);
}

static guint
idle_timeout (guint64 ms)
{
  return ms == 0 ? DEFAULT_IDLE_TIMEOUT_MS : (guint) MIN (ms, G_MAXUINT32);
}

static void
quic_connected_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  QuicDial *d = g_task_get_task_data (task);
  GError *error = NULL;
  g_autoptr (GtQuicConn) conn = gt_quic_connect_finish (result, &error);
  GIOStream *tunnel;

  if (conn == NULL)
    {
      if (!g_error_matches (error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE))
        g_prefix_error (&error, "QUIC to %s:%u: ", d->host, d->port);
      g_task_return_error (task, error);
      return;
    }
  tunnel = gt_quic_conn_open_stream (conn, TRUE, &error);
  if (tunnel == NULL)
    {
      gt_quic_conn_close (conn);
      g_task_return_error (task, error);
      return;
    }
  g_task_return_pointer (task, tunnel, g_object_unref);
}

static void
quic_resolved_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GTask *task = user_data;
  QuicDial *d = g_task_get_task_data (task);
  GError *error = NULL;
  g_autoptr (GSocketAddress) address = gt_resolve_address_finish (result, &error);

  if (address == NULL)
    {
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }
  gt_quic_connect_async (d->host, address, &d->verify, d->idle_timeout_ms,
                         d->handshake_timeout_ms, g_task_get_cancellable (task), quic_connected_cb, task);
}

static void
quic_dial (const GtRemote *remote, const GtTransportSecurity *security, GTask *task)
{
  QuicDial *d = g_new0 (QuicDial, 1);
  GError *error = NULL;

  d->host = g_strdup (remote->host);
  d->port = remote->port;
  d->idle_timeout_ms = idle_timeout (security != NULL ? security->idle_timeout_ms : 0);
  d->handshake_timeout_ms = security != NULL ? security->handshake_timeout_ms : 0;
  g_task_set_task_data (task, d, (GDestroyNotify) quic_dial_free);
  if (!_gt_tls_verify_init (&d->verify, security, &error))
    {
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }
  gt_resolve_address_async (d->host, d->port, g_task_get_cancellable (task), quic_resolved_cb,
                            task);
}

static void
quic_accept (GIOStream *io, const guint8 *head, gsize head_len, GTlsCertificate *certificate,
             GTask *task)
{
  /* Tunnels arrive through quic_listen: nothing on a stream listener is QUIC. */
  g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                           "quic:// tunnels are accepted on quicAddr only");
  g_object_unref (task);
}

static gpointer
quic_listen (int fd, GTlsCertificate *certificate, guint64 idle_timeout_ms,
             GtTransportTunnelFunc func, gpointer user_data, GError **error)
{
  return gt_quic_server_new (fd, certificate, idle_timeout (idle_timeout_ms),
                             (GtQuicTunnelFunc) func, user_data, error);
}

const GtTransportLeaf _gt_transport_quic = {
  "quic",
  quic_dial,
  quic_accept,
  quic_listen,
  (void (*) (gpointer)) gt_quic_server_stop_accepting,
  (void (*) (gpointer)) gt_quic_server_free,
};
