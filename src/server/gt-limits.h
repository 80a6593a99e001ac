/* gt-limits.h: what one user may hold on the server, from its own values and the global ones. */
#pragma once

#include <glib.h>
#include "gt-config.h"
#include "gt-frame.h"

G_BEGIN_DECLS

/* Limits in force for one client. A new limit is a field here, a row in gt_limits_resolve and a
 * check below. 0 means unlimited for the counts and the speed. */
typedef struct
{
  guint connections;   /* tunnels per client (options.connections / user connections) */
  guint tcp_number;    /* tcp services (options.tcpNumber / user tcpNumber) */
  guint udp_number;    /* udp services (options.udpNumber / user udpNumber) */
  guint64 speed;       /* bytes/s per client (options.speed / user speed) */
  guint host_number;   /* host prefixes (host.number / user host.number) */
  char **host_regex;   /* allowed host prefixes, NULL = any (borrowed from the config) */
  gboolean host_with_id; /* prefixes become "<id>-<prefix>" (host.withID) */
  guint max_services;  /* services in one HELLO (options.maxHandShakeOptions), 0 = unlimited */
} GtLimits;

/* user may be NULL (a client that is not configured). exempt: the status self-test, which is not a
 * user: no host rules and no speed limit apply to it. */
void gt_limits_resolve (GtLimits *limits, const GtServerConfig *config, const GtUserConfig *user,
                        gboolean exempt);

/* Each check returns GT_ERROR_CODE_NONE, or the code to refuse the tunnel with and a message for
 * the client in *message. */
GtErrorCode gt_limits_check_services (const GtLimits *limits, guint n_services, guint n_tcp,
                                      char **message);
/* The udp services of a HELLO against udpNumber. */
GtErrorCode gt_limits_check_udp (const GtLimits *limits, guint n_udp, char **message);
/* own_id: the prefix is the client's own id, which every client may use. n_hosts: prefixes
 * accepted before this one. */
GtErrorCode gt_limits_check_host (const GtLimits *limits, const char *prefix, gboolean own_id,
                                  guint n_hosts, char **message);
GtErrorCode gt_limits_check_tunnels (const GtLimits *limits, const char *id, guint n_tunnels,
                                     char **message);
/* The route key a host prefix is registered under (host.withID). */
char *gt_limits_host_key (const GtLimits *limits, const char *id, const char *prefix,
                          gboolean own_id);

G_END_DECLS
