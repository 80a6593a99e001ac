/* gt-admin-config.c: the admin UI's configuration document: GT's YAML schema as JSON, converted
 * both ways, checked by the real loader, secrets kept out of what the browser sees. */
#include "config.h"

#include <string.h>
#include <gio/gio.h>
#include <yaml.h>

#include "gt-admin-auth.h"
#include "gt-admin-config.h"

void
gt_admin_field_error_free (GtAdminFieldError *e)
{
  if (e == NULL)
    return;
  g_free (e->field);
  g_free (e->message);
  g_free (e);
}

/* Bounds ------------------------------------------------------------------------------------ */

static gboolean
check_bounds (JsonNode *node, guint depth, guint *n_nodes, GError **error)
{
  if (++*n_nodes > GT_ADMIN_CONFIG_MAX_NODES || depth > GT_ADMIN_CONFIG_MAX_DEPTH)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                   "the document is too big (at most %d values, %d levels)",
                   GT_ADMIN_CONFIG_MAX_NODES, GT_ADMIN_CONFIG_MAX_DEPTH);
      return FALSE;
    }
  switch (json_node_get_node_type (node))
    {
    case JSON_NODE_OBJECT:
      {
        JsonObjectIter iter;
        const char *name;
        JsonNode *member;

        json_object_iter_init (&iter, json_node_get_object (node));
        while (json_object_iter_next (&iter, &name, &member))
          {
            if (strlen (name) > GT_ADMIN_CONFIG_MAX_STRING)
              goto too_long;
            if (!g_utf8_validate (name, -1, NULL))
              goto not_utf8;
            if (!check_bounds (member, depth + 1, n_nodes, error))
              return FALSE;
          }
        return TRUE;
      }
    case JSON_NODE_ARRAY:
      {
        JsonArray *array = json_node_get_array (node);

        for (guint i = 0; i < json_array_get_length (array); i++)
          if (!check_bounds (json_array_get_element (array, i), depth + 1, n_nodes, error))
            return FALSE;
        return TRUE;
      }
    case JSON_NODE_VALUE:
      if (json_node_get_value_type (node) == G_TYPE_STRING
          && strlen (json_node_get_string (node)) > GT_ADMIN_CONFIG_MAX_STRING)
        goto too_long;
      /* json-glib turns some invalid escapes ("\2") into bytes that are not UTF-8. */
      if (json_node_get_value_type (node) == G_TYPE_STRING
          && !g_utf8_validate (json_node_get_string (node), -1, NULL))
        goto not_utf8;
      return TRUE;
    case JSON_NODE_NULL:
    default:
      return TRUE;
    }

too_long:
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
               "a string is longer than %d bytes", GT_ADMIN_CONFIG_MAX_STRING);
  return FALSE;

not_utf8:
  g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                       "a string is not valid UTF-8 (bad escape?)");
  return FALSE;
}

JsonNode *
gt_admin_parse_json_body (const char *data, gsize len, GError **error)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) local = NULL;
  JsonNode *root;
  guint n = 0;

  if (len > GT_ADMIN_MAX_BODY)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                   "the request body is bigger than %d bytes", GT_ADMIN_MAX_BODY);
      return NULL;
    }
  if (len == 0 || !g_utf8_validate (data, len, NULL)
      || !json_parser_load_from_data (parser, data, (gssize) len, &local))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "the body is not valid JSON%s%s",
                   local != NULL ? ": " : "", local != NULL ? local->message : "");
      return NULL;
    }
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                           "the body must be a JSON object");
      return NULL;
    }
  if (!check_bounds (root, 0, &n, error))
    return NULL;
  return json_node_copy (root);
}

/* YAML → JSON ------------------------------------------------------------------------------- */

