#ifndef HEROLD_READFILE_H
#define HEROLD_READFILE_H

/*
 * Reading a small file whole (keys, secrets), with a bound: a wrong path pointing at a
 * large file is an error, not a large allocation. Any thread may call it.
 */

#include <stddef.h>

#include "errors.h"

/* Reads path into a new NUL-terminated buffer of *len bytes (caller frees; clear it first
 * when it holds a secret). Files larger than max bytes are refused. `what` names the file
 * in messages. Returns NULL with err set (HEROLD_E_SYSTEM, HEROLD_E_CONFIG). */
char *readfile_bounded(const char *path, size_t max, const char *what, size_t *len,
                       struct herr *err);

#endif
