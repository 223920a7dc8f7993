/*
 * Helpers for the unit tests of one service: a call goes through the
 * service's own method table with a packed request, as the backend makes it.
 * Include after cmocka.h and the service's .c file.
 */
#ifndef AF_TEST_SVC_CALL_H
#define AF_TEST_SVC_CALL_H

#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "apiserver/service.h"

/* Runs `method` of svc on an encoded request; the method must exist. */
static inline struct af_result svc_call_raw(const struct af_service *svc, void *state,
                                            const char *method, const char *request_id,
                                            const uint8_t *req, size_t len)
{
    struct af_result res = {.kind = -1};
    struct af_call c = {.service = svc->name,
                        .method = method,
                        .request = req,
                        .request_len = len,
                        .request_id = request_id};
    const struct af_method *m = svc->methods;
    while (m->name && strcmp(m->name, method) != 0)
        m++;
    assert_non_null(m->name);
    m->fn(state, &c, &res);
    return res;
}

/* Packs msg and runs `method` of svc on it. */
static inline struct af_result svc_call(const struct af_service *svc, void *state,
                                        const char *method, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    protobuf_c_message_pack(msg, buf);
    struct af_result res = svc_call_raw(svc, state, method, "req-1", buf, len);
    free(buf);
    return res;
}

static inline void svc_result_free(struct af_result *res)
{
    free(res->detail);
    free(res->response);
}

#endif
