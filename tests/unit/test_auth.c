/*
 * Unit tests for broker/auth.c: HS256 tokens, secrets and the reader check.
 *
 * Hand-made tokens are built here independently of auth.c: base64url through OpenSSL's
 * EVP_EncodeBlock (translated to the url alphabet, padding stripped) and the signature
 * through OpenSSL's one-shot HMAC(). A token auth.c accepts is thus one any HS256 issuer
 * could have produced, not merely one auth.c itself produced.
 *
 * Every verification goes through verify_len(), which copies the token into a heap
 * buffer of exactly its length (no terminating NUL, so the sanitizer build catches any
 * read past it) and checks the failure contract: *out NULL, err->code equal to the return
 * value, and no 16-byte piece of the token in the message.
 */

#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"

#define NOW INT64_C(1700000000)
#define LEEWAY AUTH_CLOCK_LEEWAY_SECONDS
#define HDR "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

static const char secret_a[] = "0123456789abcdef0123456789abcdef"; /* 32 bytes */
static const char secret_b[] = "fedcba9876543210fedcba9876543210";
/* secret_a with its last byte changed. */
static const char secret_a2[] = "0123456789abcdef0123456789abcdeF";

/* ---- per-test bookkeeping: everything allocated by helpers is freed in teardown ---- */

#define KEEP_MAX 4096
static void *kept[KEEP_MAX];
static size_t kept_count;
static char tmp_dir[64];

static void *keep(void *p)
{
    ck_assert_uint_lt(kept_count, KEEP_MAX);
    kept[kept_count++] = p;
    return p;
}

static void setup(void)
{
    kept_count = 0;
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/test_auth.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp_dir));
}

static void teardown(void)
{
    for (size_t i = 0; i < kept_count; i++) {
        free(kept[i]);
    }
    kept_count = 0;
    DIR *d = opendir(tmp_dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                char path[512];
                snprintf(path, sizeof(path), "%s/%s", tmp_dir, e->d_name);
                unlink(path);
            }
        }
        closedir(d);
    }
    rmdir(tmp_dir);
}

static char *fmt(const char *format, ...) __attribute__((format(printf, 1, 2)));

static char *fmt(const char *format, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, format);
    int n = vasprintf(&s, format, ap);
    va_end(ap);
    ck_assert_int_ge(n, 0);
    return keep(s);
}

static char *tmp_path(const char *name)
{
    return fmt("%s/%s", tmp_dir, name);
}

/* ---- independent base64url and HS256 ----------------------------------------------- */

static char *b64url_pad(const void *data, size_t len, bool pad)
{
    char *out = keep(malloc(4 * ((len + 2) / 3) + 1));
    int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    out[n] = '\0';
    for (int i = 0; i < n; i++) {
        if (out[i] == '+') {
            out[i] = '-';
        } else if (out[i] == '/') {
            out[i] = '_';
        } else if (out[i] == '=' && !pad) {
            out[i] = '\0';
        }
    }
    return out;
}

static char *b64url(const void *data, size_t len)
{
    return b64url_pad(data, len, false);
}

static char *b64url_str(const char *s)
{
    return b64url(s, strlen(s));
}

/* Decodes a well-formed unpadded base64url text (test-side only, for inspecting tokens
 * that auth_token_sign produced). Returns a NUL-terminated buffer. */
static char *b64url_decode_str(const char *p, size_t len)
{
    char *std = keep(malloc(len + 4));
    memcpy(std, p, len);
    for (size_t i = 0; i < len; i++) {
        std[i] = std[i] == '-' ? '+' : std[i] == '_' ? '/' : std[i];
    }
    size_t pad = (4 - len % 4) % 4;
    memset(std + len, '=', pad);
    unsigned char *out = keep(malloc(len + 4));
    int n = EVP_DecodeBlock(out, (unsigned char *)std, (int)(len + pad));
    ck_assert_int_ge(n, 0);
    out[n - (int)pad] = '\0';
    return (char *)out;
}

static char *hs256_b64(const char *secret, const char *data, size_t len)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    ck_assert_ptr_nonnull(HMAC(EVP_sha256(), secret, (int)strlen(secret),
                               (const unsigned char *)data, len, mac, &mac_len));
    ck_assert_uint_eq(mac_len, 32);
    return b64url(mac, mac_len);
}

/* "h.p.sig" with sig the HS256 of "h.p" exactly as given (which may be malformed). */
static char *join_sign(const char *secret, const char *h, const char *p)
{
    char *signing_input = fmt("%s.%s", h, p);
    return fmt("%s.%s", signing_input, hs256_b64(secret, signing_input, strlen(signing_input)));
}

static char *make_token(const char *secret, const char *header_json, const char *claims_json)
{
    return join_sign(secret, b64url_str(header_json), b64url_str(claims_json));
}

/* Claims for anna, valid at NOW, followed by `extra` (a JSON fragment or ""). */
static char *claims_with(const char *extra)
{
    return fmt("{\"sub\":\"anna\",\"exp\":%" PRId64 "%s}", NOW + 3600, extra);
}

/* The byte offsets of the token's two dots. */
static void dots(const char *token, size_t *d1, size_t *d2)
{
    const char *a = strchr(token, '.');
    ck_assert_ptr_nonnull(a);
    const char *b = strchr(a + 1, '.');
    ck_assert_ptr_nonnull(b);
    *d1 = (size_t)(a - token);
    *d2 = (size_t)(b - token);
}

/* ---- verification through the contract ----------------------------------------------- */

static int verify_len(const auth_t *auth, const char *token, size_t len, int64_t now,
                      auth_principal_t **out, struct herr *err)
{
    char *copy = malloc(len > 0 ? len : 1);
    auth_principal_t *p = (auth_principal_t *)0x1; /* must be overwritten */
    memcpy(copy, token, len);
    herr_clear(err);
    int rc = auth_token_verify(auth, copy, len, now, &p, err);
    free(copy);
    if (rc == 0) {
        ck_assert_ptr_nonnull(p);
    } else {
        ck_assert_ptr_null(p);
        ck_assert_int_eq(err->code, rc);
        ck_assert_uint_gt(strlen(err->message), 0);
        for (size_t i = 0; i + 16 <= len; i++) {
            ck_assert_msg(memmem(err->message, strlen(err->message), token + i, 16) == NULL,
                          "message quotes the token: %s", err->message);
        }
    }
    if (out != NULL) {
        *out = p;
    } else {
        auth_principal_free(p);
    }
    return rc;
}

static int verify(const auth_t *auth, const char *token, int64_t now, auth_principal_t **out,
                  struct herr *err)
{
    return verify_len(auth, token, strlen(token), now, out, err);
}

static auth_t *new_auth(const char *secret)
{
    struct herr err;
    auth_t *auth = auth_new(secret, strlen(secret), &err);
    ck_assert_ptr_nonnull(auth);
    return auth;
}

/* Refused as unauthorized, with the message containing `mentions` (when not NULL). */
static void assert_refused(const auth_t *auth, const char *token, const char *mentions)
{
    struct herr err;
    int rc = verify(auth, token, NOW, NULL, &err);
    ck_assert_msg(rc == HEROLD_E_UNAUTHORIZED, "expected unauthorized, got %d (%s)", rc,
                  err.message);
    if (mentions != NULL) {
        ck_assert_msg(strstr(err.message, mentions) != NULL, "message '%s' lacks '%s'", err.message,
                      mentions);
    }
}

