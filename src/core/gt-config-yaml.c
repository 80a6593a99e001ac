/* gt-config-yaml.c: the YAML loader (libyaml) of GT's server and client schemas, with
 * FILE:LINE:COLUMN on every error; keys come from the tables of gt-config-keys.c. */
#include "config.h"

#include "gt-config-private.h"

#include <string.h>
#include <yaml.h>

typedef struct
{
  yaml_document_t doc;
  gboolean have_doc;
  const char *file;
  char *base_dir;     /* folder of the file for relative paths; NULL = as given */
  GPtrArray *warnings;
  GHashTable *places; /* GtConfigKeyPlace of values that validate() checks */
  gboolean users_file; /* loading options.users: command-line users are kept */
  GtConfigIssue **issue_out;
  GError **error;
} Loader;

static void
loader_clear (Loader *ld)
{
  if (ld->have_doc)
    yaml_document_delete (&ld->doc);
  ld->have_doc = FALSE;
  g_clear_pointer (&ld->base_dir, g_free);
}

static guint
node_line (yaml_node_t *node)
{
  return node != NULL ? (guint) node->start_mark.line + 1 : 0;
}

static guint
node_column (yaml_node_t *node)
{
  return node != NULL ? (guint) node->start_mark.column + 1 : 0;
}

/* Errors at a node: ld_fail (ld, node, code, format, ...), ld_fail_take (ld, node, code, msg) */
#define ld_fail(ld, node, ...)                                                                  \
  _gt_config_fail_printf ((ld)->issue_out, (ld)->error, (ld)->file, node_line (node),           \
                          node_column (node), __VA_ARGS__)
#define ld_fail_take(ld, node, code, message)                                                   \
  _gt_config_fail_take ((ld)->issue_out, (ld)->error, (ld)->file, node_line (node),             \
                        node_column (node), code, message)

static const char *
node_kind_name (yaml_node_t *node)
{
  switch (node->type)
    {
    case YAML_SCALAR_NODE:
      return "scalar";
    case YAML_SEQUENCE_NODE:
      return "list";
    case YAML_MAPPING_NODE:
      return "mapping";
    case YAML_NO_NODE:
    default:
      return "nothing";
    }
}

static gboolean
node_is_null (yaml_node_t *node)
{
  const char *value;

  if (node == NULL)
    return TRUE;
  if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    return FALSE;
  value = (const char *) node->data.scalar.value;
  return node->data.scalar.length == 0 || strcmp (value, "~") == 0
         || strcmp (value, "null") == 0 || strcmp (value, "Null") == 0
         || strcmp (value, "NULL") == 0;
}

static yaml_node_t *
ld_node (Loader *ld, int id)
{
  return yaml_document_get_node (&ld->doc, id);
}

/* Scalar text of a node (NULL for a null node). Fails on other shapes and on NUL bytes. */
static gboolean
ld_scalar (Loader *ld, yaml_node_t *node, const char *key, const char **out)
{
  *out = NULL;
  if (node_is_null (node))
    return TRUE;
  if (node->type != YAML_SCALAR_NODE)
    return ld_fail (ld, node, GT_CONFIG_ERROR_TYPE, "'%s' must be a scalar, not a %s", key,
                    node_kind_name (node));
  if (strlen ((const char *) node->data.scalar.value) != node->data.scalar.length)
    return ld_fail (ld, node, GT_CONFIG_ERROR_VALUE, "'%s' contains a NUL byte", key);
  *out = (const char *) node->data.scalar.value;
  return TRUE;
}

/* Checks a mapping (keys are scalars, no duplicate keys); a null node is an empty mapping. */
static gboolean
ld_mapping (Loader *ld, yaml_node_t *node, const char *key, gboolean *present)
{
  g_autoptr (GHashTable) seen = NULL;

  *present = FALSE;
  if (node_is_null (node))
    return TRUE;
  if (node->type != YAML_MAPPING_NODE)
    return ld_fail (ld, node, GT_CONFIG_ERROR_TYPE, "'%s' must be a mapping, not a %s", key,
                    node_kind_name (node));
  seen = g_hash_table_new (g_str_hash, g_str_equal);
  for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
       pair < node->data.mapping.pairs.top; pair++)
    {
      yaml_node_t *k = ld_node (ld, pair->key);
      const char *name;

      if (k == NULL || k->type != YAML_SCALAR_NODE)
        return ld_fail (ld, k != NULL ? k : node, GT_CONFIG_ERROR_TYPE,
                        "keys of '%s' must be scalars", key);
      name = (const char *) k->data.scalar.value;
      if (strlen (name) != k->data.scalar.length)
        return ld_fail (ld, k, GT_CONFIG_ERROR_VALUE, "a key of '%s' contains a NUL byte", key);
      if (!g_hash_table_add (seen, (gpointer) name))
        return ld_fail (ld, k, GT_CONFIG_ERROR_INVALID, "duplicate key '%s'", name);
    }
  *present = TRUE;
  return TRUE;
}

