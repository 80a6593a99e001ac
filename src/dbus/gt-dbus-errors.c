/* gt-dbus-errors.c: the D-Bus names of gt's errors, so both ends see typed GErrors. */
#include "config.h"

#define G_LOG_DOMAIN "gt-dbus"

#include <string.h>

#include "gt-config.h"
#include "gt-dbus-errors.h"
#include "gt-manager.h"

static const GDBusErrorEntry error_entries[] = {
  { GT_DBUS_ERROR_FAILED, "io.github.gtrelay.Gt.Error.Failed" },
  { GT_DBUS_ERROR_NO_TUNNEL, "io.github.gtrelay.Gt.Error.NoTunnel" },
  { GT_DBUS_ERROR_BAD_NAME, "io.github.gtrelay.Gt.Error.BadName" },
  { GT_DBUS_ERROR_IO, "io.github.gtrelay.Gt.Error.Io" },
  { GT_DBUS_ERROR_SYNTAX, "io.github.gtrelay.Gt.Error.Syntax" },
  { GT_DBUS_ERROR_TYPE, "io.github.gtrelay.Gt.Error.Type" },
  { GT_DBUS_ERROR_VALUE, "io.github.gtrelay.Gt.Error.Value" },
  { GT_DBUS_ERROR_INVALID, "io.github.gtrelay.Gt.Error.Invalid" },
};

GQuark
gt_dbus_error_quark (void)
{
  static gsize quark = 0;

  g_dbus_error_register_error_domain ("gt-dbus-error-quark", &quark, error_entries,
                                      G_N_ELEMENTS (error_entries));
  return (GQuark) quark;
}

void
gt_dbus_errors_register (void)
{
  (void) gt_dbus_error_quark ();
}

static GtDBusErrorEnum
code_for (const GError *error)
{
  if (error->domain == GT_CONFIG_ERROR)
    switch (error->code)
      {
      case GT_CONFIG_ERROR_IO: return GT_DBUS_ERROR_IO;
      case GT_CONFIG_ERROR_SYNTAX: return GT_DBUS_ERROR_SYNTAX;
      case GT_CONFIG_ERROR_TYPE: return GT_DBUS_ERROR_TYPE;
      case GT_CONFIG_ERROR_VALUE: return GT_DBUS_ERROR_VALUE;
      default: return GT_DBUS_ERROR_INVALID;
      }
  if (error->domain == GT_MANAGER_ERROR)
    switch (error->code)
      {
      case GT_MANAGER_ERROR_NO_UNIT: return GT_DBUS_ERROR_NO_TUNNEL;
      case GT_MANAGER_ERROR_BAD_NAME: return GT_DBUS_ERROR_BAD_NAME;
      default: return GT_DBUS_ERROR_FAILED;
      }
  if (error->domain == G_FILE_ERROR || error->domain == G_IO_ERROR)
    return GT_DBUS_ERROR_IO;
  return GT_DBUS_ERROR_FAILED;
}

GError *
gt_dbus_error_from_gerror (const GError *error)
{
  g_return_val_if_fail (error != NULL, NULL);
  return g_error_new_literal (GT_DBUS_ERROR, code_for (error), error->message);
}

gboolean
gt_dbus_error_get_place (const GError *error, guint *line, guint *column, const char **message)
{
  const char *text;
  const char *p;

  g_return_val_if_fail (error != NULL, FALSE);

  text = error->message;
  /* On the calling side the message starts with "GDBus.Error:NAME: " until stripped. */
  if (g_str_has_prefix (text, "GDBus.Error:"))
    {
      const char *end = strstr (text, ": ");

      if (end == NULL)
        return FALSE;
      text = end + 2;
    }
  /* NAME has no ':' (a file name); LINE and COLUMN are digits. */
  p = strchr (text, ':');
  if (p == NULL)
    return FALSE;
  {
    guint64 l, c;
    char *end;

    l = g_ascii_strtoull (p + 1, &end, 10);
    if (end == p + 1 || *end != ':')
      return FALSE;
    p = end;
    c = g_ascii_strtoull (p + 1, &end, 10);
    if (end == p + 1 || *end != ':' || l == 0 || l > G_MAXUINT || c > G_MAXUINT)
      return FALSE;
    if (line)
      *line = (guint) l;
    if (column)
      *column = (guint) c;
    if (message)
      *message = end[1] == ' ' ? end + 2 : end + 1;
  }
  return TRUE;
}
