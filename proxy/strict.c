#include "proxy/strict.h"

#include <stdbool.h>
#include <string.h>

#include "common/pct.h"

enum {
    /* head */
    H_START,      /* before the request line; empty lines allowed */
    H_START_LF,
    H_RLINE,      /* the request line */
    H_RLINE_LF,
    H_LINE_START, /* a field line, or the empty line that ends the head */
    H_NAME,
    H_VALUE,
    H_VALUE_LF,
    H_END_LF,
    /* chunked body (RFC 9112 §7.1) */
    C_SIZE_FIRST,
    C_SIZE,
    C_SIZE_WS,
    C_EXT,
    C_SIZE_LF,
    C_DATA,
    C_DATA_CR,
    C_DATA_LF,
    C_TRAILER_START,
    C_TNAME,
    C_TVALUE,
    C_TVALUE_LF,
    C_END_LF,
};

/* The largest chunk size accepted: 2^60, far beyond any body limit, and
 * small enough that the arithmetic can never overflow. */
#define MAX_CHUNK_DIGITS 15

/* tchar of RFC 9110 §5.6.2, the characters of a field name: digits,
 * letters and !#$%&'*+-.^_`|~ (a table: names are scanned byte by byte). */
static const unsigned char tchar_ok[256] = {
    ['0' ... '9'] = 1, ['a' ... 'z'] = 1, ['A' ... 'Z'] = 1, ['!'] = 1, ['#'] = 1, ['$'] = 1,
    ['%'] = 1,         ['&'] = 1,         ['\''] = 1,       ['*'] = 1, ['+'] = 1, ['-'] = 1,
    ['.'] = 1,         ['^'] = 1,         ['_'] = 1,         ['`'] = 1, ['|'] = 1, ['~'] = 1,
};

static bool is_tchar(unsigned char c)
{
    return tchar_ok[c];
}

/* A field value may hold VCHAR, obs-text, SP and HTAB (RFC 9110 §5.5). */
static bool is_value_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* The same as a table, for the fast path over values (GNU C ranges). */
static const unsigned char value_ok[256] = {
    ['\t'] = 1,
    [0x20 ... 0x7e] = 1,
    [0x80 ... 0xff] = 1,
};

void af_strict_head(struct af_strict *s)
{
    s->mode = AF_STRICT_HEAD;
    s->st = H_START;
    s->size = 0;
    s->digits = 0;
    s->decode = false;
}

void af_strict_chunked(struct af_strict *s)
{
    s->mode = AF_STRICT_CHUNKED;
    s->st = C_SIZE_FIRST;
    s->size = 0;
    s->digits = 0;
    s->decode = false;
}

void af_strict_chunked_decode(struct af_strict *s)
{
    af_strict_chunked(s);
    s->decode = true;
}

uint64_t af_strict_data_left(const struct af_strict *s)
{
    return s->mode == AF_STRICT_CHUNKED && s->st == C_DATA ? s->size : 0;
}

void af_strict_data_taken(struct af_strict *s, uint64_t n)
{
    s->size -= n;
    if (s->size == 0)
        s->st = C_DATA_CR;
}

/* Past the value bytes (value_ok) from i, eight at a time while a whole
 * word qualifies: no byte below 0x20 (a tab ends the word too, and is then
 * taken byte by byte) and none 0x7f. */
static size_t skip_value(const char *p, size_t i, size_t n)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (n - i >= 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        uint64_t y = x ^ (ones * 0x7f);
        if (((x - ones * 0x20) & ~x & highs) | ((y - ones) & ~y & highs))
            break;
        i += 8;
    }
    while (i < n && value_ok[(unsigned char)p[i]])
        i++;
    return i;
}

/*
 * The common case of a field line, whole in p[i..n): a name, a colon, a
 * value, CRLF. Returns the offset past it, or i when the line is not all
 * there or not plain (the state machine then takes it byte by byte and
 * says what is wrong).
 */
static size_t whole_field_line(const char *p, size_t i, size_t n)
{
    size_t j = i;
    while (j < n && tchar_ok[(unsigned char)p[j]])
        j++;
    if (j == i || j == n || p[j] != ':')
        return i;
    j = skip_value(p, j + 1, n);
    if (n - j < 2 || p[j] != '\r' || p[j + 1] != '\n')
        return i;
    return j + 2;
}

#define FAIL(msg)                                                                                  \
    do {                                                                                           \
        *why = (msg);                                                                              \
        return -1;                                                                                 \
    } while (0)

