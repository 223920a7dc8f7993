/*
 * datastore_key — order-preserving byte encodings of datastore keys and
 * property values, and the validation of keys (docs/datastore.md,
 * "Encoding").
 *
 * SQLite compares BLOBs with memcmp(), so an encoding whose bytes compare
 * like the values do turns every datastore ordering into a plain index
 * order:
 *
 *  - a key path is the concatenation of its elements; an element is its
 *    kind (escaped string), then 0x01 + the id (8 bytes, big-endian, sign
 *    bit flipped) or 0x02 + the name (escaped string). Ids sort before
 *    names, as in App Engine, and a key is a byte prefix of its
 *    descendants' keys, so an ancestor and its descendants are one
 *    contiguous range;
 *  - an escaped string is its bytes with 0x00 written 0x00 0xff, then the
 *    terminator 0x00 0x01: shorter strings sort first and no string's
 *    encoding is a prefix of another's;
 *  - a property value is a type tag, ordered as App Engine orders value
 *    types (null < integers < booleans < strings and bytes < doubles <
 *    points < users < keys), then the value. Every encoding is also
 *    decodable, so projection queries read values from the index alone.
 */
#ifndef AF_DATASTORE_KEY_H
#define AF_DATASTORE_KEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "datastore_v3.pb-c.h"

/* Short names for the generated types used across the datastore files. */
typedef Af__Datastore__PropertyValue ds_value_t;
typedef Af__Datastore__Property ds_property_t;
typedef Af__Datastore__Reference ds_reference_t;
typedef Af__Datastore__Path ds_path_t;
typedef Af__Datastore__Path__Element ds_element_t;
typedef Af__Datastore__EntityProto ds_entity_t;

/* A growable byte buffer. Zero-initialize; release with af_ds_buf_release. */
struct af_ds_buf {
    uint8_t *p;
    size_t len, cap;
};
void af_ds_buf_put(struct af_ds_buf *b, const void *data, size_t n);
void af_ds_buf_byte(struct af_ds_buf *b, uint8_t c);
void af_ds_buf_release(struct af_ds_buf *b);

/* Value type tags, in App Engine's cross-type order. */
enum af_ds_tag {
    AF_DS_TAG_NULL = 0x10,
    AF_DS_TAG_INT = 0x20,
    AF_DS_TAG_BOOL = 0x30,
    AF_DS_TAG_STRING = 0x40,
    AF_DS_TAG_DOUBLE = 0x50,
    AF_DS_TAG_POINT = 0x60,
    AF_DS_TAG_USER = 0x70,
    AF_DS_TAG_REF = 0x80,
};

/* Limits of App Engine: a kind or a key name up to 1500 bytes, a key path
 * up to 100 elements, an indexed string up to 1500 bytes. */
#define AF_DS_MAX_KEY_PART 1500
#define AF_DS_MAX_PATH 100
#define AF_DS_MAX_INDEXED_STRING 1500

/* A path element independent of the message it came from (Path.Element and
 * PropertyValue.ReferenceValue.PathElement have the same fields). */
struct af_ds_elem {
    const char *type;
    bool has_id;
    int64_t id;
    const char *name; /* NULL: none */
};

/*
 * Checks a key. The last element may be incomplete (no id, no name) only
 * when allow_incomplete. Returns NULL when the key is valid, else a static
 * sentence saying what is wrong (for a BAD_REQUEST detail).
 */
const char *af_ds_key_check(const ds_reference_t *key, bool allow_incomplete);

/* True when the last element has neither id nor name. */
bool af_ds_key_incomplete(const ds_reference_t *key);

/* Appends the encoding of n elements of path to b. */
void af_ds_path_encode(struct af_ds_buf *b, const ds_path_t *path, size_t n);
void af_ds_elem_encode(struct af_ds_buf *b, const struct af_ds_elem *e);

/*
 * Decodes a key encoding into a malloc'd Path (release with
 * protobuf_c_message_free_unpacked(&path->base, NULL)). Returns NULL when
 * the bytes are not a key encoding.
 */
ds_path_t *af_ds_path_decode(const uint8_t *p, size_t n);

/* Appends to b the smallest byte string greater than every string that
 * starts with prefix (the end of a prefix range). An all-0xff prefix has no
 * successor: returns false and appends nothing. */
bool af_ds_prefix_successor(struct af_ds_buf *b, const uint8_t *prefix, size_t n);

/* The tag of a value (AF_DS_TAG_NULL when no field is set). */
enum af_ds_tag af_ds_value_tag(const ds_value_t *v);

/* Appends the index encoding of a value to b. */
void af_ds_value_encode(struct af_ds_buf *b, const ds_value_t *v);

/* Decodes an index encoding into a malloc'd PropertyValue (release with
 * protobuf_c_message_free_unpacked). NULL when the bytes are malformed. */
ds_value_t *af_ds_value_decode(const uint8_t *p, size_t n);

/* Order-preserving escaped string, appended to b. */
void af_ds_string_encode(struct af_ds_buf *b, const uint8_t *s, size_t n);

#endif
