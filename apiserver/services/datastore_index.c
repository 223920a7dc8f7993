/*
 * datastore_index — the composite index a query needs (datastore_index.h).
 *
 * The rules are App Engine's, as its development server applies them:
 *
 *  1. Normalize. An equality filter on a property that also has an
 *     inequality filter does not count as an equality for the orders; an
 *     order on an equality-only property, or one repeating an earlier
 *     order, orders nothing and goes. Projected and distinct properties
 *     not already used become "exists" entries. An equality filter on
 *     __key__ drops every order (one result at most); an order on __key__
 *     drops the orders after it (keys are unique).
 *  2. Drop what the datastore does by itself, unless there are exists
 *     entries (they come after the orders in the index, so the key order is
 *     no longer the index's own): a trailing ascending __key__ order is the
 *     index's natural order; __key__ filters are a key range of any index
 *     unless an inequality on another property takes the range, or the
 *     query orders by __key__ descending.
 *  3. Decide. With a kind, no inequality, no order and no exists entry,
 *     equality filters on ordinary properties are a merge join of the
 *     built-in single-property indexes: nothing needed, ancestor or not.
 *     With a kind, no ancestor and at most one property in all, the
 *     built-in single-property (or kind) index serves -- except for a
 *     descending __key__ order, which needs an index of its own. A kindless
 *     query never needs one.
 *
 * Queries are bounded by datastore_query.h (64 filters, 16 orders, 32
 * projected properties), so sets are arrays searched linearly.
 */
#include "apiserver/services/datastore_index.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/xalloc.h"

#define OP_LT AF__DATASTORE__QUERY__FILTER__OPERATOR__LESS_THAN
#define OP_LE AF__DATASTORE__QUERY__FILTER__OPERATOR__LESS_THAN_OR_EQUAL
#define OP_GT AF__DATASTORE__QUERY__FILTER__OPERATOR__GREATER_THAN
#define OP_GE AF__DATASTORE__QUERY__FILTER__OPERATOR__GREATER_THAN_OR_EQUAL
#define OP_EQ AF__DATASTORE__QUERY__FILTER__OPERATOR__EQUAL
#define OP_IN AF__DATASTORE__QUERY__FILTER__OPERATOR__IN
#define DIR_DESC AF__DATASTORE__QUERY__ORDER__DIRECTION__DESCENDING

static const char key_prop[] = "__key__";
/* Written by App Engine's log replay; its inequality never takes the
 * index's range. */
static const char log_ts_prop[] = "__unapplied_log_timestamp_us__";

/* Properties no built-in merge join serves. */
static bool is_special(const char *name)
{
    return strcmp(name, key_prop) == 0 || strcmp(name, log_ts_prop) == 0 ||
           strcmp(name, "__scatter__") == 0;
}

/* ---- sets of borrowed names --------------------------------------------- */

struct nameset {
    const char **v;
    size_t n;
};

static bool set_has(const struct nameset *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], name) == 0)
            return true;
    return false;
}

