/* gt-tls-stream.c: TLS tunnels on GnuTLS directly, on a socket's fd, driven by the main loop. */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include <gmodule.h>

#include "gt-fd-source.h"
#include "gt-tls-stream.h"

/* GnuTLS is loaded with the first TLS tunnel, as gt-certificate.c does for certificate generation:
 * linking it would map and initialise it in every gt process, TLS or not (about 2 MiB). */
#define GT_TLS_SYMBOLS(X) \
  X (gnutls_init) \
  X (gnutls_deinit) \
  X (gnutls_priority_init) \
  X (gnutls_priority_set) \
  X (gnutls_credentials_set) \
  X (gnutls_certificate_server_set_request) \
  X (gnutls_transport_set_ptr) \
  X (gnutls_transport_set_pull_function) \
  X (gnutls_transport_set_vec_push_function) \
  X (gnutls_transport_set_errno) \
  X (gnutls_record_recv) \
  X (gnutls_record_send) \
  X (gnutls_record_check_pending) \
  X (gnutls_record_get_direction) \
  X (gnutls_error_is_fatal) \
  X (gnutls_strerror) \
  X (gnutls_handshake) \
  X (gnutls_bye) \
  X (gnutls_certificate_allocate_credentials) \
  X (gnutls_certificate_free_credentials) \
  X (gnutls_certificate_set_x509_key_mem2) \
  X (gnutls_certificate_get_peers) \
  X (gnutls_server_name_set) \
  X (gnutls_session_get_desc) \
  X (gnutls_certificate_set_verify_function) \
  X (gnutls_session_set_ptr) \
  X (gnutls_session_get_ptr) \
  X (gnutls_handshake_set_secret_function) \
  X (gnutls_protocol_get_version) \
  X (gnutls_cipher_get) \
  X (gnutls_cipher_get_key_size) \
  X (gnutls_prf_hash_get) \
  X (gnutls_hkdf_expand) \
  X (gnutls_aead_cipher_init) \
  X (gnutls_aead_cipher_deinit) \
  X (gnutls_aead_cipher_encrypt) \
  X (gnutls_aead_cipher_decrypt)

#define GT_TLS_DECLARE(name) __typeof__ (name) *name;
static struct
{
  GT_TLS_SYMBOLS (GT_TLS_DECLARE)
  gnutls_free_function *free_var;
  gboolean loaded;
} gt_tls;

static gboolean
gt_tls_load (GError **error)
{
  GModule *module;

  if (gt_tls.loaded)
    return TRUE;
  module = g_module_open ("libgnutls.so.30", G_MODULE_BIND_LAZY | G_MODULE_BIND_LOCAL);
  if (module == NULL)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                   "TLS tunnels need GnuTLS (libgnutls.so.30): %s", g_module_error ());
      return FALSE;
    }
#define GT_TLS_LOAD(name) \
  if (!g_module_symbol (module, #name, (gpointer *) &gt_tls.name)) \
    goto missing;
  GT_TLS_SYMBOLS (GT_TLS_LOAD)
  if (!g_module_symbol (module, "gnutls_free", (gpointer *) &gt_tls.free_var))
    goto missing;
  g_module_make_resident (module);
  gt_tls.loaded = TRUE;
  return TRUE;

missing:
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "GnuTLS lacks a function: %s",
               g_module_error ());
  g_module_close (module);
  return FALSE;
}

/* From here on, gnutls_* calls go through the table loaded above. */
#define gnutls_init gt_tls.gnutls_init
#define gnutls_deinit gt_tls.gnutls_deinit
#define gnutls_priority_init gt_tls.gnutls_priority_init
#define gnutls_priority_set gt_tls.gnutls_priority_set
#define gnutls_credentials_set gt_tls.gnutls_credentials_set
#define gnutls_certificate_server_set_request gt_tls.gnutls_certificate_server_set_request
#define gnutls_transport_set_ptr gt_tls.gnutls_transport_set_ptr
#define gnutls_transport_set_pull_function gt_tls.gnutls_transport_set_pull_function
#define gnutls_transport_set_vec_push_function gt_tls.gnutls_transport_set_vec_push_function
#define gnutls_transport_set_errno gt_tls.gnutls_transport_set_errno
#define gnutls_record_recv gt_tls.gnutls_record_recv
#define gnutls_record_send gt_tls.gnutls_record_send
#define gnutls_record_check_pending gt_tls.gnutls_record_check_pending
#define gnutls_record_get_direction gt_tls.gnutls_record_get_direction
#define gnutls_error_is_fatal gt_tls.gnutls_error_is_fatal
#define gnutls_strerror gt_tls.gnutls_strerror
#define gnutls_handshake gt_tls.gnutls_handshake
#define gnutls_bye gt_tls.gnutls_bye
#define gnutls_certificate_allocate_credentials gt_tls.gnutls_certificate_allocate_credentials
#define gnutls_certificate_free_credentials gt_tls.gnutls_certificate_free_credentials
#define gnutls_certificate_set_x509_key_mem2 gt_tls.gnutls_certificate_set_x509_key_mem2
#define gnutls_certificate_get_peers gt_tls.gnutls_certificate_get_peers
#define gnutls_server_name_set gt_tls.gnutls_server_name_set
#define gnutls_session_get_desc gt_tls.gnutls_session_get_desc
#define gnutls_certificate_set_verify_function gt_tls.gnutls_certificate_set_verify_function
#define gnutls_session_set_ptr gt_tls.gnutls_session_set_ptr
#define gnutls_session_get_ptr gt_tls.gnutls_session_get_ptr
#define gnutls_handshake_set_secret_function gt_tls.gnutls_handshake_set_secret_function
#define gnutls_protocol_get_version gt_tls.gnutls_protocol_get_version
#define gnutls_cipher_get gt_tls.gnutls_cipher_get
#define gnutls_cipher_get_key_size gt_tls.gnutls_cipher_get_key_size
#define gnutls_prf_hash_get gt_tls.gnutls_prf_hash_get
#define gnutls_hkdf_expand gt_tls.gnutls_hkdf_expand
#define gnutls_aead_cipher_init gt_tls.gnutls_aead_cipher_init
#define gnutls_aead_cipher_deinit gt_tls.gnutls_aead_cipher_deinit
#define gnutls_aead_cipher_encrypt gt_tls.gnutls_aead_cipher_encrypt
#define gnutls_aead_cipher_decrypt gt_tls.gnutls_aead_cipher_decrypt
#define gnutls_free (*gt_tls.free_var)


/* Ciphertext read from the socket at once: GnuTLS asks its pull function for a record header,
 * then for the record; one recv() feeds many records. Freed whenever it is drained, so an idle
 * tunnel keeps none. */
#define RBUF_SIZE (256 * 1024)
/* Ciphertext queued for the socket before writes would block. */
#define OUT_HIGH (256 * 1024)
/* The largest TLS record's plaintext. */
#define RECORD_MAX 16384

/* ------------------------------------------------------------------------------------------ */
/* Types */

/* One direction's TLS 1.3 traffic protection (RFC 8446 §7.3, §5.3). */
typedef struct
{
  gnutls_aead_cipher_hd_t aead;
  guint8 secret[64];
  gsize secret_len;
  guint8 iv[12];
  guint64 seq;
} RecordKeys;

#define GT_TYPE_TLS_STREAM (gt_tls_stream_get_type ())
G_DECLARE_FINAL_TYPE (GtTlsStream, gt_tls_stream, GT, TLS_STREAM, GIOStream)

#define GT_TYPE_TLS_INPUT (gt_tls_input_get_type ())
G_DECLARE_FINAL_TYPE (GtTlsInput, gt_tls_input, GT, TLS_INPUT, GInputStream)

#define GT_TYPE_TLS_OUTPUT (gt_tls_output_get_type ())
G_DECLARE_FINAL_TYPE (GtTlsOutput, gt_tls_output, GT, TLS_OUTPUT, GOutputStream)

struct _GtTlsStream
{
  GIOStream parent_instance;
  GIOStream *base;
  GSocket *socket;
  int fd;
  gnutls_session_t session;
  GInputStream *in;
  GOutputStream *out;

