/* SPDX-License-Identifier: Apache-2.0 */
/*
 * KEYMGMT for EC and RSA engine keys. A key is its engine address plus a
 * software copy of the public part; parameters are answered from that copy.
 * Import and export carry public data only: the private key never leaves
 * its engine, so an export that selects it is refused.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "internal.h"

/* ------------------------------------------------------------------------ */
/* Key objects                                                               */
/* ------------------------------------------------------------------------ */

void estc__key_free(struct estc__key *key)
{
    if (key == NULL)
        return;
    /* The address may carry a PIN: wiped before the memory goes back. */
    if (key->addr != NULL)
        OPENSSL_cleanse(key->addr, strlen(key->addr));
    free(key->addr);
    EVP_PKEY_free(key->pub);
    free(key);
}

static struct estc__key *key_new(struct estc__prov *prov, estc__kt type)
{
    struct estc__key *key = calloc(1, sizeof(*key));

    if (key == NULL) {
        ESTC__RAISE(prov, ESTC__R_NOMEM, "key object");
        return NULL;
    }
    key->prov = prov;
    key->type = type;
    return key;
}

static estc__kt type_of(const EVP_PKEY *pkey)
{
    if (EVP_PKEY_is_a(pkey, "EC"))
        return ESTC__KT_EC;
    if (EVP_PKEY_is_a(pkey, "RSA"))
        return ESTC__KT_RSA;
    return 0;
}

struct estc__key *estc__key_from_engine(struct estc__prov *prov, const char *addr, size_t len,
                                        estc__kt want)
{
    struct estc__key *key = NULL;
    estc_buf spki = {0};
    const unsigned char *p;
    estc_err err;
    char *a;

    if (!estc__valid_address(addr, len)) {
        ESTC__RAISE(prov, ESTC__R_BAD_REFERENCE, "not an engine address");
        return NULL;
    }
    a = strndup(addr, len);
    if (a == NULL) {
        ESTC__RAISE(prov, ESTC__R_NOMEM, "key address");
        return NULL;
    }
    pthread_mutex_lock(&prov->lock);
    err = estc_key_public(prov->ectx, a, &spki);
    if (err != ESTC_OK)
        estc__prov_raise_engine(prov, err, "reading the public key");
    pthread_mutex_unlock(&prov->lock);
    if (err != ESTC_OK)
        goto fail;

    key = key_new(prov, 0);
    if (key == NULL)
        goto fail;
    p = spki.data;
    key->pub = d2i_PUBKEY_ex(NULL, &p, (long)spki.len, prov->libctx, ESTC__SW_PROPQ);
    if (key->pub == NULL || p != spki.data + spki.len) {
        ESTC__RAISE(prov, ESTC__R_ENGINE, "%s: the engine's public key does not parse", a);
        goto fail;
    }
    key->type = type_of(key->pub);
    if (key->type == 0) {
        ESTC__RAISE(prov, ESTC__R_UNSUPPORTED, "%s: neither an EC nor an RSA key", a);
        goto fail;
    }
    if (want != 0 && key->type != want) {
        ESTC__RAISE(prov, ESTC__R_WRONG_KEY_TYPE, "%s: not an %s key", a,
                    want == ESTC__KT_EC ? "EC" : "RSA");
        goto fail;
    }
    key->has_pub = true;
    key->addr = a;
    estc_buf_free(&spki);
    return key;

fail:
    estc__key_free(key);
    estc_buf_free(&spki);
    OPENSSL_cleanse(a, len);
    free(a);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* KEYMGMT                                                                   */
/* ------------------------------------------------------------------------ */

static void *ec_new(void *provctx)
{
    return key_new(provctx, ESTC__KT_EC);
}

static void *rsa_new(void *provctx)
{
    return key_new(provctx, ESTC__KT_RSA);
}

static void km_free(void *keydata)
{
    estc__key_free(keydata);
}

/* The reference comes from our STORE or DECODER, in this process. */
static void *load_ref(const void *reference, size_t size, estc__kt want)
{
    const struct estc__keyref *ref = reference;
    struct estc__key *src, *key;

    if (ref == NULL || size != sizeof(*ref) || ref->magic != ESTC__KEYREF_MAGIC)
        return NULL;
    src = ref->key;
    if (src->type != want) {
        ESTC__RAISE(src->prov, ESTC__R_WRONG_KEY_TYPE, "%s: not an %s key", src->addr,
                    want == ESTC__KT_EC ? "EC" : "RSA");
        return NULL;
    }
    key = key_new(src->prov, src->type);
    if (key == NULL)
        return NULL;
    key->addr = strdup(src->addr);
    if (key->addr == NULL || !EVP_PKEY_up_ref(src->pub)) {
        ESTC__RAISE(src->prov, ESTC__R_NOMEM, "key object");
        estc__key_free(key);
        return NULL;
    }
    key->pub = src->pub;
    key->has_pub = true;
    return key;
}

static void *ec_load(const void *reference, size_t size)
{
    return load_ref(reference, size, ESTC__KT_EC);
}

static void *rsa_load(const void *reference, size_t size)
{
    return load_ref(reference, size, ESTC__KT_RSA);
}

static int km_has(const void *keydata, int selection)
{
    const struct estc__key *key = keydata;
    int ok = 1;

    if (key == NULL)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0)
        ok = ok && key->addr != NULL;
    if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0)
        ok = ok && key->has_pub;
    if ((selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) != 0 && key->type == ESTC__KT_EC)
        ok = ok && key->pub != NULL;
    return ok;
}

