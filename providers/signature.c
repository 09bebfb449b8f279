/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SIGNATURE for ECDSA and RSA (PKCS#1 v1.5 and PSS) with engine keys.
 * Hashing is done in software by another provider; only the digest goes to
 * the engine through estc_key_sign(). Verification uses the software copy
 * of the public key, so that in-process checks (X509_REQ_verify()) work.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/objects.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "internal.h"

struct sigctx {
    struct estc__prov *prov;
    estc__kt kt;
    struct estc__key *key; /* owned by the EVP_PKEY, which outlives us */
    EVP_MD *md;            /* NULL until a digest is set */
    estc_hash hash;
    EVP_MD_CTX *mdctx; /* digest_sign_* / digest_verify_* in progress */
    int pad;           /* RSA_PKCS1_PADDING or RSA_PKCS1_PSS_PADDING */
    int saltlen;       /* RSA_PSS_SALTLEN_* or a length */
    estc_hash mgf1;    /* 0: the signature's hash */
};

static void *newctx(void *provctx, const char *propq, estc__kt kt)
{
    struct sigctx *ctx = calloc(1, sizeof(*ctx));

    (void)propq;
    if (ctx == NULL) {
        ESTC__RAISE(provctx, ESTC__R_NOMEM, "signature context");
        return NULL;
    }
    ctx->prov = provctx;
    ctx->kt = kt;
    ctx->pad = RSA_PKCS1_PADDING;
    ctx->saltlen = RSA_PSS_SALTLEN_DIGEST;
    return ctx;
}

static void *ecdsa_newctx(void *provctx, const char *propq)
{
    return newctx(provctx, propq, ESTC__KT_EC);
}

static void *rsa_newctx(void *provctx, const char *propq)
{
    return newctx(provctx, propq, ESTC__KT_RSA);
}

static void freectx(void *vctx)
{
    struct sigctx *ctx = vctx;

    if (ctx == NULL)
        return;
    EVP_MD_free(ctx->md);
    EVP_MD_CTX_free(ctx->mdctx);
    free(ctx);
}

static void *dupctx(void *vctx)
{
    struct sigctx *src = vctx, *ctx;

    ctx = malloc(sizeof(*ctx));
    if (ctx == NULL) {
        ESTC__RAISE(src->prov, ESTC__R_NOMEM, "signature context");
        return NULL;
    }
    *ctx = *src;
    ctx->md = NULL;
    ctx->mdctx = NULL;
    if (src->md != NULL) {
        if (!EVP_MD_up_ref(src->md))
            goto fail;
        ctx->md = src->md;
    }
    if (src->mdctx != NULL) {
        ctx->mdctx = EVP_MD_CTX_new();
        if (ctx->mdctx == NULL || !EVP_MD_CTX_copy_ex(ctx->mdctx, src->mdctx))
            goto fail;
    }
    return ctx;
fail:
    freectx(ctx);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Digests and parameters                                                    */
/* ------------------------------------------------------------------------ */

static estc_hash hash_of(const EVP_MD *md)
{
    switch (EVP_MD_get_type(md)) {
    case NID_sha256:
        return ESTC_HASH_SHA256;
    case NID_sha384:
        return ESTC_HASH_SHA384;
    case NID_sha512:
        return ESTC_HASH_SHA512;
    default:
        return 0;
    }
}

static size_t hash_len(estc_hash h)
{
    switch (h) {
    case ESTC_HASH_SHA256:
        return 32;
    case ESTC_HASH_SHA384:
        return 48;
    case ESTC_HASH_SHA512:
        return 64;
    }
    return 0;
}

static const char *hash_name(estc_hash h)
{
    switch (h) {
    case ESTC_HASH_SHA256:
        return "SHA2-256";
    case ESTC_HASH_SHA384:
        return "SHA2-384";
    case ESTC_HASH_SHA512:
        return "SHA2-512";
    }
    return NULL;
}

/* The hash named @name if the engines support it, else 0 with an error. */
static estc_hash fetch_hash(struct sigctx *ctx, const char *name, EVP_MD **mdp)
{
    EVP_MD *md = EVP_MD_fetch(ctx->prov->libctx, name, ESTC__SW_PROPQ);
    estc_hash h = md != NULL ? hash_of(md) : 0;

    if (h == 0) {
        ESTC__RAISE(ctx->prov, ESTC__R_UNSUPPORTED,
                    "digest %s: engines sign SHA-256, SHA-384 and SHA-512 only", name);
        EVP_MD_free(md);
        return 0;
    }
    if (mdp != NULL)
        *mdp = md;
    else
        EVP_MD_free(md);
    return h;
}

static int set_md(struct sigctx *ctx, const char *name)
{
    EVP_MD *md = NULL;
    estc_hash h;

    if (ctx->mdctx != NULL) {
        ESTC__RAISE(ctx->prov, ESTC__R_UNSUPPORTED, "the digest cannot change mid-operation");
        return 0;
    }
    h = fetch_hash(ctx, name, &md);
    if (h == 0)
        return 0;
    EVP_MD_free(ctx->md);
    ctx->md = md;
    ctx->hash = h;
    return 1;
}

static int set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    struct sigctx *ctx = vctx;
    const OSSL_PARAM *p;
    const char *s;

    if (ctx == NULL)
        return 0;
    if (params == NULL)
        return 1;
    p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST);
    if (p != NULL && (!OSSL_PARAM_get_utf8_string_ptr(p, &s) || !set_md(ctx, s)))
        return 0;
    if (ctx->kt != ESTC__KT_RSA)
        return 1;

    p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE);
    if (p != NULL) {
        int pad = 0;

        if (p->data_type == OSSL_PARAM_UTF8_STRING) {
            if (!OSSL_PARAM_get_utf8_string_ptr(p, &s))
                return 0;
            if (strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0)
                pad = RSA_PKCS1_PADDING;
            else if (strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PSS) == 0)
                pad = RSA_PKCS1_PSS_PADDING;
        } else if (!OSSL_PARAM_get_int(p, &pad)) {
            return 0;
        }
        if (pad != RSA_PKCS1_PADDING && pad != RSA_PKCS1_PSS_PADDING) {
            ESTC__RAISE(ctx->prov, ESTC__R_UNSUPPORTED,
                        "RSA padding: engines sign PKCS#1 v1.5 and PSS only");
            return 0;
        }
        ctx->pad = pad;
    }
    p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN);
    if (p != NULL) {
        int len;

        if (p->data_type == OSSL_PARAM_UTF8_STRING) {
            if (!OSSL_PARAM_get_utf8_string_ptr(p, &s))
                return 0;
            if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST) == 0)
                len = RSA_PSS_SALTLEN_DIGEST;
            else if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_MAX) == 0)
                len = RSA_PSS_SALTLEN_MAX;
            else if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO) == 0)
                len = RSA_PSS_SALTLEN_AUTO;
            else
                len = atoi(s);
        } else if (!OSSL_PARAM_get_int(p, &len)) {
            return 0;
        }
        if (len < RSA_PSS_SALTLEN_MAX) {
            ESTC__RAISE(ctx->prov, ESTC__R_UNSUPPORTED, "PSS salt length %d", len);
            return 0;
        }
        ctx->saltlen = len;
    }
    p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST);
    if (p != NULL) {
        estc_hash h;

        if (!OSSL_PARAM_get_utf8_string_ptr(p, &s))
            return 0;
        h = fetch_hash(ctx, s, NULL);
        if (h == 0)
            return 0;
        ctx->mgf1 = h;
    }
    return 1;
}

