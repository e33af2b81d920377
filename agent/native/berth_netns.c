/*
 * berth_netns: the one syscall Node lacks for the agent's data plane.
 *
 * setns(fd, CLONE_NEWNET) moves only the calling thread (the JS main thread)
 * into another network namespace. agent/kernel/netns.ts uses it to open a
 * netlink socket inside a pod's namespace and then moves straight back; read
 * agent/README-netns.md before calling it from anywhere else.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <node_api.h>

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
    const char *code = err == EBADF ? "EBADF" : err == EINVAL ? "EINVAL" : err == EPERM ? "EPERM" : err == ENOMEM ? "ENOMEM" : "ESETNS";
    napi_throw_error(env, code, strerror(err));
  }
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn, flag;
  napi_create_function(env, "setns", NAPI_AUTO_LENGTH, js_setns, NULL, &fn);
  napi_set_named_property(env, exports, "setns", fn);
  napi_create_int32(env, CLONE_NEWNET, &flag);
  napi_set_named_property(env, exports, "CLONE_NEWNET", flag);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
