/*
 * herold-pub: publishes change events to the broker's ingest socket (DESIGN.md 3.1).
 *
 * With --resource it builds one event from flags, or --repeat N copies of it with the ids
 * ID-1 .. ID-N. Without --resource every line of stdin is a JSON value that is sent as
 * msgpack as it is: objects become maps, integers ints, reals float64, null nil. The tool
 * validates nothing the broker validates: sending bad input unchanged is how the broker's
 * refusals are exercised, and a second validator here would only drift from event.c.
 *
 * Events are pipelined over one DEALER socket, at most PUB_WINDOW of them unanswered. An
 * ack comes after its batch's fdatasync and a trip through the broker's threads, several
 * milliseconds on a busy machine; the window covers that delay at a few hundred thousand
 * events/s, so that the publisher is not left waiting with nothing to send. The
 * broker answers every message, in order, with one msgpack map, which is printed as one
 * compact JSON line. Stdin is polled together with the socket, so that replies are printed
 * while an interactive writer is still typing, and a slow writer never stalls the replies.
 *
 * Exit status: 0 when every event was acked ok; 1 when any was refused, by the broker or
 * here (a stdin line that is not JSON or is longer than PUB_MAX_LINE_BYTES); 2 on usage
 * errors, connection errors, and when the broker leaves events unanswered for
 * PUB_REPLY_TIMEOUT_MS.
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <msgpack.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "cli.h"
#include "cli_curve.h"
#include "cli_pack.h"
#include "mem.h"
#include "zap.h"

#define PUB_DEFAULT_INGEST "tcp://127.0.0.1:5560"
#define PUB_WINDOW 8192                  /* events sent but not yet answered */
#define PUB_HWM (2 * PUB_WINDOW)         /* the window fits in the queues in both directions */
#define PUB_REPLY_TIMEOUT_MS 10000       /* without any reply while events are unanswered */
#define PUB_MAX_LINE_BYTES (1024 * 1024) /* one stdin line, without its newline */
/* The broker's ingest socket drops the connection, without a reply, on a frame larger than
 * this (its ZMQ_MAXMSGSIZE); such a payload is refused here instead of timing out. Anything
 * up to it is sent, so the broker's own too_large answer (64 KiB) can be tested. */
#define PUB_MAX_PAYLOAD_BYTES (1024 * 1024)
#define PUB_UUID_TEXT_BYTES 37

enum {
    PUB_EXIT_OK = 0,
    PUB_EXIT_REFUSED = 1,
    PUB_EXIT_FAILURE = 2,
};

struct options {
    const char *ingest;
    const char *server_key; /* the broker's CurveZMQ public key (Z85), or NULL */
    const char *key_file;   /* this publisher's keypair file (herold keygen) */
    const char *id;
    const char *source;
    const char *type;
    const char *resource;
    const char *readers;
    const char *actor;
    const char *kind;
    const char *tenant;
    const char *previous;
    json_t *data;
    int64_t time_ms;
    bool has_time;
    uint64_t repeat;
    bool has_repeat;
    uint64_t rate;        /* --rate: events/s; 0 when not given */
    bool has_event_flags; /* a flag that only makes sense with --resource */
    bool is_quiet;
};

/* ---- msgpack -> JSON (replies) ---- */

/* The length of the valid UTF-8 sequence at p, or 0 when the bytes there are not one
 * (overlong forms, surrogates and code points above U+10FFFF included). */
static size_t utf8_sequence_length(const unsigned char *p, size_t len)
{
    unsigned char lead = p[0];
    size_t need;
    unsigned char low = 0x80;
    unsigned char high = 0xbf;

    if (lead < 0x80) {
        return 1;
    } else if (lead >= 0xc2 && lead <= 0xdf) {
        need = 2;
    } else if (lead >= 0xe0 && lead <= 0xef) {
        need = 3;
        low = lead == 0xe0 ? 0xa0 : 0x80;
        high = lead == 0xed ? 0x9f : 0xbf;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
        need = 4;
        low = lead == 0xf0 ? 0x90 : 0x80;
        high = lead == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (len < need || p[1] < low || p[1] > high) {
        return 0;
    }
    for (size_t i = 2; i < need; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf) {
            return 0;
        }
    }
    return need;
}

