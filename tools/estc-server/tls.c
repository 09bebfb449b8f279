/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DTLS details that libcoap 4.3.1 leaves to the application: sending the
 * whole server chain, asking for a client certificate without failing the
 * handshake (so unauthorized clients get a CoAP 4.01/4.03 rather than a
 * silent handshake failure), verifying the client against our own stores,
 * and the tls-unique value for the proof-of-possession check.
 */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* Accept whatever the client shows; the EST handlers decide per resource. */
static int accept_any_cb(int preverify_ok, X509_STORE_CTX *ctx)
{
    (void)preverify_ok;
    (void)ctx;
    return 1;
}

int srv_tls_setup_cb(void *tls_session, coap_dtls_pki_t *setup_data)
{
    SSL *ssl = tls_session;
    /* The CN callback's argument rides along in libcoap's copy of the setup. */
    struct srv *s = setup_data ? setup_data->cn_call_back_arg : NULL;

    if (ssl == NULL || s == NULL)
        return 0;
    /* libcoap 4.3.1 sends only the first certificate of the PEM file. */
    if (SSL_use_certificate_chain_file(ssl, s->server_cert_path) != 1) {
        srv_log_ssl_errors("server certificate chain");
        return 0;
    }
    SSL_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, accept_any_cb);
    return 1;
}

int srv_store_add_pem_file(X509_STORE *st, const char *path)
{
    BIO *b = BIO_new_file(path, "r");
    X509 *x;
    int n = 0;

    if (b == NULL)
        return -1;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (X509_STORE_add_cert(st, x) != 1) {
            unsigned long e = ERR_peek_last_error();
            if (ERR_GET_REASON(e) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
                X509_free(x);
                BIO_free(b);
                return -1;
            }
        }
        X509_free(x);
        n++;
    }
    ERR_clear_error();
    BIO_free(b);
    return n > 0 ? 0 : -1;
}

static SSL *session_ssl(coap_session_t *session)
{
    coap_tls_library_t lib;
    void *tls = coap_session_get_tls(session, &lib);
    if (tls == NULL || lib != COAP_TLS_LIBRARY_OPENSSL)
        return NULL;
    return tls;
}

X509 *srv_tls_peer_cert(coap_session_t *session)
{
    SSL *ssl = session_ssl(session);
    if (ssl == NULL)
        return NULL;
    return SSL_get1_peer_certificate(ssl);
}

int srv_tls_peer_verified(coap_session_t *session, X509_STORE *store)
{
    SSL *ssl = session_ssl(session);
    X509 *leaf;
    X509_STORE_CTX *ctx;
    STACK_OF(X509) * chain;
    int ok = 0;

    if (ssl == NULL)
        return 0;
    leaf = SSL_get1_peer_certificate(ssl);
    if (leaf == NULL)
        return 0;
    /* On the server side the peer chain does not include the leaf. */
    chain = SSL_get_peer_cert_chain(ssl);
    ctx = X509_STORE_CTX_new();
    if (ctx != NULL && X509_STORE_CTX_init(ctx, store, leaf, chain) == 1) {
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
        ok = X509_verify_cert(ctx) == 1;
        if (!ok)
            srv_log(SRV_LOG_DEBUG, "client certificate rejected: %s",
                    X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    }
    X509_STORE_CTX_free(ctx);
    X509_free(leaf);
    ERR_clear_error();
    return ok;
}

char *srv_tls_unique_b64(coap_session_t *session)
{
    SSL *ssl = session_ssl(session);
    unsigned char fin[EVP_MAX_MD_SIZE];
    size_t n;
    char *out;

    if (ssl == NULL)
        return NULL;
    /* RFC 5929: the first Finished of the latest handshake. */
    if (SSL_session_reused(ssl))
        n = SSL_get_finished(ssl, fin, sizeof(fin));
    else
        n = SSL_get_peer_finished(ssl, fin, sizeof(fin));
    if (n == 0 || n > sizeof(fin))
        return NULL;
    out = malloc(4 * ((n + 2) / 3) + 1);
    if (out == NULL)
        return NULL;
    EVP_EncodeBlock((unsigned char *)out, fin, (int)n);
    return out;
}

void srv_tls_client_id(coap_session_t *session, uint8_t id[32])
{
    X509 *peer = srv_tls_peer_cert(session);
    unsigned int len = 32;

    memset(id, 0, 32);
    if (peer != NULL) {
        X509_digest(peer, EVP_sha256(), id, &len);
        X509_free(peer);
        return;
    }
    {
        const coap_address_t *ra = coap_session_get_addr_remote(session);
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned int dl = 32;
        if (md != NULL && ra != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1) {
            /* Address without the port: a client that reconnects stays the same. */
            if (ra->addr.sa.sa_family == AF_INET)
                EVP_DigestUpdate(md, &ra->addr.sin.sin_addr, sizeof(ra->addr.sin.sin_addr));
            else if (ra->addr.sa.sa_family == AF_INET6)
                EVP_DigestUpdate(md, &ra->addr.sin6.sin6_addr, sizeof(ra->addr.sin6.sin6_addr));
            EVP_DigestFinal_ex(md, id, &dl);
        }
        EVP_MD_CTX_free(md);
    }
}
