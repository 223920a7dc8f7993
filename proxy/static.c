/*
 * static — see static.h.
 */
#include "proxy/static.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/xalloc.h"
#include "proxy/appyaml.h"
#include "proxy/exchange.h"
#include "proxy/headers.h"

/* ---- paths ------------------------------------------------------------------ */

int af_static_open(const char *root, const char *rel, struct stat *st, char **resolved)
{
    if (resolved)
        *resolved = NULL;
    while (*rel == '/')
        rel++;
    char *joined = af_xasprintf("%s/%s", root, rel);
    char *real = realpath(joined, NULL);
    free(joined);
    if (!real)
        return -1;
    size_t root_len = strlen(root);
    /* root "/" would make every path "below" it; appyaml gives a real dir. */
    bool inside = strncmp(real, root, root_len) == 0 &&
                  (real[root_len] == '/' || (root_len == 1 && root[0] == '/'));
    int fd = -1;
    if (inside)
        fd = open(real, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd >= 0 && (fstat(fd, st) != 0 || !S_ISREG(st->st_mode))) {
        close(fd);
        fd = -1;
    }
    if (fd >= 0 && resolved)
        *resolved = real;
    else
        free(real);
    return fd;
}

/* ---- content types ---------------------------------------------------------- */

/* By extension, lower case. The common web types, as the IANA registry and
 * browsers name them (RFC 9239 for JavaScript). */
static const struct {
    const char *ext;
    const char *type;
} mime_table[] = {
    {"appcache", "text/cache-manifest"},
    {"atom", "application/atom+xml"},
    {"avif", "image/avif"},
    {"bmp", "image/bmp"},
    {"css", "text/css"},
    {"csv", "text/csv"},
    {"eot", "application/vnd.ms-fontobject"},
    {"gif", "image/gif"},
    {"gz", "application/gzip"},
    {"htm", "text/html"},
    {"html", "text/html"},
    {"ico", "image/x-icon"},
    {"jpeg", "image/jpeg"},
    {"jpg", "image/jpeg"},
    {"js", "text/javascript"},
    {"json", "application/json"},
    {"m4a", "audio/mp4"},
    {"map", "application/json"},
    {"md", "text/markdown"},
    {"mjs", "text/javascript"},
    {"mp3", "audio/mpeg"},
    {"mp4", "video/mp4"},
    {"oga", "audio/ogg"},
    {"ogg", "audio/ogg"},
    {"ogv", "video/ogg"},
    {"otf", "font/otf"},
    {"pdf", "application/pdf"},
    {"png", "image/png"},
    {"rss", "application/rss+xml"},
    {"svg", "image/svg+xml"},
    {"tar", "application/x-tar"},
    {"tif", "image/tiff"},
    {"tiff", "image/tiff"},
    {"ttf", "font/ttf"},
    {"txt", "text/plain"},
    {"wasm", "application/wasm"},
    {"wav", "audio/wav"},
    {"webm", "video/webm"},
    {"webmanifest", "application/manifest+json"},
    {"webp", "image/webp"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"xml", "application/xml"},
    {"yaml", "application/yaml"},
    {"yml", "application/yaml"},
    {"zip", "application/zip"},
};

const char *af_static_mime_type(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *dot = strrchr(base, '.');
    if (dot && dot != base) {
        for (size_t i = 0; i < sizeof(mime_table) / sizeof(mime_table[0]); i++)
            if (strcasecmp(dot + 1, mime_table[i].ext) == 0)
                return mime_table[i].type;
    }
    return "application/octet-stream";
}

/* ---- ranges ----------------------------------------------------------------- */

/* Reads 1*DIGIT into *v; NULL on no digit or overflow. */
static const char *parse_digits(const char *p, int64_t *v)
{
    if (*p < '0' || *p > '9')
        return NULL;
    int64_t n = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (INT64_MAX - 9) / 10)
            return NULL;
        n = n * 10 + (*p - '0');
    }
    *v = n;
    return p;
}

