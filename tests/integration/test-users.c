/* Integration tests of the multi-user server: users, limits, auth API, lockout, API, metrics. */
#define G_LOG_DOMAIN "gt-test"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include "gt-frame.h"
#include "gt-metrics.h"
#include "gt-test-utils.h"

/* Every wait is bounded by GT_TEST_WAIT_MS (or a shorter explicit) timeout. */
#define PATTERN_SIZE (4 * GT_TEST_MIB)

/* Every secret used below; none may appear in a gt log line or an API response. */
#define SECRET_ALICE "alice-pw-7Qx2Lr9"
#define SECRET_BOB "bob-pw-K3v8Nd1"
#define SECRET_CAROL "carol-pw-Zt5Hm4"
#define SECRET_DAVE "dave-pw-Wq6Jp0"
#define SECRET_EVE "eve-pw-Gs1Tc8"
#define SECRET_WRONG "wrong-pw-Ub7Ye3"
#define SECRET_ALICE_FILE "alice-file-pw-Rr4Vb"
#define SECRET_CAROL_FILE "carol-file-pw-Mn2Qa"
#define SECRET_CAROL_CLI "carol-cli-pw-Px9Hw"
#define SECRET_ANY1 "any-first-pw-Lc3Ke"
#define SECRET_ANY2 "any-second-pw-Dj8Fo"

static const char *const all_secrets[] = {
  SECRET_ALICE,      SECRET_BOB,        SECRET_CAROL,     SECRET_DAVE, SECRET_EVE,  SECRET_WRONG,
  SECRET_ALICE_FILE, SECRET_CAROL_FILE, SECRET_CAROL_CLI, SECRET_ANY1, SECRET_ANY2,
};

/* ------------------------------------------------------------------------------------------ */
/* Fixture: the harness keeps the children, services and files; this file adds the auth API. */

typedef struct _AuthApi AuthApi;

typedef struct
{
  AuthApi *auth;
} Fixture;

/* ------------------------------------------------------------------------------------------ */
/* Local services of our own: GSocketService listeners handing connections to a SoupServer. */

/* Connections to a SoupServer come from our own GSocketService (backlog 1024, unlike
 * soup_server_listen_local) and are handed over with soup_server_accept_iostream(): libsoup
 * 3.2's own listener leaks every accepted GSocket, which LeakSanitizer reports. */
static gboolean
soup_incoming_cb (GSocketService *service, GSocketConnection *conn, GObject *source,
                  gpointer user_data)
{
  SoupServer *server = user_data;
  g_autoptr (GSocketAddress) local = g_socket_connection_get_local_address (conn, NULL);
  g_autoptr (GSocketAddress) remote = g_socket_connection_get_remote_address (conn, NULL);

  soup_server_accept_iostream (server, G_IO_STREAM (conn), local, remote, NULL);
  return TRUE;
}

static GSocketService *
soup_listen_loopback (SoupServer *server, guint16 *port, GError **error)
{
  g_autoptr (GSocketService) service = g_socket_service_new ();
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) addr = g_inet_socket_address_new (lo, *port);
  g_autoptr (GSocketAddress) bound = NULL;

  g_socket_listener_set_backlog (G_SOCKET_LISTENER (service), 1024);
  if (!g_socket_listener_add_address (G_SOCKET_LISTENER (service), addr, G_SOCKET_TYPE_STREAM,
                                      G_SOCKET_PROTOCOL_TCP, NULL, &bound, error))
    return NULL;
  *port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));
  g_signal_connect_object (service, "incoming", G_CALLBACK (soup_incoming_cb), server, 0);
  g_socket_service_start (service);
  return g_steal_pointer (&service);
}

static void
soup_listen_stop (GSocketService **service)
{
  if (*service == NULL)
    return;
  g_socket_service_stop (*service);
  g_socket_listener_close (G_SOCKET_LISTENER (*service));
  g_clear_object (service);
}

/* ------------------------------------------------------------------------------------------ */
/* The auth API: a SoupServer answering POST /auth according to the client id it is asked about:
 * "denied" → result false, "slow" → never answers, "garbage" → not JSON, "broken" → 500,
 * anyone else → result true with appletTokens ["web"]. */

typedef struct
{
  char *method;
  char *content_type;
  char *id; /* NULL if the body was not the expected JSON */
  char *secret;
  GPtrArray *tokens; /* char * */
  gint64 at_us;
} AuthRequest;

struct _AuthApi
{
  SoupServer *server;
  GSocketService *service;
  guint16 port;
  GPtrArray *requests; /* AuthRequest *, under state_lock */
  GPtrArray *hung;     /* SoupServerMessage *, service thread only */
  GError *error;
};

static void
auth_request_free (gpointer data)
{
  AuthRequest *r = data;

  g_free (r->method);
  g_free (r->content_type);
  g_free (r->id);
  g_free (r->secret);
  g_clear_pointer (&r->tokens, g_ptr_array_unref);
  g_free (r);
}

static void
auth_hung_finished_cb (SoupServerMessage *msg, gpointer user_data)
{
  AuthApi *a = user_data;

  g_signal_handlers_disconnect_by_data (msg, a);
  g_ptr_array_remove (a->hung, msg);
}

static void
auth_cb (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
         gpointer user_data)
{
  AuthApi *a = user_data;
  g_autoptr (GBytes) body = soup_message_body_flatten (soup_server_message_get_request_body (msg));
  g_autoptr (JsonParser) parser = json_parser_new ();
  AuthRequest *r = g_new0 (AuthRequest, 1);
  const char *ct = soup_message_headers_get_one (soup_server_message_get_request_headers (msg),
                                                 "Content-Type");
  const char *id;

  r->method = g_strdup (soup_server_message_get_method (msg));
  r->content_type = g_strdup (ct);
  r->at_us = g_get_monotonic_time ();
  r->tokens = g_ptr_array_new_with_free_func (g_free);
  if (json_parser_load_from_data (parser, g_bytes_get_data (body, NULL), g_bytes_get_size (body),
                                  NULL)
      && JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser)))
    {
      JsonObject *o = json_node_get_object (json_parser_get_root (parser));
      JsonArray *tokens = json_object_get_array_member (o, "appletTokens");

      r->id = g_strdup (json_object_get_string_member_with_default (o, "networkClientId", NULL));
      r->secret
          = g_strdup (json_object_get_string_member_with_default (o, "networkSecretKey", NULL));
      for (guint i = 0; tokens != NULL && i < json_array_get_length (tokens); i++)
        g_ptr_array_add (r->tokens, g_strdup (json_array_get_string_element (tokens, i)));
    }
  id = r->id != NULL ? r->id : "";
  g_mutex_lock (gt_test_lock ());
  g_ptr_array_add (a->requests, r);
  g_cond_broadcast (gt_test_cond ());
  g_mutex_unlock (gt_test_lock ());

  if (strcmp (id, "slow") == 0)
    {
      soup_server_message_pause (msg);
      g_ptr_array_add (a->hung, msg);
      g_signal_connect (msg, "finished", G_CALLBACK (auth_hung_finished_cb), a);
    }
  else if (strcmp (id, "denied") == 0)
    {
      static const char deny[] = "{\"result\":false,\"appletTokens\":[]}";

      soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
      soup_server_message_set_response (msg, "application/json", SOUP_MEMORY_STATIC, deny,
                                        strlen (deny));
    }
  else if (strcmp (id, "garbage") == 0)
    {
      static const char junk[] = "this is not JSON {{{";

      soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
      soup_server_message_set_response (msg, "application/json", SOUP_MEMORY_STATIC, junk,
                                        strlen (junk));
    }
  else if (strcmp (id, "broken") == 0)
    {
      static const char oops[] = "{\"result\":true,\"appletTokens\":[\"web\"]}";

      soup_server_message_set_status (msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, NULL);
      soup_server_message_set_response (msg, "application/json", SOUP_MEMORY_STATIC, oops,
                                        strlen (oops));
    }
  else
    {
      static const char allow[] = "{\"result\":true,\"appletTokens\":[\"web\"]}";

      soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
      soup_server_message_set_response (msg, "application/json", SOUP_MEMORY_STATIC, allow,
                                        strlen (allow));
    }
}

static void
auth_api_start_in_service (gpointer data, gpointer unused)
{
  AuthApi *a = data;

  a->server = soup_server_new (NULL, NULL);
  soup_server_add_handler (a->server, "/auth", auth_cb, a, NULL);
  a->service = soup_listen_loopback (a->server, &a->port, &a->error);
}

static void
auth_api_stop_in_service (gpointer data, gpointer unused)
{
  AuthApi *a = data;

  while (a->hung->len > 0)
    {
      SoupServerMessage *msg = a->hung->pdata[a->hung->len - 1];

      g_signal_handlers_disconnect_by_data (msg, a);
      g_ptr_array_remove_index (a->hung, a->hung->len - 1);
      soup_server_message_set_status (msg, SOUP_STATUS_SERVICE_UNAVAILABLE, NULL);
      soup_server_message_unpause (msg);
    }
  soup_listen_stop (&a->service);
  if (a->server != NULL)
    soup_server_disconnect (a->server);
  g_clear_object (&a->server);
}

static AuthApi *
auth_api_start (Fixture *f)
{
  g_assert_null (f->auth);
  f->auth = g_new0 (AuthApi, 1);
  f->auth->requests = g_ptr_array_new_with_free_func (auth_request_free);
  f->auth->hung = g_ptr_array_new ();
  gt_test_service_call (auth_api_start_in_service, f->auth);
  g_assert_no_error (f->auth->error);
  return f->auth;
}

static void
auth_api_free (AuthApi *a)
{
  gt_test_service_call (auth_api_stop_in_service, a);
  g_ptr_array_unref (a->requests);
  g_ptr_array_unref (a->hung);
  g_free (a);
}

/* Waits for the auth API's first request about id; returns a copy of its arrival time (0 when
 * none came in time). */
static gint64
auth_api_wait_request (AuthApi *a, const char *id, guint timeout_ms)
{
  gint64 end = gt_test_deadline_in (timeout_ms);
  gint64 at = 0;

  g_mutex_lock (gt_test_lock ());
  for (;;)
    {
      for (guint i = 0; i < a->requests->len && at == 0; i++)
        {
          AuthRequest *r = a->requests->pdata[i];

          if (g_strcmp0 (r->id, id) == 0)
            at = r->at_us;
        }
      if (at != 0 || !g_cond_wait_until (gt_test_cond (), gt_test_lock (), end))
        break;
    }
  g_mutex_unlock (gt_test_lock ());
  return at;
}

/* ------------------------------------------------------------------------------------------ */
/* Starting gt. */

