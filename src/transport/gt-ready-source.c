/* gt-ready-source.c: the GSource of gt's own pollable streams: ready on a predicate or a child. */
#include "config.h"

#include "gt-fd-source.h"
#include "gt-ready-source.h"

typedef struct
{
  GSource source;
  GObject *stream;
  gboolean (*ready) (gpointer data);
  gpointer data;
  GDestroyNotify data_free;
} ReadySource;

static gboolean
ready_prepare (GSource *source, gint *timeout)
{
  ReadySource *rs = (ReadySource *) source;

  *timeout = -1;
  return rs->ready (rs->data);
}

static gboolean
ready_check (GSource *source)
{
  ReadySource *rs = (ReadySource *) source;

  return rs->ready (rs->data);
}

static gboolean
ready_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  GPollableSourceFunc func = (GPollableSourceFunc) (void (*) (void)) callback;

  if (func == NULL)
    return G_SOURCE_REMOVE;
  return func (((ReadySource *) source)->stream, user_data);
}

static void
ready_finalize (GSource *source)
{
  ReadySource *rs = (ReadySource *) source;

  g_clear_object (&rs->stream);
  if (rs->data_free != NULL)
    rs->data_free (rs->data);
}

static GSourceFuncs ready_funcs = {
  ready_prepare,
  ready_check,
  ready_dispatch,
  ready_finalize,
  (GSourceFunc) (void (*) (void)) gt_pollable_source_closure_callback,
  NULL,
};

GSource *
_gt_ready_source_new (GObject *stream, gboolean (*ready) (gpointer data), gpointer data,
                      GDestroyNotify data_free, GSource *child, GCancellable *cancellable)
{
  GSource *source = g_source_new (&ready_funcs, sizeof (ReadySource));
  ReadySource *rs = (ReadySource *) source;

  g_source_set_static_name (source, G_OBJECT_TYPE_NAME (stream));
  rs->stream = g_object_ref (stream);
  rs->ready = ready;
  rs->data = data;
  rs->data_free = data_free;
  /* Not blocked while it dispatches: that would take its child's fds out of the poll set and
   * wake the context twice per dispatch (see gt-fd-source.c); gt runs no nested loops. */
  g_source_set_can_recurse (source, TRUE);
  if (child != NULL)
    {
      g_source_set_dummy_callback (child);
      g_source_add_child_source (source, child);
    }
  if (cancellable != NULL)
    {
      g_autoptr (GSource) cancel = g_cancellable_source_new (cancellable);

      g_source_set_dummy_callback (cancel);
      g_source_add_child_source (source, cancel);
    }
  return source;
}
