/* gt-dbus-errors.h: the D-Bus names of gt's errors, so both ends see typed GErrors. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

#define GT_DBUS_NAME "io.github.gtrelay.Gt"
#define GT_DBUS_PATH "/io/github/gtrelay/Gt"
#define GT_DBUS_TUNNEL_PATH_PREFIX GT_DBUS_PATH "/tunnel"

#define GT_DBUS_ERROR (gt_dbus_error_quark ())
GQuark gt_dbus_error_quark (void);

typedef enum
{
  GT_DBUS_ERROR_FAILED,    /* io.github.gtrelay.Gt.Error.Failed */
  GT_DBUS_ERROR_NO_TUNNEL, /* .NoTunnel: no configuration of that name */
  GT_DBUS_ERROR_BAD_NAME,  /* .BadName: not a name a new configuration file can have */
  GT_DBUS_ERROR_IO,        /* .Io: a file could not be read or written */
  GT_DBUS_ERROR_SYNTAX,    /* .Syntax: YAML syntax error ("NAME:LINE:COLUMN: ...") */
  GT_DBUS_ERROR_TYPE,      /* .Type: a key has a value of the wrong type */
  GT_DBUS_ERROR_VALUE,     /* .Value: a value is out of range or malformed */
  GT_DBUS_ERROR_INVALID,   /* .Invalid: the configuration is inconsistent or incomplete */
} GtDBusErrorEnum;

/* Registers the names (idempotent); gt_dbus_error_quark does it too. */
void gt_dbus_errors_register (void);
/* The D-Bus form of a manager or config error, for g_dbus_method_invocation_return_gerror. */
GError *gt_dbus_error_from_gerror (const GError *error);
/* Parses "NAME:LINE:COLUMN: message" (the message of the typed errors, with or without the
 * "GDBus.Error:..." prefix of a remote error). FALSE when it has no place. */
gboolean gt_dbus_error_get_place (const GError *error, guint *line, guint *column,
                                  const char **message);

G_END_DECLS
