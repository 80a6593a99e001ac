/* gt-dbus-status.h: `gt status`: the manager's tunnels, read over D-Bus. */
#pragma once

#include <gio/gio.h>
#include "gt-manager.h"

G_BEGIN_DECLS

/* Prints the manager's phase and one line per tunnel (name, kind, state, connections, streams,
 * traffic, last error), each followed by its tunnel connections, to out. Returns FALSE with
 * error when no gt manager answers on the bus (session or system; G_IO_ERROR_NOT_FOUND) or the
 * bus cannot be reached. */
gboolean gt_dbus_status_print (FILE *out, GBusType bus_type, GError **error);
/* The table part, shared with the output made without D-Bus. */
void gt_dbus_status_print_units (FILE *out, GPtrArray *units);

G_END_DECLS
