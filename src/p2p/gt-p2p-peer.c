/* gt-p2p-peer.c: one WebRTC peer: ICE (libnice) → DTLS 1.2 (GnuTLS, non-blocking) → SCTP
 * (usrsctp without threads, on the GLib main context) → DCEP data channels → local TCP. */
#include "config.h"

#define G_LOG_DOMAIN "gt-p2p"

#include "gt-p2p-peer.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/dtls.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <nice/agent.h>
#include <nice/interfaces.h>
#include <string.h>
#include <usrsctp.h>

#define SCTP_PORT 5000
#define DTLS_MTU 1400
#define SCTP_MTU 1200
/* Largest data channel message sent: a TCP read. */
#define CHANNEL_READ 16384
/* A channel stops reading SCTP (and so lets the peer's window fill) above this many bytes not
 * yet written to its TCP socket. */
#define CHANNEL_MAX_PENDING (1024 * 1024)
#define MAX_CHANNELS 1024
/* Datagrams waiting for GnuTLS: more means the peer floods us. */
#define MAX_QUEUED_DATAGRAMS 256

#define DCEP_PPID 50
#define PPID_STRING 51
#define PPID_BINARY 53
#define PPID_STRING_EMPTY 56
#define PPID_BINARY_EMPTY 57
#define DCEP_OPEN 0x03
#define DCEP_ACK 0x02

typedef enum
{
  STATE_NEW,
  STATE_ICE,       /* waiting for ICE */
  STATE_DTLS,      /* handshaking */
  STATE_SCTP,      /* association up (or coming up) */
  STATE_CLOSED,
} PeerState;

typedef struct _Channel Channel;

struct _GtP2pPeer
{
  GObject parent_instance;

  guint id;
  GtP2pPeerOptions options;
  PeerState state;
  gboolean offerer;
  gboolean dtls_client;
  gboolean remote_set;

  NiceAgent *agent;
  guint stream_id;
  GPtrArray *local_candidates; /* char*, NULL-terminated */
  gboolean gathering_done;
  char *mid;

  guint8 local_fingerprint[GT_SDP_FINGERPRINT_LEN];
  guint8 remote_fingerprint[GT_SDP_FINGERPRINT_LEN];
  gnutls_certificate_credentials_t creds;
  gnutls_session_t session;
  GQueue incoming; /* GBytes* datagrams for GnuTLS */
  guint dtls_timer_id;

  struct socket *sock;
  gboolean sctp_connected;
  GByteArray *msg;      /* SCTP message being reassembled */
  GHashTable *channels; /* sid → Channel* */
  guint pump_id;
  guint timeout_id;

  guint64 bytes_in, bytes_out;
  guint n_channels_opened;
  char *selected_type; /* candidate type of the selected pair */
  char *selected_remote_type;
  guint16 next_sid; /* of the channels this side opens */
};

struct _Channel
{
  GtP2pPeer *peer; /* not owned */
  guint16 sid;
  char *label;
  GCancellable *cancellable;
  GSocketConnection *conn;
  GSource *read_source;
  GSource *write_source;
  GByteArray *to_tcp;   /* from the peer, not yet written to TCP */
  guint8 *unsent;       /* a TCP read that SCTP had no room for */
  gsize unsent_len;
  gboolean tcp_eof;     /* the local service ended its side */
  gboolean remote_closed;
  gboolean reset_sent;
  gboolean local;   /* opened by this side (gt_p2p_peer_open_channel) */
  gboolean traffic; /* a byte was sent or received */
};

enum
{
  SIGNAL_LOCAL_CANDIDATE,
  SIGNAL_GATHERING_DONE,
  SIGNAL_CONNECTED,
  SIGNAL_CHANNEL_ORPHANED,
  SIGNAL_CLOSED,
  N_SIGNALS
};
static guint signals[N_SIGNALS];

G_DEFINE_FINAL_TYPE (GtP2pPeer, gt_p2p_peer, G_TYPE_OBJECT)

static void peer_fail (GtP2pPeer *peer, const char *why);
static void channel_free (Channel *ch);
static void orphan_channels (GtP2pPeer *peer);
static void channel_try_read (Channel *ch);
static void schedule_pump (GtP2pPeer *peer);

/* ------------------------------------------------------------------------------------------ */
/* usrsctp: one process-wide instance without threads; its timers run from a GLib timeout while
 * any association exists. */

static guint sctp_users;
static guint sctp_timer_id;
static gint64 sctp_last_tick;

static int conn_output_cb (void *addr, void *buffer, size_t length, uint8_t tos, uint8_t set_df);

static gboolean
sctp_tick_cb (gpointer user_data)
{
  gint64 now = g_get_monotonic_time ();

  usrsctp_handle_timers ((uint32_t) ((now - sctp_last_tick) / 1000));
  sctp_last_tick = now;
  return G_SOURCE_CONTINUE;
}

static void
sctp_ref (void)
{
  static gsize initialized = 0;

  if (g_once_init_enter (&initialized))
    {
      usrsctp_init_nothreads (0, conn_output_cb, NULL);
      usrsctp_sysctl_set_sctp_ecn_enable (0);
      usrsctp_sysctl_set_sctp_blackhole (2);
      g_once_init_leave (&initialized, 1);
    }
  if (sctp_users++ == 0)
    {
      sctp_last_tick = g_get_monotonic_time ();
      sctp_timer_id = g_timeout_add (10, sctp_tick_cb, NULL);
    }
}

static void
sctp_unref (void)
{
  g_assert (sctp_users > 0);
  if (--sctp_users == 0)
    g_clear_handle_id (&sctp_timer_id, g_source_remove);
}

/* ------------------------------------------------------------------------------------------ */
/* DTLS (GnuTLS): records travel as ICE datagrams */

static int
conn_output_cb (void *addr, void *buffer, size_t length, uint8_t tos, uint8_t set_df)
{
  GtP2pPeer *peer = addr;
  ssize_t n;

  if (peer->session == NULL || peer->state != STATE_SCTP)
    return -1;
  n = gnutls_record_send (peer->session, buffer, length);
  return n < 0 ? -1 : 0;
}

static ssize_t
dtls_push_cb (gnutls_transport_ptr_t ptr, const void *data, size_t len)
{
  GtP2pPeer *peer = ptr;
  gint n;

  if (peer->agent == NULL)
    {
      errno = EPIPE;
      return -1;
    }
  n = nice_agent_send (peer->agent, peer->stream_id, 1, (guint) len, data);
  /* Datagrams: a full socket buffer loses this one, as the network would. */
  return n < 0 ? (ssize_t) len : n;
}

static ssize_t
dtls_pull_cb (gnutls_transport_ptr_t ptr, void *data, size_t len)
{
  GtP2pPeer *peer = ptr;
  g_autoptr (GBytes) dgram = g_queue_pop_head (&peer->incoming);
  gsize n;
  const void *bytes;

  if (dgram == NULL)
    {
      gnutls_transport_set_errno (peer->session, EAGAIN);
      return -1;
    }
  bytes = g_bytes_get_data (dgram, &n);
  n = MIN (n, len);
  memcpy (data, bytes, n);
  return (ssize_t) n;
}

