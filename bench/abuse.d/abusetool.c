/* abusetool: hostile peers and a legitimate user for bench/abuse, on loopback only. */

/*
 * Built by bench/abuse with `cc -O2 -o BUILD/abusetool bench/abuse.d/abusetool.c`; plain POSIX, no
 * GLib, speaks just enough of docs/protocol.md to hurt.  Every command is bounded in time; every
 * address is 127.x.y.z (SRC picks the local source address, so that an attacker's address can be
 * told from the legitimate user's 127.0.0.1).  Output: one "key=value ..." summary line on stdout.
 *
 *   abusetool legit PORT HOST SECONDS INTERVAL_MS [keepalive]
 *       a GET / with Host HOST every INTERVAL_MS, on a new connection each time (or on one
 *       kept-alive connection, reopened after an error); per request a 5 s timeout; print
 *       "n= ok= err= p50_ms= p99_ms= max_ms="
 *   abusetool hello PORT SRC ID SECRET COUNT INTERVAL_MS SVC...
 *       COUNT handshakes (preface + HELLO), one every INTERVAL_MS; SVC is http:PREFIX or tcp:PORT;
 *       print "n= welcome= error= closed= codes=CODExCOUNT,.. p50_ms= max_ms=" (time to the answer)
 *   abusetool badlogins PORT SRC ID N SECONDS
 *       N handshakes at once with a wrong secret; wait up to SECONDS for the answers; print counts
 *   abusetool pingflood PORT SRC ID SECRET PREFIX SECONDS MAXMB
 *       log in, then write PING frames (never reading) until MAXMB are sent or SECONDS pass; hold
 *       the connection until SECONDS pass
 *   abusetool hostile PORT SECONDS MAXMB
 *       a fake server on 127.0.0.1:PORT: welcome every tunnel a client opens within a second of
 *       its first, then flood them all with PINGs as above
 *   abusetool preauth PORT NSRC N BYTES SECONDS
 *       N connections from 127.0.0.2 .. 127.0.0.(1+NSRC); each sends the preface and a HELLO header
 *       announcing a 65536-byte payload followed by BYTES payload bytes (BYTES = 0: connect only,
 *       send nothing); hold them for SECONDS, then close all
 *   abusetool proxypartial PORT SRC NOPEN NCLOSE SECONDS
 *       NOPEN + NCLOSE connections each send the start of a PROXY v1 header; NCLOSE of them close
 *       after 100 ms, NOPEN hold until SECONDS pass
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REQUEST_TIMEOUT_MS 5000
#define PING_BATCH 3640 /* PING frames per write: 3640 * 18 bytes = 65520 */

enum
{
  FRAME_HELLO = 1,
  FRAME_WELCOME = 2,
  FRAME_PING = 8,
  FRAME_ERROR = 10,
};

