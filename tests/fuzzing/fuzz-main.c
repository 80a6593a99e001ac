/* fuzz-main.c: a stand-alone replay driver for the fuzz targets, like libFuzzer's replay mode:
 * every file given, and every file in every directory given, goes once through
 * LLVMFuzzerTestOneInput. It lets the ordinary (and the ASan) build run each target over its seed
 * corpus as a test. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);
/* Optional in a target, as with libFuzzer. */
int LLVMFuzzerInitialize (int *argc, char ***argv) __attribute__ ((weak));

static int
compare_names (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *)a, *(const char *const *)b);
}

/* Runs one input from a buffer of exactly its size, so that ASan sees any read past its end
 * (g_file_get_contents() adds a NUL that would hide a one-byte overread). */
static gboolean
run_file (const char *path)
{
  g_autofree char *contents = NULL;
  g_autofree guint8 *copy = NULL;
  g_autoptr (GError) error = NULL;
  gsize len = 0;

  if (!g_file_get_contents (path, &contents, &len, &error))
    {
      fprintf (stderr, "fuzz-replay: %s\n", error->message);
      return FALSE;
    }
  printf ("Running: %s (%" G_GSIZE_FORMAT " bytes)\n", path, len);
  fflush (stdout);
  copy = g_memdup2 (contents, len);
  LLVMFuzzerTestOneInput (copy, len);
  return TRUE;
}

/* Runs path, or the files directly in it (sorted, hidden ones skipped); adds to *count. */
static gboolean
run_path (const char *path, guint *count)
{
  g_autoptr (GDir) dir = NULL;
  g_autoptr (GPtrArray) names = NULL;
  g_autoptr (GError) error = NULL;
  const char *name;

  if (!g_file_test (path, G_FILE_TEST_IS_DIR))
    {
      if (!run_file (path))
        return FALSE;
      (*count)++;
      return TRUE;
    }
  dir = g_dir_open (path, 0, &error);
  if (dir == NULL)
    {
      fprintf (stderr, "fuzz-replay: %s\n", error->message);
      return FALSE;
    }
  names = g_ptr_array_new_with_free_func (g_free);
  while ((name = g_dir_read_name (dir)) != NULL)
    if (name[0] != '.')
      g_ptr_array_add (names, g_build_filename (path, name, NULL));
  g_ptr_array_sort (names, compare_names);
  for (guint i = 0; i < names->len; i++)
    {
      const char *file = names->pdata[i];

      if (g_file_test (file, G_FILE_TEST_IS_DIR))
        continue;
      if (!run_file (file))
        return FALSE;
      (*count)++;
    }
  return TRUE;
}

int
main (int argc, char **argv)
{
  guint count = 0;

  if (LLVMFuzzerInitialize != NULL)
    LLVMFuzzerInitialize (&argc, &argv);
  if (argc < 2)
    {
      fprintf (stderr, "Usage: %s FILE|DIR...\n", argv[0]);
      return 2;
    }
  for (int i = 1; i < argc; i++)
    if (!run_path (argv[i], &count))
      return 1;
  /* An empty corpus tests nothing: every target has seeds in the repository. */
  if (count == 0)
    {
      fprintf (stderr, "fuzz-replay: no inputs in the paths given\n");
      return 1;
    }
  printf ("Executed %u inputs\n", count);
  return 0;
}
