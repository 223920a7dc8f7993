/*
 * Unit tests of the logservice with --logs_path (logservice_store.c)
 * against a real SQLite file in a fresh directory: what was written is
 * read back after the service and the file are closed and opened again
 * (fields, app lines, order, page offsets), the file is pruned to its
 * bound, a clear empties it, and a file that is not an appfront logs
 * database is refused and left as it was.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "apiserver/services/logservice.c"
#include "tests/unit/svc_call.h"
#include "tests/unit/logservice_batch.h"

static const struct af_api_module two_mods[] = {
    {.name = "default", .version = "1"},
    {.name = "worker", .version = "2"},
};

struct fixture {
    char dir[64];
    char path[96];
    struct af_logstore *store;
    struct log_state *st;
};

/* The service on the fixture's file, as appfront starts it. */
static void start(struct fixture *f, const struct af_api_module *mods, size_t n_mods)
{
    char err[512] = "";
    f->store = af_logstore_open(f->path, err, sizeof(err));
    if (!f->store)
        fail_msg("open %s: %s", f->path, err);
    struct af_api_options opts = {.app_id = "testapp",
                                  .module = "default",
                                  .version = "1",
                                  .modules = mods,
                                  .n_modules = n_mods,
                                  .logstore = f->store};
    f->st = af_service_logservice.create(&opts);
}

/* As appfront stops: the service, then the file. */
static void stop(struct fixture *f)
{
    af_service_logservice.destroy(f->st);
    af_logstore_close(f->store);
    f->st = NULL;
    f->store = NULL;
}

