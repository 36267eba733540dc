#include "event.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <msgpack.h>
#include <msgpack/unpack_define.h> /* MSGPACK_EMBED_STACK_SIZE */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decimal.h"

/*
 * Decoding works in two passes over the event's own copy of the message.
 *
 * The first pass (scan_object) walks the msgpack bytes without allocating anything. It
 * proves that the message is exactly one complete msgpack object, that no container claims
 * more entries than there are bytes left (each entry takes at least one byte), and that
 * containers nest at most MESSAGE_MAX_DEPTH deep. msgpack-c allocates the entry array of a
 * container from the claimed count before it reads a single entry, so a five-byte message
 * claiming 2^32 entries would otherwise make it ask for 100 GB; after the scan, what the
 * unpacker allocates is bounded by the message size.
 *
 * The second pass reads the top-level map header itself and reads each key and each
 * value: what valid events are made of (str, unsigned int, the array of str) straight from
 * the bytes (read_plain), anything else with msgpack_unpack, into one zone per message
 * (msgpack_unpack_next would create an 8 KiB zone per msgpack_unpacked, two per event: 6 %
 * of the broker under load). Reading entry by entry gives the byte offsets of every
 * value, which is how `data` becomes a view of its own encoded bytes (the size limit
 * counts the bytes the publisher sent, not a re-encoding), and lets a refusal name the
 * first bad entry in message order. msgpack-c does not copy str payloads: the objects
 * point into the buffer they were unpacked from, so every view in the event points into
 * event->raw and the event is self-contained.
 *
 * The first rule broken wins: the size, then the structure (malformed), then the entries
 * in the order they appear, then the missing required fields in the order id, source,
 * type, resource, time, readers.
 */

/* The first chunk of the zone a message is unpacked into: room for the objects of a
 * typical event (a reader array of a few dozen, a small data map) in one allocation. */
#define EVENT_UNPACK_ZONE_BYTES 2048

/* Containers nested deeper than this anywhere in a message make it malformed. It lies
 * below msgpack-c's own stack (MSGPACK_EMBED_STACK_SIZE), so the unpacker never fails on a
 * message the scan accepted, and above 1 + EVENT_MAX_DATA_DEPTH, so that a data map that
 * is a little too deep is refused by name. */
#define MESSAGE_MAX_DEPTH 24

_Static_assert(MESSAGE_MAX_DEPTH < MSGPACK_EMBED_STACK_SIZE, "scan depth within msgpack-c's");
_Static_assert(MESSAGE_MAX_DEPTH > EVENT_MAX_DATA_DEPTH + 1, "a deep data map is named");

/* How many bytes of a refused value an error message quotes. */
#define SHOWN_BYTES 32
/* Room for SHOWN_BYTES escaped as \xNN, the "..." mark and the NUL. */
#define SHOWN_BUFFER (SHOWN_BYTES * 4 + 4)
/* Room for a field name with a position, such as "readers[1023]" or "data.a.b[3]". */
#define LABEL_BUFFER 96

enum field {
    FIELD_ID,
    FIELD_SOURCE,
    FIELD_TYPE,
    FIELD_RESOURCE,
    FIELD_PREVIOUS,
    FIELD_TIME,
    FIELD_ACTOR,
    FIELD_READERS,
    FIELD_KIND,
    FIELD_TENANT,
    FIELD_DATA,
    FIELD_COUNT
};

/* Literals, so .p is also NUL-terminated for messages. */
static const hstr_t field_names[FIELD_COUNT] = {
    [FIELD_ID] = HSTR_LIT("id"),
    [FIELD_SOURCE] = HSTR_LIT("source"),
    [FIELD_TYPE] = HSTR_LIT("type"),
    [FIELD_RESOURCE] = HSTR_LIT("resource"),
    [FIELD_PREVIOUS] = HSTR_LIT("previous"),
    [FIELD_TIME] = HSTR_LIT("time"),
    [FIELD_ACTOR] = HSTR_LIT("actor"),
    [FIELD_READERS] = HSTR_LIT("readers"),
    [FIELD_KIND] = HSTR_LIT("kind"),
    [FIELD_TENANT] = HSTR_LIT("tenant"),
    [FIELD_DATA] = HSTR_LIT("data"),
};

/* The order in which missing required fields are reported. */
static const enum field required_fields[] = {FIELD_ID,       FIELD_SOURCE, FIELD_TYPE,
                                             FIELD_RESOURCE, FIELD_TIME,   FIELD_READERS};

/* ---- error message helpers ---- */

/* Writes up to SHOWN_BYTES of p into buf (SHOWN_BUFFER bytes) as printable ASCII: bytes
 * outside 0x20..0x7e, the quote and the backslash become \xNN, and a longer value is cut
 * and marked "...". The result is always valid UTF-8, whatever the input was. */
static const char *shown(char *buf, const char *p, size_t len)
{
    size_t out = 0;
    size_t count = len < SHOWN_BYTES ? len : SHOWN_BYTES;
    for (size_t i = 0; i < count; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c > 0x7e || c == '\'' || c == '\\') {
            snprintf(buf + out, SHOWN_BUFFER - out, "\\x%02x", c);
            out += 4;
        } else {
            buf[out++] = (char)c;
        }
    }
    if (count < len) {
        memcpy(buf + out, "...", 3);
        out += 3;
    }
    buf[out] = '\0';
    return buf;
}

static const char *object_type_name(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return "nil";
    case MSGPACK_OBJECT_BOOLEAN:
        return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return "int";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return "float";
    case MSGPACK_OBJECT_STR:
        return "str";
    case MSGPACK_OBJECT_ARRAY:
        return "array";
    case MSGPACK_OBJECT_MAP:
        return "map";
    case MSGPACK_OBJECT_BIN:
        return "bin";
    case MSGPACK_OBJECT_EXT:
        return "ext";
    }
    return "unknown";
}

