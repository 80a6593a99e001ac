/* gt-certificate.c: self-signed certificate generation (GnuTLS), fingerprints and pinning. */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include <string.h>
#include <time.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>

#include <gmodule.h>

#include "gt-certificate.h"

/* GnuTLS is loaded only when a certificate is generated: linking it would map and initialise it in
 * every gt process (about 2 MiB of resident memory) for a one-time job. */
#define GT_GNUTLS_SYMBOLS(X) \
  X (gnutls_rnd) \
  X (gnutls_x509_crt_deinit) \
  X (gnutls_x509_privkey_deinit) \
  X (gnutls_strerror) \
  X (gnutls_x509_crt_export2) \
  X (gnutls_x509_crt_get_key_id) \
  X (gnutls_x509_crt_init) \
  X (gnutls_x509_crt_set_activation_time) \
  X (gnutls_x509_crt_set_basic_constraints) \
  X (gnutls_x509_crt_set_dn_by_oid) \
  X (gnutls_x509_crt_set_expiration_time) \
  X (gnutls_x509_crt_set_key) \
  X (gnutls_x509_crt_set_key_purpose_oid) \
  X (gnutls_x509_crt_set_key_usage) \
  X (gnutls_x509_crt_set_serial) \
  X (gnutls_x509_crt_set_subject_alt_name) \
  X (gnutls_x509_crt_set_subject_key_id) \
  X (gnutls_x509_crt_set_version) \
  X (gnutls_x509_crt_sign2) \
  X (gnutls_x509_privkey_export2_pkcs8) \
  X (gnutls_x509_privkey_generate) \
  X (gnutls_x509_privkey_init)

#define GT_GNUTLS_DECLARE(name) __typeof__ (name) *name;
static struct
{
  GT_GNUTLS_SYMBOLS (GT_GNUTLS_DECLARE)
  gnutls_free_function *free_var;
  gboolean loaded;
} gt_gnutls;

static gboolean
gt_gnutls_load (GError **error)
{
  GModule *module;

  if (gt_gnutls.loaded)
    return TRUE;
  module = g_module_open ("libgnutls.so.30", G_MODULE_BIND_LAZY | G_MODULE_BIND_LOCAL);
  if (module == NULL)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                   "certificate generation needs GnuTLS (libgnutls.so.30): %s", g_module_error ());
      return FALSE;
    }
#define GT_GNUTLS_LOAD(name) \
  if (!g_module_symbol (module, #name, (gpointer *) &gt_gnutls.name)) \
    goto missing;
  GT_GNUTLS_SYMBOLS (GT_GNUTLS_LOAD)
  if (!g_module_symbol (module, "gnutls_free", (gpointer *) &gt_gnutls.free_var))
    goto missing;
  g_module_make_resident (module);
  gt_gnutls.loaded = TRUE;
  return TRUE;

missing:
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
               "certificate generation: GnuTLS lacks a function: %s", g_module_error ());
  g_module_close (module);
  return FALSE;
}

/* From here on, gnutls_* calls go through the table loaded above. */
#define gnutls_rnd gt_gnutls.gnutls_rnd
#define gnutls_x509_crt_deinit gt_gnutls.gnutls_x509_crt_deinit
#define gnutls_x509_privkey_deinit gt_gnutls.gnutls_x509_privkey_deinit
#define gnutls_strerror gt_gnutls.gnutls_strerror
#define gnutls_x509_crt_export2 gt_gnutls.gnutls_x509_crt_export2
#define gnutls_x509_crt_get_key_id gt_gnutls.gnutls_x509_crt_get_key_id
#define gnutls_x509_crt_init gt_gnutls.gnutls_x509_crt_init
#define gnutls_x509_crt_set_activation_time gt_gnutls.gnutls_x509_crt_set_activation_time
#define gnutls_x509_crt_set_basic_constraints gt_gnutls.gnutls_x509_crt_set_basic_constraints
#define gnutls_x509_crt_set_dn_by_oid gt_gnutls.gnutls_x509_crt_set_dn_by_oid
#define gnutls_x509_crt_set_expiration_time gt_gnutls.gnutls_x509_crt_set_expiration_time
#define gnutls_x509_crt_set_key gt_gnutls.gnutls_x509_crt_set_key
#define gnutls_x509_crt_set_key_purpose_oid gt_gnutls.gnutls_x509_crt_set_key_purpose_oid
#define gnutls_x509_crt_set_key_usage gt_gnutls.gnutls_x509_crt_set_key_usage
#define gnutls_x509_crt_set_serial gt_gnutls.gnutls_x509_crt_set_serial
#define gnutls_x509_crt_set_subject_alt_name gt_gnutls.gnutls_x509_crt_set_subject_alt_name
#define gnutls_x509_crt_set_subject_key_id gt_gnutls.gnutls_x509_crt_set_subject_key_id
#define gnutls_x509_crt_set_version gt_gnutls.gnutls_x509_crt_set_version
#define gnutls_x509_crt_sign2 gt_gnutls.gnutls_x509_crt_sign2
#define gnutls_x509_privkey_export2_pkcs8 gt_gnutls.gnutls_x509_privkey_export2_pkcs8
#define gnutls_x509_privkey_generate gt_gnutls.gnutls_x509_privkey_generate
#define gnutls_x509_privkey_init gt_gnutls.gnutls_x509_privkey_init
#define gnutls_free (*gt_gnutls.free_var)

