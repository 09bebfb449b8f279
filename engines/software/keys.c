/* SPDX-License-Identifier: Apache-2.0 */
/*
 * EVP_PKEY operations for the software drivers (OpenSSL 3 EVP only).
 */
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "../util.h"
#include "keys.h"

estc_err estc__sw_fail(estc_ctx *ctx, estc_err err, const char *addr, const char *what)
{
    /* The last error is this failure's; older ones in the queue are stale
     * (another library's, an earlier call's) and must not be reported. */
    unsigned long code = ERR_peek_last_error();
    char reason[160] = "no OpenSSL detail";
    if (code != 0)
        ERR_error_string_n(code, reason, sizeof(reason));
    ERR_clear_error();
    return estc_error(ctx, err, "%s: %s: %s", addr, what, reason);
}

estc_err estc__sw_generate(estc_key_type type, EVP_PKEY **out)
{
    EVP_PKEY *key = NULL;
    switch (type) {
    case ESTC_KEY_EC_P256:
        key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        break;
    case ESTC_KEY_EC_P384:
        key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
        break;
    case ESTC_KEY_RSA_2048:
        key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
        break;
    case ESTC_KEY_RSA_3072:
        key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)3072);
        break;
    default:
        return ESTC_ERR_UNSUPPORTED;
    }
    if (key == NULL)
        return ESTC_ERR_CRYPTO;
    *out = key;
    return ESTC_OK;
}

estc_err estc__sw_public(EVP_PKEY *key, estc_buf *spki)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(key, &der);
    if (n <= 0)
        return ESTC_ERR_CRYPTO;
    estc_err err = estc_buf_set(spki, der, (size_t)n);
    OPENSSL_free(der);
    return err;
}

estc_err estc__sw_from_pkcs8(const uint8_t *der, size_t len, EVP_PKEY **out)
{
    EVP_PKEY *key = NULL;
    if (estc__pkcs8_decode(der, len, &key) != ESTC_OK)
        return ESTC_ERR_FORMAT;
    /* Only the key types of the driver API. */
    estc_buf spki = {0};
    estc_key_type type;
    estc_err err = estc__sw_public(key, &spki);
    if (err == ESTC_OK)
        err = estc__spki_key_type(spki.data, spki.len, &type);
    estc_buf_free(&spki);
    if (err != ESTC_OK) {
        EVP_PKEY_free(key);
        return err;
    }
    *out = key;
    return ESTC_OK;
}

estc_err estc__sw_sign(EVP_PKEY *key, estc_sig_alg alg, estc_hash hash, const uint8_t *digest,
                       size_t len, estc_buf *sig)
{
    bool is_ec = EVP_PKEY_is_a(key, "EC");
    if (is_ec != (alg == ESTC_SIG_ECDSA))
        return ESTC_ERR_UNSUPPORTED;
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    EVP_MD *md = EVP_MD_fetch(NULL, estc__hash_name(hash), NULL);
    estc_err err = ESTC_ERR_CRYPTO;
    unsigned char *out = NULL;
    size_t out_len = 0;
    if (pctx == NULL || md == NULL || EVP_PKEY_sign_init(pctx) != 1 ||
        EVP_PKEY_CTX_set_signature_md(pctx, md) != 1)
        goto done;
    if (alg == ESTC_SIG_RSA_PKCS1 && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
        goto done;
    if (alg == ESTC_SIG_RSA_PSS &&
        (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
         EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) != 1 ||
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1))
        goto done;
    if (EVP_PKEY_sign(pctx, NULL, &out_len, digest, len) != 1)
        goto done;
    out = OPENSSL_malloc(out_len);
    if (out == NULL) {
        err = ESTC_ERR_NOMEM;
        goto done;
    }
    if (EVP_PKEY_sign(pctx, out, &out_len, digest, len) != 1)
        goto done;
    err = estc_buf_set(sig, out, out_len);
done:
    OPENSSL_free(out);
    EVP_MD_free(md);
    EVP_PKEY_CTX_free(pctx);
    return err;
}
