/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A complete estc engine driver written against <estc/engine.h> alone:
 * the "example:" engine keeps keys and certificates in labelled banks in
 * process memory, with OpenSSL doing the cryptography. Replace the bodies of
 * the operations with calls into your HSM and keep the shape.
 *
 * Address syntax: "example:bank=NAME;label=LABEL" (RFC 7512 style
 * attributes, percent-encoding allowed). A prefix is an address without
 * label ("example:bank=NAME"); derived addresses add ";label=<name>".
 *
 * Built two ways: into the application, which registers it with
 * estc_engine_register(), and as a module exporting estc_driver_entry(),
 * which `estc-engine-test --driver` loads.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <estc/engine.h>

#include "example_driver.h"

struct object {
    char *bank;
    char *label;
    estc_obj_kind kind;
    EVP_PKEY *key; /* ESTC_OBJ_KEY */
    estc_buf der;  /* certificates */
};

/* The driver's private state: estc allocates state_size zeroed bytes. */
struct example_state {
    struct object *objs;
    size_t count;
    size_t cap;
};

/* Copies bank and label out of the parsed address; the label is optional
 * only for prefixes. The framework has parsed and percent-decoded the
 * attributes already (this driver declares ESTC_CAP_ATTRIBUTES). Errors
 * name the address, as every driver's should. */
/* A copy of @s (strdup() is POSIX, not C11: this file builds with -std=c11). */
static char *copy_text(const char *s)
{
    size_t n = strlen(s) + 1;
    char *c = malloc(n);
    if (c != NULL)
        memcpy(c, s, n);
    return c;
}

static estc_err parse(estc_ctx *ctx, const estc_address *addr, bool need_label, char **bank,
                      char **label)
{
    static const estc_attr no_label = {.name = "label", .value = "", .value_len = 0};
    const estc_attr *b = estc_address_get(addr, "bank");
    const estc_attr *l = estc_address_get(addr, "label");
    *bank = *label = NULL;
    if (b == NULL || b->value[0] == '\0')
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: no bank= attribute", addr->text);
    if (l == NULL && !need_label)
        l = &no_label;
    if (l == NULL || (need_label && l->value[0] == '\0'))
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: no label= naming the object", addr->text);
    *bank = copy_text(b->value);
    *label = copy_text(l->value);
    if (*bank == NULL || *label == NULL) {
        free(*bank);
        free(*label);
        *bank = *label = NULL;
        return ESTC_ERR_NOMEM;
    }
    return ESTC_OK;
}

static struct object *find(struct example_state *st, const char *bank, const char *label)
{
    for (size_t i = 0; i < st->count; i++) {
        if (strcmp(st->objs[i].bank, bank) == 0 && strcmp(st->objs[i].label, label) == 0)
            return &st->objs[i];
    }
    return NULL;
}

/* Looks the object at @addr up; *@obj is NULL when there is none. */
static estc_err lookup(estc_ctx *ctx, struct example_state *st, const estc_address *addr,
                       struct object **obj)
{
    char *bank, *label;
    estc_err err = parse(ctx, addr, true, &bank, &label);
    if (err != ESTC_OK)
        return err;
    *obj = find(st, bank, label);
    free(bank);
    free(label);
    return ESTC_OK;
}

static estc_err add(estc_ctx *ctx, struct example_state *st, const estc_address *addr,
                    estc_obj_kind kind, EVP_PKEY *key, const uint8_t *der, size_t len)
{
    char *bank, *label;
    estc_err err = parse(ctx, addr, true, &bank, &label);
    if (err == ESTC_OK && find(st, bank, label) != NULL)
        err = estc_error(ctx, ESTC_ERR_EXISTS, "%s: label in use", addr->text);
    if (err == ESTC_OK && st->count == st->cap) {
        size_t cap = st->cap == 0 ? 4 : st->cap * 2;
        struct object *grown = realloc(st->objs, cap * sizeof(*grown));
        if (grown == NULL)
            err = ESTC_ERR_NOMEM;
        else {
            st->objs = grown;
            st->cap = cap;
        }
    }
    struct object o = {.bank = bank, .label = label, .kind = kind, .key = key};
    if (err == ESTC_OK && der != NULL)
        err = estc_buf_set(&o.der, der, len);
    if (err != ESTC_OK) {
        free(bank);
        free(label);
        return err;
    }
    st->objs[st->count++] = o;
    return ESTC_OK;
}

