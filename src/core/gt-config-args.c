/* gt-config-args.c: GT's command line (-name, --name, -name=value) applied over a loaded
 * config; option names come from the key tables of gt-config-keys.c. */
#include "config.h"

#include "gt-config-private.h"

#include <stdarg.h>
#include <string.h>

/* Errors from the command line: "command line: message". */
static gboolean G_GNUC_PRINTF (3, 4)
cli_fail (GError **error, int code, const char *format, ...)
{
  va_list args;
  g_autofree char *message = NULL;

  va_start (args, format);
  message = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error (error, GT_CONFIG_ERROR, code, "command line: %s", message);
  return FALSE;
}

/* Splits "-name", "--name", "-name=value", "--name=value"; FALSE if arg is not an option. */
static gboolean
cli_split (const char *arg, char **name, const char **value)
{
  const char *start, *eq;

  if (arg[0] != '-' || arg[1] == '\0')
    return FALSE;
  start = arg[1] == '-' ? arg + 2 : arg + 1;
  if (*start == '\0' || *start == '-' || *start == '=')
    return FALSE;
  eq = strchr (start, '=');
  if (eq != NULL)
    {
      *name = g_strndup (start, eq - start);
      *value = eq + 1;
    }
  else
    {
      *name = g_strdup (start);
      *value = NULL;
    }
  return TRUE;
}

/* Gets the value of an option taking one: after '=' or the next argument. */
static gboolean
cli_take_value (int argc, char **argv, int *i, const char *name, const char *inline_value,
                const char **out, GError **error)
{
  if (inline_value != NULL)
    {
      *out = inline_value;
      return TRUE;
    }
  if (*i + 1 >= argc)
    return cli_fail (error, GT_CONFIG_ERROR_USAGE, "option '--%s' needs a value", name);
  (*i)++;
  *out = argv[*i];
  return TRUE;
}

/* Handles a GT option that we accept but ignore; returns FALSE with an error if the value is
 * missing. */
static gboolean
cli_unsupported (GPtrArray *warnings, const GtConfigLoose *loose, int argc, char **argv, int *i,
                 const char *inline_value, GError **error)
{
  const char *value = NULL;

  if (loose->type == GT_LOOSE_BOOL)
    {
      gboolean unused;
      g_autofree char *message = NULL;
      if (inline_value != NULL && (message = _gt_config_parse_bool (inline_value, &unused)) != NULL)
        return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--%s: %s", loose->name, message);
    }
  else if (!cli_take_value (argc, argv, i, loose->name, inline_value, &value, error))
    return FALSE;
  {
    g_autofree char *display = g_strdup_printf ("option '--%s'", loose->name);

    if (loose->type == GT_LOOSE_BOOL)
      value = inline_value != NULL ? inline_value : "true";
    _gt_config_add_unsupported (warnings, NULL, 0, 0, loose, display, value, NULL);
  }
  return TRUE;
}

/* Sets a table row of target (a config, or a service) from the command line; value NULL is a
 * bare boolean. places (NULL for a service) records that the value came from here. */
static gboolean
cli_set (void *target, const GtConfigOpt *def, const char *value, GPtrArray *warnings,
         GHashTable *places, GError **error)
{
  g_autofree char *message = NULL;
  g_autofree char *warning = NULL;

  message = _gt_config_opt_set (target, def, value != NULL ? value : "true", &warning);
  if (message != NULL)
    return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--%s: %s", def->name, message);
  if (warning != NULL)
    _gt_config_add_warning (warnings, NULL, 0, 0, "--%s: %s", def->name, warning);
  if (places != NULL)
    _gt_config_places_set (places, def->name, NULL, 0, 0);
  return TRUE;
}

/* Applies a table option of the server's command line, taking its value. */
static gboolean
cli_option (void *config, GPtrArray *warnings, GHashTable *places, const GtConfigOpt *def,
            int argc, char **argv, int *i, const char *inline_value, GError **error)
{
  const char *value = NULL;

  if (def->type != GT_OPT_BOOL || inline_value != NULL)
    {
      if (!cli_take_value (argc, argv, i, def->name, inline_value, &value, error))
        return FALSE;
    }
  return cli_set (config, def, value, warnings, places, error);
}

