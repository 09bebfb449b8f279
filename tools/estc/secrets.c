/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc: keeping PINs out of sight. Address options may name where the
 * address is instead of holding it ("@FILE", "env:VAR"), so that no PIN
 * needs the command line; a PIN that was given there anyway is wiped from
 * the process's argument copy; and while estc holds a PIN it cannot be
 * dumped (no core file, no ptrace or /proc/PID/mem for other processes).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cli.h"

/* Whether @s names an attribute holding a PIN or where one is. */
static bool has_attr(const char *s, const char *name)
{
    size_t n = strlen(name);
    for (; *s != '\0'; s++) {
        if (strncasecmp(s, name, n) == 0)
            return true;
    }
    return false;
}

bool cli_has_pin(const char *s)
{
    return s != NULL && has_attr(s, "pin-value=");
}

static bool names_pin(const char *s)
{
    return cli_has_pin(s) || has_attr(s, "pin-source=");
}

/* Hides the PIN of @arg, a string of the process's argument vector, in
 * place: /proc/PID/cmdline and ps read that memory. */
static void scrub_argv(char *arg)
{
    size_t len = strlen(arg);
    char shown[ESTC_ADDRESS_MAX + 64];
    estc_redact(arg, shown, sizeof(shown));
    size_t n = strlen(shown);
    if (n <= len && strcmp(shown, arg) != 0) {
        memcpy(arg, shown, n);
        memset(arg + n, '\0', len - n);
        return;
    }
    /* A PIN shorter than the mask (or an address longer than the redaction
     * buffer): every character of each PIN becomes '*'. */
    for (char *p = arg; *p != '\0'; p++) {
        if (strncasecmp(p, "pin-value=", 10) != 0)
            continue;
        for (p += 10; *p != '\0' && strchr(";?&", *p) == NULL; p++)
            *p = '*';
        if (*p == '\0')
            break;
    }
}

