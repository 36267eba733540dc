#ifndef HEROLD_MEM_H
#define HEROLD_MEM_H

/*
 * Allocation that never returns NULL: out of memory is fatal (a message, then abort).
 * Limits on every client-controlled size keep inputs from driving herold there.
 * Also the string view used for wire strings, which are not NUL-terminated.
 */

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* A borrowed, not necessarily NUL-terminated string. */
typedef struct hstr {
    const char *p;
    size_t len;
} hstr_t;

#define HSTR_LIT(s) ((hstr_t){(s), sizeof(s) - 1})

static inline hstr_t hstr_from_cstr(const char *s)
{
    return (hstr_t){s, s != NULL ? strlen(s) : 0};
}

static inline bool hstr_eq(hstr_t a, hstr_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static inline bool hstr_eq_cstr(hstr_t a, const char *s)
{
    return hstr_eq(a, hstr_from_cstr(s));
}

/* Memory a module keeps for reuse (a free list of records or blocks) is poisoned for
 * AddressSanitizer while unused, so a use after release is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define MEM_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define MEM_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define MEM_POISON(p, n) ((void)(p), (void)(n))
#define MEM_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

void *xmalloc(size_t size);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);

/* A NUL-terminated copy of the first len bytes of p. Caller owns the result (free()). */
char *xstrndup(const char *p, size_t len);

/* Zeroed memory in a mapping of its own, for a large table that is moved into a bigger
 * one over a while: the part already moved can be given back step by step
 * (mem_release_below), and unmapping what is left is then cheap (unmapping 64 MiB at
 * once took 8 ms). Never NULL.
 *
 * Small pages, not transparent huge ones (MADV_HUGEPAGE), although these tables are read at
 * random and huge pages spare the TLB: bench/dedup ran 1.98-2.23 M events/s with them
 * against 1.40-1.43 M. But a table that moves is a fresh mapping, and the first touch of a
 * huge page the machine has not backed yet took 3.5 ms here: every call after a move starts
 * then paid one or more of those, a train of them that grows with the table (64 for a
 * 128 MiB dedup table, which retention moves again and again). With 4 KiB pages the same
 * memory comes in 11 µs at a time. bench/RESULTS.md has the figures. */
void *xmap_zeroed(size_t bytes);
void mem_unmap(void *p, size_t bytes);

/* Moved memory goes back in steps of this many bytes (from the start of the mapping), not
 * page by page: each madvise is a system call and a TLB flush on every core running the
 * process, and a table moved on by every event gave back a page every 16 events (in W1,
 * 4% of the broker's CPU went to it). A step is a huge page's size, so a step never
 * splits one. */
#define MEM_RELEASE_STEP_BYTES ((size_t)2 * 1024 * 1024)

/* p[0..bytes) is read no more: gives back its whole steps (MEM_RELEASE_STEP_BYTES) not
 * given back yet, *released (0 at first) recording how far that went; they read as zeros
 * afterwards. Under AddressSanitizer all of it is poisoned, so that a read of what was
 * moved is caught though it often still holds what was there. */
void mem_release_below(void *p, size_t bytes, size_t *released);

/* A fresh mapping's pages come in this many bytes at a time (mem_populate_step). */
#define MEM_POPULATE_STEP_BYTES ((size_t)128 * 1024)

/* Faults in the next MEM_POPULATE_STEP_BYTES of p[0..bytes) not yet faulted in, *populated
 * (0 at first) recording how far that went; the contents do not change. A table read and
 * written at random slots otherwise faults its pages in one at a time as it is first
 * touched, 11 µs each here, where one madvise(MADV_POPULATE_WRITE) of many pages took
 * about 1 µs a page (bench/RESULTS.md). Called once per operation on a fresh table, a step
 * at a time, so that no one call holds its caller for long. On a kernel without
 * MADV_POPULATE_WRITE (before 5.14) the pages come in as they are touched. */
void mem_populate_step(void *p, size_t bytes, size_t *populated);

#endif
