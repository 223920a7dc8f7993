/*
 * reqlog — see reqlog.h. Records are written into one buffer that lives as
 * long as the front end; after a turn, af_api_post copies its bytes into a
 * job that comes back for reuse once run (apiserver.h).
 */
#include "proxy/reqlog.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

#include "apiserver/apiserver.h"
#include "apiserver/reqlog.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/exchange.h"
#include "proxy/login.h"
#include "proxy/server.h"

/* The largest record (every string at its cut) fits a batch with room to
 * spare, so a record never waits for a larger buffer. */
_Static_assert(sizeof(struct af_reqlog_head) +
                       AF_RQ_N * AF_REQLOG_MAX_STR + AF_REQLOG_ALIGN <=
                   AF_API_POST_MAX_BYTES,
               "a record fits a post");

static struct {
    struct af_api *api;
    uint8_t *buf;          /* AF_API_POST_MAX_BYTES, made and touched at the start */
    size_t len;
    size_t n;              /* records in buf */
    size_t waiting;        /* records posted lazily that wait for a wake-up */
    size_t waiting_bytes;
    size_t waiting_posts;  /* and the posts that hold them */
    size_t dropped;        /* records dropped since the last warning */
} rl;

static void post(bool lazy);

void af_reqlog_start(struct af_api *api)
{
    rl.api = api;
    af_api_post_start(api);
    rl.buf = af_xmalloc(AF_API_POST_MAX_BYTES);
    memset(rl.buf, 0, AF_API_POST_MAX_BYTES);
}

/* Room for need more bytes (the batch starts with its count): when this
 * turn's batch is full it is posted now; NULL when it cannot be (the
 * backend is behind by every post), and the record is dropped. */
static uint8_t *reserve(size_t need)
{
    if (rl.len + need > AF_API_POST_MAX_BYTES)
        post(true);
    if (rl.len + need > AF_API_POST_MAX_BYTES)
        return NULL;
    return rl.buf + rl.len;
}

static inline uint16_t cut(size_t len)
{
    return (uint16_t)(len > AF_REQLOG_MAX_STR ? AF_REQLOG_MAX_STR : len);
}

/* The module's index in the server's list, which is the API server's
 * (af_api_options.modules, in proxy/main.c's order). */
static uint16_t module_index(const struct af_server *srv, const struct af_module *mod)
{
    for (size_t i = 0; i < srv->n_modules; i++)
        if (srv->modules[i] == mod)
            return (uint16_t)i;
    return (uint16_t)srv->default_index;
}

