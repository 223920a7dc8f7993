/*
 * appyaml — app.yaml loaded with libyaml into struct af_app_yaml.
 *
 * Two passes. The first turns libyaml's event stream into a small tree of
 * scalars, lists and mappings that remembers where each node starts, so every
 * later message can say PATH:LINE:COLUMN. The second walks that tree with one
 * table of fields per mapping kind (top level, handler, error handler,
 * scaling blocks): a key is looked up in the table and its value handed to the
 * field's parser. Adding an app.yaml key is adding a table row.
 *
 * Aliases ("*name") are refused. dev_appserver refuses them too, and refusing
 * them keeps the work proportional to the file size: an alias can repeat a
 * large subtree any number of times for the price of a few bytes.
 */
#include "proxy/appyaml.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/cfgerr.h"
#include "common/log.h"
#include "common/readfile.h"
#include "common/xalloc.h"
#include "proxy/yamlerr.h"

/* app.yaml files are a few kilobytes; a megabyte is a mistake or an attack. */
#define MAX_FILE_BYTES (1024 * 1024)
/* The schema nests four levels deep; anything much deeper is not app.yaml,
 * and the bound keeps the tree walk's recursion shallow. */
#define MAX_DEPTH 32
/* How much of an offending value a message quotes. */
#define MAX_QUOTE 60

/* dev_appserver's default skip_files, one expression per entry: Emacs
 * autosave (#x#) and backup (x~) files, compiled Python, RCS directories and
 * dot-files, each in any directory. */
static const char *const default_skip_files[] = {
    "^(.*/)?#.*#$", "^(.*/)?.*~$", "^(.*/)?.*\\.py[co]$", "^(.*/)?.*/RCS/.*$", "^(.*/)?\\..*$",
};

/* ---- the tree --------------------------------------------------------- */

enum node_kind { NODE_SCALAR, NODE_SEQ, NODE_MAP };

struct node {
    enum node_kind kind;
    int line, col; /* 1-based */
    char *text;    /* NODE_SCALAR: NUL-terminated, no NUL inside */
    bool plain;    /* NODE_SCALAR: unquoted and untagged, so it may mean null */
    /* NODE_SEQ: the items; NODE_MAP: key, value, key, value, ... */
    struct node **items;
    size_t n, cap;
};

static void node_free(struct node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n; i++)
        node_free(n->items[i]);
    free(n->items);
    free(n->text);
    free(n);
}

static void node_append(struct node *parent, struct node *child)
{
    if (parent->n == parent->cap) {
        parent->cap = parent->cap ? parent->cap * 2 : 8;
        parent->items = af_xrealloc(parent->items, parent->cap * sizeof(parent->items[0]));
    }
    parent->items[parent->n++] = child;
}

/* YAML 1.1 spells null as an empty plain scalar, "~" or "null". */
static bool node_is_null(const struct node *n)
{
    static const char *const null_words[] = {"", "~", "null", "Null", "NULL"};
    if (n->kind != NODE_SCALAR || !n->plain)
        return false;
    for (size_t i = 0; i < sizeof(null_words) / sizeof(null_words[0]); i++) {
        if (strcmp(n->text, null_words[i]) == 0)
            return true;
    }
    return false;
}

/* ---- errors ----------------------------------------------------------- */

struct ctx {
    const char *name; /* the file as named in messages */
    char *err;
    size_t errlen;
    struct af_app_yaml *app;
    const struct node *key;         /* the key whose value is being parsed */
    const struct node *scaling_key; /* the first *_scaling key, to refuse a second */
};

static int failf(struct ctx *c, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int failf(struct ctx *c, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    af_cfg_errorv(c->err, c->errlen, c->name, line, col, fmt, ap);
    va_end(ap);
    return -1;
}

#define fail_at(c, node, ...) failf((c), (node)->line, (node)->col, __VA_ARGS__)

/* "'value'" for a scalar (shortened, control characters shown as '?'),
 * "a mapping" or "a list" otherwise: the "got ..." part of a message. */
static const char *describe(const struct node *n, char *buf, size_t len)
{
    if (n->kind == NODE_MAP)
        return "a mapping";
    if (n->kind == NODE_SEQ)
        return "a list";
    size_t tlen = strlen(n->text);
    bool cut = tlen > MAX_QUOTE;
    if (cut)
        tlen = MAX_QUOTE;
    snprintf(buf, len, "'%.*s%s'", (int)tlen, n->text, cut ? "..." : "");
    for (char *p = buf; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    }
    return buf;
}

static int fail_expected(struct ctx *c, const char *key, const struct node *val,
                         const char *expected)
{
    char buf[MAX_QUOTE + 8];
    return fail_at(c, val, "%s: expected %s, got %s", key, expected,
                   describe(val, buf, sizeof(buf)));
}

static int yaml_fail(struct ctx *c, const yaml_parser_t *p, const char *text, size_t len)
{
    int line, col;
    char msg[512];
    af_yaml_error(p, text, len, &line, &col, msg, sizeof(msg));
    return failf(c, line, col, "%s", msg);
}

/* ---- pass 1: events to tree ------------------------------------------ */

static struct node *node_new(enum node_kind kind, const yaml_mark_t *mark)
{
    struct node *n = af_xcalloc(1, sizeof(*n));
    n->kind = kind;
    n->line = (int)mark->line + 1;
    n->col = (int)mark->column + 1;
    return n;
}

/* Builds the tree of the single document in text. Returns 0 with *root set
 * (NULL for a file without a document), or -1 with the error written. */
static int build_tree(struct ctx *c, const char *text, size_t len, struct node **root)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    struct node *stack[MAX_DEPTH];
    int depth = 0;
    int documents = 0;
    int rc = -1;
    bool done = false;

    *root = NULL;
    if (!yaml_parser_initialize(&parser))
        return failf(c, 0, 0, "out of memory while parsing YAML");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);

    while (!done) {
        if (!yaml_parser_parse(&parser, &ev)) {
            yaml_fail(c, &parser, text, len);
            goto out;
        }
        struct node *n = NULL;
        bool opens = false;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++documents > 1) {
                failf(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                      "only one YAML document is allowed in app.yaml");
                goto out_event;
            }
            break;
        case YAML_ALIAS_EVENT:
            failf(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                  "YAML aliases (*%s) are not supported in app.yaml",
                  (const char *)ev.data.alias.anchor);
            goto out_event;
        case YAML_SCALAR_EVENT: {
            const char *v = (const char *)ev.data.scalar.value;
            size_t vlen = ev.data.scalar.length;
            if (memchr(v, '\0', vlen)) {
                failf(c, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                      "a NUL character is not allowed in a value");
                goto out_event;
            }
            n = node_new(NODE_SCALAR, &ev.start_mark);
            n->text = af_xstrndup(v, vlen);
            n->plain =
                ev.data.scalar.plain_implicit && ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
            break;
        }
        case YAML_SEQUENCE_START_EVENT:
            n = node_new(NODE_SEQ, &ev.start_mark);
            opens = true;
            break;
        case YAML_MAPPING_START_EVENT:
            n = node_new(NODE_MAP, &ev.start_mark);
            opens = true;
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            depth--;
            break;
        default:
            break;
        }
        if (n) {
            if (depth > 0)
                node_append(stack[depth - 1], n);
            else
                *root = n;
            if (opens) {
                if (depth == MAX_DEPTH) {
                    failf(c, n->line, n->col, "nested deeper than %d levels", MAX_DEPTH);
                    goto out_event;
                }
                stack[depth++] = n;
            }
        }
        yaml_event_delete(&ev);
    }
    rc = 0;
    goto out;

