#include "proxy/multipart.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/xalloc.h"

/* RFC 2046 §5.1.1 bchars: DIGIT / ALPHA / "'()+_,-./:=?" and space, not
 * last. */
static bool bchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           strchr("'()+_,-./:=? ", c) != NULL;
}

bool af_mp_boundary_ok(const char *b, size_t n)
{
    if (n == 0 || n > AF_MP_MAX_BOUNDARY || b[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!b[i] || !bchar((unsigned char)b[i]))
            return false;
    return true;
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

int af_mp_param(const char *value, const char *param, char *out, size_t outlen)
{
    size_t plen = strlen(param);
    const char *p = strchr(value, ';');
    while (p) {
        p = skip_ws(p + 1);
        const char *name = p;
        while (*p && *p != '=' && *p != ';' && *p != ' ' && *p != '\t')
            p++;
        size_t nlen = (size_t)(p - name);
        p = skip_ws(p);
        if (*p != '=') {
            /* A parameter without a value: skip it. */
            p = strchr(p, ';');
            continue;
        }
        p = skip_ws(p + 1);
        size_t o = 0;
        bool want = nlen == plen && strncasecmp(name, param, plen) == 0;
        if (*p == '"') {
            p++;
            for (; *p && *p != '"'; p++) {
                char c = *p;
                if (c == '\\' && p[1])
                    c = *++p;
                if (want) {
                    if (o + 1 >= outlen)
                        return -1;
                    out[o++] = c;
                }
            }
            if (*p != '"')
                return -1; /* unterminated quoted-string */
            p++;
        } else {
            for (; *p && *p != ';' && *p != ' ' && *p != '\t'; p++) {
                if (want) {
                    if (o + 1 >= outlen)
                        return -1;
                    out[o++] = *p;
                }
            }
        }
        if (want) {
            out[o] = '\0';
            return 1;
        }
        p = strchr(p, ';');
    }
    return 0;
}

int af_mp_boundary(const char *content_type, char *out, const char **why)
{
    const char *t = skip_ws(content_type);
    static const char type[] = "multipart/form-data";
    size_t tl = sizeof(type) - 1;
    if (strncasecmp(t, type, tl) != 0 || (t[tl] && t[tl] != ';' && t[tl] != ' ' && t[tl] != '\t')) {
        *why = "the request is not multipart/form-data";
        return -1;
    }
    int r = af_mp_param(t, "boundary", out, AF_MP_MAX_BOUNDARY + 1);
    if (r <= 0) {
        *why = r == 0 ? "Content-Type has no boundary parameter"
                      : "the boundary parameter is malformed or longer than 70 characters";
        return -1;
    }
    size_t n = strlen(out);
    if (!af_mp_boundary_ok(out, n)) {
        *why = "the boundary has characters RFC 2046 does not allow";
        return -1;
    }
    return (int)n;
}

void af_mp_init(struct af_mp *m, const char *boundary, size_t len)
{
    memset(m, 0, sizeof(*m));
    memcpy(m->delim, "\r\n--", 4);
    memcpy(m->delim + 4, boundary, len);
    m->delim_len = len + 4;
    /* The first delimiter may open the body without a CRLF before it: the
     * parser starts as if that CRLF had been read. */
    m->match = 2;
    m->state = AF_MP_PREAMBLE;
}

void af_mp_release(struct af_mp *m)
{
    free(m->hbuf);
    m->hbuf = NULL;
}

bool af_mp_done(const struct af_mp *m)
{
    return m->state == AF_MP_EPILOGUE;
}

static int fail(struct af_mp *m, const char *why)
{
    m->state = AF_MP_ERROR;
    m->why = why;
    return -1;
}

/* The value of header `name` in the block (the first such line), copied
 * into out; NULL when absent. Header names compare ignoring case. */
static const char *header_value(const char *block, size_t len, const char *name, char *out,
                                size_t outlen)
{
    size_t nlen = strlen(name);
    const char *p = block, *end = block + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            break;
        size_t llen = (size_t)(eol - p);
        if (llen > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            const char *ve = eol;
            if (ve > v && ve[-1] == '\r')
                ve--;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            size_t vl = (size_t)(ve - v);
            if (vl >= outlen)
                vl = outlen - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return out;
        }
        p = eol + 1;
    }
    return NULL;
}

/* A part's complete header block (ending in an empty line): checked, then
 * handed to part_begin. */
static int headers_done(struct af_mp *m, const struct af_mp_ops *ops, void *arg)
{
    /* Every line is a field "name: value" (RFC 7578 §4.8 allows only a
     * few; others are passed on, never interpreted). Obsolete folding
     * (a line starting with white space) is refused, as RFC 9112 does. */
    const char *p = m->hbuf, *end = m->hbuf + m->hlen - 2; /* without the empty line */
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol || eol == p || eol[-1] != '\r')
            return fail(m, "a part's header line does not end in CRLF");
        if (*p == ' ' || *p == '\t')
            return fail(m, "a part's header is folded over lines");
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || colon == p)
            return fail(m, "a part's header line has no field name");
        for (const char *q = p; q < eol - 1; q++)
            if (*q == '\0')
                return fail(m, "a part's header holds a NUL byte");
        p = eol + 1;
    }
    char disp[1024], ctype[1024], name[512], filename[1024];
    struct af_mp_part part = {.headers = m->hbuf, .headers_len = m->hlen - 2};
    part.disposition = header_value(m->hbuf, m->hlen, "content-disposition", disp, sizeof(disp));
    part.content_type = header_value(m->hbuf, m->hlen, "content-type", ctype, sizeof(ctype));
    if (part.disposition) {
        int r = af_mp_param(part.disposition, "name", name, sizeof(name));
        if (r < 0)
            return fail(m, "a part's name parameter is malformed or longer than 511 bytes");
        part.name = r ? name : NULL;
        r = af_mp_param(part.disposition, "filename", filename, sizeof(filename));
        if (r < 0)
            return fail(m, "a part's filename parameter is malformed or longer than 1023 bytes");
        part.filename = r ? filename : NULL;
    }
    m->parts++;
    m->hlen = 0;
    m->state = AF_MP_DATA;
    return ops->part_begin(arg, &part);
}

