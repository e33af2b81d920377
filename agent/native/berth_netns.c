/*
 * berth_netns: what Node lacks for the agent's data plane.
 *
 * openNetns(path) opens a network namespace file without ever blocking and
 * refuses anything else before opening it for real: see js_open_netns.
 * setns(fd, CLONE_NEWNET) moves only the calling thread (the JS main thread)
 * into another network namespace. agent/kernel/netns.ts uses it to open a
 * netlink socket inside a pod's namespace and then moves straight back; read
 * agent/README-netns.md before calling it from anywhere else.
 * routeSocket/deleteLinkOn (berth_dellink.c) delete a link off the JS thread;
 * recvWithFd (berth_recvfd.c) takes the pod netns fd the CNI relay passes;
 * berth_bpf.c holds the fast path's programs and maps.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <node_api.h>

#ifndef NSFS_MAGIC
#define NSFS_MAGIC 0x6e736673
#endif

#include "berth_native.h"

const char *berth_errno_name(int err) {
  switch (err) {
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case EPERM: return "EPERM";
    case ENOMEM: return "ENOMEM";
    case ENODEV: return "ENODEV";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EACCES: return "EACCES";
    case ENOBUFS: return "ENOBUFS";
    case ECANCELED: return "ECANCELED";
    case ENOENT: return "ENOENT";
    case E2BIG: return "E2BIG";
    case ENOSPC: return "ENOSPC";
    default: return "ENETLINK";
  }
}

/* setns(fd, nstype) -> undefined; throws Error with code = errno name. */
static napi_value js_setns(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd = -1, nstype = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int32(env, argv[1], &nstype) != napi_ok) {
    napi_throw_type_error(env, NULL, "setns(fd: number, nstype: number)");
    return NULL;
  }
  if (setns(fd, nstype) != 0) {
    int err = errno;
    napi_throw_error(env, berth_errno_name(err), strerror(err));
  }
  return NULL;
}

/*
 * openNetns(path) -> fd (O_RDONLY|O_CLOEXEC) of a network namespace.
 * Throws Error with code ENOENT (no such path), ENOTNETNS (exists, but is no
 * network namespace) or another errno name.
 *
 * A plain open(2) of a runtime-supplied path can block the JS thread for
 * good (a FIFO with no writer) or run a device driver's open (/dev/...). So
 * the path is first opened with O_PATH, which never blocks and opens nothing
 * for I/O, and fstatfs(2) must say nsfs. Only then is that same inode opened
 * for real, through /proc/self/fd (no second path lookup, so no race with a
 * rename), and ioctl(NS_GET_NSTYPE) must say CLONE_NEWNET (a mount or pid
 * namespace file is nsfs too). Opening an nsfs file never blocks.
 */
static napi_value js_open_netns(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char path[4096];
  size_t len = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_string_utf8(env, argv[0], path, sizeof(path), &len) != napi_ok || len == 0 || len >= sizeof(path) - 1) {
    napi_throw_type_error(env, NULL, "openNetns(path: string)");
    return NULL;
  }
  int pfd = open(path, O_PATH | O_CLOEXEC);
  if (pfd < 0) {
    int err = errno;
    napi_throw_error(env, err == ENOENT ? "ENOENT" : berth_errno_name(err), strerror(err));
    return NULL;
  }
  struct statfs sfs;
  if (fstatfs(pfd, &sfs) != 0 || sfs.f_type != NSFS_MAGIC) {
    close(pfd);
    napi_throw_error(env, "ENOTNETNS", "not a namespace file");
    return NULL;
  }
  char proc[64];
  snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
  int fd = open(proc, O_RDONLY | O_CLOEXEC);
  int err = errno;
  close(pfd);
  if (fd < 0) {
    napi_throw_error(env, berth_errno_name(err), strerror(err));
    return NULL;
  }
  int type = ioctl(fd, NS_GET_NSTYPE);
  if (type >= 0 && type != CLONE_NEWNET) {
    close(fd);
    napi_throw_error(env, "ENOTNETNS", "a namespace, but not a network namespace");
    return NULL;
  }
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn, flag;
  napi_create_function(env, "openNetns", NAPI_AUTO_LENGTH, js_open_netns, NULL, &fn);
  napi_set_named_property(env, exports, "openNetns", fn);
  napi_create_function(env, "setns", NAPI_AUTO_LENGTH, js_setns, NULL, &fn);
  napi_set_named_property(env, exports, "setns", fn);
  napi_create_int32(env, CLONE_NEWNET, &flag);
  napi_set_named_property(env, exports, "CLONE_NEWNET", flag);
  napi_create_function(env, "routeSocket", NAPI_AUTO_LENGTH, berth_js_route_socket, NULL, &fn);
  napi_set_named_property(env, exports, "routeSocket", fn);
  napi_create_function(env, "deleteLinkOn", NAPI_AUTO_LENGTH, berth_js_delete_link_on, NULL, &fn);
  napi_set_named_property(env, exports, "deleteLinkOn", fn);
  napi_create_function(env, "requestOn", NAPI_AUTO_LENGTH, berth_js_request_on, NULL, &fn);
  napi_set_named_property(env, exports, "requestOn", fn);
  napi_create_function(env, "recvWithFd", NAPI_AUTO_LENGTH, berth_js_recv_with_fd, NULL, &fn);
  napi_set_named_property(env, exports, "recvWithFd", fn);
  const struct { const char *name; napi_callback cb; } bpf[] = {
    { "bpfMapCreate", berth_js_bpf_map_create },
    { "bpfMapUpdate", berth_js_bpf_map_update },
    { "bpfMapDelete", berth_js_bpf_map_delete },
    { "bpfLoadFastPath", berth_js_bpf_load_fast_path },
    { "tcxAttachIngress", berth_js_tcx_attach_ingress },
  };
  for (size_t i = 0; i < sizeof(bpf) / sizeof(bpf[0]); i++) {
    napi_create_function(env, bpf[i].name, NAPI_AUTO_LENGTH, bpf[i].cb, NULL, &fn);
    napi_set_named_property(env, exports, bpf[i].name, fn);
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
