/*
 * envelope — the remote_api.Request / remote_api.Response envelope
 * (proto/remote_api.proto, docs/api.md "Envelope").
 *
 * Pure functions with no state, called from the listener thread (decoding
 * requests, answering errors that never reach the backend) and from the
 * backend thread (encoding what a handler produced). Buffers are allocated
 * with af_xmalloc and owned by the caller.
 */
#ifndef AF_ENVELOPE_H
#define AF_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "apiserver/service.h"
#include "remote_api.pb-c.h"

/* The largest envelope accepted or produced, either way, on both transports:
 * 32 MiB, the limit of the production API (the official Go library keeps its
 * log flushes under it for that reason). */
#define AF_API_MAX_MESSAGE (32u << 20)

/*
 * Decodes an encoded remote_api.Request. Returns the message, owned by the
 * caller and released with af_envelope_request_free(), or NULL when buf is
 * not a valid Request (garbage, truncated, or a required field missing):
 * the caller answers PARSE_ERROR. buf is borrowed.
 */
Af__RemoteApi__Request *af_envelope_request_decode(const uint8_t *buf, size_t len);
void af_envelope_request_free(Af__RemoteApi__Request *req);

/* Fills call with pointers borrowed from req (valid while req lives). */
void af_envelope_call_from_request(const Af__RemoteApi__Request *req, struct af_call *call);

/*
 * Encodes the Response for what a handler produced. res is borrowed (its
 * buffers are not freed here). Returns a fresh buffer in *out (owned by the
 * caller, free()) and its length. A response larger than AF_API_MAX_MESSAGE
 * is replaced by an rpc_error RESPONSE_TOO_LARGE.
 */
size_t af_envelope_encode_result(const struct af_result *res, uint8_t **out);

/* Encodes a Response carrying rpc_error {code, detail}. detail is borrowed
 * and may be NULL. Returns a fresh buffer in *out (owned by the caller). */
size_t af_envelope_encode_rpc_error(int code, const char *detail, uint8_t **out);

/* The name of an RpcError code, e.g. "CALL_NOT_FOUND"; "UNKNOWN" when out of
 * range. Static storage. */
const char *af_rpc_error_name(int code);

#endif
