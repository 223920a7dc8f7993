/*
 * datastore_store — SQLite connection, schema and statements (see
 * datastore_store.h for the tables).
 *
 * Durability: journal_mode=WAL with synchronous=NORMAL. In WAL mode a
 * transaction is committed once its frames are appended to the -wal file by
 * write(2); NORMAL only skips the fsync of that file at each commit (it still
 * syncs at checkpoints). The data is then in the kernel's page cache, which
 * survives the death of the process, so an acknowledged write survives
 * SIGKILL or a crash of appfront. What NORMAL gives up is durability of the
 * last transactions across a power cut or kernel crash (the database stays
 * consistent; those commits roll back), which is the right trade for a
 * development server: FULL costs one fsync per Put. docs/datastore.md has
 * the figures.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apiserver/services/datastore_store.h"
#include "common/log.h"
#include "common/xalloc.h"

/* Schema version in PRAGMA user_version. A file with another version is
 * refused rather than misread. */
#define DS_SCHEMA_VERSION 2
/* Version 1 lacked the job tables; it is upgraded in place (they are only
 * added). An older appfront refuses version 2, so pending writes are never
 * left behind by a binary that does not know them. */
#define DS_SCHEMA_OLDEST 1

/* Statements kept per connection. A query's SQL depends on its shape, and a
 * program uses a handful of shapes, so a small LRU cache keeps them all. */
#define DS_STMT_CACHE 64

static const char ds_schema[] =
    "CREATE TABLE IF NOT EXISTS partition("
    " id INTEGER PRIMARY KEY, app TEXT NOT NULL, ns TEXT NOT NULL, UNIQUE(app, ns));"
    "CREATE TABLE IF NOT EXISTS entity("
    " part INTEGER NOT NULL, key BLOB NOT NULL, kind TEXT NOT NULL, data BLOB NOT NULL,"
    " PRIMARY KEY(part, key)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS entity_by_kind ON entity(part, kind, key);"
    "CREATE TABLE IF NOT EXISTS prop("
    " part INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL,"
    " key BLOB NOT NULL, PRIMARY KEY(part, kind, name, value, key)) WITHOUT ROWID;"
    /* By entity: deleting an entity's rows, and the per-entity lookups of
     * queries (sort values of later orders, multi-valued de-duplication). */
    "CREATE INDEX IF NOT EXISTS prop_by_key ON prop(part, key, name, value);"
    "CREATE TABLE IF NOT EXISTS egroup("
    " part INTEGER NOT NULL, root BLOB NOT NULL, version INTEGER NOT NULL,"
    " PRIMARY KEY(part, root)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS id_counter(app TEXT PRIMARY KEY, next INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS composite_index("
    " id INTEGER PRIMARY KEY, app TEXT NOT NULL, data BLOB NOT NULL);"
    /* Committed writes not yet visible to global queries (the eventually
     * consistent policies). A new rowid is above every live one, so ids
     * keep a group's jobs in commit order. */
    "CREATE TABLE IF NOT EXISTS job("
    " id INTEGER PRIMARY KEY, part INTEGER NOT NULL, root BLOB NOT NULL, due INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS job_by_group ON job(part, root, id);"
    "CREATE TABLE IF NOT EXISTS job_write("
    " job INTEGER NOT NULL, n INTEGER NOT NULL, key BLOB NOT NULL, data BLOB,"
    " PRIMARY KEY(job, n)) WITHOUT ROWID;";

struct ds_cached {
    char *sql;
    sqlite3_stmt *st;
    uint64_t used; /* LRU clock */
};

struct af_ds_conn {
    sqlite3 *db;
    struct ds_cached cache[DS_STMT_CACHE];
    uint64_t clock;
    bool in_txn;
};

static void ds_log_sqlite(struct af_ds_conn *c, const char *what)
{
    af_error("datastore: %s: %s", what, sqlite3_errmsg(c->db));
}