  /* Ciphertext read ahead of GnuTLS. */
  guint8 *rbuf;
  gsize rstart;
  gsize rend;
  gboolean rdrained; /* the last recv() found the socket empty */
  GError *read_error;

  /* Ciphertext waiting for the socket. */
  guint8 *wbuf;
  gsize wstart;
  gsize wend;
  gsize wcap;
  GError *write_error;
  GtFdWatch *flush_source; /* polls for room while wbuf holds bytes */

  gboolean handshaken;
  /* TLS 1.3 records of our own once the handshake is done (see "Records"); FALSE: GnuTLS's. */
  gboolean own_records;
  RecordKeys rd;
  RecordKeys wr;
  gsize pstart; /* plaintext of a record decrypted in place in rbuf, not read yet */
  gsize pend;
  gboolean read_eof; /* close_notify or the socket's EOF came */
  gboolean write_closed; /* close_notify sent: no records after it */
  gnutls_mac_algorithm_t hkdf_mac;
  gnutls_cipher_algorithm_t cipher;

  GtTlsVerifyFunc verify;
  gpointer verify_data;
  GError *verify_error;
};

struct _GtTlsInput
{
  GInputStream parent_instance;
  GtTlsStream *tls; /* not owned: the GtTlsStream owns this stream */
};

struct _GtTlsOutput
{
  GOutputStream parent_instance;
  GtTlsStream *tls;
};

static void input_pollable_init (GPollableInputStreamInterface *iface);
static void output_pollable_init (GPollableOutputStreamInterface *iface);

G_DEFINE_TYPE (GtTlsStream, gt_tls_stream, G_TYPE_IO_STREAM)
G_DEFINE_TYPE_WITH_CODE (GtTlsInput, gt_tls_input, G_TYPE_INPUT_STREAM,
                         G_IMPLEMENT_INTERFACE (G_TYPE_POLLABLE_INPUT_STREAM, input_pollable_init))
G_DEFINE_TYPE_WITH_CODE (GtTlsOutput, gt_tls_output, G_TYPE_OUTPUT_STREAM,
                         G_IMPLEMENT_INTERFACE (G_TYPE_POLLABLE_OUTPUT_STREAM,
                                                output_pollable_init))

static GError *
closed_error (void)
{
  return g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CLOSED, "TLS connection is closed");
}

/* ------------------------------------------------------------------------------------------ */
/* GnuTLS transport: the socket, through our buffers */

static ssize_t
pull_cb (gnutls_transport_ptr_t ptr, void *data, size_t len)
{
  GtTlsStream *self = ptr;
  gsize n;

  if (self->rend == self->rstart)
    {
      ssize_t got;

      if (self->rbuf == NULL)
        self->rbuf = g_malloc (RBUF_SIZE);
      do
        got = recv (self->fd, self->rbuf, RBUF_SIZE, 0);
      while (got < 0 && errno == EINTR);
      if (got <= 0)
        {
          int err = errno;

          g_clear_pointer (&self->rbuf, g_free);
          self->rstart = self->rend = 0;
          self->rdrained = TRUE;
          if (got == 0)
            return 0;
          gnutls_transport_set_errno (self->session, err == EWOULDBLOCK ? EAGAIN : err);
          return -1;
        }
      self->rstart = 0;
      self->rend = got;
      self->rdrained = (gsize) got < RBUF_SIZE;
    }
  n = MIN (len, self->rend - self->rstart);
  memcpy (data, self->rbuf + self->rstart, n);
  self->rstart += n;
  if (self->rstart == self->rend)
    {
      self->rstart = self->rend = 0;
      g_clear_pointer (&self->rbuf, g_free);
    }
  return n;
}

/* Room for need more bytes at wend. */
static void
wbuf_reserve (GtTlsStream *self, gsize need)
{
  if (self->wstart > 0 && self->wend + need > self->wcap)
    {
      memmove (self->wbuf, self->wbuf + self->wstart, self->wend - self->wstart);
      self->wend -= self->wstart;
      self->wstart = 0;
    }
  if (self->wend + need > self->wcap)
    {
      self->wcap = MAX (self->wend + need,
                        MIN (2 * self->wcap, (gsize) OUT_HIGH + 2 * RECORD_MAX));
      self->wcap = MAX (self->wcap, (gsize) 4096);
      self->wbuf = g_realloc (self->wbuf, self->wcap);
    }
}

/* Records are queued, never refused: GnuTLS then never sees a partial write, and all records of
 * one caller's write leave in one send(). */
static ssize_t
vec_push_cb (gnutls_transport_ptr_t ptr, const giovec_t *iov, int iovcnt)
{
  GtTlsStream *self = ptr;
  gsize total = 0;

  for (int i = 0; i < iovcnt; i++)
    total += iov[i].iov_len;
  wbuf_reserve (self, total);
  for (int i = 0; i < iovcnt; i++)
    {
      memcpy (self->wbuf + self->wend, iov[i].iov_base, iov[i].iov_len);
      self->wend += iov[i].iov_len;
    }
  return total;
}

static gsize
pending_out (GtTlsStream *self)
{
  return self->wend - self->wstart;
}

/* Sends what the socket takes now; watches for room while something is left. */
static void
flush_out (GtTlsStream *self)
{
  while (self->wend > self->wstart && self->write_error == NULL)
    {
      ssize_t n = send (self->fd, self->wbuf + self->wstart, self->wend - self->wstart,
                        MSG_NOSIGNAL);

      if (n < 0)
        {
          int err = errno;

          if (err == EINTR)
            continue;
          if (err != EAGAIN && err != EWOULDBLOCK)
            self->write_error = g_error_new (G_IO_ERROR, g_io_error_from_errno (err),
                                             "TLS send: %s", g_strerror (err));
          break;
        }
      self->wstart += n;
    }
  if (self->wend == self->wstart || self->write_error != NULL)
    {
      self->wstart = self->wend = self->wcap = 0;
      g_clear_pointer (&self->wbuf, g_free);
    }
  if (self->flush_source != NULL)
    gt_fd_watch_set_events (self->flush_source, pending_out (self) > 0 ? G_IO_OUT : 0);
}

static void
flush_ready_cb (int fd, GIOCondition revents, gpointer user_data)
{
  flush_out (user_data);
}

/* ------------------------------------------------------------------------------------------ */
/* Records: TLS 1.3 application data protected here, not in GnuTLS's record layer
 *
 * GnuTLS 3.7 encrypts a TLS 1.3 record piecewise (the content type is a second piece), which
 * takes its two-pass AES-GCM (CTR, then GHASH), copies every record through buffers of its own
 * and allocates one per record. Once the handshake is done, gt seals and opens the records itself
 * with the traffic secrets GnuTLS hands over: one-shot AEAD calls (GnuTLS's one-pass AES-GCM),
 * records sealed in place in the send queue and opened straight into the caller's buffer. The
 * handshake, certificates and alerts during it stay GnuTLS's. TLS 1.2 sessions keep GnuTLS's
 * record layer. */

/* Sealing stays below the AES-GCM limit of RFC 8446 §5.5 (2^24.5 records) by a KeyUpdate. */
#define KEY_UPDATE_AFTER (G_GUINT64_CONSTANT (1) << 24)
#define TAG_SIZE 16
#define CT_ALERT 21
#define CT_HANDSHAKE 22
#define CT_APPLICATION 23
#define HS_NEW_SESSION_TICKET 4
#define HS_KEY_UPDATE 24
/* RFC 8446 §5.2: the longest TLSCiphertext.length. */
#define RECORD_CIPHERTEXT_MAX (RECORD_MAX + 256)

/* HKDF-Expand-Label (RFC 8446 §7.1) with an empty context. */
static gboolean
hkdf_expand_label (GtTlsStream *self, const guint8 *secret, gsize secret_len, const char *label,
                   guint8 *out, gsize out_len)
{
  guint8 info[2 + 1 + 6 + 32 + 1];
  gsize label_len = strlen (label);
  gnutls_datum_t key = { (unsigned char *) secret, secret_len };
  gnutls_datum_t info_datum = { info, 0 };

  g_assert (label_len <= 32);
  info[0] = out_len >> 8;
  info[1] = out_len & 0xff;
  info[2] = 6 + label_len;
  memcpy (info + 3, "tls13 ", 6);
  memcpy (info + 9, label, label_len);
  info[9 + label_len] = 0;
  info_datum.size = 10 + label_len;
  return gnutls_hkdf_expand (self->hkdf_mac, &key, &info_datum, out, out_len) >= 0;
}

