/*
 * Unit tests of the blobstore service through its method tables, with the
 * real datastore service (its peer, apiserver/peer.h) on a real SQLite
 * file and real blob files in a temporary directory: upload sessions,
 * UploadCommit as the front end makes it, the __BlobInfo__ entity as the
 * datastore holds it, FetchData's ranges and errors, DeleteBlob, the key
 * helpers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "blobstore.pb-c.h"
#include "datastore_v3.pb-c.h"

#include "apiserver/peer.h"
#include "apiserver/services/datastore_wire.h"
#include "tests/unit/svc_call.h"

extern const struct af_service af_service_datastore_v3;
extern const struct af_service af_service_blobstore;

#define E(x) AF__BLOBSTORE__BLOBSTORE_SERVICE_ERROR__ERROR_CODE__##x

struct fixture {
    char dir[64];
    char ds_path[128];
    char blob_dir[128];
    const struct af_service *svcs[2];
    void *states[2];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/af-blob-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->ds_path, sizeof(f->ds_path), "%s/ds.sqlite3", f->dir);
    snprintf(f->blob_dir, sizeof(f->blob_dir), "%s/blobs", f->dir);
    struct af_api_options o = {.datastore_path = f->ds_path,
                               .storage_path = f->dir,
                               .app_id = "testapp",
                               .server_host = "localhost:8080"};
    f->svcs[0] = &af_service_datastore_v3;
    f->svcs[1] = &af_service_blobstore;
    f->states[0] = af_service_datastore_v3.create(&o);
    f->states[1] = af_service_blobstore.create(&o);
    af_peer_bind(f->svcs, f->states, 2);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    af_peer_bind(NULL, NULL, 0);
    af_service_blobstore.destroy(f->states[1]);
    af_service_datastore_v3.destroy(f->states[0]);
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static struct af_result call(struct fixture *f, const char *method, const ProtobufCMessage *m)
{
    return svc_call(&af_service_blobstore, f->states[1], method, m);
}

/* An internal method (the front end's way in). */
static struct af_result call_internal(struct fixture *f, const char *method,
                                      const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    protobuf_c_message_pack(msg, buf);
    struct af_result res = {.kind = -1};
    struct af_call c = {.service = "blobstore", .method = method, .request = buf,
                        .request_len = len, .request_id = "", .deadline_ns = 0};
    const struct af_method *m = af_service_blobstore.internal;
    while (m->name && strcmp(m->name, method) != 0)
        m++;
    assert_non_null(m->name);
    m->fn(f->states[1], &c, &res);
    free(buf);
    return res;
}

static void expect_app_error(struct af_result *res, int code)
{
    assert_int_equal(res->kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res->code, code);
    assert_non_null(res->detail);
    svc_result_free(res);
}

/* CreateUploadURL, returning the session part of the URL (malloc'd). */
static char *new_session(struct fixture *f, const char *path, int64_t total, int64_t per_blob)
{
    Af__Blobstore__CreateUploadURLRequest req = AF__BLOBSTORE__CREATE_UPLOAD_URLREQUEST__INIT;
    req.success_path = (char *)path;
    if (total) {
        req.has_max_upload_size_bytes = true;
        req.max_upload_size_bytes = total;
    }
    if (per_blob) {
        req.has_max_upload_size_per_blob_bytes = true;
        req.max_upload_size_per_blob_bytes = per_blob;
    }
    struct af_result res = call(f, "CreateUploadURL", &req.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Blobstore__CreateUploadURLResponse *out =
        af__blobstore__create_upload_urlresponse__unpack(NULL, res.response_len, res.response);
    assert_non_null(out);
    const char *prefix = "http://localhost:8080/_ah/upload/";
    assert_memory_equal(out->url, prefix, strlen(prefix));
    char *session = strdup(out->url + strlen(prefix));
    assert_true(strlen(session) >= 16);
    af__blobstore__create_upload_urlresponse__free_unpacked(out, NULL);
    svc_result_free(&res);
    return session;
}

/* A file under tmp/ as the front end leaves it. */
static void write_tmp(struct fixture *f, const char *name, const char *data)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/tmp/%s", f->blob_dir, name);
    FILE *fp = fopen(p, "w");
    assert_non_null(fp);
    fputs(data, fp);
    fclose(fp);
}