static int exec(struct af_ds_conn *c, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(c->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        af_error("datastore: %.60s: %s", sql, msg ? msg : sqlite3_errmsg(c->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

void af_ds_store_unlink(const char *path)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        char *p = af_xasprintf("%s%s", path, suffixes[i]);
        if (unlink(p) != 0 && errno != ENOENT)
            af_warn("datastore: cannot remove %s: %s", p, strerror(errno));
        free(p);
    }
}

struct af_ds_conn *af_ds_conn_open(const char *path, bool create_schema, char *err, size_t errlen)
{
    struct af_ds_conn *c = af_xcalloc(1, sizeof(*c));
    /* One thread uses a connection at a time (the backend): no mutexes. */
    int flags =
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create_schema ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(path, &c->db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open the datastore file %s: %s", path,
                 c->db ? sqlite3_errmsg(c->db) : "out of memory");
        goto fail;
    }
    /* Writers never wait on readers in WAL mode; the timeout only covers
     * another process holding the file (two appfronts on one path). */
    sqlite3_busy_timeout(c->db, 5000);
    if (exec(c, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;") != 0) {
        snprintf(err, errlen, "cannot set WAL mode on %s: %s", path, sqlite3_errmsg(c->db));
        goto fail;
    }
    if (create_schema) {
        sqlite3_stmt *st;
        int version = 0;
        if (sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW)
                version = sqlite3_column_int(st, 0);
            sqlite3_finalize(st);
        }
        if (version != 0 && (version < DS_SCHEMA_OLDEST || version > DS_SCHEMA_VERSION)) {
            snprintf(err, errlen,
                     "%s has datastore schema version %d, this appfront writes version %d: "
                     "start with --clear_datastore or another --datastore_path",
                     path, version, DS_SCHEMA_VERSION);
            goto fail;
        }
        char *sql = af_xasprintf("BEGIN IMMEDIATE; %s PRAGMA user_version=%d; COMMIT;", ds_schema,
                                 DS_SCHEMA_VERSION);
        int rc = exec(c, sql);
        free(sql);
        if (rc != 0) {
            snprintf(err, errlen, "cannot create the datastore schema in %s: %s", path,
                     sqlite3_errmsg(c->db));
            goto fail;
        }
        /* A bigger page cache than the 2 MiB default for the connection
         * that serves every non-transactional call. */
        exec(c, "PRAGMA cache_size=-16384;");
    }
    return c;
fail:
    af_ds_conn_close(c);
    return NULL;
}

void af_ds_conn_close(struct af_ds_conn *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < DS_STMT_CACHE; i++) {
        sqlite3_finalize(c->cache[i].st);
        free(c->cache[i].sql);
    }
    sqlite3_close_v2(c->db);
    free(c);
}

sqlite3_stmt *af_ds_prepare(struct af_ds_conn *c, const char *sql)
{
    struct ds_cached *victim = &c->cache[0];
    c->clock++;
    for (size_t i = 0; i < DS_STMT_CACHE; i++) {
        struct ds_cached *e = &c->cache[i];
        if (e->sql && strcmp(e->sql, sql) == 0) {
            e->used = c->clock;
            sqlite3_reset(e->st);
            sqlite3_clear_bindings(e->st);
            return e->st;
        }
        if (e->used < victim->used)
            victim = e;
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        af_error("datastore: cannot prepare \"%s\": %s", sql, sqlite3_errmsg(c->db));
        return NULL;
    }
    sqlite3_finalize(victim->st);
    free(victim->sql);
    victim->sql = af_xstrdup(sql);
    victim->st = st;
    victim->used = c->clock;
    return st;
}

int af_ds_begin_write(struct af_ds_conn *c)
{
    if (exec(c, "BEGIN IMMEDIATE") != 0)
        return -1;
    c->in_txn = true;
    return 0;
}