/* A JSON string for bytes that should be UTF-8 but may not be: each invalid byte becomes
 * U+FFFD, so that a broken reply is still printed as valid JSON. */
static json_t *json_string_lossy(const char *p, size_t len)
{
    json_t *string = json_stringn(p, len);
    if (string != NULL) {
        return string;
    }
    char *text = xmalloc(len * 3 + 1);
    size_t used = 0;
    const unsigned char *in = (const unsigned char *)p;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_sequence_length(in + i, len - i);
        if (n == 0) {
            memcpy(text + used, "\xef\xbf\xbd", 3);
            used += 3;
            i++;
        } else {
            memcpy(text + used, in + i, n);
            used += n;
            i += n;
        }
    }
    string = json_stringn(text, used);
    free(text);
    return string;
}

static json_t *json_from_msgpack(const msgpack_object *object);

/* Object keys must be strings in JSON: a string key is taken as is, any other key as the
 * compact JSON text of its value. */
static void json_object_add_msgpack(json_t *target, const msgpack_object_kv *kv)
{
    json_t *key;
    if (kv->key.type == MSGPACK_OBJECT_STR) {
        key = json_string_lossy(kv->key.via.str.ptr, kv->key.via.str.size);
    } else {
        json_t *value = json_from_msgpack(&kv->key);
        char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
        key = json_string_lossy(text, strlen(text));
        free(text);
        json_decref(value);
    }
    json_object_setn_new(target, json_string_value(key), json_string_length(key),
                         json_from_msgpack(&kv->val));
    json_decref(key);
}

/* Converts any msgpack object to JSON. Bin becomes a base64 string; ext, NaN and the
 * infinities, which JSON cannot hold, become null. Caller owns the result. */
