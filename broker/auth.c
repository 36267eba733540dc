#include "auth.h"

/*
 * Bearer tokens (compact JWS, HS256) and the reader check.
 *
 * A token is `B64(header).B64(claims).B64(signature)` where B64 is base64url without
 * padding (RFC 7515). Verification refuses early and trusts nothing it has not checked:
 *
 *   1. the length (at most AUTH_MAX_TOKEN_BYTES) and exactly three dot-separated parts;
 *   2. the header: strict base64url, a JSON object without repeated keys, `alg` exactly
 *      "HS256" (so `none`, `hs256`, HS512 and RS256 are all refused: there is no algorithm
 *      negotiation to confuse), `typ` absent or "JWT", no `crit` (we understand no
 *      extensions, and RFC 7515 says a verifier that does not must refuse);
 *   3. the signature: HMAC-SHA256 over the first two parts exactly as sent, compared in
 *      constant time, before a single claim is read;
 *   4. the claims: `sub` a valid id, `exp` an integer, `nbf` and `iat` integers when
 *      present, `groups` an array of at most AUTH_MAX_GROUPS valid ids, `azp` a valid id;
 *      unknown claims (`iss`, `aud`, `jti`, ...) are ignored; then the clock.
 *
 * The base64url decoder is strict: no padding, no characters outside the url alphabet, no
 * length of 4n+1, and the unused low bits of the last character must be zero. Every byte
 * string then has exactly one encoding, so a token cannot be altered without breaking its
 * signature (a lax decoder would accept four spellings of each signature).
 *
 *   valid header:    {"alg":"HS256","typ":"JWT"}   {"alg":"HS256"}   {"alg":"HS256","kid":"k1"}
 *   invalid header:  {"alg":"none"}   {"alg":"hs256"}   {"typ":"JWT"}   {"alg":"HS256","crit":[]}
 *
 * Error messages name the part or the claim and the rule, never the token's text: a
 * message may end up in a log or in a response to someone who is not the token's owner.
 */

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "b64url.h"
#include "event.h"
#include "jwk.h"
#include "path.h"
#include "readfile.h"

/* The longest secret file we read; a secret is text, and anything larger is a mistake
 * (a wrong path, a key store) that should not be read into memory whole. */
#define SECRET_FILE_MAX_BYTES (64 * 1024)

#define SHA256_BYTES 32
/* Base64url of SHA256_BYTES without padding: ceil(32 * 8 / 6). */
#define SIGNATURE_B64_BYTES 43

static const char signed_header_json[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

/* RS256 with a 16384-bit key: the longest signature a key we load can make. */
#define SIGNATURE_MAX_BYTES 2048

struct auth {
    unsigned char *secret; /* HS256; NULL when HS256 tokens are not accepted */
    size_t secret_len;
    jwk_set_t keys; /* RS256 and ES256 */
    char *issuer;   /* NULL: iss not checked */
    char *audience; /* NULL: aud not checked */
    int64_t leeway;
    /* Where the keys came from, for auth_reload. */
    char *secret_file;
    char *public_key_file;
    char *jwks_file;
};

/* ---- helpers -------------------------------------------------------------------------- */

/* A bare principal id (the <id> of `user:<id>` or `group:<id>`): 1..128 bytes of valid
 * UTF-8 without control characters (C0, DEL, C1) or spaces. This mirrors the rule that
 * event_principal_validate in event.c applies to readers, so that every id a token can
 * carry is one a reader entry can name; change both together. */
static bool id_is_valid(const char *p, size_t len)
{
    if (len == 0 || len > EVENT_MAX_PRINCIPAL_ID_BYTES || !path_utf8_is_valid(p, len)) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        /* C1 is U+0080..U+009F, encoded c2 80..c2 9f (the UTF-8 is valid by now). */
        bool is_control =
            c < 0x20 || c == 0x7f || (c == 0xc2 && i + 1 < len && (unsigned char)p[i + 1] <= 0x9f);
        if (is_control || c == ' ') {
            return false;
        }
    }
    return true;
}

static bool json_string_is_id(const json_t *value)
{
    return json_is_string(value) &&
           id_is_valid(json_string_value(value), json_string_length(value));
}

static bool json_string_equals(const json_t *value, const char *s)
{
    size_t len = strlen(s);
    return json_is_string(value) && json_string_length(value) == len &&
           memcmp(json_string_value(value), s, len) == 0;
}

