/*
 * pbwire — the protobuf wire-format primitives shared by the services that
 * encode by hand (memcache, datastore_wire, urlfetch_wire): varints and
 * field tags, read from a byte range and written into a buffer.
 *
 * Header-only (static inline) because the C client library compiles
 * datastore_wire.c into itself and links nothing of the server (see
 * datastore_wire.h). Nothing here allocates: a reader borrows the bytes it
 * walks, and a writer writes into memory the caller owns and has sized with
 * af_pb_varint_size().
 */
#ifndef AF_PBWIRE_H
#define AF_PBWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Wire types (protobuf encoding spec). */
enum af_pb_wire_type {
    AF_PB_VARINT = 0,
    AF_PB_FIXED64 = 1,
    AF_PB_LEN = 2,
    AF_PB_SGROUP = 3,
    AF_PB_EGROUP = 4,
    AF_PB_FIXED32 = 5,
};

/* A cursor over borrowed bytes [p, end): the caller owns them and keeps
 * them alive while the reader is in use. Reads advance p. */
struct af_pb_reader {
    const uint8_t *p, *end;
};

/*
 * Reads one base-128 varint into *out. Returns false, *out untouched, when
 * the bytes end before the varint does or when it runs longer than the 10
 * bytes a 64-bit value can take (protobuf encoding spec, "Base 128
 * Varints"); p has then moved past what was read.
 */
static inline bool af_pb_read_varint(struct af_pb_reader *r, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift <= 63; shift += 7) {
        if (r->p == r->end)
            return false;
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return true;
        }
    }
    return false; /* more than 10 bytes */
}

/*
 * Reads one field tag: the field number into *num and the wire type (the
 * low three bits, not checked here) into *wt. Returns false for a bad
 * varint and for a field number outside 1 .. 2^29-1, the range the
 * protobuf encoding spec allows.
 */
static inline bool af_pb_read_tag(struct af_pb_reader *r, uint32_t *num, unsigned *wt)
{
    uint64_t v;
    if (!af_pb_read_varint(r, &v))
        return false;
    if ((v >> 3) == 0 || (v >> 3) > 0x1fffffff)
        return false;
    *num = (uint32_t)(v >> 3);
    *wt = (unsigned)(v & 7);
    return true;
}

/*
 * Reads past the value of field num whose tag (wire type wt) was just read;
 * for a group, up to and including its matching end tag. Groups may nest
 * depth_left deep at most (0: no group at all), so hostile input cannot
 * recurse without bound. Returns false for truncated or malformed bytes, an
 * unknown wire type, a stray end tag, or nesting past the bound.
 */
static inline bool af_pb_skip(struct af_pb_reader *r, uint32_t num, unsigned wt, int depth_left)
{
    uint64_t v;
    switch (wt) {
    case AF_PB_VARINT:
        return af_pb_read_varint(r, &v);
    case AF_PB_FIXED64:
    case AF_PB_FIXED32: {
        size_t n = wt == AF_PB_FIXED64 ? 8 : 4;
        if ((size_t)(r->end - r->p) < n)
            return false;
        r->p += n;
        return true;
    }
    case AF_PB_LEN:
        if (!af_pb_read_varint(r, &v) || v > (uint64_t)(r->end - r->p))
            return false;
        r->p += v;
        return true;
    case AF_PB_SGROUP:
        if (depth_left <= 0)
            return false;
        for (;;) {
            uint32_t inner;
            unsigned iwt;
            if (!af_pb_read_tag(r, &inner, &iwt))
                return false;
            if (iwt == AF_PB_EGROUP)
                return inner == num;
            if (!af_pb_skip(r, inner, iwt, depth_left - 1))
                return false;
        }
    default:
        return false;
    }
}

/* The number of bytes af_pb_put_varint() writes for v: 1 to 10. */
static inline size_t af_pb_varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Writes v as a varint at p, which has room for af_pb_varint_size(v)
 * bytes; returns the byte after the last one written. */
static inline uint8_t *af_pb_put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Writes the tag of field num with wire type wt at p (a varint, sized by
 * af_pb_varint_size((uint64_t)num << 3)); returns the byte after it. */
static inline uint8_t *af_pb_put_tag(uint8_t *p, uint32_t num, unsigned wt)
{
    return af_pb_put_varint(p, (uint64_t)num << 3 | (uint64_t)wt);
}

#endif
