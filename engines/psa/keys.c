/* SPDX-License-Identifier: Apache-2.0 */
/*
 * psa: keys. Persistent PSA keys that sign and never leave the engine:
 * usage SIGN_HASH | VERIFY_HASH only, never EXPORT or COPY.
 *
 * mbed TLS keeps persistent keys and ITS entries in one namespace of 64-bit
 * uids (a key's uid is its key id), as files named after the uid in the
 * process's current folder. The driver never changes that folder; the caller
 * runs it in a private (0700) one.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/encoder.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "psa_internal.h"

/*
 * mbed TLS's file backend creates entries with the process umask (often
 * 0644); a key file holds the private key, so narrow it to 0600. The name is
 * the backend's "%08x%08x.psa_its"; other backends have no such file.
 */
static void protect_key_file(estc_ctx *ctx, const char *addr, uint64_t uid)
{
    char name[64];
    snprintf(name, sizeof(name), "%08lx%08lx.psa_its", (unsigned long)(uid >> 32),
             (unsigned long)(uid & 0xffffffffu));
    if (chmod(name, S_IRUSR | S_IWUSR) != 0 && errno != ENOENT)
        estc_log(ctx, ESTC_LOG_WARNING, "%s: chmod 0600 of the key file: %s", addr,
                 strerror(errno));
}

static psa_algorithm_t hash_alg(estc_hash hash)
{
    switch (hash) {
    case ESTC_HASH_SHA256:
        return PSA_ALG_SHA_256;
    case ESTC_HASH_SHA384:
        return PSA_ALG_SHA_384;
    case ESTC_HASH_SHA512:
        return PSA_ALG_SHA_512;
    }
    return 0;
}

/* Attributes of a new persistent signing key of @type (never exportable). */
static bool key_attributes(estc_key_type type, mbedtls_svc_key_id_t id, psa_key_attributes_t *a)
{
    switch (type) {
    case ESTC_KEY_EC_P256:
    case ESTC_KEY_EC_P384:
        psa_set_key_type(a, PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_SECP_R1));
        psa_set_key_bits(a, type == ESTC_KEY_EC_P256 ? 256 : 384);
        psa_set_key_algorithm(a, PSA_ALG_ECDSA(PSA_ALG_ANY_HASH));
        break;
    case ESTC_KEY_RSA_2048:
    case ESTC_KEY_RSA_3072:
        psa_set_key_type(a, PSA_KEY_TYPE_RSA_KEY_PAIR);
        psa_set_key_bits(a, type == ESTC_KEY_RSA_2048 ? 2048 : 3072);
        psa_set_key_algorithm(a, PSA_ALG_RSA_PKCS1V15_SIGN(PSA_ALG_ANY_HASH));
        /* The second permitted algorithm of mbed TLS: the same key signs PSS. */
        psa_set_key_enrollment_algorithm(a, PSA_ALG_RSA_PSS(PSA_ALG_ANY_HASH));
        break;
    default:
        return false;
    }
    psa_set_key_id(a, id);
    psa_set_key_lifetime(a, PSA_KEY_LIFETIME_PERSISTENT);
    psa_set_key_usage_flags(a, PSA_KEY_USAGE_SIGN_HASH | PSA_KEY_USAGE_VERIFY_HASH);
    return true;
}

psa_status_t psa__key_probe(mbedtls_svc_key_id_t id)
{
    psa_key_attributes_t a = PSA_KEY_ATTRIBUTES_INIT;
    psa_status_t s = psa_get_key_attributes(id, &a);
    psa_reset_key_attributes(&a);
    return s;
}

