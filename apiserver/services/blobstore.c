/*
 * blobstore — the "blobstore" service (docs/services.md, "blobstore").
 *
 * A blob is two things, as in dev_appserver: its bytes, one file per blob
 * in the blobstore directory (--blobstore_path, default STORAGE/blobs)
 * named by its key, and its metadata, a `__BlobInfo__` datastore entity
 * in the empty namespace whose key name is the blob key, with the
 * properties the official libraries read (content_type, creation,
 * filename, size, md5_hash). The entities go through the datastore
 * service itself (apiserver/peer.h), so blobstore.Stat, queries on
 * __BlobInfo__ and the admin console see them like any entity.
 *
 * Uploads are the front end's work (proxy/upload.c): CreateUploadURL
 * keeps an upload session as a `__BlobUploadSession__` entity (durable,
 * single use); the front end streams each file part into a file of its
 * own under tmp/, fsyncs it, and hands the lot to the internal method
 * UploadCommit, which uses the session up, moves the files to their keys
 * and writes their entities. Serving (proxy/blobserve.c) asks ServeInfo.
 *
 * Order of writes, so that a crash never leaves an entity without its
 * bytes: a blob's file is renamed into place and the directory fsynced
 * before its entity is put; DeleteBlob deletes the entities first, then
 * the files. A crash in between leaves at worst a file no entity names.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blobstore.pb-c.h"
#include "datastore_v3.pb-c.h"

#include "apiserver/peer.h"
#include "apiserver/service.h"
#include "apiserver/services/datastore_wire.h"
#include "common/b64url.h"
#include "common/log.h"
#include "common/xalloc.h"

/* App Engine's MAX_BLOB_FETCH_SIZE: the most one FetchData returns. */
#define MAX_BLOB_FETCH_SIZE 1015808
/* The longest success_path accepted (URL_TOO_LONG beyond). */
#define MAX_SUCCESS_PATH 2000
#define GS_KEY_PREFIX "encoded_gs_file:"
#define BLOB_INFO_KIND "__BlobInfo__"
#define SESSION_KIND "__BlobUploadSession__"

enum {
    E_INTERNAL = AF__BLOBSTORE__BLOBSTORE_SERVICE_ERROR__ERROR_CODE__INTERNAL_ERROR,
    E_URL_TOO_LONG = AF__BLOBSTORE__BLOBSTORE_SERVICE_ERROR__ERROR_CODE__URL_TOO_LONG,
    E_PERMISSION = AF__BLOBSTORE__BLOBSTORE_SERVICE_ERROR__ERROR_CODE__PERMISSION_DENIED,
    E_NOT_FOUND = AF__BLOBSTORE__BLOBSTORE_SERVICE_ERROR__ERROR_CODE__BLOB_NOT_FOUND,
    E_RANGE = AF__BLOBSTORE__BLOBSTORE_SERVICE_ERROR__ERROR_CODE__DATA_INDEX_OUT_OF_RANGE,
    E_TOO_LARGE = AF__BLOBSTORE__BLOBSTORE_SERVICE_ERROR__ERROR_CODE__BLOB_FETCH_SIZE_TOO_LARGE,
    E_ARGUMENT = AF__BLOBSTORE__BLOBSTORE_SERVICE_ERROR__ERROR_CODE__ARGUMENT_OUT_OF_RANGE,
    E_INVALID_KEY = AF__BLOBSTORE__BLOBSTORE_SERVICE_ERROR__ERROR_CODE__INVALID_BLOB_KEY,
};

struct blob_state {
    char *dir;         /* the blobstore directory; files named by key */
    char *tmp;         /* dir/tmp: uploads being written by the front end */
    char *app;         /* "dev~APP": the app of the datastore keys */
    char *server_host; /* host:port of the default module: upload URLs */
};

/* ---- names and files ------------------------------------------------------ */

/* A blob key that can name a file: what this service makes (URL-safe
 * base64) and what dev_appserver made (the same, padded). Anything else
 * names no blob. */
