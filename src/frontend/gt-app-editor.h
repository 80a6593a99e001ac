/* gt-app-editor.h: the configuration editor: a form for the common settings, or the YAML. */
#pragma once

#include <adwaita.h>
#include "gt-config.h"

G_BEGIN_DECLS

#define GT_TYPE_APP_EDITOR (gt_app_editor_get_type ())
G_DECLARE_FINAL_TYPE (GtAppEditor, gt_app_editor, GT, APP_EDITOR, AdwBin)

/* name NULL: a new file of kind; else the tunnel's document as GetConfig returned it (secrets are
 * "(unchanged)"; secret, when not NULL, replaces the client's). */
void gt_app_editor_load (GtAppEditor *self, GtConfigKind kind, const char *name,
                         const char *document, const char *secret);
GtConfigKind gt_app_editor_get_kind (GtAppEditor *self);
/* The file name to save to ("home.yaml"; ".yaml" added to a bare name). */
char *gt_app_editor_get_name (GtAppEditor *self);
/* The document to send: the YAML tab as typed, or the form rendered as YAML. */
char *gt_app_editor_get_document (GtAppEditor *self);
/* Shows a daemon error next to its field (by the line of the rendered form) or above the YAML. */
void gt_app_editor_show_error (GtAppEditor *self, const GError *error);
void gt_app_editor_clear_errors (GtAppEditor *self);
/* Sets a form field by id: name, remote, id, secret, addr, tlsAddr, service.N.local,
 * service.N.hostPrefix, service.N.remoteTCPPort, user.N.id, user.N.secret (N from 0; one past
 * the last adds a row). FALSE for an unknown id. */
gboolean gt_app_editor_set_field (GtAppEditor *self, const char *field, const char *value);

G_END_DECLS