out_event:
    yaml_event_delete(&ev);
out:
    yaml_parser_delete(&parser);
    if (rc != 0) {
        node_free(*root);
        *root = NULL;
    }
    return rc;
}

/* ---- pass 2: tables of fields ---------------------------------------- */

struct field;
typedef int (*parse_fn)(struct ctx *c, const struct field *f, const struct node *val, void *obj);

struct choice {
    const char *name;
    int value;
};

struct field {
    const char *key;
    parse_fn parse;               /* NULL: a known key appfront does not use, ignored */
    size_t offset;                /* where the value lands in obj */
    const char *same_as;          /* another spelling of this key ("project" of "application") */
    const struct choice *choices; /* NULL-name-terminated */
    long long min, max;           /* integers */
    int aux;                      /* parser-specific: the scaling kind */
    bool nonempty;                /* strings: "" is refused */
    bool regex;                   /* strings: must compile as a regular expression */
    bool static_only;             /* handlers: no effect on a script handler */
};

/* Walks a mapping against a table; seen[i] gets the key node of field i (or
 * of the field it is the same_as of). Unknown keys are warnings. */
static int walk_map(struct ctx *c, const char *what, const struct node *map,
                    const struct field *fields, size_t n_fields, void *obj,
                    const struct node **seen);

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static int compile_check(struct ctx *c, const struct node *val)
{
    int code;
    PCRE2_SIZE offset;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)val->text, PCRE2_ZERO_TERMINATED,
                                   AF_APPYAML_PCRE2_OPTIONS, &code, &offset, NULL);
    if (re) {
        pcre2_code_free(re);
        return 0;
    }
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(code, msg, sizeof(msg));
    char buf[MAX_QUOTE + 8];
    /* describe() already quotes the expression. */
    return fail_at(c, val, "bad regular expression %s: %s at offset %zu",
                   describe(val, buf, sizeof(buf)), (const char *)msg, (size_t)offset);
}

static int parse_string(struct ctx *c, const struct field *f, const struct node *val, void *obj)
{
    if (val->kind != NODE_SCALAR)
        return fail_expected(c, f->key, val, "a string");
    if (f->nonempty && val->text[0] == '\0')
        return fail_expected(c, f->key, val, "a non-empty string");
    if (f->regex && compile_check(c, val) != 0)
        return -1;
    char **slot = (char **)((char *)obj + f->offset);
    free(*slot); /* a default such as service "default" */
    *slot = af_xstrdup(val->text);
    return 0;
}

