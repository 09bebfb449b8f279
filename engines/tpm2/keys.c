/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tpm2: driver's keys: persistent objects under the storage primary key,
 * or TSS2 PRIVATE KEY files (key-file=) loadable under the owner hierarchy's
 * standard primary key; generated in the TPM or imported from PKCS#8, their
 * public keys as SubjectPublicKeyInfo, signatures with TPM2_Sign, and
 * removal.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>

#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>

#include "util.h"
#include "tpm2_internal.h"
#include "tpm2_keyfile.h"

/* ------------------------------------------------------------------------ */
/* Key types                                                                 */
/* ------------------------------------------------------------------------ */

/* The TPM curve of each EC key type: the one mapping both ways. */
static const struct {
    estc_key_type type;
    TPMI_ECC_CURVE curve;
} curves[] = {
    {ESTC_KEY_EC_P256, TPM2_ECC_NIST_P256},
    {ESTC_KEY_EC_P384, TPM2_ECC_NIST_P384},
};

static TPMI_ECC_CURVE curve_of(estc_key_type type)
{
    for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]); i++) {
        if (curves[i].type == type)
            return curves[i].curve;
    }
    return TPM2_ECC_NONE;
}

/* The key type of a TPM curve, 0 for a curve the driver API lacks. */
static estc_key_type key_type_of(TPMI_ECC_CURVE curve)
{
    for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]); i++) {
        if (curves[i].curve == curve)
            return curves[i].type;
    }
    return 0;
}

static TPMI_RSA_KEY_BITS rsa_bits_of(estc_key_type type)
{
    return type == ESTC_KEY_RSA_2048 ? 2048 : type == ESTC_KEY_RSA_3072 ? 3072 : 0;
}

bool estc__tpm2_key_type_known(estc_key_type type)
{
    return curve_of(type) != TPM2_ECC_NONE || rsa_bits_of(type) != 0;
}

static const char *key_type_name(estc_key_type type)
{
    switch (type) {
    case ESTC_KEY_EC_P256:
        return "EC P-256";
    case ESTC_KEY_EC_P384:
        return "EC P-384";
    case ESTC_KEY_RSA_2048:
        return "RSA 2048";
    case ESTC_KEY_RSA_3072:
        return "RSA 3072";
    }
    return "?";
}

/* The public area's type and parameters for keys of @type (no fixed scheme:
 * the scheme is chosen per signature). */
static void key_params(estc_key_type type, TPMT_PUBLIC *p)
{
    TPMI_ECC_CURVE curve = curve_of(type);
    if (curve != TPM2_ECC_NONE) {
        p->type = TPM2_ALG_ECC;
        p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
        p->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.eccDetail.curveID = curve;
        p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
    } else {
        p->type = TPM2_ALG_RSA;
        p->parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
        p->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.rsaDetail.keyBits = rsa_bits_of(type);
        p->parameters.rsaDetail.exponent = 0;
    }
}

/* The template of a key made in the TPM; @type is known. */
static void key_template(estc_key_type type, TPM2B_PUBLIC *pub)
{
    memset(pub, 0, sizeof(*pub));
    TPMT_PUBLIC *p = &pub->publicArea;
    p->nameAlg = TPM2_ALG_SHA256;
    p->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                          TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                          TPMA_OBJECT_SIGN_ENCRYPT;
    key_params(type, p);
}

TPM2_ALG_ID estc__tpm2_hash_alg(estc_hash hash)
{
    switch (hash) {
    case ESTC_HASH_SHA256:
        return TPM2_ALG_SHA256;
    case ESTC_HASH_SHA384:
        return TPM2_ALG_SHA384;
    case ESTC_HASH_SHA512:
        return TPM2_ALG_SHA512;
    }
    return TPM2_ALG_NULL;
}

/* Asks the TPM whether it can make keys with these parameters. */
static estc_err check_params(const struct tpm2_op *op, const TPM2B_PUBLIC *pub, const char *what)
{
    TPMT_PUBLIC_PARMS parms = {.type = pub->publicArea.type};
    parms.parameters = pub->publicArea.parameters;
    TSS2_RC rc = Esys_TestParms(op->c->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &parms);
    if (rc == TSS2_RC_SUCCESS)
        return ESTC_OK;
    if ((rc & 0xFFFF0000u) == 0)
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: the TPM offers no %s keys: %s",
                          op->text, what, Tss2_RC_Decode(rc));
    return estc__tpm2_tss_err(op, "Esys_TestParms", rc);
}

/* ------------------------------------------------------------------------ */
/* Generation and import                                                     */
/* ------------------------------------------------------------------------ */

/* Persists transient @key at the address's handle and flushes it. */
static estc_err persist_key(const struct tpm2_op *op, ESYS_TR *key)
{
    struct tpm2_conn *c = op->c;
    ESYS_TR pers = ESYS_TR_NONE;
    estc__tpm2_key_forget(c, op->a.handle); /* a stale cache entry from an earlier key there */
    TSS2_RC rc = Esys_EvictControl(c->esys, ESYS_TR_RH_OWNER, *key, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                   ESYS_TR_NONE, op->a.handle, &pers);
    estc__tpm2_flush(c, key);
    if (rc != TSS2_RC_SUCCESS)
        return estc__tpm2_tss_err(op, "Esys_EvictControl", rc);
    estc__tpm2_tr_close(c, &pers);
    return ESTC_OK;
}

