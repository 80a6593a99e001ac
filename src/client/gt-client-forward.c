/* gt-client-forward.c: GT's tcpForward: a local listener (tcpForwardAddr) whose connections go,
 * through the server, to the service of the client holding tcpForwardHostPrefix; and the API
 * that opens such a stream (gt_client_open_forward_stream_async). docs/protocol.md §6.9. */
#include "config.h"

#define G_LOG_DOMAIN "gt-client"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-client-private.h"
#include "gt-frame.h"

/* A request waits this long at most for a tunnel that can carry it (none may be up yet). */
#define WAIT_TUNNEL_MIN_MS 1000

typedef struct
{
  GtClientForward *forward;
  char *prefix;
  char *peer;          /* listener: the local user, for the log */
  int fd;              /* listener: the accepted socket until the stream takes it */
  int api_fd;          /* API: our end of the socket pair, given to the caller on ACK */
  GTask *task;         /* API: until answered */
  gulong cancel_id;
  guint cancel_idle_id;
  GtMuxStream *stream; /* once opened (a reference) */
  guint wait_id;       /* waiting for a tunnel */
} Request;

struct _GtClientForward
{
  GtClient *client;      /* not owned: it owns us */
  GSocketService *service;
  GPtrArray *waiting;    /* Request* waiting for a tunnel (owned) */
  GHashTable *streams;   /* GtMuxStream* → Request* (owned) */
  GPtrArray *watched;    /* GtMux* whose signals we watch (weak: removed on "closed") */
  gboolean stopped;
};

static void request_open (Request *r, GtMux *mux);

static void
request_free (Request *r)
{
  g_clear_handle_id (&r->wait_id, g_source_remove);
  g_clear_handle_id (&r->cancel_idle_id, g_source_remove);
  if (r->task != NULL)
    {
      GCancellable *c = g_task_get_cancellable (r->task);

      if (c != NULL && r->cancel_id != 0)
        g_cancellable_disconnect (c, r->cancel_id);
      g_clear_object (&r->task);
    }
  if (r->fd >= 0)
    close (r->fd);
  if (r->api_fd >= 0)
    close (r->api_fd);
  g_clear_pointer (&r->stream, gt_mux_stream_unref);
  g_free (r->prefix);
  g_free (r->peer);
  g_free (r);
}

static Request *
request_new (GtClientForward *f, const char *prefix)
{
  Request *r = g_new0 (Request, 1);

  r->forward = f;
  r->prefix = g_ascii_strdown (prefix, -1);
  r->fd = -1;
  r->api_fd = -1;
  return r;
}

static GIOErrorEnum
reset_to_io_error (guint32 code)
{
  switch (code)
    {
    case GT_RESET_CODE_NOT_ALLOWED:
      return G_IO_ERROR_PERMISSION_DENIED;
    case GT_RESET_CODE_UNKNOWN_HOST:
      return G_IO_ERROR_HOST_NOT_FOUND;
    case GT_RESET_CODE_TARGET_OFFLINE:
      return G_IO_ERROR_HOST_UNREACHABLE;
    case GT_RESET_CODE_CONNECT_FAILED:
      return G_IO_ERROR_CONNECTION_REFUSED;
    default:
      return G_IO_ERROR_CONNECTION_CLOSED;
    }
}

/* The request failed: the API caller gets the error, a listener's user is closed and logged. */
static void
request_fail (Request *r, GIOErrorEnum code, const char *why)
{
  if (r->task != NULL)
    {
      GTask *task = g_steal_pointer (&r->task);
      GCancellable *c = g_task_get_cancellable (task);

      if (c != NULL && r->cancel_id != 0)
        g_cancellable_disconnect (c, r->cancel_id);
      r->cancel_id = 0;
      g_task_return_new_error (task, G_IO_ERROR, code, "tcpForward to '%s': %s", r->prefix, why);
      g_object_unref (task);
      return;
    }
  if (r->peer != NULL)
    g_message ("tcpForward to '%s': %s; closed the connection from %s", r->prefix, why, r->peer);
}

/* ------------------------------------------------------------------------------------------ */
/* Tunnel signals */