static void assert_accepted(const auth_t *auth, const char *token)
{
    struct herr err;
    int rc = verify(auth, token, NOW, NULL, &err);
    ck_assert_msg(rc == 0, "expected acceptance, got %d (%s)", rc, err.message);
}

/* ---- sign and verify ------------------------------------------------------------------ */

START_TEST(test_auth_sign_verify_round_trip)
{
    auth_t *auth = new_auth(secret_a);
    const char *groups[] = {"bau", "it", "j\xc3\xbcrgens-team"};
    struct herr err;
    auth_principal_t *p = NULL;

    char *token = auth_token_sign(auth, "anna", groups, 3, NOW, 3600, &err);
    ck_assert_ptr_nonnull(token);
    keep(token);
    ck_assert_int_eq(verify(auth, token, NOW, &p, &err), 0);
    ck_assert_str_eq(p->user, "anna");
    ck_assert_uint_eq(p->group_count, 3);
    for (size_t i = 0; i < 3; i++) {
        ck_assert_str_eq(p->groups[i], groups[i]);
    }
    ck_assert_ptr_null(p->application);
    ck_assert_int_eq(p->expires_at, NOW + 3600);
    auth_principal_free(p);
    auth_free(auth);
}
END_TEST

START_TEST(test_auth_sign_output_shape)
{
    auth_t *auth = new_auth(secret_a);
    const char *groups[] = {"bau"};
    struct herr err;
    size_t d1;
    size_t d2;

    char *token = keep(auth_token_sign(auth, "anna", groups, 1, NOW, 60, &err));
    ck_assert_ptr_nonnull(token);
    dots(token, &d1, &d2);
    ck_assert_ptr_null(strchr(token, '='));
    ck_assert_ptr_null(strchr(token + d2 + 1, '.'));

    /* The signature is HS256 over the first two parts, as any verifier computes it. */
    ck_assert_str_eq(token + d2 + 1, hs256_b64(secret_a, token, d2));

    json_error_t jerr;
    json_t *h = json_loads(b64url_decode_str(token, d1), 0, &jerr);
    ck_assert_ptr_nonnull(h);
    ck_assert_uint_eq(json_object_size(h), 2);
    ck_assert_str_eq(json_string_value(json_object_get(h, "alg")), "HS256");
    ck_assert_str_eq(json_string_value(json_object_get(h, "typ")), "JWT");
    json_decref(h);

    char *claims_text = b64url_decode_str(token + d1 + 1, d2 - d1 - 1);
    ck_assert_ptr_null(strchr(claims_text, ' ')); /* compact */
    json_t *c = json_loads(claims_text, 0, &jerr);
    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(json_string_value(json_object_get(c, "sub")), "anna");
    ck_assert_int_eq(json_integer_value(json_object_get(c, "iat")), NOW);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "nbf")), NOW);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "exp")), NOW + 60);
    json_t *g = json_object_get(c, "groups");
    ck_assert(json_is_array(g));
    ck_assert_uint_eq(json_array_size(g), 1);
    ck_assert_str_eq(json_string_value(json_array_get(g, 0)), "bau");
    json_decref(c);
    auth_free(auth);
}
END_TEST

START_TEST(test_auth_sign_without_groups_omits_claim)
{
    auth_t *auth = new_auth(secret_a);
    struct herr err;
    auth_principal_t *p = NULL;
    size_t d1;
    size_t d2;

    char *token = keep(auth_token_sign(auth, "ben", NULL, 0, NOW, 60, &err));
    ck_assert_ptr_nonnull(token);
    dots(token, &d1, &d2);
    json_error_t jerr;
    json_t *c = json_loads(b64url_decode_str(token + d1 + 1, d2 - d1 - 1), 0, &jerr);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_null(json_object_get(c, "groups"));
    json_decref(c);

    ck_assert_int_eq(verify(auth, token, NOW, &p, &err), 0);
    ck_assert_str_eq(p->user, "ben");
    ck_assert_uint_eq(p->group_count, 0);
    auth_principal_free(p);
    auth_free(auth);
}
END_TEST

START_TEST(test_auth_hand_made_token_with_azp)
{
    auth_t *auth = new_auth(secret_a);
    struct herr err;
    auth_principal_t *p = NULL;

    char *token = make_token(secret_a, HDR,
                             claims_with(",\"groups\":[\"bau\"],\"azp\":\"app-7\",\"iat\":1,"
                                         "\"iss\":\"idp\",\"aud\":[\"herold\"]"));
    ck_assert_int_eq(verify(auth, token, NOW, &p, &err), 0);
    ck_assert_str_eq(p->user, "anna");
    ck_assert_uint_eq(p->group_count, 1);
    ck_assert_str_eq(p->groups[0], "bau");
    ck_assert_ptr_nonnull(p->application);
    ck_assert_str_eq(p->application, "app-7");
    ck_assert_int_eq(p->expires_at, NOW + 3600);
    auth_principal_free(p);
    auth_free(auth);
}
END_TEST

START_TEST(test_auth_sign_refuses_bad_input)
{
    auth_t *auth = new_auth(secret_a);
    struct herr err;
    char long_id[130];
    /* Empty, space, C0, DEL, C1 (U+0080, U+009F), bad UTF-8 (stray, truncated, surrogate,
     * overlong). */
    const char *bad_users[] = {"",          "a b",  "a\tb", "a\x1f",        "a\177b",  "a\xc2\x80",
                               "a\xc2\x9f", "\xff", "\xc3", "\xed\xa0\x80", "\xc0\xaf"};

    for (size_t i = 0; i < sizeof(bad_users) / sizeof(bad_users[0]); i++) {
        herr_clear(&err);
        ck_assert_ptr_null(auth_token_sign(auth, bad_users[i], NULL, 0, NOW, 60, &err));
        ck_assert_int_eq(err.code, HEROLD_E_BAD_PRINCIPAL);
    }
    ck_assert_ptr_null(auth_token_sign(auth, NULL, NULL, 0, NOW, 60, &err));

    /* 128 bytes is the longest id, 129 one too many. */
    memset(long_id, 'x', 129);
    long_id[129] = '\0';
    ck_assert_ptr_null(auth_token_sign(auth, long_id, NULL, 0, NOW, 60, &err));
    ck_assert_int_eq(err.code, HEROLD_E_BAD_PRINCIPAL);
    long_id[128] = '\0';
    ck_assert_ptr_nonnull(keep(auth_token_sign(auth, long_id, NULL, 0, NOW, 60, &err)));
    ck_assert_ptr_nonnull(keep(auth_token_sign(auth, "a\xc2\xa0", NULL, 0, NOW, 60, &err)));

    const char *bad_groups[] = {"bau", "it staff"};
    herr_clear(&err);
    ck_assert_ptr_null(auth_token_sign(auth, "anna", bad_groups, 2, NOW, 60, &err));
    ck_assert_int_eq(err.code, HEROLD_E_BAD_PRINCIPAL);
    ck_assert_ptr_nonnull(keep(auth_token_sign(auth, "anna", bad_groups, 1, NOW, 60, &err)));

    /* ttl must be positive, and now + ttl must fit. */
    ck_assert_ptr_null(auth_token_sign(auth, "anna", NULL, 0, NOW, 0, &err));
    ck_assert_ptr_null(auth_token_sign(auth, "anna", NULL, 0, NOW, -1, &err));
    ck_assert_ptr_null(auth_token_sign(auth, "anna", NULL, 0, NOW, INT64_MAX - NOW + 1, &err));
    ck_assert_ptr_nonnull(keep(auth_token_sign(auth, "anna", NULL, 0, NOW, INT64_MAX - NOW, &err)));
    ck_assert_ptr_nonnull(keep(auth_token_sign(auth, "anna", NULL, 0, NOW, 1, &err)));
    auth_free(auth);
}
END_TEST

