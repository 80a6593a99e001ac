/* gt-auth-api.h: GT's external auth API client (authAPI): asks an HTTP(S) endpoint about an id. */
#pragma once

#include <gio/gio.h>
#include <libsoup/soup.h>

G_BEGIN_DECLS

#define GT_AUTH_ERROR (gt_auth_error_quark ())
GQuark gt_auth_error_quark (void);

typedef enum
{
  GT_AUTH_ERROR_DENIED,       /* the API answered {"result": false} */
  GT_AUTH_ERROR_HTTP,         /* the API answered with a status other than 200 */
  GT_AUTH_ERROR_TIMEOUT,      /* no complete answer within timeout_ms */
  GT_AUTH_ERROR_BAD_RESPONSE, /* body too big, not JSON, or not the expected shape */
} GtAuthErrorEnum;

/* Response bounds. */
#define GT_AUTH_API_MAX_BODY (64 * 1024)
#define GT_AUTH_API_MAX_TOKENS 1000
#define GT_AUTH_API_MAX_TOKEN_LEN 200

/* POST url with Content-Type application/json, header Request-Id: <unix seconds>, body
 * {"networkClientId":id,"networkSecretKey":secret,"appletTokens":[prefixes...]}. timeout_ms
 * bounds the whole exchange (a GCancellable + timer, not SoupSession's timeout). Result: the
 * allowed prefixes (NULL-terminated strv, may be empty) on {"result":true,"appletTokens":[...]};
 * DENIED on result false; HTTP, TIMEOUT, BAD_RESPONSE as named. No error message contains the
 * secret. Transport failures (connection refused, TLS, ...) come as G_IO_ERROR / G_TLS_ERROR;
 * cancelling `cancellable` gives G_IO_ERROR_CANCELLED. timeout_ms 0 = no timer. */
void gt_auth_api_request_async (SoupSession *session, const char *url, const char *id,
                                const char *secret, const char *const *prefixes, guint timeout_ms,
                                GCancellable *cancellable, GAsyncReadyCallback callback,
                                gpointer user_data);
char **gt_auth_api_request_finish (GAsyncResult *result, GError **error);
/* Pure parser of the response body (fuzzed): body need not be NUL-terminated. "appletTokens"
 * may be missing or null (no tokens); empty tokens are dropped. Errors: DENIED, BAD_RESPONSE. */
gboolean gt_auth_api_parse_response (const char *body, gsize len, char ***prefixes_out,
                                     GError **error);

G_END_DECLS