bool af_app_id_ok(const char *s)
{
    const char *colon = strchr(s, ':');
    if (colon) {
        size_t n = (size_t)(colon - s);
        if (n == 0 || n > 100 || s[0] == '-' ||
            strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-.") != n)
            return false;
        s = colon + 1;
    }
    size_t n = strlen(s);
    return n >= 1 && n <= 100 && s[0] != '-' && s[n - 1] != '-' &&
           strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

/* application / project: an id as af_app_id_ok spells it, after an optional
 * partition ("s~", "e~"), which is dropped: appfront serves the app as
 * "dev~ID" whatever partition production used. */
static int parse_app_id(struct ctx *c, const struct field *f, const struct node *val, void *obj)
{
    if (val->kind != NODE_SCALAR)
        return fail_expected(c, f->key, val, "a string");
    const char *id = val->text;
    const char *tilde = strchr(id, '~');
    if (tilde && tilde > id && tilde - id <= 100 &&
        strspn(id, "abcdefghijklmnopqrstuvwxyz0123456789-") == (size_t)(tilde - id))
        id = tilde + 1;
    if (!af_app_id_ok(id)) {
        char buf[MAX_QUOTE + 8];
        return fail_at(c, val,
                       "%s: %s is not an application id (1-100 lower-case letters, digits and "
                       "hyphens, neither first nor last a hyphen, optionally after DOMAIN: "
                       "and a PARTITION~)",
                       f->key, describe(val, buf, sizeof(buf)));
    }
    char **slot = (char **)((char *)obj + f->offset);
    free(*slot);
    *slot = af_xstrdup(id);
    return 0;
}

static const struct choice bool_words[] = {
    {"true", 1}, {"yes", 1}, {"on", 1}, {"false", 0}, {"no", 0}, {"off", 0}, {NULL, 0},
};

static int parse_bool(struct ctx *c, const struct field *f, const struct node *val, void *obj)
{
    if (val->kind == NODE_SCALAR) {
        for (const struct choice *w = bool_words; w->name; w++) {
            if (strcasecmp(val->text, w->name) == 0) {
                *(bool *)((char *)obj + f->offset) = w->value;
                return 0;
            }
        }
    }
    return fail_expected(c, f->key, val, "true or false");
}

static int parse_threadsafe(struct ctx *c, const struct field *f, const struct node *val, void *obj)
{
    if (parse_bool(c, f, val, obj) != 0)
        return -1;
    ((struct af_app_yaml *)obj)->threadsafe_set = true;
    return 0;
}

/* Plain decimal only: "10", not "1e1", "0x0a" or " 10". */
static bool scalar_to_ll(const struct node *val, long long *out)
{
    if (val->kind != NODE_SCALAR)
        return false;
    const char *s = val->text;
    bool neg = *s == '-';
    if (neg)
        s++;
    if (!(*s >= '0' && *s <= '9'))
        return false;
    long long v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (v > (LLONG_MAX - (*s - '0')) / 10)
            return false;
        v = v * 10 + (*s - '0');
    }
    if (*s != '\0')
        return false;
    *out = neg ? -v : v;
    return true;
}

static int parse_int(struct ctx *c, const struct field *f, const struct node *val, void *obj)
{
    long long v;
    if (!scalar_to_ll(val, &v) || v < f->min || v > f->max) {
        char expected[80];
        if (f->max == INT_MAX)
            snprintf(expected, sizeof(expected), "an integer >= %lld", f->min);
        else
            snprintf(expected, sizeof(expected), "an integer from %lld to %lld", f->min, f->max);
        return fail_expected(c, f->key, val, expected);
    }
    *(int *)((char *)obj + f->offset) = (int)v;
    return 0;
}

/* The enums written through here are plain int-sized C enums. */
_Static_assert(sizeof(enum af_login) == sizeof(int), "enum af_login is int-sized");
_Static_assert(sizeof(enum af_auth_fail) == sizeof(int), "enum af_auth_fail is int-sized");
_Static_assert(sizeof(enum af_secure) == sizeof(int), "enum af_secure is int-sized");

static int parse_choice(struct ctx *c, const struct field *f, const struct node *val, void *obj)
{
    if (val->kind == NODE_SCALAR) {
        for (const struct choice *ch = f->choices; ch->name; ch++) {
            if (strcmp(val->text, ch->name) == 0) {
                *(int *)((char *)obj + f->offset) = ch->value;
                return 0;
            }
        }
    }
    char expected[160] = "one of ";
    size_t off = strlen(expected);
    for (const struct choice *ch = f->choices; ch->name && off < sizeof(expected); ch++)
        off += (size_t)snprintf(expected + off, sizeof(expected) - off, "%s%s",
                                ch == f->choices ? "" : ", ", ch->name);
    return fail_expected(c, f->key, val, expected);
}

static const struct {
    char unit;
    long long seconds;
} expiration_units[] = {{'d', 86400}, {'h', 3600}, {'m', 60}, {'s', 1}};

int af_expiration_parse(const char *s, long long *seconds)
{
    long long total = 0;
    int groups = 0;
    for (;;) {
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == '\0')
            break;
        if (!(*s >= '0' && *s <= '9'))
            return -1;
        long long v = 0;
        for (; *s >= '0' && *s <= '9'; s++) {
            v = v * 10 + (*s - '0');
            /* A century is far beyond any meaningful cache lifetime. */
            if (v > 100LL * 366 * 86400)
                return -1;
        }
        long long unit = 0;
        for (size_t i = 0; i < N_OF(expiration_units); i++) {
            if (*s == expiration_units[i].unit)
                unit = expiration_units[i].seconds;
        }
        if (unit == 0)
            return -1;
        s++;
        total += v * unit;
        if (total > 100LL * 366 * 86400)
            return -1;
        groups++;
    }
    if (groups == 0)
        return -1;
    *seconds = total;
    return 0;
}

static int parse_expiration(struct ctx *c, const struct field *f, const struct node *val, void *obj)
{
    long long secs;
    if (val->kind != NODE_SCALAR || af_expiration_parse(val->text, &secs) != 0)
        return fail_expected(c, f->key, val, "a duration such as '4d 5h 30m 15s'");
    return parse_string(c, f, val, obj);
}

/* App Engine's own check of idle_timeout (appinfo's ^[\d]+(s|m)$) takes
 * one number and one unit; the hour is accepted here too, with a warning
 * (parse_idle_timeout), because "1h" reads naturally and means one thing. */
int af_idle_timeout_parse(const char *s, int *seconds)
{
    long long v = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (*p - '0');
        if (v > AF_IDLE_TIMEOUT_MAX_S)
            return -1;
    }
    if (p == s || *p == '\0' || p[1] != '\0')
        return -1;
    long long unit = *p == 's' ? 1 : *p == 'm' ? 60 : *p == 'h' ? 3600 : 0;
    if (unit == 0 || v == 0 || v * unit > AF_IDLE_TIMEOUT_MAX_S)
        return -1;
    *seconds = (int)(v * unit);
    return 0;
}