/* Adds name unless present; true when it was added. */
static bool set_add(struct nameset *s, const char *name)
{
    if (set_has(s, name))
        return false;
    s->v = af_xrealloc(s->v, (s->n + 1) * sizeof(*s->v));
    s->v[s->n++] = name;
    return true;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void set_sort(struct nameset *s)
{
    if (s->n > 1)
        qsort(s->v, s->n, sizeof(*s->v), cmp_names);
}

/* ---- the need of a query ------------------------------------------------ */

static bool is_eq(int op)
{
    return op == OP_EQ || op == OP_IN; /* IN of one value is an equality */
}

static bool is_ineq(int op)
{
    return op == OP_LT || op == OP_LE || op == OP_GT || op == OP_GE;
}

/* The name of a filter's one property, or NULL for a malformed filter. */
static const char *filter_name(const Af__Datastore__Query__Filter *f)
{
    return f->n_property == 1 && f->property[0]->name ? f->property[0]->name : NULL;
}

void af_ds_index_need_release(struct af_ds_index_need *need)
{
    free(need->prefix);
    free(need->ordered);
    free(need->group);
    free(need->exists);
    memset(need, 0, sizeof(*need));
}

bool af_ds_index_for_query(const Af__Datastore__Query *q, struct af_ds_index_need *need)
{
    memset(need, 0, sizeof(*need));
    if (!q->kind || !q->kind[0])
        return false;

    /* 1. Normalize. */
    struct nameset eq = {0}, ineq = {0}, used = {0}, exists = {0}, prefix = {0};
    for (size_t i = 0; i < q->n_filter; i++) {
        const char *name = filter_name(q->filter[i]);
        if (name && is_eq(q->filter[i]->op))
            set_add(&eq, name);
        else if (name && is_ineq(q->filter[i]->op))
            set_add(&ineq, name);
    }
    for (size_t i = 0; i < eq.n; i++)
        if (!set_has(&ineq, eq.v[i]))
            set_add(&used, eq.v[i]); /* the equality-only properties */
    bool key_eq = set_has(&used, key_prop);
    struct af_ds_need_order *orders = af_xcalloc(q->n_order + 1, sizeof(*orders));
    size_t n_orders = 0;
    for (size_t i = 0; i < q->n_order; i++) {
        const Af__Datastore__Query__Order *o = q->order[i];
        if (!o->property || !set_add(&used, o->property))
            continue;
        bool desc = o->has_direction && o->direction == DIR_DESC;
        orders[n_orders++] =
            (struct af_ds_need_order){o->property, desc ? AF_DS_NEED_DESC : AF_DS_NEED_ASC};
    }
    for (size_t i = 0; i < ineq.n; i++)
        set_add(&used, ineq.v[i]);
    for (size_t i = 0; i < q->n_property_name; i++)
        if (set_add(&used, q->property_name[i]))
            set_add(&exists, q->property_name[i]);
    for (size_t i = 0; i < q->n_group_by_property_name; i++)
        if (set_add(&used, q->group_by_property_name[i]))
            set_add(&exists, q->group_by_property_name[i]);
    if (key_eq)
        n_orders = 0;
    for (size_t i = 0; i < n_orders; i++) {
        if (strcmp(orders[i].name, key_prop) == 0) {
            n_orders = i + 1;
            break;
        }
    }

    /* 2. What the datastore does natively. */
    bool key_filters = true;
    if (exists.n == 0) {
        bool key_desc = false;
        if (n_orders > 0 && strcmp(orders[n_orders - 1].name, key_prop) == 0) {
            if (orders[n_orders - 1].dir == AF_DS_NEED_ASC)
                n_orders--;
            else
                key_desc = true;
        }
        bool other_ineq = false;
        for (size_t i = 0; i < ineq.n; i++)
            other_ineq |= strcmp(ineq.v[i], key_prop) != 0;
        if (!key_desc && !other_ineq)
            key_filters = false;
    }
    const char *ineq_prop = NULL;
    bool has_ineq = false;
    for (size_t i = 0; i < q->n_filter; i++) {
        const char *name = filter_name(q->filter[i]);
        if (!name || (!key_filters && strcmp(name, key_prop) == 0))
            continue;
        if (is_eq(q->filter[i]->op)) {
            set_add(&prefix, name);
        } else if (is_ineq(q->filter[i]->op)) {
            has_ineq = true;
            if (!ineq_prop && strcmp(name, log_ts_prop) != 0)
                ineq_prop = name;
        }
    }

    /* 3. Decide. */
    bool required = true;
    if (!has_ineq && exists.n == 0 && n_orders == 0) {
        bool special = false;
        for (size_t i = 0; i < prefix.n; i++)
            special |= is_special(prefix.v[i]);
        if (!special)
            required = false;
    }
    if (ineq_prop && n_orders == 0)
        orders[n_orders++] = (struct af_ds_need_order){ineq_prop, AF_DS_NEED_ANY};
    struct nameset group = {0}, plain = {0};
    for (size_t i = 0; i < exists.n; i++) {
        bool grouped = false;
        for (size_t k = 0; k < q->n_group_by_property_name && !grouped; k++)
            grouped = strcmp(q->group_by_property_name[k], exists.v[i]) == 0;
        set_add(grouped ? &group : &plain, exists.v[i]);
    }
    size_t count = prefix.n + n_orders + group.n + plain.n;
    if (!q->ancestor && count <= 1) {
        required = n_orders > 0 && strcmp(orders[0].name, key_prop) == 0 &&
                   orders[0].dir == AF_DS_NEED_DESC;
    }

    free(eq.v);
    free(ineq.v);
    free(used.v);
    free(exists.v);
    if (!required) {
        free(prefix.v);
        free(orders);
        free(group.v);
        free(plain.v);
        return false;
    }
    set_sort(&prefix);
    set_sort(&group);
    set_sort(&plain);
    need->kind = q->kind;
    need->ancestor = q->ancestor != NULL;
    need->prefix = prefix.v;
    need->n_prefix = prefix.n;
    need->ordered = orders;
    need->n_ordered = n_orders;
    need->group = group.v;
    need->n_group = group.n;
    need->exists = plain.v;
    need->n_exists = plain.n;
    return true;
}

/* ---- matching definitions ----------------------------------------------- */

/* True when props[0..n) are the n distinct names, in any order. */
static bool same_set(const struct af_ds_index_prop *props, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t k = 0; k < n && !found; k++)
            found = strcmp(props[k].name, names[i]) == 0;
        if (!found)
            return false;
    }
    return true;
}

