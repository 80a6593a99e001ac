/* gt-server-cluster.c: scale-out on etcd: the lease and its keep-alive, claims made by
 * transaction and released on disconnect, the routing cache (range + watch), and node-to-node
 * tunnels, outbound (this node opens streams) and inbound (streams adopted as connections). */
#include "config.h"

#define G_LOG_DOMAIN "gt-cluster"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-etcd.h"
#include "gt-server-cluster.h"
#include "gt-transport.h"

/* Each etcd request waits at most this long for one member. */
#define ETCD_TIMEOUT_MS 2000
/* The routing cache is rebuilt this long after its watch ended. */
#define RESYNC_MS 1000
/* Connections waiting for a node tunnel to come up, per node. */
#define MAX_WAITING 1024
/* A node tunnel that is not up after this long is given up (its waiting users get a 502). */
#define PEER_CONNECT_MS 5000
/* A watch that etcd has not confirmed after this long is dropped and made again. */
#define WATCH_CREATE_MS 5000

typedef enum
{
  OP_CLAIM,
  OP_RELEASE,
} OpKind;

typedef struct
{
  OpKind kind;
  GTask *task;          /* claims: the caller's */
  gpointer owner;       /* a GtServerSession (tag: never dereferenced after release) */
  GPtrArray *keys;      /* char* */
  GPtrArray *values;    /* char* (claims) */
  guint attempts;
} Op;

typedef struct
{
  GtListenerKind kind;
  int fd;
  GIOStream *io;
  guint8 *data;
  gsize len;
  GtOpenAddr addr;
  gboolean has_addr;
  guint64 timeout_ms;
} Waiter;

typedef struct
{
  GtCluster *cluster;
  char *node;
  char *advertise;
  GtMux *mux;           /* ready tunnel, else NULL while connecting */
  GIOStream *io;        /* during the handshake */
  GCancellable *cancellable;
  GByteArray *buf;
  GQueue waiting;       /* Waiter* */
  guint timeout_id;
} Peer;

struct _GtCluster
{
  const GtServerConfig *config;
  GtEtcd *etcd;
  GtClusterAdoptFunc adopt;
  gpointer adopt_data;
  GCancellable *cancellable;

  gint64 lease;         /* 0 = none (yet, or lost) */
  gboolean granting;
  gboolean keepalive_busy;
  gboolean registry_up;
  gboolean node_claiming;
  gboolean node_announced; /* nodes/<node> is ours */
  guint keepalive_id;

  GHashTable *held;     /* key → owner tag (GtServerSession*, or the cluster for the node key) */
  GHashTable *owners;   /* owner tag → its GtServerSession* while held (for losing it) */
  GHashTable *unreleased; /* keys whose release failed (etcd down): retried when it is back */
  GQueue ops;
  gboolean op_running;

  GHashTable *hosts;    /* "kind/prefix" → node name */
  GHashTable *nodes;    /* node name → advertise address */
  GtEtcdWatch *watch;
  guint watch_timer_id;
  guint resync_id;
  gboolean syncing;

  GHashTable *peers;    /* node → Peer* */
  GPtrArray *inbound;   /* GtMux* */
  char *node_key;
};

static void op_run_next (GtCluster *cluster);
static void cluster_sync (GtCluster *cluster);

gboolean
gt_hello_is_node (const GtHello *hello)
{
  return hello->services->len == 1
         && ((const GtHelloService *) hello->services->pdata[0])->kind == GT_SERVICE_KIND_NODE;
}

static char *
key_for (GtCluster *cluster, const char *what, const char *name)
{
  return g_strconcat (cluster->config->cluster_prefix, what, name, NULL);
}

/* A human description of a claimed key, for refusals. */
static char *
describe_key (GtCluster *cluster, const char *key, const char *node)
{
  const char *rest = key + strlen (cluster->config->cluster_prefix);

  if (g_str_has_prefix (rest, "clients/"))
    return g_strdup_printf ("client id '%s' is connected to node %s", rest + 8, node);
  if (g_str_has_prefix (rest, "hosts/") && strlen (rest) > 8)
    return g_strdup_printf ("host prefix '%s' is held by node %s", rest + 8, node);
  if (g_str_has_prefix (rest, "ports/"))
    return g_strdup_printf ("tcp port %s is held by node %s", rest + 6, node);
  if (g_str_has_prefix (rest, "udp-ports/"))
    return g_strdup_printf ("udp port %s is held by node %s", rest + 10, node);
  return g_strdup_printf ("%s is held by node %s", rest, node);
}

/* ------------------------------------------------------------------------------------------ */
/* Ops: claims and releases, one at a time so that a release and a new claim of the same key by
 * this node reach etcd in order. */

static void
op_free (Op *op)
{
  g_clear_object (&op->task);
  g_ptr_array_unref (op->keys);
  if (op->values)
    g_ptr_array_unref (op->values);
  g_free (op);
}

static void
op_done (GtCluster *cluster, Op *op)
{
  op_free (op);
  cluster->op_running = FALSE;
  op_run_next (cluster);
}

typedef struct
{
  GtErrorCode code;
  char *message;
} ClaimResult;

static void
claim_result_free (ClaimResult *r)
{
  g_free (r->message);
  g_free (r);
}

static void
op_claim_return (Op *op, GtErrorCode code, char *message)
{
  ClaimResult *r = g_new0 (ClaimResult, 1);

  r->code = code;
  r->message = message;
  g_task_return_pointer (op->task, r, (GDestroyNotify) claim_result_free);
}

