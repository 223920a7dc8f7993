/*
 * modules — the "modules" service: which modules and versions the app has,
 * how many instances, and the hostname that reaches them.
 *
 * appfront serves one module at one version (struct af_api_options: module,
 * version, module_instances, server_host), so the answers come straight from
 * the options. A module or version the app does not have is an application
 * error with the official code (INVALID_MODULE, INVALID_VERSION), so an app
 * sees the same failures it would in production. Changing the instance
 * count, starting or stopping a version would need the front end's
 * supervisor, which the services backend cannot reach: those calls validate
 * their arguments and then answer UNEXPECTED_STATE.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "modules.pb-c.h"

#include "apiserver/service.h"
#include "common/xalloc.h"

#define MOD(name) AF__MODULES__MODULES_SERVICE_ERROR__ERROR_CODE__##name

struct modules_state {
    char *module;  /* "default" */
    char *version; /* "1" */
    long long instances;
    char *server_host; /* "localhost:8080" */
};

static void *modules_create(const struct af_api_options *opts)
{
    struct modules_state *st = af_xcalloc(1, sizeof(*st));
    st->module = af_xstrdup(opts && opts->module && opts->module[0] ? opts->module : "default");
    st->version = af_xstrdup(opts && opts->version && opts->version[0] ? opts->version : "1");
    st->instances = opts && opts->module_instances > 0 ? opts->module_instances : 0;
    st->server_host = af_xstrdup(opts && opts->server_host ? opts->server_host : "localhost");
    return st;
}

static void modules_destroy(void *state)
{
    struct modules_state *st = state;
    if (!st)
        return;
    free(st->module);
    free(st->version);
    free(st->server_host);
    free(st);
}

/* An absent or empty module means the default one (the Go library leaves
 * the field out for ""). Answers INVALID_MODULE and returns false for any
 * other module. */
static bool check_module(const struct modules_state *st, const char *module, struct af_result *res)
{
    if (!module || !module[0] || strcmp(module, st->module) == 0)
        return true;
    af_result_app_error(res, MOD(INVALID_MODULE), "unknown module \"%s\"; this app has \"%s\"",
                        module, st->module);
    return false;
}

/* Apps often pass the version id they were given, which in production is
 * "MAJOR.MINOR" (the deployment number after the dot); the major part is
 * what names the version. */
static bool check_version(const struct modules_state *st, const char *version,
                          struct af_result *res)
{
    if (!version || !version[0] || strcmp(version, st->version) == 0)
        return true;
    const char *dot = strchr(version, '.');
    size_t vlen = strlen(st->version);
    if (dot && (size_t)(dot - version) == vlen && strncmp(version, st->version, vlen) == 0)
        return true;
    af_result_app_error(res, MOD(INVALID_VERSION),
                        "unknown version \"%s\" of module \"%s\"; it has version \"%s\"", version,
                        st->module, st->version);
    return false;
}

static void bad_request(struct af_result *res, const char *what)
{
    /* ModulesServiceError has no code for an undecodable message. */
    af_result_rpc_error(res, AF_RPC_BAD_REQUEST, "modules: cannot decode %s", what);
}

static void get_modules(void *state, const struct af_call *call, struct af_result *res)
{
    struct modules_state *st = state;
    Af__Modules__GetModulesRequest *req =
        af__modules__get_modules_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        bad_request(res, "GetModulesRequest");
        return;
    }
    af__modules__get_modules_request__free_unpacked(req, NULL);
    Af__Modules__GetModulesResponse out = AF__MODULES__GET_MODULES_RESPONSE__INIT;
    out.n_module = 1;
    out.module = &st->module;
    af_result_pack(res, &out.base);
}

static void get_versions(void *state, const struct af_call *call, struct af_result *res)
{
    struct modules_state *st = state;
    Af__Modules__GetVersionsRequest *req =
        af__modules__get_versions_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        bad_request(res, "GetVersionsRequest");
        return;
    }
    if (check_module(st, req->module, res)) {
        Af__Modules__GetVersionsResponse out = AF__MODULES__GET_VERSIONS_RESPONSE__INIT;
        out.n_version = 1;
        out.version = &st->version;
        af_result_pack(res, &out.base);
    }
    af__modules__get_versions_request__free_unpacked(req, NULL);
}

static void get_default_version(void *state, const struct af_call *call, struct af_result *res)
{
    struct modules_state *st = state;
    Af__Modules__GetDefaultVersionRequest *req =
        af__modules__get_default_version_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        bad_request(res, "GetDefaultVersionRequest");
        return;
    }
    if (check_module(st, req->module, res)) {
        Af__Modules__GetDefaultVersionResponse out =
            AF__MODULES__GET_DEFAULT_VERSION_RESPONSE__INIT;
        out.version = st->version;
        af_result_pack(res, &out.base);
    }
    af__modules__get_default_version_request__free_unpacked(req, NULL);
}