static json_t *json_from_msgpack(const msgpack_object *object)
{
    switch (object->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(object->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (object->via.u64 > (uint64_t)INT64_MAX) {
            return json_real((double)object->via.u64);
        }
        return json_integer((json_int_t)object->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)object->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return isfinite(object->via.f64) ? json_real(object->via.f64) : json_null();
    case MSGPACK_OBJECT_STR:
        return json_string_lossy(object->via.str.ptr, object->via.str.size);
    case MSGPACK_OBJECT_BIN: {
        size_t size = object->via.bin.size;
        unsigned char *text = xmalloc(4 * ((size + 2) / 3) + 1);
        int len = EVP_EncodeBlock(text, (const unsigned char *)object->via.bin.ptr, (int)size);
        json_t *string = json_stringn((const char *)text, (size_t)len);
        free(text);
        return string;
    }
    case MSGPACK_OBJECT_ARRAY: {
        json_t *array = json_array();
        for (uint32_t i = 0; i < object->via.array.size; i++) {
            json_array_append_new(array, json_from_msgpack(&object->via.array.ptr[i]));
        }
        return array;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *map = json_object();
        for (uint32_t i = 0; i < object->via.map.size; i++) {
            json_object_add_msgpack(map, &object->via.map.ptr[i]);
        }
        return map;
    }
    case MSGPACK_OBJECT_EXT:
    default:
        return json_null();
    }
}

/* ---- stdin lines ---- */

/* Reads lines from a file descriptor without blocking the caller when no whole line is
 * buffered, so that stdin can share one poll with the socket. */
struct line_reader {
    int fd;
    char *buf;                 /* PUB_MAX_LINE_BYTES + 1: a longest line and its newline */
    size_t start;              /* first byte not yet returned */
    size_t end;                /* one past the last byte read */
    unsigned long line_number; /* of the line last returned or reported */
    bool is_eof;
    bool is_skipping; /* inside an overlong line: drop everything up to its newline */
};

enum line_result {
    LINE_READY,      /* *line, *len hold the next line (without newline); valid until next call */
    LINE_TOO_LONG,   /* line line_number is longer than the limit and is skipped */
    LINE_NEED_INPUT, /* no whole line buffered: wait for the fd, then line_reader_fill() */
    LINE_END,        /* end of input */
};

static void line_reader_init(struct line_reader *reader, int fd)
{
    memset(reader, 0, sizeof(*reader));
    reader->fd = fd;
    reader->buf = xmalloc(PUB_MAX_LINE_BYTES + 1);
}

static void line_reader_clear(struct line_reader *reader)
{
    free(reader->buf);
    reader->buf = NULL;
}

static enum line_result line_reader_next(struct line_reader *reader, const char **line, size_t *len)
{
    for (;;) {
        char *first = reader->buf + reader->start;
        size_t buffered = reader->end - reader->start;
        char *newline = memchr(first, '\n', buffered);

        if (reader->is_skipping) {
            if (newline != NULL) {
                reader->start = (size_t)(newline + 1 - reader->buf);
                reader->is_skipping = false;
                continue;
            }
            reader->start = reader->end = 0;
            return reader->is_eof ? LINE_END : LINE_NEED_INPUT;
        }
        if (newline != NULL || (reader->is_eof && buffered > 0)) {
            size_t line_len = newline != NULL ? (size_t)(newline - first) : buffered;
            reader->start += newline != NULL ? line_len + 1 : line_len;
            reader->line_number++;
            if (line_len > 0 && first[line_len - 1] == '\r') {
                line_len--;
            }
            *line = first;
            *len = line_len;
            return LINE_READY;
        }
        if (buffered > PUB_MAX_LINE_BYTES) {
            reader->line_number++;
            reader->is_skipping = true;
            reader->start = reader->end = 0;
            return LINE_TOO_LONG;
        }
        return reader->is_eof ? LINE_END : LINE_NEED_INPUT;
    }
}

/* Reads what the fd has. Returns 0, or -1 on a read error (errno set). */
static int line_reader_fill(struct line_reader *reader)
{
    if (reader->start > 0) {
        memmove(reader->buf, reader->buf + reader->start, reader->end - reader->start);
        reader->end -= reader->start;
        reader->start = 0;
    }
    ssize_t n = read(reader->fd, reader->buf + reader->end, PUB_MAX_LINE_BYTES + 1 - reader->end);
    if (n < 0) {
        return errno == EINTR || errno == EAGAIN ? 0 : -1;
    }
    if (n == 0) {
        reader->is_eof = true;
    }
    reader->end += (size_t)n;
    return 0;
}

/* ---- where events come from ---- */

static int64_t wall_clock_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

struct source {
    const struct options *options;
    /* From flags: count events numbered from next_index. */
    const char *base_id;
    char *numbered_id; /* room for base_id, '-' and a 64-bit number */
    uint64_t next_index;
    uint64_t count;
    bool has_time; /* --time given; otherwise each event gets the time it is built */
    int64_t time_ms;
    /* From stdin, when reader is not NULL. */
    struct line_reader *reader;
    uint64_t local_refusals; /* lines refused here, never sent */
};

enum source_result {
    SOURCE_PAYLOAD,    /* the next message is in the payload */
    SOURCE_NEED_INPUT, /* wait until stdin is readable */
    SOURCE_END,
};

static void pack_event_from_flags(struct source *source, struct payload *payload)
{
    const struct options *options = source->options;
    msgpack_packer pk;
    const char *id = source->base_id;

    if (options->has_repeat) {
        sprintf(source->numbered_id, "%s-%" PRIu64, source->base_id, source->next_index);
        id = source->numbered_id;
    }
    size_t size = 6;
    size += options->previous != NULL;
    size += options->actor != NULL;
    size += options->kind != NULL;
    size += options->tenant != NULL;
    size += options->data != NULL;

    msgpack_packer_init(&pk, payload, payload_write);
    msgpack_pack_map(&pk, size);
    pack_cstr(&pk, "id");
    pack_cstr(&pk, id);
    pack_cstr(&pk, "source");
    pack_cstr(&pk, options->source);
    pack_cstr(&pk, "type");
    pack_cstr(&pk, options->type);
    pack_cstr(&pk, "resource");
    pack_cstr(&pk, options->resource);
    pack_cstr(&pk, "time");
    /* Without --time each event is stamped when it is built, so that --rate runs carry
     * their real publication times. */
    msgpack_pack_int64(&pk, source->has_time ? source->time_ms : wall_clock_ms());
    pack_cstr(&pk, "readers");
    /* "a,b" gives two readers, "" none; empty items are kept so the broker can refuse them. */
    const char *readers = options->readers != NULL ? options->readers : "";
    size_t reader_count = 0;
    if (readers[0] != '\0') {
        reader_count = 1;
        for (const char *c = readers; *c != '\0'; c++) {
            reader_count += *c == ',';
        }
    }
    msgpack_pack_array(&pk, reader_count);
    for (const char *item = readers; reader_count > 0; reader_count--) {
        const char *comma = strchr(item, ',');
        size_t len = comma != NULL ? (size_t)(comma - item) : strlen(item);
        pack_strn(&pk, item, len);
        item += len + 1;
    }
    if (options->previous != NULL) {
        pack_cstr(&pk, "previous");
        pack_cstr(&pk, options->previous);
    }
    if (options->actor != NULL) {
        pack_cstr(&pk, "actor");
        pack_cstr(&pk, options->actor);
    }
    if (options->kind != NULL) {
        pack_cstr(&pk, "kind");
        pack_cstr(&pk, options->kind);
    }
    if (options->tenant != NULL) {
        pack_cstr(&pk, "tenant");
        pack_cstr(&pk, options->tenant);
    }
    if (options->data != NULL) {
        pack_cstr(&pk, "data");
        pack_json(&pk, options->data);
    }
}

static bool is_blank(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r') {
            return false;
        }
    }
    return true;
}

