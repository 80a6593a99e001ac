/* gt-p2p-connect-config.c: `gt connect` options from the command line and from YAML. */
#include "config.h"

#define G_LOG_DOMAIN "gt-p2p"

#include "gt-p2p-connect-config.h"

#include <gio/gio.h>
#include <string.h>
#include <yaml.h>

#include "gt-config.h"

#define DEFAULT_DIRECT_WAIT_MS 15000

const char gt_connect_config_usage[]
    = "  --remote URL               the server: tcp://host:port (or tls://, http://, https://)\n"
      "  --hostPrefix PREFIX        the target client's host prefix (or full host name)\n"
      "  --service LABEL            the target's service, as a data channel label: gt (its\n"
      "                             first service), NAME/ (http service with host prefix NAME)\n"
      "                             or :PORT/ (tcp service on server port PORT); default gt\n"
      "  --localAddr HOST:PORT      local TCP listener (alias tcpForwardAddr)\n"
      "  --remoteSTUN stun:HOST:PORT  STUN server for server-reflexive candidates\n"
      "  --remoteTURN turn:HOST:PORT  TURN server for relayed candidates (needs --id, --secret)\n"
      "  --id ID --secret SECRET    log in as this client: the relay path is a tcpForward stream\n"
      "                             through the server (its tcpForwardAllow must allow it)\n"
      "  --relayAddr HOST:PORT      relay path as a plain TCP address (default: with --id a\n"
      "                             tcpForward stream; else the server's :PORT/ tcp port)\n"
      "  --directWait DURATION      without a relay path, how long a connection waits for the\n"
      "                             direct path (default 15s)\n"
      "  --metricsAddr HOST:PORT    serve Prometheus metrics on /metrics\n"
      "  --webrtcMinPort N --webrtcMaxPort N  ICE UDP port range\n"
      "  --logLevel LEVEL           debug, info, warn, error\n";

GtConnectConfig *
gt_connect_config_new (void)
{
  GtConnectConfig *config = g_new0 (GtConnectConfig, 1);

  config->service = g_strdup ("gt");
  config->direct_wait_ms = DEFAULT_DIRECT_WAIT_MS;
  config->log_level = g_strdup ("info");
  return config;
}

void
gt_connect_config_free (GtConnectConfig *config)
{
  if (config == NULL)
    return;
  g_free (config->remote);
  g_free (config->remote_url);
  g_free (config->remote_tunnel);
  g_free (config->remote_host);
  g_free (config->host);
  g_free (config->service);
  g_free (config->id);
  if (config->secret != NULL)
    memset (config->secret, 0, strlen (config->secret));
  g_free (config->secret);
  g_free (config->local_addr);
  g_free (config->relay_addr);
  g_free (config->stun_host);
  g_free (config->turn_host);
  g_free (config->metrics_addr);
  g_free (config->log_level);
  g_free (config);
}

static gboolean
set_port (guint *out, const char *key, const char *value, GError **error)
{
  guint64 v;

  if (!g_ascii_string_to_unsigned (value, 10, 0, 65535, &v, NULL))
    {
      g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE, "%s: '%s' is not a port", key,
                   value);
      return FALSE;
    }
  *out = (guint)v;
  return TRUE;
}

static gboolean
check_address (const char *key, const char *value, GError **error)
{
  g_autoptr (GSocketConnectable) addr = g_network_address_parse (value, 0, NULL);

  if (addr == NULL
      || (g_network_address_get_port (G_NETWORK_ADDRESS (addr)) == 0
          && strcmp (key, "localAddr") != 0))
    {
      g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE,
                   "%s: '%s' is not a host:port address", key, value);
      return FALSE;
    }
  return TRUE;
}

