#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "log.h"
#include "mem.h"

struct option_def {
    const char *name; /* flag name without "--", also the config file key */
    const char *env;  /* environment variable */
    size_t offset;    /* of the char * member in config_t */
    const char *help;
    bool is_flag; /* takes no value on the command line ("true" when given) */
};

static const struct option_def option_defs[] = {
    {"http", "HEROLD_HTTP", offsetof(config_t, http),
     "ADDR:PORT of the HTTP and WebSocket listener (default " CONFIG_DEFAULT_HTTP ")", false},
    {"ingest", "HEROLD_INGEST", offsetof(config_t, ingest),
     "ZeroMQ endpoint of the ingest socket (default " CONFIG_DEFAULT_INGEST ")", false},
    {"ingest-keys", "HEROLD_INGEST_KEYS", offsetof(config_t, ingest_keys),
     "publisher public keys (Z85, one per line): ingest becomes CurveZMQ and only these may "
     "publish; reloaded on SIGHUP",
     false},
    {"ingest-server-key", "HEROLD_INGEST_SERVER_KEY", offsetof(config_t, ingest_server_key),
     "the broker's CurveZMQ keypair file, created if missing (default DATA/ingest.key)", false},
    {"ingest-insecure", "HEROLD_INGEST_INSECURE", offsetof(config_t, ingest_insecure_text),
     "allow a plaintext ingest endpoint that other machines can reach (default off)", true},
    {"data", "HEROLD_DATA", offsetof(config_t, data_dir),
     "data directory, created if missing (default " CONFIG_DEFAULT_DATA ")", false},
    {"store", "HEROLD_STORE", offsetof(config_t, store),
     "postgresql://... keeps events, subscriptions and cursors in PostgreSQL instead of DATA; "
     "memory: keeps them nowhere (benchmarks only: nothing survives a restart)",
     false},
    {"retention-seconds", "HEROLD_RETENTION_SECONDS", offsetof(config_t, retention_seconds_text),
     "how long events stay stored for resume and catch-up (default 604800, 7 days)", false},
    {"retention-bytes", "HEROLD_RETENTION_BYTES", offsetof(config_t, retention_bytes_text),
     "the most bytes of stored events; the oldest go first (default 1073741824)", false},
    {"segment-bytes", "HEROLD_SEGMENT_BYTES", offsetof(config_t, segment_bytes_text),
     "embedded store: journal segment size, retention deletes whole segments (default "
     "67108864)",
     false},
    {"jwt-secret-file", "HEROLD_JWT_SECRET_FILE", offsetof(config_t, jwt_secret_file),
     "HS256 token secret; created with a random secret if missing (default DATA/jwt.secret)",
     false},
    {"jwt-public-key", "HEROLD_JWT_PUBLIC_KEY", offsetof(config_t, jwt_public_key),
     "PEM public keys (RSA >= 2048 bits: RS256; EC P-256: ES256) that sign tokens; "
     "reloaded on SIGHUP",
     false},
    {"jwks-file", "HEROLD_JWKS_FILE", offsetof(config_t, jwks_file),
     "a JWK Set of RS256/ES256 keys, kid selecting; reloaded on SIGHUP. With either, HS256 "
     "tokens are accepted only if --jwt-secret-file is given too",
     false},
    {"jwt-issuer", "HEROLD_JWT_ISSUER", offsetof(config_t, jwt_issuer),
     "the iss claim every token must carry (default: not checked)", false},
    {"jwt-audience", "HEROLD_JWT_AUDIENCE", offsetof(config_t, jwt_audience),
     "the audience every token's aud claim must name (default: not checked)", false},
    {"jwt-leeway", "HEROLD_JWT_LEEWAY", offsetof(config_t, jwt_leeway_text),
     "seconds of clock skew allowed on exp and nbf, 0..600 (default 30)", false},
    {"web", "HEROLD_WEB", offsetof(config_t, web_root),
     "directory of the live-alert page served at / (default clients/web when it exists)", false},
    {"log-level", "HEROLD_LOG_LEVEL", offsetof(config_t, log_level),
     "debug, info, warn or error (default info)", false},
    {"tls-cert", "HEROLD_TLS_CERT", offsetof(config_t, tls_cert),
     "PEM certificate (chain): serve https and wss on the HTTP port (TLS 1.2 or later)", false},
    {"tls-key", "HEROLD_TLS_KEY", offsetof(config_t, tls_key), "PEM private key of --tls-cert",
     false},
    {"webhook-allow-private", "HEROLD_WEBHOOK_ALLOW_PRIVATE",
     offsetof(config_t, webhook_allow_private_text),
     "allow webhook targets on loopback, private, link-local addresses (default off)", true},
    {"webhook-ca-file", "HEROLD_WEBHOOK_CA_FILE", offsetof(config_t, webhook_ca_file),
     "a CA file trusted for https webhooks besides the system's", false},
    {"webhook-batch-items", "HEROLD_WEBHOOK_BATCH_ITEMS",
     offsetof(config_t, webhook_batch_items_text),
     "items per webhook request, 1..1000 (default 100)", false},
    {"webhook-first-retry-ms", "HEROLD_WEBHOOK_FIRST_RETRY_MS",
     offsetof(config_t, webhook_first_retry_ms_text),
     "bound of the first retry after a failed delivery (default 5000)", false},
    {"webhook-max-retry-ms", "HEROLD_WEBHOOK_MAX_RETRY_MS",
     offsetof(config_t, webhook_max_retry_ms_text),
     "longest wait between delivery retries (default 600000)", false},
    {"subscription-min-seconds", "HEROLD_SUBSCRIPTION_MIN_SECONDS",
     offsetof(config_t, subscription_min_seconds_text),
     "expirations closer than this are raised to it (default 2700)", false},
    {"subscription-max-minutes", "HEROLD_SUBSCRIPTION_MAX_MINUTES",
     offsetof(config_t, subscription_max_minutes_text),
     "expirations further ahead are refused (default 42300)", false},
    {"reauthorization-lead", "HEROLD_REAUTHORIZATION_LEAD",
     offsetof(config_t, reauthorization_lead_text),
     "seconds before expiry that reauthorizationRequired is sent (default 600)", false},
    {"max-connections-per-user", "HEROLD_MAX_CONNECTIONS_PER_USER",
     offsetof(config_t, max_connections_per_user_text),
     "WebSocket connections one user may hold open, 0 for no limit (default 32)", false},
    {"max-ops-per-second", "HEROLD_MAX_OPS_PER_SECOND", offsetof(config_t, max_ops_per_second_text),
     "messages a WebSocket connection may send per second, in bursts of twice that or 512 "
     "(default 100)",
     false},
    {"max-subscriptions-per-minute", "HEROLD_MAX_SUBSCRIPTIONS_PER_MINUTE",
     offsetof(config_t, max_subscriptions_per_minute_text),
     "subscriptions one user may create per minute, REST and WebSocket together; more get "
     "429 with Retry-After (default 600)",
     false},
    {"max-pages-per-second", "HEROLD_MAX_PAGES_PER_SECOND",
     offsetof(config_t, max_pages_per_second_text),
     "pages of retained notifications (GET .../notifications) one user may read per second, "
     "in bursts of as many; more get 429 with Retry-After (default 20)",
     false},
    {"allowed-origins", "HEROLD_ALLOWED_ORIGINS", offsetof(config_t, allowed_origins),
     "comma-separated Origin values a browser's WebSocket may come from (default: any)", false},
    {"max-subscriptions-per-user", "HEROLD_MAX_SUBSCRIPTIONS_PER_USER",
     offsetof(config_t, max_subscriptions_per_user_text),
     "persistent subscriptions one user may hold (default 1000)", false},
};

