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

/* The server's client of the auth API: logins that ask the same question (id, secret, prefixes)
 * while it runs share one request; answers (yes or no, not failures) are reused for cache_ms, keyed
 * by an HMAC of the credentials under a per-process random key; at most max_requests run at once,
 * at most max_per_address of them for one client address, and waiting addresses take turns, so a
 * burst from one address does not hold up a login from another. timeout_ms bounds the wait of a
 * login, queueing included (0 = no bound). */
#define GT_AUTH_API_MAX_REQUESTS 8
#define GT_AUTH_API_MAX_PER_ADDRESS 2
#define GT_AUTH_API_CACHE_MS 5000
#define GT_AUTH_API_CACHE_MAX 4096

typedef struct _GtAuthApi GtAuthApi;

GtAuthApi *gt_auth_api_new (const char *url, guint timeout_ms, guint max_requests,
                            guint max_per_address, guint cache_ms);
/* Logins still waiting get G_IO_ERROR_CANCELLED. */
void gt_auth_api_free (GtAuthApi *api);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtAuthApi, gt_auth_api_free)
/* TRUE when the answer for these credentials is cached or already being asked: checking them
 * adds no request. */
gboolean gt_auth_api_knows (GtAuthApi *api, const char *id, const char *secret,
                            const char *const *prefixes);
/* As gt_auth_api_request_async, for a login from address (an IP). */
void gt_auth_api_check_async (GtAuthApi *api, const char *address, const char *id,
                              const char *secret, const char *const *prefixes,
                              GCancellable *cancellable, GAsyncReadyCallback callback,
                              gpointer user_data);
char **gt_auth_api_check_finish (GAsyncResult *result, GError **error);

G_END_DECLS