int af_ds_begin_read(struct af_ds_conn *c)
{
    if (exec(c, "BEGIN") != 0)
        return -1;
    c->in_txn = true;
    /* A deferred transaction takes its snapshot at its first read: read now,
     * so the snapshot is the database of this moment. */
    sqlite3_stmt *st = af_ds_prepare(c, "SELECT count(*) FROM partition");
    if (!st || sqlite3_step(st) != SQLITE_ROW) {
        ds_log_sqlite(c, "starting a read snapshot");
        af_ds_rollback(c);
        return -1;
    }
    sqlite3_reset(st);
    return 0;
}

int af_ds_commit(struct af_ds_conn *c)
{
    if (exec(c, "COMMIT") != 0) {
        af_ds_rollback(c);
        return -1;
    }
    c->in_txn = false;
    return 0;
}

void af_ds_rollback(struct af_ds_conn *c)
{
    if (!sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    c->in_txn = false;
}

int af_ds_store_clear(struct af_ds_conn *c)
{
    return exec(c, "BEGIN IMMEDIATE; DELETE FROM partition; DELETE FROM entity; DELETE FROM prop;"
                   " DELETE FROM egroup; DELETE FROM id_counter; DELETE FROM composite_index;"
                   " DELETE FROM job; DELETE FROM job_write; COMMIT;");
}

/* Steps a statement expected to finish without rows. */
static int step_done(struct af_ds_conn *c, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        ds_log_sqlite(c, what);
        return -1;
    }
    return 0;
}

int af_ds_partition(struct af_ds_conn *c, const char *app, const char *ns, bool create, int64_t *id)
{
    sqlite3_stmt *st = af_ds_prepare(c, "SELECT id FROM partition WHERE app=?1 AND ns=?2");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, app, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, ns ? ns : "", -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        return 0;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        ds_log_sqlite(c, "reading a partition");
        return -1;
    }
    *id = 0;
    if (!create)
        return 0;
    st = af_ds_prepare(c, "INSERT INTO partition(app, ns) VALUES(?1, ?2)");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, app, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, ns ? ns : "", -1, SQLITE_STATIC);
    if (step_done(c, st, "adding a partition") != 0)
        return -1;
    *id = sqlite3_last_insert_rowid(c->db);
    return 0;
}

int af_ds_entity_get(struct af_ds_conn *c, int64_t part, const uint8_t *key, size_t key_len,
                     uint8_t **data, size_t *data_len)
{
    *data = NULL;
    *data_len = 0;
    sqlite3_stmt *st = af_ds_prepare(c, "SELECT data FROM entity WHERE part=?1 AND key=?2");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, part);
    sqlite3_bind_blob(st, 2, key, (int)key_len, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        size_t n = (size_t)sqlite3_column_bytes(st, 0);
        const void *p = sqlite3_column_blob(st, 0);
        *data = af_xmalloc(n ? n : 1);
        if (n)
            memcpy(*data, p, n);
        *data_len = n;
        rc = SQLITE_DONE;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        ds_log_sqlite(c, "reading an entity");
        return -1;
    }
    return 0;
}

static int delete_rows(struct af_ds_conn *c, int64_t part, const uint8_t *key, size_t key_len)
{
    sqlite3_stmt *st = af_ds_prepare(c, "DELETE FROM prop WHERE part=?1 AND key=?2");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, part);
    sqlite3_bind_blob(st, 2, key, (int)key_len, SQLITE_STATIC);
    return step_done(c, st, "deleting index rows");
}

int af_ds_entity_put(struct af_ds_conn *c, int64_t part, const uint8_t *key, size_t key_len,
                     const char *kind, const uint8_t *data, size_t data_len,
                     const struct af_ds_index_row *rows, size_t n_rows)
{
    if (delete_rows(c, part, key, key_len) != 0)
        return -1;
    sqlite3_stmt *st = af_ds_prepare(
        c, "INSERT OR REPLACE INTO entity(part, key, kind, data) VALUES(?1, ?2, ?3, ?4)");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, part);
    sqlite3_bind_blob(st, 2, key, (int)key_len, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, data, (int)data_len, SQLITE_STATIC);
    if (step_done(c, st, "writing an entity") != 0)
        return -1;
    if (n_rows == 0)
        return 0;
    /* OR IGNORE: a multi-valued property may repeat a value; the index
     * holds it once, as App Engine's does. */
    st = af_ds_prepare(c, "INSERT OR IGNORE INTO prop(part, kind, name, value, key)"
                          " VALUES(?1, ?2, ?3, ?4, ?5)");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, part);
    sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, key, (int)key_len, SQLITE_STATIC);
    for (size_t i = 0; i < n_rows; i++) {
        sqlite3_bind_text(st, 3, rows[i].name, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 4, rows[i].value, (int)rows[i].value_len, SQLITE_STATIC);
        if (step_done(c, st, "writing an index row") != 0)
            return -1;
    }
    return 0;
}

