/*
 * taskqueue_store — the SQLite side of the task queues (see
 * taskqueue_store.h for the tables).
 *
 * Durability is the datastore's (datastore_store.c says why): WAL with
 * synchronous=NORMAL, so a task acknowledged by Add is in the file before
 * the answer leaves, and survives a crash or SIGKILL of appfront. The file
 * is separate from the datastore's so that --clear_datastore keeps tasks
 * and either schema can change alone.
 */
#include "apiserver/services/taskqueue_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/log.h"
#include "common/xalloc.h"

#define TQ_SCHEMA_VERSION 1

static const char tq_schema[] =
    "CREATE TABLE IF NOT EXISTS task("
    " queue TEXT NOT NULL, name TEXT NOT NULL, eta INTEGER NOT NULL,"
    " created INTEGER NOT NULL, first_try INTEGER NOT NULL DEFAULT 0,"
    " retry_count INTEGER NOT NULL DEFAULT 0, exec_count INTEGER NOT NULL DEFAULT 0,"
    " last_status INTEGER NOT NULL DEFAULT 0, pull INTEGER NOT NULL, tag BLOB,"
    " request BLOB NOT NULL, PRIMARY KEY(queue, name)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS task_by_eta ON task(queue, eta, name);"
    "CREATE TABLE IF NOT EXISTS tombstone("
    " queue TEXT NOT NULL, name TEXT NOT NULL, at INTEGER NOT NULL,"
    " PRIMARY KEY(queue, name)) WITHOUT ROWID;";

/* The fixed statements, prepared once. */
enum tq_stmt {
    ST_TASK_EXISTS,
    ST_TOMB_GET,
    ST_INSERT,
    ST_UPDATE,
    ST_GET,
    ST_DELETE,
    ST_TOMB_PUT,
    ST_PURGE,
    ST_TOMB_EXPIRE,
    ST_COUNT,
    ST_QUEUES,
    ST_BY_ETA,
    ST_BY_NAME,
    ST_COUNT_OF
};

#define TASK_COLS                                                                              \
    "queue, name, eta, created, first_try, retry_count, exec_count, last_status, pull, tag, "  \
    "request"

static const char *const tq_sql[ST_COUNT_OF] = {
    [ST_TASK_EXISTS] = "SELECT 1 FROM task WHERE queue = ?1 AND name = ?2",
    [ST_TOMB_GET] = "SELECT at FROM tombstone WHERE queue = ?1 AND name = ?2",
    [ST_INSERT] = "INSERT INTO task(" TASK_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
                  "?10, ?11)",
    [ST_UPDATE] = "UPDATE task SET eta = ?3, first_try = ?4, retry_count = ?5, exec_count = ?6, "
                  "last_status = ?7 WHERE queue = ?1 AND name = ?2",
    [ST_GET] = "SELECT " TASK_COLS " FROM task WHERE queue = ?1 AND name = ?2",
    [ST_DELETE] = "DELETE FROM task WHERE queue = ?1 AND name = ?2",
    [ST_TOMB_PUT] = "INSERT OR REPLACE INTO tombstone(queue, name, at) VALUES (?1, ?2, ?3)",
    [ST_PURGE] = "DELETE FROM task WHERE queue = ?1",
    [ST_TOMB_EXPIRE] = "DELETE FROM tombstone WHERE at < ?1",
    [ST_COUNT] = "SELECT count(*), min(eta) FROM task WHERE queue = ?1",
    [ST_QUEUES] = "SELECT queue, count(*) FROM task GROUP BY queue",
    /* ?2 pull (-1 any), ?3/?4 start (eta, name), ?5 due (0/1), ?6 due_by,
     * ?7 match tag (0/1), ?8 tag, ?9 limit. */
    [ST_BY_ETA] = "SELECT " TASK_COLS " FROM task WHERE queue = ?1"
                  " AND (?2 < 0 OR pull = ?2) AND (eta > ?3 OR (eta = ?3 AND name >= ?4))"
                  " AND (?5 = 0 OR eta <= ?6) AND (?7 = 0 OR tag IS ?8)"
                  " ORDER BY eta, name LIMIT ?9",
    [ST_BY_NAME] = "SELECT " TASK_COLS " FROM task WHERE queue = ?1"
                   " AND (?2 < 0 OR pull = ?2) AND name >= ?4"
                   " AND (?5 = 0 OR eta <= ?6) AND (?7 = 0 OR tag IS ?8)"
                   " ORDER BY name LIMIT ?9",
};

