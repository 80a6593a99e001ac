/* gt-metrics.h: Prometheus text format 0.0.4 writers, a sample parser, process figures. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define GT_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* "# HELP name help\n# TYPE name type\n"; help is escaped (\\ and \n). */
void gt_metrics_write_family (GString *out, const char *name,
                              const char *type /* counter|gauge */, const char *help);
/* labels: NULL-terminated key,value,key,value,...; values escaped (\\, \", \n) */
void gt_metrics_write_sample (GString *out, const char *name, const char *const *labels,
                              double value);
/* Finds the sample line with this name and exactly this label set (any order; NULL or empty =
 * no labels) and reads its value. FALSE if there is none or the text around it is malformed. */
gboolean gt_metrics_parse_sample (const char *text, const char *name, const char *const *labels,
                                  double *value);

/* Resident set size of this process (from /proc/self/statm), 0 if unknown. */
guint64 gt_process_rss_bytes (void);
/* Open file descriptors of this process (entries of /proc/self/fd), 0 if unknown. */
guint gt_process_open_fds (void);

G_END_DECLS