/* The one line of the regular file at @path, into *@out (malloc'd). */
static int read_address_file(const struct cli *cli, const char *opt, const char *path,
                             char **out)
{
    /* O_NONBLOCK: a FIFO or device must not stall estc before it is refused. */
    int fd = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return cli_failf(cli, CLI_EXIT_USAGE, "--%s @%s: %s", opt, path, strerror(errno));
    struct stat st;
    char buf[ESTC_ADDRESS_MAX + 3];
    ssize_t n = -1;
    int status = 0;
    if (fstat(fd, &st) != 0)
        status = cli_failf(cli, CLI_EXIT_USAGE, "--%s @%s: %s", opt, path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        status = cli_failf(cli, CLI_EXIT_USAGE, "--%s @%s: not a regular file", opt, path);
    else if (st.st_uid != geteuid() && st.st_uid != 0)
        status = cli_failf(cli, CLI_EXIT_USAGE, "--%s @%s: owned by another user", opt, path);
    else if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        status = cli_failf(cli, CLI_EXIT_USAGE, "--%s @%s: writable by group or others", opt,
                           path);
    if (status == 0) {
        size_t got = 0;
        while (got < sizeof(buf) && (n = read(fd, buf + got, sizeof(buf) - got)) > 0)
            got += (size_t)n;
        if (n < 0)
            status = cli_failf(cli, CLI_EXIT_USAGE, "--%s @%s: %s", opt, path, strerror(errno));
        n = (ssize_t)got;
    }
    close(fd);
    if (status != 0) {
        OPENSSL_cleanse(buf, sizeof(buf));
        return status;
    }
    size_t len = (size_t)n;
    if (len > 0 && buf[len - 1] == '\n')
        len--;
    if (len > 0 && buf[len - 1] == '\r')
        len--;
    if (len == 0 || len > ESTC_ADDRESS_MAX || memchr(buf, '\n', len) != NULL ||
        memchr(buf, '\0', len) != NULL)
        status = cli_failf(cli, CLI_EXIT_USAGE,
                           "--%s @%s: not one address on one line (at most %d bytes)", opt, path,
                           ESTC_ADDRESS_MAX);
    else if (cli_has_pin(buf) && (st.st_mode & (S_IRGRP | S_IROTH)) != 0)
        status = cli_failf(cli, CLI_EXIT_USAGE,
                           "--%s @%s: holds a PIN but is readable by group or others "
                           "(chmod 600)",
                           opt, path);
    if (status == 0) {
        *out = malloc(len + 1);
        if (*out == NULL)
            status = cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
        else {
            memcpy(*out, buf, len);
            (*out)[len] = '\0';
        }
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return status;
}

/* The value of the environment variable @name, into *@out (malloc'd); the
 * variable is then wiped (its bytes, which /proc/PID/environ shows) and
 * removed, so no program estc starts inherits it. */
static int read_address_env(const struct cli *cli, const char *opt, const char *name, char **out)
{
    bool ok = isalpha((unsigned char)name[0]) || name[0] == '_';
    for (const char *p = name; ok && *p != '\0'; p++)
        ok = isalnum((unsigned char)*p) || *p == '_';
    if (!ok)
        return cli_failf(cli, CLI_EXIT_USAGE, "--%s env:%s: not a variable name", opt, name);
    char *v = getenv(name);
    if (v == NULL || v[0] == '\0')
        return cli_failf(cli, CLI_EXIT_USAGE, "--%s env:%s: not set", opt, name);
    if (strlen(v) > ESTC_ADDRESS_MAX)
        return cli_failf(cli, CLI_EXIT_USAGE, "--%s env:%s: longer than %d bytes", opt, name,
                         ESTC_ADDRESS_MAX);
    *out = strdup(v);
    if (*out == NULL)
        return cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
    OPENSSL_cleanse(v, strlen(v));
    unsetenv(name);
    return 0;
}

int cli_address_arg(struct cli *cli, const char *opt, char *arg, const char **out)
{
    char *value = NULL;
    int status = 0;
    if (arg[0] == '@')
        status = read_address_file(cli, opt, arg + 1, &value);
    else if (strncmp(arg, "env:", 4) == 0)
        status = read_address_env(cli, opt, arg + 4, &value);
    else if (cli_has_pin(arg)) {
        /* Kept in a copy; the argument itself loses its PIN. */
        value = strdup(arg);
        if (value == NULL)
            return cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
        scrub_argv(arg);
        cli->pin_on_argv = true;
    } else {
        *out = arg;
        cli->holds_pin = cli->holds_pin || names_pin(arg);
        return 0;
    }
    if (status != 0)
        return status;
    const char **grown = realloc(cli->owned.v, (cli->owned.n + 1) * sizeof(*grown));
    if (grown == NULL) {
        OPENSSL_cleanse(value, strlen(value));
        free(value);
        return cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
    }
    cli->owned.v = grown;
    cli->owned.v[cli->owned.n++] = value;
    cli->holds_pin = cli->holds_pin || names_pin(value);
    *out = value;
    return 0;
}

void cli_pin_note(const struct cli *cli)
{
    if (cli->pin_on_argv && !cli->quiet)
        fprintf(stderr,
                "estc: %s: note: a PIN was given on the command line (pin-value); it is hidden "
                "now but was visible to other users at start: prefer pin-source=, @FILE or "
                "env:VAR\n",
                cli->cmd_name);
}

int cli_protect_secrets(struct cli *cli)
{
    /* The daemon says it at start; the other commands with their summary
     * (a failure stays one line). */
    if (cli->cmd == CMD_RUN || cli->cmd == CMD_RENEW)
        cli_pin_note(cli);
    /* `run` holds what its state file names for its whole life. */
    if (!cli->holds_pin && cli->cmd != CMD_RUN && cli->cmd != CMD_RENEW)
        return 0;
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        return cli_failf(cli, CLI_EXIT_FAILURE, "cannot make the process non-dumpable: %s",
                         strerror(errno));
    return 0;
}