int af_mp_feed(struct af_mp *m, const struct af_mp_ops *ops, void *arg, const char *p, size_t n)
{
    const char *end = p + n;
    int r;
    while (p < end) {
        switch (m->state) {
        case AF_MP_ERROR:
            return -1;
        case AF_MP_EPILOGUE:
            return 0;
        case AF_MP_PREAMBLE:
        case AF_MP_DATA: {
            bool data = m->state == AF_MP_DATA;
            if (m->match == 0) {
                /* Fast path: everything before the next CR is data. */
                const char *cr = memchr(p, '\r', (size_t)(end - p));
                const char *stop = cr ? cr : end;
                if (data && stop > p && (r = ops->part_data(arg, p, (size_t)(stop - p))) != 0)
                    return r;
                p = stop;
                if (!cr)
                    break;
            }
            char c = *p;
            if (c == m->delim[m->match]) {
                p++;
                if (++m->match == m->delim_len) {
                    m->match = 0;
                    if (data && (r = ops->part_end(arg)) != 0)
                        return r;
                    m->state = AF_MP_AFTER;
                    m->after = 0;
                }
                break;
            }
            /* Not the delimiter after all: what was held back is data.
             * Only its first byte is a CR, so the current byte can only
             * restart a match if it is a CR itself. */
            if (data && (r = ops->part_data(arg, m->delim, m->match)) != 0)
                return r;
            m->match = 0;
            break;
        }
        case AF_MP_AFTER: {
            char c = *p++;
            if (m->after == 0) {
                if (c == ' ' || c == '\t')
                    break; /* transport padding */
                if (c != '-' && c != '\r')
                    return fail(m, "a boundary is followed by something other than CRLF or --");
                m->after_c = c;
                m->after = 1;
                break;
            }
            if (m->after_c == '-') {
                if (c != '-')
                    return fail(m, "a boundary is followed by a single -");
                m->state = AF_MP_EPILOGUE;
                if (m->parts == 0)
                    return fail(m, "the body has no parts");
                return 0;
            }
            if (c != '\n')
                return fail(m, "a boundary line ends in CR without LF");
            if (m->parts >= 10000)
                return fail(m, "the body has more than 10000 parts");
            if (!m->hbuf)
                m->hbuf = af_xmalloc(AF_MP_MAX_HEADERS);
            m->hlen = 0;
            m->state = AF_MP_HEADERS;
            break;
        }
        case AF_MP_HEADERS: {
            /* Copy up to the end of the block: an empty line. */
            while (p < end) {
                if (m->hlen == AF_MP_MAX_HEADERS)
                    return fail(m, "a part's headers are larger than 8 KiB");
                m->hbuf[m->hlen++] = *p++;
                size_t h = m->hlen;
                if (h >= 2 && m->hbuf[h - 1] == '\n' && m->hbuf[h - 2] == '\r' &&
                    (h == 2 || (h >= 4 && m->hbuf[h - 3] == '\n' && m->hbuf[h - 4] == '\r'))) {
                    if ((r = headers_done(m, ops, arg)) != 0)
                        return r;
                    break;
                }
            }
            break;
        }
        }
    }
    return 0;
}