/* Keys and IV of a traffic secret (RFC 8446 §7.3); the sequence number starts again. */
static gboolean
keys_set (GtTlsStream *self, RecordKeys *k)
{
  guint8 key[32];
  gsize key_len = gnutls_cipher_get_key_size (self->cipher);
  gnutls_datum_t key_datum = { key, key_len };
  gboolean ok;

  if (k->aead != NULL)
    gnutls_aead_cipher_deinit (g_steal_pointer (&k->aead));
  ok = key_len > 0 && key_len <= sizeof key
       && hkdf_expand_label (self, k->secret, k->secret_len, "key", key, key_len)
       && hkdf_expand_label (self, k->secret, k->secret_len, "iv", k->iv, sizeof k->iv)
       && gnutls_aead_cipher_init (&k->aead, self->cipher, &key_datum) >= 0;
  explicit_bzero (key, sizeof key);
  if (!ok)
    k->aead = NULL;
  k->seq = 0;
  return ok;
}

/* The next generation of a direction's secret (RFC 8446 §7.2). */
static gboolean
keys_update (GtTlsStream *self, RecordKeys *k)
{
  guint8 next[64];
  gboolean ok = hkdf_expand_label (self, k->secret, k->secret_len, "traffic upd", next,
                                   k->secret_len);

  if (ok)
    memcpy (k->secret, next, k->secret_len);
  explicit_bzero (next, sizeof next);
  return ok && keys_set (self, k);
}

static void
keys_clear (RecordKeys *k)
{
  if (k->aead != NULL)
    gnutls_aead_cipher_deinit (g_steal_pointer (&k->aead));
  explicit_bzero (k, sizeof *k);
}

static void
record_nonce (const RecordKeys *k, guint8 nonce[12])
{
  memcpy (nonce, k->iv, 12);
  for (int i = 0; i < 8; i++)
    nonce[11 - i] ^= (k->seq >> (8 * i)) & 0xff;
}

/* GnuTLS hands over the application traffic secrets during the handshake. */
static int
secret_cb (gnutls_session_t session, gnutls_record_encryption_level_t level,
           const void *secret_read, const void *secret_write, size_t secret_size)
{
  GtTlsStream *self = gnutls_session_get_ptr (session);

  if (level != GNUTLS_ENCRYPTION_LEVEL_APPLICATION || secret_size > sizeof self->rd.secret)
    return 0;
  if (secret_read != NULL)
    {
      memcpy (self->rd.secret, secret_read, secret_size);
      self->rd.secret_len = secret_size;
    }
  if (secret_write != NULL)
    {
      memcpy (self->wr.secret, secret_write, secret_size);
      self->wr.secret_len = secret_size;
    }
  return 0;
}

/* After the handshake: records of our own for TLS 1.3 with an AEAD GnuTLS can do one-shot. */
static void
own_records_start (GtTlsStream *self)
{
  gnutls_cipher_algorithm_t cipher = gnutls_cipher_get (self->session);

  if (gnutls_protocol_get_version (self->session) != GNUTLS_TLS1_3 || self->rd.secret_len == 0
      || self->wr.secret_len == 0 || gnutls_record_check_pending (self->session) > 0
      || (cipher != GNUTLS_CIPHER_AES_128_GCM && cipher != GNUTLS_CIPHER_AES_256_GCM
          && cipher != GNUTLS_CIPHER_CHACHA20_POLY1305))
    goto keep_gnutls;
  self->cipher = cipher;
  self->hkdf_mac = (gnutls_mac_algorithm_t) gnutls_prf_hash_get (self->session);
  if (!keys_set (self, &self->rd) || !keys_set (self, &self->wr))
    goto keep_gnutls;
  self->own_records = TRUE;
  return;

keep_gnutls:
  g_debug ("TLS records stay with GnuTLS (not TLS 1.3 with AES-GCM or ChaCha20-Poly1305)");
  keys_clear (&self->rd);
  keys_clear (&self->wr);
}

static gboolean record_seal (GtTlsStream *self, guint8 type, const guint8 *data, gsize len);

/* Sends KeyUpdate and moves to the next write secret. */
static gboolean
send_key_update (GtTlsStream *self, gboolean request)
{
  guint8 msg[5] = { HS_KEY_UPDATE, 0, 0, 1, request ? 1 : 0 };

  return record_seal (self, CT_HANDSHAKE, msg, sizeof msg) && keys_update (self, &self->wr);
}

/* Appends one record to the send queue: fill writes the plaintext there, sealed in place. */
static gboolean
record_seal_with (GtTlsStream *self, guint8 type, gsize len, GtTlsFillFunc fill, gpointer data)
{
  gsize clen = len + 1 + TAG_SIZE;
  size_t out_len = clen;
  guint8 nonce[12];
  guint8 *rec;
  int r;

  g_assert (len <= RECORD_MAX);
  wbuf_reserve (self, 5 + clen);
  rec = self->wbuf + self->wend;
  rec[0] = CT_APPLICATION;
  rec[1] = 3;
  rec[2] = 3;
  rec[3] = clen >> 8;
  rec[4] = clen & 0xff;
  fill (rec + 5, len, data);
  rec[5 + len] = type;
  record_nonce (&self->wr, nonce);
  r = gnutls_aead_cipher_encrypt (self->wr.aead, nonce, sizeof nonce, rec, 5, TAG_SIZE, rec + 5,
                                  len + 1, rec + 5, &out_len);
  if (r < 0 || out_len != clen)
    {
      if (self->write_error == NULL)
        self->write_error = g_error_new (G_TLS_ERROR, G_TLS_ERROR_MISC, "TLS send: %s",
                                         r < 0 ? gnutls_strerror (r) : "short record");
      return FALSE;
    }
  self->wend += 5 + clen;
  self->wr.seq++;
  if (type == CT_APPLICATION && self->wr.seq >= KEY_UPDATE_AFTER)
    return send_key_update (self, FALSE);
  return TRUE;
}

/* The caller's bytes, in order, from vectors. */
typedef struct
{
  const GOutputVector *v;
  gsize n;
  gsize i;
  gsize pos;
} VecCursor;

static void
vectors_fill (guint8 *dst, gsize len, gpointer data)
{
  VecCursor *c = data;

  while (len > 0)
    {
      gsize n;

      g_assert (c->i < c->n);
      n = MIN (len, c->v[c->i].size - c->pos);
      memcpy (dst, (const guint8 *) c->v[c->i].buffer + c->pos, n);
      dst += n;
      len -= n;
      c->pos += n;
      if (c->pos == c->v[c->i].size)
        {
          c->i++;
          c->pos = 0;
        }
    }
}

static gboolean
record_seal (GtTlsStream *self, guint8 type, const guint8 *data, gsize len)
{
  GOutputVector v = { data, len };
  VecCursor c = { &v, 1, 0, 0 };

  return record_seal_with (self, type, len, vectors_fill, &c);
}

/* Seals len bytes of application data from fill, in records of the largest size. */
static gsize
seal_application (GtTlsStream *self, gsize len, GtTlsFillFunc fill, gpointer data)
{
  gsize accepted = 0;

  while (accepted < len)
    {
      gsize n = MIN (len - accepted, (gsize) RECORD_MAX);

      if (!record_seal_with (self, CT_APPLICATION, n, fill, data))
        break;
      accepted += n;
    }
  return accepted;
}

/* As much of the vectors as the send queue takes; the records span the vectors' boundaries. */
static gsize
own_write (GtTlsStream *self, const GOutputVector *vectors, gsize n_vectors)
{
  VecCursor c = { vectors, n_vectors, 0, 0 };
  gsize total = 0;

  for (gsize i = 0; i < n_vectors; i++)
    total += vectors[i].size;
  while (c.i < c.n && c.v[c.i].size == 0)
    c.i++;
  return seal_application (self, MIN (total, OUT_HIGH - pending_out (self)), vectors_fill, &c);
}

