/* gt-tls-socket.c: a connection that reads its socket in large chunks, for TLS's small reads. */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include <string.h>

#include "gt-ready-source.h"
#include "gt-tls-socket.h"

#define BUF_SIZE (256 * 1024)
/* Queued record bytes: sent once this much waits, or before the main context waits. */
#define OUT_SIZE (64 * 1024)

/* ------------------------------------------------------------------------------------------ */
/* Input: the buffer */

#define GT_TYPE_READ_AHEAD_INPUT (gt_read_ahead_input_get_type ())
G_DECLARE_FINAL_TYPE (GtReadAheadInput, gt_read_ahead_input, GT, READ_AHEAD_INPUT, GInputStream)

struct _GtReadAheadInput
{
  GInputStream parent_instance;
  GInputStream *base;
  guint8 *buf; /* allocated on first use, freed when drained */
  gsize start;
  gsize end;
};

static void input_pollable_init (GPollableInputStreamInterface *iface);

G_DEFINE_TYPE_WITH_CODE (GtReadAheadInput, gt_read_ahead_input, G_TYPE_INPUT_STREAM,
                         G_IMPLEMENT_INTERFACE (G_TYPE_POLLABLE_INPUT_STREAM, input_pollable_init))

static gsize
take (GtReadAheadInput *self, void *buffer, gsize count)
{
  gsize n = MIN (count, self->end - self->start);

  memcpy (buffer, self->buf + self->start, n);
  self->start += n;
  if (self->start == self->end)
    {
      /* An idle connection keeps no buffer. */
      self->start = self->end = 0;
      g_clear_pointer (&self->buf, g_free);
    }
  return n;
}

/* Reads base: straight into a large caller's buffer, else into ours first. */
static gssize
read_base (GtReadAheadInput *self, void *buffer, gsize count, gboolean blocking,
           GCancellable *cancellable, GError **error)
{
  gssize n;

  if (self->end > self->start)
    return take (self, buffer, count);
  if (count >= BUF_SIZE / 2)
    return blocking ? g_input_stream_read (self->base, buffer, count, cancellable, error)
                    : g_pollable_input_stream_read_nonblocking (
                        G_POLLABLE_INPUT_STREAM (self->base), buffer, count, cancellable, error);
  if (self->buf == NULL)
    self->buf = g_malloc (BUF_SIZE);
  n = blocking ? g_input_stream_read (self->base, self->buf, BUF_SIZE, cancellable, error)
               : g_pollable_input_stream_read_nonblocking (G_POLLABLE_INPUT_STREAM (self->base),
                                                           self->buf, BUF_SIZE, cancellable,
                                                           error);
  if (n <= 0)
    {
      g_clear_pointer (&self->buf, g_free);
      return n;
    }
  self->end = n;
  return take (self, buffer, count);
}

static gssize
input_read (GInputStream *stream, void *buffer, gsize count, GCancellable *cancellable,
            GError **error)
{
  return read_base (GT_READ_AHEAD_INPUT (stream), buffer, count, TRUE, cancellable, error);
}

static gssize
input_read_nonblocking (GPollableInputStream *stream, void *buffer, gsize count, GError **error)
{
  return read_base (GT_READ_AHEAD_INPUT (stream), buffer, count, FALSE, NULL, error);
}

static gboolean
input_close (GInputStream *stream, GCancellable *cancellable, GError **error)
{
  return TRUE; /* the GIOStream closes base */
}

static gboolean
input_can_poll (GPollableInputStream *stream)
{
  return TRUE;
}

static gboolean
input_is_readable (GPollableInputStream *stream)
{
  GtReadAheadInput *self = GT_READ_AHEAD_INPUT (stream);

  return self->end > self->start
         || g_pollable_input_stream_is_readable (G_POLLABLE_INPUT_STREAM (self->base));
}

static gboolean
input_has_buffered (gpointer data)
{
  GtReadAheadInput *self = data;

  return self->end > self->start;
}

