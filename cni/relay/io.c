/*
 * The relay's I/O: whole reads and writes on fds the runtime may have made
 * non-blocking, and the one exchange with the agent (wire format in
 * common/relay-protocol.ts). Every wait has a deadline except the runtime's
 * own pipes, which the runtime owns.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "relay.h"

const char *relay_errno_name(int err) {
  switch (err) {
    case ENOENT: return "ENOENT";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ECONNRESET: return "ECONNRESET";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EPIPE: return "EPIPE";
    case ENOTDIR: return "ENOTDIR";
    case ENOTSOCK: return "ENOTSOCK";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ELOOP: return "ELOOP";
    case EAGAIN: return "EAGAIN";
    case EFBIG: return "EFBIG";
    case ENOSPC: return "ENOSPC";
    case EROFS: return "EROFS";
    case EIO: return "EIO";
    default: return "EUNKNOWN";
  }
}

/* errno as its symbolic name where the relay knows it, else strerror's text. */
static const char *ename(int e) {
  const char *n = relay_errno_name(e);
  return strcmp(n, "EUNKNOWN") != 0 ? n : strerror(e);
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Waits for `events` on fd until deadline (ms, CLOCK_MONOTONIC; <0: forever). 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, long deadline) {
  for (;;) {
    int t = -1;
    if (deadline >= 0) {
      long left = deadline - now_ms();
      if (left <= 0) return 0;
      t = left > 60000 ? 60000 : (int)left;
    }
    struct pollfd p = { .fd = fd, .events = events };
    int r = poll(&p, 1, t);
    if (r > 0) return 1;
    if (r < 0 && errno != EINTR) return -1;
  }
}

int relay_read_fd(int fd, buf_t *out, size_t cap) {
  size_t size = 0;
  out->p = NULL;
  out->n = 0;
  for (;;) {
    if (out->n == size) {
      if (size > cap) {
        errno = EFBIG;
        return -1;
      }
      size_t next = size ? size * 2 : 8192;
      if (next > cap + 1) next = cap + 1;
      char *p = realloc(out->p, next + 1);
      if (!p) return -1;
      out->p = p;
      size = next;
    }
    ssize_t r = read(fd, out->p + out->n, size - out->n);
    if (r > 0) {
      out->n += (size_t)r;
      if (out->n > cap) {
        errno = EFBIG;
        return -1;
      }
      continue;
    }
    if (r == 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN && wait_fd(fd, POLLIN, -1) > 0) continue;
    return -1;
  }
  if (!out->p && !(out->p = malloc(1))) return -1;
  out->p[out->n] = '\0';
  return 0;
}

static int write_until(int fd, const char *p, size_t n, long deadline) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == ENOTSOCK) w = write(fd, p, n);
    if (w > 0) {
      p += w;
      n -= (size_t)w;
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      int r = wait_fd(fd, POLLOUT, deadline);
      if (r > 0) continue;
      if (r == 0) errno = ETIMEDOUT;
      return -1;
    }
    return -1;
  }
  return 0;
}

int relay_write_all(int fd, const char *p, size_t n) { return write_until(fd, p, n, -1); }

/* The CNI_* variables the agent reads, in the order they are sent. */
static const char *const ENV_NAMES[] = { "CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH" };

