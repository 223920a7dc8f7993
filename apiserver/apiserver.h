/*
 * apiserver — the always-on API RPC server (shared/DESIGN.md, "API protocol").
 *
 * af_api_start() binds the listeners and starts two threads: the listener
 * thread (its own libevent loop: the framed Unix socket and HTTP on TCP) and
 * the services backend thread (owns all service state, one call at a time).
 * They run until af_api_stop(), whether or not any request is in flight.
 * The main thread only calls the functions below.
 */
#ifndef AF_APISERVER_H
#define AF_APISERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct af_queue_yaml; /* apiserver/services/taskqueue_yaml.h */
struct af_index_yaml; /* apiserver/services/datastore_index_yaml.h */
struct af_logstore;   /* apiserver/services/logservice_store.h */

/* One module the front end serves, as the modules service reports it. */
struct af_api_module {
    const char *name;     /* "default", "worker" */
    const char *version;  /* its one version, "1" */
    const char *hostname; /* host:port of its main front-end port, "localhost:8081" */
    int instances;        /* what modules.GetNumInstances reports */
    bool background;      /* manual or basic scaling: runtime.RunInBackground may run */
};

/* What the API server needs to know. Strings are borrowed for the duration
 * of af_api_start() only (the server copies what it keeps). */
struct af_api_options {
    const char *host;        /* TCP HTTP listener host, e.g. "localhost" */
    int port;                /* 0: pick a free port */
    const char *socket_path; /* framed Unix socket (mode 0600); NULL: none */

    const char *app_id;         /* application id as written in app.yaml, e.g. "testapp" */
    const char *module;         /* default module name, "default" */
    const char *version;        /* default version, "1" */
    int module_instances;       /* instance count reported by modules.GetNumInstances */
    const char *server_host;    /* host:port of the default module's port, "localhost:8080" */
    /* Every module, in the front end's order, the default one (named by
     * `module`) among them; NULL with n_modules 0 means the default module
     * alone, described by the four fields above. Borrowed like the strings:
     * the server keeps its own copy, which no thread changes. */
    const struct af_api_module *modules;
    size_t n_modules;
    const char *storage_path;   /* private directory for service state (exists, 0700) */
    const char *datastore_path; /* SQLite file of the datastore */
    /* Directory of the blobs' files (--blobstore_path); NULL:
     * storage_path/blobs. Created if missing. */
    const char *blobstore_path;
    bool clear_datastore;
    /* --clear_search_indexes: the search service starts with no indexes. */
    bool clear_search_indexes;
    long long memcache_max_bytes; /* LRU cap of memcache values + keys */
    int default_deadline_ms;      /* a call queued longer than this is not run; 60000 */
    /* The app's queues (queue.yaml), or NULL for the queue "default" alone.
     * Borrowed until af_api_start() returns: the taskqueue service copies it. */
    const struct af_queue_yaml *queues;
    /* The app's index.yaml (docs/datastore.md, "Indexes"): its definitions
     * and where generated ones are written; NULL when there is no app
     * directory (`appfront api`): nothing is read or written. Borrowed
     * until af_api_start() returns: the datastore copies it. */
    const struct af_index_yaml *indexes;
    /* --require_indexes: a query that needs a composite index index.yaml
     * does not define fails with NEED_INDEX instead of adding it. */
    bool require_indexes;
    /* --datastore_consistency_policy: "time", "random" or "consistent"
     * (docs/datastore.md, "Consistency"); NULL: consistent, every write
     * visible to every query at once. */
    const char *datastore_consistency_policy;
    /* --auth_domain: the OAuth user's auth domain; NULL: "gmail.com". */
    const char *auth_domain;
    /* --default_gcs_bucket_name; NULL: "APP_ID.appspot.com". */
    const char *default_gcs_bucket_name;
    /* --enable_host_checking and --addn_host: which Host values the HTTP
     * port answers (common/hostcheck.h, with `host` as the bound name).
     * The zero value (false) answers every Host. */
    bool enable_host_checking;
    char *const *addn_hosts;
    size_t n_addn_hosts;
    /* Mail (docs/services.md, "mail"): deliver through the SMTP server at
     * smtp_host:smtp_port (NULL: log and keep, deliver nothing), logging
     * in as smtp_user (NULL: no AUTH) with smtp_password, using STARTTLS
     * when offered and smtp_allow_tls; show_mail_body logs every body.
     * Borrowed like the strings above: the mail service copies them. */
    const char *smtp_host;
    int smtp_port;
    const char *smtp_user;
    const char *smtp_password;
    bool smtp_allow_tls;
    bool show_mail_body;
    /* --logs_path: the logservice's SQLite file (af_logstore_open,
     * apiserver/services/logservice_store.h), or NULL to keep request logs
     * in memory alone. Owned by the API server from af_api_start() on,
     * whether it succeeds or not: the backend thread alone uses it, and
     * af_api_stop() closes it once that thread has stopped. */
    struct af_logstore *logstore;
};

/* Opaque: the running server. */
struct af_api;

/*
 * Binds, starts both threads and returns once both listeners accept calls.
 * Returns 0 and sets *out, or -1 with a one-line message in err.
 */
int af_api_start(const struct af_api_options *opts, struct af_api **out, char *err,
                 size_t errlen);

/* The TCP port actually bound (useful with port 0). */
int af_api_port(const struct af_api *api);