static estc_err keyfile_generate(const struct tpm2_op *op, estc_key_type type);
static estc_err keyfile_import(const struct tpm2_op *op, const TPM2B_PUBLIC *pub,
                               const TPM2B_SENSITIVE *sens);
static estc_err keyfile_public(const struct tpm2_op *op, estc_buf *spki);
static estc_err keyfile_sign(const struct tpm2_op *op, estc_sig_alg alg, estc_hash hash,
                             const uint8_t *digest, size_t digest_len, estc_buf *sig);

estc_err estc__tpm2_key_generate(const struct tpm2_op *op, estc_key_type type)
{
    if (op->a.type == ADDR_FILE)
        return keyfile_generate(op, type);
    struct tpm2_conn *c = op->c;
    TPM2B_PUBLIC tmpl;
    key_template(type, &tmpl);
    ESYS_TR srk = ESYS_TR_NONE, key = ESYS_TR_NONE;
    TPM2B_PRIVATE *priv = NULL;
    TPM2B_PUBLIC *pub = NULL;
    estc_err err = ESTC_OK;
    if (!(c->tested_types & (1u << type))) {
        err = check_params(op, &tmpl, key_type_name(type));
        if (err == ESTC_OK)
            c->tested_types |= 1u << type;
    }
    if (err == ESTC_OK)
        err = estc__tpm2_check_free(op);
    if (err == ESTC_OK)
        err = estc__tpm2_srk_get(op, &srk);
    if (err != ESTC_OK)
        goto out;

    TPM2B_SENSITIVE_CREATE sens = {0};
    TPM2B_DATA outside = {0};
    TPML_PCR_SELECTION pcrs = {0};
    TSS2_RC rc = Esys_Create(c->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sens,
                             &tmpl, &outside, &pcrs, &priv, &pub, NULL, NULL, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        err = estc__tpm2_tss_err(op, "Esys_Create", rc);
        goto out;
    }
    rc = Esys_Load(c->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, priv, pub, &key);
    if (rc != TSS2_RC_SUCCESS) {
        err = estc__tpm2_tss_err(op, "Esys_Load", rc);
        goto out;
    }
    err = persist_key(op, &key);
out:
    estc__tpm2_flush(c, &key);
    estc__tpm2_srk_check(c, err);
    Esys_Free(priv);
    Esys_Free(pub);
    return err;
}

/* Big-endian bytes of @bn padded to @len into @out. */
static bool bn_to_buf(const BIGNUM *bn, size_t len, uint8_t *out)
{
    return bn != NULL && BN_bn2binpad(bn, out, (int)len) == (int)len;
}

/* Why @pk is not a key type of the driver API, in the detail text. */
static estc_err unsupported_key(const struct tpm2_op *op, EVP_PKEY *pk)
{
    if (EVP_PKEY_is_a(pk, "EC")) {
        char group[64] = "";
        EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL);
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: curve %s not supported", op->text,
                          group[0] != '\0' ? group : "(unnamed)");
    }
    if (EVP_PKEY_is_a(pk, "RSA"))
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: RSA %d not supported", op->text,
                          EVP_PKEY_get_bits(pk));
    return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: only EC and RSA keys can be imported",
                      op->text);
}

/* Fills the public area and the sensitive part of an imported key. */
static estc_err import_parts(const struct tpm2_op *op, EVP_PKEY *pk, TPM2B_PUBLIC *pub,
                             TPM2B_SENSITIVE *sens)
{
    memset(pub, 0, sizeof(*pub));
    memset(sens, 0, sizeof(*sens));
    estc_key_type type = 0;
    estc_err err = estc__pkey_key_type(pk, &type);
    if (err == ESTC_ERR_UNSUPPORTED)
        return unsupported_key(op, pk);
    if (err != ESTC_OK)
        return estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: malformed private key", op->text);

    TPMT_PUBLIC *p = &pub->publicArea;
    p->nameAlg = TPM2_ALG_SHA256;
    /* The TPM refuses fixedTPM/fixedParent/sensitiveDataOrigin on an object
     * made outside; the empty authPolicy means TPM2_Duplicate can never be
     * authorized, so the key cannot leave the TPM either. */
    p->objectAttributes = TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_SIGN_ENCRYPT;
    key_params(type, p);
    bool ok;
    BIGNUM *b1 = NULL, *b2 = NULL, *b3 = NULL;
    if (p->type == TPM2_ALG_ECC) {
        size_t field = estc__ec_field_len(type);
        ok = EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_X, &b1) &&
             EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_Y, &b2) &&
             EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_PRIV_KEY, &b3) &&
             bn_to_buf(b1, field, p->unique.ecc.x.buffer) &&
             bn_to_buf(b2, field, p->unique.ecc.y.buffer) &&
             bn_to_buf(b3, field, sens->sensitiveArea.sensitive.ecc.buffer);
        p->unique.ecc.x.size = (UINT16)field;
        p->unique.ecc.y.size = (UINT16)field;
        sens->sensitiveArea.sensitiveType = TPM2_ALG_ECC;
        sens->sensitiveArea.sensitive.ecc.size = (UINT16)field;
    } else {
        size_t nlen = (size_t)p->parameters.rsaDetail.keyBits / 8;
        ok = EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &b1) &&
             EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &b2) &&
             EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_FACTOR1, &b3) &&
             bn_to_buf(b1, nlen, p->unique.rsa.buffer) &&
             bn_to_buf(b3, nlen / 2, sens->sensitiveArea.sensitive.rsa.buffer) &&
             BN_num_bits(b2) <= 32;
        if (ok) {
            uint32_t e = (uint32_t)BN_get_word(b2);
            p->parameters.rsaDetail.exponent = e == 65537 ? 0 : e;
        }
        p->unique.rsa.size = (UINT16)nlen;
        sens->sensitiveArea.sensitiveType = TPM2_ALG_RSA;
        sens->sensitiveArea.sensitive.rsa.size = (UINT16)(nlen / 2);
    }
    BN_clear_free(b3);
    BN_free(b2);
    BN_free(b1);
    if (!ok)
        return estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: malformed private key", op->text);
    return ESTC_OK;
}

