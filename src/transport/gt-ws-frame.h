/* gt-ws-frame.h: RFC 6455 frame headers and masking, pure functions over bytes (no sockets). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Largest binary frame gt sends (one write call becomes at most one frame of this size). */
#define GT_WS_MAX_MESSAGE (256 * 1024)
/* Largest data frame gt accepts; received payload is streamed, never buffered whole. */
#define GT_WS_MAX_FRAME_IN (16 * 1024 * 1024)
/* Longest frame header: 2 + 8 (64-bit length) + 4 (mask). */
#define GT_WS_FRAME_MAX_HEADER 14
/* Control frames (close, ping, pong) carry at most this much payload and are never fragmented. */
#define GT_WS_CONTROL_MAX 125

typedef enum
{
  GT_WS_OP_CONTINUATION = 0x0,
  GT_WS_OP_TEXT = 0x1,
  GT_WS_OP_BINARY = 0x2,
  GT_WS_OP_CLOSE = 0x8,
  GT_WS_OP_PING = 0x9,
  GT_WS_OP_PONG = 0xA,
} GtWsOpcode;

/* Close codes gt sends (RFC 6455 section 7.4.1). */
typedef enum
{
  GT_WS_CLOSE_NORMAL = 1000,
  GT_WS_CLOSE_PROTOCOL_ERROR = 1002,
  GT_WS_CLOSE_UNSUPPORTED_DATA = 1003,
  GT_WS_CLOSE_NO_STATUS = 1005,
  GT_WS_CLOSE_POLICY_VIOLATION = 1008,
  GT_WS_CLOSE_TOO_BIG = 1009,
} GtWsCloseCode;

typedef enum
{
  GT_WS_PARSE_OK = 0,
  GT_WS_PARSE_NEED_MORE = 1,
  GT_WS_PARSE_ERROR = 2,
} GtWsParseResult;

typedef struct
{
  gboolean fin;
  guint8 opcode;
  gboolean masked;
  guint8 mask[4];
  guint64 length;   /* payload bytes */
  gsize header_len; /* bytes of the header, 2..14 */
} GtWsFrameHeader;

/* Parses the frame header at the start of buf. Fails (with a G_IO_ERROR_INVALID_DATA error and
 * *close_code set to the code to send) on reserved bits, unknown opcodes, fragmented or long
 * control frames, a mask bit other than expect_masked (clients mask, servers do not), a 64-bit
 * length with the top bit set, and a data payload longer than max_payload
 * (G_IO_ERROR_MESSAGE_TOO_LARGE, GT_WS_CLOSE_TOO_BIG) — before anything is allocated for it. */
GtWsParseResult gt_ws_frame_parse_header (const guint8 *buf, gsize len, gboolean expect_masked,
                                          guint64 max_payload, GtWsFrameHeader *hdr,
                                          guint16 *close_code, GError **error);

/* Writes a frame header into out (at least GT_WS_FRAME_MAX_HEADER bytes) with the shortest
 * length encoding; mask NULL = unmasked. Returns its length. */
gsize gt_ws_frame_write_header (guint8 *out, gboolean fin, guint8 opcode, guint64 length,
                                const guint8 *mask);

/* XORs len bytes with the 4-byte mask, starting at mask position offset (0..3), a machine word
 * at a time; src and dst may be the same buffer. Returns the mask position after the last byte. */
guint gt_ws_mask_copy (guint8 *dst, const guint8 *src, gsize len, const guint8 mask[4],
                       guint offset);

/* Checks a close frame's payload: empty, or a 2-byte code that may be sent on the wire followed
 * by UTF-8. Sets *code (GT_WS_CLOSE_NO_STATUS when empty). */
gboolean gt_ws_close_payload_parse (const guint8 *payload, gsize len, guint16 *code,
                                    GError **error);

G_END_DECLS
