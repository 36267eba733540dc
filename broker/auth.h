#ifndef HEROLD_AUTH_H
#define HEROLD_AUTH_H

/*
 * Bearer tokens and the reader check.
 *
 * Tokens are compact JWS (JWT) verified with OpenSSL, signed with one of:
 *   - HS256 (HMAC-SHA256) under a shared secret (the secret file; `herold token` signs so);
 *   - RS256 or ES256 under an identity provider's key, from a PEM file of public keys or
 *     a JWK Set (jwk.h), the header's `kid` choosing the key when present.
 * Only an algorithm with a configured key is accepted: `none` never, HS256 only with a
 * secret, and a public key only for the algorithm of its type, so no algorithm confusion
 * (an RSA public key taken as an HMAC secret) is possible. Claims: `sub` (the user id,
 * required, a valid principal id), `exp` (required, seconds since the epoch), `nbf` and
 * `iat` (optional), `groups` (optional array of group ids), `azp` (optional application
 * id), and `iss` and `aud` when an issuer or audience is configured. exp and nbf allow the
 * configured leeway for clock skew. The signature is checked before any claim is trusted.
 * A token longer than AUTH_MAX_TOKEN_BYTES or with more than AUTH_MAX_GROUPS groups is
 * refused.
 *
 * A principal is what a verified token says about its bearer: the user and the groups.
 * The reader check asks whether a principal may read an object given the object's
 * readers list (`*`, `user:<id>`, `group:<id>`).
 *
 * An auth_t may be used from any thread between its creation and auth_reload, which
 * belongs to the thread that verifies (the service thread).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "mem.h"

#define AUTH_MAX_TOKEN_BYTES 8192
#define AUTH_MAX_GROUPS 256
#define AUTH_MIN_SECRET_BYTES 32
/* Leeway for exp and nbf against clock differences between issuer and broker: the
 * default, and the most that may be configured. */
#define AUTH_CLOCK_LEEWAY_SECONDS 30
#define AUTH_MAX_LEEWAY_SECONDS 600

typedef struct auth auth_t;

typedef struct auth_principal {
    char *user; /* the `sub` claim */
    size_t group_count;
    char **groups;      /* group ids, without the `group:` prefix */
    char *application;  /* the `azp` claim, or NULL */
    int64_t expires_at; /* the `exp` claim, seconds since the epoch */
} auth_principal_t;

/* A verifier and signer for the given HS256 secret (copied). Returns NULL with err set
 * when the secret is shorter than AUTH_MIN_SECRET_BYTES. Release with auth_free. */
auth_t *auth_new(const void *secret, size_t secret_len, struct herr *err);

/* Reads the secret from a file (trailing newlines are not part of it). Returns NULL with
 * err set when the file cannot be read or the secret is too short. */
auth_t *auth_new_from_file(const char *path, struct herr *err);

/* Where keys come from, and what claims must say. At least one key source. */
typedef struct auth_config {
    const char *secret_file;     /* HS256 secret, or NULL: HS256 tokens refused */
    const char *public_key_file; /* PEM public keys (RS256, ES256), or NULL */
    const char *jwks_file;       /* a JWK Set (RS256, ES256), or NULL */
    const char *issuer;          /* when set, the iss claim must equal it */
    const char *audience;        /* when set, the aud claim must name it */
    int64_t leeway_seconds;      /* 0..AUTH_MAX_LEEWAY_SECONDS */
} auth_config_t;

/* A verifier with every key of config's sources. Returns NULL with err set when a source
 * cannot be read or holds no usable key (HEROLD_E_CONFIG, HEROLD_E_SYSTEM). */
auth_t *auth_open(const auth_config_t *config, struct herr *err);

/* Reads the key sources again (a rotated secret, a new JWK Set) and uses them from now
 * on. On failure returns the error and keeps the keys it had. */
int auth_reload(auth_t *auth, struct herr *err);

/* The number of keys in use: the secret, if any, and each public key. */
size_t auth_key_count(const auth_t *auth);

void auth_free(auth_t *auth);

/* Verifies a token at time now (seconds since the epoch). On success returns 0 and sets
 * *out to a new principal the caller owns (release with auth_principal_free). On failure
 * returns HEROLD_E_UNAUTHORIZED or HEROLD_E_TOKEN_EXPIRED with err set, *out NULL. The
 * message never contains the token. */
int auth_token_verify(const auth_t *auth, const char *token, size_t len, int64_t now,
                      auth_principal_t **out, struct herr *err);

/* Signs an HS256 token for user with the given groups, valid from now for ttl_seconds.
 * Returns a new NUL-terminated string the caller owns (free()), or NULL with err set when
 * auth has no secret or user or a group is not a valid principal id. */
char *auth_token_sign(const auth_t *auth, const char *user, const char *const *groups,
                      size_t group_count, int64_t now, int64_t ttl_seconds, struct herr *err);

void auth_principal_free(auth_principal_t *principal);

/* A deep copy of principal. Caller owns the result. */
auth_principal_t *auth_principal_dup(const auth_principal_t *principal);

/* True when a and b say the same thing: the same user, groups in the same order,
 * application and expiry (two tokens with the same claims). */
bool auth_principal_equal(const auth_principal_t *a, const auth_principal_t *b);

/* True when principal may read an object whose readers list is readers[0..count): the
 * list holds `*`, `user:<principal->user>`, or `group:<g>` for one of its groups. */
bool auth_may_read(const auth_principal_t *principal, const hstr_t *readers, size_t count);

/* Writes a new random secret of AUTH_MIN_SECRET_BYTES * 2 hex characters to path with
 * mode 0600, unless the file exists. Returns 0, or HEROLD_E_SYSTEM with err set. */
int auth_secret_file_ensure(const char *path, struct herr *err);

#endif
