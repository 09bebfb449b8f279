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

/*
 * The server chain of @t's established session (as the server sent it in
 * the handshake) verified again, without the network, against the anchors
 * @trust (@n_trust of them), with the server identity check; on success @t
 * verifies every later session against these anchors. RFC 7030 §4.1.3: an
 * implicit anchor is replaced by the /crts answer only once the server
 * verifies against it. Returns ESTC_OK, ESTC_ERR_VALIDATION (the chain or
 * identity does not verify: the reason in @detail), ESTC_ERR_STATE (no
 * established session, or a transport with file credentials),
 * ESTC_ERR_INVALID_ARG (@t is not a CoAP transport, no anchor),
 * ESTC_ERR_NOMEM, ESTC_ERR_CRYPTO (an anchor cannot be used).
 */
estc_err estc__transport_coap_recheck(estc_transport *t, X509 *const *trust, size_t n_trust,
                                      char *detail, size_t detail_len);

/* The implementation behind @t when @t was made with @ops, else NULL. */
void *estc__transport_impl(estc_transport *t, const estc_transport_ops *ops);

#endif
