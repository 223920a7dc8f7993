/*
 * datastore_index — which composite index a query needs, by App Engine's
 * rules, and whether an index definition serves it (docs/datastore.md,
 * "Indexes").
 *
 * appfront answers every query from its own property index, so no index is
 * ever needed to *run* a query. What this module computes is what
 * production would need: the datastore writes it into index.yaml, or, with
 * --require_indexes, refuses a query that index.yaml does not cover, so an
 * app that works under appfront also works once deployed.
 *
 * A need is made of four groups of properties, in the order an index lists
 * them:
 *   prefix   the properties of equality filters: any order, any direction;
 *   ordered  the sort orders, then the inequality property when no order
 *            names it: this order, these directions (the implicit
 *            inequality entry takes either direction);
 *   group    projected properties that are also distinct (group_by) ones
 *            and appear nowhere above: any order, any direction;
 *   exists   the other projected properties not above: likewise.
 *
 * Pure functions: no I/O, no global state, any thread.
 */
#ifndef AF_DATASTORE_INDEX_H
#define AF_DATASTORE_INDEX_H

#include <stdbool.h>
#include <stddef.h>

#include "datastore_v3.pb-c.h"

/* One property of an index definition (index.yaml or a suggestion). */
struct af_ds_index_prop {
    char *name; /* owned */
    bool desc;  /* direction: desc */
};

/* An index definition, as index.yaml writes one. */
struct af_ds_index {
    char *kind; /* owned */
    bool ancestor;
    struct af_ds_index_prop *props; /* owned, n_props of them */
    size_t n_props;
    int line; /* where index.yaml defines it (1-based); 0 for a suggestion */
};

/* The direction an ordered entry of a need asks for. */
enum af_ds_need_dir {
    AF_DS_NEED_ASC,
    AF_DS_NEED_DESC,
    AF_DS_NEED_ANY, /* the implicit entry of an inequality filter */
};

struct af_ds_need_order {
    const char *name; /* borrowed from the query */
    enum af_ds_need_dir dir;
};

/*
 * The composite index a query needs. Names are borrowed from the query
 * message it was computed from: it must outlive the need. Each set
 * (prefix, group, exists) holds distinct names, sorted bytewise.
 */
struct af_ds_index_need {
    const char *kind;
    bool ancestor;
    const char **prefix;
    size_t n_prefix;
    struct af_ds_need_order *ordered;
    size_t n_ordered;
    const char **group;
    size_t n_group;
    const char **exists;
    size_t n_exists;
};

/*
 * Computes the composite index q needs. Returns true and fills *need
 * (release with af_ds_index_need_release) when production would need one;
 * false when a built-in index serves q (then *need is zeroed and holds
 * nothing). q is a query that af_ds_plan_compile accepted: one property per
 * filter, no IN or EXISTS operators.
 */
bool af_ds_index_for_query(const Af__Datastore__Query *q, struct af_ds_index_need *need);

/* Frees what a need holds (not the names, which are the query's). */
void af_ds_index_need_release(struct af_ds_index_need *need);

/*
 * True when the index def serves the need: same kind and ancestor flag,
 * and its properties are exactly the prefix (in any order), then the
 * ordered entries (in order, matching directions), then the group and
 * the exists properties (each set in any order).
 */
bool af_ds_index_serves(const struct af_ds_index *def, const struct af_ds_index_need *need);

/*
 * True when one of the n definitions serves the need, or several do
 * together as production merges them: definitions of the query's kind
 * that end with the need's postfix and lead with equality properties of
 * the query only, with one postfix between them, serve the query when
 * their leading properties cover its equality properties and, for an
 * ancestor query, one of them has the ancestor (an ancestor index never
 * serves a query without one).
 */
bool af_ds_index_any_serves(const struct af_ds_index *defs, size_t n,
                            const struct af_ds_index_need *need);

/*
 * The index to suggest for a need, as dev_appserver writes it: the prefix,
 * the ordered entries (the implicit one ascending), the group, then the
 * exists properties. Fills *out (release with af_ds_index_release); it
 * owns copies of the names.
 */
void af_ds_index_suggest(const struct af_ds_index_need *need, struct af_ds_index *out);

/* A deep copy of src into *dst. */
void af_ds_index_copy(struct af_ds_index *dst, const struct af_ds_index *src);

/* Frees what ix owns and zeroes it. */
void af_ds_index_release(struct af_ds_index *ix);

/* True when a and b define the same index (line aside). */
bool af_ds_index_equal(const struct af_ds_index *a, const struct af_ds_index *b);

/*
 * The YAML of one index as an item of index.yaml's `indexes:` list, every
 * line ending in '\n':
 *   - kind: Foo
 *     ancestor: yes        (only when set)
 *     properties:          (only when there are some)
 *     - name: a
 *     - name: b
 *       direction: desc    (only for descending properties)
 * A kind or name that is not a plain word is double-quoted, so the text
 * always parses back to the same index. Returns a malloc'd string.
 */
char *af_ds_index_yaml(const struct af_ds_index *ix);

#endif