static void
read_fail (GtTlsStream *self, const char *message)
{
  if (self->read_error == NULL)
    self->read_error = g_error_new (G_TLS_ERROR, G_TLS_ERROR_MISC, "TLS receive: %s", message);
}

/* Length of the record at rstart when all of it is buffered, else 0. */
static gsize
buffered_record (GtTlsStream *self)
{
  gsize have = self->rend - self->rstart;
  const guint8 *h = self->rbuf + self->rstart;
  gsize clen;

  if (have < 5)
    return 0;
  clen = ((gsize) h[3] << 8) | h[4];
  /* A bad header is "complete" at once: record_open refuses it without waiting for its body. */
  if (h[0] != CT_APPLICATION || clen > RECORD_CIPHERTEXT_MAX || clen <= TAG_SIZE)
    return 5;
  return have >= 5 + clen ? 5 + clen : 0;
}

/* Reads from the socket behind what rbuf holds. FALSE: nothing came (read_eof or read_error
 * may be set, else the socket is empty). */
static gboolean
fill_rbuf (GtTlsStream *self)
{
  ssize_t got;

  if (self->rbuf == NULL)
    self->rbuf = g_malloc (RBUF_SIZE);
  else if (self->rstart > 0)
    {
      memmove (self->rbuf, self->rbuf + self->rstart, self->rend - self->rstart);
      self->rend -= self->rstart;
      self->rstart = 0;
    }
  do
    got = recv (self->fd, self->rbuf + self->rend, RBUF_SIZE - self->rend, 0);
  while (got < 0 && errno == EINTR);
  if (got > 0)
    {
      self->rdrained = (gsize) got < RBUF_SIZE - self->rend;
      self->rend += got;
      return TRUE;
    }
  self->rdrained = TRUE;
  if (got == 0)
    self->read_eof = TRUE; /* a tunnel ends with its own close: no close_notify is no truncation */
  else if (errno != EAGAIN && errno != EWOULDBLOCK)
    {
      int err = errno;

      if (self->read_error == NULL)
        self->read_error = g_error_new (G_IO_ERROR, g_io_error_from_errno (err),
                                        "TLS receive: %s", g_strerror (err));
    }
  return FALSE;
}

static void
rbuf_release_if_drained (GtTlsStream *self)
{
  if (self->rstart == self->rend && self->pstart == self->pend)
    {
      self->rstart = self->rend = self->pstart = self->pend = 0;
      g_clear_pointer (&self->rbuf, g_free);
    }
}

GtTlsInner
_gt_tls_inner_parse (const guint8 *plain, gsize len, gsize *data_len, gboolean *request,
                     const char **why)
{
  guint8 type;

  *data_len = 0;
  *request = FALSE;
  *why = NULL;
  if (len > RECORD_MAX + 1)
    {
      *why = "record overflow"; /* RFC 8446 §5.4: at most 2^14 + 1 bytes with type and padding */
      return GT_TLS_INNER_ERROR;
    }
  /* The content type is the last non-zero byte; zeros after it are padding (RFC 8446 §5.4). */
  while (len > 0 && plain[len - 1] == 0)
    len--;
  if (len == 0)
    {
      *why = "record without a content type";
      return GT_TLS_INNER_ERROR;
    }
  type = plain[--len];
  switch (type)
    {
    case CT_APPLICATION:
      *data_len = len;
      return GT_TLS_INNER_DATA;
    case CT_ALERT:
      if (len == 2 && plain[1] == 0)
        return GT_TLS_INNER_CLOSE;
      *why = len == 2 ? "the peer sent an alert" : "malformed alert";
      return GT_TLS_INNER_ERROR;
    case CT_HANDSHAKE:
      /* Post-handshake messages: tickets are ignored (gt never resumes); a KeyUpdate must end its
       * record (RFC 8446 §5.1); messages split across records are not expected. */
      while (len > 0)
        {
          gsize mlen = 0;

          if (len >= 4)
            mlen = ((gsize) plain[1] << 16) | ((gsize) plain[2] << 8) | plain[3];
          if (len < 4 || mlen > len - 4)
            {
              *why = "truncated handshake message";
              return GT_TLS_INNER_ERROR;
            }
          if (plain[0] == HS_KEY_UPDATE)
            {
              if (mlen != 1 || plain[4] > 1 || len != 5)
                {
                  *why = "malformed KeyUpdate";
                  return GT_TLS_INNER_ERROR;
                }
              *request = plain[4] == 1;
              return GT_TLS_INNER_KEY_UPDATE;
            }
          if (plain[0] != HS_NEW_SESSION_TICKET)
            {
              *why = "unexpected handshake message";
              return GT_TLS_INNER_ERROR;
            }
          plain += 4 + mlen;
          len -= 4 + mlen;
        }
      return GT_TLS_INNER_IGNORE;
    default:
      *why = "unexpected record type";
      return GT_TLS_INNER_ERROR;
    }
}

/* Opens the buffered record at rstart: into out when it has room for the record, else in place
 * in rbuf (pstart/pend). Returns the application bytes put in out, or -1 when the record was no
 * data for out (handled, or in place); read_error or read_eof say why it ended. */
static gssize
record_open (GtTlsStream *self, guint8 *out, gsize room)
{
  guint8 *rec = self->rbuf + self->rstart;
  gsize clen = ((gsize) rec[3] << 8) | rec[4];
  guint8 nonce[12];
  guint8 *plain;
  size_t plen;
  gsize data_len;
  gboolean request;
  const char *why;
  int r;

  if (rec[0] != CT_APPLICATION || clen > RECORD_CIPHERTEXT_MAX || clen <= TAG_SIZE)
    {
      /* TLS 1.3 allows a plaintext ChangeCipherSpec only during the handshake. */
      read_fail (self, "unexpected record");
      return -1;
    }
  plen = clen - TAG_SIZE;
  plain = room >= plen ? out : rec + 5;
  record_nonce (&self->rd, nonce);
  r = gnutls_aead_cipher_decrypt (self->rd.aead, nonce, sizeof nonce, rec, 5, TAG_SIZE, rec + 5,
                                  clen, plain, &plen);
  self->rstart += 5 + clen;
  if (r < 0)
    {
      read_fail (self, gnutls_strerror (r));
      return -1;
    }
  self->rd.seq++;
  switch (_gt_tls_inner_parse (plain, plen, &data_len, &request, &why))
    {
    case GT_TLS_INNER_DATA:
      if (plain == out)
        return data_len;
      self->pstart = plain - self->rbuf;
      self->pend = self->pstart + data_len;
      return -1;
    case GT_TLS_INNER_CLOSE:
      self->read_eof = TRUE;
      return -1;
    case GT_TLS_INNER_IGNORE:
      return -1;
    case GT_TLS_INNER_KEY_UPDATE:
      g_debug ("TLS KeyUpdate from the peer%s", request ? ", which asks for ours" : "");
      if (!keys_update (self, &self->rd) || (request && !send_key_update (self, FALSE)))
        read_fail (self, "key update failed");
      return -1;
    case GT_TLS_INNER_ERROR:
    default:
      read_fail (self, why);
      return -1;
    }
}

/* Application bytes while whole records are buffered or the socket has more. */
static gssize
own_read (GtTlsStream *self, guint8 *buffer, gsize count, GError **error)
{
  gsize total = 0;
  gboolean tried_socket = FALSE;

  while (total < count)
    {
      gssize n;

      if (self->pend > self->pstart)
        {
          n = MIN (count - total, self->pend - self->pstart);
          memcpy (buffer + total, self->rbuf + self->pstart, n);
          self->pstart += n;
          total += n;
          continue;
        }
      if (self->read_error != NULL || self->read_eof)
        break;
      if (buffered_record (self) == 0)
        {
          /* After a short read the socket is likely empty: no recv just to learn that. */
          if (total > 0 && self->rdrained)
            break;
          if (tried_socket && self->rdrained)
            break;
          tried_socket = TRUE;
          if (!fill_rbuf (self))
            break;
          continue;
        }
      n = record_open (self, buffer + total, count - total);
      if (n > 0)
        total += n;
    }
  if (self->wend > self->wstart)
    flush_out (self); /* a KeyUpdate answer */
  rbuf_release_if_drained (self);
  if (total > 0)
    return total;
  if (self->read_error != NULL)
    {
      g_propagate_error (error, g_error_copy (self->read_error));
      return -1;
    }
  if (self->read_eof)
    return 0;
  g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "no TLS record available");
  return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Pollable sources: ready on buffered state, else on the fd, which they poll themselves */