struct af_tq_store {
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT_OF];
    bool in_txn;
};

static int tq_fail(struct af_tq_store *s, const char *what)
{
    af_error("taskqueue: %s: %s", what, sqlite3_errmsg(s->db));
    return -1;
}

static int tq_exec(struct af_tq_store *s, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        af_error("taskqueue: %.60s: %s", sql, msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* The statement, reset and with its bindings cleared. */
static sqlite3_stmt *stmt(struct af_tq_store *s, enum tq_stmt which)
{
    sqlite3_stmt *st = s->st[which];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
}

struct af_tq_store *af_tq_store_open(const char *path, char *err, size_t errlen)
{
    struct af_tq_store *s = af_xcalloc(1, sizeof(*s));
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open the task queue file %s: %s", path,
                 s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, 5000);
    if (tq_exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;") != 0) {
        snprintf(err, errlen, "cannot set WAL mode on %s: %s", path, sqlite3_errmsg(s->db));
        goto fail;
    }
    int version = 0;
    sqlite3_stmt *v;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &v, NULL) == SQLITE_OK) {
        if (sqlite3_step(v) == SQLITE_ROW)
            version = sqlite3_column_int(v, 0);
        sqlite3_finalize(v);
    }
    if (version != 0 && version != TQ_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "%s has task queue schema version %d, this appfront writes version %d: "
                 "remove the file or use another --storage_path",
                 path, version, TQ_SCHEMA_VERSION);
        goto fail;
    }
    char *sql = af_xasprintf("BEGIN IMMEDIATE; %s PRAGMA user_version=%d; COMMIT;", tq_schema,
                             TQ_SCHEMA_VERSION);
    int rc = tq_exec(s, sql);
    free(sql);
    if (rc != 0) {
        snprintf(err, errlen, "cannot create the task queue schema in %s: %s", path,
                 sqlite3_errmsg(s->db));
        goto fail;
    }
    for (int i = 0; i < ST_COUNT_OF; i++) {
        if (sqlite3_prepare_v3(s->db, tq_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                               NULL) != SQLITE_OK) {
            snprintf(err, errlen, "cannot prepare a task queue statement: %s",
                     sqlite3_errmsg(s->db));
            goto fail;
        }
    }
    return s;
fail:
    af_tq_store_close(s);
    return NULL;
}

void af_tq_store_close(struct af_tq_store *s)
{
    if (!s)
        return;
    for (int i = 0; i < ST_COUNT_OF; i++)
        sqlite3_finalize(s->st[i]);
    sqlite3_close_v2(s->db);
    free(s);
}

int af_tq_store_begin(struct af_tq_store *s)
{
    if (tq_exec(s, "BEGIN IMMEDIATE") != 0)
        return -1;
    s->in_txn = true;
    return 0;
}

int af_tq_store_commit(struct af_tq_store *s)
{
    int rc = tq_exec(s, "COMMIT");
    if (rc != 0)
        af_tq_store_rollback(s);
    s->in_txn = false;
    return rc;
}

void af_tq_store_rollback(struct af_tq_store *s)
{
    if (sqlite3_get_autocommit(s->db) == 0)
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    s->in_txn = false;
}

void af_tq_task_release(struct af_tq_task *t)
{
    free(t->queue);
    free(t->name);
    free(t->tag);
    free(t->request);
    memset(t, 0, sizeof(*t));
}

void af_tq_tasks_free(struct af_tq_task *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        af_tq_task_release(&v[i]);
    free(v);
}

