/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Address generators: where the library needs a fresh address for an object
 * it is about to create (a CA certificate from /crts, a key at rekey).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "internal.h"
#include "util.h"

estc_err estc_generator_set(estc_ctx *ctx, const char *scheme, estc_address_gen_fn gen, void *arg)
{
    if (ctx == NULL || scheme == NULL)
        return ESTC_ERR_INVALID_ARG;
    char probe[ESTC_SCHEME_MAX + 3];
    size_t n = strlen(scheme);
    /* A bare scheme: "mem", not "mem:" nor "mem:dev-" (which would install
     * the generator for every mem: address, not for a prefix). */
    if (n == 0 || n > ESTC_SCHEME_MAX ||
        strspn(scheme, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.") != n)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG,
                          "bad scheme for a generator (the scheme alone, without ':')");
    memcpy(probe, scheme, n);
    probe[n] = ':';
    probe[n + 1] = '\0';
    struct estc__engine *e;
    estc_err err = estc__engine_for(ctx, probe, &e);
    if (err != ESTC_OK)
        return err;
    e->gen = gen;
    e->gen_arg = gen != NULL ? arg : NULL;
    return ESTC_OK;
}

static const char *kind_word(estc_obj_kind kind)
{
    switch (kind) {
    case ESTC_OBJ_KEY:
        return "key";
    case ESTC_OBJ_CERT:
        return "cert";
    case ESTC_OBJ_TRUST:
        return "trust";
    }
    return "obj";
}

estc_err estc_address_generate(estc_ctx *ctx, const char *prefix, estc_obj_kind kind,
                               const void *der, size_t der_len, char **addr)
{
    struct estc__engine *e;
    if (addr == NULL || (der == NULL && der_len > 0) || kind < ESTC_OBJ_KEY ||
        kind > ESTC_OBJ_TRUST)
        return ESTC_ERR_INVALID_ARG;
    estc_err err = estc__engine_for(ctx, prefix, &e);
    if (err != ESTC_OK)
        return err;

    if (e->gen != NULL) {
        const char *got = e->gen(e->gen_arg, der, der_len);
        char scheme[ESTC_SCHEME_MAX + 1];
        if (got == NULL)
            return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "address generator for \"%s:\" failed",
                              e->driver->scheme);
        if (estc_address_scheme(got, scheme) != ESTC_OK || strcmp(scheme, e->driver->scheme) != 0)
            return estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                              "address generator for \"%s:\" returned a bad or foreign address",
                              e->driver->scheme);
        char *copy = strdup(got);
        if (copy == NULL)
            return ESTC_ERR_NOMEM;
        *addr = copy;
        return ESTC_OK;
    }

    /* Default: a name from the object's hash, so a CA certificate always
     * lands at the same address; random for keys, which have no DER yet. */
    char hex[17];
    uint8_t rnd[32];
    if (der_len > 0) {
        err = estc__sha256_hex(der, der_len, hex, 16);
    } else {
        if (RAND_bytes(rnd, sizeof(rnd)) != 1)
            return estc_error(ctx, ESTC_ERR_CRYPTO, "no random bytes for an address");
        err = estc__sha256_hex(rnd, sizeof(rnd), hex, 16);
    }
    if (err != ESTC_OK)
        return err;
    char name[64];
    snprintf(name, sizeof(name), "estc-%s-%s", kind_word(kind), hex);
    return estc_address_derive(ctx, prefix, kind, name, addr);
}