/* The key type of an existing key, as the driver API names it. */
static estc_err key_kind(estc_ctx *ctx, const char *addr, mbedtls_svc_key_id_t id,
                         estc_key_type *type)
{
    psa_key_attributes_t a = PSA_KEY_ATTRIBUTES_INIT;
    psa_status_t s = psa_get_key_attributes(id, &a);
    if (s != PSA_SUCCESS)
        return psa__fail(ctx, addr, "psa_get_key_attributes", s);
    psa_key_type_t t = psa_get_key_type(&a);
    size_t bits = psa_get_key_bits(&a);
    psa_reset_key_attributes(&a);
    if (t == PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_SECP_R1) && bits == 256)
        *type = ESTC_KEY_EC_P256;
    else if (t == PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_SECP_R1) && bits == 384)
        *type = ESTC_KEY_EC_P384;
    else if (t == PSA_KEY_TYPE_RSA_KEY_PAIR && bits == 2048)
        *type = ESTC_KEY_RSA_2048;
    else if (t == PSA_KEY_TYPE_RSA_KEY_PAIR && bits == 3072)
        *type = ESTC_KEY_RSA_3072;
    else
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: key type 0x%04x of %zu bits", addr,
                          (unsigned)t, bits);
    return ESTC_OK;
}

/* SubjectPublicKeyInfo of a PKCS#1 RSAPublicKey (what PSA exports for RSA). */
static estc_err rsa_spki(estc_ctx *ctx, const char *addr, const uint8_t *der, size_t len,
                         estc_buf *spki)
{
    const unsigned char *p = der;
    EVP_PKEY *pk = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, (long)len);
    if (pk == NULL || p != der + len) {
        EVP_PKEY_free(pk);
        return estc_error(ctx, ESTC_ERR_FORMAT, "%s: unreadable RSA public key", addr);
    }
    unsigned char *out = NULL;
    int n = i2d_PUBKEY(pk, &out);
    EVP_PKEY_free(pk);
    if (n <= 0)
        return estc_error(ctx, ESTC_ERR_CRYPTO, "%s: i2d_PUBKEY failed", addr);
    estc_err err = estc_buf_set(spki, out, (size_t)n);
    OPENSSL_free(out);
    return err;
}

/* Records why @pk, which estc__pkey_key_type() refused, cannot be imported. */
static estc_err refuse_key(estc_ctx *ctx, const char *addr, const EVP_PKEY *pk)
{
    if (EVP_PKEY_is_a(pk, "EC")) {
        char group[64];
        if (!EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                            NULL))
            return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: EC key without a named curve", addr);
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: curve %s", addr, group);
    }
    if (EVP_PKEY_is_a(pk, "RSA"))
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: RSA key of %d bits", addr,
                          EVP_PKEY_get_bits(pk));
    const char *name = EVP_PKEY_get0_type_name(pk);
    return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: key algorithm %s", addr,
                      name != NULL ? name : "?");
}

/* The private value of an EC key, big-endian and as long as the field. */
static estc_err ec_material(estc_ctx *ctx, const char *addr, EVP_PKEY *pk, estc_key_type type,
                            uint8_t **out, size_t *out_len)
{
    size_t flen = estc__ec_field_len(type);
    BIGNUM *d = NULL;
    if (!EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_PRIV_KEY, &d))
        return estc_error(ctx, ESTC_ERR_FORMAT, "%s: EC key without a private part", addr);
    uint8_t *buf = malloc(flen);
    if (buf == NULL) {
        BN_clear_free(d);
        return estc_error(ctx, ESTC_ERR_NOMEM, "%s: out of memory", addr);
    }
    int n = BN_bn2binpad(d, buf, (int)flen);
    BN_clear_free(d);
    if (n != (int)flen) {
        OPENSSL_cleanse(buf, flen);
        free(buf);
        return estc_error(ctx, ESTC_ERR_FORMAT, "%s: EC private value out of range", addr);
    }
    *out = buf;
    *out_len = flen;
    return ESTC_OK;
}

