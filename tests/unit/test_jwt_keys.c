/* Tokens under public keys: RS256 and ES256 from PEM files and JWK Sets, kid selection,
 * algorithm confusion refused, iss, aud and leeway, refused key files, and reloading. Keys
 * are made here with OpenSSL and tokens signed here, independently of the code under
 * test. */

#include <check.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "b64url.h"
#include "jwk.h"
#include "unit.h"

#define NOW 1795000000

static EVP_PKEY *rsa_key(unsigned bits)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
    ck_assert_ptr_nonnull(k);
    return k;
}

static EVP_PKEY *ec_key(const char *curve)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
    ck_assert_ptr_nonnull(k);
    return k;
}

static char *temp_path(const char *name)
{
    static int counter;
    char *path = malloc(256);
    snprintf(path, 256, "/tmp/herold-test-jwt-%d-%d-%s", (int)getpid(), counter++, name);
    return path;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* Public keys as one PEM file. */
static char *pem_file(EVP_PKEY *const *keys, size_t count)
{
    char *path = temp_path("keys.pem");
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (size_t i = 0; i < count; i++) {
        ck_assert_int_eq(PEM_write_PUBKEY(f, keys[i]), 1);
    }
    fclose(f);
    return path;
}

static char *b64_bn(EVP_PKEY *k, const char *param)
{
    BIGNUM *bn = NULL;
    ck_assert_int_eq(EVP_PKEY_get_bn_param(k, param, &bn), 1);
    unsigned char buf[1024];
    int len = BN_bn2bin(bn, buf);
    BN_free(bn);
    return b64url_encode(buf, (size_t)len);
}

/* A JWK of k (RSA or P-256) with the given kid (NULL: none) and extra members. */
static json_t *jwk_of(EVP_PKEY *k, const char *kid)
{
    json_t *jwk = json_object();
    if (EVP_PKEY_is_a(k, "RSA")) {
        json_object_set_new(jwk, "kty", json_string("RSA"));
        char *n = b64_bn(k, OSSL_PKEY_PARAM_RSA_N);
        char *e = b64_bn(k, OSSL_PKEY_PARAM_RSA_E);
        json_object_set_new(jwk, "n", json_string(n));
        json_object_set_new(jwk, "e", json_string(e));
        free(n);
        free(e);
    } else {
        unsigned char point[65];
        size_t len = 0;
        ck_assert_int_eq(
            EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point), &len),
            1);
        ck_assert_uint_eq(len, 65);
        char *x = b64url_encode(point + 1, 32);
        char *y = b64url_encode(point + 33, 32);
        json_object_set_new(jwk, "kty", json_string("EC"));
        json_object_set_new(jwk, "crv", json_string("P-256"));
        json_object_set_new(jwk, "x", json_string(x));
        json_object_set_new(jwk, "y", json_string(y));
        free(x);
        free(y);
    }
    if (kid != NULL) {
        json_object_set_new(jwk, "kid", json_string(kid));
    }
    return jwk;
}

/* Writes {"keys": keys} (stealing keys) and returns the path. */
static char *jwks_file(json_t *keys)
{
    char *path = temp_path("jwks.json");
    json_t *doc = json_pack("{s:o}", "keys", keys);
    ck_assert_int_eq(json_dump_file(doc, path, JSON_COMPACT), 0);
    json_decref(doc);
    return path;
}

/* A token with the given header and claims (JSON texts) signed by k as alg. */
static char *sign(EVP_PKEY *k, const char *header, const char *claims)
{
    char *h = b64url_encode((const unsigned char *)header, strlen(header));
    char *c = b64url_encode((const unsigned char *)claims, strlen(claims));
    size_t input_len = strlen(h) + 1 + strlen(c);
    char *input = malloc(input_len + 1);
    snprintf(input, input_len + 1, "%s.%s", h, c);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char sig[1024];
    size_t sig_len = sizeof(sig);
    ck_assert_int_eq(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k), 1);
    ck_assert_int_eq(EVP_DigestSign(md, sig, &sig_len, (unsigned char *)input, input_len), 1);
    EVP_MD_CTX_free(md);
    unsigned char raw[64];
    const unsigned char *out = sig;
    size_t out_len = sig_len;
    if (EVP_PKEY_is_a(k, "EC")) {
        /* OpenSSL signs in DER; a JWS carries r || s. */
        const unsigned char *p = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sig_len);
        ck_assert_ptr_nonnull(es);
        BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
        BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
        ECDSA_SIG_free(es);
        out = raw;
        out_len = 64;
    }
    char *s = b64url_encode(out, out_len);
    size_t token_len = input_len + 1 + strlen(s);
    char *token = malloc(token_len + 1);
    snprintf(token, token_len + 1, "%s.%s", input, s);
    free(h);
    free(c);
    free(input);
    free(s);
    return token;
}

