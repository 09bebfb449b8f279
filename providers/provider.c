/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The provider itself: init and teardown, the algorithm tables, errors, and
 * the public API that loads the built-in provider into a library context.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>

#include <estc/provider.h>

#include "internal.h"

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

static const OSSL_ITEM reason_strings[] = {
    {ESTC__R_ENGINE, "engine operation failed"},
    {ESTC__R_EXPORT_REFUSED, "private key material cannot leave its engine"},
    {ESTC__R_UNSUPPORTED, "not supported by the estc provider"},
    {ESTC__R_BAD_REFERENCE, "malformed engine key reference"},
    {ESTC__R_NOMEM, "out of memory"},
    {ESTC__R_WRONG_KEY_TYPE, "engine key of another type"},
    {ESTC__R_INTERNAL, "internal error"},
    {ESTC__R_NO_DEFAULT, "OpenSSL's default provider is not loaded"},
    {0, NULL},
};

static void set_error(struct estc__prov *prov, int reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(struct estc__prov *prov, int reason, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    prov->core_vset_error(prov->handle, (uint32_t)reason, fmt, ap);
    va_end(ap);
}

void estc__prov_raise(struct estc__prov *prov, int reason, const char *file, int line,
                      const char *func, const char *fmt, ...)
{
    char msg[1024], shown[1024];
    va_list ap;

    if (prov == NULL || prov->core_new_error == NULL || prov->core_vset_error == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* Messages name addresses, and an address may carry a PIN. */
    estc_redact(msg, shown, sizeof(shown));
    prov->core_new_error(prov->handle);
    if (prov->core_set_error_debug != NULL)
        prov->core_set_error_debug(prov->handle, file, line, func);
    set_error(prov, reason, "%s", shown);
}

bool estc__prov_need_default(struct estc__prov *prov)
{
    /* Once found it stays: every store open and key decode asks. A miss is
     * asked again, as the application may load the default provider later. */
    if (atomic_load(&prov->have_default))
        return true;
    /* Fetched from the application's providers: the global default
     * context is where a token's library (in this process) hashes. */
    ERR_set_mark();
    EVP_MD *md = EVP_MD_fetch(NULL, "SHA2-256", ESTC__SW_PROPQ);
    if (md == NULL && prov->libctx != NULL)
        md = EVP_MD_fetch(prov->libctx, "SHA2-256", ESTC__SW_PROPQ);
    ERR_pop_to_mark(); /* the failed fetches' errors: ours says more */
    if (md != NULL) {
        EVP_MD_free(md);
        atomic_store(&prov->have_default, true);
        return true;
    }
    ESTC__RAISE(prov, ESTC__R_NO_DEFAULT,
                "no SHA-256 from the loaded providers: load OpenSSL's default provider "
                "as well, e.g. -provider estc -provider default (or activate it in "
                "openssl.cnf)");
    return false;
}

void estc__prov_raise_engine(struct estc__prov *prov, estc_err err, const char *what)
{
    /* The detail names the address and the engine's code, never a PIN. */
    const char *detail = estc_ctx_error_detail(prov->ectx);

    ESTC__RAISE(prov, ESTC__R_ENGINE, "%s: %s%s%s", what, estc_err_name(err),
                detail[0] != '\0' ? ": " : "", detail);
}

bool estc__valid_address(const char *addr, size_t len)
{
    char scheme[ESTC_SCHEME_MAX + 1];
    char buf[ESTC_ADDRESS_MAX + 1];

    if (addr == NULL || len == 0 || len > ESTC_ADDRESS_MAX || memchr(addr, '\0', len) != NULL)
        return false;
    memcpy(buf, addr, len);
    buf[len] = '\0';
    return estc_address_scheme(buf, scheme) == ESTC_OK;
}

/* ------------------------------------------------------------------------ */
/* Algorithms                                                                */
/* ------------------------------------------------------------------------ */

#define ESTC__PROPS "provider=" ESTC__PROV_NAME
#define EC_NAMES "EC:id-ecPublicKey:1.2.840.10045.2.1"
#define RSA_NAMES "RSA:rsaEncryption:1.2.840.113549.1.1.1"

static const OSSL_ALGORITHM keymgmt_algs[] = {
    {EC_NAMES, ESTC__PROPS, estc__ec_keymgmt_functions, "EC keys held in an estc engine"},
    {RSA_NAMES, ESTC__PROPS, estc__rsa_keymgmt_functions, "RSA keys held in an estc engine"},
    {NULL, NULL, NULL, NULL},
};

static const OSSL_ALGORITHM signature_algs[] = {
    {"ECDSA", ESTC__PROPS, estc__ecdsa_signature_functions, "ECDSA with an engine key"},
    {RSA_NAMES, ESTC__PROPS, estc__rsa_signature_functions,
     "RSA PKCS#1 v1.5 and PSS with an engine key"},
    {NULL, NULL, NULL, NULL},
};

static const OSSL_ALGORITHM decoder_algs[] = {
    {"DER", ESTC__PROPS ",input=pem", estc__pem_decoder_functions,
     "PEM " ESTC__REF_PEM_LABEL " to its engine address"},
    {EC_NAMES, ESTC__PROPS ",input=der,structure=" ESTC__REF_STRUCTURE, estc__ec_decoder_functions,
     "engine address to an EC key reference"},
    {RSA_NAMES, ESTC__PROPS ",input=der,structure=" ESTC__REF_STRUCTURE,
     estc__rsa_decoder_functions, "engine address to an RSA key reference"},
    {NULL, NULL, NULL, NULL},
};

static const OSSL_ALGORITHM *prov_query(void *provctx, int operation_id, int *no_cache)
{
    struct estc__prov *prov = provctx;

    *no_cache = 0;
    switch (operation_id) {
    case OSSL_OP_KEYMGMT:
        return keymgmt_algs;
    case OSSL_OP_SIGNATURE:
        return signature_algs;
    case OSSL_OP_DECODER:
        return decoder_algs;
    case OSSL_OP_STORE:
        return prov->stores;
    default:
        return NULL;
    }
}

static const OSSL_PARAM *prov_gettable_params(void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_NAME, NULL, 0),
        OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_VERSION, NULL, 0),
        OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_BUILDINFO, NULL, 0),
        OSSL_PARAM_int(OSSL_PROV_PARAM_STATUS, NULL),
        OSSL_PARAM_END,
    };
    (void)provctx;
    return params;
}

