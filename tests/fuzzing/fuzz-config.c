/* fuzz-config.c: libFuzzer target for the YAML configuration loaders, validation and the
 * command-line parser (the input split into lines as argv). */
#include "gt-config.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

#define MAX_ARGS 64

/* A failure must come with a message in the expected form and a structured issue. */
static void
check_failure (GError *error, GtConfigIssue *issue)
{
  g_autofree char *text = NULL;

  if (error == NULL || error->domain != GT_CONFIG_ERROR || error->message == NULL)
    abort ();
  if (issue == NULL || issue->message == NULL)
    abort ();
  text = gt_config_issue_to_string (issue);
  if (strcmp (text, error->message) != 0)
    abort ();
}

static void
check_client (const GtClientConfig *config)
{
  /* No secret is valid (the client makes one up at start), an empty one is not kept. */
  if (config->id == NULL || config->remotes->len == 0 || config->services->len == 0)
    abort ();
  if (config->secret != NULL && (config->secret[0] == '\0' || strlen (config->secret) > 200))
    abort ();
  if (config->remote_connections < 1 || config->remote_connections > 10
      || config->remote_idle_connections < 1
      || config->remote_idle_connections > config->remote_connections)
    abort ();
  for (guint i = 0; i < config->remotes->len; i++)
    {
      const GtRemote *remote = g_ptr_array_index (config->remotes, i);
      gboolean websocket = remote->scheme[0] == 'w';
      if (remote->port == 0 || websocket != (remote->path != NULL)
          || (websocket && remote->path[0] != '/'))
        abort ();
    }
  for (guint i = 0; i < config->services->len; i++)
    {
      const GtServiceConfig *service = g_ptr_array_index (config->services, i);
      if (service->proxy_protocol > 2)
        abort ();
      if (service->kind == GT_SERVICE_KIND_TCP)
        {
          if (service->host_prefix != NULL || service->local_port == 0
              || (service->remote_tcp_port == 0 && !service->remote_tcp_random))
            abort ();
        }
      else if (service->host_prefix == NULL || *service->host_prefix == '\0'
               || strlen (service->host_prefix) > 63)
        abort ();
    }
}

static void
check_server (const GtServerConfig *config)
{
  if (config->addr == NULL && config->tls_addr == NULL && config->sni_addr == NULL)
    abort ();
  if (config->ws_path == NULL || config->ws_path[0] != '/' || config->tls_version == NULL
      || config->api_tls_version == NULL || config->reconnect_times == 0
      || config->drain_timeout_ms == 0)
    abort ();
  if ((config->cert_file == NULL) != (config->key_file == NULL)
      || (config->api_cert_file == NULL) != (config->api_key_file == NULL))
    abort ();
  if (config->proxy_protocol
      && (config->proxy_protocol_trusted_cidrs == NULL
          || config->proxy_protocol_trusted_cidrs[0] == NULL))
    abort ();
}

static void
fuzz_yaml (const char *text, gsize size)
{
  {
    g_autoptr (GtServerConfig) config = gt_server_config_new ();
    g_autoptr (GError) error = NULL;
    GtConfigIssue *issue = NULL;

    if (gt_server_config_load_data (config, text, (gssize) size, "fuzz.yaml", &issue, &error))
      {
        /* The users file would be read from the disk: its parser is the `users:` one. */
        g_clear_pointer (&config->users_file, g_free);
        if (gt_server_config_validate (config, &issue, &error))
          check_server (config);
        else
          check_failure (error, issue);
      }
    else
      check_failure (error, issue);
    gt_config_issue_free (issue);
  }
  {
    g_autoptr (GtClientConfig) config = gt_client_config_new ();
    g_autoptr (GError) error = NULL;
    GtConfigIssue *issue = NULL;

    if (gt_client_config_load_data (config, text, (gssize) size, NULL, &issue, &error))
      {
        if (gt_client_config_validate (config, &issue, &error))
          check_client (config);
        else
          check_failure (error, issue);
      }
    else
      check_failure (error, issue);
    gt_config_issue_free (issue);
  }
  {
    g_autoptr (GError) error = NULL;
    GtConfigKind kind = gt_config_detect_kind_data (text, (gssize) size, &error);
    if ((kind == GT_CONFIG_KIND_UNKNOWN) != (error != NULL))
      abort ();
  }
}

static void
fuzz_args (const char *text, gsize size)
{
  g_auto (GStrv) lines = NULL;
  char *argv[MAX_ARGS + 1] = { NULL };
  int argc = 0;
  g_autofree char *copy = g_strndup (text, size); /* stops at the first NUL */

  lines = g_strsplit (copy, "\n", MAX_ARGS);
  for (; lines[argc] != NULL && argc < MAX_ARGS; argc++)
    argv[argc] = lines[argc];

  {
    g_autoptr (GError) error = NULL;
    g_autofree char *path = gt_config_extract_config_path (&argc, argv, &error);
    if (path == NULL && error == NULL && argc > MAX_ARGS)
      abort ();
  }
  {
    g_autoptr (GtServerConfig) config = gt_server_config_new ();
    g_autoptr (GError) error = NULL;
    if (gt_server_config_apply_args (config, argc, argv, &error))
      {
        g_clear_pointer (&config->users_file, g_free);
        if (gt_server_config_validate (config, NULL, &error))
          check_server (config);
      }
    else if (error == NULL)
      abort ();
  }
  {
    g_autoptr (GtClientConfig) config = gt_client_config_new ();
    g_autoptr (GError) error = NULL;
    if (gt_client_config_apply_args (config, argc, argv, &error))
      {
        if (gt_client_config_validate (config, NULL, &error))
          check_client (config);
      }
    else if (error == NULL)
      abort ();
  }
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  const char *text = (const char *) data;

  fuzz_yaml (text, size);
  fuzz_args (text, size);
  {
    g_autofree char *copy = g_strndup (text, size);
    guint64 ms;
    GtPortRange range;
    g_autofree char *addr = gt_normalize_listen_addr (copy, NULL);
    if (addr != NULL && strrchr (addr, ':') == NULL)
      abort ();
    (void) gt_parse_duration (copy, &ms);
    (void) gt_parse_port_range (copy, &range, NULL);
    if (gt_parse_port_range (copy, &range, NULL) && (range.first == 0 || range.first > range.last))
      abort ();
  }
  return 0;
}
