/* main.c: gt-desktop, the desktop app of gt. */
#include "config.h"

#include <glib/gi18n.h>
#include <locale.h>

#include "gt-app.h"

int
main (int argc, char **argv)
{
  g_autoptr (GtApp) app = NULL;

  setlocale (LC_ALL, "");
  bindtextdomain (GETTEXT_PACKAGE, g_getenv ("GT_LOCALEDIR") ? g_getenv ("GT_LOCALEDIR")
                                                             : GT_LOCALEDIR);
  bind_textdomain_codeset (GETTEXT_PACKAGE, "UTF-8");
  textdomain (GETTEXT_PACKAGE);
  app = gt_app_new ();
  return g_application_run (G_APPLICATION (app), argc, argv);
}
