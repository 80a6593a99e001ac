/* gt-config-validate.c: checks after file and command line (required keys, overlaps,
 * defaults that depend on other keys), and the server's users file. */
#include "config.h"

#include "gt-config-private.h"

#include <gio/gio.h>

#include <stdarg.h>
#include <string.h>

/* fail_at (file, line, column, code, issue_out, error, format, ...): an entry's place; a place
 * from the command line (line 0) has no file. */
#define fail_at(file, line, column, code, issue_out, error, ...)                               \
  _gt_config_fail_printf (issue_out, error, (line) > 0 ? (file) : NULL, line, column, code,     \
                          __VA_ARGS__)
/* For errors that belong to no single entry: the file when there is one. */
#define fail_global(file, code, issue_out, error, ...)                                          \
  _gt_config_fail_printf (issue_out, error, file, 0, 0, code, __VA_ARGS__)

/* For values whose place was recorded while loading (GtConfigKeyPlace); the file when unknown. */
static gboolean G_GNUC_PRINTF (7, 8)
fail_key (GHashTable *places, const char *key, const char *file, int code,
          GtConfigIssue **issue_out, GError **error, const char *format, ...)
{
  const GtConfigKeyPlace *place = g_hash_table_lookup (places, key);
  va_list args;
  char *message;

  va_start (args, format);
  message = g_strdup_vprintf (format, args);
  va_end (args);
  if (place == NULL)
    return _gt_config_fail_take (issue_out, error, file, 0, 0, code, message);
  return _gt_config_fail_take (issue_out, error, place->file, place->line, place->column, code,
                               message);
}

static gboolean
check_regexes (GHashTable *places, char **regex, const char *key_prefix, const char *file,
               GtConfigIssue **issue_out, GError **error)
{
  for (guint i = 0; regex != NULL && regex[i] != NULL; i++)
    {
      g_autofree char *message = _gt_config_parse_regex (regex[i]);
      g_autofree char *key = NULL;

      if (message == NULL)
        continue;
      key = g_strdup_printf ("%s.regex.%u", key_prefix, i);
      return fail_key (places, key, file, GT_CONFIG_ERROR_VALUE, issue_out, error, "%s",
                       message);
    }
  return TRUE;
}

/* certFile/keyFile and apiCertFile/apiKeyFile go together. */
static gboolean
check_pair (GHashTable *places, const char *file, const char *a_name, const char *a,
            const char *b_name, const char *b, GtConfigIssue **issue_out, GError **error)
{
  if (a != NULL && b == NULL)
    return fail_key (places, a_name, file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                     "%s is set without %s", a_name, b_name);
  if (a == NULL && b != NULL)
    return fail_key (places, b_name, file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                     "%s is set without %s", b_name, a_name);
  return TRUE;
}

gboolean
gt_listen_addr_is_loopback (const char *addr)
{
  g_autofree char *host = NULL;
  g_autoptr (GInetAddress) inet = NULL;
  const char *colon;

  g_return_val_if_fail (addr != NULL, FALSE);
  if (addr[0] == '[')
    {
      const char *close = strchr (addr, ']');

      if (close == NULL)
        return FALSE;
      host = g_strndup (addr + 1, close - addr - 1);
    }
  else
    {
      colon = strrchr (addr, ':');
      host = colon != NULL ? g_strndup (addr, colon - addr) : g_strdup (addr);
    }
  if (g_ascii_strcasecmp (host, "localhost") == 0)
    return TRUE;
  inet = g_inet_address_new_from_string (host);
  return inet != NULL && g_inet_address_get_is_loopback (inet);
}

/* The admin web UI: TLS files go together ("auto" for both, or two files), and a webAddr that
 * other machines can reach needs TLS unless webInsecure says otherwise. */
