#include "proxy/blob.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <openssl/evp.h>

#include "blobstore.pb-c.h"

#include "apiserver/apiserver.h"
#include "common/b64url.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/exchange.h"
#include "proxy/multipart.h"
#include "proxy/server.h"
#include "proxy/static.h"

/* Form fields (everything but file data) kept for the forwarded body. */
#define MAX_FIELD_BYTES (1024 * 1024)
/* dev_appserver's limit on a file's name and content type. */
#define MAX_NAME_LENGTH 500
/* The MIME type with which an app asks for the blob's own type. */
#define AUTO_MIME_TYPE "application/vnd.google.appengine.auto"

enum op_wait {
    WAIT_NONE,
    WAIT_SESSION, /* UploadSession */
    WAIT_COMMIT,  /* UploadCommit */
    WAIT_SERVE,   /* ServeInfo */
};

/* One part of an upload, in order: a field kept whole, or a stored file. */
struct up_part {
    bool file;
    struct evbuffer *raw; /* field: its header block, CRLF, data */
    /* file: */
    char tmp_name[48];
    int64_t size;
    char md5_hex[33];
    char *disposition;
    char *content_type;
    char *filename;
};

struct af_blob_op {
    LIST_ENTRY(af_blob_op) link;
    struct af_exchange *ex;
    uint64_t seq;
    enum op_wait wait;

    /* upload */
    char *session;
    char *success_path;
    int64_t max_total, max_per_blob; /* -1: no limit */
    char boundary[AF_MP_MAX_BOUNDARY + 1];
    struct af_mp mp;
    struct up_part *parts;
    size_t n_parts, cap_parts;
    struct up_part *cur; /* the part being read; NULL: one skipped */
    int fd;              /* cur's file */
    EVP_MD_CTX *md5;
    int64_t file_bytes;  /* of every file so far */
    size_t field_bytes;
    int status;          /* a callback's refusal: status and message */
    char msg[512];
    bool committed;

    /* serving */
    char *blob_key;
    char *range;      /* X-AppEngine-BlobRange, else the request's Range */
    bool app_ctype;   /* the app set a Content-Type of its own */
};

static struct {
    struct af_server *srv;
    struct af_api *api;
    int consumer; /* -1: not subscribed */
    uint64_t seq;
    LIST_HEAD(, af_blob_op) ops; /* waiting for a reply */
} blob = {.consumer = -1};

static void on_reply(void *arg, const struct af_api_internal_reply *r);

void af_blob_init(struct af_server *srv, struct af_api *api)
{
    blob.srv = srv;
    blob.api = api;
    LIST_INIT(&blob.ops);
}

void af_blob_stop(void)
{
    if (blob.consumer >= 0)
        af_api_internal_unsubscribe(blob.api, blob.consumer);
    blob.consumer = -1;
}

/* ---- the exchange's state -------------------------------------------------- */

static void op_unwait(struct af_blob_op *op)
{
    if (op->wait != WAIT_NONE) {
        LIST_REMOVE(op, link);
        op->wait = WAIT_NONE;
    }
}

static void part_release(struct af_blob_op *op, struct up_part *p)
{
    if (p->raw)
        evbuffer_free(p->raw);
    if (p->file && p->tmp_name[0] && !op->committed) {
        char *path = af_xasprintf("%s/tmp/%s", blob.srv->blob_dir, p->tmp_name);
        unlink(path);
        free(path);
    }
    free(p->disposition);
    free(p->content_type);
    free(p->filename);
}

void af_blob_free(struct af_exchange *ex)
{
    struct af_blob_op *op = ex->blob;
    if (!op)
        return;
    ex->blob = NULL;
    op_unwait(op);
    if (op->fd >= 0)
        close(op->fd);
    for (size_t i = 0; i < op->n_parts; i++)
        part_release(op, &op->parts[i]);
    free(op->parts);
    if (op->md5)
        EVP_MD_CTX_free(op->md5);
    af_mp_release(&op->mp);
    free(op->session);
    free(op->success_path);
    free(op->blob_key);
    free(op->range);
    free(op);
}