#define OPTION_COUNT (sizeof(option_defs) / sizeof(option_defs[0]))

static char **member(config_t *cfg, const struct option_def *def)
{
    return (char **)((char *)cfg + def->offset);
}

static void set_value(config_t *cfg, const struct option_def *def, const char *value)
{
    char **slot = member(cfg, def);
    free(*slot);
    *slot = xstrdup(value);
}

static const struct option_def *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        if (strlen(option_defs[i].name) == len && memcmp(option_defs[i].name, name, len) == 0) {
            return &option_defs[i];
        }
    }
    return NULL;
}

void config_usage(FILE *out)
{
    fprintf(out, "usage: herold [options]\n"
                 "       herold token USER [--groups g1,g2] [--ttl SECONDS] [--data DIR | "
                 "--jwt-secret-file FILE]\n"
                 "       herold ingest-key [--data DIR | --ingest-server-key FILE]   "
                 "(the broker's CurveZMQ public key)\n"
                 "       herold keygen FILE   (a new CurveZMQ keypair for a publisher)\n"
                 "\noptions:\n");
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        fprintf(out, "  --%-28s %s\n", option_defs[i].name, option_defs[i].help);
    }
    fprintf(out, "  --%-28s %s\n", "config FILE", "read `name = value` lines (names as above)");
    fprintf(out, "  --%-28s %s\n", "help", "print this text");
    fprintf(out, "\nEvery option may also be set in the environment as HEROLD_<NAME> "
                 "(e.g. HEROLD_HTTP).\nPrecedence: flags, environment, config file, "
                 "defaults.\n");
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) {
        s++;
    }
    size_t len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1])) {
        s[--len] = '\0';
    }
    return s;
}

