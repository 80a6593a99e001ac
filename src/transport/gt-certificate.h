/* gt-certificate.h: self-signed certificate generation (GnuTLS), fingerprints and pinning. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* Writes a self-signed ECDSA P-256 certificate, valid for 10 years, whose subjectAltName holds the
 * DNS names and IP addresses in `names` (NULL or empty = "localhost"; the first name is also the
 * CN), as PEM files: cert_path (mode 0644) and key_path (PKCS#8, mode 0600). Both files are
 * replaced atomically. */
gboolean gt_certificate_generate (const char *cert_path, const char *key_path,
                                  const char *const *names, GError **error);

/* "sha256:" followed by 64 lower-case hex digits: the SHA-256 of the certificate's DER. */
char *gt_certificate_fingerprint (GTlsCertificate *cert);

/* TRUE when `pin` ("sha256:HEX", prefix in any case, hex in any case, with or without ':' between
 * the bytes) names this certificate. A malformed pin never matches. */
gboolean gt_certificate_pin_matches (GTlsCertificate *cert, const char *pin);

/* TRUE when `pin` is syntactically a SHA-256 pin (see gt_certificate_pin_matches). */
gboolean gt_certificate_pin_is_valid (const char *pin);

/* Fails with G_IO_ERROR_NOT_SUPPORTED and a message naming glib-networking when GIO has no
 * working TLS backend. */
gboolean gt_tls_backend_check (GError **error);

G_END_DECLS