static bool key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '='))
            return false;
    }
    return true;
}

static char *random_name(void)
{
    uint8_t r[16];
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        for (size_t i = 0; i < sizeof(r); i++)
            r[i] = (uint8_t)(ts.tv_nsec >> (i % 4 * 8) ^ (long)i * 131 ^ getpid());
    }
    return af_b64url_encode(r, sizeof(r));
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int r = fsync(fd);
    close(fd);
    return r;
}

/* Removes every plain file of dir (not its subdirectories). */
static void empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char *p = af_xasprintf("%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISREG(st.st_mode))
            unlink(p);
        free(p);
    }
    closedir(d);
}

static int mkdir_p(const char *path)
{
    char *p = af_xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            free(p);
            return -1;
        }
        *s = '/';
    }
    int r = mkdir(p, 0700) != 0 && errno != EEXIST ? -1 : 0;
    free(p);
    return r;
}

static int64_t now_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- datastore entities ----------------------------------------------------- */

#define MAX_PROPS 8

/* An entity being built or read: its key and properties, all borrowed. */
struct ent {
    Af__Datastore__EntityProto e;
    Af__Datastore__Reference key;
    Af__Datastore__Path path;
    Af__Datastore__Path group;
    Af__Datastore__Path__Element el;
    Af__Datastore__Path__Element *elp;
    Af__Datastore__Property p[MAX_PROPS];
    Af__Datastore__PropertyValue v[MAX_PROPS];
    Af__Datastore__Property *pp[MAX_PROPS];
};

static void key_init(struct ent *x, const struct blob_state *s, const char *kind, const char *name)
{
    x->el = (Af__Datastore__Path__Element)AF__DATASTORE__PATH__ELEMENT__INIT;
    x->el.type = (char *)kind;
    x->el.name = (char *)name;
    x->elp = &x->el;
    x->path = (Af__Datastore__Path)AF__DATASTORE__PATH__INIT;
    x->path.n_element = 1;
    x->path.element = &x->elp;
    x->group = x->path;
    x->key = (Af__Datastore__Reference)AF__DATASTORE__REFERENCE__INIT;
    x->key.app = s->app;
    x->key.path = &x->path;
}

static void ent_init(struct ent *x, const struct blob_state *s, const char *kind, const char *name)
{
    key_init(x, s, kind, name);
    x->e = (Af__Datastore__EntityProto)AF__DATASTORE__ENTITY_PROTO__INIT;
    x->e.key = &x->key;
    x->e.entity_group = &x->group;
    x->e.property = x->pp;
}

static Af__Datastore__PropertyValue *ent_add(struct ent *x, const char *name, int meaning)
{
    size_t i = x->e.n_property++;
    x->v[i] = (Af__Datastore__PropertyValue)AF__DATASTORE__PROPERTY_VALUE__INIT;
    x->p[i] = (Af__Datastore__Property)AF__DATASTORE__PROPERTY__INIT;
    x->p[i].name = (char *)name;
    x->p[i].value = &x->v[i];
    if (meaning) {
        x->p[i].has_meaning = true;
        x->p[i].meaning = meaning;
    }
    x->pp[i] = &x->p[i];
    return &x->v[i];
}

static void ent_str(struct ent *x, const char *name, const char *val)
{
    Af__Datastore__PropertyValue *v = ent_add(x, name, 0);
    v->has_string_value = true;
    v->string_value.data = (uint8_t *)val;
    v->string_value.len = strlen(val);
}

static void ent_int(struct ent *x, const char *name, int64_t val, int meaning)
{
    Af__Datastore__PropertyValue *v = ent_add(x, name, meaning);
    v->has_int64_value = true;
    v->int64_value = val;
}

/* A datastore failure as this service's INTERNAL_ERROR, with its detail. */
static void ds_failed(struct af_result *res, struct af_result *ds, const char *what)
{
    af_result_app_error(res, E_INTERNAL, "blobstore: %s: the datastore failed: %s", what,
                        ds->detail ? ds->detail : "no detail");
    free(ds->detail);
    free(ds->response);
}

