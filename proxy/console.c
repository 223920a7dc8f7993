/*
 * console — the admin console's pages (see console.h, docs/admin.md).
 *
 * A page that shows a service's state is two steps on the main thread:
 * the request handler validates its parameters and makes an internal call
 * (apiserver.h) tagged with this console's consumer id, then parks the
 * evhttp request in a `pending` record; the reply, routed back by the API
 * server's dispatcher, finds the record by its tag, renders the page and
 * sends it. Nothing here touches service state or waits. libevent keeps a
 * parked request alive even when its client goes away (its connection is
 * then NULL and evhttp_send_reply only frees it), so a record never holds
 * a dangling request.
 *
 * Every state-changing action is a POST that must carry the per-process
 * token in its form (`token`): a page of another site can make a browser
 * POST here, but it cannot read the token out of our pages. GET never
 * changes anything. Every piece of data shown goes through af_html_escape
 * or af_html_query.
 */
#include "proxy/console.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "admin.pb-c.h"
#include "datastore_v3.pb-c.h"
#include "memcache.pb-c.h"
#include "taskqueue.pb-c.h"

#include "apiserver/apiserver.h"
#include "common/log.h"
#include "common/utf8.h"
#include "common/xalloc.h"
#include "proxy/admin.h"
#include "proxy/console_int.h"
#include "proxy/html.h"
#include "proxy/instance.h"
#include "proxy/module.h"
#include "proxy/server.h"

/* A string value in a list of entities is cut here (bytes, on a character
 * boundary); the entity's own page shows it whole. */
#define LIST_TEXT_MAX 80
#define DS_PAGE 50
#define MAX_COLUMNS 64
#define TQ_PAGE 100
/* A POST body (a form of a few fields) is refused past this. */
#define FORM_MAX_BYTES 8192
/* A memcache value is shown as text up to this; past it, only its size. */
#define MC_SHOW_MAX (64u << 10)

enum step {
    DS_KINDS,
    DS_LIST,
    DS_ENTITY,
    DS_DELETE,
    MC_STATS,
    MC_LOOKUP,
    MC_FLUSH,
    TQ_QUEUES,
    TQ_TASKS,
    TQ_DELETE,
    TQ_PURGE,
};

/* A request waiting for its internal reply. */
struct pending {
    struct pending *next;
    struct evhttp_request *req;
    uint64_t tag;
    enum step step;
    /* What the page needs besides the reply, owned: datastore app,
     * namespace, kind; memcache key (a_len bytes) and namespace; queue and
     * task names. */
    char *a, *b, *c;
    size_t a_len;
    bool later;            /* DS_LIST: not the first page */
    struct evbuffer *body; /* a page begun by an earlier step (memcache) */
};

/* ---- pages --------------------------------------------------------------- */

static const char style[] =
    "body{font:14px/1.4 sans-serif;margin:0 2em 2em;color:#222}"
    "nav{background:#234;padding:.5em 2em;margin:0 -2em 1em}"
    "nav a{color:#fff;margin-right:1.5em;text-decoration:none}"
    "table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}"
    "th{background:#eee}.t{color:#777;font-size:11px;margin-left:.3em}"
    ".err{color:#a00}form.inline{display:inline}code{white-space:pre-wrap}";

struct evbuffer *af_console_page_begin(const char *title)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>");
    af_html_text(b, title);
    evbuffer_add_printf(b,
                        " - appfront</title><style>%s</style></head><body>"
                        "<nav><a href=\"/\">appfront</a><a href=\"/datastore\">Datastore</a>"
                        "<a href=\"/memcache\">Memcache</a><a href=\"/taskqueue\">Task "
                        "queues</a><a href=\"/cron\">Cron jobs</a><a href=\"/mail\">Inbound "
                                  "mail</a></nav>\n<h1>",
                        style);
    af_html_text(b, title);
    evbuffer_add_printf(b, "</h1>\n");
    return b;
}

/* Sends b (freed) as an HTML page. The headers keep a page from being
 * framed, cached or read as another type, and allow no script at all. */
void af_console_page_send(struct evhttp_request *req, struct evbuffer *b, int status,
                          const char *reason)
{
    evbuffer_add_printf(b, "</body></html>\n");
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "text/html; charset=utf-8");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "X-Frame-Options", "DENY");
    evhttp_add_header(h, "Content-Security-Policy",
                      "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                      "frame-ancestors 'none'; base-uri 'none'");
    evhttp_send_reply(req, status, reason, b);
    evbuffer_free(b);
}

/* An error page whose message (formatted, then escaped) says what was
 * wrong. */
void af_console_error_page(struct evhttp_request *req, int status, const char *reason,
                           const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg;
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    struct evbuffer *b = af_console_page_begin(reason);
    evbuffer_add_printf(b, "<p class=\"err\">");
    af_html_text(b, msg ? msg : reason);
    evbuffer_add_printf(b, "</p>\n");
    free(msg);
    af_console_page_send(req, b, status, reason);
}

/* The hidden token field every state-changing form carries. */
void af_console_form_token(const struct af_console *c, struct evbuffer *b)
{
    evbuffer_add_printf(b, "<input type=\"hidden\" name=\"token\" value=\"%s\">", c->token);
}

