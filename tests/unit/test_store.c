/* The embedded store's own file behaviour: durable puts, deletes and cursors, compaction, a
 * torn tail, damage, the directory lock. tests/unit/test_store_conformance.c holds both
 * backends to the store.h contract. */

#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store.h"
#include "unit.h"

struct seen {
    char ids[16][64];
    char docs[16][256];
    int count;
    char cursor_keys[16][64];
    uint64_t cursor_seqs[16];
    int cursor_count;
};

static void collect(const char *id, const char *json, void *ctx)
{
    struct seen *seen = ctx;
    ck_assert_int_lt(seen->count, 16);
    snprintf(seen->ids[seen->count], sizeof(seen->ids[0]), "%s", id);
    snprintf(seen->docs[seen->count], sizeof(seen->docs[0]), "%s", json);
    seen->count++;
}

static const char *find_doc(const struct seen *seen, const char *id)
{
    for (int i = 0; i < seen->count; i++) {
        if (strcmp(seen->ids[i], id) == 0) {
            return seen->docs[i];
        }
    }
    return NULL;
}

static void collect_cursor(const char *key, uint64_t seq, void *ctx)
{
    struct seen *seen = ctx;
    ck_assert_int_lt(seen->cursor_count, 16);
    snprintf(seen->cursor_keys[seen->cursor_count], sizeof(seen->cursor_keys[0]), "%s", key);
    seen->cursor_seqs[seen->cursor_count] = seq;
    seen->cursor_count++;
}

static store_t *open_store(const char *dir, struct seen *seen, struct herr *err)
{
    store_config_t config = {.data_dir = dir};
    store_loader_t loader = {collect, collect_cursor, seen};
    memset(seen, 0, sizeof(*seen));
    return store_file_open(&config, &loader, err);
}

static char *temp_dir(void)
{
    char *dir = strdup("/tmp/herold-store-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    return dir;
}

static void append_raw(const char *dir, const char *text)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/subscriptions.log", dir);
    int fd = open(path, O_WRONLY | O_APPEND);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static off_t log_size(const char *dir)
{
    char path[256];
    struct stat st;
    snprintf(path, sizeof(path), "%s/subscriptions.log", dir);
    ck_assert_int_eq(stat(path, &st), 0);
    return st.st_size;
}

START_TEST(test_store_puts_and_deletes_survive_reopen)
{
    char *dir = temp_dir();
    struct seen seen = {0};
    struct herr err;
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        /* A writer that ends without closing, as a crash would: what was confirmed is on
         * disk already. */
        store_t *store = open_store(dir, &seen, &err);
        int failures = store == NULL || seen.count != 0;
        failures += store_subscription_put(store, "a", "{\"v\":1}", &err) != 0;
        failures += store_subscription_put(store, "b", "{\"v\":2}", &err) != 0;
        failures += store_subscription_put(store, "a", "{\"v\":3}", &err) != 0; /* replace */
        failures += store_subscription_put(store, "c", "{\"v\":4}", &err) != 0;
        store_cursor_t cursors[] = {{"c", 7}, {"user:ana", 9}, {"b", 3}};
        failures += store_cursors_put(store, cursors, 3, &err) != 0;
        failures += store_subscription_delete(store, "b", &err) != 0;
        failures += store_subscription_delete(store, "never", &err) != 0;
        _exit(failures);
    }
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    store_t *again = open_store(dir, &seen, &err);
    ck_assert_ptr_nonnull(again);
    ck_assert_int_eq(seen.count, 2);
    ck_assert_str_eq(find_doc(&seen, "a"), "{\"v\":3}");
    ck_assert_str_eq(find_doc(&seen, "c"), "{\"v\":4}");
    ck_assert_ptr_null(find_doc(&seen, "b"));
    /* The cursor of the deleted subscription went with it. */
    ck_assert_int_eq(seen.cursor_count, 2);
    ck_assert_str_eq(seen.cursor_keys[0], "c");
    ck_assert_uint_eq(seen.cursor_seqs[0], 7);
    ck_assert_str_eq(seen.cursor_keys[1], "user:ana");
    ck_assert_uint_eq(seen.cursor_seqs[1], 9);
    store_close(again);
    free(dir);
}
END_TEST

START_TEST(test_store_cuts_a_torn_last_line)
{
    char *dir = temp_dir();
    struct seen seen = {0};
    struct herr err;
    store_t *store = open_store(dir, &seen, &err);
    ck_assert_int_eq(store_subscription_put(store, "a", "{\"v\":1}", &err), 0);
    store_close(store);
    off_t good = log_size(dir);
    append_raw(dir, "P b {\"v\":");
    store = open_store(dir, &seen, &err);
    ck_assert_ptr_nonnull(store);
    ck_assert_int_eq(seen.count, 1);
    ck_assert_str_eq(seen.ids[0], "a");
    ck_assert_int_eq(log_size(dir), good); /* rewritten without the torn line */
    store_close(store);
    free(dir);
}
END_TEST

