/* gt-module.h: gt's own loadable modules (the code that needs big libraries only some
 * configurations use), found and loaded once per process. */
#pragma once

#include <gmodule.h>

G_BEGIN_DECLS

/* Loads the module name ("gt-quic": the file gt-quic.so) and keeps it loaded for the life of the
 * process; its g_module_check_init registers what it provides with the seam it plugs into. A
 * module already loaded is not loaded again. Looks in $GT_MODULE_DIR when that is set (and only
 * there), else next to the gt binary (the build tree), else in the installed module directory.
 * needed_by names the configuration key that asked for it ("remoteSTUN", "quicAddr"): an error
 * (G_IO_ERROR_NOT_FOUND when the file is in none of those directories, G_IO_ERROR_FAILED when it
 * does not load) names the module, the key and where gt looked. */
gboolean gt_module_load (const char *name, const char *needed_by, GError **error);

/* For a module's g_module_check_init, with the PACKAGE_VERSION it was built with: NULL when that is
 * this gt's, else why the module must not load (a string that stays valid). */
const char *gt_module_check_version (const char *module_version);

G_END_DECLS
