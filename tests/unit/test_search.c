/* Unit tests of the search service: the query parser, the group rewriting,
 * and the service itself on a real SQLite file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "apiserver/services/search.c"
#include "tests/unit/svc_call.h"

/* ---- parser ----------------------------------------------------------- */

static void show(const struct af_sq_node *n, FILE *f)
{
    static const char *const ops[] = {":", "<", "<=", ">", ">="};
    switch (n->kind) {
    case AF_SQ_AND:
    case AF_SQ_OR:
        fprintf(f, "(%s ", n->kind == AF_SQ_AND ? "and" : "or");
        show(n->left, f);
        fputc(' ', f);
        show(n->right, f);
        fputc(')', f);
        break;
    case AF_SQ_NOT:
        fprintf(f, "(not ");
        show(n->left, f);
        fputc(')', f);
        break;
    case AF_SQ_TERM:
        if (n->field)
            fprintf(f, "%s%s", n->field, ops[n->op]);
        fprintf(f, n->phrase ? "\"%s\"" : "%s", n->value);
        break;
    }
}

static char *parse_show(const char *q)
{
    struct af_sq_node *t;
    char err[300];
    if (!af_sq_parse(q, strlen(q), &t, err, sizeof(err)))
        return af_xasprintf("ERROR %s", err);
    char *buf = NULL;
    size_t len;
    FILE *f = open_memstream(&buf, &len);
    if (t)
        show(t, f);
    else
        fputs("ALL", f);
    fclose(f);
    af_sq_free(t);
    return buf;
}

static void expect(const char *q, const char *want)
{
    char *got = parse_show(q);
    if (strncmp(want, "ERROR", 5) == 0 ? strstr(got, want + 6) == NULL || strncmp(got, "ERROR", 5)
                                       : strcmp(got, want) != 0) {
        print_error("query %s: got %s, want %s\n", q, got, want);
        free(got);
        fail();
    }
    free(got);
}

static void test_parse_ok(void **state)
{
    expect("", "ALL");
    expect("   ", "ALL");
    expect("fox", "fox");
    expect("red fox", "(and red fox)");
    expect("red AND fox", "(and red fox)");
    expect("red OR fox dog", "(or red (and fox dog))");
    expect("NOT red", "(not red)");
    expect("a NOT b", "(and a (not b))");
    expect("(a OR b) c", "(and (or a b) c)");
    expect("\"big red fox\"", "\"big red fox\"");
    expect("\"say \\\"hi\\\"\"", "\"say \"hi\"\"");
    expect("title:fox", "title:fox");
    expect("title = fox", "title:fox");
    expect("title:\"red fox\"", "title:\"red fox\"");
    expect("n<5 n <= 6 n>7 n >= -8.5", "(and (and (and n<5 n<=6) n>7) n>=-8.5)");
    expect("d >= 2011-01-02", "d>=2011-01-02");
    expect("title:(red OR blue)", "(or title:red title:blue)");
    expect("or and not", "(and (and or and) not)"); /* keywords only in capitals */
    expect("foo-bar", "foo-bar");
}

static void test_parse_errors(void **state)
{
    expect("(a", "ERROR no matching ')'");
    expect("a)", "ERROR without a matching '('");
    expect("()", "ERROR empty parentheses");
    expect("a AND", "ERROR the query ends");
    expect("OR a", "ERROR need a term on each side");
    expect("a OR OR b", "ERROR need a term on each side");
    expect("\"open", "ERROR no closing quote");
    expect(": x", "ERROR needs a field name");
    expect("1x:y", "ERROR not a field name");
    expect("t:", "ERROR no value");
    expect("t < (a)", "ERROR no value");
    expect("a:(b:c)", "ERROR inside another field");
    expect("NOT", "ERROR the query ends");
    /* Bounds: nesting, terms, length, NUL. */
    char q[AF_SQ_MAX_QUERY + 2];
    memset(q, '(', 30);
    strcpy(q + 30, "a");
    expect(q, "ERROR nest more than 20");
    q[0] = '\0';
    for (int i = 0; i < AF_SQ_MAX_TERMS + 1; i++)
        strcat(q, "w ");
    expect(q, "ERROR more than 100 terms");
    memset(q, 'a', AF_SQ_MAX_QUERY + 1);
    q[AF_SQ_MAX_QUERY + 1] = '\0';
    expect(q, "ERROR the limit is 2000");
    struct af_sq_node *t;
    char err[200];
    assert_false(af_sq_parse("a\0b", 3, &t, err, sizeof(err)));
    assert_non_null(strstr(err, "NUL"));
}