/* Ready while buffered bytes wait or base is readable. */
static GSource *
input_create_source (GPollableInputStream *stream, GCancellable *cancellable)
{
  GtReadAheadInput *self = GT_READ_AHEAD_INPUT (stream);
  g_autoptr (GSource) base_source
    = g_pollable_input_stream_create_source (G_POLLABLE_INPUT_STREAM (self->base), NULL);

  return _gt_ready_source_new (G_OBJECT (stream), input_has_buffered, g_object_ref (self),
                               g_object_unref, base_source, cancellable);
}

static void
gt_read_ahead_input_finalize (GObject *object)
{
  GtReadAheadInput *self = GT_READ_AHEAD_INPUT (object);

  g_clear_object (&self->base);
  g_free (self->buf);
  G_OBJECT_CLASS (gt_read_ahead_input_parent_class)->finalize (object);
}

static void
gt_read_ahead_input_class_init (GtReadAheadInputClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = gt_read_ahead_input_finalize;
  G_INPUT_STREAM_CLASS (klass)->read_fn = input_read;
  G_INPUT_STREAM_CLASS (klass)->close_fn = input_close;
}

static void
input_pollable_init (GPollableInputStreamInterface *iface)
{
  iface->can_poll = input_can_poll;
  iface->is_readable = input_is_readable;
  iface->create_source = input_create_source;
  iface->read_nonblocking = input_read_nonblocking;
}

static void
gt_read_ahead_input_init (GtReadAheadInput *self)
{
}

/* ------------------------------------------------------------------------------------------ */
/* Output: records gathered until the main context is about to wait */

#define GT_TYPE_TLS_SOCKET_OUTPUT (gt_tls_socket_output_get_type ())
G_DECLARE_FINAL_TYPE (GtTlsSocketOutput, gt_tls_socket_output, GT, TLS_SOCKET_OUTPUT,
                      GOutputStream)

struct _GtTlsSocketOutput
{
  GOutputStream parent_instance;
  GOutputStream *base;
  GMutex lock; /* the queue: GIO's TLS threads write blocking while the main context flushes */
  guint8 *buf;
  gsize start;
  gsize end;
  GError *error; /* a failed send, reported by the next write */
  GSource *flush; /* NULL: writes pass straight through */
  gpointer fd_tag;
  gboolean watching;
};

static void output_pollable_init (GPollableOutputStreamInterface *iface);

G_DEFINE_TYPE_WITH_CODE (GtTlsSocketOutput, gt_tls_socket_output, G_TYPE_OUTPUT_STREAM,
                         G_IMPLEMENT_INTERFACE (G_TYPE_POLLABLE_OUTPUT_STREAM,
                                                output_pollable_init))

/* Sends what base takes now; called with the lock held. */
static void
flush_locked (GtTlsSocketOutput *self)
{
  while (self->end > self->start && self->error == NULL)
    {
      GError *error = NULL;
      gssize n = g_pollable_output_stream_write_nonblocking (
        G_POLLABLE_OUTPUT_STREAM (self->base), self->buf + self->start, self->end - self->start,
        NULL, &error);

      if (n < 0)
        {
          if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
            g_error_free (error);
          else
            self->error = error;
          break;
        }
      self->start += n;
    }
  if (self->end == self->start || self->error != NULL)
    {
      self->start = self->end = 0;
      g_clear_pointer (&self->buf, g_free);
    }
}

/* Sends everything queued, waiting for the socket; with the lock held. */
static gboolean
flush_blocking_locked (GtTlsSocketOutput *self, GCancellable *cancellable, GError **error)
{
  gboolean ok = TRUE;

  if (self->error != NULL)
    {
      g_propagate_error (error, g_error_copy (self->error));
      return FALSE;
    }
  if (self->end > self->start)
    ok = g_output_stream_write_all (self->base, self->buf + self->start, self->end - self->start,
                                    NULL, cancellable, error);
  self->start = self->end = 0;
  g_clear_pointer (&self->buf, g_free);
  return ok;
}

