/* Unit tests of the "modules" service, through its method table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apiserver/services/modules.c"
#include "tests/unit/svc_call.h"

static struct af_result call_raw(void *state, const char *method, const uint8_t *req, size_t len)
{
    return svc_call_raw(&af_service_modules, state, method, "req-1", req, len);
}

static struct af_result call(void *state, const char *method, const ProtobufCMessage *msg)
{
    return svc_call(&af_service_modules, state, method, msg);
}


static int setup(void **state)
{
    static const struct af_api_options opts = {.server_host = "localhost:8080",
                                               .module = "default",
                                               .version = "1",
                                               .module_instances = 2};
    *state = af_service_modules.create(&opts);
    return 0;
}

static int teardown(void **state)
{
    af_service_modules.destroy(*state);
    return 0;
}

static void test_modules_and_versions(void **state)
{
    Af__Modules__GetModulesRequest mreq = AF__MODULES__GET_MODULES_REQUEST__INIT;
    struct af_result res = call(*state, "GetModules", &mreq.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Modules__GetModulesResponse *mout =
        af__modules__get_modules_response__unpack(NULL, res.response_len, res.response);
    assert_non_null(mout);
    assert_int_equal(mout->n_module, 1);
    assert_string_equal(mout->module[0], "default");
    af__modules__get_modules_response__free_unpacked(mout, NULL);
    svc_result_free(&res);

    Af__Modules__GetVersionsRequest vreq = AF__MODULES__GET_VERSIONS_REQUEST__INIT;
    res = call(*state, "GetVersions", &vreq.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Modules__GetVersionsResponse *vout =
        af__modules__get_versions_response__unpack(NULL, res.response_len, res.response);
    assert_non_null(vout);
    assert_int_equal(vout->n_version, 1);
    assert_string_equal(vout->version[0], "1");
    af__modules__get_versions_response__free_unpacked(vout, NULL);
    svc_result_free(&res);

    vreq.module = "worker";
    res = call(*state, "GetVersions", &vreq.base);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, MOD(INVALID_MODULE));
    assert_non_null(strstr(res.detail, "worker"));
    svc_result_free(&res);

    Af__Modules__GetDefaultVersionRequest dreq = AF__MODULES__GET_DEFAULT_VERSION_REQUEST__INIT;
    dreq.module = "default";
    res = call(*state, "GetDefaultVersion", &dreq.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Modules__GetDefaultVersionResponse *dout =
        af__modules__get_default_version_response__unpack(NULL, res.response_len, res.response);
    assert_non_null(dout);
    assert_string_equal(dout->version, "1");
    af__modules__get_default_version_response__free_unpacked(dout, NULL);
    svc_result_free(&res);

    dreq.module = "nope";
    res = call(*state, "GetDefaultVersion", &dreq.base);
    assert_int_equal(res.code, MOD(INVALID_MODULE));
    svc_result_free(&res);
}

static void test_num_instances(void **state)
{
    struct {
        const char *module, *version;
        int kind, code;
    } cases[] = {
        {NULL, NULL, AF_RESULT_OK, 0},
        {"default", "1", AF_RESULT_OK, 0},
        {"default", "1.4242", AF_RESULT_OK, 0},
        {"", "", AF_RESULT_OK, 0},
        {"default", "2", AF_RESULT_APP_ERROR, MOD(INVALID_VERSION)},
        {"default", "10", AF_RESULT_APP_ERROR, MOD(INVALID_VERSION)},
        {"other", "1", AF_RESULT_APP_ERROR, MOD(INVALID_MODULE)},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Af__Modules__GetNumInstancesRequest req = AF__MODULES__GET_NUM_INSTANCES_REQUEST__INIT;
        req.module = (char *)cases[i].module;
        req.version = (char *)cases[i].version;
        struct af_result res = call(*state, "GetNumInstances", &req.base);
        assert_int_equal(res.kind, cases[i].kind);
        if (res.kind == AF_RESULT_OK) {
            Af__Modules__GetNumInstancesResponse *out =
                af__modules__get_num_instances_response__unpack(NULL, res.response_len,
                                                                res.response);
            assert_non_null(out);
            assert_int_equal(out->instances, 2);
            af__modules__get_num_instances_response__free_unpacked(out, NULL);
        } else {
            assert_int_equal(res.code, cases[i].code);
        }
        svc_result_free(&res);
    }
}

static void test_hostname(void **state)
{
    struct {
        const char *module, *version, *instance;
        int code; /* 0: ok */
    } cases[] = {
        {NULL, NULL, NULL, 0},
        {"default", "1", "0", 0},
        {"default", NULL, "1", 0},
        {"default", NULL, "2", MOD(INVALID_INSTANCES)},
        {"default", NULL, "-1", MOD(INVALID_INSTANCES)},
        {"default", NULL, "1x", MOD(INVALID_INSTANCES)},
        {"default", NULL, "99999999999999999999999", MOD(INVALID_INSTANCES)},
        {"default", "7", NULL, MOD(INVALID_VERSION)},
        {"api", NULL, NULL, MOD(INVALID_MODULE)},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Af__Modules__GetHostnameRequest req = AF__MODULES__GET_HOSTNAME_REQUEST__INIT;
        req.module = (char *)cases[i].module;
        req.version = (char *)cases[i].version;
        req.instance = (char *)cases[i].instance;
        struct af_result res = call(*state, "GetHostname", &req.base);
        if (cases[i].code == 0) {
            assert_int_equal(res.kind, AF_RESULT_OK);
            Af__Modules__GetHostnameResponse *out =
                af__modules__get_hostname_response__unpack(NULL, res.response_len, res.response);
            assert_non_null(out);
            assert_string_equal(out->hostname, "localhost:8080");
            af__modules__get_hostname_response__free_unpacked(out, NULL);
        } else {
            assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
            assert_int_equal(res.code, cases[i].code);
        }
        svc_result_free(&res);
    }
}