static JsonNode *
yaml_to_json (yaml_document_t *doc, yaml_node_t *node, guint depth, GError **error)
{
  JsonNode *out;

  if (depth > GT_ADMIN_CONFIG_MAX_DEPTH * 2)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "YAML nested too deeply");
      return NULL;
    }
  switch (node->type)
    {
    case YAML_SCALAR_NODE:
      {
        const char *text = (const char *) node->data.scalar.value;

        out = json_node_new (JSON_NODE_VALUE);
        if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE
            && (*text == '\0' || strcmp (text, "~") == 0 || strcmp (text, "null") == 0))
          return json_node_init_null (out);
        json_node_set_string (out, text);
        return out;
      }
    case YAML_SEQUENCE_NODE:
      {
        JsonArray *array = json_array_new ();

        for (yaml_node_item_t *item = node->data.sequence.items.start;
             item < node->data.sequence.items.top; item++)
          {
            JsonNode *child = yaml_to_json (doc, yaml_document_get_node (doc, *item), depth + 1,
                                            error);
            if (child == NULL)
              {
                json_array_unref (array);
                return NULL;
              }
            json_array_add_element (array, child);
          }
        out = json_node_new (JSON_NODE_ARRAY);
        json_node_take_array (out, array);
        return out;
      }
    case YAML_MAPPING_NODE:
      {
        JsonObject *object = json_object_new ();

        for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
             pair < node->data.mapping.pairs.top; pair++)
          {
            yaml_node_t *key = yaml_document_get_node (doc, pair->key);
            JsonNode *child;

            if (key == NULL || key->type != YAML_SCALAR_NODE)
              continue;
            child = yaml_to_json (doc, yaml_document_get_node (doc, pair->value), depth + 1,
                                  error);
            if (child == NULL)
              {
                json_object_unref (object);
                return NULL;
              }
            json_object_set_member (object, (const char *) key->data.scalar.value, child);
          }
        out = json_node_new (JSON_NODE_OBJECT);
        json_node_take_object (out, object);
        return out;
      }
    case YAML_NO_NODE:
    default:
      return json_node_init_null (json_node_new (JSON_NODE_NULL));
    }
}

JsonNode *
gt_admin_config_from_yaml (const char *data, gsize len, GError **error)
{
  yaml_parser_t parser;
  yaml_document_t doc;
  yaml_node_t *root;
  JsonNode *out = NULL;

  yaml_parser_initialize (&parser);
  yaml_parser_set_input_string (&parser, (const unsigned char *) data, len);
  if (!yaml_parser_load (&parser, &doc))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "YAML error at line %zu: %s",
                   parser.problem_mark.line + 1, parser.problem ? parser.problem : "?");
      yaml_parser_delete (&parser);
      return NULL;
    }
  root = yaml_document_get_root_node (&doc);
  if (root == NULL)
    out = json_node_init_object (json_node_alloc (), json_object_new ());
  else if (root->type != YAML_MAPPING_NODE)
    g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                         "the YAML file is not a mapping");
  else
    out = yaml_to_json (&doc, root, 0, error);
  yaml_document_delete (&doc);
  yaml_parser_delete (&parser);
  return out;
}

/* JSON → YAML ------------------------------------------------------------------------------- */

typedef struct
{
  GString *out;
  GPtrArray *lines; /* path per line */
  guint line;       /* lines written so far */
  guint n_nodes;
} Emitter;

/* A YAML double-quoted scalar: printable characters as they are, the others escaped (libyaml
 * refuses raw control characters, C1 controls, BOMs and non-characters). Invalid UTF-8 has been
 * refused by the JSON parser. */
static void
quote (GString *out, const char *text)
{
  g_string_append_c (out, '"');
  for (const char *p = text; *p != '\0'; p = g_utf8_next_char (p))
    {
      gunichar c = g_utf8_get_char (p);

      if (c == '"' || c == '\\')
        g_string_append_printf (out, "\\%c", (char) c);
      else if (c >= 0x20 && c < 0x7f)
        g_string_append_c (out, (char) c);
      else if (c >= 0xa0 && c != 0xfeff && c != 0xfffe && c != 0xffff
               && !(c >= 0xd800 && c <= 0xdfff))
        g_string_append_len (out, p, g_utf8_next_char (p) - p);
      else if (c <= 0xff)
        g_string_append_printf (out, "\\x%02x", c);
      else
        g_string_append_printf (out, "\\u%04x", c);
    }
  g_string_append_c (out, '"');
}

