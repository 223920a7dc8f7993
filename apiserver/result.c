/* Helpers that service handlers use to fill a struct af_result. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <protobuf-c/protobuf-c.h>

#include "apiserver/service.h"
#include "common/xalloc.h"

void af_result_ok(struct af_result *res, uint8_t *response, size_t len)
{
    res->kind = AF_RESULT_OK;
    res->code = 0;
    res->detail = NULL;
    res->response = response;
    res->response_len = len;
}

static void set_error(struct af_result *res, enum af_result_kind kind, int code, const char *fmt,
                      va_list ap)
{
    res->kind = kind;
    res->code = code;
    res->response = NULL;
    res->response_len = 0;
    if (vasprintf(&res->detail, fmt, ap) < 0)
        res->detail = NULL;
}

void af_result_app_error(struct af_result *res, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_error(res, AF_RESULT_APP_ERROR, code, fmt, ap);
    va_end(ap);
}

void af_result_rpc_error(struct af_result *res, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_error(res, AF_RESULT_RPC_ERROR, code, fmt, ap);
    va_end(ap);
}

void af_result_pack(struct af_result *res, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = af_xmalloc(len);
    protobuf_c_message_pack(msg, buf);
    af_result_ok(res, buf, len);
}

void af_result_defer(struct af_result *res, const struct af_defer_ops *ops, void *arg)
{
    res->kind = AF_RESULT_DEFER;
    res->code = 0;
    res->detail = NULL;
    res->response = NULL;
    res->response_len = 0;
    res->defer_ops = ops;
    res->defer_arg = arg;
}