static uint8_t *column_blob(sqlite3_stmt *st, int i, size_t *len)
{
    if (sqlite3_column_type(st, i) == SQLITE_NULL) {
        *len = 0;
        return NULL;
    }
    const void *p = sqlite3_column_blob(st, i);
    *len = (size_t)sqlite3_column_bytes(st, i);
    uint8_t *out = af_xmalloc(*len ? *len : 1);
    if (*len)
        memcpy(out, p, *len);
    return out;
}

/* Reads a row of TASK_COLS. */
static void read_task(sqlite3_stmt *st, struct af_tq_task *t)
{
    t->queue = af_xstrdup((const char *)sqlite3_column_text(st, 0));
    t->name = af_xstrdup((const char *)sqlite3_column_text(st, 1));
    t->eta = sqlite3_column_int64(st, 2);
    t->created = sqlite3_column_int64(st, 3);
    t->first_try = sqlite3_column_int64(st, 4);
    t->retry_count = sqlite3_column_int(st, 5);
    t->exec_count = sqlite3_column_int(st, 6);
    t->last_status = sqlite3_column_int(st, 7);
    t->pull = sqlite3_column_int(st, 8) != 0;
    t->tag = column_blob(st, 9, &t->tag_len);
    t->request = column_blob(st, 10, &t->request_len);
    if (!t->request)
        t->request = af_xmalloc(1);
}

int af_tq_store_name_state(struct af_tq_store *s, const char *queue, const char *name,
                           int64_t now, enum af_tq_name_state *state)
{
    sqlite3_stmt *st = stmt(s, ST_TASK_EXISTS);
    bind_text(st, 1, queue);
    bind_text(st, 2, name);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *state = AF_TQ_NAME_TASK;
        return 0;
    }
    if (rc != SQLITE_DONE)
        return tq_fail(s, "looking up a task");
    st = stmt(s, ST_TOMB_GET);
    bind_text(st, 1, queue);
    bind_text(st, 2, name);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        int64_t at = sqlite3_column_int64(st, 0);
        *state = now - at < AF_TQ_TOMBSTONE_USEC ? AF_TQ_NAME_TOMBSTONE : AF_TQ_NAME_FREE;
        return 0;
    }
    if (rc != SQLITE_DONE)
        return tq_fail(s, "looking up a tombstone");
    *state = AF_TQ_NAME_FREE;
    return 0;
}

int af_tq_store_insert(struct af_tq_store *s, const struct af_tq_task *t)
{
    sqlite3_stmt *st = stmt(s, ST_INSERT);
    bind_text(st, 1, t->queue);
    bind_text(st, 2, t->name);
    sqlite3_bind_int64(st, 3, t->eta);
    sqlite3_bind_int64(st, 4, t->created);
    sqlite3_bind_int64(st, 5, t->first_try);
    sqlite3_bind_int(st, 6, t->retry_count);
    sqlite3_bind_int(st, 7, t->exec_count);
    sqlite3_bind_int(st, 8, t->last_status);
    sqlite3_bind_int(st, 9, t->pull);
    if (t->tag)
        sqlite3_bind_blob(st, 10, t->tag, (int)t->tag_len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 11, t->request, (int)t->request_len, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        return tq_fail(s, "storing a task");
    /* A name freed by an expired tombstone is in use again. */
    return 0;
}

int af_tq_store_update(struct af_tq_store *s, const struct af_tq_task *t)
{
    sqlite3_stmt *st = stmt(s, ST_UPDATE);
    bind_text(st, 1, t->queue);
    bind_text(st, 2, t->name);
    sqlite3_bind_int64(st, 3, t->eta);
    sqlite3_bind_int64(st, 4, t->first_try);
    sqlite3_bind_int(st, 5, t->retry_count);
    sqlite3_bind_int(st, 6, t->exec_count);
    sqlite3_bind_int(st, 7, t->last_status);
    if (sqlite3_step(st) != SQLITE_DONE)
        return tq_fail(s, "updating a task");
    return 0;
}

int af_tq_store_get(struct af_tq_store *s, const char *queue, const char *name,
                    struct af_tq_task *t, bool *found)
{
    sqlite3_stmt *st = stmt(s, ST_GET);
    bind_text(st, 1, queue);
    bind_text(st, 2, name);
    int rc = sqlite3_step(st);
    *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW)
        read_task(st, t);
    else if (rc != SQLITE_DONE)
        return tq_fail(s, "reading a task");
    sqlite3_reset(st);
    return 0;
}

