/*
 * taskqueue — the "taskqueue" service (docs/taskqueue.md): push and pull
 * queues, tasks kept in SQLite (taskqueue_store.c), queues from queue.yaml
 * (taskqueue_yaml.c).
 *
 * Push tasks are run by the main thread's task runner (proxy/taskrunner.c),
 * which has no access to this state: it makes one internal call, RunnerPoll
 * (apiserver/backend.c, "internal calls"), carrying the outcome of the
 * tasks it ran and how many more it may run now; the answer is the tasks to
 * run and when to poll again. Everything that decides what runs when lives
 * here, on the backend thread:
 *
 *  - a task is due when its eta has passed and it is not running;
 *  - each push queue has a token bucket (rate, bucket_size) and a cap on
 *    tasks running at once (max_concurrent_requests);
 *  - a 2xx answer deletes the task (its name is kept as a tombstone); any
 *    other answer, or none, sets its eta to now + the backoff of its retry
 *    parameters (task's own over the queue's) until the retry limit and the
 *    age limit say it is dropped;
 *  - which tasks are running is memory only: after a restart every task is
 *    eligible again, so a task that was running when appfront died runs
 *    again (at least once, as in production).
 *
 * When an Add makes a task due before the time the runner was told to poll
 * again, the handler sets notify_main, and the runner polls at once.
 *
 * A task added with a datastore transaction waits in memory (struct
 * tq_pending, keyed by the transaction handle) and becomes a task only when
 * the datastore commits that transaction: the datastore calls this service
 * through txn_hooks.h, prepare (insert the tasks in an open SQLite
 * transaction) before it applies its writes, commit (COMMIT) after, abort
 * when the transaction ends any other way.
 *
 * Requests and responses use the official wire format, proto2 groups
 * included, through datastore_wire.c's translation (proto/taskqueue.proto).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "admin.pb-c.h"
#include "datastore_v3.pb-c.h"
#include "taskqueue.pb-c.h"

#include "apiserver/service.h"
#include "apiserver/services/datastore_wire.h"
#include "apiserver/services/taskqueue_store.h"
#include "apiserver/services/taskqueue_yaml.h"
#include "apiserver/services/txn_hooks.h"
#include "common/log.h"
#include "common/xalloc.h"

#define TQERR(name) AF__TASKQUEUE__TASK_QUEUE_SERVICE_ERROR__ERROR_CODE__##name
#define USEC 1000000LL

/* Production's limits. */
#define TQ_MAX_PUSH_TASK_BYTES (100 * 1024) /* a push task, encoded */
#define TQ_MAX_PULL_TASK_BYTES (1024 * 1024) /* a pull task, encoded */
#define TQ_MAX_BULK 100                      /* tasks in one BulkAdd */
#define TQ_MAX_TASK_NAME 500
#define TQ_MAX_URL 2083
#define TQ_MAX_TAG 500
#define TQ_MAX_ETA_AHEAD (30LL * 86400 * USEC) /* an eta at most 30 days ahead */
#define TQ_MAX_LEASE_SEC 604800.0              /* a lease of at most a week */
#define TQ_MAX_LEASE_TASKS 1000
#define TQ_MAX_QUERY_ROWS 1000
#define TQ_MAX_TXN_TASKS 5 /* tasks added in one datastore transaction */
/* Our bound: transactional tasks wait in memory until their transaction
 * ends; without it, 256 open transactions (datastore.c) of 5 pull tasks of
 * 1 MiB could hold 1.25 GiB. */
#define TQ_MAX_PENDING_BYTES (64u << 20)
/* What production answers when the datastore refuses a transactional add
 * (an unknown transaction, more than 5 tasks): DATASTORE_ERROR plus the
 * datastore's code, here BAD_REQUEST (dev_appserver's taskqueue stub does
 * the same around datastore_v3.AddActions). */
#define TQ_DATASTORE_BAD_REQUEST                                                                   \
    (TQERR(DATASTORE_ERROR) + AF__DATASTORE__ERROR__ERROR_CODE__BAD_REQUEST)
/* A task handed to the runner that never came back (it cannot happen
 * unless the runner loses one) is eligible again after this. */
#define TQ_RUN_LEASE (15LL * 60 * USEC)

/* Completions per second over the last minute and per minute over the last
 * hour, for FetchQueueStats. */
struct tq_ring {
    int64_t sec_at[60];
    int32_t sec_n[60];
    int64_t min_at[60];
    int32_t min_n[60];
};

/* A queue's state in memory. */
struct tq_queue {
    const struct af_queue_def *def; /* into state->cfg */
    double tokens;
    int64_t tokens_at;
    int running;
    bool paused;
    struct tq_ring done;
};

/* The tasks added in one open datastore transaction, as the rows they
 * become when it commits (created is set then). */
struct tq_pending {
    struct tq_pending *next;
    uint64_t handle;
    struct af_tq_task tasks[TQ_MAX_TXN_TASKS];
    size_t n;
    size_t bytes; /* counted in tq_state.pending_bytes */
};

/* A push task handed to the runner and not reported back yet. */
struct tq_running {
    char *queue;
    char *name;
    uint64_t lease;
    int64_t expires;
};

struct tq_state {
    struct af_queue_yaml *cfg; /* owned copy */
    struct tq_queue *queues;   /* cfg->n entries */
    struct af_tq_store *store; /* NULL when the file could not be opened */
    char *store_err;
    struct tq_running *running;
    size_t n_running, cap_running;
    uint64_t next_lease;
    /* When the runner will poll on its own (wall clock, usec): INT64_MAX
     * when it waits for a notice. An Add due earlier sends one. */
    int64_t runner_wake_at;
    struct tq_pending *pending; /* transactional tasks, by transaction */
    size_t pending_bytes;
    /* Set between the hooks' prepare and commit or abort: its tasks are
     * inserted in the store's open SQLite transaction. */
    struct tq_pending *prepared;
};

static int64_t now_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * USEC + ts.tv_nsec / 1000;
}

/* ---- lifecycle -------------------------------------------------------- */

static void log_stored_queue(void *arg, const char *queue, int64_t n)
{
    struct tq_state *st = arg;
    if (af_queue_yaml_find(st->cfg, queue))
        af_info("taskqueue: %" PRId64 " task(s) waiting in queue '%s'", n, queue);
    else
        af_warn("taskqueue: %" PRId64 " task(s) are stored for queue '%s', which queue.yaml "
                "does not define: they are kept but not run",
                n, queue);
}

static void reset_queues(struct tq_state *st)
{
    int64_t now = now_usec();
    for (size_t i = 0; i < st->cfg->n; i++) {
        struct tq_queue *q = &st->queues[i];
        memset(q, 0, sizeof(*q));
        q->def = &st->cfg->queues[i];
        q->tokens = q->def->bucket_size;
        q->tokens_at = now;
    }
}

static const struct af_txn_listener tq_txn_listener;

static void *tq_create(const struct af_api_options *opts)
{
    struct tq_state *st = af_xcalloc(1, sizeof(*st));
    st->cfg = opts->queues ? af_queue_yaml_copy(opts->queues) : af_queue_yaml_default();
    st->queues = af_xcalloc(st->cfg->n, sizeof(*st->queues));
    reset_queues(st);
    st->runner_wake_at = INT64_MIN; /* the runner has not polled yet */
    char err[512];
    char *path = opts->storage_path ? af_xasprintf("%s/taskqueue.sqlite3", opts->storage_path)
                                    : af_xstrdup(":memory:");
    st->store = af_tq_store_open(path, err, sizeof(err));
    if (!st->store) {
        af_error("taskqueue: %s; every taskqueue call will fail", err);
        st->store_err = af_xstrdup(err);
    } else if (opts->clear_datastore) {
        /* Tasks are stored state like the datastore's, and often refer to
         * entities: a fresh datastore starts with no tasks (aetest relies
         * on it). */
        af_tq_store_clear(st->store);
        af_info("taskqueue: --clear_datastore: stored tasks removed");
    } else {
        af_tq_store_expire_tombstones(st->store, now_usec());
        af_tq_store_each_queue(st->store, log_stored_queue, st);
    }
    free(path);
    af_txn_listen(&tq_txn_listener, st);
    return st;
}

static void running_clear(struct tq_state *st)
{
    for (size_t i = 0; i < st->n_running; i++) {
        free(st->running[i].queue);
        free(st->running[i].name);
    }
    st->n_running = 0;
}

static void pending_drop_all(struct tq_state *st);

static void tq_clear(void *state)
{
    struct tq_state *st = state;
    /* Back to the empty state: tasks waiting for a transaction go too. */
    pending_drop_all(st);
    if (st->store)
        af_tq_store_clear(st->store);
    running_clear(st);
    reset_queues(st);
}

static void tq_destroy(void *state)
{
    struct tq_state *st = state;
    if (!st)
        return;
    af_txn_unlisten(&tq_txn_listener, st);
    pending_drop_all(st);
    running_clear(st);
    free(st->running);
    af_tq_store_close(st->store);
    free(st->store_err);
    free(st->queues);
    af_queue_yaml_free(st->cfg);
    free(st);
}

/* ---- helpers ------------------------------------------------------------ */

static struct tq_queue *find_queue(struct tq_state *st, const char *name)
{
    for (size_t i = 0; i < st->cfg->n; i++)
        if (strcmp(st->cfg->queues[i].name, name) == 0)
            return &st->queues[i];
    return NULL;
}

/* A bytes field as a NUL-terminated string (malloc'd), or NULL when it holds
 * a NUL byte. */
static char *bytes_str(const ProtobufCBinaryData *b)
{
    if (b->len && memchr(b->data, '\0', b->len))
        return NULL;
    return af_xstrndup(b->len ? (const char *)b->data : "", b->len);
}

static bool store_ready(struct tq_state *st, struct af_result *res)
{
    if (st->store)
        return true;
    af_result_app_error(res, TQERR(INTERNAL_ERROR), "taskqueue: no storage: %s", st->store_err);
    return false;
}

static void internal_error(struct af_result *res)
{
    af_result_app_error(res, TQERR(INTERNAL_ERROR),
                        "taskqueue: the task store failed (see appfront's log)");
}

/* Checks a queue name of a request: well-formed, and a queue that exists.
 * Returns the queue, or NULL with res set. want_pull: 0 push, 1 pull, -1
 * either. */
static struct tq_queue *request_queue(struct tq_state *st, const ProtobufCBinaryData *name,
                                      int want_pull, char **out_name, struct af_result *res)
{
    *out_name = NULL;
    char *s = bytes_str(name);
    if (!s || !af_queue_name_is_valid(s, strlen(s))) {
        af_result_app_error(res, TQERR(INVALID_QUEUE_NAME),
                            "taskqueue: \"%.100s\" is not a queue name (1 to %d letters, "
                            "digits and '-')",
                            s ? s : "(holds a NUL byte)", AF_QUEUE_NAME_MAX);
        free(s);
        return NULL;
    }
    struct tq_queue *q = find_queue(st, s);
    if (!q) {
        af_result_app_error(res, TQERR(UNKNOWN_QUEUE),
                            "taskqueue: there is no queue \"%s\": define it in queue.yaml", s);
        free(s);
        return NULL;
    }
    if (want_pull >= 0 && q->def->pull != (want_pull == 1)) {
        af_result_app_error(res, TQERR(INVALID_QUEUE_MODE),
                            "taskqueue: queue \"%s\" is a %s queue; this call is for %s queues", s,
                            q->def->pull ? "pull" : "push", want_pull ? "pull" : "push");
        free(s);
        return NULL;
    }
    *out_name = s;
    return q;
}

