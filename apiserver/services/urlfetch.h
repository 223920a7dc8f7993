/*
 * urlfetch — what the parts of the "urlfetch" service share (prefix uf_):
 *
 *   urlfetch.c       the service: decodes and checks a Fetch on the backend
 *                    thread, then defers it to the API I/O thread
 *   urlfetch_wire.c  URLFetchRequest / URLFetchResponse by hand (they use
 *                    proto2 groups, see proto/urlfetch_service.proto)
 *   urlfetch_url.c   absolute http(s) URLs: parsing, redirect targets
 *   urlfetch_http.c  the HTTP/1.1 client that runs on the I/O thread
 *   urlfetch_gzip.c  the streaming gzip decoder for Content-Encoding: gzip
 *   urlfetch_proxy.c the outbound proxy from the environment (http_proxy, ...)
 *   urlfetch_pool.c  idle connections kept for the next fetch (I/O thread)
 *
 * Internal to apiserver/services/.
 */
#ifndef AF_URLFETCH_H
#define AF_URLFETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "urlfetch_service.pb-c.h"

#include "apiserver/service.h"

#define UFERR(name) AF__URLFETCH__URLFETCH_SERVICE_ERROR__ERROR_CODE__##name

/* URLFetchRequest.RequestMethod. */
enum uf_method {
    UF_GET = 1,
    UF_POST = 2,
    UF_HEAD = 3,
    UF_PUT = 4,
    UF_DELETE = 5,
    UF_PATCH = 6,
};

/* App Engine's limits (the production service's and the stock development
 * server's): a request body up to 10 MiB, a response body up to 32 MiB
 * (more is cut and flagged), URLs up to 2048 bytes, five redirects, a
 * deadline of 5 s unless the call says, at most 60 s. */
#define UF_MAX_PAYLOAD (10u << 20)
#define UF_MAX_CONTENT (32u << 20)
#define UF_MAX_URL 2048
#define UF_MAX_REDIRECTS 5
#define UF_DEFAULT_DEADLINE_S 5.0
#define UF_MAX_DEADLINE_S 60.0
/* Ours: request headers at most this many, and this many bytes in all. */
#define UF_MAX_HEADERS 256
#define UF_MAX_HEADER_BYTES (64u << 10)

/* One header field; both strings owned, NUL-free. */
struct uf_header {
    char *key;
    char *value;
};

/* A decoded URLFetchRequest. Everything owned. */
struct uf_request {
    int method; /* enum uf_method, or whatever number was sent */
    char *url;  /* NUL-free */
    struct uf_header *headers;
    size_t n_headers;
    uint8_t *payload; /* NULL when absent */
    size_t payload_len;
    bool follow_redirects; /* default true */
    bool has_deadline;
    double deadline_s;
    bool validate_certificate; /* MustValidateServerCertificate, default true */
};

/* A URLFetchResponse to encode. Borrowed pointers. */
struct uf_response {
    int status;
    const struct uf_header *headers;
    size_t n_headers;
    const uint8_t *content;
    size_t content_len;
    bool truncated;
    int64_t bytes_sent, bytes_received;
    const char *final_url; /* NULL: not sent */
};

/* ---- urlfetch_wire.c ---- */

/* Decodes buf into *out (zeroed first). Returns 0, or -1 with a message in
 * err (buf is not a URLFetchRequest: bad wire format, a required field
 * missing, a NUL inside a string); *out is then released. */
int uf_request_decode(const uint8_t *buf, size_t len, struct uf_request *out, char *err,
                      size_t errlen);
void uf_request_release(struct uf_request *r);

/* Encodes r into a malloc'd buffer (*out, owned by the caller) and returns
 * its length. When the whole would not fit in max bytes, the content is cut
 * so that it does and the truncated flag is set. */
size_t uf_response_encode(const struct uf_response *r, size_t max, uint8_t **out);
/* How many bytes of r's content uf_response_encode(r, max) keeps. */
size_t uf_response_content_fit(const struct uf_response *r, size_t max);

/* ---- urlfetch_url.c ---- */

struct uf_url {
    bool https;
    char *host;      /* as written, without [] for IPv6; owned */
    int port;        /* explicit or the scheme's */
    char *authority; /* the Host header value: host[:port] as written; owned */
    char *target;    /* path and query, at least "/"; fragment dropped; owned */
};

/* Parses an absolute http or https URL. Returns 0, or -1 with a message
 * naming what is wrong in err (the INVALID_URL detail). */
int uf_url_parse(const char *s, struct uf_url *u, char *err, size_t errlen);
void uf_url_release(struct uf_url *u);
/* The URL in canonical form (scheme://authority/target), malloc'd. */
char *uf_url_string(const struct uf_url *u);
/* Resolves a Location value against base (RFC 3986 section 5.2, without
 * dot-segment removal), returning a malloc'd absolute URL, or NULL when
 * location is empty or has control bytes. */
char *uf_url_resolve(const struct uf_url *base, const char *location);

/* ---- urlfetch_gzip.c ---- */

/* A streaming gzip decoder (RFC 1952, one member or several). */
struct uf_gunzip;

enum uf_gunzip_status {
    UF_GUNZIP_MORE, /* all the input was taken: feed more, or end */
    UF_GUNZIP_FULL, /* the content would exceed max: it stops at max bytes */
    UF_GUNZIP_BAD,  /* not gzip, damaged or a checksum mismatch: see uf_gunzip_error */
};