/* `gt server --addr 127.0.0.1:0 ARGS...`; waits for the listener (and the API when --apiAddr
 * is among the arguments). api_port may be NULL. */
static GtTestProc *
start_server_v (Fixture *f, const char *name, guint16 *port, guint16 *api_port, GPtrArray *extra)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autofree char *line = NULL;
  gboolean api = FALSE;
  GtTestProc *p;

  gt_test_args_addv (args, "server", "--addr", "127.0.0.1:0", NULL);
  for (guint i = 0; extra != NULL && i < extra->len; i++)
    {
      gt_test_args_add (args, "%s", (const char *)extra->pdata[i]);
      if (strcmp (extra->pdata[i], "--apiAddr") == 0)
        api = TRUE;
    }
  p = gt_test_spawn_gt (name, args);
  line = gt_test_proc_expect_line (p, "listening on 127\\.0\\.0\\.1:[0-9]+", NULL, GT_TEST_WAIT_MS);
  *port = (guint16)gt_test_capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");
  g_assert_cmpuint (*port, >, 0);
  if (api)
    {
      g_autofree char *api_line = gt_test_proc_expect_line (
          p, "status API on 127\\.0\\.0\\.1:[0-9]+", NULL, GT_TEST_WAIT_MS);
      g_assert_nonnull (api_port);
      *api_port
          = (guint16)gt_test_capture_uint (api_line, "status API on 127\\.0\\.0\\.1:([0-9]+)");
    }
  return p;
}

G_GNUC_NULL_TERMINATED static GtTestProc *
start_server (Fixture *f, const char *name, guint16 *port, guint16 *api_port, ...)
{
  g_autoptr (GPtrArray) extra = gt_test_args_new ();
  va_list ap;
  const char *a;

  va_start (ap, api_port);
  while ((a = va_arg (ap, const char *)) != NULL)
    g_ptr_array_add (extra, g_strdup (a));
  va_end (ap);
  return start_server_v (f, name, port, api_port, extra);
}

/* `gt client --id ID --secret S --reconnectDelay 200ms --remote tcp://127.0.0.1:PORT ARGS...`;
 * does not wait for anything. */
G_GNUC_NULL_TERMINATED static GtTestProc *
start_client (Fixture *f, const char *name, guint16 port, const char *id, const char *secret, ...)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  va_list ap;
  const char *a;

  gt_test_args_addv (args, "client", "--id", id, "--secret", secret, "--reconnectDelay", "200ms",
             "--remote", NULL);
  gt_test_args_add (args, "tcp://127.0.0.1:%u", port);
  va_start (ap, secret);
  while ((a = va_arg (ap, const char *)) != NULL)
    g_ptr_array_add (args, g_strdup (a));
  va_end (ap);
  return gt_test_spawn_gt (name, args);
}

static char *
local_url (GtTestHttp *h)
{
  return g_strdup_printf ("http://127.0.0.1:%u", h->port);
}

static void
wait_started (GtTestProc *client)
{
  g_autofree char *line
      = gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS);
}

/* The client logs `server refused: MESSAGE (code CODE)` then `retrying in N ms`; the server
 * logs `tunnel from 127.0.0.1:P refused: client=ID: MESSAGE`. message_re is a regex. */
static void
expect_refusal_re (GtTestProc *client, GtTestProc *server, const char *id, guint code,
                   const char *message_re)
{
  g_autofree char *re = g_strdup_printf ("server refused: %s \\(code %u\\)$", message_re, code);
  g_autofree char *id_re = g_regex_escape_string (id, -1);
  g_autofree char *sre = g_strdup_printf (
      "tunnel from 127\\.0\\.0\\.1:[0-9]+ refused: client=%s: %s$", id_re, message_re);
  g_autofree char *l1 = NULL, *l2 = NULL, *l3 = NULL;
  guint from = 0;

  l1 = gt_test_proc_expect_line (client, re, &from, GT_TEST_WAIT_MS);
  l2 = gt_test_proc_expect_line (client, "retrying in [0-9]+ ms", &from, GT_TEST_WAIT_MS);
  if (server != NULL)
    l3 = gt_test_proc_expect_line (server, sre, NULL, GT_TEST_WAIT_MS);
}

static void
expect_refusal (GtTestProc *client, GtTestProc *server, const char *id, guint code,
                const char *message)
{
  g_autofree char *esc = g_regex_escape_string (message, -1);

  expect_refusal_re (client, server, id, code, esc);
}

/* A refused client keeps running, never gets a tunnel and backs off. */
static void
expect_still_refused (GtTestProc *client)
{
  g_assert_false (gt_test_proc_has_exited (client));
  g_assert_cmpuint (gt_test_proc_count_matches (client, "tunnel started"), ==, 0);
}

static guint
count_lines_since (GtTestProc *p, guint from, const char *regex)
{
  g_autoptr (GRegex) re = g_regex_new (regex, 0, 0, NULL);
  guint n = 0;

  g_mutex_lock (gt_test_lock ());
  for (guint i = from; i < p->lines->len; i++)
    if (g_regex_match (re, p->lines->pdata[i], 0, NULL))
      n++;
  g_mutex_unlock (gt_test_lock ());
  return n;
}

static void
check_no_secret (const char *what, const char *text)
{
  for (guint i = 0; i < G_N_ELEMENTS (all_secrets); i++)
    if (strstr (text, all_secrets[i]) != NULL)
      gt_test_fail ("%s contains the secret '%s': %s", what, all_secrets[i], text);
}

static void
check_logs_for_secrets (GtTestProc *p)
{
  g_mutex_lock (gt_test_lock ());
  for (guint i = 0; i < p->lines->len; i++)
    for (guint j = 0; j < G_N_ELEMENTS (all_secrets); j++)
      if (strstr (p->lines->pdata[i], all_secrets[j]) != NULL)
        {
          g_autofree char *line = g_strdup (p->lines->pdata[i]);

          g_mutex_unlock (gt_test_lock ());
          gt_test_fail ("log line %u of %s contains the secret '%s': %s", i + 1, p->name,
                     all_secrets[j], line);
        }
  g_mutex_unlock (gt_test_lock ());
}

/* ------------------------------------------------------------------------------------------ */
/* A tunnel handshake by hand, from a chosen source address (the gt client cannot bind). */

typedef struct
{
  gboolean welcome;
  guint16 code;  /* ERROR */
  char *message; /* ERROR */
  GArray *ports; /* WELCOME: GtWelcomePort */
} HandshakeReply;

static void
handshake_reply_free (HandshakeReply *r)
{
  g_free (r->message);
  g_clear_pointer (&r->ports, g_array_unref);
  g_free (r);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC (HandshakeReply, handshake_reply_free)

static gboolean
recv_exact (int fd, guint8 *buf, gsize len, gint64 deadline, GError **error)
{
  gsize got = 0;

  while (got < len)
    {
      gssize n = recv (fd, buf + got, len - got, 0);

      if (n > 0)
        got += n;
      else if (n == 0)
        {
          g_set_error (error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                       "EOF after %" G_GSIZE_FORMAT " of %" G_GSIZE_FORMAT " bytes", got, len);
          return FALSE;
        }
      else if (errno == EAGAIN || errno == EINTR)
        {
          if (!gt_test_fd_poll (fd, POLLIN, deadline, error))
            return FALSE;
        }
      else
        {
          g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errno), "recv: %s",
                       g_strerror (errno));
          return FALSE;
        }
    }
  return TRUE;
}

/* Sends the preface and a HELLO with one http service per prefix from src_ip to
 * 127.0.0.1:port and reads the reply (WELCOME or ERROR). */
static HandshakeReply *
raw_handshake (guint16 port, const char *src_ip, const char *id, const char *secret,
               const char *prefix, GError **error)
{
  g_autoptr (GtHello) hello = gt_hello_new (id, secret);
  g_autoptr (GByteArray) out = g_byte_array_new ();
  g_autoptr (GtTestConn) c = g_new0 (GtTestConn, 1);
  g_autoptr (HandshakeReply) reply = g_new0 (HandshakeReply, 1);
  g_autofree guint8 *payload = NULL;
  struct sockaddr_in src = { 0 }, dst = { 0 };
  guint8 preface[GT_PREFACE_SIZE];
  guint8 head[GT_FRAME_HEADER_SIZE];
  GtFrameHeader h;
  gint64 deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);

  if (prefix != NULL)
    gt_hello_add_service (hello, GT_SERVICE_KIND_HTTP, prefix, 0, FALSE);
  gt_preface_encode (preface);
  g_byte_array_append (out, preface, sizeof preface);
  if (!gt_frame_append_hello (out, hello, error))
    return NULL;

  c->in = g_byte_array_new ();
  c->fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  g_assert_cmpint (c->fd, >=, 0);
  src.sin_family = AF_INET;
  g_assert_cmpint (inet_pton (AF_INET, src_ip, &src.sin_addr), ==, 1);
  if (bind (c->fd, (struct sockaddr *)&src, sizeof src) < 0)
    {
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errno), "bind to %s: %s", src_ip,
                   g_strerror (errno));
      return NULL;
    }
  dst.sin_family = AF_INET;
  dst.sin_port = htons (port);
  dst.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  if (connect (c->fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS)
    {
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errno), "connect: %s",
                   g_strerror (errno));
      return NULL;
    }
  if (!gt_test_fd_poll (c->fd, POLLOUT, deadline, error) || !gt_test_conn_check_connected (c, error)
      || !gt_test_conn_write_all (c, out->data, out->len, deadline, error)
      || !recv_exact (c->fd, head, sizeof head, deadline, error))
    return NULL;
  if (gt_frame_header_decode (head, sizeof head, &h, error) != GT_DECODE_OK)
    return NULL;
  payload = g_malloc (h.length + 1);
  if (!recv_exact (c->fd, payload, h.length, deadline, error))
    return NULL;
  if (h.type == GT_FRAME_WELCOME)
    {
      reply->welcome = TRUE;
      reply->ports = gt_welcome_decode (payload, h.length, error);
      if (reply->ports == NULL)
        return NULL;
    }
  else if (h.type == GT_FRAME_ERROR)
    {
      if (!gt_error_decode (payload, h.length, &reply->code, &reply->message, error))
        return NULL;
    }
  else
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "unexpected %s frame",
                   gt_frame_type_to_string (h.type));
      return NULL;
    }
  return g_steal_pointer (&reply);
}