static void
forward_accepted_cb (G_GNUC_UNUSED GtMux *mux, GtMuxStream *stream, gpointer user_data)
{
  GtClientForward *f = user_data;
  Request *r = g_hash_table_lookup (f->streams, stream);
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocket) socket = NULL;
  GTask *task;

  if (r == NULL || r->task == NULL)
    return;
  task = g_steal_pointer (&r->task);
  if (r->cancel_id != 0)
    g_cancellable_disconnect (g_task_get_cancellable (task), r->cancel_id);
  r->cancel_id = 0;
  socket = g_socket_new_from_fd (r->api_fd, &error);
  if (socket == NULL)
    g_task_return_error (task, g_steal_pointer (&error));
  else
    {
      r->api_fd = -1; /* the socket owns it now */
      g_task_return_pointer (task, g_socket_connection_factory_create_connection (socket),
                             g_object_unref);
    }
  g_object_unref (task);
}

static void
forward_stream_closed_cb (G_GNUC_UNUSED GtMux *mux, GtMuxStream *stream, gpointer user_data)
{
  GtClientForward *f = user_data;
  Request *r;
  guint32 code;

  if (!gt_mux_stream_is_forward (stream)
      || !g_hash_table_steal_extended (f->streams, stream, NULL, (gpointer *) &r))
    return;
  if (gt_mux_stream_get_peer_reset (stream, &code) && code != GT_RESET_CODE_CLOSED)
    request_fail (r, reset_to_io_error (code), gt_reset_code_to_string (code));
  else if (r->task != NULL)
    request_fail (r, G_IO_ERROR_CONNECTION_CLOSED, "the tunnel closed before the server answered");
  request_free (r);
}

static void
tunnel_closed_cb (GtMux *mux, G_GNUC_UNUSED GError *error, gpointer user_data)
{
  GtClientForward *f = user_data;

  g_signal_handlers_disconnect_by_data (mux, f);
  g_ptr_array_remove_fast (f->watched, mux);
}

