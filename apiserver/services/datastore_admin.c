/*
 * datastore_admin — entities as the admin console shows them (see
 * datastore_admin.h).
 */
#include "apiserver/services/datastore_admin.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apiserver/services/datastore_wire.h"
#include "common/b64url.h"
#include "common/utf8.h"
#include "common/xalloc.h"

#define MEANING(m) AF__DATASTORE__PROPERTY__MEANING__##m

char *af_ds_admin_key(const ds_reference_t *ref)
{
    size_t n;
    uint8_t *bytes = af_ds_wire_pack(&ref->base, &n);
    char *s = af_b64url_encode(bytes, n);
    free(bytes);
    return s;
}

/* A growable string, for paths. */
struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = af_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void path_elem(struct sbuf *b, const char *type, bool has_id, int64_t id, const char *name)
{
    if (b->len)
        sb_str(b, " > ");
    sb_str(b, type);
    char num[32];
    if (name) {
        sb_str(b, ":\"");
        sb_str(b, name);
        sb_str(b, "\"");
    } else if (has_id) {
        snprintf(num, sizeof(num), ":%" PRId64, id);
        sb_str(b, num);
    } else {
        sb_str(b, ":(incomplete)");
    }
}

char *af_ds_admin_path(const ds_path_t *path)
{
    struct sbuf b = {0};
    for (size_t i = 0; i < path->n_element; i++) {
        const ds_element_t *e = path->element[i];
        path_elem(&b, e->type, e->has_id, e->id, e->name);
    }
    return b.p ? b.p : af_xstrdup("");
}

/* The shortest %g form that reads back as the same double. */
static char *double_text(double d)
{
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, d);
        if (isnan(d) || strtod(buf, NULL) == d)
            break;
    }
    return af_xstrdup(buf);
}

