/* gt-server-metrics.c: the server's Prometheus text and the traffic and refusal counts behind it */
#include "config.h"

#define G_LOG_DOMAIN "gt-server"

#include <string.h>

#include "gt-metrics.h"
#include "gt-server-private.h"

/* Traffic per user or per service: bytes in = from users toward the service, out = back. */
typedef struct
{
  guint64 bytes_in;
  guint64 bytes_out;
  guint64 streams;
} GtServerTraffic;

void
_gt_server_counters_init (GtServerCounters *counters)
{
  counters->user_traffic = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  counters->service_traffic = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  counters->handshake_failures = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  counters->limit_rejections = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
}

void
_gt_server_counters_clear (GtServerCounters *counters)
{
  g_clear_pointer (&counters->user_traffic, g_hash_table_unref);
  g_clear_pointer (&counters->service_traffic, g_hash_table_unref);
  g_clear_pointer (&counters->handshake_failures, g_hash_table_unref);
  g_clear_pointer (&counters->limit_rejections, g_hash_table_unref);
}

static GtServerTraffic *
traffic_get (GHashTable *table, const char *key)
{
  GtServerTraffic *t = g_hash_table_lookup (table, key);

  if (t == NULL)
    {
      t = g_new0 (GtServerTraffic, 1);
      g_hash_table_insert (table, g_strdup (key), t);
    }
  return t;
}

/* Adds one stream of session to the per-user and per-service tables. */
static void
traffic_add (GHashTable *users, GHashTable *services, GtServerSession *s, GtMuxStream *stream)
{
  guint index = gt_mux_stream_get_service_index (stream);
  guint64 in = gt_mux_stream_get_bytes_from_socket (stream);
  guint64 out = gt_mux_stream_get_bytes_to_socket (stream);
  GtServerTraffic *t = traffic_get (users, s->id);

  t->bytes_in += in;
  t->bytes_out += out;
  t->streams++;
  if (index < s->service_labels->len)
    {
      g_autofree char *key = g_strdup_printf ("%s\x1f%s", s->id,
                                              (char *) s->service_labels->pdata[index]);

      t = traffic_get (services, key);
      t->bytes_in += in;
      t->bytes_out += out;
      t->streams++;
    }
}

void
_gt_server_counters_add (GtServerCounters *counters, GtServerSession *session,
                         GtMuxStream *stream)
{
  traffic_add (counters->user_traffic, counters->service_traffic, session, stream);
}

void
_gt_server_counters_get_user_traffic (GtServerCounters *counters, const char *id,
                                      guint64 *bytes_in, guint64 *bytes_out)
{
  GHashTableIter iter;
  gpointer key, value;

  *bytes_in = *bytes_out = 0;
  if (id != NULL)
    {
      GtServerTraffic *t = g_hash_table_lookup (counters->user_traffic, id);

      if (t != NULL)
        {
          *bytes_in = t->bytes_in;
          *bytes_out = t->bytes_out;
        }
      return;
    }
  g_hash_table_iter_init (&iter, counters->user_traffic);
  while (g_hash_table_iter_next (&iter, &key, &value))
    {
      GtServerTraffic *t = value;

      *bytes_in += t->bytes_in;
      *bytes_out += t->bytes_out;
    }
}

static void
count_in (GHashTable *table, const char *user, const char *what)
{
  g_autofree char *key = g_strdup_printf ("%s\x1f%s", user, what);
  guint64 *n = g_hash_table_lookup (table, key);

  if (n == NULL)
    {
      n = g_new0 (guint64, 1);
      g_hash_table_insert (table, g_steal_pointer (&key), n);
    }
  (*n)++;
}

/* Failures are labelled with the user only for configured users: client-chosen ids must not
 * grow the metrics without bound. */
static const char *
user_label (GtServer *server, const char *id)
{
  return id && gt_server_config_find_user (server->config, id) ? id : "";
}

void
_gt_server_count_handshake_failure (GtServer *server, const char *id, const char *reason)
{
  count_in (server->counters.handshake_failures, user_label (server, id), reason);
}