#define expect_handshake(port, src, id, secret, prefix, want_code, want_message)                   \
  G_STMT_START                                                                                     \
  {                                                                                                \
    g_autoptr (GError) hs_error_ = NULL;                                                           \
    g_autoptr (HandshakeReply) hs_                                                                 \
        = raw_handshake ((port), (src), (id), (secret), (prefix), &hs_error_);                     \
    if (hs_ == NULL)                                                                               \
      gt_test_fail ("handshake of %s from %s failed: %s", (id), (src), hs_error_->message);        \
    if ((want_code) == 0 && !hs_->welcome)                                                         \
      gt_test_fail ("handshake of %s from %s: refused with code %u '%s', want WELCOME", (id),      \
                    (src), hs_->code, hs_->message);                                               \
    if ((want_code) != 0 && hs_->welcome)                                                          \
      gt_test_fail ("handshake of %s from %s: WELCOME, want refusal code %u", (id), (src),         \
                    (guint)(want_code));                                                           \
    if ((want_code) != 0 && hs_->code != (want_code))                                              \
      gt_test_fail ("handshake of %s from %s: code %u '%s', want code %u", (id), (src), hs_->code, \
                    hs_->message, (guint)(want_code));                                             \
    if ((want_code) != 0 && (want_message) != NULL                                                 \
        && g_strcmp0 (hs_->message, (want_message)) != 0)                                          \
      gt_test_fail ("handshake of %s from %s: message '%s', want '%s'", (id), (src), hs_->message, \
                    (const char *)(want_message));                                                 \
    if (!hs_->welcome)                                                                             \
      check_no_secret ("ERROR message", hs_->message);                                             \
  }                                                                                                \
  G_STMT_END

/* ------------------------------------------------------------------------------------------ */
/* The status API. */

static GtTestHttpResponse *
api_get (guint16 api_port, const char *path, guint timeout_ms)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestConn) c = gt_test_conn_connect (api_port, &error);
  g_autoptr (GByteArray) req = NULL;
  g_autofree char *host = g_strdup_printf ("127.0.0.1:%u", api_port);
  g_autofree char *body = NULL;
  GtTestHttpResponse *r;

  if (c == NULL)
    gt_test_fail ("connect to the API: %s", error->message);
  req = gt_test_http_build_request ("GET", path, host, NULL, 0, "Connection: close\r\n");
  if (!gt_test_conn_write_all (c, req->data, req->len, gt_test_deadline_in (5000), &error))
    gt_test_fail ("GET %s: %s", path, error->message);
  r = gt_test_conn_read_response (c, gt_test_deadline_in (timeout_ms), &error);
  if (r == NULL)
    gt_test_fail ("GET %s: no response: %s", path, error->message);
  body = g_strndup ((const char *)r->body->data, r->body->len);
  check_no_secret ("API response", body);
  return r;
}

static char *
api_metrics (guint16 api_port)
{
  g_autoptr (GtTestHttpResponse) r = api_get (api_port, "/metrics", GT_TEST_WAIT_MS);
  const char *ct = gt_test_http_response_header (r, "Content-Type");

  if (r->status != 200)
    gt_test_fail ("GET /metrics: status %u", r->status);
  if (ct == NULL || !g_str_has_prefix (ct, "text/plain"))
    gt_test_fail ("GET /metrics: Content-Type '%s'", ct ? ct : "(none)");
  return g_strndup ((const char *)r->body->data, r->body->len);
}

G_GNUC_NULL_TERMINATED static double
metric (const char *text, const char *name, ...)
{
  g_autoptr (GPtrArray) labels = g_ptr_array_new ();
  va_list ap;
  const char *a;
  double v = -1;

  va_start (ap, name);
  while ((a = va_arg (ap, const char *)) != NULL)
    g_ptr_array_add (labels, (gpointer)a);
  va_end (ap);
  g_ptr_array_add (labels, NULL);
  if (!gt_metrics_parse_sample (text, name, (const char *const *)labels->pdata, &v))
    {
      g_autofree char *desc = g_strjoinv (",", (char **)labels->pdata);

      gt_test_fail ("no sample %s{%s} in the metrics:\n%s", name, desc, text);
    }
  return v;
}

/* Polls /metrics until the sample has the value (counters settle when streams close). */
G_GNUC_NULL_TERMINATED static char *
metrics_wait (guint16 api_port, double want, const char *name, ...)
{
  g_autoptr (GPtrArray) labels = g_ptr_array_new ();
  gint64 end = gt_test_deadline_in (10000);
  va_list ap;
  const char *a;

  va_start (ap, name);
  while ((a = va_arg (ap, const char *)) != NULL)
    g_ptr_array_add (labels, (gpointer)a);
  va_end (ap);
  g_ptr_array_add (labels, NULL);
  for (;;)
    {
      g_autofree char *text = api_metrics (api_port);
      double v = -1;

      if (gt_metrics_parse_sample (text, name, (const char *const *)labels->pdata, &v) && v == want)
        return g_steal_pointer (&text);
      if (g_get_monotonic_time () > end)
        {
          g_autofree char *desc = g_strjoinv (",", (char **)labels->pdata);

          gt_test_fail ("%s{%s} is %g, want %g, after 10 s; metrics:\n%s", name, desc, v, want,
                        text);
        }
      g_usleep (100 * 1000);
    }
}

static JsonObject *
parse_json_object (const char *what, GtTestHttpResponse *r, JsonParser *parser)
{
  g_autoptr (GError) error = NULL;
  JsonNode *root;

  if (!json_parser_load_from_data (parser, (const char *)r->body->data, r->body->len, &error))
    gt_test_fail ("%s: body is not JSON (%s): '%.*s'", what, error->message, (int)r->body->len,
               (const char *)r->body->data);
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    gt_test_fail ("%s: body is not a JSON object: '%.*s'", what, (int)r->body->len,
               (const char *)r->body->data);
  return json_node_get_object (root);
}

/* ------------------------------------------------------------------------------------------ */
/* Fixture */

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  gt_test_setup ();
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  /* gt processes first: each must stop cleanly on SIGTERM. */
  gt_test_stop_all ();
  /* Then every line each of them wrote is searched for the secrets. */
  for (guint i = 0; i < gt_test_procs ()->len; i++)
    check_logs_for_secrets (gt_test_procs ()->pdata[i]);
  if (f->auth != NULL)
    auth_api_free (f->auth);
  gt_test_teardown ();
}

/* A GET of /whoami with this Host on a fresh connection: the status, and the body in *who. */
static guint
whoami (guint16 port, const char *host, char **who)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestHttpResponse) r
      = gt_test_http_request (port, "GET", "/whoami", host, NULL, 0, &error);

  if (r == NULL)
    gt_test_fail ("GET /whoami for %s: %s", host, error->message);
  if (who != NULL)
    *who = g_strndup ((const char *)r->body->data, r->body->len);
  return r->status;
}

#define expect_whoami(port, host, want_name)                                                       \
  G_STMT_START                                                                                     \
  {                                                                                                \
    g_autofree char *who_ = NULL;                                                                  \
    guint st_ = whoami ((port), (host), &who_);                                                    \
    if (st_ != 200 || g_strcmp0 (who_, (want_name)) != 0)                                          \
      gt_test_fail ("Host %s: status %u body '%s', want 200 '%s'", (host), st_, who_,              \
                    (want_name));                                                                  \
  }                                                                                                \
  G_STMT_END

#define expect_404(port, host)                                                                     \
  G_STMT_START                                                                                     \
  {                                                                                                \
    g_autofree char *who_ = NULL;                                                                  \
    guint st_ = whoami ((port), (host), &who_);                                                    \
    if (st_ != 404)                                                                                \
      gt_test_fail ("Host %s: status %u body '%s', want 404", (host), st_, who_);                  \
  }                                                                                                \
  G_STMT_END

/* ------------------------------------------------------------------------------------------ */
/* Backoff: a refused client retries from reconnectDelay on, growing, capped at a few seconds,
 * and does not hammer the server. */

static void
check_backoff (GtTestProc *client, const char *refusal_re, guint window_ms)
{
  guint from = gt_test_proc_line_count (client);
  g_autoptr (GRegex) re = g_regex_new ("retrying in ([0-9]+) ms", 0, 0, NULL);
  guint min_ms = G_MAXUINT, max_ms = 0, n_retry = 0, n_refused;

  g_usleep ((gulong)window_ms * 1000);
  n_refused = count_lines_since (client, from, refusal_re);
  g_mutex_lock (gt_test_lock ());
  for (guint i = 0; i < client->lines->len; i++)
    {
      g_autoptr (GMatchInfo) mi = NULL;

      if (g_regex_match (re, client->lines->pdata[i], 0, &mi))
        {
          g_autofree char *s = g_match_info_fetch (mi, 1);
          guint ms = (guint)g_ascii_strtoull (s, NULL, 10);

          min_ms = MIN (min_ms, ms);
          max_ms = MAX (max_ms, ms);
          n_retry++;
        }
    }
  g_mutex_unlock (gt_test_lock ());
  g_test_message ("%s: %u refusals in %u ms; retry delays %u..%u ms over %u retries", client->name,
                  n_refused, window_ms, min_ms, max_ms, n_retry);
  if (n_retry < 2)
    gt_test_fail ("%s: only %u 'retrying in' lines", client->name, n_retry);
  /* reconnectDelay is 200 ms (±20 % jitter allowed) */
  if (min_ms < 100)
    gt_test_fail ("%s: a retry after %u ms, below reconnectDelay 200 ms", client->name, min_ms);
  if (max_ms < 600)
    gt_test_fail ("%s: retry delays stay at %u..%u ms: no backoff", client->name, min_ms, max_ms);
  if (max_ms > 10000)
    gt_test_fail ("%s: retry delay %u ms is not capped at a few seconds", client->name, max_ms);
  /* 3 tunnels retrying every 200 ms would be 15 attempts per second */
  if (n_refused > 8 * window_ms / 1000)
    gt_test_fail ("%s: %u refusals in %u ms: the client hammers the server", client->name,
                  n_refused, window_ms);
}

/* 1. An unknown id is refused (code 1), the client backs off, known users still work. */

static void
test_invalid_id (Fixture *f, gconstpointer data)
{
  GtTestHttp *h;
  g_autofree char *url = NULL;
  GtTestProc *server, *bad, *good;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  h = gt_test_http_start ("alice-svc", 0, NULL);
  url = local_url (h);
  server = start_server (f, "server", &port, NULL, "--id", "alice", "--secret", SECRET_ALICE,
                         "--id", "bob", "--secret", SECRET_BOB, "--reconnectTimes", "1000", NULL);
  bad = start_client (f, "mallory", port, "mallory", SECRET_ALICE, "--local", url, "--hostPrefix",
                      "evil", NULL);
  expect_refusal (bad, server, "mallory", 1, "invalid id or secret");
  check_backoff (bad, "server refused: invalid id or secret \\(code 1\\)", 3000);

  good = start_client (f, "alice", port, "alice", SECRET_ALICE, "--local", url, "--hostPrefix",
                       "web", NULL);
  wait_started (good);
  expect_whoami (port, "web.example.com", "alice-svc");
  expect_404 (port, "evil.example.com");
  expect_still_refused (bad);
  /* Unknown ids are also refused by a bare handshake, whatever the secret. */
  expect_handshake (port, "127.0.0.1", "nobody", SECRET_BOB, "x", 1, "invalid id or secret");
}

