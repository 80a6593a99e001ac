/* test-worker-report.c: the per-connection and per-stream counters a worker sends its manager
 * (gt-worker-report.c): built from the server's and the client's state, bounded in size, and
 * anything but a well-formed report refused. */
#include "config.h"

#include <string.h>

#include <gio/gio.h>

#include "gt-worker-report.h"

static GVariant *
parse_state (const char *text)
{
  g_autoptr (GError) error = NULL;
  GVariant *v = g_variant_parse (G_VARIANT_TYPE_VARDICT, text, NULL, NULL, &error);

  g_assert_no_error (error);
  return v; /* g_variant_parse gives a non-floating reference */
}

static const char server_state[]
  = "{'kind': <'server'>, 'clients': <[{'id': <'alice'>,"
    "  'tunnels': <[{'index': <uint32 0>, 'peer': <'10.0.0.1:5000'>, 'streams': <uint32 1>,"
    "                'bytesIn': <uint64 300>, 'bytesOut': <uint64 4000>}]>,"
    "  'streams': <[{'id': <uint32 7>, 'tunnel': <uint32 0>, 'service': <'web'>,"
    "                'remote': <'192.0.2.9:40000'>, 'bytesIn': <uint64 120>,"
    "                'bytesOut': <uint64 3000>, 'idleMs': <uint64 5>}]>}]>}";

static const char client_state[]
  = "{'kind': <'client'>, 'id': <'home'>,"
    " 'tunnelList': <[{'index': <uint32 0>, 'state': <'ready'>, 'remote': <'tcp://a:1'>,"
    "                  'streams': <uint32 0>, 'bytesIn': <uint64 1>, 'bytesOut': <uint64 2>},"
    "                 {'index': <uint32 1>, 'state': <'waiting'>, 'remote': <'tcp://b:1'>,"
    "                  'streams': <uint32 0>, 'bytesIn': <uint64 0>, 'bytesOut': <uint64 0>}]>,"
    " 'streamList': <@aa{sv} []>}";

static void
test_build (void)
{
  g_autoptr (GVariant) server = parse_state (server_state);
  g_autoptr (GVariant) client = parse_state (client_state);
  g_autoptr (GVariant) sd = gt_worker_details_build (server, 256);
  g_autoptr (GVariant) cd = gt_worker_details_build (client, 256);
  g_autofree char *s = g_variant_print (sd, FALSE);
  g_autofree char *c = g_variant_print (cd, FALSE);

  g_assert_cmpstr (s, ==,
                   "([('alice', 0, '10.0.0.1:5000', 'open', 1, 300, 4000)], "
                   "[('alice', 0, 7, 'web', '192.0.2.9:40000', 120, 3000)])");
  g_assert_cmpstr (c, ==,
                   "([('home', 0, 'tcp://a:1', 'ready', 0, 1, 2), "
                   "('home', 1, 'tcp://b:1', 'waiting', 0, 0, 0)], [])");
}

/* A line goes through the parser unchanged. */
static void
test_round_trip (void)
{
  g_autoptr (GVariant) server = parse_state (server_state);
  g_autoptr (GVariant) want = gt_worker_details_build (server, 256);
  g_autofree char *line = gt_worker_details_line (server);
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) got = NULL;

  g_assert_true (g_str_has_prefix (line, "GT_DETAILS="));
  got = gt_worker_details_parse (line + strlen ("GT_DETAILS="), &error);
  g_assert_no_error (error);
  g_assert_true (g_variant_equal (got, want));
}

/* Thousands of streams: the line stays within the datagram limit and still parses. */
static void
test_bounded (void)
{
  GString *text = g_string_new ("{'kind': <'client'>, 'id': <'many'>, 'tunnelList': <@aa{sv} []>,"
                                " 'streamList': <[");
  g_autoptr (GVariant) state = NULL;
  g_autoptr (GVariant) got = NULL;
  g_autoptr (GVariant) streams = NULL;
  g_autoptr (GError) error = NULL;
  g_autofree char *line = NULL;
  g_autofree char *service = g_strnfill (400, 's');

  for (guint i = 0; i < 3000; i++)
    g_string_append_printf (text,
                            "%s{'id': <uint32 %u>, 'tunnel': <uint32 0>, 'service': <'%s'>,"
                            " 'remote': <'[2001:db8::1]:65535'>, 'bytesIn': <uint64 %u>,"
                            " 'bytesOut': <uint64 1>}",
                            i ? ", " : "", i, service, i);
  g_string_append (text, "]>}");
  state = parse_state (text->str);
  g_string_free (text, TRUE);
  line = gt_worker_details_line (state);
  g_assert_cmpuint (strlen (line), <=, GT_WORKER_DETAILS_MAX_LINE);
  got = gt_worker_details_parse (line + strlen ("GT_DETAILS="), &error);
  g_assert_no_error (error);
  streams = g_variant_get_child_value (got, 1);
  /* Shortened (400-byte names), but not emptied. */
  g_assert_cmpuint (g_variant_n_children (streams), >, 0);
  g_assert_cmpuint (g_variant_n_children (streams), <, GT_WORKER_DETAILS_MAX_ENTRIES);
}

static void
expect_refused (const char *value)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) got = gt_worker_details_parse (value, &error);

  g_assert_null (got);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
}

static void
test_refused (void)
{
  g_autoptr (GVariant) wrong_type = NULL;
  g_autoptr (GVariant) too_many = NULL;
  g_autofree char *encoded = NULL;
  g_autofree char *huge = NULL;
  GVariantBuilder b;

  expect_refused ("not base64!");
  expect_refused ("QUJD"); /* "ABC": not a serialized report */
  /* Another type, validly serialized. */
  wrong_type = g_variant_ref_sink (g_variant_new ("(ss)", "a", "b"));
  encoded = g_base64_encode (g_variant_get_data (wrong_type), g_variant_get_size (wrong_type));
  expect_refused (encoded);
  g_clear_pointer (&encoded, g_free);
  /* Well-formed, but more entries than a worker ever sends. */
  g_variant_builder_init (&b, G_VARIANT_TYPE ("a" GT_WORKER_CONNECTION_TYPE));
  for (guint i = 0; i <= GT_WORKER_DETAILS_MAX_ENTRIES; i++)
    g_variant_builder_add (&b, GT_WORKER_CONNECTION_TYPE, "", i, "", "", 0, 0, 0);
  too_many = g_variant_ref_sink (
    g_variant_new ("(@a" GT_WORKER_CONNECTION_TYPE "@a" GT_WORKER_STREAM_TYPE ")",
                   g_variant_builder_end (&b),
                   g_variant_new_array (G_VARIANT_TYPE (GT_WORKER_STREAM_TYPE), NULL, 0)));
  encoded = g_base64_encode (g_variant_get_data (too_many), g_variant_get_size (too_many));
  expect_refused (encoded);
  /* Longer than any line. */
  huge = g_strnfill (GT_WORKER_DETAILS_MAX_LINE + 4, 'A');
  expect_refused (huge);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/manager/worker-report/build", test_build);
  g_test_add_func ("/gt/manager/worker-report/round-trip", test_round_trip);
  g_test_add_func ("/gt/manager/worker-report/bounded", test_bounded);
  g_test_add_func ("/gt/manager/worker-report/refused", test_refused);
  return g_test_run ();
}