/* ---- pass one: the allocation-free structural scan ---- */

enum wire_kind { WIRE_SCALAR, WIRE_STR, WIRE_BIN, WIRE_EXT, WIRE_ARRAY, WIRE_MAP };

struct wire_head {
    enum wire_kind kind;
    size_t size;      /* bytes of the whole object; of the header alone for containers */
    size_t body;      /* str, bin, ext: payload bytes (at the end of size) */
    uint64_t count;   /* array: elements; map: key/value pairs */
    const char *what; /* type name for messages */
};

enum { WIRE_OK = 0, WIRE_TRUNCATED = 1, WIRE_INVALID = 2 };

static uint64_t read_be(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* Reads the header of the object at pos. Returns WIRE_OK with *h filled, WIRE_TRUNCATED
 * when the object (for containers: its header) does not fit before len, or WIRE_INVALID
 * for the one byte msgpack never uses (0xc1). */
static int wire_head_read(const unsigned char *p, size_t len, size_t pos, struct wire_head *h)
{
    if (pos >= len) {
        return WIRE_TRUNCATED;
    }
    unsigned char b = p[pos];
    size_t fixed = 0;     /* header bytes after the type byte, for fixed-size objects */
    size_t len_bytes = 0; /* width of the length field of str, bin, ext */
    size_t extra = 0;     /* ext: the type byte after the length */

    memset(h, 0, sizeof(*h));
    h->kind = WIRE_SCALAR;
    if (b <= 0x7f || b >= 0xe0) {
        h->what = "int";
    } else if (b <= 0x8f) {
        h->kind = WIRE_MAP;
        h->count = b & 0x0f;
        h->what = "map";
    } else if (b <= 0x9f) {
        h->kind = WIRE_ARRAY;
        h->count = b & 0x0f;
        h->what = "array";
    } else if (b <= 0xbf) {
        h->kind = WIRE_STR;
        h->body = b & 0x1f;
        h->what = "str";
    } else {
        switch (b) {
        case 0xc0:
            h->what = "nil";
            break;
        case 0xc1:
            return WIRE_INVALID;
        case 0xc2:
        case 0xc3:
            h->what = "bool";
            break;
        case 0xc4:
        case 0xc5:
        case 0xc6:
            h->kind = WIRE_BIN;
            len_bytes = (size_t)1 << (b - 0xc4);
            h->what = "bin";
            break;
        case 0xc7:
        case 0xc8:
        case 0xc9:
            h->kind = WIRE_EXT;
            len_bytes = (size_t)1 << (b - 0xc7);
            extra = 1;
            h->what = "ext";
            break;
        case 0xca:
        case 0xcb:
            fixed = b == 0xca ? 4 : 8;
            h->what = "float";
            break;
        case 0xcc:
        case 0xcd:
        case 0xce:
        case 0xcf:
            fixed = (size_t)1 << (b - 0xcc);
            h->what = "int";
            break;
        case 0xd0:
        case 0xd1:
        case 0xd2:
        case 0xd3:
            fixed = (size_t)1 << (b - 0xd0);
            h->what = "int";
            break;
        case 0xd4:
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8:
            h->kind = WIRE_EXT;
            h->body = (size_t)1 << (b - 0xd4);
            extra = 1;
            h->what = "ext";
            break;
        case 0xd9:
        case 0xda:
        case 0xdb:
            h->kind = WIRE_STR;
            len_bytes = (size_t)1 << (b - 0xd9);
            h->what = "str";
            break;
        case 0xdc:
        case 0xdd:
            h->kind = WIRE_ARRAY;
            len_bytes = b == 0xdc ? 2 : 4;
            h->what = "array";
            break;
        default: /* 0xde, 0xdf */
            h->kind = WIRE_MAP;
            len_bytes = b == 0xde ? 2 : 4;
            h->what = "map";
            break;
        }
    }

    size_t head = 1 + fixed + len_bytes + extra;
    if (head > len - pos) {
        return WIRE_TRUNCATED;
    }
    if (len_bytes != 0) {
        uint64_t n = read_be(p + pos + 1, len_bytes);
        if (h->kind == WIRE_ARRAY || h->kind == WIRE_MAP) {
            h->count = n;
        } else {
            h->body = (size_t)n;
        }
    }
    if (h->body > len - pos - head) {
        return WIRE_TRUNCATED;
    }
    h->size = head + h->body;
    return WIRE_OK;
}

/* Walks one complete object starting at *pos and moves *pos past it. Returns 0, or
 * HEROLD_E_MALFORMED with err set when the bytes end inside the object, hold the invalid
 * byte, claim more entries than bytes remain, or nest deeper than MESSAGE_MAX_DEPTH. */
static int scan_object(const unsigned char *p, size_t len, size_t *pos, struct herr *err)
{
    uint64_t pending[MESSAGE_MAX_DEPTH]; /* entries still to come in each open container */
    size_t top = 0;

    for (;;) {
        struct wire_head h;
        int rc = wire_head_read(p, len, *pos, &h);
        if (rc == WIRE_TRUNCATED) {
            return herr_set(err, HEROLD_E_MALFORMED,
                            "message: truncated: the object at offset %zu runs past the end "
                            "of the message (%zu bytes)",
                            *pos, len);
        }
        if (rc == WIRE_INVALID) {
            return herr_set(err, HEROLD_E_MALFORMED,
                            "message: byte 0xc1 at offset %zu is not valid msgpack", *pos);
        }
        if (h.kind == WIRE_ARRAY || h.kind == WIRE_MAP) {
            if (top == MESSAGE_MAX_DEPTH) {
                return herr_set(err, HEROLD_E_MALFORMED,
                                "message: containers nested deeper than the %d-level limit "
                                "at offset %zu",
                                MESSAGE_MAX_DEPTH, *pos);
            }
            uint64_t entries = h.kind == WIRE_MAP ? 2 * h.count : h.count;
            if (entries > len - *pos - h.size) {
                return herr_set(err, HEROLD_E_MALFORMED,
                                "message: truncated: the %s at offset %zu claims %" PRIu64
                                " entries but only %zu bytes follow",
                                h.what, *pos, h.count, len - *pos - h.size);
            }
            *pos += h.size;
            if (entries > 0) {
                pending[top++] = entries;
                continue;
            }
        } else {
            *pos += h.size;
        }
        /* One object is complete: it may complete its container, and so on upwards. */
        while (top > 0) {
            if (--pending[top - 1] > 0) {
                break;
            }
            top--;
        }
        if (top == 0) {
            return 0;
        }
    }
}

/* ---- pass two: the fields ---- */

/* A view of a str object. msgpack-c unpacks str payloads in place, so a non-empty one
 * lies inside the event's raw copy; the assert guards that property of the library. */
static hstr_t str_view(const event_t *event, const msgpack_object *o)
{
    hstr_t view = {o->via.str.ptr, o->via.str.size};
    if (view.len == 0) {
        view.p = event->raw;
    }
    assert(view.p >= event->raw && view.len <= event->raw_len &&
           (size_t)(view.p - event->raw) <= event->raw_len - view.len);
    return view;
}

/* Checks that o is a str of min_len..max_len bytes of valid UTF-8 and sets *out to it. */
static int take_str(const event_t *event, const msgpack_object *o, const char *what, size_t min_len,
                    size_t max_len, hstr_t *out, struct herr *err)
{
    if (o->type == MSGPACK_OBJECT_BIN) {
        return herr_set(err, HEROLD_E_FIELD_TYPE,
                        "%s: must be a str, got bin (msgpack bin is not accepted for text)", what);
    }
    if (o->type != MSGPACK_OBJECT_STR) {
        return herr_set(err, HEROLD_E_FIELD_TYPE, "%s: must be a str, got %s", what,
                        object_type_name(o));
    }
    size_t len = o->via.str.size;
    if (len > max_len) {
        return herr_set(err, HEROLD_E_FIELD_TOO_LONG, "%s: %zu bytes exceeds the %zu-byte limit",
                        what, len, max_len);
    }
    if (len < min_len) {
        return herr_set(err, HEROLD_E_FIELD_TYPE, "%s: must not be empty", what);
    }
    if (!path_utf8_is_valid(o->via.str.ptr, len)) {
        return herr_set(err, HEROLD_E_BAD_UTF8, "%s: not valid UTF-8", what);
    }
    *out = str_view(event, o);
    return 0;
}

static int take_path(const event_t *event, const msgpack_object *o, const char *what, hstr_t *text,
                     path_t *path, struct herr *err)
{
    struct herr path_err;
    int rc = take_str(event, o, what, 0, PATH_MAX_BYTES, text, err);
    if (rc != 0) {
        return rc;
    }
    herr_clear(&path_err);
    rc = path_parse(text->p, text->len, path, &path_err);
    if (rc != 0) {
        return herr_set(err, HEROLD_E_BAD_PATH, "%s: %s", what, path_err.message);
    }
    return 0;
}

static int take_type(const event_t *event, const msgpack_object *o, event_change_t *out,
                     struct herr *err)
{
    hstr_t text;
    char buf[SHOWN_BUFFER];
    int rc = take_str(event, o, "type", 0, SIZE_MAX, &text, err);
    if (rc != 0) {
        return rc;
    }
    *out = event_change_parse(text.p, text.len);
    if (*out == 0) {
        return herr_set(err, HEROLD_E_BAD_CHANGE_TYPE,
                        "type: '%s' is not created, updated or deleted",
                        shown(buf, text.p, text.len));
    }
    return 0;
}

static int take_time(const msgpack_object *o, int64_t *out, struct herr *err)
{
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        return herr_set(err, HEROLD_E_BAD_TIME,
                        "time: %" PRId64 " is before the epoch; it must be > 0 (milliseconds "
                        "since the epoch)",
                        o->via.i64);
    }
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        return herr_set(err, HEROLD_E_FIELD_TYPE,
                        "time: must be an int (milliseconds since the epoch), got %s",
                        object_type_name(o));
    }
    uint64_t ms = o->via.u64;
    if (ms == 0) {
        return herr_set(err, HEROLD_E_BAD_TIME,
                        "time: 0 is not after the epoch; it must be > 0 (milliseconds since "
                        "the epoch)");
    }
    if (ms > (uint64_t)EVENT_MAX_TIME_MS) {
        return herr_set(err, HEROLD_E_BAD_TIME,
                        "time: %" PRIu64 " is after %lld (9999-12-31T23:59:59.999Z); it must "
                        "be milliseconds, not microseconds or nanoseconds",
                        ms, EVENT_MAX_TIME_MS);
    }
    *out = (int64_t)ms;
    return 0;
}

