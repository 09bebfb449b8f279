/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mem: driver: keys and certificates in process memory. Nothing
 * survives the context; useful as the default and for tests. The state of
 * the persisted enrollment carries mem: keys (see docs/persistence.md).
 *
 * Address: "mem:NAME", NAME any non-empty text. Derived addresses append
 * the object name to the prefix ("mem:" + "estc-trust-1a2b...").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "../util.h"
#include "../internal.h"
#include "keys.h"

struct mem_obj {
    char *addr;
    estc_obj_kind kind;
    EVP_PKEY *key; /* kind KEY */
    estc_buf der;  /* kind CERT or TRUST */
};

struct mem_state {
    struct mem_obj *objs;
    size_t count;
    size_t cap;
};

static estc_err check_addr(estc_ctx *ctx, const char *addr)
{
    if (strchr(addr, ':')[1] == '\0')
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "\"%s\": mem: needs a name", addr);
    return ESTC_OK;
}

static struct mem_obj *find(struct mem_state *st, const char *addr)
{
    for (size_t i = 0; i < st->count; i++) {
        if (strcmp(st->objs[i].addr, addr) == 0)
            return &st->objs[i];
    }
    return NULL;
}

static void drop(struct mem_state *st, struct mem_obj *o)
{
    free(o->addr);
    EVP_PKEY_free(o->key);
    estc_buf_free(&o->der);
    *o = st->objs[--st->count];
}

/* Adds an object, taking ownership of @key or copying @der. */
static estc_err add(estc_ctx *ctx, struct mem_state *st, const char *addr, estc_obj_kind kind,
                    EVP_PKEY *key, const uint8_t *der, size_t der_len)
{
    if (find(st, addr) != NULL) {
        EVP_PKEY_free(key);
        return estc_error(ctx, ESTC_ERR_EXISTS, "%s: an object is there already", addr);
    }
    if (st->count == st->cap) {
        size_t cap = st->cap == 0 ? 8 : st->cap * 2;
        struct mem_obj *grown = realloc(st->objs, cap * sizeof(*grown));
        if (grown == NULL) {
            EVP_PKEY_free(key);
            return ESTC_ERR_NOMEM;
        }
        st->objs = grown;
        st->cap = cap;
    }
    struct mem_obj o = {.addr = strdup(addr), .kind = kind, .key = key};
    if (o.addr == NULL || (der != NULL && estc_buf_set(&o.der, der, der_len) != ESTC_OK)) {
        free(o.addr);
        EVP_PKEY_free(key);
        return ESTC_ERR_NOMEM;
    }
    st->objs[st->count++] = o;
    return ESTC_OK;
}

static estc_err get_key(estc_ctx *ctx, struct mem_state *st, const char *addr, EVP_PKEY **key)
{
    estc_err err = check_addr(ctx, addr);
    if (err != ESTC_OK)
        return err;
    struct mem_obj *o = find(st, addr);
    if (o == NULL || o->kind != ESTC_OBJ_KEY)
        return estc_error(ctx, ESTC_ERR_NOT_FOUND, "%s: no key there", addr);
    *key = o->key;
    return ESTC_OK;
}

static estc_err mem_key_generate(estc_ctx *ctx, void *state, const estc_address *a,
                                 estc_key_type type)
{
    const char *addr = a->text;
    EVP_PKEY *key = NULL;
    estc_err err = check_addr(ctx, addr);
    if (err != ESTC_OK)
        return err;
    if (find(state, addr) != NULL)
        return estc_error(ctx, ESTC_ERR_EXISTS, "%s: an object is there already", addr);
    err = estc__sw_generate(type, &key);
    if (err != ESTC_OK)
        return estc__sw_fail(ctx, err, addr, "key generation");
    return add(ctx, state, addr, ESTC_OBJ_KEY, key, NULL, 0);
}

static estc_err mem_key_import(estc_ctx *ctx, void *state, const estc_address *a,
                               const uint8_t *der, size_t len)
{
    const char *addr = a->text;
    EVP_PKEY *key = NULL;
    estc_err err = check_addr(ctx, addr);
    if (err != ESTC_OK)
        return err;
    if (find(state, addr) != NULL)
        return estc_error(ctx, ESTC_ERR_EXISTS, "%s: an object is there already", addr);
    err = estc__sw_from_pkcs8(der, len, &key);
    if (err != ESTC_OK)
        return estc__sw_fail(ctx, err, addr, "PKCS#8 import");
    return add(ctx, state, addr, ESTC_OBJ_KEY, key, NULL, 0);
}

static estc_err mem_key_public(estc_ctx *ctx, void *state, const estc_address *a, estc_buf *spki)
{
    const char *addr = a->text;
    EVP_PKEY *key = NULL;
    estc_err err = get_key(ctx, state, addr, &key);
    if (err == ESTC_OK)
        err = estc__sw_public(key, spki);
    return err;
}

static estc_err mem_key_sign(estc_ctx *ctx, void *state, const estc_address *a, estc_sig_alg alg,
                             estc_hash hash, const uint8_t *digest, size_t len, estc_buf *sig)
{
    const char *addr = a->text;
    EVP_PKEY *key = NULL;
    estc_err err = get_key(ctx, state, addr, &key);
    if (err != ESTC_OK)
        return err;
    err = estc__sw_sign(key, alg, hash, digest, len, sig);
    return err == ESTC_OK ? ESTC_OK : estc__sw_fail(ctx, err, addr, "sign");
}