static const char *const plain_claims =
    "{\"sub\":\"anna\",\"groups\":[\"bau\"],\"exp\":1795003600}";

/* 0 when the token verifies; else the error, whose message is kept in last_error. */
static char last_error[HERR_MESSAGE_MAX];

static int verify(const auth_t *auth, const char *token, int64_t now)
{
    auth_principal_t *p = NULL;
    struct herr err;
    int rc = auth_token_verify(auth, token, strlen(token), now, &p, &err);
    if (rc == 0) {
        ck_assert_str_eq(p->user, "anna");
        auth_principal_free(p);
        last_error[0] = '\0';
    } else {
        ck_assert_ptr_null(p);
        snprintf(last_error, sizeof(last_error), "%s", err.message);
    }
    return rc;
}

static auth_t *open_or_die(const auth_config_t *config)
{
    struct herr err;
    auth_t *auth = auth_open(config, &err);
    ck_assert_msg(auth != NULL, "auth_open: %s", auth == NULL ? err.message : "");
    return auth;
}

START_TEST(test_jwt_keys_pem_rs256_and_es256)
{
    EVP_PKEY *rsa = rsa_key(2048);
    EVP_PKEY *ec = ec_key("P-256");
    EVP_PKEY *stranger = ec_key("P-256");
    EVP_PKEY *keys[] = {rsa, ec};
    char *path = pem_file(keys, 2);
    auth_config_t config = {.public_key_file = path, .leeway_seconds = 30};
    auth_t *auth = open_or_die(&config);
    ck_assert_uint_eq(auth_key_count(auth), 2);

    char *rs = sign(rsa, "{\"alg\":\"RS256\",\"typ\":\"JWT\"}", plain_claims);
    char *es = sign(ec, "{\"alg\":\"ES256\"}", plain_claims);
    ck_assert_int_eq(verify(auth, rs, NOW), 0);
    ck_assert_int_eq(verify(auth, es, NOW), 0);

    /* Another key's signature, a claim changed after signing. */
    char *forged = sign(stranger, "{\"alg\":\"ES256\"}", plain_claims);
    ck_assert_int_eq(verify(auth, forged, NOW), HEROLD_E_UNAUTHORIZED);
    ck_assert_str_eq(last_error, "token: signature does not match");
    char *altered = strdup(rs);
    char *claims_part = strchr(altered, '.') + 1;
    claims_part[3] = claims_part[3] == 'A' ? 'B' : 'A';
    ck_assert_int_eq(verify(auth, altered, NOW), HEROLD_E_UNAUTHORIZED);

    /* An ES256 signature under an RS256 header, and the other way round. */
    char *swapped = sign(ec, "{\"alg\":\"RS256\"}", plain_claims);
    ck_assert_int_eq(verify(auth, swapped, NOW), HEROLD_E_UNAUTHORIZED);
    free(swapped);
    swapped = sign(rsa, "{\"alg\":\"ES256\"}", plain_claims);
    ck_assert_int_eq(verify(auth, swapped, NOW), HEROLD_E_UNAUTHORIZED);

    /* No secret is configured: an HS256 token is refused whatever its key, the public key
     * file's own bytes (the classic confusion) included; `none` always. */
    FILE *f = fopen(path, "r");
    char pem_text[8192];
    size_t pem_len = fread(pem_text, 1, sizeof(pem_text), f);
    fclose(f);
    auth_t *hs = auth_new(pem_text, pem_len, NULL);
    char *confused = auth_token_sign(hs, "anna", NULL, 0, NOW, 60, NULL);
    ck_assert_int_eq(verify(auth, confused, NOW), HEROLD_E_UNAUTHORIZED);
    ck_assert_ptr_nonnull(strstr(last_error, "alg must be one this broker has a key for"));
    char *h = b64url_encode((const unsigned char *)"{\"alg\":\"none\"}", 14);
    char *c = b64url_encode((const unsigned char *)plain_claims, strlen(plain_claims));
    char none[512];
    snprintf(none, sizeof(none), "%s.%s.", h, c);
    ck_assert_int_eq(verify(auth, none, NOW), HEROLD_E_UNAUTHORIZED);
    struct herr err;
    ck_assert_ptr_null(auth_token_sign(auth, "anna", NULL, 0, NOW, 60, &err));

    free(h);
    free(c);
    free(confused);
    auth_free(hs);
    free(swapped);
    free(altered);
    free(forged);
    free(rs);
    free(es);
    auth_free(auth);
    unlink(path);
    free(path);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(stranger);
}
END_TEST