static int km_validate(const void *keydata, int selection, int checktype)
{
    (void)checktype;
    return km_has(keydata, selection);
}

static int km_match(const void *keydata1, const void *keydata2, int selection)
{
    const struct estc__key *k1 = keydata1, *k2 = keydata2;

    if (k1 == NULL || k2 == NULL || k1->pub == NULL || k2->pub == NULL || k1->type != k2->type)
        return 0;
    /* The same public key means the same key pair, wherever it lives. */
    if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0)
        return k1->has_pub && k2->has_pub && EVP_PKEY_eq(k1->pub, k2->pub) == 1;
    if ((selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS) != 0)
        return EVP_PKEY_parameters_eq(k1->pub, k2->pub) == 1;
    return 1;
}

static const char *const private_params[] = {
    OSSL_PKEY_PARAM_PRIV_KEY,         OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
    OSSL_PKEY_PARAM_RSA_FACTOR2,      OSSL_PKEY_PARAM_RSA_EXPONENT1, OSSL_PKEY_PARAM_RSA_EXPONENT2,
    OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
};

static int km_import(void *keydata, int selection, const OSSL_PARAM params[])
{
    struct estc__key *key = keydata;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_PKEY *pkey = NULL;
    int sel;

    if (key == NULL || params == NULL)
        return 0;
    for (size_t i = 0; i < sizeof(private_params) / sizeof(private_params[0]); i++) {
        if (OSSL_PARAM_locate_const(params, private_params[i]) != NULL) {
            ESTC__RAISE(key->prov, ESTC__R_EXPORT_REFUSED,
                        "the estc provider holds no private key material");
            return 0;
        }
    }
    if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0)
        sel = EVP_PKEY_PUBLIC_KEY;
    else if ((selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS) != 0)
        sel = EVP_PKEY_KEY_PARAMETERS;
    else
        return 0;
    pctx = EVP_PKEY_CTX_new_from_name(key->prov->libctx, key->type == ESTC__KT_EC ? "EC" : "RSA",
                                      ESTC__SW_PROPQ);
    if (pctx == NULL || EVP_PKEY_fromdata_init(pctx) <= 0 ||
        EVP_PKEY_fromdata(pctx, &pkey, sel, (OSSL_PARAM *)params) <= 0) {
        EVP_PKEY_CTX_free(pctx);
        return 0;
    }
    EVP_PKEY_CTX_free(pctx);
    EVP_PKEY_free(key->pub);
    key->pub = pkey;
    key->has_pub = sel == EVP_PKEY_PUBLIC_KEY;
    return 1;
}

