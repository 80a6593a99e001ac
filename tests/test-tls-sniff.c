/* test-tls-sniff.c: unit tests for the ClientHello SNI reader (gt-tls-sniff.c). */
#include "gt-tls-sniff.h"

#include <string.h>

#define DEFAULT_MAX (16 * 1024)

/* ---- helpers ---- */

static GBytes *
load_fixture (const char *name)
{
  const char *dir = g_getenv ("GT_TEST_FILES");
  g_autofree char *path = NULL;
  g_autoptr (GError) error = NULL;
  char *contents = NULL;
  gsize len = 0;

  if (dir == NULL)
    g_error ("GT_TEST_FILES is not set (run the test through meson)");
  path = g_build_filename (dir, "tls", name, NULL);
  g_file_get_contents (path, &contents, &len, &error);
  g_assert_no_error (error);
  return g_bytes_new_take (contents, len);
}

/* Runs the sniffer and checks the invariants every call must keep. */
static GtDecodeResult
sniff (const guint8 *buf, gsize len, gsize max_len, char **sni, GError **error)
{
  GtDecodeResult r;

  *sni = (char *) 0x1; /* must be overwritten */
  r = gt_tls_sniff_sni (buf, len, max_len, sni, error);
  if (r != GT_DECODE_OK)
    g_assert_null (*sni);
  if (r == GT_DECODE_ERROR)
    g_assert_true (error == NULL || *error != NULL);
  else
    g_assert_true (error == NULL || *error == NULL);
  return r;
}

static void
assert_sni (const guint8 *buf, gsize len, gsize max_len, const char *expected)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *sni = NULL;

  g_assert_cmpint (sniff (buf, len, max_len, &sni, &error), ==, GT_DECODE_OK);
  g_assert_no_error (error);
  g_assert_cmpstr (sni, ==, expected);
}

static void
assert_error (const guint8 *buf, gsize len, gsize max_len, int code)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *sni = NULL;

  g_assert_cmpint (sniff (buf, len, max_len, &sni, &error), ==, GT_DECODE_ERROR);
  g_assert_error (error, GT_TLS_SNIFF_ERROR, code);
}

static void
assert_need_more_prefixes (const guint8 *buf, gsize len, gsize max_len)
{
  for (gsize i = 0; i < len; i++)
    {
      g_autoptr (GError) error = NULL;
      g_autofree char *sni = NULL;
      GtDecodeResult r = sniff (buf, i, max_len, &sni, &error);

      if (r != GT_DECODE_NEED_MORE)
        g_error ("prefix of %" G_GSIZE_FORMAT "/%" G_GSIZE_FORMAT " bytes gave %d (%s)", i, len, r,
                 error != NULL ? error->message : "no error");
    }
}

/* The handshake bytes carried by the records of a fixture. */
static GByteArray *
extract_handshake (const guint8 *buf, gsize len)
{
  GByteArray *hs = g_byte_array_new ();
  gsize pos = 0;

  while (pos < len)
    {
      gsize rec_len;

      g_assert_cmpuint (len - pos, >=, 5);
      rec_len = ((gsize) buf[pos + 3] << 8) | buf[pos + 4];
      g_assert_cmpuint (len - pos - 5, >=, rec_len);
      g_byte_array_append (hs, buf + pos + 5, rec_len);
      pos += 5 + rec_len;
    }
  return hs;
}

/* Frames handshake bytes into records of at most piece bytes of payload. */
static GByteArray *
frame_records (const guint8 *hs, gsize len, gsize piece, guint8 minor)
{
  GByteArray *out = g_byte_array_new ();

  for (gsize pos = 0; pos < len; pos += piece)
    {
      gsize n = MIN (piece, len - pos);
      guint8 hdr[5] = { 22, 3, minor, (guint8) (n >> 8), (guint8) n };

      g_byte_array_append (out, hdr, sizeof hdr);
      g_byte_array_append (out, hs + pos, n);
    }
  return out;
}

