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

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>

#include "apiserver/service.h"
#include "remote_api.pb-c.h"

/* The largest envelope accepted or produced, either way, on both transports:
 * 32 MiB, the limit of the production API (the official Go library keeps its
 * log flushes under it for that reason). */
#define AF_API_MAX_MESSAGE (32u << 20)

/*
 * Memory for one decoded Request: a block inside the struct (enough for a
 * typical call: the message, service and method names, a small request and
 * a request id), then malloc'd blocks for what does not fit. Decoding into
 * it costs no malloc in the common case, and releasing it is one check.
 * Zeroed is empty and ready.
 */
#define AF_ENVELOPE_ARENA_BYTES 384
struct af_envelope_arena {
    size_t _used;
    struct af_envelope_arena_block *_big; /* owned list, freed by _release */
    _Alignas(max_align_t) uint8_t _buf[AF_ENVELOPE_ARENA_BYTES];
};

/*
 * Decodes an encoded remote_api.Request into arena (which must be empty).
 * Returns the message, valid until af_envelope_arena_release(arena), or NULL
 * when buf is not a valid Request (garbage, truncated, or a required field
 * missing): the caller answers PARSE_ERROR. buf is borrowed. The arena is
 * not tied to a thread: it may be released on another one.
 */
Af__RemoteApi__Request *af_envelope_request_decode(struct af_envelope_arena *arena,
                                                   const uint8_t *buf, size_t len);
/* Frees what arena holds beyond its own block and empties it. */
void af_envelope_arena_release(struct af_envelope_arena *arena);

/* Fills call with pointers borrowed from req (valid while req lives). */
void af_envelope_call_from_request(const Af__RemoteApi__Request *req, struct af_call *call);

/*
 * The Response for what a handler produced, ready to pack: af_envelope_
 * response_init() fills r with pointers borrowed from res (which must
 * outlive r; r must not be moved) and returns the packed size; a response
 * larger than AF_API_MAX_MESSAGE becomes an rpc_error RESPONSE_TOO_LARGE.
 * af_envelope_response_pack() writes exactly that many bytes to out. This
 * lets the listener pack a reply straight into a connection's output.
 */
struct af_envelope_response {
    Af__RemoteApi__Response _resp;
    Af__RemoteApi__ApplicationError _app;
    Af__RemoteApi__RpcError _rpc;
    char _msg[96];
};
size_t af_envelope_response_init(struct af_envelope_response *r, const struct af_result *res);
void af_envelope_response_pack(const struct af_envelope_response *r, uint8_t *out);

/*
 * Encodes the Response for what a handler produced, as above. res is
 * borrowed (its buffers are not freed here). Returns a fresh buffer in *out
 * (owned by the caller, free()) and its length.
 */
size_t af_envelope_encode_result(const struct af_result *res, uint8_t **out);

/* Encodes a Response carrying rpc_error {code, detail}. detail is borrowed
 * and may be NULL. Returns a fresh buffer in *out (owned by the caller). */
size_t af_envelope_encode_rpc_error(int code, const char *detail, uint8_t **out);

/* The name of an RpcError code, e.g. "CALL_NOT_FOUND"; "UNKNOWN" when out of
 * range. Static storage. */
const char *af_rpc_error_name(int code);

#endif
