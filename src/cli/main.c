/* main.c: the gt command line: `gt server`, `gt client`, `gt -c FILE`, `gt --version`. */
#include "config.h"

#define G_LOG_DOMAIN "gt"

#include <glib-unix.h>
#include <glib/gi18n-lib.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "gt-api-server.h"
#include "gt-client.h"
#include "gt-config.h"
#include "gt-dbus-service.h"
#include "gt-dbus-status.h"
#include "gt-keyring.h"
#include "gt-log.h"
#include "gt-manager.h"
#include "gt-p2p-peer-module.h"
#include "gt-p2p-connect.h"
#include "gt-p2p-signalling.h"
#include "gt-server.h"
#include "gt-stun-server.h"
#include "gt-systemd.h"
#include "gt-transport.h"
#include "gt-web-admin.h"
#include "gt-worker-report.h"

static const char usage_main[] =
  /* TRANSLATORS: gt's --help; keep the option names and the column layout */
  N_("Usage: gt [-c FILE|DIR] [--depth N] [-s reload|restart|stop] [COMMAND] [OPTIONS]\n"
  "\n"
  "A fast reverse-tunnel relay proxy, compatible with GT's command line and YAML.\n"
  "\n"
  "Commands:\n"
  "  server   run a relay server (public side)\n"
  "  client   run a relay client (next to the local services)\n"
  "  connect  reach a remote client's service from a local port, P2P with relay fallback\n"
  "  status   show the running manager's configurations, their state and traffic\n"
  "\n"
  "Options:\n"
  "  -c, --config PATH   configuration file; without COMMAND its `type:` key (or a\n"
  "                      `services:` key, meaning client) tells which to run; a\n"
  "                      directory starts a supervised worker per .yaml/.yml file\n"
  "  --depth N           how deep to look in a config directory (default 3, 0 = any)\n"
  "  --manager           supervise even a single config file (restarts, reload)\n"
  "  --no-dbus           do not offer the D-Bus interface on the session bus\n"
  "  --system-bus        offer it on the system bus instead (also `gt status --system-bus`)\n"
  "  -s, --signal NAME   tell the running manager to reload, restart or stop\n"
  "  -h, --help          show this help (also `gt server --help`, `gt client --help`)\n"
  "  -V, --version       print the version\n");

/* The option lines come from the configuration's key tables (gt_config_describe_options); these
 * are the lines of options the tables do not describe. */
static const char usage_options_intro[] =
  N_("Options (GT's names; -name or --name, with a value as `--name value` or `--name=value`):\n");

static const char usage_server_extra[] =
  N_("  --id ID --secret SECRET            a user (repeatable, paired in order)\n"
  "  --tcpRange A-B                     ports clients may open for tcp services (repeatable)\n"
  "  --hostNumber N                     host prefixes per client (0 = unlimited)\n"
  "  --hostRegex REGEX                  host prefixes clients may use (repeatable)\n"
  "  --hostWithID                       host prefixes must start with the client id\n");

static void
print_usage (GtConfigKind kind)
{
  g_autofree char *options = gt_config_describe_options (kind);

  if (kind == GT_CONFIG_KIND_SERVER)
    fputs (_("Usage: gt server [-c FILE] [OPTIONS]\n\n"), stdout);
  else
    fputs (_("Usage: gt client [-c FILE] [OPTIONS]\n\n"), stdout);
  fputs (_(usage_options_intro), stdout);
  fputs ("  -c, --config FILE                  YAML configuration (GT schema)\n", stdout);
  if (kind == GT_CONFIG_KIND_SERVER)
    fputs (_(usage_server_extra), stdout);
  fputs (options, stdout);
  fputs ("See docs/configuration.md for every key and its default.\n", stdout);
}

static GMainLoop *loop;
static GtServer *running_server;
static GtClient *running_client;

/* Under a manager, a worker reports its state and traffic on NOTIFY_SOCKET (gt-manager.h). */
static GtTraffic reported_traffic;
static gboolean traffic_reported;

static char *reported_details;

/* The per-connection and per-stream counters, in their own datagram (up to 60 KiB), sent
 * without blocking: when the manager is behind, the next second sends them again. */