static void
append_u8 (GByteArray *a, guint v)
{
  guint8 b = (guint8) v;

  g_byte_array_append (a, &b, 1);
}

static void
append_u16 (GByteArray *a, guint v)
{
  guint8 b[2] = { (guint8) (v >> 8), (guint8) v };

  g_byte_array_append (a, b, 2);
}

static void
append_u24 (GByteArray *a, guint v)
{
  guint8 b[3] = { (guint8) (v >> 16), (guint8) (v >> 8), (guint8) v };

  g_byte_array_append (a, b, 3);
}

static void
append_zeros (GByteArray *a, gsize n)
{
  for (gsize i = 0; i < n; i++)
    append_u8 (a, 0);
}

/* A synthetic ClientHello handshake message. exts NULL = no extensions block. */
typedef struct
{
  guint session_id_len;
  guint cipher_suites_len;
  guint compression_len;
  const GByteArray *exts;
  int exts_len_delta; /* added to the extensions block length field */
  guint8 handshake_type;
} HelloSpec;

static GByteArray *
build_hello (const HelloSpec *spec)
{
  g_autoptr (GByteArray) body = g_byte_array_new ();
  GByteArray *hs = g_byte_array_new ();

  append_u16 (body, 0x0303);
  for (guint i = 0; i < 32; i++)
    append_u8 (body, i);
  append_u8 (body, spec->session_id_len);
  append_zeros (body, spec->session_id_len);
  append_u16 (body, spec->cipher_suites_len);
  for (guint i = 0; i < spec->cipher_suites_len; i++)
    append_u8 (body, i % 2 == 0 ? 0x13 : 0x01);
  append_u8 (body, spec->compression_len);
  append_zeros (body, spec->compression_len);
  if (spec->exts != NULL)
    {
      append_u16 (body, (guint) ((int) spec->exts->len + spec->exts_len_delta));
      g_byte_array_append (body, spec->exts->data, spec->exts->len);
    }

  append_u8 (hs, spec->handshake_type != 0 ? spec->handshake_type : 1);
  append_u24 (hs, body->len);
  g_byte_array_append (hs, body->data, body->len);
  return hs;
}

static const HelloSpec default_spec = { 32, 4, 1, NULL, 0, 1 };

static void
append_ext (GByteArray *exts, guint type, const guint8 *data, gsize len)
{
  append_u16 (exts, type);
  append_u16 (exts, (guint) len);
  g_byte_array_append (exts, data, (guint) len);
}

/* server_name extension data with one entry per name (name_type 0). */
static GByteArray *
sni_data (const char *const *names)
{
  g_autoptr (GByteArray) list = g_byte_array_new ();
  GByteArray *data = g_byte_array_new ();

  for (guint i = 0; names[i] != NULL; i++)
    {
      append_u8 (list, 0);
      append_u16 (list, (guint) strlen (names[i]));
      g_byte_array_append (list, (const guint8 *) names[i], (guint) strlen (names[i]));
    }
  append_u16 (data, list->len);
  g_byte_array_append (data, list->data, list->len);
  return data;
}

/* A complete single-record ClientHello whose extensions are an ALPN-like filler plus SNI data. */
static GByteArray *
hello_with_sni_data (const guint8 *data, gsize len)
{
  g_autoptr (GByteArray) exts = g_byte_array_new ();
  g_autoptr (GByteArray) hs = NULL;
  static const guint8 alpn[] = { 0, 3, 2, 'h', '2' };
  HelloSpec spec = default_spec;

  append_ext (exts, 16, alpn, sizeof alpn);
  append_ext (exts, 0, data, len);
  spec.exts = exts;
  hs = build_hello (&spec);
  return frame_records (hs->data, hs->len, 16384, 1);
}

