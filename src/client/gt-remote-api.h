/* gt-remote-api.h: GT's remote API client (remoteAPI): asks an HTTP(S) endpoint for the server. */
#pragma once

#include <gio/gio.h>
#include <libsoup/soup.h>

G_BEGIN_DECLS

#define GT_REMOTE_API_ERROR (gt_remote_api_error_quark ())
GQuark gt_remote_api_error_quark (void);

typedef enum
{
  GT_REMOTE_API_ERROR_HTTP,         /* the API answered with a status other than 200 */
  GT_REMOTE_API_ERROR_TIMEOUT,      /* no complete answer within timeout_ms */
  GT_REMOTE_API_ERROR_BAD_RESPONSE, /* body too big, not JSON, or not the expected shape */
} GtRemoteApiErrorEnum;

/* Response bounds. */
#define GT_REMOTE_API_MAX_BODY (64 * 1024)
#define GT_REMOTE_API_MAX_ADDRESS 1024

/* Pure parser of the answer (fuzzed): {"serverAddress": "tcp://host:port", "stunAddress": ...};
 * body need not be NUL-terminated. serverAddress must be a non-empty string of at most 1024 bytes
 * of printable UTF-8; stunAddress may be missing or null, else a string of the same kind (*stun_out
 * is NULL when absent). Other members are ignored. Error: BAD_RESPONSE. */
gboolean gt_remote_api_parse_answer (const char *body, gsize len, char **server_out,
                                     char **stun_out, GError **error);

/* GET url?network_client_id=<id> with header Request-Id: <unix seconds>. timeout_ms bounds the
 * whole exchange (0 = no bound). Result: the serverAddress string. Transport failures come as
 * G_IO_ERROR / G_TLS_ERROR; cancelling gives G_IO_ERROR_CANCELLED. */
void gt_remote_api_query_async (SoupSession *session, const char *url, const char *id,
                                guint timeout_ms, GCancellable *cancellable,
                                GAsyncReadyCallback callback, gpointer user_data);
char *gt_remote_api_query_finish (GAsyncResult *result, GError **error);

G_END_DECLS