/* A datastore_v3 method on msg, in the official encoding (groups). */
static void ds_call(const char *method, const ProtobufCMessage *msg, struct af_result *ds)
{
    size_t len = 0;
    uint8_t *buf = af_ds_wire_pack(msg, &len);
    af_peer_call("datastore_v3", method, buf, len, ds);
    free(buf);
}

/* Gets one entity by kind and name. Returns 1 with *out (free with
 * af__datastore__get_response__free_unpacked(*resp)), 0 when there is
 * none, -1 with res set to the error. */
static int ds_get(struct blob_state *s, const char *kind, const char *name,
                  Af__Datastore__GetResponse **resp, Af__Datastore__EntityProto **out,
                  struct af_result *res)
{
    struct ent x;
    key_init(&x, s, kind, name);
    Af__Datastore__Reference *keys[1] = {&x.key};
    Af__Datastore__GetRequest req = AF__DATASTORE__GET_REQUEST__INIT;
    req.n_key = 1;
    req.key = keys;
    struct af_result ds;
    ds_call("Get", &req.base, &ds);
    if (ds.kind != AF_RESULT_OK) {
        ds_failed(res, &ds, "Get");
        return -1;
    }
    *resp = (Af__Datastore__GetResponse *)af_ds_wire_unpack(
        &af__datastore__get_response__descriptor, ds.response, ds.response_len);
    free(ds.response);
    free(ds.detail);
    if (!*resp) {
        af_result_app_error(res, E_INTERNAL, "blobstore: cannot decode the datastore's answer");
        return -1;
    }
    if ((*resp)->n_entity == 1 && (*resp)->entity[0]->entity) {
        *out = (*resp)->entity[0]->entity;
        return 1;
    }
    af__datastore__get_response__free_unpacked(*resp, NULL);
    *resp = NULL;
    return 0;
}

static int ds_put(struct ent *ents, size_t n, struct af_result *res)
{
    Af__Datastore__EntityProto **ep = af_xcalloc(n ? n : 1, sizeof(*ep));
    for (size_t i = 0; i < n; i++)
        ep[i] = &ents[i].e;
    Af__Datastore__PutRequest req = AF__DATASTORE__PUT_REQUEST__INIT;
    req.n_entity = n;
    req.entity = ep;
    struct af_result ds;
    ds_call("Put", &req.base, &ds);
    free(ep);
    if (ds.kind != AF_RESULT_OK) {
        ds_failed(res, &ds, "Put");
        return -1;
    }
    free(ds.response);
    free(ds.detail);
    return 0;
}

static int ds_delete(struct blob_state *s, const char *kind, char *const *names, size_t n,
                     struct af_result *res)
{
    struct ent *x = af_xcalloc(n ? n : 1, sizeof(*x));
    Af__Datastore__Reference **keys = af_xcalloc(n ? n : 1, sizeof(*keys));
    for (size_t i = 0; i < n; i++) {
        key_init(&x[i], s, kind, names[i]);
        keys[i] = &x[i].key;
    }
    Af__Datastore__DeleteRequest req = AF__DATASTORE__DELETE_REQUEST__INIT;
    req.n_key = n;
    req.key = keys;
    struct af_result ds;
    ds_call("Delete", &req.base, &ds);
    free(keys);
    free(x);
    if (ds.kind != AF_RESULT_OK) {
        ds_failed(res, &ds, "Delete");
        return -1;
    }
    free(ds.response);
    free(ds.detail);
    return 0;
}

/* A property of a read entity, or NULL. */
static const Af__Datastore__PropertyValue *prop(const Af__Datastore__EntityProto *e,
                                                const char *name)
{
    for (size_t i = 0; i < e->n_property; i++)
        if (strcmp(e->property[i]->name, name) == 0)
            return e->property[i]->value;
    for (size_t i = 0; i < e->n_raw_property; i++)
        if (strcmp(e->raw_property[i]->name, name) == 0)
            return e->raw_property[i]->value;
    return NULL;
}

