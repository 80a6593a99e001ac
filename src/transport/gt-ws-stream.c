/* gt-ws-stream.c: a gt tunnel (byte stream) carried in the binary messages of a WebSocket. */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>

#include "gt-certificate.h"
#include "gt-http-proxy.h"
#include "gt-ws-stream.h"

/* Received bytes wait in a queue until the tunnel reads them. With gt's pipe under the WebSocket,
 * libsoup stops reading the socket while IN_HIGH bytes are queued, so the queue stays below
 * IN_HIGH + one message; IN_MAX is only a safety net there. */
#define IN_HIGH (512 * 1024)
#define IN_MAX (1024 * 1024)
#define IN_MAX_UNTHROTTLED (4 * 1024 * 1024)
/* Sent bytes that libsoup has not yet handed to the connection; writes wait above this. */
#define OUT_HIGH (512 * 1024)
#define KEEPALIVE_SECONDS 15
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

typedef struct _GtWsPipe GtWsPipe;

/* State shared by the tunnel stream, its two streams, their sources and the pipe. */
typedef struct
{
  grefcount ref;
  SoupWebsocketConnection *ws;
  GtWsPipe *pipe; /* not owned (the WebSocket owns it); NULL when not made by gt */
  gboolean client;
  GQueue in_queue; /* GBytes */
  gsize in_offset; /* consumed bytes of the head message */
  gsize in_queued;
  gsize in_max;
  GError *error;
  gboolean eof;
  gboolean out_closed;
  gsize out_pending; /* frame bytes queued in libsoup, as far as the pipe has seen */
} WsShared;

struct _GtWsPipe
{
  GIOStream parent_instance;
  GIOStream *base;
  GInputStream *in;
  GOutputStream *out;
  WsShared *sh; /* not owned; cleared when the shared state goes away */
};

static void
ws_shared_unref (WsShared *sh)
{
  if (!g_ref_count_dec (&sh->ref))
    return;
  if (sh->pipe != NULL)
    sh->pipe->sh = NULL;
  g_signal_handlers_disconnect_by_data (sh->ws, sh);
  if (soup_websocket_connection_get_state (sh->ws) != SOUP_WEBSOCKET_STATE_CLOSED)
    {
      if (soup_websocket_connection_get_state (sh->ws) == SOUP_WEBSOCKET_STATE_OPEN)
        soup_websocket_connection_close (sh->ws, SOUP_WEBSOCKET_CLOSE_NORMAL, NULL);
      /* Keep the connection until the close handshake has finished (libsoup bounds it). */
      g_signal_connect (sh->ws, "closed", G_CALLBACK (g_object_unref), NULL);
    }
  else
    g_object_unref (sh->ws);
  g_queue_clear_full (&sh->in_queue, (GDestroyNotify) g_bytes_unref);
  g_clear_error (&sh->error);
  g_free (sh);
}

static WsShared *
ws_shared_ref (WsShared *sh)
{
  g_ref_count_inc (&sh->ref);
  return sh;
}

static gboolean
ws_in_throttled (WsShared *sh)
{
  return sh != NULL && sh->in_queued >= IN_HIGH;
}

static gboolean
ws_in_ready (gpointer data)
{
  WsShared *sh = data;

  return sh->in_queued > 0 || sh->error != NULL || sh->eof;
}

static gboolean
ws_out_ready (gpointer data)
{
  WsShared *sh = data;

  return sh->error != NULL || sh->out_closed
         || soup_websocket_connection_get_state (sh->ws) != SOUP_WEBSOCKET_STATE_OPEN
         || sh->pipe == NULL || sh->out_pending < OUT_HIGH;
}

static gsize
ws_frame_size (gsize payload, gboolean client)
{
  gsize header = payload < 126 ? 2 : payload < 65536 ? 4 : 10;

  return header + (client ? 4 : 0) + payload;
}

/* ------------------------------------------------------------------------------------------ */
/* A GSource that is ready while a predicate holds: every state change happens in dispatches of
 * the same main context, after which all sources are prepared again, so no wakeup is needed. */

typedef struct
{
  GSource source;
  GObject *stream;
  gpointer data;
  GDestroyNotify data_free;
  gboolean (*ready) (gpointer data);
} WsSource;

static gboolean
ws_source_prepare (GSource *source, gint *timeout)
{
  WsSource *ws = (WsSource *) source;

  *timeout = -1;
  return ws->ready (ws->data);
}

static gboolean
ws_source_check (GSource *source)
{
  WsSource *ws = (WsSource *) source;

  return ws->ready (ws->data);
}

static gboolean
ws_source_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  WsSource *ws = (WsSource *) source;
  GPollableSourceFunc func = (GPollableSourceFunc) (void (*) (void)) callback;

  if (func == NULL)
    return G_SOURCE_REMOVE;
  return func (ws->stream, user_data);
}

static void
ws_source_finalize (GSource *source)
{
  WsSource *ws = (WsSource *) source;

  g_clear_object (&ws->stream);
  if (ws->data_free != NULL)
    ws->data_free (ws->data);
}

static gboolean
ws_source_closure_callback (GObject *stream, gpointer data)
{
  GClosure *closure = data;
  GValue param = G_VALUE_INIT;
  GValue result_value = G_VALUE_INIT;
  gboolean result;

  g_value_init (&result_value, G_TYPE_BOOLEAN);
  g_value_init (&param, G_TYPE_OBJECT);
  g_value_set_object (&param, stream);
  g_closure_invoke (closure, &result_value, 1, &param, NULL);
  result = g_value_get_boolean (&result_value);
  g_value_unset (&result_value);
  g_value_unset (&param);
  return result;
}

static GSourceFuncs ws_source_funcs = {
  ws_source_prepare,
  ws_source_check,
  ws_source_dispatch,
  ws_source_finalize,
  (GSourceFunc) (void (*) (void)) ws_source_closure_callback,
  NULL,
};

static GSource *
ws_source_new (GObject *stream, gpointer data, GDestroyNotify data_free,
               gboolean (*ready) (gpointer), GCancellable *cancellable)
{
  GSource *source = g_source_new (&ws_source_funcs, sizeof (WsSource));
  WsSource *ws = (WsSource *) source;

  g_source_set_static_name (source, "GtWsStream");
  ws->stream = g_object_ref (stream);
  ws->data = data;
  ws->data_free = data_free;
  ws->ready = ready;
  if (cancellable != NULL)
    {
      GSource *cs = g_cancellable_source_new (cancellable);

      g_source_set_dummy_callback (cs);
      g_source_add_child_source (source, cs);
      g_source_unref (cs);
    }
  return source;
}

/* ------------------------------------------------------------------------------------------ */
/* The pipe: gt's layer between libsoup and the connection, which holds reading back while the
 * tunnel has enough queued and counts what libsoup has written. */

#define GT_TYPE_WS_PIPE (gt_ws_pipe_get_type ())
G_DECLARE_FINAL_TYPE (GtWsPipe, gt_ws_pipe, GT, WS_PIPE, GIOStream)
G_DEFINE_TYPE (GtWsPipe, gt_ws_pipe, G_TYPE_IO_STREAM)