static void hmac_sha256(const auth_t *auth, const char *data, size_t len,
                        unsigned char out[SHA256_BYTES])
{
    size_t out_len = 0;
    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, auth->secret, auth->secret_len,
                  (const unsigned char *)data, len, out, SHA256_BYTES, &out_len) == NULL ||
        out_len != SHA256_BYTES) {
        /* Only a broken OpenSSL installation gets here; no token can be checked. */
        fprintf(stderr, "herold: auth: HMAC-SHA256 failed in OpenSSL\n");
        abort();
    }
}

/* Decodes one base64url part holding a JSON object. Returns the object (caller owns it)
 * or NULL with err set; `what` names the part. */
static json_t *decode_json_part(const char *p, size_t len, const char *what, struct herr *err)
{
    /* A part is at most AUTH_MAX_TOKEN_BYTES characters, so this bounds the decoded size. */
    unsigned char buf[AUTH_MAX_TOKEN_BYTES / 4 * 3 + 3];
    size_t n = 0;
    json_error_t jerr;

    if (!b64url_decode(p, len, buf, &n)) {
        herr_set(err, HEROLD_E_UNAUTHORIZED, "token: %s is not base64url without padding", what);
        return NULL;
    }
    /* The parser's own message may quote the input, so it is not passed on. */
    json_t *value = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, &jerr);
    if (value == NULL && json_error_code(&jerr) == json_error_duplicate_key) {
        herr_set(err, HEROLD_E_UNAUTHORIZED, "token: %s repeats a key", what);
        return NULL;
    }
    if (!json_is_object(value)) {
        json_decref(value);
        herr_set(err, HEROLD_E_UNAUTHORIZED, "token: %s is not a JSON object", what);
        return NULL;
    }
    return value;
}

enum token_alg {
    ALG_HS256 = 1,
    ALG_RS256,
    ALG_ES256,
};

static bool has_key_for(const auth_t *auth, jwk_alg_t alg)
{
    for (size_t i = 0; i < auth->keys.count; i++) {
        if (auth->keys.keys[i].alg == alg) {
            return true;
        }
    }
    return false;
}

/* Checks the header and says which algorithm verifies the token; *kid is the header's
 * kid (borrowed from header) or NULL. Only algorithms with a configured key pass: an
 * RS256 token meets an RSA key and nothing else, an HS256 token the secret. */
static int check_header(const auth_t *auth, const json_t *header, enum token_alg *alg,
                        const char **kid, struct herr *err)
{
    const json_t *alg_value = json_object_get(header, "alg");
    const json_t *typ = json_object_get(header, "typ");
    const json_t *kid_value = json_object_get(header, "kid");

    if (alg_value == NULL) {
        return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: header has no alg");
    }
    if (json_string_equals(alg_value, "HS256") && auth->secret != NULL) {
        *alg = ALG_HS256;
    } else if (json_string_equals(alg_value, "RS256") && has_key_for(auth, JWK_RS256)) {
        *alg = ALG_RS256;
    } else if (json_string_equals(alg_value, "ES256") && has_key_for(auth, JWK_ES256)) {
        *alg = ALG_ES256;
    } else {
        return herr_set(
            err, HEROLD_E_UNAUTHORIZED, "token: alg must be one this broker has a key for (%s%s%s)",
            auth->secret != NULL ? "HS256 " : "", has_key_for(auth, JWK_RS256) ? "RS256 " : "",
            has_key_for(auth, JWK_ES256) ? "ES256" : "");
    }
    if (typ != NULL && !json_string_equals(typ, "JWT")) {
        return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: typ must be JWT when present");
    }
    if (json_object_get(header, "crit") != NULL) {
        return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: crit extensions are not supported");
    }
    if (kid_value != NULL && !json_is_string(kid_value)) {
        return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: kid is not a string");
    }
    *kid = kid_value != NULL ? json_string_value(kid_value) : NULL;
    return 0;
}

/* Fetches an optional integer claim; *present says whether it was there. */
static int claim_integer(const json_t *claims, const char *name, bool *present, int64_t *value,
                         struct herr *err)
{
    const json_t *v = json_object_get(claims, name);
    *present = v != NULL;
    if (v == NULL) {
        return 0;
    }
    if (!json_is_integer(v)) {
        return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: claim %s is not an integer", name);
    }
    *value = (int64_t)json_integer_value(v);
    return 0;
}

