/*
 * datastore — typed datastore_v3 helpers of the C client library
 * (appfront.h, "datastore").
 *
 * Keys and entities are the generated protobuf-c messages of
 * proto/datastore_v3.proto (Reference, EntityProto) behind opaque structs.
 * The messages carry proto2 groups on the wire, so requests and responses
 * go through the group rewriting of apiserver/services/datastore_wire.c,
 * compiled into this file with static linkage (the library links nothing of
 * the server; see datastore_wire.h).
 *
 * Every message this file builds by hand is allocated with malloc and
 * released with protobuf_c_message_free_unpacked(m, NULL), which frees
 * every field through the default allocator: hand-built and unpacked
 * messages are released the same way.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apiserver/client/appfront.h"
#include "apiserver/client/client-internal.h"
#include "datastore_v3.pb-c.h"

#define AF_DS_WIRE_API static
#include "apiserver/services/datastore_wire.c"

#define DS_DEADLINE_MS 10000
/* af_ds_query_run stops collecting here, whatever the limit. */
#define DS_MAX_RESULTS 100000
#define DS_BAD_REQUEST 1

typedef Af__Datastore__Reference ref_t;
typedef Af__Datastore__Path__Element elem_t;
typedef Af__Datastore__EntityProto entity_t;
typedef Af__Datastore__Property prop_t;
typedef Af__Datastore__PropertyValue value_t;

struct af_ds_key {
    ref_t *ref;
};

struct af_ds_entity {
    struct af_ds_key key; /* key.ref is pb->key */
    entity_t *pb;
};

struct af_ds_query {
    Af__Datastore__Query pb;
};

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = af_client_xmalloc(n);
    memcpy(p, s, n);
    return p;
}

static void *xrealloc_array(void *p, size_t n, size_t size)
{
    return wire_xrealloc(p, n * size);
}

static const char *app_id(void)
{
    const char *a = getenv("GAE_APPLICATION");
    return a && a[0] ? a : "dev~app";
}

/* A deep copy through protobuf-c's own encoding (no groups involved). */
static ProtobufCMessage *copy_msg(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = af_client_xmalloc(n);
    protobuf_c_message_pack(m, buf);
    ProtobufCMessage *c = protobuf_c_message_unpack(m->descriptor, NULL, n, buf);
    free(buf);
    if (!c)
        abort(); /* only out of memory can fail here */
    return c;
}

/* Calls method with msg; on success unpacks the answer as resp_desc. */
static ProtobufCMessage *ds_call(const char *method, const ProtobufCMessage *msg,
                                 const ProtobufCMessageDescriptor *resp_desc,
                                 struct af_client_error *err)
{
    size_t n, resp_len;
    uint8_t *req = af_ds_wire_pack(msg, &n);
    uint8_t *resp = NULL;
    int rc = af_client_call("datastore_v3", method, req, n, &resp, &resp_len, err, DS_DEADLINE_MS);
    free(req);
    if (rc != 0)
        return NULL;
    ProtobufCMessage *m = af_ds_wire_unpack(resp_desc, resp, resp_len);
    free(resp);
    if (!m)
        af_client_set_error(err, AF_CLIENT_RPC_ERROR, AF_CLIENT_RPC_PARSE_ERROR,
                            "datastore_v3.%s: the response does not decode", method);
    return m;
}

/* ---- keys --------------------------------------------------------------- */

struct af_ds_key *af_ds_key_new(const char *ns, const struct af_ds_key *parent, const char *kind,
                                const char *name, int64_t id)
{
    ref_t *r;
    if (parent) {
        r = (ref_t *)copy_msg(&parent->ref->base);
    } else {
        r = af_client_xmalloc(sizeof(*r));
        af__datastore__reference__init(r);
        r->app = xstrdup(app_id());
        if (ns && ns[0])
            r->name_space = xstrdup(ns);
        r->path = af_client_xmalloc(sizeof(*r->path));
        af__datastore__path__init(r->path);
    }
    elem_t *e = af_client_xmalloc(sizeof(*e));
    af__datastore__path__element__init(e);
    e->type = xstrdup(kind ? kind : "");
    if (name) {
        e->name = xstrdup(name);
    } else if (id) {
        e->has_id = true;
        e->id = id;
    }
    r->path->element =
        xrealloc_array(r->path->element, r->path->n_element + 1, sizeof(*r->path->element));
    r->path->element[r->path->n_element++] = e;
    struct af_ds_key *k = af_client_xmalloc(sizeof(*k));
    k->ref = r;
    return k;
}