/* ---- forgery ------------------------------------------------------------------------- */

START_TEST(test_auth_forged_signature_char)
{
    auth_t *auth = new_auth(secret_a);
    struct herr err;
    size_t d1;
    size_t d2;

    char *token = keep(auth_token_sign(auth, "anna", NULL, 0, NOW, 60, &err));
    assert_accepted(auth, token);
    dots(token, &d1, &d2);
    /* Every signature byte counts: change each character in turn ('A' and 'Q' differ in
     * the high bits that even the last character carries). */
    for (size_t at = d2 + 1; token[at] != '\0'; at++) {
        char was = token[at];
        token[at] = was == 'A' ? 'Q' : 'A';
        assert_refused(auth, token, "signature");
        token[at] = was;
    }
    assert_accepted(auth, token);
    auth_free(auth);
}
END_TEST

START_TEST(test_auth_signature_noncanonical_last_char)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    auth_t *auth = new_auth(secret_a);
    struct herr err;

    char *token = keep(auth_token_sign(auth, "anna", NULL, 0, NOW, 60, &err));
    size_t len = strlen(token);
    /* 32 bytes in 43 characters: the last one carries 4 bits and 2 zero bits. Setting a
     * zero bit decodes to the same bytes under a lax decoder; a strict one refuses. */
    const char *pos = strchr(alphabet, token[len - 1]);
    ck_assert_ptr_nonnull(pos);
    size_t v = (size_t)(pos - alphabet);
    ck_assert_uint_eq(v & 3, 0);
    token[len - 1] = alphabet[v | 1];
    assert_refused(auth, token, "signature");
    token[len - 1] = alphabet[v];
    assert_accepted(auth, token);
    auth_free(auth);
}
END_TEST

START_TEST(test_auth_forged_payload)
{
    auth_t *auth = new_auth(secret_a);
    struct herr err;
    size_t d1;
    size_t d2;

    char *token = keep(auth_token_sign(auth, "anna", NULL, 0, NOW, 60, &err));
    dots(token, &d1, &d2);
    char *other_claims = b64url_str(fmt("{\"sub\":\"mallory\",\"iat\":%" PRId64 ",\"nbf\":%" PRId64
                                        ",\"exp\":%" PRId64 "}",
                                        NOW, NOW, NOW + 60));
    char *forged = fmt("%.*s.%s%s", (int)d1, token, other_claims, token + d2);
    assert_refused(auth, forged, "signature");

    /* Malformed claims under a wrong signature: the signature is checked first. */
    char *garbage = fmt("%.*s.%s%s", (int)d1, token, b64url_str("not json"), token + d2);
    assert_refused(auth, garbage, "signature");

    /* A changed header under the old signature. */
    char *header = fmt("%s%s", b64url_str("{\"alg\":\"HS256\"}"), token + d1);
    assert_refused(auth, header, "signature");
    auth_free(auth);
}
END_TEST

START_TEST(test_auth_other_secret)
{
    auth_t *a = new_auth(secret_a);
    auth_t *b = new_auth(secret_b);
    auth_t *a2 = new_auth(secret_a2);
    struct herr err;

    char *token = keep(auth_token_sign(a, "anna", NULL, 0, NOW, 60, &err));
    assert_accepted(a, token);
    assert_refused(b, token, "signature");
    assert_refused(a2, token, "signature");
    assert_refused(a, make_token(secret_b, HDR, claims_with("")), "signature");
    assert_accepted(a, make_token(secret_a, HDR, claims_with("")));
    auth_free(a);
    auth_free(b);
    auth_free(a2);
}
END_TEST

START_TEST(test_auth_alg_none)
{
    auth_t *auth = new_auth(secret_a);
    char *h = b64url_str("{\"alg\":\"none\"}");
    char *p = b64url_str(claims_with(""));

    assert_refused(auth, fmt("%s.%s.", h, p), "alg");
    /* Refused even with a correct HMAC: the header alone decides the algorithm. */
    assert_refused(auth, join_sign(secret_a, h, p), "alg");
    assert_refused(
        auth, make_token(secret_a, "{\"alg\":\"none\",\"typ\":\"JWT\"}", claims_with("")), "alg");
    auth_free(auth);
}
END_TEST

/* Headers that must be refused although the token is correctly signed. */
static const char *const refused_headers[] = {
    "{\"alg\":\"HS512\",\"typ\":\"JWT\"}",
    "{\"alg\":\"RS256\",\"typ\":\"JWT\"}",
    "{\"alg\":\"hs256\",\"typ\":\"JWT\"}",
    "{\"alg\":\"HS256 \"}",
    "{\"alg\":\"HS25\"}",
    "{\"alg\":\"\"}",
    "{\"typ\":\"JWT\"}",
    "{}",
    "{\"alg\":null}",
    "{\"alg\":1}",
    "{\"alg\":[\"HS256\"]}",
    "{\"alg\":\"HS256\",\"typ\":\"JOSE\"}",
    "{\"alg\":\"HS256\",\"typ\":\"jwt\"}",
    "{\"alg\":\"HS256\",\"typ\":1}",
    "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}",
    "{\"alg\":\"HS256\",\"crit\":[]}",
    "{\"alg\":\"HS256\",\"alg\":\"HS256\"}",
    "{\"alg\":\"none\",\"alg\":\"HS256\"}",
    "[\"HS256\"]",
    "\"HS256\"",
    "{\"alg\":\"HS256\"",
    "{\"alg\":\"HS256\"} x",
    "",
};

START_TEST(test_auth_header_refused)
{
    auth_t *auth = new_auth(secret_a);
    assert_refused(auth, make_token(secret_a, refused_headers[_i], claims_with("")), NULL);
    auth_free(auth);
}
END_TEST

START_TEST(test_auth_header_accepted)
{
    auth_t *auth = new_auth(secret_a);
    assert_accepted(auth, make_token(secret_a, "{\"alg\":\"HS256\"}", claims_with("")));
    assert_accepted(auth, make_token(secret_a, "{\"typ\":\"JWT\",\"alg\":\"HS256\",\"kid\":\"k1\"}",
                                     claims_with("")));
    assert_accepted(auth, make_token(secret_a, " { \"alg\" : \"HS256\" } ", claims_with("")));
    auth_free(auth);
}
END_TEST

/* ---- the clock ----------------------------------------------------------------------- */

START_TEST(test_auth_exp_leeway)
{
    auth_t *auth = new_auth(secret_a);
    struct herr err;
    auth_principal_t *p = NULL;

    /* exp plus leeway is the last valid second. */
    char *inside =
        make_token(secret_a, HDR, fmt("{\"sub\":\"anna\",\"exp\":%" PRId64 "}", NOW - LEEWAY));
    char *outside =
        make_token(secret_a, HDR, fmt("{\"sub\":\"anna\",\"exp\":%" PRId64 "}", NOW - LEEWAY - 1));
    ck_assert_int_eq(verify(auth, inside, NOW, &p, &err), 0);
    ck_assert_int_eq(p->expires_at, NOW - LEEWAY);
    auth_principal_free(p);
    ck_assert_int_eq(verify(auth, outside, NOW, NULL, &err), HEROLD_E_TOKEN_EXPIRED);
    ck_assert_ptr_nonnull(strstr(err.message, "exp"));

    /* The same through auth_token_sign and a later clock. */
    char *token = keep(auth_token_sign(auth, "anna", NULL, 0, NOW, 60, &err));
    ck_assert_int_eq(verify(auth, token, NOW + 60 + LEEWAY, NULL, &err), 0);
    ck_assert_int_eq(verify(auth, token, NOW + 60 + LEEWAY + 1, NULL, &err),
                     HEROLD_E_TOKEN_EXPIRED);
    auth_free(auth);
}
END_TEST