static const char *
error_code_reason (GtErrorCode code)
{
  switch (code)
    {
    case GT_ERROR_CODE_INVALID_AUTH: return "invalid_auth";
    case GT_ERROR_CODE_PORT_UNAVAILABLE: return "port_unavailable";
    case GT_ERROR_CODE_TOO_MANY_TUNNELS: return "connections";
    case GT_ERROR_CODE_HOST_NUMBER: return "host_number";
    case GT_ERROR_CODE_HOST_CONFLICT: return "host_conflict";
    case GT_ERROR_CODE_HOST_REGEX: return "host_regex";
    case GT_ERROR_CODE_CONFIG_CONFLICT: return "config_conflict";
    case GT_ERROR_CODE_TOO_MANY_OPTIONS: return "max_options";
    case GT_ERROR_CODE_TCP_NUMBER: return "tcp_number";
    case GT_ERROR_CODE_UDP_NUMBER: return "udp_number";
    case GT_ERROR_CODE_UNSUPPORTED_VERSION: return "version";
    case GT_ERROR_CODE_PROTOCOL: return "protocol";
    default: return "other";
    }
}

static gboolean
is_limit_code (GtErrorCode code)
{
  return code == GT_ERROR_CODE_TOO_MANY_TUNNELS || code == GT_ERROR_CODE_HOST_NUMBER
         || code == GT_ERROR_CODE_HOST_REGEX || code == GT_ERROR_CODE_TOO_MANY_OPTIONS
         || code == GT_ERROR_CODE_TCP_NUMBER || code == GT_ERROR_CODE_UDP_NUMBER
         || code == GT_ERROR_CODE_PORT_UNAVAILABLE;
}

void
_gt_server_count_refusal (GtServer *server, const char *id, GtErrorCode code)
{
  const char *reason = error_code_reason (code);

  count_in (server->counters.handshake_failures, user_label (server, id), reason);
  if (is_limit_code (code))
    count_in (server->counters.limit_rejections, user_label (server, id), reason);
}

static GtServerTraffic
traffic_sum (GHashTable *done, GHashTable *live, const char *key)
{
  GtServerTraffic sum = { 0 };
  GtServerTraffic *a = g_hash_table_lookup (done, key);
  GtServerTraffic *b = g_hash_table_lookup (live, key);

  if (a)
    {
      sum.bytes_in += a->bytes_in;
      sum.bytes_out += a->bytes_out;
      sum.streams += a->streams;
    }
  if (b)
    {
      sum.bytes_in += b->bytes_in;
      sum.bytes_out += b->bytes_out;
    }
  return sum;
}

static void
write_split_counter (GString *out, const char *name, GHashTable *table, const char *second)
{
  GHashTableIter iter;
  gpointer key, value;

  g_hash_table_iter_init (&iter, table);
  while (g_hash_table_iter_next (&iter, &key, &value))
    {
      g_auto (GStrv) parts = g_strsplit (key, "\x1f", 2);
      const char *labels[] = { "user", parts[0], second, parts[1] ? parts[1] : "", NULL };

      gt_metrics_write_sample (out, name, labels, (double) *(guint64 *) value);
    }
}

typedef struct
{
  GHashTable *user_live;    /* id → GtServerTraffic* of open streams */
  GHashTable *service_live; /* "id\x1flabel" → GtServerTraffic* */
  GtServerSession *session;
} LiveScan;

static void
live_stream_cb (GtMuxStream *stream, gpointer user_data)
{
  LiveScan *scan = user_data;

  traffic_add (scan->user_live, scan->service_live, scan->session, stream);
}

static void
add_keys (GHashTable *set, GHashTable *table)
{
  GHashTableIter iter;
  gpointer key;

  g_hash_table_iter_init (&iter, table);
  while (g_hash_table_iter_next (&iter, &key, NULL))
    g_hash_table_add (set, key);
}

