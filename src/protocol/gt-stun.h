/* gt-stun.h: STUN messages (RFC 8489): a pure parser and the builders of Binding requests and
 * responses (no sockets). */
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

#define GT_STUN_METHOD_BINDING 0x001

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
  GT_STUN_ATTR_REALM = 0x0014,
  GT_STUN_ATTR_NONCE = 0x0015,
  GT_STUN_ATTR_MESSAGE_INTEGRITY_SHA256 = 0x001C,
  GT_STUN_ATTR_PASSWORD_ALGORITHM = 0x001D,
  GT_STUN_ATTR_USERHASH = 0x001E,
  GT_STUN_ATTR_XOR_MAPPED_ADDRESS = 0x0020,
  GT_STUN_ATTR_PRIORITY = 0x0024,      /* ICE (RFC 8445) */
  GT_STUN_ATTR_USE_CANDIDATE = 0x0025, /* ICE */
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
  /* A classic (RFC 3489) Binding request: no magic cookie, those 4 bytes are part of its
   * transaction id. libnice discovers server-reflexive candidates with these. */
  gboolean classic;
  guint8 classic_cookie[4];
} GtStunMessage;

/* Whether the bytes start like a STUN message (two zero bits, the magic cookie): used to tell
 * STUN from other datagrams on a shared socket. */
gboolean gt_stun_looks_like_stun (const guint8 *buf, gsize len);

/* Parses one datagram. FALSE with GT_STUN_ERROR_* when it is not one well-formed STUN message
 * (header, length a multiple of 4 equal to the datagram's, attributes inside the message,
 * FINGERPRINT last and correct, XOR-MAPPED-ADDRESS well formed); the caller drops it. Without
 * the magic cookie only a classic Binding request (RFC 3489, no FINGERPRINT) is accepted. */
gboolean gt_stun_parse (const guint8 *buf, gsize len, GtStunMessage *out, GError **error);

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
