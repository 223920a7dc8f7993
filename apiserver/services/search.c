/*
 * search — the "search" service (docs/services.md, "search"): a first cut
 * of App Engine's Search API over one SQLite file, STORAGE/search.sqlite3.
 *
 * Tables: sindex (one row per app, namespace and index name), doc (one row
 * per document: its id, rank and the Document as protobuf-c packs it), val
 * (one row per field value: name, type, text or number, for restrictions
 * and sorting) and fts, an FTS5 table holding the words of every text and
 * html value under the rowid of its val row. A query is parsed
 * (search_query.c) and turned into one SQL WHERE clause over doc.
 *
 * Errors: a request that cannot be decoded, or names a bad index or
 * namespace, is an application error with SearchServiceError's code; a bad
 * document, id or query is a RequestStatus in the response, which is where
 * the official clients look (per document for IndexDocument and
 * DeleteDocument). Every write commits its SQLite transaction before the
 * answer goes out (WAL, synchronous=NORMAL, as the datastore).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "search.pb-c.h"

#include "apiserver/service.h"
#include "apiserver/services/search_query.h"
#include "apiserver/services/search_wire.h"
#include "common/log.h"
#include "common/utf8.h"
#include "common/xalloc.h"

#define SEARCH_SCHEMA_VERSION 1

/* Production's limits (the Python SDK's search.py and the service). */
#define MAX_INDEX_NAME 100
#define MAX_DOC_ID 500
#define MAX_NAMESPACE 100
#define MAX_DOCS_PER_CALL 200
#define MAX_TEXT_BYTES (1024 * 1024)
#define MAX_ATOM_BYTES 500
#define MAX_DOC_BYTES (1024 * 1024)
#define MAX_SEARCH_LIMIT 1000
#define MAX_SEARCH_OFFSET 1000
#define MAX_LIST_LIMIT 1000
#define MAX_NUMBER 2147483647.0
#define MAX_SORT_SPECS 10
/* Seconds from the Unix epoch to 2011-01-01, production's rank epoch. */
#define RANK_EPOCH 1293840000

typedef Af__Search__SearchServiceError__ErrorCode sscode;
#define S_OK AF__SEARCH__SEARCH_SERVICE_ERROR__ERROR_CODE__OK
#define S_INVALID AF__SEARCH__SEARCH_SERVICE_ERROR__ERROR_CODE__INVALID_REQUEST
#define S_INTERNAL AF__SEARCH__SEARCH_SERVICE_ERROR__ERROR_CODE__INTERNAL_ERROR

static const char search_schema[] =
    "CREATE TABLE IF NOT EXISTS sindex("
    " id INTEGER PRIMARY KEY, app TEXT NOT NULL, ns TEXT NOT NULL, name TEXT NOT NULL,"
    " UNIQUE(app, ns, name));"
    "CREATE TABLE IF NOT EXISTS doc("
    " id INTEGER PRIMARY KEY, idx INTEGER NOT NULL, doc_id TEXT NOT NULL,"
    " rank INTEGER NOT NULL, data BLOB NOT NULL, UNIQUE(idx, doc_id));"
    "CREATE TABLE IF NOT EXISTS val("
    " id INTEGER PRIMARY KEY, doc INTEGER NOT NULL, field TEXT NOT NULL,"
    " type INTEGER NOT NULL, str TEXT, num REAL);"
    "CREATE INDEX IF NOT EXISTS val_by_doc ON val(doc, field, type);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5("
    " body, tokenize='unicode61 remove_diacritics 2');";

struct search_state {
    sqlite3 *db;       /* NULL until the first call (search_open) */
    char *path;        /* the SQLite file, or ":memory:" */
    char *app_id;
    char *open_error; /* why the last open failed; NULL before any */
    uint64_t id_counter; /* generated doc ids when getrandom fails */
};

/* ---- storage ---------------------------------------------------------- */

static int db_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        af_error("search: %.60s: %s", sql, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static void unlink_db(const char *path)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        char *p = af_xasprintf("%s%s", path, suffixes[i]);
        if (unlink(p) != 0 && errno != ENOENT)
            af_warn("search: cannot remove %s: %s", p, strerror(errno));
        free(p);
    }
}

static sqlite3 *db_open(const char *path, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open the search file %s: %s", path,
                 db ? sqlite3_errmsg(db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(db, 5000);
    if (db_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;") != 0) {
        snprintf(err, errlen, "cannot set WAL mode on %s: %s", path, sqlite3_errmsg(db));
        goto fail;
    }
    int version = 0;
    sqlite3_stmt *v;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &v, NULL) == SQLITE_OK) {
        if (sqlite3_step(v) == SQLITE_ROW)
            version = sqlite3_column_int(v, 0);
        sqlite3_finalize(v);
    }
    if (version != 0 && version != SEARCH_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "%s has search schema version %d, this appfront writes version %d: "
                 "start with --clear_search_indexes or another --storage_path",
                 path, version, SEARCH_SCHEMA_VERSION);
        goto fail;
    }
    char *sql = af_xasprintf("BEGIN IMMEDIATE; %s PRAGMA user_version=%d; COMMIT;", search_schema,
                             SEARCH_SCHEMA_VERSION);
    int rc = db_exec(db, sql);
    free(sql);
    if (rc != 0) {
        snprintf(err, errlen, "cannot create the search schema in %s: %s", path,
                 sqlite3_errmsg(db));
        goto fail;
    }
    return db;
fail:
    sqlite3_close_v2(db);
    return NULL;
}

static void rollback(sqlite3 *db)
{
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

static sqlite3_stmt *prep(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        af_error("search: cannot prepare \"%.80s\": %s", sql, sqlite3_errmsg(db));
        return NULL;
    }
    return st;
}

static void bind_str(sqlite3_stmt *st, int i, const char *s)
{
    sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
}

/* The id of the index (app, ns, name), made when create; 0 when it does not
 * exist, -1 on a SQLite error. */
static int64_t index_id(sqlite3 *db, const char *app, const char *ns, const char *name,
                        bool create)
{
    sqlite3_stmt *st = prep(db, "SELECT id FROM sindex WHERE app=?1 AND ns=?2 AND name=?3");
    if (!st)
        return -1;
    bind_str(st, 1, app);
    bind_str(st, 2, ns);
    bind_str(st, 3, name);
    int64_t id = 0;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        id = sqlite3_column_int64(st, 0);
    else if (rc != SQLITE_DONE)
        id = -1;
    sqlite3_finalize(st);
    if (id != 0 || !create)
        return id;
    st = prep(db, "INSERT INTO sindex(app, ns, name) VALUES(?1, ?2, ?3)");
    if (!st)
        return -1;
    bind_str(st, 1, app);
    bind_str(st, 2, ns);
    bind_str(st, 3, name);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? sqlite3_last_insert_rowid(db) : -1;
}

