/*
 * logservice_store — see logservice_store.h.
 *
 * Strings of a record are stored as BLOBs: a resource or a User-Agent is
 * whatever bytes the client sent, and a BLOB comes back byte for byte
 * where TEXT could be converted.
 */
#include "apiserver/services/logservice_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/log.h"
#include "common/xalloc.h"

/* PRAGMA application_id of a logs file: "afLG". A file with tables and
 * another id belongs to some other program. */
#define LOGSTORE_APP_ID 0x61664c47
/* PRAGMA user_version: the schema below. */
#define LOGSTORE_SCHEMA_VERSION 1

static const char logstore_schema[] =
    "CREATE TABLE IF NOT EXISTS request("
    " seq INTEGER PRIMARY KEY, request_id BLOB NOT NULL, module TEXT NOT NULL,"
    " version TEXT NOT NULL, start_usec INTEGER NOT NULL, end_usec INTEGER NOT NULL,"
    " response_size INTEGER NOT NULL, status INTEGER NOT NULL, method TEXT NOT NULL,"
    " http_major INTEGER NOT NULL, http_minor INTEGER NOT NULL, flags INTEGER NOT NULL,"
    " ip BLOB NOT NULL, nickname BLOB NOT NULL, resource BLOB NOT NULL,"
    " referrer BLOB NOT NULL, user_agent BLOB NOT NULL, host BLOB NOT NULL,"
    " url_map BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS app_line("
    " seq INTEGER PRIMARY KEY, request_id TEXT NOT NULL, time_usec INTEGER NOT NULL,"
    " level INTEGER NOT NULL, message TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);";

enum {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_PUT_RECORD,
    ST_PUT_LINE,
    ST_N
};

static const char *const logstore_sql[ST_N] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_PUT_RECORD] = ("INSERT OR REPLACE INTO request VALUES"
                       "(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)"),
    [ST_PUT_LINE] = "INSERT OR REPLACE INTO app_line VALUES(?1,?2,?3,?4,?5)",
};

struct af_logstore {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *st[ST_N];
    size_t n_records, n_lines;
    /* Rows this transaction added: counted in only when it commits. */
    size_t tx_records, tx_lines;
    uint64_t max_seq;
    bool in_tx;
    bool tx_failed; /* a put failed: the commit rolls back */
    bool failing;   /* the last write failed: said once, until one works */
};

/* Once per run of failures: a full disk must not print a line per batch. */
static void write_failed(struct af_logstore *s, const char *what)
{
    if (!s->failing)
        af_error("logservice: %s in %s failed: %s; request logs stay in memory, the file "
                 "misses them (said once until a write works again)",
                 what, s->path, sqlite3_errmsg(s->db));
    s->failing = true;
}