/* A new decoder, owned by the caller (uf_gunzip_free; NULL is fine). */
struct uf_gunzip *uf_gunzip_new(void);
void uf_gunzip_free(struct uf_gunzip *g);
/* Decodes n compressed bytes (borrowed) and appends the content to *buf,
 * which holds *len bytes in *cap; the buffer (owned by the caller, freed
 * with free()) is grown with af_xrealloc but never beyond max bytes. Once
 * FULL or BAD, every later call says the same. */
enum uf_gunzip_status uf_gunzip_feed(struct uf_gunzip *g, const void *in, size_t n, uint8_t **buf,
                                     size_t *len, size_t *cap, size_t max);
/* The compressed content ended: 0 when it ended between members (or was
 * empty), -1 when it was cut short or had failed. */
int uf_gunzip_end(struct uf_gunzip *g);
/* What was wrong, for a message (owned by g), or NULL. */
const char *uf_gunzip_error(const struct uf_gunzip *g);

/* ---- urlfetch_proxy.c ---- */

/* One proxy of the environment; its strings belong to its configuration. */
struct uf_proxy {
    const char *var; /* the variable it came from: "http_proxy", "HTTPS_PROXY", ... */
    char *host;      /* without []; NULL when the variable is unusable */
    int port;
    char *authority; /* host:port, for CONNECT's messages */
    char *auth;      /* a Proxy-Authorization value, or NULL */
    char *error;     /* why the variable cannot be used, or NULL */
};

/* The proxies of the environment: immutable, shared by reference. */
struct uf_proxy_config;

/* Reads http_proxy, https_proxy and no_proxy (each also in upper case)
 * through get (getenv, or a test's), warning about unusable values. Returns
 * a configuration with one reference for the caller, or NULL when neither
 * proxy variable is set: every fetch goes direct. */
struct uf_proxy_config *uf_proxy_config_new(char *(*get)(const char *));
/* Another reference to c (NULL passes); thread-safe. */
struct uf_proxy_config *uf_proxy_config_ref(struct uf_proxy_config *c);
/* Drops a reference; the last one frees. Thread-safe; NULL is fine. */
void uf_proxy_config_unref(struct uf_proxy_config *c);
/* The proxy through which to fetch u (borrowed from c; when its error is
 * set, the fetch must fail with it), or NULL to connect directly. */
const struct uf_proxy *uf_proxy_for(const struct uf_proxy_config *c, const struct uf_url *u);
/* Whether host (as in a URL, without []) is this machine's loopback. */
bool uf_proxy_is_loopback(const char *host);

/* ---- urlfetch_pool.c ---- */

/* Idle connections: per key, in all, and for how long (seconds). */
#define UF_POOL_PER_KEY 4
#define UF_POOL_MAX 32
#define UF_POOL_IDLE_S 4
/* Room for "[ipv6]:port", as in messages. */
#define UF_ADDR_LEN 56

/* What a connection can serve, as a malloc'd string: scheme, host (lower
 * case) and port, the proxy (NULL: direct) and, for https, whether the
 * certificate is checked. Fetches with equal keys may share connections. */
char *uf_pool_key(const struct uf_url *u, const struct uf_proxy *proxy, bool validate);

/* What is known of a connection when its response ended. */
struct uf_reuse {
    int http_major, http_minor; /* the response's version */
    int status;
    const struct uf_header *headers; /* the response's fields (borrowed) */
    size_t n_headers;
    bool framed;   /* the message ended by its framing (Content-Length, chunked,
                      no body), not by the end of the connection */
    bool cut;      /* reading stopped before the end (content over the limit) */
    bool leftover; /* bytes arrived after the message */
    bool unsent;   /* part of the request was still unwritten */
};

/* Whether the connection may carry another request (RFC 9112 section 9.3). */
bool uf_pool_reusable(const struct uf_reuse *r);

/* The idle connections of the I/O thread: af_io_local(call, &uf_pool_local). */
struct uf_pool;
extern const struct af_io_local_ops uf_pool_local;

struct bufferevent;
/* Parks bev under key (taken: the pool closes it when it must); fd is its
 * socket, addr the address for messages (borrowed). */
void uf_pool_put(struct uf_pool *p, const char *key, struct bufferevent *bev, int fd,
                 const char *addr);
/* An idle connection for key, with its callbacks, timeouts and reading
 * cleared (owned by the caller), its socket in *fd and its address in addr;
 * or NULL. Connections found closed on the way are dropped. */
struct bufferevent *uf_pool_take(struct uf_pool *p, const char *key, int *fd, char *addr,
                                 size_t addrlen);

/* ---- urlfetch_http.c ---- */

/* One fetch: built on the backend thread, run on the I/O thread. */
struct uf_fetch;

/* What a fetch needs, checked by urlfetch.c. */
struct uf_fetch_spec {
    struct uf_request req;      /* taken */
    struct uf_url url;          /* taken: req.url parsed */
    double deadline_s;          /* clamped, > 0 */
    struct ssl_ctx_st *ssl_ctx; /* a reference taken (SSL_CTX_up_ref) or NULL: no https */
    struct uf_proxy_config *proxies; /* a reference taken, or NULL: no proxy */
};

/* Takes everything spec holds. */
struct uf_fetch *uf_fetch_new(struct uf_fetch_spec *spec);
extern const struct af_defer_ops uf_fetch_ops;

/* Whether a request header is one the service sets itself or drops
 * (Host, Content-Length, hop-by-hop fields, ...). */
bool uf_header_is_dropped(const char *key);

#endif