#define GT_TYPE_WS_PIPE_INPUT (gt_ws_pipe_input_get_type ())
G_DECLARE_FINAL_TYPE (GtWsPipeInput, gt_ws_pipe_input, GT, WS_PIPE_INPUT, GInputStream)
struct _GtWsPipeInput
{
  GInputStream parent_instance;
  GtWsPipe *pipe; /* not owned: the pipe owns this stream */
  GPollableInputStream *base;
};

#define GT_TYPE_WS_PIPE_OUTPUT (gt_ws_pipe_output_get_type ())
G_DECLARE_FINAL_TYPE (GtWsPipeOutput, gt_ws_pipe_output, GT, WS_PIPE_OUTPUT, GOutputStream)
struct _GtWsPipeOutput
{
  GOutputStream parent_instance;
  GtWsPipe *pipe;
  GPollableOutputStream *base;
};

static void gt_ws_pipe_input_pollable_init (GPollableInputStreamInterface *iface);
static void gt_ws_pipe_output_pollable_init (GPollableOutputStreamInterface *iface);

G_DEFINE_TYPE_WITH_CODE (GtWsPipeInput, gt_ws_pipe_input, G_TYPE_INPUT_STREAM,
                         G_IMPLEMENT_INTERFACE (G_TYPE_POLLABLE_INPUT_STREAM,
                                                gt_ws_pipe_input_pollable_init))
G_DEFINE_TYPE_WITH_CODE (GtWsPipeOutput, gt_ws_pipe_output, G_TYPE_OUTPUT_STREAM,
                         G_IMPLEMENT_INTERFACE (G_TYPE_POLLABLE_OUTPUT_STREAM,
                                                gt_ws_pipe_output_pollable_init))

static void
pipe_account_written (GtWsPipe *pipe, gssize n)
{
  if (pipe->sh == NULL || n <= 0)
    return;
  /* Pings and pongs pass here too: clamp rather than go negative. */
  pipe->sh->out_pending = (gsize) n >= pipe->sh->out_pending ? 0 : pipe->sh->out_pending - n;
}

static gssize
pipe_input_read (GInputStream *stream, void *buffer, gsize count, GCancellable *cancellable,
                 GError **error)
{
  GtWsPipeInput *self = GT_WS_PIPE_INPUT (stream);

  return g_input_stream_read (G_INPUT_STREAM (self->base), buffer, count, cancellable, error);
}

static gboolean
pipe_input_close (GInputStream *stream, GCancellable *cancellable, GError **error)
{
  return TRUE; /* the pipe closes the base stream */
}

static gboolean
pipe_input_can_poll (GPollableInputStream *stream)
{
  return TRUE;
}

static gboolean
pipe_input_is_readable (GPollableInputStream *stream)
{
  GtWsPipeInput *self = GT_WS_PIPE_INPUT (stream);

  return !ws_in_throttled (self->pipe->sh) && g_pollable_input_stream_is_readable (self->base);
}

static gboolean
pipe_unthrottled (gpointer data)
{
  return !ws_in_throttled (GT_WS_PIPE (data)->sh);
}

static GSource *
pipe_input_create_source (GPollableInputStream *stream, GCancellable *cancellable)
{
  GtWsPipeInput *self = GT_WS_PIPE_INPUT (stream);
  g_autoptr (GSource) base_source = NULL;

  if (ws_in_throttled (self->pipe->sh))
    return ws_source_new (G_OBJECT (stream), g_object_ref (self->pipe), g_object_unref,
                          pipe_unthrottled, cancellable);
  base_source = g_pollable_input_stream_create_source (self->base, NULL);
  return g_pollable_source_new_full (stream, base_source, cancellable);
}

static gssize
pipe_input_read_nonblocking (GPollableInputStream *stream, void *buffer, gsize count,
                             GError **error)
{
  GtWsPipeInput *self = GT_WS_PIPE_INPUT (stream);

  if (ws_in_throttled (self->pipe->sh))
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "tunnel queue is full");
      return -1;
    }
  return g_pollable_input_stream_read_nonblocking (self->base, buffer, count, NULL, error);
}

static void
gt_ws_pipe_input_finalize (GObject *object)
{
  g_clear_object (&GT_WS_PIPE_INPUT (object)->base);
  G_OBJECT_CLASS (gt_ws_pipe_input_parent_class)->finalize (object);
}

static void
gt_ws_pipe_input_class_init (GtWsPipeInputClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = gt_ws_pipe_input_finalize;
  G_INPUT_STREAM_CLASS (klass)->read_fn = pipe_input_read;
  G_INPUT_STREAM_CLASS (klass)->close_fn = pipe_input_close;
}

static void
gt_ws_pipe_input_pollable_init (GPollableInputStreamInterface *iface)
{
  iface->can_poll = pipe_input_can_poll;
  iface->is_readable = pipe_input_is_readable;
  iface->create_source = pipe_input_create_source;
  iface->read_nonblocking = pipe_input_read_nonblocking;
}

static void
gt_ws_pipe_input_init (GtWsPipeInput *self)
{
}

static gssize
pipe_output_write (GOutputStream *stream, const void *buffer, gsize count,
                   GCancellable *cancellable, GError **error)
{
  GtWsPipeOutput *self = GT_WS_PIPE_OUTPUT (stream);
  gssize n;

  n = g_output_stream_write (G_OUTPUT_STREAM (self->base), buffer, count, cancellable, error);
  pipe_account_written (self->pipe, n);
  return n;
}

static gboolean
pipe_output_close (GOutputStream *stream, GCancellable *cancellable, GError **error)
{
  return TRUE;
}

static gboolean
pipe_output_can_poll (GPollableOutputStream *stream)
{
  return TRUE;
}

static gboolean
pipe_output_is_writable (GPollableOutputStream *stream)
{
  return g_pollable_output_stream_is_writable (GT_WS_PIPE_OUTPUT (stream)->base);
}

static GSource *
pipe_output_create_source (GPollableOutputStream *stream, GCancellable *cancellable)
{
  g_autoptr (GSource) base_source = NULL;

  base_source = g_pollable_output_stream_create_source (GT_WS_PIPE_OUTPUT (stream)->base, NULL);
  return g_pollable_source_new_full (stream, base_source, cancellable);
}

static gssize
pipe_output_write_nonblocking (GPollableOutputStream *stream, const void *buffer, gsize count,
                               GError **error)
{
  GtWsPipeOutput *self = GT_WS_PIPE_OUTPUT (stream);
  gssize n;

  n = g_pollable_output_stream_write_nonblocking (self->base, buffer, count, NULL, error);
  pipe_account_written (self->pipe, n);
  return n;
}

static void
gt_ws_pipe_output_finalize (GObject *object)
{
  g_clear_object (&GT_WS_PIPE_OUTPUT (object)->base);
  G_OBJECT_CLASS (gt_ws_pipe_output_parent_class)->finalize (object);
}

static void
gt_ws_pipe_output_class_init (GtWsPipeOutputClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = gt_ws_pipe_output_finalize;
  G_OUTPUT_STREAM_CLASS (klass)->write_fn = pipe_output_write;
  G_OUTPUT_STREAM_CLASS (klass)->close_fn = pipe_output_close;
}

static void
gt_ws_pipe_output_pollable_init (GPollableOutputStreamInterface *iface)
{
  iface->can_poll = pipe_output_can_poll;
  iface->is_writable = pipe_output_is_writable;
  iface->create_source = pipe_output_create_source;
  iface->write_nonblocking = pipe_output_write_nonblocking;
}

