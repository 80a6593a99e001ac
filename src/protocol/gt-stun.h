/* gt-stun.h: STUN messages (RFC 8489) and the TURN (RFC 8656) methods, attributes and
 * ChannelData on top of them: a pure parser and builders (no sockets). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define GT_STUN_ERROR (gt_stun_error_quark ())
GQuark gt_stun_error_quark (void);
typedef enum
{
  GT_STUN_ERROR_NOT_STUN,   /* not a STUN message (first bits, magic cookie, length) */
  GT_STUN_ERROR_MALFORMED,  /* STUN header, but broken attributes or a bad FINGERPRINT */
  GT_STUN_ERROR_TOO_LARGE,  /* longer than GT_STUN_MAX_MESSAGE or too many attributes */
} GtStunErrorEnum;

#define GT_STUN_HEADER_SIZE 20
#define GT_STUN_MAGIC_COOKIE 0x2112A442u
/* Largest message accepted: the UDP payload of a 1500-byte Ethernet frame. */
#define GT_STUN_MAX_MESSAGE 1472
#define GT_STUN_MAX_ATTRIBUTES 32
/* Unknown comprehension-required attributes remembered for a 420 answer. */
#define GT_STUN_MAX_UNKNOWN 8

/* Largest TURN message or ChannelData accepted on a TURN server (Send indications carry the
 * peer's datagram); peer datagrams that do not fit in a Data indication of this size are
 * dropped. */
#define GT_TURN_MAX_MESSAGE 4096
#define GT_STUN_MAX_PEERS 8

#define GT_STUN_METHOD_BINDING 0x001
#define GT_STUN_METHOD_ALLOCATE 0x003
#define GT_STUN_METHOD_REFRESH 0x004
#define GT_STUN_METHOD_SEND 0x006
#define GT_STUN_METHOD_DATA 0x007
#define GT_STUN_METHOD_CREATE_PERMISSION 0x008
#define GT_STUN_METHOD_CHANNEL_BIND 0x009

/* TURN channel numbers (RFC 8656 §12). */
#define GT_TURN_CHANNEL_MIN 0x4000
#define GT_TURN_CHANNEL_MAX 0x4FFF

typedef enum
{
  GT_STUN_CLASS_REQUEST = 0,
  GT_STUN_CLASS_INDICATION = 1,
  GT_STUN_CLASS_SUCCESS = 2,
  GT_STUN_CLASS_ERROR = 3,
} GtStunClass;

/* Attribute types this code knows. */
enum
{
  GT_STUN_ATTR_MAPPED_ADDRESS = 0x0001,
  GT_STUN_ATTR_USERNAME = 0x0006,
  GT_STUN_ATTR_MESSAGE_INTEGRITY = 0x0008,
  GT_STUN_ATTR_ERROR_CODE = 0x0009,
  GT_STUN_ATTR_UNKNOWN_ATTRIBUTES = 0x000A,
  GT_STUN_ATTR_CHANNEL_NUMBER = 0x000C,      /* TURN */
  GT_STUN_ATTR_LIFETIME = 0x000D,            /* TURN */
  GT_STUN_ATTR_XOR_PEER_ADDRESS = 0x0012,    /* TURN */
  GT_STUN_ATTR_DATA = 0x0013,                /* TURN */
  GT_STUN_ATTR_REALM = 0x0014,
  GT_STUN_ATTR_NONCE = 0x0015,
  GT_STUN_ATTR_XOR_RELAYED_ADDRESS = 0x0016, /* TURN */
  GT_STUN_ATTR_REQUESTED_ADDRESS_FAMILY = 0x0017, /* TURN */
  GT_STUN_ATTR_EVEN_PORT = 0x0018,           /* TURN */
  GT_STUN_ATTR_REQUESTED_TRANSPORT = 0x0019, /* TURN */
  GT_STUN_ATTR_DONT_FRAGMENT = 0x001A,       /* TURN */
  GT_STUN_ATTR_MESSAGE_INTEGRITY_SHA256 = 0x001C,
  GT_STUN_ATTR_PASSWORD_ALGORITHM = 0x001D,
  GT_STUN_ATTR_USERHASH = 0x001E,
  GT_STUN_ATTR_XOR_MAPPED_ADDRESS = 0x0020,
  GT_STUN_ATTR_PRIORITY = 0x0024,      /* ICE (RFC 8445) */
  GT_STUN_ATTR_USE_CANDIDATE = 0x0025, /* ICE */
  GT_STUN_ATTR_RESERVATION_TOKEN = 0x0022,   /* TURN */
  GT_STUN_ATTR_SOFTWARE = 0x8022,
  GT_STUN_ATTR_FINGERPRINT = 0x8028,
  GT_STUN_ATTR_ICE_CONTROLLED = 0x8029,
  GT_STUN_ATTR_ICE_CONTROLLING = 0x802A,
};

/* An address as carried by (XOR-)MAPPED-ADDRESS: family 4 or 6, bytes in network order. */
typedef struct
{
  guint8 family;
  guint8 bytes[16];
  guint16 port;
} GtStunAddress;