/* UploadCommit of one file; returns the new blob key (malloc'd). */
static char *commit_one(struct fixture *f, const char *session, const char *tmp, int64_t size)
{
    Af__Blobstore__UploadBlob b = AF__BLOBSTORE__UPLOAD_BLOB__INIT;
    b.tmp_name = (char *)tmp;
    b.has_size = true;
    b.size = size;
    b.md5_hex = "5eb63bbbe01eeed093cb22bb8f5acdc3";
    b.content_type = "text/plain";
    b.filename = "hello.txt";
    Af__Blobstore__UploadBlob *bp = &b;
    Af__Blobstore__UploadCommitRequest req = AF__BLOBSTORE__UPLOAD_COMMIT_REQUEST__INIT;
    req.session = (char *)session;
    req.n_blob = 1;
    req.blob = &bp;
    struct af_result res = call_internal(f, "UploadCommit", &req.base);
    if (res.kind != AF_RESULT_OK) {
        svc_result_free(&res);
        return NULL;
    }
    Af__Blobstore__UploadCommitResponse *out =
        af__blobstore__upload_commit_response__unpack(NULL, res.response_len, res.response);
    assert_non_null(out);
    assert_int_equal(out->n_blob_key, 1);
    assert_true(out->has_creation_usec);
    char *key = strdup(out->blob_key[0]);
    af__blobstore__upload_commit_response__free_unpacked(out, NULL);
    svc_result_free(&res);
    return key;
}

static struct af_result fetch(struct fixture *f, const char *key, int64_t start, int64_t end)
{
    Af__Blobstore__FetchDataRequest req = AF__BLOBSTORE__FETCH_DATA_REQUEST__INIT;
    req.blob_key = (char *)key;
    req.start_index = start;
    req.end_index = end;
    return call(f, "FetchData", &req.base);
}

static void expect_data(struct fixture *f, const char *key, int64_t start, int64_t end,
                        const char *want)
{
    struct af_result res = fetch(f, key, start, end);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Blobstore__FetchDataResponse *out =
        af__blobstore__fetch_data_response__unpack(NULL, res.response_len, res.response);
    assert_non_null(out);
    assert_int_equal(out->data.len, strlen(want));
    assert_memory_equal(out->data.data, want, strlen(want));
    af__blobstore__fetch_data_response__free_unpacked(out, NULL);
    svc_result_free(&res);
}