/* A gd:when value: microseconds since the epoch, as UTC. */
static char *when_text(int64_t usec)
{
    int64_t sec = usec / 1000000, frac = usec % 1000000;
    if (frac < 0) {
        frac += 1000000;
        sec--;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    char day[64];
    if (!gmtime_r(&t, &tm) || strftime(day, sizeof(day), "%Y-%m-%d %H:%M:%S", &tm) == 0)
        return af_xasprintf("%" PRId64 " us since the epoch", usec);
    return af_xasprintf("%s.%06d UTC", day, (int)frac);
}

/* A string value's type name by its meaning; NULL: a blob, shown by size. */
static const char *string_type(int meaning)
{
    switch (meaning) {
    case MEANING(BLOB):
    case MEANING(BYTESTRING):
    case MEANING(ENTITY_PROTO):
        return NULL;
    case MEANING(TEXT):
        return "text";
    case MEANING(ATOM_LINK):
        return "link";
    case MEANING(ATOM_CATEGORY):
        return "category";
    case MEANING(GD_EMAIL):
        return "email";
    case MEANING(GD_IM):
        return "im";
    case MEANING(GD_PHONENUMBER):
        return "phone number";
    case MEANING(GD_POSTALADDRESS):
        return "postal address";
    case MEANING(BLOBKEY):
        return "blob key";
    default:
        return "string";
    }
}

void af_ds_admin_value(const ds_property_t *p, size_t text_max, Af__Admin__DsValue *v)
{
    af__admin__ds_value__init(v);
    const ds_value_t *pv = p->value;
    int meaning = p->has_meaning ? (int)p->meaning : 0;
    const char *type;
    char *text;
    if (!pv) {
        type = "null";
        text = af_xstrdup("null");
    } else if (pv->has_int64_value) {
        if (meaning == MEANING(GD_WHEN)) {
            type = "date";
            text = when_text(pv->int64_value);
        } else {
            type = meaning == MEANING(GD_RATING) ? "rating" : "int";
            text = af_xasprintf("%" PRId64, pv->int64_value);
        }
    } else if (pv->has_boolean_value) {
        type = "bool";
        text = af_xstrdup(pv->boolean_value ? "true" : "false");
    } else if (pv->has_string_value) {
        const uint8_t *s = pv->string_value.data;
        size_t n = pv->string_value.len;
        type = string_type(meaning);
        /* Bytes that are not text are a blob whatever the meaning says:
         * their size is what a page can show. */
        if (!type || !af_utf8_valid((const char *)s, n) || memchr(s, '\0', n)) {
            type = meaning == MEANING(ENTITY_PROTO) ? "embedded entity" : "blob";
            text = af_xasprintf("%zu bytes", n);
        } else {
            size_t keep = text_max ? af_utf8_prefix((const char *)s, n, text_max) : n;
            text = af_xstrndup((const char *)s, keep);
            if (keep < n)
                v->has_cut = v->cut = true;
        }
    } else if (pv->has_double_value) {
        type = "float";
        text = double_text(pv->double_value);
    } else if (pv->pointvalue) {
        type = "geo point";
        char *x = double_text(pv->pointvalue->x), *y = double_text(pv->pointvalue->y);
        text = af_xasprintf("%s, %s", x, y);
        free(x);
        free(y);
    } else if (pv->uservalue) {
        type = "user";
        text = af_xstrdup(pv->uservalue->email ? pv->uservalue->email : "");
    } else if (pv->referencevalue) {
        const Af__Datastore__PropertyValue__ReferenceValue *rv = pv->referencevalue;
        type = "key";
        /* The same key as a Reference, for its URL-safe form. */
        ds_element_t *elems = af_xcalloc(rv->n_pathelement ? rv->n_pathelement : 1, sizeof(*elems));
        ds_element_t **ptrs = af_xcalloc(rv->n_pathelement ? rv->n_pathelement : 1, sizeof(*ptrs));
        for (size_t i = 0; i < rv->n_pathelement; i++) {
            const Af__Datastore__PropertyValue__ReferenceValue__PathElement *pe =
                rv->pathelement[i];
            af__datastore__path__element__init(&elems[i]);
            elems[i].type = pe->type;
            elems[i].has_id = pe->has_id;
            elems[i].id = pe->id;
            elems[i].name = pe->name;
            ptrs[i] = &elems[i];
        }
        ds_path_t path = AF__DATASTORE__PATH__INIT;
        path.n_element = rv->n_pathelement;
        path.element = ptrs;
        ds_reference_t ref = AF__DATASTORE__REFERENCE__INIT;
        ref.app = rv->app;
        ref.name_space = rv->name_space;
        ref.path = &path;
        v->key = af_ds_admin_key(&ref);
        text = af_ds_admin_path(&path);
        free(ptrs);
        free(elems);
    } else {
        type = "null";
        text = af_xstrdup("null");
    }
    v->type = af_xstrdup(type);
    v->text = text;
}

void af_ds_admin_value_release(Af__Admin__DsValue *v)
{
    free(v->type);
    free(v->text);
    free(v->key);
    af__admin__ds_value__init(v);
}

/* Appends p to m: to the last property when it has the same name and is
 * a list value, else as a new property. */
static void add_property(Af__Admin__DsEntity *m, const ds_property_t *p, bool indexed,
                         size_t text_max)
{
    Af__Admin__DsProperty *dp = m->n_property ? m->property[m->n_property - 1] : NULL;
    if (!dp || !p->multiple || !dp->multiple || dp->indexed != indexed ||
        strcmp(dp->name, p->name) != 0) {
        dp = af_xmalloc(sizeof(*dp));
        af__admin__ds_property__init(dp);
        dp->name = af_xstrdup(p->name ? p->name : "");
        dp->has_indexed = dp->has_multiple = true;
        dp->indexed = indexed;
        dp->multiple = p->multiple;
        m->property = af_xrealloc(m->property, (m->n_property + 1) * sizeof(*m->property));
        m->property[m->n_property++] = dp;
    }
    Af__Admin__DsValue *v = af_xmalloc(sizeof(*v));
    af_ds_admin_value(p, text_max, v);
    dp->value = af_xrealloc(dp->value, (dp->n_value + 1) * sizeof(*dp->value));
    dp->value[dp->n_value++] = v;
}

Af__Admin__DsEntity *af_ds_admin_entity(const ds_entity_t *e, size_t text_max)
{
    Af__Admin__DsEntity *m = af_xmalloc(sizeof(*m));
    af__admin__ds_entity__init(m);
    const ds_reference_t *key = e->key;
    m->key = af_ds_admin_key(key);
    m->path = af_ds_admin_path(key->path);
    m->app = af_xstrdup(key->app ? key->app : "");
    m->namespace_ = af_xstrdup(key->name_space ? key->name_space : "");
    size_t n = key->path->n_element;
    m->kind = af_xstrdup(n ? key->path->element[n - 1]->type : "");
    for (size_t i = 0; i < e->n_property; i++)
        add_property(m, e->property[i], true, text_max);
    for (size_t i = 0; i < e->n_raw_property; i++)
        add_property(m, e->raw_property[i], false, text_max);
    return m;
}

void af_ds_admin_entity_free(Af__Admin__DsEntity *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_property; i++) {
        Af__Admin__DsProperty *p = m->property[i];
        for (size_t k = 0; k < p->n_value; k++) {
            af_ds_admin_value_release(p->value[k]);
            free(p->value[k]);
        }
        free(p->value);
        free(p->name);
        free(p);
    }
    free(m->property);
    free(m->key);
    free(m->path);
    free(m->app);
    free(m->namespace_);
    free(m->kind);
    free(m);
}