static void
set_registry_up (GtCluster *cluster, gboolean up, const char *why)
{
  if (up == cluster->registry_up)
    return;
  cluster->registry_up = up;
  if (up)
    g_message ("etcd is reachable again: new claims are accepted");
  else
    g_warning ("etcd is unreachable (%s): held routes keep working, new clients are refused "
               "until it is back",
               why);
}

static void op_claim_send (GtCluster *cluster, Op *op);

static void
claim_txn_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Op *op = user_data;
  GtCluster *cluster;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonObject) object = NULL;
  g_autoptr (GPtrArray) kvs = NULL;
  gboolean succeeded = FALSE;
  gboolean retry = FALSE;

  object = gt_etcd_call_finish (NULL, result, &error);
  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    {
      /* The cluster is gone. */
      g_task_return_error (op->task, g_steal_pointer (&error));
      op_free (op);
      return;
    }
  cluster = g_task_get_task_data (op->task);
  if (object != NULL)
    kvs = gt_etcd_parse_txn (object, &succeeded, &error);
  if (kvs == NULL)
    {
      if (g_error_matches (error, GT_ETCD_ERROR, GT_ETCD_ERROR_UNAVAILABLE))
        set_registry_up (cluster, FALSE, error->message);
      op_claim_return (op, GT_ERROR_CODE_REGISTRY_UNAVAILABLE,
                       g_strdup_printf ("the cluster registry cannot take the claim now (%s); "
                                        "try again later",
                                        error->message));
      op_done (cluster, op);
      return;
    }
  set_registry_up (cluster, TRUE, NULL);
  if (succeeded)
    {
      for (guint i = 0; i < op->keys->len; i++)
        g_hash_table_replace (cluster->held, g_strdup (op->keys->pdata[i]), op->owner);
      op_claim_return (op, GT_ERROR_CODE_NONE, NULL);
      op_done (cluster, op);
      return;
    }
  /* Some key exists: ours (this lease: a claim of the same session that ran first) or not. */
  for (guint i = 0; i < kvs->len; i++)
    {
      GtEtcdKv *kv = kvs->pdata[i];

      if (kv->lease != cluster->lease || kv->lease == 0)
        {
          op_claim_return (op, GT_ERROR_CODE_ELSEWHERE,
                           describe_key (cluster, kv->key, kv->value));
          op_done (cluster, op);
          return;
        }
      for (guint k = 0; k < op->keys->len; k++)
        if (strcmp (op->keys->pdata[k], kv->key) == 0)
          {
            g_hash_table_replace (cluster->held, g_strdup (kv->key), op->owner);
            g_ptr_array_remove_index (op->keys, k);
            g_ptr_array_remove_index (op->values, k);
            retry = TRUE;
            break;
          }
    }
  if (!retry || ++op->attempts > 3)
    {
      op_claim_return (op, GT_ERROR_CODE_REGISTRY_UNAVAILABLE,
                       g_strdup ("the claim kept changing in the cluster registry; try again"));
      op_done (cluster, op);
      return;
    }
  op_claim_send (cluster, op);
}

static void
op_claim_send (GtCluster *cluster, Op *op)
{
  g_autoptr (JsonNode) body = NULL;

  /* What this owner already holds costs nothing. */
  for (guint i = op->keys->len; i-- > 0;)
    if (g_hash_table_lookup (cluster->held, op->keys->pdata[i]) == op->owner)
      {
        g_ptr_array_remove_index (op->keys, i);
        g_ptr_array_remove_index (op->values, i);
      }
  if (op->keys->len == 0)
    {
      op_claim_return (op, GT_ERROR_CODE_NONE, NULL);
      op_done (cluster, op);
      return;
    }
  if (cluster->lease == 0)
    {
      op_claim_return (op, GT_ERROR_CODE_REGISTRY_UNAVAILABLE,
                       g_strdup ("the cluster registry (etcd) is unreachable; try again later"));
      op_done (cluster, op);
      return;
    }
  g_ptr_array_add (op->keys, NULL);
  g_ptr_array_add (op->values, NULL);
  body = gt_etcd_body_claim ((const char *const *) op->keys->pdata,
                             (const char *const *) op->values->pdata, cluster->lease);
  g_ptr_array_set_size (op->keys, op->keys->len - 1);
  g_ptr_array_set_size (op->values, op->values->len - 1);
  gt_etcd_call_async (cluster->etcd, "/v3/kv/txn", body, cluster->cancellable, claim_txn_cb, op);
}

static void
release_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Op *op = user_data;
  GtCluster *cluster = op->owner;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonObject) object = gt_etcd_call_finish (NULL, result, &error);

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    {
      op_free (op);
      return;
    }
  if (object == NULL)
    {
      /* Retried when etcd is back; until then the key stays under our living lease. */
      g_hash_table_add (cluster->unreleased, g_strdup (op->keys->pdata[0]));
      if (g_error_matches (error, GT_ETCD_ERROR, GT_ETCD_ERROR_UNAVAILABLE))
        set_registry_up (cluster, FALSE, error->message);
    }
  op_done (cluster, op);
}

static void
op_run_next (GtCluster *cluster)
{
  Op *op;

  if (cluster->op_running || (op = g_queue_pop_head (&cluster->ops)) == NULL)
    return;
  cluster->op_running = TRUE;
  if (op->kind == OP_CLAIM)
    op_claim_send (cluster, op);
  else
    {
      g_autoptr (JsonNode) body = NULL;

      /* A key taken again by a newer local claim since is no longer ours to delete. */
      if (cluster->lease == 0 || g_hash_table_contains (cluster->held, op->keys->pdata[0]))
        {
          op_done (cluster, op);
          return;
        }
      body = gt_etcd_body_release (op->keys->pdata[0], cluster->lease);
      gt_etcd_call_async (cluster->etcd, "/v3/kv/txn", body, cluster->cancellable, release_cb,
                          op);
    }
}