static double
mono_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static long
num_arg (const char *s, long min, long max)
{
  char *end = NULL;
  long v;

  errno = 0;
  v = strtol (s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
    {
      fprintf (stderr, "abusetool: '%s' is not a number in %ld..%ld\n", s, min, max);
      exit (2);
    }
  return v;
}

static void
loopback_addr (struct sockaddr_in *sa, const char *ip, int port)
{
  memset (sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_port = htons (port);
  if (inet_pton (AF_INET, ip, &sa->sin_addr) != 1 || (ntohl (sa->sin_addr.s_addr) >> 24) != 127)
    {
      fprintf (stderr, "abusetool: %s is not a loopback address\n", ip);
      exit (2);
    }
}

/* A socket bound to SRC and connecting to 127.0.0.1:PORT.  Non-blocking connect: returns the fd
 * with the connect in progress (or done), -1 on an immediate failure. */
static int
dial_start (const char *src, int port)
{
  struct sockaddr_in local, remote;
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

  if (fd < 0)
    return -1;
  loopback_addr (&local, src, 0);
  loopback_addr (&remote, "127.0.0.1", port);
  if (bind (fd, (struct sockaddr *) &local, sizeof local) < 0
      || (connect (fd, (struct sockaddr *) &remote, sizeof remote) < 0 && errno != EINPROGRESS))
    {
      close (fd);
      return -1;
    }
  return fd;
}

/* Wait for FD to become readable/writable (EVENTS) until the absolute DEADLINE (mono ms). */
static int
wait_fd (int fd, short events, double deadline)
{
  struct pollfd p = { .fd = fd, .events = events };
  double left = deadline - mono_ms ();

  if (left <= 0)
    return 0;
  return poll (&p, 1, (int) left + 1) > 0 ? p.revents : 0;
}

/* Connected blocking-style socket (still O_NONBLOCK, used with wait_fd), or -1. */
static int
dial (const char *src, int port, double deadline)
{
  int fd = dial_start (src, port);
  int err = 0;
  socklen_t len = sizeof err;

  if (fd < 0)
    return -1;
  if (!(wait_fd (fd, POLLOUT, deadline) & POLLOUT)
      || getsockopt (fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0)
    {
      close (fd);
      return -1;
    }
  return fd;
}

static int
send_all (int fd, const void *buf, size_t len, double deadline)
{
  const char *p = buf;

  while (len > 0)
    {
      ssize_t n = send (fd, p, len, MSG_NOSIGNAL);

      if (n > 0)
        {
          p += n;
          len -= n;
        }
      else if (n < 0 && (errno == EAGAIN || errno == EINTR))
        {
          if (!(wait_fd (fd, POLLOUT, deadline) & POLLOUT))
            return -1;
        }
      else
        return -1;
    }
  return 0;
}

/* Read exactly LEN bytes (0) or fail (-1 on error/EOF/deadline). */
static int
recv_all (int fd, void *buf, size_t len, double deadline)
{
  char *p = buf;

  while (len > 0)
    {
      ssize_t n = recv (fd, p, len, 0);

      if (n > 0)
        {
          p += n;
          len -= n;
        }
      else if (n < 0 && (errno == EAGAIN || errno == EINTR))
        {
          if (!(wait_fd (fd, POLLIN, deadline) & (POLLIN | POLLHUP | POLLERR)))
            return -1;
        }
      else
        return -1;
    }
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Frames (docs/protocol.md) */

static size_t
put_header (unsigned char *out, int type, int flags, uint32_t stream, uint32_t length)
{
  out[0] = type;
  out[1] = flags;
  out[2] = stream >> 24;
  out[3] = stream >> 16;
  out[4] = stream >> 8;
  out[5] = stream;
  out[6] = length >> 24;
  out[7] = length >> 16;
  out[8] = length >> 8;
  out[9] = length;
  return 10;
}

static const unsigned char preface[4] = { 0xF0, 'G', 'T', 1 };

/* Preface + HELLO for ID/SECRET and services "http:PREFIX" / "tcp:PORT" into OUT (>= 4096 bytes);
 * returns the size. */
static size_t
build_hello (unsigned char *out, const char *id, const char *secret, char **svcs, int nsvc)
{
  unsigned char *p = out + 14;
  size_t id_len = strlen (id), secret_len = strlen (secret);

  if (id_len < 1 || id_len > 200 || secret_len < 1 || secret_len > 200 || nsvc < 1 || nsvc > 8)
    {
      fprintf (stderr, "abusetool: bad HELLO arguments\n");
      exit (2);
    }
  memcpy (out, preface, 4);
  *p++ = id_len;
  memcpy (p, id, id_len);
  p += id_len;
  *p++ = secret_len;
  memcpy (p, secret, secret_len);
  p += secret_len;
  *p++ = nsvc >> 8;
  *p++ = nsvc;
  for (int i = 0; i < nsvc; i++)
    {
      if (strncmp (svcs[i], "http:", 5) == 0 && strlen (svcs[i] + 5) >= 1
          && strlen (svcs[i] + 5) <= 200)
        {
          size_t l = strlen (svcs[i] + 5);

          *p++ = 0;
          *p++ = 0;
          *p++ = 0;
          *p++ = 0;
          *p++ = l;
          memcpy (p, svcs[i] + 5, l);
          p += l;
        }
      else if (strncmp (svcs[i], "tcp:", 4) == 0)
        {
          long port = num_arg (svcs[i] + 4, 0, 65535);

          *p++ = 2;
          *p++ = 0;
          *p++ = port >> 8;
          *p++ = port;
          *p++ = 0;
        }
      else
        {
          fprintf (stderr, "abusetool: service '%s' is not http:PREFIX or tcp:PORT\n", svcs[i]);
          exit (2);
        }
    }
  put_header (out + 4, FRAME_HELLO, 0, 0, (uint32_t) (p - out - 14));
  return p - out;
}

/* Read one frame header and skip its payload (up to 64 KiB).  Returns the type, -1 on failure;
 * *code gets the code of an ERROR. */
static int
read_frame (int fd, double deadline, int *code)
{
  unsigned char hdr[10];
  static unsigned char payload[65536];
  uint32_t len;

  if (recv_all (fd, hdr, 10, deadline) < 0)
    return -1;
  len = (uint32_t) hdr[6] << 24 | hdr[7] << 16 | hdr[8] << 8 | hdr[9];
  if (len > sizeof payload || recv_all (fd, payload, len, deadline) < 0)
    return -1;
  if (hdr[0] == FRAME_ERROR && len >= 2 && code != NULL)
    *code = payload[0] << 8 | payload[1];
  return hdr[0];
}

/* ------------------------------------------------------------------------------------------ */
/* Statistics */

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;

  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static double
percentile (const double *v, int n, int pct)
{
  int rank;

  if (n == 0)
    return 0;
  rank = (pct * n + 99) / 100;
  return v[rank < 1 ? 0 : rank - 1];
}

/* ------------------------------------------------------------------------------------------ */
/* legit: the user next to the attack */

/* One GET on FD; 0 when a complete 200 response arrived.  With keepalive the body is read by its
 * Content-Length, otherwise to EOF. */
static int
get_once (int fd, const char *host, int keepalive, double deadline)
{
  char req[512], buf[8192];
  size_t have = 0;
  char *end = NULL;
  long body = -1;

  snprintf (req, sizeof req, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: %s\r\n\r\n", host,
            keepalive ? "keep-alive" : "close");
  if (send_all (fd, req, strlen (req), deadline) < 0)
    return -1;
  for (;;)
    {
      ssize_t n;

      if (have == sizeof buf - 1)
        return -1;
      n = recv (fd, buf + have, sizeof buf - 1 - have, 0);
      if (n > 0)
        {
          have += n;
          buf[have] = '\0';
          if (end == NULL && (end = strstr (buf, "\r\n\r\n")) != NULL)
            {
              const char *cl = strcasestr (buf, "\r\nContent-Length:");

              if (strncmp (buf, "HTTP/1.1 200", 12) != 0 && strncmp (buf, "HTTP/1.0 200", 12) != 0)
                return -1;
              if (cl != NULL && cl < end)
                body = strtol (cl + 17, NULL, 10);
              if (keepalive && body < 0)
                return -1;
            }
          if (end != NULL && body >= 0 && (long) (have - (end + 4 - buf)) >= body)
            return keepalive || (long) (have - (end + 4 - buf)) == body ? 0 : -1;
        }
      else if (n == 0)
        return end != NULL && !keepalive && body < 0 ? 0 : -1;
      else if (errno == EAGAIN || errno == EINTR)
        {
          if (!(wait_fd (fd, POLLIN, deadline) & (POLLIN | POLLHUP | POLLERR)))
            return -1;
        }
      else
        return -1;
    }
}

static int
cmd_legit (int argc, char **argv)
{
  int port, keepalive, fd = -1, n = 0, ok = 0, cap;
  double seconds, interval, start, next;
  double *lat;

  if (argc < 6)
    return 2;
  port = num_arg (argv[2], 1, 65535);
  seconds = num_arg (argv[4], 1, 3600);
  interval = num_arg (argv[5], 10, 60000);
  keepalive = argc > 6 && strcmp (argv[6], "keepalive") == 0;
  cap = (int) (seconds * 1000 / interval) + 2;
  lat = calloc (cap, sizeof *lat);
  start = next = mono_ms ();
  while (mono_ms () < start + seconds * 1000 && n < cap)
    {
      double t0 = mono_ms (), deadline = t0 + REQUEST_TIMEOUT_MS;

      n++;
      if (fd < 0)
        fd = dial ("127.0.0.1", port, deadline);
      if (fd >= 0 && get_once (fd, argv[3], keepalive, deadline) == 0)
        lat[ok++] = mono_ms () - t0;
      else if (fd >= 0)
        {
          close (fd);
          fd = -1;
        }
      if (!keepalive && fd >= 0)
        {
          close (fd);
          fd = -1;
        }
      next += interval;
      while (mono_ms () < next)
        usleep ((useconds_t) ((next - mono_ms ()) * 1000) + 1);
    }
  if (fd >= 0)
    close (fd);
  qsort (lat, ok, sizeof *lat, cmp_double);
  printf ("n=%d ok=%d err=%d p50_ms=%.1f p99_ms=%.1f max_ms=%.1f\n", n, ok, n - ok,
          percentile (lat, ok, 50), percentile (lat, ok, 99), ok ? lat[ok - 1] : 0.0);
  free (lat);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* hello: handshakes, timed */

static int
cmd_hello (int argc, char **argv)
{
  static unsigned char hello[4096];
  int port, count, welcome = 0, error = 0, closed = 0, done = 0;
  double interval, next;
  double lat[1024];
  int per_code[17] = { 0 }; /* ERROR codes 0..15, and 16 for any other */
  char codes[256] = "";
  size_t len;

  if (argc < 9)
    return 2;
  port = num_arg (argv[2], 1, 65535);
  count = num_arg (argv[6], 1, 1024);
  interval = num_arg (argv[7], 0, 60000);
  len = build_hello (hello, argv[4], argv[5], argv + 8, argc - 8);
  next = mono_ms ();
  for (int i = 0; i < count; i++)
    {
      double t0 = mono_ms (), deadline = t0 + 60000;
      int fd = dial (argv[3], port, t0 + REQUEST_TIMEOUT_MS), code = -1, type = -1;

      if (fd >= 0 && send_all (fd, hello, len, deadline) == 0)
        type = read_frame (fd, deadline, &code);
      lat[done++] = mono_ms () - t0;
      if (type == FRAME_WELCOME)
        welcome++;
      else if (type == FRAME_ERROR)
        {
          error++;
          per_code[code >= 0 && code < 16 ? code : 16]++;
        }
      else
        closed++;
      if (fd >= 0)
        close (fd);
      next += interval;
      while (i + 1 < count && mono_ms () < next)
        usleep ((useconds_t) ((next - mono_ms ()) * 1000) + 1);
    }
  for (int c = 0; c < 17; c++)
    {
      size_t at = strlen (codes);

      if (per_code[c] == 0)
        continue;
      if (c < 16)
        snprintf (codes + at, sizeof codes - at, "%s%dx%d", at ? "," : "", c, per_code[c]);
      else
        snprintf (codes + at, sizeof codes - at, "%sotherx%d", at ? "," : "", per_code[c]);
    }
  qsort (lat, done, sizeof *lat, cmp_double);
  printf ("n=%d welcome=%d error=%d closed=%d codes=%s p50_ms=%.1f max_ms=%.1f\n", done, welcome,
          error, closed, codes[0] ? codes : "-", percentile (lat, done, 50),
          done ? lat[done - 1] : 0.0);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* badlogins: a burst of wrong secrets */

static int
cmd_badlogins (int argc, char **argv)
{
  static unsigned char hello[4096];
  char *svc[] = { "http:mallory" };
  int port, n, answered = 0, closed = 0, pending = 0, failed = 0;
  double deadline;
  int *fds;
  size_t len;

  if (argc < 7)
    return 2;
  port = num_arg (argv[2], 1, 65535);
  n = num_arg (argv[5], 1, 10000);
  deadline = mono_ms () + num_arg (argv[6], 1, 3600) * 1000.0;
  len = build_hello (hello, argv[4], "wrong-secret-of-the-attacker", svc, 1);
  fds = calloc (n, sizeof *fds);
  for (int i = 0; i < n; i++)
    {
      fds[i] = dial (argv[3], port, mono_ms () + REQUEST_TIMEOUT_MS);
      if (fds[i] >= 0 && send_all (fds[i], hello, len, mono_ms () + REQUEST_TIMEOUT_MS) < 0)
        {
          close (fds[i]);
          fds[i] = -1;
        }
      if (fds[i] < 0)
        failed++;
    }
  /* Collect the answers (ERROR frames or a close) while they come, until the deadline. */
  for (int i = 0; i < n; i++)
    {
      int type;

      if (fds[i] < 0)
        continue;
      type = read_frame (fds[i], deadline, NULL);
      if (type == FRAME_ERROR)
        answered++;
      else if (mono_ms () >= deadline)
        pending++;
      else
        closed++;
      close (fds[i]);
    }
  printf ("sent=%d answered=%d closed=%d pending=%d failed=%d\n", n - failed, answered, closed,
          pending, failed);
  free (fds);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* pingflood / hostile: write PINGs, never read */

/* Write PING frames to every fd of FDS (N of them) as fast as each peer takes them, never reading,
 * until MAX_MB are sent in total or DEADLINE passes; then hold the connections until DEADLINE so
 * that whatever the peers queued stays queued. */
static void
flood_pings (int *fds, int n, double deadline, long max_mb)
{
  static unsigned char batch[PING_BATCH * 18];
  long long sent = 0, max = (long long) max_mb << 20;
  size_t *off = calloc (n, sizeof *off); /* bytes of the current batch written to fd i */
  struct pollfd *p = calloc (n, sizeof *p);

  for (int i = 0; i < PING_BATCH; i++)
    {
      unsigned char *f = batch + i * 18;

      put_header (f, FRAME_PING, 0, 0, 8);
      memset (f + 10, 0x5a, 8);
    }
  while (sent < max && mono_ms () < deadline)
    {
      int live = 0;

      for (int i = 0; i < n; i++)
        {
          p[i].fd = fds[i];
          p[i].events = POLLOUT;
          p[i].revents = 0;
          live += fds[i] >= 0;
        }
      if (live == 0 || poll (p, n, 200) < 0)
        break;
      for (int i = 0; i < n && sent < max; i++)
        {
          ssize_t w;

          if (!(p[i].revents & POLLOUT))
            {
              if (p[i].revents & (POLLERR | POLLHUP))
                fds[i] = -1; /* the peer gave up: keep the fd for the final close */
              continue;
            }
          /* Whole batches only, so the frames stay aligned. */
          w = send (fds[i], batch + off[i], sizeof batch - off[i], MSG_NOSIGNAL);
          if (w > 0)
            {
              sent += w;
              off[i] = (off[i] + w) % sizeof batch;
            }
          else if (w < 0 && errno != EAGAIN && errno != EINTR)
            fds[i] = -1;
        }
    }
  printf ("sent_mb=%.1f", sent / 1048576.0);
  fflush (stdout);
  while (mono_ms () < deadline)
    usleep (100000);
  printf ("\n");
  free (off);
  free (p);
}

static int
cmd_pingflood (int argc, char **argv)
{
  static unsigned char hello[4096];
  char svc[256];
  char *svcs[] = { svc };
  double t0 = mono_ms (), deadline;
  int port, fd, type, code = -1;
  size_t len;

  if (argc < 9)
    return 2;
  port = num_arg (argv[2], 1, 65535);
  deadline = t0 + num_arg (argv[7], 1, 3600) * 1000.0;
  snprintf (svc, sizeof svc, "http:%s", argv[6]);
  len = build_hello (hello, argv[4], argv[5], svcs, 1);
  fd = dial (argv[3], port, t0 + REQUEST_TIMEOUT_MS);
  if (fd < 0 || send_all (fd, hello, len, deadline) < 0)
    {
      printf ("error=connect\n");
      return 1;
    }
  type = read_frame (fd, deadline, &code);
  if (type != FRAME_WELCOME)
    {
      printf ("error=handshake type=%d code=%d\n", type, code);
      return 1;
    }
  flood_pings (&fd, 1, deadline, num_arg (argv[8], 1, 100000));
  close (fd);
  return 0;
}

/* Welcome one tunnel on FD (read preface and HELLO, answer WELCOME without ports): 0 or -1. */
static int
welcome_tunnel (int fd, double deadline)
{
  unsigned char pre[4], hdr[10], welcome[12];
  static unsigned char payload[65536];
  uint32_t len;

  if (recv_all (fd, pre, 4, deadline) < 0 || recv_all (fd, hdr, 10, deadline) < 0)
    return -1;
  len = (uint32_t) hdr[6] << 24 | hdr[7] << 16 | hdr[8] << 8 | hdr[9];
  if (memcmp (pre, preface, 4) != 0 || hdr[0] != FRAME_HELLO || len > sizeof payload
      || recv_all (fd, payload, len, deadline) < 0)
    return -1;
  put_header (welcome, FRAME_WELCOME, 0, 0, 2);
  welcome[10] = welcome[11] = 0;
  return send_all (fd, welcome, sizeof welcome, deadline);
}

static int
cmd_hostile (int argc, char **argv)
{
  struct sockaddr_in sa;
  double deadline, gather;
  int lfd, one = 1, n = 0;
  int fds[16];

  if (argc < 5)
    return 2;
  deadline = mono_ms () + num_arg (argv[3], 1, 3600) * 1000.0;
  loopback_addr (&sa, "127.0.0.1", num_arg (argv[2], 1, 65535));
  lfd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (lfd < 0 || setsockopt (lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0
      || bind (lfd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen (lfd, 16) < 0)
    {
      perror ("abusetool hostile");
      return 1;
    }
  /* Welcome every tunnel the client opens within 1 s of its first one (its whole pool). */
  gather = deadline;
  while (n < 16 && mono_ms () < gather && (wait_fd (lfd, POLLIN, gather) & POLLIN))
    {
      int fd = accept4 (lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

      if (fd < 0)
        continue;
      if (welcome_tunnel (fd, deadline) < 0)
        {
          close (fd);
          continue;
        }
      fds[n++] = fd;
      if (n == 1 && mono_ms () + 1000 < gather)
        gather = mono_ms () + 1000;
    }
  if (n == 0)
    {
      printf ("error=no-tunnel\n");
      return 1;
    }
  printf ("tunnels=%d ", n);
  {
    int keep[16];

    memcpy (keep, fds, sizeof keep);
    flood_pings (fds, n, deadline, num_arg (argv[4], 1, 100000));
    for (int i = 0; i < n; i++)
      close (keep[i]);
  }
  close (lfd);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* preauth: many connections holding a HELLO one byte short */

struct conn
{
  int fd;
  size_t off; /* bytes of the message sent so far */
  int done;   /* message sent */
  int gone;   /* the server closed it */
};

static int
cmd_preauth (int argc, char **argv)
{
  static unsigned char msg[4 + 10 + 65536];
  int port, nsrc, n, opened = 0, sent_all = 0, gone = 0;
  size_t bytes, msg_len;
  double deadline;
  struct conn *c;
  struct pollfd *p;
  char src[32];

  if (argc < 7)
    return 2;
  port = num_arg (argv[2], 1, 65535);
  nsrc = num_arg (argv[3], 1, 200);
  n = num_arg (argv[4], 1, 20000);
  bytes = num_arg (argv[5], 0, 65535);
  deadline = mono_ms () + num_arg (argv[6], 1, 3600) * 1000.0;
  memcpy (msg, preface, 4);
  put_header (msg + 4, FRAME_HELLO, 0, 0, 65536);
  memset (msg + 14, 'x', bytes);
  msg_len = bytes > 0 ? 14 + bytes : 0;
  c = calloc (n, sizeof *c);
  p = calloc (n, sizeof *p);
  for (int i = 0; i < n; i++)
    {
      snprintf (src, sizeof src, "127.0.0.%d", 2 + i % nsrc);
      c[i].fd = dial_start (src, port);
      if (c[i].fd >= 0)
        opened++;
      else
        c[i].gone = 1;
      c[i].done = msg_len == 0;
    }
  /* Push every message as the server takes it; note the connections it closes; until the end. */
  while (mono_ms () < deadline)
    {
      double left = deadline - mono_ms ();

      for (int i = 0; i < n; i++)
        {
          p[i].fd = c[i].gone ? -1 : c[i].fd;
          p[i].events = POLLIN | (c[i].done ? 0 : POLLOUT);
          p[i].revents = 0;
        }
      if (poll (p, n, left > 500 ? 500 : (int) left + 1) < 0 && errno != EINTR)
        break;
      for (int i = 0; i < n; i++)
        {
          char sink[256];

          if (p[i].revents & (POLLIN | POLLHUP | POLLERR))
            {
              ssize_t r = recv (c[i].fd, sink, sizeof sink, 0);

              if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                {
                  c[i].gone = 1;
                  gone++;
                  continue;
                }
            }
          if ((p[i].revents & POLLOUT) && !c[i].done)
            {
              ssize_t w = send (c[i].fd, msg + c[i].off, msg_len - c[i].off, MSG_NOSIGNAL);

              if (w > 0 && (c[i].off += w) == msg_len)
                {
                  c[i].done = 1;
                  sent_all++;
                }
            }
        }
    }
  for (int i = 0; i < n; i++)
    if (c[i].fd >= 0)
      close (c[i].fd);
  printf ("opened=%d fully_sent=%d closed_by_server=%d\n", opened, sent_all, gone);
  free (c);
  free (p);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* proxypartial: PROXY headers that never end */

static int
cmd_proxypartial (int argc, char **argv)
{
  static const char partial[] = "PROXY TCP4 192.0.2.1 ";
  int port, nopen, nclose, ok = 0;
  double deadline;
  int *fds;

  if (argc < 7)
    return 2;
  port = num_arg (argv[2], 1, 65535);
  nopen = num_arg (argv[4], 0, 1000);
  nclose = num_arg (argv[5], 0, 1000);
  deadline = mono_ms () + num_arg (argv[6], 1, 3600) * 1000.0;
  fds = calloc (nopen + nclose + 1, sizeof *fds);
  for (int i = 0; i < nopen + nclose; i++)
    {
      fds[i] = dial (argv[3], port, mono_ms () + REQUEST_TIMEOUT_MS);
      if (fds[i] >= 0 && send_all (fds[i], partial, strlen (partial), deadline) == 0)
        ok++;
    }
  usleep (100000);
  for (int i = nopen; i < nopen + nclose; i++)
    if (fds[i] >= 0)
      {
        close (fds[i]);
        fds[i] = -1;
      }
  while (mono_ms () < deadline)
    usleep (100000);
  for (int i = 0; i < nopen; i++)
    if (fds[i] >= 0)
      close (fds[i]);
  printf ("sent=%d held=%d closed_early=%d\n", ok, nopen, nclose);
  free (fds);
  return 0;
}

int
main (int argc, char **argv)
{
  static const struct
  {
    const char *name;
    int (*run) (int argc, char **argv);
  } cmds[] = {
    { "legit", cmd_legit },         { "hello", cmd_hello },     { "badlogins", cmd_badlogins },
    { "pingflood", cmd_pingflood }, { "hostile", cmd_hostile }, { "preauth", cmd_preauth },
    { "proxypartial", cmd_proxypartial },
  };

  signal (SIGPIPE, SIG_IGN);
  setvbuf (stdout, NULL, _IOLBF, 0);
  for (size_t i = 0; argc > 1 && i < sizeof cmds / sizeof cmds[0]; i++)
    if (strcmp (argv[1], cmds[i].name) == 0)
      {
        int rc = cmds[i].run (argc, argv);

        if (rc == 2)
          fprintf (stderr, "abusetool %s: missing arguments (see the top of abusetool.c)\n",
                   argv[1]);
        return rc;
      }
  fprintf (stderr, "usage: abusetool legit|hello|badlogins|pingflood|hostile|preauth|proxypartial"
                   " ... (see the top of abusetool.c)\n");
  return 2;
}