START_TEST(test_store_refuses_damage_before_the_last_line)
{
    char *dir = temp_dir();
    struct seen seen = {0};
    struct herr err;
    store_t *store = open_store(dir, &seen, &err);
    ck_assert_int_eq(store_subscription_put(store, "a", "{\"v\":1}", &err), 0);
    store_close(store);
    append_raw(dir, "X garbage\nP c {\"v\":2}\n");
    ck_assert_ptr_null(open_store(dir, &seen, &err));
    ck_assert_int_eq(err.code, HEROLD_E_SYSTEM);
    ck_assert_ptr_nonnull(strstr(err.message, "line 2"));
    free(dir);
}
END_TEST

START_TEST(test_store_compacts_a_long_log)
{
    char *dir = temp_dir();
    struct seen seen = {0};
    struct herr err;
    store_t *store = open_store(dir, &seen, &err);
    for (int i = 0; i < 1000; i++) {
        ck_assert_int_eq(store_subscription_put(store, "same", "{\"v\":1}", &err), 0);
    }
    /* 1000 puts of one id never leave more than 2 * 1 + 64 lines behind. */
    ck_assert_int_lt(log_size(dir), 70 * (off_t)strlen("P same {\"v\":1}\n"));
    store_close(store);
    free(dir);
}
END_TEST

START_TEST(test_store_refuses_an_oversize_document)
{
    char *dir = temp_dir();
    struct herr err;
    struct seen seen = {0};
    store_t *store = open_store(dir, &seen, &err);
    char *big = malloc(STORE_MAX_DOCUMENT_BYTES + 2);
    memset(big, 'x', STORE_MAX_DOCUMENT_BYTES + 1);
    big[STORE_MAX_DOCUMENT_BYTES + 1] = '\0';
    ck_assert_int_eq(store_subscription_put(store, "big", big, &err), HEROLD_E_TOO_LARGE);
    big[STORE_MAX_DOCUMENT_BYTES] = '\0'; /* exactly the limit is accepted */
    ck_assert_int_eq(store_subscription_put(store, "big", big, &err), 0);
    ck_assert_int_eq(store_subscription_put(store, "nl", "{}\n", &err), HEROLD_E_TOO_LARGE);
    free(big);
    store_close(store);
    free(dir);
}
END_TEST

START_TEST(test_store_cuts_a_torn_cursor_line_and_refuses_bad_ones)
{
    char *dir = temp_dir();
    struct seen seen;
    struct herr err;
    store_t *store = open_store(dir, &seen, &err);
    store_cursor_t cursor = {"user:ana", 41};
    ck_assert_int_eq(store_cursors_put(store, &cursor, 1, &err), 0);
    store_close(store);
    off_t good = log_size(dir);
    append_raw(dir, "C user:ana 4");
    store = open_store(dir, &seen, &err);
    ck_assert_ptr_nonnull(store);
    ck_assert_int_eq(seen.cursor_count, 1);
    ck_assert_uint_eq(seen.cursor_seqs[0], 41);
    store_close(store);
    ck_assert_int_eq(log_size(dir), good);
    /* Damage in a cursor line before the last line is refused. */
    append_raw(dir, "C user:bo x\nC user:ana 50\n");
    ck_assert_ptr_null(open_store(dir, &seen, &err));
    ck_assert_int_eq(err.code, HEROLD_E_SYSTEM);
    free(dir);
}
END_TEST

START_TEST(test_store_a_second_open_of_one_directory_is_refused)
{
    char *dir = temp_dir();
    struct seen seen;
    struct herr err;
    store_t *store = open_store(dir, &seen, &err);
    ck_assert_ptr_nonnull(store);
    ck_assert_int_eq(store_subscription_put(store, "a", "{}", &err), 0);
    ck_assert_ptr_null(open_store(dir, &seen, &err));
    ck_assert_int_eq(err.code, HEROLD_E_UNAVAILABLE);
    /* The refused open changed nothing: the log still holds "a". */
    store_close(store);
    store = open_store(dir, &seen, &err);
    ck_assert_int_eq(seen.count, 1);
    store_close(store);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("store");
    TCase *tc = tcase_create("store");
    tcase_add_test(tc, test_store_puts_and_deletes_survive_reopen);
    tcase_add_test(tc, test_store_cuts_a_torn_last_line);
    tcase_add_test(tc, test_store_refuses_damage_before_the_last_line);
    tcase_add_test(tc, test_store_compacts_a_long_log);
    tcase_add_test(tc, test_store_refuses_an_oversize_document);
    tcase_add_test(tc, test_store_cuts_a_torn_cursor_line_and_refuses_bad_ones);
    tcase_add_test(tc, test_store_a_second_open_of_one_directory_is_refused);
    suite_add_tcase(suite, tc);
    return unit_run(suite);
}