static int parse_idle_timeout(struct ctx *c, const struct field *f, const struct node *val,
                              void *obj)
{
    int secs;
    if (val->kind != NODE_SCALAR || af_idle_timeout_parse(val->text, &secs) != 0)
        return fail_expected(c, f->key, val,
                             "a duration of digits and one unit, s, m or h, such as '10s' or "
                             "'5m' (at least 1s, at most a year)");
    if (val->text[strlen(val->text) - 1] == 'h')
        af_cfg_warn(c->name, val->line, val->col,
                    "%s: App Engine's deployment accepts only seconds and minutes: write '%dm'",
                    f->key, secs / 60);
    *(int *)((char *)obj + f->offset) = secs;
    return 0;
}

/* min_idle_instances, max_idle_instances: a count or "automatic" (stored
 * as -1), as App Engine's ^([\d]+|automatic)$. */
static int parse_idle_instances(struct ctx *c, const struct field *f, const struct node *val,
                                void *obj)
{
    long long v;
    int *slot = (int *)((char *)obj + f->offset);
    if (val->kind == NODE_SCALAR && strcmp(val->text, "automatic") == 0) {
        *slot = -1;
        return 0;
    }
    if (!scalar_to_ll(val, &v) || v < 0 || v > INT_MAX)
        return fail_expected(c, f->key, val, "an integer >= 0 or 'automatic'");
    *slot = (int)v;
    return 0;
}

/* RFC 9110 section 5.6.2: a field name is a token. */
static bool is_token(const char *s)
{
    static const char tchar_punct[] = "!#$%&'*+-.^_`|~";
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool alnum = (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z');
        if (!alnum && !strchr(tchar_punct, ch))
            return false;
    }
    return true;
}

/* Reads a mapping of scalar to scalar into an array of af_header_kv. A null
 * value reads as "", since dev_appserver would pass an empty variable. */
static int parse_kv_map(struct ctx *c, const char *key, const struct node *map, bool http,
                        struct af_header_kv **out, size_t *n_out)
{
    if (map->kind != NODE_MAP)
        return fail_expected(c, key, map, "a mapping");
    size_t pairs = map->n / 2;
    *out = af_xcalloc(pairs, sizeof(**out));
    for (size_t i = 0; i < pairs; i++) {
        const struct node *k = map->items[2 * i], *v = map->items[2 * i + 1];
        if (k->kind != NODE_SCALAR || k->text[0] == '\0')
            return fail_expected(c, key, k, "a non-empty name");
        if (http && !is_token(k->text))
            return fail_expected(c, key, k, "an HTTP header name");
        if (!http && strchr(k->text, '='))
            return fail_expected(c, key, k, "a variable name without '='");
        if (v->kind != NODE_SCALAR)
            return fail_expected(c, k->text, v, "a string");
        /* A line break in a header value would let app.yaml inject headers. */
        if (http && strpbrk(v->text, "\r\n"))
            return fail_expected(c, k->text, v, "a header value on one line");
        for (size_t j = 0; j < i; j++) {
            if (http ? strcasecmp((*out)[j].name, k->text) == 0
                     : strcmp((*out)[j].name, k->text) == 0)
                return fail_at(c, k, "%s: '%s' given twice", key, k->text);
        }
        (*out)[i].name = af_xstrdup(k->text);
        (*out)[i].value = af_xstrdup(node_is_null(v) ? "" : v->text);
        (*n_out)++;
    }
    return 0;
}

static int parse_env_variables(struct ctx *c, const struct field *f, const struct node *val,
                               void *obj)
{
    struct af_app_yaml *app = obj;
    return parse_kv_map(c, f->key, val, false, &app->env_variables, &app->n_env_variables);
}

static int parse_http_headers(struct ctx *c, const struct field *f, const struct node *val,
                              void *obj)
{
    struct af_handler *h = obj;
    return parse_kv_map(c, f->key, val, true, &h->http_headers, &h->n_http_headers);
}

static void free_skip_files(struct af_app_yaml *app)
{
    for (size_t i = 0; i < app->n_skip_files; i++)
        free(app->skip_files[i]);
    free(app->skip_files);
    app->skip_files = NULL;
    app->n_skip_files = 0;
}

/* A single expression or a list of them; either replaces the default. */
static int parse_skip_files(struct ctx *c, const struct field *f, const struct node *val, void *obj)
{
    struct af_app_yaml *app = obj;
    const struct node *const *items = (const struct node *const *)val->items;
    size_t n = val->n;
    if (val->kind == NODE_SCALAR) {
        items = &val;
        n = 1;
    } else if (val->kind != NODE_SEQ) {
        return fail_expected(c, f->key, val, "a regular expression or a list of them");
    }
    free_skip_files(app);
    app->skip_files = af_xcalloc(n, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        if (items[i]->kind != NODE_SCALAR)
            return fail_expected(c, f->key, items[i], "a regular expression");
        if (compile_check(c, items[i]) != 0)
            return -1;
        app->skip_files[app->n_skip_files++] = af_xstrdup(items[i]->text);
    }
    return 0;
}

/* inbound_services: a list of production's service names. */
static int parse_inbound_services(struct ctx *c, const struct field *f, const struct node *val,
                                  void *obj)
{
    static const char *const known[] = {"mail",           "mail_bounce",   "xmpp_message",
                                        "xmpp_presence",  "xmpp_subscribe", "xmpp_error",
                                        "channel_presence", "warmup"};
    struct af_app_yaml *app = obj;
    if (val->kind != NODE_SEQ)
        return fail_expected(c, f->key, val, "a list of services (- mail, - warmup, ...)");
    for (size_t i = 0; i < val->n; i++) {
        const struct node *it = val->items[i];
        size_t k = 0;
        while (it->kind == NODE_SCALAR && k < sizeof(known) / sizeof(known[0]) &&
               strcmp(it->text, known[k]) != 0)
            k++;
        if (it->kind != NODE_SCALAR || k == sizeof(known) / sizeof(known[0])) {
            char buf[MAX_QUOTE + 8];
            return fail_at(c, it,
                           "%s: %s is not an inbound service (mail, mail_bounce, warmup, "
                           "xmpp_message, xmpp_presence, xmpp_subscribe, xmpp_error, "
                           "channel_presence)",
                           f->key, describe(it, buf, sizeof(buf)));
        }
        if (k == 0)
            app->inbound_mail = true;
    }
    return 0;
}