void
gt_server_get_traffic (GtServer *server, GtTraffic *traffic)
{
  GHashTableIter iter;
  gpointer value;

  g_return_if_fail (GT_IS_SERVER (server));
  g_return_if_fail (traffic != NULL);

  memset (traffic, 0, sizeof *traffic);
  g_hash_table_iter_init (&iter, server->counters.user_traffic);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      GtServerTraffic *t = value;

      traffic->bytes_in += t->bytes_in;
      traffic->bytes_out += t->bytes_out;
      traffic->streams_total += t->streams;
    }
  g_hash_table_iter_init (&iter, gt_server_registry_get_sessions (server->registry));
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      GtServerSession *s = value;
      g_autoptr (GHashTable) users = NULL;
      g_autoptr (GHashTable) services = NULL;
      LiveScan scan;
      GtServerTraffic *t;

      if (s->ephemeral)
        continue;
      users = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
      services = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
      scan = (LiveScan){ users, services, s };
      traffic->tunnels += s->tunnels->len;
      for (guint i = 0; i < s->tunnels->len; i++)
        gt_mux_foreach_stream (s->tunnels->pdata[i], live_stream_cb, &scan);
      t = g_hash_table_lookup (users, s->id);
      if (t != NULL)
        {
          traffic->streams += t->streams;
          traffic->streams_total += t->streams;
          traffic->bytes_in += t->bytes_in;
          traffic->bytes_out += t->bytes_out;
        }
    }
}