/* A string property as a new string ("" when absent). */
static char *prop_str(const Af__Datastore__EntityProto *e, const char *name)
{
    const Af__Datastore__PropertyValue *v = prop(e, name);
    if (!v || !v->has_string_value)
        return af_xstrdup("");
    char *out = af_xmalloc(v->string_value.len + 1);
    memcpy(out, v->string_value.data, v->string_value.len);
    out[v->string_value.len] = '\0';
    return out;
}

static bool prop_int(const Af__Datastore__EntityProto *e, const char *name, int64_t *out)
{
    const Af__Datastore__PropertyValue *v = prop(e, name);
    if (!v || !v->has_int64_value)
        return false;
    *out = v->int64_value;
    return true;
}

/* ---- the public methods --------------------------------------------------------- */

#define UNPACK(type, fn, what)                                                                 \
    type *req = fn(NULL, call->request_len, call->request);                                    \
    if (!req) {                                                                                \
        af_result_rpc_error(res, AF_RPC_BAD_REQUEST, "blobstore: cannot decode " what);        \
        return;                                                                                \
    }

/* Where the path may go: the request line the front end writes. */
static bool path_ok(const char *p)
{
    if (p[0] != '/')
        return false;
    for (; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return false;
    return true;
}

static void create_upload_url(void *state, const struct af_call *call, struct af_result *res)
{
    struct blob_state *s = state;
    UNPACK(Af__Blobstore__CreateUploadURLRequest, af__blobstore__create_upload_urlrequest__unpack,
           "CreateUploadURLRequest");
    if (strlen(req->success_path) > MAX_SUCCESS_PATH) {
        af_result_app_error(res, E_URL_TOO_LONG,
                            "blobstore: success_path is longer than %d bytes", MAX_SUCCESS_PATH);
    } else if (!path_ok(req->success_path)) {
        af_result_app_error(res, E_ARGUMENT,
                            "blobstore: success_path \"%.200s\" must be a path of this app "
                            "starting with '/', without spaces or control characters",
                            req->success_path);
    } else if ((req->has_max_upload_size_bytes && req->max_upload_size_bytes < 1) ||
               (req->has_max_upload_size_per_blob_bytes &&
                req->max_upload_size_per_blob_bytes < 1)) {
        af_result_app_error(res, E_ARGUMENT,
                            "blobstore: max_upload_size_bytes and "
                            "max_upload_size_per_blob_bytes must be at least 1 when given");
    } else if (req->gs_bucket_name && req->gs_bucket_name[0]) {
        af_result_app_error(res, E_PERMISSION,
                            "blobstore: gs_bucket_name \"%.200s\": appfront has no Cloud Storage; "
                            "create the upload URL without a bucket to store uploads in the "
                            "local blobstore",
                            req->gs_bucket_name);
    } else {
        char *session = random_name();
        struct ent x;
        ent_init(&x, s, SESSION_KIND, session);
        ent_str(&x, "success_path", req->success_path);
        if (req->has_max_upload_size_bytes)
            ent_int(&x, "max_bytes_total", req->max_upload_size_bytes, 0);
        if (req->has_max_upload_size_per_blob_bytes)
            ent_int(&x, "max_bytes_per_blob", req->max_upload_size_per_blob_bytes, 0);
        ent_int(&x, "creation", now_usec(), AF__DATASTORE__PROPERTY__MEANING__GD_WHEN);
        if (ds_put(&x, 1, res) == 0) {
            char *url = af_xasprintf("http://%s/_ah/upload/%s", s->server_host, session);
            Af__Blobstore__CreateUploadURLResponse out =
                AF__BLOBSTORE__CREATE_UPLOAD_URLRESPONSE__INIT;
            out.url = url;
            af_result_pack(res, &out.base);
            free(url);
        }
        free(session);
    }
    af__blobstore__create_upload_urlrequest__free_unpacked(req, NULL);
}

/* Removes blob files by key (after their entities are gone). */
static void unlink_blobs(struct blob_state *s, char *const *keys, size_t n)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        if (!key_ok(keys[i]))
            continue;
        char *p = af_xasprintf("%s/%s", s->dir, keys[i]);
        if (unlink(p) == 0)
            any = true;
        else if (errno != ENOENT)
            af_warn("blobstore: cannot remove %s: %s", p, strerror(errno));
        free(p);
    }
    if (any)
        fsync_dir(s->dir);
}

