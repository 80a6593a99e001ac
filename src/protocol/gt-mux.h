/* gt-mux.h: one tunnel connection carrying many flow-controlled streams, each bound to a socket. */
#pragma once

#include <gio/gio.h>
#include "gt-frame.h"
#include "gt-http.h"
#include "gt-relay-endpoint.h" /* gt_socket_reply_and_close for the mux's users */
#include "gt-token-bucket.h"

G_BEGIN_DECLS

/* Initial per-stream window, each direction (see docs/protocol.md). */
#define GT_INITIAL_WINDOW (256 * 1024)
/* Largest DATA payload this implementation sends. */
#define GT_MUX_MAX_DATA (64 * 1024)
/* A tunnel whose queued output reaches this stops reading its input until the output drains
 * below 1 MiB (docs/protocol.md §6.7). */
#define GT_MUX_OUT_PAUSE_INPUT (4 * 1024 * 1024)

typedef struct _GtMuxStream GtMuxStream;

/* Speed limit shared by the tunnels of one client: allocate with g_rc_box_new0 and set both
 * buckets (gt_token_bucket_init). to_socket limits tunnel → socket bytes, from_socket the
 * other direction. */
typedef struct
{
  GtTokenBucket to_socket;
  GtTokenBucket from_socket;
} GtMuxRate;

typedef void (*GtMuxStreamFunc) (GtMuxStream *stream, gpointer user_data);

#define GT_TYPE_MUX (gt_mux_get_type ())
G_DECLARE_FINAL_TYPE (GtMux, gt_mux, GT, MUX, GObject)

/* io: the tunnel connection after the handshake (pollable streams). preread: bytes already read
 * from io after the handshake frame (fed to the frame parser first). */
GtMux *gt_mux_new (GIOStream *io, gboolean is_server, const guint8 *preread, gsize preread_len);
void gt_mux_start (GtMux *mux);
/* Close the tunnel if nothing arrives for idle_ms; send a PING every ping_ms (0 = never). */
void gt_mux_set_keepalive (GtMux *mux, guint64 idle_ms, guint64 ping_ms);
/* Send a PING now; unless some bytes arrive within timeout_ms, close the tunnel (a half-open
 * connection). Does nothing while a probe is pending. */
void gt_mux_probe (GtMux *mux, guint64 timeout_ms);
/* A probe is pending: nothing has arrived since its PING. */
gboolean gt_mux_is_probing (GtMux *mux);
/* Send an ERROR frame (if code != NONE) and close. Emits "closed". */
void gt_mux_close (GtMux *mux, GtErrorCode code, const char *message);
/* Tell the peer to go elsewhere: no new streams; existing ones continue. A server answers a
 * client's GOAWAY with its own (no OPEN follows it); a client keeps serving the OPENs that were
 * on their way, and closes the tunnel once the answer came and its streams are done. */
void gt_mux_goaway (GtMux *mux, GtErrorCode code, const char *message);
gboolean gt_mux_is_closed (GtMux *mux);
/* Either side sent GOAWAY: no new streams on this tunnel. */
gboolean gt_mux_is_going_away (GtMux *mux);
/* The peer sent GOAWAY. */
gboolean gt_mux_peer_is_going_away (GtMux *mux);
guint gt_mux_get_n_streams (GtMux *mux);
guint64 gt_mux_get_bytes_in (GtMux *mux);
guint64 gt_mux_get_bytes_out (GtMux *mux);
/* Bytes queued for the tunnel and not yet written. */
gsize gt_mux_get_queued_out (GtMux *mux);
/* Whether the input is not being read because the output is backed up. */
gboolean gt_mux_is_input_paused (GtMux *mux);
/* Queue a complete encoded frame (used for WELCOME). */
void gt_mux_send_raw (GtMux *mux, const guint8 *data, gsize len);
const char *gt_mux_get_peer (GtMux *mux);
/* Takes a reference on rate (an rc box), NULL = unlimited. */
void gt_mux_set_rate (GtMux *mux, GtMuxRate *rate);
void gt_mux_foreach_stream (GtMux *mux, GtMuxStreamFunc func, gpointer user_data);
typedef gboolean (*GtMuxServiceFilter) (guint service_index, gpointer user_data);
void gt_mux_reset_idle_streams (GtMux *mux, gint64 idle_us, GtMuxServiceFilter filter,
                                gpointer user_data);
void gt_mux_set_peer (GtMux *mux, const char *peer);

/* Server: open a stream to the client's service, relaying the socket fd (ownership taken).
 * data: bytes already read from fd (sent in OPEN). connect_fail_response: bytes written to fd when
 * the client reports that its local service refused before any data came back (e.g. a 502). */
GtMuxStream *gt_mux_open_stream (GtMux *mux, guint16 service_index, int fd, const guint8 *data,
                                 gsize len, GBytes *connect_fail_response, guint64 idle_timeout_ms);

/* Same for a user connection that is a pollable GIOStream (e.g. after TLS termination). */
GtMuxStream *gt_mux_open_stream_io (GtMux *mux, guint16 service_index, GIOStream *io,
                                    const guint8 *data, gsize len, GBytes *connect_fail_response,
                                    guint64 idle_timeout_ms);

/* Either fd (>= 0) or io; addr (may be NULL) is sent to the client with OPEN. */
GtMuxStream *gt_mux_open_stream_full (GtMux *mux, guint16 service_index, int fd, GIOStream *io,
                                      const guint8 *data, gsize len, const GtOpenAddr *addr,
                                      GBytes *connect_fail_response, guint64 idle_timeout_ms);

