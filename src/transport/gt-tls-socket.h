/* gt-tls-socket.h: the socket under a TLS connection: large reads, coalesced record writes. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* Wraps base (pollable streams; a ref is taken) for use as a TLS connection's base stream.
 * Reads are served from a 256 KiB buffer filled by one large read of base: GnuTLS reads each
 * record's 5-byte header and then its body, two syscalls per 16 KiB record, which this turns into
 * one per buffer. Non-blocking writes (one per TLS record) are gathered and sent together before
 * the main context next waits, or when 64 KiB are queued, so that the records of one main loop
 * iteration leave in one send (only for a GSocketConnection base; other bases are written as they
 * are). Blocking writes (GIO's TLS handshake and close threads) send what is queued first. Create
 * it on the thread whose thread-default main context runs the connection. */
GIOStream *gt_tls_socket_new (GIOStream *base);

G_END_DECLS
