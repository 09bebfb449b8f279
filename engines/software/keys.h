/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Key operations on an OpenSSL EVP_PKEY, shared by the mem: and file:
 * drivers.
 */
#ifndef ESTC_SOFTWARE_KEYS_H
#define ESTC_SOFTWARE_KEYS_H

#include <openssl/evp.h>

#include <estc/engine.h>

/* A new key pair of @type; ESTC_ERR_UNSUPPORTED for an unknown type. */
estc_err estc__sw_generate(estc_key_type type, EVP_PKEY **out);
/* A key from PKCS#8 DER; ESTC_ERR_FORMAT when malformed, UNSUPPORTED for
 * other algorithms or sizes than the driver API's key types. */
estc_err estc__sw_from_pkcs8(const uint8_t *der, size_t len, EVP_PKEY **out);
estc_err estc__sw_public(EVP_PKEY *key, estc_buf *spki);
estc_err estc__sw_sign(EVP_PKEY *key, estc_sig_alg alg, estc_hash hash, const uint8_t *digest,
                       size_t len, estc_buf *sig);

/* Report helpers: the address and OpenSSL's first queued error. */
estc_err estc__sw_fail(estc_ctx *ctx, estc_err err, const char *addr, const char *what);

#endif