/* TPM2_Import of the key with public area @pub and sensitive part @sens
 * under @parent (its password set): *@priv is the key's private part under
 * @parent, to free with Esys_Free(). No outer or inner wrapper (empty seed,
 * NULL symmetric algorithm): the duplicate is the marshalled
 * TPM2B_SENSITIVE itself, wiped after the call. */
static estc_err import_under(const struct tpm2_op *op, ESYS_TR parent, const TPM2B_PUBLIC *pub,
                             const TPM2B_SENSITIVE *sens, TPM2B_PRIVATE **priv)
{
    *priv = NULL;
    TPM2B_PRIVATE dup = {0};
    size_t off = 0;
    estc_err err = ESTC_OK;
    TSS2_RC rc = Tss2_MU_TPM2B_SENSITIVE_Marshal(sens, dup.buffer, sizeof(dup.buffer), &off);
    if (rc != TSS2_RC_SUCCESS) {
        err = estc__tpm2_tss_err(op, "Tss2_MU_TPM2B_SENSITIVE_Marshal", rc);
    } else {
        dup.size = (UINT16)off;
        TPM2B_DATA enc_key = {0};
        TPM2B_ENCRYPTED_SECRET seed = {0};
        TPMT_SYM_DEF_OBJECT sym = {.algorithm = TPM2_ALG_NULL};
        rc = Esys_Import(op->c->esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                         &enc_key, pub, &dup, &seed, &sym, priv);
        if (rc != TSS2_RC_SUCCESS) {
            *priv = NULL;
            err = estc__tpm2_tss_err(op, "Esys_Import", rc);
        }
    }
    OPENSSL_cleanse(&dup, sizeof(dup));
    return err;
}

estc_err estc__tpm2_key_import(const struct tpm2_op *op, const uint8_t *pkcs8, size_t pkcs8_len)
{
    struct tpm2_conn *c = op->c;
    ESYS_TR srk = ESYS_TR_NONE, key = ESYS_TR_NONE;
    TPM2B_PRIVATE *priv = NULL;
    TPM2B_PUBLIC pub;
    TPM2B_SENSITIVE sens;
    memset(&sens, 0, sizeof(sens));
    estc_err err;

    EVP_PKEY *pk = NULL;
    if (estc__pkcs8_decode(pkcs8, pkcs8_len, &pk) != ESTC_OK) {
        err = estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: not a PKCS#8 private key", op->text);
        goto out;
    }
    err = import_parts(op, pk, &pub, &sens);
    if (err == ESTC_OK)
        err = check_params(op, &pub, "such");
    if (err == ESTC_OK && op->a.type == ADDR_FILE) {
        err = keyfile_import(op, &pub, &sens);
        goto out;
    }
    if (err == ESTC_OK)
        err = estc__tpm2_check_free(op);
    if (err == ESTC_OK)
        err = estc__tpm2_srk_get(op, &srk);
    if (err != ESTC_OK)
        goto out;

    err = import_under(op, srk, &pub, &sens, &priv);
    if (err != ESTC_OK)
        goto out;
    TSS2_RC rc =
        Esys_Load(c->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, priv, &pub, &key);
    if (rc != TSS2_RC_SUCCESS) {
        err = estc__tpm2_tss_err(op, "Esys_Load", rc);
        goto out;
    }
    err = persist_key(op, &key);
out:
    OPENSSL_cleanse(&sens, sizeof(sens));
    EVP_PKEY_free(pk);
    estc__tpm2_flush(c, &key);
    estc__tpm2_srk_check(c, err);
    Esys_Free(priv);
    return err;
}

/* ------------------------------------------------------------------------ */
/* Using keys                                                                */
/* ------------------------------------------------------------------------ */

/* Whether public area @p is one of a key this driver signs with. */
static bool signing_key(const TPMT_PUBLIC *p)
{
    return (p->objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT) &&
           !(p->objectAttributes & TPMA_OBJECT_RESTRICTED) &&
           (p->type == TPM2_ALG_ECC || p->type == TPM2_ALG_RSA);
}

