/* gt-server-registry.h: the server's connected clients by id and their routes by host prefix. */
#pragma once

#include <glib.h>
#include "gt-server-session.h"

G_BEGIN_DECLS

/* Owns a reference on every session it holds. The routes belong to their sessions; the registry
 * indexes them (one table per routed service kind) so that a lookup is one hash lookup. */
GtServerRegistry *gt_server_registry_new (void);
void gt_server_registry_free (GtServerRegistry *registry);

/* Adds a session under its id (none may be registered under that id yet). */
void gt_server_registry_add (GtServerRegistry *registry, GtServerSession *session);
GtServerSession *gt_server_registry_lookup (GtServerRegistry *registry, const char *id);
/* Unregisters the session's routes and drops the registry's reference: its tcp ports close unless
 * someone else still holds the session. */
void gt_server_registry_remove (GtServerRegistry *registry, GtServerSession *session);
guint gt_server_registry_get_n_sessions (GtServerRegistry *registry);
/* id → GtServerSession*, for iterating; do not change it. */
GHashTable *gt_server_registry_get_sessions (GtServerRegistry *registry);
typedef void (*GtServerSessionFunc) (GtServerSession *session, gpointer user_data);
/* Calls func on every session; func must not add or remove sessions. */
void gt_server_registry_foreach (GtServerRegistry *registry, GtServerSessionFunc func,
                                 gpointer user_data);
/* Any session, NULL when empty. */
GtServerSession *gt_server_registry_get_any (GtServerRegistry *registry);

/* Indexes route under route->key; GT_ERROR_CODE_HOST_CONFLICT with a message when the key is
 * taken (by another session, or by the same one twice) or owned by another user. */
GtErrorCode gt_server_registry_add_route (GtServerRegistry *registry, GtServerRoute *route,
                                          char **message);
/* What add_route would answer for a route of session under key, without adding it; a route held
 * by replacing (may be NULL) counts as free. */
GtErrorCode gt_server_registry_check_route (GtServerRegistry *registry, GtServiceKind kind,
                                            const char *key, GtServerSession *session,
                                            GtServerSession *replacing, char **message);
/* Reserves a host prefix (any case) for the user id: add_route refuses it to every other session,
 * whether or not id is connected. Unowned prefixes are first-come. */
void gt_server_registry_set_owner (GtServerRegistry *registry, const char *prefix,
                                   const char *id);
/* kind: GT_SERVICE_KIND_HTTP (by Host) or GT_SERVICE_KIND_HTTPS (by SNI). */
GtServerRoute *gt_server_registry_lookup_route (GtServerRegistry *registry, GtServiceKind kind,
                                                const char *prefix);

/* Replacement: remembers session's service set as replaced until expiry (monotonic µs) and removes
 * the session. A client with that id and service set is refused until then, so that two clients
 * sharing an id with different configs do not push each other out forever. Entries expired at
 * now are forgotten; at most GT_SERVER_REGISTRY_MAX_RETIRED are kept (the oldest go first). */
#define GT_SERVER_REGISTRY_MAX_RETIRED 4096
void gt_server_registry_retire (GtServerRegistry *registry, GtServerSession *session, gint64 now,
                                gint64 expiry);
gboolean gt_server_registry_is_retired (GtServerRegistry *registry, const char *id,
                                        const char *checksum, gint64 now);
/* Replaced service sets remembered now. */
guint gt_server_registry_get_n_retired (GtServerRegistry *registry);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtServerRegistry, gt_server_registry_free)

G_END_DECLS
