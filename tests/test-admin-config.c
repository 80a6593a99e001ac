/* test-admin-config.c: the admin UI's configuration document (JSON ⇄ YAML, field errors,
 * secrets) and its password hashes. */
#include "config.h"

#include <string.h>

#include "gt-admin-auth.h"
#include "gt-admin-config.h"

static JsonNode *
parse (const char *text)
{
  g_autoptr (GError) error = NULL;
  JsonNode *node = gt_admin_parse_json_body (text, strlen (text), &error);

  g_assert_no_error (error);
  return node;
}

static void
test_round_trip (void)
{
  g_autoptr (JsonNode) doc = parse ("{\"type\":\"server\",\"options\":{\"addr\":\"127.0.0.1:80\","
                                    "\"odd\":\"a\\\"b\\\\c\\n\\u0001\\u00e9\"},\"users\":{\"a b\":"
                                    "{\"tcp\":[{\"range\":\"1-2\"}],\"host\":{}}},\"n\":null}");
  g_autoptr (GPtrArray) lines = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *yaml = gt_admin_config_to_yaml (doc, &lines, &error);
  g_autoptr (JsonNode) back = NULL;
  g_auto (GStrv) text_lines = NULL;

  g_assert_no_error (error);
  back = gt_admin_config_from_yaml (yaml, strlen (yaml), &error);
  g_assert_no_error (error);
  g_assert_true (json_node_equal (doc, back));
  /* One value per line, in the document's order, each line knows its path. */
  text_lines = g_strsplit (yaml, "\n", 0);
  g_assert_cmpstr (lines->pdata[5], ==, "options.odd");
  g_assert_true (g_str_has_prefix (text_lines[4], "  \"odd\": "));
  g_assert_cmpstr (text_lines[1], ==, "\"type\": \"server\"");
}

static void
test_bounds (void)
{
  g_autoptr (GError) error = NULL;
  GString *deep = g_string_new (NULL);
  JsonNode *node;

  for (guint i = 0; i < 20; i++)
    g_string_append (deep, "{\"a\":");
  g_string_append (deep, "1");
  for (guint i = 0; i < 20; i++)
    g_string_append (deep, "}");
  node = gt_admin_parse_json_body (deep->str, deep->len, &error);
  g_assert_null (node);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
  g_clear_error (&error);
  g_string_free (deep, TRUE);

  node = gt_admin_parse_json_body ("[1]", 3, &error);
  g_assert_null (node);
  g_assert_nonnull (strstr (error->message, "object"));
  g_clear_error (&error);
  /* json-glib decodes "\2" into a byte that is not UTF-8: refused. */
  node = gt_admin_parse_json_body ("{\"a\":\"\\2\"}", 9, &error);
  g_assert_null (node);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
}

static void
test_field_errors (void)
{
  g_autoptr (JsonNode) doc = parse ("{\"type\":\"client\",\"options\":{\"id\":\"a\",\"secret\":\"s\","
                                    "\"remote\":\"tcp://127.0.0.1:1\"},\"services\":["
                                    "{\"local\":\"http://127.0.0.1:2\"},"
                                    "{\"local\":\"http://127.0.0.1:3\",\"localTimeout\":\"soon\"}]}");
  g_autoptr (GPtrArray) lines = NULL;
  g_autoptr (GPtrArray) errors = NULL;
  g_autofree char *yaml = gt_admin_config_to_yaml (doc, &lines, NULL);
  GtAdminFieldError *e;

  g_assert_false (gt_admin_config_check (GT_CONFIG_KIND_CLIENT, yaml, "/x/client.yaml", lines,
                                         &errors, NULL));
  g_assert_cmpuint (errors->len, ==, 1);
  e = errors->pdata[0];
  g_assert_cmpstr (e->field, ==, "services.1.localTimeout");
  g_assert_true (g_str_has_prefix (e->message, "/x/client.yaml:"));
  g_assert_nonnull (strstr (e->message, "soon"));
  g_assert_cmpuint (e->line, >, 0);
}