/*
 * The key at the address's handle, from the connection's cache (its ESYS_TR
 * and public area stay owned by the cache). Without @fresh a cached key is
 * taken as it is, with no TPM command, and *@cached says so; with @fresh,
 * or when the key is not cached yet, its public area is read from the TPM,
 * which also proves that it is there.
 */
static estc_err key_open(const struct tpm2_op *op, bool fresh, struct tpm2_key **out, bool *cached)
{
    struct tpm2_conn *c = op->c;
    uint32_t handle = op->a.handle;
    *out = NULL;
    *cached = false;
    struct tpm2_key *k = estc__tpm2_key_find(c, handle);
    if (k != NULL && !fresh) {
        *out = k;
        *cached = true;
        return ESTC_OK;
    }
    TPM2B_PUBLIC *pub = NULL;
    if (k != NULL) {
        TSS2_RC rc = Esys_ReadPublic(c->esys, k->tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub,
                                     NULL, NULL);
        if (rc == TSS2_RC_SUCCESS) {
            k->pub = *pub;
        } else {
            estc__tpm2_key_forget(c, handle); /* gone or replaced: open it afresh */
            k = NULL;
        }
    }
    if (k == NULL) {
        ESYS_TR tr = ESYS_TR_NONE;
        estc_err err = estc__tpm2_tr_from(op, handle, &tr);
        if (err != ESTC_OK)
            return err;
        TSS2_RC rc = Esys_ReadPublic(c->esys, tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub,
                                     NULL, NULL);
        if (rc != TSS2_RC_SUCCESS) {
            estc__tpm2_tr_close(c, &tr);
            return estc__tpm2_tss_err(op, "Esys_ReadPublic", rc);
        }
        k = estc__tpm2_key_remember(c, handle, tr, pub);
    }
    Esys_Free(pub);
    if (!signing_key(&k->pub.publicArea)) {
        estc__tpm2_key_forget(c, handle);
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED,
                          "%s: the object is not an unrestricted EC or RSA signing key", op->text);
    }
    *out = k;
    return ESTC_OK;
}

/* The SubjectPublicKeyInfo of public area @p. */
static estc_err spki_of(const struct tpm2_op *op, const TPMT_PUBLIC *p, estc_buf *spki)
{
    estc_err err;
    if (p->type == TPM2_ALG_ECC) {
        estc_key_type type = key_type_of(p->parameters.eccDetail.curveID);
        size_t field = estc__ec_field_len(type);
        if (field == 0 || p->unique.ecc.x.size > field || p->unique.ecc.y.size > field)
            return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED, "%s: unsupported curve 0x%x", op->text,
                              (unsigned)p->parameters.eccDetail.curveID);
        uint8_t point[1 + 2 * 66] = {0x04};
        memcpy(point + 1 + field - p->unique.ecc.x.size, p->unique.ecc.x.buffer,
               p->unique.ecc.x.size);
        memcpy(point + 1 + 2 * field - p->unique.ecc.y.size, p->unique.ecc.y.buffer,
               p->unique.ecc.y.size);
        err = estc__spki_from_ec_point(type, point, 1 + 2 * field, spki);
    } else {
        uint32_t e = p->parameters.rsaDetail.exponent;
        if (e == 0)
            e = 65537;
        uint8_t eb[4] = {(uint8_t)(e >> 24), (uint8_t)(e >> 16), (uint8_t)(e >> 8), (uint8_t)e};
        err = estc__spki_from_rsa(p->unique.rsa.buffer, p->unique.rsa.size, eb, sizeof(eb), spki);
    }
    if (err != ESTC_OK && err != ESTC_ERR_UNSUPPORTED)
        err = estc_error(op->ctx, err, "%s: cannot encode the public key", op->text);
    return err;
}

estc_err estc__tpm2_key_public(const struct tpm2_op *op, estc_buf *spki)
{
    if (op->a.type == ADDR_FILE)
        return keyfile_public(op, spki);
    /* Always from the TPM: the key reported is the key at the handle now. */
    struct tpm2_key *k = NULL;
    bool cached;
    estc_err err = key_open(op, true, &k, &cached);
    if (err != ESTC_OK)
        return err;
    return spki_of(op, &k->pub.publicArea, spki);
}

