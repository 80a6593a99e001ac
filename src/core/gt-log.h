/* gt-log.h: log setup: level filter, timestamps, GT_DEBUG areas. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* level: "trace", "debug", "info", "warn", "error", "fatal", "panic", "disable" (GT's names). */
gboolean gt_log_init (const char *level, GError **error);
gboolean gt_log_level_is_valid (const char *level);
/* A field of every journal entry when stderr is connected to journald (JOURNAL_STREAM): gt sets
 * GT_CONFIG (the config file), GT_KIND (server, client, manager) and GT_USER (a client's id);
 * lines about one service carry GT_SERVICE too (gt_log_service).
 * Never a secret. Up to 4 keys; a later call replaces the value. */
void gt_log_set_field (const char *key, const char *value);
/* A log line about one service of a client (its local URL, or a server's "client/service"):
 * printed like g_message and friends, and in the journal with the field GT_SERVICE. */
#define gt_log_service(level, service, ...)                                                        \
  _gt_log_service (G_LOG_DOMAIN, (level), (service), __VA_ARGS__)
void _gt_log_service (const char *domain, GLogLevelFlags level, const char *service,
                      const char *format, ...) G_GNUC_PRINTF (4, 5);
/* TRUE when debug output is on (logLevel debug/trace or GT_DEBUG set). */
gboolean gt_log_debug_enabled (void);

/* The last lines written (at most GT_LOG_HISTORY, as printed: "TIME LEVEL message"), for the
 * admin UI and D-Bus: the lines whose sequence number is above after, oldest first, at most max.
 * *last_seq (may be NULL) receives the number of the newest line (0 when none). */
#define GT_LOG_HISTORY 500
GPtrArray *gt_log_get_recent (guint64 after, guint max, guint64 *last_seq);
/* A message line that is printed but not kept in the history: for lines that carry a secret the
 * operator must see once (the admin UI's one-time login link). */
void gt_log_message_unrecorded (const char *format, ...) G_GNUC_PRINTF (1, 2);

G_END_DECLS
