/* gt-turn-server.c: TURN relay (RFC 8656) over UDP, on the STUN socket of the server's stunAddr.
 *
 * A peer behind a NAT that ICE cannot cross allocates a relayed UDP address here and reaches the
 * other side through it. Credentials are TURN's REST form, derived from the user's secret: a
 * client (or the page it hands them to) needs no password of its own. Every allocation, its
 * permissions and channels expire by time; allocations are bounded per user and in all. */
#include "config.h"

#define G_LOG_DOMAIN "gt-p2p"

#include "gt-turn-server.h"

#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "gt-fd-source.h"
#include "gt-stun.h"
#include "gt-token-bucket.h"

#define DEFAULT_LIFETIME_S 600
#define MAX_LIFETIME_S 3600
#define PERMISSION_LIFETIME_S 300
#define CHANNEL_LIFETIME_S 600
#define NONCE_LIFETIME_S 600
#define MAX_PERMISSIONS 32
#define MAX_CHANNELS 64
#define SWEEP_INTERVAL_S 5
/* Unauthenticated answers (401, 438, 400 without a key) go to any source address, so a spoofed
 * source turns the server into a ~5x reflector. They are rate-limited per source IP (a keyed hash
 * into a fixed table of buckets: bounded memory, collisions only share a budget) and in total. */
#define ANSWER_BUCKETS 1024
#define ANSWERS_PER_SOURCE_RATE 10
#define ANSWERS_PER_SOURCE_BURST 20
#define ANSWERS_TOTAL_RATE 2000
#define SUPPRESSED_LOG_INTERVAL_S 10
/* Peer datagrams read per wake-up of one relayed socket. */
#define READS_PER_WAKE 64
#define PROTOCOL_UDP 17

typedef struct
{
  GtStunAddress peer; /* port ignored: permissions are per IP address */
  gint64 expires;     /* monotonic seconds */
} Permission;

typedef struct
{
  guint16 number;
  GtStunAddress peer;
  gint64 expires;
} Channel;

typedef struct
{
  GtTurnServer *turn;
  char *key; /* the client's address: the allocation's 5-tuple on our one socket */
  struct sockaddr_storage client;
  socklen_t client_len;
  char *username; /* "EXPIRY:USER" as authenticated */
  char *user;
  guint8 hmac_key[16];
  guint8 txid[12]; /* of the Allocate that made it: a retransmission gets the same answer */
  int fd;
  GtFdWatch *source;
  GtStunAddress relayed;
  gint64 expires;
  Permission permissions[MAX_PERMISSIONS];
  guint n_permissions;
  Channel channels[MAX_CHANNELS];
  guint n_channels;
} Allocation;

struct _GtTurnServer
{
  char *realm;
  char *relay_ip;
  gboolean allow_loopback;
  guint max_per_user;
  guint max_allocations;
  GtTurnSecretFunc secret_for;
  gpointer secret_data;
  int fd;
  guint8 nonce_key[32];
  GHashTable *allocations; /* client address → Allocation* (owned) */
  GHashTable *per_user;    /* user → count */
  guint sweep_id;
  guint64 relayed_bytes;
  guint64 answer_hash_key;
  GtTokenBucket answer_buckets[ANSWER_BUCKETS];
  GtTokenBucket answers_total;
  guint64 answers_suppressed;
  guint64 answers_suppressed_logged;
  gint64 suppressed_logged_at;
};

static gint64
now_s (void)
{
  return g_get_monotonic_time () / G_USEC_PER_SEC;
}

/* The text of an address, written into text: the key of allocations, looked up for every
 * datagram, so no allocation here. */
#define ADDRESS_KEY_LEN (INET6_ADDRSTRLEN + 8)

static const char *
address_key (const GtStunAddress *a, char text[ADDRESS_KEY_LEN])
{
  char ip[INET6_ADDRSTRLEN];

  if (inet_ntop (a->family == 4 ? AF_INET : AF_INET6, a->bytes, ip, sizeof ip) == NULL)
    ip[0] = '\0';
  g_snprintf (text, ADDRESS_KEY_LEN, a->family == 4 ? "%s:%u" : "[%s]:%u", ip, a->port);
  return text;
}

static gboolean
same_ip (const GtStunAddress *a, const GtStunAddress *b)
{
  return a->family == b->family && memcmp (a->bytes, b->bytes, a->family == 4 ? 4 : 16) == 0;
}

static gboolean
same_address (const GtStunAddress *a, const GtStunAddress *b)
{
  return same_ip (a, b) && a->port == b->port;
}