struct af_ds_key *af_ds_key_dup(const struct af_ds_key *key)
{
    struct af_ds_key *k = af_client_xmalloc(sizeof(*k));
    k->ref = (ref_t *)copy_msg(&key->ref->base);
    return k;
}

void af_ds_key_free(struct af_ds_key *key)
{
    if (!key)
        return;
    protobuf_c_message_free_unpacked(&key->ref->base, NULL);
    free(key);
}

static const elem_t *last_elem(const struct af_ds_key *key)
{
    return key->ref->path->element[key->ref->path->n_element - 1];
}

const char *af_ds_key_kind(const struct af_ds_key *key)
{
    return last_elem(key)->type;
}

int64_t af_ds_key_id(const struct af_ds_key *key)
{
    return last_elem(key)->has_id ? last_elem(key)->id : 0;
}

const char *af_ds_key_name(const struct af_ds_key *key)
{
    return last_elem(key)->name;
}

/* ---- entities ----------------------------------------------------------- */

static struct af_ds_entity *entity_wrap(entity_t *pb)
{
    struct af_ds_entity *e = af_client_xmalloc(sizeof(*e));
    e->pb = pb;
    e->key.ref = pb->key;
    return e;
}

struct af_ds_entity *af_ds_entity_new(const struct af_ds_key *key)
{
    entity_t *pb = af_client_xmalloc(sizeof(*pb));
    af__datastore__entity_proto__init(pb);
    pb->key = (ref_t *)copy_msg(&key->ref->base);
    /* Required on the wire; the server fills in the root. */
    pb->entity_group = af_client_xmalloc(sizeof(*pb->entity_group));
    af__datastore__path__init(pb->entity_group);
    return entity_wrap(pb);
}

void af_ds_entity_free(struct af_ds_entity *e)
{
    if (!e)
        return;
    protobuf_c_message_free_unpacked(&e->pb->base, NULL);
    free(e);
}

const struct af_ds_key *af_ds_entity_key(const struct af_ds_entity *e)
{
    return &e->key;
}

/* Appends a property holding v (taken) to e; marks every value of the
 * name multiple once there are two. */
static void add_prop(struct af_ds_entity *e, const char *name, value_t *v, bool indexed,
                     int meaning)
{
    entity_t *pb = e->pb;
    bool multiple = false;
    for (int pass = 0; pass < 2; pass++) {
        prop_t **list = pass ? pb->raw_property : pb->property;
        size_t n = pass ? pb->n_raw_property : pb->n_property;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(list[i]->name, name) == 0) {
                list[i]->multiple = true;
                multiple = true;
            }
        }
    }
    prop_t *p = af_client_xmalloc(sizeof(*p));
    af__datastore__property__init(p);
    p->name = xstrdup(name);
    p->value = v;
    p->multiple = multiple;
    if (meaning) {
        p->has_meaning = true;
        p->meaning = meaning;
    }
    if (indexed) {
        pb->property = xrealloc_array(pb->property, pb->n_property + 1, sizeof(*pb->property));
        pb->property[pb->n_property++] = p;
    } else {
        pb->raw_property =
            xrealloc_array(pb->raw_property, pb->n_raw_property + 1, sizeof(*pb->raw_property));
        pb->raw_property[pb->n_raw_property++] = p;
    }
}

static value_t *new_value(void)
{
    value_t *v = af_client_xmalloc(sizeof(*v));
    af__datastore__property_value__init(v);
    return v;
}

static value_t *string_value(const void *s, size_t len)
{
    value_t *v = new_value();
    v->has_string_value = true;
    v->string_value.data = af_client_xmalloc(len);
    if (len)
        memcpy(v->string_value.data, s, len);
    v->string_value.len = len;
    return v;
}