/* Removes document doc_id of index idx with its values; 0 or -1. */
static int doc_delete(sqlite3 *db, int64_t idx, const char *doc_id)
{
    static const char *const sql[] = {
        ("DELETE FROM fts WHERE rowid IN (SELECT v.id FROM val v JOIN doc d ON v.doc=d.id"
         " WHERE d.idx=?1 AND d.doc_id=?2 AND v.type IN (0, 1))"),
        "DELETE FROM val WHERE doc IN (SELECT id FROM doc WHERE idx=?1 AND doc_id=?2)",
        "DELETE FROM doc WHERE idx=?1 AND doc_id=?2",
    };
    for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++) {
        sqlite3_stmt *st = prep(db, sql[i]);
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, idx);
        bind_str(st, 2, doc_id);
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return -1;
    }
    return 0;
}

/* ---- validation ------------------------------------------------------- */

/* Production's rule for index names and document ids: printable ASCII
 * (0x21-0x7e: no spaces), not starting with '!', 1..max bytes. */
static const char *check_name(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0)
        return "is empty";
    if (n > max)
        return "is too long";
    if (s[0] == '!')
        return "starts with '!'";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return "has a character outside printable ASCII (0x21-0x7e)";
    return NULL;
}

/* Namespaces as the datastore spells them: [0-9A-Za-z._-]{0,100}. */
static bool valid_namespace(const char *s)
{
    size_t n = strlen(s);
    if (n > MAX_NAMESPACE)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* Checks an IndexSpec; on a problem, an application error in res. */
static bool check_spec(const Af__Search__IndexSpec *spec, struct af_result *res)
{
    const char *why = spec && spec->name ? check_name(spec->name, MAX_INDEX_NAME) : "is missing";
    if (why) {
        af_result_app_error(res, S_INVALID, "search: index name %s%s%s %s (1-%d bytes of "
                            "printable ASCII, not starting with '!')",
                            spec && spec->name ? "'" : "", spec && spec->name ? spec->name : "",
                            spec && spec->name ? "'" : "", why, MAX_INDEX_NAME);
        return false;
    }
    if (spec->namespace_ && !valid_namespace(spec->namespace_)) {
        af_result_app_error(res, S_INVALID,
                            "search: namespace '%s' is not valid ([0-9A-Za-z._-], at most %d)",
                            spec->namespace_, MAX_NAMESPACE);
        return false;
    }
    if (spec->has_source && spec->source != AF__SEARCH__INDEX_SPEC__SOURCE__SEARCH) {
        af_result_app_error(res, S_INVALID,
                            "search: only indexes of source SEARCH exist in appfront");
        return false;
    }
    return true;
}

static const char *spec_ns(const Af__Search__IndexSpec *spec)
{
    return spec->namespace_ ? spec->namespace_ : "";
}

static bool parse_number(const char *s, double *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (*end || errno || !isfinite(d))
        return false;
    *out = d;
    return true;
}

/* Milliseconds since the epoch, the DATE encoding of the official clients. */
static bool parse_millis(const char *s, double *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end || errno)
        return false;
    *out = (double)v;
    return true;
}

/* A query's date, YYYY-MM-DD (production also takes YYYY-M-D): midnight UTC
 * in milliseconds. */
static bool parse_query_date(const char *s, double *out)
{
    int y, m, d, len = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &m, &d, &len) != 3 || s[len] != '\0')
        return false;
    if (y < 1 || m < 1 || m > 12 || d < 1 || d > 31)
        return false;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d};
    time_t t = timegm(&tm);
    *out = (double)t * 1000.0;
    return true;
}

/*
 * Checks one document and fixes its rank. Returns NULL when it is fine, or
 * the problem in buf.
 */
static const char *check_doc(Af__Search__Document *doc, char *buf, size_t buflen)
{
    if (doc->id) {
        const char *why = check_name(doc->id, MAX_DOC_ID);
        if (why) {
            snprintf(buf, buflen, "document id '%.100s' %s (1-%d bytes of printable ASCII, "
                     "not starting with '!')", doc->id, why, MAX_DOC_ID);
            return buf;
        }
    }
    for (size_t i = 0; i < doc->n_field; i++) {
        const Af__Search__Field *f = doc->field[i];
        const Af__Search__FieldValue *v = f->value;
        if (!af_sq_valid_field_name(f->name, strlen(f->name))) {
            snprintf(buf, buflen, "field name '%.100s' is not valid ([A-Za-z][A-Za-z0-9_]*, "
                     "at most 500 bytes)", f->name);
            return buf;
        }
        const char *s = v->string_value ? v->string_value : "";
        size_t n = strlen(s);
        double d;
        switch (v->type) {
        case AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__TEXT:
        case AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__HTML:
        case AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__ATOM: {
            size_t max = v->type == AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__ATOM ? MAX_ATOM_BYTES
                                                                                : MAX_TEXT_BYTES;
            if (n > max) {
                snprintf(buf, buflen, "field '%s' is %zu bytes long; the limit is %zu", f->name,
                         n, max);
                return buf;
            }
            if (!af_utf8_valid(s, n)) {
                snprintf(buf, buflen, "field '%s' is not valid UTF-8", f->name);
                return buf;
            }
            break;
        }
        case AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__NUMBER:
            if (!parse_number(v->string_value, &d) || d < -MAX_NUMBER || d > MAX_NUMBER) {
                snprintf(buf, buflen, "number field '%s' has value '%.50s', not a number "
                         "between -2147483647 and 2147483647", f->name, s);
                return buf;
            }
            break;
        case AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__DATE:
            if (!parse_millis(v->string_value, &d)) {
                snprintf(buf, buflen, "date field '%s' has value '%.50s', not milliseconds "
                         "since the epoch", f->name, s);
                return buf;
            }
            break;
        case AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__GEO:
            if (!v->geo || !(v->geo->lat >= -90 && v->geo->lat <= 90) ||
                !(v->geo->lng >= -180 && v->geo->lng <= 180)) {
                snprintf(buf, buflen, "geo field '%s' needs a latitude in [-90, 90] and a "
                         "longitude in [-180, 180]", f->name);
                return buf;
            }
            break;
        default:
            snprintf(buf, buflen, "field '%s' has unknown type %d", f->name, (int)v->type);
            return buf;
        }
        /* Production keeps one number and one date per name in a document. */
        if (v->type == AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__NUMBER ||
            v->type == AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__DATE) {
            for (size_t j = 0; j < i; j++) {
                if (doc->field[j]->value->type == v->type &&
                    strcmp(doc->field[j]->name, f->name) == 0) {
                    snprintf(buf, buflen, "field '%s' has more than one %s value", f->name,
                             v->type == AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__NUMBER ? "number"
                                                                                      : "date");
                    return buf;
                }
            }
        }
    }
    for (size_t i = 0; i < doc->n_facet; i++) {
        const Af__Search__Facet *f = doc->facet[i];
        if (!af_sq_valid_field_name(f->name, strlen(f->name))) {
            snprintf(buf, buflen, "facet name '%.100s' is not valid", f->name);
            return buf;
        }
    }
    if (doc->has_order_id && doc->order_id < 0) {
        snprintf(buf, buflen, "rank %d is negative", (int)doc->order_id);
        return buf;
    }
    if (!doc->has_order_id) {
        /* Production's default rank: seconds since 2011-01-01. */
        doc->has_order_id = true;
        doc->order_id = (int32_t)(time(NULL) - RANK_EPOCH);
        doc->has_order_id_source = true;
        doc->order_id_source = AF__SEARCH__DOCUMENT__ORDER_ID_SOURCE__DEFAULTED;
    }
    size_t size = af__search__document__get_packed_size(doc);
    if (size > MAX_DOC_BYTES) {
        snprintf(buf, buflen, "the document is %zu bytes; the limit is %d", size, MAX_DOC_BYTES);
        return buf;
    }
    return NULL;
}

