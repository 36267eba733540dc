#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"

struct option_def {
    const char *name;  /* flag name without "--", also the config file key */
    const char *env;   /* environment variable */
    size_t offset;     /* of the char * member in config_t */
    const char *help;
};

static const struct option_def option_defs[] = {
    {"http", "HEROLD_HTTP", offsetof(config_t, http),
     "ADDR:PORT of the HTTP and WebSocket listener (default " CONFIG_DEFAULT_HTTP ")"},
    {"ingest", "HEROLD_INGEST", offsetof(config_t, ingest),
     "ZeroMQ endpoint of the ingest socket (default " CONFIG_DEFAULT_INGEST ")"},
    {"data", "HEROLD_DATA", offsetof(config_t, data_dir),
     "data directory, created if missing (default " CONFIG_DEFAULT_DATA ")"},
    {"jwt-secret-file", "HEROLD_JWT_SECRET_FILE", offsetof(config_t, jwt_secret_file),
     "HS256 token secret; created with a random secret if missing (default DATA/jwt.secret)"},
    {"log-level", "HEROLD_LOG_LEVEL", offsetof(config_t, log_level),
     "debug, info, warn or error (default info)"},
};

#define OPTION_COUNT (sizeof(option_defs) / sizeof(option_defs[0]))

static char **member(config_t *cfg, const struct option_def *def)
{
    return (char **)((char *)cfg + def->offset);
}

static void set_value(config_t *cfg, const struct option_def *def, const char *value)
{
    char **slot = member(cfg, def);
    free(*slot);
    *slot = xstrdup(value);
}

static const struct option_def *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        if (strlen(option_defs[i].name) == len && memcmp(option_defs[i].name, name, len) == 0) {
            return &option_defs[i];
        }
    }
    return NULL;
}

void config_usage(FILE *out)
{
    fprintf(out, "usage: herold [options]\n"
                 "       herold token USER [--groups g1,g2] [--ttl SECONDS] [--data DIR | "
                 "--jwt-secret-file FILE]\n\noptions:\n");
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        fprintf(out, "  --%-18s %s\n", option_defs[i].name, option_defs[i].help);
    }
    fprintf(out, "  --%-18s %s\n", "config FILE", "read `name = value` lines (names as above)");
    fprintf(out, "  --%-18s %s\n", "help", "print this text");
    fprintf(out, "\nEvery option may also be set in the environment as HEROLD_<NAME> "
                 "(e.g. HEROLD_HTTP).\nPrecedence: flags, environment, config file, "
                 "defaults.\n");
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) {
        s++;
    }
    size_t len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1])) {
        s[--len] = '\0';
    }
    return s;
}

static int load_file(config_t *cfg, const char *path, struct herr *err)
{
    char line[CONFIG_MAX_LINE_BYTES];
    int number = 0;
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        return herr_set(err, HEROLD_E_CONFIG, "config: cannot open %s: %s", path,
                        strerror(errno));
    }
    while (fgets(line, sizeof(line), file) != NULL) {
        number++;
        if (strchr(line, '\n') == NULL && !feof(file)) {
            fclose(file);
            return herr_set(err, HEROLD_E_CONFIG, "config: %s:%d: line longer than %d bytes",
                            path, number, CONFIG_MAX_LINE_BYTES - 2);
        }
        char *text = trim(line);
        if (text[0] == '\0' || text[0] == '#') {
            continue;
        }
        char *eq = strchr(text, '=');
        if (eq == NULL) {
            fclose(file);
            return herr_set(err, HEROLD_E_CONFIG, "config: %s:%d: expected `name = value`",
                            path, number);
        }
        *eq = '\0';
        char *name = trim(text);
        char *value = trim(eq + 1);
        const struct option_def *def = find_option(name, strlen(name));
        if (def == NULL) {
            fclose(file);
            return herr_set(err, HEROLD_E_CONFIG, "config: %s:%d: unknown option '%.64s'", path,
                            number, name);
        }
        set_value(cfg, def, value);
    }
    fclose(file);
    return 0;
}

