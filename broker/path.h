#ifndef HEROLD_PATH_H
#define HEROLD_PATH_H

/*
 * Resource paths and subscription patterns.
 *
 * A resource path names one object: `/`-separated, a leading `/`, at least one segment,
 * no empty, `.` or `..` segment, valid UTF-8 without control characters (bytes < 0x20 and
 * 0x7f), at most PATH_MAX_BYTES bytes and PATH_MAX_SEGMENTS segments. The segment `*` is
 * reserved for patterns and refused in a resource path.
 *
 *   valid:    /dms/cabinets/bau/documents/4711     /calendar/users/anna/events/x%20y
 *   invalid:  dms/a (no leading /)   /dms//a (empty)   /dms/a/ (trailing /)   /   /a/../b
 *
 * A pattern is a path in which a segment may be exactly `*`, matching any one segment.
 * A pattern matches a resource when every pattern segment matches the resource segment at
 * the same position and the resource has at least as many segments: a subscription
 * covers its path and everything beneath it.
 *
 * Parsing tokenises into a fixed array on the caller's stack: no allocation. Segments are
 * views into the parsed text, which must outlive the path_t. Paths are compared byte for
 * byte; there is no case folding or percent-decoding (publishers send canonical paths).
 * Any thread may call these functions.
 */

#include <stdbool.h>
#include <stddef.h>

#include "errors.h"
#include "mem.h"

#define PATH_MAX_SEGMENTS 32
#define PATH_MAX_BYTES 1024

typedef struct path {
    size_t segment_count;
    hstr_t segments[PATH_MAX_SEGMENTS];
} path_t;

/* Parses a resource path (no `*` segments). Returns 0, or HEROLD_E_BAD_PATH with err
 * naming the rule broken; *out is unspecified on failure. */
int path_parse(const char *text, size_t len, path_t *out, struct herr *err);

/* Parses a subscription pattern (`*` segments allowed). Same errors as path_parse. */
int path_parse_pattern(const char *text, size_t len, path_t *out, struct herr *err);

/* True when pattern matches resource (equal, or resource lies beneath it). */
bool path_matches(const path_t *pattern, const path_t *resource);

/* True when the segment is the one-segment wildcard. */
static inline bool path_segment_is_wildcard(hstr_t segment)
{
    return segment.len == 1 && segment.p[0] == '*';
}

/* The last segment of a parsed path (the object's own id); empty view for no segments. */
hstr_t path_last_segment(const path_t *path);

/* True when len bytes at p are valid UTF-8 (no overlongs, no surrogates, ≤ U+10FFFF). */
bool path_utf8_is_valid(const char *p, size_t len);

#endif