static const struct choice login_choices[] = {
    {"optional", AF_LOGIN_OPTIONAL},
    {"required", AF_LOGIN_REQUIRED},
    {"admin", AF_LOGIN_ADMIN},
    {NULL, 0},
};
static const struct choice auth_fail_choices[] = {
    {"redirect", AF_AUTH_FAIL_REDIRECT},
    {"unauthorized", AF_AUTH_FAIL_UNAUTHORIZED},
    {NULL, 0},
};
static const struct choice secure_choices[] = {
    {"optional", AF_SECURE_OPTIONAL},
    {"never", AF_SECURE_NEVER},
    {"always", AF_SECURE_ALWAYS},
    {NULL, 0},
};
static const struct choice redirect_code_choices[] = {
    {"301", 301}, {"302", 302}, {"303", 303}, {"307", 307}, {NULL, 0},
};

#define H_OFF(field) offsetof(struct af_handler, field)

enum handler_field {
    HF_URL,
    HF_SCRIPT,
    HF_STATIC_DIR,
    HF_STATIC_FILES,
    HF_UPLOAD,
    HF_MIME_TYPE,
    HF_EXPIRATION,
    HF_REQUIRE_MATCHING_FILE,
    HF_APPLICATION_READABLE,
    HF_HTTP_HEADERS,
    HF_LOGIN,
    HF_AUTH_FAIL_ACTION,
    HF_SECURE,
    HF_REDIRECT_CODE,
    HF_COUNT,
};

static const struct field handler_fields[HF_COUNT] = {
    [HF_URL] = {.key = "url",
                .parse = parse_string,
                .offset = H_OFF(url),
                .nonempty = true,
                .regex = true},
    [HF_SCRIPT] = {.key = "script",
                   .parse = parse_string,
                   .offset = H_OFF(script),
                   .nonempty = true},
    [HF_STATIC_DIR] = {.key = "static_dir",
                       .parse = parse_string,
                       .offset = H_OFF(static_dir),
                       .nonempty = true},
    [HF_STATIC_FILES] = {.key = "static_files",
                         .parse = parse_string,
                         .offset = H_OFF(static_files),
                         .nonempty = true},
    [HF_UPLOAD] = {.key = "upload",
                   .parse = parse_string,
                   .offset = H_OFF(upload),
                   .nonempty = true,
                   .regex = true},
    [HF_MIME_TYPE] = {.key = "mime_type",
                      .parse = parse_string,
                      .offset = H_OFF(mime_type),
                      .nonempty = true,
                      .static_only = true},
    [HF_EXPIRATION] = {.key = "expiration",
                       .parse = parse_expiration,
                       .offset = H_OFF(expiration),
                       .static_only = true},
    [HF_REQUIRE_MATCHING_FILE] = {.key = "require_matching_file",
                                  .parse = parse_bool,
                                  .offset = H_OFF(require_matching_file),
                                  .static_only = true},
    [HF_APPLICATION_READABLE] = {.key = "application_readable",
                                 .parse = parse_bool,
                                 .offset = H_OFF(application_readable),
                                 .static_only = true},
    [HF_HTTP_HEADERS] = {.key = "http_headers", .parse = parse_http_headers, .static_only = true},
    [HF_LOGIN] = {.key = "login",
                  .parse = parse_choice,
                  .offset = H_OFF(login),
                  .choices = login_choices},
    [HF_AUTH_FAIL_ACTION] = {.key = "auth_fail_action",
                             .parse = parse_choice,
                             .offset = H_OFF(auth_fail_action),
                             .choices = auth_fail_choices},
    [HF_SECURE] = {.key = "secure",
                   .parse = parse_choice,
                   .offset = H_OFF(secure),
                   .choices = secure_choices},
    [HF_REDIRECT_CODE] = {.key = "redirect_http_response_code",
                          .parse = parse_choice,
                          .offset = H_OFF(redirect_http_response_code),
                          .choices = redirect_code_choices},
};

/* The rules that span keys of one handler, checked once all are read. */
static int check_handler(struct ctx *c, const struct node *item, struct af_handler *h,
                         const struct node **seen)
{
    int kinds = !!h->script + !!h->static_dir + !!h->static_files;
    if (!h->url)
        return fail_at(c, item, "handler: url is required");
    if (kinds == 0)
        return fail_at(c, item, "handler for '%s': needs one of script, static_dir, static_files",
                       h->url);
    if (kinds > 1)
        return fail_at(
            c, item, "handler for '%s': only one of script, static_dir, static_files may be given",
            h->url);
    if (h->static_files && !h->upload)
        return fail_at(c, item,
                       "handler for '%s': static_files needs upload (a regular expression "
                       "matching the files it may serve)",
                       h->url);
    if (h->upload && !h->static_files)
        return fail_at(c, seen[HF_UPLOAD], "upload: only valid with static_files");
    h->kind = h->script       ? AF_HANDLER_SCRIPT
              : h->static_dir ? AF_HANDLER_STATIC_DIR
                              : AF_HANDLER_STATIC_FILES;
    if (h->kind == AF_HANDLER_SCRIPT) {
        for (size_t i = 0; i < HF_COUNT; i++) {
            if (handler_fields[i].static_only && seen[i])
                af_cfg_warn(c->name, seen[i]->line, seen[i]->col,
                            "%s has no effect on a script handler", handler_fields[i].key);
        }
    }
    return 0;
}

