/* gt-worker-report.h: the per-tunnel and per-stream counters a worker sends to its manager
 * (GT_DETAILS= on the notify socket), and their checked decoding on the manager's side. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Tunnel connections: (client id, index, peer, state, streams, bytes in, bytes out); open
 * streams: (client id, tunnel index, stream id, service, remote address, bytes in, bytes out).
 * "In" is toward the services, "out" back toward the users, as in GtTraffic. */
#define GT_WORKER_CONNECTION_TYPE "(sussutt)"
#define GT_WORKER_STREAM_TYPE "(suusstt)"
#define GT_WORKER_DETAILS_TYPE "(a" GT_WORKER_CONNECTION_TYPE "a" GT_WORKER_STREAM_TYPE ")"
/* At most this many connections and streams each; the totals are in GtTraffic. */
#define GT_WORKER_DETAILS_MAX_ENTRIES 256
/* The longest GT_DETAILS= line: fits a notify datagram with room to spare. */
#define GT_WORKER_DETAILS_MAX_LINE (60 * 1024)

/* The details of a gt_server_get_state() or gt_client_get_state() snapshot, at most max
 * entries of each list (the first ones in the snapshot's order). A floating-free new ref. */
GVariant *gt_worker_details_build (GVariant *state, guint max);
/* "GT_DETAILS=BASE64" of state's details, at most GT_WORKER_DETAILS_MAX_LINE bytes: the lists
 * are shortened until it fits. */
char *gt_worker_details_line (GVariant *state);
/* The value of a GT_DETAILS= line: NULL with error unless it is a GT_WORKER_DETAILS_TYPE in
 * normal form with at most GT_WORKER_DETAILS_MAX_ENTRIES entries per list. */
GVariant *gt_worker_details_parse (const char *value, GError **error);
/* The details of no worker: two empty lists. */
GVariant *gt_worker_details_empty (void);

G_END_DECLS
