/*
 * urlfetch — the "urlfetch" service: Fetch, an app's outbound HTTP
 * (docs/services.md, "urlfetch").
 *
 * On the backend thread a Fetch is only decoded and checked, the way
 * production checks it:
 *  - a method other than GET, POST, HEAD, PUT, DELETE, PATCH →
 *    UNSPECIFIED_ERROR (what the stock development server answered);
 *  - not an absolute http(s) URL, credentials in it, over 2048 bytes →
 *    INVALID_URL;
 *  - a payload over 10 MiB → PAYLOAD_TOO_LARGE;
 *  - a header name that is not an RFC 9110 token, a value with CR, LF or
 *    another control byte, over 256 headers or 64 KiB of them → FETCH_ERROR;
 *  - a deadline already past → DEADLINE_EXCEEDED.
 * Then the fetch itself is deferred (apiserver/service.h, af_result_defer)
 * to the API I/O thread, where urlfetch_http.c runs it; the backend goes on
 * with the next call at once. Nothing here waits on the network.
 *
 * The service's state is the TLS context for https (CA store loaded once,
 * on the first https fetch) and the proxies of the environment (read once,
 * when the service starts; urlfetch_proxy.c), which fetches share by
 * reference.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "apiserver/service.h"
#include "apiserver/services/urlfetch.h"
#include "common/log.h"
#include "common/xalloc.h"

struct urlfetch_state {
    SSL_CTX *ssl_ctx; /* made on the first https fetch */
    bool ssl_failed;
    struct uf_proxy_config *proxies; /* NULL: no proxy */
};

static void *urlfetch_create(const struct af_api_options *opts)
{
    struct urlfetch_state *st = af_xcalloc(1, sizeof(struct urlfetch_state));
    st->proxies = uf_proxy_config_new(getenv);
    return st;
}

static void urlfetch_destroy(void *state)
{
    struct urlfetch_state *st = state;
    /* Fetches still running hold their own references. */
    if (st->ssl_ctx)
        SSL_CTX_free(st->ssl_ctx);
    uf_proxy_config_unref(st->proxies);
    free(st);
}

/* The shared TLS context with a reference for the caller, or NULL. */
static SSL_CTX *ssl_ctx_ref(struct urlfetch_state *st)
{
    if (!st->ssl_ctx && !st->ssl_failed) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (ctx && SSL_CTX_set_default_verify_paths(ctx) == 1) {
            st->ssl_ctx = ctx;
        } else {
            if (ctx)
                SSL_CTX_free(ctx);
            st->ssl_failed = true;
            af_warn("urlfetch: OpenSSL cannot load the system's certificates; https fetches "
                    "will fail");
        }
    }
    if (!st->ssl_ctx)
        return NULL;
    SSL_CTX_up_ref(st->ssl_ctx);
    return st->ssl_ctx;
}

/* RFC 9110 section 5.6.2: a field name is a token. */
static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (!isalnum(*p) && !strchr("!#$%&'*+-.^_`|~", *p))
            return false;
    return true;
}

/* RFC 9110 section 5.5: visible characters, spaces and tabs; obs-text
 * (bytes over 0x7f) passes. */
static bool is_field_value(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return false;
    return true;
}

/* Checks the request's headers; returns false with res set. */
static bool check_headers(const struct uf_request *req, struct af_result *res)
{
    if (req->n_headers > UF_MAX_HEADERS) {
        af_result_app_error(res, UFERR(FETCH_ERROR), "%zu request headers; at most %d are allowed",
                            req->n_headers, UF_MAX_HEADERS);
        return false;
    }
    size_t bytes = 0;
    for (size_t i = 0; i < req->n_headers; i++) {
        const struct uf_header *h = &req->headers[i];
        if (!is_token(h->key)) {
            af_result_app_error(res, UFERR(FETCH_ERROR),
                                "request header name \"%.64s\" is not a valid HTTP field name",
                                h->key);
            return false;
        }
        if (!is_field_value(h->value)) {
            af_result_app_error(res, UFERR(FETCH_ERROR),
                                "the value of request header %.64s has a CR, LF or other control "
                                "byte",
                                h->key);
            return false;
        }
        bytes += strlen(h->key) + strlen(h->value) + 4;
    }
    if (bytes > UF_MAX_HEADER_BYTES) {
        af_result_app_error(res, UFERR(FETCH_ERROR),
                            "the request headers take %zu bytes; at most %u are allowed", bytes,
                            UF_MAX_HEADER_BYTES);
        return false;
    }
    return true;
}

/* The deadline to use, or a negative number when it has already passed. */
static double effective_deadline(const struct uf_request *req)
{
    if (!req->has_deadline || isnan(req->deadline_s))
        return UF_DEFAULT_DEADLINE_S;
    if (req->deadline_s <= 0)
        return -1;
    return req->deadline_s > UF_MAX_DEADLINE_S ? UF_MAX_DEADLINE_S : req->deadline_s;
}

static void m_fetch(void *state, const struct af_call *call, struct af_result *res)
{
    struct urlfetch_state *st = state;
    struct uf_fetch_spec spec = {0};
    char err[300];

    if (uf_request_decode(call->request, call->request_len, &spec.req, err, sizeof(err)) != 0) {
        af_result_rpc_error(res, AF_RPC_BAD_REQUEST, "not a URLFetchRequest: %s", err);
        return;
    }
    struct uf_request *req = &spec.req;
    if (req->method < UF_GET || req->method > UF_PATCH) {
        af_result_app_error(res, UFERR(UNSPECIFIED_ERROR),
                            "method %d is not one of GET (1), POST (2), HEAD (3), PUT (4), "
                            "DELETE (5), PATCH (6)",
                            req->method);
        goto fail;
    }
    if (uf_url_parse(req->url, &spec.url, err, sizeof(err)) != 0) {
        af_result_app_error(res, UFERR(INVALID_URL), "cannot fetch \"%.200s\": %s", req->url, err);
        goto fail;
    }
    if (req->payload_len > UF_MAX_PAYLOAD) {
        af_result_app_error(res, UFERR(PAYLOAD_TOO_LARGE),
                            "the payload of %zu bytes for %.200s exceeds the %u byte (10 MiB) "
                            "limit",
                            req->payload_len, req->url, UF_MAX_PAYLOAD);
        goto fail;
    }
    if (!check_headers(req, res))
        goto fail;
    spec.deadline_s = effective_deadline(req);
    if (spec.deadline_s < 0) {
        af_result_app_error(res, UFERR(DEADLINE_EXCEEDED),
                            "the deadline of the fetch of %.200s (%g s) had passed before it "
                            "started",
                            req->url, req->deadline_s);
        goto fail;
    }
    if (spec.url.https) {
        spec.ssl_ctx = ssl_ctx_ref(st);
        if (!spec.ssl_ctx) {
            af_result_app_error(res, UFERR(FETCH_ERROR),
                                "cannot fetch %.200s: https is unavailable (OpenSSL could not "
                                "load the system's CA certificates)",
                                req->url);
            goto fail;
        }
    }
    spec.proxies = uf_proxy_config_ref(st->proxies);
    af_result_defer(res, &uf_fetch_ops, uf_fetch_new(&spec));
    return;

fail:
    uf_url_release(&spec.url);
    uf_request_release(&spec.req);
}

static const struct af_method urlfetch_methods[] = {
    {"Fetch", m_fetch},
    {NULL, NULL},
};

const struct af_service af_service_urlfetch = {
    .name = "urlfetch",
    .methods = urlfetch_methods,
    .create = urlfetch_create,
    .destroy = urlfetch_destroy,
};
