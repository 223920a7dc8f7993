/*
 * logservice — the "logservice" service: application log lines.
 *
 * Flush: the client libraries buffer an app's log lines and send them as an
 * encoded UserAppLogGroup inside FlushRequest.logs, once a second or so.
 * Each line is printed on stderr attributed to its request (the envelope's
 * request_id, the same id as X-AppEngine-API-Ticket) with its own level and
 * time, and kept in memory for Read.
 *
 * Memory is bounded: the newest LOG_MAX_LINES lines whose text totals at
 * most LOG_MAX_BYTES are kept, older ones are dropped first (a ring), and a
 * single message longer than LOG_MAX_MESSAGE is cut. A development server
 * needs recent logs, not an archive.
 *
 * Read: the API server sees API calls, not HTTP requests, so a "request
 * log" here is the group of app log lines that share a request_id. Its times
 * come from the first and last line; the HTTP fields (method, resource,
 * status, ip, ...) are unknown to the backend and left empty or zero. See
 * docs/services.md for what else is partial.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logservice.pb-c.h"

#include "apiserver/service.h"
#include "common/log.h"
#include "common/xalloc.h"

#define LOG_MAX_LINES 10000
/* Half the envelope's 32 MiB limit (AF_API_MAX_MESSAGE), so even a Read
 * that returns every kept line with its framing still fits one response. */
#define LOG_MAX_BYTES (16u << 20)
/* The Go library already cuts lines at 8 KiB; the same bound here holds
 * for every client. */
#define LOG_MAX_MESSAGE (8u << 10)
/* Request ids are short ("dev~app/default.1.0", a hex id); a longer one is
 * cut rather than trusted. */
#define LOG_MAX_REQUEST_ID 256

/* Read answers this many request logs when the caller gives no count, and
 * never more than LOG_READ_MAX_COUNT, as production does. */
#define LOG_READ_DEFAULT_COUNT 20
#define LOG_READ_MAX_COUNT 1000

#define LOGERR(name) AF__LOG__LOG_SERVICE_ERROR__ERROR_CODE__##name

struct log_line {
    char *request_id;
    char *message;
    int64_t time_usec;
    int level;    /* 0 debug .. 4 critical, clamped */
    uint64_t seq; /* arrival order, unique: orders lines and pages */
};

struct log_state {
    struct log_line ring[LOG_MAX_LINES];
    size_t head;  /* index of the oldest line */
    size_t count; /* lines held */
    size_t bytes; /* message + request id bytes held */
    uint64_t next_seq;
    char *app_id;
    char *module;
    char *version;
};

static void *log_create(const struct af_api_options *opts)
{
    struct log_state *st = af_xcalloc(1, sizeof(*st));
    st->app_id = af_xstrdup(opts && opts->app_id ? opts->app_id : "");
    st->module = af_xstrdup(opts && opts->module && opts->module[0] ? opts->module : "default");
    st->version = af_xstrdup(opts && opts->version && opts->version[0] ? opts->version : "1");
    st->next_seq = 1;
    return st;
}

static void drop_oldest(struct log_state *st)
{
    struct log_line *l = &st->ring[st->head];
    st->bytes -= strlen(l->message) + strlen(l->request_id);
    free(l->message);
    free(l->request_id);
    memset(l, 0, sizeof(*l));
    st->head = (st->head + 1) % LOG_MAX_LINES;
    st->count--;
}

static void log_clear(void *state)
{
    struct log_state *st = state;
    while (st->count > 0)
        drop_oldest(st);
    st->head = 0;
}

static void log_destroy(void *state)
{
    struct log_state *st = state;
    if (!st)
        return;
    log_clear(st);
    free(st->app_id);
    free(st->module);
    free(st->version);
    free(st);
}

/* App log levels are 0..4 (DEBUG..CRITICAL) on the wire, the same order as
 * enum af_log_level; anything else is clamped rather than refused so a
 * line is never lost to a bad level. */
static int clamp_level(int64_t level)
{
    if (level < 0)
        return 0;
    if (level > 4)
        return 4;
    return (int)level;
}

static const char *const level_names[] = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"};

/*
 * Makes a message fit for one stderr log entry: trailing newlines go,
 * inner newlines become an indented continuation (stack traces stay
 * readable and cannot pass for a log line of their own), other control
 * bytes become '?', so an app cannot move the terminal's cursor. Returns a
 * malloc'd string.
 */