bool af_ds_index_serves(const struct af_ds_index *def, const struct af_ds_index_need *need)
{
    if (strcmp(def->kind, need->kind) != 0 || def->ancestor != need->ancestor)
        return false;
    if (def->n_props != need->n_prefix + need->n_ordered + need->n_group + need->n_exists)
        return false;
    const struct af_ds_index_prop *p = def->props;
    if (!same_set(p, need->prefix, need->n_prefix))
        return false;
    p += need->n_prefix;
    for (size_t i = 0; i < need->n_ordered; i++, p++) {
        const struct af_ds_need_order *o = &need->ordered[i];
        if (strcmp(p->name, o->name) != 0)
            return false;
        if ((o->dir == AF_DS_NEED_ASC && p->desc) || (o->dir == AF_DS_NEED_DESC && !p->desc))
            return false;
    }
    if (!same_set(p, need->group, need->n_group))
        return false;
    p += need->n_group;
    return same_set(p, need->exists, need->n_exists);
}

/*
 * Whether def's properties end with the need's postfix (ordered, group,
 * exists) and begin with equality properties of the query only. Sets
 * *prefix_len to the number of those leading properties.
 */
static bool postfix_matches(const struct af_ds_index *def, const struct af_ds_index_need *need,
                            size_t *prefix_len)
{
    size_t post = need->n_ordered + need->n_group + need->n_exists;
    if (strcmp(def->kind, need->kind) != 0 || (def->ancestor && !need->ancestor) ||
        def->n_props < post)
        return false;
    size_t lead = def->n_props - post;
    const struct af_ds_index_prop *p = def->props + lead;
    for (size_t i = 0; i < need->n_ordered; i++, p++) {
        const struct af_ds_need_order *o = &need->ordered[i];
        if (strcmp(p->name, o->name) != 0 || (o->dir == AF_DS_NEED_ASC && p->desc) ||
            (o->dir == AF_DS_NEED_DESC && !p->desc))
            return false;
    }
    if (!same_set(p, need->group, need->n_group) ||
        !same_set(p + need->n_group, need->exists, need->n_exists))
        return false;
    for (size_t i = 0; i < lead; i++) {
        bool found = false;
        for (size_t k = 0; k < need->n_prefix && !found; k++)
            found = strcmp(def->props[i].name, need->prefix[k]) == 0;
        if (!found)
            return false;
    }
    *prefix_len = lead;
    return true;
}

