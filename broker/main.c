/*
 * herold: wiring only. Configuration, then the modules from the store side to the client
 * side (auth, subscriptions, the dispatch channel, WebSocket layer, HTTP listener, ingest),
 * then the service loop until SIGINT or SIGTERM, then an orderly shutdown in reverse.
 *
 * Threads: the main thread runs the libwebsockets service loop (http, ws, subs, dispatch);
 * the ingest thread owns the ZeroMQ socket. The dispatch channel joins them.
 */

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <openssl/crypto.h>
#include <zmq.h>

#include "auth.h"
#include "chan.h"
#include "config.h"
#include "dispatch.h"
#include "event.h"
#include "http.h"
#include "ingest.h"
#include "clock.h"
#include "log.h"
#include "mem.h"
#include "notif.h"
#include "rest.h"
#include "store.h"
#include "subs.h"
#include "webhook.h"
#include "ws.h"
#include "zap.h"

/* Events accepted by ingest and not yet dispatched; beyond this, ingest waits. */
#define HEROLD_DISPATCH_QUEUE 4096
/* Answers of the webhook thread not yet handled by the service thread. */
/* Generous, so that the delivery thread never waits on it while the service thread waits
 * to hand it commands: results are few (validation answers are capped, one 410 or one
 * outstanding WANT per subscription, one POSITIONS result a second). */
#define HEROLD_WEBHOOK_RESULTS_QUEUE 65536
#define HEROLD_WEBHOOK_STOP_MS 2000
#define HEROLD_DRAIN_MS 2000
#define HEROLD_TOKEN_DEFAULT_TTL 43200
#define HEROLD_TOKEN_MAX_TTL (400LL * 24 * 3600)

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t reload_requested;

struct herold {
    config_t config;
    auth_t *auth;
    subs_t *subs;
    store_t *store;
    int restore_failures;
    chan_t *events;
    chan_t *webhook_results;
    store_writer_t *writer;
    ws_t *ws;
    webhook_t *webhook;
    dispatch_t *dispatch;
    rest_t *rest;
    http_t *http;
    void *zmq;
    ingest_t *ingest;
    zap_t *zap;             /* NULL: plaintext ingest */
    ratelimit_t *creations; /* subscriptions created per user (REST and ws) */
    ratelimit_t *pages;     /* pages of retained notifications read per user */
    char **allowed_origins;
    size_t allowed_origin_count;
    uint64_t highest_cursor; /* of the cursors the store kept */
};

static void on_stop_signal(int signo)
{
    (void)signo;
    stop_requested = 1;
}

static void on_reload_signal(int signo)
{
    (void)signo;
    reload_requested = 1;
}

static void wake_dispatch(void *ctx)
{
    struct herold *h = ctx;
    if (h->http != NULL) { /* not yet, or no longer: the loop drains when it runs */
        http_wake(h->http);
    }
}

/* mkdir -p with mode 0700 for what it creates. */
static int make_directory(const char *path, struct herr *err)
{
    char *copy = xstrdup(path);
    for (char *p = copy + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(copy, 0700) != 0 && errno != EEXIST) {
                herr_set(err, HEROLD_E_SYSTEM, "data: mkdir(%s) failed: %s", copy, strerror(errno));
                free(copy);
                return HEROLD_E_SYSTEM;
            }
            *p = saved;
            if (saved == '\0') {
                break;
            }
        }
    }
    free(copy);
    return 0;
}

/* The token keys in effect. Without public keys, the HS256 secret is created on first use
 * so that `make run` needs no setup; with them, HS256 is accepted only from a secret file
 * given explicitly. */
static auth_t *open_auth(const config_t *cfg, struct herr *err)
{
    bool has_public_keys = cfg->jwt_public_key != NULL || cfg->jwks_file != NULL;
    char *path = NULL;
    if (cfg->jwt_secret_file != NULL || !has_public_keys) {
        path = config_jwt_secret_path(cfg);
        if ((cfg->jwt_secret_file == NULL && make_directory(cfg->data_dir, err) != 0) ||
            auth_secret_file_ensure(path, err) != 0) {
            free(path);
            return NULL;
        }
    }
    auth_config_t auth_config = {
        .secret_file = path,
        .public_key_file = cfg->jwt_public_key,
        .jwks_file = cfg->jwks_file,
        .issuer = cfg->jwt_issuer,
        .audience = cfg->jwt_audience,
        .leeway_seconds = cfg->jwt_leeway,
    };
    auth_t *auth = auth_open(&auth_config, err);
    free(path);
    return auth;
}

