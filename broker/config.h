#ifndef HEROLD_CONFIG_H
#define HEROLD_CONFIG_H

/*
 * The broker's configuration: one struct, filled from (in rising precedence) built-in
 * defaults, a config file (--config FILE: `name = value` lines using the long flag names,
 * `#` comments), the environment (HEROLD_<NAME>, e.g. HEROLD_HTTP, HEROLD_JWT_SECRET_FILE)
 * and the command line flags. Read once in main before any thread starts.
 */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "errors.h"

#define CONFIG_DEFAULT_HTTP "127.0.0.1:8080"
#define CONFIG_DEFAULT_INGEST "tcp://127.0.0.1:5560"
#define CONFIG_DEFAULT_DATA "./var"
#define CONFIG_MAX_LINE_BYTES 4096

typedef struct config {
    char *http;         /* ADDR:PORT as given */
    char *http_address; /* parsed from http */
    int http_port;
    char *ingest;            /* ZeroMQ endpoint */
    char *ingest_keys;       /* publisher keys file: CurveZMQ on; NULL: plaintext */
    char *ingest_server_key; /* NULL: DATA/ingest.key */
    char *ingest_insecure_text;
    bool ingest_insecure;
    char *data_dir;
    char *store; /* postgresql://... or memory:; NULL: the embedded store under data_dir */
    char *retention_seconds_text;
    char *retention_bytes_text;
    int64_t retention_seconds;
    uint64_t retention_bytes;
    char *segment_bytes_text;
    uint64_t segment_bytes;
    char *jwt_secret_file; /* NULL: DATA/jwt.secret, unless public keys are configured */
    char *jwt_public_key;  /* PEM public keys, or NULL */
    char *jwks_file;       /* JWK Set, or NULL */
    char *jwt_issuer;
    char *jwt_audience;
    char *jwt_leeway_text;
    int64_t jwt_leeway;
    char *log_level;
    char *web_root; /* the page's directory; NULL: clients/web if there */
    char *tls_cert; /* PEM certificate chain: serve https and wss; NULL for plain */
    char *tls_key;  /* PEM private key for tls_cert */
    /* Subscriptions and webhooks, as given (strings) and parsed. */
    char *webhook_allow_private_text;
    char *webhook_ca_file;
    char *webhook_batch_items_text;
    char *webhook_first_retry_ms_text;
    char *webhook_max_retry_ms_text;
    char *subscription_min_seconds_text;
    char *subscription_max_minutes_text;
    char *reauthorization_lead_text;
    char *max_subscriptions_per_user_text;
    char *max_connections_per_user_text;
    char *max_ops_per_second_text;
    char *max_subscriptions_per_minute_text;
    char *max_pages_per_second_text;
    char *allowed_origins; /* comma-separated; NULL: any */
    int max_connections_per_user;
    int max_ops_per_second;
    int max_subscriptions_per_minute;
    int max_pages_per_second;
    bool webhook_allow_private;
    int webhook_batch_items;
    int webhook_first_retry_ms;
    int webhook_max_retry_ms;
    int64_t subscription_min_seconds;
    int64_t subscription_max_minutes;
    int64_t reauthorization_lead_s;
    int max_subscriptions_per_user;
    int is_help; /* --help was given */
} config_t;

/* Fills cfg from the sources above. Returns 0, or HEROLD_E_CONFIG with err naming the
 * bad flag, line or value. On failure cfg is cleared. Release with config_clear. */
int config_load(config_t *cfg, int argc, char **argv, struct herr *err);

/* Frees what cfg owns. */
void config_clear(config_t *cfg);

/* Prints the flags and their defaults. */
void config_usage(FILE *out);

/* The broker's CurveZMQ keypair file: the configured one or DATA/ingest.key. Caller
 * frees. */
char *config_ingest_server_key_path(const config_t *cfg);

/* The secret file in effect: the configured one or DATA/jwt.secret. Caller frees. */
char *config_jwt_secret_path(const config_t *cfg);

/* Splits "ADDR:PORT" (port 1..65535). Returns 0 or HEROLD_E_CONFIG. *address is a new
 * string the caller owns. */
int config_parse_http(const char *text, char **address, int *port, struct herr *err);

#endif
