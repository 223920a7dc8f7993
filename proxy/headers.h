/*
 * headers — an ordered list of HTTP header fields and the forwarding policy
 * of shared/DESIGN.md ("Forwarded requests").
 *
 * A list owns copies of every name and value. Names keep the client's
 * spelling; comparisons are case-insensitive (RFC 9110 §5.1).
 */
#ifndef AF_HEADERS_H
#define AF_HEADERS_H

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;

/* The fields the front end acts on, recognized once when a field is added
 * so that the policy compares small integers, not strings. */
enum af_header_id {
    AF_H_OTHER,
    AF_H_CONNECTION,
    AF_H_KEEP_ALIVE,
    AF_H_PROXY_CONNECTION,
    AF_H_TE,
    AF_H_TRAILER,
    AF_H_TRANSFER_ENCODING,
    AF_H_UPGRADE,
    AF_H_PROXY_AUTHENTICATE,
    AF_H_PROXY_AUTHORIZATION,
    AF_H_CONTENT_LENGTH,
    AF_H_HOST,
    AF_H_EXPECT,
    AF_H_COOKIE,
    AF_H_X_FORWARDED_FOR,
    AF_H_X_FORWARDED_PROTO,
    AF_H_X_APPENGINE, /* any X-AppEngine-* field */
    AF_H_X_APPFRONT,  /* any X-Appfront-* field: appfront's own requests' marks */
};

struct af_header {
    char *name;  /* in the list's string storage: the name, then the value */
    char *value;
    size_t name_len;
    size_t value_len;
    unsigned char id; /* enum af_header_id */
    bool drop;        /* marked for removal by the policy; skipped when written */
};

struct af_headers_extra;

struct af_headers {
    struct af_header *v;
    size_t n;
    size_t cap;
    /* Field strings live in one block kept across af_headers_clear(), so a
     * reused list allocates nothing for a typical head; what does not fit
     * gets an allocation of its own, freed by the next clear (which then
     * grows the block to fit). */
    char *block;
    size_t block_used;
    size_t block_size;
    struct af_headers_extra *extra;
    size_t overflow; /* bytes in extra: the next clear grows the block */
    /* X-Appfront-* fields added: the checks for appfront's own requests
     * (taskrunner.h, background.h) look at no field while it is 0. */
    size_t n_appfront;
    /* A field named X-AppEngine-BlobKey was added (and not cleared since):
     * an app's response asks for a blob to be served (proxy/blob.h). */
    bool blob_key;
};

void af_headers_init(struct af_headers *h);
/* Forgets every field; the list is empty and reusable afterwards (its
 * array and first block are kept). */
void af_headers_clear(struct af_headers *h);
/* Frees everything, including the array. */
void af_headers_release(struct af_headers *h);

/* Appends a copy of name and value. */
void af_headers_add(struct af_headers *h, const char *name, size_t name_len, const char *value,
                    size_t value_len);
/* The first field with this id (not AF_H_OTHER) that is not dropped. */
struct af_header *af_headers_find_id(const struct af_headers *h, enum af_header_id id);
/* Counts the fields with this id that are not dropped. */
size_t af_headers_count_id(const struct af_headers *h, enum af_header_id id);
/* The first field named `name`, or NULL. */
struct af_header *af_headers_find(const struct af_headers *h, const char *name);
/* Counts the fields named `name` that are not dropped. */
size_t af_headers_count(const struct af_headers *h, const char *name);

/*
 * Marks hop-by-hop fields as dropped: the fixed set of RFC 9110 §7.6.1
 * (Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding,
 * Upgrade, Proxy-Authenticate, Proxy-Authorization) plus every field named in
 * a Connection header, and Content-Length (the proxy writes its own framing).
 */
void af_headers_drop_hop_by_hop(struct af_headers *h);
/* Marks every X-AppEngine-* field as dropped (clients may not spoof them). */
void af_headers_drop_appengine(struct af_headers *h);
/* Marks every field named `name` as dropped. */
void af_headers_drop(struct af_headers *h, const char *name);

/* Writes "Name: value\r\n" for every field not dropped. */
void af_headers_write(const struct af_headers *h, struct evbuffer *out);
/* The bytes af_headers_write() would write. */
size_t af_headers_wire_size(const struct af_headers *h);
/* Copies the wire form to p (af_headers_wire_size() bytes); returns the end. */
char *af_headers_copy(const struct af_headers *h, char *p);

/* True if the comma-separated list `value` holds `token` (case-insensitive). */
bool af_header_has_token(const char *value, const char *token);

/* True if the value may be written on the wire: no CR, LF or NUL. */
bool af_header_value_is_safe(const char *value, size_t len);

#endif