static bool valid_task_name(const char *s, size_t len)
{
    if (len == 0 || len > TQ_MAX_TASK_NAME)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return false;
    }
    return true;
}

/* RFC 9110 §5.6.2 token characters, for header names. */
static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool valid_header(const ProtobufCBinaryData *k, const ProtobufCBinaryData *v)
{
    if (k->len == 0 || k->len > 256 || v->len > 8192)
        return false;
    for (size_t i = 0; i < k->len; i++)
        if (!is_tchar(k->data[i]))
            return false;
    for (size_t i = 0; i < v->len; i++)
        if (v->data[i] == '\r' || v->data[i] == '\n' || v->data[i] == '\0')
            return false;
    return true;
}

static bool valid_url(const ProtobufCBinaryData *u)
{
    if (u->len == 0 || u->len > TQ_MAX_URL || u->data[0] != '/')
        return false;
    for (size_t i = 0; i < u->len; i++)
        if (u->data[i] <= 0x20 || u->data[i] == 0x7f)
            return false;
    return true;
}

static const char *const method_names[] = {[1] = "GET", [2] = "POST", [3] = "HEAD", [4] = "PUT",
                                           [5] = "DELETE"};

static const char *method_name(int m)
{
    return m >= 1 && m <= 5 ? method_names[m] : "POST";
}

/* The retry parameters of a task: the queue's, overridden field by field
 * by the task's own. */
static void task_retry(const struct tq_queue *q, const Af__Taskqueue__TaskQueueRetryParameters *p,
                       struct af_queue_retry *r)
{
    if (q)
        *r = q->def->retry;
    else
        af_queue_retry_defaults(r);
    if (!p)
        return;
    if (p->has_retry_limit)
        r->retry_limit = p->retry_limit;
    if (p->has_age_limit_sec)
        r->age_limit_sec = p->age_limit_sec;
    if (p->has_min_backoff_sec)
        r->min_backoff_sec = p->min_backoff_sec;
    if (p->has_max_backoff_sec)
        r->max_backoff_sec = p->max_backoff_sec;
    if (p->has_max_doublings)
        r->max_doublings = p->max_doublings;
}

static bool valid_retry(const Af__Taskqueue__TaskQueueRetryParameters *p)
{
    if (!p)
        return true;
    double min = p->has_min_backoff_sec ? p->min_backoff_sec : 0;
    double max = p->has_max_backoff_sec ? p->max_backoff_sec : INFINITY;
    return !(p->has_retry_limit && p->retry_limit < 0) &&
           !(p->has_age_limit_sec && p->age_limit_sec < 0) && !(min < 0) && !isnan(min) &&
           !(max < min) && !(p->has_max_doublings && p->max_doublings < 0);
}

/*
 * Seconds to wait after the n-th failure (n >= 1): min_backoff doubled for
 * each failure up to max_doublings times, then growing by the last doubled
 * step each time, never over max_backoff (production's rule).
 */
static double backoff_sec(const struct af_queue_retry *r, int32_t n)
{
    int32_t k = n > 0 ? n - 1 : 0;
    int32_t d = r->max_doublings < 0 ? 0 : r->max_doublings;
    double b = k <= d ? r->min_backoff_sec * ldexp(1.0, k)
                      : r->min_backoff_sec * ldexp(1.0, d) * (double)(1 + k - d);
    if (!(b <= r->max_backoff_sec))
        b = r->max_backoff_sec;
    return b < 0 ? 0 : b;
}

/* Whether a task that failed retry_count times and first ran at first_try
 * has used up its retries. With both limits set, both must be reached. */
static bool retries_exhausted(const struct af_queue_retry *r, int32_t retry_count,
                              int64_t first_try, int64_t now)
{
    bool has_count = r->retry_limit >= 0, has_age = r->age_limit_sec >= 0;
    bool over_count = has_count && retry_count > r->retry_limit;
    bool over_age = has_age && first_try > 0 && now - first_try > r->age_limit_sec * USEC;
    if (has_count && has_age)
        return over_count && over_age;
    return over_count || over_age;
}

/* A fresh task name: 19 random decimal digits, like production's. */
static char *generate_name(void)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
        r = ((uint64_t)rand() << 32) ^ (uint64_t)rand() ^ (uint64_t)now_usec();
    return af_xasprintf("%019" PRIu64, (uint64_t)(r % 10000000000000000000ULL));
}

static void ring_record(struct tq_ring *g, int64_t now)
{
    int64_t s = now / USEC, m = s / 60;
    int i = (int)(s % 60), j = (int)(m % 60);
    if (g->sec_at[i] != s) {
        g->sec_at[i] = s;
        g->sec_n[i] = 0;
    }
    g->sec_n[i]++;
    if (g->min_at[j] != m) {
        g->min_at[j] = m;
        g->min_n[j] = 0;
    }
    g->min_n[j]++;
}

static void ring_counts(const struct tq_ring *g, int64_t now, int64_t *minute, int64_t *hour)
{
    int64_t s = now / USEC, m = s / 60;
    *minute = *hour = 0;
    for (int i = 0; i < 60; i++) {
        if (g->sec_n[i] && s - g->sec_at[i] < 60)
            *minute += g->sec_n[i];
        if (g->min_n[i] && m - g->min_at[i] < 60)
            *hour += g->min_n[i];
    }
}

/* ---- Add and BulkAdd ----------------------------------------------------- */

/* Checks one add request. Returns OK or the error code, with a message for
 * a person in why. */
static int check_add(struct tq_state *st, const Af__Taskqueue__TaskQueueAddRequest *a,
                     int64_t now, char *why, size_t whylen)
{
    char *qname = bytes_str(&a->queue_name);
    int code = TQERR(OK);
    if (!qname || !af_queue_name_is_valid(qname, strlen(qname))) {
        snprintf(why, whylen, "\"%.100s\" is not a queue name (1 to %d letters, digits and '-')",
                 qname ? qname : "(holds a NUL byte)", AF_QUEUE_NAME_MAX);
        code = TQERR(INVALID_QUEUE_NAME);
        goto out;
    }
    struct tq_queue *q = find_queue(st, qname);
    if (!q) {
        snprintf(why, whylen, "there is no queue \"%s\": define it in queue.yaml", qname);
        code = TQERR(UNKNOWN_QUEUE);
        goto out;
    }
    if (a->transaction && a->task_name.len) {
        /* Production's rule (and the SDKs' own check): the name is chosen
         * here, so that a retried transaction cannot collide with itself. */
        snprintf(why, whylen, "a task bound to a transaction cannot be named (\"%.*s\")",
                 (int)(a->task_name.len > 100 ? 100 : a->task_name.len),
                 (const char *)a->task_name.data);
        code = TQERR(INVALID_TASK_NAME);
        goto out;
    }
    if (a->task_name.len &&
        !valid_task_name((const char *)a->task_name.data, a->task_name.len)) {
        snprintf(why, whylen, "\"%.*s\" is not a task name (1 to %d letters, digits, '-' and '_')",
                 (int)(a->task_name.len > 100 ? 100 : a->task_name.len),
                 (const char *)a->task_name.data, TQ_MAX_TASK_NAME);
        code = TQERR(INVALID_TASK_NAME);
        goto out;
    }
    if (a->eta_usec < 0 || a->eta_usec > now + TQ_MAX_ETA_AHEAD) {
        snprintf(why, whylen, "eta %" PRId64 " usec is %s", a->eta_usec,
                 a->eta_usec < 0 ? "negative" : "more than 30 days ahead");
        code = TQERR(INVALID_ETA);
        goto out;
    }
    bool pull = a->has_mode && a->mode == AF__TASKQUEUE__TASK_QUEUE_MODE__MODE__PULL;
    if (pull != q->def->pull) {
        snprintf(why, whylen, "a %s task cannot go to the %s queue \"%s\"", pull ? "pull" : "push",
                 q->def->pull ? "pull" : "push", qname);
        code = TQERR(INVALID_QUEUE_MODE);
        goto out;
    }
    size_t size = protobuf_c_message_get_packed_size(&a->base);
    size_t limit = pull ? TQ_MAX_PULL_TASK_BYTES : TQ_MAX_PUSH_TASK_BYTES;
    if (size > limit) {
        snprintf(why, whylen, "the task is %zu bytes; a %s task may have at most %zu", size,
                 pull ? "pull" : "push", limit);
        code = TQERR(TASK_TOO_LARGE);
        goto out;
    }
    if (!pull) {
        if (a->has_url && !valid_url(&a->url)) {
            snprintf(why, whylen, "the url must be a path starting with '/', without spaces or "
                                  "control characters, at most %d bytes",
                     TQ_MAX_URL);
            code = TQERR(INVALID_URL);
            goto out;
        }
        int m = a->has_method ? (int)a->method : 2;
        if (m < 1 || m > 5) {
            snprintf(why, whylen, "unknown method %d", m);
            code = TQERR(INVALID_REQUEST);
            goto out;
        }
        if (a->has_body && a->body.len && m != 2 && m != 4) {
            snprintf(why, whylen, "only POST and PUT tasks may have a body, not %s",
                     method_name(m));
            code = TQERR(INVALID_REQUEST);
            goto out;
        }
        for (size_t i = 0; i < a->n_header; i++) {
            if (!valid_header(&a->header[i]->key, &a->header[i]->value)) {
                snprintf(why, whylen, "header %zu is not a valid HTTP field (a token name, a "
                                      "value without CR, LF or NUL)",
                         i + 1);
                code = TQERR(INVALID_REQUEST);
                goto out;
            }
        }
    }
    if (a->has_tag && a->tag.len > TQ_MAX_TAG) {
        snprintf(why, whylen, "the tag is %zu bytes; at most %d", a->tag.len, TQ_MAX_TAG);
        code = TQERR(INVALID_TAG);
        goto out;
    }
    if (!valid_retry(a->retry_parameters)) {
        snprintf(why, whylen, "retry parameters must be >= 0, with min_backoff_sec <= "
                              "max_backoff_sec");
        code = TQERR(INVALID_RETRY_PARAMETERS);
        goto out;
    }
out:
    free(qname);
    return code;
}