/* HTML's words without its tags: what the text index sees of an html field. */
static char *strip_tags(const char *s)
{
    size_t n = strlen(s);
    char *out = af_xmalloc(n + 1);
    size_t k = 0;
    bool in_tag = false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '<')
            in_tag = true;
        else if (s[i] == '>' && in_tag) {
            in_tag = false;
            out[k++] = ' ';
        } else if (!in_tag)
            out[k++] = s[i];
    }
    out[k] = '\0';
    return out;
}

static void new_doc_id(struct search_state *s, char *out, size_t outlen)
{
    uint8_t r[16];
    if (getrandom(r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
        snprintf(out, outlen, "%016" PRIx64 "%016" PRIx64, (uint64_t)time(NULL),
                 ++s->id_counter);
        return;
    }
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(out + 2 * i, outlen - 2 * i, "%02x", r[i]);
}

/* Stores one checked document (inside a transaction); 0 or -1. */
static int doc_store(sqlite3 *db, int64_t idx, const Af__Search__Document *doc)
{
    if (doc_delete(db, idx, doc->id) != 0)
        return -1;
    size_t len = af__search__document__get_packed_size(doc);
    uint8_t *data = af_xmalloc(len ? len : 1);
    af__search__document__pack(doc, data);
    sqlite3_stmt *st =
        prep(db, "INSERT INTO doc(idx, doc_id, rank, data) VALUES(?1, ?2, ?3, ?4)");
    int rc = SQLITE_ERROR;
    if (st) {
        sqlite3_bind_int64(st, 1, idx);
        bind_str(st, 2, doc->id);
        sqlite3_bind_int64(st, 3, doc->order_id);
        sqlite3_bind_blob(st, 4, data, (int)len, SQLITE_TRANSIENT);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
    }
    free(data);
    if (rc != SQLITE_DONE)
        return -1;
    int64_t docrow = sqlite3_last_insert_rowid(db);
    sqlite3_stmt *ins = prep(db, "INSERT INTO val(doc, field, type, str, num) "
                                 "VALUES(?1, ?2, ?3, ?4, ?5)");
    sqlite3_stmt *fts = prep(db, "INSERT INTO fts(rowid, body) VALUES(?1, ?2)");
    int result = ins && fts ? 0 : -1;
    for (size_t i = 0; i < doc->n_field && result == 0; i++) {
        const Af__Search__Field *f = doc->field[i];
        const Af__Search__FieldValue *v = f->value;
        const char *s = v->string_value ? v->string_value : "";
        sqlite3_reset(ins);
        sqlite3_clear_bindings(ins);
        sqlite3_bind_int64(ins, 1, docrow);
        bind_str(ins, 2, f->name);
        sqlite3_bind_int(ins, 3, (int)v->type);
        double d = 0;
        switch (v->type) {
        case AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__NUMBER:
            parse_number(s, &d);
            sqlite3_bind_double(ins, 5, d);
            break;
        case AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__DATE:
            parse_millis(s, &d);
            sqlite3_bind_double(ins, 5, d);
            break;
        case AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__GEO:
            break; /* stored in the document only */
        default:
            bind_str(ins, 4, s);
            break;
        }
        if (sqlite3_step(ins) != SQLITE_DONE) {
            result = -1;
            break;
        }
        if (v->type == AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__TEXT ||
            v->type == AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__HTML) {
            char *body = v->type == AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__HTML ? strip_tags(s)
                                                                               : af_xstrdup(s);
            sqlite3_reset(fts);
            sqlite3_bind_int64(fts, 1, sqlite3_last_insert_rowid(db));
            sqlite3_bind_text(fts, 2, body, -1, SQLITE_TRANSIENT);
            if (sqlite3_step(fts) != SQLITE_DONE)
                result = -1;
            free(body);
        }
    }
    sqlite3_finalize(ins);
    sqlite3_finalize(fts);
    return result;
}

/* ---- request plumbing ------------------------------------------------- */

static void *unpack_grouped(enum af_sw_msg msg, const ProtobufCMessageDescriptor *desc,
                            const struct af_call *call)
{
    uint8_t *buf;
    size_t len;
    if (!af_sw_rewrite(msg, call->request, call->request_len, false, &buf, &len))
        return NULL;
    void *m = protobuf_c_message_unpack(desc, NULL, len, buf);
    free(buf);
    return m;
}

/* Packs a response whose Documents may hold geo values, as groups. */
static void pack_grouped(struct af_result *res, enum af_sw_msg msg, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = af_xmalloc(len ? len : 1);
    protobuf_c_message_pack(m, buf);
    uint8_t *out;
    size_t out_len;
    bool ok = af_sw_rewrite(msg, buf, len, true, &out, &out_len);
    free(buf);
    if (!ok) {
        af_result_app_error(res, S_INTERNAL, "search: cannot encode the %s", m->descriptor->name);
        return;
    }
    af_result_ok(res, out, out_len);
}

/* Opens the file on first use: an app that never calls search costs no
 * descriptors and leaves no file. A failed open is tried again by the next
 * call (the file may have been fixed), logged once. */
static bool search_open(struct search_state *s)
{
    if (s->db)
        return true;
    char err[512];
    s->db = db_open(s->path, err, sizeof(err));
    if (s->db) {
        free(s->open_error);
        s->open_error = NULL;
        return true;
    }
    if (!s->open_error)
        af_error("search: %s; search calls fail until it can be opened", err);
    free(s->open_error);
    s->open_error = af_xstrdup(err);
    return false;
}

static bool store_ready(struct search_state *s, struct af_result *res)
{
    if (search_open(s))
        return true;
    af_result_app_error(res, S_INTERNAL, "search: %s", s->open_error);
    return false;
}

/* The app whose indexes a call sees. A request's app_id is ignored: one
 * appfront serves one app, as the datastore partitions by its own id. */
static const char *app_of(struct search_state *s)
{
    return s->app_id;
}

static Af__Search__RequestStatus *status_new(sscode code, const char *detail)
{
    Af__Search__RequestStatus *st = af_xmalloc(sizeof(*st));
    af__search__request_status__init(st);
    st->code = code;
    st->error_detail = detail ? af_xstrdup(detail) : NULL;
    return st;
}

static void status_free(Af__Search__RequestStatus *st)
{
    if (st) {
        free(st->error_detail);
        free(st);
    }
}

/* ---- IndexDocument ---------------------------------------------------- */

static void index_document(void *state, const struct af_call *call, struct af_result *res)
{
    struct search_state *s = state;
    Af__Search__IndexDocumentRequest *req =
        unpack_grouped(AF_SW_INDEX_DOCUMENT_REQUEST, &af__search__index_document_request__descriptor,
                       call);
    if (!req) {
        af_result_app_error(res, S_INVALID, "search: cannot decode IndexDocumentRequest");
        return;
    }
    Af__Search__IndexDocumentParams *p = req->params;
    if (!check_spec(p->index_spec, res) || !store_ready(s, res))
        goto out;
    if (p->n_document > MAX_DOCS_PER_CALL) {
        af_result_app_error(res, S_INVALID,
                            "search: %zu documents in one IndexDocument; the limit is %d",
                            p->n_document, MAX_DOCS_PER_CALL);
        goto out;
    }
    size_t n = p->n_document;
    Af__Search__RequestStatus **statuses = af_xcalloc(n ? n : 1, sizeof(*statuses));
    char **ids = af_xcalloc(n ? n : 1, sizeof(*ids));
    bool any_ok = false;
    char buf[512];
    for (size_t i = 0; i < n; i++) {
        Af__Search__Document *doc = p->document[i];
        const char *why = check_doc(doc, buf, sizeof(buf));
        if (!why && !doc->id) {
            char id[40];
            new_doc_id(s, id, sizeof(id));
            doc->id = af_xstrdup(id); /* freed by free_unpacked */
        }
        statuses[i] = status_new(why ? S_INVALID : S_OK, why);
        ids[i] = af_xstrdup(why ? "" : doc->id);
        any_ok |= !why;
    }
    if (any_ok) {
        int64_t idx = 0;
        bool ok = db_exec(s->db, "BEGIN IMMEDIATE") == 0;
        ok = ok && (idx = index_id(s->db, app_of(s),
                                   spec_ns(p->index_spec), p->index_spec->name, true)) > 0;
        for (size_t i = 0; ok && i < n; i++)
            if (statuses[i]->code == S_OK)
                ok = doc_store(s->db, idx, p->document[i]) == 0;
        ok = ok && db_exec(s->db, "COMMIT") == 0;
        if (!ok) {
            af_error("search: IndexDocument: %s", sqlite3_errmsg(s->db));
            af_result_app_error(res, S_INTERNAL, "search: cannot store the documents: %s",
                                sqlite3_errmsg(s->db));
            rollback(s->db);
            goto free_out;
        }
    }
    Af__Search__IndexDocumentResponse out = AF__SEARCH__INDEX_DOCUMENT_RESPONSE__INIT;
    out.n_status = n;
    out.status = statuses;
    out.n_doc_id = n;
    out.doc_id = ids;
    af_result_pack(res, &out.base);
free_out:
    for (size_t i = 0; i < n; i++) {
        status_free(statuses[i]);
        free(ids[i]);
    }
    free(statuses);
    free(ids);
out:
    af__search__index_document_request__free_unpacked(req, NULL);
}

/* ---- DeleteDocument --------------------------------------------------- */

static void delete_document(void *state, const struct af_call *call, struct af_result *res)
{
    struct search_state *s = state;
    Af__Search__DeleteDocumentRequest *req =
        af__search__delete_document_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        af_result_app_error(res, S_INVALID, "search: cannot decode DeleteDocumentRequest");
        return;
    }
    Af__Search__DeleteDocumentParams *p = req->params;
    if (!check_spec(p->index_spec, res) || !store_ready(s, res))
        goto out;
    if (p->n_doc_id > MAX_DOCS_PER_CALL) {
        af_result_app_error(res, S_INVALID,
                            "search: %zu ids in one DeleteDocument; the limit is %d", p->n_doc_id,
                            MAX_DOCS_PER_CALL);
        goto out;
    }
    size_t n = p->n_doc_id;
    Af__Search__RequestStatus **statuses = af_xcalloc(n ? n : 1, sizeof(*statuses));
    char buf[300];
    bool ok = db_exec(s->db, "BEGIN IMMEDIATE") == 0;
    int64_t idx = ok ? index_id(s->db, app_of(s),
                                spec_ns(p->index_spec), p->index_spec->name, false)
                     : -1;
    ok = ok && idx >= 0;
    for (size_t i = 0; i < n; i++) {
        const char *why = check_name(p->doc_id[i], MAX_DOC_ID);
        if (why)
            snprintf(buf, sizeof(buf), "document id '%.100s' %s", p->doc_id[i], why);
        statuses[i] = status_new(why ? S_INVALID : S_OK, why ? buf : NULL);
        /* Deleting a document that is not there is fine, as in production. */
        if (ok && !why && idx > 0)
            ok = doc_delete(s->db, idx, p->doc_id[i]) == 0;
    }
    ok = ok && db_exec(s->db, "COMMIT") == 0;
    if (!ok) {
        af_result_app_error(res, S_INTERNAL, "search: cannot delete: %s", sqlite3_errmsg(s->db));
        rollback(s->db);
    } else {
        Af__Search__DeleteDocumentResponse out = AF__SEARCH__DELETE_DOCUMENT_RESPONSE__INIT;
        out.n_status = n;
        out.status = statuses;
        af_result_pack(res, &out.base);
    }
    for (size_t i = 0; i < n; i++)
        status_free(statuses[i]);
    free(statuses);
out:
    af__search__delete_document_request__free_unpacked(req, NULL);
}