/* Loopback, unspecified and multicast peers are refused unless allowed: a relay must not reach
 * the server's own services. */
static gboolean
peer_allowed (GtTurnServer *turn, const GtStunAddress *peer)
{
  static const guint8 zero[16] = { 0 };

  if (turn->allow_loopback)
    return TRUE;
  if (peer->family == 4)
    return peer->bytes[0] != 127 && peer->bytes[0] != 0 && (peer->bytes[0] & 0xf0) != 0xe0;
  if (memcmp (peer->bytes, zero, 15) == 0 && (peer->bytes[15] == 0 || peer->bytes[15] == 1))
    return FALSE;
  return peer->bytes[0] != 0xff;
}

/* Credentials ------------------------------------------------------------------------------- */

char *
gt_turn_password (const char *secret, const char *username)
{
  g_autoptr (GHmac) hmac = g_hmac_new (G_CHECKSUM_SHA1, (const guchar *)secret, strlen (secret));
  guint8 digest[20];
  gsize len = sizeof digest;

  g_hmac_update (hmac, (const guchar *)username, -1);
  g_hmac_get_digest (hmac, digest, &len);
  return g_base64_encode (digest, len);
}

void
gt_turn_credentials (const char *user, const char *secret, guint valid_s, char **username,
                     char **password)
{
  *username = g_strdup_printf ("%" G_GINT64_FORMAT ":%s",
                               g_get_real_time () / G_USEC_PER_SEC + valid_s, user);
  *password = gt_turn_password (secret, *username);
}

/* Nonces carry their expiry and a MAC of it under a key of this process: nothing to store. */
static char *
make_nonce (GtTurnServer *turn, gint64 expires)
{
  g_autofree char *stamp = g_strdup_printf ("%016" G_GINT64_MODIFIER "x", expires);
  g_autofree char *mac = g_compute_hmac_for_string (G_CHECKSUM_SHA256, turn->nonce_key,
                                                    sizeof turn->nonce_key, stamp, -1);

  return g_strdup_printf ("%s%.16s", stamp, mac);
}

static gboolean
nonce_valid (GtTurnServer *turn, const GtStunMessage *msg)
{
  char text[33];
  g_autofree char *expected = NULL;
  gint64 expires;

  if (msg->nonce == NULL || msg->nonce_len != 32)
    return FALSE;
  memcpy (text, msg->nonce, 32);
  text[32] = '\0';
  text[16] = '\0';
  expires = (gint64)g_ascii_strtoull (text, NULL, 16);
  if (expires < now_s ())
    return FALSE;
  expected = make_nonce (turn, expires);
  return memcmp (expected, msg->nonce, 32) == 0;
}

/* Answers -------------------------------------------------------------------------------------- */

static void
send_to_client (GtTurnServer *turn, const guint8 *buf, gsize len, const struct sockaddr_storage *to,
                socklen_t to_len)
{
  if (sendto (turn->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *)to, to_len)
      < 0)
    g_debug ("TURN: sendto: %s", g_strerror (errno));
}

/* FNV-1a over the source IP, seeded with a random key so that nobody can aim collisions at
 * another client's bucket. */
static guint
answer_bucket_index (GtTurnServer *turn, const struct sockaddr_storage *to)
{
  const guint8 *ip;
  gsize len;
  guint64 h = 0xcbf29ce484222325ull ^ turn->answer_hash_key;

  if (to->ss_family == AF_INET6)
    {
      ip = ((const struct sockaddr_in6 *)to)->sin6_addr.s6_addr;
      len = 16;
    }
  else
    {
      ip = (const guint8 *)&((const struct sockaddr_in *)to)->sin_addr.s_addr;
      len = 4;
    }
  for (gsize i = 0; i < len; i++)
    h = (h ^ ip[i]) * 0x100000001b3ull;
  return (guint)((h ^ (h >> 32)) % ANSWER_BUCKETS);
}

/* TRUE if an unauthenticated answer may go to `to` now; counts (and now and then logs) the
 * answers held back. */
