/* gt-transport-tls.c: tls:// tunnels, the TLS client shared with wss://, and process TLS settings. */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include <string.h>

#include "gt-certificate.h"
#include "gt-http-proxy.h"
#include "gt-tls-socket.h"
#include "gt-transport-private.h"

/* ------------------------------------------------------------------------------------------ */
/* TLS settings for the process */

/* GIO has no per-connection TLS version or cipher setting; glib-networking reads GnuTLS's priority
 * string from G_TLS_GNUTLS_PRIORITY once, when the backend first makes a connection. So it is set
 * here, once, before any TLS is used (the CLI calls this at start, before threads exist).
 * AES-128-GCM comes first: with AES-NI it is the fastest cipher of TLS 1.3 here (see
 * docs/benchmarks.md); AES-256-GCM and ChaCha20-Poly1305 stay allowed for peers without it. */
static const char *
tls_priority_for (const char *min_version)
{
  if (g_strcmp0 (min_version, "tls1.3") == 0)
    return "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305";
  if (g_strcmp0 (min_version, "tls1.1") == 0)
    return "NORMAL:+VERS-TLS1.1:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305"
           ":+AES-128-CBC:+AES-256-CBC";
  return "NORMAL:-VERS-TLS1.1:-VERS-TLS1.0:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM"
         ":+CHACHA20-POLY1305:+AES-128-CBC:+AES-256-CBC";
}

static gboolean tls_configured;

gboolean
gt_transport_tls_init (const char *min_version, GError **error)
{
  if (min_version != NULL && strcmp (min_version, "tls1.1") != 0
      && strcmp (min_version, "tls1.2") != 0 && strcmp (min_version, "tls1.3") != 0)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "unknown TLS version '%s' (tls1.1, tls1.2 or tls1.3)", min_version);
      return FALSE;
    }
  if (tls_configured)
    return TRUE;
  tls_configured = TRUE;
  /* A priority string from the user's environment wins. */
  if (g_getenv ("G_TLS_GNUTLS_PRIORITY") != NULL)
    return TRUE;
  g_setenv ("G_TLS_GNUTLS_PRIORITY", tls_priority_for (min_version), FALSE);
  return TRUE;
}

/* ------------------------------------------------------------------------------------------ */
/* The TLS client */

typedef struct
{
  char *host;
  char *ca_file;
  char *pin;
  gboolean insecure;
  GIOStream *tls;
  gulong accept_id;
  GTlsCertificateFlags cert_errors;
  char *peer_fingerprint;
} TlsClient;

static void
tls_client_free (TlsClient *tc)
{
  if (tc->accept_id != 0)
    g_signal_handler_disconnect (tc->tls, tc->accept_id);
  g_clear_object (&tc->tls);
  g_free (tc->host);
  g_free (tc->ca_file);
  g_free (tc->pin);
  g_free (tc->peer_fingerprint);
  g_free (tc);
}

