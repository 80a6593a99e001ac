/* gt-log.c: structured log writer for gt: one line per event to stderr, filtered by level. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <gio/gio.h>

#include "gt-log.h"

static GLogLevelFlags max_level = G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO;
static gboolean debug_enabled;
static gboolean writer_installed;
/* Fields added to every journal entry (gt_log_set_field): GT_CONFIG, GT_KIND, GT_USER. */
static GLogField context_fields[4];
static guint n_context_fields;
static int journal_state = -1; /* -1 unknown, 0 stderr is not the journal, 1 it is */

void
gt_log_set_field (const char *key, const char *value)
{
  g_return_if_fail (key != NULL && value != NULL);

  for (guint i = 0; i < n_context_fields; i++)
    if (strcmp (context_fields[i].key, key) == 0)
      {
        g_free ((gpointer) context_fields[i].value);
        context_fields[i].value = g_strdup (value);
        return;
      }
  g_return_if_fail (n_context_fields < G_N_ELEMENTS (context_fields));
  context_fields[n_context_fields].key = g_intern_string (key);
  context_fields[n_context_fields].value = g_strdup (value);
  context_fields[n_context_fields].length = -1;
  n_context_fields++;
}

/* Under systemd, stderr is a journal stream: entries go to the journal with their fields. */
static gboolean
write_journal (GLogLevelFlags level, const GLogField *fields, gsize n_fields)
{
  g_autofree GLogField *all = NULL;

  if (journal_state < 0)
    journal_state = g_log_writer_is_journald (fileno (stderr)) ? 1 : 0;
  if (journal_state == 0)
    return FALSE;
  all = g_new (GLogField, n_fields + n_context_fields);
  memcpy (all, fields, n_fields * sizeof (GLogField));
  memcpy (all + n_fields, context_fields, n_context_fields * sizeof (GLogField));
  return g_log_writer_journald (level, all, n_fields + n_context_fields, NULL)
         == G_LOG_WRITER_HANDLED;
}

/* The history: a ring of GT_LOG_HISTORY lines; written from any thread. */
static GMutex history_lock;
static char *history[GT_LOG_HISTORY];
static guint64 history_seq; /* number of the newest line; line n sits at n % GT_LOG_HISTORY */

static void
history_add (char *line)
{
  g_mutex_lock (&history_lock);
  history_seq++;
  g_free (history[history_seq % GT_LOG_HISTORY]);
  history[history_seq % GT_LOG_HISTORY] = line;
  g_mutex_unlock (&history_lock);
}

GPtrArray *
gt_log_get_recent (guint64 after, guint max, guint64 *last_seq)
{
  GPtrArray *lines = g_ptr_array_new_with_free_func (g_free);
  guint64 first;

  g_mutex_lock (&history_lock);
  first = history_seq > GT_LOG_HISTORY ? history_seq - GT_LOG_HISTORY + 1 : 1;
  if (after + 1 > first)
    first = after + 1;
  if (max > 0 && history_seq >= first && history_seq - first + 1 > max)
    first = history_seq - max + 1;
  for (guint64 n = first; n <= history_seq; n++)
    g_ptr_array_add (lines, g_strdup (history[n % GT_LOG_HISTORY]));
  if (last_seq != NULL)
    *last_seq = history_seq;
  g_mutex_unlock (&history_lock);
  return lines;
}

void
gt_log_message_unrecorded (const char *format, ...)
{
  va_list args;
  g_autofree char *text = NULL;

  va_start (args, format);
  text = g_strdup_vprintf (format, args);
  va_end (args);
  g_log_structured ("gt", G_LOG_LEVEL_MESSAGE, "GT_UNRECORDED", "1", "MESSAGE", "%s", text);
}

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
  gboolean unrecorded = FALSE;
  g_autoptr (GDateTime) now = NULL;
  g_autofree char *stamp = NULL;
  char *line;

  if (!(level & max_level) && !(level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL)))
    return G_LOG_WRITER_HANDLED;

  for (gsize i = 0; i < n_fields; i++)
    {
      if (strcmp (fields[i].key, "MESSAGE") == 0)
        message = fields[i].value;
      else if (strcmp (fields[i].key, "GLIB_DOMAIN") == 0)
        domain = fields[i].value;
      else if (strcmp (fields[i].key, "GT_UNRECORDED") == 0)
        unrecorded = TRUE;
    }

  /* Library debug output stays off unless GT_DEBUG asks for everything. */
  if ((level & G_LOG_LEVEL_DEBUG) && domain != NULL && !g_str_has_prefix (domain, "gt")
      && g_getenv ("GT_DEBUG") == NULL)
    return G_LOG_WRITER_HANDLED;

  if (write_journal (level, fields, n_fields))
    return G_LOG_WRITER_HANDLED;
  now = g_date_time_new_now_local ();
  stamp = g_date_time_format (now, "%Y-%m-%dT%H:%M:%S");
  line = g_strdup_printf ("%s.%03d %s %s", stamp, g_date_time_get_microsecond (now) / 1000,
                          level_name (level), message ? message : "");
  fprintf (stderr, "%s\n", line);
  fflush (stderr);
  if (unrecorded)
    g_free (line);
  else
    history_add (line);
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

void
_gt_log_service (const char *domain, GLogLevelFlags level, const char *service,
                 const char *format, ...)
{
  g_autofree char *message = NULL;
  const char *priority;
  va_list args;

  va_start (args, format);
  message = g_strdup_vprintf (format, args);
  va_end (args);
  /* syslog priorities, as g_log_structured gives them. */
  if (level & G_LOG_LEVEL_ERROR)
    priority = "3";
  else if (level & (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING))
    priority = "4";
  else if (level & G_LOG_LEVEL_MESSAGE)
    priority = "5";
  else if (level & G_LOG_LEVEL_INFO)
    priority = "6";
  else
    priority = "7";
  {
    const GLogField fields[] = {
      { "PRIORITY", priority, -1 },
      { "GLIB_DOMAIN", domain != NULL ? domain : "", -1 },
      { "MESSAGE", message, -1 },
      { "GT_SERVICE", service != NULL ? service : "", -1 },
    };

    g_log_structured_array (level, fields, G_N_ELEMENTS (fields));
  }
}
