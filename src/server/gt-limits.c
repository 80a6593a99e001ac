/* gt-limits.c: resolves a user's limits and checks a handshake against them (no sockets). */
#include "config.h"

#include "gt-limits.h"

void
gt_limits_resolve (GtLimits *limits, const GtServerConfig *config, const GtUserConfig *user,
                   gboolean exempt)
{
  g_return_if_fail (limits != NULL);
  g_return_if_fail (config != NULL);

  limits->connections = config->connections;
  limits->tcp_number = config->tcp_number;
  limits->udp_number = config->udp_number;
  limits->speed = config->speed;
  limits->host_number = config->host_number;
  limits->host_regex = config->host_regex;
  limits->host_with_id = config->host_with_id;
  limits->max_services = config->max_handshake_options;
  if (user != NULL)
    {
      if (user->connections > 0)
        limits->connections = (guint) user->connections;
      if (user->tcp_number >= 0)
        limits->tcp_number = (guint) user->tcp_number;
      if (user->udp_number >= 0)
        limits->udp_number = (guint) user->udp_number;
      if (user->speed > 0)
        limits->speed = user->speed;
      if (user->host_number >= 0)
        limits->host_number = (guint) user->host_number;
      if (user->host_regex != NULL)
        limits->host_regex = user->host_regex;
      if (user->host_with_id >= 0)
        limits->host_with_id = user->host_with_id != 0;
    }
  if (exempt)
    {
      limits->host_with_id = FALSE;
      limits->host_regex = NULL;
      limits->host_number = 0;
      limits->speed = 0;
    }
}

GtErrorCode
gt_limits_check_services (const GtLimits *limits, guint n_services, guint n_tcp, char **message)
{
  if (n_services > limits->max_services)
    {
      *message = g_strdup_printf ("%u services exceed the limit of %u", n_services,
                                  limits->max_services);
      return GT_ERROR_CODE_TOO_MANY_OPTIONS;
    }
  if (limits->tcp_number > 0 && n_tcp > limits->tcp_number)
    {
      *message = g_strdup_printf ("%u tcp services exceed the limit of %u", n_tcp,
                                  limits->tcp_number);
      return GT_ERROR_CODE_TCP_NUMBER;
    }
  return GT_ERROR_CODE_NONE;
}

GtErrorCode
gt_limits_check_udp (const GtLimits *limits, guint n_udp, char **message)
{
  if (limits->udp_number > 0 && n_udp > limits->udp_number)
    {
      *message = g_strdup_printf ("%u udp services exceed the limit of %u", n_udp,
                                  limits->udp_number);
      return GT_ERROR_CODE_UDP_NUMBER;
    }
  return GT_ERROR_CODE_NONE;
}

static gboolean
prefix_matches_regex (char **regex, const char *prefix)
{
  if (regex == NULL || regex[0] == NULL)
    return TRUE;
  for (guint i = 0; regex[i] != NULL; i++)
    if (g_regex_match_simple (regex[i], prefix, 0, 0))
      return TRUE;
  return FALSE;
}

GtErrorCode
gt_limits_check_host (const GtLimits *limits, const char *prefix, gboolean own_id, guint n_hosts,
                      char **message)
{
  if (!own_id && !prefix_matches_regex (limits->host_regex, prefix))
    {
      *message = g_strdup_printf ("host prefix '%s' does not match the allowed patterns", prefix);
      return GT_ERROR_CODE_HOST_REGEX;
    }
  if (limits->host_number > 0 && n_hosts + 1 > limits->host_number)
    {
      *message = g_strdup_printf ("more than %u host prefixes", limits->host_number);
      return GT_ERROR_CODE_HOST_NUMBER;
    }
  return GT_ERROR_CODE_NONE;
}

GtErrorCode
gt_limits_check_tunnels (const GtLimits *limits, const char *id, guint n_tunnels, char **message)
{
  if (n_tunnels >= limits->connections)
    {
      *message = g_strdup_printf ("client %s already has %u tunnels (limit %u)", id, n_tunnels,
                                  limits->connections);
      return GT_ERROR_CODE_TOO_MANY_TUNNELS;
    }
  return GT_ERROR_CODE_NONE;
}

char *
gt_limits_host_key (const GtLimits *limits, const char *id, const char *prefix, gboolean own_id)
{
  g_autofree char *lower_id = NULL;

  if (!limits->host_with_id || own_id)
    return g_strdup (prefix);
  lower_id = g_ascii_strdown (id, -1);
  return g_strdup_printf ("%s-%s", lower_id, prefix);
}