static struct af_blob_op *op_new(struct af_exchange *ex)
{
    struct af_blob_op *op = af_xcalloc(1, sizeof(*op));
    op->ex = ex;
    op->fd = -1;
    op->max_total = op->max_per_blob = -1;
    ex->blob = op;
    return op;
}

/* Sends an internal call of the blobstore service and parks op until its
 * reply. Returns 0, or -1 (logged) when it could not be sent. */
static int op_call(struct af_blob_op *op, enum op_wait wait, const char *method,
                   const ProtobufCMessage *msg)
{
    if (!blob.api)
        return -1;
    if (blob.consumer < 0) {
        blob.consumer = af_api_internal_subscribe(blob.api, blob.srv->base, on_reply, NULL);
        if (blob.consumer < 0)
            return -1;
    }
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = af_xmalloc(len ? len : 1);
    protobuf_c_message_pack(msg, buf);
    op->seq = ++blob.seq;
    int r = af_api_internal_call(blob.api, "blobstore", method, buf, len,
                                 AF_API_TAG(blob.consumer, op->seq));
    free(buf);
    if (r < 0)
        return -1;
    op->wait = wait;
    LIST_INSERT_HEAD(&blob.ops, op, link);
    return 0;
}

/* ---- uploads ---------------------------------------------------------------- */

void af_blob_upload_begin(struct af_exchange *ex)
{
    if (ex->method != HTTP_POST) {
        af_ex_fail(ex, 405, "An upload URL takes POST (a multipart/form-data form), not %s.",
                   http_method_str(ex->method));
        return;
    }
    /* The body is read as it comes and its length bounds everything:
     * browsers send a Content-Length with every form. */
    if (ex->chunked_in || ex->content_length < 0) {
        af_ex_fail(ex, 411, "An upload needs a Content-Length (a chunked body is not accepted).");
        return;
    }
    struct af_header *ct = af_headers_find(&ex->req_headers, "Content-Type");
    struct af_blob_op *op = op_new(ex);
    const char *why = NULL;
    if (!ct || af_mp_boundary(ct->value, op->boundary, &why) < 0) {
        af_ex_fail(ex, 400, "Upload refused: %s (send the form with "
                            "enctype=\"multipart/form-data\").",
                   ct ? why : "there is no Content-Type");
        return;
    }
    const char *s = ex->url + 12;
    size_t n = strcspn(s, "?#");
    op->session = af_xmalloc(n + 1);
    memcpy(op->session, s, n);
    op->session[n] = '\0';
    Af__Blobstore__UploadSessionRequest req = AF__BLOBSTORE__UPLOAD_SESSION_REQUEST__INIT;
    req.session = op->session;
    ex->state = AF_EX_BLOB;
    if (op_call(op, WAIT_SESSION, "UploadSession", &req.base) < 0)
        af_ex_fail(ex, 503, "The blobstore service cannot be reached; try again.");
}

/* A refusal from inside the parser's callbacks: kept until af_mp_feed
 * returns, then answered. */
static int refuse(struct af_blob_op *op, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(struct af_blob_op *op, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op->msg, sizeof(op->msg), fmt, ap);
    va_end(ap);
    op->status = status;
    return status;
}

static struct up_part *part_add(struct af_blob_op *op)
{
    if (op->n_parts == op->cap_parts) {
        op->cap_parts = op->cap_parts ? op->cap_parts * 2 : 8;
        op->parts = af_xrealloc(op->parts, op->cap_parts * sizeof(*op->parts));
    }
    struct up_part *p = &op->parts[op->n_parts++];
    memset(p, 0, sizeof(*p));
    return p;
}

