/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An application that registers its own engine driver and uses it: the key
 * is generated in the "example:" engine, its public key read back, and a
 * digest signed, all through the estc engine API.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include <estc/engine.h>

#include "example_driver.h"

static int fail(estc_ctx *ctx, const char *what, estc_err err)
{
    fprintf(stderr, "%s: %s (%s)\n", what, estc_strerror(err), estc_ctx_error_detail(ctx));
    estc_ctx_free(ctx);
    return 1;
}

int main(void)
{
    estc_ctx *ctx = NULL;
    estc_err err = estc_ctx_new(&ctx);
    if (err != ESTC_OK)
        return 1;
    err = estc_engine_register(ctx, &example_driver);
    if (err != ESTC_OK)
        return fail(ctx, "register", err);

    const char *key = "example:bank=device;label=client-key";
    err = estc_key_generate(ctx, key, ESTC_KEY_EC_P256);
    if (err != ESTC_OK)
        return fail(ctx, "generate", err);

    estc_buf spki = {0}, sig = {0};
    uint8_t digest[32];
    EVP_Digest("hello", 5, digest, NULL, EVP_sha256(), NULL);
    err = estc_key_public(ctx, key, &spki);
    if (err == ESTC_OK)
        err = estc_key_sign(ctx, key, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, digest, 32, &sig);
    if (err != ESTC_OK)
        return fail(ctx, "use", err);
    printf("key %s: %zu-byte public key, %zu-byte signature\n", key, spki.len, sig.len);

    estc_buf_free(&spki);
    estc_buf_free(&sig);
    err = estc_key_remove(ctx, key);
    estc_ctx_free(ctx);
    return err == ESTC_OK ? 0 : 1;
}
