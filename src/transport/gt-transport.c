/* gt-transport.c: the tunnel transport seam: scheme → leaf, dial and accept. */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include <string.h>
#include <unistd.h>

#include "gt-module.h"
#include "gt-transport-private.h"
#include "gt-types.h"

/* One entry per leaf file; each scheme must also be a row of the scheme table (gt-types.c). */
static const GtTransportLeaf *const leaves[] = {
  &_gt_transport_tcp,
  &_gt_transport_tls,
  &_gt_transport_ws,
  &_gt_transport_wss,
};

/* Leaves built as modules (gt-module.h), because of the libraries they need: loaded when a
 * configuration first uses their scheme; the module registers its leaf as it loads
 * (_gt_transport_register_leaf). Each scheme must also be a row of the scheme table. */
static const struct
{
  const char *scheme;
  const char *module;
} module_leaves[] = {
#ifdef GT_WITH_QUIC
  { "quic", "gt-quic" },
#endif
  { NULL, NULL },
};

static const GtTransportLeaf *registered[G_N_ELEMENTS (module_leaves)];

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
  for (gsize i = 0; i < G_N_ELEMENTS (registered) && registered[i] != NULL; i++)
    if (g_strcmp0 (registered[i]->scheme, scheme) == 0)
      return registered[i];
  return NULL;
}

static const char *
leaf_module (const char *scheme)
{
  if (gt_scheme_info_lookup (scheme) == NULL)
    return NULL;
  for (gsize i = 0; module_leaves[i].scheme != NULL; i++)
    if (strcmp (module_leaves[i].scheme, scheme) == 0)
      return module_leaves[i].module;
  return NULL;
}

void
_gt_transport_register_leaf (const GtTransportLeaf *leaf)
{
  gsize i;

  g_return_if_fail (leaf != NULL && leaf_module (leaf->scheme) != NULL);

  if (leaf_lookup (leaf->scheme) != NULL)
    return;
  for (i = 0; registered[i] != NULL; i++)
    ;
  g_assert (i + 1 < G_N_ELEMENTS (registered));
  registered[i] = leaf;
}

/* The leaf of scheme, its module loaded first when it is one; needed_by names the configuration
 * key in the error. */
static const GtTransportLeaf *
leaf_get (const char *scheme, const char *needed_by, GError **error)
{
  const GtTransportLeaf *leaf = leaf_lookup (scheme);
  const char *module;

  if (leaf != NULL)
    return leaf;
  module = leaf_module (scheme);
  if (module == NULL)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                   "transport '%s' is not supported by this build", scheme);
      return NULL;
    }
  if (!gt_module_load (module, needed_by, error))
    return NULL;
  leaf = leaf_lookup (scheme);
  if (leaf == NULL)
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED,
                 "gt's module %s does not provide the transport '%s'", module, scheme);
  return leaf;
}

gboolean
gt_transport_supports (const char *scheme)
{
  return leaf_lookup (scheme) != NULL || leaf_module (scheme) != NULL;
}

/* The configuration key that makes gt use scheme: the client's remote, or the server's listener. */
static char *
needed_by (const char *scheme, gboolean listener)
{
  const GtSchemeInfo *info = gt_scheme_info_lookup (scheme);

  if (listener && info != NULL)
    return g_strdup (gt_listener_info (info->listener)->key);
  return g_strdup_printf ("remote %s://", scheme);
}

gboolean
gt_transport_load (const char *scheme, gboolean listener, GError **error)
{
  g_autofree char *key = NULL;

  g_return_val_if_fail (scheme != NULL, FALSE);

  key = needed_by (scheme, listener);
  return leaf_get (scheme, key, error) != NULL;
}

void
gt_transport_connect_async (const GtRemote *remote, const GtTransportSecurity *security,
                            GCancellable *cancellable, GAsyncReadyCallback callback,
                            gpointer user_data)
{
  GTask *task;
  const GtTransportLeaf *leaf;
  g_autofree char *key = NULL;
  GError *error = NULL;

  g_return_if_fail (remote != NULL && remote->host != NULL);

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, gt_transport_connect_async);
  key = needed_by (remote->scheme, FALSE);
  leaf = leaf_get (remote->scheme, key, &error);
  if (leaf == NULL)
    {
      g_task_return_error (task, error);
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
  g_autofree char *key = NULL;
  GError *error = NULL;

  g_return_if_fail (G_IS_IO_STREAM (io));
  g_return_if_fail (head != NULL || head_len == 0);

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, gt_transport_accept_async);
  key = needed_by (scheme, TRUE);
  leaf = leaf_get (scheme, key, &error);
  if (leaf == NULL)
    {
      g_task_return_error (task, error);
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
  const GtTransportLeaf *leaf;
  GtTransportListener *listener;
  g_autofree char *key = NULL;
  gpointer impl;

  g_return_val_if_fail (fd >= 0 && func != NULL, NULL);

  key = needed_by (scheme, TRUE);
  leaf = leaf_get (scheme, key, error);
  if (leaf == NULL)
    {
      close (fd);
      return NULL;
    }
  if (leaf->listen == NULL)
    {
      close (fd);
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                   "transport '%s' has no datagram listener", scheme);
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
