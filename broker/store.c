/*
 * What every store backend checks alike (store.h): the rules for keys and cursors, so
 * that the three backends cannot drift apart on what they accept.
 */

#include "store.h"

#include <inttypes.h>
#include <jansson.h>
#include <string.h>

#include "path.h"

int store_key_check(const char *what, const char *key, size_t len, struct herr *err)
{
    if (key == NULL || len == 0 || len > STORE_MAX_KEY_BYTES) {
        return herr_set(err, HEROLD_E_BAD_REQUEST, "store: %s of %zu bytes (1 to %d allowed)", what,
                        key != NULL ? len : 0, STORE_MAX_KEY_BYTES);
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c <= ' ' || c == 0x7f) {
            return herr_set(err, HEROLD_E_BAD_REQUEST,
                            "store: %s has a space or control character at byte %zu", what, i);
        }
    }
    if (!path_utf8_is_valid(key, len)) {
        return herr_set(err, HEROLD_E_BAD_REQUEST, "store: %s is not valid UTF-8", what);
    }
    return 0;
}

int store_cursors_check(const store_cursor_t *cursors, size_t count, struct herr *err)
{
    for (size_t i = 0; i < count; i++) {
        const char *key = cursors[i].key;
        int rc = store_key_check("cursor key", key,
                                 key != NULL ? strnlen(key, STORE_MAX_KEY_BYTES + 1) : 0, err);
        if (rc != 0) {
            return rc;
        }
        if (cursors[i].seq > (uint64_t)INT64_MAX) {
            return herr_set(err, HEROLD_E_BAD_REQUEST, "store: cursor seq %" PRIu64 " too large",
                            cursors[i].seq);
        }
    }
    return 0;
}

void store_cursor_raise(json_t *cursors, const char *key, uint64_t seq)
{
    json_t *known = json_object_get(cursors, key);
    if (known == NULL || (uint64_t)json_integer_value(known) < seq) {
        json_object_set_new(cursors, key, json_integer((json_int_t)seq));
    }
}
