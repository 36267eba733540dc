#include "mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

static void out_of_memory(size_t size)
{
    fprintf(stderr, "herold: out of memory allocating %zu bytes\n", size);
    abort();
}

void *xmalloc(size_t size)
{
    void *p = malloc(size != 0 ? size : 1);
    if (p == NULL) {
        out_of_memory(size);
    }
    return p;
}

void *xcalloc(size_t count, size_t size)
{
    void *p = calloc(count != 0 ? count : 1, size != 0 ? size : 1);
    if (p == NULL) {
        out_of_memory(count * size);
    }
    return p;
}

void *xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size != 0 ? size : 1);
    if (p == NULL) {
        out_of_memory(size);
    }
    return p;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *p, size_t len)
{
    char *s = xmalloc(len + 1);
    memcpy(s, p, len);
    s[len] = '\0';
    return s;
}

void *xmap_zeroed(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        out_of_memory(bytes);
    }
    return p;
}

void mem_unmap(void *p, size_t bytes)
{
    if (p != NULL) {
        MEM_UNPOISON(p, bytes); /* a later mapping may reuse the addresses */
        munmap(p, bytes);
    }
}

void mem_release_below(void *p, size_t bytes, size_t *released)
{
    size_t whole = bytes / MEM_RELEASE_STEP_BYTES * MEM_RELEASE_STEP_BYTES;
    /* Past a step given back, only the bytes not yet given back need poisoning. */
    MEM_POISON((char *)p + *released, bytes - *released);
    if (whole > *released) {
        madvise((char *)p + *released, whole - *released, MADV_DONTNEED);
        *released = whole;
    }
}

void mem_populate_step(void *p, size_t bytes, size_t *populated)
{
    if (*populated >= bytes) {
        return;
    }
    size_t step =
        bytes - *populated < MEM_POPULATE_STEP_BYTES ? bytes - *populated : MEM_POPULATE_STEP_BYTES;
    if (madvise((char *)p + *populated, step, MADV_POPULATE_WRITE) != 0) {
        *populated = bytes; /* not supported here: the pages come in as they are touched */
        return;
    }
    *populated += step;
}