int af_ds_entity_delete(struct af_ds_conn *c, int64_t part, const uint8_t *key, size_t key_len,
                        bool *existed)
{
    sqlite3_stmt *st = af_ds_prepare(c, "DELETE FROM entity WHERE part=?1 AND key=?2");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, part);
    sqlite3_bind_blob(st, 2, key, (int)key_len, SQLITE_STATIC);
    if (step_done(c, st, "deleting an entity") != 0)
        return -1;
    *existed = sqlite3_changes(c->db) > 0;
    if (!*existed)
        return 0;
    return delete_rows(c, part, key, key_len);
}

int af_ds_group_version(struct af_ds_conn *c, int64_t part, const uint8_t *root, size_t root_len,
                        int64_t *version)
{
    sqlite3_stmt *st = af_ds_prepare(c, "SELECT version FROM egroup WHERE part=?1 AND root=?2");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, part);
    sqlite3_bind_blob(st, 2, root, (int)root_len, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    *version = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        ds_log_sqlite(c, "reading an entity group version");
        return -1;
    }
    return 0;
}

int af_ds_group_bump(struct af_ds_conn *c, int64_t part, const uint8_t *root, size_t root_len,
                     int64_t *version)
{
    sqlite3_stmt *st = af_ds_prepare(c, "INSERT INTO egroup(part, root, version) VALUES(?1, ?2, 1)"
                                        " ON CONFLICT(part, root) DO UPDATE SET version=version+1"
                                        " RETURNING version");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, part);
    sqlite3_bind_blob(st, 2, root, (int)root_len, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *version = sqlite3_column_int64(st, 0);
        rc = sqlite3_step(st);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        ds_log_sqlite(c, "updating an entity group version");
        return -1;
    }
    return 0;
}

int af_ds_counter_get(struct af_ds_conn *c, const char *app, int64_t *next)
{
    sqlite3_stmt *st = af_ds_prepare(c, "SELECT next FROM id_counter WHERE app=?1");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, app, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    *next = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 1;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        ds_log_sqlite(c, "reading the id counter");
        return -1;
    }
    return 0;
}

int af_ds_counter_set(struct af_ds_conn *c, const char *app, int64_t next)
{
    sqlite3_stmt *st = af_ds_prepare(c, "INSERT INTO id_counter(app, next) VALUES(?1, ?2)"
                                        " ON CONFLICT(app) DO UPDATE SET next=max(next, ?2)");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, app, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, next);
    return step_done(c, st, "writing the id counter");
}

int af_ds_index_add(struct af_ds_conn *c, const char *app, const uint8_t *data, size_t len,
                    int64_t *id)
{
    sqlite3_stmt *st = af_ds_prepare(c, "INSERT INTO composite_index(app, data) VALUES(?1, ?2)");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, app, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, data, (int)len, SQLITE_STATIC);
    if (step_done(c, st, "adding a composite index") != 0)
        return -1;
    *id = sqlite3_last_insert_rowid(c->db);
    return 0;
}

int af_ds_index_list(struct af_ds_conn *c, const char *app,
                     void (*fn)(void *arg, int64_t id, const uint8_t *data, size_t len), void *arg)
{
    sqlite3_stmt *st =
        af_ds_prepare(c, "SELECT id, data FROM composite_index WHERE app=?1 ORDER BY id");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, app, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn(arg, sqlite3_column_int64(st, 0), sqlite3_column_blob(st, 1),
           (size_t)sqlite3_column_bytes(st, 1));
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        ds_log_sqlite(c, "listing composite indexes");
        return -1;
    }
    return 0;
}