/* Prometheus text for GET /metrics. */
char *
gt_server_render_metrics (GtServer *server)
{
  GtServerCounters *counters;
  GHashTable *sessions;
  GString *out;
  g_autoptr (GHashTable) user_live = NULL;
  g_autoptr (GHashTable) service_live = NULL;
  g_autoptr (GHashTable) users = NULL;
  g_autoptr (GHashTable) services = NULL;
  GHashTableIter iter;
  gpointer key, value;

  g_return_val_if_fail (GT_IS_SERVER (server), NULL);

  counters = &server->counters;
  sessions = gt_server_registry_get_sessions (server->registry);
  out = g_string_new (NULL);
  user_live = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  service_live = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  users = g_hash_table_new (g_str_hash, g_str_equal);
  services = g_hash_table_new (g_str_hash, g_str_equal);

  g_hash_table_iter_init (&iter, sessions);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      LiveScan scan = { user_live, service_live, value };

      if (scan.session->ephemeral)
        continue;
      for (guint i = 0; i < scan.session->tunnels->len; i++)
        gt_mux_foreach_stream (scan.session->tunnels->pdata[i], live_stream_cb, &scan);
    }
  add_keys (users, counters->user_traffic);
  add_keys (users, user_live);
  add_keys (services, counters->service_traffic);
  add_keys (services, service_live);

  gt_metrics_write_family (out, "gt_clients", "gauge", "Clients connected.");
  gt_metrics_write_sample (out, "gt_clients", NULL, g_hash_table_size (sessions));

  gt_metrics_write_family (out, "gt_tunnels", "gauge", "Open tunnels per user.");
  gt_metrics_write_family (out, "gt_streams", "gauge", "Open streams per user.");
  g_hash_table_iter_init (&iter, sessions);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      GtServerSession *s = value;
      const char *labels[] = { "user", s->id, NULL };

      if (s->ephemeral)
        continue;
      gt_metrics_write_sample (out, "gt_tunnels", labels, s->tunnels->len);
      gt_metrics_write_sample (out, "gt_streams", labels, gt_server_session_get_n_streams (s));
    }

  gt_metrics_write_family (out, "gt_user_bytes_total", "counter",
                           "Bytes relayed per user: in = from users to the service, out = back.");
  gt_metrics_write_family (out, "gt_user_streams_total", "counter", "Streams finished per user.");
  g_hash_table_iter_init (&iter, users);
  while (g_hash_table_iter_next (&iter, &key, NULL))
    {
      GtServerTraffic t = traffic_sum (counters->user_traffic, user_live, key);
      const char *in[] = { "user", key, "direction", "in", NULL };
      const char *outl[] = { "user", key, "direction", "out", NULL };
      const char *plain[] = { "user", key, NULL };

      gt_metrics_write_sample (out, "gt_user_bytes_total", in, (double) t.bytes_in);
      gt_metrics_write_sample (out, "gt_user_bytes_total", outl, (double) t.bytes_out);
      gt_metrics_write_sample (out, "gt_user_streams_total", plain, (double) t.streams);
    }

  gt_metrics_write_family (out, "gt_service_bytes_total", "counter",
                           "Bytes relayed per service (host prefix or tcp:port).");
  gt_metrics_write_family (out, "gt_service_streams_total", "counter",
                           "Streams finished per service.");
  g_hash_table_iter_init (&iter, services);
  while (g_hash_table_iter_next (&iter, &key, NULL))
    {
      GtServerTraffic t = traffic_sum (counters->service_traffic, service_live, key);
      g_auto (GStrv) parts = g_strsplit (key, "\x1f", 2);
      const char *in[] = { "user", parts[0], "service", parts[1], "direction", "in", NULL };
      const char *outl[] = { "user", parts[0], "service", parts[1], "direction", "out", NULL };
      const char *plain[] = { "user", parts[0], "service", parts[1], NULL };

      gt_metrics_write_sample (out, "gt_service_bytes_total", in, (double) t.bytes_in);
      gt_metrics_write_sample (out, "gt_service_bytes_total", outl, (double) t.bytes_out);
      gt_metrics_write_sample (out, "gt_service_streams_total", plain, (double) t.streams);
    }

  gt_metrics_write_family (out, "gt_handshake_failures_total", "counter",
                           "Refused tunnel handshakes by reason (user label only for configured "
                           "users).");
  write_split_counter (out, "gt_handshake_failures_total", counters->handshake_failures,
                       "reason");
  gt_metrics_write_family (out, "gt_limit_rejections_total", "counter",
                           "Tunnels refused by a limit, by kind.");
  write_split_counter (out, "gt_limit_rejections_total", counters->limit_rejections, "kind");

  gt_metrics_write_family (out, "gt_udp_flows", "gauge",
                           "UDP flows (user sources of udp services) kept now, per user.");
  g_hash_table_iter_init (&iter, sessions);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      GtServerSession *s = value;
      const char *labels[] = { "user", s->id, NULL };

      if (!s->ephemeral && s->udp_ports->len > 0)
        gt_metrics_write_sample (out, "gt_udp_flows", labels,
                                 gt_server_session_get_n_udp_flows (s));
    }
  gt_metrics_write_family (out, "gt_udp_flows_total", "counter", "UDP flows started.");
  gt_metrics_write_sample (out, "gt_udp_flows_total", NULL, (double) counters->udp_flows);
  gt_metrics_write_family (out, "gt_udp_datagrams_total", "counter",
                           "Datagrams of udp services: in = from users, out = back to users, "
                           "dropped = not relayed (a tunnel backed up, a send error).");
  {
    const char *in[] = { "direction", "in", NULL };
    const char *outl[] = { "direction", "out", NULL };
    const char *dropped[] = { "direction", "dropped", NULL };

    gt_metrics_write_sample (out, "gt_udp_datagrams_total", in, (double) counters->udp_in);
    gt_metrics_write_sample (out, "gt_udp_datagrams_total", outl, (double) counters->udp_out);
    gt_metrics_write_sample (out, "gt_udp_datagrams_total", dropped,
                             (double) counters->udp_dropped);
  }

  gt_metrics_write_family (out, "gt_lockout_blocked_addresses", "gauge",
                           "Addresses refused after too many failed logins.");
  gt_metrics_write_sample (out, "gt_lockout_blocked_addresses", NULL,
                           gt_lockout_get_n_blocked (server->lockout, g_get_monotonic_time ()));
  gt_metrics_write_family (out, "gt_process_open_fds", "gauge", "Open file descriptors.");
  gt_metrics_write_sample (out, "gt_process_open_fds", NULL, gt_process_open_fds ());
  gt_metrics_write_family (out, "gt_process_resident_memory_bytes", "gauge", "Resident memory.");
  gt_metrics_write_sample (out, "gt_process_resident_memory_bytes", NULL,
                           (double) gt_process_rss_bytes ());
  return g_string_free (out, FALSE);
}