static void test_session_limits_and_refusals(void **state)
{
    struct fixture *f = *state;
    char *s = new_session(f, "/done?x=1", 1000, 10);
    Af__Blobstore__UploadSessionRequest q = AF__BLOBSTORE__UPLOAD_SESSION_REQUEST__INIT;
    q.session = s;
    struct af_result res = call_internal(f, "UploadSession", &q.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Blobstore__UploadSessionResponse *out =
        af__blobstore__upload_session_response__unpack(NULL, res.response_len, res.response);
    assert_string_equal(out->success_path, "/done?x=1");
    assert_true(out->has_max_upload_size_bytes);
    assert_int_equal(out->max_upload_size_bytes, 1000);
    assert_int_equal(out->max_upload_size_per_blob_bytes, 10);
    af__blobstore__upload_session_response__free_unpacked(out, NULL);
    svc_result_free(&res);
    free(s);

    q.session = "nosuchsession";
    res = call_internal(f, "UploadSession", &q.base);
    expect_app_error(&res, E(BLOB_NOT_FOUND));
    q.session = "../../etc/passwd";
    res = call_internal(f, "UploadSession", &q.base);
    expect_app_error(&res, E(BLOB_NOT_FOUND));

    Af__Blobstore__CreateUploadURLRequest req = AF__BLOBSTORE__CREATE_UPLOAD_URLREQUEST__INIT;
    req.success_path = "/ok";
    req.gs_bucket_name = "bucket";
    res = call(f, "CreateUploadURL", &req.base);
    expect_app_error(&res, E(PERMISSION_DENIED));
    req.gs_bucket_name = NULL;
    req.success_path = "no-slash";
    res = call(f, "CreateUploadURL", &req.base);
    expect_app_error(&res, E(ARGUMENT_OUT_OF_RANGE));
    req.success_path = "/a b";
    res = call(f, "CreateUploadURL", &req.base);
    expect_app_error(&res, E(ARGUMENT_OUT_OF_RANGE));
    char longp[2100];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = '\0';
    req.success_path = longp;
    res = call(f, "CreateUploadURL", &req.base);
    expect_app_error(&res, E(URL_TOO_LONG));
    req.success_path = "/ok";
    req.has_max_upload_size_bytes = true;
    req.max_upload_size_bytes = 0;
    res = call(f, "CreateUploadURL", &req.base);
    expect_app_error(&res, E(ARGUMENT_OUT_OF_RANGE));

    /* Garbage is a clear RPC error, not a crash. */
    res = svc_call_raw(&af_service_blobstore, f->states[1], "FetchData", "r",
                       (const uint8_t *)"\xff\xff", 2);
    assert_int_equal(res.kind, AF_RESULT_RPC_ERROR);
    svc_result_free(&res);
}

static void test_commit_fetch_delete(void **state)
{
    struct fixture *f = *state;
    char *s = new_session(f, "/done", 0, 0);
    write_tmp(f, "upload-aaa", "hello world");
    char *key = commit_one(f, s, "upload-aaa", 11);
    assert_non_null(key);

    /* Single use: the session is gone, a second commit is refused and its
     * file stays for the front end to remove. */
    Af__Blobstore__UploadSessionRequest q = AF__BLOBSTORE__UPLOAD_SESSION_REQUEST__INIT;
    q.session = s;
    struct af_result res = call_internal(f, "UploadSession", &q.base);
    expect_app_error(&res, E(BLOB_NOT_FOUND));
    write_tmp(f, "upload-bbb", "again");
    assert_null(commit_one(f, s, "upload-bbb", 5));
    char p[256];
    snprintf(p, sizeof(p), "%s/tmp/upload-bbb", f->blob_dir);
    assert_int_equal(access(p, F_OK), 0);

    /* The metadata are a __BlobInfo__ entity of app dev~testapp, read
     * through the datastore as blobstore.Stat reads them. */
    Af__Datastore__Path__Element el = AF__DATASTORE__PATH__ELEMENT__INIT;
    el.type = "__BlobInfo__";
    el.name = key;
    Af__Datastore__Path__Element *elp = &el;
    Af__Datastore__Path path = AF__DATASTORE__PATH__INIT;
    path.n_element = 1;
    path.element = &elp;
    Af__Datastore__Reference ref = AF__DATASTORE__REFERENCE__INIT;
    ref.app = "dev~testapp";
    ref.path = &path;
    Af__Datastore__Reference *refp = &ref;
    Af__Datastore__GetRequest g = AF__DATASTORE__GET_REQUEST__INIT;
    g.n_key = 1;
    g.key = &refp;
    size_t glen = 0;
    uint8_t *gbuf = af_ds_wire_pack(&g.base, &glen);
    res = svc_call_raw(&af_service_datastore_v3, f->states[0], "Get", "r", gbuf, glen);
    free(gbuf);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Datastore__GetResponse *gr = (Af__Datastore__GetResponse *)af_ds_wire_unpack(
        &af__datastore__get_response__descriptor, res.response, res.response_len);
    assert_non_null(gr);
    assert_int_equal(gr->n_entity, 1);
    Af__Datastore__EntityProto *e = gr->entity[0]->entity;
    assert_non_null(e);
    int seen = 0;
    for (size_t i = 0; i < e->n_property; i++) {
        Af__Datastore__Property *pr = e->property[i];
        if (strcmp(pr->name, "size") == 0) {
            assert_int_equal(pr->value->int64_value, 11);
            seen++;
        } else if (strcmp(pr->name, "creation") == 0) {
            assert_int_equal(pr->meaning, AF__DATASTORE__PROPERTY__MEANING__GD_WHEN);
            seen++;
        } else if (strcmp(pr->name, "content_type") == 0 || strcmp(pr->name, "filename") == 0 ||
                   strcmp(pr->name, "md5_hash") == 0) {
            seen++;
        }
    }
    assert_int_equal(seen, 5);
    af__datastore__get_response__free_unpacked(gr, NULL);
    svc_result_free(&res);

    /* Inclusive ranges; past the end is short or empty, never an error. */
    expect_data(f, key, 0, 4, "hello");
    expect_data(f, key, 6, 1000, "world");
    expect_data(f, key, 11, 20, "");
    expect_data(f, key, 10, 10, "d");
    res = fetch(f, key, -1, 3);
    expect_app_error(&res, E(DATA_INDEX_OUT_OF_RANGE));
    res = fetch(f, key, 5, 4);
    expect_app_error(&res, E(DATA_INDEX_OUT_OF_RANGE));
    res = fetch(f, key, 0, 1015807);
    assert_int_equal(res.kind, AF_RESULT_OK); /* exactly MAX_BLOB_FETCH_SIZE */
    svc_result_free(&res);
    res = fetch(f, key, 0, 1015808);
    expect_app_error(&res, E(BLOB_FETCH_SIZE_TOO_LARGE));
    res = fetch(f, "AAAAAAAAAAAAAAAAAAAAAA", 0, 1);
    expect_app_error(&res, E(BLOB_NOT_FOUND));
    res = fetch(f, "../datastore", 0, 1);
    expect_app_error(&res, E(BLOB_NOT_FOUND));
    res = fetch(f, "encoded_gs_file:YS9i", 0, 1);
    expect_app_error(&res, E(PERMISSION_DENIED));

    Af__Blobstore__ServeInfoRequest si = AF__BLOBSTORE__SERVE_INFO_REQUEST__INIT;
    si.blob_key = key;
    res = call_internal(f, "ServeInfo", &si.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Blobstore__ServeInfoResponse *sr =
        af__blobstore__serve_info_response__unpack(NULL, res.response_len, res.response);
    assert_int_equal(sr->size, 11);
    assert_string_equal(sr->content_type, "text/plain");
    assert_int_equal(access(sr->path, R_OK), 0);
    snprintf(p, sizeof(p), "%s", sr->path);
    af__blobstore__serve_info_response__free_unpacked(sr, NULL);
    svc_result_free(&res);

    /* Delete: entity and file go; deleting again is a no-op. */
    Af__Blobstore__DeleteBlobRequest d = AF__BLOBSTORE__DELETE_BLOB_REQUEST__INIT;
    char *keys[2] = {key, "AAAAAAAAAAAAAAAAAAAAAA"};
    d.n_blob_key = 2;
    d.blob_key = keys;
    res = call(f, "DeleteBlob", &d.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    svc_result_free(&res);
    assert_int_not_equal(access(p, F_OK), 0);
    res = fetch(f, key, 0, 4);
    expect_app_error(&res, E(BLOB_NOT_FOUND));
    res = call_internal(f, "ServeInfo", &si.base);
    expect_app_error(&res, E(BLOB_NOT_FOUND));
    res = call(f, "DeleteBlob", &d.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    svc_result_free(&res);
    free(key);
    free(s);
}

static void test_key_helpers(void **state)
{
    struct fixture *f = *state;
    Af__Blobstore__CreateEncodedGoogleStorageKeyRequest g =
        AF__BLOBSTORE__CREATE_ENCODED_GOOGLE_STORAGE_KEY_REQUEST__INIT;
    g.filename = "/gs/bucket/obj";
    struct af_result res = call(f, "CreateEncodedGoogleStorageKey", &g.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Blobstore__CreateEncodedGoogleStorageKeyResponse *gr =
        af__blobstore__create_encoded_google_storage_key_response__unpack(NULL, res.response_len,
                                                                          res.response);
    assert_string_equal(gr->blob_key, "encoded_gs_file:YnVja2V0L29iag");
    af__blobstore__create_encoded_google_storage_key_response__free_unpacked(gr, NULL);
    svc_result_free(&res);
    g.filename = "bucket/obj";
    res = call(f, "CreateEncodedGoogleStorageKey", &g.base);
    expect_app_error(&res, E(ARGUMENT_OUT_OF_RANGE));

    Af__Blobstore__DecodeBlobKeyRequest d = AF__BLOBSTORE__DECODE_BLOB_KEY_REQUEST__INIT;
    char *keys[2] = {"AAEC", "aGk="};
    d.n_blob_key = 2;
    d.blob_key = keys;
    res = call(f, "DecodeBlobKey", &d.base);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Blobstore__DecodeBlobKeyResponse *dr =
        af__blobstore__decode_blob_key_response__unpack(NULL, res.response_len, res.response);
    assert_int_equal(dr->n_decoded, 2);
    assert_int_equal(dr->decoded[0].len, 3);
    assert_memory_equal(dr->decoded[0].data, "\0\1\2", 3);
    assert_memory_equal(dr->decoded[1].data, "hi", 2);
    af__blobstore__decode_blob_key_response__free_unpacked(dr, NULL);
    svc_result_free(&res);
    keys[1] = "not base64!";
    res = call(f, "DecodeBlobKey", &d.base);
    expect_app_error(&res, E(INVALID_BLOB_KEY));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_session_limits_and_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_fetch_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_helpers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
