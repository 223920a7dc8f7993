#include "apiserver/peer.h"

#include <stdlib.h>
#include <string.h>


/* Per thread: the backend thread binds its own table; a test's thread its
 * own. No other thread ever runs a service. */
static __thread const struct af_service *const *peer_services;
static __thread void *const *peer_states;
static __thread size_t peer_n;

void af_peer_bind(const struct af_service *const *services, void *const *states, size_t n)
{
    peer_services = services;
    peer_states = states;
    peer_n = n;
}

void af_peer_call(const char *service, const char *method, const uint8_t *req, size_t len,
                  struct af_result *res)
{
    memset(res, 0, sizeof(*res));
    for (size_t i = 0; i < peer_n; i++) {
        const struct af_service *svc = peer_services[i];
        if (!svc || strcmp(svc->name, service) != 0)
            continue;
        for (const struct af_method *m = svc->methods; m && m->name; m++) {
            if (strcmp(m->name, method) != 0)
                continue;
            struct af_call call = {
                .service = service,
                .method = method,
                .request = req,
                .request_len = len,
                .request_id = "",
                .deadline_ns = 0,
            };
            m->fn(peer_states[i], &call, res);
            if (res->kind == AF_RESULT_DEFER) {
                if (res->defer_ops && res->defer_ops->cancel)
                    res->defer_ops->cancel(res->defer_arg);
                af_result_rpc_error(res, AF_RPC_FEATURE_DISABLED,
                                    "%s.%s deferred its work: not callable as a peer", service,
                                    method);
            }
            return;
        }
        break;
    }
    af_result_rpc_error(res, AF_RPC_CALL_NOT_FOUND, "no peer method %s.%s", service, method);
}
