/*
 * Unit tests of the dispatcher of internal replies (apiserver.h): two
 * consumers on one main loop each get the replies tagged with their own id
 * and nothing else; a failed call brings the service's code and detail
 * back; a reply for a consumer that has unsubscribed is dropped; ids are
 * bounded. A real API server with a real backend thread runs the calls.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <stdio.h>

#include <event2/event.h>

#include "apiserver/apiserver-internal.h"
#include "apiserver/apiserver.h"
#include "apiserver/service.h"

/* Echo answers its request; Fail (refuse) is an application error 7 with a detail. */
static void echo(void *st, const struct af_call *call, struct af_result *res)
{
    uint8_t *out = malloc(call->request_len + 1);
    memcpy(out, call->request, call->request_len);
    af_result_ok(res, out, call->request_len);
}

static void refuse(void *st, const struct af_call *call, struct af_result *res)
{
    af_result_app_error(res, 7, "no such thing as %.*s", (int)call->request_len,
                        (const char *)call->request);
}

static const struct af_method no_methods[] = {{.name = NULL}};
static const struct af_method internal_methods[] = {
    {.name = "Echo", .fn = echo}, {.name = "Fail", .fn = refuse}, {.name = NULL}};
static const struct af_service svc = {
    .name = "echo", .methods = no_methods, .internal = internal_methods};
static const struct af_service *const table[] = {&svc};

static struct af_api *start_api(char *dir, size_t dir_size)
{
    snprintf(dir, dir_size, "/tmp/af-dispatch.XXXXXX");
    assert_non_null(mkdtemp(dir));
    static char sock[96];
    snprintf(sock, sizeof(sock), "%s/api.sock", dir);
    static struct af_api_options o;
    o = (struct af_api_options){.host = "127.0.0.1",
                                .socket_path = sock,
                                .app_id = "t",
                                .module = "default",
                                .version = "1",
                                .storage_path = dir,
                                .memcache_max_bytes = 1 << 20};
    struct af_api *api;
    char err[256] = "";
    if (af_api_start_services(&o, table, 1, &api, err, sizeof(err)) != 0)
        fail_msg("af_api_start: %s", err);
    return api;
}

/* What one consumer heard. */
struct heard {
    int n;
    uint64_t tags[8];
    char data[8][64];
    bool ok[8], app_error[8];
    int code[8];
};

static void on_reply(void *arg, const struct af_api_internal_reply *r)
{
    struct heard *h = arg;
    if (r->notice || h->n == 8)
        return;
    h->tags[h->n] = r->tag;
    snprintf(h->data[h->n], sizeof(h->data[0]), "%.*s", (int)r->len, (const char *)r->data);
    h->ok[h->n] = r->ok;
    h->app_error[h->n] = r->app_error;
    h->code[h->n] = r->code;
    h->n++;
}

/* Runs the loop until a and b have heard na and nb replies (or 5 s). */
static void run_until(struct event_base *base, struct heard *a, int na, struct heard *b, int nb)
{
    for (int i = 0; i < 500 && (a->n < na || b->n < nb); i++) {
        struct timeval tv = {0, 10000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
}

static void test_replies_go_to_their_consumer(void **state)
{
    char dir[64];
    struct af_api *api = start_api(dir, sizeof(dir));
    struct event_base *base = event_base_new();
    struct heard a = {0}, b = {0};
    int ida = af_api_internal_subscribe(api, base, on_reply, &a);
    int idb = af_api_internal_subscribe(api, base, on_reply, &b);
    assert_true(ida >= 1 && idb >= 1 && ida != idb);

    af_api_internal_call(api, "echo", "Echo", (const uint8_t *)"for b", 5, AF_API_TAG(idb, 1));
    af_api_internal_call(api, "echo", "Echo", (const uint8_t *)"for a", 5, AF_API_TAG(ida, 1));
    af_api_internal_call(api, "echo", "Fail", (const uint8_t *)"x", 1, AF_API_TAG(ida, 2));
    run_until(base, &a, 2, &b, 1);
    assert_int_equal(a.n, 2);
    assert_int_equal(b.n, 1);
    assert_true(b.ok[0]);
    assert_string_equal(b.data[0], "for b");
    assert_true(b.tags[0] == AF_API_TAG(idb, 1));
    assert_string_equal(a.data[0], "for a");
    assert_true(a.tags[0] == AF_API_TAG(ida, 1));
    /* The failure's kind, code and words come back. */
    assert_false(a.ok[1]);
    assert_true(a.app_error[1]);
    assert_int_equal(a.code[1], 7);
    assert_string_equal(a.data[1], "no such thing as x");

    /* An unknown method is a failure that is not the service's own. */
    af_api_internal_call(api, "echo", "Nope", NULL, 0, AF_API_TAG(ida, 3));
    run_until(base, &a, 3, &b, 1);
    assert_int_equal(a.n, 3);
    assert_false(a.ok[2]);
    assert_false(a.app_error[2]);

    /* b goes away with a call out: its reply is dropped, a hears nothing
     * of it, and a's next reply still comes. */
    af_api_internal_call(api, "echo", "Echo", (const uint8_t *)"late", 4, AF_API_TAG(idb, 2));
    af_api_internal_unsubscribe(api, idb);
    af_api_internal_call(api, "echo", "Echo", (const uint8_t *)"after", 5, AF_API_TAG(ida, 4));
    run_until(base, &a, 4, &b, 1);
    assert_int_equal(a.n, 4);
    assert_string_equal(a.data[3], "after");
    assert_int_equal(b.n, 1);

    /* A tag naming no one (id 0) is dropped too. */
    af_api_internal_call(api, "echo", "Echo", (const uint8_t *)"nobody", 6, 42);
    af_api_internal_call(api, "echo", "Echo", (const uint8_t *)"last", 4, AF_API_TAG(ida, 5));
    run_until(base, &a, 5, &b, 1);
    assert_int_equal(a.n, 5);
    assert_string_equal(a.data[4], "last");

    af_api_internal_unsubscribe(api, ida);
    af_api_internal_unsubscribe(api, ida); /* twice: a no-op */
    af_api_stop(api);
    event_base_free(base);
    rmdir(dir);
}

static void test_ids_are_bounded_and_reused(void **state)
{
    char dir[64];
    struct af_api *api = start_api(dir, sizeof(dir));
    struct event_base *base = event_base_new();
    struct heard h = {0};
    int ids[AF_API_MAX_CONSUMERS];
    for (int i = 0; i < AF_API_MAX_CONSUMERS; i++) {
        ids[i] = af_api_internal_subscribe(api, base, on_reply, &h);
        assert_int_equal(ids[i], i + 1);
    }
    assert_int_equal(af_api_internal_subscribe(api, base, on_reply, &h), -1);
    af_api_internal_unsubscribe(api, ids[3]);
    assert_int_equal(af_api_internal_subscribe(api, base, on_reply, &h), ids[3]);
    for (int i = 0; i < AF_API_MAX_CONSUMERS; i++)
        af_api_internal_unsubscribe(api, ids[i]);
    af_api_internal_unsubscribe(api, -1);
    af_api_stop(api);
    event_base_free(base);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replies_go_to_their_consumer),
        cmocka_unit_test(test_ids_are_bounded_and_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