typedef struct
{
  GSource source;
  GtTlsStream *tls; /* owned */
  GObject *stream;  /* owned: the pollable stream handed to the callback */
  GPollFD pfd;
  gboolean output;
} TlsSource;

static gboolean
input_has_buffered (GtTlsStream *self)
{
  if (self->own_records)
    return self->pend > self->pstart || buffered_record (self) > 0 || self->read_error != NULL
           || self->read_eof;
  return self->rend > self->rstart || gnutls_record_check_pending (self->session) > 0
         || self->read_error != NULL;
}

static gboolean
output_has_room (GtTlsStream *self)
{
  return pending_out (self) < OUT_HIGH || self->write_error != NULL;
}

static gboolean
tls_source_ready (TlsSource *ts)
{
  if (ts->tls->session == NULL)
    return TRUE; /* closed: let the callback find out */
  return ts->output ? output_has_room (ts->tls) : input_has_buffered (ts->tls);
}

static gboolean
tls_source_prepare (GSource *source, gint *timeout)
{
  TlsSource *ts = (TlsSource *) source;

  *timeout = -1;
  if (tls_source_ready (ts))
    {
      ts->pfd.events = 0;
      return TRUE;
    }
  ts->pfd.events = ts->output ? G_IO_OUT : G_IO_IN;
  return FALSE;
}

static gboolean
tls_source_check (GSource *source)
{
  TlsSource *ts = (TlsSource *) source;

  return (ts->pfd.revents & (ts->pfd.events | G_IO_HUP | G_IO_ERR | G_IO_NVAL)) != 0
         || tls_source_ready (ts);
}

static gboolean
tls_source_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  TlsSource *ts = (TlsSource *) source;
  GPollableSourceFunc func = (GPollableSourceFunc) (void (*) (void)) callback;

  ts->pfd.revents = 0;
  if (ts->output && ts->tls->session != NULL)
    flush_out (ts->tls);
  if (func == NULL)
    return G_SOURCE_REMOVE;
  return func (ts->stream, user_data);
}

static void
tls_source_finalize (GSource *source)
{
  TlsSource *ts = (TlsSource *) source;

  g_clear_object (&ts->stream);
  g_clear_object (&ts->tls);
}

static GSourceFuncs tls_source_funcs = {
  tls_source_prepare,
  tls_source_check,
  tls_source_dispatch,
  tls_source_finalize,
  (GSourceFunc) (void (*) (void)) gt_pollable_source_closure_callback,
  NULL,
};

static GSource *
tls_source_new (GtTlsStream *tls, GObject *stream, gboolean output, GCancellable *cancellable)
{
  GSource *source = g_source_new (&tls_source_funcs, sizeof (TlsSource));
  TlsSource *ts = (TlsSource *) source;

  g_source_set_static_name (source, output ? "GtTlsOutput" : "GtTlsInput");
  ts->tls = g_object_ref (tls);
  ts->stream = g_object_ref (stream);
  ts->output = output;
  ts->pfd.fd = tls->fd;
  g_source_add_poll (source, &ts->pfd);
  /* No nested main loops in gt: not blocking the source during dispatch saves GLib's poll-set
   * changes and the wakeups they cost (see gt-fd-source.c). */
  g_source_set_can_recurse (source, TRUE);
  if (cancellable != NULL)
    {
      g_autoptr (GSource) cancel = g_cancellable_source_new (cancellable);

      g_source_set_dummy_callback (cancel);
      g_source_add_child_source (source, cancel);
    }
  return source;
}

/* ------------------------------------------------------------------------------------------ */
/* Input */

static gssize
tls_read_nonblocking (GtTlsStream *self, guint8 *buffer, gsize count, GError **error)
{
  gsize total = 0;

  if (self->session == NULL)
    {
      g_propagate_error (error, closed_error ());
      return -1;
    }
  if (self->read_error != NULL)
    {
      g_propagate_error (error, g_error_copy (self->read_error));
      return -1;
    }
  if (self->own_records)
    return own_read (self, buffer, count, error);
  /* Whole records while they are buffered, so one call drains a large read. */
  while (total < count)
    {
      ssize_t r = gnutls_record_recv (self->session, buffer + total, count - total);

      if (r > 0)
        {
          total += r;
          if (self->rend == self->rstart && gnutls_record_check_pending (self->session) == 0
              && self->rdrained)
            break;
          continue;
        }
      if (r == GNUTLS_E_INTERRUPTED)
        continue;
      if (r == GNUTLS_E_AGAIN)
        {
          if (total > 0)
            break;
          g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK,
                               "no TLS record available");
          return -1;
        }
      /* A tunnel ends with its own close, so a missing close_notify is no truncation. */
      if (r == 0 || r == GNUTLS_E_PREMATURE_TERMINATION)
        break;
      if (!gnutls_error_is_fatal (r))
        continue; /* a warning alert */
      self->read_error = g_error_new (G_TLS_ERROR, G_TLS_ERROR_MISC, "TLS receive: %s",
                                      gnutls_strerror (r));
      if (total > 0)
        break;
      g_propagate_error (error, g_error_copy (self->read_error));
      return -1;
    }
  return total;
}

static gssize
input_read_nonblocking (GPollableInputStream *stream, void *buffer, gsize count, GError **error)
{
  GtTlsStream *tls = GT_TLS_INPUT (stream)->tls;

  if (tls == NULL)
    {
      g_propagate_error (error, closed_error ());
      return -1;
    }
  return tls_read_nonblocking (tls, buffer, count, error);
}

static gssize
input_read (GInputStream *stream, void *buffer, gsize count, GCancellable *cancellable,
            GError **error)
{
  GtTlsStream *tls = GT_TLS_INPUT (stream)->tls;

  for (;;)
    {
      GError *local = NULL;
      gssize n;

      if (tls == NULL)
        {
          g_propagate_error (error, closed_error ());
          return -1;
        }
      n = tls_read_nonblocking (tls, buffer, count, &local);
      if (n >= 0 || !g_error_matches (local, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        {
          if (local != NULL)
            g_propagate_error (error, local);
          return n;
        }
      g_error_free (local);
      if (!g_socket_condition_wait (tls->socket, G_IO_IN, cancellable, error))
        return -1;
    }
}

static gboolean
input_close (GInputStream *stream, GCancellable *cancellable, GError **error)
{
  return TRUE; /* the GIOStream closes the connection */
}

static gboolean
input_can_poll (GPollableInputStream *stream)
{
  return TRUE;
}

static gboolean
input_is_readable (GPollableInputStream *stream)
{
  GtTlsStream *tls = GT_TLS_INPUT (stream)->tls;

  return tls == NULL || tls->session == NULL || input_has_buffered (tls)
         || g_socket_condition_check (tls->socket, G_IO_IN) != 0;
}

static GSource *
input_create_source (GPollableInputStream *stream, GCancellable *cancellable)
{
  GtTlsStream *tls = GT_TLS_INPUT (stream)->tls;

  g_return_val_if_fail (tls != NULL, NULL);
  return tls_source_new (tls, G_OBJECT (stream), FALSE, cancellable);
}

static void
gt_tls_input_class_init (GtTlsInputClass *klass)
{
  G_INPUT_STREAM_CLASS (klass)->read_fn = input_read;
  G_INPUT_STREAM_CLASS (klass)->close_fn = input_close;
}

static void
input_pollable_init (GPollableInputStreamInterface *iface)
{
  iface->can_poll = input_can_poll;
  iface->is_readable = input_is_readable;
  iface->create_source = input_create_source;
  iface->read_nonblocking = input_read_nonblocking;
}

static void
gt_tls_input_init (GtTlsInput *self)
{
}

/* ------------------------------------------------------------------------------------------ */
/* Output */

/* GnuTLS's records (TLS 1.2): as much of buffer as the send queue takes. */
static gsize
records_write_gnutls (GtTlsStream *self, const guint8 *buffer, gsize count)
{
  gsize budget;
  gsize accepted = 0;

  if (pending_out (self) >= OUT_HIGH)
    return 0;
  budget = MIN (count, OUT_HIGH - pending_out (self));
  while (accepted < budget)
    {
      ssize_t r = gnutls_record_send (self->session, buffer + accepted,
                                      MIN (budget - accepted, (gsize) RECORD_MAX));

      if (r == GNUTLS_E_INTERRUPTED || r == GNUTLS_E_AGAIN)
        continue; /* the push function never refuses; GnuTLS only retries */
      if (r < 0)
        {
          self->write_error = g_error_new (G_TLS_ERROR, G_TLS_ERROR_MISC, "TLS send: %s",
                                           gnutls_strerror (r));
          break;
        }
      accepted += r;
    }
  return accepted;
}

static gssize
tls_write_nonblocking (GtTlsStream *self, const GOutputVector *vectors, gsize n_vectors,
                       GError **error)
{
  gsize accepted = 0;

  if (self->session == NULL || (self->own_records && self->write_closed))
    {
      g_propagate_error (error, closed_error ());
      return -1;
    }
  if (pending_out (self) > 0)
    flush_out (self);
  if (self->write_error != NULL)
    {
      g_propagate_error (error, g_error_copy (self->write_error));
      return -1;
    }
  if (pending_out (self) >= OUT_HIGH)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "TLS send queue is full");
      return -1;
    }
  if (self->own_records)
    accepted = own_write (self, vectors, n_vectors);
  else
    for (gsize i = 0; i < n_vectors && self->write_error == NULL; i++)
      {
        gsize n = records_write_gnutls (self, vectors[i].buffer, vectors[i].size);

        accepted += n;
        if (n < vectors[i].size)
          break;
      }
  flush_out (self);
  if (accepted == 0 && self->write_error != NULL)
    {
      g_propagate_error (error, g_error_copy (self->write_error));
      return -1;
    }
  return accepted;
}

