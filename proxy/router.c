/*
 * router — see router.h.
 *
 * A request on the main port goes through, in order:
 *
 *   1. /_ah/login and /_ah/logout: appfront's login pages (login.c).
 *   2. No handlers in app.yaml: everything goes to the app, as App Engine's
 *      second-generation runtimes do with an entrypoint and no handlers.
 *   3. The path is percent-decoded for matching, as dev_appserver matches
 *      WSGI's PATH_INFO. Decoding first matters for login: "/admin%2Fx" must
 *      meet the handler of "/admin/.*", or a later handler without login
 *      would pass it to an app that decodes it into /admin/x. An escape of
 *      NUL, or a "." or ".." segment, is 404 for every handler (clients
 *      remove dot segments themselves, RFC 3986 §5.2.4, so only a crafted
 *      request carries one); a malformed escape is 400.
 *   4. Handlers in order; the first whose url matches the whole path wins
 *      (Python's re.match of "url$", i.e. anchored at both ends). A static
 *      handler with require_matching_file whose file is missing (or
 *      skipped) does not match, and the search goes on.
 *   5. The handler: secure, then login, then for static handlers the method
 *      (GET, HEAD), skip_files and the file itself.
 *   6. Nothing matched: 404.
 *
 * The request's target is forwarded unchanged to the app: decoding is only
 * for matching.
 */
#include "proxy/router.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/appyaml.h"
#include "proxy/exchange.h"
#include "proxy/headers.h"
#include "proxy/login.h"
#include "proxy/server.h"
#include "proxy/static.h"
#include "proxy/url.h"

/* url and upload: Python's re.match(pattern + "$"), both ends anchored.
 * PCRE2_MATCH_INVALID_UTF: a decoded path is bytes, and invalid UTF-8 must
 * simply not match rather than make pcre2_match fail. */
#define ROUTE_RE_OPTIONS \
    (AF_APPYAML_PCRE2_OPTIONS | PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_MATCH_INVALID_UTF)
/* skip_files: dev_appserver uses re.match, anchored at the start only. */
#define SKIP_RE_OPTIONS (AF_APPYAML_PCRE2_OPTIONS | PCRE2_ANCHORED | PCRE2_MATCH_INVALID_UTF)

/* Error pages are read into memory for conn.c's answers: bounded. */
#define MAX_ERROR_PAGE_BYTES (1024 * 1024)

struct route {
    const struct af_handler *h;
    pcre2_code *url_re;
    pcre2_code *upload_re;  /* static_files */
    uint32_t file_group;    /* static_dir: the group holding the file part */
    long long max_age;      /* expiration, else default_expiration; -1 none */
    const char *content_type; /* mime_type if it can be sent, else NULL */
    struct af_header_kv *extra; /* http_headers that can be sent (borrowed strings) */
    size_t n_extra;
};

struct af_router {
    const struct af_app_yaml *app;
    bool allow_skipped;
    int https_port;
    struct route *routes;
    size_t n_routes;
    pcre2_code **skip;
    size_t n_skip;
    pcre2_match_data *md;
};

/* The process's router (router.h): main thread only. */

/* ---- building ----------------------------------------------------------- */

static pcre2_code *compile(const char *src, uint32_t options, const char *what, int line)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED, options, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof(msg));
        af_error("app.yaml:%d: %s '%s' does not compile: %s at offset %zu; it never matches",
                 line, what, src, (const char *)msg, (size_t)off);
    }
    return re;
}

static uint32_t capture_count(const pcre2_code *re)
{
    uint32_t n = 0;
    if (re)
        pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &n);
    return n;
}

/* Fields a handler may not set: framing and hop-by-hop fields belong to
 * the connection (RFC 9112 §6, RFC 9110 §7.6.1), and Content-Range and
 * Date describe this very answer. */
static const char *const reserved_fields[] = {
    "Connection", "Content-Length", "Content-Range", "Date",    "Keep-Alive",
    "Proxy-Connection", "TE",       "Trailer",       "Transfer-Encoding", "Upgrade",
};

static bool reserved_field(const char *name)
{
    for (size_t i = 0; i < sizeof(reserved_fields) / sizeof(reserved_fields[0]); i++)
        if (strcasecmp(name, reserved_fields[i]) == 0)
            return true;
    return false;
}

static bool value_ok(const char *v)
{
    return af_header_value_is_safe(v, strlen(v));
}

