/*
 * datastore_store — the SQLite side of the datastore: one connection, its
 * schema and its prepared statements (docs/datastore.md, "Schema").
 *
 * Tables (all keys are the encodings of datastore_key.h):
 *
 *   partition(id, app, ns)              one row per (app, namespace)
 *   entity(part, key, kind, data)       data = the EntityProto, official bytes
 *   prop(part, kind, name, value, key)  one row per indexed value
 *   egroup(part, root, version)         optimistic-concurrency version per group
 *   id_counter(app, next)               next automatic id; never goes down
 *   composite_index(id, app, data)      CreateIndex definitions (kept, not used)
 *   job(id, part, root, due)            a committed write of a group that global
 *                                       queries do not see yet (datastore_eventual.h)
 *   job_write(job, n, key, data)        its writes in order; data NULL: a delete
 *
 * Every function runs on the backend thread; a connection is used by one
 * caller at a time. Functions return 0 or a negative value after logging
 * SQLite's message (the caller answers INTERNAL_ERROR).
 */
#ifndef AF_DATASTORE_STORE_H
#define AF_DATASTORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

/* Opaque: a connection with its statement cache. */
struct af_ds_conn;

/*
 * Opens (and with create_schema, creates or checks) the database at path.
 * Returns the connection, or NULL with a one-line message in err.
 */
struct af_ds_conn *af_ds_conn_open(const char *path, bool create_schema, char *err, size_t errlen);
/* Finalizes every statement and closes. NULL is a no-op. */
void af_ds_conn_close(struct af_ds_conn *c);

/* Removes the database file and its -wal and -shm companions. */
void af_ds_store_unlink(const char *path);

/* Transactions. begin_write takes the write lock at once (BEGIN IMMEDIATE);
 * begin_read starts a read transaction and pins its snapshot immediately, so
 * every later read on this connection sees the database as it is now. */
int af_ds_begin_write(struct af_ds_conn *c);
int af_ds_begin_read(struct af_ds_conn *c);
int af_ds_commit(struct af_ds_conn *c);
/* Rolls back if a transaction is open; never fails. */
void af_ds_rollback(struct af_ds_conn *c);

/* A prepared statement for sql from the connection's cache (reset, bindings
 * cleared). Borrowed: valid until the next af_ds_prepare on c. NULL and a
 * log line when sql does not compile. */
sqlite3_stmt *af_ds_prepare(struct af_ds_conn *c, const char *sql);

/* Deletes every row of every table (POST /clear). */
int af_ds_store_clear(struct af_ds_conn *c);

/*
 * The id of partition (app, ns). With create, inserts it when missing (call
 * inside a write transaction). Without create, *id = 0 when it does not
 * exist.
 */
int af_ds_partition(struct af_ds_conn *c, const char *app, const char *ns, bool create,
                    int64_t *id);

/* The stored EntityProto of (part, key) as a malloc'd buffer in *data, or
 * *data = NULL when there is none. */
int af_ds_entity_get(struct af_ds_conn *c, int64_t part, const uint8_t *key, size_t key_len,
                     uint8_t **data, size_t *data_len);

/* One index row of an entity. */
struct af_ds_index_row {
    const char *name;
    const uint8_t *value;
    size_t value_len;
};

/* Replaces entity (part, key) and all its index rows. */
int af_ds_entity_put(struct af_ds_conn *c, int64_t part, const uint8_t *key, size_t key_len,
                     const char *kind, const uint8_t *data, size_t data_len,
                     const struct af_ds_index_row *rows, size_t n_rows);

/* Deletes entity (part, key) and its index rows; *existed says whether it
 * was there. */
int af_ds_entity_delete(struct af_ds_conn *c, int64_t part, const uint8_t *key, size_t key_len,
                        bool *existed);

/* The version of entity group (part, root): 0 when it was never written. */
int af_ds_group_version(struct af_ds_conn *c, int64_t part, const uint8_t *root, size_t root_len,
                        int64_t *version);
/* Increments it (inside a write transaction) and returns the new version. */
int af_ds_group_bump(struct af_ds_conn *c, int64_t part, const uint8_t *root, size_t root_len,
                     int64_t *version);

/* The id counter of app: the next id to hand out (1 when never used). */
int af_ds_counter_get(struct af_ds_conn *c, const char *app, int64_t *next);
int af_ds_counter_set(struct af_ds_conn *c, const char *app, int64_t next);

/* Metadata: calls fn with each namespace of app that holds an entity, and
 * with each kind of partition part, in byte order. */
int af_ds_list_namespaces(struct af_ds_conn *c, const char *app,
                          void (*fn)(void *arg, const char *name), void *arg);
int af_ds_list_kinds(struct af_ds_conn *c, int64_t part, void (*fn)(void *arg, const char *name),
                     void *arg);

/* Composite index definitions (CreateIndex / GetIndices). */
int af_ds_index_add(struct af_ds_conn *c, const char *app, const uint8_t *data, size_t len,
                    int64_t *id);
/* Calls fn for each definition of app, in id order. */
int af_ds_index_list(struct af_ds_conn *c, const char *app,
                     void (*fn)(void *arg, int64_t id, const uint8_t *data, size_t len), void *arg);

/*
 * Jobs: writes that were committed (acknowledged) but are not applied to
 * entity and prop yet. All run inside the caller's write transaction except
 * the readers.
 */
struct af_ds_job {
    int64_t id, part;
    uint8_t *root; /* owned (af_ds_jobs_free) */
    size_t root_len;
    int64_t due; /* monotonic ms when the time policy applies it; 0 otherwise */
};
struct af_ds_job_write {
    bool is_put;
    uint8_t *key, *data; /* owned (af_ds_job_writes_free); data: the EntityProto */
    size_t key_len, data_len;
};

/* Appends a job for group (part, root); *id orders it after every live job. */
int af_ds_job_add(struct af_ds_conn *c, int64_t part, const uint8_t *root, size_t root_len,
                  int64_t due, int64_t *id);
/* Write number n of job: a put of data (the entity's official bytes), or a
 * delete of key when data is NULL. */
int af_ds_job_write_add(struct af_ds_conn *c, int64_t job, int64_t n, const uint8_t *key,
                        size_t key_len, const uint8_t *data, size_t data_len);
/* How many jobs there are, and (min_due may be NULL) the smallest due. */
int af_ds_job_count(struct af_ds_conn *c, int64_t *n, int64_t *min_due);
/* Every job, group by group, each group's in id order; the jobs of one
 * group. Malloc'd arrays for af_ds_jobs_free. */
int af_ds_job_all(struct af_ds_conn *c, struct af_ds_job **jobs, size_t *n);
int af_ds_job_group(struct af_ds_conn *c, int64_t part, const uint8_t *root, size_t root_len,
                    struct af_ds_job **jobs, size_t *n);
/* Whether group (part, root) has a job (as this connection sees the file). */
int af_ds_job_group_pending(struct af_ds_conn *c, int64_t part, const uint8_t *root,
                            size_t root_len, bool *pending);
void af_ds_jobs_free(struct af_ds_job *jobs, size_t n);
/* The writes of job, in order; malloc'd for af_ds_job_writes_free. */
int af_ds_job_writes(struct af_ds_conn *c, int64_t job, struct af_ds_job_write **w, size_t *n);
void af_ds_job_writes_free(struct af_ds_job_write *w, size_t n);
/* Deletes job and its writes (once applied). */
int af_ds_job_remove(struct af_ds_conn *c, int64_t job);

#endif
