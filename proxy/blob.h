/*
 * blob — the front end's half of the blobstore (docs/services.md,
 * "blobstore"): uploads to /_ah/upload/SESSION and serving a blob an app
 * names with X-AppEngine-BlobKey.
 *
 * Both talk to the blobstore service through internal calls
 * (apiserver.h), so the main thread never waits for the backend: an
 * exchange in AF_EX_BLOB is parked until the reply comes, and one whose
 * connection went away meanwhile is forgotten (its reply is dropped).
 *
 * Upload: the session is looked up (404 when unknown or used), the
 * multipart body (proxy/multipart.h) is read as it arrives; each file
 * part goes to its own file in the blobstore's tmp/ as it streams, with
 * its MD5, and is fsynced at its end; fields are kept (bounded). The
 * service then commits the lot (UploadCommit) and the request goes on, as
 * a POST of a rewritten multipart body to the session's success path,
 * through the module's normal routing.
 *
 * Serving: the app's response head carried X-AppEngine-BlobKey (found by
 * the header scan every response head goes through, headers.h); the
 * instance's connection is given back unread and the blob's file is sent
 * instead, whole or the range asked for.
 */
#ifndef AF_BLOB_H
#define AF_BLOB_H

#include <stdbool.h>
#include <string.h>

struct af_exchange;
struct af_server;
struct af_api;

/* Whether a request target is an upload URL (cheap: the hot path asks). */
static inline bool af_blob_is_upload(const char *url)
{
    return url[1] == '_' && strncmp(url, "/_ah/upload/", 12) == 0;
}

/* Where the blob code reaches the services; before the first request. */
void af_blob_init(struct af_server *srv, struct af_api *api);
/* Unsubscribes from internal replies: before af_api_stop(). */
void af_blob_stop(void);

/* Takes over an exchange whose target is an upload URL (after its head
 * was validated): answers it, or parks it until the session is known. */
void af_blob_upload_begin(struct af_exchange *ex);
/* Reads what the client sent of an upload's body; the exchange may be
 * answered (failed) inside. */
void af_blob_upload_read(struct af_exchange *ex);

/* The instance's response head named a blob: serve it instead. The
 * exchange gives back its instance and waits for the blob's metadata. */
void af_blob_serve_begin(struct af_exchange *ex);

/* Frees the exchange's upload or serving state (ex_free), removing the
 * files of an upload that was not committed. */
void af_blob_free(struct af_exchange *ex);

#endif