static gboolean
ld_sequence (Loader *ld, yaml_node_t *node, const char *key, gboolean *present)
{
  *present = FALSE;
  if (node_is_null (node))
    return TRUE;
  if (node->type != YAML_SEQUENCE_NODE)
    return ld_fail (ld, node, GT_CONFIG_ERROR_TYPE, "'%s' must be a list, not a %s", key,
                    node_kind_name (node));
  *present = TRUE;
  return TRUE;
}

/* Loops over the pairs of a mapping already checked by ld_mapping(); `continue` works, `break`
 * does not (nested loops). */
#define FOREACH_PAIR(ld, map, kvar, vvar, namevar)                                              \
  for (yaml_node_pair_t *pair_ = (map)->data.mapping.pairs.start;                               \
       pair_ < (map)->data.mapping.pairs.top; pair_++)                                          \
    for (yaml_node_t *kvar = ld_node ((ld), pair_->key), *vvar = ld_node ((ld), pair_->value),  \
                     *once_ = kvar;                                                             \
         once_ != NULL; once_ = NULL)                                                           \
      for (const char *namevar = (const char *) kvar->data.scalar.value; namevar != NULL;     \
           namevar = NULL)

#define FOREACH_ITEM(ld, seq, ivar)                                                             \
  for (yaml_node_item_t *item_ = (seq)->data.sequence.items.start;                              \
       item_ < (seq)->data.sequence.items.top; item_++)                                         \
    for (yaml_node_t *ivar = ld_node ((ld), *item_), *oncei_ = (yaml_node_t *) 1;              \
         oncei_ != NULL; oncei_ = NULL)

static void
ld_warn_unknown (Loader *ld, yaml_node_t *key_node, const char *name)
{
  _gt_config_add_warning (ld->warnings, ld->file, node_line (key_node), node_column (key_node),
                          "unknown key '%s'", name);
}

/* A GT key we do not implement: a warning, or a debug note when it changes nothing; its shape is
 * checked loosely (never fails). */
static void
ld_warn_unsupported (Loader *ld, yaml_node_t *key_node, yaml_node_t *value,
                     const char *display, const GtConfigLoose *loose)
{
  gboolean ok = TRUE;
  const char *expected = "a scalar";
  const char *text = NULL;
  g_autofree char *key = g_strdup_printf ("key '%s'", display);
  g_autofree char *problem = NULL;

  if (!node_is_null (value))
    switch (loose->type)
      {
      case GT_LOOSE_SCALAR:
      case GT_LOOSE_BOOL:
        ok = value->type == YAML_SCALAR_NODE;
        break;
      case GT_LOOSE_LIST:
        expected = "a scalar or a list of scalars";
        if (value->type == YAML_SEQUENCE_NODE)
          {
            FOREACH_ITEM (ld, value, item)
              if (item == NULL || item->type != YAML_SCALAR_NODE)
                ok = FALSE;
              else if (text == NULL)
                text = (const char *) item->data.scalar.value;
          }
        else
          ok = value->type == YAML_SCALAR_NODE;
        break;
      case GT_LOOSE_MAP:
        expected = "a mapping";
        ok = value->type == YAML_MAPPING_NODE;
        break;
      default:
        g_assert_not_reached ();
      }
  if (!ok)
    problem = g_strdup_printf ("it should be %s, not a %s", expected, node_kind_name (value));
  else if (!node_is_null (value) && value->type == YAML_SCALAR_NODE)
    text = (const char *) value->data.scalar.value;
  _gt_config_add_unsupported (ld->warnings, ld->file, node_line (key_node),
                              node_column (key_node), loose, key, text, problem);
}

static void
ld_place (Loader *ld, const char *key, yaml_node_t *node)
{
  if (ld->places != NULL)
    _gt_config_places_set (ld->places, key, ld->file, node_line (node), node_column (node));
}