static void delete_blob(void *state, const struct af_call *call, struct af_result *res)
{
    struct blob_state *s = state;
    UNPACK(Af__Blobstore__DeleteBlobRequest, af__blobstore__delete_blob_request__unpack,
           "DeleteBlobRequest");
    /* Keys of blobs that do not exist are no-ops, as in dev_appserver. */
    if (ds_delete(s, BLOB_INFO_KIND, req->blob_key, req->n_blob_key, res) == 0) {
        unlink_blobs(s, req->blob_key, req->n_blob_key);
        af_result_ok(res, NULL, 0);
    }
    af__blobstore__delete_blob_request__free_unpacked(req, NULL);
}

/* The blob's size and content type from its __BlobInfo__. Returns 1, 0
 * when there is no such blob (res set to BLOB_NOT_FOUND), -1 on a
 * failure (res set). */
static int blob_info(struct blob_state *s, const char *key, int64_t *size, char **ctype,
                     struct af_result *res)
{
    if (strncmp(key, GS_KEY_PREFIX, strlen(GS_KEY_PREFIX)) == 0) {
        af_result_app_error(res, E_PERMISSION,
                            "blobstore: \"%.200s\" names a Cloud Storage object, and appfront "
                            "has no Cloud Storage",
                            key);
        return -1;
    }
    if (!key_ok(key)) {
        af_result_app_error(res, E_NOT_FOUND, "blobstore: no blob has the key \"%.200s\"", key);
        return 0;
    }
    Af__Datastore__GetResponse *resp = NULL;
    Af__Datastore__EntityProto *e = NULL;
    int r = ds_get(s, BLOB_INFO_KIND, key, &resp, &e, res);
    if (r <= 0) {
        if (r == 0)
            af_result_app_error(res, E_NOT_FOUND, "blobstore: no blob has the key \"%.200s\"",
                                key);
        return r;
    }
    *size = 0;
    prop_int(e, "size", size);
    if (ctype)
        *ctype = prop_str(e, "content_type");
    af__datastore__get_response__free_unpacked(resp, NULL);
    return 1;
}

static void fetch_data(void *state, const struct af_call *call, struct af_result *res)
{
    struct blob_state *s = state;
    UNPACK(Af__Blobstore__FetchDataRequest, af__blobstore__fetch_data_request__unpack,
           "FetchDataRequest");
    int64_t start = req->start_index, end = req->end_index, size = 0;
    /* The checks in App Engine's order: indexes, size, then the blob. */
    if (start < 0 || end < 0) {
        af_result_app_error(res, E_RANGE, "blobstore: start_index and end_index must not be "
                                          "negative");
    } else if (end < start) {
        af_result_app_error(res, E_RANGE,
                            "blobstore: end_index %" PRId64 " is before start_index %" PRId64
                            " (both are inclusive)",
                            end, start);
    } else if (end - start + 1 > MAX_BLOB_FETCH_SIZE) {
        af_result_app_error(res, E_TOO_LARGE,
                            "blobstore: %" PRId64 " bytes asked; one FetchData returns at most %d",
                            end - start + 1, MAX_BLOB_FETCH_SIZE);
    } else if (blob_info(s, req->blob_key, &size, NULL, res) == 1) {
        /* Past the end is a short or empty answer, not an error: the Go
         * library's reader stops at an empty one. */
        size_t want = start >= size ? 0 : (size_t)((end < size ? end + 1 : size) - start);
        uint8_t *data = af_xmalloc(want ? want : 1);
        char *p = af_xasprintf("%s/%s", s->dir, req->blob_key);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        ssize_t got = 0;
        if (fd >= 0 && want) {
            size_t done = 0;
            while (done < want) {
                ssize_t r = pread(fd, data + done, want - done, (off_t)(start + (int64_t)done));
                if (r < 0 && errno == EINTR)
                    continue;
                if (r <= 0)
                    break;
                done += (size_t)r;
            }
            got = (ssize_t)done;
        }
        if (fd < 0) {
            af_result_app_error(res, E_INTERNAL, "blobstore: the file of blob %s: %s",
                                req->blob_key, strerror(errno));
        } else {
            Af__Blobstore__FetchDataResponse out = AF__BLOBSTORE__FETCH_DATA_RESPONSE__INIT;
            out.data.data = data;
            out.data.len = (size_t)got;
            af_result_pack(res, &out.base);
            close(fd);
        }
        free(p);
        free(data);
    }
    af__blobstore__fetch_data_request__free_unpacked(req, NULL);
}

