/* gt-admin-auth.c: the admin UI's password hashes (PBKDF2-HMAC-SHA256 by GnuTLS), random tokens
 * and constant-time comparison. */
#include "config.h"

#include <string.h>
#include <gio/gio.h>
#include <gmodule.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "gt-admin-auth.h"

/* GnuTLS is loaded at run time, as for certificate generation (gt-certificate.c): the binary
 * does not link it. */
static struct
{
  int (*rnd) (gnutls_rnd_level_t level, void *data, size_t len);
  int (*pbkdf2) (gnutls_mac_algorithm_t mac, const gnutls_datum_t *key,
                 const gnutls_datum_t *salt, unsigned iter_count, void *output, size_t length);
} gt_tls;

static void
load_gnutls (void)
{
  static gsize loaded = 0;

  if (g_once_init_enter (&loaded))
    {
      GModule *module = g_module_open ("libgnutls.so.30", G_MODULE_BIND_LAZY | G_MODULE_BIND_LOCAL);

      if (module == NULL || !g_module_symbol (module, "gnutls_rnd", (gpointer *) &gt_tls.rnd)
          || !g_module_symbol (module, "gnutls_pbkdf2", (gpointer *) &gt_tls.pbkdf2))
        g_error ("the admin UI needs GnuTLS (libgnutls.so.30): %s", g_module_error ());
      g_module_make_resident (module);
      g_once_init_leave (&loaded, 1);
    }
}

#define gnutls_rnd(...) (load_gnutls (), gt_tls.rnd (__VA_ARGS__))
#define gnutls_pbkdf2(...) (load_gnutls (), gt_tls.pbkdf2 (__VA_ARGS__))

#define PREFIX "pbkdf2-sha256$"
#define SALT_LEN 16
#define HASH_LEN 32
#define MAX_ITERATIONS 10000000

gboolean
gt_admin_secure_equal (const char *a, const char *b)
{
  gsize la = strlen (a), lb = strlen (b);
  guint8 diff = la != lb;

  for (gsize i = 0; i < la; i++)
    diff |= (guint8) a[i] ^ (guint8) b[i % (lb > 0 ? lb : 1)];
  return diff == 0;
}

char *
gt_admin_random_token (gsize n)
{
  g_autofree guint8 *raw = g_malloc (n);
  GString *hex = g_string_sized_new (2 * n);

  if (gnutls_rnd (GNUTLS_RND_KEY, raw, n) != 0)
    g_error ("no random bytes from GnuTLS");
  for (gsize i = 0; i < n; i++)
    g_string_append_printf (hex, "%02x", raw[i]);
  memset (raw, 0, n);
  return g_string_free (hex, FALSE);
}

static char *
b64 (const guint8 *data, gsize len)
{
  char *text = g_base64_encode (data, len);
  char *eq = strchr (text, '=');

  if (eq != NULL)
    *eq = '\0';
  return text;
}

static guint8 *
unb64 (const char *text, gsize *len)
{
  gsize n = strlen (text);
  g_autofree char *padded = g_strnfill (n + (4 - n % 4) % 4, '=');

  memcpy (padded, text, n);
  for (gsize i = 0; i < n; i++)
    if (!g_ascii_isalnum (text[i]) && text[i] != '+' && text[i] != '/')
      return NULL;
  return g_base64_decode (padded, len);
}

static gboolean
derive (const char *password, const guint8 *salt, gsize salt_len, guint iterations,
        guint8 out[HASH_LEN])
{
  gnutls_datum_t key = { (unsigned char *) password, (unsigned int) strlen (password) };
  gnutls_datum_t s = { (unsigned char *) salt, (unsigned int) salt_len };

  return gnutls_pbkdf2 (GNUTLS_MAC_SHA256, &key, &s, iterations, out, HASH_LEN) == 0;
}

char *
gt_admin_password_hash (const char *password, GError **error)
{
  guint8 salt[SALT_LEN];
  guint8 hash[HASH_LEN];
  g_autofree char *salt_text = NULL;
  g_autofree char *hash_text = NULL;

  g_return_val_if_fail (password != NULL, NULL);
  if (gnutls_rnd (GNUTLS_RND_NONCE, salt, sizeof salt) != 0
      || !derive (password, salt, sizeof salt, GT_ADMIN_PBKDF2_ITERATIONS, hash))
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot hash the password");
      return NULL;
    }
  salt_text = b64 (salt, sizeof salt);
  hash_text = b64 (hash, sizeof hash);
  memset (hash, 0, sizeof hash);
  return g_strdup_printf (PREFIX "%u$%s$%s", GT_ADMIN_PBKDF2_ITERATIONS, salt_text, hash_text);
}

/* Splits a hash; FALSE when it is not one. */
static gboolean
parse_hash (const char *text, guint *iterations, guint8 **salt, gsize *salt_len, guint8 **hash)
{
  g_auto (GStrv) parts = NULL;
  guint64 iter;
  gsize hash_len = 0;
  g_autofree guint8 *s = NULL;
  g_autofree guint8 *h = NULL;

  if (text == NULL || !g_str_has_prefix (text, PREFIX))
    return FALSE;
  parts = g_strsplit (text + strlen (PREFIX), "$", 0);
  if (g_strv_length (parts) != 3
      || !g_ascii_string_to_unsigned (parts[0], 10, 1, MAX_ITERATIONS, &iter, NULL))
    return FALSE;
  s = unb64 (parts[1], salt_len);
  h = unb64 (parts[2], &hash_len);
  if (s == NULL || h == NULL || *salt_len < 8 || hash_len != HASH_LEN)
    return FALSE;
  *iterations = (guint) iter;
  *salt = g_steal_pointer (&s);
  *hash = g_steal_pointer (&h);
  return TRUE;
}

gboolean
gt_admin_password_is_hash (const char *text)
{
  guint iterations;
  g_autofree guint8 *salt = NULL;
  g_autofree guint8 *hash = NULL;
  gsize salt_len;

  return parse_hash (text, &iterations, &salt, &salt_len, &hash);
}

gboolean
gt_admin_password_verify (const char *password, const char *stored)
{
  guint iterations;
  g_autofree guint8 *salt = NULL;
  g_autofree guint8 *hash = NULL;
  gsize salt_len;
  guint8 got[HASH_LEN];
  guint8 diff = 0;

  if (password == NULL || stored == NULL || *stored == '\0')
    return FALSE;
  if (!parse_hash (stored, &iterations, &salt, &salt_len, &hash))
    return gt_admin_secure_equal (password, stored); /* GT's plaintext, until saved */
  if (!derive (password, salt, salt_len, iterations, got))
    return FALSE;
  for (guint i = 0; i < HASH_LEN; i++)
    diff |= got[i] ^ hash[i];
  memset (got, 0, sizeof got);
  return diff == 0;
}