static int take_kind(const event_t *event, const msgpack_object *o, hstr_t *out, struct herr *err)
{
    int rc = take_str(event, o, "kind", 1, EVENT_MAX_SHORT_BYTES, out, err);
    if (rc != 0) {
        return rc;
    }
    for (size_t i = 0; i < out->len; i++) {
        unsigned char c = (unsigned char)out->p[i];
        bool is_allowed = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                          (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
        if (!is_allowed) {
            char buf[SHOWN_BUFFER];
            return herr_set(err, HEROLD_E_FIELD_TYPE,
                            "kind: '%s': byte %zu is not one of A-Z a-z 0-9 _ . -",
                            shown(buf, out->p, out->len), i);
        }
    }
    return 0;
}

/* "readers[<i>]", for error messages: written by hand, since every reader of every event
 * gets one and snprintf was a visible part of decoding. */
static void reader_label(char *what, size_t i)
{
    static const char prefix[] = "readers[";
    memcpy(what, prefix, sizeof(prefix) - 1);
    size_t n = sizeof(prefix) - 1 + decimal_u64(i, what + sizeof(prefix) - 1);
    what[n] = ']';
    what[n + 1] = '\0';
}

/* Validates every entry before allocating, so a refusal allocates nothing here. */
static int take_readers(event_t *event, const msgpack_object *o, struct herr *err)
{
    char what[LABEL_BUFFER];
    if (o->type != MSGPACK_OBJECT_ARRAY) {
        return herr_set(err, HEROLD_E_FIELD_TYPE, "readers: must be an array of str, got %s",
                        object_type_name(o));
    }
    size_t count = o->via.array.size;
    if (count > EVENT_MAX_READERS) {
        return herr_set(err, HEROLD_E_TOO_MANY_READERS,
                        "readers: %zu entries exceeds the %d-entry limit", count,
                        EVENT_MAX_READERS);
    }
    for (size_t i = 0; i < count; i++) {
        hstr_t principal;
        reader_label(what, i);
        /* The principal rules bound the length; take_str only checks type and UTF-8. */
        int rc = take_str(event, &o->via.array.ptr[i], what, 0, SIZE_MAX, &principal, err);
        if (rc == 0) {
            rc = event_principal_validate(principal.p, principal.len, what, err);
        }
        if (rc != 0) {
            return rc;
        }
    }
    /* In a pooled block, after the message when they fit (aligned for hstr_t). */
    size_t offset =
        (sizeof(event_t) + event->raw_len + _Alignof(hstr_t) - 1) & ~(_Alignof(hstr_t) - 1);
    event->is_readers_inline =
        count > 0 && event->is_pooled && offset + count * sizeof(hstr_t) <= EVENT_POOL_BLOCK_BYTES;
    event->readers = event->is_readers_inline ? (hstr_t *)((char *)event + offset)
                     : count > 0              ? xcalloc(count, sizeof(*event->readers))
                                              : NULL;
    for (size_t i = 0; i < count; i++) {
        event->readers[i] = str_view(event, &o->via.array.ptr[i]);
    }
    event->reader_count = count;
    return 0;
}

/* Where a value sits inside data: a chain from the value up to "data", formatted only for
 * an error message (formatting every key's label up front was most of the check's cost). */
struct data_label {
    const struct data_label *parent; /* NULL for the root */
    const msgpack_object *key;       /* a map entry's key, or NULL for an array element */
    size_t index;                    /* the array element's index */
};

/* Writes the label into out (LABEL_BUFFER bytes): "data", then ".key" (cut to 16 bytes,
 * "..." marking the cut) or "[index]" per level, cut where it does not fit. */
static void format_label(const struct data_label *label, char *out)
{
    if (label->parent == NULL) {
        snprintf(out, LABEL_BUFFER, "data");
        return;
    }
    char parent[LABEL_BUFFER];
    format_label(label->parent, parent);
    if (label->key != NULL) {
        const msgpack_object *key = label->key;
        char buf[SHOWN_BUFFER];
        /* A label cut short is still a fine label: the lengths are looked at only to
         * say so to the compiler. */
        int len =
            snprintf(out, LABEL_BUFFER, "%s.%s", parent,
                     shown(buf, key->via.str.ptr, key->via.str.size < 16 ? key->via.str.size : 16));
        if (key->via.str.size > 16 && len >= 0 && len < LABEL_BUFFER - 1) {
            size_t used = (size_t)len;
            if (snprintf(out + used, LABEL_BUFFER - used, "...") < 0) {
                out[used] = '\0';
            }
        }
    } else if (snprintf(out, LABEL_BUFFER, "%s[%zu]", parent, label->index) < 0) {
        out[0] = '\0';
    }
}

/* Data becomes JSON in rich notifications, so it must have a JSON form: str keys, valid
 * UTF-8, finite numbers, no bin or ext; and at most EVENT_MAX_DATA_DEPTH nested
 * containers. Recursion is bounded by the scan's MESSAGE_MAX_DEPTH. */
static int check_data_value(const msgpack_object *o, const struct data_label *label, int depth,
                            struct herr *err)
{
    char text[LABEL_BUFFER];
    switch (o->type) {
    case MSGPACK_OBJECT_MAP:
    case MSGPACK_OBJECT_ARRAY:
        if (depth > EVENT_MAX_DATA_DEPTH) {
            format_label(label, text);
            return herr_set(err, HEROLD_E_FIELD_TOO_LONG,
                            "%s: nested %d levels deep, over the %d-level limit for data", text,
                            depth, EVENT_MAX_DATA_DEPTH);
        }
        break;
    case MSGPACK_OBJECT_STR:
        if (!path_utf8_is_valid(o->via.str.ptr, o->via.str.size)) {
            format_label(label, text);
            return herr_set(err, HEROLD_E_BAD_UTF8, "%s: not valid UTF-8", text);
        }
        return 0;
    case MSGPACK_OBJECT_BIN:
    case MSGPACK_OBJECT_EXT:
        format_label(label, text);
        return herr_set(err, HEROLD_E_FIELD_TYPE,
                        "%s: %s has no JSON form; data may hold nil, bool, int, float, str, "
                        "array and map",
                        text, object_type_name(o));
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!isfinite(o->via.f64)) {
            format_label(label, text);
            return herr_set(err, HEROLD_E_FIELD_TYPE, "%s: NaN and infinity have no JSON form",
                            text);
        }
        return 0;
    default:
        return 0;
    }

    if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (size_t i = 0; i < o->via.array.size; i++) {
            struct data_label child = {label, NULL, i};
            int rc = check_data_value(&o->via.array.ptr[i], &child, depth + 1, err);
            if (rc != 0) {
                return rc;
            }
        }
        return 0;
    }
    for (size_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR) {
            format_label(label, text);
            return herr_set(err, HEROLD_E_FIELD_TYPE, "%s: key %zu must be a str, got %s", text, i,
                            object_type_name(&kv->key));
        }
        if (!path_utf8_is_valid(kv->key.via.str.ptr, kv->key.via.str.size)) {
            format_label(label, text);
            return herr_set(err, HEROLD_E_BAD_UTF8, "%s: key %zu is not valid UTF-8", text, i);
        }
        struct data_label child = {label, &kv->key, 0};
        int rc = check_data_value(&kv->val, &child, depth + 1, err);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* start and end are the offsets of the data value inside event->raw. */