/* Runs st (bindings done) and calls fn with column 0 of each row. */
static int list_names(struct af_ds_conn *c, sqlite3_stmt *st,
                      void (*fn)(void *arg, const char *name), void *arg)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn(arg, (const char *)sqlite3_column_text(st, 0));
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        ds_log_sqlite(c, "listing metadata");
        return -1;
    }
    return 0;
}

int af_ds_list_namespaces(struct af_ds_conn *c, const char *app,
                          void (*fn)(void *arg, const char *name), void *arg)
{
    sqlite3_stmt *st = af_ds_prepare(c, "SELECT ns FROM partition p WHERE app=?1 AND"
                                        " EXISTS(SELECT 1 FROM entity e WHERE e.part=p.id)"
                                        " ORDER BY ns");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, app, -1, SQLITE_STATIC);
    return list_names(c, st, fn, arg);
}

int af_ds_list_kinds(struct af_ds_conn *c, int64_t part, void (*fn)(void *arg, const char *name),
                     void *arg)
{
    /* A skip scan of the kind index: one seek per kind, not one step per
     * entity. */
    sqlite3_stmt *st = af_ds_prepare(
        c, "WITH RECURSIVE k(kind) AS ("
           " SELECT min(kind) FROM entity WHERE part=?1"
           " UNION ALL"
           " SELECT (SELECT min(kind) FROM entity WHERE part=?1 AND kind > k.kind) FROM k"
           " WHERE k.kind IS NOT NULL)"
           " SELECT kind FROM k WHERE kind IS NOT NULL");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, part);
    return list_names(c, st, fn, arg);
}

/* ---- jobs ---- */

int af_ds_job_add(struct af_ds_conn *c, int64_t part, const uint8_t *root, size_t root_len,
                  int64_t due, int64_t *id)
{
    sqlite3_stmt *st = af_ds_prepare(c, "INSERT INTO job(part, root, due) VALUES(?1, ?2, ?3)");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, part);
    sqlite3_bind_blob(st, 2, root, (int)root_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, due);
    if (step_done(c, st, "adding a job") != 0)
        return -1;
    *id = sqlite3_last_insert_rowid(c->db);
    return 0;
}

int af_ds_job_write_add(struct af_ds_conn *c, int64_t job, int64_t n, const uint8_t *key,
                        size_t key_len, const uint8_t *data, size_t data_len)
{
    sqlite3_stmt *st =
        af_ds_prepare(c, "INSERT INTO job_write(job, n, key, data) VALUES(?1, ?2, ?3, ?4)");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_int64(st, 2, n);
    sqlite3_bind_blob(st, 3, key, (int)key_len, SQLITE_STATIC);
    if (data)
        sqlite3_bind_blob(st, 4, data, (int)data_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 4);
    return step_done(c, st, "adding a job's write");
}

int af_ds_job_count(struct af_ds_conn *c, int64_t *n, int64_t *min_due)
{
    sqlite3_stmt *st = af_ds_prepare(c, "SELECT count(*), min(due) FROM job");
    if (!st)
        return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *n = sqlite3_column_int64(st, 0);
        if (min_due)
            *min_due = sqlite3_column_int64(st, 1);
        rc = SQLITE_DONE;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        ds_log_sqlite(c, "counting jobs");
        return -1;
    }
    return 0;
}