/* Puts the next message into payload (emptied first). Stdin lines that cannot be sent are
 * reported on stderr, counted in local_refusals, and skipped. Returns -1 on a read error. */
static int source_next(struct source *source, struct payload *payload, enum source_result *result)
{
    payload->size = 0;
    if (source->reader == NULL) {
        if (source->next_index > source->count) {
            *result = SOURCE_END;
            return 0;
        }
        pack_event_from_flags(source, payload);
        source->next_index++;
        *result = SOURCE_PAYLOAD;
        return 0;
    }

    for (;;) {
        struct line_reader *reader = source->reader;
        const char *line;
        size_t len;
        json_error_t error;

        switch (line_reader_next(reader, &line, &len)) {
        case LINE_END:
            *result = SOURCE_END;
            return 0;
        case LINE_NEED_INPUT:
            *result = SOURCE_NEED_INPUT;
            return 0;
        case LINE_TOO_LONG:
            fprintf(stderr, "herold-pub: stdin line %lu: longer than %d bytes, not sent\n",
                    reader->line_number, PUB_MAX_LINE_BYTES);
            source->local_refusals++;
            continue;
        case LINE_READY:
            break;
        }
        if (is_blank(line, len)) {
            continue;
        }
        json_t *value = json_loadb(line, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &error);
        if (value == NULL) {
            fprintf(stderr, "herold-pub: stdin line %lu: not valid JSON: %s (column %d)\n",
                    reader->line_number, error.text, error.column);
            source->local_refusals++;
            continue;
        }
        msgpack_packer pk;
        msgpack_packer_init(&pk, payload, payload_write);
        pack_json(&pk, value);
        json_decref(value);
        if (payload->size > PUB_MAX_PAYLOAD_BYTES) {
            fprintf(stderr,
                    "herold-pub: stdin line %lu: %zu bytes of msgpack exceed the ingest "
                    "frame limit of %d bytes, not sent\n",
                    reader->line_number, payload->size, PUB_MAX_PAYLOAD_BYTES);
            source->local_refusals++;
            payload->size = 0;
            continue;
        }
        *result = SOURCE_PAYLOAD;
        return 0;
    }
}

/* ---- the socket ---- */

struct publisher {
    void *socket;
    const char *endpoint;
    bool is_quiet;
    size_t outstanding; /* sent, not yet answered */
    uint64_t sent;
    uint64_t acked;
    uint64_t refused;
    struct timespec first_send;
    struct timespec last_reply;
    struct timespec last_progress; /* the last reply, or the send that ended an idle spell */
    uint64_t rate;                 /* events/s to pace sends at; 0: as fast as acks allow */
};

/* True when the reply map says "ok": true; anything else (a refusal, a reply that is not
 * a map) counts as not acked. */
static bool reply_is_ok(const msgpack_object *reply)
{
    if (reply->type != MSGPACK_OBJECT_MAP) {
        return false;
    }
    for (uint32_t i = 0; i < reply->via.map.size; i++) {
        const msgpack_object_kv *kv = &reply->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 2 &&
            memcmp(kv->key.via.str.ptr, "ok", 2) == 0) {
            return kv->val.type == MSGPACK_OBJECT_BOOLEAN && kv->val.via.boolean;
        }
    }
    return false;
}

