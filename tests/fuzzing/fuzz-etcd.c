/* fuzz-etcd.c: libFuzzer target for the etcd JSON-gateway answer parsers (gt-etcd.c). */
#include "gt-etcd.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

static void
check_kvs (GPtrArray *kvs)
{
  if (kvs->len > GT_ETCD_MAX_KVS)
    abort ();
  for (guint i = 0; i < kvs->len; i++)
    {
      GtEtcdKv *kv = kvs->pdata[i];

      if (kv->key == NULL || kv->value == NULL || !g_utf8_validate (kv->key, -1, NULL)
          || !g_utf8_validate (kv->value, -1, NULL))
        abort ();
    }
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *copy = NULL;
  g_autoptr (JsonObject) object = NULL;
  g_autoptr (GPtrArray) range = NULL;
  g_autoptr (GPtrArray) txn = NULL;
  g_autoptr (GPtrArray) events = NULL;
  gboolean succeeded, created, canceled;
  gint64 revision, id, ttl;

  /* Exact-size copy, not terminated, so that ASan catches any read past the input. */
  copy = g_memdup2 (data, size);
  object = gt_etcd_parse_object (copy, size, &error);
  if (object == NULL)
    {
      if (error == NULL || error->domain != GT_ETCD_ERROR)
        abort ();
      return 0;
    }
  range = gt_etcd_parse_range (object, &revision, NULL);
  if (range != NULL)
    check_kvs (range);
  txn = gt_etcd_parse_txn (object, &succeeded, NULL);
  if (txn != NULL)
    check_kvs (txn);
  events = gt_etcd_parse_watch (object, &created, &canceled, &revision, NULL);
  if (events != NULL)
    for (guint i = 0; i < events->len; i++)
      {
        GtEtcdEvent *e = events->pdata[i];
        g_autoptr (GPtrArray) one = g_ptr_array_new ();

        if (e->kv == NULL)
          abort ();
        g_ptr_array_add (one, e->kv);
        check_kvs (one);
      }
  (void) gt_etcd_parse_lease (object, &id, &ttl, NULL);
  return 0;
}