static void
queue_release (GtCluster *cluster, const char *key)
{
  Op *op = g_new0 (Op, 1);

  op->kind = OP_RELEASE;
  op->owner = cluster;
  op->keys = g_ptr_array_new_with_free_func (g_free);
  g_ptr_array_add (op->keys, g_strdup (key));
  g_queue_push_tail (&cluster->ops, op);
  op_run_next (cluster);
}

static void
session_keys (GtCluster *cluster, GtServerSession *session, GPtrArray *keys, GPtrArray *values)
{
  const char *node = cluster->config->cluster_node;

  g_ptr_array_add (keys, key_for (cluster, "clients/", session->id));
  g_ptr_array_add (values, g_strdup (node));
  for (guint i = 0; i < session->routes->len; i++)
    {
      GtServerRoute *route = session->routes->pdata[i];
      g_autofree char *name = g_strdup_printf ("%u/%s", route->kind, route->key);

      g_ptr_array_add (keys, key_for (cluster, "hosts/", name));
      g_ptr_array_add (values, g_strdup (node));
    }
  for (guint i = 0; i < session->ports->len; i++)
    {
      GtWelcomePort *port = &g_array_index (session->ports, GtWelcomePort, i);
      g_autofree char *name = g_strdup_printf ("%u", port->port);
      /* A UDP port is another resource than the TCP port of the same number. */
      gboolean udp = gt_server_session_has_udp_port (session, port->port);

      g_ptr_array_add (keys, key_for (cluster, udp ? "udp-ports/" : "ports/", name));
      g_ptr_array_add (values, g_strdup (node));
    }
}

void
gt_cluster_claim_async (GtCluster *cluster, GtServerSession *session, GCancellable *cancellable,
                        GAsyncReadyCallback callback, gpointer user_data)
{
  Op *op = g_new0 (Op, 1);

  op->kind = OP_CLAIM;
  op->task = g_task_new (NULL, cancellable ? cancellable : cluster->cancellable, callback,
                         user_data);
  g_task_set_source_tag (op->task, gt_cluster_claim_async);
  g_task_set_task_data (op->task, cluster, NULL);
  op->owner = session;
  op->keys = g_ptr_array_new_with_free_func (g_free);
  op->values = g_ptr_array_new_with_free_func (g_free);
  session_keys (cluster, session, op->keys, op->values);
  g_hash_table_replace (cluster->owners, session, session);
  g_queue_push_tail (&cluster->ops, op);
  op_run_next (cluster);
}

GtErrorCode
gt_cluster_claim_finish (GtCluster *cluster, GAsyncResult *result, char **message)
{
  g_autoptr (GError) error = NULL;
  ClaimResult *r = g_task_propagate_pointer (G_TASK (result), &error);
  GtErrorCode code;

  if (r == NULL)
    {
      *message = g_strdup (error->message);
      return GT_ERROR_CODE_INTERNAL;
    }
  code = r->code;
  *message = g_steal_pointer (&r->message);
  claim_result_free (r);
  return code;
}

void
gt_cluster_release (GtCluster *cluster, GtServerSession *session)
{
  g_autoptr (GPtrArray) keys = g_ptr_array_new_with_free_func (g_free);
  GHashTableIter iter;
  gpointer key, owner;

  g_hash_table_remove (cluster->owners, session);
  g_hash_table_iter_init (&iter, cluster->held);
  while (g_hash_table_iter_next (&iter, &key, &owner))
    if (owner == session)
      {
        g_ptr_array_add (keys, g_strdup (key));
        g_hash_table_iter_remove (&iter);
      }
  for (guint i = 0; i < keys->len; i++)
    queue_release (cluster, keys->pdata[i]);
}

/* ------------------------------------------------------------------------------------------ */
/* Lease */

static void
reclaim_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GtServerSession) session = user_data;
  g_autofree char *message = NULL;
  GtErrorCode code = gt_cluster_claim_finish (NULL, result, &message);

  /* Taken by another node while this one had no lease: its client must go there. */
  if (code == GT_ERROR_CODE_ELSEWHERE)
    {
      g_message ("client %s lost its claim: %s", session->id, message);
      gt_server_session_close_tunnels (session, code, message);
    }
}

static void
lease_reclaim (GtCluster *cluster)
{
  g_autoptr (GHashTable) by_owner = g_hash_table_new_full (NULL, NULL, NULL, NULL);
  GHashTableIter iter;
  gpointer key, owner;

  /* A new lease: every key this node held is claimed again (they vanished with the old one). */
  g_hash_table_iter_init (&iter, cluster->held);
  while (g_hash_table_iter_next (&iter, &key, &owner))
    g_hash_table_add (by_owner, owner);
  g_hash_table_remove_all (cluster->held);
  g_hash_table_remove_all (cluster->unreleased);
  g_hash_table_iter_init (&iter, by_owner);
  while (g_hash_table_iter_next (&iter, &owner, NULL))
    {
      GtServerSession *session = g_hash_table_lookup (cluster->owners, owner);

      if (session != NULL)
        gt_cluster_claim_async (cluster, session, NULL, reclaim_cb, g_object_ref (session));
    }
}

static void node_claim (GtCluster *cluster);

static void
grant_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GtCluster *cluster = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonObject) object = gt_etcd_call_finish (NULL, result, &error);
  gint64 id = 0, ttl = 0;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  cluster->granting = FALSE;
  if (object == NULL || !gt_etcd_parse_lease (object, &id, &ttl, &error) || id == 0 || ttl <= 0)
    {
      set_registry_up (cluster, FALSE, error ? error->message : "no lease granted");
      return; /* the keep-alive timer tries again */
    }
  cluster->lease = id;
  cluster->node_announced = FALSE;
  set_registry_up (cluster, TRUE, NULL);
  g_message ("cluster node %s holds etcd lease %" G_GINT64_MODIFIER "x (ttl %" G_GINT64_FORMAT
             " s)",
             cluster->config->cluster_node, id, ttl);
  node_claim (cluster);
  lease_reclaim (cluster);
}

