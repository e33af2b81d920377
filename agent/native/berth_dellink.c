/*
 * Link deletion off the JS thread.
 *
 * The kernel handles a netlink request inside the sender's sendmsg(2), and
 * RTM_DELLINK of a veth waits out RCU grace periods there (15-25 ms here).
 * The netlink package sends from the JS main thread, so one delete would
 * stall every other CNI request and the reconciler for that long. This does
 * the same request on a libuv pool thread instead.
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

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  char name[IFNAMSIZ_MAX];
  int err; /* 0, or a positive errno */
} del_req;

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

static int send_dellink(int fd, const char *name) {
  struct {
    struct nlmsghdr nh;
    struct ifinfomsg ifi;
    char attrs[RTA_SPACE(IFNAMSIZ_MAX)];
  } req;
  memset(&req, 0, sizeof(req));
  size_t namelen = strlen(name) + 1;
  struct rtattr *rta = (struct rtattr *)req.attrs;
  rta->rta_type = IFLA_IFNAME;
  rta->rta_len = RTA_LENGTH(namelen);
  memcpy(RTA_DATA(rta), name, namelen);
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(req.ifi)) + RTA_SPACE(namelen);
  req.nh.nlmsg_type = RTM_DELLINK;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  req.nh.nlmsg_seq = 1;
  req.ifi.ifi_family = AF_UNSPEC;
  return nl_transact(fd, &req, req.nh.nlmsg_len);
}

static void execute(napi_env env, void *data) {
  (void)env;
  del_req *r = data;
  r->err = send_dellink(r->fd, r->name);
}

static void complete(napi_env env, napi_status status, void *data) {
  del_req *r = data;
  close(r->fd);
  napi_value v;
  if (status == napi_ok && (r->err == 0 || r->err == ENODEV)) {
    napi_get_boolean(env, r->err == 0, &v);
    napi_resolve_deferred(env, r->deferred, v);
  } else {
    int err = status == napi_ok ? r->err : ECANCELED;
    napi_value code, msg;
    napi_create_string_utf8(env, berth_errno_name(err), NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, strerror(err), NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, code, msg, &v);
    napi_reject_deferred(env, r->deferred, v);
  }
  napi_delete_async_work(env, r->work);
  free(r);
}

/* routeSocket() -> fd: a NETLINK_ROUTE socket in the calling thread's netns. */
napi_value berth_js_route_socket(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) {
    napi_throw_error(env, berth_errno_name(errno), strerror(errno));
    return NULL;
  }
  napi_value v;
  napi_create_int32(env, fd, &v);
  return v;
}

/*
 * deleteLinkOn(fd, name) -> Promise<boolean>: true when deleted, false when
 * there was no such link. Takes ownership of fd (closed when done, or now on
 * a bad call).
 */
napi_value berth_js_delete_link_on(napi_env env, napi_callback_info info) {
  size_t argc = 2, len = 0;
  napi_value argv[2], promise, resource;
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
  del_req *r = calloc(1, sizeof(*r));
  if (!r) {
    close(fd);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  r->fd = fd;
  memcpy(r->name, name, len + 1);
  napi_create_promise(env, &r->deferred, &promise);
  napi_create_string_utf8(env, "berth.deleteLink", NAPI_AUTO_LENGTH, &resource);
  napi_create_async_work(env, NULL, resource, execute, complete, r, &r->work);
  napi_queue_async_work(env, r->work);
  return promise;
}

/*
 * requestOn(fd, message) -> Promise<void>: sends one complete rtnetlink
 * request (header included, NLM_F_ACK set by the caller) from a pool thread
 * and resolves on its ACK; rejects with the errno's name as code. For
 * requests the kernel is slow to run inside sendmsg(2) (creating a veth
 * pair moves one end into another netns). Takes ownership of fd.
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  size_t len;
  int err;
  unsigned char msg[];
} nl_req;

#define NL_REQUEST_MAX 65536

static void execute_request(napi_env env, void *data) {
  (void)env;
  nl_req *r = data;
  r->err = nl_transact(r->fd, r->msg, r->len);
}

static void complete_request(napi_env env, napi_status status, void *data) {
  nl_req *r = data;
  close(r->fd);
  napi_value v;
  if (status == napi_ok && r->err == 0) {
    napi_get_undefined(env, &v);
    napi_resolve_deferred(env, r->deferred, v);
  } else {
    int err = status == napi_ok ? r->err : ECANCELED;
    napi_value code, msg;
    napi_create_string_utf8(env, berth_errno_name(err), NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, strerror(err), NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, code, msg, &v);
    napi_reject_deferred(env, r->deferred, v);
  }
  napi_delete_async_work(env, r->work);
  free(r);
}

napi_value berth_js_request_on(napi_env env, napi_callback_info info) {
  size_t argc = 2, len = 0;
  napi_value argv[2], promise, resource;
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
  nl_req *r = calloc(1, sizeof(*r) + len);
  if (!r) {
    close(fd);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  r->fd = fd;
  r->len = len;
  memcpy(r->msg, bytes, len); /* the JS buffer may be collected or reused before the pool thread runs */
  napi_create_promise(env, &r->deferred, &promise);
  napi_create_string_utf8(env, "berth.netlinkRequest", NAPI_AUTO_LENGTH, &resource);
  napi_create_async_work(env, NULL, resource, execute_request, complete_request, r, &r->work);
  napi_queue_async_work(env, r->work);
  return promise;
}
