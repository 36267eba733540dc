#ifndef HEROLD_B64URL_H
#define HEROLD_B64URL_H

/*
 * Base64url without padding (RFC 7515), as JWS and JWK use it. The decoder is strict: no
 * padding, no characters outside the url alphabet, no length of 4n+1, and the unused low
 * bits of the last character must be zero. Every byte string then has exactly one
 * encoding, so a token cannot be altered without breaking its signature (a lax decoder
 * would accept four spellings of each signature). Any thread may call these.
 */

#include <stdbool.h>
#include <stddef.h>

/* Decodes len characters into out, which must hold len * 3 / 4 bytes. Returns false for
 * anything but the one canonical unpadded encoding of some byte string. */
bool b64url_decode(const char *in, size_t len, unsigned char *out, size_t *out_len);

/* Encodes len bytes without padding. Caller owns the result (free()). */
char *b64url_encode(const unsigned char *in, size_t len);

#endif
