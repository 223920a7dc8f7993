/*
 * datastore_eventual — pending writes and the consistency policies (see
 * datastore_eventual.h; dev_appserver's datastore_stub_util.py,
 * TimeBasedHRConsistencyPolicy and PseudoRandomHRConsistencyPolicy, for the
 * behaviour reproduced).
 */
#include <string.h>
#include <strings.h>
#include <time.h>

#include "apiserver/services/datastore_eventual.h"
#include "common/log.h"

/* dev_appserver's seed for `random` is a constant too (0): the same program
 * sees the same sequence of outcomes. Any constant will do here. */
#define EV_SEED UINT64_C(0x61707066726f6e74)

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* splitmix64, a uniform double in [0, 1). */
static double ev_draw(struct af_ds_eventual *ev)
{
    uint64_t z = (ev->rng += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

static const char *const policy_names[] = {
    [AF_DS_POLICY_CONSISTENT] = "consistent",
    [AF_DS_POLICY_TIME] = "time",
    [AF_DS_POLICY_RANDOM] = "random",
};

int af_ds_policy_parse(const char *name, enum af_ds_policy *policy)
{
    for (size_t i = 0; i < sizeof(policy_names) / sizeof(policy_names[0]); i++) {
        if (name && strcasecmp(name, policy_names[i]) == 0) {
            *policy = (enum af_ds_policy)i;
            return 0;
        }
    }
    return -1;
}

const char *af_ds_policy_name(enum af_ds_policy policy)
{
    return (size_t)policy < sizeof(policy_names) / sizeof(policy_names[0]) ? policy_names[policy]
                                                                           : "?";
}

int64_t af_ds_ev_delay_ms(struct af_ds_eventual *ev)
{
    /* dev_appserver's classification map: the share of writes that apply
     * after at most this many milliseconds. */
    static const struct {
        double share;
        int64_t ms;
    } map[] = {{0.98, 100}, {0.99, 300}, {0.995, 2000}, {1.0, 240000}};
    double r = ev_draw(ev);
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (r <= map[i].share)
            return map[i].ms;
    return map[sizeof(map) / sizeof(map[0]) - 1].ms;
}

/* Applies one job and removes it, inside the write transaction on c. */
static int apply_job(struct af_ds_eventual *ev, struct af_ds_conn *c, const struct af_ds_job *j)
{
    struct af_ds_job_write *w;
    size_t n;
    if (af_ds_job_writes(c, j->id, &w, &n) != 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = ev->apply(ev->arg, c, j->part, &w[i]);
    af_ds_job_writes_free(w, n);
    if (rc == 0)
        rc = af_ds_job_remove(c, j->id);
    if (rc == 0)
        ev->delta--;
    return rc;
}

int af_ds_ev_apply_group(struct af_ds_eventual *ev, struct af_ds_conn *c, int64_t part,
                         const uint8_t *root, size_t root_len)
{
    if (ev->pending + ev->delta <= 0)
        return 0;
    struct af_ds_job *jobs;
    size_t n;
    if (af_ds_job_group(c, part, root, root_len, &jobs, &n) != 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = apply_job(ev, c, &jobs[i]);
    af_ds_jobs_free(jobs, n);
    return rc;
}

int af_ds_ev_job_new(struct af_ds_eventual *ev, struct af_ds_conn *c, int64_t part,
                     const uint8_t *root, size_t root_len, int64_t *job)
{
    int64_t due = 0;
    if (ev->policy == AF_DS_POLICY_TIME) {
        due = ev->now_ms() + af_ds_ev_delay_ms(ev);
        if (ev->pending + ev->delta <= 0 || due < ev->next_due)
            ev->next_due = due;
    }
    if (af_ds_job_add(c, part, root, root_len, due, job) != 0)
        return -1;
    ev->delta++;
    return 0;
}

void af_ds_ev_end(struct af_ds_eventual *ev, bool committed)
{
    if (committed)
        ev->pending += ev->delta;
    ev->delta = 0;
}

/* Re-reads the count and the next due time from the file. */
static int ev_recount(struct af_ds_eventual *ev, struct af_ds_conn *c)
{
    int64_t n = 0, due = 0;
    if (af_ds_job_count(c, &n, &due) != 0)
        return -1;
    ev->pending = n;
    ev->next_due = due;
    return 0;
}

int af_ds_ev_catch_up(struct af_ds_eventual *ev, struct af_ds_conn *c, int64_t part,
                      const uint8_t *root, size_t root_len)
{
    if (ev->pending <= 0 || part == 0)
        return 0;
    bool pending;
    if (af_ds_job_group_pending(c, part, root, root_len, &pending) != 0)
        return -1;
    if (!pending)
        return 0;
    if (af_ds_begin_write(c) != 0)
        return -1;
    if (af_ds_ev_apply_group(ev, c, part, root, root_len) != 0 || af_ds_commit(c) != 0) {
        af_ds_rollback(c);
        af_ds_ev_end(ev, false);
        return -1;
    }
    af_ds_ev_end(ev, true);
    return 0;
}

/* Applies the jobs for which keep() says yes, group by group from the
 * oldest, stopping a group at its first no. */
static int ev_apply_some(struct af_ds_eventual *ev, struct af_ds_conn *c,
                         bool (*keep)(struct af_ds_eventual *ev, const struct af_ds_job *j,
                                      int64_t now),
                         int64_t now)
{
    struct af_ds_job *jobs;
    size_t n;
    if (af_ds_begin_write(c) != 0)
        return -1;
    if (af_ds_job_all(c, &jobs, &n) != 0) {
        af_ds_rollback(c);
        return -1;
    }
    int rc = 0;
    bool blocked = false;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct af_ds_job *j = &jobs[i];
        if (i > 0 && (jobs[i - 1].part != j->part || jobs[i - 1].root_len != j->root_len ||
                      memcmp(jobs[i - 1].root, j->root, j->root_len) != 0))
            blocked = false; /* a new group */
        if (blocked)
            continue;
        if (!keep(ev, j, now))
            blocked = true;
        else
            rc = apply_job(ev, c, j);
    }
    af_ds_jobs_free(jobs, n);
    if (rc != 0 || af_ds_commit(c) != 0) {
        af_ds_rollback(c);
        af_ds_ev_end(ev, false);
        return -1;
    }
    af_ds_ev_end(ev, true);
    return ev_recount(ev, c);
}

static bool keep_due(struct af_ds_eventual *ev, const struct af_ds_job *j, int64_t now)
{
    (void)ev;
    return j->due <= now;
}

static bool keep_coin(struct af_ds_eventual *ev, const struct af_ds_job *j, int64_t now)
{
    (void)j;
    (void)now;
    return ev_draw(ev) < 0.5;
}

static bool keep_all(struct af_ds_eventual *ev, const struct af_ds_job *j, int64_t now)
{
    (void)ev;
    (void)j;
    (void)now;
    return true;
}

int af_ds_ev_groom(struct af_ds_eventual *ev, struct af_ds_conn *c)
{
    if (ev->pending <= 0)
        return 0;
    if (ev->policy == AF_DS_POLICY_TIME) {
        int64_t now = ev->now_ms();
        if (now < ev->next_due)
            return 0;
        return ev_apply_some(ev, c, keep_due, now);
    }
    if (ev->policy == AF_DS_POLICY_RANDOM)
        return ev_apply_some(ev, c, keep_coin, 0);
    return af_ds_ev_flush(ev, c);
}

int af_ds_ev_flush(struct af_ds_eventual *ev, struct af_ds_conn *c)
{
    if (ev->pending <= 0)
        return 0;
    return ev_apply_some(ev, c, keep_all, 0);
}

void af_ds_ev_cleared(struct af_ds_eventual *ev)
{
    ev->pending = 0;
    ev->delta = 0;
    ev->next_due = 0;
}

int af_ds_ev_init(struct af_ds_eventual *ev, enum af_ds_policy policy, struct af_ds_conn *c,
                  af_ds_apply_fn apply, void *arg)
{
    memset(ev, 0, sizeof(*ev));
    ev->policy = policy;
    ev->apply = apply;
    ev->arg = arg;
    ev->rng = EV_SEED;
    ev->now_ms = mono_ms;
    if (!c)
        return 0;
    /* Jobs of a previous run: due times were on that run's clock, and a
     * restart is a natural point to catch up, so all of them apply now. */
    if (ev_recount(ev, c) != 0)
        return -1;
    if (ev->pending > 0) {
        int64_t n = ev->pending;
        if (af_ds_ev_flush(ev, c) != 0)
            return -1;
        af_info("datastore: applied %lld write%s left pending by the previous run", (long long)n,
                n == 1 ? "" : "s");
    }
    return 0;
}