static int load_file(config_t *cfg, const char *path, struct herr *err)
{
    char line[CONFIG_MAX_LINE_BYTES];
    int number = 0;
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        return herr_set(err, HEROLD_E_CONFIG, "config: cannot open %s: %s", path, strerror(errno));
    }
    while (fgets(line, sizeof(line), file) != NULL) {
        number++;
        if (strchr(line, '\n') == NULL && !feof(file)) {
            fclose(file);
            return herr_set(err, HEROLD_E_CONFIG, "config: %s:%d: line longer than %d bytes", path,
                            number, CONFIG_MAX_LINE_BYTES - 2);
        }
        char *text = trim(line);
        if (text[0] == '\0' || text[0] == '#') {
            continue;
        }
        char *eq = strchr(text, '=');
        if (eq == NULL) {
            fclose(file);
            return herr_set(err, HEROLD_E_CONFIG, "config: %s:%d: expected `name = value`", path,
                            number);
        }
        *eq = '\0';
        char *name = trim(text);
        char *value = trim(eq + 1);
        const struct option_def *def = find_option(name, strlen(name));
        if (def == NULL) {
            fclose(file);
            return herr_set(err, HEROLD_E_CONFIG, "config: %s:%d: unknown option '%.64s'", path,
                            number, name);
        }
        set_value(cfg, def, value);
    }
    fclose(file);
    return 0;
}

int config_parse_http(const char *text, char **address, int *port, struct herr *err)
{
    const char *colon = strrchr(text, ':');
    char *end;
    if (colon == NULL || colon == text) {
        return herr_set(err, HEROLD_E_CONFIG, "http: '%.64s' is not ADDR:PORT", text);
    }
    errno = 0;
    long value = strtol(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || end == colon + 1 || value < 1 || value > 65535) {
        return herr_set(err, HEROLD_E_CONFIG, "http: '%.64s' has no port in 1..65535", text);
    }
    *address = xstrndup(text, (size_t)(colon - text));
    *port = (int)value;
    return 0;
}

/* A whole decimal number in [min, max]; absent (NULL) gives fallback. */
static int parse_number(const char *name, const char *text, int64_t fallback, int64_t min,
                        int64_t max, int64_t *out, struct herr *err)
{
    char *end;
    if (text == NULL) {
        *out = fallback;
        return 0;
    }
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max) {
        return herr_set(err, HEROLD_E_CONFIG, "%s: '%.32s' is not a number in %lld..%lld", name,
                        text, (long long)min, (long long)max);
    }
    *out = value;
    return 0;
}

static int parse_bool(const char *name, const char *text, bool *out, struct herr *err)
{
    if (text == NULL || strcmp(text, "false") == 0 || strcmp(text, "0") == 0) {
        *out = false;
    } else if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0) {
        *out = true;
    } else {
        return herr_set(err, HEROLD_E_CONFIG, "%s: '%.32s' is not true or false", name, text);
    }
    return 0;
}