static gboolean
unauthenticated_answer_allowed (GtTurnServer *turn, const struct sockaddr_storage *to)
{
  gint64 now_us = g_get_monotonic_time ();
  GtTokenBucket *bucket = &turn->answer_buckets[answer_bucket_index (turn, to)];

  if (gt_token_bucket_wait_us (bucket, 1, now_us) == 0
      && gt_token_bucket_wait_us (&turn->answers_total, 1, now_us) == 0)
    {
      gt_token_bucket_take (bucket, 1, now_us);
      gt_token_bucket_take (&turn->answers_total, 1, now_us);
      return TRUE;
    }
  turn->answers_suppressed++;
  if (turn->suppressed_logged_at == 0
      || now_us - turn->suppressed_logged_at >= SUPPRESSED_LOG_INTERVAL_S * G_USEC_PER_SEC)
    {
      g_message ("TURN: rate limit: %" G_GUINT64_FORMAT
                 " unauthenticated answers not sent (per source %u/s, total %u/s)",
                 turn->answers_suppressed - turn->answers_suppressed_logged,
                 ANSWERS_PER_SOURCE_RATE, ANSWERS_TOTAL_RATE);
      turn->answers_suppressed_logged = turn->answers_suppressed;
      turn->suppressed_logged_at = now_us;
    }
  return FALSE;
}

static void
send_error (GtTurnServer *turn, const GtStunMessage *req, guint code, const char *reason,
            const guint8 *key, const struct sockaddr_storage *to, socklen_t to_len)
{
  guint8 out[GT_STUN_MAX_MESSAGE];
  GtStunBuilder b;
  gsize n;

  if ((key == NULL || code == 401 || code == 438) && !unauthenticated_answer_allowed (turn, to))
    return;
  gt_stun_builder_init (&b, out, sizeof out, req->method, GT_STUN_CLASS_ERROR, req->transaction_id);
  gt_stun_builder_add_error (&b, code, reason);
  if (code == 401 || code == 438)
    {
      g_autofree char *nonce = make_nonce (turn, now_s () + NONCE_LIFETIME_S);

      gt_stun_builder_add_bytes (&b, GT_STUN_ATTR_REALM, turn->realm, strlen (turn->realm));
      gt_stun_builder_add_bytes (&b, GT_STUN_ATTR_NONCE, nonce, strlen (nonce));
      key = NULL;
    }
  n = gt_stun_builder_finish (&b, key, key != NULL ? 16 : 0);
  send_to_client (turn, out, n, to, to_len);
}

/* Checks the long-term credentials of a request. On success fills user, username and key; else
 * answers (401, 438) and returns FALSE. */
static gboolean
authenticate (GtTurnServer *turn, const guint8 *buf, const GtStunMessage *msg,
              const struct sockaddr_storage *from, socklen_t from_len, char **user_out,
              char **username_out, guint8 key[16])
{
  g_autofree char *username = NULL;
  g_autofree char *password = NULL;
  const char *colon, *secret;
  char *end = NULL;
  guint64 expiry;

  if (msg->integrity_offset == 0 || msg->username == NULL || msg->realm == NULL
      || msg->nonce == NULL)
    {
      send_error (turn, msg, 401, "Unauthenticated", NULL, from, from_len);
      return FALSE;
    }
  if (!nonce_valid (turn, msg))
    {
      send_error (turn, msg, 438, "Stale Nonce", NULL, from, from_len);
      return FALSE;
    }
  username = g_strndup ((const char *)msg->username, msg->username_len);
  colon = strchr (username, ':');
  expiry = colon != NULL ? g_ascii_strtoull (username, &end, 10) : 0;
  if (colon == NULL || end != colon || colon[1] == '\0'
      || (gint64)expiry < g_get_real_time () / G_USEC_PER_SEC
      || msg->realm_len != strlen (turn->realm)
      || memcmp (msg->realm, turn->realm, msg->realm_len) != 0
      || (secret = turn->secret_for (colon + 1, turn->secret_data)) == NULL)
    {
      g_debug ("TURN: refused credentials (unknown user, expired or malformed username)");
      send_error (turn, msg, 401, "Unauthenticated", NULL, from, from_len);
      return FALSE;
    }
  password = gt_turn_password (secret, username);
  gt_stun_long_term_key (username, turn->realm, password, key);
  if (!gt_stun_check_integrity (buf, msg, key, 16))
    {
      g_debug ("TURN: wrong MESSAGE-INTEGRITY for user %s", colon + 1);
      send_error (turn, msg, 401, "Unauthenticated", NULL, from, from_len);
      return FALSE;
    }
  *user_out = g_strdup (colon + 1);
  *username_out = g_steal_pointer (&username);
  return TRUE;
}

/* Allocations --------------------------------------------------------------------------------- */

static void
allocation_free (Allocation *a)
{
  GtTurnServer *turn = a->turn;
  guint count = GPOINTER_TO_UINT (g_hash_table_lookup (turn->per_user, a->user));

  if (count > 1)
    g_hash_table_insert (turn->per_user, g_strdup (a->user), GUINT_TO_POINTER (count - 1));
  else
    g_hash_table_remove (turn->per_user, a->user);
  g_clear_pointer (&a->source, gt_fd_watch_free);
  if (a->fd >= 0)
    close (a->fd);
  g_free (a->key);
  g_free (a->username);
  g_free (a->user);
  g_free (a);
}