static void
test_secrets (void)
{
  g_autoptr (JsonNode) old = parse ("{\"options\":{\"password\":\"p1\",\"secret\":\"s1\"},"
                                    "\"users\":{\"a\":{\"secret\":\"sa\"},\"b\":{\"secret\":\"sb\"}}}");
  g_autoptr (JsonNode) blank = parse ("{\"options\":{\"password\":\"p1\",\"secret\":\"s1\"},"
                                      "\"users\":{\"a\":{\"secret\":\"sa\"},\"b\":{\"secret\":\"sb\"}}}");
  g_autoptr (JsonNode) doc = parse ("{\"options\":{\"password\":\"\",\"secret\":\"new\"},"
                                    "\"users\":{\"a\":{\"secret\":\"\"},\"b\":{},\"c\":{\"secret\":\"\"}}}");
  g_autoptr (GError) error = NULL;
  g_autofree char *text = NULL;
  JsonObject *o = json_node_get_object (doc);

  gt_admin_config_blank_secrets (blank);
  text = json_to_string (blank, FALSE);
  g_assert_null (strstr (text, "p1"));
  g_assert_null (strstr (text, "sa"));
  g_assert_null (strstr (text, "sb"));

  g_assert_true (gt_admin_config_merge_secrets (doc, old, &error));
  g_assert_no_error (error);
  /* Kept: the plaintext password is then hashed; a new secret wins; "" and missing keep. */
  g_assert_true (gt_admin_password_is_hash (json_object_get_string_member (
      json_object_get_object_member (o, "options"), "password")));
  g_assert_true (gt_admin_password_verify (
      "p1", json_object_get_string_member (json_object_get_object_member (o, "options"),
                                           "password")));
  g_assert_cmpstr (json_object_get_string_member (json_object_get_object_member (o, "options"),
                                                  "secret"),
                   ==, "new");
  g_assert_cmpstr (json_object_get_string_member (
                       json_object_get_object_member (json_object_get_object_member (o, "users"),
                                                      "a"),
                       "secret"),
                   ==, "sa");
  g_assert_cmpstr (json_object_get_string_member (
                       json_object_get_object_member (json_object_get_object_member (o, "users"),
                                                      "b"),
                       "secret"),
                   ==, "sb");
  /* A new user without a secret gets none (validation then asks for one). */
  g_assert_false (json_object_has_member (
      json_object_get_object_member (json_object_get_object_member (o, "users"), "c"),
      "secret"));
}

static void
test_password_hash (void)
{
  g_autofree char *a = gt_admin_password_hash ("hunter22", NULL);
  g_autofree char *b = gt_admin_password_hash ("hunter22", NULL);
  g_autofree char *tampered = g_strdup (a);

  g_assert_true (g_str_has_prefix (a, "pbkdf2-sha256$200000$"));
  g_assert_cmpstr (a, !=, b); /* salted */
  g_assert_true (gt_admin_password_verify ("hunter22", a));
  g_assert_true (gt_admin_password_verify ("hunter22", b));
  g_assert_false (gt_admin_password_verify ("hunter23", a));
  g_assert_false (gt_admin_password_verify ("", a));
  tampered[strlen (tampered) - 2] = tampered[strlen (tampered) - 2] == 'A' ? 'B' : 'A';
  g_assert_false (gt_admin_password_verify ("hunter22", tampered));
  /* GT's plaintext still compares; malformed hashes are plaintext, not a crash. */
  g_assert_true (gt_admin_password_verify ("plain", "plain"));
  g_assert_false (gt_admin_password_is_hash ("pbkdf2-sha256$0$abc$def"));
  g_assert_false (gt_admin_password_is_hash ("pbkdf2-sha256$10$!!$def"));
  g_assert_false (gt_admin_password_verify ("x", "pbkdf2-sha256$10$!!$def"));
  g_free (tampered);
  tampered = gt_admin_random_token (16);
  g_assert_cmpuint (strlen (tampered), ==, 32);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/admin/config/round-trip", test_round_trip);
  g_test_add_func ("/gt/admin/config/bounds", test_bounds);
  g_test_add_func ("/gt/admin/config/field-errors", test_field_errors);
  g_test_add_func ("/gt/admin/config/secrets", test_secrets);
  g_test_add_func ("/gt/admin/auth/password-hash", test_password_hash);
  return g_test_run ();
}
