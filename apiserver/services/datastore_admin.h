/*
 * datastore_admin — entities as the admin console shows them
 * (docs/admin.md): keys as URL-safe strings and readable paths, property
 * values as (type, text) pairs. Pure functions of the decoded messages;
 * the datastore's `internal` methods (datastore.c) use them on the backend
 * thread, so the console never decodes a datastore encoding itself.
 */
#ifndef AF_DATASTORE_ADMIN_H
#define AF_DATASTORE_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "admin.pb-c.h"
#include "apiserver/services/datastore_key.h"

/* The URL-safe key of ref: base64url of its official bytes. Caller frees. */
char *af_ds_admin_key(const ds_reference_t *ref);

/* A path for a person: `Kind:12 > Child:"name"`. Caller frees. */
char *af_ds_admin_path(const ds_path_t *path);

/* Fills v (initialized here) with the type and text of p's value; the
 * strings are malloc'd, released by af_ds_admin_value_release. A text
 * longer than text_max bytes (0: no limit) is cut on a character boundary
 * and v->cut set. */
void af_ds_admin_value(const ds_property_t *p, size_t text_max, Af__Admin__DsValue *v);
void af_ds_admin_value_release(Af__Admin__DsValue *v);

/* The whole entity, its properties (indexed ones, then unindexed) grouped
 * by name in the order they come, texts cut at text_max bytes (0: whole).
 * A message to release with af_ds_admin_entity_free. */
Af__Admin__DsEntity *af_ds_admin_entity(const ds_entity_t *e, size_t text_max);
void af_ds_admin_entity_free(Af__Admin__DsEntity *m);

#endif
