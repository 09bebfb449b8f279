/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc: errors, PEM output and the status report.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <estc/schedule.h>

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
    return estc_engine_known(ctx, s);
}

int cli_write_pem(const struct cli *cli, const estc_buf *certs, size_t n, const char *path)
{
    BIO *mem = BIO_new(BIO_s_mem());
    if (mem == NULL)
        return cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
    int status = CLI_EXIT_OK;
    for (size_t i = 0; i < n && status == CLI_EXIT_OK; i++) {
        /* The DER comes from the library, which checked it as a
         * certificate: written as it is, without decoding it again. */
        if (certs[i].len == 0 || certs[i].len > LONG_MAX ||
            PEM_write_bio(mem, PEM_STRING_X509, "", certs[i].data, (long)certs[i].len) <= 0)
            status = cli_failf(cli, CLI_EXIT_FAILURE, "cannot encode certificate %zu as PEM", i);
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

void cli_print_last_error(FILE *fp, estc_client *client)
{
    int64_t at = 0;
    estc_err err = ESTC_OK;
    const char *detail = NULL;
    char t[40], shown[1100];
    if (estc_client_last_error(client, &at, &err, &detail) != ESTC_OK)
        return;
    cli_redact(detail, shown, sizeof(shown));
    fprintf(fp, "%-12s %s: %s%s%s\n", "last error", cli_fmt_time(at, t, sizeof(t)),
            estc_strerror(err), shown[0] != '\0' ? ": " : "", shown);
}

const char *cli_fmt_time(int64_t t, char *buf, size_t size)
{
    if (t == ESTC_NEVER) {
        snprintf(buf, size, "never");
        return buf;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, size, "%lld", (long long)t);
    return buf;
}

/* An ASN1_TIME as seconds since the epoch; false when it cannot be read. */
static bool asn1_seconds(const ASN1_TIME *t, int64_t *out)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return false;
    time_t tt = timegm(&tm);
    if (tt == (time_t)-1)
        return false;
    *out = (int64_t)tt;
    return true;
}

/* The certificate time @t as ISO 8601 UTC ("2026-12-06T04:30:00Z"). */
static const char *cert_time(const ASN1_TIME *t, char *buf, size_t size)
{
    int64_t s = 0;
    if (!asn1_seconds(t, &s)) {
        snprintf(buf, size, "unreadable");
        return buf;
    }
    return cli_fmt_time(s, buf, size);
}

static void print_time(BIO *bio, const char *label, const ASN1_TIME *t)
{
    char buf[40];
    BIO_printf(bio, "%-12s %s\n", label, cert_time(t, buf, sizeof(buf)));
}

/* ---- JSON ---------------------------------------------------------------- */

/* Writes @s as a JSON string (NULL: null): quotes, backslashes and control
 * characters escaped; other bytes as they are. */
static void json_str(BIO *bio, const char *s)
{
    if (s == NULL) {
        BIO_printf(bio, "null");
        return;
    }
    BIO_printf(bio, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            BIO_printf(bio, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            BIO_printf(bio, "\\u%04x", *p);
        else
            BIO_printf(bio, "%c", *p);
    }
    BIO_printf(bio, "\"");
}

/* "name": "value" with the value redacted (engine addresses). */
static void json_addr(BIO *bio, const char *name, const char *addr, bool comma)
{
    char shown[1100];
    BIO_printf(bio, "%s\n  \"%s\": ", comma ? "," : "", name);
    if (addr == NULL) {
        json_str(bio, NULL);
        return;
    }
    cli_redact(addr, shown, sizeof(shown));
    json_str(bio, shown);
}

static void json_time(BIO *bio, const char *name, int64_t t)
{
    char buf[40];
    BIO_printf(bio, ",\n  \"%s\": ", name);
    if (t == ESTC_NEVER)
        json_str(bio, NULL);
    else
        json_str(bio, cli_fmt_time(t, buf, sizeof(buf)));
}

/* A BIO's text as a C string (NULL when out of memory); free() it. */
static char *bio_text(BIO *bio)
{
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    char *s = malloc(len > 0 ? (size_t)len + 1 : 1);
    if (s != NULL) {
        if (len > 0)
            memcpy(s, data, (size_t)len);
        s[len > 0 ? len : 0] = '\0';
    }
    return s;
}

/* X509_NAME_print_ex(XN_FLAG_ONELINE) as a string; free() it. */
static char *name_text(const X509_NAME *name)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *s = NULL;
    if (b != NULL && X509_NAME_print_ex(b, name, 0, XN_FLAG_ONELINE) >= 0)
        s = bio_text(b);
    BIO_free(b);
    return s;
}

static const char *cert_state(X509 *cert)
{
    if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0)
        return "not yet valid";
    if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0)
        return "expired";
    return "valid";
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

