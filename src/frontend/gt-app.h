/* gt-app.h: the desktop app (io.github.gtrelay.Gt): one main window, translations, automation. */
#pragma once

#include <adwaita.h>

G_BEGIN_DECLS

#define GT_TYPE_APP (gt_app_get_type ())
G_DECLARE_FINAL_TYPE (GtApp, gt_app, GT, APP, AdwApplication)

GtApp *gt_app_new (void);

G_END_DECLS