static void
gt_ws_pipe_output_init (GtWsPipeOutput *self)
{
}

static GInputStream *
pipe_get_input_stream (GIOStream *stream)
{
  return GT_WS_PIPE (stream)->in;
}

static GOutputStream *
pipe_get_output_stream (GIOStream *stream)
{
  return GT_WS_PIPE (stream)->out;
}

static gboolean
pipe_close (GIOStream *stream, GCancellable *cancellable, GError **error)
{
  return g_io_stream_close (GT_WS_PIPE (stream)->base, cancellable, error);
}

static void
pipe_close_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  GError *error = NULL;

  if (g_io_stream_close_finish (G_IO_STREAM (source), result, &error))
    g_task_return_boolean (task, TRUE);
  else
    g_task_return_error (task, error);
}

/* The default would close in a worker thread; the base stream has its own async close. */
static void
pipe_close_async (GIOStream *stream, int io_priority, GCancellable *cancellable,
                  GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = g_task_new (stream, cancellable, callback, user_data);

  g_task_set_source_tag (task, pipe_close_async);
  g_io_stream_close_async (GT_WS_PIPE (stream)->base, io_priority, cancellable,
                           pipe_close_done_cb, task);
}

static gboolean
pipe_close_finish (GIOStream *stream, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

static void
gt_ws_pipe_finalize (GObject *object)
{
  GtWsPipe *self = GT_WS_PIPE (object);

  g_clear_object (&self->in);
  g_clear_object (&self->out);
  g_clear_object (&self->base);
  G_OBJECT_CLASS (gt_ws_pipe_parent_class)->finalize (object);
}

static void
gt_ws_pipe_class_init (GtWsPipeClass *klass)
{
  GIOStreamClass *io_class = G_IO_STREAM_CLASS (klass);

  G_OBJECT_CLASS (klass)->finalize = gt_ws_pipe_finalize;
  io_class->get_input_stream = pipe_get_input_stream;
  io_class->get_output_stream = pipe_get_output_stream;
  io_class->close_fn = pipe_close;
  io_class->close_async = pipe_close_async;
  io_class->close_finish = pipe_close_finish;
}

static void
gt_ws_pipe_init (GtWsPipe *self)
{
}

static GtWsPipe *
gt_ws_pipe_new (GIOStream *base)
{
  GtWsPipe *self = g_object_new (GT_TYPE_WS_PIPE, NULL);
  GtWsPipeInput *in = g_object_new (GT_TYPE_WS_PIPE_INPUT, NULL);
  GtWsPipeOutput *out = g_object_new (GT_TYPE_WS_PIPE_OUTPUT, NULL);

  self->base = g_object_ref (base);
  in->pipe = self;
  in->base = g_object_ref (G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (base)));
  out->pipe = self;
  out->base = g_object_ref (G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (base)));
  self->in = G_INPUT_STREAM (in);
  self->out = G_OUTPUT_STREAM (out);
  return self;
}

/* ------------------------------------------------------------------------------------------ */
/* The tunnel side: GtWsStream and its streams */

#define GT_TYPE_WS_INPUT (gt_ws_input_get_type ())
G_DECLARE_FINAL_TYPE (GtWsInput, gt_ws_input, GT, WS_INPUT, GInputStream)
struct _GtWsInput
{
  GInputStream parent_instance;
  WsShared *sh;
};

#define GT_TYPE_WS_OUTPUT (gt_ws_output_get_type ())
G_DECLARE_FINAL_TYPE (GtWsOutput, gt_ws_output, GT, WS_OUTPUT, GOutputStream)
struct _GtWsOutput
{
  GOutputStream parent_instance;
  WsShared *sh;
};

#define GT_TYPE_WS_STREAM (gt_ws_stream_get_type ())
G_DECLARE_FINAL_TYPE (GtWsStream, gt_ws_stream, GT, WS_STREAM, GIOStream)
struct _GtWsStream
{
  GIOStream parent_instance;
  WsShared *sh;
  GInputStream *in;
  GOutputStream *out;
};

static void gt_ws_input_pollable_init (GPollableInputStreamInterface *iface);
static void gt_ws_output_pollable_init (GPollableOutputStreamInterface *iface);

G_DEFINE_TYPE_WITH_CODE (GtWsInput, gt_ws_input, G_TYPE_INPUT_STREAM,
                         G_IMPLEMENT_INTERFACE (G_TYPE_POLLABLE_INPUT_STREAM,
                                                gt_ws_input_pollable_init))
G_DEFINE_TYPE_WITH_CODE (GtWsOutput, gt_ws_output, G_TYPE_OUTPUT_STREAM,
                         G_IMPLEMENT_INTERFACE (G_TYPE_POLLABLE_OUTPUT_STREAM,
                                                gt_ws_output_pollable_init))
G_DEFINE_TYPE (GtWsStream, gt_ws_stream, G_TYPE_IO_STREAM)

static gssize
ws_input_take (WsShared *sh, guint8 *buffer, gsize count)
{
  gsize done = 0;

  while (done < count && sh->in_queued > 0)
    {
      GBytes *head = g_queue_peek_head (&sh->in_queue);
      gsize size;
      const guint8 *data = g_bytes_get_data (head, &size);
      gsize n = MIN (count - done, size - sh->in_offset);

      memcpy (buffer + done, data + sh->in_offset, n);
      done += n;
      sh->in_offset += n;
      sh->in_queued -= n;
      if (sh->in_offset == size)
        {
          g_bytes_unref (g_queue_pop_head (&sh->in_queue));
          sh->in_offset = 0;
        }
    }
  return done;
}

static gssize
ws_input_read_nonblocking (GPollableInputStream *stream, void *buffer, gsize count,
                           GError **error)
{
  WsShared *sh = GT_WS_INPUT (stream)->sh;

  if (count == 0)
    return 0;
  if (sh->in_queued > 0)
    return ws_input_take (sh, buffer, count);
  if (sh->error != NULL)
    {
      g_propagate_error (error, g_error_copy (sh->error));
      return -1;
    }
  if (sh->eof)
    return 0;
  g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "no tunnel data queued");
  return -1;
}

static gssize
ws_input_read (GInputStream *stream, void *buffer, gsize count, GCancellable *cancellable,
               GError **error)
{
  gssize n = ws_input_read_nonblocking (G_POLLABLE_INPUT_STREAM (stream), buffer, count, error);

  /* The WebSocket runs on the main context: waiting here would stall it. */
  if (n < 0 && g_error_matches (*error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
    {
      g_clear_error (error);
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                           "blocking reads are not supported on a WebSocket tunnel");
    }
  return n;
}

static gboolean
ws_input_close (GInputStream *stream, GCancellable *cancellable, GError **error)
{
  return TRUE;
}

/* The defaults would run close_fn in a worker thread; closing here never blocks. */
static void
ws_input_close_async (GInputStream *stream, int io_priority, GCancellable *cancellable,
                      GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GTask) task = g_task_new (stream, cancellable, callback, user_data);

  g_task_set_source_tag (task, ws_input_close_async);
  g_task_return_boolean (task, TRUE);
}

