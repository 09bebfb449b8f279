/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc: errors, PEM output and the status report.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cli.h"

int cli_exit_status(estc_err err)
{
    switch (err) {
    case ESTC_OK:
        return CLI_EXIT_OK;
    case ESTC_ERR_TRANSPORT:
    case ESTC_ERR_TIMEOUT:
        return CLI_EXIT_NETWORK;
    case ESTC_ERR_SERVER:
    case ESTC_ERR_LIMIT:
        return CLI_EXIT_SERVER;
    case ESTC_ERR_VALIDATION:
    case ESTC_ERR_PROTOCOL:
        return CLI_EXIT_VALIDATION;
    default:
        return CLI_EXIT_FAILURE;
    }
}

void cli_redact(const char *in, char *out, size_t size)
{
    if (size == 0)
        return;
    estc_redact(in, out, size);
    for (char *p = out; *p != '\0'; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch < 0x20 || ch == 0x7f)
            *p = ' ';
    }
}

int cli_fail(const struct cli *cli, estc_err err, const char *what)
{
    char detail[1024];
    cli_redact(estc_ctx_error_detail(cli->ctx), detail, sizeof(detail));
    fprintf(stderr, "estc: %s: %s%s%s%s%s\n", cli->cmd_name, what != NULL ? what : "",
            what != NULL ? ": " : "", estc_strerror(err), detail[0] != '\0' ? ": " : "", detail);
    return cli_exit_status(err);
}

