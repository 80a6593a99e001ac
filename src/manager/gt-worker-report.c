/* gt-worker-report.c: the per-tunnel and per-stream counters a worker sends to its manager
 * (GT_DETAILS= on the notify socket), and their checked decoding on the manager's side. */
#include "config.h"

#define G_LOG_DOMAIN "gt-manager"

#include <gio/gio.h>
#include <string.h>

#include "gt-worker-report.h"

static const char *
lookup_string (GVariant *dict, const char *key)
{
  const char *value = "";

  if (dict != NULL)
    g_variant_lookup (dict, key, "&s", &value);
  return value;
}

static guint32
lookup_u32 (GVariant *dict, const char *key)
{
  guint32 value = 0;

  g_variant_lookup (dict, key, "u", &value);
  return value;
}

static guint64
lookup_u64 (GVariant *dict, const char *key)
{
  guint64 value = 0;

  g_variant_lookup (dict, key, "t", &value);
  return value;
}

typedef struct
{
  GVariantBuilder connections;
  GVariantBuilder streams;
  guint n_connections;
  guint n_streams;
  guint max;
} Build;

/* tunnels: aa{sv} with index, streams, bytesIn, bytesOut and peer (server) or remote and state
 * (client). */
static void
add_connections (Build *b, const char *client, GVariant *tunnels, gboolean server)
{
  GVariantIter iter;
  GVariant *t;

  if (tunnels == NULL)
    return;
  g_variant_iter_init (&iter, tunnels);
  while (b->n_connections < b->max && (t = g_variant_iter_next_value (&iter)) != NULL)
    {
      g_variant_builder_add (&b->connections, GT_WORKER_CONNECTION_TYPE, client,
                             lookup_u32 (t, "index"),
                             lookup_string (t, server ? "peer" : "remote"),
                             server ? "open" : lookup_string (t, "state"),
                             lookup_u32 (t, "streams"), lookup_u64 (t, "bytesIn"),
                             lookup_u64 (t, "bytesOut"));
      b->n_connections++;
      g_variant_unref (t);
    }
}

/* streams: aa{sv} with id, tunnel, service, remote, bytesIn, bytesOut. */
static void
add_streams (Build *b, const char *client, GVariant *streams)
{
  GVariantIter iter;
  GVariant *s;

  if (streams == NULL)
    return;
  g_variant_iter_init (&iter, streams);
  while (b->n_streams < b->max && (s = g_variant_iter_next_value (&iter)) != NULL)
    {
      g_variant_builder_add (&b->streams, GT_WORKER_STREAM_TYPE, client,
                             lookup_u32 (s, "tunnel"), lookup_u32 (s, "id"),
                             lookup_string (s, "service"), lookup_string (s, "remote"),
                             lookup_u64 (s, "bytesIn"), lookup_u64 (s, "bytesOut"));
      b->n_streams++;
      g_variant_unref (s);
    }
}

GVariant *
gt_worker_details_build (GVariant *state, guint max)
{
  Build b = { .max = max };
  const char *kind = NULL;

  g_return_val_if_fail (state != NULL, NULL);
  g_return_val_if_fail (g_variant_is_of_type (state, G_VARIANT_TYPE_VARDICT), NULL);

  g_variant_builder_init (&b.connections, G_VARIANT_TYPE ("a" GT_WORKER_CONNECTION_TYPE));
  g_variant_builder_init (&b.streams, G_VARIANT_TYPE ("a" GT_WORKER_STREAM_TYPE));
  g_variant_lookup (state, "kind", "&s", &kind);
  if (g_strcmp0 (kind, "server") == 0)
    {
      g_autoptr (GVariant) clients = g_variant_lookup_value (state, "clients",
                                                             G_VARIANT_TYPE ("aa{sv}"));
      GVariantIter iter;
      GVariant *c;

      if (clients != NULL)
        {
          g_variant_iter_init (&iter, clients);
          while ((c = g_variant_iter_next_value (&iter)) != NULL)
            {
              g_autoptr (GVariant) tunnels = g_variant_lookup_value (c, "tunnels",
                                                                     G_VARIANT_TYPE ("aa{sv}"));
              g_autoptr (GVariant) streams = g_variant_lookup_value (c, "streams",
                                                                     G_VARIANT_TYPE ("aa{sv}"));
              const char *id = lookup_string (c, "id");

              add_connections (&b, id, tunnels, TRUE);
              add_streams (&b, id, streams);
              g_variant_unref (c);
            }
        }
    }
  else
    {
      g_autoptr (GVariant) tunnels = g_variant_lookup_value (state, "tunnelList",
                                                             G_VARIANT_TYPE ("aa{sv}"));
      g_autoptr (GVariant) streams = g_variant_lookup_value (state, "streamList",
                                                             G_VARIANT_TYPE ("aa{sv}"));
      const char *id = lookup_string (state, "id");

      add_connections (&b, id, tunnels, FALSE);
      add_streams (&b, id, streams);
    }
  return g_variant_ref_sink (g_variant_new ("(" "@a" GT_WORKER_CONNECTION_TYPE
                                            "@a" GT_WORKER_STREAM_TYPE ")",
                                            g_variant_builder_end (&b.connections),
                                            g_variant_builder_end (&b.streams)));
}

char *
gt_worker_details_line (GVariant *state)
{
  g_return_val_if_fail (state != NULL, NULL);

  for (guint max = GT_WORKER_DETAILS_MAX_ENTRIES;; max /= 2)
    {
      g_autoptr (GVariant) details = gt_worker_details_build (state, max);
      g_autofree char *encoded = g_base64_encode (g_variant_get_data (details),
                                                  g_variant_get_size (details));

      if (strlen ("GT_DETAILS=") + strlen (encoded) <= GT_WORKER_DETAILS_MAX_LINE || max == 0)
        return g_strconcat ("GT_DETAILS=", encoded, NULL);
    }
}

GVariant *
gt_worker_details_parse (const char *value, GError **error)
{
  g_autoptr (GVariant) raw = NULL;
  g_autoptr (GVariant) connections = NULL;
  g_autoptr (GVariant) streams = NULL;
  gsize value_len, len = 0;
  guchar *data;

  g_return_val_if_fail (value != NULL, NULL);

  value_len = strlen (value);
  if (value_len > GT_WORKER_DETAILS_MAX_LINE || value_len % 4 != 0
      || strspn (value, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
           != value_len)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                           "GT_DETAILS: not base64 of at most 60 KiB");
      return NULL;
    }
  data = g_base64_decode (value, &len);
  raw = g_variant_ref_sink (g_variant_new_from_data (G_VARIANT_TYPE (GT_WORKER_DETAILS_TYPE),
                                                     data, len, FALSE, g_free, data));
  if (!g_variant_is_normal_form (raw))
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                           "GT_DETAILS: not a serialized " GT_WORKER_DETAILS_TYPE);
      return NULL;
    }
  connections = g_variant_get_child_value (raw, 0);
  streams = g_variant_get_child_value (raw, 1);
  if (g_variant_n_children (connections) > GT_WORKER_DETAILS_MAX_ENTRIES
      || g_variant_n_children (streams) > GT_WORKER_DETAILS_MAX_ENTRIES)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                   "GT_DETAILS: more than %u entries", GT_WORKER_DETAILS_MAX_ENTRIES);
      return NULL;
    }
  return g_steal_pointer (&raw);
}

GVariant *
gt_worker_details_empty (void)
{
  return g_variant_ref_sink (g_variant_new_parsed ("@" GT_WORKER_DETAILS_TYPE " ([], [])"));
}