static gboolean
ws_input_close_finish (GInputStream *stream, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

static gboolean
ws_input_can_poll (GPollableInputStream *stream)
{
  return TRUE;
}

static gboolean
ws_input_is_readable (GPollableInputStream *stream)
{
  return ws_in_ready (GT_WS_INPUT (stream)->sh);
}

static GSource *
ws_input_create_source (GPollableInputStream *stream, GCancellable *cancellable)
{
  WsShared *sh = GT_WS_INPUT (stream)->sh;

  return ws_source_new (G_OBJECT (stream), ws_shared_ref (sh), (GDestroyNotify) ws_shared_unref,
                        ws_in_ready, cancellable);
}

static void
gt_ws_input_finalize (GObject *object)
{
  g_clear_pointer (&GT_WS_INPUT (object)->sh, ws_shared_unref);
  G_OBJECT_CLASS (gt_ws_input_parent_class)->finalize (object);
}

static void
gt_ws_input_class_init (GtWsInputClass *klass)
{
  GInputStreamClass *in_class = G_INPUT_STREAM_CLASS (klass);

  G_OBJECT_CLASS (klass)->finalize = gt_ws_input_finalize;
  in_class->read_fn = ws_input_read;
  in_class->close_fn = ws_input_close;
  in_class->close_async = ws_input_close_async;
  in_class->close_finish = ws_input_close_finish;
}

static void
gt_ws_input_pollable_init (GPollableInputStreamInterface *iface)
{
  iface->can_poll = ws_input_can_poll;
  iface->is_readable = ws_input_is_readable;
  iface->create_source = ws_input_create_source;
  iface->read_nonblocking = ws_input_read_nonblocking;
}

static void
gt_ws_input_init (GtWsInput *self)
{
}

/* Sends up to GT_WS_MAX_MESSAGE bytes of the vectors as one binary message. */
static gsize
ws_send (WsShared *sh, const GOutputVector *vectors, gsize n_vectors)
{
  gsize total = 0;
  gsize take;

  for (gsize i = 0; i < n_vectors && total < GT_WS_MAX_MESSAGE; i++)
    total += vectors[i].size;
  take = MIN (total, GT_WS_MAX_MESSAGE);
  if (take == 0)
    return 0;

  /* Counted before sending: libsoup writes what it can right away, through the pipe. */
  if (sh->pipe != NULL)
    sh->out_pending += ws_frame_size (take, sh->client);
  if (vectors[0].size >= take)
    soup_websocket_connection_send_binary (sh->ws, vectors[0].buffer, take);
  else
    {
      g_autofree guint8 *buf = g_malloc (take);
      gsize off = 0;

      for (gsize i = 0; off < take; i++)
        {
          gsize n = MIN (vectors[i].size, take - off);

          if (n > 0)
            memcpy (buf + off, vectors[i].buffer, n);
          off += n;
        }
      soup_websocket_connection_send_binary (sh->ws, buf, take);
    }
  return take;
}

static gboolean
ws_output_check (WsShared *sh, GError **error)
{
  if (sh->error != NULL)
    {
      g_propagate_error (error, g_error_copy (sh->error));
      return FALSE;
    }
  if (sh->out_closed)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_CLOSED, "WebSocket tunnel is closed");
      return FALSE;
    }
  if (soup_websocket_connection_get_state (sh->ws) != SOUP_WEBSOCKET_STATE_OPEN)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                           "WebSocket tunnel closed by peer");
      return FALSE;
    }
  return TRUE;
}

static GPollableReturn
ws_output_writev_nonblocking (GPollableOutputStream *stream, const GOutputVector *vectors,
                              gsize n_vectors, gsize *bytes_written, GError **error)
{
  WsShared *sh = GT_WS_OUTPUT (stream)->sh;

  *bytes_written = 0;
  if (!ws_output_check (sh, error))
    return G_POLLABLE_RETURN_FAILED;
  if (!ws_out_ready (sh))
    return G_POLLABLE_RETURN_WOULD_BLOCK;
  *bytes_written = ws_send (sh, vectors, n_vectors);
  return G_POLLABLE_RETURN_OK;
}

static gssize
ws_output_write_nonblocking (GPollableOutputStream *stream, const void *buffer, gsize count,
                             GError **error)
{
  GOutputVector v = { buffer, count };
  gsize written = 0;

  switch (ws_output_writev_nonblocking (stream, &v, 1, &written, error))
    {
    case G_POLLABLE_RETURN_OK:
      return written;
    case G_POLLABLE_RETURN_WOULD_BLOCK:
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "tunnel send queue is full");
      return -1;
    case G_POLLABLE_RETURN_FAILED:
    default:
      return -1;
    }
}

/* A blocking write cannot wait for the main context: it queues regardless of the high mark. */
static gssize
ws_output_write (GOutputStream *stream, const void *buffer, gsize count,
                 GCancellable *cancellable, GError **error)
{
  WsShared *sh = GT_WS_OUTPUT (stream)->sh;
  GOutputVector v = { buffer, count };

  if (!ws_output_check (sh, error))
    return -1;
  return ws_send (sh, &v, 1);
}

static gboolean
ws_output_close (GOutputStream *stream, GCancellable *cancellable, GError **error)
{
  WsShared *sh = GT_WS_OUTPUT (stream)->sh;

  sh->out_closed = TRUE;
  if (soup_websocket_connection_get_state (sh->ws) == SOUP_WEBSOCKET_STATE_OPEN)
    soup_websocket_connection_close (sh->ws, SOUP_WEBSOCKET_CLOSE_NORMAL, NULL);
  return TRUE;
}

static void
ws_output_close_async (GOutputStream *stream, int io_priority, GCancellable *cancellable,
                       GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GTask) task = g_task_new (stream, cancellable, callback, user_data);

  g_task_set_source_tag (task, ws_output_close_async);
  ws_output_close (stream, cancellable, NULL);
  g_task_return_boolean (task, TRUE);
}

static gboolean
ws_output_close_finish (GOutputStream *stream, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

static gboolean
ws_output_can_poll (GPollableOutputStream *stream)
{
  return TRUE;
}

static gboolean
ws_output_is_writable (GPollableOutputStream *stream)
{
  return ws_out_ready (GT_WS_OUTPUT (stream)->sh);
}

static GSource *
ws_output_create_source (GPollableOutputStream *stream, GCancellable *cancellable)
{
  WsShared *sh = GT_WS_OUTPUT (stream)->sh;

  return ws_source_new (G_OBJECT (stream), ws_shared_ref (sh), (GDestroyNotify) ws_shared_unref,
                        ws_out_ready, cancellable);
}

static void
gt_ws_output_finalize (GObject *object)
{
  g_clear_pointer (&GT_WS_OUTPUT (object)->sh, ws_shared_unref);
  G_OBJECT_CLASS (gt_ws_output_parent_class)->finalize (object);
}

static void
gt_ws_output_class_init (GtWsOutputClass *klass)
{
  GOutputStreamClass *out_class = G_OUTPUT_STREAM_CLASS (klass);

  G_OBJECT_CLASS (klass)->finalize = gt_ws_output_finalize;
  out_class->write_fn = ws_output_write;
  out_class->close_fn = ws_output_close;
  out_class->close_async = ws_output_close_async;
  out_class->close_finish = ws_output_close_finish;
}

static void
gt_ws_output_pollable_init (GPollableOutputStreamInterface *iface)
{
  iface->can_poll = ws_output_can_poll;
  iface->is_writable = ws_output_is_writable;
  iface->create_source = ws_output_create_source;
  iface->write_nonblocking = ws_output_write_nonblocking;
  iface->writev_nonblocking = ws_output_writev_nonblocking;
}

static void
gt_ws_output_init (GtWsOutput *self)
{
}

static GInputStream *
ws_stream_get_input_stream (GIOStream *stream)
{
  return GT_WS_STREAM (stream)->in;
}

static GOutputStream *
ws_stream_get_output_stream (GIOStream *stream)
{
  return GT_WS_STREAM (stream)->out;
}

static void
ws_stream_close_async (GIOStream *stream, int io_priority, GCancellable *cancellable,
                       GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GTask) task = g_task_new (stream, cancellable, callback, user_data);
  GError *error = NULL;

  g_task_set_source_tag (task, ws_stream_close_async);
  /* The parent's close_fn closes both streams, which never blocks here. */
  if (G_IO_STREAM_CLASS (gt_ws_stream_parent_class)->close_fn (stream, cancellable, &error))
    g_task_return_boolean (task, TRUE);
  else
    g_task_return_error (task, error);
}