static int take_data(event_t *event, const msgpack_object *o, size_t start, size_t end,
                     struct herr *err)
{
    if (o->type != MSGPACK_OBJECT_MAP) {
        return herr_set(err, HEROLD_E_FIELD_TYPE, "data: must be a map, got %s",
                        object_type_name(o));
    }
    size_t size = end - start;
    if (size > EVENT_MAX_DATA_BYTES) {
        return herr_set(err, HEROLD_E_FIELD_TOO_LONG,
                        "data: %zu encoded bytes exceeds the %d-byte limit", size,
                        EVENT_MAX_DATA_BYTES);
    }
    const struct data_label root = {NULL, NULL, 0};
    int rc = check_data_value(o, &root, 1, err);
    if (rc != 0) {
        return rc;
    }
    event->data = (hstr_t){event->raw + start, size};
    return 0;
}

static int take_field(event_t *event, enum field field, const msgpack_object *o, size_t start,
                      size_t end, struct herr *err)
{
    switch (field) {
    case FIELD_ID:
        return take_str(event, o, "id", 1, EVENT_MAX_ID_BYTES, &event->id, err);
    case FIELD_SOURCE:
        return take_str(event, o, "source", 1, EVENT_MAX_SOURCE_BYTES, &event->source, err);
    case FIELD_TYPE:
        return take_type(event, o, &event->type, err);
    case FIELD_RESOURCE:
        return take_path(event, o, "resource", &event->resource, &event->resource_path, err);
    case FIELD_PREVIOUS:
        event->has_previous = true;
        return take_path(event, o, "previous", &event->previous, &event->previous_path, err);
    case FIELD_TIME:
        return take_time(o, &event->time_ms, err);
    case FIELD_ACTOR:
        return take_str(event, o, "actor", 0, EVENT_MAX_SHORT_BYTES, &event->actor, err);
    case FIELD_READERS:
        return take_readers(event, o, err);
    case FIELD_KIND:
        return take_kind(event, o, &event->kind, err);
    case FIELD_TENANT:
        return take_str(event, o, "tenant", 0, EVENT_MAX_SHORT_BYTES, &event->tenant, err);
    case FIELD_DATA:
        return take_data(event, o, start, end, err);
    case FIELD_COUNT:
        break;
    }
    assert(!"unreachable field");
    return HEROLD_E_INTERNAL;
}