static void
assert_name (const char *name, const char *expected)
{
  const char *names[] = { name, NULL };
  g_autoptr (GByteArray) data = sni_data (names);
  g_autoptr (GByteArray) rec = hello_with_sni_data (data->data, data->len);

  g_test_message ("name: %s", name);
  if (expected != NULL)
    assert_sni (rec->data, rec->len, DEFAULT_MAX, expected);
  else
    assert_error (rec->data, rec->len, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_MALFORMED);
}

/* ---- tests on captured hellos ---- */

static void
test_fixture_sni (void)
{
  g_autoptr (GBytes) b = load_fixture ("client-hello-sni.bin");
  gsize len;
  const guint8 *data = g_bytes_get_data (b, &len);

  assert_sni (data, len, DEFAULT_MAX, "abc.example.com");
  /* max_len 0 means no limit of the caller's own. */
  assert_sni (data, len, 0, "abc.example.com");
  /* A limit exactly the size of the hello still fits; one byte less does not. */
  assert_sni (data, len, len, "abc.example.com");
  assert_error (data, len, len - 1, GT_TLS_SNIFF_ERROR_TOO_LARGE);
}

static void
test_fixture_no_sni (void)
{
  g_autoptr (GBytes) b = load_fixture ("client-hello-no-sni.bin");
  gsize len;
  const guint8 *data = g_bytes_get_data (b, &len);

  assert_sni (data, len, DEFAULT_MAX, NULL);
}

static void
test_fixture_large (void)
{
  g_autoptr (GBytes) b = load_fixture ("client-hello-large.bin");
  gsize len;
  const guint8 *data = g_bytes_get_data (b, &len);

  g_assert_cmpuint (len, >, DEFAULT_MAX);
  /* The real two-record hello is read when the limit allows it... */
  assert_sni (data, len, 64 * 1024, "big.example.org");
  /* ...and refused as soon as its length is known when it does not. */
  assert_error (data, len, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_TOO_LARGE);
  assert_error (data, 9, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_TOO_LARGE);
  assert_need_more_prefixes (data, 9, DEFAULT_MAX);
}

static void
test_truncated (void)
{
  const char *files[] = { "client-hello-sni.bin", "client-hello-no-sni.bin",
                          "client-hello-large.bin" };

  for (guint i = 0; i < G_N_ELEMENTS (files); i++)
    {
      g_autoptr (GBytes) b = load_fixture (files[i]);
      gsize len;
      const guint8 *data = g_bytes_get_data (b, &len);

      assert_need_more_prefixes (data, len, 64 * 1024);
    }
}

static void
test_split_records (void)
{
  g_autoptr (GBytes) b = load_fixture ("client-hello-sni.bin");
  gsize len;
  const guint8 *data = g_bytes_get_data (b, &len);
  g_autoptr (GByteArray) hs = extract_handshake (data, len);
  const gsize pieces[] = { 1, 2, 3, 4, 5, 7, 50, 100, 315, 316, 16384 };

  for (guint i = 0; i < G_N_ELEMENTS (pieces); i++)
    {
      g_autoptr (GByteArray) rec = frame_records (hs->data, hs->len, pieces[i], 3);

      assert_sni (rec->data, rec->len, 64 * 1024, "abc.example.com");
      assert_need_more_prefixes (rec->data, rec->len, 64 * 1024);
    }

  /* Record versions 0x0301..0x0304 are all accepted. */
  for (guint8 minor = 1; minor <= 4; minor++)
    {
      g_autoptr (GByteArray) rec = frame_records (hs->data, hs->len, 100, minor);

      assert_sni (rec->data, rec->len, DEFAULT_MAX, "abc.example.com");
    }

  /* The large hello re-framed in small records: more header bytes, same result. */
  {
    g_autoptr (GBytes) lb = load_fixture ("client-hello-large.bin");
    gsize llen;
    const guint8 *ldata = g_bytes_get_data (lb, &llen);
    g_autoptr (GByteArray) lhs = extract_handshake (ldata, llen);
    g_autoptr (GByteArray) rec = frame_records (lhs->data, lhs->len, 1000, 3);

    assert_sni (rec->data, rec->len, 64 * 1024, "big.example.org");
  }
}

