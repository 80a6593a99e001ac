/* gt-log.c: structured log writer for gt: one line per event to stderr, filtered by level. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <gio/gio.h>

#include "gt-log.h"

static GLogLevelFlags max_level = G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO;
static gboolean debug_enabled;
static gboolean writer_installed;

static int
level_rank (const char *level)
{
  static const char *const names[] = { "trace", "debug", "info", "warn", "warning",
                                       "error", "fatal", "panic", "disable" };
  static const int ranks[] = { 0, 0, 1, 2, 2, 3, 3, 3, 4 };

  for (guint i = 0; i < G_N_ELEMENTS (names); i++)
    if (g_ascii_strcasecmp (level, names[i]) == 0)
      return ranks[i];
  return -1;
}

gboolean
gt_log_level_is_valid (const char *level)
{
  return level != NULL && level_rank (level) >= 0;
}

gboolean
gt_log_debug_enabled (void)
{
  return debug_enabled;
}

static const char *
level_name (GLogLevelFlags level)
{
  if (level & G_LOG_LEVEL_ERROR)
    return "FATAL";
  if (level & G_LOG_LEVEL_CRITICAL)
    return "ERROR";
  if (level & G_LOG_LEVEL_WARNING)
    return "WARN";
  if (level & (G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO))
    return "INFO";
  return "DEBUG";
}

static GLogWriterOutput
gt_log_writer (GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer user_data)
{
  const char *message = NULL;
  const char *domain = NULL;
  g_autoptr (GDateTime) now = NULL;
  g_autofree char *stamp = NULL;

  if (!(level & max_level) && !(level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL)))
    return G_LOG_WRITER_HANDLED;

  for (gsize i = 0; i < n_fields; i++)
    {
      if (strcmp (fields[i].key, "MESSAGE") == 0)
        message = fields[i].value;
      else if (strcmp (fields[i].key, "GLIB_DOMAIN") == 0)
        domain = fields[i].value;
    }

  /* Library debug output stays off unless GT_DEBUG asks for everything. */
  if ((level & G_LOG_LEVEL_DEBUG) && domain != NULL && !g_str_has_prefix (domain, "gt")
      && g_getenv ("GT_DEBUG") == NULL)
    return G_LOG_WRITER_HANDLED;

  now = g_date_time_new_now_local ();
  stamp = g_date_time_format (now, "%Y-%m-%dT%H:%M:%S");
  fprintf (stderr, "%s.%03d %s %s\n", stamp, g_date_time_get_microsecond (now) / 1000,
           level_name (level), message ? message : "");
  fflush (stderr);
  return G_LOG_WRITER_HANDLED;
}

gboolean
gt_log_init (const char *level, GError **error)
{
  int rank = level ? level_rank (level) : 1;

  if (rank < 0)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "unknown log level '%s' (trace, debug, info, warn, error, disable)", level);
      return FALSE;
    }

  if (g_getenv ("GT_DEBUG") != NULL)
    rank = 0;

  switch (rank)
    {
    case 0:
      max_level = G_LOG_LEVEL_DEBUG | G_LOG_LEVEL_INFO | G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_WARNING;
      break;
    case 1:
      max_level = G_LOG_LEVEL_INFO | G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_WARNING;
      break;
    case 2:
      max_level = G_LOG_LEVEL_WARNING;
      break;
    default:
      max_level = 0;
      break;
    }
  debug_enabled = rank == 0;
  /* GLib accepts one writer per process; later calls only change the level. */
  if (!writer_installed)
    {
      g_log_set_writer_func (gt_log_writer, NULL, NULL);
      writer_installed = TRUE;
    }
  return TRUE;
}
