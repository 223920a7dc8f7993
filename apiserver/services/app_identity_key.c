/* app_identity_key — see app_identity_key.h. */
#include "apiserver/services/app_identity_key.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "common/readfile.h"
#include "common/xalloc.h"

#define KEY_BITS 2048
/* The certificate is dated a day back (clocks differ) and lasts ten years:
 * a development key outlives any project's use of it. */
#define CERT_DAYS 3650
/* A key file is a few kilobytes; anything far bigger is not one. */
#define MAX_FILE_BYTES (64 * 1024)

struct aid_key {
    char *path;    /* NULL: in memory only */
    char *subject; /* the certificate's CN */
    EVP_PKEY *pkey;
    X509 *cert;
    char *cert_pem;
    char name[41];
};

struct aid_key *aid_key_new(const char *path, const char *subject)
{
    struct aid_key *k = af_xcalloc(1, sizeof(*k));
    k->path = path ? af_xstrdup(path) : NULL;
    k->subject = af_xstrdup(subject);
    return k;
}

static void forget(struct aid_key *k)
{
    EVP_PKEY_free(k->pkey);
    X509_free(k->cert);
    free(k->cert_pem);
    k->pkey = NULL;
    k->cert = NULL;
    k->cert_pem = NULL;
    k->name[0] = '\0';
}

void aid_key_free(struct aid_key *k)
{
    if (!k)
        return;
    forget(k);
    free(k->path);
    free(k->subject);
    free(k);
}

/* err = the formatted reason, then OpenSSL's last error when it has one. */
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    unsigned long e = ERR_peek_last_error();
    if (e && n >= 0 && (size_t)n + 3 < errlen) {
        snprintf(err + n, errlen - (size_t)n, ": ");
        ERR_error_string_n(e, err + n + 2, errlen - (size_t)n - 2);
    }
    ERR_clear_error();
    return -1;
}

/* The name, the certificate's PEM: what the service hands out. */
static int describe(struct aid_key *k, char *err, size_t errlen)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(k->pkey, &der);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    bool ok = n > 0 && EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha1(), NULL) == 1;
    OPENSSL_free(der);
    if (!ok || mdlen != 20)
        return fail(err, errlen, "cannot name the signing key");
    for (unsigned i = 0; i < mdlen; i++)
        snprintf(k->name + 2 * i, 3, "%02x", md[i]);

    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL;
    long len = 0;
    if (!b || PEM_write_bio_X509(b, k->cert) != 1 || (len = BIO_get_mem_data(b, &data)) <= 0) {
        BIO_free(b);
        return fail(err, errlen, "cannot write the certificate");
    }
    k->cert_pem = af_xstrndup(data, (size_t)len);
    BIO_free(b);
    return 0;
}

static int make_cert(struct aid_key *k, char *err, size_t errlen)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    ASN1_INTEGER *serial = ASN1_INTEGER_new();
    uint64_t r = 0;
    bool ok = x && name && serial && RAND_bytes((unsigned char *)&r, sizeof(r)) == 1 &&
              ASN1_INTEGER_set_uint64(serial, r >> 1) == 1 && X509_set_version(x, 2) == 1 &&
              X509_set_serialNumber(x, serial) == 1 &&
              X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                         (const unsigned char *)k->subject, -1, -1, 0) == 1 &&
              X509_set_subject_name(x, name) == 1 && X509_set_issuer_name(x, name) == 1 &&
              X509_gmtime_adj(X509_getm_notBefore(x), -86400) &&
              X509_time_adj_ex(X509_getm_notAfter(x), CERT_DAYS, 0, NULL) &&
              X509_set_pubkey(x, k->pkey) == 1 && X509_sign(x, k->pkey, EVP_sha256()) > 0;
    ASN1_INTEGER_free(serial);
    X509_NAME_free(name);
    if (!ok) {
        X509_free(x);
        return fail(err, errlen, "cannot make the signing certificate");
    }
    k->cert = x;
    return 0;
}

/* The key, then the certificate, as the file holds them. */
static char *to_pem(const struct aid_key *k, size_t *len)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL;
    long n = 0;
    if (b && PEM_write_bio_PrivateKey(b, k->pkey, NULL, NULL, 0, NULL, NULL) == 1 &&
        PEM_write_bio_X509(b, k->cert) == 1 && (n = BIO_get_mem_data(b, &data)) > 0) {
        char *out = af_xmalloc((size_t)n);
        memcpy(out, data, (size_t)n);
        *len = (size_t)n;
        BIO_free(b);
        return out;
    }
    BIO_free(b);
    return NULL;
}