ssize_t af_strict_scan(struct af_strict *s, const char *p, size_t n, const char **why)
{
    size_t i = 0;
    while (i < n && s->mode != AF_STRICT_OFF) {
        unsigned char c = (unsigned char)p[i];
        switch (s->st) {
        case H_START:
            if (c == '\n')
                FAIL("a line ends in a bare LF");
            if (c == '\r') {
                s->st = H_START_LF;
                break;
            }
            s->st = H_RLINE;
            continue; /* the request line's first byte: look at it again */
        case H_RLINE:
            /* Fast path: the common bytes of a request line. */
            while (i < n && (unsigned char)p[i] > 0x20 && p[i] != 0x7f)
                i++;
            if (i < n && p[i] == ' ') {
                i++;
                continue;
            }
            if (i == n)
                continue;
            c = (unsigned char)p[i];
            if (c == '\r')
                s->st = H_RLINE_LF;
            else if (c == '\n')
                FAIL("the request line ends in a bare LF");
            else if (c < 0x20 || c == 0x7f)
                FAIL("a control character in the request line");
            break;
        case H_START_LF:
            if (c != '\n')
                FAIL("a bare CR before the request line");
            s->st = H_START;
            break;
        case H_RLINE_LF:
            if (c != '\n')
                FAIL("a bare CR in the request line");
            s->st = H_LINE_START;
            break;
        case H_LINE_START: {
            /* Whole lines at once while they are plain and all there. */
            size_t e;
            while ((e = whole_field_line(p, i, n)) != i)
                i = e;
            if (i == n)
                continue;
            c = (unsigned char)p[i];
            if (c == '\r')
                s->st = H_END_LF;
            else if (c == ' ' || c == '\t')
                FAIL("a field line starts with whitespace (obsolete line folding)");
            else if (is_tchar(c))
                s->st = H_NAME;
            else
                FAIL("an invalid character starts a field name");
            break;
        }
        case H_NAME:
            while (i < n && is_tchar((unsigned char)p[i]))
                i++;
            if (i == n)
                continue;
            c = (unsigned char)p[i];
            if (c == ':')
                s->st = H_VALUE;
            else if (!is_tchar(c))
                FAIL("whitespace or an invalid character in a field name");
            break;
        case H_VALUE:
        case C_TVALUE:
            /* Fast path: printable bytes and tabs, up to the line end. */
            i = skip_value(p, i, n);
            if (i == n)
                continue;
            c = (unsigned char)p[i];
            if (c == '\r')
                s->st = s->st == H_VALUE ? H_VALUE_LF : C_TVALUE_LF;
            else if (!is_value_char(c))
                FAIL(c == '\n' ? "a field line ends in a bare LF"
                               : "a control character (NUL, CR...) in a field value");
            break;
        case H_VALUE_LF:
            if (c != '\n')
                FAIL("a bare CR in a field value");
            s->st = H_LINE_START;
            break;
        case H_END_LF:
            if (c != '\n')
                FAIL("the head ends in a bare CR");
            s->mode = AF_STRICT_OFF;
            break;

        case C_SIZE_FIRST:
        case C_SIZE: {
            int h = af_hex_digit(c);
            if (h >= 0) {
                if (++s->digits > MAX_CHUNK_DIGITS)
                    FAIL("a chunk size is too large");
                s->size = s->size * 16 + (uint64_t)h;
                s->st = C_SIZE;
            } else if (s->st == C_SIZE_FIRST) {
                FAIL("a chunk size is not a hexadecimal number");
            } else if (c == ';') {
                s->st = C_EXT;
            } else if (c == ' ' || c == '\t') {
                s->st = C_SIZE_WS;
            } else if (c == '\r') {
                s->st = C_SIZE_LF;
            } else {
                FAIL("an invalid character after a chunk size");
            }
            break;
        }
        case C_SIZE_WS:
            if (c == ';')
                s->st = C_EXT;
            else if (c == '\r')
                s->st = C_SIZE_LF;
            else if (c != ' ' && c != '\t')
                FAIL("an invalid character after a chunk size");
            break;
        case C_EXT:
            if (c == '\r')
                s->st = C_SIZE_LF;
            else if (!is_value_char(c))
                FAIL(c == '\n' ? "a chunk-size line ends in a bare LF"
                               : "a control character in a chunk extension");
            break;
        case C_SIZE_LF:
            if (c != '\n')
                FAIL("a bare CR in a chunk-size line");
            s->st = s->size == 0 ? C_TRAILER_START : C_DATA;
            s->digits = 0;
            break;
        case C_DATA: {
            if (s->decode)
                return (ssize_t)i; /* the caller takes the data */
            size_t take = n - i;
            if (take > s->size)
                take = (size_t)s->size;
            s->size -= take;
            i += take;
            if (s->size == 0)
                s->st = C_DATA_CR;
            continue; /* i already advanced */
        }
        case C_DATA_CR:
            if (c != '\r')
                FAIL("chunk data is not followed by CRLF");
            s->st = C_DATA_LF;
            break;
        case C_DATA_LF:
            if (c != '\n')
                FAIL("chunk data is not followed by CRLF");
            s->st = C_SIZE_FIRST;
            break;
        case C_TRAILER_START:
            if (c == '\r')
                s->st = C_END_LF;
            else if (is_tchar(c))
                s->st = C_TNAME;
            else
                FAIL("an invalid trailer field line");
            break;
        case C_TNAME:
            if (c == ':')
                s->st = C_TVALUE;
            else if (!is_tchar(c))
                FAIL("whitespace or an invalid character in a trailer field name");
            break;
        case C_TVALUE_LF:
            if (c != '\n')
                FAIL("a bare CR in a trailer field");
            s->st = C_TRAILER_START;
            break;
        case C_END_LF:
            if (c != '\n')
                FAIL("the chunked body ends in a bare CR");
            s->mode = AF_STRICT_OFF;
            break;
        }
        i++;
    }
    return (ssize_t)i;
}

ssize_t af_strict_admit(struct af_strict *s, size_t *checked, const char *p, size_t len,
                        const char **why)
{
    if (s->mode == AF_STRICT_OFF)
        return (ssize_t)len;
    if (*checked < len) {
        ssize_t r = af_strict_scan(s, p + *checked, len - *checked, why);
        if (r < 0)
            return -1;
        *checked += (size_t)r;
    }
    if (s->mode != AF_STRICT_OFF && len > *checked)
        len = *checked;
    return (ssize_t)len;
}
