/*
 * Unit tests of composite indexes (docs/datastore.md, "Indexes"): the
 * rules that say which index a query needs (a table of query shapes and
 * the index each needs, or none), matching definitions against a need,
 * the YAML of an index, index.yaml's loader (good files, bad files with
 * their line and column), the rewriting of its generated section, and the
 * datastore service with and without --require_indexes.
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

#include "apiserver/apiserver.h"
#include "apiserver/service.h"
#include "apiserver/services/datastore_index.h"
#include "apiserver/services/datastore_index_yaml.h"
#include "apiserver/services/datastore_wire.h"

extern const struct af_service af_service_datastore_v3;

#define OP(x) AF__DATASTORE__QUERY__FILTER__OPERATOR__##x
#define NEED_INDEX AF__DATASTORE__ERROR__ERROR_CODE__NEED_INDEX

/* ---- queries from a compact spec ---------------------------------------- */

/*
 * A query written as words: the kind ("-" for kindless), then
 *   anc      an ancestor
 *   a=       an equality filter on a     a> a< a>= a<=  inequalities
 *   +a -a    an ascending / descending order on a
 *   p:a      a projected property        g:a  a distinct (group_by) one
 */
struct spec_query {
    Af__Datastore__Query q;
    Af__Datastore__Reference anc;
    Af__Datastore__Path path;
    Af__Datastore__Path__Element el, *elp;
    Af__Datastore__Query__Filter filters[16], *fp[16];
    Af__Datastore__Property props[16], *pp[16];
    Af__Datastore__PropertyValue value;
    Af__Datastore__Query__Order orders[16], *op[16];
    char *proj[16], *group[16];
    char words[256];
};

static void spec_parse(struct spec_query *s, const char *spec)
{
    memset(s, 0, sizeof(*s));
    af__datastore__query__init(&s->q);
    af__datastore__reference__init(&s->anc);
    af__datastore__path__init(&s->path);
    af__datastore__path__element__init(&s->el);
    s->el.type = "Parent";
    s->el.has_id = true;
    s->el.id = 1;
    s->elp = &s->el;
    s->path.element = &s->elp;
    s->path.n_element = 1;
    s->anc.app = "dev~app";
    s->anc.path = &s->path;
    af__datastore__property_value__init(&s->value);
    s->q.app = "dev~app";
    snprintf(s->words, sizeof(s->words), "%s", spec);
    char *save = NULL;
    char *w = strtok_r(s->words, " ", &save);
    s->q.kind = strcmp(w, "-") == 0 ? NULL : w;
    s->q.filter = s->fp;
    s->q.order = s->op;
    s->q.property_name = s->proj;
    s->q.group_by_property_name = s->group;
    while ((w = strtok_r(NULL, " ", &save)) != NULL) {
        size_t n = strlen(w);
        if (strcmp(w, "anc") == 0) {
            s->q.ancestor = &s->anc;
        } else if (w[0] == '+' || w[0] == '-') {
            Af__Datastore__Query__Order *o = &s->orders[s->q.n_order];
            af__datastore__query__order__init(o);
            o->property = w + 1;
            o->has_direction = w[0] == '-';
            o->direction = AF__DATASTORE__QUERY__ORDER__DIRECTION__DESCENDING;
            s->op[s->q.n_order] = o;
            s->q.n_order++;
        } else if (strncmp(w, "p:", 2) == 0) {
            s->proj[s->q.n_property_name++] = w + 2;
        } else if (strncmp(w, "g:", 2) == 0) {
            s->group[s->q.n_group_by_property_name++] = w + 2;
        } else {
            int op = 0;
            size_t cut = 0;
            if (n >= 2 && strcmp(w + n - 2, ">=") == 0)
                op = OP(GREATER_THAN_OR_EQUAL), cut = 2;
            else if (n >= 2 && strcmp(w + n - 2, "<=") == 0)
                op = OP(LESS_THAN_OR_EQUAL), cut = 2;
            else if (w[n - 1] == '>')
                op = OP(GREATER_THAN), cut = 1;
            else if (w[n - 1] == '<')
                op = OP(LESS_THAN), cut = 1;
            else if (w[n - 1] == '=')
                op = OP(EQUAL), cut = 1;
            else
                fail_msg("bad spec word '%s'", w);
            w[n - cut] = '\0';
            size_t i = s->q.n_filter++;
            af__datastore__query__filter__init(&s->filters[i]);
            af__datastore__property__init(&s->props[i]);
            s->props[i].name = w;
            s->props[i].value = &s->value;
            s->pp[i] = &s->props[i];
            s->filters[i].op = op;
            s->filters[i].property = &s->pp[i];
            s->filters[i].n_property = 1;
            s->fp[i] = &s->filters[i];
        }
    }
}