static int field_lookup(const char *p, size_t len)
{
    for (int f = 0; f < FIELD_COUNT; f++) {
        if (hstr_eq(field_names[f], (hstr_t){p, len})) {
            return f;
        }
    }
    return -1;
}

/* The str object at pos, whose header is h, as msgpack-c would unpack it. */
static void str_object(const unsigned char *p, size_t pos, const struct wire_head *h,
                       msgpack_object *out)
{
    out->type = MSGPACK_OBJECT_STR;
    out->via.str.ptr = (const char *)p + pos + h->size - h->body;
    out->via.str.size = (uint32_t)h->body;
}

/* Reads the objects a valid event is made of straight from the message: a str, an int in
 * one of its unsigned encodings, or an array of str (the readers), filled in as msgpack-c
 * fills them in, the array's entries from zone. Any other object, and every refusal's type
 * name and value, is msgpack_unpack's: returns false and leaves *pos alone. Unpacking
 * these through msgpack-c, which walks a state machine and calls back per object, was 13 %
 * of the ingest thread in W1, after the scan had already read every header. */
static bool read_plain(msgpack_zone *zone, msgpack_object *result, const event_t *event,
                       size_t *pos)
{
    const unsigned char *p = (const unsigned char *)event->raw;
    size_t len = event->raw_len;
    unsigned char b = p[*pos];
    struct wire_head h;
    if (wire_head_read(p, len, *pos, &h) != WIRE_OK) {
        return false;
    }
    if (h.kind == WIRE_STR) {
        str_object(p, *pos, &h, result);
        *pos += h.size;
        return true;
    }
    if (b <= 0x7f || (b >= 0xcc && b <= 0xcf)) {
        result->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        result->via.u64 = b <= 0x7f ? b : read_be(p + *pos + 1, h.size - 1);
        *pos += h.size;
        return true;
    }
    if (h.kind != WIRE_ARRAY || h.count > EVENT_MAX_READERS) {
        return false;
    }
    msgpack_object *entries = NULL;
    if (h.count > 0) {
        entries = msgpack_zone_malloc(zone, h.count * sizeof(*entries));
        if (entries == NULL) {
            return false;
        }
    }
    size_t at = *pos + h.size;
    for (uint64_t i = 0; i < h.count; i++) {
        struct wire_head entry;
        if (wire_head_read(p, len, at, &entry) != WIRE_OK || entry.kind != WIRE_STR) {
            return false;
        }
        str_object(p, at, &entry, &entries[i]);
        at += entry.size;
    }
    result->type = MSGPACK_OBJECT_ARRAY;
    result->via.array.size = (uint32_t)h.count;
    result->via.array.ptr = entries;
    *pos = at;
    return true;
}

