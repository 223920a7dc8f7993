/*
 * The table of services the backend dispatches to. Each entry is defined in
 * its own file in this folder.
 *
 * The declarations are weak so the tree builds while a service is being
 * written; a missing service simply does not appear (its calls answer
 * CALL_NOT_FOUND).
 */
#include <stddef.h>

#include "apiserver/service.h"

#define AF_SERVICE_DECL(n) extern const struct af_service af_service_##n __attribute__((weak))
AF_SERVICE_DECL(memcache);
AF_SERVICE_DECL(user);
AF_SERVICE_DECL(app_identity);
AF_SERVICE_DECL(capability);
AF_SERVICE_DECL(modules);
AF_SERVICE_DECL(logservice);
AF_SERVICE_DECL(mail);
AF_SERVICE_DECL(datastore_v3);
AF_SERVICE_DECL(taskqueue);
AF_SERVICE_DECL(urlfetch);

/* Entries may be NULL (a weak symbol not defined): skip them. */
const struct af_service *const af_services[] = {
    &af_service_memcache,     &af_service_user,      &af_service_app_identity,
    &af_service_capability,   &af_service_modules,   &af_service_logservice,
    &af_service_mail,         &af_service_datastore_v3, &af_service_taskqueue,
    &af_service_urlfetch,
};
const size_t af_n_services = sizeof(af_services) / sizeof(af_services[0]);
