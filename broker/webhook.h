#ifndef HEROLD_WEBHOOK_H
#define HEROLD_WEBHOOK_H

/*
 * Webhook delivery: one thread running a libcurl multi handle, fed by the service thread
 * through a command channel and answering through a result channel.
 *
 * Targets. Each webhook subscription has a target (its URL, secret, clientState, lifecycle
 * URL, expiration) and its own queue of items, so a slow or failing endpoint never delays
 * another. At most one request per target is in flight, which keeps each target's items
 * in order. Items waiting for a target are sent as one batch `{"value":[…]}` of up to
 * max_batch_items, after a short batching window (batch_window_ms) that lets a burst
 * travel together.
 *
 * Signatures (Standard Webhooks). Each request carries `webhook-id` (stable across the
 * retries of one batch), `webhook-timestamp` (seconds, the time of this attempt) and
 * `webhook-signature: v1,<base64 HMAC-SHA256 over "id.timestamp.body">`, keyed with the
 * subscription's secret (the bytes behind `whsec_`). Any 2xx within request_timeout_ms
 * is a delivery.
 *
 * Retries. A failed batch (no connection, timeout, or a status other than 2xx and 410) is
 * retried with exponential backoff and jitter: the first retry within first_retry_ms, then
 * doubling up to max_retry_ms between attempts, for as long as the subscription lives: an
 * acknowledged event is never given up. `Retry-After` (seconds or an HTTP date) on 429 and
 * 503 sets the next attempt, bounded by WEBHOOK_MAX_RETRY_AFTER_MS. 410 Gone ends the subscription:
 * a WEBHOOK_RESULT_GONE result tells the service thread, which removes it.
 *
 * Catching up. Memory stays bounded while an endpoint fails: when a target's queue would
 * pass WEBHOOK_MAX_QUEUED_ITEMS it is dropped and the target goes *behind*; once its batch
 * is delivered it asks the service thread (WEBHOOK_RESULT_WANT) for the items after the
 * last seq it took, which answers with chunks read from the store (WEBHOOK_CMD_REPLAY)
 * until a chunk reaches the end of the store and the target is live again. A target
 * created behind (spec.is_behind, after a restart) starts by asking. Delivered positions
 * (the cursors the store keeps) come back in a WEBHOOK_RESULT_POSITIONS result after each
 * WEBHOOK_CMD_MARK, which dispatch sends about once a second with the last seq it
 * dispatched.
 *
 * Validation. webhook_validate POSTs `url?validationToken=<random>` (text/plain, empty
 * body); the endpoint must answer 200 with exactly the token as body within
 * WEBHOOK_VALIDATION_TIMEOUT_MS. The answer comes back as a WEBHOOK_RESULT_VALIDATED result.
 *
 * Security. URLs must be http or https. Every connection's resolved address is checked
 * when the socket is opened (so a DNS answer cannot slip past the check): loopback,
 * private (RFC 1918, unique-local fc00::/7), link-local, carrier-grade NAT, unspecified,
 * broadcast and multicast addresses are refused unless allow_private. Redirects are not
 * followed. TLS peers are verified against the system CAs plus ca_file when given.
 * Connections are kept alive and reused per host.
 *
 * Threads: webhook_new, webhook_start, webhook_stop and webhook_free belong to the main
 * thread; webhook_send to the service thread, which also drains the results channel
 * (chan_drain; each item is a webhook_result_t * that the drainer owns and releases with
 * webhook_result_free); everything else happens on the delivery thread. The service thread must
 * stop calling webhook_send before webhook_free.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chan.h"
#include "errors.h"
#include "notif.h"

#define WEBHOOK_VALIDATION_TIMEOUT_MS 10000
#define WEBHOOK_MAX_QUEUED_ITEMS 10000           /* per target, while its endpoint fails */
#define WEBHOOK_MAX_RETRY_AFTER_MS (3600 * 1000) /* longest Retry-After honoured */
#define WEBHOOK_MAX_URL_BYTES 2048
#define WEBHOOK_MAX_RESPONSE_BYTES 4096 /* read of a response body, beyond is ignored */
#define WEBHOOK_SECRET_BYTES 32         /* random bytes behind whsec_ */