static Permission *
find_permission (Allocation *a, const GtStunAddress *peer)
{
  gint64 now = now_s ();

  for (guint i = 0; i < a->n_permissions; i++)
    if (a->permissions[i].expires > now && same_ip (&a->permissions[i].peer, peer))
      return &a->permissions[i];
  return NULL;
}

/* Installs or refreshes a permission; FALSE when the table is full. */
static gboolean
add_permission (Allocation *a, const GtStunAddress *peer)
{
  Permission *p = find_permission (a, peer);
  gint64 now = now_s ();

  if (p == NULL)
    {
      for (guint i = 0; i < a->n_permissions && p == NULL; i++)
        if (a->permissions[i].expires <= now)
          p = &a->permissions[i];
      if (p == NULL)
        {
          if (a->n_permissions == MAX_PERMISSIONS)
            return FALSE;
          p = &a->permissions[a->n_permissions++];
        }
      p->peer = *peer;
    }
  p->expires = now + PERMISSION_LIFETIME_S;
  return TRUE;
}

static Channel *
find_channel_by_number (Allocation *a, guint16 number)
{
  gint64 now = now_s ();

  for (guint i = 0; i < a->n_channels; i++)
    if (a->channels[i].expires > now && a->channels[i].number == number)
      return &a->channels[i];
  return NULL;
}

static Channel *
find_channel_by_peer (Allocation *a, const GtStunAddress *peer)
{
  gint64 now = now_s ();

  for (guint i = 0; i < a->n_channels; i++)
    if (a->channels[i].expires > now && same_address (&a->channels[i].peer, peer))
      return &a->channels[i];
  return NULL;
}

/* A datagram from a peer to a relayed address: to the client as ChannelData when the peer has
 * a channel, else as a Data indication; dropped without a permission. */
static void
relayed_readable_cb (int fd, GIOCondition revents, gpointer user_data)
{
  Allocation *a = user_data;
  GtTurnServer *turn = a->turn;

  for (guint i = 0; i < READS_PER_WAKE; i++)
    {
      guint8 buf[GT_TURN_MAX_MESSAGE];
      guint8 out[GT_TURN_MAX_MESSAGE + 4];
      struct sockaddr_storage from;
      socklen_t from_len = sizeof from;
      GtStunAddress peer;
      Channel *channel;
      gssize n;
      gsize out_len;

      n = recvfrom (fd, buf, sizeof buf, MSG_TRUNC, (struct sockaddr *)&from, &from_len);
      if (n < 0)
        return;
      if ((gsize)n > sizeof buf || !gt_stun_address_from_native (&from, &peer)
          || find_permission (a, &peer) == NULL)
        continue;
      channel = find_channel_by_peer (a, &peer);
      if (channel != NULL)
        out_len = gt_turn_channel_data_build (channel->number, buf, (gsize)n, out);
      else
        {
          guint8 txid[12];
          GtStunBuilder b;

          for (guint k = 0; k < 12; k++)
            txid[k] = (guint8)g_random_int_range (0, 256);
          gt_stun_builder_init (&b, out, sizeof out, GT_STUN_METHOD_DATA, GT_STUN_CLASS_INDICATION,
                                txid);
          if (!gt_stun_builder_add_xor_address (&b, GT_STUN_ATTR_XOR_PEER_ADDRESS, &peer)
              || !gt_stun_builder_add_bytes (&b, GT_STUN_ATTR_DATA, buf, (gsize)n))
            continue; /* larger than a Data indication may be */
          out_len = gt_stun_builder_finish (&b, NULL, 0);
          if (out_len == 0)
            continue;
        }
      turn->relayed_bytes += (guint64)n;
      send_to_client (turn, out, out_len, &a->client, a->client_len);
    }
}

