/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A minimal EST-coaps client for the proof-of-possession test: coap-client
 * cannot put the session's tls-unique into a CSR, so this program does, with
 * libcoap and OpenSSL.
 *
 *   pop-client HOST PORT CA_FILE CERT KEY
 *
 * Session 1: GET /est/crts (completes the handshake), then POST /est/sen with
 * a CSR whose challengePassword is base64(tls-unique) of session 1: must be
 * 2.04 with a certificate for the CSR key. Session 2: the same CSR (bound to
 * session 1) must be refused with 4.00. Exit 0 when both hold.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "client-setup.h"

struct result {
    int done;
    coap_pdu_code_t code;
    uint8_t body[4096];
    size_t len;
};

static coap_response_t on_response(coap_session_t *session, const coap_pdu_t *sent,
                                   const coap_pdu_t *received, const coap_mid_t mid)
{
    struct result *r = coap_get_app_data(coap_session_get_context(session));
    const uint8_t *data;
    size_t len, offset, total;
    (void)sent;
    (void)mid;

    r->code = coap_pdu_get_code(received);
    r->len = 0;
    if (coap_get_data_large(received, &len, &data, &offset, &total) && len <= sizeof(r->body)) {
        memcpy(r->body, data, len);
        r->len = len;
    }
    r->done = 1;
    return COAP_RESPONSE_OK;
}

/* Sends one request and waits for the answer; returns the code or 0. */
static coap_pdu_code_t request(coap_context_t *ctx, coap_session_t *s, coap_pdu_code_t method,
                               const char *path, const uint8_t *body, size_t len)
{
    struct result *r = coap_get_app_data(ctx);
    coap_pdu_t *pdu = coap_new_pdu(COAP_MESSAGE_CON, method, s);
    uint8_t tok[8], buf[4];
    size_t toklen;
    int waited;

    if (pdu == NULL)
        return 0;
    coap_session_new_token(s, &toklen, tok);
    coap_add_token(pdu, toklen, tok);
    coap_add_option(pdu, COAP_OPTION_URI_PATH, 3, (const uint8_t *)"est");
    coap_add_option(pdu, COAP_OPTION_URI_PATH, strlen(path), (const uint8_t *)path);
    if (body != NULL) {
        coap_add_option(pdu, COAP_OPTION_CONTENT_FORMAT,
                        coap_encode_var_safe(buf, sizeof(buf), 286), buf);
        coap_add_option(pdu, COAP_OPTION_ACCEPT, coap_encode_var_safe(buf, sizeof(buf), 287), buf);
        coap_add_data(pdu, len, body);
    }
    r->done = 0;
    if (coap_send(s, pdu) == COAP_INVALID_MID)
        return 0;
    for (waited = 0; !r->done && waited < 20000; waited += 100)
        coap_io_process(ctx, 100);
    return r->done ? r->code : 0;
}

static char *tls_unique_b64(coap_session_t *s)
{
    coap_tls_library_t lib;
    SSL *ssl = coap_session_get_tls(s, &lib);
    unsigned char fin[EVP_MAX_MD_SIZE];
    size_t n;
    char *out;

    if (ssl == NULL || lib != COAP_TLS_LIBRARY_OPENSSL)
        return NULL;
    /* The client's own Finished is the first one of a full handshake. */
    n = SSL_session_reused(ssl) ? SSL_get_peer_finished(ssl, fin, sizeof(fin))
                                : SSL_get_finished(ssl, fin, sizeof(fin));
    if (n == 0 || n > sizeof(fin))
        return NULL;
    out = malloc(4 * ((n + 2) / 3) + 1);
    if (out != NULL)
        EVP_EncodeBlock((unsigned char *)out, fin, (int)n);
    return out;
}

