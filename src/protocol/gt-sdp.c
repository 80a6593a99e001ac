/* gt-sdp.c: parse and build the SDP of a WebRTC data channel session. */
#include "config.h"

#include "gt-sdp.h"

#include <stdlib.h>
#include <string.h>

G_DEFINE_QUARK (gt-sdp-error-quark, gt_sdp_error)

void
gt_sdp_free (GtSdp *sdp)
{
  if (sdp == NULL)
    return;
  g_free (sdp->ice_ufrag);
  g_free (sdp->ice_pwd);
  g_free (sdp->mid);
  g_clear_pointer (&sdp->candidates, g_ptr_array_unref);
  g_free (sdp);
}

/* ICE ufrag/pwd characters (RFC 8839 ice-char: ALPHA / DIGIT / "+" / "/"). */
static gboolean
ice_chars_ok (const char *s, gsize min, gsize max)
{
  gsize n = strlen (s);

  if (n < min || n > max)
    return FALSE;
  for (; *s != '\0'; s++)
    if (!g_ascii_isalnum (*s) && *s != '+' && *s != '/')
      return FALSE;
  return TRUE;
}

static gboolean
parse_fingerprint (const char *value, guint8 out[GT_SDP_FINGERPRINT_LEN])
{
  const char *p;
  guint i;

  /* "sha-256 AB:CD:..." */
  if (g_ascii_strncasecmp (value, "sha-256 ", 8) != 0)
    return FALSE;
  p = value + 8;
  for (i = 0; i < GT_SDP_FINGERPRINT_LEN; i++)
    {
      int hi, lo;

      if (i > 0 && *p++ != ':')
        return FALSE;
      hi = g_ascii_xdigit_value (p[0]);
      lo = hi >= 0 ? g_ascii_xdigit_value (p[1]) : -1;
      if (lo < 0)
        return FALSE;
      out[i] = (guint8) (hi << 4 | lo);
      p += 2;
    }
  return *p == '\0';
}

gboolean
gt_sdp_candidate_is_udp (const char *candidate)
{
  g_auto (GStrv) f = NULL;
  guint64 v;

  g_return_val_if_fail (candidate != NULL, FALSE);
  if (g_ascii_strncasecmp (candidate, "candidate:", 10) != 0)
    return FALSE;
  f = g_strsplit (candidate + 10, " ", 10);
  /* foundation component transport priority address port "typ" type */
  if (g_strv_length (f) < 8 || g_ascii_strcasecmp (f[2], "udp") != 0
      || strcmp (f[6], "typ") != 0 || *f[0] == '\0' || *f[4] == '\0')
    return FALSE;
  if (!g_ascii_string_to_unsigned (f[1], 10, 1, 256, &v, NULL)
      || !g_ascii_string_to_unsigned (f[3], 10, 0, G_MAXUINT32, &v, NULL)
      || !g_ascii_string_to_unsigned (f[5], 10, 0, 65535, &v, NULL))
    return FALSE;
  return TRUE;
}

static gboolean
fail (GError **error, GtSdpErrorEnum code, const char *what)
{
  g_set_error (error, GT_SDP_ERROR, code, "bad SDP: %s", what);
  return FALSE;
}

/* What the attribute lines of one level (session or the data channel's media) say. */
typedef struct
{
  char *ufrag, *pwd, *setup;
  gboolean has_fingerprint;
  guint8 fingerprint[GT_SDP_FINGERPRINT_LEN];
} Level;

static void
level_clear (Level *l)
{
  g_free (l->ufrag);
  g_free (l->pwd);
  g_free (l->setup);
}