void af_ds_entity_add_string(struct af_ds_entity *e, const char *name, const char *s, size_t len,
                             int indexed)
{
    /* An unindexed string is "text" to the other client libraries. */
    add_prop(e, name, string_value(s, len), indexed,
             indexed ? 0 : AF__DATASTORE__PROPERTY__MEANING__TEXT);
}

void af_ds_entity_add_int(struct af_ds_entity *e, const char *name, int64_t i, int indexed)
{
    value_t *v = new_value();
    v->has_int64_value = true;
    v->int64_value = i;
    add_prop(e, name, v, indexed, 0);
}

void af_ds_entity_add_double(struct af_ds_entity *e, const char *name, double d, int indexed)
{
    value_t *v = new_value();
    v->has_double_value = true;
    v->double_value = d;
    add_prop(e, name, v, indexed, 0);
}

void af_ds_entity_add_bool(struct af_ds_entity *e, const char *name, int b, int indexed)
{
    value_t *v = new_value();
    v->has_boolean_value = true;
    v->boolean_value = b != 0;
    add_prop(e, name, v, indexed, 0);
}

void af_ds_entity_add_time(struct af_ds_entity *e, const char *name, int64_t unix_us, int indexed)
{
    value_t *v = new_value();
    v->has_int64_value = true;
    v->int64_value = unix_us;
    add_prop(e, name, v, indexed, AF__DATASTORE__PROPERTY__MEANING__GD_WHEN);
}

void af_ds_entity_add_bytes(struct af_ds_entity *e, const char *name, const void *data, size_t len)
{
    add_prop(e, name, string_value(data, len), false, AF__DATASTORE__PROPERTY__MEANING__BLOB);
}

void af_ds_entity_add_key(struct af_ds_entity *e, const char *name, const struct af_ds_key *k,
                          int indexed)
{
    const ref_t *r = k->ref;
    Af__Datastore__PropertyValue__ReferenceValue *rv = af_client_xmalloc(sizeof(*rv));
    af__datastore__property_value__reference_value__init(rv);
    rv->app = xstrdup(r->app);
    if (r->name_space)
        rv->name_space = xstrdup(r->name_space);
    rv->pathelement = af_client_xmalloc((r->path->n_element + 1) * sizeof(*rv->pathelement));
    for (size_t i = 0; i < r->path->n_element; i++) {
        const elem_t *src = r->path->element[i];
        Af__Datastore__PropertyValue__ReferenceValue__PathElement *pe =
            af_client_xmalloc(sizeof(*pe));
        af__datastore__property_value__reference_value__path_element__init(pe);
        pe->type = xstrdup(src->type);
        pe->has_id = src->has_id;
        pe->id = src->id;
        if (src->name)
            pe->name = xstrdup(src->name);
        rv->pathelement[rv->n_pathelement++] = pe;
    }
    value_t *v = new_value();
    v->referencevalue = rv;
    add_prop(e, name, v, indexed, 0);
}

static const value_t *find_value(const struct af_ds_entity *e, const char *name)
{
    const entity_t *pb = e->pb;
    for (size_t i = 0; i < pb->n_property; i++)
        if (strcmp(pb->property[i]->name, name) == 0)
            return pb->property[i]->value;
    for (size_t i = 0; i < pb->n_raw_property; i++)
        if (strcmp(pb->raw_property[i]->name, name) == 0)
            return pb->raw_property[i]->value;
    return NULL;
}

int af_ds_entity_get_string(const struct af_ds_entity *e, const char *name, const char **s,
                            size_t *len)
{
    const value_t *v = find_value(e, name);
    if (!v || !v->has_string_value)
        return 0;
    *s = (const char *)v->string_value.data;
    *len = v->string_value.len;
    return 1;
}

int af_ds_entity_get_int(const struct af_ds_entity *e, const char *name, int64_t *out)
{
    const value_t *v = find_value(e, name);
    if (!v || !v->has_int64_value)
        return 0;
    *out = v->int64_value;
    return 1;
}

int af_ds_entity_get_double(const struct af_ds_entity *e, const char *name, double *out)
{
    const value_t *v = find_value(e, name);
    if (!v || !v->has_double_value)
        return 0;
    *out = v->double_value;
    return 1;
}