/* Reads the object at *pos (already proven sound by the scan) and moves *pos past it. */
static int unpack_at(msgpack_zone *zone, msgpack_object *result, const event_t *event, size_t *pos,
                     uint64_t entry, struct herr *err)
{
    if (read_plain(zone, result, event, pos)) {
        return 0;
    }
    msgpack_unpack_return rc = msgpack_unpack(event->raw, event->raw_len, pos, zone, result);
    if (rc != MSGPACK_UNPACK_SUCCESS && rc != MSGPACK_UNPACK_EXTRA_BYTES) {
        /* Only out of memory can get here after a successful scan: refuse, do not crash. */
        return herr_set(err, HEROLD_E_MALFORMED,
                        "message: entry %" PRIu64 " could not be unpacked (msgpack-c: %d)", entry,
                        (int)rc);
    }
    return 0;
}

struct event_decoder {
    msgpack_zone zone;
    void **blocks; /* taken back: a ring of EVENT_POOL_MAX_BLOCKS, oldest at block_head;
                    * made at the first, so that a one-off decoder (event_decode) costs none */
    size_t block_head;
    size_t block_count;
};

event_decoder_t *event_decoder_new(void)
{
    event_decoder_t *decoder = xmalloc(sizeof(*decoder));
    decoder->blocks = NULL;
    decoder->block_head = 0;
    decoder->block_count = 0;
    if (!msgpack_zone_init(&decoder->zone, EVENT_UNPACK_ZONE_BYTES)) {
        fprintf(stderr, "herold: out of memory making an event decoder\n");
        abort();
    }
    return decoder;
}

void event_decoder_free(event_decoder_t *decoder)
{
    if (decoder != NULL) {
        msgpack_zone_destroy(&decoder->zone);
        for (size_t i = 0; i < decoder->block_count; i++) {
            free(decoder->blocks[(decoder->block_head + i) % EVENT_POOL_MAX_BLOCKS]);
        }
        free(decoder->blocks);
        free(decoder);
    }
}

/* Unpacks through zone, which it clears (keeping its first chunk) before returning. */
static int decode_fields(event_t *event, msgpack_zone *zone, struct herr *err)
{
    const unsigned char *p = (const unsigned char *)event->raw;
    size_t len = event->raw_len;
    size_t pos = 0;
    struct wire_head top;
    int rc = scan_object(p, len, &pos, err);
    if (rc != 0) {
        return rc;
    }
    rc = wire_head_read(p, len, 0, &top);
    assert(rc == WIRE_OK);
    if (top.kind != WIRE_MAP) {
        return herr_set(err, HEROLD_E_MALFORMED,
                        "message: the top level is a msgpack %s; an event is one msgpack map",
                        top.what);
    }
    if (pos != len) {
        return herr_set(err, HEROLD_E_MALFORMED,
                        "message: %zu byte%s after the end of the map; a message carries one "
                        "event",
                        len - pos, len - pos == 1 ? "" : "s");
    }

    unsigned seen = 0;
    msgpack_object key_object;
    msgpack_object value_object;
    pos = top.size;
    for (uint64_t i = 0; i < top.count && rc == 0; i++) {
        char buf[SHOWN_BUFFER];
        rc = unpack_at(zone, &key_object, event, &pos, i, err);
        if (rc != 0) {
            break;
        }
        const msgpack_object *k = &key_object;
        if (k->type != MSGPACK_OBJECT_STR) {
            rc = herr_set(err, HEROLD_E_MALFORMED,
                          "message: the key of entry %" PRIu64 " is a msgpack %s; keys must be str",
                          i, object_type_name(k));
            break;
        }
        int field = field_lookup(k->via.str.ptr, k->via.str.size);
        if (field < 0) {
            rc = herr_set(err, HEROLD_E_UNKNOWN_FIELD, "message: unknown field '%s'",
                          shown(buf, k->via.str.ptr, k->via.str.size));
            break;
        }
        if (seen & (1u << field)) {
            rc = herr_set(err, HEROLD_E_DUPLICATE_FIELD, "%s: given twice", field_names[field].p);
            break;
        }
        seen |= 1u << field;
        size_t start = pos;
        rc = unpack_at(zone, &value_object, event, &pos, i, err);
        if (rc == 0) {
            rc = take_field(event, (enum field)field, &value_object, start, pos, err);
        }
    }
    msgpack_zone_clear(zone);
    if (rc != 0) {
        return rc;
    }

    for (size_t i = 0; i < sizeof(required_fields) / sizeof(required_fields[0]); i++) {
        if (!(seen & (1u << required_fields[i]))) {
            return herr_set(err, HEROLD_E_MISSING_FIELD, "%s: required field is missing",
                            field_names[required_fields[i]].p);
        }
    }
    return 0;
}

int event_decode(const void *message, size_t len, event_t **out, struct herr *err)
{
    event_decoder_t *decoder = event_decoder_new();
    int rc = event_decode_with(decoder, message, len, out, err);
    event_decoder_free(decoder);
    return rc;
}

/* The oldest block taken back (event.h says why not the newest). */
static void *take_block(event_decoder_t *decoder)
{
    void *block = decoder->blocks[decoder->block_head];
    decoder->block_head = (decoder->block_head + 1) % EVENT_POOL_MAX_BLOCKS;
    decoder->block_count--;
    return block;
}

