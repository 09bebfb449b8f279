/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Engine operations dispatched by address scheme. The checks here are the
 * ones every driver would otherwise repeat: arguments, address syntax, the
 * digest length, and that a certificate is one whole DER certificate.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "internal.h"
#include "util.h"

/* Finds the engine for @addr and parses it once, or returns the error; for
 * the entry points. The caller gives @pa back with estc__engine_release(). */
#define ENGINE_OR_RETURN(ctx, addr, e, pa)                                                         \
    do {                                                                                           \
        estc_err err_ = estc__engine_parse((ctx), (addr), &(e), &(pa));                            \
        if (err_ != ESTC_OK)                                                                       \
            return err_;                                                                           \
    } while (0)

/* Runs one driver call with the parsed address and releases it. */
#define CALL(ctx, addr, e, expr)                                                                   \
    do {                                                                                           \
        estc_address *pa_;                                                                         \
        ENGINE_OR_RETURN(ctx, addr, e, pa_);                                                       \
        estc_err r_ = (expr);                                                                      \
        estc__engine_release((ctx), (e), pa_);                                                     \
        return r_;                                                                                 \
    } while (0)
#define PA pa_

static bool valid_key_type(estc_key_type t)
{
    return t >= ESTC_KEY_EC_P256 && t <= ESTC_KEY_RSA_3072;
}

static bool valid_kind(estc_obj_kind k)
{
    return k >= ESTC_OBJ_KEY && k <= ESTC_OBJ_TRUST;
}

/* Gives a driver a fresh output buffer and keeps the caller's on failure. */
static estc_err into(estc_err err, estc_buf *tmp, estc_buf *out)
{
    if (err != ESTC_OK) {
        estc_buf_free(tmp);
        return err;
    }
    estc_buf_free(out);
    *out = *tmp;
    return ESTC_OK;
}

estc_err estc_key_generate(estc_ctx *ctx, const char *addr, estc_key_type type)
{
    struct estc__engine *e;
    if (!valid_key_type(type))
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "unknown key type %d", (int)type);
    CALL(ctx, addr, e, e->driver->key_generate(ctx, e->state, PA, type));
}

estc_err estc_key_import(estc_ctx *ctx, const char *addr, const uint8_t *pkcs8, size_t len)
{
    struct estc__engine *e;
    estc_address *pa;
    if (pkcs8 == NULL || len == 0)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "no key to import");
    ENGINE_OR_RETURN(ctx, addr, e, pa);
    estc_err err =
        e->driver->key_import == NULL
            ? estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: engine cannot import keys", pa->redacted)
            : e->driver->key_import(ctx, e->state, pa, pkcs8, len);
    estc__engine_release(ctx, e, pa);
    return err;
}

estc_err estc_key_public(estc_ctx *ctx, const char *addr, estc_buf *spki)
{
    struct estc__engine *e;
    estc_buf tmp = {0};
    if (spki == NULL)
        return ESTC_ERR_INVALID_ARG;
    CALL(ctx, addr, e, into(e->driver->key_public(ctx, e->state, PA, &tmp), &tmp, spki));
}

estc_err estc_key_sign(estc_ctx *ctx, const char *addr, estc_sig_alg alg, estc_hash hash,
                       const uint8_t *digest, size_t digest_len, estc_buf *sig)
{
    struct estc__engine *e;
    estc_buf tmp = {0};
    if (digest == NULL || sig == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (alg < ESTC_SIG_ECDSA || alg > ESTC_SIG_RSA_PSS)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "unknown signature algorithm %d", (int)alg);
    size_t want = estc__hash_len(hash);
    if (want == 0 || want != digest_len)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "digest of %zu bytes does not match hash %d",
                          digest_len, (int)hash);
    CALL(ctx, addr, e,
         into(e->driver->key_sign(ctx, e->state, PA, alg, hash, digest, digest_len, &tmp), &tmp,
              sig));
}

estc_err estc_key_remove(estc_ctx *ctx, const char *addr)
{
    struct estc__engine *e;
    CALL(ctx, addr, e, e->driver->key_remove(ctx, e->state, PA));
}

static estc_err check_cert_der(estc_ctx *ctx, const uint8_t *der, size_t len)
{
    if (der == NULL || len == 0 || len > 65536)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "no certificate, or over 64 KiB");
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    bool whole = x != NULL && p == der + len;
    X509_free(x);
    if (!whole)
        return estc_error(ctx, ESTC_ERR_FORMAT, "not one whole DER X.509 certificate");
    return ESTC_OK;
}

static estc_err store(estc_ctx *ctx, const char *addr, estc_obj_kind kind, const uint8_t *der,
                      size_t len)
{
    struct estc__engine *e;
    estc_err err = check_cert_der(ctx, der, len);
    if (err != ESTC_OK)
        return err;
    CALL(ctx, addr, e, e->driver->cert_store(ctx, e->state, PA, kind, der, len));
}

estc_err estc_cert_store(estc_ctx *ctx, const char *addr, const uint8_t *der, size_t len)
{
    return store(ctx, addr, ESTC_OBJ_CERT, der, len);
}