int af_ds_entity_get_bool(const struct af_ds_entity *e, const char *name, int *out)
{
    const value_t *v = find_value(e, name);
    if (!v || !v->has_boolean_value)
        return 0;
    *out = v->boolean_value;
    return 1;
}

/* ---- Put, Get, Delete --------------------------------------------------- */

int af_ds_put(struct af_ds_entity *e, struct af_client_error *err)
{
    Af__Datastore__PutRequest req = AF__DATASTORE__PUT_REQUEST__INIT;
    entity_t *one = e->pb;
    req.entity = &one;
    req.n_entity = 1;
    Af__Datastore__PutResponse *r = (Af__Datastore__PutResponse *)ds_call(
        "Put", &req.base, &af__datastore__put_response__descriptor, err);
    if (!r)
        return -1;
    if (r->n_key != 1) {
        protobuf_c_message_free_unpacked(&r->base, NULL);
        af_client_set_error(err, AF_CLIENT_RPC_ERROR, AF_CLIENT_RPC_PARSE_ERROR,
                            "datastore_v3.Put: the answer has no key");
        return -1;
    }
    /* The completed key replaces ours. */
    protobuf_c_message_free_unpacked(&e->pb->key->base, NULL);
    e->pb->key = r->key[0];
    e->key.ref = r->key[0];
    r->key[0] = NULL;
    r->n_key = 0;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

int af_ds_get(const struct af_ds_key *key, struct af_ds_entity **out, struct af_client_error *err)
{
    *out = NULL;
    Af__Datastore__GetRequest req = AF__DATASTORE__GET_REQUEST__INIT;
    ref_t *k = key->ref;
    req.key = &k;
    req.n_key = 1;
    Af__Datastore__GetResponse *r = (Af__Datastore__GetResponse *)ds_call(
        "Get", &req.base, &af__datastore__get_response__descriptor, err);
    if (!r)
        return -1;
    int found = 0;
    if (r->n_entity == 1 && r->entity[0]->entity) {
        *out = entity_wrap(r->entity[0]->entity);
        r->entity[0]->entity = NULL;
        found = 1;
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return found;
}

int af_ds_delete(const struct af_ds_key *key, struct af_client_error *err)
{
    Af__Datastore__DeleteRequest req = AF__DATASTORE__DELETE_REQUEST__INIT;
    ref_t *k = key->ref;
    req.key = &k;
    req.n_key = 1;
    ProtobufCMessage *r =
        ds_call("Delete", &req.base, &af__datastore__delete_response__descriptor, err);
    if (!r)
        return -1;
    protobuf_c_message_free_unpacked(r, NULL);
    return 0;
}

/* ---- queries ------------------------------------------------------------ */

struct af_ds_query *af_ds_query_new(const char *ns, const char *kind)
{
    struct af_ds_query *q = af_client_xmalloc(sizeof(*q));
    af__datastore__query__init(&q->pb);
    q->pb.app = xstrdup(app_id());
    if (ns && ns[0])
        q->pb.name_space = xstrdup(ns);
    if (kind)
        q->pb.kind = xstrdup(kind);
    return q;
}

void af_ds_query_free(struct af_ds_query *q)
{
    if (!q)
        return;
    /* pb is embedded: free its fields, not the struct. */
    Af__Datastore__Query *m = af_client_xmalloc(sizeof(*m));
    *m = q->pb;
    protobuf_c_message_free_unpacked(&m->base, NULL);
    free(q);
}

static void add_filter(struct af_ds_query *q, const char *prop, enum af_ds_op op, value_t *v)
{
    Af__Datastore__Query__Filter *f = af_client_xmalloc(sizeof(*f));
    af__datastore__query__filter__init(f);
    f->op = (Af__Datastore__Query__Filter__Operator)op;
    prop_t *p = af_client_xmalloc(sizeof(*p));
    af__datastore__property__init(p);
    p->name = xstrdup(prop);
    p->value = v;
    f->property = af_client_xmalloc(sizeof(*f->property));
    f->property[0] = p;
    f->n_property = 1;
    q->pb.filter = xrealloc_array(q->pb.filter, q->pb.n_filter + 1, sizeof(*q->pb.filter));
    q->pb.filter[q->pb.n_filter++] = f;
}

void af_ds_query_filter_string(struct af_ds_query *q, const char *prop, enum af_ds_op op,
                               const char *value)
{
    add_filter(q, prop, op, string_value(value, strlen(value)));
}

void af_ds_query_filter_int(struct af_ds_query *q, const char *prop, enum af_ds_op op,
                            int64_t value)
{
    value_t *v = new_value();
    v->has_int64_value = true;
    v->int64_value = value;
    add_filter(q, prop, op, v);
}

void af_ds_query_ancestor(struct af_ds_query *q, const struct af_ds_key *ancestor)
{
    if (q->pb.ancestor)
        protobuf_c_message_free_unpacked(&q->pb.ancestor->base, NULL);
    q->pb.ancestor = (ref_t *)copy_msg(&ancestor->ref->base);
}

void af_ds_query_order(struct af_ds_query *q, const char *prop, int descending)
{
    Af__Datastore__Query__Order *o = af_client_xmalloc(sizeof(*o));
    af__datastore__query__order__init(o);
    o->property = xstrdup(prop);
    if (descending) {
        o->has_direction = true;
        o->direction = AF__DATASTORE__QUERY__ORDER__DIRECTION__DESCENDING;
    }
    q->pb.order = xrealloc_array(q->pb.order, q->pb.n_order + 1, sizeof(*q->pb.order));
    q->pb.order[q->pb.n_order++] = o;
}

void af_ds_query_limit(struct af_ds_query *q, int limit)
{
    q->pb.has_limit = limit >= 0;
    q->pb.limit = limit;
}

void af_ds_query_keys_only(struct af_ds_query *q)
{
    q->pb.has_keys_only = true;
    q->pb.keys_only = true;
}

void af_ds_entities_free(struct af_ds_entity **list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        af_ds_entity_free(list[i]);
    free(list);
}

int af_ds_query_run(const struct af_ds_query *q, struct af_ds_entity ***out, size_t *n,
                    struct af_client_error *err)
{
    *out = NULL;
    *n = 0;
    size_t max = DS_MAX_RESULTS;
    if (q->pb.has_limit && (size_t)q->pb.limit < max)
        max = (size_t)q->pb.limit;
    struct af_ds_entity **list = NULL;
    size_t count = 0;
    Af__Datastore__QueryResult *r = (Af__Datastore__QueryResult *)ds_call(
        "RunQuery", &q->pb.base, &af__datastore__query_result__descriptor, err);
    while (r) {
        if (r->n_result > max - count) {
            protobuf_c_message_free_unpacked(&r->base, NULL);
            af_ds_entities_free(list, count);
            af_client_set_error(err, AF_CLIENT_APP_ERROR, DS_BAD_REQUEST,
                                "datastore_v3: a query returned more results than its limit");
            return -1;
        }
        list = xrealloc_array(list, count + r->n_result + 1, sizeof(*list));
        for (size_t i = 0; i < r->n_result; i++) {
            list[count++] = entity_wrap(r->result[i]);
            r->result[i] = NULL;
        }
        r->n_result = 0;
        if (!r->more_results || count >= max || !r->cursor) {
            /* A query stopped early still holds a server-side cursor. */
            if (r->more_results && r->cursor) {
                struct af_client_error ignored;
                ProtobufCMessage *v = ds_call("DeleteCursor", &r->cursor->base,
                                              &af__datastore__void_proto__descriptor, &ignored);
                if (v)
                    protobuf_c_message_free_unpacked(v, NULL);
            }
            protobuf_c_message_free_unpacked(&r->base, NULL);
            *out = list;
            *n = count;
            return 0;
        }
        Af__Datastore__NextRequest next = AF__DATASTORE__NEXT_REQUEST__INIT;
        next.cursor = r->cursor;
        next.has_count = true;
        next.count = (int32_t)(max - count < 1000 ? max - count : 1000);
        Af__Datastore__QueryResult *r2 = (Af__Datastore__QueryResult *)ds_call(
            "Next", &next.base, &af__datastore__query_result__descriptor, err);
        protobuf_c_message_free_unpacked(&r->base, NULL);
        r = r2;
    }
    af_ds_entities_free(list, count);
    return -1;
}
