/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Key pairs on the token: generation, import of PKCS#8 keys (server-side
 * key generation) and removal. Private keys are made sensitive,
 * non-extractable and persistent, and checked to have come out that way.
 */
#include "ckr.h"
#include "p11_internal.h"
#include "util.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const uint8_t oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};

/* The DER OID of the curve of @type (CKA_EC_PARAMS), NULL for other types. */
const uint8_t *estc__p11_ec_oid(estc_key_type type, size_t *len)
{
    switch (type) {
    case ESTC_KEY_EC_P256:
        *len = sizeof(oid_p256);
        return oid_p256;
    case ESTC_KEY_EC_P384:
        *len = sizeof(oid_p384);
        return oid_p384;
    default:
        *len = 0;
        return NULL;
    }
}

static estc_err key_exists_check(struct p11_op *op)
{
    CK_OBJECT_HANDLE h;
    bool found = false;
    estc_err err = estc__p11_find_one(op, CKO_PRIVATE_KEY, &h, &found);
    if (err == ESTC_OK && !found) {
        err = estc__p11_find_one(op, CKO_PUBLIC_KEY, &h, &found);
    }
    if (err == ESTC_OK && found) {
        return estc_error(op->ctx, ESTC_ERR_EXISTS, "%s: a key is already there", op->shown);
    }
    return err;
}

/* The CKA_ID of a new key: the address's id, else 16 random bytes. */
static estc_err new_key_id(struct p11_op *op, uint8_t id[64], CK_ULONG *id_len)
{
    bool given = false;
    estc_err err = estc__p11_uri_id(op, id, id_len, &given);
    if (err != ESTC_OK || given) {
        return err;
    }
    if (RAND_bytes(id, 16) != 1) {
        return estc_error(op->ctx, ESTC_ERR_CRYPTO, "%s: RAND_bytes failed", op->shown);
    }
    *id_len = 16;
    return ESTC_OK;
}

/* A new private key must have come out the way it was asked for, whatever
 * the template said: persistent, sensitive, not extractable and, when the
 * token made it itself (@generated), never extractable. */
static estc_err check_private(struct p11_op *op, CK_OBJECT_HANDLE priv, bool generated)
{
    /* One read for the four (a file access on SoftHSM, a round trip on a
     * real token); an attribute the token does not give stays unset. */
    CK_BBOOL token = CK_FALSE, sensitive = CK_FALSE, extractable = CK_TRUE, never = CK_TRUE;
    CK_ATTRIBUTE a[4] = {{CKA_TOKEN, &token, sizeof(token)},
                         {CKA_SENSITIVE, &sensitive, sizeof(sensitive)},
                         {CKA_EXTRACTABLE, &extractable, sizeof(extractable)},
                         {CKA_NEVER_EXTRACTABLE, &never, sizeof(never)}};
    CK_RV rv = op->fn->C_GetAttributeValue(op->s, priv, a, generated ? 4 : 3);
    if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_ATTRIBUTE_SENSITIVE) {
        /* Read one by one to tell which one is missing. */
        bool v = false;
        token = estc__p11_get_bool(op, priv, CKA_TOKEN, &v) && v;
        sensitive = estc__p11_get_bool(op, priv, CKA_SENSITIVE, &v) && v;
        extractable = !estc__p11_get_bool(op, priv, CKA_EXTRACTABLE, &v) || v;
        never = !(generated && estc__p11_get_bool(op, priv, CKA_NEVER_EXTRACTABLE, &v) && !v);
        a[0].ulValueLen = a[1].ulValueLen = a[2].ulValueLen = a[3].ulValueLen = sizeof(CK_BBOOL);
    }
    const char *why = NULL;
    if (a[0].ulValueLen != sizeof(CK_BBOOL) || token != CK_TRUE) {
        why = "not persistent (CKA_TOKEN)";
    } else if (a[1].ulValueLen != sizeof(CK_BBOOL) || sensitive != CK_TRUE) {
        why = "not sensitive (CKA_SENSITIVE)";
    } else if (a[2].ulValueLen != sizeof(CK_BBOOL) || extractable != CK_FALSE) {
        why = "extractable (CKA_EXTRACTABLE)";
    } else if (generated && a[3].ulValueLen == sizeof(CK_BBOOL) && never == CK_FALSE) {
        why = "once extractable (CKA_NEVER_EXTRACTABLE)";
    }
    if (why == NULL) {
        return ESTC_OK;
    }
    return estc_error(op->ctx, ESTC_ERR_ENGINE,
                      "%s: refused: the token made the private key %s; it was removed again",
                      op->shown, why);
}