static int
dtls_pull_timeout_cb (gnutls_transport_ptr_t ptr, unsigned int ms)
{
  GtP2pPeer *peer = ptr;

  return g_queue_is_empty (&peer->incoming) ? 0 : 1;
}

static gboolean
make_certificate (GtP2pPeer *peer, GError **error)
{
  gnutls_x509_privkey_t key = NULL;
  gnutls_x509_crt_t crt = NULL;
  guint8 serial[16];
  guint8 der[4096];
  size_t der_len = sizeof der;
  time_t now = time (NULL);
  int rc;

  gnutls_rnd (GNUTLS_RND_NONCE, serial, sizeof serial);
  serial[0] &= 0x7f;
  if ((rc = gnutls_x509_privkey_init (&key)) < 0
      || (rc = gnutls_x509_privkey_generate (key, GNUTLS_PK_ECDSA,
                                             GNUTLS_CURVE_TO_BITS (GNUTLS_ECC_CURVE_SECP256R1), 0))
           < 0
      || (rc = gnutls_x509_crt_init (&crt)) < 0 || (rc = gnutls_x509_crt_set_version (crt, 3)) < 0
      || (rc = gnutls_x509_crt_set_serial (crt, serial, sizeof serial)) < 0
      || (rc = gnutls_x509_crt_set_activation_time (crt, now - 3600)) < 0
      || (rc = gnutls_x509_crt_set_expiration_time (crt, now + 30 * 24 * 3600)) < 0
      || (rc = gnutls_x509_crt_set_dn_by_oid (crt, GNUTLS_OID_X520_COMMON_NAME, 0, "gt", 2)) < 0
      || (rc = gnutls_x509_crt_set_key (crt, key)) < 0
      || (rc = gnutls_x509_crt_sign2 (crt, crt, key, GNUTLS_DIG_SHA256, 0)) < 0
      || (rc = gnutls_x509_crt_export (crt, GNUTLS_X509_FMT_DER, der, &der_len)) < 0
      || (rc = gnutls_certificate_allocate_credentials (&peer->creds)) < 0
      || (rc = gnutls_certificate_set_x509_key (peer->creds, &crt, 1, key)) < 0)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "DTLS certificate: %s",
                   gnutls_strerror (rc));
      if (crt != NULL)
        gnutls_x509_crt_deinit (crt);
      if (key != NULL)
        gnutls_x509_privkey_deinit (key);
      return FALSE;
    }
  gnutls_hash_fast (GNUTLS_DIG_SHA256, der, der_len, peer->local_fingerprint);
  gnutls_x509_crt_deinit (crt);
  gnutls_x509_privkey_deinit (key);
  return TRUE;
}

static gboolean
check_fingerprint (GtP2pPeer *peer)
{
  const gnutls_datum_t *certs;
  unsigned int n = 0;
  guint8 digest[GT_SDP_FINGERPRINT_LEN];

  certs = gnutls_certificate_get_peers (peer->session, &n);
  if (certs == NULL || n == 0)
    return FALSE;
  if (gnutls_hash_fast (GNUTLS_DIG_SHA256, certs[0].data, certs[0].size, digest) < 0)
    return FALSE;
  return memcmp (digest, peer->remote_fingerprint, sizeof digest) == 0;
}

static void sctp_start (GtP2pPeer *peer);
static void dtls_drive (GtP2pPeer *peer);

static gboolean
dtls_timer_cb (gpointer user_data)
{
  GtP2pPeer *peer = user_data;

  peer->dtls_timer_id = 0;
  dtls_drive (peer);
  return G_SOURCE_REMOVE;
}

/* Reads every record GnuTLS can give and feeds it to SCTP. */
static void
dtls_read_records (GtP2pPeer *peer)
{
  guint8 buf[8192];

  while (peer->state == STATE_SCTP)
    {
      ssize_t n = gnutls_record_recv (peer->session, buf, sizeof buf);

      if (n > 0)
        {
          usrsctp_conninput (peer, buf, (size_t) n, 0);
          continue;
        }
      if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
        {
          /* SACKs free send room without a read event: blocked channels retry. */
          schedule_pump (peer);
          return;
        }
      if (n == 0)
        {
          peer_fail (peer, "DTLS closed by the peer");
          return;
        }
      if (!gnutls_error_is_fatal ((int) n))
        continue;
      peer_fail (peer, gnutls_strerror ((int) n));
      return;
    }
}

/* The non-blocking handshake: resumed on every datagram and on GnuTLS's retransmit timer. */
static void
dtls_drive (GtP2pPeer *peer)
{
  int rc;

  if (peer->state == STATE_SCTP)
    {
      dtls_read_records (peer);
      return;
    }
  if (peer->state != STATE_DTLS)
    return;
  rc = gnutls_handshake (peer->session);
  if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED)
    {
      g_clear_handle_id (&peer->dtls_timer_id, g_source_remove);
      peer->dtls_timer_id = g_timeout_add (MAX (gnutls_dtls_get_timeout (peer->session), 1),
                                           dtls_timer_cb, peer);
      return;
    }
  g_clear_handle_id (&peer->dtls_timer_id, g_source_remove);
  if (rc < 0)
    {
      peer_fail (peer, gnutls_strerror (rc));
      return;
    }
  if (!check_fingerprint (peer))
    {
      peer_fail (peer, "the DTLS certificate does not match the fingerprint of the SDP");
      return;
    }
  g_debug ("P2P peer %u: DTLS up", peer->id);
  peer->state = STATE_SCTP;
  sctp_start (peer);
  dtls_read_records (peer);
}

static void
dtls_start (GtP2pPeer *peer)
{
  int rc;

  if (peer->state != STATE_ICE)
    return;
  rc = gnutls_init (&peer->session, (peer->dtls_client ? GNUTLS_CLIENT : GNUTLS_SERVER)
                                      | GNUTLS_DATAGRAM | GNUTLS_NONBLOCK);
  if (rc < 0)
    {
      peer_fail (peer, gnutls_strerror (rc));
      return;
    }
  gnutls_priority_set_direct (peer->session, "NORMAL:-VERS-ALL:+VERS-DTLS1.2", NULL);
  gnutls_credentials_set (peer->session, GNUTLS_CRD_CERTIFICATE, peer->creds);
  if (!peer->dtls_client)
    gnutls_certificate_server_set_request (peer->session, GNUTLS_CERT_REQUIRE);
  gnutls_transport_set_ptr (peer->session, peer);
  gnutls_transport_set_push_function (peer->session, dtls_push_cb);
  gnutls_transport_set_pull_function (peer->session, dtls_pull_cb);
  gnutls_transport_set_pull_timeout_function (peer->session, dtls_pull_timeout_cb);
  gnutls_dtls_set_mtu (peer->session, DTLS_MTU);
  peer->state = STATE_DTLS;
  dtls_drive (peer);
}

/* ------------------------------------------------------------------------------------------ */
/* ICE (libnice) */