int event_decode_with(event_decoder_t *decoder, const void *message, size_t len, event_t **out,
                      struct herr *err)
{
    *out = NULL;
    /* Before any copy or unpacking: the size is the first limit. */
    if (len > EVENT_MAX_MESSAGE_BYTES) {
        return herr_set(err, HEROLD_E_TOO_LARGE, "message: %zu bytes exceeds the %d-byte limit",
                        len, EVENT_MAX_MESSAGE_BYTES);
    }
    if (len == 0) {
        return herr_set(err, HEROLD_E_MALFORMED, "message: empty; an event is one msgpack map");
    }
    /* One block: the event, then its copy of the message (then, in a pooled block, its
     * readers when they fit). */
    bool is_pooled = sizeof(event_t) + len <= EVENT_POOL_BLOCK_BYTES;
    event_t *event = !is_pooled                 ? xmalloc(sizeof(*event) + len)
                     : decoder->block_count > 0 ? take_block(decoder)
                                                : xmalloc(EVENT_POOL_BLOCK_BYTES);
    memset(event, 0, sizeof(*event));
    event->is_pooled = is_pooled;
    event->raw = (char *)(event + 1);
    memcpy(event->raw, message, len);
    event->raw_len = len;
    int rc = decode_fields(event, &decoder->zone, err);
    if (rc != 0) {
        event_recycle(decoder, event);
        return rc;
    }
    *out = event;
    return 0;
}

void event_free(event_t *event)
{
    if (event == NULL) {
        return;
    }
    if (!event->is_readers_inline) {
        free(event->readers);
    }
    free(event);
}

void event_recycle(event_decoder_t *decoder, event_t *event)
{
    if (event == NULL || !event->is_pooled || decoder->block_count == EVENT_POOL_MAX_BLOCKS) {
        event_free(event);
        return;
    }
    if (!event->is_readers_inline) {
        free(event->readers);
    }
    if (decoder->blocks == NULL) {
        decoder->blocks = xmalloc(EVENT_POOL_MAX_BLOCKS * sizeof(*decoder->blocks));
    }
    decoder->blocks[(decoder->block_head + decoder->block_count++) % EVENT_POOL_MAX_BLOCKS] = event;
}

/* Walks the entries of a message's top-level map for the peek functions without reading
 * more than it must: a value is skipped only when the next entry is asked for, so what
 * follows the entry a caller wanted may be damaged or cut. */
struct top_walk {
    const unsigned char *p;
    size_t len;
    size_t pos;       /* the next key, or the value of the entry just returned */
    uint64_t left;    /* entries not yet returned */
    bool is_at_value; /* pos is at a value still to be skipped */
};

static bool top_walk_start(struct top_walk *w, const void *message, size_t len)
{
    struct wire_head top;
    if (message == NULL || wire_head_read(message, len, 0, &top) != WIRE_OK ||
        top.kind != WIRE_MAP) {
        return false;
    }
    *w = (struct top_walk){message, len, top.size, top.count, false};
    return true;
}

/* The next entry: *key is its str key (len 0 for a key of another type), and the walk's
 * pos is at its value. False at the end of the map or where the bytes do not read. */
static bool top_walk_next(struct top_walk *w, hstr_t *key)
{
    struct wire_head head;
    if ((w->is_at_value && scan_object(w->p, w->len, &w->pos, NULL) != 0) || w->left == 0 ||
        wire_head_read(w->p, w->len, w->pos, &head) != WIRE_OK) {
        return false;
    }
    *key = head.kind == WIRE_STR
               ? (hstr_t){(const char *)w->p + w->pos + head.size - head.body, head.body}
               : (hstr_t){NULL, 0};
    w->left--;
    w->is_at_value = true;
    return scan_object(w->p, w->len, &w->pos, NULL) == 0;
}

static bool key_is(hstr_t key, const char *name)
{
    return key.len == strlen(name) && memcmp(key.p, name, key.len) == 0;
}

/* The str value at the walk's pos as a view, when it is 1..max bytes of valid UTF-8. */
static bool top_walk_str(const struct top_walk *w, size_t max, hstr_t *out)
{
    struct wire_head value;
    if (wire_head_read(w->p, w->len, w->pos, &value) != WIRE_OK || value.kind != WIRE_STR ||
        value.body == 0 || value.body > max) {
        return false;
    }
    const char *text = (const char *)w->p + w->pos + value.size - value.body;
    if (!path_utf8_is_valid(text, value.body)) {
        return false;
    }
    *out = (hstr_t){text, value.body};
    return true;
}

bool event_peek_id(const void *message, size_t len, hstr_t *id)
{
    struct top_walk w;
    hstr_t key;
    if (!top_walk_start(&w, message, len)) {
        return false;
    }
    while (top_walk_next(&w, &key)) {
        if (key_is(key, "id")) {
            return top_walk_str(&w, EVENT_MAX_ID_BYTES, id);
        }
    }
    return false;
}

bool event_peek_origin(const void *message, size_t len, hstr_t *source, hstr_t *id)
{
    struct top_walk w;
    hstr_t key;
    bool has_source = false;
    bool has_id = false;
    if (!top_walk_start(&w, message, len)) {
        return false;
    }
    while (!(has_source && has_id) && top_walk_next(&w, &key)) {
        if (key_is(key, "id")) {
            if (has_id || !top_walk_str(&w, EVENT_MAX_ID_BYTES, id)) {
                return false;
            }
            has_id = true;
        } else if (key_is(key, "source")) {
            if (has_source || !top_walk_str(&w, EVENT_MAX_SOURCE_BYTES, source)) {
                return false;
            }
            has_source = true;
        }
    }
    return has_source && has_id;
}

/* ---- change types ---- */

const char *event_change_name(event_change_t type)
{
    switch (type) {
    case EVENT_CREATED:
        return "created";
    case EVENT_UPDATED:
        return "updated";
    case EVENT_DELETED:
        return "deleted";
    }
    return NULL;
}

