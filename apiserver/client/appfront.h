/*
 * appfront.h — the C client library for native App Engine apps running
 * under appfront (build/libappfront.a; docs/api.md "C client library").
 *
 * A native app instance makes API calls (memcache, datastore, ...) to the
 * appfront API server over the framed Unix socket named by the
 * APPFRONT_API_SOCKET environment variable, which appfront sets for every
 * instance. Link with: build/libappfront.a $(pkg-config --libs libprotobuf-c)
 * -lpthread. The library depends on nothing else of appfront.
 *
 * Every function is thread-safe. Connections are kept in a small pool shared
 * by all threads (one call in flight per connection), opened on demand and
 * dropped on any error, so a restarted API server is reconnected to on the
 * next call. Allocation failures abort(), like the rest of appfront.
 *
 * Error convention: functions return a value >= 0 on success and -1 on
 * failure, with the details in the struct af_client_error the caller
 * passes (which may be NULL when the caller does not care).
 */
#ifndef APPFRONT_H
#define APPFRONT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Which layer a failed call failed in. */
enum af_client_status {
    AF_CLIENT_OK = 0,
    AF_CLIENT_APP_ERROR,       /* the service refused: code is the service's own error code */
    AF_CLIENT_RPC_ERROR,       /* the RPC layer failed: code is an af_client_rpc_code */
    AF_CLIENT_TRANSPORT_ERROR, /* the API server could not be reached: code is an errno */
};

/* The RpcError codes of the remote_api protocol. */
enum af_client_rpc_code {
    AF_CLIENT_RPC_UNKNOWN = 0,
    AF_CLIENT_RPC_CALL_NOT_FOUND = 1,
    AF_CLIENT_RPC_PARSE_ERROR = 2,
    AF_CLIENT_RPC_REQUEST_TOO_LARGE = 5,
    AF_CLIENT_RPC_BAD_REQUEST = 8,
    AF_CLIENT_RPC_RESPONSE_TOO_LARGE = 9,
    AF_CLIENT_RPC_DEADLINE_EXCEEDED = 12,
};

struct af_client_error {
    enum af_client_status status;
    int code;
    char detail[256]; /* for a person; always NUL-terminated */
};

/* The largest request or response envelope, as the server enforces it. */
#define AF_CLIENT_MAX_MESSAGE (32u << 20)

/*
 * Calls service.method with the encoded service request req[0..req_len).
 * All inputs are borrowed. On success returns 0 and sets *resp to the encoded
 * service response, malloc'd and owned by the caller (free() it; non-NULL
 * even when *resp_len is 0). On failure returns -1, sets *resp to NULL and
 * fills *err.
 *
 * deadline_ms bounds the whole call (connecting, sending, waiting, reading);
 * <= 0 means 60 s, the default of the official libraries. A call that times
 * out fails with AF_CLIENT_RPC_ERROR / AF_CLIENT_RPC_DEADLINE_EXCEEDED and
 * its connection is closed (a late reply is never mistaken for the next
 * call's).
 *
 * The call carries the calling thread's request id (af_client_set_request_id).
 */
int af_client_call(const char *service, const char *method, const uint8_t *req, size_t req_len,
                   uint8_t **resp, size_t *resp_len, struct af_client_error *err, int deadline_ms);

/*
 * Sets the request id sent with this thread's calls: the value of the
 * X-AppEngine-API-Ticket header of the HTTP request the thread is serving,
 * which ties log lines to that request. id is copied (up to 127 bytes);
 * NULL clears it.
 */
void af_client_set_request_id(const char *id);

/*
 * Uses the socket at path instead of $APPFRONT_API_SOCKET (path copied; NULL
 * returns to the environment variable). Pooled connections are closed.
 */
void af_client_set_socket_path(const char *path);

/* Closes every pooled connection, e.g. before exit. Calls after it simply
 * reconnect. (A child after fork() drops the parent's connections
 * automatically.) */
void af_client_close_all(void);

/* ---- memcache ------------------------------------------------------------
 *
 * Typed helpers for the "memcache" service. ns is the namespace (NULL or ""
 * for none); keys and values are byte strings (key at most 250 bytes, key +
 * value at most 1 MiB, the service's limits). deadline is that of
 * af_client_call, 5 s.
 */

/* Returns 1 and sets *value (malloc'd, owned by the caller) and *value_len
 * (and *flags when non-NULL) on a hit, 0 on a miss, -1 on error. */
int af_memcache_get(const char *ns, const void *key, size_t key_len, uint8_t **value,
                    size_t *value_len, uint32_t *flags, struct af_client_error *err);

/* Stores unconditionally. expiration_s: 0 for never, else seconds from now
 * (up to 30 days) or an absolute Unix time. Returns 0 or -1. */
int af_memcache_set(const char *ns, const void *key, size_t key_len, const void *value,
                    size_t value_len, uint32_t flags, uint32_t expiration_s,
                    struct af_client_error *err);

/* Returns 1 if the key was deleted, 0 if it was not there, -1 on error. */
int af_memcache_delete(const char *ns, const void *key, size_t key_len,
                       struct af_client_error *err);

/*
 * Adds delta (negative: subtracts, stopping at 0) to the decimal number
 * stored at key, atomically. When the key is absent and initial_value is
 * non-NULL, the key is first set to *initial_value. Returns 1 and sets
 * *new_value (when non-NULL), 0 when the key is absent and initial_value is
 * NULL, -1 on error (e.g. the value is not a number).
 */
int af_memcache_increment(const char *ns, const void *key, size_t key_len, int64_t delta,
                          const uint64_t *initial_value, uint64_t *new_value,
                          struct af_client_error *err);