static void
recv_cb (NiceAgent *agent, guint stream_id, guint component_id, guint len, gchar *buf,
         gpointer user_data)
{
  GtP2pPeer *peer = user_data;

  if (peer->state < STATE_ICE || peer->state == STATE_CLOSED || len == 0)
    return;
  if (g_queue_get_length (&peer->incoming) >= MAX_QUEUED_DATAGRAMS)
    return;
  g_queue_push_tail (&peer->incoming, g_bytes_new (buf, len));
  /* The DTLS server starts on the client's first flight. */
  if (peer->state == STATE_ICE && !peer->dtls_client)
    dtls_start (peer);
  else
    dtls_drive (peer);
}

static void
new_candidate_cb (NiceAgent *agent, NiceCandidate *cand, gpointer user_data)
{
  GtP2pPeer *peer = user_data;
  g_autofree char *sdp = nice_agent_generate_local_candidate_sdp (agent, cand);
  const char *value;

  if (sdp == NULL || cand->transport != NICE_CANDIDATE_TRANSPORT_UDP)
    return;
  value = g_str_has_prefix (sdp, "a=") ? sdp + 2 : sdp;
  g_ptr_array_insert (peer->local_candidates, (gint) peer->local_candidates->len - 1,
                      g_strdup (value));
  g_signal_emit (peer, signals[SIGNAL_LOCAL_CANDIDATE], 0, value);
}

static void
gathering_done_cb (NiceAgent *agent, guint stream_id, gpointer user_data)
{
  GtP2pPeer *peer = user_data;

  if (peer->gathering_done)
    return;
  peer->gathering_done = TRUE;
  g_signal_emit (peer, signals[SIGNAL_GATHERING_DONE], 0);
}

static void
state_changed_cb (NiceAgent *agent, guint stream_id, guint component_id, guint state,
                  gpointer user_data)
{
  GtP2pPeer *peer = user_data;

  if (state == NICE_COMPONENT_STATE_FAILED)
    {
      peer_fail (peer, "ICE failed");
      return;
    }
  if ((state == NICE_COMPONENT_STATE_READY || state == NICE_COMPONENT_STATE_CONNECTED)
      && peer->state == STATE_ICE)
    {
      NiceCandidate *local = NULL, *remote = NULL;

      if (nice_agent_get_selected_pair (agent, stream_id, component_id, &local, &remote))
        {
          static const char *const types[] = { "host", "srflx", "prflx", "relay" };

          g_free (peer->selected_type);
          peer->selected_type = g_strdup (local->type < G_N_ELEMENTS (types) ? types[local->type]
                                                                              : "host");
          g_free (peer->selected_remote_type);
          peer->selected_remote_type = g_strdup (
            remote->type < G_N_ELEMENTS (types) ? types[remote->type] : "host");
        }
      g_debug ("P2P peer %u: ICE connected (%s)", peer->id, peer->selected_type);
      if (peer->dtls_client)
        dtls_start (peer);
    }
}

/* libnice takes IP addresses: a name is looked up once here (NULL when it cannot be). */
static char *
server_ip (const char *host)
{
  g_autoptr (GInetAddress) ip = g_inet_address_new_from_string (host);
  g_autoptr (GResolver) resolver = NULL;
  GList *addrs;
  char *text = NULL;

  if (ip != NULL)
    return g_strdup (host);
  resolver = g_resolver_get_default ();
  addrs = g_resolver_lookup_by_name (resolver, host, NULL, NULL);
  if (addrs != NULL)
    text = g_inet_address_to_string (addrs->data);
  g_resolver_free_addresses (addrs);
  return text;
}

static gboolean
ice_setup (GtP2pPeer *peer, gboolean controlling, GError **error)
{
  GList *ips;

  peer->agent = nice_agent_new_full (g_main_context_get_thread_default (),
                                     NICE_COMPATIBILITY_RFC5245, NICE_AGENT_OPTION_ICE_TRICKLE);
  g_object_set (peer->agent, "controlling-mode", controlling, "ice-tcp", FALSE, "ice-udp", TRUE,
                "upnp", FALSE, "keepalive-conncheck", peer->options.keepalive_check, NULL);
  if (peer->options.stun_host != NULL)
    {
      g_autofree char *ip = server_ip (peer->options.stun_host);

      if (ip != NULL)
        g_object_set (peer->agent, "stun-server", ip, "stun-server-port",
                      (guint) peer->options.stun_port, NULL);
    }
  /* libnice leaves loopback out of its own enumeration: list the addresses ourselves. */
  ips = nice_interfaces_get_local_ips (peer->options.loopback);
  for (GList *l = ips; l != NULL; l = l->next)
    {
      NiceAddress addr;

      if (nice_address_set_from_string (&addr, l->data))
        nice_agent_add_local_address (peer->agent, &addr);
    }
  g_list_free_full (ips, g_free);
  peer->stream_id = nice_agent_add_stream (peer->agent, 1);
  if (peer->stream_id == 0)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot add an ICE stream");
      return FALSE;
    }
  if (peer->options.min_port != 0)
    nice_agent_set_port_range (peer->agent, peer->stream_id, 1, peer->options.min_port,
                               peer->options.max_port);
  if (peer->options.turn_host != NULL)
    {
      g_autofree char *ip = server_ip (peer->options.turn_host);

      /* A relayed candidate on the TURN server, for NATs ICE cannot cross otherwise. */
      if (ip == NULL
          || !nice_agent_set_relay_info (peer->agent, peer->stream_id, 1, ip,
                                         peer->options.turn_port, peer->options.turn_username,
                                         peer->options.turn_password, NICE_RELAY_TYPE_TURN_UDP))
        g_message ("P2P peer %u: TURN server %s not usable", peer->id, peer->options.turn_host);
    }
  g_signal_connect (peer->agent, "new-candidate-full", G_CALLBACK (new_candidate_cb), peer);
  g_signal_connect (peer->agent, "candidate-gathering-done", G_CALLBACK (gathering_done_cb), peer);
  g_signal_connect (peer->agent, "component-state-changed", G_CALLBACK (state_changed_cb), peer);
  nice_agent_attach_recv (peer->agent, peer->stream_id, 1, g_main_context_get_thread_default (),
                          recv_cb, peer);
  peer->state = STATE_ICE;
  if (!nice_agent_gather_candidates (peer->agent, peer->stream_id))
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot gather ICE candidates");
      return FALSE;
    }
  return TRUE;
}

static gboolean
apply_remote (GtP2pPeer *peer, const GtSdp *sdp, GError **error)
{
  if (peer->remote_set)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                           "the remote description is already set");
      return FALSE;
    }
  peer->remote_set = TRUE;
  memcpy (peer->remote_fingerprint, sdp->fingerprint, GT_SDP_FINGERPRINT_LEN);
  if (!nice_agent_set_remote_credentials (peer->agent, peer->stream_id, sdp->ice_ufrag,
                                          sdp->ice_pwd))
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                           "bad ICE credentials");
      return FALSE;
    }
  for (guint i = 0; i < sdp->candidates->len; i++)
    if (!gt_p2p_peer_add_remote_candidate (peer, sdp->candidates->pdata[i], error))
      return FALSE;
  if (sdp->end_of_candidates)
    nice_agent_peer_candidate_gathering_done (peer->agent, peer->stream_id);
  return TRUE;
}

