/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc: the subcommands, each a short sequence of estc_client calls.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cli.h"

void cli_log_line(void *arg, estc_log_level level, const char *msg)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    char shown[2048];
    (void)arg;
    cli_redact(msg, shown, sizeof(shown));
    fprintf(stderr, "estc: %s: %s\n", (unsigned)level < 4 ? names[level] : "log", shown);
}

/* The default verbosity of the one-shot subcommands: the library's lines
 * for a wait longer than a second (a 5.03 answer's Max-Age, a CoAP
 * retransmission) and nothing else, so that a failure stays one line (the
 * error carries the detail). The library logs such a wait as a warning
 * naming ", retrying" ("5.03, retrying in 2 s", "no answer from HOST port
 * PORT after 2.3 s, retrying (CoAP retransmission 1)"). */
static void cli_warn_line(void *arg, estc_log_level level, const char *msg)
{
    if (level == ESTC_LOG_WARNING && strstr(msg, ", retrying") != NULL)
        cli_log_line(arg, level, msg);
}

/* "estc: CMD: CA certificate stored at ADDR" (PINs redacted). */
static void say_stored_ca(const struct cli *cli, const char *addr)
{
    char shown[1100];
    if (cli->quiet || addr == NULL)
        return;
    cli_redact(addr, shown, sizeof(shown));
    fprintf(stderr, "estc: %s: CA certificate stored at %s\n", cli->cmd_name, shown);
}

/* Whether the objects at @addr vanish when estc exits. */
static bool is_volatile(const struct cli *cli, const char *addr)
{
    return addr != NULL && (estc_engine_caps(cli->ctx, addr) & ESTC_CAP_VOLATILE) != 0;
}

/* @in, or with --psa-dir a copy whose relative path is made absolute
 * against the folder estc started in when its engine keeps files (the
 * library resolves the others against the current folder). *@out is a new
 * string; returns an exit status. */
static int from_start_dir(const struct cli *cli, const char *in, char **out)
{
    *out = NULL;
    if (in == NULL)
        return CLI_EXIT_OK;
    const char *colon = strchr(in, ':');
    if (cli->start_dir != NULL && colon != NULL && colon[1] != '\0' && colon[1] != '/' &&
        (estc_engine_caps(cli->ctx, in) & ESTC_CAP_FILES) != 0) {
        size_t n = strlen(in) + strlen(cli->start_dir) + 2;
        if ((*out = malloc(n)) != NULL)
            snprintf(*out, n, "%.*s%s/%s", (int)(colon + 1 - in), in, cli->start_dir, colon + 1);
    } else {
        *out = strdup(in);
    }
    return *out != NULL ? CLI_EXIT_OK : cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
}

/* An option value as an engine address: a plain file path becomes a file:
 * address (absolute, so that it does not depend on the current folder). */
static int as_address(const struct cli *cli, const char *opt, const char *src, char **out)
{
    if (cli_is_address(cli->ctx, src)) {
        return from_start_dir(cli, src, out);
    } else {
        char *abs = realpath(src, NULL);
        if (abs == NULL)
            return cli_failf(cli, CLI_EXIT_FAILURE, "--%s %s: %s", opt, src, strerror(errno));
        estc_err err = estc_address_for_file(cli->ctx, abs, out);
        free(abs);
        if (err != ESTC_OK && err != ESTC_ERR_NOMEM)
            return cli_failf(cli, CLI_EXIT_FAILURE, "--%s %s: %s", opt, src,
                             estc_ctx_error_detail(cli->ctx));
    }
    if (*out == NULL)
        return cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
    return CLI_EXIT_OK;
}

/* A configuration call's failure: a bad value is a usage error. */
static int config_fail(const struct cli *cli, estc_err err, const char *opt)
{
    int status = cli_fail(cli, err, opt);
    if (err == ESTC_ERR_INVALID_ARG || err == ESTC_ERR_BAD_ADDRESS ||
        err == ESTC_ERR_UNKNOWN_SCHEME)
        return CLI_EXIT_USAGE;
    return status;
}

/* A file option's value (not an engine address) must name a readable
 * file: the system's reason names what is wrong before any network. */
