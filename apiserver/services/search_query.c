/*
 * search_query — a recursive-descent parser over a hand-written lexer (see
 * search_query.h for the grammar). Depth and term count are bounded so a
 * hostile query costs little to parse and gives bounded SQL.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apiserver/services/search_query.h"
#include "common/xalloc.h"

enum tok_kind {
    TK_END,
    TK_LPAREN,
    TK_RPAREN,
    TK_OP, /* : = < <= > >= */
    TK_WORD,
    TK_PHRASE,
    TK_AND,
    TK_OR,
    TK_NOT,
};

struct tok {
    enum tok_kind kind;
    enum af_sq_op op; /* TK_OP */
    size_t pos, len;  /* of the token in the query */
    char *text;       /* TK_WORD, TK_PHRASE: malloc'd */
};

struct parser {
    const char *q;
    size_t n, pos;
    struct tok cur;
    bool have_cur;
    int depth, terms;
    char *err;
    size_t errlen;
    bool failed;
};

static void fail(struct parser *p, size_t at, const char *fmt, const char *arg)
{
    if (p->failed)
        return;
    p->failed = true;
    char what[200];
    snprintf(what, sizeof(what), fmt, arg);
    snprintf(p->err, p->errlen, "invalid query at offset %zu: %s", at, what);
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_word_char(char c)
{
    return !is_space(c) && c != '(' && c != ')' && c != '"' && c != ':' && c != '=' &&
           c != '<' && c != '>';
}

/* Reads the next token into p->cur. */
static void lex(struct parser *p)
{
    struct tok *t = &p->cur;
    free(t->text);
    memset(t, 0, sizeof(*t));
    while (p->pos < p->n && is_space(p->q[p->pos]))
        p->pos++;
    t->pos = p->pos;
    if (p->pos >= p->n) {
        t->kind = TK_END;
        return;
    }
    char c = p->q[p->pos];
    if (c == '(' || c == ')') {
        t->kind = c == '(' ? TK_LPAREN : TK_RPAREN;
        p->pos++;
    } else if (c == ':' || c == '=') {
        t->kind = TK_OP;
        t->op = AF_SQ_EQ;
        p->pos++;
    } else if (c == '<' || c == '>') {
        t->kind = TK_OP;
        p->pos++;
        bool eq = p->pos < p->n && p->q[p->pos] == '=';
        if (eq)
            p->pos++;
        t->op = c == '<' ? (eq ? AF_SQ_LE : AF_SQ_LT) : (eq ? AF_SQ_GE : AF_SQ_GT);
    } else if (c == '"') {
        /* A phrase runs to the next quote; \" and \\ escape. */
        size_t i = p->pos + 1;
        char *buf = af_xmalloc(p->n - p->pos + 1);
        size_t len = 0;
        while (i < p->n && p->q[i] != '"') {
            if (p->q[i] == '\\' && i + 1 < p->n && (p->q[i + 1] == '"' || p->q[i + 1] == '\\'))
                i++;
            buf[len++] = p->q[i++];
        }
        if (i >= p->n) {
            free(buf);
            fail(p, p->pos, "%s", "a quoted phrase has no closing quote");
            t->kind = TK_END;
            p->pos = p->n;
            return;
        }
        buf[len] = '\0';
        t->kind = TK_PHRASE;
        t->text = buf;
        p->pos = i + 1;
    } else {
        size_t s = p->pos;
        while (p->pos < p->n && is_word_char(p->q[p->pos]))
            p->pos++;
        size_t len = p->pos - s;
        if (len == 3 && memcmp(p->q + s, "AND", 3) == 0)
            t->kind = TK_AND;
        else if (len == 2 && memcmp(p->q + s, "OR", 2) == 0)
            t->kind = TK_OR;
        else if (len == 3 && memcmp(p->q + s, "NOT", 3) == 0)
            t->kind = TK_NOT;
        else {
            t->kind = TK_WORD;
            t->text = af_xstrndup(p->q + s, len);
        }
    }
    t->len = p->pos - t->pos;
}

static struct af_sq_node *node_new(enum af_sq_kind kind)
{
    struct af_sq_node *n = af_xcalloc(1, sizeof(*n));
    n->kind = kind;
    return n;
}

static struct af_sq_node *binary(enum af_sq_kind kind, struct af_sq_node *l, struct af_sq_node *r)
{
    struct af_sq_node *n = node_new(kind);
    n->left = l;
    n->right = r;
    return n;
}

static struct af_sq_node *parse_or(struct parser *p, const char *field);

/* A value (word or phrase) as a term; takes the token's text. */
static struct af_sq_node *term(struct parser *p, const char *field, enum af_sq_op op)
{
    if (++p->terms > AF_SQ_MAX_TERMS) {
        fail(p, p->cur.pos, "%s", "more than " "100" " terms");
        return NULL;
    }
    struct af_sq_node *n = node_new(AF_SQ_TERM);
    n->field = field ? af_xstrdup(field) : NULL;
    n->op = op;
    n->phrase = p->cur.kind == TK_PHRASE;
    n->value = p->cur.text;
    p->cur.text = NULL;
    lex(p);
    return n;
}

static struct af_sq_node *parse_group(struct parser *p, const char *field)
{
    size_t open = p->cur.pos;
    if (++p->depth > AF_SQ_MAX_DEPTH) {
        fail(p, open, "%s", "parentheses nest more than 20 deep");
        return NULL;
    }
    lex(p); /* ( */
    if (p->cur.kind == TK_RPAREN) {
        fail(p, open, "%s", "empty parentheses");
        return NULL;
    }
    struct af_sq_node *n = parse_or(p, field);
    if (!p->failed && p->cur.kind != TK_RPAREN)
        fail(p, open, "%s", "'(' has no matching ')'");
    if (p->failed) {
        af_sq_free(n);
        return NULL;
    }
    lex(p); /* ) */
    p->depth--;
    return n;
}

static struct af_sq_node *parse_primary(struct parser *p, const char *field)
{
    switch (p->cur.kind) {
    case TK_LPAREN:
        return parse_group(p, field);
    case TK_PHRASE:
        return term(p, field, AF_SQ_EQ);
    case TK_WORD: {
        /* NAME op ...: a field restriction, if an operator follows. */
        size_t save = p->pos;
        struct tok word = p->cur;
        p->cur.text = NULL;
        lex(p);
        if (p->cur.kind != TK_OP) {
            /* Not a restriction: put the word back. */
            free(p->cur.text);
            p->cur = word;
            p->pos = save;
            return term(p, field, AF_SQ_EQ);
        }
        if (field) {
            fail(p, word.pos, "field restriction '%s' inside another field's restriction",
                 word.text);
            free(word.text);
            return NULL;
        }
        if (!af_sq_valid_field_name(word.text, strlen(word.text))) {
            fail(p, word.pos, "'%s' is not a field name ([A-Za-z][A-Za-z0-9_]*)", word.text);
            free(word.text);
            return NULL;
        }
        enum af_sq_op op = p->cur.op;
        size_t op_pos = p->cur.pos;
        lex(p);
        struct af_sq_node *n = NULL;
        if (p->cur.kind == TK_LPAREN && op == AF_SQ_EQ)
            n = parse_group(p, word.text);
        else if (p->cur.kind == TK_WORD || p->cur.kind == TK_PHRASE)
            n = term(p, word.text, op);
        else
            fail(p, op_pos, "field '%s' is followed by an operator but no value", word.text);
        free(word.text);
        return n;
    }
    case TK_OP:
        fail(p, p->cur.pos, "%s", "an operator (: = < <= > >=) needs a field name before it");
        return NULL;
    case TK_RPAREN:
        fail(p, p->cur.pos, "%s", "')' without a matching '('");
        return NULL;
    case TK_AND:
    case TK_OR:
    case TK_NOT:
        fail(p, p->cur.pos, "%s", "AND, OR and NOT need a term on each side");
        return NULL;
    case TK_END:
        break;
    }
    fail(p, p->cur.pos, "%s", "the query ends where a term was expected");
    return NULL;
}

static struct af_sq_node *parse_unary(struct parser *p, const char *field)
{
    if (p->cur.kind != TK_NOT)
        return parse_primary(p, field);
    if (++p->depth > AF_SQ_MAX_DEPTH) {
        fail(p, p->cur.pos, "%s", "NOT nests more than 20 deep");
        return NULL;
    }
    lex(p);
    struct af_sq_node *inner = parse_unary(p, field);
    p->depth--;
    if (!inner)
        return NULL;
    struct af_sq_node *n = node_new(AF_SQ_NOT);
    n->left = inner;
    return n;
}

static bool starts_term(enum tok_kind k)
{
    return k == TK_LPAREN || k == TK_WORD || k == TK_PHRASE || k == TK_NOT;
}

static struct af_sq_node *parse_and(struct parser *p, const char *field)
{
    struct af_sq_node *n = parse_unary(p, field);
    while (n && !p->failed) {
        if (p->cur.kind == TK_AND)
            lex(p);
        else if (!starts_term(p->cur.kind))
            break;
        struct af_sq_node *r = parse_unary(p, field);
        if (!r) {
            af_sq_free(n);
            return NULL;
        }
        n = binary(AF_SQ_AND, n, r);
    }
    return n;
}

static struct af_sq_node *parse_or(struct parser *p, const char *field)
{
    struct af_sq_node *n = parse_and(p, field);
    while (n && !p->failed && p->cur.kind == TK_OR) {
        lex(p);
        struct af_sq_node *r = parse_and(p, field);
        if (!r) {
            af_sq_free(n);
            return NULL;
        }
        n = binary(AF_SQ_OR, n, r);
    }
    return n;
}

bool af_sq_parse(const char *q, size_t n, struct af_sq_node **out, char *err, size_t errlen)
{
    *out = NULL;
    if (n > AF_SQ_MAX_QUERY) {
        snprintf(err, errlen, "the query is %zu bytes long; the limit is %d", n, AF_SQ_MAX_QUERY);
        return false;
    }
    if (memchr(q, '\0', n)) {
        snprintf(err, errlen, "the query contains a NUL byte");
        return false;
    }
    struct parser p = {.q = q, .n = n, .err = err, .errlen = errlen};
    lex(&p);
    struct af_sq_node *tree = NULL;
    if (p.cur.kind != TK_END && !p.failed) {
        tree = parse_or(&p, NULL);
        if (!p.failed && p.cur.kind != TK_END) {
            if (p.cur.kind == TK_RPAREN)
                fail(&p, p.cur.pos, "%s", "')' without a matching '('");
            else
                fail(&p, p.cur.pos, "%s", "AND, OR and NOT need a term on each side");
        }
    }
    free(p.cur.text);
    if (p.failed) {
        af_sq_free(tree);
        return false;
    }
    *out = tree;
    return true;
}

void af_sq_free(struct af_sq_node *n)
{
    if (!n)
        return;
    af_sq_free(n->left);
    af_sq_free(n->right);
    free(n->field);
    free(n->value);
    free(n);
}

bool af_sq_valid_field_name(const char *s, size_t n)
{
    if (n == 0 || n > 500)
        return false;
    if (!((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z')))
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return false;
    }
    return true;
}