/* 2. A known id with a wrong secret is refused; the right secret is accepted meanwhile. */

static void
test_invalid_secret (Fixture *f, gconstpointer data)
{
  GtTestHttp *h;
  g_autofree char *url = NULL;
  GtTestProc *server, *bad, *good;
  guint16 port;
  guint from;

  GT_TEST_REQUIRE_GT ();
  h = gt_test_http_start ("alice-svc", 0, NULL);
  url = local_url (h);
  server = start_server (f, "server", &port, NULL, "--id", "alice", "--secret", SECRET_ALICE,
                         "--id", "bob", "--secret", SECRET_BOB, "--reconnectTimes", "1000", NULL);
  bad = start_client (f, "alice-wrong", port, "alice", SECRET_WRONG, "--local", url, "--hostPrefix",
                      "web", NULL);
  expect_refusal (bad, server, "alice", 1, "invalid id or secret");
  /* another user's secret is wrong too */
  expect_handshake (port, "127.0.0.1", "alice", SECRET_BOB, "web", 1, "invalid id or secret");

  good = start_client (f, "alice", port, "alice", SECRET_ALICE, "--local", url, "--hostPrefix",
                       "web", NULL);
  wait_started (good);
  expect_whoami (port, "web.example.com", "alice-svc");
  /* The wrong secret stays wrong while the right one is connected; the good tunnels live on. */
  from = gt_test_proc_line_count (bad);
  {
    g_autofree char *l = gt_test_proc_expect_line (
        bad, "server refused: invalid id or secret \\(code 1\\)", &from, GT_TEST_WAIT_MS);
  }
  expect_still_refused (bad);
  expect_whoami (port, "web.example.com", "alice-svc");
  g_assert_cmpuint (gt_test_proc_count_matches (server, "tunnel closed: client=alice"), ==, 0);
}

/* 3. Users from the config, the users file and the command line: CLI > file > config. */

static void
test_precedence (Fixture *f, gconstpointer data)
{
  g_autofree char *users = NULL, *config = NULL;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  users = gt_test_write_file ("users.yaml",
                      "alice:\n"
                      "  secret: " SECRET_ALICE_FILE "\n"
                      "carol:\n"
                      "  secret: " SECRET_CAROL_FILE "\n");
  config = gt_test_write_file ("server.yaml",
                       "type: server\n"
                       "users:\n"
                       "  alice:\n"
                       "    secret: " SECRET_ALICE "\n"
                       "  bob:\n"
                       "    secret: " SECRET_BOB "\n"
                       "options:\n"
                       "  users: users.yaml\n"
                       "  reconnectTimes: 1000\n");
  start_server (f, "server", &port, NULL, "-c", config, "--id", "carol", "--secret",
                SECRET_CAROL_CLI, NULL);
  /* alice: the file's entry replaces the config's */
  expect_handshake (port, "127.0.0.1", "alice", SECRET_ALICE, "alice", 1, "invalid id or secret");
  expect_handshake (port, "127.0.0.1", "alice", SECRET_ALICE_FILE, "alice", 0, NULL);
  /* bob: only in the config */
  expect_handshake (port, "127.0.0.1", "bob", SECRET_BOB, "bob", 0, NULL);
  /* carol: the command line replaces the file's entry */
  expect_handshake (port, "127.0.0.1", "carol", SECRET_CAROL_FILE, "carol", 1,
                    "invalid id or secret");
  expect_handshake (port, "127.0.0.1", "carol", SECRET_CAROL_CLI, "carol", 0, NULL);
  /* nobody else */
  expect_handshake (port, "127.0.0.1", "dave", SECRET_DAVE, "dave", 1, "invalid id or secret");
}

/* 4. No users and no auth API: any id is accepted (with a warning); the first secret of an id
 * wins while that client is connected. */

static void
test_allow_any (Fixture *f, gconstpointer data)
{
  GtTestHttp *h1, *h2;
  g_autofree char *url1 = NULL, *url2 = NULL, *warning = NULL;
  GtTestProc *server, *first, *second;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  h1 = gt_test_http_start ("first-svc", 0, NULL);
  h2 = gt_test_http_start ("second-svc", 0, NULL);
  url1 = local_url (h1);
  url2 = local_url (h2);
  server = start_server (f, "server", &port, NULL, "--reconnectTimes", "1000", NULL);
  warning = gt_test_proc_expect_line (server, "WARN.*any client id is accepted", NULL, 5000);

  first = start_client (f, "first", port, "anyone", SECRET_ANY1, "--local", url1, "--hostPrefix",
                        "any", NULL);
  wait_started (first);
  expect_whoami (port, "any.example.com", "first-svc");

  second = start_client (f, "second", port, "anyone", SECRET_ANY2, "--local", url2, "--hostPrefix",
                         "any", NULL);
  expect_refusal (second, server, "anyone", 1, "invalid id or secret");
  expect_whoami (port, "any.example.com", "first-svc");
  expect_still_refused (second);

  /* Another id with any secret is welcome. */
  expect_handshake (port, "127.0.0.1", "someone-else", SECRET_DAVE, "else", 0, NULL);

  /* Once the first client is gone its secret is forgotten: the second one gets in. */
  gt_test_proc_stop_cleanly (first);
  wait_started (second);
  expect_whoami (port, "any.example.com", "second-svc");
}

/* 5. allowAnyClient with users: users keep their secrets, unknown ids are accepted. */

static void
test_allow_any_with_users (Fixture *f, gconstpointer data)
{
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  start_server (f, "server", &port, NULL, "--id", "alice", "--secret", SECRET_ALICE,
                "--allowAnyClient", "--reconnectTimes", "1000", NULL);
  expect_handshake (port, "127.0.0.1", "alice", SECRET_WRONG, "alice", 1, "invalid id or secret");
  expect_handshake (port, "127.0.0.1", "alice", SECRET_ALICE, "alice", 0, NULL);
  expect_handshake (port, "127.0.0.1", "stranger", SECRET_ANY1, "stranger", 0, NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* Load: threads doing echo requests through the relay until a deadline. */

typedef struct
{
  guint16 port;
  const char *host;
  const char *host2;
  gint64 until;
  guint index;
  guint ok;
  char *error; /* first failure */
} Load;

static gpointer
load_thread (gpointer data)
{
  Load *l = data;

  for (guint i = 0; g_get_monotonic_time () < l->until; i++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GtTestHttpResponse) r = NULL;
      gsize n = 1 + ((l->index * 7919 + i * 104729) % (200 * 1024));
      const guint8 *body = gt_test_pattern () + (i * 13 + l->index) % 1000;
      const char *host = (i % 2 == 0 || l->host2 == NULL) ? l->host : l->host2;

      r = gt_test_http_request (l->port, "POST", "/echo", host, body, n, &error);
      if (r == NULL)
        l->error = g_strdup_printf ("request %u to %s: %s", i, host, error->message);
      else if (r->status != 200)
        l->error = g_strdup_printf ("request %u to %s: status %u", i, host, r->status);
      else if (r->body->len != n || memcmp (r->body->data, body, n) != 0)
        l->error
            = g_strdup_printf ("request %u to %s: wrong echo (%u of %" G_GSIZE_FORMAT " bytes)", i,
                               host, r->body->len, n);
      if (l->error != NULL)
        break;
      l->ok++;
    }
  return NULL;
}

static void
run_load (guint16 port, const char *host, const char *host2, guint n_threads, guint ms)
{
  g_autofree Load *loads = g_new0 (Load, n_threads);
  g_autofree GThread **threads = g_new0 (GThread *, n_threads);
  guint total = 0;

  for (guint i = 0; i < n_threads; i++)
    {
      loads[i].port = port;
      loads[i].host = host;
      loads[i].host2 = host2;
      loads[i].index = i;
      loads[i].until = gt_test_deadline_in (ms);
      threads[i] = g_thread_new ("load", load_thread, &loads[i]);
    }
  for (guint i = 0; i < n_threads; i++)
    g_thread_join (threads[i]);
  for (guint i = 0; i < n_threads; i++)
    {
      if (loads[i].error != NULL)
        gt_test_fail ("load thread %u after %u good requests: %s", i, loads[i].ok, loads[i].error);
      total += loads[i].ok;
    }
  g_test_message ("load: %u requests in %u ms", total, ms);
  g_assert_cmpuint (total, >=, n_threads);
}

/* 6. connections: extra tunnels are refused (global and per-user limit) while the accepted ones
 * carry traffic undisturbed. */

static void
test_connections (Fixture *f, gconstpointer data)
{
  GtTestHttp *ha, *hb;
  g_autofree char *url_a = NULL, *url_b = NULL, *config = NULL, *l = NULL;
  GtTestProc *server, *alice, *bob;
  guint16 port;
  guint from_alice, from_bob;

  GT_TEST_REQUIRE_GT ();
  ha = gt_test_http_start ("alice-svc", 0, NULL);
  hb = gt_test_http_start ("bob-svc", 0, NULL);
  url_a = local_url (ha);
  url_b = local_url (hb);
  config = gt_test_write_file ("server.yaml",
                       "users:\n"
                       "  alice:\n"
                       "    secret: " SECRET_ALICE "\n"
                       "  bob:\n"
                       "    secret: " SECRET_BOB "\n"
                       "    connections: 1\n"
                       "options:\n"
                       "  connections: 2\n");
  server = start_server (f, "server", &port, NULL, "-c", config, NULL);
  alice = start_client (f, "alice", port, "alice", SECRET_ALICE, "--remoteConnections", "4",
                        "--remoteIdleConnections", "4", "--local", url_a, "--hostPrefix", "web",
                        NULL);
  bob = start_client (f, "bob", port, "bob", SECRET_BOB, "--remoteConnections", "3",
                      "--remoteIdleConnections", "3", "--local", url_b, "--hostPrefix", "bobweb",
                      NULL);
  l = gt_test_proc_expect_line (server,
                        "tunnel accepted: client=alice remote=127\\.0\\.0\\.1:[0-9]+ tunnels=2",
                        NULL, GT_TEST_WAIT_MS);
  expect_refusal (alice, server, "alice", 3, "client alice already has 2 tunnels (limit 2)");
  expect_refusal (bob, server, "bob", 3, "client bob already has 1 tunnels (limit 1)");
  expect_whoami (port, "web.example.com", "alice-svc");
  expect_whoami (port, "bobweb.example.com", "bob-svc");

  /* Traffic on both users while the refused tunnels keep retrying. */
  from_alice = gt_test_proc_line_count (alice);
  from_bob = gt_test_proc_line_count (bob);
  run_load (port, "web.example.com", "bobweb.example.com", 6, 7000);
  if (count_lines_since (alice, from_alice, "server refused: client alice already has 2 tunnels")
      == 0)
    gt_test_fail ("alice's extra tunnels were not retried during the load");
  if (count_lines_since (bob, from_bob, "server refused: client bob already has 1 tunnels") == 0)
    gt_test_fail ("bob's extra tunnels were not retried during the load");

  /* The accepted tunnels were never replaced or closed, and no more were accepted. */
  g_assert_cmpuint (gt_test_proc_count_matches (server, "tunnel accepted: client=alice "), ==, 2);
  g_assert_cmpuint (gt_test_proc_count_matches (server, "tunnel accepted: client=bob "), ==, 1);
  g_assert_cmpuint (gt_test_proc_count_matches (server, "tunnel closed"), ==, 0);
  g_assert_cmpuint (gt_test_proc_count_matches (alice, "tunnel started"), ==, 2);
  g_assert_cmpuint (gt_test_proc_count_matches (bob, "tunnel started"), ==, 1);
  g_assert_cmpuint (gt_test_proc_count_matches (alice, "tunnels=[3-9]"), ==, 0);
  g_assert_cmpuint (gt_test_proc_count_matches (bob, "tunnels=[2-9]"), ==, 0);
}

/* 7. Host rules: number, regex and withID, global and per user; maxHandShakeOptions. */

static GtTestProc *
refused_client (Fixture *f, GtTestProc *server, guint16 port, const char *id, const char *secret,
                guint code, const char *message, ...)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autofree char *name = g_strdup_printf ("%s-refused-%u", id, gt_test_procs ()->len);
  va_list ap;
  const char *a;
  GtTestProc *p;

  gt_test_args_addv (args, "client", "--id", id, "--secret", secret, "--reconnectDelay", "200ms",
             "--remoteConnections", "1", "--remote", NULL);
  gt_test_args_add (args, "tcp://127.0.0.1:%u", port);
  va_start (ap, message);
  while ((a = va_arg (ap, const char *)) != NULL)
    g_ptr_array_add (args, g_strdup (a));
  va_end (ap);
  p = gt_test_spawn_gt (name, args);
  expect_refusal (p, server, id, code, message);
  expect_still_refused (p);
  gt_test_proc_stop_cleanly (p);
  return p;
}