/* TPM2_Sign with loaded key @tr whose public area is @pub. */
static estc_err sign_with(const struct tpm2_op *op, ESYS_TR tr, const TPM2B_PUBLIC *pub,
                          estc_sig_alg alg, estc_hash hash, const uint8_t *digest,
                          size_t digest_len, estc_buf *sig)
{
    TPMT_SIGNATURE *s = NULL;
    estc_err err = ESTC_OK;
    bool is_ec = pub->publicArea.type == TPM2_ALG_ECC;
    if (is_ec != (alg == ESTC_SIG_ECDSA)) {
        err = estc_error(op->ctx, ESTC_ERR_UNSUPPORTED,
                         "%s: signature algorithm does not fit a%s key", op->text,
                         is_ec ? "n EC" : "n RSA");
        goto out;
    }
    TPMT_SIG_SCHEME scheme = {0};
    scheme.scheme = alg == ESTC_SIG_ECDSA       ? TPM2_ALG_ECDSA
                    : alg == ESTC_SIG_RSA_PKCS1 ? TPM2_ALG_RSASSA
                                                : TPM2_ALG_RSAPSS;
    scheme.details.any.hashAlg = estc__tpm2_hash_alg(hash);
    TPM2B_DIGEST dg = {.size = (UINT16)digest_len};
    memcpy(dg.buffer, digest, digest_len);
    TPMT_TK_HASHCHECK ticket = {.tag = TPM2_ST_HASHCHECK, .hierarchy = TPM2_RH_NULL};
    TSS2_RC rc = Esys_Sign(op->c->esys, tr, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &dg,
                           &scheme, &ticket, &s);
    if (rc != TSS2_RC_SUCCESS) {
        err = estc__tpm2_tss_err(op, "Esys_Sign", rc);
        goto out;
    }
    /* The signature must fit @pub: with a cached public area, a signature
     * that does not tells of another key at the handle. */
    if (s->sigAlg != scheme.scheme ||
        (!is_ec && (alg == ESTC_SIG_RSA_PKCS1
                        ? s->signature.rsassa.sig.size
                        : s->signature.rsapss.sig.size) != pub->publicArea.unique.rsa.size)) {
        err = estc_error(op->ctx, ESTC_ERR_ENGINE, "%s: the signature does not fit the key",
                         op->text);
        goto out;
    }
    if (is_ec) {
        size_t field =
            estc__ec_field_len(key_type_of(pub->publicArea.parameters.eccDetail.curveID));
        const TPM2B_ECC_PARAMETER *r = &s->signature.ecdsa.signatureR;
        const TPM2B_ECC_PARAMETER *sv = &s->signature.ecdsa.signatureS;
        uint8_t rs[2 * 66] = {0};
        if (field == 0 || r->size > field || sv->size > field) {
            err = estc_error(op->ctx, ESTC_ERR_ENGINE, "%s: unexpected ECDSA signature size",
                             op->text);
            goto out;
        }
        memcpy(rs + field - r->size, r->buffer, r->size);
        memcpy(rs + 2 * field - sv->size, sv->buffer, sv->size);
        err = estc__ecdsa_raw_to_der(rs, 2 * field, sig);
    } else {
        const TPM2B_PUBLIC_KEY_RSA *rsig =
            alg == ESTC_SIG_RSA_PKCS1 ? &s->signature.rsassa.sig : &s->signature.rsapss.sig;
        err = estc_buf_set(sig, rsig->buffer, rsig->size);
    }
out:
    Esys_Free(s);
    return err;
}

/* Whether public areas @a and @b are the same (as the TPM marshals them). */
static bool same_public(const TPM2B_PUBLIC *a, const TPM2B_PUBLIC *b)
{
    uint8_t ma[sizeof(*a)], mb[sizeof(*b)];
    size_t la = 0, lb = 0;
    return Tss2_MU_TPM2B_PUBLIC_Marshal(a, ma, sizeof(ma), &la) == TSS2_RC_SUCCESS &&
           Tss2_MU_TPM2B_PUBLIC_Marshal(b, mb, sizeof(mb), &lb) == TSS2_RC_SUCCESS && la == lb &&
           memcmp(ma, mb, la) == 0;
}

estc_err estc__tpm2_key_sign(const struct tpm2_op *op, estc_sig_alg alg, estc_hash hash,
                             const uint8_t *digest, size_t digest_len, estc_buf *sig)
{
    if (op->a.type == ADDR_FILE)
        return keyfile_sign(op, alg, hash, digest, digest_len, sig);
    struct tpm2_key *k = NULL;
    bool cached = false;
    estc_err err = key_open(op, false, &k, &cached);
    if (err == ESTC_OK)
        err = sign_with(op, k->tr, &k->pub, alg, hash, digest, digest_len, sig);
    if (err == ESTC_OK || !cached)
        return err;
    /* The cached public area may be stale: another program may have evicted
     * the key (the TPM answers TPM_RC_HANDLE) or put another one at its
     * handle (a type, scheme or size that no longer fits). Read it again;
     * sign once more only when the key changed, so that a failure of the
     * key itself (its password, say) is not repeated. */
    TPM2B_PUBLIC before = k->pub;
    estc_err again = key_open(op, true, &k, &cached);
    if (again != ESTC_OK)
        return again;
    if (same_public(&before, &k->pub))
        return err;
    return sign_with(op, k->tr, &k->pub, alg, hash, digest, digest_len, sig);
}

estc_err estc__tpm2_key_remove(const struct tpm2_op *op)
{
    struct tpm2_conn *c = op->c;
    ESYS_TR out_tr = ESYS_TR_NONE;
    struct tpm2_key *k = NULL;
    bool cached;
    /* key_open refuses storage keys: the SRK is never removed here. Fresh:
     * what is removed is what the TPM holds now. */
    estc_err err = key_open(op, true, &k, &cached);
    if (err != ESTC_OK)
        return err;
    TSS2_RC rc = Esys_EvictControl(c->esys, ESYS_TR_RH_OWNER, k->tr, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                   ESYS_TR_NONE, op->a.handle, &out_tr);
    if (rc != TSS2_RC_SUCCESS)
        err = estc__tpm2_tss_err(op, "Esys_EvictControl", rc);
    /* ESYS may have dropped the handle already: closing again is harmless. */
    estc__tpm2_key_forget(c, op->a.handle);
    estc__tpm2_tr_close(c, &out_tr);
    return err;
}