void
_gt_client_forward_tunnel_ready (GtClientForward *f, GtMux *mux)
{
  g_autoptr (GPtrArray) waiting = NULL;

  if (f->stopped)
    return;
  g_signal_connect (mux, "forward-accepted", G_CALLBACK (forward_accepted_cb), f);
  g_signal_connect (mux, "stream-closed", G_CALLBACK (forward_stream_closed_cb), f);
  g_signal_connect (mux, "closed", G_CALLBACK (tunnel_closed_cb), f);
  g_ptr_array_add (f->watched, mux);
  /* The requests that waited for a tunnel go now (on the least busy one each). */
  waiting = g_steal_pointer (&f->waiting);
  f->waiting = g_ptr_array_new ();
  for (guint i = 0; i < waiting->len; i++)
    {
      Request *r = waiting->pdata[i];
      GtMux *m = _gt_client_pick_forward_tunnel (f->client);

      g_clear_handle_id (&r->wait_id, g_source_remove);
      request_open (r, m != NULL ? m : mux);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Requests */

static gboolean
request_wait_timeout_cb (gpointer user_data)
{
  Request *r = user_data;
  GtClientForward *f = r->forward;

  r->wait_id = 0;
  g_ptr_array_remove_fast (f->waiting, r);
  request_fail (r, G_IO_ERROR_TIMED_OUT, "no tunnel to the server is up");
  request_free (r);
  return G_SOURCE_REMOVE;
}

static void
request_open (Request *r, GtMux *mux)
{
  GtClientForward *f = r->forward;
  g_autoptr (GError) error = NULL;
  GtMuxStream *stream;
  int fd;

  if (r->task != NULL)
    {
      int sv[2];

      if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        {
          int saved = errno;

          request_fail (r, g_io_error_from_errno (saved), g_strerror (saved));
          request_free (r);
          return;
        }
      fd = sv[0];
      r->api_fd = sv[1];
    }
  else
    fd = g_steal_fd (&r->fd);
  stream = gt_mux_open_forward (mux, r->prefix, fd, NULL, 0, &error);
  if (stream == NULL)
    {
      close (fd);
      request_fail (r, error->code, error->message);
      request_free (r);
      return;
    }
  r->stream = gt_mux_stream_ref (stream);
  g_hash_table_insert (f->streams, stream, r);
}

static gboolean
request_cancel_idle_cb (gpointer user_data)
{
  Request *r = user_data;
  GtClientForward *f = r->forward;

  r->cancel_idle_id = 0;
  if (r->task == NULL)
    return G_SOURCE_REMOVE; /* answered meanwhile */
  request_fail (r, G_IO_ERROR_CANCELLED, "cancelled");
  if (g_ptr_array_remove_fast (f->waiting, r))
    {
      request_free (r);
      return G_SOURCE_REMOVE;
    }
  /* Opened: the stream ends here, and its "stream-closed" frees the request. */
  if (r->stream != NULL && !gt_mux_stream_is_closed (r->stream))
    gt_mux_stream_reset (r->stream, GT_RESET_CODE_CLOSED);
  return G_SOURCE_REMOVE;
}

/* Runs inside g_cancellable_cancel(), where the handler may not be disconnected: the work is
 * done from the main loop. */
static void
request_cancelled_cb (G_GNUC_UNUSED GCancellable *cancellable, gpointer user_data)
{
  Request *r = user_data;

  if (r->cancel_idle_id == 0)
    r->cancel_idle_id = g_idle_add (request_cancel_idle_cb, r);
}

static void
request_start (GtClientForward *f, Request *r)
{
  GtClient *client = f->client;
  GtMux *mux;

  if (f->stopped)
    {
      request_fail (r, G_IO_ERROR_CLOSED, "the client is stopping");
      request_free (r);
      return;
    }
  mux = _gt_client_pick_forward_tunnel (client);
  if (mux != NULL)
    {
      request_open (r, mux);
      return;
    }
  r->wait_id = g_timeout_add (MAX (gt_client_get_config (client)->remote_timeout_ms,
                                   WAIT_TUNNEL_MIN_MS),
                              request_wait_timeout_cb, r);
  g_ptr_array_add (f->waiting, r);
}

/* ------------------------------------------------------------------------------------------ */
/* The tcpForwardAddr listener */

static gboolean
incoming_cb (G_GNUC_UNUSED GSocketService *service, GSocketConnection *conn,
             G_GNUC_UNUSED GObject *source, gpointer user_data)
{
  GtClientForward *f = user_data;
  const GtClientConfig *config = gt_client_get_config (f->client);
  g_autoptr (GSocketAddress) remote = g_socket_connection_get_remote_address (conn, NULL);
  int fd = dup (g_socket_get_fd (g_socket_connection_get_socket (conn)));
  Request *r;

  if (fd < 0)
    {
      g_message ("tcpForward: cannot take the connection: %s", g_strerror (errno));
      return TRUE;
    }
  r = request_new (f, config->tcp_forward_host_prefix);
  r->fd = fd;
  if (G_IS_INET_SOCKET_ADDRESS (remote))
    {
      g_autofree char *ip = g_inet_address_to_string (
        g_inet_socket_address_get_address (G_INET_SOCKET_ADDRESS (remote)));

      r->peer = g_strdup_printf (strchr (ip, ':') ? "[%s]:%u" : "%s:%u", ip,
                                 g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (remote)));
    }
  else
    r->peer = g_strdup ("a local user");
  /* The GSocketConnection closes its descriptor; the stream has its own (dup). */
  g_io_stream_close (G_IO_STREAM (conn), NULL, NULL);
  request_start (f, r);
  return TRUE;
}

gboolean
_gt_client_forward_listen (GtClientForward *f, GError **error)
{
  const GtClientConfig *config = gt_client_get_config (f->client);
  g_autoptr (GInetSocketAddress) addr = NULL;
  g_autoptr (GSocketAddress) bound = NULL;
  g_autoptr (GError) local_error = NULL;

  if (config->tcp_forward_addr == NULL || config->tcp_forward_host_prefix == NULL)
    return TRUE;
  addr = gt_listen_address_parse (config->tcp_forward_addr, error);
  if (addr == NULL)
    return FALSE;
  f->service = g_socket_service_new ();
  if (!g_socket_listener_add_address (G_SOCKET_LISTENER (f->service), G_SOCKET_ADDRESS (addr),
                                      G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, NULL, &bound,
                                      &local_error))
    {
      g_set_error (error, G_IO_ERROR, local_error->code, "tcpForwardAddr %s: %s",
                   config->tcp_forward_addr, local_error->message);
      g_clear_object (&f->service);
      return FALSE;
    }
  g_signal_connect (f->service, "incoming", G_CALLBACK (incoming_cb), f);
  g_socket_service_start (f->service);
  g_message ("tcpForward: listening on %s for host prefix '%s'", config->tcp_forward_addr,
             config->tcp_forward_host_prefix);
  return TRUE;
}

/* ------------------------------------------------------------------------------------------ */

GtClientForward *
_gt_client_forward_new (GtClient *client)
{
  GtClientForward *f = g_new0 (GtClientForward, 1);

  f->client = client;
  f->waiting = g_ptr_array_new ();
  f->streams = g_hash_table_new (NULL, NULL);
  f->watched = g_ptr_array_new ();
  return f;
}

void
_gt_client_forward_stop (GtClientForward *f)
{
  GHashTableIter iter;
  gpointer value;

  if (f->stopped)
    return;
  f->stopped = TRUE;
  if (f->service != NULL)
    {
      g_socket_service_stop (f->service);
      g_socket_listener_close (G_SOCKET_LISTENER (f->service));
      g_signal_handlers_disconnect_by_data (f->service, f);
      g_clear_object (&f->service);
    }
  for (guint i = 0; i < f->waiting->len; i++)
    {
      Request *r = f->waiting->pdata[i];

      request_fail (r, G_IO_ERROR_CLOSED, "the client is stopping");
      request_free (r);
    }
  g_ptr_array_set_size (f->waiting, 0);
  for (guint i = 0; i < f->watched->len; i++)
    g_signal_handlers_disconnect_by_data (f->watched->pdata[i], f);
  g_ptr_array_set_size (f->watched, 0);
  g_hash_table_iter_init (&iter, f->streams);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      Request *r = value;

      if (r->task != NULL)
        request_fail (r, G_IO_ERROR_CLOSED, "the client is stopping");
      request_free (r);
    }
  g_hash_table_remove_all (f->streams);
}

