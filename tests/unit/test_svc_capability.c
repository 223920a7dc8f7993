/* Unit tests of "capability_service". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apiserver/services/capability.c"

static struct af_result call_raw(const uint8_t *req, size_t len)
{
    struct af_result res = {.kind = -1};
    struct af_call c = {.service = "capability_service",
                        .method = "IsEnabled",
                        .request = req,
                        .request_len = len,
                        .request_id = ""};
    assert_string_equal(af_service_capability.methods[0].name, "IsEnabled");
    af_service_capability.methods[0].fn(NULL, &c, &res);
    return res;
}

static void test_everything_enabled(void **state)
{
    const char *packages[] = {"datastore_v3", "memcache", "mail", "no_such_package"};
    char *caps[] = {"write", "*"};
    for (size_t i = 0; i < sizeof(packages) / sizeof(packages[0]); i++) {
        Af__Capability__IsEnabledRequest req = AF__CAPABILITY__IS_ENABLED_REQUEST__INIT;
        req.package = (char *)packages[i];
        req.n_capability = 2;
        req.capability = caps;
        uint8_t buf[256];
        size_t len = af__capability__is_enabled_request__pack(&req, buf);
        struct af_result res = call_raw(buf, len);
        assert_int_equal(res.kind, AF_RESULT_OK);
        Af__Capability__IsEnabledResponse *out =
            af__capability__is_enabled_response__unpack(NULL, res.response_len, res.response);
        assert_non_null(out);
        assert_true(out->has_summary_status);
        assert_int_equal(out->summary_status,
                         AF__CAPABILITY__IS_ENABLED_RESPONSE__SUMMARY_STATUS__ENABLED);
        af__capability__is_enabled_response__free_unpacked(out, NULL);
        free(res.response);
        free(res.detail);
    }
}

static void test_undecodable(void **state)
{
    /* package (field 1) is required: an empty message does not decode. */
    struct af_result res = call_raw(NULL, 0);
    assert_int_equal(res.kind, AF_RESULT_RPC_ERROR);
    assert_int_equal(res.code, AF_RPC_BAD_REQUEST);
    free(res.detail);

    static const uint8_t garbage[] = {0x0a, 0x05, 'a'};
    res = call_raw(garbage, sizeof(garbage));
    assert_int_equal(res.kind, AF_RESULT_RPC_ERROR);
    free(res.detail);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_everything_enabled),
        cmocka_unit_test(test_undecodable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