/*
 * Internal calls: the main thread's way into a service (the task runner of
 * proxy/taskrunner.c, the admin console of proxy/console.c), through the
 * same hand-off as every call (apiserver/backend.c). They run methods of
 * the service's `internal` table, which no client can reach. Main thread
 * only.
 *
 * Several parts of the main thread make internal calls and all replies
 * come back on one queue, so they are routed by consumer: a part
 * subscribes once (af_api_internal_subscribe) and gets an id, builds every
 * tag it passes to af_api_internal_call with AF_API_TAG(id, seq), and its
 * function gets the replies whose tag carries its id, plus every notice.
 * The dispatcher owns the one event that watches af_api_internal_fd. A
 * reply for a consumer that has unsubscribed meanwhile is dropped: that is
 * how a part that goes away forgets the calls it still had out.
 */

/* A descriptor to watch for reading: replies or notices are waiting. */
int af_api_internal_fd(const struct af_api *api);

/* Queues a call of service.method (an internal method) with the encoded
 * request req (copied). tag comes back with the reply. Returns 0, or -1
 * with a log line when the call could not be queued: no reply will come. */
int af_api_internal_call(struct af_api *api, const char *service, const char *method,
                         const uint8_t *req, size_t len, uint64_t tag);

/* A reply to an internal call, or a notice from a service
 * (af_result.notify_main). Everything is borrowed for the callback only. */
struct af_api_internal_reply {
    bool notice;         /* a notice: only service is set */
    const char *service; /* notice: the service that asked to be heard */
    uint64_t tag;        /* reply: the tag given to af_api_internal_call */
    bool ok;             /* reply: the method succeeded */
    /* reply, failed: the service's application error code (app_error
     * true), else an RPC error; data/len then hold the failure's detail
     * for a person (not NUL-terminated; may be empty). */
    bool app_error;
    int code;
    const uint8_t *data; /* reply: the encoded response */
    size_t len;
};

typedef void (*af_api_internal_fn)(void *arg, const struct af_api_internal_reply *r);

/* Takes everything waiting for the main thread, oldest first, and calls
 * fn(arg, reply) for each. The dispatcher below is built on it; a part
 * that subscribed must not call it (it would take other parts' replies). */
void af_api_internal_take(struct af_api *api, af_api_internal_fn fn, void *arg);

/* Consumers of internal replies: ids 1..AF_API_MAX_CONSUMERS, in the top
 * byte of a tag; the low 56 bits are the consumer's own. */
#define AF_API_MAX_CONSUMERS 8
#define AF_API_TAG_SHIFT 56
#define AF_API_TAG(id, seq)                                                                        \
    (((uint64_t)(id) << AF_API_TAG_SHIFT) |                                                        \
     ((uint64_t)(seq) & ((UINT64_C(1) << AF_API_TAG_SHIFT) - 1)))
#define AF_API_TAG_CONSUMER(tag) ((int)((tag) >> AF_API_TAG_SHIFT))

/* Subscribes fn(arg, reply) to the replies tagged with the returned id and
 * to every notice. The first subscription adds the dispatcher's event to
 * base (the main thread's loop; every subscriber passes the same). Returns
 * the id, or -1 with a log line when all ids are taken or the event cannot
 * be added. Main thread only. */
struct event_base;
int af_api_internal_subscribe(struct af_api *api, struct event_base *base, af_api_internal_fn fn,
                              void *arg);

/* Unsubscribes id (-1 and an unknown id are no-ops): replies still out for
 * it are dropped when they come. The last one out frees the event; so
 * every subscriber unsubscribes before base is freed, and before
 * af_api_stop(). Main thread only. */
void af_api_internal_unsubscribe(struct af_api *api, int id);

/*
 * One-way posts: the main thread hands a copy of data (len bytes) to the
 * `internal` method `method` of `service` (both static strings), with no
 * reply; the method gets it as call->request and copies what it keeps. The
 * job and its buffer come back to the main thread once run and are reused
 * by the next post, so the memory a post takes is made and freed by the
 * main thread alone.
 *
 * flags: AF_API_POST_LAZY, the backend is not woken: the post is run
 * before the next call that wakes it (FIFO with every call).
 * AF_API_POST_JOIN (lazy too): when the newest job in the backend's inbox
 * is a post to the same method that has room, the data is appended to
 * that post's, so the method gets several posts' data as one, back to
 * back: for data that is a sequence of self-delimiting parts.
 *
 * Returns AF_API_POST_WAITING (1) when the post waits for such a wake-up
 * in a job of its own, AF_API_POST_JOINED (2) when it waits joined to an
 * earlier post, 0 when the backend is bound to take it anyway (it was
 * woken, or is busy), -1 when it was not posted: a lazy post never waits
 * for the inbox's mutex, and finding it held is -1 too, the caller keeps
 * its data for the next try. The caller bounds how much it leaves
 * waiting. At most AF_API_POST_MAX_BYTES a post; a longer one, or one made
 * while af_api_post_full() is true, is -1 with an error line. Main thread
 * only.
 */
#define AF_API_POST_LAZY 1u
#define AF_API_POST_JOIN 2u
#define AF_API_POST_WAITING 1
#define AF_API_POST_JOINED 2
#define AF_API_POST_MAX_BYTES (16u << 10)
/* Makes every post job at once (16 of AF_API_POST_MAX_BYTES, their pages
 * touched), before the first post: the memory of posts is then fixed from
 * startup on. Without it every post is -1. Main thread only. */
void af_api_post_start(struct af_api *api);
int af_api_post(struct af_api *api, const char *service, const char *method,
                const uint8_t *data, size_t len, unsigned flags);

/* True when so many posts are out (posted, not yet run and back) that the
 * caller should hold its data and post it later, in one piece: the jobs
 * and memory of posts stay bounded even when the backend thread gets no
 * CPU for a while. A caller must not leave that many posts waiting for a
 * wake-up. Main thread only. */
bool af_api_post_full(struct af_api *api);

/* Stops accepting, answers or drops in-flight calls, joins both threads,
 * removes the Unix socket and frees everything. NULL is a no-op. */
void af_api_stop(struct af_api *api);

#endif