gboolean
gt_server_config_apply_args (GtServerConfig *config, int argc, char **argv, GError **error)
{
  g_autoptr (GPtrArray) ids = g_ptr_array_new ();
  g_autoptr (GPtrArray) secrets = g_ptr_array_new ();
  GtServerConfigPriv *priv = (GtServerConfigPriv *) config;
  gboolean cidrs_replaced = FALSE;
  gboolean rules_replaced = FALSE;
  gboolean udp_ranges_replaced = FALSE;

  g_return_val_if_fail (config != NULL, FALSE);
  g_return_val_if_fail (argc == 0 || argv != NULL, FALSE);

  for (int i = 0; i < argc; i++)
    {
      g_autofree char *name = NULL;
      const char *inline_value = NULL, *value = NULL;
      const GtConfigOpt *def;
      const GtConfigLoose *loose;

      if (!cli_split (argv[i], &name, &inline_value))
        return cli_fail (error, GT_CONFIG_ERROR_USAGE, "unexpected argument '%s'", argv[i]);

      if ((def = _gt_config_opt_find (GT_CONFIG_KEYS_SERVER, name)) != NULL)
        {
          if (def->type == GT_OPT_CIDRS && !cidrs_replaced)
            {
              /* The command line replaces the file's list. */
              g_clear_pointer (&config->proxy_protocol_trusted_cidrs, g_strfreev);
              cidrs_replaced = TRUE;
            }
          if (def->type == GT_OPT_PORT_RANGES && !udp_ranges_replaced)
            {
              /* The same for the udp ranges. */
              g_clear_pointer (&config->udp_ranges, g_array_unref);
              udp_ranges_replaced = TRUE;
            }
          if (def->type == GT_OPT_FORWARD_RULES && !rules_replaced)
            {
              /* The same for the forward rules. */
              g_clear_pointer (&config->tcp_forward_allow, g_strfreev);
              rules_replaced = TRUE;
            }
          if (!cli_option (config, config->warnings, priv->places, def, argc, argv, &i,
                           inline_value, error))
            return FALSE;
        }
      else if (g_str_has_prefix (name, "cluster.")
               && (def = _gt_config_opt_find (GT_CONFIG_KEYS_CLUSTER, name + 8)) != NULL)
        {
          /* --cluster.etcd repeats (the command line adds to the file's list). */
          if (!cli_option (config, config->warnings, priv->places, def, argc, argv, &i,
                           inline_value, error))
            return FALSE;
        }
      else if (strcmp (name, "hostNumber") == 0)
        {
          guint64 number = 0;
          g_autofree char *message = NULL;
          if (!cli_take_value (argc, argv, &i, name, inline_value, &value, error))
            return FALSE;
          message = _gt_config_parse_uint (value, G_MAXINT32, &number);
          if (message != NULL)
            return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--hostNumber: %s", message);
          if (priv->host_number_from_file)
            _gt_config_add_warning (
                config->warnings, NULL, 0, 0,
                "--hostNumber is ignored: host.number of the file wins (as in GT)");
          else
            config->host_number = (guint) number;
        }
      else if (strcmp (name, "hostWithID") == 0)
        {
          gboolean with_id = TRUE;
          g_autofree char *message = NULL;
          if (inline_value != NULL
              && (message = _gt_config_parse_bool (inline_value, &with_id)) != NULL)
            return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--hostWithID: %s", message);
          if (priv->host_with_id_from_file)
            _gt_config_add_warning (
                config->warnings, NULL, 0, 0,
                "--hostWithID is ignored: host.withID of the file wins (as in GT)");
          else
            config->host_with_id = with_id;
        }
      else if (strcmp (name, "hostRegex") == 0)
        {
          g_autofree char *message = NULL;
          g_autofree char *place_key = NULL;
          if (!cli_take_value (argc, argv, &i, name, inline_value, &value, error))
            return FALSE;
          message = _gt_config_parse_regex (value);
          if (message != NULL)
            return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--hostRegex: %s", message);
          /* GT: the union of host.regex and --hostRegex. */
          place_key = g_strdup_printf (
            "host.regex.%u", config->host_regex != NULL ? g_strv_length (config->host_regex) : 0);
          _gt_config_places_set (priv->places, place_key, NULL, 0, 0);
          _gt_config_strv_append (&config->host_regex, value);
        }
      else if (strcmp (name, "id") == 0 || strcmp (name, "secret") == 0)
        {
          gsize len;
          if (!cli_take_value (argc, argv, &i, name, inline_value, &value, error))
            return FALSE;
          len = strlen (value);
          if (len == 0 || len > MAX_ID_LEN)
            return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--%s: %s must be 1 to %d bytes", name,
                             name, MAX_ID_LEN);
          g_ptr_array_add (name[0] == 'i' ? ids : secrets, (gpointer) value);
        }
      else if (strcmp (name, "tcpRange") == 0)
        {
          GtPortRange range;
          g_autofree char *message = NULL;
          if (!cli_take_value (argc, argv, &i, name, inline_value, &value, error))
            return FALSE;
          message = _gt_config_parse_range (value, &range);
          if (message != NULL)
            return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--tcpRange: %s", message);
          g_array_append_val (config->tcp_ranges, range);
        }
      else if ((loose = _gt_config_loose_find (GT_CONFIG_KEYS_SERVER, name)) != NULL)
        {
          if (!cli_unsupported (config->warnings, loose, argc, argv, &i, inline_value, error))
            return FALSE;
        }
      else
        return cli_fail (error, GT_CONFIG_ERROR_USAGE, "unknown option '--%s'", name);
    }

  if (ids->len != secrets->len)
    return cli_fail (error, GT_CONFIG_ERROR_USAGE,
                     "--id and --secret must be given the same number of times (%u --id, %u "
                     "--secret)",
                     ids->len, secrets->len);
  for (guint i = 0; i < ids->len; i++)
    {
      const char *id = g_ptr_array_index (ids, i);
      GtUserEntry *entry = _gt_config_user_new (id, 0, 0);
      gint index = _gt_config_find_user_index (config, id);

      entry->from_cli = TRUE;
      entry->pub.secret = g_strdup (g_ptr_array_index (secrets, i));
      if (index >= 0)
        {
          /* GT: a command-line user replaces the file's entry (secret only). */
          _gt_config_user_free (g_ptr_array_index (config->users, index));
          g_ptr_array_index (config->users, index) = entry;
        }
      else
        g_ptr_array_add (config->users, entry);
    }
  return TRUE;
}