static const OSSL_PARAM ec_public_types[] = {
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM rsa_public_types[] = {
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM *ec_io_types(int selection)
{
    (void)selection;
    return ec_public_types;
}

static const OSSL_PARAM *rsa_io_types(int selection)
{
    (void)selection;
    return rsa_public_types;
}

static int km_export(void *keydata, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
    struct estc__key *key = keydata;
    OSSL_PARAM *params = NULL;
    int ok;

    if (key == NULL || key->pub == NULL)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) {
        ESTC__RAISE(key->prov, ESTC__R_EXPORT_REFUSED, "%s: private key export refused",
                    key->addr != NULL ? key->addr : "public key");
        return 0;
    }
    if (EVP_PKEY_todata(key->pub,
                        (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0 && key->has_pub
                            ? EVP_PKEY_PUBLIC_KEY
                            : EVP_PKEY_KEY_PARAMETERS,
                        &params) <= 0)
        return 0;
    ok = cb(params, cbarg);
    OSSL_PARAM_free(params);
    return ok;
}

static int km_get_params(void *keydata, OSSL_PARAM params[])
{
    struct estc__key *key = keydata;

    if (key == NULL || key->pub == NULL)
        return 0;
    /* bits, security-bits, max-size, group-name, encoded-pub-key, ... are
     * the public key's; the software copy answers them. */
    return EVP_PKEY_get_params(key->pub, params);
}

static const OSSL_PARAM *ec_gettable(void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
        OSSL_PARAM_END,
    };
    (void)provctx;
    return params;
}

static const OSSL_PARAM *rsa_gettable(void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
        OSSL_PARAM_END,
    };
    (void)provctx;
    return params;
}

static const char *ec_operation_name(int operation_id)
{
    return operation_id == OSSL_OP_SIGNATURE ? "ECDSA" : NULL;
}

static const char *rsa_operation_name(int operation_id)
{
    return operation_id == OSSL_OP_SIGNATURE ? "RSA" : NULL;
}

static void *km_dup(const void *keydata, int selection)
{
    const struct estc__key *src = keydata;
    struct estc__key *key;

    (void)selection;
    if (src == NULL)
        return NULL;
    key = key_new(src->prov, src->type);
    if (key == NULL)
        return NULL;
    if (src->addr != NULL) {
        key->addr = strdup(src->addr);
        if (key->addr == NULL)
            goto nomem;
    }
    if (src->pub != NULL) {
        if (!EVP_PKEY_up_ref(src->pub))
            goto nomem;
        key->pub = src->pub;
    }
    key->has_pub = src->has_pub;
    return key;
nomem:
    ESTC__RAISE(src->prov, ESTC__R_NOMEM, "key object");
    estc__key_free(key);
    return NULL;
}

#define KM_COMMON                                                                                  \
    {OSSL_FUNC_KEYMGMT_FREE, (void (*)(void))km_free},                                             \
        {OSSL_FUNC_KEYMGMT_HAS, (void (*)(void))km_has},                                           \
        {OSSL_FUNC_KEYMGMT_VALIDATE, (void (*)(void))km_validate},                                 \
        {OSSL_FUNC_KEYMGMT_MATCH, (void (*)(void))km_match},                                       \
        {OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void))km_import},                                     \
        {OSSL_FUNC_KEYMGMT_EXPORT, (void (*)(void))km_export},                                     \
        {OSSL_FUNC_KEYMGMT_GET_PARAMS, (void (*)(void))km_get_params},                             \
    {                                                                                              \
        OSSL_FUNC_KEYMGMT_DUP, (void (*)(void))km_dup                                              \
    }

const OSSL_DISPATCH estc__ec_keymgmt_functions[] = {
    {OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))ec_new},
    {OSSL_FUNC_KEYMGMT_LOAD, (void (*)(void))ec_load},
    {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))ec_io_types},
    {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))ec_io_types},
    {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))ec_gettable},
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))ec_operation_name},
    KM_COMMON,
    {0, NULL},
};

const OSSL_DISPATCH estc__rsa_keymgmt_functions[] = {
    {OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))rsa_new},
    {OSSL_FUNC_KEYMGMT_LOAD, (void (*)(void))rsa_load},
    {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))rsa_io_types},
    {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))rsa_io_types},
    {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))rsa_gettable},
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))rsa_operation_name},
    KM_COMMON,
    {0, NULL},
};