static int parse_handlers(struct ctx *c, const struct field *f, const struct node *val, void *obj)
{
    struct af_app_yaml *app = obj;
    if (val->kind != NODE_SEQ)
        return fail_expected(c, f->key, val, "a list of handlers");
    app->handlers = af_xcalloc(val->n, sizeof(struct af_handler));
    for (size_t i = 0; i < val->n; i++) {
        const struct node *item = val->items[i];
        /* Counted before it is filled, so af_appyaml_free() releases a
         * half-read handler too. */
        struct af_handler *h = &app->handlers[app->n_handlers++];
        h->line = item->line;
        const struct node *seen[HF_COUNT] = {0};
        if (walk_map(c, "handler", item, handler_fields, HF_COUNT, h, seen) != 0 ||
            check_handler(c, item, h, seen) != 0)
            return -1;
    }
    return 0;
}

/* error_code values from the App Engine reference; "default" is the handler
 * without a code, stored as NULL. */
static const struct choice error_code_choices[] = {
    {"default", 0}, {"over_quota", 1}, {"dos_api_denial", 2}, {"timeout", 3}, {NULL, 0},
};

static int parse_error_code(struct ctx *c, const struct field *f, const struct node *val, void *obj)
{
    struct af_error_handler *eh = obj;
    int code;
    struct field tmp = *f;
    tmp.offset = 0;
    if (parse_choice(c, &tmp, val, &code) != 0)
        return -1;
    free(eh->error_code);
    eh->error_code = code == 0 ? NULL : af_xstrdup(val->text);
    return 0;
}

static const struct field error_handler_fields[] = {
    {.key = "error_code", .parse = parse_error_code, .choices = error_code_choices},
    {.key = "file",
     .parse = parse_string,
     .offset = offsetof(struct af_error_handler, file),
     .nonempty = true},
};

static int parse_error_handlers(struct ctx *c, const struct field *f, const struct node *val,
                                void *obj)
{
    struct af_app_yaml *app = obj;
    if (val->kind != NODE_SEQ)
        return fail_expected(c, f->key, val, "a list of error handlers");
    app->error_handlers = af_xcalloc(val->n, sizeof(struct af_error_handler));
    for (size_t i = 0; i < val->n; i++) {
        const struct node *item = val->items[i];
        struct af_error_handler *eh = &app->error_handlers[app->n_error_handlers++];
        const struct node *seen[N_OF(error_handler_fields)] = {0};
        if (walk_map(c, "error handler", item, error_handler_fields, N_OF(error_handler_fields), eh,
                     seen) != 0)
            return -1;
        if (!eh->file)
            return fail_at(c, item, "error handler: file is required");
        for (size_t j = 0; j < i; j++) {
            const char *a = app->error_handlers[j].error_code, *b = eh->error_code;
            if ((!a && !b) || (a && b && strcmp(a, b) == 0))
                return fail_at(c, item, "error handler: error_code '%s' given twice",
                               b ? b : "default");
        }
    }
    return 0;
}

#define A_OFF(field) offsetof(struct af_app_yaml, field)

/* The scaling keys App Engine knows but a local server has no use for are
 * listed without a parser, so they are accepted without a warning. */
static const struct field automatic_scaling_fields[] = {
    {.key = "max_concurrent_requests",
     .parse = parse_int,
     .offset = A_OFF(max_concurrent_requests),
     .min = 1,
     .max = 80},
    {.key = "max_instances",
     .parse = parse_int,
     .offset = A_OFF(max_instances),
     .min = 0,
     .max = INT_MAX},
    {.key = "min_instances",
     .parse = parse_int,
     .offset = A_OFF(min_instances),
     .min = 0,
     .max = INT_MAX},
    {.key = "min_idle_instances",
     .parse = parse_idle_instances,
     .offset = A_OFF(min_idle_instances)},
    {.key = "max_idle_instances",
     .parse = parse_idle_instances,
     .offset = A_OFF(max_idle_instances)},
    {.key = "target_cpu_utilization"},
    {.key = "target_throughput_utilization"},
    {.key = "min_pending_latency"},
    {.key = "max_pending_latency"},
};

static const struct field manual_scaling_fields[] = {
    {.key = "instances",
     .parse = parse_int,
     .offset = A_OFF(manual_instances),
     .min = 1,
     .max = INT_MAX},
};

static const struct field basic_scaling_fields[] = {
    {.key = "max_instances",
     .parse = parse_int,
     .offset = A_OFF(basic_max_instances),
     .min = 1,
     .max = INT_MAX},
    {.key = "idle_timeout",
     .parse = parse_idle_timeout,
     .offset = A_OFF(basic_idle_timeout_s)},
};

static const struct {
    const struct field *fields;
    size_t n;
    const char *required; /* a key without which the block means nothing */
} scaling_tables[] = {
    [AF_SCALING_AUTOMATIC] = {automatic_scaling_fields, N_OF(automatic_scaling_fields), NULL},
    [AF_SCALING_MANUAL] = {manual_scaling_fields, N_OF(manual_scaling_fields), "instances"},
    [AF_SCALING_BASIC] = {basic_scaling_fields, N_OF(basic_scaling_fields), "max_instances"},
};

