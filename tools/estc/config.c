/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc: the configuration file of `estc run` and `estc renew`
 * (/etc/estc/estc.conf, or --config FILE).
 *
 *   # a comment
 *   server = coaps://est.example.net/est
 *   trust = /etc/estc/ca.pem          (repeatable options: one line each)
 *   syslog = yes                      (options without a value: yes or no)
 *
 * Keys are the long option names. The file is checked like an @FILE
 * address: a regular file owned by root or the user and writable by no one
 * else; one that holds a PIN (pin-value=) must be readable by no one else
 * either (mode 0600). This file only reads and checks; main.c applies the
 * entries, so that a bad value names FILE:LINE.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cli.h"

#define CONFIG_MAX (256 * 1024)

void cli_config_free(struct cli_config *cf)
{
    if (cf->text != NULL) {
        OPENSSL_cleanse(cf->text, cf->size);
        free(cf->text);
    }
    free(cf->entries);
    *cf = (struct cli_config){0};
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

int cli_config_read(const struct cli *cli, const char *path, bool required, struct cli_config *cf)
{
    *cf = (struct cli_config){.path = path};
    int fd = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && !required)
        return CLI_EXIT_OK; /* the default file is optional */
    if (fd < 0)
        return cli_failf(cli, CLI_EXIT_USAGE, "--config %s: %s", path, strerror(errno));
    struct stat st;
    int status = CLI_EXIT_OK;
    if (fstat(fd, &st) != 0)
        status = cli_failf(cli, CLI_EXIT_USAGE, "--config %s: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        status = cli_failf(cli, CLI_EXIT_USAGE, "--config %s: not a regular file", path);
    else if (st.st_uid != geteuid() && st.st_uid != 0)
        status = cli_failf(cli, CLI_EXIT_USAGE, "--config %s: owned by another user", path);
    else if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        status = cli_failf(cli, CLI_EXIT_USAGE, "--config %s: writable by group or others", path);
    else if (st.st_size > CONFIG_MAX)
        status =
            cli_failf(cli, CLI_EXIT_USAGE, "--config %s: larger than %d bytes", path, CONFIG_MAX);
    size_t got = 0;
    if (status == CLI_EXIT_OK) {
        cf->size = (size_t)st.st_size + 1;
        cf->text = malloc(cf->size);
        if (cf->text == NULL)
            status = cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
    }
    while (status == CLI_EXIT_OK && got + 1 < cf->size) {
        ssize_t n = read(fd, cf->text + got, cf->size - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            status = cli_failf(cli, CLI_EXIT_USAGE, "--config %s: %s", path, strerror(errno));
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (status != CLI_EXIT_OK) {
        cli_config_free(cf);
        return status;
    }
    cf->text[got] = '\0';
    if (memchr(cf->text, '\0', got) != NULL) {
        cli_config_free(cf);
        return cli_failf(cli, CLI_EXIT_USAGE, "--config %s: not a text file", path);
    }
    if (cli_has_pin(cf->text) && (st.st_mode & (S_IRGRP | S_IROTH)) != 0) {
        cli_config_free(cf);
        return cli_failf(cli, CLI_EXIT_USAGE,
                         "--config %s: holds a PIN (pin-value) but is readable by group or "
                         "others (chmod 600, or use pin-source=)",
                         path);
    }
    unsigned line = 0;
    for (char *p = cf->text; p != NULL && *p != '\0';) {
        char *nl = strchr(p, '\n');
        if (nl != NULL)
            *nl = '\0';
        line++;
        char *s = trim(p);
        p = nl != NULL ? nl + 1 : NULL;
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            cli_config_free(cf);
            return cli_failf(cli, CLI_EXIT_USAGE, "%s:%u: not a 'key = value' line", path, line);
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        size_t vn = strlen(value);
        if (vn >= 2 && value[0] == '"' && value[vn - 1] == '"') {
            value[vn - 1] = '\0';
            value++;
        }
        struct cli_config_entry *grown = realloc(cf->entries, (cf->n + 1) * sizeof(*cf->entries));
        if (grown == NULL) {
            cli_config_free(cf);
            return cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
        }
        cf->entries = grown;
        cf->entries[cf->n++] = (struct cli_config_entry){line, key, value};
    }
    return CLI_EXIT_OK;
}