typedef struct webhook webhook_t;

typedef struct webhook_config {
    int max_batch_items;    /* default 100 */
    int batch_window_ms;    /* default 10 */
    int request_timeout_ms; /* default 10000 */
    int first_retry_ms;     /* default 5000: "the first retry within 10 s" */
    int max_retry_ms;       /* default 600000 */
    bool allow_private;     /* --webhook-allow-private */
    const char *ca_file;    /* --webhook-ca-file, or NULL */
} webhook_config_t;

/* What a target needs to deliver to one subscription. Strings are owned by the command
 * that carries them (see webhook_command_t). */
typedef struct webhook_target_spec {
    char subscription_id[37];
    char *notification_url;
    char *lifecycle_url;     /* NULL: no lifecycle notifications */
    char *client_state_json; /* JSON string literal with quotes, or NULL */
    char expiration[29];     /* Graph format */
    unsigned char secret[WEBHOOK_SECRET_BYTES];
    char *tenant_id;            /* NULL or the owner's tenant, for lifecycle items */
    bool include_resource_data; /* items carry the event's data in resourceData */
    uint64_t position;          /* TARGET_PUT of a new target: delivered up to this seq */
    bool is_behind;             /* TARGET_PUT of a new target: start by asking for a replay */
} webhook_target_spec_t;

typedef enum webhook_command_kind {
    WEBHOOK_CMD_TARGET_PUT,    /* create or replace the target of spec.subscription_id */
    WEBHOOK_CMD_TARGET_REMOVE, /* drop the target and its queue; in-flight answers ignored */
    WEBHOOK_CMD_NOTIFY,        /* queue notif (one reference, taken) for subscription_id */
    WEBHOOK_CMD_VALIDATE,      /* validate url; answer with request_id */
    WEBHOOK_CMD_LIFECYCLE,     /* POST a lifecycle notification (spec + lifecycle_event) */
    WEBHOOK_CMD_REPLAY,        /* items read from the store for subscription_id, answering
                                  its WANT: notifs (references taken) in seq order, the store
                                  read up to scanned_seq, is_at_end when that was its end */
    WEBHOOK_CMD_MARK,          /* every live item with seq <= mark_seq has been sent */
} webhook_command_kind_t;

/* One command from the service thread. The command and everything it points to are
 * owned by whoever holds it: webhook_send takes ownership. */
typedef struct webhook_command {
    webhook_command_kind_t kind;
    webhook_target_spec_t spec;  /* TARGET_PUT, LIFECYCLE (subscription_id alone for
                                    REMOVE and NOTIFY) */
    notif_t *notif;              /* NOTIFY */
    notif_t **notifs;            /* REPLAY: owned array of owned references */
    size_t notif_count;          /* REPLAY */
    uint64_t scanned_seq;        /* REPLAY */
    bool is_at_end;              /* REPLAY */
    uint64_t mark_seq;           /* MARK */
    uint64_t request_id;         /* VALIDATE */
    char *url;                   /* VALIDATE */
    const char *lifecycle_event; /* LIFECYCLE: "subscriptionRemoved",
                                    "reauthorizationRequired", "missed" (static) */
    const char *url_name;        /* VALIDATE: the property named in the result's
                                    message, "notificationUrl" when NULL or
                                    "lifecycleNotificationUrl" (static) */
} webhook_command_t;

typedef enum webhook_result_kind {
    WEBHOOK_RESULT_VALIDATED, /* request_id, code (0 = valid), message */
    WEBHOOK_RESULT_GONE,      /* subscription_id: the endpoint answered 410 */
    WEBHOOK_RESULT_WANT,      /* subscription_id is behind: send a REPLAY from seq + 1 */
    WEBHOOK_RESULT_POSITIONS, /* positions moved since the last such result */
} webhook_result_kind_t;

typedef struct webhook_position {
    char subscription_id[37];
    uint64_t seq; /* every item with a lower or equal seq was delivered */
} webhook_position_t;

typedef struct webhook_result {
    webhook_result_kind_t kind;
    uint64_t request_id;
    char subscription_id[37];
    uint64_t seq; /* WANT */
    int code;     /* 0 or a HEROLD_E_* code */
    char message[HERR_MESSAGE_MAX];
    webhook_position_t *positions; /* POSITIONS: owned */
    size_t position_count;
} webhook_result_t;