/* Opens the relayed socket on relay_ip (an even port when asked). */
static int
open_relayed (GtTurnServer *turn, const GtStunMessage *msg, GtStunAddress *relayed)
{
  g_autoptr (GInetAddress) ip = g_inet_address_new_from_string (turn->relay_ip);
  g_autoptr (GSocketAddress) want = NULL;
  struct sockaddr_storage ss;
  socklen_t len;

  if (ip == NULL)
    return -1;
  want = g_inet_socket_address_new (ip, 0);
  for (guint attempt = 0; attempt < 16; attempt++)
    {
      int fd;

      if (!g_socket_address_to_native (want, &ss, sizeof ss, NULL))
        return -1;
      fd = socket (ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0)
        return -1;
      if (msg->dont_fragment && ss.ss_family == AF_INET)
        {
          int pmtu = IP_PMTUDISC_DO;

          setsockopt (fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu);
        }
      len = g_socket_address_get_native_size (want);
      if (bind (fd, (struct sockaddr *)&ss, len) < 0)
        {
          close (fd);
          return -1;
        }
      len = sizeof ss;
      if (getsockname (fd, (struct sockaddr *)&ss, &len) < 0
          || !gt_stun_address_from_native (&ss, relayed))
        {
          close (fd);
          return -1;
        }
      if (!msg->has_even_port || relayed->port % 2 == 0)
        return fd;
      close (fd);
    }
  return -1;
}

static guint32
clamp_lifetime (const GtStunMessage *msg)
{
  if (!msg->has_lifetime)
    return DEFAULT_LIFETIME_S;
  return CLAMP (msg->lifetime, DEFAULT_LIFETIME_S, MAX_LIFETIME_S);
}

static void
send_allocate_success (GtTurnServer *turn, Allocation *a, const GtStunMessage *msg,
                       const GtStunAddress *mapped)
{
  guint8 out[GT_STUN_MAX_MESSAGE];
  GtStunBuilder b;
  gint64 left = MAX (a->expires - now_s (), 0);

  gt_stun_builder_init (&b, out, sizeof out, GT_STUN_METHOD_ALLOCATE, GT_STUN_CLASS_SUCCESS,
                        msg->transaction_id);
  gt_stun_builder_add_xor_address (&b, GT_STUN_ATTR_XOR_RELAYED_ADDRESS, &a->relayed);
  gt_stun_builder_add_u32 (&b, GT_STUN_ATTR_LIFETIME, (guint32)left);
  gt_stun_builder_add_xor_address (&b, GT_STUN_ATTR_XOR_MAPPED_ADDRESS, mapped);
  send_to_client (turn, out, gt_stun_builder_finish (&b, a->hmac_key, 16), &a->client,
                  a->client_len);
}

static void
handle_allocate (GtTurnServer *turn, const guint8 *buf, const GtStunMessage *msg, const char *key,
                 const GtStunAddress *client, const struct sockaddr_storage *from,
                 socklen_t from_len)
{
  g_autofree char *user = NULL;
  g_autofree char *username = NULL;
  guint8 hkey[16];
  Allocation *a = g_hash_table_lookup (turn->allocations, key);
  guint count;
  char relayed_text[ADDRESS_KEY_LEN];

  if (!authenticate (turn, buf, msg, from, from_len, &user, &username, hkey))
    return;
  if (a != NULL)
    {
      /* A retransmitted Allocate gets its answer again; any other is a mismatch. */
      if (memcmp (a->txid, msg->transaction_id, 12) == 0 && strcmp (a->username, username) == 0)
        send_allocate_success (turn, a, msg, client);
      else
        send_error (turn, msg, 437, "Allocation Mismatch", hkey, from, from_len);
      return;
    }
  if (msg->requested_transport < 0)
    {
      send_error (turn, msg, 400, "Bad Request: no REQUESTED-TRANSPORT", hkey, from, from_len);
      return;
    }
  if (msg->requested_transport != PROTOCOL_UDP)
    {
      send_error (turn, msg, 442, "Unsupported Transport Protocol", hkey, from, from_len);
      return;
    }
  if (msg->has_reservation_token)
    {
      send_error (turn, msg, 508, "Insufficient Capacity: no reservations", hkey, from, from_len);
      return;
    }
  if (msg->requested_family != 0
      && (msg->requested_family == 6) != (strchr (turn->relay_ip, ':') != NULL))
    {
      send_error (turn, msg, 440, "Address Family not Supported", hkey, from, from_len);
      return;
    }
  count = GPOINTER_TO_UINT (g_hash_table_lookup (turn->per_user, user));
  if (count >= turn->max_per_user || g_hash_table_size (turn->allocations) >= turn->max_allocations)
    {
      g_message ("TURN: allocation refused for user %s: quota of %u reached", user,
                 count >= turn->max_per_user ? turn->max_per_user : turn->max_allocations);
      send_error (turn, msg, 486, "Allocation Quota Reached", hkey, from, from_len);
      return;
    }

  a = g_new0 (Allocation, 1);
  a->turn = turn;
  a->fd = open_relayed (turn, msg, &a->relayed);
  a->key = g_strdup (key);
  a->user = g_steal_pointer (&user);
  g_hash_table_insert (turn->per_user, g_strdup (a->user), GUINT_TO_POINTER (count + 1));
  if (a->fd < 0)
    {
      g_message ("TURN: no relayed address for user %s: %s", a->user, g_strerror (errno));
      send_error (turn, msg, 508, "Insufficient Capacity", hkey, from, from_len);
      allocation_free (a);
      return;
    }
  memcpy (&a->client, from, from_len);
  a->client_len = from_len;
  a->username = g_steal_pointer (&username);
  memcpy (a->hmac_key, hkey, sizeof hkey);
  memcpy (a->txid, msg->transaction_id, 12);
  a->expires = now_s () + clamp_lifetime (msg);
  a->source = gt_fd_watch_new (a->fd, G_IO_IN, relayed_readable_cb, a);
  g_hash_table_insert (turn->allocations, a->key, a);
  address_key (&a->relayed, relayed_text);
  g_message ("TURN: user %s from %s relayed at %s for %u s", a->user, key, relayed_text,
             clamp_lifetime (msg));
  send_allocate_success (turn, a, msg, client);
}