static gssize
output_write_nonblocking (GPollableOutputStream *stream, const void *buffer, gsize count,
                          GError **error)
{
  GtTlsStream *tls = GT_TLS_OUTPUT (stream)->tls;

  if (tls == NULL)
    {
      g_propagate_error (error, closed_error ());
      return -1;
    }
  return tls_write_nonblocking (tls, &(GOutputVector) { buffer, count }, 1, error);
}

static GPollableReturn
output_writev_nonblocking (GPollableOutputStream *stream, const GOutputVector *vectors,
                           gsize n_vectors, gsize *bytes_written, GError **error)
{
  GtTlsStream *tls = GT_TLS_OUTPUT (stream)->tls;
  GError *local = NULL;
  gssize n;

  if (bytes_written != NULL)
    *bytes_written = 0;
  if (tls == NULL)
    {
      g_propagate_error (error, closed_error ());
      return G_POLLABLE_RETURN_FAILED;
    }
  n = tls_write_nonblocking (tls, vectors, n_vectors, &local);
  if (n < 0 && g_error_matches (local, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
    {
      g_error_free (local);
      return G_POLLABLE_RETURN_WOULD_BLOCK;
    }
  if (n < 0)
    {
      g_propagate_error (error, local);
      return G_POLLABLE_RETURN_FAILED;
    }
  if (bytes_written != NULL)
    *bytes_written = n;
  return G_POLLABLE_RETURN_OK;
}

/* Waits until everything queued is in the socket. */
static gboolean
flush_blocking (GtTlsStream *tls, GCancellable *cancellable, GError **error)
{
  for (;;)
    {
      if (tls->write_error != NULL)
        {
          g_propagate_error (error, g_error_copy (tls->write_error));
          return FALSE;
        }
      flush_out (tls);
      if (pending_out (tls) == 0 && tls->write_error == NULL)
        return TRUE;
      if (tls->write_error == NULL
          && !g_socket_condition_wait (tls->socket, G_IO_OUT, cancellable, error))
        return FALSE;
    }
}

static gssize
output_write (GOutputStream *stream, const void *buffer, gsize count, GCancellable *cancellable,
              GError **error)
{
  GtTlsStream *tls = GT_TLS_OUTPUT (stream)->tls;
  gssize n;

  if (tls == NULL)
    {
      g_propagate_error (error, closed_error ());
      return -1;
    }
  for (;;)
    {
      GError *local = NULL;

      n = tls_write_nonblocking (tls, &(GOutputVector) { buffer, count }, 1, &local);
      if (n >= 0 || !g_error_matches (local, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        {
          if (local != NULL)
            g_propagate_error (error, local);
          break;
        }
      g_error_free (local);
      if (!g_socket_condition_wait (tls->socket, G_IO_OUT, cancellable, error))
        return -1;
    }
  if (n >= 0 && !flush_blocking (tls, cancellable, error))
    return -1;
  return n;
}

static gboolean
output_flush (GOutputStream *stream, GCancellable *cancellable, GError **error)
{
  GtTlsStream *tls = GT_TLS_OUTPUT (stream)->tls;

  /* Never waits: a stream closed on a peer that reads nothing must not block the loop. What is
   * left goes out with the flush source, or with the socket's close. */
  if (tls != NULL && tls->session != NULL)
    flush_out (tls);
  return TRUE;
}

static gboolean
output_close (GOutputStream *stream, GCancellable *cancellable, GError **error)
{
  return TRUE; /* the GIOStream closes the connection */
}

static gboolean
output_can_poll (GPollableOutputStream *stream)
{
  return TRUE;
}

static gboolean
output_is_writable (GPollableOutputStream *stream)
{
  GtTlsStream *tls = GT_TLS_OUTPUT (stream)->tls;

  return tls == NULL || tls->session == NULL || output_has_room (tls);
}

static GSource *
output_create_source (GPollableOutputStream *stream, GCancellable *cancellable)
{
  GtTlsStream *tls = GT_TLS_OUTPUT (stream)->tls;

  g_return_val_if_fail (tls != NULL, NULL);
  return tls_source_new (tls, G_OBJECT (stream), TRUE, cancellable);
}

static void
gt_tls_output_class_init (GtTlsOutputClass *klass)
{
  G_OUTPUT_STREAM_CLASS (klass)->write_fn = output_write;
  G_OUTPUT_STREAM_CLASS (klass)->flush = output_flush;
  G_OUTPUT_STREAM_CLASS (klass)->close_fn = output_close;
}

static void
output_pollable_init (GPollableOutputStreamInterface *iface)
{
  iface->can_poll = output_can_poll;
  iface->is_writable = output_is_writable;
  iface->create_source = output_create_source;
  iface->write_nonblocking = output_write_nonblocking;
  iface->writev_nonblocking = output_writev_nonblocking;
}

static void
gt_tls_output_init (GtTlsOutput *self)
{
}

/* ------------------------------------------------------------------------------------------ */
/* The connection */

static GInputStream *
get_input_stream (GIOStream *stream)
{
  return GT_TLS_STREAM (stream)->in;
}

static GOutputStream *
get_output_stream (GIOStream *stream)
{
  return GT_TLS_STREAM (stream)->out;
}

/* Sends close_notify if the socket takes it now, and closes the socket. Never blocks. */
static gboolean
tls_stream_close (GIOStream *stream, GCancellable *cancellable, GError **error)
{
  GtTlsStream *self = GT_TLS_STREAM (stream);

  if (self->session != NULL && self->handshaken && self->write_error == NULL)
    {
      static const guint8 close_notify[2] = { 1, 0 };

      if (self->own_records)
        {
          if (!self->write_closed)
            (void) record_seal (self, CT_ALERT, close_notify, sizeof close_notify);
        }
      else
        (void) gnutls_bye (self->session, GNUTLS_SHUT_WR);
      flush_out (self);
    }
  self->write_closed = TRUE;
  gt_fd_watch_free (g_steal_pointer (&self->flush_source));
  (void) g_input_stream_close (self->in, NULL, NULL);
  (void) g_output_stream_close (self->out, NULL, NULL);
  return g_io_stream_close (self->base, cancellable, error);
}

static void
tls_stream_close_async (GIOStream *stream, int io_priority, GCancellable *cancellable,
                        GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GTask) task = g_task_new (stream, cancellable, callback, user_data);
  GError *error = NULL;

  g_task_set_source_tag (task, tls_stream_close_async);
  if (tls_stream_close (stream, cancellable, &error))
    g_task_return_boolean (task, TRUE);
  else
    g_task_return_error (task, error);
}

static gboolean
tls_stream_close_finish (GIOStream *stream, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

static void
gt_tls_stream_dispose (GObject *object)
{
  GtTlsStream *self = GT_TLS_STREAM (object);

  gt_fd_watch_free (g_steal_pointer (&self->flush_source));
  G_OBJECT_CLASS (gt_tls_stream_parent_class)->dispose (object);
}

static void
gt_tls_stream_finalize (GObject *object)
{
  GtTlsStream *self = GT_TLS_STREAM (object);

  if (self->in != NULL)
    GT_TLS_INPUT (self->in)->tls = NULL;
  if (self->out != NULL)
    GT_TLS_OUTPUT (self->out)->tls = NULL;
  g_clear_object (&self->in);
  g_clear_object (&self->out);
  keys_clear (&self->rd);
  keys_clear (&self->wr);
  if (self->session != NULL)
    gnutls_deinit (self->session);
  g_clear_object (&self->socket);
  g_clear_object (&self->base);
  g_free (self->rbuf);
  g_free (self->wbuf);
  g_clear_error (&self->read_error);
  g_clear_error (&self->write_error);
  g_clear_error (&self->verify_error);
  G_OBJECT_CLASS (gt_tls_stream_parent_class)->finalize (object);
}

static void
gt_tls_stream_class_init (GtTlsStreamClass *klass)
{
  GIOStreamClass *io_class = G_IO_STREAM_CLASS (klass);

  G_OBJECT_CLASS (klass)->dispose = gt_tls_stream_dispose;
  G_OBJECT_CLASS (klass)->finalize = gt_tls_stream_finalize;
  io_class->get_input_stream = get_input_stream;
  io_class->get_output_stream = get_output_stream;
  io_class->close_fn = tls_stream_close;
  io_class->close_async = tls_stream_close_async;
  io_class->close_finish = tls_stream_close_finish;
}

static void
gt_tls_stream_init (GtTlsStream *self)
{
  self->fd = -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Sessions */

static gnutls_priority_t
shared_priority (GError **error)
{
  static gnutls_priority_t priority;
  static gboolean failed;

  if (priority == NULL && !failed)
    {
      /* The same priority string glib-networking reads: gt_transport_tls_init sets it from
       * tlsMinVersion at start unless the user did. */
      const char *text = g_getenv ("G_TLS_GNUTLS_PRIORITY");
      const char *err_pos = NULL;
      int r = gnutls_priority_init (&priority, text != NULL ? text : "NORMAL", &err_pos);

      if (r < 0)
        {
          g_warning ("TLS priority string '%s' is invalid at '%s' (%s); using NORMAL",
                     text ? text : "NORMAL", err_pos ? err_pos : "", gnutls_strerror (r));
          priority = NULL;
          r = gnutls_priority_init (&priority, "NORMAL", NULL);
          failed = r < 0;
          if (failed)
            priority = NULL;
        }
    }
  if (priority == NULL)
    g_set_error_literal (error, G_TLS_ERROR, G_TLS_ERROR_MISC, "no usable TLS priority");
  return priority;
}

/* Called by GnuTLS in the handshake once the server's certificate arrived: a refusal ends the
 * handshake with an alert, so the server logs a failed handshake, as it should. */
static int
verify_cb (gnutls_session_t session)
{
  GtTlsStream *self = gnutls_session_get_ptr (session);

  if (self == NULL || self->verify == NULL)
    return 0;
  g_clear_error (&self->verify_error);
  return self->verify (G_IO_STREAM (self), self->verify_data, &self->verify_error) ? 0 : -1;
}

/* Clients verify the server with the callback their caller sets (GIO's database, pins); their
 * credentials hold no trust store. */
static gnutls_certificate_credentials_t
client_credentials (void)
{
  static gnutls_certificate_credentials_t creds;

  if (creds == NULL)
    {
      if (gnutls_certificate_allocate_credentials (&creds) < 0)
        creds = NULL;
      else
        gnutls_certificate_set_verify_function (creds, verify_cb);
    }
  return creds;
}

static void
credentials_free (gpointer creds)
{
  gnutls_certificate_free_credentials (creds);
}

/* The server credentials of a GIO certificate, made once and kept with it. */
static gnutls_certificate_credentials_t
server_credentials (GTlsCertificate *certificate, GError **error)
{
  static GQuark quark;
  gnutls_certificate_credentials_t creds;
  g_autofree char *key_pem = NULL;
  g_autoptr (GString) chain = g_string_new (NULL);
  gnutls_datum_t cert_datum;
  gnutls_datum_t key_datum;
  int r;

  if (quark == 0)
    quark = g_quark_from_static_string ("gt-tls-stream-credentials");
  creds = g_object_get_qdata (G_OBJECT (certificate), quark);
  if (creds != NULL)
    return creds;

  g_object_get (certificate, "private-key-pem", &key_pem, NULL);
  for (GTlsCertificate *c = certificate; c != NULL; c = g_tls_certificate_get_issuer (c))
    {
      g_autofree char *pem = NULL;

      g_object_get (c, "certificate-pem", &pem, NULL);
      if (pem != NULL)
        g_string_append (chain, pem);
    }
  if (key_pem == NULL || chain->len == 0)
    {
      g_set_error_literal (error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE,
                           "the server certificate has no readable private key");
      return NULL;
    }
  r = gnutls_certificate_allocate_credentials (&creds);
  if (r < 0)
    {
      g_set_error (error, G_TLS_ERROR, G_TLS_ERROR_MISC, "TLS credentials: %s",
                   gnutls_strerror (r));
      return NULL;
    }
  cert_datum.data = (unsigned char *) chain->str;
  cert_datum.size = chain->len;
  key_datum.data = (unsigned char *) key_pem;
  key_datum.size = strlen (key_pem);
  r = gnutls_certificate_set_x509_key_mem2 (creds, &cert_datum, &key_datum, GNUTLS_X509_FMT_PEM,
                                            NULL, 0);
  explicit_bzero (key_pem, strlen (key_pem));
  if (r < 0)
    {
      gnutls_certificate_free_credentials (creds);
      g_set_error (error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE,
                   "the server certificate or key is unusable: %s", gnutls_strerror (r));
      return NULL;
    }
  g_object_set_qdata_full (G_OBJECT (certificate), quark, creds, credentials_free);
  return creds;
}

static GtTlsStream *
tls_stream_new (GIOStream *base, gboolean server, gnutls_certificate_credentials_t creds,
                GError **error)
{
  g_autoptr (GtTlsStream) self = NULL;
  gnutls_priority_t priority;
  int r;

  if (!G_IS_SOCKET_CONNECTION (base))
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                           "TLS tunnels run on sockets only");
      return NULL;
    }
  priority = shared_priority (error);
  if (priority == NULL || creds == NULL)
    {
      if (priority != NULL)
        g_set_error_literal (error, G_TLS_ERROR, G_TLS_ERROR_MISC, "no TLS credentials");
      return NULL;
    }
  self = g_object_new (GT_TYPE_TLS_STREAM, NULL);
  self->base = g_object_ref (base);
  self->socket = g_object_ref (g_socket_connection_get_socket (G_SOCKET_CONNECTION (base)));
  self->fd = g_socket_get_fd (self->socket);
  /* No tickets: a tunnel never resumes a session. */
  r = gnutls_init (&self->session, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK
                                     | GNUTLS_NO_SIGNAL | GNUTLS_NO_TICKETS);
  if (r >= 0)
    r = gnutls_priority_set (self->session, priority);
  if (r >= 0)
    r = gnutls_credentials_set (self->session, GNUTLS_CRD_CERTIFICATE, creds);
  if (r < 0)
    {
      g_set_error (error, G_TLS_ERROR, G_TLS_ERROR_MISC, "TLS session: %s", gnutls_strerror (r));
      return NULL;
    }
  if (server)
    gnutls_certificate_server_set_request (self->session, GNUTLS_CERT_IGNORE);
  gnutls_transport_set_ptr (self->session, self);
  gnutls_session_set_ptr (self->session, self);
  gnutls_transport_set_pull_function (self->session, pull_cb);
  gnutls_transport_set_vec_push_function (self->session, vec_push_cb);
  gnutls_handshake_set_secret_function (self->session, secret_cb);

  self->in = g_object_new (GT_TYPE_TLS_INPUT, NULL);
  GT_TLS_INPUT (self->in)->tls = self;
  self->out = g_object_new (GT_TYPE_TLS_OUTPUT, NULL);
  GT_TLS_OUTPUT (self->out)->tls = self;
  self->flush_source = gt_fd_watch_new (self->fd, 0, flush_ready_cb, self);
  return g_steal_pointer (&self);
}

GIOStream *
_gt_tls_stream_new_client (GIOStream *base, const char *host, GError **error)
{
  GtTlsStream *self;

  if (!gt_tls_load (error))
    return NULL;
  self = tls_stream_new (base, FALSE, client_credentials (), error);
  if (self == NULL)
    return NULL;
  if (host != NULL && !g_hostname_is_ip_address (host))
    {
      int r = gnutls_server_name_set (self->session, GNUTLS_NAME_DNS, host, strlen (host));

      if (r < 0)
        {
          g_set_error (error, G_TLS_ERROR, G_TLS_ERROR_MISC, "TLS server name '%s': %s", host,
                       gnutls_strerror (r));
          g_object_unref (self);
          return NULL;
        }
    }
  return G_IO_STREAM (self);
}

GIOStream *
_gt_tls_stream_new_server (GIOStream *base, GTlsCertificate *certificate, GError **error)
{
  gnutls_certificate_credentials_t creds;

  g_return_val_if_fail (G_IS_TLS_CERTIFICATE (certificate), NULL);
  if (!gt_tls_load (error))
    return NULL;
  creds = server_credentials (certificate, error);
  if (creds == NULL)
    return NULL;
  return G_IO_STREAM (tls_stream_new (base, TRUE, creds, error));
}

/* ------------------------------------------------------------------------------------------ */
/* Handshake */

static void handshake_step (GTask *task);

static gboolean
handshake_ready_cb (GSocket *socket, GIOCondition condition, gpointer user_data)
{
  GTask *task = user_data;

  g_source_destroy (g_task_get_task_data (task));
  g_task_set_task_data (task, NULL, NULL);
  handshake_step (task);
  return G_SOURCE_REMOVE;
}

static void
handshake_step (GTask *task)
{
  GtTlsStream *self = g_task_get_source_object (task);
  GIOCondition wait_for;
  GSource *source;
  int r;

  if (g_task_return_error_if_cancelled (task))
    {
      g_object_unref (task);
      return;
    }
  do
    r = gnutls_handshake (self->session);
  while (r < 0 && r != GNUTLS_E_AGAIN && !gnutls_error_is_fatal (r));
  flush_out (self);
  if (self->write_error != NULL)
    {
      g_task_return_error (task, g_error_copy (self->write_error));
      g_object_unref (task);
      return;
    }
  if (r == 0)
    {
      self->handshaken = TRUE;
      own_records_start (self);
      g_task_return_boolean (task, TRUE);
      g_object_unref (task);
      return;
    }
  if (r != GNUTLS_E_AGAIN && self->verify_error != NULL)
    {
      g_task_return_error (task, g_steal_pointer (&self->verify_error));
      g_object_unref (task);
      return;
    }
  if (r != GNUTLS_E_AGAIN)
    {
      if (r == GNUTLS_E_PREMATURE_TERMINATION || r == GNUTLS_E_PULL_ERROR)
        g_task_return_new_error (task, G_TLS_ERROR, G_TLS_ERROR_EOF,
                                 "the peer closed the connection during the TLS handshake");
      else
        g_task_return_new_error (task, G_TLS_ERROR, G_TLS_ERROR_HANDSHAKE, "%s",
                                 gnutls_strerror (r));
      g_object_unref (task);
      return;
    }
  /* Ciphertext the socket did not take yet is sent by the flush source; the handshake waits to
   * read (GnuTLS never waits to write: the push function queues). */
  wait_for = G_IO_IN;
  if (pending_out (self) > 0 && gnutls_record_get_direction (self->session) == 1)
    wait_for = G_IO_OUT;
  source = g_socket_create_source (self->socket, wait_for, g_task_get_cancellable (task));
  g_source_set_callback (source, (GSourceFunc) (void (*) (void)) handshake_ready_cb, task, NULL);
  g_task_set_task_data (task, source, (GDestroyNotify) g_source_unref);
  g_source_attach (source, g_task_get_context (task));
}

void
_gt_tls_stream_handshake_async (GIOStream *stream, GCancellable *cancellable,
                                GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task;

  g_return_if_fail (GT_IS_TLS_STREAM (stream));
  task = g_task_new (stream, cancellable, callback, user_data);
  g_task_set_source_tag (task, _gt_tls_stream_handshake_async);
  handshake_step (task);
}

gboolean
_gt_tls_stream_handshake_finish (GIOStream *stream, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, stream), FALSE);
  return g_task_propagate_boolean (G_TASK (result), error);
}

GTlsCertificate *
_gt_tls_stream_get_peer_certificate (GIOStream *stream)
{
  GtTlsStream *self = GT_TLS_STREAM (stream);
  const gnutls_datum_t *list;
  unsigned int n = 0;
  GTlsCertificate *issuer = NULL;
  GType type;

  list = gnutls_certificate_get_peers (self->session, &n);
  if (list == NULL || n == 0)
    return NULL;
  type = g_tls_backend_get_certificate_type (g_tls_backend_get_default ());
  /* Built from the top of the chain down, each certificate naming its issuer. */
  for (unsigned int i = n; i-- > 0;)
    {
      g_autoptr (GByteArray) der = g_byte_array_sized_new (list[i].size);
      GTlsCertificate *cert;

      g_byte_array_append (der, list[i].data, list[i].size);
      cert = g_initable_new (type, NULL, NULL, "certificate", der, "issuer", issuer, NULL);
      g_clear_object (&issuer);
      if (cert == NULL)
        return NULL;
      issuer = cert;
    }
  return issuer;
}

void
_gt_tls_stream_set_verify (GIOStream *stream, GtTlsVerifyFunc verify, gpointer data)
{
  GtTlsStream *self = GT_TLS_STREAM (stream);

  self->verify = verify;
  self->verify_data = data;
}

char *
_gt_tls_stream_describe (GIOStream *stream)
{
  GtTlsStream *self = GT_TLS_STREAM (stream);
  char *desc = gnutls_session_get_desc (self->session);
  char *copy = g_strdup (desc);

  gnutls_free (desc);
  return copy;
}

gboolean
_gt_tls_stream_update_keys (GIOStream *stream, gboolean request_peer)
{
  GtTlsStream *self = GT_TLS_STREAM (stream);

  if (!self->own_records || self->write_closed || self->write_error != NULL)
    return FALSE;
  if (!send_key_update (self, request_peer))
    return FALSE;
  flush_out (self);
  return TRUE;
}

gboolean
_gt_tls_stream_write_with (GIOStream *stream, gsize len, GtTlsFillFunc fill, gpointer data)
{
  GtTlsStream *self;

  if (!GT_IS_TLS_STREAM (stream))
    return FALSE;
  self = GT_TLS_STREAM (stream);
  if (!self->own_records || self->write_closed || self->session == NULL)
    return FALSE;
  if (pending_out (self) > 0)
    flush_out (self);
  /* Like a write, taken while the queue is below its mark: at most one such write above it. */
  if (self->write_error != NULL || pending_out (self) >= OUT_HIGH
      || len > (gsize) OUT_HIGH + RECORD_MAX)
    return FALSE;
  (void) seal_application (self, len, fill, data); /* a failure is the next write's error */
  flush_out (self);
  return TRUE;
}
