/*
 * datastore_eventual — the High Replication Datastore's eventual
 * consistency, as dev_appserver simulates it (docs/datastore.md,
 * "Consistency", and --datastore_consistency_policy).
 *
 * Under the policies `time` and `random`, a write is committed to a durable
 * per-group job log (datastore_store.h: job, job_write) in the SQLite
 * transaction that acknowledges it, and reaches the entity and index
 * tables (what queries scan) only when it is *applied*:
 *  - a global (non-ancestor) query first grooms: it applies each group's
 *    jobs from the oldest while the policy says so (`time`: the job's delay
 *    has passed; `random`: a draw with probability 1/2), stopping at the
 *    first one it may not apply, so a group never shows a later write
 *    without the earlier ones;
 *  - a Get, an ancestor query, a transaction touching a group, or a new
 *    write to it first applies ("rolls forward") all the group's jobs, so
 *    they see the latest data;
 *  - opening the file applies every job left by a previous run.
 * Under `consistent` writes are applied at once and nothing here runs.
 *
 * Writes are applied by a callback of the datastore (index rows are its
 * business). Backend thread only; every function takes the connection that
 * holds the file's write lock when it needs one.
 */
#ifndef AF_DATASTORE_EVENTUAL_H
#define AF_DATASTORE_EVENTUAL_H

#include <stdbool.h>
#include <stdint.h>

#include "apiserver/services/datastore_store.h"

enum af_ds_policy {
    AF_DS_POLICY_CONSISTENT = 0, /* every write applied at once (strong consistency) */
    AF_DS_POLICY_TIME,           /* dev_appserver's default: per-write delays */
    AF_DS_POLICY_RANDOM,         /* each job applied with probability 1/2 per groom */
};

/* Applies one write of a job to the entity and index tables, inside the
 * open write transaction on c. Returns 0 or -1 (logged). */
typedef int (*af_ds_apply_fn)(void *arg, struct af_ds_conn *c, int64_t part,
                              const struct af_ds_job_write *w);

struct af_ds_eventual {
    enum af_ds_policy policy;
    af_ds_apply_fn apply;
    void *arg;
    uint64_t rng;     /* pseudo-random state, fixed seed: runs are reproducible */
    int64_t pending;  /* jobs in the file, exact after every commit */
    int64_t next_due; /* time policy: no job is due before this (monotonic ms) */
    /* Changes of the write transaction in progress, kept on commit. */
    int64_t delta;
    /* Milliseconds on the monotonic clock; a test may replace it. */
    int64_t (*now_ms)(void);
};

/* Parses "time" | "random" | "consistent" (any case). Returns -1 for
 * anything else. */
int af_ds_policy_parse(const char *name, enum af_ds_policy *policy);
const char *af_ds_policy_name(enum af_ds_policy policy);

/* Sets ev up and applies every job already in the file (a previous run's);
 * 0 or -1 (logged). */
int af_ds_ev_init(struct af_ds_eventual *ev, enum af_ds_policy policy, struct af_ds_conn *c,
                  af_ds_apply_fn apply, void *arg);

/* Whether writes go to the job log (false: apply them directly). */
static inline bool af_ds_ev_deferred(const struct af_ds_eventual *ev)
{
    return ev->policy != AF_DS_POLICY_CONSISTENT;
}

/* The delay of a new job under the time policy, dev_appserver's table:
 * 98% 100 ms, 1% 300 ms, 0.5% 2 s, 0.5% 4 min. */
int64_t af_ds_ev_delay_ms(struct af_ds_eventual *ev);

/* Inside a write transaction on c: applies every job of group (part, root)
 * (before a write to it), and starts a new job for it, returned in *job. */
int af_ds_ev_apply_group(struct af_ds_eventual *ev, struct af_ds_conn *c, int64_t part,
                         const uint8_t *root, size_t root_len);
int af_ds_ev_job_new(struct af_ds_eventual *ev, struct af_ds_conn *c, int64_t part,
                     const uint8_t *root, size_t root_len, int64_t *job);
/* After the write transaction on c: committed keeps its changes to the
 * count, a rollback forgets them. */
void af_ds_ev_end(struct af_ds_eventual *ev, bool committed);

/* Rolls group (part, root) forward in a write transaction of its own
 * (nothing when it has no job): for Get and ancestor queries. */
int af_ds_ev_catch_up(struct af_ds_eventual *ev, struct af_ds_conn *c, int64_t part,
                      const uint8_t *root, size_t root_len);
/* Before a global query: applies what the policy allows. */
int af_ds_ev_groom(struct af_ds_eventual *ev, struct af_ds_conn *c);
/* Applies every job (the admin console, startup). */
int af_ds_ev_flush(struct af_ds_eventual *ev, struct af_ds_conn *c);
/* After the file was emptied (POST /clear). */
void af_ds_ev_cleared(struct af_ds_eventual *ev);

#endif