/* Refresh, CreatePermission and ChannelBind: on an allocation, by its owner. */
static Allocation *
owned_allocation (GtTurnServer *turn, const guint8 *buf, const GtStunMessage *msg, const char *key,
                  const struct sockaddr_storage *from, socklen_t from_len)
{
  g_autofree char *user = NULL;
  g_autofree char *username = NULL;
  guint8 hkey[16];
  Allocation *a;

  if (!authenticate (turn, buf, msg, from, from_len, &user, &username, hkey))
    return NULL;
  a = g_hash_table_lookup (turn->allocations, key);
  if (a == NULL)
    {
      send_error (turn, msg, 437, "Allocation Mismatch", hkey, from, from_len);
      return NULL;
    }
  if (strcmp (a->username, username) != 0)
    {
      send_error (turn, msg, 441, "Wrong Credentials", hkey, from, from_len);
      return NULL;
    }
  return a;
}

static void
send_success (GtTurnServer *turn, Allocation *a, const GtStunMessage *msg, gint64 lifetime)
{
  guint8 out[GT_STUN_MAX_MESSAGE];
  GtStunBuilder b;

  gt_stun_builder_init (&b, out, sizeof out, msg->method, GT_STUN_CLASS_SUCCESS,
                        msg->transaction_id);
  if (lifetime >= 0)
    gt_stun_builder_add_u32 (&b, GT_STUN_ATTR_LIFETIME, (guint32)lifetime);
  send_to_client (turn, out, gt_stun_builder_finish (&b, a->hmac_key, 16), &a->client,
                  a->client_len);
}

static void
handle_refresh (GtTurnServer *turn, Allocation *a, const GtStunMessage *msg)
{
  if (msg->has_lifetime && msg->lifetime == 0)
    {
      /* The answer goes out before the allocation (and its key) goes. */
      send_success (turn, a, msg, 0);
      g_message ("TURN: user %s from %s released its allocation", a->user, a->key);
      g_hash_table_remove (turn->allocations, a->key);
      return;
    }
  a->expires = now_s () + clamp_lifetime (msg);
  send_success (turn, a, msg, clamp_lifetime (msg));
}

static gboolean
check_peer (GtTurnServer *turn, Allocation *a, const GtStunMessage *msg, const GtStunAddress *peer)
{
  if (peer->family != a->relayed.family)
    {
      send_error (turn, msg, 443, "Peer Address Family Mismatch", a->hmac_key, &a->client,
                  a->client_len);
      return FALSE;
    }
  if (!peer_allowed (turn, peer))
    {
      send_error (turn, msg, 403, "Forbidden: peer address not relayed", a->hmac_key, &a->client,
                  a->client_len);
      return FALSE;
    }
  return TRUE;
}

static void
handle_create_permission (GtTurnServer *turn, Allocation *a, const GtStunMessage *msg)
{
  if (msg->n_peers == 0)
    {
      send_error (turn, msg, 400, "Bad Request: no XOR-PEER-ADDRESS", a->hmac_key, &a->client,
                  a->client_len);
      return;
    }
  /* All or none: checked first, installed after. */
  for (guint i = 0; i < msg->n_peers; i++)
    if (!check_peer (turn, a, msg, &msg->peers[i]))
      return;
  for (guint i = 0; i < msg->n_peers; i++)
    if (!add_permission (a, &msg->peers[i]))
      {
        send_error (turn, msg, 508, "Insufficient Capacity: too many permissions", a->hmac_key,
                    &a->client, a->client_len);
        return;
      }
  send_success (turn, a, msg, -1);
}

