/*
 * Helpers for the unit tests of the logservice's request records: records
 * written as the front end writes them (proxy/reqlog.c), posted as its
 * batches are, app lines flushed as a client library flushes them, and
 * Read. Include after cmocka.h, apiserver/services/logservice.c and
 * svc_call.h.
 */
#ifndef AF_TEST_LOGSERVICE_BATCH_H
#define AF_TEST_LOGSERVICE_BATCH_H

/* One record as the front end writes it. */
struct rec_spec {
    const char *id, *method, *resource, *ua, *referrer, *nickname, *url_map;
    int module; /* index in the options' modules */
    int status;
    int64_t start, end, size;
};

/* A batch buffer, grown as proxy/reqlog.c grows its own. */
struct batch {
    uint8_t *buf;
    size_t len;
    uint32_t n;
};

static int method_of(const char *name)
{
    for (int m = 0; m < 40; m++)
        if (strcmp(http_method_str(m), name) == 0)
            return m;
    return AF_REQLOG_NO_METHOD;
}

static void add(struct batch *b, const struct rec_spec *r)
{
    struct af_reqlog_head h;
    memset(&h, 0, sizeof(h));
    const char *s[AF_RQ_N] = {
        [AF_RQ_IP] = "127.0.0.1",
        [AF_RQ_NICKNAME] = r->nickname ? r->nickname : "",
        [AF_RQ_RESOURCE] = r->resource ? r->resource : "/",
        [AF_RQ_REFERRER] = r->referrer ? r->referrer : "",
        [AF_RQ_USER_AGENT] = r->ua ? r->ua : "",
        [AF_RQ_HOST] = "localhost:8080",
        [AF_RQ_URL_MAP] = r->url_map ? r->url_map : "",
    };
    memcpy(h.request_id, r->id, strnlen(r->id, AF_REQLOG_ID_LEN));
    h.module = (uint16_t)r->module;
    h.method = (uint8_t)method_of(r->method ? r->method : "GET");
    for (int i = 0; i < AF_RQ_N; i++) {
        size_t n = strlen(s[i]);
        h.len[i] = (uint16_t)(n > AF_REQLOG_MAX_STR ? AF_REQLOG_MAX_STR : n);
    }
    h.start_usec = r->start;
    h.end_usec = r->end;
    h.response_size = r->size;
    h.status = r->status;
    h.http_major = 1;
    h.http_minor = 1;
    size_t need = af_reqlog_size(&h);
    b->buf = realloc(b->buf, b->len + need);
    af_reqlog_put(b->buf + b->len, &h, s);
    b->len += need;
    b->n++;
}

/* Posts the batch (the method copies it) and empties b. */
static struct af_result post(void *st, struct batch *b)
{
    struct af_result res = {.kind = -1};
    struct af_call c = {.service = "logservice",
                        .method = "RequestLogs",
                        .request = b->buf,
                        .request_len = b->len,
                        .request_id = ""};
    const struct af_method *m = af_service_logservice.internal;
    while (m->name && strcmp(m->name, "RequestLogs") != 0)
        m++;
    assert_non_null(m->name);
    m->fn(st, &c, &res);
    free(b->buf);
    *b = (struct batch){0};
    return res;
}

static void post_ok(void *st, const struct rec_spec *specs, size_t n)
{
    struct batch b = {0};
    for (size_t i = 0; i < n; i++)
        add(&b, &specs[i]);
    struct af_result res = post(st, &b);
    assert_int_equal(res.kind, AF_RESULT_OK);
    svc_result_free(&res);
}

static void flush_line(void *st, const char *request_id, int64_t usec, int level, const char *msg)
{
    Af__Log__UserAppLogLine line = AF__LOG__USER_APP_LOG_LINE__INIT;
    line.timestamp_usec = usec;
    line.level = level;
    line.message = (char *)msg;
    Af__Log__UserAppLogLine *ptr = &line;
    Af__Log__UserAppLogGroup group = AF__LOG__USER_APP_LOG_GROUP__INIT;
    group.n_log_line = 1;
    group.log_line = &ptr;
    uint8_t g[1024];
    size_t glen = af__log__user_app_log_group__pack(&group, g);
    Af__Log__FlushRequest req = AF__LOG__FLUSH_REQUEST__INIT;
    req.has_logs = true;
    req.logs.data = g;
    req.logs.len = glen;
    uint8_t buf[1100];
    size_t len = af__log__flush_request__pack(&req, buf);
    struct af_result res =
        svc_call_raw(&af_service_logservice, st, "Flush", request_id, buf, len);
    assert_int_equal(res.kind, AF_RESULT_OK);
    svc_result_free(&res);
}

static Af__Log__LogReadResponse *do_read(void *st, Af__Log__LogReadRequest *req)
{
    struct af_result res = svc_call(&af_service_logservice, st, "Read", &req->base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Log__LogReadResponse *out =
        af__log__log_read_response__unpack(NULL, res.response_len, res.response);
    assert_non_null(out);
    svc_result_free(&res);
    return out;
}

#endif
