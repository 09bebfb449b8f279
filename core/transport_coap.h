/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CoAP/DTLS transport with its credentials in memory: the EST client's
 * way in, so that no credential (and no key reference, which may carry a
 * PIN) is ever written to a file for libcoap to read.
 */
#ifndef ESTC_CORE_TRANSPORT_COAP_H
#define ESTC_CORE_TRANSPORT_COAP_H

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <estc/transport.h>

typedef struct estc__coap_creds {
    X509 *const *trust; /* the trust anchors for the server's chain (at least one) */
    size_t n_trust;
    X509 *cert;    /* the client certificate, or NULL: no client authentication */
    EVP_PKEY *key; /* its key (an engine key through the provider); with @cert only */
} estc__coap_creds;

/*
 * estc_transport_coap_new() with @creds instead of @cfg's trust, certificate
 * and key files (which must be NULL). The transport keeps references to the
 * objects of @creds; the caller keeps its own. Returns what
 * estc_transport_coap_new() does, ESTC_ERR_CRYPTO when the certificate and
 * key do not belong together.
 */
estc_err estc__transport_coap_new_creds(const estc_coap_config *cfg, const estc__coap_creds *creds,
                                        estc_transport **out);

#endif