static void
report_details (void)
{
  g_autoptr (GVariant) state = NULL;
  g_autofree char *line = NULL;
  g_autoptr (GError) error = NULL;

  state = running_server != NULL ? gt_server_get_state (running_server)
                                 : gt_client_get_state (running_client);
  line = gt_worker_details_line (state);
  if (g_strcmp0 (line, reported_details) == 0)
    return;
  if (!gt_sd_notify_to_full (g_getenv ("NOTIFY_SOCKET"), line, FALSE, &error))
    {
      g_debug ("details not sent: %s", error->message);
      return;
    }
  g_free (reported_details);
  reported_details = g_steal_pointer (&line);
}

static gboolean
report_traffic_cb (gpointer user_data)
{
  GtTraffic t;
  g_autofree char *line = NULL;

  if (running_server != NULL)
    gt_server_get_traffic (running_server, &t);
  else if (running_client != NULL)
    gt_client_get_traffic (running_client, &t);
  else
    return G_SOURCE_CONTINUE;
  report_details ();
  if (traffic_reported && memcmp (&t, &reported_traffic, sizeof t) == 0)
    return G_SOURCE_CONTINUE;
  reported_traffic = t;
  traffic_reported = TRUE;
  line = gt_manager_worker_traffic_line (&t);
  gt_sd_notify ("%s", line);
  return G_SOURCE_CONTINUE;
}

static void
start_reporting (void)
{
  static guint id;

  /* Once per process: the admin UI may start the relay again. */
  if (id != 0 || !gt_manager_is_worker () || !gt_sd_notify_enabled ())
    return;
  id = g_timeout_add_seconds (1, report_traffic_cb, NULL);
}

static void
client_n_ready_cb (GObject *client, GParamSpec *pspec, gpointer user_data)
{
  if (!gt_manager_is_worker ())
    return;
  gt_sd_notify ("GT_STATE=%s",
                gt_client_get_n_ready (GT_CLIENT (client)) > 0 ? "running" : "reconnecting");
}

static void
client_tunnel_failed_cb (GtClient *client, const char *what, gpointer user_data)
{
  g_autofree char *text = NULL;

  if (!gt_manager_is_worker () || gt_client_get_n_ready (client) > 0)
    return;
  text = g_strdelimit (g_strdup (what), "\n\r", ' ');
  gt_sd_notify ("GT_STATE=reconnecting\nGT_ERROR=%.1000s", text);
}

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

/* TURN credentials come from the users of the server's configuration. */
static const char *
turn_secret_cb (const char *user, gpointer user_data)
{
  const GtUserConfig *u = gt_server_config_find_user (gt_server_get_config (user_data), user);

  return u != NULL && u->secret != NULL && u->secret[0] != '\0' ? u->secret : NULL;
}

/* stunAddr: STUN Binding answers for P2P peers, beside the relay; TURN when turn is set. */
static gboolean
start_stun_server (GtServer *server, GtStunServer **stun_out, GError **error)
{
  const GtServerConfig *config = gt_server_get_config (server);
  g_autoptr (GtStunServer) stun = NULL;

  if (config->stun_addr == NULL)
    return TRUE;
  stun = gt_stun_server_new (config->stun_addr);
  if (!gt_stun_server_start (stun, error))
    return FALSE;
  if (config->turn)
    {
      GtTurnOptions options = {
        .relay_ip = config->turn_relay_addr,
        .allow_loopback = config->turn_allow_loopback,
        .max_per_user = config->turn_max_allocations,
        .max_allocations = 4096,
        .secret_for = turn_secret_cb,
        .secret_data = server,
      };

      gt_stun_server_enable_turn (stun, &options);
      g_message ("TURN on %s (udp), relayed addresses on %s", config->stun_addr,
                 config->turn_relay_addr);
    }
  *stun_out = g_steal_pointer (&stun);
  return TRUE;
}

static guint16
client_tcp_port_cb (guint service_index, gpointer user_data)
{
  return gt_client_get_tcp_port (user_data, service_index);
}

static void
client_signalling_cb (GtClient *client, int fd, gpointer user_data)
{
  gt_p2p_signalling_accept (user_data, fd);
}

/* One relay (server or client) with its status API, restartable from its file by the admin UI. */
typedef struct
{
  GtConfigKind kind;
  int argc;
  char **argv;
  GtServer *server;
  GtClient *client;
  GtApiServer *api;
  GtStunServer *stun;           /* server: stunAddr */
  GtP2pSignalling *signalling;  /* client: GT's XP requests */
  GtWebAdmin *web;
  gboolean tls_ready;
  const char *config_path; /* for the journal's GT_CONFIG field; NULL for options only */
} Relay;

