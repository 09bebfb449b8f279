/* SPDX-License-Identifier: Apache-2.0 */
/*
 * STORE for engine addresses: OSSL_STORE_open("mem:est-key") yields the key
 * (when the engine has one there) and then the certificate (when it has
 * one). The key is handed over as its address with our structure name, so
 * that OpenSSL runs our DECODER on it and builds the EVP_PKEY with our
 * KEYMGMT, whatever provider is preferred for EC and RSA.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/store.h>

#include "internal.h"

struct storectx {
    struct estc__prov *prov;
    char *addr;
    int step; /* 0: key next, 1: certificate next, 2: end */
    int expect;
    /* A prefix (an address that names no one object, "pkcs11:token=T"):
     * the addresses of the objects under it, handed out as names, which is
     * what `openssl storeutl` lists. */
    bool listing;
    char **names;
    size_t n_names, next_name;
};

static bool collect_name(void *arg, const char *addr, estc_obj_kind kind)
{
    struct storectx *ctx = arg;
    (void)kind;
    for (size_t i = 0; i < ctx->n_names; i++) {
        if (strcmp(ctx->names[i], addr) == 0)
            return true; /* a key and its certificate may share an address */
    }
    char **grown = realloc(ctx->names, (ctx->n_names + 1) * sizeof(*grown));
    if (grown == NULL)
        return false;
    ctx->names = grown;
    if ((grown[ctx->n_names] = strdup(addr)) == NULL)
        return false;
    ctx->n_names++;
    return true;
}

/* Whether @addr names no single object but a place objects are under: the
 * engine refuses it as an object's address. Then the names of the objects
 * under it are collected. */
static void detect_prefix(struct storectx *ctx)
{
    bool found = false;
    estc_ctx *ectx = ctx->prov->ectx;
    pthread_mutex_lock(&ctx->prov->lock);
    estc_err err = estc_object_exists(ectx, ctx->addr, ESTC_OBJ_KEY, &found);
    if (err == ESTC_ERR_BAD_ADDRESS) {
        static const estc_obj_kind kinds[] = {ESTC_OBJ_KEY, ESTC_OBJ_CERT, ESTC_OBJ_TRUST};
        ctx->listing = true;
        for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
            /* A kind the engine cannot enumerate is left out. */
            if (estc_object_list(ectx, ctx->addr, kinds[i], collect_name, ctx) != ESTC_OK)
                estc_ctx_clear_error(ectx);
        }
    }
    estc_ctx_clear_error(ectx);
    pthread_mutex_unlock(&ctx->prov->lock);
}

static void *store_open(void *provctx, const char *uri)
{
    struct estc__prov *prov = provctx;
    struct storectx *ctx;

    if (uri == NULL || !estc__valid_address(uri, strlen(uri))) {
        ESTC__RAISE(prov, ESTC__R_BAD_REFERENCE, "not an engine address");
        return NULL;
    }
    /* Before any engine call: a token without SHA-256 fails misleadingly. */
    if (!estc__prov_need_default(prov))
        return NULL;
    ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL || (ctx->addr = strdup(uri)) == NULL) {
        free(ctx);
        ESTC__RAISE(prov, ESTC__R_NOMEM, "store context");
        return NULL;
    }
    ctx->prov = prov;
    detect_prefix(ctx);
    return ctx;
}

static int store_close(void *vctx)
{
    struct storectx *ctx = vctx;

    if (ctx != NULL) {
        for (size_t i = 0; i < ctx->n_names; i++)
            free(ctx->names[i]);
        free(ctx->names);
        free(ctx->addr);
        free(ctx);
    }
    return 1;
}

static const OSSL_PARAM *store_settable(void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_int(OSSL_STORE_PARAM_EXPECT, NULL),
        OSSL_PARAM_END,
    };
    (void)provctx;
    return params;
}

static int store_set_params(void *vctx, const OSSL_PARAM params[])
{
    struct storectx *ctx = vctx;
    const OSSL_PARAM *p;

    if (ctx == NULL)
        return 0;
    p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_EXPECT);
    if (p != NULL && !OSSL_PARAM_get_int(p, &ctx->expect))
        return 0;
    return 1;
}

/* Whether the engine has an object of @kind at the address. */
static int has_object(struct storectx *ctx, estc_obj_kind kind, bool *found)
{
    estc_err err;

    pthread_mutex_lock(&ctx->prov->lock);
    err = estc_object_exists(ctx->prov->ectx, ctx->addr, kind, found);
    if (err != ESTC_OK)
        estc__prov_raise_engine(ctx->prov, err, "looking up the object");
    pthread_mutex_unlock(&ctx->prov->lock);
    return err == ESTC_OK;
}

/*
 * Whether the engine holds a key at the address, asked once. Without a PIN
 * an engine may not confirm the private key (ESTC_ERR_AUTH), but the public
 * half of a token key is public: when it can be read, the key is there, and
 * `openssl pkey -pubout` needs nothing more. Signing with it still asks the
 * engine, which then wants its PIN.
 */