static int field_room(struct af_blob_op *op, size_t n)
{
    op->field_bytes += n;
    if (op->field_bytes > MAX_FIELD_BYTES)
        return refuse(op, 413, "The form's fields (everything but its files) are larger than "
                               "%d bytes.",
                      MAX_FIELD_BYTES);
    return 0;
}

static int mp_part_begin(void *arg, const struct af_mp_part *mp)
{
    struct af_blob_op *op = arg;
    op->cur = NULL;
    if (!mp->filename) {
        /* A field: its header block and data go on as they came. */
        if (field_room(op, mp->headers_len + 2) != 0)
            return op->status;
        struct up_part *p = part_add(op);
        p->raw = evbuffer_new();
        /* blobstore.ParseUpload refuses a part without a Content-Type;
         * App Engine gives fields text/plain. */
        if (!mp->content_type)
            evbuffer_add(p->raw, "Content-Type: text/plain\r\n", 26);
        evbuffer_add(p->raw, mp->headers, mp->headers_len);
        evbuffer_add(p->raw, "\r\n", 2);
        op->cur = p;
        return 0;
    }
    /* An empty filename is a file input left empty: no blob, and the
     * part is not forwarded (as dev_appserver does). */
    if (!mp->filename[0])
        return 0;
    if (strlen(mp->filename) > MAX_NAME_LENGTH ||
        (mp->content_type && strlen(mp->content_type) > MAX_NAME_LENGTH))
        return refuse(op, 400, "A file's %s is longer than %d bytes.",
                      strlen(mp->filename) > MAX_NAME_LENGTH ? "filename" : "Content-Type",
                      MAX_NAME_LENGTH);
    struct up_part *p = part_add(op);
    p->file = true;
    p->disposition = af_xstrdup(mp->disposition);
    p->content_type = af_xstrdup(mp->content_type && mp->content_type[0]
                                     ? mp->content_type
                                     : "application/octet-stream");
    p->filename = af_xstrdup(mp->filename);
    snprintf(p->tmp_name, sizeof(p->tmp_name), "upload-XXXXXX");
    char *path = af_xasprintf("%s/tmp/%s", blob.srv->blob_dir, p->tmp_name);
    op->fd = mkostemp(path, O_CLOEXEC);
    if (op->fd >= 0)
        memcpy(p->tmp_name, strrchr(path, '/') + 1, strlen("upload-XXXXXX"));
    int err = errno;
    free(path);
    if (op->fd < 0) {
        p->tmp_name[0] = '\0';
        return refuse(op, 500, "Cannot store the upload in %s/tmp: %s.", blob.srv->blob_dir,
                      strerror(err));
    }
    if (!op->md5)
        op->md5 = EVP_MD_CTX_new();
    EVP_DigestInit_ex(op->md5, EVP_md5(), NULL);
    op->cur = p;
    return 0;
}

static int mp_part_data(void *arg, const char *data, size_t len)
{
    struct af_blob_op *op = arg;
    struct up_part *p = op->cur;
    if (!p)
        return 0; /* an empty file input's bytes */
    if (!p->file) {
        if (field_room(op, len) != 0)
            return op->status;
        evbuffer_add(p->raw, data, len);
        return 0;
    }
    p->size += (int64_t)len;
    op->file_bytes += (int64_t)len;
    if (op->max_per_blob >= 0 && p->size > op->max_per_blob)
        return refuse(op, 413, "The file \"%.200s\" is larger than this upload URL's "
                               "max_upload_size_per_blob_bytes (%" PRId64 " bytes).",
                      p->filename, op->max_per_blob);
    if (op->max_total >= 0 && op->file_bytes > op->max_total)
        return refuse(op, 413, "The upload's files are larger than this upload URL's "
                               "max_upload_size_bytes (%" PRId64 " bytes).",
                      op->max_total);
    EVP_DigestUpdate(op->md5, data, len);
    while (len > 0) {
        ssize_t w = write(op->fd, data, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return refuse(op, 500, "Cannot store the upload: %s.", strerror(errno));
        data += w;
        len -= (size_t)w;
    }
    return 0;
}

static int mp_part_end(void *arg)
{
    struct af_blob_op *op = arg;
    struct up_part *p = op->cur;
    op->cur = NULL;
    if (!p)
        return 0;
    if (!p->file)
        return field_room(op, 2) != 0 ? op->status : (evbuffer_add(p->raw, "\r\n", 2), 0);
    /* Durable before the service is told it exists. */
    int r = fsync(op->fd);
    int err = errno;
    close(op->fd);
    op->fd = -1;
    if (r != 0)
        return refuse(op, 500, "Cannot store the upload (fsync): %s.", strerror(err));
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_DigestFinal_ex(op->md5, md, &mdlen);
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < mdlen && i < 16; i++) {
        p->md5_hex[2 * i] = hex[md[i] >> 4];
        p->md5_hex[2 * i + 1] = hex[md[i] & 15];
    }
    p->md5_hex[32] = '\0';
    return 0;
}