/* Checks the \N references of static_files against the groups of url. */
static void check_refs(const struct af_handler *h, uint32_t groups)
{
    for (const char *p = h->static_files; *p; p++) {
        if (*p != '\\' || !p[1])
            continue;
        p++;
        if (*p >= '1' && *p <= '9' && (uint32_t)(*p - '0') > groups)
            af_warn("app.yaml:%d: static_files '%s' uses \\%c but url '%s' has %u group%s; "
                    "it expands to nothing",
                    h->line, h->static_files, *p, h->url, groups, groups == 1 ? "" : "s");
    }
}

static void build_route(struct af_router *r, struct route *rt, const struct af_handler *h)
{
    rt->h = h;
    rt->max_age = -1;
    if (h->kind == AF_HANDLER_STATIC_DIR) {
        /* dev_appserver: "/css" serves "/css/(?P<file>.*)$" from the dir. */
        size_t n = strlen(h->url);
        char *src = af_xasprintf("%s%s(.*)", h->url, n && h->url[n - 1] == '/' ? "" : "/");
        rt->url_re = compile(src, ROUTE_RE_OPTIONS, "url", h->line);
        free(src);
        rt->file_group = capture_count(rt->url_re);
    } else {
        rt->url_re = compile(h->url, ROUTE_RE_OPTIONS, "url", h->line);
    }
    if (h->kind == AF_HANDLER_STATIC_FILES) {
        rt->upload_re = compile(h->upload, ROUTE_RE_OPTIONS, "upload", h->line);
        check_refs(h, capture_count(rt->url_re));
    }
    if (h->kind == AF_HANDLER_SCRIPT)
        goto secure;

    const char *exp = h->expiration ? h->expiration : r->app->default_expiration;
    if (exp && af_expiration_parse(exp, &rt->max_age) != 0)
        rt->max_age = -1;
    if (h->mime_type) {
        if (value_ok(h->mime_type))
            rt->content_type = h->mime_type;
        else
            af_warn("app.yaml:%d: mime_type holds a control character; ignored", h->line);
    }
    rt->extra = af_xcalloc(h->n_http_headers ? h->n_http_headers : 1, sizeof(*rt->extra));
    for (size_t i = 0; i < h->n_http_headers; i++) {
        const struct af_header_kv *kv = &h->http_headers[i];
        if (reserved_field(kv->name)) {
            af_warn("app.yaml:%d: http_headers: '%s' is set by appfront itself; ignored",
                    h->line, kv->name);
        } else if (!value_ok(kv->value)) {
            /* A CR, LF or NUL would let a value start another field. */
            af_warn("app.yaml:%d: http_headers: the value of '%s' holds a control character; "
                    "ignored",
                    h->line, kv->name);
        } else {
            rt->extra[rt->n_extra++] = *kv;
        }
    }
secure:
    if (h->secure == AF_SECURE_ALWAYS && r->https_port <= 0)
        af_warn("app.yaml:%d: handler '%s' has secure: always, but appfront has no https port: "
                "it is served over plain http",
                h->line, h->url);
}

struct af_router *af_router_new(const struct af_app_yaml *app, bool allow_skipped_files,
                                int https_port)
{
    struct af_router *r = af_xcalloc(1, sizeof(*r));
    r->app = app;
    r->allow_skipped = allow_skipped_files;
    r->https_port = https_port;
    r->routes = af_xcalloc(app->n_handlers ? app->n_handlers : 1, sizeof(*r->routes));
    r->n_routes = app->n_handlers;
    for (size_t i = 0; i < app->n_handlers; i++)
        build_route(r, &r->routes[i], &app->handlers[i]);
    r->skip = af_xcalloc(app->n_skip_files ? app->n_skip_files : 1, sizeof(*r->skip));
    for (size_t i = 0; i < app->n_skip_files; i++) {
        pcre2_code *re = compile(app->skip_files[i], SKIP_RE_OPTIONS, "skip_files", 0);
        if (re)
            r->skip[r->n_skip++] = re;
    }
    r->md = pcre2_match_data_create(32, NULL);
    return r;
}

void af_router_free(struct af_router *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_routes; i++) {
        pcre2_code_free(r->routes[i].url_re);
        pcre2_code_free(r->routes[i].upload_re);
        free(r->routes[i].extra);
    }
    free(r->routes);
    for (size_t i = 0; i < r->n_skip; i++)
        pcre2_code_free(r->skip[i]);
    free(r->skip);
    pcre2_match_data_free(r->md);
    free(r);
}

