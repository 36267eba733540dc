/* libFuzzer target: the body of POST /v1.0/subscriptions (rest_check_create_body), as an
 * authenticated client sends it. Refused or accepted, nothing may crash or leak; an
 * accepted body must also be accepted again (the check depends on nothing but its input
 * and the configuration). */

#include <stdint.h>

#include "rest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const rest_config_t config = {
        .allow_private = false,
        .min_expiration_seconds = 2700,
        .max_expiration_minutes = 42300,
        .max_subscriptions_per_user = 1000,
    };
    static auth_principal_t anna = {.user = "anna", .application = "app", .expires_at = INT64_MAX};
    struct herr err;
    const int64_t now = 1795000000;
    int rc = rest_check_create_body(&config, (const char *)data, size, &anna, now, &err);
    if (rc == 0 &&
        rest_check_create_body(&config, (const char *)data, size, &anna, now, &err) != 0) {
        __builtin_trap();
    }
    return 0;
}