/* ------------------------------------------------------------------------ */
/* Key files (key-file=)                                                     */
/* ------------------------------------------------------------------------ */

/* Larger than any TSS2 PRIVATE KEY file (a few kilobytes at most). */
#define KEYFILE_MAX 65536

/* The primary key that tpm2-openssl (and tpm2-tss-engine) make for parent
 * 0x40000001: an ECC NIST P-256 storage key (RSA 2048 on a TPM without ECC)
 * of the owner hierarchy with an empty unique field. The same template
 * gives the same key, so their files and ours load under each other's. */
static void owner_primary_template(bool rsa, TPM2B_PUBLIC *pub)
{
    memset(pub, 0, sizeof(*pub));
    TPMT_PUBLIC *p = &pub->publicArea;
    p->nameAlg = TPM2_ALG_SHA256;
    p->objectAttributes = TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT |
                          TPMA_OBJECT_NODA | TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                          TPMA_OBJECT_SENSITIVEDATAORIGIN;
    if (rsa) {
        p->type = TPM2_ALG_RSA;
        p->parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_AES;
        p->parameters.rsaDetail.symmetric.keyBits.aes = 128;
        p->parameters.rsaDetail.symmetric.mode.aes = TPM2_ALG_CFB;
        p->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.rsaDetail.keyBits = 2048;
    } else {
        p->type = TPM2_ALG_ECC;
        p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
        p->parameters.eccDetail.symmetric.keyBits.aes = 128;
        p->parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
        p->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
        p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
    }
}

/* The parent of a key file, opened for one operation. */
struct parent {
    ESYS_TR tr;
    bool transient; /* a primary made here: flushed by parent_close() */
};

static estc_err parent_open(const struct tpm2_op *op, uint32_t handle, struct parent *pa)
{
    struct tpm2_conn *c = op->c;
    pa->tr = ESYS_TR_NONE;
    pa->transient = false;
    if (handle != TPM2_RH_OWNER) {
        estc_err err = estc__tpm2_tr_from(op, handle, &pa->tr);
        if (err == ESTC_ERR_NOT_FOUND)
            return estc_error(op->ctx, ESTC_ERR_NOT_FOUND,
                              "%s: the key file's parent 0x%08x is not in the TPM", op->text,
                              (unsigned)handle);
        if (err == ESTC_OK)
            err = estc__tpm2_set_parent_auth(op, pa->tr);
        return err;
    }
    TPM2B_SENSITIVE_CREATE sens = {0};
    TPM2B_DATA outside = {0};
    TPML_PCR_SELECTION pcrs = {0};
    TPM2B_PUBLIC tmpl;
    owner_primary_template(false, &tmpl);
    TSS2_RC rc =
        Esys_CreatePrimary(c->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                           &sens, &tmpl, &outside, &pcrs, &pa->tr, NULL, NULL, NULL, NULL);
    if ((rc & 0xFFFF0000u) == 0 && (rc & TPM2_RC_FMT1) &&
        ((rc & (TPM2_RC_FMT1 | 0x3Fu)) == TPM2_RC_CURVE ||
         (rc & (TPM2_RC_FMT1 | 0x3Fu)) == TPM2_RC_ASYMMETRIC)) {
        owner_primary_template(true, &tmpl);
        rc = Esys_CreatePrimary(c->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                ESYS_TR_NONE, &sens, &tmpl, &outside, &pcrs, &pa->tr, NULL, NULL,
                                NULL, NULL);
    }
    if (rc != TSS2_RC_SUCCESS) {
        pa->tr = ESYS_TR_NONE;
        return estc__tpm2_tss_err(op, "Esys_CreatePrimary(owner)", rc);
    }
    pa->transient = true;
    return ESTC_OK;
}

static void parent_close(struct tpm2_conn *c, struct parent *pa)
{
    if (pa->transient)
        estc__tpm2_flush(c, &pa->tr);
    else
        estc__tpm2_tr_close(c, &pa->tr);
}

/* Fails with ESTC_ERR_EXISTS when the key file is there already, and with
 * ESTC_ERR_AUTH when its folder is open to others: another user could put
 * a key of their own in its place (the parent key is shared by every user
 * of the TPM) and have it certified. */
static estc_err keyfile_check_new(const struct tpm2_op *op)
{
    const char *path = op->a.key_file;
    struct stat st;
    if (lstat(path, &st) == 0)
        return estc_error(op->ctx, ESTC_ERR_EXISTS, "%s: the key file exists already", op->text);
    const char *slash = strrchr(path, '/');
    char *dir =
        slash == NULL ? strdup(".") : strndup(path, slash == path ? 1 : (size_t)(slash - path));
    if (dir == NULL)
        return ESTC_ERR_NOMEM;
    estc_err err = ESTC_OK;
    if (stat(dir, &st) != 0)
        err = estc_error(op->ctx, errno == ENOENT ? ESTC_ERR_NOT_FOUND : ESTC_ERR_IO,
                         "%s: the key file's folder %s: %s", op->text, dir, strerror(errno));
    else if (st.st_uid != geteuid() && st.st_uid != 0)
        err = estc_error(op->ctx, ESTC_ERR_AUTH,
                         "%s: the key file's folder %s belongs to another user (uid %u); refused",
                         op->text, dir, (unsigned)st.st_uid);
    else if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        err = estc_error(op->ctx, ESTC_ERR_AUTH,
                         "%s: the key file's folder %s is writable by group or others (mode "
                         "%04o); refused",
                         op->text, dir, (unsigned)(st.st_mode & 07777));
    free(dir);
    return err;
}