static void
handle_channel_bind (GtTurnServer *turn, Allocation *a, const GtStunMessage *msg)
{
  Channel *by_number, *by_peer;
  const GtStunAddress *peer = &msg->peers[0];

  if (!msg->has_channel || msg->channel < GT_TURN_CHANNEL_MIN || msg->channel > GT_TURN_CHANNEL_MAX
      || msg->n_peers != 1)
    {
      send_error (turn, msg, 400, "Bad Request: channel number or peer", a->hmac_key, &a->client,
                  a->client_len);
      return;
    }
  if (!check_peer (turn, a, msg, peer))
    return;
  by_number = find_channel_by_number (a, msg->channel);
  by_peer = find_channel_by_peer (a, peer);
  if (by_number != by_peer)
    {
      send_error (turn, msg, 400, "Bad Request: channel or peer bound otherwise", a->hmac_key,
                  &a->client, a->client_len);
      return;
    }
  if (by_number == NULL)
    {
      gint64 now = now_s ();

      for (guint i = 0; i < a->n_channels && by_number == NULL; i++)
        if (a->channels[i].expires <= now)
          by_number = &a->channels[i];
      if (by_number == NULL)
        {
          if (a->n_channels == MAX_CHANNELS || !add_permission (a, peer))
            {
              send_error (turn, msg, 508, "Insufficient Capacity: too many channels", a->hmac_key,
                          &a->client, a->client_len);
              return;
            }
          by_number = &a->channels[a->n_channels++];
        }
      by_number->number = msg->channel;
      by_number->peer = *peer;
    }
  if (!add_permission (a, peer))
    {
      send_error (turn, msg, 508, "Insufficient Capacity: too many permissions", a->hmac_key,
                  &a->client, a->client_len);
      return;
    }
  by_number->expires = now_s () + CHANNEL_LIFETIME_S;
  send_success (turn, a, msg, -1);
}

static void
relay_to_peer (GtTurnServer *turn, Allocation *a, const GtStunAddress *peer, const guint8 *data,
               gsize len)
{
  struct sockaddr_storage ss;
  guint ss_len;

  if (find_permission (a, peer) == NULL || !peer_allowed (turn, peer))
    return;
  ss_len = gt_stun_address_to_native (peer, &ss);
  if (ss_len == 0)
    return;
  if (sendto (a->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&ss, ss_len) >= 0)
    turn->relayed_bytes += len;
}

/* Entry points -------------------------------------------------------------------------------- */

gboolean
gt_turn_server_wants (const guint8 *buf, gsize len)
{
  guint16 method;

  if (len >= 4 && (buf[0] & 0xC0) == 0x40)
    return TRUE; /* ChannelData */
  if (!gt_stun_looks_like_stun (buf, len))
    return FALSE;
  method = (guint16)((buf[1] & 0x0F) | ((buf[1] >> 1) & 0x70) | ((buf[0] & 0x3E) << 6));
  return method >= GT_STUN_METHOD_ALLOCATE && method <= GT_STUN_METHOD_CHANNEL_BIND;
}

