#include "http.h"

#include <ev.h>
#include <libwebsockets.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"
#include "mem.h"

#define HTTP_MAX_HEADER_BYTES 16384
/* Requests whose headers are being read at once, each holding a buffer of
 * HTTP_MAX_HEADER_BYTES; further connections wait in the kernel's accept queue until one
 * is done. Without a bound (libwebsockets' default: one per descriptor) a burst of
 * handshakes left the buffers of a thousand at a time as holes between the connections
 * made meanwhile: 1.95 KiB per idle connection against 1.69 with 256 buffers, which also
 * accepted faster (bench/ws_idle.sh 18000, see bench/RESULTS.md), and a flood of half-sent
 * requests could pin 16 KiB per descriptor. (An unfinished request is closed after
 * libwebsockets' timeouts: tests/e2e/test_limits.py.) */
#define HTTP_HEADER_BUFFERS 256
/* libwebsockets gives every WebSocket connection a receive buffer of this size; messages
 * arrive in chunks of it and ws.c gathers a longer one in a buffer of its own size (up to
 * WS_MAX_MESSAGE_BYTES), freed once handled. Clients send short JSON ops, rarely, so a
 * small buffer costs nothing in speed and keeps an idle connection near 2 KiB
 * (bench/ws_idle.sh 18000: 4096 bytes made it 6.05 KiB, 256 bytes 2.22, 128 bytes 2.07). */
#define HTTP_WS_RX_CHUNK_BYTES 128
/* The send buffer of a WebSocket: room for one whole notify frame (ws.h, 256 KiB). */
#define HTTP_WS_SNDBUF_BYTES (256 * 1024)

/* The service loop returns at least this often, so that the main loop sees its stop flag
 * even when no traffic and no signal wakes it. */
#define HTTP_TICK_US (200 * LWS_US_PER_MS)

struct http {
    struct lws_context *context;
    struct ev_loop *loop;
    http_routes_t routes;
    ws_t *ws;
    lws_sorted_usec_list_t tick;
    int64_t last_sweep;
};

/* Per-connection state that libwebsockets allocates and zeroes for us, for every
 * connection, an idle WebSocket included: kept small. */
struct http_conn {
    ws_session_t *session;   /* set once the upgrade was accepted */
    rest_request_t *request; /* the API request in progress */
    const char *body;        /* the static body of a plain response still to write */
};

static const char body_ok[] = "ok\n";

/* The page's files: a fixed list, so no request names a file by its own path. */
static const struct {
    const char *uri;
    const char *file;
    const char *mime;
} web_files[] = {
    {"/", "index.html", "text/html; charset=utf-8"},
    {"/index.html", "index.html", "text/html; charset=utf-8"},
    {"/app.js", "app.js", "text/javascript; charset=utf-8"},
    {"/style.css", "style.css", "text/css; charset=utf-8"},
};

/* The page talks to this broker only: scripts and styles from here, requests to here. */
static const char web_headers[] =
    "content-security-policy: default-src 'self'; connect-src 'self' ws: wss:; "
    "frame-ancestors 'none'\x0d\x0a"
    "x-content-type-options: nosniff\x0d\x0a"
    "cache-control: no-cache\x0d\x0a";

static bool uri_is(struct lws *wsi, const char *path);

/* Serves a file of the page for a GET of one of its paths. Returns 1 when it did (the
 * callback's answer in *rc), 0 when the request is not for the page. */
static int serve_web(http_t *http, struct lws *wsi, int *rc)
{
    if (http->routes.web_root == NULL || lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0) {
        return 0;
    }
    for (size_t i = 0; i < sizeof(web_files) / sizeof(web_files[0]); i++) {
        if (uri_is(wsi, web_files[i].uri)) {
            char path[1024];
            snprintf(path, sizeof(path), "%s/%s", http->routes.web_root, web_files[i].file);
            int served = lws_serve_http_file(wsi, path, web_files[i].mime, web_headers,
                                             (int)strlen(web_headers));
            *rc = served < 0 || (served > 0 && lws_http_transaction_completed(wsi)) ? -1 : 0;
            return 1;
        }
    }
    return 0;
}

static bool uri_is(struct lws *wsi, const char *path)
{
    char uri[256];
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) >= (int)sizeof(uri)) {
        return false;
    }
    if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) < 0) {
        return false;
    }
    return strcmp(uri, path) == 0;
}

/* Sends the status line and headers now; the body (static text) follows in HTTP_WRITEABLE. */
static int respond(struct lws *wsi, struct http_conn *conn, int status, const char *body)
{
    unsigned char buf[LWS_PRE + 512];
    unsigned char *start = buf + LWS_PRE;
    unsigned char *p = start;
    unsigned char *end = buf + sizeof(buf);

    conn->body = body;
    if (lws_add_http_common_headers(wsi, (unsigned int)status, "text/plain",
                                    (lws_filepos_t)strlen(body), &p, end) != 0 ||
        lws_finalize_write_http_header(wsi, start, &p, end) != 0) {
        return -1;
    }
    lws_callback_on_writable(wsi);
    return 0;
}

