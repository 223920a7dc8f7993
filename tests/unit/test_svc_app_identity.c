/*
 * Unit tests of "app_identity_service", called through its method table
 * with packed requests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apiserver/services/app_identity.c"
#include "tests/unit/svc_call.h"

static struct af_result call_raw(void *state, const char *method, const uint8_t *req, size_t len)
{
    return svc_call_raw(&af_service_app_identity, state, method, "req-1", req, len);
}

static struct af_result call(void *state, const char *method, const ProtobufCMessage *msg)
{
    return svc_call(&af_service_app_identity, state, method, msg);
}


static int setup(void **state)
{
    static const struct af_api_options opts = {.server_host = "localhost:8080",
                                               .app_id = "testapp"};
    *state = af_service_app_identity.create(&opts);
    return 0;
}

static int teardown(void **state)
{
    af_service_app_identity.destroy(*state);
    return 0;
}

static void test_service_account_and_host(void **state)
{
    Af__AppIdentity__GetServiceAccountNameRequest req =
        AF__APP_IDENTITY__GET_SERVICE_ACCOUNT_NAME_REQUEST__INIT;
    struct af_result res = call(*state, "GetServiceAccountName", &req.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__AppIdentity__GetServiceAccountNameResponse *out =
        af__app_identity__get_service_account_name_response__unpack(NULL, res.response_len,
                                                                    res.response);
    assert_non_null(out);
    assert_string_equal(out->service_account_name, "testapp@appspot.gserviceaccount.com");
    af__app_identity__get_service_account_name_response__free_unpacked(out, NULL);
    svc_result_free(&res);

    Af__AppIdentity__GetDefaultVersionHostnameRequest hreq =
        AF__APP_IDENTITY__GET_DEFAULT_VERSION_HOSTNAME_REQUEST__INIT;
    res = call(*state, "GetDefaultVersionHostname", &hreq.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__AppIdentity__GetDefaultVersionHostnameResponse *hout =
        af__app_identity__get_default_version_hostname_response__unpack(NULL, res.response_len,
                                                                        res.response);
    assert_non_null(hout);
    assert_string_equal(hout->hostname, "localhost:8080");
    af__app_identity__get_default_version_hostname_response__free_unpacked(hout, NULL);
    svc_result_free(&res);

    Af__AppIdentity__GetDefaultGcsBucketNameRequest breq =
        AF__APP_IDENTITY__GET_DEFAULT_GCS_BUCKET_NAME_REQUEST__INIT;
    res = call(*state, "GetDefaultGcsBucketName", &breq.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__AppIdentity__GetDefaultGcsBucketNameResponse *bout =
        af__app_identity__get_default_gcs_bucket_name_response__unpack(NULL, res.response_len,
                                                                       res.response);
    assert_non_null(bout);
    assert_string_equal(bout->default_gcs_bucket_name, "testapp.appspot.com");
    af__app_identity__get_default_gcs_bucket_name_response__free_unpacked(bout, NULL);
    svc_result_free(&res);
}

static void test_domain_scoped_app(void **state)
{
    char *a = plain_app_name("example.com:app");
    assert_string_equal(a, "app.example.com");
    free(a);
    a = plain_app_name("dev~testapp");
    assert_string_equal(a, "testapp");
    free(a);
}

static Af__AppIdentity__GetAccessTokenResponse *token(void *st, char **scopes, size_t n,
                                                      struct af_result *res)
{
    Af__AppIdentity__GetAccessTokenRequest req = AF__APP_IDENTITY__GET_ACCESS_TOKEN_REQUEST__INIT;
    req.n_scope = n;
    req.scope = scopes;
    *res = call(st, "GetAccessToken", &req.base);
    if (res->kind != AF_RESULT_OK)
        return NULL;
    return af__app_identity__get_access_token_response__unpack(NULL, res->response_len,
                                                               res->response);
}

static void test_access_token(void **state)
{
    char *scopes[] = {"https://www.googleapis.com/auth/cloud-platform"};
    struct af_result res;
    time_t before = time(NULL);
    Af__AppIdentity__GetAccessTokenResponse *out = token(*state, scopes, 1, &res);
    assert_non_null(out);
    assert_non_null(out->access_token);
    assert_true(strncmp(out->access_token, "appfront-fake-token.", 20) == 0);
    assert_true(out->has_expiration_time);
    assert_in_range(out->expiration_time, before + 3600, time(NULL) + 3600);
    char *first = strdup(out->access_token);
    af__app_identity__get_access_token_response__free_unpacked(out, NULL);
    svc_result_free(&res);

    /* A second token differs: the counter is part of it. */
    out = token(*state, scopes, 1, &res);
    assert_non_null(out);
    assert_string_not_equal(out->access_token, first);
    af__app_identity__get_access_token_response__free_unpacked(out, NULL);
    svc_result_free(&res);
    free(first);
}

static void test_access_token_bad_scopes(void **state)
{
    struct af_result res;
    assert_null(token(*state, NULL, 0, &res));
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, AID(UNKNOWN_SCOPE));
    svc_result_free(&res);

    char *empty[] = {""};
    assert_null(token(*state, empty, 1, &res));
    assert_int_equal(res.code, AID(UNKNOWN_SCOPE));
    svc_result_free(&res);

    char *many[MAX_SCOPES + 1];
    for (size_t i = 0; i < MAX_SCOPES + 1; i++)
        many[i] = "s";
    assert_null(token(*state, many, MAX_SCOPES + 1, &res));
    assert_int_equal(res.code, AID(UNKNOWN_SCOPE));
    svc_result_free(&res);
}

