/* A real browser against real gt processes: headless Chromium loads a page through the gt
 * server, signals with GT's XP method to the gt client, and exchanges bytes with the client's
 * local service over WebRTC data channels. Runs in a network namespace of its own that has only
 * loopback, so that every candidate is 127.0.0.1. */
#define G_LOG_DOMAIN "gt-test"

#include <errno.h>
#include <net/if.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gt-test-utils.h"

#define PATTERN_SIZE 1024
#define CLIENT_ID "alice"
#define CLIENT_SECRET "s3cret-alice"
#define PREFIX "web"
#define HOST PREFIX ".example.com"
#define CHROMIUM "/usr/bin/chromium"
#define BROWSER_WAIT_MS 180000

static gboolean in_netns;

typedef struct
{
  gpointer unused;
} Fixture;

static void
fixture_setup (Fixture *f, gconstpointer data)
{
  gt_test_setup ();
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  gt_test_teardown ();
}

/* Before any thread exists (namespaces belong to threads): a new network namespace with lo up. */
static gboolean
enter_netns (void)
{
  struct ifreq ifr = { 0 };
  int fd;

  if (unshare (CLONE_NEWNET) < 0)
    return FALSE;
  fd = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return FALSE;
  g_strlcpy (ifr.ifr_name, "lo", sizeof ifr.ifr_name);
  if (ioctl (fd, SIOCGIFFLAGS, &ifr) < 0)
    {
      close (fd);
      return FALSE;
    }
  ifr.ifr_flags |= IFF_UP;
  if (ioctl (fd, SIOCSIFFLAGS, &ifr) < 0)
    {
      close (fd);
      return FALSE;
    }
  close (fd);
  return TRUE;
}

static void
page_cb (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
         gpointer user_data)
{
  g_autofree char *file = g_build_filename (g_getenv ("GT_TEST_FILES"), "p2p", "page.html", NULL);
  g_autofree char *text = NULL;
  gsize len = 0;

  if (!g_file_get_contents (file, &text, &len, NULL))
    {
      soup_server_message_set_status (msg, 404, NULL);
      return;
    }
  soup_server_message_set_status (msg, 200, NULL);
  /* gt routes by the first request of a connection: the XP request must come on a new one. */
  soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Connection",
                                "close");
  soup_server_message_set_response (msg, "text/html", SOUP_MEMORY_COPY, text, len);
}

static void
add_page_handler (gpointer data, gpointer user_data)
{
  GtTestHttp *h = data;

  soup_server_add_handler (h->server, "/p2p.html", page_cb, NULL, NULL);
}

static void
test_browser (Fixture *f, gconstpointer data)
{
  g_autoptr (GPtrArray) args = gt_test_args_new ();
  g_autoptr (GPtrArray) cargs = gt_test_args_new ();
  g_autofree char *line = NULL;
  g_autofree char *profile = NULL;
  GtTestHttp *h;
  GtTestProc *server, *client, *browser;
  guint16 port, stun_port;

  if (!in_netns)
    {
      g_test_skip ("needs a network namespace (unshare(CLONE_NEWNET): run as root)");
      return;
    }
  if (!g_file_test (CHROMIUM, G_FILE_TEST_IS_EXECUTABLE))
    {
      g_test_skip ("no " CHROMIUM " (build-aux/dev installs it)");
      return;
    }

  stun_port = gt_test_free_port ();
  gt_test_args_addv (args, "server", "--id", CLIENT_ID, "--secret", CLIENT_SECRET, "--addr",
                     "127.0.0.1:0", "--stunAddr", NULL);
  gt_test_args_add (args, "127.0.0.1:%u", stun_port);
  server = gt_test_spawn_gt ("server", args);
  line = gt_test_proc_expect_line (server, "listening on 127\\.0\\.0\\.1:[0-9]+", NULL,
                                   GT_TEST_WAIT_MS);
  port = (guint16)gt_test_capture_uint (line, "listening on 127\\.0\\.0\\.1:([0-9]+)");

  h = gt_test_http_start ("svc", 0, NULL);
  gt_test_service_call (add_page_handler, h);
  g_ptr_array_set_size (args, 0);
  gt_test_args_addv (args, "client", "--id", CLIENT_ID, "--secret", CLIENT_SECRET, "--remote",
                     NULL);
  gt_test_args_add (args, "tcp://127.0.0.1:%u", port);
  gt_test_args_add (args, "--remoteSTUN");
  gt_test_args_add (args, "stun:127.0.0.1:%u", stun_port);
  gt_test_args_add (args, "--local");
  gt_test_args_add (args, "http://127.0.0.1:%u", h->port);
  gt_test_args_addv (args, "--hostPrefix", PREFIX, NULL);
  client = gt_test_spawn_gt ("client", args);
  g_free (gt_test_proc_expect_line (client, "tunnel started", NULL, GT_TEST_WAIT_MS));

  profile = g_build_filename (gt_test_tmpdir (), "chromium-profile", NULL);
  g_mkdir_with_parents (profile, 0700);
  gt_test_args_addv (
      cargs, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
      "--enable-logging=stderr", "--v=0", "--remote-debugging-port=0",
      "--disable-features=WebRtcHideLocalIpsWithMdns", "--allow-loopback-in-peer-connection",
      "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", NULL);
  gt_test_args_add (cargs, "--user-data-dir=%s", profile);
  /* The page's origin is the gt host name; the browser reaches it at the server's port. */
  gt_test_args_add (cargs, "--host-resolver-rules=MAP *.example.com 127.0.0.1");
  gt_test_args_add (cargs, "--unsafely-treat-insecure-origin-as-secure=http://%s:%u", HOST, port);
  gt_test_args_add (cargs, "http://%s:%u/p2p.html?stun=%u&whoami=svc", HOST, port, stun_port);
  browser = gt_test_spawn ("chromium", CHROMIUM, cargs, NULL, NULL);

  g_free (line);
  line = gt_test_proc_expect_line (browser, "P2P RESULT", NULL, BROWSER_WAIT_MS);
  if (strstr (line, "RESULT OK") == NULL)
    gt_test_fail ("the page failed: %s", line);
  g_assert_cmpuint (gt_test_proc_count_matches (browser, "P2P channels ok 10"), ==, 1);
  g_assert_cmpuint (gt_test_proc_count_matches (browser, "P2P echo ok 16777216"), ==, 1);
  g_assert_cmpuint (gt_test_proc_count_matches (client, "answering an offer"), ==, 1);
  /* The page's figures, for the record. */
  for (guint i = 0; i < 3; i++)
    {
      static const char *const what[] = { "P2P signalled.*", "P2P channels ok.*", "P2P echo ok.*" };
      g_autofree char *figure = gt_test_proc_wait_line (browser, what[i], NULL, 0);
      g_autoptr (GMatchInfo) match = NULL;

      if (figure != NULL && g_regex_match_simple (what[i], figure, 0, 0))
        {
          g_autoptr (GRegex) re = g_regex_new (what[i], 0, 0, NULL);

          if (g_regex_match (re, figure, 0, &match))
            {
              g_autofree char *text = g_match_info_fetch (match, 0);

              g_test_message ("%s", text);
            }
        }
    }
  gt_test_proc_stop (browser, SIGTERM);
  gt_test_proc_stop_cleanly (client);
  gt_test_proc_stop_cleanly (server);
}

int
main (int argc, char **argv)
{
  in_netns = enter_netns ();
  gt_test_init (&argc, &argv, PATTERN_SIZE);
  g_test_add ("/gt/p2p/browser/data-channels", Fixture, NULL, fixture_setup, test_browser,
              fixture_teardown);
  return gt_test_run ();
}
