/* test-certificate.c: self-signed certificate generation, fingerprints, pins, TLS handshakes. */
#include "config.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <string.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "gt-certificate.h"

typedef struct
{
  char *dir;
  char *cert_path;
  char *key_path;
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;

  f->dir = g_dir_make_tmp ("gt-cert-XXXXXX", &error);
  g_assert_no_error (error);
  f->cert_path = g_build_filename (f->dir, "cert.pem", NULL);
  f->key_path = g_build_filename (f->dir, "key.pem", NULL);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  g_unlink (f->cert_path);
  g_unlink (f->key_path);
  g_rmdir (f->dir);
  g_free (f->dir);
  g_free (f->cert_path);
  g_free (f->key_path);
}

static GTlsCertificate *
generate (Fixture *f, const char *const *names)
{
  g_autoptr (GError) error = NULL;
  GTlsCertificate *cert;

  g_assert_true (gt_certificate_generate (f->cert_path, f->key_path, names, &error));
  g_assert_no_error (error);
  cert = g_tls_certificate_new_from_files (f->cert_path, f->key_path, &error);
  g_assert_no_error (error);
  g_assert_nonnull (cert);
  return cert;
}

static void
test_generate (Fixture *f, gconstpointer data)
{
  static const char *const names[] = { "gt.example", "localhost", "127.0.0.1", "::1", NULL };
  g_autoptr (GTlsCertificate) cert = NULL;
  g_autoptr (GDateTime) expiry = NULL;
  g_autoptr (GDateTime) now = g_date_time_new_now_utc ();
  g_autoptr (GPtrArray) dns = NULL;
  g_autoptr (GPtrArray) ips = NULL;
  g_autofree char *pem = NULL;
  GStatBuf st;
  GTimeSpan span;

  cert = generate (f, names);

  g_assert_cmpint (g_stat (f->key_path, &st), ==, 0);
  g_assert_cmpint (st.st_mode & 0777, ==, 0600);
  g_assert_cmpint (g_stat (f->cert_path, &st), ==, 0);
  g_assert_cmpint (st.st_mode & 0777, ==, 0644);

  g_assert_true (g_file_get_contents (f->cert_path, &pem, NULL, NULL));
  g_assert_true (g_str_has_prefix (pem, "-----BEGIN CERTIFICATE-----"));

  g_object_get (cert, "not-valid-after", &expiry, "dns-names", &dns, "ip-addresses", &ips, NULL);
  span = g_date_time_difference (expiry, now);
  g_assert_cmpint (span / G_TIME_SPAN_DAY, >=, 3640);
  g_assert_cmpint (span / G_TIME_SPAN_DAY, <=, 3660);

  g_assert_cmpuint (dns->len, ==, 2);
  g_assert_cmpmem (g_bytes_get_data (dns->pdata[0], NULL), g_bytes_get_size (dns->pdata[0]),
                   "gt.example", 10);
  g_assert_cmpmem (g_bytes_get_data (dns->pdata[1], NULL), g_bytes_get_size (dns->pdata[1]),
                   "localhost", 9);
  g_assert_cmpuint (ips->len, ==, 2);
  {
    g_autofree char *a = g_inet_address_to_string (ips->pdata[0]);
    g_autofree char *b = g_inet_address_to_string (ips->pdata[1]);

    g_assert_cmpstr (a, ==, "127.0.0.1");
    g_assert_cmpstr (b, ==, "::1");
  }

  /* Each generation is a new key. */
  {
    g_autofree char *fp1 = gt_certificate_fingerprint (cert);
    g_autoptr (GTlsCertificate) again = generate (f, names);
    g_autofree char *fp2 = gt_certificate_fingerprint (again);

    g_assert_cmpstr (fp1, !=, fp2);
  }
}