/* herold token USER [--groups g1,g2] [--ttl SECONDS] [broker options] */
static int command_token(int argc, char **argv)
{
    const char *user = NULL;
    char *groups_text = NULL;
    long long ttl = HEROLD_TOKEN_DEFAULT_TTL;
    char **rest = xcalloc((size_t)argc + 1, sizeof(char *));
    int rest_count = 0;
    struct herr err;
    config_t cfg;
    int status = 1;

    rest[rest_count++] = argv[0];
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--groups") == 0 && i + 1 < argc) {
            groups_text = argv[++i];
        } else if (strcmp(argv[i], "--ttl") == 0 && i + 1 < argc) {
            char *end;
            errno = 0;
            ttl = strtoll(argv[++i], &end, 10);
            if (errno != 0 || *end != '\0' || ttl < 1 || ttl > HEROLD_TOKEN_MAX_TTL) {
                fprintf(stderr, "herold token: --ttl must be 1..%lld seconds\n",
                        HEROLD_TOKEN_MAX_TTL);
                free(rest);
                return 2;
            }
        } else if (argv[i][0] != '-' && user == NULL) {
            user = argv[i];
        } else {
            rest[rest_count++] = argv[i];
        }
    }
    if (user == NULL) {
        fprintf(stderr, "usage: herold token USER [--groups g1,g2] [--ttl SECONDS] "
                        "[--data DIR | --jwt-secret-file FILE]\n");
        free(rest);
        return 2;
    }
    if (config_load(&cfg, rest_count, rest, &err) != 0) {
        fprintf(stderr, "herold token: %s\n", err.message);
        free(rest);
        return 2;
    }
    free(rest);

    char *groups_copy = groups_text != NULL ? xstrdup(groups_text) : NULL;
    const char *groups[AUTH_MAX_GROUPS + 1];
    size_t group_count = 0;
    for (char *save = NULL, *g = groups_copy != NULL ? strtok_r(groups_copy, ",", &save) : NULL;
         g != NULL; g = strtok_r(NULL, ",", &save)) {
        if (group_count == AUTH_MAX_GROUPS) {
            fprintf(stderr, "herold token: at most %d groups\n", AUTH_MAX_GROUPS);
            goto out;
        }
        groups[group_count++] = g;
    }

    auth_t *auth = open_auth(&cfg, &err);
    if (auth == NULL) {
        fprintf(stderr, "herold token: %s\n", err.message);
        goto out;
    }
    char *token =
        auth_token_sign(auth, user, groups, group_count, (int64_t)time(NULL), (int64_t)ttl, &err);
    auth_free(auth);
    if (token == NULL) {
        fprintf(stderr, "herold token: %s\n", err.message);
        goto out;
    }
    printf("%s\n", token);
    free(token);
    status = 0;
out:
    free(groups_copy);
    config_clear(&cfg);
    return status;
}

static void install_signal_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: the service loop's poll must return with EINTR. */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_reload_signal;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void release_event(void *item)
{
    event_free(item);
}

static void release_result(void *item)
{
    webhook_result_free(item);
}

static void restore_subscription(const char *id, const char *json, void *ctx)
{
    struct herold *h = ctx;
    struct herr err;
    sub_t *sub;
    if (subs_restore(h->subs, id, json, &sub, &err) != 0) {
        log_msg(LOG_LEVEL_ERROR, "herold: %s", err.message);
        h->restore_failures++;
    }
}

static void restore_cursor(const char *key, uint64_t seq, void *ctx)
{
    struct herold *h = ctx;
    dispatch_restore_cursor(h->subs, h->ws, key, seq);
    if (seq > h->highest_cursor) {
        h->highest_cursor = seq;
    }
}

/* A cursor past the store's end means events were delivered that the store no longer
 * holds (a damaged tail was cut, rows were deleted behind the broker's back). Their seqs
 * must not be given to new events: an item id (`<sub>-<seq>`) or a cursor would then name
 * two events, and a receiver that dedupes by id would drop the new one. Empty records,
 * which decode as no event and so concern nobody, fill the gap. */