/* Client-opened streams (docs/protocol.md §6.11), once both sides agreed on GT_CAP_FORWARD (set
 * after the handshake; until then FORWARD frames are protocol errors). */
void gt_mux_set_forward (GtMux *mux, gboolean forward);
/* Datagrams (docs/protocol.md §6.12), once both sides agreed on GT_CAP_DATAGRAM (set after the
 * handshake; until then DATAGRAM frames are protocol errors). */
void gt_mux_set_datagrams (GtMux *mux, gboolean datagrams);
gboolean gt_mux_get_datagrams (GtMux *mux);
/* Called with each datagram that arrives (data is valid during the call). It may send
 * datagrams, and must not close the tunnel. */
typedef void (*GtMuxDatagramFunc) (GtMux *mux, guint32 flow_id, guint16 service_index,
                                   const guint8 *data, gsize len, gpointer user_data);
void gt_mux_set_datagram_func (GtMux *mux, GtMuxDatagramFunc func, gpointer user_data);
/* Sends one datagram of a flow (len ≤ GT_DATAGRAM_MAX_DATA): as a datagram of the transport
 * when it has them and the datagram fits (quic://), else as a DATAGRAM frame. FALSE when it was
 * dropped, as UDP drops: the tunnel is closed or its output is backed up. */
gboolean gt_mux_send_datagram (GtMux *mux, guint32 flow_id, guint16 service_index,
                               const guint8 *data, gsize len);
/* Datagrams sent as transport datagrams / as DATAGRAM frames, and dropped, since the start. */
void gt_mux_get_datagram_counts (GtMux *mux, guint64 *native, guint64 *framed, guint64 *dropped);

/* Whether each stream of this tunnel is a transport stream of its own (quic://). */
gboolean gt_mux_has_native_streams (GtMux *mux);
gboolean gt_mux_get_forward (GtMux *mux);
/* The service index of a FORWARD stream (it has none). */
#define GT_MUX_FORWARD_SERVICE G_MAXUINT16
/* Client: open a stream to the service of the client holding host prefix, relaying fd (owned) or
 * io (a reference is taken). The mux emits "forward-accepted" (GtMuxStream *) when the server
 * routed it; a refusal ends the stream with the server's RESET (gt_mux_stream_get_peer_reset
 * in "stream-closed"). NULL with an error when the tunnel cannot open one (fd is then not
 * taken). */
GtMuxStream *gt_mux_open_forward (GtMux *mux, const char *prefix, int fd, GIOStream *io,
                                  guint64 idle_timeout_ms, GError **error);
/* Server: "forward-opened" (GtMuxStream *stream, const char *prefix) is emitted for each FORWARD;
 * the handler attaches a socket and calls this (sends the ACK), or resets the stream with
 * GT_RESET_CODE_NOT_ALLOWED, _UNKNOWN_HOST or _TARGET_OFFLINE. */
void gt_mux_stream_accept_forward (GtMuxStream *stream);
gboolean gt_mux_stream_is_forward (GtMuxStream *stream);
/* TRUE when the stream ended because of the peer's RESET; *code gets its code. */
gboolean gt_mux_stream_get_peer_reset (GtMuxStream *stream, guint32 *code);

/* Client: "stream-opened" (GtMuxStream *stream, guint service_index) is emitted for each OPEN. The
 * handler takes a ref if it needs the stream later, then attaches a socket or resets it. */
GtMuxStream *gt_mux_stream_ref (GtMuxStream *stream);
void gt_mux_stream_unref (GtMuxStream *stream);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtMuxStream, gt_mux_stream_unref)
void gt_mux_stream_attach_fd (GtMuxStream *stream, int fd, guint64 idle_timeout_ms);
/* The same for a pollable GIOStream (a reference is taken). */
void gt_mux_stream_attach_io (GtMuxStream *stream, GIOStream *io, guint64 idle_timeout_ms);
void gt_mux_stream_reset (GtMuxStream *stream, GtResetCode code);
/* Rewrites the Host header of data going to the socket (useLocalAsHTTPHost); takes ownership.
 * Call it before any byte reached the socket (before attaching it): the bytes that came with
 * OPEN and wait in the stream are rewritten too. */
void gt_mux_stream_set_rewriter (GtMuxStream *stream, GtHostRewriter *rewriter);
gboolean gt_mux_stream_is_closed (GtMuxStream *stream);
guint32 gt_mux_stream_get_id (GtMuxStream *stream);
guint16 gt_mux_stream_get_service_index (GtMuxStream *stream);
GtMux *gt_mux_stream_get_mux (GtMuxStream *stream);
/* Microseconds since bytes last moved on this stream. */
gint64 gt_mux_stream_get_idle_us (GtMuxStream *stream);
guint64 gt_mux_stream_get_bytes_to_socket (GtMuxStream *stream);
guint64 gt_mux_stream_get_bytes_from_socket (GtMuxStream *stream);
/* The user's addresses as the server saw them, or NULL. */
const GtOpenAddr *gt_mux_stream_get_addr (GtMuxStream *stream);
/* Bytes buffered for this stream in this process (pending to its socket). */
gsize gt_mux_stream_get_buffered (GtMuxStream *stream);
/* Those bytes (e.g. what came with OPEN, before a socket is attached), or NULL. */
const guint8 *gt_mux_stream_peek_pending (GtMuxStream *stream, gsize *len);

G_END_DECLS
