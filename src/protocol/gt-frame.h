/* gt-frame.h: pure encoder/decoder for gt's tunnel wire format (no sockets). */
#pragma once

#include <glib.h>
#include "gt-types.h"

G_BEGIN_DECLS

/* Every tunnel connection starts with this 4-byte preface sent by the client:
 * 0xF0 'G' 'T' <version>. 0xF0 is neither an HTTP method byte nor a TLS record
 * type, so one server port can tell tunnels from user traffic by the first byte. */
#define GT_PROTOCOL_MAGIC0 0xF0
#define GT_PROTOCOL_MAGIC1 'G'
#define GT_PROTOCOL_MAGIC2 'T'
#define GT_PROTOCOL_VERSION 1
#define GT_PREFACE_SIZE 4

/* Frame header: type:u8 flags:u8 stream_id:u32 length:u32, big endian. */
#define GT_FRAME_HEADER_SIZE 10
/* Largest payload a peer may send in one frame; checked before any allocation. */
#define GT_FRAME_MAX_PAYLOAD (256 * 1024)
/* Largest payload of a connection-level control frame (HELLO, WELCOME, ERROR, GOAWAY). */
#define GT_FRAME_MAX_CONTROL (64 * 1024)

#define GT_ID_MAX_LEN 200
#define GT_SECRET_MAX_LEN 200
#define GT_PREFIX_MAX_LEN 200
#define GT_MESSAGE_MAX_LEN 1024
#define GT_HELLO_MAX_SERVICES 600

typedef enum
{
  GT_FRAME_HELLO = 1,    /* C→S, stream 0: id, secret, services */
  GT_FRAME_WELCOME = 2,  /* S→C, stream 0: accepted; tcp ports opened */
  GT_FRAME_OPEN = 3,     /* S→C, stream N: open stream for service index, with first bytes */
  GT_FRAME_DATA = 4,     /* both, stream N */
  GT_FRAME_SHUTDOWN = 5, /* both, stream N: sender will send no more data (half-close) */
  GT_FRAME_RESET = 6,    /* both, stream N: stream aborted, with a code */
  GT_FRAME_WINDOW = 7,   /* both, stream N: credit increment */
  GT_FRAME_PING = 8,     /* both, stream 0: 8 opaque bytes; flag ACK = pong */
  GT_FRAME_GOAWAY = 9,   /* both, stream 0: graceful shutdown, reconnect elsewhere */
  GT_FRAME_ERROR = 10,   /* both, stream 0: fatal error with code and message, then close */
  GT_FRAME_FORWARD = 11, /* C→S, stream N (even): open a stream to a host prefix; S→C with ACK:
                          * routed. Only with GT_CAP_FORWARD (docs/protocol.md §6.11). */
  GT_FRAME_DATAGRAM = 12, /* both, stream 0: one UDP datagram of a flow (flow id, service index,
                           * bytes). Only with GT_CAP_DATAGRAM (docs/protocol.md §6.12). */
} GtFrameType;

#define GT_FRAME_TYPE_LAST GT_FRAME_DATAGRAM

#define GT_FRAME_FLAG_ACK 0x01  /* PING: this is the pong */
#define GT_FRAME_FLAG_ADDR 0x02 /* OPEN: an address block follows the service index */
#define GT_FRAME_FLAG_CAPS 0x04 /* HELLO, WELCOME: a capabilities u32 ends the payload */

/* Capability bits (HELLO and WELCOME with GT_FRAME_FLAG_CAPS). */
#define GT_CAP_FORWARD 0x00000001u /* client-opened FORWARD streams, odd/even stream ids */
#define GT_CAP_DATAGRAM 0x00000002u /* DATAGRAM frames: udp services */
#define GT_CAPS_KNOWN (GT_CAP_FORWARD | GT_CAP_DATAGRAM)

/* DATAGRAM payload: flow_id:u32 (≥ 1) service_index:u16, then the datagram's bytes. */
#define GT_DATAGRAM_PREFIX_SIZE 6
/* Largest UDP payload (IPv4: 65535 - 8 - 20); a DATAGRAM never carries more. */
#define GT_DATAGRAM_MAX_DATA 65507
#define GT_DATAGRAM_MAX_PAYLOAD (GT_DATAGRAM_PREFIX_SIZE + GT_DATAGRAM_MAX_DATA)