/* ------------------------------------------------------------------------------------------ */
/* Data channels ⇄ local TCP */

static void
channel_send_reset (Channel *ch)
{
  GtP2pPeer *peer = ch->peer;
  struct sctp_reset_streams *srs;
  gsize len = sizeof *srs + sizeof (uint16_t);

  if (ch->reset_sent || peer->sock == NULL)
    return;
  ch->reset_sent = TRUE;
  srs = g_malloc0 (len);
  srs->srs_flags = SCTP_STREAM_RESET_OUTGOING;
  srs->srs_number_streams = 1;
  srs->srs_stream_list[0] = ch->sid;
  if (usrsctp_setsockopt (peer->sock, IPPROTO_SCTP, SCTP_RESET_STREAMS, srs, (socklen_t) len) < 0)
    g_debug ("P2P peer %u: stream reset of %u: %s", peer->id, ch->sid, g_strerror (errno));
  g_free (srs);
}

static gboolean
idle_timeout_cb (gpointer user_data)
{
  GtP2pPeer *peer = user_data;

  peer->timeout_id = 0;
  g_message ("P2P peer %u: idle", peer->id);
  gt_p2p_peer_close (peer);
  return G_SOURCE_REMOVE;
}

/* The service's end: a stream reset once every byte it sent went out. The peer's end (its stream
 * reset): the TCP side closes once every byte it sent was written, and the channel goes. Returns
 * FALSE when the channel is gone. */
static gboolean
channel_check_done (Channel *ch)
{
  GtP2pPeer *peer = ch->peer;

  if (ch->tcp_eof && ch->unsent_len == 0)
    channel_send_reset (ch);
  if (!ch->remote_closed || ch->to_tcp->len > 0)
    return TRUE;
  channel_send_reset (ch);
  g_hash_table_remove (peer->channels, GUINT_TO_POINTER (ch->sid));
  if (g_hash_table_size (peer->channels) == 0 && peer->state != STATE_CLOSED)
    {
      g_clear_handle_id (&peer->timeout_id, g_source_remove);
      /* As GT: the peer stays for webrtcConnectionIdleTimeout after its last channel. */
      peer->timeout_id = g_timeout_add (MAX (peer->options.idle_timeout_ms, 1), idle_timeout_cb,
                                        peer);
    }
  return FALSE;
}

static gboolean
channel_sctp_send (Channel *ch, const guint8 *data, gsize len, guint32 ppid)
{
  GtP2pPeer *peer = ch->peer;
  struct sctp_sndinfo info = { 0 };
  ssize_t n;

  info.snd_sid = ch->sid;
  info.snd_flags = SCTP_EOR;
  info.snd_ppid = g_htonl (ppid);
  n = usrsctp_sendv (peer->sock, data, len, NULL, 0, &info, sizeof info, SCTP_SENDV_SNDINFO, 0);
  if (n < 0)
    return FALSE;
  peer->bytes_out += len;
  ch->traffic = TRUE;
  return TRUE;
}

static gboolean
channel_readable_cb (GObject *stream, gpointer user_data)
{
  Channel *ch = user_data;

  g_clear_pointer (&ch->read_source, g_source_destroy);
  g_clear_pointer (&ch->read_source, g_source_unref);
  channel_try_read (ch);
  return G_SOURCE_REMOVE;
}

/* TCP → SCTP while SCTP takes the messages. */
static void
channel_try_read (Channel *ch)
{
  GPollableInputStream *in;

  if (ch->conn == NULL || ch->tcp_eof || ch->read_source != NULL || ch->reset_sent)
    return;
  in = G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (G_IO_STREAM (ch->conn)));
  for (;;)
    {
      g_autoptr (GError) error = NULL;
      gssize n;

      if (ch->unsent_len > 0)
        {
          if (!channel_sctp_send (ch, ch->unsent, ch->unsent_len, PPID_BINARY))
            return; /* waits for SCTP room (the pump retries) */
          ch->unsent_len = 0;
        }
      if (ch->unsent == NULL)
        ch->unsent = g_malloc (CHANNEL_READ);
      n = g_pollable_input_stream_read_nonblocking (in, ch->unsent, CHANNEL_READ, NULL, &error);
      if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        {
          ch->read_source = g_pollable_input_stream_create_source (in, NULL);
          g_source_set_callback (ch->read_source, G_SOURCE_FUNC (channel_readable_cb), ch, NULL);
          g_source_attach (ch->read_source, g_main_context_get_thread_default ());
          return;
        }
      if (n <= 0)
        {
          ch->tcp_eof = TRUE;
          channel_check_done (ch);
          return;
        }
      ch->unsent_len = (gsize) n;
    }
}

static gboolean channel_writable_cb (GObject *stream, gpointer user_data);

/* SCTP → TCP. FALSE when the channel is gone. */
static gboolean
channel_flush (Channel *ch)
{
  GPollableOutputStream *out;

  if (ch->conn == NULL || ch->write_source != NULL)
    return TRUE;
  out = G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (G_IO_STREAM (ch->conn)));
  while (ch->to_tcp->len > 0)
    {
      g_autoptr (GError) error = NULL;
      gssize n = g_pollable_output_stream_write_nonblocking (out, ch->to_tcp->data,
                                                             ch->to_tcp->len, NULL, &error);

      if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        {
          ch->write_source = g_pollable_output_stream_create_source (out, NULL);
          g_source_set_callback (ch->write_source, G_SOURCE_FUNC (channel_writable_cb), ch, NULL);
          g_source_attach (ch->write_source, g_main_context_get_thread_default ());
          return TRUE;
        }
      if (n < 0)
        {
          /* The service went away: drop what it will never read. */
          g_byte_array_set_size (ch->to_tcp, 0);
          ch->tcp_eof = TRUE;
          break;
        }
      g_byte_array_remove_range (ch->to_tcp, 0, (guint) n);
    }
  schedule_pump (ch->peer); /* room again: SCTP may be read */
  return channel_check_done (ch);
}

static gboolean
channel_writable_cb (GObject *stream, gpointer user_data)
{
  Channel *ch = user_data;

  g_clear_pointer (&ch->write_source, g_source_destroy);
  g_clear_pointer (&ch->write_source, g_source_unref);
  channel_flush (ch);
  return G_SOURCE_REMOVE;
}

static void
channel_connected_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Channel *ch = user_data;
  g_autoptr (GError) error = NULL;
  GSocketConnection *conn = g_socket_client_connect_finish (G_SOCKET_CLIENT (source), result,
                                                            &error);

  if (conn == NULL)
    {
      if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        return;
      g_message ("P2P peer %u: channel '%s': %s", ch->peer->id, ch->label, error->message);
      ch->tcp_eof = TRUE;
      g_byte_array_set_size (ch->to_tcp, 0);
      channel_check_done (ch);
      return;
    }
  ch->conn = conn;
  g_socket_set_option (g_socket_connection_get_socket (conn), IPPROTO_TCP, 1 /* TCP_NODELAY */,
                       1, NULL);
  if (channel_flush (ch))
    channel_try_read (ch);
}