static int check_readable(const struct cli *cli, const char *opt, const char *src)
{
    if (src == NULL || cli_is_address(cli->ctx, src))
        return CLI_EXIT_OK;
    int fd = open(src, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    int why = errno;
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
        why = EISDIR;
    else if (fd >= 0)
        why = 0;
    if (fd >= 0)
        close(fd);
    if (why != 0)
        return cli_failf(cli, CLI_EXIT_FAILURE, "--%s %s: %s", opt, src, strerror(why));
    return CLI_EXIT_OK;
}

/* The DTLS client credentials must be a pair: a key that does not belong to
 * the certificate is named here, before any network traffic (the handshake
 * would only fail later, with a less helpful reason). The library reads and
 * checks them, and keeps what it read for the session. */
static int check_pair(const struct cli *cli, estc_client *client, estc_client_creds which,
                      const char *cert_opt, const char *cert_src, const char *key_opt,
                      const char *key_src)
{
    int status = check_readable(cli, cert_opt, cert_src);
    if (status == CLI_EXIT_OK)
        status = check_readable(cli, key_opt, key_src);
    if (status == CLI_EXIT_OK && cli_is_address(cli->ctx, cert_src)) {
        /* An engine's own reason, with the option it came from. */
        bool have = false;
        estc_ctx_clear_error(cli->ctx);
        estc_err err = estc_object_exists(cli->ctx, cert_src, ESTC_OBJ_CERT, &have);
        if (err == ESTC_OK && !have)
            err = estc_error(cli->ctx, ESTC_ERR_NOT_FOUND, "no certificate there");
        if (err != ESTC_OK) {
            char what[600], shown[512];
            cli_redact(cert_src, shown, sizeof(shown));
            snprintf(what, sizeof(what), "--%s %s", cert_opt, shown);
            status = cli_fail(cli, err, what);
        }
    }
    if (status != CLI_EXIT_OK)
        return status;
    estc_ctx_clear_error(cli->ctx);
    estc_err err = estc_client_check_credentials(client, which);
    if (err == ESTC_ERR_CRYPTO)
        return cli_failf(cli, CLI_EXIT_FAILURE,
                         "the key at --%s %s does not belong to the certificate at --%s %s "
                         "(their public keys differ)",
                         key_opt, key_src, cert_opt, cert_src);
    if (err != ESTC_OK) {
        char what[1100], cert_shown[512], key_shown[512];
        cli_redact(cert_src, cert_shown, sizeof(cert_shown));
        cli_redact(key_src, key_shown, sizeof(key_shown));
        snprintf(what, sizeof(what), "--%s %s / --%s %s", cert_opt, cert_shown, key_opt,
                 key_shown);
        return cli_fail(cli, err, what);
    }
    return CLI_EXIT_OK;
}

/* Appends @text to the list of missing options in @buf (of @size bytes). */
static void add_missing(char *buf, size_t size, size_t *n, const char *text)
{
    size_t len = strlen(buf);
    snprintf(buf + len, size - len, "%s%s", *n > 0 ? "; " : "", text);
    (*n)++;
}

/* The options a subcommand cannot go without, all named in one line with
 * what they take; exit 2. */
static int check_required(const struct cli *cli)
{
    char missing[1024] = "";
    size_t n = 0;
    if (cli->server == NULL)
        add_missing(missing, sizeof(missing), &n,
                    "--server is required: coaps://HOST[:PORT][/ROOT]");
    if (cli->trust.n == 0 && cli->implicit_trust.n == 0)
        add_missing(missing, sizeof(missing), &n,
                    "--trust or --implicit-trust is required (the server is always "
                    "authenticated): a PEM file or an engine address");
    if (((cli->cmd == CMD_ENROLL && cli->csr == NULL) || cli->cmd == CMD_SERVERKEYGEN) &&
        cli->subject == NULL)
        add_missing(missing, sizeof(missing), &n, "--subject is required: /CN=NAME[/O=ORG...]");
    if (n == 0)
        return CLI_EXIT_OK;
    return cli_failf(cli, CLI_EXIT_USAGE, "%s (see estc %s --help)", missing, cli->cmd_name);
}

/* Applies the options shared by the network subcommands. */
int cli_configure(struct cli *cli, estc_client *client)
{
    estc_err err;
    int required = check_required(cli);
    if (required != CLI_EXIT_OK)
        return required;
    for (size_t i = 0; i < cli->trust.n; i++) {
        int st = check_readable(cli, "trust", cli->trust.v[i]);
        if (st != CLI_EXIT_OK)
            return st;
    }
    for (size_t i = 0; i < cli->implicit_trust.n; i++) {
        int st = check_readable(cli, "implicit-trust", cli->implicit_trust.v[i]);
        if (st != CLI_EXIT_OK)
            return st;
    }
    err = estc_client_set_server(client, cli->server);
    if (err != ESTC_OK)
        return config_fail(cli, err, "--server");
    if (cli->server_name != NULL) {
        err = estc_client_set_server_identity(client, cli->server_name);
        if (err != ESTC_OK)
            return config_fail(cli, err, "--server-name");
    }
    for (size_t i = 0; i < cli->trust.n; i++) {
        err = estc_client_add_trust_anchor(client, cli->trust.v[i], false);
        if (err != ESTC_OK)
            return config_fail(cli, err, "--trust");
    }
    for (size_t i = 0; i < cli->implicit_trust.n; i++) {
        err = estc_client_add_trust_anchor(client, cli->implicit_trust.v[i], true);
        if (err != ESTC_OK)
            return config_fail(cli, err, "--implicit-trust");
    }
    /* For run, --retries is the schedule's /sren retries, not 5.03 waits. */
    bool waits = cli->have_retries && cli->cmd != CMD_RUN;
    if (cli->timeout_ms != 0 || waits || cli->have_max_wait) {
        /* Unset values keep the library's defaults (5 waits, 300 s). */
        err = estc_client_set_limits(client, cli->timeout_ms, waits ? cli->retries : 5,
                                     cli->have_max_wait ? cli->max_wait_s : 300);
        if (err != ESTC_OK)
            return config_fail(cli, err, "--timeout/--retries/--max-wait");
    }
    if (cli->block_size != 0) {
        err = estc_client_set_block_size(client, cli->block_size);
        if (err != ESTC_OK)
            return config_fail(cli, err, "--block-size");
    }
    if (cli->have_accept) {
        err = estc_client_set_accept(client, cli->accept);
        if (err != ESTC_OK)
            return config_fail(cli, err, "--accept");
    }
    if (cli->have_key_type) {
        err = estc_client_set_key_type(client, cli->key_type);
        if (err != ESTC_OK)
            return config_fail(cli, err, "--key-type");
    }
    if (cli->cmd != CMD_REENROLL && (cli->cert != NULL || cli->key != NULL)) {
        if (cli->cert == NULL || cli->key == NULL)
            return cli_failf(cli, CLI_EXIT_USAGE, "--cert and --key go together");
        char *cert = NULL, *key = NULL;
        int st = from_start_dir(cli, cli->cert, &cert);
        if (st == CLI_EXIT_OK)
            st = from_start_dir(cli, cli->key, &key);
        err = st == CLI_EXIT_OK ? estc_client_set_credentials(client, cert, key) : ESTC_OK;
        if (st == CLI_EXIT_OK && err != ESTC_OK)
            st = config_fail(cli, err, "--cert/--key");
        /* estc run needs them only without a state: its own checks. */
        if (st == CLI_EXIT_OK && cli->cmd != CMD_RUN)
            st = check_pair(cli, client, ESTC_CLIENT_CREDS_BOOTSTRAP, "cert", cert, "key", key);
        free(cert);
        free(key);
        if (st != CLI_EXIT_OK)
            return st;
    }
    if (cli->subject != NULL) {
        err = estc_client_set_subject(client, cli->subject);
        if (err != ESTC_OK)
            return config_fail(cli, err, "--subject");
    }
    for (size_t i = 0; i < cli->san.n; i++) {
        err = estc_client_add_san(client, cli->san.v[i]);
        if (err != ESTC_OK)
            return config_fail(cli, err, "--san");
    }
    return CLI_EXIT_OK;
}

/* Where the enrolled credentials and the CA certificates go (enroll,
 * serverkeygen, cacerts) or sit (reenroll). */
int cli_configure_enrolled(struct cli *cli, estc_client *client, char **cur_cert, char **cur_key)
{
    const char *key = cli->new_key, *cert = cli->new_cert;
    char *key_addr = NULL, *cert_addr = NULL;
    int status = CLI_EXIT_OK;
    if (cli->cmd == CMD_REENROLL) {
        /* The current credentials: --cert/--key, or the addresses an earlier
         * enroll wrote to (--new-cert/--new-key). */
        if ((cli->cert != NULL || cli->key != NULL) &&
            (cli->new_cert != NULL || cli->new_key != NULL))
            return cli_failf(cli, CLI_EXIT_USAGE,
                             "give the current credentials either as --cert/--key or as "
                             "--new-cert/--new-key, not both");
        key = cli->key != NULL ? cli->key : cli->new_key;
        cert = cli->cert != NULL ? cli->cert : cli->new_cert;
        if (key == NULL || cert == NULL)
            return cli_failf(cli, CLI_EXIT_USAGE,
                             "reenroll needs the current certificate and key (--cert and --key)");
        status = as_address(cli, cli->cert != NULL ? "cert" : "new-cert", cert, &cert_addr);
        if (status == CLI_EXIT_OK)
            status = as_address(cli, cli->key != NULL ? "key" : "new-key", key, &key_addr);
    } else {
        status = from_start_dir(cli, key, &key_addr);
        if (status == CLI_EXIT_OK)
            status = from_start_dir(cli, cert, &cert_addr);
    }
    char *ca_out = NULL;
    if (status == CLI_EXIT_OK)
        status = from_start_dir(cli, cli->ca_out, &ca_out);
    if (status == CLI_EXIT_OK && (key_addr != NULL || cert_addr != NULL || ca_out != NULL)) {
        estc_err err = estc_client_set_enrolled(client, key_addr, cert_addr, ca_out);
        if (err != ESTC_OK)
            status = config_fail(cli, err, "--new-key/--new-cert/--ca-out");
    }
    free(ca_out);
    /* The enrolled credentials also authenticate what precedes /sren
     * (discovery, --with-cacerts, --with-csrattrs). */
    if (status == CLI_EXIT_OK && cli->cmd == CMD_REENROLL) {
        estc_err err = estc_client_set_credentials(client, cert_addr, key_addr);
        if (err != ESTC_OK)
            status = config_fail(cli, err, "--cert/--key");
    }
    if (status == CLI_EXIT_OK && cli->cmd == CMD_REENROLL)
        status = check_pair(cli, client, ESTC_CLIENT_CREDS_ENROLLED,
                            cli->cert != NULL ? "cert" : "new-cert", cert_addr,
                            cli->key != NULL ? "key" : "new-key", key_addr);
    if (status == CLI_EXIT_OK && cli->cmd == CMD_REENROLL) {
        *cur_cert = cert_addr;
        *cur_key = key_addr;
        return status;
    }
    free(key_addr);
    free(cert_addr);
    return status;
}

/*
 * Without a state file the library does not know that the objects at the
 * given addresses are the enrolled ones, so it leaves them and puts the
 * renewed certificate (and a new key) at generated addresses. A one-shot
 * command should leave one certificate where the user keeps it: move the
 * renewed certificate to the old one's address (putting the old one back if
 * that fails) and, after --rekey, remove the old key, whose certificate is
 * gone. Nothing is left behind either way.
 */
static int replace_in_place(struct cli *cli, estc_client *client, const char *old_cert,
                            const char *old_key)
{
    const char *new_cert = estc_client_cert_address(client);
    const char *new_key = estc_client_key_address(client);
    estc_buf old_der = {0}, new_der = {0};
    estc_err err = ESTC_OK;
    int status = CLI_EXIT_OK;
    if (new_cert != NULL && strcmp(new_cert, old_cert) != 0) {
        err = estc_cert_load(cli->ctx, old_cert, &old_der);
        if (err == ESTC_OK)
            err = estc_cert_load(cli->ctx, new_cert, &new_der);
        if (err == ESTC_OK)
            err = estc_cert_remove(cli->ctx, old_cert);
        if (err == ESTC_OK) {
            err = estc_cert_store(cli->ctx, old_cert, new_der.data, new_der.len);
            if (err != ESTC_OK) {
                estc_err first = err;
                char detail[1024];
                snprintf(detail, sizeof(detail), "%s", estc_ctx_error_detail(cli->ctx));
                (void)estc_cert_store(cli->ctx, old_cert, old_der.data, old_der.len);
                err = estc_error(cli->ctx, first, "%s", detail);
            }
        }
        if (err == ESTC_OK) {
            estc_err rm = estc_cert_remove(cli->ctx, new_cert);
            if (rm != ESTC_OK)
                status = cli_fail(cli, rm, "removing the renewed certificate's temporary copy");
        } else {
            char where[1100], what[1200];
            cli_redact(new_cert, where, sizeof(where));
            snprintf(what, sizeof(what), "the renewed certificate stays at %s", where);
            status = cli_fail(cli, err, what);
        }
    }
    if (status == CLI_EXIT_OK && new_key != NULL && strcmp(new_key, old_key) != 0) {
        err = estc_key_remove(cli->ctx, old_key);
        if (err != ESTC_OK && err != ESTC_ERR_NOT_FOUND)
            status = cli_fail(cli, err, "removing the replaced key");
    }
    estc_buf_free(&old_der);
    estc_buf_free(&new_der);
    return status;
}

static int print_cacerts(struct cli *cli, estc_client *client)
{
    size_t n = estc_client_ca_count(client);
    estc_buf *certs = calloc(n > 0 ? n : 1, sizeof(*certs));
    if (certs == NULL)
        return cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
    int status = CLI_EXIT_OK;
    for (size_t i = 0; i < n && status == CLI_EXIT_OK; i++) {
        const char *addr = estc_client_ca_address(client, i);
        estc_err err = addr != NULL ? estc_cert_load(cli->ctx, addr, &certs[i]) : ESTC_ERR_STATE;
        if (err != ESTC_OK)
            status = cli_fail(cli, err, "loading a stored CA certificate");
        else
            say_stored_ca(cli, addr);
    }
    if (status == CLI_EXIT_OK)
        status = cli_write_pem(cli, certs, n, cli->cmd == CMD_CACERTS ? cli->out : NULL);
    for (size_t i = 0; i < n; i++)
        estc_buf_free(&certs[i]);
    free(certs);
    return status;
}

/* @cert_at: where the certificate now is when not the client's address. */
static int print_issued(struct cli *cli, estc_client *client, const char *cert_at)
{
    estc_buf der = {0};
    estc_err err = cert_at != NULL ? estc_cert_load(cli->ctx, cert_at, &der)
                                   : estc_client_certificate(client, &der);
    if (err != ESTC_OK)
        return cli_fail(cli, err, "reading the issued certificate");
    int status = cli_write_pem(cli, &der, 1, cli->out);
    estc_buf_free(&der);
    if (status != CLI_EXIT_OK || cli->quiet)
        return status;
    char key[1100], cert[1100];
    cli_redact(estc_client_key_address(client), key, sizeof(key));
    cli_redact(cert_at != NULL ? cert_at : estc_client_cert_address(client), cert, sizeof(cert));
    fprintf(stderr, "estc: %s: certificate stored at %s, key at %s\n", cli->cmd_name, cert, key);
    if (is_volatile(cli, estc_client_key_address(client)) ||
        is_volatile(cli, estc_client_cert_address(client)))
        fprintf(stderr,
                "estc: %s: note: mem: objects vanish when estc exits; keep the key and "
                "certificate with --new-key/--new-cert file:, pkcs11:, tpm2: or psa: "
                "addresses\n",
                cli->cmd_name);
    return status;
}

/* The EST resources found by discovery, one link (RFC 6690) a line. */
static int print_links(const struct cli *cli, estc_client *client)
{
    static const char *const names[] = {"crts", "sen", "sren", "skg", "skc", "att"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *path = estc_client_resource_path(client, names[i]);
        if (path != NULL)
            printf("<%s>;rt=\"ace.est.%s\"\n", path, names[i]);
    }
    if (fflush(stdout) != 0)
        return cli_failf(cli, CLI_EXIT_FAILURE, "cannot write to stdout");
    return CLI_EXIT_OK;
}

static int run_network(struct cli *cli)
{
    int status = cli->csr != NULL ? cli_csr_usage(cli) : CLI_EXIT_OK;
    if (status != CLI_EXIT_OK)
        return status;
    estc_client *client = NULL;
    estc_err err = estc_client_new(cli->ctx, &client);
    if (err != ESTC_OK)
        return cli_fail(cli, err, "creating the client");
    char *cur_cert = NULL, *cur_key = NULL;
    estc_buf csr = {0}; /* --csr: read and checked before any network */
    if (cli->csr != NULL)
        status = cli_csr_read(cli, client, &csr);
    if (status == CLI_EXIT_OK)
        status = cli_configure(cli, client);
    if (status == CLI_EXIT_OK && cli->cmd != CMD_DISCOVER && cli->cmd != CMD_CSRATTRS)
        status = cli_configure_enrolled(cli, client, &cur_cert, &cur_key);

        /* Each step clears the detail so that a failure reports its own. */
#define STEP(call, what)                                                                           \
    do {                                                                                           \
        if (status == CLI_EXIT_OK) {                                                               \
            estc_ctx_clear_error(cli->ctx);                                                        \
            err = (call);                                                                          \
            if (err != ESTC_OK)                                                                    \
                status = cli_fail(cli, err, (what));                                               \
        }                                                                                          \
    } while (0)

    switch (cli->cmd) {
    case CMD_DISCOVER:
        STEP(estc_client_discover(client), NULL);
        if (status == CLI_EXIT_OK)
            status = print_links(cli, client);
        if (status == CLI_EXIT_OK && !cli->quiet)
            fprintf(stderr, "estc: discover: the server offers EST-coaps\n");
        break;
    case CMD_CACERTS:
        STEP(estc_client_cacerts(client), NULL);
        if (status == CLI_EXIT_OK)
            status = print_cacerts(cli, client);
        break;
    case CMD_CSRATTRS:
        STEP(estc_client_csrattrs(client), NULL);
        if (status == CLI_EXIT_OK && !cli->quiet)
            fprintf(stderr, "estc: csrattrs: the CSR attributes were received and understood\n");
        break;
    case CMD_ENROLL:
    case CMD_REENROLL:
    case CMD_SERVERKEYGEN:
        if (cli->with_cacerts) {
            STEP(estc_client_cacerts(client), "/crts");
            for (size_t i = 0; status == CLI_EXIT_OK && i < estc_client_ca_count(client); i++)
                say_stored_ca(cli, estc_client_ca_address(client, i));
        }
        if (cli->with_csrattrs)
            STEP(estc_client_csrattrs(client), "/att");
        if (cli->cmd == CMD_ENROLL && cli->csr != NULL)
            STEP(estc_client_enroll_csr(client, csr.data, csr.len), NULL);
        else if (cli->cmd == CMD_REENROLL && cli->csr != NULL)
            STEP(estc_client_reenroll_csr(client, csr.data, csr.len), NULL);
        else if (cli->cmd == CMD_ENROLL)
            STEP(estc_client_enroll(client), NULL);
        else if (cli->cmd == CMD_REENROLL)
            STEP(estc_client_reenroll(client, cli->rekey), NULL);
        else
            STEP(estc_client_serverkeygen(client), NULL);
        /* A CSR made elsewhere for a key estc does not hold. */
        bool held = cli->csr == NULL;
        if (status == CLI_EXIT_OK && !held)
            status = cli_csr_same_key(cli, client, cur_key, &held);
        if (status == CLI_EXIT_OK && cli->cmd == CMD_REENROLL && held)
            status = replace_in_place(cli, client, cur_cert, cur_key);
        if (status == CLI_EXIT_OK && held)
            status = print_issued(cli, client, cur_cert);
        else if (status == CLI_EXIT_OK)
            status = cli_csr_print_issued(cli, client, cur_cert);
        break;
    default:
        status = cli_failf(cli, CLI_EXIT_FAILURE, "not a network subcommand");
        break;
    }
#undef STEP
    /* The engine objects stay: freeing the client removes nothing. */
    estc_client_free(client);
    estc_buf_free(&csr);
    free(cur_cert);
    free(cur_key);
    return status;
}

static int run_status(struct cli *cli)
{
    if ((cli->cert != NULL && cli->new_cert != NULL) || (cli->key != NULL && cli->new_key != NULL))
        return cli_failf(cli, CLI_EXIT_USAGE,
                         "give --cert or --new-cert (and --key or "
                         "--new-key), not both");
    if (cli->have_jitter)
        return cli_failf(cli, CLI_EXIT_USAGE, "--jitter goes with --state");
    const char *cert_src = cli->new_cert != NULL ? cli->new_cert : cli->cert;
    const char *key_src = cli->new_key != NULL ? cli->new_key : cli->key;
    if (cert_src == NULL)
        return cli_failf(cli, CLI_EXIT_USAGE,
                         "status needs the certificate: --new-cert ADDR or --cert FILE|ADDR, "
                         "or the state file of estc run: --state FILE");
    char *key_addr = NULL;
    int status = CLI_EXIT_OK;
    if (key_src != NULL)
        status = as_address(cli, cli->new_key != NULL ? "new-key" : "key", key_src, &key_addr);
    X509 *cert = NULL;
    if (status == CLI_EXIT_OK)
        status = cli_load_cert(cli, cert_src, &cert);
    FILE *fp = stdout;
    if (status == CLI_EXIT_OK && cli->out != NULL && strcmp(cli->out, "-") != 0) {
        fp = fopen(cli->out, "w");
        if (fp == NULL)
            status = cli_failf(cli, CLI_EXIT_FAILURE, "--out %s: %s", cli->out, strerror(errno));
    }
    if (status == CLI_EXIT_OK && cli->json)
        status = cli_print_status_json(cli, fp, cert, cert_src, key_addr, NULL, NULL);
    else if (status == CLI_EXIT_OK)
        status = cli_print_status(cli, fp, cert, cert_src, key_addr);
    if (fp != NULL && fp != stdout && fclose(fp) != 0 && status == CLI_EXIT_OK)
        status = cli_failf(cli, CLI_EXIT_FAILURE, "--out %s: %s", cli->out, strerror(errno));
    X509_free(cert);
    free(key_addr);
    return status;
}

int cli_run(struct cli *cli)
{
    /* estc renew: a running daemon is signalled; otherwise the state is
     * renewed here, as `run --once` with the renewal due now. */
    if (cli->cmd == CMD_RENEW) {
        int st = cli_renew(cli);
        if (st != CLI_EXIT_OK || !cli->renew_now)
            return st;
        cli->cmd = CMD_RUN;
        cli->once = true;
    }
    /* The psa engine keeps its storage in the current folder. */
    if (cli->psa_dir != NULL) {
        int st = cli_enter_psa_dir(cli);
        if (st != CLI_EXIT_OK) {
            free(cli->start_dir);
            cli->start_dir = NULL;
            return st;
        }
    }
    estc_err err = estc_ctx_new(&cli->ctx);
    if (err != ESTC_OK)
        return cli_failf(cli, CLI_EXIT_FAILURE, "cannot create the library context: %s",
                         estc_strerror(err));
    int status = CLI_EXIT_OK;
    if (cli->verbose > 0) {
        err = estc_ctx_set_log(cli->ctx, cli->verbose > 1 ? ESTC_LOG_DEBUG : ESTC_LOG_INFO,
                               cli_log_line, NULL);
        if (err != ESTC_OK)
            status = cli_fail(cli, err, "-v");
    } else if (!cli->quiet && cli->cmd != CMD_RUN) {
        /* The default verbosity: the waits (see cli_warn_line()). */
        err = estc_ctx_set_log(cli->ctx, ESTC_LOG_WARNING, cli_warn_line, NULL);
        if (err != ESTC_OK)
            status = cli_fail(cli, err, "-v");
    }
    for (size_t i = 0; i < cli->drivers.n && status == CLI_EXIT_OK; i++) {
        err = estc_engine_load_module(cli->ctx, cli->drivers.v[i]);
        if (err != ESTC_OK)
            status = cli_fail(cli, err, "--driver");
    }
    if (status == CLI_EXIT_OK) {
        if (cli->cmd == CMD_RUN)
            status = cli_run_daemon(cli);
        else if (cli->cmd == CMD_STATUS && cli->state != NULL)
            status = cli_status_state(cli);
        else if (cli->cmd == CMD_STATUS)
            status = run_status(cli);
        else if (cli->cmd == CMD_CSR)
            status = cli_run_csr(cli);
        else
            status = run_network(cli);
    }
    estc_ctx_free(cli->ctx);
    cli->ctx = NULL;
    free(cli->start_dir);
    cli->start_dir = NULL;
    return status;
}