gboolean
gt_connect_config_set (GtConnectConfig *config, const char *key, const char *value, GError **error)
{
  char **slot = NULL;

  if (strcmp (key, "remote") == 0)
    slot = &config->remote;
  else if (strcmp (key, "hostPrefix") == 0 || strcmp (key, "tcpForwardHostPrefix") == 0
           || strcmp (key, "tcp_forward_host_prefix") == 0)
    slot = &config->host;
  else if (strcmp (key, "service") == 0)
    {
      config->service_set = TRUE;
      slot = &config->service;
    }
  else if (strcmp (key, "id") == 0)
    slot = &config->id;
  else if (strcmp (key, "secret") == 0)
    slot = &config->secret;
  else if (strcmp (key, "localAddr") == 0 || strcmp (key, "tcpForwardAddr") == 0
           || strcmp (key, "tcp_forward_addr") == 0)
    {
      /* GT writes tcpForwardAddr as a URL: its host:port is what counts. */
      const char *sep = strstr (value, "://");

      value = sep != NULL ? sep + 3 : value;
      if (!check_address ("localAddr", value, error))
        return FALSE;
      slot = &config->local_addr;
    }
  else if (strcmp (key, "relayAddr") == 0)
    {
      if (!check_address (key, value, error))
        return FALSE;
      slot = &config->relay_addr;
    }
  else if (strcmp (key, "metricsAddr") == 0)
    {
      if (!check_address (key, value, error))
        return FALSE;
      slot = &config->metrics_addr;
    }
  else if (strcmp (key, "logLevel") == 0)
    slot = &config->log_level;
  else if (strcmp (key, "remoteSTUN") == 0 || strcmp (key, "stun_addr") == 0)
    {
      g_autoptr (GSocketConnectable) addr = NULL;

      if (!g_str_has_prefix (value, "stun:")
          || (addr = g_network_address_parse (value + 5, 3478, NULL)) == NULL)
        {
          g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE,
                       "remoteSTUN: '%s' is not a stun:host[:port] URL", value);
          return FALSE;
        }
      g_free (config->stun_host);
      config->stun_host = g_strdup (g_network_address_get_hostname (G_NETWORK_ADDRESS (addr)));
      config->stun_port = g_network_address_get_port (G_NETWORK_ADDRESS (addr));
      return TRUE;
    }
  else if (strcmp (key, "remoteTURN") == 0)
    {
      g_autoptr (GSocketConnectable) addr = NULL;

      if (!g_str_has_prefix (value, "turn:")
          || (addr = g_network_address_parse (value + 5, 3478, NULL)) == NULL)
        {
          g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE,
                       "remoteTURN: '%s' is not a turn:host[:port] URL", value);
          return FALSE;
        }
      g_free (config->turn_host);
      config->turn_host = g_strdup (g_network_address_get_hostname (G_NETWORK_ADDRESS (addr)));
      config->turn_port = g_network_address_get_port (G_NETWORK_ADDRESS (addr));
      return TRUE;
    }
  else if (strcmp (key, "webrtcMinPort") == 0)
    return set_port (&config->webrtc_min_port, key, value, error);
  else if (strcmp (key, "webrtcMaxPort") == 0)
    return set_port (&config->webrtc_max_port, key, value, error);
  else if (strcmp (key, "directWait") == 0)
    {
      if (!gt_parse_duration (value, &config->direct_wait_ms))
        {
          g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE,
                       "directWait: '%s' is not a duration", value);
          return FALSE;
        }
      return TRUE;
    }
  else
    {
      g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_USAGE, "unknown option '%s'", key);
      return FALSE;
    }
  g_free (*slot);
  *slot = g_strdup (value);
  return TRUE;
}

static const char *
scalar (yaml_node_t *node)
{
  return node != NULL && node->type == YAML_SCALAR_NODE ? (const char *)node->data.scalar.value
                                                        : NULL;
}