static int skip_delivered_seqs(struct herold *h, struct herr *err)
{
    uint64_t highest = h->highest_cursor;
    uint64_t last = store_event_last_seq(h->store);
    if (highest <= last) {
        return 0;
    }
    log_msg(LOG_LEVEL_WARN,
            "herold: the store ends at seq %" PRIu64 " but events up to %" PRIu64
            " were delivered; those seqs are skipped, never given again",
            last, highest);
    for (uint64_t seq = last; seq < highest;) {
        int rc = store_event_append(h->store, "", 0, clock_wall_ms(), &seq, err);
        if (rc == 0 && (seq % 4096 == 0 || seq == highest)) {
            rc = store_event_commit(h->store, err);
        }
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static void shutdown_broker(struct herold *h)
{
    if (h->ingest != NULL) {
        ingest_stop(h->ingest);
    }
    if (h->http != NULL) {
        http_drain(h->http, HEROLD_DRAIN_MS);
    }
    if (h->dispatch != NULL) {
        dispatch_mark(h->dispatch); /* nothing more is dispatched after the drain */
    }
    if (h->webhook != NULL) {
        webhook_stop(h->webhook, HEROLD_WEBHOOK_STOP_MS);
    }
    if (h->dispatch != NULL && h->rest != NULL) {
        /* Every change sent is written and applied; then, on this thread, where delivery
         * stands, so that a restart repeats nothing it need not. */
        store_writer_stop(h->writer);
        rest_drain_results(h->rest);
        webhook_result_t *final = webhook_take_final_positions(h->webhook);
        if (final != NULL) {
            dispatch_webhook_positions(h->dispatch, final);
            webhook_result_free(final);
        }
        dispatch_flush_cursors(h->dispatch);
        rest_drain_results(h->rest);
    }
    http_free(h->http);
    ingest_free(h->ingest);
    zap_free(h->zap); /* after the ingest socket: libzmq may still ask it until then */
    rest_free(h->rest);
    dispatch_free(h->dispatch);
    ws_free(h->ws);
    subs_free(h->subs);
    webhook_free(h->webhook);
    store_writer_free(h->writer);
    store_close(h->store);
    chan_free(h->events);
    chan_free(h->webhook_results);
    if (h->zmq != NULL) {
        zmq_ctx_term(h->zmq);
    }
    auth_free(h->auth);
    ratelimit_free(h->creations);
    ratelimit_free(h->pages);
    for (size_t i = 0; i < h->allowed_origin_count; i++) {
        free(h->allowed_origins[i]);
    }
    free(h->allowed_origins);
    config_clear(&h->config);
}

/* The page's directory: the configured one, or clients/web below the working directory
 * (where `make run` starts the broker) when it exists. */
static const char *web_root(const config_t *config)
{
    struct stat st;
    const char *dir = config->web_root != NULL ? config->web_root : "clients/web";
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        if (config->web_root != NULL) {
            log_msg(LOG_LEVEL_WARN, "herold: --web %s is not a directory: no page at /", dir);
        }
        return NULL;
    }
    return dir;
}

/* --allowed-origins as a list; spaces around the commas do not count. */
static void parse_origins(struct herold *h)
{
    if (h->config.allowed_origins == NULL) {
        return;
    }
    char *copy = xstrdup(h->config.allowed_origins);
    for (char *save = NULL, *o = strtok_r(copy, ",", &save); o != NULL;
         o = strtok_r(NULL, ",", &save)) {
        while (*o == ' ') {
            o++;
        }
        size_t len = strlen(o);
        while (len > 0 && o[len - 1] == ' ') {
            o[--len] = '\0';
        }
        if (len > 0) {
            h->allowed_origins =
                xrealloc(h->allowed_origins, (h->allowed_origin_count + 1) * sizeof(char *));
            h->allowed_origins[h->allowed_origin_count++] = xstrdup(o);
        }
    }
    free(copy);
}

/* SIGHUP: the token keys are read again. Connections stay; tokens already accepted stay
 * valid until they expire. A source that cannot be read keeps the keys in use. */
static void reload_keys(struct herold *h)
{
    struct herr err;
    if (auth_reload(h->auth, &err) != 0) {
        log_msg(LOG_LEVEL_ERROR, "herold: SIGHUP: keys kept as they were: %s", err.message);
    } else {
        log_msg(LOG_LEVEL_INFO, "herold: SIGHUP: %zu token keys loaded", auth_key_count(h->auth));
    }
    if (h->zap != NULL) {
        if (zap_reload(h->zap, &err) != 0) {
            log_msg(LOG_LEVEL_ERROR, "herold: SIGHUP: publisher keys kept as they were: %s",
                    err.message);
        } else {
            log_msg(LOG_LEVEL_INFO, "herold: SIGHUP: %zu publisher keys loaded",
                    zap_key_count(h->zap));
        }
    }
}

/* Publisher authentication: CurveZMQ with the keys file, or plaintext where only this
 * machine can reach the endpoint (or the operator said --ingest-insecure). Sets
 * *secret_key to the broker's CURVE secret key (caller frees and clears), or NULL. */
static int open_ingest_security(struct herold *h, char **secret_key, struct herr *err)
{
    *secret_key = NULL;
    if (h->config.ingest_keys == NULL) {
        if (zap_endpoint_is_local(h->config.ingest)) {
            return 0;
        }
        if (!h->config.ingest_insecure) {
            return herr_set(err, HEROLD_E_CONFIG,
                            "ingest: %s is reachable from other machines: give publisher keys "
                            "(--ingest-keys) or accept plaintext with --ingest-insecure",
                            h->config.ingest);
        }
        log_msg(LOG_LEVEL_WARN,
                "herold: ingest on %s is plaintext and unauthenticated (--ingest-insecure)",
                h->config.ingest);
        return 0;
    }
    char *path = config_ingest_server_key_path(&h->config);
    zap_keypair_t keypair;
    int rc = 0;
    if (h->config.ingest_server_key == NULL) {
        rc = make_directory(h->config.data_dir, err);
    }
    if (rc == 0) {
        rc = zap_keypair_ensure(path, &keypair, err);
    }
    free(path);
    if (rc != 0) {
        return rc;
    }
    h->zap = zap_new(h->zmq, h->config.ingest_keys, err);
    if (h->zap == NULL) {
        OPENSSL_cleanse(&keypair, sizeof(keypair));
        return err->code;
    }
    log_msg(LOG_LEVEL_INFO, "herold: ingest is CurveZMQ, server key %s, %zu publisher keys",
            keypair.public_key, zap_key_count(h->zap));
    *secret_key = xstrdup(keypair.secret_key);
    OPENSSL_cleanse(&keypair, sizeof(keypair));
    return 0;
}

static int run_broker(int argc, char **argv)
{
    struct herold h;
    struct herr err;
    memset(&h, 0, sizeof(h));

    if (config_load(&h.config, argc, argv, &err) != 0) {
        fprintf(stderr, "herold: %s\n", err.message);
        return 2;
    }
    if (h.config.is_help) {
        config_usage(stdout);
        return 0;
    }
    log_set_level((enum log_level)log_level_parse(h.config.log_level));
    install_signal_handlers();

    h.auth = open_auth(&h.config, &err);
    if (h.auth == NULL) {
        log_msg(LOG_LEVEL_ERROR, "herold: %s", err.message);
        shutdown_broker(&h);
        return 1;
    }
    h.subs = subs_new();
    h.ws = ws_new(h.auth, h.subs); /* before the store: it hands over users' cursors */
    h.creations = ratelimit_new(h.config.max_subscriptions_per_minute / 60.0,
                                h.config.max_subscriptions_per_minute);
    h.pages = ratelimit_new(h.config.max_pages_per_second, h.config.max_pages_per_second);
    parse_origins(&h);
    ws_limits_t limits = {
        .max_connections_per_user = h.config.max_connections_per_user,
        .ops_per_second = h.config.max_ops_per_second,
        .creations = h.creations,
        .creations_per_minute = h.config.max_subscriptions_per_minute,
        .allowed_origins = h.allowed_origins,
        .allowed_origin_count = h.allowed_origin_count,
    };
    ws_set_limits(h.ws, &limits);
    store_config_t store_config = {
        .data_dir = h.config.data_dir,
        .conninfo = h.config.store,
        .retention_ms = h.config.retention_seconds * 1000,
        .retention_bytes = h.config.retention_bytes,
        .segment_bytes = h.config.segment_bytes,
    };
    store_loader_t loader = {restore_subscription, restore_cursor, &h};
    if (h.config.store == NULL) {
        h.store = store_file_open(&store_config, &loader, &err);
    } else if (strcmp(h.config.store, "memory:") == 0) {
        log_msg(LOG_LEVEL_WARN, "herold: the memory store keeps nothing: acked events, "
                                "subscriptions and cursors are lost at exit");
        h.store = store_mem_open(&store_config, &loader, &err);
    } else {
        h.store = store_pg_open(&store_config, &loader, &err);
    }
    if (h.store == NULL || h.restore_failures > 0) {
        if (h.store == NULL) {
            log_msg(LOG_LEVEL_ERROR, "herold: %s", err.message);
        }
        shutdown_broker(&h);
        return 1;
    }
    log_msg(LOG_LEVEL_INFO, "herold: %s store holds events %" PRIu64 "..%" PRIu64,
            store_name(h.store), store_event_first_seq(h.store), store_event_last_seq(h.store));
    log_msg(LOG_LEVEL_INFO, "herold: %zu subscriptions restored", subs_count(h.subs));
    if (skip_delivered_seqs(&h, &err) != 0) {
        log_msg(LOG_LEVEL_ERROR, "herold: %s", err.message);
        shutdown_broker(&h);
        return 1;
    }
    h.events = chan_new(HEROLD_DISPATCH_QUEUE, wake_dispatch, &h, release_event);
    h.webhook_results = chan_new(HEROLD_WEBHOOK_RESULTS_QUEUE, wake_dispatch, &h, release_result);

    webhook_config_t webhook_config;
    webhook_config_init(&webhook_config);
    webhook_config.max_batch_items = h.config.webhook_batch_items;
    webhook_config.first_retry_ms = h.config.webhook_first_retry_ms;
    webhook_config.max_retry_ms = h.config.webhook_max_retry_ms;
    webhook_config.allow_private = h.config.webhook_allow_private;
    webhook_config.ca_file = h.config.webhook_ca_file;
    h.webhook = webhook_new(&webhook_config, h.webhook_results, &err);
    if (h.webhook == NULL || webhook_start(h.webhook, &err) != 0) {
        log_msg(LOG_LEVEL_ERROR, "herold: %s", err.message);
        shutdown_broker(&h);
        return 1;
    }
    h.writer = store_writer_new(h.store, wake_dispatch, &h, &err);
    if (h.writer == NULL) {
        log_msg(LOG_LEVEL_ERROR, "herold: %s", err.message);
        shutdown_broker(&h);
        return 1;
    }
    h.dispatch = dispatch_new(h.subs, h.ws, h.webhook, h.store, h.writer, h.events);
    rest_config_t rest_config = {
        .allow_private = h.config.webhook_allow_private,
        .min_expiration_seconds = h.config.subscription_min_seconds,
        .max_expiration_minutes = h.config.subscription_max_minutes,
        .max_subscriptions_per_user = h.config.max_subscriptions_per_user,
        .is_tls = h.config.tls_cert != NULL,
        .creations = h.creations,
        .creations_per_minute = h.config.max_subscriptions_per_minute,
        .pages = h.pages,
        .pages_per_second = h.config.max_pages_per_second,
    };
    h.rest =
        rest_new(&rest_config, h.auth, h.subs, h.dispatch, h.webhook, h.webhook_results, h.writer);
    http_routes_t routes = {
        .ws = h.ws,
        .rest = h.rest,
        .dispatch = h.dispatch,
        .reauthorization_lead = h.config.reauthorization_lead_s,
        .tls_cert = h.config.tls_cert,
        .tls_key = h.config.tls_key,
        .web_root = web_root(&h.config),
    };
    h.http = http_new(h.config.http_address, h.config.http_port, &routes, &err);
    if (h.http == NULL) {
        log_msg(LOG_LEVEL_ERROR, "herold: %s", err.message);
        shutdown_broker(&h);
        return 1;
    }
    /* Only now: a target that catches up answers at once through webhook_results, whose
     * wake-up (wake_dispatch) needs h.http. */
    dispatch_restore_targets(h.dispatch);
    h.zmq = zmq_ctx_new();
    char *curve_secret_key = NULL;
    if (open_ingest_security(&h, &curve_secret_key, &err) != 0) {
        log_msg(LOG_LEVEL_ERROR, "herold: %s", err.message);
        shutdown_broker(&h);
        return 1;
    }
    h.ingest = ingest_new(h.zmq, h.config.ingest, curve_secret_key, h.store, h.events, &err);
    if (curve_secret_key != NULL) {
        OPENSSL_clear_free(curve_secret_key, strlen(curve_secret_key));
    }
    if (h.ingest == NULL || ingest_start(h.ingest, &err) != 0) {
        log_msg(LOG_LEVEL_ERROR, "herold: %s", err.message);
        shutdown_broker(&h);
        return 1;
    }
    log_msg(LOG_LEVEL_INFO, "herold: ready http=%s://%s:%d ingest=%s store=%s",
            h.config.tls_cert != NULL ? "https" : "http", h.config.http_address, h.config.http_port,
            h.config.ingest, store_name(h.store));

    notif_pool_begin(); /* the service thread makes the notifications */
    while (!stop_requested) {
        if (http_service(h.http) != 0) {
            log_msg(LOG_LEVEL_ERROR, "herold: the service loop failed");
            break;
        }
        if (reload_requested) {
            reload_requested = 0;
            reload_keys(&h);
        }
    }
    log_msg(LOG_LEVEL_INFO, "herold: shutting down");
    shutdown_broker(&h);
    notif_pool_end();
    log_msg(LOG_LEVEL_INFO, "herold: stopped");
    return 0;
}

/* herold keygen FILE: a new CurveZMQ keypair for a publisher (or a broker). */
static int command_keygen(int argc, char **argv)
{
    if (argc != 3 || argv[2][0] == '-') {
        fprintf(stderr, "usage: herold keygen FILE\n");
        return 2;
    }
    struct herr err;
    zap_keypair_t keypair;
    struct stat st;
    if (stat(argv[2], &st) == 0) {
        fprintf(stderr, "herold keygen: %s exists; not overwritten\n", argv[2]);
        return 1;
    }
    if (zap_keypair_ensure(argv[2], &keypair, &err) != 0) {
        fprintf(stderr, "herold keygen: %s\n", err.message);
        return 1;
    }
    printf("%s\n", keypair.public_key);
    OPENSSL_cleanse(&keypair, sizeof(keypair));
    return 0;
}

/* herold ingest-key [broker options]: the broker's CurveZMQ public key, which publishers
 * need (the keypair is made if missing). */
static int command_ingest_key(int argc, char **argv)
{
    struct herr err;
    config_t cfg;
    char **args = xcalloc((size_t)argc, sizeof(char *));
    args[0] = argv[0];
    for (int i = 2; i < argc; i++) {
        args[i - 1] = argv[i];
    }
    int rc = config_load(&cfg, argc - 1, args, &err);
    free(args);
    if (rc != 0) {
        fprintf(stderr, "herold ingest-key: %s\n", err.message);
        return 2;
    }
    char *path = config_ingest_server_key_path(&cfg);
    zap_keypair_t keypair;
    int status = 1;
    if ((cfg.ingest_server_key != NULL || make_directory(cfg.data_dir, &err) == 0) &&
        zap_keypair_ensure(path, &keypair, &err) == 0) {
        printf("%s\n", keypair.public_key);
        OPENSSL_cleanse(&keypair, sizeof(keypair));
        status = 0;
    } else {
        fprintf(stderr, "herold ingest-key: %s\n", err.message);
    }
    free(path);
    config_clear(&cfg);
    return status;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "token") == 0) {
        return command_token(argc, argv);
    }
    if (argc >= 2 && strcmp(argv[1], "keygen") == 0) {
        return command_keygen(argc, argv);
    }
    if (argc >= 2 && strcmp(argv[1], "ingest-key") == 0) {
        return command_ingest_key(argc, argv);
    }
    return run_broker(argc, argv);
}