static void restart(struct fixture *f)
{
    stop(f);
    start(f, two_mods, 2);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/af-logstore-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/logs.db", f->dir);
    start(f, two_mods, 2);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->st)
        stop(f);
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < 4; i++) {
        char p[128];
        snprintf(p, sizeof(p), "%s%s", f->path, suffixes[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static Af__Log__LogReadRequest read_all(void)
{
    Af__Log__LogReadRequest req = AF__LOG__LOG_READ_REQUEST__INIT;
    req.app_id = "testapp";
    req.has_include_app_logs = true;
    req.include_app_logs = true;
    return req;
}

/* The encoded Read response: two reads that answer the same bytes agree
 * on every field, offsets included. */
static uint8_t *read_bytes(void *st, Af__Log__LogReadRequest *req, size_t *len)
{
    struct af_result res = svc_call(&af_service_logservice, st, "Read", &req->base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    *len = res.response_len;
    uint8_t *out = res.response;
    res.response = NULL;
    svc_result_free(&res);
    return out;
}

static int64_t count_rows(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void test_read_back_after_reopen(void **state)
{
    struct fixture *f = *state;
    flush_line(f->st, "rid-a", 1100000, 3, "a's line");
    flush_line(f->st, "running", 1200000, 1, "still running\nsecond line");
    const struct rec_spec recs[] = {
        {.id = "rid-a", .method = "POST", .resource = "/a?x=1", .status = 201, .start = 1000000,
         .end = 1300000, .size = 12, .ua = "agent \"q\"", .referrer = "http://r/",
         .nickname = "ann", .url_map = "/a.*"},
        {.id = "rid-b", .module = 1, .status = 404, .start = 2000000, .end = 2000500},
        {.id = "rid-c", .method = "", .status = 400, .start = 2100000, .end = 2100001},
    };
    post_ok(f->st, recs, 3);
    flush_line(f->st, "rid-b", 2000100, 2, "b's line");

    Af__Log__LogReadRequest req = read_all();
    size_t len_before, len_after;
    uint8_t *before = read_bytes(f->st, &req, &len_before);
    restart(f);
    uint8_t *after = read_bytes(f->st, &req, &len_after);
    assert_int_equal(len_after, len_before);
    assert_memory_equal(after, before, len_before);
    free(before);
    free(after);

    Af__Log__LogReadResponse *out = do_read(f->st, &req);
    assert_int_equal(out->n_log, 4);
    /* Newest first: rid-b (its line came last), rid-c, rid-a, running. */
    assert_memory_equal(out->log[0]->request_id.data, "rid-b", 5);
    assert_string_equal(out->log[0]->module_id, "worker");
    assert_string_equal(out->log[0]->version_id, "2");
    assert_int_equal(out->log[0]->n_line, 1);
    assert_memory_equal(out->log[1]->request_id.data, "rid-c", 5);
    assert_string_equal(out->log[1]->method, ""); /* the request line was never read */
    Af__Log__RequestLog *a = out->log[2];
    assert_string_equal(a->method, "POST");
    assert_string_equal(a->user_agent, "agent \"q\"");
    assert_string_equal(a->nickname, "ann");
    assert_string_equal(a->url_map_entry, "/a.*");
    assert_string_equal(a->line[0]->log_message, "a's line");
    assert_true(!out->log[3]->finished);
    assert_string_equal(out->log[3]->line[0]->log_message, "still running\nsecond line");
    af__log__log_read_response__free_unpacked(out, NULL);

    /* What arrives after the restart is newer than all of it. */
    const struct rec_spec d = {.id = "rid-d", .status = 200, .start = 1, .end = 2};
    post_ok(f->st, &d, 1);
    out = do_read(f->st, &req);
    assert_int_equal(out->n_log, 5);
    assert_memory_equal(out->log[0]->request_id.data, "rid-d", 5);
    af__log__log_read_response__free_unpacked(out, NULL);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM request"), 4);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM app_line"), 3);
}

static void test_paging_across_restart(void **state)
{
    struct fixture *f = *state;
    for (int batch = 0; batch < 3; batch++) {
        struct rec_spec recs[4];
        char ids[4][16];
        for (int i = 0; i < 4; i++) {
            snprintf(ids[i], sizeof(ids[i]), "p%d", batch * 4 + i);
            recs[i] = (struct rec_spec){.id = ids[i], .status = 200, .start = 1, .end = 2};
        }
        post_ok(f->st, recs, 4);
    }
    Af__Log__LogReadRequest req = read_all();
    req.has_count = true;
    req.count = 5;
    Af__Log__LogReadResponse *page = do_read(f->st, &req);
    assert_int_equal(page->n_log, 5);
    assert_non_null(page->offset);
    char offset[32];
    snprintf(offset, sizeof(offset), "%.*s", (int)page->offset->request_id.len,
             (const char *)page->offset->request_id.data);
    af__log__log_read_response__free_unpacked(page, NULL);

    restart(f);
    Af__Log__LogOffset off = AF__LOG__LOG_OFFSET__INIT;
    off.has_request_id = true;
    off.request_id.data = (uint8_t *)offset;
    off.request_id.len = strlen(offset);
    req.offset = &off;
    page = do_read(f->st, &req);
    assert_int_equal(page->n_log, 5);
    for (int i = 0; i < 5; i++) {
        char want[8];
        snprintf(want, sizeof(want), "p%d", 6 - i);
        assert_int_equal(page->log[i]->request_id.len, strlen(want));
        assert_memory_equal(page->log[i]->request_id.data, want, strlen(want));
    }
    af__log__log_read_response__free_unpacked(page, NULL);

    /* An offset appfront did not make is still refused. */
    off.request_id.data = (uint8_t *)"p3";
    off.request_id.len = 2;
    struct af_result res = svc_call(&af_service_logservice, f->st, "Read", &req.base);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, LOGERR(INVALID_REQUEST));
    svc_result_free(&res);
}

static void test_pruned_to_the_bound(void **state)
{
    struct fixture *f = *state;
    /* Batches of 500 records until the file has held more than its bound
     * and the slack: the newest LOG_MAX_REQUESTS stay. */
    const size_t total = LOG_MAX_REQUESTS + AF_LOGSTORE_PRUNE_SLACK + 1500;
    size_t posted = 0;
    while (posted < total) {
        struct batch b = {0};
        for (size_t i = 0; i < 500; i++, posted++) {
            char id[16];
            snprintf(id, sizeof(id), "r%zu", posted);
            struct rec_spec r = {.id = id, .status = 200, .start = 1, .end = 2};
            add(&b, &r);
        }
        struct af_result res = post(f->st, &b);
        assert_int_equal(res.kind, AF_RESULT_OK);
        svc_result_free(&res);
        assert_true(af_logstore_n_records(f->store) <= LOG_MAX_REQUESTS + AF_LOGSTORE_PRUNE_SLACK);
    }
    int64_t rows = count_rows(f->path, "SELECT count(*) FROM request");
    assert_true(rows >= LOG_MAX_REQUESTS && rows <= LOG_MAX_REQUESTS + AF_LOGSTORE_PRUNE_SLACK);
    assert_int_equal((size_t)rows, af_logstore_n_records(f->store));
    /* The oldest went first. */
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM request WHERE request_id = "
                                          "CAST('r0' AS BLOB)"),
                     0);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM request WHERE request_id = "
                                          "CAST('r12499' AS BLOB)"),
                     1);
    /* Lines too, by count. */
    for (size_t i = 0; i < LOG_MAX_LINES + AF_LOGSTORE_PRUNE_SLACK + 1; i++)
        flush_line(f->st, "lines", (int64_t)i, 0, "x"); /* DEBUG: not printed */
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM app_line"), LOG_MAX_LINES);

    /* After a restart memory holds the newest LOG_MAX_REQUESTS, as before. */
    restart(f);
    assert_int_equal(f->st->req_count, LOG_MAX_REQUESTS);
    assert_int_equal(f->st->count, LOG_MAX_LINES);
    Af__Log__LogReadRequest req = read_all();
    req.has_count = true;
    req.count = 2;
    Af__Log__LogReadResponse *out = do_read(f->st, &req);
    assert_int_equal(out->n_log, 2);
    assert_memory_equal(out->log[0]->request_id.data, "lines", 5);
    assert_int_equal(out->log[1]->request_id.len, 6);
    assert_memory_equal(out->log[1]->request_id.data, "r12499", 6);
    af__log__log_read_response__free_unpacked(out, NULL);
}

