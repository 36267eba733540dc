/* Publisher keys (zap.h): the keys file's rules line by line, keypair files, and which
 * ingest endpoints count as reachable only from this machine. */

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "unit.h"
#include "zap.h"

static unsigned char keys[ZAP_MAX_KEYS * 32];

static int parse(const char *text, size_t *count, struct herr *err)
{
    return zap_parse_keys(text, "keys", keys, count, err);
}

START_TEST(test_zap_keys_file_rules)
{
    char a[41];
    char b[41];
    char secret[41];
    ck_assert_int_eq(zmq_curve_keypair(a, secret), 0);
    ck_assert_int_eq(zmq_curve_keypair(b, secret), 0);
    char text[512];
    size_t count = 99;
    struct herr err;

    /* Comments, blank lines, names, CRLF, tabs, no final newline. */
    snprintf(text, sizeof(text), "# publishers\n\n  %s  dms\r\n\t%s\tcalendar files", a, b);
    ck_assert_int_eq(parse(text, &count, &err), 0);
    ck_assert_uint_eq(count, 2);
    unsigned char decoded[2][32];
    zmq_z85_decode(decoded[0], a);
    zmq_z85_decode(decoded[1], b);
    /* Sorted, both present. */
    bool has_a = memcmp(keys, decoded[0], 32) == 0 || memcmp(keys + 32, decoded[0], 32) == 0;
    bool has_b = memcmp(keys, decoded[1], 32) == 0 || memcmp(keys + 32, decoded[1], 32) == 0;
    ck_assert(has_a && has_b);
    ck_assert_int_le(memcmp(keys, keys + 32, 32), 0);

    ck_assert_int_eq(parse("", &count, &err), 0);
    ck_assert_uint_eq(count, 0);

    /* One character short, one long, not Z85, a name too long: each names its line. */
    snprintf(text, sizeof(text), "%s\n%.39s\n", a, b);
    ck_assert_int_eq(parse(text, &count, &err), HEROLD_E_CONFIG);
    ck_assert_str_eq(err.message, "ingest keys: keys:2: a key is 40 characters of Z85");
    snprintf(text, sizeof(text), "%sX\n", a);
    ck_assert_int_eq(parse(text, &count, &err), HEROLD_E_CONFIG);
    char bad[41];
    memcpy(bad, a, 41);
    bad[5] = '"'; /* not in the Z85 alphabet */
    snprintf(text, sizeof(text), "# x\n%s\n", bad);
    ck_assert_int_eq(parse(text, &count, &err), HEROLD_E_CONFIG);
    ck_assert_str_eq(err.message, "ingest keys: keys:2: not a Z85 key");
    char name[ZAP_MAX_NAME_BYTES + 2];
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    snprintf(text, sizeof(text), "%s %s\n", a, name);
    ck_assert_int_eq(parse(text, &count, &err), HEROLD_E_CONFIG);
    name[ZAP_MAX_NAME_BYTES] = '\0';
    snprintf(text, sizeof(text), "%s %s\n", a, name);
    ck_assert_int_eq(parse(text, &count, &err), 0);
}
END_TEST

START_TEST(test_zap_keypair_files)
{
    char path[128];
    snprintf(path, sizeof(path), "/tmp/herold-test-zap-%d.key", (int)getpid());
    unlink(path);
    zap_keypair_t made;
    zap_keypair_t read_back;
    struct herr err;
    ck_assert_int_eq(zap_keypair_ensure(path, &made, &err), 0);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    ck_assert_int_eq(zap_keypair_read(path, &read_back, &err), 0);
    ck_assert_str_eq(read_back.public_key, made.public_key);
    ck_assert_str_eq(read_back.secret_key, made.secret_key);
    /* The public key belongs to the secret one. */
    char derived[41];
    ck_assert_int_eq(zmq_curve_public(derived, made.secret_key), 0);
    ck_assert_str_eq(derived, made.public_key);
    /* ensure keeps an existing pair. */
    ck_assert_int_eq(zap_keypair_ensure(path, &read_back, &err), 0);
    ck_assert_str_eq(read_back.secret_key, made.secret_key);

    FILE *f = fopen(path, "w");
    fputs("public tooshort\nsecret tooshort\n", f);
    fclose(f);
    ck_assert_int_eq(zap_keypair_read(path, &read_back, &err), HEROLD_E_CONFIG);
    unlink(path);
    ck_assert_int_eq(zap_keypair_read(path, &read_back, &err), HEROLD_E_SYSTEM);
}
END_TEST

START_TEST(test_zap_local_endpoints)
{
    ck_assert(zap_endpoint_is_local("tcp://127.0.0.1:5560"));
    ck_assert(zap_endpoint_is_local("tcp://127.1.2.3:5560"));
    ck_assert(zap_endpoint_is_local("tcp://localhost:5560"));
    ck_assert(zap_endpoint_is_local("tcp://[::1]:5560"));
    ck_assert(zap_endpoint_is_local("ipc:///run/herold/ingest"));
    ck_assert(zap_endpoint_is_local("inproc://ingest"));
    ck_assert(!zap_endpoint_is_local("tcp://0.0.0.0:5560"));
    ck_assert(!zap_endpoint_is_local("tcp://*:5560"));
    ck_assert(!zap_endpoint_is_local("tcp://10.0.0.5:5560"));
    ck_assert(!zap_endpoint_is_local("tcp://[::]:5560"));
    ck_assert(!zap_endpoint_is_local("tcp://eth0:5560"));
    ck_assert(!zap_endpoint_is_local("tcp://localhost.example.org:5560"));
    ck_assert(!zap_endpoint_is_local("pgm://eth0;239.192.1.1:5555"));
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("zap");
    TCase *tc = tcase_create("zap");
    tcase_add_test(tc, test_zap_keys_file_rules);
    tcase_add_test(tc, test_zap_keypair_files);
    tcase_add_test(tc, test_zap_local_endpoints);
    suite_add_tcase(suite, tc);
    return unit_run(suite);
}