static void
test_trailing_bytes (void)
{
  g_autoptr (GBytes) b = load_fixture ("client-hello-sni.bin");
  gsize len;
  const guint8 *data = g_bytes_get_data (b, &len);
  g_autoptr (GByteArray) more = g_byte_array_new ();
  static const guint8 ccs[] = { 20, 3, 3, 0, 1, 1 };

  /* What follows the hello (here a ChangeCipherSpec record) belongs to the caller. */
  g_byte_array_append (more, data, (guint) len);
  g_byte_array_append (more, ccs, sizeof ccs);
  assert_sni (more->data, more->len, DEFAULT_MAX, "abc.example.com");
}

/* ---- errors ---- */

static void
test_not_tls (void)
{
  static const char http[] = "GET / HTTP/1.1\r\nHost: abc.example.com\r\n\r\n";
  static const guint8 sslv2[] = { 0x80, 0x2e, 0x01, 0x00, 0x02 };
  static const guint8 app_data[] = { 23, 3, 3, 0, 1, 0 };
  static const guint8 one[] = { 22 };
  g_autoptr (GError) error = NULL;
  g_autofree char *sni = NULL;

  assert_error ((const guint8 *) http, strlen (http), DEFAULT_MAX, GT_TLS_SNIFF_ERROR_NOT_TLS);
  assert_error (sslv2, sizeof sslv2, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_NOT_TLS);
  assert_error (app_data, sizeof app_data, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_NOT_TLS);
  assert_error ((const guint8 *) "G", 1, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_NOT_TLS);
  g_assert_cmpint (sniff (one, 1, DEFAULT_MAX, &sni, &error), ==, GT_DECODE_NEED_MORE);
  g_assert_cmpint (sniff (one, 0, DEFAULT_MAX, &sni, &error), ==, GT_DECODE_NEED_MORE);
}

static void
test_bad_records (void)
{
  g_autoptr (GBytes) b = load_fixture ("client-hello-sni.bin");
  gsize len;
  const guint8 *data = g_bytes_get_data (b, &len);
  g_autoptr (GByteArray) hs = extract_handshake (data, len);
  static const guint8 bad_major[] = { 22, 2, 0 };
  static const guint8 ssl3[] = { 22, 3, 0 };
  static const guint8 tls15[] = { 22, 3, 5 };
  static const guint8 empty[] = { 22, 3, 1, 0, 0 };
  static const guint8 overlong[] = { 22, 3, 1, 0x41, 0x01 }; /* 16641 */
  static const guint8 longest[] = { 22, 3, 1, 0x41, 0x00 };  /* 16640: allowed, wait for it */

  /* Judged as soon as the offending byte is there. */
  assert_error (bad_major, sizeof bad_major, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_MALFORMED);
  assert_error (ssl3, sizeof ssl3, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_MALFORMED);
  assert_error (tls15, sizeof tls15, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_MALFORMED);
  assert_error (empty, sizeof empty, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_MALFORMED);
  assert_error (overlong, sizeof overlong, 64 * 1024, GT_TLS_SNIFF_ERROR_MALFORMED);
  {
    g_autoptr (GError) error = NULL;
    g_autofree char *sni = NULL;

    g_assert_cmpint (sniff (longest, sizeof longest, 64 * 1024, &sni, &error), ==,
                     GT_DECODE_NEED_MORE);
  }

  /* A record of another type in the middle of a split hello. */
  {
    g_autoptr (GByteArray) rec = frame_records (hs->data, hs->len, 100, 3);

    rec->data[105] = 23;
    assert_error (rec->data, rec->len, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_MALFORMED);
    rec->data[105] = 21;
    assert_error (rec->data, 106, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_MALFORMED);
  }
  /* An empty record in the middle. */
  {
    g_autoptr (GByteArray) rec = frame_records (hs->data, 100, 100, 3);
    g_autoptr (GByteArray) tail = frame_records (hs->data + 100, hs->len - 100, 100, 3);
    static const guint8 zero[] = { 22, 3, 3, 0, 0 };

    g_byte_array_append (rec, zero, sizeof zero);
    g_byte_array_append (rec, tail->data, tail->len);
    assert_error (rec->data, rec->len, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_MALFORMED);
  }
}