/* An index written compactly: "Kind[ anc]: a -b c" ('-': descending). */
static char *index_text(const struct af_ds_index *ix)
{
    char buf[512];
    size_t off = (size_t)snprintf(buf, sizeof(buf), "%s%s:", ix->kind, ix->ancestor ? " anc" : "");
    for (size_t i = 0; i < ix->n_props; i++)
        off += (size_t)snprintf(buf + off, sizeof(buf) - off, " %s%s", ix->props[i].desc ? "-" : "",
                                ix->props[i].name);
    return strdup(buf);
}

/* The inverse of index_text, for definitions; names point into *keep. */
static void index_parse(struct af_ds_index *ix, const char *text)
{
    memset(ix, 0, sizeof(*ix));
    char *copy = strdup(text);
    char *colon = strchr(copy, ':');
    assert_non_null(colon);
    *colon = '\0';
    char *sp = strchr(copy, ' ');
    if (sp) {
        *sp = '\0';
        ix->ancestor = strcmp(sp + 1, "anc") == 0;
    }
    ix->kind = strdup(copy);
    ix->props = calloc(16, sizeof(*ix->props));
    char *save = NULL;
    for (char *w = strtok_r(colon + 1, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        bool desc = w[0] == '-';
        ix->props[ix->n_props++] = (struct af_ds_index_prop){strdup(w + desc), desc};
    }
    free(copy);
}

/* The suggestion for spec, compactly, or NULL when no index is needed. */
static char *need_of(const char *spec)
{
    struct spec_query s;
    spec_parse(&s, spec);
    struct af_ds_index_need need;
    if (!af_ds_index_for_query(&s.q, &need))
        return NULL;
    struct af_ds_index ix;
    af_ds_index_suggest(&need, &ix);
    char *text = index_text(&ix);
    af_ds_index_release(&ix);
    af_ds_index_need_release(&need);
    return text;
}

/* ---- the rules ---------------------------------------------------------- */

static void test_rules(void **unused)
{
    static const struct {
        const char *query;
        const char *want; /* NULL: no index needed */
    } cases[] = {
        /* Kind only, with or without ancestor: the kind index. */
        {"Foo", NULL},
        {"Foo anc", NULL},
        /* Equality filters only: the built-in merge join. */
        {"Foo a=", NULL},
        {"Foo a= b=", NULL},
        {"Foo anc a= b=", NULL},
        {"Foo a= a=", NULL}, /* a multi-valued property matched twice */
        /* One property: its built-in index. */
        {"Foo a>", NULL},
        {"Foo a> a<=", NULL},
        {"Foo +a", NULL},
        {"Foo -a", NULL},
        {"Foo a> -a", NULL},
        {"Foo p:a", NULL},
        /* ... but not with an ancestor. */
        {"Foo anc a>", "Foo anc: a"},
        {"Foo anc -a", "Foo anc: -a"},
        {"Foo anc a= +b", "Foo anc: a b"},
        /* Inequality with equalities: the equalities first, then it. */
        {"Foo a= b>", "Foo: a b"},
        {"Foo c= b= a<", "Foo: b c a"},
        {"Foo b= a> -a -c", "Foo: b -a -c"},
        /* Sort orders, in the query's order, with their directions. */
        {"Foo +a -b", "Foo: a -b"},
        {"Foo -b +a", "Foo: -b a"},
        {"Foo a= -b", "Foo: a -b"},
        {"Foo a= b= +c", "Foo: a b c"},
        /* An order on an equality property, or repeated, orders nothing. */
        {"Foo a= +a", NULL},
        {"Foo a= +b +b", "Foo: a b"},
        {"Foo +b +b", NULL},
        /* __key__: ascending is every index's own order; descending needs
         * an index even alone; orders after it are dropped. */
        {"Foo +__key__", NULL},
        {"Foo anc +__key__", NULL},
        {"Foo a= +__key__", NULL},
        {"Foo -a +__key__", NULL},
        {"Foo -__key__", "Foo: -__key__"},
        {"Foo a= -__key__", "Foo: a -__key__"},
        {"Foo +a +__key__ -b", NULL},
        {"Foo +a -__key__ -b", "Foo: a -__key__"},
        {"Foo __key__>", NULL},
        {"Foo anc __key__>", NULL},
        {"Foo a= __key__>", NULL},
        {"Foo __key__> -__key__", "Foo: -__key__"},
        /* An equality on __key__ drops every order. */
        {"Foo __key__= +a -b", NULL},
        /* Projections: exists entries after everything else. */
        {"Foo p:a p:b", "Foo: a b"},
        {"Foo p:b p:a", "Foo: a b"},
        {"Foo a= p:b", "Foo: a b"},
        {"Foo a= p:a", NULL},
        {"Foo -a p:a p:b", "Foo: -a b"},
        {"Foo a> p:a p:b", "Foo: a b"},
        {"Foo anc p:a", "Foo anc: a"},
        /* With exists entries the trailing __key__ order stays. */
        {"Foo +__key__ p:a", "Foo: __key__ a"},
        /* Distinct: group-by properties before plain projected ones. */
        {"Foo p:a p:b g:b", "Foo: b a"},
        {"Foo p:c p:b p:a g:c g:a", "Foo: a c b"},
        {"Foo +b p:a p:b g:a g:b", "Foo: b a"},
        /* Kindless queries never need one. */
        {"- anc", NULL},
        {"- __key__>", NULL},
        {"- anc -__key__", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = need_of(cases[i].query);
        if (!cases[i].want != !got || (got && strcmp(got, cases[i].want) != 0))
            fail_msg("query '%s': want %s, got %s", cases[i].query,
                     cases[i].want ? cases[i].want : "no index", got ? got : "no index");
        free(got);
    }
}

/* ---- matching ----------------------------------------------------------- */

static bool serves(const char *def, const char *query)
{
    struct spec_query s;
    spec_parse(&s, query);
    struct af_ds_index_need need;
    assert_true(af_ds_index_for_query(&s.q, &need));
    struct af_ds_index ix;
    index_parse(&ix, def);
    bool ok = af_ds_index_serves(&ix, &need);
    assert_int_equal(af_ds_index_any_serves(&ix, 1, &need), ok);
    af_ds_index_release(&ix);
    af_ds_index_need_release(&need);
    return ok;
}

static void test_matching(void **unused)
{
    static const struct {
        const char *def, *query;
        bool ok;
    } cases[] = {
        /* The prefix in any order, then the orders exactly. */
        {"Foo: a b -c", "Foo a= b= -c", true},
        {"Foo: b a -c", "Foo a= b= -c", true},
        {"Foo: a b c", "Foo a= b= -c", false},
        {"Foo: a -c b", "Foo a= b= -c", false},
        {"Foo: a b -c d", "Foo a= b= -c", false},
        {"Foo: a -c", "Foo a= b= -c", false},
        {"Bar: a b -c", "Foo a= b= -c", false},
        {"Foo anc: a b -c", "Foo a= b= -c", false},
        {"Foo: a b -c", "Foo anc a= b= -c", false},
        {"Foo anc: a b -c", "Foo anc a= b= -c", true},
        /* Equality properties take any direction. */
        {"Foo: -a -b -c", "Foo a= b= -c", true},
        /* The inequality's implicit order: either direction. */
        {"Foo: b a", "Foo b= a>", true},
        {"Foo: b -a", "Foo b= a>", true},
        {"Foo: a b", "Foo b= a>", false},
        /* An explicit order: its direction. */
        {"Foo: b -a", "Foo b= a> +a", false},
        /* Exists entries: a set, after the orders; group-by ones first. */
        {"Foo: c a b", "Foo p:a p:b p:c", true},
        {"Foo: b a", "Foo p:a p:b g:b", true},
        {"Foo: a b", "Foo p:a p:b g:b", false},
        {"Foo: -a b", "Foo -a p:a p:b", true},
        {"Foo: b -a", "Foo -a p:a p:b", false},
        {"Foo: -__key__", "Foo -__key__", true},
        {"Foo: __key__", "Foo -__key__", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (serves(cases[i].def, cases[i].query) != cases[i].ok)
            fail_msg("index '%s' for query '%s': want %s", cases[i].def, cases[i].query,
                     cases[i].ok ? "serves" : "does not serve");
}

/* Whether the definitions (compact, separated by '|') serve the query
 * together. */
static bool serve_together(const char *defs, const char *query)
{
    struct spec_query s;
    spec_parse(&s, query);
    struct af_ds_index_need need;
    assert_true(af_ds_index_for_query(&s.q, &need));
    struct af_ds_index ix[8];
    size_t n = 0;
    char *copy = strdup(defs), *save = NULL;
    for (char *d = strtok_r(copy, "|", &save); d; d = strtok_r(NULL, "|", &save))
        index_parse(&ix[n++], d);
    free(copy);
    bool ok = af_ds_index_any_serves(ix, n, &need);
    for (size_t i = 0; i < n; i++)
        af_ds_index_release(&ix[i]);
    af_ds_index_need_release(&need);
    return ok;
}

static void test_merged_indexes(void **unused)
{
    static const struct {
        const char *defs, *query;
        bool ok;
    } cases[] = {
        /* One postfix, the equalities split between indexes. */
        {"Foo: a -c|Foo: b -c", "Foo a= b= -c", true},
        {"Foo: a -c|Foo: b -c", "Foo a= b= d= -c", false},
        {"Foo: a -c|Foo: b c", "Foo a= b= -c", false},
        {"Foo: a -c|Bar: b -c", "Foo a= b= -c", false},
        /* The ancestor from one of them. */
        {"Foo anc: -c|Foo: a -c", "Foo anc a= -c", true},
        {"Foo: -c|Foo: a -c", "Foo anc a= -c", false},
        {"Foo anc: a -c", "Foo a= -c", false},
        /* An index leading with a property the query does not filter on
         * serves nothing; the others still can. */
        {"Foo: x -c|Foo: a -c", "Foo a= -c", true},
        {"Foo: x a -c", "Foo a= -c", false},
        /* Projections: the same exists tail. */
        {"Foo: a b|Foo: c b", "Foo a= c= p:b", true},
        {"Foo: a b", "Foo a= c= p:b", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (serve_together(cases[i].defs, cases[i].query) != cases[i].ok)
            fail_msg("indexes '%s' for query '%s': want %s", cases[i].defs, cases[i].query,
                     cases[i].ok ? "served" : "not served");
}

static void test_index_yaml_text(void **unused)
{
    struct af_ds_index ix;
    index_parse(&ix, "Foo anc: a -b");
    char *y = af_ds_index_yaml(&ix);
    assert_string_equal(y, "- kind: Foo\n"
                           "  ancestor: yes\n"
                           "  properties:\n"
                           "  - name: a\n"
                           "  - name: b\n"
                           "    direction: desc\n");
    free(y);
    /* Names YAML would misread are quoted, and read back the same. */
    free(ix.kind);
    ix.kind = strdup("My Kind");
    free(ix.props[0].name);
    ix.props[0].name = strdup("yes");
    free(ix.props[1].name);
    ix.props[1].name = strdup("a: \"b\"\\#\t");
    y = af_ds_index_yaml(&ix);
    assert_non_null(strstr(y, "- kind: \"My Kind\"\n"));
    assert_non_null(strstr(y, "  - name: \"yes\"\n"));
    assert_non_null(strstr(y, "  - name: \"a: \\\"b\\\"\\\\#\\x09\"\n"));
    char *doc = malloc(strlen(y) + 16);
    sprintf(doc, "indexes:\n%s", y);
    struct af_index_yaml *back = NULL;
    char err[256];
    assert_int_equal(af_index_yaml_parse("index.yaml", doc, strlen(doc), &back, err, sizeof(err)),
                     0);
    assert_int_equal(back->n, 1);
    assert_true(af_ds_index_equal(&back->indexes[0], &ix));
    af_index_yaml_free(back);
    free(doc);
    free(y);
    /* YAML's Unicode line breaks (NEL, LINE and PARAGRAPH SEPARATOR) are
     * escaped: raw, inside quotes, they read back as spaces. */
    free(ix.props[1].name);
    ix.props[1].name = strdup("a\xc2\x85" "b\xe2\x80\xa8" "c\xe2\x80\xa9" "d\xc3\xa9");
    y = af_ds_index_yaml(&ix);
    assert_non_null(strstr(y, "  - name: \"a\\Nb\\Lc\\Pd\xc3\xa9\"\n"));
    doc = malloc(strlen(y) + 16);
    sprintf(doc, "indexes:\n%s", y);
    back = NULL;
    assert_int_equal(af_index_yaml_parse("index.yaml", doc, strlen(doc), &back, err, sizeof(err)),
                     0);
    assert_true(af_ds_index_equal(&back->indexes[0], &ix));
    af_index_yaml_free(back);
    free(doc);
    free(y);
    af_ds_index_release(&ix);
}

/* ---- index.yaml --------------------------------------------------------- */

static const char good_yaml[] = "indexes:\n"
                                "\n"
                                "# by hand\n"
                                "- kind: Foo\n"
                                "  ancestor: yes\n"
                                "  properties:\n"
                                "  - name: a\n"
                                "  - name: b\n"
                                "    direction: desc\n"
                                "- kind: Bar\n"
                                "  ancestor: no\n"
                                "  properties:\n"
                                "  - name: x\n"
                                "    direction: asc\n"
                                "\n"
                                "# AUTOGENERATED\n"
                                "\n"
                                "- kind: Baz\n"
                                "  properties:\n"
                                "  - name: c\n"
                                "  - name: d\n";

static void test_load_good(void **unused)
{
    struct af_index_yaml *y = NULL;
    char err[256];
    assert_int_equal(
        af_index_yaml_parse("index.yaml", good_yaml, strlen(good_yaml), &y, err, sizeof(err)), 0);
    assert_int_equal(y->n, 3);
    assert_int_equal(y->n_manual, 2);
    assert_true(y->marker);
    char *t = index_text(&y->indexes[0]);
    assert_string_equal(t, "Foo anc: a -b");
    free(t);
    t = index_text(&y->indexes[1]);
    assert_string_equal(t, "Bar: x");
    free(t);
    t = index_text(&y->indexes[2]);
    assert_string_equal(t, "Baz: c d");
    free(t);
    assert_int_equal(y->indexes[2].line, 18);
    struct af_index_yaml *c = af_index_yaml_copy(y);
    af_index_yaml_free(y);
    assert_int_equal(c->n, 3);
    assert_string_equal(c->indexes[2].props[1].name, "d");
    af_index_yaml_free(c);

    /* Empty files, an empty list, no marker. */
    static const char *const empties[] = {"", "indexes:\n", "indexes: []\n", "# nothing\n",
                                          "indexes: ~\n"};
    for (size_t i = 0; i < sizeof(empties) / sizeof(empties[0]); i++) {
        assert_int_equal(
            af_index_yaml_parse("index.yaml", empties[i], strlen(empties[i]), &y, err, sizeof(err)),
            0);
        assert_int_equal(y->n, 0);
        assert_false(y->marker);
        af_index_yaml_free(y);
    }
    const char nomark[] = "indexes:\n- kind: A\n  properties:\n  - name: p\n";
    assert_int_equal(
        af_index_yaml_parse("index.yaml", nomark, strlen(nomark), &y, err, sizeof(err)), 0);
    assert_int_equal(y->n, 1);
    assert_int_equal(y->n_manual, 1);
    assert_false(y->marker);
    af_index_yaml_free(y);
}

static void expect_bad(const char *text, const char *want)
{
    struct af_index_yaml *y = (void *)1;
    char err[512];
    assert_int_equal(af_index_yaml_parse("index.yaml", text, strlen(text), &y, err, sizeof(err)),
                     -1);
    assert_null(y);
    if (!strstr(err, want))
        fail_msg("for %s\nwant '%s' in '%s'", text, want, err);
    assert_null(strchr(err, '\n'));
}

static void test_load_bad(void **unused)
{
    expect_bad("indexes:\n- kind: Foo\n  ancestor: maybe\n",
               "index.yaml:3:13: ancestor: 'maybe' is neither yes nor no");
    expect_bad("indexes:\n- kind: Foo\n  properties:\n  - name: a\n    direction: up\n",
               "index.yaml:5:16: direction: 'up' is neither asc nor desc");
    expect_bad("indexes:\n- ancestor: yes\n", "index.yaml:2:3: an index needs a kind");
    expect_bad("indexes:\n- kind: Foo\n  properties:\n  - direction: desc\n",
               "index.yaml:4:5: a property needs a name");
    expect_bad("indexes:\n- kind: Foo\n  properties: a\n",
               "index.yaml:3:15: properties: expected a list");
    expect_bad("indexes:\n- kind: [A, B]\n", "index.yaml:2:9: kind: expected a single value");
    expect_bad("indexes:\n- kind: \"\"\n", "index.yaml:2:9: kind: must not be empty");
    expect_bad("indexes: 5\n", "index.yaml:1:10: indexes: expected a list");
    expect_bad("indexes:\n- Foo\n", "index.yaml:2:3: an index: expected a mapping");
    expect_bad("- kind: Foo\n", "index.yaml:1:1: index.yaml: expected a mapping");
    expect_bad("indexes: [unclosed\n", "index.yaml:2:1:");
    expect_bad("indexes:\n- kind: Foo\n\tproperties:\n", "index.yaml:3:");
    expect_bad("indexes:\n- kind: \"a\\nb\"\n  ancestor: \"x\\ry\"\n", "'x?y'");
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void spit(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void rm_rf(const char *dir)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_write(void **unused)
{
    char dir[] = "/tmp/af-index-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], err[512];
    snprintf(path, sizeof(path), "%s/index.yaml", dir);

    /* No file: load_dir says so; writing creates it with the marker. */
    struct af_index_yaml *y = NULL;
    assert_int_equal(af_index_yaml_load_dir(dir, &y, err, sizeof(err)), 0);
    assert_false(y->exists);
    assert_string_equal(y->path, path);
    af_index_yaml_free(y);
    struct af_ds_index gen[2];
    index_parse(&gen[0], "Foo: a -b");
    index_parse(&gen[1], "Bar anc: c");
    assert_int_equal(af_index_yaml_write(path, gen, 1, err, sizeof(err)), 1);
    char *text = slurp(path);
    assert_non_null(text);
    assert_int_equal(strncmp(text, "indexes:\n\n# AUTOGENERATED\n", 26), 0);
    assert_non_null(strstr(text, "\n- kind: Foo\n  properties:\n  - name: a\n  - name: b\n"
                                 "    direction: desc\n"));
    free(text);
    assert_int_equal(af_index_yaml_load_dir(dir, &y, err, sizeof(err)), 0);
    assert_true(y->exists && y->marker);
    assert_int_equal(y->n, 1);
    assert_int_equal(y->n_manual, 0);
    af_index_yaml_free(y);

    /* A manual section stays byte for byte; the generated one is replaced. */
    spit(path, good_yaml);
    assert_int_equal(af_index_yaml_write(path, gen, 2, err, sizeof(err)), 1);
    text = slurp(path);
    const char *mark = strstr(good_yaml, "# AUTOGENERATED");
    assert_int_equal(strncmp(text, good_yaml, (size_t)(mark - good_yaml) + 15), 0);
    assert_null(strstr(text, "Baz"));
    assert_non_null(strstr(text, "- kind: Bar\n  ancestor: yes\n"));
    free(text);
    assert_int_equal(af_index_yaml_load_dir(dir, &y, err, sizeof(err)), 0);
    assert_int_equal(y->n, 4);
    assert_int_equal(y->n_manual, 2);
    af_index_yaml_free(y);

    /* An index moved above the marker is not written again below it. */
    char moved[1024];
    snprintf(moved, sizeof(moved),
             "indexes:\n- kind: Foo\n  properties:\n  - name: a\n  - name: b\n"
             "    direction: desc\n%s\n",
             AF_INDEX_YAML_MARKER);
    spit(path, moved);
    assert_int_equal(af_index_yaml_write(path, gen, 2, err, sizeof(err)), 1);
    assert_int_equal(af_index_yaml_load_dir(dir, &y, err, sizeof(err)), 0);
    assert_int_equal(y->n, 2);
    assert_int_equal(y->n_manual, 1);
    assert_string_equal(y->indexes[1].kind, "Bar");
    af_index_yaml_free(y);

    /* Without the marker the file is left alone. */
    const char nomark[] = "indexes:\n- kind: A\n  properties:\n  - name: p\n";
    spit(path, nomark);
    assert_int_equal(af_index_yaml_write(path, gen, 2, err, sizeof(err)), 0);
    text = slurp(path);
    assert_string_equal(text, nomark);
    free(text);

    /* A manual section the items cannot continue: not rewritten. */
    const char flow[] = "indexes: [{kind: A}]\n# AUTOGENERATED\n";
    spit(path, flow);
    assert_int_equal(af_index_yaml_write(path, gen, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not rewritten"));
    text = slurp(path);
    assert_string_equal(text, flow);
    free(text);

    /* A symbolic link stays one; the file it names gets the text. */
    char real[160];
    snprintf(real, sizeof(real), "%s/shared-index.yaml", dir);
    spit(real, "indexes:\n# AUTOGENERATED\n");
    unlink(path);
    assert_int_equal(symlink("shared-index.yaml", path), 0);
    assert_int_equal(af_index_yaml_write(path, gen, 1, err, sizeof(err)), 1);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    text = slurp(real);
    assert_non_null(strstr(text, "- kind: Foo\n"));
    free(text);
    unlink(path);

    /* A directory that cannot be written: an error, no file left over
     * (/proc/self refuses new files even to root). */
    assert_int_equal(af_index_yaml_write("/proc/self/index.yaml", gen, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "/proc/self/index.yaml"));
    if (geteuid() != 0) {
        unlink(path);
        assert_int_equal(chmod(dir, 0500), 0);
        assert_int_equal(af_index_yaml_write(path, gen, 1, err, sizeof(err)), -1);
        assert_non_null(strstr(err, path));
        assert_int_equal(chmod(dir, 0700), 0);
    }
    af_ds_index_release(&gen[0]);
    af_ds_index_release(&gen[1]);
    rm_rf(dir);
}

/* ---- the service -------------------------------------------------------- */

struct svc {
    char dir[64];
    char db[128];
    char yaml[128];
    void *ds;
};

static void svc_start(struct svc *v, bool require)
{
    char err[256];
    struct af_index_yaml *y = NULL;
    assert_int_equal(af_index_yaml_load_dir(v->dir, &y, err, sizeof(err)), 0);
    struct af_api_options o = {.datastore_path = v->db, .indexes = y, .require_indexes = require};
    v->ds = af_service_datastore_v3.create(&o);
    af_index_yaml_free(y); /* the service keeps its own copy */
}

static struct af_result run_query(void *ds, const char *spec)
{
    struct spec_query s;
    spec_parse(&s, spec);
    size_t n;
    uint8_t *req = af_ds_wire_pack(&s.q.base, &n);
    struct af_result res;
    memset(&res, 0, sizeof(res));
    struct af_call c = {"datastore_v3", "RunQuery", req, n, "", 0};
    for (const struct af_method *m = af_service_datastore_v3.methods; m->name; m++)
        if (strcmp(m->name, "RunQuery") == 0)
            m->fn(ds, &c, &res);
    free(req);
    return res;
}

static void result_free(struct af_result *res)
{
    free(res->detail);
    free(res->response);
}

static void test_service(void **unused)
{
    struct svc v;
    snprintf(v.dir, sizeof(v.dir), "/tmp/af-index-svc-XXXXXX");
    assert_non_null(mkdtemp(v.dir));
    snprintf(v.db, sizeof(v.db), "%s/ds.sqlite3", v.dir);
    snprintf(v.yaml, sizeof(v.yaml), "%s/index.yaml", v.dir);

    /* --require_indexes without index.yaml: NEED_INDEX with the index to
     * add, and no file written. */
    svc_start(&v, true);
    struct af_result res = run_query(v.ds, "Foo a= -b");
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, NEED_INDEX);
    assert_string_equal(res.detail, "no matching index found. The suggested index for this query "
                                    "is:\n- kind: Foo\n  properties:\n  - name: a\n  - name: b\n"
                                    "    direction: desc\n");
    result_free(&res);
    res = run_query(v.ds, "Foo a= b="); /* merge join: no index needed */
    assert_int_equal(res.kind, AF_RESULT_OK);
    result_free(&res);
    assert_int_equal(access(v.yaml, F_OK), -1);
    af_service_datastore_v3.destroy(v.ds);

    /* Without it: the query runs and index.yaml gets the index, once. */
    svc_start(&v, false);
    for (int i = 0; i < 3; i++) {
        res = run_query(v.ds, "Foo a= -b");
        assert_int_equal(res.kind, AF_RESULT_OK);
        result_free(&res);
    }
    res = run_query(v.ds, "Foo anc -c");
    assert_int_equal(res.kind, AF_RESULT_OK);
    result_free(&res);
    af_service_datastore_v3.destroy(v.ds);
    char *text = slurp(v.yaml);
    assert_non_null(text);
    const char *first = strstr(text, "- kind: Foo\n  properties:\n  - name: a\n");
    assert_non_null(first);
    assert_null(strstr(first + 1, "- kind: Foo\n  properties:\n  - name: a\n"));
    assert_non_null(strstr(text, "- kind: Foo\n  ancestor: yes\n  properties:\n  - name: c\n"
                                 "    direction: desc\n"));
    free(text);

    /* With the index listed (here in the generated section), it passes. */
    svc_start(&v, true);
    res = run_query(v.ds, "Foo a= -b");
    assert_int_equal(res.kind, AF_RESULT_OK);
    result_free(&res);
    res = run_query(v.ds, "Foo a= +b");
    assert_int_equal(res.code, NEED_INDEX);
    result_free(&res);
    /* An index added to the file while running counts at once; a bad
     * edit keeps what was read before. */
    spit(v.yaml, "indexes:\n- kind: Foo\n  properties:\n  - name: a\n  - name: b\n");
    res = run_query(v.ds, "Foo a= +b");
    assert_int_equal(res.kind, AF_RESULT_OK);
    result_free(&res);
    res = run_query(v.ds, "Foo a= -b"); /* no longer listed */
    assert_int_equal(res.code, NEED_INDEX);
    result_free(&res);
    spit(v.yaml, "indexes:\n- kind: Foo\n  ancestor: maybe\n");
    res = run_query(v.ds, "Foo -x +y"); /* unknown: the file is read again */
    assert_int_equal(res.code, NEED_INDEX);
    result_free(&res);
    res = run_query(v.ds, "Foo a= +b");
    assert_int_equal(res.kind, AF_RESULT_OK);
    result_free(&res);
    unlink(v.yaml);
    res = run_query(v.ds, "Foo -x +y");
    assert_int_equal(res.code, NEED_INDEX);
    result_free(&res);
    res = run_query(v.ds, "Foo a= +b");
    assert_int_equal(res.code, NEED_INDEX);
    result_free(&res);
    af_service_datastore_v3.destroy(v.ds);

    /* No app directory (appfront api): nothing to write, queries run. */
    struct af_api_options o = {.datastore_path = v.db};
    v.ds = af_service_datastore_v3.create(&o);
    res = run_query(v.ds, "Foo -x +y");
    assert_int_equal(res.kind, AF_RESULT_OK);
    result_free(&res);
    af_service_datastore_v3.destroy(v.ds);
    rm_rf(v.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules),          cmocka_unit_test(test_matching),
        cmocka_unit_test(test_merged_indexes), cmocka_unit_test(test_index_yaml_text),
        cmocka_unit_test(test_load_good),      cmocka_unit_test(test_load_bad),
        cmocka_unit_test(test_write),          cmocka_unit_test(test_service),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