static void
lease_grant (GtCluster *cluster)
{
  g_autoptr (JsonNode) body = NULL;

  if (cluster->granting)
    return;
  cluster->granting = TRUE;
  body = gt_etcd_body_lease_grant ((gint64) MAX (2, cluster->config->cluster_ttl_ms / 1000));
  gt_etcd_call_async (cluster->etcd, "/v3/lease/grant", body, cluster->cancellable, grant_cb,
                      cluster);
}

static void
flush_unreleased (GtCluster *cluster)
{
  g_autoptr (GPtrArray) keys = g_ptr_array_new_with_free_func (g_free);
  GHashTableIter iter;
  gpointer key;

  g_hash_table_iter_init (&iter, cluster->unreleased);
  while (g_hash_table_iter_next (&iter, &key, NULL))
    g_ptr_array_add (keys, g_strdup (key));
  g_hash_table_remove_all (cluster->unreleased);
  for (guint i = 0; i < keys->len; i++)
    queue_release (cluster, keys->pdata[i]);
}

static void
keepalive_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GtCluster *cluster = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonObject) object = gt_etcd_call_finish (NULL, result, &error);
  gint64 id = 0, ttl = 0;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  cluster->keepalive_busy = FALSE;
  if (object == NULL || !gt_etcd_parse_lease (object, &id, &ttl, &error))
    {
      set_registry_up (cluster, FALSE, error->message);
      return;
    }
  if (ttl <= 0)
    {
      g_warning ("etcd lease %" G_GINT64_MODIFIER "x expired: claiming this node's clients "
                 "again under a new one",
                 cluster->lease);
      cluster->lease = 0;
      lease_grant (cluster);
      return;
    }
  set_registry_up (cluster, TRUE, NULL);
  if (!cluster->node_announced)
    node_claim (cluster);
  if (g_hash_table_size (cluster->unreleased) > 0)
    flush_unreleased (cluster);
  if (cluster->watch == NULL && !cluster->syncing && cluster->resync_id == 0)
    cluster_sync (cluster);
}

static gboolean
keepalive_tick_cb (gpointer user_data)
{
  GtCluster *cluster = user_data;
  g_autoptr (JsonNode) body = NULL;

  if (cluster->lease == 0)
    {
      lease_grant (cluster);
      return G_SOURCE_CONTINUE;
    }
  if (cluster->keepalive_busy)
    return G_SOURCE_CONTINUE;
  cluster->keepalive_busy = TRUE;
  body = gt_etcd_body_lease_id (cluster->lease);
  gt_etcd_call_async (cluster->etcd, "/v3/lease/keepalive", body, cluster->cancellable,
                      keepalive_cb, cluster);
  return G_SOURCE_CONTINUE;
}

static void
node_claim_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autofree char *message = NULL;
  GtErrorCode code = gt_cluster_claim_finish (NULL, result, &message);
  GtCluster *cluster = user_data;

  if (code == GT_ERROR_CODE_INTERNAL)
    return; /* stopped: the cluster is gone */
  cluster->node_claiming = FALSE;
  cluster->node_announced = code == GT_ERROR_CODE_NONE;
  /* Not announced: tried again at the next keep-alive (a previous run of this node may still
   * hold the name until its lease expires). */
  if (code == GT_ERROR_CODE_NONE)
    g_message ("cluster node %s is announced at %s", cluster->config->cluster_node,
               cluster->config->cluster_advertise);
  else if (code == GT_ERROR_CODE_ELSEWHERE)
    g_warning ("cluster.node: %s (two nodes must not share a name; trying again)", message);
  else if (code != GT_ERROR_CODE_NONE && code != GT_ERROR_CODE_INTERNAL)
    g_message ("cluster node not announced yet: %s", message);
}

static void
node_claim (GtCluster *cluster)
{
  Op *op = g_new0 (Op, 1);

  op->kind = OP_CLAIM;
  if (cluster->node_claiming)
    {
      g_free (op);
      return;
    }
  cluster->node_claiming = TRUE;
  op->task = g_task_new (NULL, cluster->cancellable, node_claim_cb, cluster);
  g_task_set_task_data (op->task, cluster, NULL);
  op->owner = cluster;
  op->keys = g_ptr_array_new_with_free_func (g_free);
  op->values = g_ptr_array_new_with_free_func (g_free);
  g_ptr_array_add (op->keys, g_strdup (cluster->node_key));
  g_ptr_array_add (op->values, g_strdup (cluster->config->cluster_advertise));
  g_queue_push_tail (&cluster->ops, op);
  op_run_next (cluster);
}

typedef struct
{
  GtCluster *cluster;
  GDestroyNotify done;
  gpointer user_data;
  GCancellable *cancellable;
  guint timer_id;
} Leave;

static gboolean
leave_timeout_cb (gpointer user_data)
{
  Leave *leave = user_data;

  leave->timer_id = 0;
  g_cancellable_cancel (leave->cancellable);
  return G_SOURCE_REMOVE;
}

