/* main.c: the gt command line: `gt server`, `gt client`, `gt -c FILE`, `gt --version`. */
#include "config.h"

#define G_LOG_DOMAIN "gt"

#include <glib-unix.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "gt-api-server.h"
#include "gt-client.h"
#include "gt-config.h"
#include "gt-log.h"
#include "gt-manager.h"
#include "gt-server.h"
#include "gt-systemd.h"
#include "gt-transport.h"

static const char usage_main[] =
  "Usage: gt [-c FILE|DIR] [--depth N] [-s reload|restart|stop] [COMMAND] [OPTIONS]\n"
  "\n"
  "A fast reverse-tunnel relay proxy, compatible with GT's command line and YAML.\n"
  "\n"
  "Commands:\n"
  "  server   run a relay server (public side)\n"
  "  client   run a relay client (next to the local services)\n"
  "\n"
  "Options:\n"
  "  -c, --config PATH   configuration file; without COMMAND its `type:` key (or a\n"
  "                      `services:` key, meaning client) tells which to run; a\n"
  "                      directory starts a supervised worker per .yaml/.yml file\n"
  "  --depth N           how deep to look in a config directory (default 3, 0 = any)\n"
  "  --manager           supervise even a single config file (restarts, reload)\n"
  "  -s, --signal NAME   tell the running manager to reload, restart or stop\n"
  "  -h, --help          show this help (also `gt server --help`, `gt client --help`)\n"
  "  -V, --version       print the version\n";

/* The option lines come from the configuration's key tables (gt_config_describe_options); these
 * are the lines of options the tables do not describe. */
static const char usage_options_intro[] =
  "Options (GT's names; -name or --name, with a value as `--name value` or `--name=value`):\n";

static const char usage_server_extra[] =
  "  --id ID --secret SECRET            a user (repeatable, paired in order)\n"
  "  --tcpRange A-B                     ports clients may open for tcp services (repeatable)\n"
  "  --hostNumber N                     host prefixes per client (0 = unlimited)\n"
  "  --hostRegex REGEX                  host prefixes clients may use (repeatable)\n"
  "  --hostWithID                       host prefixes must start with the client id\n";

static void
print_usage (GtConfigKind kind)
{
  g_autofree char *options = gt_config_describe_options (kind);

  if (kind == GT_CONFIG_KIND_SERVER)
    fputs ("Usage: gt server [-c FILE] [OPTIONS]\n\n", stdout);
  else
    fputs ("Usage: gt client [-c FILE] [OPTIONS]\n\n", stdout);
  fputs (usage_options_intro, stdout);
  fputs ("  -c, --config FILE                  YAML configuration (GT schema)\n", stdout);
  if (kind == GT_CONFIG_KIND_SERVER)
    fputs (usage_server_extra, stdout);
  fputs (options, stdout);
  fputs ("See docs/configuration.md for every key and its default.\n", stdout);
}

static GMainLoop *loop;
static GtServer *running_server;
static GtClient *running_client;

static gboolean
quit_cb (gpointer user_data)
{
  g_message ("stopping (%s)", (const char *) user_data);
  gt_sd_notify ("STOPPING=1");
  g_main_loop_quit (loop);
  return G_SOURCE_CONTINUE;
}

static void
drained_cb (GObject *object, gpointer user_data)
{
  g_main_loop_quit (loop);
}

/* SIGTERM: a server drains (no new connections, GOAWAY, streams finish) before it exits. */
static gboolean
term_cb (gpointer user_data)
{
  if (running_server == NULL && running_client == NULL)
    return quit_cb ((gpointer) "SIGTERM");
  g_message ("stopping gracefully (SIGTERM)");
  gt_sd_notify ("STOPPING=1");
  if (running_server != NULL)
    gt_server_drain (running_server);
  else
    gt_client_drain (running_client, gt_client_get_drain_timeout (running_client));
  return G_SOURCE_CONTINUE;
}

static gboolean
has_flag (int argc, char **argv, const char *const *names)
{
  for (int i = 0; i < argc; i++)
    for (guint j = 0; names[j] != NULL; j++)
      if (strcmp (argv[i], names[j]) == 0)
        return TRUE;
  return FALSE;
}