static void decode_blob_key(void *state, const struct af_call *call, struct af_result *res)
{
    UNPACK(Af__Blobstore__DecodeBlobKeyRequest, af__blobstore__decode_blob_key_request__unpack,
           "DecodeBlobKeyRequest");
    size_t n = req->n_blob_key;
    ProtobufCBinaryData *dec = af_xcalloc(n ? n : 1, sizeof(*dec));
    size_t i = 0;
    for (; i < n; i++) {
        size_t len = 0;
        if (af_b64url_decode(req->blob_key[i], &dec[i].data, &len) != 0) {
            af_result_app_error(res, E_INVALID_KEY,
                                "blobstore: \"%.200s\" is not a blob key (URL-safe base64)",
                                req->blob_key[i]);
            break;
        }
        dec[i].len = len;
    }
    if (i == n) {
        Af__Blobstore__DecodeBlobKeyResponse out = AF__BLOBSTORE__DECODE_BLOB_KEY_RESPONSE__INIT;
        out.n_decoded = n;
        out.decoded = dec;
        af_result_pack(res, &out.base);
    }
    for (size_t j = 0; j < i; j++)
        free(dec[j].data);
    free(dec);
    af__blobstore__decode_blob_key_request__free_unpacked(req, NULL);
}

/* Like dev_appserver: the key of a Cloud Storage object is its
 * "bucket/object" name in URL-safe base64 behind a fixed prefix. appfront
 * has no Cloud Storage, so such a key only round-trips; FetchData and
 * serving refuse it. */
static void create_gs_key(void *state, const struct af_call *call, struct af_result *res)
{
    UNPACK(Af__Blobstore__CreateEncodedGoogleStorageKeyRequest,
           af__blobstore__create_encoded_google_storage_key_request__unpack,
           "CreateEncodedGoogleStorageKeyRequest");
    const char *f = req->filename;
    if (strncmp(f, "/gs/", 4) != 0 || !f[4]) {
        af_result_app_error(res, E_ARGUMENT,
                            "blobstore: filename \"%.200s\" must be /gs/BUCKET/OBJECT", f);
    } else {
        char *enc = af_b64url_encode((const uint8_t *)f + 4, strlen(f + 4));
        char *key = af_xasprintf("%s%s", GS_KEY_PREFIX, enc);
        Af__Blobstore__CreateEncodedGoogleStorageKeyResponse out =
            AF__BLOBSTORE__CREATE_ENCODED_GOOGLE_STORAGE_KEY_RESPONSE__INIT;
        out.blob_key = key;
        af_result_pack(res, &out.base);
        free(key);
        free(enc);
    }
    af__blobstore__create_encoded_google_storage_key_request__free_unpacked(req, NULL);
}

/* ---- internal methods (the front end's) ------------------------------------------ */