static void
client_ready_cb (GtClient *client, gpointer user_data)
{
  gt_sd_notify ("READY=1\nSTATUS=%u tunnels ready", gt_client_get_n_ready (client));
}

static void
relay_stop (Relay *r)
{
  if (r->web != NULL)
    {
      gt_web_admin_set_server (r->web, NULL);
      gt_web_admin_set_client (r->web, NULL);
    }
  g_clear_object (&r->api);
  g_clear_object (&r->stun);
  running_server = NULL;
  running_client = NULL;
  if (r->server != NULL)
    {
      g_signal_handlers_disconnect_by_func (r->server, drained_cb, NULL);
      gt_server_stop (r->server);
      g_clear_object (&r->server);
    }
  if (r->client != NULL)
    {
      g_signal_handlers_disconnect_by_func (r->client, drained_cb, NULL);
      gt_client_stop (r->client);
      g_clear_object (&r->client);
    }
  g_clear_object (&r->signalling);
}

/* `secret: "(keyring)"` (written by the manager when a keyring took the secret): the secret
 * comes from the user's keyring, or the client does not start. */
static gboolean
client_secret_from_keyring (GtClientConfig *config, const char *path, GError **error)
{
  g_autoptr (GError) local_error = NULL;
  char *secret;

  if (g_strcmp0 (config->secret, GT_CONFIG_SECRET_KEYRING) != 0 || path == NULL)
    return TRUE;
  secret = gt_keyring_lookup (path, &local_error);
  if (secret == NULL)
    {
      g_set_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE,
                   _("%s: options.secret is kept in the keyring, but it cannot be read: %s"),
                   path, local_error->message);
      return FALSE;
    }
  g_free (config->secret);
  config->secret = secret;
  return TRUE;
}

/* Loads (file, then the command line) and validates a configuration; *web_out (may be NULL)
 * receives a copy of its web keys. */
static gpointer
relay_load (Relay *r, const char *path, GError **error)
{
  if (r->kind == GT_CONFIG_KIND_SERVER)
    {
      g_autoptr (GtServerConfig) config = gt_server_config_new ();

      if ((path != NULL && !gt_server_config_load_file (config, path, NULL, error))
          || !gt_server_config_apply_args (config, r->argc, r->argv, error)
          || !gt_server_config_validate (config, NULL, error))
        return NULL;
      return g_steal_pointer (&config);
    }
  else
    {
      g_autoptr (GtClientConfig) config = gt_client_config_new ();

      if ((path != NULL && !gt_client_config_load_file (config, path, NULL, error))
          || !gt_client_config_apply_args (config, r->argc, r->argv, error)
          || !client_secret_from_keyring (config, path, error)
          || !gt_client_config_validate (config, NULL, error))
        return NULL;
      return g_steal_pointer (&config);
    }
}

