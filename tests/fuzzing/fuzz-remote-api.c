/* fuzz-remote-api.c: libFuzzer target for the remoteAPI answer parser, checking its bounds. */
#include "gt-remote-api.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

static void
check_address (const char *a)
{
  gsize len = strlen (a);

  if (len == 0 || len > GT_REMOTE_API_MAX_ADDRESS || !g_utf8_validate (a, len, NULL))
    abort ();
  for (const char *p = a; *p != '\0'; p = g_utf8_next_char (p))
    if (!g_unichar_isprint (g_utf8_get_char (p)) || g_unichar_isspace (g_utf8_get_char (p)))
      abort ();
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *copy = NULL;
  char *server = (char *) 1, *stun = (char *) 1;
  gboolean ok;

  /* Exact-size copy, not terminated, so that ASan catches any read past the input. */
  copy = g_memdup2 (data, size);
  ok = gt_remote_api_parse_answer (copy, size, &server, &stun, &error);
  if (!ok)
    {
      if (server != NULL || stun != NULL || error == NULL || error->domain != GT_REMOTE_API_ERROR
          || error->code != GT_REMOTE_API_ERROR_BAD_RESPONSE)
        abort ();
      return 0;
    }
  if (error != NULL || server == NULL || size > GT_REMOTE_API_MAX_BODY)
    abort ();
  check_address (server);
  if (stun != NULL)
    check_address (stun);
  g_free (server);
  g_free (stun);
  return 0;
}
