/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc: the command line EST-coaps client. Shared declarations of its files.
 */
#ifndef ESTC_TOOL_CLI_H
#define ESTC_TOOL_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <openssl/x509.h>

#include <estc/client.h>
#include <estc/engine.h>

/* Exit statuses (documented in docs/cli.md and `estc --help`). */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILURE = 1,   /* the operation failed (engine, file, other) */
    CLI_EXIT_USAGE = 2,     /* bad command line */
    CLI_EXIT_NETWORK = 3,   /* no answer: transport failure or time-out */
    CLI_EXIT_SERVER = 4,    /* the server refused, or a retry/size bound was hit */
    CLI_EXIT_VALIDATION = 5 /* what the server sent (or its identity) failed validation */
};

enum cli_cmd {
    CMD_DISCOVER = 0,
    CMD_CACERTS,
    CMD_ENROLL,
    CMD_REENROLL,
    CMD_SERVERKEYGEN,
    CMD_CSRATTRS,
    CMD_CSR,
    CMD_STATUS,
    CMD_RUN,
    CMD_RENEW,
    CMD_COUNT
};

/* A repeatable option's values. */
struct cli_list {
    const char **v;
    size_t n;
};

/* One "key = value" line of the configuration file. */
struct cli_config_entry {
    unsigned line;
    const char *key;
    char *value;
};

/* The configuration file as read (config.c); the values point into @text. */
struct cli_config {
    const char *path;
    char *text;
    size_t size;
    struct cli_config_entry *entries;
    size_t n;
};

struct cli {
    enum cli_cmd cmd;
    const char *cmd_name;

    const char *server;
    struct cli_list trust;
    struct cli_list implicit_trust;
    const char *server_name;
    const char *cert;
    const char *key;
    const char *new_key;
    const char *new_cert;
    const char *ca_out;
    const char *subject;
    struct cli_list san;
    struct cli_list drivers;
    const char *out;
    bool have_key_type;
    estc_key_type key_type;
    bool have_accept;
    int accept;
    unsigned block_size;
    unsigned timeout_ms;
    bool have_retries;
    unsigned retries;
    bool have_max_wait;
    unsigned max_wait_s;
    bool rekey;
    bool with_cacerts;
    bool with_csrattrs;
    const char *csr; /* enroll/reenroll --csr FILE: a CSR made elsewhere */
    int verbose;
    bool quiet;

    /* run and status --state */
    const char *state;
    const char *psa_dir;
    const char *ca_bundle;
    bool have_cacerts_policy;
    int cacerts_policy; /* estc_cacerts_policy */
    bool have_nominal;
    double nominal_usage;
    bool have_max_margin;
    long long max_margin_s;
    bool have_retry_spacing;
    long long retry_spacing_s;
    bool have_jitter; /* else 10 %, at most 86400 s */
    double jitter_share;
    long long jitter_max_s;
    const char *exec_cmd;    /* --exec: after every new certificate */
    unsigned exec_timeout_s; /* 0: the default, 60 */
    unsigned max_runtime_s;  /* 0: none */
    bool once;
    bool use_syslog;
    bool json; /* status --json */
    const char *config_path; /* --config (NULL: /etc/estc/estc.conf if it exists) */
    struct cli_config config;
    bool take_over;  /* --take-over: a state of other addresses is set aside */
    bool renew_now;  /* estc renew without a daemon: renew at once */
    bool reparsing;  /* re-read on SIGHUP: address options are kept as given */
    /* The subcommand's arguments, for the re-read on SIGHUP. */
    int argc;
    char **argv;
    /* Strings made absolute before entering --psa-dir, and address values
     * read from files and the environment or copied from the command line. */
    struct cli_list owned;
    bool holds_pin;   /* an address names a PIN (pin-value or pin-source) */
    bool pin_on_argv; /* a pin-value came on the command line */
    /* The current folder before entering --psa-dir (NULL without). */
    char *start_dir;

    estc_ctx *ctx;
};

/* main.c: parses the arguments of @cli->cmd (@cli->argc, @cli->argv) and
 * the configuration file into @cli; prints the error and returns an exit
 * status. Used again on SIGHUP (with @cli->reparsing set). */
int cli_parse(struct cli *cli, bool *help);
/* Frees what cli_parse() allocated. */
void cli_free(struct cli *cli);

/* config.c: reads and checks the configuration file @path (a missing file
 * is no error unless @required). Returns 0 or an exit status. */
int cli_config_read(const struct cli *cli, const char *path, bool required,
                    struct cli_config *cf);
void cli_config_free(struct cli_config *cf);

/* commands.c: run the parsed command; returns the exit status. */
int cli_run(struct cli *cli);
/* Applies the server, trust, credential and request options. */
int cli_configure(struct cli *cli, estc_client *client);
/* Applies --new-key/--new-cert/--ca-out (enroll, serverkeygen, run). */
int cli_configure_enrolled(struct cli *cli, estc_client *client, char **cur_cert, char **cur_key);
/* The library's log lines on stderr (-v), PINs redacted. */
void cli_log_line(void *arg, estc_log_level level, const char *msg);

