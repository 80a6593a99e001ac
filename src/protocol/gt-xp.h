/* gt-xp.h: GT's P2P signalling items: a body of [len:u16][JSON] items carrying session
 * descriptions and ICE candidates (bytes in, result or GError out). */
#pragma once

#include <glib.h>

#include "gt-frame.h"

G_BEGIN_DECLS

#define GT_XP_ERROR (gt_xp_error_quark ())
GQuark gt_xp_error_quark (void);
typedef enum
{
  GT_XP_ERROR_MALFORMED, /* an empty item, bad JSON, or JSON of the wrong shape */
  GT_XP_ERROR_TOO_LARGE, /* an item longer than GT_XP_MAX_ITEM */
} GtXpErrorEnum;

/* GT's refusal of a P2P request (no remoteSTUN, or too many peers), byte for byte. */
#define GT_XP_FORBIDDEN "HTTP/1.1 403 Forbidden\r\nConnection: Closed\r\n\r\n"

/* Longest JSON item, as GT. */
#define GT_XP_MAX_ITEM 4096

/* One [len:u16][JSON] item at the start of buf. OK: *item / *item_len is the JSON, *consumed the
 * bytes taken (2 + len); NEED_MORE while incomplete; ERROR for a zero or oversized length. */
GtDecodeResult gt_xp_item_decode (const guint8 *buf, gsize len, const guint8 **item,
                                  gsize *item_len, gsize *consumed, GError **error);
/* Appends one item (json must not be longer than GT_XP_MAX_ITEM). */
void gt_xp_item_encode (GByteArray *out, const char *json);

typedef enum
{
  GT_XP_ITEM_DESCRIPTION, /* {"type":"offer"|"answer","sdp":"..."} */
  GT_XP_ITEM_CANDIDATE,   /* {"candidate":"...","sdpMid":"..."|null,"sdpMLineIndex":N|null} */
} GtXpItemKind;

typedef struct
{
  GtXpItemKind kind;
  char *type;          /* description: "offer" or "answer" */
  char *sdp;           /* description */
  char *candidate;     /* candidate: "candidate:..." or "" (end of candidates) */
  char *sdp_mid;       /* candidate: NULL when null or absent */
  gint sdp_mline_index; /* candidate: -1 when null or absent */
} GtXpItem;

void gt_xp_item_clear (GtXpItem *item);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (GtXpItem, gt_xp_item_clear)

/* Parses one item's JSON: an object that is either a description or a candidate, with UTF-8
 * strings without NUL, and nothing else of the wrong type. */
gboolean gt_xp_item_parse (const guint8 *json, gsize len, GtXpItem *out, GError **error);

/* JSON texts of items (g_free). */
char *gt_xp_description_to_json (const char *type, const char *sdp);
char *gt_xp_candidate_to_json (const char *candidate, const char *sdp_mid, gint sdp_mline_index);

G_END_DECLS