/*
 * Reads and decodes the key file of the address. The file is not a secret
 * (its private part is wrapped by the parent key and usable only in this
 * TPM), so others may read it; but it must not be writable by group or
 * others, nor be a symbolic link: the parent key is shared by every user of
 * the TPM, and another user who could put a key of their own in its place
 * would have that key used and certified (as keyfile_check_new() keeps them
 * from doing for a new file).
 */
static estc_err keyfile_read(const struct tpm2_op *op, struct tpm2_keyfile *kf)
{
    estc_buf data = {0};
    estc_err err = estc__read_secret_file(op->ctx, op->text, "the key file", op->a.key_file,
                                          ESTC__FILE_UNWRITABLE, KEYFILE_MAX, &data);
    if (err != ESTC_OK)
        return err;
    const char *why = estc__tpm2_keyfile_parse(data.data, data.len, kf);
    if (why != NULL)
        err = estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: not a usable TSS2 PRIVATE KEY file: %s",
                         op->text, why);
    estc_buf_free(&data);
    return err;
}

/* Reads the key file and loads it under its parent: @key and @pa to close
 * with keyfile_unload(). */
static estc_err keyfile_load(const struct tpm2_op *op, struct tpm2_keyfile *kf, struct parent *pa,
                             ESYS_TR *key)
{
    *key = ESYS_TR_NONE;
    pa->tr = ESYS_TR_NONE;
    pa->transient = false;
    estc_err err = keyfile_read(op, kf);
    if (err != ESTC_OK)
        return err;
    if (!kf->empty_auth)
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED,
                          "%s: the key file's key has a password (emptyAuth FALSE): not supported",
                          op->text);
    if (!signing_key(&kf->pub.publicArea))
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED,
                          "%s: the key file holds no unrestricted EC or RSA signing key", op->text);
    err = parent_open(op, kf->parent, pa);
    if (err != ESTC_OK)
        return err;
    TSS2_RC rc = Esys_Load(op->c->esys, pa->tr, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                           &kf->priv, &kf->pub, key);
    if (rc == TSS2_RC_SUCCESS)
        return ESTC_OK;
    *key = ESYS_TR_NONE;
    err = estc__tpm2_tss_err(op, "Esys_Load", rc);
    if (err == ESTC_ERR_ENGINE && (rc & 0xFFFF0000u) == 0)
        err = estc_error(op->ctx, ESTC_ERR_FORMAT,
                         "%s: the TPM refuses the key file (made by another TPM, or under "
                         "another parent?): Esys_Load: %s",
                         op->text, Tss2_RC_Decode(rc));
    return err;
}

static void keyfile_unload(struct tpm2_conn *c, struct parent *pa, ESYS_TR *key)
{
    estc__tpm2_flush(c, key);
    parent_close(c, pa);
}

/* Writes a key file of @pub and @priv under parent 0x40000001: 0600, all
 * or nothing, never over an existing file. */
static estc_err keyfile_write(const struct tpm2_op *op, const TPM2B_PUBLIC *pub,
                              const TPM2B_PRIVATE *priv)
{
    struct tpm2_keyfile kf = {.parent = TPM2_RH_OWNER, .empty_auth = true};
    kf.pub = *pub;
    kf.priv = *priv;
    char *pem = NULL;
    size_t pem_len = 0;
    const char *why = estc__tpm2_keyfile_encode(&kf, &pem, &pem_len);
    if (why != NULL)
        return estc_error(op->ctx, ESTC_ERR_ENGINE, "%s: %s", op->text, why);
    /* Its detail text names the path and the failed step. */
    estc_err err = estc_file_write(op->ctx, op->a.key_file, pem, pem_len, 0600, 0);
    OPENSSL_free(pem);
    return err;
}

static estc_err keyfile_generate(const struct tpm2_op *op, estc_key_type type)
{
    struct tpm2_conn *c = op->c;
    TPM2B_PUBLIC tmpl;
    key_template(type, &tmpl);
    struct parent pa = {ESYS_TR_NONE, false};
    TPM2B_PRIVATE *priv = NULL;
    TPM2B_PUBLIC *pub = NULL;
    estc_err err = keyfile_check_new(op);
    if (err == ESTC_OK && !(c->tested_types & (1u << type))) {
        err = check_params(op, &tmpl, key_type_name(type));
        if (err == ESTC_OK)
            c->tested_types |= 1u << type;
    }
    if (err == ESTC_OK)
        err = parent_open(op, TPM2_RH_OWNER, &pa);
    if (err != ESTC_OK)
        goto out;
    TPM2B_SENSITIVE_CREATE sens = {0};
    TPM2B_DATA outside = {0};
    TPML_PCR_SELECTION pcrs = {0};
    TSS2_RC rc = Esys_Create(c->esys, pa.tr, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sens,
                             &tmpl, &outside, &pcrs, &priv, &pub, NULL, NULL, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        err = estc__tpm2_tss_err(op, "Esys_Create", rc);
        goto out;
    }
    err = keyfile_write(op, pub, priv);
out:
    parent_close(c, &pa);
    Esys_Free(priv);
    Esys_Free(pub);
    return err;
}

