/* fuzz-tls-inner.c: what gt's TLS 1.3 record layer makes of a record's decrypted inner plaintext
 * (content type, padding, post-handshake messages: tickets, KeyUpdate, alerts). */
#include "config.h"

#include <glib.h>

#include "gt-tls-stream.h"

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  gsize data_len = 0;
  gboolean request = FALSE;
  const char *why = NULL;
  GtTlsInner r = _gt_tls_inner_parse (data, size, &data_len, &request, &why);

  g_assert (data_len <= size);
  g_assert ((r == GT_TLS_INNER_ERROR) == (why != NULL));
  g_assert (r == GT_TLS_INNER_DATA || data_len == 0);
  g_assert (r == GT_TLS_INNER_KEY_UPDATE || !request);
  return 0;
}
