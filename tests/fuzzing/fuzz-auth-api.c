/* fuzz-auth-api.c: libFuzzer target for the authAPI response parser, checking its bounds. */
#include "gt-auth-api.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *copy = NULL;
  char **prefixes = (char **) 1;
  gboolean ok;

  /* Exact-size copy, not terminated, so that ASan catches any read past the input. */
  copy = g_memdup2 (data, size);
  ok = gt_auth_api_parse_response (copy, size, &prefixes, &error);
  if (!ok)
    {
      if (prefixes != NULL || error == NULL || error->domain != GT_AUTH_ERROR
          || (error->code != GT_AUTH_ERROR_DENIED && error->code != GT_AUTH_ERROR_BAD_RESPONSE))
        abort ();
      return 0;
    }
  if (error != NULL || prefixes == NULL || size > GT_AUTH_API_MAX_BODY)
    abort ();
  if (g_strv_length (prefixes) > GT_AUTH_API_MAX_TOKENS)
    abort ();
  for (guint i = 0; prefixes[i] != NULL; i++)
    if (prefixes[i][0] == '\0' || strlen (prefixes[i]) > GT_AUTH_API_MAX_TOKEN_LEN
        || !g_utf8_validate (prefixes[i], -1, NULL))
      abort ();
  g_strfreev (prefixes);
  return 0;
}