/* Whether a and b end with the same n properties (names and directions). */
static bool same_tail(const struct af_ds_index *a, const struct af_ds_index *b, size_t n)
{
    for (size_t i = 1; i <= n; i++) {
        const struct af_ds_index_prop *x = &a->props[a->n_props - i],
                                      *y = &b->props[b->n_props - i];
        if (x->desc != y->desc || strcmp(x->name, y->name) != 0)
            return false;
    }
    return true;
}

bool af_ds_index_any_serves(const struct af_ds_index *defs, size_t n,
                            const struct af_ds_index_need *need)
{
    for (size_t i = 0; i < n; i++)
        if (af_ds_index_serves(&defs[i], need))
            return true;
    /* Several indexes with one postfix: production joins them (each scans
     * its equality values in the postfix's order, the scans meet on equal
     * keys), so together they serve every equality property any of them
     * leads with, and the ancestor if one of them has it. */
    size_t post = need->n_ordered + need->n_group + need->n_exists;
    size_t *lead = af_xcalloc(n ? n : 1, sizeof(*lead));
    bool *cand = af_xcalloc(n ? n : 1, sizeof(*cand));
    bool *covered = af_xcalloc(need->n_prefix ? need->n_prefix : 1, sizeof(*covered));
    bool served = false;
    for (size_t i = 0; i < n; i++)
        cand[i] = postfix_matches(&defs[i], need, &lead[i]);
    for (size_t i = 0; i < n && !served; i++) {
        if (!cand[i])
            continue;
        memset(covered, 0, (need->n_prefix ? need->n_prefix : 1) * sizeof(*covered));
        bool anc = false;
        for (size_t j = 0; j < n; j++) {
            if (!cand[j] || !same_tail(&defs[i], &defs[j], post))
                continue;
            anc |= defs[j].ancestor;
            for (size_t k = 0; k < need->n_prefix; k++)
                for (size_t m = 0; m < lead[j] && !covered[k]; m++)
                    covered[k] = strcmp(defs[j].props[m].name, need->prefix[k]) == 0;
        }
        served = anc || !need->ancestor;
        for (size_t k = 0; k < need->n_prefix && served; k++)
            served = covered[k];
    }
    free(lead);
    free(cand);
    free(covered);
    return served;
}

/* ---- definitions -------------------------------------------------------- */

static void push_prop(struct af_ds_index *ix, const char *name, bool desc)
{
    ix->props[ix->n_props++] = (struct af_ds_index_prop){af_xstrdup(name), desc};
}

void af_ds_index_suggest(const struct af_ds_index_need *need, struct af_ds_index *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = af_xstrdup(need->kind);
    out->ancestor = need->ancestor;
    size_t n = need->n_prefix + need->n_ordered + need->n_group + need->n_exists;
    out->props = af_xcalloc(n ? n : 1, sizeof(*out->props));
    for (size_t i = 0; i < need->n_prefix; i++)
        push_prop(out, need->prefix[i], false);
    for (size_t i = 0; i < need->n_ordered; i++)
        push_prop(out, need->ordered[i].name, need->ordered[i].dir == AF_DS_NEED_DESC);
    for (size_t i = 0; i < need->n_group; i++)
        push_prop(out, need->group[i], false);
    for (size_t i = 0; i < need->n_exists; i++)
        push_prop(out, need->exists[i], false);
}

void af_ds_index_copy(struct af_ds_index *dst, const struct af_ds_index *src)
{
    *dst = *src;
    dst->kind = af_xstrdup(src->kind);
    dst->props = af_xcalloc(src->n_props ? src->n_props : 1, sizeof(*dst->props));
    for (size_t i = 0; i < src->n_props; i++)
        dst->props[i] =
            (struct af_ds_index_prop){af_xstrdup(src->props[i].name), src->props[i].desc};
}

