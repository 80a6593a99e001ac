/* gt-sdp.h: the subset of SDP (RFC 8866) a WebRTC data channel needs: parse a peer's offer or
 * answer, build ours (bytes in, result or GError out). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define GT_SDP_ERROR (gt_sdp_error_quark ())
GQuark gt_sdp_error_quark (void);
typedef enum
{
  GT_SDP_ERROR_MALFORMED,   /* not SDP, or a line we need is broken */
  GT_SDP_ERROR_UNSUPPORTED, /* no data channel m-line, no sha-256 fingerprint, ... */
  GT_SDP_ERROR_TOO_LARGE,
} GtSdpErrorEnum;

#define GT_SDP_MAX_SIZE (64 * 1024)
#define GT_SDP_MAX_CANDIDATES 32
#define GT_SDP_FINGERPRINT_LEN 32 /* SHA-256 */

typedef enum
{
  GT_SDP_SETUP_ACTPASS,
  GT_SDP_SETUP_ACTIVE,
  GT_SDP_SETUP_PASSIVE,
} GtSdpSetup;

typedef struct
{
  char *ice_ufrag;
  char *ice_pwd;
  guint8 fingerprint[GT_SDP_FINGERPRINT_LEN]; /* sha-256 of the peer's DTLS certificate */
  GtSdpSetup setup;
  char *mid;                 /* of the data channel m-line ("0" when absent) */
  guint mline_index;         /* index of that m-line among all m-lines */
  guint16 sctp_port;         /* default 5000 */
  guint32 max_message_size;  /* default 65536 */
  GPtrArray *candidates;     /* char*: "candidate:..." values of a=candidate lines (UDP only) */
  gboolean end_of_candidates;
} GtSdp;

void gt_sdp_free (GtSdp *sdp);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtSdp, gt_sdp_free)

/* Parses an offer or answer. The data channel m-line is the first "m=application ..." with
 * "webrtc-datachannel" (or the old "DTLS/SCTP 5000" form); its ICE credentials, fingerprint and
 * setup may be at session or media level. Error when it is missing, or ice-ufrag, ice-pwd or a
 * sha-256 fingerprint is missing or malformed. TCP candidates are left out. */
GtSdp *gt_sdp_parse (const char *text, gsize len, GError **error);

/* Whether a candidate value ("candidate:F C udp P addr port typ T ...") is a UDP candidate with
 * the basic fields in place. */
gboolean gt_sdp_candidate_is_udp (const char *candidate);

/* Our description: one data channel m-line with mid, ICE credentials, fingerprint, setup role
 * and the given candidate values (with end-of-candidates when complete). g_free(). */
char *gt_sdp_build (const char *mid, const char *ice_ufrag, const char *ice_pwd,
                    const guint8 fingerprint[GT_SDP_FINGERPRINT_LEN], GtSdpSetup setup,
                    const char *const *candidates, gboolean complete);

G_END_DECLS