typedef struct
{
  char *name;
  const char *value; /* NULL = bare boolean */
} CliItem;

static void
cli_item_clear (CliItem *item)
{
  g_free (item->name);
}

gboolean
gt_client_config_apply_args (GtClientConfig *config, int argc, char **argv, GError **error)
{
  g_autoptr (GArray) items = g_array_new (FALSE, TRUE, sizeof (CliItem));
  g_autoptr (GPtrArray) services = g_ptr_array_new_with_free_func (
    (GDestroyNotify) _gt_config_service_free);
  gboolean remotes_replaced = FALSE;
  gboolean stun_replaced = FALSE;
  gint current = -1;

  g_return_val_if_fail (config != NULL, FALSE);
  g_return_val_if_fail (argc == 0 || argv != NULL, FALSE);

  g_array_set_clear_func (items, (GDestroyNotify) cli_item_clear);

  /* First pass: split into (name, value) and create the services, so that options written
   * before a single --local can still reach it (GT ignores positions then). */
  for (int i = 0; i < argc; i++)
    {
      CliItem item = { NULL, NULL };
      const char *inline_value = NULL;
      const GtConfigOpt *def, *sdef;
      const GtConfigLoose *loose;
      gboolean bare_ok;

      if (!cli_split (argv[i], &item.name, &inline_value))
        return cli_fail (error, GT_CONFIG_ERROR_USAGE, "unexpected argument '%s'", argv[i]);
      g_array_append_val (items, item);

      def = _gt_config_opt_find (GT_CONFIG_KEYS_CLIENT, item.name);
      loose = _gt_config_loose_find (GT_CONFIG_KEYS_CLIENT, item.name);
      sdef = _gt_config_opt_find (GT_CONFIG_KEYS_SERVICE, item.name);
      if (def == NULL && loose == NULL && sdef == NULL && strcmp (item.name, "local") != 0)
        return cli_fail (error, GT_CONFIG_ERROR_USAGE, "unknown option '--%s'", item.name);

      bare_ok = (def != NULL && def->type == GT_OPT_BOOL)
                || (loose != NULL && loose->type == GT_LOOSE_BOOL)
                || (sdef != NULL && sdef->type == GT_OPT_BOOL);
      if (inline_value != NULL || !bare_ok)
        {
          if (!cli_take_value (argc, argv, &i, item.name, inline_value,
                               &g_array_index (items, CliItem, items->len - 1).value, error))
            return FALSE;
        }

      if (strcmp (item.name, "local") == 0)
        {
          GtServiceConfig *service = NULL;
          g_autofree char *message = _gt_config_parse_local_url (
            g_array_index (items, CliItem, items->len - 1).value, &service);
          if (message != NULL)
            return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--local: %s", message);
          g_ptr_array_add (services, service);
        }
    }

  /* Second pass: apply in order; service options go to the most recent --local. */
  for (guint i = 0; i < items->len; i++)
    {
      const CliItem *item = &g_array_index (items, CliItem, i);
      const GtConfigOpt *def = _gt_config_opt_find (GT_CONFIG_KEYS_CLIENT, item->name);
      const GtConfigLoose *loose;
      g_autofree char *message = NULL;
      GtServiceConfig *service;
      gint target;

      if (def != NULL)
        {
          if (def->type == GT_OPT_STUN_URLS && !stun_replaced)
            {
              /* The command line replaces the file's list. */
              g_clear_pointer (&config->remote_stun, g_strfreev);
              stun_replaced = TRUE;
            }
          if (def->type == GT_OPT_REMOTES && !remotes_replaced)
            {
              /* The command line replaces the file's remotes. */
              g_ptr_array_set_size (config->remotes, 0);
              remotes_replaced = TRUE;
            }
          if (!cli_set (config, def, item->value, config->warnings,
                        ((GtClientConfigPriv *) config)->places, error))
            return FALSE;
          continue;
        }
      if (strcmp (item->name, "local") == 0)
        {
          current++;
          continue;
        }
      loose = _gt_config_loose_find (GT_CONFIG_KEYS_CLIENT, item->name);
      if (loose != NULL)
        {
          gboolean unused;
          if (loose->type == GT_LOOSE_BOOL && item->value != NULL
              && (message = _gt_config_parse_bool (item->value, &unused)) != NULL)
            return cli_fail (error, GT_CONFIG_ERROR_VALUE, "--%s: %s", loose->name, message);
          {
            g_autofree char *display = g_strdup_printf ("option '--%s'", loose->name);
            const char *value = item->value;

            if (loose->type == GT_LOOSE_BOOL && value == NULL)
              value = "true";
            _gt_config_add_unsupported (config->warnings, NULL, 0, 0, loose, display, value,
                                        NULL);
          }
          continue;
        }

      /* A per-service option. */
      if (services->len == 0)
        return cli_fail (error, GT_CONFIG_ERROR_USAGE, "--%s needs a --local service",
                         item->name);
      target = services->len == 1 ? 0 : current;
      if (target < 0)
        return cli_fail (error, GT_CONFIG_ERROR_USAGE,
                         "--%s must follow the --local it applies to", item->name);
      service = g_ptr_array_index (services, target);
      if (!cli_set (service, _gt_config_opt_find (GT_CONFIG_KEYS_SERVICE, item->name),
                    item->value, config->warnings, NULL, error))
        return FALSE;
    }

  for (guint i = 0; i < services->len; i++)
    _gt_config_service_finish (g_ptr_array_index (services, i));
  /* GT's order: command-line services first, then the file's. */
  g_ptr_array_set_free_func (services, NULL);
  for (guint i = 0; i < services->len; i++)
    g_ptr_array_insert (config->services, (gint) i, g_ptr_array_index (services, i));

  _gt_config_client_clamp (config);
  return TRUE;
}