static void test_clear_empties_the_file(void **state)
{
    struct fixture *f = *state;
    const struct rec_spec a = {.id = "old", .status = 200, .start = 1, .end = 2};
    post_ok(f->st, &a, 1);
    flush_line(f->st, "old", 1, 1, "old line");
    Af__Log__LogReadRequest req = read_all();
    Af__Log__LogReadResponse *out = do_read(f->st, &req);
    assert_int_equal(out->n_log, 1);
    char offset[32];
    snprintf(offset, sizeof(offset), "%.*s", (int)out->log[0]->offset->request_id.len,
             (const char *)out->log[0]->offset->request_id.data);
    af__log__log_read_response__free_unpacked(out, NULL);

    af_service_logservice.clear(f->st);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM request"), 0);
    assert_int_equal(count_rows(f->path, "SELECT count(*) FROM app_line"), 0);
    restart(f);
    out = do_read(f->st, &req);
    assert_int_equal(out->n_log, 0);
    af__log__log_read_response__free_unpacked(out, NULL);
    /* The sequence went on past the clear and the restart: a log made now
     * is not behind an offset made before the clear. */
    const struct rec_spec b = {.id = "new", .status = 200, .start = 1, .end = 2};
    post_ok(f->st, &b, 1);
    Af__Log__LogOffset off = AF__LOG__LOG_OFFSET__INIT;
    off.has_request_id = true;
    off.request_id.data = (uint8_t *)offset;
    off.request_id.len = strlen(offset);
    req.offset = &off;
    out = do_read(f->st, &req);
    assert_int_equal(out->n_log, 0);
    af__log__log_read_response__free_unpacked(out, NULL);
}

static void test_unknown_module_keeps_its_name(void **state)
{
    struct fixture *f = *state;
    const struct rec_spec r = {.id = "w", .module = 1, .status = 200, .start = 1, .end = 2};
    post_ok(f->st, &r, 1);
    /* The next run serves the default module alone, in a new version. */
    stop(f);
    static const struct af_api_module one[] = {{.name = "default", .version = "7"}};
    start(f, one, 1);
    Af__Log__LogReadRequest req = read_all();
    Af__Log__LogReadResponse *out = do_read(f->st, &req);
    assert_int_equal(out->n_log, 1);
    assert_string_equal(out->log[0]->module_id, "worker");
    assert_string_equal(out->log[0]->version_id, "2");
    af__log__log_read_response__free_unpacked(out, NULL);
}

/* A file's bytes, to see that a refused file was not written. */
static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    char *buf = malloc(1 << 20);
    *len = fread(buf, 1, 1 << 20, fp);
    fclose(fp);
    return buf;
}

static void expect_refused(const char *path, const char *want)
{
    size_t len0, len1;
    char *before = slurp(path, &len0);
    char err[512] = "";
    struct af_logstore *s = af_logstore_open(path, err, sizeof(err));
    assert_null(s);
    if (!strstr(err, want) || !strstr(err, path))
        fail_msg("%s: got \"%s\", want \"%s\"", path, err, want);
    char *after = slurp(path, &len1);
    assert_int_equal(len1, len0);
    assert_memory_equal(after, before, len0);
    free(before);
    free(after);
}

static void test_foreign_files_refused(void **state)
{
    struct fixture *f = *state;
    char p[128];

    /* Not SQLite at all. */
    snprintf(p, sizeof(p), "%s/notes.txt", f->dir);
    FILE *fp = fopen(p, "w");
    for (int i = 0; i < 300; i++)
        fputs("my notes, not a database\n", fp);
    fclose(fp);
    expect_refused(p, "is not an SQLite logs database");
    unlink(p);

    /* Another program's SQLite database (dev_appserver's logs.db, say). */
    snprintf(p, sizeof(p), "%s/other.db", f->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE RequestLogs(id); INSERT INTO RequestLogs "
                                      "VALUES(1);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    expect_refused(p, "is an SQLite database but not an appfront logs database");
    unlink(p);

    /* Ours, written by a later schema. */
    stop(f);
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version=99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    expect_refused(f->path, "has logs schema version 99");

    /* Ours, damaged: a page of the table overwritten. */
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version=1; PRAGMA journal_mode=DELETE;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    struct stat sb;
    assert_int_equal(stat(f->path, &sb), 0);
    assert_true(sb.st_size >= 4096 * 2);
    fp = fopen(f->path, "r+b");
    fseek(fp, 4096, SEEK_SET); /* page 2: its b-tree page header */
    for (int i = 0; i < 64; i++)
        fputc(0xff, fp);
    fclose(fp);
    expect_refused(f->path, "is a damaged logs database");

    /* A directory that does not exist. */
    char err[512] = "";
    snprintf(p, sizeof(p), "%s/no/such/logs.db", f->dir);
    assert_null(af_logstore_open(p, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot open or create"));
    assert_non_null(strstr(err, p));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_read_back_after_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paging_across_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pruned_to_the_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clear_empties_the_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_module_keeps_its_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_files_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
