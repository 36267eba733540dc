/*
 * herold-tail: subscribes over the broker's WebSocket (schemas/ws-protocol.md) and prints
 * what arrives.
 *
 * It connects to --url with the token in the Authorization header, sends one subscribe per
 * --resource (refs r1, r2, ...), reports each answer on stderr as
 * "herold-tail: subscribed <subscriptionId> <resource>", and then prints every notification
 * item as one compact JSON line on stdout, flushed per frame so that a pipe sees items as
 * they come. Lifecycle frames are printed whole, as they came. Other answers (pong,
 * unsubscribed) and unknown ops are ignored: later milestones add server messages.
 *
 * With --count N it closes (1000) after the N-th item and prints a summary on stderr; the
 * seconds are measured from the first item to the last, so that connecting and subscribing
 * do not count against the rate. SIGINT and SIGTERM close the connection the same way.
 *
 * Exit status: 0 after --count items or a signal; 1 when the handshake is refused (the
 * HTTP status is printed), when a subscribe is answered with an error, or when the
 * connection drops; 2 on usage errors.
 *
 * One thread: everything runs inside lws_service(), driven by the callbacks below.
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "mem.h"

#define TAIL_DEFAULT_URL "ws://127.0.0.1:8080/v1.0/ws"
/* The handshake is assembled in a buffer of this size; a token with many groups must fit. */
#define TAIL_SERV_BUF_BYTES (32 * 1024)
#define TAIL_RX_CHUNK_BYTES (64 * 1024)
/* A server frame larger than this is a broken server, not a batch (64 items). */
#define TAIL_MAX_MESSAGE_BYTES (16 * 1024 * 1024)
/* How long a closing handshake may take before the tool exits anyway. */
#define TAIL_CLOSE_GRACE_MS 2000
/* The service loop returns at least this often, so that a signal that arrives just before
 * poll() starts is seen without waiting for traffic. */
#define TAIL_TICK_US (200 * LWS_US_PER_MS)

enum {
    TAIL_EXIT_OK = 0,
    TAIL_EXIT_FAILED = 1,
    TAIL_EXIT_USAGE = 2,
};

/* Set by the SIGINT/SIGTERM handler; the only global. */
static volatile sig_atomic_t stop_requested;

struct options {
    const char *url;
    const char *token;
    const char **resources;
    size_t resource_count;
    const char *change_type;
    uint64_t count; /* 0: no limit */
    bool is_quiet;
};

struct url {
    char *host;        /* for connecting: no brackets around an IPv6 address */
    char *host_header; /* the authority as written, for the Host and Origin headers */
    char *path;        /* with its leading '/' and the query */
    int port;
};

/* A message waiting to be sent, with LWS_PRE bytes of headroom before the text. */
struct outgoing {
    unsigned char *buf;
    size_t len;
};

struct tail {
    const struct options *options;
    struct lws_context *context;
    struct lws *wsi;
    struct outgoing *outgoing; /* one subscribe per resource */
    size_t outgoing_count;
    size_t next_outgoing;
    char *rx; /* the message being reassembled from fragments */
    size_t rx_len;
    size_t rx_capacity;
    uint64_t items;
    struct timespec first_item;
    struct timespec last_item;
    int close_code; /* sent by the server, 0 when none */
    char close_reason[124];
    bool is_established;
    bool is_finishing; /* we close: the reason is ours, exit_status is set */
    bool is_done;      /* the connection is gone */
    int exit_status;
    lws_sorted_usec_list_t tick;
};

/* Ends the session with status; the callback that calls this then returns -1 to close. */
static void finish(struct tail *tail, int status)
{
    if (!tail->is_finishing) {
        tail->is_finishing = true;
        tail->exit_status = status;
    }
}

/* ---- server messages ---- */

static const char *member_string(const json_t *object, const char *key)
{
    const char *value = json_string_value(json_object_get(object, key));
    return value != NULL ? value : "(none)";
}

static void print_json_line(const json_t *value)
{
    char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    fputs(text, stdout);
    fputc('\n', stdout);
    free(text);
}

static void handle_notify(struct tail *tail, const json_t *message)
{
    const json_t *value = json_object_get(message, "value");
    size_t i;
    json_t *item;

    if (!json_is_array(value)) {
        fprintf(stderr, "herold-tail: ignoring a notify frame without a value array\n");
        return;
    }
    json_array_foreach(value, i, item)
    {
        struct timespec now = cli_monotonic_now();
        if (tail->items == 0) {
            tail->first_item = now;
        }
        tail->last_item = now;
        tail->items++;
        if (!tail->options->is_quiet) {
            print_json_line(item);
        }
        if (tail->options->count != 0 && tail->items >= tail->options->count) {
            finish(tail, TAIL_EXIT_OK);
            return;
        }
    }
}

