/* gt-http-fetch.c: one HTTP request whose answer is bounded in size and in time (the auth API and
 * the remote API clients). libsoup's own timeouts cover idle sockets, not a whole answer that
 * trickles in, so the bound here is a timer of ours that cancels the request. */
#include "config.h"

#include "gt-http-fetch.h"

G_DEFINE_QUARK (gt-http-fetch-error-quark, gt_http_fetch_error)

#define READ_CHUNK 16384

typedef struct
{
  SoupSession *session;
  SoupMessage *msg;
  GCancellable *cancellable; /* ours: fires on timeout or when the caller cancels */
  GCancellable *caller;
  gulong caller_handler;
  GSource *timer;
  guint timeout_ms;
  gboolean timed_out;
  gsize max_body;
  char *what;
  GInputStream *stream;
  GByteArray *body;
} Fetch;

static void
fetch_free (Fetch *f)
{
  if (f->timer != NULL)
    {
      g_source_destroy (f->timer);
      g_source_unref (f->timer);
    }
  if (f->caller != NULL)
    {
      g_cancellable_disconnect (f->caller, f->caller_handler);
      g_object_unref (f->caller);
    }
  g_clear_object (&f->stream);
  g_clear_object (&f->msg);
  g_clear_object (&f->session);
  g_free (f->what);
  g_clear_object (&f->cancellable);
  g_clear_pointer (&f->body, g_byte_array_unref);
  g_free (f);
}

static void
caller_cancelled_cb (GCancellable *caller, gpointer user_data)
{
  g_cancellable_cancel (G_CANCELLABLE (user_data));
}

static gboolean
timeout_cb (gpointer user_data)
{
  Fetch *f = g_task_get_task_data (G_TASK (user_data));

  f->timed_out = TRUE;
  g_cancellable_cancel (f->cancellable);
  return G_SOURCE_REMOVE;
}

/* Ends the fetch with an error; a cancellation caused by our timer is reported as the timeout.
 * Takes the task reference. */
static void
finish_error (GTask *task, GError *error)
{
  Fetch *f = g_task_get_task_data (task);

  if (f->timer != NULL)
    g_source_destroy (f->timer);
  if (f->timed_out)
    {
      g_task_return_new_error (task, GT_HTTP_FETCH_ERROR, GT_HTTP_FETCH_ERROR_TIMEOUT,
                               "%s did not answer within %u ms", f->what, f->timeout_ms);
      g_error_free (error);
    }
  else
    {
      /* Transport errors keep their domain and code. */
      if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        g_prefix_error (&error, "%s request failed: ", f->what);
      g_task_return_error (task, error);
    }
  g_object_unref (task);
}

static GError *
too_large (Fetch *f)
{
  if (f->max_body % 1024 == 0)
    return g_error_new (GT_HTTP_FETCH_ERROR, GT_HTTP_FETCH_ERROR_TOO_LARGE,
                        "bad answer from %s: body larger than %" G_GSIZE_FORMAT " KiB", f->what,
                        f->max_body / 1024);
  return g_error_new (GT_HTTP_FETCH_ERROR, GT_HTTP_FETCH_ERROR_TOO_LARGE,
                      "bad answer from %s: body larger than %" G_GSIZE_FORMAT " bytes", f->what,
                      f->max_body);
}

static void
read_cb (GObject *source, GAsyncResult *res, gpointer user_data)
{
  GTask *task = user_data;
  Fetch *f = g_task_get_task_data (task);
  g_autoptr (GBytes) bytes = NULL;
  GError *error = NULL;

  bytes = g_input_stream_read_bytes_finish (G_INPUT_STREAM (source), res, &error);
  if (bytes == NULL)
    {
      finish_error (task, error);
      return;
    }
  if (g_bytes_get_size (bytes) > 0)
    {
      g_byte_array_append (f->body, g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes));
      if (f->body->len > f->max_body)
        {
          finish_error (task, too_large (f));
          return;
        }
      g_input_stream_read_bytes_async (f->stream, READ_CHUNK, G_PRIORITY_DEFAULT, f->cancellable,
                                       read_cb, task);
      return;
    }
  if (f->timer != NULL)
    g_source_destroy (f->timer);
  g_task_return_pointer (task, g_byte_array_free_to_bytes (g_steal_pointer (&f->body)),
                         (GDestroyNotify)g_bytes_unref);
  g_object_unref (task);
}

