/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc: keys no engine reaches (a secure element with its own SDK, an
 * offline signing station). `estc csr` makes the request enroll would send
 * for an engine key, to be carried elsewhere; `enroll --csr FILE` and
 * `reenroll --csr FILE` enroll a request made elsewhere.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cli.h"

/* The largest --csr file read: the library takes at most 64 KiB. */
#define CSR_FILE_MAX (64 * 1024)

int cli_csr_usage(const struct cli *cli)
{
    const char *bad = NULL;
    if (cli->subject != NULL)
        bad = "--subject";
    else if (cli->san.n > 0)
        bad = "--san";
    else if (cli->new_key != NULL && cli->cmd == CMD_ENROLL)
        bad = "--new-key";
    else if (cli->have_key_type)
        bad = "--key-type";
    else if (cli->rekey)
        bad = "--rekey";
    else if (cli->with_csrattrs)
        bad = "--with-csrattrs";
    if (bad == NULL)
        return CLI_EXIT_OK;
    return cli_failf(cli, CLI_EXIT_USAGE,
                     "%s does not go with --csr: the CSR carries the key, the Subject and the "
                     "subjectAltName (see estc %s --help)",
                     bad, cli->cmd_name);
}

int cli_csr_read(const struct cli *cli, estc_client *client, estc_buf *csr)
{
    const char *path = cli->csr;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return cli_failf(cli, CLI_EXIT_FAILURE, "--csr %s: %s", path, strerror(errno));
    struct stat st;
    int why = 0;
    if (fstat(fd, &st) != 0)
        why = errno;
    else if (S_ISDIR(st.st_mode))
        why = EISDIR;
    if (why == 0 && !S_ISREG(st.st_mode)) {
        close(fd);
        return cli_failf(cli, CLI_EXIT_FAILURE, "--csr %s: not a regular file", path);
    }
    unsigned char *data = why == 0 ? malloc(CSR_FILE_MAX + 1) : NULL;
    if (why == 0 && data == NULL) {
        close(fd);
        return cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
    }
    size_t len = 0;
    while (why == 0 && len < CSR_FILE_MAX + 1) {
        ssize_t n = read(fd, data + len, CSR_FILE_MAX + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            why = errno;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    int status = CLI_EXIT_OK;
    if (why != 0) {
        status = cli_failf(cli, CLI_EXIT_FAILURE, "--csr %s: %s", path, strerror(why));
    } else {
        char what[1100];
        snprintf(what, sizeof(what), "--csr %s", path);
        estc_ctx_clear_error(cli->ctx);
        estc_err err = estc_client_check_csr(client, data, len, csr);
        if (err != ESTC_OK)
            status = cli_fail(cli, err, what);
    }
    free(data);
    return status;
}

/* The issued certificate's public key (SubjectPublicKeyInfo DER) into @spki. */
static int issued_spki(const struct cli *cli, estc_client *client, estc_buf *spki)
{
    estc_buf der = {0};
    estc_err err = estc_client_certificate(client, &der);
    if (err != ESTC_OK)
        return cli_fail(cli, err, "reading the issued certificate");
    const unsigned char *p = der.data;
    X509 *x = d2i_X509(NULL, &p, (long)der.len);
    estc_buf_free(&der);
    unsigned char *pub = NULL;
    int n = x != NULL ? i2d_PUBKEY(X509_get0_pubkey(x), &pub) : -1;
    X509_free(x);
    int status = CLI_EXIT_OK;
    if (n <= 0)
        status = cli_failf(cli, CLI_EXIT_FAILURE, "the issued certificate does not parse");
    else if (estc_buf_set(spki, pub, (size_t)n) != ESTC_OK)
        status = cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
    OPENSSL_free(pub);
    return status;
}

int cli_csr_same_key(const struct cli *cli, estc_client *client, const char *cur_key, bool *same)
{
    *same = false;
    if (cur_key == NULL)
        return CLI_EXIT_OK;
    estc_buf issued = {0}, mine = {0};
    int status = issued_spki(cli, client, &issued);
    if (status == CLI_EXIT_OK) {
        estc_ctx_clear_error(cli->ctx);
        estc_err err = estc_key_public(cli->ctx, cur_key, &mine);
        if (err != ESTC_OK)
            status = cli_fail(cli, err, "reading the current key");
    }
    if (status == CLI_EXIT_OK)
        *same = issued.len == mine.len && memcmp(issued.data, mine.data, mine.len) == 0;
    estc_buf_free(&issued);
    estc_buf_free(&mine);
    return status;
}

int cli_csr_print_issued(const struct cli *cli, estc_client *client, const char *cur_cert)
{
    estc_buf der = {0};
    estc_err err = estc_client_certificate(client, &der);
    if (err != ESTC_OK)
        return cli_fail(cli, err, "reading the issued certificate");
    int status = cli_write_pem(cli, &der, 1, cli->out);
    estc_buf_free(&der);
    const char *at = estc_client_cert_address(client);
    char shown[1100];
    cli_redact(at, shown, sizeof(shown));
    if (cur_cert != NULL) {
        /* reenroll: the current certificate stays with the current key. */
        if (at != NULL && strcmp(at, cur_cert) != 0) {
            estc_err rm = estc_cert_remove(cli->ctx, at);
            if (rm != ESTC_OK && status == CLI_EXIT_OK)
                status = cli_fail(cli, rm, "removing the renewed certificate's temporary copy");
        }
        if (status == CLI_EXIT_OK && !cli->quiet)
            fprintf(stderr,
                    "estc: %s: the renewed certificate is for the key of the CSR, not the one "
                    "at --key: written to %s only; the certificate at --cert stays\n",
                    cli->cmd_name, cli->out != NULL ? cli->out : "stdout");
        return status;
    }
    if (status != CLI_EXIT_OK || cli->quiet)
        return status;
    fprintf(stderr,
            "estc: %s: certificate stored at %s, for the key the CSR was made with (held "
            "where the CSR was made, not by estc)\n",
            cli->cmd_name, shown);
    if (at != NULL && (estc_engine_caps(cli->ctx, at) & ESTC_CAP_VOLATILE) != 0)
        fprintf(stderr,
                "estc: %s: note: the certificate address is in process memory and vanishes "
                "when estc exits; keep it with --new-cert or --out\n",
                cli->cmd_name);
    return status;
}

/* The value of --key as an engine address: a plain path becomes the
 * address of that file. */
static int key_address(const struct cli *cli, char **out)
{
    if (cli_is_address(cli->ctx, cli->key)) {
        *out = strdup(cli->key);
        return *out != NULL ? CLI_EXIT_OK : cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
    }
    char *abs = realpath(cli->key, NULL);
    if (abs == NULL)
        return cli_failf(cli, CLI_EXIT_FAILURE, "--key %s: %s", cli->key, strerror(errno));
    estc_err err = estc_address_for_file(cli->ctx, abs, out);
    free(abs);
    if (err != ESTC_OK)
        return cli_fail(cli, err, "--key");
    return CLI_EXIT_OK;
}

/* The Subject and subjectAltName options, without the network ones. */
static int set_request(const struct cli *cli, estc_client *client)
{
    estc_err err = estc_client_set_subject(client, cli->subject);
    if (err != ESTC_OK) {
        int status = cli_fail(cli, err, "--subject");
        return err == ESTC_ERR_INVALID_ARG ? CLI_EXIT_USAGE : status;
    }
    for (size_t i = 0; i < cli->san.n; i++) {
        err = estc_client_add_san(client, cli->san.v[i]);
        if (err != ESTC_OK) {
            int status = cli_fail(cli, err, "--san");
            return err == ESTC_ERR_INVALID_ARG ? CLI_EXIT_USAGE : status;
        }
    }
    return CLI_EXIT_OK;
}

/* @der (a DER CSR) as PEM to --out (replaced atomically) or stdout. */
static int write_csr(const struct cli *cli, const estc_buf *der)
{
    const unsigned char *p = der->data;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)der->len);
    BIO *mem = BIO_new(BIO_s_mem());
    int status = CLI_EXIT_OK;
    if (req == NULL || mem == NULL || PEM_write_bio_X509_REQ(mem, req) != 1)
        status = cli_failf(cli, CLI_EXIT_FAILURE, "cannot encode the CSR as PEM");
    char *data = NULL;
    long len = mem != NULL ? BIO_get_mem_data(mem, &data) : 0;
    if (status == CLI_EXIT_OK && (cli->out == NULL || strcmp(cli->out, "-") == 0)) {
        if (fwrite(data, 1, (size_t)len, stdout) != (size_t)len || fflush(stdout) != 0)
            status = cli_failf(cli, CLI_EXIT_FAILURE, "cannot write to stdout");
    } else if (status == CLI_EXIT_OK) {
        estc_err err =
            estc_file_write(cli->ctx, cli->out, data, (size_t)len, 0644, ESTC_FILE_REPLACE);
        if (err != ESTC_OK)
            status = cli_fail(cli, err, "--out");
    }
    BIO_free(mem);
    X509_REQ_free(req);
    return status;
}