/* An RSA key pair as PKCS#1 RSAPrivateKey, the form PSA imports. */
static estc_err rsa_material(estc_ctx *ctx, const char *addr, EVP_PKEY *pk, uint8_t **out,
                             size_t *out_len)
{
    OSSL_ENCODER_CTX *ec =
        OSSL_ENCODER_CTX_new_for_pkey(pk, EVP_PKEY_KEYPAIR, "DER", "type-specific", NULL);
    unsigned char *der = NULL;
    size_t der_len = 0;
    bool ok = ec != NULL && OSSL_ENCODER_to_data(ec, &der, &der_len) == 1;
    OSSL_ENCODER_CTX_free(ec);
    if (!ok)
        return estc_error(ctx, ESTC_ERR_CRYPTO, "%s: cannot encode the RSA key", addr);
    uint8_t *buf = malloc(der_len);
    if (buf == NULL) {
        OPENSSL_clear_free(der, der_len);
        return estc_error(ctx, ESTC_ERR_NOMEM, "%s: out of memory", addr);
    }
    memcpy(buf, der, der_len);
    OPENSSL_clear_free(der, der_len);
    *out = buf;
    *out_len = der_len;
    return ESTC_OK;
}

/* The private key of @pk in PSA's import format, into @out (wipe it after),
 * and the attributes of its type into @a. */
static estc_err import_material(estc_ctx *ctx, const char *addr, EVP_PKEY *pk,
                                psa_key_attributes_t *a, uint8_t **out, size_t *out_len)
{
    estc_key_type type;
    if (estc__pkey_key_type(pk, &type) != ESTC_OK)
        return refuse_key(ctx, addr, pk);
    estc_err err = estc__ec_field_len(type) != 0 ? ec_material(ctx, addr, pk, type, out, out_len)
                                                 : rsa_material(ctx, addr, pk, out, out_len);
    if (err == ESTC_OK)
        key_attributes(type, psa_get_key_id(a), a);
    return err;
}

estc_err psa__key_generate(estc_ctx *ctx, void *state, const estc_address *addr, estc_key_type type)
{
    struct psa_target t;
    estc_err err = psa__begin(ctx, state, addr, PSA_FORM_KEY, &t);
    if (err != ESTC_OK)
        return err;
    psa_key_attributes_t a = PSA_KEY_ATTRIBUTES_INIT;
    if (!key_attributes(type, t.key_id, &a))
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: key type %d", t.addr, (int)type);
    mbedtls_svc_key_id_t made;
    psa_status_t s = psa_generate_key(&a, &made);
    psa_reset_key_attributes(&a);
    if (s != PSA_SUCCESS)
        return psa__fail(ctx, t.addr, "psa_generate_key", s);
    protect_key_file(ctx, t.addr, psa__key_uid(t.key_id));
    return ESTC_OK;
}

estc_err psa__key_import(estc_ctx *ctx, void *state, const estc_address *addr, const uint8_t *pkcs8,
                         size_t pkcs8_len)
{
    struct psa_target t;
    estc_err err = psa__begin(ctx, state, addr, PSA_FORM_KEY, &t);
    if (err != ESTC_OK)
        return err;
    if (pkcs8 == NULL || pkcs8_len == 0 || pkcs8_len > 65536)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: no key to import", t.addr);
    EVP_PKEY *pk = NULL;
    if (estc__pkcs8_decode(pkcs8, pkcs8_len, &pk) != ESTC_OK)
        return estc_error(ctx, ESTC_ERR_FORMAT, "%s: not one DER PKCS#8 private key", t.addr);

    psa_key_attributes_t a = PSA_KEY_ATTRIBUTES_INIT;
    psa_set_key_id(&a, t.key_id);
    uint8_t *material = NULL;
    size_t material_len = 0;
    err = import_material(ctx, t.addr, pk, &a, &material, &material_len);
    EVP_PKEY_free(pk);
    if (err != ESTC_OK) {
        psa_reset_key_attributes(&a);
        return err;
    }
    mbedtls_svc_key_id_t made;
    psa_status_t s = psa_import_key(&a, material, material_len, &made);
    psa_reset_key_attributes(&a);
    OPENSSL_cleanse(material, material_len);
    free(material);
    if (s != PSA_SUCCESS)
        return psa__fail(ctx, t.addr, "psa_import_key", s);
    protect_key_file(ctx, t.addr, psa__key_uid(t.key_id));
    return ESTC_OK;
}

