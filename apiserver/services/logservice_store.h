/*
 * logservice_store — the logservice's SQLite file (--logs_path): request
 * records and app log lines that survive a restart (docs/services.md,
 * "logservice", "On disk").
 *
 * The logservice keeps serving Read from memory; this file is the durable
 * copy it writes through and reloads at startup. Two tables, one row per
 * request record and per app line, each keyed by the logservice's sequence
 * number (the order of Read and its page offsets), so a restarted server
 * continues the same sequence and an offset made before the restart still
 * pages. A meta row keeps the sequence's floor across a clear.
 *
 * A file is used only when it is empty (it is made) or already carries
 * this store's application_id and schema version and passes a quick check:
 * a foreign or damaged file is refused and never written to.
 *
 * Writes go in transactions the caller opens and commits, one per batch
 * the front end handed over (or per Flush), with prepared statements; the
 * commit also prunes each table to its newest rows once it holds
 * AF_LOGSTORE_PRUNE_SLACK rows more than the caller's bound, so the file
 * stays bounded without a DELETE per batch. WAL with synchronous=NORMAL,
 * like the datastore: a committed batch survives the death of the process.
 *
 * One thread at a time: opened on the main thread, then used by the API
 * backend thread alone, closed after it has stopped.
 */
#ifndef AF_LOGSERVICE_STORE_H
#define AF_LOGSERVICE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "apiserver/reqlog.h"

/* Rows a table may hold over its bound before a commit prunes it back. */
#define AF_LOGSTORE_PRUNE_SLACK 1000

struct af_logstore; /* opaque */

/* One request record read back: the head (module unset; len[] the
 * strings' lengths, cut at AF_REQLOG_MAX_STR), the strings (not
 * terminated) and the names the head cannot carry. Borrowed: valid during
 * the callback only. */
struct af_logstore_record {
    uint64_t seq;
    struct af_reqlog_head h;
    const char *str[AF_RQ_N];
    const char *module, *version;
};

/*
 * Opens path, making it (and the schema) when it does not exist or is
 * empty. Returns the store, or NULL with a one-line message in err naming
 * the file and saying what to do: it cannot be opened or made, it is not
 * an SQLite database, it is another program's database, it has another
 * schema version, or it is damaged. Nothing is written to a refused file.
 */
struct af_logstore *af_logstore_open(const char *path, char *err, size_t errlen);

/* Closes the file; NULL is fine. Uncommitted writes are rolled back. */
void af_logstore_close(struct af_logstore *s);

/* The file's path (owned by the store). */
const char *af_logstore_path(const struct af_logstore *s);

/* The largest sequence number the file has seen: its rows' and the floor
 * set by the last clear. 0 for a new file. */
uint64_t af_logstore_max_seq(const struct af_logstore *s);

/* Rows held now (counts kept in memory, exact after every commit). */
size_t af_logstore_n_records(const struct af_logstore *s);
size_t af_logstore_n_lines(const struct af_logstore *s);

/* Opens a write transaction. Returns 0 or -1 (logged once per run of
 * failures; the caller goes on without the file for this batch). */
int af_logstore_begin(struct af_logstore *s);

/* Adds one request record with its module and version names and the
 * method's name ("" when the request line was never read); the strings
 * are h->len[i] bytes at str[i]. Inside a transaction. 0 or -1. */
int af_logstore_put_record(struct af_logstore *s, uint64_t seq, const struct af_reqlog_head *h,
                           const char *const str[AF_RQ_N], const char *module,
                           const char *version, const char *method);

/* Adds one app log line. Inside a transaction. 0 or -1. */
int af_logstore_put_line(struct af_logstore *s, uint64_t seq, const char *request_id,
                         int64_t time_usec, int level, const char *message);

/* Prunes each table to its newest max_records / max_lines rows when it
 * holds AF_LOGSTORE_PRUNE_SLACK more, then commits. After any failed put
 * in the transaction, or a failure here, rolls back instead and returns
 * -1: the batch is lost to the file, not to memory. */
int af_logstore_commit(struct af_logstore *s, size_t max_records, size_t max_lines);

/* Deletes every row and keeps seq_floor as the sequence to stay above
 * (offsets made before the clear then never name a later log). 0 or -1. */
int af_logstore_clear(struct af_logstore *s, uint64_t seq_floor);

/* Calls fn for the newest max request records, oldest first. The method
 * comes as its name in rec->h.method's place: fn gets it as method.
 * Returns the number of rows read, or -1 on an error (logged). */
typedef void (*af_logstore_record_fn)(void *arg, const struct af_logstore_record *rec,
                                      const char *method);
long af_logstore_load_records(struct af_logstore *s, size_t max, af_logstore_record_fn fn,
                              void *arg);

/* Calls fn for the newest max app lines, oldest first. Strings borrowed
 * for the call. Returns the number read, or -1. */
typedef void (*af_logstore_line_fn)(void *arg, uint64_t seq, const char *request_id,
                                    int64_t time_usec, int level, const char *message);
long af_logstore_load_lines(struct af_logstore *s, size_t max, af_logstore_line_fn fn, void *arg);

#endif
