/* gt-test-netdelay: a delaying link between two network namespaces, for tests on a kernel without
 * netem. It creates a TUN device named gtd0 in each namespace and forwards every IP packet read
 * from one to the other after a fixed delay (FIFO per direction, so no reordering). The test gives
 * the devices their addresses and adds loss with nftables. Runs until SIGTERM or SIGINT.
 *
 * Usage: gt-test-netdelay NETNS_A NETNS_B DELAY_MS [RATE_MBIT [QUEUE_MS]]
 * With RATE_MBIT (> 0), each direction is also a link of that rate: a packet leaves after those
 * ahead of it have been serialised, and one that would wait more than QUEUE_MS (default 50) in
 * that queue is dropped at the tail, as a router's buffer of that depth would.
 * Prints "ready" on stdout once both devices exist; on exit, one line of counters. */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define DEV_NAME "gtd0"
#define MAX_PACKET 65536
/* A direction holds at most this many packets or bytes in flight; more is dropped at the tail,
 * as a router's queue would. */
#define QUEUE_PACKETS 8192
#define QUEUE_BYTES (32u << 20)

typedef struct
{
  int64_t due_us;
  size_t len;
  unsigned char *data;
} Packet;

typedef struct
{
  Packet ring[QUEUE_PACKETS];
  size_t head, count, bytes;
  uint64_t forwarded, dropped;
  int64_t link_free_us; /* with a rate: when the link has sent all it holds */
} Queue;

/* The rate of each direction in bits per µs (0: no limit) and its queue's depth in µs. */
static double rate_bits_per_us;
static int64_t queue_us = 50000;

static volatile sig_atomic_t stopping;

static void
on_signal (int sig)
{
  (void)sig;
  stopping = 1;
}

static int64_t
now_us (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Opens /dev/net/tun in namespace name and attaches DEV_NAME; -1 with a message on failure. */
static int
tun_in_netns (const char *name)
{
  char path[256];
  struct ifreq ifr;
  int self, ns, fd;

  snprintf (path, sizeof path, "/var/run/netns/%s", name);
  self = open ("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  ns = open (path, O_RDONLY | O_CLOEXEC);
  if (self < 0 || ns < 0 || setns (ns, CLONE_NEWNET) < 0)
    {
      fprintf (stderr, "gt-test-netdelay: namespace %s: %s\n", name, strerror (errno));
      return -1;
    }
  fd = open ("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  memset (&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  strncpy (ifr.ifr_name, DEV_NAME, IFNAMSIZ - 1);
  if (fd < 0 || ioctl (fd, TUNSETIFF, &ifr) < 0)
    {
      fprintf (stderr, "gt-test-netdelay: tun in %s: %s\n", name, strerror (errno));
      return -1;
    }
  if (setns (self, CLONE_NEWNET) < 0)
    return -1;
  close (self);
  close (ns);
  return fd;
}

/* Reads what fd has and queues it with its due time. */
static void
queue_read (Queue *q, int fd, int64_t delay_us)
{
  unsigned char buf[MAX_PACKET];

  for (;;)
    {
      ssize_t n = read (fd, buf, sizeof buf);
      Packet *p;

      if (n <= 0)
        return;
      int64_t now = now_us (), leave = now;

      if (q->count == QUEUE_PACKETS || q->bytes + n > QUEUE_BYTES)
        {
          q->dropped++;
          continue;
        }
      if (rate_bits_per_us > 0)
        {
          /* Serialisation behind what the link still holds; a full buffer drops the packet. */
          int64_t start = q->link_free_us > now ? q->link_free_us : now;

          if (start - now > queue_us)
            {
              q->dropped++;
              continue;
            }
          leave = start + (int64_t)(n * 8 / rate_bits_per_us);
          q->link_free_us = leave;
        }
      p = &q->ring[(q->head + q->count) % QUEUE_PACKETS];
      p->data = malloc (n);
      if (p->data == NULL)
        {
          q->dropped++;
          continue;
        }
      memcpy (p->data, buf, n);
      p->len = n;
      p->due_us = leave + delay_us;
      q->count++;
      q->bytes += n;
    }
}

/* Writes the packets that are due to fd; returns µs until the next one (-1: none). */
static int64_t
queue_release (Queue *q, int fd)
{
  while (q->count > 0)
    {
      Packet *p = &q->ring[q->head];
      int64_t wait = p->due_us - now_us ();

      if (wait > 0)
        return wait;
      if (write (fd, p->data, p->len) < 0 && errno == EAGAIN)
        return 1000;
      q->forwarded++;
      q->bytes -= p->len;
      free (p->data);
      q->head = (q->head + 1) % QUEUE_PACKETS;
      q->count--;
    }
  return -1;
}

int
main (int argc, char **argv)
{
  static Queue ab, ba;
  struct sigaction sa;
  int64_t delay_us;
  int fa, fb;

  if (argc < 4 || argc > 6)
    {
      fprintf (stderr, "usage: gt-test-netdelay NETNS_A NETNS_B DELAY_MS [RATE_MBIT [QUEUE_MS]]\n");
      return 2;
    }
  delay_us = strtoll (argv[3], NULL, 10) * 1000;
  if (argc > 4)
    rate_bits_per_us = strtod (argv[4], NULL); /* Mbit/s = bits per µs */
  if (argc > 5)
    queue_us = strtoll (argv[5], NULL, 10) * 1000;
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction (SIGTERM, &sa, NULL);
  sigaction (SIGINT, &sa, NULL);
  fa = tun_in_netns (argv[1]);
  fb = tun_in_netns (argv[2]);
  if (fa < 0 || fb < 0)
    return 1;
  printf ("ready\n");
  fflush (stdout);

  while (!stopping)
    {
      struct pollfd pfds[2] = { { fa, POLLIN, 0 }, { fb, POLLIN, 0 } };
      int64_t wa = queue_release (&ab, fb);
      int64_t wb = queue_release (&ba, fa);
      int64_t wait = wa < 0 ? wb : wb < 0 ? wa : (wa < wb ? wa : wb);
      int timeout = wait < 0 ? 1000 : (int)((wait + 999) / 1000);

      if (poll (pfds, 2, timeout) < 0 && errno != EINTR)
        break;
      if (pfds[0].revents & POLLIN)
        queue_read (&ab, fa, delay_us);
      if (pfds[1].revents & POLLIN)
        queue_read (&ba, fb, delay_us);
    }
  printf ("forwarded %s->%s %llu dropped %llu; %s->%s %llu dropped %llu\n", argv[1], argv[2],
          (unsigned long long)ab.forwarded, (unsigned long long)ab.dropped, argv[2], argv[1],
          (unsigned long long)ba.forwarded, (unsigned long long)ba.dropped);
  return 0;
}
