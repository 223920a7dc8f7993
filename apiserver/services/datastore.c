/*
 * datastore — the "datastore_v3" service on embedded SQLite
 * (docs/datastore.md).
 *
 * This file dispatches the methods, keeps the in-memory state of
 * transactions and query cursors, and turns requests into store operations.
 * The pieces: datastore_wire (proto2 groups), datastore_key (encodings and
 * key checks), datastore_store (SQLite), datastore_query (plans and scans).
 *
 * Transactions are optimistic, per entity group:
 *  - BeginTransaction takes a snapshot: a connection of its own with an open
 *    SQLite read transaction, so every read of the transaction (Get and
 *    ancestor queries) sees the database as of Begin, whatever commits
 *    meanwhile. As in App Engine, reads do not see the transaction's own
 *    writes.
 *  - Each entity group the transaction touches (reads or writes) is noted
 *    with its version in the snapshot. Writes are buffered in memory.
 *  - Commit takes the write lock, compares every noted group's version with
 *    the current one, and applies the buffered writes in one SQLite
 *    transaction only if none moved; otherwise CONCURRENT_TRANSACTION. Every
 *    write bumps its group's version, transactional or not.
 * This is snapshot isolation with first-committer-wins per group, which for
 * the groups a transaction touched is serializable.
 *
 * Eventual consistency (datastore_eventual.h): under the policies `time`
 * and `random` every write goes to its group's durable job log, in the
 * SQLite transaction that acknowledges it, and global queries see it once
 * it is applied. A Get, an ancestor query and a new write roll their group
 * forward first. A transaction's snapshot may hold jobs of a group it
 * touches for the first time: the group is rolled forward and the snapshot
 * taken again, which is sound only while no group it already noted moved
 * (otherwise it could never commit, and says so at once, as dev_appserver
 * does).
 *
 * Other services' work can wait for a transaction (tasks added in it): the
 * datastore owns the handles and tells them how each transaction ends
 * through txn_hooks.h. Commit prepares their work before applying the
 * writes and commits it after, so a Commit answered OK has both.
 *
 * Runs on the backend thread only (apiserver/service.h): no locks.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "apiserver/service.h"
#include "apiserver/services/datastore_admin.h"
#include "apiserver/services/datastore_eventual.h"
#include "apiserver/services/datastore_index.h"
#include "apiserver/services/datastore_index_yaml.h"
#include "apiserver/services/datastore_key.h"
#include "apiserver/services/datastore_query.h"
#include "apiserver/services/datastore_store.h"
#include "apiserver/services/datastore_wire.h"
#include "apiserver/services/pbwire.h"
#include "apiserver/services/txn_hooks.h"
#include "common/b64url.h"
#include "common/log.h"
#include "common/xalloc.h"

#define ERR_BAD_REQUEST AF__DATASTORE__ERROR__ERROR_CODE__BAD_REQUEST
#define ERR_CONCURRENT AF__DATASTORE__ERROR__ERROR_CODE__CONCURRENT_TRANSACTION
#define ERR_INTERNAL AF__DATASTORE__ERROR__ERROR_CODE__INTERNAL_ERROR
#define ERR_NEED_INDEX AF__DATASTORE__ERROR__ERROR_CODE__NEED_INDEX

#define MEANING_TEXT AF__DATASTORE__PROPERTY__MEANING__TEXT
#define MEANING_BLOB AF__DATASTORE__PROPERTY__MEANING__BLOB
#define MEANING_INDEX_VALUE AF__DATASTORE__PROPERTY__MEANING__INDEX_VALUE

/* App Engine's limits. */
#define DS_MAX_ENTITY_BYTES (1u << 20)     /* one encoded entity */
#define DS_MAX_BATCH 1000                  /* keys or entities in one Get, Put or Delete */
#define DS_MAX_GROUPS 25                   /* entity groups in one cross-group transaction */
#define DS_MAX_ID ((INT64_C(1) << 53) - 1) /* ids stay exact in JavaScript clients */

/* Our bounds. Open transactions hold a SQLite connection each; a program
 * that leaks them is told so instead of exhausting file descriptors. */
#define DS_MAX_TXNS 256
#define DS_TXN_IDLE_NS (60ull * 1000000000ull) /* the API's default deadline */
#define DS_POOL_IDLE 8                         /* idle snapshot connections kept */
#define DS_MAX_CURSORS 1000
#define DS_CURSOR_IDLE_NS (600ull * 1000000000ull)
/* A query batch stops growing here, well under the 32 MiB API response. */
#define DS_MAX_BATCH_BYTES (8u << 20)
/* A Get answer must fit the API's 32 MiB response; past this, the call is
 * refused rather than built (the Go library cannot take deferred keys). */
#define DS_MAX_GET_BYTES (30u << 20)
#define DS_DEFAULT_BATCH 1000

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------------ */
/* State                                                                     */
/* ------------------------------------------------------------------------ */

struct ds_group {
    char *app, *ns; /* to find the partition at commit if it was new */
    int64_t part;   /* 0: the partition did not exist in the snapshot */
    struct af_ds_buf root;
    int64_t version; /* in the transaction's snapshot */
};

struct ds_mutation {
    bool is_put;
    char *app, *ns;
    struct af_ds_buf key, root;
    uint8_t *data; /* put: the entity, official bytes */
    size_t data_len;
};

struct ds_txn {
    struct ds_txn *next;
    uint64_t handle;
    char *app;
    bool xg, read_only;
    struct af_ds_conn *snap; /* connection holding the snapshot */
    bool jobs_seen;          /* the snapshot may hold pending jobs */
    struct ds_group *groups;
    size_t n_groups;
    struct ds_mutation *muts;
    size_t n_muts;
    uint64_t last_used;
};

struct ds_cursor {
    struct ds_cursor *next;
    uint64_t handle;
    uint64_t txn; /* 0: not in a transaction */
    struct af_ds_plan *plan;
    struct af_ds_run run;
    uint64_t last_used;
};

struct ds_state {
    char *path;
    struct af_ds_conn *db; /* NULL when the file could not be opened */
    char open_error[512];
    struct af_ds_eventual ev; /* --datastore_consistency_policy and pending writes */
    struct ds_txn *txns;
    size_t n_txns;
    struct af_ds_conn *pool[DS_POOL_IDLE];
    size_t n_pool;
    struct ds_cursor *cursors;
    size_t n_cursors;
    uint64_t next_handle;

    /* Composite indexes (docs/datastore.md, "Indexes"). */
    struct af_index_yaml *index_yaml; /* index.yaml as last read; NULL: no app directory */
    struct stat index_st;             /* its file then (index_st_ok: it existed) */
    bool index_st_ok;
    struct af_ds_index *gen; /* its generated section, then what queries added */
    size_t n_gen;
    bool require_indexes;
    bool index_said; /* the file could not or may not be written: said once */
};

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static void parse_error(struct af_result *res, const char *method)
{
    af_result_rpc_error(res, AF_RPC_PARSE_ERROR, "datastore_v3.%s: the request does not decode",
                        method);
}

static void internal_error(struct af_result *res, const char *what)
{
    af_result_app_error(res, ERR_INTERNAL, "datastore: %s failed (see appfront's log)", what);
}

static bool db_ready(struct ds_state *s, struct af_result *res)
{
    if (s->db)
        return true;
    af_result_app_error(res, ERR_INTERNAL, "datastore: unavailable: %s", s->open_error);
    return false;
}

static void put_varint(struct af_ds_buf *b, uint64_t v)
{
    uint8_t tmp[10];
    af_ds_buf_put(b, tmp, (size_t)(af_pb_put_varint(tmp, v) - tmp));
}

static void put_len_field(struct af_ds_buf *b, uint32_t num, const uint8_t *data, size_t n)
{
    put_varint(b, ((uint64_t)num << 3) | AF_PB_LEN);
    put_varint(b, n);
    af_ds_buf_put(b, data, n);
}

static void result_buf(struct af_result *res, struct af_ds_buf *b)
{
    if (!b->p)
        b->p = af_xmalloc(1);
    af_result_ok(res, b->p, b->len);
    b->p = NULL;
    b->len = b->cap = 0;
}

static void result_msg(struct af_result *res, const ProtobufCMessage *m)
{
    size_t n;
    uint8_t *out = af_ds_wire_pack(m, &n);
    af_result_ok(res, out, n);
}

static const char *ns_of(const ds_reference_t *key)
{
    return key->name_space ? key->name_space : "";
}

/* The key encoding of a whole key and of its entity group's root. */
static void key_blobs(const ds_reference_t *key, struct af_ds_buf *k, struct af_ds_buf *root)
{
    af_ds_path_encode(k, key->path, key->path->n_element);
    if (root)
        af_ds_path_encode(root, key->path, 1);
}

static uint64_t new_handle(struct ds_state *s)
{
    return s->next_handle++;
}

/* ------------------------------------------------------------------------ */
/* Transactions                                                              */
/* ------------------------------------------------------------------------ */

static struct af_ds_conn *pool_get(struct ds_state *s)
{
    if (s->n_pool)
        return s->pool[--s->n_pool];
    char err[256];
    struct af_ds_conn *c = af_ds_conn_open(s->path, false, err, sizeof(err));
    if (!c)
        af_error("datastore: %s", err);
    return c;
}

static void pool_put(struct ds_state *s, struct af_ds_conn *c)
{
    if (!c)
        return;
    af_ds_rollback(c);
    if (s->n_pool < DS_POOL_IDLE)
        s->pool[s->n_pool++] = c;
    else
        af_ds_conn_close(c);
}

static void txn_free(struct ds_state *s, struct ds_txn *t)
{
    pool_put(s, t->snap);
    for (size_t i = 0; i < t->n_groups; i++) {
        af_ds_buf_release(&t->groups[i].root);
        free(t->groups[i].app);
        free(t->groups[i].ns);
    }
    free(t->groups);
    for (size_t i = 0; i < t->n_muts; i++) {
        af_ds_buf_release(&t->muts[i].key);
        af_ds_buf_release(&t->muts[i].root);
        free(t->muts[i].data);
        free(t->muts[i].app);
        free(t->muts[i].ns);
    }
    free(t->muts);
    free(t->app);
    free(t);
}

static void txn_unlink(struct ds_state *s, struct ds_txn *t)
{
    for (struct ds_txn **pp = &s->txns; *pp; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            s->n_txns--;
            return;
        }
    }
}

/* Drops transactions idle longer than the API deadline: their caller gave
 * up long ago, and they pin a snapshot and a connection. */
static void txn_expire(struct ds_state *s, uint64_t now)
{
    struct ds_txn **pp = &s->txns;
    while (*pp) {
        struct ds_txn *t = *pp;
        if (now - t->last_used > DS_TXN_IDLE_NS) {
            *pp = t->next;
            s->n_txns--;
            af_info("datastore: transaction %" PRIu64 " idle for 60 s, rolled back", t->handle);
            af_txn_abort(t->handle);
            txn_free(s, t);
        } else {
            pp = &t->next;
        }
    }
}

/* Finds the transaction of a request. Sets res and returns NULL when it does
 * not exist (committed, rolled back or expired). */
