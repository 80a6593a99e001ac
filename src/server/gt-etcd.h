/* gt-etcd.h: a small etcd v3 client over its JSON gateway (libsoup + json-glib): leases, claims
 * by transaction, range, delete and watch streams; the response parsers are pure functions. */
#pragma once

#include <gio/gio.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

#define GT_ETCD_ERROR (gt_etcd_error_quark ())
GQuark gt_etcd_error_quark (void);

typedef enum
{
  GT_ETCD_ERROR_UNAVAILABLE, /* no member answered (connection refused, timeout, no leader) */
  GT_ETCD_ERROR_BAD_RESPONSE, /* an answer that is not what the gateway sends */
  GT_ETCD_ERROR_SERVER,      /* etcd answered with an error ("lease not found", auth ...) */
} GtEtcdErrorEnum;

/* Largest response body accepted, and largest message of a watch stream. */
#define GT_ETCD_MAX_BODY (16 * 1024 * 1024)
#define GT_ETCD_MAX_KVS 100000

typedef struct
{
  char *key;
  char *value;
  gint64 lease;
  gint64 create_revision;
  gint64 mod_revision;
} GtEtcdKv;

void gt_etcd_kv_free (GtEtcdKv *kv);

typedef enum
{
  GT_ETCD_EVENT_PUT,
  GT_ETCD_EVENT_DELETE,
} GtEtcdEventType;

typedef struct
{
  GtEtcdEventType type;
  GtEtcdKv *kv;
} GtEtcdEvent;

void gt_etcd_event_free (GtEtcdEvent *event);

/* Pure parsers of gateway answers (fuzzed by tests/fuzzing/fuzz-etcd.c). data need not be
 * NUL-terminated. */
/* The JSON object of an answer, or GT_ETCD_ERROR_SERVER for an {"error": ...} answer. */
JsonObject *gt_etcd_parse_object (const char *data, gsize len, GError **error);
/* "kvs" of a range answer (header revision in *revision), GtEtcdKv* list. */
GPtrArray *gt_etcd_parse_range (JsonObject *object, gint64 *revision, GError **error);
/* A txn answer: *succeeded, and the kvs of every range in its responses (GtEtcdKv*). */
GPtrArray *gt_etcd_parse_txn (JsonObject *object, gboolean *succeeded, GError **error);
/* A watch stream message: its events (GtEtcdEvent*); *created / *canceled for the watch's own
 * notices, *revision the header revision. */
GPtrArray *gt_etcd_parse_watch (JsonObject *object, gboolean *created, gboolean *canceled,
                                gint64 *revision, GError **error);
/* A lease grant or keep-alive answer: the id and the TTL left (0 = the lease is gone). */
gboolean gt_etcd_parse_lease (JsonObject *object, gint64 *id, gint64 *ttl, GError **error);

typedef struct _GtEtcd GtEtcd;

typedef struct
{
  const char *const *endpoints; /* http(s)://host:port */
  const char *ca_file;          /* NULL = system CAs */
  const char *cert_file;        /* client certificate, NULL = none */
  const char *key_file;
  const char *user;             /* NULL = no auth */
  const char *password;
  guint timeout_ms;             /* per request, per member */
} GtEtcdOptions;

GtEtcd *gt_etcd_new (const GtEtcdOptions *options, GError **error);
void gt_etcd_free (GtEtcd *etcd);

/* POSTs body to path (/v3/...) on a member that answers, trying the next member on transport
 * failures; signs in first when a user is set. The result is the answer's object. */
void gt_etcd_call_async (GtEtcd *etcd, const char *path, JsonNode *body,
                         GCancellable *cancellable, GAsyncReadyCallback callback,
                         gpointer user_data);
JsonObject *gt_etcd_call_finish (GtEtcd *etcd, GAsyncResult *result, GError **error);

/* Request bodies (keys and values are base64-encoded here). */
JsonNode *gt_etcd_body_lease_grant (gint64 ttl_s);
JsonNode *gt_etcd_body_lease_id (gint64 id);
JsonNode *gt_etcd_body_range_prefix (const char *prefix);
/* Puts every key (with its value) under lease if none of them exists; else ranges them all. */
JsonNode *gt_etcd_body_claim (const char *const *keys, const char *const *values, gint64 lease);
/* Deletes key if it is still under lease. */
JsonNode *gt_etcd_body_release (const char *key, gint64 lease);

/* A watch of every key under prefix from revision on; events go to func until it is freed or
 * the stream ends (done is called then, with the reason). */
typedef struct _GtEtcdWatch GtEtcdWatch;
typedef void (*GtEtcdWatchFunc) (GPtrArray *events, gint64 revision, gpointer user_data);
typedef void (*GtEtcdWatchDone) (const GError *error, gpointer user_data);
GtEtcdWatch *gt_etcd_watch (GtEtcd *etcd, const char *prefix, gint64 start_revision,
                            GtEtcdWatchFunc func, GtEtcdWatchDone done, gpointer user_data);
void gt_etcd_watch_free (GtEtcdWatch *watch);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtEtcdKv, gt_etcd_kv_free)

G_END_DECLS