static int prov_get_params(void *provctx, OSSL_PARAM params[])
{
    OSSL_PARAM *p;

    (void)provctx;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME);
    if (p != NULL && !OSSL_PARAM_set_utf8_ptr(p, "estc engine key provider"))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION);
    if (p != NULL && !OSSL_PARAM_set_utf8_ptr(p, ESTC__PROV_VERSION))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_BUILDINFO);
    if (p != NULL && !OSSL_PARAM_set_utf8_ptr(p, ESTC__PROV_VERSION))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS);
    if (p != NULL && !OSSL_PARAM_set_int(p, 1))
        return 0;
    return 1;
}

static const OSSL_ITEM *prov_reason_strings(void *provctx)
{
    (void)provctx;
    return reason_strings;
}

static void free_stores(struct estc__prov *prov)
{
    for (size_t i = 0; i < prov->n_stores; i++)
        free((char *)prov->stores[i].algorithm_names);
    free(prov->stores);
    prov->stores = NULL;
    prov->n_stores = 0;
}

/*
 * A provider that owns its estc_ctx is torn down by OPENSSL_cleanup() at
 * exit, after the token libraries it loaded (SoftHSM2) have run their own
 * destructors: closing their sessions then crashes. This atexit handler,
 * registered after OpenSSL's and so run before it, marks that moment; the
 * context is then left to the exiting process.
 */
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static volatile bool exiting;

static void mark_exiting(void)
{
    exiting = true;
}

static void register_exit_mark(void)
{
    (void)atexit(mark_exiting);
}

static void prov_teardown(void *provctx)
{
    struct estc__prov *prov = provctx;

    if (prov == NULL)
        return;
    free_stores(prov);
    OSSL_LIB_CTX_free(prov->libctx);
    if (prov->own_ectx && !exiting)
        estc_ctx_free(prov->ectx);
    pthread_mutex_destroy(&prov->lock);
    free(prov);
}

static const OSSL_DISPATCH prov_functions[] = {
    {OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))prov_teardown},
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))prov_query},
    {OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))prov_gettable_params},
    {OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))prov_get_params},
    {OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, (void (*)(void))prov_reason_strings},
    {0, NULL},
};

struct scheme_walk {
    struct estc__prov *prov;
    bool failed;
};