static gboolean
ws_stream_close_finish (GIOStream *stream, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

static void
gt_ws_stream_finalize (GObject *object)
{
  GtWsStream *self = GT_WS_STREAM (object);

  g_clear_object (&self->in);
  g_clear_object (&self->out);
  g_clear_pointer (&self->sh, ws_shared_unref);
  G_OBJECT_CLASS (gt_ws_stream_parent_class)->finalize (object);
}

static void
gt_ws_stream_class_init (GtWsStreamClass *klass)
{
  GIOStreamClass *io_class = G_IO_STREAM_CLASS (klass);

  G_OBJECT_CLASS (klass)->finalize = gt_ws_stream_finalize;
  io_class->get_input_stream = ws_stream_get_input_stream;
  io_class->get_output_stream = ws_stream_get_output_stream;
  io_class->close_async = ws_stream_close_async;
  io_class->close_finish = ws_stream_close_finish;
}

static void
gt_ws_stream_init (GtWsStream *self)
{
}

static void
ws_fail (WsShared *sh, GError *error, gushort close_code)
{
  if (sh->error == NULL && !sh->eof)
    sh->error = error;
  else
    g_error_free (error);
  if (soup_websocket_connection_get_state (sh->ws) == SOUP_WEBSOCKET_STATE_OPEN)
    soup_websocket_connection_close (sh->ws, close_code, NULL);
}

static void
ws_message_cb (SoupWebsocketConnection *ws, gint type, GBytes *message, gpointer user_data)
{
  WsShared *sh = user_data;
  gsize size = g_bytes_get_size (message);

  if (sh->error != NULL || sh->eof)
    return;
  if (type != SOUP_WEBSOCKET_DATA_BINARY)
    {
      ws_fail (sh,
               g_error_new_literal (G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                                    "WebSocket tunnel: text message received"),
               SOUP_WEBSOCKET_CLOSE_UNSUPPORTED_DATA);
      return;
    }
  if (size == 0)
    return;
  if (size > sh->in_max - MIN (sh->in_queued, sh->in_max))
    {
      ws_fail (sh,
               g_error_new (G_IO_ERROR, G_IO_ERROR_NO_SPACE,
                            "WebSocket tunnel: peer sent more than %" G_GSIZE_FORMAT
                            " unread bytes",
                            sh->in_max),
               SOUP_WEBSOCKET_CLOSE_POLICY_VIOLATION);
      return;
    }
  g_queue_push_tail (&sh->in_queue, g_bytes_ref (message));
  sh->in_queued += size;
}

static void
ws_closing_cb (SoupWebsocketConnection *ws, gpointer user_data)
{
  WsShared *sh = user_data;

  sh->eof = TRUE;
}

static void
ws_error_cb (SoupWebsocketConnection *ws, GError *error, gpointer user_data)
{
  WsShared *sh = user_data;

  g_debug ("WebSocket tunnel error: %s", error->message);
  if (sh->error == NULL && !sh->eof)
    {
      sh->error = g_error_copy (error);
      /* libsoup reports the peer's protocol violations in its own domain. */
      if (error->domain != G_IO_ERROR)
        {
          sh->error->domain = G_IO_ERROR;
          sh->error->code = G_IO_ERROR_INVALID_DATA;
        }
    }
}

static GIOStream *
ws_stream_new_internal (SoupWebsocketConnection *ws, GtWsPipe *pipe)
{
  GtWsStream *self = g_object_new (GT_TYPE_WS_STREAM, NULL);
  WsShared *sh = g_new0 (WsShared, 1);
  GtWsInput *in = g_object_new (GT_TYPE_WS_INPUT, NULL);
  GtWsOutput *out = g_object_new (GT_TYPE_WS_OUTPUT, NULL);

  g_ref_count_init (&sh->ref);
  sh->ws = g_object_ref (ws);
  sh->pipe = pipe;
  sh->client = soup_websocket_connection_get_connection_type (ws)
               == SOUP_WEBSOCKET_CONNECTION_CLIENT;
  sh->in_max = pipe != NULL ? IN_MAX : IN_MAX_UNTHROTTLED;
  g_queue_init (&sh->in_queue);
  if (pipe != NULL)
    pipe->sh = sh;
  if (soup_websocket_connection_get_state (ws) != SOUP_WEBSOCKET_STATE_OPEN)
    sh->eof = TRUE;

  soup_websocket_connection_set_max_incoming_payload_size (ws, GT_WS_MAX_MESSAGE + 64);
  soup_websocket_connection_set_keepalive_interval (ws, KEEPALIVE_SECONDS);
  g_signal_connect (ws, "message", G_CALLBACK (ws_message_cb), sh);
  g_signal_connect (ws, "closing", G_CALLBACK (ws_closing_cb), sh);
  g_signal_connect (ws, "closed", G_CALLBACK (ws_closing_cb), sh);
  g_signal_connect (ws, "error", G_CALLBACK (ws_error_cb), sh);

  in->sh = ws_shared_ref (sh);
  out->sh = ws_shared_ref (sh);
  self->sh = sh;
  self->in = G_INPUT_STREAM (in);
  self->out = G_OUTPUT_STREAM (out);
  return G_IO_STREAM (self);
}

GIOStream *
gt_ws_stream_new (SoupWebsocketConnection *ws)
{
  g_return_val_if_fail (SOUP_IS_WEBSOCKET_CONNECTION (ws), NULL);
  return ws_stream_new_internal (ws, NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* Handshake helpers */

static char *
ws_accept_key (const char *key)
{
  g_autoptr (GChecksum) sha1 = g_checksum_new (G_CHECKSUM_SHA1);
  guint8 digest[20];
  gsize digest_len = sizeof digest;

  g_checksum_update (sha1, (const guchar *) key, strlen (key));
  g_checksum_update (sha1, (const guchar *) WS_GUID, strlen (WS_GUID));
  g_checksum_get_digest (sha1, digest, &digest_len);
  return g_base64_encode (digest, digest_len);
}

/* A Sec-WebSocket-Key: base64 of exactly 16 bytes (24 characters ending in "=="). */
static gboolean
ws_key_is_valid (const char *key)
{
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

  if (key == NULL || strlen (key) != 24 || strcmp (key + 22, "==") != 0)
    return FALSE;
  for (gsize i = 0; i < 22; i++)
    if (key[i] == '\0' || strchr (b64, key[i]) == NULL)
      return FALSE;
  /* The last character before the padding carries 2 bits: the other 4 must be zero. */
  return (strchr (b64, key[21]) - b64) % 16 == 0;
}

static GUri *
ws_server_uri (const char *target)
{
  g_autofree char *text = NULL;
  GUri *uri = NULL;

  if (target != NULL && target[0] == '/')
    {
      text = g_strconcat ("ws://localhost", target, NULL);
      uri = g_uri_parse (text, G_URI_FLAGS_PARSE_RELAXED | G_URI_FLAGS_ENCODED, NULL);
    }
  if (uri == NULL)
    uri = g_uri_parse ("ws://localhost/", G_URI_FLAGS_NONE, NULL);
  return uri;
}

static void
ws_write_response (GIOStream *io, const char *response)
{
  g_autoptr (GError) error = NULL;

  if (!g_output_stream_write_all (g_io_stream_get_output_stream (io), response, strlen (response),
                                  NULL, NULL, &error))
    g_debug ("WebSocket handshake: writing the response failed: %s", error->message);
}

static GIOStream *
ws_reject (GIOStream *io, const char *reason, gboolean version, GError **error)
{
  g_autofree char *response = NULL;

  response = g_strdup_printf ("HTTP/1.1 400 Bad Request\r\n"
                              "Content-Type: text/plain\r\n"
                              "Content-Length: %zu\r\n"
                              "%s"
                              "Connection: close\r\n"
                              "\r\n"
                              "%s\n",
                              strlen (reason) + 1, version ? "Sec-WebSocket-Version: 13\r\n" : "",
                              reason);
  ws_write_response (io, response);
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "bad WebSocket upgrade request: %s",
               reason);
  return NULL;
}

GIOStream *
gt_ws_server_accept (GIOStream *io, const guint8 *head, gsize head_len, GError **error)
{
  g_autoptr (SoupMessageHeaders) headers = NULL;
  g_autofree char *method = NULL;
  g_autofree char *target = NULL;
  g_autofree char *accept = NULL;
  g_autofree char *response = NULL;
  g_autoptr (GtWsPipe) pipe = NULL;
  g_autoptr (SoupWebsocketConnection) ws = NULL;
  g_autoptr (GUri) uri = NULL;
  g_autoptr (GError) local = NULL;
  SoupHTTPVersion version;
  const char *key;
  const char *ws_version;
  guint status;

  g_return_val_if_fail (G_IS_IO_STREAM (io), NULL);
  g_return_val_if_fail (head != NULL || head_len == 0, NULL);

  if (head_len == 0 || head_len > G_MAXINT)
    return ws_reject (io, "malformed request", FALSE, error);
  headers = soup_message_headers_new (SOUP_MESSAGE_HEADERS_REQUEST);
  status = soup_headers_parse_request ((const char *) head, (int) head_len, headers, &method,
                                       &target, &version);
  if (status != SOUP_STATUS_OK)
    return ws_reject (io, "malformed request", FALSE, error);
  if (strcmp (method, "GET") != 0)
    return ws_reject (io, "WebSocket upgrade needs GET", FALSE, error);
  if (version < SOUP_HTTP_1_1)
    return ws_reject (io, "WebSocket upgrade needs HTTP/1.1", FALSE, error);
  if (!soup_message_headers_header_contains (headers, "Upgrade", "websocket"))
    return ws_reject (io, "missing Upgrade: websocket", FALSE, error);
  if (!soup_message_headers_header_contains (headers, "Connection", "upgrade"))
    return ws_reject (io, "missing Connection: upgrade", FALSE, error);
  ws_version = soup_message_headers_get_one (headers, "Sec-WebSocket-Version");
  if (ws_version == NULL || strcmp (ws_version, "13") != 0)
    return ws_reject (io, "unsupported Sec-WebSocket-Version", TRUE, error);
  key = soup_message_headers_get_one (headers, "Sec-WebSocket-Key");
  if (!ws_key_is_valid (key))
    return ws_reject (io, "invalid Sec-WebSocket-Key", FALSE, error);

  accept = ws_accept_key (key);
  response = g_strdup_printf ("HTTP/1.1 101 Switching Protocols\r\n"
                              "Upgrade: websocket\r\n"
                              "Connection: Upgrade\r\n"
                              "Sec-WebSocket-Accept: %s\r\n"
                              "\r\n",
                              accept);
  if (!g_output_stream_write_all (g_io_stream_get_output_stream (io), response, strlen (response),
                                  NULL, NULL, error))
    return NULL;

  uri = ws_server_uri (target);
  pipe = gt_ws_pipe_new (io);
  ws = soup_websocket_connection_new (G_IO_STREAM (pipe), uri, SOUP_WEBSOCKET_CONNECTION_SERVER,
                                      NULL, NULL, NULL);
  return ws_stream_new_internal (ws, pipe);
}

gboolean
gt_ws_is_upgrade_request (const guint8 *head, gsize head_len, const char *path)
{
  const char *s = (const char *) head;
  const char *end = s + head_len;
  const char *target;
  const char *line;
  gsize target_len;

  if (head == NULL || head_len < 16 || memcmp (s, "GET ", 4) != 0)
    return FALSE;
  target = s + 4;
  line = memchr (target, ' ', end - target);
  if (line == NULL)
    return FALSE;
  target_len = line - target;
  if (path != NULL)
    {
      const char *q = memchr (target, '?', target_len);
      gsize path_len = q != NULL ? (gsize) (q - target) : target_len;

      if (path_len != strlen (path) || memcmp (target, path, path_len) != 0)
        return FALSE;
    }
  if ((gsize) (end - line) < 10 || memcmp (line, " HTTP/1.", 8) != 0)
    return FALSE;

  /* Header lines: look for Upgrade with a "websocket" token. */
  line = memchr (line, '\n', end - line);
  while (line != NULL && line + 1 < end)
    {
      const char *start = line + 1;
      const char *eol = memchr (start, '\n', end - start);
      gsize len = (eol != NULL ? eol : end) - start;

      if (len >= 8 && g_ascii_strncasecmp (start, "upgrade:", 8) == 0)
        {
          g_autofree char *value = g_ascii_strdown (start + 8, len - 8);

          if (strstr (value, "websocket") != NULL)
            return TRUE;
        }
      line = eol;
    }
  return FALSE;
}

/* ------------------------------------------------------------------------------------------ */
/* Client */

typedef struct
{
  GUri *uri;
  char *url; /* without user info, for the proxy resolver */
  char *host;
  guint16 port;
  gboolean tls;
  GTlsDatabase *database;
  char *pin;
  gboolean insecure;
  GProxyResolver *proxy;
  GIOStream *io;
  gulong accept_id;
  GTlsCertificateFlags cert_errors;
  char *peer_fingerprint;
  char *key;
  char *request;
} WsConnect;

static void
ws_connect_free (WsConnect *wc)
{
  if (wc->accept_id != 0 && wc->io != NULL)
    g_signal_handler_disconnect (wc->io, wc->accept_id);
  g_clear_pointer (&wc->uri, g_uri_unref);
  g_free (wc->url);
  g_free (wc->host);
  g_clear_object (&wc->database);
  g_free (wc->pin);
  g_clear_object (&wc->proxy);
  g_clear_object (&wc->io);
  g_free (wc->peer_fingerprint);
  g_free (wc->key);
  g_free (wc->request);
  g_free (wc);
}

static char *
describe_cert_errors (GTlsCertificateFlags flags)
{
  GString *s = g_string_new (NULL);
  static const struct
  {
    GTlsCertificateFlags flag;
    const char *text;
  } names[] = {
    { G_TLS_CERTIFICATE_UNKNOWN_CA, "not signed by a trusted CA" },
    { G_TLS_CERTIFICATE_BAD_IDENTITY, "issued for another host name" },
    { G_TLS_CERTIFICATE_NOT_ACTIVATED, "not yet valid" },
    { G_TLS_CERTIFICATE_EXPIRED, "expired" },
    { G_TLS_CERTIFICATE_REVOKED, "revoked" },
    { G_TLS_CERTIFICATE_INSECURE, "insecure algorithm" },
    { G_TLS_CERTIFICATE_GENERIC_ERROR, "invalid" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (names); i++)
    if (flags & names[i].flag)
      g_string_append_printf (s, "%s%s", s->len > 0 ? ", " : "", names[i].text);
  if (s->len == 0)
    g_string_append (s, "rejected");
  return g_string_free (s, FALSE);
}

static void
ws_connect_head_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  WsConnect *wc = g_task_get_task_data (task);
  g_autoptr (GBytes) head = NULL;
  g_autoptr (SoupMessageHeaders) headers = NULL;
  g_autoptr (SoupWebsocketConnection) ws = NULL;
  g_autoptr (GtWsPipe) pipe = NULL;
  g_autofree char *expected = NULL;
  g_autofree char *line = NULL;
  const char *accept;
  GError *error = NULL;
  const guint8 *data;
  gsize len;
  guint status = 0;

  head = gt_http_read_head_finish (result, &error);
  if (head == NULL)
    {
      g_prefix_error (&error, "WebSocket handshake with %s: ", wc->host);
      g_task_return_error (task, error);
      return;
    }
  data = g_bytes_get_data (head, &len);
  line = gt_http_status_line (data, len);
  headers = soup_message_headers_new (SOUP_MESSAGE_HEADERS_RESPONSE);
  if (!soup_headers_parse_response ((const char *) data, (int) len, headers, NULL, &status, NULL)
      || status != SOUP_STATUS_SWITCHING_PROTOCOLS)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_FAILED,
                               "WebSocket handshake with %s refused: %s", wc->host, line);
      return;
    }
  expected = ws_accept_key (wc->key);
  accept = soup_message_headers_get_one (headers, "Sec-WebSocket-Accept");
  if (!soup_message_headers_header_contains (headers, "Upgrade", "websocket")
      || !soup_message_headers_header_contains (headers, "Connection", "upgrade")
      || accept == NULL || strcmp (accept, expected) != 0
      || soup_message_headers_get_one (headers, "Sec-WebSocket-Extensions") != NULL)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                               "WebSocket handshake with %s: invalid 101 response", wc->host);
      return;
    }

  pipe = gt_ws_pipe_new (wc->io);
  ws = soup_websocket_connection_new (G_IO_STREAM (pipe), wc->uri,
                                      SOUP_WEBSOCKET_CONNECTION_CLIENT, NULL, NULL, NULL);
  g_task_return_pointer (task, ws_stream_new_internal (ws, pipe), g_object_unref);
}

