/* gt-server-registry.c: sessions by client id, routes by host prefix, replaced service sets. */
#include "config.h"

#include "gt-server-registry.h"

struct _GtServerRegistry
{
  GHashTable *sessions; /* id (borrowed from the session) → GtServerSession* (a reference) */
  GHashTable *routes[GT_SERVICE_KIND_TCP]; /* per routed kind: key (borrowed) → GtServerRoute* */
  GHashTable *retired;  /* "id\nchecksum" → expiry (gint64*) */
};

GtServerRegistry *
gt_server_registry_new (void)
{
  GtServerRegistry *registry = g_new0 (GtServerRegistry, 1);

  registry->sessions = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, g_object_unref);
  for (guint i = 0; i < G_N_ELEMENTS (registry->routes); i++)
    registry->routes[i] = g_hash_table_new (g_str_hash, g_str_equal);
  registry->retired = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  return registry;
}

static void
unregister_routes (GtServerRegistry *registry, GtServerSession *session)
{
  for (guint i = 0; i < session->routes->len; i++)
    {
      GtServerRoute *route = session->routes->pdata[i];
      GHashTable *table = registry->routes[route->kind];

      if (g_hash_table_lookup (table, route->key) == route)
        g_hash_table_remove (table, route->key);
    }
}

void
gt_server_registry_free (GtServerRegistry *registry)
{
  GHashTableIter iter;
  gpointer value;

  if (registry == NULL)
    return;
  g_hash_table_iter_init (&iter, registry->sessions);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    unregister_routes (registry, value);
  g_hash_table_unref (registry->sessions);
  for (guint i = 0; i < G_N_ELEMENTS (registry->routes); i++)
    g_hash_table_unref (registry->routes[i]);
  g_hash_table_unref (registry->retired);
  g_free (registry);
}

void
gt_server_registry_add (GtServerRegistry *registry, GtServerSession *session)
{
  g_return_if_fail (registry != NULL);
  g_return_if_fail (GT_IS_SERVER_SESSION (session));
  g_return_if_fail (!g_hash_table_contains (registry->sessions, session->id));

  g_hash_table_insert (registry->sessions, session->id, g_object_ref (session));
}

GtServerSession *
gt_server_registry_lookup (GtServerRegistry *registry, const char *id)
{
  return g_hash_table_lookup (registry->sessions, id);
}

void
gt_server_registry_remove (GtServerRegistry *registry, GtServerSession *session)
{
  g_return_if_fail (registry != NULL);
  g_return_if_fail (GT_IS_SERVER_SESSION (session));

  unregister_routes (registry, session);
  if (g_hash_table_lookup (registry->sessions, session->id) == session)
    g_hash_table_remove (registry->sessions, session->id);
}

guint
gt_server_registry_get_n_sessions (GtServerRegistry *registry)
{
  return g_hash_table_size (registry->sessions);
}

GHashTable *
gt_server_registry_get_sessions (GtServerRegistry *registry)
{
  return registry->sessions;
}

void
gt_server_registry_foreach (GtServerRegistry *registry, GtServerSessionFunc func,
                            gpointer user_data)
{
  GHashTableIter iter;
  gpointer value;

  g_hash_table_iter_init (&iter, registry->sessions);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    func (value, user_data);
}

GtServerSession *
gt_server_registry_get_any (GtServerRegistry *registry)
{
  GHashTableIter iter;
  gpointer value;

  g_hash_table_iter_init (&iter, registry->sessions);
  return g_hash_table_iter_next (&iter, NULL, &value) ? value : NULL;
}

GtErrorCode
gt_server_registry_add_route (GtServerRegistry *registry, GtServerRoute *route, char **message)
{
  GtServerRoute *existing;
  GHashTable *table;

  g_return_val_if_fail (registry != NULL, GT_ERROR_CODE_INTERNAL);
  g_return_val_if_fail (route != NULL && route->key != NULL, GT_ERROR_CODE_INTERNAL);
  g_return_val_if_fail (route->kind < G_N_ELEMENTS (registry->routes), GT_ERROR_CODE_INTERNAL);

  table = registry->routes[route->kind];
  existing = g_hash_table_lookup (table, route->key);
  if (existing != NULL)
    {
      *message = existing->session != route->session
                   ? g_strdup_printf ("host prefix '%s' is used by another client", route->key)
                   : g_strdup_printf ("host prefix '%s' is given twice", route->key);
      return GT_ERROR_CODE_HOST_CONFLICT;
    }
  g_hash_table_insert (table, route->key, route);
  return GT_ERROR_CODE_NONE;
}

GtServerRoute *
gt_server_registry_lookup_route (GtServerRegistry *registry, GtServiceKind kind,
                                 const char *prefix)
{
  if ((guint) kind >= G_N_ELEMENTS (registry->routes))
    return NULL;
  return g_hash_table_lookup (registry->routes[kind], prefix);
}

void
gt_server_registry_retire (GtServerRegistry *registry, GtServerSession *session, gint64 expiry)
{
  gint64 *value;

  g_return_if_fail (registry != NULL);
  g_return_if_fail (GT_IS_SERVER_SESSION (session));

  value = g_new (gint64, 1);
  *value = expiry;
  g_hash_table_replace (registry->retired,
                        g_strdup_printf ("%s\n%s", session->id,
                                         session->checksum ? session->checksum : ""),
                        value);
  gt_server_registry_remove (registry, session);
}

gboolean
gt_server_registry_is_retired (GtServerRegistry *registry, const char *id, const char *checksum,
                               gint64 now)
{
  g_autofree char *key = g_strdup_printf ("%s\n%s", id, checksum ? checksum : "");
  gint64 *expiry = g_hash_table_lookup (registry->retired, key);

  if (expiry == NULL)
    return FALSE;
  if (*expiry < now)
    {
      g_hash_table_remove (registry->retired, key);
      return FALSE;
    }
  return TRUE;
}