/* The row of one checked add request, without its name (t->name NULL). */
static void task_row(Af__Taskqueue__TaskQueueAddRequest *a, int64_t now, struct af_tq_task *t)
{
    memset(t, 0, sizeof(*t));
    t->queue = bytes_str(&a->queue_name);
    t->pull = a->has_mode && a->mode == AF__TASKQUEUE__TASK_QUEUE_MODE__MODE__PULL;
    t->eta = a->eta_usec;
    t->created = now;
    if (a->has_tag) {
        t->tag = af_xmalloc(a->tag.len ? a->tag.len : 1);
        memcpy(t->tag, a->tag.data, a->tag.len);
        t->tag_len = a->tag.len;
    }
    /* Stored in protobuf-c's own encoding, without what the row holds
     * already or what is not kept. */
    Af__Taskqueue__Transaction *txn = a->transaction;
    ProtobufCBinaryData qn = a->queue_name, tn = a->task_name;
    a->transaction = NULL;
    a->queue_name.len = a->task_name.len = 0;
    t->request_len = protobuf_c_message_get_packed_size(&a->base);
    t->request = af_xmalloc(t->request_len ? t->request_len : 1);
    protobuf_c_message_pack(&a->base, t->request);
    a->transaction = txn;
    a->queue_name = qn;
    a->task_name = tn;
}

/* Stores one checked add request under its name (chosen when empty).
 * Returns OK, TASK_ALREADY_EXISTS, TOMBSTONED_TASK or INTERNAL_ERROR. */
static int store_add(struct tq_state *st, Af__Taskqueue__TaskQueueAddRequest *a, int64_t now,
                     char **chosen)
{
    struct af_tq_task t;
    task_row(a, now, &t);
    bool generated = a->task_name.len == 0;
    int code = TQERR(OK);
    enum af_tq_name_state ns = AF_TQ_NAME_FREE;
    for (int tries = 0; tries < 5; tries++) {
        free(t.name);
        t.name = generated ? generate_name() : bytes_str(&a->task_name);
        if (af_tq_store_name_state(st->store, t.queue, t.name, now, &ns) < 0) {
            code = TQERR(INTERNAL_ERROR);
            goto out;
        }
        if (ns == AF_TQ_NAME_FREE || !generated)
            break;
    }
    if (ns == AF_TQ_NAME_TASK) {
        code = TQERR(TASK_ALREADY_EXISTS);
        goto out;
    }
    if (ns == AF_TQ_NAME_TOMBSTONE) {
        code = TQERR(TOMBSTONED_TASK);
        goto out;
    }
    if (af_tq_store_insert(st->store, &t) < 0) {
        code = TQERR(INTERNAL_ERROR);
        goto out;
    }
    *chosen = t.name;
    t.name = NULL;
out:
    af_tq_task_release(&t);
    return code;
}

/* ---- transactional adds ---------------------------------------------------- */

static struct tq_pending *pending_find(struct tq_state *st, uint64_t handle)
{
    for (struct tq_pending *p = st->pending; p; p = p->next)
        if (p->handle == handle)
            return p;
    return NULL;
}

static void pending_free(struct tq_state *st, struct tq_pending *p)
{
    for (size_t i = 0; i < p->n; i++)
        af_tq_task_release(&p->tasks[i]);
    st->pending_bytes -= p->bytes;
    free(p);
}

/* Unlinks and frees p. */
static void pending_drop(struct tq_state *st, struct tq_pending *p)
{
    for (struct tq_pending **pp = &st->pending; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    if (st->prepared == p) {
        af_tq_store_rollback(st->store);
        st->prepared = NULL;
    }
    pending_free(st, p);
}

static void pending_drop_all(struct tq_state *st)
{
    while (st->pending)
        pending_drop(st, st->pending);
}

/* Which transaction the tasks of one call belong to: 0 none, 1 all to
 * *handle, -1 a mix (a client bug: the libraries set one for all). */
static int bulk_txn(Af__Taskqueue__TaskQueueAddRequest **adds, size_t n, uint64_t *handle)
{
    size_t with = 0;
    for (size_t i = 0; i < n; i++) {
        if (!adds[i]->transaction)
            continue;
        if (with && adds[i]->transaction->handle != *handle)
            return -1;
        *handle = adds[i]->transaction->handle;
        with++;
    }
    return with == 0 ? 0 : with == n ? 1 : -1;
}

/*
 * Keeps checked add requests until transaction handle ends. Each gets a
 * name now, sent back as production does. Fills results and names as
 * bulk_add; returns false with res set when the whole call fails.
 */
static bool pending_add(struct tq_state *st, uint64_t handle,
                        Af__Taskqueue__TaskQueueAddRequest **adds, size_t n, int *results,
                        char **names, struct af_result *res)
{
    if (!af_txn_touch(handle)) {
        af_result_app_error(res, TQ_DATASTORE_BAD_REQUEST,
                            "taskqueue: datastore transaction %" PRIu64
                            " does not exist (already committed or rolled back, or expired)",
                            handle);
        return false;
    }
    struct tq_pending *p = pending_find(st, handle);
    size_t have = p ? p->n : 0;
    if (have + n > TQ_MAX_TXN_TASKS) {
        af_result_app_error(res, TQ_DATASTORE_BAD_REQUEST,
                            "taskqueue: too many transactional tasks: a transaction may add at "
                            "most %d (transaction %" PRIu64 " has %zu, this call adds %zu)",
                            TQ_MAX_TXN_TASKS, handle, have, n);
        return false;
    }
    struct af_tq_task rows[TQ_MAX_TXN_TASKS];
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        task_row(adds[i], 0, &rows[i]);
        bytes += rows[i].request_len + rows[i].tag_len;
    }
    if (st->pending_bytes + bytes > TQ_MAX_PENDING_BYTES) {
        for (size_t i = 0; i < n; i++)
            af_tq_task_release(&rows[i]);
        af_result_app_error(res, TQERR(TRANSACTIONAL_REQUEST_TOO_LARGE),
                            "taskqueue: transactional tasks of open transactions hold %zu bytes; "
                            "at most %u wait at once: commit or roll back some",
                            st->pending_bytes, TQ_MAX_PENDING_BYTES);
        return false;
    }
    if (!p) {
        p = af_xcalloc(1, sizeof(*p));
        p->handle = handle;
        p->next = st->pending;
        st->pending = p;
    }
    for (size_t i = 0; i < n; i++) {
        /* Checked against the store when the transaction commits. */
        rows[i].name = generate_name();
        names[i] = af_xstrdup(rows[i].name);
        results[i] = TQERR(OK);
        p->tasks[p->n++] = rows[i];
    }
    p->bytes += bytes;
    st->pending_bytes += bytes;
    return true;
}

/* txn_hooks: inserts the transaction's tasks in an open SQLite transaction
 * of the store, which commit or abort ends. */
static int tq_txn_prepare(void *arg, uint64_t handle, char *why, size_t whylen)
{
    struct tq_state *st = arg;
    struct tq_pending *p = pending_find(st, handle);
    if (!p)
        return 0;
    if (!st->store) {
        snprintf(why, whylen, "the task queue has no storage for its transactional tasks: %s",
                 st->store_err);
        return -1;
    }
    if (af_tq_store_begin(st->store) < 0)
        goto fail;
    int64_t now = now_usec();
    for (size_t i = 0; i < p->n; i++) {
        struct af_tq_task *t = &p->tasks[i];
        enum af_tq_name_state ns;
        if (af_tq_store_name_state(st->store, t->queue, t->name, now, &ns) < 0)
            goto fail;
        /* 19 random digits: a clash is next to impossible, but a task
         * must never replace another one. */
        if (ns != AF_TQ_NAME_FREE) {
            af_tq_store_rollback(st->store);
            snprintf(why, whylen,
                     "the name chosen for a transactional task, \"%s\" in queue \"%s\", "
                     "was taken meanwhile",
                     t->name, t->queue);
            return -1;
        }
        t->created = now;
        if (af_tq_store_insert(st->store, t) < 0)
            goto fail;
    }
    st->prepared = p;
    return 0;
fail:
    af_tq_store_rollback(st->store);
    snprintf(why, whylen, "the task queue could not store its transactional tasks (see "
                          "appfront's log)");
    return -1;
}

static int tq_txn_commit(void *arg, uint64_t handle, bool *notify, char *why, size_t whylen)
{
    struct tq_state *st = arg;
    struct tq_pending *p = pending_find(st, handle);
    if (!p)
        return 0;
    int rc = -1;
    /* Prepared is always p here (the datastore prepares, applies, then
     * commits within one call); anything else stores nothing. */
    if (st->prepared == p) {
        st->prepared = NULL;
        rc = af_tq_store_commit(st->store);
    }
    if (rc < 0) {
        for (size_t i = 0; i < p->n; i++)
            af_error("taskqueue: transaction %" PRIu64 " committed, but its task '%s' of "
                     "queue '%s' could not be stored: it is lost",
                     handle, p->tasks[i].name, p->tasks[i].queue);
        snprintf(why, whylen, "its %zu transactional task(s) could not be stored and are lost "
                              "(see appfront's log)",
                 p->n);
    } else {
        int64_t earliest = INT64_MAX;
        for (size_t i = 0; i < p->n; i++)
            if (!p->tasks[i].pull && p->tasks[i].eta < earliest)
                earliest = p->tasks[i].eta;
        /* As for an Add: the runner hears of a task due before its next
         * poll. */
        if (earliest < st->runner_wake_at) {
            *notify = true;
            st->runner_wake_at = earliest;
        }
    }
    pending_drop(st, p);
    return rc;
}

static void tq_txn_abort(void *arg, uint64_t handle)
{
    struct tq_state *st = arg;
    struct tq_pending *p = pending_find(st, handle);
    if (p)
        pending_drop(st, p);
}

static const struct af_txn_listener tq_txn_listener = {
    .service = "taskqueue",
    .prepare = tq_txn_prepare,
    .commit = tq_txn_commit,
    .abort = tq_txn_abort,
};

/*
 * Adds the tasks of a bulk request, production's way: when any task is
 * invalid nothing is added, the invalid ones get their error and the others
 * SKIPPED; otherwise each task is added unless its name is taken. Fills
 * results (n entries) and names (chosen names, malloc'd or NULL). Returns
 * false with res set when the whole call fails.
 */
