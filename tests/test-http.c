/* test-http.c: unit tests for Host sniffing, host prefixes and the streaming Host rewriter. */
#include "config.h"

#include <string.h>

#include "gt-http.h"

/* Byte-string literal with its length, NUL bytes included. */
#define BIN(s) s, sizeof s - 1

/* Sniffing ------------------------------------------------------------------------------------ */

typedef struct
{
  const char *request;
  gsize len; /* 0: strlen (request) */
  gsize head_len; /* 0: the whole request is the head */
  const char *host;
} GoodCase;

static const GoodCase good_cases[] = {
  { "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 0, 0, "example.com" },
  { "POST /submit?x=1 HTTP/1.1\r\nHost: abc.example.com\r\nContent-Length: 5\r\n\r\nhello", 0,
    sizeof "POST /submit?x=1 HTTP/1.1\r\nHost: abc.example.com\r\nContent-Length: 5\r\n\r\n" - 1,
    "abc.example.com" },
  /* Keep-alive: the second request's Host is not a second Host header of the first head. */
  { "GET /a HTTP/1.1\r\nHost: a.example.com\r\n\r\nGET /b HTTP/1.1\r\nHost: b.example.com\r\n\r\n",
    0, sizeof "GET /a HTTP/1.1\r\nHost: a.example.com\r\n\r\n" - 1, "a.example.com" },
  { "GET / HTTP/1.1\r\nhost: Lower.Example.COM\r\n\r\n", 0, 0, "lower.example.com" },
  { "GET / HTTP/1.1\r\nHOST:\t \tTabs.example.com\t \r\n\r\n", 0, 0, "tabs.example.com" },
  { "GET / HTTP/1.1\r\nHost: abc.example.com:8080\r\n\r\n", 0, 0, "abc.example.com" },
  { "GET / HTTP/1.1\r\nHost: example.com:\r\n\r\n", 0, 0, "example.com" },
  { "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 0, 0, "[::1]" },
  { "GET / HTTP/1.1\r\nHost: [2001:DB8::A]\r\n\r\n", 0, 0, "[2001:db8::a]" },
  { "GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n", 0, 0, "127.0.0.1" },
  { "GET / HTTP/1.0\r\nHost:no-space_ok.example\r\n\r\n", 0, 0, "no-space_ok.example" },
  { "GET http://x.example.com/p?q#f HTTP/1.1\r\nUser-Agent: t\r\nAccept: */*\r\n"
    "Host: x.example.com\r\nX-Empty:\r\nX-Latin: caf\xc3\xa9\r\n\r\n", 0, 0, "x.example.com" },
  { "OPTIONS * HTTP/1.1\r\nHost: star\r\n\r\n", 0, 0, "star" },
  { "XP http://peer.example.com HTTP/1.1\r\nHost: peer.example.com\r\n"
    "Transfer-Encoding: chunked\r\n\r\n", 0, 0, "peer.example.com" },
  /* Whatever follows the head is not looked at, NUL bytes included. */
  { BIN ("PUT /f HTTP/1.1\r\nHost: bin.example\r\n\r\n\0\1\2\n\n"),
    sizeof "PUT /f HTTP/1.1\r\nHost: bin.example\r\n\r\n" - 1, "bin.example" },
};

static gsize
good_len (const GoodCase *c)
{
  return c->len != 0 ? c->len : strlen (c->request);
}

static gsize
good_head_len (const GoodCase *c)
{
  return c->head_len != 0 ? c->head_len : good_len (c);
}

static void
test_sniff_good (void)
{
  for (gsize i = 0; i < G_N_ELEMENTS (good_cases); i++)
    {
      const GoodCase *c = &good_cases[i];
      g_autoptr (GError) error = NULL;
      g_autofree char *host = NULL;
      GtDecodeResult res;

      g_test_message ("case %" G_GSIZE_FORMAT, i);
      res = gt_http_sniff_host ((const guint8 *) c->request, good_len (c), GT_HTTP_MAX_HEAD, &host,
                                &error);
      g_assert_no_error (error);
      g_assert_cmpint (res, ==, GT_DECODE_OK);
      g_assert_cmpstr (host, ==, c->host);
    }
}

static void
test_sniff_truncated (void)
{
  for (gsize i = 0; i < G_N_ELEMENTS (good_cases); i++)
    {
      const GoodCase *c = &good_cases[i];
      gsize head_len = good_head_len (c);

      for (gsize n = 0; n <= good_len (c); n++)
        {
          g_autoptr (GError) error = NULL;
          g_autofree char *host = NULL;
          GtDecodeResult res;

          res = gt_http_sniff_host ((const guint8 *) c->request, n, GT_HTTP_MAX_HEAD, &host,
                                    &error);
          if (n < head_len)
            {
              g_assert_no_error (error);
              g_assert_cmpint (res, ==, GT_DECODE_NEED_MORE);
              g_assert_null (host);
            }
          else
            {
              g_assert_no_error (error);
              g_assert_cmpint (res, ==, GT_DECODE_OK);
              g_assert_cmpstr (host, ==, c->host);
            }
        }
    }
}

typedef struct
{
  const char *request;
  gsize len; /* 0: strlen */
  GtHttpErrorEnum code;
} BadCase;

static const BadCase bad_cases[] = {
  /* request line */
  { "Host: example.com\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET /\r\nHost: x\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / \r\nHost: x\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.x\r\nHost: x\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.11\r\nHost: x\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { " GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { BIN ("GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n"), GT_HTTP_ERROR_MALFORMED },
  { "GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { BIN ("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), GT_HTTP_ERROR_MALFORMED },
  /* line endings */
  { "GET / HTTP/1.1\nHost: x\n\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: x\nA: b\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: x\rA: b\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: x\r\n\r\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: x\r\n\n", 0, GT_HTTP_ERROR_MALFORMED },
  /* header fields */
  { "GET / HTTP/1.1\r\nHost: a.example.com\r\n folded\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nA: b\r\n\tfolded\r\nHost: x\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: a.example.com\r\nHost: a.example.com\r\n\r\n", 0,
    GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: a.example.com\r\nhOsT: b.example.com\r\n\r\n", 0,
    GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost example.com\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost : example.com\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\n: example.com\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nX(y): z\r\nHost: x\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { BIN ("GET / HTTP/1.1\r\nHost: exa\0mple.com\r\n\r\n"), GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nX: a\x7f\r\nHost: x\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  /* Host values */
  { "GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: user@x.example.com\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: caf\xc3\xa9.example\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: x:abc\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: x:123456\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: x:80:80\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: []\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: [zz::1]\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: [1.2.3.4]\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: [1::2::3]\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  { "GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", 0, GT_HTTP_ERROR_MALFORMED },
  /* no Host */
  { "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 0, GT_HTTP_ERROR_NO_HOST },
  { "GET / HTTP/1.1\r\n\r\n", 0, GT_HTTP_ERROR_NO_HOST },
  { "GET / HTTP/1.1\r\nHost:\r\n\r\n", 0, GT_HTTP_ERROR_NO_HOST },
  { "GET / HTTP/1.1\r\nHost: \t \r\n\r\n", 0, GT_HTTP_ERROR_NO_HOST },
  { "GET / HTTP/1.1\r\nX-Host: x.example.com\r\nHostname: y\r\n\r\n", 0, GT_HTTP_ERROR_NO_HOST },
  { "GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: late.example.com\r\n\r\n", 0,
    GT_HTTP_ERROR_NO_HOST },
};

static void
test_sniff_bad (void)
{
  for (gsize i = 0; i < G_N_ELEMENTS (bad_cases); i++)
    {
      const BadCase *c = &bad_cases[i];
      gsize len = c->len != 0 ? c->len : strlen (c->request);
      g_autoptr (GError) error = NULL;
      g_autofree char *host = NULL;
      GtDecodeResult res;

      g_test_message ("case %" G_GSIZE_FORMAT, i);
      res = gt_http_sniff_host ((const guint8 *) c->request, len, GT_HTTP_MAX_HEAD, &host, &error);
      g_assert_error (error, GT_HTTP_ERROR, (gint) c->code);
      g_assert_cmpint (res, ==, GT_DECODE_ERROR);
      g_assert_null (host);
    }
}

static void
test_sniff_host_too_long (void)
{
  g_autoptr (GString) req = g_string_new ("GET / HTTP/1.1\r\nHost: ");
  g_autoptr (GString) name = g_string_new (NULL);
  g_autoptr (GError) error = NULL;
  g_autofree char *host = NULL;
  g_autofree char *host2 = NULL;
  GtDecodeResult res;

  /* 255 bytes is the DNS limit and still fine. */
  while (name->len < 255)
    g_string_append_c (name, 'a' + name->len % 26);
  g_string_append_printf (req, "%s:443\r\n\r\n", name->str);
  res = gt_http_sniff_host ((const guint8 *) req->str, req->len, GT_HTTP_MAX_HEAD, &host, &error);
  g_assert_no_error (error);
  g_assert_cmpint (res, ==, GT_DECODE_OK);
  g_assert_cmpstr (host, ==, name->str);

  g_string_truncate (req, strlen ("GET / HTTP/1.1\r\nHost: "));
  g_string_append_printf (req, "%sz\r\n\r\n", name->str);
  res = gt_http_sniff_host ((const guint8 *) req->str, req->len, GT_HTTP_MAX_HEAD, &host2, &error);
  g_assert_error (error, GT_HTTP_ERROR, GT_HTTP_ERROR_MALFORMED);
  g_assert_cmpint (res, ==, GT_DECODE_ERROR);
  g_assert_null (host2);
}

/* Bytes that already rule out a request head are rejected without waiting for the rest. */
static void
test_sniff_early_reject (void)
{
  static const struct
  {
    const char *bytes;
    gsize len;
  } cases[] = {
    { BIN ("\x16") },
    { BIN ("\xf0GT\x01") },
    { BIN ("G(") },
    { BIN (" ") },
    { BIN ("GET  ") },
    { BIN ("GET / HTP") },
    { BIN ("GET / HTTP/1.1\n") },
    { BIN ("GET / HTTP/1.1\r\r") },
    { BIN ("SSH-2.0-OpenSSH_9.2\r\n") },
    { BIN ("GET / HTTP/1.1\r\n\0") },
    { BIN ("GET / HTTP/1.1\r\n folded") },
    { BIN ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n") },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) error = NULL;
      g_autofree char *host = NULL;
      GtDecodeResult res;

      g_test_message ("case %" G_GSIZE_FORMAT, i);
      res = gt_http_sniff_host ((const guint8 *) cases[i].bytes, cases[i].len, GT_HTTP_MAX_HEAD,
                                &host, &error);
      g_assert_error (error, GT_HTTP_ERROR, GT_HTTP_ERROR_MALFORMED);
      g_assert_cmpint (res, ==, GT_DECODE_ERROR);
    }
}

/* A valid head prefix padded with one long header to exactly `total` bytes (no end yet). */
static GString *
padded_head (gsize total)
{
  GString *s = g_string_new ("GET / HTTP/1.1\r\nHost: big.example.com\r\nX-Fill: ");

  g_assert_cmpuint (total, >=, s->len);
  while (s->len < total)
    g_string_append_c (s, 'a');
  return s;
}

static void
test_sniff_too_large (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *host = NULL;
  GtDecodeResult res;

  /* Just under the limit: still waiting. */
  {
    g_autoptr (GString) s = padded_head (GT_HTTP_MAX_HEAD - 1);
    res = gt_http_sniff_host ((const guint8 *) s->str, s->len, GT_HTTP_MAX_HEAD, &host, &error);
    g_assert_no_error (error);
    g_assert_cmpint (res, ==, GT_DECODE_NEED_MORE);
  }
  /* 8 KiB + 1 without an end. */
  {
    g_autoptr (GString) s = padded_head (GT_HTTP_MAX_HEAD + 1);
    res = gt_http_sniff_host ((const guint8 *) s->str, s->len, GT_HTTP_MAX_HEAD, &host, &error);
    g_assert_error (error, GT_HTTP_ERROR, GT_HTTP_ERROR_TOO_LARGE);
    g_assert_cmpint (res, ==, GT_DECODE_ERROR);
    g_assert_null (host);
    g_clear_error (&error);
  }
  /* A head of exactly max_head bytes is fine; one more byte is not, even if it ends later. */
  {
    g_autoptr (GString) s = padded_head (GT_HTTP_MAX_HEAD - 4);
    g_string_append (s, "\r\n\r\n");
    g_assert_cmpuint (s->len, ==, GT_HTTP_MAX_HEAD);
    res = gt_http_sniff_host ((const guint8 *) s->str, s->len, GT_HTTP_MAX_HEAD, &host, &error);
    g_assert_no_error (error);
    g_assert_cmpint (res, ==, GT_DECODE_OK);
    g_assert_cmpstr (host, ==, "big.example.com");
    g_clear_pointer (&host, g_free);

    g_string_insert_c (s, 60, 'a');
    res = gt_http_sniff_host ((const guint8 *) s->str, s->len, GT_HTTP_MAX_HEAD, &host, &error);
    g_assert_error (error, GT_HTTP_ERROR, GT_HTTP_ERROR_TOO_LARGE);
    g_assert_cmpint (res, ==, GT_DECODE_ERROR);
    g_clear_error (&error);
  }
  /* The limit is the caller's. */
  {
    const char *req = "GET / HTTP/1.1\r\nHost: small.example.com\r\n\r\n";
    gsize len = strlen (req);

    res = gt_http_sniff_host ((const guint8 *) req, len, len, &host, &error);
    g_assert_no_error (error);
    g_assert_cmpint (res, ==, GT_DECODE_OK);
    g_clear_pointer (&host, g_free);

    res = gt_http_sniff_host ((const guint8 *) req, len, len - 1, &host, &error);
    g_assert_error (error, GT_HTTP_ERROR, GT_HTTP_ERROR_TOO_LARGE);
    g_assert_cmpint (res, ==, GT_DECODE_ERROR);
    g_clear_error (&error);

    res = gt_http_sniff_host ((const guint8 *) req, 20, 32, &host, &error);
    g_assert_no_error (error);
    g_assert_cmpint (res, ==, GT_DECODE_NEED_MORE);
  }
}

/* Host prefix --------------------------------------------------------------------------------- */

static void
test_host_prefix (void)
{
  static const struct
  {
    const char *host;
    const char *prefix; /* NULL: no prefix */
  } cases[] = {
    { "abc.example.com", "abc" },
    { "ABC.Example.com", "abc" },
    { "localhost", "localhost" },
    { "LocalHost", "localhost" },
    { "a..b", "a" },
    { "abc.", "abc" },
    { "123.example.com", "123" },
    { "my-app.example.com", "my-app" },
    /* Decision: hyphens anywhere are fine; the prefix is only a lookup key. */
    { "-x.example.com", "-x" },
    { "x-.example.com", "x-" },
    { "", NULL },
    { ".example.com", NULL },
    { "..", NULL },
    { "127.0.0.1", NULL },
    { "10.1.2.3", NULL },
    { "[::1]", NULL },
    { "::1", NULL },
    { "[2001:db8::1]", NULL },
    { "under_score.example.com", NULL },
    { "sp ace.example.com", NULL },
    { "caf\xc3\xa9.example.com", NULL },
    { "localhost:8080", NULL },
    /* 63 bytes is the longest label, 64 is too long. */
    { "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk.example.com",
      "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk" },
    { "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl.example.com", NULL },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *prefix = gt_http_host_prefix (cases[i].host);

      g_test_message ("case %" G_GSIZE_FORMAT ": %s", i, cases[i].host);
      g_assert_cmpstr (prefix, ==, cases[i].prefix);
    }
}

/* Host rewriter ------------------------------------------------------------------------------- */

#define LOCAL_HOST "127.0.0.1:8080"

/* Feeds input in chunks of chunk bytes; returns the output, or NULL with error set. */
static GByteArray *
rewrite_chunked (const char *input, gsize len, gsize chunk, gboolean *done, GError **error)
{
  g_autoptr (GtHostRewriter) rw = gt_host_rewriter_new (LOCAL_HOST);
  g_autoptr (GByteArray) out = g_byte_array_new ();

  for (gsize off = 0; off < len; off += chunk)
    {
      if (!gt_host_rewriter_feed (rw, (const guint8 *) input + off, MIN (chunk, len - off), out,
                                  error))
        return NULL;
    }
  if (done != NULL)
    *done = gt_host_rewriter_is_done (rw);
  return g_steal_pointer (&out);
}

static void
assert_bytes_eq (GByteArray *out, const char *expected, gsize expected_len)
{
  g_assert_nonnull (out);
  g_assert_cmpmem (out->data, out->len, expected, expected_len);
}

/* Every chunk size from 1 to len, and every split into two parts, give the expected bytes. */
static void
assert_rewrites_to (const char *input, gsize len, const char *expected, gsize expected_len,
                    gboolean expect_done)
{
  for (gsize chunk = 1; chunk <= MAX (len, 1); chunk++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GByteArray) out = NULL;
      gboolean done = FALSE;

      out = rewrite_chunked (input, len, chunk, &done, &error);
      g_assert_no_error (error);
      assert_bytes_eq (out, expected, expected_len);
      g_assert_cmpint (done, ==, expect_done);
    }

  for (gsize split = 0; split <= len; split++)
    {
      g_autoptr (GtHostRewriter) rw = gt_host_rewriter_new (LOCAL_HOST);
      g_autoptr (GByteArray) out = g_byte_array_new ();
      g_autoptr (GError) error = NULL;

      g_assert_true (gt_host_rewriter_feed (rw, (const guint8 *) input, split, out, &error));
      g_assert_true (gt_host_rewriter_feed (rw, (const guint8 *) input + split, len - split, out,
                                            &error));
      g_assert_no_error (error);
      assert_bytes_eq (out, expected, expected_len);
    }
}

static void
test_rewrite_chunks (void)
{
  const char *input = "GET /path HTTP/1.1\r\nUser-Agent: t\r\nhost:  abc.example.com:80 \r\n"
                      "Accept: */*\r\n\r\nbody Host: x\r\n\r\n";
  const char *expected = "GET /path HTTP/1.1\r\nUser-Agent: t\r\nHost: " LOCAL_HOST "\r\n"
                         "Accept: */*\r\n\r\nbody Host: x\r\n\r\n";

  assert_rewrites_to (input, strlen (input), expected, strlen (expected), TRUE);
}

static void
test_rewrite_variants (void)
{
  static const struct
  {
    const char *input;
    const char *expected;
    gboolean done;
  } cases[] = {
    /* Host as the first and only header, upper case. */
    { "GET / HTTP/1.1\r\nHOST:x\r\n\r\n", "GET / HTTP/1.1\r\nHost: " LOCAL_HOST "\r\n\r\n", TRUE },
    /* Empty Host value. */
    { "GET / HTTP/1.1\r\nHost:\r\n\r\n", "GET / HTTP/1.1\r\nHost: " LOCAL_HOST "\r\n\r\n", TRUE },
    /* Only the first Host line of the head is replaced. */
    { "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: " LOCAL_HOST "\r\nHost: b\r\n\r\n", TRUE },
    /* Look-alike names stay. */
    { "GET / HTTP/1.1\r\nHostname: a\r\nX-Host: b\r\nHost : c\r\nHo: d\r\n\r\n",
      "GET / HTTP/1.1\r\nHostname: a\r\nX-Host: b\r\nHost : c\r\nHo: d\r\n\r\n", TRUE },
    /* A folded continuation belongs to the replaced value. */
    { "GET / HTTP/1.1\r\nHost: a\r\n b\r\n\tc\r\nX: y\r\n z\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: " LOCAL_HOST "\r\nX: y\r\n z\r\n\r\n", TRUE },
    /* Bare LF endings (lenient peers): still found and the head still ends. */
    { "GET / HTTP/1.1\nHost: x\n\nHost: y\n",
      "GET / HTTP/1.1\nHost: " LOCAL_HOST "\r\n\nHost: y\n", TRUE },
    /* No end of head yet: not done, the Host line already replaced. */
    { "GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n",
      "GET / HTTP/1.1\r\nHost: " LOCAL_HOST "\r\nAccept: */*\r\n", FALSE },
    /* A Host line cut before its end is dropped until its end arrives. */
    { "GET / HTTP/1.1\r\nHost: partial", "GET / HTTP/1.1\r\nHost: " LOCAL_HOST "\r\n", FALSE },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_test_message ("case %" G_GSIZE_FORMAT, i);
      assert_rewrites_to (cases[i].input, strlen (cases[i].input), cases[i].expected,
                          strlen (cases[i].expected), cases[i].done);
    }
}

static void
test_rewrite_no_host (void)
{
  const char *input = "POST /x HTTP/1.1\r\nContent-Length: 11\r\n\r\nHost: a\r\n\r\n";

  assert_rewrites_to (input, strlen (input), input, strlen (input), TRUE);
}

static void
test_rewrite_keep_alive (void)
{
  const char *input = "GET /1 HTTP/1.1\r\nHost: one.example.com\r\n\r\n"
                      "GET /2 HTTP/1.1\r\nHost: two.example.com\r\n\r\n";
  const char *expected = "GET /1 HTTP/1.1\r\nHost: " LOCAL_HOST "\r\n\r\n"
                         "GET /2 HTTP/1.1\r\nHost: two.example.com\r\n\r\n";

  assert_rewrites_to (input, strlen (input), expected, strlen (expected), TRUE);
}

static void
test_rewrite_done_state (void)
{
  g_autoptr (GtHostRewriter) rw = gt_host_rewriter_new ("local:1");
  g_autoptr (GByteArray) out = g_byte_array_new ();
  g_autoptr (GError) error = NULL;
  const char *head = "GET / HTTP/1.1\r\nHost: x\r\n\r";
  const char *big = "GET / HTTP/1.1\r\nHost: y\r\n\r\n";

  g_assert_false (gt_host_rewriter_is_done (rw));
  g_assert_true (gt_host_rewriter_feed (rw, (const guint8 *) head, strlen (head), out, &error));
  g_assert_false (gt_host_rewriter_is_done (rw));
  g_assert_true (gt_host_rewriter_feed (rw, (const guint8 *) "\n", 1, out, &error));
  g_assert_true (gt_host_rewriter_is_done (rw));
  /* Once done, anything passes, even a head far beyond the limit. */
  for (guint i = 0; i < 1000; i++)
    g_assert_true (gt_host_rewriter_feed (rw, (const guint8 *) big, strlen (big), out, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (out->len, ==, strlen ("GET / HTTP/1.1\r\nHost: local:1\r\n\r\n")
                                      + 1000 * strlen (big));
  g_assert_cmpmem (out->data + out->len - strlen (big), strlen (big), big, strlen (big));
}

static void
test_rewrite_too_large (void)
{
  g_autoptr (GString) s = padded_head (GT_HTTP_MAX_HEAD - 4);
  gsize chunks[] = { 1, 7, 100, 4096, GT_HTTP_MAX_HEAD * 2 };

  /* Exactly the limit: fine. */
  g_string_append (s, "\r\n\r\n");
  for (gsize i = 0; i < G_N_ELEMENTS (chunks); i++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GByteArray) out = NULL;
      gboolean done = FALSE;

      out = rewrite_chunked (s->str, s->len, chunks[i], &done, &error);
      g_assert_no_error (error);
      g_assert_nonnull (out);
      g_assert_true (done);
    }

  /* One byte more, or no end at all, fails whatever the chunking. */
  g_string_insert_c (s, 60, 'a');
  for (gsize i = 0; i < G_N_ELEMENTS (chunks); i++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GByteArray) out = rewrite_chunked (s->str, s->len, chunks[i], NULL, &error);

      g_assert_error (error, GT_HTTP_ERROR, GT_HTTP_ERROR_TOO_LARGE);
      g_assert_null (out);
    }

  {
    g_autoptr (GString) endless = padded_head (3 * GT_HTTP_MAX_HEAD);
    g_autoptr (GtHostRewriter) rw = gt_host_rewriter_new (LOCAL_HOST);
    g_autoptr (GByteArray) out = g_byte_array_new ();
    g_autoptr (GError) error = NULL;

    g_assert_false (gt_host_rewriter_feed (rw, (const guint8 *) endless->str, endless->len, out,
                                           &error));
    g_assert_error (error, GT_HTTP_ERROR, GT_HTTP_ERROR_TOO_LARGE);
    /* Nothing of the failed call is left in out, and the rewriter stays failed. */
    g_assert_cmpuint (out->len, ==, 0);
    g_clear_error (&error);
    g_assert_false (gt_host_rewriter_feed (rw, (const guint8 *) "\r\n\r\n", 4, out, &error));
    g_assert_error (error, GT_HTTP_ERROR, GT_HTTP_ERROR_TOO_LARGE);
    g_assert_false (gt_host_rewriter_is_done (rw));
  }
}

static void
test_rewrite_not_http (void)
{
  static const struct
  {
    const char *bytes;
    gsize len;
  } cases[] = {
    /* TLS ClientHello start. */
    { BIN ("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03Host: x\r\n\r\n") },
    { BIN ("\r\nHost: x\r\n\r\n") },
    { BIN ("\0\0\0\x10Host: x\r\n\r\n") },
    /* A control byte in the first line. */
    { BIN ("ABC\x01\x02Host: x\r\nHost: y\r\n\r\n") },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_test_message ("case %" G_GSIZE_FORMAT, i);
      assert_rewrites_to (cases[i].bytes, cases[i].len, cases[i].bytes, cases[i].len, TRUE);
    }

  /* Binary bytes beyond the limit pass too, since nothing is buffered for them. */
  {
    g_autofree guint8 *blob = g_malloc (4 * GT_HTTP_MAX_HEAD);
    g_autoptr (GtHostRewriter) rw = gt_host_rewriter_new (LOCAL_HOST);
    g_autoptr (GByteArray) out = g_byte_array_new ();
    g_autoptr (GError) error = NULL;

    for (gsize i = 0; i < 4 * GT_HTTP_MAX_HEAD; i++)
      blob[i] = (guint8) (i * 7 + 0x80);
    g_assert_true (gt_host_rewriter_feed (rw, blob, 4 * GT_HTTP_MAX_HEAD, out, &error));
    g_assert_no_error (error);
    g_assert_true (gt_host_rewriter_is_done (rw));
    g_assert_cmpmem (out->data, out->len, blob, 4 * GT_HTTP_MAX_HEAD);
  }
}

static void
test_rewrite_empty_feed (void)
{
  g_autoptr (GtHostRewriter) rw = gt_host_rewriter_new (LOCAL_HOST);
  g_autoptr (GByteArray) out = g_byte_array_new ();
  g_autoptr (GError) error = NULL;

  g_assert_true (gt_host_rewriter_feed (rw, NULL, 0, out, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (out->len, ==, 0);
  g_assert_false (gt_host_rewriter_is_done (rw));
}

/* httpMUXHeader: the whole value of another header, any case of its name; bad values refused. */
static void
test_sniff_field (void)
{
  static const struct
  {
    const char *head;
    const char *want; /* NULL: error */
  } cases[] = {
    { "GET / HTTP/1.1\r\nHost: a.b\r\nEID: client-1\r\n\r\n", "client-1" },
    { "GET / HTTP/1.0\r\neid:\t Client.One \r\n\r\n", "client.one" },
    { "GET / HTTP/1.1\r\nHost: a.b\r\n\r\n", NULL },
    { "GET / HTTP/1.1\r\nEID: a b\r\n\r\n", NULL },
    { "GET / HTTP/1.1\r\nEID: a\r\nEID: b\r\n\r\n", NULL },
    { "GET / HTTP/1.1\r\nEID:\r\n\r\n", NULL }, /* empty: as if missing */
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) error = NULL;
      g_autofree char *value = NULL;
      GtDecodeResult r = gt_http_sniff_field ((const guint8 *) cases[i].head,
                                              strlen (cases[i].head), GT_HTTP_MAX_HEAD, "EID",
                                              &value, &error);

      if (cases[i].want == NULL)
        {
          int want_code = i == 2 || i == 5 ? GT_HTTP_ERROR_NO_HOST : GT_HTTP_ERROR_MALFORMED;

          g_assert_cmpint (r, ==, GT_DECODE_ERROR);
          g_assert_error (error, GT_HTTP_ERROR, want_code);
          g_assert_null (value);
        }
      else
        {
          g_assert_no_error (error);
          g_assert_cmpint (r, ==, GT_DECODE_OK);
          g_assert_cmpstr (value, ==, cases[i].want);
        }
    }
  /* Incomplete: more is needed. */
  {
    g_autofree char *value = NULL;
    const char *part = "GET / HTTP/1.1\r\nEID: x";

    g_assert_cmpint (gt_http_sniff_field ((const guint8 *) part, strlen (part), GT_HTTP_MAX_HEAD,
                                          "EID", &value, NULL),
                     ==, GT_DECODE_NEED_MORE);
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/gt/protocol/http/sniff/good", test_sniff_good);
  g_test_add_func ("/gt/protocol/http/sniff/field", test_sniff_field);
  g_test_add_func ("/gt/protocol/http/sniff/truncated", test_sniff_truncated);
  g_test_add_func ("/gt/protocol/http/sniff/bad", test_sniff_bad);
  g_test_add_func ("/gt/protocol/http/sniff/host-too-long", test_sniff_host_too_long);
  g_test_add_func ("/gt/protocol/http/sniff/early-reject", test_sniff_early_reject);
  g_test_add_func ("/gt/protocol/http/sniff/too-large", test_sniff_too_large);
  g_test_add_func ("/gt/protocol/http/prefix", test_host_prefix);
  g_test_add_func ("/gt/protocol/http/rewrite/chunks", test_rewrite_chunks);
  g_test_add_func ("/gt/protocol/http/rewrite/variants", test_rewrite_variants);
  g_test_add_func ("/gt/protocol/http/rewrite/no-host", test_rewrite_no_host);
  g_test_add_func ("/gt/protocol/http/rewrite/keep-alive", test_rewrite_keep_alive);
  g_test_add_func ("/gt/protocol/http/rewrite/done", test_rewrite_done_state);
  g_test_add_func ("/gt/protocol/http/rewrite/too-large", test_rewrite_too_large);
  g_test_add_func ("/gt/protocol/http/rewrite/not-http", test_rewrite_not_http);
  g_test_add_func ("/gt/protocol/http/rewrite/empty-feed", test_rewrite_empty_feed);

  return g_test_run ();
}