static void
test_bad_handshake (void)
{
  g_autoptr (GByteArray) exts = g_byte_array_new ();
  struct
  {
    const char *what;
    HelloSpec spec;
  } cases[] = {
    { "server hello", { 32, 4, 1, NULL, 0, 2 } },
    { "session id 33", { 33, 4, 1, NULL, 0, 1 } },
    { "no cipher suites", { 32, 0, 1, NULL, 0, 1 } },
    { "odd cipher suites", { 32, 3, 1, NULL, 0, 1 } },
    { "no compression", { 32, 4, 0, NULL, 0, 1 } },
    { "extensions longer than the hello", { 32, 4, 1, exts, 1, 1 } },
    { "extensions shorter than the hello", { 32, 4, 1, exts, -1, 1 } },
  };
  static const guint8 alpn[] = { 0, 3, 2, 'h', '2' };

  append_ext (exts, 16, alpn, sizeof alpn);
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GByteArray) hs = build_hello (&cases[i].spec);
      g_autoptr (GByteArray) rec = frame_records (hs->data, hs->len, 16384, 1);

      g_test_message ("case: %s", cases[i].what);
      assert_error (rec->data, rec->len, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_MALFORMED);
    }

  /* The well-formed baselines of the cases above. */
  {
    HelloSpec spec = default_spec;
    g_autoptr (GByteArray) hs = build_hello (&spec);
    g_autoptr (GByteArray) rec = frame_records (hs->data, hs->len, 16384, 1);

    assert_sni (rec->data, rec->len, DEFAULT_MAX, NULL);
    spec.exts = exts;
    g_clear_pointer (&hs, g_byte_array_unref);
    g_clear_pointer (&rec, g_byte_array_unref);
    hs = build_hello (&spec);
    rec = frame_records (hs->data, hs->len, 16384, 1);
    assert_sni (rec->data, rec->len, DEFAULT_MAX, NULL);
  }

  /* Handshake header: body shorter than any ClientHello; body length beyond max_len. */
  {
    static const guint8 tiny[] = { 22, 3, 1, 0, 4, 1, 0, 0, 0 };
    static const guint8 huge[] = { 22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff };

    assert_error (tiny, sizeof tiny, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_MALFORMED);
    assert_error (huge, sizeof huge, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_TOO_LARGE);
  }

  /* Extension whose length runs past the hello; a lone byte where an extension should be. */
  {
    g_autoptr (GByteArray) bad = g_byte_array_new ();
    HelloSpec spec = default_spec;
    g_autoptr (GByteArray) hs = NULL;
    g_autoptr (GByteArray) rec = NULL;

    append_u16 (bad, 16);
    append_u16 (bad, 100);
    g_byte_array_append (bad, alpn, sizeof alpn);
    spec.exts = bad;
    hs = build_hello (&spec);
    rec = frame_records (hs->data, hs->len, 16384, 1);
    assert_error (rec->data, rec->len, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_MALFORMED);

    g_byte_array_set_size (bad, 0);
    append_ext (bad, 16, alpn, sizeof alpn);
    append_u8 (bad, 0);
    g_clear_pointer (&hs, g_byte_array_unref);
    g_clear_pointer (&rec, g_byte_array_unref);
    hs = build_hello (&spec);
    rec = frame_records (hs->data, hs->len, 16384, 1);
    assert_error (rec->data, rec->len, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_MALFORMED);
  }
}