/* ---- documents out ---------------------------------------------------- */

/* A stored document for a response: all of it, its id alone (keys_only),
 * or only the named fields. The result is freed with result_doc_free. */
static Af__Search__Document *result_doc(const void *data, int len, const char *id, bool keys_only,
                                        char **names, size_t n_names)
{
    if (keys_only) {
        /* Packed and unpacked again, so every result frees the same way. */
        Af__Search__Document only = AF__SEARCH__DOCUMENT__INIT;
        only.id = (char *)id;
        uint8_t buf[MAX_DOC_ID + 16];
        size_t n = af__search__document__pack(&only, buf);
        return af__search__document__unpack(NULL, n, buf);
    }
    Af__Search__Document *d =
        af__search__document__unpack(NULL, (size_t)len, (const uint8_t *)data);
    if (!d)
        return NULL;
    if (n_names) {
        /* Keep only the fields asked for; the others are freed now. */
        size_t k = 0;
        for (size_t i = 0; i < d->n_field; i++) {
            bool keep = false;
            for (size_t j = 0; j < n_names && !keep; j++)
                keep = strcmp(names[j], d->field[i]->name) == 0;
            if (keep)
                d->field[k++] = d->field[i];
            else
                protobuf_c_message_free_unpacked(&d->field[i]->base, NULL);
        }
        d->n_field = k;
    }
    return d;
}