static bool bulk_add(struct tq_state *st, Af__Taskqueue__TaskQueueAddRequest **adds, size_t n,
                     int *results, char **names, char *why, size_t whylen, struct af_result *res)
{
    int64_t now = now_usec();
    bool bad = false;
    why[0] = '\0';
    uint64_t handle = 0;
    int txn = bulk_txn(adds, n, &handle);
    if (txn < 0) {
        af_result_app_error(res, TQERR(INVALID_REQUEST),
                            "taskqueue: the tasks of one call must all belong to the same "
                            "datastore transaction, or none");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char one[300];
        results[i] = check_add(st, adds[i], now, one, sizeof(one));
        for (size_t j = 0; j < i && results[i] == TQERR(OK); j++) {
            if (adds[i]->task_name.len && adds[i]->task_name.len == adds[j]->task_name.len &&
                memcmp(adds[i]->task_name.data, adds[j]->task_name.data,
                       adds[i]->task_name.len) == 0 &&
                adds[i]->queue_name.len == adds[j]->queue_name.len &&
                memcmp(adds[i]->queue_name.data, adds[j]->queue_name.data,
                       adds[i]->queue_name.len) == 0) {
                results[i] = TQERR(DUPLICATE_TASK_NAME);
                snprintf(one, sizeof(one), "task %zu has the same name as task %zu", i + 1,
                         j + 1);
            }
        }
        if (results[i] != TQERR(OK)) {
            if (!bad)
                snprintf(why, whylen, "%s", one);
            bad = true;
        }
    }
    if (bad) {
        for (size_t i = 0; i < n; i++)
            if (results[i] == TQERR(OK))
                results[i] = TQERR(SKIPPED);
        return true;
    }
    if (txn)
        return pending_add(st, handle, adds, n, results, names, res);
    if (af_tq_store_begin(st->store) < 0) {
        internal_error(res);
        return false;
    }
    int64_t earliest = INT64_MAX;
    for (size_t i = 0; i < n; i++) {
        results[i] = store_add(st, adds[i], now, &names[i]);
        if (results[i] == TQERR(INTERNAL_ERROR)) {
            af_tq_store_rollback(st->store);
            for (size_t j = 0; j < n; j++) {
                free(names[j]);
                names[j] = NULL;
            }
            internal_error(res);
            return false;
        }
        bool pull = adds[i]->has_mode && adds[i]->mode == AF__TASKQUEUE__TASK_QUEUE_MODE__MODE__PULL;
        if (results[i] == TQERR(OK) && !pull && adds[i]->eta_usec < earliest)
            earliest = adds[i]->eta_usec;
        if (results[i] != TQERR(OK) && !why[0])
            snprintf(why, whylen, "task \"%.*s\" %s", (int)adds[i]->task_name.len,
                     (const char *)adds[i]->task_name.data,
                     results[i] == TQERR(TASK_ALREADY_EXISTS)
                         ? "already exists"
                         : "was deleted or has run recently (its name is kept for 7 days)");
    }
    if (af_tq_store_commit(st->store) < 0) {
        for (size_t j = 0; j < n; j++) {
            free(names[j]);
            names[j] = NULL;
        }
        internal_error(res);
        return false;
    }
    /* The runner polls again at runner_wake_at; a task due before then
     * needs a notice. */
    if (earliest < st->runner_wake_at) {
        res->notify_main = true;
        st->runner_wake_at = earliest;
    }
    return true;
}

static void tq_add(void *state, const struct af_call *call, struct af_result *res)
{
    struct tq_state *st = state;
    Af__Taskqueue__TaskQueueAddRequest *a = (Af__Taskqueue__TaskQueueAddRequest *)af_ds_wire_unpack(
        &af__taskqueue__task_queue_add_request__descriptor, call->request, call->request_len);
    if (!a) {
        af_result_app_error(res, TQERR(INVALID_REQUEST),
                            "taskqueue: cannot decode TaskQueueAddRequest");
        return;
    }
    if (!store_ready(st, res))
        goto done;
    int code;
    char *name = NULL;
    char why[400];
    if (!bulk_add(st, &a, 1, &code, &name, why, sizeof(why), res))
        goto done;
    if (code != TQERR(OK)) {
        af_result_app_error(res, code, "taskqueue: %s", why);
        goto done;
    }
    Af__Taskqueue__TaskQueueAddResponse out = AF__TASKQUEUE__TASK_QUEUE_ADD_RESPONSE__INIT;
    /* The name is sent back only when appfront chose it, as production. */
    if (a->task_name.len == 0) {
        out.has_chosen_task_name = true;
        out.chosen_task_name.data = (uint8_t *)name;
        out.chosen_task_name.len = strlen(name);
    }
    bool notify = res->notify_main;
    af_result_pack(res, &out.base);
    res->notify_main = notify;
    free(name);
done:
    protobuf_c_message_free_unpacked(&a->base, NULL);
}

