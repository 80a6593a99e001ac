/* fuzz-worker-report.c: libFuzzer target for the GT_DETAILS= report a manager reads from its
 * workers' notify datagrams (gt-worker-report.c): the input as the line's value, and as the
 * serialized report behind it. */
#include "gt-worker-report.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

static void
check (const char *value)
{
  g_autoptr (GVariant) report = gt_worker_details_parse (value, NULL);
  g_autoptr (GVariant) connections = NULL;
  g_autoptr (GVariant) streams = NULL;

  if (report == NULL)
    return;
  /* What is accepted is what the manager exports on D-Bus: the type, normal form, bounds. */
  if (!g_variant_is_of_type (report, G_VARIANT_TYPE (GT_WORKER_DETAILS_TYPE))
      || !g_variant_is_normal_form (report))
    abort ();
  connections = g_variant_get_child_value (report, 0);
  streams = g_variant_get_child_value (report, 1);
  if (g_variant_n_children (connections) > GT_WORKER_DETAILS_MAX_ENTRIES
      || g_variant_n_children (streams) > GT_WORKER_DETAILS_MAX_ENTRIES)
    abort ();
  g_free (g_variant_print (report, FALSE));
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autofree char *text = NULL;
  g_autofree char *encoded = NULL;

  if (size > GT_WORKER_DETAILS_MAX_LINE)
    return 0;
  text = g_strndup ((const char *) data, size);
  check (text);
  encoded = g_base64_encode (data, size);
  check (encoded);
  return 0;
}
