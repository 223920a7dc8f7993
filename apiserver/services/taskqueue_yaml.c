/*
 * taskqueue_yaml — queue.yaml with libyaml (see taskqueue_yaml.h).
 *
 * The file is loaded as one libyaml document and walked with a table of
 * keys per mapping (top level, queue, retry_parameters), so every message
 * can say NAME:LINE:COLUMN. An unknown key is a warning, as in app.yaml; a
 * value that is wrong is an error, because a queue that runs differently
 * from what its file says is worse than a server that does not start.
 */
#include "apiserver/services/taskqueue_yaml.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "common/cfgerr.h"
#include "common/readfile.h"
#include "common/xalloc.h"
#include "common/yamlwalk.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
/* queue.yaml files are small; a megabyte is a mistake. */
#define QY_MAX_FILE_BYTES (1024 * 1024)
#define QY_MAX_QUEUES 1000

void af_queue_retry_defaults(struct af_queue_retry *r)
{
    r->retry_limit = -1;
    r->age_limit_sec = -1;
    r->min_backoff_sec = 0.1;
    r->max_backoff_sec = 3600;
    r->max_doublings = 16;
}

/* Production's defaults for a push queue: 5 tasks a second, a bucket of 5. */
static void queue_defaults(struct af_queue_def *q, const char *name)
{
    memset(q, 0, sizeof(*q));
    q->name = af_xstrdup(name);
    q->rate = 5;
    q->rate_text = af_xstrdup("5/s");
    q->bucket_size = 5;
    af_queue_retry_defaults(&q->retry);
}

bool af_queue_name_is_valid(const char *name, size_t len)
{
    if (len == 0 || len > AF_QUEUE_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-'))
            return false;
    }
    return true;
}

/* ---- scalars ------------------------------------------------------------ */

static int want_scalar(struct af_yw *c, const yaml_node_t *n, const char *key, const char **out)
{
    *out = af_yw_scalar(n);
    if (!*out)
        return af_yw_failf(c, n, "%s: expected a single value, not a list or mapping", key);
    if (strlen(*out) != n->data.scalar.length)
        return af_yw_failf(c, n, "%s: a NUL character is not allowed in a value", key);
    return 0;
}

/* A decimal number >= 0 that fills the whole text. */
static bool parse_nonneg(const char *s, double *out)
{
    if (!*s || *s == '-' || *s == '+' || *s == ' ')
        return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno || !isfinite(v) || v < 0)
        return false;
    *out = v;
    return true;
}

static int want_int(struct af_yw *c, const yaml_node_t *n, const char *key, long min, long max,
                    long *out)
{
    const char *s;
    if (want_scalar(c, n, key, &s) < 0)
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < min || v > max)
        return af_yw_failf(c, n, "%s: '%.*s' is not a whole number from %ld to %ld", key,
                           AF_YW_MAX_QUOTE, s, min, max);
    *out = v;
    return 0;
}

static int want_seconds(struct af_yw *c, const yaml_node_t *n, const char *key, double *out)
{
    const char *s;
    if (want_scalar(c, n, key, &s) < 0)
        return -1;
    if (!parse_nonneg(s, out))
        return af_yw_failf(c, n, "%s: '%.*s' is not a number of seconds (>= 0)", key,
                           AF_YW_MAX_QUOTE, s);
    return 0;
}

/* Seconds in one unit letter of rates and age limits. */
static double unit_seconds(char u)
{
    switch (u) {
    case 's':
        return 1;
    case 'm':
        return 60;
    case 'h':
        return 3600;
    case 'd':
        return 86400;
    default:
        return 0;
    }
}

/* "5/s", "10/m", "1.5/h", "0/d": tasks per second. */
static int parse_rate(struct af_yw *c, const yaml_node_t *n, struct af_queue_def *q)
{
    const char *s;
    if (want_scalar(c, n, "rate", &s) < 0)
        return -1;
    const char *slash = strchr(s, '/');
    double per = slash && slash[1] && !slash[2] ? unit_seconds(slash[1]) : 0;
    char num[64];
    double v;
    if (!slash || per == 0 || (size_t)(slash - s) >= sizeof(num))
        return af_yw_failf(c, n,
                           "rate: '%.*s' is not a rate like 5/s (a number, '/', then s, m, h or d)",
                           AF_YW_MAX_QUOTE, s);
    memcpy(num, s, (size_t)(slash - s));
    num[slash - s] = '\0';
    if (!parse_nonneg(num, &v))
        return af_yw_failf(c, n, "rate: '%.*s' does not start with a number >= 0", AF_YW_MAX_QUOTE,
                           s);
    q->rate = v / per;
    free(q->rate_text);
    q->rate_text = af_xstrdup(s);
    return 0;
}

