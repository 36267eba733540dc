#ifndef HEROLD_CLI_CURVE_H
#define HEROLD_CLI_CURVE_H

/*
 * CurveZMQ for the publishing clients (herold-pub and the sources): the broker's public
 * key (herold ingest-key prints it) and this publisher's keypair file (herold keygen).
 */

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "zap.h"

/* Makes socket a CURVE client before it connects. Both or neither of server_key and
 * key_file; neither leaves the socket plaintext. Returns 0, or -1 after telling stderr why
 * (program names the tool). */
static inline int cli_curve_setup(void *socket, const char *server_key, const char *key_file,
                                  const char *program)
{
    if (server_key == NULL && key_file == NULL) {
        return 0;
    }
    if (server_key == NULL || key_file == NULL) {
        fprintf(stderr, "%s: --server-key and --key-file go together\n", program);
        return -1;
    }
    if (strlen(server_key) != ZAP_KEY_TEXT_BYTES) {
        fprintf(stderr, "%s: --server-key is a Z85 key of %d characters\n", program,
                ZAP_KEY_TEXT_BYTES);
        return -1;
    }
    struct herr err;
    zap_keypair_t keypair;
    if (zap_keypair_read(key_file, &keypair, &err) != 0) {
        fprintf(stderr, "%s: %s\n", program, err.message);
        return -1;
    }
    int rc = zmq_setsockopt(socket, ZMQ_CURVE_SERVERKEY, server_key, ZAP_KEY_TEXT_BYTES) == 0 &&
                     zmq_setsockopt(socket, ZMQ_CURVE_PUBLICKEY, keypair.public_key,
                                    ZAP_KEY_TEXT_BYTES) == 0 &&
                     zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, keypair.secret_key,
                                    ZAP_KEY_TEXT_BYTES) == 0
                 ? 0
                 : -1;
    memset(&keypair, 0, sizeof(keypair));
    if (rc != 0) {
        fprintf(stderr, "%s: CURVE cannot be set up: %s\n", program, zmq_strerror(errno));
    }
    return rc;
}

#endif