static gboolean
check_web (GHashTable *places, const char *file, const GtWebConfig *web,
           GtConfigIssue **issue_out, GError **error)
{
  if (!check_pair (places, file, "webCertFile", web->cert_file, "webKeyFile", web->key_file,
                   issue_out, error))
    return FALSE;
  if (web->cert_file != NULL
      && (strcmp (web->cert_file, "auto") == 0) != (strcmp (web->key_file, "auto") == 0))
    return fail_key (places, "webKeyFile", file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                     "webCertFile and webKeyFile are either both auto or both files");
  if (web->addr != NULL && web->cert_file == NULL && !web->insecure
      && !gt_listen_addr_is_loopback (web->addr))
    return fail_key (places, "webAddr", file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                     "webAddr %s is reachable from other machines: give webCertFile and "
                     "webKeyFile (or auto for both), or set webInsecure: true to serve the "
                     "admin UI over plain HTTP",
                     web->addr);
  if (web->admin != NULL && strlen (web->admin) > MAX_ID_LEN)
    return fail_key (places, "admin", file, GT_CONFIG_ERROR_VALUE, issue_out, error,
                     "admin must be at most %d bytes", MAX_ID_LEN);
  return TRUE;
}

static gboolean
listen_port_is_zero (const char *addr)
{
  return g_str_has_suffix (addr, ":0");
}

gboolean
gt_server_config_load_users_file (GtServerConfig *config, GtConfigIssue **issue_out,
                                  GError **error)
{
  g_autofree char *data = NULL;
  gsize len = 0;

  g_return_val_if_fail (config != NULL, FALSE);

  if (config->users_file == NULL)
    return TRUE;
  /* Refuse devices and FIFOs (a typo must not hang or fill the memory). */
  if (g_file_test (config->users_file, G_FILE_TEST_EXISTS)
      && !g_file_test (config->users_file, G_FILE_TEST_IS_REGULAR))
    return _gt_config_fail_printf (issue_out, error, config->users_file, 0, 0, GT_CONFIG_ERROR_IO,
                                   "the users file is not a regular file");
  if (!_gt_config_read_file (config->users_file, &data, &len, issue_out, error))
    return FALSE;
  return _gt_config_yaml_load_users (config, data, len, config->users_file, issue_out, error);
}

static gboolean
has_listener (const GtServerConfig *config)
{
  for (guint i = 0; i < GT_N_LISTENERS; i++)
    if (gt_listener_get_addr (config, i) != NULL)
      return TRUE;
  return FALSE;
}

/* "addr, tlsAddr or sniAddr" */
static char *
listener_keys_text (void)
{
  GString *text = g_string_new (NULL);

  for (guint i = 0; i < GT_N_LISTENERS; i++)
    g_string_append_printf (text, "%s%s", i == 0 ? "" : i + 1 < GT_N_LISTENERS ? ", " : " or ",
                            gt_listener_info (i)->key);
  return g_string_free (text, FALSE);
}

static gboolean
ranges_overlap (const GtPortRange *a, const GtPortRange *b)
{
  return a->first <= b->last && b->first <= a->last;
}

/* A node name: it is part of etcd keys and log lines. */
static gboolean
node_name_is_valid (const char *name)
{
  gsize len = strlen (name);

  if (len == 0 || len > MAX_PREFIX_LEN)
    return FALSE;
  for (const char *p = name; *p != '\0'; p++)
    if (!g_ascii_isalnum (*p) && *p != '-' && *p != '_' && *p != '.')
      return FALSE;
  return TRUE;
}

