/* gt-read-ahead.c: a connection that reads its socket in large chunks, for TLS's small reads. */
#include "config.h"

#define G_LOG_DOMAIN "gt-transport"

#include <string.h>

#include "gt-read-ahead.h"

#define BUF_SIZE (256 * 1024)

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

/* Ready while buffered bytes wait (checked at each main loop iteration) or base is readable. */
typedef struct
{
  GSource source;
  GtReadAheadInput *input;
} BufferedSource;

static gboolean
buffered_prepare (GSource *source, gint *timeout)
{
  GtReadAheadInput *self = ((BufferedSource *) source)->input;

  *timeout = -1;
  return self->end > self->start;
}

static gboolean
buffered_check (GSource *source)
{
  GtReadAheadInput *self = ((BufferedSource *) source)->input;

  return self->end > self->start;
}

static gboolean
buffered_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  GPollableSourceFunc func = (GPollableSourceFunc) (void (*) (void)) callback;

  return func != NULL ? func (G_OBJECT (((BufferedSource *) source)->input), user_data)
                      : G_SOURCE_REMOVE;
}

static void
buffered_finalize (GSource *source)
{
  g_clear_object (&((BufferedSource *) source)->input);
}

static GSourceFuncs buffered_funcs = {
  buffered_prepare,
  buffered_check,
  buffered_dispatch,
  buffered_finalize,
  NULL,
  NULL,
};

static GSource *
input_create_source (GPollableInputStream *stream, GCancellable *cancellable)
{
  GtReadAheadInput *self = GT_READ_AHEAD_INPUT (stream);
  GSource *source = g_source_new (&buffered_funcs, sizeof (BufferedSource));
  g_autoptr (GSource) base_source = NULL;

  g_source_set_static_name (source, "GtReadAhead");
  ((BufferedSource *) source)->input = g_object_ref (self);
  base_source = g_pollable_input_stream_create_source (G_POLLABLE_INPUT_STREAM (self->base),
                                                       NULL);
  g_source_set_dummy_callback (base_source);
  g_source_add_child_source (source, base_source);
  if (cancellable != NULL)
    {
      g_autoptr (GSource) cancel = g_cancellable_source_new (cancellable);

      g_source_set_dummy_callback (cancel);
      g_source_add_child_source (source, cancel);
    }
  return source;
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
/* The GIOStream: base's output stream as it is */

#define GT_TYPE_READ_AHEAD (gt_read_ahead_get_type ())
G_DECLARE_FINAL_TYPE (GtReadAhead, gt_read_ahead, GT, READ_AHEAD, GIOStream)

struct _GtReadAhead
{
  GIOStream parent_instance;
  GIOStream *base;
  GInputStream *in;
};

G_DEFINE_TYPE (GtReadAhead, gt_read_ahead, G_TYPE_IO_STREAM)

static GInputStream *
get_input_stream (GIOStream *stream)
{
  return GT_READ_AHEAD (stream)->in;
}

static GOutputStream *
get_output_stream (GIOStream *stream)
{
  return g_io_stream_get_output_stream (GT_READ_AHEAD (stream)->base);
}

static gboolean
stream_close (GIOStream *stream, GCancellable *cancellable, GError **error)
{
  g_input_stream_close (GT_READ_AHEAD (stream)->in, NULL, NULL);
  return g_io_stream_close (GT_READ_AHEAD (stream)->base, cancellable, error);
}

static void
close_done_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  GError *error = NULL;

  if (g_io_stream_close_finish (G_IO_STREAM (source), result, &error))
    g_task_return_boolean (task, TRUE);
  else
    g_task_return_error (task, error);
}

/* GIO's default would close in a worker thread; base has its own async close. */
static void
stream_close_async (GIOStream *stream, int io_priority, GCancellable *cancellable,
                    GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = g_task_new (stream, cancellable, callback, user_data);

  g_task_set_source_tag (task, stream_close_async);
  g_input_stream_close (GT_READ_AHEAD (stream)->in, NULL, NULL);
  g_io_stream_close_async (GT_READ_AHEAD (stream)->base, io_priority, cancellable, close_done_cb,
                           task);
}

static gboolean
stream_close_finish (GIOStream *stream, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

static void
gt_read_ahead_finalize (GObject *object)
{
  GtReadAhead *self = GT_READ_AHEAD (object);

  g_clear_object (&self->in);
  g_clear_object (&self->base);
  G_OBJECT_CLASS (gt_read_ahead_parent_class)->finalize (object);
}

static void
gt_read_ahead_class_init (GtReadAheadClass *klass)
{
  GIOStreamClass *io_class = G_IO_STREAM_CLASS (klass);

  G_OBJECT_CLASS (klass)->finalize = gt_read_ahead_finalize;
  io_class->get_input_stream = get_input_stream;
  io_class->get_output_stream = get_output_stream;
  io_class->close_fn = stream_close;
  io_class->close_async = stream_close_async;
  io_class->close_finish = stream_close_finish;
}

static void
gt_read_ahead_init (GtReadAhead *self)
{
}

GIOStream *
gt_read_ahead_new (GIOStream *base)
{
  GtReadAhead *self;
  GtReadAheadInput *in;

  g_return_val_if_fail (G_IS_IO_STREAM (base), NULL);
  g_return_val_if_fail (G_IS_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (base)), NULL);

  self = g_object_new (GT_TYPE_READ_AHEAD, NULL);
  in = g_object_new (GT_TYPE_READ_AHEAD_INPUT, NULL);
  in->base = g_object_ref (g_io_stream_get_input_stream (base));
  self->base = g_object_ref (base);
  self->in = G_INPUT_STREAM (in);
  return G_IO_STREAM (self);
}
