/* libFuzzer target: a stored subscription document (subs_restore, the JSON subs_to_json
 * writes and the stores keep). Refused or restored, nothing may crash or leak; a restored
 * subscription must write a document that restores again to the same. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "subs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *json = malloc(size + 1);
    memcpy(json, data, size);
    json[size] = '\0';
    subs_t *subs = subs_new();
    sub_t *sub;
    struct herr err;
    static const char id[] = "7f1044b2-0d5e-4a8c-9f31-2c6b0e884c07";
    if (subs_restore(subs, id, json, &sub, &err) == 0) {
        char *again = subs_to_json(sub);
        subs_t *other = subs_new();
        sub_t *copy;
        if (subs_restore(other, id, again, &copy, &err) != 0) {
            __builtin_trap();
        }
        char *third = subs_to_json(copy);
        if (strcmp(again, third) != 0) {
            __builtin_trap();
        }
        free(again);
        free(third);
        subs_free(other);
    }
    subs_free(subs);
    free(json);
    return 0;
}