START_TEST(test_auth_nbf_leeway)
{
    auth_t *auth = new_auth(secret_a);
    struct herr err;

    char *inside = make_token(secret_a, HDR, claims_with(fmt(",\"nbf\":%" PRId64, NOW + LEEWAY)));
    char *outside =
        make_token(secret_a, HDR, claims_with(fmt(",\"nbf\":%" PRId64, NOW + LEEWAY + 1)));
    ck_assert_int_eq(verify(auth, inside, NOW, NULL, &err), 0);
    assert_refused(auth, outside, "nbf");

    /* Through auth_token_sign (nbf = now) and an earlier clock. */
    char *token = keep(auth_token_sign(auth, "anna", NULL, 0, NOW, 3600, &err));
    ck_assert_int_eq(verify(auth, token, NOW - LEEWAY, NULL, &err), 0);
    ck_assert_int_eq(verify(auth, token, NOW - LEEWAY - 1, NULL, &err), HEROLD_E_UNAUTHORIZED);
    ck_assert_ptr_nonnull(strstr(err.message, "not yet valid"));
    auth_free(auth);
}
END_TEST

START_TEST(test_auth_clock_extremes)
{
    auth_t *auth = new_auth(secret_a);
    struct herr err;
    char *far_exp =
        make_token(secret_a, HDR, fmt("{\"sub\":\"anna\",\"exp\":%" PRId64 "}", INT64_MAX));
    char *past_exp =
        make_token(secret_a, HDR, fmt("{\"sub\":\"anna\",\"exp\":%" PRId64 "}", INT64_MIN));
    char *far_nbf = make_token(
        secret_a, HDR,
        fmt("{\"sub\":\"anna\",\"exp\":%" PRId64 ",\"nbf\":%" PRId64 "}", INT64_MAX, INT64_MAX));
    char *past_nbf = make_token(
        secret_a, HDR,
        fmt("{\"sub\":\"anna\",\"exp\":%" PRId64 ",\"nbf\":%" PRId64 "}", INT64_MAX, INT64_MIN));

    /* No sum may overflow (the sanitizer build checks), and each answer stays right. */
    ck_assert_int_eq(verify(auth, far_exp, NOW, NULL, &err), 0);
    ck_assert_int_eq(verify(auth, far_exp, INT64_MAX, NULL, &err), 0);
    ck_assert_int_eq(verify(auth, far_exp, INT64_MIN, NULL, &err), 0);
    ck_assert_int_eq(verify(auth, past_exp, NOW, NULL, &err), HEROLD_E_TOKEN_EXPIRED);
    ck_assert_int_eq(verify(auth, past_exp, INT64_MIN, NULL, &err), 0);
    ck_assert_int_eq(verify(auth, far_nbf, NOW, NULL, &err), HEROLD_E_UNAUTHORIZED);
    ck_assert_int_eq(verify(auth, far_nbf, INT64_MAX, NULL, &err), 0);
    ck_assert_int_eq(verify(auth, past_nbf, INT64_MIN, NULL, &err), 0);

    /* An integer beyond 64 bits is not an integer claim. */
    assert_refused(
        auth, make_token(secret_a, HDR, "{\"sub\":\"anna\",\"exp\":9223372036854775808}"), NULL);
    auth_free(auth);
}
END_TEST

/* ---- claims ------------------------------------------------------------------------- */

struct claims_case {
    const char *claims;
    const char *mentions;
};

#define EXP "1700003600"
static const struct claims_case refused_claims[] = {
    {"{\"sub\":\"anna\"}", "exp"},
    {"{\"sub\":\"anna\",\"exp\":\"" EXP "\"}", "exp"},
    {"{\"sub\":\"anna\",\"exp\":1700003600.0}", "exp"},
    {"{\"sub\":\"anna\",\"exp\":1.7e9}", "exp"},
    {"{\"sub\":\"anna\",\"exp\":true}", "exp"},
    {"{\"sub\":\"anna\",\"exp\":null}", "exp"},
    {"{\"exp\":" EXP "}", "sub"},
    {"{\"sub\":42,\"exp\":" EXP "}", "sub"},
    {"{\"sub\":null,\"exp\":" EXP "}", "sub"},
    {"{\"sub\":[\"anna\"],\"exp\":" EXP "}", "sub"},
    {"{\"sub\":{\"id\":\"anna\"},\"exp\":" EXP "}", "sub"},
    {"{\"sub\":\"\",\"exp\":" EXP "}", "sub"},
    {"{\"sub\":\"anna b\",\"exp\":" EXP "}", "sub"},
    {"{\"sub\":\"anna\\u0001\",\"exp\":" EXP "}", "sub"},
    {"{\"sub\":\"anna\\u001f\",\"exp\":" EXP "}", "sub"},
    {"{\"sub\":\"anna\\u0080\",\"exp\":" EXP "}", "sub"},
    {"{\"sub\":\"anna\\u009f\",\"exp\":" EXP "}", "sub"},
    {"{\"sub\":\"anna\\n\",\"exp\":" EXP "}", "sub"},
    {"{\"sub\":\"anna\\u007f\",\"exp\":" EXP "}", "sub"},
    {"{\"sub\":\"anna\",\"exp\":" EXP ",\"groups\":\"bau\"}", "groups"},
    {"{\"sub\":\"anna\",\"exp\":" EXP ",\"groups\":{\"bau\":1}}", "groups"},
    {"{\"sub\":\"anna\",\"exp\":" EXP ",\"groups\":null}", "groups"},
    {"{\"sub\":\"anna\",\"exp\":" EXP ",\"groups\":[1]}", "groups"},
    {"{\"sub\":\"anna\",\"exp\":" EXP ",\"groups\":[\"bau\",null]}", "groups"},
    {"{\"sub\":\"anna\",\"exp\":" EXP ",\"groups\":[\"it staff\"]}", "groups"},
    {"{\"sub\":\"anna\",\"exp\":" EXP ",\"groups\":[\"\"]}", "groups"},
    {"{\"sub\":\"anna\",\"exp\":" EXP ",\"groups\":[[\"bau\"]]}", "groups"},
    {"{\"sub\":\"anna\",\"exp\":" EXP ",\"iat\":\"now\"}", "iat"},
    {"{\"sub\":\"anna\",\"exp\":" EXP ",\"iat\":1.5}", "iat"},
    {"{\"sub\":\"anna\",\"exp\":" EXP ",\"nbf\":\"0\"}", "nbf"},
    {"{\"sub\":\"anna\",\"exp\":" EXP ",\"azp\":7}", "azp"},
    {"{\"sub\":\"anna\",\"exp\":" EXP ",\"azp\":\"\"}", "azp"},
    {"{\"sub\":\"anna\",\"exp\":" EXP ",\"azp\":\"my app\"}", "azp"},
    {"{\"sub\":\"anna\",\"sub\":\"mallory\",\"exp\":" EXP "}", "claims"},
    {"{\"sub\":\"anna\",\"exp\":" EXP ",\"exp\":9999999999}", "claims"},
    {"[\"anna\"]", "claims"},
    {"\"anna\"", "claims"},
    {"{\"sub\":\"anna\",\"exp\":" EXP, "claims"},
    {"not json", "claims"},
    {"", "claims"},
};