/* Answers a refused upgrade with a complete HTTP/1.1 response written in one piece: the
 * connection is still plain HTTP, and lws's own status helper answers HTTP/1.0 here, which
 * strict WebSocket clients do not accept. */
static void refuse_upgrade(struct lws *wsi, int status)
{
    char body[160];
    char response[LWS_PRE + 512];
    int code = HEROLD_E_NOT_FOUND;
    const char *reason = "Not Found";
    if (status == 401) {
        code = HEROLD_E_UNAUTHORIZED;
        reason = "Unauthorized";
    } else if (status == 400) {
        code = HEROLD_E_BAD_REQUEST;
        reason = "Bad Request";
    } else if (status == 403) {
        code = HEROLD_E_FORBIDDEN;
        reason = "Forbidden";
    } else if (status == 429) {
        code = HEROLD_E_LIMIT;
        reason = "Too Many Requests";
    }
    int body_len = snprintf(body, sizeof(body), "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}",
                            herold_error_code(code), herold_error_text(code));
    int len = snprintf(response + LWS_PRE, sizeof(response) - LWS_PRE,
                       "HTTP/1.1 %d %s\r\n"
                       "content-type: application/json\r\n"
                       "content-length: %d\r\n"
                       "%s"
                       "connection: close\r\n\r\n%s",
                       status, reason, body_len,
                       status == 401 ? "www-authenticate: Bearer\r\n" : "", body);
    lws_write(wsi, (unsigned char *)response + LWS_PRE, (size_t)len, LWS_WRITE_HTTP_HEADERS);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    struct http_conn *conn = user;
    http_t *http = lws_context_user(lws_get_context(wsi));

    switch (reason) {
    case LWS_CALLBACK_HTTP:
        rest_request_closed(conn->request); /* the previous request on this connection */
        conn->request = NULL;
        if (uri_is(wsi, "/healthz")) {
            return respond(wsi, conn, 200, body_ok);
        }
        int web_rc;
        if (serve_web(http, wsi, &web_rc)) {
            return web_rc;
        }
        /* Everything else is the API's, which answers unknown paths with Graph's 404. */
        conn->request = rest_request_begin(http->routes.rest, wsi, in != NULL ? in : "");
        return 0;

    case LWS_CALLBACK_HTTP_FILE_COMPLETION:
        return lws_http_transaction_completed(wsi) ? -1 : 0;

    case LWS_CALLBACK_HTTP_BODY:
        return conn->request != NULL ? rest_request_body(conn->request, in, len) : 0;

    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return conn->request != NULL ? rest_request_body_complete(conn->request) : 0;

    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (conn != NULL && conn->request != NULL) {
            enum rest_write_result result = rest_request_writeable(conn->request);
            if (result == REST_WRITE_MORE) {
                return 0;
            }
            /* Free it now: lws may reuse or drop this connection's state at the end of the
             * transaction without another callback that would. */
            rest_request_closed(conn->request);
            conn->request = NULL;
            if (result == REST_WRITE_CLOSE) {
                return -1;
            }
            return lws_http_transaction_completed(wsi) ? -1 : 0;
        }
        if (conn == NULL || conn->body == NULL) {
            return 0;
        }
        size_t body_len = strlen(conn->body);
        if (lws_write(wsi, (unsigned char *)conn->body, body_len, LWS_WRITE_HTTP_FINAL) !=
            (int)body_len) {
            return -1;
        }
        conn->body = NULL;
        return lws_http_transaction_completed(wsi) ? -1 : 0;

    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        int status = 404;
        if (uri_is(wsi, "/v1.0/ws")) {
            conn->session = ws_handshake(http->ws, wsi, &status);
        }
        if (conn->session == NULL) {
            refuse_upgrade(wsi, status);
            return -1;
        }
        return 0;
    }

    case LWS_CALLBACK_ESTABLISHED: {
        /* A notify frame is up to 256 KiB. With the kernel's default 16 KiB to start
         * from, one frame left the socket in many small sends, each waking the reader:
         * that cost most of the service thread under load (perf, W1). */
        int sndbuf = HTTP_WS_SNDBUF_BYTES;
        setsockopt(lws_get_socket_fd(wsi), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
        ws_session_open(conn->session);
        return 0;
    }

    case LWS_CALLBACK_RECEIVE:
        return ws_session_receive(conn->session, in, len, lws_is_final_fragment(wsi) != 0,
                                  lws_frame_is_binary(wsi) != 0);

    case LWS_CALLBACK_SERVER_WRITEABLE:
        return ws_session_writeable(conn->session);

    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_WSI_DESTROY:
        /* CLOSED follows an established session; WSI_DESTROY also covers an upgrade that
         * was accepted but never completed, and every plain HTTP connection. */
        if (conn != NULL && conn->session != NULL) {
            ws_session_closed(conn->session);
            conn->session = NULL;
        }
        if (conn != NULL && conn->request != NULL) {
            rest_request_closed(conn->request);
            conn->request = NULL;
        }
        return 0;

    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        rest_drain_results(http->routes.rest);
        /* Both run bounded work per turn; a cancel brings the loop round again soon. */
        if (dispatch_pending(http->routes.dispatch) | dispatch_replay(http->routes.dispatch)) {
            lws_cancel_service(lws_get_context(wsi));
        } else {
            ws_flush_held_when_quiet(http->routes.ws); /* dispatch ran dry */
        }
        return 0;

    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols protocols[] = {
    /* tx_packet_size: left 0, lws would cut every send to the receive chunk, 256 bytes,
     * and a 256 KiB notify frame took a thousand send() calls (strace, W1). */
    {"herold", callback, sizeof(struct http_conn), HTTP_WS_RX_CHUNK_BYTES, 0, NULL,
     HTTP_WS_SNDBUF_BYTES},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void lws_log_to_ours(int level, const char *line)
{
    size_t len = strlen(line);
    while (len > 0 && line[len - 1] == '\n') {
        len--;
    }
    log_msg(level == LLL_ERR ? LOG_LEVEL_ERROR : LOG_LEVEL_WARN, "lws: %.*s", (int)len, line);
}

static void tick(lws_sorted_usec_list_t *sul)
{
    http_t *http = lws_container_of(sul, http_t, tick);
    int64_t now = (int64_t)time(NULL);
    if (now != http->last_sweep) {
        http->last_sweep = now;
        dispatch_sweep(http->routes.dispatch, now, http->routes.reauthorization_lead);
        ws_sweep(http->routes.ws, now, http->routes.reauthorization_lead);
        rest_sweep(http->routes.rest);
    }
    /* Replays paused for a full queue or an unavailable store resume here at the latest. */
    if (dispatch_replay(http->routes.dispatch)) {
        lws_cancel_service(http->context);
    }
    lws_sul_schedule(http->context, 0, &http->tick, tick, HTTP_TICK_US);
}

http_t *http_new(const char *address, int port, const http_routes_t *routes, struct herr *err)
{
    struct lws_context_creation_info info;
    http_t *http = xcalloc(1, sizeof(*http));
    http->routes = *routes;
    http->ws = routes->ws;

    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_to_ours);
    memset(&info, 0, sizeof(info));
    info.port = port;
    info.iface = address;
    info.protocols = protocols;
    info.user = http;
    info.max_http_header_data = HTTP_MAX_HEADER_BYTES;
    info.max_http_header_pool = HTTP_HEADER_BUFFERS;
    info.options =
        LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_DISABLE_IPV6 | LWS_SERVER_OPTION_LIBEV;
    /* libwebsockets' own loop polls every descriptor on every turn: with 10,000 idle
     * connections beside 100 busy ones the broker fell behind 20,000 events a second
     * (34,000 of the 40,000 deliveries a second, p50 302 ms; bench/idle_company.sh, see
     * bench/RESULTS.md). libev's epoll costs by what is ready, not by what is open. The loop is
     * ours (a "foreign" loop), so that libwebsockets installs no signal watcher over the broker's
     * handlers, and http_service runs it one turn at a time. */
    http->loop = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV | EVFLAG_NOSIGMASK);
    if (http->loop == NULL) {
        free(http);
        herr_set(err, HEROLD_E_SYSTEM, "http: cannot create the event loop (epoll)");
        return NULL;
    }
    void *foreign_loops[1] = {http->loop};
    info.foreign_loops = foreign_loops;
    if (routes->tls_cert != NULL) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = routes->tls_cert;
        info.ssl_private_key_filepath = routes->tls_key;
        /* TLS 1.2 is the floor. */
        info.ssl_options_set =
            SSL_OP_NO_SSLv2 | SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1;
        /* HTTP/1.1 only: WebSockets and the handlers here speak it; h2 would need its own
         * stream handling. */
        info.alpn = "http/1.1";
    }
    http->context = lws_create_context(&info);
    if (http->context == NULL) {
        ev_loop_destroy(http->loop);
        free(http);
        herr_set(err, HEROLD_E_SYSTEM,
                 "http: cannot listen on %s:%d%s (or libwebsockets' libev plugin, Debian "
                 "package libwebsockets-evlib-ev, is missing)",
                 address, port,
                 routes->tls_cert != NULL ? " (or the TLS certificate or key cannot be loaded)"
                                          : "");
        return NULL;
    }
    lws_sul_schedule(http->context, 0, &http->tick, tick, HTTP_TICK_US);
    return http;
}

void http_free(http_t *http)
{
    if (http == NULL) {
        return;
    }
    lws_sul_cancel(&http->tick);
    lws_context_destroy(http->context);
    ev_loop_destroy(http->loop);
    free(http);
}

int http_service(http_t *http)
{
    /* One turn of the loop: it returns after handling what woke it, a signal included.
     * (lws_service would run libev until the loop stops.) */
    ev_run(http->loop, EVRUN_ONCE);
    return 0;
}

void http_wake(http_t *http)
{
    lws_cancel_service(http->context);
}

void http_drain(http_t *http, int timeout_ms)
{
    struct timespec start;
    struct timespec now;
    ws_close_all(http->ws);
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (ws_session_count(http->ws) > 0) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (elapsed >= timeout_ms) {
            break;
        }
        ev_run(http->loop, EVRUN_ONCE);
    }
}
