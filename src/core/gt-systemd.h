/* gt-systemd.h: the systemd conventions gt speaks without libsystemd: LISTEN_FDS, NOTIFY_SOCKET,
 * WATCHDOG_USEC. Used by workers (from systemd or from the gt manager) and by the manager. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* First inherited descriptor (fds 3 .. 3+LISTEN_FDS-1) is SD_LISTEN_FDS_START. */
#define GT_LISTEN_FDS_START 3

/* An inherited listening socket: fd and its LISTEN_FDNAMES entry ("unknown" when unnamed). */
typedef struct
{
  int fd;
  char *name;
} GtListenFd;

void gt_listen_fd_free (GtListenFd *lfd);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GtListenFd, gt_listen_fd_free)

/* Returns an inherited socket named `name` (a config key: "addr", "tlsAddr", "sniAddr") and
 * hands it to the caller (who closes it), or -1 when there is none. The environment is parsed
 * once, on the first call of any gt_listen_fds_* function, then LISTEN_FDS, LISTEN_PID and
 * LISTEN_FDNAMES are removed from it so that children do not see them; descriptors not taken keep
 * CLOEXEC so they do not leak into children either.
 * LISTEN_PID, when set, must be our pid (else nothing is inherited); when absent the fds are
 * accepted (the gt manager cannot know a worker's pid before exec, so it leaves LISTEN_PID out and
 * sets GT_MANAGER_PID instead). Calling again with the same name returns the next socket of that
 * name (a .socket unit with two ListenStream= lines gives two fds of one name). When no fd has
 * the exact name, "addr" also matches an unnamed fd ("unknown", "" or a unit name ending in
 * ".socket"), which is what `systemd-socket-activate -l PORT` and socket units without
 * FileDescriptorName= give. The returned fd has FD_CLOEXEC set. */
int gt_listen_fds_take (const char *name);

/* All inherited sockets not taken yet (GtListenFd*, the caller owns the fds), in fd order. */
GPtrArray *gt_listen_fds_take_all (void);

/* Number of inherited sockets not taken yet. */
guint gt_listen_fds_count (void);

/* Forgets the parsed state and parses the environment again on next use (tests only: it does not
 * close anything). */
void gt_listen_fds_reset (void);

/* TRUE when $NOTIFY_SOCKET is set to something we can send to (a path or "@abstract"). */
gboolean gt_sd_notify_enabled (void);

/* Sends one datagram "fmt..." (newline-separated KEY=VALUE lines, e.g. "READY=1\nSTATUS=...")
 * to $NOTIFY_SOCKET. Does nothing when it is unset; failures are logged at debug level only
 * (a supervisor that went away must not break the worker). */
void gt_sd_notify (const char *fmt, ...) G_GNUC_PRINTF (1, 2);

/* Same, with an explicit socket address (path or "@abstract"); returns FALSE with error set when
 * the datagram could not be sent. gt_sd_notify uses it with $NOTIFY_SOCKET. */
gboolean gt_sd_notify_to (const char *socket_address, const char *message, GError **error);
/* The same; with block FALSE, a receiver whose queue is full gives G_IO_ERROR_WOULD_BLOCK
 * instead of stalling the caller. */
gboolean gt_sd_notify_to_full (const char *socket_address, const char *message, gboolean block,
                               GError **error);

/* The watchdog period asked by systemd (WATCHDOG_USEC), 0 when none or when WATCHDOG_PID names
 * another process. Send "WATCHDOG=1" every half of it. */
guint64 gt_sd_watchdog_usec (void);

/* CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it in MONOTONIC_USEC=. */
guint64 gt_sd_monotonic_usec (void);

G_END_DECLS