static void
test_host_rules (Fixture *f, gconstpointer data)
{
  GtTestHttp *ha, *hb, *hc, *he;
  g_autofree char *ua = NULL, *ub = NULL, *uc = NULL, *ue = NULL, *config = NULL;
  GtTestProc *server, *alice, *bob, *carol, *eve;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  ha = gt_test_http_start ("alice-svc", 0, NULL);
  hb = gt_test_http_start ("bob-svc", 0, NULL);
  hc = gt_test_http_start ("carol-svc", 0, NULL);
  he = gt_test_http_start ("eve-svc", 0, NULL);
  ua = local_url (ha);
  ub = local_url (hb);
  uc = local_url (hc);
  ue = local_url (he);
  config = gt_test_write_file ("server.yaml",
                       "users:\n"
                       "  alice:\n"
                       "    secret: " SECRET_ALICE "\n"
                       "  bob:\n"
                       "    secret: " SECRET_BOB "\n"
                       "    host:\n"
                       "      number: 2\n"
                       "      regex: ['^b-[a-z]+$']\n"
                       "  carol:\n"
                       "    secret: " SECRET_CAROL "\n"
                       "    host:\n"
                       "      number: 2\n"
                       "      withID: true\n"
                       "  eve9:\n"
                       "    secret: " SECRET_EVE "\n"
                       "host:\n"
                       "  number: 1\n"
                       "  regex: ['^[a-z]+$']\n"
                       "options:\n"
                       "  maxHandShakeOptions: 3\n"
                       "  reconnectTimes: 1000\n");
  server = start_server (f, "server", &port, NULL, "-c", config, NULL);

  /* alice follows the global rules: one prefix, lower-case letters only */
  refused_client (f, server, port, "alice", SECRET_ALICE, 4, "more than 1 host prefixes", "--local",
                  ua, "--hostPrefix", "web", "--local", ua, "--hostPrefix", "api", NULL);
  refused_client (f, server, port, "alice", SECRET_ALICE, 6,
                  "host prefix 'web1' does not match the allowed patterns", "--local", ua,
                  "--hostPrefix", "web1", NULL);
  refused_client (f, server, port, "alice", SECRET_ALICE, 8, "4 services exceed the limit of 3",
                  "--local", ua, "--hostPrefix", "web", "--local", ua, "--hostPrefix", "a",
                  "--local", ua, "--hostPrefix", "b", "--local", ua, "--hostPrefix", "c", NULL);
  alice = start_client (f, "alice", port, "alice", SECRET_ALICE, "--local", ua, "--hostPrefix",
                        "web", NULL);
  wait_started (alice);
  expect_whoami (port, "web.example.com", "alice-svc");

  /* bob: two prefixes, but only b-*; the global regex no longer applies to him */
  refused_client (f, server, port, "bob", SECRET_BOB, 6,
                  "host prefix 'bobweb' does not match the allowed patterns", "--local", ub,
                  "--hostPrefix", "bobweb", NULL);
  refused_client (f, server, port, "bob", SECRET_BOB, 4, "more than 2 host prefixes", "--local", ub,
                  "--hostPrefix", "b-one", "--local", ub, "--hostPrefix", "b-two", "--local", ub,
                  "--hostPrefix", "b-three", NULL);
  bob = start_client (f, "bob", port, "bob", SECRET_BOB, "--local", ub, "--hostPrefix", "b-one",
                      "--local", ub, "--hostPrefix", "b-two", NULL);
  wait_started (bob);
  expect_whoami (port, "b-one.example.com", "bob-svc");
  expect_whoami (port, "b-two.example.com", "bob-svc");

  /* carol: withID, so her 'web' is carol-web and does not collide with alice's web */
  carol = start_client (f, "carol", port, "carol", SECRET_CAROL, "--local", uc, "--hostPrefix",
                        "web", "--local", uc, "--hostPrefix", "blog", NULL);
  wait_started (carol);
  expect_whoami (port, "carol-web.example.com", "carol-svc");
  expect_whoami (port, "carol-blog.example.com", "carol-svc");
  expect_whoami (port, "web.example.com", "alice-svc");
  expect_404 (port, "blog.example.com");

  /* eve9: the id itself is always a valid prefix, even when the regex would refuse it */
  eve = start_client (f, "eve9", port, "eve9", SECRET_EVE, "--local", ue, NULL);
  wait_started (eve);
  expect_whoami (port, "eve9.example.com", "eve-svc");
}

/* 8. Global withID from the command line, switched off for one user in the file. */

static void
test_host_global_with_id (Fixture *f, gconstpointer data)
{
  GtTestHttp *hd, *hb;
  g_autofree char *ud = NULL, *ub = NULL, *config = NULL;
  GtTestProc *dave, *bob;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  hd = gt_test_http_start ("dave-svc", 0, NULL);
  hb = gt_test_http_start ("bob-svc", 0, NULL);
  ud = local_url (hd);
  ub = local_url (hb);
  config = gt_test_write_file ("server.yaml",
                       "users:\n"
                       "  dave:\n"
                       "    secret: " SECRET_DAVE "\n"
                       "  bob:\n"
                       "    secret: " SECRET_BOB "\n"
                       "    host:\n"
                       "      withID: false\n");
  start_server (f, "server", &port, NULL, "-c", config, "--hostWithID", NULL);
  dave = start_client (f, "dave", port, "dave", SECRET_DAVE, "--local", ud, "--hostPrefix", "web",
                       NULL);
  bob = start_client (f, "bob", port, "bob", SECRET_BOB, "--local", ub, "--hostPrefix", "web",
                      NULL);
  wait_started (dave);
  wait_started (bob);
  expect_whoami (port, "dave-web.example.com", "dave-svc");
  expect_whoami (port, "web.example.com", "bob-svc");
  expect_404 (port, "bob-web.example.com");
}

/* 9. TCP ports: tcpNumber, the global pool, a user's own pool. */

static guint
tcp_port_of (GtTestProc *client, guint service)
{
  g_autofree char *re = g_strdup_printf ("tcp port=([0-9]+) service=%u", service);
  g_autofree char *line = gt_test_proc_expect_line (client, re, NULL, GT_TEST_WAIT_MS);

  return gt_test_capture_uint (line, re);
}

/* Banner, then an echo of n bytes, through 127.0.0.1:port. */
static void
check_tcp_echo (guint16 port, gsize n)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestConn) c = gt_test_conn_connect (port, &error);
  g_autoptr (GByteArray) want = g_byte_array_new ();
  gint64 deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);

  if (c == NULL)
    gt_test_fail ("connect to tcp port %u: %s", port, error->message);
  g_byte_array_append (want, (const guint8 *)GT_TEST_TCP_BANNER, strlen (GT_TEST_TCP_BANNER));
  g_byte_array_append (want, gt_test_pattern (), n);
  if (!gt_test_conn_write_all (c, gt_test_pattern (), n, deadline, &error))
    gt_test_fail ("tcp port %u: %s", port, error->message);
  while (c->in->len < want->len)
    if (gt_test_conn_fill (c, deadline, &error) <= 0)
      gt_test_fail ("tcp port %u: %s after %u bytes", port, error ? error->message : "EOF",
                 c->in->len);
  gt_test_check_bytes ("tcp echo", c->in->data, c->in->len, want->data, want->len);
}

