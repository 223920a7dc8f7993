/*
 * datastore_query — query planning and execution over the index tables
 * (docs/datastore.md, "Queries").
 *
 * A Query message is compiled once into a plan: normalized filters and sort
 * orders, checked against what App Engine (and appfront) supports. Running
 * a plan produces rows in the query's order by index scans: the driving
 * scan is the property index of the first sort order (restricted by the
 * inequality filter), else the index of the first equality filter, else the
 * kind index or the key range; other filters are index lookups per row.
 *
 * Paging is by position, not by offset: a run remembers the sort tuple of
 * the last row it returned, and the next batch starts strictly after it.
 * The same tuple, made opaque, is the compiled cursor, so a cursor stays
 * valid whatever is written meanwhile.
 */
#ifndef AF_DATASTORE_QUERY_H
#define AF_DATASTORE_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "apiserver/services/datastore_key.h"
#include "apiserver/services/datastore_store.h"

typedef Af__Datastore__Query ds_query_t;

/* Query shapes have small bounds; App Engine's are similar (100 filters
 * and orders would already need a composite index nobody writes). */
#define AF_DS_MAX_FILTERS 64
#define AF_DS_MAX_ORDERS 16
#define AF_DS_MAX_PROJECTION 32

struct ds_eq {
    char *name;
    struct af_ds_buf value;
};

/* One bound of a range (inequality filter or __key__ filter). */
struct ds_bound {
    bool upper; /* < or <= */
    bool inclusive;
    struct af_ds_buf value;
    uint8_t tag[2]; /* inequalities: the value's type class, [tag[0], tag[1]) */
};

struct ds_order {
    char *name;
    bool desc;
};

/* A compiled query. Owned by its creator; af_ds_plan_free releases it. */
struct af_ds_plan {
    int64_t part;                    /* partition; 0 = it does not exist: no results */
    char *app, *ns;                  /* for the keys of results */
    char *kind;                      /* NULL: kindless */
    struct af_ds_buf anc_lo, anc_hi; /* ancestor key range; len 0 = none */
    bool has_anc_hi;

    struct ds_eq *eq; /* equality filters on properties */
    size_t n_eq;
    char *ineq_name; /* the one property with inequality filters, or NULL */
    struct ds_bound *ineq;
    size_t n_ineq;
    struct ds_bound *keyb; /* __key__ filters */
    size_t n_keyb;

    struct ds_order *orders; /* property orders; orders[0] drives when present */
    size_t n_orders;
    bool key_desc; /* the final __key__ order */

    bool keys_only;
    char **projection;
    size_t n_projection;
    size_t n_group; /* distinct: the first n_group orders are the group */
    uint32_t shape; /* hash of the order terms, stamped on cursors */
};

/*
 * Compiles q for partition part (0 if it does not exist). Returns the plan,
 * or NULL with *why set to a malloc'd sentence naming what is unsupported
 * or invalid (for BAD_REQUEST).
 */
struct af_ds_plan *af_ds_plan_compile(const ds_query_t *q, int64_t part, char **why);
void af_ds_plan_free(struct af_ds_plan *p);

/* The moving part of a query: where it is and how much it may still
 * return. */
struct af_ds_run {
    struct af_ds_plan *plan; /* borrowed */
    struct af_ds_buf pos;    /* tuple of the last row passed; len 0 = start */
    bool has_pos;
    struct af_ds_buf end; /* end cursor's tuple (inclusive) */
    bool has_end;
    bool end_empty;     /* an empty end cursor: nothing at all */
    int64_t limit_left; /* -1: no limit */
};

/* One result row as the executor hands it out. Borrowed for the callback. */
struct af_ds_row {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *const *values; /* projection values, in plan->projection order */
    const size_t *value_lens;
};

/* Called for each result row; returns false to stop the batch early (the
 * row is then not counted as returned). */
typedef bool (*af_ds_emit_fn)(void *arg, const struct af_ds_row *row);

/*
 * Runs one batch on c: skips up to `offset` rows (at most AF_DS_MAX_SKIP per
 * batch), then hands out up to `count` rows to emit. Sets *skipped and
 * *more (rows may remain). Returns 0, or -1 on an SQLite failure.
 */
#define AF_DS_MAX_SKIP 20000
int af_ds_run_batch(struct af_ds_conn *c, struct af_ds_run *run, int64_t offset, int64_t count,
                    int64_t *skipped, bool *more, af_ds_emit_fn emit, void *arg);

/* The opaque cursor of the run's current position (CompiledCursor
 * Position.start_key): malloc'd bytes in *out. */
void af_ds_cursor_encode(const struct af_ds_run *run, uint8_t **out, size_t *len);
/* Positions run (start, or end when is_end) from a cursor made by
 * af_ds_cursor_encode for a query of the same shape. Returns false for a
 * cursor that is malformed or belongs to another query. */
bool af_ds_cursor_decode(struct af_ds_run *run, const uint8_t *p, size_t n, bool is_end);

#endif