static const OSSL_PARAM *ecdsa_settable(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
        OSSL_PARAM_END,
    };
    (void)vctx;
    (void)provctx;
    return params;
}

static const OSSL_PARAM *rsa_settable(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_PROPERTIES, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
        OSSL_PARAM_END,
    };
    (void)vctx;
    (void)provctx;
    return params;
}

/* PSS as the engines do it: salt as long as the hash, MGF1 with that hash. */
static int check_pss(struct sigctx *ctx, estc_hash h)
{
    if (ctx->saltlen >= 0 && (size_t)ctx->saltlen != hash_len(h)) {
        ESTC__RAISE(ctx->prov, ESTC__R_UNSUPPORTED,
                    "PSS salt length %d: engines use the digest length %zu", ctx->saltlen,
                    hash_len(h));
        return 0;
    }
    if (ctx->mgf1 != 0 && ctx->mgf1 != h) {
        ESTC__RAISE(ctx->prov, ESTC__R_UNSUPPORTED, "PSS: MGF1 must use the signature's hash");
        return 0;
    }
    return 1;
}

/* A software context that verifies like we sign (also gives the PSS AID). */
static EVP_PKEY_CTX *sw_verify_ctx(struct sigctx *ctx, estc_hash h)
{
    EVP_PKEY_CTX *v;
    int ok;

    v = EVP_PKEY_CTX_new_from_pkey(ctx->prov->libctx, ctx->key->pub, ESTC__SW_PROPQ);
    if (v == NULL || EVP_PKEY_verify_init(v) <= 0)
        goto fail;
    ok = 1;
    if (h != 0) {
        OSSL_PARAM params[2] = {
            OSSL_PARAM_construct_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, (char *)hash_name(h), 0),
            OSSL_PARAM_construct_end(),
        };
        ok = EVP_PKEY_CTX_set_params(v, params) > 0;
    }
    if (ok && ctx->kt == ESTC__KT_RSA) {
        ok = EVP_PKEY_CTX_set_rsa_padding(v, ctx->pad) > 0;
        if (ok && ctx->pad == RSA_PKCS1_PSS_PADDING)
            ok = EVP_PKEY_CTX_set_rsa_pss_saltlen(v, ctx->saltlen >= 0 ? ctx->saltlen
                                                                       : (int)hash_len(h)) > 0;
    }
    if (ok)
        return v;