static void
ws_connect_written_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  WsConnect *wc = g_task_get_task_data (task);
  GCancellable *cancellable = g_task_get_cancellable (task);
  GError *error = NULL;

  if (!g_output_stream_write_all_finish (G_OUTPUT_STREAM (source), result, NULL, &error))
    {
      g_prefix_error (&error, "WebSocket handshake with %s: ", wc->host);
      g_task_return_error (task, error);
      return;
    }
  gt_http_read_head_async (wc->io, GT_HTTP_PROXY_MAX_HEAD, cancellable,
                           ws_connect_head_cb, g_steal_pointer (&task));
}

static void
ws_connect_send_request (GTask *task)
{
  WsConnect *wc = g_task_get_task_data (task);
  g_autofree char *host = NULL;
  g_autofree char *path = NULL;
  g_autofree char *port = NULL;
  guint8 nonce[16];
  gboolean default_port = wc->port == (wc->tls ? 443 : 80);

  for (gsize i = 0; i < sizeof nonce; i += 4)
    {
      guint32 r = g_random_int ();

      memcpy (nonce + i, &r, 4);
    }
  wc->key = g_base64_encode (nonce, sizeof nonce);
  host = strchr (wc->host, ':') != NULL ? g_strdup_printf ("[%s]", wc->host) : g_strdup (wc->host);
  path = g_strdup (*g_uri_get_path (wc->uri) != '\0' ? g_uri_get_path (wc->uri) : "/");
  port = default_port ? g_strdup ("") : g_strdup_printf (":%u", wc->port);
  wc->request = g_strdup_printf ("GET %s%s%s HTTP/1.1\r\n"
                                 "Host: %s%s\r\n"
                                 "Upgrade: websocket\r\n"
                                 "Connection: Upgrade\r\n"
                                 "Sec-WebSocket-Key: %s\r\n"
                                 "Sec-WebSocket-Version: 13\r\n"
                                 "User-Agent: gt/" PACKAGE_VERSION "\r\n"
                                 "\r\n",
                                 path, g_uri_get_query (wc->uri) != NULL ? "?" : "",
                                 g_uri_get_query (wc->uri) != NULL ? g_uri_get_query (wc->uri) : "",
                                 host, port, wc->key);
  g_output_stream_write_all_async (g_io_stream_get_output_stream (wc->io), wc->request,
                                   strlen (wc->request), G_PRIORITY_DEFAULT,
                                   g_task_get_cancellable (task), ws_connect_written_cb,
                                   g_object_ref (task));
}

