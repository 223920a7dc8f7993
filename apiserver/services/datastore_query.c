/*
 * datastore_query — compiles Query messages into plans and runs them as SQL
 * over the entity and prop tables (datastore_query.h has the model).
 *
 * The SQL of a batch is generated from the plan and the run's position;
 * every value is a bound parameter and the connection caches statements by
 * their text, so a program's few query shapes are compiled once. Value and
 * key columns are BLOBs in the encodings of datastore_key.h, which SQLite
 * compares with memcmp(): index order is datastore order.
 *
 * Semantics follow App Engine's index-based ones:
 *  - an equality filter matches an entity when any of its values matches;
 *  - all inequality filters are on one property and one value must satisfy
 *    them all (one index row); a bound only matches values of its own type
 *    class (an integer bound never matches strings);
 *  - the first sort order is on the inequality property, if any;
 *  - an entity without a sorted or projected property is not a result;
 *  - a multi-valued property sorts an entity by its smallest value
 *    (ascending) or largest (descending) among those in the filter range,
 *    and the entity appears once -- except when that property is projected,
 *    where each value is its own result, as in App Engine.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apiserver/services/datastore_query.h"
#include "common/log.h"
#include "common/xalloc.h"

typedef Af__Datastore__Query__Filter ds_filter_t;
typedef Af__Datastore__Query__Order ds_order_msg_t;

#define OP_LT AF__DATASTORE__QUERY__FILTER__OPERATOR__LESS_THAN
#define OP_LE AF__DATASTORE__QUERY__FILTER__OPERATOR__LESS_THAN_OR_EQUAL
#define OP_GT AF__DATASTORE__QUERY__FILTER__OPERATOR__GREATER_THAN
#define OP_GE AF__DATASTORE__QUERY__FILTER__OPERATOR__GREATER_THAN_OR_EQUAL
#define OP_EQ AF__DATASTORE__QUERY__FILTER__OPERATOR__EQUAL
#define DIR_DESC AF__DATASTORE__QUERY__ORDER__DIRECTION__DESCENDING

/* Cursor bytes: magic, version, shape hash, then the position tuple. */
#define CURSOR_MAGIC 0xdc
#define CURSOR_VERSION 1

static const char key_prop[] = "__key__";

/* ---- plans -------------------------------------------------------------- */

void af_ds_plan_free(struct af_ds_plan *p)
{
    if (!p)
        return;
    free(p->app);
    free(p->ns);
    free(p->kind);
    af_ds_buf_release(&p->anc_lo);
    af_ds_buf_release(&p->anc_hi);
    for (size_t i = 0; i < p->n_eq; i++) {
        free(p->eq[i].name);
        af_ds_buf_release(&p->eq[i].value);
    }
    free(p->eq);
    free(p->ineq_name);
    for (size_t i = 0; i < p->n_ineq; i++)
        af_ds_buf_release(&p->ineq[i].value);
    free(p->ineq);
    for (size_t i = 0; i < p->n_keyb; i++)
        af_ds_buf_release(&p->keyb[i].value);
    free(p->keyb);
    for (size_t i = 0; i < p->n_orders; i++)
        free(p->orders[i].name);
    free(p->orders);
    for (size_t i = 0; i < p->n_projection; i++)
        free(p->projection[i]);
    free(p->projection);
    free(p);
}

