/* gt-server-forward.c: FORWARD streams (GT's tcpForward): a client opens a stream to the service
 * of the client that holds a host prefix; the server checks tcpForwardAllow, opens a stream to
 * that client and relays the two (docs/protocol.md §6.9). */
#include "config.h"

#define G_LOG_DOMAIN "gt-server"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-server-private.h"

/* Socket buffers of the pair that joins the two hops: with each hop's window (256 KiB) this
 * bounds what one forwarded stream holds in the server. */
#define FORWARD_SOCKET_BUFFER (64 * 1024)

typedef enum
{
  RULE_NONE,     /* no rule allows it */
  RULE_WILDCARD, /* allowed by a rule whose prefix is * */
  RULE_EXACT,    /* allowed by a rule that names the prefix */
} RuleMatch;

/* The forwarding client's id, on its tunnels. */
#define FORWARD_ID_KEY "gt-forward-client-id"

/* The best rule of tcpForwardAllow for (id, prefix): one naming the prefix beats a wildcard. */
static RuleMatch
match_rules (char **rules, const char *id, const char *prefix)
{
  RuleMatch best = RULE_NONE;

  for (guint i = 0; rules != NULL && rules[i] != NULL; i++)
    {
      const char *colon = strrchr (rules[i], ':');
      gsize id_len;

      if (colon == NULL)
        continue;
      id_len = colon - rules[i];
      if (!(id_len == 1 && rules[i][0] == '*')
          && !(id_len == strlen (id) && memcmp (rules[i], id, id_len) == 0))
        continue;
      if (strcmp (colon + 1, "*") == 0)
        best = MAX (best, RULE_WILDCARD);
      else if (g_ascii_strcasecmp (colon + 1, prefix) == 0)
        return RULE_EXACT;
    }
  return best;
}

static void
forward_refuse (GtMuxStream *stream, const char *id, const char *prefix, GtResetCode code,
                const char *why)
{
  g_message ("tcpForward from client %s to '%s' refused: %s", id, prefix,
             why != NULL ? why : gt_reset_code_to_string (code));
  gt_mux_stream_reset (stream, code);
}

/* A fresh socket pair whose buffers stay small. */
static gboolean
forward_socketpair (int sv[2])
{
  int size = FORWARD_SOCKET_BUFFER;

  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
    return FALSE;
  for (guint i = 0; i < 2; i++)
    {
      (void) setsockopt (sv[i], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
      (void) setsockopt (sv[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
  return TRUE;
}

static void
forward_opened_cb (GtMux *mux, GtMuxStream *stream, const char *prefix, gpointer user_data)
{
  GtServer *server = user_data;
  const char *id = g_object_get_data (G_OBJECT (mux), FORWARD_ID_KEY);
  GtServerRoute *route = gt_server_registry_lookup_route (server->registry,
                                                          GT_SERVICE_KIND_HTTP, prefix);
  guint64 timeout_ms = server->config->timeout_ms;
  GtMuxStream *target;
  RuleMatch rule;
  GtMux *to;
  int sv[2];

  if (route == NULL)
    route = gt_server_registry_lookup_route (server->registry, GT_SERVICE_KIND_HTTPS, prefix);
  /* A client may always reach its own prefixes (frp's default: the same user). */
  rule = route != NULL && strcmp (route->session->id, id) == 0
           ? RULE_EXACT
           : match_rules (server->config->tcp_forward_allow, id, prefix);
  if (rule == RULE_NONE)
    {
      forward_refuse (stream, id, prefix, GT_RESET_CODE_NOT_ALLOWED,
                      "no tcpForwardAllow rule allows it");
      return;
    }
  if (route == NULL)
    {
      /* A prefix that a rule names is a known service whose client is away. */
      forward_refuse (stream, id, prefix,
                      rule == RULE_EXACT ? GT_RESET_CODE_TARGET_OFFLINE
                                         : GT_RESET_CODE_UNKNOWN_HOST,
                      rule == RULE_EXACT ? "its client is not connected"
                                         : "no connected client holds it");
      return;
    }
  to = gt_server_session_pick_tunnel (route->session);
  if (to == NULL)
    {
      forward_refuse (stream, id, prefix, GT_RESET_CODE_TARGET_OFFLINE,
                      "its client has no tunnel that takes new streams");
      return;
    }
  if (!forward_socketpair (sv))
    {
      g_warning ("tcpForward from client %s to '%s': socketpair: %s", id, prefix,
                 g_strerror (errno));
      gt_mux_stream_reset (stream, GT_RESET_CODE_REFUSED);
      return;
    }
  gt_mux_stream_attach_fd (stream, sv[0], timeout_ms);
  target = gt_mux_open_stream_full (to, route->service_index, sv[1], NULL, NULL, 0, NULL, NULL,
                                    timeout_ms);
  if (target == NULL)
    {
      forward_refuse (stream, id, prefix, GT_RESET_CODE_TARGET_OFFLINE,
                      "its tunnel closed");
      return;
    }
  g_hash_table_insert (server->forward_links, stream, gt_mux_stream_ref (target));
  g_hash_table_insert (server->forward_links, target, gt_mux_stream_ref (stream));
  gt_mux_stream_accept_forward (stream);
  g_debug ("tcpForward from client %s to '%s' (client %s, stream %u)", id, prefix,
           route->session->id, gt_mux_stream_get_id (target));
}

/* One hop ended: a RESET from its peer is passed on to the other hop (SHUTDOWN and the data
 * already travel through the socket pair). */
static void
forward_stream_closed_cb (G_GNUC_UNUSED GtMux *mux, GtMuxStream *stream, gpointer user_data)
{
  GtServer *server = user_data;
  g_autoptr (GtMuxStream) partner = NULL;
  guint32 code;

  if (g_hash_table_size (server->forward_links) == 0
      || !g_hash_table_steal_extended (server->forward_links, stream, NULL, (gpointer *) &partner))
    return;
  /* The partner's entry holds a reference on stream: dropped here. */
  g_hash_table_remove (server->forward_links, partner);
  if (!gt_mux_stream_get_peer_reset (stream, &code))
    return;
  /* The codes of FORWARD are for its client; the target client gets a plain abort. */
  if (!gt_mux_stream_is_forward (partner) && code > GT_RESET_CODE_REFUSED)
    code = GT_RESET_CODE_CLOSED;
  gt_mux_stream_reset (partner, code);
}

void
_gt_server_forward_watch (GtServer *server, GtServerSession *session, GtMux *mux,
                          gboolean forward)
{
  /* The handlers go with the server (a draining tunnel may outlive it). */
  g_signal_connect_object (mux, "stream-closed", G_CALLBACK (forward_stream_closed_cb), server,
                           0);
  if (forward)
    {
      g_object_set_data_full (G_OBJECT (mux), FORWARD_ID_KEY, g_strdup (session->id), g_free);
      gt_mux_set_forward (mux, TRUE);
      g_signal_connect_object (mux, "forward-opened", G_CALLBACK (forward_opened_cb), server, 0);
    }
}

GHashTable *
_gt_server_forward_links_new (void)
{
  return g_hash_table_new_full (NULL, NULL, NULL, (GDestroyNotify) gt_mux_stream_unref);
}