static int make_csr(EVP_PKEY *key, const char *password, uint8_t **der, int *len)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    int ok = req != NULL && name != NULL && X509_REQ_set_version(req, 0) &&
             X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                        (const unsigned char *)"pop-device", -1, -1, 0) &&
             X509_REQ_set_subject_name(req, name) && X509_REQ_set_pubkey(req, key) &&
             X509_REQ_add1_attr_by_NID(req, NID_pkcs9_challengePassword, MBSTRING_ASC,
                                       (const unsigned char *)password, -1) &&
             X509_REQ_sign(req, key, EVP_sha256()) > 0;
    *der = NULL;
    if (ok)
        *len = i2d_X509_REQ(req, der);
    X509_NAME_free(name);
    X509_REQ_free(req);
    return ok && *len > 0 ? 0 : -1;
}

static coap_session_t *open_session(coap_context_t *ctx, const coap_address_t *dst,
                                    coap_dtls_pki_t *pki)
{
    return coap_new_client_session_pki(ctx, NULL, dst, COAP_PROTO_DTLS, pki);
}

int main(int argc, char **argv)
{
    coap_context_t *ctx;
    coap_session_t *s1, *s2;
    coap_address_t dst;
    coap_dtls_pki_t pki;
    struct result *r = calloc(1, sizeof(*r));
    EVP_PKEY *key = NULL;
    uint8_t *csr = NULL;
    int csr_len = 0, rc = 1;
    char *pw = NULL;
    coap_pdu_code_t code;

    if (argc != 6 || r == NULL) {
        fprintf(stderr, "usage: pop-client HOST PORT CA_FILE CERT KEY\n");
        return 2;
    }
    ctx = client_context(argv[1], argv[2], &dst, r, on_response,
                         COAP_BLOCK_USE_LIBCOAP | COAP_BLOCK_SINGLE_BODY);
    if (ctx == NULL)
        return 2;
    client_pki(&pki, argv[3], argv[4], argv[5]);

    s1 = open_session(ctx, &dst, &pki);
    code = s1 ? request(ctx, s1, COAP_REQUEST_CODE_GET, "crts", NULL, 0) : 0;
    if (code != COAP_RESPONSE_CODE_CONTENT) {
        fprintf(stderr, "FAIL: crts on session 1: %d\n", (int)code);
        goto out;
    }
    pw = tls_unique_b64(s1);
    key = EVP_EC_gen("P-256");
    if (pw == NULL || key == NULL || make_csr(key, pw, &csr, &csr_len) != 0) {
        fprintf(stderr, "FAIL: cannot make the CSR\n");
        goto out;
    }
    code = request(ctx, s1, COAP_REQUEST_CODE_POST, "sen", csr, (size_t)csr_len);
    if (code != COAP_RESPONSE_CODE_CHANGED) {
        fprintf(stderr, "FAIL: sen with this session's tls-unique: %d.%02d\n", code >> 5,
                code & 31);
        goto out;
    }
    {
        const unsigned char *p = r->body;
        X509 *cert = d2i_X509(NULL, &p, (long)r->len);
        int same = cert != NULL && EVP_PKEY_eq(X509_get0_pubkey(cert), key) == 1;
        X509_free(cert);
        if (!same) {
            fprintf(stderr, "FAIL: the certificate does not hold the CSR key\n");
            goto out;
        }
    }
    printf("ok   - sen with base64(tls-unique) as challengePassword -> 2.04\n");

    s2 = open_session(ctx, &dst, &pki);
    code = s2 ? request(ctx, s2, COAP_REQUEST_CODE_POST, "sen", csr, (size_t)csr_len) : 0;
    if (code != COAP_RESPONSE_CODE_BAD_REQUEST) {
        fprintf(stderr, "FAIL: the CSR of session 1 on session 2: %d.%02d, wanted 4.00\n",
                code >> 5, code & 31);
        goto out;
    }
    printf("ok   - the same CSR on another session -> 4.00\n");
    rc = 0;
out:
    OPENSSL_free(csr);
    free(pw);
    EVP_PKEY_free(key);
    coap_free_context(ctx);
    coap_cleanup();
    free(r);
    return rc;
}