START_TEST(test_auth_claims_refused)
{
    auth_t *auth = new_auth(secret_a);
    /* The case is valid apart from its flaw: exp lies after NOW. */
    ck_assert_int_gt(strtoll(EXP, NULL, 10), NOW);
    assert_refused(auth, make_token(secret_a, HDR, refused_claims[_i].claims),
                   refused_claims[_i].mentions);
    auth_free(auth);
}
END_TEST

START_TEST(test_auth_sub_length)
{
    auth_t *auth = new_auth(secret_a);
    struct herr err;
    auth_principal_t *p = NULL;
    char id[130];

    memset(id, 'a', 129);
    id[129] = '\0';
    assert_refused(auth, make_token(secret_a, HDR, fmt("{\"sub\":\"%s\",\"exp\":" EXP "}", id)),
                   "sub");
    id[128] = '\0';
    ck_assert_int_eq(verify(auth,
                            make_token(secret_a, HDR, fmt("{\"sub\":\"%s\",\"exp\":" EXP "}", id)),
                            NOW, &p, &err),
                     0);
    ck_assert_str_eq(p->user, id);
    auth_principal_free(p);

    /* Non-ASCII ids count bytes: 64 two-byte characters fit, 65 do not. */
    char *utf = fmt("%s", "");
    for (int i = 0; i < 64; i++) {
        utf = fmt("%s\xc3\xa4", utf);
    }
    assert_accepted(auth, make_token(secret_a, HDR, fmt("{\"sub\":\"%s\",\"exp\":" EXP "}", utf)));
    /* The printable ASCII neighbours of the refused bytes are ids. */
    assert_accepted(auth, make_token(secret_a, HDR, "{\"sub\":\"!~\",\"exp\":" EXP "}"));
    /* U+00A0 follows the C1 controls and is allowed, as U+007F's predecessor '~' is. */
    assert_accepted(auth, make_token(secret_a, HDR, "{\"sub\":\"a\\u00a0\",\"exp\":" EXP "}"));
    assert_refused(auth,
                   make_token(secret_a, HDR, fmt("{\"sub\":\"%s\xc3\xa4\",\"exp\":" EXP "}", utf)),
                   "sub");
    auth_free(auth);
}
END_TEST

static char *groups_claims(size_t count)
{
    char *list = fmt("%s", "");
    for (size_t i = 0; i < count; i++) {
        list = fmt("%s%s\"g%zu\"", list, i > 0 ? "," : "", i);
    }
    return claims_with(fmt(",\"groups\":[%s]", list));
}

START_TEST(test_auth_group_count)
{
    auth_t *auth = new_auth(secret_a);
    struct herr err;
    auth_principal_t *p = NULL;

    char *inside = make_token(secret_a, HDR, groups_claims(AUTH_MAX_GROUPS));
    ck_assert_int_eq(verify(auth, inside, NOW, &p, &err), 0);
    ck_assert_uint_eq(p->group_count, AUTH_MAX_GROUPS);
    ck_assert_str_eq(p->groups[AUTH_MAX_GROUPS - 1], fmt("g%d", AUTH_MAX_GROUPS - 1));
    auth_principal_free(p);
    assert_refused(auth, make_token(secret_a, HDR, groups_claims(AUTH_MAX_GROUPS + 1)), "groups");

    /* Empty groups are no groups. */
    ck_assert_int_eq(verify(auth, make_token(secret_a, HDR, groups_claims(0)), NOW, &p, &err), 0);
    ck_assert_uint_eq(p->group_count, 0);
    auth_principal_free(p);

    /* The signer keeps to the same limit. */
    const char *names[AUTH_MAX_GROUPS + 1];
    for (size_t i = 0; i <= AUTH_MAX_GROUPS; i++) {
        names[i] = fmt("g%zu", i);
    }
    char *token = keep(auth_token_sign(auth, "anna", names, AUTH_MAX_GROUPS, NOW, 60, &err));
    ck_assert_ptr_nonnull(token);
    assert_accepted(auth, token);
    ck_assert_ptr_null(auth_token_sign(auth, "anna", names, AUTH_MAX_GROUPS + 1, NOW, 60, &err));
    auth_free(auth);
}
END_TEST

/* ---- shape of the token ------------------------------------------------------------- */

/* Unpadded base64url length of n bytes. */
static size_t b64_len(size_t n)
{
    return (4 * n + 2) / 3;
}

/* A valid token of exactly `target` bytes (padded through an extra claim and spaces in
 * the header), or NULL when none of the tried shapes reaches it. */
static char *token_of_length(size_t target)
{
    for (size_t spaces = 0; spaces < 4; spaces++) {
        char *header = fmt("{\"alg\":\"HS256\"%*s}", (int)spaces, "");
        char *base = claims_with(",\"x\":\"\"");
        size_t fixed = b64_len(strlen(header)) + 1 + 1 + 43;
        for (size_t k = 0; fixed + b64_len(strlen(base) + k) <= target; k++) {
            if (fixed + b64_len(strlen(base) + k) == target) {
                char *pad = keep(malloc(k + 1));
                memset(pad, 'p', k);
                pad[k] = '\0';
                char *token = make_token(secret_a, header, claims_with(fmt(",\"x\":\"%s\"", pad)));
                ck_assert_uint_eq(strlen(token), target);
                return token;
            }
        }
    }
    return NULL;
}

START_TEST(test_auth_token_size)
{
    auth_t *auth = new_auth(secret_a);
    char *inside = token_of_length(AUTH_MAX_TOKEN_BYTES);
    char *outside = token_of_length(AUTH_MAX_TOKEN_BYTES + 1);
    ck_assert_ptr_nonnull(inside);
    ck_assert_ptr_nonnull(outside);
    assert_accepted(auth, inside);
    assert_refused(auth, outside, "limit");
    auth_free(auth);
}
END_TEST

START_TEST(test_auth_part_count)
{
    auth_t *auth = new_auth(secret_a);
    struct herr err;
    size_t d1;
    size_t d2;

    char *token = keep(auth_token_sign(auth, "anna", NULL, 0, NOW, 60, &err));
    dots(token, &d1, &d2);
    char *two = fmt("%.*s", (int)d2, token);
    assert_refused(auth, two, "parts");
    assert_refused(auth, fmt("%s.%s", token, token + d2 + 1), "parts");
    assert_refused(auth, fmt("%s.", token), "parts");
    assert_refused(auth, fmt(".%s", token), "parts");
    assert_refused(auth, token + d1 + 1, "parts");
    assert_refused(auth, "..", NULL);
    assert_refused(auth, "...", "parts");
    assert_refused(auth, "eyJhbGciOiJIUzI1NiJ9", "parts");
    ck_assert_int_eq(verify_len(auth, "", 0, NOW, NULL, &err), HEROLD_E_UNAUTHORIZED);
    assert_accepted(auth, token);
    auth_free(auth);
}
END_TEST

/* "h.p.sig" from parts given with their lengths (they may hold NUL bytes), signed over
 * "h.p" exactly as given. Sets *len to the token's length. */