static void upload_session(void *state, const struct af_call *call, struct af_result *res)
{
    struct blob_state *s = state;
    UNPACK(Af__Blobstore__UploadSessionRequest, af__blobstore__upload_session_request__unpack,
           "UploadSessionRequest");
    Af__Datastore__GetResponse *resp = NULL;
    Af__Datastore__EntityProto *e = NULL;
    int r = req->session && key_ok(req->session)
                ? ds_get(s, SESSION_KIND, req->session, &resp, &e, res)
                : 0;
    if (r == 0) {
        af_result_app_error(res, E_NOT_FOUND,
                            "No upload session %.100s: it was never created, or it was used "
                            "already (an upload URL serves one upload).",
                            req->session ? req->session : "");
    } else if (r == 1) {
        Af__Blobstore__UploadSessionResponse out = AF__BLOBSTORE__UPLOAD_SESSION_RESPONSE__INIT;
        char *path = prop_str(e, "success_path");
        out.success_path = path;
        out.has_max_upload_size_bytes = prop_int(e, "max_bytes_total", &out.max_upload_size_bytes);
        out.has_max_upload_size_per_blob_bytes =
            prop_int(e, "max_bytes_per_blob", &out.max_upload_size_per_blob_bytes);
        af_result_pack(res, &out.base);
        free(path);
        af__datastore__get_response__free_unpacked(resp, NULL);
    }
    af__blobstore__upload_session_request__free_unpacked(req, NULL);
}

/* A name the front end made under tmp/: no directory, no dot file. */
static bool tmp_name_ok(const char *n)
{
    return n && strncmp(n, "upload-", 7) == 0 && !strchr(n, '/') && strlen(n) < 64;
}

static void upload_commit(void *state, const struct af_call *call, struct af_result *res)
{
    struct blob_state *s = state;
    UNPACK(Af__Blobstore__UploadCommitRequest, af__blobstore__upload_commit_request__unpack,
           "UploadCommitRequest");
    size_t n = req->n_blob;
    char **keys = af_xcalloc(n ? n : 1, sizeof(*keys));
    struct ent *ents = af_xcalloc(n ? n : 1, sizeof(*ents));
    size_t moved = 0;
    int64_t creation = now_usec();
    Af__Datastore__GetResponse *resp = NULL;
    Af__Datastore__EntityProto *e = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!tmp_name_ok(req->blob[i]->tmp_name)) {
            af_result_app_error(res, E_ARGUMENT, "blobstore: bad upload file name");
            goto out;
        }
    }
    int r = req->session && key_ok(req->session)
                ? ds_get(s, SESSION_KIND, req->session, &resp, &e, res)
                : 0;
    if (r < 0)
        goto out;
    if (r == 0) {
        af_result_app_error(res, E_NOT_FOUND,
                            "No upload session %.100s: it was used by another upload meanwhile.",
                            req->session ? req->session : "");
        goto out;
    }
    af__datastore__get_response__free_unpacked(resp, NULL);
    /* Used up first: should anything below fail, the client gets an error
     * and the URL is spent, never stored twice. */
    if (ds_delete(s, SESSION_KIND, &req->session, 1, res) < 0)
        goto out;
    for (; moved < n; moved++) {
        keys[moved] = random_name();
        char *from = af_xasprintf("%s/%s", s->tmp, req->blob[moved]->tmp_name);
        char *to = af_xasprintf("%s/%s", s->dir, keys[moved]);
        int rc = rename(from, to);
        int err = errno;
        free(from);
        free(to);
        if (rc != 0) {
            af_result_app_error(res, E_INTERNAL, "blobstore: cannot move an upload into place: %s",
                                strerror(err));
            goto out;
        }
    }
    if (n && fsync_dir(s->dir) != 0) {
        af_result_app_error(res, E_INTERNAL, "blobstore: fsync of %s: %s", s->dir,
                            strerror(errno));
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const Af__Blobstore__UploadBlob *b = req->blob[i];
        ent_init(&ents[i], s, BLOB_INFO_KIND, keys[i]);
        ent_str(&ents[i], "content_type", b->content_type ? b->content_type : "");
        ent_int(&ents[i], "creation", creation, AF__DATASTORE__PROPERTY__MEANING__GD_WHEN);
        ent_str(&ents[i], "filename", b->filename ? b->filename : "");
        ent_int(&ents[i], "size", b->size, 0);
        ent_str(&ents[i], "md5_hash", b->md5_hex ? b->md5_hex : "");
    }
    if (ds_put(ents, n, res) < 0)
        goto out;
    Af__Blobstore__UploadCommitResponse ok = AF__BLOBSTORE__UPLOAD_COMMIT_RESPONSE__INIT;
    ok.n_blob_key = n;
    ok.blob_key = keys;
    ok.has_creation_usec = true;
    ok.creation_usec = creation;
    af_result_pack(res, &ok.base);
    moved = 0; /* kept */
