/*
 * search_query — the parser of the search service's query language, the
 * subset appfront supports (docs/services.md, "search"):
 *
 *   query   := or
 *   or      := and ( "OR" and )*
 *   and     := unary ( ["AND"] unary )*          adjacent terms are ANDed
 *   unary   := "NOT" unary | primary
 *   primary := "(" or ")" | NAME op value | NAME ":" "(" or ")" | value
 *   op      := ":" | "=" | "<" | "<=" | ">" | ">="
 *   value   := WORD | "quoted phrase"
 *
 * AND, OR and NOT are keywords only in capitals, as in production. A WORD
 * runs to whitespace or one of ( ) " : = < >. A field restriction with a
 * parenthesised group, `title:(red OR blue)`, applies the field to every
 * value inside it. The parser knows nothing of storage: it builds a tree
 * that the service turns into SQL.
 */
#ifndef AF_SEARCH_QUERY_H
#define AF_SEARCH_QUERY_H

#include <stdbool.h>
#include <stddef.h>

/* Production's limit on a query's length (bytes). */
#define AF_SQ_MAX_QUERY 2000
/* Bounds that keep one call's SQL small: nesting depth and terms. */
#define AF_SQ_MAX_DEPTH 20
#define AF_SQ_MAX_TERMS 100

enum af_sq_kind {
    AF_SQ_AND,
    AF_SQ_OR,
    AF_SQ_NOT,  /* left only */
    AF_SQ_TERM, /* a value, perhaps restricted to a field */
};

enum af_sq_op { AF_SQ_EQ, AF_SQ_LT, AF_SQ_LE, AF_SQ_GT, AF_SQ_GE };

struct af_sq_node {
    enum af_sq_kind kind;
    struct af_sq_node *left, *right; /* AND, OR: both; NOT: left */
    /* TERM: */
    char *field;  /* NULL: any field */
    enum af_sq_op op;
    char *value;  /* the word, or the phrase without its quotes */
    bool phrase;  /* value was quoted */
};

/*
 * Parses the n bytes of q. Returns the tree (free with af_sq_free; NULL
 * for a query with no terms at all, which matches every document) and
 * true, or false with a message for a person in err: what is wrong and
 * where (a byte offset).
 */
bool af_sq_parse(const char *q, size_t n, struct af_sq_node **out, char *err, size_t errlen);

void af_sq_free(struct af_sq_node *n);

/* True when s is a field name production accepts: [A-Za-z][A-Za-z0-9_]*,
 * at most 500 bytes. */
bool af_sq_valid_field_name(const char *s, size_t n);

#endif
