/*
 * apiserver-internal — what apiserver.c offers the rest of apiserver/ and
 * its tests, beyond the public apiserver.h.
 */
#ifndef AF_APISERVER_INTERNAL_H
#define AF_APISERVER_INTERNAL_H

#include "apiserver/apiserver.h"
#include "apiserver/service.h"

/*
 * af_api_start() with another service table than the registry's af_services:
 * unit tests serve services of their own through the real listener, queue
 * and backend. services (n_services entries, NULL ones skipped) is borrowed
 * and must outlive the server. Same results as af_api_start().
 */
int af_api_start_services(const struct af_api_options *opts,
                          const struct af_service *const *services, size_t n_services,
                          struct af_api **out, char *err, size_t errlen);

#endif
