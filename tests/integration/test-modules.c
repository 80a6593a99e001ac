/* Integration tests of gt's modules (gt-quic, gt-webrtc): an idle tcp:// server and client map
 * none of them nor their libraries; a configuration that uses one loads it (and only then); a
 * configuration that needs a module gt cannot find fails at start with one error naming the
 * module and the key. Real gt processes on 127.0.0.1. */
#define G_LOG_DOMAIN "gt-test"

#include <string.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "gt-test-utils.h"
#include "gt-transport.h"

#define CLIENT_ID "alice"
#define CLIENT_SECRET "s3cret-alice"

/* What the modules bring into a process; none of it belongs in an idle tcp:// relay. */
static const char *const module_files[] = {
  "gt-quic.so", "gt-webrtc.so", "libnice.so", "libusrsctp.so", "libngtcp2", "libgnutls.so",
  "libgupnp", "libxml2.so", "libicuuc.so",
};

typedef struct
{
  char *empty_dir; /* a module directory with nothing in it */
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  gt_test_setup ();
  f->empty_dir = g_build_filename (gt_test_tmpdir (), "no-modules", NULL);
  g_assert_cmpint (g_mkdir (f->empty_dir, 0700), ==, 0);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  gt_test_teardown ();
  g_free (f->empty_dir);
}

/* The file names of the shared objects p has mapped, one per line. */
static char *
proc_maps (GtTestProc *p)
{
  g_autofree char *path = g_strdup_printf ("/proc/%d/maps", p->pid);
  g_autofree char *maps = NULL;
  g_autoptr (GError) error = NULL;
  GString *out = g_string_new (NULL);
  g_auto (GStrv) lines = NULL;

  if (!g_file_get_contents (path, &maps, NULL, &error))
    gt_test_fail ("%s: %s", p->name, error->message);
  lines = g_strsplit (maps, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++)
    {
      const char *slash = strrchr (lines[i], '/');

      if (slash != NULL && strstr (slash, ".so") != NULL)
        g_string_append_printf (out, "%s\n", slash + 1);
    }
  return g_string_free (out, FALSE);
}

static void
assert_maps (GtTestProc *p, const char *file, gboolean mapped)
{
  g_autofree char *maps = proc_maps (p);

  if ((strstr (maps, file) != NULL) != mapped)
    gt_test_fail ("%s %s %s; it maps:\n%s", p->name, mapped ? "does not map" : "maps", file, maps);
}

static guint16
start_server (GPtrArray *extra)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autofree char *line = NULL;
  GtTestProc *p;

  gt_test_args_addv (args, "server", "--id", CLIENT_ID, "--secret", CLIENT_SECRET, "--addr",
                     "127.0.0.1:0", NULL);
  for (guint i = 0; extra != NULL && i < extra->len; i++)
    gt_test_args_add (args, "%s", (const char *) extra->pdata[i]);
  p = gt_test_spawn ("server", NULL, args, gt_test_tmpdir (), NULL);
  line = gt_test_proc_expect_line (p, "listening on 127\\.0\\.0\\.1:[0-9]+", NULL, GT_TEST_WAIT_MS);
  return (guint16) gt_test_capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");
}

/* gt with args, and GT_MODULE_DIR=module_dir when that is not NULL. */
static GtTestProc *
spawn_gt (const char *name, GPtrArray *args, const char *module_dir)
{
  g_autofree char *env_dir = NULL;
  const char *env[2] = { NULL, NULL };

  if (module_dir != NULL)
    env[0] = env_dir = g_strconcat ("GT_MODULE_DIR=", module_dir, NULL);
  return gt_test_spawn (name, NULL, args, gt_test_tmpdir (), env);
}

static GPtrArray *
client_args (const char *remote)
{
  GPtrArray *args = gt_test_args_new ();

  gt_test_args_addv (args, "client", "--id", CLIENT_ID, "--secret", CLIENT_SECRET, "--remote",
                     remote, NULL);
  gt_test_args_add (args, "--local");
  gt_test_args_add (args, "http://127.0.0.1:%u", gt_test_free_port ());
  gt_test_args_addv (args, "--hostPrefix", "web", NULL);
  return args;
}

/* An idle relay on tcp:// with the defaults has none of the modules' code mapped. */
static void
test_idle_loads_none (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) args = NULL;
  g_autofree char *remote = NULL;
  GtTestProc *server, *client;
  guint16 port;

  GT_TEST_REQUIRE_GT ();
  port = start_server (NULL);
  server = gt_test_procs ()->pdata[0];
  remote = g_strdup_printf ("tcp://127.0.0.1:%u", port);
  args = client_args (remote);
  client = spawn_gt ("client", args, NULL);
  g_free (gt_test_proc_expect_line (client, "tunnel started: ", NULL, GT_TEST_WAIT_MS));
  for (guint i = 0; i < G_N_ELEMENTS (module_files); i++)
    {
      assert_maps (server, module_files[i], FALSE);
      assert_maps (client, module_files[i], FALSE);
    }
}

