#ifndef BERTH_NATIVE_H
#define BERTH_NATIVE_H
#include <node_api.h>

/* errno -> its symbolic name ("ENODEV"), for Error.code; "E<number>" style fallback "EUNKNOWN". */
const char *berth_errno_name(int err);

napi_value berth_js_route_socket(napi_env env, napi_callback_info info);
napi_value berth_js_delete_link_on(napi_env env, napi_callback_info info);
napi_value berth_js_request_on(napi_env env, napi_callback_info info);
napi_value berth_js_recv_with_fd(napi_env env, napi_callback_info info);

napi_value berth_js_bpf_map_create(napi_env env, napi_callback_info info);
napi_value berth_js_bpf_map_update(napi_env env, napi_callback_info info);
napi_value berth_js_bpf_map_delete(napi_env env, napi_callback_info info);
napi_value berth_js_bpf_load_fast_path(napi_env env, napi_callback_info info);
napi_value berth_js_tcx_attach_ingress(napi_env env, napi_callback_info info);

#endif
