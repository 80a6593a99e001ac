/* test-config-secrets.c: control APIs never return `secret:` values, and a document sent back with
 * the placeholder keeps the saved secret (gt-config-secrets.c). */
#include "config.h"

#include <string.h>

#include "gt-config.h"

static const char client_doc[] = "type: client\n"
                                 "options:\n"
                                 "  id: a\n"
                                 "  secret: 'top s3cret'\n"
                                 "  remote: tcp://127.0.0.1:1\n";

static const char server_doc[] = "users:\n"
                                 "  alice:\n"
                                 "    secret: alice-secret\n"
                                 "  bob: {secret: \"bob-secret\"}\n"
                                 "  carol:\n"
                                 "    secret: |\n"
                                 "      carol-secret\n"
                                 "    tcp:\n"
                                 "      - range: 1-2\n"
                                 "options:\n"
                                 "  addr: 127.0.0.1:1\n";

static void
test_redact (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *c = gt_config_redact_secrets (client_doc, -1, &error);
  g_autofree char *s = NULL;

  g_assert_no_error (error);
  g_assert_cmpstr (c, ==,
                   "type: client\noptions:\n  id: a\n  secret: \"(unchanged)\"\n"
                   "  remote: tcp://127.0.0.1:1\n");
  s = gt_config_redact_secrets (server_doc, -1, &error);
  g_assert_no_error (error);
  g_assert_null (strstr (s, "alice-secret"));
  g_assert_null (strstr (s, "bob-secret"));
  g_assert_null (strstr (s, "carol-secret"));
  g_assert_nonnull (strstr (s, "  bob: {secret: \"(unchanged)\"}\n"));
  /* The block scalar's line break stays: the rest of the mapping is intact. */
  g_assert_nonnull (strstr (s, "    secret: \"(unchanged)\"\n    tcp:\n"));
}

static void
test_restore (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *s = gt_config_redact_secrets (server_doc, -1, &error);
  g_autofree char *back = NULL;
  g_autofree char *edited = NULL;
  GString *e;

  g_assert_no_error (error);
  back = gt_config_restore_secrets (s, -1, server_doc, -1, &error);
  g_assert_no_error (error);
  /* Single-line scalars come back as they were; a block scalar as a quoted one. */
  {
    GString *want = g_string_new (server_doc);

    g_string_replace (want, "    secret: |\n      carol-secret\n", "    secret: \"carol-secret\\x0a\"\n",
                      1);
    g_assert_cmpstr (back, ==, want->str);
    g_string_free (want, TRUE);
  }

  /* Secrets move with their user, a new value replaces the old one. */
  e = g_string_new (s);
  g_string_replace (e, "  bob: {secret: \"(unchanged)\"}", "  bob: {secret: fresh}", 1);
  g_string_replace (e, "users:\n", "users:\n  dave:\n    secret: \"(unchanged)\"\n", 1);
  edited = g_string_free (e, FALSE);
  g_clear_pointer (&back, g_free);
  back = gt_config_restore_secrets (edited, -1, server_doc, -1, &error);
  /* dave had no secret: refused with the place of the placeholder. */
  g_assert_null (back);
  g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_VALUE);
  g_assert_true (g_str_has_prefix (error->message, "3:13: "));
  g_clear_error (&error);

  e = g_string_new (s);
  g_string_replace (e, "  bob: {secret: \"(unchanged)\"}", "  bob: {secret: fresh}", 1);
  g_free (edited);
  edited = g_string_free (e, FALSE);
  back = gt_config_restore_secrets (edited, -1, server_doc, -1, &error);
  g_assert_no_error (error);
  g_assert_nonnull (strstr (back, "    secret: alice-secret\n"));
  g_assert_nonnull (strstr (back, "  bob: {secret: fresh}\n"));
  g_assert_nonnull (strstr (back, "    secret: \"carol-secret\\x0a\"\n"));
  g_assert_null (strstr (back, "bob-secret"));
}

/* Marks count characters: a comment in Chinese before the secret must not shift the bytes. */
static void
test_utf8 (void)
{
  static const char doc[] = "\xef\xbb\xbf# 客户端配置，密钥见下\noptions:\n  id: 用户\n  secret: 秘密-s3cret\n";
  g_autoptr (GError) error = NULL;
  g_autofree char *r = gt_config_redact_secrets (doc, -1, &error);
  g_autofree char *back = NULL;

  g_assert_no_error (error);
  g_assert_cmpstr (r, ==, "\xef\xbb\xbf# 客户端配置，密钥见下\noptions:\n  id: 用户\n  secret: \"(unchanged)\"\n");
  back = gt_config_restore_secrets (r, -1, doc, -1, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (back, ==, doc);
  g_assert_null (gt_config_redact_secrets ("secret: \xff\n", -1, &error));
  g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_SYNTAX);
}

static void
test_syntax (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *s = gt_config_redact_secrets ("a: [\n", -1, &error);

  g_assert_null (s);
  g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_SYNTAX);
  g_assert_true (g_str_has_prefix (error->message, "2:1: "));
}

/* The keyring marker replaces the client's secret only; the rest stays byte for byte. */
static void
test_replace (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *c = gt_config_replace_secret (client_doc, -1, "options/secret",
                                                 GT_CONFIG_SECRET_KEYRING, &error);
  g_autofree char *s = NULL;
  g_autofree char *none = NULL;
  g_autofree char *bad = NULL;
  g_autoptr (GtClientConfig) config = gt_client_config_new ();

  g_assert_no_error (error);
  g_assert_cmpstr (c, ==,
                   "type: client\noptions:\n  id: a\n  secret: \"(keyring)\"\n"
                   "  remote: tcp://127.0.0.1:1\n");
  g_assert_true (gt_client_config_load_data (config, c, -1, "c.yaml", NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (config->secret, ==, GT_CONFIG_SECRET_KEYRING);
  /* Another path: nothing to replace, the users' secrets stay. */
  s = gt_config_replace_secret (server_doc, -1, "options/secret", "x", &error);
  g_assert_no_error (error);
  g_assert_cmpstr (s, ==, server_doc);
  /* A block scalar keeps its line break. */
  none = gt_config_replace_secret ("options:\n  secret: |\n    abc\n  id: b\n", -1,
                                   "options/secret", "(keyring)", &error);
  g_assert_no_error (error);
  g_assert_cmpstr (none, ==, "options:\n  secret: \"(keyring)\"\n  id: b\n");
  bad = gt_config_replace_secret ("options: [\n", -1, "options/secret", "x", &error);
  g_assert_null (bad);
  g_assert_error (error, GT_CONFIG_ERROR, GT_CONFIG_ERROR_SYNTAX);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/core/config-secrets/redact", test_redact);
  g_test_add_func ("/gt/core/config-secrets/restore", test_restore);
  g_test_add_func ("/gt/core/config-secrets/syntax", test_syntax);
  g_test_add_func ("/gt/core/config-secrets/utf8", test_utf8);
  g_test_add_func ("/gt/core/config-secrets/replace", test_replace);
  return g_test_run ();
}