static gboolean
ws_accept_certificate_cb (GTlsConnection *conn, GTlsCertificate *peer, GTlsCertificateFlags errors,
                          gpointer user_data)
{
  WsConnect *wc = user_data;

  wc->cert_errors = errors;
  g_free (wc->peer_fingerprint);
  wc->peer_fingerprint = gt_certificate_fingerprint (peer);
  if (wc->pin != NULL)
    return gt_certificate_pin_matches (peer, wc->pin);
  return wc->insecure;
}

static void
ws_connect_handshake_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  WsConnect *wc = g_task_get_task_data (task);
  GError *error = NULL;

  if (!g_tls_connection_handshake_finish (G_TLS_CONNECTION (source), result, &error))
    {
      if (g_error_matches (error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE) && wc->pin != NULL)
        {
          g_clear_error (&error);
          g_task_return_new_error (task, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE,
                                   "TLS certificate of %s (%s) does not match the pinned "
                                   "fingerprint",
                                   wc->host,
                                   wc->peer_fingerprint ? wc->peer_fingerprint : "unknown");
          return;
        }
      if (g_error_matches (error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE))
        {
          g_autofree char *why = describe_cert_errors (wc->cert_errors);

          g_clear_error (&error);
          g_task_return_new_error (task, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE,
                                   "TLS certificate of %s not trusted: %s (%s)", wc->host, why,
                                   wc->peer_fingerprint ? wc->peer_fingerprint : "unknown");
          return;
        }
      g_prefix_error (&error, "TLS handshake with %s: ", wc->host);
      g_task_return_error (task, error);
      return;
    }
  g_signal_handler_disconnect (wc->io, wc->accept_id);
  wc->accept_id = 0;

  /* A pinned certificate must match even when it also chains to a trusted CA. */
  if (wc->pin != NULL)
    {
      GTlsCertificate *peer = g_tls_connection_get_peer_certificate (G_TLS_CONNECTION (wc->io));

      if (peer == NULL || !gt_certificate_pin_matches (peer, wc->pin))
        {
          g_autofree char *fp = peer != NULL ? gt_certificate_fingerprint (peer) : NULL;

          g_task_return_new_error (task, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE,
                                   "TLS certificate of %s (%s) does not match the pinned "
                                   "fingerprint",
                                   wc->host, fp ? fp : "unknown");
          return;
        }
    }
  ws_connect_send_request (task);
}