/* The module's router, built again when its app.yaml was reloaded. */
static struct af_router *module_router(struct af_module *mod)
{
    if (!mod || !mod->app)
        return NULL;
    if (!mod->router || mod->router_app != mod->app) {
        af_router_free(mod->router);
        mod->router = af_router_new(mod->app, mod->srv->cfg->allow_skipped_files, 0);
        mod->router_app = mod->app;
    }
    return mod->router;
}

void af_router_init(struct af_server *srv)
{
    for (size_t i = 0; i < srv->n_modules; i++)
        module_router(srv->modules[i]);
}

void af_router_release(struct af_module *mod)
{
    af_router_free(mod->router);
    mod->router = NULL;
    mod->router_app = NULL;
}

/* ---- matching ------------------------------------------------------------- */

bool af_router_has_dot_segment(const char *path)
{
    for (const char *p = path; *p; p++) {
        if (*p != '/')
            continue;
        const char *s = p + 1;
        if (s[0] == '.' && (s[1] == '/' || s[1] == '\0'))
            return true;
        if (s[0] == '.' && s[1] == '.' && (s[2] == '/' || s[2] == '\0'))
            return true;
    }
    return path[0] == '.' && (path[1] == '\0' || path[1] == '/' ||
                              (path[1] == '.' && (path[2] == '\0' || path[2] == '/')));
}

char *af_router_expand(const char *tmpl, const char *subject, const size_t *ov, unsigned n)
{
    size_t cap = strlen(tmpl) + 1, len = 0;
    for (unsigned g = 1; g < n; g++)
        if (ov[2 * g] != PCRE2_UNSET)
            cap += ov[2 * g + 1] - ov[2 * g];
    /* Each group may be used several times: size on the fly. */
    char *out = af_xmalloc(cap);
    for (const char *p = tmpl; *p; p++) {
        const char *piece = p;
        size_t piece_len = 1;
        if (p[0] == '\\' && p[1] >= '0' && p[1] <= '9') {
            unsigned g = (unsigned)(p[1] - '0');
            piece_len = 0;
            if (g > 0 && g < n && ov[2 * g] != PCRE2_UNSET) {
                piece = subject + ov[2 * g];
                piece_len = ov[2 * g + 1] - ov[2 * g];
            }
            p++;
        } else if (p[0] == '\\' && p[1] == '\\') {
            p++;
        }
        if (len + piece_len + 1 > cap) {
            cap = (len + piece_len + 1) * 2;
            out = af_xrealloc(out, cap);
        }
        memcpy(out + len, piece, piece_len);
        len += piece_len;
    }
    out[len] = '\0';
    return out;
}

/* Percent-encoded '.', '/' or '\', or a raw '\': never in a path that
 * names a static file (they are how traversal hides from a check). */
static bool has_encoded_separator(const char *raw, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (raw[i] == '\\')
            return true;
        if (raw[i] == '%' && i + 2 < n) {
            char hi = raw[i + 1], lo = (char)tolower((unsigned char)raw[i + 2]);
            if ((hi == '2' && (lo == 'e' || lo == 'f')) || (hi == '5' && lo == 'c'))
                return true;
        }
    }
    return false;
}

/* "a//b" → "a/b", no leading "/" or "./": the form skip_files sees. */
static void normalize_rel(char *s)
{
    char *o = s;
    const char *p = s;
    while (*p == '/' || (p[0] == '.' && p[1] == '/'))
        p += *p == '/' ? 1 : 2;
    for (; *p; p++) {
        if (*p == '/' && (o == s || o[-1] == '/'))
            continue;
        *o++ = *p;
    }
    *o = '\0';
}

static bool skipped(struct af_router *r, const char *rel)
{
    for (size_t i = 0; i < r->n_skip; i++)
        if (pcre2_match(r->skip[i], (PCRE2_SPTR)rel, strlen(rel), 0, 0, r->md, NULL) >= 0)
            return true;
    return false;
}

/* Opens the file of a static handler. Returns the fd or -1 (missing,
 * outside the app, not a regular file, or skipped). */
static int open_static(struct af_router *r, const char *rel, struct stat *st)
{
    if (!r->allow_skipped && skipped(r, rel))
        return -1;
    char *resolved = NULL;
    int fd = af_static_open(r->app->dir, rel, st, &resolved);
    if (fd >= 0 && !r->allow_skipped) {
        /* A symlink may lead to a skipped file under another name. */
        size_t root_len = strlen(r->app->dir);
        if (strlen(resolved) > root_len && skipped(r, resolved + root_len + 1)) {
            close(fd);
            fd = -1;
        }
    }
    free(resolved);
    return fd;
}