/* now > exp + leeway, written so that nothing overflows for any exp and now. */
static bool is_expired(int64_t exp, int64_t now, int64_t leeway)
{
    return exp <= INT64_MAX - leeway && now > exp + leeway;
}

/* now + leeway < nbf, written so that nothing overflows for any nbf and now. */
static bool is_not_yet_valid(int64_t nbf, int64_t now, int64_t leeway)
{
    return now <= INT64_MAX - leeway && now + leeway < nbf;
}

/* iss must be the configured issuer, and aud (a string or an array of strings) must name
 * the configured audience. */
static int check_issuer_audience(const auth_t *auth, const json_t *claims, struct herr *err)
{
    if (auth->issuer != NULL) {
        const json_t *iss = json_object_get(claims, "iss");
        if (iss == NULL) {
            return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: claim iss is missing");
        }
        if (!json_string_equals(iss, auth->issuer)) {
            return herr_set(err, HEROLD_E_UNAUTHORIZED,
                            "token: claim iss is not the configured issuer");
        }
    }
    if (auth->audience != NULL) {
        const json_t *aud = json_object_get(claims, "aud");
        bool named = json_string_equals(aud, auth->audience);
        for (size_t i = 0; !named && json_is_array(aud) && i < json_array_size(aud); i++) {
            named = json_string_equals(json_array_get(aud, i), auth->audience);
        }
        if (aud == NULL) {
            return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: claim aud is missing");
        }
        if (!named) {
            return herr_set(err, HEROLD_E_UNAUTHORIZED,
                            "token: claim aud does not name the configured audience");
        }
    }
    return 0;
}

/* Checks every claim, then builds the principal: nothing is allocated for a refused token. */
static int principal_from_claims(const auth_t *auth, const json_t *claims, int64_t now,
                                 auth_principal_t **out, struct herr *err)
{
    const json_t *sub = json_object_get(claims, "sub");
    const json_t *groups = json_object_get(claims, "groups");
    const json_t *azp = json_object_get(claims, "azp");
    bool has_exp = false;
    bool has_nbf = false;
    bool has_iat = false;
    int64_t exp = 0;
    int64_t nbf = 0;
    int64_t iat = 0;
    int rc;

    if (sub == NULL) {
        return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: claim sub is missing");
    }
    if (!json_is_string(sub)) {
        return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: claim sub is not a string");
    }
    if (!json_string_is_id(sub)) {
        return herr_set(err, HEROLD_E_UNAUTHORIZED,
                        "token: claim sub is not a valid id (1..%d bytes, no spaces or control "
                        "characters)",
                        EVENT_MAX_PRINCIPAL_ID_BYTES);
    }
    if ((rc = claim_integer(claims, "exp", &has_exp, &exp, err)) != 0) {
        return rc;
    }
    if (!has_exp) {
        return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: claim exp is missing");
    }
    if ((rc = claim_integer(claims, "nbf", &has_nbf, &nbf, err)) != 0) {
        return rc;
    }
    if ((rc = claim_integer(claims, "iat", &has_iat, &iat, err)) != 0) {
        return rc;
    }
    (void)iat; /* checked for its type only: exp and nbf decide validity */
    if (groups != NULL) {
        if (!json_is_array(groups)) {
            return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: claim groups is not an array");
        }
        if (json_array_size(groups) > AUTH_MAX_GROUPS) {
            return herr_set(err, HEROLD_E_UNAUTHORIZED,
                            "token: claim groups has more than %d entries", AUTH_MAX_GROUPS);
        }
        for (size_t i = 0; i < json_array_size(groups); i++) {
            if (!json_string_is_id(json_array_get(groups, i))) {
                return herr_set(err, HEROLD_E_UNAUTHORIZED,
                                "token: claim groups[%zu] is not a valid id string", i);
            }
        }
    }
    /* azp is echoed as applicationId; the id rule keeps it short and printable. */
    if (azp != NULL && !json_string_is_id(azp)) {
        return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: claim azp is not a valid id string");
    }
    if ((rc = check_issuer_audience(auth, claims, err)) != 0) {
        return rc;
    }
    if (is_expired(exp, now, auth->leeway)) {
        return herr_set(err, HEROLD_E_TOKEN_EXPIRED, "token: expired (claim exp)");
    }
    if (has_nbf && is_not_yet_valid(nbf, now, auth->leeway)) {
        return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: not yet valid (claim nbf)");
    }

    auth_principal_t *p = xcalloc(1, sizeof(*p));
    p->user = xstrndup(json_string_value(sub), json_string_length(sub));
    p->group_count = groups != NULL ? json_array_size(groups) : 0;
    if (p->group_count > 0) {
        p->groups = xcalloc(p->group_count, sizeof(*p->groups));
        for (size_t i = 0; i < p->group_count; i++) {
            const json_t *g = json_array_get(groups, i);
            p->groups[i] = xstrndup(json_string_value(g), json_string_length(g));
        }
    }
    if (azp != NULL) {
        p->application = xstrndup(json_string_value(azp), json_string_length(azp));
    }
    p->expires_at = exp;
    *out = p;
    return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

/* Reads a secret file (trailing newlines are not part of the secret) into *secret (caller
 * frees with OPENSSL_clear_free). */
static int read_secret_file(const char *path, unsigned char **secret, size_t *secret_len,
                            struct herr *err)
{
    size_t len = 0;
    char *buf = readfile_bounded(path, SECRET_FILE_MAX_BYTES, "jwt secret", &len, err);
    if (buf == NULL) {
        return err->code;
    }
    size_t size = len + 1;
    /* Editors and `echo` end the file with a newline; it is not part of the secret. */
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) {
        len--;
    }
    int rc = 0;
    if (len < AUTH_MIN_SECRET_BYTES) {
        rc = herr_set(err, HEROLD_E_CONFIG, "jwt secret: shorter than %d bytes",
                      AUTH_MIN_SECRET_BYTES);
    } else {
        *secret = xmalloc(len);
        memcpy(*secret, buf, len);
        *secret_len = len;
    }
    OPENSSL_clear_free(buf, size);
    return rc;
}