static void
revoke_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Leave *leave = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonObject) object = gt_etcd_call_finish (NULL, result, &error);
  gboolean gone = g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED)
                  && leave->timer_id != 0; /* cancelled with the cluster, not by the timer */

  g_clear_handle_id (&leave->timer_id, g_source_remove);
  if (!gone)
    {
      const GtServerConfig *config = leave->cluster->config;

      if (object != NULL)
        {
          leave->cluster->lease = 0;
          g_message ("cluster node %s left: its lease and claims are released",
                     config->cluster_node);
        }
      else
        g_message ("cluster node %s left; its claims expire with its lease (%s)",
                   config->cluster_node, error->message);
      leave->done (leave->user_data);
    }
  else if (leave->done != NULL)
    g_message ("cluster node left without giving its lease back");
  g_object_unref (leave->cancellable);
  g_free (leave);
}

static gboolean
leave_nothing_cb (gpointer user_data)
{
  Leave *leave = user_data;

  leave->done (leave->user_data);
  g_object_unref (leave->cancellable);
  g_free (leave);
  return G_SOURCE_REMOVE;
}

void
gt_cluster_leave_async (GtCluster *cluster, GDestroyNotify done, gpointer user_data)
{
  Leave *leave = g_new0 (Leave, 1);
  g_autoptr (JsonNode) body = gt_etcd_body_lease_id (cluster->lease);

  leave->cluster = cluster;
  leave->done = done;
  leave->user_data = user_data;
  leave->cancellable = g_cancellable_new ();
  g_clear_handle_id (&cluster->keepalive_id, g_source_remove);
  if (cluster->lease == 0)
    {
      /* Nothing to give back (etcd was never reached): done at once. */
      g_idle_add_full (G_PRIORITY_DEFAULT, leave_nothing_cb, leave, NULL);
      return;
    }
  leave->timer_id = g_timeout_add (2000, leave_timeout_cb, leave);
  /* Cancelled with the cluster too. */
  g_signal_connect_object (cluster->cancellable, "cancelled",
                           G_CALLBACK (g_cancellable_cancel), leave->cancellable,
                           G_CONNECT_SWAPPED);
  gt_etcd_call_async (cluster->etcd, "/v3/lease/revoke", body, leave->cancellable, revoke_cb,
                      leave);
}

/* ------------------------------------------------------------------------------------------ */
/* Routing cache */

/* Applies one key of the registry to the cache (value NULL: deleted). */
static void
cache_apply (GtCluster *cluster, const char *key, const char *value)
{
  const char *prefix = cluster->config->cluster_prefix;
  const char *rest;
  GHashTable *table;

  if (!g_str_has_prefix (key, prefix))
    return;
  rest = key + strlen (prefix);
  if (g_str_has_prefix (rest, "hosts/"))
    table = cluster->hosts, rest += 6;
  else if (g_str_has_prefix (rest, "nodes/"))
    table = cluster->nodes, rest += 6;
  else
    return;
  if (value != NULL)
    g_hash_table_replace (table, g_strdup (rest), g_strdup (value));
  else
    g_hash_table_remove (table, rest);
}

static void
watch_events_cb (GPtrArray *events, gint64 revision, gpointer user_data)
{
  GtCluster *cluster = user_data;

  g_clear_handle_id (&cluster->watch_timer_id, g_source_remove);
  for (guint i = 0; i < events->len; i++)
    {
      GtEtcdEvent *e = events->pdata[i];

      cache_apply (cluster, e->kv->key, e->type == GT_ETCD_EVENT_PUT ? e->kv->value : NULL);
    }
}

static gboolean
resync_cb (gpointer user_data)
{
  GtCluster *cluster = user_data;

  cluster->resync_id = 0;
  cluster_sync (cluster);
  return G_SOURCE_REMOVE;
}

static void
schedule_resync (GtCluster *cluster)
{
  if (cluster->resync_id == 0)
    cluster->resync_id = g_timeout_add (RESYNC_MS, resync_cb, cluster);
}

static gboolean
watch_free_idle_cb (gpointer data)
{
  gt_etcd_watch_free (data);
  return G_SOURCE_REMOVE;
}

static gboolean
watch_stalled_cb (gpointer user_data)
{
  GtCluster *cluster = user_data;

  cluster->watch_timer_id = 0;
  g_debug ("routing watch not confirmed in time; making it again");
  g_clear_pointer (&cluster->watch, gt_etcd_watch_free);
  schedule_resync (cluster);
  return G_SOURCE_REMOVE;
}

static void
watch_done_cb (const GError *error, gpointer user_data)
{
  GtCluster *cluster = user_data;

  g_clear_handle_id (&cluster->watch_timer_id, g_source_remove);
  g_debug ("routing watch ended: %s", error ? error->message : "?");
  /* Not freed from inside its own callback. */
  g_idle_add (watch_free_idle_cb, g_steal_pointer (&cluster->watch));
  schedule_resync (cluster);
}

static void
range_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GtCluster *cluster = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonObject) object = gt_etcd_call_finish (NULL, result, &error);
  g_autoptr (GPtrArray) kvs = NULL;
  gint64 revision = 0;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  cluster->syncing = FALSE;
  if (object != NULL)
    kvs = gt_etcd_parse_range (object, &revision, &error);
  if (kvs == NULL)
    {
      /* The cache keeps what it knew: held routes on other nodes stay reachable. */
      g_debug ("routing cache not refreshed: %s", error->message);
      schedule_resync (cluster);
      return;
    }
  g_hash_table_remove_all (cluster->hosts);
  g_hash_table_remove_all (cluster->nodes);
  for (guint i = 0; i < kvs->len; i++)
    {
      GtEtcdKv *kv = kvs->pdata[i];

      cache_apply (cluster, kv->key, kv->value);
    }
  cluster->watch = gt_etcd_watch (cluster->etcd, cluster->config->cluster_prefix, revision + 1,
                                  watch_events_cb, watch_done_cb, cluster);
  cluster->watch_timer_id = g_timeout_add (WATCH_CREATE_MS, watch_stalled_cb, cluster);
}