static estc_err mech_check(struct p11_op *op, CK_MECHANISM_TYPE mech, CK_ULONG bits,
                           const char *what)
{
    CK_MECHANISM_INFO mi;
    CK_RV rv = op->fn->C_GetMechanismInfo(op->tok->slot, mech, &mi);
    if (rv == CKR_MECHANISM_INVALID) {
        op->rv = rv;
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: %s: CKR_MECHANISM_INVALID", op->shown,
                          what);
    }
    if (rv != CKR_OK) {
        return estc__p11_fail(op, "C_GetMechanismInfo", rv);
    }
    if (bits != 0 && mi.ulMaxKeySize != 0 && (bits < mi.ulMinKeySize || bits > mi.ulMaxKeySize)) {
        op->rv = CKR_KEY_SIZE_RANGE;
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: %s of %lu bits: CKR_KEY_SIZE_RANGE",
                          op->shown, what, (unsigned long)bits);
    }
    return ESTC_OK;
}

/* The attributes of a key pair, generated or imported. Required: a
 * persistent private key that is private, sensitive, non-extractable and
 * signs, a persistent public key, both with the address's label and one
 * CKA_ID, and the type-specific attributes (appended by the caller).
 * Optional, left to the token when it refuses them (key_tmpl_optional()):
 * a public key that is not private and verifies, a private key that does
 * not decrypt, unwrap or derive. PKCS#11 lets a token choose these, and
 * some (tpm2-pkcs11) refuse a template that states them differently. */
struct key_tmpl {
    CK_BBOOL yes, no;
    CK_OBJECT_CLASS pub_cls, priv_cls;
    CK_KEY_TYPE kt;
    CK_ATTRIBUTE pub[16], priv[24];
    CK_ULONG np, nq;
    CK_ULONG np_req, nq_req; /* the required part, before the optional one */
};

static void key_tmpl_init(struct key_tmpl *t, struct p11_op *op, CK_KEY_TYPE kt, uint8_t *id,
                          CK_ULONG id_len)
{
    t->yes = CK_TRUE;
    t->no = CK_FALSE;
    t->pub_cls = CKO_PUBLIC_KEY;
    t->priv_cls = CKO_PRIVATE_KEY;
    t->kt = kt;
    t->np = t->nq = 0;

    t->pub[t->np++] = (CK_ATTRIBUTE){CKA_CLASS, &t->pub_cls, sizeof(t->pub_cls)};
    t->pub[t->np++] = (CK_ATTRIBUTE){CKA_KEY_TYPE, &t->kt, sizeof(t->kt)};
    t->pub[t->np++] = (CK_ATTRIBUTE){CKA_TOKEN, &t->yes, sizeof(t->yes)};
    t->pub[t->np++] = *op->uri.label;
    t->pub[t->np++] = (CK_ATTRIBUTE){CKA_ID, id, id_len};

    t->priv[t->nq++] = (CK_ATTRIBUTE){CKA_CLASS, &t->priv_cls, sizeof(t->priv_cls)};
    t->priv[t->nq++] = (CK_ATTRIBUTE){CKA_KEY_TYPE, &t->kt, sizeof(t->kt)};
    t->priv[t->nq++] = (CK_ATTRIBUTE){CKA_TOKEN, &t->yes, sizeof(t->yes)};
    t->priv[t->nq++] = (CK_ATTRIBUTE){CKA_PRIVATE, &t->yes, sizeof(t->yes)};
    t->priv[t->nq++] = (CK_ATTRIBUTE){CKA_SENSITIVE, &t->yes, sizeof(t->yes)};
    t->priv[t->nq++] = (CK_ATTRIBUTE){CKA_EXTRACTABLE, &t->no, sizeof(t->no)};
    t->priv[t->nq++] = (CK_ATTRIBUTE){CKA_SIGN, &t->yes, sizeof(t->yes)};
    t->priv[t->nq++] = *op->uri.label;
    t->priv[t->nq++] = (CK_ATTRIBUTE){CKA_ID, id, id_len};
}