/* Starts the relay of a loaded configuration (taken). */
static gboolean
relay_start (Relay *r, gpointer config, GError **error)
{
  const char *log_level = r->kind == GT_CONFIG_KIND_SERVER
                            ? ((GtServerConfig *) config)->log_level
                            : ((GtClientConfig *) config)->log_level;
  GPtrArray *warnings = r->kind == GT_CONFIG_KIND_SERVER
                          ? ((GtServerConfig *) config)->warnings
                          : ((GtClientConfig *) config)->warnings;

  if (!gt_log_init (log_level, error))
    goto fail;
  gt_log_set_field ("GT_KIND", r->kind == GT_CONFIG_KIND_SERVER ? "server" : "client");
  if (r->kind == GT_CONFIG_KIND_CLIENT)
    gt_log_set_field ("GT_USER", ((GtClientConfig *) config)->id);
  if (r->config_path != NULL)
    gt_log_set_field ("GT_CONFIG", r->config_path);
  /* Before any TLS and before threads: GIO takes the TLS settings once per process. */
  if (!r->tls_ready
      && !gt_transport_tls_init (r->kind == GT_CONFIG_KIND_SERVER
                                   ? ((GtServerConfig *) config)->tls_version
                                   : NULL,
                                 error))
    goto fail;
  r->tls_ready = TRUE;
  print_warnings (warnings);

  if (r->kind == GT_CONFIG_KIND_SERVER)
    {
      r->server = gt_server_new (config);
      config = NULL;
      running_server = r->server;
      g_signal_connect (r->server, "drained", G_CALLBACK (drained_cb), NULL);
      if (!gt_server_start (r->server, error) || !start_api_server (r->server, &r->api, error)
          || !start_stun_server (r->server, &r->stun, error))
        {
          relay_stop (r);
          return FALSE;
        }
      if (r->web != NULL)
        gt_web_admin_set_server (r->web, r->server);
      gt_sd_notify ("READY=1\nSTATUS=listening on %s", gt_server_get_listen_address (r->server));
      start_reporting ();
    }
  else
    {
      r->client = gt_client_new (config);
      config = NULL;
      /* WebRTC answers need the peer's module: a missing one fails at start, not per request. */
      if (gt_client_get_config (r->client)->remote_stun != NULL
          && gt_client_get_config (r->client)->remote_stun[0] != NULL
          && !gt_p2p_peer_module_load (error))
        {
          relay_stop (r);
          return FALSE;
        }
      /* GT's XP requests: P2P signalling served by the client itself. */
      r->signalling = gt_p2p_signalling_new (gt_client_get_config (r->client), client_tcp_port_cb,
                                             r->client);
      gt_client_set_signalling_func (r->client, client_signalling_cb, r->signalling);
      g_signal_connect (r->client, "tunnel-ready", G_CALLBACK (client_ready_cb), NULL);
      g_signal_connect (r->client, "notify::n-ready", G_CALLBACK (client_n_ready_cb), NULL);
      g_signal_connect (r->client, "tunnel-failed", G_CALLBACK (client_tunnel_failed_cb), NULL);
      running_client = r->client;
      g_signal_connect (r->client, "drained", G_CALLBACK (drained_cb), NULL);
      if (!gt_client_start (r->client, error))
        {
          relay_stop (r);
          return FALSE;
        }
      if (r->web != NULL)
        gt_web_admin_set_client (r->web, r->client);
      start_reporting ();
    }
  return TRUE;

fail:
  if (r->kind == GT_CONFIG_KIND_SERVER)
    gt_server_config_free (config);
  else
    gt_client_config_free (config);
  return FALSE;
}

/* The admin UI saved a configuration: stop the relay, start it again from the file. */
static gboolean
apply_cb (const char *path, gpointer user_data, GError **error)
{
  Relay *r = user_data;
  gpointer config = relay_load (r, path, error);

  if (config == NULL)
    return FALSE;
  g_message ("applying %s", path);
  relay_stop (r);
  if (!relay_start (r, config, error))
    {
      /* The new file does not start (a port taken, a certificate missing, ...): the previous
       * file the admin UI kept (FILE.bak) runs again, so the relay does not stay down. */
      g_autofree char *backup = g_strconcat (path, ".bak", NULL);
      g_autoptr (GError) old_error = NULL;
      gpointer old = g_file_test (backup, G_FILE_TEST_EXISTS)
                       ? relay_load (r, backup, &old_error)
                       : NULL;

      if (old != NULL && relay_start (r, old, &old_error))
        g_prefix_error (error, "the previous configuration (%s) runs again; the new one: ",
                        backup);
      return FALSE;
    }
  if (r->web != NULL)
    gt_web_admin_set_credentials (r->web, r->kind == GT_CONFIG_KIND_SERVER
                                            ? &gt_server_get_config (r->server)->web
                                            : gt_client_get_web_config (r->client));
  return TRUE;
}

/* `gt server` / `gt client` with neither a config nor options: the file ./server.yaml
 * (./client.yaml) and the admin UI on GT's port (8000 / 7000, or any free one). */
