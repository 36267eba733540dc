#ifndef HEROLD_JWK_H
#define HEROLD_JWK_H

/*
 * Public keys for token signatures: RS256 (RSA of at least JWK_MIN_RSA_BITS bits, PKCS #1
 * v1.5 with SHA-256) and ES256 (ECDSA on P-256 with SHA-256), read from PEM files or JWK
 * Sets (RFC 7517), and checked with OpenSSL.
 *
 * Every key is bound to exactly one algorithm by its type when it is loaded: an RSA key
 * verifies RS256 and nothing else, a P-256 key ES256. No key is ever used as an HMAC
 * secret, which is what algorithm confusion attacks rely on. Keys of other types or
 * sizes are refused in a PEM file; in a JWK Set, keys marked for another use (`use` not
 * "sig") or another algorithm (`alg` not RS256/ES256) are skipped, as an identity
 * provider's set lists keys for other parties too, but a key herold would use must be
 * whole.
 *
 * A set is immutable once loaded and may be read from any thread.
 */

#include <stdbool.h>
#include <stddef.h>

#include "errors.h"

#define JWK_MIN_RSA_BITS 2048
#define JWK_MAX_KEYS 64
#define JWK_MAX_FILE_BYTES (1024 * 1024)
#define JWK_MAX_KID_BYTES 256

typedef enum jwk_alg {
    JWK_RS256 = 1,
    JWK_ES256 = 2,
} jwk_alg_t;

typedef struct jwk_key {
    char *kid; /* NULL when the key has none (PEM keys never do) */
    jwk_alg_t alg;
    struct evp_pkey_st *pkey;
} jwk_key_t;

typedef struct jwk_set {
    jwk_key_t *keys;
    size_t count;
} jwk_set_t;

/* Appends every public key of a PEM file (one or more `BEGIN PUBLIC KEY` blocks). Returns
 * 0, or HEROLD_E_CONFIG / HEROLD_E_SYSTEM with err set and set unchanged. */
int jwk_load_pem_file(const char *path, jwk_set_t *set, struct herr *err);

/* Appends the usable keys of a JWK Set file (`{"keys":[...]}`). A set without one usable
 * key, a damaged usable key or a repeated kid is an error. Returns 0, or HEROLD_E_CONFIG /
 * HEROLD_E_SYSTEM with err set and set unchanged. */
int jwk_load_jwks_file(const char *path, jwk_set_t *set, struct herr *err);

/* The same from a file's text already read (NUL-terminated for PEM); path names it in
 * messages. */
int jwk_parse_pem(const char *text, const char *path, jwk_set_t *set, struct herr *err);
int jwk_parse_jwks(const char *text, size_t len, const char *path, jwk_set_t *set,
                   struct herr *err);

/* Frees the keys and empties the set. */
void jwk_set_clear(jwk_set_t *set);

/* Does sig (as a JWS carries it: PKCS #1 for RS256, r || s for ES256) sign data under
 * key? */
bool jwk_verify(const jwk_key_t *key, const void *data, size_t len, const unsigned char *sig,
                size_t sig_len);

/* "RS256" or "ES256". */
const char *jwk_alg_name(jwk_alg_t alg);

#endif
