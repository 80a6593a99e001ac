/* gt-api-server.h: the server's internal HTTP(S) API (apiAddr): /status self-test, /metrics. */
#pragma once

#include <gio/gio.h>
#include <libsoup/soup.h>
#include "gt-server.h"

G_BEGIN_DECLS

#define GT_TYPE_API_SERVER (gt_api_server_get_type ())
G_DECLARE_FINAL_TYPE (GtApiServer, gt_api_server, GT, API_SERVER, GObject)

/* Listens on addr: "PORT" or ":PORT" → 127.0.0.1:PORT (loopback by default), "HOST:PORT" or
 * "[V6]:PORT" with an IP literal or "localhost"; port 0 picks a free port. HTTPS when both
 * cert_file and key_file are given (PEM), HTTP when neither is.
 * The server is not referenced (it may own the API server); /status answers 503 once it is gone.
 * Endpoints (GET only, any Host):
 *   /metrics    text/plain; version=0.0.4 from the metrics func (empty without one)
 *   /statusResp {"status":"ok","version":"<PACKAGE_VERSION>"}
 *   /status     GT's end-to-end self-test: an in-process client with a random ephemeral id
 *               serves /statusResp through the server's own listener; 200 with the relayed
 *               body, or 503 {"status":"failed","version":...,"error":"<short reason>"}.
 *               One run at a time (concurrent callers share its result); success cached 15 s.
 *   other paths 404 {"error":"not found"} */
GtApiServer *gt_api_server_new (GtServer *server, const char *addr, const char *cert_file,
                                const char *key_file, GError **error);
/* The same listener (address rules, HTTPS, accepted connections handed to libsoup) for the
 * admin web UI (webAddr): no handler of its own; cert_file and key_file "auto" make a
 * self-signed certificate. The caller adds handlers to gt_api_server_get_soup_server(). */
GtApiServer *gt_api_server_new_for_web (const char *addr, const char *cert_file,
                                        const char *key_file, GError **error);
SoupServer *gt_api_server_get_soup_server (GtApiServer *api);
gboolean gt_api_server_is_tls (GtApiServer *api);
const char *gt_api_server_get_address (GtApiServer *api);   /* "127.0.0.1:PORT" as bound */
typedef char *(*GtApiMetricsFunc) (gpointer user_data);     /* returns the whole /metrics body */
void gt_api_server_set_metrics_func (GtApiServer *api, GtApiMetricsFunc func, gpointer user_data,
                                     GDestroyNotify destroy);
/* Self-test runs started so far (cache hits and joined callers do not count). */
guint gt_api_server_get_n_self_tests (GtApiServer *api);
/* Bounds of one self-test run (defaults 10 s each); for tests. */
void gt_api_server_set_self_test_timeouts (GtApiServer *api, guint ready_ms, guint request_ms);

G_END_DECLS
