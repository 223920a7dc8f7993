/*
 * user — the "user" service: login and logout URLs, and the fixed OAuth user
 * of a development server.
 *
 * Login itself is the front end's business (its /_ah/login page sets the
 * login cookie); this service only tells an app where that page is. The URLs
 * are absolute, "http://SERVER_HOST/_ah/login?continue=DEST", because an app
 * may put them in a mail or a page served from another host, and a relative
 * destination is made absolute against SERVER_HOST first so the front end
 * can redirect back to the same place after login.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "user.pb-c.h"

#include "apiserver/service.h"
#include "common/xalloc.h"

/* Longest destination URL accepted. Browsers and proxies commonly cap URLs
 * near 2 KiB, and the login URL embeds the destination percent-encoded (up
 * to three times longer), so anything longer would not survive the round
 * trip through the login page anyway. */
#define USER_MAX_DEST_LEN 2048

/* The OAuth identity the development server reports for every request, as
 * the stock development server does: there is no OAuth provider to ask. */
#define OAUTH_EMAIL "example@example.com"
#define OAUTH_USER_ID "0"
#define OAUTH_AUTH_DOMAIN "gmail.com" /* unless --auth_domain says otherwise */
#define OAUTH_CLIENT_ID "123456789.apps.googleusercontent.com"
#define OAUTH_CONSUMER_KEY "example.com"

struct user_state {
    char *server_host; /* "localhost:8080" */
    char *auth_domain; /* --auth_domain, "gmail.com" */
};

static void *user_create(const struct af_api_options *opts)
{
    struct user_state *st = af_xcalloc(1, sizeof(*st));
    st->server_host = af_xstrdup(opts && opts->server_host ? opts->server_host : "localhost");
    st->auth_domain = af_xstrdup(opts && opts->auth_domain && opts->auth_domain[0]
                                     ? opts->auth_domain
                                     : OAUTH_AUTH_DOMAIN);
    return st;
}

static void user_destroy(void *state)
{
    struct user_state *st = state;
    if (!st)
        return;
    free(st->server_host);
    free(st->auth_domain);
    free(st);
}

/* RFC 3986 section 2.3 unreserved characters pass unchanged; '/' is allowed
 * in a query component (section 3.4) and keeps the URL readable. Everything
 * else, including ':', '?', '&', '=' and '#', is percent-encoded so the
 * destination survives as one query parameter. */
static bool url_keep(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~' || c == '/';
}

/* Appends the percent-encoding of s to out (which has room for 3*strlen+1). */
static char *url_encode_into(char *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (url_keep(*p)) {
            *out++ = (char)*p;
        } else {
            *out++ = '%';
            *out++ = hex[*p >> 4];
            *out++ = hex[*p & 15];
        }
    }
    *out = '\0';
    return out;
}

/* True when dest already names a scheme ("http:", "https:", ...), per the
 * scheme grammar of RFC 3986 section 3.1. */
static bool has_scheme(const char *dest)
{
    const char *p = dest;
    if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')))
        return false;
    for (p++; *p && *p != ':'; p++) {
        bool ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                  (*p >= '0' && *p <= '9') || *p == '+' || *p == '-' || *p == '.';
        if (!ok)
            return false;
    }
    return *p == ':';
}

/*
 * Builds "http://HOST/_ah/PAGE?continue=ENC(DEST)" where a destination
 * without a scheme is first made absolute against HOST. Returns NULL with an
 * application error in res when dest is unusable.
 */
static char *make_url(const struct user_state *st, const char *page, const char *dest,
                      struct af_result *res)
{
    size_t dlen = strlen(dest);
    if (dlen > USER_MAX_DEST_LEN) {
        af_result_app_error(res, AF__USER__USER_SERVICE_ERROR__ERROR_CODE__REDIRECT_URL_TOO_LONG,
                            "destination URL is %zu bytes, longer than the %d allowed", dlen,
                            USER_MAX_DEST_LEN);
        return NULL;
    }
    char *absolute;
    if (has_scheme(dest))
        absolute = af_xstrdup(dest);
    else if (dest[0] == '/' && dest[1] == '/') /* network-path reference */
        absolute = af_xasprintf("http:%s", dest);
    else
        absolute = af_xasprintf("http://%s%s%s", st->server_host, dest[0] == '/' ? "" : "/", dest);

