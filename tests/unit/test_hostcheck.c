/* Unit tests for common/hostcheck.c: which Host values pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/hostcheck.h"

static bool ok(const struct af_hostcheck *h, const char *host)
{
    return af_hostcheck_ok(h, host, host ? strlen(host) : 0);
}

static void test_default_names(void **state)
{
    struct af_hostcheck h;
    af_hostcheck_init(&h, true, "localhost", NULL, 0);
    const char *pass[] = {"localhost", "localhost:8000", "LOCALHOST:1", "localhost.",
                          "127.0.0.1", "127.0.0.1:8080", "10.1.2.3:80", "[::1]", "[::1]:8000",
                          "default.localhost:8080", "v1.api.localhost", NULL};
    for (int i = 0; pass[i]; i++)
        if (!ok(&h, pass[i]))
            fail_msg("%s refused", pass[i]);
    const char *refuse[] = {"evil.example", "evil.example:8000", "localhost.evil.example",
                            "xlocalhost", "127.0.0.1.evil.example", "localhost:80x", "::1",
                            ":8000", "", "localhost:80:80", "a b", NULL};
    for (int i = 0; refuse[i]; i++)
        if (ok(&h, refuse[i]))
            fail_msg("%s passed", refuse[i]);
    /* No Host at all (HTTP/1.0) passes: no browser sends a request without one. */
    assert_true(ok(&h, NULL));
    af_hostcheck_release(&h);
}

static void test_bound_and_machine_names(void **state)
{
    struct af_hostcheck h;
    af_hostcheck_init(&h, true, "Dev-Box.Example", NULL, 0);
    assert_true(ok(&h, "dev-box.example:8000"));
    assert_false(ok(&h, "other.example"));
    char name[256];
    if (gethostname(name, sizeof(name)) == 0 && name[0]) {
        name[sizeof(name) - 1] = '\0';
        assert_true(ok(&h, name));
    }
    af_hostcheck_release(&h);
    /* An address to bind names nothing. */
    af_hostcheck_init(&h, true, "0.0.0.0", NULL, 0);
    assert_null(h.bind_host);
    assert_false(ok(&h, "evil.example"));
    af_hostcheck_release(&h);
}

static void test_patterns(void **state)
{
    char *extra[] = {"exact.example", "*.one.example", "**.any.example", "UPPER.Example"};
    struct af_hostcheck h;
    af_hostcheck_init(&h, true, NULL, extra, 4);
    assert_true(ok(&h, "exact.example"));
    assert_true(ok(&h, "exact.example:1"));
    assert_false(ok(&h, "sub.exact.example"));
    assert_true(ok(&h, "a.one.example"));
    assert_false(ok(&h, "one.example"));
    assert_false(ok(&h, "a.b.one.example"));
    assert_false(ok(&h, "aone.example"));
    assert_true(ok(&h, "a.any.example"));
    assert_true(ok(&h, "a.b.c.any.example:99"));
    assert_false(ok(&h, "any.example"));
    assert_true(ok(&h, "upper.example"));
    af_hostcheck_release(&h);
}

static void test_off(void **state)
{
    struct af_hostcheck h;
    af_hostcheck_init(&h, false, "localhost", NULL, 0);
    assert_true(ok(&h, "evil.example"));
    assert_true(ok(&h, "anything at all"));
    af_hostcheck_release(&h);
    assert_true(af_hostcheck_ok(NULL, "evil.example", 12));
}

static void test_refusal_names_host_and_flags(void **state)
{
    char buf[512];
    assert_string_equal(af_hostcheck_refusal(buf, sizeof(buf), "The admin server", "evil.example:80",
                                             15),
                        "The admin server does not answer for Host \"evil.example:80\": only for "
                        "this machine's names (DNS rebinding protection). Start appfront with "
                        "--addn_host=NAME or --enable_host_checking=false to allow it.");
    /* A long name is cut at 100 bytes; the host need not end in a NUL. */
    char host[300];
    memset(host, 'a', sizeof(host));
    af_hostcheck_refusal(buf, sizeof(buf), "X", host, sizeof(host));
    const char *q = strchr(buf, '"');
    assert_non_null(q);
    assert_int_equal(strchr(q + 1, '"') - (q + 1), 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_names),
        cmocka_unit_test(test_bound_and_machine_names),
        cmocka_unit_test(test_patterns),
        cmocka_unit_test(test_off),
        cmocka_unit_test(test_refusal_names_host_and_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
