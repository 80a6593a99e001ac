/* gt-dbus-service.h: exports a running GtManager as io.github.gtrelay.Gt on a message bus. */
#pragma once

#include <gio/gio.h>
#include "gt-manager.h"

G_BEGIN_DECLS

#define GT_TYPE_DBUS_SERVICE (gt_dbus_service_get_type ())
G_DECLARE_FINAL_TYPE (GtDBusService, gt_dbus_service, GT, DBUS_SERVICE, GObject)

GtDBusService *gt_dbus_service_new (GtManager *manager);
/* Exports the objects on connection and asks for the bus name (owned while it runs; a second
 * manager on the same bus waits in the queue). */
gboolean gt_dbus_service_export (GtDBusService *self, GDBusConnection *connection,
                                 GError **error);
/* The session bus when one is reachable ($DBUS_SESSION_BUS_ADDRESS or $XDG_RUNTIME_DIR/bus),
 * else NULL: gt runs headless without a bus. */
GDBusConnection *gt_dbus_session_bus_get (void);

G_END_DECLS
