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

/* ---- several modules: the table the front end hands over ------------------ */

static int setup_table(void **state)
{
    /* Not static: the service must keep its own copy of everything. */
    char worker[] = "worker", v2[] = "v2", host[] = "localhost:8081";
    struct af_api_module mods[] = {
        {.name = "api", .version = "1", .hostname = "localhost:8080", .instances = 1},
        {.name = "default", .version = "3", .hostname = "localhost:8082", .instances = 2},
        {.name = worker, .version = v2, .hostname = host, .instances = 4},
    };
    struct af_api_options opts = {.server_host = "localhost:8082",
                                  .module = "default",
                                  .version = "3",
                                  .module_instances = 2,
                                  .modules = mods,
                                  .n_modules = 3};
    *state = af_service_modules.create(&opts);
    memset(worker, 'x', sizeof(worker) - 1);
    memset(v2, 'x', sizeof(v2) - 1);
    memset(host, 'x', sizeof(host) - 1);
    return 0;
}

static char *hostname_of(void *state, const char *module, const char *version, int *code)
{
    Af__Modules__GetHostnameRequest req = AF__MODULES__GET_HOSTNAME_REQUEST__INIT;
    req.module = (char *)module;
    req.version = (char *)version;
    struct af_result res = call(state, "GetHostname", &req.base);
    char *out = NULL;
    *code = res.kind == AF_RESULT_OK ? 0 : res.code;
    if (res.kind == AF_RESULT_OK) {
        Af__Modules__GetHostnameResponse *r =
            af__modules__get_hostname_response__unpack(NULL, res.response_len, res.response);
        assert_non_null(r);
        out = strdup(r->hostname);
        af__modules__get_hostname_response__free_unpacked(r, NULL);
    }
    svc_result_free(&res);
    return out;
}

static void test_table(void **state)
{
    Af__Modules__GetModulesRequest mreq = AF__MODULES__GET_MODULES_REQUEST__INIT;
    struct af_result res = call(*state, "GetModules", &mreq.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Modules__GetModulesResponse *mout =
        af__modules__get_modules_response__unpack(NULL, res.response_len, res.response);
    assert_non_null(mout);
    assert_int_equal(mout->n_module, 3);
    assert_string_equal(mout->module[0], "api");
    assert_string_equal(mout->module[1], "default");
    assert_string_equal(mout->module[2], "worker");
    af__modules__get_modules_response__free_unpacked(mout, NULL);
    svc_result_free(&res);

    /* Each module's own port; no module means the default one. */
    struct {
        const char *module, *version, *want;
        int code;
    } cases[] = {
        {"worker", NULL, "localhost:8081", 0},       {"worker", "v2", "localhost:8081", 0},
        {"worker", "v2.123", "localhost:8081", 0},   {"api", "1", "localhost:8080", 0},
        {NULL, NULL, "localhost:8082", 0},           {"", "3", "localhost:8082", 0},
        {"worker", "3", NULL, MOD(INVALID_VERSION)}, {"nope", NULL, NULL, MOD(INVALID_MODULE)},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int code;
        char *h = hostname_of(*state, cases[i].module, cases[i].version, &code);
        assert_int_equal(code, cases[i].code);
        if (cases[i].want)
            assert_string_equal(h, cases[i].want);
        free(h);
    }

    /* An unknown module's error lists the modules there are. */
    Af__Modules__GetVersionsRequest vreq = AF__MODULES__GET_VERSIONS_REQUEST__INIT;
    vreq.module = "nope";
    res = call(*state, "GetVersions", &vreq.base);
    assert_int_equal(res.code, MOD(INVALID_MODULE));
    assert_string_equal(res.detail,
                        "unknown module \"nope\"; this app has \"api\", \"default\", \"worker\"");
    svc_result_free(&res);
    vreq.module = "worker";
    res = call(*state, "GetVersions", &vreq.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Modules__GetVersionsResponse *vout =
        af__modules__get_versions_response__unpack(NULL, res.response_len, res.response);
    assert_int_equal(vout->n_version, 1);
    assert_string_equal(vout->version[0], "v2");
    af__modules__get_versions_response__free_unpacked(vout, NULL);
    svc_result_free(&res);

    Af__Modules__GetDefaultVersionRequest dreq = AF__MODULES__GET_DEFAULT_VERSION_REQUEST__INIT;
    res = call(*state, "GetDefaultVersion", &dreq.base);
    Af__Modules__GetDefaultVersionResponse *dout =
        af__modules__get_default_version_response__unpack(NULL, res.response_len, res.response);
    assert_string_equal(dout->version, "3");
    af__modules__get_default_version_response__free_unpacked(dout, NULL);
    svc_result_free(&res);

    /* Instance counts per module. */
    Af__Modules__GetNumInstancesRequest nreq = AF__MODULES__GET_NUM_INSTANCES_REQUEST__INIT;
    nreq.module = "worker";
    res = call(*state, "GetNumInstances", &nreq.base);
    Af__Modules__GetNumInstancesResponse *nout =
        af__modules__get_num_instances_response__unpack(NULL, res.response_len, res.response);
    assert_int_equal(nout->instances, 4);
    af__modules__get_num_instances_response__free_unpacked(nout, NULL);
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
        cmocka_unit_test_setup_teardown(test_table, setup_table, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
