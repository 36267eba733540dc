/* libFuzzer target: JWK Set and PEM key parsing (jwk.h). Refused or loaded, nothing may
 * crash or leak, and a loaded set holds only keys of the two accepted kinds. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jwk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    jwk_set_t set = {0};
    struct herr err;
    if (jwk_parse_jwks((const char *)data, size, "fuzz", &set, &err) == 0 && set.count == 0) {
        __builtin_trap();
    }
    for (size_t i = 0; i < set.count; i++) {
        if (set.keys[i].alg != JWK_RS256 && set.keys[i].alg != JWK_ES256) {
            __builtin_trap();
        }
    }
    jwk_set_clear(&set);
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    if (jwk_parse_pem(text, "fuzz", &set, &err) == 0 && set.count == 0) {
        __builtin_trap();
    }
    jwk_set_clear(&set);
    free(text);
    return 0;
}