    char *prefix = af_xasprintf("http://%s/_ah/%s?continue=", st->server_host, page);
    size_t plen = strlen(prefix);
    char *url = af_xmalloc(plen + 3 * strlen(absolute) + 1);
    memcpy(url, prefix, plen);
    url_encode_into(url + plen, absolute);
    free(prefix);
    free(absolute);
    return url;
}

static void bad_request(struct af_result *res, const char *what)
{
    /* UserServiceError has no code for an undecodable message. */
    af_result_rpc_error(res, AF_RPC_BAD_REQUEST, "user: cannot decode %s", what);
}

static void create_login_url(void *state, const struct af_call *call, struct af_result *res)
{
    Af__User__CreateLoginURLRequest *req =
        af__user__create_login_urlrequest__unpack(NULL, call->request_len, call->request);
    if (!req) {
        bad_request(res, "CreateLoginURLRequest");
        return;
    }
    /* OpenID sign-in was retired by Google; a development server cannot
     * offer it either, so say so rather than ignore the identity. */
    if (req->federated_identity && req->federated_identity[0]) {
        af_result_app_error(res, AF__USER__USER_SERVICE_ERROR__ERROR_CODE__NOT_ALLOWED,
                            "federated (OpenID) login is not supported");
        af__user__create_login_urlrequest__free_unpacked(req, NULL);
        return;
    }
    char *url = make_url(state, "login", req->destination_url, res);
    if (url) {
        Af__User__CreateLoginURLResponse out = AF__USER__CREATE_LOGIN_URLRESPONSE__INIT;
        out.login_url = url;
        af_result_pack(res, &out.base);
        free(url);
    }
    af__user__create_login_urlrequest__free_unpacked(req, NULL);
}

static void create_logout_url(void *state, const struct af_call *call, struct af_result *res)
{
    Af__User__CreateLogoutURLRequest *req =
        af__user__create_logout_urlrequest__unpack(NULL, call->request_len, call->request);
    if (!req) {
        bad_request(res, "CreateLogoutURLRequest");
        return;
    }
    char *url = make_url(state, "logout", req->destination_url, res);
    if (url) {
        Af__User__CreateLogoutURLResponse out = AF__USER__CREATE_LOGOUT_URLRESPONSE__INIT;
        out.logout_url = url;
        af_result_pack(res, &out.base);
        free(url);
    }
    af__user__create_logout_urlrequest__free_unpacked(req, NULL);
}

static void get_oauth_user(void *state, const struct af_call *call, struct af_result *res)
{
    Af__User__GetOAuthUserRequest *req =
        af__user__get_oauth_user_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        bad_request(res, "GetOAuthUserRequest");
        return;
    }
    Af__User__GetOAuthUserResponse out = AF__USER__GET_OAUTH_USER_RESPONSE__INIT;
    out.email = OAUTH_EMAIL;
    out.user_id = OAUTH_USER_ID;
    out.auth_domain = ((struct user_state *)state)->auth_domain;
    out.client_id = OAUTH_CLIENT_ID;
    out.has_is_admin = true;
    out.is_admin = false;
    /* Every requested scope is granted: there is nobody to deny it. The
     * array is borrowed from the request, which outlives the pack. */
    out.n_scopes = req->n_scopes;
    out.scopes = req->scopes;
    if (req->n_scopes == 0 && req->scope) {
        out.n_scopes = 1;
        out.scopes = &req->scope;
    }
    af_result_pack(res, &out.base);
    af__user__get_oauth_user_request__free_unpacked(req, NULL);
}

static void check_oauth_signature(void *state, const struct af_call *call, struct af_result *res)
{
    Af__User__CheckOAuthSignatureRequest *req =
        af__user__check_oauth_signature_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        bad_request(res, "CheckOAuthSignatureRequest");
        return;
    }
    af__user__check_oauth_signature_request__free_unpacked(req, NULL);
    Af__User__CheckOAuthSignatureResponse out = AF__USER__CHECK_OAUTH_SIGNATURE_RESPONSE__INIT;
    out.oauth_consumer_key = OAUTH_CONSUMER_KEY;
    af_result_pack(res, &out.base);
}

static const struct af_method user_methods[] = {
    {.name = "CreateLoginURL", .fn = create_login_url},
    {.name = "CreateLogoutURL", .fn = create_logout_url},
    {.name = "GetOAuthUser", .fn = get_oauth_user},
    {.name = "CheckOAuthSignature", .fn = check_oauth_signature},
    {.name = NULL},
};

const struct af_service af_service_user = {
    .name = "user",
    .methods = user_methods,
    .create = user_create,
    .destroy = user_destroy,
};