/* After the type-specific attributes: the optional part. */
static void key_tmpl_optional(struct key_tmpl *t)
{
    t->np_req = t->np;
    t->nq_req = t->nq;
    t->pub[t->np++] = (CK_ATTRIBUTE){CKA_PRIVATE, &t->no, sizeof(t->no)};
    t->pub[t->np++] = (CK_ATTRIBUTE){CKA_VERIFY, &t->yes, sizeof(t->yes)};
    t->priv[t->nq++] = (CK_ATTRIBUTE){CKA_DECRYPT, &t->no, sizeof(t->no)};
    t->priv[t->nq++] = (CK_ATTRIBUTE){CKA_UNWRAP, &t->no, sizeof(t->no)};
    t->priv[t->nq++] = (CK_ATTRIBUTE){CKA_DERIVE, &t->no, sizeof(t->no)};
}

/* Whether a creation refused with @rv is worth one more try without the
 * optional attributes: the answers of a token that objects to a template
 * (tpm2-pkcs11 answers CKR_GENERAL_ERROR to a CKA_VERIFY it sets itself). */
static bool template_refused(CK_RV rv)
{
    return rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_VALUE_INVALID ||
           rv == CKR_TEMPLATE_INCONSISTENT || rv == CKR_GENERAL_ERROR;
}

/* The label and id of a new key are on no object: a refused creation that
 * left something behind anyway (the retry would then meet it) is cleaned. */
static void drop_leftovers(struct p11_op *op)
{
    CK_ULONG n = 0;
    (void)estc__p11_destroy_all(op, CKO_PRIVATE_KEY, &n);
    (void)estc__p11_destroy_all(op, CKO_PUBLIC_KEY, &n);
    estc_ctx_clear_error(op->ctx);
}

/* ------------------------------------------------------------------------ */
/* Generation                                                                */
/* ------------------------------------------------------------------------ */

estc_err estc__p11_key_generate(struct p11_op *op, estc_key_type type)
{
    size_t oid_len = 0;
    const uint8_t *oid = estc__p11_ec_oid(type, &oid_len);
    CK_ULONG bits = type == ESTC_KEY_RSA_2048 ? 2048 : type == ESTC_KEY_RSA_3072 ? 3072 : 0;
    if (oid == NULL && bits == 0) {
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: unknown key type %d", op->shown,
                          (int)type);
    }
    uint8_t id[64];
    CK_ULONG id_len = 0;
    CK_MECHANISM mech = {oid != NULL ? CKM_EC_KEY_PAIR_GEN : CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    estc_err err = key_exists_check(op);
    if (err == ESTC_OK) {
        err = mech_check(op, mech.mechanism, bits, "key generation");
    }
    if (err == ESTC_OK) {
        err = new_key_id(op, id, &id_len);
    }
    if (err != ESTC_OK) {
        return err;
    }

    static const uint8_t f4[] = {0x01, 0x00, 0x01};
    struct key_tmpl t;
    key_tmpl_init(&t, op, oid != NULL ? CKK_EC : CKK_RSA, id, id_len);
    if (oid != NULL) {
        t.pub[t.np++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)oid, oid_len};
    } else {
        t.pub[t.np++] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &bits, sizeof(bits)};
        t.pub[t.np++] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, (void *)f4, sizeof(f4)};
    }
    key_tmpl_optional(&t);

    CK_OBJECT_HANDLE hpub = CK_INVALID_HANDLE, hpriv = CK_INVALID_HANDLE;
    CK_RV rv = op->fn->C_GenerateKeyPair(op->s, &mech, t.pub, t.np, t.priv, t.nq, &hpub, &hpriv);
    if (template_refused(rv)) {
        drop_leftovers(op);
        rv = op->fn->C_GenerateKeyPair(op->s, &mech, t.pub, t.np_req, t.priv, t.nq_req, &hpub,
                                       &hpriv);
    }
    if (rv != CKR_OK) {
        if (rv == CKR_ATTRIBUTE_VALUE_INVALID && oid != NULL) {
            /* Most tokens answer an unknown curve this way. */
            rv = CKR_CURVE_NOT_SUPPORTED;
        }
        return estc__p11_fail(op, "C_GenerateKeyPair", rv);
    }
    err = estc__p11_created(op, CKO_PRIVATE_KEY, &hpriv);
    if (err == ESTC_OK) {
        err = estc__p11_created(op, CKO_PUBLIC_KEY, &hpub);
    }
    if (err != ESTC_OK) {
        return err;
    }
    err = check_private(op, hpriv, true);
    if (err != ESTC_OK) {
        estc__p11_destroy_quiet(op, hpriv);
        estc__p11_destroy_quiet(op, hpub);
        return err;
    }
    /* The first signature needs no search. */
    estc__p11_remember_key(op, hpriv, oid != NULL ? CKK_EC : CKK_RSA);
    return ESTC_OK;
}

