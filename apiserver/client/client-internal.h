/*
 * client-internal — shared by the files of the C client library only; not
 * installed for apps.
 */
#ifndef AF_CLIENT_INTERNAL_H
#define AF_CLIENT_INTERNAL_H

#include <stddef.h>

#include "apiserver/client/appfront.h"

/* malloc that aborts on failure (and never returns NULL, even for 0 bytes).
 * The caller owns the result (free()). */
void *af_client_xmalloc(size_t n);

/* Fills *err (which may be NULL: then nothing happens). */
void af_client_set_error(struct af_client_error *err, enum af_client_status status, int code,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