static gboolean
load_options (GtConnectConfig *config, yaml_document_t *doc, yaml_node_t *options, GError **error)
{
  for (yaml_node_pair_t *p = options->data.mapping.pairs.start; p < options->data.mapping.pairs.top;
       p++)
    {
      const char *key = scalar (yaml_document_get_node (doc, p->key));
      yaml_node_t *value = yaml_document_get_node (doc, p->value);

      if (key == NULL)
        {
          g_set_error_literal (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_TYPE,
                               "options: keys must be strings");
          return FALSE;
        }
      /* A list (remoteSTUN, as in client configs): its first entry. */
      if (value != NULL && value->type == YAML_SEQUENCE_NODE
          && value->data.sequence.items.top > value->data.sequence.items.start)
        value = yaml_document_get_node (doc, *value->data.sequence.items.start);
      if (scalar (value) == NULL)
        {
          g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_TYPE,
                       "options.%s: a string is expected", key);
          return FALSE;
        }
      if (!gt_connect_config_set (config, key, scalar (value), error))
        {
          if (g_error_matches (*error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_USAGE))
            (*error)->code = GT_CONFIG_ERROR_INVALID;
          g_prefix_error (error, "options: ");
          return FALSE;
        }
    }
  return TRUE;
}

gboolean
gt_connect_config_load_data (GtConnectConfig *config, const char *data, gsize len, GError **error)
{
  yaml_parser_t parser;
  yaml_document_t doc;
  yaml_node_t *root;
  gboolean ok = FALSE;
  const char *type = NULL;
  yaml_node_t *options = NULL;

  if (!yaml_parser_initialize (&parser))
    {
      g_set_error_literal (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_IO, "out of memory");
      return FALSE;
    }
  yaml_parser_set_input_string (&parser, (const unsigned char *)data, len);
  if (!yaml_parser_load (&parser, &doc))
    {
      g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_SYNTAX, "YAML line %zu: %s",
                   parser.problem_mark.line + 1, parser.problem ? parser.problem : "syntax error");
      yaml_parser_delete (&parser);
      return FALSE;
    }
  root = yaml_document_get_root_node (&doc);
  if (root == NULL || root->type != YAML_MAPPING_NODE)
    {
      g_set_error_literal (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_TYPE,
                           "a connect configuration is a mapping");
      goto out;
    }
  for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++)
    {
      const char *key = scalar (yaml_document_get_node (&doc, p->key));
      yaml_node_t *value = yaml_document_get_node (&doc, p->value);

      if (g_strcmp0 (key, "type") == 0)
        type = scalar (value);
      else if (g_strcmp0 (key, "options") == 0 && value != NULL && value->type == YAML_MAPPING_NODE)
        options = value;
      else
        {
          g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_INVALID,
                       "unknown top-level key '%s' (type and options only)", key ? key : "?");
          goto out;
        }
    }
  if (g_strcmp0 (type, "connect") != 0)
    {
      g_set_error_literal (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_INVALID,
                           "a connect configuration says `type: connect`");
      goto out;
    }
  ok = options == NULL || load_options (config, &doc, options, error);

out:
  yaml_document_delete (&doc);
  yaml_parser_delete (&parser);
  return ok;
}

gboolean
gt_connect_config_load_file (GtConnectConfig *config, const char *path, GError **error)
{
  g_autofree char *data = NULL;
  gsize len;

  if (!g_file_get_contents (path, &data, &len, error))
    {
      g_prefix_error (error, "%s: ", path);
      if (*error != NULL)
        {
          (*error)->domain = GT_CONFIG_ERROR;
          (*error)->code = GT_CONFIG_ERROR_IO;
        }
      return FALSE;
    }
  if (!gt_connect_config_load_data (config, data, len, error))
    {
      g_prefix_error (error, "%s: ", path);
      return FALSE;
    }
  return TRUE;
}