static const struct af_mp_ops mp_ops = {
    .part_begin = mp_part_begin,
    .part_data = mp_part_data,
    .part_end = mp_part_end,
};

static void upload_commit(struct af_blob_op *op)
{
    struct af_exchange *ex = op->ex;
    size_t nf = 0;
    for (size_t i = 0; i < op->n_parts; i++)
        nf += op->parts[i].file;
    Af__Blobstore__UploadBlob *bs = af_xcalloc(nf ? nf : 1, sizeof(*bs));
    Af__Blobstore__UploadBlob **bp = af_xcalloc(nf ? nf : 1, sizeof(*bp));
    size_t k = 0;
    for (size_t i = 0; i < op->n_parts; i++) {
        struct up_part *p = &op->parts[i];
        if (!p->file)
            continue;
        Af__Blobstore__UploadBlob b = AF__BLOBSTORE__UPLOAD_BLOB__INIT;
        b.tmp_name = p->tmp_name;
        b.has_size = true;
        b.size = p->size;
        b.md5_hex = p->md5_hex;
        b.content_type = p->content_type;
        b.filename = p->filename;
        bs[k] = b;
        bp[k] = &bs[k];
        k++;
    }
    Af__Blobstore__UploadCommitRequest req = AF__BLOBSTORE__UPLOAD_COMMIT_REQUEST__INIT;
    req.session = op->session;
    req.n_blob = nf;
    req.blob = bp;
    int r = op_call(op, WAIT_COMMIT, "UploadCommit", &req.base);
    free(bp);
    free(bs);
    if (r < 0)
        af_ex_fail(ex, 503, "The blobstore service cannot be reached; try again.");
}

void af_blob_upload_read(struct af_exchange *ex)
{
    struct af_conn *c = ex->conn;
    struct af_blob_op *op = ex->blob;
    struct evbuffer *in = c->s.in;
    if (!op || op->blob_key)
        return; /* serving: the request's body is never read */
    while (!ex->req_body_done && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t take = v.iov_len < ex->req_body_left ? v.iov_len : (size_t)ex->req_body_left;
        int r = af_mp_feed(&op->mp, &mp_ops, op, v.iov_base, take);
        evbuffer_drain(in, take);
        af_stream_consumed(&c->s);
        ex->req_body_bytes += take;
        ex->req_body_left -= take;
        if (ex->req_body_left == 0)
            ex->req_body_done = true;
        if (r < 0) {
            af_ex_fail(ex, 400, "Malformed multipart/form-data upload: %s.", op->mp.why);
            return;
        }
        if (r > 0) {
            af_ex_fail(ex, op->status, "%s", op->msg);
            return;
        }
    }
    if (!ex->req_body_done)
        return;
    if (!af_mp_done(&op->mp)) {
        af_ex_fail(ex, 400, "Malformed multipart/form-data upload: the body ends before its "
                            "closing boundary (--%s--).",
                   op->boundary);
        return;
    }
    ex->body_flowing = false;
    upload_commit(op);
}

