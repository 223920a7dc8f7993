/*
 * datastore_wire — translation between proto2 groups and length-delimited
 * nested messages (datastore_wire.h says why).
 *
 * Both directions walk the bytes field by field with the message's
 * descriptor in hand: a field whose type is a message is rewritten
 * recursively (a group inside may need translating at any depth); every
 * other field is copied verbatim. The output of a nested message is built in
 * its own buffer first, because its length prefix is only known afterwards.
 * The work is linear in the input size times the nesting depth, which is
 * bounded by AF_DS_WIRE_MAX_DEPTH.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "apiserver/services/datastore_wire.h"
#include "apiserver/services/pbwire.h"

/* Out of memory aborts, appfront's one policy (common/xalloc.h), written
 * out here because the client library shares this file (see the header). */
static void *wire_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        abort();
    return q;
}


struct obuf {
    uint8_t *p;
    size_t len, cap;
};

static void ob_reserve(struct obuf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < n)
        cap *= 2;
    b->p = wire_xrealloc(b->p, cap);
    b->cap = cap;
}

static void ob_put(struct obuf *b, const void *data, size_t n)
{
    ob_reserve(b, n);
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void ob_varint(struct obuf *b, uint64_t v)
{
    uint8_t tmp[10];
    ob_put(b, tmp, (size_t)(af_pb_put_varint(tmp, v) - tmp));
}

/* Reads past a group body up to and including its end tag; groups may
 * nest until depth passes AF_DS_WIRE_MAX_DEPTH. */
static bool rd_skip_group(struct af_pb_reader *r, uint32_t num, int depth)
{
    return af_pb_skip(r, num, AF_PB_SGROUP, AF_DS_WIRE_MAX_DEPTH - depth + 1);
}

AF_DS_WIRE_API bool af_ds_wire_is_group(const ProtobufCMessageDescriptor *d,
                                        const ProtobufCFieldDescriptor *f)
{
    if (f->type != PROTOBUF_C_TYPE_MESSAGE)
        return false;
    const ProtobufCMessageDescriptor *sub = f->descriptor;
    size_t n = strlen(d->name);
    /* Nested in d: "pkg.Outer.Inner" starts with "pkg.Outer." */
    return strncmp(sub->name, d->name, n) == 0 && sub->name[n] == '.' &&
           strchr(sub->name + n + 1, '.') == NULL && strcasecmp(sub->short_name, f->name) == 0;
}

/* Direction of a rewrite. */
enum dir {
    FROM_GROUPS,
    TO_GROUPS,
};

static bool rewrite(const ProtobufCMessageDescriptor *d, struct af_pb_reader *r, uint32_t end_group,
                    enum dir dir, int depth, struct obuf *out);

/* Rewrites one nested message body and appends it to out as field num. */
static bool emit_nested(const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f,
                        struct af_pb_reader *body, uint32_t end_group, enum dir dir, int depth,
                        struct obuf *out)
{
    struct obuf sub = {0};
    if (!rewrite(f->descriptor, body, end_group, dir, depth + 1, &sub)) {
        free(sub.p);
        return false;
    }
    if (dir == TO_GROUPS && af_ds_wire_is_group(d, f)) {
        ob_varint(out, ((uint64_t)f->id << 3) | AF_PB_SGROUP);
        ob_put(out, sub.p, sub.len);
        ob_varint(out, ((uint64_t)f->id << 3) | AF_PB_EGROUP);
    } else {
        ob_varint(out, ((uint64_t)f->id << 3) | AF_PB_LEN);
        ob_varint(out, sub.len);
        ob_put(out, sub.p, sub.len);
    }
    free(sub.p);
    return true;
}

/*
 * Rewrites the fields of one message of type d from r into out. end_group is
 * the field number of the group being read (its end tag stops the loop), or
 * 0 for a length-delimited body (which ends with r).
 */
static bool rewrite(const ProtobufCMessageDescriptor *d, struct af_pb_reader *r, uint32_t end_group,
                    enum dir dir, int depth, struct obuf *out)
{
    if (depth > AF_DS_WIRE_MAX_DEPTH)
        return false;
    for (;;) {
        if (r->p == r->end)
            return end_group == 0;
        const uint8_t *field_start = r->p;
        uint32_t num;
        unsigned wt;
        if (!af_pb_read_tag(r, &num, &wt))
            return false;
        if (wt == AF_PB_EGROUP)
            return end_group != 0 && num == end_group;
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, num);
        bool is_msg = f && f->type == PROTOBUF_C_TYPE_MESSAGE;
        if (wt == AF_PB_SGROUP) {
            if (is_msg && dir == FROM_GROUPS) {
                if (!emit_nested(d, f, r, num, dir, depth, out))
                    return false;
            } else if (!rd_skip_group(r, num, depth + 1)) {
                return false; /* unknown groups are dropped */
            }
            continue;
        }
        if (wt == AF_PB_LEN && is_msg) {
            uint64_t n;
            if (!af_pb_read_varint(r, &n) || n > (uint64_t)(r->end - r->p))
                return false;
            struct af_pb_reader body = {r->p, r->p + n};
            r->p += n;
            if (!emit_nested(d, f, &body, 0, dir, depth, out))
                return false;
            continue;
        }
        if (!af_pb_skip(r, 0, wt, 0))
            return false;
        ob_put(out, field_start, (size_t)(r->p - field_start));
    }
}

static uint8_t *rewrite_all(const ProtobufCMessageDescriptor *d, const uint8_t *in, size_t len,
                            enum dir dir, size_t *out_len)
{
    struct af_pb_reader r = {in, in + len};
    struct obuf out = {0};
    if (!rewrite(d, &r, 0, dir, 0, &out)) {
        free(out.p);
        return NULL;
    }
    if (!out.p)
        out.p = wire_xrealloc(NULL, 1); /* an empty message is a valid, empty buffer */
    *out_len = out.len;
    return out.p;
}

AF_DS_WIRE_API uint8_t *af_ds_wire_from_groups(const ProtobufCMessageDescriptor *d,
                                               const uint8_t *in, size_t len, size_t *out_len)
{
    return rewrite_all(d, in, len, FROM_GROUPS, out_len);
}

AF_DS_WIRE_API uint8_t *af_ds_wire_to_groups(const ProtobufCMessageDescriptor *d, const uint8_t *in,
                                             size_t len, size_t *out_len)
{
    return rewrite_all(d, in, len, TO_GROUPS, out_len);
}

AF_DS_WIRE_API ProtobufCMessage *af_ds_wire_unpack(const ProtobufCMessageDescriptor *d,
                                                   const uint8_t *in, size_t len)
{
    size_t n;
    uint8_t *flat = af_ds_wire_from_groups(d, in, len, &n);
    if (!flat)
        return NULL;
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, n, flat);
    free(flat);
    return m;
}

AF_DS_WIRE_API uint8_t *af_ds_wire_pack(const ProtobufCMessage *msg, size_t *out_len)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *flat = wire_xrealloc(NULL, n);
    protobuf_c_message_pack(msg, flat);
    uint8_t *out = af_ds_wire_to_groups(msg->descriptor, flat, n, out_len);
    free(flat);
    return out;
}