typedef struct
{
  GSource source;
  GtTlsSocketOutput *output; /* owned; the GIOStream's close destroys the source */
} FlushSource;

static gboolean
flush_prepare (GSource *source, gint *timeout)
{
  GtTlsSocketOutput *self = ((FlushSource *) source)->output;
  gboolean pending;

  *timeout = -1;
  if (!self->watching && self->end == self->start)
    return FALSE;
  /* Busy: a GIO TLS thread is writing, or the stream is being closed (which destroys this
   * source under the lock). */
  if (!g_mutex_trylock (&self->lock))
    return FALSE;
  if (!g_source_is_destroyed (source))
    {
      flush_locked (self);
      pending = self->end > self->start;
      /* Wake up for the socket only while something waits for it. */
      if (pending != self->watching)
        {
          self->watching = pending;
          g_source_modify_unix_fd (source, self->fd_tag, pending ? G_IO_OUT | G_IO_ERR : 0);
        }
    }
  g_mutex_unlock (&self->lock);
  return FALSE;
}

static gboolean
flush_check (GSource *source)
{
  GtTlsSocketOutput *self = ((FlushSource *) source)->output;

  return self->watching && g_source_query_unix_fd (source, self->fd_tag) != 0;
}

static gboolean
flush_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  GtTlsSocketOutput *self = ((FlushSource *) source)->output;

  if (g_mutex_trylock (&self->lock))
    {
      flush_locked (self);
      g_mutex_unlock (&self->lock);
    }
  return G_SOURCE_CONTINUE;
}

static void
flush_finalize (GSource *source)
{
  g_clear_object (&((FlushSource *) source)->output);
}

static GSourceFuncs flush_funcs = {
  flush_prepare, flush_check, flush_dispatch, flush_finalize, NULL, NULL,
};

static gssize
output_write_nonblocking (GPollableOutputStream *stream, const void *buffer, gsize count,
                          GError **error)
{
  GtTlsSocketOutput *self = GT_TLS_SOCKET_OUTPUT (stream);
  gssize result = count;

  if (self->flush == NULL)
    return g_pollable_output_stream_write_nonblocking (G_POLLABLE_OUTPUT_STREAM (self->base),
                                                       buffer, count, NULL, error);
  g_mutex_lock (&self->lock);
  if (self->end - self->start + count > OUT_SIZE)
    flush_locked (self);
  if (self->error != NULL)
    {
      g_propagate_error (error, g_error_copy (self->error));
      result = -1;
    }
  else if (self->end == self->start && count >= OUT_SIZE)
    result = g_pollable_output_stream_write_nonblocking (G_POLLABLE_OUTPUT_STREAM (self->base),
                                                         buffer, count, NULL, error);
  else if (self->end - self->start + count > OUT_SIZE)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "TLS send queue is full");
      result = -1;
    }
  else
    {
      if (self->buf == NULL)
        self->buf = g_malloc (OUT_SIZE);
      if (self->end + count > OUT_SIZE)
        {
          memmove (self->buf, self->buf + self->start, self->end - self->start);
          self->end -= self->start;
          self->start = 0;
        }
      memcpy (self->buf + self->end, buffer, count);
      self->end += count;
    }
  g_mutex_unlock (&self->lock);
  return result;
}

static gssize
output_write (GOutputStream *stream, const void *buffer, gsize count, GCancellable *cancellable,
              GError **error)
{
  GtTlsSocketOutput *self = GT_TLS_SOCKET_OUTPUT (stream);
  gssize n = -1;

  g_mutex_lock (&self->lock);
  if (flush_blocking_locked (self, cancellable, error))
    n = g_output_stream_write (self->base, buffer, count, cancellable, error);
  g_mutex_unlock (&self->lock);
  return n;
}

