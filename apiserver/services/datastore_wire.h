/*
 * datastore_wire — proto2 groups for the datastore_v3 messages.
 *
 * The official datastore_v3 protocol nests many messages as proto2 groups
 * (start tag, fields, end tag); protoc-c cannot generate them and the
 * protobuf-c runtime rejects their wire types. proto/datastore_v3.proto
 * declares each group as a nested message instead, and these functions
 * translate between the two encodings, driven by the protobuf-c descriptors:
 *
 *   official bytes --af_ds_wire_unpack()--> protobuf-c message
 *   protobuf-c message --af_ds_wire_pack()--> official bytes
 *
 * A field is a group exactly when its type is a message nested in the
 * field's own message and the field is named like that type, ignoring case
 * (proto/datastore_v3.proto states the rule; it is how protoc names the
 * field of a group).
 *
 * The C client library (apiserver/client/datastore.c) compiles this same
 * code into itself with AF_DS_WIRE_API defined as `static`, since it links
 * nothing of the server; for that reason the .c allocates with its own
 * abort-on-failure wrapper instead of common/xalloc (the same policy).
 */
#ifndef AF_DATASTORE_WIRE_H
#define AF_DATASTORE_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* Linkage of the functions below: empty (external) in the server. */
#ifndef AF_DS_WIRE_API
#define AF_DS_WIRE_API
#endif

/* Nesting accepted in a request. The deepest legitimate datastore message
 * nests about 8 levels (Query > Filter > Property > PropertyValue >
 * ReferenceValue > PathElement); the bound keeps hostile input from
 * recursing deep. */
#define AF_DS_WIRE_MAX_DEPTH 32

/* True when field f of message d is a group on the wire. */
AF_DS_WIRE_API bool af_ds_wire_is_group(const ProtobufCMessageDescriptor *d,
                                        const ProtobufCFieldDescriptor *f);

/*
 * Rewrites official bytes (groups) into the length-delimited form protobuf-c
 * reads. Unknown groups are dropped (protobuf-c could not keep them anyway).
 * Returns a malloc'd buffer (caller frees) and its length, or NULL when the
 * input is not a valid encoding.
 */
AF_DS_WIRE_API uint8_t *af_ds_wire_from_groups(const ProtobufCMessageDescriptor *d,
                                               const uint8_t *in, size_t len, size_t *out_len);

/* The reverse: protobuf-c packed bytes to official bytes. Returns a malloc'd
 * buffer, or NULL if the input is malformed (never for protobuf-c output). */
AF_DS_WIRE_API uint8_t *af_ds_wire_to_groups(const ProtobufCMessageDescriptor *d, const uint8_t *in,
                                             size_t len, size_t *out_len);

/* Unpacks official bytes as message d. Returns a message to release with
 * protobuf_c_message_free_unpacked(m, NULL), or NULL when the bytes do not
 * decode (required fields missing included). */
AF_DS_WIRE_API ProtobufCMessage *af_ds_wire_unpack(const ProtobufCMessageDescriptor *d,
                                                   const uint8_t *in, size_t len);

/* Packs msg into official bytes: a malloc'd buffer the caller owns. */
AF_DS_WIRE_API uint8_t *af_ds_wire_pack(const ProtobufCMessage *msg, size_t *out_len);

#endif