static void
cluster_sync (GtCluster *cluster)
{
  g_autoptr (JsonNode) body = NULL;

  if (cluster->syncing)
    return;
  cluster->syncing = TRUE;
  body = gt_etcd_body_range_prefix (cluster->config->cluster_prefix);
  gt_etcd_call_async (cluster->etcd, "/v3/kv/range", body, cluster->cancellable, range_cb,
                      cluster);
}

/* ------------------------------------------------------------------------------------------ */
/* Outbound node tunnels */

static void
waiter_fail (Waiter *w)
{
  static const char reply[] = "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
                              "Content-Length: 38\r\nConnection: close\r\n\r\n"
                              "the gt node of this host is unreachable\n";

  if (w->fd >= 0)
    gt_socket_reply_and_close (w->fd, w->kind == GT_LISTENER_SNI ? "" : reply,
                               w->kind == GT_LISTENER_SNI ? 0 : sizeof reply - 1);
  if (w->io != NULL)
    {
      g_io_stream_close_async (w->io, G_PRIORITY_DEFAULT, NULL, NULL, NULL);
      g_object_unref (w->io);
    }
  g_free (w->data);
  g_free (w);
}

static void
waiter_send (Peer *peer, Waiter *w)
{
  gt_mux_open_stream_full (peer->mux, (guint16) w->kind, w->fd, w->io, w->data, w->len,
                           w->has_addr ? &w->addr : NULL, NULL, w->timeout_ms);
  g_clear_object (&w->io);
  g_free (w->data);
  g_free (w);
}

static void
peer_free (Peer *peer)
{
  Waiter *w;

  g_clear_handle_id (&peer->timeout_id, g_source_remove);
  if (peer->cancellable)
    {
      g_cancellable_cancel (peer->cancellable);
      g_object_unref (peer->cancellable);
    }
  while ((w = g_queue_pop_head (&peer->waiting)) != NULL)
    waiter_fail (w);
  if (peer->mux)
    {
      g_signal_handlers_disconnect_by_data (peer->mux, peer);
      gt_mux_close (peer->mux, GT_ERROR_CODE_NONE, NULL);
      g_object_unref (peer->mux);
    }
  if (peer->io)
    {
      g_io_stream_close_async (peer->io, G_PRIORITY_DEFAULT, NULL, NULL, NULL);
      g_object_unref (peer->io);
    }
  if (peer->buf)
    g_byte_array_unref (peer->buf);
  g_free (peer->node);
  g_free (peer->advertise);
  g_free (peer);
}

static void
peer_drop (Peer *peer, const char *why)
{
  g_message ("node tunnel to %s (%s) closed: %s", peer->node, peer->advertise, why);
  g_hash_table_remove (peer->cluster->peers, peer->node); /* frees it */
}

static void
peer_mux_closed_cb (GtMux *mux, GError *error, gpointer user_data)
{
  Peer *peer = user_data;

  peer_drop (peer, error ? error->message : "closed");
}

static void peer_read (Peer *peer);

static void
peer_read_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Peer *peer = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) chunk = g_input_stream_read_bytes_finish (G_INPUT_STREAM (source), result,
                                                               &error);
  GtFrameHeader h;
  GtDecodeResult r;
  const guint8 *payload;
  gsize consumed;
  Waiter *w;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  if (chunk == NULL || g_bytes_get_size (chunk) == 0)
    {
      peer_drop (peer, error ? error->message : "closed during the handshake");
      return;
    }
  g_byte_array_append (peer->buf, g_bytes_get_data (chunk, NULL), g_bytes_get_size (chunk));
  r = gt_frame_header_decode (peer->buf->data, peer->buf->len, &h, &error);
  if (r == GT_DECODE_ERROR)
    {
      peer_drop (peer, error->message);
      return;
    }
  if (r == GT_DECODE_NEED_MORE || peer->buf->len < GT_FRAME_HEADER_SIZE + h.length)
    {
      peer_read (peer);
      return;
    }
  payload = peer->buf->data + GT_FRAME_HEADER_SIZE;
  consumed = GT_FRAME_HEADER_SIZE + h.length;
  if (h.type == GT_FRAME_ERROR)
    {
      guint16 code = 0;
      g_autofree char *message = NULL;
      g_autofree char *why = NULL;

      if (gt_error_decode (payload, h.length, &code, &message, NULL))
        why = g_strdup_printf ("refused: %s: %s", gt_error_code_to_string (code),
                               message ? message : "");
      peer_drop (peer, why ? why : "refused");
      return;
    }
  if (h.type != GT_FRAME_WELCOME)
    {
      peer_drop (peer, "no WELCOME");
      return;
    }
  g_clear_handle_id (&peer->timeout_id, g_source_remove);
  peer->mux = gt_mux_new (peer->io, TRUE, peer->buf->data + consumed, peer->buf->len - consumed);
  g_clear_object (&peer->io);
  g_clear_pointer (&peer->buf, g_byte_array_unref);
  gt_mux_set_peer (peer->mux, peer->advertise);
  gt_mux_set_keepalive (peer->mux, peer->cluster->config->timeout_ms,
                        peer->cluster->config->timeout_ms / 2);
  g_signal_connect (peer->mux, "closed", G_CALLBACK (peer_mux_closed_cb), peer);
  gt_mux_start (peer->mux);
  g_message ("node tunnel to %s (%s) is up", peer->node, peer->advertise);
  while ((w = g_queue_pop_head (&peer->waiting)) != NULL)
    waiter_send (peer, w);
}