static char *printable(const char *msg)
{
    size_t len = strlen(msg);
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
        len--;
    size_t newlines = 0;
    for (size_t i = 0; i < len; i++)
        newlines += msg[i] == '\n';
    char *out = af_xmalloc(len + newlines * 4 + 1);
    char *o = out;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)msg[i];
        if (c == '\n') {
            memcpy(o, "\n    ", 5);
            o += 5;
        } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
            *o++ = '?';
        } else {
            *o++ = (char)c;
        }
    }
    *o = '\0';
    return out;
}

/* The line's own time, not the time of the flush, because lines arrive up
 * to a second (or a minute, on retry) after they were written. */
static void print_line(const struct log_line *l)
{
    if (!af_log_enabled((enum af_log_level)l->level))
        return;
    time_t secs = (time_t)(l->time_usec / 1000000);
    int ms = (int)((l->time_usec % 1000000) / 1000);
    struct tm tm;
    char when[16];
    if (l->time_usec >= 0 && localtime_r(&secs, &tm))
        snprintf(when, sizeof(when), "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    else
        snprintf(when, sizeof(when), "??:??:??.???");
    char *text = printable(l->message);
    af_log_raw("%-8s %s [%s] %s", level_names[l->level], when,
               l->request_id[0] ? l->request_id : "no request", text);
    free(text);
}

/* Takes ownership of nothing: copies what it keeps, within the bounds. */
static void keep_line(struct log_state *st, const char *request_id, int64_t time_usec,
                      int64_t level, const char *message)
{
    size_t mlen = strnlen(message, LOG_MAX_MESSAGE + 1);
    char *msg;
    if (mlen > LOG_MAX_MESSAGE) {
        size_t full = strlen(message);
        char suffix[48];
        int slen = snprintf(suffix, sizeof(suffix), "...(length %zu)", full);
        size_t keep = LOG_MAX_MESSAGE - (size_t)slen;
        msg = af_xmalloc(LOG_MAX_MESSAGE + 1);
        memcpy(msg, message, keep);
        memcpy(msg + keep, suffix, (size_t)slen + 1);
    } else {
        msg = af_xstrndup(message, mlen);
    }
    struct log_line l = {
        .request_id = af_xstrndup(request_id, LOG_MAX_REQUEST_ID),
        .message = msg,
        .time_usec = time_usec,
        .level = clamp_level(level),
        .seq = st->next_seq++,
    };
    size_t size = strlen(l.message) + strlen(l.request_id);
    print_line(&l);

    while (st->count > 0 && (st->count == LOG_MAX_LINES || st->bytes + size > LOG_MAX_BYTES))
        drop_oldest(st);
    st->ring[(st->head + st->count) % LOG_MAX_LINES] = l;
    st->count++;
    st->bytes += size;
}

static void flush(void *state, const struct af_call *call, struct af_result *res)
{
    struct log_state *st = state;
    Af__Log__FlushRequest *req =
        af__log__flush_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        af_result_app_error(res, LOGERR(INVALID_REQUEST), "logservice: cannot decode FlushRequest");
        return;
    }
    Af__Log__UserAppLogGroup *group = NULL;
    if (req->has_logs && req->logs.len > 0) {
        group = af__log__user_app_log_group__unpack(NULL, req->logs.len, req->logs.data);
        if (!group) {
            af_result_app_error(res, LOGERR(INVALID_REQUEST),
                                "logservice: FlushRequest.logs (%zu bytes) is not a "
                                "UserAppLogGroup",
                                req->logs.len);
            goto done;
        }
        for (size_t i = 0; i < group->n_log_line; i++) {
            const Af__Log__UserAppLogLine *in = group->log_line[i];
            keep_line(st, call->request_id ? call->request_id : "", in->timestamp_usec, in->level,
                      in->message);
        }
        af__log__user_app_log_group__free_unpacked(group, NULL);
    }
    /* The response is base.VoidProto: empty. */
    af_result_ok(res, NULL, 0);
done:
    af__log__flush_request__free_unpacked(req, NULL);
}

/* ---- Read ---------------------------------------------------------------- */

/* The lines of one request id, as a run in the sorted line array. */
struct req_group {
    struct log_line **lines; /* sorted by seq */
    size_t n;
    int64_t start_usec, end_usec;
    int max_level;
    uint64_t last_seq; /* orders groups newest first and is the page offset */
};

