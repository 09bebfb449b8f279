/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Using a key on the token: its public key as SubjectPublicKeyInfo, and
 * signatures (CKM_ECDSA, CKM_RSA_PKCS over a DigestInfo, CKM_RSA_PKCS_PSS).
 */
#include "p11_internal.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

static estc_err ec_type(struct p11_op *op, const estc_buf *params, estc_key_type *type)
{
    static const estc_key_type curves[] = {ESTC_KEY_EC_P256, ESTC_KEY_EC_P384};
    for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]); i++) {
        size_t len = 0;
        const uint8_t *oid = estc__p11_ec_oid(curves[i], &len);
        if (params->len == len && memcmp(params->data, oid, len) == 0) {
            *type = curves[i];
            return ESTC_OK;
        }
    }
    return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: the key's curve is not supported",
                      op->shown);
}

/* CKA_EC_POINT is an OCTET STRING around the point (PKCS#11 2.x; SoftHSM);
 * some tokens give the bare point. Accept both. */
static estc_err unwrap_point(struct p11_op *op, estc_key_type type, const estc_buf *in,
                             const uint8_t **pt, size_t *pt_len)
{
    size_t want = 1 + 2 * estc__ec_field_len(type);
    if (in->len == want && in->data[0] == 0x04) {
        *pt = in->data;
        *pt_len = in->len;
        return ESTC_OK;
    }
    if (in->len == want + 2 && in->data[0] == 0x04 && in->data[1] == want) {
        *pt = in->data + 2;
        *pt_len = want;
        return ESTC_OK;
    }
    return estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: CKA_EC_POINT is not an uncompressed point",
                      op->shown);
}

static estc_err ec_public(struct p11_op *op, CK_OBJECT_HANDLE h, estc_buf *spki)
{
    estc_buf params = {0}, point = {0};
    estc_key_type type = 0;
    const uint8_t *pt = NULL;
    size_t pt_len = 0;
    estc_err err = estc__p11_get_attr(op, h, CKA_EC_PARAMS, &params);
    if (err == ESTC_OK) {
        err = ec_type(op, &params, &type);
    }
    if (err == ESTC_OK) {
        err = estc__p11_get_attr(op, h, CKA_EC_POINT, &point);
    }
    if (err == ESTC_OK) {
        err = unwrap_point(op, type, &point, &pt, &pt_len);
    }
    if (err == ESTC_OK) {
        err = estc__spki_from_ec_point(type, pt, pt_len, spki);
        if (err != ESTC_OK) {
            err = estc_error(op->ctx, err, "%s: cannot build the public key", op->shown);
        }
    }
    estc_buf_free(&params);
    estc_buf_free(&point);
    return err;
}

static estc_err rsa_public(struct p11_op *op, CK_OBJECT_HANDLE h, estc_buf *spki)
{
    estc_buf n = {0}, e = {0};
    estc_err err = estc__p11_get_attr(op, h, CKA_MODULUS, &n);
    if (err == ESTC_OK) {
        err = estc__p11_get_attr(op, h, CKA_PUBLIC_EXPONENT, &e);
    }
    if (err == ESTC_OK) {
        err = estc__spki_from_rsa(n.data, n.len, e.data, e.len, spki);
        if (err != ESTC_OK) {
            err = estc_error(op->ctx, err, "%s: cannot build the public key", op->shown);
        }
    }
    estc_buf_free(&n);
    estc_buf_free(&e);
    return err;
}

estc_err estc__p11_key_public(struct p11_op *op, estc_buf *spki)
{
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    bool found = false, is_pub = true;
    estc_err err = estc__p11_find_one(op, CKO_PUBLIC_KEY, &h, &found);
    if (err == ESTC_OK && !found) {
        /* RSA private keys carry the public parts too. */
        is_pub = false;
        err = estc__p11_find_one(op, CKO_PRIVATE_KEY, &h, &found);
    }
    if (err != ESTC_OK) {
        return err;
    }
    if (!found) {
        return estc__p11_not_found(op, "key");
    }
    CK_ULONG kt = 0;
    if (!estc__p11_get_ulong(op, h, CKA_KEY_TYPE, &kt)) {
        return estc__p11_fail(op, "C_GetAttributeValue", CKR_ATTRIBUTE_TYPE_INVALID);
    }
    if (kt == CKK_EC) {
        if (!is_pub) {
            return estc_error(op->ctx, ESTC_ERR_NOT_FOUND,
                              "%s: the public half of the EC key pair is missing", op->shown);
        }
        return ec_public(op, h, spki);
    }
    if (kt == CKK_RSA) {
        return rsa_public(op, h, spki);
    }
    return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: key type 0x%lx is not supported",
                      op->shown, (unsigned long)kt);
}