static void drop(struct example_state *st, struct object *o)
{
    free(o->bank);
    free(o->label);
    EVP_PKEY_free(o->key);
    estc_buf_free(&o->der);
    *o = st->objs[--st->count];
}

static estc_err ex_key_generate(estc_ctx *ctx, void *state, const estc_address *addr,
                                estc_key_type type)
{
    struct object *o;
    estc_err err = lookup(ctx, state, addr, &o);
    if (err != ESTC_OK)
        return err;
    if (o != NULL)
        return estc_error(ctx, ESTC_ERR_EXISTS, "%s: label in use", addr->text);
    EVP_PKEY *key = NULL;
    switch (type) {
    case ESTC_KEY_EC_P256:
        key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        break;
    case ESTC_KEY_EC_P384:
        key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
        break;
    default:
        /* This engine makes EC keys only: say so, cleanly. */
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: only EC P-256 and P-384", addr->text);
    }
    if (key == NULL)
        return estc_error(ctx, ESTC_ERR_CRYPTO, "%s: key generation failed", addr->text);
    err = add(ctx, state, addr, ESTC_OBJ_KEY, key, NULL, 0);
    if (err != ESTC_OK)
        EVP_PKEY_free(key);
    return err;
}

static estc_err key_at(estc_ctx *ctx, void *state, const estc_address *addr, EVP_PKEY **key)
{
    struct object *o;
    estc_err err = lookup(ctx, state, addr, &o);
    if (err != ESTC_OK)
        return err;
    if (o == NULL || o->kind != ESTC_OBJ_KEY)
        return estc_error(ctx, ESTC_ERR_NOT_FOUND, "%s: no key", addr->text);
    *key = o->key;
    return ESTC_OK;
}

static estc_err ex_key_public(estc_ctx *ctx, void *state, const estc_address *addr, estc_buf *spki)
{
    EVP_PKEY *key;
    estc_err err = key_at(ctx, state, addr, &key);
    if (err != ESTC_OK)
        return err;
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(key, &der);
    if (n <= 0)
        return estc_error(ctx, ESTC_ERR_CRYPTO, "%s: cannot encode the public key", addr->text);
    err = estc_buf_set(spki, der, (size_t)n);
    OPENSSL_free(der);
    return err;
}

static estc_err ex_key_sign(estc_ctx *ctx, void *state, const estc_address *addr, estc_sig_alg alg,
                            estc_hash hash, const uint8_t *digest, size_t len, estc_buf *sig)
{
    EVP_PKEY *key;
    estc_err err = key_at(ctx, state, addr, &key);
    if (err != ESTC_OK)
        return err;
    if (alg != ESTC_SIG_ECDSA)
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: EC keys sign ECDSA only", addr->text);
    const EVP_MD *md = hash == ESTC_HASH_SHA256   ? EVP_sha256()
                       : hash == ESTC_HASH_SHA384 ? EVP_sha384()
                                                  : EVP_sha512();
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    unsigned char out[160];
    size_t out_len = sizeof(out);
    /* The digest arrives hashed; EVP_PKEY_sign returns DER for ECDSA. */
    if (pctx == NULL || EVP_PKEY_sign_init(pctx) != 1 ||
        EVP_PKEY_CTX_set_signature_md(pctx, md) != 1 ||
        EVP_PKEY_sign(pctx, out, &out_len, digest, len) != 1)
        err = estc_error(ctx, ESTC_ERR_CRYPTO, "%s: signing failed", addr->text);
    else
        err = estc_buf_set(sig, out, out_len);
    EVP_PKEY_CTX_free(pctx);
    return err;
}

static estc_err remove_kind(estc_ctx *ctx, void *state, const estc_address *addr, bool key)
{
    struct object *o;
    estc_err err = lookup(ctx, state, addr, &o);
    if (err != ESTC_OK)
        return err;
    if (o == NULL || (o->kind == ESTC_OBJ_KEY) != key)
        return estc_error(ctx, ESTC_ERR_NOT_FOUND, "%s: nothing to remove", addr->text);
    drop(state, o);
    return ESTC_OK;
}