/* Reads every key source of a configuration into the fields of out (zeroed first). */
static int load_keys(const char *secret_file, const char *public_key_file, const char *jwks_file,
                     auth_t *out, struct herr *err)
{
    int rc = 0;
    memset(out, 0, sizeof(*out));
    if (secret_file != NULL) {
        rc = read_secret_file(secret_file, &out->secret, &out->secret_len, err);
    }
    if (rc == 0 && public_key_file != NULL) {
        rc = jwk_load_pem_file(public_key_file, &out->keys, err);
    }
    if (rc == 0 && jwks_file != NULL) {
        rc = jwk_load_jwks_file(jwks_file, &out->keys, err);
    }
    if (rc != 0) {
        OPENSSL_clear_free(out->secret, out->secret_len);
        jwk_set_clear(&out->keys);
        memset(out, 0, sizeof(*out));
    }
    return rc;
}

auth_t *auth_new(const void *secret, size_t secret_len, struct herr *err)
{
    if (secret == NULL || secret_len < AUTH_MIN_SECRET_BYTES) {
        herr_set(err, HEROLD_E_CONFIG, "jwt secret: shorter than %d bytes", AUTH_MIN_SECRET_BYTES);
        return NULL;
    }
    auth_t *auth = xcalloc(1, sizeof(*auth));
    auth->secret = xmalloc(secret_len);
    memcpy(auth->secret, secret, secret_len);
    auth->secret_len = secret_len;
    auth->leeway = AUTH_CLOCK_LEEWAY_SECONDS;
    return auth;
}

auth_t *auth_new_from_file(const char *path, struct herr *err)
{
    auth_config_t config = {.secret_file = path, .leeway_seconds = AUTH_CLOCK_LEEWAY_SECONDS};
    return auth_open(&config, err);
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? xstrdup(s) : NULL;
}

auth_t *auth_open(const auth_config_t *config, struct herr *err)
{
    if (config->secret_file == NULL && config->public_key_file == NULL &&
        config->jwks_file == NULL) {
        herr_set(err, HEROLD_E_CONFIG, "auth: no secret, public key or JWKS file");
        return NULL;
    }
    if (config->leeway_seconds < 0 || config->leeway_seconds > AUTH_MAX_LEEWAY_SECONDS) {
        herr_set(err, HEROLD_E_CONFIG, "jwt leeway: must be 0..%d seconds",
                 AUTH_MAX_LEEWAY_SECONDS);
        return NULL;
    }
    auth_t loaded;
    if (load_keys(config->secret_file, config->public_key_file, config->jwks_file, &loaded, err) !=
        0) {
        return NULL;
    }
    auth_t *auth = xmalloc(sizeof(*auth));
    *auth = loaded;
    auth->issuer = dup_or_null(config->issuer);
    auth->audience = dup_or_null(config->audience);
    auth->leeway = config->leeway_seconds;
    auth->secret_file = dup_or_null(config->secret_file);
    auth->public_key_file = dup_or_null(config->public_key_file);
    auth->jwks_file = dup_or_null(config->jwks_file);
    return auth;
}

