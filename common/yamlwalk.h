/*
 * yamlwalk — reading a parsed libyaml document into a loader's own
 * structures: a mapping walked by a table of keys, errors as one line at a
 * node's line and column (common/cfgerr.h), and the parser's own errors.
 * Shared by the loaders of queue.yaml and index.yaml.
 */
#ifndef AF_YAMLWALK_H
#define AF_YAMLWALK_H

#include <stdbool.h>
#include <stddef.h>

#include <yaml.h>

/* How much of a value or key a message quotes. */
#define AF_YW_MAX_QUOTE 60

/* A document being read. */
struct af_yw {
    const char *name; /* the file, as messages name it */
    yaml_document_t *doc;
    bool warn; /* unknown keys are logged as warnings */
    char *err; /* the one-line error of a failure */
    size_t errlen;
};

/* One key of a mapping: its parser gets the value node and the object the
 * walk was given. A NULL parse accepts the key and ignores its value. */
struct af_yw_key {
    const char *name;
    int (*parse)(struct af_yw *c, const yaml_node_t *val, void *obj);
};

/* Writes "NAME:LINE:COLUMN: message" (at's position; none when at is NULL)
 * into c->err and returns -1. */
int af_yw_failf(struct af_yw *c, const yaml_node_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The text of a scalar node; NULL for anything else (or no node). */
const char *af_yw_scalar(const yaml_node_t *n);

/* Runs each key's parser on its value, in the document's order. A key not
 * in keys is a warning (when c->warn) and skipped; a map that is not a
 * mapping, or a key that is not a scalar, is an error naming what. Returns
 * 0, or -1 with c->err set (by the walk or by a parser). */
int af_yw_walk_map(struct af_yw *c, const yaml_node_t *map, const char *what,
                   const struct af_yw_key *keys, size_t n_keys, void *obj);

/* c->err from a failed yaml_parser_load; returns -1. */
int af_yw_parser_error(struct af_yw *c, const yaml_parser_t *p);

/* Parses the first document of text (len bytes) into *doc and points c->doc
 * at it. Returns 0 (the caller deletes *doc), or -1 with c->err set and
 * nothing to delete. */
int af_yw_load(struct af_yw *c, const char *text, size_t len, yaml_document_t *doc);

#endif