static int finish(config_t *cfg, struct herr *err)
{
    int64_t value;
    if (cfg->http == NULL) {
        cfg->http = xstrdup(CONFIG_DEFAULT_HTTP);
    }
    if (cfg->ingest == NULL) {
        cfg->ingest = xstrdup(CONFIG_DEFAULT_INGEST);
    }
    if (cfg->data_dir == NULL) {
        cfg->data_dir = xstrdup(CONFIG_DEFAULT_DATA);
    }
    if (cfg->log_level == NULL) {
        cfg->log_level = xstrdup("info");
    }
    if (log_level_parse(cfg->log_level) < 0) {
        return herr_set(err, HEROLD_E_CONFIG,
                        "log-level: '%.32s' is not debug, info, warn or error", cfg->log_level);
    }
    if (parse_bool("ingest-insecure", cfg->ingest_insecure_text, &cfg->ingest_insecure, err) != 0) {
        return HEROLD_E_CONFIG;
    }
    if (parse_bool("webhook-allow-private", cfg->webhook_allow_private_text,
                   &cfg->webhook_allow_private, err) != 0 ||
        parse_number("webhook-batch-items", cfg->webhook_batch_items_text, 100, 1, 1000, &value,
                     err) != 0) {
        return HEROLD_E_CONFIG;
    }
    cfg->webhook_batch_items = (int)value;
    if (parse_number("webhook-first-retry-ms", cfg->webhook_first_retry_ms_text, 5000, 1, 10000,
                     &value, err) != 0) {
        return HEROLD_E_CONFIG;
    }
    cfg->webhook_first_retry_ms = (int)value;
    if (parse_number("webhook-max-retry-ms", cfg->webhook_max_retry_ms_text, 600000, 1, 86400000,
                     &value, err) != 0) {
        return HEROLD_E_CONFIG;
    }
    cfg->webhook_max_retry_ms = (int)value;
    if (parse_number("subscription-min-seconds", cfg->subscription_min_seconds_text, 2700, 1, 86400,
                     &cfg->subscription_min_seconds, err) != 0 ||
        parse_number("subscription-max-minutes", cfg->subscription_max_minutes_text, 42300, 1,
                     525600, &cfg->subscription_max_minutes, err) != 0 ||
        parse_number("reauthorization-lead", cfg->reauthorization_lead_text, 600, 0, 86400,
                     &cfg->reauthorization_lead_s, err) != 0 ||
        parse_number("max-subscriptions-per-user", cfg->max_subscriptions_per_user_text, 1000, 0,
                     1000000, &value, err) != 0) {
        return HEROLD_E_CONFIG;
    }
    cfg->max_subscriptions_per_user = (int)value;
    if (parse_number("max-connections-per-user", cfg->max_connections_per_user_text, 32, 0, 1000000,
                     &value, err) != 0) {
        return HEROLD_E_CONFIG;
    }
    cfg->max_connections_per_user = (int)value;
    if (parse_number("max-ops-per-second", cfg->max_ops_per_second_text, 100, 1, 1000000, &value,
                     err) != 0) {
        return HEROLD_E_CONFIG;
    }
    cfg->max_ops_per_second = (int)value;
    if (parse_number("max-subscriptions-per-minute", cfg->max_subscriptions_per_minute_text, 600, 1,
                     1000000, &value, err) != 0) {
        return HEROLD_E_CONFIG;
    }
    cfg->max_subscriptions_per_minute = (int)value;
    if (parse_number("max-pages-per-second", cfg->max_pages_per_second_text, 20, 1, 1000000, &value,
                     err) != 0) {
        return HEROLD_E_CONFIG;
    }
    cfg->max_pages_per_second = (int)value;
    if (parse_number("jwt-leeway", cfg->jwt_leeway_text, AUTH_CLOCK_LEEWAY_SECONDS, 0,
                     AUTH_MAX_LEEWAY_SECONDS, &cfg->jwt_leeway, err) != 0) {
        return HEROLD_E_CONFIG;
    }
    if (parse_number("retention-seconds", cfg->retention_seconds_text, 604800, 1,
                     10LL * 365 * 86400, &cfg->retention_seconds, err) != 0 ||
        parse_number("retention-bytes", cfg->retention_bytes_text, 1073741824LL, 1024 * 1024,
                     INT64_MAX / 2, &value, err) != 0) {
        return HEROLD_E_CONFIG;
    }
    cfg->retention_bytes = (uint64_t)value;
    if (parse_number("segment-bytes", cfg->segment_bytes_text, 64LL * 1024 * 1024, 64 * 1024,
                     4LL * 1024 * 1024 * 1024, &value, err) != 0) {
        return HEROLD_E_CONFIG;
    }
    cfg->segment_bytes = (uint64_t)value;
    if (cfg->store != NULL && strncmp(cfg->store, "postgresql://", 13) != 0 &&
        strncmp(cfg->store, "postgres://", 11) != 0 && strcmp(cfg->store, "memory:") != 0) {
        return herr_set(err, HEROLD_E_CONFIG,
                        "store: '%.32s' is neither a postgresql:// URI nor memory: (omit it for "
                        "the embedded store under --data)",
                        cfg->store);
    }
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
        return herr_set(err, HEROLD_E_CONFIG, "tls-cert and tls-key: give both or neither");
    }
    const char *tls_files[] = {cfg->tls_cert, cfg->tls_key};
    const char *tls_names[] = {"tls-cert", "tls-key"};
    for (int i = 0; i < 2 && cfg->tls_cert != NULL; i++) {
        FILE *file = fopen(tls_files[i], "r");
        if (file == NULL) {
            return herr_set(err, HEROLD_E_CONFIG, "%s: cannot read %.200s: %s", tls_names[i],
                            tls_files[i], strerror(errno));
        }
        fclose(file);
    }
    if (cfg->subscription_min_seconds > cfg->subscription_max_minutes * 60) {
        return herr_set(err, HEROLD_E_CONFIG,
                        "subscription-min-seconds: larger than subscription-max-minutes");
    }
    return config_parse_http(cfg->http, &cfg->http_address, &cfg->http_port, err);
}