void
_gt_client_forward_free (GtClientForward *f)
{
  if (f == NULL)
    return;
  _gt_client_forward_stop (f);
  g_ptr_array_unref (f->waiting);
  g_hash_table_unref (f->streams);
  g_ptr_array_unref (f->watched);
  g_free (f);
}

/* ------------------------------------------------------------------------------------------ */
/* Public API */

void
gt_client_open_forward_stream_async (GtClient *client, const char *host_prefix,
                                     GCancellable *cancellable, GAsyncReadyCallback callback,
                                     gpointer user_data)
{
  GtClientForward *f;
  Request *r;
  g_autoptr (GTask) task = NULL;

  g_return_if_fail (GT_IS_CLIENT (client));
  g_return_if_fail (host_prefix != NULL);

  task = g_task_new (client, cancellable, callback, user_data);
  g_task_set_source_tag (task, gt_client_open_forward_stream_async);
  f = _gt_client_get_forward (client);
  if (f == NULL)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                               "tcpForward to '%s': this client does not ask the server for "
                               "forward streams (call gt_client_enable_forward before "
                               "gt_client_start)",
                               host_prefix);
      return;
    }
  if (!gt_forward_prefix_is_valid (host_prefix))
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "bad host prefix '%s': use 1 to %u letters, digits or '-'",
                               host_prefix, (guint) GT_PREFIX_MAX_LEN);
      return;
    }
  if (g_task_return_error_if_cancelled (task))
    return;
  r = request_new (f, host_prefix);
  r->task = g_steal_pointer (&task);
  if (cancellable != NULL)
    r->cancel_id = g_cancellable_connect (cancellable, G_CALLBACK (request_cancelled_cb), r,
                                          NULL);
  request_start (f, r);
}

GIOStream *
gt_client_open_forward_stream_finish (GtClient *client, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, client), NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}