/* task_age_limit: "30s", "10m", "2h", "7d" (a number then a unit). */
static int parse_age(struct af_yw *c, const yaml_node_t *n, struct af_queue_retry *r)
{
    const char *s;
    if (want_scalar(c, n, "task_age_limit", &s) < 0)
        return -1;
    size_t len = strlen(s);
    char num[64];
    double v;
    double per = len >= 2 ? unit_seconds(s[len - 1]) : 0;
    if (per == 0 || len - 1 >= sizeof(num))
        goto bad;
    memcpy(num, s, len - 1);
    num[len - 1] = '\0';
    if (!parse_nonneg(num, &v) || v * per > 1e12)
        goto bad;
    r->age_limit_sec = (int64_t)(v * per);
    return 0;
bad:
    return af_yw_failf(c, n,
                       "task_age_limit: '%.*s' is not a duration like 2d (a number, then s, "
                       "m, h or d)",
                       AF_YW_MAX_QUOTE, s);
}

/* ---- mappings ----------------------------------------------------------- */

static int p_retry_limit(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    long n;
    if (want_int(c, v, "task_retry_limit", 0, 1000000000, &n) < 0)
        return -1;
    ((struct af_queue_retry *)obj)->retry_limit = (int32_t)n;
    return 0;
}

static int p_age_limit(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    return parse_age(c, v, obj);
}

static int p_min_backoff(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    return want_seconds(c, v, "min_backoff_seconds",
                        &((struct af_queue_retry *)obj)->min_backoff_sec);
}

static int p_max_backoff(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    return want_seconds(c, v, "max_backoff_seconds",
                        &((struct af_queue_retry *)obj)->max_backoff_sec);
}

static int p_max_doublings(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    long n;
    if (want_int(c, v, "max_doublings", 0, 1000, &n) < 0)
        return -1;
    ((struct af_queue_retry *)obj)->max_doublings = (int32_t)n;
    return 0;
}

static const struct af_yw_key retry_keys[] = {
    {"task_retry_limit", p_retry_limit},    {"task_age_limit", p_age_limit},
    {"min_backoff_seconds", p_min_backoff}, {"max_backoff_seconds", p_max_backoff},
    {"max_doublings", p_max_doublings},
};

/* A queue being parsed, with what was given explicitly. */
struct qy_queue {
    struct af_queue_def def;
    const yaml_node_t *node;
    const yaml_node_t *name_node, *rate_node, *bucket_node, *conc_node, *retry_node;
    const yaml_node_t *mode_node;
};

static int p_name(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    struct qy_queue *q = obj;
    const char *s;
    if (want_scalar(c, v, "name", &s) < 0)
        return -1;
    if (!af_queue_name_is_valid(s, strlen(s)))
        return af_yw_failf(c, v,
                           "name: '%.*s' is not a queue name (1 to %d letters, digits and '-')",
                           AF_YW_MAX_QUOTE, s, AF_QUEUE_NAME_MAX);
    free(q->def.name);
    q->def.name = af_xstrdup(s);
    q->name_node = v;
    return 0;
}

static int p_rate(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    struct qy_queue *q = obj;
    q->rate_node = v;
    return parse_rate(c, v, &q->def);
}

static int p_bucket(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    struct qy_queue *q = obj;
    long n;
    if (want_int(c, v, "bucket_size", 1, 500, &n) < 0)
        return -1;
    q->def.bucket_size = (int)n;
    q->bucket_node = v;
    return 0;
}

static int p_concurrent(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    struct qy_queue *q = obj;
    long n;
    if (want_int(c, v, "max_concurrent_requests", 1, 5000, &n) < 0)
        return -1;
    q->def.max_concurrent = (int)n;
    q->conc_node = v;
    return 0;
}

static int p_mode(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    struct qy_queue *q = obj;
    const char *s;
    if (want_scalar(c, v, "mode", &s) < 0)
        return -1;
    if (strcmp(s, "push") == 0)
        q->def.pull = false;
    else if (strcmp(s, "pull") == 0)
        q->def.pull = true;
    else
        return af_yw_failf(c, v, "mode: '%.*s' is neither push nor pull", AF_YW_MAX_QUOTE, s);
    q->mode_node = v;
    return 0;
}