static char *join_sign_len(const char *h, size_t h_len, const char *p, size_t p_len, size_t *len)
{
    char *sig;
    char *token = keep(malloc(h_len + 1 + p_len + 1 + 44));
    memcpy(token, h, h_len);
    token[h_len] = '.';
    memcpy(token + h_len + 1, p, p_len);
    sig = hs256_b64(secret_a, token, h_len + 1 + p_len);
    token[h_len + 1 + p_len] = '.';
    memcpy(token + h_len + 1 + p_len + 1, sig, strlen(sig) + 1);
    *len = h_len + 1 + p_len + 1 + strlen(sig);
    return token;
}

START_TEST(test_auth_bad_base64url_chars)
{
    auth_t *auth = new_auth(secret_a);
    struct herr err;
    const char bad[] = {'+', '/', ' ', '=', '.', '\n', '\0', '*', (char)0xc3};
    char *h = b64url_str(HDR);
    char *p = b64url_str(claims_with(""));
    size_t h_len = strlen(h);
    size_t p_len = strlen(p);
    size_t len;

    assert_accepted(auth, join_sign(secret_a, h, p));
    for (size_t i = 0; i < sizeof(bad); i++) {
        /* Correctly signed over the altered text, so only the alphabet is at fault. A '.'
         * makes four parts instead, which is refused as well. */
        const char *part = bad[i] == '.' ? "parts" : NULL;
        char *h_bad = fmt("%s", h);
        h_bad[5] = bad[i];
        char *token = join_sign_len(h_bad, h_len, p, p_len, &len);
        ck_assert_int_eq(verify_len(auth, token, len, NOW, NULL, &err), HEROLD_E_UNAUTHORIZED);
        ck_assert_ptr_nonnull(strstr(err.message, part != NULL ? part : "header"));

        char *p_bad = fmt("%s", p);
        p_bad[7] = bad[i];
        token = join_sign_len(h, h_len, p_bad, p_len, &len);
        ck_assert_int_eq(verify_len(auth, token, len, NOW, NULL, &err), HEROLD_E_UNAUTHORIZED);
        ck_assert_ptr_nonnull(strstr(err.message, part != NULL ? part : "claims"));

        token = join_sign_len(h, h_len, p, p_len, &len);
        token[len - 10] = bad[i];
        ck_assert_int_eq(verify_len(auth, token, len, NOW, NULL, &err), HEROLD_E_UNAUTHORIZED);
        ck_assert_ptr_nonnull(strstr(err.message, part != NULL ? part : "signature"));
    }

    /* A length of 4n+1 characters is no encoding at all, not even when the extra
     * character holds only zero bits ('A'), which a lax decoder drops. */
    ck_assert_uint_eq(h_len % 4, 0);
    assert_refused(auth, join_sign(secret_a, fmt("%sA", h), p), "header");
    char *h_short = fmt("%.*s", (int)(h_len / 4 * 4 - 3), h);
    ck_assert_uint_eq(strlen(h_short) % 4, 1);
    assert_refused(auth, join_sign(secret_a, h_short, p), "header");
    auth_free(auth);
}
END_TEST

START_TEST(test_auth_padding_refused)
{
    auth_t *auth = new_auth(secret_a);
    /* 16 and 17 bytes: one pads with "==", the other with "=". */
    const char *headers[] = {"{\"alg\":\"HS256\"} ", "{\"alg\":\"HS256\"}  "};
    char *claims = claims_with("");
    char *claims2 = claims_with(" ");
    char *claims3 = claims_with("  ");

    for (size_t i = 0; i < 2; i++) {
        const char *h = headers[i];
        ck_assert_uint_ne(strlen(h) % 3, 0);
        assert_accepted(auth,
                        join_sign(secret_a, b64url_pad(h, strlen(h), false), b64url_str(claims)));
        assert_refused(auth,
                       join_sign(secret_a, b64url_pad(h, strlen(h), true), b64url_str(claims)),
                       "header");
    }
    const char *bodies[] = {claims, claims2, claims3};
    size_t padded = 0;
    for (size_t i = 0; i < 3; i++) {
        if (strlen(bodies[i]) % 3 == 0) {
            continue;
        }
        padded++;
        assert_accepted(auth, join_sign(secret_a, b64url_str(HDR), b64url_str(bodies[i])));
        assert_refused(
            auth,
            join_sign(secret_a, b64url_str(HDR), b64url_pad(bodies[i], strlen(bodies[i]), true)),
            "claims");
    }
    ck_assert_uint_eq(padded, 2);

    struct herr err;
    char *token = keep(auth_token_sign(auth, "anna", NULL, 0, NOW, 60, &err));
    assert_refused(auth, fmt("%s=", token), "signature");
    auth_free(auth);
}
END_TEST

START_TEST(test_auth_duplicate_claim_keys)
{
    auth_t *auth = new_auth(secret_a);
    assert_refused(
        auth, make_token(secret_a, HDR, "{\"sub\":\"anna\",\"exp\":" EXP ",\"sub\":\"mallory\"}"),
        "repeats");
    assert_refused(auth,
                   make_token(secret_a, HDR,
                              "{\"sub\":\"anna\",\"exp\":" EXP
                              ",\"groups\":[],\"groups\":[\"a\"]}"),
                   "repeats");
    assert_refused(auth,
                   make_token(secret_a, "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"typ\":\"JWT\"}",
                              claims_with("")),
                   "repeats");
    /* The same key in nested objects is no repetition. */
    assert_accepted(auth, make_token(secret_a, HDR, claims_with(",\"x\":{\"sub\":\"b\"}")));
    auth_free(auth);
}
END_TEST

/* ---- secrets ---------------------------------------------------------------------- */

START_TEST(test_auth_new_secret_length)
{
    struct herr err;
    herr_clear(&err);
    ck_assert_ptr_null(auth_new(secret_a, AUTH_MIN_SECRET_BYTES - 1, &err));
    ck_assert_int_eq(err.code, HEROLD_E_CONFIG);
    ck_assert_uint_gt(strlen(err.message), 0);
    ck_assert_ptr_null(auth_new(NULL, 0, &err));
    auth_t *auth = auth_new(secret_a, AUTH_MIN_SECRET_BYTES, &err);
    ck_assert_ptr_nonnull(auth);
    auth_free(auth);
    auth_free(NULL);
}
END_TEST

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
    ck_assert_int_eq(close(fd), 0);
}