static void
test_server_name_values (void)
{
  g_autofree char *label63 = g_strnfill (63, 'a');
  g_autofree char *label64 = g_strnfill (64, 'a');
  /* 4 × 63 + 3 dots = 255 bytes: the longest name; one more label byte is too long. */
  g_autofree char *name255 = g_strjoin (".", label63, label63, label63, label63, NULL);
  g_autofree char *name255_dot = g_strconcat (name255, ".", NULL);
  g_autofree char *name256 = g_strconcat (name255, "a", NULL);
  g_autofree char *with63 = g_strconcat (label63, ".example.com", NULL);
  g_autofree char *with64 = g_strconcat (label64, ".example.com", NULL);

  assert_name ("abc.example.com", "abc.example.com");
  assert_name ("ABC.Example.COM.", "abc.example.com");
  assert_name ("localhost", "localhost");
  assert_name ("x-1.a-b.example", "x-1.a-b.example");
  assert_name (with63, with63);
  assert_name (name255, name255);
  assert_name (name255_dot, name255);

  assert_name (with64, NULL);
  assert_name (name256, NULL);
  assert_name ("", NULL);
  assert_name (".", NULL);
  assert_name ("..", NULL);
  assert_name ("abc..example.com", NULL);
  assert_name (".abc.example.com", NULL);
  assert_name ("abc.example.com..", NULL);
  assert_name ("abc_def.example.com", NULL);
  assert_name ("abc example.com", NULL);
  assert_name ("abc.example.com:443", NULL);
  assert_name ("h\xc3\xa9.example.com", NULL);
  assert_name ("*.example.com", NULL);
}

static void
test_server_name_structure (void)
{
  /* Only the first host_name counts; other name types are skipped. */
  {
    const char *names[] = { "first.example.com", "second.example.com", NULL };
    g_autoptr (GByteArray) data = sni_data (names);
    g_autoptr (GByteArray) rec = hello_with_sni_data (data->data, data->len);

    assert_sni (rec->data, rec->len, DEFAULT_MAX, "first.example.com");
  }
  {
    static const guint8 other_then_host[] = { 0, 14, 7, 0, 2, 'x', 'y', 0, 0, 6, 'a', '.', 'b',
                                              '.', 'c', 'd' };
    static const guint8 other_only[] = { 0, 5, 7, 0, 2, 'x', 'y' };
    g_autoptr (GByteArray) rec = hello_with_sni_data (other_then_host, sizeof other_then_host);
    g_autoptr (GByteArray) rec2 = hello_with_sni_data (other_only, sizeof other_only);

    assert_sni (rec->data, rec->len, DEFAULT_MAX, "a.b.cd");
    assert_sni (rec2->data, rec2->len, DEFAULT_MAX, NULL);
  }

  /* Broken server_name structures. */
  {
    static const guint8 empty[] = { 0 };
    static const guint8 empty_list[] = { 0, 0 };
    static const guint8 list_too_long[] = { 0, 7, 0, 0, 3, 'a', '.', 'b' };
    static const guint8 list_too_short[] = { 0, 5, 0, 0, 3, 'a', '.', 'b' };
    static const guint8 name_too_long[] = { 0, 6, 0, 0, 4, 'a', '.', 'b' };
    static const guint8 entry_cut[] = { 0, 2, 0, 0 };
    static const guint8 zero_name[] = { 0, 3, 0, 0, 0 };
    struct
    {
      const guint8 *data;
      gsize len;
    } cases[] = {
      { NULL, 0 },
      { empty, sizeof empty },
      { empty_list, sizeof empty_list },
      { list_too_long, sizeof list_too_long },
      { list_too_short, sizeof list_too_short },
      { name_too_long, sizeof name_too_long },
      { entry_cut, sizeof entry_cut },
      { zero_name, sizeof zero_name },
    };

    for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
      {
        g_autoptr (GByteArray) rec = hello_with_sni_data (cases[i].data, cases[i].len);

        g_test_message ("server_name case %u", i);
        assert_error (rec->data, rec->len, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_MALFORMED);
      }
  }

  /* Two server_name extensions. */
  {
    const char *names[] = { "a.example.com", NULL };
    g_autoptr (GByteArray) data = sni_data (names);
    g_autoptr (GByteArray) exts = g_byte_array_new ();
    HelloSpec spec = default_spec;
    g_autoptr (GByteArray) hs = NULL;
    g_autoptr (GByteArray) rec = NULL;

    append_ext (exts, 0, data->data, data->len);
    append_ext (exts, 0, data->data, data->len);
    spec.exts = exts;
    hs = build_hello (&spec);
    rec = frame_records (hs->data, hs->len, 16384, 1);
    assert_error (rec->data, rec->len, DEFAULT_MAX, GT_TLS_SNIFF_ERROR_MALFORMED);
  }
}