/* ---- datastore -----------------------------------------------------------
 * (apiserver/client/datastore.c; docs/datastore.md.)
 *
 * Typed helpers for the "datastore_v3" service. Keys and entities are
 * opaque values built and read with the functions below; every pointer a
 * function returns is owned by the caller and released with the matching
 * _free, except where it says "borrowed". Keys belong to the app named by
 * $GAE_APPLICATION (appfront sets it). The deadline of every call is 10 s.
 */

struct af_ds_key;    /* a complete or incomplete key */
struct af_ds_entity; /* a key and its properties */
struct af_ds_query;  /* a query being built */

/*
 * A key of kind under parent (NULL: a root key, in namespace ns; NULL or ""
 * is the default namespace; a child takes its parent's namespace). name
 * (non-NULL) or id (> 0) names it; name NULL and id 0 make it incomplete,
 * and af_ds_put() then gives it an id. All arguments are copied.
 */
struct af_ds_key *af_ds_key_new(const char *ns, const struct af_ds_key *parent, const char *kind,
                                const char *name, int64_t id);
struct af_ds_key *af_ds_key_dup(const struct af_ds_key *key);
void af_ds_key_free(struct af_ds_key *key); /* NULL is a no-op */
/* Parts of the last element (borrowed strings; id 0 / name NULL when
 * absent). */
const char *af_ds_key_kind(const struct af_ds_key *key);
int64_t af_ds_key_id(const struct af_ds_key *key);
const char *af_ds_key_name(const struct af_ds_key *key);

/* A new entity with a copy of key and no properties. */
struct af_ds_entity *af_ds_entity_new(const struct af_ds_key *key);
void af_ds_entity_free(struct af_ds_entity *e); /* NULL is a no-op */
/* The entity's key (borrowed; complete after af_ds_put or af_ds_get). */
const struct af_ds_key *af_ds_entity_key(const struct af_ds_entity *e);

/*
 * Adds a value to property name; adding to a name again makes it
 * multi-valued. indexed = 0 stores the value unindexed (queries do not see
 * it; required for strings over 1500 bytes). Bytes are always unindexed.
 * Times are microseconds since the Unix epoch (the Go library's time.Time).
 * Arguments are copied.
 */
void af_ds_entity_add_string(struct af_ds_entity *e, const char *name, const char *s, size_t len,
                             int indexed);
void af_ds_entity_add_int(struct af_ds_entity *e, const char *name, int64_t v, int indexed);
void af_ds_entity_add_double(struct af_ds_entity *e, const char *name, double v, int indexed);
void af_ds_entity_add_bool(struct af_ds_entity *e, const char *name, int v, int indexed);
void af_ds_entity_add_time(struct af_ds_entity *e, const char *name, int64_t unix_us,
                           int indexed);
void af_ds_entity_add_bytes(struct af_ds_entity *e, const char *name, const void *data,
                            size_t len);
void af_ds_entity_add_key(struct af_ds_entity *e, const char *name, const struct af_ds_key *k,
                          int indexed);

/*
 * Reads the first value of property name. Each returns 1 and sets the
 * output when the property exists with that type (a string's bytes are
 * borrowed from e, not NUL-terminated: use *len), else 0. get_int also
 * reads times.
 */
int af_ds_entity_get_string(const struct af_ds_entity *e, const char *name, const char **s,
                            size_t *len);
int af_ds_entity_get_int(const struct af_ds_entity *e, const char *name, int64_t *v);
int af_ds_entity_get_double(const struct af_ds_entity *e, const char *name, double *v);
int af_ds_entity_get_bool(const struct af_ds_entity *e, const char *name, int *v);

/* Stores e; an incomplete key is completed in e. Returns 0 or -1. */
int af_ds_put(struct af_ds_entity *e, struct af_client_error *err);
/* Returns 1 and sets *out (owned by the caller) when key exists, 0 when it
 * does not, -1 on error. */
int af_ds_get(const struct af_ds_key *key, struct af_ds_entity **out,
              struct af_client_error *err);
/* Deletes key (absent is fine). Returns 0 or -1. */
int af_ds_delete(const struct af_ds_key *key, struct af_client_error *err);

enum af_ds_op {
    AF_DS_LT = 1,
    AF_DS_LE = 2,
    AF_DS_GT = 3,
    AF_DS_GE = 4,
    AF_DS_EQ = 5,
};

/* A query of kind (NULL: kindless) in namespace ns (NULL or "": default). */
struct af_ds_query *af_ds_query_new(const char *ns, const char *kind);
void af_ds_query_free(struct af_ds_query *q); /* NULL is a no-op */
void af_ds_query_filter_string(struct af_ds_query *q, const char *prop, enum af_ds_op op,
                               const char *value);
void af_ds_query_filter_int(struct af_ds_query *q, const char *prop, enum af_ds_op op,
                            int64_t value);
void af_ds_query_ancestor(struct af_ds_query *q, const struct af_ds_key *ancestor);
void af_ds_query_order(struct af_ds_query *q, const char *prop, int descending);
void af_ds_query_limit(struct af_ds_query *q, int limit); /* < 0: none (the default) */
void af_ds_query_keys_only(struct af_ds_query *q);

/*
 * Runs q and returns its results, at most its limit (and at most 100,000),
 * as an array of *n entities in *out (keys-only: entities with a key and no
 * properties), released with af_ds_entities_free. Returns 0 or -1 (the
 * datastore's BAD_REQUEST detail says what it does not support).
 */
int af_ds_query_run(const struct af_ds_query *q, struct af_ds_entity ***out, size_t *n,
                    struct af_client_error *err);
void af_ds_entities_free(struct af_ds_entity **list, size_t n);

#ifdef __cplusplus
}
#endif

#endif