int cli_run_csr(struct cli *cli)
{
    char missing[256] = "";
    if (cli->key == NULL)
        strcat(missing, "--key is required: the engine address of the key");
    if (cli->subject == NULL)
        strcat(missing, missing[0] != '\0' ? "; --subject is required: /CN=NAME[/O=ORG...]"
                                           : "--subject is required: /CN=NAME[/O=ORG...]");
    if (missing[0] != '\0')
        return cli_failf(cli, CLI_EXIT_USAGE, "%s (see estc csr --help)", missing);
    /* The network options serve /att alone. */
    if (!cli->with_csrattrs &&
        (cli->server != NULL || cli->trust.n > 0 || cli->implicit_trust.n > 0 ||
         cli->server_name != NULL || cli->cert != NULL || cli->block_size != 0 ||
         cli->timeout_ms != 0 || cli->have_retries || cli->have_max_wait))
        return cli_failf(cli, CLI_EXIT_USAGE,
                         "--server, --trust, --cert and the other network options go with "
                         "--with-csrattrs (see estc csr --help)");
    estc_client *client = NULL;
    estc_err err = estc_client_new(cli->ctx, &client);
    if (err != ESTC_OK)
        return cli_fail(cli, err, "creating the client");
    char *key = NULL;
    int status = key_address(cli, &key);
    if (status == CLI_EXIT_OK && cli->with_csrattrs) {
        /* --key is the CSR's key; with --cert it is also the session's. */
        const char *k = cli->key;
        if (cli->cert == NULL)
            cli->key = NULL;
        status = cli_configure(cli, client);
        cli->key = k;
        if (status == CLI_EXIT_OK) {
            estc_ctx_clear_error(cli->ctx);
            err = estc_client_csrattrs(client);
            if (err != ESTC_OK)
                status = cli_fail(cli, err, "/att");
        }
    } else if (status == CLI_EXIT_OK) {
        status = set_request(cli, client);
    }
    estc_buf der = {0};
    if (status == CLI_EXIT_OK) {
        estc_ctx_clear_error(cli->ctx);
        err = estc_client_make_csr(client, key, &der);
        if (err != ESTC_OK)
            status = cli_fail(cli, err, "making the CSR");
    }
    if (status == CLI_EXIT_OK)
        status = write_csr(cli, &der);
    if (status == CLI_EXIT_OK && !cli->quiet) {
        char shown[1100];
        cli_redact(key, shown, sizeof(shown));
        fprintf(stderr, "estc: csr: request for the key at %s, signed there%s\n", shown,
                cli->with_csrattrs ? ", with the server's CSR attributes" : "");
    }
    estc_buf_free(&der);
    free(key);
    estc_client_free(client);
    return status;
}
