/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DECODERs for the PEM key reference. The first turns a PEM block labelled
 * "ESTC KEY REFERENCE" into its body (the engine address) with the
 * structure name "estc-keyref"; the second (one each for EC and RSA) turns
 * such an address into a reference to the engine key, which OpenSSL gives
 * to our KEYMGMT's load(). Split like this, the reference works both where
 * PEM is decoded directly (PEM_read_bio_PrivateKey(), libssl) and through
 * OpenSSL's file: store (openssl -key FILE), which re-decodes what PEM
 * decoders give it.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "internal.h"

static void *dec_newctx(void *provctx)
{
    return provctx;
}

static void dec_freectx(void *vctx)
{
    (void)vctx;
}

static int pem_does_selection(void *provctx, int selection)
{
    (void)provctx;
    (void)selection;
    return 1;
}

static int key_does_selection(void *provctx, int selection)
{
    (void)provctx;
    return selection == 0 || (selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0;
}

static int pem_decode(void *vctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *object_cb,
                      void *object_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    struct estc__prov *prov = vctx;
    char *name = NULL, *header = NULL;
    unsigned char *data = NULL;
    long len = 0;
    BIO *in;
    int ok = 1, got;

    (void)selection;
    (void)pw_cb;
    (void)pw_cbarg;
    in = BIO_new_from_core_bio(prov->libctx, cin);
    if (in == NULL)
        return 0;
    ERR_set_mark();
    got = PEM_read_bio(in, &name, &header, &data, &len) > 0;
    ERR_pop_to_mark();
    /* Another kind of PEM block: not ours, let other decoders try. */
    if (got && strcmp(name, ESTC__REF_PEM_LABEL) == 0) {
        if (!estc__valid_address((const char *)data, (size_t)len)) {
            ESTC__RAISE(prov, ESTC__R_BAD_REFERENCE,
                        ESTC__REF_PEM_LABEL ": the body is not an engine address");
            ok = 0;
        } else {
            OSSL_PARAM params[3];

            params[0] =
                OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, data, (size_t)len);
            params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE,
                                                         (char *)ESTC__REF_STRUCTURE, 0);
            params[2] = OSSL_PARAM_construct_end();
            ok = object_cb(params, object_cbarg);
        }
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    if (data != NULL)
        OPENSSL_cleanse(data, len > 0 ? (size_t)len : 0); /* an address, perhaps with a PIN */
    OPENSSL_free(data);
    BIO_free(in);
    return ok;
}

static int key_decode(struct estc__prov *prov, OSSL_CORE_BIO *cin, estc__kt want,
                      OSSL_CALLBACK *object_cb, void *object_cbarg)
{
    char buf[ESTC_ADDRESS_MAX + 1];
    size_t n = 0, got;
    struct estc__key *key;
    struct estc__keyref ref;
    int type = OSSL_OBJECT_PKEY;
    OSSL_PARAM params[4];
    BIO *in;
    int ok;

    in = BIO_new_from_core_bio(prov->libctx, cin);
    if (in == NULL)
        return 0;
    while (n < sizeof(buf) && BIO_read_ex(in, buf + n, sizeof(buf) - n, &got) && got > 0)
        n += got;
    BIO_free(in);
    /* OpenSSL offers us every DER it decodes (a PKCS#8 key, say): what is
     * not an engine address is declined, silently, for other decoders. */
    char scheme[ESTC_SCHEME_MAX + 1];
    buf[n < sizeof(buf) ? n : sizeof(buf) - 1] = '\0';
    if (n == 0 || n >= sizeof(buf) || memchr(buf, '\0', n) != NULL ||
        estc_address_scheme(buf, scheme) != ESTC_OK)
        return 1;
    if (!estc__prov_need_default(prov)) {
        OPENSSL_cleanse(buf, sizeof(buf));
        return 0;
    }
    key = estc__key_from_engine(prov, buf, n, 0);
    OPENSSL_cleanse(buf, sizeof(buf));
    if (key == NULL)
        return 0;
    /* The other type's decoder takes it. */
    if (key->type != want) {
        estc__key_free(key);
        return 1;
    }
    ref.magic = ESTC__KEYREF_MAGIC;
    ref.key = key;
    params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE,
                                                 want == ESTC__KT_EC ? "EC" : "RSA", 0);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &ref, sizeof(ref));
    params[3] = OSSL_PARAM_construct_end();
    ok = object_cb(params, object_cbarg);
    estc__key_free(key);
    return ok;
}

static int ec_decode(void *vctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *object_cb,
                     void *object_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    (void)selection;
    (void)pw_cb;
    (void)pw_cbarg;
    return key_decode(vctx, cin, ESTC__KT_EC, object_cb, object_cbarg);
}

static int rsa_decode(void *vctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *object_cb,
                      void *object_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    (void)selection;
    (void)pw_cb;
    (void)pw_cbarg;
    return key_decode(vctx, cin, ESTC__KT_RSA, object_cb, object_cbarg);
}

const OSSL_DISPATCH estc__pem_decoder_functions[] = {
    {OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))dec_newctx},
    {OSSL_FUNC_DECODER_FREECTX, (void (*)(void))dec_freectx},
    {OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))pem_does_selection},
    {OSSL_FUNC_DECODER_DECODE, (void (*)(void))pem_decode},
    {0, NULL},
};

const OSSL_DISPATCH estc__ec_decoder_functions[] = {
    {OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))dec_newctx},
    {OSSL_FUNC_DECODER_FREECTX, (void (*)(void))dec_freectx},
    {OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))key_does_selection},
    {OSSL_FUNC_DECODER_DECODE, (void (*)(void))ec_decode},
    {0, NULL},
};

const OSSL_DISPATCH estc__rsa_decoder_functions[] = {
    {OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))dec_newctx},
    {OSSL_FUNC_DECODER_FREECTX, (void (*)(void))dec_freectx},
    {OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))key_does_selection},
    {OSSL_FUNC_DECODER_DECODE, (void (*)(void))rsa_decode},
    {0, NULL},
};