static struct ds_txn *txn_find(struct ds_state *s, const Af__Datastore__Transaction *tx,
                               struct af_result *res)
{
    for (struct ds_txn *t = s->txns; t; t = t->next) {
        if (t->handle == tx->handle) {
            t->last_used = now_ns();
            return t;
        }
    }
    af_result_app_error(res, ERR_BAD_REQUEST,
                        "datastore: transaction %" PRIu64
                        " does not exist (already committed or rolled back, or expired)",
                        (uint64_t)tx->handle);
    return NULL;
}

/* af_txn_touch for other services: whether handle is open, and it is used. */
static bool txn_touch_handle(void *arg, uint64_t handle)
{
    struct ds_state *s = arg;
    for (struct ds_txn *t = s->txns; t; t = t->next) {
        if (t->handle == handle) {
            t->last_used = now_ns();
            return true;
        }
    }
    return false;
}

/* The current version of a noted group (0: never written), read on the
 * main connection. */
static int group_version_now(struct ds_state *s, const struct ds_group *g, int64_t *v)
{
    int64_t part = g->part;
    *v = 0;
    /* A partition new since the snapshot may hold the group by now. */
    if (!part && af_ds_partition(s->db, g->app, g->ns, false, &part) != 0)
        return -1;
    if (part && af_ds_group_version(s->db, part, g->root.p, g->root.len, v) != 0)
        return -1;
    return 0;
}

/*
 * t's snapshot holds jobs of group (part, root), which t touches for the
 * first time: rolls the group forward and takes the snapshot again. Sound
 * only while no group t noted has moved since (their data is then what t
 * read: they had no jobs, and any write would have moved them); otherwise
 * t could never commit and fails now with CONCURRENT_TRANSACTION.
 */
static bool txn_resnap(struct ds_state *s, struct ds_txn *t, int64_t part,
                       const struct af_ds_buf *root, struct af_result *res)
{
    if (af_ds_ev_catch_up(&s->ev, s->db, part, root->p, root->len) != 0) {
        internal_error(res, "applying an entity group's pending writes");
        return false;
    }
    for (size_t i = 0; i < t->n_groups; i++) {
        int64_t v;
        if (group_version_now(s, &t->groups[i], &v) != 0) {
            internal_error(res, "reading an entity group version");
            return false;
        }
        if (v != t->groups[i].version) {
            af_result_app_error(res, ERR_CONCURRENT,
                                "datastore: concurrent transaction: an entity group this "
                                "transaction used was modified after it began");
            return false;
        }
    }
    af_ds_rollback(t->snap);
    if (af_ds_begin_read(t->snap) != 0) {
        internal_error(res, "taking a transaction's snapshot");
        return false;
    }
    t->jobs_seen = s->ev.pending > 0;
    return true;
}

/*
 * Notes that transaction t touches group (part, root), reading its version
 * in the snapshot the first time (after rolling the group forward when the
 * snapshot holds its pending writes). Enforces the group limits. Returns
 * false with res set on failure.
 */