static void
channel_open (GtP2pPeer *peer, guint16 sid, const guint8 *msg, gsize len)
{
  g_autoptr (GSocketClient) client = NULL;
  g_autoptr (GSocketConnectable) target = NULL;
  guint16 label_len, proto_len;
  Channel *ch;
  guint8 ack = DCEP_ACK;
  struct sctp_sndinfo info = { 0 };

  /* OPEN: type, channel type, priority:u16, reliability:u32, label len:u16, protocol len:u16. */
  if (len < 12)
    {
      g_message ("P2P peer %u: short DCEP OPEN", peer->id);
      return;
    }
  label_len = (guint16) (msg[8] << 8 | msg[9]);
  proto_len = (guint16) (msg[10] << 8 | msg[11]);
  if ((gsize) 12 + label_len + proto_len > len
      || !g_utf8_validate ((const char *) msg + 12, label_len, NULL)
      || memchr (msg + 12, '\0', label_len) != NULL)
    {
      g_message ("P2P peer %u: malformed DCEP OPEN", peer->id);
      return;
    }
  if (g_hash_table_contains (peer->channels, GUINT_TO_POINTER (sid))
      || g_hash_table_size (peer->channels) >= MAX_CHANNELS)
    {
      g_message ("P2P peer %u: DCEP OPEN for stream %u refused", peer->id, sid);
      return;
    }
  ch = g_new0 (Channel, 1);
  ch->peer = peer;
  ch->sid = sid;
  ch->label = g_strndup ((const char *) msg + 12, label_len);
  ch->to_tcp = g_byte_array_new ();
  ch->cancellable = g_cancellable_new ();
  g_hash_table_insert (peer->channels, GUINT_TO_POINTER (sid), ch);
  peer->n_channels_opened++;
  g_clear_handle_id (&peer->timeout_id, g_source_remove);

  info.snd_sid = sid;
  info.snd_flags = SCTP_EOR;
  info.snd_ppid = g_htonl (DCEP_PPID);
  if (usrsctp_sendv (peer->sock, &ack, 1, NULL, 0, &info, sizeof info, SCTP_SENDV_SNDINFO, 0) < 0)
    g_debug ("P2P peer %u: DCEP ACK: %s", peer->id, g_strerror (errno));

  target = peer->options.route (ch->label, peer->options.route_data);
  if (target == NULL)
    {
      g_message ("P2P peer %u: no service for channel label '%s'", peer->id, ch->label);
      ch->tcp_eof = TRUE;
      channel_check_done (ch);
      return;
    }
  g_debug ("P2P peer %u: channel %u '%s' opened", peer->id, sid, ch->label);
  client = g_socket_client_new ();
  g_socket_client_connect_async (client, target, ch->cancellable, channel_connected_cb, ch);
}

static void
channel_free (Channel *ch)
{
  g_cancellable_cancel (ch->cancellable);
  g_clear_object (&ch->cancellable);
  if (ch->read_source != NULL)
    g_source_destroy (ch->read_source);
  g_clear_pointer (&ch->read_source, g_source_unref);
  if (ch->write_source != NULL)
    g_source_destroy (ch->write_source);
  g_clear_pointer (&ch->write_source, g_source_unref);
  if (ch->conn != NULL)
    g_io_stream_close (G_IO_STREAM (ch->conn), NULL, NULL);
  g_clear_object (&ch->conn);
  g_byte_array_unref (ch->to_tcp);
  g_free (ch->unsent);
  g_free (ch->label);
  g_free (ch);
}

/* ------------------------------------------------------------------------------------------ */
/* SCTP association */

static void
handle_message (GtP2pPeer *peer, guint16 sid, guint32 ppid, const guint8 *data, gsize len)
{
  Channel *ch = g_hash_table_lookup (peer->channels, GUINT_TO_POINTER (sid));

  if (ppid == DCEP_PPID)
    {
      if (len >= 1 && data[0] == DCEP_OPEN)
        channel_open (peer, sid, data, len);
      return;
    }
  if (ch == NULL || ch->remote_closed)
    return;
  if (ppid == PPID_STRING_EMPTY || ppid == PPID_BINARY_EMPTY)
    return;
  if (ppid != PPID_STRING && ppid != PPID_BINARY)
    return;
  if (ch->tcp_eof && ch->conn == NULL)
    return; /* the service could not be reached */
  peer->bytes_in += len;
  ch->traffic = TRUE;
  g_byte_array_append (ch->to_tcp, data, (guint) len);
  channel_flush (ch);
}

static void
handle_notification (GtP2pPeer *peer, const union sctp_notification *n, gsize len)
{
  if (len < sizeof n->sn_header)
    return;
  switch (n->sn_header.sn_type)
    {
    case SCTP_ASSOC_CHANGE:
      if (len < sizeof n->sn_assoc_change)
        return;
      if (n->sn_assoc_change.sac_state == SCTP_COMM_UP)
        {
          g_debug ("P2P peer %u: SCTP up", peer->id);
          peer->sctp_connected = TRUE;
          g_signal_emit (peer, signals[SIGNAL_CONNECTED], 0);
        }
      else if (n->sn_assoc_change.sac_state == SCTP_COMM_LOST
               || n->sn_assoc_change.sac_state == SCTP_SHUTDOWN_COMP
               || n->sn_assoc_change.sac_state == SCTP_CANT_STR_ASSOC)
        peer_fail (peer, "SCTP association ended");
      break;
    case SCTP_STREAM_RESET_EVENT:
      {
        const struct sctp_stream_reset_event *e = &n->sn_strreset_event;
        guint count;

        if (len < sizeof *e || !(e->strreset_flags & SCTP_STREAM_RESET_INCOMING_SSN))
          return;
        count = (guint) ((e->strreset_length - sizeof *e) / sizeof (uint16_t));
        count = MIN (count, (guint) ((len - sizeof *e) / sizeof (uint16_t)));
        for (guint i = 0; i < count; i++)
          {
            Channel *ch = g_hash_table_lookup (peer->channels,
                                               GUINT_TO_POINTER (e->strreset_stream_list[i]));

            if (ch != NULL && !ch->remote_closed)
              {
                ch->remote_closed = TRUE;
                channel_check_done (ch);
              }
          }
        break;
      }
    case SCTP_SHUTDOWN_EVENT:
      peer_fail (peer, "SCTP shut down by the peer");
      break;
    default:
      break;
    }
}

static gboolean
channels_backed_up (GtP2pPeer *peer)
{
  GHashTableIter iter;
  gpointer value;

  g_hash_table_iter_init (&iter, peer->channels);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    if (((Channel *) value)->to_tcp->len > CHANNEL_MAX_PENDING)
      return TRUE;
  return FALSE;
}