static void result_doc_free(Af__Search__Document *d)
{
    if (d)
        af__search__document__free_unpacked(d, NULL);
}

/* ---- ListDocuments ---------------------------------------------------- */

static void list_documents(void *state, const struct af_call *call, struct af_result *res)
{
    struct search_state *s = state;
    Af__Search__ListDocumentsRequest *req =
        af__search__list_documents_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        af_result_app_error(res, S_INVALID, "search: cannot decode ListDocumentsRequest");
        return;
    }
    Af__Search__ListDocumentsParams *p = req->params;
    if (!check_spec(p->index_spec, res) || !store_ready(s, res))
        goto out;
    Af__Search__ListDocumentsResponse out = AF__SEARCH__LIST_DOCUMENTS_RESPONSE__INIT;
    int limit = p->has_limit ? p->limit : 100;
    char detail[200] = "";
    if (limit < 0 || limit > MAX_LIST_LIMIT)
        snprintf(detail, sizeof(detail), "limit %d is outside 0..%d", limit, MAX_LIST_LIMIT);
    int64_t idx = detail[0] ? 0
                            : index_id(s->db, app_of(s),
                                       spec_ns(p->index_spec), p->index_spec->name, false);
    if (idx < 0) {
        af_result_app_error(res, S_INTERNAL, "search: %s", sqlite3_errmsg(s->db));
        goto out;
    }
    Af__Search__Document **docs = NULL;
    size_t n = 0;
    if (idx > 0) {
        const char *sql = !p->start_doc_id ? "SELECT doc_id, data FROM doc WHERE idx=?1 "
                                             "ORDER BY doc_id LIMIT ?3"
                          : p->include_start_doc ? "SELECT doc_id, data FROM doc WHERE idx=?1 "
                                                   "AND doc_id>=?2 ORDER BY doc_id LIMIT ?3"
                                                 : "SELECT doc_id, data FROM doc WHERE idx=?1 "
                                                   "AND doc_id>?2 ORDER BY doc_id LIMIT ?3";
        sqlite3_stmt *st = prep(s->db, sql);
        if (!st) {
            af_result_app_error(res, S_INTERNAL, "search: %s", sqlite3_errmsg(s->db));
            goto out;
        }
        sqlite3_bind_int64(st, 1, idx);
        if (p->start_doc_id)
            bind_str(st, 2, p->start_doc_id);
        sqlite3_bind_int(st, 3, limit);
        docs = af_xcalloc((size_t)limit + 1, sizeof(*docs));
        while (sqlite3_step(st) == SQLITE_ROW) {
            Af__Search__Document *d =
                result_doc(sqlite3_column_blob(st, 1), sqlite3_column_bytes(st, 1),
                           (const char *)sqlite3_column_text(st, 0), p->keys_only, NULL, 0);
            if (d)
                docs[n++] = d;
        }
        sqlite3_finalize(st);
    }
    Af__Search__RequestStatus *status = status_new(detail[0] ? S_INVALID : S_OK,
                                                   detail[0] ? detail : NULL);
    out.status = status;
    out.n_document = n;
    out.document = docs;
    pack_grouped(res, AF_SW_LIST_DOCUMENTS_RESPONSE, &out.base);
    status_free(status);
    for (size_t i = 0; i < n; i++)
        result_doc_free(docs[i]);
    free(docs);
out:
    af__search__list_documents_request__free_unpacked(req, NULL);
}

/* ---- ListIndexes ------------------------------------------------------ */

static void list_indexes(void *state, const struct af_call *call, struct af_result *res)
{
    struct search_state *s = state;
    Af__Search__ListIndexesRequest *req =
        af__search__list_indexes_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        af_result_app_error(res, S_INVALID, "search: cannot decode ListIndexesRequest");
        return;
    }
    Af__Search__ListIndexesParams *p = req->params;
    if (!store_ready(s, res))
        goto out;
    const char *ns = p->namespace_ ? p->namespace_ : "";
    if (!valid_namespace(ns)) {
        af_result_app_error(res, S_INVALID,
                            "search: namespace '%s' is not valid ([0-9A-Za-z._-], at most %d)",
                            ns, MAX_NAMESPACE);
        goto out;
    }
    int limit = p->has_limit ? p->limit : 20;
    int offset = p->has_offset ? p->offset : 0;
    if (limit < 0 || limit > 1000 || offset < 0 || offset > 1000) {
        af_result_app_error(res, S_INVALID, "search: ListIndexes limit %d or offset %d is "
                            "outside 0..1000", limit, offset);
        goto out;
    }
    if (p->has_source && p->source != AF__SEARCH__INDEX_SPEC__SOURCE__SEARCH) {
        af_result_app_error(res, S_INVALID,
                            "search: only indexes of source SEARCH exist in appfront");
        goto out;
    }
    const char *prefix = p->index_name_prefix ? p->index_name_prefix : "";
    const char *start = p->start_index_name ? p->start_index_name : "";
    sqlite3_stmt *st = prep(
        s->db, p->include_start_index
                   ? "SELECT id, name, (SELECT coalesce(sum(length(data)), 0) FROM doc"
                     " WHERE idx=sindex.id) FROM sindex WHERE app=?1 AND ns=?2 AND name>=?3"
                     " AND substr(name, 1, length(?4))=?4 ORDER BY name LIMIT ?5 OFFSET ?6"
                   : "SELECT id, name, (SELECT coalesce(sum(length(data)), 0) FROM doc"
                     " WHERE idx=sindex.id) FROM sindex WHERE app=?1 AND ns=?2 AND name>?3"
                     " AND substr(name, 1, length(?4))=?4 ORDER BY name LIMIT ?5 OFFSET ?6");
    if (!st) {
        af_result_app_error(res, S_INTERNAL, "search: %s", sqlite3_errmsg(s->db));
        goto out;
    }
    bind_str(st, 1, s->app_id);
    bind_str(st, 2, ns);
    bind_str(st, 3, start);
    bind_str(st, 4, prefix);
    sqlite3_bind_int(st, 5, limit);
    sqlite3_bind_int(st, 6, offset);
    Af__Search__IndexMetadata **metas = af_xcalloc((size_t)limit + 1, sizeof(*metas));
    size_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        Af__Search__IndexMetadata *m = af_xmalloc(sizeof(*m));
        af__search__index_metadata__init(m);
        m->index_spec = af_xmalloc(sizeof(*m->index_spec));
        af__search__index_spec__init(m->index_spec);
        m->index_spec->name = af_xstrdup((const char *)sqlite3_column_text(st, 1));
        m->index_spec->namespace_ = af_xstrdup(ns);
        m->storage = af_xmalloc(sizeof(*m->storage));
        af__search__index_metadata__storage__init(m->storage);
        m->storage->has_amount_used = m->storage->has_limit = true;
        m->storage->amount_used = sqlite3_column_int64(st, 2);
        m->storage->limit = 10LL * 1024 * 1024 * 1024; /* production's default quota */
        if (p->fetch_schema) {
            sqlite3_stmt *fs = prep(s->db, "SELECT v.field, v.type FROM val v JOIN doc d"
                                           " ON v.doc=d.id WHERE d.idx=?1 GROUP BY v.field,"
                                           " v.type ORDER BY v.field, v.type");
            if (fs) {
                sqlite3_bind_int64(fs, 1, sqlite3_column_int64(st, 0));
                while (sqlite3_step(fs) == SQLITE_ROW) {
                    const char *name = (const char *)sqlite3_column_text(fs, 0);
                    Af__Search__FieldTypes *ft = m->n_field ? m->field[m->n_field - 1] : NULL;
                    if (!ft || strcmp(ft->name, name) != 0) {
                        ft = af_xmalloc(sizeof(*ft));
                        af__search__field_types__init(ft);
                        ft->name = af_xstrdup(name);
                        m->field = af_xrealloc(m->field, (m->n_field + 1) * sizeof(*m->field));
                        m->field[m->n_field++] = ft;
                    }
                    ft->type = af_xrealloc(ft->type, (ft->n_type + 1) * sizeof(*ft->type));
                    ft->type[ft->n_type++] = sqlite3_column_int(fs, 1);
                }
                sqlite3_finalize(fs);
            }
        }
        metas[n++] = m;
    }
    sqlite3_finalize(st);
    Af__Search__ListIndexesResponse out = AF__SEARCH__LIST_INDEXES_RESPONSE__INIT;
    Af__Search__RequestStatus *status = status_new(S_OK, NULL);
    out.status = status;
    out.n_index_metadata = n;
    out.index_metadata = metas;
    af_result_pack(res, &out.base);
    status_free(status);
    for (size_t i = 0; i < n; i++) {
        Af__Search__IndexMetadata *m = metas[i];
        for (size_t j = 0; j < m->n_field; j++) {
            free(m->field[j]->name);
            free(m->field[j]->type);
            free(m->field[j]);
        }
        free(m->field);
        free(m->index_spec->name);
        free(m->index_spec->namespace_);
        free(m->index_spec);
        free(m->storage);
        free(m);
    }
    free(metas);