fail:
    EVP_PKEY_CTX_free(v);
    return NULL;
}

static int algorithm_id(struct sigctx *ctx, OSSL_PARAM *p)
{
    X509_ALGOR *alg = NULL;
    unsigned char *der = NULL;
    int signid, len, ok = 0;

    if (ctx->md == NULL || ctx->key == NULL)
        return 0;
    if (ctx->kt == ESTC__KT_RSA && ctx->pad == RSA_PKCS1_PSS_PADDING) {
        EVP_PKEY_CTX *v = sw_verify_ctx(ctx, ctx->hash);

        ok = v != NULL && EVP_PKEY_CTX_get_params(v, p) > 0;
        EVP_PKEY_CTX_free(v);
        return ok;
    }
    if (!OBJ_find_sigid_by_algs(&signid, EVP_MD_get_type(ctx->md),
                                ctx->kt == ESTC__KT_EC ? NID_X9_62_id_ecPublicKey
                                                       : NID_rsaEncryption))
        return 0;
    alg = X509_ALGOR_new();
    if (alg == NULL || !X509_ALGOR_set0(alg, OBJ_nid2obj(signid),
                                        ctx->kt == ESTC__KT_EC ? V_ASN1_UNDEF : V_ASN1_NULL, NULL))
        goto end;
    len = i2d_X509_ALGOR(alg, &der);
    if (len <= 0)
        goto end;
    ok = OSSL_PARAM_set_octet_string(p, der, (size_t)len);
end:
    OPENSSL_free(der);
    X509_ALGOR_free(alg);
    return ok;
}

static int get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    struct sigctx *ctx = vctx;
    OSSL_PARAM *p;

    if (ctx == NULL)
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID);
    if (p != NULL && !algorithm_id(ctx, p))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST);
    if (p != NULL &&
        !OSSL_PARAM_set_utf8_string(p, ctx->md != NULL ? EVP_MD_get0_name(ctx->md) : ""))
        return 0;
    if (ctx->kt != ESTC__KT_RSA)
        return 1;
    p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PAD_MODE);
    if (p != NULL) {
        int ok = p->data_type == OSSL_PARAM_INTEGER
                     ? OSSL_PARAM_set_int(p, ctx->pad)
                     : OSSL_PARAM_set_utf8_string(p, ctx->pad == RSA_PKCS1_PSS_PADDING
                                                         ? OSSL_PKEY_RSA_PAD_MODE_PSS
                                                         : OSSL_PKEY_RSA_PAD_MODE_PKCSV15);
        if (!ok)
            return 0;
    }
    p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN);
    if (p != NULL) {
        /* What we really use: the digest length. */
        int len = ctx->hash != 0 ? (int)hash_len(ctx->hash) : ctx->saltlen;
        int ok;

        if (p->data_type == OSSL_PARAM_INTEGER) {
            ok = OSSL_PARAM_set_int(p, len);
        } else {
            char buf[16];

            snprintf(buf, sizeof(buf), "%d", len);
            ok = OSSL_PARAM_set_utf8_string(p, buf);
        }
        if (!ok)
            return 0;
    }
    p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST);
    if (p != NULL) {
        estc_hash h = ctx->mgf1 != 0 ? ctx->mgf1 : ctx->hash;

        if (!OSSL_PARAM_set_utf8_string(p, h != 0 ? hash_name(h) : ""))
            return 0;
    }
    return 1;
}

static const OSSL_PARAM *ecdsa_gettable(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_END,
    };
    (void)vctx;
    (void)provctx;
    return params;
}

static const OSSL_PARAM *rsa_gettable(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
        OSSL_PARAM_END,
    };
    (void)vctx;
    (void)provctx;
    return params;
}