/* cluster: all or nothing; see docs/scale-out.md. */
static gboolean
validate_cluster (GtServerConfig *config, const char *file, GtConfigIssue **issue_out,
                  GError **error)
{
  GHashTable *places = ((GtServerConfigPriv *) config)->places;
  g_autoptr (GtRemote) advertise = NULL;
  g_autofree char *message = NULL;
  gboolean any = config->cluster_node != NULL || config->cluster_advertise != NULL
                 || config->cluster_secret != NULL;

  if (config->cluster_etcd == NULL || config->cluster_etcd[0] == NULL)
    {
      g_clear_pointer (&config->cluster_etcd, g_strfreev);
      if (any)
        return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                            "cluster: needs etcd (a list of http(s):// URLs of etcd members)");
      return TRUE;
    }
  if (config->addr == NULL)
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "cluster: needs options.addr (the other nodes' tunnels come in there)");
  if (config->cluster_node == NULL || !node_name_is_valid (config->cluster_node))
    return fail_key (places, "node", file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                     "cluster.node is required: 1 to %d letters, digits, '-', '_' or '.'",
                     MAX_PREFIX_LEN);
  if (config->cluster_secret == NULL)
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "cluster.secret is required (the nodes authenticate each other with it)");
  if (config->cluster_advertise != NULL)
    advertise = gt_remote_parse (config->cluster_advertise, &message);
  if (advertise == NULL || strcmp (advertise->scheme, "tcp") != 0
      || strchr (config->cluster_advertise, ':') == NULL)
    return fail_key (places, "advertise", file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                     "cluster.advertise must be host:port, where the other nodes reach addr");
  if ((config->cluster_etcd_cert == NULL) != (config->cluster_etcd_key == NULL))
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "cluster.etcdCert and cluster.etcdKey go together");
  if ((config->cluster_etcd_user == NULL) != (config->cluster_etcd_password == NULL))
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "cluster.etcdUser and cluster.etcdPassword go together");
  if (config->cluster_ttl_ms == 0)
    config->cluster_ttl_ms = DEFAULT_CLUSTER_TTL_MS;
  if (config->cluster_ttl_ms < 2000)
    return fail_key (places, "ttl", file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                     "cluster.ttl must be at least 2s (etcd's shortest lease)");
  if (config->cluster_prefix == NULL)
    config->cluster_prefix = g_strdup (DEFAULT_CLUSTER_PREFIX);
  else if (config->cluster_prefix[0] != '/')
    return fail_key (places, "prefix", file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                     "cluster.prefix must start with '/'");
  else if (!g_str_has_suffix (config->cluster_prefix, "/"))
    {
      char *with_slash = g_strconcat (config->cluster_prefix, "/", NULL);

      g_free (config->cluster_prefix);
      config->cluster_prefix = with_slash;
    }
  return TRUE;
}

