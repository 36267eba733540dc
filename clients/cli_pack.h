#ifndef HEROLD_CLI_PACK_H
#define HEROLD_CLI_PACK_H

/*
 * What the publishing clients share: a growable buffer for msgpack_packer and JSON values
 * packed as msgpack one to one (an event's map, its data).
 */

#include <jansson.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdio.h>
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

/* ---- the broker's replies ---- */

/* A reply to one event (schemas/event.md): its id (a view into the unpacked reply), ok,
 * and for a refusal "code: message". */
typedef struct cli_reply {
    const char *id;
    size_t id_len;
    bool ok;
    char error[256];
} cli_reply_t;

/* Reads the reply in data[0..len) into *out (strings live as long as un). False for a
 * message that is not a reply map with an id. */
static inline bool cli_reply_read(msgpack_unpacked *un, const void *data, size_t len,
                                  cli_reply_t *out)
{
    memset(out, 0, sizeof(*out));
    if (msgpack_unpack_next(un, data, len, NULL) != MSGPACK_UNPACK_SUCCESS ||
        un->data.type != MSGPACK_OBJECT_MAP) {
        return false;
    }
    const msgpack_object_map *map = &un->data.via.map;
    for (uint32_t i = 0; i < map->size; i++) {
        const msgpack_object *k = &map->ptr[i].key;
        const msgpack_object *v = &map->ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR) {
            continue;
        }
        bool is_two = k->via.str.size == 2;
        if (is_two && memcmp(k->via.str.ptr, "id", 2) == 0 && v->type == MSGPACK_OBJECT_STR) {
            out->id = v->via.str.ptr;
            out->id_len = v->via.str.size;
        } else if (is_two && memcmp(k->via.str.ptr, "ok", 2) == 0 &&
                   v->type == MSGPACK_OBJECT_BOOLEAN) {
            out->ok = v->via.boolean;
        } else if (v->type == MSGPACK_OBJECT_STR && strlen(out->error) < 128) {
            size_t used = strlen(out->error); /* code and message of a refusal */
            snprintf(out->error + used, sizeof(out->error) - used, "%s%.*s", used != 0 ? ": " : "",
                     (int)v->via.str.size, v->via.str.ptr);
        }
    }
    return out->id != NULL;
}

#endif
