#ifndef HEROLD_TESTS_UNIT_H
#define HEROLD_TESTS_UNIT_H

/* What every unit test program does last: run its suite (forked, Check's default) and
 * turn the result into the exit status. */

#include <check.h>

static inline int unit_run(Suite *suite)
{
    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? 0 : 1;
}

#endif