char *
gt_config_extract_config_path (int *argc, char **argv, GError **error)
{
  g_autofree char *path = NULL;
  int out = 0;
  int n;

  g_return_val_if_fail (argc != NULL, NULL);
  g_return_val_if_fail (*argc == 0 || argv != NULL, NULL);

  n = *argc;
  for (int i = 0; i < n; i++)
    {
      g_autofree char *name = NULL;
      const char *inline_value = NULL;

      if (strcmp (argv[i], "--") == 0)
        {
          /* Everything after "--" is left alone. */
          for (; i < n; i++)
            argv[out++] = argv[i];
          break;
        }
      if (cli_split (argv[i], &name, &inline_value)
          && (strcmp (name, "c") == 0 || strcmp (name, "config") == 0))
        {
          g_clear_pointer (&path, g_free); /* the last one wins */
          if (inline_value != NULL)
            path = g_strdup (inline_value);
          else if (i + 1 < n)
            path = g_strdup (argv[++i]);
          else
            {
              cli_fail (error, GT_CONFIG_ERROR_USAGE, "option '--config' needs a value");
              return NULL;
            }
          if (*path == '\0')
            {
              cli_fail (error, GT_CONFIG_ERROR_USAGE, "option '--config' needs a value");
              return NULL;
            }
          continue;
        }
      argv[out++] = argv[i];
    }
  if (out < n)
    argv[out] = NULL;
  *argc = out;
  return g_steal_pointer (&path);
}

