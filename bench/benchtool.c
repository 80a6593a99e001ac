/* benchtool: small load helpers for bench/run (free ports, idle keep-alive connections, setup latency). */

/*
 * Built by bench/run with `cc -O2 -o BUILD/benchtool bench/benchtool.c`; plain POSIX, no GLib, so the
 * harness works even when the gt tree does not build.  Everything talks to 127.0.0.1 only.
 *
 *   benchtool freeport
 *       print a currently free TCP port on 127.0.0.1
 *   benchtool get PORT HOST PATH
 *       one request, print "status=S body=N" (readiness probe)
 *   benchtool idle PORT HOST PATH N READYFILE STOPFILE MAXSECONDS
 *       open N connections one after another, each doing one keep-alive GET and reading the whole
 *       response; then write "ready opened=K" to READYFILE and hold the connections until STOPFILE
 *       exists (or MAXSECONDS pass); then print "alive=A opened=K failed=F" and close everything
 *   benchtool setup PORT HOST PATH N
 *       N sequential new connections, each one GET; time from before connect() to the last body
 *       byte; print "n=.. ok=.. err=.. p50_us=.. p99_us=.. mean_us=.. max_us=.."
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define IO_TIMEOUT_MS 5000

static double
now_s (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
parse_port (const char *s)
{
  char *end = NULL;
  long v = strtol (s, &end, 10);
  if (end == s || *end != '\0' || v <= 0 || v > 65535)
    {
      fprintf (stderr, "benchtool: bad port '%s'\n", s);
      exit (2);
    }
  return (int) v;
}

/* Blocking connect to 127.0.0.1:port with a timeout; returns fd or -1. */
static int
connect_local (int port)
{
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in sa = { 0 };
  sa.sin_family = AF_INET;
  sa.sin_port = htons ((uint16_t) port);
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  if (connect (fd, (struct sockaddr *) &sa, sizeof sa) < 0)
    {
      if (errno != EINPROGRESS)
        {
          close (fd);
          return -1;
        }
      struct pollfd p = { .fd = fd, .events = POLLOUT };
      if (poll (&p, 1, IO_TIMEOUT_MS) != 1)
        {
          close (fd);
          return -1;
        }
      int err = 0;
      socklen_t len = sizeof err;
      if (getsockopt (fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0)
        {
          close (fd);
          return -1;
        }
    }
  int one = 1;
  setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static int
send_all (int fd, const char *buf, size_t len)
{
  while (len > 0)
    {
      ssize_t n = send (fd, buf, len, MSG_NOSIGNAL);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          if (errno == EAGAIN)
            {
              struct pollfd p = { .fd = fd, .events = POLLOUT };
              if (poll (&p, 1, IO_TIMEOUT_MS) != 1)
                return -1;
              continue;
            }
          return -1;
        }
      buf += n;
      len -= (size_t) n;
    }
  return 0;
}

/* Case-insensitive search for a header value inside the head [buf, buf+len). */
static long
content_length (const char *head, size_t len)
{
  static const char key[] = "\r\ncontent-length:";
  size_t klen = sizeof key - 1;
  for (size_t i = 0; i + klen <= len; i++)
    {
      if (strncasecmp (head + i, key, klen) == 0)
        {
          const char *p = head + i + klen;
          while (*p == ' ' || *p == '\t')
            p++;
          return strtol (p, NULL, 10);
        }
    }
  return -1;
}

/*
 * Send one GET and read the whole response (Content-Length framed).  Returns the HTTP status, or -1 on
 * error/timeout.  *body gets the body length.
 */
static int
do_get (int fd, const char *req, size_t reqlen, long *body)
{
  char buf[16384];
  size_t have = 0;
  long need = -1;
  size_t head_end = 0;
  int status = -1;

  if (send_all (fd, req, reqlen) < 0)
    return -1;
  for (;;)
    {
      if (need >= 0 && have >= head_end + (size_t) need)
        break;
      struct pollfd p = { .fd = fd, .events = POLLIN };
      int pr = poll (&p, 1, IO_TIMEOUT_MS);
      if (pr < 0 && errno == EINTR)
        continue;
      if (pr != 1)
        return -1;
      ssize_t n;
      if (head_end == 0)
        n = recv (fd, buf + have, sizeof buf - 1 - have, 0);
      else
        {
          /* Body bytes past the head: count them, do not keep them. */
          char sink[65536];
          n = recv (fd, sink, sizeof sink, 0);
        }
      if (n < 0 && (errno == EINTR || errno == EAGAIN))
        continue;
      if (n <= 0)
        return -1;
      have += (size_t) n;
      if (head_end == 0)
        {
          buf[have] = '\0';
          char *e = strstr (buf, "\r\n\r\n");
          if (e == NULL)
            {
              if (have >= sizeof buf - 1)
                return -1;
              continue;
            }
          head_end = (size_t) (e - buf) + 4;
          if (strncmp (buf, "HTTP/1.", 7) != 0 || have < 12)
            return -1;
          status = atoi (buf + 9);
          need = content_length (buf, head_end);
          if (need < 0)
            return -1; /* the bench only serves Content-Length framed files */
        }
    }
  *body = need;
  return status;
}

static size_t
make_request (char *out, size_t outlen, const char *host, const char *path)
{
  int n = snprintf (out, outlen, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: benchtool\r\n\r\n", path,
                    host);
  if (n < 0 || (size_t) n >= outlen)
    {
      fprintf (stderr, "benchtool: request too long\n");
      exit (2);
    }
  return (size_t) n;
}

static void
raise_nofile (void)
{
  struct rlimit rl;
  if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max)
    {
      rl.rlim_cur = rl.rlim_max;
      setrlimit (RLIMIT_NOFILE, &rl);
    }
}