static void test_changes_refused(void **state)
{
    Af__Modules__SetNumInstancesRequest sreq = AF__MODULES__SET_NUM_INSTANCES_REQUEST__INIT;
    sreq.instances = 3;
    struct af_result res = call(*state, "SetNumInstances", &sreq.base);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, MOD(UNEXPECTED_STATE));
    svc_result_free(&res);

    sreq.instances = -1;
    res = call(*state, "SetNumInstances", &sreq.base);
    assert_int_equal(res.code, MOD(INVALID_INSTANCES));
    svc_result_free(&res);

    /* The Go library leaves module and version out for the defaults. */
    Af__Modules__StartModuleRequest start = AF__MODULES__START_MODULE_REQUEST__INIT;
    res = call(*state, "StartModule", &start.base);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, MOD(UNEXPECTED_STATE));
    svc_result_free(&res);

    Af__Modules__StopModuleRequest stop = AF__MODULES__STOP_MODULE_REQUEST__INIT;
    stop.module = "x";
    res = call(*state, "StopModule", &stop.base);
    assert_int_equal(res.code, MOD(INVALID_MODULE));
    svc_result_free(&res);
}

static void test_undecodable(void **state)
{
    static const uint8_t garbage[] = {0x0a, 0x7f, 'd'};
    for (const struct af_method *m = af_service_modules.methods; m->name; m++) {
        struct af_result res = call_raw(*state, m->name, garbage, sizeof(garbage));
        assert_int_equal(res.kind, AF_RESULT_RPC_ERROR);
        assert_int_equal(res.code, AF_RPC_BAD_REQUEST);
        svc_result_free(&res);
    }
    /* SetNumInstances needs its instances field. */
    struct af_result res = call_raw(*state, "SetNumInstances", NULL, 0);
    assert_int_equal(res.kind, AF_RESULT_RPC_ERROR);
    svc_result_free(&res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_modules_and_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_num_instances, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostname, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_undecodable, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
