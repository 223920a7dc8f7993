/*
 * app_identity_key — the app's signing key for SignForApp and
 * GetPublicCertificatesForApp.
 *
 * An RSA-2048 key and a self-signed X.509 certificate for it, made on first
 * use (a key takes tens of milliseconds to make, which startup should not
 * pay) and kept in one PEM file of the storage directory, so signatures an
 * app stored stay verifiable after a restart. Nothing outside this machine
 * trusts the certificate: it is for apps that verify their own signatures
 * with the certificates the service lists, as production apps do.
 */
#ifndef AF_APP_IDENTITY_KEY_H
#define AF_APP_IDENTITY_KEY_H

#include <stddef.h>
#include <stdint.h>

struct aid_key;

/* A key kept at path (NULL: in memory only, for `appfront api` without a
 * storage directory and for tests). subject names the certificate (the
 * service account). Nothing is read or made yet. */
struct aid_key *aid_key_new(const char *path, const char *subject);
void aid_key_free(struct aid_key *k);

/* Loads the file, or makes the key and writes the file (0600, written
 * whole before it is renamed into place). Returns 0, or -1 with a one-line
 * reason in err; a file that is there but is not a key and certificate of
 * appfront's is never overwritten. A failure is not remembered: the next
 * call tries again. */
int aid_key_ready(struct aid_key *k, char *err, size_t errlen);

/* After aid_key_ready: the key's name (40 hex digits, the SHA-1 of the
 * public key), the certificate in PEM. Borrowed. */
const char *aid_key_name(const struct aid_key *k);
const char *aid_key_cert_pem(const struct aid_key *k);

/* RSASSA-PKCS1-v1_5 with SHA-256 over data, as production signs. Returns a
 * malloc'd signature of *siglen bytes, or NULL with a reason in err. */
uint8_t *aid_key_sign(struct aid_key *k, const uint8_t *data, size_t len, size_t *siglen, char *err,
                      size_t errlen);

#endif
