/*
 * fuzz_multipart — the multipart/form-data parser of blobstore uploads
 * (proxy/multipart.c) under libFuzzer: the boundary out of a Content-Type
 * value (af_mp_boundary, af_mp_param), then the body fed three ways.
 *
 * Input: a Content-Type value, a newline, the body.
 *
 * Invariants: no memory error, leak or undefined behaviour; the parts the
 * callbacks report (headers, names, data) and the outcome (complete,
 * malformed with a reason, or incomplete) are the same whether the body
 * comes whole, a byte at a time, or cut in two at a place the input
 * chooses; a part's data is never more than the body; callbacks come in
 * order (begin, data..., end).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/multipart.h"

static void die(const char *what)
{
    fprintf(stderr, "fuzz_multipart: invariant violated: %s\n", what);
    abort();
}

/* A digest of everything the callbacks saw, order included. */
struct trace {
    uint64_t h;
    size_t data;
    int in_part;
};

static void mix(struct trace *t, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        t->h = (t->h ^ c[i]) * 1099511628211u;
}

static int on_begin(void *arg, const struct af_mp_part *p)
{
    struct trace *t = arg;
    if (t->in_part)
        die("part_begin inside a part");
    t->in_part = 1;
    mix(t, "B", 1);
    mix(t, p->headers, p->headers_len);
    if (p->name)
        mix(t, p->name, strlen(p->name) + 1);
    if (p->filename)
        mix(t, p->filename, strlen(p->filename) + 1);
    if (p->content_type)
        mix(t, p->content_type, strlen(p->content_type) + 1);
    return 0;
}

static int on_data(void *arg, const char *d, size_t n)
{
    struct trace *t = arg;
    if (!t->in_part)
        die("data outside a part");
    t->data += n;
    mix(t, d, n); /* runs may be cut differently; the bytes are the same */
    return 0;
}

static int on_end(void *arg)
{
    struct trace *t = arg;
    if (!t->in_part)
        die("part_end outside a part");
    t->in_part = 0;
    mix(t, "E", 1);
    return 0;
}

static const struct af_mp_ops ops = {.part_begin = on_begin, .part_data = on_data, .part_end = on_end};

struct outcome {
    int r;
    int done;
    const char *why;
    struct trace t;
};

static struct outcome parse(const char *b, size_t blen, const uint8_t *body, size_t n, size_t step,
                            size_t cut)
{
    struct outcome o = {0};
    struct af_mp m;
    af_mp_init(&m, b, blen);
    if (step) {
        for (size_t i = 0; i < n && o.r == 0; i += step)
            o.r = af_mp_feed(&m, &ops, &o.t, (const char *)body + i, n - i < step ? n - i : step);
    } else {
        o.r = af_mp_feed(&m, &ops, &o.t, (const char *)body, cut);
        if (o.r == 0)
            o.r = af_mp_feed(&m, &ops, &o.t, (const char *)body + cut, n - cut);
    }
    o.done = af_mp_done(&m);
    o.why = m.why;
    af_mp_release(&m);
    if (o.t.data > n)
        die("more data than the body");
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    if (!nl || nl - data > 1024)
        return 0;
    char ctype[1025];
    memcpy(ctype, data, (size_t)(nl - data));
    ctype[nl - data] = '\0';
    char b[AF_MP_MAX_BOUNDARY + 1];
    const char *why = NULL;
    int blen = af_mp_boundary(ctype, b, &why);
    if (blen < 0) {
        if (!why)
            die("a refused boundary without a reason");
        return 0;
    }
    if ((size_t)blen != strlen(b) || !af_mp_boundary_ok(b, (size_t)blen))
        die("an accepted boundary that is not valid");
    const uint8_t *body = nl + 1;
    size_t n = size - (size_t)(body - data);
    struct outcome whole = parse(b, (size_t)blen, body, n, 0, n);
    struct outcome bytes = parse(b, (size_t)blen, body, n, 1, 0);
    struct outcome two = parse(b, (size_t)blen, body, n, 0, n ? body[0] % (n + 1) : 0);
    if (whole.r != bytes.r || whole.r != two.r || whole.done != bytes.done ||
        whole.done != two.done)
        die("the outcome depends on how the body was cut");
    if (whole.why != bytes.why || whole.why != two.why)
        die("the reason depends on how the body was cut");
    if (whole.t.h != bytes.t.h || whole.t.h != two.t.h || whole.t.data != bytes.t.data)
        die("the parts depend on how the body was cut");
    if (whole.r < 0 && !whole.why)
        die("malformed without a reason");
    return 0;
}
