/*
 * berth_netns: what Node lacks for the agent's data plane.
 *
 * setns(fd, CLONE_NEWNET) moves only the calling thread (the JS main thread)
 * into another network namespace. agent/kernel/netns.ts uses it to open a
 * netlink socket inside a pod's namespace and then moves straight back; read
 * agent/README-netns.md before calling it from anywhere else.
 * routeSocket/deleteLinkOn (berth_dellink.c) delete a link off the JS thread;
 * berth_bpf.c holds the fast path's programs and maps.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <node_api.h>

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

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn, flag;
  napi_create_function(env, "setns", NAPI_AUTO_LENGTH, js_setns, NULL, &fn);
  napi_set_named_property(env, exports, "setns", fn);
  napi_create_int32(env, CLONE_NEWNET, &flag);
  napi_set_named_property(env, exports, "CLONE_NEWNET", flag);
  napi_create_function(env, "routeSocket", NAPI_AUTO_LENGTH, berth_js_route_socket, NULL, &fn);
  napi_set_named_property(env, exports, "routeSocket", fn);
  napi_create_function(env, "deleteLinkOn", NAPI_AUTO_LENGTH, berth_js_delete_link_on, NULL, &fn);
  napi_set_named_property(env, exports, "deleteLinkOn", fn);
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