static gboolean
output_flush (GOutputStream *stream, GCancellable *cancellable, GError **error)
{
  GtTlsSocketOutput *self = GT_TLS_SOCKET_OUTPUT (stream);
  gboolean ok;

  g_mutex_lock (&self->lock);
  ok = flush_blocking_locked (self, cancellable, error);
  g_mutex_unlock (&self->lock);
  return ok;
}

static gboolean
output_close (GOutputStream *stream, GCancellable *cancellable, GError **error)
{
  return TRUE; /* the GIOStream flushes and closes base */
}

static gboolean
output_can_poll (GPollableOutputStream *stream)
{
  return TRUE;
}

static gboolean
output_has_room (GtTlsSocketOutput *self)
{
  return self->flush != NULL && self->end - self->start < OUT_SIZE;
}

static gboolean
output_is_writable (GPollableOutputStream *stream)
{
  GtTlsSocketOutput *self = GT_TLS_SOCKET_OUTPUT (stream);

  return output_has_room (self)
         || g_pollable_output_stream_is_writable (G_POLLABLE_OUTPUT_STREAM (self->base));
}

static gboolean
output_has_room_cb (gpointer data)
{
  return output_has_room (data);
}

/* Ready while the queue has room or base is writable. */
static GSource *
output_create_source (GPollableOutputStream *stream, GCancellable *cancellable)
{
  GtTlsSocketOutput *self = GT_TLS_SOCKET_OUTPUT (stream);
  g_autoptr (GSource) base_source
    = g_pollable_output_stream_create_source (G_POLLABLE_OUTPUT_STREAM (self->base), NULL);

  return _gt_ready_source_new (G_OBJECT (stream), output_has_room_cb, g_object_ref (self),
                               g_object_unref, base_source, cancellable);
}

static void
gt_tls_socket_output_finalize (GObject *object)
{
  GtTlsSocketOutput *self = GT_TLS_SOCKET_OUTPUT (object);

  g_clear_object (&self->base);
  g_free (self->buf);
  g_clear_error (&self->error);
  g_mutex_clear (&self->lock);
  G_OBJECT_CLASS (gt_tls_socket_output_parent_class)->finalize (object);
}

static void
gt_tls_socket_output_class_init (GtTlsSocketOutputClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = gt_tls_socket_output_finalize;
  G_OUTPUT_STREAM_CLASS (klass)->write_fn = output_write;
  G_OUTPUT_STREAM_CLASS (klass)->flush = output_flush;
  G_OUTPUT_STREAM_CLASS (klass)->close_fn = output_close;
}

static void
output_pollable_init (GPollableOutputStreamInterface *iface)
{
  iface->can_poll = output_can_poll;
  iface->is_writable = output_is_writable;
  iface->create_source = output_create_source;
  iface->write_nonblocking = output_write_nonblocking;
}

static void
gt_tls_socket_output_init (GtTlsSocketOutput *self)
{
  g_mutex_init (&self->lock);
}

/* Stops gathering: later writes pass straight through. Sends what is queued (blocking). */
static gboolean
output_stop (GtTlsSocketOutput *self, GCancellable *cancellable, GError **error)
{
  gboolean ok;

  g_mutex_lock (&self->lock);
  ok = flush_blocking_locked (self, cancellable, error);
  if (self->flush != NULL)
    {
      g_source_destroy (self->flush);
      g_clear_pointer (&self->flush, g_source_unref);
    }
  g_mutex_unlock (&self->lock);
  return ok;
}

/* ------------------------------------------------------------------------------------------ */
/* The GIOStream */

#define GT_TYPE_TLS_SOCKET (gt_tls_socket_get_type ())
G_DECLARE_FINAL_TYPE (GtTlsSocket, gt_tls_socket, GT, TLS_SOCKET, GIOStream)

struct _GtTlsSocket
{
  GIOStream parent_instance;
  GIOStream *base;
  GInputStream *in;
  GtTlsSocketOutput *out;
};

