/*
 * modules — the "modules" service: which modules and versions the app has,
 * how many instances, and the hostname that reaches them.
 *
 * appfront serves every module given on its command line at one version
 * each, on a port of its own (docs/modules.md). The front end hands the
 * table over at startup (struct af_api_options: modules, module for the
 * default one); the service copies it and nobody changes it afterwards, so
 * the backend thread reads it without locks. An absent or empty module in a
 * request means the default module (the caller's module in production:
 * the backend does not know which module a call comes from). A module or
 * version the app does not have is an application error with the official
 * code (INVALID_MODULE, INVALID_VERSION), so an app sees the same failures
 * it would in production. Changing the instance count, starting or stopping
 * a version would need the front end's supervisor, which the services
 * backend cannot reach: those calls validate their arguments and then
 * answer UNEXPECTED_STATE.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modules.pb-c.h"

#include "apiserver/service.h"
#include "common/xalloc.h"

#define MOD(name) AF__MODULES__MODULES_SERVICE_ERROR__ERROR_CODE__##name

struct modules_entry {
    char *name;    /* "default" */
    char *version; /* "1" */
    long long instances;
    char *hostname; /* "localhost:8080" */
};

struct modules_state {
    struct modules_entry *mods; /* in the front end's order */
    char **names;               /* mods[i].name, for GetModulesResponse */
    size_t n;
    size_t dflt;     /* index of the default module */
    char *all_names; /* "default, worker": for messages */
};

static void entry_init(struct modules_entry *e, const char *name, const char *version,
                       long long instances, const char *hostname)
{
    e->name = af_xstrdup(name && name[0] ? name : "default");
    e->version = af_xstrdup(version && version[0] ? version : "1");
    e->instances = instances > 0 ? instances : 0;
    e->hostname = af_xstrdup(hostname ? hostname : "localhost");
}

static void *modules_create(const struct af_api_options *opts)
{
    struct modules_state *st = af_xcalloc(1, sizeof(*st));
    const char *dflt = opts && opts->module && opts->module[0] ? opts->module : "default";
    if (opts && opts->modules && opts->n_modules > 0) {
        st->n = opts->n_modules;
        st->mods = af_xcalloc(st->n, sizeof(*st->mods));
        for (size_t i = 0; i < st->n; i++) {
            const struct af_api_module *m = &opts->modules[i];
            entry_init(&st->mods[i], m->name, m->version, m->instances, m->hostname);
            if (strcmp(st->mods[i].name, dflt) == 0)
                st->dflt = i;
        }
    } else {
        st->n = 1;
        st->mods = af_xcalloc(1, sizeof(*st->mods));
        entry_init(&st->mods[0], dflt, opts ? opts->version : NULL,
                   opts ? opts->module_instances : 0, opts ? opts->server_host : NULL);
    }
    st->names = af_xcalloc(st->n, sizeof(*st->names));
    size_t len = 1;
    for (size_t i = 0; i < st->n; i++) {
        st->names[i] = st->mods[i].name;
        len += strlen(st->mods[i].name) + 4;
    }
    st->all_names = af_xmalloc(len);
    size_t off = 0;
    st->all_names[0] = '\0';
    for (size_t i = 0; i < st->n; i++)
        off += (size_t)snprintf(st->all_names + off, len - off, "%s\"%s\"", i ? ", " : "",
                                st->mods[i].name);
    return st;
}

static void modules_destroy(void *state)
{
    struct modules_state *st = state;
    if (!st)
        return;
    for (size_t i = 0; i < st->n; i++) {
        free(st->mods[i].name);
        free(st->mods[i].version);
        free(st->mods[i].hostname);
    }
    free(st->mods);
    free(st->names);
    free(st->all_names);
    free(st);
}

/* The module a request names: an absent or empty one means the default
 * module (the Go library leaves the field out for ""). Answers
 * INVALID_MODULE and returns NULL for a module the app does not have. */
static const struct modules_entry *find_module(const struct modules_state *st, const char *module,
                                               struct af_result *res)
{
    if (!module || !module[0])
        return &st->mods[st->dflt];
    for (size_t i = 0; i < st->n; i++)
        if (strcmp(module, st->mods[i].name) == 0)
            return &st->mods[i];
    af_result_app_error(res, MOD(INVALID_MODULE), "unknown module \"%s\"; this app has %s", module,
                        st->all_names);
    return NULL;
}

/* Apps often pass the version id they were given, which in production is
 * "MAJOR.MINOR" (the deployment number after the dot); the major part is
 * what names the version. */
static bool check_version(const struct modules_entry *m, const char *version, struct af_result *res)
{
    if (!version || !version[0] || strcmp(version, m->version) == 0)
        return true;
    const char *dot = strchr(version, '.');
    size_t vlen = strlen(m->version);
    if (dot && (size_t)(dot - version) == vlen && strncmp(version, m->version, vlen) == 0)
        return true;
    af_result_app_error(res, MOD(INVALID_VERSION),
                        "unknown version \"%s\" of module \"%s\"; it has version \"%s\"", version,
                        m->name, m->version);
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
    out.n_module = st->n;
    out.module = st->names;
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
    const struct modules_entry *m = find_module(st, req->module, res);
    if (m) {
        Af__Modules__GetVersionsResponse out = AF__MODULES__GET_VERSIONS_RESPONSE__INIT;
        char *version = m->version;
        out.n_version = 1;
        out.version = &version;
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
    const struct modules_entry *m = find_module(st, req->module, res);
    if (m) {
        Af__Modules__GetDefaultVersionResponse out =
            AF__MODULES__GET_DEFAULT_VERSION_RESPONSE__INIT;
        out.version = m->version;
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
    const struct modules_entry *m = find_module(st, req->module, res);
    if (m && check_version(m, req->version, res)) {
        Af__Modules__GetNumInstancesResponse out = AF__MODULES__GET_NUM_INSTANCES_RESPONSE__INIT;
        out.instances = m->instances;
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
    const struct modules_entry *m = find_module(st, req->module, res);
    if (m && check_version(m, req->version, res)) {
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
    const struct modules_entry *m = find_module(st, module, res);
    if (m && check_version(m, version, res))
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
static bool valid_instance(const struct modules_entry *m, const char *instance)
{
    if (instance[0] < '0' || instance[0] > '9')
        return false;
    char *end;
    errno = 0;
    long long id = strtoll(instance, &end, 10);
    return errno == 0 && *end == '\0' && id < m->instances;
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
    const struct modules_entry *m = find_module(st, req->module, res);
    if (!m || !check_version(m, req->version, res))
        goto done;
    if (req->instance && req->instance[0] && !valid_instance(m, req->instance)) {
        af_result_app_error(res, MOD(INVALID_INSTANCES),
                            "unknown instance \"%s\"; module \"%s\" reports %lld instance(s)",
                            req->instance, m->name, m->instances);
        goto done;
    }
    /* A module's versions and instances are all reached through its one
     * front-end port: appfront balances there. */
    Af__Modules__GetHostnameResponse out = AF__MODULES__GET_HOSTNAME_RESPONSE__INIT;
    out.hostname = m->hostname;
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