/* ------------------------------------------------------------------------ */
/* Sign and verify                                                           */
/* ------------------------------------------------------------------------ */

static int op_init(struct sigctx *ctx, void *provkey, const OSSL_PARAM params[], bool sign)
{
    struct estc__key *key = provkey;

    if (ctx == NULL || key == NULL || key->pub == NULL)
        return 0;
    if (key->type != ctx->kt) {
        ESTC__RAISE(ctx->prov, ESTC__R_WRONG_KEY_TYPE, "key type does not fit the algorithm");
        return 0;
    }
    if (sign && key->addr == NULL) {
        ESTC__RAISE(ctx->prov, ESTC__R_UNSUPPORTED, "a public key cannot sign");
        return 0;
    }
    ctx->key = key;
    EVP_MD_CTX_free(ctx->mdctx);
    ctx->mdctx = NULL;
    return set_ctx_params(ctx, params);
}

static int sign_init(void *vctx, void *provkey, const OSSL_PARAM params[])
{
    return op_init(vctx, provkey, params, true);
}

static int verify_init(void *vctx, void *provkey, const OSSL_PARAM params[])
{
    return op_init(vctx, provkey, params, false);
}

/* The hash of a bare digest: the one set, or (ECDSA) told by its length. */
static estc_hash digest_hash(struct sigctx *ctx, size_t len)
{
    if (ctx->md != NULL) {
        if (len != hash_len(ctx->hash)) {
            ESTC__RAISE(ctx->prov, ESTC__R_UNSUPPORTED, "digest of %zu bytes for %s", len,
                        hash_name(ctx->hash));
            return 0;
        }
        return ctx->hash;
    }
    if (ctx->kt == ESTC__KT_EC) {
        for (estc_hash h = ESTC_HASH_SHA256; h <= ESTC_HASH_SHA512; h++) {
            if (hash_len(h) == len)
                return h;
        }
    }
    ESTC__RAISE(ctx->prov, ESTC__R_UNSUPPORTED, "signing %zu bytes without a digest set", len);
    return 0;
}

static int engine_sign(struct sigctx *ctx, estc_hash h, const unsigned char *dgst, size_t dlen,
                       unsigned char *sig, size_t *siglen, size_t sigsize)
{
    struct estc__prov *prov = ctx->prov;
    estc_sig_alg alg = ESTC_SIG_ECDSA;
    estc_buf out = {0};
    estc_err err;

    if (ctx->kt == ESTC__KT_RSA) {
        alg = ESTC_SIG_RSA_PKCS1;
        if (ctx->pad == RSA_PKCS1_PSS_PADDING) {
            if (!check_pss(ctx, h))
                return 0;
            alg = ESTC_SIG_RSA_PSS;
        }
    }
    pthread_mutex_lock(&prov->lock);
    err = estc_key_sign(prov->ectx, ctx->key->addr, alg, h, dgst, dlen, &out);
    if (err != ESTC_OK)
        estc__prov_raise_engine(prov, err, "signing");
    pthread_mutex_unlock(&prov->lock);
    if (err != ESTC_OK)
        return 0;
    if (out.len > sigsize) {
        ESTC__RAISE(prov, ESTC__R_INTERNAL, "signature of %zu bytes, room for %zu", out.len,
                    sigsize);
        estc_buf_free(&out);
        return 0;
    }
    memcpy(sig, out.data, out.len);
    *siglen = out.len;
    estc_buf_free(&out);
    return 1;
}

static int sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                const unsigned char *tbs, size_t tbslen)
{
    struct sigctx *ctx = vctx;
    estc_hash h;

    if (ctx == NULL || ctx->key == NULL || siglen == NULL)
        return 0;
    if (sig == NULL) {
        *siglen = (size_t)EVP_PKEY_get_size(ctx->key->pub);
        return 1;
    }
    h = digest_hash(ctx, tbslen);
    if (h == 0)
        return 0;
    return engine_sign(ctx, h, tbs, tbslen, sig, siglen, sigsize);
}

static int sw_verify(struct sigctx *ctx, estc_hash h, const unsigned char *sig, size_t siglen,
                     const unsigned char *tbs, size_t tbslen)
{
    EVP_PKEY_CTX *v;
    int ok;

    if (ctx->kt == ESTC__KT_RSA && ctx->pad == RSA_PKCS1_PSS_PADDING && !check_pss(ctx, h))
        return 0;
    v = sw_verify_ctx(ctx, h);
    ok = v != NULL && EVP_PKEY_verify(v, sig, siglen, tbs, tbslen) == 1;
    EVP_PKEY_CTX_free(v);
    return ok;
}