/* One whole message from the server. */
static void handle_message(struct tail *tail, const char *text, size_t len)
{
    json_error_t error;
    json_t *message = json_loadb(text, len, 0, &error);

    if (message == NULL || !json_is_object(message)) {
        fprintf(stderr, "herold-tail: ignoring a frame that is not a JSON object (%zu bytes)\n",
                len);
        json_decref(message);
        return;
    }
    const char *op = json_string_value(json_object_get(message, "op"));
    if (op == NULL) {
        op = "";
    }
    if (strcmp(op, "subscribed") == 0) {
        fprintf(stderr, "herold-tail: subscribed %s %s\n", member_string(message, "subscriptionId"),
                member_string(message, "resource"));
    } else if (strcmp(op, "error") == 0) {
        /* herold-tail sends nothing but subscribes, so every error answers one of them. */
        const json_t *detail = json_object_get(message, "error");
        const char *ref = json_string_value(json_object_get(message, "ref"));
        fprintf(stderr, "herold-tail: subscribe %s refused: %s: %s\n",
                ref != NULL ? ref : "(no ref)", member_string(detail, "code"),
                member_string(detail, "message"));
        finish(tail, TAIL_EXIT_FAILED);
    } else if (strcmp(op, "notify") == 0) {
        handle_notify(tail, message);
    } else if (strcmp(op, "lifecycle") == 0) {
        print_json_line(message);
    }
    json_decref(message);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "herold-tail: writing stdout failed: %s\n", strerror(errno));
        finish(tail, TAIL_EXIT_FAILED);
    }
}

/* Appends a received piece to the message being reassembled. Returns -1 when the message
 * grows past TAIL_MAX_MESSAGE_BYTES. */
static int append_received(struct tail *tail, const void *in, size_t len)
{
    if (len > TAIL_MAX_MESSAGE_BYTES - tail->rx_len) {
        return -1;
    }
    if (tail->rx_len + len > tail->rx_capacity) {
        size_t capacity = tail->rx_capacity != 0 ? tail->rx_capacity : TAIL_RX_CHUNK_BYTES;
        while (capacity < tail->rx_len + len) {
            capacity *= 2;
        }
        tail->rx = xrealloc(tail->rx, capacity);
        tail->rx_capacity = capacity;
    }
    memcpy(tail->rx + tail->rx_len, in, len);
    tail->rx_len += len;
    return 0;
}

/* ---- libwebsockets ---- */

