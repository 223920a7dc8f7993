/*
 * The table of services the backend dispatches to. Each entry is defined in
 * its own file in this folder; a service not listed answers CALL_NOT_FOUND.
 * Adding a service: define `const struct af_service af_service_NAME` in
 * NAME.c, declare it here, and add it to the table.
 */
#include <stddef.h>

#include "apiserver/service.h"

extern const struct af_service af_service_memcache;
extern const struct af_service af_service_user;
extern const struct af_service af_service_app_identity;
extern const struct af_service af_service_capability;
extern const struct af_service af_service_modules;
extern const struct af_service af_service_logservice;
extern const struct af_service af_service_mail;
extern const struct af_service af_service_datastore_v3;
extern const struct af_service af_service_taskqueue;
extern const struct af_service af_service_urlfetch;
extern const struct af_service af_service_system;
extern const struct af_service af_service_search;
extern const struct af_service af_service_blobstore;

const struct af_service *const af_services[] = {
    &af_service_memcache,   &af_service_user,    &af_service_app_identity,
    &af_service_capability, &af_service_modules, &af_service_logservice,
    &af_service_mail,       &af_service_datastore_v3, &af_service_taskqueue,
    &af_service_urlfetch,   &af_service_system,       &af_service_search,
    &af_service_blobstore,
};
const size_t af_n_services = sizeof(af_services) / sizeof(af_services[0]);