enum af_range af_static_range(const char *value, int64_t size, int64_t *start, int64_t *len)
{
    if (!value || strncasecmp(value, "bytes=", 6) != 0)
        return AF_RANGE_NONE; /* RFC 9110 §14.2: an unknown unit is ignored */
    const char *p = value + 6;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strchr(p, ','))
        return AF_RANGE_NONE; /* several ranges: the whole file, see static.h */
    int64_t first = -1, last = -1, suffix = -1;
    if (*p == '-') {
        p = parse_digits(p + 1, &suffix);
    } else {
        p = parse_digits(p, &first);
        if (p && *p == '-') {
            p++;
            if (*p >= '0' && *p <= '9')
                p = parse_digits(p, &last);
        } else {
            p = NULL;
        }
    }
    if (p) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p)
            p = NULL;
    }
    if (!p)
        return AF_RANGE_NONE; /* §14.1.1: an invalid ranges-specifier is ignored */
    if (suffix >= 0) {
        /* §14.1.3: a suffix range of 0 or of an empty file is unsatisfiable. */
        if (suffix == 0 || size == 0)
            return AF_RANGE_UNSATISFIABLE;
        *start = suffix >= size ? 0 : size - suffix;
        *len = size - *start;
        return AF_RANGE_OK;
    }
    if (last >= 0 && last < first)
        return AF_RANGE_NONE; /* §14.1.1: last-pos below first-pos is invalid */
    if (first >= size)
        return AF_RANGE_UNSATISFIABLE;
    if (last < 0 || last >= size)
        last = size - 1;
    *start = first;
    *len = last - first + 1;
    return AF_RANGE_OK;
}

/* ---- dates and validators --------------------------------------------------- */

void af_http_date_format(time_t t, char *out, size_t outlen)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, outlen, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

int af_http_date_parse(const char *s, time_t *t)
{
    /* RFC 9110 §5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime
     * forms, which a recipient must still accept. strptime is used in the C
     * locale only (the loop never calls setlocale), so names are English. */
    static const char *const formats[] = {
        "%a, %d %b %Y %H:%M:%S GMT",
        "%A, %d-%b-%y %H:%M:%S GMT",
        "%a %b %e %H:%M:%S %Y",
    };
    while (*s == ' ')
        s++;
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        const char *end = strptime(s, formats[i], &tm);
        if (!end)
            continue;
        while (*end == ' ')
            end++;
        if (*end)
            continue;
        *t = timegm(&tm);
        return 0;
    }
    return -1;
}

void af_static_etag(const struct stat *st, char *out, size_t outlen)
{
    snprintf(out, outlen, "\"%" PRIx64 "-%" PRIx64 "-%" PRIx64 ".%lx\"", (uint64_t)st->st_ino,
             (uint64_t)st->st_size, (uint64_t)st->st_mtim.tv_sec, (long)st->st_mtim.tv_nsec);
}

bool af_static_etag_listed(const char *field, const char *etag)
{
    const char *p = field;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '*')
            return true;
        /* §8.8.3.2 weak comparison: the opaque tags match, W/ or not. */
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        if (*p != '"')
            return false; /* not a list of entity tags: no match */
        const char *end = strchr(p + 1, '"');
        if (!end)
            return false;
        size_t n = (size_t)(end - p + 1);
        if (n == strlen(etag) && memcmp(p, etag, n) == 0)
            return true;
        p = end + 1;
    }
    return false;
}

/* ---- the answer --------------------------------------------------------------- */

static void add(struct af_headers *h, const char *name, const char *value)
{
    af_headers_add(h, name, strlen(name), value, strlen(value));
}

void af_static_cache_headers(struct af_headers *h, long long max_age, time_t now)
{
    char buf[64];
    if (max_age < 0) {
        /* Decision: without expiration or default_expiration, every use
         * revalidates (RFC 9111 §5.2.2.4), which costs a 304 and shows
         * an edited file at once. Production would cache for 10 minutes. */
        add(h, "Cache-Control", "no-cache");
        return;
    }
    snprintf(buf, sizeof(buf), "public, max-age=%lld", max_age);
    add(h, "Cache-Control", buf);
    af_http_date_format(now + (time_t)max_age, buf, sizeof(buf));
    add(h, "Expires", buf); /* for HTTP/1.0 caches (RFC 9111 §5.3) */
}

/* The http_headers of the handler replace appfront's fields of the same
 * name (a handler may set its own Cache-Control or Content-Type). */