static void handle_reply(struct publisher *pub, const char *data, size_t size)
{
    msgpack_unpacked unpacked;
    size_t offset = 0;

    if (pub->outstanding == 0) {
        fprintf(stderr, "herold-pub: ignoring a reply to no event (%zu bytes)\n", size);
        return;
    }
    pub->outstanding--;
    pub->last_reply = cli_monotonic_now();
    pub->last_progress = pub->last_reply;

    msgpack_unpacked_init(&unpacked);
    if (msgpack_unpack_next(&unpacked, data, size, &offset) != MSGPACK_UNPACK_SUCCESS) {
        fprintf(stderr, "herold-pub: a reply is not msgpack (%zu bytes)\n", size);
        pub->refused++;
        msgpack_unpacked_destroy(&unpacked);
        return;
    }
    if (reply_is_ok(&unpacked.data)) {
        pub->acked++;
    } else {
        pub->refused++;
    }
    if (!pub->is_quiet) {
        json_t *json = json_from_msgpack(&unpacked.data);
        char *text = json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY);
        fputs(text, stdout);
        fputc('\n', stdout);
        free(text);
        json_decref(json);
    }
    msgpack_unpacked_destroy(&unpacked);
}

/* Reads every reply waiting on the socket. A message may carry envelope frames before the
 * payload (a proxy in between); the last frame is the reply. Returns -1 on socket errors. */
static int receive_replies(struct publisher *pub)
{
    for (;;) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, pub->socket, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&frame);
            if (errno == EAGAIN || errno == EINTR) {
                break;
            }
            fprintf(stderr, "herold-pub: zmq_msg_recv failed: %s\n", zmq_strerror(errno));
            return -1;
        }
        while (zmq_msg_more(&frame)) {
            zmq_msg_close(&frame);
            zmq_msg_init(&frame);
            /* The rest of a message is already here: a blocking read returns at once. */
            if (zmq_msg_recv(&frame, pub->socket, 0) < 0) {
                zmq_msg_close(&frame);
                fprintf(stderr, "herold-pub: zmq_msg_recv failed: %s\n", zmq_strerror(errno));
                return -1;
            }
        }
        handle_reply(pub, zmq_msg_data(&frame), zmq_msg_size(&frame));
        zmq_msg_close(&frame);
    }
    fflush(stdout);
    return 0;
}

/* Sends payload without blocking. Returns 1 when sent, 0 when the socket's queue is full
 * (try again once it polls writable), -1 on errors. */
static int send_payload(struct publisher *pub, const struct payload *payload)
{
    if (zmq_send(pub->socket, payload->data, payload->size, ZMQ_DONTWAIT) < 0) {
        if (errno == EAGAIN || errno == EINTR) {
            return 0;
        }
        fprintf(stderr, "herold-pub: zmq_send failed: %s\n", zmq_strerror(errno));
        return -1;
    }
    if (pub->sent == 0) {
        pub->first_send = cli_monotonic_now();
    }
    if (pub->outstanding == 0) {
        pub->last_progress = cli_monotonic_now();
    }
    pub->sent++;
    pub->outstanding++;
    return 1;
}

/* Sends everything the source yields, keeping at most PUB_WINDOW events unanswered, and
 * prints the replies. Returns 0 when every event was answered, -1 on a failure (reported). */
