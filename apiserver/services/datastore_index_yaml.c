/*
 * datastore_index_yaml — index.yaml with libyaml (datastore_index_yaml.h).
 *
 * The file is loaded as one libyaml document and walked with a table of
 * keys per mapping (top level, index, property), so every message can say
 * NAME:LINE:COLUMN. An unknown key is a warning, as in app.yaml and
 * queue.yaml; a wrong value is an error.
 *
 * Writing follows dev_appserver's rule: the file is rewritten only when it
 * does not exist or holds the marker line, and only below that line. The
 * new text is checked by parsing it before it replaces the old one.
 */
#include "apiserver/services/datastore_index_yaml.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "common/cfgerr.h"
#include "common/readfile.h"
#include "common/xalloc.h"
#include "common/yamlwalk.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
/* index.yaml files are small; a megabyte is a mistake. */
#define IY_MAX_FILE_BYTES (1024 * 1024)
/* Production allows 200 composite indexes per app; leave room. */
#define IY_MAX_INDEXES 1000
#define IY_MAX_PROPS 100

/* ---- values ------------------------------------------------------------- */

/* "key:" with nothing after it, or "~" / "null". */
static bool is_null(const yaml_node_t *n)
{
    const char *s = af_yw_scalar(n);
    return s && (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) &&
           (!*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0);
}

/* A non-empty single value without NUL characters. */
static int want_string(struct af_yw *c, const yaml_node_t *n, const char *key, const char **out)
{
    *out = af_yw_scalar(n);
    if (!*out)
        return af_yw_failf(c, n, "%s: expected a single value, not a list or mapping", key);
    if (strlen(*out) != n->data.scalar.length)
        return af_yw_failf(c, n, "%s: a NUL character is not allowed in a value", key);
    if (!**out)
        return af_yw_failf(c, n, "%s: must not be empty", key);
    return 0;
}

/* ---- mappings ----------------------------------------------------------- */

/* One property being parsed. */
struct iy_prop {
    struct af_ds_index_prop *p;
    bool named;
};

static int p_prop_name(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    struct iy_prop *ip = obj;
    const char *s;
    if (want_string(c, v, "name", &s) < 0)
        return -1;
    free(ip->p->name);
    ip->p->name = af_xstrdup(s);
    ip->named = true;
    return 0;
}

static int p_direction(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    struct iy_prop *ip = obj;
    const char *s;
    if (want_string(c, v, "direction", &s) < 0)
        return -1;
    if (strcasecmp(s, "asc") == 0 || strcasecmp(s, "ascending") == 0)
        ip->p->desc = false;
    else if (strcasecmp(s, "desc") == 0 || strcasecmp(s, "descending") == 0)
        ip->p->desc = true;
    else
        return af_yw_failf(c, v, "direction: '%.*s' is neither asc nor desc", AF_YW_MAX_QUOTE, s);
    return 0;
}

static const struct af_yw_key prop_keys[] = {
    {"name", p_prop_name},
    {"direction", p_direction},
};

static int p_kind(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    struct af_ds_index *ix = obj;
    const char *s;
    if (want_string(c, v, "kind", &s) < 0)
        return -1;
    free(ix->kind);
    ix->kind = af_xstrdup(s);
    return 0;
}

static int p_ancestor(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    struct af_ds_index *ix = obj;
    const char *s;
    if (want_string(c, v, "ancestor", &s) < 0)
        return -1;
    if (strcasecmp(s, "yes") == 0 || strcasecmp(s, "true") == 0)
        ix->ancestor = true;
    else if (strcasecmp(s, "no") == 0 || strcasecmp(s, "false") == 0)
        ix->ancestor = false;
    else
        return af_yw_failf(c, v, "ancestor: '%.*s' is neither yes nor no", AF_YW_MAX_QUOTE, s);
    return 0;
}

