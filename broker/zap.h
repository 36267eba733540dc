#ifndef HEROLD_ZAP_H
#define HEROLD_ZAP_H

/*
 * Publisher authentication on the ingest socket: CurveZMQ keys and a ZAP handler (RFC 27).
 *
 * With --ingest-keys, the ingest socket is a CURVE server under the broker's own keypair
 * (a key file, zap_keypair_ensure) and libzmq asks this module's handler, over
 * inproc://zeromq.zap.01, about every publisher that completes the handshake. Only public
 * keys listed in the keys file pass; any other is refused (libzmq then drops the
 * connection) and logged, rate-limited, since a stranger may try as often as it likes.
 * The keys file is read again by zap_reload (SIGHUP); connections already authenticated
 * stay, new ones meet the new list.
 *
 * Keys files: one publisher per line, its public key in Z85 (40 characters) and an
 * optional name after white space; `#` starts a comment line. At most ZAP_MAX_KEYS keys.
 *
 *   # herold publisher keys
 *   Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID  dms
 *
 * Keypair files (the broker's, and publishers' for herold-pub): two lines,
 * `public <Z85>` and `secret <Z85>`, mode 0600.
 *
 * The handler runs on a thread of its own; zap_reload and zap_free belong to the thread
 * that made it.
 */

#include <stdbool.h>

#include "errors.h"

#define ZAP_KEY_TEXT_BYTES 40 /* Z85 of a 32-byte key */
#define ZAP_MAX_KEYS 10000
#define ZAP_MAX_NAME_BYTES 64

typedef struct zap zap_t;

typedef struct zap_keypair {
    char public_key[ZAP_KEY_TEXT_BYTES + 1];
    char secret_key[ZAP_KEY_TEXT_BYTES + 1];
} zap_keypair_t;

/* Loads the keys file and starts the handler in zmq_context (borrowed; the handler must be
 * bound before the ingest socket). Returns NULL with err set (HEROLD_E_CONFIG naming the
 * line, HEROLD_E_SYSTEM). */
zap_t *zap_new(void *zmq_context, const char *keys_file, struct herr *err);

/* Reads the keys file again; on failure keeps the keys it had. Returns 0 or the error. */
int zap_reload(zap_t *zap, struct herr *err);

/* The number of keys in use. */
size_t zap_key_count(zap_t *zap);

/* Stops the handler and frees it. NULL is a no-op. */
void zap_free(zap_t *zap);

/* Parses a keys file's text into *count keys (Z85 texts, decoded into 32-byte keys in
 * keys, which must hold ZAP_MAX_KEYS * 32 bytes). For tests and zap_new. */
int zap_parse_keys(const char *text, const char *path, unsigned char *keys, size_t *count,
                   struct herr *err);

/* Reads the keypair in path, creating it (mode 0600) when the file does not exist. */
int zap_keypair_ensure(const char *path, zap_keypair_t *out, struct herr *err);

/* Reads a keypair file; refuses a missing or malformed one. */
int zap_keypair_read(const char *path, zap_keypair_t *out, struct herr *err);

/* Is endpoint one only this machine can reach (tcp to a loopback address, ipc, inproc)? */
bool zap_endpoint_is_local(const char *endpoint);

#endif
