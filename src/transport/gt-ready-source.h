/* gt-ready-source.h: the GSource of gt's own pollable streams: ready on a predicate or a child. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* A source for a pollable stream's create_source: it dispatches (a GPollableSourceFunc on stream)
 * while ready(data) holds, checked at every main loop iteration (so state changed by dispatches
 * of the same context needs no wakeup), or when child (owned by the caller; may be NULL, e.g. the
 * socket's own pollable source) or the cancellable fires. data_free releases data with the
 * source. */
GSource *_gt_ready_source_new (GObject *stream, gboolean (*ready) (gpointer data), gpointer data,
                               GDestroyNotify data_free, GSource *child,
                               GCancellable *cancellable);

G_END_DECLS