static int parse_scaling(struct ctx *c, const struct field *f, const struct node *val, void *obj)
{
    struct af_app_yaml *app = obj;
    const struct node *key = c->key;
    if (c->scaling_key)
        return fail_at(c, key,
                       "%s: only one of automatic_scaling, manual_scaling, basic_scaling may be "
                       "given ('%s' at line %d)",
                       f->key, c->scaling_key->text, c->scaling_key->line);
    c->scaling_key = key;
    app->scaling = (enum af_scaling)f->aux;
    const struct node *seen[N_OF(automatic_scaling_fields)] = {0};
    if (walk_map(c, f->key, val, scaling_tables[f->aux].fields, scaling_tables[f->aux].n, app,
                 seen) != 0)
        return -1;
    /* The required key is the first row of its table. */
    const char *req = scaling_tables[f->aux].required;
    if (req && !seen[0])
        return fail_at(c, val, "%s: %s is required", f->key, req);
    if (app->scaling == AF_SCALING_AUTOMATIC && app->max_instances > 0 &&
        app->min_instances > app->max_instances)
        return fail_at(c, val, "%s: min_instances (%d) is above max_instances (%d)", f->key,
                       app->min_instances, app->max_instances);
    if (app->scaling == AF_SCALING_AUTOMATIC && app->min_idle_instances >= 0 &&
        app->max_idle_instances >= 0 && app->min_idle_instances > app->max_idle_instances)
        return fail_at(c, val, "%s: min_idle_instances (%d) is above max_idle_instances (%d)",
                       f->key, app->min_idle_instances, app->max_idle_instances);
    return 0;
}

static const struct field top_fields[] = {
    {.key = "application", .parse = parse_app_id, .offset = A_OFF(application)},
    {.key = "project",
     .parse = parse_app_id,
     .offset = A_OFF(application),
     .same_as = "application"},
    {.key = "service", .parse = parse_string, .offset = A_OFF(service), .nonempty = true},
    {.key = "module",
     .parse = parse_string,
     .offset = A_OFF(service),
     .nonempty = true,
     .same_as = "service"},
    {.key = "version", .parse = parse_string, .offset = A_OFF(version), .nonempty = true},
    {.key = "runtime", .parse = parse_string, .offset = A_OFF(runtime), .nonempty = true},
    {.key = "entrypoint", .parse = parse_string, .offset = A_OFF(entrypoint), .nonempty = true},
    {.key = "threadsafe", .parse = parse_threadsafe, .offset = A_OFF(threadsafe)},
    {.key = "default_expiration", .parse = parse_expiration, .offset = A_OFF(default_expiration)},
    {.key = "handlers", .parse = parse_handlers},
    {.key = "env_variables", .parse = parse_env_variables},
    {.key = "skip_files", .parse = parse_skip_files},
    {.key = "inbound_services", .parse = parse_inbound_services},
    {.key = "error_handlers", .parse = parse_error_handlers},
    {.key = "automatic_scaling", .parse = parse_scaling, .aux = AF_SCALING_AUTOMATIC},
    {.key = "manual_scaling", .parse = parse_scaling, .aux = AF_SCALING_MANUAL},
    {.key = "basic_scaling", .parse = parse_scaling, .aux = AF_SCALING_BASIC},
    /* Known to App Engine, meaningless or not implemented for a local
     * server; docs/app-yaml.md lists them. Accepted without a warning so a
     * deployable app.yaml loads cleanly. */
    {.key = "api_version"},
    {.key = "includes"},
    {.key = "builtins"},
    {.key = "libraries"},
    {.key = "instance_class"},
    {.key = "env"},
    {.key = "vm"},
    {.key = "beta_settings"},
    {.key = "vm_settings"},
    {.key = "network"},
    {.key = "resources"},
    {.key = "liveness_check"},
    {.key = "readiness_check"},
    {.key = "health_check"},
    {.key = "endpoints_api_service"},
    {.key = "runtime_config"},
    {.key = "admin_console"},
    {.key = "derived_file_type"},
    {.key = "service_account"},
    {.key = "app_engine_apis"},
    {.key = "build_env_variables"},
    {.key = "vpc_access_connector"},
    {.key = "runtime_channel"},
    {.key = "main"},
    {.key = "nobuild_files"},
    {.key = "pagespeed"},
    {.key = "api_config"},
    {.key = "zones"},
};

static ssize_t find_field(const struct field *fields, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(fields[i].key, key) == 0)
            return (ssize_t)i;
    }
    return -1;
}

static int walk_map(struct ctx *c, const char *what, const struct node *map,
                    const struct field *fields, size_t n_fields, void *obj,
                    const struct node **seen)
{
    if (map->kind != NODE_MAP)
        return fail_expected(c, what, map, "a mapping");
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        const struct node *key = map->items[i], *val = map->items[i + 1];
        if (key->kind != NODE_SCALAR)
            return fail_expected(c, what, key, "a key name");
        ssize_t idx = find_field(fields, n_fields, key->text);
        if (idx < 0) {
            af_cfg_warn(c->name, key->line, key->col, "unknown key '%s' ignored", key->text);
            continue;
        }
        const struct field *f = &fields[idx];
        ssize_t canon = f->same_as ? find_field(fields, n_fields, f->same_as) : idx;
        if (seen[canon]) {
            if (strcmp(seen[canon]->text, key->text) == 0)
                return fail_at(c, key, "duplicate key '%s' (first at line %d)", key->text,
                               seen[canon]->line);
            return fail_at(c, key, "'%s' and '%s' (line %d) are the same setting; give one",
                           key->text, seen[canon]->text, seen[canon]->line);
        }
        seen[canon] = key;
        if (!f->parse) {
            af_debug("%s:%d:%d: '%s' is not used by appfront, ignored", c->name, key->line,
                     key->col, key->text);
            continue;
        }
        /* An empty value ("key:" or "key: ~") means the key was not given. */
        if (node_is_null(val))
            continue;
        c->key = key;
        if (f->parse(c, f, val, obj) != 0)
            return -1;
    }
    return 0;
}

/* ---- public ----------------------------------------------------------- */