static void
test_tcp (Fixture *f, gconstpointer data)
{
  g_autofree char *config = NULL, *echo = NULL, *p_out = NULL, *p_g1 = NULL, *p_g2 = NULL;
  g_autofree char *p_b1 = NULL, *msg = NULL;
  GtTestProc *server, *alice, *carol, *bob;
  guint16 port, first, last, out;
  guint p;

  GT_TEST_REQUIRE_GT ();
  gt_test_tcp_echo_start ();
  echo = g_strdup_printf ("tcp://127.0.0.1:%u", gt_test_tcp_echo ()->port);
  gt_test_free_port_range (6, &first, &last);
  do
    out = gt_test_free_port ();
  while (out >= first && out <= last);
  config = g_strdup_printf ("tcp:\n"
                            "  - range: %u-%u\n"
                            "users:\n"
                            "  alice:\n"
                            "    secret: " SECRET_ALICE "\n"
                            "  carol:\n"
                            "    secret: " SECRET_CAROL "\n"
                            "  bob:\n"
                            "    secret: " SECRET_BOB "\n"
                            "    tcp:\n"
                            "      - range: %u-%u\n"
                            "    tcpNumber: 2\n"
                            "options:\n"
                            "  tcpNumber: 1\n"
                            "  reconnectTimes: 1000\n",
                            first, first + 2, first + 3, last);
  {
    g_autofree char *path = gt_test_write_file ("server.yaml", config);

    server = start_server (f, "server", &port, NULL, "-c", path, NULL);
  }
  p_out = g_strdup_printf ("%u", out);
  p_g1 = g_strdup_printf ("%u", first);
  p_g2 = g_strdup_printf ("%u", first + 1);
  p_b1 = g_strdup_printf ("%u", first + 3);

  /* alice: a port of the global pool */
  alice = start_client (f, "alice", port, "alice", SECRET_ALICE, "--local", echo, "--remoteTCPPort",
                        p_g1, NULL);
  wait_started (alice);
  g_assert_cmpuint (tcp_port_of (alice, 0), ==, first);
  check_tcp_echo (first, 1000);

  /* carol: global tcpNumber 1, only the global pool, and not a port in use */
  refused_client (f, server, port, "carol", SECRET_CAROL, 9, "2 tcp services exceed the limit of 1",
                  "--local", echo, "--remoteTCPRandom", "--local", echo, "--remoteTCPRandom", NULL);
  msg = g_strdup_printf ("port %u is not in the server's tcp range for this user", out);
  refused_client (f, server, port, "carol", SECRET_CAROL, 2, msg, "--local", echo,
                  "--remoteTCPPort", p_out, NULL);
  g_free (msg);
  msg = g_strdup_printf ("port %u is not in the server's tcp range for this user", first + 3);
  refused_client (f, server, port, "carol", SECRET_CAROL, 2, msg, "--local", echo,
                  "--remoteTCPPort", p_b1, NULL);
  g_free (msg);
  {
    GtTestProc *c
        = start_client (f, "carol-taken", port, "carol", SECRET_CAROL, "--remoteConnections", "1",
                        "--local", echo, "--remoteTCPPort", p_g1, NULL);
    g_autofree char *re = g_strdup_printf ("port %u is not available.*", first);

    expect_refusal_re (c, server, "carol", 2, re);
    expect_still_refused (c);
    gt_test_proc_stop_cleanly (c);
  }
  carol = start_client (f, "carol", port, "carol", SECRET_CAROL, "--local", echo,
                        "--remoteTCPRandom", NULL);
  wait_started (carol);
  p = tcp_port_of (carol, 0);
  if (p != first + 1u && p != first + 2u)
    gt_test_fail ("carol got port %u, want %u or %u (the free ports of the global pool)", p,
                  first + 1, first + 2);
  check_tcp_echo (p, 5000);

  /* bob: his own pool only, two ports */
  msg = g_strdup_printf ("port %u is not in the server's tcp range for this user", first + 1);
  refused_client (f, server, port, "bob", SECRET_BOB, 2, msg, "--local", echo, "--remoteTCPPort",
                  p_g2, NULL);
  refused_client (f, server, port, "bob", SECRET_BOB, 9, "3 tcp services exceed the limit of 2",
                  "--local", echo, "--remoteTCPRandom", "--local", echo, "--remoteTCPRandom",
                  "--local", echo, "--remoteTCPRandom", NULL);
  bob = start_client (f, "bob", port, "bob", SECRET_BOB, "--local", echo, "--remoteTCPRandom",
                      "--local", echo, "--remoteTCPPort", p_b1, NULL);
  wait_started (bob);
  p = tcp_port_of (bob, 0);
  if (p < first + 4u || p > last)
    gt_test_fail ("bob's random port %u is not in his free ports %u-%u", p, first + 4, last);
  g_assert_cmpuint (tcp_port_of (bob, 1), ==, first + 3);
  check_tcp_echo (p, 3000);
  check_tcp_echo (first + 3, 3000);
  /* alice's port still works */
  check_tcp_echo (first, 100);
}

/* 10. Host conflict: a second client cannot take a prefix that is in use. */

static void
test_host_conflict (Fixture *f, gconstpointer data)
{
  GtTestHttp *ha, *hb;
  g_autofree char *ua = NULL, *ub = NULL;
  GtTestProc *server, *alice, *bob;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  ha = gt_test_http_start ("alice-svc", 0, NULL);
  hb = gt_test_http_start ("bob-svc", 0, NULL);
  ua = local_url (ha);
  ub = local_url (hb);
  server = start_server (f, "server", &port, NULL, "--id", "alice", "--secret", SECRET_ALICE,
                         "--id", "bob", "--secret", SECRET_BOB, NULL);
  alice = start_client (f, "alice", port, "alice", SECRET_ALICE, "--local", ua, "--hostPrefix",
                        "shared", NULL);
  wait_started (alice);
  bob = start_client (f, "bob", port, "bob", SECRET_BOB, "--local", ub, "--hostPrefix", "shared",
                      NULL);
  expect_refusal (bob, server, "bob", 5,
                  "host conflict: host prefix 'shared' is used by another client");
  for (guint i = 0; i < 10; i++)
    expect_whoami (port, "shared.example.com", "alice-svc");
  expect_still_refused (bob);

  /* When alice leaves, bob (still retrying) gets the prefix. */
  gt_test_proc_stop_cleanly (alice);
  wait_started (bob);
  expect_whoami (port, "shared.example.com", "bob-svc");
}

/* ------------------------------------------------------------------------------------------ */
/* 11. Lockout: failed logins from one address block it for reconnectDuration; other addresses
 * are unaffected; the block ends by itself. */

#define LOCKOUT_MESSAGE_RE "too many failed logins from 127\\.0\\.0\\.1; try again in [0-9]+ s"

static void
test_lockout (Fixture *f, gconstpointer data)
{
  GtTestHttp *h;
  g_autofree char *url = NULL, *metrics = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GRegex) lockout_re = g_regex_new (LOCKOUT_MESSAGE_RE, 0, 0, NULL);
  GtTestProc *server, *client;
  guint16 port, api_port;
  gint64 blocked_at, started_at;

  GT_TEST_REQUIRE_GT ();
  h = gt_test_http_start ("alice-svc", 0, NULL);
  url = local_url (h);
  server = start_server (f, "server", &port, &api_port, "--id", "alice", "--secret", SECRET_ALICE,
                         "--reconnectTimes", "3", "--reconnectDuration", "3s", "--apiAddr",
                         "127.0.0.1:0", NULL);

  /* GT counts failures per address and blocks it once they exceed reconnectTimes (3). */
  for (guint i = 0; i < 4; i++)
    expect_handshake (port, "127.0.0.1", "alice", SECRET_WRONG, "alice", 1, "invalid id or secret");
  blocked_at = g_get_monotonic_time ();
  {
    /* now even the right secret is refused from 127.0.0.1 */
    g_autoptr (HandshakeReply) r
        = raw_handshake (port, "127.0.0.1", "alice", SECRET_ALICE, "alice", &error);

    g_assert_no_error (error);
    if (r->welcome || r->code != 1 || !g_regex_match (lockout_re, r->message, 0, NULL))
      gt_test_fail ("after 4 failed logins from 127.0.0.1: %s code %u '%s', want code 1 matching "
                 "/%s/",
                 r->welcome ? "WELCOME" : "ERROR", r->code, r->message, LOCKOUT_MESSAGE_RE);
  }
  /* other addresses are not blocked, and fail or succeed on their own merits */
  expect_handshake (port, "127.0.0.2", "alice", SECRET_WRONG, "alice", 1, "invalid id or secret");
  expect_handshake (port, "127.0.0.2", "alice", SECRET_ALICE, "alice", 0, NULL);

  metrics = api_metrics (api_port);
  g_assert_cmpfloat (metric (metrics, "gt_lockout_blocked_addresses", NULL), ==, 1);
  g_assert_cmpfloat (metric (metrics, "gt_handshake_failures_total", "user", "alice", "reason",
                             "invalid_auth", NULL),
                     ==, 5);

  /* The real client from 127.0.0.1 is refused with the lockout message and backs off... */
  client = start_client (f, "alice", port, "alice", SECRET_ALICE, "--remoteConnections", "1",
                         "--local", url, "--hostPrefix", "web", NULL);
  {
    guint from = 0;
    g_autofree char *l1 = gt_test_proc_expect_line (
        client, "server refused: " LOCKOUT_MESSAGE_RE " \\(code 1\\)$", &from, GT_TEST_WAIT_MS);
    g_autofree char *l2
        = gt_test_proc_expect_line (client, "retrying in [0-9]+ ms", &from, GT_TEST_WAIT_MS);
  }
  /* ...and gets in by itself once the 3 s are over. */
  wait_started (client);
  started_at = g_get_monotonic_time ();
  if (started_at - blocked_at < 2500 * 1000)
    gt_test_fail ("the client got in %.1f s after the lockout began, before reconnectDuration 3s",
               (started_at - blocked_at) / 1e6);
  expect_whoami (port, "web.example.com", "alice-svc");
  g_free (metrics);
  metrics = api_metrics (api_port);
  g_assert_cmpfloat (metric (metrics, "gt_lockout_blocked_addresses", NULL), ==, 0);
  g_assert_cmpuint (
      gt_test_proc_count_matches (server, "tunnel from 127\\.0\\.0\\.1:[0-9]+ refused"), >=, 5);
  /* Like every refusal, the lockout names the client and the address in the server log. */
  {
    g_autofree char *l = gt_test_proc_expect_line (
        server, "tunnel from 127\\.0\\.0\\.1:[0-9]+ refused: client=alice: " LOCKOUT_MESSAGE_RE "$",
        NULL, 1000);
  }
}

/* 12. authAPI: allow (with the allowed prefixes), deny, timeout, garbage and non-200; the server
 * serves others while the API is slow. */

static void
check_auth_request (AuthApi *a, const char *id, const char *secret, const char *const *tokens)
{
  gboolean found = FALSE;

  g_mutex_lock (gt_test_lock ());
  for (guint i = 0; i < a->requests->len && !found; i++)
    {
      AuthRequest *r = a->requests->pdata[i];

      if (g_strcmp0 (r->id, id) != 0)
        continue;
      found = TRUE;
      g_assert_cmpstr (r->method, ==, "POST");
      if (r->content_type == NULL || !g_str_has_prefix (r->content_type, "application/json"))
        gt_test_fail ("auth request Content-Type '%s'", r->content_type);
      g_assert_cmpstr (r->secret, ==, secret);
      for (guint j = 0; tokens[j] != NULL; j++)
        {
          gboolean has = FALSE;

          for (guint k = 0; k < r->tokens->len; k++)
            has = has || strcmp (r->tokens->pdata[k], tokens[j]) == 0;
          if (!has)
            gt_test_fail ("auth request for %s lacks appletToken '%s'", id, tokens[j]);
        }
    }
  g_mutex_unlock (gt_test_lock ());
  if (!found)
    gt_test_fail ("the auth API was never asked about %s", id);
}

