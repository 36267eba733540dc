#ifndef HEROLD_CLI_PACK_H
#define HEROLD_CLI_PACK_H

/*
 * What the publishing clients share: a growable buffer for msgpack_packer and JSON values
 * packed as msgpack one to one (an event's map, its data).
 */

#include <jansson.h>
#include <msgpack.h>
#include <string.h>

#include "mem.h"

/* ---- a growable byte buffer that the msgpack packer writes into ---- */

struct payload {
    char *data;
    size_t size;
    size_t capacity;
};

/* msgpack_packer_write callback: out of memory is fatal (xrealloc), so it never fails. */
static inline int payload_write(void *data, const char *buf, size_t len)
{
    struct payload *payload = data;
    if (len > payload->capacity - payload->size) {
        size_t capacity = payload->capacity != 0 ? payload->capacity : 256;
        while (len > capacity - payload->size) {
            capacity *= 2;
        }
        payload->data = xrealloc(payload->data, capacity);
        payload->capacity = capacity;
    }
    memcpy(payload->data + payload->size, buf, len);
    payload->size += len;
    return 0;
}

/* ---- JSON -> msgpack ---- */

static inline void pack_strn(msgpack_packer *pk, const char *p, size_t len)
{
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, p, len);
}

static inline void pack_cstr(msgpack_packer *pk, const char *s)
{
    pack_strn(pk, s, strlen(s));
}

/* Maps a JSON value onto msgpack one to one; object members keep their order. */
static inline void pack_json(msgpack_packer *pk, const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_OBJECT: {
        const char *key;
        size_t key_len;
        json_t *member;
        msgpack_pack_map(pk, json_object_size(value));
        json_object_keylen_foreach((json_t *)value, key, key_len, member)
        {
            pack_strn(pk, key, key_len);
            pack_json(pk, member);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *item;
        msgpack_pack_array(pk, json_array_size(value));
        json_array_foreach(value, i, item)
        {
            pack_json(pk, item);
        }
        break;
    }
    case JSON_STRING:
        pack_strn(pk, json_string_value(value), json_string_length(value));
        break;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(value));
        break;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(value));
        break;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        break;
    case JSON_NULL:
        msgpack_pack_nil(pk);
        break;
    }
}

#endif