void af_appyaml_free(struct af_app_yaml *app)
{
    if (!app)
        return;
    free(app->path);
    free(app->dir);
    free(app->application);
    free(app->service);
    free(app->version);
    free(app->runtime);
    free(app->entrypoint);
    free(app->default_expiration);
    for (size_t i = 0; i < app->n_handlers; i++) {
        struct af_handler *h = &app->handlers[i];
        free(h->url);
        free(h->script);
        free(h->static_dir);
        free(h->static_files);
        free(h->upload);
        free(h->mime_type);
        free(h->expiration);
        for (size_t j = 0; j < h->n_http_headers; j++) {
            free(h->http_headers[j].name);
            free(h->http_headers[j].value);
        }
        free(h->http_headers);
    }
    free(app->handlers);
    for (size_t i = 0; i < app->n_env_variables; i++) {
        free(app->env_variables[i].name);
        free(app->env_variables[i].value);
    }
    free(app->env_variables);
    free_skip_files(app);
    for (size_t i = 0; i < app->n_error_handlers; i++) {
        free(app->error_handlers[i].error_code);
        free(app->error_handlers[i].file);
    }
    free(app->error_handlers);
    free(app);
}

static struct af_app_yaml *app_new(const char *name, const char *base_dir)
{
    struct af_app_yaml *app = af_xcalloc(1, sizeof(*app));
    app->path = af_xstrdup(name);
    app->dir = base_dir ? af_xstrdup(base_dir) : NULL;
    app->service = af_xstrdup("default");
    app->version = af_xstrdup("1");
    app->threadsafe = true;
    app->scaling = AF_SCALING_AUTOMATIC;
    app->max_concurrent_requests = 10;
    app->min_idle_instances = -1;
    app->max_idle_instances = -1;
    app->n_skip_files = N_OF(default_skip_files);
    app->skip_files = af_xcalloc(app->n_skip_files, sizeof(char *));
    for (size_t i = 0; i < app->n_skip_files; i++)
        app->skip_files[i] = af_xstrdup(default_skip_files[i]);
    return app;
}

int af_appyaml_parse(const char *name, const char *text, size_t len, const char *base_dir,
                     struct af_app_yaml **out, char *err, size_t errlen)
{
    struct ctx c = {.name = name, .err = err, .errlen = errlen};
    struct node *root = NULL;
    *out = NULL;
    if (len > MAX_FILE_BYTES)
        return failf(&c, 0, 0, "%zu bytes is more than the %d byte limit for app.yaml", len,
                     MAX_FILE_BYTES);
    if (build_tree(&c, text, len, &root) != 0)
        return -1;
    if (!root)
        return failf(&c, 0, 0, "empty file: app.yaml needs at least 'runtime'");

    c.app = app_new(name, base_dir);
    const struct node *seen[N_OF(top_fields)] = {0};
    int rc = walk_map(&c, "top level", root, top_fields, N_OF(top_fields), c.app, seen);
    if (rc == 0 && !c.app->runtime) {
        const struct node *at = seen[find_field(top_fields, N_OF(top_fields), "runtime")];
        if (!at)
            at = root;
        rc = fail_at(&c, at, "runtime: required (for example 'runtime: native')");
    }
    node_free(root);
    if (rc != 0) {
        af_appyaml_free(c.app);
        return -1;
    }
    *out = c.app;
    return 0;
}

int af_appyaml_load(const char *path, struct af_app_yaml **out, char *err, size_t errlen)
{
    struct ctx c = {.name = path, .err = err, .errlen = errlen};
    struct stat st;
    char *file = NULL;
    *out = NULL;

    if (stat(path, &st) != 0)
        return failf(&c, 0, 0, "%s", strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        static const char *const names[] = {"app.yaml", "app.yml"};
        for (size_t i = 0; i < N_OF(names) && !file; i++) {
            char *candidate = af_xasprintf("%s/%s", path, names[i]);
            if (stat(candidate, &st) == 0 && S_ISREG(st.st_mode))
                file = candidate;
            else
                free(candidate);
        }
        if (!file)
            return failf(&c, 0, 0, "no app.yaml or app.yml in this directory");
    } else {
        file = af_xstrdup(path);
    }
    c.name = file;

    int rc = -1;
    char *abs = NULL, *text = NULL;
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        failf(&c, 0, 0, "%s", strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        failf(&c, 0, 0, "not a regular file");
        goto out_fd;
    }
    if (st.st_size > MAX_FILE_BYTES) {
        failf(&c, 0, 0, "%lld bytes is more than the %d byte limit for app.yaml",
              (long long)st.st_size, MAX_FILE_BYTES);
        goto out_fd;
    }
    size_t len;
    text = af_read_bounded(fd, MAX_FILE_BYTES, &len);
    if (!text) {
        failf(&c, 0, 0, "%s", strerror(errno));
        goto out_fd;
    }
    abs = realpath(file, NULL);
    if (!abs) {
        failf(&c, 0, 0, "%s", strerror(errno));
        goto out_text;
    }
    char *slash = strrchr(abs, '/');
    char *dir = af_xstrndup(abs, slash == abs ? 1 : (size_t)(slash - abs));
    /* Messages name the file as the user gave it; the struct keeps the
     * absolute path. */
    rc = af_appyaml_parse(file, text, len, dir, out, err, errlen);
    free(dir);
    if (rc == 0) {
        free((*out)->path);
        (*out)->path = abs;
        abs = NULL;
    }
    free(abs);
out_text:
    free(text);
out_fd:
    close(fd);
out:
    free(file);
    return rc;
}

/* Stock runtimes are a language name and an optional version number:
 * "go121", "python312", "nodejs20", "java17", "php83", "ruby32". */
static const char *const stock_runtime_prefixes[] = {"go",   "python", "nodejs",
                                                     "java", "php",    "ruby"};

bool af_runtime_is_stock(const char *runtime)
{
    if (!runtime)
        return false;
    for (size_t i = 0; i < N_OF(stock_runtime_prefixes); i++) {
        size_t plen = strlen(stock_runtime_prefixes[i]);
        if (strncmp(runtime, stock_runtime_prefixes[i], plen) == 0 &&
            strspn(runtime + plen, "0123456789") == strlen(runtime + plen))
            return true;
    }
    return false;
}