/* daemon.c */

/* estc run: restore or enroll, then renew on schedule until a signal. */
int cli_run_daemon(struct cli *cli);
/* estc renew: asks the daemon of --state to renew now (SIGUSR1), or
 * renews the state itself when no daemon runs. */
int cli_renew(struct cli *cli);
/* estc status --state FILE. */
int cli_status_state(struct cli *cli);
/* Makes relative paths absolute, then creates/checks and enters --psa-dir;
 * before the library context exists. */
int cli_enter_psa_dir(struct cli *cli);

/* csr.c: keys no engine reaches */

/* estc csr: the CSR enroll would send for the engine key at --key, as PEM. */
int cli_run_csr(struct cli *cli);
/* enroll/reenroll --csr: the options that the CSR makes meaningless are
 * usage errors. Returns 0 or an exit status. */
int cli_csr_usage(const struct cli *cli);
/* Reads and checks the --csr FILE into @csr (DER); a file that cannot be
 * read, or holds no CSR whose signature verifies, is named with the reason:
 * exit 1. */
int cli_csr_read(const struct cli *cli, estc_client *client, estc_buf *csr);
/* After enroll/reenroll --csr: whether the issued certificate is for the
 * key at @cur_key (reenroll's current key; NULL: not). */
int cli_csr_same_key(const struct cli *cli, estc_client *client, const char *cur_key, bool *same);
/* After enroll/reenroll --csr for a key estc does not hold: the certificate
 * as PEM to --out or stdout and the summary. reenroll (@cur_cert not NULL):
 * the renewed certificate is not kept beside the current one, which still
 * belongs to --key; its temporary copy is removed. */
int cli_csr_print_issued(const struct cli *cli, estc_client *client, const char *cur_cert);

/* secrets.c */

/* The value of an address option (--@opt): "@FILE" reads the address from
 * the one line of FILE (a regular file owned by the user or root, not
 * writable by others, and not readable by them when it holds a pin-value),
 * "env:VAR" from the environment variable VAR (then wiped and unset); an
 * address given literally with a pin-value is copied and the argument
 * itself (@arg, in argv) loses its PIN. *@out: the address. Returns 0 or an
 * exit status (a message printed). */
int cli_address_arg(struct cli *cli, const char *opt, char *arg, const char **out);
/* Whether @s holds a pin-value attribute. */
bool cli_has_pin(const char *s);
/* Once the options are read (`run`: with the note of cli_pin_note()): no
 * core dump, ptrace or /proc/PID/mem access while estc holds a PIN (and
 * always for `run`). Returns 0 or an exit status. */
int cli_protect_secrets(struct cli *cli);
/* The note that a PIN came on the command line (once; not with -q). */
void cli_pin_note(const struct cli *cli);

/* output.c */

/* Prints "estc: CMD: what: detail" (one line, secrets redacted) and returns
 * the exit status for @err. @what may be NULL. */
int cli_fail(const struct cli *cli, estc_err err, const char *what);
/* Prints "estc: CMD: message" for a failure found by the tool itself. */
int cli_failf(const struct cli *cli, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The exit status for a library error. */
int cli_exit_status(estc_err err);
/* Copies @in into @out (of @size bytes) with secrets hidden by estc_redact()
 * and control characters replaced by spaces. */
void cli_redact(const char *in, char *out, size_t size);
/* Whether @s is an engine address (a registered scheme) rather than a file. */
bool cli_is_address(estc_ctx *ctx, const char *s);
/* Writes @n DER certificates as PEM to @path (estc_file_write(), 0644) or stdout. */
int cli_write_pem(const struct cli *cli, const estc_buf *certs, size_t n, const char *path);
/* Loads one certificate from an engine address or a PEM/DER file. */
int cli_load_cert(const struct cli *cli, const char *src, X509 **out);
/* Prints the status report for @cert (at @cert_src) and @key_src (may be NULL)
 * into @fp; returns the exit status. */
int cli_print_status(const struct cli *cli, FILE *fp, X509 *cert, const char *cert_src,
                     const char *key_src);
/* The same as one JSON object (status --json): dates in ISO 8601 UTC,
 * addresses redacted. @cert may be NULL (a state not enrolled yet); with
 * @client (status --state) also the renewal time, the next deadline and
 * the trust store. */
int cli_print_status_json(const struct cli *cli, FILE *fp, X509 *cert, const char *cert_src,
                          const char *key_src, estc_client *client, const char *state_file);
/* status --state: "last error   TIME: MESSAGE: DETAIL" (redacted) when the
 * state holds a failure since the last new certificate. */
void cli_print_last_error(FILE *fp, estc_client *client);
/* @t (seconds since the epoch) as "2026-12-06T04:30:00Z"; "never" for
 * ESTC_NEVER. Returns @buf. */
const char *cli_fmt_time(int64_t t, char *buf, size_t size);

#endif