static void
end_line (Emitter *e, const char *path)
{
  g_string_append_c (e->out, '\n');
  e->line++;
  g_ptr_array_add (e->lines, g_strdup (path));
}

static gboolean
scalar_text (JsonNode *node, char **text, GError **error)
{
  GType type;

  if (JSON_NODE_HOLDS_NULL (node))
    {
      *text = NULL;
      return TRUE;
    }
  type = json_node_get_value_type (node);
  if (type == G_TYPE_STRING)
    *text = g_strdup (json_node_get_string (node));
  else if (type == G_TYPE_BOOLEAN)
    *text = g_strdup (json_node_get_boolean (node) ? "true" : "false");
  else if (type == G_TYPE_INT64)
    *text = g_strdup_printf ("%" G_GINT64_FORMAT, json_node_get_int (node));
  else if (type == G_TYPE_DOUBLE)
    {
      char buf[G_ASCII_DTOSTR_BUF_SIZE];

      *text = g_strdup (g_ascii_dtostr (buf, sizeof buf, json_node_get_double (node)));
    }
  else
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                           "unsupported value in the document");
      return FALSE;
    }
  return TRUE;
}

static gboolean emit_node (Emitter *e, JsonNode *node, guint indent, const char *path,
                           guint depth, GError **error);

static void
emit_scalar (Emitter *e, const char *text)
{
  if (text == NULL)
    g_string_append (e->out, "null");
  else
    quote (e->out, text);
}

static gboolean
is_container (JsonNode *node)
{
  return JSON_NODE_HOLDS_OBJECT (node) || JSON_NODE_HOLDS_ARRAY (node);
}

static gboolean
is_empty_container (JsonNode *node)
{
  if (JSON_NODE_HOLDS_OBJECT (node))
    return json_object_get_size (json_node_get_object (node)) == 0;
  if (JSON_NODE_HOLDS_ARRAY (node))
    return json_array_get_length (json_node_get_array (node)) == 0;
  return FALSE;
}

/* Writes a value after "key:" or "-": scalars and empty containers on the same line, others on
 * the following lines, indented. */
static gboolean
emit_value (Emitter *e, JsonNode *node, guint indent, const char *path, guint depth,
            GError **error)
{
  if (!is_container (node) || is_empty_container (node))
    {
      g_autofree char *text = NULL;

      g_string_append_c (e->out, ' ');
      if (is_container (node))
        g_string_append (e->out, JSON_NODE_HOLDS_OBJECT (node) ? "{}" : "[]");
      else
        {
          if (!scalar_text (node, &text, error))
            return FALSE;
          emit_scalar (e, text);
        }
      end_line (e, path);
      return TRUE;
    }
  end_line (e, path);
  return emit_node (e, node, indent + 2, path, depth + 1, error);
}

static gboolean
emit_node (Emitter *e, JsonNode *node, guint indent, const char *path, guint depth,
           GError **error)
{
  if (++e->n_nodes > GT_ADMIN_CONFIG_MAX_NODES || depth > GT_ADMIN_CONFIG_MAX_DEPTH)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                           "the document is too big");
      return FALSE;
    }
  if (JSON_NODE_HOLDS_OBJECT (node))
    {
      JsonObject *object = json_node_get_object (node);
      /* In the order the members came (json-glib's iterator follows its hash table). */
      g_autoptr (GList) names = json_object_get_members (object);

      for (GList *l = names; l != NULL; l = l->next)
        {
          const char *name = l->data;
          JsonNode *member = json_object_get_member (object, name);
          g_autofree char *child = *path ? g_strdup_printf ("%s.%s", path, name)
                                         : g_strdup (name);

          if (strlen (name) > GT_ADMIN_CONFIG_MAX_STRING)
            {
              g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                                   "a key is too long");
              return FALSE;
            }
          g_string_append_printf (e->out, "%*s", indent, "");
          quote (e->out, name);
          g_string_append_c (e->out, ':');
          if (!emit_value (e, member, indent, child, depth, error))
            return FALSE;
        }
      return TRUE;
    }
  if (JSON_NODE_HOLDS_ARRAY (node))
    {
      JsonArray *array = json_node_get_array (node);

      for (guint i = 0; i < json_array_get_length (array); i++)
        {
          JsonNode *item = json_array_get_element (array, i);
          g_autofree char *child = g_strdup_printf ("%s.%u", path, i);

          g_string_append_printf (e->out, "%*s-", indent, "");
          if (JSON_NODE_HOLDS_OBJECT (item) && !is_empty_container (item))
            {
              /* "- " then the first key on the same line would shift columns; a bare "-" line
               * followed by the mapping is the same YAML and keeps one value per line. */
              end_line (e, child);
              if (!emit_node (e, item, indent + 2, child, depth + 1, error))
                return FALSE;
            }
          else if (!emit_value (e, item, indent, child, depth, error))
            return FALSE;
        }
      return TRUE;
    }
  g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                       "the document must be a JSON object");
  return FALSE;
}