out:
    /* On failure, the files moved so far go (no entity names them), and
     * the rest stay in tmp/ for the front end to remove. */
    for (size_t i = 0; i < moved; i++) {
        char *p = af_xasprintf("%s/%s", s->dir, keys[i]);
        unlink(p);
        free(p);
    }
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
    free(ents);
    af__blobstore__upload_commit_request__free_unpacked(req, NULL);
}

static void serve_info(void *state, const struct af_call *call, struct af_result *res)
{
    struct blob_state *s = state;
    UNPACK(Af__Blobstore__ServeInfoRequest, af__blobstore__serve_info_request__unpack,
           "ServeInfoRequest");
    int64_t size = 0;
    char *ctype = NULL;
    if (blob_info(s, req->blob_key ? req->blob_key : "", &size, &ctype, res) == 1) {
        char *path = af_xasprintf("%s/%s", s->dir, req->blob_key);
        Af__Blobstore__ServeInfoResponse out = AF__BLOBSTORE__SERVE_INFO_RESPONSE__INIT;
        out.has_size = true;
        out.size = size;
        out.content_type = ctype;
        out.path = path;
        af_result_pack(res, &out.base);
        free(path);
        free(ctype);
    }
    af__blobstore__serve_info_request__free_unpacked(req, NULL);
}

/* ---- lifecycle ------------------------------------------------------------------- */

static void *blob_create(const struct af_api_options *opts)
{
    struct blob_state *s = af_xcalloc(1, sizeof(*s));
    s->dir = opts->blobstore_path ? af_xstrdup(opts->blobstore_path)
                                  : af_xasprintf("%s/blobs", opts->storage_path ? opts->storage_path
                                                                                : ".");
    s->tmp = af_xasprintf("%s/tmp", s->dir);
    s->app = af_xasprintf("dev~%s", opts->app_id ? opts->app_id : "app");
    s->server_host = af_xstrdup(opts->server_host ? opts->server_host : "localhost:8080");
    if (mkdir_p(s->tmp) != 0)
        af_error("blobstore: cannot create %s: %s; uploads will fail", s->tmp, strerror(errno));
    /* Uploads a crash interrupted: nobody will commit them. */
    empty_dir(s->tmp);
    /* With the datastore cleared, no __BlobInfo__ names these files. */
    if (opts->clear_datastore)
        empty_dir(s->dir);
    return s;
}

static void blob_destroy(void *state)
{
    struct blob_state *s = state;
    free(s->dir);
    free(s->tmp);
    free(s->app);
    free(s->server_host);
    free(s);
}

static const struct af_method blob_methods[] = {
    {.name = "CreateUploadURL", .fn = create_upload_url},
    {.name = "DeleteBlob", .fn = delete_blob},
    {.name = "FetchData", .fn = fetch_data},
    {.name = "DecodeBlobKey", .fn = decode_blob_key},
    {.name = "CreateEncodedGoogleStorageKey", .fn = create_gs_key},
    {.name = NULL},
};

static const struct af_method blob_internal[] = {
    {.name = "UploadSession", .fn = upload_session},
    {.name = "UploadCommit", .fn = upload_commit},
    {.name = "ServeInfo", .fn = serve_info},
    {.name = NULL},
};

const struct af_service af_service_blobstore = {
    .name = "blobstore",
    .methods = blob_methods,
    .create = blob_create,
    .destroy = blob_destroy,
    .internal = blob_internal,
};