static int p_properties(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    struct af_ds_index *ix = obj;
    if (is_null(v))
        return 0;
    if (!v || v->type != YAML_SEQUENCE_NODE)
        return af_yw_failf(c, v, "properties: expected a list of properties ('- name: ...')");
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++) {
        const yaml_node_t *item = yaml_document_get_node(c->doc, *it);
        if (ix->n_props >= IY_MAX_PROPS)
            return af_yw_failf(c, item, "an index may have at most %d properties", IY_MAX_PROPS);
        ix->props = af_xrealloc(ix->props, (ix->n_props + 1) * sizeof(*ix->props));
        struct af_ds_index_prop *p = &ix->props[ix->n_props++];
        memset(p, 0, sizeof(*p));
        struct iy_prop ip = {.p = p};
        if (af_yw_walk_map(c, item, "a property", prop_keys, N_OF(prop_keys), &ip) < 0)
            return -1;
        if (!ip.named)
            return af_yw_failf(c, item, "a property needs a name");
    }
    return 0;
}

static const struct af_yw_key index_keys[] = {
    {"kind", p_kind},
    {"ancestor", p_ancestor},
    {"properties", p_properties},
};

static int parse_indexes(struct af_yw *c, const yaml_node_t *seq, struct af_index_yaml *out)
{
    if (is_null(seq))
        return 0;
    if (!seq || seq->type != YAML_SEQUENCE_NODE)
        return af_yw_failf(c, seq, "indexes: expected a list of indexes ('- kind: ...')");
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++) {
        const yaml_node_t *item = yaml_document_get_node(c->doc, *it);
        if (out->n >= IY_MAX_INDEXES)
            return af_yw_failf(c, item, "more than %d indexes", IY_MAX_INDEXES);
        out->indexes = af_xrealloc(out->indexes, (out->n + 1) * sizeof(*out->indexes));
        struct af_ds_index *ix = &out->indexes[out->n++];
        memset(ix, 0, sizeof(*ix));
        ix->line = (int)item->start_mark.line + 1;
        if (af_yw_walk_map(c, item, "an index", index_keys, N_OF(index_keys), ix) < 0)
            return -1;
        if (!ix->kind)
            return af_yw_failf(c, item, "an index needs a kind");
    }
    return 0;
}

static int p_top_indexes(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    return parse_indexes(c, v, obj);
}

static const struct af_yw_key top_keys[] = {
    {"indexes", p_top_indexes},
};

/* ---- the marker line ---------------------------------------------------- */

/* The offset of the first line that is the marker (trailing blanks and a
 * '\r' allowed), or -1. */
static long marker_offset(const char *text, size_t len)
{
    size_t mlen = strlen(AF_INDEX_YAML_MARKER);
    for (size_t off = 0; off < len;) {
        const char *nl = memchr(text + off, '\n', len - off);
        size_t end = nl ? (size_t)(nl - text) : len;
        size_t e = end;
        while (e > off && (text[e - 1] == ' ' || text[e - 1] == '\t' || text[e - 1] == '\r'))
            e--;
        if (e - off == mlen && memcmp(text + off, AF_INDEX_YAML_MARKER, mlen) == 0)
            return (long)off;
        off = end + 1;
    }
    return -1;
}

/* The 1-based line number of byte offset off. */
static int line_of(const char *text, size_t off)
{
    int line = 1;
    for (size_t i = 0; i < off; i++)
        line += text[i] == '\n';
    return line;
}

/* ---- parsing ------------------------------------------------------------ */

static int parse(const char *name, const char *text, size_t len, bool warn,
                 struct af_index_yaml **out, char *err, size_t errlen)
{
    struct af_yw c = {.name = name, .warn = warn, .err = err, .errlen = errlen};
    struct af_index_yaml *y = af_xcalloc(1, sizeof(*y));
    yaml_document_t doc;
    int rc = -1;
    err[0] = '\0';
    *out = NULL;
    y->exists = true;

    if (af_yw_load(&c, text, len, &doc) < 0)
        goto out;
    const yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || is_null(root) ||
        af_yw_walk_map(&c, root, "index.yaml", top_keys, N_OF(top_keys), y) == 0) {
        long marker = marker_offset(text, len);
        y->marker = marker >= 0;
        y->n_manual = y->n;
        if (y->marker) {
            int mline = line_of(text, (size_t)marker);
            y->n_manual = 0;
            while (y->n_manual < y->n && y->indexes[y->n_manual].line < mline)
                y->n_manual++;
        }
        rc = 0;
    }
    yaml_document_delete(&doc);