static int has_key(struct storectx *ctx, bool *found)
{
    estc_ctx *ectx = ctx->prov->ectx;
    estc_buf spki = {0};
    estc_err err;

    pthread_mutex_lock(&ctx->prov->lock);
    err = estc_object_exists(ectx, ctx->addr, ESTC_OBJ_KEY, found);
    if (err == ESTC_ERR_AUTH) {
        /* The public half decides; its error is the one to report. */
        err = estc_key_public(ectx, ctx->addr, &spki);
        estc_buf_free(&spki);
        *found = err == ESTC_OK;
        if (err == ESTC_ERR_NOT_FOUND) {
            estc_ctx_clear_error(ectx);
            err = ESTC_OK; /* no key here: the certificate may still be */
        }
    }
    if (err != ESTC_OK)
        estc__prov_raise_engine(ctx->prov, err, "looking up the object");
    pthread_mutex_unlock(&ctx->prov->lock);
    return err == ESTC_OK;
}

static int load_key(struct storectx *ctx, OSSL_CALLBACK *cb, void *cbarg, bool *done)
{
    int type = OSSL_OBJECT_PKEY;
    bool found = false;
    OSSL_PARAM params[4];

    if (!has_key(ctx, &found))
        return 0;
    if (!found)
        return 1;
    params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
    params[1] =
        OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, ctx->addr, strlen(ctx->addr));
    params[2] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE,
                                                 (char *)ESTC__REF_STRUCTURE, 0);
    params[3] = OSSL_PARAM_construct_end();
    *done = true;
    return cb(params, cbarg);
}

static int load_cert(struct storectx *ctx, OSSL_CALLBACK *cb, void *cbarg, bool *done)
{
    int type = OSSL_OBJECT_CERT;
    bool cert = false, trust = false;
    estc_buf der = {0};
    OSSL_PARAM params[3];
    estc_err err;
    int ok;

    if (!has_object(ctx, ESTC_OBJ_CERT, &cert))
        return 0;
    if (!cert && !has_object(ctx, ESTC_OBJ_TRUST, &trust))
        return 0;
    if (!cert && !trust)
        return 1;
    pthread_mutex_lock(&ctx->prov->lock);
    err = estc_cert_load(ctx->prov->ectx, ctx->addr, &der);
    if (err != ESTC_OK)
        estc__prov_raise_engine(ctx->prov, err, "loading the certificate");
    pthread_mutex_unlock(&ctx->prov->lock);
    if (err != ESTC_OK)
        return 0;
    params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, der.data, der.len);
    params[2] = OSSL_PARAM_construct_end();
    *done = true;
    ok = cb(params, cbarg);
    estc_buf_free(&der);
    return ok;
}

static int store_load(void *vctx, OSSL_CALLBACK *object_cb, void *object_cbarg,
                      OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    struct storectx *ctx = vctx;
    bool done = false;

    (void)pw_cb;
    (void)pw_cbarg;
    if (ctx == NULL)
        return 0;
    if (ctx->listing) {
        int type = OSSL_OBJECT_NAME;
        OSSL_PARAM params[3];
        if (ctx->next_name >= ctx->n_names)
            return 0;
        char *name = ctx->names[ctx->next_name++];
        params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
        params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA, name, 0);
        params[2] = OSSL_PARAM_construct_end();
        return object_cb(params, object_cbarg);
    }
    /* One object per call; skip what the engine does not hold. */
    while (!done && ctx->step < 2) {
        int step = ctx->step++;
        int ok = 1;

        if (step == 0 && (ctx->expect == 0 || ctx->expect == OSSL_STORE_INFO_PKEY ||
                          ctx->expect == OSSL_STORE_INFO_PUBKEY))
            ok = load_key(ctx, object_cb, object_cbarg, &done);
        else if (step == 1 && (ctx->expect == 0 || ctx->expect == OSSL_STORE_INFO_CERT))
            ok = load_cert(ctx, object_cb, object_cbarg, &done);
        if (!ok)
            return 0;
    }
    return done;
}

static int store_eof(void *vctx)
{
    struct storectx *ctx = vctx;

    if (ctx != NULL && ctx->listing)
        return ctx->next_name >= ctx->n_names;
    return ctx == NULL || ctx->step >= 2;
}

const OSSL_DISPATCH estc__store_functions[] = {
    {OSSL_FUNC_STORE_OPEN, (void (*)(void))store_open},
    {OSSL_FUNC_STORE_SETTABLE_CTX_PARAMS, (void (*)(void))store_settable},
    {OSSL_FUNC_STORE_SET_CTX_PARAMS, (void (*)(void))store_set_params},
    {OSSL_FUNC_STORE_LOAD, (void (*)(void))store_load},
    {OSSL_FUNC_STORE_EOF, (void (*)(void))store_eof},
    {OSSL_FUNC_STORE_CLOSE, (void (*)(void))store_close},
    {0, NULL},
};