out:
    af__search__list_indexes_request__free_unpacked(req, NULL);
}

/* ---- Search: query to SQL --------------------------------------------- */

enum bind_kind { B_TEXT, B_DOUBLE };

struct bind {
    enum bind_kind kind;
    char *text;
    double d;
};

struct sqlgen {
    FILE *sql;
    char *sql_buf;
    size_t sql_len;
    struct bind *binds;
    int n_binds;
    char *err;
    size_t errlen;
    bool failed;
};

/* Appends a parameter and writes its placeholder. */
static void gen_text(struct sqlgen *g, char *owned)
{
    g->binds = af_xrealloc(g->binds, (size_t)(g->n_binds + 1) * sizeof(*g->binds));
    g->binds[g->n_binds++] = (struct bind){.kind = B_TEXT, .text = owned, .d = 0};
    fprintf(g->sql, "?%d", g->n_binds);
}

static void gen_double(struct sqlgen *g, double d)
{
    g->binds = af_xrealloc(g->binds, (size_t)(g->n_binds + 1) * sizeof(*g->binds));
    g->binds[g->n_binds++] = (struct bind){.kind = B_DOUBLE, .text = NULL, .d = d};
    fprintf(g->sql, "?%d", g->n_binds);
}

/* An FTS5 phrase for value: in double quotes, quotes doubled. */
static char *fts_phrase(const char *value)
{
    size_t n = strlen(value);
    char *out = af_xmalloc(2 * n + 3);
    size_t k = 0;
    out[k++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (value[i] == '"')
            out[k++] = '"';
        out[k++] = value[i];
    }
    out[k++] = '"';
    out[k] = '\0';
    return out;
}

/* " AND field=?N" when the term names a field (column col). */
static void gen_field(struct sqlgen *g, const struct af_sq_node *t, const char *col)
{
    if (t->field) {
        fprintf(g->sql, " AND %s=", col);
        gen_text(g, af_xstrdup(t->field));
    }
}

static void gen_term(struct sqlgen *g, const struct af_sq_node *t)
{
    double num = 0, day = 0;
    bool is_num = parse_number(t->value, &num);
    bool is_date = parse_query_date(t->value, &day);
    if (t->op != AF_SQ_EQ) {
        static const char *const ops[] = {
            [AF_SQ_EQ] = "=", [AF_SQ_LT] = "<", [AF_SQ_LE] = "<=", [AF_SQ_GT] = ">",
            [AF_SQ_GE] = ">="};
        if (!is_num && !is_date) {
            if (!g->failed)
                snprintf(g->err, g->errlen, "invalid query: '%s %s %s' compares with '%s', "
                         "which is neither a number nor a date (YYYY-MM-DD)",
                         t->field, ops[t->op], t->value, t->value);
            g->failed = true;
            fprintf(g->sql, "0");
            return;
        }
        fprintf(g->sql, "EXISTS(SELECT 1 FROM val WHERE doc=d.id AND field=");
        gen_text(g, af_xstrdup(t->field));
        if (is_num) {
            fprintf(g->sql, " AND type=4 AND num%s", ops[t->op]);
            gen_double(g, num);
        } else {
            /* A date compares by day: "< D" is before D's midnight,
             * "<= D" before the next one. */
            double bound = t->op == AF_SQ_LE || t->op == AF_SQ_GT ? day + 86400000.0 : day;
            fprintf(g->sql, " AND type=3 AND num%s",
                    t->op == AF_SQ_LT || t->op == AF_SQ_LE ? "<" : ">=");
            gen_double(g, bound);
        }
        fprintf(g->sql, ")");
        return;
    }
    /* Equality: words in text and html, a whole atom (any case), an equal
     * number, a date on that day. */
    fprintf(g->sql, "(d.id IN (SELECT v.doc FROM fts JOIN val v ON v.id=fts.rowid WHERE fts MATCH ");
    gen_text(g, fts_phrase(t->value));
    gen_field(g, t, "v.field");
    fprintf(g->sql, ") OR EXISTS(SELECT 1 FROM val WHERE doc=d.id AND type=2");
    gen_field(g, t, "field");
    fprintf(g->sql, " AND str=");
    gen_text(g, af_xstrdup(t->value));
    fprintf(g->sql, " COLLATE NOCASE)");
    if (is_num) {
        fprintf(g->sql, " OR EXISTS(SELECT 1 FROM val WHERE doc=d.id AND type=4");
        gen_field(g, t, "field");
        fprintf(g->sql, " AND num=");
        gen_double(g, num);
        fprintf(g->sql, ")");
    }
    if (is_date) {
        fprintf(g->sql, " OR EXISTS(SELECT 1 FROM val WHERE doc=d.id AND type=3");
        gen_field(g, t, "field");
        fprintf(g->sql, " AND num>=");
        gen_double(g, day);
        fprintf(g->sql, " AND num<");
        gen_double(g, day + 86400000.0);
        fprintf(g->sql, ")");
    }
    fprintf(g->sql, ")");
}