/* The file a static handler names for a path its pattern matched with
 * result rc (pcre2_match: the highest group set, plus one; pairs past it
 * hold whatever the match data held before), or NULL when the handler
 * cannot serve it (static_files outside upload). */
static char *static_rel(struct af_router *r, const struct route *rt, const char *path, int rc)
{
    const size_t *ov = pcre2_get_ovector_pointer(r->md);
    unsigned n = rc > 0 ? (unsigned)rc : pcre2_get_ovector_count(r->md);
    char *rel;
    if (rt->h->kind == AF_HANDLER_STATIC_DIR) {
        size_t a = PCRE2_UNSET, b = 0;
        if ((unsigned)rt->file_group < n) {
            a = ov[2 * rt->file_group];
            b = ov[2 * rt->file_group + 1];
        }
        if (a == PCRE2_UNSET)
            a = b = 0;
        rel = af_xasprintf("%s/%.*s", rt->h->static_dir, (int)(b - a), path + a);
    } else {
        rel = af_router_expand(rt->h->static_files, path, ov, n);
        /* Only what upload names is deployed as a static file. */
        if (!rt->upload_re ||
            pcre2_match(rt->upload_re, (PCRE2_SPTR)rel, strlen(rel), 0, 0, r->md, NULL) < 0) {
            free(rel);
            return NULL;
        }
    }
    normalize_rel(rel);
    return rel;
}

static void set_error(struct af_route_result *out, int status, const char *why)
{
    out->kind = AF_ROUTE_ERROR;
    out->status = status;
    out->why = why;
}

/* The login check of a handler. True when the request may go on. */
static bool check_login(const struct route *rt, const char *target,
                        const struct af_headers *headers, const char *host, bool trusted,
                        struct af_route_result *out)
{
    const struct af_handler *h = rt->h;
    /* appfront's own task requests count as an administrator's, as in
     * dev_appserver (taskrunner.h). */
    if (h->login == AF_LOGIN_OPTIONAL || trusted)
        return true;
    struct af_user user;
    if (af_login_from_headers(headers, &user)) {
        if (h->login == AF_LOGIN_ADMIN && !user.admin) {
            /* Logged in, but not an administrator: logging in again as the
             * same user cannot help, so no redirect (as dev_appserver). */
            set_error(out, 401, "This page is for administrators of the application.");
            return false;
        }
        return true;
    }
    if (h->auth_fail_action == AF_AUTH_FAIL_UNAUTHORIZED) {
        set_error(out, 401, "Login required.");
        return false;
    }
    char *full = af_xasprintf("http://%s%s", host, target);
    char *enc = af_url_encode(full);
    out->kind = AF_ROUTE_REDIRECT;
    out->status = 302;
    out->location = af_xasprintf("/_ah/login?continue=%s", enc);
    free(enc);
    free(full);
    return false;
}

void af_router_route(struct af_router *r, unsigned method, const char *target,
                     const struct af_headers *headers, const char *host,
                     struct af_route_result *out)
{
    af_router_route_as(r, method, target, headers, host, false, out);
}

void af_router_route_as(struct af_router *r, unsigned method, const char *target,
                        const struct af_headers *headers, const char *host, bool trusted,
                        struct af_route_result *out)
{
    memset(out, 0, sizeof(*out));
    out->fd = -1;
    out->handler = -1;
    size_t path_len = strcspn(target, "?#");
    const char *query = target[path_len] == '?' ? target + path_len + 1 : NULL;

    if (path_len == 10 && memcmp(target, "/_ah/login", 10) == 0) {
        out->kind = AF_ROUTE_LOGIN;
        out->query = query;
        return;
    }
    if (path_len == 11 && memcmp(target, "/_ah/logout", 11) == 0) {
        out->kind = AF_ROUTE_LOGOUT;
        out->query = query;
        return;
    }
    if (r->n_routes == 0) {
        out->kind = AF_ROUTE_FORWARD;
        return;
    }
    if (target[0] != '/') {
        set_error(out, 404, "No handler in app.yaml matches this request.");
        return;
    }
    char *path = af_url_decode(target, path_len, false);
    if (!path) {
        for (size_t i = 0; i + 2 < path_len; i++)
            if (target[i] == '%' && target[i + 1] == '0' && target[i + 2] == '0') {
                set_error(out, 404, "A path may not hold a NUL byte.");
                return;
            }
        set_error(out, 400, "The path holds a malformed percent-escape.");
        return;
    }
    if (af_router_has_dot_segment(path)) {
        set_error(out, 404, "A path may not hold '.' or '..' segments.");
        free(path);
        return;
    }

