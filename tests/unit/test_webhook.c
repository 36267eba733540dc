/* Webhook delivery: the address and URL rules, signatures and secrets, and delivery,
 * retries, catching up (behind, WANT, REPLAY), positions (MARK, POSITIONS), lifecycle posts
 * and validation against a real HTTP/1.1 receiver that runs in this process on 127.0.0.1
 * (plain sockets, keep-alive, scripted answers). */

#include <arpa/inet.h>
#include <check.h>
#include <ctype.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "webhook.h"

/* Generous bounds for waits on the receiver; a passing run takes a fraction of them. */
#define WAIT_MS 5000

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- base64 and HMAC written here, independent of webhook.c --------------------------- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_encode(const unsigned char *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len) {
            v |= (uint32_t)in[i + 1] << 8;
        }
        if (i + 2 < len) {
            v |= in[i + 2];
        }
        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? b64_alphabet[v & 63] : '=';
    }
    out[o] = '\0';
}

/* Returns the decoded length, or -1 for a character outside the alphabet. */
static int b64_decode(const char *in, unsigned char *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (const char *p = in; *p != '\0' && *p != '='; p++) {
        const char *at = strchr(b64_alphabet, *p);
        if (at == NULL) {
            return -1;
        }
        acc = (acc << 6) | (uint32_t)(at - b64_alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            ck_assert_uint_lt(o, cap);
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return (int)o;
}

/* "v1," + base64(HMAC-SHA256(key, id "." ts "." body)), via OpenSSL's one-shot HMAC(). */
static void expected_signature(const unsigned char *key, size_t key_len, const char *id,
                               const char *timestamp, const char *body, size_t body_len, char *out)
{
    size_t id_len = strlen(id);
    size_t ts_len = strlen(timestamp);
    size_t len = id_len + 1 + ts_len + 1 + body_len;
    unsigned char *message = malloc(len);
    memcpy(message, id, id_len);
    message[id_len] = '.';
    memcpy(message + id_len + 1, timestamp, ts_len);
    message[id_len + 1 + ts_len] = '.';
    memcpy(message + id_len + 2 + ts_len, body, body_len);
    unsigned char digest[32];
    unsigned int digest_len = 0;
    ck_assert_ptr_nonnull(HMAC(EVP_sha256(), key, (int)key_len, message, len, digest, &digest_len));
    ck_assert_uint_eq(digest_len, 32);
    free(message);
    memcpy(out, "v1,", 3);
    b64_encode(digest, digest_len, out + 3);
}

/* ---- webhook_address_is_private ------------------------------------------------------- */

static bool v4_is_private(const char *text)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(443);
    ck_assert_int_eq(inet_pton(AF_INET, text, &sin.sin_addr), 1);
    return webhook_address_is_private(&sin, sizeof(sin));
}

static bool v6_is_private(const char *text)
{
    struct sockaddr_in6 sin6;
    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(443);
    ck_assert_int_eq(inet_pton(AF_INET6, text, &sin6.sin6_addr), 1);
    return webhook_address_is_private(&sin6, sizeof(sin6));
}

struct address_case {
    const char *address;
    bool is_private;
};

static const struct address_case ipv4_cases[] = {
    {"0.0.0.0", true},         {"0.255.255.255", true},    {"1.0.0.0", false},
    {"9.255.255.255", false},  {"10.0.0.0", true},         {"10.255.255.255", true},
    {"11.0.0.0", false},       {"100.63.255.255", false},  {"100.64.0.0", true},
    {"100.127.255.255", true}, {"100.128.0.0", false},     {"126.255.255.255", false},
    {"127.0.0.0", true},       {"127.0.0.1", true},        {"127.255.255.255", true},
    {"128.0.0.0", false},      {"169.253.255.255", false}, {"169.254.0.0", true},
    {"169.254.169.254", true}, {"169.254.255.255", true},  {"169.255.0.0", false},
    {"172.15.255.255", false}, {"172.16.0.0", true},       {"172.31.255.255", true},
    {"172.32.0.0", false},     {"192.167.255.255", false}, {"192.168.0.0", true},
    {"192.168.255.255", true}, {"192.169.0.0", false},     {"223.255.255.255", false},
    {"224.0.0.0", true},       {"239.255.255.255", true},  {"240.0.0.0", true},
    {"255.255.255.255", true}, {"8.8.8.8", false},         {"93.184.216.34", false},
};

START_TEST(test_webhook_private_ipv4_edges)
{
    for (size_t i = 0; i < sizeof(ipv4_cases) / sizeof(ipv4_cases[0]); i++) {
        ck_assert_msg(v4_is_private(ipv4_cases[i].address) == ipv4_cases[i].is_private,
                      "%s: expected %s", ipv4_cases[i].address,
                      ipv4_cases[i].is_private ? "private" : "public");
    }
}
END_TEST

static const struct address_case ipv6_cases[] = {
    {"::", true},
    {"::1", true},
    {"2001:db8::1", false},
    {"2606:4700:4700::1111", false},
    {"fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false},
    {"fc00::", true},
    {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
    {"fe00::", false},
    {"fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false},
    {"fe80::", true},
    {"fe80::1", true},
    {"febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
    {"fec0::", false},
    {"feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false},
    {"ff00::", true},
    {"ff02::1", true},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
    /* IPv4-mapped addresses are judged as the IPv4 address they carry. */
    {"::ffff:10.0.0.1", true},
    {"::ffff:127.0.0.1", true},
    {"::ffff:172.31.255.255", true},
    {"::ffff:172.32.0.0", false},
    {"::ffff:9.255.255.255", false},
    {"::ffff:8.8.8.8", false},
    /* So are the NAT64 well-known prefix and IPv4-compatible ::a.b.c.d. */
    {"64:ff9b::10.0.0.1", true},
    {"64:ff9b::8.8.8.8", false},
    {"::192.168.0.1", true},
};

START_TEST(test_webhook_private_ipv6)
{
    for (size_t i = 0; i < sizeof(ipv6_cases) / sizeof(ipv6_cases[0]); i++) {
        ck_assert_msg(v6_is_private(ipv6_cases[i].address) == ipv6_cases[i].is_private,
                      "%s: expected %s", ipv6_cases[i].address,
                      ipv6_cases[i].is_private ? "private" : "public");
    }
}
END_TEST

START_TEST(test_webhook_private_refuses_short_or_foreign_addresses)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    ck_assert_int_eq(inet_pton(AF_INET, "8.8.8.8", &sin.sin_addr), 1);
    ck_assert(!webhook_address_is_private(&sin, sizeof(sin)));
    ck_assert(webhook_address_is_private(&sin, sizeof(sin) - 1));

    struct sockaddr_in6 sin6;
    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    ck_assert_int_eq(inet_pton(AF_INET6, "2606:4700:4700::1111", &sin6.sin6_addr), 1);
    ck_assert(!webhook_address_is_private(&sin6, sizeof(sin6)));
    ck_assert(webhook_address_is_private(&sin6, sizeof(sin6) - 1));

    struct sockaddr_un sun;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    ck_assert(webhook_address_is_private(&sun, sizeof(sun)));
    ck_assert(webhook_address_is_private(NULL, 0));
}
END_TEST

/* ---- webhook_url_check ---------------------------------------------------------------- */

struct url_case {
    const char *url;
    int code; /* with allow_private false */
};

static const struct url_case url_cases[] = {
    {"http://example.com/hook", 0},
    {"https://example.com:8443/a/b?x=1&y=2", 0},
    {"HTTPS://Example.COM/", 0},
    {"https://hooks.example.com/notify#frag", 0},
    {"http://8.8.8.8/", 0},
    {"http://9.255.255.255/", 0},
    {"http://172.32.0.0/", 0},
    {"http://172.15.255.255/", 0},
    {"http://[2606:4700:4700::1111]/x", 0},
    {"http://localhostx.example/", 0},
    {"http://notlocalhost/", 0},
    {"ftp://example.com/file", HEROLD_E_BAD_REQUEST},
    {"file:///etc/passwd", HEROLD_E_BAD_REQUEST},
    {"websocket:", HEROLD_E_BAD_REQUEST},
    {"websocket:x", HEROLD_E_BAD_REQUEST},
    {"ws://example.com/", HEROLD_E_BAD_REQUEST},
    {"gopher://example.com/", HEROLD_E_BAD_REQUEST},
    {"mailto:hook@example.com", HEROLD_E_BAD_REQUEST},
    {"example.com/hook", HEROLD_E_BAD_REQUEST},
    {"", HEROLD_E_BAD_REQUEST},
    {"http://", HEROLD_E_BAD_REQUEST},
    {"http:///hook", HEROLD_E_BAD_REQUEST},
    {"http:/example.com/hook", HEROLD_E_BAD_REQUEST},
    {"http:\\\\example.com/hook", HEROLD_E_BAD_REQUEST},
    {"https://user:pass@example.com/", HEROLD_E_BAD_REQUEST},
    {"https://user@example.com/", HEROLD_E_BAD_REQUEST},
    {"https://:pass@example.com/", HEROLD_E_BAD_REQUEST},
    {"http://exa mple.com/", HEROLD_E_BAD_REQUEST},
    {"http://10.0.0.1/", HEROLD_E_FORBIDDEN},
    {"http://172.16.0.0/", HEROLD_E_FORBIDDEN},
    {"http://172.31.255.255:8080/x", HEROLD_E_FORBIDDEN},
    {"http://127.0.0.1:8080/hook", HEROLD_E_FORBIDDEN},
    {"http://169.254.169.254/latest/meta-data", HEROLD_E_FORBIDDEN},
    {"https://192.168.1.1/", HEROLD_E_FORBIDDEN},
    {"http://0.0.0.0/", HEROLD_E_FORBIDDEN},
    {"http://[::1]/", HEROLD_E_FORBIDDEN},
    {"http://[fe80::1]/", HEROLD_E_FORBIDDEN},
    {"http://[fd00::1]:8443/", HEROLD_E_FORBIDDEN},
    {"http://[::ffff:192.168.1.1]/", HEROLD_E_FORBIDDEN},
    {"http://localhost/", HEROLD_E_FORBIDDEN},
    /* Other spellings of 127.0.0.1 and ::1, as curl would connect to them. */
    {"http://2130706433/", HEROLD_E_FORBIDDEN},
    {"http://0x7f.1/", HEROLD_E_FORBIDDEN},
    {"http://127.1/", HEROLD_E_FORBIDDEN},
    {"http://%31%32%37.0.0.1/", HEROLD_E_FORBIDDEN},
    {"http://127.0.0.1./", HEROLD_E_FORBIDDEN},
    {"http://[::1%25lo]/", HEROLD_E_FORBIDDEN},
    {"http://[::ffff:7f00:1]/", HEROLD_E_FORBIDDEN},
    {"http://LOCALHOST./", HEROLD_E_FORBIDDEN},
    {"http://api.localhost:9000/", HEROLD_E_FORBIDDEN},
};

START_TEST(test_webhook_url_check_table)
{
    for (size_t i = 0; i < sizeof(url_cases) / sizeof(url_cases[0]); i++) {
        struct herr err;
        herr_clear(&err);
        int rc = webhook_url_check(url_cases[i].url, false, &err);
        ck_assert_msg(rc == url_cases[i].code, "%s: expected %d, got %d (%s)", url_cases[i].url,
                      url_cases[i].code, rc, err.message);
        if (rc != 0) {
            ck_assert_int_eq(err.code, rc);
            ck_assert_msg(strncmp(err.message, "notificationUrl: ", 17) == 0, "%s: %s",
                          url_cases[i].url, err.message);
        }
        /* With --webhook-allow-private only the private-range refusals go away. */
        herr_clear(&err);
        int allowed = webhook_url_check(url_cases[i].url, true, &err);
        int expected = url_cases[i].code == HEROLD_E_FORBIDDEN ? 0 : url_cases[i].code;
        ck_assert_msg(allowed == expected, "%s (allow_private): expected %d, got %d (%s)",
                      url_cases[i].url, expected, allowed, err.message);
    }
}
END_TEST

START_TEST(test_webhook_url_check_messages_name_the_rule)
{
    struct herr err;
    ck_assert_int_eq(webhook_url_check("http://10.0.0.1/x", false, &err), HEROLD_E_FORBIDDEN);
    ck_assert_ptr_nonnull(strstr(err.message, "address 10.0.0.1 is in a private range"));
    ck_assert_int_eq(webhook_url_check("http://[fe80::1]/x", false, &err), HEROLD_E_FORBIDDEN);
    ck_assert_ptr_nonnull(strstr(err.message, "fe80::1"));
    ck_assert_int_eq(webhook_url_check("ftp://example.com/", false, &err), HEROLD_E_BAD_REQUEST);
    ck_assert_ptr_nonnull(strstr(err.message, "http or https"));
    ck_assert_int_eq(webhook_url_check("https://u:p@example.com/", false, &err),
                     HEROLD_E_BAD_REQUEST);
    ck_assert_ptr_nonnull(strstr(err.message, "user name or password"));
    ck_assert_int_eq(
        webhook_url_check_named("lifecycleNotificationUrl", "http://127.0.0.1/", false, &err),
        HEROLD_E_FORBIDDEN);
    ck_assert_msg(strncmp(err.message, "lifecycleNotificationUrl: ", 26) == 0, "%s", err.message);
}
END_TEST

START_TEST(test_webhook_url_check_length_limit)
{
    char url[WEBHOOK_MAX_URL_BYTES + 2];
    const char *prefix = "https://example.com/";
    size_t prefix_len = strlen(prefix);
    memcpy(url, prefix, prefix_len);
    memset(url + prefix_len, 'a', WEBHOOK_MAX_URL_BYTES - prefix_len);
    url[WEBHOOK_MAX_URL_BYTES] = '\0';
    struct herr err;
    ck_assert_uint_eq(strlen(url), WEBHOOK_MAX_URL_BYTES);
    ck_assert_int_eq(webhook_url_check(url, false, &err), 0);
    url[WEBHOOK_MAX_URL_BYTES] = 'a';
    url[WEBHOOK_MAX_URL_BYTES + 1] = '\0';
    ck_assert_int_eq(webhook_url_check(url, false, &err), HEROLD_E_BAD_REQUEST);
    ck_assert_ptr_nonnull(strstr(err.message, "2048"));
}
END_TEST

/* ---- signatures and secrets ----------------------------------------------------------- */

START_TEST(test_webhook_sign_matches_independent_hmac)
{
    unsigned char secret[WEBHOOK_SECRET_BYTES];
    for (size_t i = 0; i < sizeof(secret); i++) {
        secret[i] = (unsigned char)(i * 37 + 11);
    }
    /* body_len counts, not a NUL: the body carries one in the middle. */
    const char body[] = "{\"value\":[1]}\0tail";
    size_t body_len = sizeof(body) - 1;
    char got[64];
    char want[64];
    webhook_sign(secret, "msg_0123abcd", 1700000000, body, body_len, got, sizeof(got));
    expected_signature(secret, sizeof(secret), "msg_0123abcd", "1700000000", body, body_len, want);
    ck_assert_str_eq(got, want);
    ck_assert_uint_eq(strlen(got), 3 + 44);

    char other[64];
    webhook_sign(secret, "msg_0123abcd", 1700000001, body, body_len, other, sizeof(other));
    ck_assert_str_ne(other, got);
    webhook_sign(secret, "msg_0123abcd", 1700000000, body, body_len - 1, other, sizeof(other));
    ck_assert_str_ne(other, got);
}
END_TEST

/* The published vector of the Standard Webhooks reference libraries
 * (standard-webhooks/standard-webhooks, libraries/go/webhook_test.go, TestWebhookSign). Its
 * key is 24 bytes, hence webhook_sign_key. */
START_TEST(test_webhook_sign_standard_webhooks_vector)
{
    unsigned char key[64];
    int key_len = b64_decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", key, sizeof(key));
    ck_assert_int_eq(key_len, 24);
    const char *payload = "{\"test\": 2432232314}";
    char got[64];
    webhook_sign_key(key, (size_t)key_len, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, payload,
                     strlen(payload), got, sizeof(got));
    ck_assert_str_eq(got, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}
END_TEST

START_TEST(test_webhook_secret_new_format)
{
    unsigned char secret[WEBHOOK_SECRET_BYTES];
    unsigned char other_secret[WEBHOOK_SECRET_BYTES];
    char text[64];
    char other_text[64];
    webhook_secret_new(secret, text, sizeof(text));
    webhook_secret_new(other_secret, other_text, sizeof(other_text));
    ck_assert_msg(strncmp(text, "whsec_", 6) == 0, "%s", text);
    ck_assert_uint_eq(strlen(text), 6 + 44);
    unsigned char decoded[64];
    ck_assert_int_eq(b64_decode(text + 6, decoded, sizeof(decoded)), WEBHOOK_SECRET_BYTES);
    ck_assert_mem_eq(decoded, secret, WEBHOOK_SECRET_BYTES);
    ck_assert_str_ne(text, other_text);
    ck_assert(memcmp(secret, other_secret, WEBHOOK_SECRET_BYTES) != 0);
}
END_TEST

/* ---- notifications for the tests ------------------------------------------------------ */

static notif_t *make_notif(uint64_t seq)
{
    static const char resource[] = "/dms/cabinets/bau/documents/4711";
    event_t event;
    memset(&event, 0, sizeof(event));
    event.seq = seq;
    event.type = EVENT_UPDATED;
    event.resource = hstr_from_cstr(resource);
    ck_assert_int_eq(path_parse(resource, strlen(resource), &event.resource_path, NULL), 0);
    event.time_ms = 1795000000123LL;
    return notif_new(&event);
}

static int refcount(notif_t *notif)
{
    return atomic_load(&notif->refcount);
}

START_TEST(test_webhook_command_free_releases_what_it_owns)
{
    notif_t *notif = make_notif(1);
    webhook_command_t *c = webhook_command_new(WEBHOOK_CMD_NOTIFY);
    ck_assert_int_eq(c->kind, WEBHOOK_CMD_NOTIFY);
    c->notif = notif_ref(notif);
    c->url = strdup("http://example.com/");
    c->spec.notification_url = strdup("http://example.com/a");
    c->spec.lifecycle_url = strdup("http://example.com/b");
    c->spec.client_state_json = strdup("\"x\"");
    c->spec.tenant_id = strdup("t");
    ck_assert_int_eq(refcount(notif), 2);
    webhook_command_free(c);
    ck_assert_int_eq(refcount(notif), 1);
    webhook_command_free(NULL);
    notif_release(notif);
}
END_TEST

/* ---- the receiver --------------------------------------------------------------------- */

#define SERVER_MAX_REQUESTS 96
#define SERVER_MAX_CONNS 16
#define SERVER_SCRIPT_MAX 8

typedef struct request {
    char method[16];
    char target[4096];
    char *head; /* the header lines */
    char *body;
    size_t body_len;
    int64_t at_ms; /* CLOCK_MONOTONIC, when the whole request had arrived */
    int status;    /* what the receiver answered */
} request_t;

typedef struct reply {
    int status;             /* 0: never answer */
    const char *header;     /* one extra header line, or NULL */
    int retry_after_date_s; /* > 0: Retry-After as an HTTP date this many seconds ahead */
} reply_t;

typedef enum validate_mode {
    VALIDATE_ECHO,
    VALIDATE_ECHO_NEWLINE,
    VALIDATE_NOT_FOUND,
} validate_mode_t;

typedef struct server {
    int listen_fd;
    int stop_fds[2];
    int port;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    request_t requests[SERVER_MAX_REQUESTS];
    size_t count;
    size_t hook_count;
    size_t life_count;
    size_t ok_hook_count; /* hook requests answered 2xx */
    size_t fail_count;    /* requests to /fail, always answered 500 */
    reply_t script[SERVER_SCRIPT_MAX];
    size_t script_len;
    int hook_default;
    validate_mode_t validate_mode;
} server_t;

typedef struct conn {
    int fd;
    char *buf;
    size_t len;
    size_t cap;
} conn_t;

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 202:
        return "Accepted";
    case 404:
        return "Not Found";
    case 410:
        return "Gone";
    case 429:
        return "Too Many Requests";
    case 503:
        return "Service Unavailable";
    default:
        return "Status";
    }
}

/* Finds a header (case-insensitive name) in a request; copies its trimmed value. */
static bool header_get(const request_t *r, const char *name, char *out, size_t cap)
{
    size_t name_len = strlen(name);
    const char *line = r->head;
    while (line != NULL && *line != '\0') {
        const char *end = strstr(line, "\r\n");
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        if (len > name_len && line[name_len] == ':' && strncasecmp(line, name, name_len) == 0) {
            const char *v = line + name_len + 1;
            while (*v == ' ') {
                v++;
            }
            size_t vlen = (size_t)(line + len - v);
            ck_assert_uint_lt(vlen, cap);
            memcpy(out, v, vlen);
            out[vlen] = '\0';
            return true;
        }
        line = end != NULL ? end + 2 : NULL;
    }
    return false;
}

static void answer(server_t *s, conn_t *c, request_t *r)
{
    char body[256] = "";
    char extra[256] = "";
    int status;
    const char *token = strstr(r->target, "validationToken=");
    pthread_mutex_lock(&s->lock);
    if (token != NULL) {
        token += strlen("validationToken=");
        size_t token_len = strcspn(token, "&#");
        switch (s->validate_mode) {
        case VALIDATE_ECHO:
            status = 200;
            snprintf(body, sizeof(body), "%.*s", (int)token_len, token);
            break;
        case VALIDATE_ECHO_NEWLINE:
            status = 200;
            snprintf(body, sizeof(body), "%.*s\n", (int)token_len, token);
            break;
        default:
            status = 404;
            break;
        }
    } else if (strncmp(r->target, "/life", 5) == 0) {
        status = 202;
        s->life_count++;
    } else if (strncmp(r->target, "/fail", 5) == 0) {
        status = 500;
        s->fail_count++;
    } else {
        size_t index = s->hook_count++;
        reply_t reply = {s->hook_default, NULL, 0};
        if (index < s->script_len) {
            reply = s->script[index];
        }
        status = reply.status;
        if (reply.header != NULL) {
            snprintf(extra, sizeof(extra), "%s\r\n", reply.header);
        } else if (reply.retry_after_date_s > 0) {
            time_t at = time(NULL) + reply.retry_after_date_s;
            struct tm tm;
            gmtime_r(&at, &tm);
            strftime(extra, sizeof(extra), "Retry-After: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        }
        if (status / 100 == 2) {
            s->ok_hook_count++;
        }
    }
    r->status = status;
    if (s->count < SERVER_MAX_REQUESTS) {
        s->requests[s->count++] = *r;
        r->head = NULL;
        r->body = NULL;
    }
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    free(r->head);
    free(r->body);
    if (status == 0) {
        return; /* a silent endpoint: the client's timeout has to end the request */
    }

    char response[1024];
    int len = snprintf(response, sizeof(response),
                       "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                       "%s\r\n%s",
                       status, reason(status), strlen(body), extra, body);
    ck_assert_int_lt(len, (int)sizeof(response));
    for (int off = 0; off < len;) {
        ssize_t n = write(c->fd, response + off, (size_t)(len - off));
        if (n <= 0) {
            return;
        }
        off += (int)n;
    }
}

/* Takes one complete request off the connection's buffer; false when none is complete. */
static bool request_take(server_t *s, conn_t *c)
{
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (end == NULL) {
        return false;
    }
    size_t head_len = (size_t)(end - c->buf);
    request_t r;
    memset(&r, 0, sizeof(r));
    char *line_end = memmem(c->buf, head_len, "\r\n", 2);
    size_t line_len = line_end != NULL ? (size_t)(line_end - c->buf) : head_len;
    char line[4200];
    ck_assert_uint_lt(line_len, sizeof(line));
    memcpy(line, c->buf, line_len);
    line[line_len] = '\0';
    ck_assert_int_eq(sscanf(line, "%15s %4095s", r.method, r.target), 2);
    r.head = line_end != NULL ? strndup(line_end + 2, head_len - line_len - 2) : strdup("");
    char value[64];
    size_t content_length = 0;
    if (header_get(&r, "Content-Length", value, sizeof(value))) {
        content_length = strtoul(value, NULL, 10);
    }
    size_t total = head_len + 4 + content_length;
    if (c->len < total) {
        free(r.head);
        return false;
    }
    r.body = malloc(content_length + 1);
    memcpy(r.body, c->buf + head_len + 4, content_length);
    r.body[content_length] = '\0';
    r.body_len = content_length;
    r.at_ms = mono_ms();
    memmove(c->buf, c->buf + total, c->len - total);
    c->len -= total;
    answer(s, c, &r);
    return true;
}

static void conn_close(conn_t *c)
{
    close(c->fd);
    free(c->buf);
    c->fd = -1;
    c->buf = NULL;
    c->len = 0;
    c->cap = 0;
}

static void *server_main(void *arg)
{
    server_t *s = arg;
    conn_t conns[SERVER_MAX_CONNS];
    for (size_t i = 0; i < SERVER_MAX_CONNS; i++) {
        conns[i] = (conn_t){-1, NULL, 0, 0};
    }
    for (;;) {
        struct pollfd pfds[2 + SERVER_MAX_CONNS];
        size_t slot_of[2 + SERVER_MAX_CONNS];
        nfds_t n = 0;
        pfds[n++] = (struct pollfd){s->stop_fds[0], POLLIN, 0};
        pfds[n++] = (struct pollfd){s->listen_fd, POLLIN, 0};
        for (size_t i = 0; i < SERVER_MAX_CONNS; i++) {
            if (conns[i].fd >= 0) {
                slot_of[n] = i;
                pfds[n++] = (struct pollfd){conns[i].fd, POLLIN, 0};
            }
        }
        if (poll(pfds, n, -1) < 0) {
            continue;
        }
        if (pfds[0].revents != 0) {
            break;
        }
        if (pfds[1].revents & POLLIN) {
            int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                size_t i = 0;
                while (i < SERVER_MAX_CONNS && conns[i].fd >= 0) {
                    i++;
                }
                if (i == SERVER_MAX_CONNS) {
                    close(fd);
                } else {
                    conns[i].fd = fd;
                }
            }
        }
        for (nfds_t k = 2; k < n; k++) {
            if (pfds[k].revents == 0) {
                continue;
            }
            conn_t *c = &conns[slot_of[k]];
            if (c->cap - c->len < 4096) {
                c->cap = c->cap == 0 ? 16384 : c->cap * 2;
                c->buf = realloc(c->buf, c->cap);
            }
            ssize_t got = read(c->fd, c->buf + c->len, c->cap - c->len);
            if (got <= 0) {
                conn_close(c);
                continue;
            }
            c->len += (size_t)got;
            while (request_take(s, c)) {
            }
        }
    }
    for (size_t i = 0; i < SERVER_MAX_CONNS; i++) {
        if (conns[i].fd >= 0) {
            conn_close(&conns[i]);
        }
    }
    return NULL;
}

static void server_start(server_t *s)
{
    memset(s, 0, sizeof(*s));
    s->hook_default = 200;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->changed, &attr);
    pthread_condattr_destroy(&attr);
    ck_assert_int_eq(pipe2(s->stop_fds, O_CLOEXEC), 0);
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(s->listen_fd, 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(s->listen_fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(s->listen_fd, 64), 0);
    socklen_t len = sizeof(sin);
    ck_assert_int_eq(getsockname(s->listen_fd, (struct sockaddr *)&sin, &len), 0);
    s->port = ntohs(sin.sin_port);
    ck_assert_int_eq(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_stop(server_t *s)
{
    ck_assert_int_eq(write(s->stop_fds[1], "x", 1), 1);
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
    close(s->stop_fds[0]);
    close(s->stop_fds[1]);
    for (size_t i = 0; i < s->count; i++) {
        free(s->requests[i].head);
        free(s->requests[i].body);
    }
    pthread_cond_destroy(&s->changed);
    pthread_mutex_destroy(&s->lock);
}

/* Waits until *counter (a field of s) reaches at least n; false after WAIT_MS. */
static bool server_wait(server_t *s, const size_t *counter, size_t n)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&s->lock);
    while (*counter < n) {
        if (pthread_cond_timedwait(&s->changed, &s->lock, &deadline) != 0) {
            break;
        }
    }
    bool reached = *counter >= n;
    pthread_mutex_unlock(&s->lock);
    return reached;
}

/* The i-th request whose target starts with prefix, or NULL. Call after a server_wait. */
static const request_t *server_nth(server_t *s, const char *prefix, size_t i)
{
    const request_t *found = NULL;
    pthread_mutex_lock(&s->lock);
    for (size_t k = 0; k < s->count; k++) {
        if (strncmp(s->requests[k].target, prefix, strlen(prefix)) == 0 && i-- == 0) {
            found = &s->requests[k];
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return found;
}

/* ---- the delivery fixture ------------------------------------------------------------- */

typedef struct fixture {
    server_t server;
    chan_t *results;
    int wake_fds[2];
    webhook_config_t config;
    webhook_t *webhook;
    unsigned char secret[WEBHOOK_SECRET_BYTES];
    char hook_url[128];
    char life_url[128];
    char fail_url[128];  /* always answers 500 */
    char check_url[128]; /* validations used as barriers */
    uint64_t barrier_id;
} fixture_t;

static void results_wake(void *ctx)
{
    fixture_t *f = ctx;
    char byte = 1;
    ssize_t n = write(f->wake_fds[1], &byte, 1);
    (void)n; /* a full pipe already means "wake up" */
}

static void result_free_item(void *item)
{
    webhook_result_free(item);
}

static fixture_t *fixture_new(void)
{
    fixture_t *f = calloc(1, sizeof(*f));
    server_start(&f->server);
    ck_assert_int_eq(pipe2(f->wake_fds, O_CLOEXEC | O_NONBLOCK), 0);
    f->results = chan_new(64, results_wake, f, result_free_item);
    webhook_config_init(&f->config);
    f->config.allow_private = true;
    f->config.first_retry_ms = 50;
    f->config.max_retry_ms = 200;
    f->config.batch_window_ms = 5;
    f->config.request_timeout_ms = 3000;
    for (size_t i = 0; i < sizeof(f->secret); i++) {
        f->secret[i] = (unsigned char)(0xa5 ^ (i * 13));
    }
    snprintf(f->hook_url, sizeof(f->hook_url), "http://127.0.0.1:%d/hook", f->server.port);
    snprintf(f->life_url, sizeof(f->life_url), "http://127.0.0.1:%d/life", f->server.port);
    snprintf(f->fail_url, sizeof(f->fail_url), "http://127.0.0.1:%d/fail", f->server.port);
    snprintf(f->check_url, sizeof(f->check_url), "http://127.0.0.1:%d/check", f->server.port);
    f->barrier_id = 1000000;
    return f;
}

static void fixture_start(fixture_t *f)
{
    struct herr err;
    f->webhook = webhook_new(&f->config, f->results, &err);
    ck_assert_msg(f->webhook != NULL, "%s", err.message);
    ck_assert_int_eq(webhook_start(f->webhook, &err), 0);
}

static void fixture_free(fixture_t *f)
{
    webhook_stop(f->webhook, 1000);
    webhook_free(f->webhook);
    server_stop(&f->server);
    chan_free(f->results);
    close(f->wake_fds[0]);
    close(f->wake_fds[1]);
    free(f);
}

static webhook_result_t *result_wait(fixture_t *f)
{
    int64_t end = mono_ms() + WAIT_MS;
    for (;;) {
        void *item;
        if (chan_drain(f->results, &item, 1) == 1) {
            return item;
        }
        int64_t left = end - mono_ms();
        if (left <= 0) {
            return NULL;
        }
        struct pollfd p = {f->wake_fds[0], POLLIN, 0};
        if (poll(&p, 1, (int)left) > 0) {
            char drain[64];
            ssize_t n = read(f->wake_fds[0], drain, sizeof(drain));
            (void)n;
        }
    }
}

/* A TARGET_PUT; position and is_behind count only when it creates the target. */
static void send_target_at(fixture_t *f, const char *id, const char *url,
                           const char *client_state_json, const unsigned char *secret,
                           uint64_t position, bool is_behind)
{
    webhook_command_t *c = webhook_command_new(WEBHOOK_CMD_TARGET_PUT);
    snprintf(c->spec.subscription_id, sizeof(c->spec.subscription_id), "%s", id);
    c->spec.notification_url = strdup(url);
    c->spec.lifecycle_url = strdup(f->life_url);
    c->spec.client_state_json = client_state_json != NULL ? strdup(client_state_json) : NULL;
    snprintf(c->spec.expiration, sizeof(c->spec.expiration), "2030-01-01T00:00:00.0000000Z");
    memcpy(c->spec.secret, secret, WEBHOOK_SECRET_BYTES);
    c->spec.tenant_id = strdup("city");
    c->spec.position = position;
    c->spec.is_behind = is_behind;
    webhook_send(f->webhook, &c);
    ck_assert_ptr_null(c);
}

static void send_target(fixture_t *f, const char *id, const char *url,
                        const char *client_state_json, const unsigned char *secret)
{
    send_target_at(f, id, url, client_state_json, secret, 0, false);
}

/* Queues notif (one reference taken) for subscription id. */
static void send_notif(fixture_t *f, const char *id, notif_t *notif)
{
    webhook_command_t *c = webhook_command_new(WEBHOOK_CMD_NOTIFY);
    snprintf(c->spec.subscription_id, sizeof(c->spec.subscription_id), "%s", id);
    c->notif = notif;
    webhook_send(f->webhook, &c);
}

static void send_new_notif(fixture_t *f, const char *id, uint64_t seq)
{
    send_notif(f, id, make_notif(seq));
}

static void send_lifecycle(fixture_t *f, const char *id, const char *event)
{
    webhook_command_t *c = webhook_command_new(WEBHOOK_CMD_LIFECYCLE);
    snprintf(c->spec.subscription_id, sizeof(c->spec.subscription_id), "%s", id);
    c->spec.lifecycle_url = strdup(f->life_url);
    c->spec.client_state_json = strdup("\"s3cret\"");
    c->spec.tenant_id = strdup("city");
    snprintf(c->spec.expiration, sizeof(c->spec.expiration), "2030-01-01T00:00:00.0000000Z");
    memcpy(c->spec.secret, f->secret, WEBHOOK_SECRET_BYTES);
    c->lifecycle_event = event;
    webhook_send(f->webhook, &c);
}

static void send_validate(fixture_t *f, uint64_t request_id, const char *url, const char *name)
{
    webhook_command_t *c = webhook_command_new(WEBHOOK_CMD_VALIDATE);
    c->request_id = request_id;
    c->url = strdup(url);
    c->url_name = name;
    webhook_send(f->webhook, &c);
}

/* A REPLAY chunk for subscription id: the count notifs (one reference each, taken). */
static void send_replay(fixture_t *f, const char *id, notif_t **notifs, size_t count,
                        uint64_t scanned_seq, bool is_at_end)
{
    webhook_command_t *c = webhook_command_new(WEBHOOK_CMD_REPLAY);
    snprintf(c->spec.subscription_id, sizeof(c->spec.subscription_id), "%s", id);
    c->notifs = calloc(count > 0 ? count : 1, sizeof(*c->notifs));
    for (size_t i = 0; i < count; i++) {
        c->notifs[i] = notifs[i];
    }
    c->notif_count = count;
    c->scanned_seq = scanned_seq;
    c->is_at_end = is_at_end;
    webhook_send(f->webhook, &c);
}

static void send_mark(fixture_t *f, uint64_t seq)
{
    webhook_command_t *c = webhook_command_new(WEBHOOK_CMD_MARK);
    c->mark_seq = seq;
    webhook_send(f->webhook, &c);
}

/* The next result, which must be of the given kind (the caller releases it). */
static webhook_result_t *result_expect(fixture_t *f, webhook_result_kind_t kind)
{
    webhook_result_t *result = result_wait(f);
    ck_assert_msg(result != NULL, "no result of kind %d", (int)kind);
    ck_assert_int_eq(result->kind, kind);
    return result;
}

/* Sends a validation and returns the results that came before its answer (at most cap;
 * the rest are released). Commands run in order and results are pushed in order, so a
 * result that running the earlier commands produced arrives before the answer; the caller
 * must know that no transfer could push one meanwhile. */
static size_t results_before_barrier(fixture_t *f, webhook_result_t **out, size_t cap)
{
    uint64_t id = ++f->barrier_id;
    send_validate(f, id, f->check_url, NULL);
    size_t count = 0;
    for (;;) {
        webhook_result_t *result = result_wait(f);
        ck_assert_msg(result != NULL, "no answer to the barrier %llu", (unsigned long long)id);
        if (result->kind == WEBHOOK_RESULT_VALIDATED && result->request_id == id) {
            ck_assert_msg(result->code == 0, "%s", result->message);
            webhook_result_free(result);
            return count;
        }
        if (count < cap) {
            out[count++] = result;
        } else {
            webhook_result_free(result);
        }
    }
}

/* Asserts that no result is waiting behind the commands sent so far. */
static void assert_no_result(fixture_t *f)
{
    webhook_result_t *results[4];
    size_t count = results_before_barrier(f, results, 4);
    for (size_t i = 0; i < count; i++) {
        ck_assert_msg(false, "unexpected result of kind %d for %s (seq %llu)",
                      (int)results[i]->kind, results[i]->subscription_id,
                      (unsigned long long)results[i]->seq);
    }
}

/* The position reported for id in a POSITIONS result; false when id is not in it. */
static bool position_of(const webhook_result_t *result, const char *id, uint64_t *seq)
{
    ck_assert_int_eq(result->kind, WEBHOOK_RESULT_POSITIONS);
    for (size_t i = 0; i < result->position_count; i++) {
        if (strcmp(result->positions[i].subscription_id, id) == 0) {
            *seq = result->positions[i].seq;
            return true;
        }
    }
    return false;
}

/* Checks the Standard Webhooks headers of a signed request; returns its webhook-id. */
static void assert_signed(const request_t *r, const unsigned char *secret, char id[64])
{
    char timestamp[32];
    char signature[128];
    char want[64];
    ck_assert_msg(header_get(r, "webhook-id", id, 64), "no webhook-id");
    ck_assert_msg(header_get(r, "webhook-timestamp", timestamp, sizeof(timestamp)),
                  "no webhook-timestamp");
    ck_assert_msg(header_get(r, "webhook-signature", signature, sizeof(signature)),
                  "no webhook-signature");
    ck_assert_uint_eq(strlen(id), 4 + 32);
    ck_assert_msg(strncmp(id, "msg_", 4) == 0, "%s", id);
    for (size_t i = 4; i < strlen(id); i++) {
        ck_assert_msg(isxdigit((unsigned char)id[i]) && !isupper((unsigned char)id[i]), "%s", id);
    }
    for (const char *p = timestamp; *p != '\0'; p++) {
        ck_assert_msg(isdigit((unsigned char)*p), "timestamp %s", timestamp);
    }
    /* Wall-clock seconds, not the monotonic clock: near now. */
    long long ts = atoll(timestamp);
    long long now = (long long)time(NULL);
    ck_assert_msg(ts > now - 300 && ts < now + 300, "timestamp %s vs now %lld", timestamp, now);
    expected_signature(secret, WEBHOOK_SECRET_BYTES, id, timestamp, r->body, r->body_len, want);
    ck_assert_str_eq(signature, want);
}

static json_t *body_json(const request_t *r)
{
    json_error_t jerr;
    json_t *root = json_loadb(r->body, r->body_len, 0, &jerr);
    ck_assert_msg(root != NULL, "body is not JSON: %s", jerr.text);
    ck_assert(json_is_array(json_object_get(root, "value")));
    return root;
}

/* The item ids of a delivery, in order, as sequence numbers of subscription sub. */
static size_t body_seqs(const request_t *r, const char *sub, uint64_t *seqs, size_t cap)
{
    json_t *root = body_json(r);
    json_t *value = json_object_get(root, "value");
    size_t count = json_array_size(value);
    ck_assert_uint_le(count, cap);
    for (size_t i = 0; i < count; i++) {
        json_t *item = json_array_get(value, i);
        ck_assert_str_eq(json_string_value(json_object_get(item, "subscriptionId")), sub);
        const char *id = json_string_value(json_object_get(item, "id"));
        ck_assert_ptr_nonnull(id);
        ck_assert_msg(strncmp(id, sub, strlen(sub)) == 0 && id[strlen(sub)] == '-', "%s", id);
        seqs[i] = strtoull(id + strlen(sub) + 1, NULL, 10);
    }
    json_decref(root);
    return count;
}

#define SUB "0b6e4a1e-8f3c-4d7a-9a51-3f1f6a0c2d11"
#define SUB2 "5c0d9f2a-7e41-4b3c-8d6e-1a2b3c4d5e6f"
#define SUB3 "9e8d7c6b-5a49-4382-a716-f5e4d3c2b1a0"

/* The items of every 2xx delivery to path, in the order they arrived. */
static size_t delivered_seqs(fixture_t *f, const char *path, const char *sub, uint64_t *seqs,
                             size_t cap)
{
    size_t count = 0;
    const request_t *r;
    for (size_t i = 0; (r = server_nth(&f->server, path, i)) != NULL; i++) {
        if (r->status / 100 == 2) {
            count += body_seqs(r, sub, seqs + count, cap - count);
        }
    }
    return count;
}

START_TEST(test_webhook_delivers_a_signed_batch)
{
    fixture_t *f = fixture_new();
    /* A window far longer than the test: the batch goes because it is full. */
    f->config.max_batch_items = 3;
    f->config.batch_window_ms = 60000;
    fixture_start(f);
    send_target(f, SUB, f->hook_url, "\"s3cret\"", f->secret);
    for (uint64_t seq = 1; seq <= 3; seq++) {
        send_new_notif(f, SUB, seq);
    }
    ck_assert(server_wait(&f->server, &f->server.hook_count, 1));
    const request_t *r = server_nth(&f->server, "/hook", 0);
    ck_assert_str_eq(r->method, "POST");
    ck_assert_str_eq(r->target, "/hook");
    char value[256];
    ck_assert(header_get(r, "Content-Type", value, sizeof(value)));
    ck_assert_str_eq(value, "application/json");
    ck_assert(header_get(r, "User-Agent", value, sizeof(value)));
    ck_assert_str_eq(value, "herold");
    ck_assert(!header_get(r, "Expect", value, sizeof(value)));
    char id[64];
    assert_signed(r, f->secret, id);

    json_t *root = body_json(r);
    json_t *items = json_object_get(root, "value");
    ck_assert_uint_eq(json_array_size(items), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *item = json_array_get(items, i);
        char want_id[64];
        snprintf(want_id, sizeof(want_id), "%s-%zu", SUB, i + 1);
        ck_assert_str_eq(json_string_value(json_object_get(item, "id")), want_id);
        ck_assert_str_eq(json_string_value(json_object_get(item, "subscriptionId")), SUB);
        ck_assert_str_eq(json_string_value(json_object_get(item, "clientState")), "s3cret");
        ck_assert_str_eq(json_string_value(json_object_get(item, "subscriptionExpirationDateTime")),
                         "2030-01-01T00:00:00.0000000Z");
        ck_assert_str_eq(json_string_value(json_object_get(item, "resource")),
                         "/dms/cabinets/bau/documents/4711");
    }
    json_decref(root);
    fixture_free(f);
}
END_TEST

START_TEST(test_webhook_batches_never_exceed_max_and_keep_order)
{
    fixture_t *f = fixture_new();
    f->config.max_batch_items = 2;
    fixture_start(f);
    send_target(f, SUB, f->hook_url, NULL, f->secret);
    for (uint64_t seq = 1; seq <= 5; seq++) {
        send_new_notif(f, SUB, seq);
    }
    uint64_t next = 1;
    for (size_t i = 0; next <= 5; i++) {
        ck_assert_msg(server_wait(&f->server, &f->server.hook_count, i + 1), "item %llu missing",
                      (unsigned long long)next);
        uint64_t seqs[8];
        size_t count = body_seqs(server_nth(&f->server, "/hook", i), SUB, seqs, 8);
        ck_assert_uint_ge(count, 1);
        ck_assert_uint_le(count, 2);
        for (size_t k = 0; k < count; k++) {
            ck_assert_uint_eq(seqs[k], next++);
        }
    }
    fixture_free(f);
}
END_TEST

START_TEST(test_webhook_retry_keeps_id_and_body)
{
    fixture_t *f = fixture_new();
    f->server.script[0] = (reply_t){503, NULL, 0};
    f->server.script[1] = (reply_t){200, NULL, 0};
    f->server.script_len = 2;
    fixture_start(f);
    send_target(f, SUB, f->hook_url, "\"s3cret\"", f->secret);
    send_new_notif(f, SUB, 7);
    ck_assert(server_wait(&f->server, &f->server.ok_hook_count, 1));
    const request_t *first = server_nth(&f->server, "/hook", 0);
    const request_t *second = server_nth(&f->server, "/hook", 1);
    ck_assert_ptr_nonnull(second);
    ck_assert_int_eq(first->status, 503);
    ck_assert_int_eq(second->status, 200);
    char first_id[64];
    char second_id[64];
    assert_signed(first, f->secret, first_id);
    assert_signed(second, f->secret, second_id);
    ck_assert_str_eq(first_id, second_id);
    ck_assert_uint_eq(first->body_len, second->body_len);
    ck_assert_mem_eq(first->body, second->body, first->body_len);
    fixture_free(f);
}
END_TEST

START_TEST(test_webhook_retry_after_seconds_is_honoured)
{
    fixture_t *f = fixture_new();
    f->config.max_retry_ms = 5000; /* above the Retry-After, which stays inside it */
    f->server.script[0] = (reply_t){503, "Retry-After: 1", 0};
    f->server.script_len = 1;
    fixture_start(f);
    send_target(f, SUB, f->hook_url, NULL, f->secret);
    send_new_notif(f, SUB, 1);
    ck_assert(server_wait(&f->server, &f->server.ok_hook_count, 1));
    const request_t *first = server_nth(&f->server, "/hook", 0);
    const request_t *second = server_nth(&f->server, "/hook", 1);
    ck_assert_int_eq(first->status, 503);
    ck_assert_int_eq(second->status, 200);
    /* Without Retry-After the retry would come within first_retry_ms (50 ms). */
    ck_assert_int_ge(second->at_ms - first->at_ms, 1000);
    fixture_free(f);
}
END_TEST

START_TEST(test_webhook_retry_after_date_is_honoured)
{
    fixture_t *f = fixture_new();
    /* An HTTP date two whole seconds ahead is at least one second away when read. */
    f->server.script[0] = (reply_t){429, NULL, 2};
    f->server.script_len = 1;
    fixture_start(f);
    send_target(f, SUB, f->hook_url, NULL, f->secret);
    send_new_notif(f, SUB, 1);
    ck_assert(server_wait(&f->server, &f->server.ok_hook_count, 1));
    const request_t *first = server_nth(&f->server, "/hook", 0);
    const request_t *second = server_nth(&f->server, "/hook", 1);
    ck_assert_int_eq(first->status, 429);
    ck_assert_int_ge(second->at_ms - first->at_ms, 1000);
    fixture_free(f);
}
END_TEST

/* How many lifecycle posts received so far were `missed`. */
static size_t missed_count(fixture_t *f)
{
    size_t missed = 0;
    const request_t *r;
    for (size_t i = 0; (r = server_nth(&f->server, "/life", i)) != NULL; i++) {
        if (strstr(r->body, "\"lifecycleEvent\":\"missed\"") != NULL) {
            missed++;
        }
    }
    return missed;
}

/* Any 2xx is a delivery, anything else is not: 300 is retried, 299 ends the batch. */
START_TEST(test_webhook_status_edges_of_2xx)
{
    fixture_t *f = fixture_new();
    f->server.script[0] = (reply_t){300, NULL, 0};
    f->server.script[1] = (reply_t){299, NULL, 0};
    f->server.script_len = 2;
    fixture_start(f);
    send_target(f, SUB, f->hook_url, NULL, f->secret);
    send_new_notif(f, SUB, 1);
    ck_assert(server_wait(&f->server, &f->server.ok_hook_count, 1));
    send_new_notif(f, SUB, 2);
    ck_assert(server_wait(&f->server, &f->server.ok_hook_count, 2));
    uint64_t seqs[4];
    ck_assert_uint_eq(body_seqs(server_nth(&f->server, "/hook", 0), SUB, seqs, 4), 1);
    ck_assert_uint_eq(seqs[0], 1);
    ck_assert_uint_eq(body_seqs(server_nth(&f->server, "/hook", 1), SUB, seqs, 4), 1);
    ck_assert_uint_eq(seqs[0], 1);
    /* Not a third attempt at item 1: 299 counted as delivered. */
    ck_assert_uint_eq(body_seqs(server_nth(&f->server, "/hook", 2), SUB, seqs, 4), 1);
    ck_assert_uint_eq(seqs[0], 2);
    fixture_free(f);
}
END_TEST

/* A request that gets no answer within request_timeout_ms is a failed attempt. */
START_TEST(test_webhook_request_timeout_is_retried)
{
    fixture_t *f = fixture_new();
    f->config.request_timeout_ms = 200;
    f->server.script[0] = (reply_t){0, NULL, 0};
    f->server.script_len = 1;
    fixture_start(f);
    send_target(f, SUB, f->hook_url, NULL, f->secret);
    send_new_notif(f, SUB, 1);
    ck_assert(server_wait(&f->server, &f->server.ok_hook_count, 1));
    const request_t *first = server_nth(&f->server, "/hook", 0);
    const request_t *second = server_nth(&f->server, "/hook", 1);
    ck_assert_int_eq(first->status, 0);
    ck_assert_int_eq(second->status, 200);
    char first_id[64];
    char second_id[64];
    assert_signed(first, f->secret, first_id);
    assert_signed(second, f->secret, second_id);
    ck_assert_str_eq(first_id, second_id);
    fixture_free(f);
}
END_TEST

/* Retry-After beyond max_retry_ms: the backoff cap does not cut it (the retry would
 * otherwise come within 200 ms); the endpoint's wait is honoured (it is bounded only by
 * WEBHOOK_MAX_RETRY_AFTER_MS), and nothing is given up meanwhile. */
START_TEST(test_webhook_retry_after_beyond_max_retry_is_honoured)
{
    fixture_t *f = fixture_new();
    ck_assert_int_lt(f->config.max_retry_ms, 1000);
    f->server.script[0] = (reply_t){503, "Retry-After: 1", 0};
    f->server.script_len = 1;
    fixture_start(f);
    send_target(f, SUB, f->hook_url, NULL, f->secret);
    send_new_notif(f, SUB, 1);
    ck_assert(server_wait(&f->server, &f->server.ok_hook_count, 1));
    const request_t *first = server_nth(&f->server, "/hook", 0);
    const request_t *second = server_nth(&f->server, "/hook", 1);
    ck_assert_int_eq(first->status, 503);
    ck_assert_int_eq(second->status, 200);
    ck_assert_int_ge(second->at_ms - first->at_ms, 1000);
    char first_id[64];
    char second_id[64];
    assert_signed(first, f->secret, first_id);
    assert_signed(second, f->secret, second_id);
    ck_assert_str_eq(first_id, second_id);
    /* The only lifecycle post is this marker: nothing was given up. */
    send_lifecycle(f, SUB, "reauthorizationRequired");
    ck_assert(server_wait(&f->server, &f->server.life_count, 1));
    pthread_mutex_lock(&f->server.lock);
    ck_assert_uint_eq(f->server.life_count, 1);
    ck_assert_uint_eq(f->server.hook_count, 2);
    pthread_mutex_unlock(&f->server.lock);
    ck_assert_uint_eq(missed_count(f), 0);
    fixture_free(f);
}
END_TEST

START_TEST(test_webhook_gone_is_reported)
{
    fixture_t *f = fixture_new();
    f->server.script[0] = (reply_t){410, NULL, 0};
    f->server.script_len = 1;
    fixture_start(f);
    send_target(f, SUB, f->hook_url, NULL, f->secret);
    send_new_notif(f, SUB, 1);
    webhook_result_t *result = result_wait(f);
    ck_assert_ptr_nonnull(result);
    ck_assert_int_eq(result->kind, WEBHOOK_RESULT_GONE);
    ck_assert_str_eq(result->subscription_id, SUB);
    webhook_result_free(result);
    /* What the service thread does next: notifications already on their way, then removal. */
    notif_t *late = make_notif(2);
    send_notif(f, SUB, notif_ref(late));
    webhook_command_t *c = webhook_command_new(WEBHOOK_CMD_TARGET_REMOVE);
    snprintf(c->spec.subscription_id, sizeof(c->spec.subscription_id), "%s", SUB);
    webhook_send(f->webhook, &c);
    fixture_free(f);
    ck_assert_int_eq(refcount(late), 1);
    notif_release(late);
}
END_TEST

/* A failing batch is retried for as long as it takes, under one webhook-id; once the
 * endpoint answers, the batch and the item queued behind it arrive, in order, and no
 * `missed` lifecycle notification was ever sent. */
START_TEST(test_webhook_retries_a_failing_batch_until_it_is_delivered)
{
    fixture_t *f = fixture_new();
    f->config.first_retry_ms = 20;
    f->config.max_retry_ms = 40;
    f->server.hook_default = 500;
    fixture_start(f);
    send_target(f, SUB, f->hook_url, "\"s3cret\"", f->secret);
    send_new_notif(f, SUB, 1);
    ck_assert(server_wait(&f->server, &f->server.hook_count, 1));
    /* Queued behind the failing batch. */
    send_new_notif(f, SUB, 2);
    const size_t failures = 8;
    ck_assert(server_wait(&f->server, &f->server.hook_count, failures));
    pthread_mutex_lock(&f->server.lock);
    f->server.hook_default = 200;
    pthread_mutex_unlock(&f->server.lock);
    ck_assert(server_wait(&f->server, &f->server.ok_hook_count, 2));
    send_lifecycle(f, SUB, "reauthorizationRequired");
    ck_assert(server_wait(&f->server, &f->server.life_count, 1));

    char batch_id[64];
    assert_signed(server_nth(&f->server, "/hook", 0), f->secret, batch_id);
    size_t attempts = 0;
    size_t failed = 0;
    const request_t *r;
    for (size_t i = 0; (r = server_nth(&f->server, "/hook", i)) != NULL; i++) {
        char id[64];
        uint64_t seqs[4];
        assert_signed(r, f->secret, id);
        ck_assert_uint_eq(body_seqs(r, SUB, seqs, 4), 1);
        if (seqs[0] == 1) {
            /* Every attempt at item 1 comes before item 2 and under the first id. */
            ck_assert_uint_eq(attempts, i);
            ck_assert_str_eq(id, batch_id);
            failed += r->status == 500;
            attempts++;
        } else {
            ck_assert_uint_eq(seqs[0], 2);
            ck_assert_str_ne(id, batch_id);
            ck_assert_int_eq(r->status, 200);
        }
    }
    ck_assert_uint_ge(failed, failures);
    ck_assert_uint_eq(attempts, failed + 1);
    uint64_t seqs[4];
    ck_assert_uint_eq(delivered_seqs(f, "/hook", SUB, seqs, 4), 2);
    ck_assert_uint_eq(seqs[0], 1);
    ck_assert_uint_eq(seqs[1], 2);
    ck_assert_uint_eq(missed_count(f), 0);
    pthread_mutex_lock(&f->server.lock);
    ck_assert_uint_eq(f->server.life_count, 1);
    pthread_mutex_unlock(&f->server.lock);
    fixture_free(f);
}
END_TEST

START_TEST(test_webhook_lifecycle_command_posts_signed_event)
{
    fixture_t *f = fixture_new();
    fixture_start(f);
    send_lifecycle(f, SUB, "subscriptionRemoved");
    ck_assert(server_wait(&f->server, &f->server.life_count, 1));
    const request_t *life = server_nth(&f->server, "/life", 0);
    char id[64];
    char value[64];
    assert_signed(life, f->secret, id);
    ck_assert(header_get(life, "Content-Type", value, sizeof(value)));
    ck_assert_str_eq(value, "application/json");
    json_t *root = body_json(life);
    ck_assert_uint_eq(json_array_size(json_object_get(root, "value")), 1);
    json_t *item = json_array_get(json_object_get(root, "value"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(item, "lifecycleEvent")),
                     "subscriptionRemoved");
    ck_assert_str_eq(json_string_value(json_object_get(item, "subscriptionId")), SUB);
    ck_assert_str_eq(json_string_value(json_object_get(item, "tenantId")), "city");
    ck_assert_str_eq(json_string_value(json_object_get(item, "clientState")), "s3cret");
    json_decref(root);
    fixture_free(f);
}
END_TEST

/* A queue holds exactly WEBHOOK_MAX_QUEUED_ITEMS; one more drops it all and the target goes
 * behind: it takes no more live items and, once its batch is delivered, asks once for
 * the items after the last one it took. */
START_TEST(test_webhook_queue_overflow_goes_behind_and_asks_once)
{
    fixture_t *f = fixture_new();
    f->config.max_batch_items = 1;
    f->server.hook_default = 500;
    fixture_start(f);
    send_target(f, SUB, f->hook_url, NULL, f->secret);
    notif_t *first = make_notif(1);
    notif_t *second = make_notif(2);
    notif_t *rest = make_notif(3);
    notif_t *over = make_notif(10002);
    notif_t *late = make_notif(10003);
    /* Item 1 becomes the failing batch (a full batch goes at once); 2 and the rest fill
     * the queue to exactly the limit. */
    send_notif(f, SUB, notif_ref(first));
    send_notif(f, SUB, notif_ref(second));
    for (int i = 0; i < WEBHOOK_MAX_QUEUED_ITEMS - 1; i++) {
        send_notif(f, SUB, notif_ref(rest));
    }
    /* Commands run in order: when this marker arrives, all of the above were queued. */
    send_lifecycle(f, SUB, "reauthorizationRequired");
    ck_assert(server_wait(&f->server, &f->server.life_count, 1));
    ck_assert_int_eq(refcount(first), 1); /* its batch body was built; the ref went then */
    ck_assert_int_eq(refcount(second), 2);
    ck_assert_int_eq(refcount(rest), WEBHOOK_MAX_QUEUED_ITEMS);

    send_notif(f, SUB, notif_ref(over));
    send_notif(f, SUB, notif_ref(late)); /* behind: dropped */
    send_lifecycle(f, SUB, "reauthorizationRequired");
    ck_assert(server_wait(&f->server, &f->server.life_count, 2));
    ck_assert_int_eq(refcount(second), 1);
    ck_assert_int_eq(refcount(rest), 1);
    ck_assert_int_eq(refcount(over), 1);
    ck_assert_int_eq(refcount(late), 1);
    /* The batch still fails: no WANT before it is delivered. */
    ck_assert(server_wait(&f->server, &f->server.hook_count, 2));
    ck_assert_uint_eq(chan_length(f->results), 0);

    pthread_mutex_lock(&f->server.lock);
    f->server.hook_default = 200;
    pthread_mutex_unlock(&f->server.lock);
    webhook_result_t *want = result_expect(f, WEBHOOK_RESULT_WANT);
    ck_assert_str_eq(want->subscription_id, SUB);
    ck_assert_uint_eq(want->seq, 1);
    webhook_result_free(want);
    send_new_notif(f, SUB, 10004); /* still behind: dropped */
    assert_no_result(f);
    ck_assert_uint_eq(missed_count(f), 0);

    /* Only item 1 ever arrived, and once. */
    uint64_t seqs[4];
    ck_assert_uint_eq(delivered_seqs(f, "/hook", SUB, seqs, 4), 1);
    ck_assert_uint_eq(seqs[0], 1);
    const request_t *r;
    for (size_t i = 0; (r = server_nth(&f->server, "/hook", i)) != NULL; i++) {
        ck_assert_uint_eq(body_seqs(r, SUB, seqs, 4), 1);
        ck_assert_uint_eq(seqs[0], 1);
    }
    fixture_free(f);
    notif_release(first);
    notif_release(second);
    notif_release(rest);
    notif_release(over);
    notif_release(late);
}
END_TEST

/* REPLAY chunks: a chunk is delivered without what was taken already, then the target asks
 * from the chunk's scanned end; the chunk at the end makes it live again. */
START_TEST(test_webhook_replay_chunks_until_live)
{
    fixture_t *f = fixture_new();
    fixture_start(f);
    send_target_at(f, SUB, f->hook_url, NULL, f->secret, 10, true);
    webhook_result_t *want = result_expect(f, WEBHOOK_RESULT_WANT);
    ck_assert_uint_eq(want->seq, 10);
    webhook_result_free(want);

    /* 10 is the taken seq: it is not delivered again, 11 is. */
    notif_t *old = make_notif(10);
    notif_t *chunk1[3] = {notif_ref(old), make_notif(11), make_notif(12)};
    send_replay(f, SUB, chunk1, 3, 20, false);
    ck_assert(server_wait(&f->server, &f->server.ok_hook_count, 1));
    uint64_t seqs[8];
    ck_assert_uint_eq(body_seqs(server_nth(&f->server, "/hook", 0), SUB, seqs, 8), 2);
    ck_assert_uint_eq(seqs[0], 11);
    ck_assert_uint_eq(seqs[1], 12);
    ck_assert_int_eq(refcount(old), 1);
    want = result_expect(f, WEBHOOK_RESULT_WANT);
    ck_assert_str_eq(want->subscription_id, SUB);
    ck_assert_uint_eq(want->seq, 20);
    webhook_result_free(want);

    /* Behind: a live item is dropped (the store has it). */
    notif_t *live = make_notif(15);
    send_notif(f, SUB, notif_ref(live));
    /* The last chunk repeats 12, the highest seq taken: it is not delivered twice. */
    notif_t *again = make_notif(12);
    notif_t *chunk2[2] = {notif_ref(again), make_notif(21)};
    send_replay(f, SUB, chunk2, 2, 25, true);
    ck_assert(server_wait(&f->server, &f->server.ok_hook_count, 2));
    ck_assert_int_eq(refcount(live), 1);
    ck_assert_int_eq(refcount(again), 1);

    /* Live again: a NOTIFY is delivered, and a REPLAY nobody asked for is dropped. */
    send_new_notif(f, SUB, 30);
    ck_assert(server_wait(&f->server, &f->server.ok_hook_count, 3));
    notif_t *unasked = make_notif(40);
    notif_t *chunk3[1] = {notif_ref(unasked)};
    send_replay(f, SUB, chunk3, 1, 45, true);
    assert_no_result(f);
    ck_assert_int_eq(refcount(unasked), 1);

    ck_assert_uint_eq(delivered_seqs(f, "/hook", SUB, seqs, 8), 4);
    ck_assert_uint_eq(seqs[0], 11);
    ck_assert_uint_eq(seqs[1], 12);
    ck_assert_uint_eq(seqs[2], 21);
    ck_assert_uint_eq(seqs[3], 30);
    pthread_mutex_lock(&f->server.lock);
    ck_assert_uint_eq(f->server.hook_count, 3);
    pthread_mutex_unlock(&f->server.lock);
    fixture_free(f);
    notif_release(old);
    notif_release(live);
    notif_release(again);
    notif_release(unasked);
}
END_TEST

/* A target created behind asks at once from its position and delivers nothing; one
 * created live does not ask. */
START_TEST(test_webhook_target_created_behind_asks_from_its_position)
{
    fixture_t *f = fixture_new();
    fixture_start(f);
    send_target_at(f, SUB2, f->hook_url, NULL, f->secret, 7, false);
    send_target_at(f, SUB, f->hook_url, NULL, f->secret, 42, true);
    webhook_result_t *results[4];
    size_t count = results_before_barrier(f, results, 4);
    ck_assert_uint_eq(count, 1);
    ck_assert_int_eq(results[0]->kind, WEBHOOK_RESULT_WANT);
    ck_assert_str_eq(results[0]->subscription_id, SUB);
    ck_assert_uint_eq(results[0]->seq, 42);
    webhook_result_free(results[0]);
    pthread_mutex_lock(&f->server.lock);
    ck_assert_uint_eq(f->server.hook_count, 0);
    pthread_mutex_unlock(&f->server.lock);
    fixture_free(f);
}
END_TEST

/* Sends MARK seq until a POSITIONS result comes back: a batch's success reaches the
 * delivery thread a little after the receiver has answered it. */
static webhook_result_t *mark_until_positions(fixture_t *f, uint64_t seq)
{
    int64_t end = mono_ms() + WAIT_MS;
    while (mono_ms() < end) {
        send_mark(f, seq);
        webhook_result_t *results[4];
        size_t count = results_before_barrier(f, results, 4);
        ck_assert_uint_le(count, 1);
        if (count == 1) {
            ck_assert_int_eq(results[0]->kind, WEBHOOK_RESULT_POSITIONS);
            return results[0];
        }
    }
    ck_abort_msg("no POSITIONS result after MARK %llu", (unsigned long long)seq);
    return NULL;
}

/* MARK moves every idle live target to the mark; a target with a batch that fails, or one
 * behind, stays at what it has delivered; a delivered batch moves its target to its
 * highest seq; only moved positions are reported, and nothing when none moved. */
START_TEST(test_webhook_mark_reports_moved_positions)
{
    fixture_t *f = fixture_new();
    f->config.max_retry_ms = 100;
    /* Batches go only when full: 7 and 8 travel together. */
    f->config.max_batch_items = 2;
    f->config.batch_window_ms = 60000;
    fixture_start(f);
    send_target_at(f, SUB, f->hook_url, NULL, f->secret, 0, false);
    send_target_at(f, SUB2, f->fail_url, NULL, f->secret, 3, false);
    send_target_at(f, SUB3, f->hook_url, NULL, f->secret, 2, true);
    webhook_result_t *want = result_expect(f, WEBHOOK_RESULT_WANT);
    ck_assert_str_eq(want->subscription_id, SUB3);
    webhook_result_free(want);
    send_new_notif(f, SUB2, 4);
    send_new_notif(f, SUB2, 5);
    ck_assert(server_wait(&f->server, &f->server.fail_count, 1));

    send_mark(f, 5);
    webhook_result_t *results[4];
    ck_assert_uint_eq(results_before_barrier(f, results, 4), 1);
    uint64_t seq = 0;
    ck_assert_uint_eq(results[0]->position_count, 1);
    ck_assert(position_of(results[0], SUB, &seq));
    ck_assert_uint_eq(seq, 5);
    webhook_result_free(results[0]);

    /* The mark equal to every idle live position moves nothing: no result. */
    send_mark(f, 5);
    assert_no_result(f);

    /* A batch above the mark: its highest seq, not the (lower) mark. */
    send_new_notif(f, SUB, 7);
    send_new_notif(f, SUB, 8);
    ck_assert(server_wait(&f->server, &f->server.ok_hook_count, 1));
    webhook_result_t *moved = mark_until_positions(f, 6);
    ck_assert_uint_eq(moved->position_count, 1);
    ck_assert(position_of(moved, SUB, &seq));
    ck_assert_uint_eq(seq, 8);
    webhook_result_free(moved);
    uint64_t seqs[4];
    ck_assert_uint_eq(delivered_seqs(f, "/hook", SUB, seqs, 4), 2);

    /* Just above the position moves it again; the failing and the behind target stay. */
    send_mark(f, 9);
    ck_assert_uint_eq(results_before_barrier(f, results, 4), 1);
    ck_assert_uint_eq(results[0]->position_count, 1);
    ck_assert(position_of(results[0], SUB, &seq));
    ck_assert_uint_eq(seq, 9);
    ck_assert(!position_of(results[0], SUB2, &seq));
    ck_assert(!position_of(results[0], SUB3, &seq));
    webhook_result_free(results[0]);
    ck_assert(server_wait(&f->server, &f->server.fail_count, 2));
    send_mark(f, 9);
    assert_no_result(f);
    fixture_free(f);
}
END_TEST

/* Drains the results channel on its own thread, from a while after it starts (until then
 * the delivery thread stays blocked on the full channel), keeping every result. */
struct late_drainer {
    fixture_t *f;
    atomic_bool is_done;
    webhook_result_t *results[16];
    size_t count;
};

static void *drain_late(void *arg)
{
    struct late_drainer *d = arg;
    usleep(200 * 1000);
    for (;;) {
        bool is_done = atomic_load(&d->is_done);
        void *item;
        while (chan_drain(d->f->results, &item, 1) == 1) {
            if (d->count < sizeof(d->results) / sizeof(d->results[0])) {
                d->results[d->count++] = item;
            } else {
                webhook_result_free(item);
            }
        }
        if (is_done) {
            return NULL;
        }
        usleep(1000);
    }
}

/* Releases result, asserting that it is not a POSITIONS result that moves id. */
static void assert_not_moved(webhook_result_t *result, const char *id)
{
    uint64_t seq;
    if (result != NULL && result->kind == WEBHOOK_RESULT_POSITIONS) {
        ck_assert_msg(!position_of(result, id, &seq), "%s moved to %llu", id,
                      (unsigned long long)seq);
    }
    webhook_result_free(result);
}

/* A stop that begins with items still in the command channel never sends them, so the MARK
 * behind them must not move their target's position past them: the cursor would be stored
 * beyond them, and the restart would start after them. The delivery thread is held on a
 * full results channel (capacity 1: a WANT fills it, a GONE waits for room) until the stop
 * has been requested; the item and the MARK wait in the command channel meanwhile. */
START_TEST(test_webhook_stop_keeps_positions_below_items_not_sent)
{
    fixture_t *f = fixture_new();
    chan_free(f->results);
    f->results = chan_new(1, results_wake, f, result_free_item);
    f->server.script[0] = (reply_t){410, NULL, 0};
    f->server.script_len = 1;
    fixture_start(f);
    send_target_at(f, SUB3, f->hook_url, NULL, f->secret, 0, true);
    send_target(f, SUB, f->hook_url, NULL, f->secret);
    send_target(f, SUB2, f->hook_url, NULL, f->secret);
    send_new_notif(f, SUB2, 1);
    ck_assert(server_wait(&f->server, &f->server.hook_count, 1));
    usleep(100 * 1000); /* the answer reaches the delivery thread, which then waits for room */

    send_new_notif(f, SUB, 2);
    send_mark(f, 2);
    struct late_drainer drainer = {.f = f};
    pthread_t thread;
    ck_assert_int_eq(pthread_create(&thread, NULL, drain_late, &drainer), 0);
    webhook_stop(f->webhook, 1000);
    atomic_store(&drainer.is_done, true);
    pthread_join(thread, NULL);

    ck_assert_msg(drainer.count >= 2, "the WANT and the GONE were drained: %zu", drainer.count);
    for (size_t i = 0; i < drainer.count; i++) {
        assert_not_moved(drainer.results[i], SUB);
    }
    assert_not_moved(webhook_take_final_positions(f->webhook), SUB);
    ck_assert_uint_eq(f->server.hook_count, 1); /* item 2 was never sent */
    fixture_free(f);
}
END_TEST

START_TEST(test_webhook_remove_releases_the_queue)
{
    fixture_t *f = fixture_new();
    f->config.max_batch_items = 1;
    f->config.first_retry_ms = 60000;
    f->config.max_retry_ms = 60000;
    f->server.hook_default = 500;
    fixture_start(f);
    send_target(f, SUB, f->hook_url, NULL, f->secret);
    notif_t *notif = make_notif(1);
    for (int i = 0; i < 3; i++) {
        send_notif(f, SUB, notif_ref(notif));
    }
    webhook_command_t *c = webhook_command_new(WEBHOOK_CMD_TARGET_REMOVE);
    snprintf(c->spec.subscription_id, sizeof(c->spec.subscription_id), "%s", SUB);
    webhook_send(f->webhook, &c);
    send_notif(f, SUB, notif_ref(notif)); /* for a target that is gone */
    send_lifecycle(f, SUB, "subscriptionRemoved");
    ck_assert(server_wait(&f->server, &f->server.life_count, 1));
    ck_assert_int_eq(refcount(notif), 1);
    fixture_free(f);
    notif_release(notif);
}
END_TEST

START_TEST(test_webhook_put_replaces_spec_and_keeps_the_batch)
{
    fixture_t *f = fixture_new();
    /* The retry waits a second: time for the replacement to arrive first. */
    f->server.script[0] = (reply_t){503, "Retry-After: 1", 0};
    f->server.script_len = 1;
    fixture_start(f);
    send_target(f, SUB, f->hook_url, "\"one\"", f->secret);
    send_new_notif(f, SUB, 1);
    ck_assert(server_wait(&f->server, &f->server.hook_count, 1));
    unsigned char secret2[WEBHOOK_SECRET_BYTES];
    memset(secret2, 0x42, sizeof(secret2));
    char url2[160];
    snprintf(url2, sizeof(url2), "%s2", f->hook_url);
    send_target(f, SUB, url2, "\"two\"", secret2);
    ck_assert(server_wait(&f->server, &f->server.ok_hook_count, 1));
    send_new_notif(f, SUB, 2);
    ck_assert(server_wait(&f->server, &f->server.ok_hook_count, 2));

    const request_t *first = server_nth(&f->server, "/hook", 0);
    const request_t *retry = server_nth(&f->server, "/hook", 1);
    const request_t *next = server_nth(&f->server, "/hook", 2);
    ck_assert_str_eq(first->target, "/hook");
    ck_assert_str_eq(retry->target, "/hook2");
    ck_assert_str_eq(next->target, "/hook2");
    char id1[64];
    char id2[64];
    char id3[64];
    assert_signed(first, f->secret, id1);
    assert_signed(retry, secret2, id2);
    assert_signed(next, secret2, id3);
    ck_assert_str_eq(id1, id2);
    ck_assert_str_ne(id2, id3);
    /* The batch's bytes stay as built; the next batch carries the new clientState. */
    ck_assert_mem_eq(first->body, retry->body, first->body_len);
    ck_assert_ptr_nonnull(strstr(retry->body, "\"clientState\":\"one\""));
    ck_assert_ptr_nonnull(strstr(next->body, "\"clientState\":\"two\""));
    fixture_free(f);
}
END_TEST

START_TEST(test_webhook_validation_echo_succeeds)
{
    fixture_t *f = fixture_new();
    fixture_start(f);
    char with_query[200];
    snprintf(with_query, sizeof(with_query), "%s?a=b", f->hook_url);
    send_validate(f, 11, f->hook_url, NULL);
    webhook_result_t *result = result_wait(f);
    ck_assert_ptr_nonnull(result);
    ck_assert_int_eq(result->kind, WEBHOOK_RESULT_VALIDATED);
    ck_assert_uint_eq(result->request_id, 11);
    ck_assert_msg(result->code == 0, "%s", result->message);
    webhook_result_free(result);
    send_validate(f, 12, with_query, NULL);
    result = result_wait(f);
    ck_assert_ptr_nonnull(result);
    ck_assert_uint_eq(result->request_id, 12);
    ck_assert_msg(result->code == 0, "%s", result->message);
    webhook_result_free(result);

    const request_t *r = server_nth(&f->server, "/hook", 0);
    ck_assert_str_eq(r->method, "POST");
    ck_assert_msg(strncmp(r->target, "/hook?validationToken=", 22) == 0, "%s", r->target);
    ck_assert_uint_eq(strlen(r->target + 22), 64);
    char value[64];
    ck_assert(header_get(r, "Content-Type", value, sizeof(value)));
    ck_assert_str_eq(value, "text/plain");
    ck_assert_uint_eq(r->body_len, 0);
    r = server_nth(&f->server, "/hook", 1);
    ck_assert_msg(strncmp(r->target, "/hook?a=b&validationToken=", 26) == 0, "%s", r->target);
    ck_assert_uint_eq(strlen(r->target + 26), 64);
    /* Each validation has its own token. */
    ck_assert_str_ne(server_nth(&f->server, "/hook", 0)->target + 22, r->target + 26);
    fixture_free(f);
}
END_TEST

START_TEST(test_webhook_validation_refuses_a_trailing_newline)
{
    fixture_t *f = fixture_new();
    f->server.validate_mode = VALIDATE_ECHO_NEWLINE;
    fixture_start(f);
    send_validate(f, 21, f->hook_url, NULL);
    webhook_result_t *result = result_wait(f);
    ck_assert_ptr_nonnull(result);
    ck_assert_uint_eq(result->request_id, 21);
    ck_assert_int_eq(result->code, HEROLD_E_BAD_REQUEST);
    ck_assert_str_eq(result->message,
                     "notificationUrl validation: body did not match the validationToken");
    webhook_result_free(result);
    fixture_free(f);
}
END_TEST

START_TEST(test_webhook_validation_reports_the_status)
{
    fixture_t *f = fixture_new();
    f->server.validate_mode = VALIDATE_NOT_FOUND;
    fixture_start(f);
    send_validate(f, 31, f->hook_url, "lifecycleNotificationUrl");
    webhook_result_t *result = result_wait(f);
    ck_assert_ptr_nonnull(result);
    ck_assert_int_eq(result->code, HEROLD_E_BAD_REQUEST);
    ck_assert_str_eq(result->message, "lifecycleNotificationUrl validation: endpoint answered 404");
    webhook_result_free(result);
    fixture_free(f);
}
END_TEST

START_TEST(test_webhook_validation_refuses_private_addresses_at_connect)
{
    fixture_t *f = fixture_new();
    f->config.allow_private = false;
    fixture_start(f);
    send_validate(f, 41, f->hook_url, NULL);
    webhook_result_t *result = result_wait(f);
    ck_assert_ptr_nonnull(result);
    ck_assert_uint_eq(result->request_id, 41);
    ck_assert_int_eq(result->code, HEROLD_E_BAD_REQUEST);
    ck_assert_str_eq(result->message,
                     "notificationUrl validation: refused: address 127.0.0.1 is in a private "
                     "range (see --webhook-allow-private)");
    webhook_result_free(result);
    /* A name is checked after resolution, whatever it resolves to. */
    char by_name[128];
    snprintf(by_name, sizeof(by_name), "http://localhost:%d/hook", f->server.port);
    send_validate(f, 42, by_name, NULL);
    result = result_wait(f);
    ck_assert_ptr_nonnull(result);
    ck_assert_uint_eq(result->request_id, 42);
    ck_assert_int_eq(result->code, HEROLD_E_BAD_REQUEST);
    ck_assert_msg(strstr(result->message, "is in a private range") != NULL, "%s", result->message);
    webhook_result_free(result);
    pthread_mutex_lock(&f->server.lock);
    ck_assert_uint_eq(f->server.count, 0);
    pthread_mutex_unlock(&f->server.lock);
    fixture_free(f);
}
END_TEST

START_TEST(test_webhook_free_without_start_releases_commands)
{
    chan_t *results = chan_new(4, NULL, NULL, result_free_item);
    webhook_config_t config;
    webhook_config_init(&config);
    ck_assert_int_eq(config.max_batch_items, 100);
    ck_assert_int_eq(config.first_retry_ms, 5000);
    struct herr err;
    webhook_t *webhook = webhook_new(&config, results, &err);
    ck_assert_ptr_nonnull(webhook);
    notif_t *notif = make_notif(1);
    webhook_command_t *c = webhook_command_new(WEBHOOK_CMD_NOTIFY);
    c->notif = notif_ref(notif);
    webhook_send(webhook, &c);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(refcount(notif), 2);
    webhook_stop(webhook, 0);
    ck_assert_int_eq(refcount(notif), 1);
    /* After stop a command is released at once. */
    c = webhook_command_new(WEBHOOK_CMD_NOTIFY);
    c->notif = notif_ref(notif);
    webhook_send(webhook, &c);
    ck_assert_int_eq(refcount(notif), 1);
    webhook_free(webhook);
    webhook_free(NULL);
    chan_free(results);
    notif_release(notif);
}
END_TEST

static Suite *webhook_suite(void)
{
    Suite *suite = suite_create("webhook");
    TCase *rules = tcase_create("rules");
    tcase_add_test(rules, test_webhook_private_ipv4_edges);
    tcase_add_test(rules, test_webhook_private_ipv6);
    tcase_add_test(rules, test_webhook_private_refuses_short_or_foreign_addresses);
    tcase_add_test(rules, test_webhook_url_check_table);
    tcase_add_test(rules, test_webhook_url_check_messages_name_the_rule);
    tcase_add_test(rules, test_webhook_url_check_length_limit);
    tcase_add_test(rules, test_webhook_sign_matches_independent_hmac);
    tcase_add_test(rules, test_webhook_sign_standard_webhooks_vector);
    tcase_add_test(rules, test_webhook_secret_new_format);
    tcase_add_test(rules, test_webhook_command_free_releases_what_it_owns);
    suite_add_tcase(suite, rules);

    TCase *delivery = tcase_create("delivery");
    tcase_set_timeout(delivery, 30);
    tcase_add_test(delivery, test_webhook_delivers_a_signed_batch);
    tcase_add_test(delivery, test_webhook_batches_never_exceed_max_and_keep_order);
    tcase_add_test(delivery, test_webhook_retry_keeps_id_and_body);
    tcase_add_test(delivery, test_webhook_retry_after_seconds_is_honoured);
    tcase_add_test(delivery, test_webhook_retry_after_date_is_honoured);
    tcase_add_test(delivery, test_webhook_status_edges_of_2xx);
    tcase_add_test(delivery, test_webhook_retry_after_beyond_max_retry_is_honoured);
    tcase_add_test(delivery, test_webhook_request_timeout_is_retried);
    tcase_add_test(delivery, test_webhook_gone_is_reported);
    tcase_add_test(delivery, test_webhook_retries_a_failing_batch_until_it_is_delivered);
    tcase_add_test(delivery, test_webhook_lifecycle_command_posts_signed_event);
    tcase_add_test(delivery, test_webhook_queue_overflow_goes_behind_and_asks_once);
    tcase_add_test(delivery, test_webhook_replay_chunks_until_live);
    tcase_add_test(delivery, test_webhook_target_created_behind_asks_from_its_position);
    tcase_add_test(delivery, test_webhook_mark_reports_moved_positions);
    tcase_add_test(delivery, test_webhook_stop_keeps_positions_below_items_not_sent);
    tcase_add_test(delivery, test_webhook_remove_releases_the_queue);
    tcase_add_test(delivery, test_webhook_put_replaces_spec_and_keeps_the_batch);
    tcase_add_test(delivery, test_webhook_validation_echo_succeeds);
    tcase_add_test(delivery, test_webhook_validation_refuses_a_trailing_newline);
    tcase_add_test(delivery, test_webhook_validation_reports_the_status);
    tcase_add_test(delivery, test_webhook_validation_refuses_private_addresses_at_connect);
    tcase_add_test(delivery, test_webhook_free_without_start_releases_commands);
    suite_add_tcase(suite, delivery);
    return suite;
}

int main(void)
{
    SRunner *runner = srunner_create(webhook_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failures = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failures ? 1 : 0;
}