static char *read_file(const char *path, size_t *len)
{
    char *buf = keep(malloc(4096));
    int fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ssize_t n = read(fd, buf, 4095);
    ck_assert_int_ge(n, 0);
    close(fd);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

/* Tokens signed by either verify with the other. */
static void assert_same_secret(const auth_t *x, const auth_t *y)
{
    struct herr err;
    char *t1 = keep(auth_token_sign(x, "anna", NULL, 0, NOW, 60, &err));
    char *t2 = keep(auth_token_sign(y, "anna", NULL, 0, NOW, 60, &err));
    assert_accepted(y, t1);
    assert_accepted(x, t2);
}

START_TEST(test_auth_new_from_file_strips_newlines)
{
    struct herr err;
    auth_t *plain = new_auth(secret_a);
    const char *endings[] = {"\n", "\r\n", "\n\n", ""};

    for (size_t i = 0; i < 4; i++) {
        char *path = tmp_path(fmt("secret%zu", i));
        char *text = fmt("%s%s", secret_a, endings[i]);
        write_file(path, text, strlen(text));
        auth_t *from_file = auth_new_from_file(path, &err);
        ck_assert_ptr_nonnull(from_file);
        assert_same_secret(plain, from_file);
        auth_free(from_file);
    }

    /* Only line ends are stripped: a trailing space is part of the secret. */
    char *path = tmp_path("space");
    char *text = fmt("%s \n", secret_a);
    write_file(path, text, strlen(text));
    auth_t *spaced = auth_new_from_file(path, &err);
    ck_assert_ptr_nonnull(spaced);
    char *token = keep(auth_token_sign(plain, "anna", NULL, 0, NOW, 60, &err));
    assert_refused(spaced, token, "signature");
    auth_free(spaced);
    auth_free(plain);
}
END_TEST

START_TEST(test_auth_new_from_file_limits)
{
    struct herr err;
    char *path = tmp_path("secret");

    /* 31 bytes and a newline: too short once the newline is gone. */
    char *text = fmt("%.*s\n", AUTH_MIN_SECRET_BYTES - 1, secret_a);
    write_file(path, text, strlen(text));
    herr_clear(&err);
    ck_assert_ptr_null(auth_new_from_file(path, &err));
    ck_assert_int_eq(err.code, HEROLD_E_CONFIG);
    text = fmt("%.*s\n", AUTH_MIN_SECRET_BYTES, secret_a);
    write_file(path, text, strlen(text));
    auth_t *auth = auth_new_from_file(path, &err);
    ck_assert_ptr_nonnull(auth);
    auth_free(auth);

    write_file(path, "\n\n", 2);
    ck_assert_ptr_null(auth_new_from_file(path, &err));
    write_file(path, "", 0);
    ck_assert_ptr_null(auth_new_from_file(path, &err));

    /* 64 KiB is read; one byte more is refused rather than truncated. */
    size_t max = 64 * 1024;
    char *big = keep(malloc(max + 1));
    memset(big, 's', max + 1);
    write_file(path, big, max);
    auth = auth_new_from_file(path, &err);
    ck_assert_ptr_nonnull(auth);
    auth_t *same = auth_new(big, max, &err);
    assert_same_secret(auth, same);
    auth_free(same);
    auth_free(auth);
    write_file(path, big, max + 1);
    herr_clear(&err);
    ck_assert_ptr_null(auth_new_from_file(path, &err));
    ck_assert_int_eq(err.code, HEROLD_E_CONFIG);

    herr_clear(&err);
    ck_assert_ptr_null(auth_new_from_file(tmp_path("missing"), &err));
    ck_assert_int_eq(err.code, HEROLD_E_SYSTEM);
    ck_assert_ptr_null(auth_new_from_file(tmp_dir, &err));
}
END_TEST

START_TEST(test_auth_secret_file_ensure_creates)
{
    struct herr err;
    struct stat st;
    size_t len;
    size_t len2;
    char *path = tmp_path("jwt.secret");

    ck_assert_int_eq(auth_secret_file_ensure(path, &err), 0);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert(S_ISREG(st.st_mode));
    ck_assert_uint_eq(st.st_mode & 07777, 0600);
    char *text = read_file(path, &len);
    ck_assert_uint_eq(len, 2 * AUTH_MIN_SECRET_BYTES + 1);
    ck_assert_int_eq(text[len - 1], '\n');
    ck_assert_uint_eq(strspn(text, "0123456789abcdef"), 2 * AUTH_MIN_SECRET_BYTES);

    auth_t *auth = auth_new_from_file(path, &err);
    ck_assert_ptr_nonnull(auth);
    auth_t *plain = auth_new(text, 2 * AUTH_MIN_SECRET_BYTES, &err);
    assert_same_secret(auth, plain);
    auth_free(plain);
    auth_free(auth);

    /* A second call keeps the file, and so every token signed with it. */
    ck_assert_int_eq(auth_secret_file_ensure(path, &err), 0);
    char *again = read_file(path, &len2);
    ck_assert_uint_eq(len2, len);
    ck_assert_mem_eq(again, text, len);

    /* Another file gets another secret. */
    char *other_path = tmp_path("other.secret");
    ck_assert_int_eq(auth_secret_file_ensure(other_path, &err), 0);
    char *other = read_file(other_path, &len2);
    ck_assert_uint_eq(len2, len);
    ck_assert_int_ne(memcmp(other, text, len), 0);
}
END_TEST

START_TEST(test_auth_secret_file_ensure_keeps_existing)
{
    struct herr err;
    struct stat st;
    size_t len;
    char *path = tmp_path("jwt.secret");
    const char mine[] = "an operator's own secret, long enough\n";

    write_file(path, mine, strlen(mine));
    ck_assert_int_eq(chmod(path, 0640), 0);
    ck_assert_int_eq(auth_secret_file_ensure(path, &err), 0);
    char *text = read_file(path, &len);
    ck_assert_str_eq(text, mine);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0640);

    /* Even an empty file is left for the operator to fix: it is refused when read. */
    char *empty = tmp_path("empty");
    write_file(empty, "", 0);
    ck_assert_int_eq(auth_secret_file_ensure(empty, &err), 0);
    ck_assert_int_eq(stat(empty, &st), 0);
    ck_assert_int_eq(st.st_size, 0);
}
END_TEST

START_TEST(test_auth_secret_file_ensure_fails)
{
    struct herr err;
    herr_clear(&err);
    ck_assert_int_eq(auth_secret_file_ensure(tmp_path("no/such/dir/secret"), &err),
                     HEROLD_E_SYSTEM);
    ck_assert_int_eq(err.code, HEROLD_E_SYSTEM);
    ck_assert_uint_gt(strlen(err.message), 0);
}
END_TEST

/* ---- the reader check ---------------------------------------------------------------- */