static int
run_relay (GtConfigKind kind, const char *config_path, int argc, char **argv)
{
  const char *name = kind == GT_CONFIG_KIND_SERVER ? "server" : "client";
  gboolean zero_arg = config_path == NULL && argc == 0;
  g_autofree char *path = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GError) load_error = NULL;
  gpointer config = NULL;
  const GtWebConfig *web = NULL;
  const char *web_addr;
  Relay r = { kind, argc, argv };
  int rc = 0;

  r.config_path = config_path;

  if (zero_arg)
    {
      g_autofree char *cwd = g_get_current_dir ();

      path = g_build_filename (cwd, kind == GT_CONFIG_KIND_SERVER ? "server.yaml" : "client.yaml",
                               NULL);
    }
  else
    path = g_strdup (config_path);

  if (!zero_arg || g_file_test (path, G_FILE_TEST_EXISTS))
    config = relay_load (&r, path, &load_error);
  if (config == NULL && !zero_arg)
    {
      error = g_steal_pointer (&load_error);
      goto fail;
    }
  if (config != NULL)
    web = kind == GT_CONFIG_KIND_SERVER ? &((GtServerConfig *) config)->web
                                        : &((GtClientConfig *) config)->web;
  web_addr = web != NULL && web->addr != NULL ? web->addr
             : zero_arg ? (kind == GT_CONFIG_KIND_SERVER ? "127.0.0.1:8000" : "127.0.0.1:7000")
                        : NULL;
  setup_signals ();
  if (web_addr != NULL)
    {
      /* Options only (`--webAddr` without -c): the UI saves to ./server.yaml (./client.yaml),
       * which the relay then runs from, with the same options on top. */
      if (path == NULL)
        {
          g_autofree char *cwd = g_get_current_dir ();

          path = g_build_filename (cwd, kind == GT_CONFIG_KIND_SERVER ? "server.yaml"
                                                                      : "client.yaml",
                                   NULL);
        }
      r.web = gt_web_admin_new (kind, path, web_addr, web, &error);
      if (r.web == NULL && zero_arg
          && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_ADDRESS_IN_USE))
        {
          g_clear_error (&error);
          r.web = gt_web_admin_new (kind, path, "127.0.0.1:0", web, &error);
        }
      if (r.web == NULL)
        goto fail;
      gt_web_admin_set_apply_func (r.web, apply_cb, &r);
      if (web == NULL || web->password == NULL)
        {
          g_autofree char *link = gt_web_admin_make_login_link (r.web);

          /* The link logs in: printed once, kept out of the log history the UI shows. */
          gt_log_message_unrecorded ("admin UI: open %s to log in (valid %d minutes, %d uses)",
                                     link, GT_WEB_ADMIN_KEY_TTL_S / 60, GT_WEB_ADMIN_KEY_USES);
        }
    }
  if (config == NULL)
    {
      if (load_error != NULL)
        g_warning ("%s: %s; fix it in the admin UI", path, load_error->message);
      else
        g_message ("no configuration at %s: create it in the admin UI", path);
    }
  else if (!relay_start (&r, g_steal_pointer (&config), &error))
    {
      if (r.web == NULL)
        goto fail;
      g_warning ("the %s did not start: %s; fix it in the admin UI", name, error->message);
      g_clear_error (&error);
    }
  g_main_loop_run (loop);
  relay_stop (&r);
  g_clear_object (&r.web);
  return rc;

fail:
  relay_stop (&r);
  g_clear_object (&r.web);
  fprintf (stderr, "gt %s: %s\n", name, error->message);
  /* The manager shows it as the configuration's LastError. */
  if (gt_manager_is_worker ())
    gt_sd_notify ("GT_ERROR=%.1000s", error->message);
  return error->domain == GT_CONFIG_ERROR && error->code == GT_CONFIG_ERROR_USAGE ? 2 : 1;
}

/* gt connect's relay path as a tcpForward stream of a client of its own. */
typedef struct
{
  GtClient *client;
  char *prefix;
} ConnectForward;

static void
connect_forward_open (GCancellable *cancellable, GAsyncReadyCallback callback,
                      gpointer callback_data, gpointer user_data)
{
  ConnectForward *fw = user_data;

  gt_client_open_forward_stream_async (fw->client, fw->prefix, cancellable, callback,
                                       callback_data);
}

static GIOStream *
connect_forward_finish (GAsyncResult *result, GError **error)
{
  g_autoptr (GObject) client = g_async_result_get_source_object (result);

  return gt_client_open_forward_stream_finish (GT_CLIENT (client), result, error);
}