/* C_SignInit has succeeded: sign @data into a new buffer. */
static estc_err sign_data(struct p11_op *op, const uint8_t *data, size_t data_len, uint8_t **sig,
                          CK_ULONG *sig_len)
{
    /* Room for RSA 8192 or any EC signature: one C_Sign in the common case.
     * After CKR_BUFFER_TOO_SMALL the operation is still active. */
    CK_ULONG out_len = 1024;
    uint8_t *out = malloc(out_len);
    if (out == NULL) {
        out_len = 0;
    }
    CK_RV rv = op->fn->C_Sign(op->s, (CK_BYTE *)data, data_len, out, &out_len);
    if (rv == CKR_BUFFER_TOO_SMALL || (rv == CKR_OK && out == NULL)) {
        free(out);
        out = malloc(out_len > 0 ? out_len : 1);
        if (out == NULL) {
            /* A call that fails for a short buffer of zero ends the operation
             * on most tokens; either way the session is reused safely. */
            CK_ULONG tiny = 0;
            uint8_t dummy;
            (void)op->fn->C_Sign(op->s, (CK_BYTE *)data, data_len, &dummy, &tiny);
            return estc__p11_nomem(op);
        }
        rv = op->fn->C_Sign(op->s, (CK_BYTE *)data, data_len, out, &out_len);
    }
    if (rv != CKR_OK) {
        free(out);
        return estc__p11_fail(op, "C_Sign", rv);
    }
    *sig = out;
    *sig_len = out_len;
    return ESTC_OK;
}

/* The private key the address names, fit for @alg (from the handle cache
 * when @use_cache and it is there: *@cached). */
static estc_err sign_key(struct p11_op *op, estc_sig_alg alg, bool use_cache, CK_OBJECT_HANDLE *h,
                         bool *cached)
{
    bool found = false;
    CK_KEY_TYPE kt = 0;
    estc_err err = estc__p11_find_key(op, use_cache, h, &kt, &found, cached);
    if (err != ESTC_OK) {
        return err;
    }
    if (!found) {
        return estc__p11_not_found(op, "private key");
    }
    if ((kt == CKK_EC) != (alg == ESTC_SIG_ECDSA) || (kt != CKK_EC && kt != CKK_RSA)) {
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED,
                          "%s: this signature algorithm does not fit the key type", op->shown);
    }
    return ESTC_OK;
}

/* C_SignInit with the key the address names. A cached handle that the
 * token refuses (the key was removed, or removed and made again, by another
 * process or another user of the module) is dropped and the key looked up
 * once more. */
static estc_err sign_init(struct p11_op *op, estc_sig_alg alg, CK_MECHANISM *mech)
{
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    bool cached = false;
    estc_err err = sign_key(op, alg, true, &h, &cached);
    if (err != ESTC_OK) {
        return err;
    }
    CK_RV rv = op->fn->C_SignInit(op->s, mech, h);
    if (cached && (rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID)) {
        /* Some tokens (SoftHSM) answer so for a private key when logged
         * out: the login is checked again before the search. */
        estc__p11_forget(op, h);
        op->tok->login_known = false;
        err = estc__p11_session(op);
        if (err == ESTC_OK) {
            err = sign_key(op, alg, false, &h, &cached);
        }
        if (err != ESTC_OK) {
            return err;
        }
        rv = op->fn->C_SignInit(op->s, mech, h);
    }
    if (rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID) {
        estc__p11_forget(op, h);
    }
    return rv != CKR_OK ? estc__p11_fail(op, "C_SignInit", rv) : ESTC_OK;
}

estc_err estc__p11_key_sign(struct p11_op *op, estc_sig_alg alg, estc_hash hash,
                            const uint8_t *digest, size_t digest_len, estc_buf *sig)
{
    estc_err err = ESTC_OK;
    CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
    CK_RSA_PKCS_PSS_PARAMS pss;
    estc_buf in = {0};
    const uint8_t *data = digest;
    size_t data_len = digest_len;
    if (alg == ESTC_SIG_RSA_PKCS1) {
        mech.mechanism = CKM_RSA_PKCS;
        err = estc__digest_info(hash, digest, digest_len, &in);
        if (err != ESTC_OK) {
            return estc_error(op->ctx, err, "%s: cannot build the DigestInfo", op->shown);
        }
        data = in.data;
        data_len = in.len;
    } else if (alg == ESTC_SIG_RSA_PSS) {
        static const CK_MECHANISM_TYPE hashes[] = {CKM_SHA256, CKM_SHA384, CKM_SHA512};
        static const CK_RSA_PKCS_MGF_TYPE mgfs[] = {CKG_MGF1_SHA256, CKG_MGF1_SHA384,
                                                    CKG_MGF1_SHA512};
        if (hash < ESTC_HASH_SHA256 || hash > ESTC_HASH_SHA512) {
            return estc_error(op->ctx, ESTC_ERR_INVALID_ARG, "%s: unknown hash", op->shown);
        }
        pss.hashAlg = hashes[hash - ESTC_HASH_SHA256];
        pss.mgf = mgfs[hash - ESTC_HASH_SHA256];
        pss.sLen = estc__hash_len(hash);
        mech.mechanism = CKM_RSA_PKCS_PSS;
        mech.pParameter = &pss;
        mech.ulParameterLen = sizeof(pss);
    } else if (alg != ESTC_SIG_ECDSA) {
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: unknown signature algorithm",
                          op->shown);
    }

    uint8_t *out = NULL;
    CK_ULONG out_len = 0;
    err = sign_init(op, alg, &mech);
    if (err == ESTC_OK) {
        err = sign_data(op, data, data_len, &out, &out_len);
    }
    estc_buf_free(&in);
    if (err != ESTC_OK) {
        return err;
    }
    if (alg == ESTC_SIG_ECDSA) {
        estc_buf der = {0};
        err = estc__ecdsa_raw_to_der(out, out_len, &der);
        free(out);
        if (err != ESTC_OK) {
            return estc_error(op->ctx, err, "%s: bad ECDSA signature from the token", op->shown);
        }
        *sig = der;
        return ESTC_OK;
    }
    sig->data = out;
    sig->len = out_len;
    return ESTC_OK;
}
