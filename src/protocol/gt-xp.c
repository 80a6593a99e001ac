/* gt-xp.c: GT's P2P signalling items ([len:u16][JSON]) and their JSON shapes. */
#include "config.h"

#include "gt-xp.h"

#include <json-glib/json-glib.h>
#include <string.h>

G_DEFINE_QUARK (gt-xp-error-quark, gt_xp_error)

GtDecodeResult
gt_xp_item_decode (const guint8 *buf, gsize len, const guint8 **item, gsize *item_len,
                   gsize *consumed, GError **error)
{
  gsize n;

  g_return_val_if_fail (buf != NULL || len == 0, GT_DECODE_ERROR);
  g_return_val_if_fail (item != NULL && item_len != NULL && consumed != NULL, GT_DECODE_ERROR);

  *item = NULL;
  *item_len = 0;
  *consumed = 0;
  if (len < 2)
    return GT_DECODE_NEED_MORE;
  n = ((gsize) buf[0] << 8) | buf[1];
  if (n == 0)
    {
      g_set_error_literal (error, GT_XP_ERROR, GT_XP_ERROR_MALFORMED, "empty signalling item");
      return GT_DECODE_ERROR;
    }
  if (n > GT_XP_MAX_ITEM)
    {
      g_set_error (error, GT_XP_ERROR, GT_XP_ERROR_TOO_LARGE,
                   "signalling item of %" G_GSIZE_FORMAT " bytes (at most %d)", n, GT_XP_MAX_ITEM);
      return GT_DECODE_ERROR;
    }
  if (len - 2 < n)
    return GT_DECODE_NEED_MORE;
  *item = buf + 2;
  *item_len = n;
  *consumed = 2 + n;
  return GT_DECODE_OK;
}

void
gt_xp_item_encode (GByteArray *out, const char *json)
{
  gsize n = strlen (json);
  guint8 hdr[2];

  g_return_if_fail (n > 0 && n <= GT_XP_MAX_ITEM);

  hdr[0] = (guint8) (n >> 8);
  hdr[1] = (guint8) n;
  g_byte_array_append (out, hdr, 2);
  g_byte_array_append (out, (const guint8 *) json, (guint) n);
}

void
gt_xp_item_clear (GtXpItem *item)
{
  g_clear_pointer (&item->type, g_free);
  g_clear_pointer (&item->sdp, g_free);
  g_clear_pointer (&item->candidate, g_free);
  g_clear_pointer (&item->sdp_mid, g_free);
}

static gboolean
malformed (GError **error, const char *what)
{
  g_set_error (error, GT_XP_ERROR, GT_XP_ERROR_MALFORMED, "bad signalling item: %s", what);
  return FALSE;
}

/* A string member: TRUE with *out NULL when absent (or null and allow_null); FALSE when of
 * another type or not UTF-8. */
static gboolean
get_string (JsonObject *obj, const char *name, gboolean allow_null, char **out)
{
  JsonNode *node = json_object_get_member (obj, name);
  const char *s;

  *out = NULL;
  if (node == NULL || (allow_null && JSON_NODE_HOLDS_NULL (node)))
    return TRUE;
  if (!JSON_NODE_HOLDS_VALUE (node) || json_node_get_value_type (node) != G_TYPE_STRING)
    return FALSE;
  s = json_node_get_string (node);
  /* json-glib turns escapes such as a lone \ud800 into bytes that are not UTF-8. */
  if (s == NULL || !g_utf8_validate (s, -1, NULL))
    return FALSE;
  *out = g_strdup (s);
  return TRUE;
}

gboolean
gt_xp_item_parse (const guint8 *json, gsize len, GtXpItem *out, GError **error)
{
  g_autoptr (JsonParser) parser = json_parser_new_immutable ();
  g_autoptr (GError) local_error = NULL;
  JsonNode *root;
  JsonObject *obj;

  g_return_val_if_fail (json != NULL || len == 0, FALSE);
  g_return_val_if_fail (out != NULL, FALSE);

  memset (out, 0, sizeof *out);
  out->sdp_mline_index = -1;
  if (len == 0 || len > GT_XP_MAX_ITEM)
    return malformed (error, "empty or too long");
  if (memchr (json, '\0', len) != NULL || !g_utf8_validate ((const char *) json, (gssize) len, NULL))
    return malformed (error, "not UTF-8 text");
  if (!json_parser_load_from_data (parser, (const char *) json, (gssize) len, &local_error))
    return malformed (error, "not JSON");
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    return malformed (error, "not a JSON object");
  obj = json_node_get_object (root);

  if (json_object_has_member (obj, "sdp") || json_object_has_member (obj, "type"))
    {
      out->kind = GT_XP_ITEM_DESCRIPTION;
      if (!get_string (obj, "type", FALSE, &out->type) || out->type == NULL
          || (strcmp (out->type, "offer") != 0 && strcmp (out->type, "answer") != 0))
        {
          gt_xp_item_clear (out);
          return malformed (error, "type is not \"offer\" or \"answer\"");
        }
      if (!get_string (obj, "sdp", FALSE, &out->sdp) || out->sdp == NULL)
        {
          gt_xp_item_clear (out);
          return malformed (error, "sdp is not a string");
        }
      return TRUE;
    }
  if (json_object_has_member (obj, "candidate"))
    {
      JsonNode *index;

      out->kind = GT_XP_ITEM_CANDIDATE;
      if (!get_string (obj, "candidate", FALSE, &out->candidate)
          || !get_string (obj, "sdpMid", TRUE, &out->sdp_mid))
        {
          gt_xp_item_clear (out);
          return malformed (error, "candidate or sdpMid is not a string");
        }
      index = json_object_get_member (obj, "sdpMLineIndex");
      if (index != NULL && !JSON_NODE_HOLDS_NULL (index))
        {
          gint64 v;

          if (!JSON_NODE_HOLDS_VALUE (index) || json_node_get_value_type (index) != G_TYPE_INT64
              || (v = json_node_get_int (index)) < 0 || v > G_MAXUINT16)
            {
              gt_xp_item_clear (out);
              return malformed (error, "sdpMLineIndex is not a number 0..65535");
            }
          out->sdp_mline_index = (gint) v;
        }
      return TRUE;
    }
  return malformed (error, "neither a session description nor a candidate");
}

static char *
to_json (JsonBuilder *builder)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = json_builder_get_root (builder);

  json_generator_set_root (gen, root);
  return json_generator_to_data (gen, NULL);
}

char *
gt_xp_description_to_json (const char *type, const char *sdp)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "type");
  json_builder_add_string_value (b, type);
  json_builder_set_member_name (b, "sdp");
  json_builder_add_string_value (b, sdp);
  json_builder_end_object (b);
  return to_json (b);
}

char *
gt_xp_candidate_to_json (const char *candidate, const char *sdp_mid, gint sdp_mline_index)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "candidate");
  json_builder_add_string_value (b, candidate);
  json_builder_set_member_name (b, "sdpMid");
  if (sdp_mid != NULL)
    json_builder_add_string_value (b, sdp_mid);
  else
    json_builder_add_null_value (b);
  json_builder_set_member_name (b, "sdpMLineIndex");
  if (sdp_mline_index >= 0)
    json_builder_add_int_value (b, sdp_mline_index);
  else
    json_builder_add_null_value (b);
  json_builder_end_object (b);
  return to_json (b);
}
