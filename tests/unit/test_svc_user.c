/*
 * Unit tests of the "user" service: every call goes through the service's
 * own method table with a packed request, as the backend makes it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apiserver/services/user.c"
#include "tests/unit/svc_call.h"

static const struct af_api_options opts = {.server_host = "localhost:8080", .app_id = "testapp"};

static struct af_result call_raw(void *state, const char *method, const uint8_t *req, size_t len)
{
    return svc_call_raw(&af_service_user, state, method, "req-1", req, len);
}

static struct af_result call(void *state, const char *method, const ProtobufCMessage *msg)
{
    return svc_call(&af_service_user, state, method, msg);
}


static int setup(void **state)
{
    *state = af_service_user.create(&opts);
    return 0;
}

static int teardown(void **state)
{
    af_service_user.destroy(*state);
    return 0;
}

static char *login_url(void *st, const char *dest, struct af_result *res)
{
    Af__User__CreateLoginURLRequest req = AF__USER__CREATE_LOGIN_URLREQUEST__INIT;
    req.destination_url = (char *)dest;
    *res = call(st, "CreateLoginURL", &req.base);
    if (res->kind != AF_RESULT_OK)
        return NULL;
    Af__User__CreateLoginURLResponse *out =
        af__user__create_login_urlresponse__unpack(NULL, res->response_len, res->response);
    assert_non_null(out);
    char *url = strdup(out->login_url);
    af__user__create_login_urlresponse__free_unpacked(out, NULL);
    return url;
}

static void test_login_url_absolute(void **state)
{
    struct af_result res;
    char *url = login_url(*state, "http://example.com/a?b=c&d", &res);
    assert_int_equal(res.kind, AF_RESULT_OK);
    assert_string_equal(url, "http://localhost:8080/_ah/login?continue="
                             "http%3A//example.com/a%3Fb%3Dc%26d");
    free(url);
    svc_result_free(&res);
}

static void test_login_url_relative(void **state)
{
    struct af_result res;
    char *url = login_url(*state, "/guestbook", &res);
    assert_string_equal(url, "http://localhost:8080/_ah/login?continue="
                             "http%3A//localhost%3A8080/guestbook");
    free(url);
    svc_result_free(&res);

    url = login_url(*state, "", &res);
    assert_string_equal(url, "http://localhost:8080/_ah/login?continue="
                             "http%3A//localhost%3A8080/");
    free(url);
    svc_result_free(&res);
}

static void test_login_url_too_long(void **state)
{
    char dest[USER_MAX_DEST_LEN + 2];
    memset(dest, 'a', sizeof(dest) - 1);
    dest[sizeof(dest) - 1] = '\0';
    struct af_result res;
    assert_null(login_url(*state, dest, &res));
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, AF__USER__USER_SERVICE_ERROR__ERROR_CODE__REDIRECT_URL_TOO_LONG);
    assert_non_null(res.detail);
    svc_result_free(&res);

    /* Exactly at the bound is fine. */
    dest[USER_MAX_DEST_LEN] = '\0';
    char *url = login_url(*state, dest, &res);
    assert_int_equal(res.kind, AF_RESULT_OK);
    free(url);
    svc_result_free(&res);
}

static void test_login_federated_refused(void **state)
{
    Af__User__CreateLoginURLRequest req = AF__USER__CREATE_LOGIN_URLREQUEST__INIT;
    req.destination_url = "/";
    req.federated_identity = "https://openid.example/";
    struct af_result res = call(*state, "CreateLoginURL", &req.base);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, AF__USER__USER_SERVICE_ERROR__ERROR_CODE__NOT_ALLOWED);
    svc_result_free(&res);
}

static void test_logout_url(void **state)
{
    Af__User__CreateLogoutURLRequest req = AF__USER__CREATE_LOGOUT_URLREQUEST__INIT;
    req.destination_url = "https://x.test/#frag ment";
    struct af_result res = call(*state, "CreateLogoutURL", &req.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__User__CreateLogoutURLResponse *out =
        af__user__create_logout_urlresponse__unpack(NULL, res.response_len, res.response);
    assert_non_null(out);
    assert_string_equal(out->logout_url, "http://localhost:8080/_ah/logout?continue="
                                         "https%3A//x.test/%23frag%20ment");
    af__user__create_logout_urlresponse__free_unpacked(out, NULL);
    svc_result_free(&res);
}

static void test_oauth_user(void **state)
{
    Af__User__GetOAuthUserRequest req = AF__USER__GET_OAUTH_USER_REQUEST__INIT;
    char *scopes[] = {"https://www.googleapis.com/auth/userinfo.email"};
    req.n_scopes = 1;
    req.scopes = scopes;
    struct af_result res = call(*state, "GetOAuthUser", &req.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__User__GetOAuthUserResponse *out =
        af__user__get_oauth_user_response__unpack(NULL, res.response_len, res.response);
    assert_non_null(out);
    assert_string_equal(out->email, "example@example.com");
    assert_string_equal(out->auth_domain, "gmail.com");
    assert_int_equal(out->n_scopes, 1);
    assert_string_equal(out->scopes[0], scopes[0]);
    af__user__get_oauth_user_response__free_unpacked(out, NULL);
    svc_result_free(&res);

    Af__User__CheckOAuthSignatureRequest creq = AF__USER__CHECK_OAUTH_SIGNATURE_REQUEST__INIT;
    res = call(*state, "CheckOAuthSignature", &creq.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__User__CheckOAuthSignatureResponse *cout =
        af__user__check_oauth_signature_response__unpack(NULL, res.response_len, res.response);
    assert_non_null(cout);
    assert_string_equal(cout->oauth_consumer_key, "example.com");
    af__user__check_oauth_signature_response__free_unpacked(cout, NULL);
    svc_result_free(&res);
}

/* Garbage, a truncated field and a message missing its required field: all
 * must come back as BAD_REQUEST, never a crash. */
static void test_undecodable(void **state)
{
    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff};
    static const uint8_t truncated[] = {0x0a, 0x10, 'h', 't'};
    const char *methods[] = {"CreateLoginURL", "CreateLogoutURL", "GetOAuthUser",
                             "CheckOAuthSignature"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        struct af_result res = call_raw(*state, methods[i], garbage, sizeof(garbage));
        assert_int_equal(res.kind, AF_RESULT_RPC_ERROR);
        assert_int_equal(res.code, AF_RPC_BAD_REQUEST);
        svc_result_free(&res);
        res = call_raw(*state, methods[i], truncated, sizeof(truncated));
        assert_int_equal(res.kind, AF_RESULT_RPC_ERROR);
        svc_result_free(&res);
    }
    /* destination_url is required. */
    struct af_result res = call_raw(*state, "CreateLoginURL", NULL, 0);
    assert_int_equal(res.kind, AF_RESULT_RPC_ERROR);
    assert_int_equal(res.code, AF_RPC_BAD_REQUEST);
    svc_result_free(&res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_login_url_absolute, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_url_relative, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_url_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_federated_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logout_url, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oauth_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_undecodable, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