    for (size_t i = 0; i < r->n_routes; i++) {
        const struct route *rt = &r->routes[i];
        int rc = rt->url_re ? pcre2_match(rt->url_re, (PCRE2_SPTR)path, strlen(path), 0, 0,
                                          r->md, NULL)
                            : -1;
        if (rc < 0)
            continue;
        const struct af_handler *h = rt->h;
        bool is_static = h->kind != AF_HANDLER_SCRIPT;
        char *rel = NULL;
        int fd = -1;
        if (is_static && !has_encoded_separator(target, path_len)) {
            rel = static_rel(r, rt, path, rc);
            if (rel)
                fd = open_static(r, rel, &out->st);
        }
        if (is_static && fd < 0 && h->require_matching_file) {
            free(rel);
            continue; /* not this handler: the next one may match */
        }
        out->handler = (int)i;
        out->rel = rel;
        out->fd = fd;

        if (h->secure == AF_SECURE_ALWAYS && r->https_port > 0) {
            char *bare = af_xstrdup(host);
            char *colon = strrchr(bare, ':');
            if (colon && !strchr(colon, ']'))
                *colon = '\0';
            out->kind = AF_ROUTE_REDIRECT;
            /* App Engine uses redirect_http_response_code for exactly this
             * redirect; 302 when it is not given. */
            out->status = h->redirect_http_response_code ? h->redirect_http_response_code : 302;
            out->location = af_xasprintf("https://%s:%d%s", bare, r->https_port, target);
            free(bare);
            break;
        }
        if (!check_login(rt, target, headers, host, trusted, out))
            break;
        if (!is_static) {
            out->kind = AF_ROUTE_FORWARD;
            break;
        }
        if (method != HTTP_GET && method != HTTP_HEAD) {
            set_error(out, 405, "Static files answer GET and HEAD only.");
            out->allow = "GET, HEAD";
            break;
        }
        if (fd < 0) {
            set_error(out, 404, "No such file.");
            break;
        }
        out->kind = AF_ROUTE_FILE;
        break;
    }
    if (out->handler < 0)
        set_error(out, 404, "No handler in app.yaml matches this request.");
    if (out->kind != AF_ROUTE_FILE && out->fd >= 0) {
        close(out->fd);
        out->fd = -1;
    }
    free(path);
}

void af_route_result_release(struct af_route_result *res)
{
    if (res->fd >= 0)
        close(res->fd);
    res->fd = -1;
    free(res->location);
    free(res->rel);
    res->location = NULL;
    res->rel = NULL;
}

/* ---- error pages ------------------------------------------------------------ */

/* Opens the error_handlers file for `code` (NULL: the default one). */
static int open_error_file(const struct af_router *r, const char *code, struct stat *st,
                           const char **file)
{
    for (size_t i = 0; i < r->app->n_error_handlers; i++) {
        const struct af_error_handler *eh = &r->app->error_handlers[i];
        bool same = code ? eh->error_code && strcmp(eh->error_code, code) == 0
                         : !eh->error_code || strcmp(eh->error_code, "default") == 0;
        if (!same)
            continue;
        int fd = af_static_open(r->app->dir, eh->file, st, NULL);
        if (fd < 0)
            af_warn("error_handlers: cannot open '%s' in %s; answering without it", eh->file,
                    r->app->dir);
        *file = eh->file;
        return fd;
    }
    return -1;
}

/* The error_code a status stands for (router.h), or NULL for the default. */
static const struct {
    int status;
    const char *code;
} error_codes[] = {
    {503, "over_quota"},
    {504, "timeout"},
};

static int error_file_for(const struct af_router *r, int status, struct stat *st,
                          const char **file)
{
    for (size_t i = 0; i < sizeof(error_codes) / sizeof(error_codes[0]); i++) {
        if (error_codes[i].status != status)
            continue;
        int fd = open_error_file(r, error_codes[i].code, st, file);
        if (fd >= 0)
            return fd;
    }
    return open_error_file(r, NULL, st, file);
}

