/* gt-app-window.h: the main window: tunnels with live state and traffic, details, editor. */
#pragma once

#include <adwaita.h>

G_BEGIN_DECLS

#define GT_TYPE_APP_WINDOW (gt_app_window_get_type ())
G_DECLARE_FINAL_TYPE (GtAppWindow, gt_app_window, GT, APP_WINDOW, AdwApplicationWindow)

GtAppWindow *gt_app_window_new (AdwApplication *app);

G_END_DECLS