/* Writes the file whole under a temporary name, then links it into place:
 * a crash leaves no half key, and a file another appfront made meanwhile
 * (EEXIST) is kept, and read back. Returns 0, 1 when another file won, -1. */
static int write_file(const struct aid_key *k, char *err, size_t errlen)
{
    size_t len = 0;
    char *pem = to_pem(k, &len);
    if (!pem)
        return fail(err, errlen, "cannot write the signing key");
    char *tmp = af_xasprintf("%s.tmp.%ld", k->path, (long)getpid());
    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, pem + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            goto out;
        }
        off += (size_t)w;
    }
    if (fsync(fd) < 0 || close(fd) < 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    if (link(tmp, k->path) < 0) {
        int e = errno;
        unlink(tmp);
        if (e == EEXIST) {
            rc = 1;
            goto out;
        }
        snprintf(err, errlen, "cannot create %s: %s", k->path, strerror(e));
        goto out;
    }
    unlink(tmp);
    /* The new name is durable once its directory is. */
    char *dir = af_xstrdup(k->path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(dir);
    rc = 0;
out:
    OPENSSL_cleanse(pem, len);
    free(pem);
    free(tmp);
    return rc;
}

/* Reads an existing file: 0, 1 when there is none, -1 for one that is not
 * appfront's key and certificate (left as it is). */
static int load_file(struct aid_key *k, char *err, size_t errlen)
{
    int fd = open(k->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT)
        return 1;
    size_t len = 0;
    char *text = fd < 0 ? NULL : af_read_regular(fd, MAX_FILE_BYTES, &len, NULL);
    int e = errno;
    if (fd >= 0)
        close(fd);
    if (!text) {
        snprintf(err, errlen, "cannot read %s: %s", k->path,
                 e == EFBIG ? "not a key file (too long)" : strerror(e));
        return -1;
    }
    BIO *b = BIO_new_mem_buf(text, (int)len);
    k->pkey = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    k->cert = k->pkey ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    OPENSSL_cleanse(text, len);
    free(text);
    if (!k->pkey || !k->cert || !EVP_PKEY_is_a(k->pkey, "RSA") ||
        X509_check_private_key(k->cert, k->pkey) != 1) {
        forget(k);
        return fail(err, errlen,
                    "%s is not appfront's signing key (an RSA private key, then its "
                    "certificate, in PEM); move it away and a new key is made",
                    k->path);
    }
    return 0;
}

int aid_key_ready(struct aid_key *k, char *err, size_t errlen)
{
    if (k->pkey)
        return 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        int rc = k->path ? load_file(k, err, errlen) : 1;
        if (rc < 0)
            return -1;
        if (rc == 0)
            break;
        k->pkey = EVP_RSA_gen(KEY_BITS);
        if (!k->pkey)
            return fail(err, errlen, "cannot make an RSA key");
        if (make_cert(k, err, errlen) < 0) {
            forget(k);
            return -1;
        }
        if (!k->path)
            break;
        rc = write_file(k, err, errlen);
        if (rc < 0) {
            forget(k);
            return -1;
        }
        if (rc == 0)
            break;
        forget(k); /* another process's file won: use that one */
    }
    if (!k->pkey)
        return fail(err, errlen, "%s keeps changing", k->path);
    if (describe(k, err, errlen) < 0) {
        forget(k);
        return -1;
    }
    return 0;
}

const char *aid_key_name(const struct aid_key *k)
{
    return k->name;
}

const char *aid_key_cert_pem(const struct aid_key *k)
{
    return k->cert_pem;
}

uint8_t *aid_key_sign(struct aid_key *k, const uint8_t *data, size_t len, size_t *siglen, char *err,
                      size_t errlen)
{
    if (aid_key_ready(k, err, errlen) < 0)
        return NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t n = 0;
    uint8_t *sig = NULL;
    if (ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
        EVP_DigestSign(ctx, NULL, &n, data, len) == 1) {
        sig = af_xmalloc(n);
        if (EVP_DigestSign(ctx, sig, &n, data, len) != 1) {
            free(sig);
            sig = NULL;
        }
    }
    EVP_MD_CTX_free(ctx);
    if (!sig) {
        fail(err, errlen, "cannot sign");
        return NULL;
    }
    *siglen = n;
    return sig;
}
