/*
 * dispatch — dispatch.yaml with libyaml, and the matcher (see dispatch.h).
 *
 * The file is loaded as one libyaml document and walked by hand: it has
 * two levels (the top mapping, the list of entries), so a table of fields
 * as in appyaml.c would be more code than the walk. Messages say
 * NAME:LINE:COLUMN of the offending node. An unknown key is a warning, as
 * in app.yaml and queue.yaml; a wrong value is an error, because routing
 * that differs from what the file says is worse than a server that does not
 * start.
 *
 * The URL rules are production's (dispatchinfo.py of the SDK, which gcloud
 * also applies on deploy): "HOST/PATH", the host a lower-case DNS name that
 * may start with '*' (then it matches any host ending with the rest), never
 * an IPv4 address; the path starts with '/' and may end with '*' (then it
 * is a prefix). dev_appserver ignored rules with a host; appfront matches
 * them against the request's Host field (docs/modules.md).
 */
#include "proxy/dispatch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "common/cfgerr.h"
#include "common/readfile.h"
#include "common/xalloc.h"
#include "proxy/yamlerr.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
/* dispatch.yaml files are a few hundred bytes; a megabyte is a mistake. */
#define DISPATCH_MAX_FILE_BYTES (1024 * 1024)
/* How much of an offending value a message quotes. */
#define MAX_QUOTE 60
/* Production's service names: 1 to 63 of [a-z0-9-], no '-' at either end. */
#define SERVICE_NAME_MAX 63

struct dctx {
    const char *name; /* the file as named in messages */
    yaml_document_t *doc;
    char *err;
    size_t errlen;
};

static int failf(struct dctx *c, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int failf(struct dctx *c, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    af_cfg_errorv(c->err, c->errlen, c->name, line, col, fmt, ap);
    va_end(ap);
    return -1;
}

#define LINE(n) ((int)(n)->start_mark.line + 1)
#define COL(n) ((int)(n)->start_mark.column + 1)
#define fail_at(c, node, ...) failf((c), LINE(node), COL(node), __VA_ARGS__)

static int yaml_fail(struct dctx *c, const yaml_parser_t *p, const char *text, size_t len)
{
    int line, col;
    char msg[512];
    af_yaml_error(p, text, len, &line, &col, msg, sizeof(msg));
    return failf(c, line, col, "%s", msg);
}

/* ---- values --------------------------------------------------------------- */

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* YAML 1.1 spells null as an empty plain scalar, "~" or "null". */
static bool is_null(const yaml_node_t *n)
{
    static const char *const words[] = {"", "~", "null", "Null", "NULL"};
    if (!n || n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    for (size_t i = 0; i < N_OF(words); i++)
        if (strcmp((const char *)n->data.scalar.value, words[i]) == 0)
            return true;
    return false;
}

/* s for a message: at most MAX_QUOTE bytes ("..." when cut), control
 * characters as '?', so a message stays on one line. */
static const char *quote(const char *s, char *buf, size_t len)
{
    size_t slen = strlen(s);
    snprintf(buf, len, "%.*s%s", (int)(slen > MAX_QUOTE ? MAX_QUOTE : slen), s,
             slen > MAX_QUOTE ? "..." : "");
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return buf;
}

/* "'value'" (quoted as above), or "a list" / "a mapping": the "got ..."
 * part of a message. */
static const char *describe(const yaml_node_t *n, char *buf, size_t len)
{
    if (n->type == YAML_MAPPING_NODE)
        return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE)
        return "a list";
    char q[MAX_QUOTE + 4];
    snprintf(buf, len, "'%s'", quote(scalar(n), q, sizeof(q)));
    return buf;
}

/* A string value: a scalar without NUL. */
static int want_string(struct dctx *c, const yaml_node_t *n, const char *key, const char **out)
{
    char buf[MAX_QUOTE + 8];
    *out = scalar(n);
    if (!*out || is_null(n))
        return fail_at(c, n, "%s: expected a string, got %s", key,
                       *out ? "nothing" : describe(n, buf, sizeof(buf)));
    if (strlen(*out) != n->data.scalar.length)
        return fail_at(c, n, "%s: a NUL character is not allowed in a value", key);
    return 0;
}

/* ---- URL patterns ---------------------------------------------------------- */

static bool lower_alnum(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
}

/* One DNS label: [a-z0-9] at both ends, [a-z0-9-] inside. A partial label
 * (what follows a leading '*') may start with '-'. */
static bool label_ok(const char *s, size_t n, bool partial)
{
    if (n == 0 || !lower_alnum(s[n - 1]) || (!partial && !lower_alnum(s[0])))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!lower_alnum(s[i]) && s[i] != '-')
            return false;
    return true;
}

