/*
 * taskqueue_store — where tasks live: one SQLite file of their own,
 * STORAGE_PATH/taskqueue.sqlite3 (docs/taskqueue.md, "Storage").
 *
 * Tables:
 *
 *   task(queue, name, eta, created, first_try, retry_count, exec_count,
 *        last_status, pull, tag, request)
 *       one row per task; request is the accepted TaskQueueAddRequest as
 *       protobuf-c packs it (method, url, headers, body, retry parameters);
 *       times are microseconds since the epoch.
 *   tombstone(queue, name, at)
 *       names of deleted or finished named tasks, which may not be reused
 *       for AF_TQ_TOMBSTONE_USEC.
 *
 * Every function runs on the backend thread. Functions return 0 or -1 after
 * logging SQLite's message (the service answers INTERNAL_ERROR).
 */
#ifndef AF_TASKQUEUE_STORE_H
#define AF_TASKQUEUE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How long a tombstone stops a name from being reused: production says
 * "up to 7 days". */
#define AF_TQ_TOMBSTONE_USEC (7LL * 86400 * 1000000)

struct af_tq_store;

/* One task row. Strings and buffers are owned (af_tq_task_release). */
struct af_tq_task {
    char *queue;
    char *name;
    int64_t eta;
    int64_t created;
    int64_t first_try; /* 0: never run */
    int32_t retry_count;
    int32_t exec_count;
    int32_t last_status; /* HTTP status of the last run; 0: none */
    bool pull;
    uint8_t *tag; /* NULL: no tag */
    size_t tag_len;
    uint8_t *request; /* packed Af__Taskqueue__TaskQueueAddRequest */
    size_t request_len;
};

void af_tq_task_release(struct af_tq_task *t);
/* Releases n tasks and the array. */
void af_tq_tasks_free(struct af_tq_task *v, size_t n);

/* Opens (creating) the store at path; ":memory:" for a private one.
 * Returns NULL with a one-line message in err. */
struct af_tq_store *af_tq_store_open(const char *path, char *err, size_t errlen);
/* NULL is a no-op. */
void af_tq_store_close(struct af_tq_store *s);

int af_tq_store_begin(struct af_tq_store *s);
int af_tq_store_commit(struct af_tq_store *s);
void af_tq_store_rollback(struct af_tq_store *s);

enum af_tq_name_state { AF_TQ_NAME_FREE, AF_TQ_NAME_TASK, AF_TQ_NAME_TOMBSTONE };

/* Whether (queue, name) is free, a live task, or a tombstone younger than
 * AF_TQ_TOMBSTONE_USEC at now. */
int af_tq_store_name_state(struct af_tq_store *s, const char *queue, const char *name,
                           int64_t now, enum af_tq_name_state *state);

int af_tq_store_insert(struct af_tq_store *s, const struct af_tq_task *t);
/* Writes eta, first_try, retry_count, exec_count and last_status of t. */
int af_tq_store_update(struct af_tq_store *s, const struct af_tq_task *t);
/* Loads (queue, name) into *t; *found tells whether it exists. */
int af_tq_store_get(struct af_tq_store *s, const char *queue, const char *name,
                    struct af_tq_task *t, bool *found);
/* Removes the task; with tombstone, remembers its name at now. *removed
 * tells whether there was one. */
int af_tq_store_delete(struct af_tq_store *s, const char *queue, const char *name,
                       bool tombstone, int64_t now, bool *removed);
/* Removes every task of queue (no tombstones). */
int af_tq_store_purge(struct af_tq_store *s, const char *queue);
/* Removes everything (POST /clear). */
int af_tq_store_clear(struct af_tq_store *s);
/* Forgets tombstones older than AF_TQ_TOMBSTONE_USEC. */
int af_tq_store_expire_tombstones(struct af_tq_store *s, int64_t now);

/* What af_tq_store_list returns. pull: 0 push only, 1 pull only, -1 both. */
struct af_tq_query {
    const char *queue;
    int pull;
    bool by_name;          /* order by name from start_name; else by (eta, name) */
    int64_t start_eta;     /* by eta: (eta, name) >= (start_eta, start_name) */
    const char *start_name; /* "" for the beginning */
    bool due_only;         /* eta <= due_by */
    int64_t due_by;
    bool match_tag;        /* only tasks whose tag is tag (NULL: untagged) */
    const uint8_t *tag;
    size_t tag_len;
    size_t limit;
};

/* The tasks q selects, in its order, as a malloc'd array (free with
 * af_tq_tasks_free). */
int af_tq_store_list(struct af_tq_store *s, const struct af_tq_query *q, struct af_tq_task **out,
                     size_t *n);

/* Number of tasks of queue and the oldest eta (-1 when none). */
int af_tq_store_count(struct af_tq_store *s, const char *queue, int64_t *n, int64_t *oldest);

/* Calls fn for each queue name that holds tasks, with their count. */
int af_tq_store_each_queue(struct af_tq_store *s,
                           void (*fn)(void *arg, const char *queue, int64_t n), void *arg);

#endif