static void
print_warnings (GPtrArray *warnings)
{
  for (guint i = 0; warnings != NULL && i < warnings->len; i++)
    {
      const GtConfigIssue *issue = warnings->pdata[i];
      g_autofree char *text = gt_config_issue_to_string (issue);

      if (issue->debug)
        g_debug ("%s", text);
      else
        g_warning ("%s", text);
    }
}

static void
setup_signals (void)
{
  signal (SIGPIPE, SIG_IGN);
  g_unix_signal_add (SIGINT, quit_cb, (gpointer) "SIGINT");
  g_unix_signal_add (SIGTERM, term_cb, NULL);
}

static char *
render_metrics_cb (gpointer user_data)
{
  return gt_server_render_metrics (user_data);
}

/* apiAddr: the status and metrics API, beside the relay (it does not own the server). */
static gboolean
start_api_server (GtServer *server, GtApiServer **api_out, GError **error)
{
  const GtServerConfig *config = gt_server_get_config (server);
  GtApiServer *api;

  if (config->api_addr == NULL)
    return TRUE;
  api = gt_api_server_new (server, config->api_addr, config->api_cert_file, config->api_key_file,
                           error);
  if (api == NULL)
    return FALSE;
  gt_api_server_set_metrics_func (api, render_metrics_cb, server, NULL);
  g_message ("status API on %s%s", gt_api_server_get_address (api),
             config->api_cert_file ? " (TLS)" : "");
  *api_out = api;
  return TRUE;
}

static int
run_server (const char *config_path, int argc, char **argv)
{
  g_autoptr (GtServerConfig) config = gt_server_config_new ();
  g_autoptr (GtServer) server = NULL;
  g_autoptr (GtApiServer) api = NULL;
  g_autoptr (GError) error = NULL;

  if (config_path && !gt_server_config_load_file (config, config_path, NULL, &error))
    goto fail;
  if (!gt_server_config_apply_args (config, argc, argv, &error))
    goto fail;
  if (!gt_server_config_validate (config, NULL, &error))
    goto fail;
  if (!gt_log_init (config->log_level, &error))
    goto fail;
  /* Before any TLS and before threads: GIO takes the TLS settings once per process. */
  if (!gt_transport_tls_init (config->tls_version, &error))
    goto fail;
  print_warnings (config->warnings);

  server = gt_server_new (g_steal_pointer (&config));
  running_server = server;
  g_signal_connect (server, "drained", G_CALLBACK (drained_cb), NULL);
  /* Handlers first: a SIGTERM right after "listening on" must already drain. */
  setup_signals ();
  if (!gt_server_start (server, &error))
    goto fail;
  if (!start_api_server (server, &api, &error))
    goto fail;
  gt_sd_notify ("READY=1\nSTATUS=listening on %s", gt_server_get_listen_address (server));
  g_main_loop_run (loop);
  running_server = NULL;
  g_clear_object (&api);
  gt_server_stop (server);
  return 0;

fail:
  fprintf (stderr, "gt server: %s\n", error->message);
  return error->domain == GT_CONFIG_ERROR && error->code == GT_CONFIG_ERROR_USAGE ? 2 : 1;
}

static void
client_ready_cb (GtClient *client, gpointer user_data)
{
  gt_sd_notify ("READY=1\nSTATUS=%u tunnels ready", gt_client_get_n_ready (client));
}

static int
run_client (const char *config_path, int argc, char **argv)
{
  g_autoptr (GtClientConfig) config = gt_client_config_new ();
  g_autoptr (GtClient) client = NULL;
  g_autoptr (GError) error = NULL;

  if (config_path && !gt_client_config_load_file (config, config_path, NULL, &error))
    goto fail;
  if (!gt_client_config_apply_args (config, argc, argv, &error))
    goto fail;
  if (!gt_client_config_validate (config, NULL, &error))
    goto fail;
  if (!gt_log_init (config->log_level, &error))
    goto fail;
  if (!gt_transport_tls_init (NULL, &error))
    goto fail;
  print_warnings (config->warnings);

  client = gt_client_new (g_steal_pointer (&config));
  g_signal_connect (client, "tunnel-ready", G_CALLBACK (client_ready_cb), NULL);
  running_client = client;
  g_signal_connect (client, "drained", G_CALLBACK (drained_cb), NULL);
  setup_signals ();
  if (!gt_client_start (client, &error))
    goto fail;
  g_main_loop_run (loop);
  running_client = NULL;
  gt_client_stop (client);
  return 0;

fail:
  fprintf (stderr, "gt client: %s\n", error->message);
  return error->domain == GT_CONFIG_ERROR && error->code == GT_CONFIG_ERROR_USAGE ? 2 : 1;
}