static int
cmd_freeport (void)
{
  int fd = socket (AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = { 0 };
  socklen_t len = sizeof sa;
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  if (fd < 0 || bind (fd, (struct sockaddr *) &sa, sizeof sa) < 0
      || getsockname (fd, (struct sockaddr *) &sa, &len) < 0)
    {
      perror ("benchtool freeport");
      return 1;
    }
  printf ("%d\n", ntohs (sa.sin_port));
  close (fd);
  return 0;
}

static int
cmd_get (int port, const char *host, const char *path)
{
  char req[1024];
  size_t rl = make_request (req, sizeof req, host, path);
  int fd = connect_local (port);
  if (fd < 0)
    {
      printf ("status=-1 body=0\n");
      return 1;
    }
  long body = 0;
  int st = do_get (fd, req, rl, &body);
  close (fd);
  printf ("status=%d body=%ld\n", st, body);
  return st == 200 ? 0 : 1;
}

static int
cmd_idle (int port, const char *host, const char *path, long n, const char *readyfile,
          const char *stopfile, double maxsec)
{
  char req[1024];
  size_t rl = make_request (req, sizeof req, host, path);
  int *fds = calloc ((size_t) n, sizeof *fds);
  long opened = 0, failed = 0;
  double deadline = now_s () + maxsec;

  raise_nofile ();
  for (long i = 0; i < n && now_s () < deadline; i++)
    {
      int fd = connect_local (port);
      long body = 0;
      if (fd < 0)
        {
          failed++;
          continue;
        }
      if (do_get (fd, req, rl, &body) != 200)
        {
          failed++;
          close (fd);
          continue;
        }
      fds[opened++] = fd;
    }

  FILE *rf = fopen (readyfile, "w");
  if (rf == NULL)
    {
      perror ("benchtool idle: readyfile");
      return 1;
    }
  fprintf (rf, "ready opened=%ld failed=%ld\n", opened, failed);
  fclose (rf);

  struct stat st;
  while (now_s () < deadline && stat (stopfile, &st) != 0)
    usleep (10000);

  /* A connection is still alive if the peer has neither closed it nor sent anything. */
  long alive = 0;
  for (long i = 0; i < opened; i++)
    {
      struct pollfd p = { .fd = fds[i], .events = POLLIN };
      if (poll (&p, 1, 0) == 0)
        alive++;
      close (fds[i]);
    }
  printf ("alive=%ld opened=%ld failed=%ld\n", alive, opened, failed);
  free (fds);
  return 0;
}

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return (x > y) - (x < y);
}

static int
cmd_setup (int port, const char *host, const char *path, long n)
{
  char req[1024];
  size_t rl = make_request (req, sizeof req, host, path);
  double *lat = calloc ((size_t) n, sizeof *lat);
  long ok = 0, err = 0;
  double sum = 0;
  double deadline = now_s () + 120.0;

  for (long i = 0; i < n && now_s () < deadline; i++)
    {
      double t0 = now_s ();
      int fd = connect_local (port);
      long body = 0;
      int status = fd < 0 ? -1 : do_get (fd, req, rl, &body);
      double t1 = now_s ();
      if (fd >= 0)
        close (fd);
      if (status != 200)
        {
          err++;
          continue;
        }
      lat[ok++] = (t1 - t0) * 1e6;
      sum += (t1 - t0) * 1e6;
    }
  if (ok == 0)
    {
      printf ("n=%ld ok=0 err=%ld\n", n, err);
      return 1;
    }
  qsort (lat, (size_t) ok, sizeof *lat, cmp_double);
  /* nearest-rank percentiles */
  long i50 = (long) ((ok * 50 + 99) / 100) - 1;
  long i99 = (long) ((ok * 99 + 99) / 100) - 1;
  printf ("n=%ld ok=%ld err=%ld p50_us=%.1f p99_us=%.1f mean_us=%.1f max_us=%.1f\n", n, ok, err,
          lat[i50 < 0 ? 0 : i50], lat[i99 < 0 ? 0 : i99], sum / ok, lat[ok - 1]);
  free (lat);
  return 0;
}

int
main (int argc, char **argv)
{
  if (argc >= 2 && strcmp (argv[1], "freeport") == 0)
    return cmd_freeport ();
  if (argc == 5 && strcmp (argv[1], "get") == 0)
    return cmd_get (parse_port (argv[2]), argv[3], argv[4]);
  if (argc == 9 && strcmp (argv[1], "idle") == 0)
    {
      long n = atol (argv[5]);
      double maxsec = atof (argv[8]);
      if (n <= 0 || n > 100000 || maxsec <= 0 || maxsec > 3600)
        return 2;
      return cmd_idle (parse_port (argv[2]), argv[3], argv[4], n, argv[6], argv[7], maxsec);
    }
  if (argc == 6 && strcmp (argv[1], "setup") == 0)
    {
      long n = atol (argv[5]);
      if (n <= 0 || n > 1000000)
        return 2;
      return cmd_setup (parse_port (argv[2]), argv[3], argv[4], n);
    }
  fprintf (stderr,
           "usage: benchtool freeport | get PORT HOST PATH | "
           "idle PORT HOST PATH N READYFILE STOPFILE MAXSEC | setup PORT HOST PATH N\n");
  return 2;
}