static void
peer_read (Peer *peer)
{
  g_input_stream_read_bytes_async (g_io_stream_get_input_stream (peer->io), 4096,
                                   G_PRIORITY_DEFAULT, peer->cancellable, peer_read_cb, peer);
}

static void
peer_written_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Peer *peer = user_data;
  g_autoptr (GError) error = NULL;

  if (!g_output_stream_write_all_finish (G_OUTPUT_STREAM (source), result, NULL, &error))
    {
      if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        peer_drop (peer, error->message);
      return;
    }
  peer_read (peer);
}

static void
peer_connected_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Peer *peer = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GtHello) hello = NULL;
  GByteArray *out;
  guint8 preface[GT_PREFACE_SIZE];
  GIOStream *io = gt_transport_connect_finish (result, &error);

  if (io == NULL)
    {
      if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        peer_drop (peer, error->message);
      return;
    }
  peer->io = io;
  peer->buf = g_byte_array_new ();
  hello = gt_hello_new (peer->cluster->config->cluster_node, peer->cluster->config->cluster_secret);
  gt_hello_add_service (hello, GT_SERVICE_KIND_NODE, NULL, 0, FALSE);
  out = g_byte_array_new ();
  gt_preface_encode (preface);
  g_byte_array_append (out, preface, sizeof preface);
  if (!gt_frame_append_hello (out, hello, &error))
    {
      g_byte_array_unref (out);
      peer_drop (peer, error->message);
      return;
    }
  /* The array lives as long as the write: freed with the peer's buffer swap below. */
  g_object_set_data_full (G_OBJECT (peer->io), "gt-node-hello", out,
                          (GDestroyNotify) g_byte_array_unref);
  g_output_stream_write_all_async (g_io_stream_get_output_stream (peer->io), out->data, out->len,
                                   G_PRIORITY_DEFAULT, peer->cancellable, peer_written_cb, peer);
}

static gboolean
peer_timeout_cb (gpointer user_data)
{
  Peer *peer = user_data;

  peer->timeout_id = 0;
  peer_drop (peer, "not up in time");
  return G_SOURCE_REMOVE;
}

static Peer *
peer_get (GtCluster *cluster, const char *node, const char *advertise)
{
  Peer *peer = g_hash_table_lookup (cluster->peers, node);
  g_autoptr (GtRemote) remote = NULL;
  g_autofree char *message = NULL;
  GtTransportSecurity security = { NULL, FALSE };

  if (peer != NULL && strcmp (peer->advertise, advertise) == 0
      && (peer->mux == NULL || !gt_mux_is_closed (peer->mux)))
    return peer;
  if (peer != NULL)
    g_hash_table_remove (cluster->peers, node);
  remote = gt_remote_parse (advertise, &message);
  if (remote == NULL)
    {
      g_warning ("node %s advertises a bad address: %s", node, message);
      return NULL;
    }
  peer = g_new0 (Peer, 1);
  peer->cluster = cluster;
  peer->node = g_strdup (node);
  peer->advertise = g_strdup (advertise);
  peer->cancellable = g_cancellable_new ();
  g_queue_init (&peer->waiting);
  g_hash_table_insert (cluster->peers, peer->node, peer);
  peer->timeout_id = g_timeout_add (PEER_CONNECT_MS, peer_timeout_cb, peer);
  gt_transport_connect_async (remote, &security, peer->cancellable, peer_connected_cb, peer);
  return peer;
}

gboolean
gt_cluster_holds_elsewhere (GtCluster *cluster, GtServiceKind kind, const char *prefix)
{
  g_autofree char *name = g_strdup_printf ("%u/%s", kind, prefix);
  const char *node = g_hash_table_lookup (cluster->hosts, name);

  return node != NULL && strcmp (node, cluster->config->cluster_node) != 0
         && g_hash_table_contains (cluster->nodes, node);
}

gboolean
gt_cluster_forward (GtCluster *cluster, GtServiceKind kind, const char *prefix,
                    GtListenerKind listener, int fd, GIOStream *io, guint8 *data, gsize len,
                    const GtOpenAddr *addr, guint64 timeout_ms)
{
  g_autofree char *name = g_strdup_printf ("%u/%s", kind, prefix);
  const char *node = g_hash_table_lookup (cluster->hosts, name);
  const char *advertise;
  Peer *peer;
  Waiter *w;

  if (node == NULL || strcmp (node, cluster->config->cluster_node) == 0)
    return FALSE;
  advertise = g_hash_table_lookup (cluster->nodes, node);
  if (advertise == NULL || (peer = peer_get (cluster, node, advertise)) == NULL)
    return FALSE;
  if (peer->mux == NULL && g_queue_get_length (&peer->waiting) >= MAX_WAITING)
    return FALSE;
  w = g_new0 (Waiter, 1);
  /* The node sniffs again: after TLS termination here it sees plain HTTP. */
  w->kind = listener == GT_LISTENER_SNI ? GT_LISTENER_SNI : GT_LISTENER_PLAIN;
  w->fd = fd;
  w->io = io;
  w->data = data;
  w->len = len;
  if (addr != NULL)
    {
      w->addr = *addr;
      w->has_addr = TRUE;
    }
  w->timeout_ms = timeout_ms;
  g_debug ("forwarding %s to node %s", name, node);
  if (peer->mux != NULL)
    waiter_send (peer, w);
  else
    g_queue_push_tail (&peer->waiting, w);
  return TRUE;
}

/* ------------------------------------------------------------------------------------------ */
/* Inbound node tunnels */

static gboolean
secure_equal (const char *a, const char *b)
{
  gsize la = strlen (a), lb = strlen (b);
  guint8 diff = la != lb;

  for (gsize i = 0; i < lb; i++)
    diff |= (guint8) (b[i] ^ (i < la ? a[i] : 0));
  return diff == 0;
}