static void
test_auth_api (Fixture *f, gconstpointer data)
{
  GtTestHttp *h, *hb;
  AuthApi *a;
  g_autofree char *url = NULL, *url_b = NULL, *auth_url = NULL, *l = NULL;
  GtTestProc *server, *slow, *alice, *bob, *denied, *garbage, *broken;
  guint16 port;
  gint64 asked_at, refused_at;
  static const char *const alice_tokens[] = { "web", "other", NULL };

  GT_TEST_REQUIRE_GT ();
  h = gt_test_http_start ("alice-svc", 0, NULL);
  hb = gt_test_http_start ("bob-svc", 0, NULL);
  url = local_url (h);
  url_b = local_url (hb);
  a = auth_api_start (f);
  auth_url = g_strdup_printf ("http://127.0.0.1:%u/auth", a->port);
  server = start_server (f, "server", &port, NULL, "--authAPI", auth_url, "--timeout", "6s",
                         "--reconnectTimes", "1000", NULL);
  g_assert_cmpuint (gt_test_proc_count_matches (server, "any client id is accepted"), ==, 0);

  /* allowed: the prefixes the API returned plus the id itself; the others are dropped. Pings
   * every 2 s keep the tunnel within the server's 6 s timeout. */
  alice = start_client (f, "alice", port, "alice", SECRET_ALICE, "--remoteConnections", "1",
                        "--remoteTimeout", "4s", "--local", url, "--hostPrefix", "web", "--local",
                        url, "--hostPrefix", "other", "--local", url, NULL);
  wait_started (alice);
  l = gt_test_proc_expect_line (server,
                        "client alice: host prefix 'other' is not allowed by the auth API; "
                        "ignored",
                        NULL, 5000);
  expect_whoami (port, "web.example.com", "alice-svc");
  expect_whoami (port, "alice.example.com", "alice-svc");
  expect_404 (port, "other.example.com");
  check_auth_request (a, "alice", SECRET_ALICE, alice_tokens);

  /* result false: code 1; garbage or a 500: code 15 */
  denied = start_client (f, "denied", port, "denied", SECRET_EVE, "--remoteConnections", "1",
                         "--local", url, NULL);
  expect_refusal (denied, server, "denied", 1, "the auth API refused this id and secret");
  garbage = start_client (f, "garbage", port, "garbage", SECRET_CAROL, "--remoteConnections", "1",
                          "--local", url, NULL);
  expect_refusal_re (garbage, server, "garbage", 15, "the auth API failed: .+");
  broken = start_client (f, "broken", port, "broken", SECRET_ANY1, "--remoteConnections", "1",
                         "--local", url, NULL);
  expect_refusal_re (broken, server, "broken", 15, "the auth API failed: .+");
  expect_still_refused (denied);
  expect_still_refused (garbage);
  expect_still_refused (broken);
  expect_404 (port, "denied.example.com");
  expect_404 (port, "broken.example.com");
  expect_whoami (port, "web.example.com", "alice-svc");

  /* A hanging API: the handshake waits (the client's own handshake timeout, remoteTimeout, is
   * longer than the server's 6 s)... */
  slow = start_client (f, "slow", port, "slow", SECRET_DAVE, "--remoteConnections", "1",
                       "--remoteTimeout", "15s", "--local", url, "--hostPrefix", "slowweb", NULL);
  asked_at = auth_api_wait_request (a, "slow", GT_TEST_WAIT_MS);
  if (asked_at == 0)
    gt_test_fail ("the auth API was not asked about 'slow'");
  /* ...while another client is served. */
  bob = start_client (f, "bob", port, "bob", SECRET_BOB, "--remoteConnections", "1",
                      "--remoteTimeout", "4s", "--local", url_b, NULL);
  wait_started (bob);
  if (gt_test_proc_count_matches (slow, "server refused|failed") != 0)
    gt_test_fail ("bob was only served after the slow auth request ended");
  expect_whoami (port, "bob.example.com", "bob-svc");

  /* The hanging request times out after `timeout` (6 s): code 15. */
  expect_refusal_re (slow, server, "slow", 15, "the auth API failed: .+");
  refused_at = g_get_monotonic_time ();
  if (refused_at - asked_at < 5000 * 1000)
    gt_test_fail ("'slow' was refused %.1f s after the auth request, before the 6 s timeout",
               (refused_at - asked_at) / 1e6);
  expect_still_refused (slow);
  expect_404 (port, "slowweb.example.com");
  /* the others are still fine */
  expect_whoami (port, "web.example.com", "alice-svc");
  expect_whoami (port, "bob.example.com", "bob-svc");
}

/* 13. speed: bytes per second per client, in both directions, within ±15 % over ≥ 4 s. */

#define SPEED 200000
#define SPEED_BYTES 1000000

static double
timed_download (guint16 port, const char *host, gsize n)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestConn) c = gt_test_conn_connect (port, &error);
  g_autoptr (GtTestHttpResponse) r = NULL;
  g_autofree char *path = g_strdup_printf ("/bytes?n=%" G_GSIZE_FORMAT, n);
  gint64 t0;

  g_assert_no_error (error);
  t0 = g_get_monotonic_time ();
  r = gt_test_conn_request (c, "GET", path, host, NULL, 0, 60000, &error);
  gt_test_expect_response (r, error, 200);
  gt_test_check_bytes ("download", r->body->data, r->body->len, gt_test_pattern (), n);
  return (g_get_monotonic_time () - t0) / 1e6;
}

static double
timed_upload (guint16 port, const char *host, gsize n)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GtTestConn) c = gt_test_conn_connect (port, &error);
  g_autoptr (GtTestHttpResponse) r = NULL;
  g_autofree char *want = g_strdup_printf ("%" G_GSIZE_FORMAT, n);
  gint64 t0;

  g_assert_no_error (error);
  t0 = g_get_monotonic_time ();
  r = gt_test_conn_request (c, "POST", "/sink", host, gt_test_pattern (), n, 60000, &error);
  gt_test_expect_response (r, error, 200);
  gt_test_check_bytes ("upload size", r->body->data, r->body->len, (const guint8 *)want,
                       strlen (want));
  return (g_get_monotonic_time () - t0) / 1e6;
}

static void
check_rate (const char *what, double seconds, gsize bytes)
{
  double rate = bytes / seconds;

  g_test_message ("%s: %" G_GSIZE_FORMAT " bytes in %.2f s = %.0f B/s (limit %d)", what, bytes,
                  seconds, rate, SPEED);
  if (seconds < 4.0)
    gt_test_fail ("%s: %" G_GSIZE_FORMAT " bytes took only %.2f s at a limit of %d B/s", what,
                  bytes, seconds, SPEED);
  if (rate < SPEED * 0.85 || rate > SPEED * 1.15)
    gt_test_fail ("%s: %.0f B/s is not within 15 %% of the limit %d B/s (%.2f s)", what, rate,
                  SPEED, seconds);
}

static void
test_speed (Fixture *f, gconstpointer data)
{
  GtTestHttp *ha, *hb;
  g_autofree char *ua = NULL, *ub = NULL, *config = NULL;
  GtTestProc *alice, *bob;
  guint16 port;
  double t;

  GT_TEST_REQUIRE_GT ();
  ha = gt_test_http_start ("alice-svc", 0, NULL);
  hb = gt_test_http_start ("bob-svc", 0, NULL);
  ua = local_url (ha);
  ub = local_url (hb);
  config = gt_test_write_file ("server.yaml",
                       "users:\n"
                       "  alice:\n"
                       "    secret: " SECRET_ALICE "\n"
                       "    speed: 200000\n"
                       "  bob:\n"
                       "    secret: " SECRET_BOB "\n");
  start_server (f, "server", &port, NULL, "-c", config, NULL);
  alice = start_client (f, "alice", port, "alice", SECRET_ALICE, "--local", ua, NULL);
  bob = start_client (f, "bob", port, "bob", SECRET_BOB, "--local", ub, NULL);
  wait_started (alice);
  wait_started (bob);

  check_rate ("alice download", timed_download (port, "alice.example.com", SPEED_BYTES),
              SPEED_BYTES);
  check_rate ("alice upload", timed_upload (port, "alice.example.com", SPEED_BYTES), SPEED_BYTES);

  /* bob has no limit */
  t = timed_download (port, "bob.example.com", SPEED_BYTES);
  g_test_message ("bob download: %.2f s", t);
  if (t > 2.5)
    gt_test_fail ("bob (no speed limit) needed %.2f s for %d bytes", t, SPEED_BYTES);
  t = timed_upload (port, "bob.example.com", SPEED_BYTES);
  g_test_message ("bob upload: %.2f s", t);
  if (t > 2.5)
    gt_test_fail ("bob (no speed limit) needed %.2f s to upload %d bytes", t, SPEED_BYTES);
}

/* 14. /status: the self-test through the server's own listener. A lockout of 127.0.0.1 (where
 * the self-test client comes from) does not fail it; a success is cached for 15 s. */

static gint64
lock_out_loopback (guint16 port)
{
  g_autoptr (GRegex) lockout_re = g_regex_new (LOCKOUT_MESSAGE_RE, 0, 0, NULL);

  for (guint i = 0; i < 10; i++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (HandshakeReply) r
          = raw_handshake (port, "127.0.0.1", "alice", SECRET_WRONG, "alice", &error);

      g_assert_no_error (error);
      g_assert_false (r->welcome);
      if (g_regex_match (lockout_re, r->message, 0, NULL))
        return g_get_monotonic_time ();
    }
  gt_test_fail ("127.0.0.1 was not locked out after 10 failed logins");
  return 0;
}