int auth_reload(auth_t *auth, struct herr *err)
{
    auth_t loaded;
    int rc = load_keys(auth->secret_file, auth->public_key_file, auth->jwks_file, &loaded, err);
    if (rc != 0) {
        return rc;
    }
    OPENSSL_clear_free(auth->secret, auth->secret_len);
    jwk_set_clear(&auth->keys);
    auth->secret = loaded.secret;
    auth->secret_len = loaded.secret_len;
    auth->keys = loaded.keys;
    return 0;
}

size_t auth_key_count(const auth_t *auth)
{
    return (auth->secret != NULL ? 1 : 0) + auth->keys.count;
}

void auth_free(auth_t *auth)
{
    if (auth == NULL) {
        return;
    }
    OPENSSL_clear_free(auth->secret, auth->secret_len);
    jwk_set_clear(&auth->keys);
    free(auth->issuer);
    free(auth->audience);
    free(auth->secret_file);
    free(auth->public_key_file);
    free(auth->jwks_file);
    free(auth);
}

/* ---- tokens --------------------------------------------------------------------------- */

/* Checks the signature of signing_input with the key the header chose. */
static int check_signature(const auth_t *auth, enum token_alg alg, const char *kid,
                           const char *signing_input, size_t signing_len, const char *signature,
                           size_t signature_len, struct herr *err)
{
    unsigned char given[SIGNATURE_MAX_BYTES + 3];
    size_t given_len = 0;
    if (signature_len > (SIGNATURE_MAX_BYTES * 4 + 2) / 3 ||
        !b64url_decode(signature, signature_len, given, &given_len)) {
        return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: signature is not base64url");
    }
    if (alg == ALG_HS256) {
        unsigned char expected[SHA256_BYTES];
        if (given_len != SHA256_BYTES) {
            return herr_set(err, HEROLD_E_UNAUTHORIZED,
                            "token: signature is not base64url of %d bytes", SHA256_BYTES);
        }
        hmac_sha256(auth, signing_input, signing_len, expected);
        if (CRYPTO_memcmp(expected, given, SHA256_BYTES) != 0) {
            return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: signature does not match");
        }
        return 0;
    }
    /* A kid names one key; without one, any key of the algorithm may have signed. */
    jwk_alg_t key_alg = alg == ALG_RS256 ? JWK_RS256 : JWK_ES256;
    bool has_candidate = false;
    for (size_t i = 0; i < auth->keys.count; i++) {
        const jwk_key_t *key = &auth->keys.keys[i];
        if (key->alg != key_alg ||
            (kid != NULL && (key->kid == NULL || strcmp(key->kid, kid) != 0))) {
            continue;
        }
        has_candidate = true;
        if (jwk_verify(key, signing_input, signing_len, given, given_len)) {
            return 0;
        }
    }
    if (!has_candidate) {
        return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: no %s key has this kid",
                        jwk_alg_name(key_alg));
    }
    return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: signature does not match");
}

int auth_token_verify(const auth_t *auth, const char *token, size_t len, int64_t now,
                      auth_principal_t **out, struct herr *err)
{
    json_t *header = NULL;
    json_t *claims = NULL;
    enum token_alg alg = 0;
    const char *kid = NULL;
    int rc;

    *out = NULL;
    if (token == NULL || len == 0) {
        return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: empty");
    }
    if (len > AUTH_MAX_TOKEN_BYTES) {
        return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: longer than the %d-byte limit",
                        AUTH_MAX_TOKEN_BYTES);
    }
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 =
        dot1 != NULL ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL) {
        return herr_set(err, HEROLD_E_UNAUTHORIZED, "token: not three dot-separated parts");
    }
    const char *payload = dot1 + 1;
    size_t payload_len = (size_t)(dot2 - payload);
    const char *signature = dot2 + 1;
    size_t signature_len = len - (size_t)(signature - token);

    header = decode_json_part(token, (size_t)(dot1 - token), "header", err);
    if (header == NULL) {
        return HEROLD_E_UNAUTHORIZED;
    }
    rc = check_header(auth, header, &alg, &kid, err);
    if (rc == 0) {
        rc = check_signature(auth, alg, kid, token, (size_t)(dot2 - token), signature,
                             signature_len, err);
    }
    json_decref(header); /* kid pointed into it */
    if (rc != 0) {
        return rc;
    }

    claims = decode_json_part(payload, payload_len, "claims set", err);
    if (claims == NULL) {
        return HEROLD_E_UNAUTHORIZED;
    }
    rc = principal_from_claims(auth, claims, now, out, err);
    json_decref(claims);
    return rc;
}