void af_ds_index_release(struct af_ds_index *ix)
{
    free(ix->kind);
    for (size_t i = 0; i < ix->n_props; i++)
        free(ix->props[i].name);
    free(ix->props);
    memset(ix, 0, sizeof(*ix));
}

bool af_ds_index_equal(const struct af_ds_index *a, const struct af_ds_index *b)
{
    if (strcmp(a->kind, b->kind) != 0 || a->ancestor != b->ancestor || a->n_props != b->n_props)
        return false;
    for (size_t i = 0; i < a->n_props; i++)
        if (strcmp(a->props[i].name, b->props[i].name) != 0 || a->props[i].desc != b->props[i].desc)
            return false;
    return true;
}

/* ---- YAML --------------------------------------------------------------- */

/* A scalar YAML reads back as the same string without quotes: a word of
 * letters, digits, '_', '.' and '-' (not first) that no YAML 1.1 reader
 * takes for a boolean, null or number. */
static bool plain_ok(const char *s)
{
    static const char *const reserved[] = {"y",     "n",  "yes", "no",  "true",
                                           "false", "on", "off", "null"};
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.' || *p == '-'))
            return false;
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (strcasecmp(s, reserved[i]) == 0)
            return false;
    return true;
}

/* Appends s to *out as a YAML scalar: plain when that is safe, else
 * double-quoted with \", \\ and \xNN for control characters, and \N, \L,
 * \P for the three Unicode line breaks YAML folds inside quotes (NEL, LINE
 * and PARAGRAPH SEPARATOR), which would read back as a space. */
static void put_scalar(char **out, size_t *len, size_t *cap, const char *s)
{
    size_t need = *len + 4 * strlen(s) + 3;
    if (need > *cap) {
        *cap = need * 2;
        *out = af_xrealloc(*out, *cap);
    }
    char *o = *out + *len;
    if (plain_ok(s)) {
        size_t n = strlen(s);
        memcpy(o, s, n);
        *len += n;
        return;
    }
    *o++ = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            *o++ = '\\';
            *o++ = (char)*p;
        } else if (*p < 0x20 || *p == 0x7f) {
            o += sprintf(o, "\\x%02x", *p);
        } else if (p[0] == 0xc2 && p[1] == 0x85) {
            memcpy(o, "\\N", 2);
            o += 2;
            p++;
        } else if (p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9)) {
            memcpy(o, p[2] == 0xa8 ? "\\L" : "\\P", 2);
            o += 2;
            p += 2;
        } else {
            *o++ = (char)*p;
        }
    }
    *o++ = '"';
    *len = (size_t)(o - *out);
}

static void put_text(char **out, size_t *len, size_t *cap, const char *s)
{
    size_t n = strlen(s);
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *out = af_xrealloc(*out, *cap);
    }
    memcpy(*out + *len, s, n);
    *len += n;
}

char *af_ds_index_yaml(const struct af_ds_index *ix)
{
    size_t len = 0, cap = 256;
    char *out = af_xmalloc(cap);
    put_text(&out, &len, &cap, "- kind: ");
    put_scalar(&out, &len, &cap, ix->kind);
    put_text(&out, &len, &cap, "\n");
    if (ix->ancestor)
        put_text(&out, &len, &cap, "  ancestor: yes\n");
    if (ix->n_props)
        put_text(&out, &len, &cap, "  properties:\n");
    for (size_t i = 0; i < ix->n_props; i++) {
        put_text(&out, &len, &cap, "  - name: ");
        put_scalar(&out, &len, &cap, ix->props[i].name);
        put_text(&out, &len, &cap, ix->props[i].desc ? "\n    direction: desc\n" : "\n");
    }
    out[len] = '\0';
    return out;
}