/* Error codes carried by ERROR and GOAWAY frames (u16). */
typedef enum
{
  GT_ERROR_CODE_NONE = 0,
  GT_ERROR_CODE_INVALID_AUTH = 1,       /* invalid id or secret */
  GT_ERROR_CODE_PORT_UNAVAILABLE = 2,   /* failed to open tcp port */
  GT_ERROR_CODE_TOO_MANY_TUNNELS = 3,   /* reached the max connections */
  GT_ERROR_CODE_HOST_NUMBER = 4,        /* too many host prefixes */
  GT_ERROR_CODE_HOST_CONFLICT = 5,      /* host prefix used by another client */
  GT_ERROR_CODE_HOST_REGEX = 6,         /* host prefix does not match allowed regex */
  GT_ERROR_CODE_CONFIG_CONFLICT = 7,    /* same id connected with different services */
  GT_ERROR_CODE_TOO_MANY_OPTIONS = 8,   /* too many services in handshake */
  GT_ERROR_CODE_TCP_NUMBER = 9,         /* too many tcp ports */
  GT_ERROR_CODE_UNSUPPORTED_VERSION = 10,
  GT_ERROR_CODE_PROTOCOL = 11,          /* malformed frame or state violation */
  GT_ERROR_CODE_FLOW_CONTROL = 12,      /* peer exceeded its window */
  GT_ERROR_CODE_SHUTTING_DOWN = 13,     /* GOAWAY: server is going away */
  GT_ERROR_CODE_TIMEOUT = 14,           /* handshake or ping timeout */
  GT_ERROR_CODE_INTERNAL = 15,
  GT_ERROR_CODE_ELSEWHERE = 16,         /* cluster: the id, a prefix or a port is held by
                                         * another node */
  GT_ERROR_CODE_REGISTRY_UNAVAILABLE = 17, /* cluster: etcd cannot be reached; try later */
  GT_ERROR_CODE_UDP_NUMBER = 18,        /* too many udp ports */
} GtErrorCode;

/* Reset codes carried by RESET frames (u32). */
typedef enum
{
  GT_RESET_CODE_CLOSED = 0,         /* normal abort (peer socket error / closed) */
  GT_RESET_CODE_CONNECT_FAILED = 1, /* client could not dial its local service */
  GT_RESET_CODE_NO_SERVICE = 2,     /* service index unknown */
  GT_RESET_CODE_TIMEOUT = 3,        /* local/user side idle timeout */
  GT_RESET_CODE_FLOW_CONTROL = 4,
  GT_RESET_CODE_REFUSED = 5,        /* stream refused (shutting down, limits) */
  GT_RESET_CODE_UNKNOWN_HOST = 6,   /* FORWARD: no client holds the host prefix */
  GT_RESET_CODE_NOT_ALLOWED = 7,    /* FORWARD: no tcpForwardAllow rule lets this client reach it */
  GT_RESET_CODE_TARGET_OFFLINE = 8, /* FORWARD: the prefix's client is not reachable now */
} GtResetCode;

typedef struct
{
  guint8 type;
  guint8 flags;
  guint32 stream_id;
  guint32 length;
} GtFrameHeader;

/* Result of a decoding step over a byte buffer. */
typedef enum
{
  GT_DECODE_OK = 0,
  GT_DECODE_NEED_MORE = 1,
  GT_DECODE_ERROR = 2,
} GtDecodeResult;

/* One service as announced in HELLO. */
typedef struct
{
  GtServiceKind kind;
  char *prefix;           /* http/https: host prefix (never NULL for http/https; "" not allowed) */
  guint16 remote_port;    /* tcp, udp: requested port, 0 = any */
  gboolean remote_random; /* tcp, udp: a random port from the pool is acceptable */
} GtHelloService;

typedef struct
{
  char *id;
  char *secret;
  GPtrArray *services; /* GtHelloService*, owned */
  guint32 caps;        /* GT_CAP_*: encoded with GT_FRAME_FLAG_CAPS when not 0 */
  gboolean has_caps;   /* decoded: the HELLO had GT_FRAME_FLAG_CAPS */
} GtHello;

