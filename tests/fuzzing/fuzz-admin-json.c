/* fuzz-admin-json.c: libFuzzer target for the admin API's request bodies: the bounded JSON
 * parser, the document → YAML writer (which must read back as the same document with one path
 * per line), secret blanking, and the real loader's check of the result. */
#include <stdlib.h>
#include <string.h>

#include "gt-admin-config.h"

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

/* Scalars read back as strings (null stays null). */
static gboolean
same (JsonNode *sent, JsonNode *back)
{
  if (JSON_NODE_HOLDS_NULL (sent))
    return JSON_NODE_HOLDS_NULL (back);
  if (JSON_NODE_HOLDS_OBJECT (sent))
    {
      JsonObject *a = json_node_get_object (sent);
      JsonObjectIter iter;
      const char *name;
      JsonNode *member;

      if (!JSON_NODE_HOLDS_OBJECT (back)
          || json_object_get_size (a) != json_object_get_size (json_node_get_object (back)))
        return FALSE;
      json_object_iter_init (&iter, a);
      while (json_object_iter_next (&iter, &name, &member))
        {
          JsonNode *other = json_object_get_member (json_node_get_object (back), name);

          if (other == NULL || !same (member, other))
            return FALSE;
        }
      return TRUE;
    }
  if (JSON_NODE_HOLDS_ARRAY (sent))
    {
      JsonArray *a = json_node_get_array (sent);
      JsonArray *b;

      if (!JSON_NODE_HOLDS_ARRAY (back))
        return FALSE;
      b = json_node_get_array (back);
      if (json_array_get_length (a) != json_array_get_length (b))
        return FALSE;
      for (guint i = 0; i < json_array_get_length (a); i++)
        if (!same (json_array_get_element (a, i), json_array_get_element (b, i)))
          return FALSE;
      return TRUE;
    }
  if (!JSON_NODE_HOLDS_VALUE (back) || json_node_get_value_type (back) != G_TYPE_STRING)
    return FALSE;
  if (json_node_get_value_type (sent) == G_TYPE_STRING)
    return strcmp (json_node_get_string (sent), json_node_get_string (back)) == 0;
  return TRUE; /* numbers and booleans come back as their text */
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (JsonNode) body = NULL;
  g_autoptr (JsonNode) back = NULL;
  g_autoptr (GPtrArray) lines = NULL;
  g_autoptr (GPtrArray) errors = NULL;
  g_autofree char *yaml = NULL;
  guint n_lines = 1;

  body = gt_admin_parse_json_body ((const char *) data, size, NULL);
  if (body == NULL)
    return 0;
  if (!JSON_NODE_HOLDS_OBJECT (body))
    abort ();
  yaml = gt_admin_config_to_yaml (body, &lines, NULL);
  if (yaml == NULL)
    return 0;
  for (const char *p = yaml; *p != '\0'; p++)
    n_lines += *p == '\n';
  if (lines->len != n_lines) /* index 0 + one entry per line (the last line is empty) */
    abort ();
  back = gt_admin_config_from_yaml (yaml, strlen (yaml), NULL);
  if (back == NULL || !same (body, back))
    abort ();
  gt_admin_config_check (GT_CONFIG_KIND_SERVER, yaml, "server.yaml", lines, &errors, NULL);
  for (guint i = 0; i < errors->len; i++)
    if (((GtAdminFieldError *) errors->pdata[i])->message == NULL)
      abort ();
  g_clear_pointer (&errors, g_ptr_array_unref);
  gt_admin_config_check (GT_CONFIG_KIND_CLIENT, yaml, "client.yaml", lines, &errors, NULL);
  gt_admin_config_blank_secrets (body);
  return 0;
}