char *
_gt_tls_describe_cert_errors (GTlsCertificateFlags flags)
{
  GString *s = g_string_new (NULL);
  static const struct
  {
    GTlsCertificateFlags flag;
    const char *text;
  } names[] = {
    { G_TLS_CERTIFICATE_UNKNOWN_CA, "not signed by a trusted CA" },
    { G_TLS_CERTIFICATE_BAD_IDENTITY, "issued for another host name" },
    { G_TLS_CERTIFICATE_NOT_ACTIVATED, "not yet valid" },
    { G_TLS_CERTIFICATE_EXPIRED, "expired" },
    { G_TLS_CERTIFICATE_REVOKED, "revoked" },
    { G_TLS_CERTIFICATE_INSECURE, "insecure algorithm" },
    { G_TLS_CERTIFICATE_GENERIC_ERROR, "invalid" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (names); i++)
    if (flags & names[i].flag)
      g_string_append_printf (s, "%s%s", s->len > 0 ? ", " : "", names[i].text);
  if (s->len == 0)
    g_string_append (s, "rejected");
  return g_string_free (s, FALSE);
}

static gboolean
accept_certificate_cb (GTlsConnection *conn, GTlsCertificate *peer, GTlsCertificateFlags errors,
                       gpointer user_data)
{
  TlsClient *tc = user_data;

  tc->cert_errors = errors;
  g_free (tc->peer_fingerprint);
  tc->peer_fingerprint = gt_certificate_fingerprint (peer);
  if (tc->pin != NULL)
    return gt_certificate_pin_matches (peer, tc->pin);
  return tc->insecure;
}

static void
return_pin_mismatch (GTask *task, TlsClient *tc, const char *fingerprint)
{
  g_task_return_new_error (task, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE,
                           "TLS certificate of %s (%s) does not match the pinned fingerprint",
                           tc->host, fingerprint ? fingerprint : "unknown");
}

static void
tls_client_handshake_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  TlsClient *tc = g_task_get_task_data (task);
  GError *error = NULL;
  GTlsCertificate *peer;

  if (!g_tls_connection_handshake_finish (G_TLS_CONNECTION (source), result, &error))
    {
      if (g_error_matches (error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE) && tc->pin != NULL)
        {
          g_clear_error (&error);
          return_pin_mismatch (task, tc, tc->peer_fingerprint);
          return;
        }
      if (g_error_matches (error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE))
        {
          g_autofree char *why = _gt_tls_describe_cert_errors (tc->cert_errors);
          g_autofree char *hint = NULL;

          if (tc->ca_file != NULL)
            hint = g_strdup_printf ("; the CA in %s did not sign it or it names another host",
                                    tc->ca_file);
          else
            hint = g_strdup ("; the system CAs do not trust it (set remoteCert to a CA file or a "
                             "sha256: pin)");
          g_clear_error (&error);
          g_task_return_new_error (task, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE,
                                   "TLS certificate of %s not trusted: %s (%s)%s", tc->host, why,
                                   tc->peer_fingerprint ? tc->peer_fingerprint : "unknown", hint);
          return;
        }
      g_prefix_error (&error, "TLS handshake with %s: ", tc->host);
      g_task_return_error (task, error);
      return;
    }
  g_signal_handler_disconnect (tc->tls, tc->accept_id);
  tc->accept_id = 0;

  /* A pinned certificate must match even when it also chains to a trusted CA. */
  peer = g_tls_connection_get_peer_certificate (G_TLS_CONNECTION (tc->tls));
  if (tc->pin != NULL && (peer == NULL || !gt_certificate_pin_matches (peer, tc->pin)))
    {
      g_autofree char *fp = peer != NULL ? gt_certificate_fingerprint (peer) : NULL;

      return_pin_mismatch (task, tc, fp);
      return;
    }
  g_debug ("TLS with %s: %s", tc->host,
           g_tls_connection_get_ciphersuite_name (G_TLS_CONNECTION (tc->tls)));
  g_task_return_pointer (task, g_object_ref (tc->tls), g_object_unref);
}

void
_gt_tls_client_handshake (GIOStream *io, const char *host, guint16 port, const GtTlsVerify *verify,
                          GTask *task)
{
  GTlsDatabase *database = verify->database;
  const char *pin = verify->pin;
  gboolean insecure = verify->insecure;
  g_autoptr (GSocketConnectable) identity = NULL;
  g_autoptr (GIOStream) base = NULL;
  TlsClient *tc;
  GError *error = NULL;

  if (!gt_tls_backend_check (&error))
    {
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }
  if (pin != NULL && !gt_certificate_pin_is_valid (pin))
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "invalid certificate pin (expected sha256:<64 hex digits>)");
      g_object_unref (task);
      return;
    }
  identity = g_network_address_new (host, port);
  tc = g_new0 (TlsClient, 1);
  tc->host = g_strdup (host);
  tc->ca_file = g_strdup (verify->ca_file);
  tc->pin = g_strdup (pin);
  tc->insecure = insecure;
  g_task_set_task_data (task, tc, (GDestroyNotify) tls_client_free);
  /* Tunnels end with their own close (gt's GOAWAY, WebSocket close): a missing TLS close_notify
   * is no truncation attack here. The database is given at construction: glib-networking asks
   * for the connection's database while it initialises, and an unset one means the system CA
   * store, parsed then and kept for the life of the process (several MiB). Pinned or unverified
   * tunnels never need it; accept_certificate_cb decides for them. */
  base = gt_tls_socket_new (io);
  if (database != NULL || pin != NULL || insecure)
    tc->tls = g_initable_new (g_tls_backend_get_client_connection_type (g_tls_backend_get_default ()),
                              NULL, &error, "base-io-stream", base, "server-identity", identity,
                              "require-close-notify", FALSE, "database", database, NULL);
  else
    tc->tls = g_initable_new (g_tls_backend_get_client_connection_type (g_tls_backend_get_default ()),
                              NULL, &error, "base-io-stream", base, "server-identity", identity,
                              "require-close-notify", FALSE, NULL);
  if (tc->tls == NULL)
    {
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }
  tc->accept_id = g_signal_connect (tc->tls, "accept-certificate",
                                    G_CALLBACK (accept_certificate_cb), tc);
  g_tls_connection_handshake_async (G_TLS_CONNECTION (tc->tls), G_PRIORITY_DEFAULT,
                                    g_task_get_cancellable (task), tls_client_handshake_cb, task);
}