estc_err estc_trust_store(estc_ctx *ctx, const char *addr, const uint8_t *der, size_t len)
{
    return store(ctx, addr, ESTC_OBJ_TRUST, der, len);
}

estc_err estc_cert_load(estc_ctx *ctx, const char *addr, estc_buf *der)
{
    struct estc__engine *e;
    estc_buf tmp = {0};
    if (der == NULL)
        return ESTC_ERR_INVALID_ARG;
    CALL(ctx, addr, e, into(e->driver->cert_load(ctx, e->state, PA, &tmp), &tmp, der));
}

estc_err estc_cert_remove(estc_ctx *ctx, const char *addr)
{
    struct estc__engine *e;
    CALL(ctx, addr, e, e->driver->cert_remove(ctx, e->state, PA));
}

estc_err estc_trust_remove(estc_ctx *ctx, const char *addr)
{
    return estc_cert_remove(ctx, addr);
}

estc_err estc_object_list(estc_ctx *ctx, const char *prefix, estc_obj_kind kind, estc_list_fn fn,
                          void *arg)
{
    struct estc__engine *e;
    if (fn == NULL || !valid_kind(kind))
        return ESTC_ERR_INVALID_ARG;
    CALL(ctx, prefix, e, e->driver->list(ctx, e->state, PA, kind, fn, arg));
}

estc_err estc_trust_list(estc_ctx *ctx, const char *prefix, estc_list_fn fn, void *arg)
{
    return estc_object_list(ctx, prefix, ESTC_OBJ_TRUST, fn, arg);
}

estc_err estc_object_exists(estc_ctx *ctx, const char *addr, estc_obj_kind kind, bool *found)
{
    struct estc__engine *e;
    if (found == NULL || !valid_kind(kind))
        return ESTC_ERR_INVALID_ARG;
    estc_address *pa;
    ENGINE_OR_RETURN(ctx, addr, e, pa);
    bool f = false;
    estc_err err = e->driver->exists(ctx, e->state, pa, kind, &f);
    estc__engine_release(ctx, e, pa);
    if (err == ESTC_OK)
        *found = f;
    return err;
}

estc_err estc_object_remove(estc_ctx *ctx, const char *addr, estc_obj_kind kind)
{
    if (!valid_kind(kind))
        return ESTC_ERR_INVALID_ARG;
    return kind == ESTC_OBJ_KEY ? estc_key_remove(ctx, addr) : estc_cert_remove(ctx, addr);
}

estc_err estc_address_derive(estc_ctx *ctx, const char *prefix, estc_obj_kind kind,
                             const char *name, char **addr)
{
    struct estc__engine *e;
    if (addr == NULL || !valid_kind(kind))
        return ESTC_ERR_INVALID_ARG;
    if (!estc__valid_object_name(name))
        return estc_error(ctx, ESTC_ERR_INVALID_ARG,
                          "object name must be 1 to 64 of [A-Za-z0-9_-]");
    estc_address *pa;
    ENGINE_OR_RETURN(ctx, prefix, e, pa);
    char *out = NULL;
    estc_err err = e->driver->address_derive(ctx, e->state, pa, kind, name, &out);
    estc__engine_release(ctx, e, pa);
    if (err != ESTC_OK) {
        free(out);
        return err;
    }
    if (out == NULL || strlen(out) > ESTC_ADDRESS_MAX) {
        free(out);
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "derived address too long");
    }
    *addr = out;
    return ESTC_OK;
}

estc_err estc_key_export(estc_ctx *ctx, const char *addr, estc_buf *pkcs8)
{
    struct estc__engine *e;
    estc_buf tmp = {0};
    estc_address *pa;
    if (pkcs8 == NULL)
        return ESTC_ERR_INVALID_ARG;
    ENGINE_OR_RETURN(ctx, addr, e, pa);
    estc_err err = (e->driver->caps & ESTC_CAP_KEY_EXPORT) == 0
                       ? estc_error(ctx, ESTC_ERR_UNSUPPORTED,
                                    "%s: the engine keeps its keys to itself", pa->redacted)
                       : into(e->driver->key_export(ctx, e->state, pa, &tmp), &tmp, pkcs8);
    estc__engine_release(ctx, e, pa);
    return err;
}

estc_err estc_key_file_path(estc_ctx *ctx, const char *addr, char **path)
{
    struct estc__engine *e;
    estc_address *pa;
    if (path == NULL)
        return ESTC_ERR_INVALID_ARG;
    ENGINE_OR_RETURN(ctx, addr, e, pa);
    char *out = NULL;
    estc_err err = (e->driver->caps & ESTC_CAP_FILES) == 0
                       ? estc_error(ctx, ESTC_ERR_UNSUPPORTED,
                                    "%s: the engine's keys are not files", pa->redacted)
                       : e->driver->key_file_path(ctx, e->state, pa, &out);
    estc__engine_release(ctx, e, pa);
    if (err != ESTC_OK) {
        free(out);
        return err;
    }
    *path = out;
    return ESTC_OK;
}
