/* gt-config-secrets.c: hides the `secret:` values of a YAML document from control APIs and puts
 * them back when an edited document comes back with the placeholder. */
#include "config.h"

#define G_LOG_DOMAIN "gt-config"

#include <glib/gi18n-lib.h>
#include <string.h>
#include <yaml.h>

#include "gt-config.h"

/* Where one `secret:` value sits: its key path and its bytes in the document. */
typedef struct
{
  char *path;   /* mapping keys and sequence indexes joined by '/' ("options/secret") */
  gsize start;  /* byte offsets of the value, quotes included */
  gsize end;
  char *value;  /* the scalar's value, unquoted */
  gboolean block; /* literal or folded: its bytes end after a line break */
  yaml_scalar_style_t style;
  guint line;   /* 1-based */
  guint column;
} SecretPlace;

static void
secret_place_free (SecretPlace *place)
{
  g_free (place->path);
  if (place->value != NULL)
    memset (place->value, 0, strlen (place->value));
  g_free (place->value);
  g_free (place);
}

typedef struct
{
  gboolean mapping;
  gboolean want_key; /* mapping: the next scalar is a key */
  char *key;         /* mapping: the key of the value being read */
  guint index;       /* sequence: index of the next item */
} Frame;

static void
frame_clear (gpointer data)
{
  g_free (((Frame *) data)->key);
}

static char *
frames_path (GArray *frames, const char *leaf)
{
  GString *path = g_string_new (NULL);

  /* Each frame but the innermost names where its child sits. */
  for (guint i = 0; i + 1 < frames->len; i++)
    {
      Frame *f = &g_array_index (frames, Frame, i);

      if (f->mapping)
        g_string_append_printf (path, "%s/", f->key ? f->key : "");
      else
        g_string_append_printf (path, "%u/", f->index);
    }
  g_string_append (path, leaf);
  return g_string_free (path, FALSE);
}

/* After a value (scalar, alias or a whole collection) of the top frame. */
static void
frames_value_done (GArray *frames)
{
  Frame *top;

  if (frames->len == 0)
    return;
  top = &g_array_index (frames, Frame, frames->len - 1);
  if (top->mapping)
    {
      top->want_key = TRUE;
      g_clear_pointer (&top->key, g_free);
    }
  else
    top->index++;
}

/* libyaml counts marks in characters, after a UTF-8 byte order mark: turn them into byte
 * offsets of text (valid UTF-8; the places are in document order). */
static void
to_byte_offsets (const char *text, gsize len, GPtrArray *places)
{
  const char *base = text;
  const char *p;
  gsize chars = 0;

  if (len >= 3 && memcmp (text, "\xef\xbb\xbf", 3) == 0)
    base += 3;
  p = base;
  for (guint i = 0; i < places->len; i++)
    {
      SecretPlace *place = places->pdata[i];
      gsize *marks[] = { &place->start, &place->end };

      for (guint m = 0; m < 2; m++)
        {
          while (chars < *marks[m] && p < text + len)
            {
              p = g_utf8_next_char (p);
              chars++;
            }
          *marks[m] = (gsize) (MIN (p, text + len) - text);
        }
    }
}