/* ---- group rewriting ---------------------------------------------------- */

static void test_wire_groups(void **state)
{
    /* Field{name="g", value=FieldValue{type=GEO, group Geo{lat=1.0, lng=2.0}}}
     * inside Document{id="d"}: as the official clients send it. */
    uint8_t geo_group[] = {0x23,                                                 /* start 4 */
                           0x29, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f,                   /* lat 1.0 */
                           0x31, 0, 0, 0, 0, 0, 0, 0x00, 0x40,                   /* lng 2.0 */
                           0x24};                                                /* end 4 */
    uint8_t value[2 + sizeof(geo_group)] = {0x08, 0x05};
    memcpy(value + 2, geo_group, sizeof(geo_group));
    uint8_t field_msg[3 + 2 + sizeof(value)] = {0x0a, 0x01, 'g', 0x12, sizeof(value)};
    memcpy(field_msg + 5, value, sizeof(value));
    uint8_t doc[3 + 2 + sizeof(field_msg)] = {0x0a, 0x01, 'd', 0x1a, sizeof(field_msg)};
    memcpy(doc + 5, field_msg, sizeof(field_msg));

    uint8_t *plain;
    size_t plain_len;
    assert_true(af_sw_rewrite(AF_SW_DOCUMENT, doc, sizeof(doc), false, &plain, &plain_len));
    Af__Search__Document *d = af__search__document__unpack(NULL, plain_len, plain);
    assert_non_null(d);
    assert_string_equal(d->id, "d");
    assert_int_equal(d->n_field, 1);
    assert_non_null(d->field[0]->value->geo);
    assert_true(d->field[0]->value->geo->lat == 1.0 && d->field[0]->value->geo->lng == 2.0);
    af__search__document__free_unpacked(d, NULL);

    uint8_t *back;
    size_t back_len;
    assert_true(af_sw_rewrite(AF_SW_DOCUMENT, plain, plain_len, true, &back, &back_len));
    assert_int_equal(back_len, sizeof(doc));
    assert_memory_equal(back, doc, sizeof(doc));
    free(plain);
    free(back);

    /* Empty nested messages (a Field with an empty FieldValue) pass. */
    uint8_t empty[] = {0x1a, 0x05, 0x0a, 0x01, 'e', 0x12, 0x00};
    assert_true(af_sw_rewrite(AF_SW_DOCUMENT, empty, sizeof(empty), true, &back, &back_len));
    assert_int_equal(back_len, sizeof(empty));
    assert_memory_equal(back, empty, sizeof(empty));
    free(back);

    /* Malformed: a group without its end tag, a stray end tag, a truncated
     * length. */
    uint8_t *out;
    size_t out_len;
    uint8_t no_end[] = {0x0a, 0x01, 'd', 0x1a, 0x06, 0x12, 0x04, 0x08, 0x05, 0x23, 0x08};
    assert_false(af_sw_rewrite(AF_SW_DOCUMENT, no_end, sizeof(no_end), false, &out, &out_len));
    uint8_t stray[] = {0x24};
    assert_false(af_sw_rewrite(AF_SW_DOCUMENT, stray, sizeof(stray), false, &out, &out_len));
    uint8_t trunc[] = {0x1a, 0x10, 0x00};
    assert_false(af_sw_rewrite(AF_SW_DOCUMENT, trunc, sizeof(trunc), false, &out, &out_len));
}

/* ---- the service on a real file ---------------------------------------- */

struct fixture {
    char dir[64];
    void *svc;
};