static estc_err keyfile_import(const struct tpm2_op *op, const TPM2B_PUBLIC *pub,
                               const TPM2B_SENSITIVE *sens)
{
    struct tpm2_conn *c = op->c;
    struct parent pa = {ESYS_TR_NONE, false};
    TPM2B_PRIVATE *priv = NULL;
    estc_err err = keyfile_check_new(op);
    if (err == ESTC_OK)
        err = parent_open(op, TPM2_RH_OWNER, &pa);
    if (err == ESTC_OK)
        err = import_under(op, pa.tr, pub, sens, &priv);
    if (err == ESTC_OK)
        err = keyfile_write(op, pub, priv);
    parent_close(c, &pa);
    Esys_Free(priv);
    return err;
}

static estc_err keyfile_public(const struct tpm2_op *op, estc_buf *spki)
{
    struct tpm2_keyfile kf;
    struct parent pa;
    ESYS_TR key;
    /* Loaded, not only read: the answer says the key is usable here. */
    estc_err err = keyfile_load(op, &kf, &pa, &key);
    if (err == ESTC_OK)
        err = spki_of(op, &kf.pub.publicArea, spki);
    keyfile_unload(op->c, &pa, &key);
    return err;
}

static estc_err keyfile_sign(const struct tpm2_op *op, estc_sig_alg alg, estc_hash hash,
                             const uint8_t *digest, size_t digest_len, estc_buf *sig)
{
    struct tpm2_keyfile kf;
    struct parent pa;
    ESYS_TR key;
    estc_err err = keyfile_load(op, &kf, &pa, &key);
    if (err == ESTC_OK)
        err = sign_with(op, key, &kf.pub, alg, hash, digest, digest_len, sig);
    keyfile_unload(op->c, &pa, &key);
    return err;
}

estc_err estc__tpm2_keyfile_remove(const struct tpm2_op *op)
{
    /* Only a TSS2 key file is removed: a wrong path never deletes another
     * file. */
    struct tpm2_keyfile kf;
    estc_err err = keyfile_read(op, &kf);
    if (err != ESTC_OK)
        return err;
    if (unlink(op->a.key_file) != 0)
        return estc_error(op->ctx, errno == ENOENT ? ESTC_ERR_NOT_FOUND : ESTC_ERR_IO,
                          "%s: cannot remove the key file: %s", op->text, strerror(errno));
    return ESTC_OK;
}

estc_err estc__tpm2_keyfile_exists(const struct tpm2_op *op, bool *found)
{
    struct stat st;
    *found = false;
    if (lstat(op->a.key_file, &st) == 0) {
        *found = true;
        return ESTC_OK;
    }
    if (errno == ENOENT || errno == ENOTDIR)
        return ESTC_OK;
    return estc_error(op->ctx, ESTC_ERR_IO, "%s: %s", op->text, strerror(errno));
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Whether file @name in folder @dir begins as a PEM TSS2 PRIVATE KEY. */
static bool looks_like_keyfile(int dfd, const char *name)
{
    static const char head[] = "-----BEGIN TSS2 PRIVATE KEY-----";
    int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return false;
    char buf[sizeof(head) - 1];
    struct stat st;
    bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
              read(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf) &&
              memcmp(buf, head, sizeof(buf)) == 0;
    close(fd);
    return ok;
}

estc_err estc__tpm2_keyfile_list(const struct tpm2_op *op, estc_list_fn fn, void *arg)
{
    const char *dir = op->a.key_dir;
    DIR *d = opendir(dir);
    if (d == NULL)
        return errno == ENOENT ? ESTC_OK
                               : estc_error(op->ctx, ESTC_ERR_IO, "%s: key-dir %s: %s", op->text,
                                            dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    estc_err err = ESTC_OK;
    struct dirent *de;
    while (err == ESTC_OK && (de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || len < 5 || strcmp(de->d_name + len - 4, ".pem") != 0 ||
            !looks_like_keyfile(dirfd(d), de->d_name))
            continue;
        if (n == cap) {
            size_t ncap = cap == 0 ? 16 : cap * 2;
            char **grown = realloc(names, ncap * sizeof(*grown));
            if (grown == NULL) {
                err = ESTC_ERR_NOMEM;
                break;
            }
            names = grown;
            cap = ncap;
        }
        names[n] = strdup(de->d_name);
        if (names[n] == NULL)
            err = ESTC_ERR_NOMEM;
        else
            n++;
    }
    closedir(d);
    if (err == ESTC_OK && n > 1)
        qsort(names, n, sizeof(*names), name_cmp);
    bool more = true;
    for (size_t i = 0; i < n; i++) {
        if (err == ESTC_OK && more) {
            char *addr = NULL;
            err = estc__tpm2_compose_file(op, dir, names[i], &addr);
            if (err == ESTC_OK)
                more = fn(arg, addr, ESTC_OBJ_KEY);
            free(addr);
        }
        free(names[i]);
    }
    free(names);
    return err;
}
