/*
 * fuzz_searchquery — the search service's query parser (af_sq_parse,
 * apiserver/services/search_query.c) under libFuzzer.
 *
 * Invariants: no memory error, leak or undefined behaviour; a parse either
 * succeeds or fails with a message naming the problem; a tree has at most
 * AF_SQ_MAX_TERMS terms, every field restriction a valid field name, and
 * written back as a query (minimal parentheses, phrases quoted) it parses
 * to the same tree.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apiserver/services/search_query.h"
#include "common/log.h"

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_searchquery: invariant violated: %s [%s]\n", what, detail ? detail : "");
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    af_log_set_level(getenv("FUZZ_VERBOSE") ? AF_LOG_DEBUG : AF_LOG_CRITICAL);
    return 0;
}

static int count_terms(const struct af_sq_node *n)
{
    if (n->kind == AF_SQ_TERM) {
        if (n->field && !af_sq_valid_field_name(n->field, strlen(n->field)))
            die("a restriction on an invalid field name", n->field);
        if (!n->value)
            die("a term without a value", NULL);
        return 1;
    }
    return count_terms(n->left) + (n->right ? count_terms(n->right) : 0);
}

/* The tree as a query. */
static void render(const struct af_sq_node *n, FILE *f)
{
    static const char *const ops[] = {":", "<", "<=", ">", ">="};
    switch (n->kind) {
    case AF_SQ_AND:
    case AF_SQ_OR: {
        bool and = n->kind == AF_SQ_AND;
        /* Left-associative chains need no parentheses on the left; OR
         * under AND, and a right child of either kind, need them. */
        bool lp = and && n->left->kind == AF_SQ_OR;
        bool rp = n->right->kind == AF_SQ_AND || n->right->kind == AF_SQ_OR;
        fputs(lp ? "(" : "", f);
        render(n->left, f);
        fputs(lp ? ")" : "", f);
        fputs(and ? " AND " : " OR ", f);
        fputs(rp ? "(" : "", f);
        render(n->right, f);
        fputs(rp ? ")" : "", f);
        break;
    }
    case AF_SQ_NOT: {
        bool p = n->left->kind == AF_SQ_AND || n->left->kind == AF_SQ_OR;
        fputs(p ? "NOT (" : "NOT ", f);
        render(n->left, f);
        fputs(p ? ")" : "", f);
        break;
    }
    case AF_SQ_TERM:
        if (n->field)
            fprintf(f, "%s%s", n->field, ops[n->op]);
        if (n->phrase) {
            fputc('"', f);
            for (const char *c = n->value; *c; c++) {
                if (*c == '"' || *c == '\\')
                    fputc('\\', f);
                fputc(*c, f);
            }
            fputc('"', f);
        } else {
            fputs(n->value, f);
        }
        break;
    }
}

static bool same(const struct af_sq_node *a, const struct af_sq_node *b)
{
    if (!a || !b)
        return a == b;
    if (a->kind != b->kind)
        return false;
    if (a->kind == AF_SQ_TERM)
        return a->op == b->op && a->phrase == b->phrase && strcmp(a->value, b->value) == 0 &&
               ((!a->field && !b->field) ||
                (a->field && b->field && strcmp(a->field, b->field) == 0));
    return same(a->left, b->left) && same(a->right, b->right);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct af_sq_node *tree;
    char err[300];
    err[0] = '\0';
    if (!af_sq_parse((const char *)data, size, &tree, err, sizeof(err))) {
        if (!err[0])
            die("a refused query without a message", NULL);
        return 0;
    }
    if (!tree)
        return 0;
    if (count_terms(tree) > AF_SQ_MAX_TERMS)
        die("more terms than the bound", NULL);
    char *q = NULL;
    size_t qlen = 0;
    FILE *f = open_memstream(&q, &qlen);
    render(tree, f);
    fclose(f);
    struct af_sq_node *again;
    /* Written back it may be longer than the limit (quotes, escapes): only
     * queries that fit are compared. */
    if (qlen <= AF_SQ_MAX_QUERY) {
        if (!af_sq_parse(q, qlen, &again, err, sizeof(err)))
            die("a parsed query written back does not parse", err);
        if (!same(tree, again))
            die("a parsed query written back parses to another tree", q);
        af_sq_free(again);
    }
    free(q);
    af_sq_free(tree);
    return 0;
}