/* Fills config with the defaults above. */
void webhook_config_init(webhook_config_t *config);

/* A delivery layer with the given configuration (copied; ca_file is borrowed and must
 * outlive it). Results are pushed onto results (borrowed), whose wake callback brings
 * the service thread; the delivery thread waits while results is full, so the service
 * thread must keep draining it. Calls curl_global_init (webhook_free the matching
 * curl_global_cleanup). Returns NULL with err set when libcurl cannot be initialised. */
webhook_t *webhook_new(const webhook_config_t *config, chan_t *results, struct herr *err);

/* Starts the delivery thread. Returns 0 or HEROLD_E_SYSTEM. */
int webhook_start(webhook_t *webhook, struct herr *err);

/* Stops the thread: requests in flight get until deadline_ms to finish, then are
 * abandoned. Commands still queued when the stop begins run, except validations and
 * lifecycle notifications, which are released unsent: items are queued but not sent, and a
 * MARK moves only the positions of targets that hold none, so no delivered position passes
 * an item that was not sent. What the thread does not reach before it ends, and commands
 * sent later, are released. */
void webhook_stop(webhook_t *webhook, int deadline_ms);

/* Frees the layer (stopping it first if needed). NULL is a no-op. */
void webhook_free(webhook_t *webhook);

/* Hands a command to the delivery thread (takes ownership of *command and sets it to
 * NULL). Waits while the command channel is full. After webhook_stop the command is
 * released at once. */
void webhook_send(webhook_t *webhook, webhook_command_t **command);

/* A new zeroed command of the given kind. Release with webhook_command_free. */
webhook_command_t *webhook_command_new(webhook_command_kind_t kind);

/* Releases a command and what it owns (strings, the notif references). NULL is a no-op. */
void webhook_command_free(webhook_command_t *command);

/* After webhook_stop: the delivered positions that moved since the last POSITIONS result,
 * as one such result the caller owns, or NULL. A stop thus loses no delivered position: a
 * MARK sent just before it still counts. */
webhook_result_t *webhook_take_final_positions(webhook_t *webhook);

/* Releases a result drained from the results channel. NULL is a no-op. */
void webhook_result_free(webhook_result_t *result);

/* Checks a notificationUrl or lifecycleNotificationUrl before anything is stored:
 * http or https, a host, at most WEBHOOK_MAX_URL_BYTES, no user:password part, and no
 * literal address in a refused range, nor the name localhost or *.localhost (unless
 * allow_private). Hosts given by name are checked again at every connection. Returns 0
 * or HEROLD_E_BAD_REQUEST / HEROLD_E_FORBIDDEN with err naming the rule. Any thread. */
int webhook_url_check(const char *url, bool allow_private, struct herr *err);

/* webhook_url_check with the property named in err's message (name, e.g.
 * "lifecycleNotificationUrl", is borrowed); webhook_url_check uses "notificationUrl". */
int webhook_url_check_named(const char *name, const char *url, bool allow_private,
                            struct herr *err);

/* True when the address (struct sockaddr_in or sockaddr_in6) is in a refused range. */
bool webhook_address_is_private(const void *sockaddr, size_t len);

/* A new signing secret: `whsec_` + base64 of WEBHOOK_SECRET_BYTES random bytes, written
 * to text (at least 64 bytes), and the raw bytes to secret. */
void webhook_secret_new(unsigned char secret[WEBHOOK_SECRET_BYTES], char *text, size_t cap);

/* The Standard Webhooks signature "v1,<base64>" of id.timestamp.body under secret,
 * written to out (at least 64 bytes). */
void webhook_sign(const unsigned char secret[WEBHOOK_SECRET_BYTES], const char *id,
                  int64_t timestamp, const char *body, size_t body_len, char *out, size_t cap);

/* webhook_sign with a key of any length (key_len > 0): secrets that herold did not mint,
 * such as the 24-byte key of the published Standard Webhooks test vector. */
void webhook_sign_key(const unsigned char *key, size_t key_len, const char *id, int64_t timestamp,
                      const char *body, size_t body_len, char *out, size_t cap);

#endif