int cli_failf(const struct cli *cli, int status, const char *fmt, ...)
{
    char msg[1024], shown[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cli_redact(msg, shown, sizeof(shown));
    fprintf(stderr, "estc: %s: %s\n", cli->cmd_name, shown);
    return status;
}

bool cli_is_address(estc_ctx *ctx, const char *s)
{
    char scheme[ESTC_SCHEME_MAX + 1];
    const struct estc_driver *drv;
    if (s[0] == '/' || s[0] == '.' || estc_address_scheme(s, scheme) != ESTC_OK)
        return false;
    estc_err err = estc_engine_find(ctx, s, &drv);
    estc_ctx_clear_error(ctx);
    return err == ESTC_OK;
}

int cli_write_pem(const struct cli *cli, const estc_buf *certs, size_t n, const char *path)
{
    BIO *mem = BIO_new(BIO_s_mem());
    if (mem == NULL)
        return cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
    int status = CLI_EXIT_OK;
    for (size_t i = 0; i < n && status == CLI_EXIT_OK; i++) {
        const unsigned char *p = certs[i].data;
        X509 *x = d2i_X509(NULL, &p, (long)certs[i].len);
        if (x == NULL || PEM_write_bio_X509(mem, x) != 1)
            status = cli_failf(cli, CLI_EXIT_FAILURE, "cannot encode certificate %zu as PEM", i);
        X509_free(x);
    }
    char *data = NULL;
    long len = BIO_get_mem_data(mem, &data);
    if (status == CLI_EXIT_OK) {
        if (path == NULL || strcmp(path, "-") == 0) {
            if (fwrite(data, 1, (size_t)len, stdout) != (size_t)len || fflush(stdout) != 0)
                status = cli_failf(cli, CLI_EXIT_FAILURE, "cannot write to stdout");
        } else {
            /* A reader never sees half a file: replaced all at once. */
            estc_err err =
                estc_file_write(cli->ctx, path, data, (size_t)len, 0644, ESTC_FILE_REPLACE);
            if (err != ESTC_OK)
                status = cli_fail(cli, err, "--out");
        }
    }
    BIO_free(mem);
    return status;
}

int cli_load_cert(const struct cli *cli, const char *src, X509 **out)
{
    X509 *x = NULL;
    if (cli_is_address(cli->ctx, src)) {
        estc_buf der = {0};
        estc_err err = estc_cert_load(cli->ctx, src, &der);
        if (err != ESTC_OK) {
            char what[512];
            cli_redact(src, what, sizeof(what));
            return cli_fail(cli, err, what);
        }
        const unsigned char *p = der.data;
        x = d2i_X509(NULL, &p, (long)der.len);
        estc_buf_free(&der);
        if (x == NULL)
            return cli_failf(cli, CLI_EXIT_FAILURE, "%s: not a DER certificate", src);
        *out = x;
        return CLI_EXIT_OK;
    }
    BIO *bio = BIO_new_file(src, "rb");
    if (bio == NULL)
        return cli_failf(cli, CLI_EXIT_FAILURE, "%s: %s", src, strerror(errno));
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (x == NULL) {
        (void)BIO_reset(bio);
        x = d2i_X509_bio(bio, NULL);
    }
    BIO_free(bio);
    if (x == NULL)
        return cli_failf(cli, CLI_EXIT_FAILURE, "%s: no PEM or DER certificate", src);
    *out = x;
    return CLI_EXIT_OK;
}

static void print_time(BIO *bio, const char *label, const ASN1_TIME *t)
{
    BIO_printf(bio, "%-12s ", label);
    ASN1_TIME_print(bio, t);
    BIO_printf(bio, "\n");
}

/* Whether the key at @key_src is @cert's key: compares SubjectPublicKeyInfo. */
static int key_matches(const struct cli *cli, X509 *cert, const char *key_src, bool *match)
{
    estc_buf spki = {0};
    estc_err err = estc_key_public(cli->ctx, key_src, &spki);
    if (err != ESTC_OK) {
        char what[512];
        cli_redact(key_src, what, sizeof(what));
        return cli_fail(cli, err, what);
    }
    unsigned char *mine = NULL;
    int len = i2d_PUBKEY(X509_get0_pubkey(cert), &mine);
    *match = len > 0 && (size_t)len == spki.len && memcmp(mine, spki.data, spki.len) == 0;
    OPENSSL_free(mine);
    estc_buf_free(&spki);
    return CLI_EXIT_OK;
}

int cli_print_status(const struct cli *cli, FILE *fp, X509 *cert, const char *cert_src,
                     const char *key_src)
{
    bool match = false;
    int status = CLI_EXIT_OK;
    if (key_src != NULL) {
        status = key_matches(cli, cert, key_src, &match);
        if (status != CLI_EXIT_OK)
            return status;
    }
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        return cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
    char shown[1100];
    cli_redact(cert_src, shown, sizeof(shown));
    BIO_printf(bio, "%-12s %s\n", "certificate", shown);
    BIO_printf(bio, "%-12s ", "subject");
    X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_ONELINE);
    BIO_printf(bio, "\n%-12s ", "issuer");
    X509_NAME_print_ex(bio, X509_get_issuer_name(cert), 0, XN_FLAG_ONELINE);
    BIO_printf(bio, "\n%-12s ", "serial");
    i2a_ASN1_INTEGER(bio, X509_get0_serialNumber(cert));
    BIO_printf(bio, "\n");
    print_time(bio, "not before", X509_get0_notBefore(cert));
    print_time(bio, "not after", X509_get0_notAfter(cert));

    GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (sans != NULL) {
        BIO_printf(bio, "%-12s ", "altnames");
        for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
            BIO_printf(bio, "%s", i > 0 ? ", " : "");
            GENERAL_NAME_print(bio, sk_GENERAL_NAME_value(sans, i));
        }
        BIO_printf(bio, "\n");
        GENERAL_NAMES_free(sans);
    }

    const char *state = "valid";
    int days = 0, secs = 0;
    if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0)
        state = "not yet valid";
    else if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0)
        state = "expired";
    if (ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(cert)) == 1 &&
        strcmp(state, "valid") == 0)
        BIO_printf(bio, "%-12s valid, %d days %d h left\n", "state", days, secs / 3600);
    else
        BIO_printf(bio, "%-12s %s\n", "state", state);
    if (key_src != NULL) {
        cli_redact(key_src, shown, sizeof(shown));
        BIO_printf(bio, "%-12s %s (%s)\n", "key", shown,
                   match ? "matches the certificate" : "does NOT match the certificate");
    }
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    if (fwrite(data, 1, (size_t)len, fp) != (size_t)len || fflush(fp) != 0)
        status = cli_failf(cli, CLI_EXIT_FAILURE, "cannot write the status");
    BIO_free(bio);
    if (status == CLI_EXIT_OK && key_src != NULL && !match)
        status = cli_failf(cli, CLI_EXIT_FAILURE, "the key is not the certificate's key");
    if (status == CLI_EXIT_OK && strcmp(state, "valid") != 0)
        status = cli_failf(cli, CLI_EXIT_FAILURE, "the certificate is %s", state);
    return status;
}