static int close_normally(struct lws *wsi)
{
    lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
    return -1;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    struct tail *tail = lws_context_user(lws_get_context(wsi));
    (void)user;

    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
        const char *token = tail->options->token;
        if (token == NULL || token[0] == '\0') {
            return 0;
        }
        unsigned char **p = in;
        unsigned char *end = *p + len;
        size_t value_len = strlen("Bearer ") + strlen(token);
        char *value = xmalloc(value_len + 1);
        snprintf(value, value_len + 1, "Bearer %s", token);
        int rc = lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
                                              (unsigned char *)value, (int)value_len, p, end);
        free(value);
        if (rc != 0) {
            fprintf(stderr, "herold-tail: the token does not fit in the handshake (%zu bytes)\n",
                    strlen(token));
            finish(tail, TAIL_EXIT_FAILED);
            return -1;
        }
        return 0;
    }

    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
        /* The status of a refused upgrade is still held here; 0 when no response came. */
        unsigned int status = lws_http_client_http_response(wsi);
        const char *why = in != NULL ? (const char *)in : "unknown error";
        int why_len = in != NULL && len > 0 ? (int)len : (int)strlen(why);
        if (!tail->is_finishing) {
            if (status != 0 && status != 101) {
                fprintf(stderr, "herold-tail: handshake refused: HTTP %u\n", status);
            } else {
                fprintf(stderr, "herold-tail: cannot connect to %s: %.*s\n", tail->options->url,
                        why_len, why);
            }
        }
        finish(tail, TAIL_EXIT_FAILED);
        tail->wsi = NULL;
        tail->is_done = true;
        return 0;
    }

    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        tail->is_established = true;
        lws_callback_on_writable(wsi);
        return 0;

    case LWS_CALLBACK_CLIENT_WRITEABLE: {
        if (tail->is_finishing) {
            return close_normally(wsi);
        }
        if (tail->next_outgoing >= tail->outgoing_count) {
            return 0;
        }
        struct outgoing *out = &tail->outgoing[tail->next_outgoing];
        if (lws_write(wsi, out->buf + LWS_PRE, out->len, LWS_WRITE_TEXT) < (int)out->len) {
            fprintf(stderr, "herold-tail: sending a subscribe failed\n");
            finish(tail, TAIL_EXIT_FAILED);
            return -1;
        }
        tail->next_outgoing++;
        if (tail->next_outgoing < tail->outgoing_count) {
            lws_callback_on_writable(wsi);
        }
        return 0;
    }

    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (tail->is_finishing) {
            return close_normally(wsi);
        }
        if (lws_frame_is_binary(wsi)) {
            fprintf(stderr, "herold-tail: the server sent a binary frame\n");
            finish(tail, TAIL_EXIT_FAILED);
            return close_normally(wsi);
        }
        if (append_received(tail, in, len) != 0) {
            fprintf(stderr, "herold-tail: a server message exceeds %d bytes\n",
                    TAIL_MAX_MESSAGE_BYTES);
            finish(tail, TAIL_EXIT_FAILED);
            return close_normally(wsi);
        }
        if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0) {
            handle_message(tail, tail->rx, tail->rx_len);
            tail->rx_len = 0;
        }
        return tail->is_finishing ? close_normally(wsi) : 0;

    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (len >= 2) {
            const unsigned char *code = in;
            size_t reason_len =
                len - 2 < sizeof(tail->close_reason) - 1 ? len - 2 : sizeof(tail->close_reason) - 1;
            tail->close_code = code[0] << 8 | code[1];
            memcpy(tail->close_reason, code + 2, reason_len);
            tail->close_reason[reason_len] = '\0';
        }
        return 0; /* lws echoes the close, then closes */

    case LWS_CALLBACK_CLIENT_CLOSED:
        if (!tail->is_finishing) {
            if (tail->close_code != 0) {
                fprintf(stderr, "herold-tail: the server closed the connection (%d%s%s)\n",
                        tail->close_code, tail->close_reason[0] != '\0' ? ": " : "",
                        tail->close_reason);
            } else {
                fprintf(stderr, "herold-tail: the connection dropped\n");
            }
            finish(tail, TAIL_EXIT_FAILED);
        }
        tail->wsi = NULL;
        tail->is_done = true;
        return 0;

    default:
        return 0;
    }
}