static gboolean
apply_attribute (GtSdp *sdp, Level *level, gboolean in_media, const char *attr, GError **error)
{
  const char *colon = strchr (attr, ':');
  g_autofree char *name = colon ? g_strndup (attr, colon - attr) : g_strdup (attr);
  const char *value = colon ? colon + 1 : "";
  guint64 v;

  if (strcmp (name, "ice-ufrag") == 0)
    {
      if (!ice_chars_ok (value, 4, 256))
        return fail (error, GT_SDP_ERROR_MALFORMED, "ice-ufrag");
      g_free (level->ufrag);
      level->ufrag = g_strdup (value);
    }
  else if (strcmp (name, "ice-pwd") == 0)
    {
      if (!ice_chars_ok (value, 22, 256))
        return fail (error, GT_SDP_ERROR_MALFORMED, "ice-pwd");
      g_free (level->pwd);
      level->pwd = g_strdup (value);
    }
  else if (strcmp (name, "fingerprint") == 0)
    {
      /* Other hash functions may be offered too; sha-256 is the one every browser sends. */
      if (parse_fingerprint (value, level->fingerprint))
        level->has_fingerprint = TRUE;
    }
  else if (strcmp (name, "setup") == 0)
    {
      g_free (level->setup);
      level->setup = g_strdup (value);
    }
  else if (in_media && strcmp (name, "mid") == 0)
    {
      if (*value == '\0' || strlen (value) > 32 || strpbrk (value, " \t") != NULL)
        return fail (error, GT_SDP_ERROR_MALFORMED, "mid");
      g_free (sdp->mid);
      sdp->mid = g_strdup (value);
    }
  else if (in_media && strcmp (name, "sctp-port") == 0)
    {
      if (!g_ascii_string_to_unsigned (value, 10, 1, 65535, &v, NULL))
        return fail (error, GT_SDP_ERROR_MALFORMED, "sctp-port");
      sdp->sctp_port = (guint16) v;
    }
  else if (in_media && strcmp (name, "max-message-size") == 0)
    {
      if (!g_ascii_string_to_unsigned (value, 10, 0, G_MAXUINT32, &v, NULL))
        return fail (error, GT_SDP_ERROR_MALFORMED, "max-message-size");
      sdp->max_message_size = (guint32) v;
    }
  else if (in_media && strcmp (name, "candidate") == 0)
    {
      if (gt_sdp_candidate_is_udp (attr) && sdp->candidates->len < GT_SDP_MAX_CANDIDATES)
        g_ptr_array_add (sdp->candidates, g_strdup (attr));
    }
  else if (in_media && strcmp (name, "end-of-candidates") == 0)
    sdp->end_of_candidates = TRUE;
  return TRUE;
}