/* Sets one value of an option, with the file's rules for relative paths. */
static gboolean
ld_option_value (Loader *ld, void *config, const GtConfigOpt *def, yaml_node_t *node,
                 const char *text)
{
  g_autofree char *resolved = NULL;
  g_autofree char *warning = NULL;
  char *message;

  if ((def->type == GT_OPT_PATH || (def->type == GT_OPT_WEB_CERT && strcmp (text, "auto") != 0)
       || (def->type == GT_OPT_REMOTE_CERT && !_gt_config_looks_like_pin (text)))
      && *text != '\0' && ld->base_dir != NULL && !g_path_is_absolute (text))
    text = resolved = g_build_filename (ld->base_dir, text, NULL);
  message = _gt_config_opt_set (config, def, text, &warning);
  if (message != NULL)
    return ld_fail_take (ld, node, GT_CONFIG_ERROR_VALUE, message);
  if (warning != NULL)
    _gt_config_add_warning (ld->warnings, ld->file, node_line (node), node_column (node), "%s",
                            warning);
  return TRUE;
}

/* An option of the `options:` mapping, from the key tables (gt-config-keys.c). */
static gboolean
ld_option (Loader *ld, void *config, const GtConfigOpt *def, yaml_node_t *value)
{
  const char *text = NULL;

  if (def->type == GT_OPT_REMOTES || def->type == GT_OPT_CIDRS || def->type == GT_OPT_HTTP_URLS
      || def->type == GT_OPT_STUN_URLS || def->type == GT_OPT_FORWARD_RULES
      || def->type == GT_OPT_PORT_RANGES)
    {
      gboolean is_list = FALSE;

      if (node_is_null (value))
        return TRUE;
      /* YAML replaces: a file loaded later wins over an earlier one. */
      if (def->type == GT_OPT_REMOTES)
        g_ptr_array_set_size (*(GPtrArray **) ((char *) config + def->offset), 0);
      else if (def->type == GT_OPT_PORT_RANGES)
        g_clear_pointer ((GArray **) ((char *) config + def->offset), g_array_unref);
      else
        g_clear_pointer ((char ***) ((char *) config + def->offset), g_strfreev);
      if (value != NULL && value->type == YAML_SEQUENCE_NODE)
        {
          if (!ld_sequence (ld, value, def->name, &is_list))
            return FALSE;
          FOREACH_ITEM (ld, value, item)
          {
            if (item == NULL)
              continue;
            if (!ld_scalar (ld, item, def->name, &text))
              return FALSE;
            if (text == NULL)
              continue;
            if (!ld_option_value (ld, config, def, item, text))
              return FALSE;
          }
          return TRUE;
        }
    }

  if (!ld_scalar (ld, value, def->name, &text))
    return FALSE;
  if (text == NULL)
    return TRUE; /* null: keep the current value */
  ld_place (ld, def->name, value);
  return ld_option_value (ld, config, def, value, text);
}

static gboolean
ld_options (Loader *ld, void *config, yaml_node_t *map, GtConfigKeys keys)
{
  gboolean present;

  if (!ld_mapping (ld, map, keys == GT_CONFIG_KEYS_CLUSTER ? "cluster" : "options", &present))
    return FALSE;
  if (!present)
    return TRUE;
  FOREACH_PAIR (ld, map, key, value, name)
  {
    const GtConfigOpt *def = _gt_config_opt_find (keys, name);
    const GtConfigLoose *loose;

    if (def != NULL)
      {
        if (!ld_option (ld, config, def, value))
          return FALSE;
      }
    else if ((loose = _gt_config_loose_find (keys, name)) != NULL)
      ld_warn_unsupported (ld, key, value, name, loose);
    else
      ld_warn_unknown (ld, key, name);
  }
  return TRUE;
}

/* A `tcp:` list of `{range: A-B}` entries, appended to ranges (and places). */
static gboolean
ld_tcp_ranges (Loader *ld, yaml_node_t *list, const char *key, GArray **ranges,
               GArray **places)
{
  gboolean present;

  if (!ld_sequence (ld, list, key, &present))
    return FALSE;
  if (!present)
    return TRUE;
  FOREACH_ITEM (ld, list, item)
  {
    gboolean is_map;

    if (item == NULL)
      continue;
    if (!ld_mapping (ld, item, "tcp", &is_map))
      return FALSE;
    if (!is_map)
      continue;
    FOREACH_PAIR (ld, item, k, v, name)
    {
      if (strcmp (name, "range") == 0)
        {
          const char *text;
          GtPortRange range;
          GtConfigPlace place = { node_line (v), node_column (v) };
          char *message;

          if (!ld_scalar (ld, v, "range", &text))
            return FALSE;
          if (text == NULL)
            continue;
          message = _gt_config_parse_range (text, &range);
          if (message != NULL)
            return ld_fail_take (ld, v, GT_CONFIG_ERROR_VALUE, message);
          if (*ranges == NULL)
            *ranges = g_array_new (FALSE, FALSE, sizeof (GtPortRange));
          g_array_append_val (*ranges, range);
          if (places != NULL)
            {
              if (*places == NULL)
                *places = g_array_new (FALSE, FALSE, sizeof (GtConfigPlace));
              g_array_append_val (*places, place);
            }
        }
      else
        ld_warn_unknown (ld, k, name);
    }
  }
  return TRUE;
}