START_TEST(test_jwt_keys_jwks_kid_selection)
{
    EVP_PKEY *a = rsa_key(2048);
    EVP_PKEY *b = rsa_key(2048);
    EVP_PKEY *c = ec_key("P-256");
    json_t *keys = json_array();
    json_array_append_new(keys, jwk_of(a, "a"));
    json_array_append_new(keys, jwk_of(b, "b"));
    json_array_append_new(keys, jwk_of(c, "c"));
    /* Keys for other parties are skipped, not refused. */
    json_t *enc = jwk_of(a, "enc");
    json_object_set_new(enc, "use", json_string("enc"));
    json_array_append_new(keys, enc);
    json_t *rs512 = jwk_of(b, "rs512");
    json_object_set_new(rs512, "alg", json_string("RS512"));
    json_array_append_new(keys, rs512);
    json_array_append_new(keys, json_pack("{s:s, s:s}", "kty", "oct", "k", "c2VjcmV0"));
    json_array_append_new(
        keys, json_pack("{s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-384", "x", "AA", "y", "AA"));
    char *path = jwks_file(keys);
    auth_config_t config = {.jwks_file = path, .leeway_seconds = 30};
    auth_t *auth = open_or_die(&config);
    ck_assert_uint_eq(auth_key_count(auth), 3);

    char *by_b = sign(b, "{\"alg\":\"RS256\",\"kid\":\"b\"}", plain_claims);
    char *b_as_a = sign(b, "{\"alg\":\"RS256\",\"kid\":\"a\"}", plain_claims);
    char *unknown = sign(b, "{\"alg\":\"RS256\",\"kid\":\"z\"}", plain_claims);
    char *no_kid = sign(b, "{\"alg\":\"RS256\"}", plain_claims);
    char *skipped = sign(b, "{\"alg\":\"RS256\",\"kid\":\"rs512\"}", plain_claims);
    char *ec_kid = sign(c, "{\"alg\":\"ES256\",\"kid\":\"c\"}", plain_claims);
    char *ec_wrong_kid = sign(c, "{\"alg\":\"ES256\",\"kid\":\"a\"}", plain_claims);
    char *kid_number = sign(b, "{\"alg\":\"RS256\",\"kid\":7}", plain_claims);
    ck_assert_int_eq(verify(auth, by_b, NOW), 0);
    ck_assert_int_eq(verify(auth, b_as_a, NOW), HEROLD_E_UNAUTHORIZED);
    ck_assert_str_eq(last_error, "token: signature does not match");
    ck_assert_int_eq(verify(auth, unknown, NOW), HEROLD_E_UNAUTHORIZED);
    ck_assert_str_eq(last_error, "token: no RS256 key has this kid");
    ck_assert_int_eq(verify(auth, no_kid, NOW), 0);
    ck_assert_int_eq(verify(auth, skipped, NOW), HEROLD_E_UNAUTHORIZED);
    ck_assert_int_eq(verify(auth, ec_kid, NOW), 0);
    ck_assert_int_eq(verify(auth, ec_wrong_kid, NOW), HEROLD_E_UNAUTHORIZED);
    ck_assert_str_eq(last_error, "token: no ES256 key has this kid");
    ck_assert_int_eq(verify(auth, kid_number, NOW), HEROLD_E_UNAUTHORIZED);
    ck_assert_str_eq(last_error, "token: kid is not a string");

    free(by_b);
    free(b_as_a);
    free(unknown);
    free(no_kid);
    free(skipped);
    free(ec_kid);
    free(ec_wrong_kid);
    free(kid_number);
    auth_free(auth);
    unlink(path);
    free(path);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
    EVP_PKEY_free(c);
}
END_TEST

/* Each refused key file names the problem and yields no verifier. */
static void expect_refused_jwks(json_t *keys, const char *needle)
{
    char *path = jwks_file(keys);
    auth_config_t config = {.jwks_file = path, .leeway_seconds = 30};
    struct herr err;
    auth_t *auth = auth_open(&config, &err);
    ck_assert_msg(auth == NULL, "accepted; expected '%s'", needle);
    ck_assert_int_eq(err.code, HEROLD_E_CONFIG);
    ck_assert_msg(strstr(err.message, needle) != NULL, "'%s' lacks '%s'", err.message, needle);
    unlink(path);
    free(path);
}