/* ------------------------------------------------------------------------ */
/* Import                                                                    */
/* ------------------------------------------------------------------------ */

/* Big-endian bytes of an OpenSSL BIGNUM parameter of @pkey. */
static estc_err bn_param(struct p11_op *op, EVP_PKEY *pkey, const char *name, size_t pad,
                         estc_buf *out)
{
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(pkey, name, &bn) != 1) {
        return estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: the PKCS#8 key lacks %s", op->shown, name);
    }
    size_t n = pad != 0 ? pad : (size_t)BN_num_bytes(bn);
    out->data = malloc(n > 0 ? n : 1);
    if (out->data == NULL) {
        BN_clear_free(bn);
        return estc__p11_nomem(op);
    }
    out->len = n;
    if (BN_bn2binpad(bn, out->data, (int)n) < 0) {
        BN_clear_free(bn);
        estc_buf_free(out);
        return estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: bad %s in the PKCS#8 key", op->shown,
                          name);
    }
    BN_clear_free(bn);
    return ESTC_OK;
}

enum { IMP_PRIV, IMP_PUB, IMP_E, IMP_D, IMP_P, IMP_Q, IMP_DP, IMP_DQ, IMP_QI, IMP_N, IMP_COUNT };

/* Why a PKCS#8 key that estc__pkey_key_type() refused cannot be imported. */
static estc_err import_refused(struct p11_op *op, EVP_PKEY *pkey, estc_err err)
{
    if (err == ESTC_ERR_FORMAT) {
        return estc_error(op->ctx, err, "%s: EC key without a named curve", op->shown);
    }
    if (EVP_PKEY_is_a(pkey, "EC")) {
        return estc_error(op->ctx, err, "%s: the curve of the PKCS#8 key is not supported",
                          op->shown);
    }
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        return estc_error(op->ctx, err, "%s: RSA keys of %d bits are not supported", op->shown,
                          EVP_PKEY_get_bits(pkey));
    }
    return estc_error(op->ctx, err, "%s: unsupported PKCS#8 key algorithm", op->shown);
}