static int publish(struct publisher *pub, struct source *source)
{
    struct payload payload = {0};
    bool has_pending = false; /* payload holds a message the socket could not take yet */
    bool is_source_done = false;
    int rc = -1;

    for (;;) {
        bool wants_input = false;
        bool wants_writable = false;

        long pace_ms = -1;
        while (pub->outstanding < PUB_WINDOW) {
            if (!has_pending) {
                enum source_result result;
                if (is_source_done) {
                    break;
                }
                if (pub->rate > 0 && pub->sent > 0) {
                    /* Event n is due n/rate seconds after the first send. */
                    double due = (double)pub->sent / (double)pub->rate;
                    double elapsed = cli_seconds_between(pub->first_send, cli_monotonic_now());
                    if (elapsed < due) {
                        pace_ms = (long)((due - elapsed) * 1000.0) + 1;
                        break;
                    }
                }
                if (source_next(source, &payload, &result) != 0) {
                    fprintf(stderr, "herold-pub: reading stdin failed: %s\n", strerror(errno));
                    goto out;
                }
                if (result == SOURCE_END) {
                    is_source_done = true;
                    break;
                }
                if (result == SOURCE_NEED_INPUT) {
                    wants_input = true;
                    break;
                }
                has_pending = true;
            }
            int sent = send_payload(pub, &payload);
            if (sent < 0) {
                goto out;
            }
            if (sent == 0) {
                wants_writable = true;
                break;
            }
            has_pending = false;
        }
        if (is_source_done && !has_pending && pub->outstanding == 0) {
            rc = 0;
            goto out;
        }

        zmq_pollitem_t items[2] = {
            {.socket = pub->socket, .events = 0},
            {.socket = NULL,
             .fd = source->reader != NULL ? source->reader->fd : -1,
             .events = ZMQ_POLLIN},
        };
        if (pub->outstanding > 0) {
            items[0].events |= ZMQ_POLLIN;
        }
        if (wants_writable) {
            items[0].events |= ZMQ_POLLOUT;
        }
        long timeout_ms = -1;
        if (pub->outstanding > 0 || has_pending) {
            double waited = cli_seconds_between(pub->last_progress, cli_monotonic_now()) * 1000.0;
            timeout_ms = PUB_REPLY_TIMEOUT_MS - (long)waited;
            if (timeout_ms <= 0) {
                fprintf(stderr,
                        "herold-pub: no reply from %s within %d s (%zu events unanswered)\n",
                        pub->endpoint, PUB_REPLY_TIMEOUT_MS / 1000, pub->outstanding);
                goto out;
            }
        }
        if (pace_ms >= 0 && (timeout_ms < 0 || pace_ms < timeout_ms)) {
            timeout_ms = pace_ms;
        }
        if (zmq_poll(items, wants_input ? 2 : 1, timeout_ms) < 0) {
            if (errno == EINTR) {
                continue;
            }
            fprintf(stderr, "herold-pub: zmq_poll failed: %s\n", zmq_strerror(errno));
            goto out;
        }
        if ((items[0].revents & ZMQ_POLLIN) != 0 && receive_replies(pub) != 0) {
            goto out;
        }
        if (wants_input && (items[1].revents & (ZMQ_POLLIN | ZMQ_POLLERR)) != 0 &&
            line_reader_fill(source->reader) != 0) {
            fprintf(stderr, "herold-pub: reading stdin failed: %s\n", strerror(errno));
            goto out;
        }
    }
out:
    free(payload.data);
    return rc;
}

/* ---- command line ---- */

static void usage(FILE *out)
{
    fputs("usage: herold-pub [--ingest ENDPOINT] [--server-key Z85 --key-file FILE]\n"
          "                  [--id ID] [--source S] [--type T]\n"
          "                  [--resource PATH] [--readers r1,r2] [--time MS] [--actor A]\n"
          "                  [--kind K] [--tenant T] [--previous PATH] [--data JSON]\n"
          "                  [--repeat N] [--rate EVENTS_PER_SECOND] [--quiet]\n"
          "\n"
          "With --resource, publishes one event built from the flags (id: a random UUID;\n"
          "source: cli; type: updated; time: now in ms; readers: none), or with --repeat N\n"
          "N copies with the ids ID-1..ID-N and a summary on stderr. Without --resource,\n"
          "sends each JSON line of stdin as a msgpack map, as it is.\n"
          "--rate paces sends (default: as fast as the window of unanswered events allows).\n"
          "Prints each reply as a JSON line (unless --quiet).\n"
          "--ingest defaults to " PUB_DEFAULT_INGEST ".\n"
          "--server-key (herold ingest-key prints it) and --key-file (herold keygen makes\n"
          "one) speak CurveZMQ to a broker started with --ingest-keys.\n"
          "Exit status: 0 all acked, 1 any refused, 2 usage or connection error.\n",
          out);
}

static bool parse_int64(const char *text, int64_t *value)
{
    char *end;
    errno = 0;
    long long parsed = strtoll(text, &end, 10);
    if (text[0] == '\0' || *end != '\0' || errno != 0) {
        return false;
    }
    *value = parsed;
    return true;
}