G_DEFINE_TYPE (GtTlsSocket, gt_tls_socket, G_TYPE_IO_STREAM)

static GInputStream *
get_input_stream (GIOStream *stream)
{
  return GT_TLS_SOCKET (stream)->in;
}

static GOutputStream *
get_output_stream (GIOStream *stream)
{
  return G_OUTPUT_STREAM (GT_TLS_SOCKET (stream)->out);
}

/* Runs in the caller's thread (GIO's TLS close thread, or GIO's default close_async worker). */
static gboolean
stream_close (GIOStream *stream, GCancellable *cancellable, GError **error)
{
  GtTlsSocket *self = GT_TLS_SOCKET (stream);
  g_autoptr (GError) local = NULL;

  if (!output_stop (self->out, cancellable, &local))
    g_debug ("TLS socket: sending the last records: %s", local->message);
  g_input_stream_close (self->in, NULL, NULL);
  return g_io_stream_close (self->base, cancellable, error);
}

static void
gt_tls_socket_dispose (GObject *object)
{
  GtTlsSocket *self = GT_TLS_SOCKET (object);

  /* The flush source holds the output stream: never leave it attached. */
  if (self->out != NULL && self->out->flush != NULL)
    output_stop (self->out, NULL, NULL);
  G_OBJECT_CLASS (gt_tls_socket_parent_class)->dispose (object);
}

static void
gt_tls_socket_finalize (GObject *object)
{
  GtTlsSocket *self = GT_TLS_SOCKET (object);

  g_clear_object (&self->in);
  g_clear_object (&self->out);
  g_clear_object (&self->base);
  G_OBJECT_CLASS (gt_tls_socket_parent_class)->finalize (object);
}

static void
gt_tls_socket_class_init (GtTlsSocketClass *klass)
{
  GIOStreamClass *io_class = G_IO_STREAM_CLASS (klass);

  G_OBJECT_CLASS (klass)->dispose = gt_tls_socket_dispose;
  G_OBJECT_CLASS (klass)->finalize = gt_tls_socket_finalize;
  io_class->get_input_stream = get_input_stream;
  io_class->get_output_stream = get_output_stream;
  io_class->close_fn = stream_close;
}

static void
gt_tls_socket_init (GtTlsSocket *self)
{
}

GIOStream *
gt_tls_socket_new (GIOStream *base)
{
  GtTlsSocket *self;
  GtReadAheadInput *in;
  GtTlsSocketOutput *out;

  g_return_val_if_fail (G_IS_IO_STREAM (base), NULL);
  g_return_val_if_fail (G_IS_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (base)), NULL);
  g_return_val_if_fail (G_IS_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (base)), NULL);

  self = g_object_new (GT_TYPE_TLS_SOCKET, NULL);
  in = g_object_new (GT_TYPE_READ_AHEAD_INPUT, NULL);
  in->base = g_object_ref (g_io_stream_get_input_stream (base));
  out = g_object_new (GT_TYPE_TLS_SOCKET_OUTPUT, NULL);
  out->base = g_object_ref (g_io_stream_get_output_stream (base));
  if (G_IS_SOCKET_CONNECTION (base))
    {
      GSocket *socket = g_socket_connection_get_socket (G_SOCKET_CONNECTION (base));

      out->flush = g_source_new (&flush_funcs, sizeof (FlushSource));
      g_source_set_static_name (out->flush, "GtTlsSocketFlush");
      ((FlushSource *) out->flush)->output = g_object_ref (out);
      out->fd_tag = g_source_add_unix_fd (out->flush, g_socket_get_fd (socket), 0);
      g_source_attach (out->flush, g_main_context_get_thread_default ());
    }
  self->base = g_object_ref (base);
  self->in = G_INPUT_STREAM (in);
  self->out = out;
  return G_IO_STREAM (self);
}
