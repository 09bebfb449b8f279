/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc — the OpenSSL 3 provider: engine-held keys as EVP_PKEY.
 *
 * The provider "estc" makes a key that lives in an engine usable by any
 * OpenSSL-based code (libssl's DTLS handshake, X509_REQ_sign_ctx(), the
 * openssl command) while the private key stays in its engine: it signs
 * only, and refuses every export of private key material. It offers
 *
 *   - STORE for every registered engine scheme except "file" (OpenSSL reads
 *     software PEM files itself): OSSL_STORE_open("mem:est-key") yields the
 *     key and, where the engine holds one at the same address, a certificate;
 *   - KEYMGMT for EC (P-256, P-384) and RSA, public part import/export only;
 *   - SIGNATURE for ECDSA and RSA (PKCS#1 v1.5, PSS): hashing is done in
 *     software, only the digest goes to the engine (estc_key_sign());
 *   - a DECODER for a PEM key reference, a PEM block whose body is the
 *     engine address:
 *
 *       -----BEGIN ESTC KEY REFERENCE-----
 *       <base64 of the address, for example "mem:est-key">
 *       -----END ESTC KEY REFERENCE-----
 *
 *     so that code that loads keys only from PEM files (libcoap's client,
 *     SSL_CTX_use_PrivateKey_file(), openssl -key FILE) can use engine keys.
 *
 * It is also built as a loadable module "estc" (see docs/provider.md); the
 * module creates its own estc_ctx with the built-in drivers.
 */
#ifndef ESTC_PROVIDER_H
#define ESTC_PROVIDER_H

#include <openssl/types.h>

#include <estc/engine.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The provider's name in OpenSSL ("-provider estc"). */
#define ESTC_PROVIDER_NAME "estc"
/* The PEM label of a key reference. */
#define ESTC_KEYREF_PEM_LABEL "ESTC KEY REFERENCE"

/* The provider loaded into one OSSL_LIB_CTX, with "default" beside it. */
typedef struct estc_provider estc_provider;

/**
 * estc_provider_load() - load the built-in provider into @libctx for @ctx.
 * @ctx: the library context whose drivers serve the keys; it must outlive
 *       the provider and every EVP_PKEY, OSSL_STORE_CTX or SSL_CTX that uses
 *       one of its keys.
 * @libctx: the OpenSSL library context, NULL for the default one.
 * @out: receives the handle; unchanged on failure.
 *
 * Loads OpenSSL's "default" provider first and then "estc", and makes
 * "default" preferred for every fetch without an explicit provider
 * (EVP_set_default_properties(@libctx, "?provider=default"), replacing
 * earlier default properties): libssl finds no EC groups otherwise, and
 * engine keys still reach the estc provider because OpenSSL fetches the
 * signature from the key's provider.
 *
 * The provider calls @ctx's drivers from whichever thread OpenSSL runs it
 * in, one call at a time; do not use @ctx from another thread meanwhile.
 *
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG (NULL @ctx or @out),
 * ESTC_ERR_EXISTS (the estc provider is loaded in @libctx already) or
 * ESTC_ERR_CRYPTO (OpenSSL could not load a provider; the detail of @ctx
 * has OpenSSL's reason).
 */
estc_err estc_provider_load(estc_ctx *ctx, OSSL_LIB_CTX *libctx, estc_provider **out);

/**
 * estc_provider_unload() - unload both providers loaded by
 * estc_provider_load(). Free the keys and contexts that use engine keys
 * first. Accepts NULL.
 */
void estc_provider_unload(estc_provider *prov);

/**
 * estc_keyref_pem() - the PEM key reference for @addr, into @pem (text,
 * not NUL-terminated).
 *
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG (NULL argument), ESTC_ERR_BAD_ADDRESS
 * (@addr is not a valid engine address) or ESTC_ERR_NOMEM.
 */
estc_err estc_keyref_pem(const char *addr, estc_buf *pem);

/**
 * estc_keyref_write() - write the PEM key reference for @addr to the file
 * @path, created with mode 0600 (the address may carry a PIN) and replaced
 * atomically with estc_file_write() (temporary file, fsync, rename, fsync of
 * the folder).
 * @ctx: receives the failure detail; may be NULL.
 *
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG, ESTC_ERR_BAD_ADDRESS, ESTC_ERR_NOMEM
 * or ESTC_ERR_IO (the file could not be written; @path is then unchanged).
 */
estc_err estc_keyref_write(estc_ctx *ctx, const char *path, const char *addr);

/**
 * estc_keyref_read() - the engine address held by the PEM key reference
 * in @pem (@len bytes), as a new string in *@addr (free() it).
 *
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG, ESTC_ERR_FORMAT (no key reference
 * block, or its body is not a valid address) or ESTC_ERR_NOMEM.
 */
estc_err estc_keyref_read(const uint8_t *pem, size_t len, char **addr);

#ifdef __cplusplus
}
#endif
#endif