GtSdp *
gt_sdp_parse (const char *text, gsize len, GError **error)
{
  g_autoptr (GtSdp) sdp = g_new0 (GtSdp, 1);
  g_autofree char *copy = NULL;
  g_auto (GStrv) lines = NULL;
  Level session = { 0 }, media = { 0 };
  Level *chosen;
  enum { SESSION, DATA_MEDIA, OTHER_MEDIA } where = SESSION;
  gboolean found = FALSE, ok = FALSE;
  guint mline = 0;

  g_return_val_if_fail (text != NULL || len == 0, NULL);

  sdp->candidates = g_ptr_array_new_with_free_func (g_free);
  sdp->sctp_port = 5000;
  sdp->max_message_size = 65536;
  if (len > GT_SDP_MAX_SIZE)
    {
      fail (error, GT_SDP_ERROR_TOO_LARGE, "longer than 64 KiB");
      return NULL;
    }
  if (len == 0 || memchr (text, '\0', len) != NULL || !g_utf8_validate (text, (gssize) len, NULL))
    {
      fail (error, GT_SDP_ERROR_MALFORMED, "not UTF-8 text");
      return NULL;
    }
  copy = g_strndup (text, len);
  if (!g_str_has_prefix (copy, "v=0"))
    {
      fail (error, GT_SDP_ERROR_MALFORMED, "no v=0 line first");
      return NULL;
    }
  lines = g_strsplit (copy, "\n", 0);
  for (guint i = 0; lines[i] != NULL; i++)
    {
      char *line = lines[i];
      gsize n = strlen (line);

      if (n > 0 && line[n - 1] == '\r')
        line[--n] = '\0';
      if (n == 0)
        continue;
      if (n < 2 || line[1] != '=')
        {
          fail (error, GT_SDP_ERROR_MALFORMED, "a line is not <type>=<value>");
          goto out;
        }
      if (line[0] == 'm')
        {
          gboolean data = !found
                          && (strstr (line, "webrtc-datachannel") != NULL
                              || strstr (line, "DTLS/SCTP 5000") != NULL)
                          && g_str_has_prefix (line, "m=application ");

          if (data)
            {
              found = TRUE;
              sdp->mline_index = mline;
            }
          where = data ? DATA_MEDIA : OTHER_MEDIA;
          mline++;
          continue;
        }
      if (line[0] != 'a' || where == OTHER_MEDIA)
        continue;
      if (!apply_attribute (sdp, where == SESSION ? &session : &media, where == DATA_MEDIA,
                            line + 2, error))
        goto out;
    }

  if (!found)
    {
      fail (error, GT_SDP_ERROR_UNSUPPORTED, "no data channel (m=application) section");
      goto out;
    }
  chosen = media.ufrag != NULL ? &media : &session;
  sdp->ice_ufrag = g_strdup (chosen->ufrag);
  chosen = media.pwd != NULL ? &media : &session;
  sdp->ice_pwd = g_strdup (chosen->pwd);
  chosen = media.has_fingerprint ? &media : &session;
  if (sdp->ice_ufrag == NULL || sdp->ice_pwd == NULL)
    {
      fail (error, GT_SDP_ERROR_UNSUPPORTED, "no ice-ufrag or ice-pwd");
      goto out;
    }
  if (!chosen->has_fingerprint)
    {
      fail (error, GT_SDP_ERROR_UNSUPPORTED, "no sha-256 fingerprint");
      goto out;
    }
  memcpy (sdp->fingerprint, chosen->fingerprint, GT_SDP_FINGERPRINT_LEN);
  {
    const char *setup = media.setup != NULL ? media.setup : session.setup;

    if (setup == NULL || strcmp (setup, "actpass") == 0)
      sdp->setup = GT_SDP_SETUP_ACTPASS;
    else if (strcmp (setup, "active") == 0)
      sdp->setup = GT_SDP_SETUP_ACTIVE;
    else if (strcmp (setup, "passive") == 0)
      sdp->setup = GT_SDP_SETUP_PASSIVE;
    else
      {
        fail (error, GT_SDP_ERROR_MALFORMED, "setup");
        goto out;
      }
  }
  if (sdp->mid == NULL)
    sdp->mid = g_strdup ("0");
  ok = TRUE;

out:
  level_clear (&session);
  level_clear (&media);
  return ok ? g_steal_pointer (&sdp) : NULL;
}

char *
gt_sdp_build (const char *mid, const char *ice_ufrag, const char *ice_pwd,
              const guint8 fingerprint[GT_SDP_FINGERPRINT_LEN], GtSdpSetup setup,
              const char *const *candidates, gboolean complete)
{
  static const char *const setups[] = { "actpass", "active", "passive" };
  GString *s = g_string_new (NULL);

  g_string_append_printf (s,
                          "v=0\r\n"
                          "o=- %" G_GUINT64_FORMAT " 2 IN IP4 127.0.0.1\r\n"
                          "s=-\r\n"
                          "t=0 0\r\n"
                          "a=group:BUNDLE %s\r\n"
                          "a=msid-semantic: WMS\r\n"
                          "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
                          "c=IN IP4 0.0.0.0\r\n"
                          "a=ice-ufrag:%s\r\n"
                          "a=ice-pwd:%s\r\n"
                          "a=ice-options:trickle\r\n"
                          "a=fingerprint:sha-256 ",
                          (guint64) g_random_int () << 16 | g_random_int_range (0, 65536), mid,
                          ice_ufrag, ice_pwd);
  for (guint i = 0; i < GT_SDP_FINGERPRINT_LEN; i++)
    g_string_append_printf (s, i ? ":%02X" : "%02X", fingerprint[i]);
  g_string_append_printf (s,
                          "\r\n"
                          "a=setup:%s\r\n"
                          "a=mid:%s\r\n"
                          "a=sctp-port:5000\r\n"
                          "a=max-message-size:262144\r\n",
                          setups[setup], mid);
  for (guint i = 0; candidates != NULL && candidates[i] != NULL; i++)
    g_string_append_printf (s, "a=%s\r\n", candidates[i]);
  if (complete)
    g_string_append (s, "a=end-of-candidates\r\n");
  return g_string_free (s, FALSE);
}
