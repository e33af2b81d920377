/*
 * rtnetlink requests off the JS thread: link deletion (deleteLinkOn) and
 * any whole request built in JS (requestOn: veth creation, link up/down).
 *
 * The kernel handles a netlink request inside the sender's sendmsg(2), and
 * RTM_DELLINK of a veth waits out RCU grace periods there (15-25 ms here);
 * creating a pair and moving one end into a pod's netns takes milliseconds.
 * The netlink package sends from the JS main thread, so one delete would
 * stall every other CNI request and the reconciler for that long. This does
 * the same requests on libuv pool threads instead.
 *
 * The socket is opened on the JS thread (routeSocket, inside enterSync when
 * the link lives in another netns, see agent/kernel/netns.ts): a netlink
 * socket keeps its netns for life, so the pool thread's own netns never
 * matters.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <node_api.h>

#include "berth_native.h"

#define IFNAMSIZ_MAX 16

/*
 * One request for a pool thread: the socket (owned: closed when done) and a
 * copy of the whole message, since the JS buffer may be collected or reused
 * before the thread runs. A deletion resolves true/false (false: no such
 * link); any other request resolves undefined.
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  bool is_delete;
  int err; /* 0, or a positive errno */
  size_t len;
  unsigned char msg[];
} nl_req;

#define NL_REQUEST_MAX 65536

/*
 * Sends one request and waits for its acknowledgement: 0, or a positive
 * errno. The socket is this request's own, so the first NLMSG_ERROR with
 * the request's sequence number is its answer.
 */
static int nl_transact(int fd, const void *msg, size_t len) {
  uint32_t seq = ((const struct nlmsghdr *)msg)->nlmsg_seq;
  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  if (sendto(fd, msg, len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) return errno;
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    int left = (int)n; /* signed, as NLMSG_NEXT may take it below zero */
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_seq != seq || h->nlmsg_type != NLMSG_ERROR) continue;
      const struct nlmsgerr *e = (const struct nlmsgerr *)NLMSG_DATA(h);
      return -e->error; /* 0 is the ACK */
    }
  }
}

static void execute(napi_env env, void *data) {
  (void)env;
  nl_req *r = data;
  r->err = nl_transact(r->fd, r->msg, r->len);
}

static void complete(napi_env env, napi_status status, void *data) {
  nl_req *r = data;
  close(r->fd);
  napi_value v;
  bool gone = r->is_delete && r->err == ENODEV;
  if (status == napi_ok && (r->err == 0 || gone)) {
    if (r->is_delete) napi_get_boolean(env, r->err == 0, &v);
    else napi_get_undefined(env, &v);
    napi_resolve_deferred(env, r->deferred, v);
  } else {
    int err = status == napi_ok ? r->err : ECANCELED;
    napi_value code, msg;
    napi_create_string_utf8(env, berth_errno_name(err), NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, strerror(err), NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, code, msg, &v);
    napi_value num;
    napi_create_int32(env, err, &num);
    napi_set_named_property(env, v, "errno", num); /* every errno, where code names only the common ones */
    napi_reject_deferred(env, r->deferred, v);
  }
  napi_delete_async_work(env, r->work);
  free(r);
}

/* A request of len bytes for fd, message left to the caller; NULL (fd closed, error thrown) when out of memory. */
static nl_req *new_request(napi_env env, int fd, size_t len, bool is_delete) {
  nl_req *r = calloc(1, sizeof(*r) + len);
  if (!r) {
    close(fd);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  r->fd = fd;
  r->len = len;
  r->is_delete = is_delete;
  return r;
}

static napi_value queue(napi_env env, nl_req *r, const char *what) {
  napi_value promise, resource;
  napi_create_promise(env, &r->deferred, &promise);
  napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &resource);
  napi_create_async_work(env, NULL, resource, execute, complete, r, &r->work);
  napi_queue_async_work(env, r->work);
  return promise;
}

