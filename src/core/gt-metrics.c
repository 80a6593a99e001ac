/* gt-metrics.c: Prometheus text format 0.0.4 writers, a sample parser, process figures. */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "gt-metrics.h"

static void
append_escaped (GString *out, const char *text, gboolean quote)
{
  for (const char *p = text; *p != '\0'; p++)
    {
      if (*p == '\\')
        g_string_append (out, "\\\\");
      else if (*p == '\n')
        g_string_append (out, "\\n");
      else if (*p == '"' && quote)
        g_string_append (out, "\\\"");
      else
        g_string_append_c (out, *p);
    }
}

void
gt_metrics_write_family (GString *out, const char *name, const char *type, const char *help)
{
  g_return_if_fail (out != NULL);
  g_return_if_fail (name != NULL);
  g_return_if_fail (type != NULL);

  if (help != NULL)
    {
      g_string_append_printf (out, "# HELP %s ", name);
      append_escaped (out, help, FALSE);
      g_string_append_c (out, '\n');
    }
  g_string_append_printf (out, "# TYPE %s %s\n", name, type);
}

static void
append_value (GString *out, double value)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  if (value != value)
    g_string_append (out, "NaN");
  else if (value > G_MAXDOUBLE)
    g_string_append (out, "+Inf");
  else if (value < -G_MAXDOUBLE)
    g_string_append (out, "-Inf");
  /* Counters are integers: print them whole (exact up to 2^53), not as 1.2e+06. */
  else if (value == (double) (gint64) value && value > -9007199254740992.0
           && value < 9007199254740992.0)
    g_string_append_printf (out, "%" G_GINT64_FORMAT, (gint64) value);
  else
    {
      /* The shortest of %.15g and %.17g that reads back exactly (0.1, not 0.10000000000000001). */
      g_ascii_formatd (buf, sizeof buf, "%.15g", value);
      if (g_ascii_strtod (buf, NULL) != value)
        g_ascii_formatd (buf, sizeof buf, "%.17g", value);
      g_string_append (out, buf);
    }
}

void
gt_metrics_write_sample (GString *out, const char *name, const char *const *labels, double value)
{
  g_return_if_fail (out != NULL);
  g_return_if_fail (name != NULL);

  g_string_append (out, name);
  if (labels != NULL && labels[0] != NULL)
    {
      g_string_append_c (out, '{');
      for (guint i = 0; labels[i] != NULL && labels[i + 1] != NULL; i += 2)
        {
          if (i > 0)
            g_string_append_c (out, ',');
          g_string_append_printf (out, "%s=\"", labels[i]);
          append_escaped (out, labels[i + 1], TRUE);
          g_string_append_c (out, '"');
        }
      g_string_append_c (out, '}');
    }
  g_string_append_c (out, ' ');
  append_value (out, value);
  g_string_append_c (out, '\n');
}

/* Parser ------------------------------------------------------------------------------------ */

static gboolean
is_name_char (char c, gboolean first)
{
  return g_ascii_isalpha (c) || c == '_' || c == ':' || (!first && g_ascii_isdigit (c));
}

/* Parses `{k="v",...}` at *p (after the name) into a table; advances *p past '}'. */
static gboolean
parse_labels (const char **p, const char *end, GHashTable *out)
{
  const char *s = *p;

  if (s >= end || *s != '{')
    return TRUE;
  s++;
  while (s < end && *s == ' ')
    s++;
  while (s < end && *s != '}')
    {
      const char *key = s;
      g_autoptr (GString) val = g_string_new (NULL);
      char *k;

      while (s < end && is_name_char (*s, s == key))
        s++;
      if (s == key || s >= end || *s != '=')
        return FALSE;
      k = g_strndup (key, s - key);
      s++;
      if (s >= end || *s != '"')
        {
          g_free (k);
          return FALSE;
        }
      s++;
      while (s < end && *s != '"')
        {
          if (*s == '\\' && s + 1 < end)
            {
              s++;
              g_string_append_c (val, *s == 'n' ? '\n' : *s);
            }
          else
            {
              g_string_append_c (val, *s);
            }
          s++;
        }
      if (s >= end)
        {
          g_free (k);
          return FALSE;
        }
      s++;
      if (!g_hash_table_insert (out, k, g_string_free (g_steal_pointer (&val), FALSE)))
        return FALSE; /* a label twice */
      while (s < end && *s == ' ')
        s++;
      if (s < end && *s == ',')
        s++;
      while (s < end && *s == ' ')
        s++;
    }
  if (s >= end)
    return FALSE;
  *p = s + 1;
  return TRUE;
}

static gboolean
labels_match (GHashTable *have, const char *const *want)
{
  guint n = 0;

  if (want != NULL)
    for (; want[n] != NULL && want[n + 1] != NULL; n += 2)
      if (g_strcmp0 (g_hash_table_lookup (have, want[n]), want[n + 1]) != 0)
        return FALSE;
  return g_hash_table_size (have) == n / 2;
}

static gboolean
parse_value (const char *s, const char *end, double *value)
{
  g_autofree char *text = NULL;
  const char *stop;
  char *num_end;

  while (s < end && (*s == ' ' || *s == '\t'))
    s++;
  stop = s;
  while (stop < end && *stop != ' ' && *stop != '\t')
    stop++;
  if (stop == s)
    return FALSE;
  text = g_strndup (s, stop - s);
  *value = g_ascii_strtod (text, &num_end);
  return *num_end == '\0';
}

gboolean
gt_metrics_parse_sample (const char *text, const char *name, const char *const *labels,
                         double *value)
{
  gsize name_len;
  const char *line;

  g_return_val_if_fail (text != NULL, FALSE);
  g_return_val_if_fail (name != NULL, FALSE);

  name_len = strlen (name);
  for (line = text; *line != '\0';)
    {
      const char *end = strchr (line, '\n');
      const char *p;
      const char *next;

      if (end == NULL)
        end = line + strlen (line);
      next = *end == '\n' ? end + 1 : end;
      p = line;
      if ((gsize) (end - p) > name_len && strncmp (p, name, name_len) == 0
          && (p[name_len] == '{' || p[name_len] == ' '))
        {
          g_autoptr (GHashTable) have =
            g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);

          p += name_len;
          if (parse_labels (&p, end, have) && labels_match (have, labels))
            {
              double v;

              if (!parse_value (p, end, &v))
                return FALSE;
              if (value != NULL)
                *value = v;
              return TRUE;
            }
        }
      line = next;
    }
  return FALSE;
}

/* Process figures --------------------------------------------------------------------------- */

guint64
gt_process_rss_bytes (void)
{
  g_autofree char *contents = NULL;
  guint64 size, resident;
  long page = sysconf (_SC_PAGESIZE);

  if (!g_file_get_contents ("/proc/self/statm", &contents, NULL, NULL) || page <= 0)
    return 0;
  if (sscanf (contents, "%" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT, &size, &resident) != 2)
    return 0;
  return resident * (guint64) page;
}

guint
gt_process_open_fds (void)
{
  g_autoptr (GDir) dir = g_dir_open ("/proc/self/fd", 0, NULL);
  guint n = 0;

  if (dir == NULL)
    return 0;
  while (g_dir_read_name (dir) != NULL)
    n++;
  /* The directory being read holds one descriptor itself. */
  return n > 0 ? n - 1 : 0;
}