char *auth_token_sign(const auth_t *auth, const char *user, const char *const *groups,
                      size_t group_count, int64_t now, int64_t ttl_seconds, struct herr *err)
{
    unsigned char mac[SHA256_BYTES];

    if (auth->secret == NULL) {
        herr_set(err, HEROLD_E_CONFIG, "token: no HS256 secret to sign with");
        return NULL;
    }
    if (user == NULL || !id_is_valid(user, strlen(user))) {
        herr_set(err, HEROLD_E_BAD_PRINCIPAL,
                 "user: not a valid id (1..%d bytes of UTF-8, "
                 "no spaces or control characters)",
                 EVENT_MAX_PRINCIPAL_ID_BYTES);
        return NULL;
    }
    if (group_count > AUTH_MAX_GROUPS) {
        herr_set(err, HEROLD_E_LIMIT, "groups: more than %d (AUTH_MAX_GROUPS)", AUTH_MAX_GROUPS);
        return NULL;
    }
    for (size_t i = 0; i < group_count; i++) {
        if (groups[i] == NULL || !id_is_valid(groups[i], strlen(groups[i]))) {
            herr_set(err, HEROLD_E_BAD_PRINCIPAL, "groups[%zu]: not a valid id", i);
            return NULL;
        }
    }
    /* A token that is born expired, or whose exp does not fit, is a caller's mistake. */
    if (ttl_seconds <= 0 || now > INT64_MAX - ttl_seconds) {
        herr_set(err, HEROLD_E_BAD_REQUEST, "ttl: must be positive and now + ttl must fit");
        return NULL;
    }

    json_t *claims = json_object();
    json_object_set_new(claims, "sub", json_string(user));
    if (group_count > 0) {
        json_t *array = json_array();
        for (size_t i = 0; i < group_count; i++) {
            json_array_append_new(array, json_string(groups[i]));
        }
        json_object_set_new(claims, "groups", array);
    }
    json_object_set_new(claims, "iat", json_integer(now));
    json_object_set_new(claims, "nbf", json_integer(now));
    json_object_set_new(claims, "exp", json_integer(now + ttl_seconds));
    char *claims_json = json_dumps(claims, JSON_COMPACT);
    json_decref(claims);
    if (claims_json == NULL) {
        /* jansson fails only on allocation, which is fatal everywhere in herold. */
        fprintf(stderr, "herold: auth: json_dumps failed\n");
        abort();
    }

    char *h64 =
        b64url_encode((const unsigned char *)signed_header_json, sizeof(signed_header_json) - 1);
    char *p64 = b64url_encode((const unsigned char *)claims_json, strlen(claims_json));
    free(claims_json);
    size_t h_len = strlen(h64);
    size_t p_len = strlen(p64);
    char *token = xmalloc(h_len + 1 + p_len + 1 + SIGNATURE_B64_BYTES + 1);
    memcpy(token, h64, h_len);
    token[h_len] = '.';
    memcpy(token + h_len + 1, p64, p_len);
    free(h64);
    free(p64);

    hmac_sha256(auth, token, h_len + 1 + p_len, mac);
    char *s64 = b64url_encode(mac, sizeof(mac));
    token[h_len + 1 + p_len] = '.';
    memcpy(token + h_len + 1 + p_len + 1, s64, SIGNATURE_B64_BYTES + 1);
    free(s64);
    return token;
}

/* ---- principals ----------------------------------------------------------------------- */

void auth_principal_free(auth_principal_t *principal)
{
    if (principal == NULL) {
        return;
    }
    for (size_t i = 0; i < principal->group_count; i++) {
        free(principal->groups[i]);
    }
    free(principal->groups);
    free(principal->user);
    free(principal->application);
    free(principal);
}