char *
gt_admin_config_to_yaml (JsonNode *doc, GPtrArray **lines, GError **error)
{
  Emitter e = { 0 };

  g_return_val_if_fail (doc != NULL, NULL);
  if (!JSON_NODE_HOLDS_OBJECT (doc))
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                           "the configuration must be a JSON object");
      return NULL;
    }
  e.out = g_string_new ("# Written by the gt admin UI.\n");
  e.lines = g_ptr_array_new_with_free_func (g_free);
  g_ptr_array_add (e.lines, g_strdup ("")); /* index 0: no line */
  g_ptr_array_add (e.lines, g_strdup ("")); /* the comment */
  e.line = 1;
  if (!emit_node (&e, doc, 0, "", 0, error))
    {
      g_string_free (e.out, TRUE);
      g_ptr_array_unref (e.lines);
      return NULL;
    }
  if (lines != NULL)
    *lines = e.lines;
  else
    g_ptr_array_unref (e.lines);
  return g_string_free (e.out, FALSE);
}

/* Secrets ----------------------------------------------------------------------------------- */

static gboolean
is_secret_key (const char *name)
{
  return strcmp (name, "secret") == 0 || strcmp (name, "password") == 0;
}

void
gt_admin_config_blank_secrets (JsonNode *doc)
{
  if (doc == NULL)
    return;
  if (JSON_NODE_HOLDS_OBJECT (doc))
    {
      JsonObject *object = json_node_get_object (doc);
      g_autoptr (GList) names = json_object_get_members (object);

      for (GList *l = names; l != NULL; l = l->next)
        {
          JsonNode *member = json_object_get_member (object, l->data);

          if (is_secret_key (l->data) && !is_container (member))
            json_object_set_string_member (object, l->data, "");
          else
            gt_admin_config_blank_secrets (member);
        }
    }
  else if (JSON_NODE_HOLDS_ARRAY (doc))
    {
      JsonArray *array = json_node_get_array (doc);

      for (guint i = 0; i < json_array_get_length (array); i++)
        gt_admin_config_blank_secrets (json_array_get_element (array, i));
    }
}

static JsonObject *
object_member (JsonNode *node, const char *name)
{
  JsonNode *member;

  if (node == NULL || !JSON_NODE_HOLDS_OBJECT (node))
    return NULL;
  member = json_object_get_member (json_node_get_object (node), name);
  return member != NULL && JSON_NODE_HOLDS_OBJECT (member) ? json_node_get_object (member)
                                                           : NULL;
}

static const char *
string_member (JsonObject *object, const char *name)
{
  JsonNode *member = object != NULL ? json_object_get_member (object, name) : NULL;

  if (member == NULL || !JSON_NODE_HOLDS_VALUE (member)
      || json_node_get_value_type (member) != G_TYPE_STRING)
    return NULL;
  return json_node_get_string (member);
}

/* A secret given as "" or left out keeps the old one. */
static void
keep_secret (JsonObject *now, JsonObject *old, const char *name)
{
  const char *given = string_member (now, name);
  const char *before = string_member (old, name);

  if (old == NULL || before == NULL || *before == '\0')
    {
      if (given != NULL && *given == '\0')
        json_object_remove_member (now, name);
      return;
    }
  if (given == NULL || *given == '\0')
    json_object_set_string_member (now, name, before);
}

