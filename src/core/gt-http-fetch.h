/* gt-http-fetch.h: one HTTP request whose answer is bounded in size and in time. */
#pragma once

#include <libsoup/soup.h>

G_BEGIN_DECLS

#define GT_HTTP_FETCH_ERROR (gt_http_fetch_error_quark ())
GQuark gt_http_fetch_error_quark (void);

typedef enum
{
  GT_HTTP_FETCH_ERROR_STATUS,    /* the answer's status is not 200 (soup_message_get_status) */
  GT_HTTP_FETCH_ERROR_TIMEOUT,   /* no complete answer within the timeout */
  GT_HTTP_FETCH_ERROR_TOO_LARGE, /* the body (declared or read) is larger than allowed */
} GtHttpFetchError;

/* Sends @msg on @session and reads the answer's body, at most @max_body bytes, all within
 * @timeout_ms (0: no limit of our own). @what names the peer in error messages ("the auth API").
 * Errors: GT_HTTP_FETCH_ERROR, G_IO_ERROR_CANCELLED when @cancellable fires (a timeout is never
 * reported as a cancellation), or libsoup's and GIO's transport errors with "@what request
 * failed: " in front. The caller keeps its reference to @msg to read the status and headers. */
void gt_http_fetch_async (SoupSession *session, SoupMessage *msg, const char *what, gsize max_body,
                          guint timeout_ms, GCancellable *cancellable, GAsyncReadyCallback callback,
                          gpointer user_data);
GBytes *gt_http_fetch_finish (GAsyncResult *result, GError **error);

/* Moves a GT_HTTP_FETCH_ERROR into the caller's @domain with the given codes, keeping its
 * message; any other error is returned as it is. Takes @error. */
GError *gt_http_fetch_error_as (GError *error, GQuark domain, int timeout_code, int status_code,
                                int too_large_code);

G_END_DECLS