/* Four dot-separated numbers up to 255: production refuses such hosts. */
static bool is_ipv4(const char *s)
{
    int parts = 0;
    while (*s) {
        char *end;
        if (*s < '0' || *s > '9')
            return false;
        unsigned long v = strtoul(s, &end, 10);
        if (end - s > 3 || v > 255)
            return false;
        parts++;
        if (*end == '\0')
            break;
        if (*end != '.')
            return false;
        s = end + 1;
    }
    return parts == 4;
}

/*
 * Checks a host pattern: "*", "*" + a partial label, "*." or "*" + a partial
 * label + "." followed by a host name, or a host name. Returns NULL, or
 * what is wrong (static).
 */
static const char *check_host(const char *host, bool *exact)
{
    *exact = host[0] != '*';
    const char *s = *exact ? host : host + 1;
    if (strchr(s, '*'))
        return "'*' may only start the host";
    for (const char *p = s; *p; p++)
        if (!lower_alnum(*p) && *p != '-' && *p != '.')
            return "a host holds lower-case letters, digits, '-' and '.'";
    if (!*s)
        return *exact ? "the host is empty" : NULL;
    bool first = true;
    for (const char *p = s;; first = false) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        /* After '*', the first piece may be empty ("*.example.com") or a
         * label's tail ("*-dev.example.com"). */
        bool partial = first && !*exact;
        if (!(partial && n == 0 && dot) && !label_ok(p, n, partial))
            return "each part of a host between dots starts and ends with a letter or digit";
        if (!dot)
            break;
        p = dot + 1;
    }
    if (*exact && is_ipv4(s))
        return "the host may not be an IPv4 address";
    return NULL;
}

/* Checks a path pattern: '/' first, '*' only last, printable ASCII, no
 * '?' or '#' (only the path is matched). Returns NULL or what is wrong. */
static const char *check_path(const char *path, bool *exact)
{
    size_t n = strlen(path);
    *exact = !(n > 0 && path[n - 1] == '*');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)path[i];
        if (ch == '*' && i + 1 < n)
            return "'*' may only end the path";
        if (ch == '?' || ch == '#')
            return "a query or fragment is never matched: give the path alone";
        if (ch <= 0x20 || ch >= 0x7f)
            return "the path holds printable ASCII only: percent-encode other bytes";
    }
    return NULL;
}

/* Splits and checks url into r. Returns 0, or -1 with the message set. */
static int parse_url(struct dctx *c, const yaml_node_t *at, const char *url,
                     struct af_dispatch_rule *r)
{
    char buf[MAX_QUOTE + 8];
    const char *slash = strchr(url, '/');
    if (!slash || slash == url)
        return fail_at(c, at, "url: %s is not HOST/PATH (for example \"*/api/*\")",
                       describe(at, buf, sizeof(buf)));
    char *host = af_xstrndup(url, (size_t)(slash - url));
    const char *why = check_host(host, &r->host_exact);
    size_t host_pattern_len = strlen(host);
    if (why) {
        fail_at(c, at, "url: host '%s': %s", quote(host, buf, sizeof(buf)), why);
        free(host);
        return -1;
    }
    why = check_path(slash, &r->path_exact);
    if (why) {
        free(host);
        return fail_at(c, at, "url: path '%s': %s", quote(slash, buf, sizeof(buf)), why);
    }
    r->url = af_xstrdup(url);
    if (r->host_exact) {
        r->host = host;
    } else {
        r->host = af_xstrdup(host + 1);
        free(host);
    }
    r->host_len = strlen(r->host);
    r->path_len = strlen(slash) - !r->path_exact;
    r->path = af_xstrndup(slash, r->path_len);
    if (host_pattern_len > AF_DISPATCH_PROD_MAX_PART || strlen(slash) > AF_DISPATCH_PROD_MAX_PART)
        af_cfg_warn(c->name, LINE(at), COL(at),
                    "url: App Engine refuses a host or path longer than %d characters on deploy",
                    AF_DISPATCH_PROD_MAX_PART);
    return 0;
}

