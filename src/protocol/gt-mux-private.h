/* gt-mux-private.h: knobs of the multiplexer for its unit tests. */
#pragma once

#include "gt-mux.h"

G_BEGIN_DECLS

/* Pause the input at pause_input queued bytes instead of GT_MUX_OUT_PAUSE_INPUT (resume below a
 * quarter of it). Below 2 MiB, DATA alone could pause the input: tests with raw peers only. */
void _gt_mux_set_input_pause (GtMux *mux, gsize pause_input);

G_END_DECLS