auth_principal_t *auth_principal_dup(const auth_principal_t *principal)
{
    auth_principal_t *p = xcalloc(1, sizeof(*p));
    p->user = xstrdup(principal->user);
    p->group_count = principal->group_count;
    if (p->group_count > 0) {
        p->groups = xcalloc(p->group_count, sizeof(*p->groups));
        for (size_t i = 0; i < p->group_count; i++) {
            p->groups[i] = xstrdup(principal->groups[i]);
        }
    }
    p->application = principal->application != NULL ? xstrdup(principal->application) : NULL;
    p->expires_at = principal->expires_at;
    return p;
}

bool auth_principal_equal(const auth_principal_t *a, const auth_principal_t *b)
{
    if (a->expires_at != b->expires_at || a->group_count != b->group_count ||
        strcmp(a->user, b->user) != 0 || (a->application == NULL) != (b->application == NULL) ||
        (a->application != NULL && strcmp(a->application, b->application) != 0)) {
        return false;
    }
    for (size_t i = 0; i < a->group_count; i++) {
        if (strcmp(a->groups[i], b->groups[i]) != 0) {
            return false;
        }
    }
    return true;
}

/* True when view is prefix followed by exactly the len bytes of id. */
static bool reader_names(hstr_t view, const char *prefix, size_t prefix_len, const char *id,
                         size_t id_len)
{
    return view.len == prefix_len + id_len && memcmp(view.p, prefix, prefix_len) == 0 &&
           memcmp(view.p + prefix_len, id, id_len) == 0;
}

bool auth_may_read(const auth_principal_t *principal, const hstr_t *readers, size_t count)
{
    size_t user_len = strlen(principal->user);

    for (size_t i = 0; i < count; i++) {
        hstr_t r = readers[i];
        if (r.len == 1 && r.p[0] == '*') {
            return true;
        }
        if (reader_names(r, "user:", 5, principal->user, user_len)) {
            return true;
        }
        if (r.len > 6 && memcmp(r.p, "group:", 6) == 0) {
            for (size_t g = 0; g < principal->group_count; g++) {
                const char *group = principal->groups[g];
                if (reader_names(r, "group:", 6, group, strlen(group))) {
                    return true;
                }
            }
        }
    }
    return false;
}

/* ---- secret file ---------------------------------------------------------------------- */

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Makes the new directory entry durable. Best effort: the directory may not be readable
 * to us, and a lost entry only means a new secret (and re-issued tokens) after a crash. */
static void fsync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir =
        slash == NULL ? xstrdup(".") : xstrndup(path, slash == path ? 1 : (size_t)(slash - path));
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

int auth_secret_file_ensure(const char *path, struct herr *err)
{
    unsigned char raw[AUTH_MIN_SECRET_BYTES];
    char text[AUTH_MIN_SECRET_BYTES * 2 + 1];
    const char *failed = NULL;
    int saved_errno = 0;

    /* O_EXCL: an existing secret, whatever it holds, is never replaced; tokens signed
     * with it stay valid. */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST) {
            return 0;
        }
        return herr_set(err, HEROLD_E_SYSTEM, "jwt secret: open(%s) failed: %s", path,
                        strerror(errno));
    }
    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        close(fd);
        unlink(path);
        return herr_set(err, HEROLD_E_SYSTEM, "jwt secret: RAND_bytes failed");
    }
    for (size_t i = 0; i < sizeof(raw); i++) {
        static const char hex[] = "0123456789abcdef";
        text[2 * i] = hex[raw[i] >> 4];
        text[2 * i + 1] = hex[raw[i] & 15];
    }
    text[sizeof(text) - 1] = '\n';
    OPENSSL_cleanse(raw, sizeof(raw));

    /* The umask may have taken bits away; the file is the owner's alone either way. */
    if (fchmod(fd, 0600) != 0) {
        failed = "fchmod";
    } else if (write_all(fd, text, sizeof(text)) != 0) {
        failed = "write";
    } else if (fsync(fd) != 0) {
        failed = "fsync";
    }
    saved_errno = errno;
    OPENSSL_cleanse(text, sizeof(text));
    if (close(fd) != 0 && failed == NULL) {
        failed = "close";
        saved_errno = errno;
    }
    if (failed != NULL) {
        /* A half-written file would be taken as an existing secret next time. */
        unlink(path);
        return herr_set(err, HEROLD_E_SYSTEM, "jwt secret: %s(%s) failed: %s", failed, path,
                        strerror(saved_errno));
    }
    fsync_parent_dir(path);
    return 0;
}