static int append(buf_t *b, size_t *cap, const char *p, size_t n) {
  if (b->n + n > *cap) {
    size_t next = (*cap ? *cap : 1024);
    while (next < b->n + n) next *= 2;
    char *q = realloc(b->p, next);
    if (!q) return -1;
    b->p = q;
    *cap = next;
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
  return 0;
}

static int env_block(const char *command, buf_t *env) {
  size_t cap = 0;
  env->p = NULL;
  env->n = 0;
  for (size_t i = 0; i < sizeof(ENV_NAMES) / sizeof(ENV_NAMES[0]); i++) {
    const char *v = i == 0 ? command : getenv(ENV_NAMES[i]);
    if (!v) continue;
    if (append(env, &cap, ENV_NAMES[i], strlen(ENV_NAMES[i])) || append(env, &cap, "=", 1) ||
        append(env, &cap, v, strlen(v)) || append(env, &cap, "", 1)) return -1;
  }
  return 0;
}

/*
 * The acknowledgement at the head of what the agent sent: 1 when it is there
 * (and removed, so ans holds the answer alone), 0 while what came may still
 * become one. Anything else is an answer without acknowledgement (an agent
 * refusing a request it could not read answers at once): 1, left as it is.
 */
static int take_ack(buf_t *ans) {
  size_t k = sizeof(RELAY_ACK) - 1;
  size_t m = ans->n < k ? ans->n : k;
  if (memcmp(ans->p, RELAY_ACK, m) != 0) return 1;
  if (ans->n < k) return 0;
  memmove(ans->p, ans->p + k, ans->n - k);
  ans->n -= k;
  return 1;
}

const char *relay_exchange(const struct relay_conf *c, const char *command, const buf_t *in, int nsfd, int nserr,
                           buf_t *ans, char *why, size_t whylen) {
  ans->p = NULL;
  ans->n = 0;
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  if (strlen(c->socket) >= sizeof(addr.sun_path)) {
    snprintf(why, whylen, "ENAMETOOLONG");
    return why;
  }
  strcpy(addr.sun_path, c->socket);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    snprintf(why, whylen, "socket: %s", strerror(errno));
    return why;
  }
  /* A unix connect waits only when the listen backlog is full; SO_SNDTIMEO bounds that. */
  struct timeval tv = { .tv_sec = c->connect_ms / 1000, .tv_usec = (c->connect_ms % 1000) * 1000 };
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int r;
  do r = connect(s, (struct sockaddr *)&addr, sizeof(addr)); while (r < 0 && errno == EINTR);
  if (r < 0) {
    int e = errno;
    if (e == EAGAIN || e == EINPROGRESS) snprintf(why, whylen, "no connection within %ld ms", c->connect_ms);
    else snprintf(why, whylen, "%s", ename(e));
    close(s);
    return why;
  }
  fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
  /* Until the agent acknowledges, only agentAcceptTimeoutMs: a live agent
   * reads and acknowledges within milliseconds, whatever the work behind the
   * request; a wedged one (stopped, event loop stuck) never does, and the
   * kernel's backlog accepted the connection for it. Sending is in this
   * phase too: a stdin larger than the socket buffer waits for the agent. */
  long deadline = now_ms() + c->accept_ms;
  int acked = 0;

  buf_t env;
  if (env_block(command, &env)) {
    close(s);
    snprintf(why, whylen, "out of memory");
    return why;
  }
  char head[128];
  int hl = snprintf(head, sizeof(head), RELAY_MAGIC " %zu %zu %d %d\n", env.n, in->n, nsfd >= 0 ? 1 : 0, nserr);

  /* The header carries the namespace fd, so the agent gets it with the first bytes it reads. */
  struct iovec iov = { .iov_base = head, .iov_len = (size_t)hl };
  union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } ctl;
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
  if (nsfd >= 0) {
    memset(&ctl, 0, sizeof(ctl));
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof(ctl.buf);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &nsfd, sizeof(int));
  }
  ssize_t sent;
  for (;;) {
    sent = sendmsg(s, &msg, MSG_NOSIGNAL);
    if (sent >= 0 || errno == EINTR) { if (sent >= 0) break; continue; }
    if (errno != EAGAIN || wait_fd(s, POLLOUT, deadline) <= 0) break;
  }
  int ok = sent >= 0 && write_until(s, head + sent, (size_t)hl - (size_t)sent, deadline) == 0 &&
           write_until(s, env.p ? env.p : "", env.n, deadline) == 0 && write_until(s, in->p ? in->p : "", in->n, deadline) == 0;
  int e = errno;
  free(env.p);
  if (!ok) {
    close(s);
    if (e == ETIMEDOUT) snprintf(why, whylen, "no acknowledgement within %ld ms (the agent stopped reading)", c->accept_ms);
    else snprintf(why, whylen, "send: %s", ename(e));
    return why;
  }
  shutdown(s, SHUT_WR);

  size_t size = 0;
  for (;;) {
    if (ans->n == size) {
      if (size >= RELAY_MAX_ANSWER) {
        snprintf(why, whylen, "answer larger than %u bytes", RELAY_MAX_ANSWER);
        break;
      }
      size_t next = size ? size * 2 : 4096;
      char *p = realloc(ans->p, next + 1);
      if (!p) {
        snprintf(why, whylen, "out of memory");
        break;
      }
      ans->p = p;
      size = next;
    }
    ssize_t n = recv(s, ans->p + ans->n, size - ans->n, 0);
    if (n > 0) {
      ans->n += (size_t)n;
      if (!acked) acked = take_ack(ans);
      if (acked) {
        if (acked == 1) deadline = now_ms() + c->timeout_ms;
        acked = 2;
      }
      continue;
    }
    if (n == 0) {
      close(s);
      ans->p[ans->n] = '\0';
      if (ans->n == 0) {
        snprintf(why, whylen, "connection closed without an answer");
        return why;
      }
      return NULL;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      int w = wait_fd(s, POLLIN, deadline);
      if (w > 0) continue;
      if (w == 0 && !acked) snprintf(why, whylen, "no acknowledgement within %ld ms (agent wedged or stopped)", c->accept_ms);
      else if (w == 0) snprintf(why, whylen, "no answer within %ld ms", c->timeout_ms);
      else snprintf(why, whylen, "poll: %s", strerror(errno));
      break;
    }
    snprintf(why, whylen, "%s", ename(errno));
    break;
  }
  close(s);
  free(ans->p);
  ans->p = NULL;
  ans->n = 0;
  return why;
}