/* A hello split right inside its 4-byte handshake header, and inside the server_name. */
static void
test_awkward_splits (void)
{
  const char *names[] = { "split.example.com", NULL };
  g_autoptr (GByteArray) data = sni_data (names);
  g_autoptr (GByteArray) exts = g_byte_array_new ();
  HelloSpec spec = default_spec;
  g_autoptr (GByteArray) hs = NULL;

  append_ext (exts, 0, data->data, data->len);
  spec.exts = exts;
  hs = build_hello (&spec);
  for (gsize first = 1; first < hs->len; first++)
    {
      g_autoptr (GByteArray) rec = frame_records (hs->data, first, first, 2);
      g_autoptr (GByteArray) tail = frame_records (hs->data + first, hs->len - first, 16384, 2);

      g_byte_array_append (rec, tail->data, tail->len);
      assert_sni (rec->data, rec->len, DEFAULT_MAX, "split.example.com");
    }
}

static void
test_alert (void)
{
  guint8 out[GT_TLS_ALERT_SIZE];
  static const guint8 expected[] = { 21, 3, 3, 0, 2, 2, 112 };

  g_assert_cmpuint (gt_tls_alert (out, GT_TLS_ALERT_UNRECOGNIZED_NAME), ==, 7);
  g_assert_cmpmem (out, sizeof out, expected, sizeof expected);
  g_assert_cmpuint (gt_tls_alert (out, GT_TLS_ALERT_DECODE_ERROR), ==, 7);
  g_assert_cmpuint (out[6], ==, 50);
  gt_tls_alert (out, GT_TLS_ALERT_INTERNAL_ERROR);
  g_assert_cmpuint (out[6], ==, 80);
  gt_tls_alert (out, GT_TLS_ALERT_HANDSHAKE_FAILURE);
  g_assert_cmpuint (out[6], ==, 40);
  g_assert_cmpuint (out[0], ==, 21);
  g_assert_cmpuint (out[5], ==, 2);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/gt/protocol/tls-sniff/fixture-sni", test_fixture_sni);
  g_test_add_func ("/gt/protocol/tls-sniff/fixture-no-sni", test_fixture_no_sni);
  g_test_add_func ("/gt/protocol/tls-sniff/fixture-large", test_fixture_large);
  g_test_add_func ("/gt/protocol/tls-sniff/truncated", test_truncated);
  g_test_add_func ("/gt/protocol/tls-sniff/split-records", test_split_records);
  g_test_add_func ("/gt/protocol/tls-sniff/awkward-splits", test_awkward_splits);
  g_test_add_func ("/gt/protocol/tls-sniff/trailing-bytes", test_trailing_bytes);
  g_test_add_func ("/gt/protocol/tls-sniff/not-tls", test_not_tls);
  g_test_add_func ("/gt/protocol/tls-sniff/bad-records", test_bad_records);
  g_test_add_func ("/gt/protocol/tls-sniff/bad-handshake", test_bad_handshake);
  g_test_add_func ("/gt/protocol/tls-sniff/server-name-values", test_server_name_values);
  g_test_add_func ("/gt/protocol/tls-sniff/server-name-structure", test_server_name_structure);
  g_test_add_func ("/gt/protocol/tls-sniff/alert", test_alert);

  return g_test_run ();
}
