/* gt-admin-auth.h: the admin UI's password hashes (PBKDF2-HMAC-SHA256 by GnuTLS), random tokens
 * and constant-time comparison. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define GT_ADMIN_PBKDF2_ITERATIONS 200000

/* "pbkdf2-sha256$ITERATIONS$SALT$HASH" (salt and hash in unpadded base64) of password with a
 * fresh 16-byte salt. */
char *gt_admin_password_hash (const char *password, GError **error);
/* TRUE when text has the shape of a hash made by gt_admin_password_hash. */
gboolean gt_admin_password_is_hash (const char *text);
/* Compares password with stored (a hash, or GT's plaintext) in constant time. */
gboolean gt_admin_password_verify (const char *password, const char *stored);
/* n random bytes as lower-case hex (2n characters). */
char *gt_admin_random_token (gsize n);
gboolean gt_admin_secure_equal (const char *a, const char *b);

G_END_DECLS
