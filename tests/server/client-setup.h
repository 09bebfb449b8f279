/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The libcoap client set-up shared by the server test clients
 * (pop-client, block1-client): an IPv4 server address, a context with
 * the response handler, and DTLS PKI that verifies the server against its CA
 * file, with or without a client certificate.
 */
#ifndef ESTC_TESTS_SERVER_CLIENT_SETUP_H
#define ESTC_TESTS_SERVER_CLIENT_SETUP_H

#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include <coap3/coap.h>

/*
 * Starts libcoap (errors only in its log) and returns a context for HOST
 * (dotted IPv4) and PORT in *dst, or NULL (host not IPv4, no memory).
 */
static inline coap_context_t *client_context(const char *host, const char *port,
                                             coap_address_t *dst, void *app_data,
                                             coap_response_handler_t on_response, int block_mode)
{
    coap_context_t *ctx;

    coap_startup();
    coap_set_log_level(LOG_ERR);
    coap_dtls_set_log_level(LOG_ERR);
    coap_address_init(dst);
    dst->addr.sin.sin_family = AF_INET;
    dst->addr.sin.sin_port = htons((uint16_t)atoi(port));
    dst->size = sizeof(dst->addr.sin);
    if (inet_pton(AF_INET, host, &dst->addr.sin.sin_addr) != 1)
        return NULL;
    ctx = coap_new_context(NULL);
    if (ctx == NULL)
        return NULL;
    coap_set_app_data(ctx, app_data);
    coap_context_set_block_mode(ctx, (uint8_t)block_mode);
    coap_register_response_handler(ctx, on_response);
    return ctx;
}

/* PEM PKI: the server must chain to ca_file; cert/key may be NULL (no client certificate). */
static inline void client_pki(coap_dtls_pki_t *pki, const char *ca_file, const char *cert,
                              const char *key)
{
    memset(pki, 0, sizeof(*pki));
    pki->version = COAP_DTLS_PKI_SETUP_VERSION;
    pki->verify_peer_cert = 1;
    pki->check_common_ca = 1;
    pki->pki_key.key_type = COAP_PKI_KEY_PEM;
    pki->pki_key.key.pem.ca_file = ca_file;
    pki->pki_key.key.pem.public_cert = cert;
    pki->pki_key.key.pem.private_key = key;
}

#endif