/* Fills options from argv. Returns 0, 1 after --help, or -1 on a usage error (reported). */
static int parse_options(int argc, char **argv, struct options *options)
{
    enum {
        OPT_INGEST = 256,
        OPT_ID,
        OPT_SOURCE,
        OPT_TYPE,
        OPT_RESOURCE,
        OPT_READERS,
        OPT_TIME,
        OPT_ACTOR,
        OPT_KIND,
        OPT_TENANT,
        OPT_PREVIOUS,
        OPT_DATA,
        OPT_REPEAT,
        OPT_RATE,
        OPT_QUIET,
        OPT_HELP,
        OPT_SERVER_KEY,
        OPT_KEY_FILE,
    };
    static const struct option long_options[] = {
        {"ingest", required_argument, NULL, OPT_INGEST},
        {"id", required_argument, NULL, OPT_ID},
        {"source", required_argument, NULL, OPT_SOURCE},
        {"type", required_argument, NULL, OPT_TYPE},
        {"resource", required_argument, NULL, OPT_RESOURCE},
        {"readers", required_argument, NULL, OPT_READERS},
        {"time", required_argument, NULL, OPT_TIME},
        {"actor", required_argument, NULL, OPT_ACTOR},
        {"kind", required_argument, NULL, OPT_KIND},
        {"tenant", required_argument, NULL, OPT_TENANT},
        {"previous", required_argument, NULL, OPT_PREVIOUS},
        {"data", required_argument, NULL, OPT_DATA},
        {"repeat", required_argument, NULL, OPT_REPEAT},
        {"rate", required_argument, NULL, OPT_RATE},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"help", no_argument, NULL, OPT_HELP},
        {"server-key", required_argument, NULL, OPT_SERVER_KEY},
        {"key-file", required_argument, NULL, OPT_KEY_FILE},
        {NULL, 0, NULL, 0},
    };
    json_error_t error;
    int opt;

    memset(options, 0, sizeof(*options));
    options->ingest = PUB_DEFAULT_INGEST;
    options->source = "cli";
    options->type = "updated";
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        options->has_event_flags |= opt != OPT_INGEST && opt != OPT_RESOURCE && opt != OPT_RATE &&
                                    opt != OPT_QUIET && opt != OPT_HELP && opt != '?' &&
                                    opt != OPT_SERVER_KEY && opt != OPT_KEY_FILE;
        switch (opt) {
        case OPT_INGEST:
            options->ingest = optarg;
            break;
        case OPT_SERVER_KEY:
            options->server_key = optarg;
            break;
        case OPT_KEY_FILE:
            options->key_file = optarg;
            break;
        case OPT_ID:
            options->id = optarg;
            break;
        case OPT_SOURCE:
            options->source = optarg;
            break;
        case OPT_TYPE:
            options->type = optarg;
            break;
        case OPT_RESOURCE:
            options->resource = optarg;
            break;
        case OPT_READERS:
            options->readers = optarg;
            break;
        case OPT_TIME:
            if (!parse_int64(optarg, &options->time_ms)) {
                fprintf(stderr, "herold-pub: --time needs an integer (ms since the epoch)\n");
                return -1;
            }
            options->has_time = true;
            break;
        case OPT_ACTOR:
            options->actor = optarg;
            break;
        case OPT_KIND:
            options->kind = optarg;
            break;
        case OPT_TENANT:
            options->tenant = optarg;
            break;
        case OPT_PREVIOUS:
            options->previous = optarg;
            break;
        case OPT_DATA:
            json_decref(options->data);
            /* Any JSON value is sent, so that a non-object data can be tested. */
            options->data = json_loads(optarg, JSON_DECODE_ANY | JSON_ALLOW_NUL, &error);
            if (options->data == NULL) {
                fprintf(stderr, "herold-pub: --data is not valid JSON: %s (column %d)\n",
                        error.text, error.column);
                return -1;
            }
            break;
        case OPT_REPEAT:
            if (!cli_parse_count(optarg, &options->repeat)) {
                fprintf(stderr, "herold-pub: --repeat needs a count of at least 1\n");
                return -1;
            }
            options->has_repeat = true;
            break;
        case OPT_RATE:
            if (!cli_parse_count(optarg, &options->rate)) {
                fprintf(stderr, "herold-pub: --rate needs events per second, at least 1\n");
                return -1;
            }
            break;
        case OPT_QUIET:
            options->is_quiet = true;
            break;
        case OPT_HELP:
            usage(stdout);
            return 1;
        default:
            fprintf(stderr, "herold-pub: unknown option or missing value: %s\n", argv[optind - 1]);
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "herold-pub: unexpected argument: %s\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    if (options->resource == NULL && options->has_event_flags) {
        fprintf(stderr, "herold-pub: event flags need --resource (without it, events are "
                        "read as JSON lines from stdin)\n");
        return -1;
    }
    return 0;
}