static void tq_bulk_add(void *state, const struct af_call *call, struct af_result *res)
{
    struct tq_state *st = state;
    Af__Taskqueue__TaskQueueBulkAddRequest *b =
        (Af__Taskqueue__TaskQueueBulkAddRequest *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_bulk_add_request__descriptor, call->request,
            call->request_len);
    if (!b) {
        af_result_app_error(res, TQERR(INVALID_REQUEST),
                            "taskqueue: cannot decode TaskQueueBulkAddRequest");
        return;
    }
    if (!store_ready(st, res))
        goto done;
    size_t n = b->n_add_request;
    if (n > TQ_MAX_BULK) {
        af_result_app_error(res, TQERR(TOO_MANY_TASKS),
                            "taskqueue: %zu tasks in one call; at most %d", n, TQ_MAX_BULK);
        goto done;
    }
    int *codes = af_xcalloc(n ? n : 1, sizeof(*codes));
    char **names = af_xcalloc(n ? n : 1, sizeof(*names));
    char why[400];
    if (bulk_add(st, b->add_request, n, codes, names, why, sizeof(why), res)) {
        Af__Taskqueue__TaskQueueBulkAddResponse out =
            AF__TASKQUEUE__TASK_QUEUE_BULK_ADD_RESPONSE__INIT;
        Af__Taskqueue__TaskQueueBulkAddResponse__TaskResult *items =
            af_xcalloc(n ? n : 1, sizeof(*items));
        Af__Taskqueue__TaskQueueBulkAddResponse__TaskResult **ptrs =
            af_xcalloc(n ? n : 1, sizeof(*ptrs));
        for (size_t i = 0; i < n; i++) {
            af__taskqueue__task_queue_bulk_add_response__task_result__init(&items[i]);
            items[i].result = (Af__Taskqueue__TaskQueueServiceError__ErrorCode)codes[i];
            if (names[i] && b->add_request[i]->task_name.len == 0) {
                items[i].has_chosen_task_name = true;
                items[i].chosen_task_name.data = (uint8_t *)names[i];
                items[i].chosen_task_name.len = strlen(names[i]);
            }
            ptrs[i] = &items[i];
        }
        out.n_taskresult = n;
        out.taskresult = ptrs;
        size_t len;
        uint8_t *buf = af_ds_wire_pack(&out.base, &len);
        bool notify = res->notify_main;
        af_result_ok(res, buf, len);
        res->notify_main = notify;
        free(items);
        free(ptrs);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(codes);
done:
    protobuf_c_message_free_unpacked(&b->base, NULL);
}

/* ---- Delete, PurgeQueue, ForceRun ---------------------------------------- */

static void tq_delete(void *state, const struct af_call *call, struct af_result *res)
{
    struct tq_state *st = state;
    Af__Taskqueue__TaskQueueDeleteRequest *d =
        (Af__Taskqueue__TaskQueueDeleteRequest *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_delete_request__descriptor, call->request,
            call->request_len);
    if (!d) {
        af_result_app_error(res, TQERR(INVALID_REQUEST),
                            "taskqueue: cannot decode TaskQueueDeleteRequest");
        return;
    }
    char *qname = NULL;
    if (!store_ready(st, res) || !request_queue(st, &d->queue_name, -1, &qname, res))
        goto done;
    int64_t now = now_usec();
    Af__Taskqueue__TaskQueueServiceError__ErrorCode *codes =
        af_xcalloc(d->n_task_name ? d->n_task_name : 1, sizeof(*codes));
    for (size_t i = 0; i < d->n_task_name; i++) {
        char *name = bytes_str(&d->task_name[i]);
        bool removed = false;
        enum af_tq_name_state ns = AF_TQ_NAME_FREE;
        if (!name || !valid_task_name(name, strlen(name))) {
            codes[i] = TQERR(INVALID_TASK_NAME);
        } else if (af_tq_store_delete(st->store, qname, name, true, now, &removed) < 0 ||
                   (!removed && af_tq_store_name_state(st->store, qname, name, now, &ns) < 0)) {
            codes[i] = TQERR(INTERNAL_ERROR);
        } else {
            codes[i] = removed                         ? TQERR(OK)
                       : ns == AF_TQ_NAME_TOMBSTONE ? TQERR(TOMBSTONED_TASK)
                                                    : TQERR(UNKNOWN_TASK);
        }
        free(name);
    }
    Af__Taskqueue__TaskQueueDeleteResponse out = AF__TASKQUEUE__TASK_QUEUE_DELETE_RESPONSE__INIT;
    out.n_result = d->n_task_name;
    out.result = codes;
    af_result_pack(res, &out.base);
    free(codes);
done:
    free(qname);
    protobuf_c_message_free_unpacked(&d->base, NULL);
}

static void tq_purge_queue(void *state, const struct af_call *call, struct af_result *res)
{
    struct tq_state *st = state;
    Af__Taskqueue__TaskQueuePurgeQueueRequest *p =
        (Af__Taskqueue__TaskQueuePurgeQueueRequest *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_purge_queue_request__descriptor, call->request,
            call->request_len);
    if (!p) {
        af_result_app_error(res, TQERR(INVALID_REQUEST),
                            "taskqueue: cannot decode TaskQueuePurgeQueueRequest");
        return;
    }
    char *qname = NULL;
    if (!store_ready(st, res) || !request_queue(st, &p->queue_name, -1, &qname, res))
        goto done;
    if (af_tq_store_purge(st->store, qname) < 0) {
        internal_error(res);
        goto done;
    }
    af_info("taskqueue: queue '%s' purged", qname);
    af_result_ok(res, NULL, 0);
done:
    free(qname);
    protobuf_c_message_free_unpacked(&p->base, NULL);
}

/* Loads (queue, name) for a call on one task. Returns false with res set
 * when it is not there. */
static bool load_task(struct tq_state *st, const char *qname, const ProtobufCBinaryData *n,
                      struct af_tq_task *t, struct af_result *res)
{
    char *name = bytes_str(n);
    bool found = false;
    enum af_tq_name_state ns = AF_TQ_NAME_FREE;
    if (!name || !valid_task_name(name, strlen(name))) {
        af_result_app_error(res, TQERR(INVALID_TASK_NAME), "taskqueue: \"%.100s\" is not a task "
                                                           "name",
                            name ? name : "(holds a NUL byte)");
    } else if (af_tq_store_get(st->store, qname, name, t, &found) < 0 ||
               (!found && af_tq_store_name_state(st->store, qname, name, now_usec(), &ns) < 0)) {
        internal_error(res);
    } else if (!found) {
        af_result_app_error(res,
                            ns == AF_TQ_NAME_TOMBSTONE ? TQERR(TOMBSTONED_TASK) : TQERR(UNKNOWN_TASK),
                            "taskqueue: no task \"%s\" in queue \"%s\"%s", name, qname,
                            ns == AF_TQ_NAME_TOMBSTONE ? " (it was deleted or has run)" : "");
    }
    free(name);
    return found;
}

static void tq_force_run(void *state, const struct af_call *call, struct af_result *res)
{
    struct tq_state *st = state;
    Af__Taskqueue__TaskQueueForceRunRequest *f =
        (Af__Taskqueue__TaskQueueForceRunRequest *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_force_run_request__descriptor, call->request,
            call->request_len);
    if (!f) {
        af_result_app_error(res, TQERR(INVALID_REQUEST),
                            "taskqueue: cannot decode TaskQueueForceRunRequest");
        return;
    }
    char *qname = NULL;
    struct af_tq_task t = {0};
    if (!store_ready(st, res) || !request_queue(st, &f->queue_name, 0, &qname, res) ||
        !load_task(st, qname, &f->task_name, &t, res))
        goto done;
    t.eta = now_usec();
    if (af_tq_store_update(st->store, &t) < 0) {
        internal_error(res);
        goto done;
    }
    Af__Taskqueue__TaskQueueForceRunResponse out =
        AF__TASKQUEUE__TASK_QUEUE_FORCE_RUN_RESPONSE__INIT;
    out.result = TQERR(OK);
    af_result_pack(res, &out.base);
    res->notify_main = true;
    st->runner_wake_at = t.eta;
done:
    af_tq_task_release(&t);
    free(qname);
    protobuf_c_message_free_unpacked(&f->base, NULL);
}

/* ---- QueryTasks and FetchTask ---------------------------------------------- */

/* The QueryTasksResponse.Task of a stored task, pointing into t and into
 * *req (which the caller frees with protobuf_c_message_free_unpacked). */
struct qt_item {
    Af__Taskqueue__TaskQueueQueryTasksResponse__Task task;
    Af__Taskqueue__TaskQueueQueryTasksResponse__Task__Header *headers;
    Af__Taskqueue__TaskQueueQueryTasksResponse__Task__Header **header_ptrs;
    Af__Taskqueue__TaskQueueAddRequest *req;
};

static void qt_item_fill(struct qt_item *it, const struct af_tq_task *t)
{
    memset(it, 0, sizeof(*it));
    Af__Taskqueue__TaskQueueQueryTasksResponse__Task *o = &it->task;
    af__taskqueue__task_queue_query_tasks_response__task__init(o);
    o->task_name.data = (uint8_t *)t->name;
    o->task_name.len = strlen(t->name);
    o->eta_usec = t->eta;
    o->creation_time_usec = t->created;
    o->has_retry_count = true;
    o->retry_count = t->retry_count;
    o->has_execution_count = true;
    o->execution_count = t->exec_count;
    if (t->first_try) {
        o->has_first_try_usec = true;
        o->first_try_usec = t->first_try;
    }
    if (t->tag) {
        o->has_tag = true;
        o->tag.data = t->tag;
        o->tag.len = t->tag_len;
    }
    it->req = af__taskqueue__task_queue_add_request__unpack(NULL, t->request_len, t->request);
    const Af__Taskqueue__TaskQueueAddRequest *a = it->req;
    if (!a)
        return;
    if (a->has_body) {
        o->has_body = true;
        o->body = a->body;
        o->has_body_size = true;
        o->body_size = (int32_t)a->body.len;
    }
    o->retry_parameters = a->retry_parameters;
    if (a->has_description) {
        o->has_description = true;
        o->description = a->description;
    }
    if (t->pull)
        return;
    o->has_url = true;
    o->url = a->url;
    o->has_method = true;
    o->method = (Af__Taskqueue__TaskQueueQueryTasksResponse__Task__RequestMethod)(
        a->has_method ? a->method : AF__TASKQUEUE__TASK_QUEUE_ADD_REQUEST__REQUEST_METHOD__POST);
    size_t nh = a->n_header;
    it->headers = af_xcalloc(nh ? nh : 1, sizeof(*it->headers));
    it->header_ptrs = af_xcalloc(nh ? nh : 1, sizeof(*it->header_ptrs));
    for (size_t i = 0; i < nh; i++) {
        af__taskqueue__task_queue_query_tasks_response__task__header__init(&it->headers[i]);
        it->headers[i].key = a->header[i]->key;
        it->headers[i].value = a->header[i]->value;
        it->header_ptrs[i] = &it->headers[i];
    }
    o->n_header = nh;
    o->header = it->header_ptrs;
    if (t->last_status) {
        /* Only the outcome is kept, not the timing of the last run. */
    }
}

static void qt_item_release(struct qt_item *it)
{
    free(it->headers);
    free(it->header_ptrs);
    if (it->req)
        af__taskqueue__task_queue_add_request__free_unpacked(it->req, NULL);
}

static void pack_tasks(const struct af_tq_task *tasks, size_t n, struct af_result *res)
{
    struct qt_item *items = af_xcalloc(n ? n : 1, sizeof(*items));
    Af__Taskqueue__TaskQueueQueryTasksResponse__Task **ptrs = af_xcalloc(n ? n : 1, sizeof(*ptrs));
    for (size_t i = 0; i < n; i++) {
        qt_item_fill(&items[i], &tasks[i]);
        ptrs[i] = &items[i].task;
    }
    Af__Taskqueue__TaskQueueQueryTasksResponse out =
        AF__TASKQUEUE__TASK_QUEUE_QUERY_TASKS_RESPONSE__INIT;
    out.n_task = n;
    out.task = ptrs;
    size_t len;
    uint8_t *buf = af_ds_wire_pack(&out.base, &len);
    af_result_ok(res, buf, len);
    for (size_t i = 0; i < n; i++)
        qt_item_release(&items[i]);
    free(items);
    free(ptrs);
}

static void tq_query_tasks(void *state, const struct af_call *call, struct af_result *res)
{
    struct tq_state *st = state;
    Af__Taskqueue__TaskQueueQueryTasksRequest *q =
        (Af__Taskqueue__TaskQueueQueryTasksRequest *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_query_tasks_request__descriptor, call->request,
            call->request_len);
    if (!q) {
        af_result_app_error(res, TQERR(INVALID_REQUEST),
                            "taskqueue: cannot decode TaskQueueQueryTasksRequest");
        return;
    }
    char *qname = NULL, *start = NULL;
    if (!store_ready(st, res) || !request_queue(st, &q->queue_name, -1, &qname, res))
        goto done;
    int32_t rows = q->has_max_rows ? q->max_rows : 1;
    if (rows < 0 || rows > TQ_MAX_QUERY_ROWS) {
        af_result_app_error(res, TQERR(INVALID_REQUEST),
                            "taskqueue: max_rows %d is not from 0 to %d", rows, TQ_MAX_QUERY_ROWS);
        goto done;
    }
    start = q->has_start_task_name ? bytes_str(&q->start_task_name) : af_xstrdup("");
    if (!start) {
        af_result_app_error(res, TQERR(INVALID_TASK_NAME), "taskqueue: bad start_task_name");
        goto done;
    }
    struct af_tq_query sel = {
        .queue = qname,
        .pull = -1,
        .by_name = !q->has_start_eta_usec,
        .start_eta = q->has_start_eta_usec ? q->start_eta_usec : INT64_MIN,
        .start_name = start,
        .limit = (size_t)rows,
    };
    if (q->has_start_tag) {
        sel.match_tag = true;
        sel.tag = q->start_tag.data;
        sel.tag_len = q->start_tag.len;
    }
    struct af_tq_task *tasks;
    size_t n;
    if (af_tq_store_list(st->store, &sel, &tasks, &n) < 0) {
        internal_error(res);
        goto done;
    }
    pack_tasks(tasks, n, res);
    af_tq_tasks_free(tasks, n);
done:
    free(start);
    free(qname);
    protobuf_c_message_free_unpacked(&q->base, NULL);
}

static void tq_fetch_task(void *state, const struct af_call *call, struct af_result *res)
{
    struct tq_state *st = state;
    Af__Taskqueue__TaskQueueFetchTaskRequest *f =
        (Af__Taskqueue__TaskQueueFetchTaskRequest *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_fetch_task_request__descriptor, call->request,
            call->request_len);
    if (!f) {
        af_result_app_error(res, TQERR(INVALID_REQUEST),
                            "taskqueue: cannot decode TaskQueueFetchTaskRequest");
        return;
    }
    char *qname = NULL;
    struct af_tq_task t = {0};
    if (!store_ready(st, res) || !request_queue(st, &f->queue_name, -1, &qname, res) ||
        !load_task(st, qname, &f->task_name, &t, res))
        goto done;
    /* FetchTaskResponse { required QueryTasksResponse task = 1; }: the
     * query answer for this one task, as a length-delimited field. */
    struct af_result inner = {0};
    pack_tasks(&t, 1, &inner);
    size_t n = 0;
    uint8_t hdr[11];
    hdr[n++] = (1 << 3) | 2;
    for (uint64_t v = inner.response_len;; v >>= 7) {
        hdr[n++] = (uint8_t)(v < 0x80 ? v : (v & 0x7f) | 0x80);
        if (v < 0x80)
            break;
    }
    uint8_t *buf = af_xmalloc(n + inner.response_len);
    memcpy(buf, hdr, n);
    memcpy(buf + n, inner.response, inner.response_len);
    af_result_ok(res, buf, n + inner.response_len);
    free(inner.response);
done:
    af_tq_task_release(&t);
    free(qname);
    protobuf_c_message_free_unpacked(&f->base, NULL);
}

/* ---- queues: FetchQueues, FetchQueueStats, PauseQueue --------------------- */

static void tq_fetch_queues(void *state, const struct af_call *call, struct af_result *res)
{
    struct tq_state *st = state;
    Af__Taskqueue__TaskQueueFetchQueuesRequest *f =
        (Af__Taskqueue__TaskQueueFetchQueuesRequest *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_fetch_queues_request__descriptor, call->request,
            call->request_len);
    if (!f) {
        af_result_app_error(res, TQERR(INVALID_REQUEST),
                            "taskqueue: cannot decode TaskQueueFetchQueuesRequest");
        return;
    }
    size_t n = st->cfg->n;
    if (f->max_rows >= 0 && (size_t)f->max_rows < n)
        n = (size_t)f->max_rows;
    Af__Taskqueue__TaskQueueFetchQueuesResponse__Queue *items =
        af_xcalloc(n ? n : 1, sizeof(*items));
    Af__Taskqueue__TaskQueueFetchQueuesResponse__Queue **ptrs = af_xcalloc(n ? n : 1, sizeof(*ptrs));
    Af__Taskqueue__TaskQueueRetryParameters *retry = af_xcalloc(n ? n : 1, sizeof(*retry));
    for (size_t i = 0; i < n; i++) {
        const struct tq_queue *q = &st->queues[i];
        const struct af_queue_def *d = q->def;
        Af__Taskqueue__TaskQueueFetchQueuesResponse__Queue *o = &items[i];
        af__taskqueue__task_queue_fetch_queues_response__queue__init(o);
        o->queue_name.data = (uint8_t *)d->name;
        o->queue_name.len = strlen(d->name);
        o->bucket_refill_per_second = d->rate;
        o->bucket_capacity = d->bucket_size;
        o->user_specified_rate = d->rate_text;
        o->paused = q->paused || (!d->pull && d->rate == 0);
        if (d->max_concurrent) {
            o->has_max_concurrent_requests = true;
            o->max_concurrent_requests = d->max_concurrent;
        }
        o->has_mode = true;
        o->mode = d->pull ? AF__TASKQUEUE__TASK_QUEUE_MODE__MODE__PULL
                          : AF__TASKQUEUE__TASK_QUEUE_MODE__MODE__PUSH;
        af__taskqueue__task_queue_retry_parameters__init(&retry[i]);
        const struct af_queue_retry *r = &d->retry;
        retry[i].has_retry_limit = r->retry_limit >= 0;
        retry[i].retry_limit = r->retry_limit;
        retry[i].has_age_limit_sec = r->age_limit_sec >= 0;
        retry[i].age_limit_sec = r->age_limit_sec;
        retry[i].has_min_backoff_sec = retry[i].has_max_backoff_sec = true;
        retry[i].has_max_doublings = true;
        retry[i].min_backoff_sec = r->min_backoff_sec;
        retry[i].max_backoff_sec = r->max_backoff_sec;
        retry[i].max_doublings = r->max_doublings;
        o->retry_parameters = &retry[i];
        ptrs[i] = o;
    }
    Af__Taskqueue__TaskQueueFetchQueuesResponse out =
        AF__TASKQUEUE__TASK_QUEUE_FETCH_QUEUES_RESPONSE__INIT;
    out.n_queue = n;
    out.queue = ptrs;
    size_t len;
    uint8_t *buf = af_ds_wire_pack(&out.base, &len);
    af_result_ok(res, buf, len);
    free(items);
    free(ptrs);
    free(retry);
    protobuf_c_message_free_unpacked(&f->base, NULL);
}

static void tq_fetch_queue_stats(void *state, const struct af_call *call, struct af_result *res)
{
    struct tq_state *st = state;
    Af__Taskqueue__TaskQueueFetchQueueStatsRequest *f =
        (Af__Taskqueue__TaskQueueFetchQueueStatsRequest *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_fetch_queue_stats_request__descriptor, call->request,
            call->request_len);
    if (!f) {
        af_result_app_error(res, TQERR(INVALID_REQUEST),
                            "taskqueue: cannot decode TaskQueueFetchQueueStatsRequest");
        return;
    }
    if (!store_ready(st, res))
        goto done;
    size_t n = f->n_queue_name;
    Af__Taskqueue__TaskQueueFetchQueueStatsResponse__QueueStats *items =
        af_xcalloc(n ? n : 1, sizeof(*items));
    Af__Taskqueue__TaskQueueFetchQueueStatsResponse__QueueStats **ptrs =
        af_xcalloc(n ? n : 1, sizeof(*ptrs));
    Af__Taskqueue__TaskQueueScannerQueueInfo *info = af_xcalloc(n ? n : 1, sizeof(*info));
    int64_t now = now_usec();
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        char *qname = NULL;
        struct tq_queue *q = request_queue(st, &f->queue_name[i], -1, &qname, res);
        int64_t count = 0, oldest = -1;
        if (!q || af_tq_store_count(st->store, qname, &count, &oldest) < 0) {
            if (q)
                internal_error(res);
            ok = false;
            free(qname);
            break;
        }
        af__taskqueue__task_queue_fetch_queue_stats_response__queue_stats__init(&items[i]);
        items[i].num_tasks = count > INT32_MAX ? INT32_MAX : (int32_t)count;
        items[i].oldest_eta_usec = oldest;
        af__taskqueue__task_queue_scanner_queue_info__init(&info[i]);
        ring_counts(&q->done, now, &info[i].executed_last_minute, &info[i].executed_last_hour);
        info[i].sampling_duration_seconds = 3600;
        info[i].has_requests_in_flight = true;
        info[i].requests_in_flight = q->running;
        info[i].has_enforced_rate = true;
        info[i].enforced_rate = q->paused ? 0 : q->def->rate;
        items[i].scanner_info = &info[i];
        ptrs[i] = &items[i];
        free(qname);
    }
    if (ok) {
        Af__Taskqueue__TaskQueueFetchQueueStatsResponse out =
            AF__TASKQUEUE__TASK_QUEUE_FETCH_QUEUE_STATS_RESPONSE__INIT;
        out.n_queuestats = n;
        out.queuestats = ptrs;
        size_t len;
        uint8_t *buf = af_ds_wire_pack(&out.base, &len);
        af_result_ok(res, buf, len);
    }
    free(items);
    free(ptrs);
    free(info);
done:
    protobuf_c_message_free_unpacked(&f->base, NULL);
}

