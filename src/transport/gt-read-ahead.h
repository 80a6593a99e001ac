/* gt-read-ahead.h: a connection that reads its socket in large chunks, for TLS's small reads. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* Wraps base (pollable streams; a ref is taken) so that reads are served from a 256 KiB buffer
 * filled by one large read of base: GnuTLS reads each record's 5-byte header and then its body,
 * two syscalls per 16 KiB record, which this turns into one per buffer. Writes go to base as
 * they are. Reads may come from one thread at a time (GIO's TLS handshake thread, then the main
 * context); closing closes base. */
GIOStream *gt_read_ahead_new (GIOStream *base);

G_END_DECLS