/* A random version 4 UUID in text form. Returns -1 when no random bytes are available. */
static int random_uuid(char text[PUB_UUID_TEXT_BYTES])
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1) {
        return -1;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(text, PUB_UUID_TEXT_BYTES,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return 0;
}

static void *open_socket(void *context, const struct options *options)
{
    const char *endpoint = options->ingest;
    void *socket = zmq_socket(context, ZMQ_DEALER);
    if (socket == NULL) {
        fprintf(stderr, "herold-pub: zmq_socket failed: %s\n", zmq_strerror(errno));
        return NULL;
    }
    if (cli_curve_setup(socket, options->server_key, options->key_file, "herold-pub") != 0) {
        zmq_close(socket);
        return NULL;
    }
    /* Every event is answered before exit, or the run failed: nothing worth lingering for. */
    int linger = 0;
    int hwm = PUB_HWM;
    zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(socket, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(socket, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    if (zmq_connect(socket, endpoint) != 0) {
        fprintf(stderr, "herold-pub: cannot connect to %s: %s\n", endpoint, zmq_strerror(errno));
        zmq_close(socket);
        return NULL;
    }
    return socket;
}

int main(int argc, char **argv)
{
    struct options options;
    struct source source = {0};
    struct line_reader reader;
    char uuid[PUB_UUID_TEXT_BYTES];
    int status = PUB_EXIT_FAILURE;

    json_set_alloc_funcs(xmalloc, free);
    int parsed = parse_options(argc, argv, &options);
    if (parsed != 0) {
        json_decref(options.data);
        return parsed > 0 ? PUB_EXIT_OK : PUB_EXIT_FAILURE;
    }

    source.options = &options;
    if (options.resource != NULL) {
        if (options.id == NULL) {
            if (random_uuid(uuid) != 0) {
                fprintf(stderr, "herold-pub: RAND_bytes failed\n");
                json_decref(options.data);
                return PUB_EXIT_FAILURE;
            }
            options.id = uuid;
        }
        source.base_id = options.id;
        source.numbered_id = xmalloc(strlen(options.id) + 2 + 20 + 1);
        source.next_index = 1;
        source.count = options.has_repeat ? options.repeat : 1;
        source.has_time = options.has_time;
        source.time_ms = options.time_ms;
    } else {
        line_reader_init(&reader, STDIN_FILENO);
        source.reader = &reader;
    }

    void *context = zmq_ctx_new();
    struct publisher pub = {
        .endpoint = options.ingest, .is_quiet = options.is_quiet, .rate = options.rate};
    pub.socket = context != NULL ? open_socket(context, &options) : NULL;
    if (pub.socket != NULL && publish(&pub, &source) == 0) {
        pub.refused += source.local_refusals;
        status = pub.refused > 0 ? PUB_EXIT_REFUSED : PUB_EXIT_OK;
        if (options.has_repeat) {
            double seconds = cli_seconds_between(pub.first_send, pub.last_reply);
            double rate = seconds > 0 ? (double)pub.acked / seconds : 0.0;
            fprintf(stderr, "herold-pub: %" PRIu64 " events acked in %.3f s (%.0f events/s)",
                    pub.acked, seconds, rate);
            if (pub.refused > 0) {
                fprintf(stderr, ", %" PRIu64 " refused", pub.refused);
            }
            fputc('\n', stderr);
        }
    }
    fflush(stdout);

    if (pub.socket != NULL) {
        zmq_close(pub.socket);
    }
    if (context != NULL) {
        zmq_ctx_term(context);
    }
    if (source.reader != NULL) {
        line_reader_clear(&reader);
    }
    free(source.numbered_id);
    json_decref(options.data);
    return status;
}
