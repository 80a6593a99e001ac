/* test-metrics.c: Prometheus text writers, the sample parser and /proc process figures. */
#include "config.h"

#include <fcntl.h>
#include <unistd.h>

#include "gt-metrics.h"

static void
test_family (void)
{
  g_autoptr (GString) out = g_string_new (NULL);

  gt_metrics_write_family (out, "gt_bytes_total", "counter", "Bytes relayed.\nBack\\slash");
  g_assert_cmpstr (out->str, ==,
                   "# HELP gt_bytes_total Bytes relayed.\\nBack\\\\slash\n"
                   "# TYPE gt_bytes_total counter\n");
}

static void
test_sample (void)
{
  g_autoptr (GString) out = g_string_new (NULL);
  const char *const labels[] = { "user", "a\"b\\c\nd", "dir", "in", NULL };
  const char *const one[] = { "user", "x", NULL };

  gt_metrics_write_sample (out, "gt_up", NULL, 1);
  gt_metrics_write_sample (out, "gt_bytes_total", labels, 12345678901.0);
  gt_metrics_write_sample (out, "gt_ratio", one, 0.25);
  gt_metrics_write_sample (out, "gt_neg", one, -3);
  gt_metrics_write_sample (out, "gt_inf", NULL, 1.0 / 0.0);
  gt_metrics_write_sample (out, "gt_big", NULL, 1e300);
  g_assert_cmpstr (out->str, ==,
                   "gt_up 1\n"
                   "gt_bytes_total{user=\"a\\\"b\\\\c\\nd\",dir=\"in\"} 12345678901\n"
                   "gt_ratio{user=\"x\"} 0.25\n"
                   "gt_neg{user=\"x\"} -3\n"
                   "gt_inf +Inf\n"
                   "gt_big 1e+300\n");
}

static void
test_parse (void)
{
  g_autoptr (GString) out = g_string_new (NULL);
  const char *const a_in[] = { "user", "a", "dir", "in", NULL };
  const char *const a_out[] = { "user", "a", "dir", "out", NULL };
  const char *const in_a[] = { "dir", "in", "user", "a", NULL };
  const char *const tricky[] = { "user", "q\"u,o}te=\n", NULL };
  const char *const only_user[] = { "user", "a", NULL };
  const char *const b_in[] = { "user", "b", "dir", "in", NULL };
  double v = -1;

  gt_metrics_write_family (out, "gt_bytes", "counter", "Bytes.");
  gt_metrics_write_sample (out, "gt_bytes", a_in, 100);
  gt_metrics_write_sample (out, "gt_bytes", a_out, 200);
  gt_metrics_write_sample (out, "gt_bytes", tricky, 7);
  gt_metrics_write_sample (out, "gt_bytes_total", a_in, 999);
  gt_metrics_write_sample (out, "gt_up", NULL, 1);
  gt_metrics_write_sample (out, "gt_ratio", NULL, 0.125);

  g_assert_true (gt_metrics_parse_sample (out->str, "gt_bytes", a_in, &v));
  g_assert_cmpfloat (v, ==, 100);
  g_assert_true (gt_metrics_parse_sample (out->str, "gt_bytes", a_out, &v));
  g_assert_cmpfloat (v, ==, 200);
  /* Label order does not matter. */
  g_assert_true (gt_metrics_parse_sample (out->str, "gt_bytes", in_a, &v));
  g_assert_cmpfloat (v, ==, 100);
  /* Escapes round-trip. */
  g_assert_true (gt_metrics_parse_sample (out->str, "gt_bytes", tricky, &v));
  g_assert_cmpfloat (v, ==, 7);
  /* Exact label set: a subset or an unknown value does not match. */
  g_assert_false (gt_metrics_parse_sample (out->str, "gt_bytes", only_user, &v));
  g_assert_false (gt_metrics_parse_sample (out->str, "gt_bytes", b_in, &v));
  g_assert_false (gt_metrics_parse_sample (out->str, "gt_bytes", NULL, &v));
  /* A name is not a prefix of another name. */
  g_assert_true (gt_metrics_parse_sample (out->str, "gt_bytes_total", a_in, &v));
  g_assert_cmpfloat (v, ==, 999);
  g_assert_false (gt_metrics_parse_sample (out->str, "gt_byte", a_in, &v));
  g_assert_true (gt_metrics_parse_sample (out->str, "gt_up", NULL, &v));
  g_assert_cmpfloat (v, ==, 1);
  g_assert_true (gt_metrics_parse_sample (out->str, "gt_ratio", NULL, &v));
  g_assert_cmpfloat (v, ==, 0.125);
  /* Comment lines are not samples. */
  g_assert_false (gt_metrics_parse_sample (out->str, "#", NULL, &v));
}

static void
test_parse_foreign (void)
{
  const char *text = "# comment\n"
                     "m{a=\"1\" , b=\"2\"} 3.5 1712345678000\n"
                     "broken{a=\"1\" 2\n"
                     "nan_value NaN\n"
                     "last 42";
  const char *const ab[] = { "a", "1", "b", "2", NULL };
  const char *const a[] = { "a", "1", NULL };
  double v = 0;

  /* Spaces around labels and a trailing timestamp are allowed by the format. */
  g_assert_true (gt_metrics_parse_sample (text, "m", ab, &v));
  g_assert_cmpfloat (v, ==, 3.5);
  g_assert_false (gt_metrics_parse_sample (text, "broken", a, &v));
  g_assert_true (gt_metrics_parse_sample (text, "nan_value", NULL, &v));
  g_assert_true (v != v);
  /* No final newline. */
  g_assert_true (gt_metrics_parse_sample (text, "last", NULL, &v));
  g_assert_cmpfloat (v, ==, 42);
  g_assert_false (gt_metrics_parse_sample ("", "last", NULL, &v));
}

static void
test_process (void)
{
  guint before = gt_process_open_fds ();
  int fds[8];
  guint64 rss = gt_process_rss_bytes ();
  g_autofree char *block = NULL;

  g_assert_cmpuint (before, >=, 3);
  for (guint i = 0; i < G_N_ELEMENTS (fds); i++)
    {
      fds[i] = open ("/dev/null", O_RDONLY | O_CLOEXEC);
      g_assert_cmpint (fds[i], >=, 0);
    }
  g_assert_cmpuint (gt_process_open_fds (), ==, before + G_N_ELEMENTS (fds));
  for (guint i = 0; i < G_N_ELEMENTS (fds); i++)
    close (fds[i]);
  g_assert_cmpuint (gt_process_open_fds (), ==, before);

  /* RSS is plausible and grows when 32 MiB are touched. */
  g_assert_cmpuint (rss, >, 100 * 1024);
  block = g_malloc (32 * 1024 * 1024);
  memset (block, 1, 32 * 1024 * 1024);
  g_assert_cmpuint (gt_process_rss_bytes (), >=, rss + 24 * 1024 * 1024);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/gt/metrics/family", test_family);
  g_test_add_func ("/gt/metrics/sample", test_sample);
  g_test_add_func ("/gt/metrics/parse", test_parse);
  g_test_add_func ("/gt/metrics/parse-foreign", test_parse_foreign);
  g_test_add_func ("/gt/metrics/process", test_process);
  return g_test_run ();
}
