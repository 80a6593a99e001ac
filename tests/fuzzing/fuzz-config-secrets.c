/* fuzz-config-secrets.c: libFuzzer target for the secret redaction of config documents (what the
 * D-Bus GetConfig/SetConfig do with a document from a caller). */
#include "gt-config.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autofree char *text = g_strndup ((const char *) data, size);
  g_autofree char *redacted = NULL;
  g_autofree char *again = NULL;
  g_autofree char *restored = NULL;

  if (size > 64 * 1024)
    return 0;
  redacted = gt_config_redact_secrets (text, -1, NULL);
  if (redacted == NULL)
    return 0;
  /* What was redacted still parses, and redacting it again changes nothing. */
  again = gt_config_redact_secrets (redacted, -1, NULL);
  if (again == NULL || strcmp (again, redacted) != 0)
    abort ();
  /* Restoring from the original gives a document that parses (or a clean error). */
  restored = gt_config_restore_secrets (redacted, -1, text, -1, NULL);
  if (restored != NULL)
    {
      g_autofree char *check = gt_config_redact_secrets (restored, -1, NULL);

      if (check == NULL)
        abort ();
    }
  return 0;
}