/* A client with a quic:// remote and remoteSTUN loads both modules at start, with their
 * libraries, before any tunnel is up (no server here). */
static void
test_loaded_when_used (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) args = NULL;
  g_autofree char *remote = NULL;
  GtTestProc *client;

  GT_TEST_REQUIRE_GT ();
  if (!gt_transport_supports ("quic"))
    {
      g_test_skip ("gt is built without QUIC");
      return;
    }
  remote = g_strdup_printf ("quic://127.0.0.1:%u", gt_test_free_port ());
  args = client_args (remote);
  gt_test_args_addv (args, "--remoteCertInsecure", "--remoteSTUN", "stun:127.0.0.1:3478", NULL);
  client = spawn_gt ("client", args, NULL);
  g_free (gt_test_proc_expect_line (client, "connecting to quic://", NULL, GT_TEST_WAIT_MS));
  assert_maps (client, "gt-quic.so", TRUE);
  assert_maps (client, "libngtcp2", TRUE);
  assert_maps (client, "gt-webrtc.so", TRUE);
  assert_maps (client, "libnice.so", TRUE);
  assert_maps (client, "libusrsctp.so", TRUE);
}

/* gt exits with status 1 and exactly one line matching regex, which names where it looked. */
static void
expect_one_error (Fixture *f, GtTestProc *p, const char *regex)
{
  g_autofree char *where = g_strdup_printf ("which is not in GT_MODULE_DIR \\(%s\\)",
                                            f->empty_dir);
  g_autofree char *line = NULL;

  if (!gt_test_proc_wait_exit (p, GT_TEST_WAIT_MS))
    gt_test_fail ("%s did not exit though its module is missing", p->name);
  g_assert_false (g_subprocess_get_if_signaled (p->proc));
  g_assert_cmpint (g_subprocess_get_exit_status (p->proc), ==, 1);
  line = gt_test_proc_expect_line (p, regex, NULL, 1000);
  g_assert_nonnull (strstr (line, f->empty_dir));
  g_assert_cmpuint (gt_test_proc_count_matches (p, where), ==, 1);
  g_assert_cmpuint (gt_test_proc_count_matches (p, "needs gt's module"), ==, 1);
}

static void
test_missing_quic_remote (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) args = NULL;
  g_autofree char *remote = NULL;

  GT_TEST_REQUIRE_GT ();
  if (!gt_transport_supports ("quic"))
    {
      g_test_skip ("gt is built without QUIC");
      return;
    }
  remote = g_strdup_printf ("quic://127.0.0.1:%u", gt_test_free_port ());
  args = client_args (remote);
  expect_one_error (f, spawn_gt ("client", args, f->empty_dir),
                    "^gt client: remote quic:// needs gt's module gt-quic \\(gt-quic\\.so\\), ");
}

static void
test_missing_quic_addr (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();

  GT_TEST_REQUIRE_GT ();
  if (!gt_transport_supports ("quic"))
    {
      g_test_skip ("gt is built without QUIC");
      return;
    }
  gt_test_args_addv (args, "server", "--id", CLIENT_ID, "--secret", CLIENT_SECRET, "--quicAddr",
                     "127.0.0.1:0", NULL);
  expect_one_error (f, spawn_gt ("server", args, f->empty_dir),
                    "^gt server: quicAddr needs gt's module gt-quic \\(gt-quic\\.so\\), ");
}

static void
test_missing_webrtc (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) args = NULL;
  g_autofree char *remote = NULL;

  GT_TEST_REQUIRE_GT ();
  remote = g_strdup_printf ("tcp://127.0.0.1:%u", gt_test_free_port ());
  args = client_args (remote);
  gt_test_args_addv (args, "--remoteSTUN", "stun:127.0.0.1:3478", NULL);
  expect_one_error (f, spawn_gt ("client", args, f->empty_dir),
                    "^gt client: remoteSTUN \\(WebRTC peers\\) needs gt's module gt-webrtc "
                    "\\(gt-webrtc\\.so\\), ");
}

int
main (int argc, char **argv)
{
  gt_test_init (&argc, &argv, 0);
  g_test_add ("/gt/modules/idle-loads-none", Fixture, NULL, fixture_setup, test_idle_loads_none,
              fixture_teardown);
  g_test_add ("/gt/modules/loaded-when-used", Fixture, NULL, fixture_setup, test_loaded_when_used,
              fixture_teardown);
  g_test_add ("/gt/modules/missing/quic-remote", Fixture, NULL, fixture_setup,
              test_missing_quic_remote, fixture_teardown);
  g_test_add ("/gt/modules/missing/quic-addr", Fixture, NULL, fixture_setup,
              test_missing_quic_addr, fixture_teardown);
  g_test_add ("/gt/modules/missing/webrtc", Fixture, NULL, fixture_setup, test_missing_webrtc,
              fixture_teardown);
  return gt_test_run ();
}
