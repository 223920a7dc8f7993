/*
 * search_wire — group <-> length-delimited rewriting (see search_wire.h).
 *
 * Each schema node lists the fields of one message type that lead to a
 * group: nested messages to walk into, and the group fields themselves.
 * Nesting is fixed by the table (at most five levels), so the recursion is
 * bounded whatever the input.
 */
#include <stdlib.h>
#include <string.h>

#include "apiserver/services/pbwire.h"
#include "apiserver/services/search_wire.h"
#include "common/xalloc.h"

struct sw_node;

struct sw_child {
    uint32_t num;
    bool group; /* a group on the wire; length-delimited for protobuf-c */
    const struct sw_node *node; /* its schema; NULL: copy its bytes as they are */
};

struct sw_node {
    const struct sw_child *children; /* terminated by num 0 */
};

/* FieldValue { group Geo = 4 { double lat = 5; double lng = 6; } } */
static const struct sw_child field_value_children[] = {{.num = 4, .group = true, .node = NULL},
                                                      {.num = 0, .group = false, .node = NULL}};
static const struct sw_node field_value = {.children = field_value_children};
/* Field { FieldValue value = 2; } */
static const struct sw_child field_children[] = {{.num = 2, .group = false, .node = &field_value},
                                                 {.num = 0, .group = false, .node = NULL}};
static const struct sw_node field = {.children = field_children};
/* Document { repeated Field field = 3; } */
static const struct sw_child document_children[] = {{.num = 3, .group = false, .node = &field},
                                                    {.num = 0, .group = false, .node = NULL}};
static const struct sw_node document = {.children = document_children};
/* IndexDocumentParams { repeated Document document = 1; } */
static const struct sw_child idx_params_children[] = {
    {.num = 1, .group = false, .node = &document}, {.num = 0, .group = false, .node = NULL}};
static const struct sw_node idx_params = {.children = idx_params_children};
/* IndexDocumentRequest { IndexDocumentParams params = 1; } */
static const struct sw_child idx_req_children[] = {{.num = 1, .group = false, .node = &idx_params},
                                                   {.num = 0, .group = false, .node = NULL}};
static const struct sw_node idx_req = {.children = idx_req_children};
/* FieldSpec { repeated group Expression = 2 { ... } } */
static const struct sw_child field_spec_children[] = {{.num = 2, .group = true, .node = NULL},
                                                      {.num = 0, .group = false, .node = NULL}};
static const struct sw_node field_spec = {.children = field_spec_children};
/* SearchParams { FieldSpec field_spec = 10; } */
static const struct sw_child search_params_children[] = {
    {.num = 10, .group = false, .node = &field_spec}, {.num = 0, .group = false, .node = NULL}};
static const struct sw_node search_params = {.children = search_params_children};
/* SearchRequest { SearchParams params = 1; } */
static const struct sw_child search_req_children[] = {
    {.num = 1, .group = false, .node = &search_params}, {.num = 0, .group = false, .node = NULL}};
static const struct sw_node search_req = {.children = search_req_children};
/* ListDocumentsResponse { repeated Document document = 2; } */
static const struct sw_child list_resp_children[] = {{.num = 2, .group = false, .node = &document},
                                                      {.num = 0, .group = false, .node = NULL}};
static const struct sw_node list_resp = {.children = list_resp_children};
/* SearchResult { Document document = 1; repeated Field expression = 4; } */
static const struct sw_child result_children[] = {{.num = 1, .group = false, .node = &document},
                                                  {.num = 4, .group = false, .node = &field},
                                                  {.num = 0, .group = false, .node = NULL}};
static const struct sw_node result = {.children = result_children};
/* SearchResponse { repeated SearchResult result = 1; } */
static const struct sw_child search_resp_children[] = {
    {.num = 1, .group = false, .node = &result}, {.num = 0, .group = false, .node = NULL}};
static const struct sw_node search_resp = {.children = search_resp_children};

struct sw_buf {
    uint8_t *p;
    size_t len, cap;
};

