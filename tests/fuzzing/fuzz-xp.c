/* fuzz-xp.c: libFuzzer target for GT's signalling items: the [len:u16][JSON] framing
 * (gt_xp_item_decode) and the JSON of each item (gt_xp_item_parse). */
#include "gt-xp.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

static void
check_item (const guint8 *json, gsize len)
{
  g_autoptr (GError) error = NULL;
  g_auto (GtXpItem) item = { 0 };
  gboolean ok = gt_xp_item_parse (json, len, &item, &error);

  if (ok != (error == NULL) || (error != NULL && error->domain != GT_XP_ERROR))
    abort ();
  if (!ok)
    {
      if (item.type || item.sdp || item.candidate || item.sdp_mid)
        abort ();
      return;
    }
  if (item.kind == GT_XP_ITEM_DESCRIPTION)
    {
      g_autofree char *again = NULL;
      g_auto (GtXpItem) back = { 0 };

      if (item.sdp == NULL || !g_utf8_validate (item.sdp, -1, NULL)
          || (strcmp (item.type, "offer") != 0 && strcmp (item.type, "answer") != 0))
        abort ();
      /* What we would send back parses to the same values. */
      again = gt_xp_description_to_json (item.type, item.sdp);
      if (!gt_xp_item_parse ((const guint8 *)again, strlen (again), &back, NULL)
          && strlen (again) <= GT_XP_MAX_ITEM)
        abort ();
    }
  else if (item.candidate == NULL || !g_utf8_validate (item.candidate, -1, NULL)
           || item.sdp_mline_index < -1 || item.sdp_mline_index > 65535)
    abort ();
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  /* Exact-size copy (ASan catches reads past it), never NULL: an empty input would make
   * copy + pos an offset on a null pointer. */
  g_autofree guint8 *copy = g_malloc (MAX (size, 1));
  gsize pos = 0;

  if (size > 0)
    memcpy (copy, data, size);

  /* The input as a body of items. */
  for (guint n = 0; n < 64; n++)
    {
      g_autoptr (GError) error = NULL;
      const guint8 *item;
      gsize item_len, consumed;
      GtDecodeResult r
          = gt_xp_item_decode (copy + pos, size - pos, &item, &item_len, &consumed, &error);

      if ((r == GT_DECODE_ERROR) != (error != NULL))
        abort ();
      if (r != GT_DECODE_OK)
        break;
      if (consumed != item_len + 2 || consumed > size - pos || item_len == 0
          || item_len > GT_XP_MAX_ITEM)
        abort ();
      check_item (item, item_len);
      pos += consumed;
    }
  /* The whole input as one item's JSON. */
  if (size <= GT_XP_MAX_ITEM)
    check_item (copy, size);
  return 0;
}