static void
ws_connect_transport_ready (GTask *task, GIOStream *io)
{
  WsConnect *wc = g_task_get_task_data (task);
  g_autoptr (GSocketConnectable) identity = NULL;
  GIOStream *tls;
  GError *error = NULL;

  if (G_IS_SOCKET_CONNECTION (io))
    g_socket_set_option (g_socket_connection_get_socket (G_SOCKET_CONNECTION (io)), IPPROTO_TCP,
                         TCP_NODELAY, 1, NULL);
  if (!wc->tls)
    {
      wc->io = io;
      ws_connect_send_request (task);
      return;
    }

  if (!gt_tls_backend_check (&error))
    {
      g_object_unref (io);
      g_task_return_error (task, error);
      return;
    }
  identity = g_network_address_new (wc->host, wc->port);
  tls = g_tls_client_connection_new (io, identity, &error);
  g_object_unref (io);
  if (tls == NULL)
    {
      g_task_return_error (task, error);
      return;
    }
  wc->io = tls;
  if (wc->database != NULL)
    g_tls_connection_set_database (G_TLS_CONNECTION (tls), wc->database);
  else if (wc->pin != NULL || wc->insecure)
    /* Pinned or unverified: the system CA store is not needed, so it is never loaded (it costs
     * tens of MiB once parsed). */
    g_tls_connection_set_database (G_TLS_CONNECTION (tls), NULL);
  wc->accept_id = g_signal_connect (tls, "accept-certificate",
                                    G_CALLBACK (ws_accept_certificate_cb), wc);
  g_tls_connection_handshake_async (G_TLS_CONNECTION (tls), G_PRIORITY_DEFAULT,
                                    g_task_get_cancellable (task), ws_connect_handshake_cb,
                                    g_object_ref (task));
}

static void
ws_connect_direct_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  WsConnect *wc = g_task_get_task_data (task);
  GError *error = NULL;
  GSocketConnection *conn;

  conn = g_socket_client_connect_finish (G_SOCKET_CLIENT (source), result, &error);
  if (conn == NULL)
    {
      g_prefix_error (&error, "%s:%u: ", wc->host, wc->port);
      g_task_return_error (task, error);
      return;
    }
  ws_connect_transport_ready (task, G_IO_STREAM (conn));
}

static void
ws_connect_proxy_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  GError *error = NULL;
  GIOStream *io;

  io = gt_http_connect_finish (result, &error);
  if (io == NULL)
    {
      g_task_return_error (task, error);
      return;
    }
  ws_connect_transport_ready (task, io);
}

static void
ws_connect_start (GTask *task, const char *proxy_url)
{
  WsConnect *wc = g_task_get_task_data (task);
  g_autoptr (GSocketClient) client = NULL;
  g_autoptr (GSocketConnectable) addr = NULL;

  if (proxy_url != NULL && g_str_has_prefix (proxy_url, "http://"))
    {
      gt_http_connect_async (proxy_url, wc->host, wc->port, g_task_get_cancellable (task),
                             ws_connect_proxy_cb, g_object_ref (task));
      return;
    }
  if (proxy_url != NULL && strcmp (proxy_url, "direct://") != 0)
    {
      g_autofree char *scheme = g_uri_parse_scheme (proxy_url);

      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                               "unsupported proxy type '%s' (only http:// proxies)",
                               scheme ? scheme : "?");
      return;
    }
  client = g_socket_client_new ();
  g_socket_client_set_enable_proxy (client, FALSE);
  addr = g_network_address_new (wc->host, wc->port);
  g_socket_client_connect_async (client, addr, g_task_get_cancellable (task),
                                 ws_connect_direct_cb, g_object_ref (task));
}

static void
ws_connect_lookup_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  g_auto (GStrv) proxies = NULL;
  GError *error = NULL;

  proxies = g_proxy_resolver_lookup_finish (G_PROXY_RESOLVER (source), result, &error);
  if (proxies == NULL)
    {
      g_prefix_error (&error, "proxy lookup: ");
      g_task_return_error (task, error);
      return;
    }
  ws_connect_start (task, proxies[0]);
}

void
gt_ws_connect_async (const char *url, GTlsDatabase *tls_database, const char *pin,
                     gboolean insecure, GProxyResolver *proxy, GCancellable *cancellable,
                     GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GTask) task = NULL;
  g_autoptr (GError) error = NULL;
  WsConnect *wc;
  const char *scheme;
  int port;

  g_return_if_fail (url != NULL);
  g_return_if_fail (tls_database == NULL || G_IS_TLS_DATABASE (tls_database));

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, gt_ws_connect_async);
  wc = g_new0 (WsConnect, 1);
  g_task_set_task_data (task, wc, (GDestroyNotify) ws_connect_free);

  wc->uri = g_uri_parse (url, G_URI_FLAGS_ENCODED, &error);
  if (wc->uri == NULL)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "invalid WebSocket URL: %s", error->message);
      return;
    }
  scheme = g_uri_get_scheme (wc->uri);
  if (g_ascii_strcasecmp (scheme, "wss") == 0)
    wc->tls = TRUE;
  else if (g_ascii_strcasecmp (scheme, "ws") != 0)
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "invalid WebSocket URL: scheme must be ws or wss");
      return;
    }
  if (g_uri_get_host (wc->uri) == NULL || *g_uri_get_host (wc->uri) == '\0')
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "invalid WebSocket URL: no host");
      return;
    }
  if (pin != NULL && !gt_certificate_pin_is_valid (pin))
    {
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                               "invalid certificate pin (expected sha256:<64 hex digits>)");
      return;
    }
  wc->host = g_strdup (g_uri_get_host (wc->uri));
  port = g_uri_get_port (wc->uri);
  wc->port = port > 0 ? port : (wc->tls ? 443 : 80);
  wc->database = tls_database != NULL ? g_object_ref (tls_database) : NULL;
  wc->pin = g_strdup (pin);
  wc->insecure = insecure;
  wc->url = g_uri_to_string_partial (wc->uri, G_URI_HIDE_USERINFO);

  if (proxy != NULL)
    {
      wc->proxy = g_object_ref (proxy);
      g_proxy_resolver_lookup_async (proxy, wc->url, cancellable, ws_connect_lookup_cb,
                                     g_steal_pointer (&task));
      return;
    }
  ws_connect_start (task, NULL);
}

GIOStream *
gt_ws_connect_finish (GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == gt_ws_connect_async, NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}