static estc_err ex_key_remove(estc_ctx *ctx, void *state, const estc_address *addr)
{
    return remove_kind(ctx, state, addr, true);
}

static estc_err ex_cert_store(estc_ctx *ctx, void *state, const estc_address *addr,
                              estc_obj_kind kind, const uint8_t *der, size_t len)
{
    return add(ctx, state, addr, kind, NULL, der, len);
}

static estc_err ex_cert_load(estc_ctx *ctx, void *state, const estc_address *addr, estc_buf *der)
{
    struct object *o;
    estc_err err = lookup(ctx, state, addr, &o);
    if (err != ESTC_OK)
        return err;
    if (o == NULL || o->kind == ESTC_OBJ_KEY)
        return estc_error(ctx, ESTC_ERR_NOT_FOUND, "%s: no certificate", addr->text);
    return estc_buf_set(der, o->der.data, o->der.len);
}

static estc_err ex_cert_remove(estc_ctx *ctx, void *state, const estc_address *addr)
{
    return remove_kind(ctx, state, addr, false);
}

static estc_err ex_list(estc_ctx *ctx, void *state, const estc_address *prefix, estc_obj_kind kind,
                        estc_list_fn fn, void *arg)
{
    struct example_state *st = state;
    char *bank, *label;
    estc_err err = parse(ctx, prefix, false, &bank, &label);
    if (err != ESTC_OK)
        return err;
    for (size_t i = 0; i < st->count && err == ESTC_OK; i++) {
        struct object *o = &st->objs[i];
        if (o->kind != kind || strcmp(o->bank, bank) != 0)
            continue;
        char addr[512];
        snprintf(addr, sizeof(addr), "example:bank=%s;label=%s", o->bank, o->label);
        if (!fn(arg, addr, kind))
            break;
    }
    free(bank);
    free(label);
    return err;
}

static estc_err ex_exists(estc_ctx *ctx, void *state, const estc_address *addr, estc_obj_kind kind,
                          bool *found)
{
    struct object *o;
    estc_err err = lookup(ctx, state, addr, &o);
    if (err == ESTC_OK)
        *found = o != NULL && o->kind == kind;
    return err;
}

static estc_err ex_address_derive(estc_ctx *ctx, void *state, const estc_address *prefix,
                                  estc_obj_kind kind, const char *name, char **addr)
{
    (void)state;
    (void)kind;
    char *bank, *label;
    estc_err err = parse(ctx, prefix, false, &bank, &label);
    if (err != ESTC_OK)
        return err;
    size_t n = strlen(bank) + strlen(name) + 32;
    *addr = malloc(n);
    if (*addr == NULL)
        err = ESTC_ERR_NOMEM;
    else
        snprintf(*addr, n, "example:bank=%s;label=%s", bank, name);
    free(bank);
    free(label);
    return err;
}

static void ex_cleanup(estc_ctx *ctx, void *state)
{
    (void)ctx;
    struct example_state *st = state;
    while (st->count > 0)
        drop(st, &st->objs[st->count - 1]);
    free(st->objs);
}

const struct estc_driver example_driver = {
    .api_version = ESTC_DRIVER_API_VERSION,
    .scheme = "example",
    .description = "example driver: EC keys and certificates in labelled in-memory banks",
    .state_size = sizeof(struct example_state),
    /* Addresses are RFC 7512 attribute lists: the framework parses them. */
    .caps = ESTC_CAP_ATTRIBUTES,
    .cleanup = ex_cleanup,
    .key_generate = ex_key_generate,
    .key_public = ex_key_public,
    .key_sign = ex_key_sign,
    .key_remove = ex_key_remove,
    .cert_store = ex_cert_store,
    .cert_load = ex_cert_load,
    .cert_remove = ex_cert_remove,
    .list = ex_list,
    .exists = ex_exists,
    .address_derive = ex_address_derive,
    /* key_import left NULL: the library answers ESTC_ERR_UNSUPPORTED. */
};

/* The module entry point that estc_engine_load_module() looks for. */
const struct estc_driver *estc_driver_entry(void)
{
    return &example_driver;
}