/* The start of both status forms: whether the key at @key_src (if any) is
 * @cert's (if any), and the memory BIO the report is written into. */
static int status_begin(const struct cli *cli, X509 *cert, const char *key_src, bool *match,
                        BIO **bio)
{
    *match = false;
    if (cert != NULL && key_src != NULL) {
        int status = key_matches(cli, cert, key_src, match);
        if (status != CLI_EXIT_OK)
            return status;
    }
    *bio = BIO_new(BIO_s_mem());
    if (*bio == NULL)
        return cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
    return CLI_EXIT_OK;
}

/* The end of both status forms: the report in @bio written to @fp (unless
 * @status already failed), then the verdict: exit 1 without a certificate,
 * with a key that is not the certificate's, or in a @state not "valid". */
static int status_end(const struct cli *cli, FILE *fp, BIO *bio, int status, X509 *cert,
                      const char *key_src, bool match, const char *state)
{
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    if (status == CLI_EXIT_OK &&
        (fwrite(data, 1, (size_t)len, fp) != (size_t)len || fflush(fp) != 0))
        status = cli_failf(cli, CLI_EXIT_FAILURE, "cannot write the status");
    BIO_free(bio);
    if (status == CLI_EXIT_OK && cert == NULL)
        status = cli_failf(cli, CLI_EXIT_FAILURE, "no certificate is held");
    if (status == CLI_EXIT_OK && key_src != NULL && !match)
        status = cli_failf(cli, CLI_EXIT_FAILURE, "the key is not the certificate's key");
    if (status == CLI_EXIT_OK && strcmp(state, "valid") != 0)
        status = cli_failf(cli, CLI_EXIT_FAILURE, "the certificate is %s", state);
    return status;
}

int cli_print_status(const struct cli *cli, FILE *fp, X509 *cert, const char *cert_src,
                     const char *key_src)
{
    bool match = false;
    BIO *bio = NULL;
    int status = status_begin(cli, cert, key_src, &match, &bio);
    if (status != CLI_EXIT_OK)
        return status;
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

    const char *state = cert_state(cert);
    int days = 0, secs = 0;
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
    return status_end(cli, fp, bio, status, cert, key_src, match, state);
}