/* A usec wall-clock time as UTC, with how far it is from now. */
static void time_cell(struct evbuffer *b, int64_t usec)
{
    time_t t = (time_t)(usec / 1000000);
    struct tm tm;
    char day[64];
    if (!gmtime_r(&t, &tm) || !strftime(day, sizeof(day), "%Y-%m-%d %H:%M:%S UTC", &tm)) {
        evbuffer_add_printf(b, "%" PRId64 " us", usec);
        return;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t d = (int64_t)t - (int64_t)now.tv_sec;
    evbuffer_add_printf(b, "%s <span class=\"t\">(%s%" PRId64 " s%s)</span>", day,
                        d > 0 ? "in " : "", d > 0 ? d : -d, d > 0 ? "" : " ago");
}

/* ---- internal calls --------------------------------------------------------- */

static struct pending *pending_new(struct af_console *c, struct evhttp_request *req, enum step step)
{
    struct pending *p = af_xcalloc(1, sizeof(*p));
    p->req = req;
    p->step = step;
    return p;
}

static void pending_free(struct pending *p)
{
    free(p->a);
    free(p->b);
    free(p->c);
    if (p->body)
        evbuffer_free(p->body);
    free(p);
}

/* True when one more request may wait; else answers 503. */
static bool room(struct af_console *c, struct evhttp_request *req)
{
    if (!c->api || c->consumer < 0) {
        af_console_error_page(req, 503, "Service Unavailable",
                              "the console cannot reach the API server's services");
        return false;
    }
    if (c->n_pending >= AF_CONSOLE_MAX_PENDING) {
        af_console_error_page(req, 503, "Service Unavailable",
                              "%d console requests are already waiting for the services; try again",
                              AF_CONSOLE_MAX_PENDING);
        return false;
    }
    return true;
}

/* Makes the call for p (taken: fill it first) with the packed message m
 * (NULL: empty); when the call cannot be made, answers 500 and frees p. */
static void call(struct af_console *c, struct pending *p, const char *service, const char *method,
                 const ProtobufCMessage *m)
{
    size_t n = m ? protobuf_c_message_get_packed_size(m) : 0;
    uint8_t *buf = af_xmalloc(n ? n : 1);
    if (m)
        protobuf_c_message_pack(m, buf);
    p->tag = AF_API_TAG(c->consumer, ++c->seq);
    int rc = af_api_internal_call(c->api, service, method, buf, n, p->tag);
    free(buf);
    if (rc < 0) { /* no reply will come */
        af_console_error_page(p->req, 500, "Internal Server Error",
                              "cannot call %s.%s (see appfront's log)", service, method);
        pending_free(p);
        return;
    }
    p->next = c->pending;
    c->pending = p;
    c->n_pending++;
}

/* A failed reply as a page: the service's own words. Application errors
 * are the request's fault (400, or 404 for what does not exist); anything
 * else is ours (500). */
static void failed_page(struct pending *p, const struct af_api_internal_reply *r)
{
    int status = 500;
    const char *reason = "Internal Server Error";
    if (r->app_error) {
        status = 400, reason = "Bad Request";
        bool tq = p->step >= TQ_QUEUES;
        if (tq && (r->code == AF__TASKQUEUE__TASK_QUEUE_SERVICE_ERROR__ERROR_CODE__UNKNOWN_QUEUE ||
                   r->code == AF__TASKQUEUE__TASK_QUEUE_SERVICE_ERROR__ERROR_CODE__UNKNOWN_TASK))
            status = 404, reason = "Not Found";
        if (tq && r->code == AF__TASKQUEUE__TASK_QUEUE_SERVICE_ERROR__ERROR_CODE__INTERNAL_ERROR)
            status = 500, reason = "Internal Server Error";
        if (!tq && p->step <= DS_DELETE &&
            r->code == AF__DATASTORE__ERROR__ERROR_CODE__INTERNAL_ERROR)
            status = 500, reason = "Internal Server Error";
    }
    if (r->len)
        af_console_error_page(p->req, status, reason, "%.*s", (int)r->len, (const char *)r->data);
    else
        af_console_error_page(p->req, status, reason, "the service failed (see appfront's log)");
}

/* ---- the overview --------------------------------------------------------------- */

void af_console_overview(struct af_console *c, struct evhttp_request *req)
{
    const struct af_server *srv = c->srv;
    struct evbuffer *b = af_console_page_begin("Overview");
    evbuffer_add_printf(b, "<p>Application <b>");
    af_html_text(b, srv->app_id);
    evbuffer_add_printf(b, "</b>; API server on port %d.</p>\n", srv->api_port);
    if (srv->n_modules == 0)
        evbuffer_add_printf(b, "<p>No modules: appfront serves the API alone.</p>\n");
    for (size_t i = 0; i < srv->n_modules; i++) {
        const struct af_module *m = srv->modules[i];
        evbuffer_add_printf(b, "<h2>Module ");
        af_html_text(b, m->name);
        evbuffer_add_printf(b, "%s</h2>\n<p>Version ", m == srv->module ? " (default)" : "");
        af_html_text(b, m->version);
        evbuffer_add_printf(b, ", port %d", srv->main_ports[i]->port);
        if (srv->direct_ports[i])
            evbuffer_add_printf(b, ", direct port %d", srv->direct_ports[i]->port);
        evbuffer_add_printf(b, ", %d request(s) waiting.</p>\n", m->queue_len);
        evbuffer_add_printf(b, "<table><tr><th>Instance</th><th>State</th><th>PID</th>"
                               "<th>Active requests</th></tr>\n");
        const struct af_instance *inst;
        TAILQ_FOREACH(inst, &m->instances, link)
        {
            evbuffer_add_printf(b, "<tr><td>");
            af_html_text(b, inst->name);
            evbuffer_add_printf(b, "</td><td>%s</td><td>%d</td><td>%d</td></tr>\n",
                                af_admin_state_name(inst->state), (int)inst->pid,
                                inst->active + inst->active_direct);
        }
        evbuffer_add_printf(b, "</table>\n");
    }
    evbuffer_add_printf(b, "<p>Programs get this page's data as JSON: GET / without "
                           "<code>text/html</code> in <code>Accept</code>.</p>\n");
    af_console_page_send(req, b, 200, "OK");
}

/* ---- datastore ------------------------------------------------------------------ */

/* A link to a kind's entities (after: a page cursor, or NULL). */
static void kind_href(struct evbuffer *b, const char *app, const char *ns, const char *kind,
                      const char *after)
{
    evbuffer_add_printf(b, "/datastore/kind?app=");
    af_html_query(b, app, strlen(app));
    evbuffer_add_printf(b, "&amp;ns=");
    af_html_query(b, ns, strlen(ns));
    evbuffer_add_printf(b, "&amp;kind=");
    af_html_query(b, kind, strlen(kind));
    if (after) {
        evbuffer_add_printf(b, "&amp;after=");
        af_html_query(b, after, strlen(after));
    }
}

static void entity_link(struct evbuffer *b, const char *key, const char *text)
{
    evbuffer_add_printf(b, "<a href=\"/datastore/entity?key=");
    af_html_query(b, key, strlen(key));
    evbuffer_add_printf(b, "\">");
    af_html_text(b, text);
    evbuffer_add_printf(b, "</a>");
}

static void ns_text(struct evbuffer *b, const char *ns)
{
    if (*ns)
        af_html_text(b, ns);
    else
        evbuffer_add_printf(b, "(default)");
}

/* One value: keys as links, blobs as their size, a text the datastore
 * cut (a list's) with an ellipsis, each with its type. */
static void value_html(struct evbuffer *b, const Af__Admin__DsValue *v)
{
    const char *text = v->text ? v->text : "";
    if (v->key) {
        entity_link(b, v->key, text);
    } else {
        evbuffer_add_printf(b, "<code>");
        af_html_text(b, text);
        evbuffer_add_printf(b, "</code>%s", v->cut ? "&hellip;" : "");
    }
    evbuffer_add_printf(b, "<span class=\"t\">");
    af_html_text(b, v->type);
    evbuffer_add_printf(b, "</span>");
}

static void property_html(struct evbuffer *b, const Af__Admin__DsProperty *p)
{
    if (p->multiple)
        evbuffer_add_printf(b, "[");
    for (size_t i = 0; i < p->n_value; i++) {
        if (i)
            evbuffer_add_printf(b, ", ");
        value_html(b, p->value[i]);
    }
    if (p->multiple)
        evbuffer_add_printf(b, "]");
}

static void ds_kinds_page(struct af_console *c, struct evhttp_request *req, const char *qs)
{
    if (!room(c, req))
        return;
    Af__Admin__DsKindsRequest m = AF__ADMIN__DS_KINDS_REQUEST__INIT;
    call(c, pending_new(c, req, DS_KINDS), "datastore_v3", "AdminKinds", &m.base);
}

static void ds_kinds_reply(struct pending *p, const uint8_t *data, size_t len)
{
    Af__Admin__DsKindsResponse *r = af__admin__ds_kinds_response__unpack(NULL, len, data);
    struct evbuffer *b = af_console_page_begin("Datastore");
    if (!r || r->n_partition == 0)
        evbuffer_add_printf(b, "<p>The datastore holds no entities.</p>\n");
    for (size_t i = 0; r && i < r->n_partition; i++) {
        const Af__Admin__DsPartition *part = r->partition[i];
        evbuffer_add_printf(b, "<h2>Namespace ");
        ns_text(b, part->namespace_);
        evbuffer_add_printf(b, " <span class=\"t\">app ");
        af_html_text(b, part->app);
        evbuffer_add_printf(b, "</span></h2>\n<ul>\n");
        for (size_t k = 0; k < part->n_kind; k++) {
            evbuffer_add_printf(b, "<li><a href=\"");
            kind_href(b, part->app, part->namespace_, part->kind[k], NULL);
            evbuffer_add_printf(b, "\">");
            af_html_text(b, part->kind[k]);
            evbuffer_add_printf(b, "</a></li>\n");
        }
        evbuffer_add_printf(b, "</ul>\n");
    }
    if (r)
        af__admin__ds_kinds_response__free_unpacked(r, NULL);
    af_console_page_send(p->req, b, 200, "OK");
}

/* Reads a required query parameter; false after answering 400. */
bool af_console_need(struct evhttp_request *req, const char *qs, const char *name, char **out,
                     bool may_be_empty)
{
    int rc = af_form_value(qs, name, out, NULL);
    if (rc < 0) {
        af_console_error_page(req, 400, "Bad Request", "the parameter %s has a malformed %%-escape",
                              name);
        return false;
    }
    if (rc == 0 || (!may_be_empty && !**out)) {
        free(*out);
        *out = NULL;
        af_console_error_page(req, 400, "Bad Request", "the parameter %s is missing", name);
        return false;
    }
    return true;
}

static void ds_list_page(struct af_console *c, struct evhttp_request *req, const char *qs)
{
    char *app = NULL, *ns = NULL, *kind = NULL, *after = NULL;
    if (!af_console_need(req, qs, "app", &app, false) ||
        !af_console_need(req, qs, "kind", &kind, false))
        goto fail;
    if (af_form_value(qs, "ns", &ns, NULL) < 0 || af_form_value(qs, "after", &after, NULL) < 0) {
        af_console_error_page(req, 400, "Bad Request",
                              "the parameter ns or after has a malformed %%-escape");
        goto fail;
    }
    if (!room(c, req))
        goto fail;
    Af__Admin__DsListRequest m = AF__ADMIN__DS_LIST_REQUEST__INIT;
    m.app = app;
    m.namespace_ = ns ? ns : "";
    m.kind = kind;
    m.after = after && *after ? after : NULL;
    m.has_limit = m.has_text_max = true;
    m.limit = DS_PAGE;
    m.text_max = LIST_TEXT_MAX;
    struct pending *p = pending_new(c, req, DS_LIST);
    p->a = app;
    p->b = ns ? ns : af_xstrdup("");
    p->c = kind;
    p->later = m.after != NULL;
    call(c, p, "datastore_v3", "AdminList", &m.base);
    free(after);
    return;
fail:
    free(app);
    free(ns);
    free(kind);
    free(after);
}

/* The columns of a page: the property names, in order of first sight,
 * at most MAX_COLUMNS of them (*more: some were left out). The bound keeps
 * a page of entities with thousands of names each from costing the main
 * thread a quadratic scan; their entity pages show them all. */
static size_t column_names(const Af__Admin__DsListResponse *r, const char ***out, bool *more)
{
    const char **names = NULL;
    size_t n = 0;
    *more = false;
    for (size_t i = 0; i < r->n_entity; i++)
        for (size_t k = 0; k < r->entity[i]->n_property; k++) {
            const char *name = r->entity[i]->property[k]->name;
            size_t j = 0;
            while (j < n && strcmp(names[j], name) != 0)
                j++;
            if (j < n)
                continue;
            if (n == MAX_COLUMNS) {
                *more = true;
                continue;
            }
            names = af_xrealloc(names, (n + 1) * sizeof(*names));
            names[n++] = name;
        }
    *out = names;
    return n;
}

static void ds_list_reply(struct pending *p, const uint8_t *data, size_t len)
{
    Af__Admin__DsListResponse *r = af__admin__ds_list_response__unpack(NULL, len, data);
    if (!r) {
        af_console_error_page(p->req, 500, "Internal Server Error",
                              "the datastore's answer does not decode");
        return;
    }
    if (r->n_entity == 0 && !p->later) {
        af_console_error_page(p->req, 404, "Not Found",
                              "no entities of kind \"%s\" in namespace \"%s\" of app \"%s\"", p->c,
                              p->b, p->a);
        af__admin__ds_list_response__free_unpacked(r, NULL);
        return;
    }
    struct evbuffer *b = af_console_page_begin(p->c);
    evbuffer_add_printf(b, "<p>Namespace ");
    ns_text(b, p->b);
    evbuffer_add_printf(b, ", app ");
    af_html_text(b, p->a);
    evbuffer_add_printf(b, "; %zu entities on this page, in key order.</p>\n", r->n_entity);
    const char **cols;
    bool more_cols;
    size_t n_cols = column_names(r, &cols, &more_cols);
    if (more_cols)
        evbuffer_add_printf(b,
                            "<p>Only the first %d property names have a column; each "
                            "entity's page shows all of its properties.</p>\n",
                            MAX_COLUMNS);
    evbuffer_add_printf(b, "<table><tr><th>Key</th>");
    for (size_t k = 0; k < n_cols; k++) {
        evbuffer_add_printf(b, "<th>");
        af_html_text(b, cols[k]);
        evbuffer_add_printf(b, "</th>");
    }
    evbuffer_add_printf(b, "</tr>\n");
    for (size_t i = 0; i < r->n_entity; i++) {
        const Af__Admin__DsEntity *e = r->entity[i];
        evbuffer_add_printf(b, "<tr><td>");
        entity_link(b, e->key, e->path);
        evbuffer_add_printf(b, "</td>");
        for (size_t k = 0; k < n_cols; k++) {
            evbuffer_add_printf(b, "<td>");
            for (size_t j = 0; j < e->n_property; j++)
                if (strcmp(e->property[j]->name, cols[k]) == 0)
                    property_html(b, e->property[j]);
            evbuffer_add_printf(b, "</td>");
        }
        evbuffer_add_printf(b, "</tr>\n");
    }
    evbuffer_add_printf(b, "</table>\n<p>");
    if (p->later) {
        evbuffer_add_printf(b, "<a href=\"");
        kind_href(b, p->a, p->b, p->c, NULL);
        evbuffer_add_printf(b, "\">first page</a> ");
    }
    if (r->next) {
        evbuffer_add_printf(b, "<a rel=\"next\" href=\"");
        kind_href(b, p->a, p->b, p->c, r->next);
        evbuffer_add_printf(b, "\">next page</a>");
    }
    evbuffer_add_printf(b, "</p>\n");
    free(cols);
    af__admin__ds_list_response__free_unpacked(r, NULL);
    af_console_page_send(p->req, b, 200, "OK");
}

static void ds_entity_page(struct af_console *c, struct evhttp_request *req, const char *qs)
{
    char *key = NULL;
    if (!af_console_need(req, qs, "key", &key, false) || !room(c, req)) {
        free(key);
        return;
    }
    Af__Admin__DsKeyRequest m = AF__ADMIN__DS_KEY_REQUEST__INIT;
    m.key = key;
    struct pending *p = pending_new(c, req, DS_ENTITY);
    p->a = key;
    call(c, p, "datastore_v3", "AdminGet", &m.base);
}

static void ds_entity_reply(struct af_console *c, struct pending *p, const uint8_t *data,
                            size_t len)
{
    Af__Admin__DsGetResponse *r = af__admin__ds_get_response__unpack(NULL, len, data);
    if (!r || !r->entity) {
        af_console_error_page(
            p->req, r ? 404 : 500, r ? "Not Found" : "Internal Server Error",
            r ? "no entity has the key %s" : "the datastore's answer does not decode", p->a);
        if (r)
            af__admin__ds_get_response__free_unpacked(r, NULL);
        return;
    }
    const Af__Admin__DsEntity *e = r->entity;
    struct evbuffer *b = af_console_page_begin(e->path);
    evbuffer_add_printf(b, "<p>Kind <a href=\"");
    kind_href(b, e->app, e->namespace_, e->kind, NULL);
    evbuffer_add_printf(b, "\">");
    af_html_text(b, e->kind);
    evbuffer_add_printf(b, "</a>, namespace ");
    ns_text(b, e->namespace_);
    evbuffer_add_printf(b, ", app ");
    af_html_text(b, e->app);
    evbuffer_add_printf(b, ".<br>Key <code>");
    af_html_text(b, e->key);
    evbuffer_add_printf(b, "</code></p>\n<table><tr><th>Property</th><th>Value</th>"
                           "<th>Indexed</th></tr>\n");
    for (size_t i = 0; i < e->n_property; i++) {
        const Af__Admin__DsProperty *prop = e->property[i];
        evbuffer_add_printf(b, "<tr><td>");
        af_html_text(b, prop->name);
        evbuffer_add_printf(b, "</td><td>");
        property_html(b, prop);
        evbuffer_add_printf(b, "</td><td>%s</td></tr>\n", prop->indexed ? "yes" : "no");
    }
    evbuffer_add_printf(b, "</table>\n<form method=\"post\" action=\"/datastore/delete\">");
    af_console_form_token(c, b);
    evbuffer_add_printf(b, "<input type=\"hidden\" name=\"key\" value=\"");
    af_html_text(b, e->key);
    evbuffer_add_printf(b, "\"><button>Delete this entity</button></form>\n");
    af__admin__ds_get_response__free_unpacked(r, NULL);
    af_console_page_send(p->req, b, 200, "OK");
}

static void ds_delete_post(struct af_console *c, struct evhttp_request *req, const char *form)
{
    char *key = NULL;
    if (!af_console_need(req, form, "key", &key, false) || !room(c, req)) {
        free(key);
        return;
    }
    Af__Admin__DsKeyRequest m = AF__ADMIN__DS_KEY_REQUEST__INIT;
    m.key = key;
    struct pending *p = pending_new(c, req, DS_DELETE);
    p->a = key;
    call(c, p, "datastore_v3", "AdminDelete", &m.base);
}

static void ds_delete_reply(struct pending *p, const uint8_t *data, size_t len)
{
    Af__Admin__DsDeleteResponse *r = af__admin__ds_delete_response__unpack(NULL, len, data);
    bool existed = r && r->existed;
    if (r)
        af__admin__ds_delete_response__free_unpacked(r, NULL);
    if (!existed) {
        af_console_error_page(p->req, 404, "Not Found",
                              "no entity has the key %s (already deleted?)", p->a);
        return;
    }
    struct evbuffer *b = af_console_page_begin("Entity deleted");
    evbuffer_add_printf(b, "<p>The entity with key <code>");
    af_html_text(b, p->a);
    evbuffer_add_printf(b, "</code> is deleted. <a href=\"/datastore\">Back to the "
                           "datastore</a>.</p>\n");
    af_console_page_send(p->req, b, 200, "OK");
}

/* ---- memcache ------------------------------------------------------------------- */

static void mc_page(struct af_console *c, struct evhttp_request *req, const char *qs)
{
    char *key = NULL, *ns = NULL;
    size_t key_len = 0;
    if (af_form_value(qs, "key", &key, &key_len) < 0 || af_form_value(qs, "ns", &ns, NULL) < 0) {
        af_console_error_page(req, 400, "Bad Request",
                              "the parameter key or ns has a malformed %%-escape");
        goto fail;
    }
    if (!room(c, req))
        goto fail;
    Af__Memcache__MemcacheStatsRequest m = AF__MEMCACHE__MEMCACHE_STATS_REQUEST__INIT;
    struct pending *p = pending_new(c, req, MC_STATS);
    p->a = key; /* NULL: no lookup asked */
    p->a_len = key_len;
    p->b = ns;
    call(c, p, "memcache", "AdminStats", &m.base);
    return;
fail:
    free(key);
    free(ns);
}

static void mc_form(struct af_console *c, struct evbuffer *b, const char *key, size_t key_len,
                    const char *ns)
{
    evbuffer_add_printf(b, "<h2>Look up a key</h2>\n<form method=\"get\" action=\"/memcache\">"
                           "Key <input name=\"key\" value=\"");
    if (key)
        af_html_escape(b, key, key_len);
    evbuffer_add_printf(b, "\"> namespace <input name=\"ns\" value=\"");
    af_html_text(b, ns);
    evbuffer_add_printf(b, "\"> <button>Look up</button></form>\n");
    evbuffer_add_printf(b, "<h2>Flush</h2>\n<form method=\"post\" action=\"/memcache/flush\">");
    af_console_form_token(c, b);
    evbuffer_add_printf(b, "<button>Flush all items</button></form>\n");
}

static void mc_stats_reply(struct af_console *c, struct pending *p, const uint8_t *data, size_t len)
{
    Af__Memcache__MemcacheStatsResponse *r =
        af__memcache__memcache_stats_response__unpack(NULL, len, data);
    struct evbuffer *b = af_console_page_begin("Memcache");
    if (r && r->stats) {
        const Af__Memcache__MergedNamespaceStats *s = r->stats;
        uint64_t total = s->hits + s->misses;
        char ratio[32] = "none yet";
        if (total)
            snprintf(ratio, sizeof(ratio), "%.1f%%", 100.0 * (double)s->hits / (double)total);
        evbuffer_add_printf(b,
                            "<table><tr><th>Hits</th><td>%" PRIu64 "</td></tr>"
                            "<tr><th>Misses</th><td>%" PRIu64 "</td></tr>"
                            "<tr><th>Hit ratio</th><td>%s</td></tr>"
                            "<tr><th>Bytes read by hits</th><td>%" PRIu64 "</td></tr>"
                            "<tr><th>Items</th><td>%" PRIu64 "</td></tr>"
                            "<tr><th>Bytes</th><td>%" PRIu64 "</td></tr>"
                            "<tr><th>Oldest item age</th><td>%" PRIu32 " s</td></tr></table>\n",
                            s->hits, s->misses, ratio, s->byte_hits, s->items, s->bytes,
                            s->oldest_item_age);
    } else {
        evbuffer_add_printf(b, "<p class=\"err\">memcache's statistics do not decode.</p>\n");
    }
    if (r)
        af__memcache__memcache_stats_response__free_unpacked(r, NULL);
    mc_form(c, b, p->a, p->a_len, p->b);
    if (!p->a) {
        af_console_page_send(p->req, b, 200, "OK");
        return;
    }
    /* The lookup is the second step: the page so far waits with it. */
    Af__Admin__McLookupRequest m = AF__ADMIN__MC_LOOKUP_REQUEST__INIT;
    m.has_key = true;
    m.key.data = (uint8_t *)p->a;
    m.key.len = p->a_len;
    m.namespace_ = p->b ? p->b : "";
    struct pending *next = pending_new(c, p->req, MC_LOOKUP);
    next->body = b;
    next->a = p->a;
    next->a_len = p->a_len;
    next->b = p->b;
    p->a = p->b = NULL;
    p->req = NULL; /* now next's */
    call(c, next, "memcache", "AdminLookup", &m.base);
}

static void mc_lookup_reply(struct pending *p, const uint8_t *data, size_t len)
{
    Af__Admin__McLookupResponse *r = af__admin__mc_lookup_response__unpack(NULL, len, data);
    struct evbuffer *b = p->body;
    p->body = NULL;
    evbuffer_add_printf(b, "<h2>Key <code>");
    af_html_escape(b, p->a, p->a_len);
    evbuffer_add_printf(b, "</code></h2>\n");
    int status = 200;
    if (!r || !r->found) {
        evbuffer_add_printf(b, "<p>No item has this key%s.</p>\n",
                            p->b && *p->b ? " in this namespace" : "");
        status = 404;
    } else {
        const char *v = (const char *)r->value.data;
        size_t n = r->value.len;
        evbuffer_add_printf(b, "<p>Flags %" PRIu32 ", %zu bytes, ", r->flags, n);
        if (r->expires)
            time_cell(b, r->expires * 1000000);
        else
            evbuffer_add_printf(b, "never expires");
        evbuffer_add_printf(b, ".</p>\n");
        if (n <= MC_SHOW_MAX && af_utf8_valid(v, n) && !memchr(v, '\0', n)) {
            evbuffer_add_printf(b, "<pre><code>");
            af_html_escape(b, v, n);
            evbuffer_add_printf(b, "</code></pre>\n");
        } else {
            evbuffer_add_printf(b, "<p>A binary value of %zu bytes (not shown).</p>\n", n);
        }
    }
    if (r)
        af__admin__mc_lookup_response__free_unpacked(r, NULL);
    af_console_page_send(p->req, b, status, status == 200 ? "OK" : "Not Found");
}

static void mc_flush_post(struct af_console *c, struct evhttp_request *req, const char *form)
{
    if (!room(c, req))
        return;
    Af__Memcache__MemcacheFlushRequest m = AF__MEMCACHE__MEMCACHE_FLUSH_REQUEST__INIT;
    call(c, pending_new(c, req, MC_FLUSH), "memcache", "AdminFlush", &m.base);
}

static void mc_flush_reply(struct pending *p)
{
    struct evbuffer *b = af_console_page_begin("Memcache flushed");
    evbuffer_add_printf(b, "<p>Every item is gone. <a href=\"/memcache\">Back to "
                           "memcache</a>.</p>\n");
    af_console_page_send(p->req, b, 200, "OK");
}

/* ---- task queues --------------------------------------------------------------- */

static void queue_href(struct evbuffer *b, const char *queue)
{
    evbuffer_add_printf(b, "/taskqueue/queue?name=");
    af_html_query(b, queue, strlen(queue));
}

static void tq_queues_page(struct af_console *c, struct evhttp_request *req, const char *qs)
{
    if (!room(c, req))
        return;
    Af__Admin__TqQueuesRequest m = AF__ADMIN__TQ_QUEUES_REQUEST__INIT;
    call(c, pending_new(c, req, TQ_QUEUES), "taskqueue", "AdminQueues", &m.base);
}

static void tq_queues_reply(struct pending *p, const uint8_t *data, size_t len)
{
    Af__Admin__TqQueuesResponse *r = af__admin__tq_queues_response__unpack(NULL, len, data);
    if (!r) {
        af_console_error_page(p->req, 500, "Internal Server Error",
                              "the taskqueue's answer does not decode");
        return;
    }
    struct evbuffer *b = af_console_page_begin("Task queues");
    evbuffer_add_printf(b, "<table><tr><th>Queue</th><th>Mode</th><th>Rate</th><th>Tasks</th>"
                           "<th>Oldest ETA</th></tr>\n");
    for (size_t i = 0; i < r->n_queue; i++) {
        const Af__Admin__TqQueue *q = r->queue[i];
        evbuffer_add_printf(b, "<tr><td><a href=\"");
        queue_href(b, q->name);
        evbuffer_add_printf(b, "\">");
        af_html_text(b, q->name);
        evbuffer_add_printf(b, "</a></td><td>");
        af_html_text(b, q->mode);
        evbuffer_add_printf(b, "</td><td>");
        af_html_text(b, q->rate ? q->rate : "");
        evbuffer_add_printf(b, "</td><td>%" PRId64 "</td><td>", q->tasks);
        if (q->has_oldest_eta_usec)
            time_cell(b, q->oldest_eta_usec);
        evbuffer_add_printf(b, "</td></tr>\n");
    }
    evbuffer_add_printf(b, "</table>\n");
    af__admin__tq_queues_response__free_unpacked(r, NULL);
    af_console_page_send(p->req, b, 200, "OK");
}

static void tq_tasks_page(struct af_console *c, struct evhttp_request *req, const char *qs)
{
    char *name = NULL;
    if (!af_console_need(req, qs, "name", &name, false) || !room(c, req)) {
        free(name);
        return;
    }
    Af__Admin__TqTasksRequest m = AF__ADMIN__TQ_TASKS_REQUEST__INIT;
    m.queue = name;
    m.has_limit = true;
    m.limit = TQ_PAGE;
    struct pending *p = pending_new(c, req, TQ_TASKS);
    p->a = name;
    call(c, p, "taskqueue", "AdminTasks", &m.base);
}

/* A form that posts to action with the queue (and a task) as fields. */
static void tq_button(struct af_console *c, struct evbuffer *b, const char *action,
                      const char *queue, const char *task, const char *label)
{
    evbuffer_add_printf(b, "<form class=\"inline\" method=\"post\" action=\"%s\">", action);
    af_console_form_token(c, b);
    evbuffer_add_printf(b, "<input type=\"hidden\" name=\"queue\" value=\"");
    af_html_text(b, queue);
    evbuffer_add_printf(b, "\">");
    if (task) {
        evbuffer_add_printf(b, "<input type=\"hidden\" name=\"task\" value=\"");
        af_html_text(b, task);
        evbuffer_add_printf(b, "\">");
    }
    evbuffer_add_printf(b, "<button>%s</button></form>", label);
}

static void tq_tasks_reply(struct af_console *c, struct pending *p, const uint8_t *data, size_t len)
{
    Af__Admin__TqTasksResponse *r = af__admin__tq_tasks_response__unpack(NULL, len, data);
    if (!r) {
        af_console_error_page(p->req, 500, "Internal Server Error",
                              "the taskqueue's answer does not decode");
        return;
    }
    struct evbuffer *b = af_console_page_begin(p->a);
    evbuffer_add_printf(b, "<p>%" PRId64 " task(s)", r->total);
    if ((int64_t)r->n_task < r->total)
        evbuffer_add_printf(b, ", the first %zu by ETA shown", r->n_task);
    evbuffer_add_printf(b, ". ");
    tq_button(c, b, "/taskqueue/purge", p->a, NULL, "Purge the queue");
    evbuffer_add_printf(b, "</p>\n<table><tr><th>Name</th><th>ETA</th><th>Method</th>"
                           "<th>URL</th><th>Retries</th><th></th></tr>\n");
    for (size_t i = 0; i < r->n_task; i++) {
        const Af__Admin__TqTask *t = r->task[i];
        evbuffer_add_printf(b, "<tr><td>");
        af_html_text(b, t->name);
        evbuffer_add_printf(b, "</td><td>");
        time_cell(b, t->eta_usec);
        evbuffer_add_printf(b, "</td><td>");
        af_html_text(b, t->method);
        evbuffer_add_printf(b, "</td><td><code>");
        af_html_text(b, t->url);
        evbuffer_add_printf(b, "</code></td><td>%d</td><td>", t->retry_count);
        tq_button(c, b, "/taskqueue/delete", p->a, t->name, "Delete");
        evbuffer_add_printf(b, "</td></tr>\n");
    }
    evbuffer_add_printf(b, "</table>\n");
    af__admin__tq_tasks_response__free_unpacked(r, NULL);
    af_console_page_send(p->req, b, 200, "OK");
}

static void tq_remove_post(struct af_console *c, struct evhttp_request *req, const char *form,
                           bool purge)
{
    char *queue = NULL, *task = NULL;
    if (!af_console_need(req, form, "queue", &queue, false) ||
        (!purge && !af_console_need(req, form, "task", &task, false)) || !room(c, req)) {
        free(queue);
        free(task);
        return;
    }
    Af__Admin__TqTaskRequest m = AF__ADMIN__TQ_TASK_REQUEST__INIT;
    m.queue = queue;
    m.task = task;
    struct pending *p = pending_new(c, req, purge ? TQ_PURGE : TQ_DELETE);
    p->a = queue;
    p->c = task;
    call(c, p, "taskqueue", purge ? "AdminPurge" : "AdminDeleteTask", &m.base);
}

static void tq_delete_post(struct af_console *c, struct evhttp_request *req, const char *form)
{
    tq_remove_post(c, req, form, false);
}

static void tq_purge_post(struct af_console *c, struct evhttp_request *req, const char *form)
{
    tq_remove_post(c, req, form, true);
}

static void tq_removed_reply(struct pending *p)
{
    struct evbuffer *b =
        af_console_page_begin(p->step == TQ_PURGE ? "Queue purged" : "Task deleted");
    evbuffer_add_printf(b, "<p>");
    if (p->step == TQ_PURGE) {
        evbuffer_add_printf(b, "Every task of queue <code>");
    } else {
        evbuffer_add_printf(b, "Task <code>");
        af_html_text(b, p->c);
        evbuffer_add_printf(b, "</code> of queue <code>");
    }
    af_html_text(b, p->a);
    evbuffer_add_printf(b, "</code> %s. <a href=\"",
                        p->step == TQ_PURGE ? "is gone" : "is deleted");
    queue_href(b, p->a);
    evbuffer_add_printf(b, "\">Back to the queue</a>.</p>\n");
    af_console_page_send(p->req, b, 200, "OK");
}

/* ---- requests appfront sends its app ------------------------------------------- */

struct af_console_wait *af_console_wait_new(struct af_console *c, struct evhttp_request *req,
                                            const char *what, const char *back_href,
                                            const char *back_text)
{
    if (c->n_waiting >= AF_CONSOLE_MAX_PENDING) {
        af_console_error_page(req, 503, "Service Unavailable",
                              "%d requests to the app are already waiting; try again when one "
                              "has answered",
                              AF_CONSOLE_MAX_PENDING);
        return NULL;
    }
    struct af_console_wait *w = af_xcalloc(1, sizeof(*w));
    w->c = c;
    w->req = req;
    w->what = af_xstrdup(what);
    w->back_href = back_href;
    w->back_text = back_text;
    return w;
}

void af_console_wait_park(struct af_console_wait *w, struct af_selfreq_run *run, const char *err)
{
    struct af_console *c = w->c;
    if (!run) {
        af_console_error_page(w->req, 500, "Internal Server Error", "%s", err);
        free(w->what);
        free(w);
        return;
    }
    w->run = run;
    w->next = c->waiting;
    c->waiting = w;
    c->n_waiting++;
}

void af_console_wait_done(void *arg, int status, long elapsed_ms)
{
    struct af_console_wait *w = arg;
    struct af_console *c = w->c;
    for (struct af_console_wait **pp = &c->waiting; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            c->n_waiting--;
            break;
        }
    struct evbuffer *b = af_console_page_begin("Sent to the app");
    evbuffer_add_printf(b, "<p><code>");
    af_html_text(b, w->what);
    if (status)
        evbuffer_add_printf(b, "</code> answered <b%s>%d</b> in %ld ms.</p>\n",
                            status >= 400 ? " class=\"err\"" : "", status, elapsed_ms);
    else
        evbuffer_add_printf(b,
                            "</code> got <b class=\"err\">no answer</b> (after %ld ms): "
                            "see appfront's log.</p>\n",
                            elapsed_ms);
    evbuffer_add_printf(b, "<p><a href=\"%s\">%s</a>.</p>\n", w->back_href, w->back_text);
    af_console_page_send(w->req, b, 200, "OK");
    free(w->what);
    free(w);
}

/* ---- replies ------------------------------------------------------------------- */

static void on_reply(void *arg, const struct af_api_internal_reply *r)
{
    struct af_console *c = arg;
    if (r->notice)
        return;
    struct pending **pp = &c->pending;
    while (*pp && (*pp)->tag != r->tag)
        pp = &(*pp)->next;
    struct pending *p = *pp;
    if (!p)
        return;
    *pp = p->next;
    c->n_pending--;
    if (!r->ok) {
        failed_page(p, r);
        pending_free(p);
        return;
    }
    switch (p->step) {
    case DS_KINDS:
        ds_kinds_reply(p, r->data, r->len);
        break;
    case DS_LIST:
        ds_list_reply(p, r->data, r->len);
        break;
    case DS_ENTITY:
        ds_entity_reply(c, p, r->data, r->len);
        break;
    case DS_DELETE:
        ds_delete_reply(p, r->data, r->len);
        break;
    case MC_STATS:
        mc_stats_reply(c, p, r->data, r->len);
        break;
    case MC_LOOKUP:
        mc_lookup_reply(p, r->data, r->len);
        break;
    case MC_FLUSH:
        mc_flush_reply(p);
        break;
    case TQ_QUEUES:
        tq_queues_reply(p, r->data, r->len);
        break;
    case TQ_TASKS:
        tq_tasks_reply(c, p, r->data, r->len);
        break;
    case TQ_DELETE:
    case TQ_PURGE:
        tq_removed_reply(p);
        break;
    }
    pending_free(p);
}

/* ---- routing ------------------------------------------------------------------- */

typedef void (*page_fn)(struct af_console *c, struct evhttp_request *req, const char *params);

static const struct route {
    const char *path;
    bool post; /* changes state: POST with the token; else GET (or HEAD) */
    page_fn fn;
} routes[] = {
    {"/datastore", false, ds_kinds_page},
    {"/datastore/kind", false, ds_list_page},
    {"/datastore/entity", false, ds_entity_page},
    {"/datastore/delete", true, ds_delete_post},
    {"/memcache", false, mc_page},
    {"/memcache/flush", true, mc_flush_post},
    {"/taskqueue", false, tq_queues_page},
    {"/taskqueue/queue", false, tq_tasks_page},
    {"/taskqueue/delete", true, tq_delete_post},
    {"/taskqueue/purge", true, tq_purge_post},
    {"/cron", false, af_console_cron_page},
    {"/cron/run", true, af_console_cron_run},
    {"/mail", false, af_console_mail_page},
    {"/mail/send", true, af_console_mail_send},
};

/* Compares in time that depends on the length only, which is public. */
static bool token_ok(const struct af_console *c, const char *given)
{
    size_t n = strlen(c->token);
    if (n == 0 || !given || strlen(given) != n)
        return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(c->token[i] ^ given[i]);
    return diff == 0;
}

/* The body of a POST as a string (owned), or NULL after answering 413. */
static char *form_body(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    if (n > FORM_MAX_BYTES) {
        af_console_error_page(req, 413, "Payload Too Large",
                              "a console form is at most %d bytes, not %zu", FORM_MAX_BYTES, n);
        return NULL;
    }
    char *s = af_xmalloc(n + 1);
    evbuffer_copyout(in, s, n);
    s[n] = '\0';
    return s;
}

bool af_console_handle(struct af_console *c, struct evhttp_request *req, const char *path)
{
    const struct route *rt = NULL;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (strcmp(routes[i].path, path) == 0)
            rt = &routes[i];
    if (!rt)
        return false;
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    bool is_post = method == EVHTTP_REQ_POST;
    if (rt->post != is_post) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                          rt->post ? "POST" : "GET, HEAD");
        af_console_error_page(req, 405, "Method Not Allowed",
                              rt->post
                                  ? "%s changes state: send it as a POST from the console's form"
                                  : "%s is a page to GET; it changes nothing",
                              path);
        return true;
    }
    if (!rt->post) {
        rt->fn(c, req, evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req)));
        return true;
    }
    char *form = form_body(req);
    if (!form)
        return true;
    char *token = NULL;
    if (af_form_value(form, "token", &token, NULL) <= 0 || !token_ok(c, token)) {
        af_console_error_page(
            req, 403, "Forbidden",
            "this request does not carry the console's token: send it from a form of "
            "the console's own pages (a page of another site cannot)");
    } else {
        rt->fn(c, req, form);
    }
    free(token);
    free(form);
    return true;
}

