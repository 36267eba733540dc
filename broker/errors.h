#ifndef HEROLD_ERRORS_H
#define HEROLD_ERRORS_H

/*
 * Every error herold can report, in one table. Each entry gives the C name (as
 * HEROLD_E_<NAME>), the stable wire code sent to clients in ingest replies and WebSocket
 * error answers (listed in schemas/errors.md; never change one once shipped), the HTTP
 * status used where the error ends an HTTP request, and a human message.
 *
 * A function that can fail returns 0 or a negative HEROLD_E_* code, and puts the detail
 * into a caller-supplied struct herr.
 */

#include <stdarg.h>
#include <stddef.h>

#define HEROLD_ERRORS(X)                                                                           \
    X(MALFORMED, "malformed", 400, "the message is not a well-formed msgpack map")                 \
    X(TOO_LARGE, "too_large", 413, "the message is larger than the limit")                         \
    X(MISSING_FIELD, "missing_field", 400, "a required field is missing")                          \
    X(UNKNOWN_FIELD, "unknown_field", 400, "the field is not part of the contract")                \
    X(DUPLICATE_FIELD, "duplicate_field", 400, "a field is given twice")                           \
    X(FIELD_TYPE, "field_type", 400, "a field has the wrong type")                                 \
    X(FIELD_TOO_LONG, "field_too_long", 400, "a field is longer than its limit")                   \
    X(BAD_UTF8, "bad_utf8", 400, "a string is not valid UTF-8")                                    \
    X(BAD_PATH, "bad_path", 400, "a path is not a valid resource path")                            \
    X(BAD_CHANGE_TYPE, "bad_change_type", 400,                                                     \
      "the change type is not created, updated or deleted")                                        \
    X(BAD_PRINCIPAL, "bad_principal", 400, "a reader is not user:<id>, group:<id> or *")           \
    X(TOO_MANY_READERS, "too_many_readers", 400, "readers has more entries than the limit")        \
    X(BAD_TIME, "bad_time", 400, "time is not a plausible millisecond timestamp")                  \
    X(BAD_ENVELOPE, "bad_envelope", 400, "the ZeroMQ message has an unexpected frame layout")      \
    X(BAD_JSON, "bad_json", 400, "the text is not valid JSON")                                     \
    X(BAD_REQUEST, "bad_request", 400, "the request is not valid")                                 \
    X(UNKNOWN_OP, "unknown_op", 400, "the op is not known")                                        \
    X(NOT_FOUND, "not_found", 404, "no such object")                                               \
    X(METHOD_NOT_ALLOWED, "method_not_allowed", 405, "the method is not allowed on this resource") \
    X(CONFLICT, "conflict", 409, "an identical object exists")                                     \
    X(LENGTH_REQUIRED, "length_required", 411, "the request body needs a Content-Length")          \
    X(UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", 415, "the body must be application/json")  \
    X(LIMIT, "limit_exceeded", 429, "a limit was reached")                                         \
    X(UNAUTHORIZED, "unauthorized", 401, "the token is missing or not valid")                      \
    X(TOKEN_EXPIRED, "token_expired", 401, "the token has expired")                                \
    X(FORBIDDEN, "forbidden", 403, "the caller may not do this")                                   \
    X(UNAVAILABLE, "unavailable", 503, "the broker cannot accept this now")                        \
    X(CONFIG, "config", 500, "the configuration is not valid")                                     \
    X(SYSTEM, "system", 500, "a system call failed")                                               \
    X(INTERNAL, "internal", 500, "internal error")

enum herold_error {
    HEROLD_OK = 0,
    HEROLD_E__BASE = -1000,
#define HEROLD_ERROR_ENUM(name, wire, status, text) HEROLD_E_##name,
    HEROLD_ERRORS(HEROLD_ERROR_ENUM)
#undef HEROLD_ERROR_ENUM
        HEROLD_E__END
};

/* Error detail: the code and a short message that names the field and the rule, such as
 * "resource: segment 33 exceeds the 32-segment limit". */
#define HERR_MESSAGE_MAX 256
struct herr {
    int code;
    char message[HERR_MESSAGE_MAX];
};

/* Sets *err (when err is not NULL) and returns code, so callers can write
 * `return herr_set(err, HEROLD_E_BAD_PATH, "resource: ...")`. */
int herr_set(struct herr *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Resets *err to success. */
void herr_clear(struct herr *err);

/* The stable wire code for code ("internal" for an unknown code). */
const char *herold_error_code(int code);

/* The human message for code. */
const char *herold_error_text(int code);

/* The HTTP status for code (500 for an unknown code). */
int herold_error_status(int code);

#endif