/* Reads SCTP messages (unless a channel's TCP side is backed up) and retries blocked sends. */
static gboolean
pump_cb (gpointer user_data)
{
  GtP2pPeer *peer = user_data;
  GHashTableIter iter;
  gpointer value;

  peer->pump_id = 0;
  g_object_ref (peer);
  while (peer->sock != NULL && !channels_backed_up (peer))
    {
      guint8 buf[65536];
      struct sctp_rcvinfo info = { 0 };
      socklen_t info_len = sizeof info;
      unsigned int info_type = 0;
      int flags = 0;
      ssize_t n = usrsctp_recvv (peer->sock, buf, sizeof buf, NULL, NULL, &info, &info_len,
                                 &info_type, &flags);

      if (n <= 0)
        break;
      if (peer->msg->len + (gsize) n > 4 * 1024 * 1024)
        {
          peer_fail (peer, "SCTP message over 4 MiB");
          break;
        }
      g_byte_array_append (peer->msg, buf, (guint) n);
      if (!(flags & MSG_EOR))
        continue;
      if (flags & MSG_NOTIFICATION)
        handle_notification (peer, (const union sctp_notification *) peer->msg->data,
                             peer->msg->len);
      else if (info_type == SCTP_RECVV_RCVINFO)
        handle_message (peer, info.rcv_sid, g_ntohl (info.rcv_ppid), peer->msg->data,
                        peer->msg->len);
      g_byte_array_set_size (peer->msg, 0);
    }
  if (peer->sock != NULL)
    {
      g_autoptr (GArray) blocked = g_array_new (FALSE, FALSE, sizeof (guint));

      /* Retrying may end channels: collect first. */
      g_hash_table_iter_init (&iter, peer->channels);
      while (g_hash_table_iter_next (&iter, NULL, &value))
        if (((Channel *) value)->unsent_len > 0)
          g_array_append_val (blocked, ((Channel *) value)->sid);
      for (guint i = 0; i < blocked->len; i++)
        {
          Channel *ch = g_hash_table_lookup (peer->channels,
                                             GUINT_TO_POINTER (g_array_index (blocked, guint, i)));

          if (ch != NULL)
            channel_try_read (ch);
        }
    }
  g_object_unref (peer);
  return G_SOURCE_REMOVE;
}

static void
schedule_pump (GtP2pPeer *peer)
{
  if (peer->pump_id == 0 && peer->sock != NULL)
    peer->pump_id = g_idle_add (pump_cb, peer);
}

/* usrsctp calls this inline from whatever drove it; the work is done from the main loop. */
static void
upcall_cb (struct socket *sock, void *arg, int flags)
{
  schedule_pump (arg);
}

static void
sctp_start (GtP2pPeer *peer)
{
  struct sockaddr_conn sconn = { 0 };
  struct sctp_initmsg init = { 0 };
  struct sctp_assoc_value av = { 0 };
  struct sctp_paddrparams pp = { 0 };
  static const uint16_t events[] = { SCTP_ASSOC_CHANGE, SCTP_STREAM_RESET_EVENT,
                                     SCTP_REMOTE_ERROR, SCTP_SHUTDOWN_EVENT };
  struct linger lg = { 1, 0 };
  int one = 1;

  sctp_ref ();
  usrsctp_register_address (peer);
  peer->sock = usrsctp_socket (AF_CONN, SOCK_STREAM, IPPROTO_SCTP, NULL, NULL, 0, NULL);
  if (peer->sock == NULL)
    {
      peer_fail (peer, "cannot create the SCTP socket");
      return;
    }
  usrsctp_set_non_blocking (peer->sock, 1);
  usrsctp_set_upcall (peer->sock, upcall_cb, peer);
  usrsctp_setsockopt (peer->sock, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  usrsctp_setsockopt (peer->sock, IPPROTO_SCTP, SCTP_RECVRCVINFO, &one, sizeof one);
  usrsctp_setsockopt (peer->sock, IPPROTO_SCTP, SCTP_NODELAY, &one, sizeof one);
  av.assoc_id = SCTP_ALL_ASSOC;
  av.assoc_value = SCTP_ENABLE_RESET_STREAM_REQ;
  usrsctp_setsockopt (peer->sock, IPPROTO_SCTP, SCTP_ENABLE_STREAM_RESET, &av, sizeof av);
  init.sinit_num_ostreams = 1024;
  init.sinit_max_instreams = 1024;
  usrsctp_setsockopt (peer->sock, IPPROTO_SCTP, SCTP_INITMSG, &init, sizeof init);
  for (guint i = 0; i < G_N_ELEMENTS (events); i++)
    {
      struct sctp_event ev = { 0 };

      ev.se_assoc_id = SCTP_ALL_ASSOC;
      ev.se_type = events[i];
      ev.se_on = 1;
      usrsctp_setsockopt (peer->sock, IPPROTO_SCTP, SCTP_EVENT, &ev, sizeof ev);
    }
  sconn.sconn_family = AF_CONN;
  sconn.sconn_port = g_htons (SCTP_PORT);
  sconn.sconn_addr = peer;
  if (usrsctp_bind (peer->sock, (struct sockaddr *) &sconn, sizeof sconn) < 0)
    {
      peer_fail (peer, "cannot bind the SCTP socket");
      return;
    }
  if (usrsctp_connect (peer->sock, (struct sockaddr *) &sconn, sizeof sconn) < 0
      && errno != EINPROGRESS)
    {
      peer_fail (peer, "cannot start the SCTP association");
      return;
    }
  memcpy (&pp.spp_address, &sconn, sizeof sconn);
  pp.spp_flags = SPP_PMTUD_DISABLE;
  pp.spp_pathmtu = SCTP_MTU;
  usrsctp_setsockopt (peer->sock, IPPROTO_SCTP, SCTP_PEER_ADDR_PARAMS, &pp, sizeof pp);
}

/* ------------------------------------------------------------------------------------------ */
/* Channels this side opens (gt connect) */

gboolean
gt_p2p_peer_open_channel (GtP2pPeer *peer, const char *label, GSocketConnection *conn,
                          GBytes *pending, GError **error)
{
  struct sctp_sndinfo info = { 0 };
  gsize label_len = strlen (label);
  g_autofree guint8 *open = NULL;
  guint16 sid;
  Channel *ch;

  g_return_val_if_fail (GT_IS_P2P_PEER (peer), FALSE);
  g_return_val_if_fail (G_IS_SOCKET_CONNECTION (conn), FALSE);

  if (!gt_p2p_peer_is_connected (peer))
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_NOT_CONNECTED,
                           "the P2P peer is not connected");
      return FALSE;
    }
  if (label_len > G_MAXUINT16 || g_hash_table_size (peer->channels) >= MAX_CHANNELS / 2)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_TOO_MANY_OPEN_FILES,
                           "no data channel can be opened");
      return FALSE;
    }
  /* RFC 8832: the DTLS client takes even stream ids, the server odd ones. */
  for (sid = peer->next_sid;; sid = (guint16) ((sid + 2) % MAX_CHANNELS))
    if (!g_hash_table_contains (peer->channels, GUINT_TO_POINTER (sid)))
      break;
  peer->next_sid = (guint16) ((sid + 2) % MAX_CHANNELS);

  /* OPEN: type, reliable ordered, priority 256, reliability 0, label, empty protocol. */
  open = g_malloc0 (12 + label_len);
  open[0] = DCEP_OPEN;
  open[2] = 1;
  open[8] = (guint8) (label_len >> 8);
  open[9] = (guint8) label_len;
  memcpy (open + 12, label, label_len);
  info.snd_sid = sid;
  info.snd_flags = SCTP_EOR;
  info.snd_ppid = g_htonl (DCEP_PPID);
  if (usrsctp_sendv (peer->sock, open, 12 + label_len, NULL, 0, &info, sizeof info,
                     SCTP_SENDV_SNDINFO, 0)
      < 0)
    {
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errno), "DCEP OPEN: %s",
                   g_strerror (errno));
      return FALSE;
    }
  ch = g_new0 (Channel, 1);
  ch->peer = peer;
  ch->sid = sid;
  ch->local = TRUE;
  ch->label = g_strdup (label);
  ch->to_tcp = g_byte_array_new ();
  ch->cancellable = g_cancellable_new ();
  ch->conn = g_object_ref (conn);
  ch->unsent = g_malloc (CHANNEL_READ);
  if (pending != NULL)
    {
      ch->unsent_len = MIN (g_bytes_get_size (pending), CHANNEL_READ);
      memcpy (ch->unsent, g_bytes_get_data (pending, NULL), ch->unsent_len);
    }
  g_hash_table_insert (peer->channels, GUINT_TO_POINTER (sid), ch);
  peer->n_channels_opened++;
  g_clear_handle_id (&peer->timeout_id, g_source_remove);
  g_socket_set_option (g_socket_connection_get_socket (conn), IPPROTO_TCP, 1 /* TCP_NODELAY */,
                       1, NULL);
  g_debug ("P2P peer %u: channel %u '%s' opened by us", peer->id, sid, label);
  channel_try_read (ch);
  return TRUE;
}

