/*
 * recvWithFd: the first read of a relay connection, with the descriptor it
 * carries. The `berth` relay (cni/relay) opens CNI_NETNS in the runtime's
 * mount namespace and passes the fd with SCM_RIGHTS on its first message;
 * Node's net.Socket reads with read(2), which would drop it. So the agent
 * accepts with pauseOnConnect, and this does the first recvmsg(2) on the
 * connection's fd from a libuv pool thread (poll first, bounded by a
 * timeout); the JS side then resumes the socket for the rest of the frame.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <node_api.h>

#include "berth_native.h"

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int sock;
  int timeout_ms;
  size_t max;
  char *data;
  size_t n;
  int fd;  /* received descriptor, or -1 */
  int err; /* 0, ETIMEDOUT, or a positive errno */
} recv_req;

static void execute(napi_env env, void *data) {
  (void)env;
  recv_req *r = data;
  for (;;) {
    struct pollfd p = { .fd = r->sock, .events = POLLIN };
    int pr = poll(&p, 1, r->timeout_ms);
    if (pr == 0) {
      r->err = ETIMEDOUT;
      return;
    }
    if (pr < 0) {
      if (errno == EINTR) continue;
      r->err = errno;
      return;
    }
    union { char buf[CMSG_SPACE(4 * sizeof(int))]; struct cmsghdr align; } ctl;
    struct iovec iov = { .iov_base = r->data, .iov_len = r->max };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
    ssize_t n = recvmsg(r->sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      r->err = errno;
      return;
    }
    r->n = (size_t)n;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
      if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
      size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < k; i++) {
        int fd;
        memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
        if (r->fd < 0) r->fd = fd;
        else close(fd); /* one namespace per request; extras are refused */
      }
    }
    return;
  }
}

static void complete(napi_env env, napi_status status, void *data) {
  recv_req *r = data;
  napi_value v;
  if (status == napi_ok && r->err == 0) {
    napi_value buf, fd;
    void *dst = NULL;
    napi_create_object(env, &v);
    napi_create_buffer_copy(env, r->n, r->data, &dst, &buf);
    napi_create_int32(env, r->fd, &fd);
    napi_set_named_property(env, v, "data", buf);
    napi_set_named_property(env, v, "fd", fd);
    napi_resolve_deferred(env, r->deferred, v);
  } else {
    if (r->fd >= 0) close(r->fd);
    int err = status == napi_ok ? r->err : ECANCELED;
    napi_value code, msg;
    napi_create_string_utf8(env, err == ETIMEDOUT ? "ETIMEDOUT" : berth_errno_name(err), NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, strerror(err), NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, code, msg, &v);
    napi_reject_deferred(env, r->deferred, v);
  }
  napi_delete_async_work(env, r->work);
  close(r->sock);
  free(r->data);
  free(r);
}

/*
 * recvWithFd(sockFd, maxBytes, timeoutMs) -> Promise<{ data: Buffer, fd: number }>.
 * data is empty at EOF; fd is -1 when the message carried none. The caller
 * owns fd (O_CLOEXEC) and must close it. Works on a duplicate of sockFd.
 */
napi_value berth_js_recv_with_fd(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], promise, resource;
  int32_t sock = -1, max = 0, timeout = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_int32(env, argv[0], &sock) != napi_ok || sock < 0 ||
      napi_get_value_int32(env, argv[1], &max) != napi_ok || max <= 0 ||
      napi_get_value_int32(env, argv[2], &timeout) != napi_ok || timeout < 0) {
    napi_throw_type_error(env, NULL, "recvWithFd(sockFd: number, maxBytes: number, timeoutMs: number)");
    return NULL;
  }
  recv_req *r = calloc(1, sizeof(*r));
  if (r) r->data = malloc((size_t)max);
  if (!r || !r->data) {
    free(r);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  /* A duplicate: the JS side may destroy its socket while this waits. */
  r->sock = fcntl(sock, F_DUPFD_CLOEXEC, 0);
  if (r->sock < 0) {
    int err = errno;
    free(r->data);
    free(r);
    napi_throw_error(env, berth_errno_name(err), strerror(err));
    return NULL;
  }
  r->max = (size_t)max;
  r->timeout_ms = timeout;
  r->fd = -1;
  napi_create_promise(env, &r->deferred, &promise);
  napi_create_string_utf8(env, "berth.recvWithFd", NAPI_AUTO_LENGTH, &resource);
  napi_create_async_work(env, NULL, resource, execute, complete, r, &r->work);
  napi_queue_async_work(env, r->work);
  return promise;
}
