/* test-remote-api.c: the remoteAPI answer parser (the request itself is tested end to end in
 * integration/test-options.c). */
#include "config.h"

#include <string.h>

#include "gt-remote-api.h"

typedef struct
{
  const char *body;
  const char *server; /* NULL: refused */
  const char *stun;
} Case;

static const Case cases[] = {
  { "{\"serverAddress\":\"tcp://127.0.0.1:8080\"}", "tcp://127.0.0.1:8080", NULL },
  { "{\"serverAddress\":\"tls://gt.example.com\",\"stunAddress\":\"stun:gt.example.com:3478\"}",
    "tls://gt.example.com", "stun:gt.example.com:3478" },
  { "{\"stunAddress\":null,\"serverAddress\":\"h:1\",\"other\":[1,{}]}", "h:1", NULL },
  { "{\"serverAddress\":\"\"}", NULL, NULL },
  { "{\"serverAddress\":\"tcp://a b\"}", NULL, NULL },
  { "{\"serverAddress\":\"tcp://a\\u0000b\"}", NULL, NULL },
  { "{\"serverAddress\":\"tcp://a\\u0001b\"}", NULL, NULL },
  { "{\"serverAddress\":1}", NULL, NULL },
  { "{\"serverAddress\":\"h\",\"stunAddress\":2}", NULL, NULL },
  { "{}", NULL, NULL },
  { "[\"tcp://h\"]", NULL, NULL },
  { "tcp://h", NULL, NULL },
  { "", NULL, NULL },
};

static void
test_answers (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) error = NULL;
      g_autofree char *server = NULL, *stun = NULL;
      gboolean ok = gt_remote_api_parse_answer (cases[i].body, strlen (cases[i].body), &server,
                                                &stun, &error);

      g_test_message ("case %u: %s", i, cases[i].body);
      if (cases[i].server == NULL)
        {
          g_assert_false (ok);
          g_assert_error (error, GT_REMOTE_API_ERROR, GT_REMOTE_API_ERROR_BAD_RESPONSE);
          g_assert_null (server);
          g_assert_null (stun);
          continue;
        }
      g_assert_no_error (error);
      g_assert_true (ok);
      g_assert_cmpstr (server, ==, cases[i].server);
      g_assert_cmpstr (stun, ==, cases[i].stun);
    }
}

static void
test_bounds (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GString) big = g_string_new ("{\"serverAddress\":\"tcp://h\",\"pad\":\"");
  g_autoptr (GString) long_addr = g_string_new ("{\"serverAddress\":\"tcp://");
  g_autofree char *server = NULL;

  while (big->len <= GT_REMOTE_API_MAX_BODY)
    g_string_append_c (big, 'x');
  g_string_append (big, "\"}");
  g_assert_false (gt_remote_api_parse_answer (big->str, big->len, &server, NULL, &error));
  g_assert_error (error, GT_REMOTE_API_ERROR, GT_REMOTE_API_ERROR_BAD_RESPONSE);
  g_clear_error (&error);

  while (long_addr->len <= GT_REMOTE_API_MAX_ADDRESS + 20)
    g_string_append_c (long_addr, 'a');
  g_string_append (long_addr, "\"}");
  g_assert_false (gt_remote_api_parse_answer (long_addr->str, long_addr->len, &server, NULL,
                                              &error));
  g_assert_error (error, GT_REMOTE_API_ERROR, GT_REMOTE_API_ERROR_BAD_RESPONSE);
  g_assert_null (server);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/client/remote-api/answers", test_answers);
  g_test_add_func ("/gt/client/remote-api/bounds", test_bounds);
  return g_test_run ();
}