#define P256_BITS GNUTLS_CURVE_TO_BITS (GNUTLS_ECC_CURVE_SECP256R1)
#define VALIDITY_SECONDS ((time_t) 10 * 365 * 24 * 3600)

typedef struct gnutls_x509_privkey_int GtX509Privkey;
typedef struct gnutls_x509_crt_int GtX509Crt;
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtX509Privkey, gnutls_x509_privkey_deinit)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtX509Crt, gnutls_x509_crt_deinit)

static void
datum_clear (gnutls_datum_t *d)
{
  if (d->data != NULL)
    {
      /* The key PEM passes through here: do not leave it in freed memory. */
      memset (d->data, 0, d->size);
      gnutls_free (d->data);
    }
  d->data = NULL;
  d->size = 0;
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (gnutls_datum_t, datum_clear)

static gboolean
check_gnutls (int ret, const char *what, GError **error)
{
  if (ret >= 0)
    return TRUE;
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "certificate generation: %s: %s", what,
               gnutls_strerror (ret));
  return FALSE;
}

static gboolean
add_name (gnutls_x509_crt_t crt, const char *name, GError **error)
{
  g_autoptr (GInetAddress) ip = NULL;
  g_autofree char *bare = NULL;
  gsize n = strlen (name);

  /* "[::1]" is accepted as an IPv6 literal too. */
  if (n > 2 && name[0] == '[' && name[n - 1] == ']')
    bare = g_strndup (name + 1, n - 2);
  else
    bare = g_strdup (name);
  ip = g_inet_address_new_from_string (bare);
  if (ip != NULL)
    return check_gnutls (gnutls_x509_crt_set_subject_alt_name (
                           crt, GNUTLS_SAN_IPADDRESS, g_inet_address_to_bytes (ip),
                           g_inet_address_get_native_size (ip), GNUTLS_FSAN_APPEND),
                         "IP address", error);
  if (*bare == '\0' || !g_str_is_ascii (bare) || strpbrk (bare, " /:@") != NULL)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "certificate generation: '%s' is neither a DNS name nor an IP address", name);
      return FALSE;
    }
  return check_gnutls (gnutls_x509_crt_set_subject_alt_name (crt, GNUTLS_SAN_DNSNAME, bare,
                                                             strlen (bare), GNUTLS_FSAN_APPEND),
                       "DNS name", error);
}

