/*
 * taskqueue_yaml — the app's queue.yaml (docs/taskqueue.md): which queues
 * exist, and how fast, how often and how hard their tasks are run.
 *
 * The main thread loads the file once at startup (a bad file stops appfront
 * with one line naming FILE:LINE:COLUMN) and hands the result to the API
 * server, whose taskqueue service keeps its own copy, and to the task
 * runner. The queue "default" always exists: queue.yaml may change its
 * settings but not remove it or make it a pull queue.
 */
#ifndef AF_TASKQUEUE_YAML_H
#define AF_TASKQUEUE_YAML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Production's limits on names (queue.yaml reference). */
#define AF_QUEUE_NAME_MAX 100

/* retry_parameters. A negative limit means "no limit". */
struct af_queue_retry {
    int32_t retry_limit;   /* task_retry_limit; -1: none */
    int64_t age_limit_sec; /* task_age_limit; -1: none */
    double min_backoff_sec; /* min_backoff_seconds, 0.1 */
    double max_backoff_sec; /* max_backoff_seconds, 3600 */
    int32_t max_doublings;  /* max_doublings, 16 */
};

struct af_queue_def {
    char *name;          /* owned */
    bool pull;           /* mode: pull */
    double rate;         /* tasks per second; 0 pauses a push queue */
    char *rate_text;     /* as written ("5/s"), owned; NULL for pull queues */
    int bucket_size;     /* token bucket capacity, 5 */
    int max_concurrent;  /* max_concurrent_requests; 0: no limit */
    struct af_queue_retry retry;
    char *target;        /* "MODULE" or "VERSION.MODULE", owned, or NULL */
};

struct af_queue_yaml {
    struct af_queue_def *queues; /* owned; "default" is always one of them */
    size_t n;
    char *path; /* the file read, owned; NULL when there was none */
};

/* The defaults of a queue that queue.yaml does not mention (only "default"). */
void af_queue_retry_defaults(struct af_queue_retry *r);

/*
 * Parses queue.yaml text. name is used in messages ("queue.yaml" or a path).
 * Returns 0 and a config in *out (free with af_queue_yaml_free), or -1 with
 * one line "NAME:LINE:COL: what is wrong" in err.
 */
int af_queue_yaml_parse(const char *name, const char *text, size_t len,
                        struct af_queue_yaml **out, char *err, size_t errlen);

/*
 * Loads DIR/queue.yaml (or queue.yml). No such file is not an error: the
 * config then holds the queue "default" alone. Returns 0 or -1 with err set.
 */
int af_queue_yaml_load_dir(const char *dir, struct af_queue_yaml **out, char *err,
                           size_t errlen);

/* The config with only the queue "default" (no queue.yaml). */
struct af_queue_yaml *af_queue_yaml_default(void);

/* A deep copy; the caller frees it. */
struct af_queue_yaml *af_queue_yaml_copy(const struct af_queue_yaml *q);

/* The queue called name, or NULL. */
const struct af_queue_def *af_queue_yaml_find(const struct af_queue_yaml *q, const char *name);

/* True for a well-formed queue name: 1-100 of [A-Za-z0-9-]. */
bool af_queue_name_is_valid(const char *name, size_t len);

/* A queue's target: "MODULE" or "VERSION.MODULE", each name 1 to 63
 * lower-case letters, digits and '-', not starting or ending with '-'.
 * Whether the module is served is for the task runner to say. */
bool af_queue_target_is_valid(const char *target);

/* NULL is a no-op. */
void af_queue_yaml_free(struct af_queue_yaml *q);

#endif