static bool txn_touch(struct ds_state *s, struct ds_txn *t, const char *app, const char *ns,
                      int64_t part, const struct af_ds_buf *root, struct af_result *res)
{
    for (size_t i = 0; i < t->n_groups; i++) {
        const struct ds_group *g = &t->groups[i];
        if (strcmp(g->app, app) == 0 && strcmp(g->ns, ns) == 0 && g->root.len == root->len &&
            memcmp(g->root.p, root->p, root->len) == 0)
            return true;
    }
    if (t->n_groups >= 1 && !t->xg) {
        af_result_app_error(res, ERR_BAD_REQUEST,
                            "datastore: a transaction that is not cross-group (xg) can only "
                            "touch one entity group");
        return false;
    }
    if (t->n_groups >= DS_MAX_GROUPS) {
        af_result_app_error(res, ERR_BAD_REQUEST,
                            "datastore: a cross-group transaction can touch at most %d entity "
                            "groups",
                            DS_MAX_GROUPS);
        return false;
    }
    if (t->jobs_seen && part != 0) {
        bool pending;
        if (af_ds_job_group_pending(t->snap, part, root->p, root->len, &pending) != 0) {
            internal_error(res, "looking for an entity group's pending writes");
            return false;
        }
        if (pending && !txn_resnap(s, t, part, root, res))
            return false;
    }
    int64_t v = 0;
    if (part != 0 && af_ds_group_version(t->snap, part, root->p, root->len, &v) != 0) {
        internal_error(res, "reading an entity group version");
        return false;
    }
    t->groups = af_xrealloc(t->groups, (t->n_groups + 1) * sizeof(*t->groups));
    struct ds_group *g = &t->groups[t->n_groups++];
    memset(g, 0, sizeof(*g));
    g->app = af_xstrdup(app);
    g->ns = af_xstrdup(ns);
    g->part = part;
    af_ds_buf_put(&g->root, root->p, root->len);
    g->version = v;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Ids                                                                       */
/* ------------------------------------------------------------------------ */

/* One id sequence for everything: AllocateIds requests carry no app (the Go
 * library sends an empty one), so per-app sequences could hand out an id a
 * Put already used. Ids stay unique in the whole file. */
static const char id_scope[] = "";

/* Raises the counter past every id of key (explicit ids included), so an
 * automatic id never collides with one a program chose. */
static void note_ids(const ds_reference_t *key, int64_t *next)
{
    for (size_t i = 0; i < key->path->n_element; i++) {
        const ds_element_t *e = key->path->element[i];
        if (e->has_id && e->id >= *next)
            *next = e->id + 1;
    }
}

/* ------------------------------------------------------------------------ */
/* Entities                                                                  */
/* ------------------------------------------------------------------------ */

/* The index rows of an entity: one per value of each indexed property.
 * Values live in vals (one buffer, offsets fixed after it stops growing). */
struct ds_rows {
    struct af_ds_index_row *rows;
    size_t n;
    struct af_ds_buf vals;
    size_t *offs;
};

static void rows_release(struct ds_rows *r)
{
    free(r->rows);
    free(r->offs);
    af_ds_buf_release(&r->vals);
    memset(r, 0, sizeof(*r));
}

/* Computes the index rows of e. Returns NULL or a malloc'd reason. */
static char *entity_rows(const ds_entity_t *e, struct ds_rows *r)
{
    memset(r, 0, sizeof(*r));
    r->rows = af_xcalloc(e->n_property + 1, sizeof(*r->rows));
    r->offs = af_xcalloc(e->n_property + 1, sizeof(*r->offs));
    for (size_t i = 0; i < e->n_property; i++) {
        const ds_property_t *p = e->property[i];
        /* Long text and blobs are never indexed, even when listed among the
         * indexed properties. */
        if (p->has_meaning && (p->meaning == MEANING_TEXT || p->meaning == MEANING_BLOB))
            continue;
        if (p->value->has_string_value && p->value->string_value.len > AF_DS_MAX_INDEXED_STRING)
            return af_xasprintf("the indexed property \"%s\" is %zu bytes long; indexed strings "
                                "are limited to %d bytes (store it unindexed)",
                                p->name, p->value->string_value.len, AF_DS_MAX_INDEXED_STRING);
        r->offs[r->n] = r->vals.len;
        af_ds_value_encode(&r->vals, p->value);
        r->rows[r->n].name = p->name;
        r->rows[r->n].value_len = r->vals.len - r->offs[r->n];
        r->n++;
    }
    for (size_t i = 0; i < r->n; i++)
        r->rows[i].value = r->vals.p + r->offs[i];
    return NULL;
}

/* Writes a (normalized) entity in the current write transaction. */
static int write_entity(struct af_ds_conn *c, int64_t part, const struct af_ds_buf *key,
                        const ds_entity_t *e, const uint8_t *data, size_t len, char **why)
{
    struct ds_rows rows;
    *why = entity_rows(e, &rows);
    if (*why) {
        rows_release(&rows);
        return -1;
    }
    const char *kind = e->key->path->element[e->key->path->n_element - 1]->type;
    int rc = af_ds_entity_put(c, part, key->p, key->len, kind, data, len, rows.rows, rows.n);
    rows_release(&rows);
    return rc;
}

/* Applies a job's write (datastore_eventual.h's callback): the entity was
 * checked when the write was acknowledged. */
static int apply_write(void *arg, struct af_ds_conn *c, int64_t part,
                       const struct af_ds_job_write *w)
{
    (void)arg;
    if (!w->is_put) {
        bool existed;
        return af_ds_entity_delete(c, part, w->key, w->key_len, &existed);
    }
    ds_entity_t *e =
        (ds_entity_t *)af_ds_wire_unpack(&af__datastore__entity_proto__descriptor, w->data, w->data_len);
    if (!e || !e->key || !e->key->path || !e->key->path->n_element) {
        if (e)
            protobuf_c_message_free_unpacked(&e->base, NULL);
        af_error("datastore: a pending write holds an entity that does not decode");
        return -1;
    }
    struct af_ds_buf key = {.p = w->key, .len = w->key_len};
    char *why = NULL;
    int rc = write_entity(c, part, &key, e, w->data, w->data_len, &why);
    protobuf_c_message_free_unpacked(&e->base, NULL);
    free(why);
    return rc;
}

/* The groups one write call (Put, Delete, Commit) writes to under an
 * eventual policy: each rolled forward once, before the call's first write
 * to it, then given one job that holds all the call's writes to it. */
struct call_groups {
    struct call_group {
        int64_t part;
        struct af_ds_buf root;
        int64_t job; /* 0: no write yet */
        int64_t n;   /* writes in the job */
    } *g;
    size_t n;
};

static void call_groups_release(struct call_groups *cg)
{
    for (size_t i = 0; i < cg->n; i++)
        af_ds_buf_release(&cg->g[i].root);
    free(cg->g);
    memset(cg, 0, sizeof(*cg));
}

/* The call's entry for group (part, root), rolling the group forward the
 * first time. NULL on an SQLite failure. */
static struct call_group *call_group(struct ds_state *s, struct call_groups *cg, int64_t part,
                                     const struct af_ds_buf *root)
{
    for (size_t i = 0; i < cg->n; i++) {
        struct call_group *g = &cg->g[i];
        if (g->part == part && g->root.len == root->len &&
            memcmp(g->root.p, root->p, root->len) == 0)
            return g;
    }
    if (af_ds_ev_apply_group(&s->ev, s->db, part, root->p, root->len) != 0)
        return NULL;
    cg->g = af_xrealloc(cg->g, (cg->n + 1) * sizeof(*cg->g));
    struct call_group *g = &cg->g[cg->n++];
    memset(g, 0, sizeof(*g));
    g->part = part;
    af_ds_buf_put(&g->root, root->p, root->len);
    return g;
}

/* Appends a put (data) or a delete (data NULL) of key to the group's job. */
static int call_group_write(struct ds_state *s, struct call_group *g, const struct af_ds_buf *key,
                            const uint8_t *data, size_t len)
{
    if (!g->job && af_ds_ev_job_new(&s->ev, s->db, g->part, g->root.p, g->root.len, &g->job) != 0)
        return -1;
    return af_ds_job_write_add(s->db, g->job, ++g->n, key->p, key->len, data, len);
}

/*
 * Writes a checked entity in the current write transaction on s->db:
 * directly under `consistent`, else into its group's job. *why is set (and
 * -1 returned) when the entity cannot be indexed.
 */
static int store_put(struct ds_state *s, struct call_groups *cg, int64_t part,
                     const struct af_ds_buf *key, const struct af_ds_buf *root,
                     const ds_entity_t *e, const uint8_t *data, size_t len, char **why)
{
    if (!af_ds_ev_deferred(&s->ev))
        return write_entity(s->db, part, key, e, data, len, why);
    struct ds_rows rows; /* refused now, not when applied */
    *why = entity_rows(e, &rows);
    rows_release(&rows);
    if (*why)
        return -1;
    struct call_group *g = call_group(s, cg, part, root);
    return g ? call_group_write(s, g, key, data, len) : -1;
}

/* Deletes key in the current write transaction on s->db, the same way;
 * *changed says whether there was an entity to delete (with the group's
 * writes so far counted). */
static int store_delete(struct ds_state *s, struct call_groups *cg, int64_t part,
                        const struct af_ds_buf *key, const struct af_ds_buf *root, bool *changed)
{
    if (!af_ds_ev_deferred(&s->ev))
        return af_ds_entity_delete(s->db, part, key->p, key->len, changed);
    struct call_group *g = call_group(s, cg, part, root);
    if (!g)
        return -1;
    uint8_t *data = NULL;
    size_t len;
    if (af_ds_entity_get(s->db, part, key->p, key->len, &data, &len) != 0)
        return -1;
    /* An earlier write of this call may have put it. */
    *changed = data != NULL || g->n > 0;
    free(data);
    return *changed ? call_group_write(s, g, key, NULL, 0) : 0;
}

/*
 * Checks and completes one entity of a Put: validates the key (allocating
 * an id from *next_id when incomplete), sets entity_group to the root,
 * checks properties and size. On success the entity's official bytes are in
 * *data. Returns NULL, or a malloc'd reason for BAD_REQUEST.
 */
static char *prepare_entity(ds_entity_t *e, int64_t *next_id, uint8_t **data, size_t *len,
                            bool *allocated)
{
    *allocated = false;
    if (!e->key)
        return af_xstrdup("an entity has no key");
    const char *bad = af_ds_key_check(e->key, true);
    if (bad)
        return af_xasprintf("invalid entity key: %s", bad);
    ds_element_t *last = e->key->path->element[e->key->path->n_element - 1];
    if (!last->has_id && !last->name) {
        if (*next_id > DS_MAX_ID)
            return af_xstrdup("the id space is exhausted");
        last->has_id = true;
        last->id = (*next_id)++;
        *allocated = true;
    }
    note_ids(e->key, next_id);
    for (size_t i = 0; i < e->n_property; i++)
        if (!e->property[i]->value || !e->property[i]->name)
            return af_xstrdup("a property has no name or value");
    for (size_t i = 0; i < e->n_raw_property; i++)
        if (!e->raw_property[i]->value || !e->raw_property[i]->name)
            return af_xstrdup("a property has no name or value");

    /* entity_group is the root's path, whatever the client sent. */
    ds_path_t *eg = e->entity_group;
    if (!eg) {
        eg = af_xmalloc(sizeof(*eg));
        af__datastore__path__init(eg);
        e->entity_group = eg;
    }
    ds_element_t *root = e->key->path->element[0];
    ds_element_t **saved = eg->element;
    size_t saved_n = eg->n_element;
    eg->element = &root;
    eg->n_element = 1;
    *data = af_ds_wire_pack(&e->base, len);
    eg->element = saved;
    eg->n_element = saved_n;
    if (*len > DS_MAX_ENTITY_BYTES) {
        free(*data);
        *data = NULL;
        return af_xasprintf("an entity of kind \"%s\" is %zu bytes; the limit is %u bytes",
                            last->type, *len, DS_MAX_ENTITY_BYTES);
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Get                                                                       */
/* ------------------------------------------------------------------------ */

static void ds_get(void *state, const struct af_call *call, struct af_result *res)
{
    struct ds_state *s = state;
    Af__Datastore__GetRequest *req = (Af__Datastore__GetRequest *)af_ds_wire_unpack(
        &af__datastore__get_request__descriptor, call->request, call->request_len);
    if (!req) {
        parse_error(res, "Get");
        return;
    }
    struct af_ds_buf out = {0}, key = {0}, root = {0};
    if (!db_ready(s, res))
        goto done;
    if (req->n_key > DS_MAX_BATCH) {
        af_result_app_error(res, ERR_BAD_REQUEST,
                            "datastore: cannot get more than %d keys in "
                            "one call (got %zu)",
                            DS_MAX_BATCH, req->n_key);
        goto done;
    }
    struct ds_txn *t = NULL;
    if (req->transaction && !(t = txn_find(s, req->transaction, res)))
        goto done;
    struct af_ds_conn *c = t ? t->snap : s->db;
    for (size_t i = 0; i < req->n_key; i++) {
        const char *bad = af_ds_key_check(req->key[i], false);
        if (bad) {
            af_result_app_error(res, ERR_BAD_REQUEST, "datastore: invalid key: %s", bad);
            goto done;
        }
    }
    for (size_t i = 0; i < req->n_key; i++) {
        const ds_reference_t *k = req->key[i];
        int64_t part;
        if (af_ds_partition(c, k->app, ns_of(k), false, &part) != 0) {
            internal_error(res, "Get");
            goto done;
        }
        key.len = root.len = 0;
        key_blobs(k, &key, &root);
        if (t && !txn_touch(s, t, k->app, ns_of(k), part, &root, res))
            goto done;
        /* failover_ms asks for an eventually consistent read (the Python
         * library's EVENTUAL_CONSISTENCY read policy): what is applied, as
         * in dev_appserver. */
        if (!t && !req->has_failover_ms &&
            af_ds_ev_catch_up(&s->ev, s->db, part, root.p, root.len) != 0) {
            internal_error(res, "Get");
            goto done;
        }
        uint8_t *data = NULL;
        size_t len = 0;
        if (part && af_ds_entity_get(c, part, key.p, key.len, &data, &len) != 0) {
            internal_error(res, "Get");
            goto done;
        }
        if (out.len + len > DS_MAX_GET_BYTES) {
            free(data);
            af_result_app_error(res, ERR_BAD_REQUEST,
                                "datastore: the %zu entities asked for exceed the 32 MiB answer "
                                "limit; get fewer keys per call",
                                req->n_key);
            goto done;
        }
        /* GetResponse.Entity is a group: entity = 2 when found, key = 4
         * when not (the stored bytes are already the official encoding). */
        put_varint(&out, (1 << 3) | AF_PB_SGROUP);
        if (data) {
            put_len_field(&out, 2, data, len);
            free(data);
        } else {
            size_t kn;
            uint8_t *kb = af_ds_wire_pack(&k->base, &kn);
            put_len_field(&out, 4, kb, kn);
            free(kb);
        }
        put_varint(&out, (1 << 3) | AF_PB_EGROUP);
    }
    result_buf(res, &out);
done:
    af_ds_buf_release(&out);
    af_ds_buf_release(&key);
    af_ds_buf_release(&root);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* ------------------------------------------------------------------------ */
/* Put and Delete                                                            */
/* ------------------------------------------------------------------------ */

/* Buffers a write of t; takes data. */
static void txn_add_mutation(struct ds_txn *t, bool is_put, const ds_reference_t *k,
                             const struct af_ds_buf *key, const struct af_ds_buf *root,
                             uint8_t *data, size_t len)
{
    t->muts = af_xrealloc(t->muts, (t->n_muts + 1) * sizeof(*t->muts));
    struct ds_mutation *m = &t->muts[t->n_muts++];
    memset(m, 0, sizeof(*m));
    m->is_put = is_put;
    m->app = af_xstrdup(k->app);
    m->ns = af_xstrdup(ns_of(k));
    af_ds_buf_put(&m->key, key->p, key->len);
    af_ds_buf_put(&m->root, root->p, root->len);
    m->data = data;
    m->data_len = len;
}

/* Allocates n ids and persists the counter at once (its own write
 * transaction): an id handed out must never come back, even if the
 * transaction that asked for it never commits. */
static int reserve_ids(struct ds_state *s, int64_t n, int64_t floor, int64_t *first)
{
    if (af_ds_begin_write(s->db) != 0)
        return -1;
    int64_t next;
    if (af_ds_counter_get(s->db, id_scope, &next) != 0)
        goto fail;
    if (next < floor)
        next = floor;
    *first = next;
    if (af_ds_counter_set(s->db, id_scope, next + n) != 0)
        goto fail;
    return af_ds_commit(s->db);
fail:
    af_ds_rollback(s->db);
    return -1;
}

static void put_in_txn(struct ds_state *s, struct ds_txn *t, Af__Datastore__PutRequest *req,
                       struct af_result *res)
{
    if (t->read_only) {
        af_result_app_error(res, ERR_BAD_REQUEST,
                            "datastore: cannot write in a read-only transaction");
        return;
    }
    /* Ids for the incomplete keys first, persisted now. */
    int64_t n_new = 0, floor = 1;
    for (size_t i = 0; i < req->n_entity; i++) {
        ds_entity_t *e = req->entity[i];
        if (e->key && !af_ds_key_check(e->key, true)) {
            if (af_ds_key_incomplete(e->key))
                n_new++;
            note_ids(e->key, &floor);
        }
    }
    /* Named keys (the usual case in a transaction) need no id, and no
     * write before the commit. */
    int64_t next = 0;
    if ((n_new > 0 || floor > 1) && reserve_ids(s, n_new, floor, &next) != 0) {
        internal_error(res, "allocating ids");
        return;
    }
    struct af_ds_buf key = {0}, root = {0};
    for (size_t i = 0; i < req->n_entity; i++) {
        ds_entity_t *e = req->entity[i];
        uint8_t *data;
        size_t len;
        bool allocated;
        char *why = prepare_entity(e, &next, &data, &len, &allocated);
        if (why) {
            af_result_app_error(res, ERR_BAD_REQUEST, "datastore: %s", why);
            free(why);
            goto out;
        }
        int64_t part;
        if (af_ds_partition(t->snap, e->key->app, ns_of(e->key), false, &part) != 0) {
            free(data);
            internal_error(res, "Put");
            goto out;
        }
        key.len = root.len = 0;
        key_blobs(e->key, &key, &root);
        if (!txn_touch(s, t, e->key->app, ns_of(e->key), part, &root, res)) {
            free(data);
            goto out;
        }
        txn_add_mutation(t, true, e->key, &key, &root, data, len);
    }
    Af__Datastore__PutResponse resp = AF__DATASTORE__PUT_RESPONSE__INIT;
    resp.n_key = req->n_entity;
    resp.key = af_xcalloc(req->n_entity + 1, sizeof(*resp.key));
    for (size_t i = 0; i < req->n_entity; i++)
        resp.key[i] = req->entity[i]->key;
    result_msg(res, &resp.base);
    free(resp.key);
out:
    af_ds_buf_release(&key);
    af_ds_buf_release(&root);
}

static void ds_put(void *state, const struct af_call *call, struct af_result *res)
{
    struct ds_state *s = state;
    Af__Datastore__PutRequest *req = (Af__Datastore__PutRequest *)af_ds_wire_unpack(
        &af__datastore__put_request__descriptor, call->request, call->request_len);
    if (!req) {
        parse_error(res, "Put");
        return;
    }
    struct af_ds_buf key = {0}, root = {0};
    struct call_groups cg = {0};
    bool in_write = false;
    if (!db_ready(s, res))
        goto done;
    if (req->n_entity > DS_MAX_BATCH) {
        af_result_app_error(res, ERR_BAD_REQUEST,
                            "datastore: cannot put more than %d entities in one call (got %zu)",
                            DS_MAX_BATCH, req->n_entity);
        goto done;
    }
    if (req->transaction) {
        struct ds_txn *t = txn_find(s, req->transaction, res);
        if (t)
            put_in_txn(s, t, req, res);
        goto done;
    }
    if (af_ds_begin_write(s->db) != 0) {
        internal_error(res, "Put");
        goto done;
    }
    in_write = true;
    int64_t next, start;
    if (af_ds_counter_get(s->db, id_scope, &next) != 0) {
        internal_error(res, "Put");
        goto done;
    }
    start = next;
    for (size_t i = 0; i < req->n_entity; i++) {
        ds_entity_t *e = req->entity[i];
        uint8_t *data;
        size_t len;
        bool allocated;
        char *why = prepare_entity(e, &next, &data, &len, &allocated);
        if (why) {
            af_result_app_error(res, ERR_BAD_REQUEST, "datastore: %s", why);
            free(why);
            goto done;
        }
        int64_t part, version;
        key.len = root.len = 0;
        key_blobs(e->key, &key, &root);
        int rc = af_ds_partition(s->db, e->key->app, ns_of(e->key), true, &part);
        if (rc == 0)
            rc = store_put(s, &cg, part, &key, &root, e, data, len, &why);
        if (rc == 0)
            rc = af_ds_group_bump(s->db, part, root.p, root.len, &version);
        free(data);
        if (why) {
            af_result_app_error(res, ERR_BAD_REQUEST, "datastore: %s", why);
            free(why);
            goto done;
        }
        if (rc != 0) {
            internal_error(res, "Put");
            goto done;
        }
    }
    if ((next != start && af_ds_counter_set(s->db, id_scope, next) != 0) ||
        af_ds_commit(s->db) != 0) {
        internal_error(res, "Put");
        goto done;
    }
    in_write = false;
    af_ds_ev_end(&s->ev, true);
    Af__Datastore__PutResponse resp = AF__DATASTORE__PUT_RESPONSE__INIT;
    resp.n_key = req->n_entity;
    resp.key = af_xcalloc(req->n_entity + 1, sizeof(*resp.key));
    for (size_t i = 0; i < req->n_entity; i++)
        resp.key[i] = req->entity[i]->key;
    result_msg(res, &resp.base);
    free(resp.key);
done:
    if (in_write) {
        af_ds_rollback(s->db);
        af_ds_ev_end(&s->ev, false);
    }
    call_groups_release(&cg);
    af_ds_buf_release(&key);
    af_ds_buf_release(&root);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void ds_delete(void *state, const struct af_call *call, struct af_result *res)
{
    struct ds_state *s = state;
    Af__Datastore__DeleteRequest *req = (Af__Datastore__DeleteRequest *)af_ds_wire_unpack(
        &af__datastore__delete_request__descriptor, call->request, call->request_len);
    if (!req) {
        parse_error(res, "Delete");
        return;
    }
    struct af_ds_buf key = {0}, root = {0};
    struct call_groups cg = {0};
    bool in_write = false;
    if (!db_ready(s, res))
        goto done;
    if (req->n_key > DS_MAX_BATCH) {
        af_result_app_error(res, ERR_BAD_REQUEST,
                            "datastore: cannot delete more than %d keys in one call (got %zu)",
                            DS_MAX_BATCH, req->n_key);
        goto done;
    }
    for (size_t i = 0; i < req->n_key; i++) {
        const char *bad = af_ds_key_check(req->key[i], false);
        if (bad) {
            af_result_app_error(res, ERR_BAD_REQUEST, "datastore: invalid key: %s", bad);
            goto done;
        }
    }
    struct ds_txn *t = NULL;
    if (req->transaction) {
        if (!(t = txn_find(s, req->transaction, res)))
            goto done;
        if (t->read_only) {
            af_result_app_error(res, ERR_BAD_REQUEST,
                                "datastore: cannot delete in a read-only transaction");
            goto done;
        }
    } else {
        if (af_ds_begin_write(s->db) != 0) {
            internal_error(res, "Delete");
            goto done;
        }
        in_write = true;
    }
    for (size_t i = 0; i < req->n_key; i++) {
        const ds_reference_t *k = req->key[i];
        key.len = root.len = 0;
        key_blobs(k, &key, &root);
        int64_t part;
        if (af_ds_partition(t ? t->snap : s->db, k->app, ns_of(k), false, &part) != 0) {
            internal_error(res, "Delete");
            goto done;
        }
        if (t) {
            if (!txn_touch(s, t, k->app, ns_of(k), part, &root, res))
                goto done;
            txn_add_mutation(t, false, k, &key, &root, NULL, 0);
            continue;
        }
        bool existed = false;
        int64_t version;
        if (part && (store_delete(s, &cg, part, &key, &root, &existed) != 0 ||
                     (existed && af_ds_group_bump(s->db, part, root.p, root.len, &version) != 0))) {
            internal_error(res, "Delete");
            goto done;
        }
    }
    if (in_write) {
        in_write = false;
        if (af_ds_commit(s->db) != 0) {
            af_ds_ev_end(&s->ev, false);
            internal_error(res, "Delete");
            goto done;
        }
        af_ds_ev_end(&s->ev, true);
    }
    Af__Datastore__DeleteResponse resp = AF__DATASTORE__DELETE_RESPONSE__INIT;
    result_msg(res, &resp.base);
done:
    if (in_write) {
        af_ds_rollback(s->db);
        af_ds_ev_end(&s->ev, false);
    }
    call_groups_release(&cg);
    af_ds_buf_release(&key);
    af_ds_buf_release(&root);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* ------------------------------------------------------------------------ */
/* AllocateIds                                                               */
/* ------------------------------------------------------------------------ */

static void ds_allocate_ids(void *state, const struct af_call *call, struct af_result *res)
{
    struct ds_state *s = state;
    Af__Datastore__AllocateIdsRequest *req = (Af__Datastore__AllocateIdsRequest *)af_ds_wire_unpack(
        &af__datastore__allocate_ids_request__descriptor, call->request, call->request_len);
    if (!req) {
        parse_error(res, "AllocateIds");
        return;
    }
    if (!db_ready(s, res))
        goto done;
    if (req->has_size && req->has_max) {
        af_result_app_error(res, ERR_BAD_REQUEST,
                            "datastore: AllocateIds takes a size or a max, not both");
        goto done;
    }
    Af__Datastore__AllocateIdsResponse resp = AF__DATASTORE__ALLOCATE_IDS_RESPONSE__INIT;
    int64_t floor = 1;
    for (size_t i = 0; i < req->n_reserve; i++) {
        const char *bad = af_ds_key_check(req->reserve[i], false);
        if (bad) {
            af_result_app_error(res, ERR_BAD_REQUEST, "datastore: invalid key to reserve: %s", bad);
            goto done;
        }
        note_ids(req->reserve[i], &floor);
    }
    if (req->has_size) {
        if (req->size <= 0 || req->size > 1000000000) {
            af_result_app_error(res, ERR_BAD_REQUEST,
                                "datastore: AllocateIds size must be 1 to 1000000000 (got %" PRId64
                                ")",
                                (int64_t)req->size);
            goto done;
        }
        int64_t first;
        if (reserve_ids(s, req->size, floor, &first) != 0) {
            internal_error(res, "AllocateIds");
            goto done;
        }
        resp.start = first;
        resp.end = first + req->size - 1;
    } else {
        /* max: every id up to max is reserved; the answer is the range
         * that was still free (start > end when none was). */
        int64_t max = req->has_max ? req->max : 0;
        if (max < 0 || max > DS_MAX_ID) {
            af_result_app_error(res, ERR_BAD_REQUEST,
                                "datastore: AllocateIds max %" PRId64 " is out of range",
                                (int64_t)max);
            goto done;
        }
        int64_t first;
        if (reserve_ids(s, 0, floor, &first) != 0) {
            internal_error(res, "AllocateIds");
            goto done;
        }
        if (max >= first && reserve_ids(s, max - first + 1, first, &first) != 0) {
            internal_error(res, "AllocateIds");
            goto done;
        }
        resp.start = first;
        resp.end = max >= first ? max : first - 1;
    }
    result_msg(res, &resp.base);
done:
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* ------------------------------------------------------------------------ */
/* Transactions                                                              */
/* ------------------------------------------------------------------------ */

static void ds_begin_transaction(void *state, const struct af_call *call, struct af_result *res)
{
    struct ds_state *s = state;
    Af__Datastore__BeginTransactionRequest *req =
        (Af__Datastore__BeginTransactionRequest *)af_ds_wire_unpack(
            &af__datastore__begin_transaction_request__descriptor, call->request,
            call->request_len);
    if (!req) {
        parse_error(res, "BeginTransaction");
        return;
    }
    if (!db_ready(s, res))
        goto done;
    uint64_t now = now_ns();
    txn_expire(s, now);
    if (s->n_txns >= DS_MAX_TXNS) {
        af_result_app_error(res, ERR_INTERNAL,
                            "datastore: %d transactions are open; commit or roll back some "
                            "(idle ones expire after 60 s)",
                            DS_MAX_TXNS);
        goto done;
    }
    struct af_ds_conn *snap = pool_get(s);
    if (!snap || af_ds_begin_read(snap) != 0) {
        af_ds_conn_close(snap);
        internal_error(res, "BeginTransaction");
        goto done;
    }
    struct ds_txn *t = af_xcalloc(1, sizeof(*t));
    t->handle = new_handle(s);
    t->app = af_xstrdup(req->app);
    t->xg = req->has_allow_multiple_eg && req->allow_multiple_eg;
    t->read_only =
        req->has_mode &&
        req->mode == AF__DATASTORE__BEGIN_TRANSACTION_REQUEST__TRANSACTION_MODE__READ_ONLY;
    t->snap = snap;
    t->jobs_seen = s->ev.pending > 0;
    t->last_used = now;
    t->next = s->txns;
    s->txns = t;
    s->n_txns++;

    Af__Datastore__Transaction resp = AF__DATASTORE__TRANSACTION__INIT;
    resp.handle = t->handle;
    resp.app = t->app;
    result_msg(res, &resp.base);
done:
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* Applies t's writes if none of its groups moved. Returns 0, 1 on a
 * conflict, -1 on an SQLite failure; res is set for 1 and -1. */
static int txn_apply(struct ds_state *s, struct ds_txn *t, struct af_result *res)
{
    /* Nothing to write: the reads came from one snapshot, so they were
     * consistent whatever committed since; there is nothing to conflict. */
    if (t->n_muts == 0)
        return 0;
    struct call_groups cg = {0};
    if (af_ds_begin_write(s->db) != 0)
        goto fail;
    for (size_t i = 0; i < t->n_groups; i++) {
        const struct ds_group *g = &t->groups[i];
        int64_t v = 0;
        if (group_version_now(s, g, &v) != 0)
            goto fail;
        if (v != g->version) {
            af_ds_rollback(s->db);
            af_result_app_error(res, ERR_CONCURRENT,
                                "datastore: concurrent transaction: an entity group this "
                                "transaction used was modified after it began");
            return 1;
        }
    }
    for (size_t i = 0; i < t->n_muts; i++) {
        struct ds_mutation *m = &t->muts[i];
        int64_t part = 0, version;
        bool changed = true;
        if (m->is_put) {
            ds_entity_t *e = (ds_entity_t *)af_ds_wire_unpack(
                &af__datastore__entity_proto__descriptor, m->data, m->data_len);
            if (!e)
                goto fail;
            char *why = NULL;
            int rc = af_ds_partition(s->db, e->key->app, ns_of(e->key), true, &part);
            if (rc == 0)
                rc = store_put(s, &cg, part, &m->key, &m->root, e, m->data, m->data_len, &why);
            protobuf_c_message_free_unpacked(&e->base, NULL);
            free(why); /* checked when the Put was buffered */
            if (rc != 0)
                goto fail;
        } else {
            if (af_ds_partition(s->db, m->app, m->ns, false, &part) != 0)
                goto fail;
            if (part && store_delete(s, &cg, part, &m->key, &m->root, &changed) != 0)
                goto fail;
            changed = part && changed;
        }
        if (changed && af_ds_group_bump(s->db, part, m->root.p, m->root.len, &version) != 0)
            goto fail;
    }
    if (af_ds_commit(s->db) != 0)
        goto fail;
    af_ds_ev_end(&s->ev, true);
    call_groups_release(&cg);
    return 0;
fail:
    af_ds_rollback(s->db);
    af_ds_ev_end(&s->ev, false);
    call_groups_release(&cg);
    internal_error(res, "Commit");
    return -1;
}

static void ds_commit(void *state, const struct af_call *call, struct af_result *res)
{
    struct ds_state *s = state;
    Af__Datastore__Transaction *req = (Af__Datastore__Transaction *)af_ds_wire_unpack(
        &af__datastore__transaction__descriptor, call->request, call->request_len);
    if (!req) {
        parse_error(res, "Commit");
        return;
    }
    if (!db_ready(s, res))
        goto done;
    struct ds_txn *t = txn_find(s, req, res);
    if (!t)
        goto done;
    txn_unlink(s, t);
    uint64_t handle = t->handle;
    char why[512];
    /* Other services' work first, uncommitted: when it cannot even be
     * written, nothing is applied and the caller may simply retry. */
    if (af_txn_prepare(handle, why, sizeof(why)) != 0) {
        txn_free(s, t);
        af_result_app_error(res, ERR_INTERNAL,
                            "datastore: transaction %" PRIu64 " was not committed: %s", handle,
                            why);
        goto done;
    }
    int rc = txn_apply(s, t, res);
    txn_free(s, t);
    if (rc != 0) {
        af_txn_abort(handle);
        goto done;
    }
    /* The writes are in. Committing the prepared work can then fail only
     * on an I/O error; the caller hears of it, not OK (docs/taskqueue.md,
     * "Transactional adds"). */
    const char *notify;
    if (af_txn_commit(handle, &notify, why, sizeof(why)) != 0) {
        af_result_app_error(res, ERR_INTERNAL,
                            "datastore: transaction %" PRIu64 " committed its writes, but %s",
                            handle, why);
        goto done;
    }
    Af__Datastore__CommitResponse resp = AF__DATASTORE__COMMIT_RESPONSE__INIT;
    result_msg(res, &resp.base);
    if (notify) {
        res->notify_main = true;
        res->notify_service = notify;
    }
done:
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void ds_rollback(void *state, const struct af_call *call, struct af_result *res)
{
    struct ds_state *s = state;
    Af__Datastore__Transaction *req = (Af__Datastore__Transaction *)af_ds_wire_unpack(
        &af__datastore__transaction__descriptor, call->request, call->request_len);
    if (!req) {
        parse_error(res, "Rollback");
        return;
    }
    struct ds_txn *t = txn_find(s, req, res);
    if (t) {
        txn_unlink(s, t);
        af_txn_abort(t->handle);
        txn_free(s, t);
        Af__Datastore__VoidProto resp = AF__DATASTORE__VOID_PROTO__INIT;
        result_msg(res, &resp.base);
    }
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* ------------------------------------------------------------------------ */
/* Queries                                                                   */
/* ------------------------------------------------------------------------ */

static void cursor_free(struct ds_cursor *cur)
{
    af_ds_plan_free(cur->plan);
    af_ds_buf_release(&cur->run.pos);
    af_ds_buf_release(&cur->run.end);
    free(cur);
}

/* Keeps at most DS_MAX_CURSORS, dropping idle ones first and then the
 * least recently used: an abandoned query iterator costs nothing to drop,
 * its owner gets BAD_REQUEST if it ever comes back. */
static void cursor_make_room(struct ds_state *s, uint64_t now)
{
    struct ds_cursor **pp = &s->cursors, **oldest = NULL;
    while (*pp) {
        struct ds_cursor *c = *pp;
        if (now - c->last_used > DS_CURSOR_IDLE_NS) {
            *pp = c->next;
            s->n_cursors--;
            cursor_free(c);
            continue;
        }
        if (!oldest || c->last_used < (*oldest)->last_used)
            oldest = pp;
        pp = &c->next;
    }
    if (s->n_cursors >= DS_MAX_CURSORS && oldest) {
        struct ds_cursor *c = *oldest;
        *oldest = c->next;
        s->n_cursors--;
        cursor_free(c);
    }
}

/* A batch being built: the QueryResult's results as official bytes. */
struct batch {
    struct ds_state *s;
    struct af_ds_conn *c;
    const struct af_ds_plan *plan;
    struct af_ds_buf results; /* field 2 entries */
    int64_t n;
    bool failed;
};

/* The key of a result row as a Reference plus its entity group. */
static ds_entity_t *key_entity(const struct af_ds_plan *p, const uint8_t *key, size_t len)
{
    ds_path_t *path = af_ds_path_decode(key, len);
    if (!path)
        return NULL;
    ds_entity_t *e = af_xmalloc(sizeof(*e));
    af__datastore__entity_proto__init(e);
    e->key = af_xmalloc(sizeof(*e->key));
    af__datastore__reference__init(e->key);
    e->key->app = af_xstrdup(p->app);
    if (p->ns[0])
        e->key->name_space = af_xstrdup(p->ns);
    e->key->path = path;
    e->entity_group = af_ds_path_decode(key, len);
    /* Keep the root only. */
    for (size_t i = 1; i < e->entity_group->n_element; i++)
        protobuf_c_message_free_unpacked(&e->entity_group->element[i]->base, NULL);
    e->entity_group->n_element = 1;
    return e;
}

static bool emit_row(void *arg, const struct af_ds_row *row)
{
    struct batch *b = arg;
    const struct af_ds_plan *p = b->plan;
    if (b->n > 0 && b->results.len > DS_MAX_BATCH_BYTES)
        return false;
    if (!p->keys_only && p->n_projection == 0) {
        uint8_t *data;
        size_t len;
        if (af_ds_entity_get(b->c, p->part, row->key, row->key_len, &data, &len) != 0) {
            b->failed = true;
            return false;
        }
        if (!data)
            return true; /* index without entity: cannot happen in one transaction */
        put_len_field(&b->results, 2, data, len);
        free(data);
        b->n++;
        return true;
    }
    ds_entity_t *e = key_entity(p, row->key, row->key_len);
    if (!e) {
        af_error("datastore: an index row holds a malformed key");
        b->failed = true;
        return false;
    }
    if (p->n_projection) {
        e->property = af_xcalloc(p->n_projection, sizeof(*e->property));
        for (size_t i = 0; i < p->n_projection; i++) {
            ds_value_t *v = af_ds_value_decode(row->values[i], row->value_lens[i]);
            if (!v) {
                af_error("datastore: an index row holds a malformed value");
                b->failed = true;
                break;
            }
            ds_property_t *prop = af_xmalloc(sizeof(*prop));
            af__datastore__property__init(prop);
            prop->name = af_xstrdup(p->projection[i]);
            prop->value = v;
            prop->has_meaning = true;
            prop->meaning = MEANING_INDEX_VALUE;
            prop->multiple = false;
            e->property[e->n_property++] = prop;
        }
    }
    size_t len;
    uint8_t *data = af_ds_wire_pack(&e->base, &len);
    protobuf_c_message_free_unpacked(&e->base, NULL);
    if (b->failed) {
        free(data);
        return false;
    }
    put_len_field(&b->results, 2, data, len);
    free(data);
    b->n++;
    return true;
}

/* Runs one batch of cur and answers res with a QueryResult. Returns
 * whether results may remain (the client may call Next). */
static bool answer_batch(struct ds_state *s, struct ds_cursor *cur, struct af_ds_conn *c,
                         int64_t offset, int64_t count, bool compile, struct af_result *res)
{
    struct batch b = {.s = s, .c = c, .plan = cur->plan};
    int64_t skipped = 0;
    bool more = false;
    if (af_ds_run_batch(c, &cur->run, offset, count, &skipped, &more, emit_row, &b) != 0 ||
        b.failed) {
        af_ds_buf_release(&b.results);
        internal_error(res, "running a query");
        return false;
    }
    Af__Datastore__QueryResult qr = AF__DATASTORE__QUERY_RESULT__INIT;
    Af__Datastore__Cursor qc = AF__DATASTORE__CURSOR__INIT;
    qc.cursor = cur->handle;
    qr.cursor = &qc;
    qr.more_results = more;
    qr.has_keys_only = true;
    qr.keys_only = cur->plan->keys_only;
    qr.has_index_only = true;
    qr.index_only = cur->plan->n_projection > 0;
    if (skipped) {
        qr.has_skipped_results = true;
        qr.skipped_results = (int32_t)skipped;
    }
    Af__Datastore__CompiledCursor cc = AF__DATASTORE__COMPILED_CURSOR__INIT;
    Af__Datastore__CompiledCursor__Position pos = AF__DATASTORE__COMPILED_CURSOR__POSITION__INIT;
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    if (compile) {
        af_ds_cursor_encode(&cur->run, &raw, &raw_len);
        pos.has_start_key = true;
        pos.start_key.data = raw;
        pos.start_key.len = raw_len;
        cc.position = &pos;
        qr.compiled_cursor = &cc;
    }
    size_t n;
    uint8_t *head = af_ds_wire_pack(&qr.base, &n);
    free(raw);
    struct af_ds_buf out = {0};
    af_ds_buf_put(&out, head, n);
    free(head);
    af_ds_buf_put(&out, b.results.p, b.results.len);
    af_ds_buf_release(&b.results);
    result_buf(res, &out);
    return more;
}

static bool position_from(struct af_ds_run *run, const Af__Datastore__CompiledCursor *cc,
                          bool is_end)
{
    if (!cc->position || !cc->position->has_start_key) {
        /* An empty compiled cursor is the start of the query. */
        if (is_end)
            run->end_empty = true;
        return !cc->position || !cc->position->n_indexvalue;
    }
    return af_ds_cursor_decode(run, cc->position->start_key.data, cc->position->start_key.len,
                               is_end);
}

/* The results of a metadata query being collected. */
struct meta_batch {
    const ds_query_t *q;
    const char *kind;
    int64_t skip, left; /* offset still to skip; results still allowed (-1: all) */
    struct af_ds_buf results;
};

static void meta_emit(void *arg, const char *name)
{
    struct meta_batch *m = arg;
    if (m->skip > 0) {
        m->skip--;
        return;
    }
    if (m->left == 0)
        return;
    if (m->left > 0)
        m->left--;
    /* Keys as App Engine names them: __namespace__ keys are named by the
     * namespace, the default one has id 1; __kind__ keys by the kind. */
    ds_element_t el = AF__DATASTORE__PATH__ELEMENT__INIT;
    ds_element_t *elp = &el;
    el.type = (char *)m->kind;
    if (name[0]) {
        el.name = (char *)name;
    } else {
        el.has_id = true;
        el.id = 1;
    }
    ds_path_t path = AF__DATASTORE__PATH__INIT;
    path.element = &elp;
    path.n_element = 1;
    ds_reference_t ref = AF__DATASTORE__REFERENCE__INIT;
    ref.app = m->q->app;
    if (strcmp(m->kind, "__kind__") == 0 && m->q->name_space && m->q->name_space[0])
        ref.name_space = m->q->name_space;
    ref.path = &path;
    ds_entity_t e = AF__DATASTORE__ENTITY_PROTO__INIT;
    e.key = &ref;
    e.entity_group = &path;
    size_t n;
    uint8_t *data = af_ds_wire_pack(&e.base, &n);
    put_len_field(&m->results, 2, data, n);
    free(data);
}

/*
 * __namespace__ and __kind__ queries (the Go library's Namespaces and
 * Kinds): every result in one batch. Returns false when q is not one.
 */
static bool metadata_query(struct ds_state *s, struct af_ds_conn *c, const ds_query_t *q,
                           struct af_result *res)
{
    bool ns_query = q->kind && strcmp(q->kind, "__namespace__") == 0;
    if (!ns_query && !(q->kind && strcmp(q->kind, "__kind__") == 0))
        return false;
    if (q->n_filter || q->ancestor || q->n_property_name ||
        (q->n_order && strcmp(q->order[0]->property, "__key__") != 0) ||
        (q->n_order && q->order[0]->has_direction &&
         q->order[0]->direction == AF__DATASTORE__QUERY__ORDER__DIRECTION__DESCENDING)) {
        af_result_app_error(res, ERR_BAD_REQUEST,
                            "datastore: %s queries support no filters, ancestors, projections "
                            "or orders (other than __key__ ascending)",
                            q->kind);
        return true;
    }
    struct meta_batch m = {
        .q = q,
        .kind = q->kind,
        .skip = q->has_offset && q->offset > 0 ? q->offset : 0,
        .left = q->has_limit ? (q->limit < 0 ? 0 : q->limit) : -1,
    };
    int rc;
    if (ns_query) {
        rc = af_ds_list_namespaces(c, q->app, meta_emit, &m);
    } else {
        int64_t part;
        rc = af_ds_partition(c, q->app, q->name_space, false, &part);
        if (rc == 0 && part)
            rc = af_ds_list_kinds(c, part, meta_emit, &m);
    }
    if (rc != 0) {
        af_ds_buf_release(&m.results);
        internal_error(res, "a metadata query");
        return true;
    }
    Af__Datastore__QueryResult qr = AF__DATASTORE__QUERY_RESULT__INIT;
    Af__Datastore__Cursor qc = AF__DATASTORE__CURSOR__INIT;
    qc.cursor = new_handle(s);
    qr.cursor = &qc;
    qr.more_results = false;
    qr.has_keys_only = true;
    qr.keys_only = q->has_keys_only && q->keys_only;
    size_t n;
    uint8_t *head = af_ds_wire_pack(&qr.base, &n);
    struct af_ds_buf out = {0};
    af_ds_buf_put(&out, head, n);
    free(head);
    af_ds_buf_put(&out, m.results.p, m.results.len);
    af_ds_buf_release(&m.results);
    result_buf(res, &out);
    return true;
}

/* Whether two stats are of one unchanged file. */
static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/*
 * Reads index.yaml again if it changed since it was last read (a
 * developer's edit, or our own write), as dev_appserver does before it
 * refuses a query. Only queries no known index serves get here, so a
 * served query costs no system call. A bad file is logged once per change
 * and the definitions read before stay.
 */
static void index_yaml_refresh(struct ds_state *s)
{
    struct stat st;
    bool ok = stat(s->index_yaml->path, &st) == 0;
    if (ok == s->index_st_ok && (!ok || same_file(&st, &s->index_st)))
        return;
    s->index_st_ok = ok;
    if (ok)
        s->index_st = st;
    struct af_index_yaml *y = NULL;
    char err[1024];
    if (af_index_yaml_load(s->index_yaml->path, &y, err, sizeof(err)) < 0) {
        af_error("datastore: %s; keeping the indexes read before", err);
        return;
    }
    af_index_yaml_free(s->index_yaml);
    s->index_yaml = y;
}

/*
 * The composite index q would need in production (datastore_index.h).
 * With --require_indexes, a query that index.yaml does not cover fails
 * with NEED_INDEX and the index to add; otherwise the index is added to
 * index.yaml's generated section (one write per new index) and the query
 * runs. Returns false when res holds the refusal.
 */
static bool check_index(struct ds_state *s, const ds_query_t *q, struct af_result *res)
{
    struct af_ds_index_need need;
    if (!af_ds_index_for_query(q, &need))
        return true;
    bool served = !s->require_indexes && af_ds_index_any_serves(s->gen, s->n_gen, &need);
    for (int pass = 0; !served && s->index_yaml && pass < 2; pass++) {
        if (pass == 1)
            index_yaml_refresh(s);
        served = af_ds_index_any_serves(s->index_yaml->indexes, s->index_yaml->n, &need);
    }
    const struct af_index_yaml *y = s->index_yaml;
    if (served) {
        af_ds_index_need_release(&need);
        return true;
    }
    struct af_ds_index ix;
    af_ds_index_suggest(&need, &ix);
    af_ds_index_need_release(&need);
    if (s->require_indexes) {
        char *text = af_ds_index_yaml(&ix);
        af_result_app_error(res, ERR_NEED_INDEX,
                            "no matching index found. The suggested index for this query is:\n%s",
                            text);
        free(text);
        af_ds_index_release(&ix);
        return false;
    }
    s->gen = af_xrealloc(s->gen, (s->n_gen + 1) * sizeof(*s->gen));
    s->gen[s->n_gen++] = ix;
    if (!y)
        return true; /* no app directory: nowhere to write */
    char err[1024];
    int rc = af_index_yaml_write(y->path, s->gen, s->n_gen, err, sizeof(err));
    if (rc > 0) {
        af_info("datastore: added to %s the index of kind \"%s\" that a query needs", y->path,
                ix.kind);
    } else if (!s->index_said) {
        s->index_said = true;
        if (rc == 0)
            af_info("datastore: %s has no \"%s\" line: appfront does not add the indexes "
                    "queries need to it (they still run)",
                    y->path, AF_INDEX_YAML_MARKER);
        else
            af_warn("datastore: %s; the indexes queries need are not saved (they still run)", err);
    }
    return true;
}

/*
 * What a query outside a transaction sees: an ancestor query's group is
 * rolled forward (part 0: the partition does not exist yet, nothing to
 * do), a global query applies what the consistency policy allows. At
 * RunQuery only, as dev_appserver grooms once per query: Next goes on with
 * what is applied by then. false with res set on failure.
 */
static bool query_catch_up(struct ds_state *s, int64_t part, const struct af_ds_buf *root,
                           struct af_result *res)
{
    int rc = root->len ? af_ds_ev_catch_up(&s->ev, s->db, part, root->p, root->len)
                       : af_ds_ev_groom(&s->ev, s->db);
    if (rc != 0)
        internal_error(res, "applying pending writes");
    return rc == 0;
}

static void ds_run_query(void *state, const struct af_call *call, struct af_result *res)
{
    struct ds_state *s = state;
    ds_query_t *q = (ds_query_t *)af_ds_wire_unpack(&af__datastore__query__descriptor,
                                                    call->request, call->request_len);
    if (!q) {
        parse_error(res, "RunQuery");
        return;
    }
    struct ds_cursor *cur = NULL;
    struct af_ds_buf root = {0};
    if (!db_ready(s, res))
        goto done;
    struct ds_txn *t = NULL;
    if (q->transaction && !(t = txn_find(s, q->transaction, res)))
        goto done;
    if (t && !q->ancestor) {
        af_result_app_error(res, ERR_BAD_REQUEST,
                            "datastore: only ancestor queries are allowed inside transactions");
        goto done;
    }
    struct af_ds_conn *c = t ? t->snap : s->db;
    int64_t part;
    if (af_ds_partition(c, q->app, q->name_space, false, &part) != 0) {
        internal_error(res, "RunQuery");
        goto done;
    }
    if (q->ancestor && q->ancestor->path && q->ancestor->path->n_element)
        af_ds_path_encode(&root, q->ancestor->path, 1);
    if (!t && !query_catch_up(s, part, &root, res))
        goto done;
    if (metadata_query(s, c, q, res))
        goto done;
    char *why = NULL;
    struct af_ds_plan *plan = af_ds_plan_compile(q, part, &why);
    if (!plan) {
        af_result_app_error(res, ERR_BAD_REQUEST, "datastore: %s", why);
        free(why);
        goto done;
    }
    if (!check_index(s, q, res)) {
        af_ds_plan_free(plan);
        goto done;
    }
    if (t && !txn_touch(s, t, q->app, q->name_space ? q->name_space : "", part, &root, res)) {
        af_ds_plan_free(plan);
        goto done;
    }
    uint64_t now = now_ns();
    cursor_make_room(s, now);
    cur = af_xcalloc(1, sizeof(*cur));
    cur->handle = new_handle(s);
    cur->txn = t ? t->handle : 0;
    cur->plan = plan;
    cur->run.plan = plan;
    cur->run.limit_left = q->has_limit ? (q->limit < 0 ? 0 : q->limit) : -1;
    cur->last_used = now;
    if ((q->compiled_cursor && !position_from(&cur->run, q->compiled_cursor, false)) ||
        (q->end_compiled_cursor && !position_from(&cur->run, q->end_compiled_cursor, true))) {
        af_result_app_error(res, ERR_BAD_REQUEST,
                            "datastore: the cursor is malformed or belongs to a query with "
                            "other sort orders");
        goto done;
    }
    int64_t offset = q->has_offset && q->offset > 0 ? q->offset : 0;
    int64_t count = q->has_count && q->count > 0 ? q->count : DS_DEFAULT_BATCH;
    if (count > DS_DEFAULT_BATCH)
        count = DS_DEFAULT_BATCH;
    /* The client libraries call Next only while more_results is set and
     * never delete a finished cursor: keep only the ones that may go on. */
    bool more = answer_batch(s, cur, c, offset, count, q->has_compile && q->compile, res);
    if (more && res->kind == AF_RESULT_OK) {
        cur->next = s->cursors;
        s->cursors = cur;
        s->n_cursors++;
        cur = NULL;
    }
done:
    if (cur)
        cursor_free(cur);
    af_ds_buf_release(&root);
    protobuf_c_message_free_unpacked(&q->base, NULL);
}

static struct ds_cursor *cursor_find(struct ds_state *s, uint64_t handle, bool unlink)
{
    for (struct ds_cursor **pp = &s->cursors; *pp; pp = &(*pp)->next) {
        struct ds_cursor *c = *pp;
        if (c->handle == handle) {
            if (unlink) {
                *pp = c->next;
                s->n_cursors--;
            }
            return c;
        }
    }
    return NULL;
}

static void ds_next(void *state, const struct af_call *call, struct af_result *res)
{
    struct ds_state *s = state;
    Af__Datastore__NextRequest *req = (Af__Datastore__NextRequest *)af_ds_wire_unpack(
        &af__datastore__next_request__descriptor, call->request, call->request_len);
    if (!req) {
        parse_error(res, "Next");
        return;
    }
    if (!db_ready(s, res))
        goto done;
    struct ds_cursor *cur = cursor_find(s, req->cursor->cursor, false);
    if (!cur) {
        af_result_app_error(res, ERR_BAD_REQUEST,
                            "datastore: query cursor %" PRIu64
                            " does not exist (finished, deleted, or dropped after 10 idle minutes)",
                            (uint64_t)req->cursor->cursor);
        goto done;
    }
    struct af_ds_conn *c = s->db;
    if (cur->txn) {
        struct ds_txn *t = NULL;
        for (t = s->txns; t && t->handle != cur->txn; t = t->next)
            ;
        if (!t) {
            af_result_app_error(res, ERR_BAD_REQUEST,
                                "datastore: the query's transaction has ended");
            goto done;
        }
        c = t->snap;
    }
    cur->last_used = now_ns();
    int64_t offset = req->has_offset && req->offset > 0 ? req->offset : 0;
    int64_t count = req->has_count ? (req->count < 0 ? 0 : req->count) : DS_DEFAULT_BATCH;
    if (count > DS_DEFAULT_BATCH)
        count = DS_DEFAULT_BATCH;
    if (!answer_batch(s, cur, c, offset, count, req->has_compile && req->compile, res)) {
        cursor_find(s, cur->handle, true);
        cursor_free(cur);
    }
done:
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void ds_delete_cursor(void *state, const struct af_call *call, struct af_result *res)
{
    struct ds_state *s = state;
    Af__Datastore__Cursor *req = (Af__Datastore__Cursor *)af_ds_wire_unpack(
        &af__datastore__cursor__descriptor, call->request, call->request_len);
    if (!req) {
        parse_error(res, "DeleteCursor");
        return;
    }
    struct ds_cursor *cur = cursor_find(s, req->cursor, true);
    if (cur)
        cursor_free(cur);
    Af__Datastore__VoidProto resp = AF__DATASTORE__VOID_PROTO__INIT;
    result_msg(res, &resp.base);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* ------------------------------------------------------------------------ */
/* Composite index definitions: accepted, kept and listed                   */
/* ------------------------------------------------------------------------ */

static void ds_create_index(void *state, const struct af_call *call, struct af_result *res)
{
    struct ds_state *s = state;
    Af__Datastore__CompositeIndex *req = (Af__Datastore__CompositeIndex *)af_ds_wire_unpack(
        &af__datastore__composite_index__descriptor, call->request, call->request_len);
    if (!req) {
        parse_error(res, "CreateIndex");
        return;
    }
    if (!db_ready(s, res))
        goto done;
    int64_t id = 0;
    if (af_ds_begin_write(s->db) != 0 ||
        af_ds_index_add(s->db, req->app_id, call->request, call->request_len, &id) != 0 ||
        af_ds_commit(s->db) != 0) {
        af_ds_rollback(s->db);
        internal_error(res, "CreateIndex");
        goto done;
    }
    Af__Datastore__Integer64Proto resp = AF__DATASTORE__INTEGER64_PROTO__INIT;
    resp.value = id;
    result_msg(res, &resp.base);
done:
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void index_collect(void *arg, int64_t id, const uint8_t *data, size_t len)
{
    struct af_ds_buf *out = arg;
    /* The stored definition with its assigned id and READ_WRITE state:
     * later fields override earlier ones in protobuf decoding. */
    struct af_ds_buf one = {0};
    af_ds_buf_put(&one, data, len);
    put_varint(&one, (2 << 3) | AF_PB_VARINT);
    put_varint(&one, (uint64_t)id);
    put_varint(&one, (4 << 3) | AF_PB_VARINT);
    put_varint(&one, AF__DATASTORE__COMPOSITE_INDEX__STATE__READ_WRITE);
    put_len_field(out, 1, one.p, one.len);
    af_ds_buf_release(&one);
}

static void ds_get_indices(void *state, const struct af_call *call, struct af_result *res)
{
    struct ds_state *s = state;
    Af__Datastore__StringProto *req = (Af__Datastore__StringProto *)af_ds_wire_unpack(
        &af__datastore__string_proto__descriptor, call->request, call->request_len);
    if (!req) {
        parse_error(res, "GetIndices");
        return;
    }
    struct af_ds_buf out = {0};
    if (db_ready(s, res)) {
        if (af_ds_index_list(s->db, req->value, index_collect, &out) != 0)
            internal_error(res, "GetIndices");
        else
            result_buf(res, &out);
    }
    af_ds_buf_release(&out);
    protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* ------------------------------------------------------------------------ */
/* The admin console (docs/admin.md)                                         */
/* ------------------------------------------------------------------------ */

/* Internal methods only the main thread's admin console calls. They read
 * outside any transaction, as a client's non-transactional Get would, and
 * turn what they find into proto/admin.proto's ready-to-show messages. */

#define ADMIN_PAGE_DEFAULT 50
#define ADMIN_PAGE_MAX 500

static void admin_result(struct af_result *res, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *out = af_xmalloc(n ? n : 1);
    protobuf_c_message_pack(m, out);
    af_result_ok(res, out, n);
}

/* A URL-safe key from the console, decoded and checked; NULL with res set
 * to a BAD_REQUEST that says what is wrong (`what`: "key", "cursor"). */
static ds_reference_t *admin_key(const char *text, const char *what, struct af_result *res)
{
    uint8_t *bytes;
    size_t n;
    if (!text || !*text) {
        af_result_app_error(res, ERR_BAD_REQUEST, "no %s given", what);
        return NULL;
    }
    if (strlen(text) > 4 * DS_MAX_ENTITY_BYTES / 3 || af_b64url_decode(text, &bytes, &n) != 0) {
        af_result_app_error(res, ERR_BAD_REQUEST, "the %s is not a URL-safe base64 datastore key",
                            what);
        return NULL;
    }
    ds_reference_t *ref =
        (ds_reference_t *)af_ds_wire_unpack(&af__datastore__reference__descriptor, bytes, n);
    free(bytes);
    if (!ref) {
        af_result_app_error(res, ERR_BAD_REQUEST, "the %s does not decode as a datastore key",
                            what);
        return NULL;
    }
    const char *bad = af_ds_key_check(ref, false);
    if (bad) {
        af_result_app_error(res, ERR_BAD_REQUEST, "the %s is not a valid key: %s", what, bad);
        protobuf_c_message_free_unpacked(&ref->base, NULL);
        return NULL;
    }
    return ref;
}

static void admin_kind_add(void *arg, const char *name)
{
    Af__Admin__DsPartition *p = arg;
    p->kind = af_xrealloc(p->kind, (p->n_kind + 1) * sizeof(*p->kind));
    p->kind[p->n_kind++] = af_xstrdup(name);
}

/* The console shows the latest data, as a Get would: every pending write is
 * applied first (so global queries see them too from then on). */
static bool admin_catch_up(struct ds_state *s, struct af_result *res)
{
    if (!db_ready(s, res))
        return false;
    if (af_ds_ev_flush(&s->ev, s->db) != 0) {
        internal_error(res, "applying pending writes");
        return false;
    }
    return true;
}

static void ds_admin_kinds(void *state, const struct af_call *call, struct af_result *res)
{
    struct ds_state *s = state;
    if (!admin_catch_up(s, res))
        return;
    Af__Admin__DsKindsResponse resp = AF__ADMIN__DS_KINDS_RESPONSE__INIT;
    sqlite3_stmt *st = af_ds_prepare(s->db, "SELECT id, app, ns FROM partition ORDER BY app, ns");
    int rc = SQLITE_ERROR;
    /* Partitions are few (one per app and namespace); their kinds are
     * read after the scan, since the statements share the cache. */
    int64_t *ids = NULL;
    while (st && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        Af__Admin__DsPartition *p = af_xmalloc(sizeof(*p));
        af__admin__ds_partition__init(p);
        p->app = af_xstrdup((const char *)sqlite3_column_text(st, 1));
        p->namespace_ = af_xstrdup((const char *)sqlite3_column_text(st, 2));
        resp.partition =
            af_xrealloc(resp.partition, (resp.n_partition + 1) * sizeof(*resp.partition));
        ids = af_xrealloc(ids, (resp.n_partition + 1) * sizeof(*ids));
        ids[resp.n_partition] = sqlite3_column_int64(st, 0);
        resp.partition[resp.n_partition++] = p;
    }
    if (rc != SQLITE_DONE) {
        internal_error(res, "listing partitions");
    } else {
        size_t kept = 0;
        for (size_t i = 0; i < resp.n_partition; i++) {
            Af__Admin__DsPartition *p = resp.partition[i];
            if (af_ds_list_kinds(s->db, ids[i], admin_kind_add, p) != 0)
                rc = SQLITE_ERROR;
            if (p->n_kind) /* a partition whose entities were all deleted */
                resp.partition[kept++] = p;
            else
                protobuf_c_message_free_unpacked(&p->base, NULL);
        }
        resp.n_partition = kept;
        if (rc != SQLITE_DONE)
            internal_error(res, "listing kinds");
        else
            admin_result(res, &resp.base);
    }
    free(ids);
    for (size_t i = 0; i < resp.n_partition; i++) {
        Af__Admin__DsPartition *p = resp.partition[i];
        for (size_t k = 0; k < p->n_kind; k++)
            free(p->kind[k]);
        free(p->kind);
        free(p->app);
        free(p->namespace_);
        free(p);
    }
    free(resp.partition);
}

/* Adds the stored entity data to the page; false when it does not decode
 * (logged: the file holds something this code did not write). */
static bool admin_add_entity(Af__Admin__DsListResponse *resp, const uint8_t *data, size_t len,
                             size_t text_max)
{
    ds_entity_t *e =
        (ds_entity_t *)af_ds_wire_unpack(&af__datastore__entity_proto__descriptor, data, len);
    if (!e) {
        af_error("datastore: a stored entity does not decode (%zu bytes)", len);
        return false;
    }
    resp->entity = af_xrealloc(resp->entity, (resp->n_entity + 1) * sizeof(*resp->entity));
    resp->entity[resp->n_entity++] = af_ds_admin_entity(e, text_max);
    protobuf_c_message_free_unpacked(&e->base, NULL);
    return true;
}

static void ds_admin_list(void *state, const struct af_call *call, struct af_result *res)
{
    struct ds_state *s = state;
    Af__Admin__DsListRequest *req =
        af__admin__ds_list_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        parse_error(res, "AdminList");
        return;
    }
    Af__Admin__DsListResponse resp = AF__ADMIN__DS_LIST_RESPONSE__INIT;
    ds_reference_t *after = NULL;
    struct af_ds_buf from = {0};
    const char *app = req->app ? req->app : "", *ns = req->namespace_ ? req->namespace_ : "";
    const char *kind = req->kind ? req->kind : "";
    uint32_t limit = req->has_limit ? req->limit : ADMIN_PAGE_DEFAULT;
    if (!*app || !*kind) {
        af_result_app_error(res, ERR_BAD_REQUEST, "no %s given", *app ? "kind" : "app");
        goto done;
    }
    if (limit < 1 || limit > ADMIN_PAGE_MAX) {
        af_result_app_error(res, ERR_BAD_REQUEST, "a page holds 1 to %d entities, not %" PRIu32,
                            ADMIN_PAGE_MAX, limit);
        goto done;
    }
    if (req->after) {
        if (!(after = admin_key(req->after, "page cursor", res)))
            goto done;
        const ds_path_t *p = after->path;
        if (strcmp(after->app, app) != 0 || strcmp(ns_of(after), ns) != 0 ||
            strcmp(p->element[p->n_element - 1]->type, kind) != 0) {
            af_result_app_error(res, ERR_BAD_REQUEST,
                                "the page cursor is a key of another kind, app or namespace");
            goto done;
        }
        key_blobs(after, &from, NULL);
    }
    if (!admin_catch_up(s, res))
        goto done;
    int64_t part = 0;
    if (af_ds_partition(s->db, app, ns, false, &part) != 0) {
        internal_error(res, "AdminList");
        goto done;
    }
    if (part) {
        sqlite3_stmt *st = af_ds_prepare(s->db, "SELECT data FROM entity WHERE part=?1 AND"
                                                " kind=?2 AND key>?3 ORDER BY key LIMIT ?4");
        if (!st) {
            internal_error(res, "AdminList");
            goto done;
        }
        sqlite3_bind_int64(st, 1, part);
        sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, from.p ? (const void *)from.p : "", (int)from.len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, (int64_t)limit + 1); /* one more: is there a next page? */
        int rc;
        bool more = false;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (resp.n_entity == limit) {
                more = true;
                break;
            }
            if (!admin_add_entity(&resp, sqlite3_column_blob(st, 0),
                                  (size_t)sqlite3_column_bytes(st, 0), req->text_max)) {
                rc = SQLITE_ERROR;
                break;
            }
        }
        sqlite3_reset(st);
        if (rc != SQLITE_DONE && !more) {
            internal_error(res, "AdminList");
            goto done;
        }
        if (more)
            resp.next = resp.entity[resp.n_entity - 1]->key; /* borrowed until packed */
    }
    admin_result(res, &resp.base);
done:
    for (size_t i = 0; i < resp.n_entity; i++)
        af_ds_admin_entity_free(resp.entity[i]);
    free(resp.entity);
    af_ds_buf_release(&from);
    if (after)
        protobuf_c_message_free_unpacked(&after->base, NULL);
    af__admin__ds_list_request__free_unpacked(req, NULL);
}

/* The stored bytes of the entity at key (NULL: none), or false with res
 * set when the store fails. */
static bool admin_fetch(struct ds_state *s, const ds_reference_t *key, uint8_t **data, size_t *len,
                        struct af_result *res)
{
    *data = NULL;
    *len = 0;
    if (!admin_catch_up(s, res))
        return false;
    int64_t part = 0;
    struct af_ds_buf k = {0};
    key_blobs(key, &k, NULL);
    int rc = af_ds_partition(s->db, key->app, ns_of(key), false, &part);
    if (rc == 0 && part)
        rc = af_ds_entity_get(s->db, part, k.p, k.len, data, len);
    af_ds_buf_release(&k);
    if (rc != 0)
        internal_error(res, "reading an entity");
    return rc == 0;
}

static void ds_admin_get(void *state, const struct af_call *call, struct af_result *res)
{
    struct ds_state *s = state;
    Af__Admin__DsKeyRequest *req =
        af__admin__ds_key_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        parse_error(res, "AdminGet");
        return;
    }
    ds_reference_t *key = admin_key(req->key, "key", res);
    uint8_t *data = NULL;
    size_t len;
    if (key && admin_fetch(s, key, &data, &len, res)) {
        Af__Admin__DsListResponse one = AF__ADMIN__DS_LIST_RESPONSE__INIT;
        Af__Admin__DsGetResponse resp = AF__ADMIN__DS_GET_RESPONSE__INIT;
        if (data && !admin_add_entity(&one, data, len, 0)) {
            internal_error(res, "AdminGet");
        } else {
            resp.entity = one.n_entity ? one.entity[0] : NULL;
            admin_result(res, &resp.base);
        }
        for (size_t i = 0; i < one.n_entity; i++)
            af_ds_admin_entity_free(one.entity[i]);
        free(one.entity);
    }
    free(data);
    if (key)
        protobuf_c_message_free_unpacked(&key->base, NULL);
    af__admin__ds_key_request__free_unpacked(req, NULL);
}

/* Deletes through ds_delete, so the group's version moves and index rows
 * go exactly as for a client's Delete. */
static void ds_admin_delete(void *state, const struct af_call *call, struct af_result *res)
{
    struct ds_state *s = state;
    Af__Admin__DsKeyRequest *req =
        af__admin__ds_key_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        parse_error(res, "AdminDelete");
        return;
    }
    ds_reference_t *key = admin_key(req->key, "key", res);
    uint8_t *data = NULL;
    size_t len;
    if (key && admin_fetch(s, key, &data, &len, res)) {
        Af__Datastore__DeleteRequest del = AF__DATASTORE__DELETE_REQUEST__INIT;
        del.n_key = 1;
        del.key = &key;
        size_t n;
        uint8_t *bytes = af_ds_wire_pack(&del.base, &n);
        struct af_call c = {.service = call->service,
                            .method = "Delete",
                            .request = bytes,
                            .request_len = n,
                            .request_id = ""};
        ds_delete(s, &c, res);
        free(bytes);
        if (res->kind == AF_RESULT_OK) {
            free(res->response);
            Af__Admin__DsDeleteResponse resp = AF__ADMIN__DS_DELETE_RESPONSE__INIT;
            resp.has_existed = true;
            resp.existed = data != NULL;
            admin_result(res, &resp.base);
        }
    }
    free(data);
    if (key)
        protobuf_c_message_free_unpacked(&key->base, NULL);
    af__admin__ds_key_request__free_unpacked(req, NULL);
}

static const struct af_method ds_internal[] = {
    {"AdminKinds", ds_admin_kinds},
    {"AdminList", ds_admin_list},
    {"AdminGet", ds_admin_get},
    {"AdminDelete", ds_admin_delete},
    {NULL, NULL},
};

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                 */
/* ------------------------------------------------------------------------ */

static void drop_all(struct ds_state *s)
{
    while (s->txns) {
        struct ds_txn *t = s->txns;
        s->txns = t->next;
        af_txn_abort(t->handle);
        txn_free(s, t);
    }
    s->n_txns = 0;
    while (s->cursors) {
        struct ds_cursor *c = s->cursors;
        s->cursors = c->next;
        cursor_free(c);
    }
    s->n_cursors = 0;
}

static void *ds_create(const struct af_api_options *opts)
{
    struct ds_state *s = af_xcalloc(1, sizeof(*s));
    /* Handles start at a random point so a handle from before a restart
     * is unknown, not someone else's. */
    if (getrandom(&s->next_handle, sizeof(s->next_handle), GRND_NONBLOCK) != sizeof(s->next_handle))
        s->next_handle = (uint64_t)time(NULL) << 20;
    s->next_handle = (s->next_handle >> 1) | 1;

    if (opts && opts->indexes) {
        const struct af_index_yaml *y = opts->indexes;
        s->index_yaml = af_index_yaml_copy(y);
        s->gen = af_xcalloc(y->n ? y->n : 1, sizeof(*s->gen));
        for (size_t i = y->n_manual; i < y->n; i++)
            af_ds_index_copy(&s->gen[s->n_gen++], &y->indexes[i]);
        s->index_st_ok = stat(y->path, &s->index_st) == 0;
    }
    s->require_indexes = opts && opts->require_indexes;
    /* The zero value is strong consistency; appfront passes the flag,
     * whose default is dev_appserver's, "time". */
    enum af_ds_policy policy = AF_DS_POLICY_CONSISTENT;
    if (opts && opts->datastore_consistency_policy &&
        af_ds_policy_parse(opts->datastore_consistency_policy, &policy) != 0) {
        af_warn("datastore: unknown consistency policy \"%s\"; using \"consistent\"",
                opts->datastore_consistency_policy);
        policy = AF_DS_POLICY_CONSISTENT;
    }
    af_ds_ev_init(&s->ev, policy, NULL, apply_write, s);

    if (opts && opts->datastore_path)
        s->path = af_xstrdup(opts->datastore_path);
    else if (opts && opts->storage_path)
        s->path = af_xasprintf("%s/datastore.sqlite3", opts->storage_path);
    if (!s->path) {
        snprintf(s->open_error, sizeof(s->open_error), "no --datastore_path or --storage_path");
        return s;
    }
    if (opts->clear_datastore)
        af_ds_store_unlink(s->path);
    s->db = af_ds_conn_open(s->path, true, s->open_error, sizeof(s->open_error));
    if (!s->db)
        af_error("datastore: %s", s->open_error);
    if (s->db && af_ds_ev_init(&s->ev, policy, s->db, apply_write, s) != 0) {
        snprintf(s->open_error, sizeof(s->open_error),
                 "cannot apply the pending writes of %s (the log above says why)", s->path);
        af_error("datastore: %s", s->open_error);
        af_ds_conn_close(s->db);
        s->db = NULL;
    }
    af_txn_set_owner(txn_touch_handle, s);
    return s;
}

static void ds_clear(void *state)
{
    struct ds_state *s = state;
    drop_all(s);
    if (s->db)
        af_ds_store_clear(s->db);
    af_ds_ev_cleared(&s->ev);
}

static void ds_destroy(void *state)
{
    struct ds_state *s = state;
    if (!s)
        return;
    af_txn_clear_owner(s);
    drop_all(s);
    for (size_t i = 0; i < s->n_pool; i++)
        af_ds_conn_close(s->pool[i]);
    af_ds_conn_close(s->db);
    af_index_yaml_free(s->index_yaml);
    for (size_t i = 0; i < s->n_gen; i++)
        af_ds_index_release(&s->gen[i]);
    free(s->gen);
    free(s->path);
    free(s);
}

static const struct af_method ds_methods[] = {
    {"Get", ds_get},
    {"Put", ds_put},
    {"Delete", ds_delete},
    {"AllocateIds", ds_allocate_ids},
    {"BeginTransaction", ds_begin_transaction},
    {"Commit", ds_commit},
    {"Rollback", ds_rollback},
    {"RunQuery", ds_run_query},
    {"Next", ds_next},
    {"DeleteCursor", ds_delete_cursor},
    {"CreateIndex", ds_create_index},
    {"GetIndices", ds_get_indices},
    {NULL, NULL},
};

const struct af_service af_service_datastore_v3 = {
    .name = "datastore_v3",
    .methods = ds_methods,
    .create = ds_create,
    .clear = ds_clear,
    .destroy = ds_destroy,
    .internal = ds_internal,
};
