/* fuzz-sdp.c: libFuzzer target for the SDP parser (gt_sdp_parse) and candidate check. */
#include "gt-sdp.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autofree char *copy = g_memdup2 (data, size);
  g_autoptr (GError) error = NULL;
  g_autoptr (GtSdp) sdp = gt_sdp_parse (copy, size, &error);

  if ((sdp == NULL) != (error != NULL) || (error != NULL && error->domain != GT_SDP_ERROR))
    abort ();
  if (sdp != NULL)
    {
      g_autoptr (GtSdp) back = NULL;
      g_autofree char *built = NULL;

      if (sdp->ice_ufrag == NULL || sdp->ice_pwd == NULL || sdp->mid == NULL
          || sdp->candidates->len > GT_SDP_MAX_CANDIDATES)
        abort ();
      for (guint i = 0; i < sdp->candidates->len; i++)
        if (!gt_sdp_candidate_is_udp (sdp->candidates->pdata[i]))
          abort ();
      /* A description built from what was parsed parses back to the same values. */
      g_ptr_array_add (sdp->candidates, NULL);
      built = gt_sdp_build (sdp->mid, sdp->ice_ufrag, sdp->ice_pwd, sdp->fingerprint, sdp->setup,
                            (const char *const *)sdp->candidates->pdata, TRUE);
      g_ptr_array_remove_index (sdp->candidates, sdp->candidates->len - 1);
      back = gt_sdp_parse (built, strlen (built), NULL);
      if (back == NULL || strcmp (back->ice_ufrag, sdp->ice_ufrag) != 0
          || strcmp (back->mid, sdp->mid) != 0
          || memcmp (back->fingerprint, sdp->fingerprint, GT_SDP_FINGERPRINT_LEN) != 0
          || back->candidates->len != sdp->candidates->len || !back->end_of_candidates)
        abort ();
    }
  if (size < 512 && size > 0)
    {
      g_autofree char *cand = g_strndup ((const char *)data, size);

      (void)gt_sdp_candidate_is_udp (cand);
    }
  return 0;
}