out:
    if (rc == 0)
        *out = y;
    else
        af_index_yaml_free(y);
    return rc;
}

int af_index_yaml_parse(const char *name, const char *text, size_t len, struct af_index_yaml **out,
                        char *err, size_t errlen)
{
    return parse(name, text, len, true, out, err, errlen);
}

/* Reads path whole. Returns the text, or NULL with errno (ENOENT: no
 * file). */
static char *read_path(const char *path, size_t *len, mode_t *mode)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    char *text = af_read_regular(fd, IY_MAX_FILE_BYTES, len, mode);
    int e = errno;
    close(fd);
    errno = e;
    return text;
}

int af_index_yaml_load(const char *path, struct af_index_yaml **out, char *err, size_t errlen)
{
    *out = NULL;
    size_t len = 0;
    mode_t mode;
    char *text = read_path(path, &len, &mode);
    if (!text) {
        int e = errno;
        if (e == ENOENT) {
            struct af_index_yaml *y = af_xcalloc(1, sizeof(*y));
            y->path = af_xstrdup(path);
            *out = y;
            return 0;
        }
        snprintf(err, errlen, "%s: %s", path,
                 e == EFBIG ? "larger than 1 MiB; is this really index.yaml?" : strerror(e));
        return -1;
    }
    int rc = af_index_yaml_parse(path, text, len, out, err, errlen);
    free(text);
    if (rc == 0)
        (*out)->path = af_xstrdup(path);
    return rc;
}

int af_index_yaml_load_dir(const char *dir, struct af_index_yaml **out, char *err, size_t errlen)
{
    char *path = af_xasprintf("%s/index.yaml", dir);
    char *yml = af_xasprintf("%s/index.yml", dir);
    struct stat st;
    /* index.yml only when there is no index.yaml, as for app.yaml. */
    const char *use = stat(path, &st) != 0 && errno == ENOENT && stat(yml, &st) == 0 ? yml : path;
    int rc = af_index_yaml_load(use, out, err, errlen);
    free(path);
    free(yml);
    return rc;
}

struct af_index_yaml *af_index_yaml_copy(const struct af_index_yaml *y)
{
    struct af_index_yaml *c = af_xcalloc(1, sizeof(*c));
    *c = *y;
    c->indexes = af_xcalloc(y->n ? y->n : 1, sizeof(*c->indexes));
    for (size_t i = 0; i < y->n; i++)
        af_ds_index_copy(&c->indexes[i], &y->indexes[i]);
    c->path = y->path ? af_xstrdup(y->path) : NULL;
    return c;
}

void af_index_yaml_free(struct af_index_yaml *y)
{
    if (!y)
        return;
    for (size_t i = 0; i < y->n; i++)
        af_ds_index_release(&y->indexes[i]);
    free(y->indexes);
    free(y->path);
    free(y);
}

/* ---- writing ------------------------------------------------------------ */

/* What follows the marker line: what it means, in a few lines. */
static const char marker_note[] =
    "\n"
    "# appfront appends below this line the composite index of every new kind of\n"
    "# query that needs one (docs/datastore.md, \"Indexes\"), as dev_appserver\n"
    "# does. Indexes above the line are yours and are never changed: move one\n"
    "# up to keep it as it is. Delete the line to stop appfront from writing\n"
    "# this file.\n"
    "\n";