static void gen_node(struct sqlgen *g, const struct af_sq_node *n)
{
    switch (n->kind) {
    case AF_SQ_AND:
    case AF_SQ_OR:
        fprintf(g->sql, "(");
        gen_node(g, n->left);
        fprintf(g->sql, n->kind == AF_SQ_AND ? " AND " : " OR ");
        gen_node(g, n->right);
        fprintf(g->sql, ")");
        break;
    case AF_SQ_NOT:
        fprintf(g->sql, "NOT (");
        gen_node(g, n->left);
        fprintf(g->sql, ")");
        break;
    case AF_SQ_TERM:
        gen_term(g, n);
        break;
    }
}

static void sqlgen_free(struct sqlgen *g)
{
    if (g->sql)
        fclose(g->sql);
    free(g->sql_buf);
    for (int i = 0; i < g->n_binds; i++)
        free(g->binds[i].text);
    free(g->binds);
}

static void bind_all(sqlite3_stmt *st, const struct sqlgen *g)
{
    for (int i = 0; i < g->n_binds; i++) {
        if (g->binds[i].kind == B_TEXT)
            sqlite3_bind_text(st, i + 1, g->binds[i].text, -1, SQLITE_STATIC);
        else
            sqlite3_bind_double(st, i + 1, g->binds[i].d);
    }
}

/* ---- Search: cursors -------------------------------------------------- */

/* A cursor is a position in one query's ordered results: "af1:" OFFSET ":"
 * and a hash of the index, query and sort, so a cursor from another query
 * is refused. Results added or removed before the position shift it. */
static uint32_t query_hash(const Af__Search__SearchParams *p)
{
    uint32_t h = 2166136261u;
    const char *parts[3] = {p->index_spec->name, spec_ns(p->index_spec), p->query};
    for (int k = 0; k < 3; k++)
        for (const char *c = parts[k]; ; c++) {
            h = (h ^ (uint8_t)*c) * 16777619u;
            if (!*c)
                break;
        }
    for (size_t i = 0; i < p->n_sort_spec; i++)
        for (const char *c = p->sort_spec[i]->sort_expression; *c; c++)
            h = (h ^ (uint8_t)*c) * 16777619u;
    return h;
}

static char *cursor_make(const Af__Search__SearchParams *p, long pos)
{
    return af_xasprintf("af1:%ld:%08x", pos, query_hash(p));
}

static bool cursor_parse(const Af__Search__SearchParams *p, const char *c, long *pos)
{
    long v;
    unsigned h;
    int len = 0;
    if (sscanf(c, "af1:%ld:%8x%n", &v, &h, &len) != 2 || c[len] != '\0' || v < 0 ||
        v > 1000000)
        return false;
    if (h != query_hash(p))
        return false;
    *pos = v;
    return true;
}

/* ---- Search ----------------------------------------------------------- */

static void search_status(struct af_result *res, sscode code, const char *detail)
{
    Af__Search__SearchResponse out = AF__SEARCH__SEARCH_RESPONSE__INIT;
    Af__Search__RequestStatus *status = status_new(code, detail);
    out.status = status;
    out.matched_count = 0;
    af_result_pack(res, &out.base);
    status_free(status);
}

/* Checks what the query asks beyond what appfront does; a message or NULL. */
static const char *unsupported(const Af__Search__SearchParams *p)
{
    if (p->field_spec && p->field_spec->n_expression)
        return "field expressions (snippets, computed fields) are not supported by appfront's "
               "search service";
    if (p->n_include_facet || p->n_facet_refinement ||
        (p->has_auto_discover_facet_count && p->auto_discover_facet_count > 0))
        return "facet discovery and refinements are not supported by appfront's search service";
    return NULL;
}