static estc_err import_parts(struct p11_op *op, EVP_PKEY *pkey, estc_key_type *type,
                             estc_buf parts[IMP_COUNT])
{
    estc_err err = estc__pkey_key_type(pkey, type);
    if (err != ESTC_OK) {
        return import_refused(op, pkey, err);
    }
    if (estc__ec_field_len(*type) != 0) {
        err = bn_param(op, pkey, OSSL_PKEY_PARAM_PRIV_KEY, estc__ec_field_len(*type),
                       &parts[IMP_PRIV]);
        if (err != ESTC_OK) {
            return err;
        }
        /* The public point, uncompressed, wrapped in an OCTET STRING. */
        uint8_t point[1 + 2 * 66];
        size_t plen = 0;
        if (EVP_PKEY_set_utf8_string_param(pkey, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                           "uncompressed") != 1 ||
            EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point),
                                            &plen) != 1 ||
            plen > 127) {
            return estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: the PKCS#8 key has no public point",
                              op->shown);
        }
        parts[IMP_PUB].data = malloc(plen + 2);
        if (parts[IMP_PUB].data == NULL) {
            return estc__p11_nomem(op);
        }
        parts[IMP_PUB].data[0] = 0x04;
        parts[IMP_PUB].data[1] = (uint8_t)plen;
        memcpy(parts[IMP_PUB].data + 2, point, plen);
        parts[IMP_PUB].len = plen + 2;
        return ESTC_OK;
    }
    static const char *const names[IMP_COUNT] = {
        [IMP_E] = OSSL_PKEY_PARAM_RSA_E,
        [IMP_D] = OSSL_PKEY_PARAM_RSA_D,
        [IMP_P] = OSSL_PKEY_PARAM_RSA_FACTOR1,
        [IMP_Q] = OSSL_PKEY_PARAM_RSA_FACTOR2,
        [IMP_DP] = OSSL_PKEY_PARAM_RSA_EXPONENT1,
        [IMP_DQ] = OSSL_PKEY_PARAM_RSA_EXPONENT2,
        [IMP_QI] = OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
        [IMP_N] = OSSL_PKEY_PARAM_RSA_N,
    };
    for (int i = IMP_E; i < IMP_COUNT && err == ESTC_OK; i++) {
        err = bn_param(op, pkey, names[i], 0, &parts[i]);
    }
    return err;
}

/* A token that refuses to create a private key from its values even with
 * the required attributes alone cannot import keys at all (tpm2-pkcs11
 * creates only public keys and data objects): that is "not supported", not
 * a fault of the token. */
static estc_err import_failed(struct p11_op *op, CK_RV rv)
{
    char buf[32];
    const char *name;
    switch (rv) {
    case CKR_ATTRIBUTE_TYPE_INVALID:
    case CKR_ATTRIBUTE_VALUE_INVALID:
    case CKR_TEMPLATE_INCONSISTENT:
    case CKR_ACTION_PROHIBITED:
    case CKR_FUNCTION_NOT_SUPPORTED:
        op->rv = rv;
        name = estc__ckr_name(rv);
        if (name == NULL) {
            snprintf(buf, sizeof(buf), "CKR_0x%lx", (unsigned long)rv);
            name = buf;
        }
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED,
                          "%s: the token does not import private keys: C_CreateObject: %s",
                          op->shown, name);
    default:
        return estc__p11_fail(op, "C_CreateObject", rv);
    }
}