static char *why_f(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *why_f(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s ? s : af_xstrdup("invalid query");
}

static bool has_eq(const struct af_ds_plan *p, const char *name)
{
    for (size_t i = 0; i < p->n_eq; i++)
        if (strcmp(p->eq[i].name, name) == 0)
            return true;
    return false;
}

static ssize_t order_index(const struct af_ds_plan *p, const char *name)
{
    for (size_t i = 0; i < p->n_orders; i++)
        if (strcmp(p->orders[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

static void add_order(struct af_ds_plan *p, const char *name, bool desc)
{
    p->orders = af_xrealloc(p->orders, (p->n_orders + 1) * sizeof(*p->orders));
    p->orders[p->n_orders].name = af_xstrdup(name);
    p->orders[p->n_orders].desc = desc;
    p->n_orders++;
}

static struct ds_bound *add_bound(struct ds_bound **arr, size_t *n, int op)
{
    *arr = af_xrealloc(*arr, (*n + 1) * sizeof(**arr));
    struct ds_bound *b = &(*arr)[(*n)++];
    memset(b, 0, sizeof(*b));
    b->upper = op == OP_LT || op == OP_LE;
    b->inclusive = op == OP_LE || op == OP_GE;
    return b;
}

/* The key encoding of a reference value (a __key__ filter's operand). */
static void encode_ref_path(struct af_ds_buf *b,
                            const Af__Datastore__PropertyValue__ReferenceValue *rv)
{
    for (size_t i = 0; i < rv->n_pathelement; i++) {
        const Af__Datastore__PropertyValue__ReferenceValue__PathElement *pe = rv->pathelement[i];
        struct af_ds_elem e = {pe->type, pe->has_id, pe->id, pe->name};
        af_ds_elem_encode(b, &e);
    }
}

static char *compile_filter(struct af_ds_plan *p, const ds_filter_t *f)
{
    if (f->n_property != 1)
        return why_f("a query filter must name exactly one property (got %zu)", f->n_property);
    const ds_property_t *prop = f->property[0];
    const char *name = prop->name;
    int op = f->op;
    if (op != OP_EQ && op != OP_LT && op != OP_LE && op != OP_GT && op != OP_GE)
        return why_f("query filter operator %d on property \"%s\" is not supported "
                     "(only =, <, <=, > and >=)",
                     op, name);
    if (!prop->value)
        return why_f("the filter on property \"%s\" has no value", name);
    if (strcmp(name, key_prop) == 0) {
        const Af__Datastore__PropertyValue__ReferenceValue *rv = prop->value->referencevalue;
        if (!rv || rv->n_pathelement == 0)
            return why_f("a __key__ filter must compare with a key");
        if (op == OP_EQ) {
            struct ds_bound *lo = add_bound(&p->keyb, &p->n_keyb, OP_GE);
            encode_ref_path(&lo->value, rv);
            struct ds_bound *hi = add_bound(&p->keyb, &p->n_keyb, OP_LE);
            encode_ref_path(&hi->value, rv);
        } else {
            encode_ref_path(&add_bound(&p->keyb, &p->n_keyb, op)->value, rv);
        }
        return NULL;
    }
    if (op == OP_EQ) {
        p->eq = af_xrealloc(p->eq, (p->n_eq + 1) * sizeof(*p->eq));
        struct ds_eq *e = &p->eq[p->n_eq++];
        memset(e, 0, sizeof(*e));
        e->name = af_xstrdup(name);
        af_ds_value_encode(&e->value, prop->value);
        return NULL;
    }
    if (p->ineq_name && strcmp(p->ineq_name, name) != 0)
        return why_f("inequality filters on more than one property (\"%s\" and \"%s\") are not "
                     "supported",
                     p->ineq_name, name);
    if (!p->ineq_name)
        p->ineq_name = af_xstrdup(name);
    struct ds_bound *bd = add_bound(&p->ineq, &p->n_ineq, op);
    af_ds_value_encode(&bd->value, prop->value);
    /* The type class: [tag, next tag). */
    bd->tag[0] = bd->value.p[0];
    bd->tag[1] = (uint8_t)(bd->value.p[0] + 0x10);
    return NULL;
}

static uint32_t fnv1a(uint32_t h, const void *data, size_t n)
{
    const uint8_t *s = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 16777619u;
    return h;
}

static char *compile_orders(struct af_ds_plan *p, const ds_query_t *q)
{
    if (q->n_order > AF_DS_MAX_ORDERS)
        return why_f("a query may have at most %d sort orders (got %zu)", AF_DS_MAX_ORDERS,
                     q->n_order);
    for (size_t i = 0; i < q->n_order; i++) {
        const ds_order_msg_t *o = q->order[i];
        bool desc = o->has_direction && o->direction == DIR_DESC;
        if (strcmp(o->property, key_prop) == 0) {
            /* Keys are unique: orders after __key__ can never apply. */
            p->key_desc = desc;
            break;
        }
        if (!p->kind)
            return why_f("a kindless query can only be ordered by __key__ (not \"%s\")",
                         o->property);
        /* An order on a property with an equality filter orders nothing. */
        if (has_eq(p, o->property) || order_index(p, o->property) >= 0)
            continue;
        add_order(p, o->property, desc);
    }
    if (p->ineq_name) {
        if (p->n_orders == 0)
            add_order(p, p->ineq_name, false);
        else if (strcmp(p->orders[0].name, p->ineq_name) != 0)
            return why_f("the first sort order must be on the inequality filter's property "
                         "\"%s\" (not \"%s\")",
                         p->ineq_name, p->orders[0].name);
    }
    return NULL;
}

static char *compile_projection(struct af_ds_plan *p, const ds_query_t *q)
{
    if (q->n_property_name == 0) {
        if (q->n_group_by_property_name)
            return why_f("distinct queries need a projection");
        return NULL;
    }
    if (q->keys_only)
        return why_f("a query cannot be both keys-only and a projection");
    if (q->n_property_name > AF_DS_MAX_PROJECTION)
        return why_f("a projection may name at most %d properties", AF_DS_MAX_PROJECTION);
    p->projection = af_xcalloc(q->n_property_name, sizeof(*p->projection));
    for (size_t i = 0; i < q->n_property_name; i++) {
        const char *name = q->property_name[i];
        if (strcmp(name, key_prop) == 0)
            return why_f("projecting __key__ is not supported (use a keys-only query)");
        for (size_t j = 0; j < p->n_projection; j++)
            if (strcmp(p->projection[j], name) == 0)
                return why_f("property \"%s\" is projected twice", name);
        p->projection[p->n_projection++] = af_xstrdup(name);
    }
    /* Distinct: the group must lead the sort orders, so duplicates are
     * neighbours and the executor drops all but the first. */
    size_t k = 0;
    for (size_t i = 0; i < q->n_group_by_property_name; i++) {
        const char *g = q->group_by_property_name[i];
        bool projected = false;
        for (size_t j = 0; j < p->n_projection; j++)
            projected |= strcmp(p->projection[j], g) == 0;
        if (!projected)
            return why_f("distinct property \"%s\" must also be projected", g);
        if (has_eq(p, g))
            continue; /* one value: never distinguishes results */
        if (order_index(p, g) < 0)
            add_order(p, g, false);
        k++;
    }
    /* Every leading order must be in the group. */
    for (size_t i = 0; i < k; i++) {
        bool in = false;
        for (size_t j = 0; j < q->n_group_by_property_name; j++)
            in |= strcmp(q->group_by_property_name[j], p->orders[i].name) == 0;
        if (!in)
            return why_f("a distinct query must be ordered by its distinct properties first "
                         "(\"%s\" is not one)",
                         p->orders[i].name);
    }
    p->n_group = k;
    /* Distinct without any effective group (every property fixed by an
     * equality filter) is one result at most; mark it with a group of 0
     * orders and let the executor stop after one row. */
    if (q->n_group_by_property_name && k == 0)
        p->n_group = SIZE_MAX;
    return NULL;
}

struct af_ds_plan *af_ds_plan_compile(const ds_query_t *q, int64_t part, char **why)
{
    struct af_ds_plan *p = af_xcalloc(1, sizeof(*p));
    *why = NULL;
    p->part = part;
    p->app = af_xstrdup(q->app ? q->app : "");
    p->ns = af_xstrdup(q->name_space ? q->name_space : "");
    p->keys_only = q->has_keys_only && q->keys_only;

    if (q->search_query) {
        *why = why_f("full-text search queries are not supported");
        goto fail;
    }
    if (q->kind) {
        size_t n = strlen(q->kind);
        if (n == 0) {
            *why = why_f("a query kind must not be empty");
            goto fail;
        }
        /* __BlobInfo__ and __BlobUploadSession__ are stored entities like
         * any other (the blobstore service writes them), not metadata:
         * apps query them (BlobInfo.all(), the Go library's __BlobInfo__). */
        if (n >= 4 && strncmp(q->kind, "__", 2) == 0 && strcmp(q->kind + n - 2, "__") == 0 &&
            strcmp(q->kind, "__BlobInfo__") != 0 && strcmp(q->kind, "__BlobUploadSession__") != 0) {
            *why = why_f("metadata queries of kind %s are not supported (__namespace__ and "
                         "__kind__ are, without filters)",
                         q->kind);
            goto fail;
        }
        p->kind = af_xstrdup(q->kind);
    }
    if (q->ancestor) {
        const char *bad = af_ds_key_check(q->ancestor, false);
        if (bad) {
            *why = why_f("invalid ancestor: %s", bad);
            goto fail;
        }
        if (strcmp(q->ancestor->name_space ? q->ancestor->name_space : "", p->ns) != 0) {
            *why = why_f("the ancestor's namespace is not the query's");
            goto fail;
        }
        af_ds_path_encode(&p->anc_lo, q->ancestor->path, q->ancestor->path->n_element);
        p->has_anc_hi = af_ds_prefix_successor(&p->anc_hi, p->anc_lo.p, p->anc_lo.len);
    }
    if (q->n_filter > AF_DS_MAX_FILTERS) {
        *why =
            why_f("a query may have at most %d filters (got %zu)", AF_DS_MAX_FILTERS, q->n_filter);
        goto fail;
    }
    for (size_t i = 0; i < q->n_filter; i++)
        if ((*why = compile_filter(p, q->filter[i])))
            goto fail;
    if (!p->kind && (p->n_eq || p->ineq_name)) {
        *why = why_f("a kindless query can only filter on __key__ and an ancestor (not \"%s\")",
                     p->n_eq ? p->eq[0].name : p->ineq_name);
        goto fail;
    }
    if ((*why = compile_orders(p, q)))
        goto fail;
    if ((*why = compile_projection(p, q)))
        goto fail;

    uint32_t h = 2166136261u;
    for (size_t i = 0; i < p->n_orders; i++) {
        h = fnv1a(h, p->orders[i].name, strlen(p->orders[i].name) + 1);
        h = fnv1a(h, &p->orders[i].desc, 1);
    }
    h = fnv1a(h, &p->key_desc, 1);
    p->shape = h;
    return p;
fail:
    af_ds_plan_free(p);
    return NULL;
}

/* ---- SQL generation ----------------------------------------------------- */

enum bind_type {
    B_BLOB,
    B_TEXT,
    B_INT,
};

struct bindv {
    enum bind_type type;
    const void *p;
    size_t n;
    int64_t i;
};

struct sqlb {
    struct af_ds_buf s;
    struct bindv *v;
    int n;
};

static void sq(struct sqlb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sq(struct sqlb *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(tmp)) {
        af_ds_buf_put(&b->s, tmp, (size_t)n);
        return;
    }
    char *big = af_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    af_ds_buf_put(&b->s, big, (size_t)n);
    free(big);
}

static int param(struct sqlb *b, enum bind_type t, const void *p, size_t n, int64_t i)
{
    b->v = af_xrealloc(b->v, (size_t)(b->n + 1) * sizeof(*b->v));
    b->v[b->n] = (struct bindv){t, p, n, i};
    return ++b->n;
}

static int pblob(struct sqlb *b, const struct af_ds_buf *v)
{
    return param(b, B_BLOB, v->p ? v->p : (const void *)"", v->len, 0);
}

static int ptext(struct sqlb *b, const char *s)
{
    return param(b, B_TEXT, s, 0, 0);
}

/* Conditions of the inequality bounds on column col (e.g. "o.value"). */
static void ineq_conds(struct sqlb *b, const struct af_ds_plan *p, const char *col)
{
    for (size_t i = 0; i < p->n_ineq; i++) {
        const struct ds_bound *bd = &p->ineq[i];
        const char *op = bd->upper ? (bd->inclusive ? "<=" : "<") : (bd->inclusive ? ">=" : ">");
        sq(b, " AND %s %s ?%d", col, op, pblob(b, &bd->value));
        /* Only values of the bound's own type class match it. */
        sq(b, " AND %s >= ?%d AND %s < ?%d", col, param(b, B_BLOB, &bd->tag[0], 1, 0), col,
           param(b, B_BLOB, &bd->tag[1], 1, 0));
    }
}

/* The SQL expression of sort term i (the driver's value for i == 0). */
static void term_expr(struct sqlb *b, const struct af_ds_plan *p, size_t i)
{
    if (i == 0) {
        sq(b, "o.value");
        return;
    }
    sq(b, "(SELECT %s(x.value) FROM prop x WHERE x.part=?1 AND x.key=o.key AND x.name=?%d)",
       p->orders[i].desc ? "max" : "min", ptext(b, p->orders[i].name));
}

/*
 * "The row's tuple comes after t in the query order": nested as
 * a > A OR (a = A AND (b > B OR (b = B AND key > K))), with < for
 * descending terms. tuple holds n_orders values then the key.
 */
static void after_cond(struct sqlb *b, const struct af_ds_plan *p, struct af_ds_buf *vals,
                       size_t n_vals)
{
    size_t open = 0;
    for (size_t i = 0; i < n_vals; i++) {
        bool is_key = i + 1 == n_vals;
        bool desc = is_key ? p->key_desc : p->orders[i].desc;
        int pn = pblob(b, &vals[i]);
        sq(b, "(");
        if (is_key)
            sq(b, "o.key");
        else
            term_expr(b, p, i);
        sq(b, " %s ?%d", desc ? "<" : ">", pn);
        if (!is_key) {
            sq(b, " OR (");
            if (i == 0)
                sq(b, "o.value");
            else
                term_expr(b, p, i);
            sq(b, " = ?%d AND ", pn);
            open += 2;
        }
    }
    for (size_t i = 0; i < open + 1; i++)
        sq(b, ")");
}

/* Splits a tuple (varint-length-prefixed parts) into n views. The views
 * point into t; they are wrapped as af_ds_buf for pblob without owning. */
static bool tuple_split(const uint8_t *t, size_t len, struct af_ds_buf *out, size_t n)
{
    const uint8_t *p = t, *end = t + len;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 0;
        unsigned shift = 0;
        for (;;) {
            if (p == end || shift > 28)
                return false;
            uint8_t c = *p++;
            v |= (uint64_t)(c & 0x7f) << shift;
            shift += 7;
            if (!(c & 0x80))
                break;
        }
        if (v > (uint64_t)(end - p))
            return false;
        out[i].p = (uint8_t *)p;
        out[i].len = (size_t)v;
        out[i].cap = 0;
        p += v;
    }
    return p == end;
}

static void tuple_put(struct af_ds_buf *t, const void *data, size_t n)
{
    uint8_t tmp[10];
    size_t k = 0;
    size_t v = n;
    while (v >= 0x80) {
        tmp[k++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    tmp[k++] = (uint8_t)v;
    af_ds_buf_put(t, tmp, k);
    af_ds_buf_put(t, data, n);
}

/* Index of projection i's column source: an order term, an equality value,
 * or its own lookup. */
static void projection_expr(struct sqlb *b, const struct af_ds_plan *p, size_t i)
{
    const char *name = p->projection[i];
    ssize_t at = order_index(p, name);
    if (at >= 0) {
        term_expr(b, p, (size_t)at);
        return;
    }
    for (size_t j = 0; j < p->n_eq; j++) {
        if (strcmp(p->eq[j].name, name) == 0) {
            sq(b, "?%d", pblob(b, &p->eq[j].value));
            return;
        }
    }
    sq(b, "(SELECT min(x.value) FROM prop x WHERE x.part=?1 AND x.key=o.key AND x.name=?%d)",
       ptext(b, name));
}

static void exists_prop(struct sqlb *b, const char *name)
{
    sq(b, " AND EXISTS(SELECT 1 FROM prop x WHERE x.part=?1 AND x.key=o.key AND x.name=?%d)",
       ptext(b, name));
}

/* Builds the SQL of the next batch of run. tuples in pos/end are split into
 * the scratch arrays, which must live until the statement is bound. */
static bool build_sql(struct sqlb *b, const struct af_ds_run *run, struct af_ds_buf *posv,
                      struct af_ds_buf *endv)
{
    const struct af_ds_plan *p = run->plan;
    size_t n_vals = p->n_orders + 1;
    param(b, B_INT, NULL, 0, p->part);              /* ?1 */
    param(b, B_TEXT, p->kind ? p->kind : "", 0, 0); /* ?2 */

    sq(b, "SELECT o.key");
    for (size_t i = 0; i < p->n_orders; i++) {
        sq(b, ", ");
        term_expr(b, p, i);
        sq(b, " AS s%zu", i);
    }
    for (size_t i = 0; i < p->n_projection; i++) {
        sq(b, ", ");
        projection_expr(b, p, i);
    }

    size_t first_eq = 0;
    if (p->n_orders > 0) {
        sq(b, " FROM prop o WHERE o.part=?1 AND o.kind=?2 AND o.name=?%d",
           ptext(b, p->orders[0].name));
        if (p->ineq_name)
            ineq_conds(b, p, "o.value");
    } else if (p->n_eq > 0) {
        sq(b, " FROM prop o WHERE o.part=?1 AND o.kind=?2 AND o.name=?%d AND o.value=?%d",
           ptext(b, p->eq[0].name), pblob(b, &p->eq[0].value));
        first_eq = 1;
    } else if (p->kind) {
        sq(b, " FROM entity o WHERE o.part=?1 AND o.kind=?2");
    } else {
        sq(b, " FROM entity o WHERE o.part=?1");
    }

    if (p->anc_lo.len) {
        sq(b, " AND o.key >= ?%d", pblob(b, &p->anc_lo));
        if (p->has_anc_hi)
            sq(b, " AND o.key < ?%d", pblob(b, &p->anc_hi));
    }
    for (size_t i = 0; i < p->n_keyb; i++) {
        const struct ds_bound *bd = &p->keyb[i];
        const char *op = bd->upper ? (bd->inclusive ? "<=" : "<") : (bd->inclusive ? ">=" : ">");
        sq(b, " AND o.key %s ?%d", op, pblob(b, &bd->value));
    }
    for (size_t i = first_eq; i < p->n_eq; i++)
        sq(b,
           " AND EXISTS(SELECT 1 FROM prop f WHERE f.part=?1 AND f.kind=?2 AND f.name=?%d"
           " AND f.value=?%d AND f.key=o.key)",
           ptext(b, p->eq[i].name), pblob(b, &p->eq[i].value));

    if (p->n_orders > 0) {
        bool projected = false;
        for (size_t i = 0; i < p->n_projection; i++)
            projected |= strcmp(p->projection[i], p->orders[0].name) == 0;
        if (!projected) {
            /* One row per entity: the one holding its first value in this
             * order, within the inequality range. */
            sq(b,
               " AND NOT EXISTS(SELECT 1 FROM prop d WHERE d.part=?1 AND d.key=o.key"
               " AND d.name=o.name AND d.value %s o.value",
               p->orders[0].desc ? ">" : "<");
            if (p->ineq_name)
                ineq_conds(b, p, "d.value");
            sq(b, ")");
        }
        for (size_t i = 1; i < p->n_orders; i++)
            exists_prop(b, p->orders[i].name);
    }
    for (size_t i = 0; i < p->n_projection; i++)
        if (order_index(p, p->projection[i]) < 0 && !has_eq(p, p->projection[i]))
            exists_prop(b, p->projection[i]);

    if (run->has_pos) {
        if (!tuple_split(run->pos.p, run->pos.len, posv, n_vals))
            return false;
        if (p->n_orders > 0)
            sq(b, " AND o.value %s ?%d", p->orders[0].desc ? "<=" : ">=", pblob(b, &posv[0]));
        sq(b, " AND ");
        after_cond(b, p, posv, n_vals);
    }
    if (run->has_end) {
        if (!tuple_split(run->end.p, run->end.len, endv, n_vals))
            return false;
        sq(b, " AND NOT ");
        after_cond(b, p, endv, n_vals);
    }

    sq(b, " ORDER BY ");
    for (size_t i = 0; i < p->n_orders; i++)
        sq(b, "s%zu %s, ", i, p->orders[i].desc ? "DESC" : "ASC");
    sq(b, "o.key %s", p->key_desc ? "DESC" : "ASC");
    af_ds_buf_byte(&b->s, 0);
    return true;
}

static void bind_all(sqlite3_stmt *st, const struct sqlb *b)
{
    for (int i = 0; i < b->n; i++) {
        const struct bindv *v = &b->v[i];
        switch (v->type) {
        case B_BLOB:
            sqlite3_bind_blob(st, i + 1, v->p, (int)v->n, SQLITE_STATIC);
            break;
        case B_TEXT:
            sqlite3_bind_text(st, i + 1, v->p, -1, SQLITE_STATIC);
            break;
        case B_INT:
            sqlite3_bind_int64(st, i + 1, v->i);
            break;
        }
    }
}

/* ---- execution ---------------------------------------------------------- */

/* The tuple of the current row: its order values then its key. */
static void row_tuple(sqlite3_stmt *st, const struct af_ds_plan *p, struct af_ds_buf *t)
{
    t->len = 0;
    for (size_t i = 0; i < p->n_orders; i++)
        tuple_put(t, sqlite3_column_blob(st, (int)i + 1),
                  (size_t)sqlite3_column_bytes(st, (int)i + 1));
    tuple_put(t, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
}

/* Byte length of the first k parts of a tuple (made by row_tuple, so
 * well-formed). */
static size_t tuple_prefix_len(const struct af_ds_buf *t, size_t k)
{
    const uint8_t *p = t->p, *end = t->p + t->len;
    for (size_t n = 0; p < end && n < k; n++) {
        uint64_t v = 0;
        unsigned shift = 0;
        uint8_t c;
        do {
            c = *p++;
            v |= (uint64_t)(c & 0x7f) << shift;
            shift += 7;
        } while ((c & 0x80) && p < end);
        p += v;
    }
    return (size_t)(p - t->p);
}

static void swap_bufs(struct af_ds_buf *a, struct af_ds_buf *b)
{
    struct af_ds_buf t = *a;
    *a = *b;
    *b = t;
}

int af_ds_run_batch(struct af_ds_conn *c, struct af_ds_run *run, int64_t offset, int64_t count,
                    int64_t *skipped, bool *more, af_ds_emit_fn emit, void *arg)
{
    const struct af_ds_plan *p = run->plan;
    *skipped = 0;
    *more = false;
    if (p->part == 0 || run->end_empty || (run->limit_left == 0 && offset <= 0))
        return 0;

    size_t n_vals = p->n_orders + 1;
    struct af_ds_buf *posv = af_xcalloc(n_vals, sizeof(*posv));
    struct af_ds_buf *endv = af_xcalloc(n_vals, sizeof(*endv));
    struct sqlb b = {0};
    struct af_ds_buf cur = {0};
    int rc = -1;
    if (!build_sql(&b, run, posv, endv)) {
        af_error("datastore: a query position does not match its query");
        goto out;
    }
    sqlite3_stmt *st = af_ds_prepare(c, (const char *)b.s.p);
    if (!st)
        goto out;
    bind_all(st, &b);

    size_t n_proj = p->n_projection;
    const uint8_t **vals = af_xcalloc(n_proj + 1, sizeof(*vals));
    size_t *lens = af_xcalloc(n_proj + 1, sizeof(*lens));
    int64_t returned = 0;
    size_t group_len = p->n_group == SIZE_MAX ? 0 : p->n_group;
    for (;;) {
        bool skipping = *skipped < offset;
        if (!skipping && (run->limit_left == 0 || returned >= count)) {
            if (run->limit_left != 0) {
                int s = sqlite3_step(st);
                if (s != SQLITE_ROW && s != SQLITE_DONE)
                    goto step_fail;
                *more = s == SQLITE_ROW;
            }
            break;
        }
        int s = sqlite3_step(st);
        if (s == SQLITE_DONE)
            break;
        if (s != SQLITE_ROW)
            goto step_fail;
        row_tuple(st, p, &cur);
        if (p->n_group && run->has_pos) {
            /* Distinct: a row whose group equals the previous row's is a
             * duplicate. It moves the position but is neither skipped nor
             * returned. */
            size_t a = tuple_prefix_len(&cur, group_len),
                   z = tuple_prefix_len(&run->pos, group_len);
            if (a == z && memcmp(cur.p, run->pos.p, a) == 0) {
                swap_bufs(&cur, &run->pos);
                continue;
            }
        }
        if (skipping) {
            if (*skipped >= AF_DS_MAX_SKIP) {
                *more = true;
                break;
            }
            (*skipped)++;
            swap_bufs(&cur, &run->pos);
            run->has_pos = true;
            continue;
        }
        struct af_ds_row row = {
            .key = sqlite3_column_blob(st, 0),
            .key_len = (size_t)sqlite3_column_bytes(st, 0),
            .values = vals,
            .value_lens = lens,
        };
        for (size_t i = 0; i < n_proj; i++) {
            int col = (int)(1 + p->n_orders + i);
            vals[i] = sqlite3_column_blob(st, col);
            lens[i] = (size_t)sqlite3_column_bytes(st, col);
        }
        if (!emit(arg, &row)) {
            *more = true;
            break;
        }
        swap_bufs(&cur, &run->pos);
        run->has_pos = true;
        returned++;
        if (run->limit_left > 0)
            run->limit_left--;
    }
    rc = 0;
    goto done;
step_fail:
    af_error("datastore: running a query: %s", sqlite3_errmsg(sqlite3_db_handle(st)));
done:
    sqlite3_reset(st);
    free(vals);
    free(lens);
out:
    af_ds_buf_release(&cur);
    af_ds_buf_release(&b.s);
    free(b.v);
    free(posv);
    free(endv);
    return rc;
}

/* ---- cursors ------------------------------------------------------------ */

void af_ds_cursor_encode(const struct af_ds_run *run, uint8_t **out, size_t *len)
{
    struct af_ds_buf b = {0};
    uint32_t h = run->plan->shape;
    uint8_t head[6] = {CURSOR_MAGIC,       CURSOR_VERSION,    (uint8_t)(h >> 24),
                       (uint8_t)(h >> 16), (uint8_t)(h >> 8), (uint8_t)h};
    af_ds_buf_put(&b, head, sizeof(head));
    if (run->has_pos)
        af_ds_buf_put(&b, run->pos.p, run->pos.len);
    *out = b.p;
    *len = b.len;
}

bool af_ds_cursor_decode(struct af_ds_run *run, const uint8_t *p, size_t n, bool is_end)
{
    const struct af_ds_plan *plan = run->plan;
    uint32_t h = plan->shape;
    if (n < 6 || p[0] != CURSOR_MAGIC || p[1] != CURSOR_VERSION || p[2] != (uint8_t)(h >> 24) ||
        p[3] != (uint8_t)(h >> 16) || p[4] != (uint8_t)(h >> 8) || p[5] != (uint8_t)h)
        return false;
    p += 6;
    n -= 6;
    struct af_ds_buf *dst = is_end ? &run->end : &run->pos;
    dst->len = 0;
    if (n == 0) {
        /* The start of the query. As an end: nothing. */
        if (is_end)
            run->end_empty = true;
        else
            run->has_pos = false;
        return true;
    }
    size_t n_vals = plan->n_orders + 1;
    struct af_ds_buf *parts = af_xcalloc(n_vals, sizeof(*parts));
    bool ok = tuple_split(p, n, parts, n_vals);
    free(parts);
    if (!ok)
        return false;
    af_ds_buf_put(dst, p, n);
    if (is_end)
        run->has_end = true;
    else
        run->has_pos = true;
    return true;
}