static void do_search(void *state, const struct af_call *call, struct af_result *res)
{
    struct search_state *s = state;
    Af__Search__SearchRequest *req = unpack_grouped(
        AF_SW_SEARCH_REQUEST, &af__search__search_request__descriptor, call);
    if (!req) {
        af_result_app_error(res, S_INVALID, "search: cannot decode SearchRequest");
        return;
    }
    Af__Search__SearchParams *p = req->params;
    struct sqlgen g = {.sql = NULL};
    struct af_sq_node *tree = NULL;
    char err[400];
    Af__Search__SearchResult **results = NULL;
    size_t n = 0;
    if (!check_spec(p->index_spec, res) || !store_ready(s, res))
        goto out;
    const char *why = unsupported(p);
    if (why) {
        search_status(res, S_INVALID, why);
        goto out;
    }
    int limit = p->has_limit ? p->limit : 20;
    long offset = p->has_offset ? p->offset : 0;
    if (limit < 0 || limit > MAX_SEARCH_LIMIT || offset < 0 || offset > MAX_SEARCH_OFFSET) {
        snprintf(err, sizeof(err), "limit %d must be in 0..%d and offset %ld in 0..%d", limit,
                 MAX_SEARCH_LIMIT, offset, MAX_SEARCH_OFFSET);
        search_status(res, S_INVALID, err);
        goto out;
    }
    if (p->cursor) {
        long pos;
        if (p->has_offset && p->offset) {
            search_status(res, S_INVALID, "a search takes a cursor or an offset, not both");
            goto out;
        }
        if (!cursor_parse(p, p->cursor, &pos)) {
            search_status(res, S_INVALID, "the cursor is not one this search service made for "
                                          "this index, query and sort");
            goto out;
        }
        offset = pos;
    }
    if (p->n_sort_spec > MAX_SORT_SPECS) {
        snprintf(err, sizeof(err), "%zu sort specs; the limit is %d", p->n_sort_spec,
                 MAX_SORT_SPECS);
        search_status(res, S_INVALID, err);
        goto out;
    }
    for (size_t i = 0; i < p->n_sort_spec; i++) {
        const char *e = p->sort_spec[i]->sort_expression;
        if (strcmp(e, "_rank") != 0 && !af_sq_valid_field_name(e, strlen(e))) {
            snprintf(err, sizeof(err), "sort expression '%.100s' is not supported: appfront "
                     "sorts by a field name or _rank", e);
            search_status(res, S_INVALID, err);
            goto out;
        }
    }
    if (!af_sq_parse(p->query, strlen(p->query), &tree, err, sizeof(err))) {
        search_status(res, S_INVALID, err);
        goto out;
    }
    int64_t idx = index_id(s->db, s->app_id, spec_ns(p->index_spec), p->index_spec->name, false);
    if (idx < 0) {
        af_result_app_error(res, S_INTERNAL, "search: %s", sqlite3_errmsg(s->db));
        goto out;
    }
    /* WHERE: the index, then the query. */
    g.sql = open_memstream(&g.sql_buf, &g.sql_len);
    g.err = err;
    g.errlen = sizeof(err);
    fprintf(g.sql, "FROM doc d WHERE d.idx=");
    gen_double(&g, (double)idx);
    if (tree) {
        fprintf(g.sql, " AND ");
        gen_node(&g, tree);
    }
    if (g.failed) {
        search_status(res, S_INVALID, err);
        goto out;
    }
    fflush(g.sql);
    size_t where_len = g.sql_len;
    int where_binds = g.n_binds;
    /* ORDER BY: each sort spec, missing values after present ones unless
     * a default is given, then rank (production's default order), then id. */
    fprintf(g.sql, " ORDER BY ");
    for (size_t i = 0; i < p->n_sort_spec; i++) {
        const Af__Search__SortSpec *ss = p->sort_spec[i];
        const char *dir = ss->sort_descending ? "DESC" : "ASC";
        if (strcmp(ss->sort_expression, "_rank") == 0) {
            fprintf(g.sql, "d.rank %s, ", dir);
            continue;
        }
        /* Key K: the field's value (a number before a string when a name
         * has both), or the default; "K IS NULL" first puts documents
         * with neither last in either direction. */
        for (int pass = 0; pass < 2; pass++) {
            fprintf(g.sql, "coalesce((SELECT coalesce(num, str) FROM val WHERE doc=d.id"
                           " AND field=");
            gen_text(&g, af_xstrdup(ss->sort_expression));
            fprintf(g.sql, " AND type<>5 ORDER BY type DESC LIMIT 1), ");
            if (ss->default_value_text)
                gen_text(&g, af_xstrdup(ss->default_value_text));
            else if (ss->has_default_value_numeric)
                gen_double(&g, ss->default_value_numeric);
            else
                fprintf(g.sql, "NULL");
            fprintf(g.sql, pass == 0 ? ") IS NULL, " : ") %s, ", dir);
        }
    }
    fprintf(g.sql, "d.rank DESC, d.doc_id ASC LIMIT %d OFFSET %ld", limit, offset);
    fflush(g.sql);

    /* The count: every match (number_found is exact here). */
    char *count_sql = af_xasprintf("SELECT count(*) %.*s", (int)where_len, g.sql_buf);
    sqlite3_stmt *st = prep(s->db, count_sql);
    free(count_sql);
    if (!st) {
        af_result_app_error(res, S_INTERNAL, "search: %s", sqlite3_errmsg(s->db));
        goto out;
    }
    struct sqlgen where_only = g;
    where_only.n_binds = where_binds;
    bind_all(st, &where_only);
    int64_t matched = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);

    char *sel = af_xasprintf("SELECT d.doc_id, d.data %s", g.sql_buf);
    st = prep(s->db, sel);
    free(sel);
    if (!st) {
        af_result_app_error(res, S_INTERNAL, "search: %s", sqlite3_errmsg(s->db));
        goto out;
    }
    bind_all(st, &g);
    results = af_xcalloc((size_t)limit + 1, sizeof(*results));
    bool per_result = p->cursor_type == AF__SEARCH__SEARCH_PARAMS__CURSOR_TYPE__PER_RESULT;
    char **names = p->field_spec ? p->field_spec->name : NULL;
    size_t n_names = p->field_spec ? p->field_spec->n_name : 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        Af__Search__Document *d =
            result_doc(sqlite3_column_blob(st, 1), sqlite3_column_bytes(st, 1),
                       (const char *)sqlite3_column_text(st, 0), p->keys_only, names, n_names);
        if (!d)
            continue;
        Af__Search__SearchResult *r = af_xmalloc(sizeof(*r));
        af__search__search_result__init(r);
        r->document = d;
        if (per_result)
            r->cursor = cursor_make(p, offset + (long)n + 1);
        results[n++] = r;
    }
    if (rc != SQLITE_DONE) {
        /* An FTS5 phrase the tokenizer rejects ends up here. */
        snprintf(err, sizeof(err), "the query could not be run: %s", sqlite3_errmsg(s->db));
        sqlite3_finalize(st);
        search_status(res, S_INVALID, err);
        goto out;
    }
    sqlite3_finalize(st);
    Af__Search__SearchResponse out = AF__SEARCH__SEARCH_RESPONSE__INIT;
    Af__Search__RequestStatus *status = status_new(S_OK, NULL);
    out.status = status;
    out.matched_count = matched;
    out.n_result = n;
    out.result = results;
    char *single = NULL;
    if (p->cursor_type == AF__SEARCH__SEARCH_PARAMS__CURSOR_TYPE__SINGLE &&
        offset + (long)n < matched)
        out.cursor = single = cursor_make(p, offset + (long)n);
    pack_grouped(res, AF_SW_SEARCH_RESPONSE, &out.base);
    free(single);
    status_free(status);
out:
    for (size_t i = 0; i < n; i++) {
        result_doc_free(results[i]->document);
        free(results[i]->cursor);
        free(results[i]);
    }
    free(results);
    sqlgen_free(&g);
    af_sq_free(tree);
    af__search__search_request__free_unpacked(req, NULL);
}

/* ---- lifecycle -------------------------------------------------------- */

static void *search_create(const struct af_api_options *opts)
{
    struct search_state *s = af_xcalloc(1, sizeof(*s));
    s->app_id = af_xstrdup(opts && opts->app_id ? opts->app_id : "");
    s->path = opts && opts->storage_path ? af_xasprintf("%s/search.sqlite3", opts->storage_path)
                                         : af_xstrdup(":memory:");
    if (opts && opts->clear_search_indexes && strcmp(s->path, ":memory:") != 0) {
        unlink_db(s->path);
        af_info("search: --clear_search_indexes: %s removed", s->path);
    }
    return s;
}

static void search_clear(void *state)
{
    struct search_state *s = state;
    if (search_open(s))
        db_exec(s->db, "BEGIN IMMEDIATE; DELETE FROM fts; DELETE FROM val; DELETE FROM doc;"
                       " DELETE FROM sindex; COMMIT;");
}

static void search_destroy(void *state)
{
    struct search_state *s = state;
    if (!s)
        return;
    sqlite3_close_v2(s->db);
    free(s->path);
    free(s->app_id);
    free(s->open_error);
    free(s);
}

static const struct af_method search_methods[] = {
    {.name = "IndexDocument", .fn = index_document},
    {.name = "DeleteDocument", .fn = delete_document},
    {.name = "ListDocuments", .fn = list_documents},
    {.name = "ListIndexes", .fn = list_indexes},
    {.name = "Search", .fn = do_search},
    {.name = NULL, .fn = NULL},
};

const struct af_service af_service_search = {
    .name = "search",
    .methods = search_methods,
    .create = search_create,
    .clear = search_clear,
    .destroy = search_destroy,
    .internal = NULL,
};
