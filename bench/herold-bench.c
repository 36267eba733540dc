/*
 * bench/herold-bench: one workload, measured the same way on herold and on the brokers an
 * administration would otherwise pick.
 *
 *   build/bench/herold-bench --target T --scenario FILE [--set key=value]... --pub ADDR
 *                            --sub ADDR [--token-file F] [--out PREFIX] [--label NAME]
 *
 * T is herold, mqtt, mqtt-ws, nats, nats-ws or redis. Publishers speak each system's native
 * TCP protocol (herold: ZeroMQ DEALER to the ingest socket, acked and pipelined; mosquitto:
 * MQTT 3.1.1 QoS 0; nats-server: PUB; Redis: PUBLISH); subscribers connect to --sub over a
 * WebSocket (herold, mqtt-ws, nats-ws) or plain TCP (mqtt, nats, redis), spread over
 * several loopback source addresses.
 *
 * The workload (scenario file, `key = value` lines; see bench/scenarios/):
 *   connections × subs_per_conn subscriptions on folders; each folder is followed by
 *   `followers` subscriptions on different connections, so every event is delivered
 *   exactly `followers` times. Event i goes to folder mix(i) mod folders, as
 *   herold /w1/f<F>/d<N>, MQTT w1/f<F>/d<N>, NATS w1.f<F>.d<N>, Redis channel w1/f<F>/d<N>;
 *   the subscriptions are /w1/f<F>, w1/f<F>/#, w1.f<F>.>, and PSUBSCRIBE w1/f<F>/<star>.
 *   Each event carries `t<i>_<send time in ns>`: in herold's `actor` (copied into every
 *   notification item), at the start of the peers' payloads. Payloads are padded to
 *   event_bytes.
 *
 * Scenario keys (defaults in scenario_defaults): name, connections, subs_per_conn,
 * followers, event_bytes, events, rate (events/s, 0: as fast as acks and sockets allow),
 * seconds (stop publishing after this long, 0: never), window (herold: events in flight),
 * publishers, sources, client_threads, drain_seconds (stop waiting once nothing arrived
 * for this long). Exit status: 0 when the run completed (losses are in the results), 1
 * when the connections could not be set up, 2 for bad options.
 *
 * Every delivery is counted per event (one byte each), so losses and duplicates are exact;
 * publish→receive latency goes into a log-bucket histogram (16 buckets per power of two).
 * Results: PREFIX.json (summary), PREFIX-rate.csv (per second), PREFIX-latency.csv (CDF).
 *
 * Why hand-made protocol framing: one receive thread must take in several hundred thousand
 * messages a second from 100 connections without costing more CPU than the broker it
 * measures. The client libraries (libmosquitto, the NATS C client, hiredis) each run a
 * thread or a blocking reader per connection, and none of them speaks MQTT or NATS over a
 * WebSocket. The few packets used here (MQTT CONNECT/SUBSCRIBE/PUBLISH QoS 0, NATS
 * CONNECT/SUB/PUB/MSG/PING, RESP arrays) are framed directly, and so is the client side of
 * the WebSocket (see the receive threads below); one epoll loop per receive thread carries
 * every connection.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <msgpack.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>
#include <zmq.h>

#include "mem.h"

#define MAX_SECONDS 3600
#define MAX_SETS 64
#define HIST_SUB_BITS 4
#define HIST_BUCKETS (64 << HIST_SUB_BITS)
#define RX_MESSAGE_MAX (8u << 20)
#define PUB_BUFFER_BYTES (64 * 1024)

enum target { T_HEROLD, T_MQTT, T_MQTT_WS, T_NATS, T_NATS_WS, T_REDIS };
static const char *const target_names[] = {"herold", "mqtt", "mqtt-ws", "nats", "nats-ws", "redis"};

struct scenario {
    char name[64];
    long connections;
    long subs_per_conn;
    long followers;
    long event_bytes;
    long events;
    long rate;
    long window;
    long sources;
    long drain_seconds;
    long publishers;
    long client_threads;
    long seconds;  /* stop publishing after this long; 0: when all events are sent */
    long webhooks; /* herold: webhook subscriptions on folders, delivered to herold-bench */
};

struct options {
    enum target target;
    const char *scenario_file;
    const char *sets[MAX_SETS];
    int set_count;
    const char *pub;
    const char *sub;
    const char *token_file;
    const char *out;
    const char *label;
};

struct histogram {
    uint64_t counts[HIST_BUCKETS];
    uint64_t max;
    uint64_t total;
};

struct rxbuf {
    char *data;
    size_t len;
    size_t cap;
};

struct receiver;

enum conn_state { CONN_CONNECTING, CONN_HANDSHAKE, CONN_OPEN, CONN_CLOSED };

struct conn {
    struct receiver *receiver;
    int fd;
    enum conn_state state;
    long index;
    char source[32];
    char *setup; /* bytes to send once connected: the subscriptions */
    size_t setup_len;
    char **setup_msgs; /* herold: one subscribe op per message */
    long setup_msg_count;
    long acks_needed; /* subscriptions still to be confirmed */
    bool is_ready;
    bool wants_out;   /* EPOLLOUT registered: out holds bytes the socket did not take */
    struct rxbuf net; /* bytes read from the socket, not yet parsed */
    struct rxbuf rx;  /* WebSocket: the message (herold) or protocol stream (peers) so far */
    struct rxbuf out; /* bytes to write */
};

struct receiver {
    struct bench *bench;
    int epoll_fd;
    pthread_t thread;
    struct conn *conns;
    long conn_count;
    struct histogram hist;
};

struct bench {
    struct options opt;
    struct scenario sc;
    char token[4096];
    char host[256];
    int port;
    char pub_host[256];
    int pub_port;
    long folders;
    uint8_t *expected; /* per folder: deliveries per event */
    _Atomic uint8_t *got;
    _Atomic uint64_t expected_total; /* grows as events are published */
    _Atomic long publishers_done;
    _Atomic uint64_t delivered;
    _Atomic uint64_t bogus;
    _Atomic uint64_t published;
    _Atomic uint64_t acked;
    _Atomic uint64_t refused;
    _Atomic uint64_t published_per_sec[MAX_SECONDS];
    _Atomic uint64_t delivered_per_sec[MAX_SECONDS];
    _Atomic long ready;
    _Atomic long failed;
    _Atomic bool stop;
    _Atomic uint64_t last_delivery_ns;
    /* Set by the main thread while the receivers already run (a far future during setup,
     * then the start of publishing): they read it for every delivery. */
    _Atomic uint64_t t0_ns;
    char runid[32];
    struct receiver *receivers;
};