int af_tq_store_delete(struct af_tq_store *s, const char *queue, const char *name,
                       bool tombstone, int64_t now, bool *removed)
{
    sqlite3_stmt *st = stmt(s, ST_DELETE);
    bind_text(st, 1, queue);
    bind_text(st, 2, name);
    if (sqlite3_step(st) != SQLITE_DONE)
        return tq_fail(s, "deleting a task");
    *removed = sqlite3_changes(s->db) > 0;
    if (*removed && tombstone) {
        st = stmt(s, ST_TOMB_PUT);
        bind_text(st, 1, queue);
        bind_text(st, 2, name);
        sqlite3_bind_int64(st, 3, now);
        if (sqlite3_step(st) != SQLITE_DONE)
            return tq_fail(s, "keeping a task name");
    }
    return 0;
}

int af_tq_store_purge(struct af_tq_store *s, const char *queue)
{
    sqlite3_stmt *st = stmt(s, ST_PURGE);
    bind_text(st, 1, queue);
    if (sqlite3_step(st) != SQLITE_DONE)
        return tq_fail(s, "purging a queue");
    return 0;
}

int af_tq_store_clear(struct af_tq_store *s)
{
    return tq_exec(s, "DELETE FROM task; DELETE FROM tombstone;");
}

int af_tq_store_expire_tombstones(struct af_tq_store *s, int64_t now)
{
    sqlite3_stmt *st = stmt(s, ST_TOMB_EXPIRE);
    sqlite3_bind_int64(st, 1, now - AF_TQ_TOMBSTONE_USEC);
    if (sqlite3_step(st) != SQLITE_DONE)
        return tq_fail(s, "expiring tombstones");
    return 0;
}

int af_tq_store_list(struct af_tq_store *s, const struct af_tq_query *q, struct af_tq_task **out,
                     size_t *n)
{
    sqlite3_stmt *st = stmt(s, q->by_name ? ST_BY_NAME : ST_BY_ETA);
    bind_text(st, 1, q->queue);
    sqlite3_bind_int(st, 2, q->pull);
    sqlite3_bind_int64(st, 3, q->by_name ? 0 : q->start_eta);
    bind_text(st, 4, q->start_name ? q->start_name : "");
    sqlite3_bind_int(st, 5, q->due_only);
    sqlite3_bind_int64(st, 6, q->due_by);
    sqlite3_bind_int(st, 7, q->match_tag);
    if (q->match_tag && q->tag)
        sqlite3_bind_blob(st, 8, q->tag, (int)q->tag_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 9, q->limit > INT64_MAX ? INT64_MAX : (int64_t)q->limit);

    size_t cap = 0;
    *out = NULL;
    *n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            *out = af_xrealloc(*out, cap * sizeof(**out));
        }
        memset(&(*out)[*n], 0, sizeof(**out));
        read_task(st, &(*out)[(*n)++]);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        af_tq_tasks_free(*out, *n);
        *out = NULL;
        *n = 0;
        return tq_fail(s, "listing tasks");
    }
    return 0;
}

int af_tq_store_count(struct af_tq_store *s, const char *queue, int64_t *n, int64_t *oldest)
{
    sqlite3_stmt *st = stmt(s, ST_COUNT);
    bind_text(st, 1, queue);
    if (sqlite3_step(st) != SQLITE_ROW)
        return tq_fail(s, "counting tasks");
    *n = sqlite3_column_int64(st, 0);
    *oldest = sqlite3_column_type(st, 1) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 1);
    sqlite3_reset(st);
    return 0;
}

int af_tq_store_each_queue(struct af_tq_store *s,
                           void (*fn)(void *arg, const char *queue, int64_t n), void *arg)
{
    sqlite3_stmt *st = stmt(s, ST_QUEUES);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn(arg, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1));
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : tq_fail(s, "listing queues");
}