/* A client with no service that only opens tcpForward streams to the target's prefix. */
static GtClient *
connect_forward_client (const GtConnectConfig *config, GError **error)
{
  g_autoptr (GtClientConfig) cc = gt_client_config_new ();
  g_autofree char *prefix = g_strndup (config->host, strcspn (config->host, "."));
  char *args[] = { "--id", config->id, "--secret", config->secret,
                   "--remote", config->remote_tunnel, "--tcpForwardHostPrefix", prefix,
                   "--tcpForwardAddr", "127.0.0.1:0", "--logLevel", config->log_level };
  GtClient *client;

  if (!gt_client_config_apply_args (cc, G_N_ELEMENTS (args), args, error)
      || !gt_client_config_validate (cc, NULL, error))
    return NULL;
  /* gt connect is the listener: the client only opens the streams. */
  g_clear_pointer (&cc->tcp_forward_addr, g_free);
  client = gt_client_new (g_steal_pointer (&cc));
  gt_client_enable_forward (client);
  if (!gt_client_start (client, error))
    {
      g_object_unref (client);
      return NULL;
    }
  return client;
}

/* `gt connect`: a config file (`type: connect`), then the command line on top. */
static int
run_connect (const char *config_path, int argc, char **argv)
{
  g_autoptr (GtConnectConfig) config = gt_connect_config_new ();
  g_autoptr (GtP2pConnect) p2p = NULL;
  g_autoptr (GError) error = NULL;
  ConnectForward fw = { 0 };
  int rc = 0;

  if ((config_path != NULL && !gt_connect_config_load_file (config, config_path, &error))
      || !gt_connect_config_apply_args (config, argc, argv, &error)
      || !gt_connect_config_validate (config, &error) || !gt_log_init (config->log_level, &error))
    {
      fprintf (stderr, "gt connect: %s\n", error->message);
      return error->domain == GT_CONFIG_ERROR && error->code == GT_CONFIG_ERROR_USAGE ? 2 : 1;
    }
  gt_log_set_field ("GT_KIND", "connect");
  /* The direct path is a WebRTC peer: gt's module gt-webrtc. */
  if (!gt_p2p_peer_module_load (&error))
    {
      fprintf (stderr, "gt connect: %s\n", error->message);
      return 1;
    }
  setup_signals ();
  if (config->id != NULL && config->relay_addr == NULL)
    {
      if (!gt_transport_tls_init (NULL, &error)
          || (fw.client = connect_forward_client (config, &error)) == NULL)
        {
          fprintf (stderr, "gt connect: %s\n", error->message);
          return 1;
        }
      fw.prefix = g_strndup (config->host, strcspn (config->host, "."));
    }
  p2p = gt_p2p_connect_new (g_steal_pointer (&config));
  if (fw.client != NULL)
    gt_p2p_connect_set_relay (p2p, "tcpForward through the server", connect_forward_open,
                              connect_forward_finish, &fw);
  if (!gt_p2p_connect_start (p2p, &error))
    {
      fprintf (stderr, "gt connect: %s\n", error->message);
      rc = 1;
    }
  else
    {
      gt_sd_notify ("READY=1\nSTATUS=listening on %s",
                    gt_p2p_connect_get_local_address (p2p));
      g_main_loop_run (loop);
    }
  g_clear_object (&p2p);
  if (fw.client != NULL)
    gt_client_stop (fw.client);
  g_clear_object (&fw.client);
  g_free (fw.prefix);
  return rc;
}

/* The manager, with the D-Bus interface on the session bus when there is one, or on the system
 * bus when asked (then a bus that cannot be reached is an error). */
static int
run_manager (const char *config_path, guint depth, gboolean use_dbus, gboolean system_bus,
             GError **error)
{
  g_autoptr (GtManager) manager = gt_manager_new (config_path, depth);
  g_autoptr (GDBusConnection) bus = NULL;
  g_autoptr (GtDBusService) service = NULL;

  if (system_bus)
    {
      bus = g_bus_get_sync (G_BUS_TYPE_SYSTEM, NULL, error);
      if (bus == NULL)
        {
          g_prefix_error (error, "--system-bus: ");
          return 1;
        }
    }
  else if (use_dbus)
    bus = gt_dbus_session_bus_get ();

  gt_log_set_field ("GT_KIND", "manager");
  gt_log_set_field ("GT_CONFIG", config_path);
  if (bus != NULL)
    {
      /* Configurations can be added over D-Bus: an empty directory is a valid start. */
      gt_manager_set_allow_empty (manager, TRUE);
      service = gt_dbus_service_new (manager);
      if (!gt_dbus_service_export (service, bus, error))
        return 1;
    }
  return gt_manager_run_full (manager, error);
}