gboolean
gt_p2p_peer_is_connected (GtP2pPeer *peer)
{
  return peer->state == STATE_SCTP && peer->sctp_connected && peer->sock != NULL;
}

/* Closing: channels we opened that carried nothing go back to their owner with their bytes. */
static void
orphan_channels (GtP2pPeer *peer)
{
  g_autoptr (GPtrArray) orphans = g_ptr_array_new ();
  GHashTableIter iter;
  gpointer value;

  g_hash_table_iter_init (&iter, peer->channels);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      Channel *ch = value;

      if (ch->local && !ch->traffic && ch->conn != NULL && !ch->tcp_eof)
        g_ptr_array_add (orphans, ch);
    }
  for (guint i = 0; i < orphans->len; i++)
    {
      Channel *ch = orphans->pdata[i];
      g_autoptr (GSocketConnection) conn = g_steal_pointer (&ch->conn);
      g_autoptr (GBytes) pending = g_bytes_new (ch->unsent, ch->unsent_len);

      if (ch->read_source != NULL)
        g_source_destroy (ch->read_source);
      g_clear_pointer (&ch->read_source, g_source_unref);
      if (ch->write_source != NULL)
        g_source_destroy (ch->write_source);
      g_clear_pointer (&ch->write_source, g_source_unref);
      g_signal_emit (peer, signals[SIGNAL_CHANNEL_ORPHANED], 0, conn, pending);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Lifecycle */

static void
peer_fail (GtP2pPeer *peer, const char *why)
{
  if (peer->state == STATE_CLOSED)
    return;
  g_message ("P2P peer %u: %s", peer->id, why);
  gt_p2p_peer_close (peer);
}

void
gt_p2p_peer_close (GtP2pPeer *peer)
{
  g_return_if_fail (GT_IS_P2P_PEER (peer));

  if (peer->state == STATE_CLOSED)
    return;
  g_object_ref (peer);
  peer->state = STATE_CLOSED;
  g_clear_handle_id (&peer->timeout_id, g_source_remove);
  g_clear_handle_id (&peer->dtls_timer_id, g_source_remove);
  g_clear_handle_id (&peer->pump_id, g_source_remove);
  orphan_channels (peer);
  g_hash_table_remove_all (peer->channels);
  if (peer->sock != NULL)
    {
      usrsctp_set_upcall (peer->sock, NULL, NULL);
      usrsctp_close (peer->sock);
      peer->sock = NULL;
      usrsctp_deregister_address (peer);
      sctp_unref ();
    }
  if (peer->session != NULL)
    {
      gnutls_bye (peer->session, GNUTLS_SHUT_WR);
      gnutls_deinit (peer->session);
      peer->session = NULL;
    }
  g_queue_clear_full (&peer->incoming, (GDestroyNotify) g_bytes_unref);
  if (peer->agent != NULL)
    {
      g_signal_handlers_disconnect_by_data (peer->agent, peer);
      nice_agent_attach_recv (peer->agent, peer->stream_id, 1,
                              g_main_context_get_thread_default (), NULL, NULL);
      nice_agent_remove_stream (peer->agent, peer->stream_id);
      nice_agent_close_async (peer->agent, NULL, NULL);
      g_clear_object (&peer->agent);
    }
  g_signal_emit (peer, signals[SIGNAL_CLOSED], 0);
  g_object_unref (peer);
}

static gboolean
setup_timeout_cb (gpointer user_data)
{
  GtP2pPeer *peer = user_data;

  peer->timeout_id = 0;
  peer_fail (peer, "no data channel opened in time");
  return G_SOURCE_REMOVE;
}

GtP2pPeer *
gt_p2p_peer_new (const GtP2pPeerOptions *options, guint id)
{
  GtP2pPeer *peer;

  g_return_val_if_fail (options != NULL && options->route != NULL, NULL);

  peer = g_object_new (GT_TYPE_P2P_PEER, NULL);
  peer->id = id;
  peer->options = *options;
  peer->options.stun_host = g_strdup (options->stun_host);
  peer->options.turn_host = g_strdup (options->turn_host);
  peer->options.turn_username = g_strdup (options->turn_username);
  peer->options.turn_password = g_strdup (options->turn_password);
  peer->timeout_id = g_timeout_add (MAX (options->setup_timeout_ms, 1), setup_timeout_cb, peer);
  return peer;
}

guint
gt_p2p_peer_get_id (GtP2pPeer *peer)
{
  return peer->id;
}

gboolean
gt_p2p_peer_set_remote_offer (GtP2pPeer *peer, const GtSdp *offer, GError **error)
{
  g_return_val_if_fail (GT_IS_P2P_PEER (peer), FALSE);
  g_return_val_if_fail (peer->state == STATE_NEW, FALSE);

  /* Answerer: ICE controlled; DTLS client unless the offer insists on being it. */
  peer->dtls_client = offer->setup != GT_SDP_SETUP_ACTIVE;
  peer->next_sid = peer->dtls_client ? 0 : 1;
  peer->mid = g_strdup (offer->mid);
  if (!make_certificate (peer, error) || !ice_setup (peer, FALSE, error))
    return FALSE;
  return apply_remote (peer, offer, error);
}

gboolean
gt_p2p_peer_create_offer (GtP2pPeer *peer, GError **error)
{
  g_return_val_if_fail (GT_IS_P2P_PEER (peer), FALSE);
  g_return_val_if_fail (peer->state == STATE_NEW, FALSE);

  peer->offerer = TRUE;
  peer->mid = g_strdup ("0");
  return make_certificate (peer, error) && ice_setup (peer, TRUE, error);
}

gboolean
gt_p2p_peer_set_remote_answer (GtP2pPeer *peer, const GtSdp *answer, GError **error)
{
  g_return_val_if_fail (GT_IS_P2P_PEER (peer), FALSE);

  if (!peer->offerer || peer->state != STATE_ICE)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                           "this peer did not make an offer");
      return FALSE;
    }
  if (answer->setup == GT_SDP_SETUP_ACTPASS)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                           "an answer must say setup:active or setup:passive");
      return FALSE;
    }
  peer->dtls_client = answer->setup == GT_SDP_SETUP_PASSIVE;
  peer->next_sid = peer->dtls_client ? 0 : 1;
  return apply_remote (peer, answer, error);
}

