/*
 * urlfetch_gzip — the streaming gzip decoder behind urlfetch's transparent
 * decompression (docs/services.md, "urlfetch", "Compression").
 *
 * When the app sent no Accept-Encoding, the service asks for gzip itself
 * and, as the stock development server does, hands the app the content
 * decoded. The compressed bytes are never kept: each piece of the body goes
 * through zlib as it arrives and only the decoded content is stored, in a
 * buffer that never grows past the caller's limit (32 MiB). A "gzip bomb"
 * therefore costs at most that limit in memory, and at most the time zlib
 * takes to produce it: once the limit is reached, decoding stops and the
 * caller cuts the response (ContentWasTruncated) instead of reading on.
 *
 * RFC 1952 section 2.2: a gzip file is a series of members, each a header,
 * deflate data and a CRC-32 and length trailer (both checked by zlib). After
 * a member ends, zero bytes are skipped (padding, as gzip(1) and Python's
 * gzip module allow) and any other byte starts the next member; a byte that
 * cannot start one is an error, not ignored "trailing garbage".
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "apiserver/services/urlfetch.h"
#include "common/xalloc.h"

/* The first size of the output buffer; it doubles up to the limit. */
#define FIRST_CAP 16384

struct uf_gunzip {
    z_stream z;
    bool ready;     /* inflateInit2 done */
    bool in_member; /* a member has started and not yet ended */
    size_t members; /* members that ended */
    size_t offset;  /* compressed bytes taken, for messages */
    bool full;      /* the content reached the limit */
    char error[200];
};

/* zlib allocates through the one out-of-memory policy (common/xalloc.h). */
static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    return af_xcalloc(items, size);
}

static void z_free(voidpf opaque, voidpf p)
{
    free(p);
}

struct uf_gunzip *uf_gunzip_new(void)
{
    struct uf_gunzip *g = af_xcalloc(1, sizeof(*g));
    g->z.zalloc = z_alloc;
    g->z.zfree = z_free;
    return g;
}

void uf_gunzip_free(struct uf_gunzip *g)
{
    if (!g)
        return;
    if (g->ready)
        inflateEnd(&g->z);
    free(g);
}

const char *uf_gunzip_error(const struct uf_gunzip *g)
{
    return g->error[0] ? g->error : NULL;
}

static enum uf_gunzip_status bad(struct uf_gunzip *g, int rc)
{
    const char *why = g->z.msg ? g->z.msg : zError(rc);
    snprintf(g->error, sizeof(g->error), "%s, at compressed byte %zu%s", why, g->offset,
             g->members ? " (after the first gzip member)" : "");
    return UF_GUNZIP_BAD;
}

/* Starts the next member. */
static bool begin_member(struct uf_gunzip *g)
{
    if (!g->ready) {
        /* 16 + MAX_WBITS: the gzip wrapper only, with the largest window. */
        int rc = inflateInit2(&g->z, 16 + MAX_WBITS);
        if (rc != Z_OK) {
            snprintf(g->error, sizeof(g->error), "zlib cannot start a decoder: %s", zError(rc));
            return false;
        }
        g->ready = true;
    } else {
        inflateReset(&g->z);
    }
    g->in_member = true;
    return true;
}

/* Doubles the buffer up to max; false when it is already max long. */
static bool grow(uint8_t **buf, size_t *cap, size_t max)
{
    if (*cap >= max)
        return false;
    size_t c = *cap ? *cap * 2 : FIRST_CAP;
    if (c > max)
        c = max;
    *buf = af_xrealloc(*buf, c);
    *cap = c;
    return true;
}

/* One inflate step over [*p, end) into [out, out + room); advances *p and
 * returns zlib's code and, in *made, how many bytes came out. */
static int step(struct uf_gunzip *g, const uint8_t **p, const uint8_t *end, uint8_t *out,
                size_t room, size_t *made)
{
    size_t avail = (size_t)(end - *p);
    g->z.next_in = (Bytef *)*p;
    g->z.avail_in = avail > UINT_MAX ? UINT_MAX : (uInt)avail;
    g->z.next_out = out;
    g->z.avail_out = room > UINT_MAX ? UINT_MAX : (uInt)room;
    int rc = inflate(&g->z, Z_NO_FLUSH);
    size_t taken = (size_t)(g->z.next_in - *p);
    *made = (size_t)(g->z.next_out - out);
    *p += taken;
    g->offset += taken;
    if (rc == Z_STREAM_END) {
        g->in_member = false;
        g->members++;
    }
    return rc;
}

enum uf_gunzip_status uf_gunzip_feed(struct uf_gunzip *g, const void *in, size_t n, uint8_t **buf,
                                     size_t *len, size_t *cap, size_t max)
{
    if (g->error[0])
        return UF_GUNZIP_BAD;
    if (g->full)
        return UF_GUNZIP_FULL;
    const uint8_t *p = in, *end = p + n;
    while (p < end) {
        if (!g->in_member) {
            if (g->members > 0 && *p == 0) {
                p++;
                g->offset++;
                continue;
            }
            if (!begin_member(g))
                return UF_GUNZIP_BAD;
        }
        const uint8_t *before = p;
        size_t made;
        int rc;
        if (*len == *cap && !grow(buf, cap, max)) {
            /* The content is max bytes long: one byte more, into a scratch
             * byte, means it would exceed the limit. */
            uint8_t probe;
            rc = step(g, &p, end, &probe, 1, &made);
            if (made) {
                g->full = true;
                return UF_GUNZIP_FULL;
            }
        } else {
            rc = step(g, &p, end, *buf + *len, *cap - *len, &made);
            *len += made;
        }
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
            return bad(g, rc);
        /* zlib promises progress while it has both input and room (there
         * is always some here); should it ever make none, stop rather than
         * spin on the I/O thread. */
        if (rc != Z_STREAM_END && p == before && made == 0) {
            snprintf(g->error, sizeof(g->error), "the decoder stopped at compressed byte %zu",
                     g->offset);
            return UF_GUNZIP_BAD;
        }
    }
    return UF_GUNZIP_MORE;
}

int uf_gunzip_end(struct uf_gunzip *g)
{
    if (g->error[0])
        return -1;
    if (g->in_member) {
        snprintf(g->error, sizeof(g->error),
                 "the content ends in the middle of a gzip member, after %zu compressed bytes "
                 "(cut short)",
                 g->offset);
        return -1;
    }
    return 0;
}