static void add_store(void *arg, const struct estc_driver *drv)
{
    struct scheme_walk *w = arg;
    struct estc__prov *prov = w->prov;
    OSSL_ALGORITHM *grown;
    char *name;

    /* Where the engine's keys are PEM files, OpenSSL's own loader reads
     * them; never shadow it. */
    if (w->failed || (drv->caps & ESTC_CAP_FILES) != 0)
        return;
    grown = realloc(prov->stores, (prov->n_stores + 2) * sizeof(*grown));
    if (grown == NULL) {
        w->failed = true;
        return;
    }
    prov->stores = grown;
    name = strdup(drv->scheme);
    if (name == NULL) {
        w->failed = true;
        memset(&prov->stores[prov->n_stores], 0, sizeof(*grown));
        return;
    }
    prov->stores[prov->n_stores] =
        (OSSL_ALGORITHM){name, ESTC__PROPS, estc__store_functions, "objects of an estc engine"};
    prov->n_stores++;
    memset(&prov->stores[prov->n_stores], 0, sizeof(*grown));
}

/*
 * The provider's section of openssl.cnf (for the module and a built-in
 * provider loaded by name, which own their context):
 *   driver-modules = /usr/lib/x/a.so /usr/lib/x/b.so   driver modules to load
 *   pkcs11-module-path = /usr/lib/softhsm/libsofthsm2.so   default PKCS#11 module
 *   tpm2-tcti = device:/dev/tpmrm0                          default TCTI
 * An attribute in an address wins over these defaults.
 */
static int apply_config(struct estc__prov *prov, OSSL_FUNC_core_get_params_fn *get_params)
{
    char *modules = NULL, *p11 = NULL, *tcti = NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_ptr("driver-modules", &modules, 0),
        OSSL_PARAM_utf8_ptr("pkcs11-module-path", &p11, 0),
        OSSL_PARAM_utf8_ptr("tpm2-tcti", &tcti, 0),
        OSSL_PARAM_END,
    };
    if (get_params == NULL || !get_params(prov->handle, params))
        return 1;
    estc_err err = ESTC_OK;
    if (modules != NULL) {
        char *list = strdup(modules), *save = NULL;
        if (list == NULL)
            return 0;
        for (char *m = strtok_r(list, " \t,", &save); m != NULL && err == ESTC_OK;
             m = strtok_r(NULL, " \t,", &save))
            err = estc_engine_load_module(prov->ectx, m);
        free(list);
    }
    if (err == ESTC_OK && p11 != NULL && p11[0] != '\0')
        err = estc_engine_set_default(prov->ectx, "pkcs11", "module-path", p11);
    if (err == ESTC_OK && tcti != NULL && tcti[0] != '\0')
        err = estc_engine_set_default(prov->ectx, "tpm2", "tcti", tcti);
    if (err != ESTC_OK) {
        estc__prov_raise_engine(prov, err, "applying the provider's configuration");
        return 0;
    }
    return 1;
}

int estc__provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                        const OSSL_DISPATCH **out, void **provctx, estc_ctx *ectx, bool own_ectx)
{
    OSSL_FUNC_core_get_params_fn *get_params = NULL;
    struct estc__prov *prov;
    struct scheme_walk walk = {0};

    if (ectx == NULL)
        return 0;
    prov = calloc(1, sizeof(*prov));
    if (prov == NULL) {
        if (own_ectx)
            estc_ctx_free(ectx);
        return 0;
    }
    if (own_ectx)
        pthread_once(&exit_once, register_exit_mark);
    atomic_init(&prov->have_default, false);
    prov->handle = handle;
    prov->ectx = ectx;
    prov->own_ectx = own_ectx;
    if (pthread_mutex_init(&prov->lock, NULL) != 0) {
        if (own_ectx)
            estc_ctx_free(ectx);
        free(prov);
        return 0;
    }
    for (const OSSL_DISPATCH *f = in; f != NULL && f->function_id != 0; f++) {
        switch (f->function_id) {
        case OSSL_FUNC_CORE_NEW_ERROR:
            prov->core_new_error = OSSL_FUNC_core_new_error(f);
            break;
        case OSSL_FUNC_CORE_SET_ERROR_DEBUG:
            prov->core_set_error_debug = OSSL_FUNC_core_set_error_debug(f);
            break;
        case OSSL_FUNC_CORE_VSET_ERROR:
            prov->core_vset_error = OSSL_FUNC_core_vset_error(f);
            break;
        case OSSL_FUNC_CORE_GET_PARAMS:
            get_params = OSSL_FUNC_core_get_params(f);
            break;
        default:
            break;
        }
    }

    /* Driver modules first, so that their schemes get a STORE too. */
    if (own_ectx && !apply_config(prov, get_params)) {
        prov_teardown(prov);
        return 0;
    }
    walk.prov = prov;
    prov->stores = calloc(1, sizeof(*prov->stores));
    if (prov->stores == NULL)
        walk.failed = true;
    else
        estc_engine_schemes(ectx, add_store, &walk);
    /* A child library context sees the application's providers: software
     * hashing and key parsing go there. */
    if (!walk.failed)
        prov->libctx = OSSL_LIB_CTX_new_child(handle, in);
    if (walk.failed || prov->libctx == NULL) {
        prov_teardown(prov);
        return 0;
    }
    *out = prov_functions;
    *provctx = prov;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Built-in loading                                                          */
/* ------------------------------------------------------------------------ */

/*
 * OpenSSL 3.0 cannot pass an argument to a built-in provider's init, so
 * estc_provider_load() hands its estc_ctx over through this slot, under
 * the lock, for the init that OSSL_PROVIDER_load() runs synchronously.
 */
static pthread_mutex_t handoff_lock = PTHREAD_MUTEX_INITIALIZER;
static estc_ctx *handoff_ctx;

static int builtin_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                        const OSSL_DISPATCH **out, void **provctx)
{
    estc_ctx *ectx = handoff_ctx;

    handoff_ctx = NULL;
    if (ectx != NULL)
        return estc__provider_init(handle, in, out, provctx, ectx, false);
    /* Loaded by name (a configuration file): like the module, own a context. */
    if (estc_ctx_new(&ectx) != ESTC_OK)
        return 0;
    return estc__provider_init(handle, in, out, provctx, ectx, true);
}