void
gt_turn_server_handle (GtTurnServer *turn, const guint8 *buf, gsize len,
                       const struct sockaddr_storage *from, socklen_t from_len)
{
  g_autoptr (GError) error = NULL;
  char key[ADDRESS_KEY_LEN];
  GtStunAddress client;
  GtStunMessage msg;
  Allocation *a;

  if (!gt_stun_address_from_native (from, &client))
    return;
  address_key (&client, key);

  if ((buf[0] & 0xC0) == 0x40)
    {
      const guint8 *data;
      gsize data_len;
      guint16 number;
      Channel *channel;

      a = g_hash_table_lookup (turn->allocations, key);
      if (a == NULL || !gt_turn_channel_data_parse (buf, len, &number, &data, &data_len))
        return;
      channel = find_channel_by_number (a, number);
      if (channel != NULL)
        relay_to_peer (turn, a, &channel->peer, data, data_len);
      return;
    }

  if (!gt_stun_parse_turn (buf, len, &msg, &error))
    {
      g_debug ("TURN: dropped a datagram of %" G_GSIZE_FORMAT " bytes: %s", len, error->message);
      return;
    }
  if (msg.klass == GT_STUN_CLASS_INDICATION)
    {
      /* Send: the only indication a client sends; anything wrong is dropped silently. */
      a = g_hash_table_lookup (turn->allocations, key);
      if (msg.method == GT_STUN_METHOD_SEND && a != NULL && msg.n_peers == 1 && msg.data != NULL)
        relay_to_peer (turn, a, &msg.peers[0], msg.data, msg.data_len);
      return;
    }
  if (msg.klass != GT_STUN_CLASS_REQUEST)
    return;
  if (msg.n_unknown > 0)
    {
      guint8 out[GT_STUN_MAX_MESSAGE];

      send_to_client (turn, out, gt_stun_build_error (&msg, 420, "Unknown Attribute", out), from,
                      from_len);
      return;
    }
  switch (msg.method)
    {
    case GT_STUN_METHOD_ALLOCATE:
      handle_allocate (turn, buf, &msg, key, &client, from, from_len);
      break;
    case GT_STUN_METHOD_REFRESH:
      if ((a = owned_allocation (turn, buf, &msg, key, from, from_len)) != NULL)
        handle_refresh (turn, a, &msg);
      break;
    case GT_STUN_METHOD_CREATE_PERMISSION:
      if ((a = owned_allocation (turn, buf, &msg, key, from, from_len)) != NULL)
        handle_create_permission (turn, a, &msg);
      break;
    case GT_STUN_METHOD_CHANNEL_BIND:
      if ((a = owned_allocation (turn, buf, &msg, key, from, from_len)) != NULL)
        handle_channel_bind (turn, a, &msg);
      break;
    default:
      send_error (turn, &msg, 400, "Bad Request", NULL, from, from_len);
      break;
    }
}

static gboolean
sweep_cb (gpointer user_data)
{
  GtTurnServer *turn = user_data;
  GHashTableIter iter;
  Allocation *a;
  gint64 now = now_s ();

  g_hash_table_iter_init (&iter, turn->allocations);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *)&a))
    {
      if (a->expires > now)
        continue;
      g_message ("TURN: allocation of user %s from %s expired", a->user, a->key);
      g_hash_table_iter_remove (&iter);
    }
  return G_SOURCE_CONTINUE;
}

GtTurnServer *
gt_turn_server_new (const GtTurnOptions *options, int fd)
{
  GtTurnServer *turn;

  g_return_val_if_fail (options != NULL && options->secret_for != NULL, NULL);
  g_return_val_if_fail (options->relay_ip != NULL, NULL);

  turn = g_new0 (GtTurnServer, 1);
  turn->realm = g_strdup (options->realm != NULL ? options->realm : "gt");
  turn->relay_ip = g_strdup (options->relay_ip);
  turn->allow_loopback = options->allow_loopback;
  turn->max_per_user = options->max_per_user;
  turn->max_allocations = options->max_allocations;
  turn->secret_for = options->secret_for;
  turn->secret_data = options->secret_data;
  turn->fd = fd;
  /* The nonce key must not be guessable: the kernel's generator, not GLib's. */
  if (getrandom (turn->nonce_key, sizeof turn->nonce_key, 0) != sizeof turn->nonce_key)
    g_error ("TURN: getrandom failed: %s", g_strerror (errno));
  if (getrandom (&turn->answer_hash_key, sizeof turn->answer_hash_key, 0)
      != sizeof turn->answer_hash_key)
    g_error ("TURN: getrandom failed: %s", g_strerror (errno));
  for (guint i = 0; i < ANSWER_BUCKETS; i++)
    gt_token_bucket_init (&turn->answer_buckets[i], ANSWERS_PER_SOURCE_RATE,
                          ANSWERS_PER_SOURCE_BURST);
  gt_token_bucket_init (&turn->answers_total, ANSWERS_TOTAL_RATE, ANSWERS_TOTAL_RATE);
  turn->allocations
      = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, (GDestroyNotify)allocation_free);
  turn->per_user = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  turn->sweep_id = g_timeout_add_seconds (SWEEP_INTERVAL_S, sweep_cb, turn);
  return turn;
}

void
gt_turn_server_free (GtTurnServer *turn)
{
  if (turn == NULL)
    return;
  g_source_remove (turn->sweep_id);
  g_hash_table_destroy (turn->allocations);
  g_hash_table_destroy (turn->per_user);
  g_free (turn->realm);
  g_free (turn->relay_ip);
  g_free (turn);
}

guint
gt_turn_server_get_allocations (GtTurnServer *turn)
{
  return g_hash_table_size (turn->allocations);
}

guint64
gt_turn_server_get_relayed_bytes (GtTurnServer *turn)
{
  return turn->relayed_bytes;
}
