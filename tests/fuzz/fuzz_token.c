/* libFuzzer target: token verification (auth.h) under an HS256 secret, an RSA and a P-256
 * key at once, with an issuer and an audience configured. No input may crash, and none
 * may verify: nobody but this process holds the keys, and they are made afresh at start. */

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static auth_t *auth;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char secret_path[64];
    char pem_path[64];
    snprintf(secret_path, sizeof(secret_path), "/tmp/herold-fuzz-token-%d.secret", (int)getpid());
    snprintf(pem_path, sizeof(pem_path), "/tmp/herold-fuzz-token-%d.pem", (int)getpid());
    FILE *f = fopen(secret_path, "w");
    fputs("0123456789abcdef0123456789abcdef0123456789abcdef\n", f);
    fclose(f);
    f = fopen(pem_path, "w");
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    PEM_write_PUBKEY(f, rsa);
    PEM_write_PUBKEY(f, ec);
    fclose(f);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    auth_config_t config = {.secret_file = secret_path,
                            .public_key_file = pem_path,
                            .issuer = "https://idp.example",
                            .audience = "herold",
                            .leeway_seconds = 30};
    struct herr err;
    auth = auth_open(&config, &err);
    unlink(secret_path);
    unlink(pem_path);
    if (auth == NULL) {
        fprintf(stderr, "fuzz_token: %s\n", err.message);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    auth_principal_t *principal = NULL;
    struct herr err;
    if (auth_token_verify(auth, (const char *)data, size, 1795000000, &principal, &err) == 0) {
        __builtin_trap(); /* a forged token verified */
    }
    if (principal != NULL) {
        __builtin_trap();
    }
    return 0;
}