static int exec_sql(struct af_logstore *s, const char *sql)
{
    return sqlite3_exec(s->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

/* The one integer a statement like "PRAGMA x" or "SELECT count(*)"
 * answers; -1 on an error. */
static int64_t query_int(struct af_logstore *s, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v = -1;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Says in err why path is not a logs file we may write, or returns 0.
 * Reads only. */
static int check_file(struct af_logstore *s, char *err, size_t errlen)
{
    const char *p = s->path;
    int64_t app_id = query_int(s, "PRAGMA application_id");
    if (app_id < 0) {
        if (sqlite3_errcode(s->db) == SQLITE_NOTADB)
            snprintf(err, errlen,
                     "%s is not an SQLite logs database (%s): not touching it; give another "
                     "--logs_path",
                     p, sqlite3_errmsg(s->db));
        else
            snprintf(err, errlen, "cannot open or create %s: %s", p, sqlite3_errmsg(s->db));
        return -1;
    }
    int64_t tables = query_int(s, "SELECT count(*) FROM sqlite_master");
    if (tables < 0) {
        snprintf(err, errlen, "cannot read %s (%s): give another --logs_path", p,
                 sqlite3_errmsg(s->db));
        return -1;
    }
    if (app_id != LOGSTORE_APP_ID) {
        if (app_id == 0 && tables == 0)
            return 0; /* empty: ours to make */
        snprintf(err, errlen,
                 "%s is an SQLite database but not an appfront logs database (application_id "
                 "%lld, %lld tables): not touching it; give another --logs_path",
                 p, (long long)app_id, (long long)tables);
        return -1;
    }
    int64_t version = query_int(s, "PRAGMA user_version");
    if (version != LOGSTORE_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "%s has logs schema version %lld, this appfront writes version %d: remove the "
                 "file or give another --logs_path",
                 p, (long long)version, LOGSTORE_SCHEMA_VERSION);
        return -1;
    }
    /* A damaged file is refused, not written over: the user may want what
     * is left of it. quick_check reads every page once (a file of 10,000
     * requests takes a few milliseconds). */
    sqlite3_stmt *st;
    char result[128] = "";
    if (sqlite3_prepare_v2(s->db, "PRAGMA quick_check(1)", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
            snprintf(result, sizeof(result), "%s", (const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
    }
    if (strcmp(result, "ok") != 0) {
        snprintf(err, errlen, "%s is a damaged logs database (%s): not touching it; remove it "
                 "or give another --logs_path",
                 p, result[0] ? result : sqlite3_errmsg(s->db));
        return -1;
    }
    return 0;
}

struct af_logstore *af_logstore_open(const char *path, char *err, size_t errlen)
{
    struct af_logstore *s = af_xcalloc(1, sizeof(*s));
    s->path = af_xstrdup(path);
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open or create %s: %s", path,
                 s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    /* Only another appfront on the same file makes us wait. */
    sqlite3_busy_timeout(s->db, 5000);
    if (check_file(s, err, errlen) < 0)
        goto fail;
    if (exec_sql(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;") < 0) {
        snprintf(err, errlen, "cannot open or create %s: %s", path, sqlite3_errmsg(s->db));
        goto fail;
    }
    char *sql = af_xasprintf("BEGIN IMMEDIATE; %s PRAGMA application_id=%d; "
                             "PRAGMA user_version=%d; COMMIT;",
                             logstore_schema, LOGSTORE_APP_ID, LOGSTORE_SCHEMA_VERSION);
    int rc = exec_sql(s, sql);
    free(sql);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create the logs tables in %s: %s", path,
                 sqlite3_errmsg(s->db));
        goto fail;
    }
    for (int i = 0; i < ST_N; i++) {
        if (sqlite3_prepare_v3(s->db, logstore_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                               NULL) != SQLITE_OK) {
            snprintf(err, errlen, "%s: cannot prepare \"%s\": %s", path, logstore_sql[i],
                     sqlite3_errmsg(s->db));
            goto fail;
        }
    }
    int64_t nr = query_int(s, "SELECT count(*) FROM request");
    int64_t nl = query_int(s, "SELECT count(*) FROM app_line");
    int64_t mr = query_int(s, "SELECT coalesce(max(seq), 0) FROM request");
    int64_t ml = query_int(s, "SELECT coalesce(max(seq), 0) FROM app_line");
    int64_t floor = query_int(s, "SELECT coalesce(max(value), 0) FROM meta WHERE key='seq_floor'");
    if (nr < 0 || nl < 0 || mr < 0 || ml < 0 || floor < 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, sqlite3_errmsg(s->db));
        goto fail;
    }
    s->n_records = (size_t)nr;
    s->n_lines = (size_t)nl;
    s->max_seq = (uint64_t)(mr > ml ? mr : ml);
    if ((uint64_t)floor > s->max_seq)
        s->max_seq = (uint64_t)floor;
    return s;
fail:
    af_logstore_close(s);
    return NULL;
}

void af_logstore_close(struct af_logstore *s)
{
    if (!s)
        return;
    if (s->in_tx)
        sqlite3_step(s->st[ST_ROLLBACK]);
    for (int i = 0; i < ST_N; i++)
        sqlite3_finalize(s->st[i]);
    sqlite3_close_v2(s->db);
    free(s->path);
    free(s);
}

const char *af_logstore_path(const struct af_logstore *s)
{
    return s->path;
}

uint64_t af_logstore_max_seq(const struct af_logstore *s)
{
    return s->max_seq;
}

size_t af_logstore_n_records(const struct af_logstore *s)
{
    return s->n_records;
}

size_t af_logstore_n_lines(const struct af_logstore *s)
{
    return s->n_lines;
}

/* Runs a prepared statement that returns no rows. */
static int run(struct af_logstore *s, int which)
{
    sqlite3_stmt *st = s->st[which];
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int af_logstore_begin(struct af_logstore *s)
{
    if (run(s, ST_BEGIN) < 0) {
        write_failed(s, "BEGIN");
        return -1;
    }
    s->in_tx = true;
    s->tx_failed = false;
    s->tx_records = s->tx_lines = 0;
    return 0;
}

/* Runs a bound insert of the open transaction and counts its row in
 * *count; a failure marks the transaction failed. */
static int put_row(struct af_logstore *s, sqlite3_stmt *st, uint64_t seq, size_t *count,
                   const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE) {
        write_failed(s, what);
        s->tx_failed = true;
        return -1;
    }
    (*count)++;
    if (seq > s->max_seq)
        s->max_seq = seq;
    return 0;
}

int af_logstore_put_record(struct af_logstore *s, uint64_t seq, const struct af_reqlog_head *h,
                           const char *const str[AF_RQ_N], const char *module,
                           const char *version, const char *method)
{
    sqlite3_stmt *st = s->st[ST_PUT_RECORD];
    size_t id_len = strnlen(h->request_id, AF_REQLOG_ID_LEN);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)seq);
    sqlite3_bind_blob(st, 2, h->request_id, (int)id_len, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, module, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, version, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, h->start_usec);
    sqlite3_bind_int64(st, 6, h->end_usec);
    sqlite3_bind_int64(st, 7, h->response_size);
    sqlite3_bind_int(st, 8, h->status);
    sqlite3_bind_text(st, 9, method, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 10, h->http_major);
    sqlite3_bind_int(st, 11, h->http_minor);
    sqlite3_bind_int(st, 12, h->flags);
    for (int i = 0; i < AF_RQ_N; i++)
        /* A zero-length BLOB, not NULL: the columns are NOT NULL. */
        sqlite3_bind_blob(st, 13 + i, h->len[i] ? str[i] : "", h->len[i], SQLITE_STATIC);
    return put_row(s, st, seq, &s->tx_records, "adding a request record");
}

int af_logstore_put_line(struct af_logstore *s, uint64_t seq, const char *request_id,
                         int64_t time_usec, int level, const char *message)
{
    sqlite3_stmt *st = s->st[ST_PUT_LINE];
    sqlite3_bind_int64(st, 1, (sqlite3_int64)seq);
    sqlite3_bind_text(st, 2, request_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, time_usec);
    sqlite3_bind_int(st, 4, level);
    sqlite3_bind_text(st, 5, message, -1, SQLITE_STATIC);
    return put_row(s, st, seq, &s->tx_lines, "adding an app log line");
}

/* Deletes every row of table but the newest keep (by seq). Not prepared:
 * it runs once per AF_LOGSTORE_PRUNE_SLACK rows. */
static int prune(struct af_logstore *s, const char *table, size_t keep)
{
    char *sql = af_xasprintf("DELETE FROM %s WHERE seq < (SELECT seq FROM %s ORDER BY seq DESC "
                             "LIMIT 1 OFFSET %zu)",
                             table, table, keep ? keep - 1 : 0);
    if (keep == 0) {
        free(sql);
        sql = af_xasprintf("DELETE FROM %s", table);
    }
    int rc = exec_sql(s, sql);
    free(sql);
    return rc;
}

int af_logstore_commit(struct af_logstore *s, size_t max_records, size_t max_lines)
{
    if (!s->in_tx)
        return -1;
    size_t nr = s->n_records + s->tx_records, nl = s->n_lines + s->tx_lines;
    if (!s->tx_failed && nr > max_records + AF_LOGSTORE_PRUNE_SLACK) {
        if (prune(s, "request", max_records) < 0) {
            write_failed(s, "pruning old request records");
            s->tx_failed = true;
        }
        nr = max_records;
    }
    if (!s->tx_failed && nl > max_lines + AF_LOGSTORE_PRUNE_SLACK) {
        if (prune(s, "app_line", max_lines) < 0) {
            write_failed(s, "pruning old app log lines");
            s->tx_failed = true;
        }
        nl = max_lines;
    }
    s->in_tx = false;
    if (s->tx_failed || run(s, ST_COMMIT) < 0) {
        if (!s->tx_failed)
            write_failed(s, "COMMIT");
        /* A failed COMMIT may leave the transaction open (SQLITE_BUSY). */
        if (!sqlite3_get_autocommit(s->db))
            run(s, ST_ROLLBACK);
        return -1;
    }
    s->n_records = nr;
    s->n_lines = nl;
    if (s->failing)
        af_info("logservice: writing to %s works again", s->path);
    s->failing = false;
    return 0;
}

int af_logstore_clear(struct af_logstore *s, uint64_t seq_floor)
{
    char *sql = af_xasprintf("BEGIN IMMEDIATE; DELETE FROM request; DELETE FROM app_line; "
                             "INSERT OR REPLACE INTO meta VALUES('seq_floor', %lld); COMMIT;",
                             (long long)seq_floor);
    int rc = exec_sql(s, sql);
    free(sql);
    if (rc < 0) {
        write_failed(s, "clearing");
        if (!sqlite3_get_autocommit(s->db))
            exec_sql(s, "ROLLBACK");
        return -1;
    }
    s->n_records = s->n_lines = 0;
    if (seq_floor > s->max_seq)
        s->max_seq = seq_floor;
    return 0;
}

long af_logstore_load_records(struct af_logstore *s, size_t max, af_logstore_record_fn fn,
                              void *arg)
{
    static const char sql[] =
        "SELECT seq, request_id, module, version, start_usec, end_usec, response_size, status,"
        " method, http_major, http_minor, flags, ip, nickname, resource, referrer, user_agent,"
        " host, url_map FROM (SELECT * FROM request ORDER BY seq DESC LIMIT ?1) ORDER BY seq";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        af_error("logservice: cannot read %s: %s", s->path, sqlite3_errmsg(s->db));
        return -1;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)max);
    long n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct af_logstore_record r;
        memset(&r, 0, sizeof(r));
        r.seq = (uint64_t)sqlite3_column_int64(st, 0);
        const void *id = sqlite3_column_blob(st, 1);
        int id_len = sqlite3_column_bytes(st, 1);
        if (id && id_len > 0)
            memcpy(r.h.request_id, id,
                   id_len > AF_REQLOG_ID_LEN ? AF_REQLOG_ID_LEN : (size_t)id_len);
        const char *module = (const char *)sqlite3_column_text(st, 2);
        const char *version = (const char *)sqlite3_column_text(st, 3);
        r.module = module ? module : "";
        r.version = version ? version : "";
        r.h.start_usec = sqlite3_column_int64(st, 4);
        r.h.end_usec = sqlite3_column_int64(st, 5);
        r.h.response_size = sqlite3_column_int64(st, 6);
        r.h.status = sqlite3_column_int(st, 7);
        const char *method = (const char *)sqlite3_column_text(st, 8);
        r.h.http_major = (uint8_t)sqlite3_column_int(st, 9);
        r.h.http_minor = (uint8_t)sqlite3_column_int(st, 10);
        r.h.flags = (uint8_t)sqlite3_column_int(st, 11);
        for (int i = 0; i < AF_RQ_N; i++) {
            const void *b = sqlite3_column_blob(st, 12 + i);
            int len = sqlite3_column_bytes(st, 12 + i);
            r.str[i] = b ? b : "";
            r.h.len[i] = (uint16_t)(len < 0 ? 0 : len > AF_REQLOG_MAX_STR ? AF_REQLOG_MAX_STR
                                                                             : len);
        }
        fn(arg, &r, method ? method : "");
        n++;
    }
    if (rc != SQLITE_DONE) {
        af_error("logservice: cannot read %s: %s", s->path, sqlite3_errmsg(s->db));
        n = -1;
    }
    sqlite3_finalize(st);
    return n;
}

long af_logstore_load_lines(struct af_logstore *s, size_t max, af_logstore_line_fn fn, void *arg)
{
    static const char sql[] =
        "SELECT seq, request_id, time_usec, level, message FROM"
        " (SELECT * FROM app_line ORDER BY seq DESC LIMIT ?1) ORDER BY seq";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        af_error("logservice: cannot read %s: %s", s->path, sqlite3_errmsg(s->db));
        return -1;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)max);
    long n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 1);
        const char *msg = (const char *)sqlite3_column_text(st, 4);
        fn(arg, (uint64_t)sqlite3_column_int64(st, 0), id ? id : "",
           sqlite3_column_int64(st, 2), sqlite3_column_int(st, 3), msg ? msg : "");
        n++;
    }
    if (rc != SQLITE_DONE) {
        af_error("logservice: cannot read %s: %s", s->path, sqlite3_errmsg(s->db));
        n = -1;
    }
    sqlite3_finalize(st);
    return n;
}
