#include "jwk.h"

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>

#include "b64url.h"
#include "mem.h"
#include "readfile.h"

#define ES256_SIG_BYTES 64
#define P256_COORD_BYTES 32
#define RSA_MAX_MODULUS_BYTES 2048 /* 16384 bits: anything larger is a mistake or an attack */

const char *jwk_alg_name(jwk_alg_t alg)
{
    return alg == JWK_RS256 ? "RS256" : "ES256";
}

/* The algorithm a key may verify, or 0 for a key type or size herold does not accept. */
static jwk_alg_t classify(EVP_PKEY *pkey)
{
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        return EVP_PKEY_get_bits(pkey) >= JWK_MIN_RSA_BITS ? JWK_RS256 : 0;
    }
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64];
        if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                           NULL) == 1 &&
            (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)) {
            return JWK_ES256;
        }
    }
    return 0;
}

static void set_append(jwk_set_t *set, char *kid, jwk_alg_t alg, EVP_PKEY *pkey)
{
    set->keys = xrealloc(set->keys, (set->count + 1) * sizeof(*set->keys));
    set->keys[set->count++] = (jwk_key_t){kid, alg, pkey};
}

/* Moves the keys of from to the end of to. */
static void set_take(jwk_set_t *to, jwk_set_t *from)
{
    for (size_t i = 0; i < from->count; i++) {
        set_append(to, from->keys[i].kid, from->keys[i].alg, from->keys[i].pkey);
    }
    free(from->keys);
    from->keys = NULL;
    from->count = 0;
}

void jwk_set_clear(jwk_set_t *set)
{
    for (size_t i = 0; i < set->count; i++) {
        free(set->keys[i].kid);
        EVP_PKEY_free(set->keys[i].pkey);
    }
    free(set->keys);
    set->keys = NULL;
    set->count = 0;
}

int jwk_load_pem_file(const char *path, jwk_set_t *set, struct herr *err)
{
    size_t len = 0;
    char *text = readfile_bounded(path, JWK_MAX_FILE_BYTES, "jwt public key", &len, err);
    if (text == NULL) {
        return err->code;
    }
    int rc = jwk_parse_pem(text, path, set, err);
    free(text);
    return rc;
}

int jwk_parse_pem(const char *text, const char *path, jwk_set_t *set, struct herr *err)
{
    jwk_set_t loaded = {0};
    int rc = 0;
    /* Block by block, each read on its own: reading a PEM stream to its end leaves an
     * error whose form changed between OpenSSL versions. */
    const char *at = strstr(text, "-----BEGIN ");
    if (at == NULL) {
        rc = herr_set(err, HEROLD_E_CONFIG, "jwt public key: %s holds no PEM block", path);
    }
    while (rc == 0 && at != NULL) {
        const char *end = strstr(at, "-----END ");
        const char *end_line = end != NULL ? strstr(end + 9, "-----") : NULL;
        EVP_PKEY *pkey = NULL;
        if (end_line != NULL) {
            BIO *bio = BIO_new_mem_buf(at, (int)(end_line + 5 - at));
            pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
            BIO_free(bio);
        }
        if (pkey == NULL) {
            rc = herr_set(err, HEROLD_E_CONFIG,
                          "jwt public key: %s: key %zu is not a PEM public key", path,
                          loaded.count + 1);
            break;
        }
        jwk_alg_t alg = classify(pkey);
        if (alg == 0) {
            EVP_PKEY_free(pkey);
            rc = herr_set(err, HEROLD_E_CONFIG,
                          "jwt public key: %s: key %zu is neither RSA of %d bits or more nor "
                          "EC P-256",
                          path, loaded.count + 1, JWK_MIN_RSA_BITS);
            break;
        }
        if (set->count + loaded.count == JWK_MAX_KEYS) {
            EVP_PKEY_free(pkey);
            rc = herr_set(err, HEROLD_E_CONFIG, "jwt public key: more than %d keys", JWK_MAX_KEYS);
            break;
        }
        set_append(&loaded, NULL, alg, pkey);
        at = strstr(end_line + 5, "-----BEGIN ");
    }
    ERR_clear_error();
    if (rc != 0) {
        jwk_set_clear(&loaded);
        return rc;
    }
    set_take(set, &loaded);
    return 0;
}