static void
expect_status (guint16 api_port, guint want_status, const char *want_value, char **body_out)
{
  g_autoptr (GtTestHttpResponse) r = api_get (api_port, "/status", 60000);
  g_autoptr (JsonParser) parser = json_parser_new ();
  const char *ct = gt_test_http_response_header (r, "Content-Type");
  JsonObject *o;

  if (r->status != want_status)
    gt_test_fail ("GET /status: %u, want %u; body '%.*s'", r->status, want_status,
                  (int)r->body->len, (const char *)r->body->data);
  if (ct == NULL || !g_str_has_prefix (ct, "application/json"))
    gt_test_fail ("GET /status: Content-Type '%s'", ct ? ct : "(none)");
  o = parse_json_object ("GET /status", r, parser);
  g_assert_cmpstr (json_object_get_string_member_with_default (o, "status", "(none)"), ==,
                   want_value);
  if (want_status == 200)
    {
      const char *version = json_object_get_string_member_with_default (o, "version", "");

      if (*version == '\0')
        gt_test_fail ("GET /status: no version in '%.*s'", (int)r->body->len,
                   (const char *)r->body->data);
    }
  if (body_out != NULL)
    *body_out = g_strndup ((const char *)r->body->data, r->body->len);
}

static void
test_status (Fixture *f, gconstpointer data)
{
  g_autofree char *ok1 = NULL, *ok2 = NULL;
  GtTestProc *server;
  guint16 port, api_port;
  gint64 blocked_at, wait_us;

  GT_TEST_REQUIRE_GT ();
  server = start_server (f, "server", &port, &api_port, "--id", "alice", "--secret", SECRET_ALICE,
                         "--reconnectTimes", "2", "--reconnectDuration", "4s", "--apiAddr",
                         "127.0.0.1:0", NULL);
  /* ok: the self-test's ephemeral user is not held by its address's lockout... */
  blocked_at = lock_out_loopback (port);
  expect_status (api_port, 200, "ok", &ok1);
  wait_us = g_get_monotonic_time () - blocked_at;
  if (wait_us > 4000 * 1000)
    gt_test_fail ("/status took longer than the lockout; the test proves nothing");
  /* ...and its success does not lift the block of the others */
  expect_handshake (port, "127.0.0.1", "alice", SECRET_ALICE, "alice", 1, NULL);

  /* cached: locked out again, /status still answers the last success (within 15 s) */
  lock_out_loopback (port);
  expect_status (api_port, 200, "ok", &ok2);
  g_assert_cmpstr (ok1, ==, ok2);
  g_assert_false (gt_test_proc_has_exited (server));

  /* the self-test's temporary client does not stay connected */
  {
    g_autofree char *m = metrics_wait (api_port, 0, "gt_clients", NULL);
  }
}

/* 15. /metrics after known traffic: exact byte counts per user and per service. */

static void
test_metrics (Fixture *f, gconstpointer data)
{
  GtTestHttp *h;
  g_autofree char *url = NULL, *echo = NULL, *range = NULL, *tcp_port = NULL, *tcp_label = NULL;
  g_autofree char *text = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GByteArray) req = NULL;
  GtTestProc *server, *alice;
  guint16 port, api_port, first, last;
  gsize req_len, resp_len = 0, tcp_in = 1000, tcp_out = strlen (GT_TEST_TCP_BANNER) + 1000;

  GT_TEST_REQUIRE_GT ();
  h = gt_test_http_start ("alice-svc", 0, NULL);
  url = local_url (h);
  gt_test_tcp_echo_start ();
  echo = g_strdup_printf ("tcp://127.0.0.1:%u", gt_test_tcp_echo ()->port);
  gt_test_free_port_range (3, &first, &last);
  range = g_strdup_printf ("%u-%u", first, last);
  tcp_port = g_strdup_printf ("%u", first);
  tcp_label = g_strdup_printf ("tcp:%u", first);
  server = start_server (f, "server", &port, &api_port, "--id", "alice", "--secret", SECRET_ALICE,
                         "--id", "bob", "--secret", SECRET_BOB, "--connections", "1", "--tcpRange",
                         range, "--reconnectTimes", "1000", "--apiAddr", "127.0.0.1:0", NULL);

  /* before any client */
  text = api_metrics (api_port);
  g_assert_cmpfloat (metric (text, "gt_clients", NULL), ==, 0);
  g_assert_cmpfloat (metric (text, "gt_lockout_blocked_addresses", NULL), ==, 0);
  if (strstr (text, "# TYPE gt_user_bytes_total counter\n") == NULL
      || strstr (text, "# TYPE gt_clients gauge\n") == NULL)
    gt_test_fail ("metrics without the expected TYPE lines:\n%s", text);

  /* one tunnel accepted, the second refused by connections: 1 */
  alice = start_client (f, "alice", port, "alice", SECRET_ALICE, "--remoteConnections", "2",
                        "--local", url, "--hostPrefix", "web", "--local", echo, "--remoteTCPPort",
                        tcp_port, NULL);
  wait_started (alice);
  expect_refusal (alice, server, "alice", 3, "client alice already has 1 tunnels (limit 1)");
  /* one wrong secret of a user, one unknown id */
  expect_handshake (port, "127.0.0.1", "alice", SECRET_WRONG, "alice", 1, "invalid id or secret");
  expect_handshake (port, "127.0.0.1", "nobody", SECRET_WRONG, "nobody", 1, "invalid id or secret");

  /* An HTTP exchange whose sizes are known exactly: the request we send, the bytes we get. */
  req = gt_test_http_build_request ("GET", "/whoami", "web.example.com", NULL, 0,
                                    "Connection: close\r\n");
  req_len = req->len;
  {
    g_autoptr (GtTestConn) c = gt_test_conn_connect (port, &error);

    g_assert_no_error (error);
    g_assert_true (
        gt_test_conn_write_all (c, req->data, req->len, gt_test_deadline_in (5000), &error));
    if (!gt_test_conn_read_to_eof (c, FALSE, gt_test_deadline_in (GT_TEST_WAIT_MS), &error))
      gt_test_fail ("HTTP exchange: %s", error->message);
    resp_len = c->in->len;
    if (!g_str_has_prefix ((const char *)c->in->data, "HTTP/1.1 200")
        || memmem (c->in->data, c->in->len, "alice-svc", 9) == NULL)
      gt_test_fail ("unexpected response: '%.*s'", (int)c->in->len, (const char *)c->in->data);
  }
  /* A tcp exchange: banner, 1000 bytes echoed, then both sides close. */
  {
    g_autoptr (GtTestConn) c = gt_test_conn_connect (first, &error);
    gint64 deadline = gt_test_deadline_in (GT_TEST_WAIT_MS);

    g_assert_no_error (error);
    g_assert_true (gt_test_conn_write_all (c, gt_test_pattern (), tcp_in, deadline, &error));
    while (c->in->len < tcp_out)
      if (gt_test_conn_fill (c, deadline, &error) <= 0)
        gt_test_fail ("tcp exchange: %s after %u bytes", error ? error->message : "EOF",
                      c->in->len);
    shutdown (c->fd, SHUT_WR);
    if (!gt_test_conn_read_to_eof (c, FALSE, deadline, &error))
      gt_test_fail ("tcp exchange: no EOF: %s", error->message);
    g_assert_cmpuint (c->in->len, ==, tcp_out);
  }

  g_free (text);
  text = metrics_wait (api_port, 1, "gt_service_streams_total", "user", "alice", "service", "web",
                       NULL);
  g_free (text);
  text = metrics_wait (api_port, 1, "gt_service_streams_total", "user", "alice", "service",
                       tcp_label, NULL);
  g_test_message ("metrics:\n%s", text);
  g_assert_cmpfloat (metric (text, "gt_service_bytes_total", "user", "alice", "service", "web",
                             "direction", "in", NULL),
                     ==, req_len);
  g_assert_cmpfloat (metric (text, "gt_service_bytes_total", "user", "alice", "service", "web",
                             "direction", "out", NULL),
                     ==, resp_len);
  g_assert_cmpfloat (metric (text, "gt_service_bytes_total", "user", "alice", "service", tcp_label,
                             "direction", "in", NULL),
                     ==, tcp_in);
  g_assert_cmpfloat (metric (text, "gt_service_bytes_total", "user", "alice", "service", tcp_label,
                             "direction", "out", NULL),
                     ==, tcp_out);
  g_assert_cmpfloat (metric (text, "gt_user_bytes_total", "user", "alice", "direction", "in", NULL),
                     ==, req_len + tcp_in);
  g_assert_cmpfloat (
      metric (text, "gt_user_bytes_total", "user", "alice", "direction", "out", NULL), ==,
      resp_len + tcp_out);
  g_assert_cmpfloat (metric (text, "gt_user_streams_total", "user", "alice", NULL), ==, 2);
  g_assert_cmpfloat (metric (text, "gt_clients", NULL), ==, 1);
  g_assert_cmpfloat (metric (text, "gt_tunnels", "user", "alice", NULL), ==, 1);
  g_assert_cmpfloat (metric (text, "gt_streams", "user", "alice", NULL), ==, 0);
  g_assert_cmpfloat (
      metric (text, "gt_handshake_failures_total", "user", "alice", "reason", "invalid_auth", NULL),
      ==, 1);
  g_assert_cmpfloat (
      metric (text, "gt_handshake_failures_total", "user", "", "reason", "invalid_auth", NULL), ==,
      1);
  g_assert_cmpfloat (
      metric (text, "gt_limit_rejections_total", "user", "alice", "kind", "connections", NULL), >=,
      1);
  g_assert_cmpfloat (metric (text, "gt_lockout_blocked_addresses", NULL), ==, 0);
  g_assert_cmpfloat (metric (text, "gt_process_open_fds", NULL), >, 0);
  g_assert_cmpfloat (metric (text, "gt_process_resident_memory_bytes", NULL), >, 0);
  /* the unknown id is not a label */
  if (strstr (text, "\"nobody\"") != NULL)
    gt_test_fail ("the unknown id 'nobody' appears as a label:\n%s", text);
  g_assert_false (gt_test_proc_has_exited (alice));
}

/* ------------------------------------------------------------------------------------------ */

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, PATTERN_SIZE);

#define ADD(path, func)                                                                            \
  g_test_add ("/gt/integration/users/" path, Fixture, NULL, fixture_setup, func, fixture_teardown)
  ADD ("auth/invalid-id", test_invalid_id);
  ADD ("auth/invalid-secret", test_invalid_secret);
  ADD ("auth/precedence", test_precedence);
  ADD ("auth/allow-any", test_allow_any);
  ADD ("auth/allow-any-with-users", test_allow_any_with_users);
  ADD ("limits/connections", test_connections);
  ADD ("limits/host", test_host_rules);
  ADD ("limits/host-global-with-id", test_host_global_with_id);
  ADD ("limits/tcp", test_tcp);
  ADD ("limits/speed", test_speed);
  ADD ("host-conflict", test_host_conflict);
  ADD ("lockout", test_lockout);
  ADD ("auth-api", test_auth_api);
  ADD ("api/status", test_status);
  ADD ("api/metrics", test_metrics);
#undef ADD

  return gt_test_run ();
}