static void
test_bad_name (Fixture *f, gconstpointer data)
{
  static const char *const names[] = { "localhost", "bad name/with space", NULL };
  g_autoptr (GError) error = NULL;

  g_assert_false (gt_certificate_generate (f->cert_path, f->key_path, names, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
}

static void
test_unwritable (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *bad = g_build_filename (f->dir, "missing", "cert.pem", NULL);

  g_assert_false (gt_certificate_generate (bad, bad, NULL, &error));
  g_assert_nonnull (error);
}

static void
test_fingerprint_certtool (Fixture *f, gconstpointer data)
{
  g_autoptr (GTlsCertificate) cert = generate (f, NULL);
  g_autofree char *fp = gt_certificate_fingerprint (cert);
  g_autofree char *certtool = g_find_program_in_path ("certtool");
  g_autofree char *out = NULL;
  g_autoptr (GError) error = NULL;
  int status = 0;

  g_assert_true (g_str_has_prefix (fp, "sha256:"));
  g_assert_cmpuint (strlen (fp), ==, 7 + 64);
  for (const char *p = fp + 7; *p; p++)
    g_assert_true (g_ascii_isxdigit (*p) && !g_ascii_isupper (*p));

  if (certtool == NULL)
    {
      g_test_skip ("certtool (gnutls-bin) not installed");
      return;
    }
  {
    const char *argv[] = { certtool, "--fingerprint", "--hash", "sha256", "--infile",
                           f->cert_path, NULL };

    g_assert_true (g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL,
                                 NULL, &out, NULL, &status, &error));
  }
  g_assert_no_error (error);
  g_assert_true (g_spawn_check_wait_status (status, NULL));
  g_strstrip (out);
  g_assert_cmpstr (fp + 7, ==, out);
}

static void
test_pin (Fixture *f, gconstpointer data)
{
  g_autoptr (GTlsCertificate) cert = generate (f, NULL);
  g_autofree char *fp = gt_certificate_fingerprint (cert);
  g_autofree char *upper = g_ascii_strup (fp, -1);
  g_autoptr (GString) colons = g_string_new ("sha256:");
  g_autofree char *wrong = g_strdup (fp);
  g_autofree char *short_pin = g_strndup (fp, strlen (fp) - 2);
  g_autofree char *long_pin = g_strconcat (fp, "00", NULL);
  g_autofree char *bad_colons = NULL;

  for (gsize i = 7; fp[i]; i += 2)
    g_string_append_printf (colons, "%s%c%c", i > 7 ? ":" : "", fp[i], fp[i + 1]);
  wrong[strlen (wrong) - 1] = wrong[strlen (wrong) - 1] == '0' ? '1' : '0';
  bad_colons = g_strdup_printf ("sha256:%.3s:%s", fp + 7, fp + 10);

  g_assert_true (gt_certificate_pin_matches (cert, fp));
  g_assert_true (gt_certificate_pin_matches (cert, upper)); /* "SHA256:" and upper-case hex */
  g_assert_true (gt_certificate_pin_matches (cert, colons->str));
  g_assert_true (gt_certificate_pin_is_valid (colons->str));

  g_assert_false (gt_certificate_pin_matches (cert, wrong));
  g_assert_true (gt_certificate_pin_is_valid (wrong));
  g_assert_false (gt_certificate_pin_matches (cert, short_pin));
  g_assert_false (gt_certificate_pin_matches (cert, long_pin));
  g_assert_false (gt_certificate_pin_matches (cert, fp + 7)); /* no prefix */
  g_assert_false (gt_certificate_pin_matches (cert, bad_colons));
  g_assert_false (gt_certificate_pin_matches (cert, "sha256:"));
  g_assert_false (gt_certificate_pin_matches (cert, ""));
  g_assert_false (gt_certificate_pin_matches (cert, NULL));
  g_assert_false (gt_certificate_pin_is_valid ("sha1:00"));
  {
    g_autofree char *trailing = g_strconcat (colons->str, ":", NULL);
    g_autofree char *garbage = g_strdup (fp);

    garbage[20] = 'g';
    g_assert_false (gt_certificate_pin_matches (cert, trailing));
    g_assert_false (gt_certificate_pin_matches (cert, garbage));
  }
}

static void
test_backend (void)
{
  g_autoptr (GError) error = NULL;

  /* glib-networking is a build dependency of the tests: the check must pass here. */
  g_assert_true (gt_tls_backend_check (&error));
  g_assert_no_error (error);
}

/* Handshake over a socketpair */

typedef struct
{
  GMainLoop *loop;
  int pending;
  GError *server_error;
  GError *client_error;
} Handshake;

static void
server_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Handshake *h = user_data;

  g_tls_connection_handshake_finish (G_TLS_CONNECTION (source), result, &h->server_error);
  if (--h->pending == 0)
    g_main_loop_quit (h->loop);
}

