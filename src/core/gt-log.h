/* gt-log.h: log setup: level filter, timestamps, GT_DEBUG areas. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* level: "trace", "debug", "info", "warn", "error", "fatal", "panic", "disable" (GT's names). */
gboolean gt_log_init (const char *level, GError **error);
gboolean gt_log_level_is_valid (const char *level);
/* TRUE when debug output is on (logLevel debug/trace or GT_DEBUG set). */
gboolean gt_log_debug_enabled (void);

G_END_DECLS
