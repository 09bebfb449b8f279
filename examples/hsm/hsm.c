/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Every credential in a PKCS#11 token: the enrolled key and certificate at
 * fixed objects, the CA certificates from /crts as trust objects named by
 * the application's own address generator, the state (addresses only, no
 * key bytes) in a file.
 *
 *   hsm-example STATE SERVER-URI SERVER-CA BOOT-CERT BOOT-KEY TOKEN MODULE PIN-FILE [once]
 *
 * The user PIN is read by the engine from PIN-FILE (pin-source): the state
 * file records the addresses as they are, so a pin-value would be stored
 * there, and on a command line other users can read it.
 */
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <estc/client.h>
#include <estc/persist.h>
#include <estc/schedule.h>

/* What the generator needs to build an address in the token. */
struct token {
    char prefix[512]; /* "pkcs11:token=T" */
    char query[1024]; /* "?pin-source=file:F&module-path=M" */
    char addr[2048];  /* the last answer; the library copies it at once */
};

/*
 * A CA certificate from /crts is stored as "ca-<CN>-<8 hex digits of its
 * SHA-256>": readable in the token's listing, stable for the same
 * certificate (so a repeated /crts finds it in place), distinct for two
 * certificates with the same name. Called for keys too (der NULL) at rekey.
 */
static const char *ca_address(void *arg, const void *der, size_t der_len)
{
    struct token *t = arg;
    if (der == NULL) {
        snprintf(t->addr, sizeof(t->addr), "%s;object=key-%08lx%s", t->prefix,
                 (unsigned long)random(), t->query);
        return t->addr;
    }
    unsigned char md[32];
    char cn[64] = "ca";
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)der_len);
    if (x == NULL || EVP_Digest(der, der_len, md, NULL, EVP_sha256(), NULL) != 1) {
        X509_free(x);
        return NULL; /* fails the operation */
    }
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
    X509_free(x);
    /* Only characters an address value may hold as they are. */
    for (char *c = cn; *c != '\0'; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')))
            *c = '-';
    }
    snprintf(t->addr, sizeof(t->addr), "%s;object=ca-%s-%02x%02x%02x%02x%s", t->prefix, cn, md[0],
             md[1], md[2], md[3], t->query);
    return t->addr;
}

static int fail(estc_ctx *ctx, const char *what, estc_err err)
{
    /* The detail names addresses with the PIN already redacted. */
    fprintf(stderr, "%s: %s: %s\n", what, estc_strerror(err), estc_ctx_error_detail(ctx));
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 9 && !(argc == 10 && strcmp(argv[9], "once") == 0)) {
        fprintf(stderr,
                "usage: %s STATE SERVER-URI SERVER-CA BOOT-CERT BOOT-KEY TOKEN MODULE PIN-FILE "
                "[once]\n",
                argv[0]);
        return 2;
    }
    static struct token tok;
    snprintf(tok.prefix, sizeof(tok.prefix), "pkcs11:token=%s", argv[6]);
    snprintf(tok.query, sizeof(tok.query), "?pin-source=file:%s&module-path=%s", argv[8], argv[7]);
    char key[2048], cert[2048], ca[2048];
    snprintf(key, sizeof(key), "%s;object=device-key%s", tok.prefix, tok.query);
    snprintf(cert, sizeof(cert), "%s;object=device-cert%s", tok.prefix, tok.query);
    snprintf(ca, sizeof(ca), "%s%s", tok.prefix, tok.query);
    srandom((unsigned)time(NULL));

    estc_ctx *ctx = NULL;
    estc_client *client = NULL;
    if (estc_ctx_new(&ctx) != ESTC_OK)
        return 1;
    int rc = 1;
    estc_err err = estc_generator_set(ctx, "pkcs11", ca_address, &tok);
    if (err == ESTC_OK)
        err = estc_client_new(ctx, &client);
    if (err != ESTC_OK) {
        rc = fail(ctx, "setup", err);
        goto out;
    }
    /* The seed's configuration: key, certificate and CA addresses. */
    if ((err = estc_client_set_server(client, argv[2])) != ESTC_OK ||
        (err = estc_client_add_trust_anchor(client, argv[3], true)) != ESTC_OK ||
        (err = estc_client_set_credentials(client, argv[4], argv[5])) != ESTC_OK ||
        (err = estc_client_set_enrolled(client, key, cert, ca)) != ESTC_OK ||
        (err = estc_client_set_subject(client, "/CN=hsm-example")) != ESTC_OK ||
        (err = estc_client_set_cacerts_policy(client, ESTC_CACERTS_EST, NULL, NULL)) != ESTC_OK) {
        rc = fail(ctx, "configure", err);
        goto out;
    }
    estc_state_stream stream;
    estc_state_stream_file(&stream, argv[1]);
    err = estc_client_restore(client, &stream);
    if (err != ESTC_OK && err != ESTC_ERR_NOT_FOUND) {
        rc = fail(ctx, "restore", err);
        goto out;
    }
    printf("%s\n", err == ESTC_OK ? "restored" : "no state yet: enrolling");
    estc_client_set_journal(client, &stream);

    bool once = argc == 10;
    for (int step = 0;; step++) {
        estc_tick_result what;
        err = estc_client_tick(client, &what);
        if (what != ESTC_TICK_NOTHING) {
            printf("%s\n", estc_tick_result_name(what));
            if (estc_client_is_ready_for_persistence(client))
                estc_client_persist(client, &stream);
        }
        int64_t when, now = estc_client_now(client);
        estc_client_next_deadline(client, &when);
        if (once && (when > now || err != ESTC_OK || step > 8))
            break;
        if (when > now) {
            struct timespec ts = {.tv_sec = when - now > 3600 ? 3600 : (time_t)(when - now)};
            nanosleep(&ts, NULL);
        }
    }
    if (err != ESTC_OK) {
        rc = fail(ctx, "tick", err);
        goto out;
    }
    for (size_t i = 0; i < estc_client_ca_count(client); i++) {
        const char *a = estc_client_ca_address(client, i);
        const char *obj = strstr(a, "object=");
        printf("CA certificate %zu: %.*s\n", i, obj != NULL ? (int)strcspn(obj, ";?") : 0,
               obj != NULL ? obj : "");
    }
    int64_t not_after = 0;
    if (estc_client_renewal_info(client, NULL, &not_after, NULL, NULL, NULL) == ESTC_OK &&
        not_after > estc_client_now(client)) {
        printf("enrolled: certificate at object=device-cert\n");
        rc = 0;
    }
out:
    estc_client_free(client);
    estc_ctx_free(ctx);
    return rc;
}