event_change_t event_change_parse(const char *p, size_t len)
{
    static const event_change_t all[] = {EVENT_CREATED, EVENT_UPDATED, EVENT_DELETED};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        const char *name = event_change_name(all[i]);
        if (len == strlen(name) && memcmp(p, name, len) == 0) {
            return all[i];
        }
    }
    return 0;
}

int event_change_mask_parse(const char *p, size_t len, unsigned *mask, struct herr *err)
{
    char buf[SHOWN_BUFFER];
    unsigned result = 0;
    size_t i = 0;
    if (len == 0) {
        return herr_set(err, HEROLD_E_BAD_CHANGE_TYPE,
                        "changeType: empty; expected a comma-separated list of created, updated "
                        "and deleted");
    }
    for (;;) {
        size_t start = i;
        while (i < len && p[i] != ',') {
            i++;
        }
        /* Graph clients write "created, updated": spaces around a name are allowed. */
        size_t first = start;
        size_t last = i;
        while (first < last && p[first] == ' ') {
            first++;
        }
        while (last > first && p[last - 1] == ' ') {
            last--;
        }
        if (first == last) {
            return herr_set(err, HEROLD_E_BAD_CHANGE_TYPE,
                            "changeType: empty name at byte %zu of '%s'", start,
                            shown(buf, p, len));
        }
        event_change_t bit = event_change_parse(p + first, last - first);
        if (bit == 0) {
            return herr_set(err, HEROLD_E_BAD_CHANGE_TYPE,
                            "changeType: '%s' is not created, updated or deleted",
                            shown(buf, p + first, last - first));
        }
        if (result & bit) {
            return herr_set(err, HEROLD_E_BAD_CHANGE_TYPE, "changeType: '%s' is given twice",
                            event_change_name(bit));
        }
        result |= bit;
        if (i == len) {
            break;
        }
        i++; /* the comma */
    }
    *mask = result;
    return 0;
}

/* ---- principals ---- */

int event_principal_validate(const char *p, size_t len, const char *what, struct herr *err)
{
    char buf[SHOWN_BUFFER];
    const char *id;
    size_t id_len;
    if (what == NULL) {
        what = "principal";
    }
    if (len == 1 && p[0] == '*') {
        return 0;
    }
    if (len >= 5 && memcmp(p, "user:", 5) == 0) {
        id = p + 5;
        id_len = len - 5;
    } else if (len >= 6 && memcmp(p, "group:", 6) == 0) {
        id = p + 6;
        id_len = len - 6;
    } else {
        return herr_set(err, HEROLD_E_BAD_PRINCIPAL, "%s: '%s' is not user:<id>, group:<id> or *",
                        what, shown(buf, p, len));
    }
    if (id_len == 0) {
        return herr_set(err, HEROLD_E_BAD_PRINCIPAL, "%s: '%s' has an empty id", what,
                        shown(buf, p, len));
    }
    if (id_len > EVENT_MAX_PRINCIPAL_ID_BYTES) {
        return herr_set(err, HEROLD_E_BAD_PRINCIPAL,
                        "%s: the id of '%s' has %zu bytes, over the %d-byte limit", what,
                        shown(buf, p, len), id_len, EVENT_MAX_PRINCIPAL_ID_BYTES);
    }
    if (!path_utf8_is_valid(id, id_len)) {
        return herr_set(err, HEROLD_E_BAD_PRINCIPAL, "%s: '%s' is not valid UTF-8", what,
                        shown(buf, p, len));
    }
    for (size_t i = 0; i < id_len; i++) {
        unsigned char c = (unsigned char)id[i];
        /* C0, DEL, and C1 (U+0080..U+009F, encoded c2 80..c2 9f). */
        bool is_control = c < 0x20 || c == 0x7f ||
                          (c == 0xc2 && i + 1 < id_len && (unsigned char)id[i + 1] <= 0x9f);
        if (is_control) {
            return herr_set(err, HEROLD_E_BAD_PRINCIPAL,
                            "%s: '%s' has a control character in its id", what, shown(buf, p, len));
        }
        if (c == ' ') {
            return herr_set(err, HEROLD_E_BAD_PRINCIPAL, "%s: '%s' has a space in its id", what,
                            shown(buf, p, len));
        }
    }
    return 0;
}

size_t event_change_mask_format(unsigned mask, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (unsigned bit = EVENT_CREATED; bit <= EVENT_DELETED; bit <<= 1) {
        if (mask & bit) {
            len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, "%s%s",
                                    len > 0 ? "," : "", event_change_name((event_change_t)bit));
        }
    }
    return len;
}

/* A msgpack value of a validated data map as a jansson value (check_data_value has
 * already refused what JSON cannot hold). */
static json_t *data_value_json(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return o->via.u64 <= (uint64_t)INT64_MAX ? json_integer((json_int_t)o->via.u64)
                                                 : json_real((double)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR:
        return json_stringn(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *array = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            json_array_append_new(array, data_value_json(&o->via.array.ptr[i]));
        }
        return array;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *map = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            json_object_setn_new(map, kv->key.via.str.ptr, kv->key.via.str.size,
                                 data_value_json(&kv->val));
        }
        return map;
    }
    default:
        return json_null();
    }
}

json_t *event_data_json(const event_t *event)
{
    return event_data_map_json(event->data.p, event->data.len);
}

json_t *event_data_map_json(const void *data, size_t len)
{
    if (len == 0) {
        return NULL;
    }
    msgpack_unpacked unpacked;
    size_t offset = 0;
    msgpack_unpacked_init(&unpacked);
    json_t *result = NULL;
    if (msgpack_unpack_next(&unpacked, data, len, &offset) == MSGPACK_UNPACK_SUCCESS &&
        unpacked.data.type == MSGPACK_OBJECT_MAP) {
        result = data_value_json(&unpacked.data);
    }
    msgpack_unpacked_destroy(&unpacked);
    return result;
}