static bool service_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= SERVICE_NAME_MAX && label_ok(s, n, false);
}

/* ---- the document ---------------------------------------------------------- */

/* Refuses a key given twice in one mapping (libyaml keeps both). */
static int check_duplicates(struct dctx *c, const yaml_node_t *map, const char *what)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        const char *name = scalar(k);
        if (!name)
            return fail_at(c, k, "%s: a key must be a plain name", what);
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
            const yaml_node_t *k0 = yaml_document_get_node(c->doc, q->key);
            char buf[MAX_QUOTE + 4];
            if (strcmp(scalar(k0), name) == 0)
                return fail_at(c, k, "duplicate key '%s' (first at line %d)",
                               quote(name, buf, sizeof(buf)), LINE(k0));
        }
    }
    return 0;
}

static int parse_rule(struct dctx *c, const yaml_node_t *item, struct af_dispatch_rule *r)
{
    char buf[MAX_QUOTE + 8];
    r->line = LINE(item);
    r->col = COL(item);
    if (item->type != YAML_MAPPING_NODE)
        return fail_at(c, item, "dispatch entry: expected a mapping with url and service, got %s",
                       describe(item, buf, sizeof(buf)));
    if (check_duplicates(c, item, "dispatch entry") < 0)
        return -1;
    const yaml_node_t *url = NULL, *service = NULL, *service_key = NULL;
    for (yaml_node_pair_t *p = item->data.mapping.pairs.start; p < item->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        const char *name = scalar(k);
        if (strcmp(name, "url") == 0) {
            url = v;
        } else if (strcmp(name, "service") == 0 || strcmp(name, "module") == 0) {
            if (service_key)
                return fail_at(c, k,
                               "dispatch entry: only one of service and module may be "
                               "given ('%s' at line %d)",
                               scalar(service_key), LINE(service_key));
            service = v;
            service_key = k;
        } else {
            af_cfg_warn(c->name, LINE(k), COL(k), "unknown key '%s' in a dispatch entry is ignored",
                        quote(name, buf, sizeof(buf)));
        }
    }
    if (!url)
        return fail_at(c, item, "dispatch entry: url is required (for example url: \"*/api/*\")");
    if (!service)
        return fail_at(c, item, "dispatch entry for %s: service is required",
                       describe(url, buf, sizeof(buf)));
    const char *s;
    if (want_string(c, url, "url", &s) < 0 || parse_url(c, url, s, r) < 0)
        return -1;
    const char *key = scalar(service_key);
    if (want_string(c, service, key, &s) < 0)
        return -1;
    if (!service_name_ok(s))
        return fail_at(c, service,
                       "%s: %s is not a service name (1 to %d lower-case letters, digits and "
                       "'-', not starting or ending with '-')",
                       key, describe(service, buf, sizeof(buf)), SERVICE_NAME_MAX);
    r->service = af_xstrdup(s);
    return 0;
}

static int parse_rules(struct dctx *c, const yaml_node_t *seq, struct af_dispatch *d)
{
    char buf[MAX_QUOTE + 8];
    if (is_null(seq))
        return 0; /* "dispatch:" with nothing under it */
    if (seq->type != YAML_SEQUENCE_NODE)
        return fail_at(c, seq,
                       "dispatch: expected a list of entries (- url: ..., service: ...), "
                       "got %s",
                       describe(seq, buf, sizeof(buf)));
    size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    if (n > AF_DISPATCH_MAX_RULES)
        return fail_at(c, seq,
                       "dispatch: %zu entries is more than the %d appfront takes "
                       "(App Engine takes %d)",
                       n, AF_DISPATCH_MAX_RULES, AF_DISPATCH_PROD_MAX_RULES);
    if (n > AF_DISPATCH_PROD_MAX_RULES)
        af_cfg_warn(c->name, LINE(seq), COL(seq),
                    "dispatch: %zu entries; App Engine refuses more than %d on deploy", n,
                    AF_DISPATCH_PROD_MAX_RULES);
    d->rules = af_xcalloc(n ? n : 1, sizeof(*d->rules));
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++) {
        /* Counted as it is filled, so af_dispatch_free() frees a partial
         * rule too. */
        struct af_dispatch_rule *r = &d->rules[d->n_rules++];
        if (parse_rule(c, yaml_document_get_node(c->doc, *it), r) < 0)
            return -1;
    }
    return 0;
}

