/*
 * static — static files of app.yaml's static_dir and static_files handlers:
 * safe path resolution, content types, validators and conditional requests,
 * byte ranges, and the answer itself, sent with sendfile(2) through
 * af_ex_reply().
 */
#ifndef AF_STATIC_H
#define AF_STATIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

struct af_exchange;
struct af_headers;
struct af_header_kv;

/*
 * Opens `rel` (relative to the app directory `root`, which must be an
 * absolute path without symlinks, as realpath gives it) for serving.
 *
 * Decision: realpath + prefix check. The whole path, symlinks included, is
 * resolved with realpath(3); the result must be `root` itself or lie below
 * it ("root/"), so a symlink inside the app that leads out of it, or any
 * ".." left in `rel`, never reaches a file outside. The resolved path is
 * then opened with O_NOFOLLOW | O_NONBLOCK (a FIFO never blocks the loop)
 * and must be a regular file. A symlink swapped between the two steps
 * could still redirect the open; whoever can do that can write the app
 * directory, and so already decides what the app serves.
 *
 * Returns an fd (caller closes) with *st filled in, and the resolved path
 * in *resolved (caller frees; may be NULL), or -1 when the file is missing,
 * not a regular file, or outside root: all of them a 404.
 */
int af_static_open(const char *root, const char *rel, struct stat *st, char **resolved);

/* The content type for a file name by its extension (a table), or
 * application/octet-stream. Never NULL; a static string. */
const char *af_static_mime_type(const char *path);

enum af_range {
    AF_RANGE_NONE,           /* absent, malformed, several ranges: send it all (200) */
    AF_RANGE_OK,             /* one satisfiable range: 206 */
    AF_RANGE_UNSATISFIABLE,  /* 416 */
};

/*
 * Parses a Range field value (RFC 9110 §14.2) against a representation of
 * `size` bytes. AF_RANGE_OK sets *start and *len (clipped to the file).
 * Several ranges are answered with the whole file (RFC 9110 §14.2 lets a
 * server ignore Range), which spares multipart/byteranges.
 */
enum af_range af_static_range(const char *value, int64_t size, int64_t *start, int64_t *len);

/* An IMF-fixdate (RFC 9110 §5.6.7) of t into out (at least 30 bytes). */
void af_http_date_format(time_t t, char *out, size_t outlen);
/* Parses any of the three HTTP-date forms of RFC 9110 §5.6.7. Returns 0 or -1. */
int af_http_date_parse(const char *s, time_t *t);

/* The strong entity tag of a file, quoted, from its inode, size and
 * modification time in nanoseconds (out at least 64 bytes). */
void af_static_etag(const struct stat *st, char *out, size_t outlen);

/* If-None-Match (RFC 9110 §13.1.2): true if `field` is "*" or lists a tag
 * that matches `etag` by weak comparison. */
bool af_static_etag_listed(const char *field, const char *etag);

/* How a static handler answers, beyond the file. */
struct af_static_opts {
    const char *content_type;         /* NULL: by extension */
    long long max_age;                /* seconds; < 0: none given */
    const struct af_header_kv *extra; /* http_headers (already checked) */
    size_t n_extra;
};

/*
 * Answers ex with the open file fd (taken: closed or handed to
 * af_ex_reply) described by st: 200, 206, 304 or 416, with Date,
 * Last-Modified, ETag, Accept-Ranges, Cache-Control/Expires and the
 * handler's http_headers. `name` gives the extension for the content type.
 */
void af_static_serve(struct af_exchange *ex, int fd, const struct stat *st, const char *name,
                     const struct af_static_opts *o);

/* The Cache-Control and Expires fields for max_age (< 0: none given) at
 * time now, added to h. */
void af_static_cache_headers(struct af_headers *h, long long max_age, time_t now);

#endif