static void session_reply(struct af_blob_op *op, const struct af_api_internal_reply *r)
{
    struct af_exchange *ex = op->ex;
    struct af_conn *c = ex->conn;
    Af__Blobstore__UploadSessionResponse *s =
        af__blobstore__upload_session_response__unpack(NULL, r->len, r->data);
    if (!s || !s->success_path) {
        if (s)
            af__blobstore__upload_session_response__free_unpacked(s, NULL);
        af_ex_fail(ex, 500, "The blobstore service answered an upload session badly.");
        return;
    }
    op->success_path = af_xstrdup(s->success_path);
    if (s->has_max_upload_size_bytes)
        op->max_total = s->max_upload_size_bytes;
    if (s->has_max_upload_size_per_blob_bytes)
        op->max_per_blob = s->max_upload_size_per_blob_bytes;
    af__blobstore__upload_session_response__free_unpacked(s, NULL);
    af_mp_init(&op->mp, op->boundary, strlen(op->boundary));
    /* Now the body may come (RFC 9110 §10.1.1). */
    if (ex->expect_continue)
        evbuffer_add(c->s.out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    af_stream_flush(&c->s);
    ex->body_flowing = true;
    if (ex->req_body_done) { /* an empty body */
        af_blob_upload_read(ex);
        return;
    }
    af_conn_pump(c);
}

/* "2006-01-02 15:04:05.000000" in UTC, what Go's ParseUpload parses. */
static void format_creation(int64_t usec, char out[32])
{
    time_t secs = (time_t)(usec / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%06d", (int)(usec % 1000000));
}

/* The forwarded body: fields as they came, each file replaced by the
 * message/external-body part App Engine sends (blobstore.ParseUpload
 * reads it), under the client's own boundary, which by its definition
 * occurs in none of the parts. */
static struct evbuffer *forward_body(struct af_blob_op *op, char **keys, size_t n_keys,
                                     int64_t creation)
{
    struct evbuffer *b = evbuffer_new();
    char when[32];
    format_creation(creation, when);
    size_t k = 0;
    for (size_t i = 0; i < op->n_parts; i++) {
        struct up_part *p = &op->parts[i];
        evbuffer_add_printf(b, "--%s\r\n", op->boundary);
        if (!p->file) {
            evbuffer_add_buffer(b, p->raw);
            continue;
        }
        const char *key = k < n_keys ? keys[k] : "";
        k++;
        /* Content-MD5 as App Engine sends it: the hex digest in URL-safe
         * base64 (padded), which ParseUpload decodes back to the hex. */
        char *md5 = af_b64url_encode((const uint8_t *)p->md5_hex, 32);
        size_t ml = strlen(md5);
        evbuffer_add_printf(b,
                            "Content-Type: message/external-body; blob-key=\"%s\"; "
                            "access-type=\"X-AppEngine-BlobKey\"\r\n"
                            "Content-Disposition: %s\r\n\r\n"
                            "Content-Type: %s\r\n"
                            "Content-Length: %" PRId64 "\r\n"
                            "Content-MD5: %s%s\r\n"
                            "X-AppEngine-Upload-Creation: %s\r\n"
                            "Content-Disposition: %s\r\n\r\n\r\n",
                            key, p->disposition, p->content_type, p->size, md5,
                            ml % 4 == 2 ? "==" : ml % 4 == 3 ? "=" : "", when, p->disposition);
        free(md5);
    }
    evbuffer_add_printf(b, "--%s--\r\n", op->boundary);
    return b;
}

static void commit_reply(struct af_blob_op *op, const struct af_api_internal_reply *r)
{
    struct af_exchange *ex = op->ex;
    Af__Blobstore__UploadCommitResponse *cr =
        af__blobstore__upload_commit_response__unpack(NULL, r->len, r->data);
    if (!cr) {
        af_ex_fail(ex, 500, "The blobstore service answered an upload badly.");
        return;
    }
    op->committed = true; /* the files are the service's now */
    struct evbuffer *body = forward_body(op, cr->blob_key, cr->n_blob_key, cr->creation_usec);
    af__blobstore__upload_commit_response__free_unpacked(cr, NULL);
    af_log(AF_LOG_INFO, "blobstore: upload session %s stored %zu part(s); forwarding to %s",
           op->session, op->n_parts, op->success_path);

    /* The request goes on as the POST App Engine makes to the success
     * path: same headers, the new body. */
    struct af_headers *h = &ex->req_headers;
    af_headers_drop(h, "Content-Type");
    af_headers_drop(h, "Content-Length");
    af_headers_drop(h, "Expect");
    char *ctype = af_xasprintf("multipart/form-data; boundary=\"%s\"", op->boundary);
    af_headers_add(h, "Content-Type", 12, ctype, strlen(ctype));
    free(ctype);
    free(ex->url);
    ex->url = af_xstrdup(op->success_path);
    ex->content_length = (int64_t)evbuffer_get_length(body);
    ex->expect_continue = false;
    ex->req_body_done = true;
    ex->fwd_body = body;
    af_blob_free(ex);
    /* The success handler gets a whole deadline of its own. */
    af_timeout_cancel(&ex->deadline);
    af_ex_route(ex);
}

/* ---- serving ------------------------------------------------------------------ */

void af_blob_serve_begin(struct af_exchange *ex)
{
    struct af_headers *h = &ex->resp_headers;
    struct af_blob_op *op = op_new(ex);
    struct af_header *f = af_headers_find(h, "X-AppEngine-BlobKey");
    op->blob_key = af_xstrdup(f ? f->value : "");
    struct af_header *rg = af_headers_find(h, "X-AppEngine-BlobRange");
    if (!rg)
        rg = af_headers_find(&ex->req_headers, "Range");
    if (rg && rg->value[0])
        op->range = af_xstrdup(rg->value);
    af_headers_drop(h, "X-AppEngine-BlobKey");
    af_headers_drop(h, "X-AppEngine-BlobRange");
    struct af_header *ct = af_headers_find(h, "Content-Type");
    op->app_ctype = ct && ct->value[0] && strcasecmp(ct->value, AUTO_MIME_TYPE) != 0;
    if (ct && !op->app_ctype)
        af_headers_drop(h, "Content-Type");
    /* The instance's body is never read: its connection goes. */
    af_ex_give_back(ex);
    ex->state = AF_EX_BLOB;
    Af__Blobstore__ServeInfoRequest req = AF__BLOBSTORE__SERVE_INFO_REQUEST__INIT;
    req.blob_key = op->blob_key;
    if (op_call(op, WAIT_SERVE, "ServeInfo", &req.base) < 0)
        af_ex_fail(ex, 503, "The blobstore service cannot be reached; try again.");
}

/*
 * A Range value against a blob of size bytes: one range, read as static
 * files read it (af_static_range). Returns 1 with [*start, *end) when it
 * is satisfiable, else 0: unlike a static file, whose malformed or
 * multiple ranges are ignored, a blob answers anything but one
 * satisfiable range with 416, as dev_appserver does.
 */
static int parse_range(const char *v, int64_t size, int64_t *start, int64_t *end)
{
    int64_t len = 0;
    *start = *end = 0;
    if (af_static_range(v, size, start, &len) != AF_RANGE_OK)
        return 0;
    *end = *start + len;
    return 1;
}

static void serve_reply(struct af_blob_op *op, const struct af_api_internal_reply *r)
{
    struct af_exchange *ex = op->ex;
    struct af_headers *h = &ex->resp_headers;
    int status = ex->status;
    Af__Blobstore__ServeInfoResponse *si =
        r->ok ? af__blobstore__serve_info_response__unpack(NULL, r->len, r->data) : NULL;
    if (!si || status != 200) {
        /* dev_appserver: an unknown blob, or a blob response that is not
         * a 200, is a 500 with an empty body (and a log line). */
        if (!si)
            af_log(AF_LOG_ERROR, "blobstore: %s %s: could not find blob with key %s",
                   http_method_str(ex->method), ex->url, op->blob_key);
        else
            af_log(AF_LOG_ERROR, "blobstore: %s %s: a blob-serving response has status %d, "
                                 "expected 200",
                   http_method_str(ex->method), ex->url, status);
        if (si)
            af__blobstore__serve_info_response__free_unpacked(si, NULL);
        af_headers_drop(h, "Content-Type");
        af_blob_free(ex);
        af_ex_reply(ex, 500, h, NULL, -1, 0, 0);
        return;
    }
    int64_t size = si->size, start = 0, end = size;
    int fd = open(si->path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size < size) {
        af_log(AF_LOG_ERROR, "blobstore: the file of blob %s: %s", op->blob_key,
               fd < 0 ? strerror(errno) : "shorter than its size");
        if (fd >= 0)
            close(fd);
        af__blobstore__serve_info_response__free_unpacked(si, NULL);
        af_headers_drop(h, "Content-Type");
        af_blob_free(ex);
        af_ex_reply(ex, 500, h, NULL, -1, 0, 0);
        return;
    }
    if (!op->app_ctype) {
        const char *t = si->content_type && si->content_type[0] ? si->content_type
                                                                 : "application/octet-stream";
        af_headers_add(h, "Content-Type", 12, t, strlen(t));
    }
    af__blobstore__serve_info_response__free_unpacked(si, NULL);
    char cr[96];
    if (op->range) {
        if (!parse_range(op->range, size, &start, &end)) {
            close(fd);
            af_headers_drop(h, "Content-Type");
            snprintf(cr, sizeof(cr), "bytes */%" PRId64, size);
            af_headers_add(h, "Content-Range", 13, cr, strlen(cr));
            af_blob_free(ex);
            af_ex_reply(ex, 416, h, NULL, -1, 0, 0);
            return;
        }
        status = 206;
        snprintf(cr, sizeof(cr), "bytes %" PRId64 "-%" PRId64 "/%" PRId64, start, end - 1, size);
        af_headers_add(h, "Content-Range", 13, cr, strlen(cr));
    }
    af_blob_free(ex);
    af_ex_reply(ex, status, h, NULL, fd, start, end - start);
}

/* ---- replies ------------------------------------------------------------------- */

static void on_reply(void *arg, const struct af_api_internal_reply *r)
{
    if (r->notice)
        return;
    uint64_t seq = r->tag & ((UINT64_C(1) << AF_API_TAG_SHIFT) - 1);
    struct af_blob_op *op;
    LIST_FOREACH(op, &blob.ops, link)
        if (op->seq == seq)
            break;
    if (!op)
        return; /* its exchange is gone */
    enum op_wait wait = op->wait;
    op_unwait(op);
    struct af_exchange *ex = op->ex;
    struct af_conn *c = ex->conn;
    af_conn_enter(c);
    if (wait == WAIT_SERVE) {
        serve_reply(op, r);
    } else if (!r->ok) {
        /* The service's sentence: no such session (404), or why the
         * commit failed. */
        int status = r->app_error && r->code == AF__BLOBSTORE__BLOBSTORE_SERVICE_ERROR__ERROR_CODE__BLOB_NOT_FOUND
                         ? 404
                         : 500;
        af_ex_fail(ex, status, "%.*s", (int)(r->len > 400 ? 400 : r->len),
                   r->len ? (const char *)r->data : "The blobstore service refused the upload.");
    } else if (wait == WAIT_SESSION) {
        session_reply(op, r);
    } else {
        commit_reply(op, r);
    }
    af_conn_leave(c);
}