gboolean
gt_cluster_check_node (GtCluster *cluster, const GtHello *hello)
{
  return secure_equal (hello->secret, cluster->config->cluster_secret);
}

static void
inbound_stream_cb (GtMux *mux, GtMuxStream *stream, guint service_index, gpointer user_data)
{
  GtCluster *cluster = user_data;
  int sv[2];

  if (service_index != GT_LISTENER_PLAIN && service_index != GT_LISTENER_SNI)
    {
      gt_mux_stream_reset (stream, GT_RESET_CODE_NO_SERVICE);
      return;
    }
  /* The stream becomes a connection like any user's: one end relays the stream, the other is
   * sniffed and routed to the local client. */
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
    {
      g_warning ("node stream: socketpair: %s", g_strerror (errno));
      gt_mux_stream_reset (stream, GT_RESET_CODE_REFUSED);
      return;
    }
  gt_mux_stream_attach_fd (stream, sv[0], cluster->config->timeout_ms);
  cluster->adopt (sv[1], service_index, gt_mux_stream_get_addr (stream), cluster->adopt_data);
}

static void
inbound_closed_cb (GtMux *mux, GError *error, gpointer user_data)
{
  GtCluster *cluster = user_data;

  g_signal_handlers_disconnect_by_data (mux, cluster);
  g_ptr_array_remove (cluster->inbound, mux);
}

void
gt_cluster_add_inbound (GtCluster *cluster, GtMux *mux)
{
  g_ptr_array_add (cluster->inbound, g_object_ref (mux));
  gt_mux_set_keepalive (mux, cluster->config->timeout_ms, 0);
  g_signal_connect (mux, "stream-opened", G_CALLBACK (inbound_stream_cb), cluster);
  g_signal_connect (mux, "closed", G_CALLBACK (inbound_closed_cb), cluster);
  gt_mux_start (mux);
}

/* ------------------------------------------------------------------------------------------ */

gboolean
gt_cluster_is_registry_up (GtCluster *cluster)
{
  return cluster->registry_up;
}

guint
gt_cluster_get_n_claims (GtCluster *cluster)
{
  return g_hash_table_size (cluster->held);
}

GtCluster *
gt_cluster_new (const GtServerConfig *config, GtClusterAdoptFunc adopt, gpointer user_data,
                GError **error)
{
  GtEtcdOptions options = {
    (const char *const *) config->cluster_etcd,
    config->cluster_etcd_ca,
    config->cluster_etcd_cert,
    config->cluster_etcd_key,
    config->cluster_etcd_user,
    config->cluster_etcd_password,
    ETCD_TIMEOUT_MS,
  };
  GtCluster *cluster;
  GtEtcd *etcd = gt_etcd_new (&options, error);

  if (etcd == NULL)
    return NULL;
  cluster = g_new0 (GtCluster, 1);
  cluster->config = config;
  cluster->etcd = etcd;
  cluster->adopt = adopt;
  cluster->adopt_data = user_data;
  cluster->cancellable = g_cancellable_new ();
  cluster->held = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  cluster->owners = g_hash_table_new (NULL, NULL);
  cluster->unreleased = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  g_queue_init (&cluster->ops);
  cluster->hosts = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  cluster->nodes = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  cluster->peers = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                          (GDestroyNotify) peer_free);
  cluster->inbound = g_ptr_array_new_with_free_func (g_object_unref);
  cluster->node_key = key_for (cluster, "nodes/", config->cluster_node);
  cluster->registry_up = TRUE; /* until a request says otherwise */
  return cluster;
}

void
gt_cluster_start (GtCluster *cluster)
{
  guint interval = (guint) MAX (500, cluster->config->cluster_ttl_ms / 3);

  g_message ("cluster node %s (%s): registry %s", cluster->config->cluster_node,
             cluster->config->cluster_advertise, cluster->config->cluster_etcd[0]);
  lease_grant (cluster);
  cluster_sync (cluster);
  cluster->keepalive_id = g_timeout_add (interval, keepalive_tick_cb, cluster);
}

void
gt_cluster_free (GtCluster *cluster)
{
  Op *op;

  if (cluster == NULL)
    return;
  g_clear_handle_id (&cluster->keepalive_id, g_source_remove);
  g_clear_handle_id (&cluster->resync_id, g_source_remove);
  g_clear_handle_id (&cluster->watch_timer_id, g_source_remove);
  g_clear_pointer (&cluster->watch, gt_etcd_watch_free);
  g_cancellable_cancel (cluster->cancellable);
  while ((op = g_queue_pop_head (&cluster->ops)) != NULL)
    {
      if (op->task != NULL)
        g_task_return_new_error (op->task, G_IO_ERROR, G_IO_ERROR_CANCELLED, "stopped");
      op_free (op);
    }
  g_hash_table_unref (cluster->peers);
  for (guint i = 0; i < cluster->inbound->len; i++)
    {
      g_signal_handlers_disconnect_by_data (cluster->inbound->pdata[i], cluster);
      gt_mux_close (cluster->inbound->pdata[i], GT_ERROR_CODE_SHUTTING_DOWN, NULL);
    }
  g_ptr_array_unref (cluster->inbound);
  /* Requests in flight end with the cancellation (their callbacks touch no cluster then). */
  gt_etcd_free (cluster->etcd);
  g_object_unref (cluster->cancellable);
  g_hash_table_unref (cluster->held);
  g_hash_table_unref (cluster->owners);
  g_hash_table_unref (cluster->unreleased);
  g_hash_table_unref (cluster->hosts);
  g_hash_table_unref (cluster->nodes);
  g_free (cluster->node_key);
  g_free (cluster);
}