static void tq_pause_queue(void *state, const struct af_call *call, struct af_result *res)
{
    struct tq_state *st = state;
    Af__Taskqueue__TaskQueuePauseQueueRequest *p =
        (Af__Taskqueue__TaskQueuePauseQueueRequest *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_pause_queue_request__descriptor, call->request,
            call->request_len);
    if (!p) {
        af_result_app_error(res, TQERR(INVALID_REQUEST),
                            "taskqueue: cannot decode TaskQueuePauseQueueRequest");
        return;
    }
    char *qname = NULL;
    struct tq_queue *q = request_queue(st, &p->queue_name, -1, &qname, res);
    if (q) {
        q->paused = p->pause;
        af_info("taskqueue: queue '%s' %s", qname, p->pause ? "paused" : "resumed");
        af_result_ok(res, NULL, 0);
        if (!p->pause) {
            res->notify_main = true;
            st->runner_wake_at = INT64_MIN;
        }
    }
    free(qname);
    protobuf_c_message_free_unpacked(&p->base, NULL);
}

/* ---- pull queues: QueryAndOwnTasks, ModifyTaskLease ----------------------- */

static bool valid_lease(double sec)
{
    return sec >= 0 && sec <= TQ_MAX_LEASE_SEC;
}

static void tq_query_and_own(void *state, const struct af_call *call, struct af_result *res)
{
    struct tq_state *st = state;
    Af__Taskqueue__TaskQueueQueryAndOwnTasksRequest *r =
        (Af__Taskqueue__TaskQueueQueryAndOwnTasksRequest *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_query_and_own_tasks_request__descriptor, call->request,
            call->request_len);
    if (!r) {
        af_result_app_error(res, TQERR(INVALID_REQUEST),
                            "taskqueue: cannot decode TaskQueueQueryAndOwnTasksRequest");
        return;
    }
    char *qname = NULL;
    struct af_tq_task *tasks = NULL, *first = NULL;
    size_t n = 0, n_first = 0;
    struct tq_queue *q = NULL;
    if (!store_ready(st, res) || !(q = request_queue(st, &r->queue_name, 1, &qname, res)))
        goto done;
    if (!valid_lease(r->lease_seconds)) {
        af_result_app_error(res, TQERR(INVALID_REQUEST),
                            "taskqueue: lease_seconds %g is not from 0 to %g", r->lease_seconds,
                            TQ_MAX_LEASE_SEC);
        goto done;
    }
    if (r->max_tasks < 1 || r->max_tasks > TQ_MAX_LEASE_TASKS) {
        af_result_app_error(res, TQERR(INVALID_REQUEST),
                            "taskqueue: max_tasks %" PRId64 " is not from 1 to %d", r->max_tasks,
                            TQ_MAX_LEASE_TASKS);
        goto done;
    }
    int64_t now = now_usec();
    struct af_tq_query sel = {.queue = qname,
                              .pull = 1,
                              .start_eta = INT64_MIN,
                              .start_name = "",
                              .due_only = true,
                              .due_by = now,
                              .limit = (size_t)r->max_tasks};
    if (r->group_by_tag) {
        sel.match_tag = true;
        if (r->has_tag) {
            sel.tag = r->tag.data;
            sel.tag_len = r->tag.len;
        } else {
            /* No tag given: the tag of the oldest due task. */
            struct af_tq_query one = sel;
            one.match_tag = false;
            one.limit = 1;
            if (af_tq_store_list(st->store, &one, &first, &n_first) < 0) {
                internal_error(res);
                goto done;
            }
            if (n_first) {
                sel.tag = first[0].tag;
                sel.tag_len = first[0].tag_len;
            }
        }
    }
    if (af_tq_store_list(st->store, &sel, &tasks, &n) < 0) {
        internal_error(res);
        goto done;
    }
    Af__Taskqueue__TaskQueueQueryAndOwnTasksResponse__Task *items =
        af_xcalloc(n ? n : 1, sizeof(*items));
    Af__Taskqueue__TaskQueueQueryAndOwnTasksResponse__Task **ptrs =
        af_xcalloc(n ? n : 1, sizeof(*ptrs));
    Af__Taskqueue__TaskQueueAddRequest **reqs = af_xcalloc(n ? n : 1, sizeof(*reqs));
    size_t out_n = 0;
    int64_t lease_usec = (int64_t)(r->lease_seconds * USEC);
    bool failed = af_tq_store_begin(st->store) < 0;
    for (size_t i = 0; i < n && !failed; i++) {
        struct af_tq_task *t = &tasks[i];
        reqs[i] = af__taskqueue__task_queue_add_request__unpack(NULL, t->request_len, t->request);
        struct af_queue_retry retry;
        task_retry(q, reqs[i] ? reqs[i]->retry_parameters : NULL, &retry);
        if (t->first_try == 0)
            t->first_try = now;
        /* A task leased more often than its retry limit allows is gone,
         * as in production. */
        if (retries_exhausted(&retry, t->retry_count + 1, t->first_try, now) &&
            retry.retry_limit >= 0 && t->retry_count >= retry.retry_limit + 1) {
            bool removed;
            af_info("taskqueue: pull task '%s' in queue '%s' leased %d times: retry limit "
                    "reached, deleted",
                    t->name, qname, t->retry_count);
            failed = af_tq_store_delete(st->store, qname, t->name, true, now, &removed) < 0;
            continue;
        }
        t->retry_count++;
        t->eta = now + lease_usec;
        if (af_tq_store_update(st->store, t) < 0) {
            failed = true;
            break;
        }
        Af__Taskqueue__TaskQueueQueryAndOwnTasksResponse__Task *o = &items[out_n];
        af__taskqueue__task_queue_query_and_own_tasks_response__task__init(o);
        o->task_name.data = (uint8_t *)t->name;
        o->task_name.len = strlen(t->name);
        o->eta_usec = t->eta;
        o->has_retry_count = true;
        o->retry_count = t->retry_count;
        if (reqs[i] && reqs[i]->has_body) {
            o->has_body = true;
            o->body = reqs[i]->body;
        }
        if (t->tag) {
            o->has_tag = true;
            o->tag.data = t->tag;
            o->tag.len = t->tag_len;
        }
        ptrs[out_n++] = o;
    }
    if (failed || af_tq_store_commit(st->store) < 0) {
        af_tq_store_rollback(st->store);
        internal_error(res);
    } else {
        Af__Taskqueue__TaskQueueQueryAndOwnTasksResponse out =
            AF__TASKQUEUE__TASK_QUEUE_QUERY_AND_OWN_TASKS_RESPONSE__INIT;
        out.n_task = out_n;
        out.task = ptrs;
        size_t len;
        uint8_t *buf = af_ds_wire_pack(&out.base, &len);
        af_result_ok(res, buf, len);
    }
    for (size_t i = 0; i < n; i++)
        if (reqs[i])
            af__taskqueue__task_queue_add_request__free_unpacked(reqs[i], NULL);
    free(reqs);
    free(items);
    free(ptrs);
done:
    af_tq_tasks_free(tasks, n);
    af_tq_tasks_free(first, n_first);
    free(qname);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void tq_modify_lease(void *state, const struct af_call *call, struct af_result *res)
{
    struct tq_state *st = state;
    Af__Taskqueue__TaskQueueModifyTaskLeaseRequest *m =
        (Af__Taskqueue__TaskQueueModifyTaskLeaseRequest *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_modify_task_lease_request__descriptor, call->request,
            call->request_len);
    if (!m) {
        af_result_app_error(res, TQERR(INVALID_REQUEST),
                            "taskqueue: cannot decode TaskQueueModifyTaskLeaseRequest");
        return;
    }
    char *qname = NULL;
    struct af_tq_task t = {0};
    if (!store_ready(st, res) || !request_queue(st, &m->queue_name, 1, &qname, res))
        goto done;
    if (!valid_lease(m->lease_seconds)) {
        af_result_app_error(res, TQERR(INVALID_REQUEST),
                            "taskqueue: lease_seconds %g is not from 0 to %g", m->lease_seconds,
                            TQ_MAX_LEASE_SEC);
        goto done;
    }
    if (!load_task(st, qname, &m->task_name, &t, res))
        goto done;
    int64_t now = now_usec();
    /* The eta is the proof of ownership: the one the lease gave. */
    if (t.eta != m->eta_usec || t.eta < now) {
        af_result_app_error(res, TQERR(TASK_LEASE_EXPIRED),
                            "taskqueue: the lease on task \"%s\" has %s", t.name,
                            t.eta < now ? "expired" : "passed to another owner");
        goto done;
    }
    t.eta = now + (int64_t)(m->lease_seconds * USEC);
    if (af_tq_store_update(st->store, &t) < 0) {
        internal_error(res);
        goto done;
    }
    Af__Taskqueue__TaskQueueModifyTaskLeaseResponse out =
        AF__TASKQUEUE__TASK_QUEUE_MODIFY_TASK_LEASE_RESPONSE__INIT;
    out.updated_eta_usec = t.eta;
    af_result_pack(res, &out.base);
done:
    af_tq_task_release(&t);
    free(qname);
    protobuf_c_message_free_unpacked(&m->base, NULL);
}

/* ---- the runner's internal call ---------------------------------------------- */

static ssize_t running_find(struct tq_state *st, const char *queue, const char *name)
{
    for (size_t i = 0; i < st->n_running; i++)
        if (strcmp(st->running[i].queue, queue) == 0 && strcmp(st->running[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

static void running_remove(struct tq_state *st, size_t i)
{
    struct tq_queue *q = find_queue(st, st->running[i].queue);
    if (q && q->running > 0)
        q->running--;
    free(st->running[i].queue);
    free(st->running[i].name);
    st->running[i] = st->running[--st->n_running];
}

static uint64_t running_add(struct tq_state *st, struct tq_queue *q, const char *name,
                            int64_t now)
{
    if (st->n_running == st->cap_running) {
        st->cap_running = st->cap_running ? st->cap_running * 2 : 16;
        st->running = af_xrealloc(st->running, st->cap_running * sizeof(*st->running));
    }
    struct tq_running *r = &st->running[st->n_running++];
    r->queue = af_xstrdup(q->def->name);
    r->name = af_xstrdup(name);
    r->lease = ++st->next_lease;
    r->expires = now + TQ_RUN_LEASE;
    q->running++;
    return r->lease;
}

/* What became of one task the runner ran. */
static void apply_result(struct tq_state *st, const Af__Taskqueue__RunnerResult *r, int64_t now)
{
    ssize_t i = running_find(st, r->queue_name, r->task_name);
    if (i < 0 || st->running[i].lease != r->lease)
        return; /* expired and handed out again, or cleared */
    running_remove(st, (size_t)i);
    struct tq_queue *q = find_queue(st, r->queue_name);
    if (q)
        ring_record(&q->done, now);
    struct af_tq_task t = {0};
    bool found = false, removed;
    if (af_tq_store_get(st->store, r->queue_name, r->task_name, &t, &found) < 0 || !found)
        return; /* deleted or purged while it ran */
    if (t.first_try == 0)
        t.first_try = now - (r->has_elapsed_usec ? r->elapsed_usec : 0);
    if (r->status >= 200 && r->status <= 299) {
        af_tq_store_delete(st->store, t.queue, t.name, true, now, &removed);
        goto out;
    }
    t.retry_count++;
    if (r->status > 0)
        t.exec_count++;
    t.last_status = r->status;
    Af__Taskqueue__TaskQueueAddRequest *a =
        af__taskqueue__task_queue_add_request__unpack(NULL, t.request_len, t.request);
    struct af_queue_retry retry;
    task_retry(q, a ? a->retry_parameters : NULL, &retry);
    if (a)
        af__taskqueue__task_queue_add_request__free_unpacked(a, NULL);
    if (retries_exhausted(&retry, t.retry_count, t.first_try, now)) {
        af_warn("taskqueue: task '%s' of queue '%s' failed %d time(s) (last: %s%d): retry "
                "limit reached, deleted",
                t.name, t.queue, t.retry_count, r->status ? "status " : "no answer ", r->status);
        af_tq_store_delete(st->store, t.queue, t.name, true, now, &removed);
        goto out;
    }
    double wait = backoff_sec(&retry, t.retry_count);
    t.eta = now + (int64_t)(wait * USEC);
    af_info("taskqueue: task '%s' of queue '%s' failed (%s%d); retry %d in %.3g s", t.name,
            t.queue, r->status ? "status " : "no answer ", r->status, t.retry_count, wait);
    af_tq_store_update(st->store, &t);
out:
    af_tq_task_release(&t);
}

/* The runner's form of a stored push task, with its own copies. */
struct run_item {
    Af__Taskqueue__RunnerTask task;
    Af__Taskqueue__RunnerHeader *headers;
    Af__Taskqueue__RunnerHeader **header_ptrs;
    Af__Taskqueue__TaskQueueAddRequest *req;
    char *url;
    char *name;
};

/* Headers a task may not send: appfront writes framing itself, and the
 * X-AppEngine-* fields of a task are appfront's to set, except the
 * namespace ones the client libraries add. Host is kept: the runner routes
 * the task by it (docs/taskqueue.md, "Which module runs a task"). */
static bool header_kept(const char *k)
{
    static const char *const dropped[] = {
        "content-length", "transfer-encoding", "connection", "keep-alive", "te",
        "trailer", "upgrade", "proxy-connection", "expect", NULL,
    };
    for (size_t i = 0; dropped[i]; i++)
        if (strcasecmp(k, dropped[i]) == 0)
            return false;
    if (strncasecmp(k, "x-appengine-", 12) == 0)
        return strcasecmp(k, "x-appengine-current-namespace") == 0 ||
               strcasecmp(k, "x-appengine-default-namespace") == 0;
    return true;
}

static void run_item_fill(struct run_item *it, const struct tq_queue *q,
                          const struct af_tq_task *t, uint64_t lease)
{
    memset(it, 0, sizeof(*it));
    Af__Taskqueue__RunnerTask *o = &it->task;
    af__taskqueue__runner_task__init(o);
    o->queue_name = (char *)q->def->name;
    it->name = af_xstrdup(t->name);
    o->task_name = it->name;
    o->lease = lease;
    o->eta_usec = t->eta;
    o->retry_count = t->retry_count;
    o->execution_count = t->exec_count;
    if (t->last_status) {
        o->has_previous_status = true;
        o->previous_status = t->last_status;
    }
    o->target = q->def->target;
    it->req = af__taskqueue__task_queue_add_request__unpack(NULL, t->request_len, t->request);
    const Af__Taskqueue__TaskQueueAddRequest *a = it->req;
    o->method = (char *)method_name(a && a->has_method ? (int)a->method : 2);
    if (a && a->has_url && a->url.len)
        it->url = af_xstrndup((const char *)a->url.data, a->url.len);
    else
        it->url = af_xasprintf("/_ah/queue/%s", q->def->name);
    o->url = it->url;
    if (!a)
        return;
    if (a->has_body) {
        o->has_body = true;
        o->body = a->body;
    }
    size_t nh = a->n_header;
    it->headers = af_xcalloc(nh ? nh : 1, sizeof(*it->headers));
    it->header_ptrs = af_xcalloc(nh ? nh : 1, sizeof(*it->header_ptrs));
    for (size_t i = 0; i < nh; i++) {
        /* Checked at Add: no NUL, CR or LF, so they are strings. The
         * copies live in the unpacked request, NUL-terminated by hand. */
        char *k = af_xstrndup((const char *)a->header[i]->key.data, a->header[i]->key.len);
        char *v = af_xstrndup((const char *)a->header[i]->value.data, a->header[i]->value.len);
        if (!header_kept(k)) {
            free(k);
            free(v);
            continue;
        }
        af__taskqueue__runner_header__init(&it->headers[o->n_header]);
        it->headers[o->n_header].key = k;
        it->headers[o->n_header].value = v;
        it->header_ptrs[o->n_header] = &it->headers[o->n_header];
        o->n_header++;
    }
    o->header = it->header_ptrs;
}

static void run_item_release(struct run_item *it)
{
    for (size_t i = 0; i < it->task.n_header; i++) {
        free(it->headers[i].key);
        free(it->headers[i].value);
    }
    free(it->headers);
    free(it->header_ptrs);
    free(it->url);
    free(it->name);
    if (it->req)
        af__taskqueue__task_queue_add_request__free_unpacked(it->req, NULL);
}

struct run_batch {
    struct run_item *items;
    size_t n, cap;
};

/* Picks the due tasks of one push queue, within its bucket, its concurrency
 * cap and the runner's capacity. Lowers *next to when this queue needs the
 * runner again. */
static void pick_queue(struct tq_state *st, struct tq_queue *q, int64_t now, int *capacity,
                       struct run_batch *b, int64_t *next)
{
    const struct af_queue_def *d = q->def;
    if (d->pull || q->paused || d->rate <= 0)
        return;
    q->tokens += d->rate * (double)(now - q->tokens_at) / USEC;
    if (q->tokens > d->bucket_size)
        q->tokens = d->bucket_size;
    q->tokens_at = now;
    int budget = *capacity;
    if ((double)budget > floor(q->tokens))
        budget = (int)floor(q->tokens);
    bool conc_limited = false;
    if (d->max_concurrent && budget > d->max_concurrent - q->running) {
        budget = d->max_concurrent - q->running;
        conc_limited = true;
    }
    if (budget < 0)
        budget = 0;
    struct af_tq_query sel = {.queue = d->name,
                              .pull = 0,
                              .start_eta = INT64_MIN,
                              .start_name = "",
                              .limit = (size_t)budget + (size_t)q->running + 1};
    struct af_tq_task *tasks;
    size_t n;
    if (af_tq_store_list(st->store, &sel, &tasks, &n) < 0)
        return;
    for (size_t i = 0; i < n; i++) {
        struct af_tq_task *t = &tasks[i];
        if (running_find(st, d->name, t->name) >= 0)
            continue;
        if (t->eta > now) {
            if (t->eta < *next)
                *next = t->eta;
            break;
        }
        if (budget == 0) {
            /* Due but held back: by the bucket, wake when a token comes;
             * by the caps, the next result brings the runner back. */
            if (!conc_limited && *capacity > 0 && q->tokens < 1) {
                int64_t when = now + (int64_t)((1 - q->tokens) / d->rate * USEC) + 1;
                if (when < *next)
                    *next = when;
            }
            break;
        }
        uint64_t lease = running_add(st, q, t->name, now);
        if (b->n == b->cap) {
            b->cap = b->cap ? b->cap * 2 : 8;
            b->items = af_xrealloc(b->items, b->cap * sizeof(*b->items));
        }
        run_item_fill(&b->items[b->n++], q, t, lease);
        q->tokens -= 1;
        budget--;
        (*capacity)--;
    }
    af_tq_tasks_free(tasks, n);
}

static void tq_runner_poll(void *state, const struct af_call *call, struct af_result *res)
{
    struct tq_state *st = state;
    Af__Taskqueue__RunnerPoll *p =
        af__taskqueue__runner_poll__unpack(NULL, call->request_len, call->request);
    if (!p) {
        af_result_app_error(res, TQERR(INVALID_REQUEST), "taskqueue: cannot decode RunnerPoll");
        return;
    }
    if (!store_ready(st, res))
        goto done;
    int64_t now = now_usec();
    for (size_t i = 0; i < p->n_result; i++)
        apply_result(st, p->result[i], now);
    /* A run the runner never reported (it cannot happen unless it lost
     * one) frees its task again after TQ_RUN_LEASE. */
    for (size_t i = 0; i < st->n_running;) {
        if (st->running[i].expires < now) {
            af_warn("taskqueue: task '%s' of queue '%s' was never reported back; it runs again",
                    st->running[i].name, st->running[i].queue);
            running_remove(st, i);
        } else {
            i++;
        }
    }
    int capacity = p->capacity < 0 ? 0 : p->capacity;
    int64_t next = INT64_MAX;
    struct run_batch b = {0};
    for (size_t i = 0; i < st->cfg->n; i++)
        pick_queue(st, &st->queues[i], now, &capacity, &b, &next);
    Af__Taskqueue__RunnerTask **ptrs = af_xcalloc(b.n ? b.n : 1, sizeof(*ptrs));
    for (size_t i = 0; i < b.n; i++)
        ptrs[i] = &b.items[i].task;
    Af__Taskqueue__RunnerPollResponse out = AF__TASKQUEUE__RUNNER_POLL_RESPONSE__INIT;
    out.n_task = b.n;
    out.task = ptrs;
    if (next != INT64_MAX) {
        out.has_next_poll_usec = true;
        out.next_poll_usec = next;
    }
    st->runner_wake_at = next;
    af_result_pack(res, &out.base);
    for (size_t i = 0; i < b.n; i++)
        run_item_release(&b.items[i]);
    free(b.items);
    free(ptrs);
done:
    af__taskqueue__runner_poll__free_unpacked(p, NULL);
}

/* ---- the admin console (docs/admin.md) ----------------------------------------- */

/* Internal methods only the main thread's admin console calls; they
 * answer proto/admin.proto's ready-to-show messages. */

#define ADMIN_TASKS_MAX 1000

/* The queue called name, or NULL with res set to UNKNOWN_QUEUE. */
static struct tq_queue *admin_queue(struct tq_state *st, const char *name, struct af_result *res)
{
    struct tq_queue *q = name ? find_queue(st, name) : NULL;
    if (!q)
        af_result_app_error(res, TQERR(UNKNOWN_QUEUE),
                            "there is no queue \"%.200s\" (queue.yaml defines the queues)",
                            name ? name : "");
    return q;
}

static void tq_admin_queues(void *state, const struct af_call *call, struct af_result *res)
{
    struct tq_state *st = state;
    if (!store_ready(st, res))
        return;
    size_t n = st->cfg->n;
    Af__Admin__TqQueue *qs = af_xcalloc(n ? n : 1, sizeof(*qs));
    Af__Admin__TqQueue **ptrs = af_xcalloc(n ? n : 1, sizeof(*ptrs));
    bool failed = false;
    for (size_t i = 0; i < n; i++) {
        const struct af_queue_def *d = &st->cfg->queues[i];
        Af__Admin__TqQueue *q = &qs[i];
        af__admin__tq_queue__init(q);
        q->name = d->name;
        q->mode = d->pull ? "pull" : "push";
        q->rate = d->rate_text;
        int64_t count = 0, oldest = -1;
        if (af_tq_store_count(st->store, d->name, &count, &oldest) < 0)
            failed = true;
        q->has_tasks = true;
        q->tasks = count;
        q->has_oldest_eta_usec = oldest >= 0;
        q->oldest_eta_usec = oldest;
        ptrs[i] = q;
    }
    if (failed) {
        internal_error(res);
    } else {
        Af__Admin__TqQueuesResponse out = AF__ADMIN__TQ_QUEUES_RESPONSE__INIT;
        out.n_queue = n;
        out.queue = ptrs;
        af_result_pack(res, &out.base);
    }
    free(ptrs);
    free(qs);
}

static const char *admin_method(const Af__Taskqueue__TaskQueueAddRequest *a, bool pull)
{
    if (pull)
        return "PULL";
    return method_name(a && a->has_method ? (int)a->method : 2); /* POST is the default */
}

static void tq_admin_tasks(void *state, const struct af_call *call, struct af_result *res)
{
    struct tq_state *st = state;
    Af__Admin__TqTasksRequest *req =
        af__admin__tq_tasks_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        af_result_app_error(res, TQERR(INVALID_REQUEST), "cannot decode TqTasksRequest");
        return;
    }
    uint32_t limit = req->has_limit ? req->limit : 100;
    if (!store_ready(st, res) || !admin_queue(st, req->queue, res))
        goto done;
    if (limit < 1 || limit > ADMIN_TASKS_MAX) {
        af_result_app_error(res, TQERR(INVALID_REQUEST), "a page holds 1 to %d tasks, not %u",
                            ADMIN_TASKS_MAX, limit);
        goto done;
    }
    int64_t total = 0, oldest;
    struct af_tq_task *tasks = NULL;
    size_t n = 0;
    struct af_tq_query q = {.queue = req->queue, .pull = -1, .start_eta = INT64_MIN,
                            .start_name = "", .limit = limit};
    if (af_tq_store_count(st->store, req->queue, &total, &oldest) < 0 ||
        af_tq_store_list(st->store, &q, &tasks, &n) < 0) {
        internal_error(res);
        goto done;
    }
    Af__Admin__TqTask *items = af_xcalloc(n ? n : 1, sizeof(*items));
    Af__Admin__TqTask **ptrs = af_xcalloc(n ? n : 1, sizeof(*ptrs));
    Af__Taskqueue__TaskQueueAddRequest **adds = af_xcalloc(n ? n : 1, sizeof(*adds));
    char **urls = af_xcalloc(n ? n : 1, sizeof(*urls));
    for (size_t i = 0; i < n; i++) {
        const struct af_tq_task *t = &tasks[i];
        Af__Admin__TqTask *o = &items[i];
        af__admin__tq_task__init(o);
        adds[i] = af__taskqueue__task_queue_add_request__unpack(NULL, t->request_len, t->request);
        o->name = t->name;
        o->has_eta_usec = o->has_retry_count = true;
        o->eta_usec = t->eta;
        o->retry_count = t->retry_count;
        o->method = (char *)admin_method(adds[i], t->pull);
        if (adds[i] && adds[i]->has_url)
            urls[i] = af_xstrndup((const char *)adds[i]->url.data, adds[i]->url.len);
        o->url = urls[i] ? urls[i] : "";
        ptrs[i] = o;
    }
    Af__Admin__TqTasksResponse out = AF__ADMIN__TQ_TASKS_RESPONSE__INIT;
    out.n_task = n;
    out.task = ptrs;
    out.has_total = true;
    out.total = total;
    af_result_pack(res, &out.base);
    for (size_t i = 0; i < n; i++) {
        if (adds[i])
            af__taskqueue__task_queue_add_request__free_unpacked(adds[i], NULL);
        free(urls[i]);
    }
    free(urls);
    free(adds);
    free(ptrs);
    free(items);
    af_tq_tasks_free(tasks, n);
done:
    af__admin__tq_tasks_request__free_unpacked(req, NULL);
}

/* AdminDeleteTask (task set) and AdminPurge (the whole queue). */
static void tq_admin_remove(void *state, const struct af_call *call, struct af_result *res)
{
    struct tq_state *st = state;
    Af__Admin__TqTaskRequest *req =
        af__admin__tq_task_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        af_result_app_error(res, TQERR(INVALID_REQUEST), "cannot decode TqTaskRequest");
        return;
    }
    bool purge = strcmp(call->method, "AdminPurge") == 0;
    if (!store_ready(st, res) || !admin_queue(st, req->queue, res))
        goto done;
    Af__Admin__TqTaskResponse out = AF__ADMIN__TQ_TASK_RESPONSE__INIT;
    if (purge) {
        if (af_tq_store_purge(st->store, req->queue) < 0) {
            internal_error(res);
            goto done;
        }
        af_info("taskqueue: queue '%s' purged from the admin console", req->queue);
    } else {
        const char *name = req->task ? req->task : "";
        bool removed = false;
        if (!valid_task_name(name, strlen(name))) {
            af_result_app_error(res, TQERR(INVALID_TASK_NAME), "\"%.200s\" is not a task name",
                                name);
            goto done;
        }
        /* With a tombstone, as the Delete method leaves one. */
        if (af_tq_store_delete(st->store, req->queue, name, true, now_usec(), &removed) < 0) {
            internal_error(res);
            goto done;
        }
        if (!removed) {
            af_result_app_error(res, TQERR(UNKNOWN_TASK), "no task \"%.200s\" in queue \"%s\"",
                                name, req->queue);
            goto done;
        }
        out.has_existed = true;
        out.existed = true;
    }
    af_result_pack(res, &out.base);
done:
    af__admin__tq_task_request__free_unpacked(req, NULL);
}

/* ---- the tables ------------------------------------------------------------- */

static const struct af_method tq_methods[] = {
    {.name = "Add", .fn = tq_add},
    {.name = "BulkAdd", .fn = tq_bulk_add},
    {.name = "Delete", .fn = tq_delete},
    {.name = "PurgeQueue", .fn = tq_purge_queue},
    {.name = "ForceRun", .fn = tq_force_run},
    {.name = "QueryTasks", .fn = tq_query_tasks},
    {.name = "FetchTask", .fn = tq_fetch_task},
    {.name = "FetchQueues", .fn = tq_fetch_queues},
    {.name = "FetchQueueStats", .fn = tq_fetch_queue_stats},
    {.name = "PauseQueue", .fn = tq_pause_queue},
    {.name = "QueryAndOwnTasks", .fn = tq_query_and_own},
    {.name = "ModifyTaskLease", .fn = tq_modify_lease},
    {.name = NULL},
};

static const struct af_method tq_internal[] = {
    {.name = "RunnerPoll", .fn = tq_runner_poll},
    {.name = "AdminQueues", .fn = tq_admin_queues},
    {.name = "AdminTasks", .fn = tq_admin_tasks},
    {.name = "AdminDeleteTask", .fn = tq_admin_remove},
    {.name = "AdminPurge", .fn = tq_admin_remove},
    {.name = NULL},
};

const struct af_service af_service_taskqueue = {
    .name = "taskqueue",
    .methods = tq_methods,
    .create = tq_create,
    .clear = tq_clear,
    .destroy = tq_destroy,
    .internal = tq_internal,
};