typedef struct
{
  guint16 method;
  GtStunClass klass;
  guint8 transaction_id[12];
  gsize length;             /* bytes of the whole message (header included) */
  gboolean has_fingerprint; /* a FINGERPRINT was present (and correct: else an error) */
  guint16 unknown[GT_STUN_MAX_UNKNOWN]; /* comprehension-required types not known here */
  guint n_unknown;
  gboolean has_xor_mapped;  /* XOR-MAPPED-ADDRESS, decoded */
  GtStunAddress xor_mapped;
  guint error_code;         /* ERROR-CODE class*100+number, 0 when absent */
  /* Values below point into the parsed buffer and live as long as it does; NULL when absent. */
  const guint8 *username, *realm, *nonce, *data;
  guint16 username_len, realm_len, nonce_len, data_len;
  gsize integrity_offset;   /* offset of MESSAGE-INTEGRITY (attribute header), 0 = absent */
  gboolean has_lifetime;    /* TURN attributes */
  guint32 lifetime;
  gboolean has_channel;
  guint16 channel;
  gint requested_transport; /* IANA protocol number (17 = UDP), -1 when absent */
  guint requested_family;   /* 4 or 6, 0 when absent */
  gboolean has_even_port;
  gboolean has_reservation_token;
  gboolean dont_fragment;
  gboolean has_xor_relayed;
  GtStunAddress xor_relayed;
  GtStunAddress peers[GT_STUN_MAX_PEERS]; /* XOR-PEER-ADDRESS, in order */
  guint n_peers;
  /* A classic (RFC 3489) Binding request: no magic cookie, those 4 bytes are part of its
   * transaction id. libnice discovers server-reflexive candidates with these. */
  gboolean classic;
  guint8 classic_cookie[4];
} GtStunMessage;

struct sockaddr_storage;
/* Between socket addresses and STUN's; a v4-mapped IPv6 address becomes the v4 address it is.
 * FALSE for other families. to_native returns the length of the address written. */
gboolean gt_stun_address_from_native (const struct sockaddr_storage *ss, GtStunAddress *out);
guint gt_stun_address_to_native (const GtStunAddress *address, struct sockaddr_storage *ss);

/* Whether the bytes start like a STUN message (two zero bits, the magic cookie): used to tell
 * STUN from other datagrams on a shared socket. */
gboolean gt_stun_looks_like_stun (const guint8 *buf, gsize len);

/* Parses one datagram. FALSE with GT_STUN_ERROR_* when it is not one well-formed STUN message
 * (header, length a multiple of 4 equal to the datagram's, attributes inside the message,
 * FINGERPRINT last and correct, XOR-MAPPED-ADDRESS well formed); the caller drops it. Without
 * the magic cookie only a classic Binding request (RFC 3489, no FINGERPRINT) is accepted. */
gboolean gt_stun_parse (const guint8 *buf, gsize len, GtStunMessage *out, GError **error);
/* The same for a TURN server's socket: messages up to GT_TURN_MAX_MESSAGE. */
gboolean gt_stun_parse_turn (const guint8 *buf, gsize len, GtStunMessage *out, GError **error);

/* Long-term credentials (RFC 8489 §9.2): key = MD5 (username ":" realm ":" password). */
void gt_stun_long_term_key (const char *username, const char *realm, const char *password,
                            guint8 key[16]);
/* Whether the parsed message (from buf) carries a MESSAGE-INTEGRITY that matches key. */
gboolean gt_stun_check_integrity (const guint8 *buf, const GtStunMessage *msg, const guint8 *key,
                                  gsize key_len);

/* General builder: header, attributes, then SOFTWARE, MESSAGE-INTEGRITY (with a key) and
 * FINGERPRINT. out holds cap bytes; an attribute that does not fit is refused (FALSE) and the
 * message is left as it was. */
typedef struct
{
  guint8 *out;
  gsize cap;
  gsize pos;
} GtStunBuilder;

void gt_stun_builder_init (GtStunBuilder *b, guint8 *out, gsize cap, guint16 method,
                           GtStunClass klass, const guint8 transaction_id[12]);
gboolean gt_stun_builder_add_bytes (GtStunBuilder *b, guint16 type, const void *value,
                                    gsize len);
gboolean gt_stun_builder_add_u32 (GtStunBuilder *b, guint16 type, guint32 value);
gboolean gt_stun_builder_add_xor_address (GtStunBuilder *b, guint16 type,
                                          const GtStunAddress *address);
gboolean gt_stun_builder_add_error (GtStunBuilder *b, guint code, const char *reason);
/* Returns the message's length, or 0 if the trailer does not fit. */
gsize gt_stun_builder_finish (GtStunBuilder *b, const guint8 *key, gsize key_len);

/* ChannelData (RFC 8656 §12.4): a 4-byte header (channel, length) and the data. Parse: FALSE
 * unless the channel is in GT_TURN_CHANNEL_MIN..MAX and the length fits the datagram (padding
 * after it is allowed). */
gboolean gt_turn_channel_data_parse (const guint8 *buf, gsize len, guint16 *channel,
                                     const guint8 **data, gsize *data_len);
/* Writes header + data into out (at least 4 + data_len bytes); returns the length. */
gsize gt_turn_channel_data_build (guint16 channel, const guint8 *data, gsize data_len,
                                  guint8 *out);

/* Builders: write into out (at least GT_STUN_MAX_MESSAGE bytes) and return the length. Every
 * message ends with SOFTWARE "gt" and FINGERPRINT. */
gsize gt_stun_build_binding_request (const guint8 transaction_id[12], guint8 *out);
/* Success answer to request with XOR-MAPPED-ADDRESS = mapped; to a classic request, as RFC 8489
 * section 12 says: its cookie bytes back and MAPPED-ADDRESS (no SOFTWARE, no FINGERPRINT). */
gsize gt_stun_build_binding_success (const GtStunMessage *request, const GtStunAddress *mapped,
                                     guint8 *out);
/* Error answer (e.g. 400 Bad Request, 420 Unknown Attribute with the request's unknown types). */
gsize gt_stun_build_error (const GtStunMessage *request, guint code, const char *reason,
                           guint8 *out);

G_END_DECLS