/* ---- life ---------------------------------------------------------------------- */

struct af_console *af_console_new(struct af_server *srv, struct af_api *api)
{
    struct af_console *c = af_xcalloc(1, sizeof(*c));
    c->srv = srv;
    c->api = api;
    c->consumer = -1;
    uint8_t raw[16];
    if (getrandom(raw, sizeof(raw), 0) == (ssize_t)sizeof(raw)) {
        for (size_t i = 0; i < sizeof(raw); i++)
            snprintf(c->token + 2 * i, 3, "%02x", raw[i]);
    } else {
        /* No token: every POST is refused, which is safe. */
        af_warn("admin: no random bytes for the console's token; its forms will not work");
    }
    if (api && (c->consumer = af_api_internal_subscribe(api, srv->base, on_reply, c)) < 0)
        af_warn("admin: the console cannot hear the services; its service pages answer 503");
    if (srv->n_modules > 0) {
        c->selfreq = af_selfreq_new(srv);
        af_console_cron_check(c);
    }
    return c;
}

void af_console_free(struct af_console *c)
{
    if (!c)
        return;
    while (c->pending) {
        struct pending *p = c->pending;
        c->pending = p->next;
        af_console_error_page(p->req, 503, "Service Unavailable", "appfront is shutting down");
        pending_free(p);
    }
    while (c->waiting) {
        struct af_console_wait *w = c->waiting;
        c->waiting = w->next;
        af_selfreq_cancel(c->selfreq, w->run);
        af_console_error_page(w->req, 503, "Service Unavailable", "appfront is shutting down");
        free(w->what);
        free(w);
    }
    af_selfreq_free(c->selfreq);
    af_api_internal_unsubscribe(c->api, c->consumer);
    free(c);
}

const char *af_console_token(const struct af_console *c)
{
    return c->token;
}
