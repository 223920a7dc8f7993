/*
 * capability — the "capability_service" service.
 *
 * Production used it to announce maintenance windows (datastore writes
 * disabled, and so on). Nothing on a development machine is ever scheduled
 * for maintenance, so every capability of every package is ENABLED. The
 * request is still decoded so a malformed one is reported, not ignored.
 */
#include <stdbool.h>

#include "capability.pb-c.h"

#include "apiserver/service.h"

static void is_enabled(void *state, const struct af_call *call, struct af_result *res)
{
    Af__Capability__IsEnabledRequest *req =
        af__capability__is_enabled_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        /* The service defines no error codes of its own. */
        af_result_rpc_error(res, AF_RPC_BAD_REQUEST,
                            "capability_service: cannot decode IsEnabledRequest");
        return;
    }
    af__capability__is_enabled_request__free_unpacked(req, NULL);

    Af__Capability__IsEnabledResponse out = AF__CAPABILITY__IS_ENABLED_RESPONSE__INIT;
    out.has_summary_status = true;
    out.summary_status = AF__CAPABILITY__IS_ENABLED_RESPONSE__SUMMARY_STATUS__ENABLED;
    af_result_pack(res, &out.base);
}

static const struct af_method capability_methods[] = {
    {.name = "IsEnabled", .fn = is_enabled},
    {.name = NULL},
};

const struct af_service af_service_capability = {
    .name = "capability_service",
    .methods = capability_methods,
};