START_TEST(test_auth_may_read)
{
    char *groups[] = {"bau", "it"};
    auth_principal_t ann = {.user = "ann", .group_count = 2, .groups = groups};
    auth_principal_t lone = {.user = "ann", .group_count = 0, .groups = NULL};
    /* One buffer with no terminators between entries: views must respect their length. */
    static const char buf[] = "*user:annauser:anngroup:bau2group:itgroup:ann*xuser:bau";
    hstr_t star = {buf, 1};
    hstr_t user_anna = {buf + 1, 9};
    hstr_t user_ann_in_anna = {buf + 1, 8};   /* "user:ann", followed by 'a' in memory */
    hstr_t group_bau_in_bau2 = {buf + 18, 9}; /* "group:bau", followed by '2' */
    hstr_t group_bau2 = {buf + 18, 10};
    hstr_t group_ba = {buf + 18, 8};
    hstr_t group_it = {buf + 28, 8};
    hstr_t group_ann = {buf + 36, 9};
    hstr_t star_x = {buf + 45, 2};
    hstr_t user_bau = {buf + 47, 8};
    hstr_t user_empty = HSTR_LIT("user:");
    hstr_t group_empty = HSTR_LIT("group:");
    hstr_t upper = HSTR_LIT("USER:ann");
    hstr_t empty = {buf, 0};

    ck_assert(hstr_eq_cstr(user_ann_in_anna, "user:ann"));
    ck_assert(hstr_eq_cstr(group_bau_in_bau2, "group:bau"));
    ck_assert(hstr_eq_cstr(group_it, "group:it"));
    ck_assert(hstr_eq_cstr(user_bau, "user:bau"));

    ck_assert(auth_may_read(&ann, &star, 1));
    ck_assert(auth_may_read(&lone, &star, 1));
    ck_assert(auth_may_read(&ann, &user_ann_in_anna, 1));
    ck_assert(!auth_may_read(&ann, &user_anna, 1));
    ck_assert(auth_may_read(&ann, &group_bau_in_bau2, 1));
    ck_assert(auth_may_read(&ann, &group_it, 1));
    ck_assert(!auth_may_read(&lone, &group_it, 1));
    ck_assert(!auth_may_read(&ann, &group_bau2, 1));
    ck_assert(!auth_may_read(&ann, &group_ba, 1));
    ck_assert(!auth_may_read(&ann, &group_ann, 1)); /* a user is not a group */
    ck_assert(!auth_may_read(&ann, &user_bau, 1));  /* nor a group a user */
    ck_assert(!auth_may_read(&ann, &star_x, 1));
    ck_assert(!auth_may_read(&ann, &user_empty, 1));
    ck_assert(!auth_may_read(&ann, &group_empty, 1));
    ck_assert(!auth_may_read(&ann, &upper, 1));
    ck_assert(!auth_may_read(&ann, &empty, 1));
    ck_assert(!auth_may_read(&ann, NULL, 0));
    ck_assert(!auth_may_read(&ann, &star, 0));

    /* A match anywhere in the list counts; a list of misses does not. */
    hstr_t misses[] = {user_anna, group_bau2, group_ann, star_x, user_bau, empty};
    ck_assert(!auth_may_read(&ann, misses, 6));
    hstr_t last_hits[] = {user_anna, group_bau2, group_ann, group_it};
    ck_assert(auth_may_read(&ann, last_hits, 4));
    ck_assert(!auth_may_read(&lone, last_hits, 4));
}
END_TEST

/* The principal of a token of secret_a with the default claims and extra ones. */
static auth_principal_t *verified(const auth_t *auth, const char *extra_claims)
{
    struct herr err;
    auth_principal_t *p = NULL;
    ck_assert_int_eq(
        verify(auth, make_token(secret_a, HDR, claims_with(extra_claims)), NOW, &p, &err), 0);
    return p;
}

#define GROUPS_AND_APP ",\"groups\":[\"bau\",\"it\"],\"azp\":\"app\""

START_TEST(test_auth_principal_dup)
{
    auth_t *auth = new_auth(secret_a);
    auth_principal_t *p = verified(auth, GROUPS_AND_APP);
    auth_principal_t *copy = auth_principal_dup(p);
    ck_assert_ptr_ne(copy->user, p->user);
    ck_assert_str_eq(copy->user, p->user);
    ck_assert_uint_eq(copy->group_count, 2);
    ck_assert_ptr_ne(copy->groups, p->groups);
    ck_assert_str_eq(copy->groups[0], "bau");
    ck_assert_str_eq(copy->groups[1], "it");
    ck_assert_str_eq(copy->application, "app");
    ck_assert_int_eq(copy->expires_at, p->expires_at);
    auth_principal_free(p);
    /* The copy outlives the original. */
    ck_assert_str_eq(copy->groups[1], "it");
    auth_principal_free(copy);

    p = verified(auth, "");
    copy = auth_principal_dup(p);
    ck_assert_uint_eq(copy->group_count, 0);
    ck_assert_ptr_null(copy->application);
    auth_principal_free(copy);
    auth_principal_free(p);
    auth_principal_free(NULL);
    auth_free(auth);
}
END_TEST

START_TEST(test_auth_principal_equal)
{
    auth_t *auth = new_auth(secret_a);
    auth_principal_t *p = verified(auth, GROUPS_AND_APP);
    auth_principal_t *same = auth_principal_dup(p);
    ck_assert(auth_principal_equal(p, same));
    ck_assert(auth_principal_equal(same, p));

    /* Each claim on its own makes a difference. */
    same->expires_at++;
    ck_assert(!auth_principal_equal(p, same));
    same->expires_at--;
    same->groups[1][0] = 'I';
    ck_assert(!auth_principal_equal(p, same));
    same->groups[1][0] = 'i';
    same->group_count = 1;
    ck_assert(!auth_principal_equal(p, same));
    same->group_count = 2;
    same->user[0] ^= 1;
    ck_assert(!auth_principal_equal(p, same));
    same->user[0] ^= 1;
    char *application = same->application;
    same->application = NULL;
    ck_assert(!auth_principal_equal(p, same));
    ck_assert(!auth_principal_equal(same, p));
    same->application = application;
    same->application[0] = 'b';
    ck_assert(!auth_principal_equal(p, same));
    same->application[0] = 'a';
    ck_assert(auth_principal_equal(p, same));
    auth_principal_free(same);

    /* No groups and no application on either side. */
    auth_principal_t *bare = verified(auth, "");
    auth_principal_t *bare_copy = auth_principal_dup(bare);
    ck_assert(auth_principal_equal(bare, bare_copy));
    ck_assert(!auth_principal_equal(bare, p));
    auth_principal_free(bare_copy);
    auth_principal_free(bare);
    auth_principal_free(p);
    auth_free(auth);
}
END_TEST

static Suite *auth_suite(void)
{
    Suite *s = suite_create("auth");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_auth_sign_verify_round_trip);
    tcase_add_test(tc, test_auth_sign_output_shape);
    tcase_add_test(tc, test_auth_sign_without_groups_omits_claim);
    tcase_add_test(tc, test_auth_hand_made_token_with_azp);
    tcase_add_test(tc, test_auth_sign_refuses_bad_input);
    tcase_add_test(tc, test_auth_forged_signature_char);
    tcase_add_test(tc, test_auth_signature_noncanonical_last_char);
    tcase_add_test(tc, test_auth_forged_payload);
    tcase_add_test(tc, test_auth_other_secret);
    tcase_add_test(tc, test_auth_alg_none);
    tcase_add_loop_test(tc, test_auth_header_refused, 0,
                        (int)(sizeof(refused_headers) / sizeof(refused_headers[0])));
    tcase_add_test(tc, test_auth_header_accepted);
    tcase_add_test(tc, test_auth_exp_leeway);
    tcase_add_test(tc, test_auth_nbf_leeway);
    tcase_add_test(tc, test_auth_clock_extremes);
    tcase_add_loop_test(tc, test_auth_claims_refused, 0,
                        (int)(sizeof(refused_claims) / sizeof(refused_claims[0])));
    tcase_add_test(tc, test_auth_sub_length);
    tcase_add_test(tc, test_auth_group_count);
    tcase_add_test(tc, test_auth_token_size);
    tcase_add_test(tc, test_auth_part_count);
    tcase_add_test(tc, test_auth_bad_base64url_chars);
    tcase_add_test(tc, test_auth_padding_refused);
    tcase_add_test(tc, test_auth_duplicate_claim_keys);
    tcase_add_test(tc, test_auth_new_secret_length);
    tcase_add_test(tc, test_auth_new_from_file_strips_newlines);
    tcase_add_test(tc, test_auth_new_from_file_limits);
    tcase_add_test(tc, test_auth_secret_file_ensure_creates);
    tcase_add_test(tc, test_auth_secret_file_ensure_keeps_existing);
    tcase_add_test(tc, test_auth_secret_file_ensure_fails);
    tcase_add_test(tc, test_auth_may_read);
    tcase_add_test(tc, test_auth_principal_dup);
    tcase_add_test(tc, test_auth_principal_equal);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(auth_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failures = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failures ? 1 : 0;
}