void af_reqlog_add(const struct af_exchange *ex, const struct timeval *now)
{
    if (!rl.api)
        return;
    const struct af_conn *c = ex->conn;
    const char *s[AF_RQ_N];
    for (int i = 0; i < AF_RQ_N; i++)
        s[i] = "";
    uint16_t len[AF_RQ_N] = {0};
    s[AF_RQ_IP] = c->peer_ip;
    len[AF_RQ_IP] = cut(strlen(c->peer_ip));
    if (ex->url) {
        s[AF_RQ_RESOURCE] = ex->url;
        len[AF_RQ_RESOURCE] = cut(strlen(ex->url));
    }
    if (ex->handler_url) {
        s[AF_RQ_URL_MAP] = ex->handler_url;
        len[AF_RQ_URL_MAP] = cut(strlen(ex->handler_url));
    }

    /* One pass over the fields; names compared only when the length fits. */
    const struct af_headers *hd = &ex->req_headers;
    bool cookie = false, host = false;
    for (size_t i = 0; i < hd->n; i++) {
        const struct af_header *f = &hd->v[i];
        if (f->id == AF_H_HOST) {
            if (!host) {
                s[AF_RQ_HOST] = f->value;
                len[AF_RQ_HOST] = cut(f->value_len);
            }
            host = true;
        } else if (f->id == AF_H_COOKIE) {
            cookie = true;
        } else if (f->id == AF_H_OTHER) {
            if (f->name_len == 10 && !len[AF_RQ_USER_AGENT] &&
                strncasecmp(f->name, "User-Agent", 10) == 0) {
                s[AF_RQ_USER_AGENT] = f->value;
                len[AF_RQ_USER_AGENT] = cut(f->value_len);
            } else if (f->name_len == 7 && !len[AF_RQ_REFERRER] &&
                       strncasecmp(f->name, "Referer", 7) == 0) {
                s[AF_RQ_REFERRER] = f->value;
                len[AF_RQ_REFERRER] = cut(f->value_len);
            }
        }
    }
    /* The user the app was told of (X-AppEngine-User-Nickname): none on
     * the direct port. */
    struct af_user user;
    if (cookie && !ex->direct && af_login_from_headers(hd, &user)) {
        const char *at = strchr(user.email, '@');
        s[AF_RQ_NICKNAME] = user.email;
        len[AF_RQ_NICKNAME] = cut(at ? (size_t)(at - user.email) : strlen(user.email));
    }

    size_t strs = 0;
    for (int i = 0; i < AF_RQ_N; i++)
        strs += len[i];
    size_t need = (sizeof(struct af_reqlog_head) + strs + AF_REQLOG_ALIGN - 1) &
                  ~(size_t)(AF_REQLOG_ALIGN - 1);
    uint8_t *p = reserve(need);
    if (!p) {
        rl.dropped++;
        return;
    }
    struct af_reqlog_head *h = (struct af_reqlog_head *)(void *)p;
    h->start_usec = (int64_t)ex->start.tv_sec * 1000000 + ex->start.tv_usec;
    h->end_usec = (int64_t)now->tv_sec * 1000000 + now->tv_usec;
    h->response_size = (int64_t)ex->resp_bytes;
    h->status = ex->status < 0 ? 0 : ex->status;
    h->module = module_index(c->srv, ex->mod);
    h->method = ex->url ? (uint8_t)ex->method : AF_REQLOG_NO_METHOD;
    h->http_major = ex->url ? (uint8_t)ex->http_major : 0;
    h->http_minor = ex->url ? (uint8_t)ex->http_minor : 0;
    h->flags = (uint8_t)((ex->direct ? AF_RQ_DIRECT : 0) | (ex->rstarted ? AF_RQ_FORWARDED : 0));
    /* Always 32 hex digits in a 40-byte array (proxy/conn.c). */
    memcpy(h->request_id, ex->request_id, AF_REQLOG_ID_LEN);
    memcpy(h->len, len, sizeof(len));
    /* The strings, in the order of their lengths; the padding after them
     * is never read. */
    uint8_t *q = p + sizeof(*h);
    for (int i = 0; i < AF_RQ_N; i++) {
        memcpy(q, s[i], len[i]);
        q += len[i];
    }
    rl.len += need;
    rl.n++;
}

static void post(bool lazy)
{
    if (!rl.api || rl.n == 0)
        return;
    /* The backend is behind: this turn's records join the next turn's
     * batch. At most AF_REQLOG_WAKE_POSTS of the posts out wait for a
     * wake-up, so the others are bound to come back. */
    if (af_api_post_full(rl.api))
        return;
    /* A lazy post joins the one before it while that one waits in the
     * inbox, so the backend runs one job, not one a turn. */
    lazy = lazy && rl.waiting + rl.n < AF_REQLOG_WAKE_RECORDS &&
           rl.waiting_bytes + rl.len < AF_REQLOG_WAKE_BYTES &&
           rl.waiting_posts + 1 < AF_REQLOG_WAKE_POSTS;
    int r = af_api_post(rl.api, "logservice", "RequestLogs", rl.buf, rl.len,
                        lazy ? AF_API_POST_JOIN : 0);
    if (r < 0)
        return; /* the backend holds the inbox: with the next turn's */
    if (r > 0) {
        rl.waiting += rl.n;
        rl.waiting_bytes += rl.len;
        rl.waiting_posts += r == AF_API_POST_WAITING;
    } else {
        rl.waiting = rl.waiting_bytes = rl.waiting_posts = 0; /* the backend takes everything */
    }
    rl.len = rl.n = 0;
    if (rl.dropped) {
        af_warn("request log: %zu request records dropped, the API backend was behind "
                "(logservice Read will not show those requests)",
                rl.dropped);
        rl.dropped = 0;
    }
}

void af_reqlog_flush(void)
{
    post(true);
}

void af_reqlog_stop(void)
{
    post(false);
    free(rl.buf);
    memset(&rl, 0, sizeof(rl));
}