static void get_num_instances(void *state, const struct af_call *call, struct af_result *res)
{
    struct modules_state *st = state;
    Af__Modules__GetNumInstancesRequest *req =
        af__modules__get_num_instances_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        bad_request(res, "GetNumInstancesRequest");
        return;
    }
    if (check_module(st, req->module, res) && check_version(st, req->version, res)) {
        Af__Modules__GetNumInstancesResponse out = AF__MODULES__GET_NUM_INSTANCES_RESPONSE__INIT;
        out.instances = st->instances;
        af_result_pack(res, &out.base);
    }
    af__modules__get_num_instances_request__free_unpacked(req, NULL);
}

static void set_num_instances(void *state, const struct af_call *call, struct af_result *res)
{
    struct modules_state *st = state;
    Af__Modules__SetNumInstancesRequest *req =
        af__modules__set_num_instances_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        bad_request(res, "SetNumInstancesRequest");
        return;
    }
    if (check_module(st, req->module, res) && check_version(st, req->version, res)) {
        if (req->instances < 0)
            af_result_app_error(res, MOD(INVALID_INSTANCES), "instance count %lld is negative",
                                (long long)req->instances);
        else
            af_result_app_error(res, MOD(UNEXPECTED_STATE),
                                "appfront cannot change the instance count from the API; "
                                "set manual_scaling.instances in app.yaml");
    }
    af__modules__set_num_instances_request__free_unpacked(req, NULL);
}

/* StartModule and StopModule share a shape: module and version, validated,
 * then refused (see the top of the file). */
static void start_stop(struct modules_state *st, const char *module, const char *version,
                       const char *what, struct af_result *res)
{
    if (check_module(st, module, res) && check_version(st, version, res))
        af_result_app_error(res, MOD(UNEXPECTED_STATE),
                            "appfront cannot %s a version from the API; its instances follow "
                            "app.yaml",
                            what);
}

static void start_module(void *state, const struct af_call *call, struct af_result *res)
{
    Af__Modules__StartModuleRequest *req =
        af__modules__start_module_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        bad_request(res, "StartModuleRequest");
        return;
    }
    start_stop(state, req->module, req->version, "start", res);
    af__modules__start_module_request__free_unpacked(req, NULL);
}

static void stop_module(void *state, const struct af_call *call, struct af_result *res)
{
    Af__Modules__StopModuleRequest *req =
        af__modules__stop_module_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        bad_request(res, "StopModuleRequest");
        return;
    }
    start_stop(state, req->module, req->version, "stop", res);
    af__modules__stop_module_request__free_unpacked(req, NULL);
}

/* An instance id is the decimal index of a manual-scaling instance,
 * 0 <= id < instances. */
static bool valid_instance(const struct modules_state *st, const char *instance)
{
    if (instance[0] < '0' || instance[0] > '9')
        return false;
    char *end;
    errno = 0;
    long long id = strtoll(instance, &end, 10);
    return errno == 0 && *end == '\0' && id < st->instances;
}

static void get_hostname(void *state, const struct af_call *call, struct af_result *res)
{
    struct modules_state *st = state;
    Af__Modules__GetHostnameRequest *req =
        af__modules__get_hostname_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        bad_request(res, "GetHostnameRequest");
        return;
    }
    if (!check_module(st, req->module, res) || !check_version(st, req->version, res))
        goto done;
    if (req->instance && req->instance[0] && !valid_instance(st, req->instance)) {
        af_result_app_error(res, MOD(INVALID_INSTANCES),
                            "unknown instance \"%s\"; module \"%s\" reports %lld instance(s)",
                            req->instance, st->module, st->instances);
        goto done;
    }
    /* Every module, version and instance is reached through the one front
     * end port: appfront routes and balances there. */
    Af__Modules__GetHostnameResponse out = AF__MODULES__GET_HOSTNAME_RESPONSE__INIT;
    out.hostname = st->server_host;
    af_result_pack(res, &out.base);
done:
    af__modules__get_hostname_request__free_unpacked(req, NULL);
}

static const struct af_method modules_methods[] = {
    {.name = "GetModules", .fn = get_modules},
    {.name = "GetVersions", .fn = get_versions},
    {.name = "GetDefaultVersion", .fn = get_default_version},
    {.name = "GetNumInstances", .fn = get_num_instances},
    {.name = "SetNumInstances", .fn = set_num_instances},
    {.name = "StartModule", .fn = start_module},
    {.name = "StopModule", .fn = stop_module},
    {.name = "GetHostname", .fn = get_hostname},
    {.name = NULL},
};

const struct af_service af_service_modules = {
    .name = "modules",
    .methods = modules_methods,
    .create = modules_create,
    .destroy = modules_destroy,
};