static void *open_svc(struct fixture *fx, bool clear)
{
    struct af_api_options o = {.app_id = "testapp", .storage_path = fx->dir,
                               .clear_search_indexes = clear};
    return af_service_search.create(&o);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    strcpy(fx->dir, "/tmp/af-search-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    fx->svc = open_svc(fx, false);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    af_service_search.destroy(fx->svc);
    char *p = af_xasprintf("%s/search.sqlite3", fx->dir);
    unlink_db(p);
    free(p);
    rmdir(fx->dir);
    free(fx);
    return 0;
}

/* Builds one field. */
static Af__Search__Field *mkfield(const char *name, Af__Search__FieldValue__ContentType type,
                                  const char *value)
{
    Af__Search__Field *f = calloc(1, sizeof(*f));
    af__search__field__init(f);
    f->name = (char *)name;
    f->value = calloc(1, sizeof(*f->value));
    af__search__field_value__init(f->value);
    f->value->has_type = true;
    f->value->type = type;
    f->value->string_value = (char *)value;
    return f;
}

static void freefield(Af__Search__Field *f)
{
    free(f->value);
    free(f);
}

/* Indexes one document (id, and a text "t" and number "n" field) and
 * returns the status code. */
static int put_doc(void *svc, const char *index, const char *ns, const char *id, const char *text,
                   const char *num, char **detail)
{
    Af__Search__Field *fields[2] = {
        mkfield("t", AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__TEXT, text),
        mkfield("n", AF__SEARCH__FIELD_VALUE__CONTENT_TYPE__NUMBER, num)};
    Af__Search__Document doc = AF__SEARCH__DOCUMENT__INIT;
    doc.id = (char *)id;
    doc.n_field = num ? 2 : 1;
    doc.field = fields;
    Af__Search__Document *docs[1] = {&doc};
    Af__Search__IndexSpec spec = AF__SEARCH__INDEX_SPEC__INIT;
    spec.name = (char *)index;
    spec.namespace_ = (char *)ns;
    Af__Search__IndexDocumentParams p = AF__SEARCH__INDEX_DOCUMENT_PARAMS__INIT;
    p.n_document = 1;
    p.document = docs;
    p.index_spec = &spec;
    Af__Search__IndexDocumentRequest req = AF__SEARCH__INDEX_DOCUMENT_REQUEST__INIT;
    req.params = &p;
    struct af_result res = svc_call(&af_service_search, svc, "IndexDocument", &req.base);
    freefield(fields[0]);
    freefield(fields[1]);
    int code = -1;
    if (res.kind == AF_RESULT_APP_ERROR) {
        code = 100 + res.code;
        if (detail)
            *detail = af_xstrdup(res.detail);
    } else {
        assert_int_equal(res.kind, AF_RESULT_OK);
        Af__Search__IndexDocumentResponse *r =
            af__search__index_document_response__unpack(NULL, res.response_len, res.response);
        assert_non_null(r);
        assert_int_equal(r->n_status, 1);
        assert_int_equal(r->n_doc_id, 1);
        code = r->status[0]->code;
        if (detail)
            *detail = r->status[0]->error_detail ? af_xstrdup(r->status[0]->error_detail) : NULL;
        af__search__index_document_response__free_unpacked(r, NULL);
    }
    svc_result_free(&res);
    return code;
}

/* Runs a search; returns the ids found joined by ',' (or "ERROR detail"),
 * and the matched count in *count. */
static char *run_search(void *svc, const char *index, const char *q, int limit, const char *sort,
                        bool asc, const char *cursor, char **next_cursor, long *count)
{
    Af__Search__IndexSpec spec = AF__SEARCH__INDEX_SPEC__INIT;
    spec.name = (char *)index;
    Af__Search__SearchParams p = AF__SEARCH__SEARCH_PARAMS__INIT;
    p.index_spec = &spec;
    p.query = (char *)q;
    if (limit) {
        p.has_limit = true;
        p.limit = limit;
    }
    Af__Search__SortSpec ss = AF__SEARCH__SORT_SPEC__INIT;
    Af__Search__SortSpec *sss[1] = {&ss};
    if (sort) {
        ss.sort_expression = (char *)sort;
        ss.has_sort_descending = true;
        ss.sort_descending = !asc;
        p.n_sort_spec = 1;
        p.sort_spec = sss;
    }
    p.cursor = (char *)cursor;
    p.has_cursor_type = true;
    p.cursor_type = AF__SEARCH__SEARCH_PARAMS__CURSOR_TYPE__SINGLE;
    Af__Search__SearchRequest req = AF__SEARCH__SEARCH_REQUEST__INIT;
    req.params = &p;
    struct af_result res = svc_call(&af_service_search, svc, "Search", &req.base);
    char *out;
    if (res.kind == AF_RESULT_APP_ERROR) {
        out = af_xasprintf("APPERROR %d %s", res.code, res.detail);
    } else {
        assert_int_equal(res.kind, AF_RESULT_OK);
        uint8_t *plain;
        size_t plain_len;
        assert_true(af_sw_rewrite(AF_SW_SEARCH_RESPONSE, res.response, res.response_len, false,
                                  &plain, &plain_len));
        Af__Search__SearchResponse *r =
            af__search__search_response__unpack(NULL, plain_len, plain);
        free(plain);
        assert_non_null(r);
        if (r->status->code != S_OK) {
            out = af_xasprintf("ERROR %s", r->status->error_detail);
        } else {
            out = af_xstrdup("");
            for (size_t i = 0; i < r->n_result; i++) {
                char *t = af_xasprintf("%s%s%s", out, i ? "," : "", r->result[i]->document->id);
                free(out);
                out = t;
            }
            if (count)
                *count = (long)r->matched_count;
            if (next_cursor)
                *next_cursor = r->cursor ? af_xstrdup(r->cursor) : NULL;
        }
        af__search__search_response__free_unpacked(r, NULL);
    }
    svc_result_free(&res);
    return out;
}

static void expect_search(void *svc, const char *q, const char *want)
{
    long count = -1;
    char *got = run_search(svc, "idx", q, 0, "n", true, NULL, NULL, &count);
    if (strncmp(want, "ERROR", 5) == 0 ? strstr(got, want + 6) == NULL : strcmp(got, want) != 0) {
        print_error("search %s: got %s, want %s\n", q, got, want);
        free(got);
        fail();
    }
    free(got);
}

static void test_service_search(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(put_doc(fx->svc, "idx", NULL, "a", "the quick brown fox", "1", NULL), S_OK);
    assert_int_equal(put_doc(fx->svc, "idx", NULL, "b", "a lazy brown dog", "2", NULL), S_OK);
    assert_int_equal(put_doc(fx->svc, "idx", NULL, "c", "Quick thinking", "3", NULL), S_OK);
    assert_int_equal(put_doc(fx->svc, "idx", "ns1", "d", "quick in another namespace", "4", NULL),
                     S_OK);
    expect_search(fx->svc, "", "a,b,c");
    expect_search(fx->svc, "quick", "a,c");
    expect_search(fx->svc, "brown OR -", "a,b"); /* '-' has no words: it matches nothing */
    expect_search(fx->svc, "\"brown fox\"", "a");
    expect_search(fx->svc, "t:brown NOT fox", "b");
    expect_search(fx->svc, "n >= 2", "b,c");
    expect_search(fx->svc, "n:3 OR dog", "b,c");
    expect_search(fx->svc, "n < x", "ERROR neither a number nor a date");
    expect_search(fx->svc, "(quick", "ERROR no matching ')'");
    expect_search(fx->svc, "missing:quick", "");
    /* A document put again replaces the old one, words and values. */
    assert_int_equal(put_doc(fx->svc, "idx", NULL, "r", "generated", NULL, NULL), S_OK);
    expect_search(fx->svc, "generated", "r");
    assert_int_equal(put_doc(fx->svc, "idx", NULL, "r", "renamed", "9", NULL), S_OK);
    expect_search(fx->svc, "generated", "");
    expect_search(fx->svc, "renamed", "r");
    expect_search(fx->svc, "n:9", "r");
    Af__Search__IndexSpec dspec = AF__SEARCH__INDEX_SPEC__INIT;
    dspec.name = "idx";
    char *rid[] = {"r"};
    Af__Search__DeleteDocumentParams ddp = AF__SEARCH__DELETE_DOCUMENT_PARAMS__INIT;
    ddp.index_spec = &dspec;
    ddp.n_doc_id = 1;
    ddp.doc_id = rid;
    Af__Search__DeleteDocumentRequest ddr = AF__SEARCH__DELETE_DOCUMENT_REQUEST__INIT;
    ddr.params = &ddp;
    struct af_result dres = svc_call(&af_service_search, fx->svc, "DeleteDocument", &ddr.base);
    assert_int_equal(dres.kind, AF_RESULT_OK);
    svc_result_free(&dres);
    expect_search(fx->svc, "renamed", "");

    /* Sort both ways, limit and the single cursor. */
    char *got = run_search(fx->svc, "idx", "", 0, "n", false, NULL, NULL, NULL);
    assert_string_equal(got, "c,b,a");
    free(got);
    char *cur = NULL;
    long count = 0;
    got = run_search(fx->svc, "idx", "", 2, "n", true, NULL, &cur, &count);
    assert_string_equal(got, "a,b");
    assert_int_equal(count, 3);
    assert_non_null(cur);
    free(got);
    char *cur2 = NULL;
    got = run_search(fx->svc, "idx", "", 2, "n", true, cur, &cur2, NULL);
    assert_string_equal(got, "c");
    assert_null(cur2);
    free(got);
    /* A cursor of another query is refused. */
    got = run_search(fx->svc, "idx", "quick", 2, "n", true, cur, NULL, NULL);
    assert_non_null(strstr(got, "ERROR the cursor is not one"));
    free(got);
    free(cur);
    got = run_search(fx->svc, "idx", "", 0, "no such thing()", true, NULL, NULL, NULL);
    assert_non_null(strstr(got, "is not supported"));
    free(got);
    /* An unknown index is empty, a bad index name an application error. */
    got = run_search(fx->svc, "nosuch", "quick", 0, NULL, true, NULL, NULL, NULL);
    assert_string_equal(got, "");
    free(got);
    got = run_search(fx->svc, "!bad", "quick", 0, NULL, true, NULL, NULL, NULL);
    assert_non_null(strstr(got, "APPERROR 1 search: index name '!bad' starts with '!'"));
    free(got);
}

static void test_service_bad_documents(void **state)
{
    struct fixture *fx = *state;
    char *detail = NULL;
    assert_int_equal(put_doc(fx->svc, "idx", NULL, "x", "ok", "not-a-number", &detail),
                     S_INVALID);
    assert_non_null(strstr(detail, "number field 'n'"));
    free(detail);
    assert_int_equal(put_doc(fx->svc, "idx", NULL, "x", "ok", "3e9", &detail), S_INVALID);
    free(detail);
    assert_int_equal(put_doc(fx->svc, "idx", NULL, "has space", "ok", NULL, &detail), S_INVALID);
    assert_non_null(strstr(detail, "printable ASCII"));
    free(detail);
    assert_int_equal(put_doc(fx->svc, "idx", NULL, "x", "\xff\xfe", NULL, &detail), S_INVALID);
    assert_non_null(strstr(detail, "UTF-8"));
    free(detail);
    assert_int_equal(put_doc(fx->svc, "idx", "bad ns!", "x", "ok", NULL, &detail),
                     100 + S_INVALID);
    assert_non_null(strstr(detail, "namespace"));
    free(detail);
    char longname[120];
    memset(longname, 'i', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(put_doc(fx->svc, longname, NULL, "x", "ok", NULL, &detail), 100 + S_INVALID);
    assert_non_null(strstr(detail, "too long"));
    free(detail);
    /* Nothing of the bad documents was stored. */
    expect_search(fx->svc, "ok", "");

    /* Undecodable bytes: an application error, and the service goes on. */
    uint8_t junk[] = {0x0a, 0x05, 0x01};
    static const char *const methods[] = {"IndexDocument", "DeleteDocument", "ListDocuments",
                                          "ListIndexes", "Search"};
    for (size_t i = 0; i < 5; i++) {
        struct af_result res =
            svc_call_raw(&af_service_search, fx->svc, methods[i], "r", junk, sizeof(junk));
        assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
        assert_int_equal(res.code, S_INVALID);
        assert_non_null(strstr(res.detail, "cannot decode"));
        svc_result_free(&res);
    }
    assert_int_equal(put_doc(fx->svc, "idx", NULL, "x", "ok", NULL, NULL), S_OK);
    expect_search(fx->svc, "ok", "x");
}

static void test_service_durable_and_clear(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(put_doc(fx->svc, "idx", NULL, "keep", "durable words", "5", NULL), S_OK);
    /* A restart: a new connection on the same file sees the document. */
    af_service_search.destroy(fx->svc);
    fx->svc = open_svc(fx, false);
    expect_search(fx->svc, "durable", "keep");
    /* Delete, then a restart: still gone. */
    Af__Search__IndexSpec spec = AF__SEARCH__INDEX_SPEC__INIT;
    spec.name = "idx";
    char *ids[] = {"keep", "never-there"};
    Af__Search__DeleteDocumentParams dp = AF__SEARCH__DELETE_DOCUMENT_PARAMS__INIT;
    dp.index_spec = &spec;
    dp.n_doc_id = 2;
    dp.doc_id = ids;
    Af__Search__DeleteDocumentRequest dr = AF__SEARCH__DELETE_DOCUMENT_REQUEST__INIT;
    dr.params = &dp;
    struct af_result res = svc_call(&af_service_search, fx->svc, "DeleteDocument", &dr.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    svc_result_free(&res);
    assert_int_equal(put_doc(fx->svc, "idx", NULL, "other", "durable too", NULL, NULL), S_OK);
    af_service_search.destroy(fx->svc);
    fx->svc = open_svc(fx, false);
    expect_search(fx->svc, "durable", "other");
    /* --clear_search_indexes: nothing left, and the index is gone. */
    af_service_search.destroy(fx->svc);
    fx->svc = open_svc(fx, true);
    expect_search(fx->svc, "durable", "");
    Af__Search__ListIndexesParams lp = AF__SEARCH__LIST_INDEXES_PARAMS__INIT;
    Af__Search__ListIndexesRequest lr = AF__SEARCH__LIST_INDEXES_REQUEST__INIT;
    lr.params = &lp;
    res = svc_call(&af_service_search, fx->svc, "ListIndexes", &lr.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Search__ListIndexesResponse *r =
        af__search__list_indexes_response__unpack(NULL, res.response_len, res.response);
    assert_int_equal(r->n_index_metadata, 0);
    af__search__list_indexes_response__free_unpacked(r, NULL);
    svc_result_free(&res);
}

static void test_service_list_indexes(void **state)
{
    struct fixture *fx = *state;
    assert_int_equal(put_doc(fx->svc, "books", NULL, "1", "x", "1", NULL), S_OK);
    assert_int_equal(put_doc(fx->svc, "bottles", NULL, "1", "x", NULL, NULL), S_OK);
    assert_int_equal(put_doc(fx->svc, "cars", NULL, "1", "x", NULL, NULL), S_OK);
    assert_int_equal(put_doc(fx->svc, "boats", "other", "1", "x", NULL, NULL), S_OK);
    Af__Search__ListIndexesParams lp = AF__SEARCH__LIST_INDEXES_PARAMS__INIT;
    lp.index_name_prefix = "bo";
    lp.has_fetch_schema = true;
    lp.fetch_schema = true;
    Af__Search__ListIndexesRequest lr = AF__SEARCH__LIST_INDEXES_REQUEST__INIT;
    lr.params = &lp;
    struct af_result res = svc_call(&af_service_search, fx->svc, "ListIndexes", &lr.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Search__ListIndexesResponse *r =
        af__search__list_indexes_response__unpack(NULL, res.response_len, res.response);
    assert_int_equal(r->n_index_metadata, 2);
    assert_string_equal(r->index_metadata[0]->index_spec->name, "books");
    assert_string_equal(r->index_metadata[1]->index_spec->name, "bottles");
    /* books has t (TEXT) and n (NUMBER). */
    assert_int_equal(r->index_metadata[0]->n_field, 2);
    assert_string_equal(r->index_metadata[0]->field[0]->name, "n");
    assert_int_equal(r->index_metadata[0]->field[0]->type[0], 4);
    assert_true(r->index_metadata[0]->storage->amount_used > 0);
    af__search__list_indexes_response__free_unpacked(r, NULL);
    svc_result_free(&res);
    lp.namespace_ = "other";
    res = svc_call(&af_service_search, fx->svc, "ListIndexes", &lr.base);
    r = af__search__list_indexes_response__unpack(NULL, res.response_len, res.response);
    assert_int_equal(r->n_index_metadata, 1);
    assert_string_equal(r->index_metadata[0]->index_spec->name, "boats");
    af__search__list_indexes_response__free_unpacked(r, NULL);
    svc_result_free(&res);
}

static void test_service_lazy_open_and_foreign_file(void **state)
{
    struct fixture *fx = *state;
    /* No call yet: no file. */
    char *path = af_xasprintf("%s/search.sqlite3", fx->dir);
    assert_int_not_equal(access(path, F_OK), 0);
    af_service_search.destroy(fx->svc);
    /* A file of another schema version is refused by name, not misread. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version=99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    fx->svc = open_svc(fx, false);
    char *detail = NULL;
    assert_int_equal(put_doc(fx->svc, "idx", NULL, "a", "x", NULL, &detail), 100 + S_INTERNAL);
    assert_non_null(strstr(detail, "schema version 99"));
    assert_non_null(strstr(detail, "--clear_search_indexes"));
    free(detail);
    /* --clear_search_indexes removes it, and the service works. */
    af_service_search.destroy(fx->svc);
    fx->svc = open_svc(fx, true);
    assert_int_equal(put_doc(fx->svc, "idx", NULL, "a", "x", NULL, NULL), S_OK);
    assert_int_equal(access(path, F_OK), 0);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ok),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_wire_groups),
        cmocka_unit_test_setup_teardown(test_service_search, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_bad_documents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_durable_and_clear, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_list_indexes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_lazy_open_and_foreign_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