/* Runs st (bound by the caller) and collects its (id, part, root, due) rows. */
static int collect_jobs(struct af_ds_conn *c, sqlite3_stmt *st, struct af_ds_job **jobs,
                        size_t *n)
{
    *jobs = NULL;
    *n = 0;
    int rc;
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            *jobs = af_xrealloc(*jobs, cap * sizeof(**jobs));
        }
        struct af_ds_job *j = &(*jobs)[(*n)++];
        j->id = sqlite3_column_int64(st, 0);
        j->part = sqlite3_column_int64(st, 1);
        j->root_len = (size_t)sqlite3_column_bytes(st, 2);
        j->root = af_xmalloc(j->root_len ? j->root_len : 1);
        if (j->root_len)
            memcpy(j->root, sqlite3_column_blob(st, 2), j->root_len);
        j->due = sqlite3_column_int64(st, 3);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        ds_log_sqlite(c, "listing jobs");
        af_ds_jobs_free(*jobs, *n);
        *jobs = NULL;
        *n = 0;
        return -1;
    }
    return 0;
}

int af_ds_job_all(struct af_ds_conn *c, struct af_ds_job **jobs, size_t *n)
{
    sqlite3_stmt *st =
        af_ds_prepare(c, "SELECT id, part, root, due FROM job ORDER BY part, root, id");
    if (!st)
        return -1;
    return collect_jobs(c, st, jobs, n);
}

int af_ds_job_group(struct af_ds_conn *c, int64_t part, const uint8_t *root, size_t root_len,
                    struct af_ds_job **jobs, size_t *n)
{
    sqlite3_stmt *st = af_ds_prepare(
        c, "SELECT id, part, root, due FROM job WHERE part=?1 AND root=?2 ORDER BY id");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, part);
    sqlite3_bind_blob(st, 2, root, (int)root_len, SQLITE_STATIC);
    return collect_jobs(c, st, jobs, n);
}

int af_ds_job_group_pending(struct af_ds_conn *c, int64_t part, const uint8_t *root,
                            size_t root_len, bool *pending)
{
    sqlite3_stmt *st = af_ds_prepare(c, "SELECT 1 FROM job WHERE part=?1 AND root=?2 LIMIT 1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, part);
    sqlite3_bind_blob(st, 2, root, (int)root_len, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    *pending = rc == SQLITE_ROW;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        ds_log_sqlite(c, "looking for a group's jobs");
        return -1;
    }
    return 0;
}

void af_ds_jobs_free(struct af_ds_job *jobs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(jobs[i].root);
    free(jobs);
}

int af_ds_job_writes(struct af_ds_conn *c, int64_t job, struct af_ds_job_write **w, size_t *n)
{
    *w = NULL;
    *n = 0;
    sqlite3_stmt *st = af_ds_prepare(c, "SELECT key, data FROM job_write WHERE job=?1 ORDER BY n");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, job);
    int rc;
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 4;
            *w = af_xrealloc(*w, cap * sizeof(**w));
        }
        struct af_ds_job_write *x = &(*w)[(*n)++];
        x->key_len = (size_t)sqlite3_column_bytes(st, 0);
        x->key = af_xmalloc(x->key_len ? x->key_len : 1);
        if (x->key_len)
            memcpy(x->key, sqlite3_column_blob(st, 0), x->key_len);
        x->is_put = sqlite3_column_type(st, 1) != SQLITE_NULL;
        x->data_len = x->is_put ? (size_t)sqlite3_column_bytes(st, 1) : 0;
        x->data = af_xmalloc(x->data_len ? x->data_len : 1);
        if (x->data_len)
            memcpy(x->data, sqlite3_column_blob(st, 1), x->data_len);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        ds_log_sqlite(c, "reading a job's writes");
        af_ds_job_writes_free(*w, *n);
        *w = NULL;
        *n = 0;
        return -1;
    }
    return 0;
}

void af_ds_job_writes_free(struct af_ds_job_write *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(w[i].key);
        free(w[i].data);
    }
    free(w);
}

int af_ds_job_remove(struct af_ds_conn *c, int64_t job)
{
    sqlite3_stmt *st = af_ds_prepare(c, "DELETE FROM job_write WHERE job=?1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, job);
    if (step_done(c, st, "removing a job's writes") != 0)
        return -1;
    st = af_ds_prepare(c, "DELETE FROM job WHERE id=?1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, job);
    return step_done(c, st, "removing a job");
}