int config_load(config_t *cfg, int argc, char **argv, struct herr *err)
{
    const char *config_file = NULL;
    memset(cfg, 0, sizeof(*cfg));

    /* First pass: --help and --config, which decide what the other sources are. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cfg->is_help = 1;
            return 0;
        }
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                return herr_set(err, HEROLD_E_CONFIG, "--config needs a value");
            }
            config_file = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config_file = argv[i] + 9;
        }
    }
    int rc = 0;
    if (config_file != NULL) {
        rc = load_file(cfg, config_file, err);
    }
    for (size_t i = 0; rc == 0 && i < OPTION_COUNT; i++) {
        const char *value = getenv(option_defs[i].env);
        if (value != NULL && value[0] != '\0') {
            set_value(cfg, &option_defs[i], value);
        }
    }
    for (int i = 1; rc == 0 && i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            rc = herr_set(err, HEROLD_E_CONFIG, "unexpected argument '%.64s' (see --help)", arg);
            break;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        const char *value = eq != NULL ? eq + 1 : NULL;
        if (name_len == 6 && strncmp(name, "config", 6) == 0) {
            i += value == NULL;
            continue;
        }
        const struct option_def *def = find_option(name, name_len);
        if (def == NULL) {
            rc = herr_set(err, HEROLD_E_CONFIG, "unknown option '%.64s' (see --help)", arg);
            break;
        }
        if (value == NULL && def->is_flag) {
            value = "true";
        }
        if (value == NULL) {
            if (i + 1 >= argc) {
                rc = herr_set(err, HEROLD_E_CONFIG, "--%s needs a value", def->name);
                break;
            }
            value = argv[++i];
        }
        set_value(cfg, def, value);
    }
    if (rc == 0) {
        rc = finish(cfg, err);
    }
    if (rc != 0) {
        config_clear(cfg);
    }
    return rc;
}

void config_clear(config_t *cfg)
{
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        char **slot = member(cfg, &option_defs[i]);
        free(*slot);
        *slot = NULL;
    }
    free(cfg->http_address);
    cfg->http_address = NULL;
}

char *config_ingest_server_key_path(const config_t *cfg)
{
    if (cfg->ingest_server_key != NULL) {
        return xstrdup(cfg->ingest_server_key);
    }
    size_t len = strlen(cfg->data_dir) + strlen("/ingest.key") + 1;
    char *path = xmalloc(len);
    snprintf(path, len, "%s/ingest.key", cfg->data_dir);
    return path;
}

char *config_jwt_secret_path(const config_t *cfg)
{
    if (cfg->jwt_secret_file != NULL) {
        return xstrdup(cfg->jwt_secret_file);
    }
    size_t len = strlen(cfg->data_dir) + strlen("/jwt.secret") + 1;
    char *path = xmalloc(len);
    snprintf(path, len, "%s/jwt.secret", cfg->data_dir);
    return path;
}