estc_err psa__key_public(estc_ctx *ctx, void *state, const estc_address *addr, estc_buf *spki)
{
    struct psa_target t;
    estc_key_type type;
    estc_err err = psa__begin(ctx, state, addr, PSA_FORM_KEY, &t);
    if (err == ESTC_OK)
        err = key_kind(ctx, t.addr, t.key_id, &type);
    if (err != ESTC_OK)
        return err;
    uint8_t buf[PSA_EXPORT_PUBLIC_KEY_MAX_SIZE];
    size_t n = 0;
    psa_status_t s = psa_export_public_key(t.key_id, buf, sizeof(buf), &n);
    if (s != PSA_SUCCESS)
        return psa__fail(ctx, t.addr, "psa_export_public_key", s);
    if (estc__ec_field_len(type) != 0) {
        err = estc__spki_from_ec_point(type, buf, n, spki);
        if (err != ESTC_OK)
            return estc_error(ctx, err, "%s: exported EC point unusable", t.addr);
        return ESTC_OK;
    }
    return rsa_spki(ctx, t.addr, buf, n, spki);
}

estc_err psa__key_sign(estc_ctx *ctx, void *state, const estc_address *addr, estc_sig_alg alg,
                       estc_hash hash, const uint8_t *digest, size_t digest_len, estc_buf *sig)
{
    struct psa_target t;
    estc_key_type type;
    estc_err err = psa__begin(ctx, state, addr, PSA_FORM_KEY, &t);
    if (err != ESTC_OK)
        return err;
    psa_algorithm_t h = hash_alg(hash);
    if (h == 0 || digest == NULL || digest_len != estc__hash_len(hash))
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: digest does not match hash %d", t.addr,
                          (int)hash);
    err = key_kind(ctx, t.addr, t.key_id, &type);
    if (err != ESTC_OK)
        return err;
    bool ec = estc__ec_field_len(type) != 0;
    psa_algorithm_t palg;
    if (ec && alg == ESTC_SIG_ECDSA)
        palg = PSA_ALG_ECDSA(h);
    else if (!ec && alg == ESTC_SIG_RSA_PKCS1)
        palg = PSA_ALG_RSA_PKCS1V15_SIGN(h);
    else if (!ec && alg == ESTC_SIG_RSA_PSS)
        palg = PSA_ALG_RSA_PSS(h);
    else
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: signature algorithm %d with this key",
                          t.addr, (int)alg);
    uint8_t out[PSA_SIGNATURE_MAX_SIZE];
    size_t n = 0;
    psa_status_t s = psa_sign_hash(t.key_id, palg, digest, digest_len, out, sizeof(out), &n);
    if (s != PSA_SUCCESS)
        return psa__fail(ctx, t.addr, "psa_sign_hash", s);
    if (ec) {
        err = estc__ecdsa_raw_to_der(out, n, sig);
        if (err != ESTC_OK)
            return estc_error(ctx, err, "%s: raw ECDSA signature unusable", t.addr);
        return ESTC_OK;
    }
    return estc_buf_set(sig, out, n);
}

estc_err psa__key_remove(estc_ctx *ctx, void *state, const estc_address *addr)
{
    struct psa_target t;
    estc_err err = psa__begin(ctx, state, addr, PSA_FORM_KEY, &t);
    if (err != ESTC_OK)
        return err;
    psa_status_t s = psa_destroy_key(t.key_id);
    if (s != PSA_SUCCESS)
        return psa__fail(ctx, t.addr, "psa_destroy_key", s);
    return ESTC_OK;
}
