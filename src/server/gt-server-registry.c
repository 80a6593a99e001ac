/* gt-server-registry.c: sessions by client id, routes by host prefix, replaced service sets. */
#include "config.h"

#include "gt-server-registry.h"

struct _GtServerRegistry
{
  GHashTable *sessions; /* id (borrowed from the session) → GtServerSession* (a reference) */
  GHashTable *routes[GT_SERVICE_KIND_TCP]; /* per routed kind: key (borrowed) → GtServerRoute* */
  GHashTable *retired;  /* "id\nchecksum" (owned by the entry) → Retired* */
  GQueue retired_order; /* Retired*, oldest first */
  GHashTable *owners;   /* host prefix → the id of the configured user who owns it */
};

/* A replaced service set; the link lives in the entry. */
typedef struct
{
  char *key;
  gint64 expiry;
  GList link;
} Retired;

static void
retired_free (Retired *r)
{
  g_free (r->key);
  g_free (r);
}

GtServerRegistry *
gt_server_registry_new (void)
{
  GtServerRegistry *registry = g_new0 (GtServerRegistry, 1);

  registry->sessions = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, g_object_unref);
  for (guint i = 0; i < G_N_ELEMENTS (registry->routes); i++)
    registry->routes[i] = g_hash_table_new (g_str_hash, g_str_equal);
  registry->retired
    = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, (GDestroyNotify) retired_free);
  g_queue_init (&registry->retired_order);
  registry->owners = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
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
  /* The queue links live inside the entries: clear it first. */
  g_queue_init (&registry->retired_order);
  g_hash_table_unref (registry->retired);
  g_hash_table_unref (registry->owners);
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
gt_server_registry_check_route (GtServerRegistry *registry, GtServiceKind kind, const char *key,
                                GtServerSession *session, GtServerSession *replacing,
                                char **message)
{
  g_autofree char *lower = NULL;
  GtServerRoute *existing;
  const char *owner;

  g_return_val_if_fail (registry != NULL, GT_ERROR_CODE_INTERNAL);
  g_return_val_if_fail (key != NULL, GT_ERROR_CODE_INTERNAL);
  g_return_val_if_fail (GT_IS_SERVER_SESSION (session), GT_ERROR_CODE_INTERNAL);
  g_return_val_if_fail ((guint) kind < G_N_ELEMENTS (registry->routes), GT_ERROR_CODE_INTERNAL);

  lower = g_ascii_strdown (key, -1);
  owner = g_hash_table_lookup (registry->owners, lower);
  if (owner != NULL && g_strcmp0 (owner, session->id) != 0)
    {
      /* Not first-come: kept for its owner even while that user is offline. */
      *message = g_strdup_printf ("host conflict: host prefix '%s' belongs to another user",
                                  key);
      return GT_ERROR_CODE_HOST_CONFLICT;
    }
  existing = g_hash_table_lookup (registry->routes[kind], key);
  if (existing == NULL || (replacing != NULL && existing->session == replacing))
    return GT_ERROR_CODE_NONE;
  /* "host conflict" first: GT's words, which users and their scripts look for. */
  *message = existing->session != session
               ? g_strdup_printf ("host conflict: host prefix '%s' is used by another client",
                                  key)
               : g_strdup_printf ("host conflict: host prefix '%s' is given twice", key);
  return GT_ERROR_CODE_HOST_CONFLICT;
}

GtErrorCode
gt_server_registry_add_route (GtServerRegistry *registry, GtServerRoute *route, char **message)
{
  GtErrorCode code;

  g_return_val_if_fail (registry != NULL, GT_ERROR_CODE_INTERNAL);
  g_return_val_if_fail (route != NULL && route->key != NULL, GT_ERROR_CODE_INTERNAL);

  code = gt_server_registry_check_route (registry, route->kind, route->key, route->session, NULL,
                                         message);
  if (code == GT_ERROR_CODE_NONE)
    g_hash_table_insert (registry->routes[route->kind], route->key, route);
  return code;
}

void
gt_server_registry_set_owner (GtServerRegistry *registry, const char *prefix, const char *id)
{
  g_return_if_fail (registry != NULL);
  g_return_if_fail (prefix != NULL && id != NULL);

  g_hash_table_replace (registry->owners, g_ascii_strdown (prefix, -1), g_strdup (id));
}

GtServerRoute *
gt_server_registry_lookup_route (GtServerRegistry *registry, GtServiceKind kind,
                                 const char *prefix)
{
  if ((guint) kind >= G_N_ELEMENTS (registry->routes))
    return NULL;
  return g_hash_table_lookup (registry->routes[kind], prefix);
}

static void
retired_drop (GtServerRegistry *registry, Retired *r)
{
  g_queue_unlink (&registry->retired_order, &r->link);
  g_hash_table_remove (registry->retired, r->key);
}

/* Forgets expired entries, oldest first: each handshake that replaces a client adds one, so they
 * must go by time, not only when the same service set comes back. Expiries are now + a fixed
 * time, so the oldest entry expires first. */
static void
retired_prune (GtServerRegistry *registry, gint64 now)
{
  Retired *r;

  while ((r = g_queue_peek_head (&registry->retired_order)) != NULL
         && (r->expiry < now || registry->retired_order.length > GT_SERVER_REGISTRY_MAX_RETIRED))
    retired_drop (registry, r);
}

void
gt_server_registry_retire (GtServerRegistry *registry, GtServerSession *session, gint64 now,
                           gint64 expiry)
{
  g_autofree char *key = NULL;
  Retired *r;

  g_return_if_fail (registry != NULL);
  g_return_if_fail (GT_IS_SERVER_SESSION (session));

  key = g_strdup_printf ("%s\n%s", session->id, session->checksum ? session->checksum : "");
  r = g_hash_table_lookup (registry->retired, key);
  if (r != NULL)
    g_queue_unlink (&registry->retired_order, &r->link);
  else
    {
      r = g_new0 (Retired, 1);
      r->key = g_steal_pointer (&key);
      r->link.data = r;
      g_hash_table_insert (registry->retired, r->key, r);
    }
  r->expiry = expiry;
  g_queue_push_tail_link (&registry->retired_order, &r->link);
  retired_prune (registry, now);
  gt_server_registry_remove (registry, session);
}

gboolean
gt_server_registry_is_retired (GtServerRegistry *registry, const char *id, const char *checksum,
                               gint64 now)
{
  g_autofree char *key = g_strdup_printf ("%s\n%s", id, checksum ? checksum : "");
  Retired *r;

  retired_prune (registry, now);
  r = g_hash_table_lookup (registry->retired, key);
  if (r == NULL)
    return FALSE;
  if (r->expiry < now)
    {
      retired_drop (registry, r);
      return FALSE;
    }
  return TRUE;
}

guint
gt_server_registry_get_n_retired (GtServerRegistry *registry)
{
  return g_hash_table_size (registry->retired);
}