gboolean
gt_connect_config_apply_args (GtConnectConfig *config, int argc, char **argv, GError **error)
{
  for (int i = 0; i < argc; i++)
    {
      const char *a = argv[i];
      g_autofree char *key = NULL;
      const char *value;
      const char *eq;

      if (a[0] != '-')
        {
          g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_USAGE, "unexpected argument '%s'",
                       a);
          return FALSE;
        }
      a += a[1] == '-' ? 2 : 1;
      eq = strchr (a, '=');
      if (eq != NULL)
        {
          key = g_strndup (a, (gsize)(eq - a));
          value = eq + 1;
        }
      else
        {
          if (i + 1 >= argc)
            {
              g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_USAGE,
                           "option '%s' needs a value", a);
              return FALSE;
            }
          key = g_strdup (a);
          value = argv[++i];
        }
      if (!gt_connect_config_set (config, key, value, error))
        return FALSE;
    }
  return TRUE;
}

gboolean
gt_connect_config_validate (GtConnectConfig *config, GError **error)
{
  g_autoptr (GUri) uri = NULL;
  const char *scheme;

  if (config->remote == NULL || config->host == NULL || config->local_addr == NULL)
    {
      g_set_error_literal (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_INVALID,
                           "gt connect needs remote, hostPrefix and localAddr");
      return FALSE;
    }
  uri = g_uri_parse (config->remote, G_URI_FLAGS_NONE, NULL);
  scheme = uri != NULL ? g_uri_get_scheme (uri) : NULL;
  if (uri == NULL || g_uri_get_host (uri) == NULL || g_uri_get_port (uri) <= 0
      || (g_strcmp0 (scheme, "tcp") != 0 && g_strcmp0 (scheme, "tls") != 0
          && g_strcmp0 (scheme, "http") != 0 && g_strcmp0 (scheme, "https") != 0))
    {
      g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE,
                   "remote: '%s' is not a tcp://, tls://, http:// or https:// host:port URL",
                   config->remote);
      return FALSE;
    }
  if (*config->host == '\0' || strpbrk (config->host, " \t\r\n/:") != NULL)
    {
      g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE,
                   "hostPrefix: '%s' is not a host name", config->host);
      return FALSE;
    }
  if (*config->service == '\0' || strlen (config->service) > 1024
      || !g_utf8_validate (config->service, -1, NULL))
    {
      g_set_error_literal (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE,
                           "service: a label of 1 to 1024 bytes of UTF-8");
      return FALSE;
    }
  if ((config->webrtc_min_port == 0) != (config->webrtc_max_port == 0)
      || config->webrtc_min_port > config->webrtc_max_port)
    {
      g_set_error_literal (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_INVALID,
                           "webrtcMinPort and webrtcMaxPort: both or neither, min <= max");
      return FALSE;
    }
  if ((config->id == NULL) != (config->secret == NULL))
    {
      g_set_error_literal (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_INVALID,
                           "id and secret: both or neither");
      return FALSE;
    }
  if (config->turn_host != NULL && config->id == NULL)
    {
      g_set_error_literal (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_INVALID,
                           "remoteTURN needs id and secret (the TURN credentials are made "
                           "from them)");
      return FALSE;
    }
  /* The tcpForward relay reaches the http service of the prefix: the direct path too. */
  if (config->id != NULL && !config->service_set)
    {
      g_free (config->service);
      config->service = g_strdup_printf ("%.*s/", (int)strcspn (config->host, "."), config->host);
    }
  g_free (config->remote_host);
  config->remote_host = g_strdup (g_uri_get_host (uri));
  g_free (config->remote_url);
  config->remote_url = g_strdup_printf (
      "%s://%s%s%s:%d/",
      g_strcmp0 (scheme, "tls") == 0 || g_strcmp0 (scheme, "https") == 0 ? "https" : "http",
      strchr (config->remote_host, ':') ? "[" : "", config->remote_host,
      strchr (config->remote_host, ':') ? "]" : "", g_uri_get_port (uri));
  g_free (config->remote_tunnel);
  config->remote_tunnel
      = g_strdup_printf ("%s%s", g_str_has_prefix (config->remote_url, "https") ? "tls" : "tcp",
                         strstr (config->remote_url, "://"));
  config->remote_tunnel[strlen (config->remote_tunnel) - 1] = '\0'; /* the path's "/" */
  return TRUE;
}