/* The private key, then the public key; on any failure neither is left. */
static estc_err import_create(struct p11_op *op, estc_key_type type, estc_buf parts[IMP_COUNT],
                              uint8_t *id, CK_ULONG id_len)
{
    size_t oid_len = 0;
    const uint8_t *oid = estc__p11_ec_oid(type, &oid_len);
    struct key_tmpl t;
    key_tmpl_init(&t, op, oid != NULL ? CKK_EC : CKK_RSA, id, id_len);
    if (oid != NULL) {
        t.priv[t.nq++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)oid, oid_len};
        t.priv[t.nq++] = (CK_ATTRIBUTE){CKA_VALUE, parts[IMP_PRIV].data, parts[IMP_PRIV].len};
        t.pub[t.np++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)oid, oid_len};
        t.pub[t.np++] = (CK_ATTRIBUTE){CKA_EC_POINT, parts[IMP_PUB].data, parts[IMP_PUB].len};
    } else {
        static const CK_ATTRIBUTE_TYPE rsa_types[IMP_COUNT] = {
            [IMP_E] = CKA_PUBLIC_EXPONENT, [IMP_D] = CKA_PRIVATE_EXPONENT,
            [IMP_P] = CKA_PRIME_1,         [IMP_Q] = CKA_PRIME_2,
            [IMP_DP] = CKA_EXPONENT_1,     [IMP_DQ] = CKA_EXPONENT_2,
            [IMP_QI] = CKA_COEFFICIENT,    [IMP_N] = CKA_MODULUS,
        };
        for (int i = IMP_E; i < IMP_COUNT; i++) {
            t.priv[t.nq++] = (CK_ATTRIBUTE){rsa_types[i], parts[i].data, parts[i].len};
        }
        t.pub[t.np++] = (CK_ATTRIBUTE){CKA_MODULUS, parts[IMP_N].data, parts[IMP_N].len};
        t.pub[t.np++] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, parts[IMP_E].data, parts[IMP_E].len};
    }

    key_tmpl_optional(&t);

    CK_OBJECT_HANDLE hpriv = CK_INVALID_HANDLE, hpub = CK_INVALID_HANDLE;
    CK_RV rv = op->fn->C_CreateObject(op->s, t.priv, t.nq, &hpriv);
    if (template_refused(rv)) {
        drop_leftovers(op);
        rv = op->fn->C_CreateObject(op->s, t.priv, t.nq_req, &hpriv);
    }
    if (rv != CKR_OK) {
        return import_failed(op, rv);
    }
    estc_err err = estc__p11_created(op, CKO_PRIVATE_KEY, &hpriv);
    if (err != ESTC_OK) {
        return err;
    }
    rv = op->fn->C_CreateObject(op->s, t.pub, t.np, &hpub);
    if (template_refused(rv)) {
        rv = op->fn->C_CreateObject(op->s, t.pub, t.np_req, &hpub);
    }
    if (rv == CKR_OK) {
        err = estc__p11_created(op, CKO_PUBLIC_KEY, &hpub);
        if (err == ESTC_OK) {
            err = estc__p11_created(op, CKO_PRIVATE_KEY, &hpriv);
        }
        if (err != ESTC_OK) {
            return err;
        }
    }
    if (rv != CKR_OK) {
        err = estc__p11_fail(op, "C_CreateObject", rv);
        estc__p11_destroy_quiet(op, hpriv);
        return err;
    }
    err = check_private(op, hpriv, false);
    if (err != ESTC_OK) {
        estc__p11_destroy_quiet(op, hpriv);
        estc__p11_destroy_quiet(op, hpub);
    }
    return err;
}

/* The key is read before the token is touched: a malformed key is
 * ESTC_ERR_FORMAT whatever the state of the token. */
estc_err estc__p11_key_import(struct p11_op *op, const uint8_t *pkcs8, size_t len)
{
    /* Strictly PKCS#8 PrivateKeyInfo, the whole buffer, nothing else. */
    EVP_PKEY *pkey = NULL;
    if (estc__pkcs8_decode(pkcs8, len, &pkey) != ESTC_OK) {
        return estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: not one DER PKCS#8 private key",
                          op->shown);
    }
    estc_buf parts[IMP_COUNT];
    memset(parts, 0, sizeof(parts));
    estc_key_type type = 0;
    estc_err err = import_parts(op, pkey, &type, parts);
    EVP_PKEY_free(pkey);
    if (err == ESTC_OK) {
        err = estc__p11_session(op);
    }
    uint8_t id[64];
    CK_ULONG id_len = 0;
    if (err == ESTC_OK) {
        err = key_exists_check(op);
    }
    if (err == ESTC_OK) {
        err = new_key_id(op, id, &id_len);
    }
    if (err == ESTC_OK) {
        err = import_create(op, type, parts, id, id_len);
    }
    for (int i = 0; i < IMP_COUNT; i++) {
        estc_buf_free(&parts[i]);
    }
    return err;
}

/* ------------------------------------------------------------------------ */
/* Removal                                                                   */
/* ------------------------------------------------------------------------ */

estc_err estc__p11_key_remove(struct p11_op *op)
{
    CK_ULONG n1 = 0, n2 = 0;
    estc_err err = estc__p11_destroy_all(op, CKO_PRIVATE_KEY, &n1);
    if (err == ESTC_OK) {
        err = estc__p11_destroy_all(op, CKO_PUBLIC_KEY, &n2);
    }
    if (err == ESTC_OK && n1 + n2 == 0) {
        return estc__p11_not_found(op, "key");
    }
    return err;
}