int cli_print_status_json(const struct cli *cli, FILE *fp, X509 *cert, const char *cert_src,
                          const char *key_src, estc_client *client, const char *state_file)
{
    bool match = false;
    BIO *bio = NULL;
    int status = status_begin(cli, cert, key_src, &match, &bio);
    if (status != CLI_EXIT_OK)
        return status;
    BIO_printf(bio, "{");
    bool comma = false;
    if (state_file != NULL) {
        BIO_printf(bio, "\n  \"stateFile\": ");
        json_str(bio, state_file);
        comma = true;
    }
    json_addr(bio, "certificate", cert_src, comma);
    json_addr(bio, "key", key_src, true);
    const char *state = cert != NULL ? cert_state(cert) : "none";
    if (cert != NULL) {
        char *subject = name_text(X509_get_subject_name(cert));
        char *issuer = name_text(X509_get_issuer_name(cert));
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
        char *serial = bn != NULL ? BN_bn2hex(bn) : NULL;
        if (subject == NULL || issuer == NULL || serial == NULL)
            status = cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
        BIO_printf(bio, ",\n  \"subject\": ");
        json_str(bio, subject);
        BIO_printf(bio, ",\n  \"issuer\": ");
        json_str(bio, issuer);
        BIO_printf(bio, ",\n  \"serial\": ");
        json_str(bio, serial);
        free(subject);
        free(issuer);
        OPENSSL_free(serial);
        BN_free(bn);
        int64_t nb = 0, na = 0;
        bool have_nb = asn1_seconds(X509_get0_notBefore(cert), &nb);
        bool have_na = asn1_seconds(X509_get0_notAfter(cert), &na);
        if (!have_nb || !have_na)
            status = cli_failf(cli, CLI_EXIT_FAILURE, "the certificate's validity is unreadable");
        json_time(bio, "notBefore", have_nb ? nb : ESTC_NEVER);
        json_time(bio, "notAfter", have_na ? na : ESTC_NEVER);
        GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
        BIO_printf(bio, ",\n  \"altNames\": [");
        for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans); i++) {
            BIO *b = BIO_new(BIO_s_mem());
            char *text = NULL;
            if (b != NULL && GENERAL_NAME_print(b, sk_GENERAL_NAME_value(sans, i)) == 1)
                text = bio_text(b);
            BIO_free(b);
            if (text == NULL)
                status = cli_failf(cli, CLI_EXIT_FAILURE, "out of memory");
            BIO_printf(bio, "%s", i > 0 ? ", " : "");
            json_str(bio, text);
            free(text);
        }
        BIO_printf(bio, "]");
        GENERAL_NAMES_free(sans);
        if (key_src != NULL)
            BIO_printf(bio, ",\n  \"keyMatches\": %s", match ? "true" : "false");
    }
    BIO_printf(bio, ",\n  \"state\": ");
    json_str(bio, state);
    if (client != NULL) {
        int64_t prov = 0, renewal = 0, next = ESTC_NEVER;
        unsigned failures = 0;
        if (cert != NULL &&
            estc_client_renewal_info(client, NULL, NULL, &prov, &renewal, &failures) == ESTC_OK) {
            json_time(bio, "provisioned", prov);
            json_time(bio, "renewal", renewal);
            BIO_printf(bio, ",\n  \"failures\": %u", failures);
        }
        if (estc_client_next_deadline(client, &next) == ESTC_OK)
            json_time(bio, "nextDeadline", next);
        int64_t le_at = 0;
        estc_err le = ESTC_OK;
        const char *le_detail = NULL;
        BIO_printf(bio, ",\n  \"lastError\": ");
        if (estc_client_last_error(client, &le_at, &le, &le_detail) == ESTC_OK) {
            char buf[40], shown[1100];
            cli_redact(le_detail, shown, sizeof(shown));
            BIO_printf(bio, "{\"time\": ");
            json_str(bio, cli_fmt_time(le_at, buf, sizeof(buf)));
            BIO_printf(bio, ", \"error\": ");
            json_str(bio, estc_err_name(le));
            BIO_printf(bio, ", \"message\": ");
            json_str(bio, estc_strerror(le));
            BIO_printf(bio, ", \"detail\": ");
            json_str(bio, shown);
            BIO_printf(bio, "}");
        } else {
            json_str(bio, NULL);
        }
        size_t n = estc_client_ca_count(client);
        BIO_printf(bio, ",\n  \"trustStore\": [");
        for (size_t i = 0; i < n; i++) {
            char shown[1100];
            cli_redact(estc_client_ca_address(client, i), shown, sizeof(shown));
            BIO_printf(bio, "%s", i > 0 ? ", " : "");
            json_str(bio, shown);
        }
        BIO_printf(bio, "]");
    }
    BIO_printf(bio, "\n}\n");
    return status_end(cli, fp, bio, status, cert, key_src, match, state);
}