/* Every `secret:` scalar of the first document of text, in order. */
static GPtrArray *
find_secrets (const char *text, gsize len, GError **error)
{
  g_autoptr (GPtrArray) places = g_ptr_array_new_with_free_func ((GDestroyNotify) secret_place_free);
  g_autoptr (GArray) frames = g_array_new (FALSE, TRUE, sizeof (Frame));
  yaml_parser_t parser;
  gboolean done = FALSE, ok = TRUE;

  g_array_set_clear_func (frames, frame_clear);
  /* libyaml reads UTF-8 (or UTF-16 with a BOM, which no config uses): offsets need UTF-8. */
  if (!g_utf8_validate (text, (gssize) len, NULL))
    {
      g_set_error_literal (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_SYNTAX,
                           _("1:1: the document is not UTF-8 text"));
      return NULL;
    }
  if (!yaml_parser_initialize (&parser))
    {
      g_set_error_literal (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_SYNTAX, "out of memory");
      return NULL;
    }
  yaml_parser_set_input_string (&parser, (const unsigned char *) text, len);
  while (!done)
    {
      yaml_event_t event;
      Frame *top;

      if (!yaml_parser_parse (&parser, &event))
        {
          g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_SYNTAX, "%zu:%zu: %s",
                       parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                       parser.problem ? parser.problem : "YAML syntax error");
          ok = FALSE;
          break;
        }
      top = frames->len > 0 ? &g_array_index (frames, Frame, frames->len - 1) : NULL;
      switch (event.type)
        {
        case YAML_MAPPING_START_EVENT:
        case YAML_SEQUENCE_START_EVENT:
          {
            Frame f = { 0 };

            f.mapping = event.type == YAML_MAPPING_START_EVENT;
            f.want_key = TRUE;
            g_array_append_val (frames, f);
          }
          break;
        case YAML_MAPPING_END_EVENT:
        case YAML_SEQUENCE_END_EVENT:
          g_array_set_size (frames, frames->len - 1);
          frames_value_done (frames);
          break;
        case YAML_SCALAR_EVENT:
          if (top != NULL && top->mapping && top->want_key)
            {
              top->key = g_strndup ((const char *) event.data.scalar.value,
                                    event.data.scalar.length);
              top->want_key = FALSE;
              break;
            }
          /* An empty value (no bytes) hides nothing; replacing it could glue it to the key. */
          if (top != NULL && top->mapping && g_strcmp0 (top->key, "secret") == 0
              && event.end_mark.index > event.start_mark.index)
            {
              SecretPlace *place = g_new0 (SecretPlace, 1);

              place->path = frames_path (frames, "secret");
              place->start = event.start_mark.index;
              place->end = event.end_mark.index;
              place->value = g_strndup ((const char *) event.data.scalar.value,
                                        event.data.scalar.length);
              place->style = event.data.scalar.style;
              place->block = event.data.scalar.style == YAML_LITERAL_SCALAR_STYLE
                             || event.data.scalar.style == YAML_FOLDED_SCALAR_STYLE;
              place->line = event.start_mark.line + 1;
              place->column = event.start_mark.column + 1;
              g_ptr_array_add (places, place);
            }
          frames_value_done (frames);
          break;
        case YAML_ALIAS_EVENT:
          frames_value_done (frames);
          break;
        case YAML_DOCUMENT_END_EVENT:
        case YAML_STREAM_END_EVENT:
          done = TRUE;
          break;
        default:
          break;
        }
      yaml_event_delete (&event);
    }
  yaml_parser_delete (&parser);
  if (!ok)
    return NULL;
  to_byte_offsets (text, len, places);
  return g_steal_pointer (&places);
}

/* text with [start, end) of each place replaced by the matching string of replacements. */
static char *
splice (const char *text, gsize len, GPtrArray *places, GPtrArray *replacements)
{
  GString *out = g_string_sized_new (len);
  gsize at = 0;

  for (guint i = 0; i < places->len; i++)
    {
      SecretPlace *place = places->pdata[i];
      const char *with = replacements->pdata[i];

      if (with == NULL || place->start < at || place->end > len)
        continue;
      g_string_append_len (out, text + at, (gssize) (place->start - at));
      g_string_append (out, with);
      at = place->end;
    }
  g_string_append_len (out, text + at, (gssize) (len - at));
  return g_string_free (out, FALSE);
}

char *
gt_config_redact_secrets (const char *text, gssize len, GError **error)
{
  g_autoptr (GPtrArray) places = NULL;
  g_autoptr (GPtrArray) with = NULL;
  gsize n;

  g_return_val_if_fail (text != NULL, NULL);

  n = len < 0 ? strlen (text) : (gsize) len;
  places = find_secrets (text, n, error);
  if (places == NULL)
    return NULL;
  with = g_ptr_array_new ();
  for (guint i = 0; i < places->len; i++)
    g_ptr_array_add (with, ((SecretPlace *) places->pdata[i])->block
                             ? (gpointer) "\"" GT_CONFIG_SECRET_PLACEHOLDER "\"\n"
                             : (gpointer) "\"" GT_CONFIG_SECRET_PLACEHOLDER "\"");
  return splice (text, n, places, with);
}