/* One label of a target: a service or version name, 1 to 63 lower-case
 * letters, digits and '-', not starting or ending with '-'. */
static bool target_label_ok(const char *s, size_t n)
{
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

bool af_queue_target_is_valid(const char *s)
{
    const char *dot = strchr(s, '.');
    if (!dot)
        return target_label_ok(s, strlen(s));
    return target_label_ok(s, (size_t)(dot - s)) && target_label_ok(dot + 1, strlen(dot + 1));
}

static int p_target(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    struct qy_queue *q = obj;
    const char *s;
    if (want_scalar(c, v, "target", &s) < 0)
        return -1;
    if (*s && !af_queue_target_is_valid(s))
        return af_yw_failf(c, v,
                           "target: '%.*s' is not MODULE or VERSION.MODULE (names of 1 to 63 "
                           "lower-case letters, digits and '-', not starting or ending with '-')",
                           AF_YW_MAX_QUOTE, s);
    free(q->def.target);
    q->def.target = *s ? af_xstrdup(s) : NULL;
    return 0;
}

static int p_retry(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    struct qy_queue *q = obj;
    q->retry_node = v;
    if (v && v->type == YAML_SCALAR_NODE && v->data.scalar.length == 0)
        return 0; /* "retry_parameters:" with nothing under it */
    if (af_yw_walk_map(c, v, "retry_parameters", retry_keys, N_OF(retry_keys), &q->def.retry) < 0)
        return -1;
    if (q->def.retry.min_backoff_sec > q->def.retry.max_backoff_sec)
        return af_yw_failf(c, v,
                           "retry_parameters: min_backoff_seconds (%g) is larger than "
                           "max_backoff_seconds (%g)",
                           q->def.retry.min_backoff_sec, q->def.retry.max_backoff_sec);
    return 0;
}

static const struct af_yw_key queue_keys[] = {
    {"name", p_name},
    {"rate", p_rate},
    {"bucket_size", p_bucket},
    {"max_concurrent_requests", p_concurrent},
    {"mode", p_mode},
    {"target", p_target},
    {"retry_parameters", p_retry},
    {"acl", NULL}, /* pull-queue ACLs: everyone is allowed in development */
};

static void def_release(struct af_queue_def *d)
{
    free(d->name);
    free(d->rate_text);
    free(d->target);
    memset(d, 0, sizeof(*d));
}

/* Checks one parsed queue against the rules that span several keys. */
static int check_queue(struct af_yw *c, struct qy_queue *q)
{
    if (!q->def.name)
        return af_yw_failf(c, q->node, "a queue needs a name");
    bool is_default = strcmp(q->def.name, "default") == 0;
    if (q->def.pull) {
        if (is_default)
            return af_yw_failf(c, q->mode_node, "mode: the queue 'default' is always a push queue");
        const yaml_node_t *bad = q->rate_node     ? q->rate_node
                                 : q->bucket_node ? q->bucket_node
                                                  : q->conc_node;
        if (bad)
            return af_yw_failf(c, bad,
                               "queue '%s': a pull queue takes no rate, bucket_size or "
                               "max_concurrent_requests (its tasks are leased, not run)",
                               q->def.name);
        free(q->def.rate_text);
        q->def.rate_text = NULL;
        q->def.rate = 0;
        q->def.bucket_size = 0;
    } else if (!q->rate_node && !is_default) {
        return af_yw_failf(c, q->node, "queue '%s': a push queue needs a rate (for example 5/s)",
                           q->def.name);
    }
    return 0;
}

static int parse_queues(struct af_yw *c, const yaml_node_t *seq, struct af_queue_yaml *out)
{
    if (!seq || seq->type != YAML_SEQUENCE_NODE)
        return af_yw_failf(c, seq, "queue: expected a list of queues ('- name: ...')");
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++) {
        const yaml_node_t *item = yaml_document_get_node(c->doc, *it);
        if (out->n >= QY_MAX_QUEUES)
            return af_yw_failf(c, item, "more than %d queues", QY_MAX_QUEUES);
        struct qy_queue q = {.node = item};
        queue_defaults(&q.def, "");
        free(q.def.name);
        q.def.name = NULL;
        int rc = af_yw_walk_map(c, item, "a queue", queue_keys, N_OF(queue_keys), &q);
        if (rc == 0)
            rc = check_queue(c, &q);
        if (rc == 0) {
            for (size_t i = 0; i < out->n; i++) {
                if (strcmp(out->queues[i].name, q.def.name) == 0) {
                    rc = af_yw_failf(c, q.name_node, "queue '%s' is defined twice", q.def.name);
                    break;
                }
            }
        }
        if (rc < 0) {
            def_release(&q.def);
            return -1;
        }
        out->queues = af_xrealloc(out->queues, (out->n + 1) * sizeof(*out->queues));
        out->queues[out->n++] = q.def;
    }
    return 0;
}

