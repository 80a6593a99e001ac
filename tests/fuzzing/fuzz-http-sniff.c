/* fuzz-http-sniff.c: libFuzzer target for gt_http_sniff_host, gt_http_sniff_field and
 * gt_http_host_prefix. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "gt-http.h"

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

static gboolean
host_chars_ok (const char *host)
{
  gsize len = strlen (host);

  if (len == 0 || len > 255)
    return FALSE;
  for (gsize i = 0; i < len; i++)
    if (g_ascii_isupper (host[i]) || !(g_ascii_isalnum (host[i]) || strchr (".-_[]:", host[i])))
      return FALSE;
  return TRUE;
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *host = NULL;
  g_autofree char *prefix = NULL;
  GtDecodeResult res;

  res = gt_http_sniff_host (data, size, GT_HTTP_MAX_HEAD, &host, &error);
  switch (res)
    {
    case GT_DECODE_OK:
      if (error != NULL || host == NULL || !host_chars_ok (host))
        abort ();
      prefix = gt_http_host_prefix (host);
      if (prefix != NULL && (prefix[0] == '\0' || strlen (prefix) > 63
                             || strncmp (prefix, host, strlen (prefix)) != 0))
        abort ();
      break;
    case GT_DECODE_NEED_MORE:
      if (error != NULL || host != NULL || size >= GT_HTTP_MAX_HEAD)
        abort ();
      break;
    case GT_DECODE_ERROR:
      if (error == NULL || error->domain != GT_HTTP_ERROR || host != NULL)
        abort ();
      break;
    default:
      abort ();
    }

  /* httpMUXHeader's sniffer: the same head rules, a bounded printable value. */
  {
    g_autoptr (GError) ferr = NULL;
    g_autofree char *value = NULL;
    GtDecodeResult fres = gt_http_sniff_field (data, size, GT_HTTP_MAX_HEAD, "EID", &value, &ferr);

    if (fres == GT_DECODE_OK)
      {
        if (ferr != NULL || value == NULL || value[0] == '\0'
            || strlen (value) > GT_HTTP_MAX_FIELD_PREFIX)
          abort ();
        for (const char *c = value; *c != '\0'; c++)
          if ((guint8) *c <= 0x20 || (guint8) *c >= 0x7F || g_ascii_isupper (*c))
            abort ();
      }
    else if ((fres == GT_DECODE_ERROR) != (ferr != NULL) || value != NULL)
      abort ();
    /* Both see the same head: unless one of them refused its own field (repeated, bad value),
     * one needs more bytes exactly when the other does. */
    if (fres != GT_DECODE_ERROR && res != GT_DECODE_ERROR
        && (fres == GT_DECODE_NEED_MORE) != (res == GT_DECODE_NEED_MORE))
      abort ();
  }

  /* A shorter prefix of the same bytes never contradicts the whole: an error on the prefix
   * stays an error (a malformed start cannot become good), and NEED_MORE on the whole means
   * NEED_MORE on every prefix. */
  if (size > 0)
    {
      g_autoptr (GError) error2 = NULL;
      g_autofree char *host2 = NULL;
      gsize cut = data[0] % size;
      GtDecodeResult res2 = gt_http_sniff_host (data, cut, GT_HTTP_MAX_HEAD, &host2, &error2);

      if (res2 == GT_DECODE_ERROR && g_error_matches (error2, GT_HTTP_ERROR,
                                                      GT_HTTP_ERROR_MALFORMED)
          && res != GT_DECODE_ERROR)
        abort ();
      if (res == GT_DECODE_NEED_MORE && res2 != GT_DECODE_NEED_MORE)
        abort ();
      if (res2 == GT_DECODE_OK && (res != GT_DECODE_OK || strcmp (host, host2) != 0))
        abort ();
    }

  /* The prefix helper also gets raw strings. */
  if (size > 0 && memchr (data, '\0', size) == NULL)
    {
      g_autofree char *str = g_strndup ((const char *) data, size);
      g_autofree char *p = gt_http_host_prefix (str);

      if (p != NULL && (p[0] == '\0' || strlen (p) > 63))
        abort ();
    }

  return 0;
}
