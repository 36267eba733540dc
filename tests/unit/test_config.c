/* Configuration: defaults, the three sources and their precedence, and every refusal. */

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "unit.h"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void clear_environment(void)
{
    unsetenv("HEROLD_HTTP");
    unsetenv("HEROLD_INGEST");
    unsetenv("HEROLD_DATA");
    unsetenv("HEROLD_JWT_SECRET_FILE");
    unsetenv("HEROLD_LOG_LEVEL");
    unsetenv("HEROLD_WEBHOOK_ALLOW_PRIVATE");
    unsetenv("HEROLD_STORE");
    unsetenv("HEROLD_RETENTION_SECONDS");
    unsetenv("HEROLD_RETENTION_BYTES");
}

static char *write_temp_file(const char *text)
{
    char *path = strdup("/tmp/herold-test-config-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

START_TEST(test_config_defaults)
{
    config_t cfg;
    struct herr err;
    char *argv[] = {"herold"};
    clear_environment();
    ck_assert_int_eq(config_load(&cfg, ARGC(argv), argv, &err), 0);
    ck_assert_str_eq(cfg.http, CONFIG_DEFAULT_HTTP);
    ck_assert_str_eq(cfg.http_address, "127.0.0.1");
    ck_assert_int_eq(cfg.http_port, 8080);
    ck_assert_str_eq(cfg.ingest, CONFIG_DEFAULT_INGEST);
    ck_assert_str_eq(cfg.data_dir, CONFIG_DEFAULT_DATA);
    char *secret = config_jwt_secret_path(&cfg);
    ck_assert_str_eq(secret, CONFIG_DEFAULT_DATA "/jwt.secret");
    free(secret);
    config_clear(&cfg);
}
END_TEST

START_TEST(test_config_flags_beat_environment_beat_file)
{
    config_t cfg;
    struct herr err;
    clear_environment();
    char *path =
        write_temp_file("# a comment\n\nhttp = 127.0.0.1:7001\ningest=tcp://127.0.0.1:7002\n"
                        "data = /tmp/from-file\nlog-level = warn\n");
    setenv("HEROLD_INGEST", "tcp://127.0.0.1:7102", 1);
    setenv("HEROLD_DATA", "/tmp/from-env", 1);
    char *argv[] = {"herold", "--config", path, "--data=/tmp/from-flag"};
    ck_assert_int_eq(config_load(&cfg, ARGC(argv), argv, &err), 0);
    ck_assert_str_eq(cfg.http, "127.0.0.1:7001"); /* file only */
    ck_assert_int_eq(cfg.http_port, 7001);
    ck_assert_str_eq(cfg.ingest, "tcp://127.0.0.1:7102"); /* env beats file */
    ck_assert_str_eq(cfg.data_dir, "/tmp/from-flag");     /* flag beats env */
    ck_assert_str_eq(cfg.log_level, "warn");
    config_clear(&cfg);
    clear_environment();
    unlink(path);
    free(path);
}
END_TEST

START_TEST(test_config_help)
{
    config_t cfg;
    struct herr err;
    char *argv[] = {"herold", "--data", "x", "--help"};
    ck_assert_int_eq(config_load(&cfg, ARGC(argv), argv, &err), 0);
    ck_assert(cfg.is_help);
    config_clear(&cfg);
}
END_TEST

static void assert_refused(int argc, char **argv, const char *fragment)
{
    config_t cfg;
    struct herr err;
    ck_assert_int_eq(config_load(&cfg, argc, argv, &err), HEROLD_E_CONFIG);
    ck_assert_msg(strstr(err.message, fragment) != NULL, "'%s' lacks '%s'", err.message, fragment);
    ck_assert_ptr_null(cfg.http);
    ck_assert_ptr_null(cfg.data_dir);
}

START_TEST(test_config_refuses_bad_flags)
{
    clear_environment();
    char *unknown[] = {"herold", "--no-such-flag", "1"};
    assert_refused(ARGC(unknown), unknown, "unknown option");
    char *bare[] = {"herold", "stray"};
    assert_refused(ARGC(bare), bare, "unexpected argument");
    char *missing[] = {"herold", "--data"};
    assert_refused(ARGC(missing), missing, "needs a value");
    char *level[] = {"herold", "--log-level", "loud"};
    assert_refused(ARGC(level), level, "log-level");
    char *no_config[] = {"herold", "--config", "/nonexistent/herold.conf"};
    assert_refused(ARGC(no_config), no_config, "cannot open");
}
END_TEST

START_TEST(test_config_http_port_bounds)
{
    char *address = NULL;
    int port = 0;
    struct herr err;
    ck_assert_int_eq(config_parse_http("127.0.0.1:1", &address, &port, &err), 0);
    ck_assert_int_eq(port, 1);
    free(address);
    ck_assert_int_eq(config_parse_http("127.0.0.1:65535", &address, &port, &err), 0);
    ck_assert_int_eq(port, 65535);
    free(address);
    ck_assert_int_eq(config_parse_http("127.0.0.1:0", &address, &port, &err), HEROLD_E_CONFIG);
    ck_assert_int_eq(config_parse_http("127.0.0.1:65536", &address, &port, &err), HEROLD_E_CONFIG);
    ck_assert_int_eq(config_parse_http("127.0.0.1", &address, &port, &err), HEROLD_E_CONFIG);
    ck_assert_int_eq(config_parse_http(":80", &address, &port, &err), HEROLD_E_CONFIG);
    ck_assert_int_eq(config_parse_http("127.0.0.1:80x", &address, &port, &err), HEROLD_E_CONFIG);
    ck_assert_int_eq(config_parse_http("127.0.0.1:", &address, &port, &err), HEROLD_E_CONFIG);
}
END_TEST

START_TEST(test_config_file_errors_name_the_line)
{
    clear_environment();
    char *path = write_temp_file("http = 127.0.0.1:7001\nbogus = 1\n");
    char *argv[] = {"herold", "--config", path};
    assert_refused(ARGC(argv), argv, ":2: unknown option 'bogus'");
    unlink(path);
    free(path);

    path = write_temp_file("no equals sign here\n");
    char *argv2[] = {"herold", "--config", path};
    assert_refused(ARGC(argv2), argv2, ":1: expected `name = value`");
    unlink(path);
    free(path);

    char *long_line = malloc(CONFIG_MAX_LINE_BYTES + 16);
    memset(long_line, 'a', CONFIG_MAX_LINE_BYTES + 8);
    strcpy(long_line + CONFIG_MAX_LINE_BYTES + 8, "\n");
    path = write_temp_file(long_line);
    char *argv3[] = {"herold", "--config", path};
    assert_refused(ARGC(argv3), argv3, "longer than");
    unlink(path);
    free(path);
    free(long_line);
}
END_TEST

START_TEST(test_config_store_and_retention)
{
    config_t cfg;
    struct herr err;
    clear_environment();
    char *pg[] = {"herold",
                  "--store",
                  "postgresql://herold@/db?host=/tmp",
                  "--retention-seconds",
                  "60",
                  "--retention-bytes",
                  "1048576"};
    ck_assert_int_eq(config_load(&cfg, ARGC(pg), pg, &err), 0);
    ck_assert_str_eq(cfg.store, "postgresql://herold@/db?host=/tmp");
    ck_assert_int_eq(cfg.retention_seconds, 60);
    ck_assert_uint_eq(cfg.retention_bytes, 1048576);
    config_clear(&cfg);

    char *postgres[] = {"herold", "--store=postgres://x/y"};
    ck_assert_int_eq(config_load(&cfg, ARGC(postgres), postgres, &err), 0);
    config_clear(&cfg);

    char *other[] = {"herold", "--store", "mysql://x/y"};
    ck_assert_int_eq(config_load(&cfg, ARGC(other), other, &err), HEROLD_E_CONFIG);
    ck_assert_ptr_nonnull(strstr(err.message, "store"));

    char *too_small[] = {"herold", "--retention-bytes", "1048575"};
    ck_assert_int_eq(config_load(&cfg, ARGC(too_small), too_small, &err), HEROLD_E_CONFIG);
    ck_assert_ptr_nonnull(strstr(err.message, "retention-bytes"));

    char *zero_age[] = {"herold", "--retention-seconds", "0"};
    ck_assert_int_eq(config_load(&cfg, ARGC(zero_age), zero_age, &err), HEROLD_E_CONFIG);

    char *gone[] = {"herold", "--webhook-retry-horizon", "10"};
    ck_assert_int_eq(config_load(&cfg, ARGC(gone), gone, &err), HEROLD_E_CONFIG);
}
END_TEST

START_TEST(test_config_subscription_and_webhook_options)
{
    config_t cfg;
    struct herr err;
    clear_environment();
    char *defaults[] = {"herold"};
    ck_assert_int_eq(config_load(&cfg, ARGC(defaults), defaults, &err), 0);
    ck_assert(!cfg.webhook_allow_private);
    ck_assert_int_eq(cfg.webhook_batch_items, 100);
    ck_assert_int_eq(cfg.subscription_min_seconds, 2700);
    ck_assert_int_eq(cfg.subscription_max_minutes, 42300);
    ck_assert_int_eq(cfg.retention_seconds, 7 * 86400);
    ck_assert_uint_eq(cfg.retention_bytes, 1024ULL * 1024 * 1024);
    ck_assert_ptr_null(cfg.store);
    config_clear(&cfg);

    /* A flag without a value, followed by another option. */
    char *flags[] = {"herold",
                     "--webhook-allow-private",
                     "--webhook-batch-items",
                     "1000",
                     "--subscription-min-seconds",
                     "2",
                     "--reauthorization-lead=0"};
    ck_assert_int_eq(config_load(&cfg, ARGC(flags), flags, &err), 0);
    ck_assert(cfg.webhook_allow_private);
    ck_assert_int_eq(cfg.webhook_batch_items, 1000);
    ck_assert_int_eq(cfg.subscription_min_seconds, 2);
    ck_assert_int_eq(cfg.reauthorization_lead_s, 0);
    config_clear(&cfg);

    setenv("HEROLD_WEBHOOK_ALLOW_PRIVATE", "false", 1);
    ck_assert_int_eq(config_load(&cfg, ARGC(defaults), defaults, &err), 0);
    ck_assert(!cfg.webhook_allow_private);
    config_clear(&cfg);
    setenv("HEROLD_WEBHOOK_ALLOW_PRIVATE", "maybe", 1);
    assert_refused(ARGC(defaults), defaults, "not true or false");
    unsetenv("HEROLD_WEBHOOK_ALLOW_PRIVATE");
    unsetenv("HEROLD_STORE");
    unsetenv("HEROLD_RETENTION_SECONDS");
    unsetenv("HEROLD_RETENTION_BYTES");

    char *too_many[] = {"herold", "--webhook-batch-items", "1001"};
    assert_refused(ARGC(too_many), too_many, "webhook-batch-items");
    char *zero[] = {"herold", "--webhook-batch-items", "0"};
    assert_refused(ARGC(zero), zero, "webhook-batch-items");
    char *word[] = {"herold", "--subscription-max-minutes", "lots"};
    assert_refused(ARGC(word), word, "subscription-max-minutes");
    char *inverted[] = {"herold", "--subscription-min-seconds", "7200",
                        "--subscription-max-minutes", "60"};
    assert_refused(ARGC(inverted), inverted, "larger than");
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, test_config_defaults);
    tcase_add_test(tc, test_config_flags_beat_environment_beat_file);
    tcase_add_test(tc, test_config_help);
    tcase_add_test(tc, test_config_refuses_bad_flags);
    tcase_add_test(tc, test_config_http_port_bounds);
    tcase_add_test(tc, test_config_file_errors_name_the_line);
    tcase_add_test(tc, test_config_subscription_and_webhook_options);
    tcase_add_test(tc, test_config_store_and_retention);
    suite_add_tcase(suite, tc);
    return unit_run(suite);
}
