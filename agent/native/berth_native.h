#ifndef BERTH_NATIVE_H
#define BERTH_NATIVE_H
#include <node_api.h>

/* errno -> its symbolic name ("ENODEV"), for Error.code; "E<number>" style fallback "EUNKNOWN". */
const char *berth_errno_name(int err);

napi_value berth_js_route_socket(napi_env env, napi_callback_info info);
napi_value berth_js_delete_link_on(napi_env env, napi_callback_info info);

#endif
