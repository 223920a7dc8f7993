/* The remote_api envelope: decoding requests, encoding responses. */
#include <stdio.h>
#include <stdlib.h>

#include <protobuf-c/protobuf-c.h>

#include "apiserver/envelope.h"
#include "common/xalloc.h"

Af__RemoteApi__Request *af_envelope_request_decode(const uint8_t *buf, size_t len)
{
    /* protobuf-c checks every length against buf and rejects a message with
     * a required field missing, so whatever comes back is safe to read. The
     * default allocator (malloc) is used because the message is freed on the
     * other thread; malloc is thread-safe. */
    return af__remote_api__request__unpack(NULL, len, buf);
}

void af_envelope_request_free(Af__RemoteApi__Request *req)
{
    if (req)
        af__remote_api__request__free_unpacked(req, NULL);
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

size_t af_envelope_encode_result(const struct af_result *res, uint8_t **out)
{
    Af__RemoteApi__Response resp = AF__REMOTE_API__RESPONSE__INIT;
    Af__RemoteApi__ApplicationError app = AF__REMOTE_API__APPLICATION_ERROR__INIT;
    Af__RemoteApi__RpcError rpc = AF__REMOTE_API__RPC_ERROR__INIT;

    switch (res->kind) {
    case AF_RESULT_OK:
        if (res->response_len > AF_API_MAX_MESSAGE - 16) {
            char msg[96];
            snprintf(msg, sizeof(msg), "response of %zu bytes exceeds the %u byte limit",
                     res->response_len, AF_API_MAX_MESSAGE);
            return af_envelope_encode_rpc_error(AF_RPC_RESPONSE_TOO_LARGE, msg, out);
        }
        /* Always present, even empty: a client decoding an absent field
         * and an empty one gets the same empty message. */
        resp.has_response = 1;
        resp.response.data = res->response;
        resp.response.len = res->response ? res->response_len : 0;
        break;
    case AF_RESULT_APP_ERROR:
        app.code = res->code;
        /* detail is a required field of ApplicationError. */
        app.detail = res->detail ? res->detail : "";
        resp.application_error = &app;
        break;
    case AF_RESULT_RPC_ERROR:
    default:
        rpc.code = res->kind == AF_RESULT_RPC_ERROR ? res->code : AF_RPC_UNKNOWN;
        rpc.detail = res->detail;
        resp.rpc_error = &rpc;
        break;
    }
    return pack_response(&resp, out);
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
