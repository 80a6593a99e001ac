/* gt-turn-server.h: TURN relay (RFC 8656, UDP) on the server's stunAddr socket, with
 * credentials derived from each user's secret. */
#pragma once

#include <gio/gio.h>
#include <sys/socket.h>

G_BEGIN_DECLS

/* The secret of a configured user, or NULL when there is no such user (never logged). */
typedef const char *(*GtTurnSecretFunc) (const char *user, gpointer user_data);

typedef struct
{
  const char *realm;           /* "gt" when NULL */
  const char *relay_ip;        /* IP literal the relayed sockets bind to and announce */
  gboolean allow_loopback;     /* relay to loopback/unspecified peers (tests, one-host setups) */
  guint max_per_user;          /* allocations per user */
  guint max_allocations;       /* allocations in all */
  GtTurnSecretFunc secret_for; /* looks users up */
  gpointer secret_data;
} GtTurnOptions;

typedef struct _GtTurnServer GtTurnServer;

/* fd: the stunAddr socket, on which answers, Data indications and ChannelData go out. */
GtTurnServer *gt_turn_server_new (const GtTurnOptions *options, int fd);
void gt_turn_server_free (GtTurnServer *turn);

/* Whether a datagram is for TURN: a TURN method (Allocate ... ChannelBind) or ChannelData. */
gboolean gt_turn_server_wants (const guint8 *buf, gsize len);
/* Handles one datagram from a client (a TURN request or indication, or ChannelData). */
void gt_turn_server_handle (GtTurnServer *turn, const guint8 *buf, gsize len,
                            const struct sockaddr_storage *from, socklen_t from_len);

/* The TURN REST credentials (as coturn's use-auth-secret and browsers' iceServers):
 * username "EXPIRY:USER" (EXPIRY in Unix seconds), password base64 (HMAC-SHA1 (secret,
 * username)). Newly allocated. */
char *gt_turn_password (const char *secret, const char *username);
/* Credentials for user with secret, good for valid_s seconds from now. */
void gt_turn_credentials (const char *user, const char *secret, guint valid_s, char **username,
                          char **password);

guint gt_turn_server_get_allocations (GtTurnServer *turn);
guint64 gt_turn_server_get_relayed_bytes (GtTurnServer *turn);

G_END_DECLS
