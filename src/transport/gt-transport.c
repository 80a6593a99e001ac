/* gt-transport.c: the tunnel transport seam: scheme → leaf, dial and accept. */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include <unistd.h>

#include "gt-transport-private.h"
#include "gt-types.h"

/* One entry per leaf file; each scheme must also be a row of the scheme table (gt-types.c). */
static const GtTransportLeaf *const leaves[] = {
  &_gt_transport_tcp,
  &_gt_transport_tls,
  &_gt_transport_ws,
  &_gt_transport_wss,
#ifdef GT_WITH_QUIC
  &_gt_transport_quic,
#endif
};

struct _GtTransportListener
{
  const GtTransportLeaf *leaf;
  gpointer impl;
};

static const GtTransportLeaf *
leaf_lookup (const char *scheme)
{
  if (gt_scheme_info_lookup (scheme) == NULL)
    return NULL;
  for (gsize i = 0; i < G_N_ELEMENTS (leaves); i++)
    if (g_strcmp0 (leaves[i]->scheme, scheme) == 0)
      return leaves[i];
  return NULL;
}

gboolean
gt_transport_supports (const char *scheme)
{
  return leaf_lookup (scheme) != NULL;
}

void
gt_transport_connect_async (const GtRemote *remote, const GtTransportSecurity *security,
                            GCancellable *cancellable, GAsyncReadyCallback callback,
                            gpointer user_data)
{
  GTask *task;
  const GtTransportLeaf *leaf;

  g_return_if_fail (remote != NULL && remote->host != NULL);

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, gt_transport_connect_async);
  leaf = leaf_lookup (remote->scheme);
  if (leaf == NULL)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                               "transport '%s' is not supported", remote->scheme);
      g_object_unref (task);
      return;
    }
  leaf->dial (remote, security, task);
}

GIOStream *
gt_transport_connect_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gt_transport_connect_async,
                        NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}

void
gt_transport_accept_async (const char *scheme, GIOStream *io, const guint8 *head, gsize head_len,
                           GTlsCertificate *certificate, GCancellable *cancellable,
                           GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task;
  const GtTransportLeaf *leaf;

  g_return_if_fail (G_IS_IO_STREAM (io));
  g_return_if_fail (head != NULL || head_len == 0);

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, gt_transport_accept_async);
  leaf = leaf_lookup (scheme);
  if (leaf == NULL)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                               "transport '%s' is not supported", scheme);
      g_object_unref (task);
      return;
    }
  leaf->accept (io, head, head_len, certificate, task);
}

GtTransportListener *
gt_transport_listen (const char *scheme, int fd, GTlsCertificate *certificate,
                     guint64 idle_timeout_ms, GtTransportTunnelFunc func, gpointer user_data,
                     GError **error)
{
  const GtTransportLeaf *leaf = leaf_lookup (scheme);
  GtTransportListener *listener;
  gpointer impl;

  g_return_val_if_fail (fd >= 0 && func != NULL, NULL);

  if (leaf == NULL || leaf->listen == NULL)
    {
      close (fd);
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                   "transport '%s' is not supported by this build", scheme);
      return NULL;
    }
  impl = leaf->listen (fd, certificate, idle_timeout_ms, func, user_data, error);
  if (impl == NULL)
    return NULL;
  listener = g_new0 (GtTransportListener, 1);
  listener->leaf = leaf;
  listener->impl = impl;
  return listener;
}

void
gt_transport_listener_stop_accepting (GtTransportListener *listener)
{
  g_return_if_fail (listener != NULL);
  listener->leaf->listener_stop (listener->impl);
}

void
gt_transport_listener_free (GtTransportListener *listener)
{
  if (listener == NULL)
    return;
  listener->leaf->listener_free (listener->impl);
  g_free (listener);
}

GIOStream *
gt_transport_accept_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gt_transport_accept_async,
                        NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}