static void add_extra(struct af_headers *h, const struct af_static_opts *o)
{
    for (size_t i = 0; i < o->n_extra; i++)
        af_headers_drop(h, o->extra[i].name);
    for (size_t i = 0; i < o->n_extra; i++)
        add(h, o->extra[i].name, o->extra[i].value);
}

static const char *req_field(struct af_exchange *ex, const char *name)
{
    struct af_header *f = af_headers_find(&ex->req_headers, name);
    return f && !f->drop ? f->value : NULL;
}

/* If-Range (RFC 9110 §13.1.5): the range applies only if the validator is
 * the current one, compared strongly; a date must equal Last-Modified. */
static bool if_range_holds(const char *field, const char *etag, time_t mtime)
{
    if (!field)
        return true;
    if (field[0] == '"')
        return strcmp(field, etag) == 0;
    if (strncmp(field, "W/", 2) == 0)
        return false;
    time_t t;
    return af_http_date_parse(field, &t) == 0 && t == mtime;
}

void af_static_serve(struct af_exchange *ex, int fd, const struct stat *st, const char *name,
                     const struct af_static_opts *o)
{
    char etag[64], last_modified[64], date[64];
    time_t now = time(NULL);
    af_static_etag(st, etag, sizeof(etag));
    af_http_date_format(st->st_mtim.tv_sec, last_modified, sizeof(last_modified));
    af_http_date_format(now, date, sizeof(date));

    struct af_headers h;
    af_headers_init(&h);
    add(&h, "Date", date); /* RFC 9110 §6.6.1 */
    add(&h, "ETag", etag);
    add(&h, "Last-Modified", last_modified);
    af_static_cache_headers(&h, o->max_age, now);

    /* RFC 9110 §13.2.2: If-None-Match first; If-Modified-Since only
     * without it, and only for GET and HEAD (the only methods here). */
    const char *inm = req_field(ex, "If-None-Match");
    const char *ims = req_field(ex, "If-Modified-Since");
    bool not_modified = false;
    time_t since;
    if (inm)
        not_modified = af_static_etag_listed(inm, etag);
    else if (ims && af_http_date_parse(ims, &since) == 0)
        not_modified = st->st_mtim.tv_sec <= since;
    if (not_modified) {
        /* §15.4.5: the validators and cache fields a 200 would carry. */
        add_extra(&h, o);
        close(fd);
        af_ex_reply(ex, 304, &h, NULL, -1, 0, 0);
        af_headers_release(&h);
        return;
    }

    add(&h, "Accept-Ranges", "bytes");
    int64_t size = st->st_size, start = 0, len = size;
    int status = 200;
    const char *range = ex->method == HTTP_GET ? req_field(ex, "Range") : NULL;
    enum af_range r = AF_RANGE_NONE;
    if (range && if_range_holds(req_field(ex, "If-Range"), etag, st->st_mtim.tv_sec))
        r = af_static_range(range, size, &start, &len);
    char buf[96];
    if (r == AF_RANGE_UNSATISFIABLE) {
        close(fd);
        /* Not the file: none of its validators or cache fields, which
         * would make the 416 itself cacheable (RFC 9111 §3). */
        af_headers_clear(&h);
        add(&h, "Date", date);
        snprintf(buf, sizeof(buf), "bytes */%" PRId64, size); /* §14.4 */
        add(&h, "Content-Range", buf);
        add(&h, "Content-Type", "text/plain; charset=utf-8");
        struct evbuffer *body = evbuffer_new();
        evbuffer_add_printf(body, "The range '%s' is outside the file (%" PRId64 " bytes).\n",
                            range, size);
        af_ex_reply(ex, 416, &h, body, -1, 0, 0);
        af_headers_release(&h);
        return;
    }
    if (r == AF_RANGE_OK) {
        status = 206;
        snprintf(buf, sizeof(buf), "bytes %" PRId64 "-%" PRId64 "/%" PRId64, start,
                 start + len - 1, size);
        add(&h, "Content-Range", buf);
    }
    add(&h, "Content-Type", o->content_type ? o->content_type : af_static_mime_type(name));
    add_extra(&h, o);
    if (len == 0) {
        close(fd);
        af_ex_reply(ex, status, &h, NULL, -1, 0, 0);
    } else {
        af_ex_reply(ex, status, &h, NULL, fd, start, len);
    }
    af_headers_release(&h);
}