gboolean
gt_server_config_validate (GtServerConfig *config, GtConfigIssue **issue_out, GError **error)
{
  GtServerConfigPriv *priv = (GtServerConfigPriv *) config;
  const char *file;

  g_return_val_if_fail (config != NULL, FALSE);

  file = config->config_path;
  if (!has_listener (config))
    {
      g_autofree char *keys = listener_keys_text ();

      return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                          "no listener: set options.%s", keys);
    }
  if (config->users_file != NULL
      && !gt_server_config_load_users_file (config, issue_out, error))
    return FALSE;

  {
    /* The listeners of the table, then the API's. */
    struct
    {
      const char *name;
      const char *addr;
    } listeners[GT_N_LISTENERS + 2];

    for (guint i = 0; i < GT_N_LISTENERS; i++)
      {
        listeners[i].name = gt_listener_info (i)->key;
        listeners[i].addr = gt_listener_get_addr (config, i);
      }
    listeners[GT_N_LISTENERS].name = "apiAddr";
    listeners[GT_N_LISTENERS].addr = config->api_addr;
    listeners[GT_N_LISTENERS + 1].name = "webAddr";
    listeners[GT_N_LISTENERS + 1].addr = config->web.addr;

    for (guint a = 0; a < G_N_ELEMENTS (listeners); a++)
      for (guint b = a + 1; b < G_N_ELEMENTS (listeners); b++)
        if (listeners[a].addr != NULL && g_strcmp0 (listeners[a].addr, listeners[b].addr) == 0
            && !listen_port_is_zero (listeners[a].addr)
            && (a >= GT_N_LISTENERS || b >= GT_N_LISTENERS
                || gt_listener_info (a)->datagram == gt_listener_info (b)->datagram))
          return fail_key (priv->places, listeners[b].name, file, GT_CONFIG_ERROR_INVALID,
                           issue_out, error, "%s %s is also the address of %s",
                           listeners[b].name, listeners[b].addr, listeners[a].name);
  }
  if (!check_pair (priv->places, file, "certFile", config->cert_file, "keyFile",
                   config->key_file, issue_out, error)
      || !check_pair (priv->places, file, "apiCertFile", config->api_cert_file, "apiKeyFile",
                      config->api_key_file, issue_out, error)
      || !check_web (priv->places, file, &config->web, issue_out, error))
    return FALSE;
  if (config->proxy_protocol
      && (config->proxy_protocol_trusted_cidrs == NULL
          || config->proxy_protocol_trusted_cidrs[0] == NULL))
    return fail_key (priv->places, "proxyProtocol", file, GT_CONFIG_ERROR_INVALID, issue_out,
                     error, "proxyProtocol needs proxyProtocolTrustedCIDRs");
  for (guint i = 0; config->proxy_protocol_trusted_cidrs != NULL
                    && config->proxy_protocol_trusted_cidrs[i] != NULL;
       i++)
    {
      g_autofree char *message = _gt_config_parse_cidr (config->proxy_protocol_trusted_cidrs[i]);
      if (message != NULL)
        return fail_global (file, GT_CONFIG_ERROR_VALUE, issue_out, error, "%s", message);
    }
  if (config->auth_api != NULL)
    {
      g_autofree char *message = _gt_config_parse_http_url ("authAPI", config->auth_api);
      if (message != NULL)
        return fail_key (priv->places, "authAPI", file, GT_CONFIG_ERROR_VALUE, issue_out, error,
                         "%s", message);
    }
  if (config->http_mux_header != NULL)
    {
      for (const char *c = config->http_mux_header; *c != '\0'; c++)
        if (!g_ascii_isalnum (*c) && strchr ("!#$%&'*+-.^_`|~", *c) == NULL)
          return fail_key (priv->places, "httpMUXHeader", file, GT_CONFIG_ERROR_VALUE, issue_out,
                           error, "bad httpMUXHeader '%s': it must be an HTTP header name",
                           config->http_mux_header);
      if (g_ascii_strcasecmp (config->http_mux_header, "host") == 0)
        g_clear_pointer (&config->http_mux_header, g_free);
    }
  if (config->turn && config->stun_addr == NULL)
    return fail_key (priv->places, "turn", file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                     "turn needs stunAddr (TURN is served on the STUN socket)");
  if (config->turn)
    {
      const char *relay = config->turn_relay_addr;
      g_autoptr (GSocketConnectable) stun = NULL;
      g_autoptr (GInetAddress) ip = NULL;

      /* By default the relayed addresses are on stunAddr's IP (normalized to a literal). */
      if (relay == NULL
          && (stun = g_network_address_parse (config->stun_addr, 3478, NULL)) != NULL)
        relay = g_network_address_get_hostname (G_NETWORK_ADDRESS (stun));
      if (relay == NULL || (ip = g_inet_address_new_from_string (relay)) == NULL)
        return fail_key (priv->places, "turnRelayAddr", file, GT_CONFIG_ERROR_VALUE, issue_out,
                         error, "bad turnRelayAddr '%s': it must be an IP address",
                         relay != NULL ? relay : "");
      if (g_inet_address_get_is_any (ip))
        return fail_key (priv->places, "turn", file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                         "turn needs turnRelayAddr when stunAddr listens on every address "
                         "(the IP peers reach relayed addresses on)");
      g_free (config->turn_relay_addr);
      config->turn_relay_addr = g_inet_address_to_string (ip);
    }
  if (config->ws_path != NULL && !_gt_config_url_path_is_sane (config->ws_path))
    return fail_key (priv->places, "wsPath", file, GT_CONFIG_ERROR_VALUE, issue_out, error,
                     "bad wsPath '%s': it must start with '/' and contain no space or '#'",
                     config->ws_path);
  _gt_config_opts_set_defaults (config, GT_CONFIG_KEYS_SERVER);
  if (!validate_cluster (config, file, issue_out, error))
    return FALSE;
  if (!check_regexes (priv->places, config->host_regex, "host", file, issue_out, error))
    return FALSE;

  for (guint i = 0; i < config->users->len; i++)
    {
      GtUserEntry *entry = g_ptr_array_index (config->users, i);
      GtUserConfig *user = &entry->pub;
      gsize id_len = user->id != NULL ? strlen (user->id) : 0;
      gsize secret_len = user->secret != NULL ? strlen (user->secret) : 0;
      const char *user_file = entry->file != NULL ? entry->file : config->config_path;
      g_autofree char *key_prefix = g_strdup_printf ("users.%s.host", user->id);

      if (id_len == 0 || id_len > MAX_ID_LEN)
        return fail_at (user_file, user->line, user->column, GT_CONFIG_ERROR_INVALID, issue_out,
                        error, "user id must be 1 to %d bytes", MAX_ID_LEN);
      if (secret_len == 0 || secret_len > MAX_SECRET_LEN)
        return fail_at (user_file, user->line, user->column, GT_CONFIG_ERROR_INVALID, issue_out,
                        error, "user '%s' needs a secret of 1 to %d bytes", user->id,
                        MAX_SECRET_LEN);
      if (!check_regexes (priv->places, user->host_regex, key_prefix, user_file, issue_out,
                          error))
        return FALSE;
      if (user->tcp_ranges != NULL && user->tcp_ranges->len == 0)
        g_clear_pointer (&user->tcp_ranges, g_array_unref); /* `tcp: []` = the global pool */
      if (user->tcp_ranges == NULL)
        continue;

      for (guint r = 0; r < user->tcp_ranges->len; r++)
        {
          const GtPortRange *range = &g_array_index (user->tcp_ranges, GtPortRange, r);
          GtConfigPlace place = { user->line, user->column };

          if (entry->range_places != NULL && r < entry->range_places->len)
            place = g_array_index (entry->range_places, GtConfigPlace, r);

          for (guint g = 0; g < config->tcp_ranges->len; g++)
            if (ranges_overlap (range, &g_array_index (config->tcp_ranges, GtPortRange, g)))
              return fail_at (user_file, place.line, place.column, GT_CONFIG_ERROR_INVALID,
                              issue_out, error,
                              "tcp range %u-%u of user '%s' overlaps the global tcp pool",
                              range->first, range->last, user->id);

          for (guint j = 0; j < i; j++)
            {
              const GtUserConfig *other = g_ptr_array_index (config->users, j);
              if (other->tcp_ranges == NULL)
                continue;
              for (guint o = 0; o < other->tcp_ranges->len; o++)
                if (ranges_overlap (range, &g_array_index (other->tcp_ranges, GtPortRange, o)))
                  return fail_at (user_file, place.line, place.column, GT_CONFIG_ERROR_INVALID,
                                  issue_out, error,
                                  "tcp range %u-%u of user '%s' overlaps the range of user '%s'",
                                  range->first, range->last, user->id, other->id);
            }
        }
    }

  if (config->users->len == 0 && config->auth_api == NULL && !config->allow_any_client)
    {
      /* GT: no users (and no auth API) means any client id is accepted. */
      config->allow_any_client = TRUE;
      _gt_config_add_warning (
          config->warnings, file, 0, 0,
          "no users are configured: any client id is accepted (allowAnyClient)");
    }
  return TRUE;
}