static void
client_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Handshake *h = user_data;

  if (!g_tls_connection_handshake_finish (G_TLS_CONNECTION (source), result, &h->client_error))
    /* The server would otherwise wait for a peer that gave up. */
    g_io_stream_close (G_IO_STREAM (source), NULL, NULL);
  if (--h->pending == 0)
    g_main_loop_quit (h->loop);
}

static GIOStream *
socket_stream (int fd)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocket) socket = g_socket_new_from_fd (fd, &error);

  g_assert_no_error (error);
  return G_IO_STREAM (g_socket_connection_factory_create_connection (socket));
}

/* Returns the client's error (NULL on success). */
static GError *
handshake (Fixture *f, GTlsCertificate *cert, GSocketConnectable *identity)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) a = NULL;
  g_autoptr (GIOStream) b = NULL;
  g_autoptr (GIOStream) server = NULL;
  g_autoptr (GIOStream) client = NULL;
  g_autoptr (GTlsDatabase) db = NULL;
  g_autoptr (GMainLoop) loop = g_main_loop_new (NULL, FALSE);
  Handshake h = { loop, 2, NULL, NULL };
  int fds[2];

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0);
  a = socket_stream (fds[0]);
  b = socket_stream (fds[1]);

  server = g_tls_server_connection_new (a, cert, &error);
  g_assert_no_error (error);
  client = g_tls_client_connection_new (b, identity, &error);
  g_assert_no_error (error);
  db = g_tls_file_database_new (f->cert_path, &error);
  g_assert_no_error (error);
  g_tls_connection_set_database (G_TLS_CONNECTION (client), db);

  g_tls_connection_handshake_async (G_TLS_CONNECTION (server), G_PRIORITY_DEFAULT, NULL,
                                    server_done_cb, &h);
  g_tls_connection_handshake_async (G_TLS_CONNECTION (client), G_PRIORITY_DEFAULT, NULL,
                                    client_done_cb, &h);
  g_main_loop_run (loop);
  if (h.client_error == NULL)
    g_assert_no_error (h.server_error);
  g_clear_error (&h.server_error);
  g_io_stream_close (client, NULL, NULL);
  g_io_stream_close (server, NULL, NULL);
  return h.client_error;
}

static void
test_handshake (Fixture *f, gconstpointer data)
{
  static const char *const names[] = { "gt.example", "127.0.0.1", NULL };
  g_autoptr (GTlsCertificate) cert = generate (f, names);
  g_autoptr (GSocketConnectable) good = g_network_address_new ("gt.example", 443);
  g_autoptr (GSocketConnectable) good_ip = g_network_address_new ("127.0.0.1", 443);
  g_autoptr (GSocketConnectable) wrong = g_network_address_new ("other.example", 443);
  g_autoptr (GError) e1 = NULL;
  g_autoptr (GError) e2 = NULL;
  g_autoptr (GError) e3 = NULL;

  if (!gt_tls_backend_check (NULL))
    {
      g_test_skip ("no TLS backend");
      return;
    }
  e1 = handshake (f, cert, good);
  g_assert_no_error (e1);
  e2 = handshake (f, cert, good_ip);
  g_assert_no_error (e2);
  e3 = handshake (f, cert, wrong);
  g_assert_error (e3, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add ("/gt/transport/certificate/generate", Fixture, NULL, fixture_setup, test_generate,
              fixture_teardown);
  g_test_add ("/gt/transport/certificate/bad-name", Fixture, NULL, fixture_setup, test_bad_name,
              fixture_teardown);
  g_test_add ("/gt/transport/certificate/unwritable", Fixture, NULL, fixture_setup,
              test_unwritable, fixture_teardown);
  g_test_add ("/gt/transport/certificate/fingerprint", Fixture, NULL, fixture_setup,
              test_fingerprint_certtool, fixture_teardown);
  g_test_add ("/gt/transport/certificate/pin", Fixture, NULL, fixture_setup, test_pin,
              fixture_teardown);
  g_test_add_func ("/gt/transport/certificate/backend", test_backend);
  g_test_add ("/gt/transport/certificate/handshake", Fixture, NULL, fixture_setup,
              test_handshake, fixture_teardown);
  return g_test_run ();
}
