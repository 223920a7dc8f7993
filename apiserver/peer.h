/*
 * peer — one service calling another service's public method, on the
 * backend thread, synchronously.
 *
 * Services do not see each other's state (apiserver/service.h). The
 * blobstore keeps its metadata as datastore entities (__BlobInfo__,
 * __BlobUploadSession__), exactly where the official client libraries read
 * them, so it must write them through the datastore itself: its indexes,
 * its durability, its locking. A peer call runs the datastore's method
 * handler directly, with the state the backend created for it: no queue,
 * no copy of the envelope. Everything runs on the backend thread, one
 * call at a time, so a service's peer calls within one of its own calls
 * see nothing else in between.
 */
#ifndef AF_PEER_H
#define AF_PEER_H

#include <stddef.h>

#include "apiserver/service.h"

/* Makes services[i] (with states[i]) callable from this thread. The
 * backend binds its table once every create() has run; a unit test binds
 * the services it made. Both arrays are borrowed and must outlive every
 * peer call; NULL with n 0 unbinds. */
void af_peer_bind(const struct af_service *const *services, void *const *states, size_t n);

/* Runs service.method (a public method) on the encoded request req (len
 * bytes, borrowed; the official wire form: datastore_v3's groups included,
 * see apiserver/services/datastore_wire.h). res is set as the method set
 * it (the caller frees res->response and res->detail); a service or method
 * that is not bound is an RPC error CALL_NOT_FOUND, and a deferred result
 * is refused (FEATURE_DISABLED). */
void af_peer_call(const char *service, const char *method, const uint8_t *req, size_t len,
                  struct af_result *res);

#endif