/* routeSocket() -> fd: a NETLINK_ROUTE socket in the calling thread's netns. */
napi_value berth_js_route_socket(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) {
    napi_throw_error(env, berth_errno_name(errno), strerror(errno));
    return NULL;
  }
  /*
   * An error answer echoes only the request's header, not the whole
   * request: nl_transact reads answers into a 4 KiB buffer, and a truncated
   * echo of a larger refused request would never parse, leaving the pool
   * thread in recv for good.
   */
  int one = 1;
  if (setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one)) < 0) {
    int err = errno;
    close(fd);
    napi_throw_error(env, berth_errno_name(err), strerror(err));
    return NULL;
  }
  napi_value v;
  napi_create_int32(env, fd, &v);
  return v;
}

/*
 * deleteLinkOn(fd, name) -> Promise<boolean>: RTM_DELLINK by name; true when
 * deleted, false when there was no such link. Takes ownership of fd (closed
 * when done, or now on a bad call).
 */
napi_value berth_js_delete_link_on(napi_env env, napi_callback_info info) {
  size_t argc = 2, len = 0;
  napi_value argv[2];
  char name[IFNAMSIZ_MAX + 1];
  int32_t fd = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "deleteLinkOn(fd: number, name: string)");
    return NULL;
  }
  if (napi_get_value_string_utf8(env, argv[1], name, sizeof(name), &len) != napi_ok || len == 0 || len >= IFNAMSIZ_MAX) {
    close(fd);
    napi_throw_type_error(env, NULL, "deleteLinkOn: name must be 1-15 bytes");
    return NULL;
  }
  size_t total = NLMSG_LENGTH(sizeof(struct ifinfomsg)) + RTA_SPACE(len + 1);
  nl_req *r = new_request(env, fd, total, true);
  if (!r) return NULL;
  struct nlmsghdr *nh = (struct nlmsghdr *)r->msg;
  nh->nlmsg_len = (uint32_t)total;
  nh->nlmsg_type = RTM_DELLINK;
  nh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  nh->nlmsg_seq = 1;
  ((struct ifinfomsg *)NLMSG_DATA(nh))->ifi_family = AF_UNSPEC;
  struct rtattr *rta = (struct rtattr *)(r->msg + NLMSG_LENGTH(sizeof(struct ifinfomsg)));
  rta->rta_type = IFLA_IFNAME;
  rta->rta_len = RTA_LENGTH(len + 1);
  memcpy(RTA_DATA(rta), name, len + 1);
  return queue(env, r, "berth.deleteLink");
}

/*
 * requestOn(fd, message) -> Promise<void>: sends one complete rtnetlink
 * request (header included, NLM_F_ACK set by the caller) from a pool thread
 * and resolves on its ACK; rejects with the errno's name as code. For
 * requests the kernel is slow to run inside sendmsg(2) (creating a veth
 * pair moves one end into another netns). Takes ownership of fd.
 */
napi_value berth_js_request_on(napi_env env, napi_callback_info info) {
  size_t argc = 2, len = 0;
  napi_value argv[2];
  int32_t fd = -1;
  void *bytes = NULL;
  bool is_buffer = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "requestOn(fd: number, message: Buffer)");
    return NULL;
  }
  if (napi_is_buffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, argv[1], &bytes, &len) != napi_ok || len < sizeof(struct nlmsghdr) ||
      len > NL_REQUEST_MAX || ((const struct nlmsghdr *)bytes)->nlmsg_len != len) {
    close(fd);
    napi_throw_type_error(env, NULL, "requestOn: message must be one whole netlink message (16 bytes to 64 KiB, nlmsg_len = its length)");
    return NULL;
  }
  nl_req *r = new_request(env, fd, len, false);
  if (!r) return NULL;
  memcpy(r->msg, bytes, len);
  return queue(env, r, "berth.netlinkRequest");
}
