/* gt-web-admin.h: the admin web UI (webAddr): login and sessions, the REST API under /api/, live
 * state over a WebSocket, traffic history, and the pages of ui/web/ from a GResource. */
#pragma once

#include <gio/gio.h>
#include "gt-client.h"
#include "gt-config.h"
#include "gt-server.h"

G_BEGIN_DECLS

#define GT_TYPE_WEB_ADMIN (gt_web_admin_get_type ())
G_DECLARE_FINAL_TYPE (GtWebAdmin, gt_web_admin, GT, WEB_ADMIN, GObject)

/* Applies the configuration file at path (reload without restarting the process): stops the
 * running relay and starts one from the file; FALSE with error when it cannot. */
typedef gboolean (*GtWebAdminApplyFunc) (const char *path, gpointer user_data, GError **error);

/* Listens on addr (see gt_api_server_new_for_web) for a server or client whose configuration
 * file is config_path (it may not exist yet). web: the running configuration's web keys (may be
 * NULL: no admin user yet, only one-time links log in). */
GtWebAdmin *gt_web_admin_new (GtConfigKind kind, const char *config_path, const char *addr,
                              const GtWebConfig *web, GError **error);
const char *gt_web_admin_get_address (GtWebAdmin *admin);
/* "http://127.0.0.1:PORT/#key=KEY": a link that logs in once or a few times within minutes. */
char *gt_web_admin_make_login_link (GtWebAdmin *admin);
/* The running relay (NULL when none); not referenced: set NULL before it goes. */
void gt_web_admin_set_server (GtWebAdmin *admin, GtServer *server);
void gt_web_admin_set_client (GtWebAdmin *admin, GtClient *client);
void gt_web_admin_set_apply_func (GtWebAdmin *admin, GtWebAdminApplyFunc func,
                                  gpointer user_data);
/* After a reload from another source: new admin credentials. */
void gt_web_admin_set_credentials (GtWebAdmin *admin, const GtWebConfig *web);

/* Bounds (exposed for the tests). */
#define GT_WEB_ADMIN_LOGIN_FAILURES 5     /* per address and window, then 429 */
#define GT_WEB_ADMIN_LOGIN_WINDOW_S 60
#define GT_WEB_ADMIN_KEY_TTL_S 300        /* a one-time link's life */
#define GT_WEB_ADMIN_KEY_USES 3
#define GT_WEB_ADMIN_MAX_SESSIONS 64
#define GT_WEB_ADMIN_SESSION_IDLE_S 1800
#define GT_WEB_ADMIN_HISTORY 300          /* traffic samples, one per second */

G_END_DECLS