static volatile sig_atomic_t interrupted;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fail(const char *fmt, const char *arg)
{
    fprintf(stderr, "herold-bench: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(2);
}

/* ---- histogram ---- */

static unsigned hist_bucket(uint64_t v)
{
    if (v < (1u << HIST_SUB_BITS)) {
        return (unsigned)v;
    }
    unsigned log2 = 63u - (unsigned)__builtin_clzll(v);
    unsigned sub = (unsigned)(v >> (log2 - HIST_SUB_BITS)) & ((1u << HIST_SUB_BITS) - 1);
    return ((log2 - HIST_SUB_BITS + 1) << HIST_SUB_BITS) + sub;
}

/* The upper bound of a bucket: a percentile is never reported lower than it was. */
static uint64_t hist_bucket_high(unsigned b)
{
    if (b < (1u << HIST_SUB_BITS)) {
        return b;
    }
    unsigned log2 = (b >> HIST_SUB_BITS) + HIST_SUB_BITS - 1;
    uint64_t sub = b & ((1u << HIST_SUB_BITS) - 1);
    uint64_t low = ((uint64_t)1 << log2) + (sub << (log2 - HIST_SUB_BITS));
    return low + ((uint64_t)1 << (log2 - HIST_SUB_BITS)) - 1;
}

static void hist_add(struct histogram *h, uint64_t v, uint64_t n)
{
    h->counts[hist_bucket(v)] += n;
    h->total += n;
    if (v > h->max) {
        h->max = v;
    }
}

static uint64_t hist_percentile(const struct histogram *h, double p)
{
    if (h->total == 0) {
        return 0;
    }
    uint64_t rank = (uint64_t)(p * (double)h->total);
    if (rank >= h->total) {
        rank = h->total - 1;
    }
    uint64_t seen = 0;
    for (unsigned b = 0; b < HIST_BUCKETS; b++) {
        seen += h->counts[b];
        if (seen > rank) {
            uint64_t high = hist_bucket_high(b);
            return high < h->max ? high : h->max;
        }
    }
    return h->max;
}

/* ---- the workload ---- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static long event_folder(const struct bench *b, uint64_t i)
{
    return (long)(mix64(i + 1) % (uint64_t)b->folders);
}

static long sub_folder(const struct bench *b, long conn, long k)
{
    return (conn * b->sc.subs_per_conn + k) % b->folders;
}

/* Writes the marker `t<i>_<ns>` and pads with 'x' to want bytes (at least the marker). */
static size_t make_marker(char *buf, size_t cap, uint64_t i, uint64_t ns, size_t want)
{
    int n = snprintf(buf, cap, "t%" PRIu64 "_%" PRIu64 "_", i, ns);
    size_t len = (size_t)n;
    while (len < want && len + 1 < cap) {
        buf[len++] = 'x';
    }
    buf[len] = '\0';
    return len;
}

/* Reads a marker at p (up to end): returns false when it is not one. */
static bool parse_marker(const char *p, const char *end, uint64_t *i, uint64_t *ns)
{
    if (p >= end || *p != 't') {
        return false;
    }
    p++;
    uint64_t v = 0;
    const char *start = p;
    while (p < end && *p >= '0' && *p <= '9') {
        v = v * 10 + (uint64_t)(*p++ - '0');
    }
    if (p == start || p >= end || *p != '_') {
        return false;
    }
    *i = v;
    p++;
    v = 0;
    start = p;
    while (p < end && *p >= '0' && *p <= '9') {
        v = v * 10 + (uint64_t)(*p++ - '0');
    }
    if (p == start) {
        return false;
    }
    *ns = v;
    return true;
}

static void record_delivery(struct receiver *r, uint64_t i, uint64_t sent_ns, uint64_t now)
{
    struct bench *b = r->bench;
    if (i >= (uint64_t)b->sc.events) {
        atomic_fetch_add_explicit(&b->bogus, 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&b->got[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->delivered, 1, memory_order_relaxed);
    hist_add(&r->hist, now > sent_ns ? now - sent_ns : 0, 1);
    uint64_t t0_ns = atomic_load_explicit(&b->t0_ns, memory_order_relaxed);
    uint64_t sec = (now - t0_ns) / 1000000000u;
    if (now > t0_ns && sec < MAX_SECONDS) {
        atomic_fetch_add_explicit(&b->delivered_per_sec[sec], 1, memory_order_relaxed);
    }
    atomic_store_explicit(&b->last_delivery_ns, now, memory_order_relaxed);
}

/* ---- receive-side protocol parsers: each consumes what it can from c->rx ---- */

static void rx_append(struct rxbuf *rx, const void *p, size_t len)
{
    if (rx->len + len > rx->cap) {
        size_t cap = rx->cap == 0 ? 65536 : rx->cap;
        while (cap < rx->len + len) {
            cap *= 2;
        }
        rx->data = xrealloc(rx->data, cap);
        rx->cap = cap;
    }
    memcpy(rx->data + rx->len, p, len);
    rx->len += len;
}

static void rx_consume(struct rxbuf *rx, size_t n)
{
    memmove(rx->data, rx->data + n, rx->len - n);
    rx->len -= n;
}

static bool target_is_ws(enum target t)
{
    return t == T_HEROLD || t == T_MQTT_WS || t == T_NATS_WS;
}

static void conn_send(struct conn *c, const void *p, size_t len, int opcode);

static void conn_ready(struct conn *c)
{
    if (!c->is_ready) {
        c->is_ready = true;
        atomic_fetch_add(&c->receiver->bench->ready, 1);
    }
}

static void conn_failed(struct conn *c, const char *why)
{
    fprintf(stderr, "herold-bench: connection %ld: %s\n", c->index, why);
    atomic_fetch_add(&c->receiver->bench->failed, 1);
}

/* herold: one complete WebSocket message. */
static void herold_message(struct conn *c, const char *msg, size_t len, uint64_t now)
{
    const char *end = msg + len;
    if (len > 14 && memcmp(msg, "{\"op\":\"notify\"", 14) == 0) {
        static const char key[] = "\"actor\":\"";
        const char *p = msg;
        while ((p = memmem(p, (size_t)(end - p), key, sizeof(key) - 1)) != NULL) {
            p += sizeof(key) - 1;
            uint64_t i;
            uint64_t ns;
            if (parse_marker(p, end, &i, &ns)) {
                record_delivery(c->receiver, i, ns, now);
            }
        }
        return;
    }
    if (memmem(msg, len, "\"op\":\"subscribed\"", 17) != NULL) {
        if (--c->acks_needed == 0) {
            conn_ready(c);
        }
        return;
    }
    fprintf(stderr, "herold-bench: connection %ld: %.*s\n", c->index, (int)(len < 300 ? len : 300),
            msg);
    if (memmem(msg, len, "\"op\":\"error\"", 12) != NULL && !c->is_ready) {
        conn_failed(c, "a subscription was refused");
    }
}

static bool mqtt_remaining_length(const unsigned char *p, size_t avail, size_t *value, size_t *used)
{
    size_t v = 0;
    for (size_t k = 0; k < 4; k++) {
        if (k >= avail) {
            return false;
        }
        v |= (size_t)(p[k] & 0x7f) << (7 * k);
        if ((p[k] & 0x80) == 0) {
            *value = v;
            *used = k + 1;
            return true;
        }
    }
    *used = 0; /* malformed: more than four bytes */
    return false;
}

static void mqtt_parse(struct conn *c, struct rxbuf *rx, uint64_t now)
{
    size_t off = 0;
    while (rx->len - off >= 2) {
        const unsigned char *p = (const unsigned char *)rx->data + off;
        size_t remaining;
        size_t used;
        if (!mqtt_remaining_length(p + 1, rx->len - off - 1, &remaining, &used)) {
            break;
        }
        size_t total = 1 + used + remaining;
        if (rx->len - off < total) {
            break;
        }
        const unsigned char *body = p + 1 + used;
        switch (p[0] >> 4) {
        case 3: { /* PUBLISH, QoS 0: topic length, topic, payload */
            size_t topic_len = remaining >= 2 ? (size_t)(body[0] << 8 | body[1]) : remaining;
            if (2 + topic_len <= remaining) {
                const char *payload = (const char *)body + 2 + topic_len;
                uint64_t i;
                uint64_t ns;
                if (parse_marker(payload, (const char *)body + remaining, &i, &ns)) {
                    record_delivery(c->receiver, i, ns, now);
                }
            }
            break;
        }
        case 2: /* CONNACK */
            if (remaining >= 2 && body[1] != 0) {
                conn_failed(c, "CONNACK refused");
            }
            break;
        case 9: /* SUBACK: one return code per topic */
            for (size_t k = 2; k < remaining; k++) {
                if (body[k] == 0x80) {
                    conn_failed(c, "SUBACK refused a topic");
                }
                if (--c->acks_needed == 0) {
                    conn_ready(c);
                }
            }
            break;
        default:
            break;
        }
        off += total;
    }
    rx_consume(rx, off);
}

static void nats_parse(struct conn *c, struct rxbuf *rx, uint64_t now)
{
    size_t off = 0;
    for (;;) {
        char *line = rx->data + off;
        char *eol = memmem(line, rx->len - off, "\r\n", 2);
        if (eol == NULL) {
            break;
        }
        size_t line_len = (size_t)(eol - line);
        if (line_len >= 4 && memcmp(line, "MSG ", 4) == 0) {
            /* MSG <subject> <sid> [reply-to] <#bytes> */
            char *last = eol;
            while (last > line && last[-1] != ' ') {
                last--;
            }
            size_t bytes = strtoul(last, NULL, 10);
            size_t total = line_len + 2 + bytes + 2;
            if (rx->len - off < total) {
                break;
            }
            const char *payload = eol + 2;
            uint64_t i;
            uint64_t ns;
            if (parse_marker(payload, payload + bytes, &i, &ns)) {
                record_delivery(c->receiver, i, ns, now);
            }
            off += total;
            continue;
        }
        if (line_len == 4 && memcmp(line, "PING", 4) == 0) {
            conn_send(c, "PONG\r\n", 6, 0x2);
        } else if (line_len == 4 && memcmp(line, "PONG", 4) == 0) {
            conn_ready(c); /* the PING after the SUBs: all of them are in place */
        } else if (line_len >= 4 && memcmp(line, "-ERR", 4) == 0) {
            fprintf(stderr, "herold-bench: connection %ld: %.*s\n", c->index, (int)line_len, line);
            if (!c->is_ready) {
                conn_failed(c, "nats refused the setup");
            }
        }
        off += line_len + 2;
    }
    rx_consume(rx, off);
}

/* RESP: reads `$<n>\r\n<bytes>\r\n` or `:<n>\r\n` at p. Returns the bytes used, 0 if
 * incomplete. */
static size_t resp_element(const char *p, const char *end, const char **value, size_t *len)
{
    const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
    if (eol == NULL) {
        return 0;
    }
    if (*p == ':') {
        *value = p + 1;
        *len = (size_t)(eol - p - 1);
        return (size_t)(eol + 2 - p);
    }
    size_t n = strtoul(p + 1, NULL, 10);
    if ((size_t)(end - (eol + 2)) < n + 2) {
        return 0;
    }
    *value = eol + 2;
    *len = n;
    return (size_t)(eol + 2 - p) + n + 2;
}

static void redis_parse(struct conn *c, struct rxbuf *rx, uint64_t now)
{
    size_t off = 0;
    const char *end = rx->data + rx->len;
    for (;;) {
        const char *p = rx->data + off;
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (eol == NULL) {
            break;
        }
        if (*p != '*') {
            fprintf(stderr, "herold-bench: connection %ld: redis said %.*s\n", c->index,
                    (int)(eol - p), p);
            conn_failed(c, "unexpected redis reply");
            off = rx->len;
            break;
        }
        long n = strtol(p + 1, NULL, 10);
        const char *q = eol + 2;
        const char *first = NULL;
        size_t first_len = 0;
        const char *lastv = NULL;
        size_t last_len = 0;
        bool complete = true;
        for (long k = 0; k < n; k++) {
            const char *v;
            size_t vlen;
            size_t used = resp_element(q, end, &v, &vlen);
            if (used == 0) {
                complete = false;
                break;
            }
            if (k == 0) {
                first = v;
                first_len = vlen;
            }
            lastv = v;
            last_len = vlen;
            q += used;
        }
        if (!complete) {
            break;
        }
        if (first_len == 8 && memcmp(first, "pmessage", 8) == 0) {
            uint64_t i;
            uint64_t ns;
            if (parse_marker(lastv, lastv + last_len, &i, &ns)) {
                record_delivery(c->receiver, i, ns, now);
            }
        } else if (first_len == 10 && memcmp(first, "psubscribe", 10) == 0) {
            if (--c->acks_needed == 0) {
                conn_ready(c);
            }
        }
        off = (size_t)(q - rx->data);
    }
    rx_consume(rx, off);
}

/* ---- connection setup: what each subscriber sends ---- */

static void buf_put(char **buf, size_t *len, size_t *cap, const void *p, size_t n)
{
    if (*len + n > *cap) {
        *cap = (*len + n) * 2 + 256;
        *buf = xrealloc(*buf, *cap);
    }
    memcpy(*buf + *len, p, n);
    *len += n;
}

static size_t mqtt_put_length(unsigned char *out, size_t v)
{
    size_t n = 0;
    do {
        unsigned char byte = v & 0x7f;
        v >>= 7;
        out[n++] = byte | (v > 0 ? 0x80 : 0);
    } while (v > 0);
    return n;
}

static void mqtt_connect_packet(char **buf, size_t *len, size_t *cap, const char *client_id)
{
    unsigned char body[128];
    size_t id_len = strlen(client_id);
    size_t n = 0;
    static const unsigned char head[] = {0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0};
    memcpy(body, head, sizeof(head)); /* level 4 (3.1.1), clean session, no keepalive */
    n = sizeof(head);
    body[n++] = (unsigned char)(id_len >> 8);
    body[n++] = (unsigned char)id_len;
    memcpy(body + n, client_id, id_len);
    n += id_len;
    unsigned char fixed[5] = {0x10};
    size_t fixed_len = 1 + mqtt_put_length(fixed + 1, n);
    buf_put(buf, len, cap, fixed, fixed_len);
    buf_put(buf, len, cap, body, n);
}

static void conn_build_setup(struct bench *b, struct conn *c)
{
    char *buf = NULL;
    size_t len = 0;
    size_t cap = 0;
    char topic[128];
    long subs = b->sc.subs_per_conn;
    c->acks_needed = subs;
    switch (b->opt.target) {
    case T_HEROLD:
        c->setup_msgs = xcalloc((size_t)subs, sizeof(char *));
        for (long k = 0; k < subs; k++) {
            char op[256];
            snprintf(op, sizeof(op),
                     "{\"op\":\"subscribe\",\"ref\":\"s%ld\",\"resource\":\"/w1/f%ld\"}", k,
                     sub_folder(b, c->index, k));
            c->setup_msgs[k] = xstrdup(op);
        }
        c->setup_msg_count = subs;
        return;
    case T_MQTT:
    case T_MQTT_WS: {
        char client_id[64];
        snprintf(client_id, sizeof(client_id), "hb-%s-%ld", b->runid, c->index);
        mqtt_connect_packet(&buf, &len, &cap, client_id);
        char *body = NULL;
        size_t body_len = 0;
        size_t body_cap = 0;
        unsigned char packet_id[2] = {0, 1};
        buf_put(&body, &body_len, &body_cap, packet_id, 2);
        for (long k = 0; k < subs; k++) {
            int n = snprintf(topic, sizeof(topic), "w1/f%ld/#", sub_folder(b, c->index, k));
            unsigned char tl[2] = {(unsigned char)(n >> 8), (unsigned char)n};
            buf_put(&body, &body_len, &body_cap, tl, 2);
            buf_put(&body, &body_len, &body_cap, topic, (size_t)n);
            unsigned char qos = 0;
            buf_put(&body, &body_len, &body_cap, &qos, 1);
        }
        unsigned char fixed[5] = {0x82};
        size_t fixed_len = 1 + mqtt_put_length(fixed + 1, body_len);
        buf_put(&buf, &len, &cap, fixed, fixed_len);
        buf_put(&buf, &len, &cap, body, body_len);
        free(body);
        break;
    }
    case T_NATS:
    case T_NATS_WS: {
        const char *connect = "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\n";
        buf_put(&buf, &len, &cap, connect, strlen(connect));
        for (long k = 0; k < subs; k++) {
            int n = snprintf(topic, sizeof(topic), "SUB w1.f%ld.> %ld\r\n",
                             sub_folder(b, c->index, k), k + 1);
            buf_put(&buf, &len, &cap, topic, (size_t)n);
        }
        buf_put(&buf, &len, &cap, "PING\r\n", 6);
        c->acks_needed = 1;
        break;
    }
    case T_REDIS: {
        int n = snprintf(topic, sizeof(topic), "*%ld\r\n$10\r\nPSUBSCRIBE\r\n", subs + 1);
        buf_put(&buf, &len, &cap, topic, (size_t)n);
        for (long k = 0; k < subs; k++) {
            char pattern[64];
            int pn = snprintf(pattern, sizeof(pattern), "w1/f%ld/*", sub_folder(b, c->index, k));
            n = snprintf(topic, sizeof(topic), "$%d\r\n%s\r\n", pn, pattern);
            buf_put(&buf, &len, &cap, topic, (size_t)n);
        }
        break;
    }
    }
    c->setup = buf;
    c->setup_len = len;
}

/* ---- the receive threads: one epoll loop each over its subscriber connections ----
 *
 * The WebSocket client side is framed here: libwebsockets' client parses received frames
 * a byte at a time, which cost 40 % of this program's core at 60k notifications/s (perf,
 * W1), more than the broker's own delivery path. Server frames are unmasked, so a
 * complete frame is handled in place; client frames are masked as RFC 6455 requires. */

static void conn_close(struct conn *c, const char *why)
{
    if (c->state == CONN_CLOSED) {
        return;
    }
    if (why != NULL && !atomic_load(&c->receiver->bench->stop)) {
        conn_failed(c, why);
    }
    epoll_ctl(c->receiver->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = CONN_CLOSED;
}

static void conn_flush(struct conn *c)
{
    size_t off = 0;
    while (off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + off, c->out.len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        }
        conn_close(c, "send failed");
        return;
    }
    rx_consume(&c->out, off);
    bool wants_out = c->out.len > 0;
    if (wants_out != c->wants_out) {
        struct epoll_event ev = {.events = EPOLLIN | (wants_out ? EPOLLOUT : 0u), .data.ptr = c};
        epoll_ctl(c->receiver->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
        c->wants_out = wants_out;
    }
}

/* Queues p: as one masked WebSocket frame with opcode (0x1 text, 0x2 binary, 0xA pong)
 * on a WebSocket, as it is on plain TCP. */
static void conn_send(struct conn *c, const void *p, size_t len, int opcode)
{
    if (!target_is_ws(c->receiver->bench->opt.target)) {
        rx_append(&c->out, p, len);
        conn_flush(c);
        return;
    }
    unsigned char head[14];
    size_t head_len = 0;
    head[head_len++] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        head[head_len++] = (unsigned char)(0x80 | len);
    } else if (len < 65536) {
        head[head_len++] = 0x80 | 126;
        head[head_len++] = (unsigned char)(len >> 8);
        head[head_len++] = (unsigned char)len;
    } else {
        head[head_len++] = 0x80 | 127;
        for (int k = 7; k >= 0; k--) {
            head[head_len++] = (unsigned char)((uint64_t)len >> (8 * k));
        }
    }
    uint32_t key = (uint32_t)mix64(now_ns() ^ (uint64_t)c->index);
    unsigned char mask[4] = {(unsigned char)key, (unsigned char)(key >> 8),
                             (unsigned char)(key >> 16), (unsigned char)(key >> 24)};
    memcpy(head + head_len, mask, 4);
    head_len += 4;
    rx_append(&c->out, head, head_len);
    size_t start = c->out.len;
    rx_append(&c->out, p, len);
    unsigned char *body = (unsigned char *)c->out.data + start;
    for (size_t k = 0; k < len; k++) {
        body[k] ^= mask[k & 3];
    }
    conn_flush(c);
}

static void conn_send_setup(struct conn *c)
{
    struct bench *b = c->receiver->bench;
    if (b->opt.target == T_HEROLD) {
        for (long k = 0; k < c->setup_msg_count; k++) {
            conn_send(c, c->setup_msgs[k], strlen(c->setup_msgs[k]), 0x1);
        }
    } else {
        conn_send(c, c->setup, c->setup_len, 0x2);
    }
}

static void conn_send_upgrade(struct conn *c)
{
    struct bench *b = c->receiver->bench;
    char request[4600];
    int n = snprintf(request, sizeof(request),
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s%s%s%s",
                     b->opt.target == T_HEROLD ? "/v1.0/ws" : "/", b->host, b->port,
                     b->opt.target == T_MQTT_WS ? "Sec-WebSocket-Protocol: mqtt\r\n" : "",
                     b->opt.target == T_HEROLD ? "Authorization: Bearer " : "",
                     b->opt.target == T_HEROLD ? b->token : "",
                     b->opt.target == T_HEROLD ? "\r\n\r\n" : "\r\n");
    rx_append(&c->out, request, (size_t)n);
    conn_flush(c);
}

/* A whole WebSocket message, or for the peers one more piece of their byte stream. */
static void conn_payload(struct conn *c, const char *p, size_t len, bool is_final, uint64_t now)
{
    struct bench *b = c->receiver->bench;
    if (b->opt.target == T_HEROLD) {
        if (is_final && c->rx.len == 0) {
            herold_message(c, p, len, now);
            return;
        }
        rx_append(&c->rx, p, len);
        if (is_final) {
            herold_message(c, c->rx.data, c->rx.len, now);
            c->rx.len = 0;
        } else if (c->rx.len > RX_MESSAGE_MAX) {
            conn_close(c, "a message exceeds 8 MiB");
        }
        return;
    }
    rx_append(&c->rx, p, len);
    if (b->opt.target == T_MQTT_WS) {
        mqtt_parse(c, &c->rx, now);
    } else {
        nats_parse(c, &c->rx, now);
    }
}

/* Handles every complete frame in c->net. */
static void conn_ws_frames(struct conn *c, uint64_t now)
{
    struct rxbuf *net = &c->net;
    size_t off = 0;
    while (c->state == CONN_OPEN && net->len - off >= 2) {
        const unsigned char *h = (const unsigned char *)net->data + off;
        size_t avail = net->len - off;
        int opcode = h[0] & 0x0f;
        bool is_final = (h[0] & 0x80) != 0;
        bool is_masked = (h[1] & 0x80) != 0;
        uint64_t len = h[1] & 0x7f;
        size_t head = 2;
        if (len == 126) {
            if (avail < 4) {
                break;
            }
            len = (uint64_t)h[2] << 8 | h[3];
            head = 4;
        } else if (len == 127) {
            if (avail < 10) {
                break;
            }
            len = 0;
            for (int k = 0; k < 8; k++) {
                len = len << 8 | h[2 + k];
            }
            head = 10;
        }
        if (is_masked || len > RX_MESSAGE_MAX) {
            conn_close(c, "bad frame from the server");
            return;
        }
        if (avail < head + len) {
            break;
        }
        const char *payload = (const char *)h + head;
        switch (opcode) {
        case 0x0:
        case 0x1:
        case 0x2:
            conn_payload(c, payload, (size_t)len, is_final, now);
            break;
        case 0x8:
            conn_close(c, "closed by the server");
            return;
        case 0x9:
            conn_send(c, payload, (size_t)len, 0xA);
            break;
        default:
            break;
        }
        off += head + (size_t)len;
    }
    rx_consume(net, off);
}

static void conn_input(struct conn *c, uint64_t now)
{
    struct bench *b = c->receiver->bench;
    if (c->state == CONN_HANDSHAKE) {
        char *end = memmem(c->net.data, c->net.len, "\r\n\r\n", 4);
        if (end == NULL) {
            return;
        }
        if (c->net.len < 13 || memcmp(c->net.data + 8, " 101", 4) != 0) {
            fprintf(stderr, "herold-bench: connection %ld: %.*s\n", c->index,
                    (int)(end - c->net.data), c->net.data);
            conn_close(c, "the upgrade was refused");
            return;
        }
        rx_consume(&c->net, (size_t)(end + 4 - c->net.data));
        c->state = CONN_OPEN;
        conn_send_setup(c);
    }
    if (c->state != CONN_OPEN) {
        return;
    }
    switch (b->opt.target) {
    case T_HEROLD:
    case T_MQTT_WS:
    case T_NATS_WS:
        conn_ws_frames(c, now);
        break;
    case T_MQTT:
        mqtt_parse(c, &c->net, now);
        break;
    case T_NATS:
        nats_parse(c, &c->net, now);
        break;
    case T_REDIS:
        redis_parse(c, &c->net, now);
        break;
    }
}

static void conn_readable(struct conn *c)
{
    for (;;) {
        if (c->net.cap - c->net.len < 65536) {
            size_t cap = c->net.cap == 0 ? 262144 : c->net.cap * 2;
            c->net.data = xrealloc(c->net.data, cap);
            c->net.cap = cap;
        }
        size_t room = c->net.cap - c->net.len;
        ssize_t n = recv(c->fd, c->net.data + c->net.len, room, 0);
        if (n > 0) {
            c->net.len += (size_t)n;
            conn_input(c, now_ns());
            if (c->state == CONN_CLOSED || (size_t)n < room) {
                /* A short read took what there was: the socket is level-triggered, so
                 * epoll reports it again when more arrives, and a recv only to hear
                 * EAGAIN (half of all calls before) is saved. */
                return;
            }
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        conn_close(c, n == 0 ? "closed by the server" : "recv failed");
        return;
    }
}

static void conn_start(struct receiver *r, struct conn *c)
{
    struct bench *b = r->bench;
    struct sockaddr_in source = {.sin_family = AF_INET};
    struct sockaddr_in target = {.sin_family = AF_INET, .sin_port = htons((uint16_t)b->port)};
    if (inet_pton(AF_INET, c->source, &source.sin_addr) != 1 ||
        inet_pton(AF_INET, b->host, &target.sin_addr) != 1) {
        fail("--sub needs an IPv4 address: %s", b->host);
    }
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (c->fd < 0 || bind(c->fd, (struct sockaddr *)&source, sizeof(source)) != 0) {
        fail("cannot bind a subscriber socket: %s", strerror(errno));
    }
    if (connect(c->fd, (struct sockaddr *)&target, sizeof(target)) != 0 && errno != EINPROGRESS) {
        fail("cannot connect a subscriber: %s", strerror(errno));
    }
    c->state = CONN_CONNECTING;
    c->wants_out = true;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(r->epoll_fd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void conn_writable(struct conn *c)
{
    if (c->state == CONN_CONNECTING) {
        int err = 0;
        socklen_t err_len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &err_len);
        if (err != 0) {
            conn_close(c, strerror(err));
            return;
        }
        if (target_is_ws(c->receiver->bench->opt.target)) {
            c->state = CONN_HANDSHAKE;
            conn_send_upgrade(c);
        } else {
            c->state = CONN_OPEN;
            conn_send_setup(c);
        }
        conn_flush(c);
        return;
    }
    conn_flush(c);
}

static void *receiver_main(void *arg)
{
    struct receiver *r = arg;
    struct bench *b = r->bench;
    struct epoll_event events[256];
    for (long k = 0; k < r->conn_count; k++) {
        conn_start(r, &r->conns[k]);
    }
    while (!atomic_load(&b->stop)) {
        int n = epoll_wait(r->epoll_fd, events, 256, 50);
        for (int k = 0; k < n; k++) {
            struct conn *c = events[k].data.ptr;
            if (c->state == CONN_CLOSED) {
                continue;
            }
            if (events[k].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
                conn_writable(c);
            }
            if (c->state != CONN_CLOSED && (events[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                conn_readable(c);
            }
        }
    }
    for (long k = 0; k < r->conn_count; k++) {
        if (r->conns[k].state != CONN_CLOSED) {
            close(r->conns[k].fd);
            r->conns[k].state = CONN_CLOSED;
        }
    }
    return NULL;
}

/* ---- webhook receivers (herold only) ----
 *
 * One thread serves HTTP/1.1 on a loopback port: it answers herold's validation request
 * with the decoded token, and counts the items of every delivery as the WebSocket
 * receivers do (their `actor` carries the marker), answering 202. Subscriptions are made
 * through the Graph REST API before publishing starts; each adds one follower to its
 * folder, so the expected counts stay exact. The broker needs --webhook-allow-private to
 * deliver to loopback. */

struct hook_conn {
    int fd;
    size_t slot; /* in hooks.conns */
    struct rxbuf in;
};

struct hooks {
    struct receiver receiver; /* its bench and histogram; no connections */
    int epoll_fd;
    int listen_fd;
    int port;
    pthread_t thread;
    struct hook_conn **conns; /* open connections, closed and freed at the end */
    size_t conn_count;
    size_t conn_capacity;
};

static void hook_send(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct pollfd pfd = {fd, POLLOUT, 0};
            poll(&pfd, 1, 100);
        } else {
            return; /* herold went away; its retries are its business */
        }
    }
}

static int hex_value(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* The decoded value of validationToken in target (form encoding); NULL when absent. */
static char *validation_token(const char *target, size_t len)
{
    const char *key = memmem(target, len, "validationToken=", 16);
    if (key == NULL) {
        return NULL;
    }
    const char *p = key + 16;
    const char *end = target + len;
    char *out = xmalloc((size_t)(end - p) + 1);
    size_t n = 0;
    while (p < end && *p != '&' && *p != ' ') {
        if (*p == '%' && end - p >= 3 && hex_value(p[1]) >= 0 && hex_value(p[2]) >= 0) {
            out[n++] = (char)(hex_value(p[1]) * 16 + hex_value(p[2]));
            p += 3;
        } else {
            out[n++] = *p == '+' ? ' ' : *p;
            p++;
        }
    }
    out[n] = '\0';
    return out;
}

/* Handles every complete request in c->in; returns false when the connection is unusable. */
static bool hook_requests(struct hooks *h, struct hook_conn *c)
{
    size_t off = 0;
    for (;;) {
        char *head = c->in.data + off;
        size_t avail = c->in.len - off;
        char *head_end = memmem(head, avail, "\r\n\r\n", 4);
        if (head_end == NULL) {
            break;
        }
        size_t head_len = (size_t)(head_end + 4 - head);
        size_t body_len = 0;
        for (char *line = memmem(head, head_len, "\r\n", 2); line != NULL && line < head_end;
             line = memmem(line + 2, (size_t)(head_end - line), "\r\n", 2)) {
            if (strncasecmp(line + 2, "content-length:", 15) == 0) {
                body_len = strtoul(line + 17, NULL, 10);
            }
        }
        if (avail < head_len + body_len) {
            break;
        }
        char *line_end = memmem(head, head_len, "\r\n", 2);
        char *token = validation_token(head, (size_t)(line_end - head));
        if (token != NULL) {
            char response[1024];
            int n = snprintf(response, sizeof(response),
                             "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             "Content-Length: %zu\r\n\r\n%s",
                             strlen(token), token);
            free(token);
            if (n < 0 || (size_t)n >= sizeof(response)) {
                return false;
            }
            hook_send(c->fd, response, (size_t)n);
        } else {
            const char *body = head + head_len;
            const char *end = body + body_len;
            uint64_t now = now_ns();
            static const char key[] = "\"actor\":\"";
            for (const char *p = body; (p = memmem(p, (size_t)(end - p), key, sizeof(key) - 1));) {
                p += sizeof(key) - 1;
                uint64_t i;
                uint64_t ns;
                if (parse_marker(p, end, &i, &ns)) {
                    record_delivery(&h->receiver, i, ns, now);
                }
            }
            static const char accepted[] = "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n";
            hook_send(c->fd, accepted, sizeof(accepted) - 1);
        }
        off += head_len + body_len;
    }
    rx_consume(&c->in, off);
    return true;
}

static void hook_close(struct hooks *h, struct hook_conn *c)
{
    epoll_ctl(h->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    h->conns[c->slot] = h->conns[--h->conn_count];
    h->conns[c->slot]->slot = c->slot;
    free(c->in.data);
    free(c);
}

static void *hooks_main(void *arg)
{
    struct hooks *h = arg;
    struct epoll_event events[64];
    while (!atomic_load(&h->receiver.bench->stop)) {
        int n = epoll_wait(h->epoll_fd, events, 64, 50);
        for (int k = 0; k < n; k++) {
            struct hook_conn *c = events[k].data.ptr;
            if (c == NULL) {
                int fd = accept4(h->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd >= 0) {
                    c = xcalloc(1, sizeof(*c));
                    c->fd = fd;
                    if (h->conn_count == h->conn_capacity) {
                        h->conn_capacity = h->conn_capacity == 0 ? 16 : h->conn_capacity * 2;
                        h->conns = xrealloc(h->conns, h->conn_capacity * sizeof(*h->conns));
                    }
                    c->slot = h->conn_count;
                    h->conns[h->conn_count++] = c;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(h->epoll_fd, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            char buf[65536];
            ssize_t r;
            while ((r = recv(c->fd, buf, sizeof(buf), 0)) > 0) {
                rx_append(&c->in, buf, (size_t)r);
            }
            bool is_gone = r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR);
            if (!hook_requests(h, c) || is_gone) {
                hook_close(h, c);
            }
        }
    }
    while (h->conn_count > 0) {
        hook_close(h, h->conns[h->conn_count - 1]);
    }
    free(h->conns);
    return NULL;
}

static void hooks_start(struct bench *b, struct hooks *h)
{
    memset(h, 0, sizeof(*h));
    h->receiver.bench = b;
    h->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sa_len = sizeof(sa);
    if (h->listen_fd < 0 || bind(h->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(h->listen_fd, 128) != 0 ||
        getsockname(h->listen_fd, (struct sockaddr *)&sa, &sa_len) != 0) {
        fail("cannot listen for webhooks: %s", strerror(errno));
    }
    h->port = ntohs(sa.sin_port);
    h->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(h->epoll_fd, EPOLL_CTL_ADD, h->listen_fd, &ev);
    pthread_create(&h->thread, NULL, hooks_main, h);
}

static size_t curl_collect(char *p, size_t size, size_t count, void *ctx)
{
    rx_append(ctx, p, size * count);
    return size * count;
}

/* Makes the scenario's webhook subscriptions through the REST API; each adds a follower
 * to its folder. Returns false (after saying why) when one is refused. */
static bool hooks_subscribe(struct bench *b, struct hooks *h)
{
    CURL *curl = curl_easy_init();
    char url[512];
    char auth[4200];
    char expiration[32];
    time_t t = time(NULL) + 3600;
    strftime(expiration, sizeof(expiration), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    snprintf(url, sizeof(url), "http://%s:%d/v1.0/subscriptions", b->host, b->port);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", b->token);
    struct curl_slist *headers = curl_slist_append(NULL, auth);
    headers = curl_slist_append(headers, "Content-Type: application/json");
    bool ok = curl != NULL;
    for (long k = 0; ok && k < b->sc.webhooks; k++) {
        long folder = k % b->folders;
        char body[512];
        snprintf(body, sizeof(body),
                 "{\"changeType\":\"created,updated,deleted\",\"notificationUrl\":"
                 "\"http://127.0.0.1:%d/hook/%ld\",\"resource\":\"/w1/f%ld\","
                 "\"expirationDateTime\":\"%s\"}",
                 h->port, k, folder, expiration);
        struct rxbuf answer = {0};
        curl_easy_setopt(curl, CURLOPT_URL, url);
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, curl_collect);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
        long status = 0;
        CURLcode rc = curl_easy_perform(curl);
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        if (rc != CURLE_OK || status != 201) {
            fprintf(stderr, "herold-bench: webhook subscription %ld refused: %s %ld %.*s\n", k,
                    curl_easy_strerror(rc), status, (int)(answer.len < 400 ? answer.len : 400),
                    answer.data != NULL ? answer.data : "");
            ok = false;
        } else if (b->expected[folder] < 255) {
            b->expected[folder]++;
        }
        free(answer.data);
    }
    curl_slist_free_all(headers);
    if (curl != NULL) {
        curl_easy_cleanup(curl);
    }
    return ok;
}

/* ---- publishers ---- */

struct publisher {
    struct bench *b;
    long index;
    pthread_t thread;
    uint64_t sent; /* this publisher sent its events i = index + k * P for k < sent */
};

static void count_published(struct bench *b, uint64_t i, uint64_t now)
{
    atomic_fetch_add_explicit(&b->expected_total, b->expected[event_folder(b, i)],
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&b->published, 1, memory_order_relaxed);
    uint64_t sec = (now - b->t0_ns) / 1000000000u;
    if (sec < MAX_SECONDS) {
        atomic_fetch_add_explicit(&b->published_per_sec[sec], 1, memory_order_relaxed);
    }
}

/* Events this publisher sends: i = index, index + P, index + 2P, ... */
static uint64_t pub_share(const struct bench *b, long index)
{
    uint64_t n = (uint64_t)b->sc.events;
    uint64_t p = (uint64_t)b->sc.publishers;
    return n / p + ((uint64_t)index < n % p ? 1 : 0);
}

/* Whether the scenario's publishing time is over. */
static bool pub_time_is_up(const struct bench *b, uint64_t now)
{
    return b->sc.seconds > 0 && now - b->t0_ns >= (uint64_t)b->sc.seconds * 1000000000u;
}

/* With a fixed rate, how many of this publisher's events are due by now. */
static uint64_t pub_due(const struct bench *b, uint64_t now)
{
    if (b->sc.rate <= 0) {
        return UINT64_MAX;
    }
    double per_publisher = (double)b->sc.rate / (double)b->sc.publishers;
    return (uint64_t)((double)(now - b->t0_ns) / 1e9 * per_publisher) + 1;
}

static void sleep_until_due(const struct bench *b, uint64_t sent)
{
    double per_publisher = (double)b->sc.rate / (double)b->sc.publishers;
    uint64_t due_ns = b->t0_ns + (uint64_t)((double)sent / per_publisher * 1e9);
    uint64_t now = now_ns();
    if (due_ns > now) {
        struct timespec ts = {(time_t)((due_ns - now) / 1000000000u),
                              (long)((due_ns - now) % 1000000000u)};
        nanosleep(&ts, NULL);
    }
}

static void herold_pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void herold_encode(struct bench *b, msgpack_sbuffer *sb, uint64_t i, uint64_t ns, size_t pad)
{
    msgpack_packer pk;
    char text[1200];
    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 8);
    herold_pack_str(&pk, "id", 2);
    int n = snprintf(text, sizeof(text), "%s-%" PRIu64, b->runid, i);
    herold_pack_str(&pk, text, (size_t)n);
    herold_pack_str(&pk, "source", 6);
    herold_pack_str(&pk, "bench", 5);
    herold_pack_str(&pk, "type", 4);
    herold_pack_str(&pk, "updated", 7);
    herold_pack_str(&pk, "resource", 8);
    n = snprintf(text, sizeof(text), "/w1/f%ld/d%" PRIu64, event_folder(b, i), i % 1000);
    herold_pack_str(&pk, text, (size_t)n);
    herold_pack_str(&pk, "time", 4);
    msgpack_pack_int64(&pk, (int64_t)time(NULL) * 1000);
    herold_pack_str(&pk, "readers", 7);
    msgpack_pack_array(&pk, 1);
    herold_pack_str(&pk, "group:bench", 11);
    herold_pack_str(&pk, "actor", 5);
    size_t len = make_marker(text, sizeof(text), i, ns, 0);
    herold_pack_str(&pk, text, len);
    herold_pack_str(&pk, "data", 4);
    msgpack_pack_map(&pk, 1);
    herold_pack_str(&pk, "pad", 3);
    memset(text, 'x', pad);
    herold_pack_str(&pk, text, pad);
}

/* Unpacked into a zone the publisher keeps: msgpack_unpack_next would malloc and free an
 * 8 KiB zone for every ack, load-generator work that the peers' publishers do not have. */
static bool herold_reply_ok(msgpack_zone *zone, const void *data, size_t size)
{
    msgpack_object reply;
    size_t offset = 0;
    bool ok = false;
    msgpack_unpack_return rc = msgpack_unpack(data, size, &offset, zone, &reply);
    if ((rc == MSGPACK_UNPACK_SUCCESS || rc == MSGPACK_UNPACK_EXTRA_BYTES) &&
        reply.type == MSGPACK_OBJECT_MAP) {
        for (uint32_t k = 0; k < reply.via.map.size; k++) {
            const msgpack_object_kv *kv = &reply.via.map.ptr[k];
            if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 2 &&
                memcmp(kv->key.via.str.ptr, "ok", 2) == 0) {
                ok = kv->val.type == MSGPACK_OBJECT_BOOLEAN && kv->val.via.boolean;
            }
        }
    }
    msgpack_zone_clear(zone);
    return ok;
}

static void herold_take_replies(struct bench *b, void *socket, msgpack_zone *zone,
                                uint64_t *in_flight, int flags)
{
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    while (*in_flight > 0 && zmq_msg_recv(&msg, socket, flags) >= 0) {
        flags = ZMQ_DONTWAIT;
        (*in_flight)--;
        if (herold_reply_ok(zone, zmq_msg_data(&msg), zmq_msg_size(&msg))) {
            atomic_fetch_add_explicit(&b->acked, 1, memory_order_relaxed);
        } else {
            atomic_fetch_add_explicit(&b->refused, 1, memory_order_relaxed);
        }
    }
    zmq_msg_close(&msg);
}

static void publish_herold(struct publisher *p)
{
    struct bench *b = p->b;
    void *context = zmq_ctx_new();
    void *socket = zmq_socket(context, ZMQ_DEALER);
    int hwm = 0;
    zmq_setsockopt(socket, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(socket, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    if (zmq_connect(socket, b->opt.pub) != 0) {
        fail("cannot connect to %s", b->opt.pub);
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_zone zone;
    if (!msgpack_zone_init(&zone, 2048)) {
        fail("%s", "out of memory");
    }
    /* Pad the data map so that the whole event is event_bytes long. */
    herold_encode(b, &sb, (uint64_t)b->sc.events, now_ns(), 0);
    size_t pad =
        (size_t)b->sc.event_bytes > sb.size + 2 ? (size_t)b->sc.event_bytes - sb.size - 2 : 0;
    pad = pad > 1000 ? 1000 : pad;
    uint64_t share = pub_share(b, p->index);
    uint64_t in_flight = 0;
    uint64_t window = (uint64_t)b->sc.window;
    uint64_t sent = 0;
    while (sent < share && !interrupted && !pub_time_is_up(b, now_ns())) {
        uint64_t due = pub_due(b, now_ns());
        if (sent >= due) {
            herold_take_replies(b, socket, &zone, &in_flight, ZMQ_DONTWAIT);
            sleep_until_due(b, sent);
            continue;
        }
        if (in_flight >= window) {
            herold_take_replies(b, socket, &zone, &in_flight, 0);
            continue;
        }
        uint64_t i = (uint64_t)p->index + sent * (uint64_t)b->sc.publishers;
        uint64_t now = now_ns();
        herold_encode(b, &sb, i, now, pad);
        if (zmq_send(socket, sb.data, sb.size, 0) < 0) {
            fail("zmq_send: %s", zmq_strerror(errno));
        }
        count_published(b, i, now);
        in_flight++;
        sent++;
        if ((sent & 63) == 0) {
            herold_take_replies(b, socket, &zone, &in_flight, ZMQ_DONTWAIT);
        }
    }
    while (in_flight > 0 && !interrupted) {
        herold_take_replies(b, socket, &zone, &in_flight, 0);
    }
    p->sent = sent;
    atomic_fetch_add(&b->publishers_done, 1);
    msgpack_sbuffer_destroy(&sb);
    msgpack_zone_destroy(&zone);
    int linger = 0;
    zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_close(socket);
    zmq_ctx_term(context);
}

static int tcp_connect(const char *host, int port)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fail("the publisher address must be an IPv4 address: %s", host);
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fail("cannot connect the publisher: %s", strerror(errno));
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            fail("publisher write failed: %s", strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Reads whatever the server sent the publisher; Redis answers every PUBLISH. */
static void drain_replies(struct bench *b, int fd, struct rxbuf *rx, bool wait)
{
    char buf[65536];
    struct pollfd pfd = {fd, POLLIN, 0};
    while (poll(&pfd, 1, wait ? 1000 : 0) > 0) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0) {
            return;
        }
        if (b->opt.target == T_REDIS) {
            for (ssize_t k = 0; k < n; k++) {
                if (buf[k] == ':') {
                    atomic_fetch_add_explicit(&b->acked, 1, memory_order_relaxed);
                }
            }
        } else {
            rx_append(rx, buf, (size_t)n);
            if (rx->len > 4096) {
                rx->len = 0;
            }
        }
        wait = false;
    }
}

static size_t peer_encode(struct bench *b, char *out, size_t cap, uint64_t i, uint64_t ns)
{
    char topic[96];
    char payload[1100];
    long folder = event_folder(b, i);
    size_t pl = make_marker(payload, sizeof(payload), i, ns, (size_t)b->sc.event_bytes);
    int tl;
    size_t n = 0;
    switch (b->opt.target) {
    case T_MQTT:
    case T_MQTT_WS: {
        tl = snprintf(topic, sizeof(topic), "w1/f%ld/d%" PRIu64, folder, i % 1000);
        out[n++] = 0x30;
        n += mqtt_put_length((unsigned char *)out + n, 2 + (size_t)tl + pl);
        out[n++] = (char)(tl >> 8);
        out[n++] = (char)tl;
        memcpy(out + n, topic, (size_t)tl);
        n += (size_t)tl;
        memcpy(out + n, payload, pl);
        return n + pl;
    }
    case T_NATS:
    case T_NATS_WS:
        n = (size_t)snprintf(out, cap, "PUB w1.f%ld.d%" PRIu64 " %zu\r\n", folder, i % 1000, pl);
        memcpy(out + n, payload, pl);
        memcpy(out + n + pl, "\r\n", 2);
        return n + pl + 2;
    case T_REDIS:
        tl = snprintf(topic, sizeof(topic), "w1/f%ld/d%" PRIu64, folder, i % 1000);
        n = (size_t)snprintf(out, cap, "*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%zu\r\n", tl, topic,
                             pl);
        memcpy(out + n, payload, pl);
        memcpy(out + n + pl, "\r\n", 2);
        return n + pl + 2;
    case T_HEROLD:
        break;
    }
    return 0;
}

static void publish_peer(struct publisher *p)
{
    struct bench *b = p->b;
    int fd = tcp_connect(b->pub_host, b->pub_port);
    struct rxbuf rx = {0};
    char *buf = xmalloc(PUB_BUFFER_BYTES + 4096);
    size_t len = 0;
    if (b->opt.target == T_MQTT || b->opt.target == T_MQTT_WS) {
        char *connect = NULL;
        size_t clen = 0;
        size_t ccap = 0;
        char id[64];
        snprintf(id, sizeof(id), "hb-%s-pub%ld", b->runid, p->index);
        mqtt_connect_packet(&connect, &clen, &ccap, id);
        write_all(fd, connect, clen);
        free(connect);
    } else if (b->opt.target == T_NATS || b->opt.target == T_NATS_WS) {
        const char *connect = "CONNECT {\"verbose\":false,\"pedantic\":false}\r\n";
        write_all(fd, connect, strlen(connect));
    }
    uint64_t share = pub_share(b, p->index);
    uint64_t sent = 0;
    while (sent < share && !interrupted && !pub_time_is_up(b, now_ns())) {
        uint64_t due = pub_due(b, now_ns());
        if (sent >= due) {
            if (len > 0) {
                write_all(fd, buf, len);
                len = 0;
            }
            drain_replies(b, fd, &rx, false);
            sleep_until_due(b, sent);
            continue;
        }
        uint64_t i = (uint64_t)p->index + sent * (uint64_t)b->sc.publishers;
        uint64_t now = now_ns();
        len += peer_encode(b, buf + len, PUB_BUFFER_BYTES + 4096 - len, i, now);
        count_published(b, i, now);
        sent++;
        if (len >= PUB_BUFFER_BYTES) {
            write_all(fd, buf, len);
            len = 0;
            drain_replies(b, fd, &rx, false);
        }
    }
    if (len > 0) {
        write_all(fd, buf, len);
    }
    p->sent = sent;
    if (b->opt.target == T_NATS || b->opt.target == T_NATS_WS) {
        /* PONG comes after every PUB before it was processed. */
        write_all(fd, "PING\r\n", 6);
        uint64_t deadline = now_ns() + 30000000000ull;
        while (memmem(rx.data, rx.len, "PONG", 4) == NULL && now_ns() < deadline) {
            drain_replies(b, fd, &rx, true);
        }
        atomic_store(&b->acked, atomic_load(&b->published));
    } else if (b->opt.target == T_REDIS) {
        uint64_t deadline = now_ns() + 30000000000ull;
        while (atomic_load(&b->acked) < atomic_load(&b->published) && now_ns() < deadline) {
            drain_replies(b, fd, &rx, true);
        }
    } else {
        atomic_store(&b->acked, atomic_load(&b->published)); /* QoS 0: nothing answers */
    }
    atomic_fetch_add(&b->publishers_done, 1);
    free(buf);
    free(rx.data);
    /* Keep the connection open until the receivers drained: closing could drop queued
     * messages in some brokers before they are forwarded. */
    while (!atomic_load(&b->stop) && !interrupted) {
        drain_replies(b, fd, &rx, true);
    }
    close(fd);
}

static void *publisher_main(void *arg)
{
    struct publisher *p = arg;
    if (p->b->opt.target == T_HEROLD) {
        publish_herold(p);
    } else {
        publish_peer(p);
    }
    return NULL;
}

/* ---- configuration ---- */

static void scenario_defaults(struct scenario *sc)
{
    memset(sc, 0, sizeof(*sc));
    snprintf(sc->name, sizeof(sc->name), "w1");
    sc->connections = 100;
    sc->subs_per_conn = 100;
    sc->followers = 2;
    sc->event_bytes = 200;
    sc->events = 1000000;
    sc->rate = 0;
    sc->window = 1000;
    sc->sources = 4;
    sc->drain_seconds = 5;
    sc->publishers = 1;
    sc->client_threads = 1;
}

static void scenario_set(struct scenario *sc, const char *key, const char *value)
{
    struct {
        const char *name;
        long *field;
        long min;
        long max;
    } keys[] = {
        {"connections", &sc->connections, 1, 100000},
        {"subs_per_conn", &sc->subs_per_conn, 1, 256},
        {"followers", &sc->followers, 1, 1000},
        {"event_bytes", &sc->event_bytes, 32, 1024},
        {"events", &sc->events, 1, 100000000},
        {"rate", &sc->rate, 0, 10000000},
        {"window", &sc->window, 1, 1000000},
        {"sources", &sc->sources, 1, 250},
        {"drain_seconds", &sc->drain_seconds, 0, 600},
        {"publishers", &sc->publishers, 1, 64},
        {"client_threads", &sc->client_threads, 1, 16},
        {"seconds", &sc->seconds, 0, MAX_SECONDS - 60},
        {"webhooks", &sc->webhooks, 0, 1000},
    };
    if (strcmp(key, "name") == 0) {
        snprintf(sc->name, sizeof(sc->name), "%s", value);
        return;
    }
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        if (strcmp(key, keys[k].name) == 0) {
            char *end;
            errno = 0;
            long v = strtol(value, &end, 10);
            if (errno != 0 || end == value || *end != '\0' || v < keys[k].min || v > keys[k].max) {
                fail("bad value for %s", key);
            }
            *keys[k].field = v;
            return;
        }
    }
    fail("unknown scenario key: %s", key);
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) {
        s[--n] = '\0';
    }
    return s;
}

static void scenario_line(struct scenario *sc, char *line)
{
    char *hash = strchr(line, '#');
    if (hash != NULL) {
        *hash = '\0';
    }
    char *s = trim(line);
    if (*s == '\0') {
        return;
    }
    char *eq = strchr(s, '=');
    if (eq == NULL) {
        fail("scenario line without '=': %s", s);
    }
    *eq = '\0';
    scenario_set(sc, trim(s), trim(eq + 1));
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: herold-bench --target herold|mqtt|mqtt-ws|nats|nats-ws|redis --scenario FILE\n"
            "                    [--set key=value]... --pub ADDR --sub HOST:PORT\n"
            "                    [--token-file FILE] [--out PREFIX] [--label NAME]\n");
}

static void split_host_port(const char *addr, char *host, size_t cap, int *port)
{
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= cap) {
        fail("expected HOST:PORT, got %s", addr);
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    *port = atoi(colon + 1);
    if (*port <= 0 || *port > 65535) {
        fail("bad port in %s", addr);
    }
}

static void parse_options(struct bench *b, int argc, char **argv)
{
    struct options *o = &b->opt;
    bool has_target = false;
    for (int k = 1; k < argc; k++) {
        const char *a = argv[k];
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (k + 1 >= argc) {
            usage(stderr);
            exit(2);
        }
        const char *v = argv[++k];
        if (strcmp(a, "--target") == 0) {
            for (size_t t = 0; t < sizeof(target_names) / sizeof(target_names[0]); t++) {
                if (strcmp(v, target_names[t]) == 0) {
                    o->target = (enum target)t;
                    has_target = true;
                }
            }
            if (!has_target) {
                fail("unknown target %s", v);
            }
        } else if (strcmp(a, "--scenario") == 0) {
            o->scenario_file = v;
        } else if (strcmp(a, "--set") == 0) {
            if (o->set_count == MAX_SETS) {
                fail("too many --set (%s)", v);
            }
            o->sets[o->set_count++] = v;
        } else if (strcmp(a, "--pub") == 0) {
            o->pub = v;
        } else if (strcmp(a, "--sub") == 0) {
            o->sub = v;
        } else if (strcmp(a, "--token-file") == 0) {
            o->token_file = v;
        } else if (strcmp(a, "--out") == 0) {
            o->out = v;
        } else if (strcmp(a, "--label") == 0) {
            o->label = v;
        } else {
            usage(stderr);
            exit(2);
        }
    }
    if (!has_target || o->pub == NULL || o->sub == NULL) {
        usage(stderr);
        exit(2);
    }
    scenario_defaults(&b->sc);
    if (o->scenario_file != NULL) {
        FILE *f = fopen(o->scenario_file, "r");
        if (f == NULL) {
            fail("cannot open the scenario %s", o->scenario_file);
        }
        char line[512];
        while (fgets(line, sizeof(line), f) != NULL) {
            scenario_line(&b->sc, line);
        }
        fclose(f);
    }
    for (int k = 0; k < o->set_count; k++) {
        char line[512];
        snprintf(line, sizeof(line), "%s", o->sets[k]);
        scenario_line(&b->sc, line);
    }
    if (o->label == NULL) {
        o->label = target_names[o->target];
    }
    if (b->sc.webhooks > 0 && o->target != T_HEROLD) {
        fail("%s", "webhooks are herold's only");
    }
    split_host_port(o->sub, b->host, sizeof(b->host), &b->port);
    if (o->target != T_HEROLD) {
        split_host_port(o->pub, b->pub_host, sizeof(b->pub_host), &b->pub_port);
    }
    if (o->target == T_HEROLD) {
        if (o->token_file == NULL) {
            fail("%s", "herold needs --token-file");
        }
        FILE *f = fopen(o->token_file, "r");
        if (f == NULL || fgets(b->token, sizeof(b->token), f) == NULL) {
            fail("cannot read the token from %s", o->token_file);
        }
        fclose(f);
        trim(b->token);
    }
}

/* ---- results ---- */

static void read_machine(char *out, size_t cap)
{
    char model[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "model name", 10) == 0) {
            char *colon = strchr(line, ':');
            if (colon != NULL) {
                snprintf(model, sizeof(model), "%s", trim(colon + 1));
            }
            break;
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    struct utsname u;
    uname(&u);
    snprintf(out, cap, "%ld cores, %s, Linux %s", sysconf(_SC_NPROCESSORS_ONLN), model, u.release);
}

static void write_results(struct bench *b, const struct histogram *h, double seconds,
                          double pub_seconds, uint64_t lost, uint64_t dups)
{
    uint64_t delivered = atomic_load(&b->delivered);
    uint64_t published = atomic_load(&b->published);
    double delivered_per_s = seconds > 0 ? (double)delivered / seconds : 0;
    double published_per_s = pub_seconds > 0 ? (double)published / pub_seconds : 0;
    json_t *root = json_object();
    json_object_set_new(root, "target", json_string(target_names[b->opt.target]));
    json_object_set_new(root, "label", json_string(b->opt.label));
    json_t *sc = json_object();
    json_object_set_new(sc, "name", json_string(b->sc.name));
    json_object_set_new(sc, "connections", json_integer(b->sc.connections));
    json_object_set_new(sc, "subs_per_conn", json_integer(b->sc.subs_per_conn));
    json_object_set_new(sc, "followers", json_integer(b->sc.followers));
    json_object_set_new(sc, "event_bytes", json_integer(b->sc.event_bytes));
    json_object_set_new(sc, "events", json_integer(b->sc.events));
    json_object_set_new(sc, "rate", json_integer(b->sc.rate));
    json_object_set_new(sc, "window", json_integer(b->sc.window));
    json_object_set_new(sc, "sources", json_integer(b->sc.sources));
    json_object_set_new(sc, "drain_seconds", json_integer(b->sc.drain_seconds));
    json_object_set_new(sc, "publishers", json_integer(b->sc.publishers));
    json_object_set_new(sc, "client_threads", json_integer(b->sc.client_threads));
    json_object_set_new(sc, "seconds", json_integer(b->sc.seconds));
    json_object_set_new(sc, "webhooks", json_integer(b->sc.webhooks));
    json_object_set_new(root, "scenario", sc);
    json_object_set_new(root, "events_sent", json_integer((json_int_t)published));
    json_object_set_new(root, "events_acked", json_integer((json_int_t)atomic_load(&b->acked)));
    json_object_set_new(root, "events_refused", json_integer((json_int_t)atomic_load(&b->refused)));
    json_object_set_new(root, "expected", json_integer((json_int_t)b->expected_total));
    json_object_set_new(root, "delivered", json_integer((json_int_t)delivered));
    json_object_set_new(root, "lost", json_integer((json_int_t)lost));
    json_object_set_new(root, "duplicates", json_integer((json_int_t)dups));
    json_object_set_new(root, "unrecognised", json_integer((json_int_t)atomic_load(&b->bogus)));
    json_object_set_new(root, "seconds", json_real(seconds));
    json_object_set_new(root, "published_per_s", json_real(published_per_s));
    json_object_set_new(root, "delivered_per_s", json_real(delivered_per_s));
    json_t *lat = json_object();
    json_object_set_new(lat, "p50", json_real((double)hist_percentile(h, 0.50) / 1e3));
    json_object_set_new(lat, "p90", json_real((double)hist_percentile(h, 0.90) / 1e3));
    json_object_set_new(lat, "p99", json_real((double)hist_percentile(h, 0.99) / 1e3));
    json_object_set_new(lat, "p999", json_real((double)hist_percentile(h, 0.999) / 1e3));
    json_object_set_new(lat, "max", json_real((double)h->max / 1e3));
    json_object_set_new(root, "latency_us", lat);
    char date[64];
    time_t t = time(NULL);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    json_object_set_new(root, "date", json_string(date));
    char machine[512];
    read_machine(machine, sizeof(machine));
    json_object_set_new(root, "machine", json_string(machine));

    printf("%s %s: %" PRIu64 " events, %" PRIu64 " of %" PRIu64
           " deliveries in %.2f s = %.0f/s, lost %" PRIu64 ", duplicates %" PRIu64
           ", latency p50 %.0f p99 %.0f p99.9 %.0f max %.0f us\n",
           b->opt.label, b->sc.name, published, delivered, b->expected_total, seconds,
           delivered_per_s, lost, dups, (double)hist_percentile(h, 0.5) / 1e3,
           (double)hist_percentile(h, 0.99) / 1e3, (double)hist_percentile(h, 0.999) / 1e3,
           (double)h->max / 1e3);
    if (b->opt.out == NULL) {
        json_decref(root);
        return;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s.json", b->opt.out);
    if (json_dump_file(root, path, JSON_INDENT(2)) != 0) {
        fail("cannot write %s", path);
    }
    json_decref(root);
    snprintf(path, sizeof(path), "%s-rate.csv", b->opt.out);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fail("cannot write %s", path);
    }
    fprintf(f, "second,published,delivered\n");
    uint64_t last_sec = (uint64_t)seconds + 1;
    for (uint64_t s = 0; s <= last_sec && s < MAX_SECONDS; s++) {
        fprintf(f, "%" PRIu64 ",%" PRIu64 ",%" PRIu64 "\n", s,
                atomic_load(&b->published_per_sec[s]), atomic_load(&b->delivered_per_sec[s]));
    }
    fclose(f);
    snprintf(path, sizeof(path), "%s-latency.csv", b->opt.out);
    f = fopen(path, "w");
    if (f == NULL) {
        fail("cannot write %s", path);
    }
    fprintf(f, "latency_us,fraction\n");
    uint64_t seen = 0;
    for (unsigned k = 0; k < HIST_BUCKETS; k++) {
        if (h->counts[k] == 0) {
            continue;
        }
        seen += h->counts[k];
        uint64_t high = hist_bucket_high(k);
        fprintf(f, "%.3f,%.6f\n", (double)(high < h->max ? high : h->max) / 1e3,
                (double)seen / (double)h->total);
    }
    fclose(f);
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

int main(int argc, char **argv)
{
    struct bench *b = xcalloc(1, sizeof(*b));
    parse_options(b, argc, argv);
    struct scenario *sc = &b->sc;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    snprintf(b->runid, sizeof(b->runid), "%lx%x", (long)time(NULL), (unsigned)getpid());

    long total_subs = sc->connections * sc->subs_per_conn;
    b->folders = total_subs / sc->followers;
    if (b->folders < 1) {
        fail("%s", "fewer subscriptions than followers: no folder to publish to");
    }
    b->expected = xcalloc((size_t)b->folders, 1);
    for (long c = 0; c < sc->connections; c++) {
        for (long k = 0; k < sc->subs_per_conn; k++) {
            long f = sub_folder(b, c, k);
            if (b->expected[f] < 255) {
                b->expected[f]++;
            }
        }
    }
    b->got = xcalloc((size_t)sc->events, 1);

    /* Subscriber connections, spread over the receive threads and the source addresses. */
    long threads = sc->client_threads;
    b->receivers = xcalloc((size_t)threads, sizeof(struct receiver));
    for (long t = 0; t < threads; t++) {
        struct receiver *r = &b->receivers[t];
        r->bench = b;
        r->conns = xcalloc((size_t)(sc->connections / threads + 1), sizeof(struct conn));
        r->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (r->epoll_fd < 0) {
            fail("epoll_create1: %s", strerror(errno));
        }
    }
    for (long c = 0; c < sc->connections; c++) {
        struct receiver *r = &b->receivers[c % threads];
        struct conn *conn = &r->conns[r->conn_count++];
        conn->receiver = r;
        conn->index = c;
        snprintf(conn->source, sizeof(conn->source), "127.0.0.%ld", 1 + c % sc->sources);
        conn_build_setup(b, conn);
    }
    uint64_t setup_start = now_ns();
    b->t0_ns = UINT64_MAX / 2;
    for (long t = 0; t < threads; t++) {
        pthread_create(&b->receivers[t].thread, NULL, receiver_main, &b->receivers[t]);
    }
    while (atomic_load(&b->ready) < sc->connections && atomic_load(&b->failed) == 0 &&
           !interrupted) {
        if (now_ns() - setup_start > 60000000000ull) {
            fprintf(stderr, "herold-bench: only %ld of %ld connections ready after 60 s\n",
                    atomic_load(&b->ready), sc->connections);
            atomic_fetch_add(&b->failed, 1);
            break;
        }
        usleep(10000);
    }
    bool setup_failed = atomic_load(&b->failed) > 0 || interrupted;
    struct hooks hooks;
    bool has_hooks = !setup_failed && sc->webhooks > 0;
    if (has_hooks) {
        hooks_start(b, &hooks);
        setup_failed = !hooks_subscribe(b, &hooks);
    }
    if (!setup_failed) {
        fprintf(stderr, "herold-bench: %s %s: %ld connections, %ld subscriptions ready in %.2f s\n",
                b->opt.label, sc->name, sc->connections, total_subs,
                (double)(now_ns() - setup_start) / 1e9);
    }

    /* Publish, then wait until everything expected arrived or nothing moved for drain_seconds. */
    b->t0_ns = now_ns();
    atomic_store(&b->last_delivery_ns, b->t0_ns);
    struct publisher *pubs = xcalloc((size_t)sc->publishers, sizeof(struct publisher));
    if (!setup_failed) {
        for (long p = 0; p < sc->publishers; p++) {
            pubs[p].b = b;
            pubs[p].index = p;
            pthread_create(&pubs[p].thread, NULL, publisher_main, &pubs[p]);
        }
    }
    bool is_tty = isatty(STDERR_FILENO);
    uint64_t last_report = b->t0_ns;
    uint64_t last_delivered = 0;
    uint64_t last_published = 0;
    uint64_t pub_done_ns = 0;
    uint64_t progress_ns = b->t0_ns;
    uint64_t progress_delivered = 0;
    while (!setup_failed && !interrupted) {
        usleep(20000);
        uint64_t now = now_ns();
        uint64_t delivered = atomic_load(&b->delivered);
        uint64_t published = atomic_load(&b->published);
        if (pub_done_ns == 0 && atomic_load(&b->publishers_done) == sc->publishers) {
            pub_done_ns = now;
        }
        if (delivered != progress_delivered) {
            progress_delivered = delivered;
            progress_ns = now;
        }
        if (now - last_report >= 1000000000u) {
            double dt = (double)(now - last_report) / 1e9;
            fprintf(stderr,
                    "%s[%s %s] %4.0fs  published %8.0f/s  delivered %8.0f/s  %" PRIu64 "/%" PRIu64
                    "%s",
                    is_tty ? "\r" : "", b->opt.label, sc->name, (double)(now - b->t0_ns) / 1e9,
                    (double)(published - last_published) / dt,
                    (double)(delivered - last_delivered) / dt, delivered, b->expected_total,
                    is_tty ? "   " : "\n");
            last_report = now;
            last_delivered = delivered;
            last_published = published;
        }
        if (delivered >= b->expected_total && pub_done_ns != 0) {
            break;
        }
        if (pub_done_ns != 0 && now - progress_ns > (uint64_t)sc->drain_seconds * 1000000000u) {
            break;
        }
        if (atomic_load(&b->failed) > 0 && now - progress_ns > 1000000000u) {
            break; /* a connection went away: what it would have received is lost */
        }
    }
    if (is_tty) {
        fputc('\n', stderr);
    }
    atomic_store(&b->stop, true);
    if (!setup_failed) {
        for (long p = 0; p < sc->publishers; p++) {
            pthread_join(pubs[p].thread, NULL);
        }
    }
    for (long t = 0; t < threads; t++) {
        pthread_join(b->receivers[t].thread, NULL);
    }
    if (has_hooks) {
        pthread_join(hooks.thread, NULL);
        close(hooks.listen_fd);
        close(hooks.epoll_fd);
    }
    if (setup_failed) {
        fprintf(stderr, "herold-bench: setup failed: %ld of %ld connections ready\n",
                atomic_load(&b->ready), sc->connections);
        return 1;
    }

    struct histogram merged;
    memset(&merged, 0, sizeof(merged));
    for (long t = 0; t < threads + (has_hooks ? 1 : 0); t++) {
        const struct histogram *h = t < threads ? &b->receivers[t].hist : &hooks.receiver.hist;
        for (unsigned k = 0; k < HIST_BUCKETS; k++) {
            merged.counts[k] += h->counts[k];
        }
        merged.total += h->total;
        merged.max = h->max > merged.max ? h->max : merged.max;
    }
    uint64_t lost = 0;
    uint64_t dups = 0;
    for (long i = 0; i < sc->events; i++) {
        const struct publisher *p = &pubs[i % sc->publishers];
        bool was_sent = (uint64_t)(i / sc->publishers) < p->sent;
        unsigned want = was_sent ? b->expected[event_folder(b, (uint64_t)i)] : 0;
        unsigned got = atomic_load_explicit(&b->got[i], memory_order_relaxed);
        lost += got < want ? want - got : 0;
        dups += got > want ? got - want : 0;
    }
    uint64_t end = atomic_load(&b->last_delivery_ns);
    double seconds = (double)(end - b->t0_ns) / 1e9;
    double pub_seconds = (double)((pub_done_ns != 0 ? pub_done_ns : now_ns()) - b->t0_ns) / 1e9;
    write_results(b, &merged, seconds, pub_seconds, lost, dups);

    for (long t = 0; t < threads; t++) {
        struct receiver *r = &b->receivers[t];
        close(r->epoll_fd);
        for (long k = 0; k < r->conn_count; k++) {
            struct conn *c = &r->conns[k];
            free(c->setup);
            free(c->rx.data);
            free(c->net.data);
            free(c->out.data);
            for (long m = 0; m < c->setup_msg_count; m++) {
                free(c->setup_msgs[m]);
            }
            free(c->setup_msgs);
        }
        free(r->conns);
    }
    free(b->receivers);
    free(pubs);
    free(b->expected);
    free((void *)b->got);
    free(b);
    return interrupted ? 130 : 0;
}
