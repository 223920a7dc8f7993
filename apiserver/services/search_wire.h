/*
 * search_wire — between the search service's wire bytes, where two nested
 * messages are proto2 groups (FieldValue.Geo, FieldSpec.Expression), and the
 * bytes protobuf-c reads and writes, where proto/search.proto declares them
 * as ordinary length-delimited messages (protoc-c cannot do groups).
 *
 * The rewrite knows the path from each top-level message to its groups (a
 * small schema table) and copies every other field byte for byte, so the
 * rest of the message is neither decoded nor re-encoded here.
 */
#ifndef AF_SEARCH_WIRE_H
#define AF_SEARCH_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The top-level messages whose bytes may hold a group. */
enum af_sw_msg {
    AF_SW_INDEX_DOCUMENT_REQUEST,
    AF_SW_SEARCH_REQUEST,
    AF_SW_LIST_DOCUMENTS_RESPONSE,
    AF_SW_SEARCH_RESPONSE,
    AF_SW_DOCUMENT, /* one stored Document */
};

/*
 * Rewrites the len bytes at in, a message of type `msg`: with to_groups
 * false, each group becomes a length-delimited field (for protobuf-c to
 * unpack); with to_groups true, the reverse (for the official clients).
 * Returns true with a malloc'd buffer in *out (the caller frees it) and its
 * length in *out_len, or false when the bytes are malformed (truncated, a
 * group without its end tag, a stray end tag).
 */
bool af_sw_rewrite(enum af_sw_msg msg, const uint8_t *in, size_t len, bool to_groups,
                   uint8_t **out, size_t *out_len);

#endif