/* A `host:` mapping (global or per user): GT's host-prefix rules. */
typedef struct
{
  gboolean number_set;
  guint64 number;
  gboolean with_id_set;
  gboolean with_id;
  gboolean regex_set;
  char **regex; /* NULL for an empty list */
} HostRules;

static void
host_rules_clear (HostRules *rules)
{
  g_clear_pointer (&rules->regex, g_strfreev);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (HostRules, host_rules_clear)

static gboolean
ld_host_regex_item (Loader *ld, yaml_node_t *node, const char *key_prefix, HostRules *rules)
{
  const char *text;
  char *message;
  g_autofree char *place_key = NULL;

  if (!ld_scalar (ld, node, "regex", &text))
    return FALSE;
  if (text == NULL)
    return TRUE;
  message = _gt_config_parse_regex (text);
  if (message != NULL)
    return ld_fail_take (ld, node, GT_CONFIG_ERROR_VALUE, message);
  place_key = g_strdup_printf ("%s.regex.%u", key_prefix,
                               rules->regex != NULL ? g_strv_length (rules->regex) : 0);
  ld_place (ld, place_key, node);
  _gt_config_strv_append (&rules->regex, text);
  return TRUE;
}

static gboolean
ld_host (Loader *ld, yaml_node_t *map, const char *key_prefix, HostRules *rules)
{
  gboolean present;

  if (!ld_mapping (ld, map, "host", &present))
    return FALSE;
  if (!present)
    return TRUE;
  FOREACH_PAIR (ld, map, k, v, name)
  {
    const char *text;
    char *message;

    if (strcmp (name, "number") == 0)
      {
        if (!ld_scalar (ld, v, "number", &text))
          return FALSE;
        if (text == NULL)
          continue;
        message = _gt_config_parse_uint (text, G_MAXINT32, &rules->number);
        if (message != NULL)
          return ld_fail_take (ld, v, GT_CONFIG_ERROR_VALUE, message);
        rules->number_set = TRUE;
      }
    else if (strcmp (name, "withID") == 0)
      {
        if (!ld_scalar (ld, v, "withID", &text))
          return FALSE;
        if (text == NULL)
          continue;
        message = _gt_config_parse_bool (text, &rules->with_id);
        if (message != NULL)
          return ld_fail_take (ld, v, GT_CONFIG_ERROR_VALUE, message);
        rules->with_id_set = TRUE;
      }
    else if (strcmp (name, "regex") == 0)
      {
        if (node_is_null (v))
          continue;
        g_clear_pointer (&rules->regex, g_strfreev);
        rules->regex_set = TRUE;
        if (v->type == YAML_SEQUENCE_NODE)
          {
            FOREACH_ITEM (ld, v, item)
            {
              if (item != NULL && !ld_host_regex_item (ld, item, key_prefix, rules))
                return FALSE;
            }
          }
        else if (!ld_host_regex_item (ld, v, key_prefix, rules))
          return FALSE;
      }
    else
      ld_warn_unknown (ld, k, name);
  }
  return TRUE;
}

/* The keys of a `users:` entry, from the user table. */
static gboolean
ld_user_fields (Loader *ld, GtUserEntry *entry, yaml_node_t *value, const char *id)
{
  FOREACH_PAIR (ld, value, k, v, name)
  {
    const GtConfigOpt *def = _gt_config_opt_find (GT_CONFIG_KEYS_USER, name);
    const char *text;

    if (def == NULL)
      ld_warn_unknown (ld, k, name);
    else if (def->type == GT_OPT_TCP_RANGES)
      {
        if (!ld_tcp_ranges (ld, v, name, &entry->pub.tcp_ranges, &entry->range_places))
          return FALSE;
      }
    else if (def->type == GT_OPT_HOST_RULES)
      {
        g_auto (HostRules) rules = { 0 };
        g_autofree char *key_prefix = g_strdup_printf ("users.%s.host", id);

        if (!ld_host (ld, v, key_prefix, &rules))
          return FALSE;
        if (rules.number_set)
          entry->pub.host_number = (gint) rules.number;
        if (rules.with_id_set)
          entry->pub.host_with_id = rules.with_id ? 1 : 0;
        if (rules.regex_set)
          {
            g_strfreev (entry->pub.host_regex);
            entry->pub.host_regex = g_steal_pointer (&rules.regex);
          }
      }
    else
      {
        if (!ld_scalar (ld, v, name, &text))
          return FALSE;
        if (text != NULL && !ld_option_value (ld, entry, def, v, text))
          return FALSE;
      }
  }
  return TRUE;
}

static gboolean
ld_user (Loader *ld, GtServerConfig *config, yaml_node_t *key, yaml_node_t *value,
         const char *id)
{
  GtUserEntry *entry;
  gboolean present;
  gint index;
  gsize id_len = strlen (id);

  if (id_len == 0 || id_len > MAX_ID_LEN)
    return ld_fail (ld, key, GT_CONFIG_ERROR_VALUE, "user id must be 1 to %d bytes",
                    MAX_ID_LEN);
  if (!ld_mapping (ld, value, id, &present))
    return FALSE;

  entry = _gt_config_user_new (id, node_line (key), node_column (key));
  entry->file = g_strdup (ld->file);
  if (present && !ld_user_fields (ld, entry, value, id))
    {
      _gt_config_user_free (&entry->pub);
      return FALSE;
    }

  index = _gt_config_find_user_index (config, id);
  if (index < 0)
    g_ptr_array_add (config->users, entry);
  else if (ld->users_file && ((GtUserEntry *) g_ptr_array_index (config->users, index))->from_cli)
    _gt_config_user_free (&entry->pub); /* GT: --id/--secret win over the users file */
  else
    {
      /* The users file replaces the config's entry; a file loaded twice: the later wins. */
      _gt_config_user_free (g_ptr_array_index (config->users, index));
      g_ptr_array_index (config->users, index) = entry;
    }
  return TRUE;
}

static gboolean
ld_users (Loader *ld, GtServerConfig *config, yaml_node_t *map)
{
  gboolean present;

  if (!ld_mapping (ld, map, "users", &present))
    return FALSE;
  if (!present)
    return TRUE;
  FOREACH_PAIR (ld, map, key, value, id)
  {
    if (!ld_user (ld, config, key, value, id))
      return FALSE;
  }
  return TRUE;
}

/* The `type:` key; expected is SERVER, CLIENT or UNKNOWN (detect only). */
static gboolean
ld_type (Loader *ld, yaml_node_t *value, GtConfigKind expected, GtConfigKind *kind_out)
{
  const char *text;
  GtConfigKind kind;

  if (!ld_scalar (ld, value, "type", &text))
    return FALSE;
  if (text == NULL)
    {
      *kind_out = GT_CONFIG_KIND_UNKNOWN;
      return TRUE;
    }
  if (strcmp (text, "server") == 0)
    kind = GT_CONFIG_KIND_SERVER;
  else if (strcmp (text, "client") == 0)
    kind = GT_CONFIG_KIND_CLIENT;
  else
    return ld_fail (ld, value, GT_CONFIG_ERROR_VALUE,
                    "unknown type '%s' (expected server or client)", text);
  if (expected != GT_CONFIG_KIND_UNKNOWN && kind != expected)
    return ld_fail (ld, value, GT_CONFIG_ERROR_INVALID,
                    "type is '%s' but a %s configuration was expected", text,
                    expected == GT_CONFIG_KIND_SERVER ? "server" : "client");
  *kind_out = kind;
  return TRUE;
}

static gboolean
ld_service (Loader *ld, GtClientConfig *config, yaml_node_t *item)
{
  yaml_node_t *local_node = NULL;
  GtServiceConfig *service = NULL;
  gboolean present;
  const char *text;
  char *message;

  if (!ld_mapping (ld, item, "services", &present))
    return FALSE;
  if (!present)
    return ld_fail (ld, item, GT_CONFIG_ERROR_INVALID, "service without 'local'");

  FOREACH_PAIR (ld, item, k, v, name)
  {
    if (strcmp (name, "local") == 0)
      local_node = v;
  }
  if (!ld_scalar (ld, local_node, "local", &text))
    return FALSE;
  if (text == NULL)
    return ld_fail (ld, local_node != NULL ? local_node : item, GT_CONFIG_ERROR_INVALID,
                    "service without 'local'");
  message = _gt_config_parse_local_url (text, &service);
  if (message != NULL)
    return ld_fail_take (ld, local_node, GT_CONFIG_ERROR_VALUE, message);
  service->line = node_line (item);
  service->column = node_column (item);
  g_ptr_array_add (config->services, service);

  FOREACH_PAIR (ld, item, k, v, name)
  {
    const GtConfigOpt *def = _gt_config_opt_find (GT_CONFIG_KEYS_SERVICE, name);

    if (strcmp (name, "local") == 0)
      continue;
    if (def == NULL)
      {
        ld_warn_unknown (ld, k, name);
        continue;
      }
    if (!ld_scalar (ld, v, name, &text))
      return FALSE;
    if (text != NULL && !ld_option_value (ld, service, def, v, text))
      return FALSE;
  }
  _gt_config_service_finish (service);
  return TRUE;
}

static gboolean
ld_services (Loader *ld, GtClientConfig *config, yaml_node_t *list)
{
  gboolean present;

  if (!ld_sequence (ld, list, "services", &present))
    return FALSE;
  if (!present)
    return TRUE;
  FOREACH_ITEM (ld, list, item)
  {
    if (item == NULL)
      continue;
    if (!ld_service (ld, config, item))
      return FALSE;
  }
  return TRUE;
}

/* Computes line/column of a byte offset (reader errors only give an offset). */
static void
offset_to_place (const char *data, gsize len, gsize offset, guint *line, guint *column)
{
  *line = 1;
  *column = 1;
  for (gsize i = 0; i < offset && i < len; i++)
    {
      if (data[i] == '\n')
        {
          (*line)++;
          *column = 1;
        }
      else if (((guchar) data[i] & 0xc0) != 0x80)
        (*column)++;
    }
}

static gboolean
ld_parser_error (Loader *ld, yaml_parser_t *parser, const char *data, gsize len)
{
  guint line = 0, column = 0;
  char *message;

  if (parser->error == YAML_READER_ERROR)
    {
      offset_to_place (data, len, parser->problem_offset, &line, &column);
      message = g_strdup_printf ("YAML error: %s",
                                 parser->problem != NULL ? parser->problem : "bad input");
    }
  else if (parser->error == YAML_MEMORY_ERROR)
    message = g_strdup ("YAML error: out of memory");
  else
    {
      line = (guint) parser->problem_mark.line + 1;
      column = (guint) parser->problem_mark.column + 1;
      if (parser->context != NULL)
        message = g_strdup_printf ("YAML syntax error: %s (%s started at line %u, column %u)",
                                   parser->problem != NULL ? parser->problem : "unknown",
                                   parser->context,
                                   (guint) parser->context_mark.line + 1,
                                   (guint) parser->context_mark.column + 1);
      else
        message = g_strdup_printf ("YAML syntax error: %s",
                                   parser->problem != NULL ? parser->problem : "unknown");
    }
  return _gt_config_fail_take (ld->issue_out, ld->error, ld->file, line, column,
                               GT_CONFIG_ERROR_SYNTAX, message);
}

/* Parses the first document; *root_out is NULL for an empty file. A later document is a
 * warning (GT reads only the first). */
static gboolean
ld_parse (Loader *ld, const char *data, gssize len, yaml_node_t **root_out)
{
  yaml_parser_t parser;
  yaml_document_t extra;
  gsize size = len < 0 ? strlen (data) : (gsize) len;
  gboolean ok = TRUE;
  yaml_node_t *root;

  *root_out = NULL;
  if (!yaml_parser_initialize (&parser))
    return _gt_config_fail_printf (ld->issue_out, ld->error, ld->file, 0, 0,
                                   GT_CONFIG_ERROR_SYNTAX, "YAML error: out of memory");
  yaml_parser_set_input_string (&parser, (const unsigned char *) data, size);
  if (!yaml_parser_load (&parser, &ld->doc))
    {
      ok = ld_parser_error (ld, &parser, data, size);
      yaml_parser_delete (&parser);
      return ok;
    }
  ld->have_doc = TRUE;
  root = yaml_document_get_root_node (&ld->doc);
  if (root != NULL)
    {
      if (!yaml_parser_load (&parser, &extra))
        ok = ld_parser_error (ld, &parser, data, size);
      else
        {
          yaml_node_t *extra_root = yaml_document_get_root_node (&extra);
          if (extra_root != NULL)
            _gt_config_add_warning (ld->warnings, ld->file, node_line (extra_root),
                                    node_column (extra_root),
                                    "only the first YAML document is read; the rest is ignored");
          yaml_document_delete (&extra);
        }
    }
  yaml_parser_delete (&parser);
  *root_out = root;
  return ok;
}

static gboolean
ld_root_mapping (Loader *ld, yaml_node_t *root, gboolean *present)
{
  *present = FALSE;
  if (root == NULL || node_is_null (root))
    return TRUE;
  if (root->type != YAML_MAPPING_NODE)
    return ld_fail (ld, root, GT_CONFIG_ERROR_TYPE,
                    "the top level must be a mapping, not a %s", node_kind_name (root));
  return ld_mapping (ld, root, "top level", present);
}

static gboolean
server_load (GtServerConfig *config, Loader *ld, const char *data, gssize len)
{
  yaml_node_t *root;
  gboolean present;
  GtConfigKind kind;

  if (!ld_parse (ld, data, len, &root) || !ld_root_mapping (ld, root, &present))
    return FALSE;
  if (!present)
    return TRUE;
  FOREACH_PAIR (ld, root, key, value, name)
  {
    if (strcmp (name, "version") == 0)
      ; /* ignored, as GT does */
    else if (strcmp (name, "type") == 0)
      {
        if (!ld_type (ld, value, GT_CONFIG_KIND_SERVER, &kind))
          return FALSE;
      }
    else if (strcmp (name, "options") == 0)
      {
        if (!ld_options (ld, config, value, GT_CONFIG_KEYS_SERVER))
          return FALSE;
      }
    else if (strcmp (name, "users") == 0)
      {
        if (!ld_users (ld, config, value))
          return FALSE;
      }
    else if (strcmp (name, "cluster") == 0)
      {
        if (!ld_options (ld, config, value, GT_CONFIG_KEYS_CLUSTER))
          return FALSE;
      }
    else if (strcmp (name, "tcp") == 0)
      {
        if (!ld_tcp_ranges (ld, value, "tcp", &config->tcp_ranges, NULL))
          return FALSE;
      }
    else if (strcmp (name, "host") == 0)
      {
        GtServerConfigPriv *priv = (GtServerConfigPriv *) config;
        g_auto (HostRules) rules = { 0 };

        if (!ld_host (ld, value, "host", &rules))
          return FALSE;
        if (rules.number_set)
          {
            config->host_number = (guint) rules.number;
            priv->host_number_from_file = TRUE;
          }
        if (rules.with_id_set)
          {
            config->host_with_id = rules.with_id;
            priv->host_with_id_from_file = TRUE;
          }
        if (rules.regex_set)
          {
            /* Replaces an earlier file's list; --hostRegex values are added after. */
            g_strfreev (config->host_regex);
            config->host_regex = g_steal_pointer (&rules.regex);
          }
      }
    else
      ld_warn_unknown (ld, key, name);
  }
  return TRUE;
}

static gboolean
client_load (GtClientConfig *config, Loader *ld, const char *data, gssize len)
{
  yaml_node_t *root;
  gboolean present;
  GtConfigKind kind;

  if (!ld_parse (ld, data, len, &root) || !ld_root_mapping (ld, root, &present))
    return FALSE;
  if (!present)
    return TRUE;
  FOREACH_PAIR (ld, root, key, value, name)
  {
    if (strcmp (name, "version") == 0)
      ;
    else if (strcmp (name, "type") == 0)
      {
        if (!ld_type (ld, value, GT_CONFIG_KIND_CLIENT, &kind))
          return FALSE;
      }
    else if (strcmp (name, "options") == 0)
      {
        if (!ld_options (ld, config, value, GT_CONFIG_KEYS_CLIENT))
          return FALSE;
      }
    else if (strcmp (name, "services") == 0)
      {
        if (!ld_services (ld, config, value))
          return FALSE;
      }
    else
      ld_warn_unknown (ld, key, name);
  }
  _gt_config_client_clamp (config);
  return TRUE;
}

/* Relative paths in a file are relative to the file's folder ("." means as given). */
static char *
base_dir_of (const char *filename)
{
  g_autofree char *dir = NULL;

  if (filename == NULL)
    return NULL;
  dir = g_path_get_dirname (filename);
  if (strcmp (dir, ".") == 0)
    return NULL;
  return g_steal_pointer (&dir);
}

/* Sets a loader up for data from filename (NULL: "<data>"), which becomes *config_path. */
static void
loader_init (Loader *ld, const char *filename, GPtrArray *warnings, GHashTable *places,
             char **config_path, GtConfigIssue **issue_out, GError **error)
{
  ld->file = filename != NULL ? filename : "<data>";
  ld->base_dir = base_dir_of (filename);
  ld->warnings = warnings;
  ld->places = places;
  ld->issue_out = issue_out;
  ld->error = error;
  if (filename != NULL)
    {
      g_free (*config_path);
      *config_path = g_strdup (filename);
    }
}

gboolean
gt_server_config_load_data (GtServerConfig *config, const char *data, gssize len,
                            const char *filename, GtConfigIssue **issue_out, GError **error)
{
  Loader ld = { 0 };
  gboolean ok;

  g_return_val_if_fail (config != NULL, FALSE);
  g_return_val_if_fail (data != NULL || len == 0, FALSE);

  loader_init (&ld, filename, config->warnings, ((GtServerConfigPriv *) config)->places,
               &config->config_path, issue_out, error);
  ok = server_load (config, &ld, data != NULL ? data : "", len);
  loader_clear (&ld);
  return ok;
}

gboolean
gt_client_config_load_data (GtClientConfig *config, const char *data, gssize len,
                            const char *filename, GtConfigIssue **issue_out, GError **error)
{
  Loader ld = { 0 };
  gboolean ok;

  g_return_val_if_fail (config != NULL, FALSE);
  g_return_val_if_fail (data != NULL || len == 0, FALSE);

  loader_init (&ld, filename, config->warnings, ((GtClientConfigPriv *) config)->places,
               &config->config_path, issue_out, error);
  ok = client_load (config, &ld, data != NULL ? data : "", len);
  loader_clear (&ld);
  return ok;
}

gboolean
gt_server_config_load_file (GtServerConfig *config, const char *path,
                            GtConfigIssue **issue_out, GError **error)
{
  g_autofree char *data = NULL;
  gsize len = 0;

  g_return_val_if_fail (config != NULL && path != NULL, FALSE);
  return _gt_config_read_file (path, &data, &len, issue_out, error)
         && gt_server_config_load_data (config, data, (gssize) len, path, issue_out, error);
}

gboolean
gt_client_config_load_file (GtClientConfig *config, const char *path,
                            GtConfigIssue **issue_out, GError **error)
{
  g_autofree char *data = NULL;
  gsize len = 0;

  g_return_val_if_fail (config != NULL && path != NULL, FALSE);
  return _gt_config_read_file (path, &data, &len, issue_out, error)
         && gt_client_config_load_data (config, data, (gssize) len, path, issue_out, error);
}

static GtConfigKind
detect_kind (const char *data, gssize len, const char *filename, GError **error)
{
  Loader ld = { 0 };
  g_autoptr (GPtrArray) warnings = g_ptr_array_new_with_free_func (
    (GDestroyNotify) gt_config_issue_free);
  yaml_node_t *root;
  gboolean present;
  GtConfigKind kind = GT_CONFIG_KIND_SERVER;
  gboolean has_services = FALSE, has_type = FALSE;

  ld.file = filename != NULL ? filename : "<data>";
  ld.warnings = warnings;
  ld.error = error;
  if (!ld_parse (&ld, data, len, &root) || !ld_root_mapping (&ld, root, &present))
    {
      loader_clear (&ld);
      return GT_CONFIG_KIND_UNKNOWN;
    }
  if (present)
    {
      FOREACH_PAIR (&ld, root, key, value, name)
      {
        if (strcmp (name, "type") == 0)
          {
            GtConfigKind type_kind;
            if (!ld_type (&ld, value, GT_CONFIG_KIND_UNKNOWN, &type_kind))
              {
                loader_clear (&ld);
                return GT_CONFIG_KIND_UNKNOWN;
              }
            if (type_kind != GT_CONFIG_KIND_UNKNOWN)
              {
                has_type = TRUE;
                kind = type_kind;
              }
          }
        else if (strcmp (name, "services") == 0)
          has_services = TRUE;
      }
    }
  loader_clear (&ld);
  if (!has_type && has_services)
    kind = GT_CONFIG_KIND_CLIENT;
  return kind;
}

GtConfigKind
gt_config_detect_kind_data (const char *data, gssize len, GError **error)
{
  g_return_val_if_fail (data != NULL || len == 0, GT_CONFIG_KIND_UNKNOWN);
  return detect_kind (data != NULL ? data : "", len, NULL, error);
}

GtConfigKind
gt_config_detect_kind_file (const char *path, GError **error)
{
  g_autofree char *data = NULL;
  gsize len = 0;

  g_return_val_if_fail (path != NULL, GT_CONFIG_KIND_UNKNOWN);

  if (!_gt_config_read_file (path, &data, &len, NULL, error))
    return GT_CONFIG_KIND_UNKNOWN;
  return detect_kind (data, (gssize) len, path, error);
}


gboolean
_gt_config_yaml_load_users (GtServerConfig *config, const char *data, gsize len,
                            const char *file, GtConfigIssue **issue_out, GError **error)
{
  Loader ld = { 0 };
  yaml_node_t *root;
  gboolean present = FALSE;
  gboolean ok;

  ld.file = file;
  ld.warnings = config->warnings;
  ld.places = ((GtServerConfigPriv *) config)->places;
  ld.users_file = TRUE;
  ld.issue_out = issue_out;
  ld.error = error;
  ok = ld_parse (&ld, data, (gssize) len, &root) && ld_root_mapping (&ld, root, &present)
       && (!present || ld_users (&ld, config, root));
  loader_clear (&ld);
  return ok;
}