static estc_err remove_kind(estc_ctx *ctx, struct mem_state *st, const char *addr, bool key)
{
    estc_err err = check_addr(ctx, addr);
    if (err != ESTC_OK)
        return err;
    struct mem_obj *o = find(st, addr);
    if (o == NULL || (o->kind == ESTC_OBJ_KEY) != key)
        return estc_error(ctx, ESTC_ERR_NOT_FOUND, "%s: no %s there", addr,
                          key ? "key" : "certificate");
    drop(st, o);
    return ESTC_OK;
}

static estc_err mem_key_remove(estc_ctx *ctx, void *state, const estc_address *a)
{
    const char *addr = a->text;
    return remove_kind(ctx, state, addr, true);
}

static estc_err mem_cert_store(estc_ctx *ctx, void *state, const estc_address *a,
                               estc_obj_kind kind, const uint8_t *der, size_t len)
{
    const char *addr = a->text;
    estc_err err = check_addr(ctx, addr);
    if (err != ESTC_OK)
        return err;
    return add(ctx, state, addr, kind, NULL, der, len);
}

static estc_err mem_cert_load(estc_ctx *ctx, void *state, const estc_address *a, estc_buf *der)
{
    const char *addr = a->text;
    estc_err err = check_addr(ctx, addr);
    if (err != ESTC_OK)
        return err;
    struct mem_obj *o = find(state, addr);
    if (o == NULL || o->kind == ESTC_OBJ_KEY)
        return estc_error(ctx, ESTC_ERR_NOT_FOUND, "%s: no certificate there", addr);
    return estc_buf_set(der, o->der.data, o->der.len);
}

static estc_err mem_cert_remove(estc_ctx *ctx, void *state, const estc_address *a)
{
    const char *addr = a->text;
    return remove_kind(ctx, state, addr, false);
}

static estc_err mem_list(estc_ctx *ctx, void *state, const estc_address *pa, estc_obj_kind kind,
                         estc_list_fn fn, void *arg)
{
    const char *prefix = pa->text;
    (void)ctx;
    struct mem_state *st = state;
    size_t plen = strlen(prefix);
    for (size_t i = 0; i < st->count; i++) {
        const struct mem_obj *o = &st->objs[i];
        if (o->kind == kind && strncmp(o->addr, prefix, plen) == 0 && !fn(arg, o->addr, kind))
            break;
    }
    return ESTC_OK;
}

static estc_err mem_exists(estc_ctx *ctx, void *state, const estc_address *a, estc_obj_kind kind,
                           bool *found)
{
    const char *addr = a->text;
    estc_err err = check_addr(ctx, addr);
    if (err != ESTC_OK)
        return err;
    struct mem_obj *o = find(state, addr);
    *found = o != NULL && o->kind == kind;
    return ESTC_OK;
}

static estc_err mem_address_derive(estc_ctx *ctx, void *state, const estc_address *pa,
                                   estc_obj_kind kind, const char *name, char **addr)
{
    const char *prefix = pa->text;
    (void)ctx;
    (void)state;
    (void)kind;
    size_t n = strlen(prefix) + strlen(name) + 1;
    char *out = malloc(n);
    if (out == NULL)
        return ESTC_ERR_NOMEM;
    snprintf(out, n, "%s%s", prefix, name);
    *addr = out;
    return ESTC_OK;
}

static void mem_cleanup(estc_ctx *ctx, void *state)
{
    (void)ctx;
    struct mem_state *st = state;
    while (st->count > 0)
        drop(st, &st->objs[st->count - 1]);
    free(st->objs);
}

static estc_err mem_key_export(estc_ctx *ctx, void *state, const estc_address *a, estc_buf *pkcs8)
{
    EVP_PKEY *key = NULL;
    estc_err err = get_key(ctx, state, a->text, &key);
    if (err != ESTC_OK)
        return err;
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(key);
    unsigned char *der = NULL;
    int n = p8 != NULL ? i2d_PKCS8_PRIV_KEY_INFO(p8, &der) : -1;
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (n <= 0)
        return estc_error(ctx, ESTC_ERR_CRYPTO, "%s: cannot encode the key", a->text);
    err = estc_buf_set(pkcs8, der, (size_t)n);
    OPENSSL_clear_free(der, (size_t)n);
    return err;
}

const struct estc_driver estc__driver_mem = {
    .api_version = ESTC_DRIVER_API_VERSION,
    .scheme = "mem",
    .description = "software keys and certificates in process memory",
    .state_size = sizeof(struct mem_state),
    /* Nothing outlives the process, so the persisted state carries the keys. */
    .caps = ESTC_CAP_VOLATILE | ESTC_CAP_KEY_EXPORT,
    .cleanup = mem_cleanup,
    .key_generate = mem_key_generate,
    .key_import = mem_key_import,
    .key_public = mem_key_public,
    .key_sign = mem_key_sign,
    .key_remove = mem_key_remove,
    .cert_store = mem_cert_store,
    .cert_load = mem_cert_load,
    .cert_remove = mem_cert_remove,
    .list = mem_list,
    .exists = mem_exists,
    .address_derive = mem_address_derive,
    .key_export = mem_key_export,
};