/* The old value as it can stand where the placeholder is: its own bytes when they fit in any
 * context (one line, quoted or plain without flow or comment characters), else a new
 * double-quoted scalar (the placeholder's own style, valid wherever it was). */
static char *
old_scalar_text (const char *old_text, const SecretPlace *old)
{
  g_autofree char *raw = g_strndup (old_text + old->start, old->end - old->start);
  gboolean fits = strchr (raw, '\n') == NULL && strchr (raw, '\r') == NULL;
  GString *out;

  if (fits && old->style == YAML_PLAIN_SCALAR_STYLE)
    fits = strpbrk (raw, ",[]{}#:") == NULL;
  else if (fits)
    fits = old->style == YAML_SINGLE_QUOTED_SCALAR_STYLE
           || old->style == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
  if (fits)
    return g_steal_pointer (&raw);
  memset (raw, 0, strlen (raw));
  out = g_string_new ("\"");
  for (const char *c = old->value; *c != '\0'; c++)
    {
      if (*c == '"' || *c == '\\')
        g_string_append_printf (out, "\\%c", *c);
      else if ((guchar) *c < 0x20 || *c == 0x7f)
        g_string_append_printf (out, "\\x%02x", (guchar) *c);
      else
        g_string_append_c (out, *c);
    }
  g_string_append_c (out, '"');
  return g_string_free (out, FALSE);
}

char *
gt_config_restore_secrets (const char *text, gssize len, const char *old_text, gssize old_len,
                           GError **error)
{
  g_autoptr (GPtrArray) places = NULL;
  g_autoptr (GPtrArray) old_places = NULL;
  g_autoptr (GPtrArray) with = g_ptr_array_new_with_free_func (g_free);
  gsize n, old_n = 0;

  g_return_val_if_fail (text != NULL, NULL);

  n = len < 0 ? strlen (text) : (gsize) len;
  places = find_secrets (text, n, error);
  if (places == NULL)
    return NULL;
  if (old_text != NULL)
    {
      old_n = old_len < 0 ? strlen (old_text) : (gsize) old_len;
      /* An old file that no longer parses has no secrets to give. */
      old_places = find_secrets (old_text, old_n, NULL);
    }
  for (guint i = 0; i < places->len; i++)
    {
      SecretPlace *place = places->pdata[i];
      SecretPlace *old = NULL;

      if (strcmp (place->value, GT_CONFIG_SECRET_PLACEHOLDER) != 0)
        {
          g_ptr_array_add (with, NULL);
          continue;
        }
      for (guint j = 0; old_places != NULL && j < old_places->len && old == NULL; j++)
        {
          SecretPlace *candidate = old_places->pdata[j];

          if (strcmp (candidate->path, place->path) == 0
              && strcmp (candidate->value, GT_CONFIG_SECRET_PLACEHOLDER) != 0)
            old = candidate;
        }
      if (old == NULL)
        {
          g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE,
                       _("%u:%u: secret: \"%s\" stands for the saved secret, but there is "
                         "none here to keep; give the secret"),
                       place->line, place->column, GT_CONFIG_SECRET_PLACEHOLDER);
          return NULL;
        }
      g_ptr_array_add (with, old_scalar_text (old_text, old));
    }
  return splice (text, n, places, with);
}

char *
gt_config_replace_secret (const char *text, gssize len, const char *path, const char *value,
                          GError **error)
{
  g_autoptr (GPtrArray) places = NULL;
  g_autoptr (GPtrArray) with = g_ptr_array_new_with_free_func (g_free);
  gsize n;

  g_return_val_if_fail (text != NULL, NULL);
  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (value != NULL && strpbrk (value, "\"\\\n\r") == NULL, NULL);

  n = len < 0 ? strlen (text) : (gsize) len;
  places = find_secrets (text, n, error);
  if (places == NULL)
    return NULL;
  for (guint i = 0; i < places->len; i++)
    {
      SecretPlace *place = places->pdata[i];

      if (strcmp (place->path, path) != 0)
        g_ptr_array_add (with, NULL);
      else
        g_ptr_array_add (with, g_strdup_printf ("\"%s\"%s", value, place->block ? "\n" : ""));
    }
  return splice (text, n, places, with);
}