void
_gt_tls_verify_clear (GtTlsVerify *verify)
{
  g_clear_object (&verify->database);
  g_clear_pointer (&verify->ca_file, g_free);
  g_clear_pointer (&verify->pin, g_free);
}

gboolean
_gt_tls_verify_init (GtTlsVerify *verify, const GtTransportSecurity *security, GError **error)
{
  const char *cert = security != NULL ? security->remote_cert : NULL;

  memset (verify, 0, sizeof *verify);
  verify->insecure = security != NULL && security->insecure;
  if (cert == NULL)
    return TRUE;
  if (g_ascii_strncasecmp (cert, "sha256:", 7) == 0)
    {
      verify->pin = g_strdup (cert);
      return TRUE;
    }
  verify->database = g_tls_file_database_new (cert, error);
  verify->ca_file = g_strdup (cert);
  return verify->database != NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* The tls:// leaf */

typedef struct
{
  char *host;
  guint16 port;
  GtTlsVerify verify;
} TlsDial;

static void
tls_dial_free (TlsDial *d)
{
  g_free (d->host);
  _gt_tls_verify_clear (&d->verify);
  g_free (d);
}

static void
tls_handshake_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  GError *error = NULL;
  GIOStream *io = g_task_propagate_pointer (G_TASK (result), &error);

  if (io == NULL)
    g_task_return_error (task, error);
  else
    g_task_return_pointer (task, io, g_object_unref);
}

static void
tls_tcp_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GTask *task = user_data;
  TlsDial *d = g_task_get_task_data (task);
  GError *error = NULL;
  g_autoptr (GIOStream) io = g_task_propagate_pointer (G_TASK (result), &error);
  GTask *handshake;

  if (io == NULL)
    {
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }
  handshake = g_task_new (NULL, g_task_get_cancellable (task), tls_handshake_done_cb, task);
  _gt_tls_client_handshake (io, d->host, d->port, &d->verify, handshake);
}

static void
tls_dial (const GtRemote *remote, const GtTransportSecurity *security, GTask *task)
{
  TlsDial *d = g_new0 (TlsDial, 1);
  g_autofree char *proxy = NULL;
  GError *error = NULL;
  GTask *tcp;

  g_task_set_task_data (task, d, (GDestroyNotify) tls_dial_free);
  if (!_gt_tls_verify_init (&d->verify, security, &error))
    {
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }
  d->host = g_strdup (remote->host);
  d->port = remote->port;
  proxy = gt_http_proxy_for ("tls", remote->host);
  tcp = g_task_new (NULL, g_task_get_cancellable (task), tls_tcp_done_cb, task);
  _gt_transport_tcp_dial (remote->host, remote->port, proxy, tcp);
}

static void
tls_accept_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  GError *error = NULL;

  if (!g_tls_connection_handshake_finish (G_TLS_CONNECTION (source), result, &error))
    g_task_return_error (task, error);
  else
    g_task_return_pointer (task, g_object_ref (source), g_object_unref);
}

GIOStream *
_gt_tls_server_connection_new (GIOStream *io, GTlsCertificate *certificate, GError **error)
{
  /* No client certificates are asked for: a database given at construction keeps glib-networking
   * from loading the system CA store (see _gt_tls_client_handshake). */
  g_autoptr (GIOStream) base = gt_tls_socket_new (io);

  return g_initable_new (g_tls_backend_get_server_connection_type (g_tls_backend_get_default ()),
                         NULL, error, "base-io-stream", base, "certificate", certificate,
                         "require-close-notify", FALSE, "database", NULL, NULL);
}

/* Server side of tlsAddr: the TLS handshake with the server certificate. */
static void
tls_accept (GIOStream *io, const guint8 *head, gsize head_len, GTlsCertificate *certificate,
            GTask *task)
{
  g_autoptr (GIOStream) tls = NULL;
  GError *error = NULL;

  if (certificate == NULL)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "TLS needs a server certificate");
      g_object_unref (task);
      return;
    }
  tls = _gt_tls_server_connection_new (io, certificate, &error);
  if (tls == NULL)
    {
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }
  g_tls_connection_handshake_async (G_TLS_CONNECTION (tls), G_PRIORITY_DEFAULT,
                                    g_task_get_cancellable (task), tls_accept_done_cb, task);
}

const GtTransportLeaf _gt_transport_tls = { "tls", tls_dial, tls_accept };