static const struct lws_protocols protocols[] = {
    {"herold-tail", callback, 0, TAIL_RX_CHUNK_BYTES, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void tick(lws_sorted_usec_list_t *sul)
{
    struct tail *tail = lws_container_of(sul, struct tail, tick);
    lws_sul_schedule(tail->context, 0, &tail->tick, tick, TAIL_TICK_US);
}

/* ---- setup ---- */

/* libwebsockets' own lines, prefixed so that they read as ours. Its warnings only repeat
 * what the callbacks report (a refused handshake, say), so only errors are let through. */
static void log_lws_line(int level, const char *line)
{
    (void)level;
    size_t len = strlen(line);
    while (len > 0 && line[len - 1] == '\n') {
        len--;
    }
    fprintf(stderr, "herold-tail: lws: %.*s\n", (int)len, line);
}

static void on_signal(int signo)
{
    (void)signo;
    stop_requested = 1;
}

static void install_signal_handlers(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    /* No SA_RESTART: the poll inside lws_service() should return at once. */
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void url_clear(struct url *url)
{
    free(url->host);
    free(url->host_header);
    free(url->path);
    memset(url, 0, sizeof(*url));
}

/* Splits ws://host[:port][/path][?query]. Returns 0, or -1 after printing why not. */
static int url_parse(const char *text, struct url *url)
{
    const char *scheme = "ws://";
    memset(url, 0, sizeof(*url));
    if (strncasecmp(text, "wss://", 6) == 0) {
        fprintf(stderr, "herold-tail: wss:// is not supported yet: %s\n", text);
        return -1;
    }
    if (strncasecmp(text, scheme, strlen(scheme)) != 0) {
        fprintf(stderr, "herold-tail: --url must start with ws://: %s\n", text);
        return -1;
    }
    const char *authority = text + strlen(scheme);
    size_t authority_len = strcspn(authority, "/?#");
    const char *rest = authority + authority_len;
    const char *host = authority;
    size_t host_len;
    const char *port = NULL;

    if (memchr(authority, '@', authority_len) != NULL) {
        fprintf(stderr, "herold-tail: credentials in the URL are not supported: %s\n", text);
        return -1;
    }
    if (authority[0] == '[') {
        const char *close = memchr(authority, ']', authority_len);
        if (close == NULL) {
            goto bad;
        }
        host = authority + 1;
        host_len = (size_t)(close - host);
        if (close + 1 < rest) {
            if (close[1] != ':') {
                goto bad;
            }
            port = close + 2;
        }
    } else {
        const char *colon = memchr(authority, ':', authority_len);
        host_len = colon != NULL ? (size_t)(colon - authority) : authority_len;
        port = colon != NULL ? colon + 1 : NULL;
    }
    if (host_len == 0) {
        goto bad;
    }
    url->port = 80;
    if (port != NULL) {
        long value = 0;
        if (port == rest) {
            goto bad;
        }
        for (const char *c = port; c < rest; c++) {
            if (*c < '0' || *c > '9' || value > 65535) {
                goto bad;
            }
            value = value * 10 + (*c - '0');
        }
        if (value < 1 || value > 65535) {
            goto bad;
        }
        url->port = (int)value;
    }
    url->host = xstrndup(host, host_len);
    url->host_header = xstrndup(authority, authority_len);
    size_t path_len = strcspn(rest, "#");
    if (rest[0] == '/') {
        url->path = xstrndup(rest, path_len);
    } else {
        url->path = xmalloc(path_len + 2);
        url->path[0] = '/';
        memcpy(url->path + 1, rest, path_len);
        url->path[path_len + 1] = '\0';
    }
    return 0;
bad:
    fprintf(stderr, "herold-tail: --url is not ws://host[:port][/path]: %s\n", text);
    return -1;
}

/* Builds one subscribe message per resource. Returns -1 when a flag is not UTF-8. */
static int build_subscribes(struct tail *tail)
{
    const struct options *options = tail->options;
    tail->outgoing = xcalloc(options->resource_count, sizeof(*tail->outgoing));
    for (size_t i = 0; i < options->resource_count; i++) {
        char ref[32];
        snprintf(ref, sizeof(ref), "r%zu", i + 1);
        json_t *op = json_object();
        json_object_set_new(op, "op", json_string("subscribe"));
        json_object_set_new(op, "ref", json_string(ref));
        json_t *resource = json_string(options->resources[i]);
        json_t *change_type =
            options->change_type != NULL ? json_string(options->change_type) : NULL;
        if (resource == NULL || (options->change_type != NULL && change_type == NULL)) {
            fprintf(stderr, "herold-tail: --resource and --change-type must be UTF-8\n");
            json_decref(resource);
            json_decref(change_type);
            json_decref(op);
            return -1;
        }
        json_object_set_new(op, "resource", resource);
        if (change_type != NULL) {
            json_object_set_new(op, "changeType", change_type);
        }
        char *text = json_dumps(op, JSON_COMPACT);
        size_t len = strlen(text);
        tail->outgoing[i].buf = xmalloc(LWS_PRE + len);
        memcpy(tail->outgoing[i].buf + LWS_PRE, text, len);
        tail->outgoing[i].len = len;
        tail->outgoing_count++;
        free(text);
        json_decref(op);
    }
    return 0;
}

static void usage(FILE *out)
{
    fputs("usage: herold-tail [--url URL] [--token JWT] --resource PATTERN [--resource ...]\n"
          "                   [--change-type LIST] [--count N] [--quiet]\n"
          "\n"
          "Subscribes to each PATTERN over the broker's WebSocket and prints every\n"
          "notification item as a JSON line on stdout (not with --quiet; the\n"
          "\"subscribed\" lines on stderr are always printed). --url defaults to\n" TAIL_DEFAULT_URL
          "; the token defaults to $HEROLD_TOKEN.\n"
          "--count N exits after N items with a summary on stderr.\n"
          "Exit status: 0 done, 1 refused or disconnected, 2 usage error.\n",
          out);
}

/* Fills options. Returns 0, 1 after --help, or -1 on a usage error (reported). The
 * resources array is owned by the caller (free()). */
static int parse_options(int argc, char **argv, struct options *options)
{
    enum {
        OPT_URL = 256,
        OPT_TOKEN,
        OPT_RESOURCE,
        OPT_CHANGE_TYPE,
        OPT_COUNT,
        OPT_QUIET,
        OPT_HELP,
    };
    static const struct option long_options[] = {
        {"url", required_argument, NULL, OPT_URL},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"resource", required_argument, NULL, OPT_RESOURCE},
        {"change-type", required_argument, NULL, OPT_CHANGE_TYPE},
        {"count", required_argument, NULL, OPT_COUNT},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int opt;

    memset(options, 0, sizeof(*options));
    options->url = TAIL_DEFAULT_URL;
    options->token = getenv("HEROLD_TOKEN");
    /* argc bounds the number of --resource flags. */
    options->resources = xcalloc((size_t)argc, sizeof(*options->resources));
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (opt) {
        case OPT_URL:
            options->url = optarg;
            break;
        case OPT_TOKEN:
            options->token = optarg;
            break;
        case OPT_RESOURCE:
            options->resources[options->resource_count++] = optarg;
            break;
        case OPT_CHANGE_TYPE:
            options->change_type = optarg;
            break;
        case OPT_COUNT:
            if (!cli_parse_count(optarg, &options->count)) {
                fprintf(stderr, "herold-tail: --count needs a count of at least 1\n");
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
            fprintf(stderr, "herold-tail: unknown option or missing value: %s\n", argv[optind - 1]);
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "herold-tail: unexpected argument: %s\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    if (options->resource_count == 0) {
        fprintf(stderr, "herold-tail: at least one --resource is needed\n");
        usage(stderr);
        return -1;
    }
    return 0;
}

/* Runs the session to its end. Returns the exit status. */
static int run(struct tail *tail, const struct url *url)
{
    struct lws_context_creation_info info;
    struct lws_client_connect_info connect;
    struct timespec close_started = {0};

    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.user = tail;
    info.gid = -1;
    info.uid = -1;
    info.pt_serv_buf_size = TAIL_SERV_BUF_BYTES;
    struct lws_context *context = lws_create_context(&info);
    if (context == NULL) {
        fprintf(stderr, "herold-tail: lws_create_context failed\n");
        return TAIL_EXIT_FAILED;
    }
    tail->context = context;

    memset(&connect, 0, sizeof(connect));
    connect.context = context;
    connect.address = url->host;
    connect.port = url->port;
    connect.path = url->path;
    connect.host = url->host_header;
    connect.origin = url->host_header;
    connect.protocol = NULL; /* the broker's endpoint takes no subprotocol */
    connect.pwsi = &tail->wsi;
    if (lws_client_connect_via_info(&connect) == NULL && !tail->is_done) {
        fprintf(stderr, "herold-tail: cannot connect to %s\n", tail->options->url);
        finish(tail, TAIL_EXIT_FAILED);
        tail->is_done = true;
    }
    lws_sul_schedule(context, 0, &tail->tick, tick, TAIL_TICK_US);

    while (!tail->is_done) {
        if (stop_requested && !tail->is_finishing) {
            finish(tail, TAIL_EXIT_OK);
            if (!tail->is_established) {
                break;
            }
            lws_callback_on_writable(tail->wsi);
        }
        if (tail->is_finishing) {
            if (close_started.tv_sec == 0 && close_started.tv_nsec == 0) {
                close_started = cli_monotonic_now();
            } else if (cli_seconds_between(close_started, cli_monotonic_now()) * 1000.0 >
                       TAIL_CLOSE_GRACE_MS) {
                break;
            }
        }
        if (lws_service(context, 0) < 0) {
            if (!tail->is_finishing) {
                fprintf(stderr, "herold-tail: lws_service failed\n");
                finish(tail, TAIL_EXIT_FAILED);
            }
            break;
        }
    }
    lws_sul_cancel(&tail->tick);
    lws_context_destroy(context);
    return tail->exit_status;
}

int main(int argc, char **argv)
{
    struct options options;
    struct url url;
    struct tail tail;
    int status;

    json_set_alloc_funcs(xmalloc, free);
    lws_set_log_level(LLL_ERR, log_lws_line);
    int parsed = parse_options(argc, argv, &options);
    if (parsed != 0) {
        free(options.resources);
        return parsed > 0 ? TAIL_EXIT_OK : TAIL_EXIT_USAGE;
    }
    if (url_parse(options.url, &url) != 0) {
        free(options.resources);
        return TAIL_EXIT_USAGE;
    }
    memset(&tail, 0, sizeof(tail));
    tail.options = &options;
    if (build_subscribes(&tail) != 0) {
        status = TAIL_EXIT_USAGE;
    } else {
        install_signal_handlers();
        status = run(&tail, &url);
        fflush(stdout);
        if (status == TAIL_EXIT_OK && options.count != 0) {
            double seconds =
                tail.items > 0 ? cli_seconds_between(tail.first_item, tail.last_item) : 0;
            double rate = seconds > 0 ? (double)tail.items / seconds : 0.0;
            fprintf(stderr, "herold-tail: %" PRIu64 " items in %.3f s (%.0f items/s)\n", tail.items,
                    seconds, rate);
        }
    }

    for (size_t i = 0; i < tail.outgoing_count; i++) {
        free(tail.outgoing[i].buf);
    }
    free(tail.outgoing);
    free(tail.rx);
    url_clear(&url);
    free(options.resources);
    return status;
}