char *af_index_yaml_render(const char *old, size_t len, const struct af_ds_index *gen, size_t n)
{
    size_t head = 0;
    const char *start = "indexes:\n\n";
    if (old) {
        long m = marker_offset(old, len);
        if (m < 0)
            return NULL;
        head = (size_t)m;
        start = "";
    }
    char **items = af_xcalloc(n ? n : 1, sizeof(*items));
    size_t total = strlen(start) + head + strlen(AF_INDEX_YAML_MARKER) + 1 + sizeof(marker_note);
    for (size_t i = 0; i < n; i++) {
        items[i] = af_ds_index_yaml(&gen[i]);
        total += strlen(items[i]);
    }
    char *out = af_xmalloc(total + 1);
    size_t off = 0;
    off += (size_t)sprintf(out + off, "%s", start);
    if (head) {
        memcpy(out + off, old, head);
        off += head;
    }
    off += (size_t)sprintf(out + off, "%s\n%s", AF_INDEX_YAML_MARKER, marker_note);
    for (size_t i = 0; i < n; i++) {
        size_t k = strlen(items[i]);
        memcpy(out + off, items[i], k);
        off += k;
        free(items[i]);
    }
    out[off] = '\0';
    free(items);
    return out;
}

/* Writes text to a new file next to path and renames it over path. */
static int replace_file(const char *path, const char *text, mode_t mode, char *err, size_t errlen)
{
    const char *slash = strrchr(path, '/');
    /* A dot-file: the app's file watcher ignores it while it exists. */
    char *tmp = slash ? af_xasprintf("%.*s/.index.yaml.XXXXXX", (int)(slash - path), path)
                      : af_xstrdup(".index.yaml.XXXXXX");
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a file next to %s: %s", path, strerror(errno));
        free(tmp);
        return -1;
    }
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            goto fail;
        done += (size_t)w;
    }
    if (fchmod(fd, mode) != 0 || fsync(fd) != 0)
        goto fail;
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0)
        goto fail;
    free(tmp);
    return 0;
fail:
    snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno ? errno : EIO));
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    free(tmp);
    return -1;
}

static int write_file(const char *path, const struct af_ds_index *gen, size_t n, char *err,
                      size_t errlen)
{
    size_t len = 0;
    mode_t mode = 0644;
    char *old = read_path(path, &len, &mode);
    if (!old && errno != ENOENT) {
        snprintf(err, errlen, "cannot read %s: %s", path,
                 errno == EFBIG ? "larger than 1 MiB" : strerror(errno));
        return -1;
    }
    /* An index the developer moved above the marker is theirs now: it is
     * not written again below. */
    struct af_ds_index *own = af_xcalloc(n ? n : 1, sizeof(*own));
    struct af_index_yaml *cur = NULL;
    char why[512];
    if (old && parse(path, old, len, false, &cur, why, sizeof(why)) < 0)
        cur = NULL;
    size_t n_own = 0;
    for (size_t i = 0; i < n; i++) {
        bool manual = false;
        for (size_t k = 0; cur && k < cur->n_manual && !manual; k++)
            manual = af_ds_index_equal(&cur->indexes[k], &gen[i]);
        if (!manual)
            own[n_own++] = gen[i]; /* a shallow copy, for rendering only */
    }
    af_index_yaml_free(cur);
    n = n_own;
    char *text = af_index_yaml_render(old, len, own, n);
    free(own);
    free(old);
    if (!text)
        return 0;
    /* Never replace a good file with one that does not parse (a hand-made
     * section above the marker that the items below cannot continue). */
    struct af_index_yaml *check = NULL;
    if (parse(path, text, strlen(text), false, &check, why, sizeof(why)) < 0 ||
        check->n - check->n_manual != n) {
        snprintf(err, errlen,
                 "%s: not rewritten: its text above the %s line cannot be continued with the "
                 "generated indexes (%s)",
                 path, AF_INDEX_YAML_MARKER, why[0] ? why : "they would not be below the line");
        af_index_yaml_free(check);
        free(text);
        return -1;
    }
    af_index_yaml_free(check);
    int rc = replace_file(path, text, mode, err, errlen);
    free(text);
    return rc < 0 ? -1 : 1;
}

int af_index_yaml_write(const char *path, const struct af_ds_index *gen, size_t n, char *err,
                        size_t errlen)
{
    /* A symbolic link stays one: the file it names is replaced. */
    char *real = realpath(path, NULL);
    int rc = write_file(real ? real : path, gen, n, err, errlen);
    free(real);
    return rc;
}
