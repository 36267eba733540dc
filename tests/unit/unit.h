#ifndef HEROLD_TESTS_UNIT_H
#define HEROLD_TESTS_UNIT_H

/* What every unit test program does last: run its suite (forked, Check's default) and
 * turn the result into the exit status. */

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"

static inline int unit_run(Suite *suite)
{
    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? 0 : 1;
}

/* A principal on the heap (release with auth_principal_free) expiring at 1795000000
 * (2026-11-18T11:06:40Z); groups may repeat. */
static inline auth_principal_t *unit_principal(const char *user, const char *const *groups,
                                               size_t count)
{
    auth_principal_t *p = calloc(1, sizeof(*p));
    p->user = strdup(user);
    p->groups = calloc(count + 1, sizeof(char *));
    for (size_t i = 0; i < count; i++) {
        p->groups[i] = strdup(groups[i]);
    }
    p->group_count = count;
    p->expires_at = 1795000000;
    return p;
}

#endif