static int p_top_queue(struct af_yw *c, const yaml_node_t *v, void *obj)
{
    return parse_queues(c, v, obj);
}

static const struct af_yw_key top_keys[] = {
    {"queue", p_top_queue},
    {"total_storage_limit", NULL}, /* a production quota; nothing to limit here */
};

/* Adds the queue "default" with production's settings unless the file
 * defined it. */
static void ensure_default(struct af_queue_yaml *q)
{
    if (af_queue_yaml_find(q, "default"))
        return;
    q->queues = af_xrealloc(q->queues, (q->n + 1) * sizeof(*q->queues));
    memmove(q->queues + 1, q->queues, q->n * sizeof(*q->queues));
    queue_defaults(&q->queues[0], "default");
    q->n++;
}

int af_queue_yaml_parse(const char *name, const char *text, size_t len, struct af_queue_yaml **out,
                        char *err, size_t errlen)
{
    struct af_yw c = {.name = name, .warn = true, .err = err, .errlen = errlen};
    struct af_queue_yaml *q = af_xcalloc(1, sizeof(*q));
    yaml_document_t doc;
    int rc = -1;
    err[0] = '\0';
    *out = NULL;

    if (af_yw_load(&c, text, len, &doc) < 0)
        goto out;
    const yaml_node_t *root = yaml_document_get_root_node(&doc);
    bool empty = !root || (root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0);
    if (empty || af_yw_walk_map(&c, root, "queue.yaml", top_keys, N_OF(top_keys), q) == 0) {
        ensure_default(q);
        rc = 0;
    }
    yaml_document_delete(&doc);
out:
    if (rc == 0)
        *out = q;
    else
        af_queue_yaml_free(q);
    return rc;
}

struct af_queue_yaml *af_queue_yaml_default(void)
{
    struct af_queue_yaml *q = af_xcalloc(1, sizeof(*q));
    ensure_default(q);
    return q;
}

int af_queue_yaml_load_dir(const char *dir, struct af_queue_yaml **out, char *err, size_t errlen)
{
    static const char *const names[] = {"queue.yaml", "queue.yml"};
    char *path, *text;
    size_t len;
    *out = NULL;
    int found = af_read_config_in(dir, names, N_OF(names), QY_MAX_FILE_BYTES, &path, &text, &len,
                                  err, errlen);
    if (found < 0)
        return -1;
    if (found == 0) {
        *out = af_queue_yaml_default();
        return 0;
    }
    int rc = af_queue_yaml_parse(path, text, len, out, err, errlen);
    free(text);
    if (rc == 0)
        (*out)->path = path;
    else
        free(path);
    return rc;
}

static char *dup_or_null(const char *s)
{
    return s ? af_xstrdup(s) : NULL;
}

struct af_queue_yaml *af_queue_yaml_copy(const struct af_queue_yaml *q)
{
    struct af_queue_yaml *c = af_xcalloc(1, sizeof(*c));
    c->n = q->n;
    c->queues = af_xcalloc(q->n ? q->n : 1, sizeof(*c->queues));
    for (size_t i = 0; i < q->n; i++) {
        c->queues[i] = q->queues[i];
        c->queues[i].name = af_xstrdup(q->queues[i].name);
        c->queues[i].rate_text = dup_or_null(q->queues[i].rate_text);
        c->queues[i].target = dup_or_null(q->queues[i].target);
    }
    c->path = dup_or_null(q->path);
    return c;
}

const struct af_queue_def *af_queue_yaml_find(const struct af_queue_yaml *q, const char *name)
{
    for (size_t i = 0; q && i < q->n; i++)
        if (strcmp(q->queues[i].name, name) == 0)
            return &q->queues[i];
    return NULL;
}

void af_queue_yaml_free(struct af_queue_yaml *q)
{
    if (!q)
        return;
    for (size_t i = 0; i < q->n; i++)
        def_release(&q->queues[i]);
    free(q->queues);
    free(q->path);
    free(q);
}