int config_parse_http(const char *text, char **address, int *port, struct herr *err)
{
    const char *colon = strrchr(text, ':');
    char *end;
    if (colon == NULL || colon == text) {
        return herr_set(err, HEROLD_E_CONFIG, "http: '%.64s' is not ADDR:PORT", text);
    }
    errno = 0;
    long value = strtol(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || end == colon + 1 || value < 1 || value > 65535) {
        return herr_set(err, HEROLD_E_CONFIG, "http: '%.64s' has no port in 1..65535", text);
    }
    *address = xstrndup(text, (size_t)(colon - text));
    *port = (int)value;
    return 0;
}

static int finish(config_t *cfg, struct herr *err)
{
    if (cfg->http == NULL) {
        cfg->http = xstrdup(CONFIG_DEFAULT_HTTP);
    }
    if (cfg->ingest == NULL) {
        cfg->ingest = xstrdup(CONFIG_DEFAULT_INGEST);
    }
    if (cfg->data_dir == NULL) {
        cfg->data_dir = xstrdup(CONFIG_DEFAULT_DATA);
    }
    if (cfg->log_level == NULL) {
        cfg->log_level = xstrdup("info");
    }
    if (log_level_parse(cfg->log_level) < 0) {
        return herr_set(err, HEROLD_E_CONFIG, "log-level: '%.32s' is not debug, info, warn or error",
                        cfg->log_level);
    }
    return config_parse_http(cfg->http, &cfg->http_address, &cfg->http_port, err);
}

int config_load(config_t *cfg, int argc, char **argv, struct herr *err)
{
    const char *config_file = NULL;
    memset(cfg, 0, sizeof(*cfg));

    /* First pass: --help and --config, which decide what the other sources are. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cfg->is_help = 1;
            return 0;
        }
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                return herr_set(err, HEROLD_E_CONFIG, "--config needs a value");
            }
            config_file = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config_file = argv[i] + 9;
        }
    }
    int rc = 0;
    if (config_file != NULL) {
        rc = load_file(cfg, config_file, err);
    }
    for (size_t i = 0; rc == 0 && i < OPTION_COUNT; i++) {
        const char *value = getenv(option_defs[i].env);
        if (value != NULL && value[0] != '\0') {
            set_value(cfg, &option_defs[i], value);
        }
    }
    for (int i = 1; rc == 0 && i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            rc = herr_set(err, HEROLD_E_CONFIG, "unexpected argument '%.64s' (see --help)", arg);
            break;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        const char *value = eq != NULL ? eq + 1 : NULL;
        if (name_len == 6 && strncmp(name, "config", 6) == 0) {
            i += value == NULL;
            continue;
        }
        const struct option_def *def = find_option(name, name_len);
        if (def == NULL) {
            rc = herr_set(err, HEROLD_E_CONFIG, "unknown option '%.64s' (see --help)", arg);
            break;
        }
        if (value == NULL) {
            if (i + 1 >= argc) {
                rc = herr_set(err, HEROLD_E_CONFIG, "--%s needs a value", def->name);
                break;
            }
            value = argv[++i];
        }
        set_value(cfg, def, value);
    }
    if (rc == 0) {
        rc = finish(cfg, err);
    }
    if (rc != 0) {
        config_clear(cfg);
    }
    return rc;
}

void config_clear(config_t *cfg)
{
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        char **slot = member(cfg, &option_defs[i]);
        free(*slot);
        *slot = NULL;
    }
    free(cfg->http_address);
    cfg->http_address = NULL;
}

char *config_jwt_secret_path(const config_t *cfg)
{
    if (cfg->jwt_secret_file != NULL) {
        return xstrdup(cfg->jwt_secret_file);
    }
    size_t len = strlen(cfg->data_dir) + strlen("/jwt.secret") + 1;
    char *path = xmalloc(len);
    snprintf(path, len, "%s/jwt.secret", cfg->data_dir);
    return path;
}