struct evbuffer *af_router_error_page(struct af_module *mod, int status,
                                      const char **content_type)
{
    if (!(status == 500 || status == 503 || status == 504))
        return NULL;
    struct af_router *r = module_router(mod);
    if (!r)
        return NULL;
    struct stat st;
    const char *file = NULL;
    int fd = error_file_for(r, status, &st, &file);
    if (fd < 0)
        return NULL;
    if (st.st_size > MAX_ERROR_PAGE_BYTES) {
        af_warn("error_handlers: '%s' is over %d bytes; answering without it", file,
                MAX_ERROR_PAGE_BYTES);
        close(fd);
        return NULL;
    }
    struct evbuffer *b = evbuffer_new();
    if (st.st_size > 0)
        evbuffer_add_file(b, fd, 0, st.st_size); /* takes fd */
    else
        close(fd);
    *content_type = af_static_mime_type(file);
    return b;
}

/* ---- answering -------------------------------------------------------------- */

static void add(struct af_headers *h, const char *name, const char *value)
{
    af_headers_add(h, name, strlen(name), value, strlen(value));
}

static void reply_error(struct af_router *r, struct af_exchange *ex, int status, const char *why,
                        const char *allow)
{
    struct af_headers h;
    af_headers_init(&h);
    if (allow)
        add(&h, "Allow", allow);
    struct stat st;
    const char *file = NULL;
    int fd = error_file_for(r, status, &st, &file);
    if (fd >= 0) {
        add(&h, "Content-Type", af_static_mime_type(file));
        af_ex_reply(ex, status, &h, NULL, fd, 0, st.st_size);
    } else {
        add(&h, "Content-Type", "text/plain; charset=utf-8");
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "%s\n", why);
        af_ex_reply(ex, status, &h, b, -1, 0, 0);
    }
    af_headers_release(&h);
}

/* The host:port to name in redirects: the request's Host if it looks like
 * one (it is echoed into a Location field), else the main port's. */
/* Letters, digits and . - : [ ] (an IPv6 literal): what a Host value used
 * in a redirect may hold. */
static bool host_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '-' || c == ':' || c == '[' || c == ']';
}

/* The host:port redirects name: the request's Host when it is a plain
 * host, else the listener's own. Borrowed from the request, or written to
 * buf. */
static const char *redirect_host(struct af_exchange *ex, char *buf, size_t len)
{
    const struct af_header *host = af_headers_find_id(&ex->req_headers, AF_H_HOST);
    if (host && host->value_len > 0 && host->value_len < 256) {
        size_t i = 0;
        while (i < host->value_len && host_char((unsigned char)host->value[i]))
            i++;
        if (i == host->value_len)
            return host->value;
    }
    struct af_conn *c = ex->conn;
    snprintf(buf, len, "%s:%d", c->srv->cfg->host, c->lst->port);
    return buf;
}

bool af_router_handle(struct af_exchange *ex)
{
    struct af_router *r = module_router(ex->mod);
    if (!r)
        return false;
    char buf[300];
    const char *host = redirect_host(ex, buf, sizeof(buf));
    struct af_route_result res;
    af_router_route_as(r, ex->method, ex->url, &ex->req_headers, host, ex->trusted, &res);
    /* r was made from ex->mod->app (module_router). */
    if (res.handler >= 0)
        ex->handler_url = ex->mod->app->handlers[res.handler].url;
    bool answered = true;
    switch (res.kind) {
    case AF_ROUTE_FORWARD:
        answered = false;
        break;
    case AF_ROUTE_LOGIN:
    case AF_ROUTE_LOGOUT:
        af_login_page(ex, res.query, res.kind == AF_ROUTE_LOGOUT);
        break;
    case AF_ROUTE_REDIRECT: {
        struct af_headers h;
        af_headers_init(&h);
        add(&h, "Location", res.location);
        add(&h, "Content-Type", "text/plain; charset=utf-8");
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "Redirecting to %s\n", res.location);
        af_ex_reply(ex, res.status, &h, b, -1, 0, 0);
        af_headers_release(&h);
        break;
    }
    case AF_ROUTE_ERROR:
        reply_error(r, ex, res.status, res.why, res.allow);
        break;
    case AF_ROUTE_FILE: {
        const struct route *rt = &r->routes[res.handler];
        struct af_static_opts o = {
            .content_type = rt->content_type,
            .max_age = rt->max_age,
            .extra = rt->extra,
            .n_extra = rt->n_extra,
        };
        int fd = res.fd;
        res.fd = -1;
        af_static_serve(ex, fd, &res.st, res.rel, &o);
        break;
    }
    }
    af_route_result_release(&res);
    return answered;
}