/* SignForApp's answer for data, checked against GetPublicCertificatesForApp's
 * certificate with OpenSSL as a verifier; returns the key's name (owned). */
static char *sign_and_verify(void *st, const char *data)
{
    Af__AppIdentity__SignForAppRequest req = AF__APP_IDENTITY__SIGN_FOR_APP_REQUEST__INIT;
    req.has_bytes_to_sign = true;
    req.bytes_to_sign.data = (uint8_t *)data;
    req.bytes_to_sign.len = strlen(data);
    struct af_result res = call(st, "SignForApp", &req.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__AppIdentity__SignForAppResponse *sig =
        af__app_identity__sign_for_app_response__unpack(NULL, res.response_len, res.response);
    assert_non_null(sig);
    svc_result_free(&res);
    assert_int_equal(strlen(sig->key_name), 40);
    assert_int_equal(strspn(sig->key_name, "0123456789abcdef"), 40);
    assert_int_equal(sig->signature_bytes.len, 256); /* RSA-2048 */

    Af__AppIdentity__GetPublicCertificateForAppRequest creq =
        AF__APP_IDENTITY__GET_PUBLIC_CERTIFICATE_FOR_APP_REQUEST__INIT;
    res = call(st, "GetPublicCertificatesForApp", &creq.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__AppIdentity__GetPublicCertificateForAppResponse *certs =
        af__app_identity__get_public_certificate_for_app_response__unpack(NULL, res.response_len,
                                                                          res.response);
    assert_non_null(certs);
    svc_result_free(&res);
    assert_int_equal(certs->n_public_certificate_list, 1);
    assert_true(certs->has_max_client_cache_time_in_second);
    assert_string_equal(certs->public_certificate_list[0]->key_name, sig->key_name);

    const char *pem = certs->public_certificate_list[0]->x509_certificate_pem;
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(x);
    char cn[128];
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
    assert_string_equal(cn, "testapp@appspot.gserviceaccount.com");
    EVP_PKEY *pub = X509_get_pubkey(x);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub), 1);
    assert_int_equal(EVP_DigestVerify(ctx, sig->signature_bytes.data, sig->signature_bytes.len,
                                      (const uint8_t *)data, strlen(data)),
                     1);
    /* Other bytes do not verify: the signature is over these. */
    assert_int_equal(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub), 1);
    assert_int_not_equal(EVP_DigestVerify(ctx, sig->signature_bytes.data,
                                          sig->signature_bytes.len, (const uint8_t *)"other", 5),
                         1);
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pub);
    X509_free(x);
    char *name = strdup(sig->key_name);
    af__app_identity__get_public_certificate_for_app_response__free_unpacked(certs, NULL);
    af__app_identity__sign_for_app_response__free_unpacked(sig, NULL);
    return name;
}

static void test_signing_in_memory(void **state)
{
    char *a = sign_and_verify(*state, "hello");
    char *b = sign_and_verify(*state, ""); /* empty data signs too */
    assert_string_equal(a, b);             /* one key per process */
    free(a);
    free(b);
}

static void test_signing_key_survives_restart(void **state)
{
    char dir[] = "/tmp/af-aid-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct af_api_options opts = {.app_id = "testapp", .storage_path = dir};
    char *path = af_xasprintf("%s/app_identity_key.pem", dir);

    void *st = af_service_app_identity.create(&opts);
    struct stat sb;
    assert_int_equal(stat(path, &sb), -1); /* made on first use, not at startup */
    char *first = sign_and_verify(st, "payload");
    af_service_app_identity.destroy(st);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);

    st = af_service_app_identity.create(&opts);
    char *second = sign_and_verify(st, "payload");
    af_service_app_identity.destroy(st);
    assert_string_equal(first, second);

    /* A file that is not a key is refused, named, and left alone. */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("not a key\n", f);
    fclose(f);
    st = af_service_app_identity.create(&opts);
    Af__AppIdentity__SignForAppRequest req = AF__APP_IDENTITY__SIGN_FOR_APP_REQUEST__INIT;
    struct af_result res = call(st, "SignForApp", &req.base);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, AID(UNKNOWN_ERROR));
    assert_non_null(strstr(res.detail, "is not appfront's signing key"));
    assert_non_null(strstr(res.detail, path));
    svc_result_free(&res);
    Af__AppIdentity__GetPublicCertificateForAppRequest creq =
        AF__APP_IDENTITY__GET_PUBLIC_CERTIFICATE_FOR_APP_REQUEST__INIT;
    res = call(st, "GetPublicCertificatesForApp", &creq.base);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    svc_result_free(&res);
    af_service_app_identity.destroy(st);
    char text[32] = {0};
    f = fopen(path, "r");
    assert_non_null(fgets(text, sizeof(text), f));
    fclose(f);
    assert_string_equal(text, "not a key\n");

    unlink(path);
    rmdir(dir);
    free(path);
    free(first);
    free(second);
}

static void test_undecodable(void **state)
{
    static const uint8_t garbage[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    for (const struct af_method *m = af_service_app_identity.methods; m->name; m++) {
        struct af_result res = call_raw(*state, m->name, garbage, sizeof(garbage));
        assert_int_equal(res.kind, AF_RESULT_RPC_ERROR);
        assert_int_equal(res.code, AF_RPC_BAD_REQUEST);
        svc_result_free(&res);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_service_account_and_host, setup, teardown),
        cmocka_unit_test(test_domain_scoped_app),
        cmocka_unit_test_setup_teardown(test_access_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_access_token_bad_scopes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signing_in_memory, setup, teardown),
        cmocka_unit_test(test_signing_key_survives_restart),
        cmocka_unit_test_setup_teardown(test_undecodable, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