gboolean
gt_certificate_generate (const char *cert_path, const char *key_path, const char *const *names,
                         GError **error)
{
  static const char *const default_names[] = { "localhost", NULL };
  g_autoptr (GtX509Privkey) key = NULL;
  g_autoptr (GtX509Crt) crt = NULL;
  g_auto (gnutls_datum_t) cert_pem = { NULL, 0 };
  g_auto (gnutls_datum_t) key_pem = { NULL, 0 };
  guint8 serial[16];
  guint8 key_id[64];
  size_t key_id_len = sizeof key_id;
  time_t now = time (NULL);

  g_return_val_if_fail (cert_path != NULL, FALSE);
  g_return_val_if_fail (key_path != NULL, FALSE);

  if (names == NULL || names[0] == NULL)
    names = default_names;
  if (!gt_gnutls_load (error))
    return FALSE;

  if (!check_gnutls (gnutls_x509_privkey_init (&key), "key init", error)
      || !check_gnutls (gnutls_x509_privkey_generate (key, GNUTLS_PK_ECDSA, P256_BITS, 0),
                        "key generation", error)
      || !check_gnutls (gnutls_x509_crt_init (&crt), "certificate init", error))
    return FALSE;

  if (!check_gnutls (gnutls_rnd (GNUTLS_RND_NONCE, serial, sizeof serial), "serial", error))
    return FALSE;
  serial[0] &= 0x7f; /* a positive INTEGER */
  serial[0] |= 0x01; /* and no leading zero byte */

  if (!check_gnutls (gnutls_x509_crt_set_version (crt, 3), "version", error)
      || !check_gnutls (gnutls_x509_crt_set_serial (crt, serial, sizeof serial), "serial", error)
      /* An hour of slack for peers whose clock is a little behind. */
      || !check_gnutls (gnutls_x509_crt_set_activation_time (crt, now - 3600), "validity", error)
      || !check_gnutls (gnutls_x509_crt_set_expiration_time (crt, now + VALIDITY_SECONDS),
                        "validity", error)
      || !check_gnutls (gnutls_x509_crt_set_dn_by_oid (crt, GNUTLS_OID_X520_COMMON_NAME, 0,
                                                       names[0], strlen (names[0])),
                        "subject", error)
      || !check_gnutls (gnutls_x509_crt_set_key (crt, key), "public key", error)
      || !check_gnutls (gnutls_x509_crt_set_basic_constraints (crt, 0, -1), "constraints", error)
      || !check_gnutls (gnutls_x509_crt_set_key_usage (crt, GNUTLS_KEY_DIGITAL_SIGNATURE),
                        "key usage", error)
      || !check_gnutls (gnutls_x509_crt_set_key_purpose_oid (crt, GNUTLS_KP_TLS_WWW_SERVER, 0),
                        "key purpose", error))
    return FALSE;

  for (gsize i = 0; names[i] != NULL; i++)
    if (!add_name (crt, names[i], error))
      return FALSE;

  if (!check_gnutls (gnutls_x509_crt_get_key_id (crt, GNUTLS_KEYID_USE_SHA1, key_id, &key_id_len),
                     "key id", error)
      || !check_gnutls (gnutls_x509_crt_set_subject_key_id (crt, key_id, key_id_len), "key id",
                        error)
      || !check_gnutls (gnutls_x509_crt_sign2 (crt, crt, key, GNUTLS_DIG_SHA256, 0), "signing",
                        error)
      || !check_gnutls (gnutls_x509_crt_export2 (crt, GNUTLS_X509_FMT_PEM, &cert_pem), "export",
                        error)
      || !check_gnutls (gnutls_x509_privkey_export2_pkcs8 (key, GNUTLS_X509_FMT_PEM, NULL,
                                                           GNUTLS_PKCS_PLAIN, &key_pem),
                        "key export", error))
    return FALSE;

  /* The key first, so a certificate never exists on disk without its key. */
  if (!g_file_set_contents_full (key_path, (const char *) key_pem.data, key_pem.size,
                                 G_FILE_SET_CONTENTS_CONSISTENT, 0600, error))
    return FALSE;
  return g_file_set_contents_full (cert_path, (const char *) cert_pem.data, cert_pem.size,
                                   G_FILE_SET_CONTENTS_CONSISTENT, 0644, error);
}

char *
gt_certificate_fingerprint (GTlsCertificate *cert)
{
  g_autoptr (GByteArray) der = NULL;
  g_autofree char *hex = NULL;

  g_return_val_if_fail (G_IS_TLS_CERTIFICATE (cert), NULL);

  g_object_get (cert, "certificate", &der, NULL);
  if (der == NULL)
    return NULL;
  hex = g_compute_checksum_for_data (G_CHECKSUM_SHA256, der->data, der->len);
  return g_strconcat ("sha256:", hex, NULL);
}

/* Normalises a pin to 64 lower-case hex digits; NULL when malformed. */
static char *
pin_normalize (const char *pin)
{
  GString *hex;
  const char *p;
  gsize digits_since_colon = 0;

  if (pin == NULL || g_ascii_strncasecmp (pin, "sha256:", 7) != 0)
    return NULL;
  hex = g_string_sized_new (64);
  for (p = pin + 7; *p != '\0'; p++)
    {
      if (*p == ':')
        {
          /* Separators only between whole bytes. */
          if (digits_since_colon != 2)
            break;
          digits_since_colon = 0;
          continue;
        }
      if (!g_ascii_isxdigit (*p) || hex->len >= 64)
        break;
      g_string_append_c (hex, g_ascii_tolower (*p));
      digits_since_colon++;
    }
  if (*p != '\0' || hex->len != 64 || digits_since_colon == 0)
    {
      g_string_free (hex, TRUE);
      return NULL;
    }
  return g_string_free (hex, FALSE);
}

gboolean
gt_certificate_pin_is_valid (const char *pin)
{
  g_autofree char *norm = pin_normalize (pin);

  return norm != NULL;
}

gboolean
gt_certificate_pin_matches (GTlsCertificate *cert, const char *pin)
{
  g_autofree char *norm = NULL;
  g_autofree char *fp = NULL;

  g_return_val_if_fail (G_IS_TLS_CERTIFICATE (cert), FALSE);

  norm = pin_normalize (pin);
  if (norm == NULL)
    return FALSE;
  fp = gt_certificate_fingerprint (cert);
  return fp != NULL && strcmp (fp + 7, norm) == 0;
}

gboolean
gt_tls_backend_check (GError **error)
{
  GTlsBackend *backend = g_tls_backend_get_default ();

  if (backend != NULL && g_tls_backend_supports_tls (backend))
    return TRUE;
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
               "TLS support is not available: GIO found no TLS backend (%s). Install "
               "glib-networking (Debian: apt install glib-networking) or check GIO_MODULE_DIR",
               backend != NULL ? G_OBJECT_TYPE_NAME (backend) : "none");
  return FALSE;
}