static int by_request_then_seq(const void *a, const void *b)
{
    const struct log_line *x = *(struct log_line *const *)a;
    const struct log_line *y = *(struct log_line *const *)b;
    int c = strcmp(x->request_id, y->request_id);
    if (c)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int by_last_seq_desc(const void *a, const void *b)
{
    const struct req_group *x = a, *y = b;
    return x->last_seq > y->last_seq ? -1 : x->last_seq < y->last_seq;
}

/* A version filter matches "1" or the production form "1.MINOR", and an
 * empty one (the Go library sends its own version id, which is empty when
 * the app does not know it) matches every version. */
static bool version_matches(const struct log_state *st, const char *v)
{
    if (!v || !v[0] || strcmp(v, st->version) == 0)
        return true;
    size_t n = strlen(st->version);
    return strncmp(v, st->version, n) == 0 && v[n] == '.';
}

/* True when the request's version filters (version_id for the default
 * module, module_version for any) name this app's module and version, or
 * there are none. */
static bool read_selects_us(const struct log_state *st, const Af__Log__LogReadRequest *req)
{
    if (req->n_version_id == 0 && req->n_module_version == 0)
        return true;
    for (size_t i = 0; i < req->n_version_id; i++)
        if (strcmp(st->module, "default") == 0 && version_matches(st, req->version_id[i]))
            return true;
    for (size_t i = 0; i < req->n_module_version; i++) {
        const Af__Log__LogModuleVersion *mv = req->module_version[i];
        const char *m = mv->module_id ? mv->module_id : "default";
        if (strcmp(m, st->module) == 0 && version_matches(st, mv->version_id))
            return true;
    }
    return false;
}

static bool group_selected(const struct req_group *g, const Af__Log__LogReadRequest *req)
{
    if (req->has_start_time && g->end_usec < req->start_time)
        return false;
    if (req->has_end_time && g->end_usec >= req->end_time)
        return false;
    if (req->has_minimum_log_level && g->max_level < req->minimum_log_level)
        return false;
    if (req->n_request_id == 0)
        return true;
    const char *id = g->lines[0]->request_id;
    size_t len = strlen(id);
    for (size_t i = 0; i < req->n_request_id; i++)
        if (req->request_id[i].len == len && memcmp(req->request_id[i].data, id, len) == 0)
            return true;
    return false;
}

/* Our offsets are the decimal last_seq of the last request log returned:
 * stable while older lines are dropped and new ones arrive. */
static int parse_offset(const Af__Log__LogReadRequest *req, uint64_t *out)
{
    *out = UINT64_MAX;
    if (!req->offset || !req->offset->has_request_id)
        return 0;
    const ProtobufCBinaryData *b = &req->offset->request_id;
    if (b->len == 0 || b->len > 20)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < b->len; i++) {
        if (b->data[i] < '0' || b->data[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(b->data[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* What one RequestLog needs besides the message itself; freed after the
 * response is packed. */
struct out_log {
    Af__Log__RequestLog log;
    Af__Log__LogOffset offset;
    char offset_text[24];
    Af__Log__LogLine *line_store;
    Af__Log__LogLine **line_ptrs;
};

static void fill_request_log(const struct log_state *st, const struct req_group *g,
                             const Af__Log__LogReadRequest *req, struct out_log *o)
{
    Af__Log__RequestLog *rl = &o->log;
    af__log__request_log__init(rl);
    af__log__log_offset__init(&o->offset);
    rl->app_id = st->app_id;
    rl->module_id = st->module;
    rl->version_id = st->version;
    rl->request_id.data = (uint8_t *)g->lines[0]->request_id;
    rl->request_id.len = strlen(g->lines[0]->request_id);
    snprintf(o->offset_text, sizeof(o->offset_text), "%" PRIu64, g->last_seq);
    o->offset.has_request_id = true;
    o->offset.request_id.data = (uint8_t *)o->offset_text;
    o->offset.request_id.len = strlen(o->offset_text);
    rl->offset = &o->offset;
    /* Unknown to the API backend: it never sees the HTTP request. */
    rl->ip = "";
    rl->method = "";
    rl->resource = "";
    rl->http_version = "";
    rl->url_map_entry = "";
    rl->combined = "";
    rl->status = 0;
    rl->response_size = 0;
    rl->mcycles = 0;
    rl->start_time = g->start_usec;
    rl->end_time = g->end_usec;
    rl->latency = g->end_usec - g->start_usec;

    if (!req->has_include_app_logs || !req->include_app_logs)
        return;
    size_t n = g->n;
    if (req->has_app_logs_per_request && req->app_logs_per_request >= 0 &&
        (size_t)req->app_logs_per_request < n) {
        n = (size_t)req->app_logs_per_request;
        rl->has_lines_incomplete = true;
        rl->lines_incomplete = true;
    }
    o->line_store = af_xcalloc(n, sizeof(*o->line_store));
    o->line_ptrs = af_xcalloc(n, sizeof(*o->line_ptrs));
    for (size_t i = 0; i < n; i++) {
        Af__Log__LogLine *ll = &o->line_store[i];
        af__log__log_line__init(ll);
        ll->time = g->lines[i]->time_usec;
        ll->level = g->lines[i]->level;
        ll->log_message = g->lines[i]->message;
        o->line_ptrs[i] = ll;
    }
    rl->n_line = n;
    rl->line = o->line_ptrs;
}

static void read_logs(void *state, const struct af_call *call, struct af_result *res)
{
    struct log_state *st = state;
    Af__Log__LogReadRequest *req =
        af__log__log_read_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        af_result_app_error(res, LOGERR(INVALID_REQUEST),
                            "logservice: cannot decode LogReadRequest");
        return;
    }
    uint64_t after;
    if (parse_offset(req, &after) < 0) {
        af_result_app_error(res, LOGERR(INVALID_REQUEST),
                            "logservice: the offset was not made by this server");
        af__log__log_read_request__free_unpacked(req, NULL);
        return;
    }
    size_t count = LOG_READ_DEFAULT_COUNT;
    if (req->has_count && req->count > 0)
        count = req->count > LOG_READ_MAX_COUNT ? LOG_READ_MAX_COUNT : (size_t)req->count;

    struct log_line **lines = NULL;
    struct req_group *groups = NULL;
    size_t n_groups = 0;
    if (st->count > 0 && read_selects_us(st, req)) {
        lines = af_xcalloc(st->count, sizeof(*lines));
        for (size_t i = 0; i < st->count; i++)
            lines[i] = &st->ring[(st->head + i) % LOG_MAX_LINES];
        qsort(lines, st->count, sizeof(*lines), by_request_then_seq);
        groups = af_xcalloc(st->count, sizeof(*groups));
        for (size_t i = 0; i < st->count; i++) {
            struct log_line *l = lines[i];
            struct req_group *g = &groups[n_groups - (n_groups > 0)];
            if (n_groups == 0 || strcmp(g->lines[0]->request_id, l->request_id) != 0) {
                g = &groups[n_groups++];
                g->lines = &lines[i];
                g->start_usec = l->time_usec;
                g->end_usec = l->time_usec;
                g->max_level = l->level;
            }
            g->n++;
            g->last_seq = l->seq;
            if (l->time_usec < g->start_usec)
                g->start_usec = l->time_usec;
            if (l->time_usec > g->end_usec)
                g->end_usec = l->time_usec;
            if (l->level > g->max_level)
                g->max_level = l->level;
        }
        qsort(groups, n_groups, sizeof(*groups), by_last_seq_desc);
    }

    struct out_log *outs = af_xcalloc(count, sizeof(*outs));
    Af__Log__RequestLog **ptrs = af_xcalloc(count, sizeof(*ptrs));
    size_t n_out = 0;
    bool more = false;
    for (size_t i = 0; i < n_groups; i++) {
        const struct req_group *g = &groups[i];
        if (g->last_seq >= after || !group_selected(g, req))
            continue;
        if (n_out == count) {
            more = true;
            break;
        }
        fill_request_log(st, g, req, &outs[n_out]);
        ptrs[n_out] = &outs[n_out].log;
        n_out++;
    }

    Af__Log__LogReadResponse out = AF__LOG__LOG_READ_RESPONSE__INIT;
    out.n_log = n_out;
    out.log = ptrs;
    /* The Go library stops paging when the offset is absent, so it is set
     * only when another page exists. */
    if (more)
        out.offset = outs[n_out - 1].log.offset;
    af_result_pack(res, &out.base);

    for (size_t i = 0; i < n_out; i++) {
        free(outs[i].line_store);
        free(outs[i].line_ptrs);
    }
    free(outs);
    free(ptrs);
    free(groups);
    free(lines);
    af__log__log_read_request__free_unpacked(req, NULL);
}

static const struct af_method log_methods[] = {
    {.name = "Flush", .fn = flush},
    {.name = "Read", .fn = read_logs},
    {.name = NULL},
};

const struct af_service af_service_logservice = {
    .name = "logservice",
    .methods = log_methods,
    .create = log_create,
    .clear = log_clear,
    .destroy = log_destroy,
};