gboolean
gt_admin_config_merge_secrets (JsonNode *doc, JsonNode *old, GError **error)
{
  JsonObject *options = object_member (doc, "options");
  JsonObject *users = object_member (doc, "users");
  const char *password;

  if (options != NULL)
    {
      keep_secret (options, object_member (old, "options"), "secret");
      keep_secret (options, object_member (old, "options"), "password");
      password = string_member (options, "password");
      if (password != NULL && !gt_admin_password_is_hash (password))
        {
          g_autofree char *hash = gt_admin_password_hash (password, error);

          if (hash == NULL)
            return FALSE;
          json_object_set_string_member (options, "password", hash);
        }
    }
  if (users != NULL)
    {
      JsonObject *old_users = object_member (old, "users");
      g_autoptr (GList) ids = json_object_get_members (users);

      for (GList *l = ids; l != NULL; l = l->next)
        {
          JsonNode *user = json_object_get_member (users, l->data);
          JsonNode *old_user = old_users ? json_object_get_member (old_users, l->data) : NULL;

          if (user != NULL && JSON_NODE_HOLDS_OBJECT (user))
            keep_secret (json_node_get_object (user),
                         old_user != NULL && JSON_NODE_HOLDS_OBJECT (old_user)
                           ? json_node_get_object (old_user)
                           : NULL,
                         "secret");
        }
    }
  return TRUE;
}

/* Checking ---------------------------------------------------------------------------------- */

static void
add_issue (GPtrArray *out, GtConfigIssue *issue, const char *filename, GPtrArray *lines)
{
  GtAdminFieldError *e = g_new0 (GtAdminFieldError, 1);
  const char *field = "";

  if (issue->file != NULL && filename != NULL && strcmp (issue->file, filename) == 0
      && lines != NULL && issue->line < lines->len)
    field = lines->pdata[issue->line];
  e->field = g_strdup (field);
  e->message = gt_config_issue_to_string (issue);
  e->line = issue->line;
  e->column = issue->column;
  g_ptr_array_add (out, e);
}

gboolean
gt_admin_config_check (GtConfigKind kind, const char *yaml, const char *filename,
                       GPtrArray *lines, GPtrArray **errors, GPtrArray **warnings)
{
  g_autoptr (GtConfigIssue) issue = NULL;
  g_autoptr (GError) error = NULL;
  GPtrArray *found_warnings = NULL;
  gboolean ok;

  *errors = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_admin_field_error_free);
  if (warnings != NULL)
    *warnings = g_ptr_array_new_with_free_func ((GDestroyNotify) gt_admin_field_error_free);
  if (kind == GT_CONFIG_KIND_SERVER)
    {
      g_autoptr (GtServerConfig) config = gt_server_config_new ();

      ok = gt_server_config_load_data (config, yaml, -1, filename, &issue, &error)
           && gt_server_config_validate (config, &issue, &error);
      found_warnings = g_ptr_array_ref (config->warnings);
    }
  else
    {
      g_autoptr (GtClientConfig) config = gt_client_config_new ();

      ok = gt_client_config_load_data (config, yaml, -1, filename, &issue, &error)
           && gt_client_config_validate (config, &issue, &error);
      found_warnings = g_ptr_array_ref (config->warnings);
    }
  if (!ok)
    {
      if (issue != NULL)
        add_issue (*errors, issue, filename, lines);
      else
        {
          GtAdminFieldError *e = g_new0 (GtAdminFieldError, 1);

          e->field = g_strdup ("");
          e->message = g_strdup (error != NULL ? error->message : "invalid configuration");
          g_ptr_array_add (*errors, e);
        }
    }
  for (guint i = 0; warnings != NULL && i < found_warnings->len; i++)
    add_issue (*warnings, found_warnings->pdata[i], filename, lines);
  g_ptr_array_unref (found_warnings);
  return ok;
}