/* A base64url member of a JWK as bytes, 1..max long. Caller frees. */
static unsigned char *jwk_bytes(const json_t *jwk, const char *name, size_t max, size_t *len)
{
    const json_t *value = json_object_get(jwk, name);
    if (!json_is_string(value) || json_string_length(value) == 0 ||
        json_string_length(value) > (max * 4 + 2) / 3) {
        return NULL;
    }
    size_t text_len = json_string_length(value);
    unsigned char *out = xmalloc(text_len * 3 / 4 + 3);
    if (!b64url_decode(json_string_value(value), text_len, out, len) || *len == 0) {
        free(out);
        return NULL;
    }
    return out;
}

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        pkey = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    if (pkey != NULL) {
        /* A point off the curve, an even modulus: refused here rather than at first use. */
        EVP_PKEY_CTX *check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
        bool ok = check != NULL && EVP_PKEY_public_check(check) == 1;
        EVP_PKEY_CTX_free(check);
        if (!ok) {
            EVP_PKEY_free(pkey);
            pkey = NULL;
        }
    }
    ERR_clear_error();
    return pkey;
}

static EVP_PKEY *rsa_from_jwk(const json_t *jwk)
{
    size_t n_len = 0;
    size_t e_len = 0;
    unsigned char *n = jwk_bytes(jwk, "n", RSA_MAX_MODULUS_BYTES, &n_len);
    unsigned char *e = jwk_bytes(jwk, "e", 8, &e_len);
    EVP_PKEY *pkey = NULL;
    if (n != NULL && e != NULL) {
        BIGNUM *bn_n = BN_bin2bn(n, (int)n_len, NULL);
        BIGNUM *bn_e = BN_bin2bn(e, (int)e_len, NULL);
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        if (bld != NULL && bn_n != NULL && bn_e != NULL &&
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) == 1 &&
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) == 1) {
            pkey = pkey_from_params("RSA", bld);
        }
        OSSL_PARAM_BLD_free(bld);
        BN_free(bn_n);
        BN_free(bn_e);
    }
    free(n);
    free(e);
    return pkey;
}

static EVP_PKEY *ec_from_jwk(const json_t *jwk)
{
    const json_t *crv = json_object_get(jwk, "crv");
    if (!json_is_string(crv) || strcmp(json_string_value(crv), "P-256") != 0) {
        return NULL;
    }
    size_t x_len = 0;
    size_t y_len = 0;
    unsigned char *x = jwk_bytes(jwk, "x", P256_COORD_BYTES, &x_len);
    unsigned char *y = jwk_bytes(jwk, "y", P256_COORD_BYTES, &y_len);
    EVP_PKEY *pkey = NULL;
    if (x != NULL && y != NULL && x_len == P256_COORD_BYTES && y_len == P256_COORD_BYTES) {
        unsigned char point[1 + 2 * P256_COORD_BYTES];
        point[0] = 0x04; /* uncompressed */
        memcpy(point + 1, x, P256_COORD_BYTES);
        memcpy(point + 1 + P256_COORD_BYTES, y, P256_COORD_BYTES);
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        if (bld != NULL &&
            OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ==
                1 &&
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)) ==
                1) {
            pkey = pkey_from_params("EC", bld);
        }
        OSSL_PARAM_BLD_free(bld);
    }
    free(x);
    free(y);
    return pkey;
}

/* Whether herold uses this JWK at all: a signing key of a type it verifies. */
static bool jwk_is_usable(const json_t *jwk, jwk_alg_t *alg)
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const json_t *use = json_object_get(jwk, "use");
    const json_t *alg_value = json_object_get(jwk, "alg");
    if (kty == NULL ||
        (use != NULL && !(json_is_string(use) && strcmp(json_string_value(use), "sig") == 0))) {
        return false;
    }
    if (strcmp(kty, "RSA") == 0) {
        *alg = JWK_RS256;
    } else if (strcmp(kty, "EC") == 0) {
        const json_t *crv = json_object_get(jwk, "crv");
        if (json_is_string(crv) && strcmp(json_string_value(crv), "P-256") != 0) {
            return false; /* another curve: for another algorithm */
        }
        *alg = JWK_ES256;
    } else {
        return false;
    }
    return alg_value == NULL || (json_is_string(alg_value) &&
                                 strcmp(json_string_value(alg_value), jwk_alg_name(*alg)) == 0);
}

int jwk_load_jwks_file(const char *path, jwk_set_t *set, struct herr *err)
{
    size_t len = 0;
    char *text = readfile_bounded(path, JWK_MAX_FILE_BYTES, "jwks", &len, err);
    if (text == NULL) {
        return err->code;
    }
    int rc = jwk_parse_jwks(text, len, path, set, err);
    free(text);
    return rc;
}