gboolean
gt_client_config_validate (GtClientConfig *config, GtConfigIssue **issue_out, GError **error)
{
  const char *file;
  GtServiceConfig *unprefixed = NULL;
  g_autoptr (GHashTable) prefixes = NULL;

  g_return_val_if_fail (config != NULL, FALSE);

  file = config->config_path;
  if (config->id == NULL || *config->id == '\0')
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "options.id is required");
  if (strlen (config->id) > MAX_ID_LEN)
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "options.id must be 1 to %d bytes", MAX_ID_LEN);
  /* No secret: the client makes up a random one at start (GT's rule). */
  if (config->secret != NULL && strlen (config->secret) > MAX_SECRET_LEN)
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "options.secret must be 1 to %d bytes", MAX_SECRET_LEN);
  if (config->remotes->len == 0 && config->remote_api == NULL)
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "no remote: set options.remote (or options.remoteAPI) or --remote");
  if ((config->tcp_forward_addr != NULL) != (config->tcp_forward_host_prefix != NULL))
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "tcpForwardAddr and tcpForwardHostPrefix go together: set both (the "
                        "local listener and the host prefix its connections reach) or neither");
  if (config->remote_turn != NULL)
    {
      g_autofree char *message = _gt_config_parse_turn_url (config->remote_turn, NULL, NULL);

      if (message != NULL)
        return fail_global (file, GT_CONFIG_ERROR_VALUE, issue_out, error, "%s", message);
      if (config->remote_stun == NULL)
        return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                            "remoteTURN needs remoteSTUN (P2P is on only with remoteSTUN)");
    }
  /* A client that only forwards publishes nothing. */
  if (config->services->len == 0 && config->tcp_forward_addr == NULL)
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "no service: add an entry to services: or use --local (or set "
                        "tcpForwardAddr and tcpForwardHostPrefix)");
  if ((config->webrtc_min_port != 0 || config->webrtc_max_port != 0)
      && (config->webrtc_min_port == 0 || config->webrtc_max_port < config->webrtc_min_port))
    return fail_global (file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                        "webrtcMinPort %u and webrtcMaxPort %u: set both, min <= max",
                        config->webrtc_min_port, config->webrtc_max_port);
  if (config->remote_cert != NULL && !_gt_config_looks_like_pin (config->remote_cert))
    {
      GHashTable *places = ((GtClientConfigPriv *) config)->places;

      if (!g_file_test (config->remote_cert, G_FILE_TEST_IS_REGULAR))
        return fail_key (places, "remoteCert", file, GT_CONFIG_ERROR_INVALID, issue_out, error,
                         "remoteCert file '%s' does not exist (give a PEM file or a "
                         "sha256: pin)",
                         config->remote_cert);
    }

  if (!check_web (((GtClientConfigPriv *) config)->places, file, &config->web, issue_out, error))
    return FALSE;
  _gt_config_opts_set_defaults (config, GT_CONFIG_KEYS_CLIENT);
  _gt_config_client_clamp (config);

  prefixes = g_hash_table_new (g_str_hash, g_str_equal);
  for (guint i = 0; i < config->services->len; i++)
    {
      GtServiceConfig *service = g_ptr_array_index (config->services, i);

      if (service->kind == GT_SERVICE_KIND_TCP || service->kind == GT_SERVICE_KIND_UDP)
        {
          gboolean udp = service->kind == GT_SERVICE_KIND_UDP;

          if (service->host_prefix != NULL)
            {
              _gt_config_add_warning (
                  config->warnings, service->line > 0 ? file : NULL, service->line, service->column,
                  "hostPrefix is ignored for the %s service '%s'", udp ? "udp" : "tcp",
                  service->local_url);
              g_clear_pointer (&service->host_prefix, g_free);
            }
          if (!udp && service->remote_tcp_port == 0 && !service->remote_tcp_random)
            return fail_at (file, service->line, service->column, GT_CONFIG_ERROR_INVALID,
                            issue_out, error,
                            "tcp service '%s' needs remoteTCPPort or remoteTCPRandom: true",
                            service->local_url);
          if (udp && service->remote_udp_port == 0 && !service->remote_udp_random)
            return fail_at (file, service->line, service->column, GT_CONFIG_ERROR_INVALID,
                            issue_out, error,
                            "udp service '%s' needs remoteUDPPort or remoteUDPRandom: true",
                            service->local_url);
          continue;
        }

      if (service->host_prefix == NULL)
        {
          g_autofree char *message = NULL;
          char *prefix = NULL;

          if (unprefixed != NULL)
            return fail_at (file, service->line, service->column, GT_CONFIG_ERROR_INVALID,
                            issue_out, error,
                            "two http services without hostPrefix: give each a hostPrefix");
          unprefixed = service;
          message = _gt_config_parse_host_prefix (config->id, &prefix);
          if (message != NULL)
            return fail_at (file, service->line, service->column, GT_CONFIG_ERROR_INVALID,
                            issue_out, error,
                            "the id '%s' cannot be the host prefix of '%s': give the service "
                            "a hostPrefix",
                            config->id, service->local_url);
          service->host_prefix = prefix;
        }
      if (!g_hash_table_add (prefixes, service->host_prefix))
        return fail_at (file, service->line, service->column, GT_CONFIG_ERROR_INVALID,
                        issue_out, error, "host prefix '%s' is used by two services",
                        service->host_prefix);
    }
  return TRUE;
}