static void buf_put(struct sw_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return; /* p may be NULL: an empty nested message */
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = af_xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void buf_varint(struct sw_buf *b, uint64_t v)
{
    uint8_t tmp[10];
    buf_put(b, tmp, (size_t)(af_pb_put_varint(tmp, v) - tmp));
}

static const struct sw_child *child_of(const struct sw_node *node, uint32_t num)
{
    for (const struct sw_child *c = node->children; c->num; c++)
        if (c->num == num)
            return c;
    return NULL;
}

static bool rewrite(const struct sw_node *node, const uint8_t *p, const uint8_t *end,
                    bool to_groups, struct sw_buf *out);

/* Writes field num (whose content is [p, end)) in the form wanted. */
static bool emit_nested(const struct sw_child *c, const uint8_t *p, const uint8_t *end,
                        bool to_groups, struct sw_buf *out)
{
    struct sw_buf inner = {.p = NULL, .len = 0, .cap = 0};
    bool ok = true;
    if (c->node)
        ok = rewrite(c->node, p, end, to_groups, &inner);
    else if (end > p)
        buf_put(&inner, p, (size_t)(end - p));
    if (ok) {
        if (c->group && to_groups) {
            buf_varint(out, (uint64_t)c->num << 3 | AF_PB_SGROUP);
            buf_put(out, inner.p, inner.len);
            buf_varint(out, (uint64_t)c->num << 3 | AF_PB_EGROUP);
        } else {
            buf_varint(out, (uint64_t)c->num << 3 | AF_PB_LEN);
            buf_varint(out, inner.len);
            buf_put(out, inner.p, inner.len);
        }
    }
    free(inner.p);
    return ok;
}

static bool rewrite(const struct sw_node *node, const uint8_t *p, const uint8_t *end,
                    bool to_groups, struct sw_buf *out)
{
    struct af_pb_reader r = {.p = p, .end = end};
    while (r.p < r.end) {
        const uint8_t *start = r.p;
        uint32_t num;
        unsigned wt;
        if (!af_pb_read_tag(&r, &num, &wt))
            return false;
        const struct sw_child *c = child_of(node, num);
        const uint8_t *body = r.p;
        if (c && wt == AF_PB_LEN) {
            uint64_t n;
            if (!af_pb_read_varint(&r, &n) || n > (uint64_t)(r.end - r.p))
                return false;
            body = r.p;
            r.p += n;
            if (!emit_nested(c, body, r.p, to_groups, out))
                return false;
            continue;
        }
        if (c && c->group && wt == AF_PB_SGROUP) {
            /* The group's content runs to its end tag; a group inside it
             * (none is defined) is skipped whole, with a depth bound. */
            const uint8_t *gend;
            for (;;) {
                gend = r.p;
                uint32_t inner;
                unsigned iwt;
                if (!af_pb_read_tag(&r, &inner, &iwt))
                    return false;
                if (iwt == AF_PB_EGROUP) {
                    if (inner != num)
                        return false;
                    break;
                }
                if (!af_pb_skip(&r, inner, iwt, 8))
                    return false;
            }
            if (!emit_nested(c, body, gend, to_groups, out))
                return false;
            continue;
        }
        if (wt == AF_PB_EGROUP || !af_pb_skip(&r, num, wt, 8))
            return false;
        buf_put(out, start, (size_t)(r.p - start));
    }
    return true;
}

bool af_sw_rewrite(enum af_sw_msg msg, const uint8_t *in, size_t len, bool to_groups,
                   uint8_t **out, size_t *out_len)
{
    const struct sw_node *node = NULL;
    switch (msg) {
    case AF_SW_INDEX_DOCUMENT_REQUEST:
        node = &idx_req;
        break;
    case AF_SW_SEARCH_REQUEST:
        node = &search_req;
        break;
    case AF_SW_LIST_DOCUMENTS_RESPONSE:
        node = &list_resp;
        break;
    case AF_SW_SEARCH_RESPONSE:
        node = &search_resp;
        break;
    case AF_SW_DOCUMENT:
        node = &document;
        break;
    }
    struct sw_buf b = {.p = NULL, .len = 0, .cap = 0};
    if (!node || !rewrite(node, in, in + len, to_groups, &b)) {
        free(b.p);
        return false;
    }
    if (!b.p)
        b.p = af_xmalloc(1);
    *out = b.p;
    *out_len = b.len;
    return true;
}