char *
gt_p2p_peer_get_local_sdp (GtP2pPeer *peer)
{
  g_autofree char *ufrag = NULL;
  g_autofree char *pwd = NULL;
  GtSdpSetup setup;

  g_return_val_if_fail (GT_IS_P2P_PEER (peer), NULL);
  g_return_val_if_fail (peer->agent != NULL, NULL);

  nice_agent_get_local_credentials (peer->agent, peer->stream_id, &ufrag, &pwd);
  if (peer->offerer)
    setup = GT_SDP_SETUP_ACTPASS;
  else
    setup = peer->dtls_client ? GT_SDP_SETUP_ACTIVE : GT_SDP_SETUP_PASSIVE;
  return gt_sdp_build (peer->mid, ufrag, pwd, peer->local_fingerprint, setup, NULL, FALSE);
}

gboolean
gt_p2p_peer_add_remote_candidate (GtP2pPeer *peer, const char *candidate, GError **error)
{
  g_autofree char *line = NULL;
  NiceCandidate *cand;
  GSList list = { 0 };

  g_return_val_if_fail (GT_IS_P2P_PEER (peer), FALSE);

  if (peer->agent == NULL)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                           "a candidate before the session description");
      return FALSE;
    }
  if (*candidate == '\0')
    {
      nice_agent_peer_candidate_gathering_done (peer->agent, peer->stream_id);
      return TRUE;
    }
  /* TCP and other candidates this agent does not use are skipped, as in an SDP. */
  if (!gt_sdp_candidate_is_udp (candidate))
    return TRUE;
  line = g_strconcat ("a=", candidate, NULL);
  cand = nice_agent_parse_remote_candidate_sdp (peer->agent, peer->stream_id, line);
  if (cand == NULL)
    return TRUE; /* e.g. an mDNS .local name libnice cannot use */
  list.data = cand;
  nice_agent_set_remote_candidates (peer->agent, peer->stream_id, 1, &list);
  nice_candidate_free (cand);
  return TRUE;
}

const char *const *
gt_p2p_peer_get_local_candidates (GtP2pPeer *peer)
{
  return (const char *const *) peer->local_candidates->pdata;
}

gboolean
gt_p2p_peer_is_gathering_done (GtP2pPeer *peer)
{
  return peer->gathering_done;
}

gboolean
gt_p2p_peer_is_closed (GtP2pPeer *peer)
{
  return peer->state == STATE_CLOSED;
}

guint
gt_p2p_peer_get_n_channels (GtP2pPeer *peer)
{
  return g_hash_table_size (peer->channels);
}

guint
gt_p2p_peer_get_n_channels_opened (GtP2pPeer *peer)
{
  return peer->n_channels_opened;
}

const char *
gt_p2p_peer_get_path (GtP2pPeer *peer)
{
  return peer->selected_type != NULL ? peer->selected_type : "none";
}

const char *
gt_p2p_peer_get_remote_path (GtP2pPeer *peer)
{
  return peer->selected_remote_type != NULL ? peer->selected_remote_type : "none";
}

guint64
gt_p2p_peer_get_bytes_in (GtP2pPeer *peer)
{
  return peer->bytes_in;
}

guint64
gt_p2p_peer_get_bytes_out (GtP2pPeer *peer)
{
  return peer->bytes_out;
}

static void
gt_p2p_peer_dispose (GObject *object)
{
  GtP2pPeer *peer = GT_P2P_PEER (object);

  if (peer->state != STATE_CLOSED)
    {
      /* No "closed" handlers run from dispose. */
      g_signal_handlers_destroy (peer);
      gt_p2p_peer_close (peer);
    }
  G_OBJECT_CLASS (gt_p2p_peer_parent_class)->dispose (object);
}

static void
gt_p2p_peer_finalize (GObject *object)
{
  GtP2pPeer *peer = GT_P2P_PEER (object);

  g_hash_table_unref (peer->channels);
  g_ptr_array_unref (peer->local_candidates);
  g_byte_array_unref (peer->msg);
  if (peer->creds != NULL)
    gnutls_certificate_free_credentials (peer->creds);
  g_free (peer->options.stun_host);
  g_free (peer->options.turn_host);
  g_free (peer->options.turn_username);
  g_free (peer->options.turn_password);
  g_free (peer->mid);
  g_free (peer->selected_type);
  g_free (peer->selected_remote_type);
  G_OBJECT_CLASS (gt_p2p_peer_parent_class)->finalize (object);
}

static void
gt_p2p_peer_class_init (GtP2pPeerClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->dispose = gt_p2p_peer_dispose;
  object_class->finalize = gt_p2p_peer_finalize;
  signals[SIGNAL_LOCAL_CANDIDATE]
    = g_signal_new ("local-candidate", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL,
                    NULL, NULL, G_TYPE_NONE, 1, G_TYPE_STRING);
  signals[SIGNAL_GATHERING_DONE] = g_signal_new ("gathering-done", G_TYPE_FROM_CLASS (klass),
                                                 G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                                 G_TYPE_NONE, 0);
  signals[SIGNAL_CONNECTED] = g_signal_new ("connected", G_TYPE_FROM_CLASS (klass),
                                            G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL, G_TYPE_NONE,
                                            0);
  signals[SIGNAL_CHANNEL_ORPHANED]
    = g_signal_new ("channel-orphaned", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL,
                    NULL, NULL, G_TYPE_NONE, 2, G_TYPE_SOCKET_CONNECTION, G_TYPE_BYTES);
  signals[SIGNAL_CLOSED] = g_signal_new ("closed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                                         0, NULL, NULL, NULL, G_TYPE_NONE, 0);
}

static void
gt_p2p_peer_init (GtP2pPeer *peer)
{
  peer->local_candidates = g_ptr_array_new_with_free_func (g_free);
  g_ptr_array_add (peer->local_candidates, NULL);
  peer->channels = g_hash_table_new_full (NULL, NULL, NULL, (GDestroyNotify) channel_free);
  peer->msg = g_byte_array_new ();
  g_queue_init (&peer->incoming);
}