/* One tcp or udp port opened by the server, in WELCOME. */
typedef struct
{
  guint16 service_index;
  guint16 port;
} GtWelcomePort;

#define GT_FRAME_ERROR_DOMAIN (gt_frame_error_quark ())
GQuark gt_frame_error_quark (void);
typedef enum
{
  GT_FRAME_ERROR_MALFORMED,   /* bad bytes */
  GT_FRAME_ERROR_TOO_LARGE,   /* a length above its limit */
  GT_FRAME_ERROR_VERSION,     /* preface with an unsupported version */
} GtFrameErrorEnum;

/* Preface. */
void gt_preface_encode (guint8 out[GT_PREFACE_SIZE]);
/* NEED_MORE if len < 4; ERROR (MALFORMED if not magic, VERSION if other version). */
GtDecodeResult gt_preface_decode (const guint8 *buf, gsize len, guint8 *version_out, GError **error);

/* Header. */
void gt_frame_header_encode (guint8 out[GT_FRAME_HEADER_SIZE], GtFrameType type, guint8 flags,
                             guint32 stream_id, guint32 length);
/* Decodes and validates a header: known type, length within limits (per type: exact for WINDOW 4,
 * PING 8, RESET 4, SHUTDOWN 0; ≤ GT_FRAME_MAX_CONTROL for HELLO/WELCOME/ERROR/GOAWAY; ≤
 * GT_FRAME_MAX_PAYLOAD for DATA/OPEN), stream_id zero exactly for connection-level types. */
GtDecodeResult gt_frame_header_decode (const guint8 *buf, gsize len, GtFrameHeader *hdr,
                                       GError **error);

/* Payload encoders append a whole frame (header + payload) to out. */
void gt_frame_append_header (GByteArray *out, GtFrameType type, guint8 flags, guint32 stream_id,
                             guint32 length);
gboolean gt_frame_append_hello (GByteArray *out, const GtHello *hello, GError **error);
void gt_frame_append_welcome (GByteArray *out, const GtWelcomePort *ports, guint n_ports);
/* WELCOME with GT_FRAME_FLAG_CAPS and caps after the ports: only to a HELLO that had CAPS. */
void gt_frame_append_welcome_caps (GByteArray *out, const GtWelcomePort *ports, guint n_ports,
                                   guint32 caps);
/* FORWARD header + prefix; the caller appends data_len bytes of data. prefix: 1..200 bytes of
 * [A-Za-z0-9-] (checked by the caller; sent lower case). */
void gt_frame_append_forward_header (GByteArray *out, guint32 stream_id, const char *prefix,
                                     gsize data_len);
/* The server's answer: FORWARD with GT_FRAME_FLAG_ACK and no payload. */
void gt_frame_append_forward_ack (GByteArray *out, guint32 stream_id);
void gt_frame_append_window (GByteArray *out, guint32 stream_id, guint32 increment);
void gt_frame_append_reset (GByteArray *out, guint32 stream_id, GtResetCode code);
void gt_frame_append_shutdown (GByteArray *out, guint32 stream_id);
void gt_frame_append_ping (GByteArray *out, gboolean ack, const guint8 opaque[8]);
/* message is truncated to GT_MESSAGE_MAX_LEN bytes (at a UTF-8 boundary). */
void gt_frame_append_error (GByteArray *out, GtFrameType type /* ERROR or GOAWAY */,
                            GtErrorCode code, const char *message);
/* OPEN header + service index; the caller appends `data_len` bytes of data after it. */
void gt_frame_append_open_header (GByteArray *out, guint32 stream_id, guint16 service_index,
                                  gsize data_len);
#define GT_OPEN_PREFIX_SIZE 2 /* service_index:u16 before the OPEN data */

/* The user's connection as the server saw it, carried in OPEN with GT_FRAME_FLAG_ADDR so the
 * client can pass it on (PROXY protocol) and log it: family:u8 (4 or 6), src addr (4|16 bytes),
 * src port:u16, dst addr (4|16), dst port:u16. */
typedef struct
{
  guint8 family; /* 4 or 6 */
  guint8 src[16];
  guint16 src_port;
  guint8 dst[16];
  guint16 dst_port;
} GtOpenAddr;

