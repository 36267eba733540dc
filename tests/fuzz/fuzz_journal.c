/* libFuzzer target: journal recovery and reading (journal.h). The input becomes the only
 * segment of a journal directory; when its first byte is even, a valid segment header is
 * put in front, so that the fuzzer spends its time on records. Opening must either refuse
 * with an error or recover, and every record it then reads must have the next seq. */

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LEVEL_ERROR); /* a cut tail is this target's daily bread */
    return 0;
}

/* Whatever recovery left (a new segment, a truncated one) goes before the next input. */
static void empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
}

struct walk {
    uint64_t expected;
    size_t count;
};

static bool check_record(const journal_record_t *record, void *ctx)
{
    struct walk *w = ctx;
    if (w->count > 0 && record->seq != w->expected) {
        __builtin_trap();
    }
    w->expected = record->seq + 1;
    w->count++;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char dir[64];
    if (dir[0] == '\0') {
        snprintf(dir, sizeof(dir), "/tmp/herold-fuzz-journal-%d", (int)getpid());
    }
    mkdir(dir, 0700);
    char path[128];
    snprintf(path, sizeof(path), "%s/00000000000000000001.seg", dir);
    FILE *f = fopen(path, "wb");
    if (size > 0 && data[0] % 2 == 0) {
        static const unsigned char header[16] = {'H', 'E', 'R', 'O', 'L', 'D', 'J', '1', 1};
        fwrite(header, 1, sizeof(header), f);
        data++;
        size--;
    }
    fwrite(data, 1, size, f);
    fclose(f);

    journal_config_t config = {.dir = dir};
    struct herr err;
    journal_t *journal = journal_open(&config, &err);
    if (journal != NULL) {
        struct walk w = {0, 0};
        if (journal_read(journal, 0, check_record, &w, &err) == 0 && w.count > 0 &&
            w.expected - 1 != journal_last_seq(journal)) {
            __builtin_trap();
        }
        journal_close(journal);
    }
    empty_dir(dir);
    return 0;
}