struct estc_provider {
    OSSL_PROVIDER *deflt;
    OSSL_PROVIDER *estc;
};

static estc_err openssl_error(estc_ctx *ctx, const char *what)
{
    char msg[256];
    unsigned long e = ERR_peek_last_error();

    if (e != 0)
        ERR_error_string_n(e, msg, sizeof(msg));
    else
        snprintf(msg, sizeof(msg), "no OpenSSL error");
    return estc_error(ctx, ESTC_ERR_CRYPTO, "%s: %s", what, msg);
}

estc_err estc_provider_load(estc_ctx *ctx, OSSL_LIB_CTX *libctx, estc_provider **out)
{
    estc_provider *p;
    estc_err err = ESTC_OK;

    if (ctx == NULL || out == NULL)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "estc_provider_load: NULL argument");
    if (OSSL_PROVIDER_available(libctx, ESTC__PROV_NAME))
        return estc_error(ctx, ESTC_ERR_EXISTS,
                          "the estc provider is loaded in this library context already");
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return estc_error(ctx, ESTC_ERR_NOMEM, "estc_provider_load: out of memory");

    p->deflt = OSSL_PROVIDER_load(libctx, "default");
    if (p->deflt == NULL) {
        err = openssl_error(ctx, "loading the default provider");
        goto fail;
    }
    /* Registering twice fails harmlessly: the name stays known. */
    ERR_set_mark();
    (void)OSSL_PROVIDER_add_builtin(libctx, ESTC__PROV_NAME, builtin_init);
    ERR_pop_to_mark();

    pthread_mutex_lock(&handoff_lock);
    handoff_ctx = ctx;
    p->estc = OSSL_PROVIDER_load(libctx, ESTC__PROV_NAME);
    /* OpenSSL may keep a provider instance alive after its last unload
     * (cached methods) and hand it back without running init again: then
     * it still points at the estc_ctx of an earlier load. Rebind it. */
    bool init_ran = handoff_ctx == NULL;
    handoff_ctx = NULL;
    if (p->estc != NULL && !init_ran) {
        struct estc__prov *pc = OSSL_PROVIDER_get0_provider_ctx(p->estc);
        if (pc != NULL && !pc->own_ectx)
            pc->ectx = ctx;
    }
    pthread_mutex_unlock(&handoff_lock);
    if (p->estc == NULL) {
        err = openssl_error(ctx, "loading the estc provider");
        goto fail;
    }
    if (!EVP_set_default_properties(libctx, "?provider=default")) {
        err = openssl_error(ctx, "preferring the default provider");
        goto fail;
    }
    *out = p;
    return ESTC_OK;

fail:
    if (p->estc != NULL)
        OSSL_PROVIDER_unload(p->estc);
    if (p->deflt != NULL)
        OSSL_PROVIDER_unload(p->deflt);
    free(p);
    return err;
}

void estc_provider_unload(estc_provider *prov)
{
    if (prov == NULL)
        return;
    OSSL_PROVIDER_unload(prov->estc);
    OSSL_PROVIDER_unload(prov->deflt);
    free(prov);
}