int jwk_parse_jwks(const char *text, size_t len, const char *path, jwk_set_t *set, struct herr *err)
{
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    const json_t *keys = json_object_get(doc, "keys");
    if (!json_is_array(keys)) {
        json_decref(doc);
        return herr_set(err, HEROLD_E_CONFIG, "jwks: %s is not a JSON object with a keys array",
                        path);
    }
    jwk_set_t loaded = {0};
    int rc = 0;
    size_t i;
    const json_t *jwk;
    json_array_foreach(keys, i, jwk)
    {
        jwk_alg_t alg = 0;
        if (!json_is_object(jwk) || !jwk_is_usable(jwk, &alg)) {
            continue;
        }
        const json_t *kid = json_object_get(jwk, "kid");
        if (kid != NULL && (!json_is_string(kid) || json_string_length(kid) == 0 ||
                            json_string_length(kid) > JWK_MAX_KID_BYTES)) {
            rc = herr_set(err, HEROLD_E_CONFIG,
                          "jwks: %s: keys[%zu]: kid is not a string of 1..%d "
                          "bytes",
                          path, i, JWK_MAX_KID_BYTES);
            break;
        }
        for (size_t k = 0; kid != NULL && k < loaded.count; k++) {
            if (loaded.keys[k].kid != NULL &&
                strcmp(loaded.keys[k].kid, json_string_value(kid)) == 0) {
                rc = herr_set(err, HEROLD_E_CONFIG, "jwks: %s: keys[%zu]: kid repeats keys[%zu]'s",
                              path, i, k);
                break;
            }
        }
        if (rc != 0) {
            break;
        }
        EVP_PKEY *pkey = alg == JWK_RS256 ? rsa_from_jwk(jwk) : ec_from_jwk(jwk);
        if (pkey == NULL || classify(pkey) != alg) {
            EVP_PKEY_free(pkey);
            rc = herr_set(err, HEROLD_E_CONFIG,
                          alg == JWK_RS256
                              ? "jwks: %s: keys[%zu]: not an RSA public key of %d bits or more"
                              : "jwks: %s: keys[%zu]: not an EC P-256 public key (crv, x, y)",
                          path, i, JWK_MIN_RSA_BITS);
            break;
        }
        if (set->count + loaded.count == JWK_MAX_KEYS) {
            EVP_PKEY_free(pkey);
            rc = herr_set(err, HEROLD_E_CONFIG, "jwks: more than %d keys", JWK_MAX_KEYS);
            break;
        }
        set_append(&loaded, kid != NULL ? xstrdup(json_string_value(kid)) : NULL, alg, pkey);
    }
    json_decref(doc);
    if (rc == 0 && loaded.count == 0) {
        rc = herr_set(err, HEROLD_E_CONFIG, "jwks: %s has no RS256 or ES256 signing key", path);
    }
    if (rc != 0) {
        jwk_set_clear(&loaded);
        return rc;
    }
    set_take(set, &loaded);
    return 0;
}

/* The DER form OpenSSL verifies, from the r || s a JWS carries. Caller frees with
 * OPENSSL_free. */
static int es256_to_der(const unsigned char *sig, unsigned char **der)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, ES256_SIG_BYTES / 2, NULL);
    BIGNUM *s = BN_bin2bn(sig + ES256_SIG_BYTES / 2, ES256_SIG_BYTES / 2, NULL);
    int len = -1;
    if (es != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(es, r, s) == 1) {
        r = NULL; /* owned by es now */
        s = NULL;
        *der = NULL;
        len = i2d_ECDSA_SIG(es, der);
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return len;
}

bool jwk_verify(const jwk_key_t *key, const void *data, size_t len, const unsigned char *sig,
                size_t sig_len)
{
    unsigned char *der = NULL;
    if (key->alg == JWK_ES256) {
        if (sig_len != ES256_SIG_BYTES) {
            return false;
        }
        int der_len = es256_to_der(sig, &der);
        if (der_len <= 0) {
            return false;
        }
        sig = der;
        sig_len = (size_t)der_len;
    } else if (sig_len != (size_t)EVP_PKEY_get_size(key->pkey)) {
        return false;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md != NULL && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key->pkey) == 1 &&
              EVP_DigestVerify(md, sig, sig_len, data, len) == 1;
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    ERR_clear_error();
    return ok;
}
