/*
 * app_identity — the "app_identity_service" service: who the app is.
 *
 * A development server holds no Google credentials, so everything here is
 * made up but shaped like production: the service account is the
 * production-style "APP@appspot.gserviceaccount.com", access tokens are
 * clearly fake strings that expire an hour after they are issued, and
 * SignForApp signs with a key of the app's own, made on first use and kept
 * in the storage directory (app_identity_key.h), whose self-signed
 * certificate GetPublicCertificatesForApp lists: an app verifies its own
 * signatures as in production, and no one else trusts them.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app_identity.pb-c.h"

#include "apiserver/service.h"
#include "apiserver/services/app_identity_key.h"
#include "common/xalloc.h"

/* An access token lives one hour, as production tokens do. */
#define TOKEN_LIFETIME_S 3600

/* How long an app may cache the certificate list (production says an
 * hour too; the key never changes here). */
#define CERT_CACHE_S 3600

/* Bounds on what GetAccessToken accepts: a real scope is a URL of well
 * under a hundred bytes, and an app asks for a handful. */
#define MAX_SCOPES 64
#define MAX_SCOPE_LEN 1024

#define AID(name) AF__APP_IDENTITY__APP_IDENTITY_SERVICE_ERROR__ERROR_CODE__##name

struct aid_state {
    char *server_host; /* "localhost:8080" */
    char *account;     /* "testapp@appspot.gserviceaccount.com" */
    char *bucket;      /* "testapp.appspot.com" */
    unsigned long long tokens_issued;
    struct aid_key *key; /* the signing key, made on first use */
};

/*
 * The production naming of an app's default names: a domain-scoped app id
 * "example.com:app" becomes "app.example.com", a partition prefix such as
 * "dev~" or "s~" is dropped.
 */
static char *plain_app_name(const char *app_id)
{
    const char *tilde = strchr(app_id, '~');
    if (tilde)
        app_id = tilde + 1;
    const char *colon = strrchr(app_id, ':');
    if (!colon)
        return af_xstrdup(app_id);
    return af_xasprintf("%s.%.*s", colon + 1, (int)(colon - app_id), app_id);
}

static void *aid_create(const struct af_api_options *opts)
{
    struct aid_state *st = af_xcalloc(1, sizeof(*st));
    const char *app_id = opts && opts->app_id && opts->app_id[0] ? opts->app_id : "testapp";
    char *name = plain_app_name(app_id);
    st->server_host = af_xstrdup(opts && opts->server_host ? opts->server_host : "localhost");
    st->account = af_xasprintf("%s@appspot.gserviceaccount.com", name);
    st->bucket = opts && opts->default_gcs_bucket_name && opts->default_gcs_bucket_name[0]
                     ? af_xstrdup(opts->default_gcs_bucket_name)
                     : af_xasprintf("%s.appspot.com", name);
    free(name);
    char *key_path = opts && opts->storage_path
                         ? af_xasprintf("%s/app_identity_key.pem", opts->storage_path)
                         : NULL;
    st->key = aid_key_new(key_path, st->account);
    free(key_path);
    return st;
}

static void aid_destroy(void *state)
{
    struct aid_state *st = state;
    if (!st)
        return;
    free(st->server_host);
    free(st->account);
    free(st->bucket);
    aid_key_free(st->key);
    free(st);
}

static void bad_request(struct af_result *res, const char *what)
{
    /* AppIdentityServiceError has no code for an undecodable message. */
    af_result_rpc_error(res, AF_RPC_BAD_REQUEST, "app_identity_service: cannot decode %s", what);
}

/*
 * Every request message of this service is decoded only to validate it, so
 * one helper covers them: returns the message (free with
 * protobuf_c_message_free_unpacked) or NULL after answering BAD_REQUEST.
 */
static ProtobufCMessage *decode(const ProtobufCMessageDescriptor *desc, const struct af_call *call,
                                struct af_result *res)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, call->request_len, call->request);
    if (!m)
        bad_request(res, desc->short_name);
    return m;
}

static void get_service_account_name(void *state, const struct af_call *call, struct af_result *res)
{
    struct aid_state *st = state;
    ProtobufCMessage *m =
        decode(&af__app_identity__get_service_account_name_request__descriptor, call, res);
    if (!m)
        return;
    protobuf_c_message_free_unpacked(m, NULL);
    Af__AppIdentity__GetServiceAccountNameResponse out =
        AF__APP_IDENTITY__GET_SERVICE_ACCOUNT_NAME_RESPONSE__INIT;
    out.service_account_name = st->account;
    af_result_pack(res, &out.base);
}

static void get_default_version_hostname(void *state, const struct af_call *call,
                                         struct af_result *res)
{
    struct aid_state *st = state;
    ProtobufCMessage *m =
        decode(&af__app_identity__get_default_version_hostname_request__descriptor, call, res);
    if (!m)
        return;
    protobuf_c_message_free_unpacked(m, NULL);
    Af__AppIdentity__GetDefaultVersionHostnameResponse out =
        AF__APP_IDENTITY__GET_DEFAULT_VERSION_HOSTNAME_RESPONSE__INIT;
    out.hostname = st->server_host;
    af_result_pack(res, &out.base);
}

static void get_default_gcs_bucket_name(void *state, const struct af_call *call,
                                        struct af_result *res)
{
    struct aid_state *st = state;
    ProtobufCMessage *m =
        decode(&af__app_identity__get_default_gcs_bucket_name_request__descriptor, call, res);
    if (!m)
        return;
    protobuf_c_message_free_unpacked(m, NULL);
    Af__AppIdentity__GetDefaultGcsBucketNameResponse out =
        AF__APP_IDENTITY__GET_DEFAULT_GCS_BUCKET_NAME_RESPONSE__INIT;
    out.default_gcs_bucket_name = st->bucket;
    af_result_pack(res, &out.base);
}