/* `gt status`: over D-Bus when a manager offers it, else what the runtime files say. */
static int
run_status (gboolean system_bus)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = NULL;
  g_autofree char *pid_path = NULL;
  g_autofree char *state_path = NULL;
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  GPid pid;

  if (gt_dbus_status_print (stdout, system_bus ? G_BUS_TYPE_SYSTEM : G_BUS_TYPE_SESSION, &error))
    return 0;
  if (system_bus)
    {
      fprintf (stderr, "gt: %s\n", error->message);
      return 1;
    }
  g_debug ("status over D-Bus: %s", error->message);
  g_clear_error (&error);
  dir = gt_manager_runtime_dir (FALSE, &error);
  pid_path = dir != NULL ? g_build_filename (dir, "manager.pid", NULL) : NULL;
  pid = pid_path != NULL ? gt_manager_pid_file_read (pid_path, &error) : 0;
  if (pid == 0)
    {
      fprintf (stderr, "gt: %s\n", error->message);
      return 1;
    }
  state_path = g_build_filename (dir, "manager.state", NULL);
  if (g_key_file_load_from_file (kf, state_path, G_KEY_FILE_NONE, NULL))
    {
      g_autofree char *phase = g_key_file_get_string (kf, "manager", "phase", NULL);

      printf (_("gt manager (pid %d): %s, %d workers running, %d configs with errors\n"), (int) pid,
              phase ? phase : "?", g_key_file_get_integer (kf, "manager", "running", NULL),
              g_key_file_get_integer (kf, "manager", "config-errors", NULL));
    }
  else
    printf (_("gt manager (pid %d)\n"), (int) pid);
  puts (_("(not on a D-Bus session bus: the state of each configuration is shown only over D-Bus)"));
  return 0;
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
  bindtextdomain (GETTEXT_PACKAGE, g_getenv ("GT_LOCALEDIR") ? g_getenv ("GT_LOCALEDIR")
                                                             : GT_LOCALEDIR);
  bind_textdomain_codeset (GETTEXT_PACKAGE, "UTF-8");
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
      else if (g_strcmp0 (command, "connect") == 0)
        printf ("Usage: gt connect [-c FILE] [OPTIONS]\n\n"
                "  -c, --config FILE          YAML configuration (type: connect)\n%s"
                "See docs/p2p.md.\n",
                gt_connect_config_usage);
      else
        fputs (_(usage_main), stdout);
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
      gboolean use_dbus = TRUE;
      gboolean system_bus = FALSE;
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
          else if (strcmp (a, "--no-dbus") == 0)
            use_dbus = FALSE;
          else if (strcmp (a, "--system-bus") == 0)
            system_bus = manager = TRUE; /* only a manager offers the interface */
          else
            {
              fprintf (stderr, "gt: unknown option '%s'\n\n%s", a, _(usage_main));
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
          fputs (_(usage_main), stderr);
          return 2;
        }
      if (system_bus && !use_dbus)
        {
          fprintf (stderr, "gt: --system-bus and --no-dbus contradict each other\n");
          return 2;
        }
      if (manager || g_file_test (config_path, G_FILE_TEST_IS_DIR))
        {
          int rc2 = run_manager (config_path, depth, use_dbus, system_bus, &error);

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

  if (strcmp (command, "status") == 0)
    {
      gboolean system_bus = argc == 1 && strcmp (argv[0], "--system-bus") == 0;

      if ((argc > 0 && !system_bus) || config_path != NULL)
        {
          fprintf (stderr, "gt status takes no options but --system-bus\n");
          return 2;
        }
      return run_status (system_bus);
    }
  loop = g_main_loop_new (NULL, FALSE);
  if (strcmp (command, "server") == 0)
    rc = run_relay (GT_CONFIG_KIND_SERVER, config_path, argc, argv);
  else if (strcmp (command, "client") == 0)
    rc = run_relay (GT_CONFIG_KIND_CLIENT, config_path, argc, argv);
  else if (strcmp (command, "connect") == 0)
    rc = run_connect (config_path, argc, argv);
  else
    {
      fprintf (stderr, "gt: unknown command '%s' (server, client, connect)\n\n%s", command,
               _(usage_main));
      rc = 2;
    }
  g_main_loop_unref (loop);
  return rc;
}