static int verify(void *vctx, const unsigned char *sig, size_t siglen, const unsigned char *tbs,
                  size_t tbslen)
{
    struct sigctx *ctx = vctx;
    estc_hash h;

    if (ctx == NULL || ctx->key == NULL)
        return 0;
    h = digest_hash(ctx, tbslen);
    return h != 0 && sw_verify(ctx, h, sig, siglen, tbs, tbslen);
}

static int digest_init(struct sigctx *ctx, const char *mdname, void *provkey,
                       const OSSL_PARAM params[], bool sign)
{
    if (!op_init(ctx, provkey, params, sign))
        return 0;
    if (mdname != NULL && mdname[0] != '\0') {
        if (!set_md(ctx, mdname))
            return 0;
    } else if (ctx->md == NULL && !set_md(ctx, "SHA2-256")) {
        return 0;
    }
    ctx->mdctx = EVP_MD_CTX_new();
    if (ctx->mdctx == NULL || !EVP_DigestInit_ex2(ctx->mdctx, ctx->md, NULL)) {
        EVP_MD_CTX_free(ctx->mdctx);
        ctx->mdctx = NULL;
        return 0;
    }
    return 1;
}

static int digest_sign_init(void *vctx, const char *mdname, void *provkey,
                            const OSSL_PARAM params[])
{
    return digest_init(vctx, mdname, provkey, params, true);
}

static int digest_verify_init(void *vctx, const char *mdname, void *provkey,
                              const OSSL_PARAM params[])
{
    return digest_init(vctx, mdname, provkey, params, false);
}

static int digest_update(void *vctx, const unsigned char *data, size_t len)
{
    struct sigctx *ctx = vctx;

    if (ctx == NULL || ctx->mdctx == NULL)
        return 0;
    return EVP_DigestUpdate(ctx->mdctx, data, len);
}

static int digest_sign_final(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize)
{
    struct sigctx *ctx = vctx;
    unsigned char dgst[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;

    if (ctx == NULL || ctx->mdctx == NULL || siglen == NULL)
        return 0;
    /* A size query must leave the digest running. */
    if (sig == NULL) {
        *siglen = (size_t)EVP_PKEY_get_size(ctx->key->pub);
        return 1;
    }
    if (!EVP_DigestFinal_ex(ctx->mdctx, dgst, &dlen))
        return 0;
    return engine_sign(ctx, ctx->hash, dgst, dlen, sig, siglen, sigsize);
}

static int digest_verify_final(void *vctx, const unsigned char *sig, size_t siglen)
{
    struct sigctx *ctx = vctx;
    unsigned char dgst[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;

    if (ctx == NULL || ctx->mdctx == NULL)
        return 0;
    if (!EVP_DigestFinal_ex(ctx->mdctx, dgst, &dlen))
        return 0;
    return sw_verify(ctx, ctx->hash, sig, siglen, dgst, dlen);
}

#define SIG_COMMON                                                                                 \
    {OSSL_FUNC_SIGNATURE_FREECTX, (void (*)(void))freectx},                                        \
        {OSSL_FUNC_SIGNATURE_DUPCTX, (void (*)(void))dupctx},                                      \
        {OSSL_FUNC_SIGNATURE_SIGN_INIT, (void (*)(void))sign_init},                                \
        {OSSL_FUNC_SIGNATURE_SIGN, (void (*)(void))sign},                                          \
        {OSSL_FUNC_SIGNATURE_VERIFY_INIT, (void (*)(void))verify_init},                            \
        {OSSL_FUNC_SIGNATURE_VERIFY, (void (*)(void))verify},                                      \
        {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void))digest_sign_init},                  \
        {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, (void (*)(void))digest_update},                   \
        {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, (void (*)(void))digest_sign_final},                \
        {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, (void (*)(void))digest_verify_init},              \
        {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, (void (*)(void))digest_update},                 \
        {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, (void (*)(void))digest_verify_final},            \
        {OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, (void (*)(void))get_ctx_params},                      \
    {                                                                                              \
        OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, (void (*)(void))set_ctx_params                         \
    }

const OSSL_DISPATCH estc__ecdsa_signature_functions[] = {
    {OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))ecdsa_newctx},
    {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, (void (*)(void))ecdsa_gettable},
    {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))ecdsa_settable},
    SIG_COMMON,
    {0, NULL},
};

const OSSL_DISPATCH estc__rsa_signature_functions[] = {
    {OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))rsa_newctx},
    {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, (void (*)(void))rsa_gettable},
    {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))rsa_settable},
    SIG_COMMON,
    {0, NULL},
};