int
main (int argc, char **argv)
{
  static const char *const help_names[] = { "-h", "--help", "-help", NULL };
  static const char *const version_names[] = { "-V", "--version", "-version", NULL };
  g_autoptr (GError) error = NULL;
  g_autofree char *config_path = NULL;
  const char *command = NULL;
  int rc;

  setlocale (LC_ALL, "");
  gt_log_init ("info", NULL);

  /* argv[0] and the subcommand (if any) go; what is left are options. */
  if (argc > 1 && argv[1][0] != '-')
    {
      command = argv[1];
      argv[1] = argv[0];
      argv++;
      argc--;
    }
  argv++;
  argc--;

  if (command == NULL && has_flag (argc, argv, version_names))
    {
      printf ("gt %s\n", PACKAGE_VERSION);
      return 0;
    }
  if (has_flag (argc, argv, help_names))
    {
      if (g_strcmp0 (command, "server") == 0)
        print_usage (GT_CONFIG_KIND_SERVER);
      else if (g_strcmp0 (command, "client") == 0)
        print_usage (GT_CONFIG_KIND_CLIENT);
      else
        fputs (usage_main, stdout);
      return 0;
    }

  config_path = gt_config_extract_config_path (&argc, argv, &error);
  if (error != NULL)
    {
      fprintf (stderr, "gt: %s\n", error->message);
      return 2;
    }

  if (command == NULL)
    {
      GtConfigKind kind;
      const char *signal_name = NULL;
      gboolean manager = FALSE;
      guint depth = GT_MANAGER_DEFAULT_DEPTH;

      for (int i = 0; i < argc; i++)
        {
          const char *a = argv[i];

          if ((strcmp (a, "-s") == 0 || strcmp (a, "--signal") == 0 || strcmp (a, "-signal") == 0)
              && i + 1 < argc)
            signal_name = argv[++i];
          else if (g_str_has_prefix (a, "--signal="))
            signal_name = a + strlen ("--signal=");
          else if ((strcmp (a, "--depth") == 0 || strcmp (a, "-depth") == 0) && i + 1 < argc)
            {
              guint64 v;

              if (!g_ascii_string_to_unsigned (argv[++i], 10, 0, 255, &v, &error))
                {
                  fprintf (stderr, "gt: --depth: %s\n", error->message);
                  return 2;
                }
              depth = (guint) v;
            }
          else if (strcmp (a, "--manager") == 0)
            manager = TRUE;
          else
            {
              fprintf (stderr, "gt: unknown option '%s'\n\n%s", a, usage_main);
              return 2;
            }
        }
      if (signal_name != NULL)
        {
          int rc2 = gt_manager_send_signal (signal_name, &error);

          if (error != NULL)
            fprintf (stderr, "gt: %s\n", error->message);
          return rc2;
        }
      if (config_path == NULL)
        {
          fputs (usage_main, stderr);
          return 2;
        }
      if (manager || g_file_test (config_path, G_FILE_TEST_IS_DIR))
        {
          int rc2 = gt_manager_run (config_path, depth, &error);

          if (error != NULL)
            fprintf (stderr, "gt: %s\n", error->message);
          return rc2;
        }
      kind = gt_config_detect_kind_file (config_path, &error);
      if (kind == GT_CONFIG_KIND_UNKNOWN)
        {
          fprintf (stderr, "gt: %s\n", error ? error->message : "cannot tell the config kind");
          return 1;
        }
      command = kind == GT_CONFIG_KIND_SERVER ? "server" : "client";
    }

  loop = g_main_loop_new (NULL, FALSE);
  if (strcmp (command, "server") == 0)
    rc = run_server (config_path, argc, argv);
  else if (strcmp (command, "client") == 0)
    rc = run_client (config_path, argc, argv);
  else
    {
      fprintf (stderr, "gt: unknown command '%s' (server, client)\n\n%s", command, usage_main);
      rc = 2;
    }
  g_main_loop_unref (loop);
  return rc;
}