gsize gt_open_addr_size (const GtOpenAddr *addr);
/* OPEN header (with GT_FRAME_FLAG_ADDR when addr is not NULL) + service index + address block;
 * the caller appends data_len bytes of data. */
void gt_frame_append_open_header_addr (GByteArray *out, guint32 stream_id, guint16 service_index,
                                       const GtOpenAddr *addr, gsize data_len);
/* Like gt_open_decode for a frame with the given header flags; *has_addr tells whether addr was
 * filled. */
gboolean gt_open_decode_addr (const guint8 *buf, gsize len, guint8 flags, guint16 *service_index,
                              GtOpenAddr *addr, gboolean *has_addr, const guint8 **data,
                              gsize *data_len, GError **error);

/* DATAGRAM (docs/protocol.md §6.12): the 6-byte prefix before the datagram's bytes, also the
 * head of a QUIC DATAGRAM frame's payload on quic:// tunnels. */
void gt_datagram_prefix_encode (guint8 out[GT_DATAGRAM_PREFIX_SIZE], guint32 flow_id,
                                guint16 service_index);
/* DATAGRAM header + prefix; the caller appends data_len (≤ GT_DATAGRAM_MAX_DATA) bytes. */
void gt_frame_append_datagram_header (GByteArray *out, guint32 flow_id, guint16 service_index,
                                      gsize data_len);
/* A DATAGRAM payload (or a QUIC DATAGRAM frame's payload): flow id ≥ 1, service index, and the
 * bytes (at most GT_DATAGRAM_MAX_DATA; *data points into buf). */
gboolean gt_datagram_decode (const guint8 *buf, gsize len, guint32 *flow_id,
                             guint16 *service_index, const guint8 **data, gsize *data_len,
                             GError **error);

/* Payload decoders: buf/len is exactly the payload of a frame whose header was decoded. */
GtHello *gt_hello_decode (const guint8 *buf, gsize len, GError **error);
/* The same for a HELLO whose header had these flags: with GT_FRAME_FLAG_CAPS the payload ends
 * with the capabilities (hello->has_caps, hello->caps) and, with GT_CAP_FORWARD, may list no
 * service. */
GtHello *gt_hello_decode_flags (const guint8 *buf, gsize len, guint8 flags, GError **error);
/* Whether s is a host prefix FORWARD may carry: 1..200 bytes of [A-Za-z0-9-]. */
gboolean gt_forward_prefix_is_valid (const char *s);
void gt_hello_free (GtHello *hello);
GtHello *gt_hello_new (const char *id, const char *secret);
void gt_hello_add_service (GtHello *hello, GtServiceKind kind, const char *prefix,
                           guint16 remote_port, gboolean remote_random);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtHello, gt_hello_free)

/* Returns an array of GtWelcomePort. */
GArray *gt_welcome_decode (const guint8 *buf, gsize len, GError **error);
/* The same for a WELCOME whose header had these flags; *caps gets the capabilities (0 without
 * GT_FRAME_FLAG_CAPS). */
GArray *gt_welcome_decode_flags (const guint8 *buf, gsize len, guint8 flags, guint32 *caps,
                                 GError **error);
/* FORWARD payload (C→S): *prefix (lower case, owned by the caller) and the data after it. */
gboolean gt_forward_decode (const guint8 *buf, gsize len, char **prefix, const guint8 **data,
                            gsize *data_len, GError **error);
gboolean gt_window_decode (const guint8 *buf, gsize len, guint32 *increment, GError **error);
gboolean gt_reset_decode (const guint8 *buf, gsize len, guint32 *code, GError **error);
gboolean gt_open_decode (const guint8 *buf, gsize len, guint16 *service_index,
                         const guint8 **data, gsize *data_len, GError **error);
/* ERROR and GOAWAY payloads: code:u16 msglen:u16 msg (valid UTF-8, ≤ GT_MESSAGE_MAX_LEN). */
gboolean gt_error_decode (const guint8 *buf, gsize len, guint16 *code, char **message,
                          GError **error);

const char *gt_error_code_to_string (GtErrorCode code);
const char *gt_frame_type_to_string (guint8 type);
/* "connect failed", "unknown host prefix", ... for logs. */
const char *gt_reset_code_to_string (guint32 code);

G_END_DECLS
