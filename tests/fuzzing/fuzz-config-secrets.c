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
  g_autofree char *replaced = NULL;

  if (size > 64 * 1024)
    return 0;
  redacted = gt_config_redact_secrets (text, -1, NULL);
  if (redacted == NULL)
    return 0;
  /* Redacting again changes nothing. (Odd documents, such as an empty block scalar with a
   * comment glued to its header, may not parse once redacted: SetConfig then reports a clean
   * syntax error.) */
  again = gt_config_redact_secrets (redacted, -1, NULL);
  if (again != NULL && strcmp (again, redacted) != 0)
    abort ();
  /* Restoring from the original never fails on a document whose secrets it knows. */
  restored = gt_config_restore_secrets (redacted, -1, text, -1, NULL);
  if (again != NULL && restored == NULL && strstr (text, GT_CONFIG_SECRET_PLACEHOLDER) == NULL)
    abort ();
  /* Moving a client's secret to the keyring parses like redaction does. */
  replaced = gt_config_replace_secret (text, -1, "options/secret", GT_CONFIG_SECRET_KEYRING, NULL);
  if (replaced == NULL)
    abort ();
  return 0;
}