/* FNV-1a over the scopes, so the same scope set yields recognisably related
 * tokens without echoing client bytes (which may not be header-safe). */
static uint32_t scopes_hash(char *const *scopes, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)scopes[i]; *p; p++)
            h = (h ^ *p) * 16777619u;
        h = (h ^ ' ') * 16777619u;
    }
    return h;
}

static void get_access_token(void *state, const struct af_call *call, struct af_result *res)
{
    struct aid_state *st = state;
    Af__AppIdentity__GetAccessTokenRequest *req =
        af__app_identity__get_access_token_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        bad_request(res, "GetAccessTokenRequest");
        return;
    }
    if (req->n_scope == 0 || req->n_scope > MAX_SCOPES) {
        af_result_app_error(res, AID(UNKNOWN_SCOPE),
                            "GetAccessToken needs between 1 and %d scopes, got %zu", MAX_SCOPES,
                            req->n_scope);
        goto done;
    }
    for (size_t i = 0; i < req->n_scope; i++) {
        size_t len = strlen(req->scope[i]);
        if (len == 0 || len > MAX_SCOPE_LEN) {
            af_result_app_error(res, AID(UNKNOWN_SCOPE),
                                "scope %zu is %zu bytes; a scope is a URL of 1 to %d bytes", i, len,
                                MAX_SCOPE_LEN);
            goto done;
        }
    }
    st->tokens_issued++;
    char *token = af_xasprintf("appfront-fake-token.%llu.%08x", st->tokens_issued,
                               scopes_hash(req->scope, req->n_scope));
    Af__AppIdentity__GetAccessTokenResponse out = AF__APP_IDENTITY__GET_ACCESS_TOKEN_RESPONSE__INIT;
    out.access_token = token;
    out.has_expiration_time = true;
    out.expiration_time = (int64_t)time(NULL) + TOKEN_LIFETIME_S;
    af_result_pack(res, &out.base);
    free(token);
done:
    af__app_identity__get_access_token_request__free_unpacked(req, NULL);
}

static void sign_for_app(void *state, const struct af_call *call, struct af_result *res)
{
    struct aid_state *st = state;
    Af__AppIdentity__SignForAppRequest *req =
        af__app_identity__sign_for_app_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        bad_request(res, "SignForAppRequest");
        return;
    }
    char err[512];
    size_t siglen = 0;
    uint8_t *sig = aid_key_sign(st->key, req->has_bytes_to_sign ? req->bytes_to_sign.data : NULL,
                                req->has_bytes_to_sign ? req->bytes_to_sign.len : 0, &siglen, err,
                                sizeof(err));
    af__app_identity__sign_for_app_request__free_unpacked(req, NULL);
    if (!sig) {
        af_result_app_error(res, AID(UNKNOWN_ERROR), "SignForApp: %s", err);
        return;
    }
    Af__AppIdentity__SignForAppResponse out = AF__APP_IDENTITY__SIGN_FOR_APP_RESPONSE__INIT;
    out.key_name = (char *)aid_key_name(st->key);
    out.has_signature_bytes = true;
    out.signature_bytes.data = sig;
    out.signature_bytes.len = siglen;
    af_result_pack(res, &out.base);
    free(sig);
}

static void get_public_certificates(void *state, const struct af_call *call, struct af_result *res)
{
    struct aid_state *st = state;
    ProtobufCMessage *m =
        decode(&af__app_identity__get_public_certificate_for_app_request__descriptor, call, res);
    if (!m)
        return;
    protobuf_c_message_free_unpacked(m, NULL);
    char err[512];
    if (aid_key_ready(st->key, err, sizeof(err)) < 0) {
        af_result_app_error(res, AID(UNKNOWN_ERROR), "GetPublicCertificatesForApp: %s", err);
        return;
    }
    Af__AppIdentity__PublicCertificate cert = AF__APP_IDENTITY__PUBLIC_CERTIFICATE__INIT;
    cert.key_name = (char *)aid_key_name(st->key);
    cert.x509_certificate_pem = (char *)aid_key_cert_pem(st->key);
    Af__AppIdentity__PublicCertificate *list[1] = {&cert};
    Af__AppIdentity__GetPublicCertificateForAppResponse out =
        AF__APP_IDENTITY__GET_PUBLIC_CERTIFICATE_FOR_APP_RESPONSE__INIT;
    out.n_public_certificate_list = 1;
    out.public_certificate_list = list;
    out.has_max_client_cache_time_in_second = true;
    out.max_client_cache_time_in_second = CERT_CACHE_S;
    af_result_pack(res, &out.base);
}

static const struct af_method aid_methods[] = {
    {.name = "GetServiceAccountName", .fn = get_service_account_name},
    {.name = "GetDefaultVersionHostname", .fn = get_default_version_hostname},
    {.name = "GetDefaultGcsBucketName", .fn = get_default_gcs_bucket_name},
    {.name = "GetAccessToken", .fn = get_access_token},
    {.name = "SignForApp", .fn = sign_for_app},
    {.name = "GetPublicCertificatesForApp", .fn = get_public_certificates},
    {.name = NULL},
};

const struct af_service af_service_app_identity = {
    .name = "app_identity_service",
    .methods = aid_methods,
    .create = aid_create,
    .destroy = aid_destroy,
};
