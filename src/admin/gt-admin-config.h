/* gt-admin-config.h: the admin UI's configuration document: GT's YAML schema as JSON, converted
 * both ways, checked by the real loader, secrets kept out of what the browser sees. */
#pragma once

#include <json-glib/json-glib.h>
#include "gt-config.h"

G_BEGIN_DECLS

/* Bounds on a document from a request: nesting, number of values, length of a string. */
#define GT_ADMIN_CONFIG_MAX_DEPTH 8
#define GT_ADMIN_CONFIG_MAX_NODES 20000
#define GT_ADMIN_CONFIG_MAX_STRING 4096
/* Bounds on a request body. */
#define GT_ADMIN_MAX_BODY (1024 * 1024)

/* One field's problem: path "options.addr", "users.alice.secret", "services.0.local" (or "" for
 * the whole file), and the loader's "FILE:LINE:COLUMN: message". */
typedef struct
{
  char *field;
  char *message;
  guint line;
  guint column;
} GtAdminFieldError;

void gt_admin_field_error_free (GtAdminFieldError *e);

/* Parses a request body as a JSON object within the bounds above. */
JsonNode *gt_admin_parse_json_body (const char *data, gsize len, GError **error);

/* YAML text → document (mappings → objects, sequences → arrays, scalars → strings; null → null). */
JsonNode *gt_admin_config_from_yaml (const char *data, gsize len, GError **error);
/* Document → YAML (every scalar double-quoted). lines (may be NULL) receives, per line number
 * (1-based), the path of the value written on that line (GPtrArray of char*, "" when none).
 * Fails on a document outside the bounds or with values other than objects, arrays, strings,
 * numbers, booleans and null. */
char *gt_admin_config_to_yaml (JsonNode *doc, GPtrArray **lines, GError **error);

/* Replaces every secret (keys "secret" and "password") by "" (for answers). */
void gt_admin_config_blank_secrets (JsonNode *doc);
/* In doc, every secret given as "" (or missing for an existing user or options entry) takes the
 * value from old (may be NULL) at the same path; a password that is not a hash yet is hashed. */
gboolean gt_admin_config_merge_secrets (JsonNode *doc, JsonNode *old, GError **error);

/* Loads and validates YAML text as a config of kind with the real loader. Returns TRUE, or FALSE
 * with *errors (GtAdminFieldError*) mapped to fields through lines. */
gboolean gt_admin_config_check (GtConfigKind kind, const char *yaml, const char *filename,
                                GPtrArray *lines, GPtrArray **errors, GPtrArray **warnings);

G_END_DECLS