static int parse_top(struct dctx *c, const yaml_node_t *root, struct af_dispatch *d)
{
    char buf[MAX_QUOTE + 8];
    if (root->type != YAML_MAPPING_NODE)
        return fail_at(c, root, "top level: expected a mapping with 'dispatch:', got %s",
                       describe(root, buf, sizeof(buf)));
    if (check_duplicates(c, root, "top level") < 0)
        return -1;
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        const char *name = scalar(k);
        if (strcmp(name, "dispatch") == 0) {
            if (parse_rules(c, v, d) < 0)
                return -1;
        } else if (strcmp(name, "application") != 0) {
            /* application: is accepted, as by the SDK, and means nothing. */
            af_cfg_warn(c->name, LINE(k), COL(k), "unknown key '%s' is ignored",
                        quote(name, buf, sizeof(buf)));
        }
    }
    return 0;
}

int af_dispatch_parse(const char *name, const char *text, size_t len, struct af_dispatch **out,
                      char *err, size_t errlen)
{
    struct dctx c = {.name = name, .err = err, .errlen = errlen};
    struct af_dispatch *d = af_xcalloc(1, sizeof(*d));
    yaml_parser_t parser;
    yaml_document_t doc, next;
    int rc = -1;
    *out = NULL;
    d->path = af_xstrdup(name);
    if (len > DISPATCH_MAX_FILE_BYTES) {
        failf(&c, 0, 0, "%zu bytes is more than the %d byte limit for dispatch.yaml", len,
              DISPATCH_MAX_FILE_BYTES);
        goto out;
    }
    if (!yaml_parser_initialize(&parser)) {
        failf(&c, 0, 0, "out of memory while parsing YAML");
        goto out;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_fail(&c, &parser, text, len);
        goto out_parser;
    }
    c.doc = &doc;
    const yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && !is_null(root) && parse_top(&c, root, d) < 0)
        goto out_doc;
    /* A second document would be silently ignored: refuse it. */
    if (!yaml_parser_load(&parser, &next)) {
        yaml_fail(&c, &parser, text, len);
        goto out_doc;
    }
    const yaml_node_t *second = yaml_document_get_root_node(&next);
    if (second)
        fail_at(&c, second, "only one YAML document is allowed in dispatch.yaml");
    else
        rc = 0;
    yaml_document_delete(&next);
out_doc:
    yaml_document_delete(&doc);
out_parser:
    yaml_parser_delete(&parser);
out:
    if (rc == 0)
        *out = d;
    else
        af_dispatch_free(d);
    return rc;
}

int af_dispatch_load(const char *path, struct af_dispatch **out, char *err, size_t errlen)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    size_t len = 0;
    char *text = af_read_bounded(fd, DISPATCH_MAX_FILE_BYTES, &len);
    int e = errno;
    close(fd);
    if (!text) {
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -1;
    }
    int rc = af_dispatch_parse(path, text, len, out, err, errlen);
    free(text);
    return rc;
}

int af_dispatch_load_dir(const char *dir, struct af_dispatch **out, char *err, size_t errlen)
{
    static const char *const names[] = {"dispatch.yaml", "dispatch.yml"};
    *out = NULL;
    for (size_t i = 0; i < N_OF(names); i++) {
        char *path = af_xasprintf("%s/%s", dir, names[i]);
        struct stat st;
        if (stat(path, &st) != 0 && errno == ENOENT) {
            free(path);
            continue;
        }
        int rc = af_dispatch_load(path, out, err, errlen);
        free(path);
        return rc;
    }
    return 0;
}