START_TEST(test_jwt_keys_refused_key_files)
{
    EVP_PKEY *small = rsa_key(1024);
    EVP_PKEY *ok = ec_key("P-256");
    EVP_PKEY *p384 = ec_key("P-384");

    json_t *keys = json_array();
    json_array_append_new(keys, jwk_of(small, "small"));
    expect_refused_jwks(keys, "not an RSA public key of 2048 bits or more");

    keys = json_array();
    json_array_append_new(keys, jwk_of(ok, "x"));
    json_array_append_new(keys, jwk_of(ok, "x"));
    expect_refused_jwks(keys, "kid repeats keys[0]'s");

    keys = json_array();
    json_t *off_curve = jwk_of(ok, "off");
    /* y = 1 with the key's x: not a point of the curve. */
    json_object_set_new(off_curve, "y", json_string("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"));
    json_array_append_new(keys, off_curve);
    expect_refused_jwks(keys, "not an EC P-256 public key");

    keys = json_array();
    json_array_append_new(keys, json_pack("{s:s, s:s}", "kty", "RSA", "e", "AQAB"));
    expect_refused_jwks(keys, "keys[0]: not an RSA public key");

    keys = json_array();
    json_array_append_new(keys, json_pack("{s:s, s:s}", "kty", "oct", "k", "c2VjcmV0"));
    expect_refused_jwks(keys, "has no RS256 or ES256 signing key");

    char *path = temp_path("bad.json");
    write_text(path, "{\"keys\": 7}");
    auth_config_t config = {.jwks_file = path, .leeway_seconds = 30};
    struct herr err;
    ck_assert_ptr_null(auth_open(&config, &err));
    ck_assert_ptr_nonnull(strstr(err.message, "is not a JSON object with a keys array"));
    write_text(path, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    config = (auth_config_t){.public_key_file = path, .leeway_seconds = 30};
    ck_assert_ptr_null(auth_open(&config, &err));
    ck_assert_ptr_nonnull(strstr(err.message, "key 1 is not a PEM public key"));
    unlink(path);
    free(path);

    EVP_PKEY *pems[] = {p384};
    path = pem_file(pems, 1);
    config = (auth_config_t){.public_key_file = path, .leeway_seconds = 30};
    ck_assert_ptr_null(auth_open(&config, &err));
    ck_assert_ptr_nonnull(strstr(err.message, "neither RSA of 2048 bits or more nor EC P-256"));
    unlink(path);
    free(path);

    config = (auth_config_t){.leeway_seconds = 30};
    ck_assert_ptr_null(auth_open(&config, &err));
    config = (auth_config_t){.jwks_file = "/nonexistent/jwks.json", .leeway_seconds = 30};
    ck_assert_ptr_null(auth_open(&config, &err));
    ck_assert_int_eq(err.code, HEROLD_E_SYSTEM);
    EVP_PKEY_free(small);
    EVP_PKEY_free(ok);
    EVP_PKEY_free(p384);
}
END_TEST

START_TEST(test_jwt_keys_issuer_audience_leeway)
{
    EVP_PKEY *ec = ec_key("P-256");
    EVP_PKEY *keys[] = {ec};
    char *path = pem_file(keys, 1);
    auth_config_t config = {.public_key_file = path,
                            .issuer = "https://idp.stadt.example",
                            .audience = "herold",
                            .leeway_seconds = 0};
    auth_t *auth = open_or_die(&config);
    static const struct {
        const char *claims;
        int rc;
    } cases[] = {
        {"{\"sub\":\"anna\",\"exp\":1795000000,\"iss\":\"https://idp.stadt.example\","
         "\"aud\":\"herold\"}",
         0},
        {"{\"sub\":\"anna\",\"exp\":1795000000,\"iss\":\"https://idp.stadt.example\","
         "\"aud\":[\"other\",\"herold\"]}",
         0},
        {"{\"sub\":\"anna\",\"exp\":1795000000,\"aud\":\"herold\"}", HEROLD_E_UNAUTHORIZED},
        {"{\"sub\":\"anna\",\"exp\":1795000000,\"iss\":\"https://evil.example\","
         "\"aud\":\"herold\"}",
         HEROLD_E_UNAUTHORIZED},
        {"{\"sub\":\"anna\",\"exp\":1795000000,\"iss\":\"https://idp.stadt.example\"}",
         HEROLD_E_UNAUTHORIZED},
        {"{\"sub\":\"anna\",\"exp\":1795000000,\"iss\":\"https://idp.stadt.example\","
         "\"aud\":[\"other\"]}",
         HEROLD_E_UNAUTHORIZED},
        {"{\"sub\":\"anna\",\"exp\":1795000000,\"iss\":\"https://idp.stadt.example\","
         "\"aud\":\"herold2\"}",
         HEROLD_E_UNAUTHORIZED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *token = sign(ec, "{\"alg\":\"ES256\"}", cases[i].claims);
        ck_assert_msg(verify(auth, token, NOW) == cases[i].rc, "case %zu: %s", i, last_error);
        free(token);
    }
    /* Leeway 0: valid at exp, expired one second later; with 600, 600 seconds later. */
    char *token = sign(ec, "{\"alg\":\"ES256\"}",
                       "{\"sub\":\"anna\",\"exp\":1795000000,\"nbf\":1794999000,"
                       "\"iss\":\"https://idp.stadt.example\",\"aud\":\"herold\"}");
    ck_assert_int_eq(verify(auth, token, NOW), 0);
    ck_assert_int_eq(verify(auth, token, NOW + 1), HEROLD_E_TOKEN_EXPIRED);
    ck_assert_int_eq(verify(auth, token, 1794999000 - 1), HEROLD_E_UNAUTHORIZED);
    auth_free(auth);
    config.leeway_seconds = AUTH_MAX_LEEWAY_SECONDS;
    auth = open_or_die(&config);
    ck_assert_int_eq(verify(auth, token, NOW + 600), 0);
    ck_assert_int_eq(verify(auth, token, NOW + 601), HEROLD_E_TOKEN_EXPIRED);
    ck_assert_int_eq(verify(auth, token, 1794999000 - 600), 0);
    ck_assert_int_eq(verify(auth, token, 1794999000 - 601), HEROLD_E_UNAUTHORIZED);
    auth_free(auth);
    struct herr err;
    config.leeway_seconds = AUTH_MAX_LEEWAY_SECONDS + 1;
    ck_assert_ptr_null(auth_open(&config, &err));
    config.leeway_seconds = -1;
    ck_assert_ptr_null(auth_open(&config, &err));
    free(token);
    unlink(path);
    free(path);
    EVP_PKEY_free(ec);
}
END_TEST

/* A rotated key set is used after auth_reload; a damaged one leaves the keys in use. */
START_TEST(test_jwt_keys_reload)
{
    EVP_PKEY *old_key = ec_key("P-256");
    EVP_PKEY *new_key = ec_key("P-256");
    json_t *keys = json_array();
    json_array_append_new(keys, jwk_of(old_key, "2026-1"));
    char *path = jwks_file(keys);
    auth_config_t config = {.jwks_file = path, .leeway_seconds = 30};
    auth_t *auth = open_or_die(&config);
    char *old_token = sign(old_key, "{\"alg\":\"ES256\",\"kid\":\"2026-1\"}", plain_claims);
    char *new_token = sign(new_key, "{\"alg\":\"ES256\",\"kid\":\"2026-2\"}", plain_claims);
    ck_assert_int_eq(verify(auth, old_token, NOW), 0);
    ck_assert_int_eq(verify(auth, new_token, NOW), HEROLD_E_UNAUTHORIZED);

    json_t *doc = json_pack("{s:[o]}", "keys", jwk_of(new_key, "2026-2"));
    ck_assert_int_eq(json_dump_file(doc, path, JSON_COMPACT), 0);
    json_decref(doc);
    struct herr err;
    ck_assert_int_eq(auth_reload(auth, &err), 0);
    ck_assert_int_eq(verify(auth, old_token, NOW), HEROLD_E_UNAUTHORIZED);
    ck_assert_int_eq(verify(auth, new_token, NOW), 0);

    write_text(path, "{\"keys\": [");
    ck_assert_int_eq(auth_reload(auth, &err), HEROLD_E_CONFIG);
    ck_assert_int_eq(verify(auth, new_token, NOW), 0);
    unlink(path);
    ck_assert_int_eq(auth_reload(auth, &err), HEROLD_E_SYSTEM);
    ck_assert_int_eq(verify(auth, new_token, NOW), 0);

    free(old_token);
    free(new_token);
    auth_free(auth);
    free(path);
    EVP_PKEY_free(old_key);
    EVP_PKEY_free(new_key);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("jwt_keys");
    TCase *tc = tcase_create("jwt_keys");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_jwt_keys_pem_rs256_and_es256);
    tcase_add_test(tc, test_jwt_keys_jwks_kid_selection);
    tcase_add_test(tc, test_jwt_keys_refused_key_files);
    tcase_add_test(tc, test_jwt_keys_issuer_audience_leeway);
    tcase_add_test(tc, test_jwt_keys_reload);
    suite_add_tcase(suite, tc);
    return unit_run(suite);
}
