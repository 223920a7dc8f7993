/* The remote_api envelope: decoding requests, encoding responses. */
#include <stdalign.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <protobuf-c/protobuf-c.h>

#include "apiserver/envelope.h"
#include "common/xalloc.h"

struct af_envelope_arena_block {
    struct af_envelope_arena_block *next;
    max_align_t data[];
};

static void *arena_alloc(void *data, size_t size)
{
    struct af_envelope_arena *a = data;
    const size_t align = alignof(max_align_t);
    size = (size + align - 1) & ~(align - 1);
    if (size <= sizeof(a->_buf) - a->_used) {
        void *p = a->_buf + a->_used;
        a->_used += size;
        return p;
    }
    /* Bounded by the caller: a Request is at most AF_API_MAX_MESSAGE, and
     * protobuf-c allocates no more than a small multiple of its size. */
    struct af_envelope_arena_block *b = af_xmalloc(sizeof(*b) + size);
    b->next = a->_big;
    a->_big = b;
    return b->data;
}

static void arena_free(void *data, void *p)
{
    /* Everything goes at once, in af_envelope_arena_release(). */
}

Af__RemoteApi__Request *af_envelope_request_decode(struct af_envelope_arena *arena,
                                                   const uint8_t *buf, size_t len)
{
    /* protobuf-c checks every length against buf and rejects a message with
     * a required field missing, so whatever comes back is safe to read. */
    ProtobufCAllocator alloc = {.alloc = arena_alloc, .free = arena_free, .allocator_data = arena};
    return af__remote_api__request__unpack(&alloc, len, buf);
}

void af_envelope_arena_release(struct af_envelope_arena *arena)
{
    while (arena->_big) {
        struct af_envelope_arena_block *b = arena->_big;
        arena->_big = b->next;
        free(b);
    }
    arena->_used = 0;
}

void af_envelope_call_from_request(const Af__RemoteApi__Request *req, struct af_call *call)
{
    call->service = req->service_name;
    call->method = req->method;
    /* protobuf-c leaves an empty field's pointer NULL; services do pointer
     * arithmetic on it, so an empty request is an empty string instead. */
    call->request = req->request.data ? req->request.data : (const uint8_t *)"";
    call->request_len = req->request.len;
    call->request_id = req->request_id ? req->request_id : "";
    call->deadline_ns = 0; /* the job's, set by the backend */
}

static size_t pack_response(const Af__RemoteApi__Response *resp, uint8_t **out)
{
    size_t len = af__remote_api__response__get_packed_size(resp);
    /* +1 so an empty message still yields a pointer the caller can free. */
    *out = af_xmalloc(len + 1);
    af__remote_api__response__pack(resp, *out);
    return len;
}

size_t af_envelope_encode_rpc_error(int code, const char *detail, uint8_t **out)
{
    Af__RemoteApi__Response resp = AF__REMOTE_API__RESPONSE__INIT;
    Af__RemoteApi__RpcError err = AF__REMOTE_API__RPC_ERROR__INIT;
    err.code = code;
    err.detail = (char *)detail;
    resp.rpc_error = &err;
    return pack_response(&resp, out);
}

size_t af_envelope_response_init(struct af_envelope_response *r, const struct af_result *res)
{
    r->_resp = (Af__RemoteApi__Response)AF__REMOTE_API__RESPONSE__INIT;
    r->_app = (Af__RemoteApi__ApplicationError)AF__REMOTE_API__APPLICATION_ERROR__INIT;
    r->_rpc = (Af__RemoteApi__RpcError)AF__REMOTE_API__RPC_ERROR__INIT;

    switch (res->kind) {
    case AF_RESULT_OK:
        if (res->response_len > AF_API_MAX_MESSAGE - 16) {
            snprintf(r->_msg, sizeof(r->_msg), "response of %zu bytes exceeds the %u byte limit",
                     res->response_len, AF_API_MAX_MESSAGE);
            r->_rpc.code = AF_RPC_RESPONSE_TOO_LARGE;
            r->_rpc.detail = r->_msg;
            r->_resp.rpc_error = &r->_rpc;
            break;
        }
        /* Always present, even empty: a client decoding an absent field
         * and an empty one gets the same empty message. */
        r->_resp.has_response = 1;
        r->_resp.response.data = res->response;
        r->_resp.response.len = res->response ? res->response_len : 0;
        break;
    case AF_RESULT_APP_ERROR:
        r->_app.code = res->code;
        /* detail is a required field of ApplicationError. */
        r->_app.detail = res->detail ? res->detail : "";
        r->_resp.application_error = &r->_app;
        break;
    case AF_RESULT_RPC_ERROR:
    default:
        r->_rpc.code = res->kind == AF_RESULT_RPC_ERROR ? res->code : AF_RPC_UNKNOWN;
        r->_rpc.detail = res->detail;
        r->_resp.rpc_error = &r->_rpc;
        break;
    }
    return af__remote_api__response__get_packed_size(&r->_resp);
}

void af_envelope_response_pack(const struct af_envelope_response *r, uint8_t *out)
{
    af__remote_api__response__pack(&r->_resp, out);
}

size_t af_envelope_encode_result(const struct af_result *res, uint8_t **out)
{
    struct af_envelope_response r;
    size_t len = af_envelope_response_init(&r, res);
    /* +1 so an empty message still yields a pointer the caller can free. */
    *out = af_xmalloc(len + 1);
    af_envelope_response_pack(&r, *out);
    return len;
}

static const char *const rpc_error_names[] = {
    [AF_RPC_UNKNOWN] = "UNKNOWN",
    [AF_RPC_CALL_NOT_FOUND] = "CALL_NOT_FOUND",
    [AF_RPC_PARSE_ERROR] = "PARSE_ERROR",
    [AF_RPC_SECURITY_VIOLATION] = "SECURITY_VIOLATION",
    [AF_RPC_OVER_QUOTA] = "OVER_QUOTA",
    [AF_RPC_REQUEST_TOO_LARGE] = "REQUEST_TOO_LARGE",
    [AF_RPC_CAPABILITY_DISABLED] = "CAPABILITY_DISABLED",
    [AF_RPC_FEATURE_DISABLED] = "FEATURE_DISABLED",
    [AF_RPC_BAD_REQUEST] = "BAD_REQUEST",
    [AF_RPC_RESPONSE_TOO_LARGE] = "RESPONSE_TOO_LARGE",
    [AF_RPC_CANCELLED] = "CANCELLED",
    [AF_RPC_REPLAY_ERROR] = "REPLAY_ERROR",
    [AF_RPC_DEADLINE_EXCEEDED] = "DEADLINE_EXCEEDED",
};

const char *af_rpc_error_name(int code)
{
    if (code < 0 || (size_t)code >= sizeof(rpc_error_names) / sizeof(rpc_error_names[0]))
        return "UNKNOWN";
    return rpc_error_names[code];
}