bool af_dispatch_is_file_name(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return strcmp(base, "dispatch.yaml") == 0 || strcmp(base, "dispatch.yml") == 0;
}

static void rule_release(struct af_dispatch_rule *r)
{
    free(r->url);
    free(r->host);
    free(r->path);
    free(r->service);
}

void af_dispatch_drop_rule(struct af_dispatch *d, size_t i)
{
    rule_release(&d->rules[i]);
    memmove(&d->rules[i], &d->rules[i + 1], (d->n_rules - i - 1) * sizeof(d->rules[0]));
    d->n_rules--;
}

void af_dispatch_free(struct af_dispatch *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_rules; i++)
        rule_release(&d->rules[i]);
    free(d->rules);
    free(d->path);
    free(d);
}

/* ---- matching ------------------------------------------------------------ */

/* a (any case) equals b (lower case), n bytes. */
static bool same_host(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = a[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (ch != b[i])
            return false;
    }
    return true;
}

int af_dispatch_match(const struct af_dispatch *d, const char *host, size_t host_len,
                      const char *target)
{
    if (target[0] != '/')
        return -1; /* "*" of OPTIONS */
    /* Production never dispatches /_ah/ paths; dev_appserver's one
     * exception is the deferred library's handler. */
    if (strncmp(target, "/_ah/", 5) == 0 && strncmp(target, "/_ah/queue/deferred", 19) != 0)
        return -1;
    /* The host without its port: "[::1]:8080", "example.com:8080". */
    if (!host) {
        host = "";
        host_len = 0;
    }
    if (host_len > 0 && host[0] == '[') {
        const char *end = memchr(host, ']', host_len);
        host_len = end ? (size_t)(end - host) + 1 : host_len;
    } else if (host_len > 0) {
        const char *colon = memchr(host, ':', host_len);
        if (colon)
            host_len = (size_t)(colon - host);
    }
    for (size_t i = 0; i < d->n_rules; i++) {
        const struct af_dispatch_rule *r = &d->rules[i];
        /* A rule's path holds no '?' and no NUL: strncmp stops at the
         * target's end, and equal bytes are all path. */
        if (strncmp(target, r->path, r->path_len) != 0)
            continue;
        if (r->path_exact && target[r->path_len] != '\0' && target[r->path_len] != '?')
            continue;
        if (r->host_exact ? host_len != r->host_len || !same_host(host, r->host, host_len)
                          : host_len < r->host_len ||
                                !same_host(host + host_len - r->host_len, r->host, r->host_len))
            continue;
        return (int)i;
    }
    return -1;
}

/* The labels of host[0..n), a host without its port, longer than
 * ".localhost": the module form when it ends in ".localhost". */
static enum af_module_host module_labels(const char *host, size_t n, const char **module,
                                         size_t *module_len)
{
    static const char suffix[] = ".localhost";
    const size_t sl = sizeof(suffix) - 1;
    if (!same_host(host + n - sl, suffix, sl))
        return AF_HOST_PLAIN;
    n -= sl; /* host[0..n) holds the labels before ".localhost" */
    const char *dot = memrchr(host, '.', n);
    const char *label = dot ? dot + 1 : host;
    size_t label_len = (size_t)(host + n - label);
    if (label_len == 0 || (dot && dot == host))
        return AF_HOST_PLAIN; /* ".localhost", "a..localhost", ".a.localhost" */
    *module = label;
    *module_len = label_len;
    return dot ? AF_HOST_VERSIONED : AF_HOST_MODULE;
}

enum af_module_host af_dispatch_module_host(const char *host, size_t len, const char **module,
                                            size_t *module_len)
{
    const size_t sl = sizeof(".localhost") - 1;
    if (len <= sl || host[0] == '[')
        return AF_HOST_PLAIN;
    const char *colon = memchr(host, ':', len);
    size_t n = colon ? (size_t)(colon - host) : len;
    if (n <= sl)
        return AF_HOST_PLAIN; /* "localhost:8080", "127.0.0.1:8080" */
    return module_labels(host, n, module, module_len);
}
