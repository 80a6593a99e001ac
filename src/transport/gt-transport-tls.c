/* gt-transport-tls.c: tls:// tunnels, the TLS client shared with wss://, and process TLS settings. */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include <string.h>

#include "gt-certificate.h"
#include "gt-http-proxy.h"
#include "gt-tls-stream.h"
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
  guint16 port;
  char *ca_file;
  char *pin;
  gboolean insecure;
  GTlsDatabase *database;
  GIOStream *tls;
} TlsClient;

static void
tls_client_free (TlsClient *tc)
{
  g_clear_object (&tc->tls);
  g_clear_object (&tc->database);
  g_free (tc->host);
  g_free (tc->ca_file);
  g_free (tc->pin);
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

/* The server's certificate, checked in the handshake: a pin must match (even when the
 * certificate also chains to a trusted CA); else, unless insecure, the chain must verify against
 * the CA file's database or the system's for the host name. */
static gboolean
tls_client_verify (GIOStream *stream, gpointer data, GError **error)
{
  TlsClient *tc = data;
  g_autoptr (GTlsCertificate) peer = _gt_tls_stream_get_peer_certificate (stream);
  g_autofree char *fingerprint = peer != NULL ? gt_certificate_fingerprint (peer) : NULL;
  g_autoptr (GTlsDatabase) system = NULL;
  g_autoptr (GSocketConnectable) identity = NULL;
  GTlsDatabase *database = tc->database;
  GTlsCertificateFlags flags;

  if (tc->pin != NULL)
    {
      if (peer == NULL || !gt_certificate_pin_matches (peer, tc->pin))
        {
          g_set_error (error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE,
                       "TLS certificate of %s (%s) does not match the pinned fingerprint",
                       tc->host, fingerprint ? fingerprint : "unknown");
          return FALSE;
        }
      return TRUE;
    }
  if (tc->insecure)
    return TRUE;
  if (database == NULL)
    database = system = g_tls_backend_get_default_database (g_tls_backend_get_default ());
  identity = g_network_address_new (tc->host, tc->port);
  if (peer == NULL)
    flags = G_TLS_CERTIFICATE_GENERIC_ERROR;
  else
    flags = g_tls_database_verify_chain (database, peer, G_TLS_DATABASE_PURPOSE_AUTHENTICATE_SERVER,
                                         identity, NULL, G_TLS_DATABASE_VERIFY_NONE, NULL, error);
  if (flags == G_TLS_CERTIFICATE_GENERIC_ERROR && error != NULL && *error != NULL)
    {
      g_prefix_error (error, "TLS certificate of %s: ", tc->host);
      return FALSE;
    }
  if (flags != 0)
    {
      g_autofree char *why = _gt_tls_describe_cert_errors (flags);
      g_autofree char *hint = NULL;

      if (tc->ca_file != NULL)
        hint = g_strdup_printf ("; the CA in %s did not sign it or it names another host",
                                tc->ca_file);
      else
        hint = g_strdup ("; the system CAs do not trust it (set remoteCert to a CA file or a "
                         "sha256: pin)");
      g_clear_error (error);
      g_set_error (error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE,
                   "TLS certificate of %s not trusted: %s (%s)%s", tc->host, why,
                   fingerprint ? fingerprint : "unknown", hint);
      return FALSE;
    }
  return TRUE;
}

static void
tls_client_handshake_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  TlsClient *tc = g_task_get_task_data (task);
  GError *error = NULL;

  if (!_gt_tls_stream_handshake_finish (G_IO_STREAM (source), result, &error))
    {
      /* Certificate refusals (tls_client_verify) name the host already. */
      if (!g_error_matches (error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE))
        g_prefix_error (&error, "TLS handshake with %s: ", tc->host);
      g_task_return_error (task, error);
      return;
    }
  if (g_log_writer_default_would_drop (G_LOG_LEVEL_DEBUG, G_LOG_DOMAIN) == FALSE)
    {
      g_autofree char *desc = _gt_tls_stream_describe (tc->tls);

      g_debug ("TLS with %s: %s", tc->host, desc);
    }
  g_task_return_pointer (task, g_object_ref (tc->tls), g_object_unref);
}

void
_gt_tls_client_handshake (GIOStream *io, const char *host, guint16 port, const GtTlsVerify *verify,
                          GTask *task)
{
  const char *pin = verify->pin;
  TlsClient *tc;
  GError *error = NULL;

  if (!pin && !verify->insecure && !gt_tls_backend_check (&error))
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
  tc = g_new0 (TlsClient, 1);
  tc->host = g_strdup (host);
  tc->port = port;
  tc->ca_file = g_strdup (verify->ca_file);
  tc->pin = g_strdup (pin);
  tc->insecure = verify->insecure;
  tc->database = verify->database != NULL ? g_object_ref (verify->database) : NULL;
  g_task_set_task_data (task, tc, (GDestroyNotify) tls_client_free);
  /* gt's own GnuTLS session on the socket (gt-tls-stream.c), not glib-networking's: the system
   * CA store is loaded only when a server is verified against it. */
  tc->tls = _gt_tls_stream_new_client (io, host, &error);
  if (tc->tls == NULL)
    {
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }
  _gt_tls_stream_set_verify (tc->tls, tls_client_verify, tc);
  _gt_tls_stream_handshake_async (tc->tls, g_task_get_cancellable (task), tls_client_handshake_cb,
                                  task);
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

  if (!_gt_tls_stream_handshake_finish (G_IO_STREAM (source), result, &error))
    g_task_return_error (task, error);
  else
    g_task_return_pointer (task, g_object_ref (source), g_object_unref);
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
  tls = _gt_tls_stream_new_server (io, certificate, &error);
  if (tls == NULL)
    {
      g_task_return_error (task, error);
      g_object_unref (task);
      return;
    }
  _gt_tls_stream_handshake_async (tls, g_task_get_cancellable (task), tls_accept_done_cb, task);
}

const GtTransportLeaf _gt_transport_tls = { "tls", tls_dial, tls_accept };