static void
send_cb (GObject *source, GAsyncResult *res, gpointer user_data)
{
  GTask *task = user_data;
  Fetch *f = g_task_get_task_data (task);
  GError *error = NULL;
  guint status;

  f->stream = soup_session_send_finish (SOUP_SESSION (source), res, &error);
  if (f->stream == NULL)
    {
      finish_error (task, error);
      return;
    }
  status = soup_message_get_status (f->msg);
  if (status != SOUP_STATUS_OK)
    {
      finish_error (task, g_error_new (GT_HTTP_FETCH_ERROR, GT_HTTP_FETCH_ERROR_STATUS,
                                       "%s answered HTTP %u", f->what, status));
      return;
    }
  /* A declared length over the bound is refused before reading any of it. */
  if (soup_message_headers_get_content_length (soup_message_get_response_headers (f->msg))
      > (goffset)f->max_body)
    {
      finish_error (task, too_large (f));
      return;
    }
  f->body = g_byte_array_new ();
  g_input_stream_read_bytes_async (f->stream, READ_CHUNK, G_PRIORITY_DEFAULT, f->cancellable,
                                   read_cb, task);
}

void
gt_http_fetch_async (SoupSession *session, SoupMessage *msg, const char *what, gsize max_body,
                     guint timeout_ms, GCancellable *cancellable, GAsyncReadyCallback callback,
                     gpointer user_data)
{
  GTask *task;
  Fetch *f;

  g_return_if_fail (SOUP_IS_SESSION (session));
  g_return_if_fail (SOUP_IS_MESSAGE (msg));
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, gt_http_fetch_async);
  /* Errors are mapped here (timeout vs cancel), not by GTask. */
  g_task_set_check_cancellable (task, FALSE);
  f = g_new0 (Fetch, 1);
  f->session = g_object_ref (session);
  f->msg = g_object_ref (msg);
  f->cancellable = g_cancellable_new ();
  f->timeout_ms = timeout_ms;
  f->max_body = max_body;
  f->what = g_strdup (what);
  g_task_set_task_data (task, f, (GDestroyNotify)fetch_free);

  if (cancellable != NULL)
    {
      f->caller = g_object_ref (cancellable);
      /* Runs at once if already cancelled: then the send fails with CANCELLED right away. */
      f->caller_handler = g_cancellable_connect (cancellable, G_CALLBACK (caller_cancelled_cb),
                                                 g_object_ref (f->cancellable), g_object_unref);
    }
  if (timeout_ms > 0)
    {
      f->timer = g_timeout_source_new (timeout_ms);
      g_task_attach_source (task, f->timer, timeout_cb);
    }
  soup_session_send_async (session, msg, G_PRIORITY_DEFAULT, f->cancellable, send_cb, task);
}

GBytes *
gt_http_fetch_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gt_http_fetch_async, NULL);

  return g_task_propagate_pointer (G_TASK (result), error);
}

GError *
gt_http_fetch_error_as (GError *error, GQuark domain, int timeout_code, int status_code,
                        int too_large_code)
{
  if (error->domain != GT_HTTP_FETCH_ERROR)
    return error;
  switch ((GtHttpFetchError)error->code)
    {
    case GT_HTTP_FETCH_ERROR_STATUS:
      error->code = status_code;
      break;
    case GT_HTTP_FETCH_ERROR_TIMEOUT:
      error->code = timeout_code;
      break;
    case GT_HTTP_FETCH_ERROR_TOO_LARGE:
    default:
      error->code = too_large_code;
      break;
    }
  error->domain = domain;
  return error;
}
